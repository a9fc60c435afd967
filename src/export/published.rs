//! Published connection tables, read back: finding one by its name (the naming rule of
//! [`crate::table_name`], case aside), refusing anything that is not a published table of a
//! connection served here (folders, partial files, symbolic links, FIFOs, other agents' tables),
//! and opening it so that what is read is what was checked.

use crate::config::Snapshot;
use crate::table_name::TableName;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek};

/// Why a published table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("file {0:?} must be a connection table file name such as HRDb.csv, without a folder")]
    BadName(String),
    #[error("{0} is not a connection table: no connection {1:?}")]
    NoConnection(String, String),
    #[error("connection {0} is served by another agent")]
    OtherAgent(String),
    #[error("{0} has not been published")]
    NotPublished(String),
    #[error("{name} is {kind}, not a regular file; only published connection tables are served")]
    NotRegular { name: String, kind: &'static str },
    #[error("{0} changed while it was opened; try again")]
    Changed(String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

/// A published table, opened at its start, with its size and SHA-256 as they were read.
pub struct PublishedTable {
    /// The file name as it is on disk.
    pub file_name: String,
    pub file: File,
    pub size: u64,
    pub sha256: String,
}

/// Opens the published table `name` (`HRDb.csv`, `hrdb_people`, ...) of a connection served
/// here, and reads it once for its size and SHA-256. Blocking.
pub fn open(snapshot: &Snapshot, name: &str) -> Result<PublishedTable, OpenError> {
    let name = name.trim();
    if name.contains(['/', '\\', '\0']) || name.starts_with('.') || name.contains("..") {
        return Err(OpenError::BadName(name.to_string()));
    }
    let Some(wanted) = TableName::parse(name) else {
        return Err(OpenError::NotPublished(name.to_string()));
    };
    let file_name = wanted.file_name();
    let c = snapshot.connection(wanted.connection()).ok_or_else(|| {
        OpenError::NoConnection(file_name.clone(), wanted.connection().to_string())
    })?;
    if !c.served {
        return Err(OpenError::OtherAgent(c.identifier.to_string()));
    }
    // The name as it is on disk (identifiers ignore case).
    let entry = std::fs::read_dir(snapshot.export_output_folder())
        .map_err(|_| OpenError::NotPublished(file_name.clone()))?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .eq_ignore_ascii_case(&file_name)
        })
        .ok_or_else(|| OpenError::NotPublished(file_name.clone()))?;
    let on_disk = entry.file_name().to_string_lossy().into_owned();
    let path = entry.path();
    let meta = std::fs::symlink_metadata(&path).map_err(|e| OpenError::Io(on_disk.clone(), e))?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular {
            name: on_disk,
            kind: crate::fsutil::kind_of(meta.file_type()),
        });
    }
    // Opened without blocking (a FIFO swapped in is refused), and it must be the file checked.
    let (mut file, opened) = crate::fsutil::open_regular(&path).map_err(|e| match e {
        crate::fsutil::ReadError::NotRegular { kind } => OpenError::NotRegular {
            name: on_disk.clone(),
            kind,
        },
        other => OpenError::Io(on_disk.clone(), std::io::Error::other(other.to_string())),
    })?;
    {
        use std::os::unix::fs::MetadataExt;
        if opened.ino() != meta.ino() || opened.dev() != meta.dev() {
            return Err(OpenError::Changed(on_disk));
        }
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) => return Err(OpenError::Io(on_disk, e)),
        }
    }
    file.rewind()
        .map_err(|e| OpenError::Io(on_disk.clone(), e))?;
    Ok(PublishedTable {
        file_name: on_disk,
        file,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}
