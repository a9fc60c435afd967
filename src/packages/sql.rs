//! What the SQL-family packages share: the query settings (`SqlCommand`, `SqlFile`, `Tables`) and
//! how they turn into connection tables.

use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::{PackageError, Problem};
use std::collections::HashSet;

pub const SQL_COMMAND: SettingSpec = SettingSpec {
    name: "SqlCommand",
    section: Section::General,
    kind: SettingKind::Text,
    default: None,
    required: false,
    secured: false,
    description: "Query whose result is exported to <connection>.csv. Wins over SqlFile.",
};
pub const SQL_FILE: SettingSpec = SettingSpec {
    name: "SqlFile",
    section: Section::General,
    kind: SettingKind::Path,
    default: None,
    required: false,
    secured: false,
    description: "File holding the query for <connection>.csv (used when SqlCommand is not set).",
};
pub const TABLES: SettingSpec = SettingSpec {
    name: "Tables",
    section: Section::Additional,
    kind: SettingKind::Structured,
    default: None,
    required: false,
    secured: false,
    description: "More tables: a list of {\"Name\": ..., \"Table\": ...} or {\"Name\": ..., \"SqlCommand\": ...}, each exported to <connection>_<Name>.csv.",
};
pub const TIMEOUT: SettingSpec = SettingSpec {
    name: "Timeout",
    section: Section::Advanced,
    kind: SettingKind::Integer,
    default: None,
    required: false,
    secured: false,
    description: "Seconds a whole query may take; no limit when unset or 0.",
};

pub const CONNECTION_STRING_OPTIONS: SettingSpec = SettingSpec {
    name: "ConnectionStringOptions",
    section: Section::Additional,
    kind: SettingKind::Structured,
    default: None,
    required: false,
    secured: true,
    description: "Secured key-value options (write-only), merged into ConnectionString: {\"Password\": \"...\", \"Application Name\": \"...\"}. Each replaces the keyword of the same name; none is ever shown.",
};

pub const CSV_ENCODING: SettingSpec = SettingSpec {
    name: "CsvEncoding",
    section: Section::Advanced,
    kind: SettingKind::OutputEncoding,
    default: Some("UTF-8"),
    required: false,
    secured: false,
    description: "Encoding of the connection tables written: UTF-8 (no BOM), UTF-8-BOM, UTF-16 (little-endian, with BOM), UTF-16BE, US-ASCII, or a legacy encoding such as windows-1252. A character the encoding cannot hold fails the table.",
};

/// The documented .NET provider settings of the SQL family (`ProviderClassFullName`,
/// `ProviderDllName`): accepted so that documented configurations run, and not used (the agent
/// has its own drivers).
pub const PROVIDER_CLASS_FULL_NAME: SettingSpec = SettingSpec {
    name: "ProviderClassFullName",
    section: Section::Advanced,
    kind: SettingKind::Text,
    default: None,
    required: false,
    secured: false,
    description: "The .NET data provider the established agent loads (e.g. Npgsql.NpgsqlFactory). Accepted for compatibility and not used: this agent has its own driver for the package.",
};

pub const PROVIDER_DLL_NAME: SettingSpec = SettingSpec {
    name: "ProviderDllName",
    section: Section::Advanced,
    kind: SettingKind::Text,
    default: None,
    required: false,
    secured: false,
    description: "The .NET assembly of the provider (e.g. Npgsql.dll). Accepted for compatibility and not used.",
};

pub const READ_TIMEOUT: SettingSpec = SettingSpec {
    name: "ReadTimeout",
    section: Section::Advanced,
    kind: SettingKind::Integer,
    default: Some("600"),
    required: false,
    secured: false,
    description: "Seconds the agent waits for the next data from the server while a query runs (its first row included) before it gives up, so that a stopped server or a cut network ends the export instead of hanging it. 0: no limit.",
};

pub const SCHEMA_FILTER: SettingSpec = SettingSpec {
    name: "SchemaFilter",
    section: Section::Additional,
    kind: SettingKind::TextList,
    default: None,
    required: false,
    secured: false,
    description: "Schemas whose tables discovery lists (patterns with * and ?); all (but the system schemas) when empty.",
};

pub const TABLE_FILTER: SettingSpec = SettingSpec {
    name: "TableFilter",
    section: Section::Additional,
    kind: SettingKind::TextList,
    default: None,
    required: false,
    secured: false,
    description: "Tables and views that discovery lists (patterns with * and ?); all when empty.",
};

/// Whether discovery lists table `table` of schema `schema`: `SchemaFilter` and `TableFilter`
/// (patterns with `*` and `?`, compared without case; an empty filter lets everything through).
pub fn discovery_lists(settings: &Settings, schema: &str, table: &str) -> bool {
    let passes = |setting: &str, name: &str| {
        let patterns = settings.list(setting);
        patterns.is_empty() || patterns.iter().any(|p| glob(p, name))
    };
    passes("SchemaFilter", schema) && passes("TableFilter", table)
}

/// Discovery's list of the source's tables and views, built from catalog rows that come in
/// (schema, table, column) order: every table's keys are kept (the configured `Table` entries
/// need them, listed or not), and the tables `SchemaFilter`/`TableFilter` let through are listed.
pub struct Catalog {
    tables: Vec<crate::schema::SchemaTable>,
    keys: std::collections::HashMap<(String, String), Vec<(String, crate::schema::KeyType)>>,
    /// Whether names compare without case (SQL Server) or exactly (PostgreSQL).
    ignore_case: bool,
    default_schema: &'static str,
}

impl Catalog {
    pub fn new(ignore_case: bool, default_schema: &'static str) -> Self {
        Catalog {
            tables: Vec::new(),
            keys: Default::default(),
            ignore_case,
            default_schema,
        }
    }

    fn key_of(&self, schema: &str, table: &str) -> (String, String) {
        if self.ignore_case {
            (schema.to_lowercase(), table.to_lowercase())
        } else {
            (schema.to_string(), table.to_string())
        }
    }

    /// One column of `schema.table` (a view when `is_view`).
    pub fn add(
        &mut self,
        settings: &Settings,
        schema: &str,
        table: &str,
        is_view: bool,
        column: crate::schema::SchemaColumn,
    ) {
        let key = self.key_of(schema, table);
        self.keys
            .entry(key)
            .or_default()
            .push((column.name.clone(), column.key_type));
        if !discovery_lists(settings, schema, table) {
            return;
        }
        let name = format!("{schema}.{table}");
        if self.tables.last().is_none_or(|t| t.name != name) {
            self.tables.push(crate::schema::SchemaTable {
                name,
                source: if is_view { "view" } else { "table" }.into(),
                columns: Vec::new(),
                source_table: true,
            });
        }
        if let Some(t) = self.tables.last_mut() {
            t.columns.push(column);
        }
    }

    /// The key type of `column` in the table a query reads (`Table` entries only: a query's
    /// columns have none).
    pub fn key_type(&self, source: &QuerySource, column: &str) -> crate::schema::KeyType {
        let QuerySource::Table(t) = source else {
            return crate::schema::KeyType::None;
        };
        let (schema, table) = t.rsplit_once('.').unwrap_or((self.default_schema, t));
        self.keys
            .get(&self.key_of(schema, table))
            .and_then(|cols| {
                cols.iter().find(|(n, _)| {
                    if self.ignore_case {
                        n.eq_ignore_ascii_case(column)
                    } else {
                        n == column
                    }
                })
            })
            .map(|(_, k)| *k)
            .unwrap_or_default()
    }

    pub fn into_tables(self) -> Vec<crate::schema::SchemaTable> {
        self.tables
    }
}

/// A catalog's key code: 1 primary, 2 unique (single-column), else none.
pub fn key_type_of(code: i64) -> crate::schema::KeyType {
    match code {
        1 => crate::schema::KeyType::Primary,
        2 => crate::schema::KeyType::Unique,
        _ => crate::schema::KeyType::None,
    }
}

/// The longest `Timeout` accepted: a week.
pub const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;

/// The client-side bounds of a query: how long to wait for each answer of the server
/// (`ReadTimeout`), and for the whole query (`Timeout`, plus `grace` for a server that enforces
/// the Timeout itself and should have the first word). A bound that is hit ends the query with a
/// message that says which one.
#[derive(Debug, Clone, Copy)]
pub struct QueryBounds {
    read: Option<std::time::Duration>,
    timeout: Option<i64>,
    grace: std::time::Duration,
}

impl QueryBounds {
    pub fn new(settings: &Settings, grace: std::time::Duration) -> Self {
        let secs = |name| {
            settings
                .integer(name)
                .filter(|t| *t > 0)
                .map(|t| t.min(MAX_TIMEOUT_SECONDS))
        };
        QueryBounds {
            read: secs("ReadTimeout").map(|t| std::time::Duration::from_secs(t.unsigned_abs())),
            timeout: secs("Timeout"),
            grace,
        }
    }

    /// Waits for one answer of the server, at most `ReadTimeout`.
    pub async fn read<T>(
        &self,
        what: &str,
        answer: impl std::future::Future<Output = T>,
    ) -> Result<T, PackageError> {
        match self.read {
            None => Ok(answer.await),
            Some(limit) => tokio::time::timeout(limit, answer).await.map_err(|_| {
                PackageError::source(format!(
                    "{what}: no data from the server for {} s (ReadTimeout): the server may be stopped or overloaded, or the network cut; raise ReadTimeout for a query that needs longer before its first row",
                    limit.as_secs()
                ))
            }),
        }
    }

    /// Runs a whole query, at most `Timeout` (and the grace).
    pub async fn whole<T>(
        &self,
        what: &str,
        query: impl std::future::Future<Output = Result<T, PackageError>>,
    ) -> Result<T, PackageError> {
        match self.timeout {
            None => query.await,
            Some(secs) => {
                let limit = std::time::Duration::from_secs(secs.unsigned_abs()) + self.grace;
                tokio::time::timeout(limit, query).await.map_err(|_| {
                    PackageError::source(if self.grace.is_zero() {
                        format!("{what}: stopped after the Timeout of {secs} seconds")
                    } else {
                        format!(
                            "{what}: the server did not end the query within the Timeout of {secs} seconds (and {} s more for it to stop the query itself); stopped by the agent",
                            self.grace.as_secs()
                        )
                    })
                })?
            }
        }
    }
}

/// Where a table's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuerySource {
    /// A table or view, by name (`schema.table` allowed).
    Table(String),
    Sql(String),
}

/// One connection table a SQL connection produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableQuery {
    /// `None` for `<id>.csv`, else the suffix of `<id>_<name>.csv`.
    pub name: Option<String>,
    pub source: QuerySource,
}

impl TableQuery {
    /// The query text, quoting table names with `quote`.
    pub fn sql(&self, quote: fn(&str) -> String) -> String {
        match &self.source {
            QuerySource::Sql(s) => s.clone(),
            QuerySource::Table(t) => format!(
                "SELECT * FROM {}",
                t.split('.').map(quote).collect::<Vec<_>>().join(".")
            ),
        }
    }

    pub fn describe(&self) -> String {
        match &self.source {
            QuerySource::Table(t) => format!("table {t}"),
            QuerySource::Sql(s) => format!("query {}", one_line(s, 80)),
        }
    }
}

/// The connection table of a query: `<id>` or `<id>_<name>`.
pub fn table_name(id: &str, q: &TableQuery) -> String {
    crate::table_name::TableName::new(id, q.name.as_deref()).stem()
}

/// Glob match with `*` and `?`, ignoring case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `"name"` with inner quotes doubled (ANSI SQL identifier quoting).
pub fn quote_ansi(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// Checks the query settings: something to export, and a well-formed `Tables` list.
pub fn check_queries(settings: &Settings) -> Vec<Problem> {
    let mut problems = Vec::new();
    let has_main =
        settings.non_empty("SqlCommand").is_some() || settings.non_empty("SqlFile").is_some();
    match settings.structured("Tables") {
        Some(t) => problems.extend(parse_tables(t).1),
        None if !has_main => problems.push(Problem::new(
            Some("SqlCommand"),
            "nothing to export: none of SqlCommand, SqlFile or Tables is set",
            "set SqlCommand (or SqlFile) for <connection>.csv, and/or Tables for <connection>_<Name>.csv",
        )),
        None => {}
    }
    if settings.non_empty("SqlCommand").is_none()
        && let Some(path) = settings.path("SqlFile")
        && !path.is_file()
    {
        problems.push(Problem::new(
            Some("SqlFile"),
            format!("the query file {} does not exist", path.display()),
            "create the file or correct the path (relative paths start at the settings file's folder)",
        ));
    }
    if let Some(t) = settings.integer("Timeout")
        && !(0..=MAX_TIMEOUT_SECONDS).contains(&t)
    {
        problems.push(Problem::new(
            Some("Timeout"),
            format!("Timeout is {t}; it must be from 0 to {MAX_TIMEOUT_SECONDS} seconds"),
            "use a number of seconds (at most a week), or 0 for no limit",
        ));
    }
    problems
}

/// The `Tables` entries, each `{"Name": ..., "Table": ...}` or `{"Name": ..., "SqlCommand": ...}`,
/// with every problem (read as every structured setting is: [`super::structured`]).
fn parse_tables(v: &serde_json::Value) -> (Vec<TableQuery>, Vec<Problem>) {
    const HINT: &str = "write Tables as [{\"Name\": \"People\", \"Table\": \"dbo.People\"}, {\"Name\": \"Groups\", \"SqlCommand\": \"SELECT ...\"}]";
    let mut problems = Vec::new();
    let mut reader = super::structured::ListReader::new("Tables", &mut problems);
    let items = reader.objects(v, &["Name", "Table", "SqlCommand"], None, HINT);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in items {
        let n = item.n;
        let field = |k: &str| item.text(k);
        let name = match field("Name") {
            Ok(Some(name)) => name,
            Ok(None) => {
                reader.item_problem(n, "Name is missing", HINT);
                continue;
            }
            Err(e) => {
                reader.item_problem(n, e, HINT);
                continue;
            }
        };
        if let Err(e) = crate::table_name::TableName::check_table(&name) {
            reader.item_problem(n, e.to_string(), HINT);
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            reader.item_problem(
                n,
                format!("the Name {name:?} is used twice (names are compared without case)"),
                HINT,
            );
            continue;
        }
        let source = match (field("Table"), field("SqlCommand")) {
            (Ok(Some(t)), Ok(None)) => QuerySource::Table(t),
            (Ok(None), Ok(Some(q))) => QuerySource::Sql(q),
            (Ok(Some(_)), Ok(Some(_))) => {
                reader.item_problem(
                    n,
                    format!("({name}) has both Table and SqlCommand; keep one"),
                    HINT,
                );
                continue;
            }
            (Ok(None), Ok(None)) => {
                reader.item_problem(n, format!("({name}) needs Table or SqlCommand"), HINT);
                continue;
            }
            (Err(e), _) | (_, Err(e)) => {
                reader.item_problem(n, format!("({name}) {e}"), HINT);
                continue;
            }
        };
        out.push(TableQuery {
            name: Some(name),
            source,
        });
    }
    (out, problems)
}

/// Every table the connection exports, in order: the main query first, then `Tables`.
pub fn table_queries(settings: &Settings) -> Result<Vec<TableQuery>, PackageError> {
    let mut out = Vec::new();
    if let Some(q) = settings.non_empty("SqlCommand") {
        out.push(TableQuery {
            name: None,
            source: QuerySource::Sql(q.to_string()),
        });
    } else if let Some(path) = settings.path("SqlFile") {
        let sql =
            crate::fsutil::read_limited_text(&path, crate::fsutil::limits::SQL_FILE, "a SqlFile")
                .map_err(|e| {
                PackageError::config(format!("cannot read SqlFile {}: {e}", path.display()))
            })?;
        out.push(TableQuery {
            name: None,
            source: QuerySource::Sql(sql),
        });
    }
    if let Some(t) = settings.structured("Tables") {
        let (tables, problems) = parse_tables(t);
        if !problems.is_empty() {
            return Err(super::problems_error(problems));
        }
        out.extend(tables);
    }
    if out.is_empty() {
        return Err(PackageError::config(
            "nothing to export: none of SqlCommand, SqlFile or Tables is set",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("hr_*", "HR_People"));
        assert!(glob("p?ople", "people"));
        assert!(!glob("hr_*", "payroll"));
        assert!(glob("*", "x"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }
}
