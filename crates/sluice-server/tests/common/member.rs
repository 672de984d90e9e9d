//! A consumer-group member over a real Consume stream, recording every assignment it sees.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::TestServer;

pub type Tp = (String, u32);

/// How a test member joins.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    pub max_in_flight_records: u32,
    pub session_timeout_ms: u32,
    pub ack_timeout_ms: u32,
    pub reset: i32,
    pub max_delivery_attempts: u32,
    pub backoff_initial_ms: u32,
    pub backoff_multiplier: f64,
    pub strict: bool,
    pub on_damage: i32,
    pub ack_receipts: bool,
    pub delivery: i32,
    pub max_lease_expiries: u32,
}

pub struct Member {
    pub id: u64,
    pub name: String,
    tx: Option<mpsc::Sender<pb::ConsumeRequest>>,
    rx: tonic::Streaming<pb::ConsumeResponse>,
    /// Every assignment received: (generation, owned partitions).
    pub assignments: Vec<(u64, BTreeSet<Tp>)>,
    pub owned: BTreeSet<Tp>,
    pub refusals: Vec<pb::AckRefused>,
    /// Every lease expiry the broker told of.
    pub expired: Vec<pb::LeaseExpired>,
    /// Every ack receipt received.
    pub receipts: Vec<pb::AckReceipt>,
}

pub enum Event {
    Assignment,
    Records(pb::GroupRecords),
    Refused,
    LeaseExpired,
    Receipt,
}

fn request(r: pb::consume_request::Request) -> pb::ConsumeRequest {
    pb::ConsumeRequest { request: Some(r) }
}

impl Member {
    pub async fn join(server: &TestServer, group: &str, topics: &[&str], name: &str, options: JoinOptions) -> Member {
        match Self::try_join(server, group, topics, name, options).await {
            Ok(member) => member,
            Err(status) => panic!("join of {name} refused: {status:?}"),
        }
    }

    /// Joins, or returns the status the broker refused the join with.
    pub async fn try_join(
        server: &TestServer,
        group: &str,
        topics: &[&str],
        name: &str,
        options: JoinOptions,
    ) -> Result<Member, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let join = pb::Join {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            member_name: name.into(),
            max_in_flight_records: options.max_in_flight_records,
            max_in_flight_bytes: 0,
            session_timeout_ms: options.session_timeout_ms,
            reset: options.reset,
            ack_timeout_ms: options.ack_timeout_ms,
            max_delivery_attempts: options.max_delivery_attempts,
            backoff_initial_ms: options.backoff_initial_ms,
            backoff_multiplier: options.backoff_multiplier,
            ordering: if options.strict { pb::Ordering::Strict as i32 } else { 0 },
            on_damage: options.on_damage,
            ack_receipts: options.ack_receipts,
            delivery: options.delivery,
            max_lease_expiries: options.max_lease_expiries,
            ..pb::Join::default()
        };
        tx.send(request(pb::consume_request::Request::Join(join))).await.unwrap();
        let mut stream = server.consumer().await.consume(ReceiverStream::new(rx)).await?.into_inner();
        let first = stream.message().await?.unwrap();
        let Some(pb::consume_response::Response::Joined(joined)) = first.response else {
            panic!("first message is not joined: {first:?}")
        };
        Ok(Member {
            id: joined.member_id,
            name: name.into(),
            tx: Some(tx),
            rx: stream,
            assignments: Vec::new(),
            owned: BTreeSet::new(),
            refusals: Vec::new(),
            expired: Vec::new(),
            receipts: Vec::new(),
        })
    }

    /// The next message, or `None` when the stream has ended (panics after 20 s of nothing).
    pub async fn try_next(&mut self) -> Result<Option<Event>, tonic::Status> {
        let message = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
            .await
            .unwrap_or_else(|_| panic!("member {} heard nothing for 20 s", self.name))?;
        let Some(message) = message else { return Ok(None) };
        Ok(Some(match message.response {
            Some(pb::consume_response::Response::Assignment(a)) => {
                self.owned =
                    a.partitions.iter().flat_map(|t| t.partitions.iter().map(|&p| (t.topic.clone(), p))).collect();
                self.assignments.push((a.generation, self.owned.clone()));
                Event::Assignment
            }
            Some(pb::consume_response::Response::Records(records)) => Event::Records(records),
            Some(pb::consume_response::Response::AckRefused(refused)) => {
                self.refusals.push(refused);
                Event::Refused
            }
            Some(pb::consume_response::Response::LeaseExpired(expired)) => {
                self.expired.push(expired);
                Event::LeaseExpired
            }
            Some(pb::consume_response::Response::AckReceipt(receipt)) => {
                self.receipts.push(receipt);
                Event::Receipt
            }
            other => panic!("unexpected message {other:?}"),
        }))
    }

    pub async fn next(&mut self) -> Event {
        self.try_next().await.unwrap().unwrap_or_else(|| panic!("member {}'s stream ended", self.name))
    }

    /// The next records, handling assignments on the way.
    pub async fn next_records(&mut self) -> pb::GroupRecords {
        loop {
            if let Event::Records(records) = self.next().await {
                return records;
            }
        }
    }

    /// Waits until the member owns exactly `count` partitions.
    pub async fn wait_owned(&mut self, count: usize) -> Vec<pb::GroupRecords> {
        let mut records = Vec::new();
        while self.owned.len() != count {
            if let Event::Records(r) = self.next().await {
                records.push(r);
            }
        }
        records
    }

    pub async fn send(&self, r: pb::consume_request::Request) {
        if let Some(tx) = &self.tx {
            tx.send(request(r)).await.unwrap();
        }
    }

    pub async fn ack(&self, topic: &str, partition: u32, generation: u64, offsets: Vec<u64>) {
        let ack = pb::Ack { topic: topic.into(), partition, generation, offsets, ranges: Vec::new() };
        self.send(pb::consume_request::Request::Ack(ack)).await;
    }

    pub async fn ack_range(&self, topic: &str, partition: u32, generation: u64, first: u64, last: u64) {
        let range = pb::OffsetRange { first, last };
        let ack = pb::Ack { topic: topic.into(), partition, generation, offsets: Vec::new(), ranges: vec![range] };
        self.send(pb::consume_request::Request::Ack(ack)).await;
    }

    /// Acks every record of a delivery with one range per delivery.
    pub async fn ack_all(&self, records: &pb::GroupRecords) {
        let offsets: Vec<u64> = records.records.iter().map(|r| r.record.as_ref().unwrap().offset).collect();
        self.ack(&records.topic, records.partition, records.generation, offsets).await;
    }

    /// Nacks one offset.
    pub async fn nack(&self, topic: &str, partition: u32, generation: u64, offset: u64, reason: &str, retryable: bool) {
        let nack = pb::Nack {
            topic: topic.into(),
            partition,
            generation,
            offsets: vec![offset],
            reason: reason.into(),
            retryable: Some(retryable),
            ..pb::Nack::default()
        };
        self.send(pb::consume_request::Request::Nack(nack)).await;
    }

    pub async fn heartbeat(&self) {
        self.send(pb::consume_request::Request::Heartbeat(pb::Heartbeat {})).await;
    }

    /// Ends the session by closing the request stream (the broker sees the member leave).
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// Offsets of a delivery.
pub fn offsets(records: &pb::GroupRecords) -> Vec<u64> {
    records.records.iter().map(|r| r.record.as_ref().unwrap().offset).collect()
}
