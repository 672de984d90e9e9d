//! Retention by time and size, as the log applies it.

mod common;

use common::*;
use sluice_storage::{Error, FsyncPolicy, LogConfig, PartitionLog};

fn fill(log: &PartitionLog, batches: i64) {
    for i in 0..batches {
        log.append(encode(&records(&format!("r{i}-{}", "x".repeat(60)), 5, i * 1000))).unwrap();
    }
}

#[test]
fn time_retention_deletes_old_closed_segments_and_moves_the_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig { retention_ms: Some(10_000), ..small_segments(FsyncPolicy::Always) };
    let log = PartitionLog::open(dir.path(), config.clone())?;
    fill(&log, 60);
    let segments = log.stats().segment_count;
    assert!(segments > 3);
    assert_eq!(log.apply_retention(0)?, 0, "nothing is older than 10 s at time 0");
    // At t = 40 s, segments whose newest record is older than 30 s go.
    let deleted = log.apply_retention(40_000)?;
    assert!(deleted > 0 && deleted < segments);
    let (start, end) = log.offsets();
    assert!(start > 0 && end == 300);
    let first_ts = read_all(&log, start, 1 << 20)?[0].1.timestamp;
    assert!(first_ts <= 30_000, "kept segments hold records up to the cutoff");
    match log.read(start - 1, 100) {
        Err(Error::OffsetOutOfRange { start: s, end: e, .. }) => assert_eq!((s, e), (start, end)),
        other => panic!("expected out of range, got {other:?}"),
    }
    // Far in the future everything closed goes; the active segment never does.
    log.apply_retention(i64::MAX / 2)?;
    assert_eq!(log.stats().segment_count, 1);
    assert!(!read_all(&log, log.offsets().0, 1 << 20)?.is_empty());
    drop(log);
    let log = PartitionLog::open(dir.path(), config)?;
    assert_eq!(log.offsets().1, 300, "retention survives reopen");
    Ok(())
}

#[test]
fn size_retention_keeps_the_partition_at_or_under_the_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig { retention_bytes: Some(10_000), ..small_segments(FsyncPolicy::Never) };
    let log = PartitionLog::open(dir.path(), config)?;
    fill(&log, 120);
    assert!(log.stats().size_bytes > 20_000);
    log.apply_retention(0)?;
    let stats = log.stats();
    assert!(stats.size_bytes <= 10_000, "{stats:?}");
    assert!(stats.size_bytes > 10_000 - 4096, "only whole segments beyond the limit go: {stats:?}");
    assert_eq!(read_all(&log, stats.start_offset, 1 << 20)?.len() as u64, stats.end_offset - stats.start_offset);
    Ok(())
}
