use proptest::prelude::*;

use super::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn header() -> impl Strategy<Value = pb::Header> {
    ("[a-zé-]{0,12}", bytes(16)).prop_map(|(name, value)| pb::Header { name, value })
}

fn record() -> impl Strategy<Value = pb::Record> {
    (
        proptest::option::of(bytes(24)),
        bytes(64),
        proptest::collection::vec(header(), 0..4),
        proptest::option::of(any::<i64>()),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(key, value, headers, timestamp_ms, offset, partition)| pb::Record {
            key,
            value,
            headers,
            timestamp_ms,
            offset,
            partition,
        })
}

fn request() -> impl Strategy<Value = pb::ProduceRequest> {
    (
        any::<u64>(),
        "[a-z.]{0,16}",
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(record(), 0..6),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(|(request_id, topic, partition, records, producer_id, first_sequence)| pb::ProduceRequest {
            request_id,
            topic,
            partition,
            records,
            producer_id,
            first_sequence,
        })
}

/// What the server takes from a request, offsets and partitions of records aside (ignored on
/// produce).
fn expected(mut message: pb::ProduceRequest) -> pb::ProduceRequest {
    for record in &mut message.records {
        record.offset = 0;
        record.partition = 0;
    }
    message
}

proptest! {
    #[test]
    fn decodes_what_prost_decodes_to_the_same_values(message in request()) {
        let encoded = message.encode_to_vec();
        let wire = ProduceRequest::decode(Bytes::from(encoded.clone())).unwrap();
        prop_assert_eq!(wire.to_message(), expected(message.clone()));
        for (view, record) in wire.records.iter().zip(&message.records) {
            let header_bytes: usize = record.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
            prop_assert_eq!(view.header_count, record.headers.len());
            prop_assert_eq!(view.header_bytes, header_bytes as u64);
        }
        // Re-encoded, it is the same request.
        prop_assert_eq!(wire.encoded_len(), wire.encode_to_vec().len());
        prop_assert_eq!(expected(pb::ProduceRequest::decode(&wire.encode_to_vec()[..]).unwrap()), expected(message));
    }

    #[test]
    fn accepts_and_refuses_what_prost_does(message in request(), cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut encoded = message.encode_to_vec();
        for (at, value) in flips {
            if !encoded.is_empty() {
                let at = at.index(encoded.len());
                encoded[at] = value;
            }
        }
        if !encoded.is_empty() && cut.index(4) == 0 {
            encoded.truncate(cut.index(encoded.len()));
        }
        let by_prost = pb::ProduceRequest::decode(&encoded[..]);
        let by_wire = ProduceRequest::decode(Bytes::from(encoded));
        prop_assert_eq!(by_prost.is_ok(), by_wire.is_ok(), "prost: {:?}, wire: {:?}", by_prost, by_wire);
        if let (Ok(prost), Ok(wire)) = (by_prost, by_wire) {
            prop_assert_eq!(wire.to_message(), expected(prost));
        }
    }
}

#[test]
fn a_header_name_that_is_not_utf8_is_refused() {
    let mut header = Vec::new();
    encode_key(1, WireType::LengthDelimited, &mut header);
    encode_varint(2, &mut header);
    header.extend_from_slice(&[0xff, 0xfe]);
    let mut record = Vec::new();
    encode_key(3, WireType::LengthDelimited, &mut record);
    encode_varint(header.len() as u64, &mut record);
    record.extend_from_slice(&header);
    let mut request = Vec::new();
    encode_key(4, WireType::LengthDelimited, &mut request);
    encode_varint(record.len() as u64, &mut request);
    request.extend_from_slice(&record);
    assert!(pb::ProduceRequest::decode(&request[..]).is_err());
    assert!(ProduceRequest::decode(Bytes::from(request)).is_err());
}
