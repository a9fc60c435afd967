//! SqlClient connection strings (`Server=tcp:host,1433;Database=HR;User ID=...;Password=...`)
//! read into what the SQL Server packages need to connect.
//!
//! The `key=value;` syntax itself (quoting, doubled quotes, case- and space-insensitive keys) is
//! [`crate::packages::connstr`]'s; this module gives the keywords their SqlClient meaning.
//! Errors never repeat a value, and never name a keyword that follows the password (an unquoted
//! password holding `;` would otherwise show its tail as a "keyword").

use crate::packages::Problem;
use crate::packages::connstr::{ConnectionString, Part, Syntax};
use crate::secret::Secret;
use std::time::Duration;

/// Where the server is: a host and either a port or a named instance to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: Option<u16>,
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypt {
    /// `Encrypt=false|no|optional`: only the login is encrypted, when the server can.
    Optional,
    /// `Encrypt=true|yes|mandatory` (the default of Microsoft.Data.SqlClient 4 and later).
    Mandatory,
    /// `Encrypt=strict`: TDS 8.0, TLS before anything else.
    Strict,
}

/// A parsed SqlClient connection string. Debug shows no password.
#[derive(Clone)]
pub struct Target {
    pub address: Address,
    pub database: Option<String>,
    pub user: String,
    pub password: Secret,
    pub encrypt: Encrypt,
    pub trust_server_certificate: bool,
    pub host_name_in_certificate: Option<String>,
    pub connect_timeout: Duration,
    pub application_name: String,
    pub read_only_intent: bool,
    pub packet_size: Option<u32>,
    /// Keywords accepted and ignored (pooling and the like), for a validation note.
    pub ignored: Vec<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"(set)")
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `host,port`, `host\instance` or `host`, for messages.
    pub fn shown(&self) -> String {
        let a = &self.address;
        match (&a.instance, a.port) {
            (_, Some(p)) => format!("{},{p}", a.host),
            (Some(i), None) => format!("{}\\{i}", a.host),
            (None, None) => format!("{},1433", a.host),
        }
    }
}

const SERVER: &[&str] = &[
    "Data Source",
    "Server",
    "Address",
    "Addr",
    "Network Address",
];
const DATABASE: &[&str] = &["Initial Catalog", "Database"];
const USER: &[&str] = &["User ID", "UID", "User", "UserID"];
const PASSWORD: &[&str] = &["Password", "PWD"];

/// Keywords SqlClient knows that change nothing for a one-connection export agent.
const IGNORED: &[&str] = &[
    "Min Pool Size",
    "Max Pool Size",
    "Pooling",
    "Connection Lifetime",
    "Load Balance Timeout",
    "Connection Reset",
    "Enlist",
    "MultipleActiveResultSets",
    "MARS Connection",
    "Persist Security Info",
    "PersistSecurityInfo",
    "Connect Retry Count",
    "ConnectRetryCount",
    "Connect Retry Interval",
    "ConnectRetryInterval",
    "MultiSubnetFailover",
    "TransparentNetworkIPResolution",
    "Transparent Network IP Resolution",
    "Current Language",
    "Language",
    "Workstation ID",
    "WSID",
    "Type System Version",
    "Replication",
    "Pool Blocking Period",
    "PoolBlockingPeriod",
    "Command Timeout",
    "Failover Partner",
    "IP Address Preference",
];

/// Every keyword this parser gives a meaning to.
const KNOWN: &[&[&str]] = &[
    SERVER,
    DATABASE,
    USER,
    PASSWORD,
    &["Encrypt"],
    &["TrustServerCertificate", "Trust Server Certificate"],
    &["HostNameInCertificate", "Host Name In Certificate"],
    &["Connect Timeout", "Connection Timeout", "Timeout"],
    &["Application Name", "App"],
    &["ApplicationIntent", "Application Intent"],
    &["Packet Size"],
    &["Integrated Security", "Trusted_Connection"],
    &["Authentication"],
    &[
        "AttachDBFilename",
        "Extended Properties",
        "Initial File Name",
    ],
    &["User Instance"],
    &["Column Encryption Setting"],
];

fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_one_of(key: &str, names: &[&str]) -> bool {
    let k = norm(key);
    names.iter().any(|n| norm(n) == k)
}

fn boolean(cs: &ConnectionString, names: &'static [&'static str]) -> Result<Option<bool>, Problem> {
    match cs.plain(names) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => Ok(Some(true)),
            "false" | "no" => Ok(Some(false)),
            _ => Err(problem(
                format!("{} must be true or false", names[0]),
                format!("write {}=true or {}=false", names[0], names[0]),
            )),
        },
    }
}

fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem::new(Some("ConnectionString"), message, hint)
}

const HINT: &str = "write ConnectionString as Server=tcp:host,1433;Database=HR;User ID=agent;Password=...;Encrypt=true";

/// Reads a SqlClient connection string.
pub fn parse(cs: &ConnectionString) -> Result<Target, Problem> {
    if cs.syntax() != Syntax::Ado {
        return Err(problem(
            "the SQL Server connection string is not in SqlClient syntax (Key=value;...)",
            HINT,
        ));
    }
    let ignored = check_keywords(cs)?;
    refuse_unsupported(cs)?;
    let server = cs.plain(SERVER).ok_or_else(|| {
        problem(
            "the connection string names no server (Server or Data Source)",
            HINT,
        )
    })?;
    let address = parse_server(server)?;
    let database = cs
        .plain(DATABASE)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let user = cs
        .plain(USER)
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            problem(
                "the connection string names no user (User ID) for SQL authentication",
                HINT,
            )
        })?
        .to_string();
    let password = match cs.get(PASSWORD) {
        Some(Part::Secret(s)) => s.clone(),
        _ => Secret::new(String::new()),
    };
    let encrypt = match cs
        .plain(&["Encrypt"])
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Encrypt::Mandatory,
        Some(v) => match v.as_str() {
            "true" | "yes" | "mandatory" => Encrypt::Mandatory,
            "false" | "no" | "optional" => Encrypt::Optional,
            "strict" => Encrypt::Strict,
            _ => {
                return Err(problem(
                    "Encrypt must be true, false, mandatory, optional or strict",
                    "write Encrypt=true (or Encrypt=false on a trusted network)",
                ));
            }
        },
    };
    let trust_server_certificate =
        boolean(cs, &["TrustServerCertificate", "Trust Server Certificate"])?.unwrap_or(false);
    let host_name_in_certificate = cs
        .plain(&["HostNameInCertificate", "Host Name In Certificate"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let connect_timeout = match cs.plain(&["Connect Timeout", "Connection Timeout", "Timeout"]) {
        None => Duration::from_secs(15),
        Some(t) => match t.trim().parse::<u64>() {
            Ok(0) => Duration::from_secs(24 * 3600),
            Ok(s) if s <= 3600 => Duration::from_secs(s),
            _ => {
                return Err(problem(
                    "Connect Timeout must be a number of seconds from 0 to 3600",
                    "write Connect Timeout=15",
                ));
            }
        },
    };
    let application_name = cs
        .plain(&["Application Name", "App"])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("connagent")
        .to_string();
    let read_only_intent = match cs
        .plain(&["ApplicationIntent", "Application Intent"])
        .map(norm)
    {
        None => false,
        Some(v) if v == "readonly" => true,
        Some(v) if v == "readwrite" => false,
        Some(_) => {
            return Err(problem(
                "ApplicationIntent must be ReadOnly or ReadWrite",
                "write ApplicationIntent=ReadOnly to read from a readable secondary",
            ));
        }
    };
    let packet_size = match cs.plain(&["Packet Size"]) {
        None => None,
        Some(p) => match p.trim().parse::<u32>() {
            Ok(n) if (512..=32767).contains(&n) => Some(n),
            _ => {
                return Err(problem(
                    "Packet Size must be a number of bytes from 512 to 32767",
                    "remove Packet Size, or write Packet Size=8000",
                ));
            }
        },
    };
    Ok(Target {
        address,
        database,
        user,
        password,
        encrypt,
        trust_server_certificate,
        host_name_in_certificate,
        connect_timeout,
        application_name,
        read_only_intent,
        packet_size,
        ignored,
    })
}

/// Every keyword is known (or ignored with a note: returned); anything else is an error.
fn check_keywords(cs: &ConnectionString) -> Result<Vec<String>, Problem> {
    let keys: Vec<&str> = cs.keys().collect();
    let mut ignored = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if KNOWN.iter().any(|names| is_one_of(key, names)) {
            continue;
        }
        if IGNORED.iter().any(|n| norm(n) == norm(key)) {
            ignored.push((*key).to_string());
            continue;
        }
        let after_password = i > 0 && is_one_of(keys[i - 1], PASSWORD);
        return Err(if after_password {
            problem(
                format!(
                    "part {} of the connection string (counting parts separated by ';') is not a SqlClient keyword",
                    i + 1
                ),
                "if the password holds ';', quote it: Password=\"p;ss\" (a '\"' inside is doubled)",
            )
        } else {
            problem(
                format!("the keyword {key:?} is not a SqlClient keyword that connagent knows"),
                "check its spelling; known: Server, Database, User ID, Password, Encrypt, TrustServerCertificate, HostNameInCertificate, Connect Timeout, Application Name, ApplicationIntent, Packet Size",
            )
        });
    }
    Ok(ignored)
}

/// Refuses what this platform cannot do: Windows and Azure AD authentication, LocalDB features,
/// Always Encrypted.
fn refuse_unsupported(cs: &ConnectionString) -> Result<(), Problem> {
    if let Some(v) = cs.plain(&["Integrated Security", "Trusted_Connection"]) {
        let v = v.trim().to_ascii_lowercase();
        if v == "true" || v == "yes" || v == "sspi" {
            return Err(problem(
                "Integrated Security (Windows authentication) is not supported on this platform: use SQL authentication",
                "remove Integrated Security/Trusted_Connection and give User ID and Password of a SQL Server login",
            ));
        }
        if v != "false" && v != "no" {
            return Err(problem(
                "Integrated Security must be true, false or SSPI",
                "remove it and use SQL authentication (User ID and Password)",
            ));
        }
    }
    if let Some(a) = cs.plain(&["Authentication"]) {
        let a = norm(a);
        if a != "sqlpassword" {
            return Err(problem(
                "only Authentication=SqlPassword is supported on this platform (Azure AD and Windows authentication are not)",
                "remove Authentication, and give User ID and Password of a SQL Server login",
            ));
        }
    }
    for (names, what) in [
        (
            &[
                "AttachDBFilename",
                "Extended Properties",
                "Initial File Name",
            ][..],
            "AttachDBFilename",
        ),
        (&["User Instance"][..], "User Instance"),
    ] {
        if cs
            .plain(names)
            .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("false"))
        {
            return Err(problem(
                format!("{what} is a LocalDB feature and is not supported"),
                "connect to a SQL Server instance by Server=host,port",
            ));
        }
    }
    if cs
        .plain(&["Column Encryption Setting"])
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled"))
    {
        return Err(problem(
            "Always Encrypted (Column Encryption Setting=Enabled) is not supported",
            "remove Column Encryption Setting; encrypted columns are exported as their ciphertext (binary)",
        ));
    }
    Ok(())
}

/// `tcp:host,port`, `host\instance`, `host`, `.`, `(local)`, `[::1],1433`.
pub fn parse_server(text: &str) -> Result<Address, Problem> {
    let mut s = text.trim();
    if let Some((proto, rest)) = s.split_once(':') {
        match proto.trim().to_ascii_lowercase().as_str() {
            "tcp" => s = rest.trim(),
            "np" | "lpc" | "admin" => {
                return Err(problem(
                    format!(
                        "the server protocol {:?} (named pipes, shared memory, DAC) is not supported: only TCP",
                        proto.trim()
                    ),
                    "write Server=tcp:host,1433",
                ));
            }
            // An IPv6 address or `host:...` that is no protocol prefix: leave it as is.
            _ => {}
        }
    }
    if s.to_ascii_lowercase().starts_with("(localdb)") {
        return Err(problem(
            "LocalDB is not available on this platform",
            "connect to a SQL Server instance by Server=host,port",
        ));
    }
    let (hostinst, port) = match s.rsplit_once(',') {
        Some((h, p)) => {
            let p = p.trim();
            let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                problem(
                    "the port after ',' in Server is not a number from 1 to 65535",
                    "write Server=host,1433",
                )
            })?;
            (h.trim(), Some(port))
        }
        None => (s, None),
    };
    let (host, instance) = match hostinst.split_once('\\') {
        Some((h, i)) => {
            let i = i.trim();
            if i.is_empty() {
                return Err(problem(
                    "Server has a '\\' but no instance name after it",
                    "write Server=host\\INSTANCE or Server=host,port",
                ));
            }
            (h.trim(), Some(i.to_string()))
        }
        None => (hostinst, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host.to_ascii_lowercase().as_str() {
        "" => {
            return Err(problem("Server names no host", "write Server=host,1433"));
        }
        "." | "(local)" | "localhost" => "localhost".to_string(),
        _ => host.to_string(),
    };
    if host.contains(char::is_whitespace) {
        return Err(problem(
            "the host in Server contains a space",
            "write Server=host,1433",
        ));
    }
    // A port given explicitly wins over the instance (as SqlClient does).
    let instance = if port.is_some() { None } else { instance };
    Ok(Address {
        host,
        port,
        instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Result<Target, String> {
        let cs = ConnectionString::parse(text)?;
        parse(&cs).map_err(|p| format!("{} ({})", p.message, p.hint))
    }

    #[test]
    fn servers() {
        let table: &[(&str, &str, Option<u16>, Option<&str>)] = &[
            ("tcp:db.example,1433", "db.example", Some(1433), None),
            ("db.example", "db.example", None, None),
            (" TCP:db , 14330 ", "db", Some(14330), None),
            ("db\\HR", "db", None, Some("HR")),
            ("db\\HR,1500", "db", Some(1500), None),
            (".", "localhost", None, None),
            ("(local)\\SQLEXPRESS", "localhost", None, Some("SQLEXPRESS")),
            ("[::1],1433", "::1", Some(1433), None),
            ("10.0.0.5,1433", "10.0.0.5", Some(1433), None),
        ];
        for (text, host, port, inst) in table {
            let a = parse_server(text).unwrap_or_else(|p| panic!("{text}: {}", p.message));
            assert_eq!(a.host, *host, "{text}");
            assert_eq!(a.port, *port, "{text}");
            assert_eq!(a.instance.as_deref(), *inst, "{text}");
        }
        for bad in [
            "np:\\\\.\\pipe\\sql",
            "lpc:.",
            "db,",
            "db,99999",
            "db,0",
            "db\\",
            "(localdb)\\MSSQLLocalDB",
            ",1433",
            "my host,1",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keywords_and_their_meaning() {
        let t = target(
            "data source = tcp:db,1433 ; initial catalog=HR; user id=agent; pwd='p;a''ss'; encrypt=Optional; \
             TrustServerCertificate=yes; Connect Timeout=5; Application Name=\"HR;export\"; ApplicationIntent=ReadOnly; \
             Min Pool Size=10; Pooling=false; MultipleActiveResultSets=True; Packet Size=8000",
        )
        .unwrap();
        assert_eq!(t.address.host, "db");
        assert_eq!(t.database.as_deref(), Some("HR"));
        assert_eq!(t.user, "agent");
        assert_eq!(t.password.expose(), "p;a'ss");
        assert_eq!(t.encrypt, Encrypt::Optional);
        assert!(t.trust_server_certificate);
        assert_eq!(t.connect_timeout, Duration::from_secs(5));
        assert_eq!(t.application_name, "HR;export");
        assert!(t.read_only_intent);
        assert_eq!(t.packet_size, Some(8000));
        assert_eq!(
            t.ignored,
            ["Min Pool Size", "Pooling", "MultipleActiveResultSets"]
        );
        assert!(!format!("{t:?}").contains("p;a"));
        // Defaults: Encrypt mandatory, 15 s, connagent.
        let t = target("Server=db;UID=u;Password=x").unwrap();
        assert_eq!(t.encrypt, Encrypt::Mandatory);
        assert_eq!(t.connect_timeout, Duration::from_secs(15));
        assert_eq!(t.application_name, "connagent");
        assert_eq!(
            target("Server=db;UID=u;PWD=x;Encrypt=strict")
                .unwrap()
                .encrypt,
            Encrypt::Strict
        );
        assert_eq!(
            target("Server=db;UID=u;PWD=x;Encrypt=no").unwrap().encrypt,
            Encrypt::Optional
        );
    }

    #[test]
    fn hostile_and_unsupported_inputs_are_clear_and_never_show_the_password() {
        let cases: &[(&str, &str)] = &[
            (
                "Server=db;Integrated Security=SSPI",
                "not supported on this platform: use SQL authentication",
            ),
            (
                "Server=db;Trusted_Connection=Yes",
                "not supported on this platform: use SQL authentication",
            ),
            (
                "Server=db;UID=u;PWD=x;Authentication=ActiveDirectoryPassword",
                "only Authentication=SqlPassword",
            ),
            ("Server=db;UID=u;PWD=x;Encrypt=maybe", "Encrypt must be"),
            (
                "Server=db;UID=u;PWD=x;TrustServerCertificate=si",
                "TrustServerCertificate must be",
            ),
            (
                "Server=db;UID=u;PWD=x;Connect Timeout=soon",
                "Connect Timeout must be",
            ),
            (
                "Server=db;UID=u;PWD=x;ApplicationIntent=Maybe",
                "ApplicationIntent must be",
            ),
            (
                "Server=db;Databse=HR;UID=u;PWD=x",
                "\"Databse\" is not a SqlClient keyword",
            ),
            ("Database=HR;UID=u;PWD=x", "names no server"),
            ("Server=db;PWD=x", "names no user"),
            ("Server=np:\\\\db\\pipe\\sql\\query;UID=u;PWD=x", "only TCP"),
            (
                "Server=db;UID=u;PWD=x;AttachDBFilename=|DataDirectory|\\a.mdf",
                "LocalDB feature",
            ),
            ("Server=db;UID=u;PWD=x;Packet Size=1", "Packet Size must be"),
            (
                "Server=db;UID=u;Column Encryption Setting=Enabled;PWD=x",
                "Always Encrypted",
            ),
        ];
        for (text, want) in cases {
            let e = target(text)
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"));
            assert!(e.contains(want), "{text}: {e}");
        }
        // An unquoted ';' in the password: the tail is neither parsed as a keyword nor shown.
        for text in [
            "Server=db;UID=u;Password=abc;secret-tail=1",
            "Server=db;UID=u;Password=abc;secret tail=1;Database=x",
        ] {
            let e = target(text).err().unwrap_or_default();
            assert!(
                !e.contains("secret") && !e.contains("abc") && e.contains("quote it"),
                "{e}"
            );
        }
        let e = ConnectionString::parse("Server=db;Password=abc;secret-tail")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("secret") && !e.contains("abc"), "{e}");
        // Other syntaxes are refused for SQL Server.
        assert!(
            target("sqlserver://u:p@db/x")
                .unwrap_err()
                .contains("SqlClient syntax")
        );
    }
}
