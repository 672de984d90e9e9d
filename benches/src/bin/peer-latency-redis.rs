//! `peer-latency-redis`: the publish-to-consumer latency of Redis Streams, measured the way
//! `sluice-bench latency` measures Sluice, so both can be run alternately on one machine and
//! compared in the same conditions.
//!
//! ```text
//! redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes
//! peer-latency-redis --server 127.0.0.1:6390 --rate 5000 --duration 10s
//! ```
//! Like `sluice-bench latency`: a pacing thread sends evenly spaced `XADD`s of one record each,
//! stamped with the send time taken after its sleep, and never waits for replies (another
//! thread drains them); a consumer on its own connection blocks in `XREAD` and stamps each
//! entry on arrival. The first `--warmup` of entries are delivered but not measured. Redis's
//! defaults match Sluice's fsync `never`: nothing is synced before the reply.
//!
//! The client speaks RESP over a plain socket (with TCP_NODELAY), with no client library, so
//! it adds as little as it can to what it measures.

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use sluice_benches::resp::{command, connect, entries, read_reply};
use sluice_benches::{LatencyLoad, now_nanos};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(
    name = "peer-latency-redis",
    about = "Redis Streams publish-to-consumer latency, measured like sluice-bench latency"
)]
struct Cli {
    /// Redis address.
    #[arg(long, default_value = "127.0.0.1:6379")]
    server: String,
    #[command(flatten)]
    load: LatencyLoad,
}

/// Reads `total` entries of `key` as they arrive; measures those after `warm`.
fn consume(server: &str, key: &str, total: u64, warm: u64) -> BenchResult<Histogram<u64>> {
    let mut writer = connect(server)?;
    let mut reader = BufReader::new(writer.try_clone()?);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    // The key is new, so reading from its first entry misses none sent before this blocks.
    let mut last_id = b"0".to_vec();
    let mut received = 0;
    while received < total {
        writer.write_all(&command(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", key.as_bytes(), &last_id]))?;
        let reply = read_reply(&mut reader)?;
        let now = now_nanos();
        for (id, stamp) in entries(reply) {
            last_id = id;
            received += 1;
            let sent: u64 = std::str::from_utf8(&stamp)?.parse()?;
            if received > warm {
                histogram.record(now.saturating_sub(sent).max(1))?;
            }
        }
    }
    Ok(histogram)
}

/// Sends `total` XADDs to `key`, `period` apart, from this thread.
fn produce(server: &str, key: &str, total: u64, period: Duration, value: &[u8]) -> BenchResult {
    let mut writer = connect(server)?;
    let mut replies = BufReader::new(writer.try_clone()?);
    let drain = std::thread::spawn(move || -> BenchResult {
        for _ in 0..total {
            read_reply(&mut replies)?;
        }
        Ok(())
    });
    let started = Instant::now();
    for sent in 0..total {
        let due = started + period * u32::try_from(sent).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let stamp = now_nanos().to_string();
        writer.write_all(&command(&[b"XADD", key.as_bytes(), b"*", b"sent-at-ns", stamp.as_bytes(), b"v", value]))?;
    }
    drain.join().map_err(|_| "reply reader panicked")?
}

fn main() -> BenchResult {
    let Cli { server, load } = Cli::parse();
    let (rate, warm, total) = (load.rate, load.warm_records(), load.total_records());
    let key = format!("peer-latency-{}", now_nanos());
    let consumer = {
        let (server, key) = (server.clone(), key.clone());
        std::thread::spawn(move || consume(&server, &key, total, warm))
    };
    let steal_before = sluice_benches::steal_ms();
    produce(&server, &key, total, load.period(), &load.value())?;
    let histogram = consumer.join().map_err(|_| "consumer panicked")??;
    let summary =
        sluice_benches::LatencySummary { histogram: &histogram, steal_ms: sluice_benches::steal_since(steal_before) };
    connect(&server)?.write_all(&command(&[b"DEL", key.as_bytes()]))?;
    // Written, not printed: a closed pipe (`| head -1`) is an error to return, not a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{{\"bench\":\"peer-latency-redis\",\"rate\":{rate}{}}}", summary.json_fields())?;
    writeln!(out, "Redis Streams publish-to-consumer latency at {rate} records/s: {}", summary.text())?;
    Ok(())
}
