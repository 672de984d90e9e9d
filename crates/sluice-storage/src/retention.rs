//! Which segments retention deletes: a pure function of the segments, the policy and the time.

/// What retention needs to know about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Bytes in the segment file.
    pub size: u64,
    /// Largest record timestamp in the segment (ms).
    pub max_timestamp: i64,
}

/// Retention limits of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Delete segments whose newest record is older than this many ms.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
}

/// How many of the oldest segments to delete.
///
/// `segments` is in offset order and its last element is the active segment, which is never
/// chosen. Only a prefix is deleted, so offsets stay contiguous: the walk stops at the first
/// segment that is neither expired by time nor needed to bring the total size to
/// `retention_bytes` or below.
pub fn select(segments: &[SegmentSummary], policy: &RetentionPolicy, now_ms: i64) -> usize {
    let Some((_active, closed)) = segments.split_last() else {
        return 0;
    };
    let mut remaining: u64 = segments.iter().map(|s| s.size).sum();
    let cutoff = policy.retention_ms.map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    let mut count = 0;
    for segment in closed {
        let expired = cutoff.is_some_and(|cutoff| segment.max_timestamp < cutoff);
        let oversize = policy.retention_bytes.is_some_and(|limit| remaining > limit);
        if !(expired || oversize) {
            break;
        }
        remaining -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, max_timestamp: i64) -> SegmentSummary {
        SegmentSummary { size, max_timestamp }
    }

    #[test]
    fn the_active_segment_is_never_chosen() {
        let policy = RetentionPolicy { retention_ms: Some(1), retention_bytes: Some(0) };
        assert_eq!(select(&[seg(100, 0)], &policy, 1000), 0);
        assert_eq!(select(&[seg(100, 0), seg(100, 0)], &policy, 1000), 1);
        assert_eq!(select(&[], &policy, 1000), 0);
    }

    #[test]
    fn time_retention_deletes_the_expired_prefix_only() {
        let policy = RetentionPolicy { retention_ms: Some(100), retention_bytes: None };
        let segments = [seg(1, 10), seg(1, 950), seg(1, 20), seg(1, 990)];
        assert_eq!(select(&segments, &policy, 1000), 1, "stops at the first unexpired segment");
        assert_eq!(select(&segments, &policy, 1100), 3);
        assert_eq!(select(&segments, &policy, 0), 0);
    }

    #[test]
    fn size_retention_brings_the_total_to_the_limit_or_below() {
        let policy = RetentionPolicy { retention_ms: None, retention_bytes: Some(250) };
        let segments = [seg(100, 0), seg(100, 0), seg(100, 0), seg(50, 0)];
        assert_eq!(select(&segments, &policy, 0), 1, "350 -> 250");
        let policy = RetentionPolicy { retention_bytes: Some(249), ..policy };
        assert_eq!(select(&segments, &policy, 0), 2, "350 -> 150");
        let policy = RetentionPolicy { retention_bytes: Some(10), ..policy };
        assert_eq!(select(&segments, &policy, 0), 3, "the active 50 bytes stay");
    }
}
