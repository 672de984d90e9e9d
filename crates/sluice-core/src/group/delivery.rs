//! What happens to a group's records: plans for a member's next step, deliveries, acks,
//! nacks, renewals, expiry, dead-lettering, redrives and resets. Each partition's records are
//! kept by its [`Ledger`]; this layer adds ownership (who may deliver and ack), the group's
//! policy, member liveness and notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::acks::AckSet;
use super::ledger::{Delivery, FailSpec, Failed, Pick};
use super::state::{GroupState, Offsets, PartitionState, now_ms};
use super::types::{
    DeadLetterJob, DeadLettered, LeaseEndReason, MemberId, NackSpec, OffsetReset, SessionEnd, TopicPartition,
};

/// What a member should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read new records from `from` (the partition's cursor).
    Read { tp: TopicPartition, from: u64, end: u64, max_records: u32, max_bytes: u64 },
    /// Deliver these records again.
    Redeliver { tp: TopicPartition, offsets: Vec<u64> },
    /// Nothing to do until woken, or until one of these partitions grows past the end seen.
    Wait { at_end: Vec<(TopicPartition, u64)> },
}

/// Why (part of) an ack was refused. The group state is unchanged for refused offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckRefusal {
    /// The member does not own the partition (it moved, or never was the member's).
    NotOwner,
    /// The ack names a generation older than the member's ownership of the partition.
    StaleGeneration,
    /// The offsets were never delivered to the group.
    NotDelivered,
    /// The records are leased to another member now (this member's lease ended).
    LeasedToOther,
}

/// The result of an ack or renew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Offsets newly done (or renewed).
    pub accepted: u64,
    /// Refused ranges (first, last inclusive) and why.
    pub refused: Vec<(u64, u64, AckRefusal)>,
}

impl AckOutcome {
    fn refusing(ranges: &[(u64, u64)], refusal: AckRefusal) -> Self {
        AckOutcome { accepted: 0, refused: ranges.iter().map(|&(first, last)| (first, last, refusal)).collect() }
    }

    /// Adds a refusal, joining it to the last one when they touch.
    fn refuse(&mut self, first: u64, last: u64, refusal: AckRefusal) {
        if let Some(previous) = self.refused.last_mut()
            && previous.2 == refusal
            && previous.1 + 1 == first
        {
            previous.1 = last;
            return;
        }
        self.refused.push((first, last, refusal));
    }
}

impl GroupState {
    /// Moves a partition whose records retention deleted to the reset position.
    fn skip_deleted(&mut self, tp: &TopicPartition, start: u64, end: u64) {
        let reset = self.settings.reset;
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        if partition.ledger.committed() >= start {
            return;
        }
        let position = match reset {
            OffsetReset::Earliest => start,
            OffsetReset::Latest => end,
        };
        let ended = partition.ledger.skip_to(position);
        self.tell_ended(tp, &ended, LeaseEndReason::RecordsGone);
        self.dirty = true;
        tracing::warn!(topic = %tp.topic, partition = tp.partition, position, "group position was deleted by retention; moved per the reset policy");
    }

    /// The member's next step, taking partitions in turn.
    pub fn plan(&mut self, id: MemberId, offsets: Offsets<'_>) -> Step {
        let Some(member) = self.members.get(&id) else { return Step::Wait { at_end: Vec::new() } };
        let (limits, rotation) = (member.limits, member.rotation);
        let held = self.holding(id);
        let records_left = limits.max_records.saturating_sub(held.records);
        let bytes_left = limits.max_bytes.saturating_sub(held.bytes);
        if records_left == 0 || (bytes_left == 0 && held.records > 0) {
            return Step::Wait { at_end: Vec::new() };
        }
        let mine: Vec<TopicPartition> =
            self.partitions.keys().filter(|tp| self.delivers_from(id, tp)).cloned().collect();
        if let Some(m) = self.members.get_mut(&id) {
            m.rotation = m.rotation.wrapping_add(1);
        }
        let shared = self.shared();
        let mut at_end = Vec::new();
        for i in 0..mine.len() {
            let tp = &mine[(rotation + i) % mine.len()];
            let Some((start, end)) = offsets(tp) else { continue };
            self.skip_deleted(tp, start, end);
            self.clamp_to_end(tp, end);
            let live_reader = |p: &PartitionState| p.reader.filter(|&r| r != id && self.members.contains_key(&r));
            let Some(partition) = self.partitions.get(tp) else { continue };
            // Delivery from a damaged partition waits for an operator (see `damage`).
            if partition.stalled.is_some() {
                continue;
            }
            // Shared delivery: a record whose lease this member let fail goes to another member
            // first, if one has room (else a stuck member would get its own failures back).
            // (Looked up only when there is something ready: it scans the members.)
            let skip = (shared && partition.ledger.ready() > 0 && self.other_has_room(id, tp)).then_some(id);
            let ready = partition.ledger.ready_offsets_except(records_left as usize, skip);
            if !ready.is_empty() {
                return Step::Redeliver { tp: tp.clone(), offsets: ready };
            }
            // Strict ordering: nothing later while a record waits to be delivered again.
            let held_back = self.settings.strict_ordering
                && partition.ledger.pending().any(|(_, p)| !matches!(p.delivery, Delivery::InFlight { .. }));
            if held_back {
                continue;
            }
            if partition.ledger.cursor() < end {
                // Another member is reading these records; its registration wakes the rest.
                if shared && live_reader(partition).is_some() {
                    continue;
                }
                let from = partition.ledger.cursor();
                if shared && let Some(partition) = self.partitions.get_mut(tp) {
                    partition.reader = Some(id);
                }
                return Step::Read {
                    tp: tp.clone(),
                    from,
                    end,
                    max_records: records_left,
                    max_bytes: bytes_left.max(1),
                };
            }
            at_end.push((tp.clone(), end));
        }
        Step::Wait { at_end }
    }

    /// True if a member other than `id` that takes records from `tp` has room for one more.
    fn other_has_room(&self, id: MemberId, tp: &TopicPartition) -> bool {
        self.members
            .iter()
            .filter(|(other, m)| **other != id && m.subscribes(tp))
            .any(|(&other, m)| self.holding(other).records < m.limits.max_records)
    }

    /// A read `id` planned for `tp` is over (registered or not): others may read there now.
    pub fn end_read(&mut self, id: MemberId, tp: &TopicPartition) {
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        if partition.reader == Some(id) {
            partition.reader = None;
            self.wake_partition(tp);
        }
    }

    /// Records new deliveries read from `from`; `next` is the offset after the last record
    /// examined. Returns the generation and each record's attempt number, or `None` if the read
    /// is stale (ownership or cursor moved meanwhile).
    pub fn register_read(
        &mut self,
        id: MemberId,
        tp: &TopicPartition,
        from: u64,
        next: u64,
        picks: &[Pick],
        now: Instant,
    ) -> Option<(u64, Vec<(u64, u32)>)> {
        if !self.delivers_from(id, tp) {
            return None;
        }
        let deadline = now + self.settings.ack_timeout;
        let partition = self.partitions.get_mut(tp)?;
        let delivered = partition.ledger.deliver(from, next, picks, id, deadline)?;
        self.redeliveries += delivered.iter().filter(|(_, attempts)| *attempts > 1).count() as u64;
        // Attempt counts changed: the next flush keeps them, so a restart grants no new ones.
        self.dirty = true;
        self.end_read(id, tp);
        Some((self.generation, delivered))
    }

    /// Records redeliveries; returns the offsets actually taken with their attempt numbers.
    pub fn register_redelivery(
        &mut self,
        id: MemberId,
        tp: &TopicPartition,
        picks: &[Pick],
        now: Instant,
    ) -> Vec<(u64, u32)> {
        if !self.delivers_from(id, tp) {
            return Vec::new();
        }
        let deadline = now + self.settings.ack_timeout;
        let Some(partition) = self.partitions.get_mut(tp) else { return Vec::new() };
        let taken = partition.ledger.redeliver(picks, id, deadline);
        self.redeliveries += taken.iter().filter(|(_, attempts)| *attempts > 1).count() as u64;
        if !taken.is_empty() {
            self.dirty = true;
        }
        taken
    }

    /// Forgets deliverable offsets that no longer exist in the log (deleted by retention).
    pub fn drop_missing(&mut self, tp: &TopicPartition, offsets: &[u64]) {
        if let Some(partition) = self.partitions.get_mut(tp)
            && partition.ledger.drop_missing(offsets)
        {
            self.dirty = true;
        }
    }

    /// Checks that `id` may ack, nack or renew in `tp` with `generation`. In shared delivery
    /// the lease on each record decides, not the partition.
    fn check_access(&self, id: MemberId, tp: &TopicPartition, generation: u64) -> Result<(), AckRefusal> {
        let partition = self.partitions.get(tp).ok_or(AckRefusal::NotOwner)?;
        if self.shared() {
            return match self.members.get(&id) {
                Some(member) if member.subscribes(tp) => Ok(()),
                _ => Err(AckRefusal::NotOwner),
            };
        }
        if partition.owner != Some(id) {
            return Err(AckRefusal::NotOwner);
        }
        if generation < partition.owner_since {
            return Err(AckRefusal::StaleGeneration);
        }
        Ok(())
    }

    /// Marks delivered offsets in `ranges` (first, last inclusive) done.
    pub fn ack(&mut self, id: MemberId, tp: &TopicPartition, generation: u64, ranges: &[(u64, u64)]) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        if let Err(refusal) = self.check_access(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let Some(partition) = self.partitions.get_mut(tp) else { return outcome };
        for &(first, last) in ranges.iter().filter(|(first, last)| first <= last) {
            outcome.accepted += partition.ledger.ack(first, last, id);
            // What is left pending in the range and leased to others stays theirs.
            let theirs: Vec<u64> = partition
                .ledger
                .pending_in(first, last)
                .filter(|(o, _)| partition.ledger.leased_to_other(*o, id))
                .map(|(o, _)| o)
                .collect();
            for offset in theirs {
                outcome.refuse(offset, offset, AckRefusal::LeasedToOther);
            }
            let cursor = partition.ledger.cursor();
            if last >= cursor {
                outcome.refuse(first.max(cursor), last, AckRefusal::NotDelivered);
            }
        }
        if outcome.accepted > 0 {
            self.acks += outcome.accepted;
            self.dirty = true;
            if let Some(member) = self.members.get_mut(&id) {
                member.lease_expiries = 0;
                member.shared.wake.notify_one();
            }
            self.handover_later(std::slice::from_ref(tp));
        }
        outcome
    }

    /// Extends the ack deadline of the member's in-flight records in `ranges`.
    pub fn renew(
        &mut self,
        id: MemberId,
        tp: &TopicPartition,
        generation: u64,
        ranges: &[(u64, u64)],
        now: Instant,
    ) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        if let Err(refusal) = self.check_access(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let deadline = now + self.settings.ack_timeout;
        let Some(partition) = self.partitions.get_mut(tp) else { return outcome };
        for &(first, last) in ranges.iter().filter(|(first, last)| first <= last) {
            outcome.accepted += partition.ledger.renew(first, last, id, deadline);
        }
        outcome
    }

    /// Makes records whose ack deadline passed deliverable again (telling their members), and
    /// returns the members to remove: those whose session timed out, and those whose leases
    /// expired `max_lease_expiries` times in a row (alive, but not processing).
    pub fn expire(&mut self, now: Instant) -> Vec<(MemberId, SessionEnd)> {
        let mut drained = Vec::new();
        // Members that had leases expire in this pass.
        let mut lapsed = BTreeSet::new();
        let tps: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in tps {
            let Some(partition) = self.partitions.get_mut(&tp) else { continue };
            let expiry = partition.ledger.expire(now);
            if expiry.became_ready {
                self.wake_partition(&tp);
            }
            if expiry.lapsed.is_empty() {
                continue;
            }
            let reason = format!("not acked within the ack timeout of {:?}", self.settings.ack_timeout);
            let nack = NackSpec { reason: Arc::from(reason), retryable: true, delay: None };
            for lease in &expiry.lapsed {
                self.fail(&tp, lease.offset, lease.member, &nack, now);
                lapsed.insert(lease.member);
            }
            self.tell_ended(&tp, &expiry.lapsed, LeaseEndReason::AckTimeout);
            self.wake_partition(&tp);
            drained.push(tp);
        }
        self.handover_later(&drained);
        // Leases handed out together expire within a short span, over one or a few passes:
        // they count once. The next count needs a new delivery, which expires an ack timeout
        // later at the earliest.
        let window = self.settings.ack_timeout / 2;
        for id in lapsed {
            if let Some(member) = self.members.get_mut(&id)
                && member.last_lapse.is_none_or(|at| now.saturating_duration_since(at) >= window)
            {
                member.lease_expiries = member.lease_expiries.saturating_add(1);
                member.last_lapse = Some(now);
            }
        }
        self.members
            .iter()
            .filter_map(|(&id, m)| {
                if now.saturating_duration_since(m.last_seen) >= m.session_timeout {
                    Some((id, SessionEnd::TimedOut(m.session_timeout)))
                } else if m.max_lease_expiries > 0 && m.lease_expiries >= m.max_lease_expiries {
                    Some((id, SessionEnd::NotProcessing(m.lease_expiries)))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Fails `member`'s lease on a record: backoff, or the dead-letter queue when it is out of
    /// attempts or not retryable. False if the member held no such lease.
    fn fail(&mut self, tp: &TopicPartition, offset: u64, member: MemberId, nack: &NackSpec, now: Instant) -> bool {
        let max_attempts = self.settings.max_attempts_for(self.topic_attempts.get(&tp.topic).copied());
        let sample = self.jitter.sample();
        let Some(partition) = self.partitions.get_mut(tp) else { return false };
        let attempts = partition.ledger.get(offset).map_or(0, |p| p.attempts);
        let delay = nack.delay.unwrap_or_else(|| self.settings.retry.delay(attempts, sample));
        let spec =
            FailSpec { reason: nack.reason.clone(), retryable: nack.retryable, max_attempts, delay, at_ms: now_ms() };
        match partition.ledger.fail(offset, member, &spec, now) {
            None => false,
            Some(Failed::Backoff { .. }) => {
                // The backoff deadline is saved by the next flush (a restart keeps it).
                self.dirty = true;
                true
            }
            Some(Failed::DeadLetter { attempts, failure, position }) => {
                let job =
                    DeadLetterJob { tp: tp.clone(), offset, attempts, failure, position, failures: 0, restored: false };
                self.dead_letter_jobs.push_back(job);
                self.dirty = true;
                true
            }
        }
    }

    /// Marks offsets in `ranges` that are in flight to `id` as failed.
    pub fn nack(
        &mut self,
        id: MemberId,
        tp: &TopicPartition,
        generation: u64,
        ranges: &[(u64, u64)],
        nack: &NackSpec,
        now: Instant,
    ) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        if let Err(refusal) = self.check_access(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let Some(partition) = self.partitions.get(tp) else { return outcome };
        let cursor = partition.ledger.cursor();
        let mut failed = Vec::new();
        for &(first, last) in ranges.iter().filter(|(first, last)| first <= last) {
            let before = failed.len();
            failed.extend(
                partition
                    .ledger
                    .pending_in(first, last)
                    .filter(|(_, p)| matches!(p.delivery, Delivery::InFlight { member, .. } if member == id))
                    .map(|(o, _)| o),
            );
            if failed.len() == before && first < cursor {
                // Nothing in this range is outstanding with the member (done, or never its own).
                outcome.refused.push((first, last.min(cursor - 1), AckRefusal::NotDelivered));
            }
            if last >= cursor {
                outcome.refused.push((first.max(cursor), last, AckRefusal::NotDelivered));
            }
        }
        for offset in &failed {
            self.fail(tp, *offset, id, nack, now);
        }
        outcome.accepted = failed.len() as u64;
        self.nacks += outcome.accepted;
        if !failed.is_empty() {
            if let Some(member) = self.members.get_mut(&id) {
                member.lease_expiries = 0;
                member.shared.wake.notify_one();
            }
            self.wake_partition(tp);
            self.handover_later(std::slice::from_ref(tp));
        }
        outcome
    }

    /// The dead-letter worker appended `job`'s record durably (at `at`, if known): the record
    /// is done for the group.
    pub fn dead_lettered(&mut self, job: &DeadLetterJob, at: Option<(TopicPartition, u64)>) {
        let Some(partition) = self.partitions.get_mut(&job.tp) else { return };
        if !partition.ledger.dead_lettered(job.offset) {
            return;
        }
        *self.dead_lettered_total.entry(job.tp.topic.clone()).or_default() += 1;
        if let Some(key) = at {
            let record = DeadLettered { source: job.tp.clone(), source_offset: job.offset, at_ms: job.failure.last_ms };
            self.dead_letters.insert(key, record);
        }
        self.dirty = true;
        self.wake_partition(&job.tp);
        self.handover_later(std::slice::from_ref(&job.tp));
    }

    /// Puts dead-lettered records back into the group's processing with fresh attempt counts;
    /// returns how many were redriven. Each is forgotten as a dead letter, so it cannot be
    /// redriven twice.
    pub fn redrive(&mut self, keys: &[(TopicPartition, u64)]) -> u64 {
        let mut redriven = 0;
        for key in keys {
            let Some(letter) = self.dead_letters.redrive(key) else { continue };
            let Some(partition) = self.partitions.get_mut(&letter.source) else { continue };
            partition.ledger.redrive(letter.source_offset);
            redriven += 1;
            self.wake_partition(&letter.source);
        }
        if redriven > 0 {
            self.dirty = true;
        }
        redriven
    }

    /// Forgets dead letters without redriving them (an operator decided they need no more
    /// processing); returns how many there were.
    pub fn discard(&mut self, keys: &[(TopicPartition, u64)]) -> u64 {
        let discarded = keys.iter().filter(|key| self.dead_letters.discard(key).is_some()).count() as u64;
        if discarded > 0 {
            self.dirty = true;
        }
        discarded
    }

    /// The group file now holds these committed offsets: queues a receipt for each member that
    /// asked for them, naming the partitions it takes records from whose committed offset moved
    /// since its last receipt.
    pub fn receipt_durable(&mut self, committed: &[(TopicPartition, u64)]) {
        let ids: Vec<MemberId> = self.members.iter().filter(|(_, m)| m.wants_receipts).map(|(&id, _)| id).collect();
        for id in ids {
            let mine: Vec<(TopicPartition, u64)> = committed
                .iter()
                .filter(|(tp, _)| {
                    let owner = self.partitions.get(tp).and_then(|p| p.owner);
                    if self.shared() {
                        self.members.get(&id).is_some_and(|m| m.subscribes(tp))
                    } else {
                        owner == Some(id)
                    }
                })
                .cloned()
                .collect();
            let Some(member) = self.members.get_mut(&id) else { continue };
            let moved: Vec<(TopicPartition, u64)> =
                mine.into_iter().filter(|(tp, offset)| member.receipted.get(tp) != Some(offset)).collect();
            if moved.is_empty() {
                continue;
            }
            for (tp, offset) in &moved {
                member.receipted.insert(tp.clone(), *offset);
            }
            member.receipt.extend(moved);
            member.shared.wake.notify_one();
        }
    }

    /// Moves partitions to `position`s, forgetting acks and in-flight records there.
    pub fn reset(&mut self, positions: &[(TopicPartition, u64)]) {
        for (tp, position) in positions {
            let partition = self.partitions.entry(tp.clone()).or_insert_with(|| PartitionState::at(AckSet::at(0)));
            let ended = partition.ledger.reset(*position);
            partition.oldest_unacked_timestamp = None;
            partition.stalled = None;
            self.tell_ended(tp, &ended, LeaseEndReason::OffsetsReset);
        }
        self.dirty = true;
        let tps: Vec<TopicPartition> = positions.iter().map(|(tp, _)| tp.clone()).collect();
        self.handover_later(&tps);
        for member in self.members.values() {
            member.shared.wake.notify_one();
        }
    }

    /// Records in flight per member, for describing the group.
    pub fn in_flight_by_member(&self) -> BTreeMap<MemberId, u32> {
        let mut counts = BTreeMap::new();
        for partition in self.partitions.values() {
            for id in partition.ledger.holders() {
                *counts.entry(id).or_default() += partition.ledger.held(id).records;
            }
        }
        counts
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
