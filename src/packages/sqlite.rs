//! The `Sqlite` package: an embedded database file, opened read-only. The demo and test default.

use super::connstr::Part;
use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::sql::{self, QuerySource, TableQuery};
use super::value::Value;
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport, run_blocking,
};
use crate::schema::{KeyType, Schema, SchemaColumn, SchemaTable, ValueType};
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, Utc};
use rusqlite::{Connection, OpenFlags, types::ValueRef};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct SqlitePackage;

const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "ConnectionString",
        section: Section::General,
        kind: SettingKind::ConnectionString,
        default: None,
        required: true,
        secured: false,
        description: "Data Source=<database file>. The file is opened read-only; relative paths start at the settings file's folder.",
    },
    sql::SQL_COMMAND,
    sql::SQL_FILE,
    sql::TABLES,
    sql::TIMEOUT,
    sql::CSV_ENCODING,
    sql::PROVIDER_CLASS_FULL_NAME,
    sql::PROVIDER_DLL_NAME,
];

static INFO: PackageInfo = PackageInfo {
    id: "Sqlite",
    aliases: &["Usercube.SQL.SQLite@0000001", "SQLite"],
    category: Category::Database,
    description: "SQLite database file, opened read-only",
    has_incremental: false,
    settings: SETTINGS,
};

impl SqlitePackage {
    fn database_path(settings: &Settings) -> Result<PathBuf, Problem> {
        let hint = "write ConnectionString as \"Data Source=path/to/file.db\"";
        let cs = settings
            .connection_string("ConnectionString")
            .ok_or_else(|| {
                Problem::new(
                    Some("ConnectionString"),
                    "ConnectionString is not set",
                    hint,
                )
            })?;
        if cs
            .get(&["Password", "PWD"])
            .is_some_and(|p| matches!(p, Part::Secret(_)))
        {
            return Err(Problem::new(
                Some("ConnectionString"),
                "encrypted SQLite databases are not supported: the bundled SQLite has no encryption",
                "remove Password from the connection string and use an unencrypted copy of the database",
            ));
        }
        let source = cs
            .plain(&["Data Source", "DataSource", "Filename"])
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                Problem::new(
                    Some("ConnectionString"),
                    "the connection string has no Data Source",
                    hint,
                )
            })?;
        if source == ":memory:" {
            return Err(Problem::new(
                Some("ConnectionString"),
                "an in-memory database has nothing to export",
                hint,
            ));
        }
        Ok(settings.resolve(source.trim()))
    }

    fn open(conn: &ConnectionRef) -> Result<Connection, PackageError> {
        let path =
            Self::database_path(&conn.settings).map_err(|p| PackageError::config(p.message))?;
        if !path.is_file() {
            return Err(PackageError::config(format!(
                "the SQLite database {} does not exist; check Data Source in ConnectionString",
                path.display()
            )));
        }
        let mut db = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| PackageError::source(format!("cannot open {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5))
            .map_err(|e| PackageError::source(e.to_string()))?;
        // Stop a long query on cancel or when Timeout has passed.
        let deadline = conn
            .settings
            .integer("Timeout")
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs(t.min(sql::MAX_TIMEOUT_SECONDS).unsigned_abs()))
            .and_then(|t| Instant::now().checked_add(t));
        let cancel = conn.cancel.clone();
        db.progress_handler(
            10_000,
            Some(move || cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() > d)),
        )
        .map_err(|e| PackageError::system(e.to_string()))?;
        Ok(db)
    }
}

/// Where a query failed: compiling it (the query or a table name is wrong: fix the settings) or
/// while reading rows (the data or the database: ask the source's owner).
#[derive(Clone, Copy)]
enum Stage {
    Prepare,
    Read,
}

fn query_error(
    q: &TableQuery,
    e: rusqlite::Error,
    stage: Stage,
    cancel: &CancellationToken,
    timeout: Option<i64>,
) -> PackageError {
    if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted)
    {
        if cancel.is_cancelled() {
            return PackageError::cancelled();
        }
        return PackageError::source(format!(
            "{}: stopped after the Timeout of {} seconds",
            q.describe(),
            timeout.unwrap_or(0)
        ));
    }
    let is_sql_error = matches!(&e, rusqlite::Error::SqlInputError { .. })
        || matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::Unknown);
    let class = match stage {
        Stage::Prepare if is_sql_error => PackageError::config,
        _ => PackageError::source,
    };
    class(format!("{}: {e}", q.describe()))
}

/// The declared type's value type, following SQLite's affinity rules plus common type names.
fn value_type(decl: Option<&str>) -> ValueType {
    let Some(d) = decl.map(str::to_ascii_uppercase) else {
        return ValueType::String;
    };
    if d.contains("BOOL") {
        ValueType::Bool
    } else if d.contains("GUID") || d.contains("UUID") {
        ValueType::Guid
    } else if d.contains("DATE") || d.contains("TIME") {
        ValueType::DateTime
    } else if d.contains("SMALLINT") {
        ValueType::Int16
    } else if d.contains("INT") {
        ValueType::Int64
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        ValueType::String
    } else if d.contains("BLOB") || d.is_empty() {
        ValueType::Binary
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ValueType::Double
    } else {
        // NUMERIC/DECIMAL affinity: kept exact, as text.
        ValueType::String
    }
}

/// How a stored value is written, given its column's declared type.
#[derive(Clone, Copy)]
enum Hint {
    None,
    Bool,
    Date,
    DateTime,
    Guid,
}

fn hint(decl: Option<&str>) -> Hint {
    let d = decl.map(str::to_ascii_uppercase).unwrap_or_default();
    if d.contains("BOOL") {
        Hint::Bool
    } else if d.contains("GUID") || d.contains("UUID") {
        Hint::Guid
    } else if d == "DATE" {
        Hint::Date
    } else if d.contains("DATE") || d.contains("TIMESTAMP") {
        Hint::DateTime
    } else {
        Hint::None
    }
}

/// `None` when a TEXT value is not valid UTF-8 (SQLite stores what it is given).
fn convert(v: ValueRef<'_>, hint: Hint) -> Option<Value> {
    Some(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match hint {
            Hint::Bool if i == 0 || i == 1 => Value::Bool(i == 1),
            _ => Value::Int(i),
        },
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(bytes) => {
            let s = std::str::from_utf8(bytes).ok()?;
            match hint {
                Hint::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(Value::Date)
                    .unwrap_or_else(|_| Value::Text(s.to_owned())),
                Hint::DateTime => [
                    "%Y-%m-%d %H:%M:%S%.f",
                    "%Y-%m-%dT%H:%M:%S%.f",
                    "%Y-%m-%d %H:%M",
                    "%Y-%m-%dT%H:%M",
                ]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(Value::DateTime)
                .unwrap_or_else(|| Value::Text(s.to_owned())),
                Hint::Bool if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                    Value::Bool(s.eq_ignore_ascii_case("true"))
                }
                Hint::Guid => parse_guid(s)
                    .map(Value::Guid)
                    .unwrap_or_else(|| Value::Text(s.to_owned())),
                _ => Value::Text(s.to_owned()),
            }
        }
        ValueRef::Blob(b) => match (hint, <[u8; 16]>::try_from(b)) {
            (Hint::Guid, Ok(g)) => Value::Guid(g),
            _ => Value::Bytes(b.to_vec()),
        },
    })
}

fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 || s.trim_matches(|c| c == '{' || c == '}').len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Primary and single-column unique keys of a table, by column name (lower-cased).
fn keys_of(db: &Connection, table: &str) -> Vec<(String, KeyType)> {
    let mut keys = Vec::new();
    let (schema, name) = match table.rsplit_once('.') {
        Some((s, n)) => (sql::quote_ansi(s), n),
        None => ("main".to_string(), table),
    };
    let pragma = |p: &str, arg: &str| format!("PRAGMA {schema}.{p}({})", sql::quote_ansi(arg));
    if let Ok(mut st) = db.prepare(&pragma("table_info", name)) {
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)));
        if let Ok(rows) = rows {
            keys.extend(
                rows.flatten()
                    .filter(|(_, pk)| *pk > 0)
                    .map(|(c, _)| (c.to_ascii_lowercase(), KeyType::Primary)),
            );
        }
    }
    let indexes: Vec<String> = db
        .prepare(&pragma("index_list", name))
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
                .map(|rows| {
                    rows.flatten()
                        .filter(|(_, u)| *u == 1)
                        .map(|(n, _)| n)
                        .collect()
                })
        })
        .unwrap_or_default();
    for idx in indexes {
        let cols: Vec<String> = db
            .prepare(&pragma("index_info", &idx))
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(2))
                    .map(|r| r.flatten().collect())
            })
            .unwrap_or_default();
        if let [c] = cols.as_slice()
            && !keys.iter().any(|(k, _)| k.eq_ignore_ascii_case(c))
        {
            keys.push((c.to_ascii_lowercase(), KeyType::Unique));
        }
    }
    keys
}

#[async_trait]
impl Package for SqlitePackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        let mut problems = sql::check_queries(settings);
        match Self::database_path(settings) {
            Err(p) => problems.push(p),
            Ok(path) if !path.is_file() => problems.push(Problem::new(
                Some("ConnectionString"),
                format!("the SQLite database {} does not exist", path.display()),
                "correct Data Source (relative paths start at the settings file's folder)",
            )),
            Ok(_) => {}
        }
        problems
    }

    fn source_paths(&self, settings: &Settings) -> Vec<(&'static str, PathBuf)> {
        Self::database_path(settings)
            .map(|p| vec![("ConnectionString", p)])
            .unwrap_or_default()
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let db = Self::open(&conn)?;
            let objects: i64 = db
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(|e| PackageError::source(format!("cannot read the database: {e}")))?;
            let mut checks = vec![format!(
                "opened {} read-only (SQLite {}, {objects} schema objects)",
                Self::database_path(&conn.settings)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                rusqlite::version()
            )];
            for q in sql::table_queries(&conn.settings)? {
                db.prepare(&q.sql(sql::quote_ansi)).map_err(|e| {
                    query_error(
                        &q,
                        e,
                        Stage::Prepare,
                        &conn.cancel,
                        conn.settings.integer("Timeout"),
                    )
                })?;
                checks.push(format!(
                    "{}: {} compiles",
                    sql::table_name(conn.identifier.as_str(), &q),
                    q.describe()
                ));
            }
            Ok(TestReport { checks })
        })
        .await
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let db = Self::open(&conn)?;
            let mut tables = Vec::new();
            for q in sql::table_queries(&conn.settings)? {
                let timeout = conn.settings.integer("Timeout");
                let st = db
                    .prepare(&q.sql(sql::quote_ansi))
                    .map_err(|e| query_error(&q, e, Stage::Prepare, &conn.cancel, timeout))?;
                let keys = match &q.source {
                    QuerySource::Table(t) => keys_of(&db, t),
                    QuerySource::Sql(_) => Vec::new(),
                };
                let columns = st
                    .columns()
                    .map(|c| SchemaColumn {
                        name: c.name().to_string(),
                        value_type: value_type(c.decl_type()),
                        key_type: keys
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(c.name()))
                            .map(|(_, t)| *t)
                            .unwrap_or_default(),
                        multivalued: false,
                        nullable: None,
                        source_type: c.decl_type().map(str::to_string),
                    })
                    .collect();
                tables.push(SchemaTable {
                    name: sql::table_name(conn.identifier.as_str(), &q),
                    source: q.describe(),
                    columns,
                    source_table: false,
                });
            }
            Ok(Schema {
                connection: conn.identifier.to_string(),
                package: INFO.id.to_string(),
                discovered_at: Utc::now(),
                tables,
            })
        })
        .await
    }

    async fn export(
        &self,
        conn: &ConnectionRef,
        _mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let mut db = Self::open(&conn)?;
            let queries = sql::table_queries(&conn.settings)?;
            let timeout = conn.settings.integer("Timeout");
            // One read transaction: every table comes from the same snapshot of the database.
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)
                .map_err(|e| {
                    PackageError::source(format!("cannot start a read transaction: {e}"))
                })?;
            for q in &queries {
                let mut st = tx
                    .prepare(&q.sql(sql::quote_ansi))
                    .map_err(|e| query_error(q, e, Stage::Prepare, &conn.cancel, timeout))?;
                let names: Vec<String> = st.columns().map(|c| c.name().to_string()).collect();
                let hints: Vec<Hint> = st.columns().map(|c| hint(c.decl_type())).collect();
                let mut writer = sink.table(q.name.as_deref(), names.clone())?;
                let mut row_number = 0u64;
                let mut rows = st
                    .query([])
                    .map_err(|e| query_error(q, e, Stage::Read, &conn.cancel, timeout))?;
                loop {
                    let row = match rows.next() {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            return Err(query_error(q, e, Stage::Read, &conn.cancel, timeout));
                        }
                    };
                    row_number += 1;
                    let mut out = Vec::with_capacity(hints.len());
                    for (i, h) in hints.iter().enumerate() {
                        let v = row
                            .get_ref(i)
                            .map_err(|e| query_error(q, e, Stage::Read, &conn.cancel, timeout))?;
                        let value = convert(v, *h).ok_or_else(|| {
                            PackageError::source(format!(
                                "{}: row {row_number}, column {}: the text is not valid UTF-8",
                                q.describe(),
                                names.get(i).map_or("?", String::as_str)
                            ))
                        })?;
                        out.push(value);
                    }
                    writer.push_blocking(out)?;
                }
                writer.finish_blocking()?;
            }
            Ok(ExportOutcome::Exported)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_types_follow_affinity() {
        assert_eq!(value_type(Some("BIGINT")), ValueType::Int64);
        assert_eq!(value_type(Some("varchar(20)")), ValueType::String);
        assert_eq!(value_type(Some("DATETIME")), ValueType::DateTime);
        assert_eq!(value_type(Some("BOOLEAN")), ValueType::Bool);
        assert_eq!(value_type(Some("DOUBLE PRECISION")), ValueType::Double);
        assert_eq!(value_type(Some("BLOB")), ValueType::Binary);
        assert_eq!(value_type(Some("DECIMAL(10,2)")), ValueType::String);
        assert_eq!(value_type(None), ValueType::String);
    }

    #[test]
    fn guid_text_forms() {
        assert!(parse_guid("{12345678-9abc-def0-0001-020304050607}").is_some());
        assert!(parse_guid("123456789abcdef00001020304050607").is_none());
        assert!(parse_guid("zz345678-9abc-def0-0001-020304050607").is_none());
    }
}
