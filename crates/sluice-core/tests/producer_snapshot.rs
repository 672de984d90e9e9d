//! Idempotent-producer state survives restarts through a snapshot, and a restart replays only
//! the batches written after it.

use bytes::Bytes;
use sluice_core::{Broker, BrokerConfig, NewRecord, ProduceRequest, ProducerRef, TopicConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn request(producer: Option<(u64, u64)>) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![NewRecord { value: Bytes::from_static(b"v"), ..NewRecord::default() }].into(),
        producer: producer.map(|(producer_id, first_sequence)| ProducerRef { producer_id, first_sequence }),
    }
}

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }
}

/// Opens the broker on its own runtime; dropping the runtime without shutdown is a crash.
fn open(dir: &std::path::Path) -> (tokio::runtime::Runtime, Broker) {
    let rt = runtime();
    let broker = rt.block_on(Broker::open(config(dir))).unwrap();
    (rt, broker)
}

#[test]
fn a_restart_replays_only_what_came_after_the_snapshot_and_still_deduplicates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (rt, broker) = open(dir.path());
    rt.block_on(async {
        broker.create_topic("t", 1, TopicConfig::default()).await?;
        for seq in 0..50 {
            broker.produce(request(Some((9, seq)))).await?;
            broker.produce(request(None)).await?;
        }
        broker.snapshot_producers().await;
        for seq in 50..55 {
            broker.produce(request(Some((9, seq)))).await?;
        }
        Ok::<_, sluice_core::Error>(())
    })?;
    drop(broker);
    drop(rt); // crash: no shutdown, no fresh snapshot

    let (rt, broker) = open(dir.path());
    let partition = broker.topic("t")?.partition(0)?;
    assert_eq!(partition.replayed_batches(), 5, "only the batches after the snapshot are replayed");
    rt.block_on(async {
        let before_snapshot = broker.produce(request(Some((9, 49)))).await?;
        assert!(before_snapshot.appends[0].duplicate, "known from the snapshot");
        assert_eq!(before_snapshot.appends[0].base_offset, 98);
        let after_snapshot = broker.produce(request(Some((9, 54)))).await?;
        assert!(after_snapshot.appends[0].duplicate, "known from the replay");
        assert_eq!(after_snapshot.appends[0].base_offset, 104);
        let next = broker.produce(request(Some((9, 55)))).await?;
        assert!(!next.appends[0].duplicate);
        broker.shutdown().await
    })?;
    drop(rt);

    let (rt, broker) = open(dir.path());
    assert_eq!(broker.topic("t")?.partition(0)?.replayed_batches(), 0, "a clean shutdown snapshots last");
    rt.block_on(broker.shutdown())?;
    Ok(())
}

#[test]
fn a_missing_damaged_or_impossible_snapshot_falls_back_to_replaying_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (rt, broker) = open(dir.path());
    rt.block_on(async {
        broker.create_topic("t", 1, TopicConfig::default()).await?;
        for seq in 0..10 {
            broker.produce(request(Some((3, seq)))).await?;
        }
        broker.shutdown().await
    })?;
    drop(rt);
    let snapshot = dir.path().join("topics/t/0.producers");
    for replacement in [None, Some("garbage".to_owned()), Some("sluice-producers 1 999999\n".to_owned())] {
        match &replacement {
            None => std::fs::remove_file(&snapshot)?,
            Some(text) => std::fs::write(&snapshot, text)?,
        }
        let (rt, broker) = open(dir.path());
        assert_eq!(broker.topic("t")?.partition(0)?.replayed_batches(), 10, "{replacement:?}");
        let retry = rt.block_on(broker.produce(request(Some((3, 9)))))?;
        assert!(retry.appends[0].duplicate, "{replacement:?}");
        rt.block_on(broker.shutdown())?;
    }
    Ok(())
}
