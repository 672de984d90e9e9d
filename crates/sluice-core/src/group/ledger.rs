//! One group partition's delivery ledger: which records are done, which were delivered and are
//! not done yet (in flight to a member, waiting out a backoff, ready to go again, or being
//! dead-lettered), and the counters a plan needs without scanning.
//!
//! Every change of a record's state goes through [`Ledger::put`] and [`Ledger::take`], which
//! keep the counters (in flight, ready, what each member holds) equal to what they count; the
//! transitions are the only way in. The ledger knows nothing of ownership or generations: in
//! partition-owned delivery one member holds all its leases, in shared delivery many do.
//!
//! A record is *done* when its offset is in [`AckSet`]: acked, dead-lettered (its copy acked
//! it), or passed over. Records below the cursor that are neither done nor pending cannot
//! exist: every delivered record is pending until done.

use std::collections::BTreeMap;

use super::offset_map::OffsetMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acks::AckSet;
use super::types::{Failure, MemberId};

/// Where a delivered, not yet done record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Leased to `member` until `deadline`.
    InFlight { member: MemberId, deadline: Instant },
    /// Failed; deliverable again from `until` on.
    Backoff { until: Instant },
    /// Waiting to be delivered again.
    Ready,
    /// Out of attempts: being appended to the dead-letter topic, then done.
    DeadLettering,
}

/// A delivered record that is not done yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub attempts: u32,
    pub delivery: Delivery,
    pub bytes: u64,
    pub timestamp: i64,
    pub failure: Option<Failure>,
    /// Where the record starts in its batch, once delivered (so it can be read again alone).
    pub position: Option<u32>,
    /// The member whose lease on it last failed (nacked or timed out): in shared delivery
    /// another member with room gets it first.
    pub failed_by: Option<MemberId>,
}

impl Pending {
    fn ready(attempts: u32) -> Self {
        Pending {
            attempts,
            delivery: Delivery::Ready,
            bytes: 0,
            timestamp: 0,
            failure: None,
            position: None,
            failed_by: None,
        }
    }
}

/// What one member holds of a partition: records in flight to it and their key + value bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Holding {
    pub records: u32,
    pub bytes: u64,
}

impl std::ops::AddAssign for Holding {
    fn add_assign(&mut self, other: Holding) {
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// A record read from the log, to be registered as delivered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pick {
    pub offset: u64,
    pub bytes: u64,
    pub timestamp: i64,
    pub position: u32,
}

impl Pick {
    /// Where the record starts in its batch.
    pub fn start(&self) -> sluice_storage::RecordStart {
        sluice_storage::RecordStart { offset: self.offset, position: self.position }
    }
}

/// A lease that ended without the member acking: the member should be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndedLease {
    pub member: MemberId,
    pub offset: u64,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Delivered again after `until`.
    Backoff { until: Instant },
    /// Out of attempts (or not retryable): to be copied to the dead-letter topic.
    DeadLetter { attempts: u32, failure: Failure, position: Option<u32> },
}

/// How a failure is to be handled.
#[derive(Debug, Clone)]
pub(crate) struct FailSpec {
    pub reason: Arc<str>,
    /// False: dead-letter at once.
    pub retryable: bool,
    pub max_attempts: u32,
    /// Backoff before the next delivery, given the attempts made.
    pub delay: Duration,
    /// Wall-clock time of the failure, ms since the Unix epoch.
    pub at_ms: i64,
}

/// What an expiry pass found.
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    /// Leases whose ack deadline passed (still in flight: the caller fails them).
    pub lapsed: Vec<EndedLease>,
    /// Whether a backoff ended, so records became ready.
    pub became_ready: bool,
}

/// A partition's delivery ledger (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    acks: AckSet,
    /// Next offset never delivered.
    cursor: u64,
    pending: OffsetMap<Pending>,
    in_flight: u32,
    ready: u32,
    held: BTreeMap<MemberId, Holding>,
    /// Deliveries made before the last restart of records not pending now (their next
    /// delivery continues the count).
    prior_attempts: BTreeMap<u64, u32>,
}

impl Ledger {
    /// A ledger that starts at `acks` with nothing delivered.
    pub fn new(acks: AckSet) -> Self {
        Ledger {
            cursor: acks.committed(),
            acks,
            pending: OffsetMap::new(),
            in_flight: 0,
            ready: 0,
            held: BTreeMap::new(),
            prior_attempts: BTreeMap::new(),
        }
    }

    // ----- counters, kept in the only two places a record's state changes -----

    fn count(&mut self, pending: &Pending, sign: bool) {
        fn step<T: std::ops::Add<Output = T> + std::ops::Sub<Output = T>>(value: T, by: T, up: bool) -> T {
            if up { value + by } else { value - by }
        }
        match pending.delivery {
            Delivery::InFlight { member, .. } => {
                self.in_flight = step(self.in_flight, 1, sign);
                let holding = self.held.entry(member).or_default();
                holding.records = step(holding.records, 1, sign);
                holding.bytes = step(holding.bytes, pending.bytes, sign);
                if holding.records == 0 {
                    self.held.remove(&member);
                }
            }
            Delivery::Ready => self.ready = step(self.ready, 1, sign),
            Delivery::Backoff { .. } | Delivery::DeadLettering => {}
        }
    }

    fn put(&mut self, offset: u64, pending: Pending) {
        self.count(&pending, true);
        if let Some(old) = self.pending.insert(offset, pending) {
            self.count(&old, false);
        }
    }

    fn take(&mut self, offset: u64) -> Option<Pending> {
        let pending = self.pending.remove(&offset)?;
        self.count(&pending, false);
        Some(pending)
    }

    // ----- reading -----

    pub fn acks(&self) -> &AckSet {
        &self.acks
    }

    pub fn committed(&self) -> u64 {
        self.acks.committed()
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn ready(&self) -> u32 {
        self.ready
    }

    /// What `member` holds here.
    pub fn held(&self, member: MemberId) -> Holding {
        self.held.get(&member).copied().unwrap_or_default()
    }

    /// Members holding leases here.
    pub fn holders(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.held.keys().copied()
    }

    pub fn get(&self, offset: u64) -> Option<&Pending> {
        self.pending.get(&offset)
    }

    pub fn pending(&self) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        self.pending.iter().map(|(&offset, p)| (offset, p))
    }

    /// Pending records in `first..=last`.
    pub fn pending_in(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        self.pending.range(first..=last.max(first)).map(|(&offset, p)| (offset, p))
    }

    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Up to `limit` ready offsets, lowest first.
    #[cfg(test)]
    pub fn ready_offsets(&self, limit: usize) -> Vec<u64> {
        self.ready_offsets_except(limit, None)
    }

    /// Up to `limit` ready offsets, lowest first, leaving out those whose last lease `skip`
    /// failed.
    pub fn ready_offsets_except(&self, limit: usize, skip: Option<MemberId>) -> Vec<u64> {
        if self.ready == 0 {
            return Vec::new();
        }
        self.pending
            .iter()
            .filter(|(_, p)| p.delivery == Delivery::Ready && (skip.is_none() || p.failed_by != skip))
            .map(|(&o, _)| o)
            .take(limit)
            .collect()
    }

    /// Deliveries made of records not done yet, including those from before a restart.
    pub fn attempts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.pending
            .iter()
            .filter(|(_, p)| p.attempts > 0)
            .map(|(&o, p)| (o, p.attempts))
            .chain(self.prior_attempts.iter().map(|(&o, &n)| (o, n)))
    }

    /// Pending records the acks count as done: redriven dead letters (their copy acked them).
    pub fn redriven(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().copied().filter(|&o| self.acks.is_done(o))
    }

    // ----- transitions -----

    /// Registers records read from `from` (the cursor) as leased to `member`; `next` is the
    /// offset after the last record examined. Returns each record's attempt number, or `None`
    /// if the cursor moved meanwhile (another read won).
    pub fn deliver(
        &mut self,
        from: u64,
        next: u64,
        picks: &[Pick],
        member: MemberId,
        deadline: Instant,
    ) -> Option<Vec<(u64, u32)>> {
        if self.cursor != from || next < from {
            return None;
        }
        let mut delivered = Vec::with_capacity(picks.len());
        // Picks come in offset order, and a read's records are almost always past every
        // pending one: then they need no lookup, and the counters change once per read.
        let last_pending = self.pending.keys().next_back().copied();
        let mut leased = Holding::default();
        for pick in picks.iter().filter(|p| (from..next).contains(&p.offset)) {
            let may_be_tracked = last_pending.is_some_and(|last| pick.offset <= last);
            // Already tracked (a backoff or redrive restored from the group file), or done:
            // delivered in its own turn, not as a new record.
            if (may_be_tracked && self.pending.contains_key(&pick.offset)) || self.acks.is_done(pick.offset) {
                continue;
            }
            let attempts = if self.prior_attempts.is_empty() {
                1
            } else {
                self.prior_attempts.remove(&pick.offset).map_or(1, |before| before + 1)
            };
            let pending = Pending {
                attempts,
                delivery: Delivery::InFlight { member, deadline },
                bytes: pick.bytes,
                timestamp: pick.timestamp,
                failure: None,
                position: Some(pick.position),
                failed_by: None,
            };
            // Not pending (checked above): nothing to count out.
            self.pending.insert(pick.offset, pending);
            leased += Holding { records: 1, bytes: pick.bytes };
            delivered.push((pick.offset, attempts));
        }
        if leased.records > 0 {
            self.in_flight += leased.records;
            *self.held.entry(member).or_default() += leased;
        }
        self.cursor = next;
        Some(delivered)
    }

    /// Leases ready records to `member` again; returns those taken with their attempt numbers.
    pub fn redeliver(&mut self, picks: &[Pick], member: MemberId, deadline: Instant) -> Vec<(u64, u32)> {
        let mut taken = Vec::with_capacity(picks.len());
        for pick in picks {
            let Some(mut pending) = self.pending.get(&pick.offset).filter(|p| p.delivery == Delivery::Ready).cloned()
            else {
                continue;
            };
            pending.attempts += 1;
            pending.delivery = Delivery::InFlight { member, deadline };
            pending.bytes = pick.bytes;
            pending.timestamp = pick.timestamp;
            pending.position = Some(pick.position);
            taken.push((pick.offset, pending.attempts));
            self.put(pick.offset, pending);
        }
        taken
    }

    fn leased_to(&self, offset: u64, member: MemberId) -> bool {
        matches!(self.pending.get(&offset), Some(p) if matches!(p.delivery, Delivery::InFlight { member: m, .. } if m == member))
    }

    /// True if `offset` is leased to a member other than `member`.
    pub fn leased_to_other(&self, offset: u64, member: MemberId) -> bool {
        matches!(self.pending.get(&offset), Some(p) if matches!(p.delivery, Delivery::InFlight { member: m, .. } if m != member))
    }

    /// Takes every lease `member` holds back (it left): the records are ready again.
    pub fn release_member(&mut self, member: MemberId) -> u32 {
        if !self.held.contains_key(&member) {
            return 0;
        }
        let offsets: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.delivery, Delivery::InFlight { member: m, .. } if m == member))
            .map(|(&o, _)| o)
            .collect();
        for &offset in &offsets {
            if let Some(mut pending) = self.pending.get(&offset).cloned() {
                pending.delivery = Delivery::Ready;
                self.put(offset, pending);
            }
        }
        offsets.len() as u32
    }

    /// Extends `member`'s leases in `first..=last` to `deadline`; returns how many.
    pub fn renew(&mut self, first: u64, last: u64, member: MemberId, deadline: Instant) -> u64 {
        let mut renewed = 0;
        for pending in self.pending.range_mut(first..=last).map(|(_, p)| p) {
            if let Delivery::InFlight { member: m, .. } = pending.delivery
                && m == member
            {
                // Same member, same counters: only the deadline changes.
                pending.delivery = Delivery::InFlight { member, deadline };
                renewed += 1;
            }
        }
        renewed
    }

    /// Fails `member`'s lease on `offset`: the record backs off, or goes to the dead-letter
    /// topic when out of attempts or not retryable. `None` if the member holds no such lease.
    pub fn fail(&mut self, offset: u64, member: MemberId, spec: &FailSpec, now: Instant) -> Option<Failed> {
        if !self.leased_to(offset, member) {
            return None;
        }
        let mut pending = self.pending.get(&offset)?.clone();
        let failure = match pending.failure.take() {
            Some(previous) => Failure { reason: spec.reason.clone(), first_ms: previous.first_ms, last_ms: spec.at_ms },
            None => Failure { reason: spec.reason.clone(), first_ms: spec.at_ms, last_ms: spec.at_ms },
        };
        pending.failure = Some(failure.clone());
        pending.failed_by = Some(member);
        let outcome = if !spec.retryable || pending.attempts >= spec.max_attempts {
            pending.delivery = Delivery::DeadLettering;
            Failed::DeadLetter { attempts: pending.attempts, failure, position: pending.position }
        } else {
            let until = now + spec.delay;
            pending.delivery = Delivery::Backoff { until };
            Failed::Backoff { until }
        };
        self.put(offset, pending);
        Some(outcome)
    }

    /// Acks `first..=last` for `member`: every pending record there that is not leased to
    /// another member or being dead-lettered is done. Returns how many became done.
    pub fn ack(&mut self, first: u64, last: u64, member: MemberId) -> u64 {
        let (mut released, mut ready, mut done) = (Holding::default(), 0u32, 0u64);
        let eligible = |_: &u64, p: &mut Pending| match p.delivery {
            Delivery::InFlight { member: m, .. } => m == member,
            Delivery::DeadLettering => false,
            Delivery::Ready | Delivery::Backoff { .. } => true,
        };
        // Removal from the front of the map (the usual case) is cheap: see `OffsetMap`.
        for (offset, pending) in self.pending.extract_if(first..=last, eligible) {
            match pending.delivery {
                Delivery::InFlight { .. } => released += Holding { records: 1, bytes: pending.bytes },
                Delivery::Ready => ready += 1,
                Delivery::Backoff { .. } | Delivery::DeadLettering => {}
            }
            self.acks.ack(offset);
            done += 1;
        }
        // The counters move once per ack, as `take` would have moved them per record.
        self.in_flight -= released.records;
        self.ready -= ready;
        if released.records > 0
            && let std::collections::btree_map::Entry::Occupied(mut holding) = self.held.entry(member)
        {
            let left = holding.get_mut();
            left.records -= released.records;
            left.bytes -= released.bytes;
            if left.records == 0 {
                holding.remove();
            }
        }
        done
    }

    /// The dead-letter copy of `offset` is durable: the record is done. False if it was not
    /// being dead-lettered (a reset meanwhile).
    pub fn dead_lettered(&mut self, offset: u64) -> bool {
        if self.pending.get(&offset).is_none_or(|p| p.delivery != Delivery::DeadLettering) {
            return false;
        }
        self.take(offset);
        self.acks.ack(offset);
        true
    }

    /// Puts a dead-lettered record back with a fresh attempt count. False if it is pending
    /// already (redriven before and not done).
    pub fn redrive(&mut self, offset: u64) -> bool {
        if self.pending.contains_key(&offset) {
            return false;
        }
        self.put(offset, Pending::ready(0));
        true
    }

    /// Ends due backoffs (the records become ready) and returns leases past their deadline.
    pub fn expire(&mut self, now: Instant) -> Expiry {
        let mut expiry = Expiry::default();
        let mut due = Vec::new();
        for (&offset, pending) in self.pending.iter() {
            match pending.delivery {
                Delivery::InFlight { member, deadline } if deadline <= now => {
                    expiry.lapsed.push(EndedLease { member, offset });
                }
                Delivery::Backoff { until } if until <= now => due.push(offset),
                _ => {}
            }
        }
        for offset in due {
            if let Some(mut pending) = self.pending.get(&offset).cloned() {
                pending.delivery = Delivery::Ready;
                self.put(offset, pending);
                expiry.became_ready = true;
            }
        }
        expiry
    }

    /// Forgets pending records in `range`, returning the leases that ended.
    fn forget(&mut self, range: impl std::ops::RangeBounds<u64>) -> Vec<EndedLease> {
        let offsets: Vec<u64> = self.pending.range(range).map(|(&o, _)| o).collect();
        let mut ended = Vec::new();
        for offset in offsets {
            if let Some(Pending { delivery: Delivery::InFlight { member, .. }, .. }) = self.take(offset) {
                ended.push(EndedLease { member, offset });
            }
        }
        ended
    }

    /// Passes over `from..to` as if acked (records that cannot be read); returns how many
    /// were not done yet, and the leases that ended.
    pub fn skip(&mut self, from: u64, to: u64) -> (u64, Vec<EndedLease>) {
        let skipped = (from..to).filter(|&o| !self.acks.is_done(o)).count() as u64;
        let ended = self.forget(from..to);
        self.acks.ack_range(from, to);
        self.cursor = self.cursor.max(to);
        self.prior_attempts.retain(|&offset, _| !(from..to).contains(&offset));
        (skipped, ended)
    }

    /// Ready records that no longer exist in the log (deleted by retention) are done.
    pub fn drop_missing(&mut self, offsets: &[u64]) -> bool {
        let mut dropped = false;
        for &offset in offsets {
            if self.pending.get(&offset).is_some_and(|p| p.delivery == Delivery::Ready) {
                self.take(offset);
                self.acks.ack(offset);
                dropped = true;
            }
        }
        dropped
    }

    /// Moves the committed offset up to `position` (retention deleted what lies below it);
    /// returns the leases that ended.
    pub fn skip_to(&mut self, position: u64) -> Vec<EndedLease> {
        let ended = self.forget(..position);
        self.acks.skip_to(position);
        self.prior_attempts = self.prior_attempts.split_off(&position);
        self.cursor = self.cursor.max(position);
        ended
    }

    /// Forgets everything at and past `end` (the log lost its tail); false if nothing lay
    /// there. Returns the leases that ended.
    pub fn truncate(&mut self, end: u64) -> Option<Vec<EndedLease>> {
        if self.cursor <= end && self.acks.acked().end().is_none_or(|e| e <= end) {
            return None;
        }
        let ended = self.forget(end..);
        self.acks.forget_from(end);
        self.cursor = self.cursor.min(end);
        let _past = self.prior_attempts.split_off(&end);
        Some(ended)
    }

    /// Starts over at `position` (an operator reset): everything pending is forgotten.
    pub fn reset(&mut self, position: u64) -> Vec<EndedLease> {
        let ended = self.forget(..);
        self.prior_attempts.clear();
        self.acks.reset_to(position);
        self.cursor = position;
        ended
    }

    // ----- restoring from the group file -----

    /// A redriven record still to process.
    pub fn restore_redrive(&mut self, offset: u64) {
        self.redrive(offset);
    }

    /// A failed record waiting until `until` (skipped if done or already pending).
    pub fn restore_backoff(&mut self, offset: u64, until: Instant) {
        if self.acks.is_done(offset) || self.pending.contains_key(&offset) {
            return;
        }
        self.put(offset, Pending { delivery: Delivery::Backoff { until }, ..Pending::ready(0) });
    }

    /// A record whose dead-letter copy was being written (skipped if done or pending).
    pub fn restore_dead_lettering(&mut self, offset: u64, attempts: u32, failure: Failure, position: Option<u32>) {
        if self.acks.is_done(offset) || self.pending.contains_key(&offset) {
            return;
        }
        let pending = Pending {
            attempts,
            delivery: Delivery::DeadLettering,
            failure: Some(failure),
            position,
            ..Pending::ready(0)
        };
        self.put(offset, pending);
    }

    /// A record whose dead-letter copy the journal holds, though the group file did not say
    /// so yet (a crash came between): it is done.
    pub fn restore_dead_lettered(&mut self, offset: u64) {
        self.take(offset);
        self.prior_attempts.remove(&offset);
        self.acks.ack(offset);
    }

    /// Records being dead-lettered, for the group file.
    pub fn dead_lettering(&self) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        self.pending.iter().filter(|(_, p)| p.delivery == Delivery::DeadLettering).map(|(&o, p)| (o, p))
    }

    /// Records waiting out a backoff, with their deadlines.
    pub fn backoffs(&self) -> impl Iterator<Item = (u64, Instant)> + '_ {
        self.pending.iter().filter_map(|(&o, p)| match p.delivery {
            Delivery::Backoff { until } => Some((o, until)),
            _ => None,
        })
    }

    /// Deliveries made of a record before the restart.
    pub fn restore_attempts(&mut self, offset: u64, attempts: u32) {
        match self.pending.get_mut(&offset) {
            // Attempts do not affect the counters.
            Some(pending) => pending.attempts = attempts,
            None => {
                self.prior_attempts.insert(offset, attempts);
            }
        }
    }

    /// Checks that the counters equal what they count.
    #[cfg(test)]
    pub fn check(&self) {
        let in_flight = self.pending.values().filter(|p| matches!(p.delivery, Delivery::InFlight { .. })).count();
        let ready = self.pending.values().filter(|p| p.delivery == Delivery::Ready).count();
        assert_eq!(self.in_flight as usize, in_flight, "in-flight count");
        assert_eq!(self.ready as usize, ready, "ready count");
        let mut held: BTreeMap<MemberId, Holding> = BTreeMap::new();
        for p in self.pending.values() {
            if let Delivery::InFlight { member, .. } = p.delivery {
                *held.entry(member).or_default() += Holding { records: 1, bytes: p.bytes };
            }
        }
        assert_eq!(self.held, held, "per-member holdings");
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
