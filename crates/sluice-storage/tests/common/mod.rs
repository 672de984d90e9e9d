//! Helpers shared by the storage integration tests.
#![allow(dead_code)]
// Test helpers: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_storage::{
    BatchBuilder, Clock, DiskIo, EncodedBatch, FsyncPolicy, HeaderRef, LogConfig, LogEnv, PartitionLog, RecordRef,
};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const ALL_POLICIES: [FsyncPolicy; 3] =
    [FsyncPolicy::Always, FsyncPolicy::Interval(Duration::from_millis(5)), FsyncPolicy::Never];

/// A record as the tests model it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn new(timestamp: i64, value: impl Into<Vec<u8>>) -> Self {
        Rec { timestamp, key: None, value: value.into(), headers: Vec::new() }
    }
}

pub fn encode(records: &[Rec]) -> EncodedBatch {
    let mut builder = BatchBuilder::default();
    for rec in records {
        let headers: Vec<HeaderRef<'_>> = rec.headers.iter().map(|(n, v)| HeaderRef { name: n, value: v }).collect();
        builder
            .push(&RecordRef {
                timestamp: rec.timestamp,
                key: rec.key.as_deref(),
                value: &rec.value,
                headers: &headers,
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

/// `count` records with values `"<tag>-<i>"` and timestamps `ts0 + i`.
pub fn records(tag: &str, count: usize, ts0: i64) -> Vec<Rec> {
    (0..count).map(|i| Rec::new(ts0 + i as i64, format!("{tag}-{i}"))).collect()
}

/// Every record from `from` to the end, read through `read` with a small byte limit, so that
/// many reads (and segment boundaries) are exercised.
pub fn read_all(log: &PartitionLog, from: u64, max_bytes: usize) -> Result<Vec<(u64, Rec)>, sluice_storage::Error> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let result = log.read(next, max_bytes)?;
        if result.batches.is_empty() {
            assert_eq!(next, result.end_offset, "an empty read happens only at the end");
            return Ok(out);
        }
        for batch in &result.batches {
            for record in batch.records() {
                let record = record.unwrap();
                if record.offset < next {
                    continue;
                }
                assert_eq!(record.offset, next, "offsets are dense and in order");
                next += 1;
                let headers = record
                    .headers()
                    .map(|h| h.map(|h| (h.name_str().to_owned(), h.value.to_vec())))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                out.push((
                    record.offset,
                    Rec {
                        timestamp: record.timestamp,
                        key: record.key.map(|k| k.to_vec()),
                        value: record.value.to_vec(),
                        headers,
                    },
                ));
            }
        }
    }
}

pub fn small_segments(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        segment_ms: None,
        retention_ms: None,
        fsync,
        ..LogConfig::default()
    }
}

/// A clock the test moves by hand.
#[derive(Debug, Default)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A disk that counts fsyncs, can hold every fsync until released, and can fail writes.
#[derive(Debug, Default)]
pub struct TestDisk {
    pub syncs: AtomicU64,
    pub fail_writes: AtomicBool,
    pub fail_syncs: AtomicBool,
    /// Bytes a failing write still puts on disk before failing (a torn write).
    pub partial_write_bytes: AtomicU64,
    /// The errno a failing write returns; 0 means ENOSPC (a full disk).
    pub write_errno: AtomicU64,
    /// While true, every fsync waits (counted in `held`) until it is set back to false.
    pub hold: Mutex<bool>,
    pub hold_changed: std::sync::Condvar,
    pub held: AtomicU64,
}

impl TestDisk {
    /// Holds (`true`) or releases (`false`) every fsync.
    pub fn hold_syncs(&self, hold: bool) {
        *self.hold.lock().unwrap() = hold;
        self.hold_changed.notify_all();
    }
}

impl DiskIo for TestDisk {
    fn write_at(&self, file: &File, bytes: &[u8], position: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.fail_writes.load(Ordering::SeqCst) {
            let partial = (self.partial_write_bytes.load(Ordering::SeqCst) as usize).min(bytes.len());
            file.write_all_at(&bytes[..partial], position)?;
            let errno = match self.write_errno.load(Ordering::SeqCst) {
                0 => 28, // ENOSPC
                other => other as i32,
            };
            return Err(io::Error::from_raw_os_error(errno));
        }
        file.write_all_at(bytes, position)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        {
            let mut hold = self.hold.lock().unwrap();
            if *hold {
                self.held.fetch_add(1, Ordering::SeqCst);
                while *hold {
                    hold = self.hold_changed.wait(hold).unwrap();
                }
                self.held.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        file.sync_data()
    }
}

pub fn env(disk: &Arc<TestDisk>, clock: &Arc<ManualClock>) -> LogEnv {
    LogEnv {
        io: Arc::clone(disk) as Arc<dyn DiskIo>,
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        space: None,
        partition: 0,
    }
}

/// Polls `condition` until it holds or a generous deadline passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}
