//! Per-principal quotas: produce and fetch byte rates, enforced as Kafka does by holding
//! responses back (the call succeeds, later), and a limit on open streams, refused with
//! RESOURCE_EXHAUSTED. Only authenticated principals have quotas; anonymous callers (with
//! authentication off) have none.
//!
//! A rate is a token bucket holding one second of bytes: a principal may burst that much, and
//! over time gets its rate. After a request of `n` bytes the bucket goes down by `n`; if it is
//! below zero the response waits until it would be back at zero, and says how long in its
//! `throttle_ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use crate::access::Caller;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes produced.
    Produce,
    /// Bytes fetched (Fetch, Subscribe).
    Fetch,
}

/// One principal's limits; `None` fields take the defaults. 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes per second produced.
    pub produce_bytes_per_second: Option<u64>,
    /// Bytes per second fetched.
    pub fetch_bytes_per_second: Option<u64>,
    /// Open Subscribe, Consume and ProduceStream streams.
    pub max_streams: Option<u32>,
    /// Open connections (each counted against the principal of its first request).
    pub max_connections: Option<u32>,
}

/// The quotas of a broker, validated.
#[derive(Debug, Clone, Default)]
pub struct QuotaConfig {
    /// Everyone's limits.
    pub defaults: Limits,
    /// Named principals' own limits.
    pub principals: BTreeMap<String, Limits>,
}

impl QuotaConfig {
    fn limits(&self, principal: &str) -> Limits {
        let own = self.principals.get(principal).copied().unwrap_or_default();
        Limits {
            produce_bytes_per_second: own.produce_bytes_per_second.or(self.defaults.produce_bytes_per_second),
            fetch_bytes_per_second: own.fetch_bytes_per_second.or(self.defaults.fetch_bytes_per_second),
            max_streams: own.max_streams.or(self.defaults.max_streams),
            max_connections: own.max_connections.or(self.defaults.max_connections),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The quotas' state: buckets and open streams per principal.
#[derive(Debug)]
pub struct Quotas {
    config: QuotaConfig,
    buckets: Mutex<HashMap<(String, Direction), Bucket>>,
    streams: Mutex<HashMap<String, u32>>,
    connections: Mutex<HashMap<String, u32>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Quotas {
    /// Quotas per `config`.
    pub fn new(config: QuotaConfig, metrics: Arc<crate::metrics::Metrics>) -> Arc<Quotas> {
        Arc::new(Quotas {
            config,
            buckets: Mutex::default(),
            streams: Mutex::default(),
            connections: Mutex::default(),
            metrics,
        })
    }

    /// Takes `bytes` from the caller's bucket; returns how long its response must wait. The
    /// size is computed only when the caller has a rate to charge it against.
    pub fn charge(&self, caller: &Caller, direction: Direction, bytes: impl FnOnce() -> u64) -> Duration {
        let Caller::Principal(principal) = caller else { return Duration::ZERO };
        let limits = self.config.limits(&principal.name);
        let rate = match direction {
            Direction::Produce => limits.produce_bytes_per_second,
            Direction::Fetch => limits.fetch_bytes_per_second,
        };
        let Some(rate) = rate.filter(|&r| r > 0) else { return Duration::ZERO };
        let rate = rate as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry((principal.name.to_string(), direction)).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        bucket.tokens -= bytes() as f64;
        if bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let delay = Duration::from_secs_f64(-bucket.tokens / rate);
        drop(buckets);
        self.metrics.throttled(&principal.name, direction, delay);
        delay
    }

    /// Holds a stream slot for the caller, or refuses once it has its limit open.
    pub fn open_stream(self: &Arc<Self>, caller: &Caller) -> Result<StreamSlot, Status> {
        let Caller::Principal(principal) = caller else {
            return Ok(StreamSlot { quotas: None, principal: String::new() });
        };
        let limit = self.config.limits(&principal.name).max_streams.filter(|&m| m > 0);
        let mut streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = streams.entry(principal.name.to_string()).or_default();
        if let Some(limit) = limit
            && *open >= limit
        {
            let mut status = Status::resource_exhausted(format!(
                "principal '{}' has {open} streams open, its limit (quotas.max_streams) is {limit}",
                principal.name
            ));
            status
                .metadata_mut()
                .insert(crate::status::REASON_KEY, tonic::metadata::MetadataValue::from_static("STREAM_LIMIT"));
            return Err(status);
        }
        *open += 1;
        Ok(StreamSlot { quotas: Some(Arc::clone(self)), principal: principal.name.to_string() })
    }
}

/// A connection's place in its principal's connection limit (see [`Quotas::claim_connection`]).
#[derive(Debug, Default)]
pub struct ConnectionSlot {
    claim: std::sync::OnceLock<Option<(Arc<Quotas>, String)>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(Some((quotas, principal))) = self.claim.get() else { return };
        let mut connections = quotas.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = connections.get_mut(principal) {
            *open = open.saturating_sub(1);
        }
    }
}

impl Quotas {
    /// Counts the connection of `slot` against the caller, the first time an authenticated
    /// principal uses it; refuses if that principal has its limit of connections open.
    pub fn claim_connection(self: &Arc<Self>, slot: &ConnectionSlot, caller: &Caller) -> Result<(), Status> {
        let Caller::Principal(principal) = caller else { return Ok(()) };
        if slot.claim.get().is_some() {
            return Ok(());
        }
        let limit = self.config.limits(&principal.name).max_connections.filter(|&m| m > 0);
        let mut connections = self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = connections.entry(principal.name.to_string()).or_default();
        if let Some(limit) = limit
            && *open >= limit
        {
            let mut status = Status::resource_exhausted(format!(
                "principal '{}' has {open} connections open, its limit (quotas.max_connections) is {limit}",
                principal.name
            ));
            let reason = tonic::metadata::MetadataValue::from_static("CONNECTION_LIMIT");
            status.metadata_mut().insert(crate::status::REASON_KEY, reason);
            return Err(status);
        }
        if slot.claim.set(Some((Arc::clone(self), principal.name.to_string()))).is_ok() {
            *open += 1;
        }
        Ok(())
    }
}

/// An open stream counted against its principal; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    quotas: Option<Arc<Quotas>>,
    principal: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Some(quotas) = &self.quotas else { return };
        let mut streams = quotas.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.principal) {
            *open = open.saturating_sub(1);
        }
    }
}

/// Milliseconds of a delay, for `throttle_ms`.
pub fn millis(delay: Duration) -> u32 {
    u32::try_from(delay.as_millis()).unwrap_or(u32::MAX)
}
