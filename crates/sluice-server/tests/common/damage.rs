//! Damaging a stopped broker's data directory the way disks and people do.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sluice_proto::v1 as pb;

use super::{TestServer, create_topic, produce_request, record};

/// Small segments: 40 requests of 10 records of ~1 KB make ~7 segments.
pub fn small_segments() -> pb::TopicConfig {
    pb::TopicConfig { segment_bytes: Some(64 << 10), max_message_bytes: Some(16 << 10), ..pb::TopicConfig::default() }
}

pub fn value(i: u64) -> String {
    format!("record-{i:06}-{}", "v".repeat(1000))
}

/// Creates `topic` and writes 400 records to each partition.
pub async fn filled_topic(server: &TestServer, topic: &str, partitions: u32) {
    create_topic(server, topic, partitions, Some(small_segments())).await;
    let mut producer = server.producer().await;
    for partition in 0..partitions {
        for i in 0..40u64 {
            let records = (0..10).map(|j| record(None, &value(i * 10 + j))).collect();
            let request = pb::ProduceRequest { partition: Some(partition), ..produce_request(topic, records) };
            producer.produce(request).await.unwrap();
        }
    }
}

pub fn partition_dir(data: &Path, topic: &str, partition: u32) -> PathBuf {
    data.join("topics").join(topic).join(partition.to_string())
}

/// Base offsets of a partition's segments, ascending.
pub fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort();
    bases
}

pub fn segment_file(dir: &Path, base: u64, extension: &str) -> PathBuf {
    dir.join(format!("{base:020}.{extension}"))
}

/// Byte position and base offset of the second batch of a segment file.
pub fn second_batch(path: &Path, base: u64) -> (usize, u64) {
    let bytes = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    (12 + len, base + u64::from(count))
}

pub fn fetch(topic: &str, partition: u32, offset: u64, max_bytes: u32) -> pb::FetchRequest {
    pb::FetchRequest { topic: topic.into(), partition, offset, max_bytes, max_wait_ms: 0, timestamp_ms: None }
}

/// Flips a byte inside the records of the second batch of the second segment of a
/// partition (its header stays plausible, its checksum fails); returns the damaged batch's
/// base offset.
pub fn corrupt_second_batch(data: &Path, topic: &str, partition: u32) -> u64 {
    let dir = partition_dir(data, topic, partition);
    let segment = segment_bases(&dir)[1];
    let path = segment_file(&dir, segment, "log");
    let (position, damaged) = second_batch(&path, segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[position + 500] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    damaged
}
