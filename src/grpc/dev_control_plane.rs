//! `connagent dev-control-plane`: a minimal ControlPlaneService that prints every heartbeat and
//! report as one JSON line on stdout, to try the reporting path without a central server.

use super::proto as pb;
use super::proto::control_plane_service_server::{ControlPlaneService, ControlPlaneServiceServer};
use serde_json::{Value, json};
use std::io::Write;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map_or(Value::Null, |d| Value::String(d.to_rfc3339()))
}

/// Prints one JSON line on stdout (the gateway prints the same lines).
pub fn print(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn run_json(r: &pb::RunInfo) -> Value {
    json!({
        "id": r.id, "connection": r.connection, "task": r.task,
        "state": pb::RunState::try_from(r.state).map(|s| s.as_str_name()).unwrap_or("?"),
        "failure_class": r.failure_class, "error": r.error, "reason": r.reason,
        "started_by": r.started_by, "finished_at": ts(&r.finished_at),
        "tables": r.tables.iter().map(|t| json!({"file": t.file, "rows": t.rows, "bytes": t.bytes, "sha256": t.sha256})).collect::<Vec<_>>(),
    })
}

/// A heartbeat as a JSON line.
pub fn heartbeat(h: &pb::HeartbeatRequest) -> Value {
    json!({
        "kind": "heartbeat", "agent": h.agent_identifier, "version": h.version, "at": ts(&h.at),
        "configuration_generation": h.configuration_generation, "configuration_ok": h.configuration_ok,
        "connections_served": h.connections_served, "runs_in_progress": h.runs_in_progress,
        "queued_reports": h.queued_reports,
    })
}

/// A schema report as a JSON line.
pub fn schema_report(r: &pb::SchemaReport) -> Value {
    let outcome = match &r.outcome {
        Some(pb::schema_report::Outcome::Schema(s)) => json!({"schema": {
            "package": s.package, "discovered_at": ts(&s.discovered_at),
            "tables": s.tables.iter().map(|t| json!({"name": t.name, "columns": t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        }}),
        Some(pb::schema_report::Outcome::Failure(f)) => {
            json!({"failure": {"class": f.class, "message": f.message, "at": ts(&f.at)}})
        }
        None => Value::Null,
    };
    json!({"kind": "schema", "agent": r.agent_identifier, "sequence": r.sequence, "connection": r.connection, "fingerprint": r.fingerprint, "outcome": outcome})
}

/// A run report as a JSON line.
pub fn run_report(r: &pb::RunReport) -> Value {
    json!({"kind": "run", "agent": r.agent_identifier, "sequence": r.sequence, "run": r.run.as_ref().map(run_json)})
}

/// Prints what it receives. With a token, requests must carry `authorization: Bearer <token>`.
pub struct DevControlPlane {
    pub token: Option<String>,
}

impl DevControlPlane {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let ok = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {token}"));
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad or missing token"))
        }
    }
}

#[tonic::async_trait]
impl ControlPlaneService for DevControlPlane {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check(&req)?;
        print(heartbeat(&req.into_inner()));
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn report_schema(
        &self,
        req: Request<pb::SchemaReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        self.check(&req)?;
        print(schema_report(&req.into_inner()));
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn report_run(
        &self,
        req: Request<pb::RunReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        self.check(&req)?;
        print(run_report(&req.into_inner()));
        Ok(Response::new(pb::ReportAck {}))
    }
}

pub async fn serve(listen: std::net::SocketAddr, token: Option<String>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    print(json!({"kind": "listening", "address": addr.to_string()}));
    tonic::transport::Server::builder()
        .add_service(ControlPlaneServiceServer::new(DevControlPlane { token }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
