//! The Ldap package against a scripted LDAP server (`tests/support/ldap_fake.rs`), for what slapd
//! cannot be made to do: paging that makes no progress, limits on a middle page, missing or
//! malformed paging controls, ranged values. Rows go to an in-memory sink.

use crate::support::ldap_fake as fake;
use connagent::packages::ldap::{LdapPackage, MAX_EMPTY_PAGES, MAX_STALLED_PAGES};
use connagent::packages::spec::SettingValue;
use connagent::packages::{
    ConnectionRef, ExportMode, Package, PackageError, Row, RowSink, Settings, Value,
};
use serde_json::{Value as J, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn settings(values: Vec<(&'static str, SettingValue)>) -> Settings {
    Settings::new(LdapPackage.info().settings, values, Path::new("/"))
}

fn structured(v: J) -> SettingValue {
    SettingValue::Structured(v)
}

/// Rows by table, from a sink that keeps them in memory.
type Tables = Arc<std::sync::Mutex<BTreeMap<String, Vec<Row>>>>;

struct MemoryOpener {
    tables: Tables,
    cancel: CancellationToken,
}

impl connagent::packages::sink::TableOpener for MemoryOpener {
    fn open(
        &self,
        table: Option<&str>,
        columns: Vec<String>,
    ) -> Result<connagent::packages::TableWriter, connagent::packages::SinkError> {
        use connagent::packages::sink::Batch;
        let name = table.unwrap_or_default().to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let store = self.tables.clone();
        let file = format!("Dir_{name}.csv");
        let stats_file = file.clone();
        tokio::spawn(async move {
            let mut rows: Vec<Row> = Vec::new();
            while let Some(b) = rx.recv().await {
                match b {
                    Batch::Rows(r) => rows.extend(r),
                    Batch::Finish => {
                        let n = rows.len() as u64;
                        if let Ok(mut t) = store.lock() {
                            t.insert(name, rows);
                        }
                        let _ = done_tx.send(Ok(connagent::packages::TableStats {
                            file: stats_file,
                            rows: n,
                            bytes: 0,
                            sha256: String::new(),
                        }));
                        return;
                    }
                }
            }
        });
        Ok(connagent::packages::TableWriter::new(
            file,
            columns.len(),
            tx,
            done_rx,
            self.cancel.clone(),
        ))
    }
}

/// Exports from the fake server with PageSize 2: the tables, or the error.
async fn export_from(
    script: fake::Script,
    attributes: &[&str],
    tables: J,
) -> (Result<BTreeMap<String, Vec<Row>>, PackageError>, usize) {
    let server = fake::start(script).await;
    let s = settings(vec![
        (
            "Servers",
            structured(json!([{"Server": format!("ldap://127.0.0.1:{}", server.port)}])),
        ),
        ("Tables", structured(tables)),
        (
            "Attributes",
            SettingValue::TextList(attributes.iter().map(|a| a.to_string()).collect()),
        ),
        ("PageSize", SettingValue::Integer(2)),
        ("TimeOut", SettingValue::Integer(20)),
    ]);
    let cancel = CancellationToken::new();
    let conn = ConnectionRef {
        identifier: connagent::ident::Ident::new("Dir"),
        settings: std::sync::Arc::new(s),
        cancel: cancel.clone(),
        mapped_columns: Vec::new(),
    };
    let tables: Tables = Default::default();
    let sink = RowSink::new(std::sync::Arc::new(MemoryOpener {
        tables: tables.clone(),
        cancel,
    }));
    let result = LdapPackage
        .export(&conn, ExportMode::Complete, sink)
        .await
        .map(|_| tables.lock().map(|t| t.clone()).unwrap_or_default());
    (result, server.searches())
}

fn people() -> J {
    json!([{"Table": "entries", "BaseDN": "ou=p"}])
}

/// The root DSE and the subschema (not readable), then `pages` for ou=p.
fn script(pages: impl Fn(&fake::Search) -> fake::Answer + Send + Sync + 'static) -> fake::Script {
    std::sync::Arc::new(move |s: &fake::Search| match s.base.as_str() {
        "" => vec![(fake::done(0), None)],
        "cn=Subschema" => vec![(fake::done(32), None)],
        _ => pages(s),
    })
}

fn person(i: usize) -> Vec<u8> {
    fake::entry(
        &format!("cn=u{i},ou=p"),
        &[("cn", &[format!("u{i}").as_bytes()])],
    )
}

#[tokio::test]
async fn paging_that_makes_no_progress_stops() {
    // Page 1: two entries and cookie c1; then no entry and c1 again, for ever.
    let (result, searches) = export_from(
        script(|s| match s.cookie.as_deref() {
            Some(b"c1") => vec![(fake::done(0), Some(fake::paged(b"c1")))],
            _ => vec![
                (person(1), None),
                (person(2), None),
                (fake::done(0), Some(fake::paged(b"c1"))),
            ],
        }),
        &["cn"],
        people(),
    )
    .await;
    let e = result.expect_err("no progress");
    assert!(e.message.contains("no progress"), "{}", e.message);
    assert!(e.message.contains("after 2 entries"), "{}", e.message);
    // Root DSE, subschema, page 1, then MAX_STALLED_PAGES pages.
    assert_eq!(searches, 3 + MAX_STALLED_PAGES as usize);

    // New cookies every time, but never an entry: stopped after MAX_EMPTY_PAGES pages.
    let (result, searches) = export_from(
        script(|s| {
            let n = s.cookie.as_ref().map_or(0, |c| c.len());
            vec![(fake::done(0), Some(fake::paged(&vec![b'x'; n + 1])))]
        }),
        &["cn"],
        people(),
    )
    .await;
    let e = result.expect_err("no entries");
    assert!(
        e.message.contains("pages in a row with no entry"),
        "{}",
        e.message
    );
    assert_eq!(searches, 2 + MAX_EMPTY_PAGES as usize);
}

#[tokio::test]
async fn every_page_result_code_is_checked() {
    for (rc, words) in [
        (4u8, "sizeLimitExceeded"),
        (11, "adminLimitExceeded"),
        (3, "timeLimitExceeded"),
        (80, "result code 80"),
    ] {
        // Page 2 ends with a limit but still hands out a cookie: no silent truncation.
        let (result, _) = export_from(
            script(move |s| match s.cookie.as_deref() {
                Some(b"c1") => vec![
                    (person(3), None),
                    (fake::done(rc), Some(fake::paged(b"c2"))),
                ],
                Some(b"c2") => vec![(person(4), None), (fake::done(0), Some(fake::paged(b"")))],
                _ => vec![
                    (person(1), None),
                    (person(2), None),
                    (fake::done(0), Some(fake::paged(b"c1"))),
                ],
            }),
            &["cn"],
            people(),
        )
        .await;
        let e = result.expect_err("a limit on page 2");
        assert!(e.message.contains(words), "{rc}: {}", e.message);
    }
    // The same server without the limit: four rows.
    let (result, _) = export_from(
        script(|s| match s.cookie.as_deref() {
            Some(b"c1") => vec![(person(3), None), (fake::done(0), Some(fake::paged(b"c2")))],
            Some(b"c2") => vec![(person(4), None), (fake::done(0), Some(fake::paged(b"")))],
            _ => vec![
                (person(1), None),
                (person(2), None),
                (fake::done(0), Some(fake::paged(b"c1"))),
            ],
        }),
        &["cn"],
        people(),
    )
    .await;
    let tables = result.expect("four rows");
    assert_eq!(tables["entries"].len(), 4);
    assert_eq!(tables["entries"][3][2], Value::Text("u4".into()));
}

#[tokio::test]
async fn a_missing_or_malformed_paging_control_is_an_error() {
    // Page 2 without the control: the rest cannot be asked for.
    let (result, _) = export_from(
        script(|s| match s.cookie.as_deref() {
            Some(b"c1") => vec![(person(3), None), (fake::done(0), None)],
            _ => vec![(person(1), None), (fake::done(0), Some(fake::paged(b"c1")))],
        }),
        &["cn"],
        people(),
    )
    .await;
    let e = result.expect_err("no control on page 2");
    assert!(
        e.message.contains("without the paged-results control"),
        "{}",
        e.message
    );
    // A control whose value is not a SEQUENCE: an error, never a panic.
    let (result, _) = export_from(
        script(|_| {
            vec![
                (person(1), None),
                (fake::done(0), Some(fake::control(&[0x04, 0x00]))),
            ]
        }),
        &["cn"],
        people(),
    )
    .await;
    let e = result.expect_err("malformed control");
    assert!(
        e.message.contains("malformed paged-results control"),
        "{}",
        e.message
    );
    // A server that ignores paging: its one answer is the whole table.
    let (result, _) = export_from(
        script(|_| {
            vec![
                (person(1), None),
                (person(2), None),
                (person(3), None),
                (fake::done(0), None),
            ]
        }),
        &["cn"],
        people(),
    )
    .await;
    assert_eq!(result.expect("one answer")["entries"].len(), 3);
}

#[tokio::test]
async fn ranged_values_are_completed_or_the_export_fails() {
    // cn=g,ou=p has member;range=0-1 in the search, the rest on request; `rest` answers the
    // follow-up for member;range=2-*.
    let run = |rest: fake::Answer| {
        let rest = std::sync::Arc::new(rest);
        export_from(
            script(move |s| {
                if s.base == "cn=g,ou=p" {
                    assert_eq!(s.attrs, ["member;range=2-*"]);
                    return rest.as_ref().clone();
                }
                vec![
                    (
                        fake::entry(
                            "cn=g,ou=p",
                            &[("cn", &[b"g"]), ("member;range=0-1", &[b"u1", b"u2"])],
                        ),
                        None,
                    ),
                    (fake::done(0), Some(fake::paged(b""))),
                ]
            }),
            &["cn", "member"],
            json!([{"Table": "entries", "BaseDN": "ou=p"}, {"Table": "member", "BaseDN": "ou=p"}]),
        )
    };
    let (result, _) = run(vec![
        (
            fake::entry("cn=g,ou=p", &[("member;range=2-*", &[b"u3"])]),
            None,
        ),
        (fake::done(0), None),
    ])
    .await;
    let tables = result.expect("complete");
    assert_eq!(
        tables["entries"][0][3],
        Value::Multi(vec![
            Value::Text("u1".into()),
            Value::Text("u2".into()),
            Value::Text("u3".into())
        ])
    );
    assert_eq!(tables["member"].len(), 3, "one link row per value");

    for (rest, words) in [
        (
            vec![
                (fake::entry("cn=g,ou=p", &[("member", &[b"u3"])]), None),
                (fake::done(0), None),
            ],
            "without a range",
        ),
        (
            vec![
                (
                    fake::entry("cn=g,ou=p", &[("member;range=2-", &[b"u3"])]),
                    None,
                ),
                (fake::done(0), None),
            ],
            "malformed range",
        ),
        (
            vec![(fake::entry("cn=g,ou=p", &[]), None), (fake::done(0), None)],
            "returned no values",
        ),
        (vec![(fake::done(50), None)], "result code 50"),
    ] {
        let (result, _) = run(rest).await;
        let e = result.expect_err(words);
        assert!(e.message.contains(words), "{words}: {}", e.message);
        assert!(e.message.contains("cn=g,ou=p"), "{}", e.message);
    }
}

#[tokio::test]
async fn domain_scope_is_sent_not_critical_when_listed() {
    type Seen = Vec<Vec<(String, bool)>>;
    let seen: Arc<std::sync::Mutex<Seen>> = Default::default();
    let record = seen.clone();
    let server = fake::start(script(move |s| {
        record.lock().unwrap().push(s.controls.clone());
        vec![(person(1), None), (fake::done(0), Some(fake::paged(b"")))]
    }))
    .await;
    let s = settings(vec![
        (
            "Servers",
            structured(
                json!([{"Server": format!("ldap://127.0.0.1:{}", server.port),
                               "Controls": ["PagedResult", "DomainScope"], "NoSigning": false}]),
            ),
        ),
        ("Tables", structured(people())),
        ("Attributes", SettingValue::TextList(vec!["cn".into()])),
    ]);
    let cancel = CancellationToken::new();
    let conn = ConnectionRef {
        identifier: connagent::ident::Ident::new("Dir"),
        settings: Arc::new(s),
        cancel: cancel.clone(),
        mapped_columns: Vec::new(),
    };
    let tables: Tables = Default::default();
    let sink = RowSink::new(Arc::new(MemoryOpener {
        tables: tables.clone(),
        cancel,
    }));
    LdapPackage
        .export(&conn, ExportMode::Complete, sink)
        .await
        .expect("export");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for controls in seen {
        assert!(
            controls.contains(&("1.2.840.113556.1.4.1339".to_string(), false)),
            "{controls:?}"
        );
        assert!(
            controls
                .iter()
                .any(|(oid, _)| oid == connagent::packages::ldap::PAGED_RESULTS_OID)
        );
    }
}
