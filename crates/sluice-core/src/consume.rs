//! Reading: Fetch (long-poll) and Subscribe (a stream that follows the end of the log).

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_storage::{Batch, RecordStart};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Topic};
use crate::error::{Error, Result};
use crate::partition::PartitionHandle;

/// Default byte budget of a read.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;

/// Batches read from a partition.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Partition read.
    pub partition: u32,
    /// Whole batches; records below `from` in the first one are to be skipped.
    pub batches: Vec<Batch>,
    /// The offset asked for.
    pub from: u64,
    /// Records at or after this offset are not part of the result (`u64::MAX`: all are): set
    /// when the first batch alone is larger than the byte budget.
    pub until: u64,
    /// The partition's start offset when read.
    pub start_offset: u64,
    /// The partition's end offset when read.
    pub end_offset: u64,
    /// Where record `from` starts in the first batch, when known: a walk of the result can
    /// begin there instead of at the batch's first record.
    pub first: Option<RecordStart>,
}

impl Fetched {
    /// The records of `batch` (one of this result's) from where the result starts in it.
    pub fn views_of<'a>(&self, batch: &'a Batch) -> sluice_storage::record_view::RecordViews<'a> {
        match self.first {
            Some(first) if batch.base_offset() <= first.offset && first.offset < batch.next_offset() => {
                batch.views_from(first)
            }
            _ => batch.views(),
        }
    }

    /// The offset to read next.
    pub fn next_offset(&self) -> u64 {
        self.batches.last().map_or(self.from, |b| b.next_offset().min(self.until))
    }

    /// Records at or after `from` (and before `until`).
    pub fn record_count(&self) -> u64 {
        self.batches
            .iter()
            .map(|b| b.next_offset().min(self.until).saturating_sub(b.base_offset().max(self.from)))
            .sum()
    }

    /// True if `offset` is part of the result.
    pub fn includes(&self, offset: u64) -> bool {
        offset >= self.from && offset < self.until
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// This offset.
    Offset(u64),
    /// The first retained record.
    Earliest,
    /// The end of the log now.
    Latest,
    /// The first record with a timestamp at or after this (ms); the end if none.
    Timestamp(i64),
}

/// `offset` if it lies in `start..=end` (reading at `end` waits for the next record).
fn in_range(offset: u64, (start, end): (u64, u64)) -> Result<u64> {
    if offset < start || offset > end {
        return Err(Error::OffsetOutOfRange { requested: offset, start, end });
    }
    Ok(offset)
}

/// Stored bytes of the records a result returns: whole batches, and of a batch it returns only
/// part of (read from the middle, or cut), the span of those records.
fn sent_bytes(fetched: &Fetched) -> usize {
    let part = |batch: &Batch| {
        let (mut start, mut end) = (None, batch.as_bytes().len());
        for record in fetched.views_of(batch).flatten() {
            if record.offset >= fetched.until {
                end = record.position as usize;
                break;
            }
            if start.is_none() && record.offset >= fetched.from {
                start = Some(record.position as usize);
            }
        }
        start.map_or(0, |start| end.saturating_sub(start))
    };
    let whole = |batch: &Batch| batch.base_offset() >= fetched.from && batch.next_offset() <= fetched.until;
    fetched.batches.iter().map(|b| if whole(b) { b.as_bytes().len() } else { part(b) }).sum()
}

fn count_out(topic: &Topic, fetched: &Fetched) {
    let bytes = sent_bytes(fetched);
    topic.counters.records_out.fetch_add(fetched.record_count(), Ordering::Relaxed);
    topic.counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// A read at `offset`, cut to `max_bytes` (see [`cut`]).
async fn read(partition: &PartitionHandle, offset: u64, max_bytes: usize) -> Result<(Fetched, Option<RecordStart>)> {
    let result = partition.read(offset, max_bytes).await?;
    let offsets = (result.start_offset, result.end_offset);
    Ok(cut(partition.id(), result.batches, (offset, None), max_bytes, offsets))
}

/// The result of a read at `from` (with where that record starts, if known), its first batch
/// cut where it outgrows `max_bytes`; and where the first record left out starts, if it was cut.
fn cut(
    partition: u32,
    mut batches: Vec<Batch>,
    (from, first): (u64, Option<RecordStart>),
    max_bytes: usize,
    (start, end): (u64, u64),
) -> (Fetched, Option<RecordStart>) {
    let mut fetched =
        Fetched { partition, batches: Vec::new(), from, until: u64::MAX, start_offset: start, end_offset: end, first };
    let rest = batches.first().and_then(|batch| cut_first_batch(batch, &fetched, max_bytes));
    if let Some(rest) = rest {
        fetched.until = rest.offset;
        batches.truncate(1);
    }
    fetched.batches = batches;
    (fetched, rest)
}

/// Where to stop inside a first batch larger than `max_bytes` (one produce request of many
/// large records is one batch), so that a response stays near its budget: stock gRPC clients
/// refuse messages over 4 MiB. At least one record is returned. `None` when the batch fits;
/// otherwise the start of the first record left out.
fn cut_first_batch(first: &Batch, fetched: &Fetched, max_bytes: usize) -> Option<RecordStart> {
    if first.as_bytes().len() <= max_bytes {
        return None;
    }
    let mut bytes = 0usize;
    // Borrowed views, from `from` when its start is known (a subscription's cut batch).
    for record in fetched.views_of(first).flatten().filter(|r| r.offset >= fetched.from) {
        // Key and value, plus what framing and headers cost a record on the wire.
        let size = record.key.map_or(0, <[u8]>::len) + record.value.len() + 64 * (1 + record.header_count());
        if bytes > 0 && bytes + size > max_bytes {
            return Some(record.start());
        }
        bytes += size;
    }
    None
}

impl Broker {
    fn fetch_bytes(&self, max_bytes: usize) -> usize {
        if max_bytes == 0 { DEFAULT_FETCH_BYTES } else { max_bytes.min(self.inner.config.max_fetch_bytes) }
    }

    /// Records at or after `offset`; when there are none yet, waits up to `max_wait` for some.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched> {
        self.check_open()?;
        let topic = self.topic(topic)?;
        let handle = topic.partition(partition)?;
        let (start, end) = handle.offsets();
        in_range(offset, (start, end))?;
        if offset == end && !max_wait.is_zero() {
            let deadline = tokio::time::Instant::now() + max_wait.min(self.inner.config.max_fetch_wait);
            handle.wait_past(offset, deadline, &self.inner.shutdown).await;
        }
        let (fetched, _) = read(&handle, offset, self.fetch_bytes(max_bytes)).await?;
        count_out(&topic, &fetched);
        Ok(fetched)
    }

    /// The first offset of a partition whose record timestamp is at or after `timestamp`, or
    /// the end offset when no record is.
    pub async fn offset_for_timestamp(&self, topic: &str, partition: u32, timestamp: i64) -> Result<u64> {
        self.check_open()?;
        let handle = self.topic(topic)?.partition(partition)?;
        let end = handle.offsets().1;
        Ok(handle.offset_for_timestamp(timestamp).await?.unwrap_or(end))
    }

    /// Starts following a partition from `start`.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        start: StartAt,
        max_bytes: usize,
    ) -> Result<Subscription> {
        self.check_open()?;
        let topic = self.topic(topic)?;
        let handle = topic.partition(partition)?;
        let (first, end) = handle.offsets();
        let next = match start {
            StartAt::Offset(offset) => in_range(offset, (first, end))?,
            StartAt::Earliest => first,
            StartAt::Latest => end,
            StartAt::Timestamp(ts) => handle.offset_for_timestamp(ts).await?.unwrap_or(end),
        };
        Ok(Subscription {
            topic,
            partition: handle,
            next,
            max_bytes: self.fetch_bytes(max_bytes),
            shutdown: self.inner.shutdown.clone(),
            cut_batch: None,
        })
    }
}

/// A position in a partition that follows new records as they are appended.
#[derive(Debug)]
pub struct Subscription {
    topic: std::sync::Arc<Topic>,
    partition: PartitionHandle,
    next: u64,
    max_bytes: usize,
    shutdown: CancellationToken,
    /// The last batch read, when it was larger than `max_bytes` and only its start was
    /// returned: the rest is served from it. Read again, it would cost a pread and a CRC check
    /// of the whole batch per response (a 1 MiB batch read at 64 KiB: sixteen times over).
    cut_batch: Option<(Batch, RecordStart)>,
}

impl Subscription {
    /// The next records from the batch the last response cut, unless retention has removed
    /// them meanwhile (then the log is read, and says so).
    fn rest_of_cut_batch(&mut self) -> Option<(Fetched, Option<RecordStart>)> {
        let (batch, rest) = self.cut_batch.take()?;
        let offsets = self.partition.offsets();
        if self.next < offsets.0 || self.next < batch.base_offset() || self.next >= batch.next_offset() {
            return None;
        }
        let first = (rest.offset == self.next).then_some(rest);
        Some(cut(self.partition.id(), vec![batch], (self.next, first), self.max_bytes, offsets))
    }

    /// The next offset this subscription will return.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next batches, waiting for new records when caught up. [`Error::ShuttingDown`] when
    /// the broker shuts down; `None` when the partition goes away (its topic was deleted).
    /// Memory stays bounded: nothing is read ahead of the caller.
    pub async fn next(&mut self) -> Result<Option<Fetched>> {
        let mut end = self.partition.watch_end();
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Error::ShuttingDown);
            }
            if *end.borrow_and_update() > self.next {
                let (fetched, rest) = match self.rest_of_cut_batch() {
                    Some(cut) => cut,
                    None => read(&self.partition, self.next, self.max_bytes).await?,
                };
                if !fetched.batches.is_empty() {
                    self.next = fetched.next_offset();
                    self.cut_batch = match (fetched.batches.as_slice(), rest) {
                        ([only], Some(rest)) => Some((only.clone(), rest)),
                        _ => None,
                    };
                    count_out(&self.topic, &fetched);
                    return Ok(Some(fetched));
                }
            }
            tokio::select! {
                changed = end.changed() => if changed.is_err() { return Ok(None) },
                () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }
}
