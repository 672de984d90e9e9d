//! Readers at the end of a partition are served from memory: a group commit publishes every
//! batch it wrote before any reader can see the new end offset.

use std::sync::Arc;

use sluice_core::partition::{PartitionHandle, PartitionOptions, PartitionSpec};
use sluice_storage::{BatchBuilder, EncodedBatch, FsyncPolicy, LogConfig, RecordRef};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn batch(value: &[u8]) -> EncodedBatch {
    let mut builder = BatchBuilder::default();
    builder.push(&RecordRef { timestamp: 1, key: None, value, headers: &[] }).unwrap();
    builder.finish().unwrap()
}

async fn open(dir: &std::path::Path, tail_cache_bytes: usize) -> sluice_core::Result<PartitionHandle> {
    PartitionHandle::open(PartitionSpec {
        topic: Arc::from("t"),
        id: 0,
        dir: dir.join("0"),
        snapshot: dir.join("0.producers"),
        config: LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() },
        options: PartitionOptions { tail_cache_bytes, ..PartitionOptions::default() },
    })
    .await
}

#[tokio::test]
async fn a_group_written_by_one_appender_is_read_from_memory_before_the_others_return() -> TestResult {
    let dir = tempfile::tempdir()?;
    let partition = open(dir.path(), 1 << 20).await?;
    let first = partition.enqueue(batch(b"first"), 5);
    let second = partition.enqueue(batch(b"second"), 6);
    // Completing the second append first makes it write both batches as one group; the first
    // appender has not returned when a reader woken by the new end offset reads from offset 0.
    assert_eq!(second.complete().await?, 1);
    assert_eq!(partition.offsets(), (0, 2));
    let read = partition.read(0, usize::MAX).await?;
    let offsets: Vec<u64> = read.batches.iter().map(|b| b.base_offset()).collect();
    assert_eq!(offsets, vec![0, 1], "both batches of the group, once each");
    assert_eq!(partition.log_reads(), 0, "served from the tail cache, not the segment files");

    assert_eq!(first.complete().await?, 0);
    let read = partition.read(0, usize::MAX).await?;
    assert_eq!(read.batches.len(), 2, "the first appender's return adds no second copy");
    assert_eq!(partition.log_reads(), 0);
    Ok(())
}

#[tokio::test]
async fn a_reader_behind_the_tail_cache_reads_the_log_and_is_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let partition = open(dir.path(), 0).await?;
    partition.enqueue(batch(b"only"), 4).complete().await?;
    let read = partition.read(0, usize::MAX).await?;
    assert_eq!(read.batches.len(), 1);
    assert_eq!(partition.log_reads(), 1);
    Ok(())
}
