//! The row sink packages write into. Rows travel in batches over a bounded channel to a writer
//! that the `export` module runs; memory is bounded by the channel, whatever the table's size.
//!
//! `RowSink::table` opens one connection table; `TableWriter::push` sends rows (async, or
//! `push_blocking` from blocking code); `TableWriter::finish` marks the table complete. Dropping a
//! writer without `finish` abandons the table: nothing is published for it.

use super::value::Row;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Rows per batch sent to the writer.
pub const BATCH_ROWS: usize = 256;
/// Batches in flight per table.
pub const CHANNEL_BATCHES: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("the export was cancelled")]
    Cancelled,
    #[error("invalid connection table name {0:?}: use letters, digits, '.', '-' and '_' only")]
    BadTableName(String),
    #[error("the connection table {0} is already being written by this export")]
    DuplicateTable(String),
    #[error("cannot write the connection table {file}: {message}")]
    Write { file: String, message: String },
    #[error("row {row} of {file} has {got} values but the table has {want} columns")]
    RowWidth {
        file: String,
        row: u64,
        got: usize,
        want: usize,
    },
}

/// What a finished table holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableStats {
    /// The file name the table is published under (`HRDb_People.csv`).
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// Messages from a [`TableWriter`] to the export's file writer.
pub enum Batch {
    Rows(Vec<Row>),
    /// All rows were sent: flush and sync; the result comes back on the table's `done` channel.
    Finish,
}

/// Implemented by `export`: opens the file side of one connection table.
pub trait TableOpener: Send + Sync {
    /// `table` is `None` for the connection's single table (`<id>.csv`), else the suffix
    /// (`<id>_<table>.csv`). `columns` is the header.
    fn open(&self, table: Option<&str>, columns: Vec<String>) -> Result<TableWriter, SinkError>;
}

/// A cloneable handle through which a package opens its tables.
#[derive(Clone)]
pub struct RowSink {
    opener: Arc<dyn TableOpener>,
}

impl RowSink {
    pub fn new(opener: Arc<dyn TableOpener>) -> Self {
        RowSink { opener }
    }

    pub fn table(
        &self,
        table: Option<&str>,
        columns: Vec<String>,
    ) -> Result<TableWriter, SinkError> {
        if let Some(t) = table {
            check_table_name(t)?;
        }
        self.opener.open(table, columns)
    }
}

/// A table suffix must stay a plain file-name part (the naming rule: [`crate::table_name`]).
pub fn check_table_name(t: &str) -> Result<(), SinkError> {
    crate::table_name::TableName::check_table(t).map_err(|e| SinkError::BadTableName(e.0))
}

/// The sending side of one table.
pub struct TableWriter {
    file: String,
    columns: usize,
    tx: mpsc::Sender<Batch>,
    done: oneshot::Receiver<Result<TableStats, SinkError>>,
    batch: Vec<Row>,
    rows: u64,
    cancel: CancellationToken,
}

impl TableWriter {
    pub fn new(
        file: String,
        columns: usize,
        tx: mpsc::Sender<Batch>,
        done: oneshot::Receiver<Result<TableStats, SinkError>>,
        cancel: CancellationToken,
    ) -> Self {
        TableWriter {
            file,
            columns,
            tx,
            done,
            batch: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
            cancel,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    fn accept(&mut self, row: Row) -> Result<bool, SinkError> {
        if self.cancel.is_cancelled() {
            return Err(SinkError::Cancelled);
        }
        self.rows += 1;
        if row.len() != self.columns {
            return Err(SinkError::RowWidth {
                file: self.file.clone(),
                row: self.rows,
                got: row.len(),
                want: self.columns,
            });
        }
        self.batch.push(row);
        Ok(self.batch.len() >= BATCH_ROWS)
    }

    fn take_batch(&mut self) -> Batch {
        Batch::Rows(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(BATCH_ROWS),
        ))
    }

    /// The writer stopped: fetch its error.
    fn writer_gone(&mut self) -> SinkError {
        if self.cancel.is_cancelled() {
            return SinkError::Cancelled;
        }
        match self.done.try_recv() {
            Ok(Err(e)) => e,
            _ => SinkError::Write {
                file: self.file.clone(),
                message: "the file writer stopped".into(),
            },
        }
    }

    pub async fn push(&mut self, row: Row) -> Result<(), SinkError> {
        if self.accept(row)? {
            let b = self.take_batch();
            if self.tx.send(b).await.is_err() {
                return Err(self.writer_gone());
            }
        }
        Ok(())
    }

    /// `push` for blocking code (never call it from an async task).
    pub fn push_blocking(&mut self, row: Row) -> Result<(), SinkError> {
        if self.accept(row)? {
            let b = self.take_batch();
            if self.tx.blocking_send(b).is_err() {
                return Err(self.writer_gone());
            }
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<TableStats, SinkError> {
        if self.cancel.is_cancelled() {
            return Err(SinkError::Cancelled);
        }
        let b = self.take_batch();
        if self.tx.send(b).await.is_err() || self.tx.send(Batch::Finish).await.is_err() {
            return Err(self.writer_gone());
        }
        match (&mut self.done).await {
            Ok(r) => r,
            Err(_) => Err(self.writer_gone()),
        }
    }

    /// `finish` for blocking code.
    pub fn finish_blocking(mut self) -> Result<TableStats, SinkError> {
        if self.cancel.is_cancelled() {
            return Err(SinkError::Cancelled);
        }
        let b = self.take_batch();
        if self.tx.blocking_send(b).is_err() || self.tx.blocking_send(Batch::Finish).is_err() {
            return Err(self.writer_gone());
        }
        let done = std::mem::replace(&mut self.done, oneshot::channel().1);
        match done.blocking_recv() {
            Ok(r) => r,
            Err(_) => Err(self.writer_gone()),
        }
    }
}
