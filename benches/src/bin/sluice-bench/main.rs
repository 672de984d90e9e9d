//! `sluice-bench`: a load generator over Sluice's real gRPC API.
//!
//! ```text
//! sluice-bench produce  --server 127.0.0.1:7140 --topic bench --partitions 1 --producers 1 \
//!                       --record-size 1024 --batch 1000 --total 2000000 --mode stream --fsync never
//! sluice-bench consume  --topic bench --mode subscribe
//! sluice-bench latency  --topic bench-latency --rate 5000 --duration 10s --warmup 1s --fsync never
//! sluice-bench group    --topic bench --members 2 --leave-after 500000
//! ```
//! Each run prints one JSON line (for scripts) and a readable summary; long runs show progress
//! on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

mod disk;
mod group;
mod latency;
mod lean;

// The broker uses mimalloc too; a client measuring it should not be slowed by its own allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Load generator for the Sluice broker over gRPC")]
struct Cli {
    /// Broker gRPC address.
    #[arg(long, global = true, default_value = "127.0.0.1:7140", env = "SLUICE_SERVER")]
    server: String,
    /// Bearer token for a broker with authentication on.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) of a TLS broker (verified as "localhost"); turns TLS on.
    #[arg(long, global = true, env = "SLUICE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// The broker's pid, when it runs on this machine: runs then report its CPU time per record
    /// (from /proc).
    #[arg(long, global = true, env = "SLUICE_SERVER_PID")]
    server_pid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

/// The broker's pid (`--server-pid`), for CPU accounting.
static SERVER_PID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

/// Starts counting the broker's CPU for one run.
fn server_cpu() -> sluice_benches::ServerCpu {
    sluice_benches::ServerCpu::start(SERVER_PID.get().copied().flatten())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProduceMode {
    /// One Produce call per batch, `--in-flight` calls at a time per producer.
    Unary,
    /// Batches pipelined on one ProduceStream per producer.
    Stream,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConsumeMode {
    Fetch,
    Subscribe,
}

/// How far the consumer decodes what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Decode {
    /// Every record, as a client library would.
    Full,
    /// Only the message framing (records stay encoded): what the broker can send.
    Lean,
}

/// What `produce` does.
#[derive(Debug, clap::Args)]
struct ProduceArgs {
    #[arg(long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[command(flatten)]
    shape: sluice_benches::ProduceShape,
    #[arg(long, value_enum, default_value = "stream")]
    mode: ProduceMode,
    /// fsync policy when the topic is created: always, never or interval.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Each producer is an idempotent producer (its own producer id, sequences per
    /// request) sending one request at a time (unary mode only: concurrent unary requests
    /// of one producer could arrive out of sequence order).
    #[arg(long)]
    idempotent: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce `--total` records and report throughput.
    Produce(ProduceArgs),
    /// Read a topic from the start to its current end and report throughput.
    Consume {
        #[arg(long, default_value = "bench")]
        topic: String,
        #[arg(long, value_enum, default_value = "subscribe")]
        mode: ConsumeMode,
        /// Byte budget per response.
        #[arg(long, default_value_t = 4 << 20)]
        max_bytes: u32,
        /// `lean` leaves records undecoded (`bytes` counts their encoded size then).
        #[arg(long, value_enum, default_value = "full")]
        decode: Decode,
    },
    /// Read a topic to its current end as one consumer group (Consume), acking every record in
    /// ranges; optionally time the rebalance after a member leaves.
    Group(group::GroupSpec),
    /// Produce at a fixed rate while a subscriber measures publish-to-delivery latency.
    Latency(latency::LatencySpec),
    /// A bare write+fdatasync loop on a directory's disk (no broker): fsync `always`'s ceiling.
    Disk(disk::DiskSpec),
}

/// How every connection of a run authenticates: a token and a CA for TLS.
static SECURITY: std::sync::OnceLock<(Option<String>, Option<Vec<u8>>)> = std::sync::OnceLock::new();

/// Adds the run's bearer token to every request.
#[derive(Debug, Clone)]
struct Token(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection with the run's credentials.
type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>;

async fn connect(server: &str) -> BenchResult<Channel> {
    let (token, ca) = SECURITY.get().cloned().unwrap_or_default();
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{server}"))?
        .tcp_nodelay(true)
        .initial_connection_window_size(Some(16 << 20))
        .initial_stream_window_size(Some(8 << 20))
        // Large frames: the server's 1 MiB messages arrive in ~16x fewer frames and syscalls.
        .max_frame_size((1u32 << 20) - 1);
    if let Some(ca) = ca {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        endpoint = endpoint.tls_config(tls)?;
    }
    let token = token.map(|t| format!("Bearer {t}").parse()).transpose()?;
    Ok(tonic::service::interceptor::InterceptedService::new(endpoint.connect().await?, Token(token)))
}

fn fsync_policy(text: &str) -> BenchResult<(i32, Option<u64>)> {
    Ok(match text {
        "always" => (pb::FsyncPolicy::Always as i32, None),
        "never" => (pb::FsyncPolicy::Never as i32, None),
        "interval" => (pb::FsyncPolicy::Interval as i32, Some(100)),
        other => return Err(format!("unknown fsync policy {other}").into()),
    })
}

async fn ensure_topic(channel: &Channel, topic: &str, partitions: u32, fsync: &str) -> BenchResult {
    let (fsync, fsync_interval_ms) = fsync_policy(fsync)?;
    let config = pb::TopicConfig { fsync, fsync_interval_ms, ..pb::TopicConfig::default() };
    let request = pb::CreateTopicRequest { name: topic.to_owned(), partitions, config: Some(config) };
    match AdminClient::new(channel.clone()).create_topic(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(status.into()),
    }
}

fn batch(record_size: usize, records: usize) -> Vec<pb::Record> {
    let value = Bytes::from(vec![0x5a; record_size.saturating_sub(16)]);
    (0..records)
        .map(|i| pb::Record {
            key: Some(Bytes::from(format!("key-{i:012}"))),
            value: value.clone(),
            ..pb::Record::default()
        })
        .collect()
}

/// Prints progress every second to stderr until `done` reaches `total`.
fn progress(label: &'static str, done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = done.load(Ordering::Relaxed);
            if n >= total {
                return;
            }
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("{label}: {n}/{total} records ({:.0}%), {rate:.0} records/s", n as f64 * 100.0 / total as f64);
        }
    })
}

struct ProduceSpec {
    topic: String,
    partition: u32,
    records: Vec<pb::Record>,
    requests: u64,
    in_flight: usize,
    /// Idempotent producer id, if any.
    producer_id: Option<u64>,
}

async fn produce_stream(channel: Channel, spec: ProduceSpec, done: Arc<AtomicU64>) -> BenchResult {
    let (tx, rx) = tokio::sync::mpsc::channel(spec.in_flight);
    let mut client =
        ProducerClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    let ProduceSpec { topic, partition, records, requests, in_flight, .. } = spec;
    let per_request = records.len() as u64;
    let window = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let sender_window = Arc::clone(&window);
    let sender = tokio::spawn(async move {
        for id in 0..requests {
            let Ok(permit) = sender_window.acquire().await else { return };
            permit.forget();
            let request = pb::ProduceRequest {
                request_id: id,
                topic: topic.clone(),
                partition: Some(partition),
                records: records.clone(),
                ..pb::ProduceRequest::default()
            };
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    let mut responses = client.produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut acked = 0;
    while acked < requests {
        let Some(response) = responses.next().await else { return Err("stream ended early".into()) };
        let response = response?;
        if let Some(error) = response.error {
            return Err(format!("produce failed: {}", error.message).into());
        }
        acked += 1;
        done.fetch_add(per_request, Ordering::Relaxed);
        window.add_permits(1);
    }
    sender.await?;
    Ok(())
}

async fn produce_unary(channel: Channel, spec: ProduceSpec, done: Arc<AtomicU64>) -> BenchResult {
    let client = ProducerClient::new(channel).max_encoding_message_size(64 << 20);
    let per_request = spec.records.len() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let workers_wanted = if spec.producer_id.is_some() { 1 } else { spec.in_flight };
    let producer_id = spec.producer_id;
    for _ in 0..workers_wanted {
        let (mut client, next, done) = (client.clone(), Arc::clone(&next), Arc::clone(&done));
        let (topic, records, requests, partition) =
            (spec.topic.clone(), spec.records.clone(), spec.requests, spec.partition);
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests {
                    break;
                }
                let request = pb::ProduceRequest {
                    topic: topic.clone(),
                    partition: Some(partition),
                    records: records.clone(),
                    producer_id,
                    first_sequence: producer_id.map_or(0, |_| index * per_request),
                    ..pb::ProduceRequest::default()
                };
                client.produce(request).await?;
                done.fetch_add(per_request, Ordering::Relaxed);
            }
            Ok::<(), tonic::Status>(())
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(())
}

async fn run_produce(server: &str, args: ProduceArgs) -> BenchResult {
    let ProduceArgs { topic, partitions, shape, mode, fsync, idempotent } = args;
    let sluice_benches::ProduceShape { producers, record_size, batch: batch_size, in_flight, .. } = shape;
    if idempotent && matches!(mode, ProduceMode::Stream) {
        return Err("--idempotent needs --mode unary".into());
    }
    // Ids unique per run, so a run never collides with an earlier one's sequences.
    let id_base = sluice_benches::now_nanos() & 0x0fff_ffff_ffff_0000;
    let admin_channel = connect(server).await?;
    ensure_topic(&admin_channel, &topic, partitions, &fsync).await?;
    let records = batch(record_size, batch_size);
    let done = Arc::new(AtomicU64::new(0));
    let shown = progress("produce", Arc::clone(&done), shape.records());
    let cpu = server_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let channel = connect(server).await?;
        let requests = shape.requests_of(p);
        let spec = ProduceSpec {
            topic: topic.clone(),
            partition: p % partitions,
            records: records.clone(),
            requests,
            in_flight,
            producer_id: idempotent.then_some(id_base + u64::from(p) + 1),
        };
        let done = Arc::clone(&done);
        match mode {
            ProduceMode::Stream => tasks.spawn(produce_stream(channel, spec, done)),
            ProduceMode::Unary => tasks.spawn(produce_unary(channel, spec, done)),
        };
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let secs = started.elapsed().as_secs_f64();
    shown.abort();
    let n = done.load(Ordering::Relaxed);
    let bytes = n * record_size as u64;
    println!(
        "{{\"bench\":\"produce\",\"mode\":\"{mode:?}\",\"fsync\":\"{fsync}\",\"producers\":{producers},\"partitions\":{partitions},\"record_size\":{record_size},\"batch\":{batch_size},\"in_flight\":{in_flight},\"idempotent\":{idempotent},\"records\":{n},\"seconds\":{secs:.3},\"records_per_s\":{:.0},\"mb_per_s\":{:.1}{}}}",
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        cpu.json_fields(n)
    );
    println!(
        "produce ({mode:?}, fsync {fsync}): {n} records of {record_size} B in {secs:.2} s = {:.0} records/s, {:.1} MB/s",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

async fn run_consume(server: &str, topic: String, mode: ConsumeMode, max_bytes: u32, decode: Decode) -> BenchResult {
    let channel = connect(server).await?;
    let description = AdminClient::new(channel.clone())
        .describe_topic(pb::DescribeTopicRequest { name: topic.clone() })
        .await?
        .into_inner();
    let ends: Vec<(u32, u64, u64)> =
        description.partitions.iter().map(|p| (p.partition, p.start_offset, p.end_offset)).collect();
    let total: u64 = ends.iter().map(|(_, s, e)| e - s).sum();
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let shown = progress("consume", Arc::clone(&done), total);
    let cpu = server_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (partition, start, end) in ends {
        let channel = connect(server).await?;
        let (topic, done, bytes) = (topic.clone(), Arc::clone(&done), Arc::clone(&bytes));
        tasks.spawn(async move {
            let seen = |read: lean::Read| {
                done.fetch_add(read.records, Ordering::Relaxed);
                bytes.fetch_add(read.bytes, Ordering::Relaxed);
            };
            let fetch = pb::FetchRequest {
                topic: topic.clone(),
                partition,
                offset: start,
                max_bytes,
                max_wait_ms: 0,
                timestamp_ms: None,
            };
            let position = pb::StartPosition { position: Some(pb::start_position::Position::Offset(start)) };
            let subscribe = pb::SubscribeRequest { topic: topic.clone(), partition, start: Some(position), max_bytes };
            match (decode, mode) {
                (Decode::Lean, ConsumeMode::Fetch) => return lean::fetch(channel, fetch, end, seen).await,
                (Decode::Lean, ConsumeMode::Subscribe) => {
                    return lean::subscribe(channel, subscribe, start, end, seen).await;
                }
                (Decode::Full, _) => {}
            }
            let mut consumer = ConsumerClient::new(channel).max_decoding_message_size(64 << 20);
            let mut next = start;
            match mode {
                ConsumeMode::Fetch => {
                    while next < end {
                        let request = pb::FetchRequest { offset: next, ..fetch.clone() };
                        let response = consumer.fetch(request).await?.into_inner();
                        next = response.next_offset;
                        count(&response.records, &done, &bytes);
                    }
                }
                ConsumeMode::Subscribe => {
                    let mut stream = consumer.subscribe(subscribe).await?.into_inner();
                    while next < end {
                        let Some(message) = stream.next().await else { break };
                        let message = message?;
                        next = message.records.last().map_or(next, |r| r.offset + 1);
                        count(&message.records, &done, &bytes);
                    }
                }
            }
            Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let secs = started.elapsed().as_secs_f64();
    shown.abort();
    let (n, b) = (done.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
    println!(
        "{{\"bench\":\"consume\",\"mode\":\"{mode:?}\",\"decode\":\"{decode:?}\",\"records\":{n},\"seconds\":{secs:.3},\"records_per_s\":{:.0},\"mb_per_s\":{:.1}{}}}",
        n as f64 / secs,
        b as f64 / secs / 1e6,
        cpu.json_fields(n)
    );
    println!(
        "consume ({mode:?}): {n} records in {secs:.2} s = {:.0} records/s, {:.1} MB/s",
        n as f64 / secs,
        b as f64 / secs / 1e6
    );
    Ok(())
}

fn count(records: &[pb::Record], done: &AtomicU64, bytes: &AtomicU64) {
    done.fetch_add(records.len() as u64, Ordering::Relaxed);
    bytes.fetch_add(
        records.iter().map(|r| r.value.len() as u64 + r.key.as_ref().map_or(0, |k| k.len() as u64)).sum(),
        Ordering::Relaxed,
    );
}

fn main() -> BenchResult {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Latency { .. }) {
        // One runtime thread (beside the pacing thread): at a fixed, modest rate a second worker
        // only adds wake-ups, and on a 2-core machine they take CPU from the broker being
        // measured. Measured over 4 alternating pairs: p50 114-132 us with one worker, 129-164
        // us with two, and the broker used ~20% less CPU.
        runtime.worker_threads(1);
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> BenchResult {
    let ca = cli.tls_ca.as_ref().map(std::fs::read).transpose()?;
    let _set_once = SECURITY.set((cli.token.clone(), ca));
    let _set_once = SERVER_PID.set(cli.server_pid);
    match cli.command {
        Command::Produce(args) => run_produce(&cli.server, args).await,
        Command::Consume { topic, mode, max_bytes, decode } => {
            run_consume(&cli.server, topic, mode, max_bytes, decode).await
        }
        Command::Group(spec) => group::run(&cli.server, spec).await,
        Command::Latency(spec) => latency::run(&cli.server, spec).await,
        Command::Disk(spec) => disk::run(&spec),
    }
}
