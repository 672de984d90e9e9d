//! Conversions between protocol messages and broker-core types.

use std::time::Duration;

use sluice_core::{
    FsyncPolicy, ProduceOutcome, ProduceRequest, ProducerRef, RecordFields, RecordSource, Records, TopicConfig,
    TopicConfigChange,
};
use sluice_proto::v1 as pb;
use sluice_proto::wire;
use sluice_storage::HeaderRef;
use tonic::Status;

fn invalid(message: impl Into<String>) -> Status {
    crate::status::to_status(sluice_core::Error::InvalidArgument(message.into()))
}

/// A produce request from the wire: its records stay in the receive buffer until they are
/// copied into a batch.
pub fn produce_request(request: wire::ProduceRequest) -> Result<ProduceRequest, Status> {
    let producer = match request.producer_id {
        Some(producer_id) => Some(ProducerRef { producer_id, first_sequence: request.first_sequence }),
        None => None,
    };
    Ok(ProduceRequest {
        topic: request.topic,
        partition: request.partition,
        records: Records::new(WireRecords(request.records)),
        producer,
    })
}

/// A request's records in their wire encoding, as the core reads records.
#[derive(Debug)]
struct WireRecords(wire::RequestRecords);

impl RecordSource for WireRecords {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn key(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index).key
    }

    fn size(&self, index: usize) -> usize {
        let record = self.0.get(index);
        record.key.map_or(0, <[u8]>::len) + record.value.len() + record.header_bytes as usize
    }

    fn header_count(&self, index: usize) -> usize {
        self.0.get(index).header_count
    }

    fn record<'a>(&'a self, index: usize, headers: &mut Vec<HeaderRef<'a>>) -> RecordFields<'a> {
        let record = self.0.get(index);
        headers.clear();
        headers.extend(record.headers().map(|(name, value)| HeaderRef { name, value }));
        RecordFields { key: record.key, value: record.value, timestamp: record.timestamp_ms }
    }
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
        throttle_ms: 0,
    }
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

/// The settings a request names, as a change the core applies whole; an unknown fsync policy
/// or an interval policy without its interval is refused before anything changes.
pub fn topic_config_change(config: &pb::TopicConfig) -> Result<TopicConfigChange, Status> {
    let non_negative = |value: i64| u64::try_from(value).ok();
    let policy = pb::FsyncPolicy::try_from(config.fsync)
        .map_err(|_unknown| invalid(format!("unknown fsync policy {}", config.fsync)))?;
    let interval = config.fsync_interval_ms.map(Duration::from_millis);
    let fsync = match policy {
        pb::FsyncPolicy::Unspecified => None,
        pb::FsyncPolicy::Always => Some(FsyncPolicy::Always),
        pb::FsyncPolicy::Never => Some(FsyncPolicy::Never),
        pb::FsyncPolicy::Interval => Some(FsyncPolicy::Interval(
            interval.ok_or_else(|| invalid("FSYNC_POLICY_INTERVAL needs fsync_interval_ms"))?,
        )),
    };
    Ok(TopicConfigChange {
        retention_ms: config.retention_ms.map(non_negative),
        retention_bytes: config.retention_bytes.map(non_negative),
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_message_bytes: config.max_message_bytes,
        fsync,
        fsync_interval: interval.filter(|_| fsync.is_none()),
        max_delivery_attempts: config.max_delivery_attempts.map(|n| (n != 0).then_some(n)),
        dead_letter_topic: config.dead_letter_topic.as_ref().map(|name| (!name.is_empty()).then(|| name.clone())),
    })
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
