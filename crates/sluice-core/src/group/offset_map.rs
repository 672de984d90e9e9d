//! A partition's pending records by offset, for the way a group uses them.
//!
//! Records are delivered in offset order past every pending one and mostly acked in the order
//! they were delivered, so the map is a deque sorted by offset: a delivery appends, an ack
//! clears a run near the front, a lookup is a binary search. Entries removed from the middle
//! (members acking out of order) leave a hole until the deque is tidied; holes never outnumber
//! live entries by much, so memory stays proportional to what is pending. A `BTreeMap` did the
//! same job with a tree walk and node shifts per record, a sixth of a group read's CPU.
//! The subset of `BTreeMap`'s interface the ledger uses keeps its signatures.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

/// Holes tolerated beyond the live entries before the deque is compacted.
const SLACK: usize = 64;

/// Values by offset (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct OffsetMap<V> {
    /// Strictly increasing offsets; `None` is a hole. The first and last entries are live.
    entries: VecDeque<(u64, Option<V>)>,
    live: usize,
}

impl<V> Default for OffsetMap<V> {
    fn default() -> Self {
        OffsetMap { entries: VecDeque::new(), live: 0 }
    }
}

impl<V> OffsetMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }

    fn find(&self, offset: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&offset, |(o, _)| *o)
    }

    /// Positions of the entries whose offsets lie in `range`.
    fn span(&self, range: &impl RangeBounds<u64>) -> std::ops::Range<usize> {
        let start = match range.start_bound() {
            Bound::Included(&s) => self.entries.partition_point(|(o, _)| *o < s),
            Bound::Excluded(&s) => self.entries.partition_point(|(o, _)| *o <= s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => self.entries.partition_point(|(o, _)| *o <= e),
            Bound::Excluded(&e) => self.entries.partition_point(|(o, _)| *o < e),
            Bound::Unbounded => self.entries.len(),
        };
        start..end.max(start)
    }

    pub fn get(&self, offset: &u64) -> Option<&V> {
        self.find(*offset).ok().and_then(|i| self.entries[i].1.as_ref())
    }

    pub fn get_mut(&mut self, offset: &u64) -> Option<&mut V> {
        self.find(*offset).ok().and_then(|i| self.entries[i].1.as_mut())
    }

    pub fn contains_key(&self, offset: &u64) -> bool {
        self.get(offset).is_some()
    }

    /// Sets `offset`'s value; returns the one it replaces.
    pub fn insert(&mut self, offset: u64, value: V) -> Option<V> {
        if self.entries.back().is_none_or(|(last, _)| *last < offset) {
            self.entries.push_back((offset, Some(value)));
            self.live += 1;
            return None;
        }
        match self.find(offset) {
            Ok(i) => {
                let old = self.entries[i].1.replace(value);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            // Below the last entry and new: rare (state restored at startup comes in order).
            Err(i) => {
                self.entries.insert(i, (offset, Some(value)));
                self.live += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, offset: &u64) -> Option<V> {
        let i = self.find(*offset).ok()?;
        let old = self.entries[i].1.take();
        if old.is_some() {
            self.live -= 1;
            self.tidy();
        }
        old
    }

    /// Drops holes at both ends, and all holes once there are too many.
    fn tidy(&mut self) {
        while self.entries.front().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_back();
        }
        if self.entries.len() > 2 * self.live + SLACK {
            self.entries.retain(|(_, v)| v.is_some());
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &V)> + '_ {
        self.entries.iter().filter_map(|(o, v)| Some((o, v.as_ref()?)))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &u64> + '_ {
        self.iter().map(|(o, _)| o)
    }

    #[cfg(test)]
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn first_key_value(&self) -> Option<(&u64, &V)> {
        self.iter().next()
    }

    pub fn range(&self, range: impl RangeBounds<u64>) -> impl DoubleEndedIterator<Item = (&u64, &V)> + '_ {
        self.entries.range(self.span(&range)).filter_map(|(o, v)| Some((o, v.as_ref()?)))
    }

    pub fn range_mut(&mut self, range: impl RangeBounds<u64>) -> impl DoubleEndedIterator<Item = (&u64, &mut V)> + '_ {
        let span = self.span(&range);
        self.entries.range_mut(span).filter_map(|(o, v)| Some((&*o, v.as_mut()?)))
    }

    /// Removes and returns, in offset order, the entries in `range` for which `keep_out` is true.
    pub fn extract_if(
        &mut self,
        range: impl RangeBounds<u64>,
        mut keep_out: impl FnMut(&u64, &mut V) -> bool,
    ) -> std::vec::IntoIter<(u64, V)> {
        let span = self.span(&range);
        let mut out = Vec::new();
        for (offset, slot) in self.entries.range_mut(span) {
            let chosen = match slot.as_mut() {
                Some(value) => keep_out(offset, value),
                None => false,
            };
            if let Some(value) = slot.take_if(|_| chosen) {
                out.push((*offset, value));
            }
        }
        self.live -= out.len();
        self.tidy();
        out.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Extract { first: u64, last: u64, odd_only: bool },
        Bump { first: u64, last: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly ascending inserts, as deliveries are; the rest anywhere.
        prop_oneof![
            4 => (0..200u64, any::<u32>()).prop_map(|(o, v)| Op::Insert(o, v)),
            2 => (0..200u64).prop_map(Op::Remove),
            2 => (0..200u64, 0..40u64, any::<bool>()).prop_map(|(f, n, odd_only)| Op::Extract { first: f, last: f + n, odd_only }),
            1 => (0..200u64, 0..40u64).prop_map(|(f, n)| Op::Bump { first: f, last: f + n }),
        ]
    }

    fn ascending(ops: Vec<Op>) -> Vec<Op> {
        let mut next = 0;
        ops.into_iter()
            .map(|op| match op {
                Op::Insert(o, v) if o % 2 == 0 => {
                    next += 1 + o % 5;
                    Op::Insert(next, v)
                }
                other => other,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 0..300).prop_map(ascending)) {
            let mut map = OffsetMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(o, v) => prop_assert_eq!(map.insert(o, v), model.insert(o, v)),
                    Op::Remove(o) => prop_assert_eq!(map.remove(&o), model.remove(&o)),
                    Op::Extract { first, last, odd_only } => {
                        let got: Vec<_> = map.extract_if(first..=last, |_, v| !odd_only || *v % 2 == 1).collect();
                        let want: Vec<_> = model.extract_if(first..=last, |_, v| !odd_only || *v % 2 == 1).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Bump { first, last } => {
                        map.range_mut(first..=last).for_each(|(_, v)| *v = v.wrapping_add(1));
                        model.range_mut(first..=last).for_each(|(_, v)| *v = v.wrapping_add(1));
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert!(map.entries.len() <= 2 * map.live + SLACK, "holes stay bounded");
                prop_assert_eq!(map.first_key_value(), model.first_key_value());
                prop_assert_eq!(map.keys().next_back(), model.keys().next_back());
                prop_assert!(map.iter().eq(model.iter()));
                prop_assert!(map.range(50..=120).eq(model.range(50..=120)));
                prop_assert!(map.range(..30).eq(model.range(..30)));
                for o in [0, 7, 50, 199] {
                    prop_assert_eq!(map.get(&o), model.get(&o));
                }
            }
        }
    }
}
