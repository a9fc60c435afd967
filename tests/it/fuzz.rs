//! Bounded fuzz tests that run in CI: the XML loader, the settings loader (with references), the
//! connection-string parser and the CSV reader, each fed generated and mutated input, a few
//! thousand cases per target. Every target runs twice: with a fixed seed, and with a random one
//! that a failure prints (`CONNAGENT_FUZZ_SEED=<n>` replays it; `CONNAGENT_FUZZ_CASES` scales
//! the case counts). Each case must: not panic, end within a bound (a hang detector, not a speed
//! check), and give errors that say where and never hold a secret (every secret of these cases
//! holds "canary"). The corpus under `tests/corpus/` (the cases of issue reports) goes through the
//! same checks.

use connagent::config::{self, Diagnostics, LoadOptions, Origin};
use connagent::packages::connstr::ConnectionString;
use connagent::packages::csv::Input;
use connagent::packages::spec::coerce;
use connagent::packages::{Registry, Settings};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest one case may take before it counts as a hang.
const CASE_BOUND: Duration = Duration::from_secs(20);
const FIXED_SEED: u64 = 0x00c0_ffee_5eed_2026;

fn cases(n: u32) -> u32 {
    std::env::var("CONNAGENT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(n, |scale| ((n as f64) * scale).max(1.0) as u32)
}

/// Runs `f` on a thread of its own (default stack: a recursion on input depth overflows it) and
/// waits at most [`CASE_BOUND`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a case");
    match rx.recv_timeout(CASE_BOUND) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: a case took longer than {CASE_BOUND:?} (a hang)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The case panicked: join to surface its message.
            match handle.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => panic!("{what}: the case ended without a result"),
            }
        }
    }
}

/// Runs a target with the fixed seed and with a random one; returns how many cases ran.
fn fuzz<S: Strategy>(
    target: &str,
    n: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32
where
    S::Value: std::fmt::Debug,
{
    let random = std::env::var("CONNAGENT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let n = cases(n);
    for seed in [FIXED_SEED, random] {
        let mut runner = TestRunner::new(Config {
            cases: n,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            max_shrink_iters: 200,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("{target}: {e}\n(replay with CONNAGENT_FUZZ_SEED={seed})");
        }
    }
    eprintln!("{target}: {} cases, 0 failures", 2 * n);
    2 * n
}

// ---- the XML loader

fn xml_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ConfigurationFile",
            "Agent",
            "Connector",
            "Connection",
            "Transformation",
            "EntityTypeMapping",
            "Property",
            "EntityAssociationMapping",
            "ExportTask",
            "Job",
            "Step",
            "Form",
        ])
        .prop_map(str::to_string),
        "[A-Za-z_][A-Za-z0-9_.-]{0,12}",
    ]
}

fn xml_attr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        any::<String>(),
        Just("&lt;&amp;&#x1F600;&#0;".to_string()),
        Just("\"".to_string()),
    ]
    .prop_map(|v| {
        v.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
    })
}

fn xml_element() -> impl Strategy<Value = String> {
    let leaf = (
        xml_name(),
        prop::collection::vec((xml_name(), xml_attr_value()), 0..4),
    )
        .prop_map(|(name, attrs)| {
            let attrs: String = attrs.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
            format!("<{name}{attrs}/>")
        });
    leaf.prop_recursive(6, 64, 5, |inner| {
        (xml_name(), prop::collection::vec(inner, 0..5), "[ -~]{0,8}").prop_map(
            |(name, children, text)| {
                format!(
                    "<{name}>{}{}</{name}>",
                    text.replace(['<', '&'], ""),
                    children.concat()
                )
            },
        )
    })
}

/// Byte-level damage: insert, delete or replace characters at random places.
fn mutate(text: String, edits: Vec<(usize, u8, char)>) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, kind, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let at = at % chars.len();
        match kind % 3 {
            0 => chars.insert(at, c),
            1 => {
                chars.remove(at);
            }
            _ => chars[at] = c,
        }
    }
    chars.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            any::<u8>(),
            prop_oneof![
                prop::sample::select(vec!['<', '>', '/', '"', '=', '&', ';', '!', '[', '\0']),
                any::<char>(),
            ],
        ),
        0..6,
    )
}

fn xml_document() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (prop::collection::vec(xml_element(), 0..6), edits()).prop_map(|(els, e)| {
            mutate(format!("<?xml version=\"1.0\"?>\n<ConfigurationFile>{}</ConfigurationFile>", els.concat()), e)
        }),
        1 => (1usize..20_000).prop_map(|d| format!(
            "<ConfigurationFile>{}{}</ConfigurationFile>",
            "<X>".repeat(d),
            "</X>".repeat(d)
        )),
        1 => (1usize..5_000).prop_map(|d| format!("<ConfigurationFile>{}", "<X a=\"1\">".repeat(d))),
        1 => Just("<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><ConfigurationFile a=\"&b;\"/>".to_string()),
        1 => any::<String>(),
    ]
}

fn check_xml(text: String) -> Result<(), TestCaseError> {
    let path = PathBuf::from("/fuzz/config.xml");
    let p = path.clone();
    let diags = bounded("the XML loader", move || {
        let mut d = Diagnostics::default();
        let _ = config::xml::parse_text(&p, &text, &mut d);
        d
    });
    for diag in &diags.0 {
        match &diag.origin {
            Some(Origin::File(loc)) => {
                prop_assert_eq!(&loc.file, &path);
                prop_assert!(loc.line >= 1, "an XML error without a line: {}", diag);
            }
            other => prop_assert!(false, "an XML error not located in the file: {:?}", other),
        }
        prop_assert!(
            !diag.message.contains('\n'),
            "a message on several lines: {}",
            diag
        );
    }
    Ok(())
}

#[test]
fn the_xml_loader_survives_generated_and_damaged_files() {
    fuzz("XML loader", 1500, xml_document(), check_xml);
}

// ---- the settings loader, with references

/// A value as it may be written for a setting: a plain word or number, or a reference to an
/// environment variable, a file or a credential (those hold canary secrets).
#[derive(Debug, Clone)]
enum Written {
    Plain(serde_json::Value),
    Env(usize),
    File(usize),
    MissingFile,
    Credential(usize),
    Secret(String),
}

fn written() -> impl Strategy<Value = Written> {
    prop_oneof![
        3 => prop_oneof![
            "[ -~]{0,24}".prop_map(|s| serde_json::Value::String(s.replace("canary", "c"))),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            prop::collection::vec("[a-z]{0,6}", 0..3).prop_map(|v| serde_json::json!(v)),
            Just(serde_json::json!({"0": "a", "x": {"y": [1, {"z": null}]}})),
        ].prop_map(Written::Plain),
        2 => (0usize..4).prop_map(Written::Env),
        2 => (0usize..4).prop_map(Written::File),
        1 => Just(Written::MissingFile),
        1 => (0usize..2).prop_map(Written::Credential),
        1 => "[ -~]{0,12}".prop_map(|s| Written::Secret(format!("canary{s}"))),
    ]
}

/// The secret held by reference `i` (environment variables, files and credentials hold these).
fn referenced_secret(kind: &str, i: usize, flavour: u8) -> String {
    match flavour % 4 {
        0 => format!("{kind}-canary-{i}"),
        1 => format!(";\"'{kind} canary {i}\\\n"),
        2 => format!("{i}canary"),
        _ => format!("canary/../{kind}{i}=x;y"),
    }
}

const SETTINGS_BY_PACKAGE: &[(&str, &[&str])] = &[
    (
        "Csv",
        &[
            "Path",
            "PathIncremental",
            "IsFileNameRegex",
            "Separator",
            "Encoding",
            "NumberOfLinesToSkip",
            "ValuesToTrim",
            "Unknown",
        ],
    ),
    (
        "PostgreSql",
        &[
            "ConnectionString",
            "SqlCommand",
            "Tables",
            "Timeout",
            "ReadTimeout",
            "IsolationLevel",
            "CaFile",
            "ConnectionStringOptions",
            "CsvEncoding",
        ],
    ),
    (
        "Ldap",
        &[
            "Servers",
            "Password",
            "Tables",
            "Attributes",
            "PageSize",
            "TimeOut",
            "SizeLimit",
        ],
    ),
    (
        "SqlServer",
        &[
            "ConnectionString",
            "SqlCommand",
            "Timeout",
            "IsolationLevel",
            "ConnectionStringOptions",
        ],
    ),
];

const TOP_LEVEL: &[&str] = &[
    "XmlConfigurationPath",
    "TempFolderPath",
    "WorkFolderPath",
    "SourcesRootPaths",
    "Jobs:MaxTaskBatchSize",
    "Grpc:Listen",
    "Grpc:Tokens",
    "ControlPlane:Url",
    "ControlPlane:HeartbeatSeconds",
    "Logging:Level",
    "Shutdown:GraceSeconds",
    "Agent:Identifier",
];

#[derive(Debug, Clone)]
struct SettingsCase {
    /// (package index, [(setting index, value)]) per connection.
    connections: Vec<(usize, Vec<(usize, Written)>)>,
    top: Vec<(usize, Written)>,
    flavour: u8,
    /// Damage done to the file's text (a case with edits may not parse).
    edits: Vec<(usize, u8, char)>,
    /// An environment override with this many sections (0: none).
    env_depth: usize,
}

fn settings_case() -> impl Strategy<Value = SettingsCase> {
    (
        prop::collection::vec(
            (
                0usize..SETTINGS_BY_PACKAGE.len(),
                prop::collection::vec((0usize..10, written()), 0..6),
            ),
            1..4,
        ),
        prop::collection::vec((0usize..TOP_LEVEL.len(), written()), 0..4),
        any::<u8>(),
        prop_oneof![4 => Just(Vec::new()), 1 => edits()],
        prop_oneof![6 => Just(0usize), 1 => 1usize..200],
    )
        .prop_map(
            |(connections, top, flavour, edits, env_depth)| SettingsCase {
                connections,
                top,
                flavour,
                edits,
                env_depth,
            },
        )
}

/// Sets `value` at a `A:B:C` path in a JSON object.
fn set_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    value: serde_json::Value,
) {
    let mut segs = path.split(':').peekable();
    let mut cur = root;
    while let Some(seg) = segs.next() {
        if segs.peek().is_none() {
            cur.insert(seg.to_string(), value);
            return;
        }
        let next = cur
            .entry(seg.to_string())
            .or_insert_with(|| serde_json::json!({}));
        if !next.is_object() {
            *next = serde_json::json!({});
        }
        let Some(obj) = next.as_object_mut() else {
            return;
        };
        cur = obj;
    }
}

fn check_settings(case: SettingsCase) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("xml-config")).ok();
    std::fs::create_dir_all(root.join("creds")).ok();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for i in 0..4 {
        let s = referenced_secret("env", i, case.flavour);
        env.push((format!("FUZZ_V{i}"), s.clone()));
        secrets.push(s);
        let f = referenced_secret("file", i, case.flavour.wrapping_add(1));
        std::fs::write(root.join(format!("f{i}")), &f).ok();
        secrets.push(f);
    }
    for i in 0..2 {
        let c = referenced_secret("cred", i, case.flavour.wrapping_add(2));
        std::fs::write(root.join("creds").join(format!("c{i}")), &c).ok();
        secrets.push(c);
    }
    env.push((
        "CREDENTIALS_DIRECTORY".into(),
        root.join("creds").display().to_string(),
    ));
    if case.env_depth > 0 {
        env.push((
            format!("CONNAGENT__{}", vec!["Deep"; case.env_depth].join("__")),
            "x".into(),
        ));
    }
    let to_json = |w: &Written, secrets: &mut Vec<String>| match w {
        Written::Plain(v) => v.clone(),
        Written::Env(i) => serde_json::Value::String(format!("${{env:FUZZ_V{i}}}")),
        Written::File(i) => serde_json::Value::String(format!("${{file:f{i}}}")),
        Written::MissingFile => serde_json::Value::String("${file:nope/none}".into()),
        Written::Credential(i) => serde_json::Value::String(format!("${{credential:c{i}}}")),
        Written::Secret(s) => {
            secrets.push(s.clone());
            serde_json::Value::String(s.clone())
        }
    };
    let mut top = serde_json::Map::new();
    let mut xml = String::from("<ConfigurationFile><Connector Identifier=\"HR\"/>");
    let mut connections = serde_json::Map::new();
    for (n, (pkg, settings)) in case.connections.iter().enumerate() {
        let (package, names) = SETTINGS_BY_PACKAGE[*pkg];
        let mut section = serde_json::Map::new();
        for (k, w) in settings {
            let name = names[k % names.len()];
            // A canary secret written in plain text only where it is secret: a secured setting.
            let w = match w {
                Written::Secret(_) if !matches!(name, "Password" | "ConnectionStringOptions") => {
                    Written::Plain(serde_json::Value::from("plain"))
                }
                other => other.clone(),
            };
            let mut v = to_json(&w, &mut secrets);
            if name == "ConnectionStringOptions" && !matches!(w, Written::Plain(_)) {
                v = serde_json::json!({"Password": v});
            }
            section.insert(name.to_string(), v);
        }
        let id = format!("C{n}");
        connections.insert(id.clone(), serde_json::Value::Object(section));
        xml.push_str(&format!(
            "<Connection Identifier=\"{id}\" Connector=\"HR\" Package=\"{package}\"/>"
        ));
    }
    xml.push_str("</ConfigurationFile>");
    top.insert("Connections".into(), serde_json::Value::Object(connections));
    for (k, w) in &case.top {
        let w = match w {
            Written::Secret(_) => Written::Plain(serde_json::Value::from("plain")),
            other => other.clone(),
        };
        set_path(&mut top, TOP_LEVEL[*k], to_json(&w, &mut secrets));
    }
    let text = mutate(
        serde_json::to_string_pretty(&serde_json::Value::Object(top)).unwrap_or_default(),
        case.edits.clone(),
    );
    std::fs::write(root.join("appsettings.agent.json"), &text).ok();
    std::fs::write(root.join("xml-config/c.xml"), &xml).ok();
    let opts = LoadOptions {
        settings_path: root.join("appsettings.agent.json"),
        env,
    };
    let registry = Arc::new(Registry::builtin());
    let loaded = bounded("the settings loader", move || {
        let r = config::load(&opts, &registry);
        // The connections' settings as Debug shows them (a log line or a panic message may).
        r.map(|l| {
            let debug = l
                .snapshot
                .connections
                .iter()
                .map(|c| format!("{:?}", c.settings))
                .collect::<Vec<_>>()
                .join("\n");
            (l.diagnostics, debug)
        })
    });
    let (diags, debug) = match loaded {
        Ok((d, debug)) => (d, debug),
        Err(d) => (d, String::new()),
    };
    secrets.retain(|s| !s.is_empty());
    for diag in &diags.0 {
        prop_assert!(diag.origin.is_some(), "a problem without a place: {}", diag);
        let shown = diag.to_string();
        for s in &secrets {
            prop_assert!(
                !shown.contains(s.as_str()),
                "a secret ({:?}) in a message: {}",
                s,
                shown
            );
        }
        prop_assert!(
            !shown.contains("canary"),
            "a canary in a message: {}",
            shown
        );
    }
    prop_assert!(
        !debug.contains("canary"),
        "a canary in the Debug output of the loaded configuration"
    );
    Ok(())
}

#[test]
fn the_settings_loader_never_quotes_a_secret_or_a_referenced_value() {
    fuzz("settings loader", 1500, settings_case(), check_settings);
}

// ---- connection strings

#[derive(Debug, Clone)]
struct ConnCase {
    syntax: u8,
    password: String,
    others: Vec<(String, String)>,
    edits: Vec<(usize, u8, char)>,
}

fn conn_case() -> impl Strategy<Value = ConnCase> {
    (
        0u8..3,
        "[ -~]{0,16}".prop_map(|s| format!("canary{s}")),
        prop::collection::vec(("[A-Za-z][A-Za-z ]{0,10}", "[ -~]{0,12}"), 0..5),
        prop_oneof![3 => Just(Vec::new()), 1 => edits()],
    )
        .prop_map(|(syntax, password, others, edits)| ConnCase {
            syntax,
            password,
            others: others
                .into_iter()
                .map(|(k, v)| (k, v.replace("canary", "c")))
                .collect(),
            edits,
        })
}

fn conn_text(c: &ConnCase) -> String {
    match c.syntax {
        // ADO.NET: the value in double quotes, quotes doubled.
        0 => {
            let mut parts: Vec<String> = c
                .others
                .iter()
                .filter(|(k, _)| {
                    !k.to_ascii_lowercase().contains("pw")
                        && !k.to_ascii_lowercase().contains("password")
                })
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "\"\"")))
                .collect();
            parts.push(format!("Password=\"{}\"", c.password.replace('"', "\"\"")));
            parts.join(";")
        }
        // libpq: single quotes, backslash escapes.
        1 => format!(
            "host=db dbname=hr user=agent password='{}'",
            c.password.replace('\\', "\\\\").replace('\'', "\\'")
        ),
        // URL: the password percent-encoded.
        _ => {
            let enc: String = c
                .password
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("postgresql://agent:{enc}@db:5432/hr?sslmode=disable")
        }
    }
}

fn check_conn(c: ConnCase) -> Result<(), TestCaseError> {
    let text = mutate(conn_text(&c), c.edits.clone());
    let damaged = !c.edits.is_empty();
    // Damage can destroy what marks the password (its keyword, the URL's user info); then
    // nothing can know it is one, and only the error messages are held to never quote it.
    let marked = match c.syntax {
        0 => text.contains("Password=\""),
        1 => text.contains(" password='"),
        _ => text.starts_with("postgresql://agent:") && text.contains("@db"),
    };
    let t = text.clone();
    let parsed = bounded("the connection-string parser", move || {
        ConnectionString::parse(&t).map(|cs| {
            let pw = cs.get(&["password"]).and_then(|p| match p {
                connagent::packages::connstr::Part::Secret(s) => Some(s.expose().to_string()),
                _ => None,
            });
            (cs.redacted(), format!("{cs:?}"), pw)
        })
    });
    // Every form a person sees is free of the password (and of any canary, which only the
    // password holds).
    match parsed {
        Err(message) => {
            prop_assert!(
                !message.contains("canary"),
                "the password in an error: {}",
                message
            )
        }
        Ok(_) if !marked => {}
        Ok((redacted, debug, pw)) => {
            prop_assert!(
                !redacted.contains("canary"),
                "the password shown: {}",
                redacted
            );
            prop_assert!(
                !debug.contains("canary"),
                "the password in Debug: {}",
                debug
            );
            if !damaged {
                prop_assert_eq!(pw.as_deref(), Some(c.password.as_str()), "from {:?}", text);
            }
        }
    }
    Ok(())
}

#[test]
fn connection_strings_parse_back_and_never_show_their_password() {
    fuzz("connection-string parser", 3000, conn_case(), check_conn);
}

// ---- the CSV reader

fn csv_settings(dir: &Path, separator: char, encoding: &str, skip: u8) -> Settings {
    let registry = Registry::builtin();
    let spec = registry
        .find("Csv")
        .map(|p| p.info().settings)
        .expect("the Csv package");
    let mut values = Vec::new();
    for (name, raw) in [
        ("Separator", serde_json::json!(separator.to_string())),
        ("Encoding", serde_json::json!(encoding)),
        ("NumberOfLinesToSkip", serde_json::json!(skip)),
        ("Path", serde_json::json!("in.csv")),
    ] {
        let s = spec.iter().find(|s| s.name == name).expect("a Csv setting");
        values.push((s.name, coerce(s, &raw).expect("a valid value")));
    }
    Settings::new(spec, values, dir)
}

#[derive(Debug, Clone)]
struct CsvCase {
    bytes: Vec<u8>,
    separator: char,
    encoding: &'static str,
    skip: u8,
}

fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            b",".to_vec(),
            b";".to_vec(),
            b"\"".to_vec(),
            b"\"\"".to_vec(),
            b"\n".to_vec(),
            b"\r\n".to_vec(),
            b"\0".to_vec(),
            "é".as_bytes().to_vec(),
            b"\xef\xbb\xbf".to_vec(),
            b"\xff\xfe".to_vec(),
            b"\xe9".to_vec(),
            b"\t".to_vec(),
        ]),
        "[a-z0-9 ]{1,6}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn csv_case() -> impl Strategy<Value = CsvCase> {
    (
        csv_bytes(),
        prop::sample::select(vec![',', ';', '|', '\t']),
        prop::sample::select(vec!["UTF-8", "UTF-16LE", "windows-1252", "ISO-8859-1"]),
        0u8..3,
    )
        .prop_map(|(bytes, separator, encoding, skip)| CsvCase {
            bytes,
            separator,
            encoding,
            skip,
        })
}

/// A table as read: the header's names, then each row (`None` for an empty value).
type Table = (Vec<String>, Vec<Vec<Option<String>>>);

fn read_all(settings: Settings, file: PathBuf) -> Result<Table, String> {
    let mut input = Input::open(&settings, file).map_err(|e| e.message)?;
    let names = input.column_names();
    let mut rows = Vec::new();
    while let Some(row) = input.next_row().map_err(|e| e.message)? {
        rows.push(
            row.into_iter()
                .map(|v| match v {
                    connagent::packages::Value::Text(t) => Some(t),
                    _ => None,
                })
                .collect(),
        );
    }
    Ok((names, rows))
}

fn check_csv(c: CsvCase) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let file = dir.path().join("in.csv");
    std::fs::write(&file, &c.bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let settings = csv_settings(dir.path(), c.separator, c.encoding, c.skip);
    let f = file.clone();
    let result = bounded("the CSV reader", move || read_all(settings, f));
    if let Err(message) = result {
        prop_assert!(
            message.starts_with(&file.display().to_string()),
            "an error that does not name the file: {}",
            message
        );
    }
    Ok(())
}

#[test]
fn the_csv_reader_survives_any_bytes() {
    fuzz("CSV reader (any bytes)", 1500, csv_case(), check_csv);
}

/// Well-formed files (written by the csv crate, quoting as needed) read back to the same rows.
#[test]
fn well_formed_csv_reads_back_exactly() {
    let table = (
        1usize..5,
        prop::sample::select(vec![b',', b';', b'|', b'\t']),
        prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    "[a-z0-9 ,;|\"\t\n]{0,8}",
                    "[\u{e0}-\u{ff}\u{4e00}-\u{4e10}]{1,3}"
                ],
                5,
            ),
            0..30,
        ),
    );
    fuzz(
        "CSV reader (round trip)",
        800,
        table,
        |(width, sep, rows)| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let file = dir.path().join("in.csv");
            let header: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
            let mut w = csv::WriterBuilder::new()
                .delimiter(sep)
                .from_path(&file)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            w.write_record(&header).ok();
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| r.into_iter().take(width).collect())
                .collect();
            for r in &rows {
                w.write_record(r).ok();
            }
            w.flush().ok();
            drop(w);
            let settings = csv_settings(dir.path(), sep as char, "UTF-8", 0);
            let f = file.clone();
            let (names, got) = bounded("the CSV reader", move || read_all(settings, f))
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(names, header);
            let want: Vec<Vec<Option<String>>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| (!v.is_empty()).then(|| v.clone()))
                        .collect()
                })
                .collect();
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

// ---- the corpus: the cases from issue reports, through the same checks

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn the_corpus_of_reported_cases_passes_the_same_checks() {
    let mut seen = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("tests/corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&f).expect("a corpus file");
        let ext = f
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = match ext.as_str() {
            "xml" => check_xml(String::from_utf8_lossy(&bytes).into_owned()),
            "csv" => check_csv(CsvCase {
                bytes,
                separator: ',',
                encoding: "UTF-8",
                skip: 0,
            }),
            "connstr" => {
                let mut r = Ok(());
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let t = line.to_string();
                    let out = bounded("the connection-string parser", move || {
                        ConnectionString::parse(&t).map(|cs| (cs.redacted(), format!("{cs:?}")))
                    });
                    let shown = match out {
                        Ok((a, b)) => format!("{a} {b}"),
                        Err(e) => e,
                    };
                    if shown.contains("canary") {
                        r = Err(TestCaseError::fail(format!("{name}: {shown}")));
                    }
                }
                r
            }
            "json" => {
                let dir = tempfile::tempdir().expect("temp dir");
                std::fs::create_dir_all(dir.path().join("xml-config")).ok();
                std::fs::write(dir.path().join("appsettings.agent.json"), &bytes).ok();
                let opts = LoadOptions {
                    settings_path: dir.path().join("appsettings.agent.json"),
                    env: Vec::new(),
                };
                let d = bounded("the settings loader", move || {
                    match config::load(&opts, &Registry::builtin()) {
                        Ok(l) => l.diagnostics,
                        Err(d) => d,
                    }
                });
                if d.0
                    .iter()
                    .any(|x| x.origin.is_none() || x.to_string().contains("canary"))
                {
                    Err(TestCaseError::fail(format!("{name}: {d:?}")))
                } else {
                    Ok(())
                }
            }
            _ => continue,
        };
        if let Err(e) = r {
            panic!("corpus {name}: {e}");
        }
        seen += 1;
    }
    assert!(seen >= 6, "the corpus is missing (found {seen} files)");
}
