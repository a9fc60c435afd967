//! The running agent: the configuration snapshot in force, the run registry, schema state, the
//! event bus, and the hook through which reports leave for the control plane. Used by the gRPC
//! service and the daemon; knows no protobuf.

pub mod managed;
pub mod reload;
pub mod runs;
pub mod scheduler;
pub mod schemas;
pub mod sdnotify;
pub mod secured;
pub mod state;
pub mod watch;

use crate::config::{Loaded, Snapshot};
use crate::packages::Registry;
use crate::schema::{SchemaState, SchemaStore};
use chrono::{DateTime, Utc};
use runs::{RunRecord, RunRegistry};
use serde::Serialize;
use state::ConnectionTimes;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The outcome of a configuration load or reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub at: DateTime<Utc>,
    pub applied: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Settings that changed but need a restart (their running value stays in force).
    pub restart_required: Vec<String>,
}

impl ReloadOutcome {
    pub fn rejected(at: DateTime<Utc>, errors: Vec<String>) -> Self {
        ReloadOutcome {
            at,
            applied: false,
            errors,
            warnings: Vec::new(),
            restart_required: Vec::new(),
        }
    }
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct ConfigState {
    pub snapshot: Arc<Snapshot>,
    pub generation: u64,
    /// A keyed hash of the files it was loaded from (see `ConnectionTimes::configuration_fingerprint`).
    pub fingerprint: String,
    pub loaded_at: DateTime<Utc>,
    pub last_reload: ReloadOutcome,
}

/// The status file under the Work folder (see [`Runtime::write_status`]).
pub const STATUS_FILE: &str = "State/agent-status.json";

/// How the outbound channel to the control plane stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ChannelState {
    /// No outbound channel (no control plane, or `ControlPlane:Mode` inbound).
    Off,
    /// Dialling, or waiting to dial again after `last_error`.
    Connecting {
        attempts: u32,
        last_error: Option<String>,
    },
    Connected {
        since: DateTime<Utc>,
    },
    /// The control plane revoked this agent's credential: `connagent enroll` again.
    Revoked {
        message: String,
    },
    /// No credential yet: `connagent enroll`.
    NotEnrolled {
        message: String,
    },
}

/// Something notable that happened, for `WatchEvents` and the log.
#[derive(Debug, Clone)]
pub enum Event {
    Configuration(ReloadOutcome),
    SchemaChanged(SchemaState),
    Run(RunRecord),
}

#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub at: DateTime<Utc>,
    pub event: Event,
}

/// A report that could not be queued durably; the caller may try again later.
#[derive(Debug, thiserror::Error)]
#[error("cannot queue a report in {path}: {source}")]
pub struct ReportError {
    pub path: String,
    pub source: std::io::Error,
}

/// Where reports to the control plane go (the gRPC client queues them on disk). `Ok` means the
/// report is queued durably; an error means it was not, and the caller may try again later.
pub trait ReportSink: Send + Sync {
    fn report_schema(&self, agent: &str, state: &SchemaState) -> Result<(), ReportError>;
    fn report_run(&self, agent: &str, run: &RunRecord) -> Result<(), ReportError>;
}

pub struct Runtime {
    pub started_at: DateTime<Utc>,
    started: Instant,
    pub registry: Arc<Registry>,
    config: RwLock<ConfigState>,
    pub runs: Arc<RunRegistry>,
    pub schemas: schemas::SchemaManager,
    pub times: ConnectionTimes,
    events: broadcast::Sender<TimedEvent>,
    reports: RwLock<Option<Arc<dyn ReportSink>>>,
    /// Cancelled when the agent starts stopping: no new run, no reload, no job is started.
    pub stopping: CancellationToken,
    /// Cancelled when the agent stops: background work ends, runs are cancelled.
    pub shutdown: CancellationToken,
    reload_lock: tokio::sync::Mutex<()>,
    /// The content hash of the configuration files as last loaded (applied or rejected).
    config_hash: std::sync::Mutex<String>,
    channel: RwLock<ChannelState>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Runtime {
    /// A runtime on a loaded configuration (which must have no errors).
    pub fn new(loaded: Loaded, registry: Arc<Registry>) -> Arc<Self> {
        let now = Utc::now();
        let snapshot = Arc::new(loaded.snapshot);
        let outcome = ReloadOutcome {
            at: now,
            applied: true,
            errors: Vec::new(),
            warnings: loaded
                .diagnostics
                .warnings()
                .map(|d| d.to_string())
                .collect(),
            restart_required: Vec::new(),
        };
        let times = ConnectionTimes::load(&snapshot.work_folder);
        times.update(&snapshot, now);
        let fingerprint = times.configuration_fingerprint(&loaded.inputs_hash);
        let runs = Arc::new(RunRegistry::load(
            &snapshot.work_folder,
            snapshot.max_task_batch_size,
        ));
        let (events, _) = broadcast::channel(1024);
        let config_hash = loaded.inputs_hash.clone();
        Arc::new(Runtime {
            started_at: now,
            started: Instant::now(),
            registry,
            schemas: schemas::SchemaManager::new(SchemaStore::new(&snapshot.work_folder)),
            config: RwLock::new(ConfigState {
                snapshot,
                generation: 1,
                fingerprint,
                loaded_at: now,
                last_reload: outcome,
            }),
            runs,
            times,
            events,
            reports: RwLock::new(None),
            stopping: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            config_hash: std::sync::Mutex::new(config_hash),
            channel: RwLock::new(ChannelState::Off),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.config).snapshot
    }

    pub fn config_state(&self) -> ConfigState {
        read(&self.config)
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TimedEvent> {
        self.events.subscribe()
    }

    pub fn emit(&self, event: Event) {
        match &event {
            Event::Configuration(o) => tracing::info!(
                applied = o.applied,
                errors = o.errors.len(),
                "configuration"
            ),
            Event::SchemaChanged(s) => tracing::info!(connection = %s.connection, "schema changed"),
            Event::Run(r) => {
                tracing::info!(run = %r.id, connection = %r.connection, state = ?r.state, "run")
            }
        }
        let _ = self.events.send(TimedEvent {
            at: Utc::now(),
            event,
        });
    }

    /// One line for systemd's status: connections served, runs in progress, the last reload.
    pub fn status_line(&self) -> String {
        let cs = self.config_state();
        let served = cs.snapshot.connections.iter().filter(|c| c.served).count();
        let runs = self.runs.in_progress().len();
        let at = cs.last_reload.at.format("%Y-%m-%d %H:%M:%S UTC");
        let reload = if cs.last_reload.applied {
            format!("configuration {} applied {at}", cs.generation)
        } else {
            let n = cs.last_reload.errors.len();
            format!(
                "last reload REJECTED {at} ({n} error{}), configuration {} in force",
                if n == 1 { "" } else { "s" },
                cs.generation
            )
        };
        let restart = if cs.last_reload.restart_required.is_empty() {
            ""
        } else {
            "; restart required"
        };
        let channel = match self.channel_state() {
            ChannelState::Off => String::new(),
            ChannelState::Connecting { attempts, .. } => {
                format!("; control plane: not connected ({attempts} attempts)")
            }
            ChannelState::Connected { since } => format!(
                "; control plane: connected since {}",
                since.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            ChannelState::Revoked { .. } => {
                "; control plane: CREDENTIAL REVOKED (connagent enroll again)".to_string()
            }
            ChannelState::NotEnrolled { .. } => {
                "; control plane: not enrolled (connagent enroll)".to_string()
            }
        };
        format!("{served} connections served, {runs} runs in progress, {reload}{restart}{channel}")
    }

    /// Sets how the outbound channel stands, and writes the status file at once (so that
    /// `connagent status` and the log agree with STATUS=).
    pub fn set_channel_state(&self, s: ChannelState) {
        let changed = {
            let mut c = self.channel.write().unwrap_or_else(|p| p.into_inner());
            let changed = *c != s;
            *c = s;
            changed
        };
        if changed {
            self.write_status(false);
        }
    }

    /// Writes `<Work>/State/agent-status.json`: this process, its status line and the channel's
    /// state; `stopped` when the daemon leaves. Read by `connagent status`.
    pub fn write_status(&self, stopped: bool) {
        // One writer at a time, reading the state under the same lock: two writers racing
        // could otherwise leave the older state in the file.
        static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.snapshot();
        let path = snapshot.work_folder.join(STATUS_FILE);
        let body = serde_json::json!({
            "pid": std::process::id(),
            "agent": snapshot.agent,
            "updated_at": Utc::now(),
            "stopped": stopped,
            "status": self.status_line(),
            "last_reload_applied": self.config_state().last_reload.applied,
            "channel": self.channel_state(),
        });
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::fsutil::write_atomically(&path, body.to_string().as_bytes()));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the status file");
        }
    }

    pub fn channel_state(&self) -> ChannelState {
        read(&self.channel)
    }

    pub fn set_report_sink(&self, sink: Arc<dyn ReportSink>) {
        *self.reports.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    pub fn report_sink(&self) -> Option<Arc<dyn ReportSink>> {
        read(&self.reports)
    }

    /// Discovers, in the background, the schema of every served connection that has none yet or
    /// whose configuration changed since its last discovery.
    pub fn start_background(self: &Arc<Self>) {
        let rt = self.clone();
        tokio::spawn(async move {
            let snapshot = rt.snapshot();
            for c in snapshot.connections.iter().filter(|c| c.served) {
                if rt.shutdown.is_cancelled() {
                    return;
                }
                if !matches!(c.settings, crate::config::SettingsState::Ok(_)) {
                    continue;
                }
                let stored = rt.schemas.store().load(c.identifier.as_str());
                let changed = rt
                    .times
                    .get(c.identifier.as_str())
                    .is_some_and(|t| stored.refreshed_at.is_none_or(|r| t.last_modified > r));
                let never = stored.refreshed_at.is_none() && stored.failure.is_none();
                if never || changed {
                    let _ = rt.schemas.refresh(&rt, c.identifier.as_str()).await;
                }
            }
        });
    }
}
