//! Shared helpers of the Sluice benchmarks: record and batch shapes, scratch directories, and
//! percentile summaries.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_storage::{BatchBuilder, EncodedBatch, HeaderRef, RecordRef};

pub mod resp;

/// Value size that makes one encoded record (16-byte key, two small headers) ~1 KiB.
pub const VALUE_BYTES: usize = 960;

/// A batch of `records` records of about 1 KiB each.
pub fn kib_records_batch(records: usize) -> EncodedBatch {
    let value = vec![0xabu8; VALUE_BYTES];
    let headers = [
        HeaderRef { name: "correlation-id", value: b"3f2b9c1e-0000" },
        HeaderRef { name: "event-type", value: b"order.placed" },
    ];
    let mut builder = BatchBuilder::with_capacity(records * 1040);
    for i in 0..records {
        let key = format!("customer-{i:07}");
        let record = RecordRef {
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(key.as_bytes()),
            value: &value,
            headers: &headers,
        };
        builder.push(&record).unwrap_or_else(|e| panic!("bench batch: {e}"));
    }
    builder.finish().unwrap_or_else(|e| panic!("bench batch: {e}"))
}

/// A batch whose encoded size is close to `bytes`, made of ~1 KiB records.
pub fn batch_of_bytes(bytes: usize) -> EncodedBatch {
    kib_records_batch((bytes / 1024).max(1))
}

/// Scratch space on the real disk: `SLUICE_BENCH_DIR`, or the system temp dir.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SLUICE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).unwrap_or_else(|e| panic!("scratch dir: {e}"))
}

/// p50/p99/p999/max of a set of latencies, in microseconds.
pub fn percentiles_us(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    format!(
        "n={} p50={:.1}us p99={:.1}us p999={:.1}us max={:.1}us",
        samples.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

/// Resident set size and its peak, from /proc/self/status (Linux), in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Wall-clock time in ns since the Unix epoch: the send stamp of latency records, comparable
/// across processes on one machine.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// CPU time the hypervisor has taken from this VM's vCPUs since boot (`steal` in /proc/stat,
/// all vCPUs together), in ms; `None` where the kernel does not report it. Latency runs report
/// the difference across the run: on a shared host a vCPU that is descheduled stalls whatever
/// runs on it, and the runs with the most steal are the ones with the worst tail.
pub fn steal_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: u64 = stat.lines().next()?.split_whitespace().nth(8)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture the kernel exports it for.
    Some(ticks * 10)
}

/// The load of a latency run: one record per send, evenly spaced. Shared by `sluice-bench
/// latency` and the peer probes, so that both sides of a comparison are driven alike.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyLoad {
    /// Records per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Records are sent at the same rate for this long first and not measured: the first
    /// ones pay for connection buffers, first-touch memory and cold caches on both sides, which
    /// is start-up cost, not the steady latency this bench reports.
    #[arg(long, default_value = "1s")]
    pub warmup: humantime::Duration,
    /// Bytes per record: a value of this size less 8, plus the 8-byte send stamp.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
}

impl LatencyLoad {
    /// Records sent during the warm-up.
    pub fn warm_records(&self) -> u64 {
        (self.rate as f64 * Duration::from(self.warmup).as_secs_f64()) as u64
    }

    /// Records sent in all (warm-up included).
    pub fn total_records(&self) -> u64 {
        self.warm_records() + self.rate * Duration::from(self.duration).as_secs()
    }

    /// Time between two sends.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / self.rate.max(1))
    }

    /// The value every record carries.
    pub fn value(&self) -> Vec<u8> {
        vec![0x5a; self.record_size.saturating_sub(8)]
    }
}

/// Steal (see [`steal_ms`]) since `before`, a reading taken at the start of a run.
pub fn steal_since(before: Option<u64>) -> Option<u64> {
    before.zip(steal_ms()).map(|(before, after)| after.saturating_sub(before))
}

/// What a latency run measured, reported alike by `sluice-bench latency` and the peers.
pub struct LatencySummary<'a> {
    pub histogram: &'a hdrhistogram::Histogram<u64>,
    /// Steal across the run, where the kernel reports it.
    pub steal_ms: Option<u64>,
}

impl LatencySummary<'_> {
    fn us(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The JSON fields every latency line ends with, each with its leading comma.
    pub fn json_fields(&self) -> String {
        format!(
            ",\"records\":{},\"p50_us\":{:.0},\"p99_us\":{:.0},\"p999_us\":{:.0},\"max_us\":{:.0},\"steal_ms\":{}",
            self.histogram.len(),
            self.us(0.5),
            self.us(0.99),
            self.us(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.steal_ms.map_or("null".to_owned(), |ms| ms.to_string()),
        )
    }

    /// The same for people: percentiles, records and steal.
    pub fn text(&self) -> String {
        format!(
            "p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us ({} records){}",
            self.us(0.5),
            self.us(0.99),
            self.us(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.histogram.len(),
            self.steal_ms.map_or(String::new(), |ms| format!("; the host took {ms} ms of CPU from the VM meanwhile")),
        )
    }
}

/// The shape of a produce load. Shared by `sluice-bench produce` and `peer-throughput`, so that
/// both sides of a comparison send alike.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceShape {
    /// Concurrent producers (each with its own connection).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub total: u64,
    /// Requests in flight per producer.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
}

impl ProduceShape {
    /// Requests in all: the total rounded up to whole requests.
    pub fn requests(&self) -> u64 {
        self.total.div_ceil(self.batch.max(1) as u64)
    }

    /// Records in all requests.
    pub fn records(&self) -> u64 {
        self.requests() * self.batch as u64
    }

    /// Requests producer `p` (from 0) sends: an equal share, the first ones one more.
    pub fn requests_of(&self, p: u32) -> u64 {
        let producers = u64::from(self.producers.max(1));
        self.requests() / producers + u64::from(u64::from(p) < self.requests() % producers)
    }
}

/// CPU time (user + system, all threads) process `pid` has used, in ms; `None` if it cannot be
/// read (another machine, or the process is gone).
pub fn process_cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (user, system): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((user + system) * 10)
}

/// A broker's CPU use across one run, read from /proc when its pid is known.
#[derive(Debug, Clone, Copy)]
pub struct ServerCpu {
    pid: Option<u32>,
    start_ms: Option<u64>,
}

impl ServerCpu {
    /// Starts counting (nothing is counted without a pid).
    pub fn start(pid: Option<u32>) -> Self {
        ServerCpu { pid, start_ms: pid.and_then(process_cpu_ms) }
    }

    /// JSON fields to add to a run's line: `,"server_cpu_ms":..,"server_cpu_us_per_record":..`,
    /// or nothing without a pid.
    pub fn json_fields(&self, records: u64) -> String {
        let (Some(pid), Some(start)) = (self.pid, self.start_ms) else { return String::new() };
        let Some(end) = process_cpu_ms(pid) else { return String::new() };
        let ms = end.saturating_sub(start);
        format!(
            ",\"server_cpu_ms\":{ms},\"server_cpu_us_per_record\":{:.3}",
            ms as f64 * 1000.0 / records.max(1) as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(producers: u32, batch: usize, total: u64) -> ProduceShape {
        ProduceShape { producers, record_size: 10, batch, total, in_flight: 8 }
    }

    #[test]
    fn a_latency_summary_reports_percentiles_in_microseconds_and_unknown_steal_as_null() {
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in [100_000, 200_000, 300_000, 4_000_000] {
            histogram.record(ns).unwrap();
        }
        let summary = LatencySummary { histogram: &histogram, steal_ms: None };
        let fields = summary.json_fields();
        assert!(fields.starts_with(",\"records\":4,\"p50_us\":200,"), "{fields}");
        // 4 ms lands in a bucket of hdrhistogram's 3 significant digits, reported in whole us.
        let max_us = (histogram.max() as f64 / 1000.0).round();
        assert!((4000.0..4005.0).contains(&max_us));
        assert!(fields.contains(&format!("\"max_us\":{max_us},")) && fields.ends_with("\"steal_ms\":null"), "{fields}");
        let text = LatencySummary { histogram: &histogram, steal_ms: Some(7) }.text();
        assert!(text.starts_with("p50 200 us") && text.ends_with("took 7 ms of CPU from the VM meanwhile"), "{text}");
    }

    #[test]
    fn a_produce_load_is_whole_requests_shared_out_among_producers() {
        let one = shape(1, 1000, 1_000_000);
        assert_eq!((one.requests(), one.records(), one.requests_of(0)), (1000, 1_000_000, 1000));
        let three = shape(3, 100, 1050);
        assert_eq!((three.requests(), three.records()), (11, 1100), "rounded up to whole requests");
        let shares: Vec<u64> = (0..3).map(|p| three.requests_of(p)).collect();
        assert_eq!(shares, vec![4, 4, 3]);
    }
}
