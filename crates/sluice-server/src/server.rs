//! [`Server`]: binds the listeners, serves gRPC and HTTP, and shuts down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::grpc::subscribe_body::ConsumerWithSubscribe;
use sluice_core::Broker;
use sluice_proto::v1::admin_server::AdminServer;
use sluice_proto::wire::servers::consumer_server::ConsumerServer;
use sluice_proto::wire::servers::producer_server::ProducerServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::grpc::admin::AdminService;
use crate::grpc::consumer::ConsumerService;
use crate::grpc::producer::ProducerService;
use crate::inflight::Inflight;
use crate::metrics::Metrics;
use crate::tls::Conn;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The broker failed to open or close.
    #[error("broker: {0}")]
    Broker(#[from] sluice_core::Error),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Another io failure.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How long a graceful shutdown lets connections flush and close once no request is running.
const CONNECTION_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Largest gRPC message accepted or sent, over the request limit for framing.
fn max_message_bytes(config: &ServerConfig) -> usize {
    config.broker.max_request_bytes.max(config.broker.max_fetch_bytes) + (1 << 20)
}

/// A bound, ready-to-serve broker.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    broker: Broker,
    metrics: Arc<Metrics>,
    access: crate::access::Access,
    tls: Option<crate::tls::Tls>,
    grpc: TcpListener,
    http: TcpListener,
}

impl Server {
    /// Opens the broker and binds both listeners (port 0 picks a free port).
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.http_listen, source })?;
        let broker = Broker::open(config.broker.clone()).await?;
        let metrics = Metrics::new(broker.clone());
        let security = sluice_core::auth::Security::open(&config.broker.data_dir)?;
        if let Some((path, principal)) = &config.auth.superuser_token_file {
            let secret = std::fs::read_to_string(path)
                .map_err(|e| io::Error::new(e.kind(), format!("auth.superuser_token_file {}: {e}", path.display())))?;
            security.tokens.set_bootstrap(principal, secret.trim())?;
        }
        if config.auth.enabled && security.tokens.list().is_empty() {
            tracing::warn!(
                "authentication is on but no token exists: create one with `sluice-server token create --data-dir DIR --principal admin --superuser` (stopped broker), or set auth.superuser_token_file"
            );
        }
        let access = crate::access::Access::new(
            Arc::new(security),
            config.auth.enabled,
            config.quotas.clone(),
            Arc::clone(&metrics),
        );
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        Ok(Server { config, broker, metrics, access, tls, grpc, http })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// The broker core.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves until `shutdown` completes, then shuts down in order: report not-serving, end
    /// streams and long-polls, stop accepting and let in-flight requests finish (bounded by
    /// `shutdown_timeout`), then fsync and close every partition, then stop HTTP.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Server { config, broker, metrics, access, tls, grpc, http } = self;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let max_message = max_message_bytes(&config);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AdminServer<AdminService>>().await;
        health.set_serving::<ProducerServer<ProducerService>>().await;
        health.set_serving::<ConsumerServer<ConsumerService>>().await;
        // v1alpha too: grpcio-reflection (Python) and older grpcurl builds speak only that.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = reflection_builder().build_v1()?;
        let reflection_v1alpha = reflection_builder().build_v1alpha()?;

        let inflight = Arc::new(Inflight::with_gauge(metrics.requests_in_flight()));
        let admin = AdminService {
            broker: broker.clone(),
            metrics: Arc::clone(&metrics),
            inflight: Arc::clone(&inflight),
            grpc_addr,
            http_addr,
            access: access.clone(),
            tls: config
                .tls
                .as_ref()
                .map_or((false, false), |t| (true, t.client_auth == crate::tls::ClientAuth::Required)),
        };
        let producer = ProducerService {
            broker: broker.clone(),
            metrics: Arc::clone(&metrics),
            inflight: Arc::clone(&inflight),
            access: access.clone(),
        };
        let consumer = ConsumerService {
            broker: broker.clone(),
            metrics: Arc::clone(&metrics),
            inflight: Arc::clone(&inflight),
            access: access.clone(),
        };
        use tonic::service::interceptor::InterceptedService;
        let stop_grpc = CancellationToken::new();
        let router = tonic::transport::Server::builder()
            .initial_connection_window_size(Some(16 << 20))
            .initial_stream_window_size(Some(8 << 20))
            .max_frame_size(Some((1 << 20) - 1))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            // Every Admin, Producer and Consumer call passes the authenticating interceptor.
            .add_service(InterceptedService::new(
                AdminServer::new(admin).max_decoding_message_size(max_message).max_encoding_message_size(max_message),
                access.interceptor(),
            ))
            .add_service(InterceptedService::new(
                ProducerServer::new(producer)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
                access.interceptor(),
            ))
            .add_service(InterceptedService::new(
                ConsumerWithSubscribe::new(
                    ConsumerServer::new(consumer.clone())
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(max_message),
                    consumer,
                    max_message,
                ),
                access.interceptor(),
            ));
        let incoming = accept_loop(grpc, Arc::clone(&metrics), stop_grpc.clone(), tls.as_ref().map(|t| t.grpc.clone()));
        let stop_tls = CancellationToken::new();
        if let Some(tls) = &tls {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(tls.clone().watch(stop_tls.clone(), move |reload| metrics.tls_reloaded(reload)));
        }
        let mut grpc_task =
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop_grpc.clone().cancelled_owned()));

        let stop_http = CancellationToken::new();
        let metrics_access = config.auth.metrics_require_token.then(|| access.clone());
        let app = crate::http::router(broker.clone(), Arc::clone(&metrics), metrics_access);
        let http_task = match tls.as_ref().and_then(|t| t.http.clone()) {
            Some(acceptor) => {
                let listener = TlsHttpListener::start(http, acceptor, stop_http.clone())?;
                tokio::spawn(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                        .into_future(),
                )
            }
            None => tokio::spawn(
                axum::serve(http, app).with_graceful_shutdown(stop_http.clone().cancelled_owned()).into_future(),
            ),
        };

        tokio::select! {
            () = shutdown => tracing::info!("shutdown requested"),
            result = &mut grpc_task => {
                tracing::error!(?result, "gRPC server stopped unexpectedly");
            }
        }
        health.set_not_serving::<AdminServer<AdminService>>().await;
        health.set_not_serving::<ProducerServer<ProducerService>>().await;
        health.set_not_serving::<ConsumerServer<ConsumerService>>().await;
        // Streams and long-polls end; new connections are refused; running requests finish.
        broker.shutdown_token().cancel();
        stop_grpc.cancel();
        if tokio::time::timeout(config.shutdown_timeout, inflight.idle()).await.is_err() {
            tracing::warn!(
                timeout = ?config.shutdown_timeout,
                requests = inflight.count(),
                "requests still running at the shutdown timeout; closing anyway"
            );
        }
        // Connections got GOAWAY; give them a moment to flush the last responses and close.
        // Idle connections are not waited for longer: clients may keep them open indefinitely.
        if tokio::time::timeout(CONNECTION_DRAIN, &mut grpc_task).await.is_err() {
            grpc_task.abort();
        }
        let closed = broker.shutdown().await;
        stop_http.cancel();
        stop_tls.cancel();
        let _http_done = http_task.await;
        closed?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections, sets TCP_NODELAY on each (tonic does not for custom incoming streams;
/// without it small responses wait ~40 ms for delayed ACKs), counts them, and with TLS runs
/// each handshake on a task of its own (a slow client never holds up the others).
fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> ReceiverStream<io::Result<Conn<CountedStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(cause = %e, "could not set TCP_NODELAY");
                    }
                    metrics.connection_opened();
                    let counted = CountedStream { inner: stream, metrics: Arc::clone(&metrics) };
                    let Some(acceptor) = tls.clone() else {
                        if tx.send(Ok(Conn::plain(counted))).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(counted)).await {
                            Ok(Ok(stream)) => {
                                let principal =
                                    crate::tls::certificate_principal(stream.get_ref().1.peer_certificates());
                                let _closed = tx.send(Ok(Conn::tls(stream, principal))).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, cause = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => tracing::warn!(cause = %e, "accept failed"),
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The HTTP port over TLS: accepted and handshaken in the background, handed to axum.
struct TlsHttpListener {
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsHttpListener {
    fn start(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, stop: CancellationToken) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, peer)) = accepted else { continue };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        let _closed = tx.send((stream, peer)).await;
                    }
                });
            }
        });
        Ok(TlsHttpListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsHttpListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // Stopped: axum's graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A connection that decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub struct CountedStream {
    inner: TcpStream,
    metrics: Arc<Metrics>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
