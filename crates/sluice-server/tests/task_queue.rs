//! Groups as task queues: shared delivery, group policy that lives with the group, dead
//! letters kept in a journal, dead-lettering across restarts, and lease notices.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::member::{Event, JoinOptions, Member, offsets};
use common::*;
use sluice_proto::v1 as pb;

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    server.admin().await.describe_group(pb::DescribeGroupRequest { group: group.into() }).await.unwrap().into_inner()
}

fn shared(max_in_flight_records: u32) -> JoinOptions {
    JoinOptions { delivery: pb::Delivery::Shared as i32, max_in_flight_records, ..JoinOptions::default() }
}

async fn produce(server: &TestServer, topic: &str, count: usize) {
    let records = (0..count).map(|i| record(None, &format!("task-{i}"))).collect();
    server.producer().await.produce(produce_request(topic, records)).await.unwrap();
}

#[tokio::test]
async fn shared_delivery_spreads_one_partition_over_every_member_and_no_record_goes_to_two() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "emails", 1, None).await;
    produce(&server, "emails", 60).await;
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(Member::join(&server, "mailers", &["emails"], name, shared(5)).await);
    }
    // Each member holds at most 5 unacked records; every one of them gets work from the one
    // partition, and an offset is never held by two members at once.
    let mut done: BTreeSet<u64> = BTreeSet::new();
    let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
    while done.len() < 60 {
        for member in &mut members {
            let records = member.next_records().await;
            let got = offsets(&records);
            for offset in &got {
                assert!(done.insert(*offset), "offset {offset} delivered twice");
            }
            *per_member.entry(member.name.clone()).or_default() += got.len();
            member.ack_all(&records).await;
            if done.len() == 60 {
                break;
            }
        }
    }
    assert_eq!(per_member.len(), 3, "every member got records: {per_member:?}");
    assert!(members.iter().all(|m| m.owned.len() == 1), "each member lists the shared partition");
    eventually("all acked", || async { describe(&server, "mailers").await.partitions[0].committed_offset == 60 }).await;
    let d = describe(&server, "mailers").await;
    assert_eq!(d.config.map(|c| c.delivery), Some(pb::Delivery::Shared as i32));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_shared_record_whose_lease_expires_goes_to_another_member_and_the_late_ack_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "thumbs", 1, None).await;
    produce(&server, "thumbs", 1).await;
    let options = JoinOptions { ack_timeout_ms: 2_000, backoff_initial_ms: 100, max_lease_expiries: 1000, ..shared(1) };
    let mut slow = Member::join(&server, "render", &["thumbs"], "slow", options).await;
    let first = slow.next_records().await;
    assert_eq!(offsets(&first), vec![0]);
    let mut quick = Member::join(&server, "render", &["thumbs"], "quick", shared(1)).await;
    // The slow member never acks: after its ack timeout the record goes to the group again,
    // and to the other member first, which has room.
    let again = loop {
        tokio::select! {
            _ = slow.next() => {}
            records = quick.next_records() => {
                if offsets(&records) == vec![0] {
                    break records;
                }
            }
        }
    };
    assert!(again.records[0].delivery_attempt >= 2);
    assert!(slow.expired.iter().all(|e| e.reason == pb::LeaseEndReason::AckTimeout as i32));
    assert!(!slow.expired.is_empty(), "the slow member was told its lease ended");
    // The record is the quick member's now: the slow member's late ack is refused.
    slow.ack_all(&first).await;
    while slow.refusals.is_empty() {
        slow.next().await;
    }
    assert_eq!(slow.refusals[0].reason, pb::AckRefusalReason::LeasedToOther as i32);
    quick.ack_all(&again).await;
    eventually("acked by the holder", || async {
        describe(&server, "render").await.partitions[0].committed_offset == 1
    })
    .await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn policy_lives_with_the_group_and_a_join_asking_for_another_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "orders", 2, None).await;
    let config = pb::GroupConfig { ack_timeout_ms: Some(5_000), max_delivery_attempts: Some(3), ..Default::default() };
    let created = server
        .admin()
        .await
        .create_group(pb::CreateGroupRequest { group: "billing".into(), config: Some(config) })
        .await?
        .into_inner();
    assert_eq!(created.config.as_ref().and_then(|c| c.ack_timeout_ms), Some(5_000));
    let again =
        server.admin().await.create_group(pb::CreateGroupRequest { group: "billing".into(), config: None }).await;
    assert_eq!(again.map(|_| ()).unwrap_err().code(), tonic::Code::AlreadyExists);

    // Joining with no policy, or with the group's own values, works; another value is refused.
    let plain = Member::join(&server, "billing", &["orders"], "plain", JoinOptions::default()).await;
    let same = JoinOptions { ack_timeout_ms: 5_000, ..JoinOptions::default() };
    let agreeing = Member::join(&server, "billing", &["orders"], "agreeing", same).await;
    let other = JoinOptions { ack_timeout_ms: 60_000, ..JoinOptions::default() };
    let refused = Member::try_join(&server, "billing", &["orders"], "other", other).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.metadata().get("sluice-reason").unwrap(), "POLICY_CONFLICT");
    assert!(refused.message().contains("ack_timeout: the group has 5000ms, the join asks for 60000ms"), "{refused:?}");
    assert_eq!(describe(&server, "billing").await.ack_timeout_ms, 5_000, "the refused join changed nothing");

    // The delivery mode changes only without members; other fields change at once.
    let to_shared = pb::GroupConfig { delivery: pb::Delivery::Shared as i32, ..Default::default() };
    let alter = |config| pb::AlterGroupConfigRequest { group: "billing".into(), config: Some(config) };
    let busy = server.admin().await.alter_group_config(alter(to_shared.clone())).await.map(|_| ()).unwrap_err();
    assert_eq!(busy.code(), tonic::Code::FailedPrecondition);
    let longer = pb::GroupConfig { ack_timeout_ms: Some(60_000), ..Default::default() };
    let altered = server.admin().await.alter_group_config(alter(longer)).await?.into_inner();
    let config = altered.config.unwrap_or_default();
    assert_eq!((config.ack_timeout_ms, config.max_delivery_attempts), (Some(60_000), Some(3)), "only what was set");
    drop((plain, agreeing));
    eventually("members gone", || async { describe(&server, "billing").await.members.is_empty() }).await;
    server.admin().await.alter_group_config(alter(to_shared)).await?;
    let strict = pb::GroupConfig { ordering: pb::Ordering::Strict as i32, ..Default::default() };
    let bad = server.admin().await.alter_group_config(alter(strict)).await.map(|_| ()).unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "strict ordering and shared delivery do not go together");

    // The policy survives a restart.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let config = describe(&server, "billing").await.config.unwrap_or_default();
    assert_eq!((config.delivery, config.ack_timeout_ms), (pb::Delivery::Shared as i32, Some(60_000)));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn dead_letters_live_in_a_journal_so_the_group_file_does_not_grow_with_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce(&server, "jobs", 300).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let mut nacked = 0;
    while nacked < 300 {
        let records = member.next_records().await;
        for offset in offsets(&records) {
            member.nack("jobs", 0, records.generation, offset, "poison", false).await;
            nacked += 1;
        }
    }
    eventually("all dead-lettered", || async { describe(&server, "workers").await.dead_letter_depth == 300 }).await;
    eventually("flushed", || async {
        let d = describe(&server, "workers").await;
        // The journal is appended first, then the group file is written.
        d.partitions[0].committed_offset == 300
            && std::fs::metadata(dir.path().join("groups/workers.deadletters")).is_ok_and(|m| m.len() > 300 * 40)
            && dir.path().join("groups/workers.group").exists()
    })
    .await;
    let group_file = std::fs::metadata(dir.path().join("groups/workers.group"))?.len();
    assert!(group_file < 512, "the group file holds no dead letters: {group_file} bytes");

    // A redrive is journaled; after a restart the depth and the redriven record are there.
    let redrive = pb::RedriveDeadLettersRequest {
        topic: "jobs.dlq".into(),
        group: "workers".into(),
        selection: Some(pb::redrive_dead_letters_request::Selection::Range(pb::DeadLetterRange {
            partition: 0,
            first: 0,
            last: 9,
        })),
    };
    let redriven = server.admin().await.redrive_dead_letters(redrive).await?.into_inner();
    assert_eq!(redriven.redriven, 10);
    drop(member);
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    assert_eq!(describe(&server, "workers").await.dead_letter_depth, 290);
    let mut member = Member::join(&server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let mut again = BTreeSet::new();
    while again.len() < 10 {
        let records = member.next_records().await;
        again.extend(offsets(&records));
        member.ack_all(&records).await;
    }
    assert_eq!(again, (0..10).collect::<BTreeSet<u64>>(), "the redriven records, from the source topic");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_record_being_dead_lettered_at_a_restart_is_not_delivered_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "media", 1, None).await;
    // The copy can never fit this dead-letter topic, so it stays "being dead-lettered".
    let tiny = pb::TopicConfig { max_message_bytes: Some(1024), ..pb::TopicConfig::default() };
    create_topic(&server, "media.dlq", 1, Some(tiny)).await;
    produce_large(&server).await;
    let mut member = Member::join(&server, "encoders", &["media"], "m", JoinOptions::default()).await;
    let records = member.next_records().await;
    member.nack("media", 0, records.generation, 0, "cannot transcode", false).await;
    eventually("failing", || async { describe(&server, "encoders").await.dead_letters_failing == 1 }).await;
    drop(member);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut member = Member::join(&server, "encoders", &["media"], "m", JoinOptions::default()).await;
    eventually("still being dead-lettered", || async { describe(&server, "encoders").await.dead_letters_failing == 1 })
        .await;
    // Produce one more record: it is delivered, the poison record is not.
    produce(&server, "media", 1).await;
    let next = member.next_records().await;
    assert_eq!(offsets(&next), vec![1], "the record out of attempts got no new delivery");
    server.stop().await;
    Ok(())
}

async fn produce_large(server: &TestServer) {
    let records = vec![record(None, &"v".repeat(10_000))];
    server.producer().await.produce(produce_request("media", records)).await.unwrap();
}

#[tokio::test]
async fn a_member_is_told_when_a_reset_ends_its_leases() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce(&server, "jobs", 3).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let held = member.next_records().await;
    assert_eq!(offsets(&held), vec![0, 1, 2]);
    let reset = pb::ResetGroupOffsetsRequest {
        group: "workers".into(),
        topic: "jobs".into(),
        force: true,
        target: Some(pb::reset_group_offsets_request::Target::Latest(pb::Latest {})),
        ..Default::default()
    };
    server.admin().await.reset_group_offsets(reset).await?;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Event::LeaseExpired = member.next().await {
                break;
            }
        }
    })
    .await?;
    assert_eq!(member.expired[0].offsets, vec![0, 1, 2]);
    assert_eq!(member.expired[0].reason, pb::LeaseEndReason::OffsetsReset as i32);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_damaged_dead_letter_journal_entry_costs_only_that_entry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce(&server, "jobs", 3).await;
    let mut member = Member::join(&server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let records = member.next_records().await;
    for offset in offsets(&records) {
        member.nack("jobs", 0, records.generation, offset, "poison", false).await;
    }
    eventually("dead-lettered", || async { describe(&server, "workers").await.dead_letter_depth == 3 }).await;
    drop(member);
    server.stop().await;

    // Flip a byte inside the second entry (the header is 5 bytes; entries are the same size).
    let path = dir.path().join("groups/workers.deadletters");
    let mut bytes = std::fs::read(&path)?;
    let entry = (bytes.len() - 5) / 3;
    bytes[5 + entry + 20] ^= 0x55;
    std::fs::write(&path, &bytes)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(["verify", "--data-dir", dir.path().to_str().unwrap_or_default()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("damaged dead-letter journal entry at byte {}", 5 + entry)), "{text}");

    let server = TestServer::start(dir.path()).await;
    let d = describe(&server, "workers").await;
    assert_eq!((d.dead_letter_depth, d.partitions[0].committed_offset), (2, 3), "one dead letter lost, no record");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn redriving_more_dead_letters_than_one_chunk_redrives_them_all_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    for _ in 0..12 {
        produce(&server, "jobs", 1000).await;
    }
    let options = JoinOptions { max_in_flight_records: 5000, ..JoinOptions::default() };
    let mut member = Member::join(&server, "workers", &["jobs"], "m", options).await;
    let mut nacked = 0;
    while nacked < 12_000 {
        let records = member.next_records().await;
        let got = offsets(&records);
        let nack = pb::Nack {
            topic: "jobs".into(),
            partition: 0,
            generation: records.generation,
            ranges: vec![pb::OffsetRange { first: got[0], last: got[got.len() - 1] }],
            reason: "poison".into(),
            retryable: Some(false),
            ..pb::Nack::default()
        };
        nacked += got.len();
        member.send(pb::consume_request::Request::Nack(nack)).await;
    }
    eventually("all dead-lettered", || async { describe(&server, "workers").await.dead_letter_depth == 12_000 }).await;
    member.close();
    let all = pb::RedriveDeadLettersRequest {
        topic: "jobs.dlq".into(),
        group: "workers".into(),
        selection: Some(pb::redrive_dead_letters_request::Selection::All(pb::AllDeadLetters {})),
    };
    let redriven = server.admin().await.redrive_dead_letters(all.clone()).await?.into_inner();
    assert_eq!(redriven.redriven, 12_000, "every chunk of the selection");
    assert_eq!(describe(&server, "workers").await.dead_letter_depth, 0);
    let again = server.admin().await.redrive_dead_letters(all).await?.into_inner();
    assert_eq!(again.redriven, 0, "each dead letter is redriven once");
    server.stop().await;
    Ok(())
}
