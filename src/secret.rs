//! The one type that holds secret values (passwords, keys, secret parts of connection strings).
//!
//! A [`Secret`] can be read only through [`Secret::expose`], which call sites use at the moment a
//! driver needs the value. It has no `Display`, no `Serialize`, and its `Debug` prints a fixed
//! marker. Its memory is zeroized on drop. [`Redactor`] removes known secret values from text that
//! came from elsewhere (a driver's error message that repeats a connection string, say).

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// The text shown wherever a secured value would otherwise appear.
pub const SET_MARKER: &str = "(set)";
/// The text shown for a secured setting that has no value.
pub const NOT_SET_MARKER: &str = "(not set)";

/// A secret string. Cloning copies the secret into another zeroized buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call this only where the value is handed to the system that needs it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(")?;
        f.write_str(SET_MARKER)?;
        f.write_str(")")
    }
}

/// How a value that must not be quoted (it came from a reference, the encrypted overlay, a
/// credential or the connection store) is named in a message instead: "the value of LABEL".
pub fn concealed_label(label: &str) -> String {
    format!("the value of {label}")
}

/// Replaces every occurrence of known secret values in a text.
#[derive(Default, Clone)]
pub struct Redactor {
    /// Each value to hide, with what replaces it (`***`, or a name such as
    /// "the value of ${file:pg.pass}").
    secrets: Vec<(Secret, Option<String>)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value to hide. Very short values (under 4 characters) are hidden too: a short
    /// password is still a password, even if masking it may mask unrelated text.
    pub fn add(&mut self, secret: &Secret) {
        self.insert(secret, None);
    }

    /// Adds a value to hide behind `label` instead of `***`. The value as a Rust string literal
    /// would escape it (`"a\"b"` for `a"b`) is hidden too, since messages quote values that way.
    pub fn add_labeled(&mut self, secret: &Secret, label: &str) {
        // Messages often quote a value trimmed of surrounding spaces and line breaks.
        let trimmed = secret.expose().trim();
        if trimmed.len() != secret.expose().len() && !trimmed.is_empty() {
            self.add_labeled(&Secret::new(trimmed), label);
        }
        self.insert(secret, Some(label.to_string()));
        // Written into a buffer that is wiped, sized so that it never moves.
        let mut escaped = Zeroizing::new(String::with_capacity(secret.expose().len() * 10 + 2));
        {
            use std::fmt::Write as _;
            let _ = write!(escaped, "{:?}", secret.expose());
        }
        let inner = &escaped[1..escaped.len() - 1];
        if inner != secret.expose() {
            self.insert(&Secret::new(inner), Some(label.to_string()));
        }
    }

    fn insert(&mut self, secret: &Secret, label: Option<String>) {
        if !secret.is_empty() && !self.secrets.iter().any(|(s, _)| s == secret) {
            self.secrets.push((secret.clone(), label));
            // Longest first, so that a secret containing another is masked whole.
            self.secrets
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.expose().len()));
        }
    }

    pub fn extend(&mut self, other: &Redactor) {
        for (s, label) in &other.secrets {
            self.insert(s, label.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The text with every known secret replaced by `***` (or its label).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (s, label) in &self.secrets {
            if out.contains(s.expose()) {
                let masked = out.replace(s.expose(), label.as_deref().unwrap_or("***"));
                // The text held the secret: wipe it before letting it go.
                out.zeroize();
                out = masked;
            }
        }
        out
    }
}

/// Overwrites every string of a JSON value with zeros (and empties it). Settings are parsed into
/// JSON before the package specs say which of them are secret, so the parsed trees, and any copy
/// of a part of them, are wiped with this when they are dropped (see `config::settings`).
pub fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(m) => wipe_json_map(m),
        _ => {}
    }
}

/// [`wipe_json`] for every value of an object (keys are setting names, never secrets).
pub fn wipe_json_map(m: &mut serde_json::Map<String, serde_json::Value>) {
    m.values_mut().for_each(wipe_json);
}

/// A JSON value that is wiped ([`wipe_json`]) when dropped: for transient copies of settings.
#[derive(Default)]
pub struct WipedJson(pub serde_json::Value);

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

impl fmt::Debug for WipedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WipedJson(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-canary");
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(SET_MARKER));
    }

    #[test]
    fn redactor_masks_longest_first() {
        let mut r = Redactor::new();
        r.add(&Secret::new("abc"));
        r.add(&Secret::new("abcdef"));
        assert_eq!(r.redact("x abcdef y abc z"), "x *** y *** z");
        assert_eq!(r.redact("nothing here"), "nothing here");
        let mut l = Redactor::new();
        l.add_labeled(&Secret::new("a\"b"), "the value of ${env:X}");
        assert_eq!(
            l.redact("not \"a\\\"b\" nor a\"b"),
            "not \"the value of ${env:X}\" nor the value of ${env:X}"
        );
    }

    #[test]
    fn wipe_json_empties_every_string_at_any_depth() {
        let mut v = serde_json::json!({
            "Connections": {"Db": {"Password": "pw-canary", "Port": 5432,
                "Servers": [{"Login": "cn=x", "Tags": ["a", "b"]}], "On": true}},
            "Top": "t"
        });
        wipe_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "Connections": {"Db": {"Password": "", "Port": 5432,
                    "Servers": [{"Login": "", "Tags": ["", ""]}], "On": true}},
                "Top": ""
            })
        );
    }
}
