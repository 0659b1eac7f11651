//! The structured route every runner reads back from its daemon's RIB.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One path in a peer's RIB, as far as these tests care about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RibRoute {
    /// The prefix in canonical CIDR form, e.g. `203.0.113.7/32`, `2001:db8:1::/48`.
    pub prefix: String,
    /// BGP NEXT_HOP (or the MP_REACH next hop), when the daemon shows it.
    pub next_hop: Option<IpAddr>,
    /// AS_PATH, flattened (AS_SETs appear in order).
    pub as_path: Vec<u32>,
    /// COMMUNITIES (RFC 1997) as (ASN, value), sorted.
    pub communities: Vec<(u16, u16)>,
    /// LARGE_COMMUNITY (RFC 8092) as (global admin, data 1, data 2), sorted.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF (iBGP only; daemons may show a default for eBGP routes).
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
}

impl RibRoute {
    /// A route with only its prefix set.
    pub fn new(prefix: impl Into<String>) -> RibRoute {
        RibRoute {
            prefix: prefix.into(),
            next_hop: None,
            as_path: Vec::new(),
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
            med: None,
        }
    }

    pub(crate) fn normalise(mut self) -> RibRoute {
        self.communities.sort();
        self.large_communities.sort();
        self
    }
}

/// A route a runner's daemon originates (BIRD: a `static` protocol; FRR: a `network`
/// statement; GoBGP/ExaBGP: a static route) with the attributes given here.
#[derive(Debug, Clone, Default)]
pub struct StaticRoute {
    /// CIDR prefix, IPv4 or IPv6.
    pub prefix: String,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    /// Only sent over iBGP sessions.
    pub local_pref: Option<u32>,
}

impl StaticRoute {
    pub fn new(prefix: impl Into<String>) -> StaticRoute {
        StaticRoute {
            prefix: prefix.into(),
            ..StaticRoute::default()
        }
    }

    pub(crate) fn has_attributes(&self) -> bool {
        !self.communities.is_empty()
            || !self.large_communities.is_empty()
            || self.med.is_some()
            || self.local_pref.is_some()
    }
}

/// Routes keyed by prefix (when a daemon holds several paths, the best / first one).
pub fn by_prefix(routes: Vec<RibRoute>) -> BTreeMap<String, RibRoute> {
    let mut map = BTreeMap::new();
    for r in routes {
        map.entry(r.prefix.clone()).or_insert(r);
    }
    map
}

/// `count` consecutive /32 prefixes starting at `first` (e.g. from 100.64.0.0 for benchmarks).
pub fn consecutive_v4_hosts(first: std::net::Ipv4Addr, count: u32) -> Vec<String> {
    let base = u32::from(first);
    (0..count)
        .map(|i| format!("{}/32", std::net::Ipv4Addr::from(base + i)))
        .collect()
}
