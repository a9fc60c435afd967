//! The content hash of everything a configuration load reads: the settings file and every XML
//! file (path and bytes). The loader hashes the bytes it actually read; the watcher hashes the
//! files as they are now; a difference means the configuration changed.

use crate::fsutil::ReadError;
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
