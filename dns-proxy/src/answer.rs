//! Authoritative answers for the cluster zone, its reverse zones and the office-facing zone,
//! as a pure function of (index, zone settings, view, question).
//!
//! Record shapes follow the Kubernetes DNS-Based Service Discovery specification
//! (kubernetes/dns docs/specification.md, schema 1.1.0); negative answers follow RFC 2308
//! (SOA in the authority section; NXDOMAIN only when the name has no records of any type and
//! no descendants, otherwise NODATA).

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::config::{ClusterConfig, PodMode};
use crate::index::{NsName, ServiceEntry, ServiceKind, ZoneIndex, undashed};
use crate::view::ViewPolicy;

/// Spec section 2.2: the schema version this server implements.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// One zone we are authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: Name,
    labels: Vec<String>,
    soa: Record,
    /// The apex NS record (RFC 1034 4.2.1: every zone has one at its top), naming the
    /// SOA MNAME.
    ns: Record,
    /// The name server name's labels left of this zone, when it lies inside it.
    nameserver: Option<Vec<String>>,
}

/// `ns.dns.<zone>`: CoreDNS's name for the cluster zone's name server.
fn default_nameserver(zone: &Name) -> Name {
    Name::from_ascii("ns.dns")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone())
}

impl Zone {
    fn new(name: Name, ttl: u32, mname: &Name) -> Self {
        let name = name.to_lowercase();
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        let labels = labels_of(&fqdn);
        let mname = mname.clone();
        let ns = Record::from_rdata(fqdn.clone(), ttl, RData::NS(NS(mname.clone())));
        let ns_labels = labels_of(&mname);
        let nameserver = (ns_labels.len() > labels.len()
            && ns_labels[ns_labels.len() - labels.len()..] == labels[..])
            .then(|| ns_labels[..ns_labels.len() - labels.len()].to_vec());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&fqdn))
            .unwrap_or_else(|_| fqdn.clone());
        // Serial is not meaningful (no zone transfers); the SOA minimum caps negative caching
        // of our answers at the record TTL (RFC 2308 section 4).
        let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, ttl);
        let soa = Record::from_rdata(fqdn.clone(), ttl, RData::SOA(soa));
        Self {
            name: fqdn,
            labels,
            soa,
            ns,
            nameserver,
        }
    }

    /// Labels of `qname` left of this zone, if `qname` is inside it.
    fn relative<'a>(&self, q: &'a [String]) -> Option<&'a [String]> {
        if q.len() >= self.labels.len() && q[q.len() - self.labels.len()..] == self.labels[..] {
            Some(&q[..q.len() - self.labels.len()])
        } else {
            None
        }
    }
}

/// Zone parameters derived from the configuration.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    pub cluster: Zone,
    pub external: Option<Zone>,
    pub reverse: Vec<(IpNet, Zone)>,
    pub ttl: u32,
    pub pods: PodMode,
    /// Addresses of the name server name, if it lies in one of our zones.
    pub nameserver_addresses: Vec<IpAddr>,
}

fn labels_of(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

/// The reverse zones of a CIDR: a server can only be authoritative for whole labels (octets
/// in `in-addr.arpa`, nibbles in `ip6.arpa`), so a prefix between label boundaries is
/// rounded in, to the zones of its subnets at the next boundary (RFC 2317 aside):
/// 10.96.0.0/12 is `96.10.in-addr.arpa` … `111.10.in-addr.arpa`. Never rounded out: the
/// neighbouring addresses (the office's, in the rest of 10/8) stay with the upstream
/// resolvers. At most 128 zones (an IPv4 /17), 8 for IPv6.
fn reverse_zones(net: &IpNet) -> Vec<(IpNet, Name)> {
    let step = match net {
        IpNet::V4(_) => 8u8,
        IpNet::V6(_) => 4,
    };
    let prefix = net.prefix_len().div_ceil(step) * step;
    let Ok(subnets) = net.trunc().subnets(prefix) else {
        return Vec::new();
    };
    subnets
        .filter_map(|sub| {
            let full = Name::from(sub.addr());
            let labels: Vec<&[u8]> = full.iter().collect();
            // in-addr.arpa / ip6.arpa plus one label per octet or nibble of the prefix.
            let keep = 2 + usize::from(prefix / step);
            let name = Name::from_labels(labels[labels.len() - keep..].iter().copied()).ok()?;
            Some((sub, name))
        })
        .collect()
}

impl ZoneSettings {
    pub fn from_config(c: &ClusterConfig) -> Result<Self, hickory_proto::ProtoError> {
        let mut zone = Name::from_ascii(&c.zone)?.to_lowercase();
        zone.set_fqdn(true);
        // One name server serves every zone: the same NS target and SOA MNAME in each.
        let mname = match &c.nameserver {
            Some(n) => {
                let mut n = Name::from_ascii(n)?.to_lowercase();
                n.set_fqdn(true);
                n
            }
            None => default_nameserver(&zone),
        };
        let cluster = Zone::new(zone, c.ttl, &mname);
        let external = match &c.external_zone {
            Some(z) => Some(Zone::new(Name::from_ascii(z)?, c.ttl, &mname)),
            None => None,
        };
        let mut reverse = Vec::new();
        for net in c.service_cidrs.iter().chain(&c.pod_cidrs) {
            for (sub, z) in reverse_zones(net) {
                // Overlapping CIDRs (a pod CIDR inside the service CIDR's zone) share a zone.
                if !reverse.iter().any(|(_, r): &(IpNet, Zone)| r.name == z) {
                    reverse.push((sub, Zone::new(z, c.ttl, &mname)));
                }
            }
        }
        Ok(Self {
            cluster,
            external,
            reverse,
            ttl: c.ttl,
            pods: c.pods,
            nameserver_addresses: c.nameserver_addresses.clone(),
        })
    }
}

/// An authoritative answer; `None` from [`answer`] means "not ours, forward it".
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn records(answers: Vec<Record>, additionals: Vec<Record>, zone: &Zone) -> Self {
        if answers.is_empty() {
            return Self::nodata(zone);
        }
        Self {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }
    /// RFC 2308 section 2.2: NOERROR, empty answer, SOA in authority.
    fn nodata(zone: &Zone) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: vec![zone.soa.clone()],
            additionals: Vec::new(),
        }
    }
    /// RFC 2308 section 2.1.
    fn nxdomain(zone: &Zone) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities: vec![zone.soa.clone()],
            additionals: Vec::new(),
        }
    }
}

/// Address records of `ips` matching `qtype` (A, AAAA, or both for ANY).
fn address_records(owner: &Name, ips: &[IpAddr], qtype: RecordType, ttl: u32) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4))))
            }
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(*v6)),
            )),
            _ => None,
        })
        .collect()
}

fn child(labels: &[&str], zone: &Zone) -> Name {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .and_then(|n| n.append_domain(&zone.name))
        .unwrap_or_else(|_| zone.name.clone())
}

#[derive(Clone, Copy)]
struct Ctx<'a> {
    index: &'a ZoneIndex,
    settings: &'a ZoneSettings,
    view: &'a ViewPolicy,
    qname: &'a Name,
    qtype: RecordType,
    /// Follow an ExternalName CNAME into the cluster zone (off while following one).
    follow: bool,
}

/// Longest chain of ExternalName CNAMEs followed inside the cluster zone.
const MAX_CNAME_CHAIN: usize = 8;

/// Answer `qname`/`qtype` if it falls in one of our zones.
pub fn answer(
    index: &ZoneIndex,
    settings: &ZoneSettings,
    view: &ViewPolicy,
    qname: &Name,
    qtype: RecordType,
) -> Option<Answer> {
    let labels = labels_of(qname);
    let ctx = Ctx {
        index,
        settings,
        view,
        qname,
        qtype,
        follow: true,
    };
    if let Some(rel) = settings.cluster.relative(&labels) {
        return Some(ctx.cluster(rel));
    }
    if let Some(ext) = &settings.external
        && let Some(rel) = ext.relative(&labels)
    {
        return Some(ctx.external(rel, ext));
    }
    if labels.last().is_none_or(|l| l != "arpa") {
        return None;
    }
    // The most specific zone: a pod CIDR's /24 zone inside a service CIDR's /16 one.
    let zone = settings
        .reverse
        .iter()
        .filter_map(|(_, zone)| Some((zone.relative(&labels)?, zone)))
        .min_by_key(|(rel, _)| rel.len());
    if let Some((rel, zone)) = zone {
        let address = arpa_address(qname);
        // The apex holds SOA and NS; below a /24 (or /124) the apex is also an address
        // (every address its own zone) and holds its PTR records.
        let full = matches!(address, Some((_, true)));
        if rel.is_empty() && !(full && qtype == RecordType::PTR) {
            return Some(ctx.apex(zone));
        }
        return Some(match address {
            Some((ip, true)) => ctx.reverse(ip, zone, rel.is_empty()),
            // A shorter name inside the zone is an empty non-terminal above addresses that
            // may have records (RFC 8020: never deny what may lie below).
            Some((_, false)) => Answer::nodata(zone),
            None => Answer::nxdomain(zone),
        });
    }
    None
}

impl Ctx<'_> {
    fn zone(&self) -> &Zone {
        &self.settings.cluster
    }
    fn ttl(&self) -> u32 {
        self.settings.ttl
    }

    /// The zone apex holds the SOA and NS records (RFC 1035 5.2), nothing else.
    fn apex(&self, zone: &Zone) -> Answer {
        let with_qname = |r: &Record| {
            let mut r = r.clone();
            r.name = self.qname.clone();
            r
        };
        let mut answers = Vec::new();
        if matches!(self.qtype, RecordType::SOA | RecordType::ANY) {
            answers.push(with_qname(&zone.soa));
        }
        let mut additionals = Vec::new();
        if matches!(self.qtype, RecordType::NS | RecordType::ANY) {
            answers.push(with_qname(&zone.ns));
            // RFC 1034 4.3.2 step 6 / RFC 1035 3.3.11: the name server's addresses in the
            // additional section, when we hold them.
            if let RData::NS(NS(target)) = &zone.ns.data
                && self.nameserver_is_ours()
            {
                additionals = address_records(
                    target,
                    &self.settings.nameserver_addresses,
                    RecordType::ANY,
                    self.ttl(),
                );
            }
        }
        Answer::records(answers, additionals, zone)
    }

    fn nameserver_is_ours(&self) -> bool {
        self.settings.cluster.nameserver.is_some()
            || self
                .settings
                .external
                .as_ref()
                .is_some_and(|z| z.nameserver.is_some())
    }

    /// The name server name (and the empty non-terminals above it) when it lies in `zone`.
    fn nameserver_name(&self, rel: &[String], zone: &Zone) -> Option<Answer> {
        let ns = zone.nameserver.as_ref()?;
        if rel == ns.as_slice() {
            let ips = &self.settings.nameserver_addresses;
            return Some(Answer::records(
                address_records(self.qname, ips, self.qtype, self.ttl()),
                Vec::new(),
                zone,
            ));
        }
        // RFC 8020: a name with descendants exists (NODATA).
        (!rel.is_empty() && ns.ends_with(rel)).then(|| Answer::nodata(zone))
    }

    fn cluster(&self, rel: &[String]) -> Answer {
        let zone = self.zone();
        if let Some(a) = self.nameserver_name(rel, zone) {
            return a;
        }
        let r: Vec<&str> = rel.iter().map(String::as_str).collect();
        match r.as_slice() {
            [] => self.apex(zone),
            // Spec 2.2.
            ["dns-version"] => match self.qtype {
                RecordType::TXT | RecordType::ANY => {
                    let txt = TXT::new(vec![SCHEMA_VERSION.to_string()]);
                    Answer::records(
                        vec![Record::from_rdata(
                            self.qname.clone(),
                            self.ttl(),
                            RData::TXT(txt),
                        )],
                        Vec::new(),
                        zone,
                    )
                }
                _ => Answer::nodata(zone),
            },
            // Empty non-terminals: they have descendants, so NODATA (RFC 8020).
            ["svc"] | ["pod"] => Answer::nodata(zone),
            // A namespace exists for a view only through what the view sees in it, so
            // `<ns>.svc` tells nobody about namespaces (or Services) hidden from them.
            [ns, "svc"] => {
                if self.sees_a_service_in(ns, |_| true) {
                    Answer::nodata(zone)
                } else {
                    Answer::nxdomain(zone)
                }
            }
            [ns, "pod"] => {
                let pods = match self.settings.pods {
                    PodMode::Disabled => false,
                    // Any well-formed name below answers: the parent must exist too
                    // (RFC 8020).
                    PodMode::Insecure => true,
                    PodMode::Verified => self.index.has_pods(ns),
                };
                if pods && self.view.namespace_visible(ns) {
                    Answer::nodata(zone)
                } else {
                    Answer::nxdomain(zone)
                }
            }
            [svc, ns, "svc"] => self.service(ns, svc),
            [first, svc, ns, "svc"] if first.starts_with('_') => {
                self.srv_proto_node(ns, svc, first)
            }
            [host, svc, ns, "svc"] => self.endpoint_host(ns, svc, host),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(ns, svc, &port[1..], &proto[1..])
            }
            [ip, ns, "pod"] => self.pod(ns, ip),
            _ => Answer::nxdomain(zone),
        }
    }

    /// Whether this view sees a Service in `ns` for which `also` holds.
    fn sees_a_service_in(&self, ns: &str, also: impl Fn(&ServiceEntry) -> bool) -> bool {
        self.view.namespace_visible(ns)
            && self
                .index
                .services_in(ns)
                .any(|(_, s)| self.view.service_visible(ns, s) && also(s))
    }

    /// The Service if this view may see it.
    fn visible_service(&self, ns: &str, name: &str) -> Option<&ServiceEntry> {
        let svc = self.index.service(ns, name)?;
        self.view.service_visible(ns, svc).then_some(svc)
    }

    /// Addresses a Service's own name answers with in this view, or `None` if it has no
    /// ready endpoints (headless; spec 2.4.1 gives no records, CoreDNS answers NXDOMAIN).
    fn service_addresses(&self, key: &NsName, svc: &ServiceEntry) -> Option<Vec<IpAddr>> {
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => Some(self.view.service_addresses(ips, &svc.lb_ips)),
            ServiceKind::Headless => {
                let eps = self.index.ready_endpoints(key, svc);
                if eps.is_empty() {
                    return None;
                }
                if !self.view.pods_reachable() {
                    return Some(Vec::new());
                }
                let mut ips: Vec<IpAddr> = eps
                    .iter()
                    .flat_map(|e| e.addresses.iter().copied())
                    .collect();
                let mut seen = HashSet::new();
                ips.retain(|ip| seen.insert(*ip));
                Some(ips)
            }
            ServiceKind::ExternalName(_) => Some(Vec::new()),
        }
    }

    fn service(&self, ns: &str, name: &str) -> Answer {
        let zone = self.zone();
        let Some(svc) = self.visible_service(ns, name) else {
            return Answer::nxdomain(zone);
        };
        let key = (ns.to_string(), name.to_string());
        if let ServiceKind::ExternalName(target) = &svc.kind {
            // Spec 2.5.1: a CNAME, whatever the type asked (RFC 1034 3.6.2).
            let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                return Answer::nxdomain(zone);
            };
            let rec = Record::from_rdata(
                self.qname.clone(),
                self.ttl(),
                RData::CNAME(CNAME(target.clone())),
            );
            if !self.follow {
                return Answer::records(vec![rec], Vec::new(), zone);
            }
            return self.follow_cname(rec, &target);
        }
        match self.service_addresses(&key, svc) {
            None => Answer::nxdomain(zone),
            Some(ips) => Answer::records(
                address_records(self.qname, &ips, self.qtype, self.ttl()),
                Vec::new(),
                zone,
            ),
        }
    }

    /// The answer to a CNAME at our name: a target inside the cluster zone is answered in
    /// the same reply (RFC 1034 4.3.2 step 3a, as CoreDNS does), chains up to
    /// [`MAX_CNAME_CHAIN`] long, and the reply's rcode is the last name's (RFC 6604).
    /// Other targets are left to the client's resolver.
    fn follow_cname(&self, cname: Record, target: &Name) -> Answer {
        let zone = self.zone();
        let mut answers = vec![cname];
        let mut target = target.clone();
        if self.qtype == RecordType::CNAME {
            return Answer::records(answers, Vec::new(), zone);
        }
        for _ in 0..MAX_CNAME_CHAIN {
            // A loop ends where it would repeat a name already answered.
            if answers.iter().any(|r| r.name == target) {
                break;
            }
            let labels = labels_of(&target);
            let Some(rel) = zone.relative(&labels) else {
                break;
            };
            let next = Ctx {
                qname: &target,
                follow: false,
                ..*self
            };
            let a = next.cluster(rel);
            let more = a.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(t)) if r.name == target => Some(t.clone()),
                _ => None,
            });
            let empty = a.answers.is_empty();
            answers.extend(a.answers);
            match more {
                Some(t) => target = t,
                None => {
                    // The target's negative answer keeps its SOA (RFC 2308 2.1, 2.2).
                    let authorities = if empty { a.authorities } else { Vec::new() };
                    return Answer {
                        rcode: a.rcode,
                        answers,
                        authorities,
                        additionals: a.additionals,
                    };
                }
            }
        }
        Answer::records(answers, Vec::new(), zone)
    }

    /// `_proto.svc.ns.svc.zone`: an empty non-terminal when a named port uses that protocol.
    fn srv_proto_node(&self, ns: &str, name: &str, proto: &str) -> Answer {
        let zone = self.zone();
        let proto = &proto[1..];
        let key = (ns.to_string(), name.to_string());
        match self.visible_service(ns, name) {
            // RFC 8020: nothing exists below a Service name that is NXDOMAIN (a headless
            // Service without ready endpoints).
            Some(svc)
                if svc.ports.iter().any(|p| p.protocol == proto)
                    && self.service_addresses(&key, svc).is_some() =>
            {
                Answer::nodata(zone)
            }
            _ => Answer::nxdomain(zone),
        }
    }

    /// Spec 2.3.2 (ClusterIP: one SRV to the Service name) and 2.4.2 (headless: one SRV per
    /// ready endpoint and named port, targeting the endpoint hostname).
    fn srv(&self, ns: &str, name: &str, port: &str, proto: &str) -> Answer {
        let zone = self.zone();
        let Some(svc) = self.visible_service(ns, name) else {
            return Answer::nxdomain(zone);
        };
        let key = (ns.to_string(), name.to_string());
        let ttl = self.ttl();
        let wants_srv = matches!(self.qtype, RecordType::SRV | RecordType::ANY);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => {
                let Some(p) = svc
                    .ports
                    .iter()
                    .find(|p| p.name == port && p.protocol == proto)
                else {
                    return Answer::nxdomain(zone);
                };
                let target = child(&[name, ns, "svc"], zone);
                if wants_srv {
                    answers.push(Record::from_rdata(
                        self.qname.clone(),
                        ttl,
                        RData::SRV(SRV::new(0, 100, p.port, target.clone())),
                    ));
                    let addrs = self.view.service_addresses(ips, &svc.lb_ips);
                    additionals.extend(address_records(&target, &addrs, RecordType::ANY, ttl));
                }
            }
            ServiceKind::Headless => {
                let eps = self.index.ready_endpoints(&key, svc);
                let mut found = false;
                for slice in self.index.slices(ns, name) {
                    let Some(p) = slice
                        .ports
                        .iter()
                        .find(|p| p.name == port && p.protocol == proto)
                    else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        if !eps.iter().any(|e| std::ptr::eq(*e, ep)) {
                            continue;
                        }
                        let Some(host) = ep.dns_hostname() else {
                            continue;
                        };
                        found = true;
                        if !wants_srv {
                            continue;
                        }
                        let target = child(&[&host, name, ns, "svc"], zone);
                        let weight = (100 / eps.len().max(1)) as u16;
                        answers.push(Record::from_rdata(
                            self.qname.clone(),
                            ttl,
                            RData::SRV(SRV::new(0, weight.max(1), p.port, target.clone())),
                        ));
                        if self.view.pods_reachable() {
                            additionals.extend(address_records(
                                &target,
                                &ep.addresses,
                                RecordType::ANY,
                                ttl,
                            ));
                        }
                    }
                }
                if !found {
                    return Answer::nxdomain(zone);
                }
            }
            ServiceKind::ExternalName(_) => return Answer::nxdomain(zone),
        }
        Answer::records(answers, additionals, zone)
    }

    /// Spec 2.4.1: `<hostname>.<service>.<ns>.svc.<zone>` for headless Services, from
    /// EndpointSlice hostnames or Pods' hostname/subdomain.
    fn endpoint_host(&self, ns: &str, name: &str, host: &str) -> Answer {
        let zone = self.zone();
        let Some(svc) = self.visible_service(ns, name) else {
            return Answer::nxdomain(zone);
        };
        if svc.kind != ServiceKind::Headless {
            return Answer::nxdomain(zone);
        }
        let key = (ns.to_string(), name.to_string());
        let ready = self.index.ready_endpoints(&key, svc);
        let mut ips: Vec<IpAddr> = ready
            .iter()
            .filter(|e| e.dns_hostname().as_deref() == Some(host))
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        if ips.is_empty() {
            // A Pod's hostname/subdomain names it only while it is a ready endpoint of the
            // Service (spec 2.4.1), like the endpoint hostnames above.
            ips = self.index.pod_host(ns, name, host);
            ips.retain(|ip| ready.iter().any(|e| e.addresses.contains(ip)));
        }
        if ips.is_empty() {
            return Answer::nxdomain(zone);
        }
        if !self.view.pods_reachable() {
            return Answer::nodata(zone);
        }
        Answer::records(
            address_records(self.qname, &ips, self.qtype, self.ttl()),
            Vec::new(),
            zone,
        )
    }

    /// `a-b-c-d.<ns>.pod.<zone>` (kube-dns pod records).
    fn pod(&self, ns: &str, label: &str) -> Answer {
        let zone = self.zone();
        let Some(ip) = undashed(label) else {
            return Answer::nxdomain(zone);
        };
        let exists = match self.settings.pods {
            PodMode::Disabled => false,
            PodMode::Insecure => true,
            PodMode::Verified => self.index.pod_exists(ns, ip),
        };
        if !exists || !self.view.namespace_visible(ns) {
            return Answer::nxdomain(zone);
        }
        if !self.view.pods_reachable() {
            return Answer::nodata(zone);
        }
        Answer::records(
            address_records(self.qname, &[ip], self.qtype, self.ttl()),
            Vec::new(),
            zone,
        )
    }

    /// Office-facing zone: `<svc>.<ns>.<zone>` answers LoadBalancer addresses only.
    fn external(&self, rel: &[String], zone: &Zone) -> Answer {
        if let Some(a) = self.nameserver_name(rel, zone) {
            return a;
        }
        let r: Vec<&str> = rel.iter().map(String::as_str).collect();
        match r.as_slice() {
            [] => self.apex(zone),
            // Exists only above a name that answers: a visible Service with an address.
            [ns] => {
                if self.sees_a_service_in(ns, |s| !s.lb_ips.is_empty()) {
                    Answer::nodata(zone)
                } else {
                    Answer::nxdomain(zone)
                }
            }
            [svc, ns] => match self.visible_service(ns, svc) {
                Some(s) if !s.lb_ips.is_empty() => Answer::records(
                    address_records(self.qname, &s.lb_ips, self.qtype, self.ttl()),
                    Vec::new(),
                    zone,
                ),
                _ => Answer::nxdomain(zone),
            },
            _ => Answer::nxdomain(zone),
        }
    }

    /// PTR in the reverse zones of the service and pod CIDRs (spec 2.3.3, 2.4.3).
    /// At a zone's apex (`apex`) the name exists whatever it holds: no PTR is NODATA there.
    fn reverse(&self, ip: IpAddr, zone: &Zone, apex: bool) -> Answer {
        let mut answers = Vec::new();
        for t in self.index.ptr_targets(ip) {
            let visible = match t.service {
                Some(s) => self
                    .index
                    .service(t.namespace, s)
                    .is_some_and(|svc| self.view.service_visible(t.namespace, svc)),
                None => self.view.namespace_visible(t.namespace),
            };
            if !visible {
                continue;
            }
            let target = child(&t.labels(), &self.settings.cluster);
            answers.push(Record::from_rdata(
                self.qname.clone(),
                self.ttl(),
                RData::PTR(PTR(target)),
            ));
        }
        if answers.is_empty() {
            return if apex {
                Answer::nodata(zone)
            } else {
                Answer::nxdomain(zone)
            };
        }
        if !matches!(self.qtype, RecordType::PTR | RecordType::ANY) {
            // The name exists (it has a PTR): other types are NODATA.
            return Answer::nodata(zone);
        }
        answers.dedup();
        Answer::records(answers, Vec::new(), zone)
    }
}

/// The address a reverse name stands for (`4.3.2.1.in-addr.arpa` → 1.2.3.4) and whether
/// the name is full length; `None` for a name that is no address (`x.1.in-addr.arpa`, too
/// many labels, an octet over 255).
fn arpa_address(qname: &Name) -> Option<(IpAddr, bool)> {
    // Octets under in-addr.arpa, nibbles under ip6.arpa.
    let v4 = qname
        .iter()
        .rev()
        .nth(1)
        .is_some_and(|l| l.eq_ignore_ascii_case(b"in-addr"));
    let max = if v4 { 4 } else { 32 };
    if usize::from(qname.num_labels()) > max + 2 {
        return None;
    }
    let net = qname.parse_arpa_name().ok()?;
    let full = match net {
        IpNet::V4(p) => p.prefix_len() == 32,
        IpNet::V6(p) => p.prefix_len() == 128,
    };
    Some((net.addr(), full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(yaml: &str) -> ZoneSettings {
        ZoneSettings::from_config(&Config::from_yaml(yaml).unwrap().cluster).unwrap()
    }

    const ZONES: &str = "listen: [\"192.0.2.53:53\"]\ncluster: {external_zone: k8s.corp.example}\n";

    #[test]
    fn reverse_zones_are_rounded_in_to_label_boundaries() {
        let names = |cidr: &str| -> Vec<String> {
            reverse_zones(&cidr.parse().unwrap())
                .into_iter()
                .map(|(_, n)| n.to_ascii().trim_end_matches('.').to_string())
                .collect()
        };
        let twelve = names("10.96.0.0/12");
        assert_eq!(twelve.len(), 16);
        assert_eq!(twelve[0], "96.10.in-addr.arpa");
        assert_eq!(twelve[15], "111.10.in-addr.arpa");
        assert_eq!(names("10.244.0.0/16"), ["244.10.in-addr.arpa"]);
        // Below /24 every address is a zone of its own.
        let small = names("192.0.2.128/25");
        assert_eq!(small.len(), 128);
        assert_eq!(small[0], "128.2.0.192.in-addr.arpa");
        assert_eq!(names("192.0.2.0/23").len(), 2);
        assert_eq!(
            names("fd00:10:96::/112"),
            // 28 nibbles: fd00:0010:0096:0000:0000:0000:0000.
            ["0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"]
        );
        assert_eq!(names("fd00:10:96::/110").len(), 4);
    }

    #[test]
    fn reverse_names_outside_the_cidrs_are_not_ours() {
        let s = settings(
            "listen: [\"192.0.2.53:53\"]\ncluster: {service_cidrs: [10.96.0.0/12], pod_cidrs: [10.244.0.0/16]}\n",
        );
        let ours = |name: &str| {
            let q = Name::from_ascii(name).unwrap();
            answer(
                &ZoneIndex::new(),
                &s,
                &ViewPolicy::cluster(),
                &q,
                RecordType::PTR,
            )
            .is_some()
        };
        assert!(ours("5.0.96.10.in-addr.arpa."));
        assert!(ours("5.0.111.10.in-addr.arpa."));
        assert!(ours("5.0.244.10.in-addr.arpa."));
        // The rest of 10/8 (the office's, say) goes to the upstream resolvers.
        assert!(!ours("5.0.112.10.in-addr.arpa."));
        assert!(!ours("3.2.1.10.in-addr.arpa."));
        assert!(!ours("10.in-addr.arpa."));
    }

    fn ask(s: &ZoneSettings, name: &str, qtype: RecordType) -> Answer {
        let q = Name::from_ascii(name).unwrap();
        answer(&ZoneIndex::new(), s, &ViewPolicy::cluster(), &q, qtype).unwrap()
    }

    fn ns_target(a: &Answer) -> Vec<String> {
        a.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(NS(n)) => Some(n.to_ascii()),
                _ => None,
            })
            .collect()
    }

    fn mname(a: &Answer) -> String {
        a.answers
            .iter()
            .chain(&a.authorities)
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.mname.to_ascii()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn apex_ns_names_the_soa_mname_in_both_zones() {
        let s = settings(ZONES);
        for zone in ["cluster.local.", "k8s.corp.example."] {
            let ns = ask(&s, zone, RecordType::NS);
            assert_eq!(ns.rcode, ResponseCode::NoError);
            assert_eq!(ns_target(&ns), ["ns.dns.cluster.local."]);
            assert_eq!(
                mname(&ask(&s, zone, RecordType::SOA)),
                "ns.dns.cluster.local."
            );
            // The name server's address rides along (RFC 1035 3.3.11).
            let glue: Vec<_> = ns.additionals.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(glue, ["192.0.2.53"]);
            let any = ask(&s, zone, RecordType::ANY);
            assert_eq!(any.answers.len(), 2);
        }
    }

    #[test]
    fn ns_below_the_apex_is_nodata_with_soa() {
        let s = settings(ZONES);
        let a = ask(&s, "dns-version.cluster.local.", RecordType::NS);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        assert!(matches!(a.authorities[0].data, RData::SOA(_)));
        let a = ask(&s, "svc.cluster.local.", RecordType::NS);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        assert!(matches!(a.authorities[0].data, RData::SOA(_)));
        // The apex answers nothing but SOA and NS.
        assert!(ask(&s, "cluster.local.", RecordType::A).answers.is_empty());
    }

    #[test]
    fn nameserver_name_resolves_and_its_parent_is_an_empty_non_terminal() {
        let s = settings(ZONES);
        let a = ask(&s, "ns.dns.cluster.local.", RecordType::A);
        assert_eq!(a.answers[0].data.to_string(), "192.0.2.53");
        let a = ask(&s, "ns.dns.cluster.local.", RecordType::AAAA);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        let a = ask(&s, "dns.cluster.local.", RecordType::A);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        let a = ask(&s, "x.dns.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn configured_nameserver_outside_our_zones_has_no_glue() {
        let s = settings(
            "cluster: {nameserver: dns1.corp.example, nameserver_addresses: [192.0.2.1]}\n",
        );
        let ns = ask(&s, "cluster.local.", RecordType::NS);
        assert_eq!(ns_target(&ns), ["dns1.corp.example."]);
        assert!(ns.additionals.is_empty());
        assert_eq!(
            mname(&ask(&s, "cluster.local.", RecordType::SOA)),
            "dns1.corp.example."
        );
        assert_eq!(
            ask(&s, "ns.dns.cluster.local.", RecordType::A).rcode,
            ResponseCode::NXDomain
        );
    }

    mod cluster_data {
        use super::*;
        use crate::config::ViewConfig;
        use k8s_openapi::api::core::v1::{Pod, Service};
        use k8s_openapi::api::discovery::v1::EndpointSlice;

        const OBJECTS: &str = r#"
- {kind: Service, metadata: {name: vault, namespace: secret}, spec: {type: LoadBalancer, clusterIP: 10.96.0.20}, status: {loadBalancer: {ingress: [{ip: 203.0.113.20}]}}}
- {kind: Service, metadata: {name: web, namespace: default}, spec: {type: LoadBalancer, clusterIP: 10.96.0.10}, status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}}
- {kind: Service, metadata: {name: db, namespace: default}, spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}}
- {kind: Service, metadata: {name: down, namespace: default}, spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}}
- {kind: Service, metadata: {name: alias, namespace: default}, spec: {type: ExternalName, externalName: web.default.svc.cluster.local}}
- {kind: Service, metadata: {name: alias2, namespace: default}, spec: {type: ExternalName, externalName: alias.default.svc.cluster.local}}
- {kind: Service, metadata: {name: gone, namespace: default}, spec: {type: ExternalName, externalName: nothing.default.svc.cluster.local}}
- {kind: Service, metadata: {name: loop, namespace: default}, spec: {type: ExternalName, externalName: loop.default.svc.cluster.local}}
"#;
        const SLICE: &str = "metadata: {name: db-x, namespace: default, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nports: [{name: pg, port: 5432, protocol: TCP}]\nendpoints: [{addresses: [10.244.1.5]}, {addresses: [10.244.1.7], conditions: {ready: false}}]";
        const PODS: &str = r#"
- {metadata: {name: db-0, namespace: default}, spec: {hostname: db-0, subdomain: db, containers: []}, status: {podIP: 10.244.1.5}}
- {metadata: {name: db-1, namespace: default}, spec: {hostname: db-1, subdomain: db, containers: []}, status: {podIP: 10.244.1.7}}
- {metadata: {name: lonely, namespace: podsonly}, spec: {containers: []}, status: {podIP: 10.244.9.9}}
"#;

        fn index() -> ZoneIndex {
            let mut idx = ZoneIndex::new();
            let services: Vec<Service> = leafbridge_api::yaml::from_str(OBJECTS).unwrap();
            services.iter().for_each(|s| idx.apply_service(s));
            idx.apply_endpoint_slice(
                &leafbridge_api::yaml::from_str::<EndpointSlice>(SLICE).unwrap(),
            );
            let pods: Vec<Pod> = leafbridge_api::yaml::from_str(PODS).unwrap();
            pods.iter().for_each(|p| idx.apply_pod(p));
            idx
        }

        fn office() -> ViewPolicy {
            ViewPolicy::from_config(&ViewConfig {
                name: "office".into(),
                namespaces_deny: vec!["secret".into()],
                forward: true,
                ..Default::default()
            })
        }

        fn ask_in(view: &ViewPolicy, s: &ZoneSettings, name: &str, t: RecordType) -> Answer {
            let q = Name::from_ascii(name).unwrap();
            answer(&index(), s, view, &q, t).unwrap()
        }

        fn data(a: &Answer) -> Vec<String> {
            a.answers.iter().map(|r| r.data.to_string()).collect()
        }

        #[test]
        fn a_namespace_exists_only_through_what_the_view_sees_in_it() {
            let s = settings(ZONES);
            let cluster = ViewPolicy::cluster();
            let nx = |v: &ViewPolicy, n: &str| ask_in(v, &s, n, RecordType::A).rcode;
            assert_eq!(
                nx(&cluster, "secret.svc.cluster.local."),
                ResponseCode::NoError
            );
            assert_eq!(
                nx(&office(), "secret.svc.cluster.local."),
                ResponseCode::NXDomain
            );
            assert_eq!(
                nx(&office(), "secret.k8s.corp.example."),
                ResponseCode::NXDomain
            );
            assert_eq!(
                nx(&office(), "default.svc.cluster.local."),
                ResponseCode::NoError
            );
            // A namespace holding only Pods has no Services to name.
            assert_eq!(
                nx(&cluster, "podsonly.svc.cluster.local."),
                ResponseCode::NXDomain
            );
            // A selector that picks nothing in the namespace hides it as well.
            let picky = ViewPolicy::from_config(&ViewConfig {
                name: "picky".into(),
                service_selector: Some(
                    leafbridge_api::yaml::from_str("matchLabels: {expose: office}").unwrap(),
                ),
                ..Default::default()
            });
            assert_eq!(
                nx(&picky, "default.svc.cluster.local."),
                ResponseCode::NXDomain
            );
        }

        #[test]
        fn a_pod_hostname_answers_only_while_the_pod_is_a_ready_endpoint() {
            let s = settings(ZONES);
            let v = ViewPolicy::cluster();
            let a = ask_in(&v, &s, "db-0.db.default.svc.cluster.local.", RecordType::A);
            assert_eq!(data(&a), ["10.244.1.5"]);
            let a = ask_in(&v, &s, "db-1.db.default.svc.cluster.local.", RecordType::A);
            assert_eq!(a.rcode, ResponseCode::NXDomain, "{a:?}");
        }

        #[test]
        fn nothing_answers_below_a_name_that_is_nxdomain() {
            // RFC 8020: `down` has no ready endpoints, so its name is NXDOMAIN, and so is
            // every name below it.
            let s = settings(ZONES);
            let v = ViewPolicy::cluster();
            for name in [
                "down.default.svc.cluster.local.",
                "_tcp.down.default.svc.cluster.local.",
                "_pg._tcp.down.default.svc.cluster.local.",
            ] {
                let a = ask_in(&v, &s, name, RecordType::SRV);
                assert_eq!(a.rcode, ResponseCode::NXDomain, "{name}");
            }
            assert_eq!(
                ask_in(
                    &v,
                    &s,
                    "_tcp.db.default.svc.cluster.local.",
                    RecordType::SRV
                )
                .rcode,
                ResponseCode::NoError
            );
            // Pod records in insecure mode answer in any namespace, so its node exists.
            let insecure = settings(&format!("{ZONES}  pods: insecure\n").replace(
                "cluster: {external_zone: k8s.corp.example}\n  pods: insecure",
                "cluster: {external_zone: k8s.corp.example, pods: insecure}",
            ));
            let name = "empty.pod.cluster.local.";
            assert_eq!(
                ask_in(
                    &v,
                    &insecure,
                    "1-2-3-4.empty.pod.cluster.local.",
                    RecordType::A
                )
                .rcode,
                ResponseCode::NoError
            );
            assert_eq!(
                ask_in(&v, &insecure, name, RecordType::A).rcode,
                ResponseCode::NoError
            );
            assert_eq!(
                ask_in(&v, &s, name, RecordType::A).rcode,
                ResponseCode::NXDomain
            );
        }

        #[test]
        fn external_name_targets_inside_the_cluster_zone_are_followed() {
            let s = settings(ZONES);
            let v = ViewPolicy::cluster();
            let a = ask_in(&v, &s, "alias.default.svc.cluster.local.", RecordType::A);
            assert_eq!(data(&a), ["web.default.svc.cluster.local.", "10.96.0.10"]);
            // The office view follows with its own addresses.
            let a = ask_in(
                &office(),
                &s,
                "alias2.default.svc.cluster.local.",
                RecordType::A,
            );
            assert_eq!(
                data(&a),
                [
                    "alias.default.svc.cluster.local.",
                    "web.default.svc.cluster.local.",
                    "203.0.113.10"
                ]
            );
            // RFC 6604: the rcode is the last name's.
            let a = ask_in(&v, &s, "gone.default.svc.cluster.local.", RecordType::A);
            assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NXDomain, 1));
            assert!(matches!(a.authorities[0].data, RData::SOA(_)));
            // A loop ends: no endless chain.
            let a = ask_in(&v, &s, "loop.default.svc.cluster.local.", RecordType::A);
            assert_eq!(a.answers.len(), 1);
            // Asked for the CNAME itself: just the CNAME.
            let a = ask_in(
                &v,
                &s,
                "alias.default.svc.cluster.local.",
                RecordType::CNAME,
            );
            assert_eq!(data(&a), ["web.default.svc.cluster.local."]);
        }
    }
}
