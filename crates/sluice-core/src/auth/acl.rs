//! Access-control lists: which principal may do which operation on which resources.
//!
//! An entry is (principal or `*`) × resource kind (topic, group, cluster) × pattern (a name, a
//! prefix, or `*` for every name) × operation (or `all`) × allow or deny. A request is allowed
//! if an entry allows it and none denies it. Names are compared byte for byte: a prefix
//! `orders.` matches `orders.eu` but not `orders-secret`, and no name can contain `/`.
//!
//! File `<data_dir>/security/acls` (text, replaced atomically, closed by a checksum line):
//!
//! ```text
//! sluice-acls 1
//! <id> <allow|deny> <principal|*> <topic|group|cluster> <literal|prefix|any> <name or -> <operation>
//! crc32=<8 hex digits>
//! ```

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::{Error, Result};

const FILE: &str = "acls";
const MAGIC: &str = "sluice-acls";
const VERSION: u32 = 1;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Append records to a topic.
    Produce,
    /// Read a topic, or consume as a group.
    Consume,
    /// See a topic or group and its offsets and settings.
    Describe,
    /// Create topics (on the cluster, or topics by name) and groups.
    Create,
    /// Change a topic's or group's settings, add partitions.
    Alter,
    /// Delete a topic.
    Delete,
    /// Reset or delete a group.
    GroupAdmin,
    /// List, redrive and discard a group's dead letters.
    DeadLetterAdmin,
    /// Manage ACLs and tokens.
    AclAdmin,
    /// Every operation.
    All,
}

impl Operation {
    /// Every operation but `All`, in the order they are written.
    pub const EACH: [Operation; 9] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Describe,
        Operation::Create,
        Operation::Alter,
        Operation::Delete,
        Operation::GroupAdmin,
        Operation::DeadLetterAdmin,
        Operation::AclAdmin,
    ];

    /// How it is written in the file, the CLI and messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Create => "create",
            Operation::Alter => "alter",
            Operation::Delete => "delete",
            Operation::GroupAdmin => "group-admin",
            Operation::DeadLetterAdmin => "dead-letter-admin",
            Operation::AclAdmin => "acl-admin",
            Operation::All => "all",
        }
    }

    /// The operation written as `name`.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::EACH.into_iter().chain([Operation::All]).find(|o| o.name() == name)
    }
}

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// Topics.
    Topic,
    /// Consumer groups.
    Group,
    /// The broker as a whole (listing, broker info, ACL and token admin).
    Cluster,
}

impl ResourceKind {
    /// How it is written.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Cluster => "cluster",
        }
    }

    /// The kind written as `name`.
    pub fn parse(name: &str) -> Option<ResourceKind> {
        [ResourceKind::Topic, ResourceKind::Group, ResourceKind::Cluster].into_iter().find(|k| k.name() == name)
    }
}

/// Which names of its kind an entry covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Exactly this name.
    Literal(String),
    /// Every name that starts with this.
    Prefix(String),
    /// Every name.
    Any,
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(literal) => literal == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Pattern::Any => true,
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Grants the operation.
    Allow,
    /// Refuses it, whatever else allows it.
    Deny,
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    /// Names the entry (for removal).
    pub id: u64,
    /// Allow or deny.
    pub effect: Effect,
    /// A principal's name, or `*` for every authenticated principal.
    pub principal: String,
    /// What kind of resource.
    pub kind: ResourceKind,
    /// Which of them.
    pub pattern: Pattern,
    /// What may (not) be done.
    pub operation: Operation,
}

impl AclEntry {
    fn covers(&self, principal: &str, operation: Operation, kind: ResourceKind, name: &str) -> bool {
        (self.principal == "*" || self.principal == principal)
            && self.kind == kind
            && (self.operation == Operation::All || self.operation == operation)
            && self.pattern.matches(name)
    }
}

/// The broker's ACLs.
#[derive(Debug)]
pub struct AclStore {
    path: PathBuf,
    entries: RwLock<Vec<AclEntry>>,
}

fn validate(entry: &AclEntry) -> Result<()> {
    if entry.principal != "*" {
        super::validate_principal(&entry.principal)?;
    }
    if entry.operation == Operation::All && entry.effect == Effect::Allow && entry.principal == "*" {
        // Allowed, but worth a look: every authenticated principal may do everything there.
        tracing::warn!(?entry, "an ACL allows every operation to every principal");
    }
    match &entry.pattern {
        Pattern::Literal(name) | Pattern::Prefix(name) if entry.kind != ResourceKind::Cluster => {
            if name.is_empty() || name.contains(['/', '\\', ' ', '\n']) {
                return Err(Error::InvalidArgument(format!(
                    "ACL resource name '{}' is not a valid name",
                    name.escape_debug()
                )));
            }
            if let Pattern::Literal(name) = &entry.pattern {
                crate::topic_name::validate(name)?;
            }
            Ok(())
        }
        Pattern::Literal(_) | Pattern::Prefix(_) => {
            Err(Error::InvalidArgument("cluster ACLs name no resource: use the pattern '*'".into()))
        }
        Pattern::Any => Ok(()),
    }
}

impl AclStore {
    /// Loads `<dir>/acls` (none yet: no entries).
    pub fn open(dir: &Path) -> Result<AclStore> {
        let path = dir.join(FILE);
        let entries = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::Storage(sluice_storage::Error::Io { operation: "reading ACLs", path, source: e }));
            }
            Ok(text) => parse(&text).map_err(|reason| Error::BadMetadata { path: path.clone(), reason })?,
        };
        Ok(AclStore { path, entries: RwLock::new(entries) })
    }

    fn save(&self, entries: &[AclEntry]) -> Result<()> {
        let mut body = format!("{MAGIC} {VERSION}\n");
        for e in entries {
            let (pattern, name) = match &e.pattern {
                Pattern::Literal(name) => ("literal", name.as_str()),
                Pattern::Prefix(name) => ("prefix", name.as_str()),
                Pattern::Any => ("any", "-"),
            };
            let effect = if e.effect == Effect::Allow { "allow" } else { "deny" };
            body.push_str(&format!(
                "{} {effect} {} {} {pattern} {name} {}\n",
                e.id,
                e.principal,
                e.kind.name(),
                e.operation.name()
            ));
        }
        Ok(sluice_storage::store::write_atomic(&self.path, sluice_storage::store::with_checksum(&body).as_bytes())?)
    }

    /// Adds an entry (its `id` is assigned); returns it. Durable when it returns.
    pub fn add(&self, mut entry: AclEntry) -> Result<AclEntry> {
        validate(&entry)?;
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        entry.id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let mut next = entries.clone();
        next.push(entry.clone());
        self.save(&next)?;
        *entries = next;
        Ok(entry)
    }

    /// Removes the entry with this id; false if there is none. Durable when it returns.
    pub fn remove(&self, id: u64) -> Result<bool> {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !entries.iter().any(|e| e.id == id) {
            return Ok(false);
        }
        let next: Vec<AclEntry> = entries.iter().filter(|e| e.id != id).cloned().collect();
        self.save(&next)?;
        *entries = next;
        Ok(true)
    }

    /// Every entry, in the order added.
    pub fn list(&self) -> Vec<AclEntry> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether `principal` may do `operation` on `kind`/`name`: an entry allows it and none
    /// denies it.
    pub fn allows(&self, principal: &str, operation: Operation, kind: ResourceKind, name: &str) -> bool {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut allowed = false;
        for entry in entries.iter().filter(|e| e.covers(principal, operation, kind, name)) {
            if entry.effect == Effect::Deny {
                return false;
            }
            allowed = true;
        }
        allowed
    }
}

fn parse(text: &str) -> std::result::Result<Vec<AclEntry>, String> {
    let lines = super::checked_lines(text, MAGIC, VERSION, "ACL")?;
    lines
        .map(|line| {
            let bad = || format!("bad line '{line}'");
            let fields: Vec<&str> = line.split(' ').collect();
            let [id, effect, principal, kind, pattern, name, operation] = fields[..] else { return Err(bad()) };
            Ok(AclEntry {
                id: id.parse().map_err(|_| bad())?,
                effect: match effect {
                    "allow" => Effect::Allow,
                    "deny" => Effect::Deny,
                    _ => return Err(bad()),
                },
                principal: principal.to_owned(),
                kind: ResourceKind::parse(kind).ok_or_else(bad)?,
                pattern: match pattern {
                    "literal" => Pattern::Literal(name.to_owned()),
                    "prefix" => Pattern::Prefix(name.to_owned()),
                    "any" => Pattern::Any,
                    _ => return Err(bad()),
                },
                operation: Operation::parse(operation).ok_or_else(bad)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(effect: Effect, principal: &str, kind: ResourceKind, pattern: Pattern, operation: Operation) -> AclEntry {
        AclEntry { id: 0, effect, principal: principal.into(), kind, pattern, operation }
    }

    #[test]
    fn allow_needs_an_entry_deny_wins_and_prefixes_match_bytes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let store = AclStore::open(dir.path())?;
        let topic = ResourceKind::Topic;
        assert!(!store.allows("billing", Operation::Produce, topic, "orders.eu"), "nothing without an entry");
        store.add(entry(Effect::Allow, "billing", topic, Pattern::Prefix("orders.".into()), Operation::Produce))?;
        assert!(store.allows("billing", Operation::Produce, topic, "orders.eu"));
        assert!(!store.allows("billing", Operation::Produce, topic, "orders-secret"), "a prefix is bytes, not a word");
        assert!(!store.allows("billing", Operation::Consume, topic, "orders.eu"), "another operation");
        assert!(!store.allows("email", Operation::Produce, topic, "orders.eu"), "another principal");
        assert!(!store.allows("billing", Operation::Produce, ResourceKind::Group, "orders.eu"), "another kind");
        let deny = store.add(entry(Effect::Deny, "*", topic, Pattern::Literal("orders.pii".into()), Operation::All))?;
        assert!(!store.allows("billing", Operation::Produce, topic, "orders.pii"), "deny wins");
        assert!(store.allows("billing", Operation::Produce, topic, "orders.eu"));
        // Entries survive a restart; removing one takes effect.
        let reopened = AclStore::open(dir.path())?;
        assert_eq!(reopened.list().len(), 2);
        assert!(reopened.remove(deny.id)?);
        assert!(reopened.allows("billing", Operation::Produce, topic, "orders.pii"));
        assert!(!reopened.remove(deny.id)?);
        Ok(())
    }

    #[test]
    fn bad_entries_and_damaged_files_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let store = AclStore::open(dir.path())?;
        let bad = |kind, pattern| entry(Effect::Allow, "x", kind, pattern, Operation::All);
        assert!(store.add(bad(ResourceKind::Topic, Pattern::Literal("../etc".into()))).is_err());
        assert!(store.add(bad(ResourceKind::Topic, Pattern::Prefix("a/b".into()))).is_err());
        assert!(store.add(bad(ResourceKind::Cluster, Pattern::Literal("x".into()))).is_err());
        assert!(
            store.add(entry(Effect::Allow, "bad name", ResourceKind::Cluster, Pattern::Any, Operation::All)).is_err()
        );
        store.add(bad(ResourceKind::Topic, Pattern::Any))?;
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text.replace("allow", "deny ")).map_err(|e| Error::Internal(e.to_string()))?;
        assert!(AclStore::open(dir.path()).is_err());
        Ok(())
    }
}
