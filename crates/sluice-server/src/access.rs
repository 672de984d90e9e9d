//! Authentication at the edge and the authorization check every RPC makes.
//!
//! An interceptor in front of the Admin, Producer and Consumer services reads
//! `authorization: Bearer <token>`, authenticates it against the broker's tokens and puts the
//! [`Caller`] in the request's extensions (UNAUTHENTICATED if the token is missing, malformed,
//! unknown or revoked). Each handler then calls [`Access::check`] with the operation and the
//! resource it touches; PERMISSION_DENIED names those two and nothing else. Long-lived streams
//! are wrapped by [`Access::guard`]: when a token is revoked or an ACL changes, the stream's
//! caller is checked again and the stream ends with the refusal if it no longer passes.
//!
//! With authentication off every caller is [`Caller::Anonymous`] and every check passes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::auth::{Operation, Principal, ResourceKind, Security};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

/// Who is calling (in each request's extensions).
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off.
    Anonymous,
    /// An authenticated principal.
    Principal(Principal),
}

impl Caller {
    /// The principal's name, for logs and metrics.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Principal(p) => &p.name,
        }
    }
}

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Logs refusals at most once a second, with how many were not logged.
#[derive(Debug)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

/// The broker's authentication and authorization, shared by the services.
#[derive(Debug, Clone)]
pub struct Access {
    security: Arc<Security>,
    quotas: Arc<crate::quota::Quotas>,
    enabled: bool,
    log: Arc<Mutex<RefusalLog>>,
    metrics: Arc<crate::metrics::Metrics>,
}

const AUTHORIZATION: &str = "authorization";

impl Access {
    /// Access over `security`; `enabled: false` lets every call through as anonymous.
    pub fn new(
        security: Arc<Security>,
        enabled: bool,
        quotas: crate::quota::QuotaConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let quotas = crate::quota::Quotas::new(quotas, Arc::clone(&metrics));
        Access {
            security,
            quotas,
            enabled,
            log: Arc::new(Mutex::new(RefusalLog { last: None, suppressed: 0 })),
            metrics,
        }
    }

    /// The per-principal quotas.
    pub fn quotas(&self) -> &Arc<crate::quota::Quotas> {
        &self.quotas
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The stores (for the token and ACL admin RPCs).
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    fn refused(&self, caller: &str, what: &str, mut status: Status) -> Status {
        let reason =
            if status.code() == tonic::Code::Unauthenticated { "UNAUTHENTICATED" } else { "PERMISSION_DENIED" };
        status.metadata_mut().insert(crate::status::REASON_KEY, tonic::metadata::MetadataValue::from_static(reason));
        self.metrics.access_refused(caller, status.code());
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if log.last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            let suppressed = std::mem::take(&mut log.suppressed);
            log.last = Some(now);
            tracing::warn!(principal = caller, request = what, code = ?status.code(), reason = status.message(), suppressed, "request refused");
        } else {
            log.suppressed += 1;
        }
        status
    }

    /// Authenticates a bearer token (a request's metadata, or the HTTP `authorization` header).
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<Caller, Status> {
        if !self.enabled {
            return Ok(Caller::Anonymous);
        }
        let expected = "expected the metadata entry 'authorization: Bearer <token>'";
        let Some(header) = header else {
            return Err(self.refused(
                "-",
                "authenticate",
                Status::unauthenticated(format!("no credentials: {expected}")),
            ));
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(self.refused(
                "-",
                "authenticate",
                Status::unauthenticated(format!("malformed credentials: {expected}")),
            ));
        };
        match self.security.tokens.authenticate(token) {
            Ok(principal) => Ok(Caller::Principal(principal)),
            Err(_) => Err(self.refused(
                "-",
                "authenticate",
                Status::unauthenticated("the bearer token is not valid (unknown, revoked or mistyped)"),
            )),
        }
    }

    /// The interceptor that names the caller of every request.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + 'static {
        let access = self.clone();
        move |mut request: Request<()>| {
            let header = request.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
            let connection = request.extensions().get::<crate::tls::ConnInfo>().cloned();
            let certified = connection.as_ref().and_then(|c| c.certificate_principal.clone());
            let caller = match (header, certified) {
                // A verified client certificate names the principal when no token is sent.
                (None, Some(name)) if access.enabled => {
                    Caller::Principal(Principal { name: Arc::from(name.as_str()), superuser: false, token_id: None })
                }
                (header, _) => access.authenticate_header(header)?,
            };
            if let Some(connection) = &connection {
                access.quotas.claim_connection(&connection.slot, &caller)?;
            }
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }

    /// The caller of a request (refused if the interceptor did not name one).
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        match request.extensions().get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None if !self.enabled => Ok(Caller::Anonymous),
            None => Err(Status::unauthenticated("no credentials were checked for this request")),
        }
    }

    /// Refuses if the caller's token was revoked.
    pub fn check_token(&self, caller: &Caller) -> Result<(), Status> {
        match caller {
            Caller::Principal(principal) if !self.security.still_valid(principal) => {
                Err(self.refused(&principal.name, "stream", Status::unauthenticated("the bearer token was revoked")))
            }
            _ => Ok(()),
        }
    }

    /// Refuses unless `caller` may do `operation` on `kind`/`name` with a token still valid.
    pub fn check(&self, caller: &Caller, operation: Operation, kind: ResourceKind, name: &str) -> Result<(), Status> {
        let Caller::Principal(principal) = caller else { return Ok(()) };
        self.check_token(caller)?;
        if self.security.allows(principal, operation, kind, name) {
            return Ok(());
        }
        let resource =
            if kind == ResourceKind::Cluster { "the cluster".to_owned() } else { format!("{} '{name}'", kind.name()) };
        let status = Status::permission_denied(format!(
            "principal '{}' may not {} {resource}",
            principal.name,
            operation.name()
        ));
        Err(self.refused(&principal.name, &format!("{} {resource}", operation.name()), status))
    }

    /// Whether `caller` may do it (for filtering listings; refusals are not logged).
    pub fn may(&self, caller: &Caller, operation: Operation, kind: ResourceKind, name: &str) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::Principal(p) => self.security.still_valid(p) && self.security.allows(p, operation, kind, name),
        }
    }

    /// Ends `stream` with the refusal once `recheck` refuses, checked whenever a token is
    /// revoked or an ACL changes.
    pub fn guard<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
        recheck: impl Fn() -> Result<(), Status> + Send + Sync + 'static,
    ) -> BoxStream<T> {
        if !self.enabled {
            return Box::pin(stream);
        }
        let changes = tokio_stream::wrappers::WatchStream::from_changes(self.security.changes());
        enum Event<T> {
            Item(Option<Result<T, Status>>),
            Changed,
        }
        let items = stream.map(|item| Event::Item(Some(item))).chain(tokio_stream::once(Event::Item(None)));
        let merged = items.merge(changes.map(|_| Event::Changed));
        let recheck = Arc::new(recheck);
        let guarded = futures::stream::unfold((Box::pin(merged), false), move |(mut merged, done)| {
            let recheck = Arc::clone(&recheck);
            async move {
                if done {
                    return None;
                }
                loop {
                    match merged.next().await? {
                        Event::Item(Some(item)) => return Some((item, (merged, false))),
                        Event::Item(None) => return None,
                        Event::Changed => {
                            if let Err(status) = recheck() {
                                return Some((Err(status), (merged, true)));
                            }
                        }
                    }
                }
            }
        });
        Box::pin(guarded)
    }
}
