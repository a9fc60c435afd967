//! Rows stream: exporting ten times more rows must not raise the binary's peak memory noticeably.
//! Peak RSS of the real binary is measured by GNU time (`/usr/bin/time -f %M`). The bound is generous:
//! it checks growth, not speed, and asserts no timing.

use crate::support::*;
use serde_json::json;
use std::io::Write;

fn sqlite_workspace(rows: u64) -> Workspace {
    let ws = Workspace::new();
    rusqlite::Connection::open(ws.path("gen.db"))
        .unwrap()
        .execute_batch("CREATE TABLE unused (x);")
        .unwrap();
    ws.settings(json!({"Connections": {"Gen": {
        "ConnectionString": "Data Source=gen.db",
        "SqlCommand": format!("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) \
            SELECT x AS id, printf('person %d, \"quoted\" and padded to look like a real row', x) AS name, \
            x * 0.25 AS score, CASE WHEN x % 2 = 0 THEN NULL ELSE 'odd' END AS flag FROM n")
    }}}));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Gen\" DisplayName_L1=\"g\" Connector=\"HR\" Package=\"Sqlite\"/>", connector_xml()));
    ws
}

fn csv_workspace(rows: u64) -> Workspace {
    let ws = Workspace::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(ws.path("big.csv")).unwrap());
    writeln!(f, "id;name;note").unwrap();
    for i in 0..rows {
        writeln!(
            f,
            "{i};\"Name {i}; with separator\";some note text for row {i}"
        )
        .unwrap();
    }
    f.flush().unwrap();
    drop(f);
    ws.settings(json!({"Connections": {"Big": {"Path": "big.csv", "Separator": ";"}}}));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Big\" DisplayName_L1=\"b\" Connector=\"HR\" Package=\"Csv\"/>", connector_xml()));
    ws
}

fn check_growth(kind: &str, small: i64, big: i64) {
    eprintln!("{kind}: peak RSS {small} KiB at 1x, {big} KiB at 10x");
    assert!(
        big < small + 8 * 1024,
        "{kind}: peak memory grew from {small} KiB to {big} KiB with 10x the rows"
    );
}

#[test]
fn sqlite_export_memory_does_not_grow_with_rows() {
    let small = sqlite_workspace(60_000);
    let big = sqlite_workspace(600_000);
    let a = peak_rss_kib(&small, &["export", "--all"]);
    let b = peak_rss_kib(&big, &["export", "--all"]);
    let size = std::fs::metadata(big.output_file("Gen.csv")).unwrap().len();
    assert!(size > 40_000_000, "the big export is only {size} bytes");
    check_growth("sqlite", a, b);
}

#[test]
fn csv_export_memory_does_not_grow_with_rows() {
    let small = csv_workspace(60_000);
    let big = csv_workspace(600_000);
    let a = peak_rss_kib(&small, &["export", "--all", "--complete"]);
    let b = peak_rss_kib(&big, &["export", "--all", "--complete"]);
    check_growth("csv", a, b);
}
