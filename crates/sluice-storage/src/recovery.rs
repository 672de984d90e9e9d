//! Validating a segment file batch by batch, and rebuilding its index on the way.
//!
//! Recovery policy (narrow on purpose):
//! - The active segment's tail may be torn by a crash. Its batches are validated from the last
//!   trusted index entry (from the start after an unclean shutdown) and the file is cut at the
//!   first batch whose header, expected offset or CRC is wrong ([`Tail::Truncate`]).
//! - Sealed segments were fsynced before they were sealed. Their index files are checked by
//!   checksum only; the log is scanned only when an index is missing or damaged, and any damage
//!   found then is an error ([`Tail::MustBeIntact`]), never silently skipped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::codec::{BATCH_HEADER_BYTES, BatchHeader, crc_matches};
use crate::error::{Error, Result};
use crate::index::{IndexBuilder, IndexEntries, IndexHit};

/// Read size while scanning; a larger batch is read whole.
const SCAN_CHUNK_BYTES: u64 = 8 << 20;

/// What to do with damage found while scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Report it: the caller cuts the file there (the active segment).
    Truncate,
    /// Fail with [`Error::Corrupt`] (a sealed segment).
    MustBeIntact,
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Bytes of whole, valid batches.
    pub valid_len: u64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
    /// Damage found at `valid_len`, if the scan stopped before the end of the file.
    pub damage: Option<String>,
    /// Bytes read and verified.
    pub scanned_bytes: u64,
}

/// A segment file to scan.
pub(crate) struct ScanTarget<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub base_offset: u64,
    pub file_len: u64,
}

/// Validates batches from `start` to the end of the file, adding index entries through `builder`.
pub(crate) fn scan(
    target: &ScanTarget<'_>,
    start: IndexHit,
    entries: &mut IndexEntries,
    builder: &mut IndexBuilder,
    tail: Tail,
) -> Result<Scanned> {
    let mut position = u64::from(start.position);
    let mut expected = target.base_offset + u64::from(start.relative_offset);
    let mut chunk = Chunk::default();
    let scan_start = position;
    let damage = loop {
        if position == target.file_len {
            break None;
        }
        match next_batch(target, &mut chunk, position, expected)? {
            Ok(header) => {
                let relative = header.base_offset - target.base_offset;
                let (Ok(relative), Ok(at)) = (u32::try_from(relative), u32::try_from(position)) else {
                    break Some("batch lies beyond what a segment can index".to_owned());
                };
                builder.observe(entries, relative, at, header.max_timestamp);
                position += header.total_len();
                expected = header.next_offset();
            }
            Err(reason) => break Some(reason),
        }
    };
    if let (Some(reason), Tail::MustBeIntact) = (&damage, tail) {
        return Err(Error::Corrupt { path: target.path.to_path_buf(), position, reason: reason.clone() });
    }
    Ok(Scanned { valid_len: position, next_offset: expected, damage, scanned_bytes: position - scan_start })
}

/// A window of the file held in memory.
#[derive(Default)]
pub(crate) struct Chunk {
    start: u64,
    bytes: Vec<u8>,
}

impl Chunk {
    fn holds(&self, position: u64, len: u64) -> bool {
        position >= self.start && position + len <= self.start + self.bytes.len() as u64
    }

    fn slice(&self, position: u64, len: u64) -> &[u8] {
        let at = (position - self.start) as usize;
        &self.bytes[at..at + len as usize]
    }

    fn fill(&mut self, target: &ScanTarget<'_>, position: u64, want: u64) -> Result<()> {
        let len = want.max(SCAN_CHUNK_BYTES).min(target.file_len - position);
        self.start = position;
        self.bytes.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        target
            .file
            .read_exact_at(&mut self.bytes, position)
            .map_err(|e| Error::io("reading segment during recovery", target.path, e))
    }
}

/// The next batch's header if the whole batch is valid; otherwise why not. Io errors are `Err`.
pub(crate) fn next_batch(
    target: &ScanTarget<'_>,
    chunk: &mut Chunk,
    position: u64,
    expected: u64,
) -> Result<Result<BatchHeader, String>> {
    let remaining = target.file_len - position;
    let header_len = BATCH_HEADER_BYTES as u64;
    if remaining < header_len {
        return Ok(Err(format!("torn batch header: {remaining} bytes at the end of the file")));
    }
    if !chunk.holds(position, header_len) {
        chunk.fill(target, position, header_len)?;
    }
    let Some(header) = BatchHeader::parse(chunk.slice(position, header_len)) else {
        return Ok(Err("short header".into()));
    };
    if let Err(reason) = header.check(Some(expected), remaining) {
        return Ok(Err(reason));
    }
    let total = header.total_len();
    if !chunk.holds(position, total) {
        chunk.fill(target, position, total)?;
    }
    if !crc_matches(chunk.slice(position, total)) {
        return Ok(Err(format!("checksum mismatch in the batch at offset {}", header.base_offset)));
    }
    Ok(Ok(header))
}
