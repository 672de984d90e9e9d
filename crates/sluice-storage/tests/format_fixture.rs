//! The on-disk format stays readable: a partition written in each batch format version is
//! checked in (`tests/fixtures/v1` to `v3`; files renamed `.bin` so they are not mistaken for
//! broker data) and must open and read back exactly. Write a fixture deliberately, once, when its
//! format version is new, and never rewrite an old one:
//! `cargo test -p sluice-storage --test format_fixture -- --ignored write_v3_fixture`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use sluice_storage::{BatchBuilder, FsyncPolicy, HeaderRef, LogConfig, PartitionLog, RecordRef};

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

fn builder(version: u8) -> BatchBuilder {
    match version {
        1 => BatchBuilder::format_v1(),
        2 => BatchBuilder::format_v2(),
        _ => BatchBuilder::default(),
    }
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
fn write_v3_fixture() -> TestResult {
    write_fixture(3)
}

/// Writes the fixture of format `version`: 30 batches holding [`expected`].
fn write_fixture(version: u8) -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), config())?;
    let records = expected();
    let (mut next, mut sequence) = (0, 0);
    for i in 0..30i64 {
        let count = (i % 3 + 1) as usize;
        let mut builder = builder(version);
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
            // Producer 77's sequence counts its own records (the v1 fixture predates that check).
            builder.set_producer(77, sequence);
            sequence += count as u64;
        }
        log.append(builder.finish()?)?;
        next += count;
    }
    log.close()?;
    fs::create_dir_all(fixture_dir(version))?;
    for entry in fs::read_dir(dir.path())? {
        let entry = entry?;
        let name = entry.file_name().into_string().unwrap_or_default();
        fs::copy(entry.path(), fixture_dir(version).join(format!("{name}.bin")))?;
    }
    Ok(())
}

fn copy_fixture(version: u8, to: &Path) -> TestResult {
    for entry in fs::read_dir(fixture_dir(version))? {
        let entry = entry?;
        let name = entry.file_name().into_string().unwrap_or_default();
        fs::copy(entry.path(), to.join(name.trim_end_matches(".bin")))?;
    }
    Ok(())
}

/// Every batch's format version, in offset order.
fn versions(log: &PartitionLog) -> Result<Vec<u8>, sluice_storage::Error> {
    let mut versions = Vec::new();
    log.visit_batch_headers(0, |h| versions.push(h.version))?;
    Ok(versions)
}

#[test]
fn a_version_1_partition_opens_and_reads_back_exactly() -> TestResult {
    opens_and_reads_back_exactly(1)
}

#[test]
fn a_version_2_partition_opens_and_reads_back_exactly() -> TestResult {
    opens_and_reads_back_exactly(2)
}

#[test]
fn a_version_3_partition_opens_and_reads_back_exactly() -> TestResult {
    opens_and_reads_back_exactly(3)
}

fn opens_and_reads_back_exactly(version: u8) -> TestResult {
    let dir = tempfile::tempdir()?;
    copy_fixture(version, dir.path())?;
    let log = PartitionLog::open(dir.path(), config())?;
    assert_eq!(versions(&log)?, vec![version; 30], "the fixture is in the format it is named for");
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
    copy_fixture(1, dir.path())?;
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

#[test]
fn a_version_1_partition_takes_new_batches_and_reads_both_back() -> TestResult {
    takes_new_batches_and_reads_both_back(1)
}

#[test]
fn a_version_2_partition_takes_new_batches_and_reads_both_back() -> TestResult {
    takes_new_batches_and_reads_both_back(2)
}

fn takes_new_batches_and_reads_both_back(version: u8) -> TestResult {
    let dir = tempfile::tempdir()?;
    copy_fixture(version, dir.path())?;
    let log = PartitionLog::open(dir.path(), config())?;
    let mut all = expected();
    let added = Rec {
        timestamp: 1_800_000_000_000,
        key: Some(b"after the upgrade".to_vec()),
        value: b"new".to_vec(),
        headers: vec![("event-type".into(), b"new".to_vec()), ("empty".into(), Vec::new())],
    };
    let headers: Vec<HeaderRef<'_>> = added.headers.iter().map(|(n, v)| HeaderRef { name: n, value: v }).collect();
    let mut batch = BatchBuilder::default();
    batch.push(&RecordRef {
        timestamp: added.timestamp,
        key: added.key.as_deref(),
        value: &added.value,
        headers: &headers,
    })?;
    log.append(batch.finish()?)?;
    all.push(added);
    let mut expected_versions = vec![version; 30];
    expected_versions.push(sluice_storage::layout::BATCH_FORMAT_VERSION);
    assert_eq!(versions(&log)?, expected_versions);
    let got: Vec<Rec> = read_all(&log, 0, 300)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, all);
    log.close()?;
    let log = PartitionLog::open(dir.path(), config())?;
    let got: Vec<Rec> = read_all(&log, 0, 300)?.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, all, "and again after a reopen");
    assert_eq!(log.read_record(60, 56)?.value, &b"new"[..], "a record read alone from a new batch");
    assert_eq!(log.read_record(0, 56)?.value, &b"value 0.0"[..], "and one from an old batch");
    Ok(())
}
