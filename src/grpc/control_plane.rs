//! The control-plane client: heartbeats, and schema and run reports queued on disk under
//! `<Work>/Outbox/` and delivered in order once the server answers, with capped exponential
//! backoff and jitter. HTTP/2 keepalive notices dead connections.

use super::convert;
use super::proto as pb;
use super::proto::control_plane_service_client::ControlPlaneServiceClient;
use crate::config::ControlPlaneSettings;
use crate::runtime::runs::RunRecord;
use crate::runtime::{ReportError, ReportSink, Runtime};
use crate::schema::SchemaState;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::transport::Channel;

const KIND_SCHEMA: u8 = 1;
const KIND_RUN: u8 = 2;
/// Backoff between delivery attempts: from 1 s, doubling, at most 60 s, ±20 % jitter.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct ControlPlaneClient {
    work: PathBuf,
    outbox: PathBuf,
    sequence_file: PathBuf,
    sequence: Mutex<u64>,
    notify: Notify,
    settings: ControlPlaneSettings,
}

/// Why a queued report was not delivered.
enum DeliveryError {
    /// The file cannot be read or decoded here: retrying cannot help.
    Unreadable(String),
    /// The server did not take it (unreachable, or an error status): retried with backoff.
    Server(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ControlPlane:Url {0:?} is not a valid endpoint: {1}")]
    Url(String, String),
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid TLS configuration for the control plane: {0}")]
    Tls(String),
}

impl ControlPlaneClient {
    pub fn new(work: &Path, settings: ControlPlaneSettings) -> Arc<Self> {
        let outbox = work.join("Outbox");
        let sequence_file = work.join("State").join("report-sequence");
        // The next number follows both the saved one and any report still queued, so that a lost
        // or stale sequence file can never make a new report overwrite a waiting one.
        let saved = std::fs::read_to_string(&sequence_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let queued_max = std::fs::read_dir(&outbox)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.split('.').next()?.parse::<u64>().ok()
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let last = saved.max(queued_max);
        Arc::new(ControlPlaneClient {
            work: work.to_path_buf(),
            outbox,
            sequence_file,
            sequence: Mutex::new(last),
            notify: Notify::new(),
            settings,
        })
    }

    /// Reports waiting for delivery, oldest first.
    pub fn queued(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.outbox)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "report"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Numbers and queues a report, under one lock: files appear in sequence order, so the
    /// sender never sees report N+1 before report N.
    fn enqueue(&self, kind: u8, body: impl FnOnce(u64) -> Vec<u8>) -> Result<(), ReportError> {
        let mut seq = self.sequence.lock().unwrap_or_else(|p| p.into_inner());
        let next = *seq + 1;
        let path = self.outbox.join(format!("{next:020}.report"));
        let mut bytes = vec![kind];
        bytes.extend(body(next));
        std::fs::create_dir_all(&self.outbox)
            .and_then(|()| crate::fsutil::write_atomically(&path, &bytes))
            .map_err(|source| ReportError {
                path: path.display().to_string(),
                source,
            })?;
        *seq = next;
        // The queued files also carry the number; the saved counter only helps after the outbox
        // has been emptied.
        let saved = self
            .sequence_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                crate::fsutil::write_atomically(&self.sequence_file, next.to_string().as_bytes())
            });
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save the report sequence");
        }
        drop(seq);
        self.notify.notify_one();
        Ok(())
    }

    fn read_file(path: &Path) -> Result<Vec<u8>, ClientError> {
        crate::fsutil::read_limited(path, crate::fsutil::limits::PEM_FILE, "a PEM file").map_err(
            |e| {
                ClientError::Read(
                    path.display().to_string(),
                    std::io::Error::other(e.to_string()),
                )
            },
        )
    }

    /// The channel to the control plane (connected lazily, reconnected as needed).
    pub fn channel(&self) -> Result<Channel, ClientError> {
        super::dial::grpc_channel(&self.settings, &self.work)
            .map_err(|e| ClientError::Url(self.settings.url.clone(), e))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = &self.settings.token {
            // Built in a buffer that never moves and is wiped; the header value is tonic's.
            let mut text = zeroize::Zeroizing::new(String::with_capacity(7 + token.expose().len()));
            text.push_str("Bearer ");
            text.push_str(token.expose());
            if let Ok(v) = text.parse() {
                req.metadata_mut().insert("authorization", v);
            }
        }
        req
    }

    async fn deliver(
        &self,
        client: &mut ControlPlaneServiceClient<Channel>,
        path: &Path,
    ) -> Result<(), DeliveryError> {
        let local = DeliveryError::Unreadable;
        let bytes = Self::read_file(path).map_err(|e| local(e.to_string()))?;
        let (kind, body) = bytes
            .split_first()
            .ok_or_else(|| local("empty report file".into()))?;
        let result = match *kind {
            KIND_SCHEMA => {
                let m = pb::SchemaReport::decode(body).map_err(|e| local(e.to_string()))?;
                client.report_schema(self.request(m)).await.map(|_| ())
            }
            KIND_RUN => {
                let m = pb::RunReport::decode(body).map_err(|e| local(e.to_string()))?;
                client.report_run(self.request(m)).await.map(|_| ())
            }
            other => return Err(local(format!("unknown report kind {other}"))),
        };
        result.map_err(|s| DeliveryError::Server(format!("{:?}: {}", s.code(), s.message())))
    }

    /// Delivers queued reports in order, and sends heartbeats, until the agent stops.
    pub fn start(self: &Arc<Self>, rt: Arc<Runtime>) -> Result<(), ClientError> {
        let channel = self.channel()?;
        let me = self.clone();
        let shutdown = rt.shutdown.clone();
        let mut client = ControlPlaneServiceClient::new(channel.clone());
        tokio::spawn(async move {
            let mut backoff = BACKOFF_START;
            loop {
                let next = me.queued().into_iter().next();
                let Some(path) = next else {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = me.notify.notified() => continue,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                };
                match me.deliver(&mut client, &path).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&path);
                        backoff = BACKOFF_START;
                    }
                    Err(DeliveryError::Unreadable(e)) => {
                        // Only a file this agent cannot read is set aside; the server's own
                        // errors are retried.
                        tracing::error!(file = %path.display(), error = %e, "setting aside an unreadable queued report");
                        let _ = std::fs::rename(&path, path.with_extension("unreadable"));
                    }
                    Err(DeliveryError::Server(e)) => {
                        let jitter = 0.8 + fastrand::f64() * 0.4;
                        let wait = backoff.mul_f64(jitter);
                        tracing::warn!(error = %e, retry_in = ?wait, queued = me.queued().len(), "control plane unreachable; reports stay queued");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        });
        let me = self.clone();
        let shutdown = rt.shutdown.clone();
        let mut client = ControlPlaneServiceClient::new(channel);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.settings.heartbeat);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let cs = rt.config_state();
                let hb = pb::HeartbeatRequest {
                    agent_identifier: cs.snapshot.agent.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    at: Some(convert::ts(chrono::Utc::now())),
                    configuration_generation: cs.generation,
                    configuration_ok: cs.last_reload.applied,
                    connections_served: u32::try_from(
                        cs.snapshot.connections.iter().filter(|c| c.served).count(),
                    )
                    .unwrap_or(u32::MAX),
                    runs_in_progress: u32::try_from(rt.runs.in_progress().len())
                        .unwrap_or(u32::MAX),
                    queued_reports: u32::try_from(me.queued().len()).unwrap_or(u32::MAX),
                };
                if let Err(s) = client.heartbeat(me.request(hb)).await {
                    tracing::debug!(code = ?s.code(), "heartbeat not delivered: {}", s.message());
                }
            }
        });
        Ok(())
    }
}

impl ControlPlaneClient {
    /// Delivers what is queued, in order, for at most `within`; returns how many stay queued.
    pub async fn flush(&self, within: Duration) -> usize {
        let Ok(channel) = self.channel() else {
            return self.queued().len();
        };
        let mut client = ControlPlaneServiceClient::new(channel);
        let deadline = tokio::time::Instant::now() + within;
        while let Some(path) = self.queued().into_iter().next() {
            match tokio::time::timeout_at(deadline, self.deliver(&mut client, &path)).await {
                Ok(Ok(())) => {
                    let _ = std::fs::remove_file(&path);
                }
                Ok(Err(DeliveryError::Unreadable(_))) => {
                    let _ = std::fs::rename(&path, path.with_extension("unreadable"));
                }
                Ok(Err(DeliveryError::Server(_))) | Err(_) => break,
            }
        }
        self.queued().len()
    }
}

impl ReportSink for ControlPlaneClient {
    fn report_schema(&self, agent: &str, state: &SchemaState) -> Result<(), ReportError> {
        use pb::schema_report::Outcome;
        let outcome = match (&state.failure, &state.schema) {
            (Some(f), _) if state.refreshed_at.is_none_or(|ok| f.at > ok) => {
                Outcome::Failure(pb::SchemaFailure {
                    at: Some(convert::ts(f.at)),
                    class: f.class.clone(),
                    message: f.message.clone(),
                })
            }
            (_, Some(s)) => Outcome::Schema(convert::schema(s)),
            _ => return Ok(()),
        };
        let fingerprint = match &outcome {
            Outcome::Schema(s) => s.fingerprint.clone(),
            Outcome::Failure(_) => String::new(),
        };
        self.enqueue(KIND_SCHEMA, |sequence| {
            pb::SchemaReport {
                agent_identifier: agent.to_string(),
                sequence,
                connection: state.connection.clone(),
                outcome: Some(outcome),
                fingerprint,
            }
            .encode_to_vec()
        })
    }

    fn report_run(&self, agent: &str, run: &RunRecord) -> Result<(), ReportError> {
        self.enqueue(KIND_RUN, |sequence| {
            pb::RunReport {
                agent_identifier: agent.to_string(),
                sequence,
                run: Some(convert::run(run)),
            }
            .encode_to_vec()
        })
    }
}
