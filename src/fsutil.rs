//! File-system helpers shared by the stores, the configuration loader and the export sink: the
//! bounded reader every configuration file goes through, partial-file naming, directory fsync and
//! small atomic writes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The suffix of files being written; they are renamed to their final name once complete.
pub const PARTIAL_SUFFIX: &str = ".partial";

pub fn partial_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_os_string();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

/// Flushes a directory's entries to disk, so a rename inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a small file atomically: `<path>.<pid>-<n>.partial` (with `mode` when given), fsync,
/// rename, fsync the directory. On failure the partial file is removed and `path` is untouched.
pub fn write_atomically_with_mode(
    path: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // A name of its own per write (process, then a counter): two writers of the same file (two
    // threads, or the daemon and a command) never rename each other's partial file away; the
    // last rename wins whole.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}{PARTIAL_SUFFIX}", std::process::id()));
    let partial = path.with_file_name(name);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(m) = mode {
            options.mode(m);
        }
        let mut f = options.open(&partial)?;
        if let Some(m) = mode {
            // A partial file left by a crash keeps its old mode through `open`: set it again.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, path)?;
        if let Some(dir) = path.parent() {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Writes a small file atomically: `<path>.partial`, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with_mode(path, bytes, None)
}

/// The most the agent reads of each kind of file. A file over its limit is refused with a message
/// that names the file and the limit; nothing is read past it.
pub mod limits {
    const MIB: u64 = 1024 * 1024;
    /// `appsettings.agent.json`, the encrypted overlay, the connection store.
    pub const SETTINGS_FILE: u64 = 16 * MIB;
    /// One XML configuration file.
    pub const XML_FILE: u64 = 64 * MIB;
    /// A file holding one value: a systemd credential, a `${file:}` target, the agent key.
    pub const VALUE_FILE: u64 = MIB;
    /// A `SqlFile`.
    pub const SQL_FILE: u64 = 16 * MIB;
    /// A PEM file: CA bundle, certificate, private key.
    pub const PEM_FILE: u64 = 4 * MIB;
    /// A file the agent writes for itself under `WorkFolderPath` (schemas, runs, state).
    pub const STATE_FILE: u64 = 64 * MIB;
}

/// Why a file could not be read by [`read_limited`]. The messages do not name the file: callers
/// put it where a person looks for it (`file:line:col`, the setting).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("it is larger than {}, the most the agent reads for {what}", human_size(*limit))]
    TooLarge { limit: u64, what: &'static str },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The I/O error kind, when the failure was one.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ReadError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// "a folder", "a FIFO (named pipe)", ... for a file that is not a regular file.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a file"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

pub fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes >= KIB * KIB && bytes.is_multiple_of(KIB * KIB) {
        format!("{} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Opens a regular file for reading without ever blocking on a FIFO or a device: the file is
/// opened non-blocking, then refused unless `fstat` says it is a regular file (symbolic links are
/// followed to what they name).
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            kind: kind_of(meta.file_type()),
        });
    }
    Ok((f, meta))
}

/// Reads a whole regular file of at most `limit` bytes, in one buffer sized up front (so that a
/// file holding secrets is not copied by a growing buffer). FIFOs, devices, folders and sockets
/// are refused without blocking; a file over the limit is refused without reading past it.
/// `what` names the kind of file in the message ("a settings file").
pub fn read_limited(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let (f, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit, what });
    }
    // One byte more than the size, so that a file that grew meanwhile is seen without a move.
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).saturating_add(1));
    f.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        zeroize::Zeroize::zeroize(&mut buf);
        return Err(ReadError::TooLarge { limit, what });
    }
    Ok(buf)
}

/// [`read_limited`] into a `String`; bytes that are not UTF-8 are wiped and refused.
pub fn read_limited_text(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    let bytes = read_limited(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| {
        zeroize::Zeroize::zeroize(&mut e.into_bytes());
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

/// `n` bytes from the kernel's random source (`/dev/urandom`), for secrets: tokens, keys.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_and_large_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.xml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_limited(&fifo, 10, "an XML file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a FIFO (named pipe), not a regular file"
        );
        let e = read_limited(Path::new("/dev/zero"), 10, "an XML file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a character device, not a regular file"
        );
        let e = read_limited(dir.path(), 10, "an XML file").unwrap_err();
        assert_eq!(e.to_string(), "it is a folder, not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let e = read_limited(&big, 1024, "a settings file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is larger than 1 KiB, the most the agent reads for a settings file"
        );
        assert_eq!(read_limited(&big, 2048, "x").unwrap().len(), 2048);
        let missing = read_limited(&dir.path().join("nope"), 1, "x").unwrap_err();
        assert_eq!(missing.io_kind(), Some(std::io::ErrorKind::NotFound));
    }
}
