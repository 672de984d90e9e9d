//! The broker over real gRPC: produce, fetch, subscribe, idempotence, retention, restarts and
//! every bad input's status.

mod common;

use std::collections::HashMap;

use common::*;
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn produced_records_come_back_intact_and_keys_stick_to_partitions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "orders", 4, None).await;
    let mut producer = server.producer().await;
    let mut sent = Vec::new();
    for i in 0..40 {
        let mut rec = record(Some(&format!("customer-{}", i % 7)), &format!("order-{i}"));
        rec.headers = vec![
            pb::Header { name: "correlation-id".into(), value: format!("c{i}").into_bytes().into() },
            pb::Header { name: "event-type".into(), value: b"order.placed".to_vec().into() },
        ];
        rec.timestamp_ms = Some(1_700_000_000_000 + i);
        sent.push(rec.clone());
        let response = producer.produce(produce_request("orders", vec![rec])).await?.into_inner();
        assert_eq!(response.appends.len(), 1);
    }
    let unkeyed = (0..10).map(|i| record(None, &format!("note-{i}"))).collect();
    let response = producer.produce(produce_request("orders", unkeyed)).await?.into_inner();
    assert_eq!(response.appends.len(), 1, "unkeyed records of one request stick to one partition");
    assert_eq!(response.appends[0].record_count, 10);

    let mut partition_of_key: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut received = Vec::new();
    for partition in 0..4 {
        for rec in fetch_all(&server, "orders", partition, 0).await {
            assert_eq!(rec.partition, partition);
            if let Some(key) = &rec.key {
                let first = *partition_of_key.entry(key.to_vec()).or_insert(partition);
                assert_eq!(first, partition, "one key, one partition");
                received.push(rec);
            }
        }
    }
    assert_eq!(received.len(), 40);
    for rec in &received {
        let original = sent.iter().find(|s| s.value == rec.value).unwrap();
        assert_eq!(rec.key, original.key);
        assert_eq!(rec.headers, original.headers);
        assert_eq!(rec.timestamp_ms, original.timestamp_ms);
    }
    // Per-key order holds.
    let key0: Vec<_> = received.iter().filter(|r| r.key.as_deref() == Some(b"customer-0".as_slice())).collect();
    assert!(key0.windows(2).all(|w| w[0].offset < w[1].offset && w[0].timestamp_ms < w[1].timestamp_ms));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_idempotent_retry_is_not_written_twice_even_after_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "payments", 2, None).await;
    let request = |seq: u64, values: &[&str]| pb::ProduceRequest {
        topic: "payments".into(),
        partition: Some(1),
        records: values.iter().map(|v| record(None, v)).collect(),
        producer_id: Some(0xfeed),
        first_sequence: seq,
        ..pb::ProduceRequest::default()
    };
    let mut producer = server.producer().await;
    let first = producer.produce(request(0, &["a", "b"])).await?.into_inner();
    let retry = producer.produce(request(0, &["a", "b"])).await?.into_inner();
    assert!(!first.appends[0].duplicate && retry.appends[0].duplicate);
    assert_eq!(retry.appends[0].base_offset, first.appends[0].base_offset);
    producer.produce(request(2, &["c"])).await?;
    let gap = producer.produce(request(9, &["x"])).await.unwrap_err();
    assert_eq!(gap.code(), Code::FailedPrecondition, "{gap:?}");
    assert!(gap.message().contains("expected 3"), "{}", gap.message());
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut producer = server.producer().await;
    let after_restart = producer.produce(request(2, &["c"])).await?.into_inner();
    assert!(after_restart.appends[0].duplicate, "the producer table is rebuilt from the log");
    assert_eq!(after_restart.appends[0].base_offset, 2);
    let values: Vec<_> = fetch_all(&server, "payments", 1, 0).await.into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    server.stop().await;
    Ok(())
}

/// Sends `requests` on one new ProduceStream without waiting, then reads every answer.
async fn stream_all(server: &TestServer, requests: Vec<pb::ProduceRequest>) -> Vec<pb::ProduceResponse> {
    let count = requests.len();
    let mut producer = server.producer().await;
    let mut answers = producer.produce_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.push(answers.next().await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn a_producer_that_resends_a_whole_stream_in_flight_gets_every_original_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "payments", 1, None).await;
    let batch = |i: u64| pb::ProduceRequest {
        request_id: i,
        producer_id: Some(7),
        first_sequence: i * 5,
        partition: Some(0),
        ..produce_request("payments", (0..5).map(|j| record(None, &format!("p-{i}-{j}"))).collect())
    };
    // As many requests as one stream may have in flight, then the stream is lost and all of
    // them are sent again on a new one.
    let first = stream_all(&server, (0..32).map(batch).collect()).await;
    let resent = stream_all(&server, (0..32).map(batch).collect()).await;
    for (original, retry) in first.iter().zip(&resent) {
        assert_eq!(retry.error, None, "{retry:?}");
        assert!(retry.appends[0].duplicate, "{retry:?}");
        assert_eq!(retry.appends[0].base_offset, original.appends[0].base_offset);
    }
    assert_eq!(fetch_all(&server, "payments", 0, 0).await.len(), 32 * 5, "nothing written twice");

    // Written long ago (past the 64 remembered batches): refused as such, not as a gap.
    stream_all(&server, (32..80).map(batch).collect()).await;
    let old = server.producer().await.produce(batch(0)).await.unwrap_err();
    assert_eq!(old.code(), Code::AlreadyExists, "{old:?}");
    assert_eq!(old.metadata().get("sluice-reason").unwrap(), "DUPLICATE_SEQUENCE_OUTSIDE_WINDOW");
    let gap = server.producer().await.produce(batch(90)).await.unwrap_err();
    assert_eq!(gap.metadata().get("sluice-reason").unwrap(), "OUT_OF_ORDER_SEQUENCE", "a real gap keeps its code");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_waiting_fetch_wakes_when_records_are_appended() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "events", 1, None).await;
    let mut consumer = server.consumer().await;
    let waiting = tokio::spawn(async move {
        consumer
            .fetch(pb::FetchRequest {
                topic: "events".into(),
                partition: 0,
                offset: 0,
                max_bytes: 0,
                max_wait_ms: 60_000,
                timestamp_ms: None,
            })
            .await
    });
    let mut producer = server.producer().await;
    producer.produce(produce_request("events", vec![record(None, "wake up")])).await?;
    let response = waiting.await??.into_inner();
    assert_eq!(response.records.len(), 1, "the fetch returned the new record, not an empty timeout");
    assert_eq!(response.end_offset, 1);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn subscribe_follows_new_records_and_can_start_at_a_timestamp() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "clicks", 1, None).await;
    let mut producer = server.producer().await;
    let batch =
        (0..10).map(|i| pb::Record { timestamp_ms: Some(1000 * i), ..record(None, &format!("v{i}")) }).collect();
    producer.produce(produce_request("clicks", batch)).await?;
    let start = pb::StartPosition { position: Some(pb::start_position::Position::TimestampMs(4500)) };
    let mut stream = server
        .consumer()
        .await
        .subscribe(pb::SubscribeRequest { topic: "clicks".into(), partition: 0, start: Some(start), max_bytes: 0 })
        .await?
        .into_inner();
    let first = stream.next().await.unwrap()?;
    assert_eq!(first.records[0].offset, 5, "first record at or after 4500 ms");
    assert_eq!(first.records.len(), 5);
    producer.produce(produce_request("clicks", vec![record(None, "live")])).await?;
    let live = stream.next().await.unwrap()?;
    assert_eq!(live.records[0].value, b"live".to_vec());
    assert_eq!(live.records[0].offset, 10);
    let at = |timestamp_ms| pb::FetchRequest {
        topic: "clicks".into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        timestamp_ms: Some(timestamp_ms),
    };
    let fetched = server.consumer().await.fetch(at(4500)).await?.into_inner();
    assert_eq!(fetched.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (5..=10).collect::<Vec<_>>());
    let live_ts = fetched.records[5].timestamp_ms.unwrap();
    let past_all = server.consumer().await.fetch(at(live_ts + 1)).await?.into_inner();
    assert!(past_all.records.is_empty(), "no record is that new");
    assert_eq!(past_all.next_offset, 11, "reading goes on at the end");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn produce_stream_acknowledges_every_pipelined_request_by_id() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "firehose", 3, None).await;
    let requests: Vec<pb::ProduceRequest> = (0..50u64)
        .map(|id| pb::ProduceRequest {
            request_id: id,
            ..produce_request("firehose", (0..20).map(|i| record(Some(&format!("k{i}")), "x")).collect())
        })
        .collect();
    let mut bad = produce_request("firehose", vec![record(None, "y")]);
    bad.request_id = 999;
    bad.partition = Some(7);
    let all: Vec<_> = requests.into_iter().chain([bad]).collect();
    let mut responses = server.producer().await.produce_stream(tokio_stream::iter(all)).await?.into_inner();
    let mut ids = Vec::new();
    let mut records = 0;
    while let Some(response) = responses.next().await {
        let response = response?;
        if response.request_id == 999 {
            let error = response.error.expect("a bad request fails alone");
            assert_eq!(error.code, Code::InvalidArgument as i32);
        } else {
            records += response.appends.iter().map(|a| a.record_count).sum::<u32>();
        }
        ids.push(response.request_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..50).chain([999]).collect::<Vec<_>>());
    assert_eq!(records, 1000);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_keeps_a_keys_records_in_the_order_they_were_sent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "ledger", 4, None).await;
    // 300 requests of one keyed record each, all sent before any is acknowledged.
    let requests: Vec<pb::ProduceRequest> = (0..300u64)
        .map(|id| pb::ProduceRequest {
            request_id: id,
            ..produce_request("ledger", vec![record(Some("account-7"), &id.to_string())])
        })
        .collect();
    let mut responses = server.producer().await.produce_stream(tokio_stream::iter(requests)).await?.into_inner();
    let mut placed = Vec::new();
    while let Some(response) = responses.next().await {
        let response = response?;
        placed.push((response.request_id, response.appends[0].partition, response.appends[0].base_offset));
    }
    placed.sort_unstable();
    let partition = placed[0].1;
    assert!(placed.iter().all(|p| p.1 == partition), "one key, one partition");
    let offsets: Vec<u64> = placed.iter().map(|p| p.2).collect();
    assert_eq!(offsets, (0..300).collect::<Vec<_>>(), "request n got offset n: appended in the order sent");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn retention_deletes_old_segments_and_reads_below_start_are_out_of_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &[("SLUICE_MAINTENANCE_RETENTION_CHECK_INTERVAL", "20ms")]);
    let server = TestServer::start_with(config).await;
    create_topic(&server, "logs", 1, Some(short_retention_config())).await;
    produce_old_records(&server, "logs").await;
    let mut admin = server.admin().await;
    // Poll (bounded) until retention has run.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let start = loop {
        let d = admin.describe_topic(pb::DescribeTopicRequest { name: "logs".into() }).await?.into_inner();
        if d.partitions[0].segments == 1 {
            break d.partitions[0].start_offset;
        }
        assert!(tokio::time::Instant::now() < deadline, "retention never deleted a segment");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(start > 0, "the log start moved past the deleted segments");
    let err = server
        .consumer()
        .await
        .fetch(pb::FetchRequest {
            topic: "logs".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            timestamp_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains(&format!("{start}..400")), "{}", err.message());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_restart_keeps_topics_configs_and_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    let config = pb::TopicConfig { fsync: pb::FsyncPolicy::Never as i32, ..pb::TopicConfig::default() };
    create_topic(&server, "audit", 3, Some(config)).await;
    let mut producer = server.producer().await;
    for i in 0..30 {
        producer.produce(produce_request("audit", vec![record(Some(&format!("k{i}")), &format!("v{i}"))])).await?;
    }
    let before: Vec<_> = futures_all(&server, "audit", 3).await;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let topics = server.admin().await.list_topics(pb::ListTopicsRequest {}).await?.into_inner().topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].partitions, 3);
    assert_eq!(topics[0].config.as_ref().unwrap().fsync, pb::FsyncPolicy::Never as i32);
    assert_eq!(futures_all(&server, "audit", 3).await, before);
    server.stop().await;
    Ok(())
}

async fn futures_all(server: &TestServer, topic: &str, partitions: u32) -> Vec<pb::Record> {
    let mut all = Vec::new();
    for p in 0..partitions {
        all.extend(fetch_all(server, topic, p, 0).await);
    }
    all
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_never_a_panic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &[("SLUICE_LIMITS_MAX_REQUEST_BYTES", "64KiB")]);
    let server = TestServer::start_with(config).await;
    let small = pb::TopicConfig { max_message_bytes: Some(1024), ..pb::TopicConfig::default() };
    create_topic(&server, "t", 2, Some(small)).await;
    let mut admin = server.admin().await;
    let mut producer = server.producer().await;
    let mut consumer = server.consumer().await;
    let create = |name: &str, partitions| pb::CreateTopicRequest { name: name.into(), partitions, config: None };

    let exists = admin.create_topic(create("t", 1)).await.unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);
    for name in ["", "../escape", "a/b", ".."] {
        let bad = admin.create_topic(create(name, 1)).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{name:?}: {bad:?}");
    }
    assert_eq!(admin.create_topic(create("zero", 0)).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        admin.delete_topic(pb::DeleteTopicRequest { name: "nope".into() }).await.unwrap_err().code(),
        Code::NotFound
    );

    let unknown = producer.produce(produce_request("nope", vec![record(None, "x")])).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("nope"));
    assert_eq!(unknown.metadata().get("sluice-reason").unwrap(), "TOPIC_NOT_FOUND");

    let mut bad_partition = produce_request("t", vec![record(None, "x")]);
    bad_partition.partition = Some(2);
    let err = producer.produce(bad_partition).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("0..2"), "{}", err.message());

    let err = producer.produce(produce_request("t", vec![record(None, &"x".repeat(2000))])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("1024"), "names the limit: {}", err.message());

    let many = (0..100).map(|_| record(None, &"x".repeat(1000))).collect();
    let err = producer.produce(produce_request("t", many)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("65536"), "names the limit: {}", err.message());

    let err = producer.produce(produce_request("t", vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut no_partition = produce_request("t", vec![record(None, "x")]);
    no_partition.producer_id = Some(5);
    assert_eq!(producer.produce(no_partition).await.unwrap_err().code(), Code::InvalidArgument);

    let fetch = |partition, offset| pb::FetchRequest {
        topic: "t".into(),
        partition,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
        timestamp_ms: None,
    };
    assert_eq!(consumer.fetch(fetch(9, 0)).await.unwrap_err().code(), Code::InvalidArgument);
    let err = consumer.fetch(fetch(0, 5)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("0..0"), "{}", err.message());

    // The broker is still healthy after all that.
    producer.produce(produce_request("t", vec![record(None, "fine")])).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_invalid_config_change_changes_nothing_not_even_its_valid_parts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "inventory", 1, None).await;
    let mut admin = server.admin().await;
    let retention = Some(3_600_000);
    let bad_changes = [
        pb::TopicConfig { retention_ms: retention, fsync: 99, ..pb::TopicConfig::default() },
        pb::TopicConfig {
            retention_ms: retention,
            fsync: pb::FsyncPolicy::Interval as i32,
            ..pb::TopicConfig::default()
        },
        pb::TopicConfig { retention_ms: retention, segment_bytes: Some(10), ..pb::TopicConfig::default() },
    ];
    for change in bad_changes {
        let request = pb::AlterTopicConfigRequest { name: "inventory".into(), config: Some(change.clone()) };
        let status = admin.alter_topic_config(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{change:?}: {status:?}");
        let described = admin.describe_topic(pb::DescribeTopicRequest { name: "inventory".into() }).await?;
        let config = described.into_inner().topic.unwrap().config.unwrap();
        assert_eq!(config.retention_ms, Some(7 * 24 * 3_600_000), "{change:?} changed the retention");
    }
    server.stop().await;
    // Nor on disk.
    let server = TestServer::start(dir.path()).await;
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "inventory".into() }).await?;
    assert_eq!(described.into_inner().topic.unwrap().config.unwrap().retention_ms, Some(7 * 24 * 3_600_000));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn admin_describes_alters_grows_and_deletes_topics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "inventory", 2, None).await;
    let mut admin = server.admin().await;
    let retention = pb::TopicConfig { retention_ms: Some(3_600_000), ..pb::TopicConfig::default() };
    let altered = admin
        .alter_topic_config(pb::AlterTopicConfigRequest { name: "inventory".into(), config: Some(retention) })
        .await?
        .into_inner();
    assert_eq!(altered.topic.unwrap().config.unwrap().retention_ms, Some(3_600_000));
    let grown = admin.add_partitions(pb::AddPartitionsRequest { name: "inventory".into(), partitions: 5 }).await?;
    assert_eq!(grown.into_inner().topic.unwrap().partitions, 5);
    let shrink = admin.add_partitions(pb::AddPartitionsRequest { name: "inventory".into(), partitions: 3 }).await;
    assert_eq!(shrink.unwrap_err().code(), Code::InvalidArgument);
    server.producer().await.produce(produce_request("inventory", vec![record(None, "x")])).await?;
    let described = admin.describe_topic(pb::DescribeTopicRequest { name: "inventory".into() }).await?.into_inner();
    assert_eq!(described.partitions.len(), 5);
    assert_eq!(described.partitions.iter().map(|p| p.end_offset).sum::<u64>(), 1);
    let info = admin.broker_info(pb::BrokerInfoRequest {}).await?.into_inner();
    assert_eq!(info.topics, 1);
    assert_eq!(info.listen_address, server.grpc.to_string());
    admin.delete_topic(pb::DeleteTopicRequest { name: "inventory".into() }).await?;
    assert!(admin.list_topics(pb::ListTopicsRequest {}).await?.into_inner().topics.is_empty());
    assert!(!dir.path().join("topics/inventory").exists(), "data removed");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn metrics_health_and_reflection_are_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "m", 1, None).await;
    server.producer().await.produce(produce_request("m", vec![record(None, "x"), record(None, "y")])).await?;
    let mut admin = server.admin().await;
    admin.describe_topic(pb::DescribeTopicRequest { name: "m".into() }).await?;
    admin.list_topics(pb::ListTopicsRequest {}).await?;
    let (status, body) = server.http_get("/metrics").await;
    for method in ["CreateTopic", "Produce", "DescribeTopic", "ListTopics"] {
        let line = format!(r#"sluice_rpc_total{{method="{method}",code="Ok"}} 1"#);
        assert!(body.contains(&line), "every RPC is counted: {line} missing from\n{body}");
    }
    assert!(status.contains("200"), "{status}");
    assert!(body.contains(r#"sluice_records_in_total{topic="m"} 2"#), "{body}");
    assert!(body.contains(r#"sluice_partition_log_reads_total{topic="m",partition="0"} 0"#), "{body}");
    assert!(body.contains("sluice_rpc_duration_seconds"), "{body}");
    assert!(body.contains("sluice_connections"), "{body}");
    assert!(server.http_get("/healthz").await.0.contains("200"));
    assert!(server.http_get("/readyz").await.0.contains("200"));

    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let check =
        health.check(tonic_health::pb::HealthCheckRequest { service: "sluice.v1.Producer".into() }).await?.into_inner();
    assert_eq!(check.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses.next().await.unwrap()?.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["sluice.v1.Admin", "sluice.v1.Producer", "sluice.v1.Consumer", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    // The older protocol, which grpcio-reflection and older grpcurl builds speak.
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(server.channel().await);
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("sluice.v1.Producer".into())),
        };
        let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) = responses.next().await.unwrap()?.message_response
        else {
            panic!("expected the file declaring sluice.v1.Producer");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_slow_subscriber_does_not_make_the_broker_read_ahead_without_bound() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(
        &server,
        "big",
        1,
        Some(pb::TopicConfig { fsync: pb::FsyncPolicy::Never as i32, ..Default::default() }),
    )
    .await;
    let mut producer = server.producer().await;
    for _ in 0..64 {
        let batch = (0..1000).map(|_| record(None, &"v".repeat(1000))).collect();
        producer.produce(produce_request("big", batch)).await?; // 64 MB in all
    }
    let bytes_out = |body: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with("sluice_bytes_out_total{topic=\"big\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let earliest = pb::StartPosition { position: Some(pb::start_position::Position::Earliest(pb::Earliest {})) };
    let request = pb::SubscribeRequest { topic: "big".into(), partition: 0, start: Some(earliest), max_bytes: 1 << 20 };
    let mut stream = server.consumer().await.subscribe(request).await?.into_inner();
    let first = stream.next().await.unwrap()?;
    assert!(!first.records.is_empty());
    // The subscriber now stops reading. The broker may fill the bounded buffer and the HTTP/2
    // windows, then must stop: its read-out stops growing, far below the 64 MB available.
    let mut last = 0;
    let mut stable = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while stable < 20 {
        let now = bytes_out(&server.http_get("/metrics").await.1);
        if now == last {
            stable += 1
        } else {
            stable = 0
        }
        last = now;
        assert!(tokio::time::Instant::now() < deadline, "read-out never settled (at {last} bytes)");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Measured: ~8 MB (the 8 MiB HTTP/2 stream window plus the message being encoded).
    assert!(last < 16 << 20, "a stalled subscriber made the broker read {last} bytes");
    // It still gets everything, in order, once it reads again.
    let mut next = first.records.last().unwrap().offset + 1;
    while next < 64_000 {
        let message = stream.next().await.unwrap()?;
        assert_eq!(message.records[0].offset, next);
        next = message.records.last().unwrap().offset + 1;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_subscriber_that_cancels_its_stream_is_no_longer_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "s", 1, None).await;
    let in_flight = |body: &str| -> Option<i64> {
        body.lines()
            .find(|l| l.starts_with("sluice_requests_in_flight "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    let mut consumer = server.consumer().await;
    let latest = pb::StartPosition { position: Some(pb::start_position::Position::Latest(pb::Latest {})) };
    let request = pb::SubscribeRequest { topic: "s".into(), partition: 0, start: Some(latest), max_bytes: 0 };
    let mut stream = consumer.subscribe(request).await?.into_inner();
    assert_eq!(in_flight(&server.http_get("/metrics").await.1), Some(1), "the open subscription is served");
    server.producer().await.produce(produce_request("s", vec![record(None, "x")])).await?;
    assert_eq!(stream.next().await.unwrap()?.records.len(), 1);

    // The client cancels the stream while it waits for the next record, and keeps its
    // connection: the broker must drop the subscription, not wait on it forever.
    drop(stream);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_flight(&server.http_get("/metrics").await.1) != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "the cancelled subscription is still served");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(consumer);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn default_responses_fit_a_stock_grpc_clients_4_mib_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "media", 1, None).await;
    // One request of six records of almost 1 MB: stored as one 6 MB batch.
    let big = "m".repeat(1_000_000);
    let records = (0..6).map(|_| record(None, &big)).collect();
    server.producer().await.produce(produce_request("media", records)).await?;
    // The test's clients keep tonic's default 4 MiB receive limit, like grpcio, grpc-java and
    // grpc-go: a larger response would fail to decode.
    let mut consumer = server.consumer().await;
    let (mut offset, mut seen) = (0, 0);
    while offset < 6 {
        let request = pb::FetchRequest {
            topic: "media".into(),
            partition: 0,
            offset,
            max_bytes: 0,
            max_wait_ms: 0,
            timestamp_ms: None,
        };
        let response = consumer.fetch(request).await?.into_inner();
        assert!(!response.records.is_empty());
        seen += response.records.len();
        offset = response.next_offset;
    }
    assert_eq!(seen, 6);
    let start = pb::StartPosition { position: Some(pb::start_position::Position::Offset(0)) };
    let request = pb::SubscribeRequest { topic: "media".into(), partition: 0, start: Some(start), max_bytes: 0 };
    let mut stream = consumer.subscribe(request).await?.into_inner();
    let mut subscribed = 0;
    while subscribed < 6 {
        subscribed += stream.next().await.unwrap()?.records.len();
    }
    let mut member = common::member::Member::join(&server, "g", &["media"], "m", Default::default()).await;
    let mut delivered = 0;
    while delivered < 6 {
        let records = member.next_records().await;
        member.ack_all(&records).await;
        delivered += records.records.len();
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_subscriber_reading_one_large_batch_in_small_responses_reads_it_from_disk_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    // No tail cache: every read not served by the subscription itself goes to the segment file.
    let server = TestServer::start_with(config(dir.path(), &[("SLUICE_LIMITS_TAIL_CACHE_BYTES", "0")])).await;
    create_topic(&server, "bulk", 1, None).await;
    // One request of 64 records of 16 KiB: one 1 MiB batch.
    let values: Vec<String> = (0..64).map(|i| format!("{i:02}").repeat(8 << 10)).collect();
    let records = values.iter().map(|v| record(None, v)).collect();
    server.producer().await.produce(produce_request("bulk", records)).await?;
    let start = pb::StartPosition { position: Some(pb::start_position::Position::Offset(0)) };
    let request = pb::SubscribeRequest { topic: "bulk".into(), partition: 0, start: Some(start), max_bytes: 64 << 10 };
    let mut stream = server.consumer().await.subscribe(request).await?.into_inner();
    let (mut got, mut responses) = (Vec::new(), 0);
    while got.len() < values.len() {
        let response = stream.next().await.unwrap()?;
        assert!(response.records.len() <= 4, "a response stays near its 64 KiB budget");
        got.extend(response.records);
        responses += 1;
    }
    assert!(responses >= 16);
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..64).collect::<Vec<u64>>(), "every record once, in order");
    assert!(got.iter().zip(&values).all(|(r, v)| r.value == v.as_bytes()), "values intact");
    let (_, body) = server.http_get("/metrics").await;
    assert!(
        body.contains(r#"sluice_partition_log_reads_total{topic="bulk",partition="0"} 1"#),
        "the batch is read from disk once, not once per response:\n{body}"
    );
    // Counted once too: the records' stored bytes, not the whole batch per response.
    let sent: u64 = metric(&body, r#"sluice_bytes_out_total{topic="bulk"}"#);
    let values: u64 = values.iter().map(|v| v.len() as u64).sum();
    assert!((values..values + 64 * 64).contains(&sent), "{sent} bytes out for {values} bytes of values");
    server.stop().await;
    Ok(())
}

/// The value of the metric line starting with `name` (labels included).
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{body}"))
}
