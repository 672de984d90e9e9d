//! Broker and topic settings, as the core sees them (the server owns the file/env/flag format).

use std::path::PathBuf;
use std::time::Duration;

use sluice_storage::{FsyncPolicy, LogConfig};

use crate::error::{Error, Result};
use crate::group::OffsetReset;
use crate::group::backoff::RetryPolicy;

/// Settings of one topic; each partition's log is configured from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Delete closed segments whose newest record is older than this; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while a partition is larger than this; `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Segment size at which a new segment starts.
    pub segment_bytes: u64,
    /// Segment age at which a new segment starts.
    pub segment_ms: u64,
    /// Largest record (key + value + headers), in bytes.
    pub max_message_bytes: u32,
    /// When appends are forced to disk.
    pub fsync: FsyncPolicy,
    /// Deliveries before a consumer group dead-letters a record of this topic, unless the group
    /// sets its own; `None`: the broker's default.
    pub max_delivery_attempts: Option<u32>,
    /// Dead-letter topic for this topic's records, unless the group sets its own; `None`: the
    /// broker's default (`<topic>.dlq`).
    pub dead_letter_topic: Option<String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
            max_delivery_attempts: None,
            dead_letter_topic: None,
        }
    }
}

/// Largest `max_message_bytes` a topic may set.
pub const MAX_MESSAGE_BYTES_LIMIT: u32 = 64 << 20;

impl TopicConfig {
    /// The storage settings of each partition.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: Some(self.segment_ms),
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            fsync: self.fsync,
            // A batch holds records of one request, which max_request_bytes bounds; leave room for
            // the framing of many small records.
            max_batch_bytes: (MAX_MESSAGE_BYTES_LIMIT as usize) * 2,
            ..LogConfig::default()
        }
    }

    /// Checks every setting, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "max_message_bytes must be between 1 and {MAX_MESSAGE_BYTES_LIMIT}, got {}",
                self.max_message_bytes
            )));
        }
        if self.segment_bytes < u64::from(self.max_message_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes ({}) must be at least max_message_bytes ({})",
                self.segment_bytes, self.max_message_bytes
            )));
        }
        if self.max_delivery_attempts == Some(0) {
            return Err(Error::InvalidArgument("max_delivery_attempts must be at least 1".into()));
        }
        if let Some(name) = &self.dead_letter_topic {
            crate::topic_name::validate(name).map_err(|e| Error::InvalidArgument(format!("dead_letter_topic: {e}")))?;
        }
        self.log_config().validate().map_err(|e| match e {
            sluice_storage::Error::InvalidArgument(msg) => Error::InvalidArgument(msg),
            other => Error::from(other),
        })
    }
}

/// Settings of the broker core.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Where topics live.
    pub data_dir: PathBuf,
    /// Defaults for new topics.
    pub topic_defaults: TopicConfig,
    /// Largest produce request (sum of record sizes).
    pub max_request_bytes: usize,
    /// Largest number of partitions a topic may have.
    pub max_partitions: u32,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// How often partitions with `FsyncPolicy::Interval` are checked for a due fsync.
    pub fsync_check_interval: Duration,
    /// Longest a Fetch may wait for new records.
    pub max_fetch_wait: Duration,
    /// Largest byte budget of one Fetch or Subscribe message.
    pub max_fetch_bytes: usize,
    /// Recent batches kept in memory per partition for readers at the end of the log.
    pub tail_cache_bytes: usize,
    /// How often producer state is snapshotted (a restart replays at most this much of the log).
    pub producer_snapshot_interval: Duration,
    /// Recent batches remembered per idempotent producer and partition: a resent batch older
    /// than that is refused with `SequenceOutsideWindow` (at least
    /// [`crate::producers::MIN_WINDOW`], the requests one ProduceStream may have in flight).
    pub idempotence_window: usize,
    /// Free disk space appends must leave, so that metadata, group offsets and the shutdown
    /// flush still fit when the disk fills up; appends below it get `DiskFull`.
    pub min_free_bytes: u64,
    /// Consumer-group defaults.
    pub groups: GroupDefaults,
}

/// Consumer-group defaults; a joining member may override the per-member ones.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDefaults {
    /// Silence after which a member is removed from its group.
    pub session_timeout: Duration,
    /// How long a delivered record may stay unacked before it is delivered again.
    pub ack_timeout: Duration,
    /// Most records delivered to a member and not yet acked.
    pub max_in_flight_records: u32,
    /// Most key + value bytes delivered to a member and not yet acked.
    pub max_in_flight_bytes: u64,
    /// Where a new group starts.
    pub reset: OffsetReset,
    /// How often changed committed offsets are written; after a crash, acks from at most this
    /// long before it may be lost (those records are delivered again).
    pub commit_interval: Duration,
    /// Redelivery backoff and attempt limit of new groups.
    pub retry: RetryPolicy,
    /// Dead-letter topic of new groups; `{topic}` stands for the source topic.
    pub dead_letter_topic: String,
    /// Whether new groups pass over unreadable records instead of stopping at them.
    pub skip_damaged: bool,
    /// A member whose leases expire this many times in a row without an ack or nack is
    /// removed (processing liveness); 0: never.
    pub max_lease_expiries: u32,
}

impl GroupDefaults {
    /// The settings a new group starts with.
    pub fn settings(&self) -> crate::group::GroupSettings {
        crate::group::GroupSettings {
            reset: self.reset,
            ack_timeout: self.ack_timeout,
            retry: self.retry,
            max_attempts: None,
            dead_letter_topic: None,
            strict_ordering: false,
            skip_damaged: self.skip_damaged,
            delivery: crate::group::DeliveryMode::PartitionOwned,
        }
    }
}

impl Default for GroupDefaults {
    fn default() -> Self {
        GroupDefaults {
            session_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            max_in_flight_records: 1000,
            max_in_flight_bytes: 16 << 20,
            reset: OffsetReset::Earliest,
            commit_interval: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            dead_letter_topic: "{topic}.dlq".into(),
            skip_damaged: false,
            max_lease_expiries: 3,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./data"),
            topic_defaults: TopicConfig::default(),
            max_request_bytes: 16 << 20,
            max_partitions: 4096,
            retention_check_interval: Duration::from_secs(30),
            fsync_check_interval: Duration::from_millis(50),
            max_fetch_wait: Duration::from_secs(30),
            max_fetch_bytes: 16 << 20,
            tail_cache_bytes: 2 << 20,
            producer_snapshot_interval: Duration::from_secs(60),
            idempotence_window: crate::producers::DEFAULT_WINDOW,
            min_free_bytes: 64 << 20,
            groups: GroupDefaults::default(),
        }
    }
}

/// A change to a topic's settings, as plain values: each `Some` replaces that setting (an inner
/// `None` clears an optional one). Applied whole or not at all (see
/// [`crate::Broker::alter_topic_config`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfigChange {
    /// Retention by age in ms; `Some(None)`: no limit.
    pub retention_ms: Option<Option<u64>>,
    /// Retention by size in bytes; `Some(None)`: no limit.
    pub retention_bytes: Option<Option<u64>>,
    /// Segment size.
    pub segment_bytes: Option<u64>,
    /// Segment age in ms.
    pub segment_ms: Option<u64>,
    /// Largest record.
    pub max_message_bytes: Option<u32>,
    /// The fsync policy.
    pub fsync: Option<FsyncPolicy>,
    /// A new interval for a topic whose policy is already `Interval` (ignored otherwise).
    pub fsync_interval: Option<Duration>,
    /// Groups' attempt limit for this topic; `Some(None)`: the broker's.
    pub max_delivery_attempts: Option<Option<u32>>,
    /// Groups' dead-letter topic for this topic; `Some(None)`: the broker's.
    pub dead_letter_topic: Option<Option<String>>,
}

impl TopicConfigChange {
    /// `config` with the change applied.
    pub fn applied_to(&self, config: &TopicConfig) -> TopicConfig {
        let mut config = config.clone();
        let c = &mut config;
        if let Some(v) = self.retention_ms {
            c.retention_ms = v;
        }
        if let Some(v) = self.retention_bytes {
            c.retention_bytes = v;
        }
        if let Some(v) = self.segment_bytes {
            c.segment_bytes = v;
        }
        if let Some(v) = self.segment_ms {
            c.segment_ms = v;
        }
        if let Some(v) = self.max_message_bytes {
            c.max_message_bytes = v;
        }
        if let Some(v) = self.fsync {
            c.fsync = v;
        }
        if let (Some(interval), FsyncPolicy::Interval(_)) = (self.fsync_interval, c.fsync) {
            c.fsync = FsyncPolicy::Interval(interval);
        }
        if let Some(v) = self.max_delivery_attempts {
            c.max_delivery_attempts = v;
        }
        if let Some(v) = &self.dead_letter_topic {
            c.dead_letter_topic = v.clone();
        }
        config
    }
}
