//! The top-level settings (agent, folders, limits, the gRPC listener, the daemon, the control
//! plane) and the XML configuration's files.

use super::*;

/// The top-level settings, checked.
pub(super) struct TopLevel {
    pub(super) agent: Ident,
    pub(super) temp_folder: PathBuf,
    pub(super) work_folder: PathBuf,
    pub(super) xml_folder: PathBuf,
    pub(super) max_task_batch_size: usize,
    pub(super) sources_root_paths: Vec<PathBuf>,
    pub(super) grpc: GrpcSettings,
    pub(super) daemon: DaemonSettings,
    pub(super) control_plane: Option<ControlPlaneSettings>,
}

/// Reads and checks the top-level settings.
pub(super) fn top_level(tree: &SettingsTree, d: &mut Diagnostics) -> TopLevel {
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
    let agent = text_setting(&["Agent", "Identifier"], d)
        .or_else(|| text_setting(&["OpenId", "AgentIdentifier"], d))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "Local".to_string());
    let agent = Ident::new(agent.trim());
    let folder = |key: &str, default: &str, d: &mut Diagnostics| {
        tree.resolve_path(&text_setting(&[key], d).unwrap_or_else(|| default.to_string()))
    };
    let temp_folder = folder("TempFolderPath", "Temp", d);
    let work_folder = folder("WorkFolderPath", "Work", d);
    let xml_folder = folder("XmlConfigurationPath", "xml-config", d);
    check_folder(tree, "TempFolderPath", &temp_folder, d);
    check_folder(tree, "WorkFolderPath", &work_folder, d);
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

    let grpc = crate::config::service::grpc_settings(tree, d);
    let daemon = crate::config::service::daemon_settings(tree, d);
    let control_plane = crate::config::service::control_plane_settings(tree, d);
    TopLevel {
        agent,
        temp_folder,
        work_folder,
        xml_folder,
        max_task_batch_size,
        sources_root_paths,
        grpc,
        daemon,
        control_plane,
    }
}

/// The `*.xml` files of `XmlConfigurationPath`; a folder that is missing, not a folder or empty
/// is reported at the setting.
pub(super) fn xml_files(tree: &SettingsTree, top: &TopLevel, d: &mut Diagnostics) -> Vec<PathBuf> {
    let xml_folder = &top.xml_folder;
    let xml_files = if xml_folder.is_dir() {
        xml::find_xml_files(xml_folder, d)
    } else {
        // Reported at the setting (or at the settings file when the default is in use).
        let kind = std::fs::metadata(xml_folder)
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
                    shown_folder(tree, "XmlConfigurationPath", xml_folder),
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
                Some(Origin::File(Location::file_only(xml_folder))),
                "the XML configuration folder holds no *.xml file",
            )
            .hint("put the configuration files (<ConfigurationFile> ...) in this folder"),
        );
    }
    // Then the XML the agent owns (connections created over gRPC).
    let managed = top.work_folder.join(crate::config::files::MANAGED_FOLDER);
    let mut xml_files = xml_files;
    if managed.is_dir() {
        xml_files.extend(xml::find_xml_files(&managed, d));
    }
    xml_files
}

/// The checks of one top-level folder setting: a path that exists and is not a folder is an error
/// at the setting.
pub(super) fn check_folder(tree: &SettingsTree, key: &str, folder: &Path, d: &mut Diagnostics) {
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
pub(super) fn shown_folder(tree: &SettingsTree, key: &str, folder: &Path) -> String {
    match tree.concealment(&[key]) {
        Some(label) => crate::secret::concealed_label(label),
        None => folder.display().to_string(),
    }
}
