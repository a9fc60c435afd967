//! Watching the configuration: the folders that hold the settings file and the XML files are
//! watched with `notify` (inotify), so that editors that save by renaming, tools that replace
//! files and symbolic-link swaps are all seen; events are debounced, and the configuration's
//! content hash decides whether anything changed (so one edit is applied once). A periodic check
//! covers file systems where events do not arrive. Watched paths are resolved again after each
//! reload.

use super::Runtime;
use crate::config::Snapshot;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before the configuration is read.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The content hash of the configuration files as they are now (the folders of the snapshot in
/// force; a change of `XmlConfigurationPath` changes the settings file, so it is seen too).
pub fn hash_inputs(s: &Snapshot) -> String {
    crate::config::files::hash_now(
        &s.settings_file,
        &s.xml_folder,
        &s.work_folder.join(crate::config::files::MANAGED_FOLDER),
    )
}

/// The folders to watch: the settings file's folder, the XML folder (recursively) and its parent
/// (to see the folder itself replaced or re-linked), each also at its real location when it is
/// reached through symbolic links (so edits of a link's target are seen).
fn watch_list(s: &Snapshot) -> Vec<(PathBuf, RecursiveMode)> {
    let mut v: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    let mut add = |p: &Path, mode: RecursiveMode| {
        for candidate in [Some(p.to_path_buf()), p.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if candidate.is_dir() && !v.iter().any(|(x, m)| x == &candidate && *m == mode) {
                v.push((candidate, mode));
            }
        }
    };
    if let Some(p) = s.settings_file.parent() {
        add(p, RecursiveMode::NonRecursive);
    }
    if let Some(real) = s
        .settings_file
        .canonicalize()
        .ok()
        .and_then(|r| r.parent().map(Path::to_path_buf))
    {
        add(&real, RecursiveMode::NonRecursive);
    }
    add(&s.xml_folder, RecursiveMode::Recursive);
    if let Some(p) = s.xml_folder.parent() {
        add(p, RecursiveMode::NonRecursive);
    }
    v
}

/// Events are debounced: the configuration is read after this much quiet, or at the latest
/// after `DEBOUNCE_MAX` of continuous events.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Reloads when the files' content differs from what was last loaded.
async fn check(rt: &Arc<Runtime>) {
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
        rt.reload("file change", false).await;
    }
}

/// Watches until the agent stops; reloads when the configuration's content changes.
pub fn spawn(rt: Arc<Runtime>) {
    tokio::spawn(async move {
        loop {
            // Only what the watch needs is kept, not the snapshot: a reload that this loop does
            // not see at once (SIGHUP, SetSecuredOption) must be able to drop the old
            // configuration and wipe its secrets.
            let (list, poll_every) = {
                let snapshot = rt.snapshot();
                (watch_list(&snapshot), snapshot.daemon.poll)
            };
            let (tx, mut rx) = mpsc::channel::<()>(256);
            let mut watcher = match notify::recommended_watcher(
                move |res: notify::Result<notify::Event>| {
                    if res.is_ok() {
                        let _ = tx.try_send(());
                    }
                },
            ) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "file events unavailable; checking the configuration every {poll_every:?}");
                    None
                }
            };
            if let Some(w) = watcher.as_mut() {
                for (dir, mode) in &list {
                    if let Err(e) = w.watch(dir, *mode) {
                        tracing::warn!(folder = %dir.display(), error = %e, "cannot watch; relying on the periodic check");
                    }
                }
            }
            // A change made while the watches were being (re)armed is not lost.
            check(&rt).await;
            let mut poll = tokio::time::interval(poll_every);
            poll.tick().await;
            loop {
                tokio::select! {
                    _ = rt.stopping.cancelled() => return,
                    ev = rx.recv(), if watcher.is_some() => {
                        if ev.is_none() {
                            watcher = None;
                            continue;
                        }
                        let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
                        while tokio::time::Instant::now() < until
                            && let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await
                        {}
                    }
                    _ = poll.tick() => {}
                }
                let generation = rt.config_state().generation;
                check(&rt).await;
                // Re-arm when the configuration moved or a watched folder appeared or changed.
                if rt.config_state().generation != generation || watch_list(&rt.snapshot()) != list
                {
                    break;
                }
            }
            drop(watcher);
        }
    });
}
