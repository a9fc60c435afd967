//! The connections: their settings sections (matched without case), each connection's settings
//! typed by its package's spec and checked by the package, secured values made secrets, and the
//! data files checked against `SourcesRootPaths`.

use super::*;

/// The `Connections` sections, borrowed from the tree (it may hold secrets and is wiped when
/// dropped): two sections naming one connection are an error, a section naming none a warning.
pub(super) fn settings_sections<'t>(
    tree: &'t SettingsTree,
    conn_ids: &[Ident],
    d: &mut Diagnostics,
) -> Vec<(&'t String, &'t serde_json::Value)> {
    let sections: Vec<(&String, &serde_json::Value)> = match tree.get(&["Connections"]) {
        None => Vec::new(),
        Some(serde_json::Value::Object(m)) => m.iter().collect(),
        Some(_) => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Connections"])),
                    "Connections must be an object",
                )
                .hint("write \"Connections\": { \"<ConnectionIdentifier>\": { ...settings... } }"),
            );
            Vec::new()
        }
    };
    for (i, (key, _)) in sections.iter().enumerate() {
        if let Some((first, _)) = sections[..i]
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Connections", key])),
                    format!("settings sections Connections:{first} and Connections:{key} name the same connection (identifiers are compared without case)"),
                )
                .hint("merge the two sections into one"),
            );
        }
        if !conn_ids.iter().any(|c| c.matches(key)) {
            d.push(
                Diagnostic::warning(
                    Some(tree.origin(&["Connections", key])),
                    format!("settings section Connections:{key} matches no <Connection> in the XML configuration"),
                )
                .hint("correct the section name to a connection identifier, or remove the section"),
            );
        }
    }
    sections
}

/// Builds each declared connection: its connector, package and settings.
pub(super) fn build_connections(
    tree: &SettingsTree,
    top: &TopLevel,
    raw: Vec<RawConnection<'_>>,
    declared: &Declared<'_>,
    sections: &[(&String, &serde_json::Value)],
    registry: &Registry,
    d: &mut Diagnostics,
) -> Vec<Connection> {
    let agent = &top.agent;
    let find_connector = |id: &Ident| declared.connectors.iter().find(|c| &c.identifier == id);
    let tasks = &declared.tasks;
    let mut connections = Vec::new();
    for (el, id, connector_id, package_name, deactivation, transformations, display_name) in raw {
        let identifier = Ident::new(id);
        let connector_id = Ident::new(connector_id);
        let connector = find_connector(&connector_id);
        if connector.is_none() {
            d.push(
                Diagnostic::error(
                    Some(Origin::File(el.attr("Connector").map(|a| a.loc.clone()).unwrap_or_else(|| el.loc.clone()))),
                    format!("connection {identifier} names connector {connector_id}, which is not declared"),
                )
                .hint(format!("declare <Connector Identifier=\"{connector_id}\" .../> or correct Connector")),
            );
        }
        let served = connector.is_none_or(|c| c.agent.as_ref().is_none_or(|a| a == agent));
        let package = registry.find(package_name);
        if package.is_none() {
            d.push(
                Diagnostic::error(
                    Some(Origin::File(
                        el.attr("Package")
                            .map(|a| a.loc.clone())
                            .unwrap_or_else(|| el.loc.clone()),
                    )),
                    format!("connection {identifier} uses unknown package {package_name:?}"),
                )
                .hint(format!("use one of: {}", registry.known_names())),
            );
        }
        let section = sections.iter().find(|(k, _)| identifier.matches(k));
        let used_by_task = tasks.iter().any(|t| t.served && t.connection == identifier);
        let settings = match (section, &package) {
            (None, _) => {
                if served && used_by_task {
                    d.push(
                        Diagnostic::error(
                            loc_origin(&el.loc),
                            format!("connection {identifier} is exported by a task of this agent but has no settings section Connections:{identifier}"),
                        )
                        .hint(format!("add \"Connections\": {{ \"{identifier}\": {{ ... }} }} to {}", tree.path.display())),
                    );
                } else if served {
                    d.push(
                        Diagnostic::warning(
                            loc_origin(&el.loc),
                            format!("connection {identifier} has no settings section Connections:{identifier}; it cannot be tested or exported"),
                        )
                        .hint(format!("add its settings under Connections:{identifier} in {}", tree.path.display())),
                    );
                }
                SettingsState::Missing
            }
            (Some(_), None) => SettingsState::Invalid,
            (Some((key, value)), Some(package)) => {
                match build_settings(tree, key, value, package.info().settings, d) {
                    Some(settings) => {
                        let mut ok = true;
                        for p in package.check(&settings) {
                            let origin = match p.setting {
                                Some(s) => tree.origin(&["Connections", key, s]),
                                None => tree.origin(&["Connections", key]),
                            };
                            // The setting is named unless the message names it already.
                            let message = match p.setting {
                                Some(s) if !p.message.contains(s) => {
                                    format!("connection {identifier}, setting {s}: {}", p.message)
                                }
                                _ => format!("connection {identifier}: {}", p.message),
                            };
                            if p.warning {
                                d.push(Diagnostic::warning(Some(origin), message).hint(p.hint));
                            } else {
                                ok = false;
                                d.push(Diagnostic::error(Some(origin), message).hint(p.hint));
                            }
                        }
                        for (setting, path) in package.source_paths(&settings) {
                            let concealed = settings
                                .is_concealed(setting)
                                .then(|| settings.quote(setting));
                            if let Some(msg) =
                                outside_roots(&path, &top.sources_root_paths, concealed.as_deref())
                            {
                                ok = false;
                                d.push(
                                    Diagnostic::error(
                                        Some(tree.origin(&["Connections", key, setting])),
                                        format!("connection {identifier}: {setting} {msg}"),
                                    )
                                    .hint("move the file under one of SourcesRootPaths, or add its folder to SourcesRootPaths"),
                                );
                            }
                        }
                        if ok {
                            SettingsState::Ok(Arc::new(settings))
                        } else {
                            SettingsState::Invalid
                        }
                    }
                    None => SettingsState::Invalid,
                }
            }
        };
        connections.push(Connection {
            identifier,
            display_name,
            connector: connector_id,
            package_name: package_name.to_string(),
            package,
            deactivation,
            transformations,
            settings,
            served,
            loc: el.loc.clone(),
        });
    }
    connections
}

/// Builds a connection's typed settings from its section, reporting each problem where it is.
/// `ConnectionStringOptions` (secured key-value options) are merged into `ConnectionString`, and
/// kept only as a secret afterwards. False when they are malformed.
pub(super) fn merge_connection_string_options(
    tree: &SettingsTree,
    key: &str,
    values: &mut [(&'static str, SettingValue)],
    d: &mut Diagnostics,
) -> bool {
    let Some(i) = values
        .iter()
        .position(|(n, _)| *n == "ConnectionStringOptions")
    else {
        return true;
    };
    let origin = tree.origin(&["Connections", key, "ConnectionStringOptions"]);
    let bad = |d: &mut Diagnostics, msg: &str| {
        d.push(
            Diagnostic::error(
                Some(origin.clone()),
                format!("Connections:{key}:ConnectionStringOptions {msg}"),
            )
            .hint("write an object of keyword: value, e.g. {\"Password\": \"...\"}"),
        );
        false
    };
    // Each value goes into a Secret at once; the structured copy is wiped below.
    let pairs: Vec<(String, Secret)> = match &values[i].1 {
        SettingValue::Structured(serde_json::Value::Object(m)) => {
            let mut pairs = Vec::new();
            for (k, v) in m {
                let text = match v {
                    serde_json::Value::String(s) => Secret::new(s.as_str()),
                    serde_json::Value::Number(n) => Secret::new(n.to_string()),
                    serde_json::Value::Bool(b) => Secret::new(b.to_string()),
                    _ => {
                        return bad(
                            d,
                            &format!(
                                "has a value for {k:?} that is not text, a number or true/false"
                            ),
                        );
                    }
                };
                if k.trim().is_empty() || k.contains(['=', ';']) {
                    return bad(d, "has a keyword that is empty or holds '=' or ';'");
                }
                pairs.push((k.clone(), text));
            }
            pairs
        }
        _ => return bad(d, "is not an object"),
    };
    let Some((_, SettingValue::ConnectionString(cs))) =
        values.iter_mut().find(|(n, _)| *n == "ConnectionString")
    else {
        return bad(d, "needs ConnectionString, which it is merged into");
    };
    // Shown and compared as one secret: the pairs as JSON, written straight into a buffer
    // large enough that it never moves (a moved buffer would leave a copy behind).
    let shown: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    let room = shown
        .iter()
        .map(|(k, v)| 6 * (k.len() + v.len()) + 8)
        .sum::<usize>()
        + 2;
    let mut json = Vec::with_capacity(room);
    if serde_json::to_writer(&mut json, &shown).is_err() {
        json.zeroize();
    }
    drop(shown);
    let json = String::from_utf8(json).unwrap_or_default();
    cs.merge_secured_options(pairs);
    // The structured value it replaces is wiped as it is dropped (SettingValue's Drop).
    values[i].1 = SettingValue::Secret(Secret::new(json));
    true
}

/// A secured value written in plain text in the settings file itself is allowed, with a warning
/// that names the setting (never the value) and the safer places for it.
pub(super) fn plain_secret_warning(
    tree: &SettingsTree,
    key: &str,
    s: &SettingSpec,
    raw: &serde_json::Value,
    origin: &Origin,
    d: &mut Diagnostics,
) {
    let Origin::File(loc) = origin else { return };
    if loc.file != tree.path {
        return;
    }
    let Some(text) = raw.as_str() else { return };
    // A reference (`${...}`) was resolved from elsewhere: the file holds no secret.
    if tree.is_referenced(&["Connections", key, s.name]) {
        return;
    }
    if s.is_secret_text(text) {
        d.push(
            Diagnostic::warning(
                Some(origin.clone()),
                format!(
                    "Connections:{key}:{} holds a secret in plain text in the settings file",
                    s.name
                ),
            )
            .hint(format!(
                "move it out of the file: `connagent protect Connections:{key}:{}` (encrypted), a systemd credential, or CONNAGENT__Connections__{key}__{}",
                s.name, s.name
            )),
        );
    }
}

pub(super) fn build_settings(
    tree: &SettingsTree,
    key: &str,
    value: &serde_json::Value,
    spec: &'static [SettingSpec],
    d: &mut Diagnostics,
) -> Option<Settings> {
    let Some(obj) = value.as_object() else {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["Connections", key])),
                format!("Connections:{key} must be an object of settings"),
            )
            .hint(format!(
                "write \"{key}\": {{ \"Setting\": \"value\", ... }}"
            )),
        );
        return None;
    };
    let mut ok = true;
    let mut values = Vec::new();
    let mut concealed: Vec<(&'static str, String)> = Vec::new();
    for (name, raw) in obj {
        let origin = tree.origin(&["Connections", key, name]);
        let Some(s) = spec.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
            d.push(
                Diagnostic::warning(
                    Some(origin),
                    format!("Connections:{key}: unknown setting {name}; it is ignored"),
                )
                .hint(format!(
                    "settings of this package: {}",
                    spec.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                )),
            );
            continue;
        };
        if raw.is_null() || raw.as_str().is_some_and(|v| v.is_empty()) {
            continue;
        }
        let concealment = tree.concealment(&["Connections", key, name]);
        if let Some(label) = concealment {
            concealed.push((s.name, label.to_string()));
        }
        match coerce(s, raw) {
            Ok(v) => {
                plain_secret_warning(tree, key, s, raw, &origin, d);
                values.push((s.name, v));
            }
            Err(e) => {
                let e = match concealment {
                    Some(label) => e.concealed(label),
                    None => e,
                };
                ok = false;
                d.push(
                    Diagnostic::error(Some(origin), format!("Connections:{key}:{}: {e}", s.name))
                        .hint(format!("{} — {}", s.name, s.description)),
                );
            }
        }
    }
    if !merge_connection_string_options(tree, key, &mut values, d) {
        ok = false;
    }
    for s in spec.iter().filter(|s| s.required) {
        if !values.iter().any(|(n, _)| *n == s.name) {
            ok = false;
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Connections", key])),
                    format!(
                        "Connections:{key}: the required setting {} is missing",
                        s.name
                    ),
                )
                .hint(format!("add \"{}\": ... ({})", s.name, s.description)),
            );
        }
    }
    // Rejected values are dropped here, structured ones wiped (SettingValue's Drop).
    ok.then(|| {
        let mut settings = Settings::new(spec, values, &tree.dir);
        for (name, label) in concealed {
            settings.conceal(name, label);
        }
        settings
    })
}

/// `Some(reason)` when `path` (after resolving `..` and symbolic links) is outside every root.
/// `concealed` names a path that must not be shown (it came from a reference): then neither it
/// nor what it resolves to is shown.
pub(super) fn outside_roots(
    path: &Path,
    roots: &[PathBuf],
    concealed: Option<&str>,
) -> Option<String> {
    if roots.is_empty() {
        return None;
    }
    // Resolve what exists; a file that does not exist yet is judged by its folder.
    let resolved = path.canonicalize().ok().or_else(|| {
        let parent = path.parent()?.canonicalize().ok()?;
        Some(parent.join(path.file_name()?))
    });
    let shown = |p: &Path| {
        concealed
            .map(str::to_string)
            .unwrap_or_else(|| p.display().to_string())
    };
    let Some(resolved) = resolved else {
        return Some(format!(
            "{} cannot be resolved to check it against SourcesRootPaths",
            shown(path)
        ));
    };
    if roots.iter().any(|r| resolved.starts_with(r)) {
        None
    } else {
        let resolved_to = if resolved == path || concealed.is_some() {
            String::new()
        } else {
            format!(" (resolved to {})", resolved.display())
        };
        Some(format!(
            "{}{resolved_to} is outside SourcesRootPaths ({})",
            shown(path),
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
