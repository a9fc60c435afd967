//! Connections managed by the central server (`CreateConnection`, `UpdateConnection`,
//! `DeleteConnection`): their XML in a file the agent owns (`Work/managed/connections.xml`),
//! their settings in the connection store (`Work/appsettings.connection.json`; secured ones
//! encrypted for the agent's key), then a reload. A change the configuration rejects is undone
//! (both files put back as they were) and every problem is returned. Connections declared in
//! the operator's own XML files are read-only here.

use super::Runtime;
use crate::config::files::MANAGED_FOLDER;
use crate::config::{Ident, Snapshot};
use crate::packages::spec::SettingKind;
use crate::secret::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Changes to the agent's own files (the managed XML, the connection store) are made one at a
/// time: each reads, writes and reloads before the next starts.
pub static STORE_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The agent's own XML file of managed connections.
pub const MANAGED_FILE: &str = "connections.xml";

/// A connection as the central server defines it.
pub struct Definition {
    pub identifier: String,
    pub display_name: String,
    pub connector: String,
    pub package: String,
    /// Plain settings: text, or JSON for lists and structured settings.
    pub settings: HashMap<String, String>,
    /// Secured settings, stored encrypted.
    pub secured: HashMap<String, Secret>,
}

/// Why a managed connection could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no connection {0:?}")]
    NotFound(String),
    #[error(
        "connection {id} is declared in {at}, the operator's configuration: it is read-only here; change it in that file"
    )]
    ReadOnly { id: String, at: String },
    #[error("connection {id} exists already (declared in {at})")]
    Exists { id: String, at: String },
    #[error("connection {id} is used by {users}: change them first")]
    InUse { id: String, users: String },
    /// The store or the XML could not be written (no agent key for a secured setting, a folder
    /// that cannot be written).
    #[error("{0}")]
    Store(String),
    #[error("the configuration with this change was rejected, and the change was undone: {0}")]
    Rejected(String),
}

/// One managed connection's XML attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Declared {
    identifier: String,
    display_name: String,
    connector: String,
    package: String,
}

fn managed_file(snapshot: &Snapshot) -> PathBuf {
    snapshot.work_folder.join(MANAGED_FOLDER).join(MANAGED_FILE)
}

/// The connections the managed file declares, read back from the snapshot (they were loaded
/// from it).
fn declared(snapshot: &Snapshot) -> Vec<Declared> {
    let file = managed_file(snapshot);
    snapshot
        .connections
        .iter()
        .filter(|c| c.loc.file == file)
        .map(|c| Declared {
            identifier: c.identifier.to_string(),
            display_name: c.display_name.clone(),
            connector: c.connector.to_string(),
            package: c.package_name.clone(),
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

fn xml_of(list: &[Declared]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- Written by connagent: connections created over gRPC (CreateConnection). Do not edit: change them with UpdateConnection, or declare them in your own XML files instead. -->\n<ConfigurationFile>\n",
    );
    for d in list {
        out.push_str(&format!(
            "  <Connection Identifier=\"{}\" DisplayName_L1=\"{}\" Connector=\"{}\" Package=\"{}\"/>\n",
            escape(&d.identifier),
            escape(&d.display_name),
            escape(&d.connector),
            escape(&d.package)
        ));
    }
    out.push_str("</ConfigurationFile>\n");
    out
}

/// Both files as they were, to put back if the change is rejected.
struct Undo {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Undo {
    fn take(files: &[&Path]) -> Undo {
        Undo {
            files: files
                .iter()
                .map(|p| (p.to_path_buf(), std::fs::read(p).ok()))
                .collect(),
        }
    }

    fn restore(self) -> Result<(), String> {
        for (path, bytes) in self.files {
            let r = match bytes {
                Some(b) => crate::fsutil::write_atomically_with_mode(&path, &b, Some(0o600)),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            r.map_err(|e| format!("cannot put {} back: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl Runtime {
    /// Creates (`update` false) or replaces (`update` true) a managed connection, then reloads.
    /// Returns the configuration generation in force after it.
    pub async fn put_connection(
        self: &Arc<Self>,
        caller: &str,
        def: Definition,
        update: bool,
    ) -> Result<u64, ManagedError> {
        let _one_at_a_time = STORE_CHANGES.lock().await;
        let snapshot = self.snapshot();
        let id = def.identifier.trim().to_string();
        crate::ident::check_connection_identifier(&id)
            .map_err(|e| ManagedError::Invalid(format!("identifier: connection {e}")))?;
        let mut list = declared(&snapshot);
        let file = managed_file(&snapshot);
        let existing = snapshot.connection(&id);
        match (existing, update) {
            (Some(c), _) if c.loc.file != file => {
                return Err(ManagedError::ReadOnly {
                    id: c.identifier.to_string(),
                    at: c.loc.to_string(),
                });
            }
            (Some(c), false) => {
                return Err(ManagedError::Exists {
                    id: c.identifier.to_string(),
                    at: c.loc.to_string(),
                });
            }
            (None, true) => return Err(ManagedError::NotFound(id)),
            _ => {}
        }
        let package = self.registry.find(&def.package).ok_or_else(|| {
            ManagedError::Invalid(format!(
                "package: {:?} is not known; known: {}",
                def.package,
                self.registry.known_names()
            ))
        })?;
        let spec = package.info().settings;
        // Every problem of the definition at once, one per line.
        let mut problems = Vec::new();
        if def.connector.trim().is_empty() {
            problems.push("connector: required".to_string());
        }
        // Plain settings as the settings file would hold them (JSON for lists and structured
        // settings); secured ones only as secrets.
        let mut plain = serde_json::Map::new();
        for (name, text) in &def.settings {
            let Some(s) = spec.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
                problems.push(format!(
                    "settings.{name}: {} has no such setting; settings: {}",
                    package.info().id,
                    spec.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            if s.secured {
                problems.push(format!(
                    "settings.{}: a secured setting goes in secured_settings",
                    s.name
                ));
                continue;
            }
            let value = match s.kind {
                SettingKind::TextList | SettingKind::Structured => {
                    match serde_json::from_str(text) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("settings.{}: not JSON: {e}", s.name));
                            continue;
                        }
                    }
                }
                _ => serde_json::Value::String(text.clone()),
            };
            plain.insert(s.name.to_string(), value);
        }
        for name in def.secured.keys() {
            if !spec
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(name) && s.may_hold_secret())
            {
                problems.push(format!(
                    "secured_settings.{name}: not a secured setting of {}",
                    package.info().id
                ));
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(ManagedError::Invalid(problems.join("\n")));
        }
        let declared = Declared {
            identifier: id.clone(),
            display_name: if def.display_name.trim().is_empty() {
                id.clone()
            } else {
                def.display_name.trim().to_string()
            },
            connector: def.connector.trim().to_string(),
            package: package.info().id.to_string(),
        };
        list.retain(|d| !Ident::new(&d.identifier).matches(&id));
        list.push(declared);
        let store = crate::config::encrypted::store_path_of(&snapshot.settings_file);
        let undo = Undo::take(&[&file, &store]);
        let settings_file = snapshot.settings_file.clone();
        let secured: Vec<(String, Secret)> = def.secured.into_iter().collect();
        let (section, xml) = (id.clone(), xml_of(&list));
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            crate::fsutil::write_atomically_with_mode(&file, xml.as_bytes(), Some(0o600))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            crate::config::encrypted::replace_plain_settings(
                &settings_file,
                &section,
                plain,
                !update,
            )?;
            for (name, value) in &secured {
                crate::config::encrypted::store_secured_option(
                    &settings_file,
                    &section,
                    name,
                    Some(value.expose()),
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ManagedError::Store(e.to_string()))?;
        if let Err(e) = written {
            let _ = undo.restore();
            return Err(ManagedError::Store(e));
        }
        tracing::info!(caller = %caller, connection = %id, action = if update { "updated" } else { "created" }, "audit: managed connection changed");
        self.reload_or_undo(undo).await
    }

    /// Deletes a managed connection (refused while export tasks or mappings use it), then
    /// reloads.
    pub async fn delete_connection(
        self: &Arc<Self>,
        caller: &str,
        id: &str,
    ) -> Result<u64, ManagedError> {
        let _one_at_a_time = STORE_CHANGES.lock().await;
        let snapshot = self.snapshot();
        let file = managed_file(&snapshot);
        let c = snapshot
            .connection(id)
            .ok_or_else(|| ManagedError::NotFound(id.to_string()))?;
        if c.loc.file != file {
            return Err(ManagedError::ReadOnly {
                id: c.identifier.to_string(),
                at: c.loc.to_string(),
            });
        }
        let users = snapshot.usage(&c.identifier);
        if !users.is_empty() {
            return Err(ManagedError::InUse {
                id: c.identifier.to_string(),
                users: users
                    .iter()
                    .map(|(kind, name)| format!("{kind} {name}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut list = declared(&snapshot);
        list.retain(|d| !c.identifier.matches(&d.identifier));
        let store = crate::config::encrypted::store_path_of(&snapshot.settings_file);
        let undo = Undo::take(&[&file, &store]);
        let settings_file = snapshot.settings_file.clone();
        let (section, xml) = (c.identifier.to_string(), xml_of(&list));
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            crate::fsutil::write_atomically_with_mode(&file, xml.as_bytes(), Some(0o600))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            crate::config::encrypted::remove_section(&settings_file, &section)
        })
        .await
        .map_err(|e| ManagedError::Store(e.to_string()))?;
        if let Err(e) = written {
            let _ = undo.restore();
            return Err(ManagedError::Store(e));
        }
        tracing::info!(caller = %caller, connection = %c.identifier, action = "deleted", "audit: managed connection changed");
        self.reload_or_undo(undo).await
    }

    /// Reloads; a rejected configuration puts the files back and gives every problem.
    async fn reload_or_undo(self: &Arc<Self>, undo: Undo) -> Result<u64, ManagedError> {
        let outcome = self.reload("managed connection changed", true).await;
        if let Some(o) = outcome.as_ref().filter(|o| !o.applied) {
            let errors = o.errors.join("\n");
            return match undo.restore() {
                Ok(()) => Err(ManagedError::Rejected(errors)),
                Err(e) => Err(ManagedError::Store(format!(
                    "the configuration with this change was rejected ({errors}), and {e}"
                ))),
            };
        }
        Ok(self.config_state().generation)
    }
}
