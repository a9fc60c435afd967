//! The gateway's agent port: TLS (its server certificate; agents' client certificates verified
//! against its CA when presented), then either the outbound channel (`CONNAGENT-TUNNEL/1`) or
//! HTTP/2 for `EnrollmentService` (no certificate needed) and `ControlPlaneService` (reports and
//! heartbeats, from an enrolled agent's certificate only).
//!
//! A tunnel is accepted when the certificate is the one the agent was last issued, not revoked,
//! names the agent of the hello, and no channel of that agent is up; the gateway then becomes the
//! HTTP/2 client on the connection and keeps its `SendRequest` for the client port to forward
//! calls through. A revocation or a new enrollment closes the agent's channel within two seconds.

use super::pki;
use super::{Hub, Slot, Tunnel};
use crate::grpc::channel::{MAGIC, read_frame, write_frame};
use crate::grpc::dev_control_plane as json_of;
use crate::grpc::proto as pb;
use crate::grpc::proto::control_plane_service_server::{
    ControlPlaneService, ControlPlaneServiceServer,
};
use crate::grpc::proto::enrollment_service_server::{EnrollmentService, EnrollmentServiceServer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tonic::{Request, Response, Status};

/// How long TLS, the first bytes and the hello may take.
const HANDSHAKE: Duration = Duration::from_secs(30);
/// The gateway's own pings on a channel: an agent whose connection went half-open is dropped
/// within twice this (calls in flight on it then fail with UNAVAILABLE).
const PING: Duration = Duration::from_secs(5);

/// Bytes read ahead of a stream, given back before the rest.
struct Prefixed<IO> {
    prefix: Vec<u8>,
    at: usize,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS configuration of the agent port: the server certificate, agents' certificates
/// verified against the CA when they present one (enrollment comes without).
pub fn tls_config(
    hub: &Hub,
    names: &[String],
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    crate::install_crypto_provider();
    let (cert_pem, key_pem) = hub.authority.server_certificate(names)?;
    let (certs, key) = crate::grpc::credential::identity(cert_pem.as_bytes(), key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::grpc::credential::roots(Some(hub.authority.certificate_pem.as_bytes()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("the client certificate verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("the server certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts agents until `hub.stop` is cancelled.
pub async fn serve(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Some((tcp, addr)) = super::accept(&hub, &listener, "agent port").await {
        let hub = hub.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(hub, acceptor, tcp, addr).await {
                tracing::info!(peer = %addr, "agent port: {e}");
            }
        });
    }
}

async fn connection(
    hub: Arc<Hub>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
) -> Result<(), String> {
    let mut tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake within 30 s".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| pki::peer_identity(c));
    let mut first = vec![0u8; MAGIC.len()];
    tokio::time::timeout(HANDSHAKE, tls.read_exact(&mut first))
        .await
        .map_err(|_| "nothing sent within 30 s".to_string())?
        .map_err(|e| format!("closed before sending anything: {e}"))?;
    if first == MAGIC {
        tunnel(hub, tls, peer, addr).await;
        return Ok(());
    }
    let io = Prefixed {
        prefix: first,
        at: 0,
        inner: tls,
    };
    let routes = tonic::service::Routes::new(EnrollmentServiceServer::new(Enrollment {
        hub: hub.clone(),
    }))
    .add_service(ControlPlaneServiceServer::new(Reports {
        hub: hub.clone(),
        peer,
    }));
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection(
        hyper_util::rt::TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(routes),
    );
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => r.map_err(|e| format!("HTTP/2: {e}")),
        _ = hub.stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
            Ok(())
        }
    }
}

/// Sends a refusal and logs it.
async fn refuse<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    addr: SocketAddr,
    kind: pb::TunnelRefusal,
    message: String,
) {
    tracing::warn!(peer = %addr, refusal = ?kind, "refused a channel: {message}");
    let welcome = pb::TunnelWelcome {
        accepted: false,
        refusal: kind as i32,
        message,
        ..Default::default()
    };
    let _ = tokio::time::timeout(HANDSHAKE, write_frame(io, &welcome)).await;
}

/// Checks an agent's certificate against the store: the agent it names, when it is the one
/// last issued to it and not revoked.
pub fn admitted(
    hub: &Hub,
    peer: Option<&(String, String)>,
) -> Result<String, (pb::TunnelRefusal, String)> {
    use pb::TunnelRefusal as R;
    let Some((cn, fingerprint)) = peer else {
        return Err((
            R::Unknown,
            "no client certificate: enroll the agent first (connagent enroll --url ... with a token from connagent gateway token)".into(),
        ));
    };
    let row = hub
        .store()
        .agent(cn)
        .map_err(|e| (R::Unspecified, e.to_string()))?
        .ok_or_else(|| {
            (
                R::Unknown,
                format!("agent {cn} is not enrolled with this gateway"),
            )
        })?;
    if let Some(at) = &row.revoked_at {
        return Err((
            R::Revoked,
            format!(
                "the credential of agent {} was revoked at {at}: enroll it again with a new token",
                row.identifier
            ),
        ));
    }
    if &row.certificate_sha256 != fingerprint {
        return Err((
            R::Revoked,
            format!(
                "this certificate of agent {} was replaced by a later enrollment (at {}): use the new credential, or enroll again",
                row.identifier, row.enrolled_at
            ),
        ));
    }
    Ok(row.identifier)
}

async fn tunnel<IO>(hub: Arc<Hub>, mut io: IO, peer: Option<(String, String)>, addr: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use pb::TunnelRefusal as R;
    let hello =
        match tokio::time::timeout(HANDSHAKE, read_frame::<_, pb::TunnelHello>(&mut io)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::info!(peer = %addr, "a channel sent no valid hello: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(peer = %addr, "a channel sent no hello within 30 s");
                return;
            }
        };
    let agent = match admitted(&hub, peer.as_ref()) {
        Ok(a) => a,
        Err((kind, message)) => return refuse(&mut io, addr, kind, message).await,
    };
    if !agent.eq_ignore_ascii_case(&hello.agent_identifier) {
        let message = format!(
            "the certificate is agent {agent}'s, the hello says {:?}",
            hello.agent_identifier
        );
        return refuse(&mut io, addr, R::Identity, message).await;
    }
    let fingerprint = peer.map(|p| p.1).unwrap_or_default();
    // The slot is taken before the welcome, so that two channels of one agent cannot both pass.
    let session = match hub.reserve(&agent, addr) {
        Ok(s) => s,
        Err(first) => {
            let message = format!(
                "agent {agent} is connected already ({first}); a second channel is refused until the first is gone"
            );
            return refuse(&mut io, addr, R::Duplicate, message).await;
        }
    };
    let packages: Vec<String> = hello.packages.iter().map(|p| p.id.clone()).collect();
    let wanted = hub
        .store()
        .hello(
            &agent,
            &hello.version,
            &packages,
            &hello.configuration_fingerprint,
            hello.configuration_generation,
            &hello.schema_fingerprints,
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot record the hello; asking for every schema");
            hello.schema_fingerprints.keys().cloned().collect()
        });
    let welcome = pb::TunnelWelcome {
        accepted: true,
        schemas_wanted: wanted,
        ..Default::default()
    };
    if let Err(e) = write_frame(&mut io, &welcome).await {
        hub.release(&agent, session);
        tracing::info!(%agent, peer = %addr, "the channel closed before the welcome: {e}");
        return;
    }
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(PING)
        .keep_alive_timeout(PING)
        .keep_alive_while_idle(true);
    let (sender, conn) = match builder
        .handshake::<_, tonic::body::Body>(hyper_util::rt::TokioIo::new(io))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            hub.release(&agent, session);
            tracing::warn!(%agent, peer = %addr, "HTTP/2 over the channel failed: {e}");
            return;
        }
    };
    let closed = tokio_util::sync::CancellationToken::new();
    hub.establish(
        &agent,
        session,
        Tunnel {
            sender,
            since: chrono::Utc::now(),
            peer: addr,
            version: hello.version.clone(),
            fingerprint,
            close: closed.clone(),
        },
    );
    tracing::info!(%agent, peer = %addr, version = %hello.version, "agent connected: its AgentService is reachable on the client port");
    json_of::print(
        serde_json::json!({"kind": "connected", "agent": agent, "peer": addr.to_string(), "version": hello.version}),
    );
    let why = tokio::select! {
        r = conn => match r {
            Ok(()) => "the agent closed the channel".to_string(),
            Err(e) => format!("the channel broke: {e}"),
        },
        _ = closed.cancelled() => "its credential was revoked or replaced".to_string(),
        _ = hub.stop.cancelled() => "the gateway is stopping".to_string(),
    };
    hub.release(&agent, session);
    tracing::info!(%agent, peer = %addr, reason = %why, "agent disconnected");
    json_of::print(serde_json::json!({"kind": "disconnected", "agent": agent, "reason": why}));
}

/// Closes, every two seconds, the channels of agents whose credential was revoked or replaced
/// since they connected (by `connagent gateway revoke`, or a new enrollment).
pub async fn watch_revocations(hub: Arc<Hub>) {
    loop {
        tokio::select! {
            _ = hub.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let live: Vec<(String, String, tokio_util::sync::CancellationToken)> = hub
            .tunnels()
            .values()
            .filter_map(|slot| match slot {
                Slot::Live { agent, tunnel, .. } => Some((
                    agent.clone(),
                    tunnel.fingerprint.clone(),
                    tunnel.close.clone(),
                )),
                Slot::Reserved { .. } => None,
            })
            .collect();
        for (agent, fingerprint, close) in live {
            let peer = (agent.clone(), fingerprint);
            if let Err((_, why)) = admitted(&hub, Some(&peer)) {
                tracing::warn!(%agent, "closing the channel: {why}");
                close.cancel();
            }
        }
    }
}

struct Enrollment {
    hub: Arc<Hub>,
}

/// An agent identifier the gateway accepts: 1 to 128 letters, digits, '.', '-' or '_'.
pub fn check_agent_identifier(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "the agent identifier must be 1 to 128 characters long; it is {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the agent identifier {id:?} contains {c:?}: only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl EnrollmentService for Enrollment {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        let agent = r.agent_identifier.trim().to_string();
        check_agent_identifier(&agent).map_err(Status::invalid_argument)?;
        if r.token.trim().is_empty() {
            return Err(Status::unauthenticated(
                "no enrollment token: make one with `connagent gateway token`",
            ));
        }
        rcgen::CertificateSigningRequestParams::from_pem(&r.certificate_request_pem).map_err(
            |e| Status::invalid_argument(format!("the certificate request is not valid: {e}")),
        )?;
        let hub = self.hub.clone();
        let token = zeroize::Zeroizing::new(r.token.trim().to_string());
        let csr = r.certificate_request_pem;
        let outcome = tokio::task::spawn_blocking(move || {
            let mut store = hub.store();
            store.enroll(&token, &agent, || {
                hub.authority
                    .issue_agent_certificate(&agent, &csr)
                    .map(|(pem, sha)| ((agent.clone(), pem), sha))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("enrollment failed: {e}")))?
        .map_err(Status::internal)?;
        match outcome {
            Ok((agent, certificate_pem)) => {
                tracing::info!(%agent, "agent enrolled: a client certificate was issued");
                json_of::print(serde_json::json!({"kind": "enrolled", "agent": agent}));
                Ok(Response::new(pb::EnrollResponse {
                    agent_identifier: agent,
                    certificate_pem,
                    ca_certificate_pem: self.hub.authority.certificate_pem.clone(),
                }))
            }
            Err(refusal) => {
                tracing::warn!(agent = %r.agent_identifier, "refused an enrollment: {refusal}");
                Err(Status::unauthenticated(refusal.to_string()))
            }
        }
    }
}

/// `ControlPlaneService` for one connection: the agent is the one of its certificate.
struct Reports {
    hub: Arc<Hub>,
    peer: Option<(String, String)>,
}

impl Reports {
    fn agent(&self, claimed: &str) -> Result<String, Status> {
        let agent = admitted(&self.hub, self.peer.as_ref()).map_err(|(kind, message)| {
            if kind == pb::TunnelRefusal::Unknown {
                Status::unauthenticated(message)
            } else {
                Status::permission_denied(message)
            }
        })?;
        if !agent.eq_ignore_ascii_case(claimed) {
            return Err(Status::permission_denied(format!(
                "the certificate is agent {agent}'s; the report says {claimed:?}"
            )));
        }
        Ok(agent)
    }

    fn store_report(
        &self,
        agent: &str,
        sequence: u64,
        kind: &str,
        body: serde_json::Value,
        schema: Option<(&str, &str)>,
    ) -> Result<(), Status> {
        let fresh = self
            .hub
            .store()
            .add_report(agent, sequence, kind, &body, schema)
            .map_err(|e| Status::unavailable(format!("the report was not stored: {e}")))?;
        if fresh {
            json_of::print(body);
        } else {
            tracing::debug!(%agent, sequence, "a report delivered again; stored once already");
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ControlPlaneService for Reports {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let h = req.into_inner();
        let agent = self.agent(&h.agent_identifier)?;
        self.hub
            .store()
            .heartbeat(
                &agent,
                &h.version,
                h.configuration_generation,
                h.configuration_ok,
                h.queued_reports,
            )
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn report_schema(
        &self,
        req: Request<pb::SchemaReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let r = req.into_inner();
        let agent = self.agent(&r.agent_identifier)?;
        let body = json_of::schema_report(&r);
        self.store_report(
            &agent,
            r.sequence,
            "schema",
            body,
            Some((r.connection.as_str(), r.fingerprint.as_str())),
        )?;
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn report_run(
        &self,
        req: Request<pb::RunReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let r = req.into_inner();
        let agent = self.agent(&r.agent_identifier)?;
        let body = json_of::run_report(&r);
        self.store_report(&agent, r.sequence, "run", body, None)?;
        Ok(Response::new(pb::ReportAck {}))
    }
}
