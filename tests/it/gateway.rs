//! The outbound channel, enrollment and the gateway, through the binaries: `connagent gateway
//! serve` and agents (`connagent run`) with no listening port, driven by gRPC clients of the
//! gateway's client port; proxies written for the tests sit in between where a test needs one.

use crate::support::agent::{Proc, free_port};
use crate::support::connect_proxy::ConnectProxy;
use crate::support::gateway::{Gateway, enroll, listening_ports, rss_kib, to, wait_for_log};
use crate::support::pg::Pg;
use crate::support::proxy::Proxy;
use crate::support::*;
use connagent::grpc::proto as pb;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The agents' bearer token for AgentService (admin), a secret like any other.
const ADMIN: &str = "gw-admin-canary-5d1e";

/// An agent that dials `url` and listens on no port: People (CSV), Slow (an endless query),
/// Used1 (used by an export task).
fn agent_ws(id: &str, url: &str, control_plane: Value) -> Workspace {
    let ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n2,Bob\n");
    ws.write("in/used.csv", "id\n1\n");
    let db = rusqlite::Connection::open(ws.path("slow.db")).unwrap();
    db.execute_batch("CREATE TABLE t (id INTEGER);").unwrap();
    drop(db);
    let mut cp = json!({"Url": url, "HeartbeatSeconds": 1, "KeepaliveSeconds": 4});
    if let (Some(c), Some(extra)) = (cp.as_object_mut(), control_plane.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    ws.settings(json!({
        "Agent": {"Identifier": id},
        "Grpc": {"Listen": "", "Tokens": [{"Name": "central", "Sha256": agent::sha(ADMIN), "Role": "admin"}]},
        "ControlPlane": cp,
        "Connections": {
            "People": {"Path": "in/people.csv"},
            "Used1": {"Path": "in/used.csv"},
            "Slow": {"ConnectionString": "Data Source=slow.db",
                     "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"}
        }
    }));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"People file\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"Used1\" DisplayName_L1=\"used\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"Slow\" DisplayName_L1=\"Endless query\" Connector=\"HR\" Package=\"Sqlite\"/>
<ExportTask Identifier=\"UsedTask\" DisplayName_L1=\"t\" Agent=\"{id}\" OpenIdClient=\"Job\" Connection=\"Used1\"/>",
            connector_xml().replace("\"Local\"", &format!("\"{id}\""))
        ),
    );
    ws
}

/// `connagent --json run` for a workspace.
fn run_agent(ws: &Workspace) -> Proc {
    Proc::start(ws.command(&["--json", "run"]))
}

fn status(ws: &Workspace) -> (i32, Value) {
    let out = ws.run(&["--json", "status"]);
    (
        out.code,
        serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null),
    )
}

/// Waits until `connagent status` exits with `code`; on time-out, shows the agent's log.
fn wait_status_of(ws: &Workspace, agent: &Proc, code: i32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c, v) = status(ws);
        if c == code {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "status stayed {c} (waiting for {code}): {v}\nagent log:\n{}",
            agent.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_with(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_containing(dir, needle)
}

fn gateway_folder() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn an_agent_with_no_port_is_driven_through_the_gateway_by_grpcio() {
    let python = crate::grpc_python::python();
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let ws = agent_ws("Alpha", &gw.url(), json!({}));
    assert_eq!(ws.run(&["keygen"]).code, 0);
    let e = enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10));
    assert_eq!(e.code, 0, "{}", e.all());
    let agent = run_agent(&ws);
    assert_eq!(agent.first["listening"], Value::Null, "{}", agent.first);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(gw.wait_connected("Alpha", true));
    // No port at all: the process listens on nothing (the same look-up finds the gateway's two).
    assert_eq!(listening_ports(agent.child.id()), Vec::<u16>::new());
    assert_eq!(listening_ports(gw.proc.child.id()).len(), 2);

    let out = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/gateway_client.py"))
        .arg(&gw.clients)
        .arg("Alpha")
        .arg(ADMIN)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
        .current_dir(ws.path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.stderr_text()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["agents"][0]["id"], "Alpha", "{r}");
    assert_eq!(r["agents"][0]["connected"], true);
    assert!(
        r["agents"][0]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "Csv")
    );
    assert_eq!(r["agent"], "Alpha");
    assert_eq!(r["connections"], json!(["People", "Used1", "Slow"]));
    assert_eq!(r["get_connection"], "People");
    assert_eq!(r["test"], "OK");
    assert_eq!(r["refresh"], "OK");
    assert_eq!(r["reset"], "OK");
    assert_eq!(r["schema_tables"], json!(["People"]));
    assert_eq!(r["tasks"], json!(["UsedTask"]));
    assert_eq!(
        r["export_events"],
        json!(["accepted", "table_started", "table_published", "finished"])
    );
    assert_eq!(r["get_run"], "RUN_STATE_SUCCEEDED");
    assert_eq!(r["list_runs"], true);
    assert_eq!(r["table"], "id,name\n1,Ann\n2,Bob\n");
    assert_eq!(r["sha256_matches"], true);
    assert_eq!(r["resumed_matches"], true);
    assert_eq!(r["resumed_first_offset"], 5);
    // CancelRun answers at once; the run ends cancelled on its stream.
    let answer = r["cancel_answer"].as_str().unwrap();
    assert!(
        matches!(answer, "RUN_STATE_RUNNING" | "RUN_STATE_CANCELLED"),
        "{r}"
    );
    assert_eq!(r["cancelled_final"], "failed:RUN_STATE_CANCELLED");
    assert!(
        r["client_cancel"]
            .as_str()
            .unwrap()
            .starts_with("CANCELLED"),
        "{r}"
    );
    assert_eq!(r["after_cancel"], "Alpha");
    assert_eq!(r["created"], "Managed1");
    assert!(
        r["create_again"]
            .as_str()
            .unwrap()
            .starts_with("ALREADY_EXISTS"),
        "{r}"
    );
    let invalid = r["create_invalid"].as_str().unwrap();
    assert!(invalid.starts_with("INVALID_ARGUMENT"), "{invalid}");
    assert!(
        invalid.contains("settings.Nope") && invalid.contains("settings.ValuesToTrim"),
        "every problem is listed: {invalid}"
    );
    assert_eq!(r["updated_display"], "managed again");
    let operator = r["delete_operator"].as_str().unwrap();
    assert!(
        operator.starts_with("FAILED_PRECONDITION") && operator.contains("c.xml"),
        "{operator}"
    );
    let used = r["delete_used"].as_str().unwrap();
    assert!(
        used.starts_with("FAILED_PRECONDITION") && used.contains("ManagedTask"),
        "{used}"
    );
    assert_eq!(r["deleted"], "Managed1");
    assert!(
        r["after_delete"].as_str().unwrap().starts_with("NOT_FOUND"),
        "{r}"
    );
    assert!(
        r["without_token"]
            .as_str()
            .unwrap()
            .starts_with("UNAUTHENTICATED"),
        "{r}"
    );
    assert!(
        r["without_agent"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_ARGUMENT"),
        "{r}"
    );
    assert!(
        r["unknown_agent"]
            .as_str()
            .unwrap()
            .starts_with("NOT_FOUND"),
        "{r}"
    );
    let watched = r["watched"].as_array().unwrap();
    assert!(
        watched.iter().any(|w| w == "run"),
        "WatchEvents saw the runs: {watched:?}"
    );
    let services = r["reflection"].as_array().unwrap();
    for s in ["connagent.v1.AgentService", "connagent.v1.GatewayService"] {
        assert!(services.iter().any(|x| x == s), "{s}: {services:?}");
    }
    // The same handlers and audit as the inbound listener: the calls are in the agent's log.
    let log = agent.stderr_text();
    assert!(
        log.contains("CreateConnection") && log.contains("central"),
        "{log}"
    );
    // The managed connection's files were the agent's own, and are gone with it.
    let managed = std::fs::read_to_string(ws.path("Work/managed/connections.xml")).unwrap();
    assert!(!managed.contains("Managed1"), "{managed}");
    // Reports arrived beside the channel and were stored once each.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reports = gw.reports();
        let runs = reports.iter().filter(|r| r["kind"] == "run").count();
        if runs >= 2 {
            let mut seq: Vec<u64> = reports
                .iter()
                .map(|r| r["sequence"].as_u64().unwrap())
                .collect();
            let n = seq.len();
            seq.dedup();
            assert_eq!(seq.len(), n, "each report stored once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run reports never reached the gateway: {reports:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn enrollment_revocation_and_status() {
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let ws = agent_ws("Beta", &gw.url(), json!({}));
    let agent = run_agent(&ws);
    // Not enrolled yet: said in the log, in STATUS=, and by `connagent status` (exit 6).
    let v = wait_status_of(&ws, &agent, 6);
    assert_eq!(v["channel"]["state"], "not_enrolled", "{v}");
    assert!(
        v["status"].as_str().unwrap().contains("not enrolled"),
        "{v}"
    );
    wait_for_log(&agent, "run connagent enroll", Duration::from_secs(30));

    let url = gw.url();
    let wrong = enroll(&ws, &url, &gw.ca(), "cgt_not-a-real-token");
    assert_eq!(wrong.code, 78, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("not known to this gateway"),
        "{}",
        wrong.stderr
    );
    let expired_token = gw.token(0);
    std::thread::sleep(Duration::from_millis(1100));
    let expired = enroll(&ws, &url, &gw.ca(), &expired_token);
    assert_eq!(expired.code, 78, "{}", expired.all());
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);
    assert!(!ws.path("Work/Credentials/agent.crt").exists());

    let good_token = gw.token(10);
    let good = enroll(&ws, &url, &gw.ca(), &good_token);
    assert_eq!(good.code, 0, "{}", good.all());
    assert!(
        good.stdout.contains("agent Beta enrolled"),
        "{}",
        good.stdout
    );
    for f in ["agent.key", "agent.crt", "control-plane-ca.crt"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ws.path(&format!("Work/Credentials/{f}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let reused = enroll(&ws, &url, &gw.ca(), &good_token);
    assert_eq!(reused.code, 78, "{}", reused.all());
    assert!(
        reused.stderr.contains("used already (by agent Beta"),
        "{}",
        reused.stderr
    );
    // The running agent picks the new credential up without a restart.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(gw.wait_connected("Beta", true));
    let v = wait_status_of(&ws, &agent, 0);
    assert_eq!(v["channel"]["state"], "connected", "{v}");

    // Revoked: the gateway closes the channel; the agent is refused, says so, and status exits 6.
    let revoke = std::process::Command::new(BIN)
        .args(["gateway", "revoke", "--folder"])
        .arg(folder.path())
        .arg("Beta")
        .output()
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    wait_for_log(
        &agent,
        "revoked this agent's credential",
        Duration::from_secs(60),
    );
    let v = wait_status_of(&ws, &agent, 6);
    assert_eq!(v["channel"]["state"], "revoked", "{v}");
    assert!(
        v["status"].as_str().unwrap().contains("CREDENTIAL REVOKED"),
        "{v}"
    );
    let text = ws.run(&["status"]);
    assert!(text.stdout.contains("enroll it again"), "{}", text.stdout);
    assert!(
        rt.block_on(gw.list())
            .iter()
            .any(|a| a.identifier == "Beta" && a.revoked)
    );

    // Enrolled again: the credential is replaced and the agent is back.
    let again = enroll(&ws, &url, &gw.ca(), &gw.token(10));
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("replaced"), "{}", again.stdout);
    rt.block_on(gw.wait_connected("Beta", true));
    wait_status_of(&ws, &agent, 0);

    // The tokens are nowhere: not in the agent's files or output, not in the gateway's store
    // or output.
    for t in [&good_token, &expired_token] {
        assert_eq!(
            files_with(&ws.path(""), t),
            Vec::<std::path::PathBuf>::new()
        );
        assert_eq!(
            files_with(folder.path(), t),
            Vec::<std::path::PathBuf>::new()
        );
        assert!(!agent.stderr_text().contains(t.as_str()));
        assert!(!gw.proc.stderr_text().contains(t.as_str()));
        assert!(!gw.proc.stdout_lines().join("\n").contains(t.as_str()));
    }
    // A rejected reload shows too (exit 1), and goes once the file is fixed.
    ws.write("xml-config/broken.xml", "<ConfigurationFile><Connection");
    let v = wait_status_of(&ws, &agent, 1);
    assert!(v["status"].as_str().unwrap().contains("REJECTED"), "{v}");
    std::fs::remove_file(ws.path("xml-config/broken.xml")).unwrap();
    wait_status_of(&ws, &agent, 0);
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    assert_eq!(status(&ws).0, 3, "a stopped agent is not running");
    // Started again, it is back on its own.
    let again = run_agent(&ws);
    rt.block_on(gw.wait_connected("Beta", true));
    wait_status_of(&ws, &again, 0);
}

const PG_PASSWORD: &str = "pg-gw-canary-9a4c";

#[test]
fn the_gateway_restarted_mid_export_gets_the_outcome() {
    let pg = Pg::start();
    pg.sql("postgres", "CREATE DATABASE hr");
    pg.sql(
        "postgres",
        &format!("CREATE ROLE agent LOGIN PASSWORD '{PG_PASSWORD}'"),
    );
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let ws = agent_ws("Gamma", &gw.url(), json!({}));
    // A finite export that takes about four seconds: forty rows, a tenth of a second each.
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    settings["Connections"]["Pg"] = json!({
        "ConnectionString": pg.url("agent", PG_PASSWORD, "hr"),
        "SqlCommand": "SELECT x AS id, pg_sleep(0.1)::text AS pause FROM generate_series(1, 40) x"
    });
    ws.settings(settings);
    ws.xml(
        "pg.xml",
        "<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"PostgreSql\"/>",
    );
    assert_eq!(enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10)).code, 0);
    let agent = run_agent(&ws);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (agents_addr, clients_addr) = (gw.agents.clone(), gw.clients.clone());
    let run_id = rt.block_on(async {
        gw.wait_connected("Gamma", true).await;
        let mut c = gw.client().await;
        let mut stream = c
            .run_export(to(
                pb::RunExportRequest {
                    target: Some(pb::run_export_request::Target::Connection("Pg".into())),
                    mode: pb::ExportMode::Complete as i32,
                },
                "Gamma",
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner();
        let accepted = stream.message().await.unwrap().unwrap();
        // The gateway dies mid-export: the client's call fails, it does not hang.
        let mut gw = gw;
        gw.proc.child.kill().unwrap();
        let _ = gw.proc.child.wait();
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return "ended".to_string(),
                    Err(s) => return format!("{:?}", s.code()),
                }
            }
        })
        .await
        .expect("the call ends when the gateway dies");
        assert_ne!(ended, "ended", "the stream must fail, not finish cleanly");
        accepted.run_id
    });
    assert!(
        !ws.output_file("Pg.csv").exists(),
        "the export was still running when the gateway died"
    );
    // Back on the same ports: the agent dials again, and the run's outcome arrives.
    let gw = Gateway::start(folder.path(), Some(&agents_addr), Some(&clients_addr));
    rt.block_on(gw.wait_connected("Gamma", true));
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let found = gw
            .reports()
            .into_iter()
            .find(|r| r["kind"] == "run" && r["report"]["run"]["id"] == run_id.as_str());
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the run's outcome never reached the gateway\n{}",
            agent.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        report["report"]["run"]["state"], "RUN_STATE_SUCCEEDED",
        "{report}"
    );
    assert_eq!(report["report"]["run"]["tables"][0]["rows"], 40, "{report}");
    let rows = python_csv(&ws.output_file("Pg.csv"));
    assert_eq!(rows.len(), 41);
    // Through the new gateway, the agent answers for the run too.
    let run = rt.block_on(async {
        gw.client()
            .await
            .get_run(to(
                pb::GetRunRequest {
                    run_id: run_id.clone(),
                },
                "Gamma",
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    // Nothing stays queued on the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(ws.path("Work/Outbox"))
        .map(|d| d.count())
        .unwrap_or(0)
        > 0
    {
        assert!(Instant::now() < deadline, "reports stayed queued");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stalled_or_cut_channel_is_detected_and_dialled_again() {
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let proxy = Proxy::start(gw.agents.parse().unwrap());
    let url = format!("https://127.0.0.1:{}", proxy.port);
    let ws = agent_ws("Delta", &url, json!({"KeepaliveSeconds": 4}));
    assert_eq!(enroll(&ws, &url, &gw.ca(), &gw.token(10)).code, 0);
    let agent = run_agent(&ws);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(gw.wait_connected("Delta", true));
    let (run_id, stream) = rt.block_on(async {
        let mut c = gw.client().await;
        let mut stream = c
            .run_export(to(
                pb::RunExportRequest {
                    target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                    mode: pb::ExportMode::Complete as i32,
                },
                "Delta",
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner();
        let accepted = stream.message().await.unwrap().unwrap();
        (accepted.run_id, stream)
    });
    // The path goes half-open: nothing passes, nothing is closed. The agent's pings go
    // unanswered and it drops the channel within KeepaliveSeconds (4 s; pings every 2 s).
    proxy.stall();
    let took = wait_for_log(
        &agent,
        "the channel to the control plane ended",
        Duration::from_secs(30),
    );
    eprintln!("half-open channel noticed by the agent after {took:?} (KeepaliveSeconds 4)");
    // The client's call through the gateway fails cleanly once the gateway notices too.
    let ended = rt.block_on(async {
        let mut stream = stream;
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(s) => return Some(s.code()),
                }
            }
        })
        .await
        .expect("the call in flight ends")
    });
    assert!(
        ended.is_some(),
        "the call must fail, not end as if complete"
    );
    proxy.resume();
    rt.block_on(gw.wait_connected("Delta", true));
    assert!(proxy.accepted() >= 2, "the agent dialled again");
    // The run started by the dropped call kept going; cancelled now, its outcome is reported.
    rt.block_on(async {
        let st = gw
            .client()
            .await
            .get_run(to(
                pb::GetRunRequest {
                    run_id: run_id.clone(),
                },
                "Delta",
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            st.state,
            pb::RunState::Running as i32,
            "the run went on: {st:?}"
        );
        gw.client()
            .await
            .cancel_run(to(
                pb::CancelRunRequest {
                    run_id: run_id.clone(),
                },
                "Delta",
                Some(ADMIN),
            ))
            .await
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = gw.reports().into_iter().any(|r| {
            r["kind"] == "run"
                && r["report"]["run"]["id"] == run_id.as_str()
                && r["report"]["run"]["state"] == "RUN_STATE_CANCELLED"
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled run was not reported"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
    // Cut: both ends see the close; the agent is back within its backoff.
    let before = proxy.accepted();
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.accepted() == before {
        assert!(
            Instant::now() < deadline,
            "the agent did not dial again after a cut"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(gw.wait_connected("Delta", true));
    let st = rt.block_on(async {
        gw.client()
            .await
            .get_status(to(pb::GetStatusRequest {}, "Delta", Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(st.agent_identifier, "Delta");
}

const PROXY_PASSWORD: &str = "proxy-canary-pw-31";

#[test]
fn through_an_http_connect_proxy_with_basic_authentication() {
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let proxy = ConnectProxy::start(Some(&format!("proxyuser:{PROXY_PASSWORD}")));
    let ws = agent_ws(
        "Epsilon",
        &gw.url(),
        json!({"Proxy": format!("http://proxyuser@127.0.0.1:{}", proxy.port), "ProxyPassword": PROXY_PASSWORD}),
    );
    // Enrollment goes through the proxy too.
    let e = enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10));
    assert_eq!(e.code, 0, "{}", e.all());
    let agent = run_agent(&ws);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(gw.wait_connected("Epsilon", true));
    let st = rt.block_on(async {
        gw.client()
            .await
            .get_status(to(pb::GetStatusRequest {}, "Epsilon", Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(st.agent_identifier, "Epsilon");
    let tunnels = proxy.tunnels.lock().unwrap().clone();
    assert!(
        tunnels.len() >= 3,
        "enrollment, channel and reports went through the proxy: {tunnels:?}"
    );
    assert!(tunnels.iter().all(|t| *t == gw.agents), "{tunnels:?}");
    drop(agent);

    // A wrong password: the proxy answers 407 and the agent says what to set.
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    settings["ControlPlane"]["ProxyPassword"] = json!("wrong-canary-pw");
    ws.settings(settings);
    let refused = enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10));
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("407") && refused.stderr.contains("ControlPlane:ProxyPassword"),
        "{}",
        refused.stderr
    );
    assert!(*proxy.refused.lock().unwrap() >= 1);

    // The standard variables: HTTPS_PROXY is used, NO_PROXY bypasses it.
    let open_proxy = ConnectProxy::start(None);
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    settings["ControlPlane"]
        .as_object_mut()
        .unwrap()
        .remove("Proxy");
    settings["ControlPlane"]
        .as_object_mut()
        .unwrap()
        .remove("ProxyPassword");
    ws.settings(settings);
    let mut ws = ws;
    ws.env.push((
        "HTTPS_PROXY".into(),
        format!("http://127.0.0.1:{}", open_proxy.port),
    ));
    assert_eq!(enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10)).code, 0);
    assert_eq!(open_proxy.tunnels.lock().unwrap().len(), 1);
    ws.env
        .push(("NO_PROXY".into(), "localhost,127.0.0.1".into()));
    assert_eq!(enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10)).code, 0);
    assert_eq!(
        open_proxy.tunnels.lock().unwrap().len(),
        1,
        "NO_PROXY bypasses the proxy"
    );
}

#[test]
fn two_agents_behind_one_gateway_and_a_duplicate_refused() {
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let a = agent_ws("Zeta", &gw.url(), json!({}));
    let b = agent_ws("Eta", &gw.url(), json!({}));
    for ws in [&a, &b] {
        assert_eq!(enroll(ws, &gw.url(), &gw.ca(), &gw.token(10)).code, 0);
    }
    let agent_a = run_agent(&a);
    let _agent_b = run_agent(&b);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        gw.wait_connected("Zeta", true).await;
        gw.wait_connected("Eta", true).await;
        let mut c = gw.client().await;
        for id in ["Zeta", "Eta"] {
            let st = c
                .get_status(to(pb::GetStatusRequest {}, id, Some(ADMIN)))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(st.agent_identifier, id);
        }
    });
    // A second process with Zeta's identity and credential: refused while the first is up.
    let dup = agent_ws("Zeta", &gw.url(), json!({}));
    std::fs::create_dir_all(dup.path("Work/Credentials")).unwrap();
    for f in ["agent.key", "agent.crt", "control-plane-ca.crt"] {
        std::fs::copy(
            a.path(&format!("Work/Credentials/{f}")),
            dup.path(&format!("Work/Credentials/{f}")),
        )
        .unwrap();
    }
    dup.write("in/people.csv", "id,name\n9,Dup\n");
    let agent_dup = run_agent(&dup);
    wait_for_log(&agent_dup, "is connected already", Duration::from_secs(30));
    wait_for_log(&gw.proc, "refused a channel", Duration::from_secs(30));
    assert!(
        gw.proc
            .stderr_text()
            .contains("agent Zeta is connected already"),
        "{}",
        gw.proc.stderr_text()
    );
    // The first one gone, the second is accepted (within its backoff).
    let (code, _) = agent_a.stop();
    assert_eq!(code, 0);
    rt.block_on(async {
        gw.wait_connected("Zeta", true).await;
        let st = gw
            .client()
            .await
            .get_status(to(pb::GetStatusRequest {}, "Zeta", Some(ADMIN)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.agent_identifier, "Zeta");
    });
    wait_for_log(
        &agent_dup,
        "connected to the control plane",
        Duration::from_secs(90),
    );
}

#[test]
fn outbound_settings_are_checked_and_located() {
    let ws = Workspace::new();
    ws.settings(json!({
        "ControlPlane": {
            "Url": "http://central.example:80",
            "Mode": "sideways",
            "KeepaliveSeconds": 1,
            "Proxy": "https://proxy.example"
        }
    }));
    ws.xml("c.xml", connector_xml());
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    for needle in [
        "ControlPlane:Mode \"sideways\" is not known",
        "ControlPlane:KeepaliveSeconds must be a whole number from 2 to 3600",
        "is not an HTTP proxy address",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert!(
        out.stderr.contains("appsettings.agent.json:"),
        "{}",
        out.stderr
    );
    // An outbound channel in plain text only to loopback.
    ws.settings(json!({"ControlPlane": {"Url": "http://central.example:80"}}));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains("allowed only to a loopback address"),
        "{}",
        out.stderr
    );
    ws.settings(json!({"ControlPlane": {"Url": "http://central.example:80", "Mode": "inbound"}, "Grpc": {"Listen": ""}}));
    let out = ws.run(&["validate"]);
    assert_ne!(
        out.code,
        78,
        "inbound mode keeps today's rules: {}",
        out.all()
    );
    // The gateway's client port has no TLS: loopback only.
    let folder = gateway_folder();
    let gw = std::process::Command::new(BIN)
        .args(["gateway", "serve", "--folder"])
        .arg(folder.path())
        .args([
            "--agents",
            "127.0.0.1:0",
            "--clients",
            &format!("0.0.0.0:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(gw.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&gw.stderr).contains("not a loopback address"));
}

#[test]
fn a_slow_reader_through_the_gateway_is_not_buffered() {
    let folder = gateway_folder();
    let gw = Gateway::start(folder.path(), None, None);
    let ws = agent_ws("Theta", &gw.url(), json!({}));
    assert_eq!(enroll(&ws, &gw.url(), &gw.ca(), &gw.token(10)).code, 0);
    // A published table of 96 MiB.
    let mut big = String::from("id,name\n");
    let line = format!(",{}\n", "x".repeat(90));
    let mut i = 0u64;
    while big.len() < 96 * 1024 * 1024 {
        big.push_str(&i.to_string());
        big.push_str(&line);
        i += 1;
    }
    ws.write("Temp/ExportOutput/People.csv", &big);
    let agent = run_agent(&ws);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        gw.wait_connected("Theta", true).await;
        let (agent_before, gw_before) = (rss_kib(agent.child.id()), rss_kib(gw.proc.child.id()));
        let mut stream = gw
            .client()
            .await
            .read_connection_table(to(
                pb::ReadConnectionTableRequest { file: "People.csv".into(), ..Default::default() },
                "Theta",
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        // The client stops reading for three seconds: neither the agent nor the gateway may
        // take the table into memory meanwhile.
        let (mut agent_peak, mut gw_peak) = (0, 0);
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            agent_peak = agent_peak.max(rss_kib(agent.child.id()));
            gw_peak = gw_peak.max(rss_kib(gw.proc.child.id()));
        }
        eprintln!(
            "while the reader paused: agent {agent_before} -> {agent_peak} KiB, gateway {gw_before} -> {gw_peak} KiB (table 96 MiB)"
        );
        assert!(agent_peak < agent_before + 32 * 1024, "the agent buffered: {agent_before} -> {agent_peak} KiB");
        assert!(gw_peak < gw_before + 32 * 1024, "the gateway buffered: {gw_before} -> {gw_peak} KiB");
        // Then the whole table arrives, intact.
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut hasher, &first.data);
        let mut size = first.data.len() as u64;
        while let Some(c) = stream.message().await.unwrap() {
            sha2::Digest::update(&mut hasher, &c.data);
            size += c.data.len() as u64;
        }
        assert_eq!(size, first.size);
        assert_eq!(hex::encode(sha2::Digest::finalize(hasher)), first.sha256);
    });
}
