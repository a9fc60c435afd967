//! The files a configuration is read from, as the watcher sees them: their content hash now, made
//! the same way the loader hashes what it read ([`super::inputs::InputsHasher`]), so that a
//! difference means the configuration changed.

use super::inputs::InputsHasher;
use crate::fsutil::{limits, read_limited};
use std::path::Path;

/// The folder, under `WorkFolderPath`, of the XML the agent owns: connections created over gRPC
/// (`CreateConnection`), read after the operator's XML.
pub const MANAGED_FOLDER: &str = "managed";

/// The hash of the configuration files as they are now: the settings file, then the `*.xml`
/// files under `xml_folder` and `managed_folder` (the same walk as the loader's). Read with the
/// loader's limits, so a FIFO or a huge file never blocks or bloats the watcher.
pub fn hash_now(settings_file: &Path, xml_folder: &Path, managed_folder: &Path) -> String {
    let mut h = InputsHasher::new();
    // The settings file may hold plain secrets: its bytes are wiped once hashed.
    let mut settings = read_limited(settings_file, limits::SETTINGS_FILE, "a settings file");
    h.file(settings_file, &settings);
    if let Ok(bytes) = settings.as_mut() {
        zeroize::Zeroize::zeroize(bytes);
    }
    // The encrypted overlay next to it, hashed the same way by the loader.
    let overlay = settings_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(super::encrypted::ENCRYPTED_FILE);
    h.file(
        &overlay,
        &read_limited(&overlay, limits::SETTINGS_FILE, "a settings file"),
    );
    for folder in [xml_folder, managed_folder] {
        if folder.is_dir() {
            let mut d = super::Diagnostics::default();
            for f in super::xml::find_xml_files(folder, &mut d) {
                h.file(&f, &super::xml::read_xml(&f));
            }
        }
    }
    h.finish()
}
