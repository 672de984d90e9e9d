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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Group;
use super::types::{DeadLetterJob, TopicPartition};
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

/// Appends one record's dead-letter copy; returns where it went, or `None` if the source record
/// no longer exists (its topic was deleted, or retention removed it).
async fn move_one(broker: &Broker, group: &Group, job: &DeadLetterJob) -> Result<Option<(TopicPartition, u64)>> {
    let Ok(source) = broker.topic(&job.tp.topic) else { return Ok(None) };
    let handle = source.partition(job.tp.partition)?;
    let read = match handle.read(job.offset, 1).await {
        Ok(read) => read,
        Err(Error::OffsetOutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let record = read.batches.iter().flat_map(|b| b.records()).filter_map(|r| r.ok()).find(|r| r.offset == job.offset);
    let Some(record) = record else { return Ok(None) };
    let own = source.config().dead_letter_topic;
    let broker_default = &broker.config().groups.dead_letter_topic;
    let name = group.lock().settings.dead_letter_topic_for(&job.tp.topic, own.as_deref(), broker_default);
    let topic = dead_letter_topic(broker, &name, &source).await?;
    let mut headers = Vec::with_capacity(record.header_count() + 8);
    for header in record.headers() {
        let header = header.map_err(|reason| Error::Internal(format!("stored header: {reason}")))?;
        headers.push((header.name_str().to_owned(), header.value));
    }
    headers.extend([
        text(HEADER_TOPIC, &job.tp.topic),
        text(HEADER_PARTITION, job.tp.partition),
        text(HEADER_OFFSET, job.offset),
        text(HEADER_GROUP, &group.id),
        text(HEADER_DELIVERY_COUNT, job.attempts),
        text(HEADER_MESSAGE, &job.failure.reason),
        text(HEADER_FIRST_FAILURE, job.failure.first_ms),
        text(HEADER_LAST_FAILURE, job.failure.last_ms),
    ]);
    let partition = job.tp.partition % topic.partitions().len().max(1) as u32;
    let copy = NewRecord { key: record.key, value: record.value, headers, timestamp: Some(record.timestamp) };
    let request = ProduceRequest { topic: name, partition: Some(partition), records: vec![copy], producer: None };
    let outcome = broker.produce(request).await?;
    let offset = outcome.appends.first().map_or(0, |a| a.base_offset);
    Ok(Some((TopicPartition::new(topic.name.clone(), partition), offset)))
}

/// Moves every queued record of every group; returns false if any failed (they stay queued).
async fn pass(broker: &Broker) -> bool {
    let mut all_moved = true;
    for group in broker.groups().all() {
        let jobs: Vec<DeadLetterJob> = group.lock().dead_letter_jobs.drain(..).collect();
        for job in jobs {
            match move_one(broker, &group, &job).await {
                Ok(at) => {
                    if at.is_none() {
                        tracing::warn!(group = %group.id, topic = %job.tp.topic, partition = job.tp.partition, offset = job.offset, "record to dead-letter no longer exists; marking it done");
                    }
                    group.lock().dead_lettered(&job, at);
                }
                Err(e) => {
                    tracing::warn!(group = %group.id, topic = %job.tp.topic, offset = job.offset, cause = %e, "dead-lettering failed; will retry");
                    group.lock().dead_letter_jobs.push_back(job);
                    all_moved = false;
                }
            }
        }
    }
    all_moved
}

/// Runs until the broker shuts down; queued records left then stay pending in their groups.
pub(crate) async fn run(broker: Broker) {
    let shutdown = broker.shutdown_token();
    loop {
        let pause = if pass(&broker).await { Duration::from_millis(500) } else { Duration::from_secs(1) };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = broker.groups().dead_letter_wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}
