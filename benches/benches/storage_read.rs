//! Read throughput and latency of one partition log, 1 KiB records, from the page cache.
//!
//! - `sequential/1GiB`: reads a 1 GiB partition front to back (CRC of every batch verified).
//! - `random_offset`: reads one batch at a random offset (index lookup + header walk + read);
//!   prints p50/p99 per read.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::{kib_records_batch, percentiles_us, scratch_dir};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

fn filled_log(dir: &std::path::Path, bytes: usize, records_per_batch: usize) -> PartitionLog {
    let config = LogConfig { fsync: FsyncPolicy::Never, retention_ms: None, ..LogConfig::default() };
    let log = PartitionLog::open(dir, config).unwrap_or_else(|e| panic!("{e}"));
    let batch = kib_records_batch(records_per_batch);
    for _ in 0..bytes / batch.len() {
        log.append(batch.clone()).unwrap_or_else(|e| panic!("{e}"));
    }
    log
}

fn read_to_end(log: &PartitionLog, max_bytes: usize) -> (u64, u64) {
    let (mut offset, end) = log.offsets();
    let (mut bytes, mut records) = (0u64, 0u64);
    while offset < end {
        let result = log.read(offset, max_bytes).unwrap_or_else(|e| panic!("{e}"));
        for batch in &result.batches {
            bytes += batch.as_bytes().len() as u64;
            records += u64::from(batch.header().record_count);
            offset = batch.next_offset();
        }
    }
    (bytes, records)
}

fn sequential(c: &mut Criterion) {
    let dir = scratch_dir();
    let log = filled_log(dir.path(), 1 << 30, 1000);
    let (bytes, records) = read_to_end(&log, 1 << 20);
    eprintln!("sequential: partition holds {bytes} bytes, {records} records");
    let mut group = c.benchmark_group("read");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(bytes));
    for max_bytes in [1usize << 20, 8 << 20] {
        group.bench_function(format!("sequential_1GiB/max_bytes_{}KiB", max_bytes >> 10), |b| {
            b.iter(|| read_to_end(&log, max_bytes))
        });
    }
    group.finish();
}

fn random_offsets(c: &mut Criterion) {
    let dir = scratch_dir();
    // Batches of 10 records (~10 KiB), so a lookup lands among many batches per index interval.
    let log = filled_log(dir.path(), 256 << 20, 10);
    let (start, end) = log.offsets();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_offset = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        start + state % (end - start)
    };
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let offset = next_offset();
        let t = Instant::now();
        let result = log.read(offset, 16 << 10).unwrap_or_else(|e| panic!("{e}"));
        samples.push(t.elapsed());
        assert!(!result.batches.is_empty());
    }
    eprintln!(
        "random_offset read (256 MiB partition, 10-record batches, 16 KiB max): {}",
        percentiles_us(&mut samples)
    );
    c.bench_function("read/random_offset_16KiB", |b| {
        b.iter(|| log.read(next_offset(), 16 << 10).unwrap_or_else(|e| panic!("{e}")))
    });
}

criterion_group!(benches, sequential, random_offsets);
criterion_main!(benches);
