//! The record layout of batch format version 2: what a reader sends is what is stored.
//!
//! Each record is a varint length, then fields 1 to 4 of a protobuf `sluice.v1.Record` (key,
//! value, headers, timestamp_ms) exactly as prost encodes them: in field-number order, an empty
//! value and empty header fields left out, a key written whenever there is one (even empty), the
//! timestamp always. The broker answers a read with a `Record` per stored record by copying these
//! bytes and appending the two fields the log knows (5 offset, 6 partition), which prost writes
//! last, so the response is byte for byte what prost would have written, without decoding a
//! field. Format version 1 stored fixed-width little-endian fields instead (see [`crate::codec`]).
//!
//! | bytes      | field                                                         |
//! |------------|---------------------------------------------------------------|
//! | varint n   | length of what follows                                        |
//! | 0x0A k key | present iff the record has a key (k: varint length)           |
//! | 0x12 v val | present iff the value is not empty                            |
//! | 0x1A h hdr | one per header, in order: `0x0A` name and `0x12` value, each only if not empty |
//! | 0x20 ts    | timestamp, ms since the Unix epoch, as the varint of its two's complement |
//!
//! Readers accept exactly this layout: fields in this order, nothing else, nothing left over.

use crate::codec::{HeaderRef, RecordRef};

const KEY_TAG: u8 = 0x0A;
const VALUE_TAG: u8 = 0x12;
const HEADER_TAG: u8 = 0x1A;
const TIMESTAMP_TAG: u8 = 0x20;
const HEADER_NAME_TAG: u8 = 0x0A;
const HEADER_VALUE_TAG: u8 = 0x12;

#[inline]
pub(crate) fn varint_len(value: u64) -> usize {
    // 1 byte per 7 significant bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a varint from the front of `rest`, which moves past it.
#[inline]
pub(crate) fn read_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn optional_field_len(len: usize) -> usize {
    if len == 0 { 0 } else { field_len(len) }
}

fn header_len(header: &HeaderRef<'_>) -> usize {
    optional_field_len(header.name.len()) + optional_field_len(header.value.len())
}

pub(crate) fn fields_len(record: &RecordRef<'_>) -> usize {
    record.key.map_or(0, |k| field_len(k.len()))
        + optional_field_len(record.value.len())
        + record.headers.iter().map(|h| field_len(header_len(h))).sum::<usize>()
        + 1
        + varint_len(record.timestamp as u64)
}

/// Encoded size of `record`, length prefix included.
pub(crate) fn encoded_len(record: &RecordRef<'_>) -> usize {
    let fields = fields_len(record);
    varint_len(fields as u64) + fields
}

fn put_field(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    buf.push(tag);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends `record` to `buf`.
pub(crate) fn put(buf: &mut Vec<u8>, record: &RecordRef<'_>) {
    put_varint(buf, fields_len(record) as u64);
    put_fields(buf, record);
}

/// Appends fields 1 to 4 of `record` (no length prefix): [`fields_len`] bytes.
pub(crate) fn put_fields(buf: &mut Vec<u8>, record: &RecordRef<'_>) {
    if let Some(key) = record.key {
        put_field(buf, KEY_TAG, key);
    }
    if !record.value.is_empty() {
        put_field(buf, VALUE_TAG, record.value);
    }
    for header in record.headers {
        buf.push(HEADER_TAG);
        put_varint(buf, header_len(header) as u64);
        if !header.name.is_empty() {
            put_field(buf, HEADER_NAME_TAG, header.name.as_bytes());
        }
        if !header.value.is_empty() {
            put_field(buf, HEADER_VALUE_TAG, header.value);
        }
    }
    buf.push(TIMESTAMP_TAG);
    put_varint(buf, record.timestamp as u64);
}

/// The first `n` bytes of `rest`, which moves past them.
#[inline]
fn split<'a>(rest: &mut &'a [u8], n: u64) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(usize::try_from(n).ok()?)?;
    *rest = tail;
    Some(head)
}

/// A length-delimited field with tag `tag` at the front of `rest`, if there is one.
#[inline]
fn take_field<'a>(rest: &mut &'a [u8], tag: u8) -> Result<Option<&'a [u8]>, &'static str> {
    if rest.first() != Some(&tag) {
        return Ok(None);
    }
    let mut after = &rest[1..];
    let len = read_varint(&mut after).ok_or("field length truncated")?;
    let bytes = split(&mut after, len).ok_or("field runs past its record")?;
    *rest = after;
    Ok(Some(bytes))
}

/// Splits one record (length prefix included) off the front of `rest`; returns its fields.
#[inline]
pub(crate) fn split_record<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = read_varint(rest)?;
    if len > u64::from(u32::MAX) {
        return None;
    }
    split(rest, len)
}

/// One record's fields, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// The header entries, back to back (read with [`next_header`]).
    pub headers: &'a [u8],
    pub header_count: u32,
    pub timestamp: i64,
}

/// Decodes a record's fields (what [`split_record`] returned).
#[inline]
pub(crate) fn decode(mut rest: &[u8]) -> Result<Fields<'_>, &'static str> {
    let key = take_field(&mut rest, KEY_TAG)?;
    let value = take_field(&mut rest, VALUE_TAG)?.unwrap_or_default();
    let headers_start = rest;
    let mut header_count = 0u32;
    while take_field(&mut rest, HEADER_TAG)?.is_some() {
        header_count += 1;
    }
    let headers = &headers_start[..headers_start.len() - rest.len()];
    if rest.first() != Some(&TIMESTAMP_TAG) {
        return Err("record has no timestamp where one belongs");
    }
    rest = &rest[1..];
    let timestamp = read_varint(&mut rest).ok_or("record timestamp truncated")? as i64;
    if !rest.is_empty() {
        return Err("record has bytes after its timestamp");
    }
    Ok(Fields { key, value, headers, header_count, timestamp })
}

/// Reads the next header (name, value) off the front of a record's header entries.
pub(crate) fn next_header<'a>(rest: &mut &'a [u8]) -> Result<(&'a [u8], &'a [u8]), String> {
    let mut header = take_field(rest, HEADER_TAG)?.ok_or("header missing")?;
    let name = take_field(&mut header, HEADER_NAME_TAG)?.unwrap_or_default();
    let value = take_field(&mut header, HEADER_VALUE_TAG)?.unwrap_or_default();
    if !header.is_empty() {
        return Err("header has bytes after its value".into());
    }
    std::str::from_utf8(name).map_err(|e| format!("header name is not UTF-8: {e}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_lengths_match_the_bytes_written() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX, (-1i64) as u64] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            let mut rest = &buf[..];
            assert_eq!(read_varint(&mut rest), Some(value));
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn a_varint_longer_than_ten_bytes_is_refused() {
        let mut rest = &[0x80u8; 11][..];
        assert_eq!(read_varint(&mut rest), None);
    }

    #[test]
    fn the_layout_is_the_one_documented() {
        let headers = [HeaderRef { name: "t", value: b"" }];
        let record = RecordRef { timestamp: 300, key: Some(b""), value: b"ab", headers: &headers };
        let mut buf = Vec::new();
        put(&mut buf, &record);
        let expected = [14, 0x0A, 0, 0x12, 2, b'a', b'b', 0x1A, 3, 0x0A, 1, b't', 0x20, 0xAC, 0x02];
        assert_eq!(buf, expected);
        assert_eq!(encoded_len(&record), buf.len());
    }

    #[test]
    fn fields_out_of_order_or_left_over_are_refused() {
        for body in [
            &[0x12, 1, b'v', 0x0A, 0, 0x20, 1][..],
            &[0x20, 1, 0x12, 1, b'v'],
            &[0x12, 1, b'v'],
            &[0x20, 1, 0x28, 1],
            &[0x20],
            &[0x0A, 5, b'k'],
        ] {
            assert!(decode(body).is_err(), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn records_decode_to_what_was_encoded(
            timestamp in any::<i64>(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            headers in proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..4),
        ) {
            let header_refs: Vec<HeaderRef<'_>> = headers.iter().map(|(n, v)| HeaderRef { name: n, value: v }).collect();
            let record = RecordRef { timestamp, key: key.as_deref(), value: &value, headers: &header_refs };
            let mut buf = Vec::new();
            put(&mut buf, &record);
            prop_assert_eq!(buf.len(), encoded_len(&record));
            let mut rest = &buf[..];
            let fields = decode(split_record(&mut rest).unwrap()).unwrap();
            prop_assert!(rest.is_empty());
            prop_assert_eq!(fields.key, key.as_deref());
            prop_assert_eq!(fields.value, &value[..]);
            prop_assert_eq!(fields.timestamp, timestamp);
            prop_assert_eq!(fields.header_count as usize, headers.len());
            let mut entries = fields.headers;
            for (name, value) in &headers {
                let (n, v) = next_header(&mut entries).unwrap();
                prop_assert_eq!(n, name.as_bytes());
                prop_assert_eq!(v, &value[..]);
            }
            prop_assert!(entries.is_empty());
        }
    }
}
