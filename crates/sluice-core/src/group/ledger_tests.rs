use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const A: MemberId = MemberId(1);
const B: MemberId = MemberId(2);

fn picks(offsets: std::ops::Range<u64>) -> Vec<Pick> {
    offsets.map(|offset| Pick { offset, bytes: 10 + offset, timestamp: 0, position: 0 }).collect()
}

fn spec(retryable: bool, max_attempts: u32) -> FailSpec {
    FailSpec { reason: Arc::from("boom"), retryable, max_attempts, delay: Duration::from_secs(1), at_ms: 7 }
}

fn delivered(ledger: &mut Ledger, member: MemberId, range: std::ops::Range<u64>, now: Instant) -> Vec<(u64, u32)> {
    let from = ledger.cursor();
    let taken = ledger.deliver(from, range.end, &picks(range), member, now + Duration::from_secs(30));
    ledger.check();
    taken.unwrap_or_default()
}

#[test]
fn deliver_leases_new_records_and_moves_the_cursor() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(5));
    assert_eq!(delivered(&mut ledger, A, 5..8, now), vec![(5, 1), (6, 1), (7, 1)]);
    assert_eq!((ledger.cursor(), ledger.in_flight(), ledger.held(A)), (8, 3, Holding { records: 3, bytes: 48 }));
    assert!(ledger.deliver(5, 9, &picks(8..9), B, now).is_none(), "a read from an old cursor is stale");
    assert_eq!(ledger.held(B), Holding::default());
}

#[test]
fn deliver_continues_attempts_from_before_a_restart() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    ledger.restore_attempts(1, 4);
    assert_eq!(delivered(&mut ledger, A, 0..2, now), vec![(0, 1), (1, 5)]);
}

#[test]
fn deliver_skips_records_already_pending_or_done() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::from_parts(0, [(2, 3)]));
    ledger.restore_backoff(1, now + Duration::from_secs(5));
    assert_eq!(delivered(&mut ledger, A, 0..4, now), vec![(0, 1), (3, 1)]);
    assert!(matches!(ledger.get(1).map(|p| p.delivery), Some(Delivery::Backoff { .. })));
}

#[test]
fn redeliver_takes_only_ready_records() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..3, now);
    assert_eq!(ledger.release_member(A), 3);
    ledger.check();
    assert_eq!((ledger.ready(), ledger.in_flight()), (3, 0));
    assert_eq!(ledger.redeliver(&picks(1..3), B, now), vec![(1, 2), (2, 2)]);
    ledger.check();
    assert_eq!(ledger.redeliver(&picks(1..3), A, now), vec![], "in flight to B");
    assert_eq!((ledger.ready(), ledger.held(B).records, ledger.ready_offsets(10)), (1, 2, vec![0]));
}

#[test]
fn renew_moves_only_the_members_own_deadlines() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..2, now);
    let later = now + Duration::from_secs(300);
    assert_eq!(ledger.renew(0, 5, B, later), 0);
    assert_eq!(ledger.renew(0, 5, A, later), 2);
    assert!(ledger.expire(now + Duration::from_secs(31)).lapsed.is_empty(), "renewed past the old deadline");
    ledger.check();
}

#[test]
fn fail_backs_off_then_dead_letters_at_the_attempt_limit() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..1, now);
    assert_eq!(ledger.fail(0, B, &spec(true, 2), now), None, "B holds no lease");
    assert_eq!(ledger.fail(0, A, &spec(true, 2), now), Some(Failed::Backoff { until: now + Duration::from_secs(1) }));
    ledger.check();
    assert_eq!((ledger.in_flight(), ledger.ready(), ledger.held(A)), (0, 0, Holding::default()));
    let expiry = ledger.expire(now + Duration::from_secs(1));
    assert!(expiry.became_ready && expiry.lapsed.is_empty());
    assert_eq!(ledger.redeliver(&picks(0..1), A, now), vec![(0, 2)]);
    let failed = ledger.fail(0, A, &spec(true, 2), now);
    assert!(matches!(failed, Some(Failed::DeadLetter { attempts: 2, .. })), "{failed:?}");
    assert_eq!(ledger.ack(0, 0, A), 0, "a record being dead-lettered cannot be acked");
    assert!(ledger.dead_lettered(0));
    assert!(!ledger.dead_lettered(0), "only once");
    assert_eq!((ledger.committed(), ledger.pending_len()), (1, 0));
    ledger.check();
}

#[test]
fn fail_not_retryable_dead_letters_at_once_keeping_the_first_failure_time() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..1, now);
    ledger.fail(0, A, &spec(true, 5), now);
    ledger.expire(now + Duration::from_secs(2));
    ledger.redeliver(&picks(0..1), A, now);
    let later = FailSpec { at_ms: 99, ..spec(false, 5) };
    match ledger.fail(0, A, &later, now) {
        Some(Failed::DeadLetter { attempts: 2, failure, .. }) => {
            assert_eq!((failure.first_ms, failure.last_ms), (7, 99))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ack_is_refused_for_records_leased_to_another_member() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..2, now);
    delivered(&mut ledger, B, 2..4, now);
    assert_eq!(ledger.ack(0, 3, A), 2);
    assert!(ledger.leased_to_other(2, A));
    assert_eq!((ledger.committed(), ledger.in_flight(), ledger.held(A).records), (2, 2, 0));
    assert_eq!(ledger.ack(2, 3, B), 2);
    assert_eq!(ledger.committed(), 4);
    ledger.check();
}

#[test]
fn a_late_ack_of_a_ready_record_counts() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..1, now);
    let expiry = ledger.expire(now + Duration::from_secs(30));
    assert_eq!(expiry.lapsed, vec![EndedLease { member: A, offset: 0 }]);
    ledger.fail(0, A, &spec(true, 5), now);
    assert_eq!(ledger.ack(0, 0, A), 1, "the work was done; nobody else holds it");
    assert_eq!(ledger.committed(), 1);
}

#[test]
fn redrive_puts_a_done_record_back_once() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..2, now);
    ledger.fail(0, A, &spec(false, 5), now);
    ledger.dead_lettered(0);
    ledger.ack(1, 1, A);
    assert!(ledger.redrive(0));
    assert!(!ledger.redrive(0));
    assert_eq!((ledger.ready(), ledger.redriven().collect::<Vec<_>>()), (1, vec![0]));
    assert_eq!(ledger.redeliver(&picks(0..1), B, now), vec![(0, 1)], "fresh attempts");
    assert_eq!(ledger.ack(0, 0, B), 1);
    assert_eq!((ledger.committed(), ledger.pending_len()), (2, 0));
    ledger.check();
}

#[test]
fn skip_truncate_skip_to_and_reset_end_leases() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..10, now);
    let (skipped, ended) = ledger.skip(2, 4);
    assert_eq!((skipped, ended.len()), (2, 2));
    ledger.check();
    let ended = ledger.skip_to(1);
    assert_eq!((ended, ledger.committed()), (vec![EndedLease { member: A, offset: 0 }], 1));
    let ended = ledger.truncate(8).map(|e| e.len());
    assert_eq!((ended, ledger.cursor()), (Some(2), 8));
    assert_eq!(ledger.truncate(8), None, "nothing lies past the end now");
    let ended = ledger.reset(3);
    assert_eq!((ended.len(), ledger.cursor(), ledger.committed(), ledger.in_flight()), (5, 3, 3, 0));
    ledger.check();
}

#[test]
fn drop_missing_finishes_ready_records_only() {
    let now = Instant::now();
    let mut ledger = Ledger::new(AckSet::at(0));
    delivered(&mut ledger, A, 0..2, now);
    ledger.release_member(A);
    ledger.redeliver(&picks(1..2), A, now);
    assert!(ledger.drop_missing(&[0, 1]));
    assert_eq!((ledger.committed(), ledger.in_flight()), (1, 1));
    ledger.check();
}

#[test]
fn restored_dead_lettering_finishes_when_its_copy_is_written() {
    let mut ledger = Ledger::new(AckSet::at(0));
    let failure = Failure { reason: Arc::from("x"), first_ms: 1, last_ms: 2 };
    ledger.restore_dead_lettering(0, 3, failure, Some(4));
    assert_eq!(ledger.get(0).map(|p| (p.attempts, p.position)), Some((3, Some(4))));
    assert!(ledger.dead_lettered(0));
    assert_eq!(ledger.committed(), 1);
}

/// One step a group could take on a partition.
#[derive(Debug, Clone)]
enum Op {
    Read { member: u8, count: u8 },
    Redeliver { member: u8, count: u8 },
    Ack { member: u8, first: u8, len: u8 },
    Nack { member: u8, offset: u8, retryable: bool },
    Renew { member: u8 },
    Leave { member: u8 },
    Tick { ms: u16 },
    DeadLettered { offset: u8 },
    Redrive { offset: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8, 1..6u8).prop_map(|(member, count)| Op::Read { member, count }),
        (0..3u8, 1..6u8).prop_map(|(member, count)| Op::Redeliver { member, count }),
        (0..3u8, 0..40u8, 1..5u8).prop_map(|(member, first, len)| Op::Ack { member, first, len }),
        (0..3u8, 0..40u8, any::<bool>()).prop_map(|(member, offset, retryable)| Op::Nack { member, offset, retryable }),
        (0..3u8).prop_map(|member| Op::Renew { member }),
        (0..3u8).prop_map(|member| Op::Leave { member }),
        (0..3000u16).prop_map(|ms| Op::Tick { ms }),
        (0..40u8).prop_map(|offset| Op::DeadLettered { offset }),
        (0..40u8).prop_map(|offset| Op::Redrive { offset }),
    ]
}

/// What the model expects: who holds each lease, what is done and how.
#[derive(Default)]
struct Model {
    holder: BTreeMap<u64, MemberId>,
    acked: BTreeSet<u64>,
    dead_lettering: BTreeSet<u64>,
    dead_lettered: BTreeSet<u64>,
    committed: u64,
}

impl Model {
    fn took(&mut self, member: MemberId, taken: &[(u64, u32)]) {
        for &(offset, _) in taken {
            let before = self.holder.insert(offset, member);
            assert_eq!(before, None, "offset {offset} leased to {member} while in flight to {before:?}");
        }
    }
}

const LOG_END: u64 = 40;
const MAX_ATTEMPTS: u32 = 3;

fn apply(ledger: &mut Ledger, model: &mut Model, op: &Op, now: &mut Instant) {
    let deadline = *now + Duration::from_millis(1000);
    match *op {
        Op::Read { member, count } => {
            let member = MemberId(u64::from(member));
            let from = ledger.cursor();
            let next = (from + u64::from(count)).min(LOG_END);
            if let Some(taken) = ledger.deliver(from, next, &picks(from..next), member, deadline) {
                model.took(member, &taken);
            }
        }
        Op::Redeliver { member, count } => {
            let member = MemberId(u64::from(member));
            let offsets = ledger.ready_offsets(usize::from(count));
            let wanted: Vec<Pick> =
                offsets.iter().map(|&o| Pick { offset: o, bytes: o, timestamp: 0, position: 0 }).collect();
            let taken = ledger.redeliver(&wanted, member, deadline);
            assert_eq!(taken.len(), offsets.len(), "every ready record can be taken");
            model.took(member, &taken);
        }
        Op::Ack { member, first, len } => {
            let member = MemberId(u64::from(member));
            let (first, last) = (u64::from(first), u64::from(first) + u64::from(len) - 1);
            let expected: Vec<u64> = (first..=last)
                .filter(|&o| {
                    ledger.get(o).is_some_and(|p| match p.delivery {
                        Delivery::InFlight { member: m, .. } => m == member,
                        Delivery::DeadLettering => false,
                        _ => true,
                    })
                })
                .collect();
            assert_eq!(ledger.ack(first, last, member), expected.len() as u64);
            for offset in expected {
                model.holder.remove(&offset);
                model.acked.insert(offset);
            }
        }
        Op::Nack { member, offset, retryable } => {
            let member = MemberId(u64::from(member));
            let offset = u64::from(offset);
            let fail = FailSpec { retryable, ..spec(true, MAX_ATTEMPTS) };
            let outcome = ledger.fail(offset, member, &fail, *now);
            assert_eq!(outcome.is_some(), model.holder.get(&offset) == Some(&member), "only the holder can fail it");
            if outcome.is_some() {
                model.holder.remove(&offset);
            }
            if let Some(Failed::DeadLetter { attempts, .. }) = outcome {
                assert!(!retryable || attempts >= MAX_ATTEMPTS);
                model.dead_lettering.insert(offset);
            }
        }
        Op::Renew { member } => {
            let member = MemberId(u64::from(member));
            let held = model.holder.values().filter(|&&m| m == member).count() as u64;
            assert_eq!(ledger.renew(0, LOG_END, member, deadline), held);
        }
        Op::Leave { member } => {
            let member = MemberId(u64::from(member));
            let held = model.holder.values().filter(|&&m| m == member).count() as u32;
            assert_eq!(ledger.release_member(member), held);
            model.holder.retain(|_, m| *m != member);
        }
        Op::Tick { ms } => {
            *now += Duration::from_millis(u64::from(ms));
            for lease in ledger.expire(*now).lapsed {
                assert_eq!(model.holder.remove(&lease.offset), Some(lease.member));
                let timeout = spec(true, MAX_ATTEMPTS);
                if let Some(Failed::DeadLetter { .. }) = ledger.fail(lease.offset, lease.member, &timeout, *now) {
                    model.dead_lettering.insert(lease.offset);
                }
            }
        }
        Op::DeadLettered { offset } => {
            let offset = u64::from(offset);
            let done = ledger.dead_lettered(offset);
            assert_eq!(done, model.dead_lettering.remove(&offset));
            if done {
                model.dead_lettered.insert(offset);
            }
        }
        Op::Redrive { offset } => {
            let offset = u64::from(offset);
            if model.dead_lettered.contains(&offset) && ledger.get(offset).is_none() && ledger.redrive(offset) {
                model.dead_lettered.remove(&offset);
            }
        }
    }
    ledger.check();
    assert!(ledger.committed() >= model.committed, "the committed offset went back");
    model.committed = ledger.committed();
    for (&offset, &member) in &model.holder {
        assert!(
            matches!(ledger.get(offset).map(|p| p.delivery), Some(Delivery::InFlight { member: m, .. }) if m == member),
            "offset {offset} should be leased to {member}"
        );
    }
    assert_eq!(ledger.in_flight() as usize, model.holder.len());
}

/// Delivers, acks and dead-letters until nothing is left.
fn drain(ledger: &mut Ledger, model: &mut Model, now: &mut Instant) {
    for _ in 0..1000 {
        if ledger.committed() == LOG_END {
            return;
        }
        apply(ledger, model, &Op::Tick { ms: 60_000 }, now);
        apply(ledger, model, &Op::Read { member: 0, count: 5 }, now);
        apply(ledger, model, &Op::Redeliver { member: 0, count: 40 }, now);
        apply(ledger, model, &Op::Ack { member: 0, first: 0, len: 40 }, now);
        for offset in model.dead_lettering.clone() {
            apply(ledger, model, &Op::DeadLettered { offset: offset as u8 }, now);
        }
    }
    panic!("the ledger never finished: {ledger:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_keeps_the_ledger_consistent_and_ends_with_every_record_done(ops in proptest::collection::vec(op(), 0..120)) {
        let mut ledger = Ledger::new(AckSet::at(0));
        let mut model = Model::default();
        let mut now = Instant::now();
        for op in &ops {
            apply(&mut ledger, &mut model, op, &mut now);
        }
        drain(&mut ledger, &mut model, &mut now);
        prop_assert_eq!(ledger.pending_len(), 0);
        let done: BTreeSet<u64> = model.acked.union(&model.dead_lettered).copied().collect();
        prop_assert_eq!(done, (0..LOG_END).collect::<BTreeSet<u64>>(), "every record ends acked or dead-lettered");
    }
}
