//! Which offsets of a partition a group has finished with: the committed offset (everything
//! below it is done) plus the set of offsets acked above it, kept as merged ranges so that long
//! runs of acks cost one entry.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `start..end` of offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// True if `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges.range(..=offset).next_back().is_some_and(|(_, &end)| offset < end)
    }

    /// Adds `offset`, merging with neighbouring ranges. Acks mostly arrive in order, so the
    /// usual case extends the range just below in place, without allocating.
    pub fn insert(&mut self, offset: u64) {
        let extends = match self.ranges.range_mut(..=offset).next_back() {
            Some((_, end)) if *end > offset => return,
            Some((&start, end)) if *end == offset => {
                *end = offset + 1;
                Some(start)
            }
            _ => None,
        };
        let joined_end = self.ranges.remove(&(offset + 1));
        match (extends, joined_end) {
            (Some(start), Some(end)) => {
                self.ranges.insert(start, end);
            }
            (Some(_), None) => {}
            (None, end) => {
                self.ranges.insert(offset, end.unwrap_or(offset + 1));
            }
        }
    }

    /// Adds `start..end`, merging with overlapping or adjacent ranges.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut merged_start, mut merged_end) = (start, end);
        if let Some((&before_start, &before_end)) = self.ranges.range(..=start).next_back()
            && before_end >= start
        {
            merged_start = before_start;
            merged_end = merged_end.max(before_end);
        }
        let touching: Vec<u64> = self.ranges.range(merged_start..=end).map(|(&s, _)| s).collect();
        for range_start in touching {
            if let Some(range_end) = self.ranges.remove(&range_start) {
                merged_end = merged_end.max(range_end);
            }
        }
        self.ranges.insert(merged_start, merged_end);
    }

    /// Removes everything below `offset`.
    pub fn remove_below(&mut self, offset: u64) {
        let kept = self.ranges.split_off(&offset);
        if let Some((_, &end)) = self.ranges.iter().next_back()
            && end > offset
        {
            self.ranges = kept;
            self.ranges.insert(offset, end);
            return;
        }
        self.ranges = kept;
    }

    /// If a range starts at `offset`, removes it and returns its end.
    fn take_range_at(&mut self, offset: u64) -> Option<u64> {
        self.ranges.remove(&offset)
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&start, &end)| (start, end))
    }

    /// One past the highest offset in the set.
    pub fn end(&self) -> Option<u64> {
        self.ranges.last_key_value().map(|(_, &end)| end)
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of offsets.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(start, end)| end - start).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A partition's acknowledgement state in one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    committed: u64,
    acked: RangeSet,
}

impl AckSet {
    /// State with everything below `committed` done and nothing above it.
    pub fn at(committed: u64) -> Self {
        AckSet { committed, acked: RangeSet::default() }
    }

    /// State as loaded from disk; ranges below `committed` are ignored.
    pub fn from_parts(committed: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = AckSet::at(committed);
        for (start, end) in ranges {
            if end > committed {
                set.acked.insert_range(start.max(committed), end);
            }
        }
        set.advance();
        set
    }

    /// The lowest offset not yet done.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Offsets done above the committed offset.
    pub fn acked(&self) -> &RangeSet {
        &self.acked
    }

    /// True if `offset` is done.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.committed || self.acked.contains(offset)
    }

    /// Marks `offset` done; returns false if it already was.
    pub fn ack(&mut self, offset: u64) -> bool {
        if self.is_done(offset) {
            return false;
        }
        if offset == self.committed {
            self.committed += 1;
            self.advance();
        } else {
            self.acked.insert(offset);
        }
        true
    }

    /// Forgets everything at or after `end` (the log was cut there, so those offsets will be
    /// given to new records).
    pub fn forget_from(&mut self, end: u64) {
        let ranges: Vec<(u64, u64)> =
            self.acked.iter().filter(|&(s, _)| s < end).map(|(s, e)| (s, e.min(end))).collect();
        *self = AckSet::from_parts(self.committed.min(end), ranges);
    }

    /// Marks every offset in `start..end` done (offsets that can never be delivered).
    pub fn ack_range(&mut self, start: u64, end: u64) {
        let start = start.max(self.committed);
        if start < end {
            self.acked.insert_range(start, end);
            self.advance();
        }
    }

    fn advance(&mut self) {
        if let Some(end) = self.acked.take_range_at(self.committed) {
            self.committed = end;
        }
    }

    /// Moves the committed offset to `offset`, forgetting every ack (a reset).
    pub fn reset_to(&mut self, offset: u64) {
        *self = AckSet::at(offset);
    }

    /// Moves the committed offset up to `offset` if it is below (records deleted by retention).
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.committed {
            self.committed = offset;
            self.acked.remove_below(offset);
            self.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_range_marked_done_moves_the_committed_offset_past_it() {
        let mut set = AckSet::at(10);
        set.ack_range(12, 1_000_000);
        assert_eq!(set.committed(), 10, "10 and 11 are still to be acked");
        set.ack(11);
        set.ack(10);
        assert_eq!(set.committed(), 1_000_000);
        set.ack_range(5, 20);
        assert_eq!(set.committed(), 1_000_000, "below the committed offset changes nothing");
    }

    #[test]
    fn forgetting_past_a_cut_keeps_what_lies_before_it() {
        let mut set = AckSet::at(10);
        set.ack(12);
        set.ack(20);
        set.forget_from(15);
        assert_eq!((set.committed(), set.acked().iter().collect::<Vec<_>>()), (10, vec![(12, 13)]));
        let mut past = AckSet::at(50);
        past.forget_from(30);
        assert_eq!(past.committed(), 30);
    }

    #[test]
    fn in_order_acks_move_the_committed_offset() {
        let mut set = AckSet::at(10);
        assert!(set.ack(10));
        assert!(set.ack(11));
        assert_eq!(set.committed(), 12);
        assert!(set.acked().is_empty());
        assert!(!set.ack(11), "acking twice changes nothing");
    }

    #[test]
    fn out_of_order_acks_wait_for_the_gap() {
        let mut set = AckSet::at(0);
        for offset in [3, 1, 2, 5] {
            set.ack(offset);
        }
        assert_eq!(set.committed(), 0);
        assert_eq!(set.acked().iter().collect::<Vec<_>>(), vec![(1, 4), (5, 6)]);
        set.ack(0);
        assert_eq!(set.committed(), 4);
        assert_eq!(set.acked().iter().collect::<Vec<_>>(), vec![(5, 6)]);
        set.ack(4);
        assert_eq!(set.committed(), 6);
        assert!(set.acked().is_empty());
    }

    #[test]
    fn skip_to_drops_acks_below_and_absorbs_acks_above() {
        let mut set = AckSet::at(0);
        for offset in [2, 3, 7, 8] {
            set.ack(offset);
        }
        set.skip_to(7);
        assert_eq!(set.committed(), 9);
        assert!(set.acked().is_empty());
    }

    #[test]
    fn loading_ranges_restores_the_same_state() {
        let mut set = AckSet::at(5);
        for offset in [7, 8, 9, 20, 22] {
            set.ack(offset);
        }
        let loaded = AckSet::from_parts(set.committed(), set.acked().iter().collect::<Vec<_>>());
        assert_eq!(loaded, set);
        let merged = AckSet::from_parts(5, [(5, 9), (9, 12), (14, 15)]);
        assert_eq!(merged.committed(), 12);
        assert_eq!(merged.acked().iter().collect::<Vec<_>>(), vec![(14, 15)]);
    }

    proptest::proptest! {
        #[test]
        fn matches_a_plain_set(acks in proptest::collection::vec(0u64..64, 0..200)) {
            let mut set = AckSet::at(0);
            let mut model = BTreeSet::new();
            for offset in acks {
                proptest::prop_assert_eq!(set.ack(offset), model.insert(offset));
                let committed = (0..).find(|o| !model.contains(o)).unwrap_or(0);
                proptest::prop_assert_eq!(set.committed(), committed);
                for probe in 0..70 {
                    proptest::prop_assert_eq!(set.is_done(probe), model.contains(&probe));
                }
                let ranges: Vec<_> = set.acked().iter().collect();
                for pair in ranges.windows(2) {
                    proptest::prop_assert!(pair[0].1 < pair[1].0, "ranges stay disjoint and merged");
                }
                let reloaded = AckSet::from_parts(set.committed(), ranges);
                proptest::prop_assert_eq!(&reloaded, &set);
            }
        }
    }
}
