//! What a group flush holds the group lock for, with many waiting dead letters:
//! - `journal`: now (group file v5; dead letters live in the append-only journal, and a flush
//!   appends only the changes since the last one);
//! - `whole_file`: before (v4; every dead letter copied into the group file on every flush).
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_core::group::bench_hooks::Fixture;

fn group_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_flush_lock");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for dead_letters in [10_000u64, 1_000_000] {
        let mut fixture = Fixture::with_dead_letters(dead_letters);
        group.bench_with_input(BenchmarkId::new("journal", dead_letters), &dead_letters, |b, _| {
            b.iter(|| fixture.flush_under_lock())
        });
        group.bench_with_input(BenchmarkId::new("whole_file", dead_letters), &dead_letters, |b, _| {
            b.iter(|| fixture.whole_file_under_lock())
        });
    }
    group.finish();
}

criterion_group!(benches, group_flush);
criterion_main!(benches);
