//! The gRPC service through a real tonic client over real sockets, against the real binary
//! (`connagent serve`), and the reporting path against `connagent dev-control-plane`.

use crate::support::agent::*;

fn dev_control_plane(port: u16) -> Proc {
    dev_control_plane_with(port, CP_TOKEN)
}
use crate::support::*;
use connagent::grpc::proto as pb;
use pb::agent_service_client::AgentServiceClient;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN_TOKEN: &str = "admin-token-canary-61f0";
const OPERATOR_TOKEN: &str = "operator-token-canary-2c4a";
const VIEWER_TOKEN: &str = "viewer-token-canary-93be";
const CP_TOKEN: &str = "cp-token-canary-7d21";

fn agent_workspace(extra: Value) -> Workspace {
    let mut ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n2,Bob\n");
    let db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');",
    )
    .unwrap();
    drop(db);
    let mut settings = json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [
            {"Name": "central-admin", "Sha256": sha(ADMIN_TOKEN), "Role": "admin"},
            {"Name": "central-ops", "Sha256": sha(OPERATOR_TOKEN), "Role": "operator"},
            {"Name": "dashboard", "Sha256": sha(VIEWER_TOKEN), "Role": "viewer"}
        ]},
        "Connections": {
            "People": {"Path": "in/people.csv"},
            "Db": {"ConnectionString": "Data Source=hr.db", "SqlCommand": "SELECT * FROM t ORDER BY id",
                   "Tables": [{"Name": "copy", "Table": "t"}]},
            "Slow": {"ConnectionString": "Data Source=hr.db",
                     "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"}
        }
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    ws.settings(settings);
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connector Identifier=\"Far\" DisplayName_L1=\"far\" Agent=\"Elsewhere\"/>
<Connection Identifier=\"People\" DisplayName_L1=\"People file\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"Db\" DisplayName_L1=\"Database\" Connector=\"HR\" Package=\"Sqlite\"/>
<Connection Identifier=\"Slow\" DisplayName_L1=\"Endless query\" Connector=\"HR\" Package=\"Sqlite\"/>
<Connection Identifier=\"Remote\" DisplayName_L1=\"Remote\" Connector=\"Far\" Package=\"Csv\"/>
<ExportTask Identifier=\"ExportDb\" DisplayName_L1=\"db\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Db\" IgnoreCookieFile=\"true\"/>",
            connector_xml()
        ),
    );
    ws.env.push(("RUST_LOG".into(), "connagent=trace".into()));
    ws
}

fn serve(ws: &Workspace) -> Proc {
    Proc::start(ws.command(&["--json", "serve"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_over_a_real_socket() {
    let ws = agent_workspace(json!({}));
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = ADMIN_TOKEN;

    let st = c
        .get_status(auth(pb::GetStatusRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.agent_identifier, "Local");
    assert_eq!(st.configuration_generation, 1);
    assert!(st.last_reload.as_ref().unwrap().applied);
    assert_eq!(st.connections, 4);
    assert_eq!(st.connections_served, 3);
    assert!(st.packages.contains(&"Sqlite".to_string()));

    let l = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                page_size: 2,
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total, 4);
    assert_eq!(l.connections.len(), 2);
    let next = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                page_size: 2,
                page_token: l.next_page_token.clone(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.connections.len(), 2);
    assert!(next.next_page_token.is_empty());
    let remote = next
        .connections
        .iter()
        .find(|c| c.identifier == "Remote")
        .unwrap();
    assert!(!remote.served_here);
    assert_eq!(remote.served_by, "Elsewhere");
    assert_eq!(remote.settings_status, pb::SettingsStatus::Missing as i32);
    let db = l
        .connections
        .iter()
        .chain(next.connections.iter())
        .find(|c| c.identifier == "Db")
        .unwrap();
    assert_eq!(db.usage_count, 1);
    assert_eq!(db.usage[0].name, "ExportDb");
    assert!(db.first_seen.is_some() && db.last_modified.is_some());
    let f = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                category: pb::Category::Database as i32,
                search: "DATA".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        f.connections
            .iter()
            .map(|c| c.identifier.as_str())
            .collect::<Vec<_>>(),
        ["Db"]
    );
    let bad = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                page_token: "x".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"));
    let bad = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                package: "Oracle".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let d = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "db".into(),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.summary.unwrap().identifier, "Db");
    let cs = d
        .settings
        .iter()
        .find(|s| s.name == "ConnectionString")
        .unwrap();
    assert_eq!(cs.value, "Data Source=hr.db");
    let nf = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "nope".into(),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    let ia = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: " ".into(),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(ia.code(), Code::InvalidArgument);
    assert!(ia.message().contains("identifier"));

    let p = c
        .describe_packages(auth(pb::DescribePackagesRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    let csv = p.packages.iter().find(|p| p.id == "Csv").unwrap();
    assert!(csv.aliases.contains(&"Usercube.CSV@0000001".to_string()));
    let sep = csv.settings.iter().find(|s| s.name == "Separator").unwrap();
    assert_eq!(sep.default_value, ",");
    assert_eq!(sep.section, pb::SettingSection::Additional as i32);

    let tr = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "People".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        tr.checks[0].contains("people.csv is readable"),
        "{:?}",
        tr.checks
    );
    // Candidate settings are tested without being stored.
    let mut cand = std::collections::HashMap::new();
    cand.insert("Path".to_string(), "in/missing.csv".to_string());
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "People".into(),
                settings: cand,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("missing.csv"), "{}", e.message());
    let mut cand = std::collections::HashMap::new();
    cand.insert("Colour".to_string(), "red".to_string());
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "People".into(),
                settings: cand,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("settings.Colour"), "{}", e.message());
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "Remote".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Still the saved settings afterwards.
    c.test_connection(auth(
        pb::TestConnectionRequest {
            identifier: "People".into(),
            ..Default::default()
        },
        t,
    ))
    .await
    .unwrap();

    let r = c
        .refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connection("Db".into())),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    let s = r.schemas[0].schema.as_ref().unwrap();
    assert_eq!(
        s.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["Db", "Db_copy"]
    );
    assert_eq!(s.tables[1].columns[0].key_type, pb::KeyType::Primary as i32);
    assert_eq!(s.fingerprint.len(), 64);
    let all = c
        .refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connector("hr".into())),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.schemas.len(), 3);
    let g = c
        .get_schema(auth(
            pb::GetSchemaRequest {
                connection: "db".into(),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        g.status.unwrap().state,
        Some(pb::schema_status::State::RefreshedAt(_))
    ));
    let reset = c
        .reset_metadata(auth(
            pb::ResetMetadataRequest {
                connection: "Db".into(),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reset.schemas[0].schema.as_ref().unwrap().fingerprint,
        s.fingerprint
    );
    let e = c
        .refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connection(
                    "Remote".into(),
                )),
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let tasks = c
        .list_export_tasks(auth(pb::ListExportTasksRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tasks.tasks[0].identifier, "ExportDb");
    assert!(tasks.tasks[0].ignore_cookie_file);

    // A streamed export: accepted, table started, published (with its SHA-256), finished.
    let mut watch = c
        .watch_events(auth(pb::WatchEventsRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    let events = collect(
        c.run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Task("exportdb".into())),
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    use pb::run_event::Event as E;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.event.as_ref().unwrap() {
            E::Accepted(_) => "accepted",
            E::TableStarted(_) => "table_started",
            E::Progress(_) => "progress",
            E::TablePublished(_) => "table_published",
            E::Finished(_) => "finished",
            E::Failed(_) => "failed",
        })
        .filter(|k| *k != "progress")
        .collect();
    assert_eq!(
        kinds,
        [
            "accepted",
            "table_started",
            "table_started",
            "table_published",
            "table_published",
            "finished"
        ]
    );
    let run_id = events[0].run_id.clone();
    let published: Vec<&pb::PublishedTable> = events
        .iter()
        .filter_map(|e| match e.event.as_ref().unwrap() {
            E::TablePublished(p) => Some(p),
            _ => None,
        })
        .collect();
    let bytes = std::fs::read(ws.output_file("Db.csv")).unwrap();
    assert_eq!(published[0].file, "Db.csv");
    assert_eq!(published[0].rows, 2);
    assert_eq!(published[0].sha256, hex::encode(Sha256::digest(&bytes)));
    let E::Finished(fin) = events.last().unwrap().event.as_ref().unwrap() else {
        unreachable!()
    };
    assert_eq!(fin.state, pb::RunState::Succeeded as i32);
    assert_eq!(fin.task, "ExportDb");
    assert_eq!(fin.started_by, "central-admin");
    // WatchEvents saw the run's states.
    let mut states = Vec::new();
    while states.last() != Some(&(pb::RunState::Succeeded as i32)) {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("event")
            .unwrap()
            .unwrap();
        if let Some(pb::agent_event::Event::Run(r)) = ev.event
            && r.id == run_id
        {
            states.push(r.state);
        }
    }
    assert_eq!(
        states,
        [
            pb::RunState::Queued as i32,
            pb::RunState::Running as i32,
            pb::RunState::Succeeded as i32
        ]
    );

    let run = c
        .get_run(auth(
            pb::GetRunRequest {
                run_id: run_id.clone(),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.tables.len(), 2);
    let runs = c
        .list_runs(auth(
            pb::ListRunsRequest {
                connection: "DB".into(),
                limit: 0,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.runs[0].id, run_id);
    assert_eq!(
        c.get_run(auth(
            pb::GetRunRequest {
                run_id: "nope".into()
            },
            t
        ))
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    // ReadConnectionTable streams the published file with its size and SHA-256.
    let chunks = collect(
        c.read_connection_table(auth(
            pb::ReadConnectionTableRequest {
                file: "db".into(),
                chunk_size: 5,
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(chunks[0].file, "Db.csv");
    assert_eq!(chunks[0].size, bytes.len() as u64);
    assert_eq!(chunks[0].sha256, hex::encode(Sha256::digest(&bytes)));
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(joined, bytes);
    assert!(chunks.len() > 2);

    // Not-found and precondition codes for runs.
    let e = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Nope".into())),
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Remote".into())),
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .run_export(auth(
            pb::RunExportRequest {
                target: None,
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
    // Every call is logged with the caller's name.
    assert!(stderr.contains("caller=central-admin"), "{stderr}");
    assert!(stderr.contains("method=\"RunExport\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_run_per_connection_and_cancel() {
    let ws = agent_workspace(json!({}));
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = OPERATOR_TOKEN;
    let mut first = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    let accepted = first.message().await.unwrap().unwrap();
    let run_id = accepted.run_id.clone();
    // Wait until it writes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Slow.csv.partial").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("slow".into())),
                mode: 1,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&run_id), "{}", e.message());
    let st = c
        .get_status(auth(pb::GetStatusRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.runs_in_progress.len(), 1);
    c.cancel_run(auth(
        pb::CancelRunRequest {
            run_id: run_id.clone(),
        },
        t,
    ))
    .await
    .unwrap();
    let rest = collect(first).await;
    let Some(pb::run_event::Event::Failed(r)) = rest.last().and_then(|e| e.event.clone()) else {
        panic!("{rest:?}")
    };
    assert_eq!(r.state, pb::RunState::Cancelled as i32);
    assert_eq!(r.failure_class, "cancelled");
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
    assert_eq!(
        c.cancel_run(auth(
            pb::CancelRunRequest {
                run_id: "nope".into()
            },
            t
        ))
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_roles() {
    let ws = agent_workspace(json!({}));
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let e = c
        .get_status(Request::new(pb::GetStatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .get_status(auth(pb::GetStatusRequest {}, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut r = Request::new(pb::GetStatusRequest {});
    r.metadata_mut().insert(
        "authorization",
        format!("Basic {VIEWER_TOKEN}").parse().unwrap(),
    );
    assert_eq!(
        c.get_status(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    c.get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN))
        .await
        .unwrap();
    c.list_runs(auth(pb::ListRunsRequest::default(), VIEWER_TOKEN))
        .await
        .unwrap();
    for (token, code) in [
        (VIEWER_TOKEN, Some(Code::PermissionDenied)),
        (OPERATOR_TOKEN, None),
        (ADMIN_TOKEN, None),
    ] {
        let r = c
            .test_connection(auth(
                pb::TestConnectionRequest {
                    identifier: "People".into(),
                    ..Default::default()
                },
                token,
            ))
            .await;
        assert_eq!(r.err().map(|e| e.code()), code, "{token}");
    }
    let e = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("People".into())),
                mode: 1,
            },
            VIEWER_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("Operator"), "{}", e.message());
    let e = c
        .read_connection_table(auth(
            pb::ReadConnectionTableRequest {
                file: "People.csv".into(),
                chunk_size: 0,
                ..Default::default()
            },
            VIEWER_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    for secret in [ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN] {
        assert!(!stderr.contains(secret), "token in the log");
    }
    assert!(stderr.contains("caller=dashboard"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_connection_table_refuses_anything_but_published_tables() {
    let ws = agent_workspace(json!({}));
    ws.write("Temp/ExportOutput/People.csv", "id\n1\n");
    ws.write("Temp/ExportOutput/People_x.csv.partial", "half");
    ws.write("Temp/ExportOutput/notes.txt", "not a table");
    ws.write("secret.csv", "secret");
    std::os::unix::fs::symlink(ws.path("secret.csv"), ws.path("Temp/ExportOutput/Db.csv")).unwrap();
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let read = |file: &str| pb::ReadConnectionTableRequest {
        file: file.into(),
        chunk_size: 0,
        ..Default::default()
    };
    let ok = collect(
        c.read_connection_table(auth(read("people.csv"), ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(ok[0].data, b"id\n1\n");
    for (file, code) in [
        ("../appsettings.agent.json", Code::InvalidArgument),
        ("/etc/passwd", Code::InvalidArgument),
        ("Temp/ExportOutput/People.csv", Code::InvalidArgument),
        ("..", Code::InvalidArgument),
        (".hidden.csv", Code::InvalidArgument),
        ("People_x.csv.partial", Code::NotFound),
        ("notes.txt", Code::NotFound),
        ("Db.csv", Code::FailedPrecondition),
        ("Remote.csv", Code::FailedPrecondition),
        ("People_missing.csv", Code::NotFound),
        ("", Code::InvalidArgument),
    ] {
        let r = c.read_connection_table(auth(read(file), ADMIN_TOKEN)).await;
        let got = match r {
            Err(e) => e.code(),
            Ok(s) => {
                // Errors may also arrive as the first stream item.
                match s.into_inner().message().await {
                    Err(e) => e.code(),
                    Ok(m) => panic!("{file:?} was served: {m:?}"),
                }
            }
        };
        assert_eq!(got, code, "{file:?}");
    }
}

#[test]
fn a_public_address_needs_tls_and_tokens() {
    let ws = agent_workspace(json!({"Grpc": {"Listen": "0.0.0.0:0"}}));
    let out = ws.run(&["serve"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without TLS and tokens"),
        "{}",
        out.stderr
    );
    let ws = agent_workspace(
        json!({"Grpc": {"Listen": "nowhere.example:1", "Tokens": [{"Name": "x", "Sha256": "12", "Role": "boss"}]}}),
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr
            .contains("Grpc:Listen \"nowhere.example:1\" is not an address and port"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("Grpc:Tokens x: Sha256 must be 64 hexadecimal digits"),
        "{}",
        out.stderr
    );
}

/// A test CA, a server certificate for 127.0.0.1/localhost, and a client certificate.
fn make_pki(ws: &Workspace) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "connagent test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["central".into()]).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "central");
    let client = cp.signed_by(&client_key, &issuer).unwrap();
    ws.write("pki/ca.pem", ca_cert.pem());
    ws.write("pki/server.pem", server.pem());
    ws.write("pki/server.key", server_key.serialize_pem());
    ws.write("pki/client.pem", client.pem());
    ws.write("pki/client.key", client_key.serialize_pem());
}

async fn tls_client(
    ws: &Workspace,
    addr: &str,
    with_identity: bool,
) -> Result<Client, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let port = addr.rsplit(':').next().unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(ws.path("pki/ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(ws.path("pki/client.pem")).unwrap(),
            std::fs::read(ws.path("pki/client.key")).unwrap(),
        ));
    }
    let ch = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AgentServiceClient::new(Checked(ch)))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_mutual_tls() {
    // Every step has a deadline so that a stalled handshake fails the test with its name
    // instead of hanging the suite.
    async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
    }
    let ws = agent_workspace(json!({}));
    make_pki(&ws);
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Grpc"]["Tls"] = json!({"CertificateFile": "pki/server.pem", "KeyFile": "pki/server.key"});
    ws.settings(s.clone());
    let agent = serve(&ws);
    let mut c = step("tls connect", tls_client(&ws, &agent.addr(), false))
        .await
        .expect("tls connect");
    step(
        "status over tls",
        c.get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN)),
    )
    .await
    .unwrap();
    // Plain text is refused by a TLS listener (an error, or no answer at all).
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        let mut plain = client(&agent.addr()).await;
        plain
            .get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN))
            .await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plain-text client got an answer"
    );
    drop(agent);

    // Mutual TLS: a client without a certificate signed by the CA is refused.
    s["Grpc"]["Tls"]["ClientCaFile"] = json!("pki/ca.pem");
    ws.settings(s);
    let agent = serve(&ws);
    let mut c = step("mtls connect", tls_client(&ws, &agent.addr(), true))
        .await
        .expect("mtls connect");
    step(
        "status over mtls",
        c.get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN)),
    )
    .await
    .unwrap();
    let without_certificate = tokio::time::timeout(Duration::from_secs(10), async {
        match tls_client(&ws, &agent.addr(), false).await {
            Err(_) => false,
            Ok(mut c) => c
                .get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN))
                .await
                .is_ok(),
        }
    })
    .await;
    assert!(
        !matches!(without_certificate, Ok(true)),
        "a client without a certificate got in"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_survive_a_control_plane_outage_and_arrive_in_order() {
    let port = free_port();
    let ws = agent_workspace(
        json!({"ControlPlane": {"Url": format!("http://127.0.0.1:{port}"), "Mode": "inbound", "Token": CP_TOKEN, "HeartbeatSeconds": 1}}),
    );
    // The control plane is down: the agent discovers schemas at start and queues the reports.
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = ADMIN_TOKEN;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(ws.path("Work/Outbox"))
        .map(|d| d.count())
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "schema reports were not queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collect(
        c.run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("People".into())),
                mode: 1,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    // A schema change while the server is away is queued too.
    ws.write("in/people.csv", "id,name,email\n1,Ann,a@x\n");
    c.refresh_schema(auth(
        pb::RefreshSchemaRequest {
            target: Some(pb::refresh_schema_request::Target::Connection(
                "People".into(),
            )),
        },
        t,
    ))
    .await
    .unwrap();
    let queued = std::fs::read_dir(ws.path("Work/Outbox")).unwrap().count();
    assert_eq!(queued, 5, "3 schemas + 1 run + 1 changed schema");
    // The server comes back: everything is delivered, in order, and the queue empties.
    let cp = dev_control_plane(port);
    let lines = wait_for_lines(&cp, |l| {
        l.iter()
            .filter(|v| v["kind"] == "schema" || v["kind"] == "run")
            .count()
            >= 5
    });
    let reports: Vec<&Value> = lines
        .iter()
        .filter(|v| v["kind"] == "schema" || v["kind"] == "run")
        .collect();
    let seqs: Vec<u64> = reports
        .iter()
        .map(|v| v["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(reports[3]["kind"], "run");
    assert_eq!(reports[3]["run"]["state"], "RUN_STATE_SUCCEEDED");
    assert_eq!(reports[4]["connection"], "People");
    assert_eq!(
        reports[4]["outcome"]["schema"]["tables"][0]["columns"],
        json!(["id", "name", "email"])
    );
    wait_for_lines(&cp, |l| {
        l.iter()
            .any(|v| v["kind"] == "heartbeat" && v["queued_reports"] == 0)
    });
    assert_eq!(
        std::fs::read_dir(ws.path("Work/Outbox")).unwrap().count(),
        0
    );
    // A refresh that changes nothing is not reported again.
    c.refresh_schema(auth(
        pb::RefreshSchemaRequest {
            target: Some(pb::refresh_schema_request::Target::Connection(
                "People".into(),
            )),
        },
        t,
    ))
    .await
    .unwrap();
    // A failed discovery is stored and reported as a failure.
    std::fs::remove_file(ws.path("in/people.csv")).unwrap();
    let r = c
        .refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connection(
                    "People".into(),
                )),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        r.schemas[0].status.as_ref().unwrap().state,
        Some(pb::schema_status::State::Failed(_))
    ));
    assert!(r.schemas[0].schema.is_some(), "the previous schema is kept");
    let lines = wait_for_lines(&cp, |l| {
        l.iter()
            .any(|v| v["kind"] == "schema" && v["outcome"]["failure"].is_object())
    });
    let failure = lines
        .iter()
        .find(|v| v["outcome"]["failure"].is_object())
        .unwrap();
    assert_eq!(failure["sequence"], 6, "{lines:?}");
    assert_eq!(failure["outcome"]["failure"]["class"], "config");
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(CP_TOKEN), "control-plane token in the log");
    assert!(
        stderr.contains("control plane unreachable; reports stay queued"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_leave_through_grpc_or_the_log() {
    let canary = "candidate-pw-canary-5e3a";
    let ws = agent_workspace(
        json!({"ControlPlane": {"Url": format!("http://127.0.0.1:{}", free_port()), "Mode": "inbound", "Token": CP_TOKEN}}),
    );
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = ADMIN_TOKEN;
    let mut seen = String::new();
    // Candidate settings with a secret part: used for the test only, never echoed.
    let mut cand = std::collections::HashMap::new();
    cand.insert(
        "ConnectionString".to_string(),
        format!("Data Source=hr.db;Password={canary}"),
    );
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "Db".into(),
                settings: cand.clone(),
            },
            t,
        ))
        .await
        .unwrap_err();
    seen.push_str(&format!("{e:?}"));
    cand.insert(
        "ConnectionString".to_string(),
        format!("Data Source=hr.db;Password=x;{canary}"),
    );
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "Db".into(),
                settings: cand,
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    seen.push_str(&format!("{e:?}"));
    for id in ["Db", "People", "Remote"] {
        let d = c
            .get_connection(auth(
                pb::GetConnectionRequest {
                    identifier: id.into(),
                },
                t,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.push_str(&format!("{d:?}"));
    }
    let st = c
        .get_status(auth(pb::GetStatusRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{st:?}"));
    let (_, stderr) = agent.stop();
    seen.push_str(&stderr);
    for secret in [canary, CP_TOKEN, ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
    for dir in ["Work", "Temp"] {
        for secret in [canary, CP_TOKEN] {
            assert!(
                files_containing(&ws.path(dir), secret).is_empty(),
                "{secret} stored under {dir}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queueing_precondition_and_availability_codes() {
    let ws = agent_workspace(json!({"Jobs": {"MaxTaskBatchSize": 1}}));
    // A connection whose export is switched off, one served by a task, and a database that is not one.
    ws.write("garbage.db", "this is not an SQLite database, whatever its name says.................................................................................................");
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["Off"] = json!({"Path": "in/people.csv"});
    s["Connections"]["Broken"] =
        json!({"ConnectionString": "Data Source=garbage.db", "SqlCommand": "SELECT 1"});
    ws.settings(s);
    ws.xml(
        "more.xml",
        "<Connection Identifier=\"Off\" DisplayName_L1=\"off\" Connector=\"HR\" Package=\"Csv\" DeactivationExportFulfill=\"Export\"/>
<Connection Identifier=\"Broken\" DisplayName_L1=\"broken\" Connector=\"HR\" Package=\"Sqlite\"/>
<ExportTask Identifier=\"SlowTask\" DisplayName_L1=\"slow\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Slow\"/>",
    );
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = OPERATOR_TOKEN;
    let target = |task: Option<&str>, conn: Option<&str>| pb::RunExportRequest {
        target: task
            .map(|x| pb::run_export_request::Target::Task(x.into()))
            .or(conn.map(|x| pb::run_export_request::Target::Connection(x.into()))),
        mode: 0,
    };
    let e = c
        .run_export(auth(target(None, Some("Off")), t))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("switched off"), "{}", e.message());
    let e = c
        .run_export(auth(target(Some("NoSuchTask"), None), t))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "Broken".into(),
                ..Default::default()
            },
            t,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("not a database"), "{}", e.message());

    // With one slot, a second export waits (QUEUED) while the first runs.
    let mut slow = c
        .run_export(auth(target(Some("SlowTask"), None), t))
        .await
        .unwrap()
        .into_inner();
    let slow_id = slow.message().await.unwrap().unwrap().run_id;
    let e = c
        .run_export(auth(target(Some("slowtask"), None), t))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&slow_id), "{}", e.message());
    let complete_people = pb::RunExportRequest {
        mode: pb::ExportMode::Complete as i32,
        ..target(None, Some("People"))
    };
    let mut people = c
        .run_export(auth(complete_people, t))
        .await
        .unwrap()
        .into_inner();
    let accepted = people.message().await.unwrap().unwrap();
    let people_id = accepted.run_id.clone();
    let run = c
        .get_run(auth(
            pb::GetRunRequest {
                run_id: people_id.clone(),
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.state, pb::RunState::Queued as i32);
    let tasks = c
        .list_export_tasks(auth(pb::ListExportTasksRequest {}, t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tasks
            .tasks
            .iter()
            .find(|x| x.identifier == "SlowTask")
            .unwrap()
            .running_run_id,
        slow_id
    );
    // The slow run reports progress every few seconds.
    let mut saw_progress = false;
    while !saw_progress {
        let ev = tokio::time::timeout(Duration::from_secs(30), slow.message())
            .await
            .expect("progress")
            .unwrap()
            .unwrap();
        if let Some(pb::run_event::Event::Progress(p)) = ev.event {
            assert_eq!(p.file, "Slow.csv");
            assert!(p.rows > 0);
            saw_progress = true;
        }
    }
    c.cancel_run(auth(pb::CancelRunRequest { run_id: slow_id }, t))
        .await
        .unwrap();
    let rest = collect(people).await;
    let Some(pb::run_event::Event::Finished(r)) = rest.last().and_then(|e| e.event.clone()) else {
        panic!("{rest:?}")
    };
    assert_eq!(r.state, pb::RunState::Succeeded as i32);
    assert!(r.started_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_roles_anonymous_loopback_and_health() {
    let ws = agent_workspace(json!({}));
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let ids = |r: pb::ListConnectionsResponse| {
        r.connections
            .into_iter()
            .map(|c| c.identifier)
            .collect::<Vec<_>>()
    };
    let r = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                connector: "far".into(),
                ..Default::default()
            },
            VIEWER_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(r), ["Remote"]);
    let r = c
        .list_connections(auth(
            pb::ListConnectionsRequest {
                package: "usercube.csv@0000001".into(),
                ..Default::default()
            },
            VIEWER_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(r), ["People", "Remote"]);
    let denied = [
        c.refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connection("Db".into())),
            },
            VIEWER_TOKEN,
        ))
        .await
        .map(|_| ()),
        c.reset_metadata(auth(
            pb::ResetMetadataRequest {
                connection: "Db".into(),
            },
            VIEWER_TOKEN,
        ))
        .await
        .map(|_| ()),
        c.cancel_run(auth(
            pb::CancelRunRequest { run_id: "x".into() },
            VIEWER_TOKEN,
        ))
        .await
        .map(|_| ()),
    ];
    for d in denied {
        assert_eq!(d.unwrap_err().code(), Code::PermissionDenied);
    }
    let e = c
        .refresh_schema(auth(
            pb::RefreshSchemaRequest {
                target: Some(pb::refresh_schema_request::Target::Connector("Far".into())),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Standard health checking.
    let ch = Channel::from_shared(format!("http://{}", agent.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "connagent.v1.AgentService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    drop(agent);

    // No token configured on loopback: every caller is let in (development).
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Grpc"]["Tokens"] = json!([]);
    ws.settings(s);
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    c.get_status(Request::new(pb::GetStatusRequest {}))
        .await
        .unwrap();
    c.test_connection(Request::new(pb::TestConnectionRequest {
        identifier: "People".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_survive_a_restart_and_a_killed_run_is_failed_and_reported() {
    let port = free_port();
    let ws = agent_workspace(
        json!({"ControlPlane": {"Url": format!("http://127.0.0.1:{port}"), "Mode": "inbound", "Token": CP_TOKEN, "HeartbeatSeconds": 1}}),
    );
    let cp = dev_control_plane(port);
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let t = ADMIN_TOKEN;
    let done = collect(
        c.run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("People".into())),
                mode: 1,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    let done_id = done[0].run_id.clone();
    let mut slow = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                mode: 0,
            },
            t,
        ))
        .await
        .unwrap()
        .into_inner();
    let slow_id = slow.message().await.unwrap().unwrap().run_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Slow.csv.partial").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The control plane has the first run; then the agent dies hard in the middle of the second.
    wait_for_lines(&cp, |l| {
        l.iter()
            .any(|v| v["kind"] == "run" && v["run"]["id"] == done_id.as_str())
    });
    let mut agent = agent;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    drop(agent);
    // The control plane goes away mid-session, and comes back later.
    drop(cp);
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let runs = c
        .list_runs(auth(pb::ListRunsRequest::default(), t))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = runs.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [slow_id.as_str(), done_id.as_str()]);
    assert_eq!(runs.runs[0].state, pb::RunState::Failed as i32);
    assert!(
        runs.runs[0].error.contains("interrupted"),
        "{}",
        runs.runs[0].error
    );
    assert_eq!(runs.runs[1].state, pb::RunState::Succeeded as i32);
    // The interrupted run's partial file is removed by its connection's next export, not served.
    assert!(ws.output_names().iter().all(|n| n != "Slow.csv"));
    let cp = dev_control_plane(port);
    let lines = wait_for_lines(&cp, |l| {
        l.iter()
            .any(|v| v["kind"] == "run" && v["run"]["id"] == slow_id.as_str())
    });
    let r = lines
        .iter()
        .find(|v| v["kind"] == "run" && v["run"]["id"] == slow_id.as_str())
        .unwrap();
    assert_eq!(r["run"]["state"], "RUN_STATE_FAILED");
    // Sequence numbers keep increasing across the restart.
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|v| v["kind"] != "heartbeat" && v["kind"] != "listening")
        .map(|v| v["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secured_options_are_stored_encrypted_applied_and_audited() {
    const SECRET: &str = "set-secured-canary-4f2b";
    let ws = agent_workspace(json!({}));
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Connections"]["Mssql"] = json!({"ConnectionString": "Server=db;User ID=agent;Password=old", "SqlCommand": "SELECT 1"});
    ws.settings(s);
    ws.xml(
        "mssql.xml",
        "<Connection Identifier=\"Mssql\" DisplayName_L1=\"m\" Connector=\"HR\" Package=\"SqlServer\"/>",
    );
    let set = |token: &str, option: &str, value: &str| {
        auth(
            pb::SetSecuredOptionRequest {
                connection: "mssql".into(),
                option: option.into(),
                value: value.into(),
            },
            token,
        )
    };
    let cs = format!("Server=db;User ID=agent;Password='{SECRET}'");

    // No key yet: the agent cannot store anything encrypted.
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let e = c
        .set_secured_option(set(ADMIN_TOKEN, "ConnectionString", &cs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("connagent keygen"), "{e:?}");
    drop(agent);

    assert_eq!(ws.run(&["keygen"]).code, 0);
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    // Only an admin may; only secured options of the package.
    let e = c
        .set_secured_option(set(OPERATOR_TOKEN, "ConnectionString", &cs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = c
        .set_secured_option(set(ADMIN_TOKEN, "SqlCommand", "SELECT 2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("ConnectionString"), "{e:?}");

    let before = c
        .get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .configuration_generation;
    let st = c
        .set_secured_option(set(ADMIN_TOKEN, "connectionstring", &cs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.connection, "Mssql");
    assert_eq!(st.option, "ConnectionString");
    assert!(st.is_set);
    assert!(st.configuration_generation > before);
    assert!(!format!("{st:?}").contains(SECRET));
    // Stored encrypted, applied: the shown connection string is the new one, its password masked.
    let store = std::fs::read_to_string(ws.path("Work/appsettings.connection.json")).unwrap();
    assert!(
        store.contains("age:v1:") && !store.contains(SECRET),
        "{store}"
    );
    let d = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "Mssql".into(),
            },
            VIEWER_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let shown = d
        .settings
        .iter()
        .find(|s| s.name == "ConnectionString")
        .unwrap();
    assert!(shown.value.contains("User ID=agent"), "{shown:?}");
    assert!(
        !shown.value.contains(SECRET) && !shown.value.contains("old"),
        "{shown:?}"
    );
    // The CLI reads the same store.
    let cli = ws.run(&["connections", "--show-settings"]);
    assert!(!cli.all().contains(SECRET), "{}", cli.all());

    // Delete: the file's own value is back in force.
    let st = c
        .delete_secured_option(auth(
            pb::DeleteSecuredOptionRequest {
                connection: "Mssql".into(),
                option: "ConnectionString".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(st.is_set);
    let store = std::fs::read_to_string(ws.path("Work/appsettings.connection.json")).unwrap();
    assert!(!store.contains("age:v1:"), "{store}");
    // Audited with who, what and which; the value never in the log.
    let log = agent.stderr_text();
    assert!(!log.contains(SECRET));
    let audits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit: secured option changed"))
        .collect();
    assert_eq!(audits.len(), 2, "{log}");
    assert!(
        audits[0].contains("central-admin")
            && audits[0].contains("Mssql")
            && audits[0].contains("set"),
        "{}",
        audits[0]
    );
    assert!(audits[1].contains("deleted"), "{}", audits[1]);

    // A value that makes the configuration invalid is refused and taken back out of the store.
    let before = std::fs::read_to_string(ws.path("Work/appsettings.connection.json")).unwrap();
    let e = c
        .set_secured_option(set(
            ADMIN_TOKEN,
            "ConnectionString",
            "Server=db;Integrated Security=SSPI",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("the change was undone"), "{e:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path("Work/appsettings.connection.json")).unwrap(),
        before
    );
    let st = c
        .get_status(auth(pb::GetStatusRequest {}, VIEWER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.connections, 5, "{st:?}");
    // Key-value options are not single values.
    let e = c
        .set_secured_option(set(ADMIN_TOKEN, "ConnectionStringOptions", "{}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

/// The suite-wide check of gRPC responses (`support::agent::Checked`) fails a test whose response
/// message holds a canary: here a display name (not a secret, but it carries the mark).
#[tokio::test(flavor = "multi_thread")]
#[should_panic(expected = "leaked into a gRPC response message")]
async fn the_harness_catches_a_canary_in_a_grpc_message() {
    let ws = agent_workspace(json!({}));
    ws.xml(
        "d.xml",
        "<Connection Identifier=\"Marked\" DisplayName_L1=\"marked canary-display\" Connector=\"HR\" Package=\"Csv\"/>",
    );
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let r = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "Marked".into(),
            },
            ADMIN_TOKEN,
        ))
        .await;
    panic!("no canary check fired; the response was {r:?}");
}

/// The same check fails a test whose error status holds a canary: a candidate path (not a
/// secret) that the error names.
#[tokio::test(flavor = "multi_thread")]
#[should_panic(expected = "leaked into a gRPC response")]
async fn the_harness_catches_a_canary_in_a_grpc_status() {
    let ws = agent_workspace(json!({}));
    let agent = serve(&ws);
    let mut c = client(&agent.addr()).await;
    let mut cand = std::collections::HashMap::new();
    cand.insert("Path".to_string(), "in/canary-nowhere.csv".to_string());
    let r = c
        .test_connection(auth(
            pb::TestConnectionRequest {
                identifier: "People".into(),
                settings: cand,
            },
            ADMIN_TOKEN,
        ))
        .await;
    // Reached only if the check did not fire: say what came back.
    panic!("no canary check fired; the response was {r:?}");
}
