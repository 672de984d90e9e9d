//! The broker core's error type. The server maps it to gRPC statuses in one place.

use std::path::PathBuf;

impl From<sluice_storage::Error> for Error {
    /// Storage errors as they are, except that a full disk is [`Error::DiskFull`] wherever it
    /// was found (appends, metadata files, snapshots).
    fn from(error: sluice_storage::Error) -> Self {
        match error {
            sluice_storage::Error::DiskFull { available, reserve, needed } => {
                Error::DiskFull { available, reserve, needed }
            }
            sluice_storage::Error::Io { source, .. } if sluice_storage::space::is_disk_full(&source) => {
                Error::DiskFull { available: 0, reserve: 0, needed: 0 }
            }
            sluice_storage::Error::ProducerSequence { producer_id, expected, received } => {
                Error::OutOfOrderSequence { producer_id, expected, received }
            }
            other => Error::Storage(other),
        }
    }
}

/// Result alias for broker operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a broker operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No topic of that name.
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    /// A retried idempotent batch arrived while its original was still being written, and the
    /// original failed: neither was written, so the batch may be sent again.
    #[error("the original of this retried batch failed ({0}); nothing was written: send it again")]
    RetryFailed(String),
    /// A topic of that name exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The partition number is not in the topic.
    #[error("partition {partition} does not exist: topic '{topic}' has partitions 0..{count}")]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// Number of partitions.
        count: u32,
    },
    /// A request argument is invalid; the message names it and the valid range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A record is larger than the topic's `max_message_bytes`.
    #[error("record {index} is {size} bytes, over the topic's max_message_bytes of {limit}")]
    MessageTooLarge {
        /// Index of the record in its request.
        index: usize,
        /// Its size (key + value + headers).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A request is larger than the broker's `max_request_bytes`.
    #[error("request of {size} bytes is over the broker's max_request_bytes of {limit}")]
    RequestTooLarge {
        /// Request size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An offset outside the partition's readable range.
    #[error("offset {requested} is out of range: partition holds offsets {start}..{end}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// First readable offset.
        start: u64,
        /// One past the last offset.
        end: u64,
    },
    /// An idempotent producer's sequence number skipped ahead or went back past its window.
    #[error("out-of-order sequence for producer {producer_id}: expected {expected}, got {received}")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: u64,
        /// The sequence the broker expects next.
        expected: u64,
        /// The sequence received.
        received: u64,
    },
    /// An idempotent producer resent a batch that was written, but so long ago that its
    /// offsets are no longer remembered: not a gap, and not to be written again.
    #[error(
        "sequence {received} of producer {producer_id} was already written, but is older than the {window} batches remembered per producer (oldest: sequence {oldest_remembered}); it is not written again"
    )]
    SequenceOutsideWindow {
        /// Producer id.
        producer_id: u64,
        /// The sequence received.
        received: u64,
        /// First sequence of the oldest batch still remembered.
        oldest_remembered: u64,
        /// Batches remembered per producer.
        window: usize,
    },
    /// The partition refuses writes after a disk failure (reads still work).
    #[error("partition {topic}/{partition} is read-only after a write failure: {cause}")]
    PartitionReadOnly {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The failure.
        cause: String,
    },
    /// Offsets of a partition cannot be read: a batch there failed its checks, or the segment
    /// that held them is lost. The partition's other offsets are served.
    #[error(
        "partition {topic}/{partition}: offsets {from}..{to} cannot be read ({reason}); reading can go on at offset {to}"
    )]
    DataLoss {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// First unreadable offset.
        from: u64,
        /// First readable offset after the damage.
        to: u64,
        /// What is damaged (no file paths: this text reaches clients).
        reason: String,
    },
    /// Stored data of a partition failed validation where no offset range could be named.
    #[error("partition {topic}/{partition} holds damaged data: {reason}")]
    Corrupt {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// What was wrong (no file paths).
        reason: String,
    },
    /// No group of that name.
    #[error("group '{0}' does not exist")]
    GroupNotFound(String),
    /// The operation needs a group without connected members.
    #[error("group '{group}' has {members} connected member(s); stop them first or force the operation")]
    GroupHasMembers {
        /// Group id.
        group: String,
        /// Connected members.
        members: u32,
    },
    /// A group of that name exists already.
    #[error("group '{0}' already exists; change its policy with AlterGroupConfig (sluice group alter)")]
    GroupExists(String),
    /// A join asked for a policy the group does not have.
    #[error(
        "group '{group}' has a different policy than this member asks for ({differences}); a join sets policy only for a group it creates: change it with AlterGroupConfig (sluice group alter), or join without those settings"
    )]
    PolicyConflict {
        /// Group id.
        group: String,
        /// What differs: field, the group's value, the join's value.
        differences: String,
    },
    /// A member's session is over.
    #[error("consumer group session ended: {0}")]
    SessionEnded(crate::group::SessionEnd),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Metadata on disk could not be read.
    #[error("bad metadata in {path}: {reason}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A topic directory holds data but no metadata and no deletion marker: the broker
    /// refuses to start rather than guess, and deletes nothing.
    #[error(
        "{path} is missing, but the topic directory holds data; nothing was deleted. To keep topic '{topic}', rebuild the file with `sluice-server recover-topic-meta --data-dir <DIR> --topic {topic}` (it gets the default settings; check them afterwards); to drop it, remove the directory"
    )]
    MissingTopicMeta {
        /// The missing file.
        path: PathBuf,
        /// The topic.
        topic: String,
    },
    /// The broker's disk is full, or its free space is below the reserve. Nothing was written;
    /// writes are accepted again as soon as space is freed.
    #[error(
        "the broker's disk is full: {available} bytes free, {reserve} kept in reserve, {needed} needed; writes resume once space is freed (delete topics or shorten retention)"
    )]
    DiskFull {
        /// Free bytes when refused.
        available: u64,
        /// The reserve (`limits.min_free_bytes`).
        reserve: u64,
        /// Bytes the write needed.
        needed: u64,
    },
    /// A storage failure.
    #[error(transparent)]
    Storage(sluice_storage::Error),
    /// A blocking task failed to run to completion (it panicked or was cancelled).
    #[error("internal error: {0}")]
    Internal(String),
}
