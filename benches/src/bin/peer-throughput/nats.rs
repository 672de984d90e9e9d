//! NATS JetStream: publishes acknowledged by the stream, a pull consumer to read back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use crate::{BenchResult, Load};

fn subject(stream: &str) -> String {
    format!("{stream}.records")
}

async fn producer(js: jetstream::Context, stream: String, load: Load, p: u32) -> BenchResult {
    let (value, subject) = (Bytes::from(crate::value(&load)), subject(&stream));
    let mut in_flight = VecDeque::with_capacity(load.in_flight);
    for _ in 0..load.requests_of(p) {
        if in_flight.len() >= load.in_flight.max(1) {
            let acks: Vec<jetstream::context::PublishAckFuture> = in_flight.pop_front().unwrap_or_default();
            for ack in acks {
                ack.await?;
            }
        }
        let mut acks = Vec::with_capacity(load.batch);
        for _ in 0..load.batch {
            acks.push(js.publish(subject.clone(), value.clone()).await?);
        }
        in_flight.push_back(acks);
    }
    for acks in in_flight {
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

/// Connects and makes `name` a new, empty file-backed stream (an old one is deleted first).
async fn fresh_stream(server: &str, name: &str) -> BenchResult<jetstream::Context> {
    let js = jetstream::new(async_nats::connect(server).await?);
    // The delete fails only if there is no such stream.
    let _absent_is_fine = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject(name)],
        storage: stream::StorageType::File,
        ..stream::Config::default()
    })
    .await?;
    Ok(js)
}

pub async fn produce(server: &str, name: &str, load: &Load) -> BenchResult<Duration> {
    fresh_stream(server, name).await?;
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..load.producers {
        // Each producer its own connection, as sluice-bench's have. The client holds back
        // publishes beyond its ack limit, which must cover the whole window.
        let js = jetstream::context::ContextBuilder::new()
            .max_ack_inflight(load.batch * load.in_flight.max(1) + 1)
            .build(async_nats::connect(server).await?);
        producers.spawn(producer(js, name.to_owned(), load.clone(), p));
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// Reads `total` messages from the stream's start through an ephemeral pull consumer that
/// needs no acks (like Subscribe), `batch` per pull.
pub async fn consume(server: &str, name: &str, total: u64, batch: usize) -> BenchResult<(Duration, u64)> {
    let js = jetstream::new(async_nats::connect(server).await?);
    let stream = js.get_stream(name).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..consumer::pull::Config::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(batch).messages().await?;
    let (mut received, mut bytes) = (0u64, 0u64);
    while received < total {
        let Some(message) = messages.next().await else {
            return Err(format!("the stream {name} ended after {received} of {total} messages").into());
        };
        bytes += message?.payload.len() as u64;
        received += 1;
    }
    Ok((started.elapsed(), bytes))
}

/// Publish-to-consumer latency, measured the way `sluice-bench latency` and `peer-latency-redis`
/// measure theirs: a pacing thread sends evenly spaced publishes (one record each, its send time
/// in the first 8 bytes) and never waits for their acks; an ordered push consumer on its own
/// connection stamps each message on arrival. The first `--warmup` of messages are not measured.
pub fn latency(
    runtime: &tokio::runtime::Runtime,
    server: &str,
    name: &str,
    load: &sluice_benches::LatencyLoad,
) -> BenchResult<hdrhistogram::Histogram<u64>> {
    let (warm, total) = (load.warm_records(), load.total_records());
    let (publisher, consumer) = runtime.block_on(async {
        let js = fresh_stream(server, name).await?;
        // An ordered push consumer on its own connection: the way NATS streams a subject to one
        // reader with the least delay (the server pushes each message as it is stored).
        let client = async_nats::connect(server).await?;
        let inbox = client.new_inbox();
        let consumer = jetstream::new(client)
            .get_stream(name)
            .await?
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: inbox,
                deliver_policy: consumer::DeliverPolicy::All,
                ..consumer::push::OrderedConfig::default()
            })
            .await?;
        BenchResult::Ok((js, consumer))
    })?;
    let receiving = runtime.spawn(async move {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut messages = consumer.messages().await?;
        let mut received = 0;
        while received < total {
            let Some(message) = messages.next().await else { return Err("the consumer ended early".into()) };
            let now = sluice_benches::now_nanos();
            let message = message?;
            let stamp = message.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or("short message")?;
            received += 1;
            if received > warm {
                histogram.record(now.saturating_sub(u64::from_le_bytes(stamp)).max(1))?;
            }
        }
        BenchResult::Ok(histogram)
    });
    let value = load.value();
    let subject = subject(name);
    let started = Instant::now();
    for sent in 0..total {
        let due = started + load.period() * u32::try_from(sent).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut payload = Vec::with_capacity(8 + value.len());
        payload.extend_from_slice(&sluice_benches::now_nanos().to_le_bytes());
        payload.extend_from_slice(&value);
        // The ack is not waited for: a slow server must not delay (and so hide) the sends.
        drop(runtime.block_on(publisher.publish(subject.clone(), Bytes::from(payload)))?);
    }
    runtime.block_on(receiving)?
}
