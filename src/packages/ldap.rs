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

use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::value::{Row, Value};
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport,
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
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct LdapPackage;

const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "Servers",
        section: Section::General,
        kind: SettingKind::Structured,
        default: None,
        required: true,
        secured: false,
        description: "The directory servers, tried in order until one connects and binds: a list of {\"Server\": \"ldap://host:389\", \"ldaps://host:636\" or \"host[:port]\", \"AuthType\": \"Anonymous\" or \"Basic\" (Basic when Login is set), \"Login\": a bind DN (or user@domain for Active Directory), \"EnableSSL\": true for LDAPS, \"StartTLS\": true to upgrade a plain connection, \"Controls\": [\"PagedResult\"]}. The password is the secured Password setting, never a key of this list.",
    },
    SettingSpec {
        name: "Password",
        section: Section::General,
        kind: SettingKind::Text,
        default: None,
        required: false,
        secured: true,
        description: "Password of the servers' Login (Basic authentication).",
    },
    SettingSpec {
        name: "Tables",
        section: Section::General,
        kind: SettingKind::Structured,
        default: None,
        required: true,
        secured: false,
        description: "What is read: a list of {\"Table\": \"entries\" or a link attribute such as \"member\", \"BaseDN\": \"ou=people,dc=example,dc=com\", \"Filter\": \"(objectClass=person)\", \"Scope\": \"Base\", \"OneLevel\" or \"Subtree\" (the default)}. Exactly one \"entries\" table, exported to <connection>_entries.csv (Filter defaults to (objectClass=*)); each link table is exported to <connection>_<attribute>.csv, one row per value (BaseDN defaults to the entries table's, Filter to (<attribute>=*)).",
    },
    SettingSpec {
        name: "Attributes",
        section: Section::Additional,
        kind: SettingKind::TextList,
        default: None,
        required: false,
        secured: false,
        description: "Attributes exported as columns of the entries table, in this order, by name, alias or OID; \";binary\" may be appended (export as base64) and is left out of the column name. When empty (and no EntityTypeMapping reads the entries table), the columns are the attributes that the object classes of the matched entries allow in the subschema (MUST and MAY), in name order, without operational, obsolete and password attributes (a first paged pass reads the entries' objectClass values).",
    },
    SettingSpec {
        name: "PageSize",
        section: Section::Advanced,
        kind: SettingKind::Integer,
        default: Some("500"),
        required: false,
        secured: false,
        description: "Entries per page of the paged searches (RFC 2696 paged results). Keep it at or below the server's own limit (OpenLDAP olcSizeLimit, Active Directory MaxPageSize).",
    },
    SettingSpec {
        name: "SizeLimit",
        section: Section::Advanced,
        kind: SettingKind::Integer,
        default: Some("0"),
        required: false,
        secured: false,
        description: "Most entries one table may read; a table with more fails the export (nothing is published). The server is asked for the same limit, over all the pages of a search. 0: no limit asked by the agent (the server's own limits still apply).",
    },
    SettingSpec {
        name: "TimeLimit",
        section: Section::Advanced,
        kind: SettingKind::Integer,
        default: Some("0"),
        required: false,
        secured: false,
        description: "Seconds the server may spend on each search request (each page). 0: no limit asked by the agent.",
    },
    SettingSpec {
        name: "TimeOut",
        section: Section::Advanced,
        kind: SettingKind::Integer,
        default: Some("30"),
        required: false,
        secured: false,
        description: "Seconds to wait for a connection to a server and for each of its answers. 0: wait forever.",
    },
];

static INFO: PackageInfo = PackageInfo {
    id: "Ldap",
    aliases: &["Usercube.LDAP@0000001", "LDAP"],
    category: Category::Directory,
    description: "LDAP directory (OpenLDAP, Active Directory, ...), read with paged searches",
    has_incremental: false,
    settings: SETTINGS,
};

/// The suffix of the entries table, and the `Table` value that names it.
const ENTRIES: &str = "entries";
/// RFC 2696 simple paged results.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
const MAX_PAGE_SIZE: i64 = 100_000;
const MAX_SECONDS: i64 = 7 * 24 * 3600;
/// Ranged retrieval rounds for one attribute of one entry: 100 000 ranges of 1 500 values.
const MAX_RANGE_ROUNDS: usize = 100_000;
/// Pages in a row that bring no entry and the very cookie they were asked with: the server makes
/// no progress, and asking again would loop forever.
const MAX_STALLED_PAGES: u32 = 3;
/// Pages in a row that bring no entry, whatever their cookies. Servers may answer a page with no
/// entry when a filter matches few of many entries (Active Directory), but not without end.
const MAX_EMPTY_PAGES: u32 = 1_000;
/// Distinct object classes the first pass of the schema-based columns keeps (memory bound).
const MAX_OBJECT_CLASSES: usize = 10_000;
/// Root DSE attributes read by every connection (`test` reports them).
const ROOT_DSE_ATTRS: &[&str] = &[
    "namingContexts",
    "supportedControl",
    "supportedLDAPVersion",
    "vendorName",
    "vendorVersion",
    "subschemaSubentry",
];
const SERVER_KEYS: &[&str] = &[
    "Server",
    "AuthType",
    "Login",
    "Password",
    "EnableSSL",
    "StartTLS",
    "Controls",
];
const TABLE_KEYS: &[&str] = &["Table", "BaseDN", "Filter", "Scope"];
const NEGOTIATE_MESSAGE: &str =
    "AuthType Negotiate (Kerberos/NTLM) is not supported on this platform: use Basic";

/// Attribute names whose values are binary whatever the server says (lower case).
const KNOWN_BINARY: &[&str] = &[
    "audio",
    "authorityrevocationlist",
    "cacertificate",
    "certificaterevocationlist",
    "crosscertificatepair",
    "deltarevocationlist",
    "jpegphoto",
    "logonhours",
    "ms-ds-consistencyguid",
    "msexcharchiveguid",
    "msexchmailboxguid",
    "msexchmailboxsecuritydescriptor",
    "ntsecuritydescriptor",
    "objectguid",
    "objectsid",
    "photo",
    "securityidentifier",
    "sidhistory",
    "thumbnaillogo",
    "thumbnailphoto",
    "tokengroups",
    "usercertificate",
    "userpkcs12",
    "usersmimecertificate",
];

/// LDAP syntaxes whose values are bytes, not text: Audio (.4), Binary (.5), Certificate (.8),
/// Certificate List (.9), Certificate Pair (.10), Fax (.23), JPEG (.28), Octet String (.40),
/// Supported Algorithm (.49), and Active Directory's NT security descriptor (…4.907).
const BINARY_SYNTAXES: &[&str] = &[
    "1.3.6.1.4.1.1466.115.121.1.4",
    "1.3.6.1.4.1.1466.115.121.1.5",
    "1.3.6.1.4.1.1466.115.121.1.8",
    "1.3.6.1.4.1.1466.115.121.1.9",
    "1.3.6.1.4.1.1466.115.121.1.10",
    "1.3.6.1.4.1.1466.115.121.1.23",
    "1.3.6.1.4.1.1466.115.121.1.28",
    "1.3.6.1.4.1.1466.115.121.1.40",
    "1.3.6.1.4.1.1466.115.121.1.49",
    "1.2.840.113556.1.4.907",
];

/// Attributes holding passwords or their hashes (lower case): never a column of the
/// schema-based fallback (list them in `Attributes` to export them anyway).
const PASSWORD_ATTRIBUTES: &[&str] = &[
    "authpassword",
    "dbcspwd",
    "lmpwdhistory",
    "ntpwdhistory",
    "sambalmpassword",
    "sambantpassword",
    "sambapasswordhistory",
    "supplementalcredentials",
    "unicodepwd",
    "userpassword",
];

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthType {
    Anonymous,
    Basic,
    Negotiate,
}

/// One item of `Servers`.
#[derive(Debug, Clone)]
struct ServerConfig {
    /// The normalized URL (`ldap://host:389`), also the server's name in messages.
    url: String,
    auth: AuthType,
    login: Option<String>,
    /// A `Password` written in the item itself. Refused by `check`; kept as a secret so that
    /// nothing can show it.
    own_password: Option<Secret>,
    start_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    Base,
    OneLevel,
    Subtree,
}

impl ScopeKind {
    fn parse(s: &str) -> Option<ScopeKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "base" => Some(ScopeKind::Base),
            "onelevel" | "one" => Some(ScopeKind::OneLevel),
            "subtree" | "sub" => Some(ScopeKind::Subtree),
            _ => None,
        }
    }

    fn ldap(self) -> ldap3::Scope {
        match self {
            ScopeKind::Base => ldap3::Scope::Base,
            ScopeKind::OneLevel => ldap3::Scope::OneLevel,
            ScopeKind::Subtree => ldap3::Scope::Subtree,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ScopeKind::Base => "Base",
            ScopeKind::OneLevel => "OneLevel",
            ScopeKind::Subtree => "Subtree",
        }
    }
}

/// One item of `Tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableConfig {
    /// `entries`, or the link attribute (also the table suffix and the second column).
    name: String,
    is_entries: bool,
    base_dn: String,
    filter: String,
    scope: ScopeKind,
}

impl TableConfig {
    fn describe(&self) -> String {
        format!(
            "BaseDN {}, Scope {}, Filter {}",
            self.base_dn,
            self.scope.name(),
            self.filter
        )
    }
}

/// One exported attribute of the entries table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// The CSV header: the attribute description without `;binary` / `;range=`.
    name: String,
    /// `name` in lower case: how `Attributes` is checked for repeated names. (Returned
    /// attribute descriptions find their column through [`Subschema::key`], by OID.)
    key: String,
    /// What the search asks for (`userCertificate;binary`, `2.5.4.3`).
    request: String,
    /// Written as bytes (base64), every value of every row: from the name until the export
    /// knows the subschema, then [`Subschema::is_binary`].
    binary: bool,
}

impl Column {
    fn new(request: &str) -> Column {
        let name = column_name(request);
        Column {
            key: name.to_ascii_lowercase(),
            binary: is_binary_name(request),
            request: request.to_string(),
            name,
        }
    }
}

/// A connection's settings, checked.
#[derive(Debug, Clone)]
struct Config {
    servers: Vec<ServerConfig>,
    default_password: Option<Secret>,
    /// The entries table first, then the link tables in their order.
    tables: Vec<TableConfig>,
    /// Empty: discovered from the entries.
    attributes: Vec<Column>,
    page_size: i32,
    size_limit: i32,
    time_limit: i32,
    timeout: Option<Duration>,
}

impl Config {
    /// The configuration of a connection: its settings, and — when `Attributes` is empty — the
    /// columns that the EntityTypeMappings of `<connection>_entries` read.
    fn for_connection(conn: &ConnectionRef) -> Result<Config, Vec<Problem>> {
        let mut cfg = Config::load(&conn.settings)?;
        if cfg.attributes.is_empty() {
            let entries =
                crate::table_name::TableName::new(conn.identifier.as_str(), Some(ENTRIES)).key();
            let mapped: Vec<String> = conn
                .mapped_columns
                .iter()
                .filter(|(table, _)| table.eq_ignore_ascii_case(&entries))
                .flat_map(|(_, cols)| cols.iter())
                .filter(|c| !c.eq_ignore_ascii_case("dn") && !c.eq_ignore_ascii_case("parentdn"))
                .cloned()
                .collect();
            if !mapped.is_empty() {
                let (columns, problems) = parse_attributes(&mapped);
                if !problems.is_empty() {
                    return Err(problems);
                }
                cfg.attributes = columns;
            }
        }
        Ok(cfg)
    }

    fn load(settings: &Settings) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        let default_password = settings
            .secret("Password")
            .filter(|s| !s.is_empty())
            .cloned();
        let (servers, p) =
            parse_servers(settings.structured("Servers"), default_password.is_some());
        problems.extend(p);
        let (tables, p) = parse_tables(settings.structured("Tables"));
        problems.extend(p);
        let (attributes, p) = parse_attributes(settings.list("Attributes"));
        problems.extend(p);
        let page_size = int_setting(settings, "PageSize", 500, 1, MAX_PAGE_SIZE, &mut problems);
        let size_limit = int_setting(settings, "SizeLimit", 0, 0, i32::MAX as i64, &mut problems);
        let time_limit = int_setting(settings, "TimeLimit", 0, 0, MAX_SECONDS, &mut problems);
        let timeout = int_setting(settings, "TimeOut", 30, 0, MAX_SECONDS, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            servers,
            default_password,
            tables,
            attributes,
            // The ranges above keep these within i32.
            page_size: i32::try_from(page_size).unwrap_or(500),
            size_limit: i32::try_from(size_limit).unwrap_or(0),
            time_limit: i32::try_from(time_limit).unwrap_or(0),
            timeout: (timeout > 0).then(|| Duration::from_secs(timeout.unsigned_abs())),
        })
    }

    fn entries_table(&self) -> Result<&TableConfig, PackageError> {
        self.tables
            .iter()
            .find(|t| t.is_entries)
            .ok_or_else(|| PackageError::config("Tables has no \"entries\" table"))
    }

    fn timeout_text(&self) -> String {
        match self.timeout {
            Some(t) => format!("the TimeOut of {} seconds", t.as_secs()),
            None => "the TimeOut".to_string(),
        }
    }
}

fn int_setting(
    settings: &Settings,
    name: &'static str,
    default: i64,
    min: i64,
    max: i64,
    problems: &mut Vec<Problem>,
) -> i64 {
    let v = settings.integer(name).unwrap_or(default);
    if v < min || v > max {
        problems.push(Problem::new(
            Some(name),
            format!("{name} must be between {min} and {max}, not {v}"),
            format!("set {name} to a value in that range (default {default})"),
        ));
        return default;
    }
    v
}

fn problems_error(problems: Vec<Problem>) -> PackageError {
    PackageError::config(
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The items of a structured setting: a list, an object keyed by index (an environment
/// override of item N), or one object.
fn items(v: &J) -> Vec<&J> {
    match v {
        J::Array(a) => a.iter().collect(),
        J::Object(m) if !m.is_empty() && m.keys().all(|k| k.parse::<usize>().is_ok()) => {
            let mut v: Vec<(usize, &J)> = m
                .iter()
                .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
                .collect();
            v.sort_by_key(|(i, _)| *i);
            v.into_iter().map(|(_, v)| v).collect()
        }
        other => vec![other],
    }
}

fn get_ci<'a>(m: &'a serde_json::Map<String, J>, key: &str) -> Option<&'a J> {
    crate::ident::get_ci(m, key).filter(|v| !v.is_null())
}

fn unknown_keys(m: &serde_json::Map<String, J>, allowed: &[&str]) -> Vec<String> {
    m.keys()
        .filter(|k| !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)))
        .cloned()
        .collect()
}

/// A text field; numbers are taken as text. Never used for the password.
fn text_field(m: &serde_json::Map<String, J>, key: &str) -> Result<Option<String>, String> {
    match get_ci(m, key) {
        None => Ok(None),
        Some(J::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(J::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("{key} must be text, not {other}")),
    }
}

fn bool_field(m: &serde_json::Map<String, J>, key: &str) -> Result<bool, String> {
    match get_ci(m, key) {
        None => Ok(false),
        Some(J::Bool(b)) => Ok(*b),
        Some(J::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(J::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{key} must be true or false, not {other}")),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `ldap://host:port`, `ldaps://host:port` or `host[:port]` (EnableSSL choosing the scheme) as
/// a URL with an explicit port. Returns the URL and whether it is LDAPS.
fn normalize_server(text: &str, enable_ssl: bool) -> Result<(String, bool), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("Server is empty".into());
    }
    let (ldaps, rest) = if let Some(r) = strip_prefix_ci(t, "ldaps://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(t, "ldap://") {
        if enable_ssl {
            return Err(format!(
                "EnableSSL is true but Server {t} starts with ldap://; write ldaps://, or host:port"
            ));
        }
        (false, r)
    } else if t.contains("://") {
        return Err(format!(
            "Server {t} has an unsupported scheme: use ldap://, ldaps:// or host:port"
        ));
    } else {
        (enable_ssl, t)
    };
    let (hostport, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !tail.is_empty() && tail != "/" {
        return Err(format!(
            "Server {t} holds a path or query ({tail}); give only the host and port, and set BaseDN in Tables"
        ));
    }
    let (host, port) = split_host_port(hostport).map_err(|e| format!("Server {t}: {e}"))?;
    let port = port.unwrap_or(if ldaps { 636 } else { 389 });
    let scheme = if ldaps { "ldaps" } else { "ldap" };
    Ok((format!("{scheme}://{host}:{port}"), ldaps))
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; the host comes back
/// ready for a URL (IPv6 in brackets).
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port number"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address opened with [ is not closed with ]".to_string())?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        let p = match after {
            "" => None,
            a => Some(port(a.strip_prefix(':').ok_or("expected :port after ]")?)?),
        };
        return Ok((format!("[{addr}]"), p));
    }
    if s.matches(':').count() > 1 {
        if !s
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("{s:?} is not a host name or an IPv6 address"));
        }
        return Ok((format!("[{s}]"), None));
    }
    let (host, p) = match s.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (s, None),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok((host.to_string(), p))
}

/// Parses `Servers`. The servers that could be read come back even when there are problems
/// (the redactor needs their passwords).
fn parse_servers(
    value: Option<&J>,
    has_default_password: bool,
) -> (Vec<ServerConfig>, Vec<Problem>) {
    let mut servers = Vec::new();
    let mut problems = Vec::new();
    let hint = "write Servers as [{\"Server\": \"ldap://host:389\", \"Login\": \"cn=reader,dc=example,dc=com\"}] and set the secured Password setting";
    let Some(value) = value else {
        problems.push(Problem::new(Some("Servers"), "Servers is not set", hint));
        return (servers, problems);
    };
    let list = items(value);
    if list.is_empty() {
        problems.push(Problem::new(
            Some("Servers"),
            "Servers is an empty list",
            hint,
        ));
    }
    for (i, item) in list.into_iter().enumerate() {
        let n = i + 1;
        let mut problem = |message: String, hint: &str| {
            problems.push(Problem::new(
                Some("Servers"),
                format!("Servers item {n}: {message}"),
                hint,
            ))
        };
        // Borrowed, not copied: the item may hold a password.
        let single;
        let m: &serde_json::Map<String, J> = match item {
            J::String(s) => {
                single = serde_json::Map::from_iter([("Server".to_string(), J::String(s.clone()))]);
                &single
            }
            J::Object(m) => m,
            _ => {
                problem("expected an object or a server name".into(), hint);
                continue;
            }
        };
        let unknown = unknown_keys(m, SERVER_KEYS);
        if !unknown.is_empty() {
            problem(
                format!("unknown key(s) {}", unknown.join(", ")),
                "the keys are Server, AuthType, Login, EnableSSL, StartTLS and Controls",
            );
        }
        // The password first, into a Secret, before anything else can copy or show it.
        let own_password = match get_ci(m, "Password") {
            None => None,
            Some(J::String(s)) => Some(Secret::new(s.as_str())),
            Some(J::Number(x)) => Some(Secret::new(x.to_string())),
            Some(_) => {
                problem(
                    "Password must be text".into(),
                    "remove Password from Servers",
                );
                None
            }
        };
        let enable_ssl = bool_field(m, "EnableSSL").unwrap_or_else(|e| {
            problem(e, "write true or false");
            false
        });
        let start_tls = bool_field(m, "StartTLS").unwrap_or_else(|e| {
            problem(e, "write true or false");
            false
        });
        let login = text_field(m, "Login").unwrap_or_else(|e| {
            problem(e, "write the bind DN (or user@domain) as text");
            None
        });
        let server_text = match text_field(m, "Server") {
            Ok(Some(s)) => s,
            Ok(None) => {
                problem("Server is missing".into(), hint);
                continue;
            }
            Err(e) => {
                problem(e, hint);
                continue;
            }
        };
        let (url, ldaps) = match normalize_server(&server_text, enable_ssl) {
            Ok(v) => v,
            Err(e) => {
                problem(e, "write ldap://host:389, ldaps://host:636 or host:port");
                continue;
            }
        };
        let mut problem = |message: String, hint: &str, setting: &'static str| {
            problems.push(Problem::new(
                Some(setting),
                format!("Servers item {n} ({url}): {message}"),
                hint,
            ))
        };
        if ldaps && start_tls {
            problem(
                "StartTLS cannot be used on an LDAPS (EnableSSL, ldaps://) connection".into(),
                "use either EnableSSL (port 636) or StartTLS (port 389)",
                "Servers",
            );
        }
        let auth = match get_ci(m, "AuthType") {
            None if login.is_some() => AuthType::Basic,
            None => AuthType::Anonymous,
            Some(J::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "anonymous" => AuthType::Anonymous,
                "basic" | "simple" => AuthType::Basic,
                "negotiate" | "kerberos" | "ntlm" => AuthType::Negotiate,
                other => {
                    problem(
                        format!("unknown AuthType {other:?}"),
                        "use Anonymous or Basic",
                        "Servers",
                    );
                    AuthType::Anonymous
                }
            },
            Some(other) => {
                problem(
                    format!("AuthType must be text, not {other}"),
                    "use Anonymous or Basic",
                    "Servers",
                );
                AuthType::Anonymous
            }
        };
        match auth {
            AuthType::Negotiate => problem(
                NEGOTIATE_MESSAGE.into(),
                "set AuthType to Basic, with Login (a bind DN, or user@domain for Active Directory) and the secured Password setting; prefer EnableSSL or StartTLS so that the password is encrypted",
                "Servers",
            ),
            AuthType::Basic if login.is_none() => problem(
                "AuthType Basic needs a Login".into(),
                "set Login to the bind DN (or user@domain for Active Directory), or use AuthType Anonymous",
                "Servers",
            ),
            AuthType::Basic if own_password.is_none() && !has_default_password => problem(
                format!(
                    "Login {} has no password: set the secured Password setting",
                    login.as_deref().unwrap_or("")
                ),
                "an empty password would make the bind anonymous (RFC 4513); set Password",
                "Password",
            ),
            _ => {}
        }
        if own_password.is_some() {
            problem(
                "has its own Password; passwords inside Servers are not protected like secured settings".into(),
                "remove Password from the Servers item and put it in the secured top-level Password setting (used by every server)",
                "Servers",
            );
        }
        match get_ci(m, "Controls") {
            None => {}
            Some(v) => {
                let names: Vec<Option<&str>> = match v {
                    J::Array(a) => a.iter().map(J::as_str).collect(),
                    other => vec![other.as_str()],
                };
                for c in names {
                    match c.map(str::trim) {
                        Some(c)
                            if c.eq_ignore_ascii_case("PagedResult")
                                || c.eq_ignore_ascii_case("PagedResults") => {}
                        Some(c) => problem(
                            format!("unknown control {c:?}"),
                            "the only control is PagedResult (paged results are always used)",
                            "Servers",
                        ),
                        None => problem(
                            "Controls must be a list of names".into(),
                            "write \"Controls\": [\"PagedResult\"]",
                            "Servers",
                        ),
                    }
                }
            }
        }
        servers.push(ServerConfig {
            url,
            auth,
            login,
            own_password,
            start_tls,
        });
    }
    (servers, problems)
}

/// An attribute type (`cn`, `2.5.4.3`), with no options.
fn is_attribute_type(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => chars.all(|c| c.is_ascii_alphanumeric() || c == '-'),
        Some(c) if c.is_ascii_digit() => s
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        _ => false,
    }
}

/// An attribute description: a type and options (`userCertificate;binary`, `cn;lang-fr`).
fn is_attribute_description(s: &str) -> bool {
    let mut parts = s.split(';');
    parts.next().is_some_and(is_attribute_type)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

fn filter_is_valid(filter: &str) -> bool {
    // The same parser ldap3 uses before sending a search.
    ldap3::parse_filter(filter).is_ok()
}

fn parse_tables(value: Option<&J>) -> (Vec<TableConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    let hint = "write Tables as [{\"Table\": \"entries\", \"BaseDN\": \"ou=people,dc=example,dc=com\", \"Filter\": \"(objectClass=person)\"}, {\"Table\": \"member\", \"BaseDN\": \"ou=groups,dc=example,dc=com\"}]";
    let Some(value) = value else {
        problems.push(Problem::new(Some("Tables"), "Tables is not set", hint));
        return (Vec::new(), problems);
    };
    let mut tables: Vec<TableConfig> = Vec::new();
    for (i, item) in items(value).into_iter().enumerate() {
        let n = i + 1;
        let mut problem = |message: String, hint: &str| {
            problems.push(Problem::new(
                Some("Tables"),
                format!("Tables item {n}: {message}"),
                hint,
            ))
        };
        let J::Object(m) = item else {
            problem("expected an object".into(), hint);
            continue;
        };
        let unknown = unknown_keys(m, TABLE_KEYS);
        if !unknown.is_empty() {
            problem(
                format!("unknown key(s) {}", unknown.join(", ")),
                "the keys are Table, BaseDN, Filter and Scope",
            );
        }
        let name = match text_field(m, "Table") {
            Ok(Some(t)) => t,
            Ok(None) => {
                problem(
                    "Table is missing".into(),
                    "name the table \"entries\" or a link attribute such as \"member\"",
                );
                continue;
            }
            Err(e) => {
                problem(e, hint);
                continue;
            }
        };
        let is_entries = name.eq_ignore_ascii_case(ENTRIES);
        let name = if is_entries {
            ENTRIES.to_string()
        } else {
            name
        };
        let mut problem = |message: String, hint: &str| {
            problems.push(Problem::new(
                Some("Tables"),
                format!("table {name}: {message}"),
                hint,
            ))
        };
        if !is_entries {
            let reserved = name.eq_ignore_ascii_case("dn") || name.eq_ignore_ascii_case("parentdn");
            if !is_attribute_type(&name)
                || reserved
                || super::sink::check_table_name(&name).is_err()
            {
                problem(
                    format!("{name:?} is not a link attribute name"),
                    "Table is \"entries\" or an attribute type such as member, manager or uniqueMember (letters, digits and '-', no options)",
                );
                continue;
            }
        }
        if tables.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) {
            problem(
                "is listed twice".into(),
                "list each table once (exactly one \"entries\" table)",
            );
            continue;
        }
        let base_dn = text_field(m, "BaseDN").unwrap_or_else(|e| {
            problem(e, "write BaseDN as text");
            None
        });
        if is_entries && base_dn.is_none() {
            problem(
                "BaseDN is missing".into(),
                "set BaseDN to the entry the search starts from, e.g. ou=people,dc=example,dc=com",
            );
        }
        let filter = match text_field(m, "Filter") {
            Ok(Some(f)) => f,
            Ok(None) if is_entries => "(objectClass=*)".to_string(),
            Ok(None) => format!("({name}=*)"),
            Err(e) => {
                problem(e, "write Filter as text");
                continue;
            }
        };
        if !filter_is_valid(&filter) {
            problem(
                format!("Filter {filter} is not a valid LDAP filter"),
                "write an RFC 4515 filter such as (&(objectClass=person)(uid=*)); escape ( ) * \\ in values as \\28 \\29 \\2a \\5c",
            );
        }
        let scope = match text_field(m, "Scope") {
            Ok(None) => ScopeKind::Subtree,
            Ok(Some(s)) => ScopeKind::parse(&s).unwrap_or_else(|| {
                problem(
                    format!("unknown Scope {s:?}"),
                    "use Base, OneLevel or Subtree",
                );
                ScopeKind::Subtree
            }),
            Err(e) => {
                problem(e, "use Base, OneLevel or Subtree");
                ScopeKind::Subtree
            }
        };
        tables.push(TableConfig {
            name,
            is_entries,
            base_dn: base_dn.unwrap_or_default(),
            filter,
            scope,
        });
    }
    let entries_base = tables
        .iter()
        .find(|t| t.is_entries)
        .map(|t| t.base_dn.clone());
    if entries_base.is_none() {
        problems.push(Problem::new(
            Some("Tables"),
            "Tables has no \"entries\" table",
            "add {\"Table\": \"entries\", \"BaseDN\": ...}: it is exported to <connection>_entries.csv",
        ));
    }
    // A link table without BaseDN reads below the entries table's BaseDN.
    for t in tables
        .iter_mut()
        .filter(|t| !t.is_entries && t.base_dn.is_empty())
    {
        match &entries_base {
            Some(b) if !b.is_empty() => t.base_dn = b.clone(),
            _ => problems.push(Problem::new(
                Some("Tables"),
                format!("table {}: BaseDN is missing", t.name),
                "set BaseDN on the link table or on the entries table",
            )),
        }
    }
    tables.sort_by_key(|t| !t.is_entries);
    (tables, problems)
}

fn parse_attributes(list: &[String]) -> (Vec<Column>, Vec<Problem>) {
    let mut columns: Vec<Column> = Vec::new();
    let mut problems = Vec::new();
    for a in list.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        if matches!(a, "*" | "+" | "1.1") {
            problems.push(Problem::new(
                Some("Attributes"),
                format!("Attributes cannot hold {a:?}: the columns must be named"),
                "leave Attributes empty to export every attribute the entries carry",
            ));
            continue;
        }
        if !is_attribute_description(a) {
            problems.push(Problem::new(
                Some("Attributes"),
                format!("{a:?} is not an attribute name"),
                "write attribute names such as cn, mail or userCertificate;binary",
            ));
            continue;
        }
        let c = Column::new(a);
        if c.key == "dn" || c.key == "parentdn" {
            problems.push(Problem::new(
                Some("Attributes"),
                format!("{a} is always the first columns; remove it from Attributes"),
                "dn and parentdn are written for every entry",
            ));
            continue;
        }
        if columns.iter().any(|x| x.key == c.key) {
            problems.push(Problem::new(
                Some("Attributes"),
                format!("Attributes names {} twice", c.name),
                "list each attribute once (names ignore case; ;binary does not make another column)",
            ));
            continue;
        }
        columns.push(c);
    }
    (columns, problems)
}

// ---------------------------------------------------------------------------------------------
// Attribute descriptions, DNs and values
// ---------------------------------------------------------------------------------------------

/// An attribute description without the transfer options `;binary` and `;range=...`: the
/// column name of the attribute.
fn column_name(desc: &str) -> String {
    let mut parts = desc.split(';');
    let mut out = parts.next().unwrap_or_default().to_string();
    for option in parts {
        if option.eq_ignore_ascii_case("binary") || strip_prefix_ci(option, "range=").is_some() {
            continue;
        }
        out.push(';');
        out.push_str(option);
    }
    out
}

/// How returned attribute descriptions are matched to columns (names ignore case).
fn attr_key(desc: &str) -> String {
    column_name(desc).to_ascii_lowercase()
}

fn is_binary_name(desc: &str) -> bool {
    let mut parts = desc.split(';');
    let base = parts.next().unwrap_or_default().to_ascii_lowercase();
    parts.any(|o| o.eq_ignore_ascii_case("binary")) || KNOWN_BINARY.contains(&base.as_str())
}

/// A ranged attribute description (`member;range=0-1499`, `member;range=1500-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    /// The description without the range option (`member`).
    base: String,
    low: u64,
    /// `None` for `*`: the last range.
    high: Option<u64>,
}

fn parse_range(desc: &str) -> Option<Range> {
    let mut base = String::new();
    let mut range = None;
    for (i, part) in desc.split(';').enumerate() {
        if i > 0 {
            if let Some(r) = strip_prefix_ci(part, "range=") {
                range = Some(r);
                continue;
            }
            base.push(';');
        }
        base.push_str(part);
    }
    let (low, high) = range?.split_once('-')?;
    let low: u64 = low.parse().ok()?;
    let high = match high {
        "*" => None,
        h => Some(h.parse::<u64>().ok().filter(|h| *h >= low)?),
    };
    Some(Range { base, low, high })
}

/// The DN of an entry's parent: everything after the first RDN separator that is neither
/// escaped (`\,`) nor quoted (`"a,b"`, LDAPv2). `None` for a DN of one RDN (or empty).
fn parent_dn(dn: &str) -> Option<&str> {
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in dn.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                return dn
                    .get(i + 1..)
                    .map(str::trim_start)
                    .filter(|p| !p.is_empty());
            }
            _ => {}
        }
    }
    None
}

/// A value that is not UTF-8 in a text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NotText;

/// One value in its column's form: bytes when the column is binary, else text, which must be
/// UTF-8 (never replaced, never switched to bytes for this value alone).
fn value_of(v: Vec<u8>, binary: bool) -> Result<Value, NotText> {
    if binary {
        return Ok(Value::Bytes(v));
    }
    String::from_utf8(v).map(Value::Text).map_err(|_| NotText)
}

/// An attribute's values as one field: NULL, one value, or several (joined by the sink), every
/// value in the column's one form.
fn values_of(values: Vec<Vec<u8>>, binary: bool) -> Result<Value, NotText> {
    let mut out = values
        .into_iter()
        .map(|v| value_of(v, binary))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match out.len() {
        0 => Value::Null,
        1 => out.pop().unwrap_or(Value::Null),
        _ => Value::Multi(out),
    })
}

/// A search result entry, parsed without panicking on malformed data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    dn: String,
    /// Attribute descriptions as the server wrote them, with their raw values.
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// Parses the BER of a SearchResultEntry (`[APPLICATION 4] SEQUENCE { objectName,
/// attributes SEQUENCE OF SEQUENCE { type, vals SET OF value } }`). ldap3's
/// `SearchEntry::construct` panics on malformed data; this returns an error instead.
fn parse_entry(tag: StructureTag) -> Result<Entry, &'static str> {
    if !matches!(tag.class, TagClass::Application) || tag.id != 4 {
        return Err("the server sent a search result that is not an entry");
    }
    let PL::C(parts) = tag.payload else {
        return Err("the server sent a malformed entry");
    };
    let mut parts = parts.into_iter();
    let dn = match parts.next().map(|t| t.payload) {
        Some(PL::P(bytes)) => String::from_utf8(bytes)
            .map_err(|_| "the server sent an entry whose DN is not UTF-8")?,
        _ => return Err("the server sent an entry without a DN"),
    };
    let mut attrs = Vec::new();
    match parts.next().map(|t| t.payload) {
        None => {}
        Some(PL::P(b)) if b.is_empty() => {}
        Some(PL::P(_)) => return Err("the server sent an entry with malformed attributes"),
        Some(PL::C(list)) => {
            for attribute in list {
                let PL::C(pair) = attribute.payload else {
                    return Err("the server sent a malformed attribute");
                };
                let mut pair = pair.into_iter();
                let desc = match pair.next().map(|t| t.payload) {
                    Some(PL::P(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => return Err("the server sent an attribute without a name"),
                };
                let values = match pair.next().map(|t| t.payload) {
                    None => Vec::new(),
                    Some(PL::P(b)) if b.is_empty() => Vec::new(),
                    Some(PL::P(_)) => return Err("the server sent malformed attribute values"),
                    Some(PL::C(values)) => values
                        .into_iter()
                        .map(|v| match v.payload {
                            PL::P(b) => Ok(b),
                            PL::C(_) => Err("the server sent a malformed attribute value"),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                attrs.push((desc, values));
            }
        }
    }
    Ok(Entry { dn, attrs })
}

// ---------------------------------------------------------------------------------------------
// Subschema
// ---------------------------------------------------------------------------------------------

/// One `attributeTypes` value of the subschema (RFC 4512 §4.1.2), as far as export needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct AttributeType {
    oid: String,
    names: Vec<String>,
    sup: Option<String>,
    /// The syntax OID, without a `{length}` bound.
    syntax: Option<String>,
    single_value: bool,
    obsolete: bool,
    /// `USAGE userApplications` (the default): not an operational attribute.
    user: bool,
}

/// One `objectClasses` value of the subschema (RFC 4512 §4.1.1), as far as export needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ObjectClass {
    oid: String,
    names: Vec<String>,
    sup: Vec<String>,
    must: Vec<String>,
    may: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Quoted(String),
    Word(String),
}

fn tokens(def: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = def.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    s.push(c);
                }
                out.push(Token::Quoted(s));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '\'') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    out
}

/// Keywords of schema definitions that stand alone, without a value.
const FLAG_KEYWORDS: &[&str] = &[
    "SINGLE-VALUE",
    "OBSOLETE",
    "COLLECTIVE",
    "NO-USER-MODIFICATION",
    "STRUCTURAL",
    "AUXILIARY",
    "ABSTRACT",
];

/// A keyword of a schema definition (upper case) and its values.
type Field = (String, Vec<String>);

/// A schema definition (`( oid KEYWORD value KEYWORD ( a $ b ) FLAG ... )`): the OID and the
/// keywords (upper case) with their values (none for a flag). `None` when it is not one.
fn definition(def: &str) -> Option<(String, Vec<Field>)> {
    let mut it = tokens(def).into_iter().peekable();
    if it.next() != Some(Token::Open) {
        return None;
    }
    let oid = match it.next()? {
        Token::Word(w) | Token::Quoted(w) => w,
        _ => return None,
    };
    let mut fields = Vec::new();
    while let Some(t) = it.next() {
        let keyword = match t {
            Token::Word(k) => k.to_ascii_uppercase(),
            Token::Close => break,
            _ => continue,
        };
        if FLAG_KEYWORDS.contains(&keyword.as_str()) {
            fields.push((keyword, Vec::new()));
            continue;
        }
        // One word or quoted string, or a parenthesized list of them separated by spaces and/or
        // `$` (`( sn $ cn )`, `(sn$cn)`). A quoted string is taken whole.
        let mut values = Vec::new();
        match it.next() {
            Some(Token::Open) => {
                for t in it.by_ref() {
                    match t {
                        Token::Close => break,
                        Token::Word(w) => push_words(&mut values, &w),
                        Token::Quoted(w) => values.push(w),
                        Token::Open => {}
                    }
                }
            }
            Some(Token::Word(w)) => push_words(&mut values, &w),
            Some(Token::Quoted(w)) => values.push(w),
            Some(Token::Close) | None => {
                fields.push((keyword, values));
                break;
            }
        }
        fields.push((keyword, values));
    }
    Some((oid, fields))
}

/// The names of an unquoted word of a list (`sn$cn` is two names; a lone `$` is none).
fn push_words(values: &mut Vec<String>, w: &str) {
    values.extend(w.split('$').filter(|p| !p.is_empty()).map(str::to_string));
}

fn first(values: &[String]) -> Option<String> {
    values.first().cloned()
}

/// Parses an attribute type description; `None` when it is not one.
fn parse_attribute_type(def: &str) -> Option<AttributeType> {
    let (oid, fields) = definition(def)?;
    let mut at = AttributeType {
        oid,
        user: true,
        ..AttributeType::default()
    };
    for (keyword, values) in fields {
        match keyword.as_str() {
            "NAME" => at.names = values,
            "SUP" => at.sup = first(&values),
            "SYNTAX" => {
                at.syntax =
                    first(&values).map(|s| s.split('{').next().unwrap_or_default().to_string());
            }
            "SINGLE-VALUE" => at.single_value = true,
            "OBSOLETE" => at.obsolete = true,
            "USAGE" => {
                at.user = values
                    .first()
                    .is_none_or(|u| u.eq_ignore_ascii_case("userApplications"));
            }
            _ => {}
        }
    }
    Some(at)
}

/// Parses an object class description; `None` when it is not one or is obsolete.
fn parse_object_class(def: &str) -> Option<ObjectClass> {
    let (oid, fields) = definition(def)?;
    let mut oc = ObjectClass {
        oid,
        ..ObjectClass::default()
    };
    for (keyword, values) in fields {
        match keyword.as_str() {
            "NAME" => oc.names = values,
            "SUP" => oc.sup = values,
            "MUST" => oc.must = values,
            "MAY" => oc.may = values,
            "OBSOLETE" => return None,
            _ => {}
        }
    }
    Some(oc)
}

/// The OID of an `ldapSyntaxes` value whose values are not text: marked
/// `X-NOT-HUMAN-READABLE 'TRUE'` or `X-BINARY-TRANSFER-REQUIRED 'TRUE'` (RFC 4517, OpenLDAP).
fn binary_syntax_oid(def: &str) -> Option<String> {
    let (oid, fields) = definition(def)?;
    fields
        .iter()
        .any(|(k, v)| {
            matches!(
                k.as_str(),
                "X-NOT-HUMAN-READABLE" | "X-BINARY-TRANSFER-REQUIRED"
            ) && v.first().is_some_and(|v| v.eq_ignore_ascii_case("TRUE"))
        })
        .then_some(oid)
}

/// The attribute types, object classes and binary syntaxes of a subschema subentry.
#[derive(Debug, Clone, Default)]
struct Subschema {
    types: Vec<AttributeType>,
    /// Lower-case names and OIDs to indexes of `types`.
    index: HashMap<String, usize>,
    classes: Vec<ObjectClass>,
    /// Lower-case names and OIDs to indexes of `classes`.
    class_index: HashMap<String, usize>,
    /// Syntax OIDs that the server's `ldapSyntaxes` marks as not human-readable.
    binary_syntaxes: HashSet<String>,
}

impl Subschema {
    /// A subschema of attribute types only.
    #[cfg(test)]
    fn parse<'a>(types: impl IntoIterator<Item = &'a str>) -> Subschema {
        Subschema::from_parts(types, [], [])
    }

    fn from_parts<'a>(
        types: impl IntoIterator<Item = &'a str>,
        classes: impl IntoIterator<Item = &'a str>,
        syntaxes: impl IntoIterator<Item = &'a str>,
    ) -> Subschema {
        let mut s = Subschema::default();
        for at in types.into_iter().filter_map(parse_attribute_type) {
            let i = s.types.len();
            s.index.entry(at.oid.to_ascii_lowercase()).or_insert(i);
            for n in &at.names {
                s.index.entry(n.to_ascii_lowercase()).or_insert(i);
            }
            s.types.push(at);
        }
        for oc in classes.into_iter().filter_map(parse_object_class) {
            let i = s.classes.len();
            s.class_index
                .entry(oc.oid.to_ascii_lowercase())
                .or_insert(i);
            for n in &oc.names {
                s.class_index.entry(n.to_ascii_lowercase()).or_insert(i);
            }
            s.classes.push(oc);
        }
        s.binary_syntaxes = syntaxes.into_iter().filter_map(binary_syntax_oid).collect();
        s
    }

    fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type of an attribute description (options ignored).
    fn find(&self, desc: &str) -> Option<&AttributeType> {
        let base = desc
            .split(';')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.index.get(&base).and_then(|i| self.types.get(*i))
    }

    /// How an attribute description is matched, whatever name, alias or OID it is written with:
    /// the type's OID (or the lower-case name of a type the subschema does not know), then the
    /// options other than `binary` and `range=`, lower case and sorted (`2.5.4.3;lang-fr`).
    fn key(&self, desc: &str) -> String {
        let mut parts = desc.split(';');
        let base = parts.next().unwrap_or_default();
        let mut out = match self.find(base) {
            Some(at) => at.oid.to_ascii_lowercase(),
            None => base.to_ascii_lowercase(),
        };
        let mut options: Vec<String> = parts
            .filter(|o| {
                !o.is_empty()
                    && !o.eq_ignore_ascii_case("binary")
                    && strip_prefix_ci(o, "range=").is_none()
            })
            .map(str::to_ascii_lowercase)
            .collect();
        options.sort();
        for o in options {
            out.push(';');
            out.push_str(&o);
        }
        out
    }

    /// The syntax, inherited from the supertypes when the type has none.
    fn syntax_of<'a>(&'a self, at: &'a AttributeType) -> Option<&'a str> {
        let mut current = at;
        for _ in 0..32 {
            if let Some(s) = &current.syntax {
                return Some(s.as_str());
            }
            current = self.find(current.sup.as_deref()?)?;
        }
        None
    }

    /// The syntax of an attribute description, when the subschema knows it.
    fn syntax(&self, desc: &str) -> Option<&str> {
        self.find(desc).and_then(|at| self.syntax_of(at))
    }

    fn is_binary_syntax(&self, syntax: &str) -> bool {
        BINARY_SYNTAXES.contains(&syntax) || self.binary_syntaxes.contains(syntax)
    }

    /// Whether a column is binary: decided once from what was asked (`;binary`, a well-known
    /// binary name) and the syntax, never from the values.
    fn is_binary(&self, desc: &str) -> bool {
        is_binary_name(desc) || self.syntax(desc).is_some_and(|s| self.is_binary_syntax(s))
    }

    /// Why a column is text, for the message about a value that is not UTF-8.
    fn text_reason(&self, desc: &str) -> String {
        match self.syntax(desc) {
            Some(s) => format!("its syntax {s} is text"),
            None if self.is_empty() => {
                "the subschema could not be read, so its syntax is unknown".to_string()
            }
            None => "the subschema does not describe it".to_string(),
        }
    }

    /// The schema column of an attribute: type from the name and syntax, multi-valued unless
    /// SINGLE-VALUE. Unknown attributes are text and may be multi-valued.
    fn column(&self, name: &str, request: &str) -> SchemaColumn {
        let at = self.find(name);
        SchemaColumn {
            name: name.to_string(),
            value_type: if self.is_binary(request) {
                ValueType::Binary
            } else {
                ValueType::String
            },
            key_type: KeyType::None,
            multivalued: !at.is_some_and(|at| at.single_value),
            nullable: None,
            source_type: self.syntax(name).map(str::to_string),
        }
    }

    /// The attributes that entries of these object classes may hold (MUST and MAY of the classes
    /// and their superclasses), as the first name of each type, sorted ignoring case: user
    /// attributes only, neither obsolete nor [`PASSWORD_ATTRIBUTES`]. Classes the subschema does
    /// not know are skipped.
    fn attributes_of_classes<'a>(&self, classes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut todo: Vec<String> = classes
            .into_iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let mut seen_classes: HashSet<usize> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut names: Vec<String> = Vec::new();
        while let Some(c) = todo.pop() {
            let Some(&i) = self.class_index.get(&c) else {
                continue;
            };
            if !seen_classes.insert(i) {
                continue;
            }
            let Some(oc) = self.classes.get(i) else {
                continue;
            };
            todo.extend(oc.sup.iter().map(|s| s.to_ascii_lowercase()));
            for a in oc.must.iter().chain(&oc.may) {
                let at = self.find(a);
                if at.is_some_and(|t| !t.user || t.obsolete) {
                    continue;
                }
                let is_password =
                    |n: &str| PASSWORD_ATTRIBUTES.contains(&n.to_ascii_lowercase().as_str());
                if is_password(a) || at.is_some_and(|t| t.names.iter().any(|n| is_password(n))) {
                    continue;
                }
                if seen.insert(self.key(a)) {
                    names.push(
                        at.and_then(|t| t.names.first())
                            .cloned()
                            .unwrap_or_else(|| a.clone()),
                    );
                }
            }
        }
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names
    }
}

/// The columns of the entries table and how the attribute descriptions the server returns find
/// them (through [`Subschema::key`]).
struct Columns {
    list: Vec<Column>,
    by_key: HashMap<String, Vec<usize>>,
}

impl Columns {
    fn new(list: Vec<Column>, schema: &Subschema) -> Columns {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in list.iter().enumerate() {
            by_key.entry(schema.key(&c.request)).or_default().push(i);
        }
        Columns { list, by_key }
    }

    /// An entry as a row: `dn`, `parentdn`, then each column's values. A value that is not
    /// UTF-8 in a text column is an error naming the column.
    fn row(&self, entry: Entry, schema: &Subschema) -> Result<Row, String> {
        let Entry { dn, attrs } = entry;
        let mut slots: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.list.len()];
        for (desc, values) in attrs {
            let Some(targets) = self.by_key.get(&schema.key(&desc)) else {
                continue;
            };
            if let Some((last, others)) = targets.split_last() {
                for i in others {
                    if let Some(slot) = slots.get_mut(*i) {
                        slot.extend(values.iter().cloned());
                    }
                }
                if let Some(slot) = slots.get_mut(*last) {
                    slot.extend(values);
                }
            }
        }
        let mut row = Vec::with_capacity(self.list.len() + 2);
        row.push(Value::Null);
        row.push(match parent_dn(&dn) {
            Some(p) => Value::Text(p.to_string()),
            None => Value::Null,
        });
        for (c, values) in self.list.iter().zip(slots) {
            row.push(values_of(values, c.binary).map_err(|NotText| {
                format!(
                    "entry {dn}: a value of {name} is not UTF-8 text, and {name} is exported as text ({why}); write {name};binary in Attributes to export it as base64",
                    name = c.name,
                    why = schema.text_reason(&c.request),
                )
            })?);
        }
        if let Some(first) = row.first_mut() {
            *first = Value::Text(dn);
        }
        Ok(row)
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// What the root DSE says about a server.
#[derive(Debug, Clone, Default)]
struct RootDse {
    naming_contexts: Vec<String>,
    supported_controls: Vec<String>,
    versions: Vec<String>,
    vendor_name: Option<String>,
    vendor_version: Option<String>,
    subschema: Option<String>,
    /// Why it could not be read, when it could not.
    unreadable: Option<String>,
}

/// A connected and bound server.
struct Session {
    ldap: Ldap,
    /// The server's URL, for messages.
    server: String,
    transport: &'static str,
    /// "cn=reader,dc=example,dc=com" or "anonymous".
    login: String,
    root: RootDse,
    /// The servers tried before this one, and why they were skipped.
    skipped: Vec<String>,
    timeout: Option<Duration>,
}

impl Session {
    /// Applies TimeOut to the next operation (ldap3 resets the timer for every answer).
    fn arm(&mut self) {
        if let Some(t) = self.timeout {
            self.ldap.with_timeout(t);
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ldap.unbind()).await;
    }
}

/// Runs `f` unless the connection is cancelled first.
async fn cancellable<F: Future>(
    cancel: &CancellationToken,
    f: F,
) -> Result<F::Output, PackageError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(PackageError::cancelled()),
        out = f => Ok(out),
    }
}

/// An error of an LDAP call, outside search results.
fn call_failure(server: &str, doing: &str, e: LdapError, cfg: &Config) -> PackageError {
    match e {
        LdapError::Timeout { .. } => PackageError::source(format!(
            "{server}: no answer within {} while {doing}; raise TimeOut if the server is slow",
            cfg.timeout_text()
        )),
        LdapError::LdapResult { result } => PackageError::source(format!(
            "{server}: {doing} failed with result code {}{}",
            result.rc,
            diagnostic(&result)
        )),
        e if connection_lost(&e) => PackageError::source(format!(
            "{server}: the server closed the connection while {doing}"
        )),
        other => PackageError::source(format!("{server}: {doing} failed: {other}")),
    }
}

fn diagnostic(res: &LdapResult) -> String {
    let text = res.text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// Tries the servers in order; the first that connects and binds wins.
async fn connect_any(cfg: &Config, cancel: &CancellationToken) -> Result<Session, PackageError> {
    let mut failures: Vec<PackageError> = Vec::new();
    for server in &cfg.servers {
        match cancellable(cancel, connect_one(cfg, server)).await? {
            Ok(mut session) => {
                session.skipped = failures
                    .iter()
                    .map(|e| format!("skipped a server: {}", e.message))
                    .collect();
                return Ok(session);
            }
            Err(e) => {
                tracing::debug!(server = %server.url, error = %e.message, "LDAP server not usable");
                failures.push(e);
            }
        }
    }
    match failures.len() {
        0 => Err(PackageError::config("Servers is empty")),
        1 => Err(failures.remove(0)),
        _ => {
            // A refused login is what the operator can fix; report it as such.
            let class = if failures
                .iter()
                .any(|e| e.class == super::FailureClass::Config)
            {
                super::FailureClass::Config
            } else {
                super::FailureClass::Source
            };
            Err(PackageError {
                class,
                message: format!(
                    "no LDAP server could be used: {}",
                    failures
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })
        }
    }
}

async fn connect_one(cfg: &Config, server: &ServerConfig) -> Result<Session, PackageError> {
    if server.auth == AuthType::Negotiate {
        return Err(PackageError::config(format!(
            "{}: {NEGOTIATE_MESSAGE}",
            server.url
        )));
    }
    let mut settings = LdapConnSettings::new();
    if let Some(t) = cfg.timeout {
        settings = settings.set_conn_timeout(t);
    }
    if server.start_tls {
        settings = settings.set_starttls(true);
    }
    if server.start_tls || server.url.starts_with("ldaps://") {
        crate::install_crypto_provider();
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &server.url)
        .await
        .map_err(|e| {
            let why = match e {
                LdapError::Timeout { .. } => format!("no connection within {}", cfg.timeout_text()),
                other => {
                    let text = other.to_string();
                    if text.contains("certificate") {
                        format!(
                            "{text}; the TLS handshake failed before anything was sent: the server's certificate must be valid for the host written in Server and signed by a CA the agent trusts (the system's roots, or the PEM file named by SSL_CERT_FILE in the agent's environment)"
                        )
                    } else {
                        text
                    }
                }
            };
            PackageError::source(format!("cannot reach {}: {why}", server.url))
        })?;
    // The connection runs in its own task until every handle is dropped or unbound.
    ldap3::drive!(conn);
    let transport = if server.url.starts_with("ldaps://") {
        "LDAPS"
    } else if server.start_tls {
        "StartTLS"
    } else {
        "plain LDAP, not encrypted"
    };
    let mut session = Session {
        ldap,
        server: server.url.clone(),
        transport,
        login: "anonymous".into(),
        root: RootDse::default(),
        skipped: Vec::new(),
        timeout: cfg.timeout,
    };
    if server.auth == AuthType::Basic {
        let login = server.login.clone().unwrap_or_default();
        let password = server
            .own_password
            .as_ref()
            .or(cfg.default_password.as_ref())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                PackageError::config(format!(
                    "{}: Login {login} has no password: set the secured Password setting",
                    server.url
                ))
            })?;
        session.arm();
        let res = session
            .ldap
            .simple_bind(&login, password.expose())
            .await
            .map_err(|e| call_failure(&server.url, &format!("binding as {login}"), e, cfg))?;
        match res.rc {
            0 => {}
            49 => {
                return Err(PackageError::config(format!(
                    "the server {} refused the login for {login}: wrong password or unknown user{}",
                    server.url,
                    diagnostic(&res)
                )));
            }
            13 => {
                return Err(PackageError::config(format!(
                    "the server {} requires an encrypted connection for the login {login}{}: set EnableSSL or StartTLS",
                    server.url,
                    diagnostic(&res)
                )));
            }
            rc => {
                return Err(PackageError::source(format!(
                    "the server {} did not accept the login for {login}: result code {rc}{}",
                    server.url,
                    diagnostic(&res)
                )));
            }
        }
        session.login = login;
    }
    session.root = read_root_dse(&mut session, cfg).await?;
    Ok(session)
}

/// Reads the root DSE. A server that does not answer is skipped (failover); one that answers
/// with an error is kept, with the reason noted.
async fn read_root_dse(session: &mut Session, cfg: &Config) -> Result<RootDse, PackageError> {
    session.arm();
    let result = session
        .ldap
        .search(
            "",
            ldap3::Scope::Base,
            "(objectClass=*)",
            ROOT_DSE_ATTRS.to_vec(),
        )
        .await
        .map_err(|e| call_failure(&session.server, "reading the root DSE", e, cfg))?;
    let (entries, res) = (result.0, result.1);
    let mut root = RootDse::default();
    if res.rc != 0 {
        root.unreadable = Some(format!("result code {}{}", res.rc, diagnostic(&res)));
        return Ok(root);
    }
    for re in entries {
        let Ok(entry) = parse_entry(re.0) else {
            continue;
        };
        for (desc, values) in entry.attrs {
            let values: Vec<String> = values
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            match attr_key(&desc).as_str() {
                "namingcontexts" => root.naming_contexts = values,
                "supportedcontrol" => root.supported_controls = values,
                "supportedldapversion" => root.versions = values,
                "vendorname" => root.vendor_name = values.into_iter().next(),
                "vendorversion" => root.vendor_version = values.into_iter().next(),
                "subschemasubentry" => root.subschema = values.into_iter().next(),
                _ => {}
            }
        }
    }
    Ok(root)
}

/// Reads the attribute types of the server's subschema subentry.
async fn load_subschema(
    session: &mut Session,
    cfg: &Config,
    cancel: &CancellationToken,
) -> Result<Subschema, PackageError> {
    let dn = session
        .root
        .subschema
        .clone()
        .unwrap_or_else(|| "cn=Subschema".to_string());
    session.arm();
    let result = cancellable(
        cancel,
        session.ldap.search(
            &dn,
            ldap3::Scope::Base,
            "(objectClass=subschema)",
            vec!["attributeTypes", "objectClasses", "ldapSyntaxes"],
        ),
    )
    .await?
    .map_err(|e| {
        call_failure(
            &session.server,
            &format!("reading the subschema {dn}"),
            e,
            cfg,
        )
    })?;
    let (entries, res) = (result.0, result.1);
    if res.rc != 0 {
        return Err(PackageError::source(format!(
            "{}: reading the subschema {dn} failed with result code {}{}",
            session.server,
            res.rc,
            diagnostic(&res)
        )));
    }
    let mut defs: Vec<String> = Vec::new();
    let mut classes: Vec<String> = Vec::new();
    let mut syntaxes: Vec<String> = Vec::new();
    for re in entries {
        let entry = parse_entry(re.0).map_err(|m| {
            PackageError::source(format!("{}: subschema {dn}: {m}", session.server))
        })?;
        for (desc, values) in entry.attrs {
            let into = match attr_key(&desc).as_str() {
                "attributetypes" => &mut defs,
                "objectclasses" => &mut classes,
                "ldapsyntaxes" => &mut syntaxes,
                _ => continue,
            };
            into.extend(
                values
                    .into_iter()
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
            );
        }
    }
    if defs.is_empty() {
        return Err(PackageError::source(format!(
            "{}: the subschema {dn} lists no attribute types (is it readable by {}?)",
            session.server, session.login
        )));
    }
    Ok(Subschema::from_parts(
        defs.iter().map(String::as_str),
        classes.iter().map(String::as_str),
        syntaxes.iter().map(String::as_str),
    ))
}

// ---------------------------------------------------------------------------------------------
// Searches
// ---------------------------------------------------------------------------------------------

type Stream = ldap3::SearchStream<'static, String, Vec<String>>;

/// A paged search of a table (RFC 2696), one page at a time: each page is its own search
/// request with the paged-results control, PageSize, the SizeLimit and TimeLimit settings and
/// TimeOut for every answer. Referrals and intermediate messages are dropped. Every page's
/// result code is checked, and a server that makes no progress is stopped (see the module
/// documentation); SizeLimit is also enforced client-side.
struct PagedSearch {
    attrs: Vec<String>,
    /// The page being read; `None` once the search is complete.
    stream: Option<Stream>,
    /// The cookie the current page was asked with (empty for the first page).
    cookie: Vec<u8>,
    /// Pages asked for.
    pages: u64,
    /// Entries of the current page.
    page_entries: u64,
    /// Pages in a row without entries, and those of them that returned the cookie they had.
    empty_pages: u32,
    stalled_pages: u32,
    /// Entries read so far.
    count: u64,
}

impl PagedSearch {
    async fn open(
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        attrs: Vec<String>,
        cancel: &CancellationToken,
    ) -> Result<PagedSearch, PackageError> {
        let mut search = PagedSearch {
            attrs,
            stream: None,
            cookie: Vec::new(),
            pages: 0,
            page_entries: 0,
            empty_pages: 0,
            stalled_pages: 0,
            count: 0,
        };
        search.ask_page(session, cfg, table, cancel).await?;
        Ok(search)
    }

    /// Sends the search request of the next page (with the current cookie).
    async fn ask_page(
        &mut self,
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        cancel: &CancellationToken,
    ) -> Result<(), PackageError> {
        let control: RawControl = ldap3::controls::PagedResults {
            size: cfg.page_size,
            cookie: self.cookie.clone(),
        }
        .into();
        session.ldap.with_controls(control);
        session.ldap.with_search_options(
            SearchOptions::new()
                .sizelimit(cfg.size_limit)
                .timelimit(cfg.time_limit),
        );
        session.arm();
        let stream = cancellable(
            cancel,
            session.ldap.streaming_search_with(
                EntriesOnly::new(),
                &table.base_dn,
                table.scope.ldap(),
                &table.filter,
                self.attrs.clone(),
            ),
        )
        .await?
        .map_err(|e| read_failure(session, cfg, table, e, self.count))?;
        self.stream = Some(stream);
        self.pages += 1;
        self.page_entries = 0;
        Ok(())
    }

    /// The next entry; `Ok(None)` once the last page has ended with success.
    async fn next(
        &mut self,
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        cancel: &CancellationToken,
    ) -> Result<Option<Entry>, PackageError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            let count = self.count;
            let item = cancellable(cancel, stream.next())
                .await?
                .map_err(|e| read_failure(session, cfg, table, e, count))?;
            if let Some(re) = item {
                self.count += 1;
                self.page_entries += 1;
                if cfg.size_limit > 0 && self.count > cfg.size_limit.unsigned_abs() as u64 {
                    return Err(PackageError::config(format!(
                        "{}: table {} has more entries than the SizeLimit of {}; raise SizeLimit, set it to 0 for no limit, or narrow BaseDN/Filter",
                        session.server, table.name, cfg.size_limit
                    )));
                }
                return parse_entry(re.0).map(Some).map_err(|m| {
                    PackageError::source(format!(
                        "{}: table {}, entry {}: {m}",
                        session.server, table.name, self.count
                    ))
                });
            }
            // The page has ended: its result code, then its cookie.
            let Some(mut stream) = self.stream.take() else {
                return Ok(None);
            };
            let res = cancellable(cancel, stream.finish()).await?;
            if res.rc != 0 {
                return Err(search_failure(session, cfg, table, &res, self.count));
            }
            let cookie = match paged_cookie(&res) {
                Ok(Some(c)) => c,
                // A server that ignores paging answers the whole search at once.
                Ok(None) if self.pages == 1 => return Ok(None),
                Ok(None) => {
                    return Err(PackageError::source(format!(
                        "{}: table {}: page {} of the search came back without the paged-results control after {} entries; the rest of the table cannot be asked for",
                        session.server, table.name, self.pages, self.count
                    )));
                }
                Err(m) => {
                    return Err(PackageError::source(format!(
                        "{}: table {}: page {}: {m}",
                        session.server, table.name, self.pages
                    )));
                }
            };
            if cookie.is_empty() {
                return Ok(None);
            }
            self.check_progress(&cookie).map_err(|m| {
                PackageError::source(format!("{}: table {}: {m}", session.server, table.name))
            })?;
            self.cookie = cookie;
            self.ask_page(session, cfg, table, cancel).await?;
        }
    }

    /// Stops a search whose pages bring no entry back again and again.
    fn check_progress(&mut self, cookie: &[u8]) -> Result<(), String> {
        if self.page_entries > 0 {
            self.empty_pages = 0;
            self.stalled_pages = 0;
            return Ok(());
        }
        self.empty_pages += 1;
        if cookie == self.cookie.as_slice() {
            self.stalled_pages += 1;
        } else {
            self.stalled_pages = 0;
        }
        if self.stalled_pages >= MAX_STALLED_PAGES {
            return Err(format!(
                "the server answered {} pages in a row with no entry and the same paging cookie it was sent (after {} entries): it makes no progress, so the search was stopped rather than asked again forever",
                self.stalled_pages, self.count
            ));
        }
        if self.empty_pages >= MAX_EMPTY_PAGES {
            return Err(format!(
                "the server answered {} pages in a row with no entry but a paging cookie (after {} entries); the search was stopped: narrow BaseDN/Filter",
                self.empty_pages, self.count
            ));
        }
        Ok(())
    }
}

/// The cookie of the paged-results control of a page's result: `Ok(None)` when there is no
/// such control. A malformed control is an error (ldap3's own parser would panic).
fn paged_cookie(res: &LdapResult) -> Result<Option<Vec<u8>>, String> {
    let Some(control) = res.ctrls.iter().find(|c| c.1.ctype == PAGED_RESULTS_OID) else {
        return Ok(None);
    };
    let malformed = || "the server sent a malformed paged-results control".to_string();
    let value = control.1.val.as_deref().ok_or_else(malformed)?;
    let (_, tag) = ldap3::asn1::parse_tag(value).map_err(|_| malformed())?;
    let PL::C(parts) = tag.payload else {
        return Err(malformed());
    };
    let mut parts = parts.into_iter();
    match parts.next() {
        Some(StructureTag {
            payload: PL::P(_), ..
        }) => {}
        _ => return Err(malformed()),
    }
    match parts.next() {
        Some(StructureTag {
            payload: PL::P(cookie),
            ..
        }) => Ok(Some(cookie)),
        _ => Err(malformed()),
    }
}

/// Whether an LDAP error means the connection is gone (the server closed it, or it broke):
/// ldap3 then reports only that its internal channel closed.
fn connection_lost(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::EndOfStream
            | LdapError::Io { .. }
    )
}

/// An error while starting or reading the search of a table; `count` entries of it were read.
fn read_failure(
    session: &Session,
    cfg: &Config,
    table: &TableConfig,
    e: LdapError,
    count: u64,
) -> PackageError {
    if connection_lost(&e) {
        let detail = match &e {
            LdapError::Io { source } => format!(" ({source})"),
            _ => String::new(),
        };
        return PackageError::source(format!(
            "{}: the server closed the connection{detail} while table {} was read, after {count} entr{}; check the server's log (a restart, an idle or size limit, a dropped connection)",
            session.server,
            table.name,
            if count == 1 { "y" } else { "ies" }
        ));
    }
    match e {
        LdapError::FilterParsing => PackageError::config(format!(
            "table {}: Filter {} is not a valid LDAP filter",
            table.name, table.filter
        )),
        LdapError::LdapResult { result } => search_failure(session, cfg, table, &result, 0),
        LdapError::Timeout { .. } => PackageError::source(format!(
            "{}: no answer within {} while reading table {} ({}); raise TimeOut, or lower PageSize",
            session.server,
            cfg.timeout_text(),
            table.name,
            table.describe()
        )),
        other => PackageError::source(format!(
            "{}: reading table {} failed: {other}",
            session.server, table.name
        )),
    }
}

/// The error for a search of a table that ended with a result code other than success.
fn search_failure(
    session: &Session,
    cfg: &Config,
    table: &TableConfig,
    res: &LdapResult,
    count: u64,
) -> PackageError {
    let server = &session.server;
    let t = &table.name;
    let diag = diagnostic(res);
    match res.rc {
        3 if cfg.time_limit > 0 => PackageError::config(format!(
            "{server}: the search for table {t} ran longer than the TimeLimit of {} seconds (result code 3, timeLimitExceeded{diag}); raise TimeLimit, or set it to 0",
            cfg.time_limit
        )),
        3 => PackageError::source(format!(
            "{server}: the server stopped the search for table {t} at its own time limit (result code 3, timeLimitExceeded{diag}); lower PageSize ({}) so that each page is quicker, or ask the directory administrator to raise the time limit for {}",
            cfg.page_size, session.login
        )),
        4 if cfg.size_limit > 0 && count >= cfg.size_limit.unsigned_abs() as u64 => {
            PackageError::config(format!(
                "{server}: table {t} has more entries than the SizeLimit of {} (result code 4, sizeLimitExceeded); raise SizeLimit, set it to 0 for no limit, or narrow BaseDN/Filter",
                cfg.size_limit
            ))
        }
        4 => {
            let page_size = cfg.page_size.unsigned_abs() as u64;
            // A limit below PageSize may be per page; at or above it, paging did not help: the
            // server caps whole searches (OpenLDAP applies its hard limit to the total of a
            // paged search, size.prtotal, to every login but the root DN).
            let advice = if count > 0 && count < page_size {
                format!(
                    "that is fewer than PageSize ({}): set PageSize to {count} or less; if the search still stops, the server caps whole searches for {}: ask the directory administrator to raise that limit (OpenLDAP olcLimits size.prtotal/size.hard, Active Directory MaxResultSetSize)",
                    cfg.page_size, session.login
                )
            } else {
                format!(
                    "paged results (PageSize {}) do not get around it: the server caps whole searches for {}; ask the directory administrator to raise that limit (OpenLDAP olcLimits size.prtotal/size.hard, Active Directory MaxResultSetSize), or use a login without it",
                    cfg.page_size, session.login
                )
            };
            let size_limit = if cfg.size_limit > 0 {
                format!("; SizeLimit ({}) is not what stopped it", cfg.size_limit)
            } else {
                String::new()
            };
            PackageError::config(format!(
                "{server}: the server stopped the search for table {t} at its own size limit after {count} entries (result code 4, sizeLimitExceeded{diag}): {advice}{size_limit}"
            ))
        }
        11 => PackageError::config(format!(
            "{server}: the search for table {t} hit an administrative limit (result code 11, adminLimitExceeded{diag}); lower PageSize ({}) or ask the directory administrator to raise the limit for {}",
            cfg.page_size, session.login
        )),
        10 => PackageError::config(format!(
            "{server}: table {t}: the server does not hold BaseDN {} and refers to {}; add that server to Servers or correct BaseDN",
            table.base_dn,
            if res.refs.is_empty() {
                "another server".to_string()
            } else {
                res.refs.join(", ")
            }
        )),
        32 => PackageError::config(format!(
            "table {t}: BaseDN {} does not exist on {server}{}",
            table.base_dn,
            if res.matched.trim().is_empty() {
                String::new()
            } else {
                format!(" (the closest existing entry is {})", res.matched.trim())
            }
        )),
        34 => PackageError::config(format!(
            "table {t}: BaseDN {} is not a valid DN{diag}",
            table.base_dn
        )),
        50 => PackageError::source(format!(
            "{server}: {} may not read table {t} ({}): insufficient access rights{diag}",
            session.login,
            table.describe()
        )),
        87 => PackageError::config(format!(
            "{server}: table {t}: the server rejected Filter {}{diag}",
            table.filter
        )),
        rc => PackageError::source(format!(
            "{server}: the search for table {t} ({}) failed with result code {rc}{diag}",
            table.describe()
        )),
    }
}

/// The range of an attribute description: `Ok(None)` when it has no range option, an error when
/// its range option is malformed.
fn range_of(desc: &str) -> Result<Option<Range>, String> {
    let ranged = desc
        .split(';')
        .skip(1)
        .any(|o| strip_prefix_ci(o, "range=").is_some());
    if !ranged {
        return Ok(None);
    }
    parse_range(desc)
        .map(Some)
        .ok_or_else(|| format!("the server sent {desc}, a malformed range"))
}

/// Reads the answer to one follow-up range request (`want`, asked from `start`) of the attribute
/// whose [`Subschema::key`] is `key`: its values and the end of its range (`None` for `*`). An
/// answer without that attribute, without a range, with a malformed range or with another start
/// is an error: publishing the values read so far would publish part of them as all of them.
fn range_answer(
    schema: &Subschema,
    key: &str,
    want: &str,
    start: u64,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
) -> Result<(Vec<Vec<u8>>, Option<u64>), String> {
    let mut found: Option<(Vec<Vec<u8>>, Option<u64>)> = None;
    for (d, v) in attrs {
        if schema.key(&d) != key {
            continue;
        }
        if found.is_some() {
            return Err(format!(
                "asked for {want}, the server answered with several ranges"
            ));
        }
        let Some(r) = range_of(&d)? else {
            return Err(format!(
                "asked for {want}, the server answered with {d}, without a range: the values cannot be known to be complete"
            ));
        };
        if r.low != start {
            return Err(format!("asked for {want}, the server answered with {d}"));
        }
        found = Some((v, r.high));
    }
    found.ok_or_else(|| {
        format!("asked for {want}, the server returned no values of it: the values read so far are incomplete")
    })
}

/// Completes ranged attributes (`member;range=0-1499`): asks for `member;range=1500-*` with a
/// base-scope search of the entry until the server answers with a range ending in `*`. Anything
/// else than the next range fails (see [`range_answer`]).
async fn complete_ranges(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    entry: &mut Entry,
    cancel: &CancellationToken,
) -> Result<(), PackageError> {
    let dn = entry.dn.clone();
    let server = session.server.clone();
    let fail = |m: String| PackageError::source(format!("{server}: {dn}: {m}"));
    for (desc, values) in entry.attrs.iter_mut() {
        let range = match range_of(desc) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(m) => return Err(fail(m)),
        };
        if range.low != 0 {
            return Err(fail(format!(
                "the server sent {desc}, a range that does not start at 0"
            )));
        }
        let key = schema.key(&range.base);
        *desc = range.base.clone();
        let mut high = range.high;
        let mut rounds = 0usize;
        while let Some(h) = high {
            rounds += 1;
            let start = h
                .checked_add(1)
                .filter(|_| rounds <= MAX_RANGE_ROUNDS)
                .ok_or_else(|| fail(format!("the ranges of {} never end", range.base)))?;
            let want = format!("{};range={start}-*", range.base);
            session.arm();
            let result = cancellable(
                cancel,
                session.ldap.search(
                    &dn,
                    ldap3::Scope::Base,
                    "(objectClass=*)",
                    vec![want.as_str()],
                ),
            )
            .await?
            .map_err(|e| {
                call_failure(&session.server, &format!("reading {want} of {dn}"), e, cfg)
            })?;
            let (entries, res) = (result.0, result.1);
            if res.rc != 0 {
                return Err(fail(format!(
                    "reading {want} failed with result code {}{}",
                    res.rc,
                    diagnostic(&res)
                )));
            }
            let mut attrs = Vec::new();
            for re in entries {
                attrs.extend(parse_entry(re.0).map_err(|m| fail(m.to_string()))?.attrs);
            }
            let (more, next) = range_answer(schema, &key, &want, start, attrs).map_err(fail)?;
            values.extend(more);
            high = next;
        }
    }
    Ok(())
}

/// The object classes (lower case) of the entries of `table`, from a paged pass that reads only
/// `objectClass`.
async fn classes_of_entries(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    schema: &Subschema,
    cancel: &CancellationToken,
) -> Result<BTreeSet<String>, PackageError> {
    let key = schema.key("objectClass");
    let mut classes = BTreeSet::new();
    let mut search =
        PagedSearch::open(session, cfg, table, vec!["objectClass".to_string()], cancel).await?;
    while let Some(entry) = search.next(session, cfg, table, cancel).await? {
        for (desc, values) in entry.attrs {
            if schema.key(&desc) != key {
                continue;
            }
            for v in values {
                let class = String::from_utf8_lossy(&v).trim().to_ascii_lowercase();
                if classes.len() >= MAX_OBJECT_CLASSES && !classes.contains(&class) {
                    return Err(PackageError::source(format!(
                        "{}: table {}: the entries carry more than {MAX_OBJECT_CLASSES} object classes; set Attributes",
                        session.server, table.name
                    )));
                }
                classes.insert(class);
            }
        }
    }
    Ok(classes)
}

/// The columns of the entries table when neither Attributes nor the mappings name them: the
/// attributes the object classes of the matched entries allow (see the module documentation).
async fn schema_columns(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    schema: &Subschema,
    cancel: &CancellationToken,
) -> Result<Vec<String>, PackageError> {
    if schema.classes.is_empty() {
        return Err(PackageError::source(format!(
            "{}: the subschema lists no object classes (is objectClasses readable by {}?); the entries table's columns come from them when Attributes is empty: set Attributes",
            session.server, session.login
        )));
    }
    let classes = classes_of_entries(session, cfg, table, schema, cancel).await?;
    Ok(schema.attributes_of_classes(classes.iter().map(String::as_str)))
}

/// The subschema, which the schema-based columns need: when it cannot be read, say what to do.
fn subschema_needed(e: PackageError, login: &str) -> PackageError {
    PackageError {
        class: e.class,
        message: format!(
            "{}; the entries table's columns come from the subschema when Attributes is empty and no EntityTypeMapping reads the table: set Attributes, or let {login} read the subschema",
            e.message
        ),
    }
}

async fn export_entries(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    table: &TableConfig,
    columns: &Columns,
    sink: &RowSink,
    cancel: &CancellationToken,
) -> Result<u64, PackageError> {
    let mut header = vec!["dn".to_string(), "parentdn".to_string()];
    header.extend(columns.list.iter().map(|c| c.name.clone()));
    let mut writer = sink.table(Some(ENTRIES), header)?;
    // With explicit Attributes, ask for exactly those (as written: `;binary` matters). The
    // schema-based columns ask for "*": the user attributes the entries hold, never constructed
    // attributes that some servers refuse in a subtree search.
    let attrs = if cfg.attributes.is_empty() {
        vec!["*".to_string()]
    } else {
        columns.list.iter().map(|c| c.request.clone()).collect()
    };
    let mut search = PagedSearch::open(session, cfg, table, attrs, cancel).await?;
    while let Some(mut entry) = search.next(session, cfg, table, cancel).await? {
        complete_ranges(session, cfg, schema, &mut entry, cancel).await?;
        let row = columns.row(entry, schema).map_err(|m| {
            PackageError::config(format!("{}: table {}, {m}", session.server, table.name))
        })?;
        writer.push(row).await?;
    }
    writer.finish().await?;
    Ok(search.count)
}

async fn export_link(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    table: &TableConfig,
    sink: &RowSink,
    cancel: &CancellationToken,
) -> Result<u64, PackageError> {
    let mut writer = sink.table(
        Some(table.name.as_str()),
        vec!["dn".to_string(), table.name.clone()],
    )?;
    let key = schema.key(&table.name);
    let binary = schema.is_binary(&table.name);
    let mut search =
        PagedSearch::open(session, cfg, table, vec![table.name.clone()], cancel).await?;
    let mut rows = 0u64;
    while let Some(mut entry) = search.next(session, cfg, table, cancel).await? {
        complete_ranges(session, cfg, schema, &mut entry, cancel).await?;
        let Entry { dn, attrs } = entry;
        for (desc, values) in attrs {
            if schema.key(&desc) != key {
                continue;
            }
            for v in values {
                let value = value_of(v, binary).map_err(|NotText| {
                    PackageError::source(format!(
                        "{}: table {t}, entry {dn}: a value of {t} is not UTF-8 text, and {t} is exported as text ({}); a link table holds text (DNs), or binary values when the subschema gives the attribute a binary syntax",
                        session.server,
                        schema.text_reason(&table.name),
                        t = table.name,
                    ))
                })?;
                writer.push(vec![Value::Text(dn.clone()), value]).await?;
                rows += 1;
            }
        }
    }
    writer.finish().await?;
    Ok(rows)
}

/// Checks a table's BaseDN, Filter and Scope with a search that returns at most one entry and
/// no attributes.
async fn probe_table(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    cancel: &CancellationToken,
) -> Result<String, PackageError> {
    session
        .ldap
        .with_search_options(SearchOptions::new().sizelimit(1).timelimit(cfg.time_limit));
    session.arm();
    let result = cancellable(
        cancel,
        session.ldap.search(
            &table.base_dn,
            table.scope.ldap(),
            &table.filter,
            vec!["1.1"],
        ),
    )
    .await?
    .map_err(|e| read_failure(session, cfg, table, e, 0))?;
    let (entries, res) = (result.0, result.1);
    match res.rc {
        // 4: more than the one entry asked for.
        0 | 4 => Ok(format!(
            "table {}: BaseDN {} exists on {}; Scope {}, Filter {} {}",
            table.name,
            table.base_dn,
            session.server,
            table.scope.name(),
            table.filter,
            if entries.is_empty() {
                "matches no entry (the table will be empty)"
            } else {
                "matches entries"
            }
        )),
        _ => Err(search_failure(session, cfg, table, &res, 0)),
    }
}

// ---------------------------------------------------------------------------------------------
// The package
// ---------------------------------------------------------------------------------------------

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
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn source_paths(&self, _settings: &Settings) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
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

#[cfg(test)]
mod tests {
    use super::super::spec::SettingValue;
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    fn settings(values: Vec<(&'static str, SettingValue)>) -> Settings {
        Settings::new(SETTINGS, values, Path::new("/"))
    }

    fn structured(v: J) -> SettingValue {
        SettingValue::Structured(v)
    }

    fn entries_only() -> J {
        json!([{"Table": "entries", "BaseDN": "dc=example,dc=com"}])
    }

    fn messages(p: &[Problem]) -> String {
        p.iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn range_attributes() {
        assert_eq!(
            parse_range("member;range=0-1499"),
            Some(Range {
                base: "member".into(),
                low: 0,
                high: Some(1499)
            })
        );
        assert_eq!(
            parse_range("member;Range=1500-*"),
            Some(Range {
                base: "member".into(),
                low: 1500,
                high: None
            })
        );
        assert_eq!(
            parse_range("userCertificate;binary;range=0-9"),
            Some(Range {
                base: "userCertificate;binary".into(),
                low: 0,
                high: Some(9)
            })
        );
        assert_eq!(parse_range("member"), None);
        assert_eq!(parse_range("member;range=5-2"), None);
        assert_eq!(parse_range("member;range=x-*"), None);
        assert_eq!(parse_range("member;range=0"), None);
    }

    #[test]
    fn parent_dns() {
        assert_eq!(parent_dn("cn=a\\,b,ou=x"), Some("ou=x"));
        assert_eq!(parent_dn("cn=a\\\\,ou=x,dc=y"), Some("ou=x,dc=y"));
        assert_eq!(
            parent_dn("uid=u1, ou=people,dc=example"),
            Some("ou=people,dc=example")
        );
        assert_eq!(parent_dn("cn=\"a,b\",ou=x"), Some("ou=x"));
        assert_eq!(parent_dn("cn=a\\2Cb,ou=x"), Some("ou=x"));
        assert_eq!(parent_dn("dc=com"), None);
        assert_eq!(parent_dn(""), None);
        assert_eq!(parent_dn("cn=trailing,"), None);
    }

    #[test]
    fn binary_attributes_and_column_names() {
        assert!(is_binary_name("objectGUID"));
        assert!(is_binary_name("jpegPhoto"));
        assert!(is_binary_name("userCertificate"));
        assert!(is_binary_name("someThing;binary"));
        assert!(is_binary_name("thumbnailPhoto;range=0-10"));
        assert!(!is_binary_name("cn"));
        assert!(!is_binary_name("member;range=0-1499"));
        assert_eq!(column_name("userCertificate;binary"), "userCertificate");
        assert_eq!(column_name("member;range=0-1499"), "member");
        assert_eq!(column_name("cn;lang-fr"), "cn;lang-fr");
        assert_eq!(attr_key("Member;RANGE=0-*"), "member");
        // The column decides, never the value: a text column with a value that is not UTF-8 is
        // an error (not a field of bytes), a binary column is bytes even for ASCII values.
        assert_eq!(
            values_of(vec![b"a".to_vec(), vec![0xff]], false),
            Err(NotText)
        );
        assert_eq!(
            values_of(vec![b"a".to_vec(), vec![0xff]], true),
            Ok(Value::Multi(vec![
                Value::Bytes(b"a".to_vec()),
                Value::Bytes(vec![0xff])
            ]))
        );
        assert_eq!(
            values_of(vec![b"x".to_vec()], false),
            Ok(Value::Text("x".into()))
        );
        assert_eq!(
            values_of(vec![b"x".to_vec()], true),
            Ok(Value::Bytes(b"x".to_vec()))
        );
        assert_eq!(values_of(vec![], false), Ok(Value::Null));
        assert_eq!(
            values_of(vec![b"a".to_vec(), b"b".to_vec()], false),
            Ok(Value::Multi(vec![
                Value::Text("a".into()),
                Value::Text("b".into())
            ]))
        );
    }

    #[test]
    fn server_addresses() {
        let n = |s: &str, ssl: bool| normalize_server(s, ssl);
        assert_eq!(
            n("ldap://dc1:389", false),
            Ok(("ldap://dc1:389".into(), false))
        );
        assert_eq!(
            n("LDAPS://dc1", false),
            Ok(("ldaps://dc1:636".into(), true))
        );
        assert_eq!(
            n("dc1.corp.local", false),
            Ok(("ldap://dc1.corp.local:389".into(), false))
        );
        assert_eq!(n("dc1:3269", true), Ok(("ldaps://dc1:3269".into(), true)));
        assert_eq!(
            n("ldap://dc1:389/", false),
            Ok(("ldap://dc1:389".into(), false))
        );
        assert_eq!(
            n("[::1]:10389", false),
            Ok(("ldap://[::1]:10389".into(), false))
        );
        assert_eq!(n("::1", false), Ok(("ldap://[::1]:389".into(), false)));
        assert!(n("ldap://dc1:389", true).is_err());
        assert!(n("http://dc1", false).is_err());
        assert!(n("dc1:0", false).is_err());
        assert!(n("dc1:x", false).is_err());
        assert!(n("ldap://dc1/dc=example,dc=com", false).is_err());
        assert!(n("", false).is_err());
        assert!(n("bad host", false).is_err());
    }

    #[test]
    fn servers_and_their_problems() {
        let (servers, problems) = parse_servers(
            Some(&json!([
                {"Server": "ldap://a:389", "Login": "cn=r,dc=x"},
                "b.example.com",
                {"server": "c", "AuthType": "anonymous", "EnableSSL": "true"}
            ])),
            true,
        );
        assert!(problems.is_empty(), "{}", messages(&problems));
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[0].auth, AuthType::Basic);
        assert_eq!(servers[1].auth, AuthType::Anonymous);
        assert_eq!(servers[1].url, "ldap://b.example.com:389");
        assert_eq!(servers[2].url, "ldaps://c:636");

        let (_, problems) = parse_servers(
            Some(&json!([{"Server": "a", "AuthType": "Negotiate", "Login": "u@corp"}])),
            true,
        );
        assert!(messages(&problems).contains("not supported on this platform: use Basic"));

        let (_, problems) =
            parse_servers(Some(&json!([{"Server": "a", "AuthType": "Basic"}])), true);
        assert!(messages(&problems).contains("needs a Login"));

        let (_, problems) = parse_servers(Some(&json!([{"Server": "a", "Login": "cn=r"}])), false);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].setting, Some("Password"));

        let (_, problems) = parse_servers(
            Some(&json!([{"Server": "a", "EnableSSL": true, "StartTLS": true, "Sever": "x"}])),
            true,
        );
        let m = messages(&problems);
        assert!(m.contains("StartTLS cannot be used"), "{m}");
        assert!(m.contains("unknown key(s) Sever"), "{m}");

        let (_, problems) = parse_servers(
            Some(&json!([{"Server": "a", "Controls": ["PagedResult", "Sort"]}])),
            true,
        );
        assert!(messages(&problems).contains("unknown control \"Sort\""));

        let (_, problems) = parse_servers(Some(&json!([])), true);
        assert!(messages(&problems).contains("empty"));
    }

    #[test]
    fn a_password_inside_servers_is_refused_and_never_shown() {
        let canary = "canary-ldap-5b2e";
        let (servers, problems) = parse_servers(
            Some(&json!([{"Server": "a", "Login": "cn=r", "Password": canary, "AuthType": 7}])),
            false,
        );
        let m = messages(&problems);
        assert!(m.contains("has its own Password"), "{m}");
        assert!(!m.contains(canary), "{m}");
        assert!(!problems.iter().any(|p| p.hint.contains(canary)));
        assert_eq!(
            servers[0].own_password.as_ref().map(Secret::expose),
            Some(canary)
        );
        assert!(!format!("{:?}", servers[0]).contains(canary));
        // The redactor knows it, so that errors quoting it are masked.
        let s = settings(vec![
            (
                "Servers",
                structured(json!([{"Server": "a", "Login": "cn=r", "Password": canary}])),
            ),
            ("Tables", structured(entries_only())),
        ]);
        assert_eq!(redactor(&s).redact(&format!("x {canary} y")), "x *** y");
        // A wrong type for it does not repeat the value either.
        let (_, problems) =
            parse_servers(Some(&json!([{"Server": "a", "Password": [canary]}])), true);
        assert!(!messages(&problems).contains(canary));
    }

    #[test]
    fn tables_and_their_problems() {
        let (tables, problems) = parse_tables(Some(&json!([
            {"Table": "member", "BaseDN": "ou=groups,dc=x"},
            {"Table": "Entries", "BaseDN": "dc=x", "Scope": "onelevel"},
            {"Table": "manager"}
        ])));
        assert!(problems.is_empty(), "{}", messages(&problems));
        assert_eq!(tables[0].name, "entries");
        assert!(tables[0].is_entries);
        assert_eq!(tables[0].filter, "(objectClass=*)");
        assert_eq!(tables[0].scope, ScopeKind::OneLevel);
        assert_eq!(tables[1].name, "member");
        assert_eq!(tables[1].filter, "(member=*)");
        assert_eq!(
            tables[2].base_dn, "dc=x",
            "a link table inherits the entries' BaseDN"
        );

        let (_, problems) = parse_tables(Some(&json!([{"Table": "member", "BaseDN": "dc=x"}])));
        assert!(messages(&problems).contains("no \"entries\" table"));

        let (_, problems) = parse_tables(Some(&json!([
            {"Table": "entries", "BaseDN": "dc=x", "Filter": "(&(cn=a)", "Scope": "Deep"},
            {"Table": "entries", "BaseDN": "dc=y"},
            {"Table": "member;range=0-1", "BaseDN": "dc=y"},
            {"Table": "dn", "BaseDN": "dc=y"},
            {"BaseDN": "dc=y"}
        ])));
        let m = messages(&problems);
        assert!(
            m.contains("table entries: Filter (&(cn=a) is not a valid LDAP filter"),
            "{m}"
        );
        assert!(m.contains("unknown Scope \"Deep\""), "{m}");
        assert!(m.contains("is listed twice"), "{m}");
        assert!(
            m.contains("\"member;range=0-1\" is not a link attribute name"),
            "{m}"
        );
        assert!(m.contains("\"dn\" is not a link attribute name"), "{m}");
        assert!(m.contains("Table is missing"), "{m}");

        let (_, problems) = parse_tables(Some(&json!([{"Table": "entries"}])));
        assert!(messages(&problems).contains("BaseDN is missing"));
    }

    #[test]
    fn attributes_setting() {
        let list: Vec<String> = [
            "cn",
            "userCertificate;binary",
            "Mail",
            "mail",
            "*",
            "bad name",
            "dn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (columns, problems) = parse_attributes(&list);
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cn", "userCertificate", "Mail"]);
        assert!(columns[1].binary);
        assert_eq!(columns[1].request, "userCertificate;binary");
        let m = messages(&problems);
        assert!(m.contains("names mail twice"), "{m}");
        assert!(m.contains("cannot hold \"*\""), "{m}");
        assert!(m.contains("\"bad name\" is not an attribute name"), "{m}");
        assert!(m.contains("dn is always the first columns"), "{m}");
    }

    #[test]
    fn check_reports_problems_of_every_setting() {
        let package = LdapPackage;
        let ok = settings(vec![
            (
                "Servers",
                structured(json!([{"Server": "ldap://a:389", "Login": "cn=r,dc=x"}])),
            ),
            ("Password", SettingValue::Secret(Secret::new("pw"))),
            ("Tables", structured(entries_only())),
        ]);
        assert!(
            package.check(&ok).is_empty(),
            "{}",
            messages(&package.check(&ok))
        );
        let cfg = Config::load(&ok).expect("valid settings");
        assert_eq!(cfg.page_size, 500);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(30)));
        assert_eq!(cfg.size_limit, 0);

        let bad = settings(vec![
            (
                "Servers",
                structured(json!([{"Server": "ldap://a:389", "AuthType": "Negotiate"}])),
            ),
            (
                "Tables",
                structured(json!([{"Table": "member", "BaseDN": "dc=x"}])),
            ),
            ("PageSize", SettingValue::Integer(0)),
            ("TimeOut", SettingValue::Integer(-1)),
        ]);
        let problems = package.check(&bad);
        let m = messages(&problems);
        assert!(m.contains("Negotiate"), "{m}");
        assert!(m.contains("no \"entries\" table"), "{m}");
        assert!(m.contains("PageSize must be between 1"), "{m}");
        assert!(m.contains("TimeOut must be between 0"), "{m}");
        assert!(problems.iter().any(|p| p.setting == Some("PageSize")));
        assert!(package.source_paths(&bad).is_empty());
    }

    #[test]
    fn attribute_type_descriptions() {
        let defs = [
            "( 2.5.4.41 NAME 'name' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
            "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s) for which the entity is known by' SUP name )",
            "( 0.9.2342.19200300.100.1.60 NAME 'jpegPhoto' DESC 'RFC2798: a JPEG image' SYNTAX 1.3.6.1.4.1.1466.115.121.1.28 )",
            "( 1.2.840.113556.1.4.2 NAME 'objectGUID' SYNTAX '1.3.6.1.4.1.1466.115.121.1.40' SINGLE-VALUE NO-USER-MODIFICATION )",
            "( 2.5.18.1 NAME 'createTimestamp' EQUALITY generalizedTimeMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )",
            "( 2.16.840.1.113730.3.1.39 NAME 'preferredLanguage' DESC 'x' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE X-ORIGIN ( 'RFC 2798' 'user defined' ) )",
            "( 1.1.1 NAME 'old' OBSOLETE SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
            "not a definition",
        ];
        let s = Subschema::parse(defs);
        let cn = s.find("CN").expect("cn");
        assert_eq!(cn.names, ["cn", "commonName"]);
        assert_eq!(s.syntax_of(cn), Some("1.3.6.1.4.1.1466.115.121.1.15"));
        assert!(s.find("commonName;lang-fr").is_some());
        assert!(s.is_binary("jpegPhoto"));
        assert!(s.is_binary("objectGUID"));
        assert!(!s.is_binary("cn"));
        let guid = s.column("objectGUID", "objectGUID");
        assert_eq!(guid.value_type, ValueType::Binary);
        assert!(!guid.multivalued);
        assert!(s.column("cn", "cn").multivalued);
        assert!(
            !s.column("2.16.840.1.113730.3.1.39", "2.16.840.1.113730.3.1.39")
                .multivalued
        );
        let lang = s.find("preferredLanguage").expect("preferredLanguage");
        assert!(lang.single_value);
        assert!(!s.find("createTimestamp").expect("createTimestamp").user);
        // Unknown attributes are text that may repeat.
        let unknown = s.column("fooBar", "fooBar");
        assert_eq!(unknown.value_type, ValueType::String);
        assert!(unknown.multivalued);
    }

    /// OpenLDAP's definitions, as its subschema writes them (core.ldif, cosine.ldif).
    fn openldap_like() -> Subschema {
        Subschema::from_parts(
            [
                "( 2.5.4.0 NAME 'objectClass' EQUALITY objectIdentifierMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.38 )",
                "( 2.5.4.41 NAME 'name' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
                "( 2.5.4.3 NAME ( 'cn' 'commonName' ) SUP name )",
                "( 2.5.4.4 NAME ( 'sn' 'surname' ) SUP name )",
                "( 2.5.4.35 NAME 'userPassword' SYNTAX 1.3.6.1.4.1.1466.115.121.1.40{128} )",
                "( 2.5.4.20 NAME 'telephoneNumber' SYNTAX 1.3.6.1.4.1.1466.115.121.1.50{32} )",
                "( 0.9.2342.19200300.100.1.53 NAME 'personalSignature' SYNTAX 1.3.6.1.4.1.1466.115.121.1.23 )",
                "( 1.3.6.1.4.1.42.2.27.8.1.1 NAME 'faxLike' SYNTAX 1.2.3.4 )",
                "( 2.5.18.1 NAME 'createTimestamp' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE USAGE directoryOperation )",
                "( 1.1.1 NAME 'old' OBSOLETE SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
            ],
            [
                "( 2.5.6.0 NAME 'top' DESC 'top of the superclass chain' ABSTRACT MUST objectClass )",
                "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber $ old $ createTimestamp ) )",
                "( 9.9.9 NAME 'signer' AUXILIARY MAY (personalSignature$faxLike$undefinedAttr) )",
                "( 9.9.8 NAME 'gone' OBSOLETE MAY name )",
            ],
            [
                "( 1.2.3.4 DESC 'Something binary' X-NOT-HUMAN-READABLE 'TRUE' )",
                "( 1.3.6.1.4.1.1466.115.121.1.15 DESC 'Directory String' )",
            ],
        )
    }

    #[test]
    fn names_aliases_and_oids_find_one_key() {
        let s = openldap_like();
        assert_eq!(s.key("cn"), "2.5.4.3");
        assert_eq!(s.key("commonName"), "2.5.4.3");
        assert_eq!(s.key("2.5.4.3"), "2.5.4.3");
        assert_eq!(s.key("CN;Lang-FR"), "2.5.4.3;lang-fr");
        assert_eq!(s.key("cn;x-b;lang-fr"), s.key("commonName;lang-fr;x-b"));
        assert_eq!(s.key("userPassword;binary"), "2.5.4.35");
        assert_eq!(s.key("member;range=0-1499"), "member");
        assert_eq!(Subschema::default().key("commonName"), "commonname");
        // A column asked for by alias or OID gets the values the server returns under its name.
        let mut columns = vec![
            Column::new("commonName"),
            Column::new("2.5.4.4"),
            Column::new("CN"),
            Column::new("telephoneNumber"),
        ];
        for c in columns.iter_mut() {
            c.binary = s.is_binary(&c.request);
        }
        let columns = Columns::new(columns, &s);
        let row = columns
            .row(
                Entry {
                    dn: "cn=a,dc=x".into(),
                    attrs: vec![
                        ("cn".into(), vec![b"a".to_vec()]),
                        ("sn".into(), vec![b"b".to_vec()]),
                        ("cn;lang-fr".into(), vec![b"ignored".to_vec()]),
                    ],
                },
                &s,
            )
            .expect("row");
        assert_eq!(
            row,
            vec![
                Value::Text("cn=a,dc=x".into()),
                Value::Text("dc=x".into()),
                Value::Text("a".into()),
                Value::Text("b".into()),
                Value::Text("a".into()),
                Value::Null,
            ]
        );
    }

    #[test]
    fn binary_is_decided_per_column_from_the_syntax() {
        let s = openldap_like();
        assert!(s.is_binary("personalSignature"), "Fax syntax");
        assert!(s.is_binary("0.9.2342.19200300.100.1.53"));
        assert!(
            s.is_binary("faxLike"),
            "X-NOT-HUMAN-READABLE in ldapSyntaxes"
        );
        assert!(s.is_binary("userPassword"));
        assert!(s.is_binary("cn;binary"));
        assert!(!s.is_binary("cn"));
        assert!(!s.is_binary("unknownAttr"));
        let mut c = Column::new("personalSignature");
        c.binary = s.is_binary(&c.request);
        let mut t = Column::new("telephoneNumber");
        t.binary = s.is_binary(&t.request);
        let columns = Columns::new(vec![c, t], &s);
        let entry = |sig: &[u8], phone: &[u8]| Entry {
            dn: "cn=a".into(),
            attrs: vec![
                ("personalSignature".into(), vec![sig.to_vec()]),
                ("telephoneNumber".into(), vec![phone.to_vec()]),
            ],
        };
        // ASCII or not, a binary column is bytes in every row.
        let r1 = columns.row(entry(b"ASCII", b"1"), &s).expect("row");
        let r2 = columns.row(entry(&[0xff, 0], b"2"), &s).expect("row");
        assert_eq!(r1[2], Value::Bytes(b"ASCII".to_vec()));
        assert_eq!(r2[2], Value::Bytes(vec![0xff, 0]));
        assert_eq!(r1[1], Value::Null, "a DN of one RDN has no parent");
        // A text column with a value that is not UTF-8 fails with the fix.
        let e = columns
            .row(entry(b"x", &[0xfe]), &s)
            .expect_err("not UTF-8");
        assert!(e.contains("telephoneNumber;binary"), "{e}");
        assert!(e.contains("1.3.6.1.4.1.1466.115.121.1.50"), "{e}");
        assert!(e.contains("entry cn=a"), "{e}");
    }

    #[test]
    fn fallback_columns_come_from_the_object_classes() {
        let s = openldap_like();
        // person and top: MUST and MAY, without the password, operational and obsolete ones.
        assert_eq!(
            s.attributes_of_classes(["Person"]),
            ["cn", "objectClass", "sn", "telephoneNumber"]
        );
        // An auxiliary class adds its own; a type the subschema lacks keeps its name; unknown
        // classes are skipped; a class named by OID is found.
        assert_eq!(
            s.attributes_of_classes(["2.5.6.6", "signer", "noSuchClass"]),
            [
                "cn",
                "faxLike",
                "objectClass",
                "personalSignature",
                "sn",
                "telephoneNumber",
                "undefinedAttr"
            ]
        );
        assert!(
            s.attributes_of_classes(["gone"]).is_empty(),
            "obsolete class"
        );
        assert!(s.attributes_of_classes(Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn ranged_answers_are_complete_or_an_error() {
        let s = openldap_like();
        let key = s.key("member");
        let answer = |d: &str| vec![(d.to_string(), vec![b"v".to_vec()])];
        assert_eq!(
            range_answer(&s, &key, "member;range=2-*", 2, answer("member;range=2-*")),
            Ok((vec![b"v".to_vec()], None))
        );
        assert_eq!(
            range_answer(&s, &key, "member;range=2-*", 2, answer("Member;Range=2-3")),
            Ok((vec![b"v".to_vec()], Some(3)))
        );
        let err = |d: Vec<(String, Vec<Vec<u8>>)>| {
            range_answer(&s, &key, "member;range=2-*", 2, d).expect_err("an error")
        };
        assert!(err(answer("member")).contains("without a range"));
        assert!(err(answer("member;range=2-x")).contains("malformed range"));
        assert!(err(answer("member;range=5-*")).contains("answered with member;range=5-*"));
        assert!(err(answer("cn")).contains("returned no values"));
        assert!(err(Vec::new()).contains("returned no values"));
        let mut two = answer("member;range=2-3");
        two.extend(answer("member;range=4-*"));
        assert!(err(two).contains("several ranges"));
        assert_eq!(range_of("member"), Ok(None));
        assert!(range_of("member;range=0-").is_err());
        assert!(range_of("member;range=9-2").is_err());
    }

    fn primitive(class: TagClass, id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn constructed(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    #[test]
    fn entries_parse_without_panics() {
        let attr = |name: &str, values: &[&[u8]]| {
            constructed(
                TagClass::Universal,
                16,
                vec![
                    primitive(TagClass::Universal, 4, name.as_bytes()),
                    constructed(
                        TagClass::Universal,
                        17,
                        values
                            .iter()
                            .map(|v| primitive(TagClass::Universal, 4, v))
                            .collect(),
                    ),
                ],
            )
        };
        let tag = constructed(
            TagClass::Application,
            4,
            vec![
                primitive(TagClass::Universal, 4, b"cn=a\\,b,ou=x"),
                constructed(
                    TagClass::Universal,
                    16,
                    vec![
                        attr("cn", &[b"a,b"]),
                        attr("member;range=0-1", &[b"u1", b"u2"]),
                        attr("member", &[]),
                        attr("jpegPhoto", &[&[0xff, 0xd8]]),
                    ],
                ),
            ],
        );
        let entry = parse_entry(tag).expect("entry");
        assert_eq!(entry.dn, "cn=a\\,b,ou=x");
        assert_eq!(entry.attrs.len(), 4);
        let columns = Columns::new(
            vec![
                Column::new("cn"),
                Column::new("member"),
                Column::new("jpegPhoto"),
                Column::new("mail"),
            ],
            &Subschema::default(),
        );
        let row = columns.row(entry, &Subschema::default()).expect("a row");
        assert_eq!(
            row,
            vec![
                Value::Text("cn=a\\,b,ou=x".into()),
                Value::Text("ou=x".into()),
                Value::Text("a,b".into()),
                Value::Multi(vec![Value::Text("u1".into()), Value::Text("u2".into())]),
                Value::Bytes(vec![0xff, 0xd8]),
                Value::Null,
            ]
        );
        // Malformed data is an error, never a panic.
        assert!(parse_entry(primitive(TagClass::Application, 4, b"x")).is_err());
        assert!(parse_entry(constructed(TagClass::Application, 19, vec![])).is_err());
        assert!(parse_entry(constructed(TagClass::Application, 4, vec![])).is_err());
        assert!(
            parse_entry(constructed(
                TagClass::Application,
                4,
                vec![primitive(TagClass::Universal, 4, &[0xff])]
            ))
            .is_err()
        );
        let no_attrs = parse_entry(constructed(
            TagClass::Application,
            4,
            vec![primitive(TagClass::Universal, 4, b"dc=com")],
        ))
        .expect("entry without attributes");
        assert!(no_attrs.attrs.is_empty());
    }

    #[test]
    fn structured_items_accept_lists_objects_and_indexed_overrides() {
        assert_eq!(items(&json!([1, 2])).len(), 2);
        assert_eq!(items(&json!({"Server": "a"})).len(), 1);
        let indexed = json!({"1": {"Server": "b"}, "0": {"Server": "a"}});
        let v = items(&indexed);
        assert_eq!(v[0]["Server"], "a");
        assert_eq!(v[1]["Server"], "b");
    }

    /// A scripted LDAP server on a loopback port, for what slapd cannot be made to do: paging
    /// that makes no progress, limits on a middle page, malformed controls, ranged values.
    mod fake {
        use ldap3::asn1::{PL, StructureTag, TagClass, parse_tag};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let n = content.len();
            if n < 128 {
                out.push(n as u8);
            } else {
                let bytes: Vec<u8> = n
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                out.push(0x80 | bytes.len() as u8);
                out.extend(bytes);
            }
            out.extend_from_slice(content);
            out
        }

        fn octets(b: &[u8]) -> Vec<u8> {
            tlv(0x04, b)
        }

        fn int(v: u32) -> Vec<u8> {
            let mut bytes: Vec<u8> = v
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            if bytes.first().is_none_or(|b| b & 0x80 != 0) {
                bytes.insert(0, 0);
            }
            tlv(0x02, &bytes)
        }

        fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
            tlv(0x30, &parts.concat())
        }

        /// SearchResultDone with a result code.
        pub fn done(rc: u8) -> Vec<u8> {
            tlv(0x65, &[tlv(0x0a, &[rc]), octets(b""), octets(b"")].concat())
        }

        /// SearchResultEntry.
        pub fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
            let list: Vec<Vec<u8>> = attrs
                .iter()
                .map(|(name, values)| {
                    let vals: Vec<Vec<u8>> = values.iter().map(|v| octets(v)).collect();
                    seq(&[octets(name.as_bytes()), tlv(0x31, &vals.concat())])
                })
                .collect();
            tlv(0x64, &[octets(dn.as_bytes()), seq(&list)].concat())
        }

        /// The paged-results response control with a cookie.
        pub fn paged(cookie: &[u8]) -> Vec<u8> {
            control(&seq(&[int(0), octets(cookie)]))
        }

        /// A paged-results response control with any value.
        pub fn control(value: &[u8]) -> Vec<u8> {
            seq(&[octets(super::PAGED_RESULTS_OID.as_bytes()), octets(value)])
        }

        /// What the script sees of a search request.
        #[derive(Debug, Clone)]
        pub struct Search {
            pub base: String,
            pub attrs: Vec<String>,
            /// The paged-results cookie, when the control was sent.
            pub cookie: Option<Vec<u8>>,
        }

        /// An answer: protocol operations, each with its response controls (or none).
        pub type Answer = Vec<(Vec<u8>, Option<Vec<u8>>)>;
        pub type Script = Arc<dyn Fn(&Search) -> Answer + Send + Sync>;

        pub struct Server {
            pub port: u16,
            pub searches: Arc<AtomicUsize>,
        }

        impl Server {
            pub fn searches(&self) -> usize {
                self.searches.load(Ordering::SeqCst)
            }
        }

        fn uint(bytes: &[u8]) -> u64 {
            bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b))
        }

        fn primitive(t: &StructureTag) -> Option<&[u8]> {
            match &t.payload {
                PL::P(b) => Some(b),
                PL::C(_) => None,
            }
        }

        fn parts(t: &StructureTag) -> &[StructureTag] {
            match &t.payload {
                PL::C(v) => v,
                PL::P(_) => &[],
            }
        }

        fn search_of(op: &StructureTag, controls: Option<&StructureTag>) -> Search {
            let p = parts(op);
            let text = |t: Option<&StructureTag>| {
                String::from_utf8_lossy(t.and_then(primitive).unwrap_or_default()).into_owned()
            };
            let attrs = p
                .get(7)
                .map(|a| parts(a).iter().map(|t| text(Some(t))).collect())
                .unwrap_or_default();
            let cookie = controls.and_then(|c| {
                parts(c).iter().find_map(|ctrl| {
                    let fields = parts(ctrl);
                    if text(fields.first()) != super::PAGED_RESULTS_OID {
                        return None;
                    }
                    let value = fields.last().and_then(primitive)?;
                    let (_, tag) = parse_tag(value).ok()?;
                    parts(&tag).get(1).and_then(primitive).map(<[u8]>::to_vec)
                })
            });
            Search {
                base: text(p.first()),
                attrs,
                cookie,
            }
        }

        pub async fn start(script: Script) -> Server {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let searches = Arc::new(AtomicUsize::new(0));
            let counter = searches.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(serve(socket, script.clone(), counter.clone()));
                }
            });
            Server { port, searches }
        }

        async fn serve(
            mut socket: tokio::net::TcpStream,
            script: Script,
            searches: Arc<AtomicUsize>,
        ) {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Ok((rest, msg)) = parse_tag(&buf) {
                    let used = buf.len() - rest.len();
                    let p = parts(&msg).to_vec();
                    buf.drain(..used);
                    let id = p.first().and_then(primitive).map(uint).unwrap_or(0) as u32;
                    let Some(op) = p.get(1) else { return };
                    let controls = p
                        .get(2)
                        .filter(|c| matches!(c.class, TagClass::Context) && c.id == 0);
                    let answer: Answer = match (op.class, op.id) {
                        (TagClass::Application, 0) => vec![(
                            tlv(0x61, &[tlv(0x0a, &[0]), octets(b""), octets(b"")].concat()),
                            None,
                        )],
                        (TagClass::Application, 3) => {
                            searches.fetch_add(1, Ordering::SeqCst);
                            script(&search_of(op, controls))
                        }
                        (TagClass::Application, 2) => return,
                        _ => Vec::new(),
                    };
                    for (op, ctrls) in answer {
                        let mut msg = vec![int(id), op];
                        if let Some(c) = ctrls {
                            msg.push(tlv(0xa0, &c));
                        }
                        if socket.write_all(&seq(&msg)).await.is_err() {
                            return;
                        }
                    }
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    /// Rows by table, from a sink that keeps them in memory.
    type Tables = Arc<std::sync::Mutex<BTreeMap<String, Vec<Row>>>>;

    struct MemoryOpener {
        tables: Tables,
        cancel: CancellationToken,
    }

    impl super::super::sink::TableOpener for MemoryOpener {
        fn open(
            &self,
            table: Option<&str>,
            columns: Vec<String>,
        ) -> Result<super::super::TableWriter, super::super::SinkError> {
            use super::super::sink::Batch;
            let name = table.unwrap_or_default().to_string();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let store = self.tables.clone();
            let file = format!("Dir_{name}.csv");
            let stats_file = file.clone();
            tokio::spawn(async move {
                let mut rows: Vec<Row> = Vec::new();
                while let Some(b) = rx.recv().await {
                    match b {
                        Batch::Rows(r) => rows.extend(r),
                        Batch::Finish => {
                            let n = rows.len() as u64;
                            if let Ok(mut t) = store.lock() {
                                t.insert(name, rows);
                            }
                            let _ = done_tx.send(Ok(super::super::TableStats {
                                file: stats_file,
                                rows: n,
                                bytes: 0,
                                sha256: String::new(),
                            }));
                            return;
                        }
                    }
                }
            });
            Ok(super::super::TableWriter::new(
                file,
                columns.len(),
                tx,
                done_rx,
                self.cancel.clone(),
            ))
        }
    }

    /// Exports from the fake server with PageSize 2: the tables, or the error.
    async fn export_from(
        script: fake::Script,
        attributes: &[&str],
        tables: J,
    ) -> (Result<BTreeMap<String, Vec<Row>>, PackageError>, usize) {
        let server = fake::start(script).await;
        let s = settings(vec![
            (
                "Servers",
                structured(json!([{"Server": format!("ldap://127.0.0.1:{}", server.port)}])),
            ),
            ("Tables", structured(tables)),
            (
                "Attributes",
                SettingValue::TextList(attributes.iter().map(|a| a.to_string()).collect()),
            ),
            ("PageSize", SettingValue::Integer(2)),
            ("TimeOut", SettingValue::Integer(20)),
        ]);
        let cancel = CancellationToken::new();
        let conn = ConnectionRef {
            identifier: crate::ident::Ident::new("Dir"),
            settings: std::sync::Arc::new(s),
            cancel: cancel.clone(),
            mapped_columns: Vec::new(),
        };
        let tables: Tables = Default::default();
        let sink = RowSink::new(std::sync::Arc::new(MemoryOpener {
            tables: tables.clone(),
            cancel,
        }));
        let result = LdapPackage
            .export(&conn, ExportMode::Complete, sink)
            .await
            .map(|_| tables.lock().map(|t| t.clone()).unwrap_or_default());
        (result, server.searches())
    }

    fn people() -> J {
        json!([{"Table": "entries", "BaseDN": "ou=p"}])
    }

    /// The root DSE and the subschema (not readable), then `pages` for ou=p.
    fn script(
        pages: impl Fn(&fake::Search) -> fake::Answer + Send + Sync + 'static,
    ) -> fake::Script {
        std::sync::Arc::new(move |s: &fake::Search| match s.base.as_str() {
            "" => vec![(fake::done(0), None)],
            "cn=Subschema" => vec![(fake::done(32), None)],
            _ => pages(s),
        })
    }

    fn person(i: usize) -> Vec<u8> {
        fake::entry(
            &format!("cn=u{i},ou=p"),
            &[("cn", &[format!("u{i}").as_bytes()])],
        )
    }

    #[tokio::test]
    async fn paging_that_makes_no_progress_stops() {
        // Page 1: two entries and cookie c1; then no entry and c1 again, for ever.
        let (result, searches) = export_from(
            script(|s| match s.cookie.as_deref() {
                Some(b"c1") => vec![(fake::done(0), Some(fake::paged(b"c1")))],
                _ => vec![
                    (person(1), None),
                    (person(2), None),
                    (fake::done(0), Some(fake::paged(b"c1"))),
                ],
            }),
            &["cn"],
            people(),
        )
        .await;
        let e = result.expect_err("no progress");
        assert!(e.message.contains("no progress"), "{}", e.message);
        assert!(e.message.contains("after 2 entries"), "{}", e.message);
        // Root DSE, subschema, page 1, then MAX_STALLED_PAGES pages.
        assert_eq!(searches, 3 + MAX_STALLED_PAGES as usize);

        // New cookies every time, but never an entry: stopped after MAX_EMPTY_PAGES pages.
        let (result, searches) = export_from(
            script(|s| {
                let n = s.cookie.as_ref().map_or(0, |c| c.len());
                vec![(fake::done(0), Some(fake::paged(&vec![b'x'; n + 1])))]
            }),
            &["cn"],
            people(),
        )
        .await;
        let e = result.expect_err("no entries");
        assert!(
            e.message.contains("pages in a row with no entry"),
            "{}",
            e.message
        );
        assert_eq!(searches, 2 + MAX_EMPTY_PAGES as usize);
    }

    #[tokio::test]
    async fn every_page_result_code_is_checked() {
        for (rc, words) in [
            (4u8, "sizeLimitExceeded"),
            (11, "adminLimitExceeded"),
            (3, "timeLimitExceeded"),
            (80, "result code 80"),
        ] {
            // Page 2 ends with a limit but still hands out a cookie: no silent truncation.
            let (result, _) = export_from(
                script(move |s| match s.cookie.as_deref() {
                    Some(b"c1") => vec![
                        (person(3), None),
                        (fake::done(rc), Some(fake::paged(b"c2"))),
                    ],
                    Some(b"c2") => vec![(person(4), None), (fake::done(0), Some(fake::paged(b"")))],
                    _ => vec![
                        (person(1), None),
                        (person(2), None),
                        (fake::done(0), Some(fake::paged(b"c1"))),
                    ],
                }),
                &["cn"],
                people(),
            )
            .await;
            let e = result.expect_err("a limit on page 2");
            assert!(e.message.contains(words), "{rc}: {}", e.message);
        }
        // The same server without the limit: four rows.
        let (result, _) = export_from(
            script(|s| match s.cookie.as_deref() {
                Some(b"c1") => vec![(person(3), None), (fake::done(0), Some(fake::paged(b"c2")))],
                Some(b"c2") => vec![(person(4), None), (fake::done(0), Some(fake::paged(b"")))],
                _ => vec![
                    (person(1), None),
                    (person(2), None),
                    (fake::done(0), Some(fake::paged(b"c1"))),
                ],
            }),
            &["cn"],
            people(),
        )
        .await;
        let tables = result.expect("four rows");
        assert_eq!(tables["entries"].len(), 4);
        assert_eq!(tables["entries"][3][2], Value::Text("u4".into()));
    }

    #[tokio::test]
    async fn a_missing_or_malformed_paging_control_is_an_error() {
        // Page 2 without the control: the rest cannot be asked for.
        let (result, _) = export_from(
            script(|s| match s.cookie.as_deref() {
                Some(b"c1") => vec![(person(3), None), (fake::done(0), None)],
                _ => vec![(person(1), None), (fake::done(0), Some(fake::paged(b"c1")))],
            }),
            &["cn"],
            people(),
        )
        .await;
        let e = result.expect_err("no control on page 2");
        assert!(
            e.message.contains("without the paged-results control"),
            "{}",
            e.message
        );
        // A control whose value is not a SEQUENCE: an error, never a panic.
        let (result, _) = export_from(
            script(|_| {
                vec![
                    (person(1), None),
                    (fake::done(0), Some(fake::control(&[0x04, 0x00]))),
                ]
            }),
            &["cn"],
            people(),
        )
        .await;
        let e = result.expect_err("malformed control");
        assert!(
            e.message.contains("malformed paged-results control"),
            "{}",
            e.message
        );
        // A server that ignores paging: its one answer is the whole table.
        let (result, _) = export_from(
            script(|_| {
                vec![
                    (person(1), None),
                    (person(2), None),
                    (person(3), None),
                    (fake::done(0), None),
                ]
            }),
            &["cn"],
            people(),
        )
        .await;
        assert_eq!(result.expect("one answer")["entries"].len(), 3);
    }

    #[tokio::test]
    async fn ranged_values_are_completed_or_the_export_fails() {
        // cn=g,ou=p has member;range=0-1 in the search, the rest on request; `rest` answers the
        // follow-up for member;range=2-*.
        let run = |rest: fake::Answer| {
            let rest = std::sync::Arc::new(rest);
            export_from(
                script(move |s| {
                    if s.base == "cn=g,ou=p" {
                        assert_eq!(s.attrs, ["member;range=2-*"]);
                        return rest.as_ref().clone();
                    }
                    vec![
                        (
                            fake::entry(
                                "cn=g,ou=p",
                                &[("cn", &[b"g"]), ("member;range=0-1", &[b"u1", b"u2"])],
                            ),
                            None,
                        ),
                        (fake::done(0), Some(fake::paged(b""))),
                    ]
                }),
                &["cn", "member"],
                json!([{"Table": "entries", "BaseDN": "ou=p"}, {"Table": "member", "BaseDN": "ou=p"}]),
            )
        };
        let (result, _) = run(vec![
            (
                fake::entry("cn=g,ou=p", &[("member;range=2-*", &[b"u3"])]),
                None,
            ),
            (fake::done(0), None),
        ])
        .await;
        let tables = result.expect("complete");
        assert_eq!(
            tables["entries"][0][3],
            Value::Multi(vec![
                Value::Text("u1".into()),
                Value::Text("u2".into()),
                Value::Text("u3".into())
            ])
        );
        assert_eq!(tables["member"].len(), 3, "one link row per value");

        for (rest, words) in [
            (
                vec![
                    (fake::entry("cn=g,ou=p", &[("member", &[b"u3"])]), None),
                    (fake::done(0), None),
                ],
                "without a range",
            ),
            (
                vec![
                    (
                        fake::entry("cn=g,ou=p", &[("member;range=2-", &[b"u3"])]),
                        None,
                    ),
                    (fake::done(0), None),
                ],
                "malformed range",
            ),
            (
                vec![(fake::entry("cn=g,ou=p", &[]), None), (fake::done(0), None)],
                "returned no values",
            ),
            (vec![(fake::done(50), None)], "result code 50"),
        ] {
            let (result, _) = run(rest).await;
            let e = result.expect_err(words);
            assert!(e.message.contains(words), "{words}: {}", e.message);
            assert!(e.message.contains("cn=g,ou=p"), "{}", e.message);
        }
    }
}
