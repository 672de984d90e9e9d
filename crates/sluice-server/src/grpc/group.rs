//! `sluice.v1.Consumer/Consume`: a consumer-group member's session over one bidirectional
//! stream. One task reads the member's messages (acks, renewals, heartbeats), another pushes
//! the session's events; either ending makes the member leave.

use std::pin::Pin;
use std::time::{Duration, Instant};

use sluice_core::Error;
use sluice_core::group::{GroupEvent, GroupSession, MemberHandle, SessionEnd};
use sluice_proto::v1 as pb;
use sluice_proto::wire::{self, Encoded};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status, Streaming};

use super::consumer::ConsumerService;
use super::observe;
use crate::convert_group;
use crate::inflight::InflightGuard;
use crate::status::to_status;
use crate::wire_records::DeliveredRecords;

/// Messages encoded ahead of the member; with HTTP/2 flow control and the member's in-flight
/// limit this bounds what one member can hold on the broker.
pub const CONSUME_BUFFER: usize = 4;

/// The response stream of Consume.
pub type ConsumeStream = Pin<Box<dyn Stream<Item = Result<wire::ConsumeResponse, Status>> + Send + 'static>>;

type Outbound = mpsc::Sender<Result<wire::ConsumeResponse, Status>>;

fn invalid(message: &str) -> Status {
    to_status(Error::InvalidArgument(message.to_owned()))
}

fn message(response: pb::consume_response::Response) -> Result<wire::ConsumeResponse, Status> {
    Ok(pb::ConsumeResponse { response: Some(response) }.into())
}

/// Waits for the join, joins, and starts the session's two tasks.
pub(crate) async fn consume(
    service: &ConsumerService,
    caller: crate::access::Caller,
    mut inbound: Streaming<pb::ConsumeRequest>,
) -> Result<Response<ConsumeStream>, Status> {
    let started = Instant::now();
    let first = inbound.message().await?.ok_or_else(|| invalid("the stream ended before its join"))?;
    let Some(pb::consume_request::Request::Join(join)) = first.request else {
        return Err(invalid("the first message on Consume must be a join"));
    };
    let spec = convert_group::join(join)?;
    // A member needs consume on the group and on every topic it subscribes to, at the join and
    // for as long as the stream lasts.
    let (group, topics) = (spec.group.clone(), spec.topics.clone());
    let caller_for_slot = caller.clone();
    let access = service.access.clone();
    let recheck = move || {
        use sluice_core::auth::{Operation, ResourceKind};
        access.check(&caller, Operation::Consume, ResourceKind::Group, &group)?;
        topics.iter().try_for_each(|topic| access.check(&caller, Operation::Consume, ResourceKind::Topic, topic))
    };
    let slot = recheck().and_then(|()| service.access.quotas().open_stream(&caller_for_slot));
    let slot = match slot {
        Ok(slot) => slot,
        Err(refused) => {
            observe(&service.metrics, "Consume", started, &Err::<(), _>(refused.clone()));
            return Err(refused);
        }
    };
    let joined = service.broker.join_group(spec).await.map_err(to_status);
    observe(&service.metrics, "Consume", started, &joined);
    let session = joined?;
    let handle = session.handle();
    tracing::Span::current().record("group", handle.group_id());
    let (tx, rx) = mpsc::channel(CONSUME_BUFFER);
    let session_timeout_ms = handle.session_timeout().as_millis() as u32;
    let welcome = pb::Joined { member_id: handle.member_id().0, session_timeout_ms };
    if tx.send(message(pb::consume_response::Response::Joined(welcome))).await.is_err() {
        handle.leave(SessionEnd::Left);
        return Err(Status::cancelled("the member went away while joining"));
    }
    let shutdown = service.broker.shutdown_token();
    // Both tasks count as in flight: a graceful shutdown waits for the reader to apply the
    // acks that reached the broker before it, and for the pusher to say why the stream ends.
    tokio::spawn(read_member(handle, inbound, tx.clone(), shutdown.clone(), service.inflight.enter()));
    let quota = (std::sync::Arc::clone(service.access.quotas()), caller_for_slot.clone());
    tokio::spawn(push_events(session, tx, shutdown, service.inflight.enter(), quota));
    // The response body holds a guard too, so the final status reaches the connection before
    // a graceful shutdown stops serving.
    let events = service.inflight.enter().hold_during(ReceiverStream::new(rx));
    // The stream holds its slot of the principal's stream limit until it ends.
    let events = tokio_stream::StreamExt::map(events, move |item| {
        let _slot = &slot;
        item
    });
    Ok(Response::new(service.access.guard(events, recheck)))
}

/// After the broker's shutdown signal, the reader goes on applying what the member sent
/// before it (acks on their way) until nothing arrives for this long...
const SHUTDOWN_DRAIN_QUIET: Duration = Duration::from_millis(50);
/// ...or for at most this long in all.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

async fn read_member(
    handle: MemberHandle,
    mut inbound: Streaming<pb::ConsumeRequest>,
    outbound: Outbound,
    shutdown: CancellationToken,
    serving: InflightGuard,
) {
    let reason = loop {
        let next = tokio::select! {
            next = inbound.message() => next,
            () = shutdown.cancelled() => break SessionEnd::Shutdown,
        };
        let Ok(Some(request)) = next else { break SessionEnd::Left };
        if !apply(&handle, request, &outbound).await {
            break SessionEnd::Left;
        }
    };
    if reason == SessionEnd::Shutdown {
        // Acks sent before the signal are applied, so the shutdown flush keeps them and a
        // graceful restart redelivers none of those records.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN_MAX;
        while tokio::time::Instant::now() < deadline {
            let Ok(Ok(Some(request))) = tokio::time::timeout(SHUTDOWN_DRAIN_QUIET, inbound.message()).await else {
                break;
            };
            if !apply(&handle, request, &outbound).await {
                break;
            }
        }
    }
    handle.leave(reason);
    drop(serving);
}

/// Applies one member message; false ends the session (a leave, or a protocol error).
async fn apply(handle: &MemberHandle, request: pb::ConsumeRequest, outbound: &Outbound) -> bool {
    use pb::consume_request::Request;
    let (tp, outcome) = match request.request {
        Some(Request::Ack(ack)) => {
            let tp = convert_group::topic_partition(&ack.topic, ack.partition);
            let outcome = handle.ack(&tp, ack.generation, &convert_group::ranges(&ack.offsets, &ack.ranges));
            (tp, outcome)
        }
        Some(Request::Renew(renew)) => {
            let tp = convert_group::topic_partition(&renew.topic, renew.partition);
            let outcome = handle.renew(&tp, renew.generation, &convert_group::ranges(&renew.offsets, &renew.ranges));
            (tp, outcome)
        }
        Some(Request::Nack(nack)) => {
            let tp = convert_group::topic_partition(&nack.topic, nack.partition);
            let ranges = convert_group::ranges(&nack.offsets, &nack.ranges);
            let outcome = handle.nack(&tp, nack.generation, &ranges, &convert_group::nack(&nack));
            (tp, outcome)
        }
        Some(Request::Heartbeat(_)) | None => {
            handle.heartbeat();
            return true;
        }
        Some(Request::Leave(_)) => return false,
        Some(Request::Join(_)) => {
            let _gone =
                outbound.send(Err(invalid("this stream has already joined; open a new stream to join again"))).await;
            return false;
        }
    };
    for refused in convert_group::refusals(&tp, &outcome) {
        if outbound.send(message(pb::consume_response::Response::AckRefused(refused))).await.is_err() {
            return false;
        }
    }
    true
}

async fn push_events(
    mut session: GroupSession,
    outbound: Outbound,
    shutdown: CancellationToken,
    serving: InflightGuard,
    (quotas, caller): (std::sync::Arc<crate::quota::Quotas>, crate::access::Caller),
) {
    loop {
        let event = tokio::select! {
            event = session.next_event() => event,
            () = outbound.closed() => break,
        };
        let response = match event {
            Ok(GroupEvent::Assignment(view)) => {
                message(pb::consume_response::Response::Assignment(convert_group::assignment(&view)))
            }
            Ok(GroupEvent::Records(delivery)) => match DeliveredRecords::new(&delivery) {
                Ok(mut records) => {
                    // Over its fetch quota, the member gets its records later.
                    let delay = quotas.charge(&caller, crate::quota::Direction::Fetch, || {
                        sluice_proto::wire::EncodedFields::encoded_len(&records) as u64
                    });
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                        records.meta.throttle_ms = crate::quota::millis(delay);
                    }
                    Ok(Encoded::new(pb::ConsumeResponse { response: None }, records))
                }
                Err(status) => Err(status),
            },
            Ok(GroupEvent::AckReceipt(committed)) => {
                let committed = committed
                    .into_iter()
                    .map(|(tp, committed_offset)| pb::CommittedOffset {
                        topic: tp.topic.to_string(),
                        partition: tp.partition,
                        committed_offset,
                    })
                    .collect();
                message(pb::consume_response::Response::AckReceipt(pb::AckReceipt { committed }))
            }
            Ok(GroupEvent::LeaseEnded(ended)) => {
                message(pb::consume_response::Response::LeaseExpired(convert_group::lease_end(ended)))
            }
            Err(Error::SessionEnded(SessionEnd::Left)) if !shutdown.is_cancelled() => break,
            // However the session learnt of it, a shutdown ends the stream with UNAVAILABLE.
            Err(Error::SessionEnded(_)) if shutdown.is_cancelled() => Err(to_status(Error::ShuttingDown)),
            Err(error) => Err(to_status(error)),
        };
        let failed = response.is_err();
        if outbound.send(response).await.is_err() || failed {
            break;
        }
    }
    // At shutdown the reader leaves, once it has applied the member's last acks.
    if !shutdown.is_cancelled() {
        session.handle().leave(SessionEnd::Left);
    }
    drop(serving);
}
