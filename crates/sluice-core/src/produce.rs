//! Producing: validation, partitioning, encoding and appending a request's records.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_storage::{BatchBuilder, HeaderRef, RecordRef};

use crate::broker::{Broker, Topic};
use crate::error::{Error, Result};
use crate::partition::QueuedAppend;
use crate::partitioner;
use crate::record::{PartitionAppend, ProduceOutcome, ProduceRequest, ProducerRef, RecordSource};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Record indexes per partition, in record order.
fn route(topic: &Topic, request: &ProduceRequest, partitions: u32) -> Result<Vec<(u32, Vec<u32>)>> {
    if let Some(partition) = request.partition {
        if partition >= partitions {
            return Err(Error::PartitionNotFound { topic: topic.name().to_owned(), partition, count: partitions });
        }
        return Ok(vec![(partition, Vec::new())]);
    }
    let sticky = topic.next_unkeyed.fetch_add(1, Ordering::Relaxed) % partitions;
    let records = request.records.source();
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
    for index in 0..records.count() {
        let partition = records.key(index).map_or(sticky, |key| partitioner::for_key(key, partitions));
        groups[partition as usize].push(index as u32);
    }
    let used = groups.iter().filter(|g| !g.is_empty()).count();
    Ok(groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(p, g)| (p as u32, if used == 1 { Vec::new() } else { g }))
        .collect())
}

/// The records of one batch: all of a request's, or those at `indexes`.
#[derive(Clone, Copy)]
struct Selection<'a> {
    records: &'a dyn RecordSource,
    indexes: &'a [u32],
}

impl<'a> Selection<'a> {
    fn all(records: &'a dyn RecordSource) -> Self {
        Selection { records, indexes: &[] }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let all = if self.indexes.is_empty() { 0..self.records.count() } else { 0..0 };
        all.chain(self.indexes.iter().map(|&i| i as usize))
    }

    fn count(&self) -> usize {
        if self.indexes.is_empty() { self.records.count() } else { self.indexes.len() }
    }

    fn size(&self) -> usize {
        self.iter().map(|i| self.records.size(i)).sum()
    }
}

/// The exact encoded size of a batch of `records`, those without a timestamp stamped `now`.
fn encoded_size(records: Selection<'_>, now: i64) -> usize {
    let source = records.records;
    let mut headers: Vec<HeaderRef<'_>> = Vec::new();
    let mut size = sluice_storage::codec::BATCH_HEADER_BYTES;
    for index in records.iter() {
        let fields = source.record(index, &mut headers);
        let record = RecordRef {
            timestamp: fields.timestamp.unwrap_or(now),
            key: fields.key,
            value: fields.value,
            headers: &headers,
        };
        size += record.encoded_len();
    }
    size
}

fn encode(records: Selection<'_>, producer: Option<ProducerRef>) -> Result<sluice_storage::EncodedBatch> {
    let now = now_ms();
    // Sized exactly: a batch that outgrew its buffer would be copied to a larger one.
    let mut builder = BatchBuilder::with_capacity(encoded_size(records, now));
    let mut headers: Vec<HeaderRef<'_>> = Vec::new();
    let source = records.records;
    for index in records.iter() {
        let fields = source.record(index, &mut headers);
        builder.push(&RecordRef {
            timestamp: fields.timestamp.unwrap_or(now),
            key: fields.key,
            value: fields.value,
            headers: &headers,
        })?;
    }
    if let Some(producer) = producer {
        builder.set_producer(producer.producer_id, producer.first_sequence);
    }
    Ok(builder.finish()?)
}

impl Broker {
    fn validate_produce(&self, topic: &Topic, request: &ProduceRequest) -> Result<()> {
        if request.records.is_empty() {
            return Err(Error::InvalidArgument("a produce request needs at least one record".into()));
        }
        let limit = topic.config().max_message_bytes as usize;
        let mut total = 0usize;
        let records = request.records.source();
        for index in 0..records.count() {
            let size = records.size(index);
            if size > limit {
                return Err(Error::MessageTooLarge { index, size, limit });
            }
            total += size;
        }
        let request_limit = self.inner.config.max_request_bytes;
        if total > request_limit {
            return Err(Error::RequestTooLarge { size: total, limit: request_limit });
        }
        if let Some(producer) = request.producer {
            if producer.producer_id == 0 {
                return Err(Error::InvalidArgument("producer_id must be non-zero".into()));
            }
            if request.partition.is_none() {
                return Err(Error::InvalidArgument(
                    "an idempotent produce (producer_id set) must name its partition".into(),
                ));
            }
        }
        Ok(())
    }

    /// Appends a request's records and returns where they went, once durable per each
    /// partition's fsync policy. Records for different partitions are appended concurrently.
    pub async fn produce(&self, request: ProduceRequest) -> Result<ProduceOutcome> {
        if request.producer.is_none() {
            return self.produce_enqueue(request)?.finish().await;
        }
        self.check_open()?;
        let topic = self.topic(&request.topic)?;
        self.validate_produce(&topic, &request)?;
        let partitions = topic.partitions();
        // validate_produce made the partition required, so this is its one route (or the error
        // naming a partition that does not exist).
        let [(partition, _)] = route(&topic, &request, partitions.len() as u32)?[..] else {
            return Err(Error::Internal("an idempotent produce routes to one partition".into()));
        };
        let bytes = Selection::all(request.records.source()).size();
        let (count, producer, records) = (request.records.len() as u32, request.producer, request.records);
        let appended = partitions[partition as usize]
            .append(count, bytes, producer, move || encode(Selection::all(records.source()), producer))
            .await?;
        let outcome = ProduceOutcome {
            appends: vec![PartitionAppend {
                partition,
                base_offset: appended.base_offset,
                record_count: count,
                record_indexes: Vec::new(),
                duplicate: appended.duplicate,
            }],
        };
        if !appended.duplicate {
            topic.counters.records_in.fetch_add(u64::from(count), Ordering::Relaxed);
            topic.counters.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// The first half of [`Broker::produce`] for a request without a producer id: validates,
    /// routes and encodes it, and queues its batches on their partitions without waiting.
    /// Requests queued one after another take offsets in that order on every partition, which
    /// is what keeps a pipelining producer's records of one key in order.
    pub fn produce_enqueue(&self, request: ProduceRequest) -> Result<QueuedProduce> {
        self.check_open()?;
        let topic = self.topic(&request.topic)?;
        self.validate_produce(&topic, &request)?;
        if request.producer.is_some() {
            return Err(Error::Internal("idempotent requests are appended by produce".into()));
        }
        let partitions = topic.partitions();
        let routes = route(&topic, &request, partitions.len() as u32)?;
        let records = request.records.source();
        let record_total = records.count();
        let mut bytes = 0;
        let mut encoded = Vec::with_capacity(routes.len());
        for (partition, indexes) in routes {
            let group = Selection { records, indexes: &indexes };
            let size = group.size();
            bytes += size;
            // Every batch is encoded before any is queued, so a request that fails to encode
            // leaves nothing behind.
            let batch = encode(group, None)?;
            encoded.push((partition, group.count() as u32, size, batch, indexes));
        }
        let parts = encoded
            .into_iter()
            .map(|(partition, count, size, batch, indexes)| {
                (partition, indexes, count, partitions[partition as usize].enqueue(batch, size))
            })
            .collect();
        Ok(QueuedProduce { topic, parts, record_total, bytes })
    }
}

/// A produce request whose batches are queued on their partitions (see
/// [`Broker::produce_enqueue`]); [`QueuedProduce::finish`] waits until they are durable.
/// Dropped unfinished, its batches are still written, in their turn.
#[derive(Debug)]
pub struct QueuedProduce {
    topic: std::sync::Arc<Topic>,
    parts: Vec<(u32, Vec<u32>, u32, QueuedAppend)>,
    record_total: usize,
    bytes: usize,
}

impl QueuedProduce {
    /// True when [`QueuedProduce::finish`] spawns nothing and hands nothing to the blocking
    /// pool: one partition, appended inline (see [`QueuedAppend::is_inline`]).
    pub fn is_inline(&self) -> bool {
        matches!(self.parts.as_slice(), [(_, _, _, only)] if only.is_inline())
    }

    /// Waits until every batch is durable per its partition's fsync policy; returns where the
    /// records went. Partitions complete concurrently.
    pub async fn finish(self) -> Result<ProduceOutcome> {
        let QueuedProduce { topic, parts, record_total, bytes } = self;
        let (places, mut queued): (Vec<_>, Vec<_>) =
            parts.into_iter().map(|(partition, indexes, count, q)| ((partition, indexes, count), q)).unzip();
        let base_offsets = match queued.pop() {
            // One partition (the common case): waited for on this task, with no extra hand-off.
            Some(only) if queued.is_empty() => vec![only.complete().await?],
            last => {
                let tasks: Vec<_> = queued.into_iter().chain(last).map(|q| tokio::spawn(q.complete())).collect();
                let mut offsets = Vec::with_capacity(tasks.len());
                for task in tasks {
                    offsets.push(task.await.map_err(|e| Error::Internal(format!("append task failed: {e}")))??);
                }
                offsets
            }
        };
        let appends = places
            .into_iter()
            .zip(base_offsets)
            .map(|((partition, record_indexes, record_count), base_offset)| PartitionAppend {
                partition,
                base_offset,
                record_count,
                record_indexes,
                duplicate: false,
            })
            .collect();
        let outcome = ProduceOutcome { appends };
        topic.counters.records_in.fetch_add(record_total as u64, Ordering::Relaxed);
        topic.counters.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::record::NewRecord;

    use super::*;

    #[test]
    fn batches_are_sized_exactly_before_encoding() {
        let record = |key: Option<&str>, headers: usize| NewRecord {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Bytes::from_static(b"a value"),
            headers: (0..headers).map(|i| (format!("__dlq.errors.{i}"), Bytes::from(i.to_string()))).collect(),
            timestamp: Some(1),
        };
        let records = vec![record(None, 0), record(Some("key"), 8), record(Some(""), 1)];
        let all = Selection::all(&records);
        assert_eq!(encode(all, None).unwrap().len(), encoded_size(all, 0));
        let some = Selection { records: &records, indexes: &[2, 0] };
        assert_eq!(encode(some, None).unwrap().len(), encoded_size(some, 0));
    }
}
