//! Produce requests as raw bytes, the way any client library (or a broken one) may send them:
//! the broker decodes them in place (sluice_proto::wire), so what prost would refuse must be
//! refused with a status, what prost would accept must be stored as prost would read it, and
//! nothing may be half written.

mod common;

use bytes::{BufMut, Bytes};
use common::*;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use sluice_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// Sends request bodies as given; decodes responses as prost messages.
struct RawCodec;

struct RawEncoder;

struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = pb::ProduceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::ProduceResponse>, Status> {
        pb::ProduceResponse::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = pb::ProduceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

async fn produce_raw(server: &TestServer, body: Vec<u8>) -> Result<pb::ProduceResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sluice.v1.Producer/Produce");
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec).await.map(tonic::Response::into_inner)
}

fn field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn request_with_records(records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    field(2, b"raw", &mut body);
    for record in records {
        field(4, record, &mut body);
    }
    body
}

async fn stored(server: &TestServer) -> Vec<pb::Record> {
    let request = pb::FetchRequest {
        topic: "raw".into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        timestamp_ms: None,
    };
    server.consumer().await.fetch(request).await.unwrap().into_inner().records
}

#[tokio::test]
async fn a_malformed_produce_request_is_refused_whole_and_a_good_one_still_lands() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "raw", 1, None).await;

    let mut good = Vec::new();
    field(2, b"fine", &mut good);
    let mut bad_header = Vec::new();
    field(1, &[0xff, 0xfe], &mut bad_header);
    let mut bad = Vec::new();
    field(2, b"refused", &mut bad);
    field(3, &bad_header, &mut bad);
    let mut truncated = request_with_records(&[good.clone()]);
    truncated.pop();
    for (what, body) in [
        ("a header name that is not UTF-8", request_with_records(&[good.clone(), bad])),
        ("a record cut short", truncated),
        ("a length past the end", vec![0x22, 0x7f, 0x01]),
    ] {
        let refused = produce_raw(&server, body).await.expect_err(what);
        // What gRPC servers answer to a request they cannot decode, with prost's reason.
        assert_eq!(refused.code(), Code::Internal, "{what}: {refused:?}");
        assert!(refused.message().starts_with("failed to decode Protobuf message: "), "{what}: {refused:?}");
    }
    assert!(stored(&server).await.is_empty(), "nothing of a refused request is written");

    // Fields a newer client may send are skipped; repeated scalars take the last value, as in
    // any protobuf decoder.
    let mut record = Vec::new();
    field(2, b"first", &mut record);
    field(99, b"from a newer client", &mut record);
    field(2, b"last", &mut record);
    let response = produce_raw(&server, request_with_records(&[record, good])).await?;
    assert_eq!(response.appends.first().map(|a| a.record_count), Some(2));
    let values: Vec<Bytes> = stored(&server).await.into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![Bytes::from_static(b"last"), Bytes::from_static(b"fine")]);
    server.stop().await;
    Ok(())
}
