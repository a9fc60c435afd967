//! Turning the raw files into a validated [`Snapshot`], reporting every problem at once.

use super::diag::{Diagnostic, Diagnostics, Location, Origin};
use super::ident::{Ident, check_connection_identifier};
use super::model::*;
use super::service::{ControlPlaneSettings, DaemonSettings, GrpcSettings};
use super::settings::SettingsTree;
use super::xml::{self, RawElement};
use crate::packages::spec::{SettingSpec, SettingValue, coerce};
use crate::packages::{Registry, Settings};
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroize;

/// What `load` needs besides the files.
#[derive(Clone)]
pub struct LoadOptions {
    pub settings_path: PathBuf,
    /// The process environment (name, value), passed in so tests control it.
    pub env: Vec<(String, String)>,
}

impl LoadOptions {
    /// Options with the process environment. Variables whose name or value is not UTF-8 are
    /// skipped (they cannot be settings overrides).
    pub fn from_env(settings_path: PathBuf) -> Self {
        LoadOptions {
            settings_path,
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

/// Our copy of the environment may hold secrets (`CONNAGENT__...` overrides): wiped when dropped.
/// (The process environment itself keeps them for the life of the process.)
impl Drop for LoadOptions {
    fn drop(&mut self) {
        for (_, v) in &mut self.env {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    /// The environment may hold secrets: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("settings_path", &self.settings_path)
            .field("env", &format_args!("{} variables", self.env.len()))
            .finish()
    }
}

mod attrs;
mod connections;
mod elements;
mod references;
mod top;

use attrs::*;
use connections::*;
use elements::*;
use references::*;
use top::*;

/// The stack of the thread that loads a configuration ([`load_isolated`]). Loading walks bounded
/// trees (XML at most [`super::xml::MAX_DEPTH`] deep, JSON at most serde_json's 128 levels), well
/// within this; it is large so that no future walk comes near it, and it is only address space
/// until used.
pub const LOAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// [`load`] on a thread of its own whose stack the agent sets ([`LOAD_STACK_BYTES`]), whatever
/// thread calls it (a runtime worker has a small stack); a panic while loading becomes an error
/// diagnostic instead of taking the caller down. Every load of the CLI and the daemon goes
/// through here.
pub fn load_isolated(
    opts: LoadOptions,
    registry: std::sync::Arc<Registry>,
) -> Result<Loaded, Diagnostics> {
    let settings = opts.settings_path.clone();
    let failed = |message: String| {
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(Some(Origin::File(Location::file_only(&settings))), message).hint(
                "this is a defect of the agent: report it with the configuration that caused it",
            ),
        );
        d
    };
    let spawned = std::thread::Builder::new()
        .name("config-load".into())
        .stack_size(LOAD_STACK_BYTES)
        .spawn(move || load(&opts, &registry));
    match spawned {
        Err(e) => Err(failed(format!(
            "cannot start the thread that loads the configuration: {e}"
        ))),
        Ok(handle) => handle.join().unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(failed(format!(
                "loading the configuration stopped unexpectedly: {what}"
            )))
        }),
    }
}

/// Loads and validates everything. `Err` when not even the settings file could be read; otherwise a
/// snapshot with all the diagnostics (the snapshot is safe to run only without errors). No message
/// quotes a value that came from a reference, the encrypted overlay, a credential or the
/// connection store: such values are named instead, and, as a last line of defence, masked by
/// their name wherever a message would still hold one.
pub fn load(opts: &LoadOptions, registry: &Registry) -> Result<Loaded, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut hasher = super::inputs::InputsHasher::new();
    let Some(tree) = SettingsTree::load(&opts.settings_path, &opts.env, &mut hasher, &mut d) else {
        return Err(d);
    };
    let net = tree.concealed_redactor();
    let mut loaded = load_tree(&tree, hasher, d, registry);
    if !net.is_empty() {
        for diag in &mut loaded.diagnostics.0 {
            diag.message = net.redact(&diag.message);
            diag.hint = diag.hint.as_deref().map(|h| net.redact(h));
        }
    }
    Ok(loaded)
}

/// The load as a short pipeline of named passes, each adding its problems to `d`.
fn load_tree(
    tree: &SettingsTree,
    mut hasher: super::inputs::InputsHasher,
    mut d: Diagnostics,
    registry: &Registry,
) -> Loaded {
    let top = top_level(tree, &mut d);
    let xml_files = xml_files(tree, &top, &mut d);
    let mut elements = Vec::new();
    for f in &xml_files {
        elements.extend(xml::parse_file(f, &mut hasher, &mut d));
    }
    let mut declared = read_elements(&elements, registry, &top.agent, &mut d);
    let conn_ids: Vec<Ident> = declared
        .connections
        .iter()
        .map(|c| Ident::new(c.1))
        .collect();
    check_identities(&declared, &conn_ids, &mut d);
    check_connector_agents(&declared, &top.agent, &mut d);
    let sections = settings_sections(tree, &conn_ids, &mut d);
    let raw = std::mem::take(&mut declared.connections);
    let connections = build_connections(tree, &top, raw, &declared, &sections, registry, &mut d);
    check_tasks(&declared, &connections, &top.agent, &mut d);
    check_jobs(&declared, &mut d);
    resolve_mappings(&mut declared, &conn_ids, &mut d);
    let snapshot = Snapshot {
        settings_file: tree.path.clone(),
        agent: top.agent,
        temp_folder: top.temp_folder,
        work_folder: top.work_folder,
        xml_folder: top.xml_folder,
        sources_root_paths: top.sources_root_paths,
        max_task_batch_size: top.max_task_batch_size,
        grpc: top.grpc,
        control_plane: top.control_plane,
        daemon: top.daemon,
        xml_files,
        agents: declared.agents,
        connectors: declared.connectors,
        connections,
        entity_type_mappings: declared.etms,
        association_mappings: declared.eams,
        export_tasks: declared.tasks,
        other_tasks: declared.other_tasks,
        jobs: declared.jobs.into_iter().map(|(j, _)| j).collect(),
        skipped: declared.skipped,
    };
    Loaded {
        snapshot,
        diagnostics: d,
        inputs_hash: hasher.finish(),
    }
}
