//! The validated configuration snapshot: typed, cross-referenced, immutable once built.

use super::diag::{Diagnostics, Location};
use super::ident::Ident;
use crate::packages::{Category, Package, Settings};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct AgentDecl {
    pub identifier: Ident,
    pub display_name: String,
    pub uri: Option<String>,
    #[serde(skip)]
    pub loc: Location,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connector {
    pub identifier: Ident,
    pub display_name: String,
    /// The agent that serves the connector; `None` means this one.
    pub agent: Option<Ident>,
    pub is_deactivated: bool,
    #[serde(skip)]
    pub loc: Location,
}

/// `DeactivationExportFulfill`: which half of a connection is switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Deactivation {
    None,
    Export,
    Fulfill,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transformation {
    /// The element's attributes as written (applied by a later stage; kept here).
    pub attributes: BTreeMap<String, String>,
    #[serde(skip)]
    pub loc: Location,
}

/// Whether a connection's settings section is usable.
#[derive(Debug, Clone)]
pub enum SettingsState {
    Ok(Arc<Settings>),
    Missing,
    Invalid,
}

impl SettingsState {
    pub fn label(&self) -> &'static str {
        match self {
            SettingsState::Ok(_) => "ok",
            SettingsState::Missing => "missing",
            SettingsState::Invalid => "invalid",
        }
    }
}

#[derive(Clone)]
pub struct Connection {
    pub identifier: Ident,
    pub display_name: String,
    pub connector: Ident,
    /// The package as written in the XML.
    pub package_name: String,
    /// The package, when the name is known.
    pub package: Option<Arc<dyn Package>>,
    pub deactivation: Deactivation,
    pub transformations: Vec<Transformation>,
    pub settings: SettingsState,
    /// Served by this agent (its connector names this agent, or no agent).
    pub served: bool,
    pub loc: Location,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("identifier", &self.identifier)
            .field("connector", &self.connector)
            .field("package", &self.package_name)
            .field("settings", &self.settings)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn category(&self) -> Option<Category> {
        self.package.as_ref().map(|p| p.info().category)
    }

    pub fn package_id(&self) -> &str {
        self.package
            .as_ref()
            .map(|p| p.info().id)
            .unwrap_or(&self.package_name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingProperty {
    pub identifier: String,
    pub connection_column: Option<String>,
    pub is_primary_key: bool,
    pub is_unique_key: bool,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityTypeMapping {
    pub identifier: Ident,
    pub connector: Option<Ident>,
    pub connection_table: Option<String>,
    /// The connection the table belongs to.
    pub connection: Option<Ident>,
    pub properties: Vec<MappingProperty>,
    #[serde(skip)]
    pub loc: Location,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityAssociationMapping {
    pub identifier: Ident,
    pub connector: Ident,
    pub connection_table: Option<String>,
    pub connection: Option<Ident>,
    pub column1: String,
    pub column2: String,
    #[serde(skip)]
    pub loc: Location,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportTask {
    /// The task's identifier; tasks without one are named `ExportTask@file:line`.
    pub identifier: Ident,
    pub display_name: String,
    pub agent: Ident,
    pub connection: Ident,
    pub continue_on_error: bool,
    pub ignore_cookie_file: bool,
    /// Runs on this agent.
    pub served: bool,
    /// `<TaskDependsOnTask ParentTask=...>`: in a job, this task runs only if each of these
    /// succeeded earlier in the same job run.
    pub depends_on: Vec<Ident>,
    #[serde(skip)]
    pub loc: Location,
}

/// A task of a kind this agent does not run (`PrepareSynchronizationTask`, `FulfillTask`, the
/// server's `SynchronizeTask`, ...): read so that jobs that name it resolve; a job logs its step
/// as "not run by this agent" and goes on.
#[derive(Debug, Clone, Serialize)]
pub struct OtherTask {
    pub identifier: Ident,
    /// The element's name, e.g. `PrepareSynchronizationTask`.
    pub kind: String,
    pub agent: Option<Ident>,
    pub depends_on: Vec<Ident>,
    #[serde(skip)]
    pub loc: Location,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStep {
    pub task: Ident,
    /// `Level`, when written. Steps without one run first, one after the other in document
    /// order; then each explicit level in increasing order, its steps together.
    pub level: Option<i64>,
}

impl Job {
    /// The job's steps as groups run one after the other; the steps of a group run together.
    pub fn groups(&self) -> Vec<Vec<&JobStep>> {
        let mut groups: Vec<Vec<&JobStep>> = self
            .steps
            .iter()
            .filter(|s| s.level.is_none())
            .map(|s| vec![s])
            .collect();
        let mut levels: std::collections::BTreeMap<i64, Vec<&JobStep>> = Default::default();
        for s in &self.steps {
            if let Some(l) = s.level {
                levels.entry(l).or_default().push(s);
            }
        }
        groups.extend(levels.into_values());
        groups
    }
}

/// A job's schedule: a cron expression of five fields (minute first) or six (second first), in
/// UTC or the server's time.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expression: String,
    pub cron: croner::Cron,
    /// `CronTimeZone` 0 (UTC, the default) or 1 (the server's local time).
    pub utc: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub identifier: Ident,
    pub display_name: String,
    pub agent: Option<Ident>,
    #[serde(skip)]
    pub schedule: Option<CronSchedule>,
    pub steps: Vec<JobStep>,
    #[serde(skip)]
    pub loc: Location,
}

/// Everything the agent runs on. Built only by `config::load`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub settings_file: PathBuf,
    pub agent: Ident,
    pub temp_folder: PathBuf,
    pub work_folder: PathBuf,
    pub xml_folder: PathBuf,
    pub sources_root_paths: Vec<PathBuf>,
    pub max_task_batch_size: usize,
    pub grpc: super::service::GrpcSettings,
    pub control_plane: Option<super::service::ControlPlaneSettings>,
    pub daemon: super::service::DaemonSettings,
    pub xml_files: Vec<PathBuf>,
    pub agents: Vec<AgentDecl>,
    pub connectors: Vec<Connector>,
    pub connections: Vec<Connection>,
    pub entity_type_mappings: Vec<EntityTypeMapping>,
    pub association_mappings: Vec<EntityAssociationMapping>,
    pub export_tasks: Vec<ExportTask>,
    /// Tasks of other kinds (run by the server or not implemented here).
    pub other_tasks: Vec<OtherTask>,
    pub jobs: Vec<Job>,
    /// Elements of the configuration that the agent does not use, by name, with their count.
    pub skipped: BTreeMap<String, usize>,
}

impl Snapshot {
    pub fn export_output_folder(&self) -> PathBuf {
        self.temp_folder.join("ExportOutput")
    }

    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.identifier.matches(id))
    }

    pub fn export_task(&self, id: &str) -> Option<&ExportTask> {
        self.export_tasks.iter().find(|t| t.identifier.matches(id))
    }

    /// The agent that serves a connection: its connector's `Agent` (none: every agent).
    pub fn served_by(&self, c: &Connection) -> Option<&Ident> {
        self.connectors
            .iter()
            .find(|k| k.identifier == c.connector)
            .and_then(|k| k.agent.as_ref())
    }

    /// How a listing says who serves a connection: "here", or "other agent: <id>".
    pub fn served_label(&self, c: &Connection) -> String {
        match (c.served, self.served_by(c)) {
            (true, _) => "here".to_string(),
            (false, Some(a)) => format!("other agent: {a}"),
            (false, None) => "other agent".to_string(),
        }
    }

    /// A task of another kind.
    pub fn other_task(&self, id: &str) -> Option<&OtherTask> {
        self.other_tasks.iter().find(|t| t.identifier.matches(id))
    }

    /// The `ConnectionColumn`s that the entity type mappings read from each connection table of
    /// `id` (table name lower-cased, without `.csv`).
    pub fn mapped_columns(&self, id: &Ident) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for m in self
            .entity_type_mappings
            .iter()
            .filter(|m| m.connection.as_ref() == Some(id))
        {
            let Some(table) = &m.connection_table else {
                continue;
            };
            let Some(t) = crate::table_name::TableName::parse(table).map(|t| t.key()) else {
                continue;
            };
            let cols: Vec<String> = m
                .properties
                .iter()
                .filter_map(|p| p.connection_column.clone())
                .collect();
            match out.iter_mut().find(|(n, _)| *n == t) {
                Some((_, c)) => {
                    for x in cols {
                        if !c.contains(&x) {
                            c.push(x);
                        }
                    }
                }
                None => out.push((t, cols)),
            }
        }
        out
    }

    /// What references a connection: export tasks and mappings, by kind and name.
    pub fn usage(&self, id: &Ident) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = self
            .export_tasks
            .iter()
            .filter(|t| &t.connection == id)
            .map(|t| ("ExportTask", t.identifier.to_string()))
            .collect();
        out.extend(
            self.entity_type_mappings
                .iter()
                .filter(|m| m.connection.as_ref() == Some(id))
                .map(|m| ("EntityTypeMapping", m.identifier.to_string())),
        );
        out.extend(
            self.association_mappings
                .iter()
                .filter(|m| m.connection.as_ref() == Some(id))
                .map(|m| ("EntityAssociationMapping", m.identifier.to_string())),
        );
        out
    }
}

/// The result of loading: a snapshot (usable only when there is no error) and every problem found.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub diagnostics: Diagnostics,
    /// The content hash of the files this load read (see `config::inputs`).
    pub inputs_hash: String,
}
