//! Identifiers: matched case-insensitively everywhere, shown with their XML spelling. A leaf
//! module: configuration, packages and export all use it.

use serde::{Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The longest identifier accepted (COMPAT.md: a letter, then up to 441 characters).
pub const MAX_IDENTIFIER_LEN: usize = 442;

/// An identifier as written in the configuration. Equality, ordering and hashing ignore ASCII case.
#[derive(Clone)]
pub struct Ident(String);

impl Ident {
    pub fn new(s: impl Into<String>) -> Self {
        Ident(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl PartialEq for Ident {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
impl Eq for Ident {}

impl Hash for Ident {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .bytes()
            .map(|b| b.to_ascii_lowercase())
            .cmp(other.0.bytes().map(|b| b.to_ascii_lowercase()))
    }
}
impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl Serialize for Ident {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Checks a connection identifier: a letter first, then letters, digits, `.` or `-`; no `_`
/// (the separator in `<id>_<table>.csv`). Returns what is wrong, if anything.
pub fn check_connection_identifier(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err("the identifier is empty".into());
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!(
            "identifier {id:?} must start with a letter, not {first:?}"
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        let why = if bad == '_' {
            " ('_' separates the identifier from the table name in output file names)"
        } else {
            ""
        };
        return Err(format!(
            "identifier {id:?} contains {bad:?}; only letters, digits, '.' and '-' are allowed{why}"
        ));
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "identifier is {} characters long; at most {MAX_IDENTIFIER_LEN} are allowed",
            id.len()
        ));
    }
    Ok(())
}

/// Looks a key up in a JSON object, ignoring ASCII case; an exact match wins.
pub fn get_ci<'a>(
    m: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The case-insensitive identity of a settings key path (`Connections:HRDb:Password`):
/// lower-cased segments joined with '/'.
pub fn key_id<S: AsRef<str>>(segs: &[S]) -> String {
    segs.iter()
        .map(|s| s.as_ref().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn case_insensitive_identity() {
        let mut set = HashSet::new();
        set.insert(Ident::new("HRPeople"));
        assert!(set.contains(&Ident::new("hrpeople")));
        assert_eq!(Ident::new("ADExport"), Ident::new("adexport"));
        assert_eq!(Ident::new("ADExport").to_string(), "ADExport");
    }

    #[test]
    fn identifier_syntax() {
        assert!(check_connection_identifier("HR-People.v2").is_ok());
        assert!(check_connection_identifier("").is_err());
        assert!(
            check_connection_identifier("1HR")
                .unwrap_err()
                .contains("start with a letter")
        );
        assert!(
            check_connection_identifier("HR_People")
                .unwrap_err()
                .contains("'_'")
        );
        assert!(check_connection_identifier("HR People").is_err());
        assert!(check_connection_identifier(&"a".repeat(443)).is_err());
        assert!(check_connection_identifier(&"a".repeat(442)).is_ok());
    }
}
