//! The `PostgreSql` package: tokio-postgres, TLS through rustls, one read-only snapshot per export,
//! and rows streamed with `COPY (query) TO STDOUT (FORMAT binary)`, decoded into the canonical
//! text forms (`pgtypes`).

use super::connstr::{ConnectionString, Part};
use super::pgtypes;
use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::sql::{self, QuerySource, TableQuery};
use super::value::Value;
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport,
};
use crate::schema::{KeyType, Schema, SchemaColumn, SchemaTable};
use async_trait::async_trait;
use chrono::Utc;
use postgres_types::{FromSql, Type};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_stream::StreamExt;

pub struct PostgresPackage;

const ISOLATION: &[&str] = &["ReadCommitted", "RepeatableRead", "Serializable"];

const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "ConnectionString",
        section: Section::General,
        kind: SettingKind::ConnectionString,
        default: None,
        required: true,
        secured: false,
        description: "postgresql://user:password@host:port/database, libpq \"host=... dbname=... user=... password=...\", or Npgsql \"Host=...;Database=...;Username=...;Password=...;SSL Mode=...\". The password is secret.",
    },
    sql::SQL_COMMAND,
    sql::SQL_FILE,
    sql::TABLES,
    sql::TIMEOUT,
    sql::READ_TIMEOUT,
    sql::CONNECTION_STRING_OPTIONS,
    sql::CSV_ENCODING,
    SettingSpec {
        name: "IsolationLevel",
        section: Section::Advanced,
        kind: SettingKind::Choice(ISOLATION),
        default: Some("RepeatableRead"),
        required: false,
        secured: false,
        description: "Isolation of the export's read-only transaction. RepeatableRead (the default) gives every table of one export the same snapshot.",
    },
    SettingSpec {
        name: "CaFile",
        section: Section::Advanced,
        kind: SettingKind::Path,
        default: None,
        required: false,
        secured: false,
        description: "PEM file of the CA that signs the server's certificate (TLS); the public web roots are trusted too.",
    },
    SettingSpec {
        name: "SchemaFilter",
        section: Section::Additional,
        kind: SettingKind::TextList,
        default: None,
        required: false,
        secured: false,
        description: "Schemas whose tables discovery lists (patterns with * and ?); all but the system schemas when empty.",
    },
    SettingSpec {
        name: "TableFilter",
        section: Section::Additional,
        kind: SettingKind::TextList,
        default: None,
        required: false,
        secured: false,
        description: "Tables and views that discovery lists (patterns with * and ?); all when empty.",
    },
];

static INFO: PackageInfo = PackageInfo {
    id: "PostgreSql",
    aliases: &["Usercube.SQL.PostgreSQL@0000001", "PostgreSQL", "Postgres"],
    category: Category::Database,
    description: "PostgreSQL database",
    has_incremental: false,
    settings: SETTINGS,
};

/// Any value, as raw bytes: decoding is done by `pgtypes`.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What the connection string says, typed.
struct Target {
    config: tokio_postgres::Config,
    ssl: SslMode,
    shown: String,
    /// The whole connection (TCP, TLS, start-up and login) must be made within this.
    connect_timeout: Duration,
}

/// The server enforces `Timeout` itself (statement_timeout); the agent gives it this much more
/// before it stops waiting, so that the server's own message normally comes first.
const SERVER_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

fn target(settings: &Settings) -> Result<Target, Problem> {
    let hint = "write ConnectionString as postgresql://user:password@host:5432/database";
    let cs: &ConnectionString =
        settings
            .connection_string("ConnectionString")
            .ok_or_else(|| {
                Problem::new(
                    Some("ConnectionString"),
                    "ConnectionString is not set",
                    hint,
                )
            })?;
    let mut config = tokio_postgres::Config::new();
    let host = cs
        .plain(&["host", "server", "hostaddr"])
        .unwrap_or("localhost");
    config.host(host);
    let port = match cs.plain(&["port"]) {
        Some(p) => p.trim().parse::<u16>().map_err(|_| {
            Problem::new(
                Some("ConnectionString"),
                format!("the port {p:?} is not a number"),
                hint,
            )
        })?,
        None => 5432,
    };
    config.port(port);
    let db = cs
        .plain(&["dbname", "database", "initial catalog"])
        .ok_or_else(|| {
            Problem::new(
                Some("ConnectionString"),
                "the connection string names no database",
                hint,
            )
        })?;
    config.dbname(db);
    let user = cs
        .plain(&["user", "username", "user id", "userid", "uid"])
        .ok_or_else(|| {
            Problem::new(
                Some("ConnectionString"),
                "the connection string names no user",
                hint,
            )
        })?;
    config.user(user);
    if let Some(Part::Secret(pw)) = cs.get(&["password", "pwd"]) {
        config.password(pw.expose());
    }
    let ssl = match cs
        .plain(&["sslmode", "ssl mode"])
        .map(|s| s.to_ascii_lowercase())
    {
        None => SslMode::Prefer,
        Some(m) => match m.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" | "verifyca" | "verifyfull" => SslMode::Require,
            other => {
                return Err(Problem::new(
                    Some("ConnectionString"),
                    format!("sslmode {other:?} is not known"),
                    "use disable, prefer, require, verify-ca or verify-full",
                ));
            }
        },
    };
    config.ssl_mode(ssl);
    let connect_timeout = match cs.plain(&["connect_timeout", "timeout", "connect timeout"]) {
        Some(t) => {
            let secs = t.trim().parse::<u64>().map_err(|_| {
                Problem::new(
                    Some("ConnectionString"),
                    format!("connect_timeout {t:?} is not a number of seconds"),
                    hint,
                )
            })?;
            // 0 means "no limit" to libpq; the agent still bounds the connection (a day).
            Duration::from_secs(if secs == 0 { 86_400 } else { secs })
        }
        None => Duration::from_secs(30),
    };
    config.connect_timeout(connect_timeout);
    config.application_name(
        cs.plain(&["application_name", "application name"])
            .unwrap_or("connagent"),
    );
    Ok(Target {
        config,
        ssl,
        shown: format!("{user}@{host}:{port}/{db}"),
        connect_timeout,
    })
}

fn tls(settings: &Settings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PackageError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = settings.path("CaFile") {
        let pem = crate::fsutil::read_limited(&ca, crate::fsutil::limits::PEM_FILE, "a PEM file")
            .map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PackageError::system(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A failure, classified, with the server's own message.
fn pg_error(
    e: &tokio_postgres::Error,
    what: &str,
    timeout: Option<i64>,
    prepare: bool,
) -> PackageError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = format!("{what}: {} ({})", db.message(), code.code());
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return PackageError::source(format!(
                "{what}: the server refused the login: {}",
                db.message()
            ));
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return PackageError::config(msg);
        }
        // Class 57P: an administrator or the server's shutdown ended the session.
        if code.code().starts_with("57P") {
            return PackageError::source(format!(
                "{what}: the server ended the session: {} ({})",
                db.message(),
                code.code()
            ));
        }
        if *code == SqlState::QUERY_CANCELED {
            return PackageError::source(format!(
                "{what}: stopped after the Timeout of {} seconds",
                timeout.unwrap_or(0)
            ));
        }
        // Class 42 (syntax error or access rule violation) found while preparing: the query.
        if prepare && code.code().starts_with("42") {
            return PackageError::config(msg);
        }
        return PackageError::source(msg);
    }
    PackageError::source(format!("{what}: {e}"))
}

/// An open session: the client, and what the connection's own task saw when the connection
/// ended (a server that ends a session sends its reason, such as "terminating connection due to
/// administrator command", to the connection, not to the request that then fails).
struct Session {
    client: tokio_postgres::Client,
    ended: tokio::sync::watch::Receiver<Option<Ended>>,
    what: String,
}

/// How a connection ended.
#[derive(Debug, Clone)]
enum Ended {
    /// The server said why (its message and SQLSTATE).
    Server(String),
    /// It broke (reset, closed without a word): the cause.
    Broken(String),
}

impl Session {
    /// A failed request, classified; when the connection is gone, with the server's reason if
    /// it sent one, else the cause of the break.
    async fn error(
        &self,
        e: &tokio_postgres::Error,
        what: &str,
        timeout: Option<i64>,
        prepare: bool,
    ) -> PackageError {
        if e.as_db_error().is_some() || !e.is_closed() {
            return pg_error(e, what, timeout, prepare);
        }
        // The connection's task records why it ended; give it a moment to do so.
        let mut ended = self.ended.clone();
        let reason =
            tokio::time::timeout(Duration::from_millis(500), ended.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| v.clone()));
        PackageError::source(match reason {
            Some(Ended::Server(r)) => format!("{what}: the server ended the session: {r}"),
            Some(Ended::Broken(cause)) => format!(
                "{what}: the connection to {} broke: {cause} (the server's log tells whether it ended the session)",
                self.what
            ),
            None => format!(
                "{what}: the connection to {} was closed without a reason from the server (the server stopped, or the network cut it)",
                self.what
            ),
        })
    }
}

/// Why a connection ended, as its task saw it: the server's message and code when it sent one,
/// else the error with its causes ("connection reset by peer").
fn end_reason(e: &tokio_postgres::Error) -> Ended {
    match e.as_db_error() {
        Some(db) => Ended::Server(format!("{} ({})", db.message(), db.code().code())),
        None => {
            let mut text = String::new();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&c.to_string());
                cause = c.source();
            }
            Ended::Broken(if text.is_empty() { e.to_string() } else { text })
        }
    }
}

async fn connect(conn: &ConnectionRef) -> Result<Session, PackageError> {
    let t = target(&conn.settings).map_err(|p| PackageError::config(p.message))?;
    let what = format!("PostgreSQL {}", t.shown);
    let reach = |e: tokio_postgres::Error| {
        if e.as_db_error().is_some() {
            pg_error(&e, &what, None, false)
        } else {
            PackageError::source(format!("cannot reach {what}: {e}"))
        }
    };
    let (tx, ended) = tokio::sync::watch::channel(None);
    let watch_end = |tx: tokio::sync::watch::Sender<Option<Ended>>| {
        move |r: Result<(), tokio_postgres::Error>| {
            let reason = match r {
                Ok(()) => Ended::Broken("the server closed it".to_string()),
                Err(e) => {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                    end_reason(&e)
                }
            };
            let _ = tx.send(Some(reason));
        }
    };
    // TCP, TLS, start-up and login as a whole within connect_timeout: a server that accepts
    // the connection and then says nothing (stopped, overloaded) is not waited for forever.
    let timed_out = || {
        PackageError::source(format!(
            "cannot reach {what}: no answer within the connect timeout of {} s (connect_timeout in ConnectionString); the server may be stopped, or the network cut",
            t.connect_timeout.as_secs()
        ))
    };
    let client = if t.ssl == SslMode::Disable {
        let (client, connection) =
            tokio::time::timeout(t.connect_timeout, t.config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| timed_out())?
                .map_err(reach)?;
        let done = watch_end(tx);
        tokio::spawn(async move { done(connection.await) });
        client
    } else {
        let tls = tls(&conn.settings)?;
        let (client, connection) = tokio::time::timeout(t.connect_timeout, t.config.connect(tls))
            .await
            .map_err(|_| timed_out())?
            .map_err(reach)?;
        let done = watch_end(tx);
        tokio::spawn(async move { done(connection.await) });
        client
    };
    Ok(Session {
        client,
        ended,
        what,
    })
}

/// What decoding needs from the session: money's fraction digits under its `lc_monetary`, read
/// as the scale of `1::money` cast to numeric.
async fn session_facts(
    session: &Session,
    bounds: &sql::QueryBounds,
) -> Result<pgtypes::Session, PackageError> {
    let what = "reading the session's money format";
    let row = match bounds
        .read(
            what,
            session
                .client
                .query_one("SELECT scale((1::money)::numeric)", &[]),
        )
        .await?
    {
        Ok(r) => r,
        Err(e) => return Err(session.error(&e, what, None, false).await),
    };
    let digits: i32 = row
        .try_get(0)
        .map_err(|e| PackageError::source(format!("reading the session's money format: {e}")))?;
    Ok(pgtypes::Session {
        money_digits: u32::try_from(digits).unwrap_or(2),
    })
}

fn statement_sql(q: &TableQuery) -> String {
    q.sql(sql::quote_ansi)
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .to_string()
}

const CATALOG: &str = "
WITH keys AS (
  SELECT i.indrelid, k.attnum,
         max(CASE WHEN i.indisprimary THEN 1 WHEN i.indisunique AND i.indnkeyatts = 1 THEN 2 ELSE 0 END) AS key
  FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
  WHERE k.pos <= i.indnkeyatts
  GROUP BY 1, 2)
SELECT n.nspname::text, c.relname::text, c.relkind::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atttypid::oid, COALESCE(keys.key, 0)::int4
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN keys ON keys.indrelid = c.oid AND keys.attnum = a.attnum
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname, c.relname, a.attnum";

#[async_trait]
impl Package for PostgresPackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        let mut problems = sql::check_queries(settings);
        if let Err(p) = target(settings) {
            problems.push(p);
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
        problems
    }

    fn source_paths(&self, _settings: &Settings) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let session = connect(conn).await?;
        let bounds = sql::QueryBounds::new(&conn.settings, SERVER_TIMEOUT_GRACE);
        let shown = target(&conn.settings).map(|t| t.shown).unwrap_or_default();
        let what = "SELECT version()";
        let version: String = match bounds
            .read(what, session.client.query_one(what, &[]))
            .await?
        {
            Ok(row) => row
                .try_get(0)
                .map_err(|e| PackageError::source(e.to_string()))?,
            Err(e) => return Err(session.error(&e, what, None, false).await),
        };
        let mut checks = vec![format!("connected to {shown}: {version}")];
        for q in sql::table_queries(&conn.settings)? {
            if let Err(e) = bounds
                .read(&q.describe(), session.client.prepare(&statement_sql(&q)))
                .await?
            {
                return Err(session.error(&e, &q.describe(), None, true).await);
            }
            checks.push(format!(
                "{}: {} compiles",
                sql::table_name(conn.identifier.as_str(), &q),
                q.describe()
            ));
        }
        Ok(TestReport { checks })
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let session = connect(conn).await?;
        let bounds = sql::QueryBounds::new(&conn.settings, SERVER_TIMEOUT_GRACE);
        let id = conn.identifier.as_str();
        let what = "reading the catalog";
        let rows = match bounds
            .read(what, session.client.query(CATALOG, &[]))
            .await?
        {
            Ok(r) => r,
            Err(e) => return Err(session.error(&e, what, None, false).await),
        };
        let schemas = conn.settings.list("SchemaFilter");
        let tables = conn.settings.list("TableFilter");
        let mut catalog: Vec<SchemaTable> = Vec::new();
        // Keys of every table, for the configured `Table` entries too.
        let mut keys: std::collections::HashMap<(String, String), Vec<(String, KeyType)>> =
            Default::default();
        for r in &rows {
            let get = |i: usize| r.try_get::<_, String>(i).unwrap_or_default();
            let (nsp, rel, kind, att, fmt) = (get(0), get(1), get(2), get(3), get(4));
            let notnull: bool = r.try_get(5).unwrap_or(false);
            let oid: u32 = r.try_get(6).unwrap_or(0);
            let key = match r.try_get::<_, i32>(7).unwrap_or(0) {
                1 => KeyType::Primary,
                2 => KeyType::Unique,
                _ => KeyType::None,
            };
            keys.entry((nsp.clone(), rel.clone()))
                .or_default()
                .push((att.clone(), key));
            if !schemas.is_empty() && !schemas.iter().any(|p| sql::glob(p, &nsp)) {
                continue;
            }
            if !tables.is_empty() && !tables.iter().any(|p| sql::glob(p, &rel)) {
                continue;
            }
            let name = format!("{nsp}.{rel}");
            if catalog.last().is_none_or(|t| t.name != name) {
                catalog.push(SchemaTable {
                    name: name.clone(),
                    source: if kind == "v" || kind == "m" {
                        "view".into()
                    } else {
                        "table".into()
                    },
                    columns: Vec::new(),
                    source_table: true,
                });
            }
            let (value_type, multivalued) = Type::from_oid(oid)
                .map(|t| pgtypes::value_type(&t))
                .unwrap_or((crate::schema::ValueType::String, false));
            if let Some(t) = catalog.last_mut() {
                t.columns.push(SchemaColumn {
                    name: att,
                    value_type,
                    key_type: key,
                    multivalued,
                    nullable: Some(!notnull),
                    source_type: Some(fmt),
                });
            }
        }
        let mut out = Vec::new();
        for q in sql::table_queries(&conn.settings)? {
            let stmt = match bounds
                .read(&q.describe(), session.client.prepare(&statement_sql(&q)))
                .await?
            {
                Ok(s) => s,
                Err(e) => return Err(session.error(&e, &q.describe(), None, true).await),
            };
            let table_keys = match &q.source {
                QuerySource::Table(t) => {
                    let (nsp, rel) = t
                        .rsplit_once('.')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .unwrap_or(("public".into(), t.clone()));
                    keys.get(&(nsp, rel)).cloned().unwrap_or_default()
                }
                QuerySource::Sql(_) => Vec::new(),
            };
            out.push(SchemaTable {
                name: sql::table_name(id, &q),
                source: q.describe(),
                columns: stmt
                    .columns()
                    .iter()
                    .map(|c| {
                        let (value_type, multivalued) = pgtypes::value_type(c.type_());
                        SchemaColumn {
                            name: c.name().to_string(),
                            value_type,
                            key_type: table_keys
                                .iter()
                                .find(|(n, _)| n == c.name())
                                .map(|(_, k)| *k)
                                .unwrap_or_default(),
                            multivalued,
                            nullable: None,
                            source_type: Some(c.type_().name().to_string()),
                        }
                    })
                    .collect(),
                source_table: false,
            });
        }
        out.extend(catalog);
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
        let timeout = conn.settings.integer("Timeout").filter(|t| *t > 0);
        let bounds = sql::QueryBounds::new(&conn.settings, SERVER_TIMEOUT_GRACE);
        // A cancel ends the export at once, whatever the server is doing (or not doing).
        tokio::select! {
            r = export_queries(conn, &queries, timeout, &bounds, sink) => r,
            _ = conn.cancel.cancelled() => Err(PackageError::cancelled()),
        }
    }
}

/// Every table of an export in one read-only transaction, each query within its bounds.
async fn export_queries(
    conn: &ConnectionRef,
    queries: &[TableQuery],
    timeout: Option<i64>,
    bounds: &sql::QueryBounds,
    sink: RowSink,
) -> Result<ExportOutcome, PackageError> {
    let session = connect(conn).await?;
    let client = &session.client;
    let iso = match conn
        .settings
        .text("IsolationLevel")
        .unwrap_or("RepeatableRead")
    {
        "ReadCommitted" => "READ COMMITTED",
        "Serializable" => "SERIALIZABLE",
        _ => "REPEATABLE READ",
    };
    // One read-only transaction: every table of this export sees the same snapshot.
    let what = "starting the export transaction";
    if let Err(e) = bounds
        .read(
            what,
            client.batch_execute(&format!("BEGIN ISOLATION LEVEL {iso} READ ONLY")),
        )
        .await?
    {
        return Err(session.error(&e, what, None, false).await);
    }
    if let Some(t) = timeout {
        let what = "setting the Timeout";
        let set = format!("SET LOCAL statement_timeout = {}", t.saturating_mul(1000));
        if let Err(e) = bounds.read(what, client.batch_execute(&set)).await? {
            return Err(session.error(&e, what, None, false).await);
        }
    }
    let facts = session_facts(&session, bounds).await?;
    for q in queries {
        let what = q.describe();
        bounds
            .whole(
                &what,
                export_query(&session, conn, q, &what, timeout, bounds, facts, &sink),
            )
            .await?;
    }
    let _ = bounds.read("COMMIT", client.batch_execute("COMMIT")).await;
    Ok(ExportOutcome::Exported)
}

/// One table: its statement prepared (for the column names and types), then its rows streamed
/// with a binary COPY, each wait for the server within ReadTimeout.
#[allow(clippy::too_many_arguments)]
async fn export_query(
    session: &Session,
    conn: &ConnectionRef,
    q: &TableQuery,
    what: &str,
    timeout: Option<i64>,
    bounds: &sql::QueryBounds,
    facts: pgtypes::Session,
    sink: &RowSink,
) -> Result<(), PackageError> {
    let client = &session.client;
    let sql_text = statement_sql(q);
    let stmt = match bounds.read(what, client.prepare(&sql_text)).await? {
        Ok(s) => s,
        Err(e) => return Err(session.error(&e, what, timeout, true).await),
    };
    let names: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let mut writer = sink.table(q.name.as_deref(), names.clone())?;
    let copy_sql = format!("COPY (\n{sql_text}\n) TO STDOUT (FORMAT binary)");
    let copy = match bounds.read(what, client.copy_out(&copy_sql)).await? {
        Ok(c) => c,
        Err(e) => return Err(session.error(&e, what, timeout, false).await),
    };
    let mut rows = Box::pin(tokio_postgres::binary_copy::BinaryCopyOutStream::new(
        copy, &types,
    ));
    let mut n = 0u64;
    while let Some(row) = bounds.read(what, rows.next()).await? {
        if conn.cancel.is_cancelled() {
            return Err(PackageError::cancelled());
        }
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let mut err = session.error(&e, what, timeout, false).await;
                if n > 0 {
                    err.message = format!("{} (after {n} rows)", err.message);
                }
                return Err(err);
            }
        };
        n += 1;
        let mut values = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let raw: Raw = row
                .try_get(i)
                .map_err(|e| PackageError::source(format!("{what}: row {n}: {e}")))?;
            let v: Value = pgtypes::decode(ty, raw.0, facts).map_err(|e| {
                PackageError::config(format!(
                    "{what}: column {}: {e}",
                    names.get(i).map_or("?", String::as_str)
                ))
            })?;
            values.push(v);
        }
        writer.push(values).await?;
    }
    writer.finish().await?;
    Ok(())
}
