//! Batch and record encoding: the bytes of a segment file.
//!
//! A segment is a sequence of batches. All integers are little-endian.
//!
//! **Batch header** (56 bytes):
//!
//! | at | size | field            | notes                                                        |
//! |----|------|------------------|--------------------------------------------------------------|
//! | 0  | 8    | base_offset u64  | offset of the first record; written at append time, so it is not covered by the CRC but checked against the offset the log expects |
//! | 8  | 4    | length u32       | bytes after this field (total batch size - 12)               |
//! | 12 | 4    | crc u32          | CRC-32 (IEEE) of bytes 16..end (in format 3 computed when the batch is appended, after its records' offsets are stamped) |
//! | 16 | 1    | version u8       | record layout: 1 (below), 2 ([`crate::record_v2`]) or 3 ([`crate::record_v3`]); new batches are written in [`BATCH_FORMAT_VERSION`] |
//! | 17 | 1    | attributes u8    | 0 (reserved for compression)                                  |
//! | 18 | 2    | reserved         | 0                                                             |
//! | 20 | 4    | record_count u32 | at least 1; offsets are dense: base_offset .. base_offset+count |
//! | 24 | 8    | first_timestamp  | i64 ms since the Unix epoch, of the first record             |
//! | 32 | 8    | max_timestamp    | i64 ms, the largest record timestamp in the batch            |
//! | 40 | 8    | producer_id u64  | idempotent producer that wrote the batch; 0 = none           |
//! | 48 | 8    | producer_sequence u64 | that producer's sequence number of the first record     |
//! | 56 | ...  | records          | `record_count` records, back to back                          |
//!
//! **Record**, format version 1 (version 2 is in [`crate::record_v2`], version 3, which new
//! batches use, in [`crate::record_v3`]):
//!
//! | size | field                                                  |
//! |------|--------------------------------------------------------|
//! | 4    | length u32: bytes after this field                     |
//! | 8    | timestamp i64 ms                                       |
//! | 4    | key_len u32; `u32::MAX` means no key                   |
//! | k    | key                                                    |
//! | 4    | value_len u32                                          |
//! | v    | value                                                  |
//! | 2    | header_count u16                                       |
//! | ...  | headers: name_len u16, name (UTF-8), value_len u32, value |
//!
//! The CRC lets a reader reject a batch torn by a crash or damaged on disk; it is checked on every
//! read and during recovery, so a record whose checksum does not match is never returned.

use bytes::{Buf, Bytes};

use crate::error::{Error, Result};
use crate::layout::{BATCH_FORMAT_V1, BATCH_FORMAT_V2, BATCH_FORMAT_VERSION};
use crate::{record_v2, record_v3};

/// Size of the batch header.
pub const BATCH_HEADER_BYTES: usize = 56;
/// Bytes before the `length` field ends: a batch occupies `LENGTH_PREFIX_BYTES + length` bytes.
pub const LENGTH_PREFIX_BYTES: usize = 12;
const CRC_START: usize = 16;
const NO_KEY: u32 = u32::MAX;
/// Fixed bytes of a format-1 record besides key, value and headers.
const V1_RECORD_OVERHEAD_BYTES: usize = 4 + 8 + 4 + 4 + 2;

/// One header of a record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// Header name.
    pub name: &'a str,
    /// Header value.
    pub value: &'a [u8],
}

/// A record to append, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Milliseconds since the Unix epoch (the broker fills it in when the producer did not).
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Ordered headers.
    pub headers: &'a [HeaderRef<'a>],
}

impl RecordRef<'_> {
    /// Encoded size of this record inside a batch of the current format.
    pub fn encoded_len(&self) -> usize {
        record_v3::encoded_len(self)
    }

    fn v1_encoded_len(&self) -> usize {
        V1_RECORD_OVERHEAD_BYTES
            + self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self.headers.iter().map(|h| 2 + h.name.len() + 4 + h.value.len()).sum::<usize>()
    }
}

/// Builds one encoded batch from records. Reusable: [`BatchBuilder::finish`] leaves it empty.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: Option<(u64, u64)>,
    version: u8,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            buf: Vec::new(),
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer: None,
            version: BATCH_FORMAT_VERSION,
        }
    }
}

/// An encoded batch ready to append. Its base offset is filled in by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
}

impl EncodedBatch {
    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        read_u32(&self.bytes, 20)
    }

    /// Largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        read_i64(&self.bytes, 32)
    }

    /// The idempotent producer id (0 = none) and the sequence of the first record.
    pub fn producer(&self) -> (u64, u64) {
        (read_u64(&self.bytes, 40), read_u64(&self.bytes, 48))
    }

    /// The batch as written, without copying or re-checking it (this process built it).
    pub(crate) fn into_batch(self) -> Option<Batch> {
        let header = BatchHeader::parse(&self.bytes)?;
        Some(Batch { header, bytes: Bytes::from(self.bytes) })
    }

    /// The bytes the log stores for this batch at `base_offset` of `partition` (for tests and
    /// tools that build stored batches without a log).
    pub fn into_stored_bytes(mut self, base_offset: u64, partition: u32) -> Result<Vec<u8>> {
        self.stamp(base_offset, partition)?;
        Ok(self.bytes)
    }

    /// Seals the batch for `base_offset` of `partition` and returns the bytes to write: the base
    /// offset goes into the header and, in format 3, each record's offset and partition into its
    /// slots, and then the checksum is computed over them. Fails if the offsets do not fit.
    pub fn stamp(&mut self, base_offset: u64, partition: u32) -> Result<&[u8]> {
        self.bytes[0..8].copy_from_slice(&base_offset.to_le_bytes());
        if self.bytes[16] == record_v3::VERSION {
            let count = self.record_count();
            record_v3::stamp(&mut self.bytes[BATCH_HEADER_BYTES..], count, base_offset, partition)
                .map_err(Error::InvalidArgument)?;
            let crc = crc32fast::hash(&self.bytes[CRC_START..]);
            self.bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        Ok(&self.bytes)
    }
}

impl BatchBuilder {
    /// A builder whose buffer starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder { buf: Vec::with_capacity(bytes.max(BATCH_HEADER_BYTES)), ..Default::default() }
    }

    /// A builder of batches in format version 1, which the broker no longer writes: for tests
    /// and tools that make the segments of an older broker.
    pub fn format_v1() -> Self {
        BatchBuilder { version: BATCH_FORMAT_V1, ..Default::default() }
    }

    /// A builder of batches in format version 2, which the broker no longer writes: for tests
    /// and tools that make the segments of an older broker.
    pub fn format_v2() -> Self {
        BatchBuilder { version: BATCH_FORMAT_V2, ..Default::default() }
    }

    /// Number of records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Marks the batch as written by idempotent producer `producer_id` (non-zero), whose first
    /// record has sequence number `first_sequence`. Applies to the next [`BatchBuilder::finish`].
    pub fn set_producer(&mut self, producer_id: u64, first_sequence: u64) {
        self.producer = Some((producer_id, first_sequence));
    }

    /// Encoded size so far, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len().max(BATCH_HEADER_BYTES)
    }

    /// Adds a record. Fails if a field is too long for the format.
    pub fn push(&mut self, record: &RecordRef<'_>) -> Result<()> {
        check_lengths(record)?;
        if self.count == u32::MAX {
            return Err(Error::InvalidArgument("a batch holds at most 2^32-1 records".into()));
        }
        if self.buf.is_empty() {
            self.buf.resize(BATCH_HEADER_BYTES, 0);
            self.first_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
        if self.version == BATCH_FORMAT_V2 {
            self.buf.reserve(record_v2::encoded_len(record));
            record_v2::put(&mut self.buf, record);
            return Ok(());
        }
        if self.version != BATCH_FORMAT_V1 {
            self.buf.reserve(record_v3::encoded_len(record));
            record_v3::put(&mut self.buf, record);
            return Ok(());
        }
        let len = record.v1_encoded_len();
        self.buf.reserve(len);
        put_u32(&mut self.buf, (len - 4) as u32);
        self.buf.extend_from_slice(&record.timestamp.to_le_bytes());
        match record.key {
            Some(key) => {
                put_u32(&mut self.buf, key.len() as u32);
                self.buf.extend_from_slice(key);
            }
            None => put_u32(&mut self.buf, NO_KEY),
        }
        put_u32(&mut self.buf, record.value.len() as u32);
        self.buf.extend_from_slice(record.value);
        self.buf.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
        for header in record.headers {
            self.buf.extend_from_slice(&(header.name.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(header.name.as_bytes());
            put_u32(&mut self.buf, header.value.len() as u32);
            self.buf.extend_from_slice(header.value);
        }
        Ok(())
    }

    /// Seals the batch: writes the header and checksum (in format 3 the checksum waits for
    /// [`EncodedBatch::stamp`]). Fails if no record was pushed.
    pub fn finish(&mut self) -> Result<EncodedBatch> {
        if self.count == 0 {
            return Err(Error::InvalidArgument("a batch needs at least one record".into()));
        }
        let mut bytes = std::mem::take(&mut self.buf);
        let length = u32::try_from(bytes.len() - LENGTH_PREFIX_BYTES)
            .map_err(|_too_big| Error::InvalidArgument(format!("batch of {} bytes exceeds 4 GiB", bytes.len())))?;
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        bytes[16] = self.version;
        bytes[17] = 0;
        bytes[18..20].fill(0);
        bytes[20..24].copy_from_slice(&self.count.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_timestamp.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        let (producer_id, sequence) = self.producer.take().unwrap_or((0, 0));
        bytes[40..48].copy_from_slice(&producer_id.to_le_bytes());
        bytes[48..56].copy_from_slice(&sequence.to_le_bytes());
        if self.version != record_v3::VERSION {
            let crc = crc32fast::hash(&bytes[CRC_START..]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        self.count = 0;
        Ok(EncodedBatch { bytes })
    }
}

fn check_lengths(record: &RecordRef<'_>) -> Result<()> {
    let too_long = |what: &str| Err(Error::InvalidArgument(format!("record {what} exceeds 4 GiB")));
    if record.key.is_some_and(|k| k.len() >= NO_KEY as usize) {
        return too_long("key");
    }
    if record.value.len() > u32::MAX as usize {
        return too_long("value");
    }
    if record.headers.len() > u16::MAX as usize {
        return Err(Error::InvalidArgument(format!("a record has at most {} headers", u16::MAX)));
    }
    for header in record.headers {
        if header.name.len() > u16::MAX as usize {
            return Err(Error::InvalidArgument(format!("header name exceeds {} bytes", u16::MAX)));
        }
        if header.value.len() > u32::MAX as usize {
            return too_long("header value");
        }
    }
    Ok(())
}

fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_le_bytes());
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    read_i64(bytes, at) as u64
}

/// The fixed header of a stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes after the length field.
    pub length: u32,
    /// Stored checksum.
    pub crc: u32,
    /// Format version.
    pub version: u8,
    /// Number of records.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id; 0 = none.
    pub producer_id: u64,
    /// The producer's sequence number of the first record.
    pub producer_sequence: u64,
}

impl BatchHeader {
    /// Parses the first [`BATCH_HEADER_BYTES`] of `bytes`; `None` if there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: read_u64(bytes, 0),
            length: read_u32(bytes, 8),
            crc: read_u32(bytes, 12),
            version: bytes[16],
            record_count: read_u32(bytes, 20),
            first_timestamp: read_i64(bytes, 24),
            max_timestamp: read_i64(bytes, 32),
            producer_id: read_u64(bytes, 40),
            producer_sequence: read_u64(bytes, 48),
        })
    }

    /// Total size of the batch on disk.
    pub fn total_len(&self) -> u64 {
        LENGTH_PREFIX_BYTES as u64 + u64::from(self.length)
    }

    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Checks what can be checked without the payload: version, sizes, and the expected offset.
    /// Returns the reason it is not a plausible batch.
    pub fn check(&self, expected_offset: Option<u64>, max_total: u64) -> Result<(), String> {
        if !(BATCH_FORMAT_V1..=BATCH_FORMAT_VERSION).contains(&self.version) {
            return Err(format!("unknown batch format version {}", self.version));
        }
        if (self.length as usize) < BATCH_HEADER_BYTES - LENGTH_PREFIX_BYTES {
            return Err(format!("batch length {} is shorter than a header", self.length));
        }
        if self.total_len() > max_total {
            return Err(format!("batch length {} runs past the end of the data", self.length));
        }
        if self.record_count == 0 {
            return Err("batch holds no records".into());
        }
        if let Some(expected) = expected_offset
            && self.base_offset != expected
        {
            return Err(format!("batch base offset {} where {expected} was expected", self.base_offset));
        }
        Ok(())
    }
}

/// Verifies the checksum of one whole batch.
pub fn crc_matches(batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_BYTES && crc32fast::hash(&batch[CRC_START..]) == read_u32(batch, 12)
}

/// A stored batch whose checksum has been verified, sharing the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Wraps `bytes` (exactly one batch) after checking its header and CRC.
    pub fn from_verified_bytes(bytes: Bytes) -> Result<Self, String> {
        let header = BatchHeader::parse(&bytes).ok_or("shorter than a batch header")?;
        header.check(None, bytes.len() as u64)?;
        if header.total_len() != bytes.len() as u64 {
            return Err(format!("length field says {} bytes, have {}", header.total_len(), bytes.len()));
        }
        if !crc_matches(&bytes) {
            return Err("checksum mismatch".into());
        }
        Ok(Batch { header, bytes })
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.header.next_offset()
    }

    /// The batch exactly as stored.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Decodes the records. Keys, values and headers are slices of the read buffer (no copy).
    pub fn records(&self) -> RecordIter {
        RecordIter {
            rest: self.bytes.slice(BATCH_HEADER_BYTES..),
            next_offset: self.header.base_offset,
            remaining: self.header.record_count,
            position: BATCH_HEADER_BYTES,
            version: self.header.version,
        }
    }

    /// The record at `offset`, if this batch holds it. The records before it are skipped by
    /// their length prefixes only, without decoding them.
    pub fn record_at(&self, offset: u64) -> Option<Result<Record, String>> {
        let index = offset.checked_sub(self.header.base_offset)?;
        if index >= u64::from(self.header.record_count) {
            return None;
        }
        let body = self.bytes.get(BATCH_HEADER_BYTES..)?;
        let mut rest = body;
        for _ in 0..index {
            let skipped = if self.header.version == BATCH_FORMAT_V1 {
                rest.split_first_chunk::<4>()
                    .and_then(|(prefix, tail)| tail.get(u32::from_le_bytes(*prefix) as usize..).map(|tail| rest = tail))
            } else {
                record_v3::split_fields(&mut rest, self.header.version).map(drop)
            };
            if skipped.is_none() {
                return Some(Err("record runs past the batch".into()));
            }
        }
        let position = BATCH_HEADER_BYTES + body.len() - rest.len();
        let mut iter = RecordIter {
            rest: self.bytes.slice(position..),
            next_offset: offset,
            remaining: 1,
            position,
            version: self.header.version,
        };
        iter.next()
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Where the record starts in its batch (bytes from the batch's first byte), for reading it
    /// again alone with [`crate::PartitionLog::read_record`].
    pub position: u32,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    header_count: u32,
    headers: Bytes,
    version: u8,
}

impl Record {
    /// The record's headers in order.
    pub fn headers(&self) -> HeaderIter {
        HeaderIter { rest: self.headers.clone(), remaining: self.header_count, version: self.version }
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }
}

/// A header read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (valid UTF-8).
    pub name: Bytes,
    /// Header value.
    pub value: Bytes,
}

impl Header {
    /// The name as text.
    pub fn name_str(&self) -> &str {
        // Names are checked to be UTF-8 when the iterator yields them.
        std::str::from_utf8(&self.name).unwrap_or_default()
    }
}

fn take(rest: &mut Bytes, n: usize) -> Result<Bytes, String> {
    if rest.len() < n {
        return Err(format!("record field of {n} bytes runs past the end of its batch"));
    }
    Ok(rest.split_to(n))
}

fn take_u32(rest: &mut Bytes) -> Result<u32, String> {
    if rest.len() < 4 {
        return Err("record truncated".into());
    }
    Ok(rest.get_u32_le())
}

/// Iterator over the records of a [`Batch`].
#[derive(Debug)]
pub struct RecordIter {
    rest: Bytes,
    next_offset: u64,
    remaining: u32,
    /// Position of the next record in its batch.
    position: usize,
    /// The batch's format version.
    version: u8,
}

impl RecordIter {
    /// Decodes the single record in `bytes` (length prefix included), read back alone from
    /// `position` of a batch in format `version`.
    pub fn single(bytes: Bytes, offset: u64, position: u32, version: u8) -> Result<Record, String> {
        let mut iter =
            RecordIter { rest: bytes, next_offset: offset, remaining: 1, position: position as usize, version };
        iter.next().unwrap_or_else(|| Err("no record".into()))
    }
}

impl RecordIter {
    fn decode_v2(&mut self) -> Result<Record, String> {
        let position = u32::try_from(self.position).map_err(|_| "batch too large".to_owned())?;
        let mut rest = &self.rest[..];
        let body = record_v3::split_checked(&mut rest, self.version, self.next_offset)?;
        let fields = record_v2::decode(body)?;
        let record = Record {
            offset: self.next_offset,
            position,
            timestamp: fields.timestamp,
            key: fields.key.map(|k| self.rest.slice_ref(k)),
            value: self.rest.slice_ref(fields.value),
            header_count: fields.header_count,
            headers: self.rest.slice_ref(fields.headers),
            version: self.version,
        };
        let used = self.rest.len() - rest.len();
        self.rest.advance(used);
        self.position += used;
        self.next_offset += 1;
        Ok(record)
    }

    fn decode_one(&mut self) -> Result<Record, String> {
        if self.version != BATCH_FORMAT_V1 {
            return self.decode_v2();
        }
        let position = u32::try_from(self.position).map_err(|_| "batch too large".to_owned())?;
        let len = take_u32(&mut self.rest)? as usize;
        let mut body = take(&mut self.rest, len)?;
        self.position += 4 + len;
        if body.len() < 8 {
            return Err("record truncated".into());
        }
        let timestamp = body.get_i64_le();
        let key_len = take_u32(&mut body)?;
        let key = if key_len == NO_KEY { None } else { Some(take(&mut body, key_len as usize)?) };
        let value_len = take_u32(&mut body)? as usize;
        let value = take(&mut body, value_len)?;
        if body.len() < 2 {
            return Err("record truncated".into());
        }
        let header_count = u32::from(body.get_u16_le());
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(Record { offset, position, timestamp, key, value, header_count, headers: body, version: self.version })
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let record = self.decode_one();
        if record.is_err() {
            self.remaining = 0;
        }
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// Iterator over a record's headers.
#[derive(Debug)]
pub struct HeaderIter {
    rest: Bytes,
    remaining: u32,
    version: u8,
}

impl HeaderIter {
    fn decode_one(&mut self) -> Result<Header, String> {
        if self.version != BATCH_FORMAT_V1 {
            let mut rest = &self.rest[..];
            let (name, value) = record_v2::next_header(&mut rest)?;
            let header = Header { name: self.rest.slice_ref(name), value: self.rest.slice_ref(value) };
            let used = self.rest.len() - rest.len();
            self.rest.advance(used);
            return Ok(header);
        }
        if self.rest.len() < 2 {
            return Err("header truncated".into());
        }
        let name_len = usize::from(self.rest.get_u16_le());
        let name = take(&mut self.rest, name_len)?;
        std::str::from_utf8(&name).map_err(|e| format!("header name is not UTF-8: {e}"))?;
        let value_len = take_u32(&mut self.rest)? as usize;
        let value = take(&mut self.rest, value_len)?;
        Ok(Header { name, value })
    }
}

impl Iterator for HeaderIter {
    type Item = Result<Header, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let header = self.decode_one();
        if header.is_err() {
            self.remaining = 0;
        }
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stored(mut batch: EncodedBatch, base: u64) -> Batch {
        let bytes = Bytes::copy_from_slice(batch.stamp(base, 0).unwrap());
        Batch::from_verified_bytes(bytes).unwrap()
    }

    #[test]
    fn record_at_finds_each_record_without_decoding_the_ones_before() {
        for mut builder in [BatchBuilder::default(), BatchBuilder::format_v1(), BatchBuilder::format_v2()] {
            let values: Vec<Vec<u8>> = (0..5).map(|i| vec![b'v'; i * 3]).collect();
            let headers = [HeaderRef { name: "h", value: b"x" }];
            for (i, value) in values.iter().enumerate() {
                let key = if i % 2 == 0 { Some(b"key".as_slice()) } else { None };
                builder.push(&RecordRef { timestamp: i as i64, key, value, headers: &headers[..i % 2] }).unwrap();
            }
            let batch = stored(builder.finish().unwrap(), 100);
            let all: Vec<Record> = batch.records().map(Result::unwrap).collect();
            assert_eq!(all.len(), 5);
            for record in &all {
                assert_eq!(&batch.record_at(record.offset).unwrap().unwrap(), record);
            }
            assert!(batch.record_at(99).is_none());
            assert!(batch.record_at(105).is_none());
        }
    }

    #[test]
    fn header_fields_are_where_the_table_says() {
        let mut builder = BatchBuilder::default();
        builder.push(&RecordRef { timestamp: 7, key: None, value: b"a", headers: &[] }).unwrap();
        builder.push(&RecordRef { timestamp: 5, key: Some(b"k"), value: b"bc", headers: &[] }).unwrap();
        let batch = stored(builder.finish().unwrap(), 42);
        let bytes = batch.as_bytes();
        assert_eq!(&bytes[0..8], &42u64.to_le_bytes());
        assert_eq!(read_u32(bytes, 8) as usize, bytes.len() - 12);
        assert_eq!(bytes[16], BATCH_FORMAT_VERSION);
        assert_eq!(read_u32(bytes, 20), 2);
        assert_eq!(read_i64(bytes, 24), 7);
        assert_eq!(read_i64(bytes, 32), 7);
        assert_eq!((read_u64(bytes, 40), read_u64(bytes, 48)), (0, 0), "no producer");
        assert_eq!(batch.next_offset(), 44);
        builder.push(&RecordRef { timestamp: 1, key: None, value: b"", headers: &[] }).unwrap();
        builder.set_producer(99, 1234);
        let batch = stored(builder.finish().unwrap(), 0);
        assert_eq!((batch.header().producer_id, batch.header().producer_sequence), (99, 1234));
    }

    #[test]
    fn empty_batch_is_refused() {
        assert!(matches!(BatchBuilder::default().finish(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn any_flipped_payload_bit_fails_the_checksum() {
        let mut builder = BatchBuilder::default();
        builder.push(&RecordRef { timestamp: 1, key: Some(b"key"), value: b"value", headers: &[] }).unwrap();
        let batch = stored(builder.finish().unwrap(), 0);
        let good = batch.as_bytes().to_vec();
        for at in CRC_START..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(!crc_matches(&bad), "flip at {at} went unnoticed");
        }
    }

    type Rec = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn arb_record() -> impl Strategy<Value = Rec> {
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec(any::<u8>(), 0..100),
            proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..4),
        )
    }

    proptest! {
        #[test]
        fn records_roundtrip(records in proptest::collection::vec(arb_record(), 1..20), base in 0u64..1 << 60, v1 in any::<bool>()) {
            let mut builder = if v1 { BatchBuilder::format_v1() } else { BatchBuilder::default() };
            for (timestamp, key, value, headers) in &records {
                let headers: Vec<HeaderRef<'_>> =
                    headers.iter().map(|(n, v)| HeaderRef { name: n, value: v }).collect();
                builder.push(&RecordRef { timestamp: *timestamp, key: key.as_deref(), value, headers: &headers }).unwrap();
            }
            let batch = stored(builder.finish().unwrap(), base);
            prop_assert_eq!(batch.header().max_timestamp, records.iter().map(|r| r.0).max().unwrap());
            let decoded: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (record, (timestamp, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, base + i as u64);
                prop_assert_eq!(record.timestamp, *timestamp);
                prop_assert_eq!(record.key.as_deref(), key.as_deref());
                prop_assert_eq!(&record.value[..], &value[..]);
                let got: Vec<(String, Vec<u8>)> = record.headers()
                    .map(|h| h.map(|h| (h.name_str().to_owned(), h.value.to_vec())))
                    .collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(&got, headers);
            }
        }
    }
}
