//! The zone index: what the cluster holds, in the shape DNS answers need.
//!
//! Built incrementally from Service, EndpointSlice and Pod objects (apply/delete, or
//! `kube::runtime::watcher::Event`s); every change updates only the entries of the object it
//! touches, so an answer is never staler than the watch. No I/O here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;

/// Annotation that hides a Service from every non-standard view.
pub use leafbridge_api::annotations::DNS_HIDDEN as DNS_HIDDEN_ANNOTATION;
/// Legacy annotation the specification still honours for readiness (spec 2.1, _ready_).
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";
/// Label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `(namespace, name)`, both lower-case: all comparisons are case-insensitive (spec 2.1).
pub type NsName = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub lb_ips: Vec<IpAddr>,
    pub ports: Vec<PortEntry>,
    pub hidden: bool,
    pub publish_not_ready: bool,
    /// For views' Service selectors.
    pub labels: Labels,
}

/// A Service's labels, compact: one allocation per label string and none at all for a
/// Service without labels (a `BTreeMap` node costs ~0.5 KiB, ×10,000 Services).
/// Sorted by key; keys and values are case-sensitive, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        Self(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

impl EndpointEntry {
    /// The endpoint's _hostname_ (spec 2.1): its `hostname`, else a unique identifier derived
    /// from its first address (the dashed form CoreDNS uses).
    pub fn dns_hostname(&self) -> Option<String> {
        self.hostname
            .clone()
            .or_else(|| self.addresses.first().map(|ip| dashed(*ip)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceEntry {
    pub ports: Vec<PortEntry>,
    pub endpoints: Vec<EndpointEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PodEntry {
    ips: Vec<IpAddr>,
    hostname: Option<String>,
    subdomain: Option<String>,
}

/// Who contributed a PTR record, so a change replaces exactly its own records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Owner {
    Service(NsName),
    Pod(NsName),
}

/// One PTR record of an address as stored: who contributed it and, for a headless
/// Service's endpoint, its hostname. The target name is derived from these when asked
/// (a Pod's is its dashed address), so 10,000 ClusterIPs cost one small entry each.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PtrEntry {
    owner: Owner,
    host: Option<Box<str>>,
}

/// A PTR target inside the cluster zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtrTarget<'a> {
    pub namespace: &'a str,
    /// The Service a ClusterIP or endpoint record belongs to; `None` for a Pod's record.
    pub service: Option<&'a str>,
    /// The first label: an endpoint's hostname, or a Pod's dashed address.
    host: Option<String>,
}

impl PtrTarget<'_> {
    /// The target's labels left of the cluster zone: `[host.]svc.ns.svc` for a Service,
    /// `a-b-c-d.ns.pod` for a Pod (spec 2.3.3, 2.4.3).
    pub fn labels(&self) -> Vec<&str> {
        let mut l: Vec<&str> = self.host.as_deref().into_iter().collect();
        match self.service {
            Some(s) => l.extend([s, self.namespace, "svc"]),
            None => l.extend([self.namespace, "pod"]),
        }
        l
    }
}

#[derive(Debug, Default)]
pub struct ZoneIndex {
    services: HashMap<NsName, ServiceEntry>,
    /// (namespace, service) → slice name → slice.
    slices: HashMap<NsName, BTreeMap<String, SliceEntry>>,
    /// (namespace, slice name) → service it belonged to, for deletes and relabels.
    slice_service: HashMap<NsName, String>,
    pods: HashMap<NsName, PodEntry>,
    pod_ips: HashMap<(String, IpAddr), u32>,
    /// (namespace, subdomain, hostname) → pod name → addresses (spec 2.4.1 via Pod fields).
    pod_hosts: HashMap<(String, String, String), BTreeMap<String, Vec<IpAddr>>>,
    /// Objects per namespace: a namespace "exists" for DNS while it holds one.
    namespaces: HashMap<String, u32>,
    /// Service names per namespace, for "does this view see anything in it".
    ns_services: HashMap<String, BTreeSet<String>>,
    /// Pods per namespace.
    ns_pods: HashMap<String, u32>,
    /// Address → its PTR records, kept sorted by owner so answers are in a stable order.
    ptr: HashMap<IpAddr, Vec<PtrEntry>>,
    ptr_owned: HashMap<Owner, Vec<IpAddr>>,
    /// Keys seen since a watcher `Init`, per kind; `InitDone` deletes the rest.
    relist: HashMap<&'static str, HashSet<NsName>>,
    /// Bumped by every change, so answers derived from the index (the server's wire-format
    /// answer cache) know when they are stale.
    generation: u64,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// `10.1.2.3` → `10-1-2-3`, `2001:db8::1` → `2001-db8--1` (spec 2.4.1 and pod records).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Inverse of [`dashed`].
pub fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(ip) = label.replace('-', ".").parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn meta_key(ns: &Option<String>, name: &Option<String>) -> Option<NsName> {
    Some((
        lower(ns.as_deref().unwrap_or("default")),
        lower(name.as_deref()?),
    ))
}

fn parse_ips<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = it.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.dedup();
    out
}

fn annotation_true(
    annotations: &Option<std::collections::BTreeMap<String, String>>,
    key: &str,
) -> bool {
    annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What an object kind contributes; lets one generic function consume watcher events.
pub trait Indexed {
    const KIND: &'static str;
    fn key(&self) -> Option<NsName>;
    fn apply_to(&self, index: &mut ZoneIndex);
    fn delete_key(index: &mut ZoneIndex, key: &NsName);
}

/// The three kinds differ only in which index methods they call; the key is always the
/// object's namespace and name.
macro_rules! indexed {
    ($kind:ty, $apply:ident, $delete:ident) => {
        impl Indexed for $kind {
            const KIND: &'static str = stringify!($kind);
            fn key(&self) -> Option<NsName> {
                meta_key(&self.metadata.namespace, &self.metadata.name)
            }
            fn apply_to(&self, index: &mut ZoneIndex) {
                index.$apply(self);
            }
            fn delete_key(index: &mut ZoneIndex, key: &NsName) {
                index.$delete(key);
            }
        }
    };
}

indexed!(Service, apply_service, delete_service);
indexed!(EndpointSlice, apply_endpoint_slice, delete_endpoint_slice);
indexed!(Pod, apply_pod, delete_pod);

impl ZoneIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consume one watcher event. A relist (`Init` … `InitDone`) removes objects of that kind
    /// that were not listed again.
    pub fn apply_event<K: Indexed>(&mut self, event: &Event<K>) {
        self.generation = self.generation.wrapping_add(1);
        match event {
            Event::Apply(obj) => obj.apply_to(self),
            Event::Delete(obj) => {
                if let Some(key) = obj.key() {
                    K::delete_key(self, &key);
                }
            }
            Event::Init => {
                self.relist.insert(K::KIND, HashSet::new());
            }
            Event::InitApply(obj) => {
                if let Some(key) = obj.key() {
                    self.relist.entry(K::KIND).or_default().insert(key);
                }
                obj.apply_to(self);
            }
            Event::InitDone => {
                let Some(seen) = self.relist.remove(K::KIND) else {
                    return;
                };
                for key in self.keys_of(K::KIND) {
                    if !seen.contains(&key) {
                        K::delete_key(self, &key);
                    }
                }
            }
        }
    }

    fn keys_of(&self, kind: &str) -> Vec<NsName> {
        match kind {
            "Service" => self.services.keys().cloned().collect(),
            "EndpointSlice" => self.slice_service.keys().cloned().collect(),
            "Pod" => self.pods.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn ns_add(&mut self, ns: &str) {
        *self.namespaces.entry(ns.to_string()).or_default() += 1;
    }

    fn ns_remove(&mut self, ns: &str) {
        if let Some(n) = self.namespaces.get_mut(ns) {
            *n -= 1;
            if *n == 0 {
                self.namespaces.remove(ns);
            }
        }
    }

    pub fn apply_service(&mut self, svc: &Service) {
        self.generation = self.generation.wrapping_add(1);
        let Some(key) = Indexed::key(svc) else { return };
        let spec = svc.spec.clone().unwrap_or_default();
        let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
        let kind = if type_ == "ExternalName" {
            match spec.external_name {
                Some(target) => ServiceKind::ExternalName(lower(target.trim_end_matches('.'))),
                None => ServiceKind::Headless,
            }
        } else {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty()
                && let Some(ip) = &spec.cluster_ip
            {
                ips.push(ip.clone());
            }
            let ips = parse_ips(ips.iter().filter(|s| !s.eq_ignore_ascii_case("None")));
            if ips.is_empty() {
                ServiceKind::Headless
            } else {
                ServiceKind::ClusterIp(ips)
            }
        };
        // Only a LoadBalancer Service has ingress addresses: a status left behind after the
        // type changed is stale, and the address may already belong to another Service.
        let is_lb = type_ == "LoadBalancer";
        let lb_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| parse_ips(ing.iter().filter_map(|i| i.ip.as_ref())))
            .filter(|_| is_lb)
            .unwrap_or_default();
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(PortEntry {
                    name: lower(p.name.as_deref().filter(|n| !n.is_empty())?),
                    protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        let entry = ServiceEntry {
            kind,
            lb_ips,
            ports,
            hidden: annotation_true(&svc.metadata.annotations, DNS_HIDDEN_ANNOTATION),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false)
                || annotation_true(&svc.metadata.annotations, TOLERATE_UNREADY),
            labels: svc
                .metadata
                .labels
                .as_ref()
                .map(Labels::from_map)
                .unwrap_or_default(),
        };
        if self.services.insert(key.clone(), entry).is_none() {
            self.ns_add(&key.0);
            self.ns_services
                .entry(key.0.clone())
                .or_default()
                .insert(key.1.clone());
        }
        self.refresh_service_ptr(&key);
    }

    pub fn delete_service(&mut self, key: &NsName) {
        self.generation = self.generation.wrapping_add(1);
        if self.services.remove(key).is_some() {
            self.ns_remove(&key.0);
            if let Some(names) = self.ns_services.get_mut(&key.0) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.ns_services.remove(&key.0);
                }
            }
        }
        self.refresh_service_ptr(key);
    }

    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) {
        self.generation = self.generation.wrapping_add(1);
        let Some(key) = Indexed::key(slice) else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|s| lower(s))
        else {
            // Not owned by a Service: contributes no DNS records.
            self.delete_endpoint_slice(&key);
            return;
        };
        let ports = slice
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(PortEntry {
                    name: lower(p.name.as_deref().filter(|n| !n.is_empty())?),
                    protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|e| EndpointEntry {
                addresses: parse_ips(e.addresses.iter()),
                hostname: e.hostname.as_deref().map(lower),
                // A nil ready condition means ready (discovery/v1 EndpointConditions).
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            })
            .collect();
        if let Some(old) = self.slice_service.insert(key.clone(), service.clone())
            && old != service
        {
            self.remove_slice_from(&(key.0.clone(), old), &key.1);
        }
        let svc_key = (key.0.clone(), service);
        self.slices
            .entry(svc_key.clone())
            .or_default()
            .insert(key.1.clone(), SliceEntry { ports, endpoints });
        self.refresh_service_ptr(&svc_key);
    }

    fn remove_slice_from(&mut self, svc_key: &NsName, slice: &str) {
        if let Some(m) = self.slices.get_mut(svc_key) {
            m.remove(slice);
            if m.is_empty() {
                self.slices.remove(svc_key);
            }
        }
        self.refresh_service_ptr(svc_key);
    }

    pub fn delete_endpoint_slice(&mut self, key: &NsName) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(service) = self.slice_service.remove(key) {
            self.remove_slice_from(&(key.0.clone(), service), &key.1);
        }
    }

    pub fn apply_pod(&mut self, pod: &Pod) {
        self.generation = self.generation.wrapping_add(1);
        let Some(key) = Indexed::key(pod) else { return };
        let status = pod.status.clone().unwrap_or_default();
        let mut ips: Vec<String> = status
            .pod_ips
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.ip)
            .collect();
        if ips.is_empty()
            && let Some(ip) = status.pod_ip
        {
            ips.push(ip);
        }
        let spec = pod.spec.as_ref();
        let entry = PodEntry {
            ips: parse_ips(ips.iter()),
            hostname: spec.and_then(|s| s.hostname.as_deref()).map(lower),
            subdomain: spec.and_then(|s| s.subdomain.as_deref()).map(lower),
        };
        self.delete_pod(&key);
        for ip in &entry.ips {
            *self.pod_ips.entry((key.0.clone(), *ip)).or_default() += 1;
        }
        if let (Some(h), Some(s)) = (&entry.hostname, &entry.subdomain) {
            self.pod_hosts
                .entry((key.0.clone(), s.clone(), h.clone()))
                .or_default()
                .insert(key.1.clone(), entry.ips.clone());
        }
        let targets: Vec<(IpAddr, Option<Box<str>>)> =
            entry.ips.iter().map(|ip| (*ip, None)).collect();
        self.ns_add(&key.0);
        *self.ns_pods.entry(key.0.clone()).or_default() += 1;
        self.pods.insert(key.clone(), entry);
        self.set_ptr(Owner::Pod(key), targets);
    }

    pub fn delete_pod(&mut self, key: &NsName) {
        self.generation = self.generation.wrapping_add(1);
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        self.ns_remove(&key.0);
        if let Some(n) = self.ns_pods.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.ns_pods.remove(&key.0);
            }
        }
        for ip in &old.ips {
            let k = (key.0.clone(), *ip);
            if let Some(n) = self.pod_ips.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.pod_ips.remove(&k);
                }
            }
        }
        if let (Some(h), Some(s)) = (old.hostname, old.subdomain) {
            let hk = (key.0.clone(), s, h);
            if let Some(m) = self.pod_hosts.get_mut(&hk) {
                m.remove(&key.1);
                if m.is_empty() {
                    self.pod_hosts.remove(&hk);
                }
            }
        }
        self.set_ptr(Owner::Pod(key.clone()), Vec::new());
    }

    /// Replace every PTR record `owner` contributed with `targets` (address, hostname).
    fn set_ptr(&mut self, owner: Owner, targets: Vec<(IpAddr, Option<Box<str>>)>) {
        for ip in self.ptr_owned.remove(&owner).unwrap_or_default() {
            if let Some(v) = self.ptr.get_mut(&ip) {
                v.retain(|e| e.owner != owner);
                if v.is_empty() {
                    self.ptr.remove(&ip);
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let mut owned = Vec::with_capacity(targets.len());
        for (ip, host) in targets {
            let v = self.ptr.entry(ip).or_default();
            // After every record of a smaller or equal owner: the owner's own records stay in
            // the order given.
            let at = v.partition_point(|e| e.owner <= owner);
            // Nearly every address has one record: no spare capacity.
            v.reserve_exact(1);
            v.insert(
                at,
                PtrEntry {
                    owner: owner.clone(),
                    host,
                },
            );
            owned.push(ip);
        }
        owned.sort_unstable();
        owned.dedup();
        owned.shrink_to_fit();
        self.ptr_owned.insert(owner, owned);
    }

    /// PTR records of a Service: its ClusterIPs (spec 2.3.3) or, headless, its ready
    /// endpoints' addresses under their hostnames (spec 2.4.3).
    fn refresh_service_ptr(&mut self, key: &NsName) {
        let mut targets = Vec::new();
        if let Some(svc) = self.services.get(key) {
            match &svc.kind {
                ServiceKind::ClusterIp(ips) => {
                    targets.extend(ips.iter().map(|ip| (*ip, None)));
                }
                ServiceKind::Headless => {
                    for ep in self.ready_endpoints(key, svc) {
                        let host: Option<Box<str>> = ep.dns_hostname().map(Into::into);
                        for ip in &ep.addresses {
                            targets.push((*ip, host.clone()));
                        }
                    }
                }
                ServiceKind::ExternalName(_) => {}
            }
        }
        self.set_ptr(Owner::Service(key.clone()), targets);
    }

    // ---- read side -------------------------------------------------------------------------

    pub fn service(&self, ns: &str, name: &str) -> Option<&ServiceEntry> {
        self.services.get(&(ns.to_string(), name.to_string()))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.namespaces.contains_key(ns)
    }

    /// The Services of a namespace, by name.
    pub fn services_in<'a>(
        &'a self,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a ServiceEntry)> + 'a {
        self.ns_services
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(move |name| Some((name.as_str(), self.service(ns, name)?)))
    }

    /// Whether a namespace holds a Pod.
    pub fn has_pods(&self, ns: &str) -> bool {
        self.ns_pods.contains_key(ns)
    }

    /// Changes with every update of the index.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// All slices of a Service.
    pub fn slices(&self, ns: &str, service: &str) -> impl Iterator<Item = &SliceEntry> {
        self.slices
            .get(&(ns.to_string(), service.to_string()))
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Endpoints that count as _ready_ (spec 2.1), deduplicated by address across slices.
    pub fn ready_endpoints<'a>(
        &'a self,
        key: &NsName,
        svc: &ServiceEntry,
    ) -> Vec<&'a EndpointEntry> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for slice in self.slices(&key.0, &key.1) {
            for ep in &slice.endpoints {
                if (ep.ready || svc.publish_not_ready)
                    && !ep.addresses.is_empty()
                    && seen.insert(ep.addresses.clone())
                {
                    out.push(ep);
                }
            }
        }
        out
    }

    pub fn pod_exists(&self, ns: &str, ip: IpAddr) -> bool {
        self.pod_ips.contains_key(&(ns.to_string(), ip))
    }

    /// Addresses of Pods with `spec.hostname`/`spec.subdomain` = (host, subdomain).
    pub fn pod_host(&self, ns: &str, subdomain: &str, host: &str) -> Vec<IpAddr> {
        self.pod_hosts
            .get(&(ns.to_string(), subdomain.to_string(), host.to_string()))
            .map(|m| m.values().flatten().copied().collect())
            .unwrap_or_default()
    }

    pub fn ptr_targets(&self, ip: IpAddr) -> impl Iterator<Item = PtrTarget<'_>> {
        self.ptr
            .get(&ip)
            .into_iter()
            .flatten()
            .map(move |e| match &e.owner {
                Owner::Service((ns, name)) => PtrTarget {
                    namespace: ns,
                    service: Some(name),
                    host: e.host.as_deref().map(str::to_string),
                },
                Owner::Pod((ns, _)) => PtrTarget {
                    namespace: ns,
                    service: None,
                    host: Some(dashed(ip)),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_round_trips_v4_and_v6() {
        for s in ["10.244.1.5", "2001:db8::1", "fd00::a:b"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(undashed("not-an-ip"), None);
    }

    fn svc(yaml: &str) -> Service {
        leafbridge_api::yaml::from_str(yaml).unwrap()
    }

    fn web() -> Service {
        svc("metadata: {name: Web, namespace: Default}\nspec: {clusterIP: 10.96.0.10}")
    }

    #[test]
    fn a_service_no_longer_of_type_load_balancer_has_no_ingress_address() {
        let mut idx = ZoneIndex::new();
        let status = "status: {loadBalancer: {ingress: [{ip: 203.0.113.5}]}}";
        idx.apply_service(&svc(&format!(
            "metadata: {{name: web, namespace: default}}\nspec: {{type: LoadBalancer, clusterIP: 10.96.0.10}}\n{status}"
        )));
        let lb: Vec<IpAddr> = vec!["203.0.113.5".parse().unwrap()];
        assert_eq!(idx.service("default", "web").unwrap().lb_ips, lb);
        // Changed to ClusterIP; the controller has not cleared the status yet.
        idx.apply_service(&svc(&format!(
            "metadata: {{name: web, namespace: default}}\nspec: {{type: ClusterIP, clusterIP: 10.96.0.10}}\n{status}"
        )));
        assert!(idx.service("default", "web").unwrap().lb_ips.is_empty());
    }

    #[test]
    fn deleting_a_service_removes_its_ptr_and_namespace() {
        let mut idx = ZoneIndex::new();
        idx.apply_service(&web());
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        assert_eq!(idx.ptr_targets(ip).count(), 1);
        assert!(idx.namespace_exists("default"));
        idx.delete_service(&("default".into(), "web".into()));
        assert_eq!(idx.ptr_targets(ip).count(), 0);
        assert!(!idx.namespace_exists("default"));
    }

    #[test]
    fn an_address_shared_by_a_pod_and_a_headless_endpoint_has_both_ptrs_in_a_stable_order() {
        let mut idx = ZoneIndex::new();
        let pod: Pod = leafbridge_api::yaml::from_str(
            "metadata: {name: db-0, namespace: data}\nstatus: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}]}",
        )
        .unwrap();
        idx.apply_pod(&pod);
        idx.apply_service(&svc(
            "metadata: {name: db, namespace: data}\nspec: {clusterIP: None}",
        ));
        let slice: EndpointSlice = leafbridge_api::yaml::from_str(
            "metadata: {name: db-x, namespace: data, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nendpoints: [{addresses: [10.244.1.5], hostname: db-0, conditions: {ready: true}}]",
        )
        .unwrap();
        idx.apply_endpoint_slice(&slice);
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let labels = |idx: &ZoneIndex| -> Vec<String> {
            idx.ptr_targets(ip).map(|t| t.labels().join(".")).collect()
        };
        // Services sort before Pods whatever order they arrived in.
        assert_eq!(labels(&idx), ["db-0.db.data.svc", "10-244-1-5.data.pod"]);
        idx.delete_pod(&("data".into(), "db-0".into()));
        assert_eq!(labels(&idx), ["db-0.db.data.svc"]);
        idx.apply_pod(&pod);
        assert_eq!(labels(&idx), ["db-0.db.data.svc", "10-244-1-5.data.pod"]);
        idx.delete_service(&("data".into(), "db".into()));
        assert_eq!(labels(&idx), ["10-244-1-5.data.pod"]);
    }

    #[test]
    fn keeps_service_labels_for_view_selectors() {
        let mut idx = ZoneIndex::new();
        idx.apply_service(&svc(
            "metadata: {name: web, namespace: default, labels: {app: Web, tier: front}}\nspec: {clusterIP: 10.96.0.10}",
        ));
        let l = &idx.service("default", "web").unwrap().labels;
        assert_eq!(
            (l.get("app"), l.get("tier"), l.get("x")),
            (Some("Web"), Some("front"), None)
        );
        idx.apply_service(&web());
        assert_eq!(
            idx.service("default", "web").unwrap().labels,
            Labels::default()
        );
    }

    #[test]
    fn changing_a_cluster_ip_moves_the_ptr() {
        let mut idx = ZoneIndex::new();
        idx.apply_service(&web());
        idx.apply_service(&svc(
            "metadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.0.11}",
        ));
        assert_eq!(idx.ptr_targets("10.96.0.10".parse().unwrap()).count(), 0);
        assert_eq!(idx.ptr_targets("10.96.0.11".parse().unwrap()).count(), 1);
    }

    #[test]
    fn relist_removes_objects_not_listed_again() {
        let mut idx = ZoneIndex::new();
        idx.apply_event(&Event::Apply(web()));
        let other = svc("metadata: {name: db, namespace: default}\nspec: {clusterIP: None}");
        idx.apply_event(&Event::Apply(other.clone()));
        idx.apply_event::<Service>(&Event::Init);
        idx.apply_event(&Event::InitApply(other));
        idx.apply_event::<Service>(&Event::InitDone);
        assert!(idx.service("default", "web").is_none());
        assert!(idx.service("default", "db").is_some());
    }

    #[test]
    fn endpoint_slice_relabelled_to_another_service_moves_its_endpoints() {
        let mut idx = ZoneIndex::new();
        let slice = |svc_name: &str| -> EndpointSlice {
            leafbridge_api::yaml::from_str(&format!(
                "metadata: {{name: s1, namespace: default, labels: {{kubernetes.io/service-name: {svc_name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [10.244.0.9]}}]"
            ))
            .unwrap()
        };
        idx.apply_endpoint_slice(&slice("a"));
        assert_eq!(idx.slices("default", "a").count(), 1);
        idx.apply_endpoint_slice(&slice("b"));
        assert_eq!(idx.slices("default", "a").count(), 0);
        assert_eq!(idx.slices("default", "b").count(), 1);
        idx.delete_endpoint_slice(&("default".into(), "s1".into()));
        assert_eq!(idx.slices("default", "b").count(), 0);
    }
}
