//! Schema refreshes: discover, store, tell `WatchEvents`, and queue a report to the control plane
//! when the schema changed or its discovery failed.

use super::{Event, Runtime};
use crate::config::SettingsState;
use crate::packages::{ConnectionRef, FailureClass};
use crate::schema::{SchemaFailure, SchemaState, SchemaStore, fingerprint};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    NotFound(String),
    Precondition(String),
}

impl std::fmt::Display for RefreshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefreshError::NotFound(m) | RefreshError::Precondition(m) => f.write_str(m),
        }
    }
}

pub struct SchemaManager {
    store: SchemaStore,
    /// One discovery per connection at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn class_name(c: FailureClass) -> String {
    match c {
        FailureClass::Config => "config",
        FailureClass::Source => "source",
        FailureClass::System => "system",
        FailureClass::Cancelled => "cancelled",
    }
    .into()
}

impl SchemaManager {
    pub fn new(store: SchemaStore) -> Self {
        SchemaManager {
            store,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &SchemaStore {
        &self.store
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// The stored state of a connection of the configuration.
    pub fn get(&self, rt: &Runtime, connection: &str) -> Result<SchemaState, RefreshError> {
        let snapshot = rt.snapshot();
        let c = snapshot.connection(connection).ok_or_else(|| {
            RefreshError::NotFound(format!("there is no connection {connection:?}"))
        })?;
        Ok(self.store.load(c.identifier.as_str()))
    }

    /// Drops the stored schema and discovers it again (one step, under the connection's lock).
    pub async fn reset(
        &self,
        rt: &Arc<Runtime>,
        connection: &str,
    ) -> Result<SchemaState, RefreshError> {
        self.discover(rt, connection, true).await
    }

    /// Discovers a connection's schema. A failed discovery is stored and reported too: the result
    /// is `Ok` with the failure in the state. `Err` only when the connection cannot be discovered
    /// here at all.
    pub async fn refresh(
        &self,
        rt: &Arc<Runtime>,
        connection: &str,
    ) -> Result<SchemaState, RefreshError> {
        self.discover(rt, connection, false).await
    }

    async fn discover(
        &self,
        rt: &Arc<Runtime>,
        connection: &str,
        reset: bool,
    ) -> Result<SchemaState, RefreshError> {
        let snapshot = rt.snapshot();
        let c = snapshot.connection(connection).ok_or_else(|| {
            RefreshError::NotFound(format!("there is no connection {connection:?}"))
        })?;
        if !c.served {
            return Err(RefreshError::Precondition(format!(
                "connection {} is served by another agent, not {}",
                c.identifier, snapshot.agent
            )));
        }
        let (SettingsState::Ok(settings), Some(package)) = (&c.settings, &c.package) else {
            return Err(RefreshError::Precondition(format!(
                "connection {} has no usable settings (settings: {})",
                c.identifier,
                c.settings.label()
            )));
        };
        let lock = self.lock_for(c.identifier.key());
        let _g = lock.lock().await;
        if reset {
            self.store.remove(c.identifier.as_str()).map_err(|e| {
                RefreshError::Precondition(format!("cannot remove the stored schema: {e}"))
            })?;
        }
        let id = c.identifier.to_string();
        let mut state = self.store.load(&id);
        let redactor = settings.redactor();
        let cref = ConnectionRef {
            identifier: c.identifier.clone(),
            settings: settings.clone(),
            cancel: rt.shutdown.child_token(),
            mapped_columns: snapshot.mapped_columns(&c.identifier),
        };
        let package = package.clone();
        // Its own task: a panic in the package fails this discovery only.
        let result = tokio::spawn(async move { package.discover(&cref).await })
            .await
            .unwrap_or_else(|e| {
                Err(crate::packages::PackageError::system(format!(
                    "the discovery stopped unexpectedly: {e}"
                )))
            });
        let now = Utc::now();
        let mut changed = true;
        let report_key;
        match result {
            Ok(mut schema) => {
                for t in &mut schema.tables {
                    t.source = redactor.redact(&t.source);
                }
                let fp = fingerprint(&schema);
                changed =
                    state.fingerprint.as_deref() != Some(fp.as_str()) || state.failure.is_some();
                state.schema = Some(schema);
                state.fingerprint = Some(fp.clone());
                state.refreshed_at = Some(now);
                state.failure = None;
                report_key = fp;
            }
            Err(e) => {
                let message = redactor.redact(&e.message);
                tracing::warn!(connection = %id, class = ?e.class, error = %message, "schema discovery failed");
                state.failure = Some(SchemaFailure {
                    at: now,
                    class: class_name(e.class),
                    message: message.clone(),
                });
                report_key = format!("failure:{}:{message}", class_name(e.class));
            }
        }
        let needs_report = state.reported.as_deref() != Some(report_key.as_str());
        if needs_report && let Some(sink) = rt.report_sink() {
            match sink.report_schema(snapshot.agent.as_str(), &state) {
                Ok(()) => state.reported = Some(report_key),
                // Not marked as reported: the next refresh tries again.
                Err(e) => tracing::error!(connection = %id, error = %e, "schema report not queued"),
            }
        }
        if let Err(e) = self.store.save(&state) {
            tracing::warn!(connection = %id, error = %e, "cannot store the schema");
        }
        if changed {
            rt.emit(Event::SchemaChanged(state.clone()));
        }
        Ok(state)
    }
}
