//! Time to open a partition whose active segment holds 1 GiB:
//! - `clean`: after a clean close (index persisted, marker present);
//! - `after_crash`: without a close (the whole active segment is validated, CRC-bound);
//! - `sealed_index_deleted`: a sealed 1 GiB segment whose index files were deleted (rebuilt).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::{kib_records_batch, scratch_dir};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, layout};

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        segment_bytes: 2 << 30,
        segment_ms: None,
        ..LogConfig::default()
    }
}

fn fill(dir: &std::path::Path) -> u64 {
    let log = PartitionLog::open(dir, config()).unwrap_or_else(|e| panic!("{e}"));
    let batch = kib_records_batch(1000);
    for _ in 0..(1usize << 30) / batch.len() {
        log.append(batch.clone()).unwrap_or_else(|e| panic!("{e}"));
    }
    log.sync().unwrap_or_else(|e| panic!("{e}"));
    log.stats().size_bytes
}

fn recovery(c: &mut Criterion) {
    let dir = scratch_dir();
    let size = fill(dir.path());
    let mut group = c.benchmark_group("recovery_1GiB");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(size));
    group.bench_function("clean", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                PartitionLog::open(dir.path(), config()).and_then(|log| log.close()).unwrap_or_else(|e| panic!("{e}"));
                let start = Instant::now();
                let log = PartitionLog::open(dir.path(), config()).unwrap_or_else(|e| panic!("{e}"));
                total += start.elapsed();
                assert!(log.stats().recovery_scanned_bytes < 2 << 20);
            }
            total
        })
    });
    group.bench_function("after_crash", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = PartitionLog::open(dir.path(), config()).unwrap_or_else(|e| panic!("{e}"));
                total += start.elapsed();
                assert_eq!(log.stats().recovery_scanned_bytes, size);
            }
            total
        })
    });
    // Seal the 1 GiB segment, then time rebuilding its index.
    let log = PartitionLog::open(dir.path(), config()).unwrap_or_else(|e| panic!("{e}"));
    log.roll().unwrap_or_else(|e| panic!("{e}"));
    log.close().unwrap_or_else(|e| panic!("{e}"));
    drop(log);
    group.bench_function("sealed_index_deleted", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::fs::remove_file(layout::index_path(dir.path(), 0)).unwrap_or_else(|e| panic!("{e}"));
                let start = Instant::now();
                let log = PartitionLog::open(dir.path(), config()).unwrap_or_else(|e| panic!("{e}"));
                total += start.elapsed();
                assert!(log.stats().recovery_scanned_bytes >= size);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
