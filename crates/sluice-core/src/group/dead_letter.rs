//! Moving records that failed too often into dead-letter topics.
//!
//! A record that runs out of attempts, or is nacked as not retryable, is queued by the group
//! state. One broker task appends each queued record to the group's dead-letter topic (default
//! `<topic>.dlq`, created on first use with the source topic's partition count and settings)
//! through the normal produce path, so the append is durable per that topic's fsync policy.
//! Only then is the record marked done in the group.
//!
//! Crash guarantee: a record out of attempts is saved as *being dead-lettered* by the next group
//! flush, and a restart goes on writing its copy without delivering it again. A crash after the
//! append but before the flush that records it leaves it being dead-lettered: at start-up the
//! worker first looks for its copy among the last [`RESTORED_SEARCH`] records of the
//! dead-letter partition (same group, source and failure time), and writes it only if it is
//! not there. A record is never lost; it is duplicated only if its copy lies further back.
//!
//! Several groups may share one dead-letter topic; each record carries its group in a header.
//!
//! Copies are appended in requests that fit the broker's request limit. A copy that cannot be
//! written (larger than the dead-letter topic's `max_message_bytes`, a full disk) is set aside
//! in the group as *failing*, shown in DescribeGroup (`dead_letters_failing`, the last error) and
//! counted (`sluice_group_dead_letter_failures_total`), and tried again after 1 s, doubling up to
//! a minute: never in a loop. Its record stays pending (not done) meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Group;
use super::types::{DeadLetterJob, FailedDeadLetter, TopicPartition};
use sluice_storage::Batch;

use crate::StoredRecord;
use crate::broker::{Broker, Topic};
use crate::error::{Error, Result};
use crate::record::{NewRecord, ProduceRequest};

/// Prefix of the provenance headers (as in Kafka's KIP-1191 share-group dead-letter queue).
pub const HEADER_PREFIX: &str = "__dlq.errors.";
/// Source topic.
pub const HEADER_TOPIC: &str = "__dlq.errors.topic";
/// Source partition (decimal text).
pub const HEADER_PARTITION: &str = "__dlq.errors.partition";
/// Source offset (decimal text).
pub const HEADER_OFFSET: &str = "__dlq.errors.offset";
/// Consumer group.
pub const HEADER_GROUP: &str = "__dlq.errors.group";
/// Deliveries made (decimal text).
pub const HEADER_DELIVERY_COUNT: &str = "__dlq.errors.delivery.count";
/// The last failure reason.
pub const HEADER_MESSAGE: &str = "__dlq.errors.message";
/// First failure, ms since the Unix epoch (decimal text).
pub const HEADER_FIRST_FAILURE: &str = "__dlq.errors.first.failure.ms";
/// Last failure, ms since the Unix epoch (decimal text).
pub const HEADER_LAST_FAILURE: &str = "__dlq.errors.last.failure.ms";

/// Room left for provenance headers when a dead-letter topic is created.
const HEADER_ROOM: u32 = 64 << 10;

fn text(name: &str, value: impl ToString) -> (String, Bytes) {
    (name.to_owned(), Bytes::from(value.to_string()))
}

async fn dead_letter_topic(broker: &Broker, name: &str, source: &Topic) -> Result<Arc<Topic>> {
    match broker.topic(name) {
        Ok(topic) => return Ok(topic),
        Err(Error::TopicNotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let mut config = source.config();
    config.max_message_bytes =
        config.max_message_bytes.saturating_add(HEADER_ROOM).min(crate::config::MAX_MESSAGE_BYTES_LIMIT);
    config.segment_bytes = config.segment_bytes.max(u64::from(config.max_message_bytes));
    let partitions = source.partitions().len() as u32;
    match broker.create_topic(name, partitions, config).await {
        Ok(topic) => {
            tracing::info!(topic = %name, partitions, "created dead-letter topic");
            Ok(topic)
        }
        Err(Error::TopicExists(_)) => broker.topic(name),
        Err(e) => Err(e),
    }
}

/// How many records at the end of a dead-letter partition are searched for the copies of
/// restored jobs.
pub const RESTORED_SEARCH: u64 = 10_000;

/// Where the copies of restored `jobs` of `group` already are in the dead-letter partition,
/// by source offset (for copies of the same failure: same last failure time).
async fn find_copies(
    dead_letter: &Topic,
    partition: u32,
    group: &str,
    source: &TopicPartition,
    jobs: &[DeadLetterJob],
) -> Result<BTreeMap<u64, u64>> {
    let wanted: BTreeMap<u64, i64> =
        jobs.iter().filter(|j| j.restored).map(|j| (j.offset, j.failure.last_ms)).collect();
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let handle = dead_letter.partition(partition)?;
    let (start, end) = handle.offsets();
    let mut next = end.saturating_sub(RESTORED_SEARCH).max(start);
    let (topic, source_partition) = (source.topic.to_string(), source.partition.to_string());
    while next < end && found.len() < wanted.len() {
        let read = match handle.read(next, 1 << 20).await {
            Ok(read) => read,
            Err(Error::OffsetOutOfRange { start, .. }) if start > next => {
                next = start;
                continue;
            }
            Err(e) => return Err(e),
        };
        if read.batches.is_empty() {
            break;
        }
        for record in read.batches.iter().flat_map(|b| b.records()).filter_map(Result::ok) {
            if record.offset < next {
                continue;
            }
            next = record.offset + 1;
            let p = super::redrive::provenance(&record);
            let field = |name: &str| p.get(name).map(String::as_str);
            if field(HEADER_GROUP) != Some(group)
                || field(HEADER_TOPIC) != Some(&topic)
                || field(HEADER_PARTITION) != Some(&source_partition)
            {
                continue;
            }
            let offset = field(HEADER_OFFSET).and_then(|o| o.parse::<u64>().ok());
            let last = field(HEADER_LAST_FAILURE).and_then(|t| t.parse::<i64>().ok());
            if let (Some(offset), Some(last)) = (offset, last)
                && wanted.get(&offset) == Some(&last)
            {
                found.insert(offset, record.offset);
            }
        }
    }
    Ok(found)
}

/// Reads every record `jobs` (of one partition, sorted by offset) name: alone when its position
/// is known, else with its batch (one read serves all the jobs its batches cover). Records that
/// no longer exist are left out.
async fn read_sources(
    source: &Topic,
    tp: &TopicPartition,
    jobs: &[DeadLetterJob],
) -> Result<Vec<Option<StoredRecord>>> {
    let handle = source.partition(tp.partition)?;
    // Records whose position in their batch is known are read alone: a dead-lettered record
    // then costs its own bytes, not a second read of its whole batch.
    let known: Vec<(u64, u32)> = jobs.iter().filter_map(|j| j.position.map(|p| (j.offset, p))).collect();
    let mut alone = handle.read_records(known).await?.into_iter();
    let mut found: Vec<Option<StoredRecord>> = Vec::with_capacity(jobs.len());
    let mut last_read: Vec<Batch> = Vec::new();
    for job in jobs {
        if job.position.is_some() {
            match alone.next() {
                Some(Ok(record)) => found.push(Some(record)),
                Some(Err(Error::OffsetOutOfRange { .. })) | None => found.push(None),
                Some(Err(e)) => return Err(e),
            }
            continue;
        }
        let covers = |b: &Batch| b.base_offset() <= job.offset && job.offset < b.next_offset();
        let mut batch = last_read.iter().find(|b| covers(b)).cloned();
        if batch.is_none() {
            last_read = match handle.read(job.offset, 1 << 20).await {
                Ok(read) => read.batches,
                Err(Error::OffsetOutOfRange { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            batch = last_read.iter().find(|b| covers(b)).cloned();
        }
        found.push(batch.and_then(|b| b.record_at(job.offset)).and_then(Result::ok));
    }
    Ok(found)
}

fn dead_letter_copy(group: &str, job: &DeadLetterJob, record: StoredRecord) -> Result<NewRecord> {
    let mut headers = Vec::with_capacity(record.header_count() + 8);
    for header in record.headers() {
        let header = header.map_err(|reason| Error::Internal(format!("stored header: {reason}")))?;
        headers.push((header.name_str().to_owned(), header.value));
    }
    headers.extend([
        text(HEADER_TOPIC, &job.tp.topic),
        text(HEADER_PARTITION, job.tp.partition),
        text(HEADER_OFFSET, job.offset),
        text(HEADER_GROUP, group),
        text(HEADER_DELIVERY_COUNT, job.attempts),
        text(HEADER_MESSAGE, &job.failure.reason),
        text(HEADER_FIRST_FAILURE, job.failure.first_ms),
        text(HEADER_LAST_FAILURE, job.failure.last_ms),
    ]);
    Ok(NewRecord { key: record.key, value: record.value, headers, timestamp: Some(record.timestamp) })
}

/// What became of one job.
#[derive(Debug, Clone)]
enum Outcome {
    /// Its copy is in the dead-letter topic, there.
    Moved(TopicPartition, u64),
    /// The source record no longer exists (retention removed it).
    Gone,
    /// Its copy could not be written; why.
    Failed(String),
}

/// Appends the dead-letter copies of one source partition's jobs (sorted by offset) in as few
/// produces as fit the broker's request limit; returns what became of each job. A copy that
/// fails (alone too large for the dead-letter topic, a full disk) fails only its own request.
async fn move_partition(
    broker: &Broker,
    group: &Group,
    tp: &TopicPartition,
    jobs: &[DeadLetterJob],
) -> Result<Vec<Outcome>> {
    let Ok(source) = broker.topic(&tp.topic) else { return Ok(vec![Outcome::Gone; jobs.len()]) };
    let records = read_sources(&source, tp, jobs).await?;
    let own = source.config().dead_letter_topic;
    let broker_default = &broker.config().groups.dead_letter_topic;
    let name = group.lock().settings.dead_letter_topic_for(&tp.topic, own.as_deref(), broker_default);
    let topic = dead_letter_topic(broker, &name, &source).await?;
    let partition = tp.partition % topic.partitions().len().max(1) as u32;
    let dead_letter = TopicPartition::new(topic.name.clone(), partition);
    let mut outcomes = vec![Outcome::Gone; jobs.len()];
    let written = find_copies(&topic, partition, &group.id, tp, jobs).await?;
    // Requests of copies (each with its job's index), each within the request limit; a copy
    // larger than the limit goes alone (and fails alone).
    let limit = broker.config().max_request_bytes;
    let mut requests: Vec<Vec<(usize, NewRecord)>> = Vec::new();
    let mut bytes = 0;
    for (i, (job, record)) in jobs.iter().zip(records).enumerate() {
        if let Some(&at) = written.get(&job.offset) {
            outcomes[i] = Outcome::Moved(dead_letter.clone(), at);
            continue;
        }
        let Some(record) = record else { continue };
        let copy = match dead_letter_copy(&group.id, job, record) {
            Ok(copy) => copy,
            Err(e) => {
                outcomes[i] = Outcome::Failed(e.to_string());
                continue;
            }
        };
        let size = copy.size();
        match requests.last_mut() {
            Some(last) if !last.is_empty() && bytes + size <= limit => last.push((i, copy)),
            _ => {
                requests.push(vec![(i, copy)]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    for request in requests {
        let (indexes, copies): (Vec<usize>, Vec<NewRecord>) = request.into_iter().unzip();
        let produce =
            ProduceRequest { topic: name.clone(), partition: Some(partition), records: copies.into(), producer: None };
        match broker.produce(produce).await {
            Ok(outcome) => {
                let base = outcome.appends.first().map_or(0, |a| a.base_offset);
                for (k, i) in indexes.into_iter().enumerate() {
                    outcomes[i] = Outcome::Moved(dead_letter.clone(), base + k as u64);
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for i in indexes {
                    outcomes[i] = Outcome::Failed(reason.clone());
                }
            }
        }
    }
    Ok(outcomes)
}

/// Delay before the next try of a dead letter that failed `failures` times: 1 s, doubling, at
/// most a minute, so a copy that cannot be written costs a read now and then, never a loop.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Moves every queued record of every group; returns false if any failed (they stay queued).
/// Lets a repeating failure be logged once per interval, with how often it was suppressed.
#[derive(Debug)]
struct WarnLimit {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

/// How often the same kind of failure is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

impl WarnLimit {
    /// Whether to log now, and how many were suppressed since the last one.
    fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Moves every queued dead letter of every group, and the failed ones whose retry is due;
/// returns when the next failed one is due, if any.
async fn pass(broker: &Broker, warn: &mut WarnLimit) -> Option<std::time::Instant> {
    for group in broker.groups().all() {
        let now = std::time::Instant::now();
        let jobs: Vec<DeadLetterJob> = {
            let mut state = group.lock();
            let mut jobs: Vec<DeadLetterJob> = state.dead_letter_jobs.drain(..).collect();
            let due: Vec<(TopicPartition, u64)> =
                state.dead_letter_failed.iter().filter(|(_, f)| f.retry_at <= now).map(|(k, _)| k.clone()).collect();
            jobs.extend(due.iter().filter_map(|key| state.dead_letter_failed.remove(key)).map(|f| f.job));
            jobs
        };
        let mut by_partition: BTreeMap<TopicPartition, Vec<DeadLetterJob>> = BTreeMap::new();
        for job in jobs {
            by_partition.entry(job.tp.clone()).or_default().push(job);
        }
        for (tp, mut jobs) in by_partition {
            jobs.sort_by_key(|j| j.offset);
            for chunk in jobs.chunks(256) {
                let outcomes = move_partition(broker, &group, &tp, chunk).await.unwrap_or_else(|e| {
                    let reason = e.to_string();
                    vec![Outcome::Failed(reason); chunk.len()]
                });
                let mut state = group.lock();
                for (job, outcome) in chunk.iter().zip(outcomes) {
                    match outcome {
                        Outcome::Moved(tp, offset) => state.dead_lettered(job, Some((tp, offset))),
                        Outcome::Gone => {
                            tracing::warn!(group = %group.id, topic = %tp.topic, partition = tp.partition, offset = job.offset, "record to dead-letter no longer exists; marking it done");
                            state.dead_lettered(job, None);
                        }
                        Outcome::Failed(error) => {
                            let mut job = job.clone();
                            job.failures += 1;
                            let retry_at = now + retry_delay(job.failures);
                            if let Some(suppressed) = warn.allow() {
                                tracing::warn!(group = %group.id, topic = %tp.topic, partition = tp.partition, offset = job.offset, failures = job.failures, cause = %error, suppressed, "dead-lettering failed; will retry");
                            }
                            state.dead_letter_failures += 1;
                            state
                                .dead_letter_failed
                                .insert((tp.clone(), job.offset), FailedDeadLetter { job, retry_at, error });
                        }
                    }
                }
            }
        }
    }
    broker.groups().all().iter().filter_map(|g| g.lock().dead_letter_failed.values().map(|f| f.retry_at).min()).min()
}

/// How long the worker lets failures gather after the first one: each source batch is then
/// read once for all its failed records, instead of once per record.
const GATHER: Duration = Duration::from_millis(20);

/// Runs until the broker shuts down; queued records left then stay pending in their groups.
pub(crate) async fn run(broker: Broker) {
    let shutdown = broker.shutdown_token();
    let mut warn = WarnLimit { last: None, suppressed: 0 };
    loop {
        let idle = Duration::from_millis(500);
        let pause = match pass(&broker, &mut warn).await {
            Some(due) => due.saturating_duration_since(std::time::Instant::now()).min(idle),
            None => idle,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = broker.groups().dead_letter_wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(GATHER) => {}
        }
    }
}
