//! A real broker on 127.0.0.1:0 with its own data dir, and clients for it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use sluice_server::config::{FlagOverrides, load};
use sluice_server::{Server, ServerConfig};
use tonic::transport::{Channel, Endpoint};

pub mod certs;
pub mod damage;
pub mod member;
pub mod process;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), sluice_server::ServerError>>>,
}

pub fn config(data_dir: &Path, env: &[(&str, &str)]) -> ServerConfig {
    let mut vars: Vec<(String, String)> = vec![
        ("SLUICE_LISTEN".into(), "127.0.0.1:0".into()),
        ("SLUICE_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
        ("SLUICE_DATA_DIR".into(), data_dir.display().to_string()),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    load(None, vars, &FlagOverrides::default()).unwrap()
}

impl TestServer {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(config(data_dir, &[])).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let server = Server::bind(config).await.unwrap();
        let (grpc, http) = (server.grpc_addr().unwrap(), server.http_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        TestServer { grpc, http, stop: Some(stop), task: Some(task) }
    }

    /// A handle to a broker running elsewhere (a child process); `stop` does nothing for it.
    pub fn external(grpc: SocketAddr, http: SocketAddr) -> Self {
        TestServer { grpc, http, stop: None, task: None }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc)).unwrap().tcp_nodelay(true).connect().await.unwrap()
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub async fn producer(&self) -> ProducerClient<Channel> {
        ProducerClient::new(self.channel().await)
    }

    pub async fn consumer(&self) -> ConsumerClient<Channel> {
        ConsumerClient::new(self.channel().await)
    }

    /// Graceful shutdown; returns once the broker has closed every partition.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// GET on the HTTP port; returns (status line, body).
    pub async fn http_get(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

pub async fn create_topic(server: &TestServer, name: &str, partitions: u32, config: Option<pb::TopicConfig>) {
    server.admin().await.create_topic(pb::CreateTopicRequest { name: name.into(), partitions, config }).await.unwrap();
}

/// Small segments and a minute of retention: records stamped in 1970 are deleted as soon as
/// their segment closes and retention runs.
pub fn short_retention_config() -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: Some(60_000),
        segment_bytes: Some(64 << 10),
        max_message_bytes: Some(8 << 10),
        ..pb::TopicConfig::default()
    }
}

/// 400 records of 1000 bytes in requests of 10, with timestamps from 1970 (long past retention).
pub async fn produce_old_records(server: &TestServer, topic: &str) {
    let mut producer = server.producer().await;
    for i in 0..40 {
        let batch = (0..10).map(|j| pb::Record { timestamp_ms: Some(i * 10 + j), ..record(None, &"z".repeat(1000)) });
        producer.produce(produce_request(topic, batch.collect())).await.unwrap();
    }
}

pub fn record(key: Option<&str>, value: &str) -> pb::Record {
    pb::Record {
        key: key.map(|k| k.as_bytes().to_vec().into()),
        value: value.as_bytes().to_vec().into(),
        ..pb::Record::default()
    }
}

pub fn produce_request(topic: &str, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest { topic: topic.into(), records, ..pb::ProduceRequest::default() }
}

/// Everything in a partition from `offset` to its end.
pub async fn fetch_all(server: &TestServer, topic: &str, partition: u32, mut offset: u64) -> Vec<pb::Record> {
    let mut consumer = server.consumer().await;
    let mut out = Vec::new();
    loop {
        let response = consumer
            .fetch(pb::FetchRequest {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 64 << 10,
                max_wait_ms: 0,
                timestamp_ms: None,
            })
            .await
            .unwrap()
            .into_inner();
        if response.records.is_empty() {
            return out;
        }
        offset = response.next_offset;
        out.extend(response.records);
    }
}

/// Polls `check` until it returns true, or fails after a generous deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
