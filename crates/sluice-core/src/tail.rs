//! The most recent batches of a partition, kept in memory so readers at the end of the log (the
//! common case: consumers keeping up) are served without a disk read or a blocking-pool hop.
//!
//! Batches enter after they are durable per the fsync policy and visible to readers, so the cache
//! never serves what the log would not. It holds whole batches, in offset order, up to a byte
//! budget; the oldest leave first.

use std::collections::VecDeque;

use sluice_storage::Batch;

/// Recent batches of one partition.
#[derive(Debug, Default)]
pub struct TailCache {
    batches: VecDeque<Batch>,
    bytes: usize,
    limit: usize,
}

impl TailCache {
    /// A cache holding up to `limit` bytes (0 disables it).
    pub fn new(limit: usize) -> Self {
        TailCache { batches: VecDeque::new(), bytes: 0, limit }
    }

    /// Adds a just-appended batch. Appends that finish out of order are put in offset order.
    pub fn insert(&mut self, batch: Batch) {
        let size = batch.as_bytes().len();
        if size > self.limit {
            return;
        }
        let at = self.batches.partition_point(|b| b.base_offset() < batch.base_offset());
        self.batches.insert(at, batch);
        self.bytes += size;
        while self.bytes > self.limit {
            match self.batches.pop_front() {
                Some(old) => self.bytes -= old.as_bytes().len(),
                None => break,
            }
        }
    }

    /// Contiguous batches from the one holding `offset`, up to about `max_bytes` (at least one),
    /// or `None` when `offset` is not in the cache.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Option<Vec<Batch>> {
        let start = self.batches.partition_point(|b| b.next_offset() <= offset);
        let first = self.batches.get(start)?;
        if first.base_offset() > offset {
            return None;
        }
        let mut out = vec![first.clone()];
        let mut bytes = first.as_bytes().len();
        let mut next = first.next_offset();
        for batch in self.batches.range(start + 1..) {
            if batch.base_offset() != next || bytes + batch.as_bytes().len() > max_bytes {
                break;
            }
            bytes += batch.as_bytes().len();
            next = batch.next_offset();
            out.push(batch.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::{BatchBuilder, FsyncPolicy, LogConfig, PartitionLog, RecordRef};

    /// 20 real batches of 2 records each (offsets 0..40), as a log writes them.
    fn batches() -> Vec<Batch> {
        let dir = tempfile::tempdir().unwrap();
        let log =
            PartitionLog::open(dir.path(), LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() }).unwrap();
        (0..20)
            .map(|_| {
                let mut builder = BatchBuilder::default();
                for _ in 0..2 {
                    builder.push(&RecordRef { timestamp: 0, key: None, value: &[7u8; 100], headers: &[] }).unwrap();
                }
                log.append_keep(builder.finish().unwrap()).unwrap().batch
            })
            .collect()
    }

    #[test]
    fn serves_contiguous_recent_batches_and_forgets_the_oldest() {
        let all = batches();
        let size = all[0].as_bytes().len();
        let mut cache = TailCache::new(size * 10);
        cache.insert(all[0].clone());
        cache.insert(all[2].clone()); // out of order: batch 1 (offsets 2..4) finishes later
        assert_eq!(cache.read(1, usize::MAX).unwrap().len(), 1, "stops at the gap");
        cache.insert(all[1].clone());
        let got = cache.read(1, usize::MAX).unwrap();
        assert_eq!(got.iter().map(Batch::base_offset).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert!(cache.read(6, usize::MAX).is_none(), "past the end");
        for batch in &all[3..] {
            cache.insert(batch.clone());
        }
        assert!(cache.read(0, usize::MAX).is_none(), "the oldest were evicted");
        assert_eq!(cache.read(39, usize::MAX).unwrap()[0].base_offset(), 38);
        assert_eq!(cache.read(30, 1).unwrap().len(), 1, "at least one batch");
        assert_eq!(cache.read(30, size * 3).unwrap().len(), 3, "up to the byte budget");
    }
}
