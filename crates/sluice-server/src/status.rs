//! The one mapping from broker errors to gRPC statuses.
//!
//! Each status carries a stable reason code in the `sluice-reason` metadata entry (e.g.
//! `TOPIC_NOT_FOUND`), so clients can branch on it without parsing messages. Messages name the
//! limit or valid range; internal details such as file paths are logged, not sent.

use sluice_core::Error;
use sluice_core::group::SessionEnd;
use tonic::{Code, Status};

/// Metadata key of the stable reason code.
pub const REASON_KEY: &str = "sluice-reason";

fn status(code: Code, reason: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(REASON_KEY, tonic::metadata::MetadataValue::from_static(reason));
    status
}

/// Converts a broker error into the status sent to the client.
pub fn to_status(error: Error) -> Status {
    match error {
        Error::TopicNotFound(_) => status(Code::NotFound, "TOPIC_NOT_FOUND", error.to_string()),
        Error::TopicExists(_) => status(Code::AlreadyExists, "TOPIC_EXISTS", error.to_string()),
        Error::PartitionNotFound { .. } => status(Code::InvalidArgument, "PARTITION_NOT_FOUND", error.to_string()),
        Error::InvalidArgument(_) => status(Code::InvalidArgument, "INVALID_ARGUMENT", error.to_string()),
        Error::MessageTooLarge { .. } => status(Code::InvalidArgument, "MESSAGE_TOO_LARGE", error.to_string()),
        Error::RequestTooLarge { .. } => status(Code::ResourceExhausted, "REQUEST_TOO_LARGE", error.to_string()),
        Error::OffsetOutOfRange { .. } => status(Code::OutOfRange, "OFFSET_OUT_OF_RANGE", error.to_string()),
        Error::OutOfOrderSequence { .. } => {
            status(Code::FailedPrecondition, "OUT_OF_ORDER_SEQUENCE", error.to_string())
        }
        Error::SequenceOutsideWindow { .. } => {
            status(Code::AlreadyExists, "DUPLICATE_SEQUENCE_OUTSIDE_WINDOW", error.to_string())
        }
        Error::DataLoss { .. } | Error::Corrupt { .. } => status(Code::DataLoss, "DATA_LOSS", error.to_string()),
        // Not UNAVAILABLE: generic retry policies would spin on it until an operator frees space.
        Error::DiskFull { .. } => {
            tracing::warn!(cause = %error, "write refused: disk full");
            status(Code::ResourceExhausted, "DISK_FULL", error.to_string())
        }
        Error::PartitionReadOnly { ref topic, partition, .. } => {
            tracing::error!(%topic, partition, cause = %error, "write refused: partition is read-only");
            status(
                Code::Unavailable,
                "PARTITION_READ_ONLY",
                format!(
                    "partition {topic}/{partition} is read-only after a disk failure; restart the broker once the disk is fixed"
                ),
            )
        }
        Error::ShuttingDown => status(Code::Unavailable, "SHUTTING_DOWN", error.to_string()),
        Error::GroupNotFound(_) => status(Code::NotFound, "GROUP_NOT_FOUND", error.to_string()),
        Error::GroupHasMembers { .. } => status(Code::FailedPrecondition, "GROUP_HAS_MEMBERS", error.to_string()),
        Error::RetryFailed(_) => status(Code::Unavailable, "RETRY_OF_FAILED_BATCH", error.to_string()),
        Error::GroupExists(_) => status(Code::AlreadyExists, "GROUP_EXISTS", error.to_string()),
        Error::PolicyConflict { .. } => status(Code::FailedPrecondition, "POLICY_CONFLICT", error.to_string()),
        Error::SessionEnded(ref end) => match end {
            SessionEnd::Shutdown => status(Code::Unavailable, "SHUTTING_DOWN", error.to_string()),
            SessionEnd::TimedOut(_) => status(Code::Aborted, "SESSION_TIMED_OUT", error.to_string()),
            SessionEnd::GroupDeleted => status(Code::Aborted, "GROUP_DELETED", error.to_string()),
            SessionEnd::Left => status(Code::Aborted, "SESSION_ENDED", error.to_string()),
            SessionEnd::NotProcessing(_) => status(Code::Aborted, "NOT_PROCESSING", error.to_string()),
        },
        other => {
            tracing::error!(cause = %other, "internal error");
            status(Code::Internal, "INTERNAL", "internal error; see the broker log".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_codes_reasons_and_ranges() {
        let s = to_status(Error::OffsetOutOfRange { requested: 3, start: 10, end: 20 });
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("10..20"), "{}", s.message());
        assert_eq!(s.metadata().get(REASON_KEY).unwrap(), "OFFSET_OUT_OF_RANGE");
        let s = to_status(Error::Internal("/secret/path failed".into()));
        assert!(!s.message().contains("/secret"), "internal details stay in the log");
    }
}
