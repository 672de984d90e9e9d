//! Idempotent producers: deduplicating retried batches by (producer id, sequence).
//!
//! Per partition, the broker remembers for each producer id the next expected sequence number
//! and the last `window` batches it wrote (their first sequence, record count and base
//! offset; the broker's `producers.idempotence_window`, at least [`MIN_WINDOW`]). A batch whose
//! sequence is one of those is a retry: it is acknowledged with the original offsets and not
//! written again. A batch that starts exactly at the expected sequence is written. A batch
//! below the expected sequence but older than the window was written too, but its offsets are
//! forgotten: it is refused with [`Error::SequenceOutsideWindow`], which a client can tell
//! from a real gap ([`Error::OutOfOrderSequence`]).
//!
//! The window must cover every batch a producer can have in flight: a producer that loses its
//! stream resends all of them. The server's ProduceStream accepts up to 32 requests in flight,
//! so the window is at least that.
//!
//! The table survives restarts: it is snapshotted (at clean shutdown and periodically) together
//! with the offset it covers, and on open the batches after that offset are replayed from the
//! producer id and sequence stored in each batch header (see `sluice_storage::codec`). The
//! snapshot is only a cache: without a usable one (missing, damaged, of another version) the
//! whole log is replayed.
//!
//! **Snapshot file** (text, replaced atomically, closed by a checksum line):
//!
//! ```text
//! sluice-producers 2 <end_offset>                        # covers batches below end_offset
//! <producer_id> <next_sequence> <first_seq>:<count>:<base_offset> ...   # one line per producer
//! crc32=<8 hex digits>                                   # of every byte above
//! ```

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};

/// The smallest window: the most requests one ProduceStream may have in flight.
pub const MIN_WINDOW: usize = 32;
/// The default number of recent batches per producer recognised as retries.
pub const DEFAULT_WINDOW: usize = 64;

const SNAPSHOT_MAGIC: &str = "sluice-producers";
const SNAPSHOT_VERSION: u32 = 2;

/// A written batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    /// Sequence of its first record.
    pub first_sequence: u64,
    /// Number of records.
    pub record_count: u32,
    /// Offset of its first record.
    pub base_offset: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ProducerEntry {
    next_sequence: u64,
    recent: VecDeque<WrittenBatch>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Write it.
    Append,
    /// Already written: acknowledge with this batch's offsets.
    Duplicate(WrittenBatch),
}

/// The producers of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<u64, ProducerEntry>,
    window: usize,
}

impl Default for ProducerTable {
    fn default() -> Self {
        ProducerTable::new(DEFAULT_WINDOW)
    }
}

impl ProducerTable {
    /// An empty table remembering `window` batches per producer (at least 1).
    pub fn new(window: usize) -> Self {
        ProducerTable { producers: HashMap::new(), window: window.max(1) }
    }

    /// Decides what to do with a batch of `record_count` records starting at `first_sequence`.
    pub fn check(&self, producer_id: u64, first_sequence: u64, record_count: u32) -> Result<Check> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // An unknown producer may start anywhere: its earlier batches may have been removed
            // by retention, or it may be new.
            return Ok(Check::Append);
        };
        if first_sequence == entry.next_sequence {
            return Ok(Check::Append);
        }
        let exact = entry.recent.iter().find(|b| b.first_sequence == first_sequence && b.record_count == record_count);
        let oldest = entry.recent.front().map_or(entry.next_sequence, |b| b.first_sequence);
        match exact {
            Some(batch) => Ok(Check::Duplicate(*batch)),
            None if first_sequence < oldest => Err(Error::SequenceOutsideWindow {
                producer_id,
                received: first_sequence,
                oldest_remembered: oldest,
                window: self.window,
            }),
            None => {
                Err(Error::OutOfOrderSequence { producer_id, expected: entry.next_sequence, received: first_sequence })
            }
        }
    }

    /// Records a written batch. Batches of one producer may be recorded out of order (their
    /// appends complete on different tasks) or twice (replayed from the log after a snapshot
    /// that already held them): the table keeps them in sequence order, once each.
    pub fn record(&mut self, producer_id: u64, batch: WrittenBatch) {
        let entry = self.producers.entry(producer_id).or_default();
        if entry.recent.iter().any(|b| b.first_sequence == batch.first_sequence) {
            return;
        }
        let end = batch.first_sequence + u64::from(batch.record_count);
        if entry.recent.is_empty() || end > entry.next_sequence {
            entry.next_sequence = end;
        }
        let at = entry.recent.partition_point(|b| b.first_sequence < batch.first_sequence);
        entry.recent.insert(at, batch);
        while entry.recent.len() > self.window {
            entry.recent.pop_front();
        }
    }

    /// Forgets producers whose newest batch is below `start_offset` (removed by retention):
    /// a retry of such a batch cannot be told apart any more, and this bounds the table.
    pub fn retain_after(&mut self, start_offset: u64) {
        self.producers.retain(|_, entry| entry.recent.back().is_some_and(|b| b.base_offset >= start_offset));
    }

    /// The snapshot text for a table that covers every batch below `end_offset`.
    pub fn encode_snapshot(&self, end_offset: u64) -> String {
        let mut ids: Vec<&u64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut text = format!("{SNAPSHOT_MAGIC} {SNAPSHOT_VERSION} {end_offset}\n");
        for id in ids {
            let entry = &self.producers[id];
            text.push_str(&format!("{id} {}", entry.next_sequence));
            for b in &entry.recent {
                text.push_str(&format!(" {}:{}:{}", b.first_sequence, b.record_count, b.base_offset));
            }
            text.push('\n');
        }
        sluice_storage::store::with_checksum(&text)
    }

    /// Parses a snapshot into a table remembering `window` batches per producer and the
    /// offset it covers; `None` if it is not an intact snapshot of this version.
    pub fn decode_snapshot(text: &str, window: usize) -> Option<(u64, ProducerTable)> {
        let sluice_storage::store::Checked::Intact(text) = sluice_storage::store::verify_checksum(text) else {
            return None;
        };
        let mut lines = text.lines();
        let mut head = lines.next()?.split(' ');
        if head.next()? != SNAPSHOT_MAGIC || head.next()?.parse::<u32>().ok()? != SNAPSHOT_VERSION {
            return None;
        }
        let end_offset = head.next()?.parse().ok()?;
        let mut table = ProducerTable::new(window);
        for line in lines.filter(|l| !l.is_empty()) {
            let mut words = line.split(' ');
            let id = words.next()?.parse().ok()?;
            let next_sequence = words.next()?.parse().ok()?;
            let mut recent = VecDeque::new();
            for word in words {
                let mut parts = word.split(':');
                let batch = WrittenBatch {
                    first_sequence: parts.next()?.parse().ok()?,
                    record_count: parts.next()?.parse().ok()?,
                    base_offset: parts.next()?.parse().ok()?,
                };
                recent.push_back(batch);
            }
            // A smaller window than when the snapshot was written keeps the newest batches.
            while recent.len() > table.window {
                recent.pop_front();
            }
            table.producers.insert(id, ProducerEntry { next_sequence, recent });
        }
        Some((end_offset, table))
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(first_sequence: u64, record_count: u32, base_offset: u64) -> WrittenBatch {
        WrittenBatch { first_sequence, record_count, base_offset }
    }

    #[test]
    fn a_retry_is_recognised_and_answered_with_its_original_offsets() {
        let mut table = ProducerTable::default();
        assert_eq!(table.check(7, 0, 3).unwrap(), Check::Append);
        table.record(7, written(0, 3, 100));
        assert_eq!(table.check(7, 3, 2).unwrap(), Check::Append);
        table.record(7, written(3, 2, 150));
        assert_eq!(table.check(7, 0, 3).unwrap(), Check::Duplicate(written(0, 3, 100)));
        assert_eq!(table.check(7, 3, 2).unwrap(), Check::Duplicate(written(3, 2, 150)));
        assert_eq!(table.check(8, 0, 1).unwrap(), Check::Append, "producers are independent");
    }

    #[test]
    fn snapshots_roundtrip_and_damaged_ones_are_refused() {
        let mut table = ProducerTable::default();
        table.record(7, written(0, 3, 100));
        table.record(7, written(3, 2, 150));
        table.record(u64::MAX, written(40, 1, 200));
        let text = table.encode_snapshot(201);
        assert_eq!(ProducerTable::decode_snapshot(&text, DEFAULT_WINDOW), Some((201, table)));
        let sealed = sluice_storage::store::with_checksum;
        for bad in [
            String::new(),
            sealed("something else 2 5\n"),
            sealed("sluice-producers 1 5\n"),
            sealed("sluice-producers 2 5\n7 x\n"),
            sealed("sluice-producers 2 5\n7 3 1:2\n"),
            "sluice-producers 2 5\n7 3 0:3:100\n".into(),
            text.replace("150", "151"),
        ] {
            assert_eq!(ProducerTable::decode_snapshot(&bad, DEFAULT_WINDOW), None, "{bad:?}");
        }
    }

    #[test]
    fn producers_whose_batches_retention_removed_are_forgotten() {
        let mut table = ProducerTable::default();
        table.record(1, written(0, 1, 10));
        table.record(2, written(0, 1, 500));
        table.retain_after(100);
        assert_eq!(table.len(), 1);
        assert_eq!(table.check(2, 0, 1).unwrap(), Check::Duplicate(written(0, 1, 500)));
    }

    #[test]
    fn gaps_and_unknown_old_sequences_are_out_of_order() {
        let mut table = ProducerTable::default();
        table.record(7, written(0, 3, 0));
        let err = table.check(7, 5, 1).unwrap_err();
        assert!(matches!(err, Error::OutOfOrderSequence { expected: 3, received: 5, .. }), "{err}");
        for i in 1..=DEFAULT_WINDOW as u64 {
            table.record(7, written(i * 3, 3, i * 10));
        }
        let err = table.check(7, 0, 3).unwrap_err();
        assert!(
            matches!(err, Error::SequenceOutsideWindow { received: 0, oldest_remembered: 3, .. }),
            "written but too old to remember is not a gap: {err}"
        );
    }

    #[test]
    fn the_window_holds_as_many_batches_as_configured() {
        let mut table = ProducerTable::new(MIN_WINDOW);
        for i in 0..MIN_WINDOW as u64 * 2 {
            table.record(7, written(i, 1, i));
        }
        let first_kept = MIN_WINDOW as u64;
        assert_eq!(table.check(7, first_kept, 1).unwrap(), Check::Duplicate(written(first_kept, 1, first_kept)));
        assert!(matches!(table.check(7, first_kept - 1, 1), Err(Error::SequenceOutsideWindow { .. })));
    }
}
