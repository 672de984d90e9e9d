//! `sluice.v1.Consumer`: Fetch and Subscribe.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{Broker, StartAt, Subscription};
use sluice_proto::v1 as pb;
use sluice_proto::wire::{self, Encoded};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use sluice_core::auth::{Operation, ResourceKind};

use super::unary;
use crate::access::{Access, BoxStream};
use crate::metrics::Metrics;
use crate::quota::Direction;
use crate::status::to_status;
use crate::wire_records::StoredRecords;
use prost::Message;

/// The Consumer service.
#[derive(Debug, Clone)]
pub struct ConsumerService {
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) inflight: Arc<crate::inflight::Inflight>,
    pub(crate) access: Access,
}

fn start_at(start: Option<pb::StartPosition>) -> StartAt {
    use pb::start_position::Position;
    match start.and_then(|s| s.position) {
        Some(Position::Offset(offset)) => StartAt::Offset(offset),
        Some(Position::Earliest(_)) => StartAt::Earliest,
        Some(Position::TimestampMs(ts)) => StartAt::Timestamp(ts),
        Some(Position::Latest(_)) | None => StartAt::Latest,
    }
}

/// One Subscribe message before it is encoded: its stored records and its other fields.
#[derive(Debug)]
pub(crate) struct SubscribeMessage {
    /// Every field but `records`.
    pub meta: pb::SubscribeResponse,
    /// The records, as stored.
    pub records: StoredRecords,
}

impl SubscribeMessage {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        self.meta.encoded_len() + wire::EncodedFields::encoded_len(&self.records)
    }
}

/// The next message of a subscription; `None` ends the stream (the broker is shutting down).
async fn next_message(subscription: &mut Subscription) -> Option<Result<SubscribeMessage, Status>> {
    match subscription.next().await {
        Ok(Some(fetched)) => Some(StoredRecords::read(&fetched, 1).map(|records| {
            let meta = pb::SubscribeResponse { records: Vec::new(), end_offset: fetched.end_offset, throttle_ms: 0 };
            SubscribeMessage { meta, records }
        })),
        Ok(None) => None,
        Err(error) => Some(Err(to_status(error))),
    }
}

impl ConsumerService {
    /// Opens the subscription `request` asks for, after checking the caller's right to it, and
    /// returns its messages. The stream ends after an error, or when the caller loses the right.
    pub(crate) async fn open_subscription(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<BoxStream<SubscribeMessage>, Status> {
        let caller = self.access.caller(&request)?;
        let topic = request.get_ref().topic.clone();
        self.access.check(&caller, Operation::Consume, ResourceKind::Topic, &topic)?;
        let slot = self.access.quotas().open_stream(&caller)?;
        let r = request.into_inner();
        let subscription = self
            .broker
            .subscribe(&r.topic, r.partition, start_at(r.start), r.max_bytes as usize)
            .await
            .map_err(to_status)?;
        // The response body itself reads the subscription: HTTP/2 polls it only when the
        // client's flow-control window has room, so a slow subscriber holds at most one
        // message here, and a new record reaches the connection with no hand-off between tasks.
        // The stream ends after an error; dropping it (the client left) ends the subscription.
        let serving = (self.inflight.enter(), slot);
        let (quotas, charged) = (Arc::clone(self.access.quotas()), caller.clone());
        let stream = futures::stream::unfold(Some((subscription, serving)), move |state| {
            let (quotas, caller) = (Arc::clone(&quotas), charged.clone());
            async move {
                let (mut subscription, serving) = state?;
                let mut message = next_message(&mut subscription).await?;
                // Over its fetch quota, the principal gets each message later.
                if let Ok(response) = &mut message {
                    let delay = quotas.charge(&caller, Direction::Fetch, || response.encoded_len() as u64);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                        response.meta.throttle_ms = crate::quota::millis(delay);
                    }
                }
                let more = message.is_ok().then_some((subscription, serving));
                Some((message, more))
            }
        });
        // A revoked token or a withdrawn right ends the stream.
        let access = self.access.clone();
        let recheck = move || access.check(&caller, Operation::Consume, ResourceKind::Topic, &topic);
        Ok(self.access.guard(stream, recheck))
    }
}

#[tonic::async_trait]
impl wire::servers::consumer_server::Consumer for ConsumerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<wire::FetchResponse>, Status> {
        let allowed = self.access.caller(&request).and_then(|caller| {
            self.access.check(&caller, Operation::Consume, ResourceKind::Topic, &request.get_ref().topic)?;
            Ok(caller)
        });
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.max_wait_ms));
        let fetch = async {
            let caller = allowed?;
            let offset = match r.timestamp_ms {
                Some(ts) => self.broker.offset_for_timestamp(&r.topic, r.partition, ts).await.map_err(to_status)?,
                None => r.offset,
            };
            let fetched = self
                .broker
                .fetch(&r.topic, r.partition, offset, r.max_bytes as usize, wait)
                .await
                .map_err(to_status)?;
            let message = pb::FetchResponse {
                records: Vec::new(),
                start_offset: fetched.start_offset,
                end_offset: fetched.end_offset,
                next_offset: fetched.next_offset(),
                throttle_ms: 0,
            };
            let mut response = Encoded::new(message, StoredRecords::read(&fetched, 1)?);
            // Over its fetch quota, the principal gets the response later.
            let delay = self.access.quotas().charge(&caller, Direction::Fetch, || response.encoded_len() as u64);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                response.message.throttle_ms = crate::quota::millis(delay);
            }
            Ok(response)
        };
        unary(&self.metrics, &self.inflight, "Fetch", fetch).await
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<wire::SubscribeResponse, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Served by `subscribe_body` on the server; this is the path of the generated service
        // alone (and of tests that mount it so).
        let messages = self.open_subscription(request).await?;
        Ok(Response::new(Box::pin(messages.map(|m| m.map(|m| Encoded::new(m.meta, m.records))))))
    }

    type ConsumeStream = super::group::ConsumeStream;

    #[tracing::instrument(skip_all, fields(group = tracing::field::Empty))]
    async fn consume(
        &self,
        request: Request<tonic::Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let caller = self.access.caller(&request)?;
        super::group::consume(self, caller, request.into_inner()).await
    }
}
