//! Export runs: which connections to export, running each package into an atomic CSV sink, and
//! what happened. This module does not know which technology it drives.

pub mod published;
pub mod sink;

use crate::config::{Connection, Deactivation, Ident, SettingsState, Snapshot};
use crate::packages::{ExportMode, ExportOutcome, FailureClass, PackageError, RowSink};
use serde::Serialize;
use sink::{CsvOutput, Progress};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What to export.
#[derive(Debug, Clone)]
pub enum Target {
    Task(String),
    Connection(String),
    /// Every connection served here whose export is enabled.
    All,
}

/// One planned export: a connection, the task that asked for it (if any), and the mode.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub connection: Ident,
    pub task: Option<Ident>,
    pub mode: ExportMode,
    pub continue_on_error: bool,
}

/// Why a request cannot be planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// No such task or connection.
    NotFound,
    /// It exists but cannot run here (another agent, switched off, unusable settings).
    Precondition,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub kind: PlanErrorKind,
    pub message: String,
}

fn plan_error(message: String) -> PlanError {
    PlanError {
        kind: PlanErrorKind::Precondition,
        message,
    }
}

fn not_found(message: String) -> PlanError {
    PlanError {
        kind: PlanErrorKind::NotFound,
        message,
    }
}

/// Why a connection cannot be exported here, if it cannot.
pub fn not_exportable(snapshot: &Snapshot, c: &Connection) -> Option<String> {
    if !c.served {
        return Some(format!(
            "connection {} belongs to a connector served by another agent, not {}",
            c.identifier, snapshot.agent
        ));
    }
    if c.deactivation == Deactivation::Export {
        return Some(format!(
            "the export of connection {} is switched off (DeactivationExportFulfill=\"Export\")",
            c.identifier
        ));
    }
    if let Some(conn) = snapshot
        .connectors
        .iter()
        .find(|k| k.identifier == c.connector)
        && conn.is_deactivated
    {
        return Some(format!(
            "connector {} of connection {} is deactivated (IsDeactivated=\"true\")",
            conn.identifier, c.identifier
        ));
    }
    match &c.settings {
        SettingsState::Ok(_) => None,
        SettingsState::Missing => Some(format!(
            "connection {} has no settings section Connections:{} in {}",
            c.identifier,
            c.identifier,
            snapshot.settings_file.display()
        )),
        SettingsState::Invalid => Some(format!(
            "the settings of connection {} are invalid: run `connagent validate`",
            c.identifier
        )),
    }
}

/// Turns a request into runs. `complete` forces complete mode; otherwise a task's
/// `IgnoreCookieFile` decides, and connections run incrementally.
pub fn plan(
    snapshot: &Snapshot,
    target: &Target,
    complete: bool,
) -> Result<Vec<PlannedRun>, PlanError> {
    let mode_for = |ignore_cookies: bool| {
        if complete || ignore_cookies {
            ExportMode::Complete
        } else {
            ExportMode::Incremental
        }
    };
    let lookup = |id: &str| {
        snapshot.connection(id).ok_or_else(|| {
            not_found(format!(
                "there is no connection {id:?}; known connections: {}",
                snapshot
                    .connections
                    .iter()
                    .map(|c| c.identifier.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    match target {
        Target::Task(id) => {
            let t = snapshot.export_task(id).ok_or_else(|| {
                not_found(format!(
                    "there is no export task {id:?}; known export tasks: {}",
                    snapshot
                        .export_tasks
                        .iter()
                        .map(|t| t.identifier.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if !t.served {
                return Err(plan_error(format!(
                    "export task {} runs on agent {}, not on this agent ({})",
                    t.identifier, t.agent, snapshot.agent
                )));
            }
            let c = lookup(t.connection.as_str())?;
            if let Some(why) = not_exportable(snapshot, c) {
                return Err(plan_error(why));
            }
            Ok(vec![PlannedRun {
                connection: c.identifier.clone(),
                task: Some(t.identifier.clone()),
                mode: mode_for(t.ignore_cookie_file),
                continue_on_error: t.continue_on_error,
            }])
        }
        Target::Connection(id) => {
            let c = lookup(id)?;
            if let Some(why) = not_exportable(snapshot, c) {
                return Err(plan_error(why));
            }
            Ok(vec![PlannedRun {
                connection: c.identifier.clone(),
                task: None,
                mode: mode_for(false),
                continue_on_error: false,
            }])
        }
        Target::All => {
            let runs: Vec<PlannedRun> = snapshot
                .connections
                .iter()
                .filter(|c| not_exportable(snapshot, c).is_none())
                .map(|c| PlannedRun {
                    connection: c.identifier.clone(),
                    task: None,
                    mode: mode_for(false),
                    continue_on_error: true,
                })
                .collect();
            if runs.is_empty() {
                return Err(plan_error(format!(
                    "no connection can be exported by this agent ({}): see `connagent connections`",
                    snapshot.agent
                )));
            }
            Ok(runs)
        }
    }
}

/// A published connection table.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedTable {
    pub file: String,
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RunOutcome {
    Published {
        tables: Vec<PublishedTable>,
    },
    NotRun {
        reason: String,
    },
    Failed {
        class: FailureClass,
        message: String,
        /// Tables replaced before the failure (only when publishing itself failed midway).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        published: Vec<PublishedTable>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub connection: String,
    pub task: Option<String>,
    pub mode: ExportMode,
    #[serde(flatten)]
    pub outcome: RunOutcome,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, RunOutcome::Failed { .. })
    }
}

fn published_table(dir: &std::path::Path, t: sink::FinishedTable) -> PublishedTable {
    PublishedTable {
        path: dir.join(&t.stats.file).display().to_string(),
        file: t.stats.file,
        rows: t.stats.rows,
        bytes: t.stats.bytes,
        sha256: t.stats.sha256,
        duration: t.duration,
    }
}

/// Removes the partial files of the output folder that no running export owns (a connection
/// whose lock is free). For the daemon at start: what a crash left.
pub fn clean_stale_partials(snapshot: &Snapshot) -> Vec<std::path::PathBuf> {
    let dir = snapshot.export_output_folder();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(table) = crate::table_name::TableName::parse_partial(&name) else {
            continue;
        };
        // Held by a running export (this process or another): not stale.
        let Ok(_lock) = lock_connection(snapshot, &Ident::new(table.connection())) else {
            continue;
        };
        if std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Takes the connection's lock file `<Work>/Locks/<id>.lock` (lower-cased: identifiers ignore case).
fn lock_connection(snapshot: &Snapshot, id: &Ident) -> Result<std::fs::File, String> {
    let dir = snapshot.work_folder.join("Locks");
    let path = dir.join(format!("{}.lock", id.key()));
    let file = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "connection {id} is being exported by another run (lock {}); try again when it has finished",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Runs one connection's export into its output folder. Never panics through: a package panic is
/// a failed run. On any failure or cancel, the previous files stay and no partial file remains.
pub async fn run_one(
    snapshot: &Snapshot,
    run: &PlannedRun,
    cancel: &CancellationToken,
    progress: Arc<Progress>,
) -> RunReport {
    let started = Instant::now();
    let report = |outcome| RunReport {
        connection: run.connection.to_string(),
        task: run.task.as_ref().map(Ident::to_string),
        mode: run.mode,
        outcome,
        duration: started.elapsed(),
    };
    let failed = |class, message: String| RunOutcome::Failed {
        class,
        message,
        published: Vec::new(),
    };
    let Some(conn) = snapshot.connection(run.connection.as_str()) else {
        return report(failed(
            FailureClass::Config,
            format!("connection {} is no longer configured", run.connection),
        ));
    };
    if let Some(why) = not_exportable(snapshot, conn) {
        return report(failed(FailureClass::Config, why));
    }
    let run_cancel = cancel.child_token();
    let target = match crate::invoke::target(snapshot, conn.identifier.as_str(), run_cancel.clone())
    {
        Ok(t) => t,
        Err(e) => return report(failed(FailureClass::Config, e.to_string())),
    };
    let out_dir = snapshot.export_output_folder();
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return report(failed(
            FailureClass::System,
            format!("cannot create the output folder {}: {e}", out_dir.display()),
        ));
    }
    // One run per connection at a time, across processes: the lock is held until the run has
    // published or abandoned its files.
    let _lock = match lock_connection(snapshot, &conn.identifier) {
        Ok(l) => l,
        Err(message) => return report(failed(FailureClass::System, message)),
    };
    for p in CsvOutput::remove_stale_partials(&out_dir, conn.identifier.as_str()) {
        tracing::info!(file = %p.display(), "removed a partial file left by an interrupted export");
    }
    let encoding = target.cref.settings.output_encoding();
    let output = Arc::new(
        CsvOutput::new(
            &out_dir,
            conn.identifier.as_str(),
            run_cancel.clone(),
            progress,
        )
        .with_encoding(encoding),
    );
    let sink = RowSink::new(output.clone());
    let mode = run.mode;
    // In a task of its own (a panic fails this run only), the error redacted.
    let result = target
        .call("export", move |p, c| async move {
            p.export(&c, mode, sink).await
        })
        .await;
    let outcome = match result {
        // A cancel that came while the last rows were written still means "do not publish".
        Ok(ExportOutcome::Exported) if run_cancel.is_cancelled() => {
            failed(FailureClass::Cancelled, PackageError::cancelled().message)
        }
        Ok(ExportOutcome::Exported) => {
            let out = output.clone();
            match tokio::task::spawn_blocking(move || out.publish()).await {
                Ok(Ok(tables)) => RunOutcome::Published {
                    tables: tables
                        .into_iter()
                        .map(|t| published_table(&out_dir, t))
                        .collect(),
                },
                Ok(Err(e)) => RunOutcome::Failed {
                    class: FailureClass::System,
                    message: e.error.to_string(),
                    published: e
                        .published
                        .into_iter()
                        .map(|t| published_table(&out_dir, t))
                        .collect(),
                },
                Err(e) => failed(FailureClass::System, format!("publishing failed: {e}")),
            }
        }
        Ok(ExportOutcome::NotRun { reason }) => RunOutcome::NotRun { reason },
        Err(e) => {
            let class = if cancel.is_cancelled() {
                FailureClass::Cancelled
            } else {
                e.class
            };
            failed(class, e.message)
        }
    };
    if !matches!(outcome, RunOutcome::Published { .. }) {
        run_cancel.cancel();
        let out = output.clone();
        let _ = tokio::task::spawn_blocking(move || out.abandon()).await;
    }
    report(outcome)
}
