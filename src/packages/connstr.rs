//! Connection strings in the ADO.NET `key=value;` syntax, with secret parts kept as [`Secret`]s.
//!
//! Keys are case-insensitive and may contain spaces (`Data Source`); values may be quoted with `'`
//! or `"`, a doubled quote inside standing for one; `;` inside a quoted value is kept. A key that
//! names a password (`Password`, `PWD`) holds a secret: it is never shown, only `(set)`.

use crate::secret::{SET_MARKER, Secret};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

#[derive(Clone)]
pub enum Part {
    Plain(String),
    Secret(Secret),
    /// A keyword given as a secured option (`ConnectionStringOptions`): read like a plain value
    /// by the package, but never shown (`(set)`) in listings, gRPC or the redacted form, and
    /// held like a secret.
    Hidden(Secret),
}

/// How a connection string was written; kept so it can be shown the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Syntax {
    /// `Key=value;Key2='quoted; value'` (ADO.NET, SqlClient, Npgsql).
    #[default]
    Ado,
    /// `key=value key2='quoted value'` (libpq).
    Libpq,
    /// `scheme://user:password@host:port/database?key=value` (URL).
    Url,
}

#[derive(Clone, Default)]
pub struct ConnectionString {
    parts: Vec<(String, Part)>,
    syntax: Syntax,
    /// For URLs: the scheme (`postgresql`).
    scheme: String,
}

/// Plain values are wiped too: a parse in the wrong syntax (tried, then dropped) can hold a
/// password inside a plain value (`host=db;password=...` read as one libpq value).
impl Drop for ConnectionString {
    fn drop(&mut self) {
        for (_, p) in &mut self.parts {
            if let Part::Plain(v) = p {
                v.zeroize();
            }
        }
    }
}

/// Words that make a keyword's value a secret, compared without case and spaces: a keyword that
/// holds one of them anywhere (`Password`, `PWD`, libpq's `sslpassword`, `Client Secret`, and a
/// damaged `agent password`) holds a secret.
const SECRET_KEYS: &[&str] = &[
    "password",
    "pwd",
    // Npgsql's alias of Password.
    "psw",
    "accountkey",
    "sharedaccesskey",
    "secret",
    "token",
];

/// Whether a keyword names a secret (see [`SECRET_KEYS`]).
fn is_secret_key(key: &str) -> bool {
    let n = normalize(key);
    SECRET_KEYS.iter().any(|k| n.contains(k))
}

/// libpq's connection keywords (PostgreSQL 17 `libpq-connect` "Parameter Key Words").
const LIBPQ_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Whether a value holds `password=` (or another secret keyword followed by `=`), spaces and
/// case aside: a connection string damaged so that a password ended up inside another value.
fn holds_secret_assignment(value: &str) -> bool {
    let squeezed: String = value
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS
        .iter()
        .any(|k| squeezed.contains(&format!("{k}=")))
}

/// A buffer for one value of `text`: large enough that it never reallocates (which would leave
/// a copy of a password behind), and wiped if it is dropped before its value is taken.
fn value_buffer(text: &str) -> Zeroizing<String> {
    Zeroizing::new(String::with_capacity(text.len()))
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl ConnectionString {
    /// Parses `text` in whichever syntax it is written: a URL (`scheme://`), ADO.NET (`;`
    /// separated), or libpq (space separated `key=value`). The error says what is wrong without
    /// repeating any value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some((scheme, rest)) = t.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        {
            return Self::parse_url(scheme, rest);
        }
        // libpq only when every keyword is one of libpq's (they are lower case): deciding by the
        // presence of ';' alone would read `host=h password=a;b` as ADO.NET and put the password
        // into the plain value of `host`. The other way round, `host=db;password=pw` (ADO.NET
        // with lower-case keywords) read as libpq puts the password into the plain value of
        // `host`: a plain value holding ';' means ADO.NET, when the text parses so.
        if let Ok(cs) = Self::parse_libpq(t)
            && cs
                .parts
                .iter()
                .all(|(k, _)| LIBPQ_KEYS.contains(&k.as_str()))
        {
            let ado_like = cs.parts.iter().any(|(k, p)| match p {
                Part::Plain(v) => v.contains(';'),
                // A value kept secret because it holds a password assignment.
                Part::Secret(v) => !is_secret_key(k) && v.expose().contains(';'),
                Part::Hidden(_) => false,
            });
            if ado_like && let Ok(ado) = Self::parse_ado(text) {
                return Ok(ado);
            }
            return Ok(cs);
        }
        Self::parse_ado(text)
    }

    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    fn part(key: &str, value: String) -> (String, Part) {
        // A value that itself holds a password assignment (a damaged string, a quote in the
        // wrong place: `host="db password=...`) is kept as a secret too: never shown, masked.
        let p = if is_secret_key(key) || holds_secret_assignment(&value) {
            Part::Secret(Secret::new(value))
        } else {
            Part::Plain(value)
        };
        (key.to_string(), p)
    }

    /// `key=value` pairs separated by spaces; values may be single-quoted with `\'` and `\\`.
    fn parse_libpq(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        let mut n = 0;
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            n += 1;
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    break;
                }
                key.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.next() != Some('=') || key.is_empty() {
                return Err(format!("part {n} is not key=value"));
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = value_buffer(text);
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                value.push(e);
                            }
                        }
                        '\'' => {
                            closed = true;
                            break;
                        }
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err(format!(
                        "the value of part {n} opens a quote that is never closed"
                    ));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        if let Some(e) = chars.next() {
                            value.push(e);
                        }
                        continue;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            parts.push(Self::part(&key, std::mem::take(&mut *value)));
        }
        if parts.is_empty() {
            return Err("the connection string is empty".into());
        }
        Ok(ConnectionString {
            parts,
            syntax: Syntax::Libpq,
            scheme: String::new(),
        })
    }

    /// `user:password@host:port/database?key=value&...` after `scheme://`, percent-decoded.
    fn parse_url(scheme: &str, rest: &str) -> Result<Self, String> {
        let decode = |s: &str, what: &str| -> Result<String, String> {
            let bytes = s.as_bytes();
            let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = s
                        .get(i + 1..i + 3)
                        .ok_or_else(|| format!("the {what} has a bad %-escape"))?;
                    out.push(
                        u8::from_str_radix(hex, 16)
                            .map_err(|_| format!("the {what} has a bad %-escape"))?,
                    );
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(std::mem::take(&mut *out)).map_err(|e| {
                e.into_bytes().zeroize();
                format!("the {what} is not UTF-8 once decoded")
            })
        };
        // The user information ends at the LAST '@': a password written without %-escapes may
        // hold '/', '?', '#', ':' or '@', and splitting at those first would put pieces of it
        // into the host or the database name, which are shown. (A '@' in a query parameter
        // then makes the whole text before it secret: the safe way to be wrong.)
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let after = after.split_once('#').map_or(after, |(a, _)| a);
        let (before_query, query) = match after.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (after, None),
        };
        let (hostport, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };
        let mut parts = Vec::new();
        if let Some(userinfo) = userinfo {
            match userinfo.split_once(':') {
                Some((u, pw)) => {
                    parts.push(Self::part("user", decode(u, "user name")?));
                    parts.push(Self::part("password", decode(pw, "password")?));
                }
                None => parts.push(Self::part("user", decode(userinfo, "user name")?)),
            }
        }
        if !hostport.is_empty() {
            let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
                match inner.split_once(']') {
                    Some((h, p)) => (h, p.strip_prefix(':')),
                    None => return Err("the host has an unclosed '['".into()),
                }
            } else {
                match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (hostport, None),
                }
            };
            parts.push(Self::part("host", decode(host, "host")?));
            if let Some(p) = port.filter(|p| !p.is_empty()) {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("the port after the host is not a number".into());
                }
                parts.push(Self::part("port", p.to_string()));
            }
        }
        if let Some(db) = path.filter(|p| !p.is_empty()) {
            parts.push(Self::part("dbname", decode(db, "database name")?));
        }
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            parts.push(Self::part(
                &decode(k, "parameter name")?,
                decode(v, "parameter value")?,
            ));
        }
        Ok(ConnectionString {
            parts,
            syntax: Syntax::Url,
            scheme: scheme.to_string(),
        })
    }

    fn parse_ado(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        // Errors name the part by its position, never by its text: a password holding an
        // unquoted ';' would otherwise show its tail as a "keyword".
        let mut n = 0usize;
        loop {
            n += 1;
            // Key: up to '=' (a doubled '==' is a literal '=' in ADO.NET; accepted here too).
            let mut key = String::new();
            let mut saw_eq = false;
            while let Some(&c) = chars.peek() {
                if c == '=' {
                    chars.next();
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        key.push('=');
                        continue;
                    }
                    saw_eq = true;
                    break;
                }
                if c == ';' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            let key = key.trim().to_string();
            if !saw_eq {
                chars.next();
                if key.is_empty() {
                    if chars.peek().is_none() {
                        break;
                    }
                    continue;
                }
                return Err(format!(
                    "part {n} (counting parts separated by ';') has no '='; quote values that contain ';'"
                ));
            }
            if key.is_empty() {
                return Err(format!("part {n} starts with '=' and has no keyword"));
            }
            // Value.
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = value_buffer(text);
            match chars.peek().copied() {
                Some(q @ ('"' | '\'')) => {
                    chars.next();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == q {
                            if chars.peek() == Some(&q) {
                                chars.next();
                                value.push(q);
                                continue;
                            }
                            closed = true;
                            break;
                        }
                        value.push(c);
                    }
                    if !closed {
                        // Named by position: a damaged string can put secret text in a key.
                        return Err(format!(
                            "the value of part {n} opens a quote that is never closed"
                        ));
                    }
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    match chars.next() {
                        None | Some(';') => {}
                        Some(_) => {
                            return Err(format!(
                                "the quoted value of part {n} is followed by text before ';'"
                            ));
                        }
                    }
                }
                _ => {
                    for c in chars.by_ref() {
                        if c == ';' {
                            break;
                        }
                        value.push(c);
                    }
                    let kept = value.trim_end().len();
                    value.truncate(kept);
                }
            }
            parts.push(Self::part(&key, std::mem::take(&mut *value)));
            if chars.peek().is_none() {
                break;
            }
        }
        Ok(ConnectionString {
            parts,
            syntax: Syntax::Ado,
            scheme: String::new(),
        })
    }

    /// The last value given for a keyword (any of `names`), compared without case and spaces.
    pub fn get(&self, names: &[&str]) -> Option<&Part> {
        let wanted: Vec<String> = names.iter().map(|n| normalize(n)).collect();
        self.parts
            .iter()
            .rev()
            .find(|(k, _)| wanted.contains(&normalize(k)))
            .map(|(_, v)| v)
    }

    /// A plain (non-secret) value.
    pub fn plain(&self, names: &[&str]) -> Option<&str> {
        match self.get(names)? {
            Part::Plain(s) => Some(s),
            Part::Hidden(s) => Some(s.expose()),
            Part::Secret(_) => None,
        }
    }

    /// Merges secured key-value options into the connection string: each replaces the keyword
    /// of the same name (compared without case and spaces) or is added. Password keywords become
    /// secrets; every other keyword is hidden from what is shown.
    pub fn merge_secured_options(&mut self, options: Vec<(String, Secret)>) {
        for (key, value) in options {
            let part = if is_secret_key(&key) {
                Part::Secret(value)
            } else {
                Part::Hidden(value)
            };
            let n = normalize(&key);
            self.parts.retain(|(k, _)| normalize(k) != n);
            self.parts.push((key, part));
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|(k, _)| k.as_str())
    }

    /// The password parts. (Hidden keywords are held as secrets too, but they are not masked in
    /// messages: they are ordinary words such as `true` or a database name.)
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.parts.iter().filter_map(|(_, p)| match p {
            Part::Secret(s) => Some(s),
            Part::Plain(_) | Part::Hidden(_) => None,
        })
    }

    /// The connection string with every secret part replaced by `(set)`, in its own syntax.
    pub fn redacted(&self) -> String {
        let shown = |p: &Part| match p {
            Part::Plain(v) => v.clone(),
            Part::Secret(_) | Part::Hidden(_) => SET_MARKER.to_string(),
        };
        match self.syntax {
            Syntax::Ado => self
                .parts
                .iter()
                .map(|(k, p)| match p {
                    Part::Plain(v) if v.contains([';', '"', '\'']) || v.trim() != v => {
                        format!("{k}=\"{}\"", v.replace('"', "\"\""))
                    }
                    Part::Plain(v) => format!("{k}={v}"),
                    Part::Secret(_) | Part::Hidden(_) => format!("{k}={SET_MARKER}"),
                })
                .collect::<Vec<_>>()
                .join(";"),
            Syntax::Libpq => self
                .parts
                .iter()
                .map(|(k, p)| {
                    let v = shown(p);
                    if v.is_empty() || v.contains([' ', '\'', '\\']) {
                        format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Syntax::Url => {
                let get = |k: &str| {
                    self.parts
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, p)| shown(p))
                };
                let mut out = format!("{}://", self.scheme);
                if let Some(u) = get("user") {
                    out.push_str(&u);
                    if let Some(pw) = get("password") {
                        out.push(':');
                        out.push_str(&pw);
                    }
                    out.push('@');
                }
                out.push_str(&get("host").unwrap_or_default());
                if let Some(p) = get("port") {
                    out.push(':');
                    out.push_str(&p);
                }
                if let Some(db) = get("dbname") {
                    out.push('/');
                    out.push_str(&db);
                }
                let params: Vec<String> = self
                    .parts
                    .iter()
                    .filter(|(k, _)| {
                        !["user", "password", "host", "port", "dbname"].contains(&k.as_str())
                    })
                    .map(|(k, p)| format!("{k}={}", shown(p)))
                    .collect();
                if !params.is_empty() {
                    out.push('?');
                    out.push_str(&params.join("&"));
                }
                out
            }
        }
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionString({:?})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_values_and_hides_passwords() {
        let cs = ConnectionString::parse(
            "Data Source = db.sqlite ; pwd='p;a''ss' ;Application Name=\"x\"\"y\";",
        )
        .unwrap();
        assert_eq!(cs.plain(&["DataSource"]), Some("db.sqlite"));
        assert_eq!(cs.plain(&["application name"]), Some("x\"y"));
        match cs.get(&["Password", "PWD"]) {
            Some(Part::Secret(s)) => assert_eq!(s.expose(), "p;a'ss"),
            _ => panic!("password part not found"),
        }
        let shown = format!("{} {cs:?}", cs.redacted());
        assert!(!shown.contains("p;a"), "{shown}");
        assert!(shown.contains("pwd=(set)"), "{shown}");
    }

    #[test]
    fn table_of_bad_inputs() {
        for bad in ["Data Source", "=x", "a='unclosed", "a='x' y;b=1"] {
            let e = ConnectionString::parse(bad).err();
            assert!(e.is_some(), "{bad:?} parsed");
        }
        for ok in ["", ";", "a=1;;b=2", "a=;b=2", "a==b=c"] {
            assert!(ConnectionString::parse(ok).is_ok(), "{ok:?}");
        }
        // A password with an unquoted ';': the error must not show its tail.
        let e = ConnectionString::parse("Data Source=x;Password=ab;secret-tail")
            .err()
            .unwrap_or_default();
        assert!(e.contains("part 3") && !e.contains("secret-tail"), "{e}");
        // With ';', the ADO.NET syntax: "==" is a literal '=' in a keyword.
        let cs = ConnectionString::parse("a==b=c;x=1").unwrap();
        assert_eq!(cs.plain(&["a=b"]), Some("c"));
    }

    #[test]
    fn urls_and_libpq() {
        let cs =
            ConnectionString::parse("postgresql://agent:p%40ss@db.example:5433/hr?sslmode=require")
                .unwrap();
        assert_eq!(cs.syntax(), Syntax::Url);
        assert_eq!(cs.plain(&["host"]), Some("db.example"));
        assert_eq!(cs.plain(&["port"]), Some("5433"));
        assert_eq!(cs.plain(&["dbname"]), Some("hr"));
        assert_eq!(cs.plain(&["sslmode"]), Some("require"));
        assert!(matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == "p@ss"));
        assert_eq!(
            cs.redacted(),
            "postgresql://agent:(set)@db.example:5433/hr?sslmode=require"
        );
        let cs = ConnectionString::parse("host=127.0.0.1 port=5432 password='a b\\'c' dbname=x")
            .unwrap();
        assert_eq!(cs.syntax(), Syntax::Libpq);
        assert!(matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == "a b'c"));
        assert_eq!(
            cs.redacted(),
            "host=127.0.0.1 port=5432 password=(set) dbname=x"
        );
        // ADO.NET with lower-case libpq keywords: the password is not read into `host`.
        let cs = ConnectionString::parse("host=db;password=pw-canary;dbname=x").unwrap();
        assert_eq!(cs.syntax(), Syntax::Ado);
        assert_eq!(cs.plain(&["host"]), Some("db"));
        assert!(
            matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == "pw-canary")
        );
        assert!(!cs.redacted().contains("canary"), "{}", cs.redacted());
        // A libpq value that holds ';' stays libpq when the text is not ADO.NET.
        let cs = ConnectionString::parse("host=h application_name='a;b' password=x;y").unwrap();
        assert_eq!(cs.syntax(), Syntax::Libpq);
        assert_eq!(cs.plain(&["application_name"]), Some("a;b"));
        assert!(matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == "x;y"));
        // Unescaped '/', '?', '#', '@', ':' in a URL password stay in the password.
        for raw in ["p/w", "p?w", "p#w", "p@w", "p:w", "a/b?c#d@e"] {
            let cs = ConnectionString::parse(&format!(
                "postgresql://agent:{raw}@db.example:5433/hr?sslmode=require"
            ))
            .unwrap();
            assert!(
                matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == raw),
                "{raw}"
            );
            assert_eq!(
                cs.redacted(),
                "postgresql://agent:(set)@db.example:5433/hr?sslmode=require",
                "{raw}"
            );
        }
        let e = ConnectionString::parse("postgresql://u:pw@h:5x32/db")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("port") && !e.contains("5x32") && !e.contains("pw"),
            "{e}"
        );
        // libpq with ';' in a password (quoted or not) stays libpq.
        for (text, pw) in [
            ("host=h password=ab;cd dbname=x", "ab;cd"),
            ("host=h password='a;b c' dbname=x", "a;b c"),
            ("host=h user=u password=x;y=z", "x;y=z"),
        ] {
            let cs = ConnectionString::parse(text).unwrap();
            assert_eq!(cs.syntax(), Syntax::Libpq, "{text}");
            assert!(
                matches!(cs.get(&["password"]), Some(Part::Secret(s)) if s.expose() == pw),
                "{text}"
            );
            assert!(!cs.redacted().contains(pw), "{}", cs.redacted());
        }
        // ADO stays ADO, also without ';'.
        let cs = ConnectionString::parse("Data Source=demo/hr.db").unwrap();
        assert_eq!(cs.syntax(), Syntax::Ado);
        assert_eq!(cs.plain(&["data source"]), Some("demo/hr.db"));
        let cs =
            ConnectionString::parse("Host=h;Port=5;Username=u;Password=secret;SSL Mode=Disable")
                .unwrap();
        assert_eq!(cs.syntax(), Syntax::Ado);
        assert_eq!(
            cs.redacted(),
            "Host=h;Port=5;Username=u;Password=(set);SSL Mode=Disable"
        );
    }
}
