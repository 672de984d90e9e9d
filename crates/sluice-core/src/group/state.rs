//! A group's in-memory state: membership, generations, the assignment and hand-over. Record
//! delivery (plans, acks, nacks, expiry) is in [`super::delivery`], over each partition's
//! [`Ledger`]. All of it is synchronous and runs under the group's lock; the async parts
//! ([`super::session`], [`super::maintenance`]) only call in.
//!
//! In partition-owned delivery, ownership of a partition has two parts: `desired` (what the
//! assignment wants) and `owner` (who may hold its records now). When they differ and the
//! owner is alive, the owner is draining: it receives nothing new from the partition, its acks
//! still count, and the partition passes to the desired member once nothing of it is in flight
//! to the owner (acked, or expired by the ack timeout). A member that leaves gives up its
//! in-flight records at once, so its partitions move at once. Hence no record is ever in flight
//! to two members.
//!
//! In shared delivery there are no owners: every member may take records from every partition
//! of its topics, and the ledger leases each record to one member at a time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::acks::AckSet;
use super::assignment::assign;
use super::dead_letter_index::DeadLetterIndex;
use super::ledger::{EndedLease, Holding, Ledger};
use super::types::{
    DeadLetterJob, DeliveryMode, FlowLimits, GroupSettings, LeaseEnd, LeaseEndReason, MemberId, OffsetReset,
    SessionEnd, TopicPartition,
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
    /// Ended leases not yet told to the member.
    pub ended_leases: VecDeque<LeaseEnd>,
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
            ended_leases: VecDeque::new(),
        }
    }

    pub fn subscribes(&self, tp: &TopicPartition) -> bool {
        self.topics.contains(&*tp.topic)
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
    /// What is done, delivered and waiting.
    pub ledger: Ledger,
    /// Timestamp of the record at the committed offset (refreshed by maintenance).
    pub oldest_unacked_timestamp: Option<i64>,
    /// Where delivery stopped at offsets that cannot be read (see `damage`).
    pub stalled: Option<super::damage::Stalled>,
    /// Shared delivery: the member reading new records from the cursor now, so the others do
    /// not all read the same records and lose the race to register them.
    pub reader: Option<MemberId>,
}

impl PartitionState {
    pub fn at(committed: AckSet) -> Self {
        PartitionState {
            owner: None,
            owner_since: 0,
            ledger: Ledger::new(committed),
            oldest_unacked_timestamp: None,
            stalled: None,
            reader: None,
        }
    }
}

/// The partitions a member may take records from, and those it is draining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentView {
    /// Group generation when this view was made.
    pub generation: u64,
    /// Partitions the member owns (shared delivery: every partition it may take records from).
    pub partitions: Vec<TopicPartition>,
    /// Partitions being handed over: ack what is in flight, nothing new comes.
    pub revoking: Vec<TopicPartition>,
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
    /// This group's dead-lettered records not yet redriven or discarded.
    pub dead_letters: DeadLetterIndex,
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
            dead_letters: DeadLetterIndex::default(),
            jitter: super::backoff::Jitter::new(now_ms() as u64),
            topic_attempts: BTreeMap::new(),
            damaged_skipped: 0,
            offsets_past_end: 0,
        }
    }

    pub fn shared(&self) -> bool {
        self.settings.delivery == DeliveryMode::Shared
    }

    /// Topics any live member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }

    /// What `id` holds over all partitions.
    pub fn holding(&self, id: MemberId) -> Holding {
        let mut total = Holding::default();
        for partition in self.partitions.values() {
            total += partition.ledger.held(id);
        }
        total
    }

    /// True if `id` may take new records from `tp` now.
    pub fn delivers_from(&self, id: MemberId, tp: &TopicPartition) -> bool {
        let Some(member) = self.members.get(&id) else { return false };
        let Some(partition) = self.partitions.get(tp) else { return false };
        if self.shared() {
            member.subscribes(tp)
        } else {
            partition.owner == Some(id) && self.desired.get(tp) == Some(&id)
        }
    }

    /// Wakes the members that may take records from `tp`.
    pub fn wake_partition(&self, tp: &TopicPartition) {
        if self.shared() {
            for member in self.members.values().filter(|m| m.subscribes(tp)) {
                member.shared.wake.notify_one();
            }
        } else if let Some(owner) = self.partitions.get(tp).and_then(|p| p.owner).and_then(|o| self.members.get(&o)) {
            owner.shared.wake.notify_one();
        }
    }

    /// Tells members that their leases on these records ended.
    pub fn tell_ended(&mut self, tp: &TopicPartition, ended: &[EndedLease], reason: LeaseEndReason) {
        let mut by_member: BTreeMap<MemberId, Vec<u64>> = BTreeMap::new();
        for lease in ended {
            by_member.entry(lease.member).or_default().push(lease.offset);
        }
        for (id, offsets) in by_member {
            if let Some(member) = self.members.get_mut(&id) {
                member.ended_leases.push_back(LeaseEnd { tp: tp.clone(), offsets, reason });
                member.shared.wake.notify_one();
            }
        }
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
        let mut released = Vec::new();
        for (tp, partition) in &mut self.partitions {
            if partition.ledger.release_member(id) > 0 || partition.reader == Some(id) {
                released.push(tp.clone());
            }
            if partition.owner == Some(id) {
                partition.owner = None;
            }
            if partition.reader == Some(id) {
                partition.reader = None;
            }
        }
        self.rebalance(topology, offsets);
        for tp in &released {
            self.wake_partition(tp);
        }
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
        let wanted: Vec<TopicPartition> = if self.shared() {
            self.desired.clear();
            let topics = self.subscribed_topics();
            topology
                .iter()
                .filter(|(topic, _)| topics.contains(*topic))
                .flat_map(|(topic, &count)| {
                    let topic: Arc<str> = Arc::from(topic.as_str());
                    (0..count).map(move |p| TopicPartition::new(topic.clone(), p))
                })
                .collect()
        } else {
            self.desired = assign(&self.desired, &subscriptions, topology);
            self.desired.keys().cloned().collect()
        };
        let before = self.partitions.len();
        self.partitions.retain(|tp, _| topology.get(&*tp.topic).is_none_or(|&count| tp.partition < count));
        let dropped = before != self.partitions.len();
        for tp in wanted {
            if !self.partitions.contains_key(&tp) {
                let partition = Self::init_partition(&self.settings, &tp, offsets);
                self.partitions.insert(tp, partition);
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
            p.owner != want && !(owner_alive && p.ledger.in_flight() > 0)
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
    pub(crate) fn handover_later(&mut self, tps: &[TopicPartition]) {
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
        if self.shared() {
            if let Some(member) = self.members.get(&id) {
                view.partitions = self.partitions.keys().filter(|tp| member.subscribes(tp)).cloned().collect();
            }
            return view;
        }
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
}
