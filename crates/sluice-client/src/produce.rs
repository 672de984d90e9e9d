//! Where produced records landed.

use sluice_proto::v1 as pb;

/// One record's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    /// Partition it went to.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// True when the broker recognised a retried idempotent batch and wrote nothing.
    pub duplicate: bool,
}

/// Each record's position, in the order of the request's `count` records. A partition's
/// records keep their request order, so an append without `record_indexes` holds them all.
pub fn positions(response: &pb::ProduceResponse, count: usize) -> Vec<RecordPosition> {
    let mut out = vec![RecordPosition { partition: 0, offset: 0, duplicate: false }; count];
    for append in &response.appends {
        let place = |i: u64| RecordPosition {
            partition: append.partition,
            offset: append.base_offset + i,
            duplicate: append.duplicate,
        };
        if append.record_indexes.is_empty() {
            for (i, slot) in out.iter_mut().enumerate().take(append.record_count as usize) {
                *slot = place(i as u64);
            }
        } else {
            for (i, &index) in append.record_indexes.iter().enumerate() {
                if let Some(slot) = out.get_mut(index as usize) {
                    *slot = place(i as u64);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_over_partitions_get_their_own_offsets() {
        let response = pb::ProduceResponse {
            appends: vec![
                pb::PartitionAppend {
                    partition: 2,
                    base_offset: 10,
                    record_count: 2,
                    record_indexes: vec![0, 2],
                    duplicate: false,
                },
                pb::PartitionAppend {
                    partition: 0,
                    base_offset: 5,
                    record_count: 1,
                    record_indexes: vec![1],
                    duplicate: false,
                },
            ],
            ..Default::default()
        };
        let got: Vec<(u32, u64)> = positions(&response, 3).iter().map(|p| (p.partition, p.offset)).collect();
        assert_eq!(got, vec![(2, 10), (0, 5), (2, 11)]);
        let whole = pb::ProduceResponse {
            appends: vec![pb::PartitionAppend { partition: 1, base_offset: 7, record_count: 3, ..Default::default() }],
            ..Default::default()
        };
        let got: Vec<(u32, u64)> = positions(&whole, 3).iter().map(|p| (p.partition, p.offset)).collect();
        assert_eq!(got, vec![(1, 7), (1, 8), (1, 9)]);
    }
}
