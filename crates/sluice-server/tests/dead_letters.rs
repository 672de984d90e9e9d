//! Failures over real Consume streams: nack and backoff, attempt limits, dead-letter topics
//! with provenance, strict ordering, per-group failures, inspection and redrive.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::member::{JoinOptions, Member, offsets};
use common::*;
use sluice_proto::v1 as pb;

fn header<'a>(record: &'a pb::Record, name: &str) -> Option<&'a str> {
    record.headers.iter().find(|h| h.name == name).and_then(|h| std::str::from_utf8(&h.value).ok())
}

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    server.admin().await.describe_group(pb::DescribeGroupRequest { group: group.into() }).await.unwrap().into_inner()
}

async fn committed(server: &TestServer, group: &str) -> u64 {
    describe(server, group).await.partitions.first().map_or(0, |p| p.committed_offset)
}

async fn dead_letters(server: &TestServer, topic: &str) -> Vec<pb::Record> {
    let exists = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: topic.into() }).await.is_ok();
    if exists { fetch_all(server, topic, 0, 0).await } else { Vec::new() }
}

async fn produce_values(server: &TestServer, topic: &str, values: &[&str]) {
    let records = values.iter().map(|v| record(Some("k"), v)).collect();
    server.producer().await.produce(produce_request(topic, records)).await.unwrap();
}

fn policy(max_attempts: u32, backoff_ms: u32) -> JoinOptions {
    JoinOptions {
        max_delivery_attempts: max_attempts,
        backoff_initial_ms: backoff_ms,
        backoff_multiplier: 2.0,
        ..JoinOptions::default()
    }
}

#[tokio::test]
async fn a_poison_record_is_retried_with_growing_backoff_then_dead_lettered_with_its_provenance() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "payments", 1, None).await;
    let mut poison = record(Some("order-7"), "poison");
    poison.timestamp_ms = Some(1_700_000_000_000);
    poison.headers = vec![pb::Header { name: "event-type".into(), value: b"payment.requested".to_vec().into() }];
    server.producer().await.produce(produce_request("payments", vec![poison.clone()])).await?;
    let mut member = Member::join(&server, "billing", &["payments"], "m", policy(4, 100)).await;
    let mut poison_deliveries: Vec<(u32, Instant)> = Vec::new();
    let mut later_acked_before_last_attempt = 0;
    let mut produced_more = false;
    while poison_deliveries.len() < 4 || later_acked_before_last_attempt < 5 {
        let delivery = member.next_records().await;
        for r in &delivery.records {
            let offset = r.record.as_ref().unwrap().offset;
            if offset == 0 {
                poison_deliveries.push((r.delivery_attempt, Instant::now()));
                let reason = format!("card declined (attempt {})", r.delivery_attempt);
                member.nack("payments", 0, delivery.generation, 0, &reason, true).await;
            } else {
                member.ack("payments", 0, delivery.generation, vec![offset]).await;
                if poison_deliveries.len() < 4 {
                    later_acked_before_last_attempt += 1;
                }
            }
        }
        if !produced_more {
            // Later records arrive while the poison record waits for its retries.
            produce_values(&server, "payments", &["a", "b", "c", "d", "e"]).await;
            produced_more = true;
        }
    }
    let attempts: Vec<u32> = poison_deliveries.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4], "delivered exactly max-attempts times");
    let gaps: Vec<Duration> = poison_deliveries.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for (gap, expected_ms) in gaps.iter().zip([100u64, 200, 400]) {
        let expected = Duration::from_millis(expected_ms);
        assert!(*gap >= expected.mul_f64(0.85), "gap {gap:?} shorter than the backoff {expected:?}");
        assert!(*gap <= expected.mul_f64(1.1) + Duration::from_millis(250), "gap {gap:?} far over {expected:?}");
    }
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "gaps grow: {gaps:?}");
    assert_eq!(later_acked_before_last_attempt, 5, "later records flowed during the retries");

    eventually("committed passes the poison record", || async { committed(&server, "billing").await == 6 }).await;
    let dlq = dead_letters(&server, "payments.dlq").await;
    assert_eq!(dlq.len(), 1);
    let copy = &dlq[0];
    assert_eq!(
        (copy.key.as_ref(), &copy.value, copy.timestamp_ms),
        (poison.key.as_ref(), &poison.value, poison.timestamp_ms)
    );
    assert_eq!(header(copy, "event-type"), Some("payment.requested"), "original headers kept");
    assert_eq!(header(copy, "__dlq.errors.topic"), Some("payments"));
    assert_eq!(header(copy, "__dlq.errors.partition"), Some("0"));
    assert_eq!(header(copy, "__dlq.errors.offset"), Some("0"));
    assert_eq!(header(copy, "__dlq.errors.group"), Some("billing"));
    assert_eq!(header(copy, "__dlq.errors.delivery.count"), Some("4"));
    assert_eq!(header(copy, "__dlq.errors.message"), Some("card declined (attempt 4)"));
    let first: i64 = header(copy, "__dlq.errors.first.failure.ms").unwrap().parse()?;
    let last: i64 = header(copy, "__dlq.errors.last.failure.ms").unwrap().parse()?;
    assert!(last - first >= 600, "first and last failures span the retries: {first}..{last}");

    let listed = server
        .admin()
        .await
        .list_dead_letters(pb::ListDeadLettersRequest { topic: "payments.dlq".into(), ..Default::default() })
        .await?
        .into_inner();
    assert_eq!(listed.depth, 1);
    let entry = &listed.dead_letters[0];
    assert_eq!((entry.source_topic.as_str(), entry.source_offset, entry.group.as_str()), ("payments", 0, "billing"));
    assert_eq!((entry.delivery_count, entry.redriven), (4, false));
    let d = describe(&server, "billing").await;
    assert_eq!((d.dead_letter_depth, d.dead_lettered, d.nacks), (1, 1, 4));
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(metrics.contains("sluice_group_dead_letter_depth{group=\"billing\"} 1"), "{metrics}");
    assert!(metrics.contains("sluice_group_dead_lettered_total{group=\"billing\",topic=\"payments\"} 1"), "{metrics}");
    assert!(metrics.contains("sluice_group_dead_letter_oldest_seconds{group=\"billing\"}"), "{metrics}");
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn strict_ordering_holds_back_later_records_while_one_waits_for_redelivery() -> TestResult {
    for strict in [true, false] {
        let dir = tempfile::tempdir()?;
        let server = TestServer::start(dir.path()).await;
        create_topic(&server, "ledger", 1, None).await;
        produce_values(&server, "ledger", &["first"]).await;
        let options = JoinOptions { strict, ..policy(5, 300) };
        let mut member = Member::join(&server, "bookkeeping", &["ledger"], "m", options).await;
        let delivery = member.next_records().await;
        assert_eq!(offsets(&delivery), vec![0]);
        member.nack("ledger", 0, delivery.generation, 0, "database busy", true).await;
        produce_values(&server, "ledger", &["second", "third"]).await;
        let next = member.next_records().await;
        if strict {
            assert_eq!(offsets(&next), vec![0], "strict: the failed record comes back before anything later");
            assert_eq!(next.records[0].delivery_attempt, 2);
            member.ack_all(&next).await;
            assert_eq!(offsets(&member.next_records().await), vec![1, 2]);
        } else {
            assert_eq!(offsets(&next), vec![1, 2], "relaxed: later records pass the waiting one");
        }
        member.close();
        server.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_non_retryable_nack_dead_letters_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "emails", 1, None).await;
    produce_values(&server, "emails", &["malformed", "fine"]).await;
    let mut member = Member::join(&server, "sender", &["emails"], "m", policy(5, 1000)).await;
    let delivery = member.next_records().await;
    member.nack("emails", 0, delivery.generation, 0, "schema v3 unsupported", false).await;
    member.ack("emails", 0, delivery.generation, vec![1]).await;
    eventually("dead-lettered", || async { dead_letters(&server, "emails.dlq").await.len() == 1 }).await;
    let copy = &dead_letters(&server, "emails.dlq").await[0];
    assert_eq!(header(copy, "__dlq.errors.delivery.count"), Some("1"));
    assert_eq!(header(copy, "__dlq.errors.message"), Some("schema v3 unsupported"));
    eventually("committed past it", || async { committed(&server, "sender").await == 2 }).await;
    assert_eq!(describe(&server, "sender").await.redeliveries, 0, "never delivered again");
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn failures_are_per_group_and_a_redrive_reaches_only_its_group_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "orders", 1, None).await;
    produce_values(&server, "orders", &["o1", "o2"]).await;
    let mut billing = Member::join(&server, "billing", &["orders"], "b", policy(5, 100)).await;
    let mut email = Member::join(&server, "email", &["orders"], "e", policy(5, 100)).await;
    let delivery = billing.next_records().await;
    billing.nack("orders", 0, delivery.generation, 0, "billing bug", false).await;
    billing.ack("orders", 0, delivery.generation, vec![1]).await;
    let mut email_seen: BTreeMap<u64, u32> = BTreeMap::new();
    let delivery = email.next_records().await;
    for offset in offsets(&delivery) {
        *email_seen.entry(offset).or_default() += 1;
    }
    email.ack_all(&delivery).await;
    eventually("billing dead-lettered o1", || async { committed(&server, "billing").await == 2 }).await;
    eventually("email done", || async { committed(&server, "email").await == 2 }).await;
    let dlq = dead_letters(&server, "orders.dlq").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "__dlq.errors.group"), Some("billing"));

    // The bug is fixed: redrive billing's dead letters. Only billing sees o1 again, once.
    let mut admin = server.admin().await;
    let all = || pb::RedriveDeadLettersRequest {
        topic: "orders.dlq".into(),
        group: "billing".into(),
        selection: Some(pb::redrive_dead_letters_request::Selection::All(pb::AllDeadLetters {})),
    };
    assert_eq!(admin.redrive_dead_letters(all()).await?.into_inner().redriven, 1);
    let again = billing.next_records().await;
    assert_eq!(offsets(&again), vec![0]);
    assert_eq!(again.records[0].delivery_attempt, 1, "attempt count reset by the redrive");
    billing.ack_all(&again).await;
    assert_eq!(admin.redrive_dead_letters(all()).await?.into_inner().redriven, 0, "not redriven twice");
    let listed = admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            topic: "orders.dlq".into(),
            group: "billing".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!((listed.depth, listed.dead_letters[0].redriven), (0, true));
    eventually("redriven record acked", || async {
        describe(&server, "billing").await.partitions[0].awaiting_redelivery == 0
            && describe(&server, "billing").await.partitions[0].in_flight == 0
    })
    .await;

    // Email never saw o1 a second time: close its stream and read what is left.
    email.close();
    while let Some(event) = email.try_next().await? {
        if let common::member::Event::Records(records) = event {
            for offset in offsets(&records) {
                *email_seen.entry(offset).or_default() += 1;
            }
        }
    }
    assert_eq!(email_seen, BTreeMap::from([(0, 1), (1, 1)]), "email processed each record once");
    billing.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn ack_timeouts_count_as_attempts_and_end_in_the_dead_letter_topic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "reports", 1, None).await;
    produce_values(&server, "reports", &["huge report"]).await;
    let options = JoinOptions { ack_timeout_ms: 200, ..policy(2, 50) };
    let mut member = Member::join(&server, "renderers", &["reports"], "m", options).await;
    let first = member.next_records().await;
    let second = member.next_records().await;
    assert_eq!((first.records[0].delivery_attempt, second.records[0].delivery_attempt), (1, 2));
    eventually("dead-lettered after two timeouts", || async { dead_letters(&server, "reports.dlq").await.len() == 1 })
        .await;
    let copy = &dead_letters(&server, "reports.dlq").await[0];
    assert_eq!(header(copy, "__dlq.errors.delivery.count"), Some("2"));
    assert!(header(copy, "__dlq.errors.message").unwrap().contains("ack timeout"), "{copy:?}");
    eventually("committed past it", || async { committed(&server, "renderers").await == 1 }).await;
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_nack_for_records_the_member_does_not_hold_is_refused_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "tasks", 2, None).await;
    let mut request = produce_request("tasks", vec![record(None, "t0"), record(None, "t1")]);
    request.partition = Some(0);
    server.producer().await.produce(request).await?;
    let mut member = Member::join(&server, "g", &["tasks"], "m", policy(1, 100)).await;
    let delivery = member.next_records().await;
    assert_eq!(offsets(&delivery), vec![0, 1]);
    member.ack("tasks", 0, delivery.generation, vec![0]).await;
    let generation = delivery.generation;
    for (partition, offset) in [(0, 7), (0, 0), (5, 0)] {
        member.nack("tasks", partition, generation, offset, "nope", false).await;
    }
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        if let common::member::Event::Refused = member.next().await {
            let refused = member.refusals.last().unwrap();
            reasons.push((refused.partition, refused.range.unwrap().first, refused.reason));
        }
    }
    let not_delivered = pb::AckRefusalReason::NotDelivered as i32;
    assert_eq!(
        reasons,
        vec![(0, 7, not_delivered), (0, 0, not_delivered), (5, 0, pb::AckRefusalReason::NotOwner as i32)],
        "never delivered, already acked, not owned"
    );
    let d = describe(&server, "g").await;
    assert_eq!((d.nacks, d.dead_lettered), (0, 0), "nothing changed");
    assert!(dead_letters(&server, "tasks.dlq").await.is_empty());
    member.ack("tasks", 0, generation, vec![1]).await;
    eventually("the held record is still the member's to ack", || async { committed(&server, "g").await == 2 }).await;
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_topic_sets_the_attempt_limit_and_dead_letter_topic_its_groups_default_to() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    let config = pb::TopicConfig {
        max_delivery_attempts: Some(2),
        dead_letter_topic: Some("shipments-failed".into()),
        ..Default::default()
    };
    create_topic(&server, "shipments", 1, Some(config)).await;
    produce_values(&server, "shipments", &["lost parcel"]).await;
    let options = JoinOptions { backoff_initial_ms: 20, ..JoinOptions::default() };
    let mut member = Member::join(&server, "tracking", &["shipments"], "m", options).await;
    for attempt in 1..=2 {
        let delivery = member.next_records().await;
        assert_eq!(delivery.records[0].delivery_attempt, attempt);
        member.nack("shipments", 0, delivery.generation, 0, "carrier down", true).await;
    }
    eventually("dead-lettered after the topic's 2 attempts", || async {
        dead_letters(&server, "shipments-failed").await.len() == 1
    })
    .await;
    assert!(dead_letters(&server, "shipments.dlq").await.is_empty(), "the topic's dead-letter topic wins");
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "shipments".into() }).await?;
    let config = described.into_inner().topic.unwrap().config.unwrap();
    assert_eq!(
        (config.max_delivery_attempts, config.dead_letter_topic.as_deref()),
        (Some(2), Some("shipments-failed"))
    );
    member.close();
    server.stop().await;

    // The topic's settings survive a restart.
    let server = TestServer::start(dir.path()).await;
    let described = server.admin().await.describe_topic(pb::DescribeTopicRequest { name: "shipments".into() }).await?;
    assert_eq!(described.into_inner().topic.unwrap().config.unwrap().max_delivery_attempts, Some(2));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn dead_letters_that_retention_deletes_leave_the_depth_and_the_group_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_MAINTENANCE_RETENTION_CHECK_INTERVAL", "20ms"), ("SLUICE_GROUPS_COMMIT_INTERVAL", "50ms")];
    let server = TestServer::start_with(config(dir.path(), &env)).await;
    create_topic(&server, "logs", 1, None).await;
    // The dead-letter topic exists already, with small segments and a minute of retention.
    create_topic(&server, "logs.dlq", 1, Some(short_retention_config())).await;
    produce_old_records(&server, "logs").await;
    let mut member = Member::join(&server, "archiver", &["logs"], "m", policy(1, 100)).await;
    let mut failed = 0;
    while failed < 400 {
        let delivery = member.next_records().await;
        let nack = pb::Nack {
            topic: "logs".into(),
            partition: 0,
            generation: delivery.generation,
            offsets: offsets(&delivery),
            reason: "unreadable".into(),
            retryable: Some(false),
            ..pb::Nack::default()
        };
        failed += nack.offsets.len();
        member.send(pb::consume_request::Request::Nack(nack)).await;
    }
    eventually("all dead-lettered", || async { committed(&server, "archiver").await == 400 }).await;
    // The copies keep their 1970 timestamps, so retention deletes every closed dead-letter segment.
    eventually("depth shrinks with retention", || async {
        let depth = describe(&server, "archiver").await.dead_letter_depth;
        depth > 0 && depth < 400
    })
    .await;
    let listed = server
        .admin()
        .await
        .list_dead_letters(pb::ListDeadLettersRequest { topic: "logs.dlq".into(), limit: 1000, ..Default::default() })
        .await?
        .into_inner();
    assert_eq!(listed.depth as usize, listed.dead_letters.len(), "depth counts only records still there");
    // The dead-letter journal forgets them too (what its entries leave live).
    let file = dir.path().join("groups").join("archiver.deadletters");
    eventually("the journal forgets them too", || async {
        use sluice_core::group::journal::{Change, parse};
        let bytes = std::fs::read(&file).unwrap_or_default();
        parse(&bytes).is_ok_and(|journal| {
            let mut live = std::collections::BTreeSet::new();
            for entry in journal.entries {
                match entry.change {
                    Change::Added => live.insert(entry.key),
                    Change::Redriven | Change::Discarded => live.remove(&entry.key),
                };
            }
            live.len() == listed.dead_letters.len()
        })
    })
    .await;
    member.close();
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn delivery_attempts_survive_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "imports", 1, None).await;
    produce_values(&server, "imports", &["huge file"]).await;
    let options = JoinOptions { ack_timeout_ms: 200, ..policy(3, 20) };
    let mut member = Member::join(&server, "importers", &["imports"], "m", options.clone()).await;
    for attempt in 1..=2 {
        assert_eq!(member.next_records().await.records[0].delivery_attempt, attempt);
    }
    member.close();
    drop(member);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut member = Member::join(&server, "importers", &["imports"], "m", options).await;
    assert_eq!(member.next_records().await.records[0].delivery_attempt, 3, "the count goes on after the restart");
    eventually("dead-lettered after its third attempt", || async {
        dead_letters(&server, "imports.dlq").await.len() == 1
    })
    .await;
    assert_eq!(header(&dead_letters(&server, "imports.dlq").await[0], "__dlq.errors.delivery.count"), Some("3"));
    member.close();
    server.stop().await;
    Ok(())
}
