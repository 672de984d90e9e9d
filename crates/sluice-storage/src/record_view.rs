//! Records of a [`Batch`] borrowed from its buffer: no `Bytes` per field, no reference counts.
//! For callers that only copy each record somewhere (the server's wire encoder), where
//! [`crate::codec::RecordIter`]'s owned slices cost more than the copy.

use crate::codec::{BATCH_HEADER_BYTES, Batch};
use crate::layout::BATCH_FORMAT_V1;
use crate::{record_v2, record_v3};

const NO_KEY: u32 = u32::MAX;

/// One stored record, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Where the record starts in its batch (bytes from the batch's first byte).
    pub position: u32,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    header_count: u32,
    headers: &'a [u8],
    /// Headers are in batch format 1's layout (else format 2's protobuf fields).
    v1: bool,
}

/// One stored header, borrowed. The name has been checked to be UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView<'a> {
    /// Header name (UTF-8).
    pub name: &'a [u8],
    /// Header value.
    pub value: &'a [u8],
}

/// Where a record starts in its batch: a place to resume a walk (see [`Batch::views_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStart {
    /// The record's offset.
    pub offset: u64,
    /// Bytes from the batch's first byte (a [`RecordView::position`]).
    pub position: u32,
}

impl<'a> RecordView<'a> {
    /// Where this record starts, to resume a walk of its batch there.
    pub fn start(&self) -> RecordStart {
        RecordStart { offset: self.offset, position: self.position }
    }

    /// The record's headers in order.
    pub fn headers(&self) -> HeaderViews<'a> {
        HeaderViews { rest: self.headers, remaining: self.header_count, v1: self.v1 }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }
}

/// The first `n` bytes of `rest`, which moves past them; `None` if it is shorter.
#[inline(always)]
fn split<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

#[inline(always)]
fn fixed<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

/// Iterator over a batch's records, borrowed (see [`Batch::views`]).
#[derive(Debug)]
pub struct RecordViews<'a> {
    rest: &'a [u8],
    next_offset: u64,
    remaining: u32,
    /// Position of the next record in its batch.
    position: usize,
    /// The batch's format version.
    version: u8,
}

impl<'a> RecordViews<'a> {
    #[inline]
    fn decode_v2(&mut self) -> Result<RecordView<'a>, String> {
        let position = u32::try_from(self.position).map_err(|_| "batch too large")?;
        let before = self.rest.len();
        let body = record_v3::split_checked(&mut self.rest, self.version, self.next_offset)?;
        self.position += before - self.rest.len();
        let fields = record_v2::decode(body)?;
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(RecordView {
            offset,
            position,
            timestamp: fields.timestamp,
            key: fields.key,
            value: fields.value,
            header_count: fields.header_count,
            headers: fields.headers,
            v1: false,
        })
    }

    #[inline]
    fn decode_one(&mut self) -> Result<RecordView<'a>, String> {
        if self.version == BATCH_FORMAT_V1 {
            self.decode_v1().ok_or_else(|| "record runs past the end of its batch".into())
        } else {
            self.decode_v2()
        }
    }

    #[inline]
    fn decode_v1(&mut self) -> Option<RecordView<'a>> {
        let position = u32::try_from(self.position).ok()?;
        let len = u32::from_le_bytes(fixed(&mut self.rest)?) as usize;
        let mut body = split(&mut self.rest, len)?;
        self.position += 4 + len;
        let timestamp = i64::from_le_bytes(fixed(&mut body)?);
        let key_len = u32::from_le_bytes(fixed(&mut body)?);
        let key = if key_len == NO_KEY { None } else { Some(split(&mut body, key_len as usize)?) };
        let value_len = u32::from_le_bytes(fixed(&mut body)?) as usize;
        let value = split(&mut body, value_len)?;
        let header_count = u32::from(u16::from_le_bytes(fixed(&mut body)?));
        let offset = self.next_offset;
        self.next_offset += 1;
        Some(RecordView { offset, position, timestamp, key, value, header_count, headers: body, v1: true })
    }
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let record = self.decode_one();
        if record.is_err() {
            self.remaining = 0;
        }
        Some(record.map_err(|reason| format!("record at offset {}: {reason}", self.next_offset)))
    }
}

/// Iterator over a record's headers, borrowed.
#[derive(Debug)]
pub struct HeaderViews<'a> {
    rest: &'a [u8],
    remaining: u32,
    v1: bool,
}

impl<'a> Iterator for HeaderViews<'a> {
    type Item = Result<HeaderView<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if !self.v1 {
            let header = record_v2::next_header(&mut self.rest).map(|(name, value)| HeaderView { name, value });
            if header.is_err() {
                self.remaining = 0;
            }
            return Some(header);
        }
        let mut decode = || {
            let name_len = usize::from(u16::from_le_bytes(fixed(&mut self.rest).ok_or("header truncated")?));
            let name = split(&mut self.rest, name_len).ok_or("header name runs past its record")?;
            std::str::from_utf8(name).map_err(|e| format!("header name is not UTF-8: {e}"))?;
            let value_len = u32::from_le_bytes(fixed(&mut self.rest).ok_or("header truncated")?) as usize;
            let value = split(&mut self.rest, value_len).ok_or("header value runs past its record")?;
            Ok(HeaderView { name, value })
        };
        let header: Result<HeaderView<'a>, String> = decode();
        if header.is_err() {
            self.remaining = 0;
        }
        Some(header)
    }
}

/// A record of a format-2 or format-3 batch as stored, nothing decoded: for copying it to the
/// wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Fields 1 to 4 (key, value, headers, timestamp_ms) of a `sluice.v1.Record`, exactly as
    /// prost encodes them (see [`crate::record_v2`]).
    pub fields: &'a [u8],
    /// In format 3, the whole stored record: a `repeated Record records = 1` entry with this
    /// offset and the partition, ready to send (see [`crate::record_v3`]). Consecutive records
    /// of a batch are consecutive slices.
    pub entry: Option<&'a [u8]>,
}

/// Iterator over the records of a format-2 or format-3 batch as stored (see
/// [`Batch::stored_from`]).
#[derive(Debug)]
pub struct StoredRecords<'a> {
    rest: &'a [u8],
    next_offset: u64,
    remaining: u32,
    version: u8,
}

impl<'a> Iterator for StoredRecords<'a> {
    type Item = Result<StoredRecord<'a>, String>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let offset = self.next_offset;
        self.next_offset += 1;
        let record = if self.version == record_v3::VERSION {
            record_v3::split_entry(&mut self.rest).and_then(|entry| {
                (entry.offset == offset).then_some(StoredRecord {
                    offset,
                    fields: entry.fields,
                    entry: Some(entry.whole),
                })
            })
        } else {
            record_v2::split_record(&mut self.rest).map(|fields| StoredRecord { offset, fields, entry: None })
        };
        match record {
            Some(record) => Some(Ok(record)),
            None => {
                self.remaining = 0;
                Some(Err(format!(
                    "record at offset {offset} runs past the end of its batch, is malformed or holds another offset"
                )))
            }
        }
    }
}

impl Batch {
    /// The records of a format-2 or format-3 batch as stored, from `start` on (as in
    /// [`Batch::views_from`]) or from the first; `None` for a format-1 batch. Only lengths (and
    /// in format 3 the offset slots) are read: a walk that copies records whole need not decode
    /// their fields.
    pub fn stored_from(&self, start: Option<RecordStart>) -> Option<StoredRecords<'_>> {
        if self.header().version == BATCH_FORMAT_V1 {
            return None;
        }
        let views = match start {
            Some(start) => self.views_from(start),
            None => self.views(),
        };
        Some(StoredRecords {
            rest: views.rest,
            next_offset: views.next_offset,
            remaining: views.remaining,
            version: views.version,
        })
    }

    /// The records, borrowed from the batch's buffer. They are the records
    /// [`Batch::records`] yields, field for field.
    pub fn views(&self) -> RecordViews<'_> {
        RecordViews {
            rest: self.as_bytes().get(BATCH_HEADER_BYTES..).unwrap_or_default(),
            next_offset: self.base_offset(),
            remaining: self.header().record_count,
            position: BATCH_HEADER_BYTES,
            version: self.header().version,
        }
    }

    /// The records from `start` on: what [`Batch::views`] yields from that record, without
    /// walking the ones before it. `start` comes from a view of this batch; one whose offset
    /// or position lies outside it walks from the first record.
    pub fn views_from(&self, start: RecordStart) -> RecordViews<'_> {
        let (base, count) = (self.base_offset(), self.header().record_count);
        let index = start.offset.checked_sub(base).filter(|&i| i < u64::from(count));
        let rest =
            self.as_bytes().get(start.position as usize..).filter(|_| start.position as usize >= BATCH_HEADER_BYTES);
        match (index, rest) {
            (Some(index), Some(rest)) => RecordViews {
                rest,
                next_offset: start.offset,
                remaining: count - index as u32,
                position: start.position as usize,
                version: self.header().version,
            },
            _ => self.views(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchBuilder, HeaderRef, RecordRef};
    use bytes::Bytes;
    use proptest::prelude::*;

    /// A record to build: timestamp, key, value, headers.
    type Spec = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn batch_of(records: &[Spec]) -> Batch {
        batch_in(BatchBuilder::default(), records)
    }

    fn batch_in(mut builder: BatchBuilder, records: &[Spec]) -> Batch {
        for (timestamp, key, value, headers) in records {
            let headers: Vec<HeaderRef<'_>> = headers.iter().map(|(name, value)| HeaderRef { name, value }).collect();
            let record = RecordRef { timestamp: *timestamp, key: key.as_deref(), value, headers: &headers };
            builder.push(&record).unwrap();
        }
        let mut encoded = builder.finish().unwrap();
        Batch::from_verified_bytes(Bytes::copy_from_slice(encoded.stamp(41, 7).unwrap())).unwrap()
    }

    fn builder_of(version: u8) -> BatchBuilder {
        match version {
            1 => BatchBuilder::format_v1(),
            2 => BatchBuilder::format_v2(),
            _ => BatchBuilder::default(),
        }
    }

    /// Fields 1 to 4 of `spec` as format 2 stores them (its length prefix left out).
    fn encoded_fields((timestamp, key, value, headers): &Spec) -> Vec<u8> {
        let headers: Vec<HeaderRef<'_>> = headers.iter().map(|(name, value)| HeaderRef { name, value }).collect();
        let mut buf = Vec::new();
        record_v2::put(&mut buf, &RecordRef { timestamp: *timestamp, key: key.as_deref(), value, headers: &headers });
        let mut rest = &buf[..];
        record_v2::split_record(&mut rest).unwrap().to_vec()
    }

    proptest! {
        #[test]
        fn views_yield_what_records_yields(
            records in proptest::collection::vec(
                (any::<i64>(),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(any::<u8>(), 0..50),
                 proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..3)),
                1..20),
            version in 1..=3u8,
        ) {
            let batch = batch_in(builder_of(version), &records);
            prop_assert_eq!(batch.header().version, version);
            let owned: Vec<_> = batch.records().map(Result::unwrap).collect();
            let views: Vec<_> = batch.views().map(Result::unwrap).collect();
            prop_assert_eq!(owned.len(), views.len());
            for (record, view) in owned.iter().zip(&views) {
                prop_assert_eq!(record.offset, view.offset);
                prop_assert_eq!(record.position, view.position);
                prop_assert_eq!(record.timestamp, view.timestamp);
                prop_assert_eq!(record.key.as_deref(), view.key);
                prop_assert_eq!(&record.value[..], view.value);
                let headers: Vec<_> = record.headers().map(Result::unwrap).collect();
                let header_views: Vec<_> = view.headers().map(Result::unwrap).collect();
                prop_assert_eq!(headers.len(), header_views.len());
                for (header, header_view) in headers.iter().zip(&header_views) {
                    prop_assert_eq!(&header.name[..], header_view.name);
                    prop_assert_eq!(&header.value[..], header_view.value);
                }
            }
            // A walk resumed at any record yields the rest, exactly.
            for (k, view) in views.iter().enumerate() {
                let resumed: Vec<_> = batch.views_from(view.start()).map(Result::unwrap).collect();
                prop_assert_eq!(&resumed[..], &views[k..]);
                // And a walk of the stored records the same records' fields, unless format 1.
                let stored: Option<Vec<_>> = batch
                    .stored_from(Some(view.start()))
                    .map(|s| s.map(|r| r.map(|r| (r.offset, r.fields.to_vec()))).collect::<Result<_, _>>().unwrap());
                let expected = (version > 1).then(|| {
                    records[k..].iter().zip(&views[k..]).map(|(spec, v)| (v.offset, encoded_fields(spec))).collect()
                });
                prop_assert_eq!(stored, expected);
            }
            // In format 3 the stored records are the batch's body, slice after slice.
            if version == 3 {
                let entries: Vec<&[u8]> = batch.stored_from(None).unwrap().map(|r| r.unwrap().entry.unwrap()).collect();
                prop_assert_eq!(entries.concat(), batch.as_bytes()[BATCH_HEADER_BYTES..].to_vec());
            }
        }
    }

    #[test]
    fn format_3_records_whose_offsets_disagree_with_their_header_are_refused() {
        let batch = batch_of(&[(1, None, b"a".to_vec(), vec![]), (2, None, b"b".to_vec(), vec![])]);
        // The header's base offset is outside the checksum: one that moved still passes it.
        let mut moved = batch.as_bytes().to_vec();
        moved[0..8].copy_from_slice(&50u64.to_le_bytes());
        let moved = Batch::from_verified_bytes(Bytes::from(moved)).unwrap();
        assert!(moved.views().next().unwrap().is_err());
        assert!(moved.records().next().unwrap().is_err());
        assert!(moved.stored_from(None).unwrap().next().unwrap().is_err());
        assert!(batch.views().all(|r| r.is_ok()));
    }

    #[test]
    fn a_start_outside_the_batch_walks_from_the_first_record() {
        let batch = batch_of(&[(1, None, b"a".to_vec(), vec![]), (2, None, b"b".to_vec(), vec![])]);
        let all: Vec<_> = batch.views().map(Result::unwrap).collect();
        for start in [
            RecordStart { offset: 40, position: all[1].position },
            RecordStart { offset: 43, position: all[1].position },
            RecordStart { offset: 42, position: 3 },
            RecordStart { offset: 42, position: u32::MAX },
        ] {
            let walked: Vec<_> = batch.views_from(start).map(Result::unwrap).collect();
            assert_eq!(walked, all, "{start:?}");
        }
    }

    #[test]
    fn a_header_name_that_is_not_utf8_is_an_error_not_a_panic() {
        let record = [
            // length, timestamp, no key, value "v", one header named 0xff with an empty value
            &(8u32 + 4 + 4 + 1 + 2 + 2 + 1 + 4).to_le_bytes()[..],
            &7i64.to_le_bytes(),
            &u32::MAX.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"v",
            &1u16.to_le_bytes(),
            &1u16.to_le_bytes(),
            &[0xff],
            &0u32.to_le_bytes(),
        ]
        .concat();
        let mut views = RecordViews { rest: &record, next_offset: 0, remaining: 1, position: 0, version: 1 };
        let view = views.next().unwrap().unwrap();
        assert!(view.headers().next().unwrap().is_err());
        // The same in format 2: a header whose name is 0xff.
        let record = [10, 0x12, 1, b'v', 0x1A, 3, 0x0A, 1, 0xff, 0x20, 7];
        let mut views = RecordViews { rest: &record, next_offset: 0, remaining: 1, position: 0, version: 2 };
        let view = views.next().unwrap().unwrap();
        assert!(view.headers().next().unwrap().is_err());
    }

    #[test]
    fn a_record_cut_short_is_an_error() {
        let record = (1, Some(b"key".to_vec()), b"value".to_vec(), vec![("h".to_owned(), b"x".to_vec())]);
        for version in 1..=3 {
            let builder = builder_of(version);
            let batch = batch_in(builder, std::slice::from_ref(&record));
            let body = &batch.as_bytes()[BATCH_HEADER_BYTES..];
            for cut in 0..body.len() {
                let mut views = RecordViews { rest: &body[..cut], next_offset: 41, remaining: 1, position: 0, version };
                assert!(views.next().unwrap().is_err(), "cut at {cut}, version {version}");
            }
        }
    }
}
