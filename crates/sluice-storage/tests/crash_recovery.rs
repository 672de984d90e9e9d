//! Crash simulation: torn and damaged tails, lost and corrupt indexes, damaged sealed segments.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use sluice_storage::{Error, FsyncPolicy, PartitionLog, layout};

fn active_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Byte range `start..end` of a batch in the active segment.
type ByteRange = (u64, u64);

/// Builds a log whose active segment ends with three batches; returns all records and the
/// byte ranges of those three batches.
fn log_with_tail(dir: &Path, policy: FsyncPolicy) -> (Vec<(u64, Rec)>, Vec<ByteRange>) {
    let log = PartitionLog::open(dir, small_segments(policy)).unwrap();
    for i in 0..12 {
        log.append(encode(&records(&format!("old{i}"), 3, i))).unwrap();
    }
    log.roll().unwrap();
    let mut ranges = Vec::new();
    let mut start = 0;
    for i in 0..3 {
        log.append(encode(&records(&format!("tail{i}"), 2, 100 + i))).unwrap();
        let len = fs::metadata(active_segment(dir)).unwrap().len();
        ranges.push((start, len));
        start = len;
    }
    let all = read_all(&log, 0, 1 << 20).unwrap();
    (all, ranges)
}

fn reopen_and_check(dir: &Path, policy: FsyncPolicy, expected: &[(u64, Rec)]) {
    let log = PartitionLog::open(dir, small_segments(policy)).unwrap();
    assert_eq!(read_all(&log, 0, 1 << 20).unwrap(), expected);
    let next = log.append(encode(&records("after", 1, 0))).unwrap();
    assert_eq!(next.base_offset, expected.len() as u64, "appends continue right after the last good batch");
    drop(log);
    let log = PartitionLog::open(dir, small_segments(policy)).unwrap();
    assert_eq!(log.offsets().1, expected.len() as u64 + 1);
}

#[test]
fn a_tail_cut_at_any_byte_recovers_exactly_the_whole_batches_before_it() -> TestResult {
    for policy in ALL_POLICIES {
        let template = tempfile::tempdir()?;
        let (all, ranges) = log_with_tail(template.path(), policy);
        let tail_start = ranges[0].0;
        let full_len = ranges[2].1;
        let old_records = all.len() - 6;
        for cut in tail_start..full_len {
            let dir = tempfile::tempdir()?;
            copy_dir(template.path(), dir.path());
            let file = OpenOptions::new().write(true).open(active_segment(dir.path()))?;
            file.set_len(cut)?;
            let whole = ranges.iter().filter(|(_, end)| *end <= cut).count();
            reopen_and_check(dir.path(), policy, &all[..old_records + 2 * whole]);
        }
    }
    Ok(())
}

#[test]
fn a_flipped_byte_in_the_tail_drops_that_batch_and_everything_after() -> TestResult {
    let template = tempfile::tempdir()?;
    let (all, ranges) = log_with_tail(template.path(), FsyncPolicy::Always);
    let old_records = all.len() - 6;
    for (batch, &(start, end)) in ranges.iter().enumerate() {
        for at in start..end {
            let dir = tempfile::tempdir()?;
            copy_dir(template.path(), dir.path());
            let path = active_segment(dir.path());
            let mut bytes = fs::read(&path)?;
            bytes[at as usize] ^= 0x5a;
            fs::write(&path, &bytes)?;
            reopen_and_check(dir.path(), FsyncPolicy::Always, &all[..old_records + 2 * batch]);
        }
    }
    Ok(())
}

#[test]
fn lost_or_corrupt_indexes_are_rebuilt_and_reads_are_identical() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    for i in 0..200 {
        log.append(encode(&records(&format!("i{i}"), 4, i * 3)))?;
    }
    let before = read_all(&log, 0, 500)?;
    let seeks: Vec<_> = (0..600).step_by(37).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
    let segments = log.stats().segment_count;
    assert!(segments >= 4);
    log.close()?;
    drop(log);
    let mut damaged = 0;
    for (i, entry) in fs::read_dir(dir.path())?.enumerate() {
        let path = entry?.path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("index") if i % 2 == 0 => fs::remove_file(&path)?,
            Some("index") | Some("timeindex") => {
                let mut bytes = fs::read(&path)?;
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                fs::write(&path, &bytes)?;
            }
            _ => continue,
        }
        damaged += 1;
    }
    assert!(damaged >= segments);
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    assert_eq!(read_all(&log, 0, 500)?, before);
    let after: Vec<_> = (0..600).step_by(37).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
    assert_eq!(after, seeks);
    for base in sealed_bases(dir.path()) {
        assert!(layout::index_path(dir.path(), base).exists(), "rebuilt index written back");
    }
    Ok(())
}

#[test]
fn recovery_after_a_crash_scans_only_the_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    for i in 0..50 {
        log.append(encode(&records(&format!("r{i}"), 4, i)))?;
    }
    let active_len = fs::metadata(active_segment(dir.path()))?.len();
    let total = log.stats().size_bytes;
    drop(log); // no close: the next open treats this as a crash
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    assert_eq!(log.stats().recovery_scanned_bytes, active_len);
    assert!(active_len < total / 2);
    drop(log);
    // Without an index, a sealed segment is scanned too.
    let first = sealed_bases(dir.path())[0];
    fs::remove_file(layout::time_index_path(dir.path(), first))?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    assert!(log.stats().recovery_scanned_bytes > active_len);
    Ok(())
}

#[test]
fn damage_inside_a_sealed_segment_is_an_error_not_skipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    for i in 0..50 {
        log.append(encode(&records(&format!("s{i}"), 4, i)))?;
    }
    drop(log);
    let first = sealed_bases(dir.path())[0];
    let path = layout::log_path(dir.path(), first);
    let mut bytes = fs::read(&path)?;
    bytes[100] ^= 1;
    fs::write(&path, &bytes)?;
    // With its index intact the damage is found when read, never served.
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    assert!(matches!(read_all(&log, 0, 1 << 20), Err(Error::DataLoss { .. })));
    drop(log);
    // Rebuilding its index finds it at open.
    fs::remove_file(layout::index_path(dir.path(), first))?;
    match PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always)) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a corrupt-segment error, got {other:?}"),
    }
    Ok(())
}

fn sealed_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> =
        fs::read_dir(dir).unwrap().filter_map(|e| layout::parse_log_name(e.unwrap().file_name().to_str()?)).collect();
    bases.sort();
    bases.pop();
    bases
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
