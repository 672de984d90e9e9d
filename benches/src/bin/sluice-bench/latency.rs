//! `sluice-bench latency`: records produced one at a time at a fixed rate, each stamped with
//! its send time, while a subscriber on another connection measures publish-to-delivery
//! latency.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use sluice_benches::{LatencyLoad, now_nanos};
use sluice_proto::v1 as pb;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use tokio_stream::StreamExt;

use super::{BenchResult, connect, ensure_topic};

/// Header carrying a record's send time (ns since the Unix epoch, little-endian).
const SENT_AT: &str = "sent-at-ns";
/// Header marking a warm-up record, delivered but not measured.
const WARMUP: &str = "warmup";

/// What one run of the latency bench does (the `latency` subcommand's flags).
#[derive(Debug, clap::Args)]
pub struct LatencySpec {
    #[arg(long, default_value = "bench-latency")]
    topic: String,
    #[command(flatten)]
    load: LatencyLoad,
    #[arg(long, default_value = "never")]
    fsync: String,
    /// Also write every measured sample to this file, one `sent_ns latency_ns` line each, to
    /// see when the slow ones happened.
    #[arg(long)]
    samples: Option<PathBuf>,
}

/// Measured latencies, and every sample when asked to keep them.
struct Measured {
    histogram: Histogram<u64>,
    samples: Vec<(u64, u64)>,
}

/// Reads `total` stamped records from `stream`, measuring those not marked as warm-up.
async fn receive(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    total: u64,
    keep_samples: bool,
) -> BenchResult<Measured> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut samples = Vec::with_capacity(if keep_samples { total as usize } else { 0 });
    let mut received = 0;
    while received < total {
        let Some(message) = stream.next().await else { break };
        let now = now_nanos();
        for record in message?.records {
            let sent = record
                .headers
                .iter()
                .find(|h| h.name == SENT_AT)
                .and_then(|h| <[u8; 8]>::try_from(h.value.as_ref()).ok())
                .map(u64::from_le_bytes);
            let Some(sent) = sent else { continue };
            received += 1;
            if record.headers.iter().any(|h| h.name == WARMUP) {
                continue;
            }
            let latency = now.saturating_sub(sent).max(1);
            histogram.record(latency)?;
            if keep_samples {
                samples.push((sent, latency));
            }
        }
    }
    Ok(Measured { histogram, samples })
}

/// What the pacing thread sends.
struct Pacing {
    server: String,
    topic: String,
    total: u64,
    warm: u64,
    period: Duration,
    value: Bytes,
}

/// Sends the records one by one, evenly spaced, from the calling thread, which also runs the
/// producer's connection (a current-thread runtime of its own): a record goes from the pacing
/// sleep to the socket without a hand-off to another thread.
///
/// tokio's timers tick in whole milliseconds, which would send records in bursts and measure
/// the queueing of each burst rather than the broker, so the pacing is a thread sleep. The
/// send time is taken after it, so the pacer's own timer lateness is not counted; the pacer
/// never waits for acks, so a slow broker cannot delay (and hide) the sends behind it.
fn produce_paced(pacing: Pacing) -> BenchResult {
    let Pacing { server, topic, total, warm, period, value } = pacing;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut responses = ProducerClient::new(connect(&server).await?)
            .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let drain = tokio::spawn(async move { while responses.next().await.is_some() {} });
        let started = Instant::now();
        for sent in 0..total {
            let due = started + period * u32::try_from(sent).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                // Blocks this runtime on purpose: its only other work is reading acks, which
                // wait in the socket buffer meanwhile.
                std::thread::sleep(wait);
            }
            let mut headers =
                vec![pb::Header { name: SENT_AT.into(), value: Bytes::copy_from_slice(&now_nanos().to_le_bytes()) }];
            if sent < warm {
                headers.push(pb::Header { name: WARMUP.into(), value: Bytes::new() });
            }
            let record = pb::Record { value: value.clone(), headers, ..pb::Record::default() };
            let request = pb::ProduceRequest {
                request_id: sent,
                topic: topic.clone(),
                partition: Some(0),
                records: vec![record],
                ..Default::default()
            };
            if tx.send(request).await.is_err() {
                break;
            }
            // The connection's tasks run before this one resumes: they encode the request and
            // write it to the socket now, not after the next sleep.
            tokio::task::yield_now().await;
        }
        // Every request is answered before the runtime (and the connection) is dropped.
        drop(tx);
        drain.await?;
        Ok(())
    })
}

pub async fn run(server: &str, spec: LatencySpec) -> BenchResult {
    let LatencySpec { topic, load, fsync, samples } = spec;
    let (rate, warmup) = (load.rate, load.warmup);
    let channel = connect(server).await?;
    ensure_topic(&channel, &topic, 1, &fsync).await?;
    let latest = pb::StartPosition { position: Some(pb::start_position::Position::Latest(pb::Latest {})) };
    let request = pb::SubscribeRequest { topic: topic.clone(), partition: 0, start: Some(latest), max_bytes: 0 };
    let stream = ConsumerClient::new(connect(server).await?).subscribe(request).await?.into_inner();
    let (warm, total) = (load.warm_records(), load.total_records());
    let mut receiver = tokio::spawn(receive(stream, total, samples.is_some()));
    let (value, period) = (Bytes::from(load.value()), load.period());
    let started = Instant::now();
    let steal_before = sluice_benches::steal_ms();
    let pacing = Pacing { server: server.to_owned(), topic, total, warm, period, value };
    let mut pacer = tokio::task::spawn_blocking(move || produce_paced(pacing));
    // A producer that fails ends the run instead of leaving the receiver waiting.
    let (Measured { histogram, samples: kept }, pacer_joined) = tokio::select! {
        measured = &mut receiver => (measured??, false),
        sent = &mut pacer => {
            sent??;
            (receiver.await??, true)
        }
    };
    if !pacer_joined {
        pacer.await??;
    }
    if let Some(path) = samples {
        let text: String = kept.iter().map(|(sent, latency)| format!("{sent} {latency}\n")).collect();
        std::fs::write(path, text)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let summary =
        sluice_benches::LatencySummary { histogram: &histogram, steal_ms: sluice_benches::steal_since(steal_before) };
    let warmup_s = Duration::from(warmup).as_secs_f64();
    println!(
        "{{\"bench\":\"latency\",\"fsync\":\"{fsync}\",\"rate\":{rate},\"warmup_s\":{warmup_s},\"seconds\":{secs:.2}{}}}",
        summary.json_fields()
    );
    println!(
        "publish-to-subscriber latency at {rate} records/s (fsync {fsync}, after {warmup_s} s of warm-up): {}",
        summary.text()
    );
    Ok(())
}
