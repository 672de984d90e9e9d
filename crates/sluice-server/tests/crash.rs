//! The real binary under `kill -9` and SIGTERM: nothing acknowledged is lost.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::TestResult;
use sluice_proto::v1 as pb;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

struct Broker {
    child: Child,
    grpc: String,
}

/// Starts `sluice-server` on free ports and waits for its "listening" line.
fn spawn_broker(data_dir: &Path) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).unwrap().to_owned();
    // Keep draining stdout so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Broker { child, grpc }
}

async fn channel(grpc: &str) -> Channel {
    Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap()
}

fn value(i: u64) -> Vec<u8> {
    // Distinct, checkable bytes per record.
    format!("record-{i:08}-").repeat(20).into_bytes()
}

#[tokio::test]
async fn every_acknowledged_record_survives_kill_9() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = spawn_broker(dir.path());
    let mut admin = sluice_proto::v1::admin_client::AdminClient::new(channel(&broker.grpc).await);
    admin.create_topic(pb::CreateTopicRequest { name: "ledger".into(), partitions: 1, config: None }).await?;

    // Pipeline requests on one stream and count what was acknowledged; kill mid-stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ProduceRequest>(64);
    let mut producer = ProducerClient::new(channel(&broker.grpc).await);
    let sender = tokio::spawn(async move {
        for id in 0u64.. {
            let records =
                (0..10).map(|j| pb::Record { value: value(id * 10 + j).into(), ..Default::default() }).collect();
            let request = pb::ProduceRequest { request_id: id, topic: "ledger".into(), records, ..Default::default() };
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    let mut responses = producer.produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut acked: Vec<(u64, u64)> = Vec::new(); // (request id, base offset)
    let mut broker = broker;
    while let Some(response) = responses.next().await {
        let Ok(response) = response else { break };
        assert!(response.error.is_none(), "{:?}", response.error);
        acked.push((response.request_id, response.appends[0].base_offset));
        if acked.len() == 200 {
            broker.child.kill()?; // SIGKILL, mid-stream
        }
    }
    broker.child.wait()?;
    sender.abort();
    assert!(acked.len() >= 200);

    let restarted = spawn_broker(dir.path());
    let mut consumer = ConsumerClient::new(channel(&restarted.grpc).await);
    let mut stored = std::collections::HashMap::new();
    let mut offset = 0;
    loop {
        let response = consumer
            .fetch(pb::FetchRequest {
                topic: "ledger".into(),
                partition: 0,
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                timestamp_ms: None,
            })
            .await?
            .into_inner();
        if response.records.is_empty() {
            break;
        }
        offset = response.next_offset;
        for rec in response.records {
            stored.insert(rec.offset, rec.value);
        }
    }
    for (request_id, base) in &acked {
        for j in 0..10 {
            let got = stored.get(&(base + j)).unwrap_or_else(|| panic!("acked offset {} lost", base + j));
            assert_eq!(got.as_ref(), value(request_id * 10 + j).as_slice(), "byte for byte");
        }
    }
    let mut restarted = restarted;
    restarted.child.kill()?;
    restarted.child.wait()?;
    Ok(())
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut broker = spawn_broker(dir.path());
    let mut admin = sluice_proto::v1::admin_client::AdminClient::new(channel(&broker.grpc).await);
    let never = pb::TopicConfig { fsync: pb::FsyncPolicy::Never as i32, ..Default::default() };
    admin.create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 2, config: Some(never) }).await?;
    let mut producer = ProducerClient::new(channel(&broker.grpc).await);
    for i in 0..50 {
        let request = pb::ProduceRequest {
            topic: "t".into(),
            records: vec![pb::Record { value: value(i).into(), ..Default::default() }],
            ..Default::default()
        };
        producer.produce(request).await?;
    }
    let pid = broker.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status()?.success());
    let status = broker.child.wait()?;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    for partition in 0..2 {
        let marker = dir.path().join(format!("topics/t/{partition}/clean-shutdown"));
        assert!(marker.exists(), "partition {partition} was closed cleanly (no recovery scan needed)");
    }
    let mut restarted = spawn_broker(dir.path());
    let mut consumer = ConsumerClient::new(channel(&restarted.grpc).await);
    let mut total = 0;
    for partition in 0..2 {
        let response = consumer
            .fetch(pb::FetchRequest {
                topic: "t".into(),
                partition,
                offset: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                timestamp_ms: None,
            })
            .await?
            .into_inner();
        total += response.end_offset;
    }
    assert_eq!(total, 50, "fsync never, but a clean shutdown flushes everything");
    restarted.child.kill()?;
    restarted.child.wait()?;
    Ok(())
}
