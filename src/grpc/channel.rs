//! The outbound channel: the agent dials the control plane and serves `AgentService` over the
//! connection it opened (a reverse tunnel), so that no inbound port is needed. The wire contract
//! is written in `proto/connagent/v1/agent.proto` ("The outbound channel"):
//!
//! 1. TCP to `ControlPlane:Url` (through an HTTP CONNECT proxy when one is configured), then TLS
//!    with the enrollment credential as client certificate (plain TCP only to loopback);
//! 2. `CONNAGENT-TUNNEL/1\n`, then a framed `TunnelHello` (identifier, version, packages and
//!    their specs, the configuration's fingerprint, each schema's fingerprint);
//! 3. a framed `TunnelWelcome` back: refused (revoked, duplicate, unknown) or accepted, with the
//!    schemas the control plane wants reported;
//! 4. the agent serves HTTP/2 on the connection: the same routes as the inbound listener (same
//!    handlers, roles, audit), HTTP/2 pings every `KeepaliveSeconds / 2`, the connection dropped
//!    when a ping goes unanswered another `KeepaliveSeconds / 2`.
//!
//! Dropped or refused, the agent dials again with capped exponential backoff and jitter. Calls in
//! flight on a dropped connection end with it (their streams are reset); a run they started goes
//! on, and its outcome reaches the control plane as a report (reports travel beside the channel,
//! queued on disk: `control_plane`). HTTP/2 flow control bounds what is buffered for a control
//! plane that reads slowly.

use super::dial;
use super::proto as pb;
use crate::config::ControlPlaneSettings;
use crate::runtime::{ChannelState, ReportSink, Runtime};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The line that opens a tunnel, before the hello.
pub const MAGIC: &[u8] = b"CONNAGENT-TUNNEL/1\n";
/// The largest hello or welcome accepted.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Dial again after 1 s, doubling to at most 60 s, ±20 % jitter; after a refusal for a revoked
/// credential, every 5 minutes (a new enrollment is picked up without a restart).
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const REVOKED_RETRY: Duration = Duration::from_secs(300);
/// How long the hello/welcome exchange and the TCP+TLS connection may take.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Writes a message as a 4-byte big-endian length and its bytes.
pub async fn write_frame<W: AsyncWrite + Unpin, M: Message>(
    w: &mut W,
    m: &M,
) -> std::io::Result<()> {
    let bytes = m.encode_to_vec();
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads a message framed by [`write_frame`], at most [`MAX_FRAME`] bytes.
pub async fn read_frame<R: AsyncRead + Unpin, M: Message + Default>(
    r: &mut R,
) -> std::io::Result<M> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    M::decode(buf.as_slice()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Why a session ended or could not start.
#[derive(Debug)]
enum SessionEnd {
    /// It ran, then ended (the control plane closed it, a ping went unanswered, the agent is
    /// stopping).
    Ended(String),
    /// It could not be opened (unreachable, TLS, an answer that is not a welcome).
    Failed(String),
    /// The control plane refused it.
    Refused(pb::TunnelRefusal, String),
    /// No credential to present.
    NotEnrolled(String),
}

/// Starts the channel: it runs until the agent stops. `reports` receives the schema reports the
/// control plane asks for when it connects.
pub fn spawn(
    rt: Arc<Runtime>,
    settings: ControlPlaneSettings,
    reports: Option<Arc<dyn ReportSink>>,
) {
    tokio::spawn(async move { run(rt, settings, reports).await });
}

async fn run(
    rt: Arc<Runtime>,
    settings: ControlPlaneSettings,
    reports: Option<Arc<dyn ReportSink>>,
) {
    let mut backoff = BACKOFF_START;
    let mut attempts = 0u32;
    let mut last_error: Option<String> = None;
    loop {
        if rt.stopping.is_cancelled() {
            return;
        }
        attempts += 1;
        if !matches!(
            rt.channel_state(),
            ChannelState::Revoked { .. } | ChannelState::NotEnrolled { .. }
        ) {
            rt.set_channel_state(ChannelState::Connecting {
                attempts,
                last_error: last_error.clone(),
            });
        }
        let wait = match session(&rt, &settings, reports.as_deref()).await {
            SessionEnd::Ended(why) => {
                tracing::warn!(reason = %why, "the channel to the control plane ended; dialling again");
                attempts = 0;
                backoff = BACKOFF_START;
                last_error = Some(why);
                backoff
            }
            SessionEnd::Refused(pb::TunnelRefusal::Revoked, message) => {
                tracing::error!(%message, "the control plane revoked this agent's credential: enroll it again (connagent enroll)");
                rt.set_channel_state(ChannelState::Revoked { message });
                REVOKED_RETRY
            }
            SessionEnd::Refused(kind, message) => {
                tracing::warn!(refusal = ?kind, %message, "the control plane refused the channel");
                last_error = Some(message);
                backoff
            }
            SessionEnd::NotEnrolled(message) => {
                tracing::error!(%message, "no credential for the control plane: run connagent enroll");
                rt.set_channel_state(ChannelState::NotEnrolled { message });
                REVOKED_RETRY.min(BACKOFF_MAX * 5)
            }
            SessionEnd::Failed(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot open the channel to the control plane");
                last_error = Some(e);
                backoff
            }
        };
        let jittered = wait.mul_f64(0.8 + fastrand::f64() * 0.4);
        // A new enrollment (a new certificate file) ends the wait: it is dialled at once.
        let work = rt.snapshot().work_folder.clone();
        let stamp = credential_stamp(&work);
        let deadline = tokio::time::Instant::now() + jittered;
        loop {
            tokio::select! {
                _ = rt.stopping.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if credential_stamp(&work) != stamp {
                        tracing::info!("a new credential was stored: dialling the control plane now");
                        backoff = BACKOFF_START;
                        break;
                    }
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// When the enrollment's certificate file last changed.
fn credential_stamp(work: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(super::credential::folder(work).join(super::credential::CERTIFICATE_FILE))
        .and_then(|m| m.modified())
        .ok()
}

/// One connection: dial, hello, welcome, then serve until it ends.
async fn session(
    rt: &Arc<Runtime>,
    settings: &ControlPlaneSettings,
    reports: Option<&dyn ReportSink>,
) -> SessionEnd {
    let work = rt.snapshot().work_folder.clone();
    match dial::open(settings, &work, b"h2", true, HANDSHAKE).await {
        Ok(io) => tunnel(rt, settings, io, reports).await,
        Err(dial::OpenError::NotEnrolled(m)) => SessionEnd::NotEnrolled(m),
        Err(dial::OpenError::Failed(m)) => SessionEnd::Failed(m),
    }
}

/// What the agent tells the control plane when it connects.
fn hello(rt: &Runtime) -> pb::TunnelHello {
    let cs = rt.config_state();
    let store = rt.schemas.store();
    pb::TunnelHello {
        agent_identifier: cs.snapshot.agent.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        packages: rt
            .registry
            .all()
            .map(|p| super::convert::package_spec(p.info()))
            .collect(),
        configuration_fingerprint: cs.fingerprint.clone(),
        configuration_generation: cs.generation,
        schema_fingerprints: cs
            .snapshot
            .connections
            .iter()
            .filter(|c| c.served)
            .filter_map(|c| {
                let id = c.identifier.to_string();
                store.load(&id).fingerprint.map(|fp| (id, fp))
            })
            .collect(),
    }
}

async fn tunnel<IO>(
    rt: &Arc<Runtime>,
    settings: &ControlPlaneSettings,
    mut io: IO,
    reports: Option<&dyn ReportSink>,
) -> SessionEnd
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        io.write_all(MAGIC).await?;
        write_frame(&mut io, &hello(rt)).await?;
        read_frame::<_, pb::TunnelWelcome>(&mut io).await
    };
    let welcome = match tokio::time::timeout(HANDSHAKE, exchange).await {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            return SessionEnd::Failed(format!(
                "{} did not welcome the channel: {e}",
                settings.url
            ));
        }
        Err(_) => {
            return SessionEnd::Failed(format!(
                "{} did not answer the channel's hello within {HANDSHAKE:?}",
                settings.url
            ));
        }
    };
    if !welcome.accepted {
        let kind =
            pb::TunnelRefusal::try_from(welcome.refusal).unwrap_or(pb::TunnelRefusal::Unspecified);
        return SessionEnd::Refused(kind, welcome.message);
    }
    rt.set_channel_state(ChannelState::Connected {
        since: chrono::Utc::now(),
    });
    tracing::info!(url = %settings.url, "connected to the control plane: serving AgentService over the channel");
    report_wanted_schemas(rt, &welcome, reports);
    let routes = match super::server::routes(rt.clone()).await {
        Ok(r) => r,
        Err(e) => return SessionEnd::Failed(e.to_string()),
    };
    let half = settings.keepalive / 2;
    let service = hyper_util::service::TowerToHyperService::new(routes);
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(half))
        .keep_alive_timeout(half);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = rt.stopping.clone();
    let why = tokio::select! {
        r = &mut conn => match r {
            Ok(()) => "the control plane closed the channel".to_string(),
            Err(e) => format!("the channel broke: {e}"),
        },
        _ = stopping.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut conn).await;
            "the agent is stopping".to_string()
        }
    };
    SessionEnd::Ended(why)
}

/// Queues the schema reports the control plane asked for in its welcome.
fn report_wanted_schemas(
    rt: &Runtime,
    welcome: &pb::TunnelWelcome,
    reports: Option<&dyn ReportSink>,
) {
    let Some(reports) = reports else { return };
    let snapshot = rt.snapshot();
    for c in snapshot.connections.iter().filter(|c| c.served) {
        let wanted = welcome.all_schemas_wanted
            || welcome
                .schemas_wanted
                .iter()
                .any(|w| c.identifier.matches(w));
        if !wanted {
            continue;
        }
        let state = rt.schemas.store().load(c.identifier.as_str());
        if state.schema.is_none() && state.failure.is_none() {
            continue;
        }
        if let Err(e) = reports.report_schema(snapshot.agent.as_str(), &state) {
            tracing::error!(connection = %c.identifier, error = %e, "schema report not queued");
        }
    }
}
