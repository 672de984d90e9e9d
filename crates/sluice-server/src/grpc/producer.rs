//! `sluice.v1.Producer`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::Broker;
use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{observe, unary};
use crate::convert;
use crate::metrics::Metrics;
use crate::status::to_status;

/// Responses of one ProduceStream buffered ahead of the client.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = 32;

/// The Producer service.
#[derive(Debug, Clone)]
pub struct ProducerService {
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) inflight: Arc<crate::inflight::Inflight>,
}

async fn produce(broker: Broker, request: pb::ProduceRequest) -> Result<pb::ProduceResponse, Status> {
    let request_id = request.request_id;
    let request = convert::produce_request(request)?;
    let outcome = broker.produce(request).await.map_err(to_status)?;
    Ok(convert::produce_response(request_id, outcome))
}

/// A failed request on a stream becomes a response with `error` set; the stream goes on.
fn stream_response(request_id: u64, result: Result<pb::ProduceResponse, Status>) -> pb::ProduceResponse {
    result.unwrap_or_else(|status| pb::ProduceResponse {
        request_id,
        appends: Vec::new(),
        error: Some(pb::ProduceError { code: status.code() as i32, message: status.message().to_owned() }),
    })
}

/// Appends a stream's requests one at a time, in arrival order, as Kafka does per connection:
/// two pipelined requests for one partition must not swap places, or records of one key would
/// lose their order. Pipelining still pays: the next requests are received and decoded (by the
/// connection's task) while one is appended, and appends of other streams share fsyncs.
async fn run_stream(
    broker: Broker,
    metrics: Arc<Metrics>,
    mut inbound: Streaming<pb::ProduceRequest>,
    outbound: mpsc::Sender<Result<pb::ProduceResponse, Status>>,
) {
    let shutdown = broker.shutdown_token();
    loop {
        let request = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = inbound.message() => next,
        };
        match request {
            Ok(Some(request)) => {
                let (request_id, started) = (request.request_id, Instant::now());
                let result = produce(broker.clone(), request).await;
                observe(&metrics, "ProduceStream", started, &result);
                if outbound.send(Ok(stream_response(request_id, result))).await.is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(status) => {
                let _client_gone = outbound.send(Err(status)).await;
                break;
            }
        }
    }
}

#[tonic::async_trait]
impl pb::producer_server::Producer for ProducerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = ?request.get_ref().partition))]
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        unary(&self.metrics, &self.inflight, "Produce", produce(self.broker.clone(), request.into_inner())).await
    }

    type ProduceStreamStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send + 'static>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
        let serving = self.inflight.enter();
        let stream = run_stream(self.broker.clone(), Arc::clone(&self.metrics), request.into_inner(), tx);
        tokio::spawn(async move {
            stream.await;
            drop(serving);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
