//! Views (the split horizon): which clients get which answers.
//!
//! Selection is pure: given the client's source address, the local address the query
//! reached and an optional EDNS client-subnet (RFC 7871) address, pick the first matching
//! view. The client-subnet is believed only from configured trusted forwarders, so a dnsmasq
//! or corporate resolver in front does not hide who asked, and nobody else can choose a view.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::ViewConfig;

/// What a view may see and which addresses it is given.
#[derive(Debug, Clone)]
pub struct ViewPolicy {
    pub name: String,
    /// In-cluster answers: everything visible, ClusterIPs and pod IPs.
    pub standard: bool,
    pub namespaces_allow: Option<HashSet<String>>,
    pub namespaces_deny: HashSet<String>,
    pub service_cidr_announced: bool,
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
            service_cidr_announced: true,
            pod_cidr_announced: true,
            forward: true,
        }
    }

    pub fn from_config(c: &ViewConfig) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        Self {
            name: c.name.clone(),
            standard: c.standard,
            namespaces_allow: c.namespaces_allow.as_deref().map(lower),
            namespaces_deny: lower(&c.namespaces_deny),
            service_cidr_announced: c.standard || c.service_cidr_announced,
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

    /// Hidden Services (the opt-out annotation) are seen only by standard views.
    pub fn service_visible(&self, ns: &str, hidden: bool) -> bool {
        self.namespace_visible(ns) && (self.standard || !hidden)
    }

    pub fn pods_reachable(&self) -> bool {
        self.pod_cidr_announced
    }

    /// Addresses a non-headless Service answers with: standard views get its ClusterIPs;
    /// others its LoadBalancer addresses if it has any, else its ClusterIPs only when the
    /// service CIDR is routed to them.
    pub fn service_addresses(&self, cluster_ips: &[IpAddr], lb_ips: &[IpAddr]) -> Vec<IpAddr> {
        if self.standard {
            cluster_ips.to_vec()
        } else if !lb_ips.is_empty() {
            lb_ips.to_vec()
        } else if self.service_cidr_announced {
            cluster_ips.to_vec()
        } else {
            Vec::new()
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
}

impl View {
    pub fn from_config(c: &ViewConfig) -> Self {
        Self {
            policy: ViewPolicy::from_config(c),
            sources: c.sources.clone(),
            destinations: c.destinations.clone(),
            trusted_ecs_from: c.trusted_ecs_from.clone(),
        }
    }

    fn matches(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> bool {
        let client = match ecs {
            Some(e) if self.trusted_ecs_from.iter().any(|n| n.contains(&source)) => e,
            _ => source,
        };
        let src_ok = self.sources.is_empty() || self.sources.iter().any(|n| n.contains(&client));
        let dst_ok = self.destinations.is_empty() || self.destinations.contains(&local);
        // A view with no selector at all matches nothing (it must be chosen explicitly).
        let has_selector = !self.sources.is_empty() || !self.destinations.is_empty();
        has_selector && src_ok && dst_ok
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

    /// First matching view, else the standard in-cluster view.
    pub fn select(&self, source: IpAddr, local: IpAddr, ecs: Option<IpAddr>) -> &ViewPolicy {
        self.views
            .iter()
            .find(|v| v.matches(source, local, ecs))
            .map(|v| &v.policy)
            .unwrap_or(&self.default)
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

    #[test]
    fn selects_view_by_source_network() {
        let v = Views::new(&[office()]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            v.select("192.0.2.7".parse().unwrap(), lo, None).name,
            "office"
        );
        assert_eq!(v.select(lo, lo, None).name, "cluster");
    }

    #[test]
    fn believes_client_subnet_only_from_trusted_forwarders() {
        let v = Views::new(&[office()]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ecs = Some("192.0.2.9".parse().unwrap());
        assert_eq!(
            v.select("127.0.0.2".parse().unwrap(), lo, ecs).name,
            "office"
        );
        assert_eq!(v.select(lo, lo, ecs).name, "cluster");
    }

    #[test]
    fn selects_view_by_local_address() {
        let mut c = office();
        c.sources.clear();
        c.destinations = vec!["127.0.0.3".parse().unwrap()];
        let v = Views::new(&[c]);
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            v.select(src, "127.0.0.3".parse().unwrap(), None).name,
            "office"
        );
        assert_eq!(v.select(src, src, None).name, "cluster");
    }

    #[test]
    fn office_gets_load_balancer_address_and_cluster_ip_only_when_announced() {
        let mut p = ViewPolicy::from_config(&office());
        let cip: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap()];
        let lb: Vec<IpAddr> = vec!["203.0.113.5".parse().unwrap()];
        assert_eq!(p.service_addresses(&cip, &lb), lb);
        assert!(p.service_addresses(&cip, &[]).is_empty());
        p.service_cidr_announced = true;
        assert_eq!(p.service_addresses(&cip, &[]), cip);
    }
}
