//! The scheduler: fires each `<Job>` of this agent at its cron times (a job with no `Agent` is
//! the server's and is not scheduled here). Steps without a Level run one after the other in
//! document order, then each explicit Level with its steps together; a failed task stops the job
//! unless it has `ContinueOnError`. A job never runs twice at once, and occurrences missed while
//! the agent was down or busy are not replayed: the next due time is taken.

use super::Runtime;
use super::runs::{RunEventKind, RunState};
use crate::config::{CronSchedule, Job};
use crate::export::Target;
use chrono::{DateTime, Local, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often due times are checked.
pub const TICK: Duration = Duration::from_millis(250);

fn next_after(s: &CronSchedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if s.utc {
        s.cron.find_next_occurrence(&after, false).ok()
    } else {
        s.cron
            .find_next_occurrence(&after.with_timezone(&Local), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

pub fn spawn(rt: Arc<Runtime>) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    tokio::spawn(async move {
        // Job key → (expression, next due time).
        let mut due: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = rt.stopping.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snapshot = rt.snapshot();
            if !snapshot.daemon.scheduler {
                // Scheduler:Enabled is false (it may change by reload).
                due.clear();
                continue;
            }
            let now = Utc::now();
            let mut seen = HashSet::new();
            for job in snapshot
                .jobs
                .iter()
                .filter(|j| j.agent.as_ref().is_some_and(|a| a == &snapshot.agent))
            {
                let Some(schedule) = &job.schedule else {
                    continue;
                };
                let key = job.identifier.key();
                seen.insert(key.clone());
                // The expression and the time zone: a change of either reschedules.
                let sched_key = format!("{}|{}", schedule.expression, schedule.utc);
                let entry = due
                    .get(&key)
                    .filter(|(expr, _)| expr == &sched_key)
                    .cloned();
                let Some((_, when)) = entry else {
                    if let Some(next) = next_after(schedule, now) {
                        due.insert(key, (sched_key.clone(), next));
                    }
                    continue;
                };
                if when > now {
                    continue;
                }
                // Due: fire once, and take the next time after now (nothing is replayed).
                match next_after(schedule, now) {
                    Some(next) => due.insert(key.clone(), (sched_key.clone(), next)),
                    None => due.remove(&key),
                };
                let already = !running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone());
                if already {
                    tracing::warn!(job = %job.identifier, "job still running at its next occurrence; this occurrence is skipped");
                    continue;
                }
                let rt = rt.clone();
                let job = job.clone();
                let running = running.clone();
                tokio::spawn(async move {
                    run_job(&rt, &job).await;
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                });
            }
            due.retain(|k, _| seen.contains(k));
        }
    });
}

/// Runs a job: its groups of steps one after the other (`Job::groups`: steps without a Level
/// one by one in document order, then each explicit level with its steps together). A task of
/// another kind, or an export task of another agent, is logged as not run by this agent and the
/// job goes on; a task whose `TaskDependsOnTask` parent did not succeed in this job run is not
/// run; a failed task stops the job unless it has `ContinueOnError`. Returns whether the job ran
/// to its end.
pub async fn run_job(rt: &Arc<Runtime>, job: &Job) -> bool {
    // The whole job runs on the configuration it started with.
    let snapshot = rt.snapshot();
    let groups = job.groups();
    tracing::info!(job = %job.identifier, groups = groups.len(), "job started");
    let started_by = format!("scheduler:{}", job.identifier);
    // The tasks that succeeded in this job run (lower-cased identifiers).
    let mut succeeded: HashSet<String> = HashSet::new();
    for (group, steps) in groups.into_iter().enumerate() {
        let mut waits = Vec::new();
        for step in steps {
            let id = step.task.as_str();
            let export = snapshot.export_task(id);
            let other = snapshot.other_task(id);
            let parents = export
                .map(|t| &t.depends_on)
                .or(other.map(|t| &t.depends_on))
                .cloned()
                .unwrap_or_default();
            if let Some(parent) = parents.iter().find(|p| !succeeded.contains(&p.key())) {
                tracing::warn!(job = %job.identifier, task = %step.task, %parent, "task not run: the task it depends on did not succeed in this job run");
                continue;
            }
            if let Some(other) = other {
                tracing::info!(job = %job.identifier, task = %step.task, "not run by this agent: {}", other.kind);
                continue;
            }
            if let Some(t) = export.filter(|t| !t.served) {
                tracing::info!(job = %job.identifier, task = %step.task, agent = %t.agent, "not run by this agent: ExportTask of agent {}", t.agent);
                continue;
            }
            let continue_on_error = export.is_some_and(|t| t.continue_on_error);
            match start_step(rt, &snapshot, id, &started_by).await {
                Ok((record, mut rx)) => waits.push(tokio::spawn({
                    let rt = rt.clone();
                    let task = step.task.clone();
                    async move {
                        // Until the run's final event; the registry has the final state.
                        loop {
                            match rx.recv().await {
                                Ok(ev)
                                    if matches!(
                                        ev.kind,
                                        RunEventKind::Finished(_) | RunEventKind::Failed(_)
                                    ) =>
                                {
                                    break;
                                }
                                Ok(_)
                                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    continue;
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                            }
                        }
                        let state = rt.runs.get(&record.id).map(|r| r.state);
                        (task, state, continue_on_error)
                    }
                })),
                Err(e) => {
                    tracing::error!(job = %job.identifier, task = %step.task, error = %e, "job step not started");
                    if !continue_on_error {
                        tracing::error!(job = %job.identifier, group, "job stopped");
                        return false;
                    }
                }
            }
        }
        let mut stop = false;
        for w in waits {
            let Ok((task, state, continue_on_error)) = w.await else {
                stop = true;
                continue;
            };
            // A task that had nothing to do (not run) does not stop the job, but it produced
            // nothing: the tasks that depend on it do not run.
            match state {
                Some(RunState::Succeeded) => {
                    succeeded.insert(task.key());
                }
                Some(RunState::NotRun) => {}
                _ if continue_on_error => {
                    tracing::warn!(job = %job.identifier, %task, "task failed; ContinueOnError: the job goes on");
                }
                _ => {
                    tracing::error!(job = %job.identifier, %task, "task failed");
                    stop = true;
                }
            }
        }
        if stop {
            tracing::error!(job = %job.identifier, group, "job stopped after a failed task");
            return false;
        }
    }
    tracing::info!(job = %job.identifier, "job finished");
    true
}

/// Starts a step's task. When its connection is busy with another run, waits for that run to end
/// (at most an hour), then starts.
async fn start_step(
    rt: &Arc<Runtime>,
    snapshot: &Arc<crate::config::Snapshot>,
    task: &str,
    started_by: &str,
) -> Result<
    (
        super::runs::RunRecord,
        tokio::sync::broadcast::Receiver<super::runs::RunEvent>,
    ),
    super::runs::StartError,
> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        match rt.start_export_on(
            snapshot.clone(),
            Target::Task(task.to_string()),
            false,
            started_by,
        ) {
            Err(super::runs::StartError::AlreadyRunning { run_id, .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(%task, run = %run_id, "the task's connection is busy; the job step waits for that run");
                if let Some(mut rx) = rt.runs.subscribe(&run_id) {
                    // Until every sender is gone: the run has ended.
                    while !matches!(
                        rx.recv().await,
                        Err(tokio::sync::broadcast::error::RecvError::Closed)
                    ) {}
                }
                tokio::select! {
                    _ = rt.stopping.cancelled() => return Err(super::runs::StartError::ShuttingDown),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            other => return other,
        }
    }
}
