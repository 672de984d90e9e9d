//! The storage crate's error type.

use std::io;
use std::path::PathBuf;

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage layer.
///
/// Variants carry the context a person needs to act (paths, offsets, valid ranges); io errors keep
/// their source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An io operation failed. The partition may now be poisoned (see [`Error::Poisoned`]).
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing segment".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A requested offset lies outside the log. `start..end` is the readable range.
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// Log start offset (first readable offset).
        start: u64,
        /// Next offset to be written (one past the last readable offset).
        end: u64,
    },
    /// A batch is larger than the configured limit.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        size: usize,
        /// The configured `max_batch_bytes`.
        limit: usize,
    },
    /// An idempotent producer's batch does not follow its last batch written since the log
    /// opened (or the one whose write failed): writing it would leave a gap in its sequence.
    #[error("producer {producer_id}: expected sequence {expected}, got {received}")]
    ProducerSequence {
        /// The producer.
        producer_id: u64,
        /// The sequence its next batch must start at.
        expected: u64,
        /// The sequence this batch starts at.
        received: u64,
    },
    /// An argument is invalid; the message says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored data failed validation somewhere recovery does not tolerate damage, or on read.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// Offsets `from..to` cannot be read: a batch there failed its checks, or the segment that
    /// held them is missing. Readers can go on at `to`; the log's other offsets are intact.
    #[error("offsets {from}..{to} cannot be read{}: {reason}", location(path.as_deref(), *position))]
    DataLoss {
        /// First unreadable offset (the start of the damaged batch or of the missing range).
        from: u64,
        /// First offset known to be readable again after the damage.
        to: u64,
        /// The damaged file, if the damage is in one (not for a missing segment).
        path: Option<PathBuf>,
        /// Byte position of the damage in `path`.
        position: Option<u64>,
        /// What was wrong.
        reason: String,
    },
    /// The disk is full, or its free space is below the reserve kept for metadata and the
    /// shutdown flush. Nothing was written, and the log is not poisoned: appends are admitted
    /// again once space is freed.
    #[error("not enough disk space: {available} bytes free, {reserve} kept in reserve, {needed} needed")]
    DiskFull {
        /// Free bytes when refused (0 when the write itself found the disk full).
        available: u64,
        /// The reserve.
        reserve: u64,
        /// Bytes the append needed.
        needed: u64,
    },
    /// An earlier write or fsync failed; the log refuses appends and stays readable up to the
    /// last good batch. Reopening the partition recovers it.
    #[error("partition log is read-only after an earlier write failure: {cause}")]
    Poisoned {
        /// The first failure, as text (the original io error was returned to its caller).
        cause: String,
    },
    /// The log was closed.
    #[error("partition log is closed")]
    Closed,
}

fn location(path: Option<&std::path::Path>, position: Option<u64>) -> String {
    match (path, position) {
        (Some(path), Some(position)) => format!(" (in {} at byte {position})", path.display()),
        (Some(path), None) => format!(" (in {})", path.display()),
        _ => String::new(),
    }
}

impl Error {
    /// The error as text without file paths, for messages that reach clients (the full text,
    /// paths included, is for the broker's log).
    pub fn without_paths(&self) -> String {
        match self {
            Error::Io { operation, source, .. } => format!("{operation}: {source}"),
            Error::Corrupt { position, reason, .. } => format!("corrupt data at byte {position}: {reason}"),
            Error::DataLoss { from, to, reason, .. } => format!("offsets {from}..{to} cannot be read: {reason}"),
            other => other.to_string(),
        }
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { operation, path: path.into(), source }
    }
}
