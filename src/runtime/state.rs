//! When each connection was first seen and last modified, kept across restarts in
//! `<Work>/State/connections.json`. "Modified" means its XML or its settings changed.

use crate::config::{SettingsState, Snapshot};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Times {
    pub first_seen: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    /// SHA-256 of the connection's XML attributes and settings (secrets included, hashed).
    pub fingerprint: String,
}

pub struct ConnectionTimes {
    path: PathBuf,
    map: RwLock<BTreeMap<String, Times>>,
}

/// A connection's configuration fingerprint.
pub fn connection_fingerprint(c: &crate::config::Connection) -> String {
    let mut h = Sha256::new();
    for part in [
        c.identifier.as_str(),
        &c.display_name,
        c.connector.as_str(),
        &c.package_name,
        &format!("{:?}", c.deactivation),
        &format!(
            "{:?}",
            c.transformations
                .iter()
                .map(|t| &t.attributes)
                .collect::<Vec<_>>()
        ),
        c.settings.label(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    if let SettingsState::Ok(s) = &c.settings {
        s.hash_into(&mut h);
    }
    hex::encode(h.finalize())
}

impl ConnectionTimes {
    pub fn load(work: &Path) -> Self {
        let path = work.join("State").join("connections.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ConnectionTimes {
            path,
            map: RwLock::new(map),
        }
    }

    /// Records the snapshot's connections: new ones are first seen now, changed ones modified now.
    /// Returns the identifiers whose configuration is new or changed.
    pub fn update(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Vec<String> {
        let mut changed = Vec::new();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for c in &snapshot.connections {
            let fp = connection_fingerprint(c);
            match map.get_mut(&c.identifier.key()) {
                Some(t) if t.fingerprint == fp => {}
                Some(t) => {
                    t.last_modified = now;
                    t.fingerprint = fp;
                    changed.push(c.identifier.to_string());
                }
                None => {
                    map.insert(
                        c.identifier.key(),
                        Times {
                            first_seen: now,
                            last_modified: now,
                            fingerprint: fp,
                        },
                    );
                    changed.push(c.identifier.to_string());
                }
            }
        }
        if !changed.is_empty() {
            let text = serde_json::to_vec_pretty(&*map).unwrap_or_default();
            let res = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| crate::fsutil::write_atomically(&self.path, &text));
            if let Err(e) = res {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot save connection times");
            }
        }
        changed
    }

    pub fn get(&self, id: &str) -> Option<Times> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id.to_ascii_lowercase())
            .cloned()
    }
}
