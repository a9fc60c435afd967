//! The `SqlServerEntitlements` package (COMPAT.md §2.5): who may log in and who holds which role,
//! at server level and in each database, to four fixed-suffix connection tables:
//!
//! | table | source |
//! |---|---|
//! | `<id>_serverPrincipals.csv` | `sys.server_principals` |
//! | `<id>_serverRoleMembers.csv` | `sys.server_role_members` |
//! | `<id>_databasePrincipals.csv` | `<db>.sys.database_principals` of every database, with a `database_name` column |
//! | `<id>_databaseRoleMembers.csv` | `<db>.sys.database_role_members` of every database, with a `database_name` column |
//!
//! `Databases` lists the databases; without it, every online database this login can access
//! (`sys.databases` with `state = 0` and `HAS_DBACCESS`). No incremental mode: every run is a full
//! extract.

use super::{
    BROWSER_PORT, CA_FILE, CONNECTION_STRING, Target2, TdsClient, check_connection, connect,
    deadline, literal, quote_brackets, stream_query, tds_error,
};
use crate::packages::spec::{Section, SettingKind, SettingSpec, Settings};
use crate::packages::sql;
use crate::packages::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport,
};
use crate::schema::{Schema, SchemaColumn, SchemaTable};
use crate::secret::Redactor;
use async_trait::async_trait;
use chrono::Utc;

pub struct SqlServerEntitlementsPackage;

const SETTINGS: &[SettingSpec] = &[
    CONNECTION_STRING,
    sql::TIMEOUT,
    sql::READ_TIMEOUT,
    sql::CONNECTION_STRING_OPTIONS,
    SettingSpec {
        name: "Databases",
        section: Section::General,
        kind: SettingKind::TextList,
        default: None,
        required: false,
        secured: false,
        description: "Databases whose principals and role members are exported; every online database the login can access when empty.",
    },
    BROWSER_PORT,
    CA_FILE,
];

static INFO: PackageInfo = PackageInfo {
    id: "SqlServerEntitlements",
    aliases: &["Usercube.SQL.SQLServerEntitlements@0000001"],
    category: Category::Database,
    description: "SQL Server logins, users and role memberships (server and databases)",
    has_incremental: false,
    settings: SETTINGS,
};

pub const SERVER_PRINCIPALS: &str = "SELECT name, principal_id, sid, type, type_desc, is_disabled, create_date, modify_date, default_database_name, default_language_name, owning_principal_id, is_fixed_role FROM sys.server_principals ORDER BY principal_id";
pub const SERVER_ROLE_MEMBERS: &str = "SELECT role_principal_id, member_principal_id FROM sys.server_role_members ORDER BY role_principal_id, member_principal_id";
pub const DATABASES: &str =
    "SELECT name FROM sys.databases WHERE state = 0 AND HAS_DBACCESS(name) = 1 ORDER BY name";

/// `sys.database_principals` of one database.
pub fn database_principals(db: &str) -> String {
    format!(
        "SELECT {} AS database_name, name, principal_id, sid, type, type_desc, default_schema_name, create_date, modify_date, owning_principal_id, authentication_type_desc, is_fixed_role FROM {}.sys.database_principals ORDER BY principal_id",
        literal(db),
        quote_brackets(db)
    )
}

/// `sys.database_role_members` of one database.
pub fn database_role_members(db: &str) -> String {
    format!(
        "SELECT {} AS database_name, role_principal_id, member_principal_id FROM {}.sys.database_role_members ORDER BY role_principal_id, member_principal_id",
        literal(db),
        quote_brackets(db)
    )
}

const TABLES: &[(&str, &[(&str, crate::schema::ValueType)])] = {
    use crate::schema::ValueType::*;
    &[
        (
            "serverPrincipals",
            &[
                ("name", String),
                ("principal_id", Int32),
                ("sid", Binary),
                ("type", String),
                ("type_desc", String),
                ("is_disabled", Bool),
                ("create_date", DateTime),
                ("modify_date", DateTime),
                ("default_database_name", String),
                ("default_language_name", String),
                ("owning_principal_id", Int32),
                ("is_fixed_role", Bool),
            ],
        ),
        (
            "serverRoleMembers",
            &[("role_principal_id", Int32), ("member_principal_id", Int32)],
        ),
        (
            "databasePrincipals",
            &[
                ("database_name", String),
                ("name", String),
                ("principal_id", Int32),
                ("sid", Binary),
                ("type", String),
                ("type_desc", String),
                ("default_schema_name", String),
                ("create_date", DateTime),
                ("modify_date", DateTime),
                ("owning_principal_id", Int32),
                ("authentication_type_desc", String),
                ("is_fixed_role", Bool),
            ],
        ),
        (
            "databaseRoleMembers",
            &[
                ("database_name", String),
                ("role_principal_id", Int32),
                ("member_principal_id", Int32),
            ],
        ),
    ]
};

/// The databases to read: the setting, or every accessible online database.
async fn databases(
    client: &mut TdsClient,
    settings: &Settings,
    redactor: &Redactor,
) -> Result<Vec<String>, PackageError> {
    let given = settings.list("Databases");
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let rows = client
        .simple_query(DATABASES)
        .await
        .map_err(|e| tds_error(&e, "listing the databases", redactor))?
        .into_first_result()
        .await
        .map_err(|e| tds_error(&e, "listing the databases", redactor))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<&str, _>(0).ok().flatten().map(str::to_string))
        .collect())
}

#[async_trait]
impl Package for SqlServerEntitlementsPackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        let mut problems = check_connection(settings);
        for db in settings.list("Databases") {
            if db.trim().is_empty() || db.len() > 128 {
                problems.push(Problem::new(
                    Some("Databases"),
                    "Databases holds an empty name or one longer than 128 characters",
                    "list database names as they appear in sys.databases",
                ));
            }
        }
        problems
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let redactor = conn.settings.redactor();
        let (mut client, t) = connect(&conn.settings).await?;
        let dbs = databases(&mut client, &conn.settings, &redactor).await?;
        Ok(TestReport {
            checks: vec![
                format!("logged in to {} as {}", t.shown(), t.user),
                format!("databases to read: {}", dbs.join(", ")),
            ],
        })
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let id = conn.identifier.as_str();
        Ok(Schema {
            connection: id.to_string(),
            package: INFO.id.to_string(),
            discovered_at: Utc::now(),
            tables: TABLES
                .iter()
                .map(|(suffix, cols)| SchemaTable {
                    name: crate::table_name::TableName::new(id, Some(suffix)).stem(),
                    source: format!("sys.{}", suffix),
                    columns: cols
                        .iter()
                        .map(|(name, value_type)| SchemaColumn {
                            name: (*name).to_string(),
                            value_type: *value_type,
                            key_type: Default::default(),
                            multivalued: false,
                            nullable: None,
                            source_type: None,
                        })
                        .collect(),
                    source_table: false,
                })
                .collect(),
        })
    }

    async fn export(
        &self,
        conn: &ConnectionRef,
        _mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        // No incremental mode: like the other SQL packages, an incremental run is a full extract
        // (COMPAT.md §3.4: the delta is computed downstream against the previous files).
        let redactor = conn.settings.redactor();
        let (mut client, _) = connect(&conn.settings).await?;
        let dbs = databases(&mut client, &conn.settings, &redactor).await?;
        let server: [(&str, &str, String); 2] = [
            (
                "serverPrincipals",
                "sys.server_principals",
                SERVER_PRINCIPALS.into(),
            ),
            (
                "serverRoleMembers",
                "sys.server_role_members",
                SERVER_ROLE_MEMBERS.into(),
            ),
        ];
        for (table, what, sql_text) in server {
            let mut writer = None;
            stream_query(
                &mut client,
                &sql_text,
                what,
                Target2 {
                    sink: &sink,
                    table: Some(table),
                    writer: &mut writer,
                },
                conn,
                deadline(&conn.settings),
                &redactor,
            )
            .await?;
            if let Some(w) = writer {
                w.finish().await?;
            }
        }
        type PerDb = fn(&str) -> String;
        let per_db: [(&str, &str, PerDb); 2] = [
            (
                "databasePrincipals",
                "sys.database_principals",
                database_principals,
            ),
            (
                "databaseRoleMembers",
                "sys.database_role_members",
                database_role_members,
            ),
        ];
        for (table, view, make) in per_db {
            let mut writer = None;
            for db in &dbs {
                let what = format!("{view} of database {db}");
                stream_query(
                    &mut client,
                    &make(db),
                    &what,
                    Target2 {
                        sink: &sink,
                        table: Some(table),
                        writer: &mut writer,
                    },
                    conn,
                    deadline(&conn.settings),
                    &redactor,
                )
                .await?;
            }
            let w = match writer {
                Some(w) => w,
                // No database at all: the table is still written, with its header only.
                None => sink.table(
                    Some(table),
                    TABLES
                        .iter()
                        .find(|(t, _)| *t == table)
                        .map(|(_, cols)| cols.iter().map(|(n, _)| (*n).to_string()).collect())
                        .unwrap_or_default(),
                )?,
            };
            w.finish().await?;
        }
        Ok(ExportOutcome::Exported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_database_queries_quote_names() {
        assert_eq!(
            database_role_members("H]R's"),
            "SELECT N'H]R''s' AS database_name, role_principal_id, member_principal_id FROM [H]]R's].sys.database_role_members ORDER BY role_principal_id, member_principal_id"
        );
        assert!(database_principals("hr").contains("FROM [hr].sys.database_principals"));
    }
}
