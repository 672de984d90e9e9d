//! Sluice's storage engine: a partition is a segmented, crash-safe, append-only log of record
//! batches addressed by dense offsets.
//!
//! # What it does
//! - Appends batches ([`BatchBuilder`] → [`PartitionLog::append`]) under an [`FsyncPolicy`];
//!   concurrent appends share one fsync (group commit, [`commit`]).
//! - Reads whole, checksum-verified batches from any offset ([`PartitionLog::read`]) through a
//!   sparse index, and finds the first offset at or after a timestamp
//!   ([`PartitionLog::offset_for_timestamp`]).
//! - Rolls segments by size and age, deletes old ones by time and size ([`retention`]),
//!   truncates, and deletes whole partitions.
//! - Recovers after a crash by validating only the active segment's tail ([`recovery`]).
//!
//! # What it is not
//! It knows nothing of topics, producers, consumer groups, the network or async runtimes: it is
//! a synchronous library that the broker calls from blocking threads. It reports upward only
//! through return values.
//!
//! # On-disk format
//! Batch and record layout: [`codec`]. Index files: [`index`]. File names: [`layout`].
//!
//! # Layout
//! - [`layout`]: file names, extensions, format version.
//! - [`codec`]: batch and record encoding, checksums.
//! - [`record_v2`]: the record layout of format version 2 (protobuf fields).
//! - [`record_v3`]: the record layout of format version 3 (response entries, offsets stamped).
//! - [`record_view`]: records borrowed from a batch.
//! - [`index`]: sparse offset and time indexes (memory-mapped once sealed).
//! - `segment`: reading one segment (a snapshot readers hold without locks).
//! - `writer`: the single writer: append, roll, sync, retention, truncation, close.
//! - [`commit`]: the group-commit queue in front of the writer.
//! - [`recovery`]: validating segments and rebuilding indexes on open.
//! - [`retention`]: the pure choice of segments to delete.
//! - [`space`]: the free-space reserve shared by partitions on one file system.
//! - [`store`]: atomic replacement of small files, checksummed text.
//! - [`verify`]: offline verification of a partition directory (reads only).
//! - [`io`]: disk and clock seams; [`config`]; [`error`].
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]
#![warn(missing_docs)]

pub mod codec;
pub mod commit;
pub mod config;
pub mod error;
pub mod index;
pub mod io;
pub mod layout;
mod log;
mod open;
mod page_cache;
mod read_buffers;
pub mod record_v2;
pub mod record_v3;
pub mod record_view;
pub mod recovery;
pub mod retention;
mod segment;
pub mod space;
pub mod store;
pub mod verify;
mod view;
mod writer;

pub use codec::{Batch, BatchBuilder, EncodedBatch, Header, HeaderRef, Record, RecordRef};
pub use commit::{Appended, Written};
pub use config::{FsyncPolicy, LogConfig};
pub use error::{Error, Result};
pub use io::{Clock, DiskIo, OsDisk, SystemClock};
pub use log::{AppendTicket, LogEnv, LogStats, PartitionLog, ReadResult, Recovery};
pub use record_view::{HeaderView, RecordStart, RecordView, StoredRecord};
pub use view::MissingRange;
