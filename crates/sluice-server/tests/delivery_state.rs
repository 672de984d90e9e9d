//! A group's delivery state survives a restart: redriven records, attempt counts and backoff
//! deadlines, so a restart neither loses a redrive nor grants a poison record new attempts or
//! an early retry.

mod common;

use std::time::{Duration, Instant};

use common::member::{JoinOptions, Member, offsets};
use common::*;
use sluice_proto::v1 as pb;

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    server.admin().await.describe_group(pb::DescribeGroupRequest { group: group.into() }).await.unwrap().into_inner()
}

async fn produce_values(server: &TestServer, topic: &str, count: u64) {
    let records = (0..count).map(|i| record(None, &format!("job-{i}"))).collect();
    server.producer().await.produce(produce_request(topic, records)).await.unwrap();
}

fn policy(max_attempts: u32) -> JoinOptions {
    JoinOptions {
        max_delivery_attempts: max_attempts,
        backoff_initial_ms: 10,
        backoff_multiplier: 1.0,
        ..JoinOptions::default()
    }
}

/// The next delivery of `offset`, acking every other record delivered on the way.
async fn next_delivery_of(member: &mut Member, offset: u64) -> (pb::GroupRecords, u32) {
    loop {
        let records = member.next_records().await;
        let mut found = None;
        for r in &records.records {
            let at = r.record.as_ref().unwrap().offset;
            if at == offset {
                found = Some(r.delivery_attempt);
            } else {
                member.ack(&records.topic, records.partition, records.generation, vec![at]).await;
            }
        }
        if let Some(attempt) = found {
            return (records, attempt);
        }
    }
}

#[tokio::test]
async fn a_redrive_above_the_committed_offset_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce_values(&server, "jobs", 10).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", policy(5)).await;
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let records = member.next_records().await;
        for at in offsets(&records) {
            seen.push(at);
            match at {
                3 => {} // left in flight: the committed offset stays at 3
                5 => member.nack("jobs", 0, records.generation, 5, "poison", false).await,
                _ => member.ack("jobs", 0, records.generation, vec![at]).await,
            }
        }
    }
    eventually("offset 5 dead-lettered", || async { describe(&server, "workers").await.dead_letter_depth == 1 }).await;
    member.close();
    drop(member);
    eventually("the member gone", || async { describe(&server, "workers").await.members.is_empty() }).await;
    let redrive = pb::RedriveDeadLettersRequest {
        topic: "jobs.dlq".into(),
        group: "workers".into(),
        selection: Some(pb::redrive_dead_letters_request::Selection::All(pb::AllDeadLetters {})),
    };
    assert_eq!(server.admin().await.redrive_dead_letters(redrive).await?.into_inner().redriven, 1);
    assert_eq!(describe(&server, "workers").await.partitions[0].committed_offset, 3);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", policy(5)).await;
    let mut again = Vec::new();
    while !(again.contains(&3) && again.contains(&5)) {
        let records = member.next_records().await;
        member.ack_all(&records).await;
        again.extend(offsets(&records));
    }
    again.sort_unstable();
    assert_eq!(again, vec![3, 5], "the unacked record and the redriven one, nothing else");
    eventually("everything done", || async { describe(&server, "workers").await.partitions[0].committed_offset == 10 })
        .await;
    server.stop().await;
    Ok(())
}

/// The attempts the group file on disk records for `offset` of partition 0, if any.
fn attempts_on_disk(data_dir: &std::path::Path, group: &str, offset: u64) -> Option<u32> {
    let bytes = std::fs::read(data_dir.join("groups").join(format!("{group}.group"))).ok()?;
    let snapshot =
        sluice_core::group::snapshot::decode(&bytes, &sluice_core::GroupDefaults::default().settings()).ok()?;
    snapshot.partitions.first()?.attempts.iter().find(|(o, _)| *o == offset).map(|(_, a)| *a)
}

#[tokio::test]
async fn a_quiet_group_keeps_its_attempt_counts_across_kill_9() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "50ms")];
    let mut broker = common::process::spawn_broker(dir.path(), &env);
    create_topic(&broker.server, "jobs", 1, None).await;
    produce_values(&broker.server, "jobs", 1).await;
    let mut member = Member::join(&broker.server, "workers", &["jobs"], "m", policy(4)).await;
    for expected in 1..=2 {
        let (records, attempt) = next_delivery_of(&mut member, 0).await;
        assert_eq!(attempt, expected);
        member.nack("jobs", 0, records.generation, 0, "flaky", true).await;
    }
    // Nothing is acked: only deliveries and nacks changed the group, and they are flushed.
    let (_, attempt) = next_delivery_of(&mut member, 0).await;
    assert_eq!(attempt, 3);
    eventually("the third delivery on disk", || async { attempts_on_disk(dir.path(), "workers", 0) == Some(3) }).await;
    broker.child.kill()?;
    broker.child.wait()?;
    drop(member);

    let broker = common::process::spawn_broker(dir.path(), &env);
    let mut member = Member::join(&broker.server, "workers", &["jobs"], "m", policy(4)).await;
    let (records, attempt) = next_delivery_of(&mut member, 0).await;
    assert_eq!(attempt, 4, "the crash granted no new attempts");
    member.nack("jobs", 0, records.generation, 0, "flaky", true).await;
    let depth = || async { describe(&broker.server, "workers").await.dead_letter_depth == 1 };
    eventually("dead-lettered after its last attempt", depth).await;
    Ok(())
}

#[tokio::test]
async fn a_backoff_deadline_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce_values(&server, "jobs", 1).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", policy(5)).await;
    let (records, _) = next_delivery_of(&mut member, 0).await;
    let backoff = Duration::from_secs(4);
    let nack = pb::Nack {
        topic: "jobs".into(),
        partition: 0,
        generation: records.generation,
        offsets: vec![0],
        reason: "try later".into(),
        retryable: Some(true),
        delay_ms: Some(backoff.as_millis() as u32),
        ..pb::Nack::default()
    };
    let nacked_at = Instant::now();
    member.send(pb::consume_request::Request::Nack(nack)).await;
    eventually("the nack applied", || async { describe(&server, "workers").await.partitions[0].in_flight == 0 }).await;
    member.close();
    drop(member);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", policy(5)).await;
    let (_, attempt) = next_delivery_of(&mut member, 0).await;
    let waited = nacked_at.elapsed();
    assert!(waited >= backoff - Duration::from_millis(500), "delivered {waited:?} after a {backoff:?} backoff");
    assert_eq!(attempt, 2);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_ack_receipt_means_the_acks_survive_kill_9() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "50ms")];
    let mut broker = common::process::spawn_broker(dir.path(), &env);
    create_topic(&broker.server, "jobs", 1, None).await;
    produce_values(&broker.server, "jobs", 10).await;
    let options = JoinOptions { ack_receipts: true, ..JoinOptions::default() };
    let mut member = Member::join(&broker.server, "workers", &["jobs"], "m", options).await;
    let mut acked = 0;
    while acked < 10 {
        let records = member.next_records().await;
        member.ack_all(&records).await;
        acked += records.records.len();
    }
    // The receipt comes once the group file holds the acks.
    let confirmed = |member: &Member| {
        member.receipts.iter().flat_map(|r| &r.committed).any(|c| c.topic == "jobs" && c.committed_offset == 10)
    };
    while !confirmed(&member) {
        member.next().await;
    }
    broker.child.kill()?;
    broker.child.wait()?;
    drop(member);

    let broker = common::process::spawn_broker(dir.path(), &env);
    assert_eq!(
        describe(&broker.server, "workers").await.partitions[0].committed_offset,
        10,
        "receipted acks are durable"
    );
    Ok(())
}
