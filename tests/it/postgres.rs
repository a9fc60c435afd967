//! The PostgreSql package against a real PostgreSQL server started by the test harness.

use crate::support::pg::Pg;
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

const PASSWORD: &str = "pg-canary-password-7f3e";

fn setup(pg: &Pg) {
    pg.sql("postgres", "CREATE DATABASE hr");
    pg.sql(
        "postgres",
        &format!("CREATE ROLE agent LOGIN PASSWORD '{PASSWORD}'"),
    );
    pg.sql("hr", "GRANT pg_read_all_data TO agent");
}

fn workspace(pg: &Pg, settings: serde_json::Value) -> Workspace {
    let ws = Workspace::new();
    let mut s = settings;
    if s.get("ConnectionString").is_none() {
        s["ConnectionString"] = json!(pg.url("agent", PASSWORD, "hr"));
    }
    ws.settings(json!({"Connections": {"Pg": s}}));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"Usercube.SQL.PostgreSQL@0000001\"/>", connector_xml()));
    ws
}

fn strings(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn assert_no_secret(out: &Output) {
    assert!(
        !out.all().contains(PASSWORD),
        "the password leaked:\n{}",
        out.all()
    );
}

#[test]
fn every_type_has_its_canonical_text() {
    let pg = Pg::start();
    setup(&pg);
    pg.sql("hr", "CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE DOMAIN short_text AS varchar(5);
        CREATE TABLE t (
          b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(20,6), n2 numeric, m money,
          tx text, vc varchar(10), c char(3), nm name, bt bytea, d date, tm time, tt timetz, ts timestamp, tz timestamptz,
          iv interval, u uuid, j json, jb jsonb, ip inet, cn cidr, ai int4[], at text[], e mood, dm short_text, x xml, o oid)");
    pg.sql("hr", "SET TIME ZONE 'UTC'; INSERT INTO t VALUES (
          true, -32768, 2147483647, -9223372036854775808, 0.1, 0.1, 12345678901234.123456, 1e-20, 12.34,
          'Zoë \"q\", 李
line', 'v', 'ab', 'nm', '\\x00ff10', '2024-02-29', '07:05:09.12', '07:05:09+01:30', '2024-02-29 07:05:09.123456', '2024-02-29 07:05:09+02',
          '1 year 2 months 3 days 04:05:06.5', '6f1c2b9e-3f4a-4c6d-9e8f-0a1b2c3d4e5f', '{\"a\": [1, 2]}', '{\"b\": null}', '192.168.0.1', '10.0.0.0/8',
          '{1,NULL,3}', '{\"x,y\",z}', 'happy', 'abc', '<a>b</a>', 42);
        INSERT INTO t (tx) VALUES ('');
        INSERT INTO t (i4, d, ts, n) VALUES (NULL, 'infinity', '-infinity', 'NaN');");
    let ws = workspace(
        &pg,
        json!({"SqlCommand": "SELECT * FROM t ORDER BY tx NULLS LAST;"}),
    );
    let out = ws.run(&["export", "--connection", "Pg"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = python_csv(&ws.output_file("Pg.csv"));
    let header = [
        "b", "i2", "i4", "i8", "f4", "f8", "n", "n2", "m", "tx", "vc", "c", "nm", "bt", "d", "tm",
        "tt", "ts", "tz", "iv", "u", "j", "jb", "ip", "cn", "ai", "at", "e", "dm", "x", "o",
    ];
    assert_eq!(got[0], header);
    let row: Vec<&str> = got[2].iter().map(String::as_str).collect();
    assert_eq!(
        row,
        [
            "true",
            "-32768",
            "2147483647",
            "-9223372036854775808",
            "0.1",
            "0.1",
            "12345678901234.123456",
            "0.00000000000000000001",
            "12.34",
            "Zoë \"q\", 李\nline",
            "v",
            "ab ",
            "nm",
            "AP8Q",
            "2024-02-29",
            "07:05:09.12",
            "07:05:09+01:30",
            "2024-02-29T07:05:09.123456",
            "2024-02-29T05:05:09+00:00",
            "P1Y2M3DT4H5M6.5S",
            "6f1c2b9e-3f4a-4c6d-9e8f-0a1b2c3d4e5f",
            "{\"a\": [1, 2]}",
            "{\"b\": null}",
            "192.168.0.1",
            "10.0.0.0/8",
            "1\n\n3",
            "x,y\nz",
            "happy",
            "abc",
            "<a>b</a>",
            "42",
        ]
    );
    // NULL and the empty string are both empty fields.
    assert_eq!(got[1][9], "");
    assert!(got[1].iter().all(String::is_empty), "{:?}", got[1]);
    assert_eq!(&got[3][2], "");
    assert_eq!(&got[3][14], "infinity");
    assert_eq!(&got[3][17], "-infinity");
    assert_eq!(&got[3][6], "NaN");
    // Edge values: the end of the day, an oid above 2^31, money.
    let ws = workspace(
        &pg,
        json!({"SqlCommand": "SELECT '24:00:00'::time AS t, '24:00:00+02'::timetz AS tz, 4000000000::oid AS o, '-0.05'::money AS m"}),
    );
    let out = ws.run(&["export", "--connection", "Pg"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        python_csv(&ws.output_file("Pg.csv")),
        strings(&[
            &["t", "tz", "o", "m"],
            &["24:00:00", "24:00:00+02:00", "4000000000", "-0.05"]
        ])
    );
    // A multi-dimensional array is refused, not flattened.
    let ws = workspace(&pg, json!({"SqlCommand": "SELECT ARRAY[[1,2],[3,4]] AS a"}));
    let out = ws.run(&["export", "--connection", "Pg"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("column a: a 2-dimensional array has no export form"),
        "{}",
        out.stderr
    );
    // A type without an export form says how to get around it.
    let ws = workspace(&pg, json!({"SqlCommand": "SELECT point(1,2) AS p"}));
    let out = ws.run(&["export", "--connection", "Pg"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("column p: the type point has no export form"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("cast the column to text"),
        "{}",
        out.stderr
    );
}

#[test]
fn awkward_rows_read_back_equal_and_tables_share_one_snapshot() {
    let pg = Pg::start();
    setup(&pg);
    pg.sql(
        "hr",
        "CREATE TABLE people (id int PRIMARY KEY, name text, note text UNIQUE);
        CREATE TABLE audit (id serial PRIMARY KEY, what text);
        INSERT INTO audit (what) VALUES ('before');",
    );
    let mut want = vec![vec!["id".to_string(), "name".into(), "note".into()]];
    let mut values = Vec::new();
    for i in 0..2000 {
        let name = format!(
            "N\u{e9}\u{e9} \"{i}\", {}{}",
            if i % 5 == 0 { "line\nbreak" } else { "" },
            if i % 7 == 0 { "\r\n" } else { "" }
        );
        let note = match i % 3 {
            0 => None,
            1 => Some(format!("{i}")),
            _ => Some(format!("'{i}'\u{1F600}")),
        };
        want.push(vec![
            i.to_string(),
            name.clone(),
            note.clone().unwrap_or_default(),
        ]);
        values.push(format!(
            "({i}, '{}', {})",
            name.replace('\'', "''"),
            note.map(|n| format!("'{}'", n.replace('\'', "''")))
                .unwrap_or_else(|| "NULL".into())
        ));
    }
    pg.sql(
        "hr",
        &format!("INSERT INTO people VALUES {}", values.join(",")),
    );
    let ws = workspace(
        &pg,
        json!({
            "SqlCommand": "SELECT id, name, note FROM people ORDER BY id",
            "Tables": [
                {"Name": "slow", "SqlCommand": "SELECT pg_sleep(2)::text AS slept"},
                {"Name": "audit", "Table": "public.audit"}
            ]
        }),
    );
    // While the export sleeps in its second table, another session commits a row: the export's
    // snapshot does not see it.
    let child = ws
        .command(&["export", "--connection", "Pg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Pg_slow.csv.partial").exists() {
        assert!(Instant::now() < deadline, "the export did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.sql("hr", "INSERT INTO audit (what) VALUES ('during')");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(python_csv(&ws.output_file("Pg.csv")), want);
    assert_eq!(
        python_csv(&ws.output_file("Pg_audit.csv")),
        strings(&[&["id", "what"], &["1", "before"]])
    );
}

#[test]
fn failures_have_their_own_messages_and_keep_previous_files() {
    let mut pg = Pg::start();
    setup(&pg);
    pg.sql(
        "hr",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 300000) g",
    );
    let ws = workspace(
        &pg,
        json!({"SqlCommand": "SELECT id, h FROM big ORDER BY id"}),
    );
    assert_eq!(ws.run(&["export", "--connection", "Pg"]).code, 0);
    let before = std::fs::read(ws.output_file("Pg.csv")).unwrap();

    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"ConnectionString": pg.url("agent", "wrong-password", "hr"), "SqlCommand": "SELECT 1"}),
            "the server refused the login",
            "Source",
        ),
        (
            json!({"ConnectionString": format!("host=127.0.0.1 port=1 dbname=hr user=agent password={PASSWORD} sslmode=disable connect_timeout=5"), "SqlCommand": "SELECT 1"}),
            "cannot reach PostgreSQL agent@127.0.0.1:1/hr",
            "Source",
        ),
        (
            json!({"ConnectionString": pg.url("agent", PASSWORD, "nope"), "SqlCommand": "SELECT 1"}),
            "database \"nope\" does not exist",
            "Config",
        ),
        (
            json!({"SqlCommand": "SELECT nope FROM big"}),
            "column \"nope\" does not exist",
            "Config",
        ),
        (
            json!({"SqlCommand": "SELECT pg_sleep(5)", "Timeout": 1}),
            "stopped after the Timeout of 1 seconds",
            "Source",
        ),
    ];
    for (settings, message, class) in cases {
        let ws2 = workspace(&pg, settings);
        let out = ws2.run(&["export", "--connection", "Pg"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 1, "{message}: {}", out.all());
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("failed ({class})")),
            "{message}: {}",
            out.stderr
        );
        // `test` connects and compiles the queries; it does not run them (no timeout there).
        let t = ws2.run(&["test", "Pg"]);
        assert_no_secret(&t);
        assert_eq!(
            t.code,
            if message.starts_with("stopped after") {
                0
            } else {
                1
            },
            "{message}: {}",
            t.all()
        );
    }
    let t = ws.run(&["test", "Pg"]);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(
        t.stdout.contains("connected to agent@127.0.0.1"),
        "{}",
        t.stdout
    );
    assert!(t.stdout.contains("PostgreSQL"), "{}", t.stdout);

    // The server dies in the middle of an export: the previous file stays, no partial file.
    let ws3 = workspace(
        &pg,
        json!({"SqlCommand": "SELECT g, md5(g::text) FROM generate_series(1, 50000000) g"}),
    );
    ws3.write("Temp/ExportOutput/Pg.csv", &before);
    let child = ws3
        .command(&["export", "--connection", "Pg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(ws3.output_file("Pg.csv.partial"))
        .map(|m| m.len())
        .unwrap_or(0)
        < 100_000
    {
        assert!(Instant::now() < deadline, "the export did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws3.output_names(), ["Pg.csv"]);
    assert_eq!(std::fs::read(ws3.output_file("Pg.csv")).unwrap(), before);
}

#[test]
fn discovery_lists_tables_with_keys_in_one_query() {
    let pg = Pg::start();
    setup(&pg);
    pg.sql("hr", "CREATE SCHEMA hr; CREATE SCHEMA other;
        DO $$ BEGIN FOR i IN 1..1500 LOOP
          EXECUTE format('CREATE TABLE hr.t%s (id int PRIMARY KEY, code text UNIQUE, label text, tags text[])', i);
        END LOOP; END $$;
        CREATE UNIQUE INDEX ON hr.t1 (label) INCLUDE (tags);
        CREATE TABLE other.x (a int); CREATE VIEW hr.v AS SELECT 1 AS one;");
    let ws = workspace(
        &pg,
        json!({"Tables": [{"Name": "t1", "Table": "hr.t1"}], "SchemaFilter": ["hr"], "TableFilter": ["t1*", "v"]}),
    );
    let out = ws.run(&["schema", "Pg", "--json"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let j = out.json();
    let tables = j["schema"]["tables"].as_array().unwrap();
    assert_eq!(tables[0]["name"], "Pg_t1");
    assert_eq!(tables[0]["source_table"], false);
    let keys: Vec<&str> = tables[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key_type"].as_str().unwrap())
        .collect();
    // A unique index with INCLUDE columns makes only its key column unique.
    assert_eq!(keys, ["Primary", "Unique", "Unique", "None"]);
    let listed: Vec<&str> = tables[1..]
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // t1, t10..t19, t100..t199, t1000..t1500 (1..1500 is inclusive), and the view.
    assert_eq!(listed.len(), 1 + 10 + 100 + 501 + 1);
    assert!(listed.contains(&"hr.v") && !listed.iter().any(|t| t.starts_with("other.")));
    let t7 = tables.iter().find(|t| t["name"] == "hr.t1000").unwrap();
    assert_eq!(t7["columns"][3]["multivalued"], true);
    assert_eq!(t7["columns"][0]["value_type"], "Int32");
}

#[test]
fn connection_string_forms_and_redaction() {
    let pg = Pg::start();
    setup(&pg);
    pg.sql(
        "hr",
        "CREATE TABLE one (v int); INSERT INTO one VALUES (1);",
    );
    let forms = [
        pg.url("agent", PASSWORD, "hr"),
        format!(
            "host=127.0.0.1 port={} dbname=hr user=agent password='{PASSWORD}' sslmode=disable",
            pg.port
        ),
        format!(
            "Host=127.0.0.1;Port={};Database=hr;Username=agent;Password={PASSWORD};SSL Mode=Disable",
            pg.port
        ),
    ];
    // A password with every character that connection-string syntaxes treat specially, written
    // in each syntax without %-escapes (URL) or with the syntax's own quoting (libpq, ADO.NET).
    const HOSTILE: &str = "Pw;/@'\"?#: x-canary-91";
    pg.sql(
        "hr",
        &format!(
            "CREATE ROLE agent2 LOGIN PASSWORD '{}'; GRANT SELECT ON one TO agent2;",
            HOSTILE.replace('\'', "''")
        ),
    );
    let hostile_forms = [
        format!(
            "postgresql://agent2:{HOSTILE}@127.0.0.1:{}/hr?sslmode=disable",
            pg.port
        ),
        format!(
            "host=127.0.0.1 port={} dbname=hr user=agent2 password='{}' sslmode=disable",
            pg.port,
            HOSTILE.replace('\'', "\\'")
        ),
        format!(
            "Host=127.0.0.1;Port={};Database=hr;Username=agent2;Password=\"{}\";SSL Mode=Disable",
            pg.port,
            HOSTILE.replace('"', "\"\"")
        ),
    ];
    for cs in forms.iter().chain(hostile_forms.iter()) {
        // A trailing line comment must not swallow the rest of the COPY statement around it.
        let ws = workspace(
            &pg,
            json!({"ConnectionString": cs, "SqlCommand": "SELECT v FROM one -- the only row"}),
        );
        let out = ws.run(&["export", "--connection", "Pg"]);
        assert_no_secret(&out);
        assert!(!out.all().contains("x-canary-91"), "{}", out.all());
        assert_eq!(out.code, 0, "{cs}: {}", out.all());
        assert_eq!(
            python_csv(&ws.output_file("Pg.csv")),
            strings(&[&["v"], &["1"]])
        );
        let l = ws.run(&["connections", "--json"]);
        assert_no_secret(&l);
        assert!(!l.all().contains("x-canary-91"), "{}", l.all());
        let shown = l.json()["connections"][0]["setting_values"][0]["shown"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(shown.contains("(set)"), "{shown}");
        let sh = ws.run(&["connections", "--show-settings"]);
        assert_no_secret(&sh);
        assert!(!sh.all().contains("x-canary-91"), "{}", sh.all());
    }
}

/// TestConnection with a re-entered password (the central server's "test these credentials"):
/// the candidate password serves that one test against the real server, is never stored, shown
/// or logged, and the saved settings stay what they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_re_entered_password_serves_one_test_only() {
    use crate::support::agent::*;
    use connagent::grpc::proto as pb;
    const TOKEN: &str = "pg-admin-token-canary-44d1";
    const SAVED: &str = "saved-wrong-canary-0b9c";
    let pg = Pg::start();
    setup(&pg);
    let ws = Workspace::new();
    ws.settings(json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [
            {"Name": "central", "Sha256": sha(TOKEN), "Role": "admin"}]},
        "Connections": {"Pg": {"ConnectionString": pg.url("agent", SAVED, "hr"),
                               "SqlCommand": "SELECT 1 AS one"}}
    }));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"PostgreSql\"/>", connector_xml()));
    let settings_before = std::fs::read(ws.settings_path()).unwrap();
    let mut cmd = ws.command(&["--json", "serve"]);
    cmd.env("RUST_LOG", "connagent=trace");
    let agent = Proc::start(cmd);
    let mut c = client(&agent.addr()).await;
    let test = |settings: std::collections::HashMap<String, String>| pb::TestConnectionRequest {
        identifier: "Pg".into(),
        settings,
    };
    // The saved password is wrong: the test fails, saying so without either password.
    let e = c
        .test_connection(auth(test(Default::default()), TOKEN))
        .await
        .expect_err("the saved password is wrong");
    assert!(
        e.message().contains("password authentication failed"),
        "{e:?}"
    );
    // Re-entered: the server accepts it.
    let mut cand = std::collections::HashMap::new();
    cand.insert(
        "ConnectionString".to_string(),
        pg.url("agent", PASSWORD, "hr"),
    );
    let ok = c
        .test_connection(auth(test(cand), TOKEN))
        .await
        .expect("the re-entered password works")
        .into_inner();
    assert!(!ok.checks.is_empty(), "{ok:?}");
    // For that test only: the saved settings still fail.
    let e = c
        .test_connection(auth(test(Default::default()), TOKEN))
        .await
        .expect_err("the candidate was not kept");
    assert!(
        e.message().contains("password authentication failed"),
        "{e:?}"
    );
    let shown = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "Pg".into(),
            },
            TOKEN,
        ))
        .await
        .expect("get")
        .into_inner();
    let shown = format!("{shown:?}");
    assert!(shown.contains("(set)"), "{shown}");
    // Key-value options are not candidates (they are merged at load time): refused, unused.
    let mut cand = std::collections::HashMap::new();
    cand.insert(
        "ConnectionStringOptions".to_string(),
        json!({"Password": PASSWORD}).to_string(),
    );
    let e = c
        .test_connection(auth(test(cand), TOKEN))
        .await
        .expect_err("structured candidate");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("key-value options cannot be tested as candidates"),
        "{e:?}"
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    // The harness searched every response, the log and Work/ for both passwords ("canary");
    // and nothing was written where settings are kept.
    assert_eq!(
        std::fs::read(ws.settings_path()).unwrap(),
        settings_before,
        "the settings file changed"
    );
    assert!(!ws.path("Work/appsettings.connection.json").exists());
    assert!(!ws.path("appsettings.encrypted.agent.json").exists());
}
