use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::group::state::Member;
use crate::group::types::{DeliveryMode, FlowLimits, GroupSettings, LeaseEnd};

const A: MemberId = MemberId(1);
const B: MemberId = MemberId(2);

fn tp() -> TopicPartition {
    TopicPartition::new(Arc::from("jobs"), 0)
}

fn group(delivery: DeliveryMode, end: u64) -> (GroupState, impl Fn(&TopicPartition) -> Option<(u64, u64)>) {
    let mut state = GroupState::new(GroupSettings { delivery, ..GroupSettings::defaults_for_tests() });
    let offsets = move |_: &TopicPartition| Some((0, end));
    let topology: BTreeMap<String, u32> = [("jobs".to_owned(), 1)].into();
    for id in [A, B] {
        let limits = FlowLimits { max_records: 3, max_bytes: 1 << 20 };
        let member = Member::new(format!("m{}", id.0), ["jobs".to_owned()].into(), limits, Duration::from_secs(30));
        state.join(id, member, &topology, &offsets);
    }
    (state, offsets)
}

fn picks(range: std::ops::Range<u64>) -> Vec<Pick> {
    range.map(|offset| Pick { offset, bytes: 1, timestamp: 0, position: 0 }).collect()
}

/// Plans for `id` and carries out a read or redelivery as a session would.
fn take(state: &mut GroupState, id: MemberId, offsets: Offsets<'_>) -> Vec<u64> {
    let now = Instant::now();
    match state.plan(id, offsets) {
        Step::Read { tp, from, end, max_records, .. } => {
            let next = end.min(from + u64::from(max_records));
            let taken = state.register_read(id, &tp, from, next, &picks(from..next), now);
            taken.map(|(_, records)| records.into_iter().map(|(o, _)| o).collect()).unwrap_or_default()
        }
        Step::Redeliver { tp, offsets } => {
            let wanted: Vec<Pick> = offsets.iter().flat_map(|&o| picks(o..o + 1)).collect();
            state.register_redelivery(id, &tp, &wanted, now).into_iter().map(|(o, _)| o).collect()
        }
        Step::Wait { .. } => Vec::new(),
    }
}

#[test]
fn shared_delivery_gives_one_partitions_records_to_every_member_each_to_one() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 10);
    assert_eq!(state.view(A).partitions, vec![tp()]);
    assert_eq!(state.view(B).partitions, vec![tp()], "every member may take from the partition");
    assert_eq!(take(&mut state, A, &offsets), vec![0, 1, 2]);
    assert_eq!(take(&mut state, B, &offsets), vec![3, 4, 5]);
    assert_eq!(take(&mut state, A, &offsets), Vec::<u64>::new(), "A is at its in-flight limit");
    let refused = state.ack(A, &tp(), 0, &[(0, 4)]);
    assert_eq!(refused.accepted, 3);
    assert_eq!(refused.refused, vec![(3, 4, AckRefusal::LeasedToOther)]);
    assert_eq!(take(&mut state, A, &offsets), vec![6, 7, 8]);
    assert_eq!(state.ack(B, &tp(), 0, &[(3, 5)]).accepted, 3);
    assert_eq!(state.partitions[&tp()].ledger.committed(), 6);
}

#[test]
fn shared_delivery_lets_one_member_read_at_a_time() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 10);
    let Step::Read { from, .. } = state.plan(A, &offsets) else { panic!("A should read") };
    assert_eq!(from, 0);
    assert!(matches!(state.plan(B, &offsets), Step::Wait { .. }), "B waits while A reads the same records");
    state.end_read(A, &tp());
    assert!(matches!(state.plan(B, &offsets), Step::Read { from: 0, .. }), "a read that came to nothing frees it");
}

#[test]
fn a_shared_members_leases_go_to_the_others_when_it_leaves() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 3);
    assert_eq!(take(&mut state, A, &offsets), vec![0, 1, 2]);
    let topology: BTreeMap<String, u32> = [("jobs".to_owned(), 1)].into();
    state.leave(A, SessionEnd::Left, &topology, &offsets);
    assert_eq!(take(&mut state, B, &offsets), vec![0, 1, 2]);
}

#[test]
fn an_expired_shared_lease_may_go_to_another_member_and_the_first_is_told() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 1);
    assert_eq!(take(&mut state, A, &offsets), vec![0]);
    state.settings.retry.initial = Duration::ZERO;
    let later = Instant::now() + Duration::from_secs(31);
    state.expire(later);
    state.expire(later);
    let told = state.members.get_mut(&A).and_then(|m| m.ended_leases.pop_front());
    assert_eq!(told, Some(LeaseEnd { tp: tp(), offsets: vec![0], reason: LeaseEndReason::AckTimeout }));
    assert_eq!(take(&mut state, A, &offsets), Vec::<u64>::new(), "B has room: A's own failure goes to B first");
    assert_eq!(take(&mut state, B, &offsets), vec![0]);
    assert_eq!(state.ack(A, &tp(), 0, &[(0, 0)]).refused, vec![(0, 0, AckRefusal::LeasedToOther)]);
}

#[test]
fn partition_owned_delivery_gives_a_partition_to_one_member() {
    let (mut state, offsets) = group(DeliveryMode::PartitionOwned, 10);
    let (owner, other) = if state.view(A).partitions.is_empty() { (B, A) } else { (A, B) };
    assert!(state.view(other).partitions.is_empty());
    assert_eq!(take(&mut state, owner, &offsets), vec![0, 1, 2]);
    assert_eq!(take(&mut state, other, &offsets), Vec::<u64>::new());
    assert_eq!(state.ack(other, &tp(), 99, &[(0, 0)]).refused, vec![(0, 0, AckRefusal::NotOwner)]);
}

#[test]
fn a_reset_tells_members_their_leases_ended() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 10);
    assert_eq!(take(&mut state, A, &offsets), vec![0, 1, 2]);
    state.reset(&[(tp(), 5)]);
    let told = state.members.get_mut(&A).and_then(|m| m.ended_leases.pop_front());
    assert_eq!(told, Some(LeaseEnd { tp: tp(), offsets: vec![0, 1, 2], reason: LeaseEndReason::OffsetsReset }));
    assert_eq!(state.holding(A).records, 0);
    assert_eq!(take(&mut state, B, &offsets), vec![5, 6, 7]);
}

#[test]
fn a_shared_members_own_failure_comes_back_to_it_when_nobody_else_has_room() {
    let (mut state, offsets) = group(DeliveryMode::Shared, 4);
    assert_eq!(take(&mut state, A, &offsets), vec![0, 1, 2]);
    assert_eq!(take(&mut state, B, &offsets), vec![3]);
    let nack = NackSpec { reason: Arc::from("x"), retryable: true, delay: Some(Duration::ZERO) };
    assert_eq!(state.nack(A, &tp(), 0, &[(0, 0)], &nack, Instant::now()).accepted, 1);
    state.expire(Instant::now() + Duration::from_millis(1));
    assert_eq!(take(&mut state, A, &offsets), Vec::<u64>::new(), "B still has room");
    assert_eq!(state.ack(B, &tp(), 0, &[(3, 3)]).accepted, 1);
    let limits = FlowLimits { max_records: 0, max_bytes: 1 };
    if let Some(b) = state.members.get_mut(&B) {
        b.limits = limits;
    }
    assert_eq!(take(&mut state, A, &offsets), vec![0], "nobody else can take it");
}
