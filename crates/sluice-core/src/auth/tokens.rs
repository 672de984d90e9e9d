//! Bearer tokens: `sluice_<id>_<secret>`, where the id (16 hex digits) names the token and the
//! secret is 32 random bytes in unpadded base64url. The broker keeps only the SHA-256 of the
//! secret, so neither the file nor a listing reveals a token; the whole token is shown once,
//! when it is created.
//!
//! File `<data_dir>/security/tokens` (text, replaced atomically, closed by a checksum line):
//!
//! ```text
//! sluice-tokens 1
//! <id> <principal> <superuser 0|1> <created_ms> <sha256 of the secret, hex>
//! crc32=<8 hex digits>
//! ```
//!
//! A bootstrap token from a file named in the config (`auth.superuser_token_file`) is held in
//! memory only, with the id `bootstrap`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Principal, validate_principal};
use crate::error::{Error, Result};

const FILE: &str = "tokens";
const MAGIC: &str = "sluice-tokens";
const VERSION: u32 = 1;
const PREFIX: &str = "sluice_";
/// The id of a token read from `auth.superuser_token_file`.
pub const BOOTSTRAP_ID: &str = "bootstrap";

/// A token as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Names the token (not secret).
    pub id: String,
    /// Who it authenticates.
    pub principal: String,
    /// Whether its principal is a superuser.
    pub superuser: bool,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
struct Stored {
    info: TokenInfo,
    hash: [u8; 32],
}

/// The broker's tokens.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<BTreeMap<String, Stored>>,
}

fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equality that takes as long whatever the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    Ok(bytes)
}

/// Why a token was not accepted (the message never says which tokens exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not of the form `sluice_<id>_<secret>` (nor the bootstrap token).
    Malformed,
    /// Unknown, revoked, or a wrong secret.
    Invalid,
}

impl TokenStore {
    /// Loads `<dir>/tokens` (none yet: no tokens).
    pub fn open(dir: &Path) -> Result<TokenStore> {
        let path = dir.join(FILE);
        let bad = |reason: String| Error::BadMetadata { path: path.clone(), reason };
        let tokens = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::Storage(sluice_storage::Error::Io { operation: "reading tokens", path, source: e }));
            }
            Ok(text) => parse(&text).map_err(bad)?,
        };
        Ok(TokenStore { path, tokens: RwLock::new(tokens) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Stored>> {
        self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, tokens: &BTreeMap<String, Stored>) -> Result<()> {
        let mut body = format!("{MAGIC} {VERSION}\n");
        for stored in tokens.values().filter(|s| s.info.id != BOOTSTRAP_ID) {
            let i = &stored.info;
            body.push_str(&format!(
                "{} {} {} {} {}\n",
                i.id,
                i.principal,
                u8::from(i.superuser),
                i.created_ms,
                hex(&stored.hash)
            ));
        }
        Ok(sluice_storage::store::write_atomic(&self.path, sluice_storage::store::with_checksum(&body).as_bytes())?)
    }

    /// Creates a token for `principal`; returns it whole (shown once) with its listing.
    /// Durable when it returns (this blocks on an fsync).
    pub fn create(&self, principal: &str, superuser: bool) -> Result<(TokenInfo, String)> {
        validate_principal(principal)?;
        let id = hex(&random::<8>()?);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?);
        let info = TokenInfo {
            id: id.clone(),
            principal: principal.to_owned(),
            superuser,
            created_ms: crate::group::state::now_ms(),
        };
        let mut tokens = self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = tokens.clone();
        next.insert(id.clone(), Stored { info: info.clone(), hash: hash(secret.as_bytes()) });
        self.save(&next)?;
        *tokens = next;
        Ok((info, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes a token; false if there is none with that id. Durable when it returns.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        let mut tokens = self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !tokens.contains_key(id) {
            return Ok(false);
        }
        let mut next = tokens.clone();
        next.remove(id);
        self.save(&next)?;
        *tokens = next;
        Ok(true)
    }

    /// Every token, by id, without secrets.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.read().values().map(|s| s.info.clone()).collect()
    }

    /// Accepts `secret` (from a file the operator controls) as a superuser token of
    /// `principal`, held in memory only.
    pub fn set_bootstrap(&self, principal: &str, secret: &str) -> Result<()> {
        validate_principal(principal)?;
        if secret.len() < 32 {
            return Err(Error::InvalidArgument("the superuser token file must hold at least 32 characters".into()));
        }
        let info =
            TokenInfo { id: BOOTSTRAP_ID.into(), principal: principal.to_owned(), superuser: true, created_ms: 0 };
        let stored = Stored { info, hash: hash(secret.as_bytes()) };
        self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(BOOTSTRAP_ID.into(), stored);
        Ok(())
    }

    /// The principal a bearer token authenticates.
    pub fn authenticate(&self, token: &str) -> std::result::Result<Principal, Refusal> {
        let tokens = self.read();
        let (id, secret) = match token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')) {
            Some((id, secret)) => (id, secret),
            None if tokens.contains_key(BOOTSTRAP_ID) => (BOOTSTRAP_ID, token),
            None => return Err(Refusal::Malformed),
        };
        let stored = tokens.get(id).ok_or(Refusal::Invalid)?;
        if !same(&stored.hash, &hash(secret.as_bytes())) {
            return Err(Refusal::Invalid);
        }
        Ok(Principal {
            name: Arc::from(stored.info.principal.as_str()),
            superuser: stored.info.superuser,
            token_id: Some(Arc::from(id)),
        })
    }

    /// Whether the token with this id still exists.
    pub fn is_live(&self, id: &str) -> bool {
        self.read().contains_key(id)
    }
}

fn parse(text: &str) -> std::result::Result<BTreeMap<String, Stored>, String> {
    let lines = super::checked_lines(text, MAGIC, VERSION, "token")?;
    let mut tokens = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let [id, principal, superuser, created, digest] = fields[..] else {
            return Err(format!("bad line '{line}'"));
        };
        let hash = unhex(digest).ok_or_else(|| format!("bad hash in line for token {id}"))?;
        let info = TokenInfo {
            id: id.to_owned(),
            principal: principal.to_owned(),
            superuser: superuser == "1",
            created_ms: created.parse().map_err(|_| format!("bad time in line for token {id}"))?,
        };
        tokens.insert(id.to_owned(), Stored { info, hash });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_authenticates_until_revoked_and_the_file_holds_no_secret() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let store = TokenStore::open(dir.path())?;
        let (info, token) = store.create("billing", false)?;
        let principal = store.authenticate(&token).map_err(|r| Error::Internal(format!("{r:?}")))?;
        assert_eq!(
            (&*principal.name, principal.superuser, principal.token_id.as_deref()),
            ("billing", false, Some(info.id.as_str()))
        );
        let file = std::fs::read_to_string(dir.path().join(FILE)).map_err(|e| Error::Internal(e.to_string()))?;
        // The secret is everything after the id: URL-safe base64 may itself contain '_'.
        let secret = token.splitn(3, '_').nth(2).unwrap_or_default();
        assert!(!file.contains(secret), "only the hash is stored");
        // A wrong secret, a malformed token and, after revocation, the token itself are refused.
        assert_eq!(store.authenticate(&format!("{PREFIX}{}_wrong", info.id)), Err(Refusal::Invalid));
        assert_eq!(store.authenticate("hello"), Err(Refusal::Malformed));
        let reopened = TokenStore::open(dir.path())?;
        assert!(reopened.authenticate(&token).is_ok(), "tokens survive a restart");
        assert!(reopened.revoke(&info.id)?);
        assert_eq!(reopened.authenticate(&token), Err(Refusal::Invalid));
        assert!(TokenStore::open(dir.path())?.list().is_empty(), "the revocation is durable");
        Ok(())
    }

    #[test]
    fn a_damaged_token_file_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        TokenStore::open(dir.path())?.create("ops", true)?;
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text.replace(" 1 ", " 0 ")).map_err(|e| Error::Internal(e.to_string()))?;
        assert!(TokenStore::open(dir.path()).is_err(), "a changed superuser flag fails the checksum");
        Ok(())
    }

    #[test]
    fn the_bootstrap_token_is_a_superuser_held_in_memory() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let store = TokenStore::open(dir.path())?;
        assert!(store.set_bootstrap("admin", "short").is_err());
        store.set_bootstrap("admin", "0123456789abcdef0123456789abcdef")?;
        let principal =
            store.authenticate("0123456789abcdef0123456789abcdef").map_err(|r| Error::Internal(format!("{r:?}")))?;
        assert!(principal.superuser);
        store.create("x", false)?;
        let file = std::fs::read_to_string(dir.path().join(FILE)).map_err(|e| Error::Internal(e.to_string()))?;
        assert!(!file.contains(BOOTSTRAP_ID));
        Ok(())
    }
}
