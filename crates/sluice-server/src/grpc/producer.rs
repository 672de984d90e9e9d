//! `sluice.v1.Producer`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::Broker;
use sluice_core::auth::{Operation, ResourceKind};
use sluice_proto::v1 as pb;
use sluice_proto::wire;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::access::{Access, Caller};
use crate::quota::Direction;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{observe, unary};
use crate::convert;
use crate::metrics::Metrics;
use crate::status::to_status;

/// Requests of one ProduceStream waiting to be durable at once; bounds the memory a stream can
/// hold.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = sluice_core::producers::MIN_WINDOW;

/// The Producer service.
#[derive(Debug, Clone)]
pub struct ProducerService {
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) inflight: Arc<crate::inflight::Inflight>,
    pub(crate) access: Access,
}

async fn produce(broker: Broker, request: wire::ProduceRequest) -> Result<pb::ProduceResponse, Status> {
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
        throttle_ms: 0,
    })
}

/// Runs a ProduceStream. Requests are queued on their partitions in the order they arrive, so
/// two pipelined requests for one partition cannot swap places (records of one key keep their
/// order); only the waits for durability overlap. Idempotent requests are appended one at a
/// time, so their sequence numbers are checked in the order the producer sent them.
async fn run_stream(
    broker: Broker,
    metrics: Arc<Metrics>,
    (access, caller): (Access, Caller),
    mut inbound: Streaming<wire::ProduceRequest>,
    outbound: mpsc::Sender<Result<pb::ProduceResponse, Status>>,
) {
    let shutdown = broker.shutdown_token();
    let mut in_flight: JoinSet<(u64, Instant, Result<pb::ProduceResponse, Status>)> = JoinSet::new();
    let send = |(request_id, started, result): (u64, Instant, Result<pb::ProduceResponse, Status>)| {
        observe(&metrics, "ProduceStream", started, &result);
        stream_response(request_id, result)
    };
    let mut cut = false;
    loop {
        let request = tokio::select! {
            biased;
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok(done) = done else { continue };
                if outbound.send(Ok(send(done))).await.is_err() {
                    // Queued appends still complete (they are in line on their partitions).
                    in_flight.detach_all();
                    return;
                }
                continue;
            }
            () = shutdown.cancelled() => {
                cut = true;
                break;
            }
            next = inbound.message(), if in_flight.len() < MAX_IN_FLIGHT_PER_STREAM => next,
        };
        match request {
            Ok(Some(request)) => {
                let (request_id, started) = (request.request_id, Instant::now());
                if let Err(refused) = access.check(&caller, Operation::Produce, ResourceKind::Topic, &request.topic) {
                    if outbound.send(Ok(send((request_id, started, Err(refused))))).await.is_err() {
                        in_flight.detach_all();
                        return;
                    }
                    continue;
                }
                // Over its produce quota, the principal's next request waits (the stream is not
                // read meanwhile), and its response says how long.
                let delay = access.quotas().charge(&caller, Direction::Produce, || request.encoded_len() as u64);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let throttle_ms = crate::quota::millis(delay);
                let throttled = move |mut response: pb::ProduceResponse| {
                    response.throttle_ms = throttle_ms;
                    response
                };
                if request.producer_id.is_some() {
                    let result = produce(broker.clone(), request).await.map(throttled);
                    if outbound.send(Ok(send((request_id, started, result)))).await.is_err() {
                        in_flight.detach_all();
                        return;
                    }
                    continue;
                }
                match queue(&broker, request) {
                    // Alone in flight and written on this task: finishing it here saves a task
                    // spawn and a wake-up per request, which is most of a lone record's latency.
                    Ok(queued) if in_flight.is_empty() && queued.is_inline() => {
                        let result = queued.finish().await.map_err(to_status);
                        let response = result.map(|outcome| throttled(convert::produce_response(request_id, outcome)));
                        if outbound.send(Ok(send((request_id, started, response)))).await.is_err() {
                            return;
                        }
                    }
                    Ok(queued) => {
                        in_flight.spawn(async move {
                            let result = queued.finish().await.map_err(to_status);
                            let response =
                                result.map(|outcome| throttled(convert::produce_response(request_id, outcome)));
                            (request_id, started, response)
                        });
                    }
                    Err(status) => {
                        if outbound.send(Ok(send((request_id, started, Err(status))))).await.is_err() {
                            in_flight.detach_all();
                            return;
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(status) => {
                let _client_gone = outbound.send(Err(status)).await;
                break;
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let Ok(done) = done else { continue };
        if outbound.send(Ok(send(done))).await.is_err() {
            in_flight.detach_all();
            return;
        }
    }
    // Every request read was answered; the client may have sent more that were not read. An OK
    // end would tell it they were all answered.
    if cut {
        let _client_gone = outbound.send(Err(to_status(sluice_core::Error::ShuttingDown))).await;
        // Requests still arriving are read and dropped for a moment: resetting the stream
        // while the client sends could reach it before the final status does.
        let deadline = tokio::time::Instant::now() + CUT_DRAIN;
        while let Ok(Ok(Some(_unanswered))) = tokio::time::timeout_at(deadline, inbound.message()).await {}
    }
}

/// How long a stream cut by shutdown goes on reading (and dropping) what its client sends.
const CUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates, routes, encodes and queues a request without a producer id, on the caller's
/// task: the order of these calls is the order of the records in the log.
fn queue(broker: &Broker, request: wire::ProduceRequest) -> Result<sluice_core::produce::QueuedProduce, Status> {
    let request = convert::produce_request(request)?;
    broker.produce_enqueue(request).map_err(to_status)
}

#[tonic::async_trait]
impl wire::servers::producer_server::Producer for ProducerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = ?request.get_ref().partition))]
    async fn produce(&self, request: Request<wire::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let allowed = self.access.caller(&request).and_then(|caller| {
            self.access.check(&caller, Operation::Produce, ResourceKind::Topic, &request.get_ref().topic)?;
            Ok(caller)
        });
        // Sized only when quotas can apply (authenticated callers).
        let bytes = if self.access.enabled() { request.get_ref().encoded_len() as u64 } else { 0 };
        let produce = async {
            let caller = allowed?;
            let mut response = produce(self.broker.clone(), request.into_inner()).await?;
            // Over its produce quota, the principal gets the response later.
            let delay = self.access.quotas().charge(&caller, Direction::Produce, || bytes);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                response.throttle_ms = crate::quota::millis(delay);
            }
            Ok(response)
        };
        unary(&self.metrics, &self.inflight, "Produce", produce).await
    }

    type ProduceStreamStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send + 'static>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<wire::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = self.access.caller(&request)?;
        let slot = self.access.quotas().open_stream(&caller)?;
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
        let access = (self.access.clone(), caller.clone());
        tokio::spawn(run_stream(self.broker.clone(), Arc::clone(&self.metrics), access, request.into_inner(), tx));
        let responses = self.inflight.enter().hold_during(ReceiverStream::new(rx));
        // The stream holds its slot of the principal's stream limit until it ends.
        let responses = futures::StreamExt::map(responses, move |item| {
            let _slot = &slot;
            item
        });
        // Each request is checked on its own; a revoked token ends the stream.
        let access = self.access.clone();
        Ok(Response::new(self.access.guard(responses, move || access.check_token(&caller))))
    }
}
