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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub connection: String,
    pub package: String,
    pub discovered_at: DateTime<Utc>,
    pub tables: Vec<SchemaTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write the schema file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Schemas kept as `<Work>/Schemas/<connection>.json`, one file per connection.
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
        self.dir.join(format!("{connection}.json"))
    }

    /// Saves atomically: a partial file, fsync, rename.
    pub fn save(&self, schema: &Schema) -> Result<PathBuf, StoreError> {
        let path = self.path_for(&schema.connection);
        let err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let text = serde_json::to_vec_pretty(schema).map_err(|e| err(std::io::Error::other(e)))?;
        crate::fsutil::write_atomically(&path, &text).map_err(err)?;
        Ok(path)
    }
}
