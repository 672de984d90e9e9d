//! Inspecting dead-letter topics and redriving their records into one group's processing.

use std::collections::BTreeMap;

use super::dead_letter as headers;
use super::types::TopicPartition;
use crate::StoredRecord;
use crate::broker::Broker;
use crate::error::{Error, Result};

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSpec {
    /// The dead-letter topic.
    pub topic: String,
    /// Only records of this group.
    pub group: Option<String>,
    /// Only records whose last failure is at or after this (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only records whose last failure is before this.
    pub until_ms: Option<i64>,
    /// Where to continue (partition, offset), from a previous page.
    pub from: Option<(u32, u64)>,
    /// Most entries to return (1..=1000; 0 means 100).
    pub limit: usize,
}

/// A dead-lettered record with its provenance.
#[derive(Debug, Clone)]
pub struct DeadLetterEntry {
    /// Position in the dead-letter topic.
    pub partition: u32,
    /// Offset in the dead-letter topic.
    pub offset: u64,
    /// The record as stored (original key, value, timestamp; original plus provenance headers).
    pub record: StoredRecord,
    /// Provenance headers, parsed.
    pub provenance: BTreeMap<String, String>,
    /// The group it failed in.
    pub group: String,
    /// False while the group can still redrive it.
    pub redriven: bool,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    /// The entries, in partition then offset order.
    pub entries: Vec<DeadLetterEntry>,
    /// Where the next page starts, if there is more.
    pub next: Option<(u32, u64)>,
    /// Records of the topic (for the group, if given) not yet redriven.
    pub depth: u64,
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every one of the group's dead letters in the topic.
    All,
    /// Offsets `first..=last` of one dead-letter partition.
    Range {
        /// Dead-letter partition.
        partition: u32,
        /// First offset.
        first: u64,
        /// Last offset.
        last: u64,
    },
    /// These (partition, offset) positions.
    Offsets(Vec<(u32, u64)>),
}

pub(crate) fn provenance(record: &StoredRecord) -> BTreeMap<String, String> {
    record
        .headers()
        .filter_map(|h| h.ok())
        .filter(|h| h.name_str().starts_with(headers::HEADER_PREFIX))
        .map(|h| (h.name_str().to_owned(), String::from_utf8_lossy(&h.value).into_owned()))
        .collect()
}

/// Dead letters resolved per hold of the group lock.
const RESOLVE_CHUNK: usize = 10_000;

impl Broker {
    fn dead_letter_depth(&self, topic: &str, group: Option<&str>) -> u64 {
        self.groups()
            .all()
            .iter()
            .filter(|g| group.is_none_or(|id| *g.id == *id))
            .map(|g| g.lock().dead_letters.depth(topic))
            .sum()
    }

    fn is_redriven(&self, group: &str, key: &(TopicPartition, u64)) -> bool {
        self.groups().get(group).is_none_or(|g| !g.lock().dead_letters.contains(key))
    }

    /// Lists a dead-letter topic's records with their provenance, a page at a time.
    pub async fn list_dead_letters(&self, spec: ListSpec) -> Result<DeadLetterPage> {
        self.check_open()?;
        let topic = self.topic(&spec.topic)?;
        let limit = if spec.limit == 0 { 100 } else { spec.limit.min(1000) };
        let (first_partition, first_offset) = spec.from.unwrap_or((0, 0));
        let mut entries = Vec::new();
        let partitions = topic.partitions();
        'partitions: for handle in partitions.iter().skip(first_partition as usize) {
            let (start, end) = handle.offsets();
            let mut next = if handle.id() == first_partition { first_offset.max(start) } else { start };
            while next < end {
                let read = match handle.read(next, 1 << 20).await {
                    Ok(read) => read,
                    Err(Error::OffsetOutOfRange { start, .. }) => {
                        next = start;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for record in read.batches.iter().flat_map(|b| b.records()) {
                    let record = record.map_err(|reason| Error::Internal(format!("stored record: {reason}")))?;
                    if record.offset < next {
                        continue;
                    }
                    next = record.offset + 1;
                    let provenance = provenance(&record);
                    let group = provenance.get(headers::HEADER_GROUP).cloned().unwrap_or_default();
                    let failed_at = provenance.get(headers::HEADER_LAST_FAILURE).and_then(|t| t.parse::<i64>().ok());
                    let wanted = spec.group.as_ref().is_none_or(|g| *g == group)
                        && spec.since_ms.is_none_or(|since| failed_at.is_some_and(|t| t >= since))
                        && spec.until_ms.is_none_or(|until| failed_at.is_some_and(|t| t < until));
                    if !wanted {
                        continue;
                    }
                    if entries.len() == limit {
                        let page_next = Some((handle.id(), record.offset));
                        let depth = self.dead_letter_depth(&spec.topic, spec.group.as_deref());
                        return Ok(DeadLetterPage { entries, next: page_next, depth });
                    }
                    let key = (TopicPartition::new(topic.name.clone(), handle.id()), record.offset);
                    let redriven = self.is_redriven(&group, &key);
                    let (partition, offset) = (handle.id(), record.offset);
                    entries.push(DeadLetterEntry { partition, offset, record, provenance, group, redriven });
                }
                if read.batches.is_empty() {
                    continue 'partitions;
                }
            }
        }
        let depth = self.dead_letter_depth(&spec.topic, spec.group.as_deref());
        Ok(DeadLetterPage { entries, next: None, depth })
    }

    /// Puts a group's dead letters from `topic` back into that group's processing (only that
    /// group sees them again), with fresh attempt counts. Each dead letter is redriven at most
    /// once. Durable when it returns. Returns how many were redriven.
    pub async fn redrive_dead_letters(&self, topic: &str, group_id: &str, selection: &Selection) -> Result<u64> {
        let (group, redriven) =
            self.resolve_dead_letters(topic, group_id, selection, |state, keys| state.redrive(keys))?;
        tracing::info!(group = %group_id, topic, redriven, "dead letters redriven");
        group.flush().await?;
        Ok(redriven)
    }

    /// Marks a group's dead letters from `topic` as handled without redriving them: the depth
    /// falls, and they can no longer be redriven. Durable when it returns. Returns how many.
    pub async fn discard_dead_letters(&self, topic: &str, group_id: &str, selection: &Selection) -> Result<u64> {
        let (group, discarded) =
            self.resolve_dead_letters(topic, group_id, selection, |state, keys| state.discard(keys))?;
        tracing::info!(group = %group_id, topic, discarded, "dead letters discarded");
        group.flush().await?;
        Ok(discarded)
    }

    /// Applies `resolve` to the group's dead letters in `topic` that `selection` picks.
    fn resolve_dead_letters(
        &self,
        topic: &str,
        group_id: &str,
        selection: &Selection,
        resolve: impl Fn(&mut super::state::GroupState, &[(TopicPartition, u64)]) -> u64,
    ) -> Result<(std::sync::Arc<super::Group>, u64)> {
        self.check_open()?;
        let name = self.topic(topic)?.name.clone();
        let group = self.groups().get(group_id).ok_or_else(|| Error::GroupNotFound(group_id.to_owned()))?;
        // In chunks, each under the lock for a bounded time, so resolving a million dead
        // letters does not stall the group's deliveries and acks meanwhile.
        let mut resolved = 0;
        let mut after: Option<(TopicPartition, u64)> = None;
        loop {
            let mut state = group.lock();
            let keys: Vec<(TopicPartition, u64)> = match selection {
                Selection::All => state.dead_letters.keys_of_topic(&name, after.as_ref(), RESOLVE_CHUNK),
                Selection::Range { partition, first, last } if first <= last => {
                    let from = after.as_ref().map_or(*first, |(_, offset)| offset + 1);
                    if from > *last {
                        Vec::new()
                    } else {
                        state.dead_letters.keys_in(&name, *partition, from, *last, RESOLVE_CHUNK)
                    }
                }
                Selection::Range { .. } => Vec::new(),
                Selection::Offsets(list) => {
                    let keys: Vec<(TopicPartition, u64)> = list
                        .iter()
                        .map(|&(partition, offset)| (TopicPartition::new(name.clone(), partition), offset))
                        .filter(|key| state.dead_letters.contains(key))
                        .collect();
                    resolved += resolve(&mut state, &keys);
                    break;
                }
            };
            let Some(last) = keys.last().cloned() else { break };
            resolved += resolve(&mut state, &keys);
            drop(state);
            after = Some(last);
        }
        Ok((group, resolved))
    }
}
