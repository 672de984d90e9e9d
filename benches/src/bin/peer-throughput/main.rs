//! `peer-throughput`: the produce and consume phases of `sluice-bench` run against Redis Streams
//! and NATS JetStream, so a Sluice build and its peers can be measured one after the other on
//! the same machine (benches/compare.sh does, with `-p peers`).
//!
//! ```text
//! redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no
//! peer-throughput redis produce --server 127.0.0.1:6390 --server-pid PID
//! peer-throughput redis consume --server 127.0.0.1:6390 --server-pid PID
//! nats-server -a 127.0.0.1 -p 4230 -js -sd /tmp/nats-data
//! peer-throughput nats produce --server 127.0.0.1:4230 --server-pid PID
//! ```
//! The load is `sluice-bench produce`'s: `--producers` connections, each sending `--batch`
//! records of `--record-size` bytes per request with `--in-flight` requests outstanding; then
//! one consumer reads everything back. Each phase prints one JSON line. Neither peer syncs
//! before its ack (Redis without AOF; JetStream syncs every two minutes by default), so they
//! compare with Sluice's fsync `never`.

mod nats;
mod redis;

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(
    name = "peer-throughput",
    about = "sluice-bench's produce and consume phases against Redis Streams and NATS JetStream"
)]
struct Cli {
    system: System,
    #[command(subcommand)]
    phase: Phase,
    /// The peer's address.
    #[arg(long, global = true, default_value = "127.0.0.1:6379")]
    server: String,
    /// The peer's pid, when it runs on this machine: runs then report its CPU time per record.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Stream (Redis key, JetStream stream) to write and read.
    #[arg(long, global = true, default_value = "peer-throughput")]
    stream: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum System {
    Redis,
    Nats,
}

#[derive(Debug, Subcommand)]
enum Phase {
    /// Produce `--total` records into a new stream (an old one of the same name is deleted).
    Produce(Load),
    /// Read `--total` records from the stream's start.
    Consume {
        #[arg(long, default_value_t = 1_000_000)]
        total: u64,
        /// Records per read.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Publish-to-consumer latency (NATS only; Redis has `peer-latency-redis`).
    Latency(sluice_benches::LatencyLoad),
}

/// What `produce` sends: the shape of `sluice-bench produce`.
pub use sluice_benches::ProduceShape as Load;

/// The value every record carries.
fn value(load: &Load) -> Vec<u8> {
    vec![0x5a; load.record_size]
}

fn system_name(system: System) -> &'static str {
    match system {
        System::Redis => "redis",
        System::Nats => "nats",
    }
}

/// What one phase measured, for its JSON line.
struct Run<'a> {
    phase: &'a str,
    system: System,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    /// More fields, each with its leading comma.
    extra: String,
}

fn report(run: &Run<'_>, server: &sluice_benches::ServerCpu, client_start_ms: Option<u64>) -> BenchResult {
    let Run { phase, system, records, bytes, elapsed, extra } = run;
    let (records, bytes, seconds) = (*records, *bytes, elapsed.as_secs_f64());
    // This client's own CPU: on two shared cores, a peer's client library can be what limits it.
    let client = client_start_ms
        .zip(sluice_benches::process_cpu_ms(std::process::id()))
        .map_or(String::new(), |(start, end)| format!(",\"client_cpu_ms\":{}", end.saturating_sub(start)));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{{\"bench\":\"peer-{phase}\",\"system\":\"{}\"{extra},\"records\":{records},\"seconds\":{seconds:.3},\"records_per_s\":{:.0},\"mb_per_s\":{:.1}{}{client}}}",
        system_name(*system),
        records as f64 / seconds,
        bytes as f64 / seconds / 1e6,
        server.json_fields(records),
    )?;
    Ok(())
}

fn main() -> BenchResult {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let cpu = sluice_benches::ServerCpu::start(cli.server_pid);
    let client_start_ms = sluice_benches::process_cpu_ms(std::process::id());
    match &cli.phase {
        Phase::Produce(load) => {
            let elapsed = match cli.system {
                System::Redis => redis::produce(&cli.server, &cli.stream, load)?,
                System::Nats => runtime.block_on(nats::produce(&cli.server, &cli.stream, load))?,
            };
            let records = load.records();
            let extra = format!(
                ",\"producers\":{},\"record_size\":{},\"batch\":{},\"in_flight\":{}",
                load.producers, load.record_size, load.batch, load.in_flight
            );
            let bytes = records * load.record_size as u64;
            let run = Run { phase: "produce", system: cli.system, records, bytes, elapsed, extra };
            report(&run, &cpu, client_start_ms)
        }
        &Phase::Consume { total, batch } => {
            let (elapsed, bytes) = match cli.system {
                System::Redis => redis::consume(&cli.server, &cli.stream, total, batch)?,
                System::Nats => runtime.block_on(nats::consume(&cli.server, &cli.stream, total, batch))?,
            };
            let extra = format!(",\"batch\":{batch}");
            let run = Run { phase: "consume", system: cli.system, records: total, bytes, elapsed, extra };
            report(&run, &cpu, client_start_ms)
        }
        Phase::Latency(load) => {
            let System::Nats = cli.system else { return Err("for Redis, run peer-latency-redis".into()) };
            let steal_before = sluice_benches::steal_ms();
            let histogram = nats::latency(&runtime, &cli.server, &cli.stream, load)?;
            let summary = sluice_benches::LatencySummary {
                histogram: &histogram,
                steal_ms: sluice_benches::steal_since(steal_before),
            };
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{{\"bench\":\"peer-latency\",\"system\":\"nats\",\"rate\":{}{}}}",
                load.rate,
                summary.json_fields()
            )?;
            writeln!(out, "NATS JetStream publish-to-consumer latency at {} records/s: {}", load.rate, summary.text())?;
            Ok(())
        }
    }
}
