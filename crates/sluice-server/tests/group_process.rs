//! Consumer groups against the real `sluice-server` binary: what a `kill -9` may cost in acks,
//! and flat broker memory under a slow member while its topic grows.

mod common;

use std::path::Path;

use common::TestResult;
use common::member::{JoinOptions, Member, offsets};
use common::process::{Broker, spawn_broker};
use sluice_core::group::snapshot;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::producer_client::ProducerClient;
use tonic::transport::{Channel, Endpoint};

async fn channel(broker: &Broker) -> Channel {
    Endpoint::from_shared(format!("http://{}", broker.server.grpc)).unwrap().connect().await.unwrap()
}

/// The group's file as on disk, if it exists and decodes.
fn group_file(data_dir: &Path, group: &str) -> Option<snapshot::GroupSnapshot> {
    let bytes = std::fs::read(data_dir.join("groups").join(format!("{group}.group"))).ok()?;
    snapshot::decode(&bytes, &sluice_core::GroupDefaults::default().settings()).ok()
}

fn committed_on_disk(data_dir: &Path, group: &str) -> Option<u64> {
    Some(group_file(data_dir, group)?.partitions.first()?.acks.committed())
}

#[tokio::test]
async fn kill_9_loses_at_most_the_acks_of_the_last_commit_interval() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "100ms")];
    let mut broker = spawn_broker(dir.path(), &env);
    let mut admin = AdminClient::new(channel(&broker).await);
    admin.create_topic(pb::CreateTopicRequest { name: "payments".into(), partitions: 1, config: None }).await?;
    let records = (0..100).map(|i| common::record(None, &format!("p{i}"))).collect();
    ProducerClient::new(channel(&broker).await).produce(common::produce_request("payments", records)).await?;

    let mut member = Member::join(&broker.server, "ledger", &["payments"], "m", JoinOptions::default()).await;
    let mut acked = 0u64;
    let mut generation = 0;
    while acked < 40 {
        let delivery = member.next_records().await;
        generation = delivery.generation;
        let list: Vec<u64> = offsets(&delivery).into_iter().filter(|&o| o < 40).collect();
        member.ack("payments", 0, delivery.generation, list.clone()).await;
        acked = acked.max(list.last().map_or(0, |o| o + 1));
    }
    common::eventually("40 acks on disk", || async { committed_on_disk(dir.path(), "ledger") == Some(40) }).await;
    // More acks, then kill at once: these may or may not have reached the disk.
    member.ack_range("payments", 0, generation, 40, 59).await;
    member.heartbeat().await;
    broker.child.kill()?;
    broker.child.wait()?;
    drop(member);

    let mut restarted = spawn_broker(dir.path(), &env);
    let committed = committed_on_disk(dir.path(), "ledger").unwrap();
    assert!((40..=60).contains(&committed), "committed {committed}: between the last flush and the last ack");
    let mut member = Member::join(&restarted.server, "ledger", &["payments"], "m", JoinOptions::default()).await;
    let delivery = member.next_records().await;
    assert_eq!(offsets(&delivery)[0], committed, "delivery resumes at the committed offset");
    restarted.child.kill()?;
    restarted.child.wait()?;
    Ok(())
}

/// Dead letters the group's journal holds (added and not removed since).
fn durable_dead_letters(data_dir: &Path, group: &str) -> usize {
    use sluice_core::group::journal::{Change, parse};
    let bytes = std::fs::read(data_dir.join("groups").join(format!("{group}.deadletters"))).unwrap_or_default();
    let mut live = std::collections::BTreeSet::new();
    for entry in parse(&bytes).map(|j| j.entries).unwrap_or_default() {
        match entry.change {
            Change::Added => live.insert(entry.key),
            Change::Redriven | Change::Discarded => live.remove(&entry.key),
        };
    }
    live.len()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

async fn grow(broker: &Broker, bytes: u64) {
    let mut producer = ProducerClient::new(channel(broker).await);
    let value = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let requests = bytes / (1 << 20);
    for _ in 0..requests {
        let records = (0..16).map(|_| pb::Record { value: value.clone(), ..Default::default() }).collect();
        producer.produce(common::produce_request("feed", records)).await.unwrap();
    }
}

#[tokio::test]
async fn a_slow_member_holds_at_most_its_in_flight_limit_and_broker_memory_stays_flat() -> TestResult {
    let gib: u64 = std::env::var("SLUICE_TEST_GROW_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30);
    let dir = tempfile::tempdir()?;
    let mut broker = spawn_broker(dir.path(), &[]);
    let mut admin = AdminClient::new(channel(&broker).await);
    let config = pb::TopicConfig { fsync: pb::FsyncPolicy::Never as i32, ..Default::default() };
    admin.create_topic(pb::CreateTopicRequest { name: "feed".into(), partitions: 1, config: Some(config) }).await?;
    let options = JoinOptions { max_in_flight_records: 8, ..JoinOptions::default() };
    let mut member = Member::join(&broker.server, "slow", &["feed"], "m", options).await;
    grow(&broker, 64 << 20).await;
    let mut received = Vec::new();
    let mut generation = 0;
    while received.len() < 8 {
        let delivery = member.next_records().await;
        generation = delivery.generation;
        received.extend(offsets(&delivery));
    }
    let baseline = rss_bytes(broker.child.id());
    grow(&broker, gib).await;
    member.heartbeat().await;
    let after = rss_bytes(broker.child.id());
    eprintln!("broker RSS {} MiB before, {} MiB after {} MiB more", baseline >> 20, after >> 20, gib >> 20);
    let describe = admin.describe_group(pb::DescribeGroupRequest { group: "slow".into() }).await?.into_inner();
    assert_eq!(describe.members[0].in_flight, 8, "never more than max in-flight outstanding");
    assert_eq!(received.len(), 8);
    assert!(describe.partitions[0].lag > 16_000, "the topic grew under the slow member");
    assert!(
        after < baseline + (48 << 20),
        "broker RSS grew from {} MiB to {} MiB while the topic grew by {} MiB",
        baseline >> 20,
        after >> 20,
        gib >> 20
    );
    // Acking four lets exactly four more through.
    member.ack("feed", 0, generation, received[..4].to_vec()).await;
    let mut more = Vec::new();
    while more.len() < 4 {
        more.extend(offsets(&member.next_records().await));
    }
    assert_eq!(more, (8..12).collect::<Vec<u64>>());
    let describe = admin.describe_group(pb::DescribeGroupRequest { group: "slow".into() }).await?.into_inner();
    assert_eq!(describe.members[0].in_flight, 8);
    broker.child.kill()?;
    broker.child.wait()?;
    Ok(())
}

async fn all_records(broker: &Broker, topic: &str, partitions: u32) -> Vec<pb::Record> {
    let mut out = Vec::new();
    for partition in 0..partitions {
        out.extend(common::fetch_all(&broker.server, topic, partition, 0).await);
    }
    out
}

#[tokio::test]
async fn kill_9_while_dead_lettering_loses_no_failed_record() -> TestResult {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "100ms")];
    let mut broker = spawn_broker(dir.path(), &env);
    let mut admin = AdminClient::new(channel(&broker).await);
    admin.create_topic(pb::CreateTopicRequest { name: "jobs".into(), partitions: 2, config: None }).await?;
    let mut producer = ProducerClient::new(channel(&broker).await);
    for chunk in 0..20 {
        let records = (0..100).map(|i| common::record(Some(&format!("k{}", chunk * 100 + i)), "job")).collect();
        producer.produce(common::produce_request("jobs", records)).await?;
    }
    // Every third record is poison: nacked as not retryable, so it is dead-lettered at once.
    let options = JoinOptions { max_in_flight_records: 100, ..JoinOptions::default() };
    let mut member = Member::join(&broker.server, "workers", &["jobs"], "m", options).await;
    let mut failed: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut waited = false;
    while failed.len() < 300 {
        if failed.len() >= 150 && !waited {
            // Let part of the work reach the group file, so the crash finds every state:
            // dead-lettered and recorded, dead-lettered but not yet recorded, still queued.
            common::eventually("some dead letters recorded on disk", || async {
                durable_dead_letters(dir.path(), "workers") > 0
            })
            .await;
            waited = true;
        }
        let delivery = member.next_records().await;
        for offset in offsets(&delivery) {
            if offset % 3 == 0 {
                member.nack("jobs", delivery.partition, delivery.generation, offset, "poison", false).await;
                failed.insert((delivery.partition, offset));
            } else {
                member.ack("jobs", delivery.partition, delivery.generation, vec![offset]).await;
            }
        }
    }
    broker.child.kill()?; // mid-stream, with dead-lettering in progress
    broker.child.wait()?;
    drop(member);

    let mut restarted = spawn_broker(dir.path(), &env);
    let mut member = Member::join(&restarted.server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let mut redelivered: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut admin = AdminClient::new(channel(&restarted).await);
    loop {
        let d = admin.describe_group(pb::DescribeGroupRequest { group: "workers".into() }).await?.into_inner();
        if d.partitions.len() == 2 && d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0) {
            break;
        }
        // The last acks may still be on their way: look again if nothing arrives for a while.
        let Ok(delivery) = tokio::time::timeout(std::time::Duration::from_millis(200), member.next_records()).await
        else {
            continue;
        };
        for offset in offsets(&delivery) {
            redelivered.insert((delivery.partition, offset));
        }
        member.ack_all(&delivery).await;
    }
    let mut copies: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    for record in all_records(&restarted, "jobs.dlq", 2).await {
        let header = |name: &str| {
            record.headers.iter().find(|h| h.name == name).map(|h| String::from_utf8_lossy(&h.value).into_owned())
        };
        let source =
            (header("__dlq.errors.partition").unwrap().parse()?, header("__dlq.errors.offset").unwrap().parse()?);
        *copies.entry(source).or_default() += 1;
    }
    let mut duplicated = 0;
    assert!(
        failed.iter().any(|r| copies.contains_key(r) && !redelivered.contains(r)),
        "some were done before the crash"
    );
    for record in &failed {
        let dead_lettered = copies.get(record).copied().unwrap_or(0);
        let pending = redelivered.contains(record);
        assert!(dead_lettered > 0 || pending, "failed record {record:?} was lost");
        assert!(dead_lettered <= 1, "{record:?} dead-lettered {dead_lettered} times");
        if dead_lettered > 0 && pending {
            duplicated += 1;
        }
    }
    assert!(copies.keys().all(|k| failed.contains(k)), "only failed records are dead-lettered");
    eprintln!(
        "{} failed before the crash: {} dead-lettered, {} pending after restart, {} in both",
        failed.len(),
        copies.len(),
        failed.iter().filter(|r| redelivered.contains(r)).count(),
        duplicated
    );
    restarted.child.kill()?;
    restarted.child.wait()?;
    Ok(())
}

#[tokio::test]
async fn a_record_is_done_only_once_its_dead_letter_copy_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "50ms")];
    let mut broker = spawn_broker(dir.path(), &env);
    let mut admin = AdminClient::new(channel(&broker).await);
    admin.create_topic(pb::CreateTopicRequest { name: "invoices".into(), partitions: 1, config: None }).await?;
    // A dead-letter topic that refuses every copy (1-byte records), so the move cannot finish.
    let tiny = pb::TopicConfig { max_message_bytes: Some(1), ..Default::default() };
    let dlq = pb::CreateTopicRequest { name: "invoices.dlq".into(), partitions: 1, config: Some(tiny) };
    admin.create_topic(dlq).await?;
    let records = ["bad", "ok-1", "ok-2"].iter().map(|v| common::record(None, v)).collect();
    ProducerClient::new(channel(&broker).await).produce(common::produce_request("invoices", records)).await?;
    let mut member = Member::join(&broker.server, "accounting", &["invoices"], "m", JoinOptions::default()).await;
    let delivery = member.next_records().await;
    assert_eq!(offsets(&delivery), vec![0, 1, 2]);
    member.nack("invoices", 0, delivery.generation, 0, "unparseable", false).await;
    member.ack("invoices", 0, delivery.generation, vec![1, 2]).await;
    common::eventually("acks of 1 and 2 on disk", || async {
        group_file(dir.path(), "accounting").is_some_and(|s| s.partitions[0].acks.is_done(2))
    })
    .await;
    let on_disk = group_file(dir.path(), "accounting").unwrap();
    assert_eq!(on_disk.partitions[0].acks.committed(), 0, "the record is not done while its copy is unwritten");
    broker.child.kill()?;
    broker.child.wait()?;
    drop(member);

    let mut restarted = spawn_broker(dir.path(), &env);
    let mut admin = AdminClient::new(channel(&restarted).await);
    let roomy = pb::TopicConfig { max_message_bytes: Some(1 << 20), ..Default::default() };
    admin.alter_topic_config(pb::AlterTopicConfigRequest { name: "invoices.dlq".into(), config: Some(roomy) }).await?;
    // The record out of attempts is not delivered again: its copy is written once the topic
    // accepts it.
    common::eventually("dead-lettered once the topic accepts it", || async {
        group_file(dir.path(), "accounting").is_some_and(|s| s.partitions[0].acks.committed() == 3)
    })
    .await;
    assert_eq!(all_records(&restarted, "invoices.dlq", 1).await.len(), 1);
    restarted.child.kill()?;
    restarted.child.wait()?;
    Ok(())
}
