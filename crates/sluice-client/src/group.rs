//! A consumer-group member over one `Consumer/Consume` stream.

use std::time::Duration;

use crate::client::Transport;
use sluice_proto::v1 as pb;
use sluice_proto::v1::consume_request::Request;
use sluice_proto::v1::consume_response::Response;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::error::{ClientError, Result};

/// Member messages queued towards the broker before `ack` waits.
const REQUEST_BUFFER: usize = 64;

/// What the broker tells a member.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEvent {
    /// The member's partitions (and those it must give up) from this generation on.
    Assignment(pb::Assignment),
    /// Records of one partition to process and acknowledge.
    Records(pb::GroupRecords),
    /// An ack, nack or renewal the broker did not apply, and why.
    AckRefused(pb::AckRefused),
    /// Records whose lease ended (not acked within the ack timeout): they went back to the
    /// group; acking them now is refused.
    LeaseExpired(pb::LeaseExpired),
    /// Acked offsets that are now durable (with `Join.ack_receipts`).
    AckReceipt(pb::AckReceipt),
}

/// A member of a consumer group. Records it receives must be acknowledged ([`GroupMember::ack`])
/// or they are delivered again after the group's ack timeout. Heartbeat at least once per
/// [`GroupMember::session_timeout`] while idle; [`GroupMember::leave`] hands its partitions
/// to the other members at once.
#[derive(Debug)]
pub struct GroupMember {
    requests: mpsc::Sender<pb::ConsumeRequest>,
    responses: Streaming<pb::ConsumeResponse>,
    member_id: u64,
    session_timeout: Duration,
}

impl GroupMember {
    pub(crate) async fn join(mut consumer: ConsumerClient<Transport>, join: pb::Join) -> Result<GroupMember> {
        let (requests, outbound) = mpsc::channel(REQUEST_BUFFER);
        let first = pb::ConsumeRequest { request: Some(Request::Join(join)) };
        requests.send(first).await.map_err(|_| ClientError::StreamEnded("before the join was sent"))?;
        let mut responses = consumer.consume(ReceiverStream::new(outbound)).await?.into_inner();
        match responses.message().await?.and_then(|m| m.response) {
            Some(Response::Joined(joined)) => Ok(GroupMember {
                requests,
                responses,
                member_id: joined.member_id,
                session_timeout: Duration::from_millis(u64::from(joined.session_timeout_ms)),
            }),
            _ => Err(ClientError::StreamEnded("without confirming the join")),
        }
    }

    /// The id the broker gave this member.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// How long the broker waits for a silent member before giving its partitions away.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The next event; `None` when the broker ended the session.
    pub async fn next(&mut self) -> Result<Option<GroupEvent>> {
        loop {
            let Some(message) = self.responses.message().await? else { return Ok(None) };
            match message.response {
                Some(Response::Assignment(a)) => return Ok(Some(GroupEvent::Assignment(a))),
                Some(Response::Records(r)) => return Ok(Some(GroupEvent::Records(r))),
                Some(Response::AckRefused(r)) => return Ok(Some(GroupEvent::AckRefused(r))),
                Some(Response::LeaseExpired(e)) => return Ok(Some(GroupEvent::LeaseExpired(e))),
                Some(Response::AckReceipt(r)) => return Ok(Some(GroupEvent::AckReceipt(r))),
                // A second "joined" or an unknown message: nothing to act on.
                Some(Response::Joined(_)) | None => {}
            }
        }
    }

    async fn send(&self, request: Request) -> Result<()> {
        let message = pb::ConsumeRequest { request: Some(request) };
        self.requests.send(message).await.map_err(|_| ClientError::StreamEnded("while sending to it"))
    }

    /// Acknowledges inclusive offset ranges of one partition, delivered at `generation`.
    pub async fn ack(&self, topic: &str, partition: u32, generation: u64, ranges: &[(u64, u64)]) -> Result<()> {
        let ranges = ranges.iter().map(|&(first, last)| pb::OffsetRange { first, last }).collect();
        let ack = pb::Ack { topic: topic.to_owned(), partition, generation, offsets: Vec::new(), ranges };
        self.send(Request::Ack(ack)).await
    }

    /// Reports records as failed (see `Nack` in the proto for retry and dead-lettering).
    pub async fn nack(&self, nack: pb::Nack) -> Result<()> {
        self.send(Request::Nack(nack)).await
    }

    /// Tells the broker the member is alive.
    pub async fn heartbeat(&self) -> Result<()> {
        self.send(Request::Heartbeat(pb::Heartbeat {})).await
    }

    /// Leaves the group: every ack sent before is applied first, unacknowledged records go
    /// back to the group, and the call returns once the broker has closed the session.
    pub async fn leave(self) -> Result<()> {
        let GroupMember { requests, mut responses, .. } = self;
        let leave = pb::ConsumeRequest { request: Some(pb::consume_request::Request::Leave(pb::Leave {})) };
        // The stream closing says the same if the message cannot be sent.
        let _closed_anyway = requests.send(leave).await;
        drop(requests);
        while responses.message().await?.is_some() {}
        Ok(())
    }
}
