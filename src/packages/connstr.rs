//! Connection strings in the ADO.NET `key=value;` syntax, with secret parts kept as [`Secret`]s.
//!
//! Keys are case-insensitive and may contain spaces (`Data Source`); values may be quoted with `'`
//! or `"`, a doubled quote inside standing for one; `;` inside a quoted value is kept. A key that
//! names a password (`Password`, `PWD`) holds a secret: it is never shown, only `(set)`.

use crate::secret::{SET_MARKER, Secret};
use std::fmt;

#[derive(Clone)]
pub enum Part {
    Plain(String),
    Secret(Secret),
}

#[derive(Clone, Default)]
pub struct ConnectionString {
    parts: Vec<(String, Part)>,
}

/// Keys whose values are secrets, compared without case and spaces.
const SECRET_KEYS: &[&str] = &["password", "pwd", "accountkey", "sharedaccesskey"];

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl ConnectionString {
    /// Parses `text`. The error says what is wrong without repeating any value.
    pub fn parse(text: &str) -> Result<Self, String> {
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
            let mut value = String::new();
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
                        return Err(format!(
                            "the value of {key:?} opens a quote that is never closed"
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
                    value = value.trim_end().to_string();
                }
            }
            let part = if SECRET_KEYS.contains(&normalize(&key).as_str()) {
                Part::Secret(Secret::new(value))
            } else {
                Part::Plain(value)
            };
            parts.push((key, part));
            if chars.peek().is_none() {
                break;
            }
        }
        Ok(ConnectionString { parts })
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
            Part::Secret(_) => None,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|(k, _)| k.as_str())
    }

    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.parts.iter().filter_map(|(_, p)| match p {
            Part::Secret(s) => Some(s),
            Part::Plain(_) => None,
        })
    }

    /// The connection string with every secret part replaced by `(set)`.
    pub fn redacted(&self) -> String {
        self.parts
            .iter()
            .map(|(k, p)| match p {
                Part::Plain(v) if v.contains([';', '"', '\'']) || v.trim() != v => {
                    format!("{k}=\"{}\"", v.replace('"', "\"\""))
                }
                Part::Plain(v) => format!("{k}={v}"),
                Part::Secret(_) => format!("{k}={SET_MARKER}"),
            })
            .collect::<Vec<_>>()
            .join(";")
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
        let cs = ConnectionString::parse("a==b=c").unwrap();
        assert_eq!(cs.plain(&["a=b"]), Some("c"));
    }
}
