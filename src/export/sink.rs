//! The file side of the row sink: one writer thread per connection table, writing
//! `<name>.csv.partial` in the output folder. `publish` renames every finished table of the export
//! to its final name and fsyncs the folder; `abandon` removes the partial files. Nothing else ever
//! creates or replaces a file under a final name.

use crate::encoding::{OutputEncoding, Transcoder};
use crate::fsutil::fsync_dir;
use crate::packages::sink::{Batch, CHANNEL_BATCHES, TableOpener};
use crate::packages::{SinkError, TableStats, TableWriter};
use crate::table_name::TableName;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Called with the file name when a table starts.
pub type TableStartedHook = Box<dyn Fn(&str) + Send + Sync>;

/// Live counters an observer (a progress bar, a run registry) may read while an export runs,
/// and an optional hook told when each table starts.
#[derive(Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub table: Mutex<String>,
    pub on_table_started: Option<TableStartedHook>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Publishing failed; `published` holds the tables already renamed to their final name.
#[derive(Debug, Clone)]
pub struct PublishError {
    pub error: SinkError,
    pub published: Vec<FinishedTable>,
}

/// A finished table, ready to publish.
#[derive(Debug, Clone)]
pub struct FinishedTable {
    pub stats: TableStats,
    pub duration: Duration,
}

enum TableState {
    Writing,
    Finished(FinishedTable),
    Failed,
}

struct OpenTable {
    name: TableName,
    file: String,
    final_path: PathBuf,
    partial: PathBuf,
    state: Arc<Mutex<TableState>>,
    thread: Option<JoinHandle<()>>,
}

/// The output of one connection's export.
pub struct CsvOutput {
    dir: PathBuf,
    connection: String,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    encoding: OutputEncoding,
    tables: Mutex<Vec<OpenTable>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A writer thread that panicked leaves its data consistent enough to read the state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts and hashes the bytes that reach the file.
struct Counting<W> {
    inner: W,
    bytes: u64,
    hash: Sha256,
    progress: Arc<Progress>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CsvOutput {
    pub fn new(
        dir: &Path,
        connection: &str,
        cancel: CancellationToken,
        progress: Arc<Progress>,
    ) -> Self {
        CsvOutput {
            dir: dir.to_path_buf(),
            connection: connection.to_string(),
            cancel,
            progress,
            encoding: OutputEncoding::Utf8,
            tables: Mutex::new(Vec::new()),
        }
    }

    /// Writes the tables in `encoding` instead of UTF-8.
    pub fn with_encoding(mut self, encoding: OutputEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Removes partial files of this connection left by an earlier run that crashed.
    pub fn remove_stale_partials(dir: &Path, connection: &str) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return removed;
        };
        let id = crate::ident::Ident::new(connection);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if TableName::parse_partial(&name).is_some_and(|t| t.belongs_to(&id))
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed.push(e.path());
            }
        }
        removed
    }

    /// Waits for every writer thread to end.
    fn join_all(&self) {
        let threads: Vec<JoinHandle<()>> = lock(&self.tables)
            .iter_mut()
            .filter_map(|t| t.thread.take())
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Publishes every table: each must be finished. Renames them one after the other, then
    /// fsyncs the folder. On failure, the error comes with the files already renamed (if a rename
    /// fails midway, the tables before it are published; the rest keep their previous version).
    pub fn publish(&self) -> Result<Vec<FinishedTable>, PublishError> {
        self.join_all();
        let tables = lock(&self.tables);
        let mut done = Vec::new();
        for t in tables.iter() {
            match &*lock(&t.state) {
                TableState::Finished(f) => done.push((t, f.clone())),
                _ => {
                    return Err(PublishError {
                        error: SinkError::Write {
                            file: t.file.clone(),
                            message: "the table was not finished".into(),
                        },
                        published: Vec::new(),
                    });
                }
            }
        }
        let mut out: Vec<FinishedTable> = Vec::new();
        let published = |out: &[FinishedTable]| out.to_vec();
        for (t, f) in done {
            if let Err(e) = std::fs::rename(&t.partial, &t.final_path) {
                return Err(PublishError {
                    error: SinkError::Write {
                        file: t.file.clone(),
                        message: format!(
                            "cannot rename {} to its final name: {e}",
                            t.partial.display()
                        ),
                    },
                    published: published(&out),
                });
            }
            out.push(f);
        }
        if !out.is_empty()
            && let Err(e) = fsync_dir(&self.dir)
        {
            return Err(PublishError {
                error: SinkError::Write {
                    file: self.dir.display().to_string(),
                    message: format!(
                        "the tables were renamed but the folder could not be synced to disk: {e}"
                    ),
                },
                published: published(&out),
            });
        }
        Ok(out)
    }

    /// Abandons the export: waits for the writers and removes every partial file.
    pub fn abandon(&self) {
        self.join_all();
        for t in lock(&self.tables).iter() {
            let _ = std::fs::remove_file(&t.partial);
        }
    }
}

impl TableOpener for CsvOutput {
    fn open(&self, table: Option<&str>, columns: Vec<String>) -> Result<TableWriter, SinkError> {
        if self.cancel.is_cancelled() {
            return Err(SinkError::Cancelled);
        }
        let name = TableName::new(&self.connection, table);
        let file = name.file_name();
        let mut tables = lock(&self.tables);
        if tables.iter().any(|t| t.name.same_file(&name)) {
            return Err(SinkError::DuplicateTable(file));
        }
        let final_path = self.dir.join(&file);
        let partial = self.dir.join(name.partial_file_name());
        let werr = |e: std::io::Error| SinkError::Write {
            file: file.clone(),
            message: e.to_string(),
        };
        let f = File::create(&partial).map_err(werr)?;
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (done_tx, done_rx) = oneshot::channel();
        let state = Arc::new(Mutex::new(TableState::Writing));
        *lock(&self.progress.table) = file.clone();
        if let Some(hook) = &self.progress.on_table_started {
            hook(&file);
        }
        let job = WriterJob {
            file: file.clone(),
            partial: partial.clone(),
            columns: columns.clone(),
            state: state.clone(),
            progress: self.progress.clone(),
            encoding: self.encoding,
        };
        let thread = std::thread::Builder::new()
            .name(format!("csv-{file}"))
            .spawn(move || job.run(f, rx, done_tx))
            .map_err(werr)?;
        tables.push(OpenTable {
            name,
            file: file.clone(),
            final_path,
            partial,
            state,
            thread: Some(thread),
        });
        Ok(TableWriter::new(
            file,
            columns.len(),
            tx,
            done_rx,
            self.cancel.clone(),
        ))
    }
}

struct WriterJob {
    file: String,
    partial: PathBuf,
    columns: Vec<String>,
    state: Arc<Mutex<TableState>>,
    progress: Arc<Progress>,
    encoding: OutputEncoding,
}

impl WriterJob {
    fn run(
        self,
        f: File,
        mut rx: mpsc::Receiver<Batch>,
        done: oneshot::Sender<Result<TableStats, SinkError>>,
    ) {
        let started = Instant::now();
        let result = self.write(f, &mut rx, started);
        let (state, reply) = match result {
            Ok(Some(finished)) => {
                let stats = finished.stats.clone();
                (TableState::Finished(finished), Ok(stats))
            }
            Ok(None) => (TableState::Failed, Err(SinkError::Cancelled)),
            Err(e) => (TableState::Failed, Err(e)),
        };
        if matches!(state, TableState::Failed) {
            let _ = std::fs::remove_file(&self.partial);
        }
        *lock(&self.state) = state;
        // Reply before the receiver is dropped (at the end of this function): a sender that
        // finds the channel closed then reads the real error, not "the writer stopped".
        let _ = done.send(reply);
        drop(rx);
    }

    /// `Ok(None)` when the table was abandoned (the sender went away without finishing).
    fn write(
        &self,
        f: File,
        rx: &mut mpsc::Receiver<Batch>,
        started: Instant,
    ) -> Result<Option<FinishedTable>, SinkError> {
        let werr = |e: std::io::Error| SinkError::Write {
            file: self.file.clone(),
            message: e.to_string(),
        };
        let counting = Counting {
            inner: BufWriter::with_capacity(256 * 1024, f),
            bytes: 0,
            hash: Sha256::new(),
            progress: self.progress.clone(),
        };
        let transcoder = Transcoder::new(counting, self.encoding).map_err(werr)?;
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(transcoder);
        let cerr = |e: csv::Error| SinkError::Write {
            file: self.file.clone(),
            message: e.to_string(),
        };
        w.write_record(&self.columns).map_err(cerr)?;
        let mut rows = 0u64;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Batch::Rows(batch) => {
                    // Field by field through one scratch buffer: no allocation per number.
                    let mut scratch = String::new();
                    for row in &batch {
                        if let [only] = row.as_slice() {
                            // One column: write_record quotes a lone empty field (`""`), so
                            // that the row is not read back as a blank line.
                            scratch.clear();
                            only.write_text(&mut scratch);
                            w.write_record([scratch.as_bytes()]).map_err(cerr)?;
                            continue;
                        }
                        for v in row {
                            scratch.clear();
                            v.write_text(&mut scratch);
                            w.write_field(scratch.as_bytes()).map_err(cerr)?;
                        }
                        w.write_record(None::<&[u8]>).map_err(cerr)?;
                    }
                    rows += batch.len() as u64;
                    self.progress
                        .rows
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Batch::Finish => {
                    let counting = w
                        .into_inner()
                        .map_err(|e| werr(e.into_error()))?
                        .finish()
                        .map_err(werr)?;
                    let bytes = counting.bytes;
                    let sha256 = hex::encode(counting.hash.clone().finalize());
                    let file = counting
                        .inner
                        .into_inner()
                        .map_err(|e| werr(e.into_error()))?;
                    file.sync_all().map_err(werr)?;
                    return Ok(Some(FinishedTable {
                        stats: TableStats {
                            file: self.file.clone(),
                            rows,
                            bytes,
                            sha256,
                        },
                        duration: started.elapsed(),
                    }));
                }
            }
        }
        Ok(None)
    }
}
