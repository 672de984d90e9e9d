//! Operating on groups: list, describe (with lag), reset offsets, delete.

use super::ledger::Delivery;
use super::state::now_ms;
use super::types::{GroupSettings, MemberId, SessionEnd, TopicPartition};
use crate::broker::Broker;
use crate::error::{Error, Result};

/// A group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Group id.
    pub group: String,
    /// Live members.
    pub members: u32,
    /// Partitions with offsets.
    pub partitions: u32,
    /// Current generation.
    pub generation: u64,
}

/// A member in a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub member_id: MemberId,
    /// The name it gave.
    pub name: String,
    /// Topics it subscribes to.
    pub topics: Vec<String>,
    /// Partitions it owns.
    pub partitions: Vec<TopicPartition>,
    /// Partitions it is handing over.
    pub revoking: Vec<TopicPartition>,
    /// Records delivered to it and not acked.
    pub in_flight: u32,
}

/// A partition in a description.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    /// The partition.
    pub tp: TopicPartition,
    /// Member owning it now, if any.
    pub owner: Option<MemberId>,
    /// Lowest offset not acked.
    pub committed: u64,
    /// The partition's end offset.
    pub end_offset: u64,
    /// Records not yet acked: `end_offset - committed` (acked records above it still count).
    pub lag: u64,
    /// Age of the oldest unacked record, in seconds (0 without lag).
    pub lag_seconds: f64,
    /// Records delivered and not acked.
    pub in_flight: u32,
    /// Records waiting to be delivered again.
    pub awaiting_redelivery: u32,
    /// Where delivery stopped at offsets that cannot be read, if it did.
    pub stalled: Option<super::damage::Stalled>,
}

/// Everything about a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// Current generation.
    pub generation: u64,
    /// Settings.
    pub settings: GroupSettings,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Partitions with offsets.
    pub partitions: Vec<PartitionLag>,
    /// Rebalances since the broker started.
    pub rebalances: u64,
    /// Records acked since the broker started.
    pub acks: u64,
    /// Records nacked since the broker started.
    pub nacks: u64,
    /// Deliveries after the first since the broker started.
    pub redeliveries: u64,
    /// Records dead-lettered since the broker started, per source topic.
    pub dead_lettered: Vec<(String, u64)>,
    /// Dead-lettered records not yet redriven.
    pub dead_letter_depth: u64,
    /// When the oldest of those was dead-lettered (ms since the Unix epoch).
    pub oldest_dead_letter_ms: Option<i64>,
    /// Unreadable records passed over (`skip_damaged`) since the broker started.
    pub damaged_skipped: u64,
    /// Committed offsets found past their partition's end and moved to it, since start.
    pub offsets_past_end: u64,
    /// Dead letters whose copy could not be written yet (retried with backoff).
    pub dead_letters_failing: u64,
    /// Why the most recent of those failed.
    pub dead_letter_error: Option<String>,
    /// Failed tries to write dead-letter copies since the broker started.
    pub dead_letter_failures: u64,
}

/// Where a reset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// The first retained record.
    Earliest,
    /// The end of the log.
    Latest,
    /// The first record at or after this timestamp (ms); the end if none.
    Timestamp(i64),
    /// An exact offset (must lie within the partition's range).
    Offset(u64),
}

/// A reset of a group's offsets in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetSpec {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partitions to reset; empty: all.
    pub partitions: Vec<u32>,
    /// Where to.
    pub target: ResetTarget,
    /// Reset even while members are connected (their in-flight records are forgotten).
    pub force: bool,
}

impl Broker {
    /// Every group, by id.
    pub fn list_groups(&self) -> Vec<GroupSummary> {
        self.groups()
            .all()
            .iter()
            .map(|group| {
                let state = group.lock();
                GroupSummary {
                    group: group.id.to_string(),
                    members: state.members.len() as u32,
                    partitions: state.partitions.len() as u32,
                    generation: state.generation,
                }
            })
            .collect()
    }

    /// One group's members, partitions, offsets and lag.
    pub fn describe_group(&self, id: &str) -> Result<GroupDescription> {
        let group = self.groups().get(id).ok_or_else(|| Error::GroupNotFound(id.to_owned()))?;
        Ok(self.describe(&group))
    }

    /// Descriptions of every group (for metrics).
    pub fn describe_groups(&self) -> Vec<GroupDescription> {
        self.groups().all().iter().map(|g| self.describe(g)).collect()
    }

    fn describe(&self, group: &super::Group) -> GroupDescription {
        let now = now_ms();
        let state = group.lock();
        let in_flight = state.in_flight_by_member();
        let members = state
            .members
            .iter()
            .map(|(&id, member)| {
                let view = state.view(id);
                MemberInfo {
                    member_id: id,
                    name: member.name.clone(),
                    topics: member.topics.iter().cloned().collect(),
                    partitions: view.partitions,
                    revoking: view.revoking,
                    in_flight: in_flight.get(&id).copied().unwrap_or(0),
                }
            })
            .collect();
        let partitions = state
            .partitions
            .iter()
            .map(|(tp, p)| {
                let end_offset = self.partition_offsets(tp).map_or(0, |(_, end)| end);
                let committed = p.ledger.committed();
                let lag = end_offset.saturating_sub(committed);
                let oldest = p.ledger.get(committed).map(|pending| pending.timestamp).or(p.oldest_unacked_timestamp);
                let lag_seconds = match oldest {
                    Some(ts) if lag > 0 => (now - ts).max(0) as f64 / 1000.0,
                    _ => 0.0,
                };
                let awaiting = p
                    .ledger
                    .pending()
                    .filter(|(_, pending)| matches!(pending.delivery, Delivery::Ready | Delivery::Backoff { .. }))
                    .count();
                PartitionLag {
                    tp: tp.clone(),
                    owner: p.owner,
                    committed,
                    end_offset,
                    lag,
                    lag_seconds,
                    in_flight: p.ledger.in_flight(),
                    awaiting_redelivery: awaiting as u32,
                    stalled: p.stalled.clone(),
                }
            })
            .collect();
        GroupDescription {
            group: group.id.to_string(),
            generation: state.generation,
            settings: state.settings.clone(),
            members,
            partitions,
            rebalances: state.rebalances,
            acks: state.acks,
            nacks: state.nacks,
            redeliveries: state.redeliveries,
            dead_lettered: state.dead_lettered_total.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            dead_letter_depth: state.dead_letters.len() as u64,
            oldest_dead_letter_ms: state.dead_letters.oldest_ms(),
            damaged_skipped: state.damaged_skipped,
            offsets_past_end: state.offsets_past_end,
            dead_letters_failing: state.dead_letter_failed.len() as u64,
            dead_letter_error: state.dead_letter_failed.values().max_by_key(|f| f.retry_at).map(|f| f.error.clone()),
            dead_letter_failures: state.dead_letter_failures,
        }
    }

    /// Moves a group's offsets in one topic; refused with [`Error::GroupHasMembers`] while
    /// members are connected, unless forced. Creates the group if it does not exist (so offsets
    /// can be set before the first member starts). Durable when it returns.
    pub async fn reset_group_offsets(&self, spec: ResetSpec) -> Result<Vec<(TopicPartition, u64)>> {
        self.check_open()?;
        crate::topic_name::validate_group(&spec.group)?;
        let topic = self.topic(&spec.topic)?;
        let partitions = if spec.partitions.is_empty() {
            (0..topic.partitions().len() as u32).collect()
        } else {
            spec.partitions.clone()
        };
        let mut positions = Vec::with_capacity(partitions.len());
        for id in partitions {
            let handle = topic.partition(id)?;
            let (start, end) = handle.offsets();
            let position = match spec.target {
                ResetTarget::Earliest => start,
                ResetTarget::Latest => end,
                ResetTarget::Timestamp(ts) => handle.offset_for_timestamp(ts).await?.unwrap_or(end),
                ResetTarget::Offset(offset) if offset < start || offset > end => {
                    return Err(Error::OffsetOutOfRange { requested: offset, start, end });
                }
                ResetTarget::Offset(offset) => offset,
            };
            positions.push((TopicPartition::new(topic.name.clone(), id), position));
        }
        let group = self.groups().get_or_create(&spec.group, self.inner.config.groups.settings());
        {
            let mut state = group.lock();
            if !state.members.is_empty() && !spec.force {
                return Err(Error::GroupHasMembers { group: spec.group.clone(), members: state.members.len() as u32 });
            }
            state.reset(&positions);
        }
        tracing::info!(group = %spec.group, topic = %spec.topic, target = ?spec.target, force = spec.force, "group offsets reset");
        group.flush().await?;
        Ok(positions)
    }

    /// Deletes a group and its offsets; refused while members are connected unless forced
    /// (their sessions then end).
    pub async fn delete_group(&self, id: &str, force: bool) -> Result<()> {
        self.check_open()?;
        let group = self.groups().get(id).ok_or_else(|| Error::GroupNotFound(id.to_owned()))?;
        {
            let state = group.lock();
            if !state.members.is_empty() && !force {
                return Err(Error::GroupHasMembers { group: id.to_owned(), members: state.members.len() as u32 });
            }
        }
        let _serialised = group.flush.lock().await;
        let Some(group) = self.groups().remove(id) else { return Ok(()) };
        {
            let mut state = group.lock();
            for member in std::mem::take(&mut state.members).into_values() {
                let _already = member.shared.ended.set(SessionEnd::GroupDeleted);
                member.shared.wake.notify_one();
            }
            state.dirty = false;
        }
        let path = group.path.clone();
        crate::partition::blocking(move || {
            // The group file goes first: a journal without one is never loaded.
            let journal = path.with_extension(super::journal::JOURNAL_EXTENSION);
            for (file, operation) in [(&path, "deleting group file"), (&journal, "deleting dead-letter journal")] {
                match std::fs::remove_file(file) {
                    Ok(()) => sluice_storage::io::fsync_dir(file.parent().unwrap_or(file))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Storage(sluice_storage::Error::Io {
                            operation,
                            path: file.clone(),
                            source: e,
                        }));
                    }
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!(group = %id, force, "group deleted");
        Ok(())
    }
}
