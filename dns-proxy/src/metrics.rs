//! Prometheus metrics (served on /metrics by the ops listener).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub view: String,
    pub qtype: &'static str,
    pub rcode: &'static str,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: &'static str,
}

fn histogram() -> Histogram {
    // 50 µs .. ~3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    pub queries: Family<QueryLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub coalesced: Counter,
    /// Replies copied from the wire-format answer cache (no parse, no encode).
    pub wire_cache_hits: Counter,
    pub upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Queries not answered normally: refused clients, rate limited, malformed.
    pub rejected: Family<DropLabels, Counter>,
    pub services: Gauge,
    /// Open TCP client connections.
    pub tcp_connections: Gauge,
    pub state_errors: Counter,
    /// Failures of a state watch (API errors; it backs off and relists), by kind.
    pub watch_errors: Family<KindLabels, Counter>,
    /// 1 while a kind's watch is failing (not ready until it lists again).
    pub watch_failing: Family<KindLabels, Gauge>,
    pub config_reloads: Family<DropLabels, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            queries: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            coalesced: Counter::default(),
            wire_cache_hits: Counter::default(),
            upstream_latency: Family::new_with_constructor(histogram),
            upstream_errors: Family::default(),
            rejected: Family::default(),
            services: Gauge::default(),
            tcp_connections: Gauge::default(),
            state_errors: Counter::default(),
            watch_errors: Family::default(),
            watch_failing: Family::default(),
            config_reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("leafbridge_dns");
        r.register(
            "queries",
            "Queries answered, by view, type, response code and transport",
            m.queries.clone(),
        );
        r.register(
            "cache_hits",
            "Forwarded queries answered from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Forwarded queries not in the cache",
            m.cache_misses.clone(),
        );
        r.register(
            "coalesced",
            "Forwarded queries that joined an identical in-flight upstream query",
            m.coalesced.clone(),
        );
        r.register(
            "wire_cache_hits",
            "Replies copied from the wire-format answer cache of recent identical queries",
            m.wire_cache_hits.clone(),
        );
        r.register(
            "upstream_latency_seconds",
            "Upstream exchange latency",
            m.upstream_latency.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream exchange failures",
            m.upstream_errors.clone(),
        );
        r.register(
            "rejected",
            "Queries refused or dropped, by reason",
            m.rejected.clone(),
        );
        r.register("services", "Services in the zone index", m.services.clone());
        r.register(
            "tcp_connections",
            "Open TCP client connections",
            m.tcp_connections.clone(),
        );
        r.register(
            "state_errors",
            "Malformed state manifests skipped (previous good state kept)",
            m.state_errors.clone(),
        );
        r.register(
            "watch_errors",
            "State watch failures by kind (the watch backs off, then relists)",
            m.watch_errors.clone(),
        );
        r.register(
            "watch_failing",
            "1 while the watch of a kind is failing (not ready meanwhile)",
            m.watch_failing.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result",
            m.config_reloads.clone(),
        );
        m
    }
}
