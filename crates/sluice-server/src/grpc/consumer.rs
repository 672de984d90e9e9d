//! `sluice.v1.Consumer`: Fetch and Subscribe.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{Broker, StartAt, Subscription};
use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::unary;
use crate::convert;
use crate::metrics::Metrics;
use crate::status::to_status;

/// Messages a subscription may have encoded ahead of the client; with HTTP/2 flow control this
/// bounds what a slow subscriber can hold on the broker.
pub const SUBSCRIBE_BUFFER: usize = 2;

/// The Consumer service.
#[derive(Debug, Clone)]
pub struct ConsumerService {
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) inflight: Arc<crate::inflight::Inflight>,
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

async fn follow(mut subscription: Subscription, outbound: mpsc::Sender<Result<pb::SubscribeResponse, Status>>) {
    loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            () = outbound.closed() => return,
        };
        let message = match next {
            Ok(Some(fetched)) => convert::records(&fetched)
                .map(|records| pb::SubscribeResponse { records, end_offset: fetched.end_offset }),
            Ok(None) => return,
            Err(error) => Err(to_status(error)),
        };
        let failed = message.is_err();
        if outbound.send(message).await.is_err() || failed {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::consumer_server::Consumer for ConsumerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.max_wait_ms));
        let fetch = async {
            let offset = match r.timestamp_ms {
                Some(ts) => self.broker.offset_for_timestamp(&r.topic, r.partition, ts).await.map_err(to_status)?,
                None => r.offset,
            };
            let fetched = self
                .broker
                .fetch(&r.topic, r.partition, offset, r.max_bytes as usize, wait)
                .await
                .map_err(to_status)?;
            Ok(pb::FetchResponse {
                records: convert::records(&fetched)?,
                start_offset: fetched.start_offset,
                end_offset: fetched.end_offset,
                next_offset: fetched.next_offset(),
            })
        };
        unary(&self.metrics, &self.inflight, "Fetch", fetch).await
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let subscription = self
            .broker
            .subscribe(&r.topic, r.partition, start_at(r.start), r.max_bytes as usize)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER);
        let serving = self.inflight.enter();
        tokio::spawn(async move {
            follow(subscription, tx).await;
            drop(serving);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ConsumeStream = super::group::ConsumeStream;

    #[tracing::instrument(skip_all, fields(group = tracing::field::Empty))]
    async fn consume(
        &self,
        request: Request<tonic::Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        super::group::consume(self, request.into_inner()).await
    }
}
