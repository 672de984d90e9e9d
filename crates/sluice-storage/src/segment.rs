//! One segment as readers see it: an immutable snapshot of its file, length and index.
//!
//! Readers never take the writer's lock. They read only below the snapshot's `len`, which the
//! writer publishes after a whole batch is written (and, under `FsyncPolicy::Always`, synced), so
//! a partially written batch is never visible.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::codec::{BATCH_HEADER_BYTES, Batch, BatchHeader};
use crate::error::{Error, Result};
use crate::index::{IndexEntries, IndexHit, SealedIndex};
use crate::page_cache::{self, Wait};

/// Most bytes one read returns beyond its first batch, whatever `max_bytes` asks for, so a
/// caller's large limit cannot make the broker allocate a whole segment at once.
pub const MAX_READ_BYTES: usize = 64 << 20;

/// A segment's index, as readers see it.
#[derive(Debug, Clone)]
pub(crate) enum SegmentIndex {
    /// Mapped files of a sealed segment.
    Sealed(Arc<SealedIndex>),
    /// The active segment's in-memory entries, appended to by the writer.
    Active(Arc<RwLock<IndexEntries>>),
}

/// The largest first batch a page-cache-only read returns when it is larger than the read's
/// `max_bytes`. A full produce request of 1 MiB of records makes a batch a little larger than
/// that (each record has its framing), and a read of such a batch should not need the blocking
/// pool just for that.
pub(crate) const CACHED_FIRST_BATCH_MAX_BYTES: u64 = 2 << 20;

impl SegmentIndex {
    fn lookup_offset(&self, relative_offset: u32) -> IndexHit {
        match self {
            SegmentIndex::Sealed(index) => index.lookup_offset(relative_offset),
            SegmentIndex::Active(entries) => match entries.read() {
                Ok(entries) => entries.lookup_offset(relative_offset),
                // A poisoned lock means a writer panicked mid-push; the segment start is always safe.
                Err(_) => IndexHit::START,
            },
        }
    }

    fn next_after(&self, position: u64) -> Option<IndexHit> {
        match self {
            SegmentIndex::Sealed(index) => index.next_after(position),
            SegmentIndex::Active(entries) => entries.read().ok().and_then(|entries| entries.next_after(position)),
        }
    }

    fn lookup_timestamp(&self, timestamp: i64) -> IndexHit {
        match self {
            SegmentIndex::Sealed(index) => index.lookup_timestamp(timestamp),
            SegmentIndex::Active(entries) => match entries.read() {
                Ok(entries) => entries.lookup_timestamp(timestamp),
                Err(_) => IndexHit::START,
            },
        }
    }
}

/// The first intact batch after damage: its offset and byte position.
#[derive(Debug, Clone, Copy)]
struct Resume {
    offset: u64,
    position: u64,
}

/// A readable snapshot of one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub base_offset: u64,
    /// One past the last offset in the visible part.
    pub next_offset: u64,
    /// Visible bytes.
    pub len: u64,
    /// Largest visible timestamp (`i64::MIN` when empty).
    pub max_timestamp: i64,
    pub file: Arc<File>,
    pub path: Arc<Path>,
    pub index: SegmentIndex,
}

impl SegmentView {
    fn corrupt(&self, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: self.path.to_path_buf(), position, reason: reason.into() }
    }

    /// The error for damage at byte `position`, where a batch starting at offset `from` was
    /// expected: the damaged range runs from there to the next batch known to be intact.
    fn damaged(&self, position: u64, from: u64, reason: impl Into<String>) -> Error {
        let to = self.resume_after(position, from).offset.max(from + 1);
        Error::DataLoss {
            from,
            to,
            path: Some(self.path.to_path_buf()),
            position: Some(position),
            reason: reason.into(),
        }
    }

    /// Where reading can go on after damage at `position` (batch offset `from`): right after the
    /// damaged batch when its header is plausible and the batch after it confirms where it
    /// ends, else at the next index entry, else at the end of the segment.
    fn resume_after(&self, position: u64, from: u64) -> Resume {
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        let plausible = (position + BATCH_HEADER_BYTES as u64 <= self.len)
            .then(|| self.read_exact_at(&mut buf, position, Wait::Disk).ok())
            .flatten()
            .and_then(|()| BatchHeader::parse(&buf))
            .filter(|h| h.base_offset == from && h.record_count > 0 && position + h.total_len() <= self.len);
        if let Some(header) = plausible {
            let next = position + header.total_len();
            let confirmed = if next == self.len {
                header.next_offset() == self.next_offset
            } else {
                matches!(self.try_header_at(next, header.next_offset(), Wait::Disk), Ok(Ok(_)))
            };
            if confirmed {
                return Resume { offset: header.next_offset(), position: next };
            }
        }
        match self.index.next_after(position) {
            Some(hit) => {
                Resume { offset: self.base_offset + u64::from(hit.relative_offset), position: u64::from(hit.position) }
            }
            None => Resume { offset: self.next_offset, position: self.len },
        }
    }

    /// The offset after the last batch, found by walking batch headers from `hit` to the end of
    /// the visible data.
    pub fn end_from(&self, hit: IndexHit) -> Result<u64> {
        let mut position = u64::from(hit.position);
        let mut expected = self.base_offset + u64::from(hit.relative_offset);
        while position < self.len {
            let header = self.header_at(position, expected)?;
            position += header.total_len();
            expected = header.next_offset();
        }
        Ok(expected)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64, wait: Wait) -> Result<()> {
        page_cache::read_exact_at(&self.file, buf, position, wait)
            .map_err(|e| Error::io("reading segment", self.path.to_path_buf(), e))
    }

    /// What a cache-only read returns instead of waiting (or of working out damage).
    fn not_cached(&self) -> Error {
        Error::io("reading segment", self.path.to_path_buf(), page_cache::would_block())
    }

    /// `len` bytes from `position`, read into memory that is not zero-filled first (a read of a
    /// few MiB would otherwise write every byte twice); large reads reuse pooled buffers.
    fn read_bytes(&self, len: usize, position: u64, wait: Wait) -> Result<Bytes> {
        if wait == Wait::CacheOnly {
            // preadv2 takes initialized memory; a pooled buffer mostly is already.
            let mut buf = crate::read_buffers::SHARED.take_filled(len);
            self.read_exact_at(&mut buf, position, wait)?;
            return Ok(crate::read_buffers::SHARED.freeze(buf));
        }
        let mut buf = crate::read_buffers::SHARED.take(len);
        while buf.len() < len {
            let at = position + buf.len() as u64;
            let read = rustix::io::pread(&*self.file, rustix::buffer::spare_capacity(&mut buf), at)
                .map_err(|e| Error::io("reading segment", self.path.to_path_buf(), e.into()))?;
            if read == 0 {
                return Err(self.corrupt(at, "segment ends before its visible length"));
            }
        }
        // The spare capacity may have been larger than asked; bytes past `len` are not visible yet.
        buf.truncate(len);
        Ok(crate::read_buffers::SHARED.freeze(buf))
    }

    /// Reads and checks the header of the batch at `position`, which must start at `expected`.
    fn header_at(&self, position: u64, expected: u64) -> Result<BatchHeader> {
        self.try_header_at(position, expected, Wait::Disk)?.map_err(|reason| self.damaged(position, expected, reason))
    }

    /// [`SegmentView::header_at`], with damage as the inner error's reason (io errors outside).
    fn try_header_at(&self, position: u64, expected: u64, wait: Wait) -> Result<Result<BatchHeader, String>> {
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        if position + BATCH_HEADER_BYTES as u64 > self.len {
            return Ok(Err("batch header runs past the end of the segment".into()));
        }
        self.read_exact_at(&mut buf, position, wait)?;
        let Some(header) = BatchHeader::parse(&buf) else { return Ok(Err("short header".into())) };
        Ok(header.check(Some(expected), self.len - position).map(|()| header))
    }

    /// Walks batch headers from `hit` until `stop(header)` is true; returns that batch's position
    /// and header, or `None` at the end of the visible data.
    ///
    /// Damage that ends at or before offset `past` is walked over (a reader that skips damage
    /// asks for the offset after it, and the index may point before it); other damage is
    /// [`Error::DataLoss`]. A cache-only walk gives up at damage instead.
    fn walk_from(
        &self,
        hit: IndexHit,
        past: u64,
        wait: Wait,
        mut stop: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let mut position = u64::from(hit.position);
        let mut expected = self.base_offset + u64::from(hit.relative_offset);
        while position < self.len {
            let header = match self.try_header_at(position, expected, wait)? {
                Ok(header) => header,
                Err(_) if wait == Wait::CacheOnly => return Err(self.not_cached()),
                Err(reason) => {
                    let resume = self.resume_after(position, expected);
                    if resume.offset > expected && resume.offset <= past && resume.position > position {
                        (position, expected) = (resume.position, resume.offset);
                        continue;
                    }
                    return Err(self.damaged(position, expected, reason));
                }
            };
            if stop(&header) {
                return Ok(Some((position, header)));
            }
            position += header.total_len();
            expected = header.next_offset();
        }
        Ok(None)
    }

    /// Calls `visit` with the header of every batch from the one holding `offset` on (headers
    /// only: checksums are not verified here).
    pub fn visit_headers(&self, offset: u64, visit: &mut impl FnMut(&BatchHeader)) -> Result<()> {
        let relative = u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX);
        let hit = self.index.lookup_offset(relative);
        self.walk_from(hit, offset, Wait::Disk, |h| {
            if h.next_offset() > offset {
                visit(h);
            }
            false
        })?;
        Ok(())
    }

    /// Byte position and base offset of the batch holding `offset`.
    pub fn batch_start(&self, offset: u64) -> Result<(u64, u64)> {
        self.batch_holding(offset).map(|(position, header)| (position, header.base_offset))
    }

    fn batch_holding(&self, offset: u64) -> Result<(u64, BatchHeader)> {
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let hit = self.index.lookup_offset(relative);
        match self.walk_from(hit, offset, Wait::Disk, |h| h.next_offset() > offset)? {
            Some(found) => Ok(found),
            None => Err(self.corrupt(self.len, format!("offset {offset} not found in its segment"))),
        }
    }

    /// The record at `offset`, which starts at `position` of its batch (as a [`Record`] read
    /// earlier said). Only the record's bytes are read, so its batch checksum is not verified
    /// again: callers use it for records they already read whole once.
    pub fn read_record(&self, offset: u64, position: u32) -> Result<crate::codec::Record> {
        let (start, header) = self.batch_holding(offset)?;
        let at = start + u64::from(position);
        // Format 1 prefixes a record with 4 bytes, format 2 with a varint of at most 5, format 3
        // with a key byte and such a varint.
        let mut prefix = [0u8; 6];
        let prefix_len = match header.version {
            crate::layout::BATCH_FORMAT_V1 => 4,
            crate::layout::BATCH_FORMAT_V2 => 5.min(self.len.saturating_sub(at)),
            _ => 6.min(self.len.saturating_sub(at)),
        };
        if at + prefix_len > self.len || prefix_len == 0 {
            return Err(self.corrupt(at, "record position runs past the segment"));
        }
        let prefix = &mut prefix[..prefix_len as usize];
        self.read_exact_at(prefix, at, Wait::Disk)?;
        let (prefix_len, len) = if header.version == crate::layout::BATCH_FORMAT_V1 {
            (4, u64::from(u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]])))
        } else {
            let mut rest: &[u8] = prefix;
            if header.version != crate::layout::BATCH_FORMAT_V2 {
                rest = rest.get(1..).unwrap_or_default();
            }
            let len = crate::record_v2::read_varint(&mut rest)
                .ok_or_else(|| self.corrupt(at, "record length is not a varint"))?;
            ((prefix.len() - rest.len()) as u64, len)
        };
        if at + prefix_len + len > self.len {
            return Err(self.corrupt(at, "record runs past the segment"));
        }
        let buf = self.read_bytes(usize::try_from(prefix_len + len).unwrap_or(usize::MAX), at, Wait::Disk)?;
        crate::codec::RecordIter::single(buf, offset, position, header.version)
            .map_err(|reason| self.corrupt(at, reason))
    }

    /// Whole batches starting with the one holding `offset`, up to `max_bytes` (but always the
    /// first batch, however large), each checksum-verified. With [`Wait::CacheOnly`], the same
    /// batches from the page cache, never more than `max_bytes`, or a larger first batch alone
    /// up to [`CACHED_FIRST_BATCH_MAX_BYTES`]; any error then only means: read it the ordinary
    /// way.
    pub fn read(&self, offset: u64, max_bytes: usize, wait: Wait) -> Result<Vec<Batch>> {
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let hit = self.index.lookup_offset(relative);
        let Some((start, first)) = self.walk_from(hit, offset, wait, |h| h.next_offset() > offset)? else {
            return Ok(Vec::new());
        };
        let want = (max_bytes.min(MAX_READ_BYTES) as u64).max(first.total_len()).min(self.len - start);
        if wait == Wait::CacheOnly && want > (max_bytes as u64).max(CACHED_FIRST_BATCH_MAX_BYTES) {
            return Err(self.not_cached());
        }
        let buf = self.read_bytes(usize::try_from(want).unwrap_or(usize::MAX), start, wait)?;
        self.split_batches(buf, start, first.base_offset, wait)
    }

    /// Cuts a buffer that starts at a batch boundary into verified batches, dropping a partial
    /// batch at its end.
    fn split_batches(&self, mut buf: Bytes, start: u64, first_offset: u64, wait: Wait) -> Result<Vec<Batch>> {
        let mut batches = Vec::new();
        let mut position = start;
        let mut expected = first_offset;
        while let Some(header) = BatchHeader::parse(&buf) {
            let checked = header.check(Some(expected), self.len - position);
            let total = usize::try_from(header.total_len()).unwrap_or(usize::MAX);
            if checked.is_ok() && total > buf.len() {
                break;
            }
            let batch = checked.and_then(|()| Batch::from_verified_bytes(buf.split_to(total)));
            let batch = match batch {
                Ok(batch) => batch,
                // The intact batches before the damage are returned; the next read starts at
                // the damaged one and reports it.
                Err(_) if !batches.is_empty() => break,
                Err(_) if wait == Wait::CacheOnly => return Err(self.not_cached()),
                Err(reason) => return Err(self.damaged(position, expected, reason)),
            };
            expected = batch.next_offset();
            position += header.total_len();
            batches.push(batch);
        }
        Ok(batches)
    }

    /// The first offset in this segment whose record timestamp is `>= timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let hit = self.index.lookup_timestamp(timestamp);
        let Some((position, header)) = self.walk_from(hit, 0, Wait::Disk, |h| h.max_timestamp >= timestamp)? else {
            return Ok(None);
        };
        let buf = self.read_bytes(usize::try_from(header.total_len()).unwrap_or(usize::MAX), position, Wait::Disk)?;
        let batch = Batch::from_verified_bytes(buf).map_err(|reason| self.corrupt(position, reason))?;
        for record in batch.records() {
            let record = record.map_err(|reason| self.corrupt(position, reason))?;
            if record.timestamp >= timestamp {
                return Ok(Some(record.offset));
            }
        }
        Err(self.corrupt(position, "batch max_timestamp is larger than any of its records"))
    }
}
