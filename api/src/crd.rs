//! The leafbridge CRDs (group `leafbridge.io`, version `v1alpha1`). All cluster-scoped: they are
//! operator configuration, not per-namespace workload objects.
//!
//! `deploy/crds/*.yaml` is generated from these types (see `leafbridge-controller`'s `gen-crds`)
//! and a test fails when it is out of date.

// kube-derive's repeated `printcolumn(...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// A set of addresses LoadBalancer Services may get, and which Services may use it.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    shortname = "lbpool",
    status = "IPPoolStatus",
    derive = "PartialEq",
    doc = "A pool of LoadBalancer addresses (leafbridge)",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "Auto", type_ = "boolean", json_path = ".spec.autoAssign"),
    printcolumn(
        name = "IPv4 Assigned",
        type_ = "integer",
        json_path = ".status.assignedIPv4"
    ),
    printcolumn(
        name = "IPv4 Available",
        type_ = "string",
        json_path = ".status.availableIPv4"
    ),
    printcolumn(
        name = "IPv6 Assigned",
        type_ = "integer",
        json_path = ".status.assignedIPv6"
    ),
    printcolumn(
        name = "IPv6 Available",
        type_ = "string",
        json_path = ".status.availableIPv6"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// Addresses as CIDRs (`203.0.113.0/24`, `2001:db8::/64`) or inclusive ranges
    /// (`203.0.113.10-203.0.113.20`), IPv4 and IPv6 may be mixed.
    #[schemars(schema_with = "ippool_addresses_schema")]
    pub addresses: Vec<String>,
    /// When false, only Services that request this pool (annotation) or an address in it get one.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip addresses ending in .0 and .255 (IPv4), which some old clients and routers mishandle.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may use this pool; when unset, every Service may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services may take addresses from a pool, and how the pool ranks among the matching ones.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are preferred; pools without priority come after all pools with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool (any when empty and no selector is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces selected by labels (any one selector matching is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services selected by labels (any one selector matching is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// Observed state of an IPPool, written by the controller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// `Ready` (False with reason `InvalidAddresses`, `Overlap` or `InvalidSelector`). Services
    /// whose address left every pool after an edit carry their own condition and Event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, rename = "assignedIPv4")]
    pub assigned_ipv4: u64,
    /// Decimal string: an IPv6 pool can hold more than 2^63 addresses.
    #[serde(default, rename = "availableIPv4")]
    pub available_ipv4: String,
    #[serde(default, rename = "assignedIPv6")]
    pub assigned_ipv6: u64,
    #[serde(default, rename = "availableIPv6")]
    pub available_ipv6: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Written by the speakers (field manager `leafbridge-speaker`): whether a BGPAdvertisement
    /// announces this pool's addresses. Nothing is announced from a pool none selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertisement: Option<IPPoolAdvertisementStatus>,
}

/// Whether the speakers announce an IPPool's addresses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolAdvertisementStatus {
    /// True when at least one BGPAdvertisement announces LoadBalancer addresses from the pool.
    pub advertised: bool,
    /// `Advertised`, or `NoAdvertisementSelectsPool` (nothing is announced from it).
    pub reason: String,
    /// The BGPAdvertisements that select the pool (by name, the first 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertisements: Vec<String>,
}

// ---- IPPool validation: the CRD schema's rules and the same checks in Rust ----------------
//
// `kubectl apply` rejects a bad IPPool through the schema (CEL `x-kubernetes-validations`,
// `minItems`, `maxLength`); the state directory, which has no API server, runs
// [`IPPoolSpec::validate`] (through [`validate_manifest`]) and keeps the last good version of
// a pool that fails it. The bounds keep the CEL cost estimate inside the API server's budget.

/// Most addresses entries an IPPool may have.
pub const IPPOOL_MAX_ADDRESSES: usize = 128;
/// Longest addresses entry (an IPv6 range is at most 79 characters).
pub const IPPOOL_MAX_ADDRESS_LEN: usize = 100;

/// CEL (Kubernetes' IP, CIDR and strings libraries) for one `addresses` entry `a`: a CIDR
/// without host bits, or `first-last` of two addresses of one family.
const IPPOOL_ADDRESS_RULE: &str = "self.all(a, isCIDR(a.trim()) ? cidr(a.trim()) == cidr(a.trim()).masked() : (a.split('-').size() == 2 && isIP(a.split('-')[0].trim()) && isIP(a.split('-')[1].trim()) && ip(a.split('-')[0].trim()).family() == ip(a.split('-')[1].trim()).family()))";

fn ippool_addresses_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Addresses as CIDRs (`203.0.113.0/24`, `2001:db8::/64`) or inclusive ranges (`203.0.113.10-203.0.113.20`), IPv4 and IPv6 may be mixed.",
        "type": "array",
        "minItems": 1,
        "maxItems": IPPOOL_MAX_ADDRESSES,
        "items": {"type": "string", "minLength": 1, "maxLength": IPPOOL_MAX_ADDRESS_LEN},
        "x-kubernetes-validations": [{
            "rule": IPPOOL_ADDRESS_RULE,
            "message": "each address must be a CIDR without host bits (203.0.113.0/24) or a range of two addresses of one family (203.0.113.10-203.0.113.20)",
        }],
    })
}

/// One IPPool `addresses` entry as its first and last address: a CIDR without host bits or
/// an inclusive `first-last` range of one family (what the schema's rule accepts, plus the
/// start not after the end).
pub fn pool_address_range(s: &str) -> Result<(std::net::IpAddr, std::net::IpAddr), String> {
    use std::net::IpAddr;
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        let b: IpAddr = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("{s:?}: range mixes IPv4 and IPv6"));
        }
        if a > b {
            return Err(format!("{s:?}: range start is after its end"));
        }
        Ok((a, b))
    } else {
        let net: ipnet::IpNet = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if net.trunc() != net {
            return Err(format!(
                "{s:?}: host bits set (did you mean {}?)",
                net.trunc()
            ));
        }
        Ok((net.network(), net.broadcast()))
    }
}

impl IPPoolSpec {
    /// The checks of the CRD schema, for sources without an API server.
    pub fn validate(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err("spec.addresses: at least one entry is required".into());
        }
        if self.addresses.len() > IPPOOL_MAX_ADDRESSES {
            return Err(format!(
                "spec.addresses: at most {IPPOOL_MAX_ADDRESSES} entries"
            ));
        }
        for a in &self.addresses {
            if a.is_empty() || a.len() > IPPOOL_MAX_ADDRESS_LEN {
                return Err(format!(
                    "spec.addresses: {a:?} must be 1 to {IPPOOL_MAX_ADDRESS_LEN} characters"
                ));
            }
            pool_address_range(a).map_err(|e| format!("spec.addresses: {e}"))?;
        }
        Ok(())
    }
}

/// The schema checks of a leafbridge object of `kind`, given as JSON, for sources without
/// an API server (the state directory). Kinds without such checks pass.
pub fn validate_manifest(api_version: &str, kind: &str, json: &str) -> Result<(), String> {
    if api_version != format!("{}/{}", crate::GROUP, crate::VERSION) {
        return Ok(());
    }
    match kind {
        "IPPool" => {
            let p: IPPool = serde_json::from_str(json).map_err(|e| e.to_string())?;
            p.spec
                .validate()
                .map_err(|e| format!("IPPool {}: {e}", p.metadata.name.unwrap_or_default()))
        }
        "BGPPeer" => {
            let p: BGPPeer = serde_json::from_str(json).map_err(|e| e.to_string())?;
            p.spec
                .validate()
                .map_err(|e| format!("BGPPeer {}: {e}", p.metadata.name.unwrap_or_default()))
        }
        "BGPAdvertisement" => {
            let a: BGPAdvertisement = serde_json::from_str(json).map_err(|e| e.to_string())?;
            a.spec.validate().map_err(|e| {
                format!(
                    "BGPAdvertisement {}: {e}",
                    a.metadata.name.unwrap_or_default()
                )
            })
        }
        _ => Ok(()),
    }
}

// ---- end of IPPool validation -----------------------------------------------------------

/// A BGP session the speakers open to a router.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    status = "BGPPeerStatus",
    derive = "PartialEq",
    doc = "A BGP neighbour of the leafbridge speakers",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "Peer ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "My ASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.ebgpMultihop) && has(self.gtsm) && self.gtsm)").message("ebgpMultihop and gtsm exclude each other (GTSM, RFC 5082, is for directly connected peers)"))]
#[x_kube(validation = Rule::new("!has(self.keepaliveTimeSeconds) || !has(self.holdTimeSeconds) || self.holdTimeSeconds == 0 || self.keepaliveTimeSeconds < self.holdTimeSeconds").message("keepaliveTimeSeconds must be below holdTimeSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The neighbour's address (RFC 4271 §8: the TCP connection's remote address).
    #[x_kube(validation = Rule::new("isIP(self)").message("peerAddress must be an IP address"))]
    pub peer_address: String,
    /// The neighbour's AS (4-octet, RFC 6793).
    #[serde(rename = "peerASN")]
    #[x_kube(validation = Rule::new("self >= 1").message("AS 0 is reserved (RFC 7607)"))]
    pub peer_asn: u32,
    /// The speakers' AS on this session (4-octet, RFC 6793); equal to `peerASN` for iBGP.
    #[serde(rename = "myASN")]
    #[x_kube(validation = Rule::new("self >= 1").message("AS 0 is reserved (RFC 7607)"))]
    pub my_asn: u32,
    /// TCP port of the neighbour (179 by default, RFC 4271 §8.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("peerPort must be 1..65535"))]
    pub peer_port: Option<u16>,
    /// The interface a link-local `peerAddress` (fe80::/10) is on, e.g. `eth0`: required for
    /// such an address, refused for any other (the routing table chooses their interface).
    /// Link-local peers are single hop and run without BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 15").message("interface must be an interface name of 1 to 15 characters"))]
    pub interface: Option<String>,
    /// Local address to connect from; unset: the kernel chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("sourceAddress must be an IP address"))]
    pub source_address: Option<String>,
    /// Proposed Hold Time in seconds (RFC 4271 §4.2: 0 or >= 3). Default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 0 || self >= 3").message("holdTimeSeconds must be 0 or at least 3 (RFC 4271 §4.2)"))]
    pub hold_time_seconds: Option<u16>,
    /// Keepalive interval in seconds; default one third of the negotiated hold time
    /// (RFC 4271 §10). Informational for now: the engine always uses a third of the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time_seconds: Option<u16>,
    /// Base ConnectRetry interval in seconds (RFC 4271 §10), doubled after each failure up to
    /// 120 s. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("connectRetrySeconds must be 1..3600"))]
    pub connect_retry_seconds: Option<u16>,
    /// TTL for eBGP multihop sessions; unset: directly connected (TTL 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("ebgpMultihop must be 1..255"))]
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only TTL 255 from a directly connected
    /// peer. Excludes `ebgpMultihop`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gtsm: bool,
    /// Only accept connections, never connect (RFC 4271 §8.1.1 PassiveTcpEstablishment); needs
    /// the speaker's `--listen`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
    /// TCP-MD5 (RFC 2385) password, read from a Secret; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Which nodes' speakers open this session (any selector matching is enough); all when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Advertise graceful restart (RFC 4724).
    #[serde(default)]
    pub graceful_restart: bool,
    /// Restart Time advertised with graceful restart, seconds (12 bits, RFC 4724 §3). Default
    /// 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 4095").message("restartTimeSeconds must be 0..4095 (RFC 4724 §3)"))]
    pub restart_time_seconds: Option<u16>,
    /// Address families to negotiate (Multiprotocol capability, RFC 4760); both when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_families: Vec<BGPAddressFamily>,
    /// Next hop for IPv6 prefixes sent over an IPv4 session (RFC 8950 is not used: the
    /// next hop must be an IPv6 address of the node). Unset: IPv6 prefixes are not sent there.
    #[serde(
        default,
        rename = "ipv6NextHop",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 6").message("ipv6NextHop must be an IPv6 address"))]
    pub ipv6_next_hop: Option<String>,
    /// Next hop for IPv4 prefixes sent over an IPv6 session. Unset: IPv4 prefixes are not
    /// sent there.
    #[serde(
        default,
        rename = "ipv4NextHop",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 4").message("ipv4NextHop must be an IPv4 address"))]
    pub ipv4_next_hop: Option<String>,
    /// Name of a BFD profile tying this session to BFD liveness detection; unset: no BFD.
    #[serde(
        default,
        rename = "bfdProfile",
        skip_serializing_if = "Option::is_none"
    )]
    pub bfd_profile: Option<String>,
}

/// An address family of a BGP session (AFI/SAFI, RFC 4760).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum BGPAddressFamily {
    /// AFI 1, SAFI 1.
    IPv4Unicast,
    /// AFI 2, SAFI 1.
    IPv6Unicast,
}

/// A key inside a Secret.
#[derive(
    Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Observed state of a BGPPeer: whether the speakers could use it. Per-node session state is
/// in each node's `BGPNodeState`.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// `Valid` (False with the reason the speakers refuse the peer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What the speakers announce, to whom and with which attributes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    singular = "bgpadvertisement",
    status = "BGPAdvertisementStatus",
    derive = "PartialEq",
    doc = "Which prefixes leafbridge speakers announce and with which path attributes"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Announce the LoadBalancer addresses (`status.loadBalancer.ingress[].ip`) of Services
    /// whose address lies in the selected IPPools. Default true.
    #[serde(
        default = "default_true",
        rename = "advertiseLoadBalancerIPs",
        skip_serializing_if = "is_true"
    )]
    pub advertise_load_balancer_ips: bool,
    /// Also announce the selected Services' `spec.externalIPs` (whatever pool they are in).
    #[serde(
        default,
        rename = "advertiseExternalIPs",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub advertise_external_ips: bool,
    /// Announce LoadBalancer addresses from these IPPools (by name); all pools when both this and
    /// `ipPoolSelectors` are empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<String>,
    /// IPPools selected by labels (any selector matching is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pool_selectors: Vec<LabelSelector>,
    /// Only Services matching one of these selectors; all Services when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Announce to these BGPPeers (by name); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Only speakers on these nodes announce (any selector matching is enough); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Aggregate LB addresses to this prefix length (IPv4; default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 32").message("aggregationLength must be 0..32"))]
    pub aggregation_length: Option<u8>,
    /// Aggregate LB addresses to this prefix length (IPv6; default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 128").message("aggregationLengthV6 must be 0..128"))]
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF (RFC 4271 §5.1.5), iBGP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997) as `asn:value` or well-known names (`no-export`,
    /// `no-advertise`, `no-export-subconfed`, `blackhole`, `graceful-shutdown`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, c.matches('^[0-9]{1,5}:[0-9]{1,5}$') || c in ['no-export', 'no-advertise', 'no-export-subconfed', 'blackhole', 'graceful-shutdown'])").message("communities are asn:value (16 bits each) or a well-known name"))]
    pub communities: Vec<String>,
    /// LARGE_COMMUNITY (RFC 8092) as `global:local1:local2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, c.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$'))").message("large communities are global:local1:local2 (32 bits each)"))]
    pub large_communities: Vec<String>,
    /// Announce each node's pod CIDR(s) (`spec.podCIDRs`) with that node as next hop.
    #[serde(default, rename = "advertisePodCIDRs")]
    pub advertise_pod_cidrs: bool,
    /// Service CIDRs to announce from gateway nodes (ECMP).
    #[serde(
        default,
        rename = "serviceCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("serviceCIDRs must be CIDRs"))]
    pub service_cidrs: Vec<String>,
    /// Nodes that act as gateways for the service CIDRs; all announcing nodes when unset.
    #[serde(
        default,
        rename = "serviceCIDRGatewaySelector",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cidr_gateway_selector: Option<LabelSelector>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Observed state of a BGPAdvertisement.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementStatus {
    /// `Valid` (False with the reason the speakers refuse the advertisement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The speaker of one node reports here (the object's name is the node's name). Only that
/// node's speaker writes it (server-side apply, field manager `leafbridge-speaker`), only when
/// something changed and at most about once a second.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BGPNodeState",
    plural = "bgpnodestates",
    singular = "bgpnodestate",
    status = "BGPNodeStateStatus",
    derive = "PartialEq",
    doc = "BGP state of one node's leafbridge speaker",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Sessions Up",
        type_ = "integer",
        json_path = ".status.sessionsEstablished"
    ),
    printcolumn(
        name = "Prefixes",
        type_ = "integer",
        json_path = ".status.announcedPrefixes"
    ),
    printcolumn(
        name = "Not Announced",
        type_ = "integer",
        json_path = ".status.notAnnouncedCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BGPNodeStateSpec {}

/// Observed BGP state of one node.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BGPNodeStateStatus {
    /// `Ready` (the speaker has a complete view of the cluster), `ForwardingDisabled`,
    /// `ReversePathFilter`, `SecretMissing`, `InvalidPeer`, `InvalidAdvertisement`,
    /// `NodeNotEligible` (its Service routes are withdrawn: cordoned, excluded, tainted...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The BGP Identifier the speaker uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// One entry per BGPPeer this node runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["peer".into()]))]
    pub sessions: Vec<BGPSessionStatus>,
    /// Sessions in state Established.
    #[serde(default)]
    pub sessions_established: u32,
    /// Distinct prefixes this node wants announced (to at least one peer).
    #[serde(default)]
    pub announced_prefixes: u32,
    /// Services with an address this node announces.
    #[serde(default)]
    pub announced_services: u32,
    /// Services with an address this node does not announce, with the reason: the first
    /// ones by namespace/name (bounded so that the object stays small on large clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_announced: Vec<NotAnnouncedService>,
    /// How many Services this node does not announce (the list above may be cut short).
    #[serde(default)]
    pub not_announced_count: u32,
}

/// One BGP session of a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatus {
    /// The BGPPeer's name.
    pub peer: String,
    /// `address:port` of the neighbour.
    pub address: String,
    /// RFC 4271 §8.2.2 state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Prefixes this node wants in the peer's Adj-RIB-Out.
    pub prefixes_advertised: u32,
    /// The BFD session tied to this BGP session (the BGPPeer's `bfdProfile`); unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BFDSessionStatus>,
}

/// One BFD session of a node (RFC 5880).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BFDSessionStatus {
    /// The BFDProfile the session runs with.
    pub profile: String,
    /// RFC 5880 §4.1 state: AdminDown, Down, Init, Up. While it is not Up (after having been
    /// Up once), the BGP session is held closed.
    pub state: String,
    /// The state in the neighbour's last packet.
    pub remote_state: String,
    /// Why the session last changed state (RFC 5880 §4.1 Diag, CamelCase:
    /// `ControlDetectionTimeExpired`, `NeighborSignaledSessionDown`...; `None` at first).
    pub diagnostic: String,
    /// Negotiated interval between our packets, milliseconds, before jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval_ms: Option<u32>,
    /// Negotiated Detection Time, milliseconds: silence for this long takes the session Down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_time_ms: Option<u32>,
}

/// A Service whose address a node does not announce.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotAnnouncedService {
    pub namespace: String,
    pub name: String,
    /// A CamelCase reason (`NoReadyLocalEndpoint`, `NoAdvertisementSelectsPool`,
    /// `NodeCordoned`...).
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Which address a DNS client gets for a Service, chosen by the client's source address.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceAddressKind {
    /// `status.loadBalancer.ingress[].ip` (office clients); Services without one are not answered.
    #[default]
    LoadBalancerIP,
    /// `spec.clusterIPs` (clients that route to the service CIDR).
    ClusterIP,
}

/// A split-horizon view of the cluster domain.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "DNSView",
    plural = "dnsviews",
    singular = "dnsview",
    derive = "PartialEq",
    doc = "A split-horizon DNS view selected by client source address",
    printcolumn(name = "Answer", type_ = "string", json_path = ".spec.serviceAddress"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority")
)]
#[serde(rename_all = "camelCase")]
pub struct DNSViewSpec {
    /// Client source prefixes this view applies to (`10.1.0.0/16`, `2001:db8::/48`).
    #[serde(rename = "clientCIDRs")]
    pub client_cidrs: Vec<String>,
    /// Which address a Service's name resolves to in this view.
    #[serde(default)]
    pub service_address: ServiceAddressKind,
    /// Answer pod names/IPs (`a-b-c-d.ns.pod.<domain>`) in this view.
    #[serde(default, rename = "exposePodIPs")]
    pub expose_pod_ips: bool,
    /// Only Services (and pod records) in these namespaces are visible; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Only Services matching this selector are visible (with their SRV, endpoint and PTR
    /// records); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// When several views match a client, the highest priority wins, then the longest prefix.
    /// Views of leafbridge-dns's configuration file count as priority 0 unless they set one and
    /// win ties with DNSViews; a DNSView named like a file view replaces it.
    #[serde(default)]
    pub priority: i32,
}

/// BFD timers and role for the speakers' sessions with a BGPPeer (RFC 5880, asynchronous mode),
/// referenced by name from a BGPPeer. The fields are those of MetalLB's BFDProfile.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    singular = "bfdprofile",
    derive = "PartialEq",
    doc = "BFD timers for the BGP sessions of the leafbridge speakers",
    printcolumn(name = "RX ms", type_ = "integer", json_path = ".spec.receiveInterval"),
    printcolumn(
        name = "TX ms",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// bfd.RequiredMinRxInterval in milliseconds (10..=60000). Default 300.
    #[serde(default = "default_bfd_interval")]
    pub receive_interval: u32,
    /// bfd.DesiredMinTxInterval once Up, in milliseconds (10..=60000); at least one second
    /// while not Up (RFC 5880 §6.8.3). Default 300.
    #[serde(default = "default_bfd_interval")]
    pub transmit_interval: u32,
    /// bfd.DetectMult (>= 1). Default 3.
    #[serde(default = "default_bfd_detect_multiplier")]
    pub detect_multiplier: u8,
    /// The Echo function (RFC 5880 §6.4) is not implemented: must be false.
    #[serde(default)]
    pub echo_mode: bool,
    /// Wait for the peer's first packet before sending (RFC 5880 §6.1 passive role).
    #[serde(default)]
    pub passive_mode: bool,
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_bfd_detect_multiplier() -> u8 {
    3
}

impl Default for BFDProfileSpec {
    fn default() -> Self {
        Self {
            receive_interval: default_bfd_interval(),
            transmit_interval: default_bfd_interval(),
            detect_multiplier: default_bfd_detect_multiplier(),
            echo_mode: false,
            passive_mode: false,
        }
    }
}

// ---- BGPPeer and BGPAdvertisement: the CEL rules of the schema, in Rust ---------------------

fn ip_of_family(field: &str, v: &str, family: Option<u8>) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = v
        .parse()
        .map_err(|_| format!("{field} {v:?} is not an IP address"))?;
    match family {
        Some(4) if !ip.is_ipv4() => Err(format!("{field} {v:?} is not an IPv4 address")),
        Some(6) if !ip.is_ipv6() => Err(format!("{field} {v:?} is not an IPv6 address")),
        _ => Ok(ip),
    }
}

impl BGPPeerSpec {
    /// The CRD schema's rules (`x-kubernetes-validations`), for sources without an API server.
    pub fn validate(&self) -> Result<(), String> {
        ip_of_family("peerAddress", &self.peer_address, None)?;
        if self.peer_asn == 0 || self.my_asn == 0 {
            return Err("AS 0 is reserved (RFC 7607)".into());
        }
        if self.peer_port == Some(0) {
            return Err("peerPort must be 1..65535".into());
        }
        if let Some(i) = &self.interface
            && !(1..=15).contains(&i.len())
        {
            return Err("interface must be an interface name of 1 to 15 characters".into());
        }
        if let Some(s) = &self.source_address {
            ip_of_family("sourceAddress", s, None)?;
        }
        if let Some(h) = self.hold_time_seconds
            && h != 0
            && h < 3
        {
            return Err("holdTimeSeconds must be 0 or at least 3 (RFC 4271 §4.2)".into());
        }
        if let (Some(k), Some(h)) = (self.keepalive_time_seconds, self.hold_time_seconds)
            && h != 0
            && k >= h
        {
            return Err("keepaliveTimeSeconds must be below holdTimeSeconds".into());
        }
        if let Some(r) = self.connect_retry_seconds
            && !(1..=3600).contains(&r)
        {
            return Err("connectRetrySeconds must be 1..3600".into());
        }
        if self.ebgp_multihop == Some(0) {
            return Err("ebgpMultihop must be 1..255".into());
        }
        if self.ebgp_multihop.is_some() && self.gtsm {
            return Err("ebgpMultihop and gtsm exclude each other (GTSM, RFC 5082, is for directly connected peers)".into());
        }
        if self.restart_time_seconds.is_some_and(|t| t > 4095) {
            return Err("restartTimeSeconds must be 0..4095 (RFC 4724 §3)".into());
        }
        if let Some(v) = &self.ipv6_next_hop {
            ip_of_family("ipv6NextHop", v, Some(6))?;
        }
        if let Some(v) = &self.ipv4_next_hop {
            ip_of_family("ipv4NextHop", v, Some(4))?;
        }
        Ok(())
    }
}

const WELL_KNOWN_COMMUNITIES: &[&str] = &[
    "no-export",
    "no-advertise",
    "no-export-subconfed",
    "blackhole",
    "graceful-shutdown",
];

/// `n` parts of at most `digits` decimal digits each, separated by `:` (the schema's regex).
fn colon_numbers(s: &str, n: usize, digits: usize) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == n
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= digits && p.bytes().all(|b| b.is_ascii_digit()))
}

impl BGPAdvertisementSpec {
    /// The CRD schema's rules (`x-kubernetes-validations`), for sources without an API server.
    pub fn validate(&self) -> Result<(), String> {
        if self.aggregation_length.is_some_and(|l| l > 32) {
            return Err("aggregationLength must be 0..32".into());
        }
        if self.aggregation_length_v6.is_some_and(|l| l > 128) {
            return Err("aggregationLengthV6 must be 0..128".into());
        }
        for c in &self.communities {
            if !(colon_numbers(c, 2, 5) || WELL_KNOWN_COMMUNITIES.contains(&c.as_str())) {
                return Err(format!(
                    "community {c:?}: communities are asn:value (16 bits each) or a well-known name"
                ));
            }
        }
        for c in &self.large_communities {
            if !colon_numbers(c, 3, 10) {
                return Err(format!(
                    "large community {c:?}: large communities are global:local1:local2 (32 bits each)"
                ));
            }
        }
        for c in &self.service_cidrs {
            c.parse::<ipnet::IpNet>()
                .map_err(|_| format!("serviceCIDRs: {c:?} is not a CIDR"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgppeer_manifests_of_the_first_version_still_parse() {
        let spec: BGPPeerSpec = serde_json::from_value(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001, "peerPort": 1179,
            "holdTimeSeconds": 9, "ebgpMultihop": 2, "gracefulRestart": true,
            "passwordSecret": {"namespace": "kube-system", "name": "bgp", "key": "password"},
            "nodeSelectors": [{"matchLabels": {"rack": "a"}}]
        }))
        .unwrap();
        assert_eq!(spec.peer_port, Some(1179));
        assert!(spec.graceful_restart && !spec.gtsm && spec.address_families.is_empty());
    }

    #[test]
    fn an_advertisement_announces_load_balancer_ips_by_default() {
        let spec: BGPAdvertisementSpec =
            serde_json::from_value(serde_json::json!({"ipPools": ["a"]})).unwrap();
        assert!(spec.advertise_load_balancer_ips && !spec.advertise_external_ips);
        // And the default is not written back out.
        let v = serde_json::to_value(&spec).unwrap();
        assert!(v.get("advertiseLoadBalancerIPs").is_none());
    }

    #[test]
    fn a_bgppeer_is_checked_as_its_schema_rules_say() {
        let ok: BGPPeerSpec = serde_json::from_value(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001, "holdTimeSeconds": 9,
            "keepaliveTimeSeconds": 3
        }))
        .unwrap();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut BGPPeerSpec)| {
            let mut p = ok.clone();
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.peer_address = "192.0.2.300".into()).contains("peerAddress"));
        assert!(bad(|p| p.peer_asn = 0).contains("AS 0"));
        assert!(bad(|p| p.interface = Some(String::new())).contains("interface"));
        assert!(bad(|p| p.interface = Some("x".repeat(16))).contains("interface"));
        assert!(bad(|p| p.hold_time_seconds = Some(2)).contains("holdTimeSeconds"));
        assert!(bad(|p| p.keepalive_time_seconds = Some(9)).contains("keepalive"));
        assert!(bad(|p| p.connect_retry_seconds = Some(0)).contains("connectRetry"));
        assert!(
            bad(|p| {
                p.ebgp_multihop = Some(2);
                p.gtsm = true
            })
            .contains("gtsm")
        );
        assert!(bad(|p| p.restart_time_seconds = Some(4096)).contains("restartTime"));
        assert!(bad(|p| p.ipv6_next_hop = Some("192.0.2.9".into())).contains("IPv6"));
        assert!(bad(|p| p.ipv4_next_hop = Some("2001:db8::1".into())).contains("IPv4"));
    }

    #[test]
    fn a_bgpadvertisement_is_checked_as_its_schema_rules_say() {
        let ok: BGPAdvertisementSpec = serde_json::from_value(serde_json::json!({
            "communities": ["65000:100", "no-export"], "largeCommunities": ["65000:1:2"],
            "aggregationLength": 24, "serviceCIDRs": ["10.96.0.0/12"]
        }))
        .unwrap();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut BGPAdvertisementSpec)| {
            let mut a = ok.clone();
            f(&mut a);
            a.validate().unwrap_err()
        };
        assert!(bad(|a| a.communities = vec!["65000-100".into()]).contains("community"));
        assert!(bad(|a| a.communities = vec!["650000:1".into()]).contains("community"));
        assert!(bad(|a| a.large_communities = vec!["1:2".into()]).contains("large"));
        assert!(bad(|a| a.aggregation_length = Some(33)).contains("aggregationLength"));
        assert!(bad(|a| a.aggregation_length_v6 = Some(129)).contains("aggregationLengthV6"));
        assert!(bad(|a| a.service_cidrs = vec!["10.96.0.0".into()]).contains("serviceCIDRs"));
    }
}
