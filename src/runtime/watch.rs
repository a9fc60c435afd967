//! Watching the configuration: the folders that hold the settings file and the XML files are
//! watched with `notify` (inotify), so that editors that save by renaming, tools that replace
//! files and symbolic-link swaps are all seen; events are debounced, and the configuration's
//! content hash decides whether anything changed (so one edit is applied once). A periodic check
//! covers file systems where events do not arrive. Watched paths are resolved again after each
//! reload.

use super::Runtime;
use crate::config::Snapshot;
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before the configuration is read.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut d = crate::config::Diagnostics::default();
    if dir.is_dir() {
        crate::config::xml::find_xml_files(dir, &mut d)
    } else {
        Vec::new()
    }
}

/// SHA-256 over everything a load reads: the settings file and every XML file (path and bytes,
/// following symbolic links). A file that cannot be read hashes as such.
pub fn hash_inputs(s: &Snapshot) -> String {
    let mut h = Sha256::new();
    let mut add = |p: &Path| {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(p) {
            Ok(b) => h.update(&b),
            Err(e) => h.update(format!("unreadable: {}", e.kind()).as_bytes()),
        }
        h.update([0]);
    };
    add(&s.settings_file);
    // The folder named by the settings file *now* (it may have changed).
    let xml_dir = current_xml_folder(s);
    for f in xml_files(&xml_dir) {
        add(&f);
    }
    hex::encode(h.finalize())
}

/// XmlConfigurationPath as the settings file says now, else as loaded.
fn current_xml_folder(s: &Snapshot) -> PathBuf {
    let fresh = std::fs::read(&s.settings_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.as_object()
                .and_then(|o| crate::ident::get_ci(o, "XmlConfigurationPath"))
                .and_then(|x| x.as_str().map(str::to_string))
        });
    match (fresh, s.settings_file.parent()) {
        (Some(p), Some(dir)) => dir.join(p),
        _ => s.xml_folder.clone(),
    }
}

/// The folders to watch: the settings file's folder, the XML folder (recursively), and the XML
/// folder's parent (to see the folder itself replaced or re-linked).
fn watch_list(s: &Snapshot) -> Vec<(PathBuf, RecursiveMode)> {
    let mut v = Vec::new();
    if let Some(p) = s.settings_file.parent() {
        v.push((p.to_path_buf(), RecursiveMode::NonRecursive));
    }
    let xml = current_xml_folder(s);
    if xml.is_dir() {
        v.push((xml.clone(), RecursiveMode::Recursive));
    }
    if let Some(p) = xml.parent() {
        v.push((p.to_path_buf(), RecursiveMode::NonRecursive));
    }
    v
}

/// Watches until the agent stops; reloads when the configuration's content changes.
pub fn spawn(rt: Arc<Runtime>) {
    tokio::spawn(async move {
        loop {
            let snapshot = rt.snapshot();
            let (tx, mut rx) = mpsc::channel::<()>(64);
            let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.is_ok() {
                    let _ = tx.try_send(());
                }
            });
            let mut watcher = match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "file events unavailable; checking the configuration every {:?}", snapshot.daemon.poll);
                    None
                }
            };
            if let Some(w) = watcher.as_mut() {
                for (dir, mode) in watch_list(&snapshot) {
                    if let Err(e) = w.watch(&dir, mode) {
                        tracing::warn!(folder = %dir.display(), error = %e, "cannot watch; relying on the periodic check");
                    }
                }
            }
            let mut poll = tokio::time::interval(snapshot.daemon.poll);
            poll.tick().await;
            loop {
                tokio::select! {
                    _ = rt.stopping.cancelled() => return,
                    ev = rx.recv(), if watcher.is_some() => {
                        if ev.is_none() {
                            watcher = None;
                            continue;
                        }
                        // Debounce: wait for a quiet moment.
                        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    }
                    _ = poll.tick() => {}
                }
                let now = {
                    let s = rt.snapshot();
                    tokio::task::spawn_blocking(move || hash_inputs(&s))
                        .await
                        .unwrap_or_default()
                };
                let last = rt
                    .config_hash
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if now != last {
                    rt.reload("file change").await;
                    // Paths may have moved (XmlConfigurationPath, a re-linked folder).
                    break;
                }
            }
            drop(watcher);
        }
    });
}
