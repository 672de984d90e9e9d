//! Append throughput of one partition log, 1 KiB records.
//!
//! - `never/1GiB`: 1 GiB in 1 MiB batches (1,000 records), fsync `never` (fits in the page cache).
//! - `always_1MiB` vs `write_fdatasync_1MiB`: one appender, fsync `always`, against a plain
//!   write+fdatasync loop of the same block size on the same disk.
//! - `group_commit_64KiB/{1,8}`: 64 KiB batches under fsync `always` from 1 and from 8 threads.
#![allow(missing_docs)]

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::{batch_of_bytes, kib_records_batch, scratch_dir};
use sluice_storage::{EncodedBatch, FsyncPolicy, LogConfig, PartitionLog};

fn config(fsync: FsyncPolicy, preallocate: bool) -> LogConfig {
    let preallocate_bytes = if preallocate { LogConfig::default().preallocate_bytes } else { 0 };
    LogConfig { fsync, preallocate_bytes, retention_ms: None, ..LogConfig::default() }
}

/// Appends `count` copies of `template` to a fresh log; returns the time.
///
/// Each copy is made inside the timed loop, as a server encodes each batch just before appending
/// it: the source bytes are hot in the CPU cache, as they are in the real write path. (Copies
/// prepared up front would make every append read cold memory and free a 1 MiB mapping, which
/// measures the allocator and the VM's page faults rather than the log.)
fn timed_appends(template: &EncodedBatch, count: usize, config: &LogConfig) -> Duration {
    let dir = scratch_dir();
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    for _ in 0..count {
        log.append(template.clone()).unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}

/// The same bytes written by a bare `pwrite` loop (copy included), for comparison.
fn timed_pwrite_loop(template: &EncodedBatch, count: usize) -> Duration {
    use std::os::unix::fs::FileExt;
    let dir = scratch_dir();
    let file = File::create(dir.path().join("plain")).unwrap_or_else(|e| panic!("{e}"));
    let block = vec![0xabu8; template.len()];
    let start = Instant::now();
    for i in 0..count {
        let copy = block.clone();
        file.write_all_at(&copy, (i * copy.len()) as u64).unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}

fn append_never(c: &mut Criterion) {
    let batch = kib_records_batch(1000);
    let count = (1usize << 30) / batch.len();
    let mut group = c.benchmark_group("append");
    // One 1 GiB run per sample: more would turn this into a sustained-writeback benchmark.
    group.sample_size(10).sampling_mode(criterion::SamplingMode::Flat).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes((batch.len() * count) as u64));
    for preallocate in [false, true] {
        let name = if preallocate { "never/1GiB/preallocated" } else { "never/1GiB/no_prealloc" };
        let config = config(FsyncPolicy::Never, preallocate);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| timed_appends(&batch, count, &config)).sum())
        });
    }
    group.bench_function("pwrite_loop_1GiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_pwrite_loop(&batch, count)).sum())
    });
    group.finish();
}

fn append_always_vs_fdatasync(c: &mut Criterion) {
    let batch = kib_records_batch(1000);
    let count = 256;
    let mut group = c.benchmark_group("append");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Bytes((batch.len() * count) as u64));
    for preallocate in [false, true] {
        let name = if preallocate { "always_1MiB/preallocated" } else { "always_1MiB/no_prealloc" };
        let config = config(FsyncPolicy::Always, preallocate);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| timed_appends(&batch, count, &config)).sum())
        });
    }
    let block = vec![0xabu8; batch.len()];
    group.bench_function("write_fdatasync_1MiB", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = scratch_dir();
                    let mut file = File::create(dir.path().join("plain")).unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    for _ in 0..count {
                        file.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
                        file.sync_data().unwrap_or_else(|e| panic!("{e}"));
                    }
                    start.elapsed()
                })
                .sum()
        })
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let batch = batch_of_bytes(64 * 1024);
    let per_thread = 400;
    let mut group = c.benchmark_group("group_commit_64KiB");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    for threads in [1usize, 8] {
        group.throughput(Throughput::Bytes((batch.len() * per_thread * threads) as u64));
        let config = config(FsyncPolicy::Always, false);
        group.bench_function(format!("{threads}_appenders"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = scratch_dir();
                    let log = PartitionLog::open(dir.path(), config.clone()).unwrap_or_else(|e| panic!("{e}"));
                    let barrier = std::sync::Barrier::new(threads + 1);
                    let elapsed = std::thread::scope(|s| {
                        for _ in 0..threads {
                            let (log, barrier, batch) = (&log, &barrier, &batch);
                            s.spawn(move || {
                                barrier.wait();
                                for _ in 0..per_thread {
                                    log.append(batch.clone()).unwrap_or_else(|e| panic!("{e}"));
                                }
                            });
                        }
                        barrier.wait();
                        Instant::now()
                    });
                    total += elapsed.elapsed();
                    let stats = log.stats();
                    eprintln!(
                        "group_commit {threads} appenders: {} batches, {} fsyncs ({:.2} batches per fsync)",
                        stats.appended_batches,
                        stats.fsyncs,
                        stats.appended_batches as f64 / stats.fsyncs.max(1) as f64
                    );
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_never, append_always_vs_fdatasync, group_commit);
criterion_main!(benches);
