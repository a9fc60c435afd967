//! An independent client implementation: Python grpcio, compiling the .proto itself and using
//! server reflection. The interpreter comes from `CONNAGENT_TEST_PYTHON` or `target/pyvenv`,
//! which `scripts/test.sh` prepares (pip install grpcio grpcio-tools grpcio-reflection).

use crate::support::*;
use serde_json::json;
use sha2::{Digest, Sha256};

pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CONNAGENT_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
    assert!(
        venv.exists(),
        "no Python with grpcio: run `bash scripts/test.sh` (it prepares target/pyvenv) or set CONNAGENT_TEST_PYTHON"
    );
    venv
}

#[test]
fn python_grpcio_client_drives_the_agent() {
    let token = "python-client-canary-0b7e";
    let ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Zoë\n");
    ws.settings(json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [{"Name": "py", "Sha256": hex::encode(Sha256::digest(token)), "Role": "operator"}]},
        "Connections": {"People": {"Path": "in/people.csv"}}
    }));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>", connector_xml()));
    // The interpreter is checked first, and the agent is a `Proc` (killed when dropped), so that
    // a failure here never leaves an agent running.
    let python = python();
    let agent = crate::support::agent::Proc::start(ws.command(&["--json", "serve"]));
    let addr = agent.addr();
    let out = std::process::Command::new(python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpc_client.py"))
        .arg(&addr)
        .arg(token)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
        .output()
        .unwrap();
    drop(agent);
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["agent"], "Local");
    assert_eq!(r["generation"], 1);
    assert_eq!(r["connections"], json!(["People"]));
    assert_eq!(
        r["events"],
        json!(["accepted", "table_started", "table_published", "finished"])
    );
    assert_eq!(r["final_state"], "RUN_STATE_SUCCEEDED");
    assert_eq!(r["table"], "id,name\n1,Zoë\n");
    assert_eq!(r["sha256_matches"], true);
    assert_eq!(r["size_matches"], true);
    assert_eq!(r["without_token"], "UNAUTHENTICATED");
    assert_eq!(r["unknown_connection"], "NOT_FOUND");
    let services = r["services"].as_array().unwrap();
    for s in ["connagent.v1.AgentService", "grpc.health.v1.Health"] {
        assert!(
            services.iter().any(|x| x == s),
            "{s} not listed by reflection: {services:?}"
        );
    }
}
