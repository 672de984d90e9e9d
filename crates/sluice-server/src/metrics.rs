//! Prometheus metrics: request latencies and connections kept here; broker traffic and partition
//! sizes read from the core's counters on each scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sluice_core::Broker;
use sluice_core::broker::TopicCounters;

/// Labels of per-RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// gRPC method name, e.g. `Produce`.
    pub method: String,
}

/// Labels of per-RPC outcome counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCodeLabels {
    /// gRPC method name.
    pub method: String,
    /// gRPC status code name, e.g. `Ok`, `NotFound`.
    pub code: String,
}

/// Labels of refused-request counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The principal (`-` when no valid token named one).
    pub principal: String,
    /// `unauthenticated` or `permission_denied`.
    pub outcome: String,
}

/// Labels of quota throttling.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottleLabels {
    /// The principal held back.
    pub principal: String,
    /// `produce` or `fetch`.
    pub direction: String,
}

/// Labels of certificate reloads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `loaded` or `failed`.
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    // 50 us .. ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc_latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
    rpc_total: Family<RpcCodeLabels, Counter>,
    connections: Gauge,
    connections_total: Counter,
    requests_in_flight: Gauge,
    refusals: Family<RefusalLabels, Counter>,
    throttle: Family<ThrottleLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    tls_reloads: Family<ReloadLabels, Counter>,
}

/// Reads the broker's counters at scrape time.
#[derive(Debug)]
struct BrokerCollector {
    broker: Broker,
}

impl BrokerCollector {
    fn topic_counter(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: fn(&TopicCounters) -> &AtomicU64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for topic in self.broker.topics() {
            let labels = [("topic", topic.name())];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value(topic.counters()).load(Ordering::Relaxed)).encode(metric)?;
        }
        Ok(())
    }

    fn partition_gauge(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: fn(&sluice_storage::LogStats) -> u64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for topic in self.broker.topics() {
            for partition in topic.partitions().iter() {
                let id = partition.id().to_string();
                let labels = [("topic", topic.name()), ("partition", id.as_str())];
                let metric = family.encode_family(&labels)?;
                let stats = partition.stats();
                ConstGauge::new(i64::try_from(value(&stats)).unwrap_or(i64::MAX)).encode(metric)?;
            }
        }
        Ok(())
    }

    fn partition_log_reads(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let help = "Reads of the segment files: readers the in-memory tail of recent batches could not serve";
        let mut family = encoder.encode_descriptor("sluice_partition_log_reads", help, None, MetricType::Counter)?;
        for topic in self.broker.topics() {
            for partition in topic.partitions().iter() {
                let id = partition.id().to_string();
                let labels = [("topic", topic.name()), ("partition", id.as_str())];
                ConstCounter::new(partition.log_reads()).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl BrokerCollector {
    fn partition_damage(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let partitions: Vec<_> = self
            .broker
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| (t.clone(), p.clone())).collect::<Vec<_>>())
            .collect();
        let help = "Offsets that cannot be read (damaged batches found by reads, segment files lost before start)";
        let mut family =
            encoder.encode_descriptor("sluice_partition_damaged_offsets", help, None, MetricType::Gauge)?;
        for (topic, partition) in &partitions {
            let id = partition.id().to_string();
            let labels = [("topic", topic.name()), ("partition", id.as_str())];
            let offsets: u64 = partition.damage().iter().map(|d| d.to - d.from).sum();
            ConstGauge::new(i64::try_from(offsets).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        let help = "Reads refused with DATA_LOSS because they reached damaged or missing offsets";
        let mut family =
            encoder.encode_descriptor("sluice_partition_data_loss_reads", help, None, MetricType::Counter)?;
        for (topic, partition) in &partitions {
            let id = partition.id().to_string();
            let labels = [("topic", topic.name()), ("partition", id.as_str())];
            ConstCounter::new(partition.damage_reads()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.topic_counter(&mut encoder, "sluice_records_in", "Records appended", |c| &c.records_in)?;
        self.topic_counter(&mut encoder, "sluice_bytes_in", "Record bytes appended", |c| &c.bytes_in)?;
        self.topic_counter(&mut encoder, "sluice_records_out", "Records sent to readers", |c| &c.records_out)?;
        self.topic_counter(&mut encoder, "sluice_bytes_out", "Stored bytes of the records sent to readers", |c| {
            &c.bytes_out
        })?;
        self.partition_gauge(&mut encoder, "sluice_partition_size_bytes", "Bytes on disk", |s| s.size_bytes)?;
        self.partition_gauge(&mut encoder, "sluice_partition_start_offset", "First readable offset", |s| {
            s.start_offset
        })?;
        self.partition_gauge(&mut encoder, "sluice_partition_end_offset", "Next offset to be written", |s| {
            s.end_offset
        })?;
        self.partition_gauge(&mut encoder, "sluice_partition_segments", "Segment files", |s| s.segment_count as u64)?;
        self.partition_log_reads(&mut encoder)?;
        self.partition_damage(&mut encoder)?;
        let recovery = self.broker.recovery();
        let gauges = [
            (
                "sluice_recovery_unclean_partitions",
                "Partitions found not closed cleanly at start (crash or kill)",
                recovery.unclean_partitions,
            ),
            (
                "sluice_recovery_scanned_bytes",
                "Segment bytes read and verified by start-up recovery",
                recovery.scanned_bytes,
            ),
            ("sluice_recovery_tails_cut", "Torn segment tails cut at start", recovery.tails_cut),
            ("sluice_recovery_cut_bytes", "Bytes of torn tails cut at start", recovery.cut_bytes),
            ("sluice_recovery_indexes_rebuilt", "Index files rebuilt from the log at start", recovery.indexes_rebuilt),
            (
                "sluice_recovery_missing_ranges",
                "Offset ranges found missing at start (lost segment files)",
                recovery.missing_ranges,
            ),
            (
                "sluice_recovery_batches_replayed",
                "Batch headers replayed at start to rebuild producer state",
                recovery.batches_replayed,
            ),
            (
                "sluice_recovery_group_positions_moved",
                "Group positions moved back to their partition's end at start",
                recovery.group_positions_moved,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
        }
        let space = self.broker.free_space();
        let help = "Free bytes on the data directory's disk";
        let metric = encoder.encode_descriptor("sluice_disk_free_bytes", help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::try_from(space.available()).unwrap_or(i64::MAX)).encode(metric)?;
        let help = "Free bytes kept in reserve: writes are refused (DISK_FULL) below it";
        let metric = encoder.encode_descriptor("sluice_disk_reserve_bytes", help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::try_from(space.reserve()).unwrap_or(i64::MAX)).encode(metric)?;
        let metric = encoder.encode_descriptor("sluice_topics", "Topics", None, MetricType::Gauge)?;
        ConstGauge::new(self.broker.topics().len() as i64).encode(metric)?;
        Ok(())
    }
}

impl Metrics {
    /// Metrics for `broker`.
    pub fn new(broker: Broker) -> Arc<Self> {
        let mut registry = Registry::default();
        let rpc_latency = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let rpc_total = Family::<RpcCodeLabels, Counter>::default();
        let connections = Gauge::default();
        let connections_total = Counter::default();
        let requests_in_flight = Gauge::default();
        registry.register("sluice_rpc_duration_seconds", "Time to serve an RPC", rpc_latency.clone());
        registry.register("sluice_rpc", "RPCs served, by outcome", rpc_total.clone());
        registry.register("sluice_connections", "Open gRPC connections", connections.clone());
        registry.register("sluice_connections_accepted", "gRPC connections accepted", connections_total.clone());
        let in_flight_help = "gRPC requests and streams being served (open Subscribe and Consume streams included)";
        registry.register("sluice_requests_in_flight", in_flight_help, requests_in_flight.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        let refusals_help = "Requests refused for missing or invalid credentials, or a missing right, by principal";
        registry.register("sluice_access_refused", refusals_help, refusals.clone());
        let throttle = Family::<ThrottleLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "sluice_quota_throttle_seconds",
            "Time responses were held back for quotas, by principal",
            throttle.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "sluice_tls_certificate_reloads",
            "Changed TLS certificate files (or SIGHUP) that were loaded, or failed and left the previous certificate in use",
            tls_reloads.clone(),
        );
        registry.register_collector(Box::new(BrokerCollector { broker: broker.clone() }));
        registry.register_collector(Box::new(crate::group_metrics::GroupCollector { broker }));
        Arc::new(Metrics {
            registry,
            rpc_latency,
            rpc_total,
            connections,
            connections_total,
            requests_in_flight,
            refusals,
            throttle,
            tls_reloads,
        })
    }

    /// Records one RPC.
    pub fn observe_rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.rpc_latency.get_or_create(&RpcLabels { method: method.to_owned() }).observe(elapsed.as_secs_f64());
        self.rpc_total.get_or_create(&RpcCodeLabels { method: method.to_owned(), code: format!("{code:?}") }).inc();
    }

    /// The gauge of requests in flight, kept by the server's [`crate::inflight::Inflight`].
    pub fn requests_in_flight(&self) -> Gauge {
        self.requests_in_flight.clone()
    }

    /// Adds time a principal's responses were held back for a quota.
    pub fn throttled(&self, principal: &str, direction: crate::quota::Direction, delay: Duration) {
        let direction = match direction {
            crate::quota::Direction::Produce => "produce",
            crate::quota::Direction::Fetch => "fetch",
        };
        let labels = ThrottleLabels { principal: principal.to_owned(), direction: direction.into() };
        self.throttle.get_or_create(&labels).inc_by(delay.as_secs_f64());
    }

    /// Counts a refused request.
    pub fn access_refused(&self, principal: &str, code: tonic::Code) {
        let outcome = if code == tonic::Code::Unauthenticated { "unauthenticated" } else { "permission_denied" };
        self.refusals.get_or_create(&RefusalLabels { principal: principal.to_owned(), outcome: outcome.into() }).inc();
    }

    /// Counts a certificate reload that loaded or failed.
    pub fn tls_reloaded(&self, reload: crate::tls::Reload) {
        let outcome = if reload == crate::tls::Reload::Loaded { "loaded" } else { "failed" };
        self.tls_reloads.get_or_create(&ReloadLabels { outcome: outcome.into() }).inc();
    }

    /// A connection opened.
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_total.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
