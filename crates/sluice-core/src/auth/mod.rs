//! Who is asking, and what they may do: principals authenticated by bearer tokens
//! ([`tokens`]), and access-control lists ([`acl`]) over topics, groups and the cluster.
//!
//! With authentication on, every request names a principal (by its token). A superuser may do
//! everything; anyone else may do only what an ACL entry allows and no entry denies (deny
//! wins). The stores live in `<data_dir>/security/`, replaced atomically and checksummed like
//! topic metadata, and take effect for new requests at once; open streams re-check within a
//! few seconds (see [`Security::changes`]).

pub mod acl;
pub mod tokens;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

pub use acl::{AclEntry, Effect, Operation, Pattern, ResourceKind};
pub use tokens::{TokenInfo, TokenStore};

use crate::error::{Error, Result};

/// Directory under the data dir that holds tokens and ACLs.
pub const SECURITY_DIR: &str = "security";

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name (from its token).
    pub name: Arc<str>,
    /// A superuser may do everything.
    pub superuser: bool,
    /// The token it authenticated with (streams check it is still valid); `None` for a
    /// principal named by a verified client certificate.
    pub token_id: Option<Arc<str>>,
}

/// Checks a principal name: 1 to 128 of `A-Z a-z 0-9 . _ - @ :`.
pub fn validate_principal(name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "principal name must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '-', '@' and ':', got '{name}'"
        )))
    }
}

/// The lines of a checksummed security file after its header `<magic> <version>`, or why the
/// file cannot be read (`what` names its kind in the message).
pub(crate) fn checked_lines<'a>(
    text: &'a str,
    magic: &str,
    version: u32,
    what: &str,
) -> std::result::Result<std::str::Lines<'a>, String> {
    let body = match sluice_storage::store::verify_checksum(text) {
        sluice_storage::store::Checked::Intact(body) => body,
        sluice_storage::store::Checked::Unchecked(_) => return Err("no checksum line".into()),
        sluice_storage::store::Checked::Damaged(reason) => return Err(reason),
    };
    let mut lines = body.lines();
    if lines.next() != Some(&format!("{magic} {version}")) {
        return Err(format!("not a version {version} {what} file"));
    }
    Ok(lines)
}

/// Tokens and ACLs of a broker, and a revision that grows with every change to either.
#[derive(Debug)]
pub struct Security {
    /// Principals' tokens.
    pub tokens: TokenStore,
    /// Access-control lists.
    pub acls: acl::AclStore,
    revision: watch::Sender<u64>,
}

impl Security {
    /// Loads (or starts) the stores under `<data_dir>/security`.
    pub fn open(data_dir: &Path) -> Result<Security> {
        let dir = data_dir.join(SECURITY_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Storage(sluice_storage::Error::Io {
                operation: "creating security dir",
                path: dir.clone(),
                source: e,
            })
        })?;
        Ok(Security {
            tokens: TokenStore::open(&dir)?,
            acls: acl::AclStore::open(&dir)?,
            revision: watch::channel(0).0,
        })
    }

    /// Wakes whoever watches [`Security::changes`].
    pub fn changed(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    /// A receiver that changes whenever a token is revoked or an ACL changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Whether `principal` may do `operation` on the resource `kind`/`name`.
    pub fn allows(&self, principal: &Principal, operation: Operation, kind: ResourceKind, name: &str) -> bool {
        principal.superuser || self.acls.allows(&principal.name, operation, kind, name)
    }

    /// Whether the principal's token is still valid (not revoked); a certificate's principal
    /// always is (its certificate was verified at the handshake).
    pub fn still_valid(&self, principal: &Principal) -> bool {
        principal.token_id.as_ref().is_none_or(|id| self.tokens.is_live(id))
    }
}
