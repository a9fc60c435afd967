//! Secured options set by the central server (`SetSecuredOption`, `DeleteSecuredOption`): the
//! option checked against the connection's package, the value encrypted into the connection
//! store (`config::encrypted`), the configuration reloaded, and the store put back as it was if
//! the configuration with the change is rejected. The value is never logged: the audit line names
//! the caller, the connection, the option and what was done.

use super::Runtime;
use crate::packages::spec::SettingKind;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Why a secured option could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SecuredOptionError {
    #[error("there is no connection {0:?}")]
    NotFound(String),
    #[error("connection {0} has no known package")]
    NoPackage(String),
    #[error("{option} is not a secured option of package {package}; its secured options: {known}")]
    NotSecured {
        option: String,
        package: &'static str,
        known: String,
    },
    #[error(
        "{0} is a set of keyword-value options; write it in the settings or the encrypted overlay (connagent protect), SetSecuredOption takes single values"
    )]
    KeyValueOptions(&'static str),
    /// The store could not be written (no agent key, a file that cannot be replaced).
    #[error("{0}")]
    Store(String),
    #[error("the configuration with this option was rejected, {undo}: {errors}")]
    Rejected { undo: String, errors: String },
    #[error("the store write stopped: {0}")]
    Internal(String),
}

/// Where a secured option stands after a change.
#[derive(Debug, Clone)]
pub struct SecuredOptionState {
    pub connection: String,
    pub option: &'static str,
    pub is_set: bool,
    pub changed_at: DateTime<Utc>,
    pub configuration_generation: u64,
}

impl Runtime {
    /// Stores (`Some`) or removes (`None`) a secured option of a connection, then reloads. The
    /// audit line names `caller`; the value is never logged or returned.
    pub async fn change_secured_option(
        self: &Arc<Self>,
        caller: &str,
        connection: &str,
        option: &str,
        value: Option<&Secret>,
    ) -> Result<SecuredOptionState, SecuredOptionError> {
        let _one_at_a_time = super::managed::STORE_CHANGES.lock().await;
        let snapshot = self.snapshot();
        let c = snapshot
            .connection(connection)
            .ok_or_else(|| SecuredOptionError::NotFound(connection.to_string()))?;
        let package = c
            .package
            .as_ref()
            .ok_or_else(|| SecuredOptionError::NoPackage(c.identifier.to_string()))?;
        let settings = package.info().settings;
        let spec = settings
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(option))
            .filter(|s| s.may_hold_secret())
            .ok_or_else(|| {
                let known: Vec<&str> = settings
                    .iter()
                    .filter(|s| s.may_hold_secret())
                    .map(|s| s.name)
                    .collect();
                SecuredOptionError::NotSecured {
                    option: option.to_string(),
                    package: package.info().id,
                    known: if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                }
            })?;
        if matches!(spec.kind, SettingKind::Structured) {
            return Err(SecuredOptionError::KeyValueOptions(spec.name));
        }
        // Sections merge without case, so the XML spelling finds the settings section.
        let section = c.identifier.to_string();
        let settings_file = snapshot.settings_file.clone();
        // Kept to put the store back if the new configuration is rejected.
        let store = crate::config::encrypted::store_path_of(&settings_file);
        let previous = std::fs::read(&store).ok();
        let (name, option_name) = (section.clone(), spec.name);
        let setting = value.is_some();
        let value = value.cloned();
        tokio::task::spawn_blocking(move || {
            crate::config::encrypted::store_secured_option(
                &settings_file,
                &name,
                option_name,
                value.as_ref().map(Secret::expose),
            )
        })
        .await
        .map_err(|e| SecuredOptionError::Internal(e.to_string()))?
        .map_err(SecuredOptionError::Store)?;
        tracing::info!(
            caller = %caller,
            connection = %c.identifier,
            option = spec.name,
            action = if setting { "set" } else { "deleted" },
            "audit: secured option changed"
        );
        let outcome = self.reload("secured option changed", true).await;
        if let Some(o) = outcome.as_ref().filter(|o| !o.applied) {
            // Put the store back as it was, so that the next start does not meet the bad value.
            let restored = match &previous {
                Some(bytes) => {
                    crate::fsutil::write_atomically_with_mode(&store, bytes, Some(0o600))
                }
                None => std::fs::remove_file(&store),
            };
            return Err(SecuredOptionError::Rejected {
                undo: match restored {
                    Ok(()) => "the change was undone".to_string(),
                    Err(e) => format!(
                        "and it could not be undone ({e}): remove it with DeleteSecuredOption"
                    ),
                },
                errors: o.errors.join("; "),
            });
        }
        let cs = self.config_state();
        let is_set = cs
            .snapshot
            .connection(connection)
            .map(|c| match &c.settings {
                crate::config::SettingsState::Ok(s) => {
                    s.shown().iter().any(|v| v.name == spec.name && v.is_set)
                }
                _ => false,
            })
            .unwrap_or(false);
        Ok(SecuredOptionState {
            connection: c.identifier.to_string(),
            option: spec.name,
            is_set,
            changed_at: Utc::now(),
            configuration_generation: cs.generation,
        })
    }
}
