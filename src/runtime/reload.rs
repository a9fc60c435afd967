//! Reload: load and validate the whole configuration again, then swap the snapshot atomically, or
//! reject it as a whole and keep the previous one. Settings that need a restart are kept at their
//! running values and reported as "restart required".

use super::{Event, ReloadOutcome, Runtime, sdnotify};
use crate::config::{self, Ident, LoadOptions, Snapshot};
use chrono::Utc;
use std::sync::Arc;

/// Settings the running process cannot change; a new value is reported and kept for the restart.
fn restart_required(old: &Snapshot, new: &mut Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, changed: bool| {
        if changed {
            out.push(format!(
                "{what} changed: restart the agent to apply it (the running value stays in force)"
            ));
        }
    };
    check("Grpc:Listen", old.grpc.listen != new.grpc.listen);
    check("Grpc:Tls", old.grpc.tls != new.grpc.tls);
    check("TempFolderPath", old.temp_folder != new.temp_folder);
    check("WorkFolderPath", old.work_folder != new.work_folder);
    check("Agent:Identifier", old.agent.as_str() != new.agent.as_str());
    check(
        "ControlPlane",
        format!("{:?}", old.control_plane) != format!("{:?}", new.control_plane)
            || old.control_plane.as_ref().map(|c| c.token.as_ref())
                != new.control_plane.as_ref().map(|c| c.token.as_ref()),
    );
    check(
        "Jobs:MaxTaskBatchSize",
        old.max_task_batch_size != new.max_task_batch_size,
    );
    check(
        "Logging",
        old.daemon.log_json != new.daemon.log_json || old.daemon.log_level != new.daemon.log_level,
    );
    // Keep what is in force, so the snapshot describes the running agent.
    new.grpc.listen = old.grpc.listen;
    new.grpc.tls = old.grpc.tls.clone();
    new.temp_folder = old.temp_folder.clone();
    new.work_folder = old.work_folder.clone();
    new.agent = old.agent.clone();
    new.control_plane = old.control_plane.clone();
    new.max_task_batch_size = old.max_task_batch_size;
    new.daemon.log_json = old.daemon.log_json;
    new.daemon.log_level = old.daemon.log_level.clone();
    out
}

/// Connections of the running configuration that the new one drops while something in the new
/// one still uses them (a removal or a rename).
fn removed_in_use(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for c in &old.connections {
        if new.connection(c.identifier.as_str()).is_some() {
            continue;
        }
        let id: &Ident = &c.identifier;
        let mut users: Vec<String> = new
            .export_tasks
            .iter()
            .filter(|t| &t.connection == id)
            .map(|t| format!("export task {}", t.identifier))
            .collect();
        let table_of = |t: &Option<String>| {
            t.as_deref()
                .and_then(crate::table_name::TableName::parse)
                .is_some_and(|t| t.belongs_to(id))
        };
        users.extend(
            new.entity_type_mappings
                .iter()
                .filter(|m| table_of(&m.connection_table))
                .map(|m| format!("entity type mapping {}", m.identifier)),
        );
        users.extend(
            new.association_mappings
                .iter()
                .filter(|m| table_of(&m.connection_table))
                .map(|m| format!("entity association mapping {}", m.identifier)),
        );
        if !users.is_empty() {
            out.push(format!(
                "connection {id} would be removed or renamed, but {} still use{} it: change them first, or keep the connection",
                users.join(", "),
                if users.len() == 1 { "s" } else { "" }
            ));
        }
    }
    out
}

impl Runtime {
    /// Reloads the configuration. One at a time. Unless `force` (SIGHUP, a caller), nothing is
    /// done when the files' content is what was last loaded: `None`.
    pub async fn reload(self: &Arc<Self>, trigger: &str, force: bool) -> Option<ReloadOutcome> {
        let _one = self.reload_lock.lock().await;
        if self.stopping.is_cancelled() {
            return None;
        }
        let old = self.snapshot();
        if !force {
            let current = {
                let s = old.clone();
                tokio::task::spawn_blocking(move || super::watch::hash_inputs(&s))
                    .await
                    .unwrap_or_default()
            };
            if current == *self.config_hash.lock().unwrap_or_else(|p| p.into_inner()) {
                return None;
            }
        }
        sdnotify::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            sdnotify::monotonic_usec()
        ));
        let opts = LoadOptions::from_env(old.settings_file.clone());
        let registry = self.registry.clone();
        // On a thread whose stack the agent sets, not on a runtime worker (config::load_isolated).
        let loaded =
            tokio::task::spawn_blocking(move || config::validate::load_isolated(opts, registry))
                .await;
        // The hash of the bytes actually loaded, so that a change made during the load is seen.
        let hash = match &loaded {
            Ok(Ok(l)) => l.inputs_hash.clone(),
            _ => super::watch::hash_inputs(&old),
        };
        let now = Utc::now();
        let outcome = match loaded {
            Err(e) => {
                ReloadOutcome::rejected(now, vec![format!("the reload stopped unexpectedly: {e}")])
            }
            Ok(Err(d)) => ReloadOutcome::rejected(now, d.errors().map(|e| e.to_string()).collect()),
            // Errors, or a connection dropped while something still uses it (a mapping whose
            // table names no connection is only a warning at validation; dropping the
            // connection it read from is still refused here).
            Ok(Ok(l))
                if l.diagnostics.has_errors() || !removed_in_use(&old, &l.snapshot).is_empty() =>
            {
                let mut errors = removed_in_use(&old, &l.snapshot);
                errors.extend(l.diagnostics.errors().map(|e| e.to_string()));
                ReloadOutcome::rejected(now, errors)
            }
            Ok(Ok(l)) => {
                let mut snapshot = l.snapshot;
                let restart = restart_required(&old, &mut snapshot);
                let snapshot = Arc::new(snapshot);
                let changed = self.times.update(&snapshot, now);
                let fingerprint = self.times.configuration_fingerprint(&l.inputs_hash);
                let outcome = ReloadOutcome {
                    at: now,
                    applied: true,
                    errors: Vec::new(),
                    warnings: l.diagnostics.warnings().map(|d| d.to_string()).collect(),
                    restart_required: restart,
                };
                {
                    let mut cs = self.config.write().unwrap_or_else(|p| p.into_inner());
                    cs.snapshot = snapshot.clone();
                    cs.generation += 1;
                    cs.fingerprint = fingerprint;
                    cs.loaded_at = now;
                    cs.last_reload = outcome.clone();
                }
                // New and changed connections are discovered again, in the background.
                let rt = self.clone();
                tokio::spawn(async move {
                    for id in changed {
                        let served_ok = snapshot.connection(&id).is_some_and(|c| {
                            c.served && matches!(c.settings, config::SettingsState::Ok(_))
                        });
                        if served_ok && !rt.shutdown.is_cancelled() {
                            let _ = rt.schemas.refresh(&rt, &id).await;
                        }
                    }
                });
                outcome
            }
        };
        *self.config_hash.lock().unwrap_or_else(|p| p.into_inner()) = hash;
        if !outcome.applied {
            let mut cs = self.config.write().unwrap_or_else(|p| p.into_inner());
            cs.last_reload = outcome.clone();
        }
        if outcome.applied {
            tracing::info!(
                trigger,
                generation = self.config_state().generation,
                restart_required = outcome.restart_required.len(),
                "configuration applied"
            );
            for r in &outcome.restart_required {
                tracing::warn!("{r}");
            }
        } else {
            tracing::error!(
                trigger,
                errors = outcome.errors.len(),
                "configuration rejected; the previous one stays in force"
            );
            for e in &outcome.errors {
                tracing::error!("{e}");
            }
        }
        self.emit(Event::Configuration(outcome.clone()));
        if !self.stopping.is_cancelled() {
            sdnotify::notify(&format!("READY=1\nSTATUS={}", self.status_line()));
            self.write_status(false);
        }
        Some(outcome)
    }
}
