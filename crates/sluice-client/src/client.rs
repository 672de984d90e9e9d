//! The connection and the calls most programs make.

use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{ClientError, Result};
use crate::group::GroupMember;
use crate::produce::{RecordPosition, positions};

/// Largest message the client accepts (the broker's own limit decides below it).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Adds the bearer token, if any, to every request.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel every service client of [`Client`] uses (it carries the credentials).
pub type Transport = InterceptedService<Channel, Credentials>;

/// TLS for the connection (PEM contents, not paths).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates to verify the broker with; `None`: the system's roots are not used, so
    /// give it (a private CA is the usual case).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and key (mutual TLS).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the broker's certificate against; default: the host of the address.
    pub domain: Option<String>,
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A bearer token (`sluice token create`), sent with every request.
    pub token: Option<String>,
    /// TLS; `None`: plaintext.
    pub tls: Option<TlsOptions>,
}

/// A connection to one broker. Clones share it.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    credentials: Credentials,
    server: String,
}

impl Client {
    /// Connects to `server` (`host:port`, or a full `http://` URI), failing at once when
    /// nothing listens there.
    pub async fn connect(server: &str) -> Result<Client> {
        Self::connect_with(server, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with credentials.
    pub async fn connect_with(server: &str, options: ConnectOptions) -> Result<Client> {
        let authorization = match &options.token {
            Some(token) => Some(MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                ClientError::InvalidAddress {
                    server: server.to_owned(),
                    reason: "the token is not printable ASCII".into(),
                }
            })?),
            None => None,
        };
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let uri = if server.contains("://") { server.to_owned() } else { format!("{scheme}://{server}") };
        let invalid = |reason: String| ClientError::InvalidAddress { server: server.to_owned(), reason };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Large windows and frames: batches of records arrive in few frames.
            .initial_connection_window_size(Some(16 << 20))
            .initial_stream_window_size(Some(8 << 20))
            .max_frame_size((1u32 << 20) - 1);
        let endpoint = match &options.tls {
            None => endpoint,
            Some(tls) => {
                let mut config = tonic::transport::ClientTlsConfig::new();
                if let Some(ca) = &tls.ca_pem {
                    config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity_pem {
                    config = config.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                if let Some(domain) = &tls.domain {
                    config = config.domain_name(domain.clone());
                }
                endpoint.tls_config(config).map_err(|e| invalid(format!("TLS: {e}")))?
            }
        };
        let channel = endpoint.connect().await.map_err(|e| ClientError::connect(server, &e))?;
        Ok(Client { channel, credentials: Credentials { authorization }, server: server.to_owned() })
    }

    /// The address this client connected to.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.credentials.clone())
    }

    /// The `sluice.v1.Admin` service.
    pub fn admin(&self) -> AdminClient<Transport> {
        AdminClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The `sluice.v1.Producer` service.
    pub fn producer(&self) -> ProducerClient<Transport> {
        ProducerClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The `sluice.v1.Consumer` service.
    pub fn consumer(&self) -> ConsumerClient<Transport> {
        ConsumerClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The broker's standard gRPC health status (`grpc.health.v1`, whole server).
    pub async fn health(&self) -> Result<ServingStatus> {
        let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let response = HealthClient::new(self.channel.clone()).check(request).await?.into_inner();
        Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
    }

    /// Version, uptime, addresses and data size of the broker.
    pub async fn broker_info(&self) -> Result<pb::BrokerInfoResponse> {
        Ok(self.admin().broker_info(pb::BrokerInfoRequest {}).await?.into_inner())
    }

    /// Every topic, by name.
    pub async fn list_topics(&self) -> Result<Vec<pb::TopicInfo>> {
        let mut topics = self.admin().list_topics(pb::ListTopicsRequest {}).await?.into_inner().topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's config and per-partition offsets and sizes.
    pub async fn describe_topic(&self, name: &str) -> Result<pb::DescribeTopicResponse> {
        Ok(self.admin().describe_topic(pb::DescribeTopicRequest { name: name.to_owned() }).await?.into_inner())
    }

    /// Appends `records` to `topic` (to `partition`, or by key / spread when `None`) and
    /// returns each record's position, in the order given. Returns once they are durable per
    /// the topic's fsync policy.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<pb::Record>,
    ) -> Result<Vec<RecordPosition>> {
        let count = records.len();
        let request = pb::ProduceRequest { topic: topic.to_owned(), partition, records, ..Default::default() };
        let response = self.producer().produce(request).await?.into_inner();
        Ok(positions(&response, count))
    }

    /// Records of one partition from `offset` (or from the first at or after `timestamp_ms`),
    /// waiting up to `max_wait` when there are none yet.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: pb::StartPosition,
        max_wait: Duration,
    ) -> Result<pb::FetchResponse> {
        use pb::start_position::Position;
        let (offset, timestamp_ms) = match from.position {
            Some(Position::Offset(offset)) => (offset, None),
            Some(Position::TimestampMs(ts)) => (0, Some(ts)),
            Some(Position::Earliest(_)) => (0, Some(i64::MIN)),
            Some(Position::Latest(_)) | None => (0, Some(i64::MAX)),
        };
        let request = pb::FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: 0,
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
            timestamp_ms,
        };
        Ok(self.consumer().fetch(request).await?.into_inner())
    }

    /// Joins a consumer group as a new member; see [`GroupMember`].
    pub async fn join_group(&self, join: pb::Join) -> Result<GroupMember> {
        GroupMember::join(self.consumer(), join).await
    }
}
