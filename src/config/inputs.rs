//! The content hash of everything a configuration load reads: the settings file and every XML
//! file (path and bytes). The loader hashes the bytes it actually read; the watcher hashes the
//! files as they are now; a difference means the configuration changed.

use crate::fsutil::{ReadError, limits, read_limited};
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Default)]
pub struct InputsHasher(Sha256);

impl InputsHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A file's bytes, or the error that kept it from being read.
    pub fn file(&mut self, path: &Path, content: &Result<Vec<u8>, ReadError>) {
        self.0.update(path.as_os_str().as_encoded_bytes());
        self.0.update([0]);
        match content {
            Ok(b) => {
                self.0.update(b"ok:");
                self.0.update(b);
            }
            Err(ReadError::Io(e)) => self
                .0
                .update(format!("unreadable:{:?}", e.kind()).as_bytes()),
            Err(ReadError::NotRegular { kind }) => {
                self.0.update(format!("not-regular:{kind}").as_bytes())
            }
            Err(ReadError::TooLarge { .. }) => self.0.update(b"too-large"),
        }
        self.0.update([0]);
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The hash of the configuration files as they are now: the settings file, then the `*.xml`
/// files under `xml_folder` (the same walk as the loader's). Read with the loader's limits, so a
/// FIFO or a huge file never blocks or bloats the watcher.
pub fn hash_now(settings_file: &Path, xml_folder: &Path) -> String {
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
    if xml_folder.is_dir() {
        let mut d = super::Diagnostics::default();
        for f in super::xml::find_xml_files(xml_folder, &mut d) {
            h.file(&f, &super::xml::read_xml(&f));
        }
    }
    h.finish()
}
