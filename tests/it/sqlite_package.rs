//! The Sqlite package and the atomic export through the binary: every column type, NULL against
//! empty text, unicode, 100k rows read back by Python's csv module, failures after N rows, timeouts,
//! interrupts, and stale partial files.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn workspace(db_sql: &str, settings: Value) -> Workspace {
    let ws = Workspace::new();
    let db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    db.execute_batch(db_sql).unwrap();
    drop(db);
    let mut s = settings;
    s["ConnectionString"] = json!("Data Source=hr.db");
    ws.settings(json!({"Connections": {"HRDb": s}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"HRDb\" DisplayName_L1=\"db\" Connector=\"HR\" Package=\"Sqlite\"/>",
            connector_xml()
        ),
    );
    ws
}

fn strings(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

const TYPES_SQL: &str = "
-- DECIMAL has NUMERIC affinity: SQLite stores '12.5000' as the real 12.5.
CREATE TABLE t (
  i INTEGER, big BIGINT, r REAL, d DOUBLE, txt TEXT, vc VARCHAR(10), b BLOB, flag BOOLEAN,
  day DATE, ts DATETIME, g UUID, dec DECIMAL(12,4), anything
);
INSERT INTO t VALUES (1, 9223372036854775807, 0.1, -1e300, 'plain', 'Zoë 李 🎉', X'00FF10', 1,
  '2024-02-29', '2024-02-29 07:05:09.120', '6F1C2B9E-3F4A-4C6D-9E8F-0A1B2C3D4E5F', '12.5000', 3.0);
INSERT INTO t VALUES (-2, -9223372036854775808, 1.5e-7, 2.5, '', '', X'', 0,
  'not a date', '2024-02-29T23:59:59', X'6F1C2B9E3F4A4C6D9E8F0A1B2C3D4E5F', 7, 'x');
INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO t VALUES (3, 0, 100.0, 1e21, 'a,b', 'line1
line2', NULL, 'true', '1999-12-31', '2000-01-01 00:00', 'not-a-guid', -0.5, X'41');
";

#[test]
fn every_column_type_has_its_canonical_text() {
    let ws = workspace(
        TYPES_SQL,
        json!({"SqlCommand": "SELECT * FROM t ORDER BY rowid"}),
    );
    let out = ws.run(&["export", "--connection", "HRDb"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = python_csv(&ws.output_file("HRDb.csv"));
    let want = strings(&[
        &[
            "i", "big", "r", "d", "txt", "vc", "b", "flag", "day", "ts", "g", "dec", "anything",
        ],
        &[
            "1",
            "9223372036854775807",
            "0.1",
            &format!("-1{}", "0".repeat(300)),
            "plain",
            "Zoë 李 🎉",
            "AP8Q",
            "true",
            "2024-02-29",
            "2024-02-29T07:05:09.12",
            "6f1c2b9e-3f4a-4c6d-9e8f-0a1b2c3d4e5f",
            "12.5",
            "3",
        ],
        &[
            "-2",
            "-9223372036854775808",
            "0.00000015",
            "2.5",
            "",
            "",
            "",
            "false",
            "not a date",
            "2024-02-29T23:59:59",
            "6f1c2b9e-3f4a-4c6d-9e8f-0a1b2c3d4e5f",
            "7",
            "x",
        ],
        &["", "", "", "", "", "", "", "", "", "", "", "", ""],
        &[
            "3",
            "0",
            "100",
            "1000000000000000000000",
            "a,b",
            "line1\nline2",
            "",
            "true",
            "1999-12-31",
            "2000-01-01T00:00:00",
            "not-a-guid",
            "-0.5",
            "QQ==",
        ],
    ]);
    assert_eq!(got, want);
    // NULL and empty text are both an empty field: the raw line shows no quotes for either.
    let raw = std::fs::read_to_string(ws.output_file("HRDb.csv")).unwrap();
    assert!(raw.contains("\n,,,,,,,,,,,,\n"), "{raw}");

    let s = ws.run(&["schema", "HRDb", "--json"]).json();
    let types: Vec<&str> = s["schema"]["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Int64", "Int64", "Double", "Double", "String", "String", "Binary", "Bool", "DateTime",
            "DateTime", "Guid", "String", "String"
        ]
    );
}

#[test]
fn tables_sqlfile_schema_keys_and_test() {
    let sql = "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT);
               CREATE TABLE groups (code TEXT PRIMARY KEY, label TEXT);
               INSERT INTO people VALUES (1, 'a@x', 'Ann'), (2, 'b@x', 'Bob');
               INSERT INTO groups VALUES ('G1', 'One');";
    let ws = workspace(
        sql,
        json!({
            "SqlFile": "queries/main.sql",
            "Tables": [{"Name": "People", "Table": "people"}, {"name": "big-groups", "sqlcommand": "SELECT code FROM groups"}]
        }),
    );
    ws.write("queries/main.sql", "SELECT name FROM people ORDER BY id");
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        ws.output_names(),
        ["HRDb.csv", "HRDb_People.csv", "HRDb_big-groups.csv"]
    );
    assert_eq!(
        python_csv(&ws.output_file("HRDb.csv")),
        strings(&[&["name"], &["Ann"], &["Bob"]])
    );
    assert_eq!(
        python_csv(&ws.output_file("HRDb_big-groups.csv")),
        strings(&[&["code"], &["G1"]])
    );
    let s = ws.run(&["schema", "HRDb", "--json"]).json();
    let people = &s["schema"]["tables"][1];
    assert_eq!(people["name"], "HRDb_People");
    let keys: Vec<&str> = people["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key_type"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["Primary", "Unique", "None"]);
    let t = ws.run(&["test", "hrdb"]);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(t.stdout.contains("read-only"), "{}", t.stdout);
    assert!(
        t.stdout.contains("HRDb_People: table people compiles"),
        "{}",
        t.stdout
    );
}

#[test]
fn hundred_thousand_rows_read_back_equal() {
    let ws = workspace(
        "CREATE TABLE t (id INTEGER, name TEXT, note TEXT, score REAL);",
        json!({"SqlCommand": "SELECT * FROM t ORDER BY id"}),
    );
    let mut db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    let tx = db.transaction().unwrap();
    let mut want = vec![vec![
        "id".to_string(),
        "name".into(),
        "note".into(),
        "score".into(),
    ]];
    {
        let mut st = tx.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)").unwrap();
        for i in 0..100_000i64 {
            let name = format!("name \"{i}\", é{}", if i % 7 == 0 { "\nnext" } else { "" });
            let note: Option<String> = match i % 3 {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!("ü{i}")),
            };
            let score = i as f64 / 8.0;
            st.execute(rusqlite::params![i, name, note, score]).unwrap();
            want.push(vec![
                i.to_string(),
                name,
                note.unwrap_or_default(),
                connagent::packages::value::float_text(score),
            ]);
        }
    }
    tx.commit().unwrap();
    drop(db);
    let out = ws.run(&["export", "--connection", "HRDb"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("100000 rows"), "{}", out.stdout);
    assert_eq!(python_csv(&ws.output_file("HRDb.csv")), want);
}

/// A query that fails at row 1001 (abs() of the smallest integer overflows in SQLite).
const FAILING: &str =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000)
  SELECT x, CASE WHEN x > 1000 THEN abs(-9223372036854775807 - 1) ELSE x END AS y FROM n";

#[test]
fn a_source_failing_after_n_rows_keeps_the_previous_files() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT); INSERT INTO a VALUES ('first');",
        json!({
            "SqlCommand": "SELECT v FROM a",
            "Tables": [{"Name": "second", "SqlCommand": "SELECT 1 AS x"}]
        }),
    );
    assert_eq!(ws.run(&["export", "--all"]).code, 0);
    let before_main = std::fs::read(ws.output_file("HRDb.csv")).unwrap();
    let before_second = std::fs::read(ws.output_file("HRDb_second.csv")).unwrap();
    // The data changes, and the second table now fails after 1000 rows.
    let db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    db.execute("UPDATE a SET v = 'changed'", []).unwrap();
    drop(db);
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["HRDb"]["Tables"][0]["SqlCommand"] = json!(FAILING);
    ws.settings(s);
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("integer overflow"), "{}", out.stderr);
    assert!(out.stderr.contains("failed (Source)"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the previous connection tables, if any, are unchanged"),
        "{}",
        out.stderr
    );
    // Neither table was replaced (the export publishes all its tables or none), no partial left.
    assert_eq!(
        std::fs::read(ws.output_file("HRDb.csv")).unwrap(),
        before_main
    );
    assert_eq!(
        std::fs::read(ws.output_file("HRDb_second.csv")).unwrap(),
        before_second
    );
    assert_eq!(ws.output_names(), ["HRDb.csv", "HRDb_second.csv"]);
    let j = ws.run(&["export", "--all", "--json"]).json();
    assert_eq!(j["runs"][0]["status"], "failed");
    assert_eq!(j["runs"][0]["class"], "source");
}

#[test]
fn bad_query_is_a_configuration_failure() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT);",
        json!({"SqlCommand": "SELECT nope FROM a"}),
    );
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("failed (Config)"), "{}", out.stderr);
    assert!(
        out.stderr.contains("no such column: nope"),
        "{}",
        out.stderr
    );
    let t = ws.run(&["test", "HRDb"]);
    assert_eq!(t.code, 1);
    assert!(t.stderr.contains("no such column: nope"), "{}", t.stderr);
    assert!(ws.output_names().is_empty());
}

#[test]
fn timeout_stops_the_query_and_leaves_nothing() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT);",
        json!({
            "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
            "Timeout": 1
        }),
    );
    let started = Instant::now();
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("stopped after the Timeout of 1 seconds"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
}

#[test]
fn interrupt_during_export_keeps_the_previous_file_and_removes_the_partial() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT); INSERT INTO a VALUES ('kept');",
        json!({"SqlCommand": "SELECT v FROM a"}),
    );
    assert_eq!(ws.run(&["export", "--all"]).code, 0);
    let before = std::fs::read(ws.output_file("HRDb.csv")).unwrap();
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["HRDb"]["SqlCommand"] =
        json!("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n");
    ws.settings(s);
    let child = ws
        .command(&["export", "--all"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = ws.output_file("HRDb.csv.partial");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial.exists() || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 100_000 {
        assert!(
            Instant::now() < deadline,
            "the export never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 128 + SIGINT, as a shell reports an interrupted command.
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("failed (Cancelled)"), "{stderr}");
    assert_eq!(ws.output_names(), ["HRDb.csv"]);
    assert_eq!(std::fs::read(ws.output_file("HRDb.csv")).unwrap(), before);
}

#[test]
fn a_stale_partial_file_is_removed_at_the_next_run() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT); INSERT INTO a VALUES ('x');",
        json!({"SqlCommand": "SELECT v FROM a"}),
    );
    ws.write("Temp/ExportOutput/HRDb.csv.partial", "half a file");
    ws.write("Temp/ExportOutput/HRDb_old.csv.partial", "half a file");
    ws.write("Temp/ExportOutput/Other.csv.partial", "someone else's");
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ws.output_names(), ["HRDb.csv", "Other.csv.partial"]);
}

#[test]
fn unusable_database_settings() {
    for (cs, message) in [
        ("Data Source=missing.db", "the SQLite database"),
        (
            "Data Source=hr.db;Password=canary-pw-4471",
            "encrypted SQLite databases are not supported",
        ),
        ("Mode=ReadOnly", "the connection string has no Data Source"),
        ("Data Source='hr.db", "opens a quote that is never closed"),
    ] {
        let ws = workspace(
            "CREATE TABLE a (v TEXT);",
            json!({"SqlCommand": "SELECT 1"}),
        );
        let mut s: Value =
            serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
        s["Connections"]["HRDb"]["ConnectionString"] = json!(cs);
        ws.settings(s);
        let out = ws.run(&["validate"]);
        assert_eq!(out.code, 78, "{cs}: {}", out.all());
        assert!(out.stderr.contains(message), "{cs}: {}", out.stderr);
        assert!(
            out.stderr.contains("appsettings.agent.json:4:"),
            "{cs}: {}",
            out.stderr
        );
        assert!(
            !out.all().contains("canary-pw-4471"),
            "secret shown: {}",
            out.all()
        );
    }
}

#[test]
fn text_that_is_not_utf8_fails_the_export_naming_row_and_column() {
    let ws = workspace(
        "CREATE TABLE a (id INTEGER, v TEXT); INSERT INTO a VALUES (1, 'ok'), (2, CAST(X'41FF42' AS TEXT));",
        json!({"SqlCommand": "SELECT id, v FROM a ORDER BY id"}),
    );
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("row 2, column v: the text is not valid UTF-8"),
        "{}",
        out.stderr
    );
    assert!(ws.output_names().is_empty());
}

#[test]
fn one_export_per_connection_at_a_time() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT);",
        json!({
            "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
        }),
    );
    let first = ws
        .command(&["export", "--all"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = ws.output_file("HRDb.csv.partial");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "the first export never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = ws.run(&["export", "--all"]);
    assert_eq!(second.code, 1, "{}", second.all());
    assert!(
        second
            .stderr
            .contains("connection HRDb is being exported by another run"),
        "{}",
        second.stderr
    );
    // The second run did not touch the first one's partial file.
    assert!(partial.exists());
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
}

#[test]
fn a_single_column_of_empty_values_reads_back_as_empty_fields() {
    let ws = workspace(
        "CREATE TABLE a (v TEXT); INSERT INTO a VALUES (NULL), (''), ('x');",
        json!({"SqlCommand": "SELECT v FROM a ORDER BY rowid"}),
    );
    let out = ws.run(&["export", "--all"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(ws.output_file("HRDb.csv")).unwrap(),
        "v\n\"\"\n\"\"\nx\n"
    );
    assert_eq!(
        python_csv(&ws.output_file("HRDb.csv")),
        strings(&[&["v"], &[""], &[""], &["x"]])
    );
}
