//! The client's one error type.

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not a usable URI.
    #[error("invalid server address {server:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        server: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot connect to {server}: {cause}")]
    Connect {
        /// The address tried.
        server: String,
        /// The innermost cause (e.g. "Connection refused (os error 111)").
        cause: String,
    },
    /// The broker answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
    /// The broker ended a stream the caller expected to go on.
    #[error("the broker ended the stream: {0}")]
    StreamEnded(&'static str),
}

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status(Box::new(status))
    }
}

impl ClientError {
    /// The gRPC status, when the broker sent one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The broker's stable reason code (the `sluice-reason` metadata entry, e.g.
    /// `TOPIC_NOT_FOUND`), when it sent one.
    pub fn reason(&self) -> Option<&str> {
        self.status()?.metadata().get("sluice-reason")?.to_str().ok()
    }

    /// True when the broker could not be reached (refused, reset, or unavailable).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Status(status) => status.code() == tonic::Code::Unavailable && self.reason().is_none(),
            _ => false,
        }
    }

    pub(crate) fn connect(server: &str, error: &tonic::transport::Error) -> Self {
        // The transport's own message is "transport error"; the useful part is the innermost cause.
        let mut cause: &dyn std::error::Error = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        ClientError::Connect { server: server.to_owned(), cause: cause.to_string() }
    }
}
