//! The Csv package through the binary: encodings, byte-order marks, skipped lines, trims, dropped
//! header-less columns, regex selection of the newest file, and the complete/incremental rule.

use crate::support::*;
use serde_json::{Value, json};

fn workspace(settings: Value) -> Workspace {
    let ws = Workspace::new();
    ws.settings(json!({"SourcesRootPaths": ["in"], "Connections": {"People": settings}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Usercube.CSV@0000001\"/>
<ExportTask Identifier=\"Incr\" DisplayName_L1=\"i\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"People\"/>
<ExportTask Identifier=\"Full\" DisplayName_L1=\"f\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"People\" IgnoreCookieFile=\"true\"/>",
            connector_xml()
        ),
    );
    ws
}

fn rows(ws: &Workspace) -> Vec<Vec<String>> {
    python_csv(&ws.output_file("People.csv"))
}

fn strings(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

const TEXT: &str = "id;name;city\n1;Zoë \"Z\" Ñúñez;Montbéliard\n2;Ærø, Jr.;Köln\n";

fn expected() -> Vec<Vec<String>> {
    strings(&[
        &["id", "name", "city"],
        &["1", "Zoë \"Z\" Ñúñez", "Montbéliard"],
        &["2", "Ærø, Jr.", "Köln"],
    ])
}

fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let units = std::iter::once(0xFEFFu16)
        .filter(|_| bom)
        .chain(text.encode_utf16());
    for u in units {
        out.extend(if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        });
    }
    out
}

#[test]
fn every_supported_encoding_reads_to_the_same_utf8_output() {
    let latin1: Vec<u8> = TEXT
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("utf-8", "UTF-8", TEXT.as_bytes().to_vec()),
        (
            "utf-8 with BOM, configured as Windows-1252: the BOM wins",
            "Windows-1252",
            [b"\xEF\xBB\xBF".as_slice(), TEXT.as_bytes()].concat(),
        ),
        ("utf-16le with BOM", "UTF-8", utf16(TEXT, false, true)),
        ("utf-16be with BOM", "UTF-16LE", utf16(TEXT, true, true)),
        (
            "utf-16le without BOM, .NET name",
            "Unicode",
            utf16(TEXT, false, false),
        ),
        ("utf-16be without BOM", "UTF-16BE", utf16(TEXT, true, false)),
        ("iso-8859-1", "ISO-8859-1", latin1.clone()),
        ("windows-1252", "Windows-1252", latin1),
    ];
    for (name, encoding, bytes) in cases {
        let ws =
            workspace(json!({"Path": "in/people.csv", "Separator": ";", "Encoding": encoding}));
        ws.write("in/people.csv", &bytes);
        let out = ws.run(&["export", "--connection", "people", "--complete"]);
        assert_eq!(out.code, 0, "{name}: {}", out.all());
        assert_eq!(rows(&ws), expected(), "{name}");
        let raw = std::fs::read(ws.output_file("People.csv")).unwrap();
        assert!(
            !raw.starts_with(b"\xEF\xBB\xBF"),
            "{name}: output has a BOM"
        );
        assert!(!raw.contains(&b'\r'), "{name}: output has CR");
    }
}

#[test]
fn skipped_lines_ordered_trims_and_headerless_columns() {
    let ws = workspace(json!({
        "Path": "in/people.csv", "Separator": "\t", "NumberOfLinesToSkip": 2,
        "ValuesToTrim": ["$", "%"]
    }));
    ws.write(
        "in/people.csv",
        "banner line\nexported 2026-11-23\n$$id%\t\t%name%\t  \n$%I am an example$%\tdropped\t$$x%\tlost\n2\t\t\t\n",
    );
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // `$` then `%` in order: "$%I am an example$%" -> "I am an example$"; the two header-less
    // columns are dropped; a short last line gets empty values.
    assert_eq!(
        rows(&ws),
        strings(&[&["id", "name"], &["I am an example$", "x"], &["2", ""]])
    );
}

#[test]
fn regex_path_reads_the_newest_matching_file() {
    let ws = workspace(json!({"Path": "in/people_\\d{4}\\.csv", "IsFileNameRegex": true}));
    ws.write("in/people_0001.csv", "id\nold\n");
    std::thread::sleep(std::time::Duration::from_millis(30));
    ws.write("in/people_0002.csv", "id\nnew\n");
    std::thread::sleep(std::time::Duration::from_millis(30));
    ws.write("in/people_latest.csv", "id\nnot matching\n");
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(rows(&ws), strings(&[&["id"], &["new"]]));
    let t = ws.run(&["test", "People"]);
    assert_eq!(t.code, 0, "{}", t.all());
    assert!(
        t.stdout
            .contains("people_0002.csv is readable, 1 columns: id"),
        "{}",
        t.stdout
    );
    // No file matches: a clear failure, nothing written.
    let ws = workspace(json!({"Path": "in/nothing_.*\\.csv", "IsFileNameRegex": true}));
    ws.write("in/other.csv", "id\n1\n");
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no file in"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("matches the regular expression \"nothing_.*\\\\.csv\""),
        "{}",
        out.stderr
    );
}

#[test]
fn complete_and_incremental_paths() {
    let ws = workspace(json!({"PathIncremental": "in/delta.csv"}));
    ws.write("in/delta.csv", "id\nd1\n");
    // A complete export with only PathIncremental is not run, and says why.
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("not run: a complete export was asked for, but Path is not set"),
        "{}",
        out.stdout
    );
    assert!(ws.output_names().is_empty());
    let j = ws.run(&["--json", "export", "--task", "Full"]).json();
    assert_eq!(j["runs"][0]["status"], "not_run");
    // The task without IgnoreCookieFile runs incrementally and reads PathIncremental.
    let out = ws.run(&["export", "--task", "Incr"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(rows(&ws), strings(&[&["id"], &["d1"]]));
    // --complete forces complete mode on any task.
    let out = ws.run(&["export", "--task", "Incr", "--complete"]);
    assert!(out.stdout.contains("not run"), "{}", out.stdout);
}

#[test]
fn summary_schema_and_test() {
    let ws = workspace(json!({"Path": "in/people.csv", "Separator": ";"}));
    ws.write("in/people.csv", TEXT);
    let j = ws.run(&["export", "--all", "--complete", "--json"]).json();
    let run = &j["runs"][0];
    assert_eq!(run["status"], "published");
    assert_eq!(run["connection"], "People");
    let t = &run["tables"][0];
    assert_eq!(t["file"], "People.csv");
    assert_eq!(t["rows"], 2);
    let size = std::fs::metadata(ws.output_file("People.csv"))
        .unwrap()
        .len();
    assert_eq!(t["bytes"], size);
    assert!(t["duration"].as_f64().is_some());
    let text = ws.run(&["export", "--all", "--complete"]);
    assert!(text.stdout.contains("People.csv"), "{}", text.stdout);
    assert!(text.stdout.contains("2 rows"), "{}", text.stdout);

    let s = ws.run(&["schema", "people", "--json"]);
    assert_eq!(s.code, 0, "{}", s.all());
    let j = s.json();
    assert_eq!(j["schema"]["tables"][0]["name"], "People");
    let cols: Vec<&str> = j["schema"]["tables"][0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["id", "name", "city"]);
    assert!(ws.path("Work/Schemas/people.json").is_file());
}

#[test]
fn bad_inputs_fail_clearly_and_keep_the_previous_file() {
    let ws = workspace(json!({"Path": "in/people.csv"}));
    ws.write("in/people.csv", "id,name\n1,a\n");
    assert_eq!(ws.run(&["export", "--task", "Full"]).code, 0);
    let before = std::fs::read(ws.output_file("People.csv")).unwrap();
    for (content, message) in [
        ("id,id\n1,2\n", "the header names column \"id\" twice"),
        ("", "the header line has no column names"),
    ] {
        ws.write("in/people.csv", content);
        let out = ws.run(&["export", "--task", "Full"]);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
        assert!(out.stderr.contains("failed (Source)"), "{}", out.stderr);
        assert_eq!(std::fs::read(ws.output_file("People.csv")).unwrap(), before);
        assert_eq!(ws.output_names(), ["People.csv"]);
    }
    std::fs::remove_file(ws.path("in/people.csv")).unwrap();
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Path: the file"), "{}", out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    let t = ws.run(&["test", "People"]);
    assert_eq!(t.code, 1);
    assert!(t.stderr.contains("test failed"), "{}", t.stderr);
    assert_eq!(std::fs::read(ws.output_file("People.csv")).unwrap(), before);
}

#[test]
fn a_file_failing_after_n_rows_keeps_the_previous_file() {
    let ws = workspace(json!({"Path": "in/people.csv"}));
    let good: String = std::iter::once("id,name\n".to_string())
        .chain((0..5000).map(|i| format!("{i},name {i}\n")))
        .collect();
    ws.write("in/people.csv", &good);
    assert_eq!(ws.run(&["export", "--task", "Full"]).code, 0);
    let before = std::fs::read(ws.output_file("People.csv")).unwrap();
    // The same file with a byte that is not UTF-8 on line 4001: the export fails there.
    let mut bad = good
        .replace("name 3999\n", "name 3999 \u{e9}\n")
        .into_bytes();
    let at = bad.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    bad.remove(at);
    ws.write("in/people.csv", &bad);
    let out = ws.run(&["export", "--task", "Full"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("(line 4001) are not valid UTF-8; check the Encoding setting"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(ws.output_file("People.csv")).unwrap(), before);
    assert_eq!(ws.output_names(), ["People.csv"]);
}

#[test]
fn continue_on_error_turns_a_failed_task_into_a_warning() {
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {"People": {"Path": "in/missing.csv"}}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>
<ExportTask Identifier=\"Strict\" DisplayName_L1=\"s\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"People\" IgnoreCookieFile=\"true\"/>
<ExportTask Identifier=\"Lenient\" DisplayName_L1=\"l\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"People\" IgnoreCookieFile=\"true\" ContinueOnError=\"true\"/>",
            connector_xml()
        ),
    );
    let strict = ws.run(&["export", "--task", "Strict"]);
    assert_eq!(strict.code, 1, "{}", strict.all());
    let lenient = ws.run(&["export", "--task", "Lenient"]);
    assert_eq!(lenient.code, 0, "{}", lenient.all());
    assert!(
        lenient
            .stderr
            .contains("failed (Config) (ContinueOnError: reported as a warning)"),
        "{}",
        lenient.stderr
    );
    let j = ws.run(&["export", "--task", "lenient", "--json"]);
    assert_eq!(j.code, 0);
    assert_eq!(j.json()["runs"][0]["status"], "failed");
}

/// `connagent schema` records a failed discovery as `RefreshSchema` does (beside the last good
/// schema), and a later success clears it.
#[test]
fn the_cli_schema_command_stores_failures_and_successes() {
    let ws = workspace(json!({"Path": "in/people.csv"}));
    ws.write("in/people.csv", "id,name\n1,Ann\n");
    let stored = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(ws.path("Work/Schemas/people.json")).unwrap())
            .unwrap()
    };
    assert_eq!(ws.run(&["schema", "People"]).code, 0);
    let first = stored();
    assert!(first["failure"].is_null(), "{first}");
    assert_eq!(first["schema"]["tables"][0]["columns"][1]["name"], "name");
    std::fs::remove_file(ws.path("in/people.csv")).unwrap();
    let out = ws.run(&["schema", "People"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("schema discovery failed (Config)"),
        "{}",
        out.stderr
    );
    let failed = stored();
    assert_eq!(failed["failure"]["class"], "config", "{failed}");
    assert!(
        failed["failure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{failed}"
    );
    // The last good schema stays beside the failure.
    assert_eq!(failed["schema"], first["schema"]);
    ws.write("in/people.csv", "id,name,city\n1,Ann,Oslo\n");
    assert_eq!(ws.run(&["schema", "People"]).code, 0);
    let again = stored();
    assert!(again["failure"].is_null(), "{again}");
    assert_eq!(again["schema"]["tables"][0]["columns"][2]["name"], "city");
}
