//! Schema refreshes: discover, store, tell `WatchEvents`, and queue a report to the control plane
//! when the schema changed or its discovery failed.

use super::{Event, Runtime};
use crate::invoke;
use crate::schema::{SchemaState, SchemaStore};
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
        let target =
            invoke::target(&snapshot, connection, rt.shutdown.child_token()).map_err(|e| {
                if e.is_not_found() {
                    RefreshError::NotFound(e.to_string())
                } else {
                    RefreshError::Precondition(e.to_string())
                }
            })?;
        let id = target.cref.identifier.to_string();
        let lock = self.lock_for(target.cref.identifier.key());
        let _g = lock.lock().await;
        if reset {
            self.store.remove(&id).map_err(|e| {
                RefreshError::Precondition(format!("cannot remove the stored schema: {e}"))
            })?;
        }
        let result = target.discover().await;
        if let Err(e) = &result {
            tracing::warn!(connection = %id, class = ?e.class, error = %e.message, "schema discovery failed");
        }
        let (mut state, changed, report_key) =
            invoke::discovered_state(self.store.load(&id), result);
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
