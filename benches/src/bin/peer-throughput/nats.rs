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

pub async fn produce(server: &str, name: &str, load: &Load) -> BenchResult<Duration> {
    let js = jetstream::new(async_nats::connect(server).await?);
    // A new, empty stream each run; the delete fails only if there is none.
    let _absent_is_fine = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject(name)],
        storage: stream::StorageType::File,
        ..stream::Config::default()
    })
    .await?;
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
