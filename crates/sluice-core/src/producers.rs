//! Idempotent producers: deduplicating retried batches by (producer id, sequence).
//!
//! Per partition, the broker remembers for each producer id the next expected sequence number
//! and the last [`REMEMBERED_BATCHES`] batches it wrote (their first sequence, record count and
//! base offset). A batch whose sequence is already covered is a retry: it is acknowledged with
//! the original offsets and not written again. A batch that starts exactly at the expected
//! sequence is written. Anything else is out of order and refused.
//!
//! The table is rebuilt after a restart from the producer id and sequence stored in each batch
//! header (see `sluice_storage::codec`), so deduplication survives restarts.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};

/// How many recent batches per producer can be recognised as retries.
pub const REMEMBERED_BATCHES: usize = 8;

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

#[derive(Debug, Default, Clone)]
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
#[derive(Debug, Default, Clone)]
pub struct ProducerTable {
    producers: HashMap<u64, ProducerEntry>,
}

impl ProducerTable {
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
        match exact {
            Some(batch) => Ok(Check::Duplicate(*batch)),
            None => {
                Err(Error::OutOfOrderSequence { producer_id, expected: entry.next_sequence, received: first_sequence })
            }
        }
    }

    /// Records a written batch.
    pub fn record(&mut self, producer_id: u64, batch: WrittenBatch) {
        let entry = self.producers.entry(producer_id).or_default();
        entry.next_sequence = batch.first_sequence + u64::from(batch.record_count);
        if entry.recent.len() == REMEMBERED_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(batch);
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
    fn gaps_and_unknown_old_sequences_are_out_of_order() {
        let mut table = ProducerTable::default();
        table.record(7, written(0, 3, 0));
        let err = table.check(7, 5, 1).unwrap_err();
        assert!(matches!(err, Error::OutOfOrderSequence { expected: 3, received: 5, .. }), "{err}");
        for i in 1..=REMEMBERED_BATCHES as u64 {
            table.record(7, written(i * 3, 3, i * 10));
        }
        assert!(table.check(7, 0, 3).is_err(), "too old to remember");
    }
}
