//! A damaged partition stops only itself: a group member keeps its session and its other
//! partitions, the stall is visible, and a reset (or the group's skip setting) moves past it.
//! A group position past the end of a log that lost its tail moves back to the end.

mod common;

use std::collections::BTreeMap;

use common::damage::*;
use common::member::{JoinOptions, Member, offsets};
use common::*;
use sluice_proto::v1 as pb;

async fn describe(server: &TestServer, group: &str) -> pb::DescribeGroupResponse {
    let request = pb::DescribeGroupRequest { group: group.into() };
    server.admin().await.describe_group(request).await.unwrap().into_inner()
}

/// Consumes and acks until `wanted` records per partition arrived; returns the offsets
/// received per partition.
async fn consume_until(member: &mut Member, wanted: &BTreeMap<u32, u64>) -> BTreeMap<u32, Vec<u64>> {
    let mut got: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    while wanted.iter().any(|(p, n)| got.get(p).map_or(0, |o| o.len() as u64) < *n) {
        let records = member.next_records().await;
        member.ack_all(&records).await;
        got.entry(records.partition).or_default().extend(offsets(&records));
    }
    got
}

#[tokio::test]
async fn a_damaged_partition_stalls_alone_until_the_group_is_reset_past_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "orders", 2).await;
    server.stop().await;
    let damaged = corrupt_second_batch(dir.path(), "orders", 1);

    let server = TestServer::start(dir.path()).await;
    let mut member = Member::join(&server, "billing", &["orders"], "m1", JoinOptions::default()).await;
    let wanted = BTreeMap::from([(0, 400), (1, damaged)]);
    let got = consume_until(&mut member, &wanted).await;
    assert_eq!(got[&0], (0..400).collect::<Vec<u64>>(), "the healthy partition is delivered whole");
    assert_eq!(got[&1], (0..damaged).collect::<Vec<u64>>(), "the damaged one up to the damage");

    // The stall is visible, and the healthy partition's acks were committed.
    eventually("the stall and the commits to show", || async {
        let d = describe(&server, "billing").await;
        let p1 = d.partitions.iter().find(|p| p.partition == 1).and_then(|p| p.stalled.clone());
        let p0 = d.partitions.iter().find(|p| p.partition == 0).map(|p| p.committed_offset);
        p1.is_some_and(|s| s.from_offset == damaged && s.to_offset == damaged + 10) && p0 == Some(400)
    })
    .await;
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(metrics.contains("sluice_group_partition_stalled{group=\"billing\",topic=\"orders\",partition=\"1\"} 1"));

    // The member is still in the group: new records on the healthy partition reach it.
    let mut producer = server.producer().await;
    let request = pb::ProduceRequest { partition: Some(0), ..produce_request("orders", vec![record(None, "fresh")]) };
    producer.produce(request).await?;
    let records = member.next_records().await;
    assert_eq!((records.partition, offsets(&records)), (0, vec![400]));
    member.ack_all(&records).await;

    // An operator moves the group past the damage; delivery goes on from there.
    let reset = pb::ResetGroupOffsetsRequest {
        group: "billing".into(),
        topic: "orders".into(),
        partitions: vec![1],
        target: Some(pb::reset_group_offsets_request::Target::Offset(damaged + 10)),
        force: true,
    };
    server.admin().await.reset_group_offsets(reset).await?;
    let wanted = BTreeMap::from([(1, 400 - damaged - 10)]);
    let got = consume_until(&mut member, &wanted).await;
    assert_eq!(got[&1], (damaged + 10..400).collect::<Vec<u64>>());
    let d = describe(&server, "billing").await;
    assert!(d.partitions.iter().all(|p| p.stalled.is_none()), "{d:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_group_set_to_skip_passes_over_damaged_records_and_counts_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    filled_topic(&server, "orders", 1).await;
    server.stop().await;
    let damaged = corrupt_second_batch(dir.path(), "orders", 0);

    let server = TestServer::start(dir.path()).await;
    let options = JoinOptions { on_damage: pb::OnDamage::Skip as i32, ..JoinOptions::default() };
    let mut member = Member::join(&server, "audit", &["orders"], "m1", options).await;
    let got = consume_until(&mut member, &BTreeMap::from([(0, 390)])).await;
    let expected: Vec<u64> = (0..400).filter(|o| !(damaged..damaged + 10).contains(o)).collect();
    assert_eq!(got[&0], expected, "everything but the damaged batch, in order");
    eventually("the committed offset to pass the damage", || async {
        let d = describe(&server, "audit").await;
        d.partitions[0].committed_offset == 400 && d.damaged_skipped == 10 && d.on_damage == pb::OnDamage::Skip as i32
    })
    .await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_group_position_past_a_cut_log_moves_to_its_end_so_new_records_are_delivered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(dir.path()).await;
    create_topic(&server, "events", 1, None).await;
    let mut producer = server.producer().await;
    for i in 0..10 {
        let records = (0..10).map(|j| record(None, &format!("old-{}", i * 10 + j))).collect();
        producer.produce(produce_request("events", records)).await?;
    }
    let mut member = Member::join(&server, "mailer", &["events"], "m1", JoinOptions::default()).await;
    consume_until(&mut member, &BTreeMap::from([(0, 100)])).await;
    member.close();
    eventually("all 100 acked", || async { describe(&server, "mailer").await.partitions[0].committed_offset == 100 })
        .await;
    server.stop().await;

    // The log loses its last 5 batches (a torn tail cut under fsync=never, or damage).
    let path = partition_dir(dir.path(), "events", 0).join(format!("{:020}.log", 0));
    let bytes = std::fs::read(&path)?;
    let mut at = 0usize;
    for _ in 0..5 {
        at += 12 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into()?) as usize;
    }
    std::fs::write(&path, &bytes[..at])?;
    for stale in ["clean-shutdown", "00000000000000000000.index", "00000000000000000000.timeindex"] {
        let _ = std::fs::remove_file(partition_dir(dir.path(), "events", 0).join(stale));
    }

    let server = TestServer::start(dir.path()).await;
    let d = describe(&server, "mailer").await;
    assert_eq!((d.partitions[0].committed_offset, d.partitions[0].end_offset), (50, 50));
    assert_eq!(d.offsets_moved_to_end, 1);
    let mut producer = server.producer().await;
    producer.produce(produce_request("events", vec![record(None, "new-50")])).await?;
    let mut member = Member::join(&server, "mailer", &["events"], "m2", JoinOptions::default()).await;
    let records = member.next_records().await;
    assert_eq!(offsets(&records), vec![50], "the record appended after the cut is delivered");
    assert_eq!(records.records[0].record.as_ref().unwrap().value, b"new-50".to_vec());
    server.stop().await;
    Ok(())
}
