//! The leafbridge CRDs (group `leafbridge.io`, version `v1alpha1`). All cluster-scoped: they are
//! operator configuration, not per-namespace workload objects.
//!
//! `deploy/crds/*.yaml` is generated from these types (see `leafbridge-controller`'s `gen-crds`)
//! and a test fails when it is out of date.

// kube-derive's repeated `printcolumn(...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
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
}

/// A BGP session the speakers open to a router (initial version; issue 4 refines it).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    derive = "PartialEq",
    doc = "A BGP neighbour of the leafbridge speakers",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "Peer ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "My ASN", type_ = "integer", json_path = ".spec.myASN")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The neighbour's address (RFC 4271 §8: the TCP connection's remote address).
    pub peer_address: String,
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// TCP port of the neighbour (179 by default, RFC 4271 §8.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Local address to connect from; unset: the kernel chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Proposed Hold Time in seconds (RFC 4271 §4.2: 0 or >= 3). Default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u16>,
    /// Keepalive interval in seconds; default one third of the hold time (RFC 4271 §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time_seconds: Option<u16>,
    /// TTL for eBGP multihop sessions; unset: directly connected (TTL 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop: Option<u8>,
    /// TCP-MD5 (RFC 2385) password, read from a Secret; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Which nodes' speakers open this session; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Advertise graceful restart (RFC 4724).
    #[serde(default)]
    pub graceful_restart: bool,
}

/// A key inside a Secret.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// What the speakers announce, to whom and with which attributes (initial version).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "leafbridge.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    singular = "bgpadvertisement",
    derive = "PartialEq",
    doc = "Which prefixes leafbridge speakers announce and with which path attributes"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Announce LoadBalancer addresses from these IPPools (by name); all pools when both this and
    /// `ipPoolSelectors` are empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pool_selectors: Vec<LabelSelector>,
    /// Announce to these BGPPeers (by name); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Only speakers on these nodes announce; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Aggregate LB addresses to this prefix length (IPv4; default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<u8>,
    /// Aggregate LB addresses to this prefix length (IPv6; default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF (RFC 4271 §5.1.5), iBGP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997) as `asn:value` or well-known names (`no-export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// LARGE_COMMUNITY (RFC 8092) as `global:local1:local2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
    /// Announce each node's pod CIDR(s) with that node as next hop.
    #[serde(default, rename = "advertisePodCIDRs")]
    pub advertise_pod_cidrs: bool,
    /// Service CIDRs to announce from gateway nodes (ECMP).
    #[serde(
        default,
        rename = "serviceCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cidrs: Vec<String>,
    /// Nodes that act as gateways for the service CIDRs; all announcing nodes when unset.
    #[serde(
        default,
        rename = "serviceCIDRGatewaySelector",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cidr_gateway_selector: Option<LabelSelector>,
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

/// A split-horizon view of the cluster domain (initial version; issue 5 refines it).
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
