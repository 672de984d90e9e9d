//! Topic names: what is allowed, so that no name can escape the data directory.

use crate::error::{Error, Result};

/// Longest topic name (as Kafka).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate(name: &str) -> Result<()> {
    validate_name("topic", name)
}

/// Checks a group id: the same rules as topic names (it names a file in the data directory).
pub fn validate_group(name: &str) -> Result<()> {
    validate_name("group", name)
}

fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "{kind} name must be 1 to {MAX_TOPIC_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!("{kind} name '{name}' is reserved")));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::InvalidArgument(format!(
            "{kind} name '{}' contains {bad:?}; allowed are a-z, A-Z, 0-9, '.', '_' and '-'",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in ["orders", "orders.dlq", "billing_v2-events", "a", &"x".repeat(249)] {
            validate(name).unwrap();
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        for name in ["", ".", "..", "../etc", "a/b", "a\\b", "with space", "nul\0", "ünïcode", &"x".repeat(250)] {
            assert!(matches!(validate(name), Err(Error::InvalidArgument(_))), "{name:?}");
        }
    }
}
