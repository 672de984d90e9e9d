//! Idempotent producers of one partition share group commit, and stay exactly-once.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_core::{Broker, BrokerConfig, NewRecord, ProduceRequest, ProducerRef, TopicConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn request(producer_id: u64, first_sequence: u64) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![NewRecord {
            value: Bytes::from(format!("{producer_id}-{first_sequence}")),
            ..NewRecord::default()
        }]
        .into(),
        producer: Some(ProducerRef { producer_id, first_sequence }),
    }
}

async fn open(dir: &std::path::Path) -> Result<Broker, sluice_core::Error> {
    let broker = Broker::open(BrokerConfig { data_dir: dir.to_path_buf(), ..BrokerConfig::default() }).await?;
    // fsync `always` (the default): every acknowledged batch was fsynced.
    broker.create_topic("t", 1, TopicConfig::default()).await?;
    Ok(broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_of_one_partition_share_fsyncs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = open(dir.path()).await?;
    const PRODUCERS: u64 = 8;
    const BATCHES: u64 = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for producer in 1..=PRODUCERS {
        let broker = broker.clone();
        tasks.spawn(async move {
            let mut offsets = Vec::new();
            for seq in 0..BATCHES {
                offsets.push(broker.produce(request(producer, seq)).await?.appends[0].base_offset);
            }
            Ok::<_, sluice_core::Error>((producer, offsets))
        });
    }
    let mut written: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (producer, offsets) = done??;
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "a producer's batches land in sequence order");
        written.insert(producer, offsets);
    }
    let partition = broker.topic("t")?.partition(0)?;
    let stats = partition.stats();
    assert_eq!(stats.end_offset, PRODUCERS * BATCHES);
    // One fsync per batch would mean each producer waited for the others' fsyncs.
    assert!(stats.fsyncs < PRODUCERS * BATCHES, "{} fsyncs for {} batches", stats.fsyncs, PRODUCERS * BATCHES);
    // Every batch, resent, is recognised with its offset.
    for (producer, offsets) in &written {
        for (seq, offset) in offsets.iter().enumerate() {
            let again = broker.produce(request(*producer, seq as u64)).await?;
            assert!(again.appends[0].duplicate && again.appends[0].base_offset == *offset);
        }
    }
    assert_eq!(partition.stats().end_offset, PRODUCERS * BATCHES, "nothing written twice");
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_its_original_gets_the_originals_offset_and_is_not_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = open(dir.path()).await?;
    for seq in 0..50 {
        let (a, b) = (broker.clone(), broker.clone());
        let original = tokio::spawn(async move { a.produce(request(3, seq)).await });
        let retry = tokio::spawn(async move { b.produce(request(3, seq)).await });
        let (original, retry) = (original.await??, retry.await??);
        assert_eq!(original.appends[0].base_offset, retry.appends[0].base_offset, "sequence {seq}");
        assert!(original.appends[0].duplicate != retry.appends[0].duplicate, "exactly one was written");
    }
    assert_eq!(broker.topic("t")?.partition(0)?.stats().end_offset, 50);
    broker.shutdown().await?;
    Ok(())
}
