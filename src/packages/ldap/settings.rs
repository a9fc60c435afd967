//! The package's settings: the spec, and each connection's settings checked into a [`Config`]
//! (servers, tables, attribute columns, limits). Structured settings are read as every package
//! reads them ([`crate::packages::structured`]).

use super::*;
use crate::packages::structured::ListReader;

pub(super) const SETTINGS: &[SettingSpec] = &[
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
        description: "Most entries one table may read; a table with more fails the export (nothing is published). The server is asked for the same limit, over all the pages of a search. 0: no limit asked by the agent (the server's own limits still apply). Ignored, as documented, when the Servers list Controls.",
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

pub(super) static INFO: PackageInfo = PackageInfo {
    id: "Ldap",
    aliases: &["Usercube.LDAP@0000001", "LDAP"],
    category: Category::Directory,
    description: "LDAP directory (OpenLDAP, Active Directory, ...), read with paged searches",
    has_incremental: false,
    settings: SETTINGS,
};

/// The suffix of the entries table, and the `Table` value that names it.
pub(super) const ENTRIES: &str = "entries";
/// RFC 2696 simple paged results.
pub const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
pub(super) const MAX_PAGE_SIZE: i64 = 100_000;
pub(super) const MAX_SECONDS: i64 = 7 * 24 * 3600;
/// Ranged retrieval rounds for one attribute of one entry: 100 000 ranges of 1 500 values.
pub(super) const MAX_RANGE_ROUNDS: usize = 100_000;
/// Pages in a row that bring no entry and the very cookie they were asked with: the server makes
/// no progress, and asking again would loop forever.
pub const MAX_STALLED_PAGES: u32 = 3;
/// Pages in a row that bring no entry, whatever their cookies. Servers may answer a page with no
/// entry when a filter matches few of many entries (Active Directory), but not without end.
pub const MAX_EMPTY_PAGES: u32 = 1_000;
/// Distinct object classes the first pass of the schema-based columns keeps (memory bound).
pub(super) const MAX_OBJECT_CLASSES: usize = 10_000;
/// Root DSE attributes read by every connection (`test` reports them).
pub(super) const ROOT_DSE_ATTRS: &[&str] = &[
    "namingContexts",
    "supportedControl",
    "supportedLDAPVersion",
    "vendorName",
    "vendorVersion",
    "subschemaSubentry",
];
pub(super) const SERVER_KEYS: &[&str] = &[
    "Server",
    "AuthType",
    "Login",
    "Password",
    "EnableSSL",
    "StartTLS",
    "Controls",
    "NoSigning",
];
pub(super) const TABLE_KEYS: &[&str] = &["Table", "BaseDN", "Filter", "Scope"];
pub(super) const NEGOTIATE_MESSAGE: &str =
    "AuthType Negotiate (Kerberos/NTLM) is not supported on this platform: use Basic";

/// Attribute names whose values are binary whatever the server says (lower case).
pub(super) const KNOWN_BINARY: &[&str] = &[
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
pub(super) const BINARY_SYNTAXES: &[&str] = &[
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
pub(super) const PASSWORD_ATTRIBUTES: &[&str] = &[
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
pub(super) enum AuthType {
    Anonymous,
    Basic,
    Negotiate,
}

/// One item of `Servers`.
#[derive(Debug, Clone)]
pub(super) struct ServerConfig {
    /// The normalized URL (`ldap://host:389`), also the server's name in messages.
    pub(super) url: String,
    pub(super) auth: AuthType,
    pub(super) login: Option<String>,
    /// A `Password` written in the item itself. Refused by `check`; kept as a secret so that
    /// nothing can show it.
    pub(super) own_password: Option<Secret>,
    pub(super) start_tls: bool,
    /// `Controls` lists `DomainScope`: searches send the Active Directory domain-scope control
    /// (not critical: other servers ignore it).
    pub(super) domain_scope: bool,
    /// `Controls` is written: as documented, `SizeLimit` is then ignored.
    pub(super) lists_controls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScopeKind {
    Base,
    OneLevel,
    Subtree,
}

impl ScopeKind {
    pub(super) fn parse(s: &str) -> Option<ScopeKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "base" => Some(ScopeKind::Base),
            "onelevel" | "one" => Some(ScopeKind::OneLevel),
            "subtree" | "sub" => Some(ScopeKind::Subtree),
            _ => None,
        }
    }

    pub(super) fn ldap(self) -> ldap3::Scope {
        match self {
            ScopeKind::Base => ldap3::Scope::Base,
            ScopeKind::OneLevel => ldap3::Scope::OneLevel,
            ScopeKind::Subtree => ldap3::Scope::Subtree,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ScopeKind::Base => "Base",
            ScopeKind::OneLevel => "OneLevel",
            ScopeKind::Subtree => "Subtree",
        }
    }
}

/// One item of `Tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableConfig {
    /// `entries`, or the link attribute (also the table suffix and the second column).
    pub(super) name: String,
    pub(super) is_entries: bool,
    pub(super) base_dn: String,
    pub(super) filter: String,
    pub(super) scope: ScopeKind,
}

impl TableConfig {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Column {
    /// The CSV header: the attribute description without `;binary` / `;range=`.
    pub(super) name: String,
    /// `name` in lower case: how `Attributes` is checked for repeated names. (Returned
    /// attribute descriptions find their column through [`Subschema::key`], by OID.)
    pub(super) key: String,
    /// What the search asks for (`userCertificate;binary`, `2.5.4.3`).
    pub(super) request: String,
    /// Written as bytes (base64), every value of every row: from the name until the export
    /// knows the subschema, then [`Subschema::is_binary`].
    pub(super) binary: bool,
}

impl Column {
    pub(super) fn new(request: &str) -> Column {
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
pub(super) struct Config {
    pub(super) servers: Vec<ServerConfig>,
    pub(super) default_password: Option<Secret>,
    /// The entries table first, then the link tables in their order.
    pub(super) tables: Vec<TableConfig>,
    /// Empty: discovered from the entries.
    pub(super) attributes: Vec<Column>,
    pub(super) page_size: i32,
    pub(super) size_limit: i32,
    pub(super) time_limit: i32,
    pub(super) timeout: Option<Duration>,
    /// Notes for `validate` (warnings): the settings stay usable.
    pub(super) notes: Vec<Problem>,
}

impl Config {
    /// The configuration of a connection: its settings, and — when `Attributes` is empty — the
    /// columns that the EntityTypeMappings of `<connection>_entries` read.
    pub(super) fn for_connection(conn: &ConnectionRef) -> Result<Config, Vec<Problem>> {
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

    pub(super) fn load(settings: &Settings) -> Result<Config, Vec<Problem>> {
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
        let mut size_limit =
            int_setting(settings, "SizeLimit", 0, 0, i32::MAX as i64, &mut problems);
        // As documented: SizeLimit is ignored when the servers list Controls (paged searches).
        if size_limit > 0 && servers.iter().any(|s| s.lists_controls) {
            problems.push(Problem::note(
                Some("SizeLimit"),
                format!("SizeLimit {size_limit} is ignored: the Servers list Controls, and paged searches read every entry (as the documentation says)"),
                "remove SizeLimit, or remove Controls from Servers to have the limit enforced",
            ));
            size_limit = 0;
        }
        let time_limit = int_setting(settings, "TimeLimit", 0, 0, MAX_SECONDS, &mut problems);
        let timeout = int_setting(settings, "TimeOut", 30, 0, MAX_SECONDS, &mut problems);
        if problems.iter().any(|p| !p.warning) {
            return Err(problems);
        }
        Ok(Config {
            notes: problems,
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

    pub(super) fn entries_table(&self) -> Result<&TableConfig, PackageError> {
        self.tables
            .iter()
            .find(|t| t.is_entries)
            .ok_or_else(|| PackageError::config("Tables has no \"entries\" table"))
    }

    pub(super) fn timeout_text(&self) -> String {
        match self.timeout {
            Some(t) => format!("the TimeOut of {} seconds", t.as_secs()),
            None => "the TimeOut".to_string(),
        }
    }
}

pub(super) fn int_setting(
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

pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `ldap://host:port`, `ldaps://host:port` or `host[:port]` (EnableSSL choosing the scheme) as
/// a URL with an explicit port. Returns the URL and whether it is LDAPS.
pub(super) fn normalize_server(text: &str, enable_ssl: bool) -> Result<(String, bool), String> {
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
pub(super) fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
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
pub(super) fn parse_servers(
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
    if crate::packages::structured::items(value).is_empty() {
        problems.push(Problem::new(
            Some("Servers"),
            "Servers is an empty list",
            hint,
        ));
    }
    // Items are borrowed, not copied (but a server given as a bare name): one may hold a
    // password.
    let list =
        ListReader::new("Servers", &mut problems).objects(value, SERVER_KEYS, Some("Server"), hint);
    for m in list {
        let n = m.n;
        let mut problem = |message: String, hint: &str| {
            problems.push(Problem::new(
                Some("Servers"),
                format!("Servers item {n}: {message}"),
                hint,
            ))
        };
        // The password first, into a Secret, before anything else can copy or show it.
        let own_password = match m.get("Password") {
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
        let enable_ssl = m.boolean("EnableSSL").unwrap_or_else(|e| {
            problem(e, "write true or false");
            false
        });
        let start_tls = m.boolean("StartTLS").unwrap_or_else(|e| {
            problem(e, "write true or false");
            false
        });
        let login = m.text("Login").unwrap_or_else(|e| {
            problem(e, "write the bind DN (or user@domain) as text");
            None
        });
        let server_text = match m.text("Server") {
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
        let auth = match auth_type(m.get("AuthType"), login.is_some()) {
            Ok(a) => a,
            Err(message) => {
                problem(message, "use Anonymous or Basic", "Servers");
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
        for (message, hint) in control_problems(m.get("Controls")) {
            problem(message, hint, "Servers");
        }
        let controls = control_names(m.get("Controls"));
        let domain_scope = controls
            .iter()
            .any(|c| c.eq_ignore_ascii_case("DomainScope"));
        // NoSigning turns off Kerberos signing and sealing: it means something only with
        // AuthType Negotiate, which is not supported here; written as a boolean, it is accepted.
        if let Err(e) = m.boolean("NoSigning") {
            problem(e, "write true or false", "Servers");
        }
        servers.push(ServerConfig {
            url,
            auth,
            login,
            own_password,
            start_tls,
            domain_scope,
            lists_controls: m.get("Controls").is_some(),
        });
    }
    (servers, problems)
}

/// A server's `AuthType` (absent: Basic with a Login, else Anonymous).
fn auth_type(v: Option<&J>, has_login: bool) -> Result<AuthType, String> {
    match v {
        None if has_login => Ok(AuthType::Basic),
        None => Ok(AuthType::Anonymous),
        Some(J::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "anonymous" => Ok(AuthType::Anonymous),
            "basic" | "simple" => Ok(AuthType::Basic),
            "negotiate" | "kerberos" | "ntlm" => Ok(AuthType::Negotiate),
            other => Err(format!("unknown AuthType {other:?}")),
        },
        Some(_) => Err("AuthType must be text".to_string()),
    }
}

/// The names in a server's `Controls`.
fn control_names(v: Option<&J>) -> Vec<String> {
    match v {
        Some(J::Array(a)) => a
            .iter()
            .filter_map(J::as_str)
            .map(|s| s.trim().to_string())
            .collect(),
        Some(J::String(s)) => vec![s.trim().to_string()],
        _ => Vec::new(),
    }
}

/// The problems of a server's `Controls`: `PagedResult` (always used) and `DomainScope` (the
/// Active Directory control that keeps a search in one domain; it needs PagedResult, as
/// documented).
fn control_problems(v: Option<&J>) -> Vec<(String, &'static str)> {
    let Some(v) = v else {
        return Vec::new();
    };
    let names: Vec<Option<&str>> = match v {
        J::Array(a) => a.iter().map(J::as_str).collect(),
        other => vec![other.as_str()],
    };
    let paged =
        |c: &str| c.eq_ignore_ascii_case("PagedResult") || c.eq_ignore_ascii_case("PagedResults");
    let has_paged = names.iter().flatten().any(|c| paged(c.trim()));
    names
        .into_iter()
        .filter_map(|c| match c.map(str::trim) {
            Some(c) if paged(c) => None,
            Some(c) if c.eq_ignore_ascii_case("DomainScope") => (!has_paged).then(|| {
                (
                    "DomainScope needs PagedResult in the same Controls".to_string(),
                    "write \"Controls\": [\"PagedResult\", \"DomainScope\"]",
                )
            }),
            Some(c) => Some((
                format!("unknown control {c:?}"),
                "the controls are PagedResult (paged results are always used) and DomainScope",
            )),
            None => Some((
                "Controls must be a list of names".to_string(),
                "write \"Controls\": [\"PagedResult\"]",
            )),
        })
        .collect()
}

/// An attribute type (`cn`, `2.5.4.3`), with no options.
pub(super) fn is_attribute_type(s: &str) -> bool {
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
pub(super) fn is_attribute_description(s: &str) -> bool {
    let mut parts = s.split(';');
    parts.next().is_some_and(is_attribute_type)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

pub(super) fn filter_is_valid(filter: &str) -> bool {
    // The same parser ldap3 uses before sending a search.
    ldap3::parse_filter(filter).is_ok()
}

pub(super) fn parse_tables(value: Option<&J>) -> (Vec<TableConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    let hint = "write Tables as [{\"Table\": \"entries\", \"BaseDN\": \"ou=people,dc=example,dc=com\", \"Filter\": \"(objectClass=person)\"}, {\"Table\": \"member\", \"BaseDN\": \"ou=groups,dc=example,dc=com\"}]";
    let Some(value) = value else {
        problems.push(Problem::new(Some("Tables"), "Tables is not set", hint));
        return (Vec::new(), problems);
    };
    let mut tables: Vec<TableConfig> = Vec::new();
    let list = ListReader::new("Tables", &mut problems).objects(value, TABLE_KEYS, None, hint);
    for m in list {
        let n = m.n;
        let mut problem = |message: String, hint: &str| {
            problems.push(Problem::new(
                Some("Tables"),
                format!("Tables item {n}: {message}"),
                hint,
            ))
        };
        let name = match m.text("Table") {
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
                || crate::table_name::TableName::check_table(&name).is_err()
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
        let base_dn = m.text("BaseDN").unwrap_or_else(|e| {
            problem(e, "write BaseDN as text");
            None
        });
        if is_entries && base_dn.is_none() {
            problem(
                "BaseDN is missing".into(),
                "set BaseDN to the entry the search starts from, e.g. ou=people,dc=example,dc=com",
            );
        }
        let filter = match m.text("Filter") {
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
        let scope = match m.text("Scope") {
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

pub(super) fn parse_attributes(list: &[String]) -> (Vec<Column>, Vec<Problem>) {
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
