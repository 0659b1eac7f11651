//! Views (the split horizon): which clients get which answers.
//!
//! Selection is pure: given the client's source address, the local address the query
//! reached and an optional EDNS client-subnet (RFC 7871) address, pick a view. The
//! client-subnet is believed only from configured trusted forwarders, so a dnsmasq or
//! corporate resolver in front does not hide who asked, and nobody else can choose a view.
//!
//! Views come from two places, merged by [`merge_views`]: the configuration file (the base,
//! an ordered list) and `DNSView` objects (added, or replacing a file view of the same name
//! in its place). Among the views matching a client:
//! 1. the highest `priority` wins (file views: 0 unless they set one);
//! 2. at equal priority, file views come before DNSViews, and among file views the first in
//!    file order wins (the file's "first match wins", unchanged);
//! 3. among DNSViews, the longest matching `clientCIDRs` prefix wins, then the name.
//!
//! So a DNSView overrides the file only with a higher priority (or by taking a file view's
//! name); at the same priority it serves the clients no file view claims.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::{Expression, Selector};
use kube::runtime::watcher::Event;
use leafbridge_api::{DNSView, DNSViewSpec, crd::ServiceAddressKind};

use crate::config::{ServiceAddress, ViewConfig, ViewOrigin};
use crate::index::{Labels, ServiceEntry};

/// Which addresses a (non-headless, non-ExternalName) Service's name answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// `spec.clusterIPs`.
    ClusterIp,
    /// `status.loadBalancer.ingress[].ip`; Services without one have no address here.
    LoadBalancerIp,
    /// LoadBalancer addresses if any, else ClusterIPs (the service CIDR is routed to the
    /// clients).
    LoadBalancerIpElseClusterIp,
}

/// A compiled Service label selector (Kubernetes `LabelSelector` semantics: every
/// requirement must hold; an empty selector selects everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSelector(Vec<Expression>);

impl ServiceSelector {
    /// Parsed and checked by kube's `Selector` (operator names, values present for
    /// `In`/`NotIn`).
    pub fn new(s: &LabelSelector) -> Result<Self, String> {
        let sel = Selector::try_from(s.clone()).map_err(|e| e.to_string())?;
        Ok(Self(sel.into_iter().collect()))
    }

    /// Evaluated on the index's compact labels (kube's own `matches` needs a `BTreeMap`
    /// per Service, which the index does not keep to stay small).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|e| match e {
            Expression::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Expression::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Expression::Equal(k, v) => labels.get(k) == Some(v.as_str()),
            Expression::NotEqual(k, v) => labels.get(k) != Some(v.as_str()),
            Expression::Exists(k) => labels.get(k).is_some(),
            Expression::DoesNotExist(k) => labels.get(k).is_none(),
        })
    }
}

/// What a view may see and which addresses it is given.
#[derive(Debug, Clone)]
pub struct ViewPolicy {
    pub name: String,
    /// In-cluster answers: everything visible, ClusterIPs and pod IPs.
    pub standard: bool,
    pub namespaces_allow: Option<HashSet<String>>,
    pub namespaces_deny: HashSet<String>,
    /// Only Services this selects are visible (shared: policies are cloned per forward).
    pub service_selector: Option<Arc<ServiceSelector>>,
    pub service_answer: ServiceAnswer,
    pub pod_cidr_announced: bool,
    pub forward: bool,
}

impl ViewPolicy {
    /// The in-cluster view: standard Kubernetes DNS answers.
    pub fn cluster() -> Self {
        Self {
            name: "cluster".into(),
            standard: true,
            namespaces_allow: None,
            namespaces_deny: HashSet::new(),
            service_selector: None,
            service_answer: ServiceAnswer::ClusterIp,
            pod_cidr_announced: true,
            forward: true,
        }
    }

    /// A view's policy. The selector was checked by [`crate::config::Config::validate`] or
    /// [`dnsview_config`]; one that still fails to compile selects nothing (fail closed).
    pub fn from_config(c: &ViewConfig) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        let service_answer = match c.service_address {
            Some(ServiceAddress::ClusterIp) => ServiceAnswer::ClusterIp,
            Some(ServiceAddress::LoadBalancerIp) => ServiceAnswer::LoadBalancerIp,
            None if c.standard => ServiceAnswer::ClusterIp,
            None if c.service_cidr_announced => ServiceAnswer::LoadBalancerIpElseClusterIp,
            None => ServiceAnswer::LoadBalancerIp,
        };
        let service_selector = c.service_selector.as_ref().map(|s| {
            Arc::new(ServiceSelector::new(s).unwrap_or_else(|_| {
                ServiceSelector(vec![Expression::In(String::new(), Default::default())])
            }))
        });
        Self {
            name: c.name.clone(),
            standard: c.standard,
            namespaces_allow: c.namespaces_allow.as_deref().map(lower),
            namespaces_deny: lower(&c.namespaces_deny),
            service_selector,
            service_answer,
            pod_cidr_announced: c.standard || c.pod_cidr_announced,
            forward: c.forward,
        }
    }

    pub fn namespace_visible(&self, ns: &str) -> bool {
        if self.namespaces_deny.contains(ns) {
            return false;
        }
        self.namespaces_allow
            .as_ref()
            .is_none_or(|a| a.contains(ns))
    }

    /// Hidden Services (the opt-out annotation) are seen only by standard views; a view's
    /// Service selector applies to every record derived from the Service (its name, SRV,
    /// endpoint hostnames, PTR).
    pub fn service_visible(&self, ns: &str, svc: &ServiceEntry) -> bool {
        self.namespace_visible(ns)
            && (self.standard || !svc.hidden)
            && self
                .service_selector
                .as_ref()
                .is_none_or(|s| s.matches(&svc.labels))
    }

    pub fn pods_reachable(&self) -> bool {
        self.pod_cidr_announced
    }

    /// Addresses a non-headless Service answers with in this view.
    pub fn service_addresses(&self, cluster_ips: &[IpAddr], lb_ips: &[IpAddr]) -> Vec<IpAddr> {
        match self.service_answer {
            ServiceAnswer::ClusterIp => cluster_ips.to_vec(),
            ServiceAnswer::LoadBalancerIp => lb_ips.to_vec(),
            ServiceAnswer::LoadBalancerIpElseClusterIp if lb_ips.is_empty() => cluster_ips.to_vec(),
            ServiceAnswer::LoadBalancerIpElseClusterIp => lb_ips.to_vec(),
        }
    }
}

/// A view with its selector.
#[derive(Debug, Clone)]
pub struct View {
    pub policy: ViewPolicy,
    sources: Vec<IpNet>,
    destinations: Vec<IpAddr>,
    trusted_ecs_from: Vec<IpNet>,
    priority: i32,
    origin: ViewOrigin,
}

impl View {
    pub fn from_config(c: &ViewConfig) -> Self {
        Self {
            policy: ViewPolicy::from_config(c),
            sources: c.sources.clone(),
            destinations: c.destinations.clone(),
            trusted_ecs_from: c.trusted_ecs_from.clone(),
            priority: c.priority,
            origin: c.origin,
        }
    }

    /// `Some(prefix length of the longest matching source)` if the view matches (0 when it
    /// selects by local address only). `client` is who asked: the source address, or the
    /// EDNS client-subnet prefix a trusted forwarder vouches for.
    fn matches(&self, client: &Client, local: IpAddr) -> Option<u8> {
        // A view with no selector at all matches nothing (it must be chosen explicitly).
        if self.sources.is_empty() && self.destinations.is_empty() {
            return None;
        }
        if !self.destinations.is_empty() && !self.destinations.contains(&local) {
            return None;
        }
        if self.sources.is_empty() {
            return Some(0);
        }
        let ecs = client.ecs.filter(|_| {
            self.trusted_ecs_from
                .iter()
                .any(|n| n.contains(&client.source))
        });
        match ecs {
            // RFC 7871 7.1.1: the answer may depend only on the ECS prefix, so a view is
            // chosen only when the whole prefix lies inside one of its networks.
            Some(prefix) => self
                .sources
                .iter()
                .filter(|n| n.contains(&prefix))
                .map(IpNet::prefix_len)
                .max(),
            None => self
                .sources
                .iter()
                .filter(|n| n.contains(&client.source))
                .map(IpNet::prefix_len)
                .max(),
        }
    }

    fn believes_ecs_of(&self, source: IpAddr) -> bool {
        !self.sources.is_empty() && self.trusted_ecs_from.iter().any(|n| n.contains(&source))
    }
}

/// Who asked, as view selection sees it.
#[derive(Debug, Clone, Copy)]
struct Client {
    source: IpAddr,
    /// The EDNS client-subnet prefix (source prefix length > 0), if any.
    ecs: Option<IpNet>,
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack `[::]` socket
/// reports for IPv4 clients) as the IPv4 address it is, so IPv4 networks match it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The EDNS client-subnet option as a prefix: `None` for a source prefix of 0 (RFC 7871
/// 7.1.2: the client asks for no tailoring; dnsmasq's bare `--add-subnet` sends it) or an
/// impossible length.
pub fn ecs_prefix(addr: IpAddr, source_prefix: u8) -> Option<IpNet> {
    if source_prefix == 0 {
        return None;
    }
    IpNet::new(addr, source_prefix).ok().map(|n| n.trunc())
}

/// How clients that match no view are answered (the fail-closed fallback).
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    /// The cluster's own networks (pod and node CIDRs): unmatched clients inside them get
    /// the in-cluster view.
    pub cluster_networks: Vec<IpNet>,
    /// The view for every other unmatched client; `None`: REFUSED.
    pub default_view: Option<String>,
    /// DNSViews have been listed and their watch is healthy. Until then a DNSView may
    /// exist for any client, so no unmatched client gets the in-cluster view.
    pub dnsviews_listed: bool,
}

/// Why a client got no view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Not in a view and not in the cluster's networks.
    OutsideClusterNetworks,
    /// DNSViews are not listed yet (or their watch is failing): one may be meant for it.
    DnsViewsNotListed,
}

impl Unmatched {
    pub fn label(self) -> &'static str {
        match self {
            Self::OutsideClusterNetworks => "no_view",
            Self::DnsViewsNotListed => "dnsviews_not_listed",
        }
    }
}

/// The outcome of view selection.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    /// The view, or why there is none (answer REFUSED).
    pub view: Result<&'a ViewPolicy, Unmatched>,
    /// The EDNS client-subnet chose it: the reply's ECS scope is the source prefix;
    /// otherwise 0 (RFC 7871 7.2.1).
    pub by_ecs: bool,
}

#[derive(Debug, Clone)]
pub struct Views {
    views: Vec<View>,
    cluster: ViewPolicy,
    default: Option<ViewPolicy>,
    cluster_networks: Vec<IpNet>,
    dnsviews_listed: bool,
}

impl Views {
    pub fn new(configs: &[ViewConfig], fallback: &Fallback) -> Self {
        let default = fallback
            .default_view
            .as_ref()
            .and_then(|name| configs.iter().find(|c| &c.name == name))
            .map(ViewPolicy::from_config);
        Self {
            views: configs.iter().map(View::from_config).collect(),
            cluster: ViewPolicy::cluster(),
            default,
            cluster_networks: fallback.cluster_networks.clone(),
            dnsviews_listed: fallback.dnsviews_listed,
        }
    }

    /// The best matching view (see the module comment for the order); for a client no view
    /// matches, the in-cluster view inside the cluster's networks once DNSViews are listed,
    /// else the default view, else no view (REFUSED).
    pub fn select(&self, source: IpAddr, local: IpAddr, ecs: Option<IpNet>) -> Selected<'_> {
        let source = canonical(source);
        let local = canonical(local);
        let client = Client { source, ecs };
        let mut best: Option<(&View, (i32, u8, i64))> = None;
        for (i, v) in self.views.iter().enumerate() {
            let Some(prefix) = v.matches(&client, local) else {
                continue;
            };
            // Larger is better: priority, then file views before DNSViews, then file order
            // or prefix length; ties keep the earlier view (the list is in name order).
            let rank = match v.origin {
                ViewOrigin::File => (v.priority, 1, -(i as i64)),
                ViewOrigin::DnsView => (v.priority, 0, i64::from(prefix)),
            };
            if best.as_ref().is_none_or(|(_, r)| rank > *r) {
                best = Some((v, rank));
            }
        }
        // The client-subnet counts wherever a view believes this forwarder: then the
        // choice (a view, the cluster view or none) was made on the ECS prefix.
        let trusted = ecs.is_some() && self.views.iter().any(|v| v.believes_ecs_of(source));
        if let Some((v, _)) = best {
            let by_ecs = trusted && v.believes_ecs_of(source);
            return Selected {
                view: Ok(&v.policy),
                by_ecs,
            };
        }
        let in_cluster = match ecs {
            Some(prefix) if trusted => self.cluster_networks.iter().any(|n| n.contains(&prefix)),
            _ => self.cluster_networks.iter().any(|n| n.contains(&source)),
        };
        let view = if in_cluster && self.dnsviews_listed {
            Ok(&self.cluster)
        } else if let Some(d) = &self.default {
            Ok(d)
        } else if in_cluster {
            Err(Unmatched::DnsViewsNotListed)
        } else {
            Err(Unmatched::OutsideClusterNetworks)
        };
        Selected {
            view,
            by_ecs: trusted,
        }
    }

    /// Whether some view believes the EDNS client-subnet `source` sends.
    pub fn believes_ecs_of(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        self.views.iter().any(|v| v.believes_ecs_of(source))
    }

    /// Number of views besides the default (metrics, logs).
    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

/// Why a DNSView is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsViewError {
    #[error("clientCIDRs entry {cidr:?} is not a CIDR ({reason})")]
    BadClientCidr { cidr: String, reason: String },
    #[error("clientCIDRs is empty: the view would match no client")]
    NoClientCidrs,
    #[error("serviceSelector is invalid: {0}")]
    BadServiceSelector(String),
}

/// A DNSView as a view of the configuration. It is never `standard` (hidden Services stay
/// hidden from it) and always forwards other names.
pub fn dnsview_config(name: &str, spec: &DNSViewSpec) -> Result<ViewConfig, DnsViewError> {
    let mut sources = Vec::with_capacity(spec.client_cidrs.len());
    for c in &spec.client_cidrs {
        let net: IpNet =
            c.trim()
                .parse()
                .map_err(|e: ipnet::AddrParseError| DnsViewError::BadClientCidr {
                    cidr: c.clone(),
                    reason: e.to_string(),
                })?;
        sources.push(net.trunc());
    }
    if sources.is_empty() {
        return Err(DnsViewError::NoClientCidrs);
    }
    if let Some(s) = &spec.service_selector {
        ServiceSelector::new(s).map_err(DnsViewError::BadServiceSelector)?;
    }
    let cluster_ip = spec.service_address == ServiceAddressKind::ClusterIP;
    Ok(ViewConfig {
        name: name.to_owned(),
        sources,
        namespaces_allow: (!spec.namespaces.is_empty()).then(|| spec.namespaces.clone()),
        service_cidr_announced: cluster_ip,
        service_address: Some(if cluster_ip {
            ServiceAddress::ClusterIp
        } else {
            ServiceAddress::LoadBalancerIp
        }),
        pod_cidr_announced: spec.expose_pod_ips,
        service_selector: spec.service_selector.clone(),
        priority: spec.priority,
        forward: true,
        origin: ViewOrigin::DnsView,
        ..Default::default()
    })
}

/// The file's views with the DNSViews merged in: a DNSView named like a file view replaces
/// it in its place (keeping the file's `trusted_ecs_from`, which a DNSView cannot express,
/// and ranking as a file view); the others follow in name order and believe the EDNS
/// client-subnet of every forwarder some file view trusts, so a dnsmasq or corporate
/// resolver in front hides the real client from them no more than from file views.
pub fn merge_views(
    file: &[ViewConfig],
    dns_views: &BTreeMap<String, ViewConfig>,
) -> Vec<ViewConfig> {
    let mut out: Vec<ViewConfig> = file
        .iter()
        .map(|f| match dns_views.get(&f.name) {
            Some(d) => ViewConfig {
                trusted_ecs_from: f.trusted_ecs_from.clone(),
                origin: ViewOrigin::File,
                ..d.clone()
            },
            None => f.clone(),
        })
        .collect();
    let file_names: HashSet<&str> = file.iter().map(|f| f.name.as_str()).collect();
    let mut trusted: Vec<IpNet> = file
        .iter()
        .flat_map(|f| f.trusted_ecs_from.iter().copied())
        .collect();
    trusted.sort();
    trusted.dedup();
    out.extend(
        dns_views
            .values()
            .filter(|d| !file_names.contains(d.name.as_str()))
            .map(|d| ViewConfig {
                trusted_ecs_from: trusted.clone(),
                ..d.clone()
            }),
    );
    out
}

/// The DNSViews in use: the last good version of each, by name. A DNSView whose new version
/// is invalid keeps its last good version (an edit with a typo never silently removes a
/// view, as a bad configuration reload keeps the running one); one that was never valid is
/// ignored. Pure: the watch in `main.rs` feeds it and reports the errors.
#[derive(Debug, Default, Clone)]
pub struct DnsViews {
    good: BTreeMap<String, ViewConfig>,
    /// Names seen since a relist began; `None` outside a relist.
    relist: Option<HashSet<String>>,
    /// The view set changed since the last rebuild.
    dirty: bool,
}

/// What the watch feeding [`DnsViews::on_event`] must do.
#[derive(Debug, PartialEq, Eq)]
pub struct EventOutcome {
    /// Rebuild the views and swap them in.
    pub rebuild: bool,
    /// An invalid DNSView to report: (name, why, whether its last good version stays).
    pub rejected: Option<(String, DnsViewError, bool)>,
}

/// What one DNSView event did.
#[derive(Debug, PartialEq, Eq)]
pub enum DnsViewChange {
    /// The set of views in use changed: rebuild.
    Changed,
    Unchanged,
    /// The object is invalid; `kept_previous` says whether an earlier good version stays.
    Rejected {
        error: DnsViewError,
        kept_previous: bool,
    },
}

impl DnsViews {
    pub fn views(&self) -> &BTreeMap<String, ViewConfig> {
        &self.good
    }

    /// Consume one watch event (either backend). During a relist (`Init` … `InitDone`) the
    /// rebuild waits for its end, so a restarted watch does not flap views away and back.
    pub fn on_event(&mut self, event: &Event<DNSView>) -> EventOutcome {
        let (name, change) = match event {
            Event::Init => {
                self.relist_start();
                (String::new(), DnsViewChange::Unchanged)
            }
            Event::InitApply(v) | Event::Apply(v) => {
                let name = v.name_any();
                let change = self.apply(&name, &v.spec);
                (name, change)
            }
            Event::Delete(v) => {
                let name = v.name_any();
                let change = self.delete(&name);
                (name, change)
            }
            Event::InitDone => (String::new(), self.relist_done()),
        };
        let rejected = match change {
            DnsViewChange::Changed => {
                self.dirty = true;
                None
            }
            DnsViewChange::Unchanged => None,
            DnsViewChange::Rejected {
                error,
                kept_previous,
            } => Some((name, error, kept_previous)),
        };
        let rebuild = self.dirty && self.relist.is_none();
        if rebuild {
            self.dirty = false;
        }
        EventOutcome { rebuild, rejected }
    }

    pub fn apply(&mut self, name: &str, spec: &DNSViewSpec) -> DnsViewChange {
        if let Some(seen) = &mut self.relist {
            seen.insert(name.to_owned());
        }
        match dnsview_config(name, spec) {
            Ok(v) => {
                if self.good.get(name) == Some(&v) {
                    DnsViewChange::Unchanged
                } else {
                    self.good.insert(name.to_owned(), v);
                    DnsViewChange::Changed
                }
            }
            Err(error) => DnsViewChange::Rejected {
                error,
                kept_previous: self.good.contains_key(name),
            },
        }
    }

    pub fn delete(&mut self, name: &str) -> DnsViewChange {
        if self.good.remove(name).is_some() {
            DnsViewChange::Changed
        } else {
            DnsViewChange::Unchanged
        }
    }

    /// A relist (watcher `Init`) begins: views not listed again until [`Self::relist_done`]
    /// are removed.
    pub fn relist_start(&mut self) {
        self.relist = Some(HashSet::new());
    }

    pub fn relist_done(&mut self) -> DnsViewChange {
        let Some(seen) = self.relist.take() else {
            return DnsViewChange::Unchanged;
        };
        let before = self.good.len();
        self.good.retain(|name, _| seen.contains(name));
        if self.good.len() == before {
            DnsViewChange::Unchanged
        } else {
            DnsViewChange::Changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> ViewConfig {
        ViewConfig {
            name: "office".into(),
            sources: vec!["192.0.2.0/24".parse().unwrap()],
            trusted_ecs_from: vec!["127.0.0.2/32".parse().unwrap()],
            forward: true,
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Views whose unmatched loopback clients are in the cluster's networks.
    fn views(c: &[ViewConfig]) -> Views {
        Views::new(
            c,
            &Fallback {
                cluster_networks: vec!["127.0.0.0/8".parse().unwrap()],
                default_view: None,
                dnsviews_listed: true,
            },
        )
    }

    /// The chosen view's name, or `REFUSED`.
    trait Pick {
        fn pick(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> String;
    }

    impl Pick for Views {
        fn pick(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> String {
            let ecs = ecs.map(IpNet::from);
            match self.select(source, local, ecs).view {
                Ok(v) => v.name.clone(),
                Err(_) => "REFUSED".into(),
            }
        }
    }

    fn spec(yaml: &str) -> DNSViewSpec {
        leafbridge_api::yaml::from_str(yaml).unwrap()
    }

    fn crd_views(views: &[(&str, &str)]) -> BTreeMap<String, ViewConfig> {
        views
            .iter()
            .map(|(n, y)| (n.to_string(), dnsview_config(n, &spec(y)).unwrap()))
            .collect()
    }

    #[test]
    fn selects_view_by_source_network() {
        let v = views(&[office()]);
        let lo = ip("127.0.0.1");
        assert_eq!(v.pick(ip("192.0.2.7"), lo, None), "office");
        assert_eq!(v.pick(lo, lo, None), "cluster");
    }

    #[test]
    fn believes_client_subnet_only_from_trusted_forwarders() {
        let v = views(&[office()]);
        let lo = ip("127.0.0.1");
        let ecs = Some(ip("192.0.2.9"));
        assert_eq!(v.pick(ip("127.0.0.2"), lo, ecs), "office");
        assert_eq!(v.pick(lo, lo, ecs), "cluster");
    }

    #[test]
    fn selects_view_by_local_address() {
        let mut c = office();
        c.sources.clear();
        c.destinations = vec![ip("127.0.0.3")];
        let v = views(&[c]);
        let src = ip("127.0.0.1");
        assert_eq!(v.pick(src, ip("127.0.0.3"), None), "office");
        assert_eq!(v.pick(src, src, None), "cluster");
    }

    #[test]
    fn office_gets_load_balancer_address_and_cluster_ip_only_when_announced() {
        let cip: Vec<IpAddr> = vec![ip("10.96.0.10")];
        let lb: Vec<IpAddr> = vec![ip("203.0.113.5")];
        let p = ViewPolicy::from_config(&office());
        assert_eq!(p.service_addresses(&cip, &lb), lb);
        assert!(p.service_addresses(&cip, &[]).is_empty());
        let mut c = office();
        c.service_cidr_announced = true;
        let p = ViewPolicy::from_config(&c);
        assert_eq!(p.service_addresses(&cip, &lb), lb);
        assert_eq!(p.service_addresses(&cip, &[]), cip);
    }

    #[test]
    fn file_views_keep_first_match_wins_among_equal_priorities() {
        let mut wide = office();
        wide.name = "wide".into();
        let mut narrow = office();
        narrow.name = "narrow".into();
        narrow.sources = vec!["192.0.2.128/25".parse().unwrap()];
        let v = views(&[wide.clone(), narrow.clone()]);
        assert_eq!(v.pick(ip("192.0.2.200"), ip("127.0.0.1"), None), "wide");
        narrow.priority = 1;
        let v = views(&[wide, narrow]);
        assert_eq!(v.pick(ip("192.0.2.200"), ip("127.0.0.1"), None), "narrow");
    }

    #[test]
    fn dnsviews_select_by_priority_then_longest_prefix() {
        let crds = crd_views(&[
            ("a-wide", "clientCIDRs: [10.0.0.0/8]"),
            ("b-narrow", "clientCIDRs: [10.1.0.0/16, 172.16.0.0/12]"),
            ("c-urgent", "clientCIDRs: [10.1.2.0/24]\npriority: -1"),
            ("d-first", "clientCIDRs: [10.9.0.0/16]\npriority: 5"),
        ]);
        let v = views(&merge_views(&[], &crds));
        let lo = ip("127.0.0.1");
        assert_eq!(v.pick(ip("10.200.0.1"), lo, None), "a-wide");
        assert_eq!(v.pick(ip("10.1.0.1"), lo, None), "b-narrow");
        // Longer prefix, lower priority: priority decides first.
        assert_eq!(v.pick(ip("10.1.2.3"), lo, None), "b-narrow");
        assert_eq!(v.pick(ip("10.9.0.1"), lo, None), "d-first");
        assert_eq!(v.pick(ip("192.0.2.1"), lo, None), "REFUSED");
    }

    #[test]
    fn dnsview_beats_a_file_view_only_with_higher_priority() {
        let file = [office()];
        let same = crd_views(&[("lab", "clientCIDRs: [192.0.2.64/26]")]);
        let v = views(&merge_views(&file, &same));
        let lo = ip("127.0.0.1");
        assert_eq!(v.pick(ip("192.0.2.70"), lo, None), "office");
        let higher = crd_views(&[("lab", "clientCIDRs: [192.0.2.64/26]\npriority: 10")]);
        let v = views(&merge_views(&file, &higher));
        assert_eq!(v.pick(ip("192.0.2.70"), lo, None), "lab");
        assert_eq!(v.pick(ip("192.0.2.7"), lo, None), "office");
    }

    #[test]
    fn dnsview_named_like_a_file_view_replaces_it_in_place() {
        let crds = crd_views(&[(
            "office",
            "clientCIDRs: [198.51.100.0/24]\nserviceAddress: ClusterIP",
        )]);
        let merged = merge_views(&[office()], &crds);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].origin, ViewOrigin::File);
        assert_eq!(merged[0].trusted_ecs_from, office().trusted_ecs_from);
        let v = views(&merged);
        let lo = ip("127.0.0.1");
        assert_eq!(v.pick(ip("192.0.2.7"), lo, None), "REFUSED");
        let p = v.select(ip("198.51.100.7"), lo, None).view.unwrap();
        assert_eq!(
            (p.name.as_str(), p.service_answer),
            ("office", ServiceAnswer::ClusterIp)
        );
    }

    #[test]
    fn dnsviews_believe_client_subnet_from_forwarders_the_file_trusts() {
        let crds = crd_views(&[("lab", "clientCIDRs: [198.51.100.0/24]")]);
        let v = views(&merge_views(&[office()], &crds));
        let lo = ip("127.0.0.1");
        let ecs = Some(ip("198.51.100.9"));
        // 127.0.0.2 is office's trusted forwarder; 127.0.0.1 is nobody's.
        assert_eq!(v.pick(ip("127.0.0.2"), lo, ecs), "lab");
        assert_eq!(v.pick(lo, lo, ecs), "cluster");
    }

    #[test]
    fn dnsview_fields_become_policy() {
        let c = dnsview_config(
            "corp",
            &spec(
                "clientCIDRs: [10.0.0.0/8]\nnamespaces: [Web]\nexposePodIPs: true\n\
                 serviceSelector: {matchLabels: {expose: office}}",
            ),
        )
        .unwrap();
        let p = ViewPolicy::from_config(&c);
        assert_eq!(p.service_answer, ServiceAnswer::LoadBalancerIp);
        assert!(!p.standard && p.pods_reachable() && p.forward);
        assert!(p.namespace_visible("web") && !p.namespace_visible("default"));
        assert!(p.service_selector.is_some());
    }

    #[test]
    fn bad_dnsviews_are_refused_with_the_reason() {
        let bad = |y: &str| dnsview_config("x", &spec(y)).unwrap_err();
        assert!(matches!(
            bad("clientCIDRs: [10.0.0.0/33]"),
            DnsViewError::BadClientCidr { .. }
        ));
        assert!(matches!(
            bad("clientCIDRs: [not-a-cidr]"),
            DnsViewError::BadClientCidr { .. }
        ));
        assert_eq!(bad("clientCIDRs: []"), DnsViewError::NoClientCidrs);
        assert!(matches!(
            bad(
                "clientCIDRs: [10.0.0.0/8]\nserviceSelector: {matchExpressions: [{key: a, operator: Near}]}"
            ),
            DnsViewError::BadServiceSelector(_)
        ));
    }

    #[test]
    fn invalid_edit_keeps_the_last_good_dnsview() {
        let mut d = DnsViews::default();
        assert_eq!(
            d.apply("v", &spec("clientCIDRs: [10.0.0.0/8]")),
            DnsViewChange::Changed
        );
        assert_eq!(
            d.apply("v", &spec("clientCIDRs: [10.0.0.0/8]")),
            DnsViewChange::Unchanged
        );
        assert!(matches!(
            d.apply("v", &spec("clientCIDRs: [10.0.0.0/80]")),
            DnsViewChange::Rejected {
                kept_previous: true,
                ..
            }
        ));
        assert_eq!(
            d.views()["v"].sources,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert!(matches!(
            d.apply("w", &spec("clientCIDRs: [nope]")),
            DnsViewChange::Rejected {
                kept_previous: false,
                ..
            }
        ));
        assert!(!d.views().contains_key("w"));
        assert_eq!(d.delete("v"), DnsViewChange::Changed);
        assert!(d.views().is_empty());
    }

    fn object(name: &str, yaml: &str) -> DNSView {
        DNSView::new(name, spec(yaml))
    }

    #[test]
    fn watch_events_rebuild_once_per_change_and_after_a_relist() {
        let mut d = DnsViews::default();
        let good = object("good", "clientCIDRs: [10.0.0.0/8]");
        let bad = object("bad", "clientCIDRs: [10.0.0.0/99]");
        assert!(!d.on_event(&Event::Init).rebuild);
        assert!(!d.on_event(&Event::InitApply(good.clone())).rebuild);
        let o = d.on_event(&Event::InitApply(bad.clone()));
        assert!(!o.rebuild);
        assert!(
            matches!(o.rejected, Some((ref n, DnsViewError::BadClientCidr { .. }, false)) if n == "bad")
        );
        assert!(d.on_event(&Event::InitDone).rebuild);
        // The same object again (a rescan): nothing to do.
        assert!(!d.on_event(&Event::Apply(good.clone())).rebuild);
        assert!(d.on_event(&Event::Delete(good)).rebuild);
        assert!(d.views().is_empty());
    }

    #[test]
    fn relist_drops_dnsviews_not_listed_again() {
        let mut d = DnsViews::default();
        d.apply("a", &spec("clientCIDRs: [10.0.0.0/8]"));
        d.apply("b", &spec("clientCIDRs: [10.0.0.0/8]"));
        d.relist_start();
        d.apply("b", &spec("clientCIDRs: [10.0.0.0/8]"));
        assert_eq!(d.relist_done(), DnsViewChange::Changed);
        assert_eq!(d.views().keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn service_selector_follows_kubernetes_semantics() {
        let sel = |y: &str| {
            ServiceSelector::new(&leafbridge_api::yaml::from_str::<LabelSelector>(y).unwrap())
                .unwrap()
        };
        let labels = |pairs: &[(&str, &str)]| {
            Labels::from_map(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        assert!(sel("{}").matches(&none));
        assert!(sel("matchLabels: {app: web}").matches(&web));
        assert!(!sel("matchLabels: {app: db}").matches(&web));
        let expr = |op: &str, vals: &str| {
            sel(&format!(
                "matchExpressions: [{{key: tier, operator: {op}{vals}}}]"
            ))
        };
        assert!(expr("In", ", values: [front, back]").matches(&web));
        assert!(!expr("In", ", values: [back]").matches(&web));
        assert!(!expr("In", ", values: [front]").matches(&none));
        assert!(expr("NotIn", ", values: [back]").matches(&web));
        assert!(expr("NotIn", ", values: [back]").matches(&none));
        assert!(expr("Exists", "").matches(&web));
        assert!(!expr("Exists", "").matches(&none));
        assert!(expr("DoesNotExist", "").matches(&none));
    }

    fn restricted() -> ViewConfig {
        ViewConfig {
            name: "restricted".into(),
            namespaces_allow: Some(vec!["public".into()]),
            forward: false,
            ..Default::default()
        }
    }

    #[test]
    fn unmatched_clients_outside_the_cluster_networks_are_refused_or_get_the_default_view() {
        let lo = ip("127.0.0.1");
        let fallback = Fallback {
            cluster_networks: vec!["10.244.0.0/16".parse().unwrap()],
            default_view: None,
            dnsviews_listed: true,
        };
        let v = Views::new(&[office()], &fallback);
        let s = v.select(ip("198.51.100.7"), lo, None);
        assert_eq!(s.view.unwrap_err(), Unmatched::OutsideClusterNetworks);
        assert_eq!(
            v.select(ip("10.244.3.4"), lo, None).view.unwrap().name,
            "cluster"
        );
        let v = Views::new(
            &[office(), restricted()],
            &Fallback {
                default_view: Some("restricted".into()),
                ..fallback
            },
        );
        let p = v.select(ip("198.51.100.7"), lo, None).view.unwrap();
        assert_eq!(p.name, "restricted");
        assert!(!p.forward && !p.namespace_visible("default"));
        // A view without selectors is only ever the default: it matches nobody itself.
        assert_eq!(
            v.select(ip("192.0.2.7"), lo, None).view.unwrap().name,
            "office"
        );
    }

    #[test]
    fn until_dnsviews_are_listed_no_unmatched_client_gets_the_cluster_view() {
        let lo = ip("127.0.0.1");
        let mut fallback = Fallback {
            cluster_networks: vec!["10.244.0.0/16".parse().unwrap()],
            default_view: None,
            dnsviews_listed: false,
        };
        let v = Views::new(&[office()], &fallback);
        let s = v.select(ip("10.244.3.4"), lo, None);
        assert_eq!(s.view.unwrap_err(), Unmatched::DnsViewsNotListed);
        // File views are known from the start.
        assert_eq!(
            v.select(ip("192.0.2.7"), lo, None).view.unwrap().name,
            "office"
        );
        fallback.default_view = Some("restricted".into());
        let v = Views::new(&[office(), restricted()], &fallback);
        assert_eq!(
            v.select(ip("10.244.3.4"), lo, None).view.unwrap().name,
            "restricted"
        );
    }

    fn net(s: &str) -> Option<IpNet> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn client_subnet_chooses_a_view_only_when_its_whole_prefix_lies_inside() {
        let v = views(&[office()]);
        let (fwd, lo) = (ip("127.0.0.2"), ip("127.0.0.1"));
        let s = v.select(fwd, lo, net("192.0.2.0/24"));
        assert_eq!((s.view.unwrap().name.as_str(), s.by_ecs), ("office", true));
        // A /23 reaches outside office's /24: not office, and not the cluster either
        // (the forwarder's own loopback address does not make its clients in-cluster).
        let s = v.select(fwd, lo, net("192.0.2.0/23"));
        assert_eq!(s.view.unwrap_err(), Unmatched::OutsideClusterNetworks);
        assert!(s.by_ecs);
        // An untrusted sender's ECS chooses nothing: scope 0.
        let s = v.select(lo, lo, net("192.0.2.0/24"));
        assert_eq!(
            (s.view.unwrap().name.as_str(), s.by_ecs),
            ("cluster", false)
        );
    }

    #[test]
    fn client_subnet_with_source_prefix_zero_is_ignored() {
        assert_eq!(ecs_prefix(ip("0.0.0.0"), 0), None);
        assert_eq!(ecs_prefix(ip("192.0.2.9"), 33), None);
        assert_eq!(ecs_prefix(ip("192.0.2.9"), 24), net("192.0.2.0/24"));
        let v = views(&[office()]);
        // dnsmasq's bare --add-subnet from the trusted forwarder: its own address decides.
        let s = v.select(
            ip("127.0.0.2"),
            ip("127.0.0.1"),
            ecs_prefix(ip("0.0.0.0"), 0),
        );
        assert_eq!(
            (s.view.unwrap().name.as_str(), s.by_ecs),
            ("cluster", false)
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_sources_match_as_ipv4() {
        let v = views(&[office()]);
        let mapped = ip("::ffff:192.0.2.7");
        assert_eq!(v.pick(mapped, ip("::ffff:127.0.0.1"), None), "office");
        let mut c = office();
        c.sources.clear();
        c.destinations = vec![ip("127.0.0.3")];
        let v = views(&[c]);
        assert_eq!(
            v.pick(ip("::ffff:127.0.0.1"), ip("::ffff:127.0.0.3"), None),
            "office"
        );
    }
}
