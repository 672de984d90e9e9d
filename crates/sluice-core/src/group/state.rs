//! A group's in-memory state and every rule that changes it: membership, rebalancing with
//! handover, acks, renewals and ack-timeout expiry. All of it is synchronous and runs under the
//! group's lock; the async parts ([`super::session`], [`super::maintenance`]) only call in.
//!
//! Ownership of a partition has two parts: `desired` (what the assignment wants) and
//! `owner` (who may hold its records now). When they differ and the owner is alive, the owner
//! is draining: it receives nothing new from the partition, its acks still count, and the
//! partition passes to the desired member once nothing of it is in flight to the owner (acked,
//! or expired by the ack timeout). A member that leaves gives up its in-flight records at once,
//! so its partitions move at once. Hence no record is ever in flight to two members.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::acks::AckSet;
use super::assignment::assign;
use super::types::{
    DeadLetterJob, DeadLettered, Failure, FlowLimits, GroupSettings, MemberId, NackSpec, OffsetReset, SessionEnd,
    TopicPartition,
};

/// A partition's offsets: (first readable, end), or `None` if it no longer exists.
pub(crate) type Offsets<'a> = &'a dyn Fn(&TopicPartition) -> Option<(u64, u64)>;

/// What a member's session shares with the group state.
#[derive(Debug, Default)]
pub(crate) struct MemberShared {
    pub wake: Notify,
    pub ended: OnceLock<SessionEnd>,
}

#[derive(Debug)]
pub(crate) struct Member {
    pub name: String,
    pub topics: BTreeSet<String>,
    pub limits: FlowLimits,
    pub session_timeout: Duration,
    pub last_seen: Instant,
    pub in_flight_records: u32,
    pub in_flight_bytes: u64,
    pub shared: Arc<MemberShared>,
    /// Where the next delivery search starts, so partitions take turns.
    pub rotation: usize,
    /// Assignment changes not yet sent, each as of the generation it became true.
    pub views: VecDeque<AssignmentView>,
    /// The last view queued.
    pub last_view: AssignmentView,
    /// Leases expired since the member last acked or nacked anything.
    pub lease_expiries: u32,
    /// How many may expire in a row before the member is removed (0: never).
    pub max_lease_expiries: u32,
    /// When `lease_expiries` last grew.
    pub last_lapse: Option<Instant>,
    /// Expired leases not yet told to the member.
    pub expired: VecDeque<(TopicPartition, Vec<u64>)>,
    /// Whether the member asked for ack receipts.
    pub wants_receipts: bool,
    /// Committed offsets last confirmed to the member, and those durable since, not yet sent.
    pub receipted: BTreeMap<TopicPartition, u64>,
    pub receipt: Vec<(TopicPartition, u64)>,
}

impl Member {
    /// A member that owns nothing yet.
    pub fn new(name: String, topics: BTreeSet<String>, limits: FlowLimits, session_timeout: Duration) -> Self {
        Member {
            name,
            topics,
            limits,
            session_timeout,
            last_seen: Instant::now(),
            in_flight_records: 0,
            in_flight_bytes: 0,
            shared: Arc::new(MemberShared::default()),
            rotation: 0,
            views: VecDeque::new(),
            last_view: AssignmentView::default(),
            lease_expiries: 0,
            max_lease_expiries: 0,
            last_lapse: None,
            wants_receipts: false,
            receipted: BTreeMap::new(),
            receipt: Vec::new(),
            expired: VecDeque::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    InFlight {
        member: MemberId,
        deadline: Instant,
    },
    /// Failed; deliverable again from `until` on.
    Backoff {
        until: Instant,
    },
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
}

impl Pending {
    /// A failed record waiting until `until` (restored from the group file).
    pub fn backoff(until: Instant) -> Self {
        Pending { delivery: Delivery::Backoff { until }, ..Pending::ready(0) }
    }

    pub fn ready(attempts: u32) -> Self {
        Pending { attempts, delivery: Delivery::Ready, bytes: 0, timestamp: 0, failure: None, position: None }
    }
}

/// Wall-clock time in ms since the Unix epoch (record timestamps and failure times use it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug)]
pub(crate) struct PartitionState {
    pub owner: Option<MemberId>,
    /// Generation at which `owner` got the partition; older acks are fenced.
    pub owner_since: u64,
    pub acks: AckSet,
    /// Next offset never delivered.
    pub cursor: u64,
    pub pending: BTreeMap<u64, Pending>,
    /// Entries of `pending` that are in flight.
    pub in_flight: u32,
    /// Entries of `pending` that are `Ready` (so a plan need not scan for them when none are).
    pub ready: u32,
    /// Timestamp of the record at the committed offset (refreshed by maintenance).
    pub oldest_unacked_timestamp: Option<i64>,
    /// Deliveries made before the last restart of records not done yet (their next delivery
    /// continues the count).
    pub prior_attempts: BTreeMap<u64, u32>,
    /// Where delivery stopped at offsets that cannot be read (see `damage`).
    pub stalled: Option<super::damage::Stalled>,
}

impl PartitionState {
    pub fn at(committed: AckSet) -> Self {
        PartitionState {
            owner: None,
            owner_since: 0,
            cursor: committed.committed(),
            acks: committed,
            pending: BTreeMap::new(),
            in_flight: 0,
            ready: 0,
            oldest_unacked_timestamp: None,
            prior_attempts: BTreeMap::new(),
            stalled: None,
        }
    }
}

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

/// A record picked from a read, to be registered as delivered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pick {
    pub offset: u64,
    pub bytes: u64,
    pub timestamp: i64,
    pub position: u32,
}

/// The partitions a member may take records from, and those it is draining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentView {
    /// Group generation when this view was made.
    pub generation: u64,
    /// Partitions the member owns.
    pub partitions: Vec<TopicPartition>,
    /// Partitions being handed over: ack what is in flight, nothing new comes.
    pub revoking: Vec<TopicPartition>,
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
}

#[derive(Debug)]
pub(crate) struct GroupState {
    pub settings: GroupSettings,
    pub generation: u64,
    pub members: BTreeMap<MemberId, Member>,
    pub partitions: BTreeMap<TopicPartition, PartitionState>,
    pub desired: BTreeMap<TopicPartition, MemberId>,
    /// Partition counts the last rebalance saw.
    pub topology: BTreeMap<String, u32>,
    /// Offsets changed since the last flush.
    pub dirty: bool,
    pub rebalances: u64,
    pub acks: u64,
    pub nacks: u64,
    pub redeliveries: u64,
    /// Records dead-lettered since the broker started, per source topic.
    pub dead_lettered_total: BTreeMap<Arc<str>, u64>,
    /// Records waiting for the dead-letter worker.
    pub dead_letter_jobs: VecDeque<DeadLetterJob>,
    /// Dead letters whose copy could not be written, by source, retried with backoff (see
    /// [`super::dead_letter`]).
    pub dead_letter_failed: BTreeMap<(TopicPartition, u64), super::types::FailedDeadLetter>,
    /// Failed tries to write dead-letter copies, since the broker started.
    pub dead_letter_failures: u64,
    /// This group's dead-lettered records not yet redriven, by dead-letter partition and offset.
    pub dead_letters: BTreeMap<(TopicPartition, u64), DeadLettered>,
    pub jitter: super::backoff::Jitter,
    /// Each topic's own attempt limit, if it sets one (refreshed by maintenance).
    pub topic_attempts: BTreeMap<Arc<str>, u32>,
    /// Unreadable records passed over under `skip_damaged`, since the broker started.
    pub damaged_skipped: u64,
    /// Committed offsets found past their partition's end and moved back to it, since start.
    pub offsets_past_end: u64,
}

impl GroupState {
    pub fn new(settings: GroupSettings) -> Self {
        GroupState {
            settings,
            generation: 0,
            members: BTreeMap::new(),
            partitions: BTreeMap::new(),
            desired: BTreeMap::new(),
            topology: BTreeMap::new(),
            dirty: false,
            rebalances: 0,
            acks: 0,
            nacks: 0,
            redeliveries: 0,
            dead_lettered_total: BTreeMap::new(),
            dead_letter_jobs: VecDeque::new(),
            dead_letter_failed: BTreeMap::new(),
            dead_letter_failures: 0,
            dead_letters: BTreeMap::new(),
            jitter: super::backoff::Jitter::new(now_ms() as u64),
            topic_attempts: BTreeMap::new(),
            damaged_skipped: 0,
            offsets_past_end: 0,
        }
    }

    /// Topics any live member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }

    /// Adds a member and rebalances. The member's first view is always queued, even when it
    /// gets no partitions, so it learns where it stands.
    pub fn join(&mut self, id: MemberId, member: Member, topology: &BTreeMap<String, u32>, offsets: Offsets<'_>) {
        self.members.insert(id, member);
        self.rebalance(topology, offsets);
        let view = self.view(id);
        if let Some(member) = self.members.get_mut(&id)
            && member.views.is_empty()
        {
            member.last_view = view.clone();
            member.views.push_back(view);
        }
    }

    /// Removes a member: its in-flight records become deliverable again and its partitions
    /// move at once.
    pub fn leave(&mut self, id: MemberId, reason: SessionEnd, topology: &BTreeMap<String, u32>, offsets: Offsets<'_>) {
        let Some(member) = self.members.remove(&id) else { return };
        let _already_ended = member.shared.ended.set(reason);
        member.shared.wake.notify_one();
        for partition in self.partitions.values_mut() {
            for pending in partition.pending.values_mut() {
                if matches!(pending.delivery, Delivery::InFlight { member, .. } if member == id) {
                    pending.delivery = Delivery::Ready;
                    partition.in_flight -= 1;
                    partition.ready += 1;
                }
            }
            if partition.owner == Some(id) {
                partition.owner = None;
            }
        }
        self.rebalance(topology, offsets);
    }

    fn init_partition(settings: &GroupSettings, tp: &TopicPartition, offsets: Offsets<'_>) -> PartitionState {
        let (start, end) = offsets(tp).unwrap_or((0, 0));
        let committed = match settings.reset {
            OffsetReset::Earliest => start,
            OffsetReset::Latest => end,
        };
        PartitionState::at(AckSet::at(committed))
    }

    /// Recomputes the desired assignment and moves every partition that may move now.
    pub fn rebalance(&mut self, topology: &BTreeMap<String, u32>, offsets: Offsets<'_>) {
        self.generation += 1;
        self.rebalances += 1;
        self.topology = topology.clone();
        let subscriptions: BTreeMap<MemberId, BTreeSet<String>> =
            self.members.iter().map(|(&id, m)| (id, m.topics.clone())).collect();
        self.desired = assign(&self.desired, &subscriptions, topology);
        let before = self.partitions.len();
        self.partitions.retain(|tp, _| topology.get(&*tp.topic).is_none_or(|&count| tp.partition < count));
        let dropped = before != self.partitions.len();
        for tp in self.desired.keys() {
            if !self.partitions.contains_key(tp) {
                self.partitions.insert(tp.clone(), Self::init_partition(&self.settings, tp, offsets));
                self.dirty = true;
            }
        }
        self.dirty |= dropped;
        let tps: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in &tps {
            self.try_handover(tp);
        }
        self.publish_views();
    }

    /// True if `tp` should pass to its desired member now: it is not there yet, and its owner
    /// is gone or has nothing of it in flight.
    fn can_hand_over(&self, tp: &TopicPartition) -> bool {
        let want = self.desired.get(tp).copied();
        self.partitions.get(tp).is_some_and(|p| {
            let owner_alive = p.owner.is_some_and(|o| self.members.contains_key(&o));
            p.owner != want && !(owner_alive && p.in_flight > 0)
        })
    }

    /// Passes `tp` to its desired member at the current generation if it may move now; the
    /// caller publishes views.
    fn try_handover(&mut self, tp: &TopicPartition) {
        if !self.can_hand_over(tp) {
            return;
        }
        let want = self.desired.get(tp).copied();
        if let Some(partition) = self.partitions.get_mut(tp) {
            partition.owner = want;
            partition.owner_since = self.generation;
        }
    }

    /// A handover outside a rebalance gets its own generation, so that in generation order the
    /// old owner's loss comes strictly before the new owner's gain.
    fn handover_later(&mut self, tps: &[TopicPartition]) {
        let ready: Vec<TopicPartition> = tps.iter().filter(|tp| self.can_hand_over(tp)).cloned().collect();
        if ready.is_empty() {
            return;
        }
        self.generation += 1;
        for tp in &ready {
            self.try_handover(tp);
        }
        self.publish_views();
    }

    /// Queues a new view for every member whose partitions changed, and wakes it.
    fn publish_views(&mut self) {
        let ids: Vec<MemberId> = self.members.keys().copied().collect();
        for id in ids {
            let view = self.view(id);
            let Some(member) = self.members.get_mut(&id) else { continue };
            if view.partitions != member.last_view.partitions || view.revoking != member.last_view.revoking {
                member.last_view = view.clone();
                member.views.push_back(view);
                member.shared.wake.notify_one();
            }
        }
    }

    /// What `id` may deliver from, and what it is draining.
    pub fn view(&self, id: MemberId) -> AssignmentView {
        let mut view = AssignmentView { generation: self.generation, ..AssignmentView::default() };
        for (tp, partition) in &self.partitions {
            if partition.owner != Some(id) {
                continue;
            }
            if self.desired.get(tp) == Some(&id) {
                view.partitions.push(tp.clone());
            } else {
                view.revoking.push(tp.clone());
            }
        }
        view
    }

    /// Moves a partition whose records retention deleted to the reset position.
    fn skip_deleted(&mut self, tp: &TopicPartition, start: u64, end: u64) {
        let reset = self.settings.reset;
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        if partition.acks.committed() >= start {
            return;
        }
        let position = match reset {
            OffsetReset::Earliest => start,
            OffsetReset::Latest => end,
        };
        self.drop_pending(tp, ..position);
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        partition.acks.skip_to(position);
        partition.prior_attempts = partition.prior_attempts.split_off(&position);
        partition.cursor = partition.cursor.max(position);
        self.dirty = true;
        tracing::warn!(topic = %tp.topic, partition = tp.partition, position, "group position was deleted by retention; moved per the reset policy");
    }

    /// Forgets the pending records of `tp` in `range` (they can no longer be delivered),
    /// releasing what members hold of them.
    pub(crate) fn drop_pending(&mut self, tp: &TopicPartition, range: impl std::ops::RangeBounds<u64>) {
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        let dropped: Vec<u64> = partition.pending.range(range).map(|(&offset, _)| offset).collect();
        for offset in dropped {
            let Some(pending) = partition.pending.remove(&offset) else { continue };
            match pending.delivery {
                Delivery::InFlight { member, .. } => {
                    partition.in_flight -= 1;
                    if let Some(m) = self.members.get_mut(&member) {
                        m.in_flight_records -= 1;
                        m.in_flight_bytes -= pending.bytes;
                    }
                }
                Delivery::Ready => partition.ready -= 1,
                Delivery::Backoff { .. } | Delivery::DeadLettering => {}
            }
        }
    }

    /// The member's next step, taking partitions in turn.
    pub fn plan(&mut self, id: MemberId, offsets: Offsets<'_>) -> Step {
        let Some(member) = self.members.get(&id) else { return Step::Wait { at_end: Vec::new() } };
        let records_left = member.limits.max_records.saturating_sub(member.in_flight_records);
        let bytes_left = member.limits.max_bytes.saturating_sub(member.in_flight_bytes);
        if records_left == 0 || (bytes_left == 0 && member.in_flight_records > 0) {
            return Step::Wait { at_end: Vec::new() };
        }
        let mine: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(tp, p)| p.owner == Some(id) && self.desired.get(*tp) == Some(&id))
            .map(|(tp, _)| tp.clone())
            .collect();
        let rotation = member.rotation;
        if let Some(m) = self.members.get_mut(&id) {
            m.rotation = m.rotation.wrapping_add(1);
        }
        let mut at_end = Vec::new();
        for i in 0..mine.len() {
            let tp = &mine[(rotation + i) % mine.len()];
            let Some((start, end)) = offsets(tp) else { continue };
            self.skip_deleted(tp, start, end);
            self.clamp_to_end(tp, end);
            let Some(partition) = self.partitions.get(tp) else { continue };
            // Delivery from a damaged partition waits for an operator (see `damage`).
            if partition.stalled.is_some() {
                continue;
            }
            debug_assert_eq!(
                partition.ready as usize,
                partition.pending.values().filter(|p| p.delivery == Delivery::Ready).count(),
                "ready count out of step"
            );
            let waiting = partition.pending.len() > partition.in_flight as usize;
            let ready: Vec<u64> = if partition.ready == 0 {
                Vec::new()
            } else {
                partition
                    .pending
                    .iter()
                    .filter(|(_, p)| p.delivery == Delivery::Ready)
                    .map(|(&offset, _)| offset)
                    .take(records_left as usize)
                    .collect()
            };
            if !ready.is_empty() {
                return Step::Redeliver { tp: tp.clone(), offsets: ready };
            }
            // Strict ordering: nothing later while a record waits to be delivered again.
            let held_back = self.settings.strict_ordering
                && waiting
                && partition.pending.values().any(|p| !matches!(p.delivery, Delivery::InFlight { .. }));
            if held_back {
                continue;
            }
            if partition.cursor < end {
                return Step::Read {
                    tp: tp.clone(),
                    from: partition.cursor,
                    end,
                    max_records: records_left,
                    max_bytes: bytes_left.max(1),
                };
            }
            at_end.push((tp.clone(), end));
        }
        Step::Wait { at_end }
    }

    fn may_deliver(&self, id: MemberId, tp: &TopicPartition) -> bool {
        self.members.contains_key(&id)
            && self.desired.get(tp) == Some(&id)
            && self.partitions.get(tp).is_some_and(|p| p.owner == Some(id))
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
        if !self.may_deliver(id, tp) {
            return None;
        }
        let deadline = now + self.settings.ack_timeout;
        let partition = self.partitions.get_mut(tp)?;
        if partition.cursor != from {
            return None;
        }
        let member = self.members.get_mut(&id)?;
        let mut delivered = Vec::with_capacity(picks.len());
        let mut taken = 0u32;
        for pick in picks {
            // Already tracked (a backoff restored from the group file): it is delivered when
            // its own turn comes, not as a new record.
            if partition.pending.contains_key(&pick.offset) {
                continue;
            }
            taken += 1;
            let delivery = Delivery::InFlight { member: id, deadline };
            let attempts = partition.prior_attempts.remove(&pick.offset).map_or(1, |before| before + 1);
            if attempts > 1 {
                self.redeliveries += 1;
            }
            let pending = Pending {
                attempts,
                delivery,
                bytes: pick.bytes,
                timestamp: pick.timestamp,
                failure: None,
                position: Some(pick.position),
            };
            partition.pending.insert(pick.offset, pending);
            member.in_flight_records += 1;
            member.in_flight_bytes += pick.bytes;
            delivered.push((pick.offset, attempts));
        }
        partition.in_flight += taken;
        partition.cursor = next;
        // Attempt counts changed: the next flush keeps them, so a restart grants no new ones.
        self.dirty = true;
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
        if !self.may_deliver(id, tp) {
            return Vec::new();
        }
        let deadline = now + self.settings.ack_timeout;
        let (Some(partition), Some(member)) = (self.partitions.get_mut(tp), self.members.get_mut(&id)) else {
            return Vec::new();
        };
        let mut taken = Vec::with_capacity(picks.len());
        for pick in picks {
            let Some(pending) = partition.pending.get_mut(&pick.offset) else { continue };
            if pending.delivery != Delivery::Ready {
                continue;
            }
            partition.ready -= 1;
            pending.attempts += 1;
            pending.delivery = Delivery::InFlight { member: id, deadline };
            pending.bytes = pick.bytes;
            pending.timestamp = pick.timestamp;
            pending.position = Some(pick.position);
            if pending.attempts > 1 {
                self.redeliveries += 1;
            }
            partition.in_flight += 1;
            member.in_flight_records += 1;
            member.in_flight_bytes += pick.bytes;
            taken.push((pick.offset, pending.attempts));
        }
        if !taken.is_empty() {
            self.dirty = true;
        }
        taken
    }

    /// Forgets deliverable offsets that no longer exist in the log (deleted by retention).
    pub fn drop_missing(&mut self, tp: &TopicPartition, offsets: &[u64]) {
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        for offset in offsets {
            if partition.pending.get(offset).is_some_and(|p| p.delivery == Delivery::Ready) {
                partition.pending.remove(offset);
                partition.ready -= 1;
                partition.acks.ack(*offset);
                self.dirty = true;
            }
        }
    }

    /// Checks that `id` may ack or renew in `tp` with `generation`.
    fn check_owner(&self, id: MemberId, tp: &TopicPartition, generation: u64) -> Result<(), AckRefusal> {
        let partition = self.partitions.get(tp).ok_or(AckRefusal::NotOwner)?;
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
        if let Err(refusal) = self.check_owner(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let (Some(partition), Some(member)) = (self.partitions.get_mut(tp), self.members.get_mut(&id)) else {
            return outcome;
        };
        for &(first, last) in ranges {
            if first > last {
                continue;
            }
            let delivered: Vec<u64> = partition.pending.range(first..=last).map(|(&offset, _)| offset).collect();
            for offset in delivered {
                let Some(pending) = partition.pending.get(&offset) else { continue };
                match pending.delivery {
                    Delivery::InFlight { member: to, .. } if to != id => continue,
                    Delivery::InFlight { .. } => {
                        partition.in_flight -= 1;
                        member.in_flight_records -= 1;
                        member.in_flight_bytes -= pending.bytes;
                    }
                    Delivery::Ready => partition.ready -= 1,
                    Delivery::Backoff { .. } => {}
                    Delivery::DeadLettering => continue,
                }
                partition.pending.remove(&offset);
                partition.acks.ack(offset);
                outcome.accepted += 1;
                member.lease_expiries = 0;
            }
            if last >= partition.cursor {
                outcome.refused.push((first.max(partition.cursor), last, AckRefusal::NotDelivered));
            }
        }
        if outcome.accepted > 0 {
            self.acks += outcome.accepted;
            self.dirty = true;
            member.shared.wake.notify_one();
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
        if let Err(refusal) = self.check_owner(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let deadline = now + self.settings.ack_timeout;
        let Some(partition) = self.partitions.get_mut(tp) else { return outcome };
        for &(first, last) in ranges.iter().filter(|(first, last)| first <= last) {
            for pending in partition.pending.range_mut(first..=last).map(|(_, p)| p) {
                if let Delivery::InFlight { member, .. } = pending.delivery
                    && member == id
                {
                    pending.delivery = Delivery::InFlight { member, deadline };
                    outcome.accepted += 1;
                }
            }
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
            let mut expired = Vec::new();
            for (&offset, pending) in partition.pending.iter_mut() {
                match pending.delivery {
                    Delivery::InFlight { member, deadline } if deadline <= now => expired.push((offset, member)),
                    Delivery::Backoff { until } if until <= now => {
                        pending.delivery = Delivery::Ready;
                        partition.ready += 1;
                        if let Some(owner) = partition.owner.and_then(|o| self.members.get(&o)) {
                            owner.shared.wake.notify_one();
                        }
                    }
                    _ => {}
                }
            }
            if !expired.is_empty() {
                let reason = format!("not acked within the ack timeout of {:?}", self.settings.ack_timeout);
                let nack = NackSpec { reason: Arc::from(reason), retryable: true, delay: None };
                let mut told: BTreeMap<MemberId, Vec<u64>> = BTreeMap::new();
                for (offset, member) in &expired {
                    self.release(&tp, *offset, *member);
                    self.fail(&tp, *offset, &nack, now);
                    told.entry(*member).or_default().push(*offset);
                }
                for (id, offsets) in told {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.expired.push_back((tp.clone(), offsets));
                        member.shared.wake.notify_one();
                        lapsed.insert(id);
                    }
                }
            }
            if !expired.is_empty() {
                drained.push(tp);
            }
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

    /// Takes an in-flight record back from `member` (no longer counted against it).
    fn release(&mut self, tp: &TopicPartition, offset: u64, member: MemberId) {
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        let Some(pending) = partition.pending.get_mut(&offset) else { return };
        if !matches!(pending.delivery, Delivery::InFlight { member: to, .. } if to == member) {
            return;
        }
        pending.delivery = Delivery::Ready;
        partition.in_flight -= 1;
        partition.ready += 1;
        if let Some(m) = self.members.get_mut(&member) {
            m.in_flight_records -= 1;
            m.in_flight_bytes -= pending.bytes;
            m.shared.wake.notify_one();
        }
    }

    /// Records a failed attempt of a released record: backoff, or the dead-letter queue when
    /// it is out of attempts or not retryable.
    fn fail(&mut self, tp: &TopicPartition, offset: u64, nack: &NackSpec, now: Instant) {
        let max_attempts = self.settings.max_attempts_for(self.topic_attempts.get(&tp.topic).copied());
        let sample = self.jitter.sample();
        let Some(partition) = self.partitions.get_mut(tp) else { return };
        let Some(pending) = partition.pending.get_mut(&offset) else { return };
        if pending.delivery == Delivery::Ready {
            partition.ready -= 1;
        }
        let at = now_ms();
        let failure = match pending.failure.take() {
            Some(previous) => Failure { reason: nack.reason.clone(), first_ms: previous.first_ms, last_ms: at },
            None => Failure { reason: nack.reason.clone(), first_ms: at, last_ms: at },
        };
        pending.failure = Some(failure.clone());
        if !nack.retryable || pending.attempts >= max_attempts {
            pending.delivery = Delivery::DeadLettering;
            let job = DeadLetterJob {
                tp: tp.clone(),
                offset,
                attempts: pending.attempts,
                failure,
                position: pending.position,
                failures: 0,
            };
            self.dead_letter_jobs.push_back(job);
            return;
        }
        let delay = nack.delay.unwrap_or_else(|| self.settings.retry.delay(pending.attempts, sample));
        pending.delivery = Delivery::Backoff { until: now + delay };
        // The backoff deadline is saved by the next flush (a restart keeps it).
        self.dirty = true;
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
        if let Err(refusal) = self.check_owner(id, tp, generation) {
            return AckOutcome::refusing(ranges, refusal);
        }
        let Some(partition) = self.partitions.get(tp) else { return outcome };
        let cursor = partition.cursor;
        let mut failed = Vec::new();
        for &(first, last) in ranges.iter().filter(|(first, last)| first <= last) {
            let before = failed.len();
            failed.extend(
                partition
                    .pending
                    .range(first..=last)
                    .filter(|(_, p)| matches!(p.delivery, Delivery::InFlight { member, .. } if member == id))
                    .map(|(&offset, _)| offset),
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
            self.release(tp, *offset, id);
            self.fail(tp, *offset, nack, now);
        }
        outcome.accepted = failed.len() as u64;
        self.nacks += outcome.accepted;
        if let Some(member) = self.members.get_mut(&id).filter(|_| !failed.is_empty()) {
            member.lease_expiries = 0;
        }
        if !failed.is_empty() {
            self.handover_later(std::slice::from_ref(tp));
        }
        outcome
    }

    /// The dead-letter worker appended `job`'s record durably (at `at`, if known): the record
    /// is done for the group.
    pub fn dead_lettered(&mut self, job: &DeadLetterJob, at: Option<(TopicPartition, u64)>) {
        let Some(partition) = self.partitions.get_mut(&job.tp) else { return };
        if !matches!(partition.pending.get(&job.offset), Some(p) if p.delivery == Delivery::DeadLettering) {
            return;
        }
        partition.pending.remove(&job.offset);
        partition.acks.ack(job.offset);
        let owner = partition.owner;
        *self.dead_lettered_total.entry(job.tp.topic.clone()).or_default() += 1;
        if let Some(key) = at {
            let record = DeadLettered { source: job.tp.clone(), source_offset: job.offset, at_ms: job.failure.last_ms };
            self.dead_letters.insert(key, record);
        }
        self.dirty = true;
        if let Some(owner) = owner.and_then(|o| self.members.get(&o)) {
            owner.shared.wake.notify_one();
        }
        self.handover_later(std::slice::from_ref(&job.tp));
    }

    /// Puts dead-lettered records back into the group's processing with fresh attempt counts;
    /// returns how many were redriven. Each is forgotten as a dead letter, so it cannot be
    /// redriven twice.
    pub fn redrive(&mut self, keys: &[(TopicPartition, u64)]) -> u64 {
        let mut redriven = 0;
        for key in keys {
            let Some(letter) = self.dead_letters.remove(key) else { continue };
            let Some(partition) = self.partitions.get_mut(&letter.source) else { continue };
            if let std::collections::btree_map::Entry::Vacant(entry) = partition.pending.entry(letter.source_offset) {
                entry.insert(Pending::ready(0));
                partition.ready += 1;
            }
            redriven += 1;
            if let Some(owner) = partition.owner.and_then(|o| self.members.get(&o)) {
                owner.shared.wake.notify_one();
            }
        }
        if redriven > 0 {
            self.dirty = true;
        }
        redriven
    }

    /// The group file now holds these committed offsets: queues a receipt for each member that
    /// asked for them, naming the partitions it owns whose committed offset moved since its
    /// last receipt.
    pub fn receipt_durable(&mut self, committed: &[(TopicPartition, u64)]) {
        let owners: BTreeMap<&TopicPartition, MemberId> =
            self.partitions.iter().filter_map(|(tp, p)| p.owner.map(|o| (tp, o))).collect();
        for (&id, member) in self.members.iter_mut().filter(|(_, m)| m.wants_receipts) {
            let moved: Vec<(TopicPartition, u64)> = committed
                .iter()
                .filter(|(tp, offset)| owners.get(tp) == Some(&id) && member.receipted.get(tp) != Some(offset))
                .cloned()
                .collect();
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

    /// Forgets dead letters without redriving them (an operator decided they need no more
    /// processing); returns how many there were.
    pub fn discard(&mut self, keys: &[(TopicPartition, u64)]) -> u64 {
        let discarded = keys.iter().filter(|key| self.dead_letters.remove(key).is_some()).count() as u64;
        if discarded > 0 {
            self.dirty = true;
        }
        discarded
    }

    /// Moves partitions to `position`s, forgetting acks and in-flight records there.
    pub fn reset(&mut self, positions: &[(TopicPartition, u64)]) {
        for (tp, position) in positions {
            let partition = self.partitions.entry(tp.clone()).or_insert_with(|| PartitionState::at(AckSet::at(0)));
            for (_, pending) in std::mem::take(&mut partition.pending) {
                if let Delivery::InFlight { member, .. } = pending.delivery
                    && let Some(m) = self.members.get_mut(&member)
                {
                    m.in_flight_records -= 1;
                    m.in_flight_bytes -= pending.bytes;
                }
            }
            partition.in_flight = 0;
            partition.ready = 0;
            partition.prior_attempts.clear();
            partition.acks.reset_to(*position);
            partition.cursor = *position;
            partition.oldest_unacked_timestamp = None;
            partition.stalled = None;
        }
        self.dirty = true;
        let tps: Vec<TopicPartition> = positions.iter().map(|(tp, _)| tp.clone()).collect();
        self.handover_later(&tps);
        for member in self.members.values() {
            member.shared.wake.notify_one();
        }
    }
}
