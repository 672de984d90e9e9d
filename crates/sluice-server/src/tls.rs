//! TLS on the gRPC and HTTP ports, with certificates that rotate without a restart, and
//! optional client certificates (mutual TLS) that name a principal.
//!
//! rustls with the `ring` provider: pure Rust and assembly, built by `cc` alone (the default
//! `aws-lc-rs` provider needs cmake and NASM on the build machine), and fast enough here that
//! the handshake, not the cipher, is what TLS costs.
//!
//! Rotation: the certificate and key files are checked every [`RELOAD_CHECK`] and on SIGHUP.
//! When they changed and parse, new handshakes get the new certificate; connections already
//! open keep theirs. A file that does not parse (half-written, or wrong) is logged and the
//! previous certificate stays.
//!
//! A verified client certificate names its principal by its first DNS subject alternative
//! name; it has the rights ACLs give that name (never a superuser's).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Whether clients must present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates.
    None,
    /// Verified if presented (a client may use a token instead).
    Optional,
    /// Every client presents one signed by the client CA.
    Required,
}

/// TLS settings, validated.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// Serve the HTTP port (metrics, health) over TLS too.
    pub http: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

fn load_key(config: &TlsConfig) -> io::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| invalid(&config.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&config.cert_file, e))?;
    if certs.is_empty() {
        return Err(invalid(&config.cert_file, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| invalid(&config.key_file, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| invalid(&config.key_file, e))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| invalid(&config.key_file, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The certificate new handshakes get, reloaded when its files change.
#[derive(Debug)]
struct Certificates {
    config: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// What a reload check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change (and no SIGHUP asked for a reload).
    Unchanged,
    /// A new certificate was loaded.
    Loaded,
    /// The files changed but cannot be used; the previous certificate stays.
    Failed,
}

impl Certificates {
    /// Loads the files again if they changed or `forced`; keeps the old certificate if they do
    /// not parse.
    fn reload(&self, forced: bool) -> Reload {
        let stamps = (modified(&self.config.cert_file), modified(&self.config.key_file));
        {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !forced && *seen == stamps {
                return Reload::Unchanged;
            }
            *seen = stamps;
        }
        match load_key(&self.config) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                tracing::info!(cert = %self.config.cert_file.display(), "TLS certificate loaded; new connections use it");
                Reload::Loaded
            }
            Err(e) => {
                tracing::error!(cause = %e, "the new TLS certificate or key cannot be used; keeping the previous one");
                Reload::Failed
            }
        }
    }
}

/// TLS acceptors for both ports, sharing one rotating certificate.
#[derive(Clone)]
pub struct Tls {
    certificates: Arc<Certificates>,
    /// gRPC (ALPN h2).
    pub grpc: tokio_rustls::TlsAcceptor,
    /// HTTP/1.1 (metrics, health), if it is served over TLS.
    pub http: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert_file", &self.certificates.config.cert_file).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate, key and client CA; fails with the file that is wrong.
    pub fn load(config: &TlsConfig) -> io::Result<Tls> {
        let key = load_key(config)?;
        let stamps = (modified(&config.cert_file), modified(&config.key_file));
        let certificates = Arc::new(Certificates {
            config: config.clone(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(stamps),
        });
        let verifier = match (&config.client_ca_file, config.client_auth) {
            (_, ClientAuth::None) | (None, _) => None,
            (Some(ca), auth) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| invalid(ca, e))? {
                    roots.add(cert.map_err(|e| invalid(ca, e))?).map_err(|e| invalid(ca, e))?;
                }
                let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let builder = if auth == ClientAuth::Optional { builder.allow_unauthenticated() } else { builder };
                Some(builder.build().map_err(|e| invalid(ca, e))?)
            }
        };
        let server_config = |alpn: &[&[u8]]| -> io::Result<Arc<rustls::ServerConfig>> {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?;
            let builder = match &verifier {
                Some(verifier) => builder.with_client_cert_verifier(Arc::clone(verifier)),
                None => builder.with_no_client_auth(),
            };
            let mut server = builder.with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(server))
        };
        let grpc = tokio_rustls::TlsAcceptor::from(server_config(&[b"h2"])?);
        let http = config.http.then(|| server_config(&[b"http/1.1"])).transpose()?.map(tokio_rustls::TlsAcceptor::from);
        Ok(Tls { certificates, grpc, http })
    }

    /// Reloads the certificate when its files change or on SIGHUP, until `stop`; `outcome`
    /// hears of every reload that loaded or failed. The SIGHUP handler is in place when this
    /// returns, before the future runs: a SIGHUP that arrived before it would end the process.
    pub fn watch(
        self,
        stop: CancellationToken,
        outcome: impl Fn(Reload) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        #[cfg(unix)]
        {
            let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!(cause = %e, "no SIGHUP handler; certificates reload only when their files change");
                    None
                }
            };
            self.reload_loop(stop, hangup, outcome)
        }
        #[cfg(not(unix))]
        self.reload_loop(stop, outcome)
    }

    async fn reload_loop(
        self,
        stop: CancellationToken,
        #[cfg(unix)] mut hangup: Option<tokio::signal::unix::Signal>,
        outcome: impl Fn(Reload) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                _ = hup => true,
            };
            let certificates = Arc::clone(&self.certificates);
            if let Ok(reload @ (Reload::Loaded | Reload::Failed)) =
                tokio::task::spawn_blocking(move || certificates.reload(forced)).await
            {
                outcome(reload);
            }
        }
    }
}

/// The principal a verified client certificate names: its first DNS subject alternative name.
pub fn certificate_principal(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let first = certs?.first()?;
    let cert = webpki::EndEntityCert::try_from(first).ok()?;
    cert.valid_dns_names().next().map(str::to_owned)
}

/// A connection: plain TCP or TLS, with what each of its requests learns of it.
pub struct Conn<S> {
    io: ConnIo<S>,
    info: ConnInfo,
}

enum ConnIo<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> Conn<S> {
    /// A plaintext connection.
    pub fn plain(stream: S) -> Self {
        Conn { io: ConnIo::Plain(stream), info: ConnInfo::default() }
    }

    /// A TLS connection, with the principal its client certificate names, if any.
    pub fn tls(stream: tokio_rustls::server::TlsStream<S>, certificate_principal: Option<String>) -> Self {
        Conn { io: ConnIo::Tls(Box::new(stream)), info: ConnInfo { certificate_principal, ..ConnInfo::default() } }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// What a connection tells each of its requests (in their extensions).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The principal a verified client certificate names.
    pub certificate_principal: Option<String>,
    /// The principal the connection is counted against (its first authenticated request's),
    /// freed when the connection and its requests are gone.
    pub slot: Arc<crate::quota::ConnectionSlot>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}
