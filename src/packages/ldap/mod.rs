//! The `Ldap` package: an LDAP directory (OpenLDAP, Active Directory, 389-DS, ...) read with
//! paged searches (RFC 2696) over plain LDAP, LDAPS or StartTLS, written as connection tables:
//!
//! * `<id>_entries.csv`: `dn`, `parentdn`, then one column per attribute: the `Attributes`
//!   setting in its order; when it is empty, the `ConnectionColumn`s of the EntityTypeMappings
//!   whose ConnectionTable is `<id>_entries`; when there are none, the attributes that the object
//!   classes of the matched entries allow in the subschema (MUST and MAY, superclasses included),
//!   sorted by name ignoring case, without operational, obsolete and password attributes
//!   ([`PASSWORD_ATTRIBUTES`]). Those classes come from a first paged pass over the same search
//!   that reads only `objectClass`; without a readable subschema that fallback fails and names
//!   the fix (set `Attributes`). Discovery lists the same columns.
//! * `<id>_<attr>.csv` for each link table (`member`, `manager`, ...): `dn`, `<attr>`, one row
//!   per value, read from the entries that the table's own BaseDN/Filter/Scope match.
//!
//! Attribute names: a column asked for by an alias or an OID (`commonName`, `2.5.4.3`) gets the
//! values the server returns under its own name (`cn`): returned descriptions are matched to
//! columns through the subschema (names, aliases and OID, ignoring case; `;binary` and `;range=`
//! left out, other options kept). Without a readable subschema, names must match (ignoring case).
//!
//! Values: a multi-valued attribute is one field with its values joined by `\n` (the sink's rule
//! for [`Value::Multi`]). Whether a column is binary (base64, [`Value::Bytes`]) is decided once
//! per column, never per value: when it was asked for with `;binary`, when its name is a
//! well-known binary one (`objectGUID`, `jpegPhoto`, `userCertificate`, ...), or when the
//! subschema gives it a binary syntax ([`BINARY_SYNTAXES`], or one the server's `ldapSyntaxes`
//! marks `X-NOT-HUMAN-READABLE`/`X-BINARY-TRANSFER-REQUIRED`). A value that is not UTF-8 in a
//! text column fails the export (strict text) with the entry, the attribute and the fix
//! (`;binary`). Ranged values (Active Directory's `member;range=0-1499`) are completed with
//! base-scope searches of the entry; a follow-up answer without the range asked for, or with a
//! malformed one, fails the export rather than publish part of the values.
//!
//! Paging: each page is a search with the paged-results control (RFC 2696) and the cookie of
//! the previous page, driven here rather than by ldap3's adapter so that every page's result
//! code is checked (a size-limit, time-limit or admin-limit answer on any page fails the export,
//! nothing is silently cut short), a malformed control is an error instead of a panic, and a
//! server that keeps answering with no entries (the same cookie back [`MAX_STALLED_PAGES`] times,
//! or [`MAX_EMPTY_PAGES`] empty pages in a row) stops the export instead of looping.
//!
//! Servers are tried in order until one connects and binds (failover). Rows are streamed into
//! the sink as entries arrive; at most one entry (with all its values) is held at a time.
//!
//! Secrets: the bind password is the secured top-level `Password` setting. A `Password` written
//! inside a `Servers` item is parsed into a [`Secret`] at once, never shown, and refused by
//! [`Package::check`], because a structured setting is not redacted like a secured one.
//!
//! TLS (LDAPS, StartTLS) verifies the server's certificate and host name (or IP address) against
//! the system's root certificates; when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set in the agent's
//! environment, against the certificates found there instead (how a private CA is trusted).
//!
//! Dependency: ldap3 0.12 with `default-features = false, features = ["tls-rustls-ring"]`: the
//! async API only, and TLS through rustls 0.23 with ring (the same rustls and ring as the rest of
//! the agent).

mod search;
mod session;
mod settings;
mod subschema;
#[cfg(test)]
mod tests;
mod values;

use search::*;
use session::*;
use settings::*;
use subschema::*;
use values::*;

/// The limits of paging, and the paged-results control, for tests that script a server.
pub use settings::{MAX_EMPTY_PAGES, MAX_STALLED_PAGES, PAGED_RESULTS_OID};

use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::value::{Row, Value};
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport, problems_error,
};
use crate::schema::{KeyType, Schema, SchemaColumn, SchemaTable, ValueType};
use crate::secret::{Redactor, Secret};
use async_trait::async_trait;
use chrono::Utc;
use ldap3::adapters::EntriesOnly;
use ldap3::asn1::{PL, StructureTag, TagClass};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, SearchOptions};
use serde_json::Value as J;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct LdapPackage;

/// Every secret these settings hold, including a password written inside `Servers`.
fn redactor(settings: &Settings) -> Redactor {
    let mut r = settings.redactor();
    let (servers, _) = parse_servers(settings.structured("Servers"), true);
    for p in servers.iter().filter_map(|s| s.own_password.as_ref()) {
        r.add(p);
    }
    r
}

fn redacted(e: PackageError, r: &Redactor) -> PackageError {
    PackageError {
        class: e.class,
        message: r.redact(&e.message),
    }
}

impl LdapPackage {
    async fn run_test(conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let cfg = Config::for_connection(conn).map_err(problems_error)?;
        let mut s = connect_any(&cfg, &conn.cancel).await?;
        let mut checks = std::mem::take(&mut s.skipped);
        checks.push(format!(
            "connected to {} ({}); bound as {}",
            s.server, s.transport, s.login
        ));
        let root = s.root.clone();
        if let Some(why) = &root.unreadable {
            checks.push(format!("root DSE: not readable: {why}"));
        } else {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "(none)".to_string()
                } else {
                    v.join(", ")
                }
            };
            checks.push(format!(
                "root DSE: namingContexts: {}",
                list(&root.naming_contexts)
            ));
            checks.push(format!(
                "root DSE: supportedLDAPVersion: {}",
                list(&root.versions)
            ));
            if let Some(v) = &root.vendor_name {
                checks.push(format!(
                    "root DSE: vendorName: {v}{}",
                    root.vendor_version
                        .as_deref()
                        .map(|x| format!(" {x}"))
                        .unwrap_or_default()
                ));
            }
            let paged = root
                .supported_controls
                .iter()
                .any(|c| c.trim() == PAGED_RESULTS_OID);
            checks.push(format!(
                "root DSE: supportedControl: {} controls; paged results ({PAGED_RESULTS_OID}) {}",
                root.supported_controls.len(),
                if paged {
                    "supported"
                } else {
                    "not announced: the export asks for it anyway (not critical), and a server that ignores it returns each table in one answer, subject to its size limit"
                }
            ));
        }
        for table in cfg.tables.clone() {
            checks.push(probe_table(&mut s, &cfg, &table, &conn.cancel).await?);
        }
        s.close().await;
        Ok(TestReport { checks })
    }

    async fn run_discover(conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let cfg = Config::for_connection(conn).map_err(problems_error)?;
        let id = conn.identifier.as_str();
        let mut s = connect_any(&cfg, &conn.cancel).await?;
        let subschema = match load_subschema(&mut s, &cfg, &conn.cancel).await {
            Ok(schema) => schema,
            Err(e) if e.class == super::FailureClass::Cancelled => return Err(e),
            // With explicit Attributes the columns are known; types then come from the names.
            Err(e) if !cfg.attributes.is_empty() => {
                tracing::debug!(error = %e.message, "LDAP subschema not readable");
                Subschema::default()
            }
            Err(e) => return Err(subschema_needed(e, &s.login)),
        };
        let entries = cfg.entries_table()?;
        // (column name, what is asked for)
        let attributes: Vec<(String, String)> = if cfg.attributes.is_empty() {
            schema_columns(&mut s, &cfg, entries, &subschema, &conn.cancel)
                .await?
                .into_iter()
                .map(|n| (n.clone(), n))
                .collect()
        } else {
            cfg.attributes
                .iter()
                .map(|c| (c.name.clone(), c.request.clone()))
                .collect()
        };
        s.close().await;
        let mut columns = vec![
            SchemaColumn {
                name: "dn".into(),
                value_type: ValueType::String,
                key_type: KeyType::Primary,
                multivalued: false,
                nullable: Some(false),
                source_type: None,
            },
            SchemaColumn {
                name: "parentdn".into(),
                value_type: ValueType::String,
                key_type: KeyType::None,
                multivalued: false,
                nullable: Some(true),
                source_type: None,
            },
        ];
        columns.extend(
            attributes
                .iter()
                .map(|(name, request)| subschema.column(name, request)),
        );
        let mut tables = vec![SchemaTable {
            name: crate::table_name::TableName::new(id, Some(ENTRIES)).stem(),
            source: entries.describe(),
            columns,
            source_table: false,
        }];
        for t in cfg.tables.iter().filter(|t| !t.is_entries) {
            let mut value = subschema.column(&t.name, &t.name);
            value.multivalued = false;
            tables.push(SchemaTable {
                name: crate::table_name::TableName::new(id, Some(&t.name)).stem(),
                source: t.describe(),
                columns: vec![
                    SchemaColumn {
                        name: "dn".into(),
                        value_type: ValueType::String,
                        key_type: KeyType::None,
                        multivalued: false,
                        nullable: Some(false),
                        source_type: None,
                    },
                    value,
                ],
                source_table: false,
            });
        }
        Ok(Schema {
            connection: conn.identifier.to_string(),
            package: INFO.id.to_string(),
            discovered_at: Utc::now(),
            tables,
        })
    }

    async fn run_export(
        conn: &ConnectionRef,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        let cfg = Config::for_connection(conn).map_err(problems_error)?;
        let cancel = &conn.cancel;
        let mut s = connect_any(&cfg, cancel).await?;
        for skipped in &s.skipped {
            tracing::warn!(connection = %conn.identifier, "{skipped}");
        }
        // Aliases, OIDs and binary syntaxes come from the subschema. With explicit columns it is
        // best effort (names must then match, and names decide what is binary); the schema-based
        // columns need it.
        let subschema = match load_subschema(&mut s, &cfg, cancel).await {
            Ok(schema) => schema,
            Err(e) if e.class == super::FailureClass::Cancelled => return Err(e),
            Err(e) if !cfg.attributes.is_empty() => {
                tracing::warn!(connection = %conn.identifier, error = %e.message, "LDAP subschema not readable: attribute names must match the server's, and only ;binary and well-known names are exported as base64");
                Subschema::default()
            }
            Err(e) => return Err(subschema_needed(e, &s.login)),
        };
        let entries = cfg.entries_table()?.clone();
        let mut list = if cfg.attributes.is_empty() {
            schema_columns(&mut s, &cfg, &entries, &subschema, cancel)
                .await?
                .iter()
                .map(|n| Column::new(n))
                .collect()
        } else {
            cfg.attributes.clone()
        };
        // Binary or text: once per column, from what was asked and the syntax.
        for c in list.iter_mut() {
            c.binary = subschema.is_binary(&c.request);
        }
        let columns = Columns::new(list, &subschema);
        let n = export_entries(&mut s, &cfg, &subschema, &entries, &columns, &sink, cancel).await?;
        tracing::info!(connection = %conn.identifier, server = %s.server, entries = n, "LDAP entries exported");
        for table in cfg.tables.iter().filter(|t| !t.is_entries) {
            let rows = export_link(&mut s, &cfg, &subschema, table, &sink, cancel).await?;
            tracing::info!(connection = %conn.identifier, table = %table.name, rows, "LDAP link table exported");
        }
        s.close().await;
        Ok(ExportOutcome::Exported)
    }
}

#[async_trait]
impl Package for LdapPackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        match Config::load(settings) {
            Ok(cfg) => cfg.notes,
            Err(problems) => problems,
        }
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let r = redactor(&conn.settings);
        Self::run_test(conn)
            .await
            .map(|mut report| {
                report.checks = report.checks.iter().map(|c| r.redact(c)).collect();
                report
            })
            .map_err(|e| redacted(e, &r))
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let r = redactor(&conn.settings);
        Self::run_discover(conn).await.map_err(|e| redacted(e, &r))
    }

    async fn export(
        &self,
        conn: &ConnectionRef,
        _mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        let r = redactor(&conn.settings);
        Self::run_export(conn, sink)
            .await
            .map_err(|e| redacted(e, &r))
    }
}
