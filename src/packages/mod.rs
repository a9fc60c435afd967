//! Packages: one module per technology, all behind the [`Package`] trait.
//!
//! A package declares its settings ([`SettingSpec`]), checks them, tests a connection, discovers
//! its schema and exports its tables into a [`RowSink`]. Packages never read configuration files
//! and never write files directly: the sink (implemented by `export`) owns the output.

pub mod connstr;
pub mod csv;
pub mod decode;
pub mod ldap;

pub mod postgres;
pub mod sink;
pub mod spec;
pub mod sql;
pub mod sqlite;
pub mod sqlserver;
pub mod structured;
pub mod value;

use crate::ident::Ident;
use crate::schema::Schema;
use async_trait::async_trait;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use sink::{RowSink, SinkError, TableStats, TableWriter};
pub use spec::{Section, SettingKind, SettingSpec, SettingValue, Settings};
pub use value::{Row, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Category {
    Database,
    File,
    Directory,
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What a package is, independent of any connection.
#[derive(Debug, Clone, Serialize)]
pub struct PackageInfo {
    pub id: &'static str,
    /// Other names accepted in `<Connection Package="...">` (compared case-insensitively).
    pub aliases: &'static [&'static str],
    pub category: Category,
    pub description: &'static str,
    /// Whether complete and incremental exports differ for this package.
    pub has_incremental: bool,
    pub settings: &'static [SettingSpec],
}

/// A problem with a connection's settings that the package found (beyond types and required keys).
#[derive(Debug, Clone)]
pub struct Problem {
    /// The setting at fault, if one is.
    pub setting: Option<&'static str>,
    pub message: String,
    pub hint: String,
    /// A note, not an error: the connection stays usable (e.g. a keyword that is accepted and
    /// ignored). Validation shows it as a warning.
    pub warning: bool,
}

impl Problem {
    /// A note that does not make the settings invalid.
    pub fn note(
        setting: Option<&'static str>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Problem {
            warning: true,
            ..Problem::new(setting, message, hint)
        }
    }

    pub fn new(
        setting: Option<&'static str>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Problem {
            setting,
            message: message.into(),
            hint: hint.into(),
            warning: false,
        }
    }
}

/// The class of a failure, so that a caller knows whom to ask: the operator (config), the owner
/// of the source system (source), or the agent's host (system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    Config,
    Source,
    System,
    Cancelled,
}

impl FailureClass {
    /// `config`, `source`, `system` or `cancelled`, as stored and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Config => "config",
            FailureClass::Source => "source",
            FailureClass::System => "system",
            FailureClass::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PackageError {
    pub class: FailureClass,
    pub message: String,
}

impl PackageError {
    pub fn config(message: impl Into<String>) -> Self {
        PackageError {
            class: FailureClass::Config,
            message: message.into(),
        }
    }
    pub fn source(message: impl Into<String>) -> Self {
        PackageError {
            class: FailureClass::Source,
            message: message.into(),
        }
    }
    pub fn system(message: impl Into<String>) -> Self {
        PackageError {
            class: FailureClass::System,
            message: message.into(),
        }
    }
    pub fn cancelled() -> Self {
        PackageError {
            class: FailureClass::Cancelled,
            message: "the export was cancelled".into(),
        }
    }
}

impl From<SinkError> for PackageError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Cancelled => PackageError::cancelled(),
            SinkError::BadTableName(_) => PackageError::config(e.to_string()),
            other => PackageError::system(other.to_string()),
        }
    }
}

/// One connection as a package sees it: its identifier and its validated settings.
#[derive(Debug, Clone)]
pub struct ConnectionRef {
    pub identifier: Ident,
    pub settings: Arc<Settings>,
    pub cancel: CancellationToken,
    /// The connection columns that EntityTypeMappings read, per connection table (lower-cased
    /// name without `.csv`): packages whose columns depend on the mappings use them.
    pub mapped_columns: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    Complete,
    Incremental,
}

/// What an export did, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ExportOutcome {
    /// Every table was written to the sink and finished.
    Exported,
    /// The export was deliberately not run (e.g. no source for this mode); nothing was written.
    NotRun { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// One line per thing checked, e.g. "opened /data/hr.db read-only".
    pub checks: Vec<String>,
}

#[async_trait]
pub trait Package: Send + Sync + 'static {
    fn info(&self) -> &'static PackageInfo;

    /// Checks rules that span settings (either Path or PathIncremental, ...). Types and required
    /// settings are already checked against the spec.
    fn check(&self, settings: &Settings) -> Vec<Problem>;

    /// The local files this connection reads, with the setting that names each (for the
    /// `SourcesRootPaths` check). Regex settings name their folder.
    fn source_paths(&self, settings: &Settings) -> Vec<(&'static str, PathBuf)> {
        let _ = settings;
        Vec::new()
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError>;

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError>;

    /// Writes every table into `sink` and finishes each. An error leaves the export unpublished.
    async fn export(
        &self,
        conn: &ConnectionRef,
        mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError>;
}

/// The packages this build knows.
pub struct Registry {
    packages: Vec<Arc<dyn Package>>,
}

impl Registry {
    pub fn builtin() -> Self {
        Registry {
            packages: vec![
                Arc::new(csv::CsvPackage),
                Arc::new(sqlite::SqlitePackage),
                Arc::new(postgres::PostgresPackage),
                Arc::new(ldap::LdapPackage),
                Arc::new(sqlserver::SqlServerPackage),
                Arc::new(sqlserver::entitlements::SqlServerEntitlementsPackage),
            ],
        }
    }

    /// Finds a package by id or alias, ignoring case.
    pub fn find(&self, name: &str) -> Option<Arc<dyn Package>> {
        let name = name.trim();
        self.packages
            .iter()
            .find(|p| {
                let info = p.info();
                info.id.eq_ignore_ascii_case(name)
                    || info.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
            .cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Package>> {
        self.packages.iter()
    }

    /// "Csv (alias Usercube.CSV@0000001), ..." for error messages.
    pub fn known_names(&self) -> String {
        self.packages
            .iter()
            .map(|p| {
                let i = p.info();
                if i.aliases.is_empty() {
                    i.id.to_string()
                } else {
                    format!("{} (or {})", i.id, i.aliases.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One error holding several problems (a structured setting read at run time): their messages.
pub fn problems_error(problems: Vec<Problem>) -> PackageError {
    PackageError::config(
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Runs blocking package code on the blocking pool; a panic inside becomes a system error.
pub async fn run_blocking<T, F>(f: F) -> Result<T, PackageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PackageError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(PackageError::system(format!(
            "the package task failed: {e}"
        ))),
    }
}
