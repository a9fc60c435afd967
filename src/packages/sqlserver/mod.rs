//! The `SqlServer` package (tiberius over rustls): SqlClient connection strings, rows streamed
//! from `QueryStream` into the sink, one set-based catalog query for discovery; and the
//! `SqlServerEntitlements` package ([`entitlements`]) on the same connection code.
//!
//! No real SQL Server can run on the machines this is built on: the package is tested against
//! the TDS responder in `tests/support/tds/`, which speaks the parts of TDS 7.4 described there.

pub mod browser;
pub mod entitlements;
pub mod target;
pub mod types;

use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::sql::{self, TableQuery};
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TableWriter, TestReport, Value,
};
use crate::schema::{Schema, SchemaColumn, SchemaTable};
use crate::secret::Redactor;
use async_trait::async_trait;
use chrono::Utc;
use std::time::Duration;
use target::{Encrypt, Target};
use tiberius::{AuthMethod, Client, ColumnType, EncryptionLevel, QueryItem};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub struct SqlServerPackage;

pub type TdsClient = Client<Compat<TcpStream>>;

const ISOLATION: &[&str] = &[
    "ReadUncommitted",
    "ReadCommitted",
    "RepeatableRead",
    "Snapshot",
    "Serializable",
];

pub const CONNECTION_STRING: SettingSpec = SettingSpec {
    name: "ConnectionString",
    section: Section::General,
    kind: SettingKind::ConnectionString,
    default: None,
    required: true,
    secured: false,
    description: "SqlClient connection string: Server=tcp:host,1433 (or host\\INSTANCE);Database=...;User ID=...;Password=...;Encrypt=true;TrustServerCertificate=false. SQL authentication only. The password is secret.",
};

pub const BROWSER_PORT: SettingSpec = SettingSpec {
    name: "BrowserPort",
    section: Section::Advanced,
    kind: SettingKind::Integer,
    default: Some("1434"),
    required: false,
    secured: false,
    description: "UDP port of the SQL Server Browser service, asked for the TCP port of a named instance (Server=host\\INSTANCE).",
};

pub const CA_FILE: SettingSpec = SettingSpec {
    name: "CaFile",
    section: Section::Advanced,
    kind: SettingKind::Path,
    default: None,
    required: false,
    secured: false,
    description: "PEM file of the CA that signs the server's certificate, trusted besides the system's roots.",
};

const SETTINGS: &[SettingSpec] = &[
    CONNECTION_STRING,
    sql::SQL_COMMAND,
    sql::SQL_FILE,
    sql::TABLES,
    sql::TIMEOUT,
    sql::READ_TIMEOUT,
    sql::CONNECTION_STRING_OPTIONS,
    sql::CSV_ENCODING,
    sql::PROVIDER_CLASS_FULL_NAME,
    sql::PROVIDER_DLL_NAME,
    SettingSpec {
        name: "IsolationLevel",
        section: Section::Advanced,
        kind: SettingKind::Choice(ISOLATION),
        default: Some("ReadUncommitted"),
        required: false,
        secured: false,
        description: "Transaction isolation level set before the queries run (ReadUncommitted by default, as the established agent does).",
    },
    BROWSER_PORT,
    CA_FILE,
    sql::SCHEMA_FILTER,
    sql::TABLE_FILTER,
];

static INFO: PackageInfo = PackageInfo {
    id: "SqlServer",
    aliases: &["Usercube.SQL.SQLServer@0000001", "SQLServer", "MSSQL"],
    category: Category::Database,
    description: "Microsoft SQL Server database (SQL authentication, TDS over TLS)",
    has_incremental: false,
    settings: SETTINGS,
};

/// The connection string's target, or the problem with it.
pub fn target(settings: &Settings) -> Result<Target, Problem> {
    let cs = settings.connection_string("ConnectionString").ok_or_else(|| {
        Problem::new(
            Some("ConnectionString"),
            "ConnectionString is not set",
            "write ConnectionString as Server=tcp:host,1433;Database=HR;User ID=...;Password=...",
        )
    })?;
    target::parse(cs)
}

/// Checks shared by both SQL Server packages: the connection string, ignored keywords, CaFile.
pub fn check_connection(settings: &Settings) -> Vec<Problem> {
    let mut problems = Vec::new();
    match target(settings) {
        Err(p) => problems.push(p),
        Ok(t) => {
            if !t.ignored.is_empty() {
                problems.push(Problem::note(
                    Some("ConnectionString"),
                    format!(
                        "the connection string keywords {} are accepted and ignored (connagent opens one connection per export, without pooling)",
                        t.ignored.join(", ")
                    ),
                    "remove them to silence this note",
                ));
            }
            if t.password.is_empty() {
                problems.push(Problem::note(
                    Some("ConnectionString"),
                    "the connection string has no Password",
                    "give Password (quote it if it holds ';')",
                ));
            }
        }
    }
    if let Some(ca) = settings.path("CaFile")
        && !ca.is_file()
    {
        problems.push(Problem::new(
            Some("CaFile"),
            format!("the file {} does not exist", ca.display()),
            "correct the path",
        ));
    }
    if let Some(p) = settings.integer("BrowserPort")
        && !(1..=65535).contains(&p)
    {
        problems.push(Problem::new(
            Some("BrowserPort"),
            format!("BrowserPort {p} is not a UDP port"),
            "leave it at 1434 unless the Browser service listens elsewhere",
        ));
    }
    problems
}

/// A tiberius failure, classified, with every secret of the settings masked (the driver's text
/// may repeat what it was given).
pub fn tds_error(e: &tiberius::error::Error, what: &str, redactor: &Redactor) -> PackageError {
    use tiberius::error::Error as E;
    let msg = |s: String| redactor.redact(&format!("{what}: {s}"));
    match e {
        E::Server(t) => {
            let text = format!(
                "{} (error {}, severity {})",
                t.message(),
                t.code(),
                t.class()
            );
            match t.code() {
                18456 | 18452 | 18486 | 18487 | 18488 => PackageError::source(msg(format!(
                    "the server refused the login: {text}; check User ID and Password"
                ))),
                4060 | 911 => PackageError::config(msg(format!(
                    "the database is unknown or not accessible to this login: {text}; check Database in the connection string"
                ))),
                // Invalid object or column name, syntax errors: the query is wrong.
                102 | 105 | 156 | 207 | 208 | 2812 | 4104 | 8120 => PackageError::config(msg(text)),
                _ => PackageError::source(msg(text)),
            }
        }
        E::Tls(s) => PackageError::source(msg(format!(
            "TLS with the server failed: {s}; give CaFile with the CA that signed the server's certificate (TrustServerCertificate=true only on a trusted network), or check Encrypt"
        ))),
        E::Io { kind, message } => {
            PackageError::source(msg(format!("the connection failed ({kind:?}): {message}")))
        }
        E::Routing { host, port } => PackageError::source(msg(format!(
            "the server redirected the connection to {host},{port} more than once"
        ))),
        other => PackageError::source(msg(other.to_string())),
    }
}

/// Opens a connection and logs in. Follows one routing redirect (availability-group
/// read-only routing).
pub async fn connect(settings: &Settings) -> Result<(TdsClient, Target), PackageError> {
    let t = target(settings).map_err(|p| PackageError::config(p.message))?;
    let redactor = settings.redactor();
    crate::install_crypto_provider();
    let port = match (t.address.port, &t.address.instance) {
        (Some(p), _) => p,
        (None, Some(instance)) => {
            let browser_port = settings
                .integer("BrowserPort")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(1434);
            browser::resolve(
                &t.address.host,
                instance,
                browser_port,
                t.connect_timeout.min(Duration::from_secs(5)),
            )
            .await
            .map_err(PackageError::source)?
        }
        (None, None) => 1433,
    };
    let mut config = tiberius::Config::new();
    config.host(&t.address.host);
    config.port(port);
    if let Some(db) = &t.database {
        config.database(db);
    }
    config.application_name(&t.application_name);
    config.authentication(AuthMethod::sql_server(&t.user, t.password.expose()));
    config.encryption(match t.encrypt {
        Encrypt::Optional => EncryptionLevel::Off,
        Encrypt::Mandatory => EncryptionLevel::Required,
        Encrypt::Strict => EncryptionLevel::Strict,
    });
    if t.trust_server_certificate {
        config.trust_cert();
    } else if let Some(ca) = settings.path("CaFile") {
        config.trust_cert_ca(ca.display().to_string());
    }
    if let Some(h) = &t.host_name_in_certificate {
        config.hostname_in_certificate(h);
    }
    config.readonly(t.read_only_intent);
    if let Some(p) = t.packet_size {
        config.packet_size(p);
    }
    let shown = format!("{},{port}", t.address.host);
    let login = async {
        let mut config = config;
        for attempt in 0..2 {
            let addr = config.get_addr();
            let tcp = TcpStream::connect(&addr).await.map_err(|e| {
                PackageError::source(redactor.redact(&format!(
                    "cannot reach SQL Server at {addr}: {e}; check Server and that TCP is enabled on the instance"
                )))
            })?;
            let _ = tcp.set_nodelay(true);
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Ok(c) => return Ok(c),
                Err(tiberius::error::Error::Routing { host, port }) if attempt == 0 => {
                    config.host(&host);
                    config.port(port);
                }
                Err(e) => return Err(tds_error(&e, &format!("logging in to {addr}"), &redactor)),
            }
        }
        Err(PackageError::source(format!(
            "logging in to {shown}: redirected more than once"
        )))
    };
    let client = tokio::time::timeout(t.connect_timeout, login)
        .await
        .map_err(|_| {
            PackageError::source(format!(
                "no login to SQL Server at {shown} within the Connect Timeout of {} s; check Server, the port, and firewalls",
                t.connect_timeout.as_secs()
            ))
        })??;
    Ok((client, t))
}

/// Runs a batch that returns no rows (SET ...), draining its results.
pub async fn execute(
    client: &mut TdsClient,
    sql: &str,
    what: &str,
    redactor: &Redactor,
) -> Result<(), PackageError> {
    let stream = client
        .simple_query(sql)
        .await
        .map_err(|e| tds_error(&e, what, redactor))?;
    stream
        .into_results()
        .await
        .map_err(|e| tds_error(&e, what, redactor))?;
    Ok(())
}

/// `[name]` with `]` doubled (SQL Server identifier quoting).
pub fn quote_brackets(ident: &str) -> String {
    format!("[{}]", ident.replace(']', "]]"))
}

/// `N'text'` with `'` doubled.
pub fn literal(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

/// Where the rows of a query go: a table opened at the first result set's metadata, or one
/// already open (several queries appended to one connection table must return the same columns).
pub struct Target2<'a> {
    pub sink: &'a RowSink,
    pub table: Option<&'a str>,
    pub writer: &'a mut Option<TableWriter>,
}

/// Streams the first result set of `sql` into `out`, row by row (nothing is collected). A second
/// result set is an error: one connection table is one result set. `deadline` bounds the whole
/// query (the Timeout setting); `cancel` stops it at once.
pub async fn stream_query(
    client: &mut TdsClient,
    sql: &str,
    what: &str,
    out: Target2<'_>,
    conn: &ConnectionRef,
    deadline: Option<(Instant, i64)>,
    redactor: &Redactor,
) -> Result<u64, PackageError> {
    // Each wait for the server within ReadTimeout (the whole query within Timeout, below).
    let bounds = super::sql::QueryBounds::new(&conn.settings, Duration::ZERO);
    let work = async {
        let mut stream = bounds
            .read(what, client.simple_query(sql))
            .await?
            .map_err(|e| tds_error(&e, what, redactor))?;
        let mut kinds: Vec<ColumnType> = Vec::new();
        let mut sets = 0u32;
        let mut rows = 0u64;
        while let Some(item) = bounds.read(what, stream.next()).await? {
            let item = item.map_err(|e| {
                let mut err = tds_error(&e, what, redactor);
                if rows > 0 {
                    err.message = format!("{} (after {rows} rows)", err.message);
                }
                err
            })?;
            match item {
                QueryItem::Metadata(meta) => {
                    sets += 1;
                    if sets > 1 {
                        return Err(PackageError::config(format!(
                            "{what}: returned more than one result set; a connection table is one result set (split the batch into Tables entries)"
                        )));
                    }
                    let names: Vec<String> = meta
                        .columns()
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect();
                    kinds = meta.columns().iter().map(|c| c.column_type()).collect();
                    // Appended queries (one per database) share the first one's columns.
                    if out.writer.is_none() {
                        *out.writer = Some(out.sink.table(out.table, names)?);
                    }
                }
                QueryItem::Row(row) => {
                    if conn.cancel.is_cancelled() {
                        return Err(PackageError::cancelled());
                    }
                    let writer = out.writer.as_mut().ok_or_else(|| {
                        PackageError::source(format!("{what}: a row came before its columns"))
                    })?;
                    rows += 1;
                    let mut values: Vec<Value> = Vec::with_capacity(kinds.len());
                    for (i, (_, data)) in row.cells().enumerate() {
                        let kind = kinds.get(i).copied().unwrap_or(ColumnType::Null);
                        values.push(types::value(kind, data).map_err(|e| {
                            PackageError::source(format!(
                                "{what}: row {rows}, column {}: {e}",
                                row.columns().get(i).map_or("?", |c| c.name())
                            ))
                        })?);
                    }
                    writer.push(values).await?;
                }
            }
        }
        if sets == 0 {
            return Err(PackageError::config(format!(
                "{what}: returned no result set; the query must be a SELECT (or end with one)"
            )));
        }
        Ok(rows)
    };
    let limited = async {
        match deadline {
            Some((at, secs)) => tokio::time::timeout_at(at, work).await.map_err(|_| {
                PackageError::source(format!(
                    "{what}: stopped after the Timeout of {secs} seconds"
                ))
            })?,
            None => work.await,
        }
    };
    tokio::select! {
        r = limited => r,
        _ = conn.cancel.cancelled() => Err(PackageError::cancelled()),
    }
}

/// The deadline of a query from the Timeout setting.
pub fn deadline(settings: &Settings) -> Option<(Instant, i64)> {
    settings
        .integer("Timeout")
        .filter(|t| *t > 0)
        .map(|t| (Instant::now() + Duration::from_secs(t.unsigned_abs()), t))
}

fn isolation_sql(settings: &Settings) -> &'static str {
    match settings.text("IsolationLevel").unwrap_or("ReadUncommitted") {
        "ReadCommitted" => "READ COMMITTED",
        "RepeatableRead" => "REPEATABLE READ",
        "Snapshot" => "SNAPSHOT",
        "Serializable" => "SERIALIZABLE",
        _ => "READ UNCOMMITTED",
    }
}

/// Tables, views and their columns with types, nullability and keys: one query for all.
pub const CATALOG: &str = "SELECT s.name AS schema_name, o.name AS table_name, o.type AS kind, c.name AS column_name,
       t.name AS type_name, c.max_length, c.precision, c.scale, c.is_nullable,
       CAST(COALESCE(k.key_type, 0) AS int) AS key_type
FROM sys.objects o
JOIN sys.schemas s ON s.schema_id = o.schema_id
JOIN sys.columns c ON c.object_id = o.object_id
JOIN sys.types t ON t.user_type_id = c.user_type_id
LEFT JOIN (
  SELECT ic.object_id, ic.column_id,
         MAX(CASE WHEN i.is_primary_key = 1 THEN 1 WHEN i.is_unique = 1 AND n.key_columns = 1 THEN 2 ELSE 0 END) AS key_type
  FROM sys.indexes i
  JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0
  JOIN (SELECT object_id, index_id, COUNT(*) AS key_columns FROM sys.index_columns
        WHERE is_included_column = 0 GROUP BY object_id, index_id) n
    ON n.object_id = i.object_id AND n.index_id = i.index_id
  GROUP BY ic.object_id, ic.column_id) k ON k.object_id = o.object_id AND k.column_id = c.column_id
WHERE o.type IN ('U', 'V') AND o.is_ms_shipped = 0
ORDER BY s.name, o.name, c.column_id";

/// The columns a query would return, without running it.
fn describe_sql(sql: &str) -> String {
    format!(
        "SELECT name, system_type_name, is_nullable, error_number, error_message FROM sys.dm_exec_describe_first_result_set({}, NULL, 0) ORDER BY column_ordinal",
        literal(sql)
    )
}

struct Described {
    name: String,
    type_name: String,
    nullable: Option<bool>,
}

async fn describe(
    client: &mut TdsClient,
    q: &TableQuery,
    redactor: &Redactor,
) -> Result<Vec<Described>, PackageError> {
    let what = q.describe();
    let rows = client
        .simple_query(describe_sql(&q.sql(quote_brackets)))
        .await
        .map_err(|e| tds_error(&e, &what, redactor))?
        .into_first_result()
        .await
        .map_err(|e| tds_error(&e, &what, redactor))?;
    let mut out = Vec::new();
    for r in rows {
        let err_no: Option<i32> = r.try_get(3).ok().flatten();
        if let Some(n) = err_no {
            let m: Option<&str> = r.try_get(4).ok().flatten();
            return Err(PackageError::config(redactor.redact(&format!(
                "{what}: does not compile: {} (error {n})",
                m.unwrap_or("no message")
            ))));
        }
        let name: Option<&str> = r.try_get(0).ok().flatten();
        let ty: Option<&str> = r.try_get(1).ok().flatten();
        out.push(Described {
            name: name.unwrap_or_default().to_string(),
            type_name: ty.unwrap_or_default().to_string(),
            nullable: r.try_get::<bool, _>(2).ok().flatten(),
        });
    }
    Ok(out)
}

fn cell_text(r: &tiberius::Row, i: usize) -> String {
    r.try_get::<&str, _>(i)
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_string()
}

fn cell_i64(r: &tiberius::Row, i: usize) -> i64 {
    match r.get_column_data(i) {
        Ok(d) => match types::value(ColumnType::Int8, d) {
            Ok(Value::Int(v)) => v,
            Ok(Value::Bool(b)) => i64::from(b),
            _ => 0,
        },
        Err(_) => 0,
    }
}

/// The SQL type as written in DDL, from the catalog's name, length, precision and scale.
fn type_text(name: &str, max_length: i64, precision: i64, scale: i64) -> String {
    match name {
        "varchar" | "char" | "varbinary" | "binary" => {
            if max_length < 0 {
                format!("{name}(max)")
            } else {
                format!("{name}({max_length})")
            }
        }
        "nvarchar" | "nchar" => {
            if max_length < 0 {
                format!("{name}(max)")
            } else {
                format!("{name}({})", max_length / 2)
            }
        }
        "decimal" | "numeric" => format!("{name}({precision},{scale})"),
        "datetime2" | "time" | "datetimeoffset" => format!("{name}({scale})"),
        other => other.to_string(),
    }
}

#[async_trait]
impl Package for SqlServerPackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        let mut problems = sql::check_queries(settings);
        problems.extend(check_connection(settings));
        problems
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let redactor = conn.settings.redactor();
        let (mut client, t) = connect(&conn.settings).await?;
        let one = client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| tds_error(&e, "SELECT 1", &redactor))?
            .into_row()
            .await
            .map_err(|e| tds_error(&e, "SELECT 1", &redactor))?;
        let v: Option<i32> = one.as_ref().and_then(|r| r.try_get(0).ok().flatten());
        if v != Some(1) {
            return Err(PackageError::source(
                "SELECT 1 did not return 1; this is not a SQL Server that connagent understands",
            ));
        }
        let version = client
            .simple_query("SELECT @@VERSION")
            .await
            .map_err(|e| tds_error(&e, "SELECT @@VERSION", &redactor))?
            .into_row()
            .await
            .map_err(|e| tds_error(&e, "SELECT @@VERSION", &redactor))?
            .map(|r| cell_text(&r, 0))
            .unwrap_or_default();
        let first_line = version
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut checks = vec![
            format!(
                "logged in to {} as {}{}",
                t.shown(),
                t.user,
                t.database
                    .as_deref()
                    .map(|d| format!(", database {d}"))
                    .unwrap_or_default()
            ),
            "SELECT 1 returned 1".to_string(),
            format!("server version: {first_line}"),
        ];
        for q in sql::table_queries(&conn.settings)? {
            let cols = describe(&mut client, &q, &redactor).await?;
            checks.push(format!(
                "{}: {} compiles ({} columns)",
                sql::table_name(conn.identifier.as_str(), &q),
                q.describe(),
                cols.len()
            ));
        }
        Ok(TestReport { checks })
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let redactor = conn.settings.redactor();
        let (mut client, _) = connect(&conn.settings).await?;
        let id = conn.identifier.as_str();
        let mut catalog = sql::Catalog::new(true, "dbo");
        {
            let mut stream = client
                .simple_query(CATALOG)
                .await
                .map_err(|e| tds_error(&e, "reading the catalog", &redactor))?;
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| tds_error(&e, "reading the catalog", &redactor))?;
                let QueryItem::Row(r) = item else { continue };
                let (sch, rel, kind, col, ty) = (
                    cell_text(&r, 0),
                    cell_text(&r, 1),
                    cell_text(&r, 2),
                    cell_text(&r, 3),
                    cell_text(&r, 4),
                );
                let (max_length, precision, scale) =
                    (cell_i64(&r, 5), cell_i64(&r, 6), cell_i64(&r, 7));
                let nullable = cell_i64(&r, 8) != 0;
                let column = SchemaColumn {
                    name: col,
                    value_type: types::value_type_of_name(&ty),
                    key_type: sql::key_type_of(cell_i64(&r, 9)),
                    multivalued: false,
                    nullable: Some(nullable),
                    source_type: Some(type_text(&ty, max_length, precision, scale)),
                };
                catalog.add(&conn.settings, &sch, &rel, kind.trim() == "V", column);
            }
        }
        let mut out = Vec::new();
        for q in sql::table_queries(&conn.settings)? {
            let cols = describe(&mut client, &q, &redactor).await?;
            out.push(SchemaTable {
                name: sql::table_name(id, &q),
                source: q.describe(),
                columns: cols
                    .into_iter()
                    .map(|c| SchemaColumn {
                        key_type: catalog.key_type(&q.source, &c.name),
                        value_type: types::value_type_of_name(&c.type_name),
                        name: c.name,
                        multivalued: false,
                        nullable: c.nullable,
                        source_type: Some(c.type_name),
                    })
                    .collect(),
                source_table: false,
            });
        }
        out.extend(catalog.into_tables());
        Ok(Schema {
            connection: id.to_string(),
            package: INFO.id.to_string(),
            discovered_at: Utc::now(),
            tables: out,
        })
    }

    async fn export(
        &self,
        conn: &ConnectionRef,
        _mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        let queries = sql::table_queries(&conn.settings)?;
        let redactor = conn.settings.redactor();
        let bounds = sql::QueryBounds::new(&conn.settings, Duration::ZERO);
        let work = async {
            let (mut client, _) = connect(&conn.settings).await?;
            let what = "setting the IsolationLevel";
            let set = format!(
                "SET TEXTSIZE 2147483647; SET TRANSACTION ISOLATION LEVEL {}",
                isolation_sql(&conn.settings)
            );
            bounds
                .read(what, execute(&mut client, &set, what, &redactor))
                .await??;
            for q in &queries {
                let deadline = deadline(&conn.settings);
                let mut writer = None;
                let what = q.describe();
                let sql_text = q.sql(quote_brackets);
                stream_query(
                    &mut client,
                    &sql_text,
                    &what,
                    Target2 {
                        sink: &sink,
                        table: q.name.as_deref(),
                        writer: &mut writer,
                    },
                    conn,
                    deadline,
                    &redactor,
                )
                .await?;
                if let Some(w) = writer {
                    w.finish().await?;
                }
            }
            Ok(ExportOutcome::Exported)
        };
        // A cancel ends the export at once, whatever the server is doing.
        tokio::select! {
            r = work => r,
            _ = conn.cancel.cancelled() => Err(PackageError::cancelled()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_brackets("a]b"), "[a]]b]");
        assert_eq!(literal("it's"), "N'it''s'");
        assert!(describe_sql("SELECT 'x'").contains("N'SELECT ''x'''"));
        assert_eq!(type_text("nvarchar", 100, 0, 0), "nvarchar(50)");
        assert_eq!(type_text("varbinary", -1, 0, 0), "varbinary(max)");
        assert_eq!(type_text("decimal", 9, 10, 2), "decimal(10,2)");
    }
}
