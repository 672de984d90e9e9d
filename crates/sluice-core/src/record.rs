//! Records as the broker core receives them from producers.

use bytes::Bytes;

/// A record to produce. Payload bytes are shared with the request buffer, not copied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Optional key; decides the partition when the request names none.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers.
    pub headers: Vec<(String, Bytes)>,
    /// Producer's timestamp (ms since the Unix epoch); the broker's clock when `None`.
    pub timestamp: Option<i64>,
}

impl NewRecord {
    /// Size counted against `max_message_bytes`: key, value, header names and values.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
    }
}

/// An idempotent producer's identity on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerRef {
    /// Non-zero producer id.
    pub producer_id: u64,
    /// Sequence number of the request's first record in (producer, topic, partition).
    pub first_sequence: u64,
}

/// A produce request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRequest {
    /// Topic name.
    pub topic: String,
    /// Explicit partition for all records.
    pub partition: Option<u32>,
    /// At least one record.
    pub records: Vec<NewRecord>,
    /// Set for idempotent produce (requires `partition`).
    pub producer: Option<ProducerRef>,
}

/// The records of a request that went to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAppend {
    /// Partition.
    pub partition: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub record_count: u32,
    /// Indexes of these records in the request; empty when all records went here.
    pub record_indexes: Vec<u32>,
    /// True for a retried idempotent batch: the original offsets, nothing written.
    pub duplicate: bool,
}

/// Where a request's records went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceOutcome {
    /// One entry per partition written.
    pub appends: Vec<PartitionAppend>,
}
