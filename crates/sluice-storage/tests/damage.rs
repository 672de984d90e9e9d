//! Damage found after open: a corrupt batch in a sealed segment, a lost segment file. The log
//! serves every intact offset, reports the damaged range as `DataLoss`, and lets a reader go on
//! after it.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use sluice_storage::{Error, FsyncPolicy, MissingRange, PartitionLog, layout};

const TOTAL: u64 = 800;

/// 200 batches of 4 records (`TOTAL` records) in small segments, closed cleanly; returns the sealed bases.
fn filled(dir: &Path) -> Vec<u64> {
    let log = PartitionLog::open(dir, small_segments(FsyncPolicy::Always)).unwrap();
    for i in 0..TOTAL / 4 {
        log.append(encode(&records(&format!("b{i}"), 4, i as i64))).unwrap();
    }
    log.close().unwrap();
    let mut bases: Vec<u64> =
        fs::read_dir(dir).unwrap().filter_map(|e| layout::parse_log_name(e.unwrap().file_name().to_str()?)).collect();
    bases.sort();
    bases.pop();
    bases
}

fn reopen(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, small_segments(FsyncPolicy::Always)).unwrap()
}

/// Byte position of the batch starting at `offset` in the segment file at `path`.
fn batch_position(path: &Path, base: u64, offset: u64) -> usize {
    let bytes = fs::read(path).unwrap();
    let (mut at, mut next) = (0usize, base);
    while next < offset {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(bytes[at + 20..at + 24].try_into().unwrap());
        at += 12 + len;
        next += u64::from(count);
    }
    assert_eq!(next, offset, "offset {offset} starts a batch");
    at
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_batch_costs_only_its_own_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bases = filled(dir.path());
    let segment = bases[1];
    let damaged = segment + 4;
    let path = layout::log_path(dir.path(), segment);
    // A byte in the records of the second batch: its header is fine, its checksum is not.
    flip(&path, batch_position(&path, segment, damaged) + 70);
    let log = reopen(dir.path());

    // Everything before the damage reads back, and the read that reaches it stops before it.
    let before = log.read(0, usize::MAX)?;
    assert_eq!(before.batches.last().map(|b| b.next_offset()), Some(segment), "the first segment is whole");
    let up_to = log.read(segment, usize::MAX)?;
    assert_eq!(up_to.batches.len(), 1, "only the intact batch before the damaged one");
    match log.read(damaged, 1 << 20) {
        Err(Error::DataLoss { from, to, path: Some(p), .. }) => {
            assert_eq!((from, to), (damaged, damaged + 4), "exactly the damaged batch");
            assert_eq!(p, path);
        }
        other => panic!("expected DataLoss, got {other:?}"),
    }
    // A reader that goes on after the damage gets every later record.
    let after = read_all(&log, damaged + 4, 300)?;
    assert_eq!(after.len() as u64, TOTAL - damaged - 4);
    assert_eq!(after[0].1.value, format!("b{}-0", (damaged + 4) / 4).into_bytes());
    Ok(())
}

#[test]
fn a_damaged_batch_header_is_skipped_to_the_next_indexed_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bases = filled(dir.path());
    let segment = bases[1];
    let damaged = segment + 8;
    let path = layout::log_path(dir.path(), segment);
    // The record-count field: the batch's length can no longer be trusted.
    flip(&path, batch_position(&path, segment, damaged) + 21);
    let log = reopen(dir.path());
    let Err(Error::DataLoss { from, to, .. }) = log.read(damaged, 1 << 20) else {
        panic!("expected DataLoss at {damaged}");
    };
    assert_eq!(from, damaged);
    assert!(to > from && to <= bases[2], "resumes within the segment or at its end: {from}..{to}");
    // Reading at the resume point walks past the damage instead of stopping at it again.
    let after = read_all(&log, to, 300)?;
    assert_eq!(after.first().map(|(o, _)| *o), Some(to));
    assert_eq!(after.last().map(|(o, _)| *o), Some(TOTAL - 1));
    Ok(())
}

#[test]
fn a_lost_middle_segment_is_a_reported_gap_not_silence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bases = filled(dir.path());
    assert!(bases.len() >= 4, "{bases:?}");
    let (lost, next) = (bases[2], bases[3]);
    for path in [
        layout::log_path(dir.path(), lost),
        layout::index_path(dir.path(), lost),
        layout::time_index_path(dir.path(), lost),
    ] {
        fs::remove_file(path)?;
    }
    let log = reopen(dir.path());
    assert_eq!(log.missing_ranges(), vec![MissingRange { from: lost, to: next }]);
    assert_eq!(log.offsets(), (0, TOTAL), "the rest of the log is there");
    // Up to the gap reads as before; in it, the range is named; after it, reads work.
    let before = read_until_error(&log, 0);
    assert_eq!(before.0, lost);
    assert!(matches!(before.1, Error::DataLoss { from, to, .. } if from == lost && to == next), "{:?}", before.1);
    assert!(matches!(log.read(lost + 1, 1 << 20), Err(Error::DataLoss { .. })));
    let after = read_all(&log, next, 300)?;
    assert_eq!(after.len() as u64, TOTAL - next);
    // Batch headers (which rebuild producer state) are read around the gap.
    let mut seen = 0;
    log.visit_batch_headers(0, |h| seen += u64::from(h.record_count))?;
    assert_eq!(seen, TOTAL - (next - lost));
    Ok(())
}

/// Reads from `from` until a read fails; returns the offset reached and the error.
fn read_until_error(log: &PartitionLog, from: u64) -> (u64, Error) {
    let mut next = from;
    loop {
        match log.read(next, 300) {
            Ok(result) if result.batches.is_empty() => panic!("reached the end at {next} without an error"),
            Ok(result) => next = result.batches.last().unwrap().next_offset(),
            Err(e) => return (next, e),
        }
    }
}
