//! `PartitionLog::read_cached`: a read that copies only from the page cache gives exactly what
//! `read` gives, or nothing (data not cached, a first batch over 2 MiB and over the limit,
//! damage), never something else.

mod common;

use std::fs::{self, File};
use std::path::Path;

use common::*;
use rustix::io::{Errno, ReadWriteFlags};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, ReadResult, layout};

const BATCHES: u64 = 60;

/// `BATCHES` batches of 4 records each in small segments.
fn filled(dir: &Path) -> PartitionLog {
    let log = PartitionLog::open(dir, small_segments(FsyncPolicy::Always)).unwrap();
    for i in 0..BATCHES {
        log.append(encode(&records(&format!("b{i}"), 4, i as i64))).unwrap();
    }
    log
}

/// What a cache-only read of one byte of `path` says: `Ok(true)` cached, `Ok(false)` not
/// cached, `Err` the filesystem has no RWF_NOWAIT (then no cache-only read can succeed).
fn cached(path: &Path) -> Result<bool, Errno> {
    let file = File::open(path).unwrap();
    let mut byte = [0u8; 1];
    match rustix::io::preadv2(&file, &mut [std::io::IoSliceMut::new(&mut byte)], 0, ReadWriteFlags::NOWAIT) {
        Ok(_) => Ok(true),
        Err(Errno::AGAIN) => Ok(false),
        Err(other) => Err(other),
    }
}

fn evict(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    rustix::fs::fadvise(&File::open(path)?, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

fn same(cached: &ReadResult, read: &ReadResult) {
    assert_eq!((cached.start_offset, cached.end_offset), (read.start_offset, read.end_offset));
    let bytes = |r: &ReadResult| r.batches.iter().map(|b| b.as_bytes().clone()).collect::<Vec<_>>();
    assert_eq!(bytes(cached), bytes(read), "the same batches, byte for byte");
}

#[test]
fn a_cached_read_returns_what_a_read_returns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path());
    let supported = cached(&layout::log_path(dir.path(), 0)).is_ok();
    let end = BATCHES * 4;
    for offset in 0..=end {
        for max_bytes in [400, 4096, 1 << 20] {
            let read = log.read(offset, max_bytes)?;
            match log.read_cached(offset, max_bytes) {
                Some(cached) => same(&cached, &read),
                // Just written, so in the page cache: only a filesystem that cannot read
                // cache-only leaves these small batches to the ordinary read.
                None => assert!(
                    !supported,
                    "offset {offset}, max_bytes {max_bytes}: cached data was not read from the cache"
                ),
            }
        }
    }
    Ok(())
}

#[test]
fn a_first_batch_over_the_limit_is_read_from_the_cache_up_to_2_mib() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() })?;
    let supported = cached(&layout::log_path(dir.path(), 0)).is_ok();
    let value = |len: usize| Rec::new(1, vec![7u8; len]);
    // A batch of just over 1 MiB (what a full produce request makes), then one of 3 MiB.
    log.append(encode(&[value(1 << 20)]))?;
    log.append(encode(&[value(1 << 20), value(1 << 20), value(1 << 20)]))?;
    let read = log.read(0, 1 << 20)?;
    assert_eq!(read.batches.len(), 1, "an ordinary read returns the first batch whatever the limit");
    assert!(read.batches[0].as_bytes().len() > 1 << 20);
    match log.read_cached(0, 1 << 20) {
        Some(cached) => same(&cached, &read),
        None => assert!(!supported, "a first batch of just over the limit was left to the ordinary read"),
    }
    assert_eq!(log.read(1, 10)?.batches.len(), 1);
    assert!(log.read_cached(1, 10).is_none(), "a first batch over 2 MiB is left to the ordinary read");
    Ok(())
}

#[test]
fn damage_is_left_to_the_ordinary_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path());
    log.close()?;
    let path = layout::log_path(dir.path(), 0);
    // A byte inside the records of the second batch: its checksum fails.
    let mut bytes = fs::read(&path)?;
    let first_len = u32::from_le_bytes(bytes[8..12].try_into()?) as usize;
    bytes[12 + first_len + 70] ^= 0x5a;
    fs::write(&path, bytes)?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;

    assert!(log.read(4, 1 << 20).is_err(), "the ordinary read reports the damage");
    assert!(log.read_cached(4, 1 << 20).is_none());
    // Before the damage, both return the intact batch and stop there.
    let read = log.read(0, 1 << 20)?;
    assert_eq!(read.batches.len(), 1);
    if let Some(cached) = log.read_cached(0, 1 << 20) {
        same(&cached, &read);
    }
    Ok(())
}

#[test]
fn data_out_of_the_page_cache_is_left_to_the_ordinary_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = filled(dir.path());
    // Clean pages of a file nobody maps are dropped on request, except where the page cache is
    // the only copy (tmpfs); a file of its own tells which, and whether RWF_NOWAIT works here.
    let probe = dir.path().join("probe");
    fs::write(&probe, b"cached")?;
    evict(&probe)?;
    if cached(&probe) != Ok(false) {
        eprintln!("this filesystem keeps its pages or has no RWF_NOWAIT: nothing to check here");
        return Ok(());
    }
    // The cache-only read must be the first touch after eviction: a miss starts readahead,
    // which brings the pages back.
    evict(&layout::log_path(dir.path(), 0))?;
    assert!(log.read_cached(0, 1 << 20).is_none(), "uncached data is not waited for");
    let read = log.read(0, 1 << 20)?;
    assert_eq!(read.batches.first().map(|b| b.base_offset()), Some(0), "the ordinary read still reads it");
    Ok(())
}
