//! Export runs started by the gRPC service (and the scheduler later): queued, limited to
//! `Jobs:MaxTaskBatchSize` at once, one per connection, observable as events, cancellable, and
//! recorded under `<Work>/Runs/` so that recent runs survive a restart.

use super::{Event, Runtime};
use crate::export::{self, PlanError, RunOutcome, Target, sink::Progress};
use crate::packages::{ExportMode, FailureClass};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Runs kept in memory and on disk.
pub const KEEP_RUNS: usize = 500;
/// How often a running export reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    NotRun,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Queued | RunState::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub connection: String,
    pub task: Option<String>,
    pub mode: ExportMode,
    pub state: RunState,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tables: Vec<TableRecord>,
    pub failure_class: Option<FailureClass>,
    pub error: Option<String>,
    pub reason: Option<String>,
    pub started_by: String,
}

/// One event of one run, in order.
#[derive(Debug, Clone)]
pub enum RunEventKind {
    Accepted(RunRecord),
    TableStarted(String),
    Progress { file: String, rows: u64, bytes: u64 },
    TablePublished(TableRecord),
    Finished(RunRecord),
    Failed(RunRecord),
}

#[derive(Debug, Clone)]
pub struct RunEvent {
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub kind: RunEventKind,
}

#[derive(Debug, Clone)]
pub enum StartError {
    Plan(PlanError),
    AlreadyRunning { run_id: String, connection: String },
    ShuttingDown,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Plan(e) => e.fmt(f),
            StartError::AlreadyRunning { run_id, connection } => write!(
                f,
                "connection {connection} is already being exported by run {run_id}; wait for it or cancel it"
            ),
            StartError::ShuttingDown => f.write_str("the agent is stopping and accepts no new run"),
        }
    }
}

struct ActiveRun {
    connection_key: String,
    cancel: CancellationToken,
    events: broadcast::Sender<RunEvent>,
}

struct Inner {
    /// Oldest first.
    records: VecDeque<RunRecord>,
    active: HashMap<String, ActiveRun>,
    /// Runs found interrupted at start, to report once a report sink is there.
    interrupted: Vec<RunRecord>,
}

pub struct RunRegistry {
    dir: PathBuf,
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    counter: AtomicU64,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunRegistry {
    /// Loads the recorded runs; a run recorded as queued or running was interrupted by a stop and
    /// is recorded as failed.
    pub fn load(work: &Path, max_parallel: usize) -> Self {
        let dir = work.join("Runs");
        let mut records: Vec<RunRecord> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| {
                        let bytes = crate::fsutil::read_limited(
                            &e.path(),
                            crate::fsutil::limits::STATE_FILE,
                            "a run record",
                        )
                        .ok()?;
                        serde_json::from_slice(&bytes).ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.sort_by(|a: &RunRecord, b| a.queued_at.cmp(&b.queued_at).then(a.id.cmp(&b.id)));
        let registry = RunRegistry {
            dir,
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                active: HashMap::new(),
                interrupted: Vec::new(),
            }),
            slots: Arc::new(Semaphore::new(max_parallel.max(1))),
            counter: AtomicU64::new(0),
        };
        for mut r in records {
            if r.state.is_active() {
                r.state = RunState::Failed;
                r.failure_class = Some(FailureClass::System);
                r.error = Some("interrupted: the agent stopped before the run ended".into());
                r.finished_at.get_or_insert_with(Utc::now);
                registry.persist(&r);
                lock(&registry.inner).interrupted.push(r.clone());
            }
            lock(&registry.inner).records.push_back(r);
        }
        registry.trim();
        registry
    }

    fn persist(&self, r: &RunRecord) {
        let path = self.dir.join(format!("{}.json", r.id));
        let res = std::fs::create_dir_all(&self.dir).and_then(|()| {
            crate::fsutil::write_atomically(
                &path,
                &serde_json::to_vec_pretty(r).unwrap_or_default(),
            )
        });
        if let Err(e) = res {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the run");
        }
    }

    fn trim(&self) {
        let mut inner = lock(&self.inner);
        while inner.records.len() > KEEP_RUNS {
            let Some(pos) = inner.records.iter().position(|r| !r.state.is_active()) else {
                break;
            };
            if let Some(old) = inner.records.remove(pos) {
                let _ = std::fs::remove_file(self.dir.join(format!("{}.json", old.id)));
            }
        }
    }

    fn update(&self, r: &RunRecord) {
        self.persist(r);
        let mut inner = lock(&self.inner);
        if let Some(slot) = inner.records.iter_mut().find(|x| x.id == r.id) {
            *slot = r.clone();
        }
    }

    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{n:03}{:04x}",
            Utc::now().format("%Y%m%dT%H%M%S%3f"),
            fastrand::u16(..)
        )
    }

    pub fn get(&self, id: &str) -> Option<RunRecord> {
        lock(&self.inner)
            .records
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Newest first.
    pub fn list(&self, connection: Option<&str>, limit: usize) -> Vec<RunRecord> {
        lock(&self.inner)
            .records
            .iter()
            .rev()
            .filter(|r| connection.is_none_or(|c| r.connection.eq_ignore_ascii_case(c)))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn in_progress(&self) -> Vec<RunRecord> {
        lock(&self.inner)
            .records
            .iter()
            .filter(|r| r.state.is_active())
            .cloned()
            .collect()
    }

    /// The active run of a task, if any.
    pub fn running_for_task(&self, task: &str) -> Option<String> {
        lock(&self.inner)
            .records
            .iter()
            .find(|r| {
                r.state.is_active()
                    && r.task
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(task))
            })
            .map(|r| r.id.clone())
    }

    /// Asks a run to stop. `None` when there is no such run.
    pub fn cancel(&self, id: &str) -> Option<RunRecord> {
        let inner = lock(&self.inner);
        if let Some(a) = inner.active.get(id) {
            a.cancel.cancel();
        }
        inner.records.iter().find(|r| r.id == id).cloned()
    }

    /// The runs found interrupted when the agent started (each returned once).
    pub fn take_interrupted(&self) -> Vec<RunRecord> {
        std::mem::take(&mut lock(&self.inner).interrupted)
    }

    /// Events of an active run from now on (`None` when it is not running).
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<RunEvent>> {
        lock(&self.inner)
            .active
            .get(id)
            .map(|a| a.events.subscribe())
    }

    /// Whether any run is queued or running.
    pub fn any_active(&self) -> bool {
        !lock(&self.inner).active.is_empty()
    }

    /// Cancels every active run (at shutdown).
    pub fn cancel_all(&self) {
        for a in lock(&self.inner).active.values() {
            a.cancel.cancel();
        }
    }
}

fn table_record(t: &export::PublishedTable) -> TableRecord {
    TableRecord {
        file: t.file.clone(),
        rows: t.rows,
        bytes: t.bytes,
        sha256: t.sha256.clone(),
        duration_seconds: t.duration.as_secs_f64(),
    }
}

impl Runtime {
    /// Starts an export. Returns the queued run and a receiver of its events (subscribed before
    /// anything happens, so no event is missed).
    pub fn start_export(
        self: &Arc<Self>,
        target: Target,
        complete: bool,
        started_by: &str,
    ) -> Result<(RunRecord, broadcast::Receiver<RunEvent>), StartError> {
        self.start_export_on(self.snapshot(), target, complete, started_by)
    }

    /// `start_export` on a given configuration: the run uses it from start to end, even if a
    /// reload happens while it waits for a slot.
    pub fn start_export_on(
        self: &Arc<Self>,
        snapshot: Arc<crate::config::Snapshot>,
        target: Target,
        complete: bool,
        started_by: &str,
    ) -> Result<(RunRecord, broadcast::Receiver<RunEvent>), StartError> {
        if self.stopping.is_cancelled() {
            return Err(StartError::ShuttingDown);
        }
        let planned = export::plan(&snapshot, &target, complete).map_err(StartError::Plan)?;
        let Some(run) = planned.into_iter().next() else {
            return Err(StartError::Plan(PlanError {
                kind: export::PlanErrorKind::NotFound,
                message: "nothing to export".into(),
            }));
        };
        let registry = &self.runs;
        let (tx, rx) = broadcast::channel(1024);
        let cancel = self.shutdown.child_token();
        let record = {
            let mut inner = lock(&registry.inner);
            let key = run.connection.key();
            if let Some((id, _)) = inner.active.iter().find(|(_, a)| a.connection_key == key) {
                return Err(StartError::AlreadyRunning {
                    run_id: id.clone(),
                    connection: run.connection.to_string(),
                });
            }
            let record = RunRecord {
                id: registry.new_id(),
                connection: run.connection.to_string(),
                task: run.task.as_ref().map(|t| t.to_string()),
                mode: run.mode,
                state: RunState::Queued,
                queued_at: Utc::now(),
                started_at: None,
                finished_at: None,
                tables: Vec::new(),
                failure_class: None,
                error: None,
                reason: None,
                started_by: started_by.to_string(),
            };
            inner.active.insert(
                record.id.clone(),
                ActiveRun {
                    connection_key: key,
                    cancel: cancel.clone(),
                    events: tx.clone(),
                },
            );
            inner.records.push_back(record.clone());
            record
        };
        registry.persist(&record);
        registry.trim();
        let send = EventSender {
            tx: tx.clone(),
            run_id: record.id.clone(),
        };
        send.send(RunEventKind::Accepted(record.clone()));
        self.emit(Event::Run(record.clone()));
        tokio::spawn(execute(
            self.clone(),
            snapshot,
            run,
            record.clone(),
            cancel,
            send,
        ));
        Ok((record, rx))
    }
}

/// Sends one run's events to its watchers.
#[derive(Clone)]
struct EventSender {
    tx: broadcast::Sender<RunEvent>,
    run_id: String,
}

impl EventSender {
    fn send(&self, kind: RunEventKind) {
        let _ = self.tx.send(RunEvent {
            run_id: self.run_id.clone(),
            at: Utc::now(),
            kind,
        });
    }
}

/// A queued run: waits for a slot, exports, records the outcome, tells the watchers and the
/// control plane.
async fn execute(
    rt: Arc<Runtime>,
    snapshot: Arc<crate::config::Snapshot>,
    run: export::PlannedRun,
    mut record: RunRecord,
    cancel: CancellationToken,
    send: EventSender,
) {
    let registry = rt.runs.clone();
    let permit = tokio::select! {
        p = registry.slots.clone().acquire_owned() => p.ok(),
        _ = cancel.cancelled() => None,
    };
    if permit.is_none() || rt.stopping.is_cancelled() {
        record.state = RunState::Cancelled;
        record.failure_class = Some(FailureClass::Cancelled);
        record.error = Some(if permit.is_none() {
            "cancelled before it started".into()
        } else {
            "not started: the agent is stopping".into()
        });
    } else {
        record.state = RunState::Running;
        record.started_at = Some(Utc::now());
        registry.update(&record);
        rt.emit(Event::Run(record.clone()));
        let started_hook = {
            let send = send.clone();
            move |file: &str| send.send(RunEventKind::TableStarted(file.to_string()))
        };
        let progress = Arc::new(Progress {
            on_table_started: Some(Box::new(started_hook)),
            ..Progress::default()
        });
        let ticker_stop = CancellationToken::new();
        let ticker = spawn_ticker(progress.clone(), send.clone(), ticker_stop.clone());
        let report = export::run_one(&snapshot, &run, &cancel, progress).await;
        ticker_stop.cancel();
        let _ = ticker.await;
        drop(permit);
        record_outcome(&mut record, report.outcome, &send);
    }
    record.finished_at = Some(Utc::now());
    registry.update(&record);
    lock(&registry.inner).active.remove(&record.id);
    if matches!(record.state, RunState::Succeeded | RunState::NotRun) {
        send.send(RunEventKind::Finished(record.clone()));
    } else {
        send.send(RunEventKind::Failed(record.clone()));
    }
    rt.emit(Event::Run(record.clone()));
    if let Some(sink) = rt.report_sink()
        && let Err(e) = sink.report_run(rt.snapshot().agent.as_str(), &record)
    {
        tracing::error!(run = %record.id, error = %e, "run report not queued");
    }
}

/// A progress event every [`PROGRESS_EVERY`], changed or not (a silent stream would look dead),
/// until `stop`.
fn spawn_ticker(
    progress: Arc<Progress>,
    send: EventSender,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(PROGRESS_EVERY) => {}
            }
            let file = progress.table.lock().map(|t| t.clone()).unwrap_or_default();
            send.send(RunEventKind::Progress {
                file,
                rows: progress.rows.load(Ordering::Relaxed),
                bytes: progress.bytes.load(Ordering::Relaxed),
            });
        }
    })
}

/// A run's outcome into its record, each published table told to the watchers.
fn record_outcome(record: &mut RunRecord, outcome: RunOutcome, send: &EventSender) {
    let publish = |record: &mut RunRecord, tables: &[export::PublishedTable]| {
        for t in tables {
            let rec = table_record(t);
            send.send(RunEventKind::TablePublished(rec.clone()));
            record.tables.push(rec);
        }
    };
    match outcome {
        RunOutcome::Published { tables } => {
            publish(record, &tables);
            record.state = RunState::Succeeded;
        }
        RunOutcome::NotRun { reason } => {
            record.state = RunState::NotRun;
            record.reason = Some(reason);
        }
        RunOutcome::Failed {
            class,
            message,
            published,
        } => {
            record.state = if class == FailureClass::Cancelled {
                RunState::Cancelled
            } else {
                RunState::Failed
            };
            record.failure_class = Some(class);
            // Tables already renamed before a failed publish are real outputs.
            publish(record, &published);
            record.error = Some(message);
        }
    }
}
