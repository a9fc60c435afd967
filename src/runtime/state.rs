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
    /// The connection left the configuration (it may come back: then it is "modified").
    #[serde(default)]
    pub removed: bool,
    /// SHA-256 of the connection's XML attributes and settings (secrets included, hashed).
    pub fingerprint: String,
}

pub struct ConnectionTimes {
    path: PathBuf,
    key: Vec<u8>,
    map: RwLock<BTreeMap<String, Times>>,
}

impl ConnectionTimes {
    /// A fingerprint of the whole configuration (the hash of its files), keyed like the
    /// connections' so that it reveals nothing about what the files hold.
    pub fn configuration_fingerprint(&self, inputs_hash: &str) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&self.key);
        h.update(b"configuration\0");
        h.update(inputs_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// A connection's configuration fingerprint, keyed with this agent's fingerprint key so that the
/// stored value cannot be used to guess a secret offline.
pub fn connection_fingerprint(key: &[u8], c: &crate::config::Connection) -> String {
    let mut h = Sha256::new();
    h.update(key);
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
        if c.served { "served" } else { "not served" },
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    if let SettingsState::Ok(s) = &c.settings {
        s.hash_into(&mut h);
    }
    hex::encode(h.finalize())
}

/// The recorded times, read only (for the CLI): lower-cased identifier → times.
pub fn read_times(work: &Path) -> BTreeMap<String, Times> {
    crate::fsutil::read_limited(
        &work.join("State").join("connections.json"),
        crate::fsutil::limits::STATE_FILE,
        "a state file",
    )
    .ok()
    .and_then(|b| serde_json::from_slice(&b).ok())
    .unwrap_or_default()
}

impl ConnectionTimes {
    pub fn load(work: &Path) -> Self {
        let path = work.join("State").join("connections.json");
        let map =
            crate::fsutil::read_limited(&path, crate::fsutil::limits::STATE_FILE, "a state file")
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
        let key = fingerprint_key(&work.join("State").join("fingerprint.key"));
        ConnectionTimes {
            path,
            key,
            map: RwLock::new(map),
        }
    }

    /// Records the snapshot's connections: new ones are first seen now, changed ones modified now.
    /// Returns the identifiers whose configuration is new or changed.
    pub fn update(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Vec<String> {
        let mut changed = Vec::new();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for c in &snapshot.connections {
            let fp = connection_fingerprint(&self.key, c);
            match map.get_mut(&c.identifier.key()) {
                Some(t) if t.fingerprint == fp && !t.removed => {}
                Some(t) => {
                    t.last_modified = now;
                    t.fingerprint = fp;
                    t.removed = false;
                    changed.push(c.identifier.to_string());
                }
                None => {
                    map.insert(
                        c.identifier.key(),
                        Times {
                            first_seen: now,
                            last_modified: now,
                            removed: false,
                            fingerprint: fp,
                        },
                    );
                    changed.push(c.identifier.to_string());
                }
            }
        }
        let mut removed_any = false;
        for (key, t) in map.iter_mut() {
            if !t.removed && snapshot.connection(key).is_none() {
                t.removed = true;
                removed_any = true;
            }
        }
        if !changed.is_empty() || removed_any {
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

/// The agent's random fingerprint key (32 bytes from /dev/urandom, file mode 0600), made on first
/// use. If it cannot be read or made, a per-process key is used: times then look "modified" once
/// after a restart, which is harmless.
fn fingerprint_key(path: &Path) -> Vec<u8> {
    if let Ok(k) = crate::fsutil::read_limited(path, 64, "a key file")
        && k.len() == 32
    {
        return k;
    }
    let mut key = vec![0u8; 32];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut key)
    });
    if random.is_err() {
        for b in &mut key {
            *b = fastrand::u8(..);
        }
    }
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(&key)?;
            f.sync_all()
        });
    if let Err(e) = saved {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the fingerprint key");
    }
    key
}
