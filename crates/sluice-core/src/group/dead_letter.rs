//! Moving records that failed too often into dead-letter topics.
//!
//! A record that runs out of attempts, or is nacked as not retryable, is queued by the group
//! state. One broker task appends each queued record to the group's dead-letter topic (default
//! `<topic>.dlq`, created on first use with the source topic's partition count and settings)
//! through the normal produce path, so the append is durable per that topic's fsync policy.
//! Only then is the record marked done in the group.
//!
//! Crash guarantee: a crash before the append leaves the record pending in the group (it is
//! delivered again after the restart). A crash after the append but before the group's next
//! offset flush also leaves it pending, so it may be dead-lettered a second time: a record is
//! never lost, and at most duplicated in the dead-letter topic.
//!
//! Several groups may share one dead-letter topic; each record carries its group in a header.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Group;
use super::types::{DeadLetterJob, TopicPartition};
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

/// Appends the dead-letter copies of one source partition's jobs (sorted by offset) in one
/// produce; returns where each went, or `None` for a source record that no longer exists.
async fn move_partition(
    broker: &Broker,
    group: &Group,
    tp: &TopicPartition,
    jobs: &[DeadLetterJob],
) -> Result<Vec<Option<(TopicPartition, u64)>>> {
    let Ok(source) = broker.topic(&tp.topic) else { return Ok(vec![None; jobs.len()]) };
    let records = read_sources(&source, tp, jobs).await?;
    let own = source.config().dead_letter_topic;
    let broker_default = &broker.config().groups.dead_letter_topic;
    let name = group.lock().settings.dead_letter_topic_for(&tp.topic, own.as_deref(), broker_default);
    let topic = dead_letter_topic(broker, &name, &source).await?;
    let partition = tp.partition % topic.partitions().len().max(1) as u32;
    let found: Vec<bool> = records.iter().map(Option::is_some).collect();
    let mut copies = Vec::with_capacity(jobs.len());
    for (job, record) in jobs.iter().zip(records) {
        if let Some(record) = record {
            copies.push(dead_letter_copy(&group.id, job, record)?);
        }
    }
    let mut base = 0;
    if !copies.is_empty() {
        let request = ProduceRequest { topic: name, partition: Some(partition), records: copies, producer: None };
        let outcome = broker.produce(request).await?;
        base = outcome.appends.first().map_or(0, |a| a.base_offset);
    }
    let dead_letter = TopicPartition::new(topic.name.clone(), partition);
    let mut next = base;
    Ok(found
        .into_iter()
        .map(|found| {
            found.then(|| {
                next += 1;
                (dead_letter.clone(), next - 1)
            })
        })
        .collect())
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

async fn pass(broker: &Broker, warn: &mut WarnLimit) -> bool {
    let mut all_moved = true;
    for group in broker.groups().all() {
        let jobs: Vec<DeadLetterJob> = group.lock().dead_letter_jobs.drain(..).collect();
        let mut by_partition: BTreeMap<TopicPartition, Vec<DeadLetterJob>> = BTreeMap::new();
        for job in jobs {
            by_partition.entry(job.tp.clone()).or_default().push(job);
        }
        for (tp, mut jobs) in by_partition {
            jobs.sort_by_key(|j| j.offset);
            // One produce per chunk keeps each request well under the request size limit.
            for chunk in jobs.chunks(256) {
                match move_partition(broker, &group, &tp, chunk).await {
                    Ok(places) => {
                        let mut state = group.lock();
                        for (job, at) in chunk.iter().zip(places) {
                            if at.is_none() {
                                tracing::warn!(group = %group.id, topic = %tp.topic, partition = tp.partition, offset = job.offset, "record to dead-letter no longer exists; marking it done");
                            }
                            state.dead_lettered(job, at);
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = warn.allow() {
                            tracing::warn!(group = %group.id, topic = %tp.topic, records = chunk.len(), cause = %e, suppressed, "dead-lettering failed; will retry");
                        }
                        group.lock().dead_letter_jobs.extend(chunk.iter().cloned());
                        all_moved = false;
                    }
                }
            }
        }
    }
    all_moved
}

/// How long the worker lets failures gather after the first one: each source batch is then
/// read once for all its failed records, instead of once per record.
const GATHER: Duration = Duration::from_millis(20);

/// Runs until the broker shuts down; queued records left then stay pending in their groups.
pub(crate) async fn run(broker: Broker) {
    let shutdown = broker.shutdown_token();
    let mut warn = WarnLimit { last: None, suppressed: 0 };
    loop {
        let pause = if pass(&broker, &mut warn).await { Duration::from_millis(500) } else { Duration::from_secs(1) };
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
