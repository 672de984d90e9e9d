//! Sustained append of 10 GiB (more than fits comfortably in the page cache) with fsync `never`,
//! with and without segment preallocation, reporting throughput per GiB and RSS.
//!
//! Not a criterion bench: one long run is the measurement. Run it with
//! `cargo bench -p sluice-benches --bench storage_sustained` (`SLUICE_SUSTAINED_GIB` to resize).
#![allow(missing_docs)]

use std::time::Instant;

use sluice_benches::{kib_records_batch, rss_mib, scratch_dir};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

fn run(gib: usize, preallocate: bool) {
    let dir = scratch_dir();
    let preallocate_bytes = if preallocate { LogConfig::default().preallocate_bytes } else { 0 };
    let config = LogConfig { fsync: FsyncPolicy::Never, preallocate_bytes, retention_ms: None, ..LogConfig::default() };
    let log = PartitionLog::open(dir.path(), config).unwrap_or_else(|e| panic!("{e}"));
    let template = kib_records_batch(1000);
    let per_gib = (1usize << 30) / template.len();
    let start = Instant::now();
    let mut lap = Instant::now();
    for g in 1..=gib {
        for _ in 0..per_gib {
            log.append(template.clone()).unwrap_or_else(|e| panic!("{e}"));
        }
        let (rss, peak) = rss_mib();
        println!(
            "{{\"bench\":\"sustained_append\",\"preallocate\":{preallocate},\"gib\":{g},\"lap_gb_s\":{:.2},\"rss_mib\":{rss:.0},\"peak_rss_mib\":{peak:.0}}}",
            (per_gib * template.len()) as f64 / lap.elapsed().as_secs_f64() / 1e9
        );
        lap = Instant::now();
    }
    let bytes = (gib * per_gib * template.len()) as f64;
    let secs = start.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    println!(
        "sustained append, fsync never, preallocate={preallocate}: {gib} GiB in {secs:.1} s = {:.2} GB/s, {:.0} records/s; RSS {rss:.0} MiB (peak {peak:.0} MiB)",
        bytes / secs / 1e9,
        (gib * per_gib * 1000) as f64 / secs
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `--list`: nothing to list or smoke-test here.
    }
    let gib = std::env::var("SLUICE_SUSTAINED_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    // One variant per process when SLUICE_SUSTAINED_PREALLOCATE is set: the order of runs in one
    // process skews them (the earlier run's writeback and discards slow the later one).
    match std::env::var("SLUICE_SUSTAINED_PREALLOCATE").as_deref() {
        Ok("1") => run(gib, true),
        Ok("0") => run(gib, false),
        _ => {
            run(gib, true);
            run(gib, false);
        }
    }
}
