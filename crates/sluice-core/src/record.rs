//! Records as the broker core receives them from producers.

use std::fmt;

use bytes::Bytes;
use sluice_storage::HeaderRef;

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

/// The records of a produce request, wherever they are: owned [`NewRecord`]s, or still in the
/// request's wire encoding (the server locates them in its receive buffer and implements this,
/// so no record is built per record only to be copied into a batch).
pub trait RecordSource: fmt::Debug + Send + Sync {
    /// Number of records.
    fn count(&self) -> usize;
    /// Record `index`'s key (decides its partition when the request names none).
    fn key(&self, index: usize) -> Option<&[u8]>;
    /// Record `index`'s size counted against `max_message_bytes`: key, value, header names and
    /// values (see [`NewRecord::size`]).
    fn size(&self, index: usize) -> usize;
    /// Record `index`'s header count.
    fn header_count(&self, index: usize) -> usize;
    /// Record `index`'s fields; its headers, in order, replace the contents of `headers`
    /// (scratch space the caller reuses).
    fn record<'a>(&'a self, index: usize, headers: &mut Vec<HeaderRef<'a>>) -> RecordFields<'a>;
}

/// A record's fields besides its headers (see [`RecordSource::record`]).
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// The producer's timestamp, if it gave one.
    pub timestamp: Option<i64>,
}

impl RecordSource for Vec<NewRecord> {
    fn count(&self) -> usize {
        self.len()
    }

    fn key(&self, index: usize) -> Option<&[u8]> {
        self[index].key.as_deref()
    }

    fn size(&self, index: usize) -> usize {
        self[index].size()
    }

    fn header_count(&self, index: usize) -> usize {
        self[index].headers.len()
    }

    fn record<'a>(&'a self, index: usize, headers: &mut Vec<HeaderRef<'a>>) -> RecordFields<'a> {
        let record = &self[index];
        headers.clear();
        headers.extend(record.headers.iter().map(|(name, value)| HeaderRef { name, value }));
        RecordFields { key: record.key.as_deref(), value: &record.value, timestamp: record.timestamp }
    }
}

/// A produce request's records (see [`RecordSource`]).
pub struct Records(Box<dyn RecordSource>);

impl Records {
    /// Records from any source.
    pub fn new(source: impl RecordSource + 'static) -> Self {
        Records(Box::new(source))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.count()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.count() == 0
    }

    /// The source.
    pub fn source(&self) -> &dyn RecordSource {
        &*self.0
    }
}

impl From<Vec<NewRecord>> for Records {
    fn from(records: Vec<NewRecord>) -> Self {
        Records::new(records)
    }
}

impl Default for Records {
    fn default() -> Self {
        Records::new(Vec::<NewRecord>::new())
    }
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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
#[derive(Debug, Default)]
pub struct ProduceRequest {
    /// Topic name.
    pub topic: String,
    /// Explicit partition for all records.
    pub partition: Option<u32>,
    /// At least one record.
    pub records: Records,
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
