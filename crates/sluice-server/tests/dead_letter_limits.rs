//! Dead letters that do not fit one request, and one that cannot be written at all.

mod common;

use std::time::Duration;

use common::member::{JoinOptions, Member, offsets};
use common::*;
use sluice_proto::v1 as pb;

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    server.admin().await.describe_group(pb::DescribeGroupRequest { group: group.into() }).await.unwrap().into_inner()
}

/// Receives `count` records and nacks them all, not retryable, in one Nack.
async fn nack_all(member: &mut Member, count: usize) {
    let mut held = Vec::new();
    let mut generation = 0;
    while held.len() < count {
        let records = member.next_records().await;
        generation = records.generation;
        held.extend(offsets(&records));
    }
    let nack = pb::Nack {
        topic: "media".into(),
        partition: 0,
        generation,
        offsets: held,
        reason: "cannot transcode".into(),
        retryable: Some(false),
        ..pb::Nack::default()
    };
    member.send(pb::consume_request::Request::Nack(nack)).await;
}

#[tokio::test]
async fn twenty_large_records_nacked_at_once_are_dead_lettered_in_requests_that_fit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(dir.path(), &[("SLUICE_GROUPS_MAX_IN_FLIGHT_BYTES", "64MiB")])).await;
    create_topic(&server, "media", 1, None).await;
    let big = "v".repeat(1_000_000);
    for _ in 0..2 {
        let records = (0..10).map(|_| record(None, &big)).collect();
        server.producer().await.produce(produce_request("media", records)).await?;
    }
    let mut member = Member::join(&server, "encoders", &["media"], "m", JoinOptions::default()).await;
    nack_all(&mut member, 20).await;
    // 20 MB of copies: more than one 16 MiB request holds.
    eventually("all 20 dead-lettered", || async { describe(&server, "encoders").await.dead_letter_depth == 20 }).await;
    let d = describe(&server, "encoders").await;
    assert_eq!((d.dead_letters_failing, d.partitions[0].committed_offset), (0, 20));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_is_shown_and_retried_with_backoff() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "media", 1, None).await;
    // A dead-letter topic whose records must be small: the copy below can never fit it.
    let tiny = pb::TopicConfig { max_message_bytes: Some(1024), ..pb::TopicConfig::default() };
    create_topic(&server, "media.dlq", 1, Some(tiny)).await;
    server.producer().await.produce(produce_request("media", vec![record(None, &"v".repeat(10_000))])).await?;
    let mut member = Member::join(&server, "encoders", &["media"], "m", JoinOptions::default()).await;
    nack_all(&mut member, 1).await;
    eventually("the failure shown", || async { describe(&server, "encoders").await.dead_letters_failing == 1 }).await;
    let d = describe(&server, "encoders").await;
    assert!(d.dead_letter_error.contains("max_message_bytes"), "{}", d.dead_letter_error);
    assert_eq!((d.dead_letter_depth, d.partitions[0].committed_offset), (0, 0), "the record is not done");
    // Retried with backoff, not in a loop: a few tries in 3 s, not hundreds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = describe(&server, "encoders").await.dead_letter_failures;
    assert!((1..=4).contains(&tries), "{tries} tries in 3 s");
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(metrics.contains("sluice_group_dead_letters_failing{group=\"encoders\"} 1"), "{metrics}");

    // Once the dead-letter topic takes it, the next try writes it.
    let roomy = pb::TopicConfig { max_message_bytes: Some(1 << 20), ..pb::TopicConfig::default() };
    let alter = pb::AlterTopicConfigRequest { name: "media.dlq".into(), config: Some(roomy) };
    server.admin().await.alter_topic_config(alter).await?;
    eventually("written on a later try", || async {
        let d = describe(&server, "encoders").await;
        d.dead_letter_depth == 1 && d.dead_letters_failing == 0 && d.partitions[0].committed_offset == 1
    })
    .await;
    server.stop().await;
    Ok(())
}
