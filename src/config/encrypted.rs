//! The encrypted settings overlay: `appsettings.encrypted.agent.json`, next to the settings file.
//!
//! Same tree as the settings file; every value in it is a string
//! `age:v1:<base64 of an age-encrypted file>` (the `age` format, X25519 recipient, binary, then
//! standard base64). `v1` is the version of this wrapping. The agent's identity (an age X25519
//! secret key, `AGE-SECRET-KEY-1...`) is in `Secrets:KeyFile` (default `agent.key` next to the
//! settings file), readable only by the agent's user. The overlay comes after the settings file
//! and before the environment: later wins per key.
//!
//! `connagent keygen` writes a key; `connagent protect Section:Key` encrypts a value read from
//! standard input into the overlay; `connagent keygen --rotate` makes a new key and re-encrypts the
//! overlay with it. Decrypted values exist in memory only.

use super::diag::{Diagnostic, Diagnostics, Location, Origin};
use super::jsonpos::JsonPositions;
use crate::fsutil::{limits, read_limited_text};
use crate::ident::get_ci;
use crate::secret::Secret;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::HashMap;

use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

pub const ENCRYPTED_FILE: &str = "appsettings.encrypted.agent.json";
pub const PREFIX: &str = "age:v1:";
pub const DEFAULT_KEY_FILE: &str = "agent.key";

/// How a value from the overlay is named in messages.
pub const ORIGIN_PREFIX: &str = "encrypted setting ";

/// Where the key file is: `Secrets:KeyFile` of the plain settings, relative to their folder.
pub fn key_path(root: &Map<String, Value>, dir: &Path) -> PathBuf {
    let configured = get_ci(root, "Secrets")
        .and_then(|s| s.as_object())
        .and_then(|s| get_ci(s, "KeyFile"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_KEY_FILE);
    let p = Path::new(configured);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Why the agent's key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the key file {path} can be read or written by other users (mode {mode:o}); it must be readable by the agent's user only: run `chmod 600 {path}`"
    )]
    Permissions { path: String, mode: u32 },
    #[error(
        "cannot read the key file {path}: {reason}; run `connagent keygen`, or set Secrets:KeyFile"
    )]
    Unreadable { path: String, reason: String },
    #[error("the key file {0} holds no age X25519 identity (AGE-SECRET-KEY-1...)")]
    NotAKey(String),
}

impl From<KeyError> for String {
    fn from(e: KeyError) -> String {
        e.to_string()
    }
}

/// Reads the agent's identity. A key file that other users may read is refused (as ssh refuses
/// such a private key): whoever reads it can decrypt every protected value.
pub fn read_identity(path: &Path) -> Result<age::x25519::Identity, KeyError> {
    let shown = || path.display().to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            return Err(KeyError::Permissions {
                path: shown(),
                mode: m.permissions().mode() & 0o777,
            });
        }
    }
    // The key file's text is the private key: wiped once parsed.
    let text = Zeroizing::new(
        read_limited_text(path, limits::VALUE_FILE, "a key file").map_err(|e| {
            KeyError::Unreadable {
                path: shown(),
                reason: e.to_string(),
            }
        })?,
    );
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    line.parse::<age::x25519::Identity>()
        .map_err(|_| KeyError::NotAKey(shown()))
}

/// Writes `content` to `path` through a temporary file (mode 0600), then renames it.
fn write_private(path: &Path, content: &[u8]) -> Result<(), String> {
    write_atomic(path, content, 0o600)
}

/// Writes a JSON tree (the overlay or the store) with [`write_private`].
fn write_tree(path: &Path, tree: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(tree)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    write_private(path, format!("{text}\n").as_bytes())
}

/// Writes `content` to `path` atomically with `mode` (see [`crate::fsutil::write_atomically_with_mode`]:
/// partial file, fsync, rename, fsync of the folder; the partial file removed on failure).
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    crate::fsutil::write_atomically_with_mode(path, content, Some(mode))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The key file's text, in a buffer that is wiped when dropped and never moves while filled.
fn key_text(identity: &age::x25519::Identity) -> Zeroizing<String> {
    use age::secrecy::ExposeSecret;
    let secret = identity.to_string();
    let public = identity.to_public().to_string();
    let mut text = Zeroizing::new(String::with_capacity(
        64 + public.len() + secret.expose_secret().len(),
    ));
    text.push_str("# connagent agent key; public key: ");
    text.push_str(&public);
    text.push('\n');
    text.push_str(secret.expose_secret());
    text.push('\n');
    text
}

/// Makes a new key at `path` (refusing to replace one unless `force`); returns its public key.
pub fn keygen(path: &Path, force: bool) -> Result<String, String> {
    if path.exists() && !force {
        return Err(format!(
            "the key file {} exists; values encrypted for it would be lost. Use `keygen --rotate` to replace it and re-encrypt the overlay",
            path.display()
        ));
    }
    let identity = age::x25519::Identity::generate();
    write_private(path, key_text(&identity).as_bytes())?;
    Ok(identity.to_public().to_string())
}

pub fn encrypt(recipient: &age::x25519::Recipient, plaintext: &str) -> Result<String, String> {
    let bytes = age::encrypt(recipient, plaintext.as_bytes())
        .map_err(|e| format!("encryption failed: {e}"))?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Decrypts one overlay value. The error never holds any part of the value.
pub fn decrypt(identity: &age::x25519::Identity, text: &str) -> Result<String, String> {
    let Some(b64) = text.strip_prefix(PREFIX) else {
        return Err(format!(
            "is not an encrypted value ({PREFIX}...); put plain values in appsettings.agent.json, or encrypt this one with `connagent protect`"
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "is not valid base64: the value was altered".to_string())?;
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "cannot be decrypted with the agent's key (wrong key, or the value was altered): {e}"
        )
    };
    // Not age::decrypt: it reads into a growing vector, and each move of it would leave a copy
    // of the plaintext behind. The plaintext is shorter than the ciphertext, so this buffer
    // never moves; age keeps its own chunks in zeroizing memory.
    let decryptor = age::Decryptor::new_buffered(&bytes[..]).map_err(|e| failed(&e))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| failed(&e))?;
    let mut plain = Zeroizing::new(Vec::with_capacity(bytes.len()));
    std::io::Read::read_to_end(&mut reader, &mut plain).map_err(|e| failed(&e))?;
    String::from_utf8(std::mem::take(&mut *plain)).map_err(|e| {
        e.into_bytes().zeroize();
        "decrypts to text that is not UTF-8".to_string()
    })
}

/// Reads the overlay next to the settings file, if there is one, and decrypts it. Returns the
/// decrypted tree and, for each lower-cased key path, its origin name. Problems go to `diags`.
pub fn load(
    dir: &Path,
    plain: &Map<String, Value>,
    hasher: &mut super::inputs::InputsHasher,
    diags: &mut Diagnostics,
) -> (Map<String, Value>, HashMap<String, String>) {
    let path = dir.join(ENCRYPTED_FILE);
    // Hashed whether or not it exists, right after the settings file, as `inputs::hash_now` does:
    // the daemon reloads when it appears, changes or goes.
    let read = read_settings_file(&path);
    hasher.file(&path, &read);
    load_at(&path, read, plain, dir, false, diags)
}

/// The connection store the central server writes (`SetSecuredOption`):
/// `<WorkFolderPath>/appsettings.connection.json`, same format as the overlay, read last. Not
/// hashed for change detection: every change to it goes through a reload.
pub const STORE_FILE: &str = "appsettings.connection.json";

pub fn store_path(plain: &Map<String, Value>, dir: &Path) -> PathBuf {
    let work = get_ci(plain, "WorkFolderPath")
        .and_then(Value::as_str)
        .unwrap_or("Work");
    let p = Path::new(work);
    if p.is_absolute() {
        p.join(STORE_FILE)
    } else {
        dir.join(p).join(STORE_FILE)
    }
}

/// The connection store of the agent whose settings file is `settings_file`.
pub fn store_path_of(settings_file: &Path) -> PathBuf {
    store_path(
        &plain_settings(settings_file),
        settings_file.parent().unwrap_or(Path::new(".")),
    )
}

pub fn load_store(
    dir: &Path,
    plain: &Map<String, Value>,
    diags: &mut Diagnostics,
) -> (Map<String, Value>, HashMap<String, String>) {
    let path = store_path(plain, dir);
    let read = read_settings_file(&path);
    load_at(&path, read, plain, dir, true, diags)
}

/// The overlay or the store: a regular file within the settings files' limit.
fn read_settings_file(path: &Path) -> Result<Vec<u8>, crate::fsutil::ReadError> {
    crate::fsutil::read_limited(
        path,
        crate::fsutil::limits::SETTINGS_FILE,
        "a settings file",
    )
}

/// Reads an overlay (`plain_allowed` false: every value encrypted) or the connection store
/// (`plain_allowed` true: plain values too, for connections created over gRPC). Decrypted values
/// are named by their origin; the key is read only when an encrypted value is met.
fn load_at(
    path: &Path,
    read: Result<Vec<u8>, crate::fsutil::ReadError>,
    plain: &Map<String, Value>,
    dir: &Path,
    plain_allowed: bool,
    diags: &mut Diagnostics,
) -> (Map<String, Value>, HashMap<String, String>) {
    let path = path.to_path_buf();
    let mut out = (Map::new(), HashMap::new());
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return out,
        // The store lives under WorkFolderPath: a WorkFolderPath that is a file is reported at
        // that setting by validation, not here as an unreadable file.
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotADirectory) => return out,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Some(Origin::File(Location::file_only(&path))),
                    format!("cannot read the encrypted settings: {e}"),
                )
                .hint("make the file readable by the agent's user"),
            );
            return out;
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let tree: Map<String, Value> = match serde_json::from_str(&super::jsonc::relaxed(&text)) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Some(Origin::File(Location::new(
                        &path,
                        u32::try_from(e.line()).unwrap_or(0),
                        u32::try_from(e.column()).unwrap_or(0),
                    ))),
                    format!("the encrypted settings are not a JSON object: {e}"),
                )
                .hint("write the file with `connagent protect`"),
            );
            return out;
        }
    };
    let key = key_path(plain, dir);
    let positions = JsonPositions::scan(&text);
    let mut walk = Walk {
        key: &key,
        identity: None,
        key_failed: false,
        plain_allowed,
        file: &path,
        positions: &positions,
        diags,
        origins: &mut out.1,
    };
    let mut keys = Vec::new();
    out.0 = walk.object(tree, &mut keys);
    out
}

struct Walk<'a> {
    key: &'a Path,
    /// Read at the first encrypted value.
    identity: Option<age::x25519::Identity>,
    key_failed: bool,
    plain_allowed: bool,
    file: &'a Path,
    positions: &'a JsonPositions,
    diags: &'a mut Diagnostics,
    origins: &'a mut HashMap<String, String>,
}

impl Walk<'_> {
    fn object(&mut self, m: Map<String, Value>, keys: &mut Vec<String>) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in m {
            keys.push(k.clone());
            let setting = keys.join(":");
            let value = match v {
                Value::Object(inner) => Some(Value::Object(self.object(inner, keys))),
                Value::String(s) if self.plain_allowed && !s.starts_with(PREFIX) => {
                    Some(Value::String(s))
                }
                Value::String(s) => match self.decrypt(&s) {
                    None => None,
                    Some(Ok(plain)) => {
                        self.origins.insert(
                            crate::ident::key_id(keys),
                            format!("{ORIGIN_PREFIX}{setting} ({})", self.file.display()),
                        );
                        Some(Value::String(plain))
                    }
                    Some(Err(e)) => {
                        self.error(keys, format!("{setting} {e}"));
                        None
                    }
                },
                other if self.plain_allowed => Some(other),
                _ => {
                    self.error(keys, format!("{setting} is not an encrypted string value"));
                    None
                }
            };
            if let Some(v) = value {
                out.insert(k, v);
            }
            keys.pop();
        }
        out
    }

    /// Decrypts with the agent's key, read once; `None` when the key cannot be read (said once).
    fn decrypt(&mut self, text: &str) -> Option<Result<String, String>> {
        if self.identity.is_none() && !self.key_failed {
            match read_identity(self.key) {
                Ok(i) => self.identity = Some(i),
                Err(e) => {
                    self.key_failed = true;
                    self.diags.push(
                        Diagnostic::error(Some(Origin::File(Location::file_only(self.file))), e)
                            .hint("the encrypted values can only be read with the key they were encrypted for"),
                    );
                }
            }
        }
        self.identity.as_ref().map(|i| decrypt(i, text))
    }

    fn error(&mut self, keys: &[String], message: String) {
        let segs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let loc = match self.positions.get(&segs) {
            Some((line, col)) => Location::new(self.file, line, col),
            None => Location::file_only(self.file),
        };
        self.diags.push(
            Diagnostic::error(Some(Origin::File(loc)), message)
                .hint("encrypt the value again with `connagent protect SETTING` (the value is read from standard input)"),
        );
    }
}

/// Reads the overlay file as JSON (empty when there is none).
fn read_overlay(path: &Path) -> Result<Map<String, Value>, String> {
    match read_limited_text(path, limits::SETTINGS_FILE, "a settings file") {
        Ok(t) => serde_json::from_str(&super::jsonc::relaxed(&t))
            .map_err(|e| format!("{} is not a JSON object: {e}", path.display())),
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => Ok(Map::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The settings file as JSON, without the other layers (empty when unreadable): enough to find
/// `Secrets:KeyFile` and `WorkFolderPath`.
pub fn plain_settings(settings_file: &Path) -> Map<String, Value> {
    // The file may hold plain secrets: its text and every other section are wiped.
    let text = Zeroizing::new(
        read_limited_text(settings_file, limits::SETTINGS_FILE, "a settings file")
            .unwrap_or_default(),
    );
    let mut all: Map<String, Value> =
        serde_json::from_str(&super::jsonc::relaxed(text.trim_start_matches('\u{feff}')))
            .unwrap_or_default();
    let wanted =
        |k: &str| k.eq_ignore_ascii_case("Secrets") || k.eq_ignore_ascii_case("WorkFolderPath");
    let keys: Vec<String> = all.keys().filter(|k| wanted(k)).cloned().collect();
    let kept = keys
        .into_iter()
        .filter_map(|k| all.remove(&k).map(|v| (k, v)))
        .collect();
    crate::secret::wipe_json_map(&mut all);
    kept
}

/// Sets `setting` (`Section:Key:...`) in the overlay to `value`, encrypted for the agent's key.
pub fn protect(settings_file: &Path, setting: &str, value: &str) -> Result<PathBuf, String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    let plain = plain_settings(settings_file);
    let segs: Vec<&str> = setting.split(':').map(str::trim).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "{setting:?} is not a setting path; write it like Connections:HRDb:Password"
        ));
    }
    let path = dir.join(ENCRYPTED_FILE);
    set_value(&path, &key_path(&plain, dir), &segs, Some(value))?;
    Ok(path)
}

/// Sets (or with `None` removes) `Connections:<connection>:<option>` in the connection store.
pub fn store_secured_option(
    settings_file: &Path,
    connection: &str,
    option: &str,
    value: Option<&str>,
) -> Result<PathBuf, String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    let plain = plain_settings(settings_file);
    let path = store_path(&plain, dir);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    set_value(
        &path,
        &key_path(&plain, dir),
        &["Connections", connection, option],
        value,
    )?;
    Ok(path)
}

/// The connection store's section `Connections:<connection>` (found without case), made if
/// missing.
fn store_section<'a>(
    tree: &'a mut Map<String, Value>,
    connection: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    let conns_key = tree
        .keys()
        .find(|k| k.eq_ignore_ascii_case("Connections"))
        .cloned()
        .unwrap_or_else(|| "Connections".to_string());
    let conns = tree
        .entry(conns_key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !conns.is_object() {
        *conns = Value::Object(Map::new());
    }
    let Value::Object(conns) = conns else {
        return Err("internal: Connections is not an object".into());
    };
    let key = conns
        .keys()
        .find(|k| k.eq_ignore_ascii_case(connection))
        .cloned()
        .unwrap_or_else(|| connection.to_string());
    let section = conns
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !section.is_object() {
        *section = Value::Object(Map::new());
    }
    match section {
        Value::Object(m) => Ok(m),
        _ => Err("internal: the section is not an object".into()),
    }
}

/// Replaces the plain settings of `Connections:<connection>` in the connection store with
/// `plain` (a connection managed over gRPC). Encrypted values stay unless `fresh` (a new
/// connection starts from nothing).
pub fn replace_plain_settings(
    settings_file: &Path,
    connection: &str,
    plain: Map<String, Value>,
    fresh: bool,
) -> Result<(), String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    let path = store_path(&plain_settings(settings_file), dir);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut tree = read_overlay(&path)?;
    let section = store_section(&mut tree, connection)?;
    section.retain(|_, v| !fresh && v.as_str().is_some_and(|s| s.starts_with(PREFIX)));
    for (k, v) in plain {
        section.insert(k, v);
    }
    write_tree(&path, &Value::Object(tree))
}

/// Removes `Connections:<connection>` from the connection store.
pub fn remove_section(settings_file: &Path, connection: &str) -> Result<(), String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    let path = store_path(&plain_settings(settings_file), dir);
    let mut tree = read_overlay(&path)?;
    if let Some(Value::Object(conns)) = tree
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("Connections"))
        .map(|(_, v)| v)
    {
        conns.retain(|k, _| !k.eq_ignore_ascii_case(connection));
    }
    if !path.exists() {
        return Ok(());
    }
    write_tree(&path, &Value::Object(tree))
}

fn set_value(path: &Path, key: &Path, segs: &[&str], value: Option<&str>) -> Result<(), String> {
    let identity = read_identity(key)?;
    let mut tree = read_overlay(path)?;
    let Some((last, parents)) = segs.split_last() else {
        return Err("an empty setting path".into());
    };
    let Some(value) = value else {
        // Remove, then drop the objects left empty.
        fn remove(m: &mut Map<String, Value>, segs: &[&str]) {
            let Some((first, rest)) = segs.split_first() else {
                return;
            };
            let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(first)).cloned() else {
                return;
            };
            if rest.is_empty() {
                m.remove(&k);
                return;
            }
            if let Some(Value::Object(inner)) = m.get_mut(&k) {
                remove(inner, rest);
                if inner.is_empty() {
                    m.remove(&k);
                }
            }
        }
        remove(&mut tree, segs);
        return write_tree(path, &Value::Object(tree));
    };
    let encrypted = encrypt(&identity.to_public(), value)?;
    let segs = parents;
    let mut cur = &mut tree;
    for seg in segs {
        let existing = cur.keys().find(|k| k.eq_ignore_ascii_case(seg)).cloned();
        let key = existing.unwrap_or_else(|| (*seg).to_string());
        let slot = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            return Err("internal: not an object".into());
        };
        cur = next;
    }
    let existing = cur.keys().find(|k| k.eq_ignore_ascii_case(last)).cloned();
    cur.insert(
        existing.unwrap_or_else(|| (*last).to_string()),
        Value::String(encrypted),
    );
    write_tree(path, &Value::Object(tree))
}

/// Makes a new key, re-encrypts every overlay value for it, then replaces the key file. Returns
/// the new public key and how many values were re-encrypted.
pub fn rotate(settings_file: &Path) -> Result<(String, usize), String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    let plain = plain_settings(settings_file);
    let key = key_path(&plain, dir);
    let old = read_identity(&key)?;
    let new = age::x25519::Identity::generate();
    let path = dir.join(ENCRYPTED_FILE);
    let tree = read_overlay(&path)?;
    fn re(
        v: Value,
        old: &age::x25519::Identity,
        new: &age::x25519::Recipient,
        keys: &mut Vec<String>,
        n: &mut usize,
    ) -> Result<Value, String> {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    keys.push(k.clone());
                    out.insert(k, re(v, old, new, keys, n)?);
                    keys.pop();
                }
                Ok(Value::Object(out))
            }
            Value::String(s) => {
                let plain = Zeroizing::new(
                    decrypt(old, &s).map_err(|e| format!("{} {e}", keys.join(":")))?,
                );
                *n += 1;
                Ok(Value::String(encrypt(new, &plain)?))
            }
            _ => Err(format!(
                "{} is not an encrypted string value",
                keys.join(":")
            )),
        }
    }
    let mut n = 0;
    let rotated = re(
        Value::Object(tree),
        &old,
        &new.to_public(),
        &mut Vec::new(),
        &mut n,
    )?;
    let store = store_path(&plain, dir);
    let store_tree = read_overlay(&store)?;
    let before = n;
    let store_rotated = re(
        Value::Object(store_tree),
        &old,
        &new.to_public(),
        &mut Vec::new(),
        &mut n,
    )?;
    // The old key is kept beside the new one until both files are written.
    let backup = key.with_extension("key.old");
    write_private(&backup, key_text(&old).as_bytes())?;
    if before > 0 {
        write_tree(&path, &rotated)?;
    }
    if n > before {
        write_tree(&store, &store_rotated)?;
    }
    write_private(&key, key_text(&new).as_bytes())?;
    let _ = std::fs::remove_file(&backup);
    Ok((new.to_public().to_string(), n))
}

/// The byte span of the string value of the key at `path` (a `"..."` literal, quotes included),
/// found from the key's position; `None` when the value is not a string.
fn string_value_span(
    text: &str,
    positions: &JsonPositions,
    path: &[&str],
) -> Option<(usize, usize)> {
    let (line, col) = positions.get(path)?;
    // Line and column (1-based, column in characters) to a byte offset.
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line as usize - 2)?.0 + 1
    };
    let key_at = line_start
        + text[line_start..]
            .char_indices()
            .nth(col as usize - 1)
            .map(|(i, _)| i)?;
    let bytes = text.as_bytes();
    // Skips a string literal starting at `i` (a '"'); returns the index after its closing quote.
    let skip_string = |mut i: usize| -> Option<usize> {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    };
    let mut i = skip_string(key_at)?;
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let end = skip_string(i)?;
    Some((i, end))
}

/// Moves every secured value written in plain text in the settings file (top-level settings of
/// each connection whose package marks them secured, and connection strings that hold a
/// secret) into the encrypted overlay, and blanks it (`""`) in the settings file, leaving the
/// rest of the file as written. Returns the settings moved.
pub fn protect_all(
    settings_file: &Path,
    connections: &[(String, &'static [crate::packages::spec::SettingSpec])],
) -> Result<Vec<String>, String> {
    let dir = settings_file.parent().unwrap_or(Path::new("."));
    // The file holds plain secrets: its text, the parsed tree and the values moved are wiped.
    let mut text = Zeroizing::new(
        read_limited_text(settings_file, limits::SETTINGS_FILE, "a settings file")
            .map_err(|e| format!("cannot read {}: {e}", settings_file.display()))?,
    );
    let plain: Map<String, Value> =
        serde_json::from_str(&super::jsonc::relaxed(text.trim_start_matches('\u{feff}')))
            .map_err(|e| format!("{} is not valid JSON: {e}", settings_file.display()))?;
    let plain = crate::secret::WipedJson(Value::Object(plain));
    let Value::Object(plain) = &plain.0 else {
        return Err("internal: not an object".into());
    };
    let key = key_path(plain, dir);
    read_identity(&key)?;
    let overlay = dir.join(ENCRYPTED_FILE);
    let Some(sections) = get_ci(plain, "Connections").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut moves: Vec<(String, String, Secret)> = Vec::new();
    for (id, specs) in connections {
        let Some((section, Value::Object(values))) =
            sections.iter().find(|(k, _)| k.eq_ignore_ascii_case(id))
        else {
            continue;
        };
        for (name, v) in values {
            let Some(spec) = specs.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
                continue;
            };
            let Some(value) = v.as_str() else { continue };
            if value.is_empty() || value.trim_start().starts_with("${") {
                continue;
            }
            if spec.is_secret_text(value) {
                moves.push((section.clone(), name.clone(), Secret::new(value)));
            }
        }
    }
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    // The overlay first: if writing it fails, the settings file is untouched.
    for (section, name, value) in &moves {
        set_value(
            &overlay,
            &key,
            &["Connections", section, name],
            Some(value.expose()),
        )?;
    }
    // Then blank the values in place, last first so that earlier spans stay valid (comments
    // blanked for the scan, at the same offsets; the file keeps them).
    let positions = JsonPositions::scan(&super::jsonc::relaxed(&text));
    let mut spans: Vec<(usize, usize)> = moves
        .iter()
        .filter_map(|(section, name, _)| {
            string_value_span(&text, &positions, &["Connections", section, name])
        })
        .collect();
    if spans.len() != moves.len() {
        return Err(format!(
            "the values are encrypted in {}, but some could not be found in {} to blank them; blank them by hand",
            overlay.display(),
            settings_file.display()
        ));
    }
    spans.sort();
    for (start, end) in spans.into_iter().rev() {
        text.replace_range(start..end, "\"\"");
    }
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(settings_file)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600)
    };
    write_atomic(settings_file, text.as_bytes(), mode)?;
    Ok(moves
        .into_iter()
        .map(|(s, n, _)| format!("Connections:{s}:{n}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_wrong_key_and_tampering() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let enc = encrypt(&id.to_public(), "s3cret;pw").unwrap();
        assert!(enc.starts_with("age:v1:") && !enc.contains("s3cret"));
        assert_eq!(decrypt(&id, &enc).unwrap(), "s3cret;pw");
        let e = decrypt(&other, &enc).unwrap_err();
        assert!(e.contains("wrong key"), "{e}");
        // Flip one byte of the ciphertext (near the end: the payload, not the header).
        let b64 = enc.strip_prefix(PREFIX).unwrap();
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        let tampered = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let e = decrypt(&id, &tampered).unwrap_err();
        assert!(e.contains("altered"), "{e}");
        assert!(
            decrypt(&id, "plain")
                .unwrap_err()
                .contains("not an encrypted value")
        );
    }
}
