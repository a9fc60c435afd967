//! The scheduler: fires each `<Job>` of this agent at its cron times. Steps run by `Level`
//! (same level together, the next level after all of them end); a failed task stops the job
//! unless it has `ContinueOnError`. A job never runs twice at once, and occurrences missed while
//! the agent was down or busy are not replayed: the next due time is taken.

use super::Runtime;
use super::runs::{RunEventKind, RunState};
use crate::config::{CronSchedule, Job};
use crate::export::Target;
use chrono::{DateTime, Local, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
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
                .filter(|j| j.agent.as_ref().is_none_or(|a| a == &snapshot.agent))
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

/// Runs a job's steps level by level. Returns whether every task succeeded (or was warned).
pub async fn run_job(rt: &Arc<Runtime>, job: &Job) -> bool {
    // The whole job runs on the configuration it started with.
    let snapshot = rt.snapshot();
    let mut levels: BTreeMap<i64, Vec<&crate::config::JobStep>> = BTreeMap::new();
    for step in &job.steps {
        levels.entry(step.level).or_default().push(step);
    }
    tracing::info!(job = %job.identifier, levels = levels.len(), "job started");
    let started_by = format!("scheduler:{}", job.identifier);
    for (level, steps) in levels {
        let mut waits = Vec::new();
        for step in steps {
            let continue_on_error = snapshot
                .export_task(step.task.as_str())
                .is_some_and(|t| t.continue_on_error);
            match start_step(rt, &snapshot, step.task.as_str(), &started_by).await {
                Ok((record, mut rx)) => waits.push(tokio::spawn({
                    let rt = rt.clone();
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
                        let ok = rt.runs.get(&record.id).is_some_and(|r| {
                            matches!(r.state, RunState::Succeeded | RunState::NotRun)
                        });
                        (record.task.unwrap_or_default(), ok, continue_on_error)
                    }
                })),
                Err(e) => {
                    tracing::error!(job = %job.identifier, task = %step.task, error = %e, "job step not started");
                    if !continue_on_error {
                        tracing::error!(job = %job.identifier, level, "job stopped");
                        return false;
                    }
                }
            }
        }
        let mut stop = false;
        for w in waits {
            let Ok((task, ok, continue_on_error)) = w.await else {
                stop = true;
                continue;
            };
            if !ok {
                if continue_on_error {
                    tracing::warn!(job = %job.identifier, %task, "task failed; ContinueOnError: the job goes on");
                } else {
                    tracing::error!(job = %job.identifier, %task, "task failed");
                    stop = true;
                }
            }
        }
        if stop {
            tracing::error!(job = %job.identifier, level, "job stopped after a failed task");
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
