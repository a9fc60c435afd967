//! The Ldap package against a real OpenLDAP slapd started by the test harness.

use crate::support::slapd::{
    Options, READER_DN, READER_PASSWORD, Slapd, group_dn, people_ldif, photo_of, user_dn,
};
use crate::support::*;
use base64::Engine;
use serde_json::json;
use std::time::{Duration, Instant};

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

/// The non-root login of the harness (its password holds `; / @ ' "`).
fn reader(server: &str) -> serde_json::Value {
    json!([{"Server": server, "Login": READER_DN}])
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The columns of one table of `schema --json`, by name.
fn schema_columns(ws: &Workspace, table: &str) -> Vec<serde_json::Value> {
    let s = ws.run(&["schema", "Dir", "--json"]);
    assert_eq!(s.code, 0, "{}", s.all());
    let j = s.json();
    j["schema"]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {j}"))["columns"]
        .as_array()
        .expect("columns")
        .clone()
}

fn column<'a>(columns: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    columns
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn assert_no_secret(out: &Output) {
    for secret in [READER_PASSWORD, crate::support::slapd::ADMIN_PASSWORD] {
        assert!(
            !out.all().contains(secret),
            "a password leaked:\n{}",
            out.all()
        );
    }
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

#[test]
fn paging_past_the_server_size_limit_as_a_reader() {
    // olcSizeLimit 50 for everyone; the reader may page through more (size.prtotal), as a
    // directory administrator grants a synchronisation account. 300 people.
    let sl = Slapd::start_with(
        &people_ldif(300, 1, 10),
        &Options {
            size_limit: "50".into(),
            limits: vec![format!(
                "dn.exact=\"{READER_DN}\" size.soft=50 size.hard=50 size.prtotal=unlimited"
            )],
            ..Options::default()
        },
    );
    // PageSize under the limit, and above it (the server then cuts pages at 50).
    for page_size in [40, 100] {
        let ws = workspace(
            reader(&sl.url()),
            Some(READER_PASSWORD),
            json!({"PageSize": page_size}),
        );
        let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 0, "PageSize {page_size}: {}", out.all());
        let entries = python_csv(&ws.output_file("Dir_entries.csv"));
        assert_eq!(entries.len(), 301, "PageSize {page_size}: all 300 people");
        let dns: std::collections::HashSet<&str> =
            entries[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(dns.len(), 300, "no entry twice");
        assert!(dns.contains(user_dn(299).as_str()));
    }

    // The password with ; / @ ' " also works from the environment, and `test` binds with it.
    let mut ws = workspace(reader(&sl.url()), None, json!({"PageSize": 40}));
    ws.env.push((
        "CONNAGENT__Connections__Dir__Password".into(),
        READER_PASSWORD.into(),
    ));
    let t = ws.run(&["test", "Dir"]);
    assert_no_secret(&t);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(
        t.stdout.contains(&format!("bound as {READER_DN}")),
        "{}",
        t.stdout
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(python_csv(&ws.output_file("Dir_entries.csv")).len(), 301);

    // A wrong password for that login is refused, and neither password is shown.
    let ws = workspace(reader(&sl.url()), Some("rd;pw/x@y'z\"-wrong"), json!({}));
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("refused the login"), "{}", out.stderr);
    assert!(!out.all().contains("-wrong"), "{}", out.all());

    // Anonymous has no such grant: paging stops at the server's 50 with a clear error, and
    // nothing is published (no silent truncation).
    let ws = workspace(
        json!([{"Server": sl.url(), "AuthType": "Anonymous"}]),
        None,
        json!({"PageSize": 20}),
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("at its own size limit after 50 entries (result code 4"),
        "{}",
        out.stderr
    );
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
}

#[test]
fn the_size_limit_setting_fails_the_export_past_it() {
    let sl = Slapd::start(&people_ldif(300, 1, 10));
    // The root DN has no server limit: SizeLimit alone stops it.
    for (servers, password) in [
        (admin(&sl), sl.admin_password.as_str()),
        (reader(&sl.url()), READER_PASSWORD),
    ] {
        let ws = workspace(
            servers.clone(),
            Some(password),
            json!({"SizeLimit": 120, "PageSize": 50}),
        );
        let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(
            out.stderr
                .contains("more entries than the SizeLimit of 120"),
            "{}",
            out.stderr
        );
        assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
        // Exactly as many entries as the limit is not past it.
        let ws = workspace(
            servers,
            Some(password),
            json!({"SizeLimit": 300, "PageSize": 50}),
        );
        let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert_eq!(python_csv(&ws.output_file("Dir_entries.csv")).len(), 301);
    }
}

#[test]
fn columns_asked_for_by_alias_or_oid_get_their_values() {
    let sl = Slapd::start(&people_ldif(20, 1, 5));
    // The server returns cn, sn, uid, mail and jpegPhoto under those names whatever was asked.
    let ws = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"Attributes": ["commonName", "2.5.4.4", "UID", "mail", "0.9.2342.19200300.100.1.60", "2.16.840.1.113730.3.1.39"]}),
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let entries = python_csv(&ws.output_file("Dir_entries.csv"));
    assert_eq!(
        entries[0],
        [
            "dn",
            "parentdn",
            "commonName",
            "2.5.4.4",
            "UID",
            "mail",
            "0.9.2342.19200300.100.1.60",
            "2.16.840.1.113730.3.1.39"
        ]
    );
    let row = entries.iter().find(|r| r[0] == user_dn(5)).expect("user 5");
    assert_eq!(
        row[2..],
        [
            "User 5".to_string(),
            "Number5".into(),
            "user00005".into(),
            "user00005@example.com".into(),
            b64(&photo_of(5)),
            String::new()
        ]
    );
    // Discovery types them through the same subschema look-up.
    let columns = schema_columns(&ws, "Dir_entries");
    assert_eq!(column(&columns, "2.5.4.4")["multivalued"], true);
    let photo = column(&columns, "0.9.2342.19200300.100.1.60");
    assert_eq!(photo["source_type"], "1.3.6.1.4.1.1466.115.121.1.28");
    assert_ne!(photo["value_type"], column(&columns, "UID")["value_type"]);
    // preferredLanguage is SINGLE-VALUE in inetorgperson.ldif.
    assert_eq!(
        column(&columns, "2.16.840.1.113730.3.1.39")["multivalued"],
        false
    );
}

/// People with a badge (`badgeData`, an octet string by a syntax only the server's ldapSyntaxes
/// describes), a certificate and photos, some of whose bytes happen to be ASCII.
fn badge_ldif(cert: &[u8]) -> String {
    let mut out = String::new();
    let values: [&[u8]; 3] = [b"ASCII-badge", &[0xff, 0x00, 0x01], b"plain"];
    for (k, v) in values.iter().enumerate() {
        out.push_str(&format!(
            "dn: uid=badge{k},ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: badgeHolder
uid: badge{k}
cn: Badge {k}
sn: Holder
badgeData:: {}
jpegPhoto:: {}
userCertificate;binary:: {}

",
            b64(v),
            b64(v),
            b64(cert)
        ));
    }
    out
}

fn a_certificate() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(vec!["user.example.com".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate")
        .der()
        .to_vec()
}

#[test]
fn a_binary_column_is_base64_in_every_row() {
    let cert = a_certificate();
    let sl = Slapd::start(&format!("{}\n{}", people_ldif(2, 0, 0), badge_ldif(&cert)));
    let ws = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"Attributes": ["uid", "badgeData", "jpegPhoto", "userCertificate"], "Tables": [{"Table": "entries", "BaseDN": "ou=people,dc=example,dc=com", "Filter": "(objectClass=badgeHolder)"}]}),
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut entries = python_csv(&ws.output_file("Dir_entries.csv"));
    entries[1..].sort();
    assert_eq!(
        entries[0],
        [
            "dn",
            "parentdn",
            "uid",
            "badgeData",
            "jpegPhoto",
            "userCertificate"
        ]
    );
    let values: [&[u8]; 3] = [b"ASCII-badge", &[0xff, 0x00, 0x01], b"plain"];
    for (k, v) in values.iter().enumerate() {
        let row = &entries[k + 1];
        assert_eq!(row[2], format!("badge{k}"));
        assert_eq!(row[3], b64(v), "badgeData of badge{k}: base64 in every row");
        assert_eq!(row[4], b64(v), "jpegPhoto of badge{k}: base64 in every row");
        // Asked for as userCertificate, returned as userCertificate;binary.
        assert_eq!(row[5], b64(&cert), "userCertificate of badge{k}");
    }
    let columns = schema_columns(&ws, "Dir_entries");
    let binary = column(&columns, "jpegPhoto")["value_type"].clone();
    assert_eq!(column(&columns, "badgeData")["value_type"], binary);
    assert_eq!(column(&columns, "userCertificate")["value_type"], binary);
    assert_ne!(column(&columns, "uid")["value_type"], binary);
}

#[test]
fn without_attributes_the_columns_come_from_the_object_classes() {
    let cert = a_certificate();
    let sl = Slapd::start(&format!("{}\n{}", people_ldif(12, 1, 3), badge_ldif(&cert)));
    let ws = workspace(
        admin(&sl),
        Some(&sl.admin_password),
        json!({"Attributes": []}),
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let entries = python_csv(&ws.output_file("Dir_entries.csv"));
    let header = &entries[0];
    assert_eq!(header[..2], ["dn", "parentdn"]);
    let names: Vec<&str> = header[2..].iter().map(String::as_str).collect();
    // inetOrgPerson, organizationalPerson, person and top (MUST and MAY), plus the auxiliary
    // badgeHolder some entries carry: also attributes no entry holds (displayName); never
    // userPassword; in name order ignoring case.
    for n in [
        "objectClass",
        "cn",
        "sn",
        "uid",
        "mail",
        "telephoneNumber",
        "jpegPhoto",
        "displayName",
        "employeeNumber",
        "userCertificate",
        "badgeData",
        "description",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.eq_ignore_ascii_case("userPassword")),
        "{names:?}"
    );
    assert!(
        !names.contains(&"createTimestamp"),
        "operational: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    assert_eq!(names, sorted);
    // Values, each in its column's form.
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    let row = entries
        .iter()
        .find(|r| r[0] == user_dn(10))
        .expect("user 10");
    assert_eq!(row[col("cn")], "User 10");
    assert_eq!(row[col("jpegPhoto")], b64(&photo_of(10)));
    assert_eq!(
        row[col("telephoneNumber")],
        "+1 555 0000010\n+1 666 0000010"
    );
    assert_eq!(row[col("displayName")], "");
    assert_eq!(row[col("badgeData")], "");
    let badge = entries
        .iter()
        .find(|r| r[0] == "uid=badge0,ou=people,dc=example,dc=com")
        .expect("badge0");
    assert_eq!(badge[col("badgeData")], b64(b"ASCII-badge"));
    assert_eq!(badge[col("userCertificate")], b64(&cert));

    // Discovery lists the same columns, with single-valued attributes said so.
    let columns = schema_columns(&ws, "Dir_entries");
    let discovered: Vec<&str> = columns.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        discovered,
        header.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for single in ["displayName", "employeeNumber", "preferredLanguage"] {
        assert_eq!(column(&columns, single)["multivalued"], false, "{single}");
    }
    for multi in ["telephoneNumber", "cn", "objectClass", "badgeData"] {
        assert_eq!(column(&columns, multi)["multivalued"], true, "{multi}");
    }
}

#[test]
fn starttls_and_ldaps_with_a_test_ca() {
    let sl = Slapd::start_with(
        &people_ldif(30, 1, 5),
        &Options {
            tls: true,
            ..Options::default()
        },
    );
    let ca = sl.ca_file().display().to_string();
    let port = sl.tls_port.expect("an LDAPS port");
    for (servers, transport) in [
        (
            json!([{"Server": sl.url(), "StartTLS": true, "Login": READER_DN}]),
            "StartTLS",
        ),
        (
            json!([{"Server": sl.ldaps_url(), "Login": READER_DN}]),
            "LDAPS",
        ),
        (
            json!([{"Server": format!("127.0.0.1:{port}"), "EnableSSL": true, "Login": READER_DN}]),
            "LDAPS",
        ),
    ] {
        let mut ws = workspace(servers.clone(), Some(READER_PASSWORD), json!({}));
        ws.env.push(("SSL_CERT_FILE".into(), ca.clone()));
        let t = ws.run(&["test", "Dir"]);
        assert_no_secret(&t);
        assert_eq!(t.code, 0, "{servers}: {}", t.all());
        assert!(t.stdout.contains(&format!("({transport})")), "{}", t.stdout);
        let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 0, "{servers}: {}", out.all());
        assert_eq!(python_csv(&ws.output_file("Dir_entries.csv")).len(), 31);
    }

    // A CA that did not sign the server's certificate: refused, before the password is sent.
    let other = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, params.self_signed(&key).expect("CA").pem()).expect("write");
    for servers in [
        json!([{"Server": sl.url(), "StartTLS": true, "Login": READER_DN}]),
        json!([{"Server": sl.ldaps_url(), "Login": READER_DN}]),
    ] {
        let mut ws = workspace(servers.clone(), Some(READER_PASSWORD), json!({}));
        ws.env
            .push(("SSL_CERT_FILE".into(), other_ca.display().to_string()));
        let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 1, "{servers}: {}", out.all());
        assert!(
            out.stderr.contains("invalid peer certificate") && out.stderr.contains("SSL_CERT_FILE"),
            "{servers}: {}",
            out.stderr
        );
        assert!(ws.output_names().is_empty());
    }
}

#[test]
fn the_documented_servers_item_runs_unchanged() {
    // The documentation's example: Controls with DomainScope, NoSigning, and a SizeLimit that is
    // ignored because Controls are listed.
    let sl = Slapd::start(&people_ldif(300, 1, 10));
    let servers = json!([{"Server": sl.url(), "AuthType": "Basic", "Login": sl.admin_dn,
                          "Controls": ["PagedResult", "DomainScope"], "NoSigning": false}]);
    let ws = workspace(
        servers,
        Some(&sl.admin_password),
        json!({"SizeLimit": 120, "PageSize": 50}),
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(
        v.stderr.contains("SizeLimit 120 is ignored"),
        "{}",
        v.stderr
    );
    let out = ws.run(&["export", "--connection", "Dir", "--complete"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    // 300 people, the organisational units and the base: more than the ignored limit.
    assert!(python_csv(&ws.output_file("Dir_entries.csv")).len() > 300);
    // DomainScope without PagedResult is refused, as documented.
    let servers = json!([{"Server": sl.url(), "AuthType": "Basic", "Login": sl.admin_dn, "Controls": ["DomainScope"]}]);
    let ws = workspace(servers, Some(&sl.admin_password), json!({}));
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(
        v.stderr.contains("DomainScope needs PagedResult"),
        "{}",
        v.stderr
    );
}
