//! SIGTERM to the real binary while clients stream: streams that were cut say so
//! (UNAVAILABLE, SHUTTING_DOWN), and acks that reached the broker before the signal survive
//! the graceful restart.

mod common;

use std::time::Duration;

use common::TestResult;
use common::member::{JoinOptions, Member, offsets};
use common::process::{Broker, spawn_broker};
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;

/// SIGTERM, waited for off the runtime so the test's own clients keep running meanwhile.
async fn terminate(broker: Broker) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || broker.terminate()).await.unwrap()
}

fn assert_shutting_down(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.metadata().get("sluice-reason").unwrap(), "SHUTTING_DOWN", "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_stream_cut_by_sigterm_ends_with_unavailable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = spawn_broker(dir.path(), &[]);
    common::create_topic(&broker.server, "orders", 1, None).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ProduceRequest>(64);
    let mut producer = broker.server.producer().await;
    // The client keeps sending and never closes its side: the stream can only be cut.
    let sender = tokio::spawn(async move {
        for id in 0u64.. {
            let request = common::produce_request("orders", vec![common::record(None, &format!("order-{id}"))]);
            if tx.send(pb::ProduceRequest { request_id: id, ..request }).await.is_err() {
                return;
            }
        }
    });
    let mut responses = producer.produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut answered = 0;
    while answered < 50 {
        responses.next().await.expect("a response")?;
        answered += 1;
    }
    let broker_exit = tokio::spawn(terminate(broker));
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), responses.next()).await? {
            Some(Ok(_answered)) => {}
            Some(Err(status)) => break status,
            None => panic!("the stream ended with OK although requests were still coming"),
        }
    };
    assert_shutting_down(&end);
    assert!(broker_exit.await?.success());
    sender.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_sent_before_sigterm_are_kept_and_the_consume_stream_says_why_it_ended() -> TestResult {
    let dir = tempfile::tempdir()?;
    let env = [("SLUICE_GROUPS_COMMIT_INTERVAL", "1h")];
    let broker = spawn_broker(dir.path(), &env);
    common::create_topic(&broker.server, "jobs", 1, None).await;
    let records = (0..200).map(|i| common::record(None, &format!("job-{i}"))).collect();
    broker.server.producer().await.produce(common::produce_request("jobs", records)).await?;

    let mut member = Member::join(&broker.server, "workers", &["jobs"], "m", JoinOptions::default()).await;
    let mut delivered = Vec::new();
    while delivered.len() < 200 {
        let records = member.next_records().await;
        delivered.extend(offsets(&records).into_iter().map(|o| (records.generation, o)));
    }
    // One ack per record, and the signal right behind them: none of them waits for the broker.
    for &(generation, offset) in &delivered {
        member.ack("jobs", 0, generation, vec![offset]).await;
    }
    let broker_exit = tokio::spawn(terminate(broker));
    let end = loop {
        match member.try_next().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the consume stream ended with OK at shutdown"),
            Err(status) => break status,
        }
    };
    assert_shutting_down(&end);
    assert!(broker_exit.await?.success());

    let broker = spawn_broker(dir.path(), &env);
    let request = pb::DescribeGroupRequest { group: "workers".into() };
    let described = broker.server.admin().await.describe_group(request).await?.into_inner();
    assert_eq!(described.partitions[0].committed_offset, 200, "every ack sent before the signal was kept");
    drop(broker);
    Ok(())
}
