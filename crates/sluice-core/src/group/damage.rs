//! Delivery around offsets that cannot be read, and committed offsets that lie past the end
//! of a log that recovery cut shorter.
//!
//! When a member's read reaches a damaged batch or a lost segment (a `DataLoss` from the
//! partition), the group's partition is *stalled* there: nothing more is delivered from it,
//! while the member keeps its session and its other partitions. DescribeGroup shows where and
//! why. It stays stalled until an operator resets the group's offsets (`sluice group reset
//! --to-offset <first readable offset after the damage>`). A group whose `skip_damaged`
//! setting is on passes over the unreadable records at once instead, as if they were acked;
//! each skip is logged and counted.
//!
//! A committed offset past the partition's end means the log lost its tail (a torn tail cut
//! under fsync `never` or `interval`, or disk damage): the next records appended would get
//! offsets the group counts as done and never be delivered. Such a position moves back to the
//! end, with a warning and a count, when the broker opens and whenever a member's plan sees it.

use super::state::GroupState;
use super::types::{LeaseEndReason, TopicPartition};

/// Where delivery from a partition stopped because offsets cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// First unreadable offset.
    pub from: u64,
    /// First readable offset after the damage: where a reset moves the group past it.
    pub to: u64,
    /// What is wrong there.
    pub reason: String,
}

impl GroupState {
    /// A read of `tp` reached `from..to`, which cannot be read. Returns true if the records
    /// were passed over (`skip_damaged`), false if the partition is now stalled.
    pub(crate) fn on_damage(&mut self, group: &str, tp: &TopicPartition, from: u64, to: u64, reason: &str) -> bool {
        // Without a known end there is nothing to skip to.
        let skip = self.settings.skip_damaged && to > from;
        let Some(partition) = self.partitions.get_mut(tp) else { return false };
        if !skip {
            let stalled = Stalled { from, to, reason: reason.to_owned() };
            if partition.stalled.as_ref() != Some(&stalled) {
                tracing::error!(group, topic = %tp.topic, partition = tp.partition, from, to, reason, "delivery stopped at offsets that cannot be read; reset the group's offsets past them, or set skip_damaged");
                partition.stalled = Some(stalled);
            }
            return false;
        }
        let (skipped, ended) = partition.ledger.skip(from, to);
        self.tell_ended(tp, &ended, LeaseEndReason::Skipped);
        self.damaged_skipped += skipped;
        self.dirty = true;
        tracing::warn!(group, topic = %tp.topic, partition = tp.partition, from, to, skipped, reason, "passed over records that cannot be read (skip_damaged)");
        true
    }

    /// Moves `tp`'s position back to `end` if it lies past it; returns true if it did.
    pub(crate) fn clamp_to_end(&mut self, tp: &TopicPartition, end: u64) -> bool {
        let Some(partition) = self.partitions.get_mut(tp) else { return false };
        let was = partition.ledger.committed();
        let Some(ended) = partition.ledger.truncate(end) else { return false };
        self.tell_ended(tp, &ended, LeaseEndReason::RecordsGone);
        self.offsets_past_end += 1;
        self.dirty = true;
        tracing::warn!(topic = %tp.topic, partition = tp.partition, committed = was, end, "group position was past the end of the partition (its log lost its tail); moved to the end so new records are delivered");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::group::acks::AckSet;
    use crate::group::ledger::Pick;
    use crate::group::state::PartitionState;
    use crate::group::types::{GroupSettings, MemberId};

    fn state(skip_damaged: bool) -> (GroupState, TopicPartition) {
        let settings = GroupSettings { skip_damaged, ..GroupSettings::defaults_for_tests() };
        let mut state = GroupState::new(settings);
        let tp = TopicPartition::new(Arc::from("t"), 0);
        let mut partition = PartitionState::at(AckSet::at(10));
        // Records 12 and 25 were delivered and are waiting to go again; the cursor is at 30.
        let picks = [12, 25].map(|offset| Pick { offset, bytes: 1, timestamp: 0, position: 0 });
        let delivered = partition.ledger.deliver(10, 30, &picks, MemberId(1), std::time::Instant::now());
        assert_eq!(delivered.map(|d| d.len()), Some(2));
        partition.ledger.release_member(MemberId(1));
        state.partitions.insert(tp.clone(), partition);
        (state, tp)
    }

    #[test]
    fn skipping_marks_the_unreadable_range_done_and_forgets_its_pending_records() {
        let (mut state, tp) = state(true);
        assert!(state.on_damage("g", &tp, 20, 40, "checksum mismatch"));
        let p = &state.partitions[&tp];
        assert!((20..40).all(|o| p.ledger.acks().is_done(o)) && !p.ledger.acks().is_done(12), "only the range is done");
        assert_eq!(p.ledger.pending().map(|(o, _)| o).collect::<Vec<_>>(), vec![12]);
        assert_eq!((p.ledger.ready(), p.ledger.cursor(), p.stalled.clone()), (1, 40, None));
        assert_eq!(state.damaged_skipped, 20);
    }

    #[test]
    fn stopping_stalls_the_partition_until_a_reset() {
        let (mut state, tp) = state(false);
        assert!(!state.on_damage("g", &tp, 30, 40, "segment file lost"));
        let p = &state.partitions[&tp];
        assert_eq!(p.stalled, Some(Stalled { from: 30, to: 40, reason: "segment file lost".into() }));
        assert_eq!(
            (p.ledger.cursor(), p.ledger.committed(), p.ledger.pending_len()),
            (30, 10, 2),
            "nothing else changed"
        );
        // A range without a known end stalls even a skipping group.
        let (mut skipping, tp) = super::tests::state(true);
        assert!(!skipping.on_damage("g", &tp, 30, 30, "corrupt"));
        assert!(skipping.partitions[&tp].stalled.is_some());
        // A reset clears the stall.
        state.reset(&[(tp.clone(), 40)]);
        assert_eq!(state.partitions[&tp].stalled, None);
    }

    #[test]
    fn a_position_past_the_end_moves_back_to_it() {
        let (mut state, tp) = state(false);
        assert!(!state.clamp_to_end(&tp, 30), "at the end is fine");
        assert!(state.clamp_to_end(&tp, 20));
        let p = &state.partitions[&tp];
        assert_eq!((p.ledger.cursor(), p.ledger.committed()), (20, 10));
        assert_eq!(
            p.ledger.pending().map(|(o, _)| o).collect::<Vec<_>>(),
            vec![12],
            "records past the end are forgotten"
        );
        assert!(state.clamp_to_end(&tp, 5));
        assert_eq!(state.partitions[&tp].ledger.committed(), 5);
        assert_eq!(state.offsets_past_end, 2);
    }
}
