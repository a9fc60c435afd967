//! The Ldap package against a real OpenLDAP slapd started by the test harness.

mod support;
use base64::Engine;
use serde_json::json;
use std::time::{Duration, Instant};
use support::slapd::{Slapd, group_dn, people_ldif, photo_of, user_dn};
use support::*;

fn workspace(
    servers: serde_json::Value,
    password: Option<&str>,
    extra: serde_json::Value,
) -> Workspace {
    let ws = Workspace::new();
    let mut s = json!({
        "Servers": servers,
        "Tables": [
            {"Table": "entries", "BaseDN": "ou=people,dc=example,dc=com", "Filter": "(objectClass=inetOrgPerson)"},
            {"Table": "member", "BaseDN": "ou=groups,dc=example,dc=com", "Filter": "(objectClass=groupOfNames)", "Scope": "OneLevel"}
        ],
        "Attributes": ["uid", "cn", "mail", "telephoneNumber", "jpegPhoto", "description"],
        "PageSize": 100
    });
    if let Some(p) = password {
        s["Password"] = json!(p);
    }
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    ws.settings(json!({"Connections": {"Dir": s}}));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Dir\" DisplayName_L1=\"dir\" Connector=\"HR\" Package=\"Usercube.LDAP@0000001\"/>", connector_xml()));
    ws
}

fn admin(sl: &Slapd) -> serde_json::Value {
    json!([{"Server": sl.url(), "AuthType": "Basic", "Login": sl.admin_dn}])
}

#[test]
fn paged_export_past_the_size_limit_with_link_tables() {
    // 1200 people (past the server's olcSizeLimit of 500), 3 groups of 400 members.
    let sl = Slapd::start(&people_ldif(1200, 3, 400));
    let ws = workspace(admin(&sl), Some(&sl.admin_password), json!({}));
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert!(!out.all().contains(&sl.admin_password), "password leaked");
    assert_eq!(out.code, 0, "{}", out.all());
    let entries = python_csv(&ws.output_file("Dir_entries.csv"));
    assert_eq!(
        entries[0],
        [
            "dn",
            "parentdn",
            "uid",
            "cn",
            "mail",
            "telephoneNumber",
            "jpegPhoto",
            "description"
        ]
    );
    assert_eq!(entries.len(), 1201, "every entry, past the size limit");
    let row = entries
        .iter()
        .find(|r| r[0] == user_dn(10))
        .expect("user 10");
    assert_eq!(row[1], "ou=people,dc=example,dc=com");
    assert_eq!(row[2], "user00010");
    assert_eq!(
        row[5], "+1 555 0000010\n+1 666 0000010",
        "multi-valued joined with \\n"
    );
    assert_eq!(
        row[6],
        base64::engine::general_purpose::STANDARD.encode(photo_of(10))
    );
    assert_eq!(row[7], "Member of staff, number 10");
    let odd = entries.iter().find(|r| r[0] == user_dn(11)).unwrap();
    assert_eq!(odd[5], "+1 555 0000011");
    assert_eq!(odd[6], "");
    let members = python_csv(&ws.output_file("Dir_member.csv"));
    assert_eq!(members[0], ["dn", "member"]);
    assert_eq!(members.len(), 1 + 3 * 400, "one row per (group, member)");
    assert!(
        members
            .iter()
            .any(|r| r[0] == group_dn(1) && r[1] == user_dn(400))
    );

    let s = ws.run(&["schema", "Dir", "--json"]);
    assert_eq!(s.code, 0, "{}", s.all());
    let j = s.json();
    let t = &j["schema"]["tables"][0];
    assert_eq!(t["name"], "Dir_entries");
    let phone = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "telephoneNumber")
        .unwrap()
        .clone();
    assert_eq!(phone["multivalued"], true);
    let t = ws.run(&["test", "Dir"]);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(t.stdout.contains("namingContexts"), "{}", t.stdout);
}

#[test]
fn anonymous_size_limit_names_the_setting() {
    let sl = Slapd::start(&people_ldif(700, 1, 10));
    let ws = workspace(
        json!([{"Server": sl.url(), "AuthType": "Anonymous"}]),
        None,
        json!({}),
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.to_lowercase().contains("size limit"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SizeLimit") || out.stderr.contains("PageSize"),
        "{}",
        out.stderr
    );
    assert!(ws.output_names().is_empty());
}

#[test]
fn failover_errors_and_a_server_killed_mid_export() {
    let mut sl = Slapd::start(&people_ldif(3000, 1, 10));
    let dead = format!(
        "ldap://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    // The first server is down: the second one serves.
    let servers = json!([{"Server": dead, "AuthType": "Basic", "Login": sl.admin_dn}, {"Server": sl.url(), "AuthType": "Basic", "Login": sl.admin_dn}]);
    let ws = workspace(servers, Some(&sl.admin_password), json!({}));
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let before = std::fs::read(ws.output_file("Dir_entries.csv")).unwrap();
    let t = ws.run(&["test", "Dir"]);
    assert_eq!(t.code, 0, "{}", t.all());

    for (servers, password, extra, message) in [
        (
            admin(&sl),
            Some("wrong-password-canary"),
            json!({}),
            "refused the login",
        ),
        (
            json!([{"Server": dead, "AuthType": "Anonymous"}]),
            None,
            json!({}),
            "cannot reach",
        ),
        (
            admin(&sl),
            Some(sl.admin_password.as_str()),
            json!({"Tables": [{"Table": "entries", "BaseDN": "ou=nowhere,dc=example,dc=com", "Filter": "(objectClass=*)"}]}),
            "does not exist",
        ),
    ] {
        let ws2 = workspace(servers, password, extra);
        let out = ws2.run(&["export", "--connection", "Dir", "--complete"]);
        assert_eq!(out.code, 1, "{message}: {}", out.all());
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
        assert!(
            !out.all().contains("wrong-password-canary") && !out.all().contains(&sl.admin_password)
        );
    }
    // A filter that is not LDAP syntax is a configuration error.
    let ws3 = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"Tables": [{"Table": "entries", "BaseDN": "dc=example,dc=com", "Filter": "(objectClass=*"}]}),
    );
    let out = ws3.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(out.stderr.contains("Filter"), "{}", out.stderr);

    // The server dies during the export: the previous files stay, no partial file.
    let ws4 = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"PageSize": 10}),
    );
    ws4.write("Temp/ExportOutput/Dir_entries.csv", &before);
    let child = ws4
        .command(&["export", "--connection", "Dir", "--complete"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(ws4.output_file("Dir_entries.csv.partial"))
        .map(|m| m.len())
        .unwrap_or(0)
        < 2000
    {
        assert!(Instant::now() < deadline, "the export did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    sl.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws4.output_names(), ["Dir_entries.csv"]);
    assert_eq!(
        std::fs::read(ws4.output_file("Dir_entries.csv")).unwrap(),
        before
    );
}

#[test]
fn attributes_come_from_the_mappings_when_not_listed() {
    let sl = Slapd::start(&people_ldif(20, 1, 5));
    let ws = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"Attributes": []}),
    );
    ws.xml(
        "maps.xml",
        "<EntityTypeMapping Identifier=\"Person\" Connector=\"HR\" ConnectionTable=\"Dir_entries.csv\">
  <Property Identifier=\"Id\" ConnectionColumn=\"dn\" IsPrimaryKey=\"true\"/>
  <Property Identifier=\"Mail\" ConnectionColumn=\"mail\"/>
  <Property Identifier=\"Name\" ConnectionColumn=\"cn\"/>
</EntityTypeMapping>",
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let entries = python_csv(&ws.output_file("Dir_entries.csv"));
    assert_eq!(entries[0], ["dn", "parentdn", "mail", "cn"]);
    let row = entries.iter().find(|r| r[0] == user_dn(3)).unwrap();
    assert_eq!(row[2], "user00003@example.com");
    assert_eq!(row[3], "User 3");
}
