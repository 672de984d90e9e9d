//! The CLI's errors: each knows its exit code and prints as one line with a hint.

use sluice_client::ClientError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The broker refused, or could not be reached (exit 1).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command line is wrong in a way clap cannot see (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A local file or stream failed (exit 1).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Stdout was closed by the reader (`sluice consume … | head`): not an error.
    #[error("stdout closed")]
    StdoutClosed,
}

impl From<std::io::Error> for CliError {
    fn from(source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::StdoutClosed;
        }
        CliError::Io { context: "writing output".into(), source }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Client(ClientError::from(status))
    }
}

/// `NotFound` -> `NOT_FOUND`: the names gRPC's documentation and other tools use.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn hint(error: &ClientError, server: &str) -> Option<String> {
    if error.is_unreachable() {
        return Some(format!("is sluice-server running on {server}? (--server or SLUICE_SERVER picks another)"));
    }
    let hint = match error.reason()? {
        "TOPIC_NOT_FOUND" => "`sluice topic list` shows the topics",
        "TOPIC_EXISTS" => "`sluice topic describe <name>` shows it",
        "GROUP_NOT_FOUND" => "`sluice group list` shows the groups",
        "GROUP_HAS_MEMBERS" => "stop the group's consumers first, or pass --force",
        "PARTITION_NOT_FOUND" => "`sluice topic describe <topic>` lists its partitions",
        "OFFSET_OUT_OF_RANGE" => "pick an offset in the range above, or --offset earliest",
        "MESSAGE_TOO_LARGE" => "`sluice topic alter <topic> --max-message-bytes <size>` raises the limit",
        "REQUEST_TOO_LARGE" => "send fewer records per request",
        "UNAUTHENTICATED" => "the broker requires a token: --token or SLUICE_TOKEN (`sluice token create`)",
        "PERMISSION_DENIED" => {
            "an operator can grant it: `sluice acl add --principal … --operation … --resource … --name …`"
        }
        "POLICY_CONFLICT" => {
            "`sluice group describe <group>` shows the group's policy; `sluice group alter` changes it"
        }
        _ => return None,
    };
    Some(hint.to_owned())
}

impl CliError {
    /// 0 never: 1 for the broker or I/O, 2 for usage.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::StdoutClosed => 0,
            CliError::Client(_) | CliError::Io { .. } => 1,
        }
    }

    /// One line for stderr: what failed, the gRPC status when there is one, and a hint.
    pub fn render(&self, server: &str, color: bool) -> String {
        let label = if color { "\x1b[1;31merror\x1b[0m" } else { "error" };
        let text = match self {
            CliError::StdoutClosed => return String::new(),
            CliError::Client(ClientError::Status(status)) => {
                format!("{}: {}", code_name(status.code()), status.message())
            }
            CliError::Client(ClientError::Connect { cause, .. }) => {
                format!("UNAVAILABLE: cannot connect to {server}: {cause}")
            }
            other => other.to_string(),
        };
        let hint = match self {
            CliError::Client(error) => hint(error, server),
            _ => None,
        };
        match hint {
            Some(hint) => format!("{label}: {text} (hint: {hint})"),
            None => format!("{label}: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_print_as_grpc_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }
}
