//! Package settings: the declaration each package makes (its spec), and the typed values that a
//! validated connection carries. One declaration drives validation, redaction and the settings
//! form a central UI draws.

use super::PackageInfo;
use super::connstr::ConnectionString;
use crate::secret::{NOT_SET_MARKER, Redactor, SET_MARKER, Secret};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Section {
    General,
    Additional,
    Advanced,
    Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "values")]
pub enum SettingKind {
    Text,
    Integer,
    Boolean,
    /// A list of strings (a JSON array; one string is taken as a list of one).
    TextList,
    /// A file path, resolved against the settings file's folder.
    Path,
    /// One of the listed words, compared case-insensitively.
    Choice(&'static [&'static str]),
    /// An ADO.NET connection string; its password parts are secret.
    ConnectionString,
    /// A structured value (list of objects) that the package checks itself.
    Structured,
    /// The encoding of the connection tables written ([`crate::encoding::OutputEncoding`]):
    /// the export reads it from the settings by this kind, whatever the setting's name.
    OutputEncoding,
}

impl SettingKind {
    pub fn describe(&self) -> String {
        match self {
            SettingKind::Text => "text".into(),
            SettingKind::Integer => "an integer".into(),
            SettingKind::Boolean => "true or false".into(),
            SettingKind::TextList => "a list of strings".into(),
            SettingKind::Path => "a file path".into(),
            SettingKind::Choice(words) => format!("one of {}", words.join(", ")),
            SettingKind::ConnectionString => "a connection string (key=value;...)".into(),
            SettingKind::Structured => "a list of objects, or an object".into(),
            SettingKind::OutputEncoding => "an encoding name".into(),
        }
    }
}

/// One setting a package understands.
#[derive(Debug, Clone, Serialize)]
pub struct SettingSpec {
    pub name: &'static str,
    pub section: Section,
    pub kind: SettingKind,
    pub default: Option<&'static str>,
    pub required: bool,
    /// Write-only: the value is never shown, logged or returned.
    pub secured: bool,
    pub description: &'static str,
}

impl SettingSpec {
    /// Whether the setting can hold a secret: secured, or a connection string (whose password
    /// parts are secret).
    pub fn may_hold_secret(&self) -> bool {
        self.secured || matches!(self.kind, SettingKind::ConnectionString)
    }

    /// Whether `text`, written as this setting's value, is or holds a secret.
    pub fn is_secret_text(&self, text: &str) -> bool {
        self.secured
            || (matches!(self.kind, SettingKind::ConnectionString)
                && super::connstr::ConnectionString::parse(text)
                    .is_ok_and(|c| c.secrets().next().is_some()))
    }
}

/// A typed setting value.
#[derive(Clone)]
pub enum SettingValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    TextList(Vec<String>),
    ConnectionString(ConnectionString),
    Structured(serde_json::Value),
    Secret(Secret),
    /// An output encoding, with the name as written.
    Encoding(crate::encoding::OutputEncoding, String),
}

/// Structured values are wiped when dropped: key-value options (`ConnectionStringOptions`) are
/// secrets until they are merged, and a list such as LDAP `Servers` may wrongly hold a password.
impl Drop for SettingValue {
    fn drop(&mut self) {
        if let SettingValue::Structured(v) = self {
            crate::secret::wipe_json(v);
        }
    }
}

impl fmt::Debug for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingValue::Text(s) => write!(f, "Text({s:?})"),
            SettingValue::Integer(i) => write!(f, "Integer({i})"),
            SettingValue::Boolean(b) => write!(f, "Boolean({b})"),
            SettingValue::TextList(l) => write!(f, "TextList({l:?})"),
            SettingValue::ConnectionString(c) => c.fmt(f),
            SettingValue::Structured(v) => write!(f, "Structured({v})"),
            SettingValue::Secret(s) => s.fmt(f),
            SettingValue::Encoding(e, _) => write!(f, "Encoding({})", e.name()),
        }
    }
}

/// Why a raw value does not fit a setting's type. Its text never holds a secured value, and a
/// value that must not be quoted (from a reference, say) is named by where it came from instead:
/// see [`CoerceError::concealed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoerceError {
    /// The value is not of the expected kind.
    Expected {
        expected: String,
        /// What was found, as a message may show it; `None` for a secured setting.
        found: Option<String>,
    },
    /// A connection string that does not parse (its message names parts by position).
    Invalid(String),
    /// A name that is not one of the known ones.
    Unknown {
        what: &'static str,
        /// The name as written, as a message may show it (or where it came from).
        found: String,
        known: String,
    },
}

impl CoerceError {
    /// The same error naming the value as `label` says (the reference it came from, its
    /// origin) instead of quoting it.
    pub fn concealed(self, label: &str) -> Self {
        match self {
            CoerceError::Expected { expected, found } => CoerceError::Expected {
                expected,
                found: found.map(|_| crate::secret::concealed_label(label)),
            },
            CoerceError::Unknown { what, known, .. } => CoerceError::Unknown {
                what,
                found: crate::secret::concealed_label(label),
                known,
            },
            other => other,
        }
    }
}

impl fmt::Display for CoerceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoerceError::Expected {
                expected,
                found: Some(found),
            } => write!(f, "expected {expected}, found {found}"),
            CoerceError::Expected {
                expected,
                found: None,
            } => write!(f, "expected {expected}"),
            CoerceError::Invalid(m) => f.write_str(m),
            CoerceError::Unknown { what, found, known } => {
                write!(f, "the {what} {found} is not known; use {known}")
            }
        }
    }
}

/// Converts a raw JSON value to the spec's type. Errors never contain a secured value.
pub fn coerce(spec: &SettingSpec, raw: &serde_json::Value) -> Result<SettingValue, CoerceError> {
    use serde_json::Value as J;
    let wrong = || CoerceError::Expected {
        expected: spec.kind.describe(),
        found: (!spec.secured).then(|| short_json(raw)),
    };
    // Secured key-value options stay structured until they are merged (see config::validate).
    if spec.secured && !matches!(spec.kind, SettingKind::Structured) {
        return match raw {
            J::String(s) => Ok(SettingValue::Secret(Secret::new(s.clone()))),
            J::Number(n) => Ok(SettingValue::Secret(Secret::new(n.to_string()))),
            _ => Err(wrong()),
        };
    }
    match spec.kind {
        SettingKind::Text | SettingKind::Path => match raw {
            J::String(s) => Ok(SettingValue::Text(s.clone())),
            J::Number(n) => Ok(SettingValue::Text(n.to_string())),
            _ => Err(wrong()),
        },
        SettingKind::Integer => match raw {
            J::Number(n) => n.as_i64().map(SettingValue::Integer).ok_or_else(wrong),
            J::String(s) => s
                .trim()
                .parse()
                .map(SettingValue::Integer)
                .map_err(|_| wrong()),
            _ => Err(wrong()),
        },
        SettingKind::Boolean => match raw {
            J::Bool(b) => Ok(SettingValue::Boolean(*b)),
            J::String(s) if s.eq_ignore_ascii_case("true") => Ok(SettingValue::Boolean(true)),
            J::String(s) if s.eq_ignore_ascii_case("false") => Ok(SettingValue::Boolean(false)),
            _ => Err(wrong()),
        },
        SettingKind::TextList => match raw {
            J::String(s) => Ok(SettingValue::TextList(vec![s.clone()])),
            J::Array(items) => items
                .iter()
                .map(|i| match i {
                    J::String(s) => Ok(s.clone()),
                    _ => Err(wrong()),
                })
                .collect::<Result<_, _>>()
                .map(SettingValue::TextList),
            // An environment override of item N arrives as an object keyed by index.
            J::Object(m) if m.keys().all(|k| k.parse::<usize>().is_ok()) => {
                super::structured::items(raw)
                    .into_iter()
                    .map(|i| match i {
                        J::String(s) => Ok(s.clone()),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_, _>>()
                    .map(SettingValue::TextList)
            }
            _ => Err(wrong()),
        },
        SettingKind::Choice(words) => match raw {
            J::String(s) => words
                .iter()
                .find(|w| w.eq_ignore_ascii_case(s.trim()))
                .map(|w| SettingValue::Text((*w).to_string()))
                .ok_or_else(wrong),
            _ => Err(wrong()),
        },
        SettingKind::ConnectionString => match raw {
            J::String(s) => ConnectionString::parse(s)
                .map(SettingValue::ConnectionString)
                .map_err(CoerceError::Invalid),
            _ => Err(wrong()),
        },
        SettingKind::Structured => match raw {
            J::Array(_) | J::Object(_) => Ok(SettingValue::Structured(raw.clone())),
            _ => Err(wrong()),
        },
        SettingKind::OutputEncoding => match raw {
            J::String(s) => crate::encoding::OutputEncoding::parse(s)
                .map(|e| SettingValue::Encoding(e, s.clone()))
                .map_err(|_| CoerceError::Unknown {
                    what: "encoding",
                    found: format!("{:?}", s.trim()),
                    known: crate::encoding::SUPPORTED.to_string(),
                }),
            _ => Err(wrong()),
        },
    }
}

/// A JSON value as a message shows it: its text, cut after 60 characters.
pub fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

#[derive(Clone)]
struct Entry {
    spec: &'static SettingSpec,
    value: Option<SettingValue>,
    /// True when the value is the spec's default, not written in the settings.
    defaulted: bool,
    /// Set when the value must never be quoted (it came from a reference, the encrypted overlay,
    /// a credential or the connection store): how to name it instead.
    concealed: Option<String>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Entry");
        d.field("name", &self.spec.name);
        match &self.concealed {
            Some(label) => d.field("value", &format_args!("(from {label})")),
            None => d.field("value", &self.value),
        };
        d.field("defaulted", &self.defaulted).finish()
    }
}

/// The validated settings of one connection, by spec name (case-insensitive look-up).
#[derive(Debug, Clone)]
pub struct Settings {
    entries: Vec<Entry>,
    base_dir: PathBuf,
}

/// Why a candidate setting (a test's) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CandidateValueError {
    #[error("settings.{name}: {package} has no such setting; settings: {known}")]
    Unknown {
        name: String,
        package: &'static str,
        known: String,
    },
    #[error(
        "settings.{0}: key-value options cannot be tested as candidates; put the keywords into a candidate ConnectionString"
    )]
    KeyValueOptions(&'static str),
    #[error("settings.{0}: not JSON: {1}")]
    NotJson(&'static str, String),
    #[error("settings.{0}: {1}")]
    Value(&'static str, CoerceError),
    #[error("settings: missing required {0}")]
    Missing(String),
}

/// How one setting is shown to a person: never a secured value.
#[derive(Debug, Clone, Serialize)]
pub struct ShownSetting {
    pub name: &'static str,
    pub section: Section,
    pub secured: bool,
    pub is_set: bool,
    pub is_default: bool,
    pub shown: String,
}

impl Settings {
    /// Settings from typed values (unset names get the spec's default, if any).
    pub fn new(
        spec: &'static [SettingSpec],
        mut values: Vec<(&'static str, SettingValue)>,
        base_dir: &Path,
    ) -> Self {
        let entries = spec
            .iter()
            .map(|s| {
                let given = values
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(s.name))
                    .map(|i| values.swap_remove(i).1);
                let defaulted = given.is_none();
                let value = given.or_else(|| {
                    s.default
                        .and_then(|d| coerce(s, &serde_json::Value::String(d.into())).ok())
                });
                Entry {
                    spec: s,
                    value,
                    defaulted,
                    concealed: None,
                }
            })
            .collect();
        Settings {
            entries,
            base_dir: base_dir.to_path_buf(),
        }
    }

    fn value(&self, name: &str) -> Option<&SettingValue> {
        self.entries
            .iter()
            .find(|e| e.spec.name.eq_ignore_ascii_case(name))
            .and_then(|e| e.value.as_ref())
    }

    /// Whether the setting was written (not only defaulted).
    pub fn is_given(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.spec.name.eq_ignore_ascii_case(name) && !e.defaulted && e.value.is_some())
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.value(name)? {
            SettingValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A non-empty text setting.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.text(name).filter(|s| !s.trim().is_empty())
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.value(name)? {
            SettingValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn boolean(&self, name: &str) -> bool {
        matches!(self.value(name), Some(SettingValue::Boolean(true)))
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.value(name) {
            Some(SettingValue::TextList(l)) => l,
            _ => &[],
        }
    }

    pub fn structured(&self, name: &str) -> Option<&serde_json::Value> {
        match self.value(name)? {
            SettingValue::Structured(v) => Some(v),
            _ => None,
        }
    }

    pub fn connection_string(&self, name: &str) -> Option<&ConnectionString> {
        match self.value(name)? {
            SettingValue::ConnectionString(c) => Some(c),
            _ => None,
        }
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        match self.value(name)? {
            SettingValue::Secret(s) => Some(s),
            _ => None,
        }
    }

    /// The encoding of the connection tables written: the value of the setting of kind
    /// [`SettingKind::OutputEncoding`], or UTF-8 when the package has none.
    pub fn output_encoding(&self) -> crate::encoding::OutputEncoding {
        self.entries
            .iter()
            .find_map(|e| match &e.value {
                Some(SettingValue::Encoding(enc, _)) => Some(*enc),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// A path setting resolved against the settings file's folder.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.non_empty(name).map(|p| self.resolve(p))
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Marks a setting's value as one that is never quoted (it came from a reference, the
    /// encrypted overlay, a credential or the connection store); `label` names it instead.
    pub fn conceal(&mut self, name: &str, label: impl Into<String>) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.spec.name.eq_ignore_ascii_case(name))
        {
            e.concealed = Some(label.into());
        }
    }

    /// Whether a setting's value must not be quoted (see [`Settings::conceal`]).
    pub fn is_concealed(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.spec.name.eq_ignore_ascii_case(name) && e.concealed.is_some())
    }

    /// How a message names a setting's value: `"text"` (cut after 60 characters), `(set)` for a
    /// secured value, or, for a concealed one, where it came from ("the value of ${env:SEP}").
    pub fn quote(&self, name: &str) -> String {
        let Some(e) = self
            .entries
            .iter()
            .find(|e| e.spec.name.eq_ignore_ascii_case(name))
        else {
            return "nothing".to_string();
        };
        if let Some(label) = &e.concealed {
            return crate::secret::concealed_label(label);
        }
        match &e.value {
            None => "nothing".to_string(),
            Some(SettingValue::Secret(_)) => SET_MARKER.to_string(),
            Some(_) if e.spec.secured => SET_MARKER.to_string(),
            Some(SettingValue::Text(s)) => short_json(&serde_json::Value::String(s.clone())),
            Some(SettingValue::Integer(i)) => i.to_string(),
            Some(SettingValue::Boolean(b)) => b.to_string(),
            Some(SettingValue::TextList(l)) => short_json(&serde_json::json!(l)),
            Some(SettingValue::ConnectionString(c)) => format!("{:?}", c.redacted()),
            Some(SettingValue::Structured(v)) => short_json(v),
            Some(SettingValue::Encoding(_, label)) => format!("{label:?}"),
        }
    }

    /// Every secret these settings hold, and every concealed value, to mask in text from
    /// elsewhere (driver errors, file paths in messages).
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::new();
        for e in &self.entries {
            match &e.value {
                Some(SettingValue::Secret(s)) => r.add(s),
                Some(SettingValue::ConnectionString(c)) => c.secrets().for_each(|s| r.add(s)),
                _ => {}
            }
            if let Some(label) = &e.concealed {
                let label = crate::secret::concealed_label(label);
                let mut add = |s: &str| r.add_labeled(&Secret::new(s), &label);
                match &e.value {
                    Some(SettingValue::Text(s)) => add(s),
                    Some(SettingValue::Integer(i)) => add(&i.to_string()),
                    Some(SettingValue::Boolean(b)) => add(&b.to_string()),
                    Some(SettingValue::TextList(l)) => l.iter().for_each(|s| add(s)),
                    Some(SettingValue::Structured(v)) => json_strings(v, &mut add),
                    Some(SettingValue::Encoding(_, label)) => add(label),
                    // Its secret parts are masked above; the rest is shown redacted anyway.
                    Some(SettingValue::ConnectionString(_))
                    | Some(SettingValue::Secret(_))
                    | None => {}
                }
            }
        }
        r
    }

    /// The spec these settings follow.
    pub fn spec(&self) -> Vec<&'static SettingSpec> {
        self.entries.iter().map(|e| e.spec).collect()
    }

    /// A copy with candidate values over these (a test's: name → value as text, JSON for lists
    /// and structured settings), typed by the spec. Key-value options are refused (they are
    /// merged into the connection string when a configuration loads), and so is a set that
    /// lacks a required setting. Values are wiped once typed.
    pub fn with_candidates(
        &self,
        package: &PackageInfo,
        candidates: &std::collections::HashMap<String, String>,
    ) -> Result<Settings, CandidateValueError> {
        let spec = package.settings;
        let mut overrides = Vec::new();
        let mut keys: Vec<&String> = candidates.keys().collect();
        keys.sort();
        for k in keys {
            let raw = &candidates[k];
            let s = spec
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(k))
                .ok_or_else(|| CandidateValueError::Unknown {
                    name: k.clone(),
                    package: package.id,
                    known: spec.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                })?;
            if s.secured && matches!(s.kind, SettingKind::Structured) {
                return Err(CandidateValueError::KeyValueOptions(s.name));
            }
            // A transient copy, wiped when dropped: the value may be a secret.
            let json = crate::secret::WipedJson(match s.kind {
                SettingKind::TextList | SettingKind::Structured => serde_json::from_str(raw)
                    .map_err(|e| CandidateValueError::NotJson(s.name, e.to_string()))?,
                _ => serde_json::Value::String(raw.clone()),
            });
            let v = coerce(s, &json.0).map_err(|e| CandidateValueError::Value(s.name, e))?;
            overrides.push((s.name, v));
        }
        let settings = self.with_overrides(overrides);
        let missing: Vec<&str> = spec
            .iter()
            .filter(|s| s.required && !settings.is_given(s.name))
            .map(|s| s.name)
            .collect();
        if !missing.is_empty() {
            return Err(CandidateValueError::Missing(missing.join(", ")));
        }
        Ok(settings)
    }

    /// A copy with some values replaced (candidate settings for a test).
    pub fn with_overrides(&self, overrides: Vec<(&'static str, SettingValue)>) -> Settings {
        let mut out = self.clone();
        for (name, value) in overrides {
            if let Some(e) = out
                .entries
                .iter_mut()
                .find(|e| e.spec.name.eq_ignore_ascii_case(name))
            {
                e.value = Some(value);
                e.defaulted = false;
            }
        }
        out
    }

    /// Feeds every name and value, secrets included, into `h`: equal settings hash equally.
    pub fn hash_into(&self, h: &mut sha2::Sha256) {
        use sha2::Digest;
        for e in &self.entries {
            if e.defaulted && ADDED_LATER.contains(&e.spec.name) {
                continue;
            }
            h.update(e.spec.name.as_bytes());
            h.update([0]);
            // Secrets go into the hash directly, never through a formatted copy; the bytes are
            // those of `secret:<value>` and `cs:<redacted>|<secrets joined by NUL>`, as stored
            // fingerprints were made before.
            match &e.value {
                None => h.update("\u{0}none"),
                Some(SettingValue::Secret(s)) => {
                    h.update("secret:");
                    h.update(s.expose());
                }
                Some(SettingValue::ConnectionString(c)) => {
                    h.update("cs:");
                    h.update(c.redacted());
                    h.update("|");
                    for (i, s) in c.secrets().enumerate() {
                        if i > 0 {
                            h.update([0]);
                        }
                        h.update(s.expose());
                    }
                }
                // The bytes of the text it was before it had a kind of its own.
                Some(SettingValue::Encoding(_, label)) => h.update(format!("Text({label:?})")),
                Some(other) => h.update(format!("{other:?}")),
            }
            h.update([0]);
        }
    }

    /// Every setting as a person may see it.
    pub fn shown(&self) -> Vec<ShownSetting> {
        self.entries
            .iter()
            .map(|e| {
                let shown = match &e.value {
                    None if e.spec.secured => NOT_SET_MARKER.to_string(),
                    None => String::new(),
                    Some(SettingValue::Secret(_)) => SET_MARKER.to_string(),
                    // A secured value of any other kind is never shown either.
                    Some(v)
                        if e.spec.secured && !matches!(v, SettingValue::ConnectionString(_)) =>
                    {
                        SET_MARKER.to_string()
                    }
                    // A connection string is shown redacted wherever it came from: its secret
                    // parts are never shown, the rest is an address.
                    Some(SettingValue::ConnectionString(c)) => c.redacted(),
                    // Named by where it came from, never quoted.
                    Some(_) if e.concealed.is_some() => {
                        format!("(from {})", e.concealed.as_deref().unwrap_or_default())
                    }
                    Some(SettingValue::Text(s)) => s.clone(),
                    Some(SettingValue::Integer(i)) => i.to_string(),
                    Some(SettingValue::Boolean(b)) => b.to_string(),
                    Some(SettingValue::TextList(l)) => serde_json::to_string(l).unwrap_or_default(),
                    Some(SettingValue::Structured(v)) => v.to_string(),
                    Some(SettingValue::Encoding(_, label)) => label.clone(),
                };
                ShownSetting {
                    name: e.spec.name,
                    section: e.spec.section,
                    secured: e.spec.secured,
                    is_set: e.value.is_some() && !e.defaulted,
                    is_default: e.defaulted && e.value.is_some(),
                    shown,
                }
            })
            .collect()
    }
}

/// Settings added after fingerprints were first stored (Work/State): left out of the fingerprint
/// while they are not written, so that an upgrade does not mark every connection modified.
const ADDED_LATER: &[&str] = &["ReadTimeout", "ProviderClassFullName", "ProviderDllName"];

/// Calls `f` with every string of a JSON value (numbers as text too).
fn json_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Number(n) => f(&n.to_string()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| json_strings(i, f)),
        serde_json::Value::Object(m) => m.values().for_each(|i| json_strings(i, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: &[SettingSpec] = &[
        SettingSpec {
            name: "Login",
            section: Section::General,
            kind: SettingKind::Text,
            default: None,
            required: false,
            secured: false,
            description: "",
        },
        SettingSpec {
            name: "Password",
            section: Section::General,
            kind: SettingKind::Text,
            default: None,
            required: false,
            secured: true,
            description: "",
        },
        SettingSpec {
            name: "ApiKey",
            section: Section::Advanced,
            kind: SettingKind::Text,
            default: None,
            required: false,
            secured: true,
            description: "",
        },
        SettingSpec {
            name: "ConnectionString",
            section: Section::General,
            kind: SettingKind::ConnectionString,
            default: None,
            required: false,
            secured: false,
            description: "",
        },
    ];

    #[test]
    fn secured_values_show_only_as_set_or_not_set() {
        let canary = "canary-spec-8d1f";
        let raw = |v: &str| serde_json::Value::String(v.into());
        let values = vec![
            ("Login", coerce(&SPEC[0], &raw("admin")).unwrap()),
            ("Password", coerce(&SPEC[1], &raw(canary)).unwrap()),
            (
                "ConnectionString",
                coerce(&SPEC[3], &raw(&format!("Server=x;Pwd={canary}"))).unwrap(),
            ),
        ];
        let s = Settings::new(SPEC, values, Path::new("/"));
        let shown: Vec<(&str, String)> = s.shown().into_iter().map(|x| (x.name, x.shown)).collect();
        assert_eq!(
            shown,
            [
                ("Login", "admin".to_string()),
                ("Password", SET_MARKER.to_string()),
                ("ApiKey", NOT_SET_MARKER.to_string()),
                ("ConnectionString", format!("Server=x;Pwd={SET_MARKER}")),
            ]
        );
        assert!(!format!("{s:?}").contains(canary));
        assert_eq!(s.secret("Password").map(Secret::expose), Some(canary));
        assert_eq!(
            s.redactor().redact(&format!("login failed for {canary}")),
            "login failed for ***"
        );
        // A wrong type for a secured setting does not repeat the value.
        let e = coerce(&SPEC[1], &serde_json::json!([canary])).unwrap_err();
        assert!(!e.to_string().contains(canary), "{e}");
        // A concealed value is named by where it came from.
        let e = coerce(&SPEC[0], &serde_json::json!([canary]))
            .unwrap_err()
            .concealed("${env:LOGIN}");
        assert_eq!(
            e.to_string(),
            "expected text, found the value of ${env:LOGIN}"
        );
    }

    /// Stored fingerprints (Work/State) are made from these bytes: changing them would mark
    /// every connection modified at the next start.
    #[test]
    fn the_settings_hash_keeps_its_bytes() {
        use sha2::Digest;
        let raw = |v: &str| serde_json::Value::String(v.into());
        let values = vec![
            ("Login", coerce(&SPEC[0], &raw("admin")).unwrap()),
            ("Password", coerce(&SPEC[1], &raw("p1")).unwrap()),
            (
                "ConnectionString",
                coerce(&SPEC[3], &raw("Server=x;Pwd=p2;Password=p3")).unwrap(),
            ),
        ];
        let s = Settings::new(SPEC, values, Path::new("/"));
        let mut h = sha2::Sha256::new();
        s.hash_into(&mut h);
        let mut expected = sha2::Sha256::new();
        for (name, text) in [
            ("Login", "Text(\"admin\")"),
            ("Password", "secret:p1"),
            ("ApiKey", "\u{0}none"),
            (
                "ConnectionString",
                "cs:Server=x;Pwd=(set);Password=(set)|p2\u{0}p3",
            ),
        ] {
            expected.update(name.as_bytes());
            expected.update([0]);
            expected.update(text.as_bytes());
            expected.update([0]);
        }
        assert_eq!(h.finalize(), expected.finalize());
    }
}
