//! Offline verification of a partition directory (the `sluice-server verify` command): every
//! batch's checksum and offsets, every index entry, and the offsets between segments. It only
//! reads: no file is created, changed, cut or removed, so it is safe on a data directory that
//! was damaged and must be looked at before anything repairs it.
//!
//! What it reports as damage is what the broker would refuse to serve, or serve wrongly:
//! batches that fail their checks, offsets no segment holds, segments that overlap, index files
//! that do not match their segment. A torn tail of the last segment after a crash is only a
//! note: recovery cuts it at the next start, and under `FsyncPolicy::Always` nothing in it was
//! acknowledged.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::index::{IndexHit, SealedIndex};
use crate::layout;
use crate::recovery::{Chunk, ScanTarget, next_batch};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Data the broker cannot serve, or an index that does not match its segment.
    Damage,
    /// Worth knowing, handled by the next start (a torn tail after a crash, an index to rebuild).
    Note,
}

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The file it is in.
    pub path: PathBuf,
    /// Byte position in that file, where there is one.
    pub position: Option<u64>,
    /// What was found.
    pub what: String,
}

/// What one segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// Offset of its first record (from its name).
    pub base_offset: u64,
    /// Offset after its last intact batch.
    pub next_offset: u64,
    /// File size.
    pub bytes: u64,
    /// Intact batches.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
}

/// The result of verifying one partition directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Segments in offset order.
    pub segments: Vec<SegmentReport>,
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
}

impl PartitionReport {
    /// True when anything is damaged (notes do not count).
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Damage)
    }

    fn add(&mut self, severity: Severity, path: &Path, position: Option<u64>, what: String) {
        self.findings.push(Finding { severity, path: path.to_path_buf(), position, what });
    }
}

/// Verifies the partition in `dir` without changing it. Errors are io failures that stopped
/// the verification itself; damage is in the report.
pub fn verify_partition(dir: &Path) -> Result<PartitionReport> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing partition", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing partition", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(layout::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let clean = dir.join(layout::CLEAN_SHUTDOWN_FILE).exists();
    let mut report = PartitionReport::default();
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let segment = verify_segment(dir, base, last && !clean, &mut report)?;
        if let Some(&next_base) = bases.get(i + 1) {
            let path = layout::log_path(dir, base);
            if segment.next_offset < next_base {
                let what = format!("offsets {}..{next_base} are missing: no segment holds them", segment.next_offset);
                report.add(Severity::Damage, &path, None, what);
            } else if segment.next_offset > next_base {
                let what = format!("ends at offset {} but the next segment starts at {next_base}", segment.next_offset);
                report.add(Severity::Damage, &path, None, what);
            }
        }
        report.segments.push(segment);
    }
    Ok(report)
}

/// Scans one segment; `crashed_tail` is true for the last segment after an unclean stop (its
/// tail may be torn, and it has no index files yet).
fn verify_segment(dir: &Path, base: u64, crashed_tail: bool, report: &mut PartitionReport) -> Result<SegmentReport> {
    let path = layout::log_path(dir, base);
    let file = File::open(&path).map_err(|e| Error::io("opening segment", &path, e))?;
    let len = file.metadata().map_err(|e| Error::io("reading segment metadata", &path, e))?.len();
    let (index_path, time_path) = (layout::index_path(dir, base), layout::time_index_path(dir, base));
    let index = SealedIndex::open(&index_path, &time_path, len)?;
    let target = ScanTarget { file: &file, path: &path, base_offset: base, file_len: len };
    let mut chunk = Chunk::default();
    let mut segment = SegmentReport { base_offset: base, next_offset: base, bytes: len, batches: 0, records: 0 };
    // Batch start position -> base offset, to check index entries against.
    let mut starts = BTreeMap::new();
    let (mut position, mut expected) = (0u64, base);
    while position < len {
        match next_batch(&target, &mut chunk, position, expected)? {
            Ok(header) => {
                starts.insert(position, header.base_offset);
                segment.batches += 1;
                segment.records += u64::from(header.record_count);
                position += header.total_len();
                expected = header.next_offset();
                segment.next_offset = expected;
            }
            Err(reason) => {
                let resume = index.as_ref().and_then(|index| index.next_after(position));
                if crashed_tail && resume.is_none() {
                    let what = format!(
                        "torn tail: {} bytes after offset {expected} ({reason}); the next start cuts them (under fsync=always none of them was acknowledged)",
                        len - position
                    );
                    report.add(Severity::Note, &path, Some(position), what);
                    break;
                }
                report.add(
                    Severity::Damage,
                    &path,
                    Some(position),
                    format!("damaged batch at offset {expected}: {reason}"),
                );
                let Some(IndexHit { relative_offset, position: at }) = resume else {
                    let what = format!(
                        "{} bytes after the damage could not be checked (no index entry past it)",
                        len - position
                    );
                    report.add(Severity::Damage, &path, Some(position), what);
                    break;
                };
                (position, expected) = (u64::from(at), base + u64::from(relative_offset));
            }
        }
    }
    match index {
        Some(index) => check_index(&index, base, &starts, &index_path, report),
        None if crashed_tail => {}
        None if index_path.exists() || time_path.exists() => {
            let what = "index files do not match the segment (they are rebuilt from the log at the next start)";
            report.add(Severity::Damage, &index_path, None, what.into());
        }
        None => {
            let what = "index files are missing (they are rebuilt from the log at the next start)";
            report.add(Severity::Note, &index_path, None, what.into());
        }
    }
    Ok(segment)
}

fn check_index(
    index: &SealedIndex,
    base: u64,
    starts: &BTreeMap<u64, u64>,
    index_path: &Path,
    report: &mut PartitionReport,
) {
    let entries = index.to_entries();
    let hits =
        entries.offsets.iter().map(|e| IndexHit::from(*e)).chain(entries.times.iter().map(|e| IndexHit::from(*e)));
    for hit in hits {
        let offset = base + u64::from(hit.relative_offset);
        if starts.get(&u64::from(hit.position)) != Some(&offset) {
            let what = format!("index entry for offset {offset} at byte {} does not point at that batch", hit.position);
            report.add(Severity::Damage, index_path, None, what);
            return;
        }
    }
}
