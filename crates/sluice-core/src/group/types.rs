//! Small types shared by the group modules.

use std::sync::Arc;
use std::time::Duration;

/// A member of a group, unique within the broker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// A topic-partition pair.
    pub fn new(topic: Arc<str>, partition: u32) -> Self {
        TopicPartition { topic, partition }
    }
}

/// Where a group starts in a partition it has no committed offset for (or whose committed
/// offset retention has deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first retained record: nothing already in the topic is skipped.
    #[default]
    Earliest,
    /// The end of the log: only records appended from then on.
    Latest,
}

/// How a group shares records among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Each partition is owned by one member at a time, which gets its records in offset order
    /// (Kafka consumer groups): per-key order holds, parallelism is the partition count.
    #[default]
    PartitionOwned,
    /// Records of every partition go to any member with room, each leased to one member at a
    /// time and acked alone (Kafka share groups, Pulsar Shared, SQS): parallelism is the member
    /// count, order is not kept.
    Shared,
}

/// Why the broker took back a member's lease on records it did not ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEndReason {
    /// Not acked within the ack timeout: the records go to the group again.
    AckTimeout,
    /// An operator reset the group's offsets: the records are no longer pending.
    OffsetsReset,
    /// The records no longer exist (retention deleted them, or the log lost its tail).
    RecordsGone,
    /// The records cannot be read and were passed over (`skip_damaged`).
    Skipped,
}

/// Records whose lease ended, as told to their member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEnd {
    /// Their partition.
    pub tp: TopicPartition,
    /// Their offsets, ascending.
    pub offsets: Vec<u64>,
    /// Why.
    pub reason: LeaseEndReason,
}

/// A group's settings (persisted with its offsets).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    /// Where to start without a committed offset.
    pub reset: OffsetReset,
    /// How long a delivered record may stay unacked before it is delivered again.
    pub ack_timeout: Duration,
    /// Redelivery spacing; its attempt limit is the broker's default.
    pub retry: super::backoff::RetryPolicy,
    /// The group's own attempt limit; `None`: the topic's, else the broker's.
    pub max_attempts: Option<u32>,
    /// The group's own dead-letter topic (`{topic}` stands for the source topic); `None`: the
    /// topic's, else the broker's.
    pub dead_letter_topic: Option<String>,
    /// While a record of a partition waits for redelivery, deliver nothing later from it.
    pub strict_ordering: bool,
    /// Pass over records that cannot be read (damaged batches, lost segments) as if acked,
    /// instead of stopping delivery from their partition there (see [`super::damage`]).
    pub skip_damaged: bool,
    /// Partition-owned or shared delivery.
    pub delivery: DeliveryMode,
}

impl GroupSettings {
    #[cfg(test)]
    pub(crate) fn defaults_for_tests() -> Self {
        GroupSettings {
            reset: OffsetReset::Earliest,
            ack_timeout: Duration::from_secs(30),
            retry: super::backoff::RetryPolicy::default(),
            max_attempts: None,
            dead_letter_topic: None,
            strict_ordering: false,
            skip_damaged: false,
            delivery: DeliveryMode::PartitionOwned,
        }
    }

    /// The attempt limit for records of a topic whose own limit is `topic`.
    pub fn max_attempts_for(&self, topic: Option<u32>) -> u32 {
        self.max_attempts.or(topic).unwrap_or(self.retry.max_attempts)
    }

    /// The dead-letter topic for records of `source`, whose own setting is `topic`;
    /// `broker_default` is the broker's template.
    pub fn dead_letter_topic_for(&self, source: &str, topic: Option<&str>, broker_default: &str) -> String {
        match (&self.dead_letter_topic, topic) {
            (Some(template), _) => template.replace("{topic}", source),
            (None, Some(name)) => name.to_owned(),
            (None, None) => broker_default.replace("{topic}", source),
        }
    }
}

/// How much a member may hold unacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Most records delivered and not yet acked.
    pub max_records: u32,
    /// Most key + value bytes delivered and not yet acked (one record is always allowed).
    pub max_bytes: u64,
}

/// What a member asks for when it joins.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinSpec {
    /// Group id.
    pub group: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// A name for people (host, pod); need not be unique.
    pub member_name: String,
    /// Flow control; `None` fields take the broker's defaults.
    pub max_in_flight_records: Option<u32>,
    /// See [`FlowLimits::max_bytes`].
    pub max_in_flight_bytes: Option<u64>,
    /// Silence after which the member is removed; `None`: the broker's default.
    pub session_timeout: Option<Duration>,
    /// The policy the member expects. A join that creates the group sets it; a join to an
    /// existing group whose policy differs in a field set here is refused
    /// ([`crate::Error::PolicyConflict`]): policy changes go through `alter_group_config`.
    pub policy: PolicyChange,
    /// Leases that may expire in a row before the member is removed; `None`: the broker's
    /// default, `Some(0)`: never.
    pub max_lease_expiries: Option<u32>,
    /// Confirm acks once durable (see `GroupEvent::AckReceipt`).
    pub ack_receipts: bool,
}

/// Changes to a group's policy; `None` keeps the group's value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyChange {
    /// Where to start without a committed offset.
    pub reset: Option<OffsetReset>,
    /// The ack timeout.
    pub ack_timeout: Option<Duration>,
    /// Retry fields; `max_attempts: Some(0)` clears the group's own limit (alter only).
    pub retry: RetryOverrides,
    /// Dead-letter topic template; `Some("")` clears it (alter only).
    pub dead_letter_topic: Option<String>,
    /// Ordering mode.
    pub strict_ordering: Option<bool>,
    /// Handling of unreadable records.
    pub skip_damaged: Option<bool>,
    /// Delivery mode.
    pub delivery: Option<DeliveryMode>,
}

/// Retry settings a join may change; `None` keeps the group's value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryOverrides {
    /// Deliveries before dead-lettering.
    pub max_attempts: Option<u32>,
    /// First backoff.
    pub initial: Option<Duration>,
    /// Backoff growth per failure.
    pub multiplier: Option<f64>,
    /// Longest backoff.
    pub max: Option<Duration>,
}

/// Why a member's session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The member left (its stream ended).
    Left,
    /// Nothing was heard from the member for its session timeout.
    TimedOut(Duration),
    /// An operator deleted the group.
    GroupDeleted,
    /// The broker is shutting down.
    Shutdown,
    /// The member let this many leases expire in a row without acking or nacking anything:
    /// it is alive but not processing, so its partitions went to the other members.
    NotProcessing(u32),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Left => write!(f, "the member left"),
            SessionEnd::TimedOut(t) => write!(f, "nothing heard from the member for its session timeout of {t:?}"),
            SessionEnd::GroupDeleted => write!(f, "the group was deleted"),
            SessionEnd::Shutdown => write!(f, "the broker is shutting down"),
            SessionEnd::NotProcessing(n) => write!(
                f,
                "{n} deliveries to the member timed out in a row without an ack or nack; its partitions went to other members"
            ),
        }
    }
}

/// Why and when a record failed (what its dead-letter copy will say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The last reason given (a nack's text, or the ack timeout).
    pub reason: Arc<str>,
    /// First failure, ms since the Unix epoch.
    pub first_ms: i64,
    /// Last failure, ms since the Unix epoch.
    pub last_ms: i64,
}

/// A record to move to a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterJob {
    /// Where it comes from.
    pub tp: TopicPartition,
    /// Its offset there.
    pub offset: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// Why it failed.
    pub failure: Failure,
    /// Where the record starts in its batch, if known (it can then be read alone).
    pub position: Option<u32>,
    /// Times writing its dead-letter copy has failed so far.
    pub failures: u32,
    /// Restored from the group file at start-up: its copy may have been written just before
    /// the broker stopped, so the dead-letter partition is searched for it first.
    pub restored: bool,
}

/// A dead letter whose copy could not be written, waiting to be tried again.
#[derive(Debug, Clone)]
pub struct FailedDeadLetter {
    /// The job, with its failure count.
    pub job: DeadLetterJob,
    /// When to try again.
    pub retry_at: std::time::Instant,
    /// Why the last try failed.
    pub error: String,
}

/// A dead-lettered record of this group that has not been redriven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// Source partition.
    pub source: TopicPartition,
    /// Source offset.
    pub source_offset: u64,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub at_ms: i64,
}

/// A nack as the group state sees it.
#[derive(Debug, Clone)]
pub struct NackSpec {
    /// Why processing failed.
    pub reason: Arc<str>,
    /// False: dead-letter at once.
    pub retryable: bool,
    /// Redeliver after this instead of the policy's backoff.
    pub delay: Option<Duration>,
}
