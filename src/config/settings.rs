//! Loading `appsettings.agent.json` and the environment overrides into one settings tree.
//!
//! serde_json reads the file; the layers (encrypted overlay, environment, systemd credentials,
//! connection store) are merged here, key by key and case-insensitively (later wins), because
//! identifiers and setting names are case-insensitive (COMPAT.md §0). (The `config` crate was
//! used once: it lower-cases environment keys while it keeps file keys as written
//! (rust-cli/config-rs#531), splits environment keys on '.', which identifiers may contain, and
//! keeps its own copies of every value, which could not be wiped.)
//!
//! Secrets: the tree holds every setting as plain JSON until validation has turned the secured
//! ones into [`crate::secret::Secret`]s, because only the package specs say which are secret. So
//! the file's text, every replaced value, and the tree itself are wiped ([`wipe_json`]) when they
//! are dropped; the tree lives only while a configuration is loaded.

use super::diag::{Diagnostic, Diagnostics, Location, Origin};
use super::jsonpos::JsonPositions;
use crate::ident::get_ci;
use crate::secret::{wipe_json, wipe_json_map};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// Environment variables starting with `CONNAGENT__` override settings; `__` separates sections.
pub const ENV_PREFIX: &str = "CONNAGENT";
pub const ENV_SEPARATOR: &str = "__";

/// The merged settings and where each value came from. Its Debug shows no value: the tree may
/// hold secrets.
#[derive(Clone)]
pub struct SettingsTree {
    /// The settings file, absolute.
    pub path: PathBuf,
    /// Its folder: relative paths in settings resolve against it.
    pub dir: PathBuf,
    pub root: Map<String, Value>,
    positions: JsonPositions,
    /// Key path (see [`key_id`]) → the layer that set it, when not the settings file: an
    /// environment variable, a credential, the encrypted overlay or the connection store.
    env: HashMap<String, Origin>,
    /// Key paths (see [`key_id`]) whose value must never be quoted, with how to name it instead:
    /// values resolved from a `${...}` reference (named by the reference as written), and values
    /// from the encrypted overlay, a systemd credential or the connection store (named by their
    /// origin).
    concealed: HashMap<String, String>,
}

impl Drop for SettingsTree {
    fn drop(&mut self) {
        wipe_json_map(&mut self.root);
    }
}

impl std::fmt::Debug for SettingsTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsTree")
            .field("path", &self.path)
            .field("keys", &self.root.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SettingsTree {
    /// Loads the file and applies the overrides found in `env` (name, value pairs).
    pub fn load(
        path: &Path,
        env: &[(String, String)],
        hasher: &mut super::inputs::InputsHasher,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let abs = absolute(path);
        let bytes = crate::fsutil::read_limited(
            &abs,
            crate::fsutil::limits::SETTINGS_FILE,
            "a settings file",
        );
        hasher.file(&abs, &bytes);
        // The file may hold plain secrets: its text is wiped once parsed.
        let text = match bytes.and_then(|b| {
            String::from_utf8(b).map_err(|e| {
                let message = e.to_string();
                e.into_bytes().zeroize();
                crate::fsutil::ReadError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    message,
                ))
            })
        }) {
            Ok(t) => Zeroizing::new(t),
            Err(e) => {
                let hint = match (&e, e.io_kind()) {
                    (_, Some(std::io::ErrorKind::NotFound)) => {
                        "pass --settings FILE, set CONNAGENT_SETTINGS, or run from the folder that holds appsettings.agent.json"
                    }
                    (_, Some(std::io::ErrorKind::InvalidData)) => "save the file as UTF-8",
                    (crate::fsutil::ReadError::NotRegular { .. }, _) => {
                        "point --settings (or CONNAGENT_SETTINGS) at the settings file itself, a regular file"
                    }
                    (crate::fsutil::ReadError::TooLarge { .. }, _) => {
                        "check that --settings names the settings file; it holds settings, not data"
                    }
                    _ => "make the file readable by the agent's user",
                };
                diags.push(
                    Diagnostic::error(
                        Some(Origin::File(Location::file_only(&abs))),
                        format!("cannot read the settings file: {e}"),
                    )
                    .hint(hint),
                );
                return None;
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // Comments and trailing commas (as the .NET reader takes them) become spaces in place.
        let text = super::jsonc::relaxed(text);
        let text = text.as_str();
        // serde_json's errors carry the line and column that a person needs, and never a value.
        let mut root = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(mut other) => {
                wipe_json(&mut other);
                diags.push(
                    Diagnostic::error(
                        Some(Origin::File(Location::new(&abs, 1, 1))),
                        "the settings file must hold a JSON object",
                    )
                    .hint("the file starts with '{' and holds sections such as \"Connections\""),
                );
                return None;
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        Some(Origin::File(Location::new(
                            &abs,
                            u32::try_from(e.line()).unwrap_or(0),
                            u32::try_from(e.column()).unwrap_or(0),
                        ))),
                        format!("the settings file is not valid JSON: {e}"),
                    )
                    .hint("fix the JSON syntax at this position (// and /* */ comments and trailing commas are accepted)"),
                );
                return None;
            }
        };
        let dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut env_names = HashMap::new();
        // The encrypted overlay comes after the file, before the environment.
        let (decrypted, origins) = super::encrypted::load(&dir, &root, hasher, diags);
        merge(&mut root, decrypted);
        env_names.extend(origins.into_iter().map(|(k, o)| (k, Origin::Source(o))));
        // The environment layer is built here rather than with config::Environment: that source
        // splits keys on '.', which connection identifiers may contain (`HR.People`).
        merge(&mut root, env_overlay(env, diags));
        for (name, _) in env.iter().filter(|(k, _)| is_override_var(k)) {
            let segs = override_path(name);
            if segs.len() <= MAX_SETTING_DEPTH {
                env_names.insert(key_id(&segs), Origin::Env(name.clone()));
            }
        }
        // systemd credentials come after the environment: later wins.
        let credentials = env
            .iter()
            .find(|(k, _)| k == CREDENTIALS_ENV)
            .map(|(_, v)| PathBuf::from(v));
        if let Some(cred_dir) = &credentials {
            let (overlay, names) = credentials_overlay(cred_dir, diags);
            merge(&mut root, overlay);
            env_names.extend(names.into_iter().map(|(k, o)| (k, Origin::Source(o))));
        }
        // Last, the secured options the central server stored (SetSecuredOption).
        let (stored, origins) = super::encrypted::load_store(&dir, &root, diags);
        merge(&mut root, stored);
        env_names.extend(origins.into_iter().map(|(k, o)| (k, Origin::Source(o))));
        let positions = JsonPositions::scan(text);
        // Values from the overlay, credentials and the store are never quoted: named by origin.
        let mut concealed: HashMap<String, String> = env_names
            .iter()
            .filter_map(|(k, o)| match o {
                Origin::Source(what) => Some((k.clone(), what.clone())),
                _ => None,
            })
            .collect();
        let mut refs = References {
            concealed: &mut concealed,
            env,
            credentials: credentials.as_deref(),
            dir: &dir,
            diags,
        };
        let mut path = Vec::new();
        for (k, v) in root.iter_mut() {
            path.push(k.clone());
            refs.resolve(v, &mut path, &|p: &[String]| {
                origin_of(&env_names, &positions, &abs, p)
            });
            path.pop();
        }
        Some(SettingsTree {
            path: abs,
            dir,
            root,
            positions,
            env: env_names,
            concealed,
        })
    }

    /// Where the value at `path` came from: the environment variable that set it, else its place
    /// in the file (or the nearest enclosing key that is written there).
    pub fn origin(&self, path: &[&str]) -> Origin {
        origin_of(&self.env, &self.positions, &self.path, path)
    }

    /// Whether the value at `path` was resolved from a `${...}` reference.
    pub fn is_referenced(&self, path: &[&str]) -> bool {
        self.concealed
            .get(&key_id(path))
            .is_some_and(|label| label.starts_with("${"))
    }

    /// How to name the value at `path` when it must not be quoted: it (or a part of it) came
    /// from a reference, the encrypted overlay, a systemd credential or the connection store.
    pub fn concealment(&self, path: &[&str]) -> Option<&str> {
        let id = key_id(path);
        if let Some(label) = self.concealed.get(&id) {
            return Some(label);
        }
        let below = format!("{id}/");
        self.concealed
            .iter()
            .filter(|(k, _)| k.starts_with(&below))
            .map(|(_, label)| label.as_str())
            .min()
    }

    /// The value at `path` as a message may quote it: `"text"`, or, for a concealed value, where
    /// it came from ("the value of ${file:secrets/pg.pass}").
    pub fn quote(&self, path: &[&str]) -> String {
        match self.concealment(path) {
            Some(label) => concealed_label(label),
            None => match self.get(path) {
                Some(Value::String(s)) => format!("{s:?}"),
                Some(v) => crate::packages::spec::short_json(v),
                None => "nothing".to_string(),
            },
        }
    }

    /// Every concealed value, to mask in messages as a last line of defence: each is replaced
    /// by its name ("the value of ${file:secrets/pg.pass}").
    pub fn concealed_redactor(&self) -> crate::secret::Redactor {
        let mut r = crate::secret::Redactor::new();
        for (id, label) in &self.concealed {
            let segs: Vec<&str> = id.split('/').collect();
            if let Some(v) = self.get(&segs) {
                add_json_to_redactor(&mut r, v, &concealed_label(label));
            }
        }
        r
    }

    /// The value at `path`, keys compared case-insensitively.
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut cur = get_ci(&self.root, first)?;
        for seg in rest {
            cur = match cur {
                Value::Object(m) => get_ci(m, seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Resolves a path written in the settings against the settings file's folder.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Where the value at `path` came from: the environment variable or credential that set it, else
/// its place in the file (or the nearest enclosing key that is written there).
fn origin_of<S: AsRef<str>>(
    env: &HashMap<String, Origin>,
    positions: &JsonPositions,
    file: &Path,
    path: &[S],
) -> Origin {
    for n in (1..=path.len()).rev() {
        let key = key_id(&path[..n]);
        if let Some(origin) = env.get(&key) {
            return origin.clone();
        }
        let segs: Vec<&str> = path[..n].iter().map(AsRef::as_ref).collect();
        if let Some((line, col)) = positions.get(&segs) {
            return Origin::File(Location::new(file, line, col));
        }
    }
    Origin::File(Location::file_only(file))
}

/// A value read from a file, without one trailing newline (`\n` or `\r\n`).
pub fn without_final_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

use crate::ident::key_id;

pub use crate::secret::concealed_label;

/// Adds every string (and number) of a JSON value to a redactor, replaced by `label`.
fn add_json_to_redactor(r: &mut crate::secret::Redactor, v: &Value, label: &str) {
    match v {
        Value::String(s) => r.add_labeled(&crate::secret::Secret::new(s.as_str()), label),
        Value::Number(n) => r.add_labeled(&crate::secret::Secret::new(n.to_string()), label),
        Value::Array(items) => items.iter().for_each(|i| add_json_to_redactor(r, i, label)),
        Value::Object(m) => m.values().for_each(|i| add_json_to_redactor(r, i, label)),
        _ => {}
    }
}

/// The deepest a setting may be written: `Connections:<id>:Tables:<n>:Name` is five levels. An
/// environment variable naming more sections is refused (a tree built from it would only be
/// walked, merged and wiped, level by level, for nothing).
pub const MAX_SETTING_DEPTH: usize = 16;

/// The sections of an override variable's name: `CONNAGENT__A__B` is `[A, B]`.
fn override_path(name: &str) -> Vec<&str> {
    name[ENV_PREFIX.len() + ENV_SEPARATOR.len()..]
        .split(ENV_SEPARATOR)
        .collect()
}

/// Why a file holding one value (a credential, a `${file:}` target) could not be used.
enum ValueFileError {
    NotUtf8,
    Io(crate::fsutil::ReadError),
}

/// A file holding one value, maybe a secret: its text without one final newline, cut in place
/// rather than copied; bytes that are not UTF-8 text are wiped. At most
/// [`crate::fsutil::limits::VALUE_FILE`] bytes, and only a regular file (never a FIFO or a device).
fn read_value_file(path: &Path) -> Result<String, ValueFileError> {
    let bytes = crate::fsutil::read_limited(
        path,
        crate::fsutil::limits::VALUE_FILE,
        "a file holding one value",
    )
    .map_err(ValueFileError::Io)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        e.into_bytes().zeroize();
        ValueFileError::NotUtf8
    })?;
    text.truncate(without_final_newline(&text).len());
    Ok(text)
}

/// systemd passes credentials (`LoadCredential=`, `SetCredential=`) as files in this folder.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";
/// How a value set by a credential file is named in messages.
const CREDENTIAL_ORIGIN: &str = "systemd credential ";

/// The files of the credentials folder whose names are setting paths (`Connections__HRDb__Password`)
/// as a tree, and for each key path the name shown as its origin. A file's content is the value,
/// without one trailing newline. Other credentials (named for `${credential:NAME}`) are left alone.
fn credentials_overlay(
    dir: &Path,
    diags: &mut Diagnostics,
) -> (Map<String, Value>, HashMap<String, String>) {
    let mut root = Map::new();
    let mut names = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Some(Origin::Env(CREDENTIALS_ENV.into())),
                    format!("cannot read the credentials folder {}: {e}", dir.display()),
                )
                .hint("start the agent from its systemd unit, or unset CREDENTIALS_DIRECTORY"),
            );
            return (root, names);
        }
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| n.contains(ENV_SEPARATOR) && !n.starts_with('.'))
        .collect();
    files.sort();
    for (name, path) in files {
        let segs: Vec<&str> = name.split(ENV_SEPARATOR).collect();
        if segs.iter().any(|s| s.is_empty()) {
            continue;
        }
        // Not hashed: credentials do not change while the service runs (a restart or SIGHUP
        // reads them again).
        let origin = format!("{CREDENTIAL_ORIGIN}{name}");
        let value = match read_value_file(&path) {
            Ok(v) => v,
            Err(ValueFileError::NotUtf8) => {
                diags.push(
                    Diagnostic::error(
                        Some(Origin::Source(origin)),
                        "the credential is not UTF-8 text",
                    )
                    .hint("store the value as UTF-8 text"),
                );
                continue;
            }
            Err(ValueFileError::Io(e)) => {
                diags.push(
                    Diagnostic::error(
                        Some(Origin::Source(origin)),
                        format!("cannot read the credential: {e}"),
                    )
                    .hint("check LoadCredential= in the unit"),
                );
                continue;
            }
        };
        let mut leaf = Value::String(value);
        for seg in segs.iter().skip(1).rev() {
            let mut m = Map::new();
            m.insert((*seg).to_string(), leaf);
            leaf = Value::Object(m);
        }
        let mut overlay = Map::new();
        overlay.insert(segs[0].to_string(), leaf);
        merge(&mut root, overlay);
        names.insert(key_id(&segs), origin);
    }
    (root, names)
}

/// Resolves `${env:NAME}`, `${file:PATH}` and `${credential:NAME}` written as a whole string
/// value. The resolved value replaces the reference in memory only; nothing is written back, and
/// no message ever shows it.
struct References<'a> {
    concealed: &'a mut HashMap<String, String>,
    env: &'a [(String, String)],
    credentials: Option<&'a Path>,
    dir: &'a Path,
    diags: &'a mut Diagnostics,
}

impl References<'_> {
    fn resolve(
        &mut self,
        v: &mut Value,
        path: &mut Vec<String>,
        origin: &dyn Fn(&[String]) -> Origin,
    ) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    path.push(k.clone());
                    self.resolve(child, path, origin);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    path.push(i.to_string());
                    self.resolve(child, path, origin);
                    path.pop();
                }
            }
            Value::String(s) => {
                let Some(inner) = s
                    .trim()
                    .strip_prefix("${")
                    .and_then(|r| r.strip_suffix('}'))
                else {
                    return;
                };
                let Some((kind, name)) = inner.split_once(':') else {
                    return;
                };
                let (kind, name) = (kind.trim().to_ascii_lowercase(), name.trim().to_string());
                let setting = path.join(":");
                let fail = |this: &mut Self, msg: String, hint: &str| {
                    this.diags.push(
                        Diagnostic::error(Some(origin(path)), format!("{setting}: {msg}"))
                            .hint(hint),
                    );
                };
                let resolved = match kind.as_str() {
                    "env" => match self.env.iter().find(|(k, _)| *k == name) {
                        Some((_, v)) => Some(v.clone()),
                        None => {
                            fail(
                                self,
                                format!(
                                    "the reference ${{env:{name}}} names an environment variable that is not set"
                                ),
                                "set the variable in the agent's environment (Environment= in the unit), or write the value",
                            );
                            None
                        }
                    },
                    "file" | "credential" => {
                        let file = if kind == "file" {
                            let p = Path::new(&name);
                            Some(if p.is_absolute() {
                                p.to_path_buf()
                            } else {
                                self.dir.join(p)
                            })
                        } else if name.contains('/') || name.starts_with('.') || name.is_empty() {
                            fail(
                                self,
                                format!(
                                    "the reference ${{credential:{name}}} is not a credential name"
                                ),
                                "give the name used in LoadCredential=NAME:...",
                            );
                            None
                        } else {
                            match self.credentials {
                                Some(d) => Some(d.join(&name)),
                                None => {
                                    fail(
                                        self,
                                        format!(
                                            "the reference ${{credential:{name}}} needs systemd credentials, and CREDENTIALS_DIRECTORY is not set"
                                        ),
                                        "add LoadCredential= to the unit, or use ${file:PATH}",
                                    );
                                    None
                                }
                            }
                        };
                        file.and_then(|f| {
                            // Not hashed for change detection (SIGHUP reads them again).
                            match read_value_file(&f) {
                                Ok(text) => Some(text),
                                Err(ValueFileError::NotUtf8) => {
                                    fail(
                                        self,
                                        format!("the file of ${{{kind}:{name}}} is not UTF-8 text"),
                                        "store the value as UTF-8 text",
                                    );
                                    None
                                }
                                Err(ValueFileError::Io(e)) => {
                                    fail(
                                        self,
                                        format!("cannot read the file of ${{{kind}:{name}}} ({}): {e}", f.display()),
                                        "create the file, readable by the agent's user, or correct the reference",
                                    );
                                    None
                                }
                            }
                        })
                    }
                    _ => {
                        fail(
                            self,
                            format!("unknown reference kind {kind:?} in ${{{kind}:...}}"),
                            "use ${env:NAME}, ${file:PATH} or ${credential:NAME}",
                        );
                        None
                    }
                };
                if let Some(r) = resolved {
                    // The reference as written names the value from now on.
                    let label = format!("${{{kind}:{name}}}");
                    s.zeroize();
                    *s = r;
                    self.concealed.insert(key_id(path), label);
                }
            }
            _ => {}
        }
    }
}

/// The `CONNAGENT__A__B=value` variables as a tree `{A: {B: "value"}}`, spelled as written. A
/// variable naming more than [`MAX_SETTING_DEPTH`] sections is refused.
fn env_overlay(env: &[(String, String)], diags: &mut Diagnostics) -> Map<String, Value> {
    let mut root = Map::new();
    let mut vars: Vec<&(String, String)> = env.iter().filter(|(k, _)| is_override_var(k)).collect();
    vars.sort();
    for (name, value) in vars {
        let path = override_path(name);
        if path.iter().any(|seg| seg.is_empty()) {
            continue;
        }
        if path.len() > MAX_SETTING_DEPTH {
            let shown: String = name.chars().take(60).collect();
            diags.push(
                Diagnostic::error(
                    Some(Origin::Env(format!("{shown}..."))),
                    format!(
                        "the variable names {} nested sections; settings are at most {MAX_SETTING_DEPTH} deep",
                        path.len()
                    ),
                )
                .hint("name a setting as CONNAGENT__Section__Key (for example CONNAGENT__Connections__HRDb__Timeout), or unset the variable"),
            );
            continue;
        }
        let mut overlay = Map::new();
        let mut leaf = Value::String(value.clone());
        for seg in path.iter().skip(1).rev() {
            let mut m = Map::new();
            m.insert((*seg).to_string(), leaf);
            leaf = Value::Object(m);
        }
        overlay.insert(path[0].to_string(), leaf);
        merge(&mut root, overlay);
    }
    root
}

fn is_override_var(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > ENV_PREFIX.len() + ENV_SEPARATOR.len()
        && b[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX.as_bytes())
        && b[ENV_PREFIX.len()..].starts_with(ENV_SEPARATOR.as_bytes())
}

/// Merges `overlay` into `base`: objects merge key by key (case-insensitively, keeping the base's
/// spelling), anything else replaces. An object with numeric keys sets array items.
pub fn merge(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
    for (k, v) in overlay {
        let existing = base.keys().find(|bk| bk.eq_ignore_ascii_case(&k)).cloned();
        match existing {
            Some(bk) => {
                if let Some(slot) = base.get_mut(&bk) {
                    merge_value(slot, v);
                }
            }
            None => {
                base.insert(k, v);
            }
        }
    }
}

fn merge_value(slot: &mut Value, v: Value) {
    match (slot, v) {
        (Value::Object(b), Value::Object(o)) => merge(b, o),
        (Value::Array(items), Value::Object(o)) if o.keys().all(|k| k.parse::<usize>().is_ok()) => {
            for (k, v) in o {
                if let Ok(i) = k.parse::<usize>() {
                    if i < items.len() {
                        merge_value(&mut items[i], v);
                    } else if i == items.len() {
                        items.push(v);
                    } else {
                        let mut dropped = v;
                        wipe_json(&mut dropped);
                    }
                }
            }
        }
        (slot, v) => {
            // The value replaced may be a secret given by an earlier layer.
            wipe_json(slot);
            *slot = v;
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("appsettings.agent.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn environment_overrides_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "{\n \"Connections\": {\n  \"HRDb\": {\"Timeout\": 3, \"SqlCommand\": \"select 1\"}\n }\n}",
        );
        let env = vec![
            (
                "CONNAGENT__connections__HRDB__Timeout".to_string(),
                "9".to_string(),
            ),
            ("CONNAGENT_SETTINGS".to_string(), "x".to_string()),
            ("OTHER__A".to_string(), "y".to_string()),
        ];
        let mut d = Diagnostics::default();
        let t = SettingsTree::load(&p, &env, &mut Default::default(), &mut d).unwrap();
        assert!(!d.has_errors(), "{d:?}");
        assert_eq!(
            t.get(&["Connections", "HRDb", "Timeout"]),
            Some(&Value::from("9"))
        );
        assert_eq!(
            t.get(&["connections", "hrdb", "sqlcommand"]),
            Some(&Value::from("select 1"))
        );
        assert_eq!(t.root.len(), 1, "{:?}", t.root);
        assert_eq!(
            t.origin(&["Connections", "HRDb", "Timeout"]),
            Origin::Env("CONNAGENT__connections__HRDB__Timeout".into())
        );
        assert_eq!(
            t.origin(&["Connections", "HRDb", "SqlCommand"]).to_string(),
            format!("{}:3:26", p.display())
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        // (A trailing comma is accepted, as the .NET reader does: a missing one is not.)
        let p = write(dir.path(), "{\n \"a\": 1\n \"b\": 2}");
        let mut d = Diagnostics::default();
        assert!(SettingsTree::load(&p, &[], &mut Default::default(), &mut d).is_none());
        let shown = d.0[0].to_string();
        assert!(shown.contains(":3:2:"), "{shown}");
    }
}
