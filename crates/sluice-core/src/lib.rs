//! Sluice's broker core: topics, partitions, produce, fetch and subscribe, over the storage
//! engine.
//!
//! # What it is not
//! It knows no gRPC, protobuf, HTTP or config file formats: the server crate translates those
//! into the calls here. Storage I/O happens on tokio's blocking pool, never on runtime threads.
//!
//! # Layout
//! - [`broker`]: the [`Broker`] handle, opening, shutdown.
//! - [`admin`]: topic lifecycle (create, delete, alter, add partitions) and its crash guarantees.
//! - [`produce`]: validation, partitioning ([`partitioner`]), encoding, idempotence ([`producers`]).
//! - [`consume`]: Fetch (long-poll) and [`consume::Subscription`].
//! - [`partition`]: one partition: log, end-offset watch, producer table, [`tail`] cache.
//! - [`group`]: consumer groups: membership, assignment, acks, committed offsets, lag.
//! - [`maintenance`]: retention and interval fsyncs in one tracked task.
//! - [`verify`]: offline verification of a data directory (reads only).
//! - [`recovery_report`]: what start-up recovery did, logged once and kept for metrics.
//! - [`metadata`]: topic metadata files; [`topic_name`]: name rules; [`config`]; [`error`]; [`record`].
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod broker;
pub mod config;
pub mod consume;
pub mod error;
pub mod group;
pub mod maintenance;
pub mod metadata;
pub mod partition;
pub mod partitioner;
pub mod produce;
pub mod producers;
pub mod record;
pub mod recovery_report;
pub mod tail;
pub mod topic_name;
pub mod verify;

pub use broker::{Broker, Topic};
pub use config::{BrokerConfig, GroupDefaults, TopicConfig, TopicConfigChange};
pub use consume::{Fetched, StartAt, Subscription};
pub use error::{Error, Result};
pub use record::{
    NewRecord, PartitionAppend, ProduceOutcome, ProduceRequest, ProducerRef, RecordFields, RecordSource, Records,
};
pub use sluice_storage::FsyncPolicy;
/// A record as read back from a partition.
pub use sluice_storage::Record as StoredRecord;
