//! Consumer groups: members share the partitions of the topics they subscribe to, every
//! record is acked individually, and the group's committed offsets survive restarts.
//!
//! # Model
//! - A member joins with [`Broker::join_group`] and gets a [`GroupSession`] (the records and
//!   assignment changes to push) plus a [`MemberHandle`] (for acks, renewals, heartbeats). The
//!   session is the membership: when it ends, or the member is silent past its session
//!   timeout, the member leaves.
//! - Every partition of the subscribed topics is owned by at most one member; the sticky,
//!   balanced assignment is [`assignment::assign`]. A partition that has to move is handed over
//!   only when nothing of it is in flight to its old owner ([`state`]).
//! - Records are delivered in offset order per partition from the committed offset, at most
//!   `max_in_flight` unacked per member. The committed offset is the lowest offset not acked
//!   ([`acks`]). An unacked record is delivered again after the group's ack timeout, with its
//!   attempt count.
//!
//! # Durability
//! Committed offsets and acked ranges are written to `<data_dir>/groups/<group>.group`
//! ([`snapshot`]) every `commit_interval` while they change, on every reset, and at shutdown.
//! After a graceful restart no acked record is delivered again. After a crash, records acked
//! in the last `commit_interval` (default 1 s) before it may be delivered again: delivery is
//! at least once.
//!
//! # Lock order
//! The registry map is never held while a group's state is locked. A group's state lock may be
//! held while reading the topic registry and partition offsets (never the other way round), and
//! never across an `.await`.

pub mod acks;
pub mod admin;
pub mod assignment;
pub mod backoff;
pub mod config;
pub mod damage;
pub mod dead_letter;
pub(crate) mod dead_letter_index;
pub(crate) mod delivery;
pub mod journal;
pub(crate) mod ledger;
pub(crate) mod maintenance;
mod offset_map;
pub mod redrive;
pub mod session;
pub mod snapshot;
pub(crate) mod state;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use delivery::{AckOutcome, AckRefusal};
pub use session::{GroupDelivery, GroupEvent, GroupSession, MemberHandle};
pub use state::AssignmentView;
pub use types::{
    DeadLetterJob, DeadLettered, DeliveryMode, Failure, FlowLimits, GroupSettings, JoinSpec, LeaseEnd, LeaseEndReason,
    MemberId, NackSpec, OffsetReset, PolicyChange, RetryOverrides, SessionEnd, TopicPartition,
};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::partition::blocking;
use journal::Journal;
use state::{GroupState, Member, PartitionState};

/// Directory under the data dir that holds group files.
pub const GROUPS_DIR: &str = "groups";
/// Extension of a group file.
pub const GROUP_FILE_EXTENSION: &str = "group";

/// Limits on what a joining member may ask for.
const SESSION_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));
pub(crate) const ACK_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(24 * 3600));
const MAX_IN_FLIGHT_RECORDS: u32 = 1_000_000;

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    pub(crate) id: Arc<str>,
    path: PathBuf,
    state: Mutex<GroupState>,
    /// Serialises file writes so an older snapshot never replaces a newer one.
    flush: tokio::sync::Mutex<()>,
    /// The dead-letter journal; used only by flushes (on the blocking pool), under `flush`.
    journal: Arc<Mutex<Journal>>,
}

impl Group {
    fn new(id: &str, path: PathBuf, state: GroupState, journal: Journal) -> Self {
        Group {
            id: Arc::from(id),
            path,
            state: Mutex::new(state),
            flush: tokio::sync::Mutex::new(()),
            journal: Arc::new(Mutex::new(journal)),
        }
    }

    /// A std mutex: every holder does bounded in-memory work and never awaits.
    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes what changed since the last write: new dead-letter changes are appended to the
    /// journal (fsynced), then the group file is replaced atomically. Crash guarantee: a crash
    /// leaves the previous or the new group file, with a journal that holds at least every
    /// change the group file reflects (see [`journal`]).
    pub(crate) async fn flush(&self) -> Result<()> {
        let _serialised = self.flush.lock().await;
        let (bytes, committed, entries) = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            let entries = state.dead_letters.take_unsaved();
            let (snapshot, committed) = snapshot_of(&state);
            (snapshot::encode(&snapshot), committed, entries)
        };
        let (path, journal) = (self.path.clone(), self.journal.clone());
        let (written, entries) = blocking(move || {
            let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
            let appended = journal.append(&entries);
            // Appended changes are not appended twice, even if the group file write fails.
            let unsaved = if appended.is_err() { entries } else { Vec::new() };
            let written = match appended {
                Ok(()) => sluice_storage::store::write_atomic(&path, &bytes).map_err(Error::from),
                Err(e) => Err(Error::from(e)),
            };
            if written.is_ok() && journal.wants_compaction() {
                // The group file now reflects every change: the journal may be rewritten.
                if let Err(e) = journal.compact() {
                    tracing::warn!(path = %path.display(), cause = %e, "compacting the dead-letter journal failed; will retry");
                }
            }
            Ok((written, unsaved))
        })
        .await?;
        let mut state = self.lock();
        match &written {
            Ok(()) => state.receipt_durable(&committed),
            Err(_) => {
                state.dead_letters.unsave(entries);
                state.dirty = true;
            }
        }
        written
    }
}

/// What the group file holds now, and the committed offsets in it.
fn snapshot_of(state: &GroupState) -> (snapshot::GroupSnapshot, Vec<(TopicPartition, u64)>) {
    let (now, wall_now) = (std::time::Instant::now(), state::now_ms());
    let committed = state.partitions.iter().map(|(tp, p)| (tp.clone(), p.ledger.committed())).collect();
    let partitions = state
        .partitions
        .iter()
        .map(|(tp, p)| snapshot::PartitionSnapshot {
            tp: tp.clone(),
            acks: p.ledger.acks().clone(),
            redriven: p.ledger.redriven().collect(),
            attempts: p.ledger.attempts().collect(),
            backoffs: p
                .ledger
                .backoffs()
                .map(|(offset, until)| {
                    let left = until.saturating_duration_since(now).as_millis() as i64;
                    (offset, wall_now.saturating_add(left))
                })
                .collect(),
            dead_lettering: p
                .ledger
                .dead_lettering()
                .filter_map(|(offset, pending)| {
                    Some(snapshot::DeadLetteringSnapshot {
                        offset,
                        attempts: pending.attempts,
                        failure: pending.failure.clone()?,
                        position: pending.position,
                    })
                })
                .collect(),
        })
        .collect();
    let snapshot = snapshot::GroupSnapshot {
        settings: state.settings.clone(),
        partitions,
        dead_letters: Vec::new(),
        journal_seq: state.dead_letters.next_seq(),
    };
    (snapshot, committed)
}

/// One record's state from the group file, to put back in its ledger.
enum Restoration {
    Redrive,
    Backoff(std::time::Instant),
    DeadLettering(snapshot::DeadLetteringSnapshot),
    Attempts(u32),
}

/// Rebuilds a group's state from its group file and dead-letter journal.
fn restore(loaded: snapshot::GroupSnapshot, journal: &[journal::Entry]) -> GroupState {
    let mut state = GroupState::new(loaded.settings);
    let (now, wall_now) = (std::time::Instant::now(), state::now_ms());
    for p in loaded.partitions {
        let mut partition = PartitionState::at(p.acks);
        // Applied in offset order (the ledger's pending map takes records in order cheaply;
        // see offset_map.rs). A stable sort keeps the order of the lists for one offset, and
        // each restoration touches only its own offset, so the result is the same.
        let mut restorations: Vec<(u64, Restoration)> = Vec::new();
        restorations.extend(p.redriven.into_iter().map(|offset| (offset, Restoration::Redrive)));
        // A record waiting out its backoff waits out the rest of it after the restart
        // (wall-clock time, so the broker's downtime counts), instead of being delivered at once.
        restorations.extend(p.backoffs.into_iter().map(|(offset, until_ms)| {
            let left = std::time::Duration::from_millis(until_ms.saturating_sub(wall_now).max(0) as u64);
            (offset, Restoration::Backoff(now + left))
        }));
        restorations.extend(p.dead_lettering.into_iter().map(|d| (d.offset, Restoration::DeadLettering(d))));
        restorations.extend(p.attempts.into_iter().map(|(offset, attempts)| (offset, Restoration::Attempts(attempts))));
        restorations.sort_by_key(|(offset, _)| *offset);
        let ledger = &mut partition.ledger;
        for (offset, restoration) in restorations {
            match restoration {
                Restoration::Redrive => ledger.restore_redrive(offset),
                Restoration::Backoff(until) => ledger.restore_backoff(offset, until),
                Restoration::DeadLettering(d) => {
                    ledger.restore_dead_lettering(offset, d.attempts, d.failure, d.position)
                }
                Restoration::Attempts(attempts) => ledger.restore_attempts(offset, attempts),
            }
        }
        state.partitions.insert(p.tp, partition);
    }
    // Files up to v4 held the dead letters: they go to the journal at the next flush.
    for (key, letter) in loaded.dead_letters {
        state.dead_letters.insert(key, letter);
        state.dirty = true;
    }
    state.dead_letters.advance_seq(loaded.journal_seq);
    for entry in journal {
        state.dead_letters.replay(entry);
        // Changes the group file does not reflect yet (a crash came between the journal append
        // and the group file's replacement).
        if entry.seq == 0 || entry.seq < loaded.journal_seq {
            continue;
        }
        let Some(partition) = state.partitions.get_mut(&entry.letter.source) else { continue };
        match entry.change {
            journal::Change::Added => partition.ledger.restore_dead_lettered(entry.letter.source_offset),
            journal::Change::Redriven => partition.ledger.restore_redrive(entry.letter.source_offset),
            journal::Change::Discarded => {}
        }
        state.dirty = true;
    }
    // Copies that were being written are written now.
    let jobs: Vec<DeadLetterJob> = state
        .partitions
        .iter()
        .flat_map(|(tp, p)| {
            p.ledger.dead_lettering().filter_map(move |(offset, pending)| {
                Some(DeadLetterJob {
                    tp: tp.clone(),
                    offset,
                    attempts: pending.attempts,
                    failure: pending.failure.clone()?,
                    position: pending.position,
                    failures: 0,
                    restored: true,
                })
            })
        })
        .collect();
    state.dead_letter_jobs.extend(jobs);
    state
}

/// What benches/group_flush.rs measures; not part of the API.
#[doc(hidden)]
pub mod bench_hooks {
    use super::*;

    /// A group with one partition and many waiting dead letters.
    #[derive(Debug)]
    pub struct Fixture(GroupState);

    impl Fixture {
        /// A group holding `dead_letters` dead letters, all changes already journaled.
        pub fn with_dead_letters(dead_letters: u64) -> Fixture {
            let mut state = GroupState::new(crate::config::GroupDefaults::default().settings());
            let source = TopicPartition::new(Arc::from("orders"), 0);
            state.partitions.insert(source.clone(), PartitionState::at(acks::AckSet::at(dead_letters)));
            let dlq = TopicPartition::new(Arc::from("orders.dlq"), 0);
            for offset in 0..dead_letters {
                let letter = DeadLettered { source: source.clone(), source_offset: offset, at_ms: offset as i64 };
                state.dead_letters.insert((dlq.clone(), offset), letter);
            }
            let _journaled = state.dead_letters.take_unsaved();
            Fixture(state)
        }

        /// What a flush does while it holds the group lock: take the new journal entries and
        /// encode the group file. Returns the bytes encoded.
        pub fn flush_under_lock(&mut self) -> usize {
            let entries = self.0.dead_letters.take_unsaved();
            let (snapshot, _) = snapshot_of(&self.0);
            snapshot::encode(&snapshot).len() + entries.len()
        }

        /// What a flush did under the lock before the journal (group file v4): copy every dead
        /// letter into the group file and encode it.
        pub fn whole_file_under_lock(&mut self) -> usize {
            let (mut snapshot, _) = snapshot_of(&self.0);
            snapshot.dead_letters = self.0.dead_letters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            snapshot::encode(&snapshot).len()
        }
    }
}

/// Every group of the broker.
#[derive(Debug)]
pub(crate) struct Groups {
    dir: PathBuf,
    map: RwLock<BTreeMap<String, Arc<Group>>>,
    next_member: AtomicU64,
    /// Wakes the dead-letter worker when a group queues a record.
    pub(crate) dead_letter_wake: tokio::sync::Notify,
}

impl Groups {
    /// Loads every group file under `<data_dir>/groups`.
    pub(crate) fn load(data_dir: &std::path::Path, defaults: &GroupSettings) -> Result<Self> {
        let dir = data_dir.join(GROUPS_DIR);
        let io =
            |e| Error::Storage(sluice_storage::Error::Io { operation: "reading groups", path: dir.clone(), source: e });
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(GROUP_FILE_EXTENSION) {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
            if crate::topic_name::validate_group(&id).is_err() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io)?;
            let loaded = snapshot::decode(&bytes, defaults)
                .map_err(|reason| Error::BadMetadata { path: path.clone(), reason: format!("group file: {reason}") })?;
            let (journal, entries) = Journal::open(path.with_extension(journal::JOURNAL_EXTENSION))?;
            let state = restore(loaded, &entries);
            map.insert(id.clone(), Arc::new(Group::new(&id, path, state, journal)));
        }
        Ok(Groups {
            dir,
            map: RwLock::new(map),
            next_member: AtomicU64::new(1),
            dead_letter_wake: tokio::sync::Notify::new(),
        })
    }

    /// Moves every group position that lies past its partition's end back to the end (see
    /// [`damage`]); returns how many moved.
    pub(crate) fn clamp_to_ends(&self, offsets: state::Offsets<'_>) -> u64 {
        let mut moved = 0;
        for group in self.all() {
            let mut state = group.lock();
            let tps: Vec<TopicPartition> = state.partitions.keys().cloned().collect();
            for tp in tps {
                if let Some((_, end)) = offsets(&tp)
                    && state.clamp_to_end(&tp, end)
                {
                    moved += 1;
                }
            }
        }
        moved
    }

    pub(crate) fn all(&self) -> Vec<Arc<Group>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Group>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// A new group, not written yet (its first flush writes it).
    fn fresh(&self, id: &str, settings: GroupSettings) -> Arc<Group> {
        let path = self.dir.join(format!("{id}.{GROUP_FILE_EXTENSION}"));
        let mut state = GroupState::new(settings);
        state.dirty = true;
        // A journal left by a deleted group of the same name is overwritten.
        let journal = Journal::empty(path.with_extension(journal::JOURNAL_EXTENSION));
        Arc::new(Group::new(id, path, state, journal))
    }

    pub(crate) fn get_or_create(&self, id: &str, settings: GroupSettings) -> Arc<Group> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(id.to_owned()).or_insert_with(|| self.fresh(id, settings)).clone()
    }

    /// Creates a group; `None` if one of that name exists.
    pub(crate) fn create(&self, id: &str, settings: GroupSettings) -> Option<Arc<Group>> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(id) {
            return None;
        }
        let group = self.fresh(id, settings);
        map.insert(id.to_owned(), group.clone());
        Some(group)
    }

    fn remove(&self, id: &str) -> Option<Arc<Group>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner).remove(id)
    }
}

pub(crate) fn check_range(name: &str, value: Duration, (min, max): (Duration, Duration)) -> Result<Duration> {
    if value < min || value > max {
        return Err(Error::InvalidArgument(format!("{name} must be between {min:?} and {max:?}, got {value:?}")));
    }
    Ok(value)
}

impl Broker {
    pub(crate) fn groups(&self) -> &Groups {
        &self.inner.groups
    }

    /// Start and end offsets of a partition, if it exists.
    pub(crate) fn partition_offsets(&self, tp: &TopicPartition) -> Option<(u64, u64)> {
        self.topic(&tp.topic).ok()?.partition(tp.partition).ok().map(|p| p.offsets())
    }

    /// Partition counts of the named topics that exist.
    pub(crate) fn topology<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u32> {
        topics
            .into_iter()
            .filter_map(|name| self.topic(name).ok().map(|t| (name.to_owned(), t.partitions().len() as u32)))
            .collect()
    }

    /// The attempt limits topics set for their records, for the topics in `topology`.
    pub(crate) fn topic_attempt_limits(&self, topology: &BTreeMap<String, u32>) -> BTreeMap<Arc<str>, u32> {
        topology
            .keys()
            .filter_map(|name| {
                let topic = self.topic(name).ok()?;
                let limit = topic.config().max_delivery_attempts?;
                Some((topic.name.clone(), limit))
            })
            .collect()
    }

    /// Topology covering everything the group subscribes to or holds offsets for.
    pub(crate) fn group_topology(&self, state: &GroupState, extra: &[String]) -> BTreeMap<String, u32> {
        let mut names: BTreeSet<String> = state.subscribed_topics();
        names.extend(state.partitions.keys().map(|tp| tp.topic.to_string()));
        names.extend(extra.iter().cloned());
        self.topology(names.iter().map(String::as_str))
    }

    /// Adds a member to a group (creating the group on first use) and rebalances.
    pub async fn join_group(&self, spec: JoinSpec) -> Result<GroupSession> {
        self.check_open()?;
        crate::topic_name::validate_group(&spec.group)?;
        if spec.topics.is_empty() {
            return Err(Error::InvalidArgument("join names no topics to consume".into()));
        }
        for topic in &spec.topics {
            self.topic(topic)?;
        }
        let defaults = &self.inner.config.groups;
        let session_timeout = check_range(
            "session_timeout",
            spec.session_timeout.unwrap_or(defaults.session_timeout),
            SESSION_TIMEOUT_RANGE,
        )?;
        let max_records = spec.max_in_flight_records.unwrap_or(defaults.max_in_flight_records);
        if max_records == 0 || max_records > MAX_IN_FLIGHT_RECORDS {
            return Err(Error::InvalidArgument(format!(
                "max_in_flight_records must be between 1 and {MAX_IN_FLIGHT_RECORDS}, got {max_records}"
            )));
        }
        let max_bytes = spec.max_in_flight_bytes.unwrap_or(defaults.max_in_flight_bytes).max(1);
        config::validate(&spec.policy, &spec.topics, false)?;
        let mut settings = defaults.settings();
        config::apply(&mut settings, &spec.policy);
        config::check_combination(&settings)?;
        let group = self.groups().get_or_create(&spec.group, settings);
        let id = MemberId(self.groups().next_member.fetch_add(1, Ordering::Relaxed));
        let mut member = Member::new(
            spec.member_name.clone(),
            spec.topics.iter().cloned().collect(),
            FlowLimits { max_records, max_bytes },
            session_timeout,
        );
        member.max_lease_expiries = spec.max_lease_expiries.unwrap_or(defaults.max_lease_expiries);
        member.wants_receipts = spec.ack_receipts;
        let shared = member.shared.clone();
        {
            let mut state = group.lock();
            config::check_join(&spec.group, &state.settings, &spec.policy)?;
            let topology = self.group_topology(&state, &spec.topics);
            state.topic_attempts = self.topic_attempt_limits(&topology);
            let offsets = |tp: &TopicPartition| self.partition_offsets(tp);
            state.join(id, member, &topology, &offsets);
        }
        tracing::info!(group = %spec.group, member = %id, name = %spec.member_name, topics = ?spec.topics, "member joined");
        let handle = MemberHandle { broker: self.clone(), group, member: id, session_timeout };
        Ok(GroupSession::new(handle, shared))
    }

    /// Removes a member and rebalances (no-op if already gone).
    pub(crate) fn remove_member(&self, group: &Group, member: MemberId, reason: SessionEnd) {
        let mut state = group.lock();
        if !state.members.contains_key(&member) {
            return;
        }
        tracing::info!(group = %group.id, member = %member, %reason, "member left");
        let topology = self.group_topology(&state, &[]);
        let offsets = |tp: &TopicPartition| self.partition_offsets(tp);
        state.leave(member, reason, &topology, &offsets);
    }

    /// Writes every changed group file (maintenance does this each `commit_interval`;
    /// shutdown does it last).
    pub async fn flush_groups(&self) -> Result<()> {
        let mut first_error = None;
        for group in self.groups().all() {
            if let Err(e) = group.flush().await {
                tracing::warn!(group = %group.id, cause = %e, "writing group offsets failed; will retry");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Ends every session (shutdown).
    pub(crate) fn end_all_sessions(&self, reason: &SessionEnd) {
        for group in self.groups().all() {
            let state = group.lock();
            for member in state.members.values() {
                let _already = member.shared.ended.set(reason.clone());
                member.shared.wake.notify_one();
            }
        }
    }
}
