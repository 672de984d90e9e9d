//! Subscribe served without tonic's message encoder, so that stored records reach the socket
//! without being copied.
//!
//! tonic encodes each response message into its send buffer: for Subscribe that was a copy of
//! every record between the read buffer and the socket write. A batch of format 3 stores its
//! records as the very entries a `SubscribeResponse` carries, so here a message is sent as a
//! list of chunks: its other fields and gRPC framing, then large runs of stored records as
//! slices of the buffer they were read into (HTTP/2 writes them with `writev`), and whatever is
//! short or in an older format copied, as before. Every other Consumer call, and any Subscribe
//! this path does not take (a compressed request), goes to the generated service.
//!
//! On the wire nothing changes: a client sees the gRPC messages and trailers of a server
//! stream, and decodes the same `SubscribeResponse`s.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use sluice_proto::v1 as pb;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use super::consumer::{ConsumerService, SubscribeMessage};
use crate::access::BoxStream;

/// The path of the call served here.
const SUBSCRIBE_PATH: &str = "/sluice.v1.Consumer/Subscribe";
/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX_BYTES: usize = 5;

/// The Consumer service, with Subscribe served by [`serve`].
#[derive(Debug, Clone)]
pub struct ConsumerWithSubscribe<S> {
    inner: S,
    consumer: ConsumerService,
    max_request_bytes: usize,
}

impl<S> ConsumerWithSubscribe<S> {
    /// `inner` (the generated Consumer server) with its Subscribe calls served by `consumer`
    /// here; requests above `max_request_bytes` are refused as the generated server refuses them.
    pub fn new(inner: S, consumer: ConsumerService, max_request_bytes: usize) -> Self {
        ConsumerWithSubscribe { inner, consumer, max_request_bytes }
    }
}

impl<S: NamedService> NamedService for ConsumerWithSubscribe<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn std::future::Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for ConsumerWithSubscribe<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return Box::pin(self.inner.call(request));
        }
        let (consumer, limit) = (self.consumer.clone(), self.max_request_bytes);
        Box::pin(async move {
            Ok(match serve(&consumer, request, limit).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Serves one Subscribe call.
async fn serve<B>(
    consumer: &ConsumerService,
    request: http::Request<B>,
    limit: usize,
) -> Result<http::Response<tonic::body::Body>, Status>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let (parts, body) = request.into_parts();
    let message = read_request(body, limit).await?;
    let request = tonic::Request::from_parts(MetadataMap::from_headers(parts.headers), parts.extensions, message);
    let messages = consumer.open_subscription(request).await?;
    let body = http_body_util::StreamBody::new(frames(messages));
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// Reads the request's one message, uncompressed, of at most `limit` bytes.
async fn read_request<B>(body: B, limit: usize) -> Result<pb::SubscribeRequest, Status>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = http_body_util::Limited::new(body, limit.saturating_add(PREFIX_BYTES))
        .collect()
        .await
        .map_err(|e| Status::resource_exhausted(format!("reading the request: {e}")))?
        .to_bytes();
    let Some((prefix, message)) = bytes.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(Status::internal("request has no complete gRPC message"));
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented("compressed requests are not accepted"));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len != message.len() {
        return Err(Status::internal("request is not exactly one gRPC message"));
    }
    pb::SubscribeRequest::decode(message).map_err(|e| Status::internal(format!("decoding the request: {e}")))
}

/// The response body: each message as data frames, then trailers with the call's status.
fn frames(messages: BoxStream<SubscribeMessage>) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let chunks = messages.flat_map(|message| {
        let frames: Vec<Frame<Bytes>> = match message {
            Ok(message) => encode(&message).into_iter().map(Frame::data).collect(),
            Err(status) => vec![trailers(&status)],
        };
        futures::stream::iter(frames)
    });
    // A stream that ended after an error has sent its trailers already; one that ended
    // otherwise (the broker shutting down) gets OK.
    chunks
        .chain(futures::stream::once(async { Frame::trailers(ok_trailers()) }))
        .scan(false, |done, frame| {
            // Only the first trailers frame is sent; nothing follows it.
            if *done {
                return std::future::ready(None);
            }
            *done = frame.is_trailers();
            std::future::ready(Some(frame))
        })
        .map(Ok)
}

/// One message as the chunks of one gRPC message: prefix and other fields, then the records.
fn encode(message: &SubscribeMessage) -> Vec<Bytes> {
    let len = message.encoded_len();
    let mut head = BytesMut::with_capacity(PREFIX_BYTES + message.meta.encoded_len() + message.records.copied_len());
    head.put_u8(0);
    head.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Protobuf fields may come in any order: the other fields first, so the records follow.
    message.meta.encode_raw(&mut head);
    let mut chunks = Vec::with_capacity(4);
    message.records.chunks(&mut head, &mut chunks);
    chunks
}

fn ok_trailers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("grpc-status", http::HeaderValue::from_static("0"));
    headers
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from(tonic::Code::Internal as i32));
    }
    Frame::trailers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire_records::{SLICE_AT_LEAST, StoredRecords};
    use sluice_core::Fetched;
    use sluice_storage::codec::BATCH_HEADER_BYTES;
    use sluice_storage::{Batch, BatchBuilder, RecordRef};

    const PARTITION: u32 = 4;

    /// A stored batch of `count` records of `value_len` bytes from `base` on.
    fn batch(base: u64, count: u64, value_len: usize) -> Batch {
        let mut builder = BatchBuilder::default();
        for offset in base..base + count {
            let value = vec![offset as u8; value_len];
            builder
                .push(&RecordRef { timestamp: offset as i64, key: Some(b"k"), value: &value, headers: &[] })
                .unwrap();
        }
        let bytes = builder.finish().unwrap().into_stored_bytes(base, PARTITION).unwrap();
        Batch::from_verified_bytes(Bytes::from(bytes)).unwrap()
    }

    fn message(batches: &[Batch], from: u64, until: u64) -> SubscribeMessage {
        let fetched = Fetched {
            partition: PARTITION,
            batches: batches.to_vec(),
            from,
            until,
            start_offset: 0,
            end_offset: until,
            first: None,
        };
        let meta = pb::SubscribeResponse { records: Vec::new(), end_offset: until, throttle_ms: 3 };
        SubscribeMessage { meta, records: StoredRecords::read(&fetched, 1).unwrap() }
    }

    /// The gRPC message in `bytes`, decoded.
    fn decode(bytes: &[u8]) -> pb::SubscribeResponse {
        assert_eq!(bytes[0], 0, "not compressed");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - PREFIX_BYTES, "the prefix gives the message's length");
        pb::SubscribeResponse::decode(&bytes[PREFIX_BYTES..]).unwrap()
    }

    #[test]
    fn a_message_carries_its_records_and_sends_a_large_run_as_stored() {
        let batches = [batch(0, 3, 10), batch(3, 100, 1000), batch(103, 2, 10)];
        assert!(batches[1].as_bytes().len() - BATCH_HEADER_BYTES >= SLICE_AT_LEAST);
        let chunks = encode(&message(&batches, 1, 104));
        let large = &batches[1].as_bytes()[BATCH_HEADER_BYTES..];
        assert!(
            chunks.iter().any(|c| c.as_ptr() == large.as_ptr() && c.len() == large.len()),
            "the large batch's records are its read buffer, not a copy"
        );
        let decoded = decode(&chunks.concat());
        assert_eq!(decoded.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (1..104).collect::<Vec<_>>());
        for record in &decoded.records {
            assert_eq!(record.partition, PARTITION);
            assert_eq!(
                record.value,
                vec![record.offset as u8; if (3..103).contains(&record.offset) { 1000 } else { 10 }]
            );
            assert_eq!(record.timestamp_ms, Some(record.offset as i64));
        }
        assert_eq!((decoded.end_offset, decoded.throttle_ms), (104, 3));
    }

    #[test]
    fn small_runs_are_copied_into_one_chunk() {
        let batches: Vec<Batch> = (0..10).map(|i| batch(i * 5, 5, 20)).collect();
        let chunks = encode(&message(&batches, 2, 50));
        assert_eq!(chunks.len(), 1, "one chunk for the whole message");
        let decoded = decode(&chunks[0]);
        assert_eq!(decoded.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (2..50).collect::<Vec<_>>());
    }

    async fn frames_of(messages: Vec<Result<SubscribeMessage, Status>>) -> Vec<Frame<Bytes>> {
        let stream: BoxStream<SubscribeMessage> = Box::pin(futures::stream::iter(messages));
        frames(stream).map(|frame| frame.unwrap_or_else(|never| match never {})).collect().await
    }

    fn status_of(frame: &Frame<Bytes>) -> Option<&str> {
        frame.trailers_ref().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_stream_ends_with_one_trailers_frame_carrying_its_status() {
        let batches = [batch(0, 2, 10)];
        let ok = frames_of(vec![Ok(message(&batches, 0, 2)), Ok(message(&batches, 1, 2))]).await;
        assert_eq!(ok.len(), 3);
        assert!(ok[..2].iter().all(Frame::is_data));
        assert_eq!(status_of(&ok[2]), Some("0"));

        let failed = frames_of(vec![
            Ok(message(&batches, 0, 2)),
            Err(Status::not_found("no such topic")),
            Ok(message(&batches, 0, 2)),
        ])
        .await;
        assert_eq!(failed.len(), 2, "nothing after the error's trailers");
        assert!(failed[0].is_data());
        assert_eq!(status_of(&failed[1]), Some("5"));
        let message = failed[1].trailers_ref().and_then(|t| t.get("grpc-message")).and_then(|v| v.to_str().ok());
        assert_eq!(message, Some("no%20such%20topic"));
    }
}
