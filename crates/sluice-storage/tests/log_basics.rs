//! Appending, reading, rolling, seeking by time and closing a partition log.

mod common;

use common::*;
use sluice_storage::{Error, FsyncPolicy, LogConfig, PartitionLog};

#[test]
fn appended_records_read_back_intact_with_dense_offsets() -> TestResult {
    for policy in ALL_POLICIES {
        let dir = tempfile::tempdir()?;
        let log = PartitionLog::open(dir.path(), small_segments(policy))?;
        let mut first = records("a", 3, 1000);
        first[1].key = Some(b"order-7".to_vec());
        first[2].headers = vec![("trace-id".into(), b"abc".to_vec()), ("empty".into(), Vec::new())];
        let a = log.append(encode(&first))?;
        let b = log.append(encode(&records("b", 2, 2000)))?;
        assert_eq!((a.base_offset, a.next_offset, b.base_offset, b.next_offset), (0, 3, 3, 5));
        let got = read_all(&log, 0, 1)?;
        let want: Vec<Rec> = first.into_iter().chain(records("b", 2, 2000)).collect();
        assert_eq!(got.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), want, "{policy:?}");
        assert_eq!(read_all(&log, 4, 1 << 20)?.len(), 1, "a read mid-batch starts at the asked offset");
        assert_eq!(log.offsets(), (0, 5));
    }
    Ok(())
}

#[test]
fn queued_appends_take_offsets_in_queue_order_whichever_completes_first() -> TestResult {
    for policy in ALL_POLICIES {
        let dir = tempfile::tempdir()?;
        let log = PartitionLog::open(dir.path(), small_segments(policy))?;
        let first = log.enqueue_append(encode(&records("first", 2, 1)));
        let second = log.enqueue_append(encode(&records("second", 3, 2)));
        // The later ticket is completed first: it writes both queued batches, in queue order.
        let b = log.complete_append(second)?.appended;
        let a = log.complete_append(first)?.appended;
        assert_eq!((a.base_offset, a.next_offset, b.base_offset, b.next_offset), (0, 2, 2, 5), "{policy:?}");
        let values: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)?.into_iter().map(|(_, r)| r.value).collect();
        assert_eq!(values[0], records("first", 2, 1)[0].value);
        assert_eq!(values[2], records("second", 3, 2)[0].value);
    }
    Ok(())
}

#[test]
fn many_concurrent_appenders_all_return_with_distinct_contiguous_offsets() -> TestResult {
    // Followers wait on the group-commit condvar and leaders wake them only when someone waits:
    // a lost wake-up would hang this test.
    for policy in ALL_POLICIES {
        let dir = tempfile::tempdir()?;
        let log = PartitionLog::open(dir.path(), small_segments(policy))?;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..100).map(|i| log.append(encode(&records(&format!("t{t}"), 1, i))).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut appended: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        appended.sort_by_key(|a| a.base_offset);
        let offsets: Vec<u64> = appended.iter().map(|a| a.base_offset).collect();
        assert_eq!(offsets, (0..800).collect::<Vec<u64>>(), "{policy:?}");
        assert_eq!(log.offsets(), (0, 800));
    }
    Ok(())
}

#[test]
fn a_record_read_alone_at_its_position_equals_the_one_read_with_its_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    for i in 0..20 {
        let mut batch = records(&format!("r{i}"), 7, 1000 + i);
        batch[3].key = Some(b"k".to_vec());
        batch[5].headers = vec![("h".into(), b"v".to_vec())];
        log.append(encode(&batch))?;
    }
    let (_, end) = log.offsets();
    let mut offset = 0;
    while offset < end {
        for batch in log.read(offset, 1 << 20)?.batches {
            for record in batch.records() {
                let record = record?;
                assert_eq!(log.read_record(record.offset, record.position)?, record);
                offset = record.offset + 1;
            }
        }
    }
    assert_eq!(offset, end);
    assert!(log.read_record(end, 56).is_err(), "past the end is refused");
    Ok(())
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    for i in 0..40 {
        log.append(encode(&records(&format!("batch{i}"), 5, i)))?;
    }
    let stats = log.stats();
    assert!(stats.segment_count >= 2, "{} bytes in 4 KiB segments: {stats:?}", stats.size_bytes);
    assert_eq!(stats.end_offset, 200);
    let all = read_all(&log, 0, 300)?;
    assert_eq!(all.len(), 200);
    assert_eq!(all[123].1.value, b"batch24-3");
    for offset in [0, 1, 57, 99, 100, 199] {
        let result = log.read(offset, 1)?;
        let first = &result.batches[0];
        assert!(first.base_offset() <= offset && offset < first.next_offset(), "batch holds {offset}");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(names.iter().all(|n| n.len() == 24), "20-digit names: {names:?}");
    assert_eq!(names.len(), stats.segment_count);
    for name in &names {
        let size = std::fs::metadata(dir.path().join(name))?.len();
        assert!(size <= 4096, "{name} is {size} bytes, over segment_bytes");
    }
    Ok(())
}

#[test]
fn segments_roll_by_age() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::at(1_000_000);
    let disk = std::sync::Arc::new(TestDisk::default());
    let config = LogConfig { segment_ms: Some(1000), ..small_segments(FsyncPolicy::Never) };
    let config = LogConfig { segment_bytes: 1 << 20, ..config };
    let log = PartitionLog::open_with(dir.path(), config, env(&disk, &clock))?;
    log.append(encode(&records("x", 1, 0)))?;
    clock.advance(999);
    log.append(encode(&records("x", 1, 0)))?;
    assert_eq!(log.stats().segment_count, 1);
    clock.advance(1);
    log.append(encode(&records("x", 1, 0)))?;
    assert_eq!(log.stats().segment_count, 2, "rolled once the segment was 1000 ms old");
    Ok(())
}

#[test]
fn reads_outside_the_log_are_out_of_range_with_the_valid_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    log.append(encode(&records("a", 4, 0)))?;
    assert!(log.read(4, 100)?.batches.is_empty(), "reading at the end is empty, not an error");
    match log.read(5, 100) {
        Err(Error::OffsetOutOfRange { requested: 5, start: 0, end: 4 }) => Ok(()),
        other => panic!("expected out of range, got {other:?}"),
    }
}

#[test]
fn seek_by_time_finds_the_first_record_at_or_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    // Timestamps are not monotonic: the answer is the first offset in log order.
    let stamps = [10, 30, 20, 40, 35, 50, 45, 60];
    for chunk in stamps.chunks(1).cycle().take(80).collect::<Vec<_>>().chunks(4) {
        let recs: Vec<Rec> = chunk.iter().map(|c| Rec::new(c[0], vec![b'x'; 50])).collect();
        log.append(encode(&recs))?;
    }
    let all: Vec<i64> = read_all(&log, 0, 1 << 20)?.into_iter().map(|(_, r)| r.timestamp).collect();
    assert!(log.stats().segment_count > 1);
    for target in [0, 10, 11, 25, 30, 36, 41, 60] {
        let expected = all.iter().position(|&t| t >= target).map(|p| p as u64);
        assert_eq!(log.offset_for_timestamp(target)?, expected, "target {target}");
    }
    assert_eq!(log.offset_for_timestamp(61)?, None);
    Ok(())
}

#[test]
fn oversized_batches_and_bad_config_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig { max_batch_bytes: 1000, ..small_segments(FsyncPolicy::Always) };
    let log = PartitionLog::open(dir.path(), config)?;
    let big = encode(&[Rec::new(0, vec![0u8; 2000])]);
    assert!(matches!(log.append(big), Err(Error::BatchTooLarge { limit: 1000, .. })));
    log.append(encode(&records("ok", 1, 0)))?;
    assert_eq!(log.offsets(), (0, 1), "a refused batch changes nothing");
    let bad = LogConfig { segment_bytes: 1, ..LogConfig::default() };
    assert!(matches!(PartitionLog::open(dir.path().join("p2"), bad), Err(Error::InvalidArgument(_))));
    Ok(())
}

#[test]
fn clean_close_reopens_without_a_recovery_scan() -> TestResult {
    for policy in ALL_POLICIES {
        let dir = tempfile::tempdir()?;
        let log = PartitionLog::open(dir.path(), small_segments(policy))?;
        for i in 0..30 {
            log.append(encode(&records("c", 3, i)))?;
        }
        let before = read_all(&log, 0, 1000)?;
        log.close()?;
        assert!(matches!(log.append(encode(&records("late", 1, 0))), Err(Error::Closed)));
        drop(log);
        let log = PartitionLog::open(dir.path(), small_segments(policy))?;
        let stats = log.stats();
        assert!(
            stats.recovery_scanned_bytes < 1024,
            "only the bytes after the last index entry are checked, got {stats:?}"
        );
        assert_eq!(read_all(&log, 0, 1000)?, before);
        log.append(encode(&records("more", 1, 0)))?;
        assert_eq!(log.offsets().1, 91);
    }
    Ok(())
}

#[test]
fn truncation_drops_everything_from_a_batch_boundary() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    for i in 0..40 {
        log.append(encode(&records(&format!("t{i}"), 5, i)))?;
    }
    let before = read_all(&log, 0, 1000)?;
    assert_eq!(log.truncate_to(57)?, 55, "cut at the start of the batch holding 57");
    assert_eq!(read_all(&log, 0, 1000)?, before[..55].to_vec());
    let next = log.append(encode(&records("after", 2, 0)))?;
    assert_eq!(next.base_offset, 55);
    drop(log);
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    assert_eq!(log.offsets(), (0, 57));
    assert_eq!(read_all(&log, 55, 1000)?[0].1.value, b"after-0");
    Ok(())
}

#[test]
fn deleting_a_partition_removes_its_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("topic-0");
    let log = PartitionLog::open(&path, small_segments(FsyncPolicy::Always))?;
    log.append(encode(&records("d", 3, 0)))?;
    log.delete()?;
    assert!(!path.exists());
    Ok(())
}

#[test]
fn concurrent_readers_only_ever_see_whole_batches() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                log.append(encode(&records(&format!("w{i}"), 4, i))).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < 1200 {
                    let got = read_all(&log, 0, 700).unwrap();
                    assert_eq!(got.len() % 4, 0, "a batch is visible whole or not at all");
                    for (offset, rec) in &got {
                        assert_eq!(rec.value, format!("w{}-{}", offset / 4, offset % 4).into_bytes());
                    }
                    seen = got.len();
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    Ok(())
}

#[test]
fn reserved_space_is_invisible_and_released_on_seal_and_after_a_crash() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir()?;
    let config = LogConfig { preallocate_bytes: 1 << 20, segment_bytes: 4 << 20, ..small_segments(FsyncPolicy::Never) };
    let allocated = |base: u64| -> std::io::Result<(u64, u64)> {
        let meta = std::fs::metadata(sluice_storage::layout::log_path(dir.path(), base))?;
        Ok((meta.len(), meta.blocks() * 512))
    };
    let log = PartitionLog::open(dir.path(), config.clone())?;
    log.append(encode(&records("p", 3, 0)))?;
    let (len, on_disk) = allocated(0)?;
    assert_eq!(len, log.stats().size_bytes, "the file's length is the data's length");
    assert!(on_disk >= 1 << 20, "1 MiB reserved ahead, got {on_disk}");
    log.roll()?;
    assert!(allocated(0)?.1 < 64 << 10, "sealing releases the reserve");
    log.append(encode(&records("q", 3, 0)))?;
    assert!(allocated(3)?.1 >= 1 << 20);
    drop(log); // crash
    let log = PartitionLog::open(dir.path(), config)?;
    assert!(allocated(3)?.1 < 64 << 10, "reopening after a crash releases the reserve");
    assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 6);
    Ok(())
}

#[test]
fn batch_headers_can_be_visited_from_any_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
    for i in 0..200u64 {
        let mut builder = sluice_storage::BatchBuilder::default();
        for rec in records("h", 3, 0) {
            builder.push(&sluice_storage::RecordRef {
                timestamp: rec.timestamp,
                key: None,
                value: &rec.value,
                headers: &[],
            })?;
        }
        builder.set_producer(42, i * 3);
        log.append(builder.finish()?)?;
    }
    assert!(log.stats().segment_count > 1);
    let mut seen = Vec::new();
    log.visit_batch_headers(31, |h| seen.push((h.base_offset, h.producer_id, h.producer_sequence)))?;
    let expected: Vec<(u64, u64, u64)> = (10..200).map(|i| (i * 3, 42, i * 3)).collect();
    assert_eq!(seen, expected, "from the batch holding offset 31 to the end");
    Ok(())
}
