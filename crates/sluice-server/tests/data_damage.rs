//! A damaged data directory costs only the damaged bytes: the broker refuses to guess where a
//! guess could delete data, serves everything intact, and names what is lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::damage::*;
use common::*;
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;

fn status_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Status {
    result.expect_err("expected an error status")
}

fn sluice_server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-server")).args(args).output().unwrap()
}

#[tokio::test]
async fn a_lost_topic_meta_stops_the_start_deletes_nothing_and_can_be_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "orders", 2).await;
    server.stop().await;
    let meta = dir.path().join("topics/orders/topic.meta");
    std::fs::remove_file(&meta)?;

    let err = sluice_server::Server::bind(config(dir.path(), &[])).await.expect_err("the start must be refused");
    let message = err.to_string();
    assert!(message.contains("topic.meta") && message.contains("recover-topic-meta"), "{message}");
    for partition in 0..2 {
        assert!(partition_dir(dir.path(), "orders", partition).join("00000000000000000000.log").exists());
    }

    let data_dir = dir.path().to_str().unwrap();
    let out = sluice_server(&["recover-topic-meta", "--data-dir", data_dir, "--topic", "orders"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 partitions"));
    let server = TestServer::start(dir.path()).await;
    for partition in 0..2 {
        let records = fetch_all(&server, "orders", partition, 0).await;
        assert_eq!(records.len(), 400, "partition {partition} is whole");
        assert_eq!(records[399].value, value(399).into_bytes());
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn only_the_deletion_marker_lets_a_start_remove_a_topic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "gone", 1).await;
    filled_topic(&server, "kept", 1).await;
    server.stop().await;
    // A crash after the marker was written, before anything was removed.
    std::fs::write(dir.path().join("topics/gone/topic.deleting"), b"")?;
    let server = TestServer::start(dir.path()).await;
    let topics = server.admin().await.list_topics(pb::ListTopicsRequest::default()).await?.into_inner().topics;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["kept"]);
    assert!(!dir.path().join("topics/gone").exists());
    assert_eq!(fetch_all(&server, "kept", 0, 0).await.len(), 400);
    server.stop().await;

    // A creation interrupted before its metadata was in place left only the temporary file.
    std::fs::create_dir_all(dir.path().join("topics/half"))?;
    std::fs::write(dir.path().join("topics/half/topic.meta.tmp"), b"version=2\n")?;
    TestServer::start(dir.path()).await.stop().await;
    assert!(!dir.path().join("topics/half").exists(), "nothing but a temporary file: removed");
    // Anything more is data: no metadata and no marker refuses the start and keeps it.
    std::fs::create_dir_all(dir.path().join("topics/orphan"))?;
    std::fs::write(dir.path().join("topics/orphan/0.producers"), b"")?;
    let refused = sluice_server::Server::bind(config(dir.path(), &[])).await.unwrap_err().to_string();
    assert!(refused.contains("topics/orphan/topic.meta"), "{refused}");
    assert!(dir.path().join("topics/orphan/0.producers").exists());
    Ok(())
}

#[tokio::test]
async fn damaged_topic_metadata_is_refused_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "orders", 2).await;
    server.stop().await;
    let meta = dir.path().join("topics/orders/topic.meta");
    let good = std::fs::read(&meta)?;

    let edited = String::from_utf8(good.clone())?.replace("partitions=2", "partitions=1");
    std::fs::write(&meta, edited)?;
    let message = sluice_server::Server::bind(config(dir.path(), &[])).await.unwrap_err().to_string();
    assert!(message.contains("topics/orders/topic.meta") && message.contains("checksum"), "{message}");

    let mut garbage = good.clone();
    garbage[3] = 0xff;
    std::fs::write(&meta, garbage)?;
    let message = sluice_server::Server::bind(config(dir.path(), &[])).await.unwrap_err().to_string();
    assert!(message.contains("topics/orders/topic.meta") && message.contains("UTF-8"), "{message}");

    std::fs::write(&meta, good)?;
    let server = TestServer::start(dir.path()).await;
    assert_eq!(fetch_all(&server, "orders", 1, 0).await.len(), 400, "nothing was lost on the way");
    server.stop().await;
    Ok(())
}

async fn idempotent(server: &TestServer, sequence: u64, tag: &str) -> pb::PartitionAppend {
    let records = (0..5).map(|i| record(None, &format!("{tag}-{i}"))).collect();
    let request = pb::ProduceRequest {
        partition: Some(0),
        producer_id: Some(77),
        first_sequence: sequence,
        ..produce_request("payments", records)
    };
    let response = server.producer().await.produce(request).await.unwrap().into_inner();
    response.appends[0].clone()
}

#[tokio::test]
async fn a_damaged_producer_snapshot_is_rebuilt_from_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "payments", 1, None).await;
    let first = idempotent(&server, 0, "a").await;
    let second = idempotent(&server, 5, "b").await;
    server.stop().await;
    let snapshot = dir.path().join("topics/payments/0.producers");
    let good = std::fs::read_to_string(&snapshot)?;
    assert!(good.contains(&format!("5:5:{}", second.base_offset)), "{good}");

    // A changed digit (the second batch's offset) and bytes that are not text.
    let edited = good.replace(&format!("5:5:{}", second.base_offset), &format!("5:5:{}", second.base_offset + 1));
    for damaged in [edited.into_bytes(), vec![0xff, 0xfe, 0x00, 0x80]] {
        std::fs::write(&snapshot, damaged)?;
        let server = TestServer::start(dir.path()).await;
        let retried = idempotent(&server, 5, "b").await;
        assert!(retried.duplicate, "the retry is recognised");
        assert_eq!(retried.base_offset, second.base_offset, "with its original offsets");
        assert_eq!(idempotent(&server, 0, "a").await.base_offset, first.base_offset);
        server.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_segment_is_named_and_reads_around_it_work() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "ledger", 1).await;
    server.stop().await;
    let partition = partition_dir(dir.path(), "ledger", 0);
    let bases = segment_bases(&partition);
    assert!(bases.len() >= 4, "{bases:?}");
    let (lost, next) = (bases[1], bases[2]);
    for extension in ["log", "index", "timeindex"] {
        std::fs::remove_file(segment_file(&partition, lost, extension))?;
    }

    let server = TestServer::start(dir.path()).await;
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "ledger".into() }).await?;
    let damaged = &described.into_inner().partitions[0].damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!((damaged[0].from_offset, damaged[0].to_offset), (lost, next));

    let mut consumer = server.consumer().await;
    let before = consumer.fetch(fetch("ledger", 0, 0, 16 << 20)).await?.into_inner();
    assert_eq!(before.next_offset, lost, "everything before the gap");
    let status = status_of(consumer.fetch(fetch("ledger", 0, lost, 0)).await);
    assert_eq!(status.code(), tonic::Code::DataLoss);
    let message = status.message();
    assert!(message.contains("ledger/0") && message.contains(&format!("{lost}..{next}")), "{message}");
    assert!(!message.contains(dir.path().to_str().unwrap()), "no broker paths: {message}");
    let after = fetch_all(&server, "ledger", 0, next).await;
    assert_eq!(after.len() as u64, 400 - next);

    let (status_line, body) = server.http_get("/readyz").await;
    assert!(status_line.contains("200"), "{status_line}");
    assert!(body.contains("degraded") && body.contains(&format!("ledger/0 offsets {lost}..{next} missing")), "{body}");
    let (_, metrics) = server.http_get("/metrics").await;
    let line = format!("sluice_partition_damaged_offsets{{topic=\"ledger\",partition=\"0\"}} {}", next - lost);
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_batch_is_data_loss_after_the_intact_records_before_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "ledger", 1).await;
    server.stop().await;
    let partition = partition_dir(dir.path(), "ledger", 0);
    let segment = segment_bases(&partition)[1];
    let path = segment_file(&partition, segment, "log");
    let (position, damaged) = second_batch(&path, segment);
    let mut bytes = std::fs::read(&path)?;
    bytes[position + 500] ^= 0x20;
    std::fs::write(&path, bytes)?;

    let server = TestServer::start(dir.path()).await;
    let mut consumer = server.consumer().await;
    // A read whose budget reaches the bad batch returns the intact records before it.
    let before = consumer.fetch(fetch("ledger", 0, segment, 16 << 20)).await?.into_inner();
    assert_eq!(before.next_offset, damaged);
    assert_eq!(before.records.last().map(|r| r.value.clone()), Some(value(damaged - 1).into_bytes().into()));
    let status = status_of(consumer.fetch(fetch("ledger", 0, damaged, 0)).await);
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(
        status.message().contains(&format!("ledger/0: offsets {damaged}..{}", damaged + 10)),
        "{}",
        status.message()
    );
    assert_eq!(status.metadata().get("sluice-reason").unwrap(), "DATA_LOSS");
    let after = fetch_all(&server, "ledger", 0, damaged + 10).await;
    assert_eq!(after.len() as u64, 400 - damaged - 10, "everything after the damaged batch");

    // A subscription gets every intact record up to the damage, then DATA_LOSS.
    let start = pb::StartPosition { position: Some(pb::start_position::Position::Offset(0)) };
    let request = pb::SubscribeRequest { topic: "ledger".into(), partition: 0, start: Some(start), max_bytes: 0 };
    let mut stream = consumer.subscribe(request).await?.into_inner();
    let mut received = 0u64;
    let end = loop {
        match stream.next().await {
            Some(Ok(message)) => received += message.records.len() as u64,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(received, damaged);
    assert_eq!(end.code(), tonic::Code::DataLoss);

    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "ledger".into() }).await?;
    let damage = &described.into_inner().partitions[0].damaged;
    assert_eq!(damage.iter().map(|d| (d.from_offset, d.to_offset)).collect::<Vec<_>>(), [(damaged, damaged + 10)]);
    server.stop().await;
    Ok(())
}

fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn verify_reports_damage_without_changing_a_byte() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "ledger", 2).await;
    server.stop().await;
    let data_dir = dir.path().to_str().unwrap();

    let clean = sluice_server(&["verify", "--data-dir", data_dir]);
    let text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{text}");
    assert!(text.contains("ledger/0: ") && text.contains("400 records: ok") && text.contains("0 damaged"), "{text}");

    let partition = partition_dir(dir.path(), "ledger", 1);
    let segment = segment_bases(&partition)[1];
    let path = segment_file(&partition, segment, "log");
    let (position, damaged) = second_batch(&path, segment);
    let mut bytes = std::fs::read(&path)?;
    bytes[position + 300] ^= 1;
    std::fs::write(&path, bytes)?;
    let before = snapshot_files(dir.path());

    let out = sluice_server(&["verify", "--data-dir", data_dir]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected =
        format!("DAMAGE topics/ledger/1/{segment:020}.log at byte {position}: damaged batch at offset {damaged}");
    assert!(text.contains(&expected), "{expected} in\n{text}");
    assert!(text.contains("ledger/0: ") && text.contains("ledger/1: ") && text.contains("DAMAGED"), "{text}");
    assert_eq!(snapshot_files(dir.path()), before, "verify changed nothing");
    Ok(())
}

fn metric(metrics: &str, name: &str) -> u64 {
    let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn what_recovery_did_is_shown_after_an_unclean_stop_and_not_after_a_clean_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "ledger", 2).await;
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let (_, metrics) = server.http_get("/metrics").await;
    assert_eq!(metric(&metrics, "sluice_recovery_unclean_partitions"), 0, "a clean stop needs no recovery");
    assert_eq!(metric(&metrics, "sluice_recovery_tails_cut"), 0);
    server.stop().await;

    // What a crash leaves: no clean-shutdown marker, a torn batch at the end, a lost index.
    let partition = partition_dir(dir.path(), "ledger", 0);
    std::fs::remove_file(partition.join("clean-shutdown"))?;
    let bases = segment_bases(&partition);
    let active = segment_file(&partition, *bases.last().unwrap(), "log");
    let mut bytes = std::fs::read(&active)?;
    bytes.extend_from_slice(&[7u8; 100]);
    std::fs::write(&active, bytes)?;
    std::fs::remove_file(segment_file(&partition, bases[0], "index"))?;

    let server = TestServer::start(dir.path()).await;
    let (_, metrics) = server.http_get("/metrics").await;
    assert_eq!(metric(&metrics, "sluice_recovery_unclean_partitions"), 1);
    assert_eq!(metric(&metrics, "sluice_recovery_tails_cut"), 1);
    assert_eq!(metric(&metrics, "sluice_recovery_cut_bytes"), 100);
    assert_eq!(metric(&metrics, "sluice_recovery_indexes_rebuilt"), 1);
    assert!(metric(&metrics, "sluice_recovery_scanned_bytes") > 0);
    assert_eq!(fetch_all(&server, "ledger", 0, 0).await.len(), 400, "the torn tail held no record");
    server.stop().await;
    Ok(())
}
