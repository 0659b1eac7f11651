//! The YAML configuration file: listeners, zones, views, upstreams, cache and limits.
//!
//! Unknown fields are rejected so a typo never silently turns a policy off.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse configuration: {0}")]
    Parse(#[from] leafbridge_api::yaml::Error),
    #[error("invalid domain name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// UDP and TCP listeners (RFC 7766: a DNS server must serve both).
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Address of the /metrics, /healthz, /readyz HTTP listener.
    #[serde(default)]
    pub ops_listen: Option<SocketAddr>,
    /// Tokio worker threads (benchmarks compare servers with one worker each).
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Clients allowed to query at all; everyone else gets REFUSED (never an open resolver).
    #[serde(default = "default_allow")]
    pub allow_clients: Vec<IpNet>,
    /// Ordered view list; among views of equal priority the first whose selector matches
    /// answers. `DNSView` objects are merged in (see `view.rs`). Clients matching no view
    /// get the standard in-cluster view only from the cluster's own networks
    /// (`cluster.pod_cidrs`, `cluster.node_cidrs`); everyone else gets `default_view`.
    #[serde(default)]
    pub views: Vec<ViewConfig>,
    /// The view (a name from `views`) for clients that match no view and are not in the
    /// cluster's networks, and for every unmatched client until DNSViews are listed (or
    /// while their watch fails). Absent: those clients are REFUSED (fail closed).
    #[serde(default)]
    pub default_view: Option<String>,
    #[serde(default)]
    pub upstreams: UpstreamConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 53))]
}

fn default_allow() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClusterConfig {
    /// The cluster domain (Kubernetes `--cluster-domain`).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Optional office-facing zone where `<svc>.<ns>.<zone>` answers LoadBalancer addresses
    /// (like CoreDNS k8s_external).
    #[serde(default)]
    pub external_zone: Option<String>,
    /// Service CIDRs: their reverse zones are answered from the index.
    #[serde(default)]
    pub service_cidrs: Vec<IpNet>,
    /// Pod CIDRs: their reverse zones are answered from the index, and clients inside them
    /// that match no view get the in-cluster view.
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
    /// Node networks: clients inside them that match no view get the in-cluster view
    /// (hostNetwork Pods and the nodes themselves).
    #[serde(default)]
    pub node_cidrs: Vec<IpNet>,
    /// TTL of every record in the cluster zone (CoreDNS's default is 5 s).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// How `a-b-c-d.<ns>.pod.<zone>` is answered.
    #[serde(default)]
    pub pods: PodMode,
    /// The name server's name: the NS record at every zone apex and the SOA MNAME
    /// (RFC 1035 3.3.11, 3.3.13). Default `ns.dns.<zone>`, as CoreDNS names it.
    #[serde(default)]
    pub nameserver: Option<String>,
    /// Addresses of the name server name when it lies inside the cluster zone (answered
    /// for A/AAAA and added to NS answers). Default: the `listen` addresses that are not
    /// wildcards.
    #[serde(default)]
    pub nameserver_addresses: Vec<IpAddr>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            zone: default_zone(),
            external_zone: None,
            service_cidrs: Vec::new(),
            pod_cidrs: Vec::new(),
            node_cidrs: Vec::new(),
            ttl: default_ttl(),
            pods: PodMode::default(),
            nameserver: None,
            nameserver_addresses: Vec::new(),
        }
    }
}

fn default_zone() -> String {
    "cluster.local".into()
}
fn default_ttl() -> u32 {
    5
}

/// Pod record policy, named after CoreDNS's `pods` option.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PodMode {
    /// Answer only when a Pod with that IP exists in that namespace.
    #[default]
    Verified,
    /// Answer any well-formed name (kube-dns behaviour).
    Insecure,
    /// Never answer pod records (NXDOMAIN).
    Disabled,
}

/// Which address a Service's name answers with in a view (the DNSView `serviceAddress`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAddress {
    /// `status.loadBalancer.ingress[].ip`; Services without one have no address.
    LoadBalancerIp,
    /// `spec.clusterIPs` (clients the service CIDR is routed to).
    ClusterIp,
}

/// Where a view came from; decides how it ranks (see `view.rs`). Not a file setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ViewOrigin {
    #[default]
    File,
    DnsView,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ViewConfig {
    pub name: String,
    /// Client source networks.
    #[serde(default)]
    pub sources: Vec<IpNet>,
    /// Local listening addresses the query reached.
    #[serde(default)]
    pub destinations: Vec<IpAddr>,
    /// Forwarders whose EDNS client-subnet (RFC 7871) option is trusted to name the real client.
    #[serde(default)]
    pub trusted_ecs_from: Vec<IpNet>,
    /// Answer like in-cluster DNS (ClusterIPs, everything visible) instead of office answers.
    #[serde(default)]
    pub standard: bool,
    /// If set, only these namespaces are visible.
    #[serde(default)]
    pub namespaces_allow: Option<Vec<String>>,
    #[serde(default)]
    pub namespaces_deny: Vec<String>,
    /// ClusterIPs are answered only when the service CIDR is routed to these clients.
    #[serde(default)]
    pub service_cidr_announced: bool,
    /// Pod IPs (headless Services, pod records) only when the pod CIDRs are routed to them.
    #[serde(default)]
    pub pod_cidr_announced: bool,
    /// Whether names outside the cluster zones are forwarded for this view.
    #[serde(default = "yes")]
    pub forward: bool,
    /// Higher wins when several views match a client (then file order).
    #[serde(default)]
    pub priority: i32,
    /// Overrides the address choice that `standard` and `service_cidr_announced` imply.
    #[serde(default)]
    pub service_address: Option<ServiceAddress>,
    /// Only Services whose labels this selects are visible (`matchLabels`,
    /// `matchExpressions`, as in Kubernetes).
    #[serde(default)]
    pub service_selector: Option<LabelSelector>,
    #[serde(skip)]
    pub origin: ViewOrigin,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct UpstreamConfig {
    /// Upstreams for names no zone rule matches, tried in order (failover).
    #[serde(default)]
    pub default: Vec<SocketAddr>,
    /// Per-zone upstreams, like dnsmasq `server=/zone/addr#port`; the longest match wins.
    #[serde(default)]
    pub zones: Vec<ZoneUpstream>,
    /// Per-attempt timeout before failing over to the next upstream.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    1500
}

/// Without an `upstreams` section: nothing to forward to, and the default timeout (a
/// derived default would make it 0).
impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            default: Vec::new(),
            zones: Vec::new(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

impl UpstreamConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ZoneUpstream {
    pub zone: String,
    pub servers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CacheConfig {
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// Bytes the forwarding cache's answers may take (keys, records and per-entry
    /// overhead): an upstream answer is up to 64 KiB, so `max_entries` alone would allow
    /// gigabytes. A full 100,000-entry cache of typical answers takes about 32 MiB.
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: usize,
    /// Upper bound on any cached TTL.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u32,
    /// Upper bound on negative caching (RFC 2308 section 5 suggests 1–3 hours at most).
    #[serde(default = "default_max_negative_ttl")]
    pub max_negative_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
            max_ttl: default_max_ttl(),
            max_negative_ttl: default_max_negative_ttl(),
        }
    }
}

fn default_cache_entries() -> usize {
    100_000
}
fn default_cache_bytes() -> usize {
    64 << 20
}
fn default_max_ttl() -> u32 {
    86_400
}
fn default_max_negative_ttl() -> u32 {
    3_600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct LimitsConfig {
    /// Largest UDP response we send, whatever the client's EDNS buffer size (RFC 6891 6.2.5;
    /// 1232 is the DNS Flag Day 2020 value that avoids fragmentation).
    #[serde(default = "default_udp_payload")]
    pub max_udp_payload: u16,
    /// Per-client token bucket (on by default: 1,000 queries/s, bursts of 2,000, per
    /// IPv4 address and IPv6 /64); `null` turns it off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: Option<RateLimit>,
    /// A TCP connection without a complete query for this long is closed, however slowly
    /// bytes trickle in (RFC 7766 6.2.3).
    #[serde(default = "default_tcp_idle_ms")]
    pub tcp_idle_ms: u64,
    /// A reply not taken by the client within this long closes the connection: a client
    /// that pipelines and never reads holds no task.
    #[serde(default = "default_tcp_write_timeout_ms")]
    pub tcp_write_timeout_ms: u64,
    /// Open TCP connections per listener; beyond it new ones are closed at once, so idle
    /// connections cannot exhaust file descriptors (RFC 7766 6.2.2).
    #[serde(default = "default_max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// Open TCP connections per client (address, or IPv6 prefix of the rate limit), so one
    /// client cannot take all of `max_tcp_connections`.
    #[serde(default = "default_max_tcp_connections_per_client")]
    pub max_tcp_connections_per_client: usize,
    /// Queries of one TCP connection answered concurrently (RFC 7766 6.2.1.1); reading
    /// pauses beyond it.
    #[serde(default = "default_tcp_pipeline")]
    pub tcp_pipeline: usize,
    /// Distinct questions being forwarded at once; past it a new one gets SERVFAIL at
    /// once (no socket, no wait).
    #[serde(default = "default_max_forwards")]
    pub max_forwards_in_flight: usize,
    /// Forwarded queries in flight per client (same client key as the rate limit).
    #[serde(default = "default_max_forwards_per_client")]
    pub max_forwards_per_client: usize,
    /// Clients waiting on one question already in flight (coalesced); past it, SERVFAIL.
    #[serde(default = "default_max_waiters")]
    pub max_waiters_per_question: usize,
    /// Receive buffer asked for each UDP listener (SO_RCVBUF), in bytes, so a burst of
    /// queries waits instead of being dropped by the kernel; the kernel caps it at
    /// `net.core.rmem_max` (the effective size is logged). 0 keeps the system default.
    /// Like unbound's `so-rcvbuf`. Needs a listener restart.
    #[serde(default = "default_udp_receive_buffer")]
    pub udp_receive_buffer: usize,
}

fn default_max_tcp_connections() -> usize {
    1024
}
fn default_max_tcp_connections_per_client() -> usize {
    32
}
fn default_tcp_pipeline() -> usize {
    16
}
fn default_tcp_write_timeout_ms() -> u64 {
    2_000
}
fn default_max_forwards() -> usize {
    4_096
}
fn default_max_forwards_per_client() -> usize {
    256
}
fn default_max_waiters() -> usize {
    64
}
/// An office client asks a few queries a second; a burst of 2,000 covers a browser
/// opening many tabs, and 1,000/s a NAT gateway for a floor. A forwarder that names its
/// clients (trusted client-subnet) is limited per client, not as one.
fn default_rate_limit() -> Option<RateLimit> {
    Some(RateLimit {
        queries_per_second: 1_000,
        burst: 2_000,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    })
}

/// 4 MiB: about 4,000 queued queries (the kernel charges about 1 KiB per datagram),
/// 200 ms at 20,000 queries/s; the default of 208 KiB held about 200.
fn default_udp_receive_buffer() -> usize {
    4 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_udp_payload: default_udp_payload(),
            rate_limit: default_rate_limit(),
            tcp_idle_ms: default_tcp_idle_ms(),
            tcp_write_timeout_ms: default_tcp_write_timeout_ms(),
            max_tcp_connections: default_max_tcp_connections(),
            max_tcp_connections_per_client: default_max_tcp_connections_per_client(),
            tcp_pipeline: default_tcp_pipeline(),
            max_forwards_in_flight: default_max_forwards(),
            max_forwards_per_client: default_max_forwards_per_client(),
            max_waiters_per_question: default_max_waiters(),
            udp_receive_buffer: default_udp_receive_buffer(),
        }
    }
}

fn default_udp_payload() -> u16 {
    1232
}
fn default_tcp_idle_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RateLimit {
    pub queries_per_second: u32,
    pub burst: u32,
    /// Clients are counted per prefix of this length (as unbound's `ip-ratelimit` and
    /// BIND's RRL do): an IPv6 host owns a whole /64.
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_ipv4_prefix() -> u8 {
    32
}
fn default_ipv6_prefix() -> u8 {
    64
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = leafbridge_api::yaml::from_str(text)?;
        config.validate()?;
        if config.cluster.nameserver_addresses.is_empty() {
            let mut addrs: Vec<IpAddr> = config
                .listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect();
            addrs.dedup();
            config.cluster.nameserver_addresses = addrs;
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name(&self.cluster.zone)?;
        if let Some(z) = &self.cluster.external_zone {
            check_name(z)?;
        }
        if let Some(n) = &self.cluster.nameserver {
            check_name(n)?;
        }
        if self.upstreams.timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "upstreams.timeout_ms must be positive".into(),
            ));
        }
        for z in &self.upstreams.zones {
            check_name(&z.zone)?;
            if z.servers.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "zone {} has no upstream servers",
                    z.zone
                )));
            }
        }
        // RFC 6891 6.2.5: values below 512 are treated as 512.
        if self.limits.max_udp_payload < 512 {
            return Err(ConfigError::Invalid(
                "limits.max_udp_payload must be at least 512 (RFC 6891 6.2.5)".into(),
            ));
        }
        if let Some(r) = self.limits.rate_limit
            && (r.queries_per_second == 0 || r.burst == 0)
        {
            return Err(ConfigError::Invalid(
                "rate_limit queries_per_second and burst must be positive".into(),
            ));
        }
        if let Some(r) = self.limits.rate_limit
            && (r.ipv4_prefix == 0
                || r.ipv4_prefix > 32
                || r.ipv6_prefix == 0
                || r.ipv6_prefix > 128)
        {
            return Err(ConfigError::Invalid(
                "rate_limit ipv4_prefix must be 1..=32 and ipv6_prefix 1..=128".into(),
            ));
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_tcp_connections", l.max_tcp_connections),
            (
                "max_tcp_connections_per_client",
                l.max_tcp_connections_per_client,
            ),
            ("tcp_pipeline", l.tcp_pipeline),
            ("max_forwards_in_flight", l.max_forwards_in_flight),
            ("max_forwards_per_client", l.max_forwards_per_client),
            ("max_waiters_per_question", l.max_waiters_per_question),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be positive"
                )));
            }
        }
        if let Some(d) = &self.default_view
            && !self.views.iter().any(|v| &v.name == d)
        {
            return Err(ConfigError::Invalid(format!(
                "default_view {d} is not a view in views"
            )));
        }
        let mut names = std::collections::HashSet::new();
        for v in &self.views {
            if !names.insert(v.name.as_str()) {
                return Err(ConfigError::Invalid(format!("duplicate view {}", v.name)));
            }
            if let Some(s) = &v.service_selector {
                crate::view::ServiceSelector::new(s).map_err(|e| {
                    ConfigError::Invalid(format!("view {}: service_selector: {e}", v.name))
                })?;
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    hickory_proto::rr::Name::from_ascii(name)
        .map(|_| ())
        .map_err(|e| ConfigError::BadName {
            name: name.into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_fields() {
        assert!(Config::from_yaml("listn: []\n").is_err());
    }

    #[test]
    fn rejects_udp_payload_below_512() {
        assert!(Config::from_yaml("limits: {max_udp_payload: 100}\n").is_err());
    }

    #[test]
    fn upstream_timeout_defaults_without_the_section_and_must_be_positive() {
        let c = Config::from_yaml("{}").unwrap();
        assert_eq!(c.upstreams.timeout(), Duration::from_millis(1500));
        let e = Config::from_yaml("upstreams: {timeout_ms: 0}\n").unwrap_err();
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }

    #[test]
    fn rejects_an_invalid_service_selector() {
        let bad = "views: [{name: v, sources: [10.0.0.0/8], service_selector: \
                   {matchExpressions: [{key: a, operator: Near}]}}]\n";
        assert!(Config::from_yaml(bad).is_err());
    }

    #[test]
    fn nameserver_addresses_default_to_specific_listen_addresses() {
        let c = Config::from_yaml("listen: [\"0.0.0.0:53\", \"192.0.2.53:53\", \"[::1]:53\"]\n")
            .unwrap();
        let want: Vec<IpAddr> = vec!["192.0.2.53".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(c.cluster.nameserver_addresses, want);
    }

    #[test]
    fn defaults_are_loopback_only() {
        let c = Config::from_yaml("{}").unwrap();
        assert_eq!(c.cluster.zone, "cluster.local");
        assert!(c.allow_clients.iter().all(|n| n.addr().is_loopback()));
    }
}
