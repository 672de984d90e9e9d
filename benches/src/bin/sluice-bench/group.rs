//! `sluice-bench group`: consumer-group read-back over Consume, every record acked in ranges,
//! and optionally the time a rebalance takes after a member leaves.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{BenchResult, connect, progress};

/// What one run of the group bench does (the `group` subcommand's flags).
#[derive(Debug, clap::Args)]
pub struct GroupSpec {
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Group id; default: a new group per run (so it starts at the earliest record).
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, default_value_t = 2)]
    pub members: u32,
    /// Unacked records each member may hold.
    #[arg(long, default_value_t = 4000)]
    pub max_in_flight: u32,
    /// After this many records the last member drops its stream; reports how long until the
    /// others deliver from its partitions.
    #[arg(long)]
    pub leave_after: Option<u64>,
    /// The leaving member goes silent instead of closing its stream (the broker then notices
    /// after the session timeout).
    #[arg(long)]
    pub silent: bool,
    /// Session timeout each member asks for, in ms (0: the broker's default of 30 s).
    #[arg(long, default_value_t = 0)]
    pub session_timeout_ms: u32,
    /// Nack (not retryable: dead-lettered) one record in N (by offset); 100 = 1%. 0: none.
    #[arg(long, default_value_t = 0)]
    pub nack_every: u64,
    /// The group's delivery mode: `owned` (partition-owned) or `shared` (queue mode). Unset: the
    /// join names none (works against brokers without delivery modes too).
    #[arg(long, value_parser = ["owned", "shared"])]
    pub delivery: Option<String>,
}

struct Shared {
    done: Arc<AtomicU64>,
    bytes: AtomicU64,
    /// Records messages received (deliveries).
    deliveries: AtomicU64,
    total: u64,
    /// Partitions of the member that leaves, and when it left.
    leaver_partitions: Mutex<BTreeSet<u32>>,
    left_at: Mutex<Option<Instant>>,
    resumed_after: Mutex<Option<Duration>>,
    finished: AtomicBool,
}

/// Contiguous runs of ascending offsets as inclusive ranges.
fn ranges(offsets: impl Iterator<Item = u64>) -> Vec<pb::OffsetRange> {
    let mut out: Vec<pb::OffsetRange> = Vec::new();
    for offset in offsets {
        match out.last_mut() {
            Some(last) if last.last + 1 == offset => last.last = offset,
            _ => out.push(pb::OffsetRange { first: offset, last: offset }),
        }
    }
    out
}

struct MemberSpec {
    server: String,
    group: String,
    topic: String,
    max_in_flight: u32,
    session_timeout_ms: u32,
    leaver: bool,
    silent: bool,
    nack_every: u64,
    delivery: i32,
}

async fn member(spec: MemberSpec, shared: Arc<Shared>) -> BenchResult {
    let MemberSpec {
        server,
        group,
        topic: spec_topic,
        max_in_flight,
        session_timeout_ms,
        leaver,
        silent,
        nack_every,
        delivery,
    } = spec;
    let (tx, rx) = mpsc::channel(256);
    let join = pb::Join {
        group,
        topics: vec![spec_topic],
        member_name: format!("bench-{}", if leaver { "leaver" } else { "member" }),
        max_in_flight_records: max_in_flight,
        session_timeout_ms,
        delivery,
        ..pb::Join::default()
    };
    tx.send(pb::ConsumeRequest { request: Some(pb::consume_request::Request::Join(join)) }).await?;
    let mut client = ConsumerClient::new(connect(&server).await?).max_decoding_message_size(64 << 20);
    let mut stream = client.consume(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(message) = stream.message().await? {
        if shared.finished.load(Ordering::Relaxed) {
            break;
        }
        match message.response {
            Some(pb::consume_response::Response::Assignment(a)) if leaver => {
                *shared.leaver_partitions.lock().map_err(|_| "poisoned")? =
                    a.partitions.iter().flat_map(|t| t.partitions.iter().copied()).collect();
            }
            Some(pb::consume_response::Response::Records(records)) => {
                if !leaver
                    && shared.left_at.lock().map_err(|_| "poisoned")?.is_some()
                    && shared.leaver_partitions.lock().map_err(|_| "poisoned")?.contains(&records.partition)
                {
                    let mut resumed = shared.resumed_after.lock().map_err(|_| "poisoned")?;
                    if resumed.is_none() {
                        let left = shared.left_at.lock().map_err(|_| "poisoned")?.unwrap_or_else(Instant::now);
                        *resumed = Some(left.elapsed());
                    }
                }
                let n = records.records.len() as u64;
                let bytes: u64 = records
                    .records
                    .iter()
                    .filter_map(|r| r.record.as_ref())
                    .map(|r| r.value.len() as u64 + r.key.as_ref().map_or(0, |k| k.len() as u64))
                    .sum();
                let all = records.records.iter().filter_map(|r| r.record.as_ref()).map(|r| r.offset);
                let failing = |offset: &u64| nack_every > 0 && offset.is_multiple_of(nack_every);
                let nacked: Vec<u64> = all.clone().filter(failing).collect();
                let acked = ranges(all.filter(|o| !failing(o)));
                if !nacked.is_empty() {
                    let nack = pb::Nack {
                        topic: records.topic.clone(),
                        partition: records.partition,
                        generation: records.generation,
                        offsets: nacked,
                        reason: "bench failure".into(),
                        retryable: Some(false),
                        ..pb::Nack::default()
                    };
                    tx.send(pb::ConsumeRequest { request: Some(pb::consume_request::Request::Nack(nack)) }).await?;
                }
                let ack = pb::Ack {
                    topic: records.topic,
                    partition: records.partition,
                    generation: records.generation,
                    offsets: Vec::new(),
                    ranges: acked,
                };
                tx.send(pb::ConsumeRequest { request: Some(pb::consume_request::Request::Ack(ack)) }).await?;
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                let done = shared.done.fetch_add(n, Ordering::Relaxed) + n;
                if done >= shared.total {
                    shared.finished.store(true, Ordering::Relaxed);
                    break;
                }
            }
            _ => {}
        }
        if leaver && shared.left_at.lock().map_err(|_| "poisoned")?.is_some() {
            // Silent: hold the stream open, unread, until the run ends.
            while silent && !shared.finished.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            break;
        }
    }
    Ok(())
}

pub async fn run(server: &str, spec: GroupSpec) -> BenchResult {
    let channel = connect(server).await?;
    let description = AdminClient::new(channel.clone())
        .describe_topic(pb::DescribeTopicRequest { name: spec.topic.clone() })
        .await?
        .into_inner();
    let total: u64 = description.partitions.iter().map(|p| p.end_offset - p.start_offset).sum();
    let partitions = description.partitions.len();
    let group = spec.group.clone().unwrap_or_else(|| format!("bench-{}", sluice_benches::now_nanos()));
    let done = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared {
        done: Arc::clone(&done),
        bytes: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        total,
        leaver_partitions: Mutex::new(BTreeSet::new()),
        left_at: Mutex::new(None),
        resumed_after: Mutex::new(None),
        finished: AtomicBool::new(false),
    });
    let shown = progress("group", Arc::clone(&done), total);
    let cpu = crate::server_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.members {
        let leaver = spec.leave_after.is_some() && i + 1 == spec.members;
        let member_spec = MemberSpec {
            server: server.to_owned(),
            group: group.clone(),
            topic: spec.topic.clone(),
            max_in_flight: spec.max_in_flight,
            session_timeout_ms: spec.session_timeout_ms,
            leaver,
            silent: spec.silent,
            nack_every: spec.nack_every,
            delivery: match spec.delivery.as_deref() {
                Some("shared") => pb::Delivery::Shared as i32,
                Some("owned") => pb::Delivery::PartitionOwned as i32,
                _ => pb::Delivery::Unspecified as i32,
            },
        };
        tasks.spawn(member(member_spec, Arc::clone(&shared)));
    }
    if let Some(after) = spec.leave_after {
        while done.load(Ordering::Relaxed) < after {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        *shared.left_at.lock().map_err(|_| "poisoned")? = Some(Instant::now());
    }
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(outcome) => outcome?,
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
        if shared.finished.load(Ordering::Relaxed) {
            tasks.abort_all();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    shown.abort();
    let n = done.load(Ordering::Relaxed);
    let b = shared.bytes.load(Ordering::Relaxed);
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let resumed = shared.resumed_after.lock().map_err(|_| "poisoned")?.map(|d| d.as_secs_f64() * 1000.0);
    let resumed_json = resumed.map_or("null".to_owned(), |ms| format!("{ms:.1}"));
    println!(
        "{{\"bench\":\"group\",\"members\":{},\"partitions\":{partitions},\"max_in_flight\":{},\"records\":{n},\"seconds\":{secs:.3},\"records_per_s\":{:.0},\"mb_per_s\":{:.1},\"deliveries\":{deliveries},\"nack_every\":{},\"leave\":\"{}\",\"session_timeout_ms\":{},\"rebalance_resume_ms\":{resumed_json},\"delivery\":\"{}\"{}}}",
        spec.members,
        spec.max_in_flight,
        n as f64 / secs,
        b as f64 / secs / 1e6,
        spec.nack_every,
        if spec.silent { "silent" } else { "close" },
        spec.session_timeout_ms,
        spec.delivery.as_deref().unwrap_or("default"),
        cpu.json_fields(n),
    );
    println!(
        "group consume: {n} records in {secs:.2} s = {:.0} records/s, {:.1} MB/s ({} members, {partitions} partitions, acked in ranges, {deliveries} deliveries){}",
        n as f64 / secs,
        b as f64 / secs / 1e6,
        spec.members,
        resumed
            .map_or(String::new(), |ms| format!("; after a member left, its partitions delivered again in {ms:.1} ms"))
    );
    Ok(())
}
