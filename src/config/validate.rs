//! Turning the raw files into a validated [`Snapshot`], reporting every problem at once.

use super::diag::{Diagnostic, Diagnostics, Location, Origin};
use super::ident::{Ident, check_connection_identifier};
use super::model::*;
use super::settings::SettingsTree;
use super::xml::{self, RawElement};
use crate::packages::spec::{SettingSpec, SettingValue, coerce};
use crate::packages::{Registry, Settings};
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroize;

/// What `load` needs besides the files.
#[derive(Clone)]
pub struct LoadOptions {
    pub settings_path: PathBuf,
    /// The process environment (name, value), passed in so tests control it.
    pub env: Vec<(String, String)>,
}

impl LoadOptions {
    /// Options with the process environment. Variables whose name or value is not UTF-8 are
    /// skipped (they cannot be settings overrides).
    pub fn from_env(settings_path: PathBuf) -> Self {
        LoadOptions {
            settings_path,
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

/// Our copy of the environment may hold secrets (`CONNAGENT__...` overrides): wiped when dropped.
/// (The process environment itself keeps them for the life of the process.)
impl Drop for LoadOptions {
    fn drop(&mut self) {
        for (_, v) in &mut self.env {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    /// The environment may hold secrets: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("settings_path", &self.settings_path)
            .field("env", &format_args!("{} variables", self.env.len()))
            .finish()
    }
}

/// The attributes every element may carry for display names in up to 16 languages.
fn is_display_name(attr: &str) -> bool {
    attr.strip_prefix("DisplayName_L")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=16).contains(&n))
}

const AGENT_ATTRS: &[&str] = &["Identifier", "State", "URI"];
const CONNECTOR_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "IsDeactivated",
    "CompleteJob",
    "IncrementalJob",
    "MaximumDeletedLines",
    "MaximumInsertedLines",
    "MaximumUpdatedLines",
    "MaxPercentageDeletedLines",
    "MaxPercentageInsertedLines",
    "MaxPercentageUpdatedLines",
    "MaximumLinkDeletedLines",
    "MaximumLinkInsertedLines",
    "MaxLinkPercentageDeletedLines",
    "MaxLinkPercentageInsertedLines",
];
const CONNECTION_ATTRS: &[&str] = &[
    "Identifier",
    "Connector",
    "Package",
    "DeactivationExportFulfill",
];
const TRANSFORMATION_ATTRS: &[&str] = &[
    "Type",
    "Table",
    "Column",
    "InputColumn",
    "InputColumn2",
    "InputColumn3",
    "InputColumn4",
    "InputColumn5",
    "ConcatSeparator",
    "RemoveEmpty",
    "RemoveDuplicates",
    "SortValues",
    "AddedDays",
    "MinYear",
    "MaxYear",
    "DatePattern",
    "WhereOperator",
    "WhereValue",
];
const MAPPING_THRESHOLDS: &[&str] = &[
    "MaximumDeletedLines",
    "MaximumInsertedLines",
    "MaximumUpdatedLines",
    "MaxPercentageDeletedLines",
    "MaxPercentageInsertedLines",
    "MaxPercentageUpdatedLines",
];
const ETM_ATTRS: &[&str] = &["Identifier", "Connector", "ConnectionTable", "C0"];
const PROPERTY_ATTRS: &[&str] = &[
    "Identifier",
    "ConnectionColumn",
    "IsPrimaryKey",
    "IsUniqueKey",
    "Format",
];
const EAM_ATTRS: &[&str] = &[
    "Identifier",
    "Connector",
    "ConnectionTable",
    "Column1",
    "Column2",
    "EntityPropertyMapping1",
    "EntityPropertyMapping2",
    "C0",
];
const EXPORT_TASK_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "OpenIdClient",
    "Connection",
    "ContinueOnError",
    "IgnoreCookieFile",
    "InitMode",
];
const JOB_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "CronTabExpression",
    "CronTimeZone",
    "IsIncremental",
    "IsInitializationJob",
    "IsConnectorJob",
    "UserStartDenied",
    "LogLevel",
];
const STEP_ATTRS: &[&str] = &["Identifier", "Task", "Level"];

/// Reads one element's attributes, recording problems as it goes.
struct Attrs<'a> {
    el: &'a RawElement,
    known: &'static [&'static str],
    extra: &'static [&'static str],
}

impl<'a> Attrs<'a> {
    fn new(el: &'a RawElement, known: &'static [&'static str]) -> Self {
        Attrs {
            el,
            known,
            extra: &[],
        }
    }

    fn with(mut self, extra: &'static [&'static str]) -> Self {
        self.extra = extra;
        self
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.el.attr(name).map(|a| a.value.trim())
    }

    fn origin_of(&self, name: &str) -> Option<Origin> {
        Some(Origin::File(
            self.el
                .attr(name)
                .map(|a| a.loc.clone())
                .unwrap_or_else(|| self.el.loc.clone()),
        ))
    }

    fn required(&self, name: &str, what: &str, d: &mut Diagnostics) -> Option<&'a str> {
        match self.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Some(v),
            None => {
                d.push(
                    Diagnostic::error(
                        self.el.origin(),
                        format!("<{}> has no {name} attribute", self.el.name),
                    )
                    .hint(format!("add {name}=\"...\" ({what})")),
                );
                None
            }
        }
    }

    fn boolean(&self, name: &str, default: bool, d: &mut Diagnostics) -> bool {
        match self.get(name) {
            None => default,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                d.push(
                    Diagnostic::error(
                        self.origin_of(name),
                        format!("{name}=\"{v}\" is not a boolean"),
                    )
                    .hint(format!("write {name}=\"true\" or {name}=\"false\"")),
                );
                default
            }
        }
    }

    fn display_name(&self, fallback: &str) -> String {
        self.get("DisplayName_L1").unwrap_or(fallback).to_string()
    }

    /// Warns about attributes this element does not have.
    fn finish(self, d: &mut Diagnostics) {
        for a in &self.el.attrs {
            if a.namespaced {
                continue;
            }
            if !self.known.contains(&a.name.as_str())
                && !self.extra.contains(&a.name.as_str())
                && !is_display_name(&a.name)
            {
                let mut known: Vec<&str> = self.known.iter().chain(self.extra).copied().collect();
                known.push("DisplayName_L1");
                d.push(
                    Diagnostic::warning(
                        Some(Origin::File(a.loc.clone())),
                        format!(
                            "<{}> has no attribute {}; it is ignored",
                            self.el.name, a.name
                        ),
                    )
                    .hint(format!(
                        "check the spelling; known attributes: {}",
                        known.join(", ")
                    )),
                );
            }
        }
    }
}

fn loc_origin(loc: &Location) -> Option<Origin> {
    Some(Origin::File(loc.clone()))
}

/// Reports the second and later uses of an identifier, naming the first place.
fn check_duplicates<'a>(
    kind: &str,
    items: impl Iterator<Item = (&'a Ident, &'a Location)>,
    d: &mut Diagnostics,
) {
    let mut seen: HashMap<&Ident, &Location> = HashMap::new();
    for (id, loc) in items {
        if let Some(first) = seen.get(id) {
            d.push(
                Diagnostic::error(
                    loc_origin(loc),
                    format!("{kind} {id} is declared twice; identifiers are compared without case, and it was first declared at {first}"),
                )
                .hint(format!("rename or remove one of the two {kind} declarations")),
            );
        } else {
            seen.insert(id, loc);
        }
    }
}

/// The stack of the thread that loads a configuration ([`load_isolated`]). Loading walks bounded
/// trees (XML at most [`super::xml::MAX_DEPTH`] deep, JSON at most serde_json's 128 levels), well
/// within this; it is large so that no future walk comes near it, and it is only address space
/// until used.
pub const LOAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// [`load`] on a thread of its own whose stack the agent sets ([`LOAD_STACK_BYTES`]), whatever
/// thread calls it (a runtime worker has a small stack); a panic while loading becomes an error
/// diagnostic instead of taking the caller down. Every load of the CLI and the daemon goes
/// through here.
pub fn load_isolated(
    opts: LoadOptions,
    registry: std::sync::Arc<Registry>,
) -> Result<Loaded, Diagnostics> {
    let settings = opts.settings_path.clone();
    let failed = |message: String| {
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(Some(Origin::File(Location::file_only(&settings))), message).hint(
                "this is a defect of the agent: report it with the configuration that caused it",
            ),
        );
        d
    };
    let spawned = std::thread::Builder::new()
        .name("config-load".into())
        .stack_size(LOAD_STACK_BYTES)
        .spawn(move || load(&opts, &registry));
    match spawned {
        Err(e) => Err(failed(format!(
            "cannot start the thread that loads the configuration: {e}"
        ))),
        Ok(handle) => handle.join().unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(failed(format!(
                "loading the configuration stopped unexpectedly: {what}"
            )))
        }),
    }
}

/// Loads and validates everything. `Err` when not even the settings file could be read; otherwise a
/// snapshot with all the diagnostics (the snapshot is safe to run only without errors). No message
/// quotes a value that came from a reference, the encrypted overlay, a credential or the
/// connection store: such values are named instead, and, as a last line of defence, masked by
/// their name wherever a message would still hold one.
pub fn load(opts: &LoadOptions, registry: &Registry) -> Result<Loaded, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut hasher = super::inputs::InputsHasher::new();
    let Some(tree) = SettingsTree::load(&opts.settings_path, &opts.env, &mut hasher, &mut d) else {
        return Err(d);
    };
    let net = tree.concealed_redactor();
    let mut loaded = load_tree(&tree, hasher, d, registry);
    if !net.is_empty() {
        for diag in &mut loaded.diagnostics.0 {
            diag.message = net.redact(&diag.message);
            diag.hint = diag.hint.as_deref().map(|h| net.redact(h));
        }
    }
    Ok(loaded)
}

/// The checks of one top-level folder setting: a path that exists and is not a folder is an error
/// at the setting.
fn check_folder(tree: &SettingsTree, key: &str, folder: &Path, d: &mut Diagnostics) {
    if let Ok(meta) = std::fs::metadata(folder)
        && !meta.is_dir()
    {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&[key])),
                format!(
                    "{key} names {}, which is {}, not a folder",
                    shown_folder(tree, key, folder),
                    crate::fsutil::kind_of(meta.file_type())
                ),
            )
            .hint(format!(
                "set {key} to a folder (it is created when missing), or move the file away"
            )),
        );
    }
}

/// A folder setting's path as a message may show it (never a concealed value).
fn shown_folder(tree: &SettingsTree, key: &str, folder: &Path) -> String {
    match tree.concealment(&[key]) {
        Some(label) => super::settings::concealed_label(label),
        None => folder.display().to_string(),
    }
}

fn load_tree(
    tree: &SettingsTree,
    mut hasher: super::inputs::InputsHasher,
    mut d: Diagnostics,
    registry: &Registry,
) -> Loaded {
    // ---- top-level settings
    let text_setting = |path: &[&str], d: &mut Diagnostics| -> Option<String> {
        match tree.get(path)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            _ => {
                d.push(
                    Diagnostic::error(
                        Some(tree.origin(path)),
                        format!("{} must be a string", path.join(":")),
                    )
                    .hint("put the value in double quotes"),
                );
                None
            }
        }
    };
    let agent = text_setting(&["Agent", "Identifier"], &mut d)
        .or_else(|| text_setting(&["OpenId", "AgentIdentifier"], &mut d))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "Local".to_string());
    let agent = Ident::new(agent.trim());
    let folder = |key: &str, default: &str, d: &mut Diagnostics| {
        tree.resolve_path(&text_setting(&[key], d).unwrap_or_else(|| default.to_string()))
    };
    let temp_folder = folder("TempFolderPath", "Temp", &mut d);
    let work_folder = folder("WorkFolderPath", "Work", &mut d);
    let xml_folder = folder("XmlConfigurationPath", "xml-config", &mut d);
    check_folder(tree, "TempFolderPath", &temp_folder, &mut d);
    check_folder(tree, "WorkFolderPath", &work_folder, &mut d);
    let max_task_batch_size = match tree.get(&["Jobs", "MaxTaskBatchSize"]) {
        None => 5,
        Some(v) => {
            match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(n) if (1..=1000).contains(&n) => n as usize,
                _ => {
                    d.push(
                    Diagnostic::error(
                        Some(tree.origin(&["Jobs", "MaxTaskBatchSize"])),
                        format!("Jobs:MaxTaskBatchSize is {}; it must be a whole number from 1 to 1000", tree.quote(&["Jobs", "MaxTaskBatchSize"])),
                    )
                    .hint("set how many exports may run at once, e.g. 5"),
                );
                    5
                }
            }
        }
    };
    let mut sources_root_paths = Vec::new();
    if let Some(v) = tree.get(&["SourcesRootPaths"]) {
        let items: Vec<(usize, &serde_json::Value)> = match v {
            serde_json::Value::Array(a) => a.iter().enumerate().collect(),
            other => vec![(0, other)],
        };
        for (i, item) in items {
            let idx = i.to_string();
            let origin = tree.origin(&["SourcesRootPaths", &idx]);
            match item.as_str() {
                Some(s) => {
                    let p = tree.resolve_path(s);
                    match p.canonicalize() {
                        Ok(c) => sources_root_paths.push(c),
                        Err(e) => {
                            d.push(
                                Diagnostic::warning(
                                    Some(origin),
                                    format!(
                                        "SourcesRootPaths entry {} cannot be resolved: {e}",
                                        p.display()
                                    ),
                                )
                                .hint("create the folder or remove the entry"),
                            );
                            sources_root_paths.push(p);
                        }
                    }
                }
                None => d.push(
                    Diagnostic::error(
                        Some(origin),
                        "SourcesRootPaths must be a list of folder paths",
                    )
                    .hint("write \"SourcesRootPaths\": [\"/srv/sources\"]"),
                ),
            }
        }
    }

    let grpc = super::service::grpc_settings(tree, &mut d);
    let daemon = super::service::daemon_settings(tree, &mut d);
    let control_plane = super::service::control_plane_settings(tree, &mut d);

    // ---- XML
    let xml_files = if xml_folder.is_dir() {
        xml::find_xml_files(&xml_folder, &mut d)
    } else {
        // Reported at the setting (or at the settings file when the default is in use).
        let kind = std::fs::metadata(&xml_folder)
            .map(|m| format!("is {}, not a folder", crate::fsutil::kind_of(m.file_type())))
            .unwrap_or_else(|_| "does not exist".to_string());
        let written = tree.get(&["XmlConfigurationPath"]).is_some();
        d.push(
            Diagnostic::error(
                Some(if written {
                    tree.origin(&["XmlConfigurationPath"])
                } else {
                    Origin::File(Location::new(&tree.path, 1, 1))
                }),
                format!(
                    "the XML configuration folder {kind}: {}{}",
                    shown_folder(tree, "XmlConfigurationPath", &xml_folder),
                    if written {
                        ""
                    } else {
                        " (XmlConfigurationPath is not set: this is its default, next to the settings file)"
                    }
                ),
            )
            .hint(format!(
                "set XmlConfigurationPath in {} to the folder that holds the *.xml configuration",
                tree.path.display()
            )),
        );
        Vec::new()
    };
    if xml_folder.is_dir() && xml_files.is_empty() {
        d.push(
            Diagnostic::warning(
                Some(Origin::File(Location::file_only(&xml_folder))),
                "the XML configuration folder holds no *.xml file",
            )
            .hint("put the configuration files (<ConfigurationFile> ...) in this folder"),
        );
    }
    let mut elements = Vec::new();
    for f in &xml_files {
        elements.extend(xml::parse_file(f, &mut hasher, &mut d));
    }

    let mut agents = Vec::new();
    let mut connectors = Vec::new();
    let mut raw_connections = Vec::new();
    let mut etms = Vec::new();
    let mut eams = Vec::new();
    let mut tasks = Vec::new();
    let mut jobs = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();

    for el in &elements {
        match el.name.as_str() {
            "Agent" => {
                count_unknown_children(el, &[], &mut skipped);
                let a = Attrs::new(el, AGENT_ATTRS);
                if let Some(id) = a.required("Identifier", "the agent's identifier", &mut d) {
                    agents.push(AgentDecl {
                        identifier: Ident::new(id),
                        display_name: a.display_name(id),
                        uri: a.get("URI").map(str::to_string),
                        loc: el.loc.clone(),
                    });
                }
                a.finish(&mut d);
            }
            "Connector" => {
                count_unknown_children(el, &[], &mut skipped);
                let a = Attrs::new(el, CONNECTOR_ATTRS);
                let is_deactivated = a.boolean("IsDeactivated", false, &mut d);
                if let Some(id) = a.required("Identifier", "the connector's identifier", &mut d) {
                    connectors.push(Connector {
                        identifier: Ident::new(id),
                        display_name: a.display_name(id),
                        agent: a.get("Agent").filter(|s| !s.is_empty()).map(Ident::new),
                        is_deactivated,
                        loc: el.loc.clone(),
                    });
                }
                a.finish(&mut d);
            }
            "Connection" => {
                let a = Attrs::new(el, CONNECTION_ATTRS);
                let id = a.required("Identifier", "the connection's identifier", &mut d);
                let connector = a.required(
                    "Connector",
                    "the identifier of the connector it belongs to",
                    &mut d,
                );
                let package = a.required(
                    "Package",
                    &format!("one of: {}", registry.known_names()),
                    &mut d,
                );
                let deactivation = match a.get("DeactivationExportFulfill") {
                    None => Deactivation::None,
                    Some(v) if v.eq_ignore_ascii_case("None") || v == "0" => Deactivation::None,
                    Some(v) if v.eq_ignore_ascii_case("Export") || v == "1" => Deactivation::Export,
                    Some(v) if v.eq_ignore_ascii_case("Fulfill") || v == "2" => {
                        Deactivation::Fulfill
                    }
                    Some(v) => {
                        d.push(
                            Diagnostic::error(
                                a.origin_of("DeactivationExportFulfill"),
                                format!("DeactivationExportFulfill=\"{v}\" is not a known value"),
                            )
                            .hint("use None, Export or Fulfill"),
                        );
                        Deactivation::None
                    }
                };
                if let Some(id) = id
                    && let Err(e) = check_connection_identifier(id)
                {
                    d.push(
                        Diagnostic::error(a.origin_of("Identifier"), format!("connection {e}"))
                            .hint("start with a letter and use only letters, digits, '.' and '-'"),
                    );
                }
                let mut transformations = Vec::new();
                for child in &el.children {
                    if child.name == "Transformation" {
                        let t = Attrs::new(child, TRANSFORMATION_ATTRS);
                        check_transformation(&t, id, &mut d);
                        transformations.push(Transformation {
                            attributes: child
                                .attrs
                                .iter()
                                .map(|a| (a.name.clone(), a.value.clone()))
                                .collect(),
                            loc: child.loc.clone(),
                        });
                        t.finish(&mut d);
                    } else {
                        *skipped
                            .entry(format!("Connection/{}", child.name))
                            .or_default() += 1;
                    }
                }
                if let (Some(id), Some(connector), Some(package)) = (id, connector, package) {
                    raw_connections.push((
                        el,
                        id,
                        connector,
                        package,
                        deactivation,
                        transformations,
                        a.display_name(id),
                    ));
                }
                a.finish(&mut d);
            }
            "EntityTypeMapping" => {
                let a = Attrs::new(el, ETM_ATTRS).with(MAPPING_THRESHOLDS);
                let mut properties = Vec::new();
                count_unknown_children(el, &["Property"], &mut skipped);
                for child in el.children.iter().filter(|c| c.name == "Property") {
                    let p = Attrs::new(child, PROPERTY_ATTRS);
                    if let Some(pid) = p.required("Identifier", "the entity property", &mut d) {
                        properties.push(MappingProperty {
                            identifier: pid.to_string(),
                            connection_column: p.get("ConnectionColumn").map(str::to_string),
                            is_primary_key: p.boolean("IsPrimaryKey", false, &mut d),
                            is_unique_key: p.boolean("IsUniqueKey", false, &mut d),
                            format: p.get("Format").map(str::to_string),
                        });
                    }
                    p.finish(&mut d);
                }
                if let Some(id) = a.required("Identifier", "the entity type it maps", &mut d) {
                    etms.push(EntityTypeMapping {
                        identifier: Ident::new(id),
                        connector: a.get("Connector").filter(|s| !s.is_empty()).map(Ident::new),
                        connection_table: a
                            .get("ConnectionTable")
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        connection: None,
                        properties,
                        loc: el.loc.clone(),
                    });
                }
                a.finish(&mut d);
            }
            "EntityAssociationMapping" => {
                count_unknown_children(el, &[], &mut skipped);
                let a = Attrs::new(el, EAM_ATTRS).with(MAPPING_THRESHOLDS);
                let id = a.required("Identifier", "the entity association it maps", &mut d);
                let connector = a.required(
                    "Connector",
                    "the connector that holds the association",
                    &mut d,
                );
                let c1 = a.required("Column1", "the column holding the first end's key", &mut d);
                let c2 = a.required("Column2", "the column holding the second end's key", &mut d);
                if let (Some(id), Some(connector), Some(c1), Some(c2)) = (id, connector, c1, c2) {
                    eams.push(EntityAssociationMapping {
                        identifier: Ident::new(id),
                        connector: Ident::new(connector),
                        connection_table: a
                            .get("ConnectionTable")
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                        connection: None,
                        column1: c1.to_string(),
                        column2: c2.to_string(),
                        loc: el.loc.clone(),
                    });
                }
                a.finish(&mut d);
            }
            "ExportTask" => {
                count_unknown_children(el, &[], &mut skipped);
                let a = Attrs::new(el, EXPORT_TASK_ATTRS);
                let task_agent = a.required("Agent", "the agent that runs the task", &mut d);
                let connection = a.required("Connection", "the connection to export", &mut d);
                let continue_on_error = a.boolean("ContinueOnError", false, &mut d);
                let ignore_cookie_file = a.boolean("IgnoreCookieFile", false, &mut d);
                a.boolean("InitMode", false, &mut d);
                if let (Some(task_agent), Some(connection)) = (task_agent, connection) {
                    let identifier = a
                        .get("Identifier")
                        .filter(|s| !s.is_empty())
                        .map(Ident::new)
                        .unwrap_or_else(|| Ident::new(format!("ExportTask@{}", el.loc)));
                    tasks.push(ExportTask {
                        display_name: a.display_name(identifier.as_str()),
                        identifier,
                        agent: Ident::new(task_agent),
                        connection: Ident::new(connection),
                        continue_on_error,
                        ignore_cookie_file,
                        served: Ident::new(task_agent) == agent,
                        loc: el.loc.clone(),
                    });
                }
                a.finish(&mut d);
            }
            "Job" => {
                let a = Attrs::new(el, JOB_ATTRS);
                let mut steps = Vec::new();
                for child in &el.children {
                    if child.name != "Step" {
                        *skipped.entry(format!("Job/{}", child.name)).or_default() += 1;
                        continue;
                    }
                    let s = Attrs::new(child, STEP_ATTRS);
                    let task = s
                        .get("Task")
                        .or_else(|| s.get("Identifier"))
                        .filter(|t| !t.is_empty());
                    let level = match s.get("Level") {
                        None => -1,
                        Some(v) => v.parse().unwrap_or_else(|_| {
                            d.push(
                                Diagnostic::error(s.origin_of("Level"), format!("Level=\"{v}\" is not a whole number"))
                                    .hint("steps with the same Level run together; write Level=\"0\", \"1\", ..."),
                            );
                            -1
                        }),
                    };
                    match task {
                        Some(t) => steps.push((
                            JobStep {
                                task: Ident::new(t),
                                level,
                            },
                            child.loc.clone(),
                        )),
                        None => d.push(
                            Diagnostic::error(child.origin(), "<Step> names no task")
                                .hint("add Task=\"<task identifier>\""),
                        ),
                    }
                    s.finish(&mut d);
                }
                let utc = match a.get("CronTimeZone") {
                    None => true,
                    Some(v) if v == "0" || v.eq_ignore_ascii_case("UTC") => true,
                    Some(v)
                        if v == "1"
                            || v.eq_ignore_ascii_case("ServerTime")
                            || v.eq_ignore_ascii_case("Local") =>
                    {
                        false
                    }
                    Some(v) => {
                        d.push(
                            Diagnostic::error(
                                a.origin_of("CronTimeZone"),
                                format!("CronTimeZone=\"{v}\" is not known"),
                            )
                            .hint("use 0 (UTC) or 1 (the server's local time)"),
                        );
                        true
                    }
                };
                let schedule = a.get("CronTabExpression").filter(|e| !e.is_empty()).and_then(|e| {
                    use croner::parser::{CronParser, Seconds, Year};
                    let parser = CronParser::builder().seconds(Seconds::Required).year(Year::Disallowed).build();
                    match parser.parse(e) {
                        Ok(cron) => Some(CronSchedule { expression: e.to_string(), cron, utc }),
                        Err(err) => {
                            d.push(
                                Diagnostic::error(
                                    a.origin_of("CronTabExpression"),
                                    format!("CronTabExpression=\"{e}\" is not a six-field cron expression (seconds first): {err}"),
                                )
                                .hint("write second minute hour day-of-month month day-of-week, e.g. \"0 */15 * * * *\" for every 15 minutes"),
                            );
                            None
                        }
                    }
                });
                if let Some(id) = a.required("Identifier", "the job's identifier", &mut d) {
                    jobs.push((
                        Job {
                            identifier: Ident::new(id),
                            display_name: a.display_name(id),
                            agent: a.get("Agent").filter(|s| !s.is_empty()).map(Ident::new),
                            schedule,
                            steps: steps.iter().map(|(s, _)| s.clone()).collect(),
                            loc: el.loc.clone(),
                        },
                        steps,
                    ));
                }
                a.finish(&mut d);
            }
            other => *skipped.entry(other.to_string()).or_default() += 1,
        }
    }

    // ---- identity and references
    check_duplicates(
        "agent",
        agents.iter().map(|a| (&a.identifier, &a.loc)),
        &mut d,
    );
    check_duplicates(
        "connector",
        connectors.iter().map(|c| (&c.identifier, &c.loc)),
        &mut d,
    );
    let conn_ids: Vec<Ident> = raw_connections.iter().map(|c| Ident::new(c.1)).collect();
    check_duplicates(
        "connection",
        conn_ids
            .iter()
            .zip(raw_connections.iter().map(|c| &c.0.loc)),
        &mut d,
    );
    check_duplicates(
        "export task",
        tasks.iter().map(|t| (&t.identifier, &t.loc)),
        &mut d,
    );
    check_duplicates(
        "job",
        jobs.iter().map(|(j, _)| (&j.identifier, &j.loc)),
        &mut d,
    );
    check_duplicates(
        "entity type mapping",
        etms.iter().map(|m| (&m.identifier, &m.loc)),
        &mut d,
    );
    check_duplicates(
        "entity association mapping",
        eams.iter().map(|m| (&m.identifier, &m.loc)),
        &mut d,
    );

    let find_connector = |id: &Ident| connectors.iter().find(|c| &c.identifier == id);
    let agent_known = |id: &Ident| id == &agent || agents.iter().any(|a| &a.identifier == id);
    for c in &connectors {
        if let Some(a) = &c.agent
            && !agent_known(a)
        {
            d.push(
                Diagnostic::warning(loc_origin(&c.loc), format!("connector {} names agent {a}, which is neither this agent ({agent}) nor declared with <Agent>", c.identifier))
                    .hint(format!("if this agent should serve it, set Agent=\"{agent}\" or Agent:Identifier in the settings")),
            );
        }
    }

    // Settings sections, matched case-insensitively to connections.
    // Borrowed, not copied: the tree may hold secrets, and it is wiped when dropped.
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

    let mut connections = Vec::new();
    for (el, id, connector_id, package_name, deactivation, transformations, display_name) in
        raw_connections
    {
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
        let served = connector.is_none_or(|c| c.agent.as_ref().is_none_or(|a| a == &agent));
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
                match build_settings(tree, key, value, package.info().settings, &mut d) {
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
                                outside_roots(&path, &sources_root_paths, concealed.as_deref())
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

    for t in &tasks {
        match connections.iter().find(|c| c.identifier == t.connection) {
            None => d.push(
                Diagnostic::error(
                    loc_origin(&t.loc),
                    format!("export task {} names connection {}, which is not declared", t.identifier, t.connection),
                )
                .hint("declare the <Connection> or correct the task's Connection attribute"),
            ),
            Some(c) if t.served && !c.served => d.push(
                Diagnostic::warning(
                    loc_origin(&t.loc),
                    format!("export task {} runs on this agent but connection {} belongs to a connector served by another agent", t.identifier, c.identifier),
                )
                .hint("make the task's Agent and the connector's Agent the same"),
            ),
            Some(_) => {}
        }
        if !agent_known(&t.agent) {
            d.push(
                Diagnostic::warning(
                    loc_origin(&t.loc),
                    format!("export task {} names agent {}, which is neither this agent ({agent}) nor declared with <Agent>", t.identifier, t.agent),
                )
                .hint(format!("set Agent=\"{agent}\" for this agent to run the task")),
            );
        }
    }
    for (job, steps) in &jobs {
        for (step, loc) in steps {
            if !tasks.iter().any(|t| t.identifier == step.task) {
                d.push(
                    Diagnostic::error(
                        loc_origin(loc),
                        format!(
                            "job {} has a step for task {}, which is not declared",
                            job.identifier, step.task
                        ),
                    )
                    .hint("declare the task (with that Identifier) or correct the step"),
                );
            }
        }
    }

    // Mappings: connector and connection table must resolve.
    let resolve_table = |table: &str| -> Option<Ident> {
        let name = crate::table_name::TableName::parse(table)?;
        conn_ids.iter().find(|c| name.belongs_to(c)).cloned()
    };
    let check_mapping = |kind: &str,
                         id: &Ident,
                         connector: Option<&Ident>,
                         table: Option<&String>,
                         loc: &Location,
                         d: &mut Diagnostics|
     -> Option<Ident> {
        if let Some(c) = connector
            && find_connector(c).is_none()
        {
            d.push(
                Diagnostic::error(
                    loc_origin(loc),
                    format!("{kind} {id} names connector {c}, which is not declared"),
                )
                .hint("declare the <Connector> or correct the mapping's Connector attribute"),
            );
        }
        let table = table?;
        match resolve_table(table) {
            Some(conn) => Some(conn),
            None => {
                d.push(
                    Diagnostic::error(
                        loc_origin(loc),
                        format!("{kind} {id} reads ConnectionTable {table:?}, which belongs to no declared connection"),
                    )
                    .hint("connection tables are named <Connection> or <Connection>_<table>; correct ConnectionTable or declare the connection"),
                );
                None
            }
        }
    };
    for m in &mut etms {
        m.connection = check_mapping(
            "entity type mapping",
            &m.identifier,
            m.connector.as_ref(),
            m.connection_table.as_ref(),
            &m.loc,
            &mut d,
        );
    }
    for m in &mut eams {
        m.connection = check_mapping(
            "entity association mapping",
            &m.identifier,
            Some(&m.connector),
            m.connection_table.as_ref(),
            &m.loc,
            &mut d,
        );
    }

    let snapshot = Snapshot {
        settings_file: tree.path.clone(),
        agent,
        temp_folder,
        work_folder,
        xml_folder,
        sources_root_paths,
        max_task_batch_size,
        grpc,
        control_plane,
        daemon,
        xml_files,
        agents,
        connectors,
        connections,
        entity_type_mappings: etms,
        association_mappings: eams,
        export_tasks: tasks,
        jobs: jobs.into_iter().map(|(j, _)| j).collect(),
        skipped,
    };
    Loaded {
        snapshot,
        diagnostics: d,
        inputs_hash: hasher.finish(),
    }
}

/// Counts children that the agent does not read, as `Parent/Child`, for `validate`'s summary.
fn count_unknown_children(el: &RawElement, known: &[&str], skipped: &mut BTreeMap<String, usize>) {
    for c in el
        .children
        .iter()
        .filter(|c| !known.contains(&c.name.as_str()))
    {
        *skipped
            .entry(format!("{}/{}", el.name, c.name))
            .or_default() += 1;
    }
}

fn check_transformation(t: &Attrs, connection: Option<&str>, d: &mut Diagnostics) {
    const TYPES: &[&str] = &["ConcatColumns", "TransformDate", "WhereValue"];
    const OPERATORS: &[&str] = &[
        "Equals",
        "NotEquals",
        "Contains",
        "NotContains",
        "StartsWith",
        "EndsWith",
        "Regex",
    ];
    match t.get("Type") {
        Some(v) if TYPES.contains(&v) => {}
        Some(v) => d.push(
            Diagnostic::error(
                t.origin_of("Type"),
                format!("Transformation Type=\"{v}\" is not known"),
            )
            .hint(format!("use one of {}", TYPES.join(", "))),
        ),
        None => d.push(
            Diagnostic::error(t.el.origin(), "<Transformation> has no Type attribute")
                .hint(format!("add Type=\"...\", one of {}", TYPES.join(", "))),
        ),
    }
    if let Some(op) = t.get("WhereOperator")
        && !OPERATORS.contains(&op)
    {
        d.push(
            Diagnostic::error(
                t.origin_of("WhereOperator"),
                format!("WhereOperator=\"{op}\" is not known"),
            )
            .hint(format!("use one of {}", OPERATORS.join(", "))),
        );
    }
    if let (Some(table), Some(conn)) = (t.get("Table"), connection) {
        let ok = crate::table_name::TableName::parse(table)
            .is_some_and(|n| n.table().is_some() && n.belongs_to(&Ident::new(conn)));
        if !ok {
            d.push(
                Diagnostic::error(
                    t.origin_of("Table"),
                    format!("Transformation Table=\"{table}\" is not a table of connection {conn}"),
                )
                .hint(format!("write Table=\"{conn}_<dataset>\"")),
            );
        }
    }
}

/// Builds a connection's typed settings from its section, reporting each problem where it is.
/// `ConnectionStringOptions` (secured key-value options) are merged into `ConnectionString`, and
/// kept only as a secret afterwards. False when they are malformed.
fn merge_connection_string_options(
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
fn plain_secret_warning(
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

fn build_settings(
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
fn outside_roots(path: &Path, roots: &[PathBuf], concealed: Option<&str>) -> Option<String> {
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
