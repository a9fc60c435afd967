//! The gateway's client port: plain HTTP/2 (gRPC) on a loopback address, for any standard gRPC
//! client. `GatewayService` (ListAgents), health and reflection are answered here; every
//! `connagent.v1.AgentService` call is forwarded, as it is, to the agent named by the
//! `x-connagent-agent` metadata, over that agent's channel: the agent authenticates the call
//! (`authorization`), applies its roles and audits it, exactly as on its own listener.
//!
//! Streams pass through with HTTP/2 flow control end to end (nothing is buffered beyond the
//! windows); a client that cancels resets the stream on the agent too.

use super::Hub;
use crate::grpc::proto as pb;
use crate::grpc::proto::gateway_service_server::{GatewayService, GatewayServiceServer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tonic::body::Body;
use tonic::{Request, Response, Status};
use tower::ServiceExt as _;

/// The metadata that names the agent a call is for.
pub const AGENT_HEADER: &str = "x-connagent-agent";
const AGENT_SERVICE: &str = "/connagent.v1.AgentService/";

/// The services answered by the gateway itself.
fn own_routes(hub: Arc<Hub>) -> Result<tonic::service::Routes, String> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder().build_v1().map_err(|e| e.to_string())?;
    let v1alpha = builder().build_v1alpha().map_err(|e| e.to_string())?;
    let (_, health) = tonic_health::server::health_reporter();
    Ok(
        tonic::service::Routes::new(GatewayServiceServer::new(Agents { hub }))
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha),
    )
}

/// Serves the client port until `hub.stop` is cancelled.
pub async fn serve(hub: Arc<Hub>, listener: tokio::net::TcpListener) -> Result<(), String> {
    let routes = own_routes(hub.clone())?;
    while let Some((tcp, addr)) = super::accept(&hub, &listener, "client port").await {
        let hub = hub.clone();
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let hub = hub.clone();
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(route(hub, routes, req).await) }
            });
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(10));
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(peer = %addr, "client port: {e}");
            }
        });
    }
    Ok(())
}

async fn route(
    hub: Arc<Hub>,
    routes: tonic::service::Routes,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    if req.uri().path().starts_with(AGENT_SERVICE) {
        return match forward(&hub, req).await {
            Ok(r) => r,
            Err(s) => s.into_http(),
        };
    }
    match routes.oneshot(req.map(Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Forwards one AgentService call to the agent it names.
async fn forward(
    hub: &Hub,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, Status> {
    let agent = req
        .headers()
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "name the agent in the {AGENT_HEADER} metadata (GatewayService.ListAgents lists them)"
            ))
        })?
        .to_string();
    let mut sender = hub.sender(&agent).ok_or_else(|| {
        match hub.store().agent(&agent) {
            Ok(Some(row)) => Status::unavailable(format!(
                "agent {} is not connected (last heartbeat: {}); calls reach it once its channel is back",
                row.identifier,
                row.last_heartbeat.as_deref().unwrap_or("never")
            )),
            Ok(None) => Status::not_found(format!("no agent {agent:?} is enrolled with this gateway")),
            Err(e) => Status::unavailable(e.to_string()),
        }
    })?;
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path().to_string(), |p| p.as_str().to_string());
    parts.uri = http::Uri::builder()
        .scheme("http")
        .authority("agent.connagent.invalid")
        .path_and_query(path)
        .build()
        .map_err(|e| Status::invalid_argument(format!("the call's path: {e}")))?;
    parts.headers.remove(AGENT_HEADER);
    let forwarded = http::Request::from_parts(parts, Body::new(body));
    sender
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("the channel to agent {agent} closed: {e}")))?;
    let response = sender.send_request(forwarded).await.map_err(|e| {
        Status::unavailable(format!(
            "the channel to agent {agent} broke during the call: {e}"
        ))
    })?;
    Ok(response.map(Body::new))
}

struct Agents {
    hub: Arc<Hub>,
}

fn ts(text: Option<&str>) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(text?).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

#[tonic::async_trait]
impl GatewayService for Agents {
    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let rows = self
            .hub
            .store()
            .agents()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let live = self.hub.live();
        let agents = rows
            .into_iter()
            .map(|a| {
                let since = live
                    .iter()
                    .find(|(id, _)| id.eq_ignore_ascii_case(&a.identifier))
                    .map(|(_, since)| *since);
                pb::AgentInfo {
                    connected: since.is_some(),
                    connected_since: since.map(|s| prost_types::Timestamp {
                        seconds: s.timestamp(),
                        nanos: 0,
                    }),
                    version: a.version,
                    last_heartbeat: ts(a.last_heartbeat.as_deref()),
                    configuration_generation: a.configuration_generation,
                    configuration_ok: a.configuration_ok,
                    configuration_fingerprint: a.configuration_fingerprint,
                    queued_reports: a.queued_reports,
                    revoked: a.revoked_at.is_some(),
                    reports_received: a.reports_received,
                    packages: a.packages,
                    identifier: a.identifier,
                }
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }
}
