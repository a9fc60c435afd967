//! The SqlServer and SqlServerEntitlements packages through the real binary, against the TDS
//! responder in `tests/support/tds` (no SQL Server can run on these machines). tiberius talks to
//! it over real TCP, with TLS for the login as SQL Server does.

use crate::support::tds::{
    Cell, Column, Fault, Matcher, Reply, Responder, ResultSet, Script, SqlType, TlsUse,
};
use crate::support::*;
use serde_json::{Value, json};

/// Holds `;`, `"`, `@` and `'`: it must be quoted in the connection string, with `'` doubled.
const PASSWORD: &str = "ms-canary;7Q\"z@'x";
/// The part before the `;`: would show if a parser cut the value at the separator.
const PASSWORD_HEAD: &str = "ms-canary";

fn quoted_password() -> String {
    format!("'{}'", PASSWORD.replace('\'', "''"))
}

fn script() -> Script {
    Script::default()
        .user("agent", PASSWORD)
        .database("hr")
        .database("sales")
}

/// Login-only TLS, certificate trusted (the common on-premise setting).
fn cs(r: &Responder) -> String {
    cs_with(r, "Encrypt=false;TrustServerCertificate=true")
}

fn cs_with(r: &Responder, tail: &str) -> String {
    format!(
        "Server=tcp:127.0.0.1,{};Database=hr;User ID=agent;Password={};{tail}",
        r.port(),
        quoted_password()
    )
}

fn workspace_for(package: &str, id: &str, settings: Value) -> Workspace {
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {id: settings}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"{id}\" DisplayName_L1=\"sql\" Connector=\"HR\" Package=\"{package}\"/>",
            connector_xml()
        ),
    );
    ws
}

fn workspace(settings: Value) -> Workspace {
    workspace_for("Usercube.SQL.SQLServer@0000001", "Mssql", settings)
}

fn assert_no_secret(out: &Output) {
    for s in [PASSWORD, PASSWORD_HEAD] {
        assert!(
            !out.all().contains(s),
            "the password leaked:\n{}",
            out.all()
        );
    }
}

fn rows_of(set: ResultSet) -> Reply {
    Reply::set(set)
}

#[test]
fn every_type_has_its_canonical_text() {
    use SqlType::*;
    let columns = vec![
        Column::new("ti", TinyInt),
        Column::new("si", SmallInt),
        Column::new("i", Int),
        Column::new("bi", BigInt),
        Column::new("b", Bit),
        Column::new("d", Decimal(20, 6)),
        Column::new("n", Numeric(9, 2)),
        Column::new("m", Money),
        Column::new("sm", SmallMoney),
        Column::new("r", Real),
        Column::new("f", Float),
        Column::new("c", Char(3)),
        Column::new("vc", VarChar(20)),
        Column::new("vcm", VarCharMax),
        Column::new("nc", NChar(2)),
        Column::new("nv", NVarChar(50)),
        Column::new("nvm", NVarCharMax),
        Column::new("tx", Text),
        Column::new("ntx", NText),
        Column::new("dt", Date),
        Column::new("tm", Time(7)),
        Column::new("dtm", DateTime),
        Column::new("sdt", SmallDateTime),
        Column::new("dt2", DateTime2(7)),
        Column::new("dto", DateTimeOffset(7)),
        Column::new("g", UniqueIdentifier),
        Column::new("bin", Binary(3)),
        Column::new("vbm", VarBinaryMax),
        Column::new("img", Image),
        Column::new("x", Xml),
        Column::new("v", Variant),
        Column::new("v2", Variant),
    ];
    let long_varchar = "x".repeat(9000);
    let long_nvarchar = "é".repeat(5000);
    let blob = vec![7u8; 10_000];
    let full = vec![
        Cell::Int(255),
        Cell::Int(-32768),
        Cell::Int(2147483647),
        Cell::Int(i64::MIN),
        Cell::Bit(true),
        Cell::decimal("12345678901234.123456"),
        Cell::decimal("-12.5"),
        Cell::decimal("12.34"),
        Cell::decimal("-214748.3648"),
        Cell::Float(0.1),
        Cell::Float(0.1),
        Cell::str("ab "),
        Cell::str("café"),
        Cell::str(long_varchar.clone()),
        Cell::str("李子"),
        Cell::str("Zoë \"q\", 李\nline"),
        Cell::str(long_nvarchar.clone()),
        Cell::str("legacy text"),
        Cell::str("ünïcode"),
        Cell::date(2024, 2, 29),
        Cell::time(7, 5, 9, 123_456_700),
        Cell::datetime(2024, 2, 29, 7, 5, 9, 123_000_000),
        Cell::datetime(2024, 2, 29, 7, 5, 0, 0),
        Cell::datetime(2024, 2, 29, 7, 5, 9, 123_456_700),
        Cell::datetimeoffset(2024, 2, 29, 7, 5, 9, 0, 90),
        Cell::guid("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        Cell::Bytes(vec![0, 255, 16]),
        Cell::Bytes(blob.clone()),
        Cell::Bytes(b"GIF".to_vec()),
        Cell::Xml("<a>b</a>".into()),
        Cell::variant(Int, Cell::Int(42)),
        Cell::variant(NVarChar(10), Cell::str("hi")),
    ];
    let nulls = vec![Cell::Null; columns.len()];
    let mut empties = nulls.clone();
    empties[15] = Cell::str(""); // an empty nvarchar: empty in CSV, like NULL
    let r = Responder::start(script().reply(
        Matcher::Contains("FROM dbo.all_types".into()),
        rows_of(ResultSet::fixed(columns, vec![full, nulls, empties])),
    ));
    let ws =
        workspace(json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.all_types"}));
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = python_csv(&ws.output_file("Mssql.csv"));
    assert_eq!(
        got[0],
        [
            "ti", "si", "i", "bi", "b", "d", "n", "m", "sm", "r", "f", "c", "vc", "vcm", "nc",
            "nv", "nvm", "tx", "ntx", "dt", "tm", "dtm", "sdt", "dt2", "dto", "g", "bin", "vbm",
            "img", "x", "v", "v2"
        ]
    );
    use base64::Engine as _;
    let blob64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let expected: Vec<&str> = vec![
        "255",
        "-32768",
        "2147483647",
        "-9223372036854775808",
        "true",
        "12345678901234.123456",
        "-12.50",
        "12.3400",
        "-214748.3648",
        "0.1",
        "0.1",
        "ab ",
        "café",
        &long_varchar,
        "李子",
        "Zoë \"q\", 李\nline",
        &long_nvarchar,
        "legacy text",
        "ünïcode",
        "2024-02-29",
        "07:05:09.1234567",
        // datetime counts 1/300 s: .123 is stored as 37/300 s and shown as .123.
        "2024-02-29T07:05:09.123",
        "2024-02-29T07:05:00",
        "2024-02-29T07:05:09.1234567",
        "2024-02-29T07:05:09+01:30",
        "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "AP8Q",
        &blob64,
        "R0lG",
        "<a>b</a>",
        "42",
        "hi",
    ];
    assert_eq!(got[1], expected);
    assert!(got[2].iter().all(String::is_empty), "{:?}", got[2]);
    assert!(got[3].iter().all(String::is_empty), "{:?}", got[3]);
    assert_eq!(got.len(), 4);

    // The schema of the query comes from sys.dm_exec_describe_first_result_set.
    assert!(
        r.batches()
            .iter()
            .any(|b| b.contains("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")),
        "{:?}",
        r.batches()
    );
}

#[test]
fn a_million_rows_stream_with_flat_memory() {
    fn responder(rows: u64) -> Responder {
        let columns = vec![
            Column::not_null("id", SqlType::BigInt),
            Column::new("name", SqlType::NVarChar(60)),
            Column::new("score", SqlType::Decimal(12, 2)),
            Column::new("flag", SqlType::VarChar(4)),
        ];
        Responder::start(script().reply(
            Matcher::Contains("FROM dbo.people".into()),
            rows_of(ResultSet::generated(columns, rows, |i| {
                vec![
                    Cell::Int(i as i64),
                    Cell::str(format!("person {i}, \"quoted\"")),
                    Cell::decimal(format!("{}.{:02}", i / 4, i % 100)),
                    if i % 2 == 0 {
                        Cell::Null
                    } else {
                        Cell::str("odd")
                    },
                ]
            })),
        ))
    }
    let small = responder(100_000);
    let big = responder(1_000_000);
    let ws_small = workspace(
        json!({"ConnectionString": cs(&small), "SqlCommand": "SELECT id, name, score, flag FROM dbo.people"}),
    );
    let ws_big = workspace(
        json!({"ConnectionString": cs(&big), "SqlCommand": "SELECT id, name, score, flag FROM dbo.people"}),
    );
    let a = peak_rss_kib(&ws_small, &["export", "--connection", "Mssql"]);
    let b = peak_rss_kib(&ws_big, &["export", "--connection", "Mssql"]);
    eprintln!("sqlserver: peak RSS {a} KiB at 100k rows, {b} KiB at 1M rows");
    assert!(
        b < a + 8 * 1024,
        "peak memory grew from {a} KiB to {b} KiB with 10x the rows"
    );
    // Every row arrived, in order, and the last one is intact.
    let text = std::fs::read_to_string(ws_big.output_file("Mssql.csv")).unwrap();
    assert_eq!(text.lines().count(), 1_000_001);
    assert!(text.starts_with("id,name,score,flag\n0,\"person 0, \"\"quoted\"\"\",0.00,\n"));
    assert!(
        text.ends_with("999999,\"person 999999, \"\"quoted\"\"\",249999.99,odd\n"),
        "{}",
        &text[text.len() - 200..]
    );
}

#[test]
fn failures_have_their_own_messages_and_keep_previous_files() {
    use std::time::Duration;
    let people = || {
        ResultSet::generated(
            vec![
                Column::not_null("id", SqlType::Int),
                Column::new("name", SqlType::NVarChar(40)),
            ],
            5000,
            |i| vec![Cell::Int(i as i64), Cell::str(format!("n{i}"))],
        )
    };
    let r = Responder::start(
        script()
            .reply(
                Matcher::Contains("FROM dbo.deadlock".into()),
                Reply::set(people()).with_fault(Fault::ErrorAfterRows {
                    rows: 1000,
                    number: 1205,
                    message: "Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.".into(),
                }),
            )
            .reply(
                Matcher::Contains("FROM dbo.reset".into()),
                Reply::set(people()).with_fault(Fault::ResetAfterRows(2000)),
            )
            .reply(
                Matcher::Contains("FROM dbo.slow".into()),
                Reply::set(people())
                    .with_fault(Fault::SlowRows(Duration::from_millis(200))),
            )
            .reply(
                Matcher::Contains("FROM dbo.frozen".into()),
                Reply::set(people()).with_fault(Fault::SlowRows(Duration::from_secs(30))),
            )
            .reply(
                Matcher::Contains("FROM dbo.two".into()),
                Reply::sets(vec![people(), people()]),
            )
            .reply(Matcher::Contains("FROM dbo.people".into()), Reply::set(people())),
    );
    let tls_strict = Responder::start(script());
    let ok =
        workspace(json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.people"}));
    let out = ok.run(&["export", "--connection", "Mssql"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let before = std::fs::read(ok.output_file("Mssql.csv")).unwrap();

    let free = crate::support::agent::free_port();
    let cases: Vec<(Value, &str, &str, bool)> = vec![
        (
            json!({"ConnectionString": cs(&r).replace(&quoted_password(), "'wrong'"), "SqlCommand": "SELECT * FROM dbo.people"}),
            "the server refused the login: Login failed for user 'agent'.",
            "Source",
            true,
        ),
        (
            json!({"ConnectionString": format!("Server=tcp:127.0.0.1,{free};Database=hr;User ID=agent;Password={};Encrypt=false;TrustServerCertificate=true;Connect Timeout=5", quoted_password()), "SqlCommand": "SELECT 1"}),
            "cannot reach SQL Server at 127.0.0.1:",
            "Source",
            true,
        ),
        (
            json!({"ConnectionString": cs(&r).replace("Database=hr", "Database=nope"), "SqlCommand": "SELECT 1"}),
            "the database is unknown or not accessible to this login: Cannot open database \"nope\"",
            "Config",
            true,
        ),
        (
            // Encrypt=true checks the certificate: the responder's CA is not trusted here.
            json!({"ConnectionString": cs_with(&tls_strict, "Encrypt=true"), "SqlCommand": "SELECT 1"}),
            "TLS with the server failed",
            "Source",
            true,
        ),
        (
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.nope"}),
            "Invalid object name",
            "Config",
            false,
        ),
        (
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.deadlock"}),
            "was deadlocked on lock resources",
            "Source",
            false,
        ),
        (
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.reset"}),
            "the connection failed",
            "Source",
            false,
        ),
        (
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.slow", "Timeout": 1}),
            "stopped after the Timeout of 1 seconds",
            "Source",
            false,
        ),
        (
            // A server that stops sending (no Timeout set): each wait is bounded by ReadTimeout.
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.frozen", "ReadTimeout": 1}),
            "no data from the server for 1 s (ReadTimeout)",
            "Source",
            false,
        ),
        (
            json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.two"}),
            "returned more than one result set",
            "Config",
            false,
        ),
    ];
    for (settings, message, class, fails_test) in cases {
        let ws = workspace(settings);
        ws.write("Temp/ExportOutput/Mssql.csv", &before);
        let out = ws.run(&["export", "--connection", "Mssql"]);
        assert_no_secret(&out);
        assert_eq!(out.code, 1, "{message}: {}", out.all());
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("failed ({class})")),
            "{message}: {}",
            out.stderr
        );
        // The previous file stays, and no partial file is left.
        assert_eq!(ws.output_names(), ["Mssql.csv"], "{message}");
        assert_eq!(
            std::fs::read(ws.output_file("Mssql.csv")).unwrap(),
            before,
            "{message}"
        );
        if fails_test {
            let t = ws.run(&["test", "Mssql"]);
            assert_no_secret(&t);
            assert_eq!(t.code, 1, "{message}: {}", t.all());
            assert!(t.all().contains(message), "{message}: {}", t.all());
        }
    }
    // An error after rows names how far the export got.
    let ws =
        workspace(json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT * FROM dbo.deadlock"}));
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert!(out.stderr.contains("(after 1000 rows)"), "{}", out.stderr);
    // The failed logins never carried the right password to a wrong place: the responder saw
    // only logins as `agent`.
    assert!(r.logins().iter().all(|l| l.user == "agent"));
}

#[test]
fn test_named_instance_tls_and_isolation() {
    let mut s = script();
    s.instance = Some("HRINST".into());
    let r = Responder::start(s.reply(
        Matcher::Contains("FROM dbo.people".into()),
        Reply::set(ResultSet::fixed(
            vec![Column::not_null("id", SqlType::Int)],
            vec![vec![Cell::Int(1)], vec![Cell::Int(2)]],
        )),
    ));
    // The instance name is resolved through the Browser service (UDP), then TLS is full and the
    // certificate is checked against the responder's CA.
    let ws = workspace(json!({
        "ConnectionString": format!("Data Source=127.0.0.1\\HRINST;Initial Catalog=hr;UID=agent;PWD={};Encrypt=true;Application Name=HR export;ApplicationIntent=ReadOnly", quoted_password()),
        "BrowserPort": r.browser_port(),
        "CaFile": r.ca_path().display().to_string(),
        "IsolationLevel": "Snapshot",
        "SqlCommand": "SELECT id FROM dbo.people",
    }));
    let t = ws.run(&["test", "Mssql"]);
    assert_no_secret(&t);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(t.stdout.contains("SELECT 1 returned 1"), "{}", t.stdout);
    assert!(
        t.stdout
            .contains("server version: Microsoft SQL Server 2022"),
        "{}",
        t.stdout
    );
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(ws.output_file("Mssql.csv")).unwrap(),
        "id\n1\n2\n"
    );
    let login = r.logins().last().cloned().unwrap();
    assert!(login.password_ok);
    assert_eq!(login.database, "hr");
    assert_eq!(login.app_name, "HR export");
    assert!(login.read_only_intent);
    assert_eq!(login.tls, TlsUse::Full);
    assert!(
        r.batches()
            .iter()
            .any(|b| b.contains("SET TRANSACTION ISOLATION LEVEL SNAPSHOT")),
        "{:?}",
        r.batches()
    );
    // An instance the Browser does not know is named in the error.
    let ws2 = workspace(json!({
        "ConnectionString": format!("Server=127.0.0.1\\OTHER;Database=hr;User ID=agent;Password={};Encrypt=false;TrustServerCertificate=true;Connect Timeout=2", quoted_password()),
        "BrowserPort": r.browser_port(),
        "SqlCommand": "SELECT 1",
    }));
    let t2 = ws2.run(&["test", "Mssql"]);
    assert_no_secret(&t2);
    assert_eq!(t2.code, 1, "{}", t2.all());
    assert!(t2.all().contains("OTHER"), "{}", t2.all());
}

#[test]
fn discovery_reads_a_thousand_tables_in_one_catalog_query() {
    // sys.objects x sys.columns as the catalog query returns it: 1000 tables of schema hr with
    // three columns each (primary key, unique, plain), and 10 tables of schema other.
    let catalog_columns = vec![
        Column::not_null("schema_name", SqlType::NVarChar(128)),
        Column::not_null("table_name", SqlType::NVarChar(128)),
        Column::not_null("kind", SqlType::Char(2)),
        Column::not_null("column_name", SqlType::NVarChar(128)),
        Column::not_null("type_name", SqlType::NVarChar(128)),
        Column::not_null("max_length", SqlType::SmallInt),
        Column::not_null("precision", SqlType::TinyInt),
        Column::not_null("scale", SqlType::TinyInt),
        Column::new("is_nullable", SqlType::Bit),
        Column::not_null("key_type", SqlType::Int),
    ];
    let catalog = ResultSet::generated(catalog_columns, 1010 * 3, |i| {
        let (table, col) = (i / 3, i % 3);
        let schema = if table < 1000 { "hr" } else { "other" };
        let kind = if table == 999 { "V " } else { "U " };
        let (name, ty, len, p, s, nullable, key) = match col {
            0 => ("id", "int", 4, 10, 0, false, 1),
            1 => ("code", "nvarchar", 80, 0, 0, false, 2),
            _ => ("amount", "decimal", 9, 10, 2, true, 0),
        };
        vec![
            Cell::str(schema),
            Cell::str(format!("t{table:04}")),
            Cell::str(kind),
            Cell::str(name),
            Cell::str(ty),
            Cell::Int(len),
            Cell::Int(p),
            Cell::Int(s),
            Cell::Bit(nullable),
            Cell::Int(key),
        ]
    });
    let described = ResultSet::fixed(
        vec![
            Column::new("name", SqlType::NVarChar(128)),
            Column::new("system_type_name", SqlType::NVarChar(256)),
            Column::new("is_nullable", SqlType::Bit),
            Column::new("error_number", SqlType::Int),
            Column::new("error_message", SqlType::NVarChar(4000)),
        ],
        vec![
            vec![
                Cell::str("id"),
                Cell::str("int"),
                Cell::Bit(false),
                Cell::Null,
                Cell::Null,
            ],
            vec![
                Cell::str("code"),
                Cell::str("nvarchar(40)"),
                Cell::Bit(false),
                Cell::Null,
                Cell::Null,
            ],
            vec![
                Cell::str("amount"),
                Cell::str("decimal(10,2)"),
                Cell::Bit(true),
                Cell::Null,
                Cell::Null,
            ],
        ],
    );
    let r = Responder::start(
        script()
            .reply(
                Matcher::Contains("FROM sys.objects o".into()),
                Reply::set(catalog),
            )
            .reply(
                Matcher::Contains("dm_exec_describe_first_result_set".into()),
                Reply::set(described),
            ),
    );
    let ws = workspace(json!({
        "ConnectionString": cs(&r),
        "Tables": [{"Name": "first", "Table": "hr.t0001"}],
        "SchemaFilter": ["hr"],
        "TableFilter": ["t00*", "t0999"],
    }));
    let out = ws.run(&["schema", "Mssql", "--json"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let j = out.json();
    let tables = j["schema"]["tables"].as_array().unwrap();
    assert_eq!(tables[0]["name"], "Mssql_first");
    assert_eq!(tables[0]["source_table"], false);
    let cols = tables[0]["columns"].as_array().unwrap();
    let keys: Vec<&str> = cols
        .iter()
        .map(|c| c["key_type"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["Primary", "Unique", "None"]);
    assert_eq!(cols[2]["source_type"], "decimal(10,2)");
    assert_eq!(cols[0]["value_type"], "Int32");
    // t0000..t0099 and the view t0999; schema other filtered out.
    let listed: Vec<&str> = tables[1..]
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 101, "{listed:?}");
    let view = tables.iter().find(|t| t["name"] == "hr.t0999").unwrap();
    assert_eq!(view["source"], "view");
    assert_eq!(view["columns"][1]["source_type"], "nvarchar(40)");
    assert_eq!(view["columns"][2]["nullable"], true);
    // One catalog query for all tables, one description per configured query: never a round
    // trip per table.
    let batches = r.batches();
    assert_eq!(
        batches.iter().filter(|b| b.contains("sys.objects")).count(),
        1
    );
    assert!(batches.len() <= 3, "{batches:?}");
}

#[test]
fn entitlements_are_four_files() {
    let principals_cols = || {
        vec![
            Column::new("name", SqlType::NVarChar(128)),
            Column::new("principal_id", SqlType::Int),
            Column::new("sid", SqlType::VarBinary(85)),
            Column::new("type", SqlType::Char(1)),
            Column::new("type_desc", SqlType::NVarChar(60)),
        ]
    };
    let server_principals = ResultSet::fixed(
        principals_cols(),
        vec![
            vec![
                Cell::str("sa"),
                Cell::Int(1),
                Cell::Bytes(vec![1]),
                Cell::str("S"),
                Cell::str("SQL_LOGIN"),
            ],
            vec![
                Cell::str("sysadmin"),
                Cell::Int(3),
                Cell::Bytes(vec![3]),
                Cell::str("R"),
                Cell::str("SERVER_ROLE"),
            ],
        ],
    );
    let role_members = |pairs: &[(i64, i64)], db: Option<&str>| {
        let mut cols = Vec::new();
        if db.is_some() {
            cols.push(Column::new("database_name", SqlType::NVarChar(128)));
        }
        cols.push(Column::new("role_principal_id", SqlType::Int));
        cols.push(Column::new("member_principal_id", SqlType::Int));
        ResultSet::fixed(
            cols,
            pairs
                .iter()
                .map(|(a, b)| {
                    let mut row = Vec::new();
                    if let Some(d) = db {
                        row.push(Cell::str(d));
                    }
                    row.extend([Cell::Int(*a), Cell::Int(*b)]);
                    row
                })
                .collect(),
        )
    };
    let db_principals = |db: &str, users: &[&str]| {
        let mut cols = vec![Column::new("database_name", SqlType::NVarChar(128))];
        cols.extend(principals_cols());
        ResultSet::fixed(
            cols,
            users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    vec![
                        Cell::str(db),
                        Cell::str(*u),
                        Cell::Int(5 + i as i64),
                        Cell::Bytes(vec![9, i as u8]),
                        Cell::str("S"),
                        Cell::str("SQL_USER"),
                    ]
                })
                .collect(),
        )
    };
    let databases = ResultSet::fixed(
        vec![Column::new("name", SqlType::NVarChar(128))],
        vec![vec![Cell::str("hr")], vec![Cell::str("sales")]],
    );
    let r = Responder::start(
        script()
            .reply(
                Matcher::Contains("FROM sys.server_principals".into()),
                Reply::set(server_principals),
            )
            .reply(
                Matcher::Contains("FROM sys.server_role_members".into()),
                Reply::set(role_members(&[(3, 1)], None)),
            )
            .reply(
                Matcher::Contains("FROM sys.databases".into()),
                Reply::set(databases),
            )
            .reply(
                Matcher::Contains("FROM [hr].sys.database_principals".into()),
                Reply::set(db_principals("hr", &["dbo", "ann"])),
            )
            .reply(
                Matcher::Contains("FROM [sales].sys.database_principals".into()),
                Reply::set(db_principals("sales", &["bob"])),
            )
            .reply(
                Matcher::Contains("FROM [hr].sys.database_role_members".into()),
                Reply::set(role_members(&[(16384, 5)], Some("hr"))),
            )
            .reply(
                Matcher::Contains("FROM [sales].sys.database_role_members".into()),
                Reply::set(role_members(&[], Some("sales"))),
            ),
    );
    let ws = workspace_for(
        "Usercube.SQL.SQLServerEntitlements@0000001",
        "Ent",
        json!({"ConnectionString": cs(&r)}),
    );
    let out = ws.run(&["export", "--connection", "Ent", "--complete"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        ws.output_names(),
        [
            "Ent_databasePrincipals.csv",
            "Ent_databaseRoleMembers.csv",
            "Ent_serverPrincipals.csv",
            "Ent_serverRoleMembers.csv"
        ]
    );
    let read = |f: &str| std::fs::read_to_string(ws.output_file(f)).unwrap();
    assert_eq!(
        read("Ent_serverPrincipals.csv"),
        "name,principal_id,sid,type,type_desc\nsa,1,AQ==,S,SQL_LOGIN\nsysadmin,3,Aw==,R,SERVER_ROLE\n"
    );
    assert_eq!(
        read("Ent_serverRoleMembers.csv"),
        "role_principal_id,member_principal_id\n3,1\n"
    );
    assert_eq!(
        read("Ent_databasePrincipals.csv"),
        "database_name,name,principal_id,sid,type,type_desc\nhr,dbo,5,CQA=,S,SQL_USER\nhr,ann,6,CQE=,S,SQL_USER\nsales,bob,5,CQA=,S,SQL_USER\n"
    );
    assert_eq!(
        read("Ent_databaseRoleMembers.csv"),
        "database_name,role_principal_id,member_principal_id\nhr,16384,5\n"
    );
    // With Databases set, sys.databases is not asked.
    let before = r.batches().len();
    let ws2 = workspace_for(
        "SqlServerEntitlements",
        "Ent",
        json!({"ConnectionString": cs(&r), "Databases": ["sales"]}),
    );
    let out = ws2.run(&["export", "--connection", "Ent"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let later: Vec<String> = r.batches()[before..].to_vec();
    assert!(
        !later.iter().any(|b| b.contains("sys.databases")),
        "{later:?}"
    );
    assert!(!later.iter().any(|b| b.contains("[hr]")), "{later:?}");
}

#[test]
fn connection_string_errors_are_located_at_validation() {
    let cases = [
        (
            "Server=db;Database=hr;Integrated Security=SSPI",
            "not supported on this platform: use SQL authentication",
        ),
        (
            "Server=db;Database=hr;Trusted_Connection=yes",
            "not supported on this platform: use SQL authentication",
        ),
        (
            "Server=db;Database=hr;User ID=agent;Password=x;Encrypt=maybe",
            "Encrypt",
        ),
        ("Server=db,notaport;User ID=agent;Password=x", "port"),
        ("Database=hr;User ID=agent;Password=x", "Server"),
    ];
    for (conn, message) in cases {
        let ws = workspace(json!({"ConnectionString": conn, "SqlCommand": "SELECT 1"}));
        let out = ws.run(&["validate"]);
        assert_eq!(out.code, 78, "{conn}: {}", out.all());
        assert!(out.stderr.contains(message), "{conn}: {}", out.stderr);
        assert!(
            out.stderr.contains("appsettings.agent.json:"),
            "{conn}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("ConnectionString"),
            "{conn}: {}",
            out.stderr
        );
        assert!(!out.all().contains("Password=x"), "{conn}: {}", out.all());
    }
    // Pool keywords are accepted with a note; validation passes.
    let ws = workspace(json!({
        "ConnectionString": "Server=db;Database=hr;User ID=agent;Password=x;Min Pool Size=5;Pooling=true",
        "SqlCommand": "SELECT 1"
    }));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("Min Pool Size"), "{}", out.all());
}

#[test]
fn the_password_never_shows_even_at_trace_level() {
    let r = Responder::start(script().reply(
        Matcher::Contains("FROM dbo.people".into()),
        Reply::set(ResultSet::fixed(
            vec![Column::not_null("id", SqlType::Int)],
            vec![vec![Cell::Int(1)]],
        )),
    ));
    let mut ws =
        workspace(json!({"ConnectionString": cs(&r), "SqlCommand": "SELECT id FROM dbo.people"}));
    ws.env.push(("RUST_LOG".into(), "trace".into()));
    for args in [
        &["export", "--connection", "Mssql"][..],
        &["test", "Mssql"],
        &["schema", "Mssql", "--json"],
        &["connections", "--json"],
        &["connections", "--show-settings"],
        &["validate"],
    ] {
        let out = ws.run(args);
        assert_no_secret(&out);
    }
    // A wrong password, whose driver error may repeat what it was given.
    let mut bad = workspace(
        json!({"ConnectionString": cs(&r).replace(&quoted_password(), &format!("'{PASSWORD_HEAD}-wrong'")), "SqlCommand": "SELECT 1"}),
    );
    bad.env.push(("RUST_LOG".into(), "trace".into()));
    let out = bad.run(&["test", "Mssql"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!out.all().contains(PASSWORD_HEAD), "{}", out.all());
    assert!(
        crate::support::files_containing(&ws.path(""), PASSWORD_HEAD)
            .iter()
            .all(|f| f.ends_with("appsettings.agent.json"))
    );
}

#[test]
fn csv_encoding_writes_the_chosen_encoding() {
    let r = Responder::start(
        script()
            .reply(
                Matcher::Contains("FROM dbo.latin".into()),
                Reply::set(ResultSet::fixed(
                    vec![Column::new("name", SqlType::NVarChar(20))],
                    vec![vec![Cell::str("café €")], vec![Cell::str("Zoë")]],
                )),
            )
            .reply(
                Matcher::Contains("FROM dbo.han".into()),
                Reply::set(ResultSet::fixed(
                    vec![Column::new("name", SqlType::NVarChar(20))],
                    vec![vec![Cell::str("café")], vec![Cell::str("李")]],
                )),
            ),
    );
    let run = |encoding: &str, table: &str| {
        let ws = workspace(json!({
            "ConnectionString": cs(&r),
            "SqlCommand": format!("SELECT name FROM dbo.{table}"),
            "CsvEncoding": encoding,
        }));
        let out = ws.run(&["export", "--connection", "Mssql"]);
        (ws, out)
    };
    let (ws, out) = run("windows-1252", "latin");
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        std::fs::read(ws.output_file("Mssql.csv")).unwrap(),
        b"name\ncaf\xE9 \x80\nZo\xEB\n"
    );
    let (ws, out) = run("UTF-16", "han");
    assert_eq!(out.code, 0, "{}", out.all());
    let mut want = vec![0xFF, 0xFE];
    for u in "name\ncafé\n李\n".encode_utf16() {
        want.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(std::fs::read(ws.output_file("Mssql.csv")).unwrap(), want);
    // A character the encoding cannot hold fails the table; the previous file stays.
    let ws = workspace(json!({
        "ConnectionString": cs(&r),
        "SqlCommand": "SELECT name FROM dbo.han",
        "CsvEncoding": "ISO-8859-1",
    }));
    ws.write("Temp/ExportOutput/Mssql.csv", "previous\n");
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("the character '李' (U+674E) cannot be written in windows-1252"),
        "{}",
        out.stderr
    );
    assert_eq!(ws.output_names(), ["Mssql.csv"]);
    assert_eq!(
        std::fs::read_to_string(ws.output_file("Mssql.csv")).unwrap(),
        "previous\n"
    );
    // An unknown name is a validation error that names the setting.
    let ws = workspace(json!({
        "ConnectionString": cs(&r),
        "SqlCommand": "SELECT 1",
        "CsvEncoding": "EBCDIC-klingon",
    }));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains("CsvEncoding")
            && out.stderr.contains("\"EBCDIC-klingon\" is not known"),
        "{}",
        out.stderr
    );
}

#[test]
fn tables_and_sql_file_make_one_file_each() {
    let one_col = |name: &str, values: &[i64]| {
        Reply::set(ResultSet::fixed(
            vec![Column::not_null(name, SqlType::Int)],
            values.iter().map(|v| vec![Cell::Int(*v)]).collect(),
        ))
    };
    let r = Responder::start(
        script()
            .reply(
                Matcher::Exact("SELECT * FROM [hr].[people]".into()),
                one_col("id", &[1, 2]),
            )
            .reply(
                Matcher::Contains("FROM dbo.groups".into()),
                one_col("gid", &[7]),
            )
            .reply(
                Matcher::Contains("FROM dbo.main".into()),
                one_col("m", &[3]),
            ),
    );
    let ws = workspace(json!({
        "ConnectionString": cs(&r),
        "SqlFile": "main.sql",
        "Tables": [
            {"Name": "people", "Table": "hr.people"},
            {"Name": "groups", "SqlCommand": "SELECT gid FROM dbo.groups"}
        ],
    }));
    ws.write("main.sql", "-- the main table\nSELECT m FROM dbo.main\n");
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        ws.output_names(),
        ["Mssql.csv", "Mssql_groups.csv", "Mssql_people.csv"]
    );
    let read = |f: &str| std::fs::read_to_string(ws.output_file(f)).unwrap();
    assert_eq!(read("Mssql.csv"), "m\n3\n");
    assert_eq!(read("Mssql_people.csv"), "id\n1\n2\n");
    assert_eq!(read("Mssql_groups.csv"), "gid\n7\n");
}

#[test]
fn connection_string_options_are_merged_and_never_shown() {
    let r = Responder::start(script().reply(
        Matcher::Contains("FROM dbo.people".into()),
        Reply::set(ResultSet::fixed(
            vec![Column::not_null("id", SqlType::Int)],
            vec![vec![Cell::Int(1)]],
        )),
    ));
    // The password and the application name come from the secured options, not the string.
    let ws = workspace(json!({
        "ConnectionString": format!("Server=tcp:127.0.0.1,{};Database=hr;User ID=agent;Password=wrong;Encrypt=false;TrustServerCertificate=true", r.port()),
        "ConnectionStringOptions": {"password": PASSWORD, "Application Name": "options-app-7c1"},
        "SqlCommand": "SELECT id FROM dbo.people",
    }));
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    let login = r.logins().last().cloned().unwrap();
    assert!(login.password_ok);
    assert_eq!(login.app_name, "options-app-7c1");
    let shown = ws.run(&["connections", "--show-settings"]);
    assert_no_secret(&shown);
    assert!(!shown.all().contains("options-app-7c1"), "{}", shown.all());
    assert!(
        shown.all().contains("ConnectionStringOptions"),
        "{}",
        shown.all()
    );
    // The same from the environment.
    let mut ws = workspace(json!({
        "ConnectionString": format!("Server=tcp:127.0.0.1,{};Database=hr;User ID=agent;Encrypt=false;TrustServerCertificate=true", r.port()),
        "SqlCommand": "SELECT id FROM dbo.people",
    }));
    ws.env.push((
        "CONNAGENT__Connections__Mssql__ConnectionStringOptions__Password".into(),
        PASSWORD.into(),
    ));
    let out = ws.run(&["export", "--connection", "Mssql"]);
    assert_no_secret(&out);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(r.logins().last().unwrap().password_ok);
    // Malformed options are a located error.
    let ws = workspace(json!({
        "ConnectionString": cs(&r),
        "ConnectionStringOptions": ["Password", "x"],
        "SqlCommand": "SELECT 1",
    }));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("Connections:Mssql:ConnectionStringOptions is not an object"),
        "{}",
        out.stderr
    );
}
