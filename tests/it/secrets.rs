//! No secret value used in the fixtures appears in any output: CLI text and JSON, logs at trace
//! level, error messages, files the agent writes, and Debug output of the loaded configuration.

use crate::support::*;
use serde_json::json;

const CANARIES: &[&str] = &[
    "canary-openid-5b1e",
    "canary-unknown-setting-9f2a",
    "canary-env-apikey-77c3",
    "canary-sqlite-pwd-0d4e",
    "canary-broken-cs-e81b",
    "canary-pw-tail-3c9d",
];

fn workspace() -> Workspace {
    let mut ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n");
    rusqlite::Connection::open(ws.path("hr.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")
        .unwrap();
    ws.settings(json!({
        "OpenId": {"AgentIdentifier": "Local", "OpenIdClients": {"Job": CANARIES[0]}, "DefaultOpenIdClient": "Job"},
        "Connections": {
            "People": {"Path": "in/people.csv", "Password": CANARIES[1]},
            "Db": {"ConnectionString": "Data Source=hr.db", "SqlCommand": "SELECT v FROM t"}
        }
    }));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"Db\" DisplayName_L1=\"d\" Connector=\"HR\" Package=\"Sqlite\"/>",
            connector_xml()
        ),
    );
    ws.env.push((
        "CONNAGENT__Connections__People__ApiKey".into(),
        CANARIES[2].into(),
    ));
    ws.env.push(("RUST_LOG".into(), "trace".into()));
    ws
}

fn assert_clean(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{what} shows secret {c}:\n{text}");
    }
}

#[test]
fn secrets_never_appear_in_output_logs_or_files() {
    let ws = workspace();
    let mut outputs = Vec::new();
    for args in [
        vec!["validate"],
        vec!["validate", "--json"],
        vec!["connections", "--show-settings"],
        vec!["connections", "--json"],
        vec!["test", "People"],
        vec!["test", "Db"],
        vec!["schema", "Db"],
        vec!["export", "--all", "--complete"],
        vec!["export", "--all", "--json", "--complete"],
    ] {
        let out = ws.run(&args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.all());
        outputs.push(out);
    }
    // The warning about the unknown setting names it, without its value.
    assert!(
        outputs[0].stderr.contains("unknown setting Password"),
        "{}",
        outputs[0].stderr
    );
    assert!(
        outputs[0].stderr.contains("unknown setting ApiKey"),
        "{}",
        outputs[0].stderr
    );

    // A secured part of a connection string shows as (set), and errors never repeat it.
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["Db"]["ConnectionString"] =
        json!(format!("Data Source=hr.db;Password={}", CANARIES[3]));
    ws.settings(s.clone());
    for args in [
        vec!["validate"],
        vec!["connections", "--json"],
        vec!["export", "--all"],
        vec!["test", "Db"],
    ] {
        let out = ws.run(&args);
        assert_ne!(out.code, 0, "{args:?}");
        outputs.push(out);
    }
    s["Connections"]["Db"]["ConnectionString"] =
        json!(format!("Data Source=hr.db;Password={};Broken", CANARIES[4]));
    ws.settings(s);
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("part 3 (counting parts separated by ';') has no '='"),
        "{}",
        out.stderr
    );
    outputs.push(out);

    for (i, o) in outputs.iter().enumerate() {
        assert_clean(&format!("output {i}"), &o.all());
    }
    // Files the agent wrote (outputs, schemas): none holds a secret.
    for dir in ["Temp", "Work"] {
        for c in CANARIES {
            assert!(
                files_containing(&ws.path(dir), c).is_empty(),
                "{dir} holds {c}"
            );
        }
    }
}

#[test]
fn debug_output_of_the_loaded_configuration_hides_secrets() {
    let ws = workspace();
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["Db"]["ConnectionString"] =
        json!(format!("Data Source=hr.db;Pwd={}", CANARIES[3]));
    ws.settings(s);
    let mut env = ws.env.clone();
    env.retain(|(k, _)| k != "RUST_LOG");
    let opts = connagent::config::LoadOptions {
        settings_path: ws.settings_path(),
        env,
    };
    let loaded = connagent::config::load(&opts, &connagent::packages::Registry::builtin()).unwrap();
    assert_clean("Debug of the snapshot", &format!("{loaded:?}"));
    assert_clean(
        "diagnostics",
        &loaded
            .diagnostics
            .0
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // The connection string itself, parsed, keeps the secret for the driver only.
    let cs = connagent::packages::connstr::ConnectionString::parse(&format!(
        "Data Source=a;Pwd={}",
        CANARIES[3]
    ))
    .unwrap();
    assert_clean(
        "Debug of a connection string",
        &format!("{cs:?} {}", cs.redacted()),
    );
    let secret = connagent::secret::Secret::new(CANARIES[0]);
    assert_clean("Debug of a secret", &format!("{secret:?}"));
    assert_eq!(secret.expose(), CANARIES[0]);
}
