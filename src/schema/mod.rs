//! The schema model (a connection's tables and columns) and its store under `Work/Schemas/`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Value types, numbered as in the established agent's ConnectionTable model (COMPAT.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueType {
    String = 0,
    Bytes = 1,
    Int32 = 2,
    Int64 = 3,
    DateTime = 4,
    Bool = 5,
    Guid = 6,
    Double = 7,
    Binary = 8,
    Byte = 9,
    Int16 = 10,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KeyType {
    #[default]
    None = 0,
    Primary = 1,
    Unique = 2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaColumn {
    pub name: String,
    pub value_type: ValueType,
    pub key_type: KeyType,
    pub multivalued: bool,
    /// Whether the source allows NULL here, when it says.
    pub nullable: Option<bool>,
    /// The type as the source names it (`VARCHAR(40)`, `integer`, ...), when it has one.
    pub source_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaTable {
    /// The connection table name: the output file name without `.csv`.
    pub name: String,
    /// What the table is read from in the source (a table name, a query, a file).
    pub source: String,
    pub columns: Vec<SchemaColumn>,
    /// A table or view of the source system listed by discovery (`schema.table`), rather than a
    /// connection table this connection exports.
    #[serde(default)]
    pub source_table: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub connection: String,
    pub package: String,
    pub discovered_at: DateTime<Utc>,
    pub tables: Vec<SchemaTable>,
}

/// Why a discovery failed, when it last did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaFailure {
    pub at: DateTime<Utc>,
    /// "config", "source" or "system".
    pub class: String,
    pub message: String,
}

/// Everything stored about one connection's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaState {
    pub connection: String,
    /// The last schema discovered successfully.
    pub schema: Option<Schema>,
    /// SHA-256 (hex) of `schema.tables`: changes exactly when tables or columns change.
    pub fingerprint: Option<String>,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// The last failure, if it is newer than the last success.
    pub failure: Option<SchemaFailure>,
    /// What was last queued to the control plane: a fingerprint, or `failure:<at>`.
    pub reported: Option<String>,
}

/// Where a connection's schema stands.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaStatus {
    None,
    Refreshed(DateTime<Utc>),
    Failed(SchemaFailure),
}

impl SchemaState {
    pub fn empty(connection: &str) -> Self {
        SchemaState {
            connection: connection.to_string(),
            schema: None,
            fingerprint: None,
            refreshed_at: None,
            failure: None,
            reported: None,
        }
    }

    pub fn status(&self) -> SchemaStatus {
        match (&self.failure, self.refreshed_at) {
            (Some(f), Some(ok)) if f.at < ok => SchemaStatus::Refreshed(ok),
            (Some(f), _) => SchemaStatus::Failed(f.clone()),
            (None, Some(ok)) => SchemaStatus::Refreshed(ok),
            (None, None) => SchemaStatus::None,
        }
    }
}

/// The fingerprint of a schema's tables and columns.
pub fn fingerprint(schema: &Schema) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(&schema.tables).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write the schema file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Schemas kept as `<Work>/Schemas/<connection>.json`, one file per connection (lower-cased name:
/// identifiers ignore case).
#[derive(Debug, Clone)]
pub struct SchemaStore {
    dir: PathBuf,
}

impl SchemaStore {
    pub fn new(work_folder: &Path) -> Self {
        SchemaStore {
            dir: work_folder.join("Schemas"),
        }
    }

    pub fn path_for(&self, connection: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", connection.to_ascii_lowercase()))
    }

    /// The stored state; an empty one when there is none (or it cannot be read).
    pub fn load(&self, connection: &str) -> SchemaState {
        crate::fsutil::read_limited(
            &self.path_for(connection),
            crate::fsutil::limits::STATE_FILE,
            "a schema file",
        )
        .ok()
        .and_then(|b| serde_json::from_slice::<SchemaState>(&b).ok())
        .map(|mut s| {
            s.connection = connection.to_string();
            s
        })
        .unwrap_or_else(|| SchemaState::empty(connection))
    }

    /// Saves atomically: a partial file, fsync, rename.
    pub fn save(&self, state: &SchemaState) -> Result<PathBuf, StoreError> {
        let path = self.path_for(&state.connection);
        let err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let text = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
        crate::fsutil::write_atomically(&path, &text).map_err(err)?;
        Ok(path)
    }

    pub fn remove(&self, connection: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path_for(connection)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
