//! Sparse offset and time indexes of a segment.
//!
//! An entry is added when at least `index_interval_bytes` of batches were written since the
//! previous one, and always points at the start of a batch. A lookup gives a byte position at or
//! before the wanted batch; the reader walks batch headers from there (at most one interval).
//!
//! **Offset index file** (`.index`): entries of 8 bytes, then an 8-byte trailer.
//!
//! | size | field                                            |
//! |------|--------------------------------------------------|
//! | 4    | relative offset u32 (batch base - segment base)  |
//! | 4    | byte position u32 of that batch in the `.log`     |
//!
//! **Time index file** (`.timeindex`): entries of 16 bytes, then the trailer.
//!
//! | size | field                                                              |
//! |------|--------------------------------------------------------------------|
//! | 8    | i64 ms: the largest timestamp in the segment up to and including the batch |
//! | 4    | relative offset u32 of the batch                                   |
//! | 4    | byte position u32 of the batch                                     |
//!
//! **Trailer**: magic (`SLIX` or `SLTI`), then the CRC-32 of all entry bytes, both little-endian.
//! A file whose trailer does not match is treated as missing and rebuilt from the log.
//!
//! The active segment keeps its entries in memory (they are sparse: 8 bytes per interval) and
//! writes the files when it is sealed or closed; sealed segments map their files read-only.
//! This module is the crate's only user of `unsafe`, for that mapping.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

const OFFSET_MAGIC: [u8; 4] = *b"SLIX";
const TIME_MAGIC: [u8; 4] = *b"SLTI";
const TRAILER_BYTES: usize = 8;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 16;

/// An offset index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// A time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp in the segment up to and including this batch.
    pub max_timestamp: i64,
    /// Batch base offset minus segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// Where a lookup says to start reading: a batch start and that batch's relative offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHit {
    /// Relative offset of the batch at `position`.
    pub relative_offset: u32,
    /// Byte position of a batch start.
    pub position: u32,
}

impl IndexHit {
    /// The segment's first batch.
    pub const START: IndexHit = IndexHit { relative_offset: 0, position: 0 };
}

impl From<OffsetEntry> for IndexHit {
    fn from(e: OffsetEntry) -> Self {
        IndexHit { relative_offset: e.relative_offset, position: e.position }
    }
}

impl From<TimeEntry> for IndexHit {
    fn from(e: TimeEntry) -> Self {
        IndexHit { relative_offset: e.relative_offset, position: e.position }
    }
}

/// Decides where index entries go as batches are appended (or found again by recovery), so that
/// the writer and recovery build identical indexes.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    interval: u64,
    last_entry_position: u64,
    running_max: i64,
    last_batch: Option<IndexHit>,
}

impl IndexBuilder {
    /// A builder continuing after `entries` (empty for a new segment).
    pub fn resume(entries: &IndexEntries, interval: u64) -> Self {
        IndexBuilder {
            interval,
            last_entry_position: entries.offsets.last().map_or(0, |e| u64::from(e.position)),
            running_max: entries.times.last().map_or(i64::MIN, |e| e.max_timestamp),
            last_batch: None,
        }
    }

    /// Records a batch of the segment at `position`, adding entries if an interval has passed.
    pub fn observe(&mut self, entries: &mut IndexEntries, relative_offset: u32, position: u32, max_timestamp: i64) {
        self.running_max = self.running_max.max(max_timestamp);
        let hit = IndexHit { relative_offset, position };
        self.last_batch = Some(hit);
        if u64::from(position) < self.last_entry_position + self.interval {
            return;
        }
        self.last_entry_position = u64::from(position);
        entries.offsets.push(OffsetEntry { relative_offset, position });
        self.add_time_entry(entries, hit);
    }

    /// Adds the closing time entry, so that the last one holds the segment's largest timestamp.
    pub fn finish(&self, entries: &mut IndexEntries) {
        if let Some(hit) = self.last_batch {
            self.add_time_entry(entries, hit);
        }
    }

    fn add_time_entry(&self, entries: &mut IndexEntries, hit: IndexHit) {
        if entries.times.last().is_none_or(|e| self.running_max > e.max_timestamp && hit.position > e.position) {
            entries.times.push(TimeEntry {
                max_timestamp: self.running_max,
                relative_offset: hit.relative_offset,
                position: hit.position,
            });
        }
    }

    /// Largest timestamp seen in the segment (`i64::MIN` if none).
    pub fn max_timestamp(&self) -> i64 {
        self.running_max
    }
}

/// Entries of both indexes, in memory: the active segment's, or a freshly rebuilt one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexEntries {
    /// Offset entries, increasing in both fields.
    pub offsets: Vec<OffsetEntry>,
    /// Time entries, increasing in all fields.
    pub times: Vec<TimeEntry>,
}

impl IndexEntries {
    /// The batch to start reading at to find `relative_offset`.
    pub fn lookup_offset(&self, relative_offset: u32) -> IndexHit {
        let idx = self.offsets.partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map_or(IndexHit::START, |i| self.offsets[i].into())
    }

    /// The batch to start reading at to find the first batch with a timestamp `>= timestamp`.
    pub fn lookup_timestamp(&self, timestamp: i64) -> IndexHit {
        let idx = self.times.partition_point(|e| e.max_timestamp < timestamp);
        idx.checked_sub(1).map_or(IndexHit::START, |i| self.times[i].into())
    }

    /// The first offset entry at a byte position after `position`, if any.
    pub fn next_after(&self, position: u64) -> Option<IndexHit> {
        let idx = self.offsets.partition_point(|e| u64::from(e.position) <= position);
        self.offsets.get(idx).map(|&e| e.into())
    }

    /// Writes both index files for a segment and fsyncs them.
    pub fn write_files(&self, offset_path: &Path, time_path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES + TRAILER_BYTES);
        for entry in &self.offsets {
            bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
            bytes.extend_from_slice(&entry.position.to_le_bytes());
        }
        write_with_trailer(offset_path, bytes, OFFSET_MAGIC)?;
        let mut bytes = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES + TRAILER_BYTES);
        for entry in &self.times {
            bytes.extend_from_slice(&entry.max_timestamp.to_le_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_le_bytes());
            bytes.extend_from_slice(&entry.position.to_le_bytes());
        }
        write_with_trailer(time_path, bytes, TIME_MAGIC)
    }
}

fn write_with_trailer(path: &Path, mut bytes: Vec<u8>, magic: [u8; 4]) -> Result<()> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = File::create(path).map_err(|e| Error::io("creating index", path, e))?;
    file.write_all(&bytes).map_err(|e| Error::io("writing index", path, e))?;
    file.sync_data().map_err(|e| Error::io("syncing index", path, e))
}

/// A read-only mapped index file whose trailer checksum matched.
#[derive(Debug)]
struct MappedFile {
    map: Option<Mmap>,
    entries: usize,
}

impl MappedFile {
    /// Maps `path`; `Ok(None)` when the file is missing or fails validation (then rebuild it).
    fn open(path: &Path, entry_bytes: usize, magic: [u8; 4]) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening index", path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io("reading index metadata", path, e))?.len();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < TRAILER_BYTES || !(len - TRAILER_BYTES).is_multiple_of(entry_bytes) {
            return Ok(None);
        }
        // SAFETY: index files are written whole (then fsynced) before the segment is sealed and
        // never modified afterwards; a sealed segment's files are only ever deleted, which leaves
        // an existing mapping valid on Unix. So the mapped bytes cannot change under us.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mapping index", path, e))?;
        let body = len - TRAILER_BYTES;
        let trailer = &map[body..];
        let crc = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if trailer[..4] != magic || crc32fast::hash(&map[..body]) != crc {
            return Ok(None);
        }
        Ok(Some(MappedFile { map: Some(map), entries: body / entry_bytes }))
    }

    fn entry(&self, i: usize, entry_bytes: usize) -> &[u8] {
        match &self.map {
            Some(map) => &map[i * entry_bytes..(i + 1) * entry_bytes],
            None => &[],
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Both indexes of a sealed segment, memory-mapped.
#[derive(Debug)]
pub struct SealedIndex {
    offsets: MappedFile,
    times: MappedFile,
}

impl SealedIndex {
    /// Maps both files; `Ok(None)` if either is missing, damaged or inconsistent with a segment
    /// of `segment_len` bytes.
    pub fn open(offset_path: &Path, time_path: &Path, segment_len: u64) -> Result<Option<Self>> {
        let Some(offsets) = MappedFile::open(offset_path, OFFSET_ENTRY_BYTES, OFFSET_MAGIC)? else {
            return Ok(None);
        };
        let Some(times) = MappedFile::open(time_path, TIME_ENTRY_BYTES, TIME_MAGIC)? else {
            return Ok(None);
        };
        let index = SealedIndex { offsets, times };
        Ok(index.is_consistent(segment_len).then_some(index))
    }

    fn is_consistent(&self, segment_len: u64) -> bool {
        let offsets = (0..self.offsets.entries).map(|i| self.offset_entry(i));
        let times = (0..self.times.entries).map(|i| self.time_entry(i));
        increasing(offsets.map(|e| (e.relative_offset, e.position)), segment_len)
            && increasing(times.clone().map(|e| (e.relative_offset, e.position)), segment_len)
            && times.clone().zip(times.skip(1)).all(|(a, b)| a.max_timestamp < b.max_timestamp)
    }

    fn offset_entry(&self, i: usize) -> OffsetEntry {
        let bytes = self.offsets.entry(i, OFFSET_ENTRY_BYTES);
        OffsetEntry { relative_offset: u32_at(bytes, 0), position: u32_at(bytes, 4) }
    }

    fn time_entry(&self, i: usize) -> TimeEntry {
        let bytes = self.times.entry(i, TIME_ENTRY_BYTES);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        TimeEntry {
            max_timestamp: i64::from_le_bytes(ts),
            relative_offset: u32_at(bytes, 8),
            position: u32_at(bytes, 12),
        }
    }

    /// The batch to start reading at to find `relative_offset`.
    pub fn lookup_offset(&self, relative_offset: u32) -> IndexHit {
        let idx = partition_point(self.offsets.entries, |i| self.offset_entry(i).relative_offset <= relative_offset);
        idx.checked_sub(1).map_or(IndexHit::START, |i| self.offset_entry(i).into())
    }

    /// The batch to start reading at to find the first batch with a timestamp `>= timestamp`.
    pub fn lookup_timestamp(&self, timestamp: i64) -> IndexHit {
        let idx = partition_point(self.times.entries, |i| self.time_entry(i).max_timestamp < timestamp);
        idx.checked_sub(1).map_or(IndexHit::START, |i| self.time_entry(i).into())
    }

    /// The first offset entry at a byte position after `position` (a batch known to start
    /// there), if any.
    pub fn next_after(&self, position: u64) -> Option<IndexHit> {
        let idx = partition_point(self.offsets.entries, |i| u64::from(self.offset_entry(i).position) <= position);
        (idx < self.offsets.entries).then(|| self.offset_entry(idx).into())
    }

    /// The entry (of either index) furthest into the segment: walking batch headers from it to
    /// the end of the file finds where the segment's offsets end.
    pub fn last_hit(&self) -> IndexHit {
        let offset = self.offsets.entries.checked_sub(1).map(|i| IndexHit::from(self.offset_entry(i)));
        let time = self.times.entries.checked_sub(1).map(|i| IndexHit::from(self.time_entry(i)));
        offset.into_iter().chain(time).max_by_key(|hit| hit.position).unwrap_or(IndexHit::START)
    }

    /// The segment's largest timestamp (the last time entry), if it has entries.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.times.entries.checked_sub(1).map(|i| self.time_entry(i).max_timestamp)
    }

    /// Copies the entries out, to make a sealed segment active again (after truncation).
    pub fn to_entries(&self) -> IndexEntries {
        IndexEntries {
            offsets: (0..self.offsets.entries).map(|i| self.offset_entry(i)).collect(),
            times: (0..self.times.entries).map(|i| self.time_entry(i)).collect(),
        }
    }
}

fn increasing(mut pairs: impl Iterator<Item = (u32, u32)>, segment_len: u64) -> bool {
    let mut previous: Option<(u32, u32)> = None;
    pairs.all(|(offset, position)| {
        let ok = u64::from(position) < segment_len && previous.is_none_or(|(po, pp)| offset > po && position > pp);
        previous = Some((offset, position));
        ok
    })
}

/// First index in `0..len` for which `pred` is false, given `pred` is true then false.
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        if pred(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexEntries {
        IndexEntries {
            offsets: vec![
                OffsetEntry { relative_offset: 10, position: 4000 },
                OffsetEntry { relative_offset: 20, position: 8100 },
            ],
            times: vec![
                TimeEntry { max_timestamp: 100, relative_offset: 10, position: 4000 },
                TimeEntry { max_timestamp: 300, relative_offset: 20, position: 8100 },
            ],
        }
    }

    #[test]
    fn lookups_give_the_entry_at_or_before_the_target() {
        let entries = sample();
        let at = |relative_offset, position| IndexHit { relative_offset, position };
        assert_eq!(entries.lookup_offset(0), IndexHit::START);
        assert_eq!(entries.lookup_offset(10), at(10, 4000));
        assert_eq!(entries.lookup_offset(19), at(10, 4000));
        assert_eq!(entries.lookup_offset(25), at(20, 8100));
        assert_eq!(entries.lookup_timestamp(50), IndexHit::START);
        assert_eq!(entries.lookup_timestamp(101), at(10, 4000));
        assert_eq!(entries.lookup_timestamp(301), at(20, 8100));
    }

    #[test]
    fn mapped_index_answers_like_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let (o, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        let entries = sample();
        entries.write_files(&o, &t).unwrap();
        let sealed = SealedIndex::open(&o, &t, 10_000).unwrap().unwrap();
        for target in [0, 9, 10, 11, 20, 99] {
            assert_eq!(sealed.lookup_offset(target), entries.lookup_offset(target));
        }
        for ts in [0, 100, 101, 300, 301] {
            assert_eq!(sealed.lookup_timestamp(ts), entries.lookup_timestamp(ts));
        }
        assert_eq!(sealed.max_timestamp(), Some(300));
        assert_eq!(sealed.to_entries(), entries);
    }

    #[test]
    fn builder_adds_entries_per_interval_and_a_closing_time_entry() {
        let mut entries = IndexEntries::default();
        let mut builder = IndexBuilder::resume(&entries, 100);
        builder.observe(&mut entries, 0, 0, 5);
        builder.observe(&mut entries, 1, 60, 9);
        builder.observe(&mut entries, 2, 120, 7);
        builder.observe(&mut entries, 3, 150, 8);
        builder.observe(&mut entries, 4, 230, 12);
        assert_eq!(
            entries.offsets,
            vec![OffsetEntry { relative_offset: 2, position: 120 }, OffsetEntry { relative_offset: 4, position: 230 },]
        );
        builder.finish(&mut entries);
        assert_eq!(entries.times.iter().map(|e| e.max_timestamp).collect::<Vec<_>>(), vec![9, 12]);
        let resumed = IndexBuilder::resume(&entries, 100);
        assert_eq!(resumed.max_timestamp(), 12);
    }

    #[test]
    fn damaged_or_inconsistent_index_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (o, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        sample().write_files(&o, &t).unwrap();
        assert!(SealedIndex::open(&o, &t, 8000).unwrap().is_none(), "entry past the segment end");
        let mut bytes = std::fs::read(&o).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&o, &bytes).unwrap();
        assert!(SealedIndex::open(&o, &t, 10_000).unwrap().is_none(), "checksum mismatch");
        std::fs::remove_file(&o).unwrap();
        assert!(SealedIndex::open(&o, &t, 10_000).unwrap().is_none(), "missing file");
    }
}
