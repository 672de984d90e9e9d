//! The on-disk format stays readable: a partition written by format version 1 is checked in
//! (`tests/fixtures/v1`, files renamed `.bin` so they are not mistaken for broker data) and must
//! open and read back exactly. Regenerate deliberately, only for a new format version:
//! `cargo test -p sluice-storage --test format_fixture -- --ignored write_v1_fixture`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use sluice_storage::{BatchBuilder, FsyncPolicy, HeaderRef, LogConfig, PartitionLog, RecordRef};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, fsync: FsyncPolicy::Always, ..LogConfig::default() }
}

/// The records the fixture holds: batch i has i % 3 + 1 records.
fn expected() -> Vec<Rec> {
    let mut all = Vec::new();
    for i in 0..30i64 {
        for j in 0..(i % 3 + 1) {
            all.push(Rec {
                timestamp: 1_700_000_000_000 + i * 1000 + j,
                key: (j % 2 == 0).then(|| format!("key-{i}").into_bytes()),
                value: format!("value {i}.{j}").into_bytes(),
                headers: vec![("event-type".into(), b"fixture".to_vec())],
            });
        }
    }
    all
}

#[test]
#[ignore = "writes the checked-in fixture; run only for a new format version"]
fn write_v1_fixture() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), config())?;
    let records = expected();
    let mut next = 0;
    for i in 0..30i64 {
        let count = (i % 3 + 1) as usize;
        let mut builder = BatchBuilder::default();
        for rec in &records[next..next + count] {
            let headers: Vec<HeaderRef<'_>> =
                rec.headers.iter().map(|(n, v)| HeaderRef { name: n, value: v }).collect();
            builder.push(&RecordRef {
                timestamp: rec.timestamp,
                key: rec.key.as_deref(),
                value: &rec.value,
                headers: &headers,
            })?;
        }
        if i % 5 == 0 {
            builder.set_producer(77, next as u64);
        }
        log.append(builder.finish()?)?;
        next += count;
    }
    log.close()?;
    fs::create_dir_all(fixture_dir())?;
    for entry in fs::read_dir(dir.path())? {
        let entry = entry?;
        let name = entry.file_name().into_string().unwrap_or_default();
        fs::copy(entry.path(), fixture_dir().join(format!("{name}.bin")))?;
    }
    Ok(())
}

fn copy_fixture(to: &Path) -> TestResult {
    for entry in fs::read_dir(fixture_dir())? {
        let entry = entry?;
        let name = entry.file_name().into_string().unwrap_or_default();
        fs::copy(entry.path(), to.join(name.trim_end_matches(".bin")))?;
    }
    Ok(())
}

#[test]
fn a_version_1_partition_opens_and_reads_back_exactly() -> TestResult {
    let dir = tempfile::tempdir()?;
    copy_fixture(dir.path())?;
    let log = PartitionLog::open(dir.path(), config())?;
    assert!(log.stats().segment_count > 1, "the fixture spans sealed segments and an active one");
    let got: Vec<Rec> = read_all(&log, 0, 300)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, expected());
    let mut producers = Vec::new();
    log.visit_batch_headers(0, |h| {
        if h.producer_id != 0 {
            producers.push((h.producer_id, h.producer_sequence));
        }
    })?;
    assert_eq!(producers.len(), 6);
    assert_eq!(log.offset_for_timestamp(1_700_000_015_000)?, Some(30), "seek by time over the fixture");
    Ok(())
}

#[test]
fn a_version_1_partition_opened_after_a_crash_recovers_the_same_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    copy_fixture(dir.path())?;
    fs::remove_file(dir.path().join("clean-shutdown"))?;
    for entry in fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "index" || x == "timeindex") {
            fs::remove_file(path)?;
        }
    }
    let log = PartitionLog::open(dir.path(), config())?;
    let got: Vec<Rec> = read_all(&log, 0, 300)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, expected(), "indexes rebuilt from the v1 log");
    Ok(())
}
