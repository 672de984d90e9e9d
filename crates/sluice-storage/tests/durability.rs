//! The fsync policy's observable contract, group commit, and disk failures.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use sluice_storage::{Error, FsyncPolicy, LogConfig, PartitionLog};

fn open(policy: FsyncPolicy) -> (tempfile::TempDir, Arc<TestDisk>, Arc<ManualClock>, PartitionLog) {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(TestDisk::default());
    let clock = ManualClock::at(1_000_000);
    let config = LogConfig { segment_bytes: 1 << 20, ..small_segments(policy) };
    let log = PartitionLog::open_with(dir.path(), config, env(&disk, &clock)).unwrap();
    (dir, disk, clock, log)
}

#[test]
fn fsync_always_syncs_before_every_acknowledgement() -> TestResult {
    let (_dir, disk, _clock, log) = open(FsyncPolicy::Always);
    for i in 1..=5 {
        log.append(encode(&records("a", 2, 0)))?;
        assert_eq!(disk.syncs.load(Ordering::SeqCst), i, "one fsync per sequential append");
    }
    Ok(())
}

#[test]
fn fsync_never_and_interval_do_not_sync_every_append() -> TestResult {
    let (_dir, disk, _clock, log) = open(FsyncPolicy::Never);
    for _ in 0..5 {
        log.append(encode(&records("n", 2, 0)))?;
    }
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 0);
    log.sync()?;
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 1, "an explicit sync still syncs");

    let (_dir, disk, clock, log) = open(FsyncPolicy::Interval(Duration::from_millis(100)));
    log.append(encode(&records("i", 1, 0)))?;
    clock.advance(50);
    log.append(encode(&records("i", 1, 0)))?;
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 0, "not yet due");
    clock.advance(50);
    log.append(encode(&records("i", 1, 0)))?;
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 1, "due after the interval");
    Ok(())
}

#[test]
fn group_commit_shares_fsyncs_and_nothing_is_visible_before_its_fsync() -> TestResult {
    let (_dir, disk, _clock, log) = open(FsyncPolicy::Always);
    disk.hold_syncs(true);
    let append = |tag: String, records: usize| {
        let log = log.clone();
        std::thread::spawn(move || log.append(encode(&records_of(&tag, records))).unwrap())
    };
    // The first append's fsync is held while seven more queue behind it.
    let first = append("first".into(), 1);
    wait_until("the first group's fsync", || disk.held.load(Ordering::SeqCst) == 1);
    let queued: Vec<_> = (0..7).map(|i| append(format!("q{i}"), 3)).collect();
    wait_until("seven queued appends", || log.queued_appends() == 7);
    assert_eq!(log.offsets().1, 0, "a written batch is invisible to readers until its fsync completes");
    assert!(read_all(&log, 0, 1 << 20)?.is_empty());
    disk.hold_syncs(false);
    let mut acked = vec![first.join().unwrap()];
    acked.extend(queued.into_iter().map(|q| q.join().unwrap()));
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 2, "8 appends, 2 fsyncs");
    acked.sort_by_key(|a| a.base_offset);
    let mut next = 0;
    for a in &acked {
        assert_eq!(a.base_offset, next, "acknowledged offsets are contiguous and distinct");
        next = a.next_offset;
    }
    assert_eq!(next, 22);
    assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 22);
    Ok(())
}

#[test]
fn health_and_state_reads_never_wait_for_an_fsync() -> TestResult {
    let (_dir, disk, _clock, log) = open(FsyncPolicy::Always);
    disk.hold_syncs(true);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || log.append(encode(&records_of("held", 1))).unwrap())
    };
    wait_until("the append's fsync", || disk.held.load(Ordering::SeqCst) == 1);
    // The commit holds the writer lock across that fsync; these must not need it.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = log.clone();
    std::thread::spawn(move || {
        let answers = (reader.poisoned(), reader.offsets(), reader.config_fsync(), reader.missing_ranges());
        let _ = tx.send(answers);
    });
    let answered = rx.recv_timeout(Duration::from_secs(10));
    disk.hold_syncs(false);
    writer.join().unwrap();
    let (poisoned, offsets, fsync, missing) = answered.expect("state reads waited for the fsync");
    assert_eq!((poisoned, offsets, fsync, missing), (None, (0, 0), FsyncPolicy::Always, vec![]));
    Ok(())
}

fn records_of(tag: &str, count: usize) -> Vec<Rec> {
    records(tag, count, 0)
}

#[test]
fn a_failed_fsync_poisons_the_log_but_keeps_it_readable() -> TestResult {
    let (dir, disk, _clock, log) = open(FsyncPolicy::Always);
    log.append(encode(&records("good", 3, 0)))?;
    disk.fail_syncs.store(true, Ordering::SeqCst);
    assert!(matches!(log.append(encode(&records("bad", 1, 0))), Err(Error::Io { .. })));
    disk.fail_syncs.store(false, Ordering::SeqCst);
    assert!(matches!(log.append(encode(&records("later", 1, 0))), Err(Error::Poisoned { .. })));
    assert!(log.poisoned().is_some());
    assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 3, "readers see only acknowledged batches");
    log.close()?;
    drop(log);
    let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Always))?;
    assert!(log.poisoned().is_none(), "reopening recovers");
    log.append(encode(&records("again", 1, 0)))?;
    Ok(())
}

#[test]
fn a_full_disk_refuses_appends_without_poisoning_and_they_resume_when_space_is_back() -> TestResult {
    for partial in [0, 10, 60] {
        let (_dir, disk, _clock, log) = open(FsyncPolicy::Never);
        log.append(encode(&records("good", 3, 0)))?;
        disk.partial_write_bytes.store(partial, Ordering::SeqCst);
        disk.fail_writes.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            match log.append(encode(&records("full-disk", 2, 0))) {
                Err(Error::DiskFull { needed, .. }) => assert!(needed > 0),
                other => panic!("expected DiskFull every time, got {other:?}"),
            }
        }
        assert_eq!(log.poisoned(), None);
        assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 3);
        disk.fail_writes.store(false, Ordering::SeqCst);
        assert_eq!(log.append(encode(&records("space-back", 2, 0)))?.base_offset, 3, "nothing of the refused writes");
        assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 5);
    }
    Ok(())
}

#[test]
fn appends_that_would_eat_into_the_free_space_reserve_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock: Arc<dyn sluice_storage::Clock> = Arc::new(sluice_storage::SystemClock);
    let space = Arc::new(sluice_storage::space::FreeSpace::new(dir.path(), u64::MAX / 2, Arc::clone(&clock)));
    let env = sluice_storage::LogEnv { space: Some(space), ..sluice_storage::LogEnv::default() };
    let log = PartitionLog::open_with(dir.path(), small_segments(FsyncPolicy::Never), env)?;
    assert!(matches!(log.append(encode(&records("x", 1, 0))), Err(Error::DiskFull { .. })));
    assert_eq!((log.offsets(), log.poisoned()), ((0, 0), None));
    Ok(())
}

#[test]
fn a_failed_write_leaves_the_log_readable_up_to_the_last_good_batch() -> TestResult {
    for partial in [0, 10, 60] {
        let (dir, disk, _clock, log) = open(FsyncPolicy::Never);
        log.append(encode(&records("good", 3, 0)))?;
        disk.partial_write_bytes.store(partial, Ordering::SeqCst);
        disk.write_errno.store(5, Ordering::SeqCst); // EIO: the disk is failing, not full
        disk.fail_writes.store(true, Ordering::SeqCst);
        match log.append(encode(&records("failed", 2, 0))) {
            Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(5)),
            other => panic!("expected EIO, got {other:?}"),
        }
        assert!(matches!(log.append(encode(&records("x", 1, 0))), Err(Error::Poisoned { .. })));
        assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 3);
        drop(log);
        let log = PartitionLog::open(dir.path(), small_segments(FsyncPolicy::Never))?;
        assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 3, "the torn write is gone after reopen");
        assert_eq!(log.append(encode(&records("ok", 1, 0)))?.base_offset, 3);
    }
    Ok(())
}

#[test]
fn a_failed_explicit_or_timed_sync_poisons_the_log_too() -> TestResult {
    for interval in [false, true] {
        let policy = if interval { FsyncPolicy::Interval(Duration::from_millis(10)) } else { FsyncPolicy::Never };
        let (_dir, disk, clock, log) = open(policy);
        log.append(encode(&records("unsynced", 2, 0)))?;
        disk.fail_syncs.store(true, Ordering::SeqCst);
        clock.advance(20);
        let failed = if interval { log.sync_if_due() } else { log.sync() };
        assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
        disk.fail_syncs.store(false, Ordering::SeqCst);
        assert!(matches!(log.append(encode(&records("x", 1, 0))), Err(Error::Poisoned { .. })));
        assert_eq!(read_all(&log, 0, 1 << 20)?.len(), 2, "still readable");
    }
    Ok(())
}

fn idempotent(producer_id: u64, first_sequence: u64, records: usize, value_len: usize) -> sluice_storage::EncodedBatch {
    batch_of(Some((producer_id, first_sequence)), records, value_len)
}

fn batch_of(producer: Option<(u64, u64)>, records: usize, value_len: usize) -> sluice_storage::EncodedBatch {
    let mut builder = sluice_storage::BatchBuilder::default();
    if let Some((producer_id, first_sequence)) = producer {
        builder.set_producer(producer_id, first_sequence);
    }
    let value = vec![b'v'; value_len];
    for _ in 0..records {
        builder.push(&sluice_storage::RecordRef { timestamp: 0, key: None, value: &value, headers: &[] }).unwrap();
    }
    builder.finish().unwrap()
}

#[test]
fn a_producers_batches_queued_behind_a_failed_one_are_refused_not_written_past_the_gap() -> TestResult {
    let (_dir, _disk, _clock, log) = open(FsyncPolicy::Never);
    let config = LogConfig { max_batch_bytes: 8192, ..log.config() };
    log.set_config(config)?;
    log.append(idempotent(7, 0, 2, 10))?;
    // Sequences 2..3 fail (too large), so 3.. must not be written before 2.. is.
    let failed = log.append(idempotent(7, 2, 1, 10_000));
    assert!(matches!(failed, Err(Error::BatchTooLarge { .. })), "{failed:?}");
    let gap = log.append(idempotent(7, 3, 1, 10));
    assert!(matches!(gap, Err(Error::ProducerSequence { expected: 2, received: 3, .. })), "{gap:?}");
    assert_eq!(log.offsets().1, 2, "nothing was written past the gap");
    // The producer resends from the failed batch on; other producers were never affected.
    log.append(idempotent(7, 2, 1, 10))?;
    log.append(idempotent(7, 3, 1, 10))?;
    log.append(idempotent(9, 40, 1, 10))?;
    assert_eq!(log.offsets().1, 5);
    Ok(())
}

#[test]
fn an_append_completes_inline_only_when_it_touches_nothing_but_the_page_cache() -> TestResult {
    // Segments of 4 KiB: a batch that does not fit needs a roll (an fsync and new files).
    let (_dir, disk, clock, log) = open(FsyncPolicy::Interval(Duration::from_millis(100)));
    log.set_config(LogConfig { segment_bytes: 4096, ..log.config() })?;
    let small = || encode(&records("s", 1, 0));
    let inline = log.try_complete_inline(log.enqueue_append(small()), 64 << 10, |_| {});
    assert!(matches!(inline, Ok(Ok(_))), "a small append into a fresh segment is written inline");
    let big = batch_of(None, 1, 2500);
    log.append(big.clone())?;
    let ticket = log.enqueue_append(big);
    let ticket = log.try_complete_inline(ticket, 64 << 10, |_| {}).expect_err("would roll: given back");
    log.complete_append(ticket)?;
    assert_eq!(log.stats().segment_count, 2, "the roll happened on the thread allowed to wait");

    // Once the interval's fsync is due, the next append fsyncs: not inline.
    clock.advance(100);
    let ticket = log.try_complete_inline(log.enqueue_append(small()), 64 << 10, |_| {}).expect_err("fsync due");
    let syncs = disk.syncs.load(Ordering::SeqCst);
    log.complete_append(ticket)?;
    assert_eq!(disk.syncs.load(Ordering::SeqCst), syncs + 1);

    // Under fsync `always` nothing is written inline.
    log.set_config(LogConfig { fsync: FsyncPolicy::Always, ..log.config() })?;
    let ticket = log.try_complete_inline(log.enqueue_append(small()), 64 << 10, |_| {}).expect_err("always");
    log.complete_append(ticket)?;
    Ok(())
}
