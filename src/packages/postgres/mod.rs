//! The `PostgreSql` package: tokio-postgres, TLS through rustls, one read-only snapshot per export,
//! and rows streamed with `COPY (query) TO STDOUT (FORMAT binary)`, decoded into the canonical
//! text forms (`types`).

mod discovery;
mod export;
mod session;
mod target;
pub mod types;

use export::*;
use session::*;
use target::*;

use crate::packages::connstr::{ConnectionString, Part};

use crate::packages::spec::{Section, SettingKind, SettingSpec, Settings};
use crate::packages::sql::{self, TableQuery};
use crate::packages::value::Value;
use crate::packages::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport,
};
use crate::schema::{Schema, SchemaColumn, SchemaTable};
use async_trait::async_trait;
use chrono::Utc;
use postgres_types::{FromSql, Type};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_stream::StreamExt;

pub struct PostgresPackage;

/// ReadUncommitted is the SQL family's documented default: PostgreSQL accepts it and runs it as
/// Read Committed.
const ISOLATION: &[&str] = &[
    "ReadUncommitted",
    "ReadCommitted",
    "RepeatableRead",
    "Serializable",
];

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
    sql::PROVIDER_CLASS_FULL_NAME,
    sql::PROVIDER_DLL_NAME,
    SettingSpec {
        name: "IsolationLevel",
        section: Section::Advanced,
        kind: SettingKind::Choice(ISOLATION),
        default: Some("RepeatableRead"),
        required: false,
        secured: false,
        description: "Isolation of the export's read-only transaction. RepeatableRead (the default) gives every table of one export the same snapshot. ReadUncommitted (the SQL family's documented default) is accepted; PostgreSQL runs it as ReadCommitted.",
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
    sql::SCHEMA_FILTER,
    sql::TABLE_FILTER,
];

static INFO: PackageInfo = PackageInfo {
    id: "PostgreSql",
    aliases: &["Usercube.SQL.PostgreSQL@0000001", "PostgreSQL", "Postgres"],
    category: Category::Database,
    description: "PostgreSQL database",
    has_incremental: false,
    settings: SETTINGS,
};

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
        discovery::discover(conn).await
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
