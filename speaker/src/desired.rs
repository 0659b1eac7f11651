//! What this node should announce, to which peers: one pure function ([`compute`]) from the
//! cluster objects and the node's name to the peers the node runs and the routes of each, with a
//! typed reason for every Service that this node does not announce. Watches, sessions and
//! status writers wrap it (see `cluster`).
//!
//! The rules (the Kubernetes ones shared with the other programs live in `leafbridge_api::rules`):
//! - A Service's LoadBalancer addresses (`status.loadBalancer.ingress[].ip`) are announced when a
//!   BGPAdvertisement selects the IPPool the address is in, the Service and this node; with
//!   `externalTrafficPolicy: Local` only while this node has a usable local endpoint.
//! - Service routes (LoadBalancer addresses, externalIPs, service CIDRs) need an eligible node:
//!   not labelled `node.kubernetes.io/exclude-from-external-load-balancers`, Ready, not cordoned,
//!   without the `node.kubernetes.io/out-of-service` or the cluster-autoscaler deletion taint.
//!   An ineligible node keeps its sessions and its pod CIDR routes.
//! - Several Services may share an address: it is announced while any of them needs it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use leafbridge_api::annotations;
use leafbridge_api::rules::{self, ClassConfig};
use leafbridge_api::{BGPAdvertisement, BGPPeer, IPPool};

use crate::bgp::message::{AddressFamily, LargeCommunity};
use crate::bgp::rib::Route;
use crate::bgp::session::DesiredRoute;
use crate::config::{Community, LargeCommunityText};
use crate::peers::{self, PeerSpec};

/// Label that keeps a node out of LoadBalancer traffic (the well-known Kubernetes label).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Taint of a node that is shut down and whose pods are being moved (non-graceful shutdown).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// Taint cluster-autoscaler puts on a node right before it drains and deletes it.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Everything `compute` reads: the watched objects plus the speaker's own settings.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub nodes: Vec<Arc<Node>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub ip_pools: Vec<Arc<IPPool>>,
    pub peers: Vec<Arc<BGPPeer>>,
    pub advertisements: Vec<Arc<BGPAdvertisement>>,
    /// Which Services are ours (`spec.loadBalancerClass`).
    pub class: ClassConfig,
    /// `--router-id`; unset: the node's first IPv4 InternalIP.
    pub router_id: Option<Ipv4Addr>,
}

/// Why this node carries no Service routes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeReason {
    /// No Node object of this name (yet).
    NodeNotFound,
    /// Labelled with this label (`node.kubernetes.io/exclude-from-external-load-balancers`).
    NodeExcluded(String),
    /// Condition Ready is not True.
    NodeNotReady,
    /// `spec.unschedulable` (kubectl cordon / drain).
    NodeCordoned,
    /// Taint `node.kubernetes.io/out-of-service`.
    NodeOutOfService,
    /// Taint `ToBeDeletedByClusterAutoscaler`.
    NodeToBeDeleted,
}

impl NodeReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeReason::NodeNotFound => "NodeNotFound",
            NodeReason::NodeExcluded(_) => "NodeExcluded",
            NodeReason::NodeNotReady => "NodeNotReady",
            NodeReason::NodeCordoned => "NodeCordoned",
            NodeReason::NodeOutOfService => "NodeOutOfService",
            NodeReason::NodeToBeDeleted => "NodeToBeDeleted",
        }
    }
}

/// Why this node does not announce a Service's address(es).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceReason {
    /// Has `externalIPs` but is not a LoadBalancer Service of ours, and no advertisement asks
    /// for externalIPs.
    ServiceNotLoadBalancer,
    /// Annotated `leafbridge.io/no-announce: "true"`.
    NoAnnounceAnnotation,
    /// No IP in `status.loadBalancer.ingress` (the controller has not allocated one yet).
    NoIngress,
    /// The address is in no IPPool.
    AddressInNoPool(IpAddr),
    /// No BGPAdvertisement selects the IPPool of the address.
    NoAdvertisementSelectsPool(String),
    /// Advertisements select the pool, but none selects this Service's labels.
    NoAdvertisementSelectsService,
    /// The advertisements that select the Service do not select this node.
    NodeNotSelected,
    /// The advertisements that apply name no BGPPeer this node runs.
    NoPeerForAdvertisement,
    /// This node carries no Service routes.
    Node(NodeReason),
    /// `externalTrafficPolicy: Local` and no usable endpoint on this node.
    NoReadyLocalEndpoint,
}

impl ServiceReason {
    /// The CamelCase reason written to status.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceReason::ServiceNotLoadBalancer => "ServiceNotLoadBalancer",
            ServiceReason::NoAnnounceAnnotation => "NoAnnounceAnnotation",
            ServiceReason::NoIngress => "NoIngress",
            ServiceReason::AddressInNoPool(_) => "AddressInNoPool",
            ServiceReason::NoAdvertisementSelectsPool(_) => "NoAdvertisementSelectsPool",
            ServiceReason::NoAdvertisementSelectsService => "NoAdvertisementSelectsService",
            ServiceReason::NodeNotSelected => "NodeNotSelected",
            ServiceReason::NoPeerForAdvertisement => "NoPeerForAdvertisement",
            ServiceReason::Node(n) => n.as_str(),
            ServiceReason::NoReadyLocalEndpoint => "NoReadyLocalEndpoint",
        }
    }

    /// A sentence for status messages.
    pub fn message(&self) -> String {
        match self {
            ServiceReason::AddressInNoPool(ip) => format!("{ip} is in no IPPool"),
            ServiceReason::NoAdvertisementSelectsPool(p) => {
                format!("no BGPAdvertisement selects IPPool {p}")
            }
            ServiceReason::Node(NodeReason::NodeExcluded(l)) => format!("node labelled {l}"),
            _ => String::new(),
        }
    }
}

/// A configuration object this node cannot use (it is skipped, the rest goes on).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    InvalidPeer {
        name: String,
        error: String,
    },
    InvalidAdvertisement {
        name: String,
        error: String,
    },
    InvalidPool {
        name: String,
        error: String,
    },
    /// No `--router-id` and the Node has no IPv4 InternalIP: no session can start.
    NoRouterId,
}

/// What one Service gets on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceOutcome {
    /// These prefixes (after aggregation) are announced for it.
    Announced(BTreeSet<IpNet>),
    NotAnnounced(ServiceReason),
}

/// A peer this node runs, and its routes (sorted by prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub spec: PeerSpec,
    pub routes: Vec<DesiredRoute>,
}

/// The result of [`compute`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub router_id: Option<Ipv4Addr>,
    /// Set when this node carries no Service routes.
    pub node_reason: Option<NodeReason>,
    pub peers: BTreeMap<String, DesiredPeer>,
    /// LoadBalancer Services of ours, and Services with externalIPs, by (namespace, name).
    pub services: BTreeMap<(String, String), ServiceOutcome>,
    /// IPPools that no BGPAdvertisement selects: nothing is announced from them.
    pub unadvertised_pools: BTreeSet<String>,
    /// Every usable IPPool and the BGPAdvertisements (names, sorted) that announce
    /// LoadBalancer addresses from it; empty: none does.
    pub pool_advertisements: BTreeMap<String, Vec<String>>,
    /// BGPAdvertisements that passed validation (the others are in `problems`).
    pub valid_advertisements: BTreeSet<String>,
    pub problems: Vec<Problem>,
}

impl Desired {
    /// Distinct prefixes announced to at least one peer.
    pub fn announced_prefixes(&self) -> usize {
        let mut all = BTreeSet::new();
        for p in self.peers.values() {
            all.extend(p.routes.iter().map(|r| r.route.prefix));
        }
        all.len()
    }
}

/// An advertisement, parsed once.
struct Ad<'a> {
    ad: &'a BGPAdvertisement,
    communities: Vec<u32>,
    large_communities: Vec<LargeCommunity>,
    service_cidrs: Vec<IpNet>,
    /// Selects this node.
    node_selected: bool,
    /// Peers (names) of this node it goes to.
    peers: Vec<&'a str>,
}

impl Ad<'_> {
    fn selects_pool(&self, pool: &IPPool) -> bool {
        let spec = &self.ad.spec;
        if spec.ip_pools.is_empty() && spec.ip_pool_selectors.is_empty() {
            return true;
        }
        let name = pool.metadata.name.as_deref().unwrap_or_default();
        spec.ip_pools.iter().any(|p| p == name)
            || (!spec.ip_pool_selectors.is_empty()
                && matches_any(&spec.ip_pool_selectors, pool.metadata.labels.as_ref()))
    }

    fn selects_service(&self, svc: &Service) -> bool {
        matches_any(
            &self.ad.spec.service_selectors,
            svc.metadata.labels.as_ref(),
        )
    }

    fn route(&self, prefix: IpNet) -> Route {
        let mut r = Route::new(prefix, unspecified_for(prefix));
        r.communities = self.communities.clone();
        r.large_communities = self.large_communities.clone();
        r.local_pref = self.ad.spec.local_pref;
        r
    }

    fn aggregate(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => self.ad.spec.aggregation_length.unwrap_or(32).min(32),
            IpAddr::V6(_) => self.ad.spec.aggregation_length_v6.unwrap_or(128).min(128),
        };
        IpNet::new(ip, len).expect("length clamped").trunc()
    }
}

/// Selectors were validated up front, so an error here cannot happen; it selects nothing.
fn matches_any(sels: &[LabelSelector], labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    rules::any_selector_matches(sels, labels.unwrap_or(&empty)).unwrap_or(false)
}

fn validate_selectors<'a>(
    sels: impl IntoIterator<Item = &'a LabelSelector>,
) -> Result<(), rules::SelectorError> {
    let empty = BTreeMap::new();
    for s in sels {
        rules::selector_matches(s, &empty)?;
    }
    Ok(())
}

fn unspecified_for(prefix: IpNet) -> IpAddr {
    match prefix {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Well-known COMMUNITIES (RFC 1997, RFC 7999 BLACKHOLE, RFC 8326 GRACEFUL_SHUTDOWN).
fn parse_community(s: &str) -> Result<u32, String> {
    Ok(match s {
        "no-export" => 0xFFFF_FF01,
        "no-advertise" => 0xFFFF_FF02,
        "no-export-subconfed" => 0xFFFF_FF03,
        "blackhole" => 0xFFFF_029A,
        "graceful-shutdown" => 0xFFFF_0000,
        _ => s.parse::<Community>()?.0,
    })
}

fn parse_ad<'a>(
    ad: &'a BGPAdvertisement,
    node_labels: &BTreeMap<String, String>,
    node_peers: &'a BTreeMap<String, DesiredPeer>,
) -> Result<Ad<'a>, String> {
    let spec = &ad.spec;
    validate_selectors(
        spec.ip_pool_selectors
            .iter()
            .chain(&spec.service_selectors)
            .chain(&spec.node_selectors)
            .chain(&spec.service_cidr_gateway_selector),
    )
    .map_err(|e| e.to_string())?;
    let mut communities = spec
        .communities
        .iter()
        .map(|c| parse_community(c))
        .collect::<Result<Vec<_>, _>>()?;
    communities.sort_unstable();
    communities.dedup();
    let mut large_communities = spec
        .large_communities
        .iter()
        .map(|c| c.parse::<LargeCommunityText>().map(|l| l.0))
        .collect::<Result<Vec<_>, _>>()?;
    large_communities.sort_unstable();
    large_communities.dedup();
    let service_cidrs = spec
        .service_cidrs
        .iter()
        .map(|c| {
            c.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("serviceCIDRs: {c:?} is not a CIDR"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if spec.aggregation_length.is_some_and(|l| l > 32) {
        return Err("aggregationLength must be 0..32".into());
    }
    if spec.aggregation_length_v6.is_some_and(|l| l > 128) {
        return Err("aggregationLengthV6 must be 0..128".into());
    }
    let node_selected = matches_any(&spec.node_selectors, Some(node_labels));
    let peers = node_peers
        .keys()
        .filter(|p| spec.peers.is_empty() || spec.peers.iter().any(|n| n == *p))
        .map(String::as_str)
        .collect();
    Ok(Ad {
        ad,
        communities,
        large_communities,
        service_cidrs,
        node_selected,
        peers,
    })
}

/// A pool, its name and its inclusive address ranges.
type PoolRanges<'a> = (&'a IPPool, String, Vec<(IpAddr, IpAddr)>);

/// Inclusive address ranges of each pool.
fn pool_ranges(pool: &IPPool) -> Result<Vec<(IpAddr, IpAddr)>, String> {
    pool.spec
        .addresses
        .iter()
        .map(|a| {
            let a = a.trim();
            if let Some((lo, hi)) = a.split_once('-') {
                let lo: IpAddr = lo.trim().parse().map_err(|_| format!("{a:?}"))?;
                let hi: IpAddr = hi.trim().parse().map_err(|_| format!("{a:?}"))?;
                if lo.is_ipv4() != hi.is_ipv4() || ip_u128(lo) > ip_u128(hi) {
                    return Err(format!("range {a:?} is empty or mixes families"));
                }
                Ok((lo, hi))
            } else {
                let n: IpNet = a.parse().map_err(|_| format!("{a:?} is not a CIDR"))?;
                Ok((n.network(), n.broadcast()))
            }
        })
        .collect()
}

fn ip_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn in_range(ip: IpAddr, (lo, hi): (IpAddr, IpAddr)) -> bool {
    ip.is_ipv4() == lo.is_ipv4() && ip_u128(lo) <= ip_u128(ip) && ip_u128(ip) <= ip_u128(hi)
}

/// Whether the node may carry Service routes, and why not.
pub fn node_eligibility(node: &Node) -> Result<(), NodeReason> {
    if let Some(labels) = &node.metadata.labels
        && labels.contains_key(EXCLUDE_LABEL)
    {
        return Err(NodeReason::NodeExcluded(EXCLUDE_LABEL.to_owned()));
    }
    let spec = node.spec.as_ref();
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        if t.key == OUT_OF_SERVICE_TAINT {
            return Err(NodeReason::NodeOutOfService);
        }
        if t.key == TO_BE_DELETED_TAINT {
            return Err(NodeReason::NodeToBeDeleted);
        }
    }
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Err(NodeReason::NodeCordoned);
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return Err(NodeReason::NodeNotReady);
    }
    Ok(())
}

/// The node's first IPv4 InternalIP: the default BGP Identifier.
pub fn node_router_id(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
}

fn family_of(prefix: IpNet) -> AddressFamily {
    match prefix {
        IpNet::V4(_) => AddressFamily::IPV4_UNICAST,
        IpNet::V6(_) => AddressFamily::IPV6_UNICAST,
    }
}

/// Routes being collected, per peer and prefix.
#[derive(Default)]
struct Routes(BTreeMap<String, BTreeMap<IpNet, Route>>);

impl Routes {
    fn add(&mut self, peers: &BTreeMap<String, DesiredPeer>, ad: &Ad<'_>, prefix: IpNet) {
        for p in &ad.peers {
            // A prefix of a family the session does not negotiate cannot be sent (RFC 4760).
            if !peers[*p]
                .spec
                .session
                .fsm
                .families
                .contains(&family_of(prefix))
            {
                continue;
            }
            let new = ad.route(prefix);
            self.0
                .entry((*p).to_owned())
                .or_default()
                .entry(prefix)
                .and_modify(|r| {
                    // Several advertisements (or Services) give the same prefix: the union of
                    // their communities, the highest LOCAL_PREF.
                    r.communities.extend(&new.communities);
                    r.large_communities.extend(&new.large_communities);
                    r.local_pref = r.local_pref.max(new.local_pref);
                    r.normalize();
                })
                .or_insert(new);
        }
    }
}

/// What `node_name` should announce.
pub fn compute(view: &ClusterView, node_name: &str) -> Desired {
    let mut out = Desired::default();
    let node = view
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name));
    let Some(node) = node else {
        out.node_reason = Some(NodeReason::NodeNotFound);
        return out;
    };
    let empty = BTreeMap::new();
    let node_labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    out.node_reason = node_eligibility(node).err();
    out.router_id = view.router_id.or_else(|| node_router_id(node));

    // The peers this node runs.
    for p in &view.peers {
        let name = p.metadata.name.clone().unwrap_or_default();
        if let Err(e) = validate_selectors(&p.spec.node_selectors) {
            out.problems.push(Problem::InvalidPeer {
                name,
                error: e.to_string(),
            });
            continue;
        }
        if !matches_any(&p.spec.node_selectors, Some(node_labels)) {
            continue;
        }
        let Some(rid) = out.router_id else {
            if !out.problems.contains(&Problem::NoRouterId) {
                out.problems.push(Problem::NoRouterId);
            }
            continue;
        };
        match peers::from_bgppeer(&name, &p.spec, rid) {
            Ok(spec) => {
                out.peers.insert(
                    name,
                    DesiredPeer {
                        spec,
                        routes: Vec::new(),
                    },
                );
            }
            Err(e) => out.problems.push(Problem::InvalidPeer {
                name,
                error: e.to_string(),
            }),
        }
    }

    let mut ads = Vec::new();
    for a in &view.advertisements {
        let name = a.metadata.name.as_deref().unwrap_or_default();
        match parse_ad(a, node_labels, &out.peers) {
            Ok(ad) => {
                out.valid_advertisements.insert(name.to_owned());
                ads.push(ad)
            }
            Err(error) => out.problems.push(Problem::InvalidAdvertisement {
                name: name.to_owned(),
                error,
            }),
        }
    }
    let mut pools = Vec::new();
    for p in &view.ip_pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        match pool_ranges(p) {
            Ok(r) => {
                let mut by: Vec<String> = ads
                    .iter()
                    .filter(|a| a.ad.spec.advertise_load_balancer_ips && a.selects_pool(p))
                    .map(|a| a.ad.metadata.name.clone().unwrap_or_default())
                    .collect();
                by.sort();
                if by.is_empty() {
                    out.unadvertised_pools.insert(name.clone());
                }
                out.pool_advertisements.insert(name.clone(), by);
                pools.push((p.as_ref(), name, r));
            }
            Err(error) => out.problems.push(Problem::InvalidPool { name, error }),
        }
    }

    let mut slices: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for s in &view.endpoint_slices {
        if let Some(key) = rules::slice_service(s) {
            slices.entry(key).or_default().push(s);
        }
    }

    let mut routes = Routes::default();
    for svc in &view.services {
        let key = (
            svc.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let outcome = service_outcome(
            svc,
            &key,
            view,
            &ads,
            &pools,
            out.node_reason.as_ref(),
            &slices,
            node_name,
        );
        let Some(outcome) = outcome else { continue };
        let outcome = match outcome {
            Ok(list) => {
                let mut prefixes = BTreeSet::new();
                for (ad, prefix) in list {
                    routes.add(&out.peers, ad, prefix);
                    prefixes.insert(prefix);
                }
                ServiceOutcome::Announced(prefixes)
            }
            Err(reason) => ServiceOutcome::NotAnnounced(reason),
        };
        out.services.insert(key, outcome);
    }

    // The bridge: pod CIDRs (kept on an ineligible node: its pods are still there) and the
    // service CIDRs from gateway nodes.
    let spec = node.spec.as_ref();
    let pod_cidrs: Vec<IpNet> = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect();
    for ad in ads.iter().filter(|a| a.node_selected) {
        if ad.ad.spec.advertise_pod_cidrs {
            for c in &pod_cidrs {
                routes.add(&out.peers, ad, *c);
            }
        }
        let gateway = ad
            .ad
            .spec
            .service_cidr_gateway_selector
            .as_ref()
            .is_none_or(|s| matches_any(std::slice::from_ref(s), Some(node_labels)));
        if gateway && out.node_reason.is_none() {
            for c in &ad.service_cidrs {
                routes.add(&out.peers, ad, *c);
            }
        }
    }

    for (peer, by_prefix) in routes.0 {
        if let Some(p) = out.peers.get_mut(&peer) {
            p.routes = by_prefix
                .into_values()
                .map(DesiredRoute::next_hop_self)
                .collect();
        }
    }
    out
}

/// None: not a Service of ours and nothing to announce for it.
#[allow(clippy::too_many_arguments)]
fn service_outcome<'a, 'b>(
    svc: &Service,
    key: &(String, String),
    view: &ClusterView,
    ads: &'b [Ad<'a>],
    pools: &[PoolRanges<'_>],
    node_reason: Option<&NodeReason>,
    slices: &HashMap<(String, String), Vec<&EndpointSlice>>,
    node_name: &str,
) -> Option<Result<Vec<(&'b Ad<'a>, IpNet)>, ServiceReason>> {
    let ours = rules::is_managed(svc, &view.class);
    let spec = svc.spec.as_ref();
    let external_ips: Vec<IpAddr> = spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect();
    if !ours && external_ips.is_empty() {
        return None;
    }
    Some(service_routes(
        svc,
        key,
        ours,
        &external_ips,
        ads,
        pools,
        node_reason,
        slices,
        node_name,
    ))
}

#[allow(clippy::too_many_arguments)]
fn service_routes<'a, 'b>(
    svc: &Service,
    key: &(String, String),
    ours: bool,
    external_ips: &[IpAddr],
    ads: &'b [Ad<'a>],
    pools: &[PoolRanges<'_>],
    node_reason: Option<&NodeReason>,
    slices: &HashMap<(String, String), Vec<&EndpointSlice>>,
    node_name: &str,
) -> Result<Vec<(&'b Ad<'a>, IpNet)>, ServiceReason> {
    if svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::NO_ANNOUNCE))
        .is_some_and(|v| v == "true")
    {
        return Err(ServiceReason::NoAnnounceAnnotation);
    }
    // Candidates: (address, advertisements that would carry it), with the closest miss kept
    // as the reason when none does.
    let mut candidates: Vec<(IpAddr, Vec<&'b Ad<'a>>)> = Vec::new();
    let mut miss: Option<ServiceReason> = None;
    if ours {
        let ingress: Vec<IpAddr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        if ingress.is_empty() && external_ips.is_empty() {
            return Err(ServiceReason::NoIngress);
        }
        for ip in ingress {
            let Some((pool, pool_name, _)) = pools
                .iter()
                .find(|(_, _, r)| r.iter().any(|r| in_range(ip, *r)))
            else {
                keep_miss(ServiceReason::AddressInNoPool(ip), &mut miss);
                continue;
            };
            let by_pool: Vec<&Ad> = ads
                .iter()
                .filter(|a| a.ad.spec.advertise_load_balancer_ips && a.selects_pool(pool))
                .collect();
            match select(&by_pool, svc) {
                Ok(sel) => candidates.push((ip, sel)),
                Err(None) => keep_miss(
                    ServiceReason::NoAdvertisementSelectsPool(pool_name.clone()),
                    &mut miss,
                ),
                Err(Some(r)) => keep_miss(r, &mut miss),
            }
        }
    }
    if !external_ips.is_empty() {
        let by_kind: Vec<&Ad> = ads
            .iter()
            .filter(|a| a.ad.spec.advertise_external_ips)
            .collect();
        match select(&by_kind, svc) {
            Ok(sel) => candidates.extend(external_ips.iter().map(|ip| (*ip, sel.clone()))),
            Err(None) if !ours => keep_miss(ServiceReason::ServiceNotLoadBalancer, &mut miss),
            Err(None) => {}
            Err(Some(r)) => keep_miss(r, &mut miss),
        }
    }
    if candidates.is_empty() {
        return Err(miss.unwrap_or(ServiceReason::NoIngress));
    }
    if let Some(r) = node_reason {
        return Err(ServiceReason::Node(r.clone()));
    }
    let local = spec_is_local(svc);
    if local {
        let s = slices.get(key).map(Vec::as_slice).unwrap_or_default();
        if !rules::has_usable_local_endpoint(s.iter().copied(), node_name) {
            return Err(ServiceReason::NoReadyLocalEndpoint);
        }
    }
    Ok(candidates
        .into_iter()
        .flat_map(|(ip, ads)| ads.into_iter().map(move |a| (a, a.aggregate(ip))))
        .collect())
}

/// The advertisements (of those for the address) that select the Service, this node and a
/// peer of it. Err(None): there were none to begin with.
fn select<'a, 'b>(
    ads: &[&'b Ad<'a>],
    svc: &Service,
) -> Result<Vec<&'b Ad<'a>>, Option<ServiceReason>> {
    if ads.is_empty() {
        return Err(None);
    }
    let by_svc: Vec<&Ad> = ads
        .iter()
        .copied()
        .filter(|a| a.selects_service(svc))
        .collect();
    if by_svc.is_empty() {
        return Err(Some(ServiceReason::NoAdvertisementSelectsService));
    }
    let by_node: Vec<&Ad> = by_svc.into_iter().filter(|a| a.node_selected).collect();
    if by_node.is_empty() {
        return Err(Some(ServiceReason::NodeNotSelected));
    }
    let with_peer: Vec<&Ad> = by_node
        .into_iter()
        .filter(|a| !a.peers.is_empty())
        .collect();
    if with_peer.is_empty() {
        return Err(Some(ServiceReason::NoPeerForAdvertisement));
    }
    Ok(with_peer)
}

/// Keep the reason closest to being announced (later variants of the enum are closer).
fn keep_miss(r: ServiceReason, miss: &mut Option<ServiceReason>) {
    if miss.as_ref().is_none_or(|m| r > *m) {
        *miss = Some(r);
    }
}

fn spec_is_local(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local")
}

#[cfg(test)]
mod tests;
