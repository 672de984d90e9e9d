//! Conversions between protocol messages and broker-core types.

use std::time::Duration;

use sluice_core::{Fetched, FsyncPolicy, NewRecord, ProduceOutcome, ProduceRequest, ProducerRef, TopicConfig};
use sluice_proto::v1 as pb;
use tonic::Status;

fn invalid(message: impl Into<String>) -> Status {
    crate::status::to_status(sluice_core::Error::InvalidArgument(message.into()))
}

/// A produce request from the wire (payloads move, they are not copied).
pub fn produce_request(request: pb::ProduceRequest) -> Result<ProduceRequest, Status> {
    let producer = match request.producer_id {
        Some(producer_id) => Some(ProducerRef { producer_id, first_sequence: request.first_sequence }),
        None => None,
    };
    let records = request
        .records
        .into_iter()
        .map(|r| NewRecord {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            timestamp: r.timestamp_ms,
        })
        .collect();
    Ok(ProduceRequest { topic: request.topic, partition: request.partition, records, producer })
}

/// Where a request's records went, for the wire.
pub fn produce_response(request_id: u64, outcome: ProduceOutcome) -> pb::ProduceResponse {
    pb::ProduceResponse {
        request_id,
        appends: outcome
            .appends
            .into_iter()
            .map(|a| pb::PartitionAppend {
                partition: a.partition,
                base_offset: a.base_offset,
                record_count: a.record_count,
                record_indexes: a.record_indexes,
                duplicate: a.duplicate,
            })
            .collect(),
        error: None,
    }
}

/// Records at or after `fetched.from`, for the wire. Keys and values are slices of the read
/// buffer; only header names are copied (they are `string` in the protocol).
pub fn records(fetched: &Fetched) -> Result<Vec<pb::Record>, Status> {
    let mut out = Vec::with_capacity(usize::try_from(fetched.record_count()).unwrap_or(0));
    for batch in &fetched.batches {
        for record in batch.records() {
            let record = record.map_err(|reason| {
                tracing::error!(partition = fetched.partition, %reason, "undecodable record in a checksummed batch");
                Status::internal("stored record could not be decoded; see the broker log")
            })?;
            if record.offset < fetched.from {
                continue;
            }
            out.push(self::record(record, fetched.partition)?);
        }
    }
    Ok(out)
}

/// One stored record for the wire (only header names are copied).
pub fn record(record: sluice_core::StoredRecord, partition: u32) -> Result<pb::Record, Status> {
    let mut headers = Vec::with_capacity(record.header_count());
    for header in record.headers() {
        let header = header.map_err(|reason| Status::internal(format!("stored header: {reason}")))?;
        headers.push(pb::Header { name: header.name_str().to_owned(), value: header.value });
    }
    Ok(pb::Record {
        key: record.key,
        value: record.value,
        headers,
        timestamp_ms: Some(record.timestamp),
        offset: record.offset,
        partition,
    })
}

/// Applies the fields set in `config` to `target`.
pub fn apply_topic_config(config: &pb::TopicConfig, target: &mut TopicConfig) -> Result<(), Status> {
    let non_negative = |value: i64| if value < 0 { None } else { Some(value as u64) };
    if let Some(ms) = config.retention_ms {
        target.retention_ms = non_negative(ms);
    }
    if let Some(bytes) = config.retention_bytes {
        target.retention_bytes = non_negative(bytes);
    }
    if let Some(bytes) = config.segment_bytes {
        target.segment_bytes = bytes;
    }
    if let Some(ms) = config.segment_ms {
        target.segment_ms = ms;
    }
    if let Some(bytes) = config.max_message_bytes {
        target.max_message_bytes = bytes;
    }
    if let Some(attempts) = config.max_delivery_attempts {
        target.max_delivery_attempts = (attempts != 0).then_some(attempts);
    }
    if let Some(name) = &config.dead_letter_topic {
        target.dead_letter_topic = (!name.is_empty()).then(|| name.clone());
    }
    let policy = pb::FsyncPolicy::try_from(config.fsync)
        .map_err(|_unknown| invalid(format!("unknown fsync policy {}", config.fsync)))?;
    match policy {
        pb::FsyncPolicy::Unspecified => {
            if let (Some(ms), FsyncPolicy::Interval(_)) = (config.fsync_interval_ms, target.fsync) {
                target.fsync = FsyncPolicy::Interval(Duration::from_millis(ms));
            }
        }
        pb::FsyncPolicy::Always => target.fsync = FsyncPolicy::Always,
        pb::FsyncPolicy::Never => target.fsync = FsyncPolicy::Never,
        pb::FsyncPolicy::Interval => {
            let ms =
                config.fsync_interval_ms.ok_or_else(|| invalid("FSYNC_POLICY_INTERVAL needs fsync_interval_ms"))?;
            target.fsync = FsyncPolicy::Interval(Duration::from_millis(ms));
        }
    }
    Ok(())
}

/// A topic's effective config, every field set.
pub fn topic_config(config: &TopicConfig) -> pb::TopicConfig {
    let (fsync, interval) = match config.fsync {
        FsyncPolicy::Always => (pb::FsyncPolicy::Always, None),
        FsyncPolicy::Never => (pb::FsyncPolicy::Never, None),
        FsyncPolicy::Interval(d) => (pb::FsyncPolicy::Interval, Some(d.as_millis() as u64)),
    };
    let signed = |v: Option<u64>| Some(v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
    pb::TopicConfig {
        retention_ms: signed(config.retention_ms),
        retention_bytes: signed(config.retention_bytes),
        segment_bytes: Some(config.segment_bytes),
        max_message_bytes: Some(config.max_message_bytes),
        fsync: fsync as i32,
        fsync_interval_ms: interval,
        segment_ms: Some(config.segment_ms),
        max_delivery_attempts: Some(config.max_delivery_attempts.unwrap_or(0)),
        dead_letter_topic: Some(config.dead_letter_topic.clone().unwrap_or_default()),
    }
}

/// A topic's summary.
pub fn topic_info(topic: &sluice_core::Topic) -> pb::TopicInfo {
    pb::TopicInfo {
        name: topic.name().to_owned(),
        partitions: topic.partitions().len() as u32,
        config: Some(topic_config(&topic.config())),
    }
}

/// An unreadable offset range of a partition.
pub fn damaged_range(damage: &sluice_core::partition::Damage) -> pb::DamagedRange {
    let reason = match &damage.kind {
        sluice_core::partition::DamageKind::Corrupt { reason } => format!("damaged batch: {reason}"),
        sluice_core::partition::DamageKind::Missing => "segment file lost".to_owned(),
    };
    pb::DamagedRange { from_offset: damage.from, to_offset: damage.to, reason }
}
