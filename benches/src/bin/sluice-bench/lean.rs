//! A consumer that does not decode records (`consume --decode lean`): each message's records
//! stay undecoded entries (`repeated bytes`, wire-identical to `repeated Record`), and only the
//! last one is decoded, for its offset. On two cores a client that decodes every record is
//! what limits a read, so this shows what the broker itself can send.

use bytes::Bytes;
use prost::Message;
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::{BenchResult, Channel};

/// `SubscribeResponse` with its records left encoded.
#[derive(Clone, PartialEq, Message)]
struct LeanSubscribe {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    records: Vec<Bytes>,
}

/// `FetchResponse` with its records left encoded.
#[derive(Clone, PartialEq, Message)]
struct LeanFetch {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    records: Vec<Bytes>,
    #[prost(uint64, tag = "4")]
    next_offset: u64,
}

/// Records and their encoded bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub records: u64,
    pub bytes: u64,
}

fn read(records: &[Bytes]) -> Read {
    Read { records: records.len() as u64, bytes: records.iter().map(|r| r.len() as u64).sum() }
}

fn client(channel: Channel) -> tonic::client::Grpc<Channel> {
    tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20)
}

/// Subscribes from `start` until `end`, calling `seen` per message.
pub async fn subscribe(
    channel: Channel,
    request: pb::SubscribeRequest,
    start: u64,
    end: u64,
    mut seen: impl FnMut(Read),
) -> BenchResult {
    let mut grpc = client(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/sluice.v1.Consumer/Subscribe");
    let codec = tonic_prost::ProstCodec::<pb::SubscribeRequest, LeanSubscribe>::default();
    let mut stream = grpc.server_streaming(tonic::Request::new(request), path, codec).await?.into_inner();
    let mut next = start;
    while next < end {
        let Some(message) = stream.next().await else { break };
        let message = message?;
        if let Some(last) = message.records.last() {
            next = pb::Record::decode(last.clone())?.offset + 1;
        }
        seen(read(&message.records));
    }
    Ok(())
}

/// Fetches `request.offset..end`, calling `seen` per response.
pub async fn fetch(
    channel: Channel,
    mut request: pb::FetchRequest,
    end: u64,
    mut seen: impl FnMut(Read),
) -> BenchResult {
    let mut grpc = client(channel);
    let path = http::uri::PathAndQuery::from_static("/sluice.v1.Consumer/Fetch");
    while request.offset < end {
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<pb::FetchRequest, LeanFetch>::default();
        let response = grpc.unary(tonic::Request::new(request.clone()), path.clone(), codec).await?.into_inner();
        request.offset = response.next_offset;
        seen(read(&response.records));
    }
    Ok(())
}
