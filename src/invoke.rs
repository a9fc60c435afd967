//! One way to call a package on a connection: find a usable connection of the configuration,
//! build its [`ConnectionRef`], run the call in a task of its own (a panic in a package fails that
//! call only), and redact what comes back. The CLI (`test`, `schema`), gRPC (`TestConnection`,
//! `RefreshSchema`), export runs and schema refreshes all go through here.
//!
//! A discovery's outcome, success or failure, becomes the connection's stored schema state here
//! ([`discovered_state`]), so that the CLI and the daemon record both the same way.

use crate::config::{Connection, SettingsState, Snapshot};
use crate::packages::{ConnectionRef, Package, PackageError, Settings, TestReport};
use crate::schema::{Schema, SchemaFailure, SchemaState, fingerprint};
use crate::secret::Redactor;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a connection cannot be called here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("there is no connection {id:?}; known connections: {known}")]
    NotFound { id: String, known: String },
    #[error("connection {connection} is served by another agent, not {agent}")]
    OtherAgent { connection: String, agent: String },
    #[error("connection {connection} uses unknown package {package:?}")]
    UnknownPackage { connection: String, package: String },
    #[error(
        "connection {connection} has no usable settings (settings: {state}); add them under Connections:{connection} in {file}"
    )]
    Unusable {
        connection: String,
        state: &'static str,
        file: String,
    },
}

impl LookupError {
    /// Whether the connection does not exist at all (as opposed to existing but not usable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LookupError::NotFound { .. })
    }
}

/// A connection ready for its package: what the package sees, and how to redact what it says.
#[derive(Clone)]
pub struct Target {
    pub cref: ConnectionRef,
    pub package: Arc<dyn Package>,
    pub redactor: Redactor,
}

/// The connection `id` of the configuration, served here, and its package (its settings may be
/// unusable: see [`target`]).
pub fn served<'a>(
    snapshot: &'a Snapshot,
    id: &str,
) -> Result<(&'a Connection, Arc<dyn Package>), LookupError> {
    let c = snapshot
        .connection(id)
        .ok_or_else(|| LookupError::NotFound {
            id: id.to_string(),
            known: snapshot
                .connections
                .iter()
                .map(|c| c.identifier.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if !c.served {
        return Err(LookupError::OtherAgent {
            connection: c.identifier.to_string(),
            agent: snapshot.agent.to_string(),
        });
    }
    match &c.package {
        Some(p) => Ok((c, p.clone())),
        None => Err(LookupError::UnknownPackage {
            connection: c.identifier.to_string(),
            package: c.package_name.clone(),
        }),
    }
}

/// The connection `id`, served here, with usable settings, ready for a call. `cancel` stops it.
pub fn target(
    snapshot: &Snapshot,
    id: &str,
    cancel: CancellationToken,
) -> Result<Target, LookupError> {
    let (c, package) = served(snapshot, id)?;
    match &c.settings {
        SettingsState::Ok(settings) => {
            Ok(target_with(snapshot, c, package, settings.clone(), cancel))
        }
        other => Err(LookupError::Unusable {
            connection: c.identifier.to_string(),
            state: other.label(),
            file: snapshot.settings_file.display().to_string(),
        }),
    }
}

/// A call target for connection `c` with the given settings (its own, or candidate settings for
/// a test). The redactor covers them all.
pub fn target_with(
    snapshot: &Snapshot,
    c: &Connection,
    package: Arc<dyn Package>,
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> Target {
    let mut redactor = settings.redactor();
    if let SettingsState::Ok(own) = &c.settings {
        redactor.extend(&own.redactor());
    }
    Target {
        cref: ConnectionRef {
            identifier: c.identifier.clone(),
            settings,
            cancel,
            mapped_columns: snapshot.mapped_columns(&c.identifier),
        },
        package,
        redactor,
    }
}

/// Why a test with candidate settings cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The connection has no usable settings of its own, and no candidate was given.
    #[error(
        "connection {connection} has no usable settings (settings: {state}); pass candidate settings or fix Connections:{connection}"
    )]
    NoSettings {
        connection: String,
        state: &'static str,
    },
    /// A candidate that does not fit its setting (unknown, wrong type, not JSON).
    #[error("{0}")]
    Value(String),
    /// The settings the candidates make are incomplete or inconsistent (the package's checks).
    #[error("connection {connection}: {problems}")]
    Problems {
        connection: String,
        problems: String,
    },
}

/// A call target for a test of connection `id` with candidate settings (name → value as text;
/// JSON for lists and structured settings) over its own: typed by the package's spec, secured
/// ones held as secrets, used for this call only, and checked by the package as a configuration
/// would be. Problems quote no secret.
pub fn candidate_target(
    snapshot: &Snapshot,
    id: &str,
    candidates: &std::collections::HashMap<String, String>,
    cancel: CancellationToken,
) -> Result<Target, CandidateError> {
    let (c, package) = served(snapshot, id)?;
    let base = match &c.settings {
        SettingsState::Ok(s) => (**s).clone(),
        other if candidates.is_empty() => {
            return Err(CandidateError::NoSettings {
                connection: c.identifier.to_string(),
                state: other.label(),
            });
        }
        _ => Settings::new(
            package.info().settings,
            Vec::new(),
            snapshot
                .settings_file
                .parent()
                .unwrap_or(std::path::Path::new("/")),
        ),
    };
    let settings = base
        .with_candidates(package.info(), candidates)
        .map_err(|e| CandidateError::Value(e.to_string()))?;
    let target = target_with(snapshot, c, package.clone(), Arc::new(settings), cancel);
    let problems: Vec<String> = package
        .check(&target.cref.settings)
        .into_iter()
        .filter(|p| !p.warning)
        .map(|p| target.redactor.redact(&p.message))
        .collect();
    if !problems.is_empty() {
        return Err(CandidateError::Problems {
            connection: c.identifier.to_string(),
            problems: problems.join("; "),
        });
    }
    Ok(target)
}

impl Target {
    /// Runs `call` on the package in a task of its own: a panic fails this call only, as a
    /// system error saying what stopped. The error's message is redacted.
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, PackageError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Package>, ConnectionRef) -> Fut,
        Fut: Future<Output = Result<T, PackageError>> + Send + 'static,
    {
        let work = call(self.package.clone(), self.cref.clone());
        let result = match tokio::spawn(work).await {
            Ok(r) => r,
            Err(e) => Err(PackageError::system(format!(
                "the {what} stopped unexpectedly: {e}"
            ))),
        };
        result.map_err(|e| PackageError {
            class: e.class,
            message: self.redactor.redact(&e.message),
        })
    }

    /// Tests the connection; each check line redacted.
    pub async fn test(&self) -> Result<TestReport, PackageError> {
        let mut report = self
            .call("test", |p, c| async move { p.test(&c).await })
            .await?;
        for c in &mut report.checks {
            *c = self.redactor.redact(c);
        }
        Ok(report)
    }

    /// Discovers the connection's schema; each table's source redacted.
    pub async fn discover(&self) -> Result<Schema, PackageError> {
        let mut schema = self
            .call("discovery", |p, c| async move { p.discover(&c).await })
            .await?;
        for t in &mut schema.tables {
            t.source = self.redactor.redact(&t.source);
        }
        Ok(schema)
    }
}

/// A discovery's outcome applied to a connection's stored state: a schema replaces the stored
/// one (fingerprint, time) and clears the failure; a failure is recorded beside the last good
/// schema. Returns the new state, whether it changed, and the key that says what a report of it
/// would carry (so that one outcome is reported once).
pub fn discovered_state(
    mut state: SchemaState,
    result: Result<Schema, PackageError>,
) -> (SchemaState, bool, String) {
    let now = chrono::Utc::now();
    match result {
        Ok(schema) => {
            let fp = fingerprint(&schema);
            let changed =
                state.fingerprint.as_deref() != Some(fp.as_str()) || state.failure.is_some();
            state.refreshed_at = Some(now);
            state.schema = Some(schema);
            state.fingerprint = Some(fp.clone());
            state.failure = None;
            (state, changed, fp)
        }
        Err(e) => {
            let class = e.class.as_str();
            let key = format!("failure:{class}:{}", e.message);
            state.failure = Some(SchemaFailure {
                at: now,
                class: class.to_string(),
                message: e.message,
            });
            (state, true, key)
        }
    }
}
