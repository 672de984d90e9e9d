//! Consumer groups over real Consume streams: assignment and rebalancing, acks and committed
//! offsets across restarts, redelivery, fencing, lag, and offset resets.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::member::{Event, JoinOptions, Member, Tp, offsets};
use common::*;
use sluice_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::Code;

type Owned = Arc<Mutex<BTreeMap<String, BTreeSet<Tp>>>>;
type Delivered = Arc<Mutex<Vec<(Tp, u64)>>>;

/// Consumes and acks everything until stopped; returns the member (with its assignment history).
async fn work(mut member: Member, owned: Owned, delivered: Delivered, stop: CancellationToken) -> Member {
    loop {
        let event = tokio::select! {
            event = member.try_next() => event,
            () = stop.cancelled() => break,
        };
        match event {
            Ok(Some(Event::Assignment)) => {
                owned.lock().unwrap().insert(member.name.clone(), member.owned.clone());
            }
            Ok(Some(Event::Records(records))) => {
                let tp = (records.topic.clone(), records.partition);
                delivered.lock().unwrap().extend(offsets(&records).into_iter().map(|o| (tp.clone(), o)));
                member.ack_all(&records).await;
            }
            Ok(Some(Event::Refused)) => panic!("refused ack: {:?}", member.refusals),
            Ok(Some(Event::LeaseExpired | Event::Receipt)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    member
}

fn counts(owned: &Owned) -> Vec<usize> {
    let mut counts: Vec<usize> = owned.lock().unwrap().values().map(BTreeSet::len).collect();
    counts.sort_unstable();
    counts
}

async fn produce_keyed(server: &TestServer, topic: &str, from: usize, n: usize) {
    let mut producer = server.producer().await;
    let records = (from..from + n).map(|i| record(Some(&format!("k{}", i % 37)), &format!("v{i}"))).collect();
    producer.produce(produce_request(topic, records)).await.unwrap();
}

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    server.admin().await.describe_group(pb::DescribeGroupRequest { group: group.into() }).await.unwrap().into_inner()
}

async fn fully_acked(server: &TestServer, group: &str, partitions: usize) -> bool {
    let d = describe(server, group).await;
    d.partitions.len() == partitions && d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0)
}

/// For every partition, the generation intervals in which members held it must not overlap.
/// A member's view holds from its generation until its next view; a departed member's last view
/// ends with the last generation it saw (the broker moves its partitions at a later one).
fn assert_no_partition_had_two_owners(members: &[(Member, bool)]) {
    let mut intervals: BTreeMap<Tp, Vec<(u64, u64, String)>> = BTreeMap::new();
    for (member, departed) in members {
        for (i, (generation, owned)) in member.assignments.iter().enumerate() {
            let end = match member.assignments.get(i + 1) {
                Some((next, _)) => *next,
                None if *departed => generation + 1,
                None => u64::MAX,
            };
            for tp in owned {
                intervals.entry(tp.clone()).or_default().push((*generation, end, member.name.clone()));
            }
        }
    }
    for (tp, mut list) in intervals {
        list.sort();
        for pair in list.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{tp:?} owned by two members at once: {pair:?}");
        }
    }
}

#[tokio::test]
async fn members_share_partitions_evenly_rebalance_without_overlap_and_process_each_record_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "orders", 6, None).await;
    produce_keyed(&server, "orders", 0, 300).await;
    let (owned, delivered): (Owned, Delivered) = Default::default();
    let session = JoinOptions { session_timeout_ms: 10_000, ..JoinOptions::default() };
    let start = |name: &'static str| {
        let (owned, delivered, server_stop) = (owned.clone(), delivered.clone(), CancellationToken::new());
        let stop = server_stop.clone();
        let options = session.clone();
        let server = &server;
        async move {
            let member = Member::join(server, "billing", &["orders"], name, options).await;
            (tokio::spawn(work(member, owned, delivered, stop)), server_stop)
        }
    };
    let (a, a_stop) = start("a").await;
    let (b, b_stop) = start("b").await;
    eventually("3/3", || async { counts(&owned) == vec![3, 3] }).await;
    let (c, c_stop) = start("c").await;
    eventually("2/2/2", || async { counts(&owned) == vec![2, 2, 2] }).await;
    produce_keyed(&server, "orders", 300, 300).await;
    eventually("all acked before b leaves", || fully_acked(&server, "billing", 6)).await;

    let dropped_at = std::time::Instant::now();
    b_stop.cancel();
    let mut b = b.await?;
    b.close();
    owned.lock().unwrap().remove("b");
    eventually("3/3 after b left", || async { counts(&owned) == vec![3, 3] }).await;
    assert!(dropped_at.elapsed() < Duration::from_secs(10), "partitions moved within the session timeout");
    produce_keyed(&server, "orders", 600, 300).await;
    eventually("all 900 acked", || fully_acked(&server, "billing", 6)).await;

    a_stop.cancel();
    c_stop.cancel();
    let (a, c) = (a.await?, c.await?);
    let delivered = delivered.lock().unwrap().clone();
    let unique: BTreeSet<(Tp, u64)> = delivered.iter().cloned().collect();
    assert_eq!(delivered.len(), 900, "each record delivered once across the group");
    assert_eq!(unique.len(), 900);
    let mut expected = BTreeSet::new();
    for partition in 0..6 {
        for rec in fetch_all(&server, "orders", partition, 0).await {
            expected.insert((("orders".to_string(), partition), rec.offset));
        }
    }
    assert_eq!(unique, expected, "every record of the topic was delivered");
    assert_no_partition_had_two_owners(&[(a, false), (b, true), (c, false)]);
    server.stop().await;
    Ok(())
}

/// Receives until `n` records have arrived; returns (offset, attempt, generation).
async fn receive(member: &mut Member, n: usize) -> Vec<(u64, u32, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let records = member.next_records().await;
        for r in &records.records {
            got.push((r.record.as_ref().unwrap().offset, r.delivery_attempt, records.generation));
        }
    }
    got
}

#[tokio::test]
async fn out_of_order_acks_commit_the_contiguous_prefix_and_a_restart_skips_acked_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "events", 1, None).await;
    produce_keyed(&server, "events", 0, 10).await;
    let mut member = Member::join(&server, "audit", &["events"], "m", JoinOptions::default()).await;
    let got = receive(&mut member, 10).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let generation = got[0].2;
    member.ack("events", 0, generation, vec![0, 1, 3, 5, 6]).await;
    eventually("committed 2", || async { describe(&server, "audit").await.partitions[0].committed_offset == 2 }).await;
    member.ack("events", 0, generation, vec![2]).await;
    eventually("committed 4", || async { describe(&server, "audit").await.partitions[0].committed_offset == 4 }).await;
    member.close();
    drop(member);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    assert_eq!(describe(&server, "audit").await.partitions[0].committed_offset, 4, "committed offset survived");
    let mut member = Member::join(&server, "audit", &["events"], "m", JoinOptions::default()).await;
    let got = receive(&mut member, 4).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![4, 7, 8, 9], "acked 5 and 6 are skipped");
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn unacked_records_come_back_after_the_ack_timeout_with_their_attempt_count() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce_keyed(&server, "jobs", 0, 3).await;
    let options = JoinOptions { ack_timeout_ms: 300, backoff_initial_ms: 50, ..JoinOptions::default() };
    let mut member = Member::join(&server, "workers", &["jobs"], "m", options).await;
    let first = receive(&mut member, 3).await;
    assert!(first.iter().all(|&(_, attempt, _)| attempt == 1));
    let mut second = receive(&mut member, 3).await;
    second.sort_unstable();
    assert_eq!(second.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), vec![(0, 2), (1, 2), (2, 2)]);
    let d = describe(&server, "workers").await;
    assert_eq!(d.partitions[0].in_flight, 3);
    assert_eq!(d.partitions[0].committed_offset, 0);
    member.ack_range("jobs", 0, second[0].2, 0, 2).await;
    eventually("acked", || fully_acked(&server, "workers", 1)).await;
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_ack_from_a_member_whose_partition_moved_on_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "tasks", 2, None).await;
    let mut producer = server.producer().await;
    for partition in 0..2 {
        let mut request = produce_request("tasks", vec![record(None, "x"), record(None, "y")]);
        request.partition = Some(partition);
        producer.produce(request).await?;
    }
    let options = JoinOptions {
        ack_timeout_ms: 500,
        session_timeout_ms: 60_000,
        backoff_initial_ms: 50,
        ..JoinOptions::default()
    };
    let mut zombie = Member::join(&server, "g", &["tasks"], "zombie", options.clone()).await;
    let mut old = BTreeMap::new();
    while old.len() < 2 {
        let records = zombie.next_records().await;
        old.insert(records.partition, records);
    }
    // A second member joins: one partition must move, but only once the zombie's records of it
    // time out, since it never acks them.
    let mut fresh = Member::join(&server, "g", &["tasks"], "fresh", options).await;
    let mut moved = fresh.next_records().await;
    while moved.records.len() < 2 {
        let more = fresh.next_records().await;
        assert_eq!(more.partition, moved.partition);
        moved.records.extend(more.records);
    }
    assert_eq!(fresh.owned.len(), 1);
    assert!(moved.records.iter().all(|r| r.delivery_attempt == 2), "redelivered after the old owner's timeout");
    let stale = &old[&moved.partition];
    zombie.ack_all(stale).await;
    loop {
        if let Event::Refused = zombie.next().await {
            break;
        }
    }
    assert_eq!(zombie.refusals[0].reason, pb::AckRefusalReason::NotOwner as i32);
    let d = describe(&server, "g").await;
    let partition = d.partitions.iter().find(|p| p.partition == moved.partition).unwrap();
    assert_eq!(partition.committed_offset, 0, "the zombie's ack did not move the committed offset");
    fresh.ack_all(&moved).await;
    eventually("fresh member's ack counts", || async {
        let d = describe(&server, "g").await;
        d.partitions.iter().any(|p| p.partition == moved.partition && p.committed_offset == 2)
    })
    .await;
    zombie.close();
    fresh.close();
    server.stop().await;
    Ok(())
}

fn metric(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (found, value) = rest.split_once("} ")?;
        (found == labels).then(|| value.trim().parse().ok()).flatten()
    })
}

#[tokio::test]
async fn lag_in_describe_group_and_metrics_is_end_minus_committed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "clicks", 2, None).await;
    let mut producer = server.producer().await;
    let an_hour_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64 - 3_600_000;
    for (partition, n) in [(0u32, 20), (1, 10)] {
        let records = (0..n).map(|i| pb::Record { timestamp_ms: Some(an_hour_ago + i), ..record(None, "c") }).collect();
        let mut request = produce_request("clicks", records);
        request.partition = Some(partition);
        producer.produce(request).await?;
    }
    let options = JoinOptions { max_in_flight_records: 5, ..JoinOptions::default() };
    let mut member = Member::join(&server, "stats", &["clicks"], "m", options).await;
    let mut acked = BTreeMap::new();
    while acked.len() < 2 {
        let records = member.next_records().await;
        if records.partition == 0 && !acked.contains_key(&0) {
            member.ack_all(&records).await;
            acked.insert(0, offsets(&records).len() as u64);
        } else if records.partition == 1 {
            acked.insert(1, 0);
        }
    }
    eventually("lag ages known", || async {
        describe(&server, "stats").await.partitions.iter().all(|p| p.lag_seconds >= 3599.0)
    })
    .await;
    let d = describe(&server, "stats").await;
    let (_, body) = server.http_get("/metrics").await;
    for p in &d.partitions {
        assert_eq!(p.lag, p.end_offset - p.committed_offset);
        let labels = format!("group=\"stats\",topic=\"clicks\",partition=\"{}\"", p.partition);
        assert_eq!(metric(&body, "sluice_group_lag_records", &labels), Some(p.lag as f64), "{body}");
        let age = metric(&body, "sluice_group_lag_seconds", &labels).unwrap();
        assert!(age >= 3599.0, "oldest unacked record is an hour old: {age}");
    }
    assert_eq!(d.partitions[0].committed_offset, acked[&0]);
    assert_eq!(d.partitions[0].lag, 20 - acked[&0]);
    assert_eq!(d.partitions[1].lag, 10);
    assert!(metric(&body, "sluice_group_members", "group=\"stats\"") == Some(1.0), "{body}");
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_reset_to_a_timestamp_starts_the_group_at_the_first_record_at_or_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "ticks", 1, None).await;
    let records = (0..10).map(|i| pb::Record { timestamp_ms: Some(1_000 + i * 10), ..record(None, "t") }).collect();
    server.producer().await.produce(produce_request("ticks", records)).await?;
    let reset = |target, force| pb::ResetGroupOffsetsRequest {
        group: "replay".into(),
        topic: "ticks".into(),
        partitions: vec![],
        target: Some(target),
        force,
    };
    let mut admin = server.admin().await;
    let response =
        admin.reset_group_offsets(reset(pb::reset_group_offsets_request::Target::TimestampMs(1_045), false)).await?;
    assert_eq!(response.into_inner().offsets[0].offset, 5, "first record at or after 1045 ms is offset 5");
    let mut member = Member::join(&server, "replay", &["ticks"], "m", JoinOptions::default()).await;
    let got = receive(&mut member, 5).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![5, 6, 7, 8, 9]);

    let earliest = pb::reset_group_offsets_request::Target::Earliest(pb::Earliest {});
    let refused = admin.reset_group_offsets(reset(earliest, false)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    admin.reset_group_offsets(reset(earliest, true)).await?;
    let again = receive(&mut member, 1).await;
    assert_eq!(again[0].0, 0, "a forced reset rewinds the live member");
    let out_of_range =
        admin.reset_group_offsets(reset(pb::reset_group_offsets_request::Target::Offset(99), true)).await;
    assert_eq!(out_of_range.unwrap_err().code(), Code::OutOfRange);
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn groups_are_listed_and_deleted_and_bad_joins_get_clear_statuses() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "a", 1, None).await;
    let member = Member::join(&server, "g1", &["a"], "m", JoinOptions::default()).await;
    let mut admin = server.admin().await;
    let groups = admin.list_groups(pb::ListGroupsRequest {}).await?.into_inner().groups;
    assert_eq!(groups.iter().map(|g| (g.group.as_str(), g.members)).collect::<Vec<_>>(), vec![("g1", 1)]);
    let busy = admin.delete_group(pb::DeleteGroupRequest { group: "g1".into(), force: false }).await.unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);
    drop(member);
    eventually("member gone", || async { describe(&server, "g1").await.members.is_empty() }).await;
    admin.delete_group(pb::DeleteGroupRequest { group: "g1".into(), force: false }).await?;
    let gone = admin.describe_group(pb::DescribeGroupRequest { group: "g1".into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let join_status = |group: &str, topics: &[&str]| {
        let join = pb::Join {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..pb::Join::default()
        };
        pb::ConsumeRequest { request: Some(pb::consume_request::Request::Join(join)) }
    };
    let mut consumer = server.consumer().await;
    for (request, code) in [
        (join_status("g2", &["missing"]), Code::NotFound),
        (join_status("bad/name", &["a"]), Code::InvalidArgument),
        (join_status("g2", &[]), Code::InvalidArgument),
        (
            pb::ConsumeRequest { request: Some(pb::consume_request::Request::Heartbeat(pb::Heartbeat {})) },
            Code::InvalidArgument,
        ),
    ] {
        let status = consumer.consume(tokio_stream::iter(vec![request])).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_silent_member_is_removed_after_its_session_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "pings", 1, None).await;
    let options = JoinOptions { session_timeout_ms: 300, ..JoinOptions::default() };
    let mut silent = Member::join(&server, "g", &["pings"], "silent", options).await;
    let status = loop {
        match silent.try_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("session timeout"), "{}", status.message());
    assert!(describe(&server, "g").await.members.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_group_whose_position_retention_deleted_resumes_at_the_log_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server =
        TestServer::start_with(config(dir.path(), &[("SLUICE_MAINTENANCE_RETENTION_CHECK_INTERVAL", "20ms")])).await;
    create_topic(&server, "logs", 1, Some(short_retention_config())).await;
    let mut admin = server.admin().await;
    let earliest = pb::reset_group_offsets_request::Target::Earliest(pb::Earliest {});
    let reset = pb::ResetGroupOffsetsRequest {
        group: "archiver".into(),
        topic: "logs".into(),
        partitions: vec![],
        target: Some(earliest),
        force: false,
    };
    admin.reset_group_offsets(reset).await?;
    assert_eq!(describe(&server, "archiver").await.partitions[0].committed_offset, 0);
    produce_old_records(&server, "logs").await;
    let start = Arc::new(Mutex::new(0));
    eventually("retention deleted segments", || async {
        let d = admin.clone().describe_topic(pb::DescribeTopicRequest { name: "logs".into() }).await.unwrap();
        *start.lock().unwrap() = d.get_ref().partitions[0].start_offset;
        d.get_ref().partitions[0].segments == 1
    })
    .await;
    let start = *start.lock().unwrap();
    assert!(start > 0);
    let mut member = Member::join(&server, "archiver", &["logs"], "m", JoinOptions::default()).await;
    let first = member.next_records().await;
    assert_eq!(offsets(&first)[0], start, "delivery resumes at the first retained record");
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn renewing_keeps_a_slow_record_from_being_redelivered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "reports", 1, None).await;
    produce_keyed(&server, "reports", 0, 1).await;
    let options = JoinOptions { ack_timeout_ms: 500, ..JoinOptions::default() };
    let mut member = Member::join(&server, "renderers", &["reports"], "m", options).await;
    let delivery = member.next_records().await;
    assert_eq!(offsets(&delivery), vec![0]);
    // Work for well over two ack timeouts, renewing every 100 ms.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let renew = pb::Renew {
            topic: "reports".into(),
            partition: 0,
            generation: delivery.generation,
            offsets: vec![0],
            ranges: vec![],
        };
        member.send(pb::consume_request::Request::Renew(renew)).await;
    }
    member.ack_all(&delivery).await;
    eventually("acked", || fully_acked(&server, "renderers", 1)).await;
    member.close();
    let mut redelivered = 0;
    while let Some(event) = member.try_next().await? {
        if let Event::Records(records) = event {
            redelivered += records.records.len();
        }
    }
    assert_eq!(redelivered, 0, "the renewed record was never delivered again");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_leave_message_ends_the_session_at_once_with_the_stream_still_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "orders", 2, None).await;
    let mut a = Member::join(&server, "billing", &["orders"], "a", JoinOptions::default()).await;
    a.wait_owned(2).await;
    let mut b = Member::join(&server, "billing", &["orders"], "b", JoinOptions::default()).await;
    // `a` leaves by message; its request stream stays open.
    a.send(pb::consume_request::Request::Leave(pb::Leave {})).await;
    while a.try_next().await?.is_some() {}
    b.wait_owned(2).await;
    let described =
        server.admin().await.describe_group(pb::DescribeGroupRequest { group: "billing".into() }).await?.into_inner();
    assert_eq!(described.members.len(), 1, "{described:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_member_that_never_finishes_its_work_loses_its_partitions_to_one_that_does() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "jobs", 1, None).await;
    produce_keyed(&server, "jobs", 0, 1).await;
    let options = JoinOptions {
        ack_timeout_ms: 300,
        backoff_initial_ms: 20,
        backoff_multiplier: 1.0,
        max_delivery_attempts: 10,
        ..JoinOptions::default()
    };
    let mut stuck = Member::join(&server, "workers", &["jobs"], "stuck", options.clone()).await;
    stuck.wait_owned(1).await;
    let mut idle = Member::join(&server, "workers", &["jobs"], "idle", options).await;
    // The stuck member takes the record, never acks it, and is told when its lease ends; after
    // the third expiry in a row it is removed.
    let end = loop {
        match stuck.try_next().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert_eq!(end.metadata().get("sluice-reason").unwrap(), "NOT_PROCESSING");
    assert!(end.message().contains("3 deliveries"), "{}", end.message());
    // The first two expiries come as LeaseExpired messages; the third is the end of the stream.
    assert_eq!(stuck.expired.len(), 2, "told of each expired lease: {:?}", stuck.expired);
    assert!(stuck.expired.iter().all(|e| e.offsets == [0]));
    // The member that works gets the partition and the record, with its attempt count.
    let records = idle.next_records().await;
    assert_eq!(offsets(&records), vec![0]);
    assert_eq!(records.records[0].delivery_attempt, 4);
    idle.ack_all(&records).await;
    eventually("acked", || fully_acked(&server, "workers", 1)).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_small_window_takes_a_large_batch_in_order_with_every_field_intact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "bulk", 1, None).await;
    // One request, one batch of 500 records; every third carries headers, every fifth a key.
    let sent: Vec<pb::Record> = (0..500)
        .map(|i| pb::Record {
            key: (i % 5 == 0).then(|| format!("k{i}").into_bytes().into()),
            headers: if i % 3 == 0 {
                vec![pb::Header { name: "event-type".into(), value: format!("t{i}").into_bytes().into() }]
            } else {
                Vec::new()
            },
            timestamp_ms: Some(1_000 + i),
            ..record(None, &format!("value {i}"))
        })
        .collect();
    server.producer().await.produce(produce_request("bulk", sent.clone())).await?;
    // Seven at a time: each delivery starts in the middle of the batch the previous one left.
    let options = JoinOptions { max_in_flight_records: 7, ..JoinOptions::default() };
    let mut member = Member::join(&server, "small", &["bulk"], "m", options).await;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let records = member.next_records().await;
        assert!(records.records.len() <= 7);
        member.ack_all(&records).await;
        got.extend(records.records.into_iter().map(|r| r.record.unwrap_or_default()));
    }
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..500).collect::<Vec<u64>>(), "every record once, in order");
    for (got, sent) in got.iter().zip(&sent) {
        assert_eq!(
            (&got.key, &got.value, &got.headers, got.timestamp_ms),
            (&sent.key, &sent.value, &sent.headers, sent.timestamp_ms)
        );
    }
    member.close();
    server.stop().await;
    Ok(())
}
