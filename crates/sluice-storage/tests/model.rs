//! Property test: any sequence of appends, rolls, reads, seeks by time, retention runs and
//! reopens (clean or after a crash) agrees with a simple in-memory model of the log.

mod common;

use common::*;
use proptest::prelude::*;
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(i64, usize, bool)>),
    Roll,
    Read { at: f64, max_bytes: usize },
    Seek(i64),
    Retention(i64),
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0i64..1000, 0usize..300, any::<bool>()), 1..6).prop_map(Op::Append),
        1 => Just(Op::Roll),
        3 => (0.0..1.0f64, 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (0i64..1100).prop_map(Op::Seek),
        1 => (0i64..2000).prop_map(Op::Retention),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Debug, Default)]
struct Segment {
    size: u64,
    max_timestamp: i64,
    /// (offset, record)
    records: Vec<(u64, Rec)>,
}

/// The model: segments of records, rolled by the same size rule the log documents.
struct Model {
    segments: Vec<Segment>,
    next_offset: u64,
    config: LogConfig,
}

impl Model {
    fn start(&self) -> u64 {
        self.segments[0].records.first().map_or(self.next_offset, |r| r.0)
    }

    fn all(&self) -> impl Iterator<Item = &(u64, Rec)> {
        self.segments.iter().flat_map(|s| s.records.iter())
    }

    fn append(&mut self, batch_len: u64, records: &[Rec]) {
        let active = self.segments.last().map_or(0, |s| s.size);
        if active > 0 && active + batch_len > self.config.segment_bytes {
            self.roll();
        }
        let Some(active) = self.segments.last_mut() else { unreachable!() };
        active.size += batch_len;
        for rec in records {
            active.max_timestamp = active.max_timestamp.max(rec.timestamp);
            active.records.push((self.next_offset, rec.clone()));
            self.next_offset += 1;
        }
    }

    fn roll(&mut self) {
        if self.segments.last().is_some_and(|s| s.size > 0) {
            self.segments.push(Segment { max_timestamp: i64::MIN, ..Segment::default() });
        }
    }

    fn retention(&mut self, now: i64) {
        let mut total: u64 = self.segments.iter().map(|s| s.size).sum();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired = self.config.retention_ms.is_some_and(|ms| oldest.max_timestamp < now - ms as i64);
            let oversize = self.config.retention_bytes.is_some_and(|limit| total > limit);
            if !(expired || oversize) {
                break;
            }
            total -= oldest.size;
            self.segments.remove(0);
        }
    }
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        1024u64..4096,
        1u64..600,
        proptest::option::of(100u64..1000),
        proptest::option::of(2000u64..20_000),
        prop_oneof![Just(FsyncPolicy::Never), Just(FsyncPolicy::Always)],
    )
        .prop_map(|(segment_bytes, index_interval_bytes, retention_ms, retention_bytes, fsync)| LogConfig {
            segment_bytes,
            index_interval_bytes,
            retention_ms,
            retention_bytes,
            fsync,
            segment_ms: None,
            ..LogConfig::default()
        })
}

fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    let stats = log.stats();
    prop_assert_eq!((stats.start_offset, stats.end_offset), (model.start(), model.next_offset));
    prop_assert_eq!(stats.segment_count, model.segments.len());
    prop_assert_eq!(stats.size_bytes, model.segments.iter().map(|s| s.size).sum::<u64>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_a_simple_model(config in config(), ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let mut model = Model { segments: vec![Segment { max_timestamp: i64::MIN, ..Segment::default() }], next_offset: 0, config: config.clone() };
        for op in ops {
            match op {
                Op::Append(spec) => {
                    let recs: Vec<Rec> = spec
                        .iter()
                        .enumerate()
                        .map(|(i, &(ts, len, keyed))| Rec {
                            timestamp: ts,
                            key: keyed.then(|| format!("k{i}").into_bytes()),
                            value: vec![b'v'; len],
                            headers: vec![("h".into(), vec![i as u8])],
                        })
                        .collect();
                    let batch = encode(&recs);
                    let len = batch.len() as u64;
                    let appended = log.append(batch).unwrap();
                    prop_assert_eq!(appended.base_offset, model.next_offset);
                    model.append(len, &recs);
                }
                Op::Roll => {
                    log.roll().unwrap();
                    model.roll();
                }
                Op::Read { at, max_bytes } => {
                    let (start, end) = (model.start(), model.next_offset);
                    let offset = start + ((end - start) as f64 * at) as u64;
                    let result = log.read(offset, max_bytes).unwrap();
                    let got: Vec<(u64, Rec)> = read_all(&log, offset, max_bytes).unwrap();
                    let want: Vec<(u64, Rec)> = model.all().filter(|r| r.0 >= offset).cloned().collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(result.batches.is_empty(), offset == end);
                    if let Some(first) = result.batches.first() {
                        prop_assert!(first.base_offset() <= offset && offset < first.next_offset());
                    }
                }
                Op::Seek(ts) => {
                    let want = model.all().find(|r| r.1.timestamp >= ts).map(|r| r.0);
                    prop_assert_eq!(log.offset_for_timestamp(ts).unwrap(), want);
                }
                Op::Retention(now) => {
                    log.apply_retention(now).unwrap();
                    model.retention(now);
                    if model.start() > 0 && model.start() < model.next_offset {
                        let below = log.read(model.start() - 1, 100);
                        let out_of_range = matches!(below, Err(sluice_storage::Error::OffsetOutOfRange { .. }));
                        prop_assert!(out_of_range, "reading below the start: {:?}", below);
                    }
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    log = PartitionLog::open(dir.path(), config.clone()).unwrap();
                }
            }
            check(&log, &model)?;
        }
    }
}
