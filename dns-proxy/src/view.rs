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
    /// selects by local address only).
    fn matches(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> Option<u8> {
        let client = match ecs {
            Some(e) if self.trusted_ecs_from.iter().any(|n| n.contains(&source)) => e,
            _ => source,
        };
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
        self.sources
            .iter()
            .filter(|n| n.contains(&client))
            .map(IpNet::prefix_len)
            .max()
    }
}

#[derive(Debug, Clone)]
pub struct Views {
    views: Vec<View>,
    default: ViewPolicy,
}

impl Views {
    pub fn new(configs: &[ViewConfig]) -> Self {
        Self {
            views: configs.iter().map(View::from_config).collect(),
            default: ViewPolicy::cluster(),
        }
    }

    /// The best matching view (see the module comment for the order), else the standard
    /// in-cluster view.
    pub fn select(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> &ViewPolicy {
        let mut best: Option<(&View, (i32, u8, i64))> = None;
        for (i, v) in self.views.iter().enumerate() {
            let Some(prefix) = v.matches(source, local, ecs) else {
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
        best.map(|(v, _)| &v.policy).unwrap_or(&self.default)
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

    fn spec(yaml: &str) -> DNSViewSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn crd_views(views: &[(&str, &str)]) -> BTreeMap<String, ViewConfig> {
        views
            .iter()
            .map(|(n, y)| (n.to_string(), dnsview_config(n, &spec(y)).unwrap()))
            .collect()
    }

    #[test]
    fn selects_view_by_source_network() {
        let v = Views::new(&[office()]);
        let lo = ip("127.0.0.1");
        assert_eq!(v.select(ip("192.0.2.7"), lo, None).name, "office");
        assert_eq!(v.select(lo, lo, None).name, "cluster");
    }

    #[test]
    fn believes_client_subnet_only_from_trusted_forwarders() {
        let v = Views::new(&[office()]);
        let lo = ip("127.0.0.1");
        let ecs = Some(ip("192.0.2.9"));
        assert_eq!(v.select(ip("127.0.0.2"), lo, ecs).name, "office");
        assert_eq!(v.select(lo, lo, ecs).name, "cluster");
    }

    #[test]
    fn selects_view_by_local_address() {
        let mut c = office();
        c.sources.clear();
        c.destinations = vec![ip("127.0.0.3")];
        let v = Views::new(&[c]);
        let src = ip("127.0.0.1");
        assert_eq!(v.select(src, ip("127.0.0.3"), None).name, "office");
        assert_eq!(v.select(src, src, None).name, "cluster");
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
        let v = Views::new(&[wide.clone(), narrow.clone()]);
        assert_eq!(
            v.select(ip("192.0.2.200"), ip("127.0.0.1"), None).name,
            "wide"
        );
        narrow.priority = 1;
        let v = Views::new(&[wide, narrow]);
        assert_eq!(
            v.select(ip("192.0.2.200"), ip("127.0.0.1"), None).name,
            "narrow"
        );
    }

    #[test]
    fn dnsviews_select_by_priority_then_longest_prefix() {
        let crds = crd_views(&[
            ("a-wide", "clientCIDRs: [10.0.0.0/8]"),
            ("b-narrow", "clientCIDRs: [10.1.0.0/16, 172.16.0.0/12]"),
            ("c-urgent", "clientCIDRs: [10.1.2.0/24]\npriority: -1"),
            ("d-first", "clientCIDRs: [10.9.0.0/16]\npriority: 5"),
        ]);
        let v = Views::new(&merge_views(&[], &crds));
        let lo = ip("127.0.0.1");
        assert_eq!(v.select(ip("10.200.0.1"), lo, None).name, "a-wide");
        assert_eq!(v.select(ip("10.1.0.1"), lo, None).name, "b-narrow");
        // Longer prefix, lower priority: priority decides first.
        assert_eq!(v.select(ip("10.1.2.3"), lo, None).name, "b-narrow");
        assert_eq!(v.select(ip("10.9.0.1"), lo, None).name, "d-first");
        assert_eq!(v.select(ip("192.0.2.1"), lo, None).name, "cluster");
    }

    #[test]
    fn dnsview_beats_a_file_view_only_with_higher_priority() {
        let file = [office()];
        let same = crd_views(&[("lab", "clientCIDRs: [192.0.2.64/26]")]);
        let v = Views::new(&merge_views(&file, &same));
        let lo = ip("127.0.0.1");
        assert_eq!(v.select(ip("192.0.2.70"), lo, None).name, "office");
        let higher = crd_views(&[("lab", "clientCIDRs: [192.0.2.64/26]\npriority: 10")]);
        let v = Views::new(&merge_views(&file, &higher));
        assert_eq!(v.select(ip("192.0.2.70"), lo, None).name, "lab");
        assert_eq!(v.select(ip("192.0.2.7"), lo, None).name, "office");
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
        let v = Views::new(&merged);
        let lo = ip("127.0.0.1");
        assert_eq!(v.select(ip("192.0.2.7"), lo, None).name, "cluster");
        let p = v.select(ip("198.51.100.7"), lo, None);
        assert_eq!(
            (p.name.as_str(), p.service_answer),
            ("office", ServiceAnswer::ClusterIp)
        );
    }

    #[test]
    fn dnsviews_believe_client_subnet_from_forwarders_the_file_trusts() {
        let crds = crd_views(&[("lab", "clientCIDRs: [198.51.100.0/24]")]);
        let v = Views::new(&merge_views(&[office()], &crds));
        let lo = ip("127.0.0.1");
        let ecs = Some(ip("198.51.100.9"));
        // 127.0.0.2 is office's trusted forwarder; 127.0.0.1 is nobody's.
        assert_eq!(v.select(ip("127.0.0.2"), lo, ecs).name, "lab");
        assert_eq!(v.select(lo, lo, ecs).name, "cluster");
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
            ServiceSelector::new(&serde_yaml::from_str::<LabelSelector>(y).unwrap()).unwrap()
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
}
