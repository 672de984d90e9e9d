//! A member's session: the async loop that turns the group state's plan into deliveries, and
//! the handle its inbound side uses to ack, renew and heartbeat.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, select_all};
use sluice_storage::{Batch, RecordStart};

use super::delivery::{AckOutcome, Step};
use super::ledger::Pick;
use super::state::AssignmentView;
use super::types::{LeaseEnd, MemberId, NackSpec, SessionEnd, TopicPartition};
use super::{Group, state::MemberShared};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::partition::PartitionHandle;

/// Records delivered to a member from one partition.
#[derive(Debug, Clone)]
pub struct GroupDelivery {
    /// Where they come from.
    pub tp: TopicPartition,
    /// Group generation at delivery; acks carry it back.
    pub generation: u64,
    /// Whole batches holding the records (other records in them are not part of this delivery).
    pub batches: Vec<Batch>,
    /// The delivered offsets in ascending order, each with its delivery attempt (1 = first).
    pub records: Vec<(u64, u32)>,
    /// Where the first delivered record starts in its batch, when known: encoding the delivery
    /// walks the batches from there, not from their first record.
    pub first: Option<RecordStart>,
}

/// What a member's stream carries, in order.
#[derive(Debug, Clone)]
pub enum GroupEvent {
    /// The member's partitions changed.
    Assignment(AssignmentView),
    /// Records to process and ack.
    Records(GroupDelivery),
    /// Records whose lease ended without an ack (the ack timeout passed, an operator reset the
    /// offsets, the records are gone or were passed over): see [`LeaseEnd`].
    LeaseEnded(LeaseEnd),
    /// Committed offsets of the member's partitions that are now durable (the group file was
    /// written with them): everything below each was acked and survives any crash.
    AckReceipt(Vec<(TopicPartition, u64)>),
}

/// The inbound side of a session: cheap to clone, used for acks, renewals and heartbeats.
#[derive(Debug, Clone)]
pub struct MemberHandle {
    pub(crate) broker: Broker,
    pub(crate) group: Arc<Group>,
    pub(crate) member: MemberId,
    pub(crate) session_timeout: std::time::Duration,
}

impl MemberHandle {
    /// The member's effective session timeout.
    pub fn session_timeout(&self) -> std::time::Duration {
        self.session_timeout
    }

    /// The member's id.
    pub fn member_id(&self) -> MemberId {
        self.member
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.group.id
    }

    /// Records that the member is alive.
    pub fn heartbeat(&self) {
        if let Some(member) = self.group.lock().members.get_mut(&self.member) {
            member.last_seen = Instant::now();
        }
    }

    /// Acks offsets (ranges of first..=last) of one partition. Refused offsets change nothing.
    pub fn ack(&self, tp: &TopicPartition, generation: u64, ranges: &[(u64, u64)]) -> AckOutcome {
        let mut state = self.group.lock();
        if let Some(member) = state.members.get_mut(&self.member) {
            member.last_seen = Instant::now();
        }
        state.ack(self.member, tp, generation, ranges)
    }

    /// Fails offsets (ranges of first..=last) of one partition: they are delivered again after a
    /// backoff, or dead-lettered when out of attempts or not retryable.
    pub fn nack(&self, tp: &TopicPartition, generation: u64, ranges: &[(u64, u64)], nack: &NackSpec) -> AckOutcome {
        let now = Instant::now();
        let (outcome, queued) = {
            let mut state = self.group.lock();
            if let Some(member) = state.members.get_mut(&self.member) {
                member.last_seen = now;
            }
            let outcome = state.nack(self.member, tp, generation, ranges, nack, now);
            (outcome, !state.dead_letter_jobs.is_empty())
        };
        if queued {
            self.broker.groups().dead_letter_wake.notify_one();
        }
        outcome
    }

    /// Extends the ack deadline of the member's in-flight records in `ranges` by the ack timeout.
    pub fn renew(&self, tp: &TopicPartition, generation: u64, ranges: &[(u64, u64)]) -> AckOutcome {
        let now = Instant::now();
        let mut state = self.group.lock();
        if let Some(member) = state.members.get_mut(&self.member) {
            member.last_seen = now;
        }
        state.renew(self.member, tp, generation, ranges, now)
    }

    /// Ends the session: in-flight records become deliverable to others and partitions move.
    pub fn leave(&self, reason: SessionEnd) {
        self.broker.remove_member(&self.group, self.member, reason);
    }
}

/// The outbound side of a session: produces the member's events.
#[derive(Debug)]
pub struct GroupSession {
    handle: MemberHandle,
    shared: Arc<MemberShared>,
    partitions: BTreeMap<TopicPartition, PartitionHandle>,
    /// The batches of the last read, whose records past the member's in-flight limit are
    /// delivered next without reading them again.
    carried: Option<Carried>,
}

/// The batches of a read not delivered in full, and where the next record starts if the
/// read stopped at one.
#[derive(Debug)]
struct Carried {
    tp: TopicPartition,
    batches: Vec<Batch>,
    next: Option<RecordStart>,
}

/// Byte budget of one read for a member, and of the records of one delivery: flow control
/// decides how many records are taken, so a larger read would mostly be read again later, and
/// a delivery stays far below the 4 MiB that stock gRPC clients accept.
const GROUP_READ_BYTES: u64 = 1 << 20;

impl GroupSession {
    pub(crate) fn new(handle: MemberHandle, shared: Arc<MemberShared>) -> Self {
        GroupSession { handle, shared, partitions: BTreeMap::new(), carried: None }
    }

    /// The inbound handle of this session.
    pub fn handle(&self) -> MemberHandle {
        self.handle.clone()
    }

    fn partition(&mut self, tp: &TopicPartition) -> Result<PartitionHandle> {
        if let Some(handle) = self.partitions.get(tp) {
            return Ok(handle.clone());
        }
        let handle = self.handle.broker.topic(&tp.topic)?.partition(tp.partition)?;
        self.partitions.insert(tp.clone(), handle.clone());
        Ok(handle)
    }

    /// The next event: an assignment change, or records. Fails with
    /// [`Error::SessionEnded`] once the member is gone (left, timed out, group deleted, or
    /// broker shutdown).
    pub async fn next_event(&mut self) -> Result<GroupEvent> {
        let shutdown = self.handle.broker.shutdown_token();
        loop {
            if let Some(end) = self.shared.ended.get() {
                return Err(Error::SessionEnded(end.clone()));
            }
            if shutdown.is_cancelled() {
                return Err(Error::SessionEnded(SessionEnd::Shutdown));
            }
            let step = {
                let broker = &self.handle.broker;
                let offsets = |tp: &TopicPartition| broker.partition_offsets(tp);
                let mut state = self.handle.group.lock();
                if !state.members.contains_key(&self.handle.member) {
                    return Err(Error::SessionEnded(SessionEnd::Left));
                }
                let queued = state.members.get_mut(&self.handle.member).and_then(|m| m.views.pop_front());
                if let Some(view) = queued {
                    return Ok(GroupEvent::Assignment(view));
                }
                let ended = state.members.get_mut(&self.handle.member).and_then(|m| m.ended_leases.pop_front());
                if let Some(ended) = ended {
                    return Ok(GroupEvent::LeaseEnded(ended));
                }
                let receipt = state.members.get_mut(&self.handle.member).map(|m| std::mem::take(&mut m.receipt));
                if let Some(receipt) = receipt.filter(|r| !r.is_empty()) {
                    return Ok(GroupEvent::AckReceipt(receipt));
                }
                state.plan(self.handle.member, &offsets)
            };
            match step {
                Step::Read { tp, from, end, max_records, max_bytes } => {
                    let read = self.read_new(tp.clone(), from, end, max_records, max_bytes).await;
                    // Shared delivery: whatever came of the read, others may read there now.
                    self.handle.group.lock().end_read(self.handle.member, &tp);
                    if let Some(delivery) = read? {
                        return Ok(GroupEvent::Records(delivery));
                    }
                }
                Step::Redeliver { tp, offsets } => {
                    if let Some(delivery) = self.redeliver(tp, offsets).await? {
                        return Ok(GroupEvent::Records(delivery));
                    }
                }
                Step::Wait { at_end } => {
                    let mut waits: Vec<BoxFuture<'static, ()>> = Vec::with_capacity(at_end.len() + 1);
                    for (tp, seen_end) in at_end {
                        let mut end = self.partition(&tp)?.watch_end();
                        waits.push(
                            async move {
                                let _changed_or_closed = end.wait_for(|end| *end > seen_end).await;
                            }
                            .boxed(),
                        );
                    }
                    if waits.is_empty() {
                        waits.push(std::future::pending().boxed());
                    }
                    tokio::select! {
                        () = self.shared.wake.notified() => {}
                        _ = select_all(waits) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// The carried batches still holding `from`, if they are for `tp`, and where to resume the
    /// walk of the first (at `from`, if the carried read stopped there).
    fn carried_from(&mut self, tp: &TopicPartition, from: u64) -> Option<(Vec<Batch>, Option<RecordStart>)> {
        let Carried { tp: carried_tp, batches, next } = self.carried.take()?;
        if &carried_tp != tp {
            return None;
        }
        let rest: Vec<Batch> = batches.into_iter().filter(|b| b.next_offset() > from).collect();
        let first = rest.first()?;
        (first.base_offset() <= from).then_some((rest, next.filter(|next| next.offset == from)))
    }

    fn read_budget(&self, max_bytes: u64) -> usize {
        let cap = self.handle.broker.config().max_fetch_bytes as u64;
        max_bytes.clamp(1, cap) as usize
    }

    async fn read_new(
        &mut self,
        tp: TopicPartition,
        from: u64,
        end: u64,
        max_records: u32,
        max_bytes: u64,
    ) -> Result<Option<GroupDelivery>> {
        let max_bytes = max_bytes.min(GROUP_READ_BYTES);
        let (batches, resume) = match self.carried_from(&tp, from) {
            Some(carried) => carried,
            None => {
                let handle = self.partition(&tp)?;
                match handle.read(from, self.read_budget(max_bytes)).await {
                    Ok(read) => (read.batches, None),
                    // Retention moved the start meanwhile; the next plan moves the cursor.
                    Err(Error::OffsetOutOfRange { .. }) => return Ok(None),
                    Err(e) => return self.damaged(&tp, from, e).map(|()| None),
                }
            }
        };
        let mut picks = Vec::new();
        let mut next = from;
        let mut bytes = 0u64;
        // Acks above the cursor exist only after a restart or reset; copy them only then.
        let already_done = {
            let state = self.handle.group.lock();
            state
                .partitions
                .get(&tp)
                .filter(|p| p.ledger.acks().acked().end().is_some_and(|end| end > from))
                .map(|p| p.ledger.acks().clone())
        };
        // Where the walk stopped short of a batch's end: the next read resumes there.
        let mut stopped_at = None;
        'batches: for batch in batches.iter().filter(|b| b.next_offset() > from) {
            let views = match resume {
                Some(start) if batch.base_offset() <= start.offset => batch.views_from(start),
                _ => batch.views(),
            };
            for record in views {
                let record = record.map_err(|reason| Error::Internal(format!("stored record: {reason}")))?;
                if record.offset < from {
                    continue;
                }
                if record.offset >= end || picks.len() as u32 >= max_records {
                    stopped_at = Some(record.start());
                    break 'batches;
                }
                let size = (record.key.map_or(0, <[u8]>::len) + record.value.len()) as u64;
                if !picks.is_empty() && bytes + size > max_bytes {
                    stopped_at = Some(record.start());
                    break 'batches;
                }
                next = record.offset + 1;
                if already_done.as_ref().is_some_and(|acks| acks.is_done(record.offset)) {
                    continue;
                }
                bytes += size;
                picks.push(Pick {
                    offset: record.offset,
                    bytes: size,
                    timestamp: record.timestamp,
                    position: record.position,
                });
            }
        }
        if next == from {
            return Ok(None);
        }
        if batches.last().is_some_and(|b| b.next_offset() > next) {
            self.carried = Some(Carried { tp: tp.clone(), batches: batches.clone(), next: stopped_at });
        }
        let first = picks.first().map(Pick::start);
        let generation = {
            let mut state = self.handle.group.lock();
            state.register_read(self.handle.member, &tp, from, next, &picks, Instant::now())
        };
        match generation {
            Some((generation, records)) if !records.is_empty() => {
                Ok(Some(GroupDelivery { tp, generation, batches, records, first }))
            }
            _ => Ok(None),
        }
    }

    /// A read of `tp` at `from` failed with `error`: damage stalls or skips that partition
    /// only (the session and its other partitions go on); anything else ends the session.
    fn damaged(&mut self, tp: &TopicPartition, from: u64, error: Error) -> Result<()> {
        let (from, to, reason) = match error {
            // Skipping to `to` must move the read on; a range that does not (a damaged index
            // pointing back before it) stops the partition instead of looping.
            Error::DataLoss { from: bad, to, reason, .. } if to > from => (bad, to, reason),
            Error::DataLoss { reason, .. } => (from, from, reason),
            // No range is known: the partition stops at the read's offset.
            Error::Corrupt { reason, .. } => (from, from, reason),
            other => return Err(other),
        };
        self.carried = None;
        self.handle.group.lock().on_damage(&self.handle.group.id, tp, from, to, &reason);
        Ok(())
    }

    async fn redeliver(&mut self, tp: TopicPartition, offsets: Vec<u64>) -> Result<Option<GroupDelivery>> {
        let Some(&first) = offsets.first() else { return Ok(None) };
        let handle = self.partition(&tp)?;
        let budget = self.read_budget(u64::MAX);
        let batches = match handle.read(first, budget.min(1 << 20)).await {
            Ok(read) => read.batches,
            Err(Error::OffsetOutOfRange { start, .. }) => {
                let gone: Vec<u64> = offsets.into_iter().filter(|&o| o < start).collect();
                self.handle.group.lock().drop_missing(&tp, &gone);
                return Ok(None);
            }
            Err(e) => return self.damaged(&tp, first, e).map(|()| None),
        };
        let mut picks = Vec::with_capacity(offsets.len());
        let mut wanted = offsets.iter().peekable();
        for batch in &batches {
            for record in batch.views() {
                let record = record.map_err(|reason| Error::Internal(format!("stored record: {reason}")))?;
                while wanted.peek().is_some_and(|&&o| o < record.offset) {
                    wanted.next();
                }
                if wanted.peek() == Some(&&record.offset) {
                    let size = (record.key.map_or(0, <[u8]>::len) + record.value.len()) as u64;
                    picks.push(Pick {
                        offset: record.offset,
                        bytes: size,
                        timestamp: record.timestamp,
                        position: record.position,
                    });
                    wanted.next();
                }
            }
        }
        let (generation, records) = {
            let mut state = self.handle.group.lock();
            let records = state.register_redelivery(self.handle.member, &tp, &picks, Instant::now());
            (state.generation, records)
        };
        if records.is_empty() {
            return Ok(None);
        }
        let first = picks.first().map(Pick::start);
        Ok(Some(GroupDelivery { tp, generation, batches, records, first }))
    }
}
