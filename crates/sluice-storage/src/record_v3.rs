//! The record layout of batch format version 3: each record is stored as the whole entry it is
//! in a Fetch or Subscribe response (`repeated Record records = 1`), offset and partition included.
//!
//! Format 2 stored fields 1 to 4 of a `sluice.v1.Record` ([`crate::record_v2`]), and a read had
//! to write each record's entry key, its length, its offset and its partition around them, record
//! by record. Format 3 stores all of it, so the records a read returns from one batch are a single
//! run of stored bytes that the server sends as they are.
//!
//! A producer's batch is built before its offsets exist: the log assigns them when it appends.
//! Offset and partition therefore sit in fixed-width slots, as varints padded to a fixed length,
//! which the log fills in just before it writes the batch; the batch checksum is computed after
//! that, so it covers them (see [`crate::codec::EncodedBatch::stamp`]). Protobuf decoders accept
//! a varint longer than it needs to be (up to ten bytes): every byte but the last has its
//! continuation bit set, and the last holds the top bits.
//!
//! | bytes          | field                                                                 |
//! |----------------|-----------------------------------------------------------------------|
//! | 0x0A           | key of `records` (field 1, length-delimited)                          |
//! | varint n       | length of the `Record` that follows                                   |
//! | fields 1 to 4  | key, value, headers, timestamp_ms, exactly as format 2 stores them     |
//! | 0x30 + 5 bytes | field 6, partition, padded to 5 bytes                                  |
//! | 0x28 + 9 bytes | field 5, offset, padded to 9 bytes (so offsets stay below 2^63)        |

use crate::codec::RecordRef;
use crate::record_v2::{self, read_varint, varint_len};

/// The batch format version whose records are laid out so.
pub const VERSION: u8 = crate::layout::BATCH_FORMAT_VERSION;
const ENTRY_TAG: u8 = 0x0A;
const PARTITION_TAG: u8 = 0x30;
const OFFSET_TAG: u8 = 0x28;
const PARTITION_WIDTH: usize = 5;
const OFFSET_WIDTH: usize = 9;
/// Bytes after fields 1 to 4: the partition and offset fields.
pub(crate) const SUFFIX_BYTES: usize = 1 + PARTITION_WIDTH + 1 + OFFSET_WIDTH;
/// Offsets a padded slot holds: 7 bits per byte.
pub const MAX_OFFSET: u64 = (1 << (7 * OFFSET_WIDTH)) - 1;

/// Stored size of `record`.
pub(crate) fn encoded_len(record: &RecordRef<'_>) -> usize {
    let body = record_v2::fields_len(record) + SUFFIX_BYTES;
    1 + varint_len(body as u64) + body
}

/// Appends `record` to `buf`, its offset and partition slots zero.
pub(crate) fn put(buf: &mut Vec<u8>, record: &RecordRef<'_>) {
    let fields = record_v2::fields_len(record);
    buf.push(ENTRY_TAG);
    record_v2::put_varint(buf, (fields + SUFFIX_BYTES) as u64);
    record_v2::put_fields(buf, record);
    let at = buf.len();
    buf.resize(at + SUFFIX_BYTES, 0);
    let suffix = &mut buf[at..];
    suffix[0] = PARTITION_TAG;
    put_padded(&mut suffix[1..=PARTITION_WIDTH], 0);
    suffix[1 + PARTITION_WIDTH] = OFFSET_TAG;
    put_padded(&mut suffix[2 + PARTITION_WIDTH..], 0);
}

/// Writes `value` as a varint of exactly `slot.len()` bytes; `value` must fit in them.
fn put_padded(slot: &mut [u8], mut value: u64) {
    let last = slot.len() - 1;
    for byte in &mut slot[..last] {
        *byte = (value as u8 & 0x7F) | 0x80;
        value >>= 7;
    }
    slot[last] = value as u8 & 0x7F;
}

/// The offset in a padded slot.
#[inline]
fn read_offset_slot(slot: &[u8; OFFSET_WIDTH]) -> u64 {
    slot.iter().rev().fold(0, |value, &byte| (value << 7) | u64::from(byte & 0x7F))
}

/// One stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// The whole entry, from its key byte to its offset's last byte.
    pub whole: &'a [u8],
    /// Fields 1 to 4, as format 2 stores them.
    pub fields: &'a [u8],
    /// The offset in its slot.
    pub offset: u64,
}

/// Splits one stored record off the front of `rest`.
#[inline]
pub(crate) fn split_entry<'a>(rest: &mut &'a [u8]) -> Option<Entry<'a>> {
    let start = *rest;
    let (&tag, mut after) = rest.split_first()?;
    if tag != ENTRY_TAG {
        return None;
    }
    let len = usize::try_from(read_varint(&mut after)?).ok()?;
    let (body, tail) = after.split_at_checked(len)?;
    let fields_len = len.checked_sub(SUFFIX_BYTES)?;
    let (fields, suffix) = body.split_at(fields_len);
    if suffix[0] != PARTITION_TAG || suffix[1 + PARTITION_WIDTH] != OFFSET_TAG {
        return None;
    }
    let offset = read_offset_slot(suffix[2 + PARTITION_WIDTH..].try_into().ok()?);
    *rest = tail;
    Some(Entry { whole: &start[..start.len() - tail.len()], fields, offset })
}

/// Splits one record of a batch in format `version` (2 or 3) off the front of `rest`; returns
/// its fields 1 to 4.
#[inline]
pub(crate) fn split_fields<'a>(rest: &mut &'a [u8], version: u8) -> Option<&'a [u8]> {
    if version == VERSION { split_entry(rest).map(|entry| entry.fields) } else { record_v2::split_record(rest) }
}

/// [`split_fields`] for a record that must be at `offset`: a format-3 record whose slot holds
/// another offset is an error (its checksum matched, so the log that wrote it was wrong).
#[inline]
pub(crate) fn split_checked<'a>(rest: &mut &'a [u8], version: u8, offset: u64) -> Result<&'a [u8], String> {
    if version != VERSION {
        return record_v2::split_record(rest).ok_or_else(|| "record runs past the end of its batch".into());
    }
    let entry = split_entry(rest).ok_or("record runs past the end of its batch or is malformed")?;
    if entry.offset != offset {
        return Err(format!("record holds offset {} where {offset} belongs", entry.offset));
    }
    Ok(entry.fields)
}

/// Fills the offset and partition slots of the `count` records in `records` (a batch's bytes
/// after its header): offsets `base_offset..`, all in `partition`. Fails if the records are not
/// `count` well-formed format-3 records or the offsets do not fit their slots.
pub(crate) fn stamp(records: &mut [u8], count: u32, base_offset: u64, partition: u32) -> Result<(), String> {
    let last = base_offset.checked_add(u64::from(count)).filter(|&end| end <= MAX_OFFSET + 1);
    if last.is_none() {
        return Err(format!("offsets from {base_offset} exceed the largest offset a record holds ({MAX_OFFSET})"));
    }
    let mut at = 0usize;
    for i in 0..u64::from(count) {
        let mut rest = &records[at..];
        let entry = split_entry(&mut rest).ok_or_else(|| format!("record {i} of the batch is malformed"))?;
        let end = at + entry.whole.len();
        let suffix = &mut records[end - SUFFIX_BYTES..end];
        put_padded(&mut suffix[1..=PARTITION_WIDTH], u64::from(partition));
        put_padded(&mut suffix[2 + PARTITION_WIDTH..], base_offset + i);
        at = end;
    }
    if at != records.len() {
        return Err("bytes after the batch's last record".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::HeaderRef;
    use proptest::prelude::*;

    #[test]
    fn the_layout_is_the_one_documented() {
        let headers = [HeaderRef { name: "t", value: b"" }];
        let record = RecordRef { timestamp: 300, key: Some(b""), value: b"ab", headers: &headers };
        let mut buf = Vec::new();
        put(&mut buf, &record);
        let mut expected = vec![0x0A, 30, 0x0A, 0, 0x12, 2, b'a', b'b', 0x1A, 3, 0x0A, 1, b't', 0x20, 0xAC, 0x02];
        expected.extend([0x30, 0x80, 0x80, 0x80, 0x80, 0x00]);
        expected.extend([0x28, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(buf, expected);
        assert_eq!(encoded_len(&record), buf.len());
        stamp(&mut buf, 1, 300, 2).unwrap();
        assert_eq!(&buf[buf.len() - 16..buf.len() - 10], [0x30, 0x82, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(&buf[buf.len() - 10..], [0x28, 0xAC, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    }

    proptest! {
        #[test]
        fn an_offset_reads_back_from_its_slot(offset in prop_oneof![0..1u64 << 14, 0..=MAX_OFFSET]) {
            let mut slot = [0u8; OFFSET_WIDTH];
            put_padded(&mut slot, offset);
            prop_assert_eq!(read_offset_slot(&slot), offset);
        }
    }

    #[test]
    fn offsets_past_the_slot_are_refused() {
        let record = RecordRef { timestamp: 1, key: None, value: b"v", headers: &[] };
        let mut buf = Vec::new();
        put(&mut buf, &record);
        assert!(stamp(&mut buf.clone(), 1, MAX_OFFSET, 0).is_ok());
        assert!(stamp(&mut buf, 1, MAX_OFFSET + 1, 0).is_err());
        assert!(stamp(&mut buf, 2, MAX_OFFSET, 0).is_err(), "the second record's offset does not fit");
    }

    #[test]
    fn a_malformed_region_is_an_error_not_a_panic() {
        let record = RecordRef { timestamp: 1, key: Some(b"k"), value: b"v", headers: &[] };
        let mut buf = Vec::new();
        put(&mut buf, &record);
        for cut in 0..buf.len() {
            let mut short = buf[..cut].to_vec();
            assert!(stamp(&mut short, 1, 0, 0).is_err(), "cut at {cut}");
        }
        assert!(stamp(&mut buf.clone(), 2, 0, 0).is_err(), "one record short");
        let mut long = buf.clone();
        long.push(0);
        assert!(stamp(&mut long, 1, 0, 0).is_err(), "a byte left over");
    }

    proptest! {
        /// What prost decodes from stamped records is the record with its offset and partition.
        #[test]
        fn prost_reads_stamped_records_as_records(
            specs in proptest::collection::vec(
                (any::<i64>(),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(any::<u8>(), 0..300),
                 proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..3)),
                1..8),
            base in 0..=MAX_OFFSET - 8,
            partition in any::<u32>(),
        ) {
            use prost::Message;
            let mut buf = Vec::new();
            for (timestamp, key, value, headers) in &specs {
                let headers: Vec<HeaderRef<'_>> = headers.iter().map(|(name, value)| HeaderRef { name, value }).collect();
                put(&mut buf, &RecordRef { timestamp: *timestamp, key: key.as_deref(), value, headers: &headers });
            }
            stamp(&mut buf, specs.len() as u32, base, partition).unwrap();
            let decoded = sluice_proto_free::Records::decode(&buf[..]).unwrap();
            prop_assert_eq!(decoded.records.len(), specs.len());
            let mut rest = &buf[..];
            for (i, ((timestamp, key, value, headers), record)) in specs.iter().zip(&decoded.records).enumerate() {
                prop_assert_eq!(record.offset, base + i as u64);
                prop_assert_eq!(record.partition, partition);
                prop_assert_eq!(record.timestamp_ms, Some(*timestamp));
                prop_assert_eq!(&record.key, key);
                prop_assert_eq!(&record.value, value);
                let names: Vec<_> = record.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
                prop_assert_eq!(&names, headers);
                let entry = split_entry(&mut rest).unwrap();
                prop_assert_eq!(entry.offset, base + i as u64);
            }
            prop_assert!(rest.is_empty());
        }
    }

    /// The `sluice.v1` messages a client decodes, declared here (the storage crate does not
    /// depend on the proto crate): same field numbers and types.
    mod sluice_proto_free {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Records {
            #[prost(message, repeated, tag = "1")]
            pub records: Vec<Record>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Record {
            #[prost(bytes = "vec", optional, tag = "1")]
            pub key: Option<Vec<u8>>,
            #[prost(bytes = "vec", tag = "2")]
            pub value: Vec<u8>,
            #[prost(message, repeated, tag = "3")]
            pub headers: Vec<Header>,
            #[prost(int64, optional, tag = "4")]
            pub timestamp_ms: Option<i64>,
            #[prost(uint64, tag = "5")]
            pub offset: u64,
            #[prost(uint32, tag = "6")]
            pub partition: u32,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Header {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(bytes = "vec", tag = "2")]
            pub value: Vec<u8>,
        }
    }
}
