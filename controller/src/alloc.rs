//! The pure allocator: pools + current allocations + a Service request in, addresses or a typed
//! error out. No I/O, no clocks, no hashing order: the same inputs in the same order give the
//! same table.
//!
//! Memory grows with allocations, never with pool size: the addresses in use are kept per family
//! as a map of contiguous runs (`start -> end`) of u128 values, so the lowest free address of a
//! range is found by hopping over runs (O(log n)), and an IPv6 /64 is never enumerated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};
use leafbridge_api::crd::IPPoolSpec;

/// `spec.ipFamilies` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    IPv4,
    IPv6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::IPv4
        } else {
            Family::IPv6
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Self {
        match self {
            Family::IPv4 => Family::IPv6,
            Family::IPv6 => Family::IPv4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::IPv4 => "IPv4",
            Family::IPv6 => "IPv6",
        })
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// (namespace, name) of a Service.
pub type SvcKey = (String, String);

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_u128(f: Family, x: u128) -> IpAddr {
    match f {
        Family::IPv4 => IpAddr::V4(Ipv4Addr::from(x as u32)),
        Family::IPv6 => IpAddr::V6(Ipv6Addr::from(x)),
    }
}

/// Addresses ending in .0 or .255: some old clients and routers treat them as network/broadcast
/// addresses even inside larger prefixes.
fn is_buggy(f: Family, x: u128) -> bool {
    f == Family::IPv4 && matches!(x & 0xff, 0 | 255)
}

/// Number of buggy addresses in [0, n].
fn buggy_upto(n: u128) -> u128 {
    (n / 256) * 2 + 1 + u128::from(n % 256 == 255)
}

fn buggy_in(s: u128, e: u128) -> u128 {
    buggy_upto(e) - if s == 0 { 0 } else { buggy_upto(s - 1) }
}

/// A set of u128 values as contiguous inclusive runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Runs(BTreeMap<u128, u128>);

impl Runs {
    fn run_at(&self, x: u128) -> Option<(u128, u128)> {
        self.0
            .range(..=x)
            .next_back()
            .filter(|(_, e)| **e >= x)
            .map(|(s, e)| (*s, *e))
    }
    fn contains(&self, x: u128) -> bool {
        self.run_at(x).is_some()
    }
    fn insert(&mut self, x: u128) {
        if self.contains(x) {
            return;
        }
        let (mut s, mut e) = (x, x);
        if let Some((ps, pe)) = x.checked_sub(1).and_then(|p| self.run_at(p)) {
            debug_assert_eq!(pe + 1, x);
            s = ps;
            self.0.remove(&ps);
        }
        if let Some(n) = x.checked_add(1)
            && let Some(ne) = self.0.remove(&n)
        {
            e = ne;
        }
        self.0.insert(s, e);
    }
    fn remove(&mut self, x: u128) {
        if let Some((s, e)) = self.run_at(x) {
            self.0.remove(&s);
            if s < x {
                self.0.insert(s, x - 1);
            }
            if x < e {
                self.0.insert(x + 1, e);
            }
        }
    }
    /// Lowest value in [from, to] not in the set and not skipped.
    fn first_free(&self, from: u128, to: u128, skip: impl Fn(u128) -> bool) -> Option<u128> {
        let mut c = from;
        loop {
            if c > to {
                return None;
            }
            if let Some((_, e)) = self.run_at(c) {
                c = e.checked_add(1)?;
                continue;
            }
            if skip(c) {
                c = c.checked_add(1)?;
                continue;
            }
            return Some(c);
        }
    }
    fn count_in(&self, s: u128, e: u128) -> u128 {
        let mut n = 0;
        for (&rs, &re) in self.0.range(..=e).rev() {
            if re < s {
                break;
            }
            n += re.min(e) - rs.max(s) + 1;
        }
        n
    }
    fn len_runs(&self) -> usize {
        self.0.len()
    }
}

/// Why a pool cannot be used (its `Ready` condition is False with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolProblem {
    #[error("invalid addresses: {0}")]
    InvalidAddresses(String),
    #[error("addresses overlap with IPPool {other}")]
    Overlap { other: String },
    #[error("invalid selector: {0}")]
    InvalidSelector(String),
}

impl PoolProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            PoolProblem::InvalidAddresses(_) => "InvalidAddresses",
            PoolProblem::Overlap { .. } => "Overlap",
            PoolProblem::InvalidSelector(_) => "InvalidSelector",
        }
    }
}

#[derive(Debug, Clone)]
struct Pool {
    name: String,
    /// Sorted, merged inclusive ranges per family.
    ranges: [Vec<(u128, u128)>; 2],
    auto_assign: bool,
    avoid_buggy_ips: bool,
    priority: Option<i32>,
    namespaces: Vec<String>,
    namespace_selectors: Vec<Selector>,
    service_selectors: Vec<Selector>,
}

/// Parse `a.b.c.d/len` or `a-b` into an inclusive u128 range (the IPPool rules of
/// `leafbridge_api::crd::pool_address_range`).
pub fn parse_range(s: &str) -> Result<(Family, u128, u128), String> {
    let (a, b) = leafbridge_api::crd::pool_address_range(s)?;
    Ok((Family::of(&a), to_u128(&a), to_u128(&b)))
}

impl Pool {
    fn parse(name: &str, spec: &IPPoolSpec) -> Result<Pool, PoolProblem> {
        let mut ranges: [Vec<(u128, u128)>; 2] = [vec![], vec![]];
        if spec.addresses.is_empty() {
            return Err(PoolProblem::InvalidAddresses("no addresses".into()));
        }
        for a in &spec.addresses {
            let (f, s, e) = parse_range(a).map_err(PoolProblem::InvalidAddresses)?;
            ranges[f.idx()].push((s, e));
        }
        for r in &mut ranges {
            r.sort();
            let mut merged: Vec<(u128, u128)> = vec![];
            for &(s, e) in r.iter() {
                match merged.last_mut() {
                    Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            *r = merged;
        }
        let sel = |v: &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
            v.iter()
                .map(|s| {
                    Selector::try_from(s.clone())
                        .map_err(|e| PoolProblem::InvalidSelector(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let sa = spec.service_allocation.clone().unwrap_or_default();
        Ok(Pool {
            name: name.to_owned(),
            ranges,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            priority: sa.priority,
            namespaces: sa.namespaces.clone(),
            namespace_selectors: sel(&sa.namespace_selectors)?,
            service_selectors: sel(&sa.service_selectors)?,
        })
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        let x = to_u128(ip);
        self.ranges[Family::of(ip).idx()]
            .iter()
            .any(|&(s, e)| s <= x && x <= e)
    }

    fn has(&self, f: Family) -> bool {
        !self.ranges[f.idx()].is_empty()
    }

    /// Whether this pool's serviceAllocation admits the Service; `Err` says why not.
    fn admits(&self, req: &ServiceRequest) -> Result<(), String> {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&req.key.0) {
            return Err(format!("namespace {} is not in its namespaces", req.key.0));
        }
        if !self.namespace_selectors.is_empty()
            && !self
                .namespace_selectors
                .iter()
                .any(|s| s.matches(&req.namespace_labels))
        {
            return Err(format!(
                "namespace {} matches none of its namespaceSelectors",
                req.key.0
            ));
        }
        if !self.service_selectors.is_empty()
            && !self
                .service_selectors
                .iter()
                .any(|s| s.matches(&req.labels))
        {
            return Err("the Service matches none of its serviceSelectors".into());
        }
        Ok(())
    }

    fn order_key(&self) -> (bool, i32, &str) {
        (
            self.priority.is_none(),
            self.priority.unwrap_or(0),
            &self.name,
        )
    }
}

/// Everything about a Service the allocator looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRequest {
    pub key: SvcKey,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    /// `spec.ipFamilies` (may be empty: IPv4 then).
    pub ip_families: Vec<Family>,
    pub policy: FamilyPolicy,
    /// Requested addresses (annotation, else `spec.loadBalancerIP`), at most one per family.
    pub requested: Vec<IpAddr>,
    /// Pool requested by annotation.
    pub pool: Option<String>,
    /// `leafbridge.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// (protocol, port) of `spec.ports`.
    pub ports: Vec<(String, i32)>,
    /// `spec.externalTrafficPolicy: Local`.
    pub local_traffic: bool,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// Addresses already in `status.loadBalancer.ingress`. They are the Service's own (as in
    /// MetalLB): every `ensure` adopts them when the table does not know the Service (it
    /// appeared again after a re-list, a file move or a second replica's start).
    pub status: Vec<IpAddr>,
}

impl ServiceRequest {
    /// Families to hold, primary first. `spec.ipFamilies` decides; a requested address only
    /// when the Service names no family (a SingleStack IPv6 Service never gets IPv4).
    pub fn wanted_families(&self) -> Vec<Family> {
        let primary = self
            .ip_families
            .first()
            .copied()
            .or(self.requested.first().map(Family::of))
            .unwrap_or(Family::IPv4);
        match self.policy {
            FamilyPolicy::SingleStack => vec![primary],
            _ => vec![primary, primary.other()],
        }
    }
}

/// What a Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Addresses, primary family first.
    pub ips: Vec<IpAddr>,
    /// The `ip-pool` annotation when the addresses were given: only a change of it moves them.
    pool: Option<String>,
    sharing_key: Option<String>,
    ports: Vec<(String, i32)>,
    local_traffic: bool,
    selector: BTreeMap<String, String>,
}

/// What [`Allocator::ensure_detailed`] gave a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Addresses, primary family first.
    pub ips: Vec<IpAddr>,
    /// Held addresses kept although their family's request failed, with the failure.
    pub kept: Vec<(IpAddr, AllocError)>,
}

/// Why a Service got no address. `reason()` is the Event reason / metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("no IPPool named {0:?}")]
    UnknownPool(String),
    #[error("IPPool {pool} is not ready: {problem}")]
    PoolNotReady { pool: String, problem: PoolProblem },
    #[error("IPPool {pool} does not admit this Service: {why}")]
    PoolNotAllowed { pool: String, why: String },
    #[error("requested address {0} is not in any usable IPPool")]
    NotInAnyPool(IpAddr),
    #[error("requested address {ip} is not in the requested IPPool {pool}")]
    NotInRequestedPool { ip: IpAddr, pool: String },
    #[error("{ip} is in use by {by} and the two do not share the same allow-shared-ip key")]
    AddressInUse { ip: IpAddr, by: String },
    #[error("{ip} is shared with {with}, which also uses {protocol}/{port}")]
    PortCollision {
        ip: IpAddr,
        with: String,
        protocol: String,
        port: i32,
    },
    #[error(
        "{ip} is shared with {with}: with externalTrafficPolicy Local, Services may share an address only when they select the same pods (otherwise traffic is blackholed on some nodes)"
    )]
    SelectorMismatch { ip: IpAddr, with: String },
    #[error(
        "{ip} is shared with {with}, whose externalTrafficPolicy differs: a Local and a Cluster Service may not share an address (nodes without the Local Service's endpoints would drop its traffic)"
    )]
    TrafficPolicyMismatch { ip: IpAddr, with: String },
    #[error(
        "requested address {ip} ends in .0 or .255, which IPPool {pool} avoids (avoidBuggyIPs)"
    )]
    AvoidedAddress { ip: IpAddr, pool: String },
    #[error("no free {0} address in the IPPools this Service may use")]
    Exhausted(Family),
    #[error("no IPPool this Service may use has {0} addresses")]
    NoPoolForFamily(Family),
    #[error("RequireDualStack: {0}")]
    DualStackIncomplete(Box<AllocError>),
}

impl AllocError {
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::InvalidRequest(_) => "InvalidRequest",
            AllocError::UnknownPool(_) => "UnknownPool",
            AllocError::PoolNotReady { .. } => "PoolNotReady",
            AllocError::PoolNotAllowed { .. } => "PoolNotAllowed",
            AllocError::NotInAnyPool(_) => "NotInAnyPool",
            AllocError::NotInRequestedPool { .. } => "NotInRequestedPool",
            AllocError::AddressInUse { .. } => "AddressInUse",
            AllocError::PortCollision { .. } => "PortCollision",
            AllocError::SelectorMismatch { .. } => "SelectorMismatch",
            AllocError::TrafficPolicyMismatch { .. } => "TrafficPolicyMismatch",
            AllocError::AvoidedAddress { .. } => "AddressAvoided",
            AllocError::Exhausted(_) => "PoolExhausted",
            AllocError::NoPoolForFamily(_) => "NoPoolForFamily",
            AllocError::DualStackIncomplete(_) => "DualStackIncomplete",
        }
    }
}

/// Per-pool figures for IPPool status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub assigned: [u128; 2],
    pub total: [u128; 2],
}

impl PoolStats {
    pub fn available(&self, f: Family) -> u128 {
        self.total[f.idx()].saturating_sub(self.assigned[f.idx()])
    }
    pub fn assigned(&self, f: Family) -> u128 {
        self.assigned[f.idx()]
    }
    pub fn total(&self, f: Family) -> u128 {
        self.total[f.idx()]
    }
}

/// The allocation table.
#[derive(Debug, Default, Clone)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    problems: BTreeMap<String, PoolProblem>,
    used: [Runs; 2],
    /// Services holding each address, sorted (more than one only when shared). Hash maps here:
    /// no decision depends on their iteration order, and they are the hot path.
    holders: HashMap<IpAddr, Vec<SvcKey>>,
    by_key: BTreeMap<String, BTreeSet<IpAddr>>,
    services: HashMap<SvcKey, Assigned>,
}

fn fmt_key(k: &SvcKey) -> String {
    format!("{}/{}", k.0, k.1)
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the pool set with pools of unknown age; see [`Allocator::set_pools_dated`].
    pub fn set_pools<'a>(&mut self, pools: impl IntoIterator<Item = (&'a str, &'a IPPoolSpec)>) {
        self.set_pools_dated(pools.into_iter().map(|(n, s)| (n, s, None)));
    }

    /// Replace the pool set. Allocations stay: a Service whose address left every pool keeps it
    /// (see [`Allocator::orphans`]).
    ///
    /// Overlapping pools are settled by age, never by name, so a new pool with a typo cannot
    /// disable one in use: a pool that was usable before this call goes first, then pools by
    /// `metadata.creationTimestamp` (unknown last), then by name; a pool overlapping an earlier
    /// one is marked `Overlap` and not used.
    pub fn set_pools_dated<'a>(
        &mut self,
        pools: impl IntoIterator<Item = (&'a str, &'a IPPoolSpec, Option<Timestamp>)>,
    ) {
        let was_usable: BTreeSet<String> = self.pools.keys().cloned().collect();
        self.pools.clear();
        self.problems.clear();
        let mut sorted: Vec<_> = pools.into_iter().collect();
        sorted.sort_by(|a, b| {
            let key = |p: &(&str, &IPPoolSpec, Option<Timestamp>)| {
                (
                    !was_usable.contains(p.0),
                    p.2.is_none(),
                    p.2,
                    p.0.to_owned(),
                )
            };
            key(a).cmp(&key(b))
        });
        for (name, spec, _) in sorted {
            match Pool::parse(name, spec) {
                Err(p) => {
                    self.problems.insert(name.to_owned(), p);
                }
                Ok(pool) => {
                    let clash = self.pools.values().find(|o| {
                        (0..2).any(|f| {
                            pool.ranges[f].iter().any(|&(s, e)| {
                                o.ranges[f].iter().any(|&(os, oe)| s <= oe && os <= e)
                            })
                        })
                    });
                    if let Some(o) = clash {
                        self.problems.insert(
                            name.to_owned(),
                            PoolProblem::Overlap {
                                other: o.name.clone(),
                            },
                        );
                    } else {
                        self.pools.insert(name.to_owned(), pool);
                    }
                }
            }
        }
    }

    pub fn pool_problem(&self, name: &str) -> Option<&PoolProblem> {
        self.problems.get(name)
    }

    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.pools
            .keys()
            .chain(self.problems.keys())
            .map(String::as_str)
    }

    pub fn get(&self, key: &SvcKey) -> Option<&Assigned> {
        self.services.get(key)
    }

    /// Every Service's addresses, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = (&SvcKey, &Assigned)> {
        self.services.iter()
    }

    /// Number of runs in the used-address sets (memory check: proportional to allocations).
    pub fn run_count(&self) -> usize {
        self.used[0].len_runs() + self.used[1].len_runs()
    }

    /// The usable pool an address is in.
    pub fn pool_of(&self, ip: &IpAddr) -> Option<&str> {
        self.pools
            .values()
            .find(|p| p.contains(ip))
            .map(|p| p.name.as_str())
    }

    /// Addresses of `key` that are in no usable pool (after a pool edit).
    pub fn orphans(&self, key: &SvcKey) -> Vec<IpAddr> {
        self.services
            .get(key)
            .map(|a| {
                a.ips
                    .iter()
                    .filter(|ip| self.pool_of(ip).is_none())
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stats(&self, pool: &str) -> PoolStats {
        let mut st = PoolStats::default();
        if let Some(p) = self.pools.get(pool) {
            for f in [Family::IPv4, Family::IPv6] {
                for &(s, e) in &p.ranges[f.idx()] {
                    let size = (e - s).saturating_add(1);
                    let buggy = if p.avoid_buggy_ips && f == Family::IPv4 {
                        buggy_in(s, e)
                    } else {
                        0
                    };
                    st.total[f.idx()] += size - buggy;
                    st.assigned[f.idx()] += self.used[f.idx()].count_in(s, e);
                }
            }
        }
        st
    }

    /// Check that `req` may use `ip` given its current holders.
    fn shareable(&self, ip: &IpAddr, req: &ServiceRequest) -> Result<(), AllocError> {
        let Some(holders) = self.holders.get(ip) else {
            return Ok(());
        };
        for h in holders.iter().filter(|h| **h != req.key) {
            let a = &self.services[h];
            if req.sharing_key.is_none() || a.sharing_key != req.sharing_key {
                return Err(AllocError::AddressInUse {
                    ip: *ip,
                    by: fmt_key(h),
                });
            }
            if let Some((protocol, port)) = req.ports.iter().find(|p| a.ports.contains(p)) {
                return Err(AllocError::PortCollision {
                    ip: *ip,
                    with: fmt_key(h),
                    protocol: protocol.clone(),
                    port: *port,
                });
            }
            // MetalLB's rule: with Local the backends are the selected pods, so a Local Service
            // shares only with Local Services selecting the same pods, never with a Cluster one.
            if req.local_traffic != a.local_traffic {
                return Err(AllocError::TrafficPolicyMismatch {
                    ip: *ip,
                    with: fmt_key(h),
                });
            }
            if req.local_traffic && (req.selector.is_empty() || req.selector != a.selector) {
                return Err(AllocError::SelectorMismatch {
                    ip: *ip,
                    with: fmt_key(h),
                });
            }
        }
        Ok(())
    }

    fn pick(
        &self,
        req: &ServiceRequest,
        f: Family,
        cur: Option<IpAddr>,
    ) -> Result<IpAddr, AllocError> {
        if let Some(ip) = req.requested.iter().find(|ip| Family::of(ip) == f).copied() {
            if cur == Some(ip) {
                self.shareable(&ip, req)?;
                return Ok(ip);
            }
            let pool = self
                .pools
                .values()
                .find(|p| p.contains(&ip))
                .ok_or(AllocError::NotInAnyPool(ip))?;
            if let Some(want) = &req.pool
                && *want != pool.name
            {
                return Err(AllocError::NotInRequestedPool {
                    ip,
                    pool: want.clone(),
                });
            }
            pool.admits(req).map_err(|why| AllocError::PoolNotAllowed {
                pool: pool.name.clone(),
                why,
            })?;
            if pool.avoid_buggy_ips && is_buggy(f, to_u128(&ip)) {
                return Err(AllocError::AvoidedAddress {
                    ip,
                    pool: pool.name.clone(),
                });
            }
            self.shareable(&ip, req)?;
            return Ok(ip);
        }
        if let Some(ip) = cur {
            // Keep what the Service has unless its `ip-pool` annotation names another usable
            // pool than the one the address is in. Decided from the address, not from what
            // this process remembers, so an annotation changed while the controller was down
            // is acted on, and a restart decides as a running controller would. An address in
            // no pool (after a pool edit) stays unless this process saw the annotation change.
            let asked_before = self.services.get(&req.key).map(|a| a.pool.as_ref());
            let keep = match &req.pool {
                None => true,
                Some(want) => match self.pool_of(&ip) {
                    Some(p) => p == want.as_str(),
                    None => asked_before.is_none_or(|b| b == Some(want)),
                },
            };
            if keep {
                self.shareable(&ip, req)?;
                return Ok(ip);
            }
        }
        let candidates: Vec<&Pool> = match &req.pool {
            Some(name) => {
                let Some(p) = self.pools.get(name) else {
                    return Err(match self.problems.get(name) {
                        Some(problem) => AllocError::PoolNotReady {
                            pool: name.clone(),
                            problem: problem.clone(),
                        },
                        None => AllocError::UnknownPool(name.clone()),
                    });
                };
                p.admits(req).map_err(|why| AllocError::PoolNotAllowed {
                    pool: name.clone(),
                    why,
                })?;
                vec![p]
            }
            None => {
                let mut v: Vec<&Pool> = self
                    .pools
                    .values()
                    .filter(|p| p.auto_assign && p.admits(req).is_ok())
                    .collect();
                v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
                v
            }
        };
        let candidates: Vec<&Pool> = candidates.into_iter().filter(|p| p.has(f)).collect();
        if candidates.is_empty() {
            return Err(AllocError::NoPoolForFamily(f));
        }
        // Join an address already used under the same sharing key, if the rules allow it.
        if let Some(key) = &req.sharing_key
            && let Some(ips) = self.by_key.get(key)
        {
            for p in &candidates {
                for ip in ips
                    .iter()
                    .filter(|ip| Family::of(ip) == f && p.contains(ip))
                {
                    if self.shareable(ip, req).is_ok() {
                        return Ok(*ip);
                    }
                }
            }
        }
        let used = &self.used[f.idx()];
        for p in &candidates {
            let avoid = p.avoid_buggy_ips;
            for &(s, e) in &p.ranges[f.idx()] {
                if let Some(x) = used.first_free(s, e, |x| avoid && is_buggy(f, x)) {
                    return Ok(from_u128(f, x));
                }
            }
        }
        Err(AllocError::Exhausted(f))
    }

    /// Give `req` its addresses: keep what it has where still valid, else allocate. On error the
    /// Service keeps its current addresses (nothing is released).
    pub fn ensure(&mut self, req: &ServiceRequest) -> Result<Vec<IpAddr>, AllocError> {
        self.ensure_detailed(req).map(|g| g.ips)
    }

    /// [`Allocator::ensure`], also saying which held addresses were kept although their family's
    /// request failed (PreferDualStack: the Service gets an Event, not a lost address).
    ///
    /// What the Service holds is the table's entry or, when the table does not know it, the
    /// addresses in its status (`req.status`): an address in status is the Service's own on
    /// every reconcile, not only at start-up, and is recorded as at start-up (see
    /// [`Allocator::restore`]) even if the rest of the request fails, so nobody else takes an
    /// address the Service still shows. One held by another Service is reported
    /// (`AddressInUse`), never silently replaced.
    pub fn ensure_detailed(&mut self, req: &ServiceRequest) -> Result<Granted, AllocError> {
        let mut cur: Vec<IpAddr> = vec![];
        if !self.services.contains_key(&req.key) && !req.status.is_empty() {
            // A conflict is reported below, by the family's pick.
            let _ = self.restore(req, &req.status);
            cur = self
                .services
                .get(&req.key)
                .map(|a| a.ips.clone())
                .unwrap_or_default();
            for ip in &req.status {
                if !cur.iter().any(|c| Family::of(c) == Family::of(ip)) {
                    cur.push(*ip);
                }
            }
        } else if let Some(a) = self.services.get(&req.key) {
            cur = a.ips.clone();
        }
        validate(req)?;
        let mut got = vec![];
        let mut errs = vec![];
        let mut kept = vec![];
        for f in req.wanted_families() {
            let cur_f = cur.iter().find(|ip| Family::of(ip) == f).copied();
            match (self.pick(req, f, cur_f), cur_f) {
                (Ok(ip), _) => got.push(ip),
                // Keep it only if it is ours already or nobody else holds it: keeping must never
                // make two Services hold one address against the sharing rules.
                (Err(e), Some(held))
                    if req.policy == FamilyPolicy::PreferDualStack
                        && (self.holds(&req.key, &held) || self.shareable(&held, req).is_ok()) =>
                {
                    got.push(held);
                    kept.push((held, e));
                }
                // A held address that can be neither kept nor picked again (another Service
                // took it while this one was away): the whole request fails and is reported,
                // so the Service does not silently lose a family.
                (Err(e), Some(_)) if req.policy == FamilyPolicy::PreferDualStack => return Err(e),
                (Err(e), _) => errs.push(e),
            }
        }
        let ok = match req.policy {
            FamilyPolicy::SingleStack | FamilyPolicy::PreferDualStack => !got.is_empty(),
            FamilyPolicy::RequireDualStack => errs.is_empty(),
        };
        if !ok {
            let e = errs.remove(0);
            return Err(
                if req.policy == FamilyPolicy::RequireDualStack && !got.is_empty() {
                    AllocError::DualStackIncomplete(Box::new(e))
                } else {
                    e
                },
            );
        }
        self.commit(req, got.clone());
        Ok(Granted { ips: got, kept })
    }

    fn commit(&mut self, req: &ServiceRequest, ips: Vec<IpAddr>) {
        let old = self.services.remove(&req.key);
        if let Some(old) = &old {
            for ip in &old.ips {
                self.unhold(&req.key, ip, old.sharing_key.as_deref());
            }
        }
        for ip in &ips {
            self.used[Family::of(ip).idx()].insert(to_u128(ip));
            let h = self.holders.entry(*ip).or_default();
            if let Err(pos) = h.binary_search(&req.key) {
                h.insert(pos, req.key.clone());
            }
            if let Some(k) = &req.sharing_key {
                self.by_key.entry(k.clone()).or_default().insert(*ip);
            }
        }
        self.services.insert(
            req.key.clone(),
            Assigned {
                ips,
                pool: req.pool.clone(),
                sharing_key: req.sharing_key.clone(),
                ports: req.ports.clone(),
                local_traffic: req.local_traffic,
                selector: req.selector.clone(),
            },
        );
    }

    fn unhold(&mut self, key: &SvcKey, ip: &IpAddr, sharing_key: Option<&str>) {
        if let Some(h) = self.holders.get_mut(ip) {
            h.retain(|k| k != key);
            if h.is_empty() {
                self.holders.remove(ip);
                self.used[Family::of(ip).idx()].remove(to_u128(ip));
                if let Some(k) = sharing_key
                    && let Some(set) = self.by_key.get_mut(k)
                {
                    set.remove(ip);
                    if set.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
        }
    }

    fn holds(&self, key: &SvcKey, ip: &IpAddr) -> bool {
        self.holders.get(ip).is_some_and(|h| h.contains(key))
    }

    /// Release everything `key` holds (Service deleted, no longer LoadBalancer, other class).
    pub fn release(&mut self, key: &SvcKey) -> Option<Vec<IpAddr>> {
        let old = self.services.remove(key)?;
        for ip in &old.ips {
            self.unhold(key, ip, old.sharing_key.as_deref());
        }
        Some(old.ips)
    }

    /// Rebuild the table from a Service's existing status (controller start). Status is the
    /// truth: the addresses are recorded as they are, even outside every pool (see `orphans`).
    /// An address that breaks the sharing rules with a Service restored before (two Services
    /// showing one address, or an edit made while the controller was down) is not recorded:
    /// the conflict is returned for reporting, and every `ensure` of that Service reports it
    /// again (its status is adopted once the other holder lets go) instead of moving it.
    pub fn restore(&mut self, req: &ServiceRequest, ips: &[IpAddr]) -> Result<(), AllocError> {
        let mut seen = BTreeSet::new();
        let mut conflict = None;
        let ips: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| seen.insert(Family::of(ip)))
            .filter(|ip| match self.shareable(ip, req) {
                Ok(()) => true,
                Err(e) => {
                    conflict.get_or_insert(e);
                    false
                }
            })
            .collect();
        if !ips.is_empty() {
            self.commit(req, ips);
        }
        conflict.map_or(Ok(()), Err)
    }
}

fn validate(req: &ServiceRequest) -> Result<(), AllocError> {
    let mut fams = BTreeSet::new();
    let wanted = req.wanted_families();
    for ip in &req.requested {
        if !fams.insert(Family::of(ip)) {
            return Err(AllocError::InvalidRequest(format!(
                "more than one {} address requested",
                Family::of(ip)
            )));
        }
        if !wanted.contains(&Family::of(ip)) {
            return Err(AllocError::InvalidRequest(format!(
                "requested {} address {ip}, but the Service is SingleStack {}",
                Family::of(ip),
                wanted[0]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use leafbridge_api::crd::ServiceAllocation;

    fn pool(addrs: &[&str]) -> IPPoolSpec {
        IPPoolSpec {
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            ..Default::default()
        }
    }

    fn svc(name: &str) -> ServiceRequest {
        ServiceRequest {
            key: ("default".into(), name.into()),
            ports: vec![("TCP".into(), 80)],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn runs_merge_split_and_find_first_gap() {
        let mut r = Runs::default();
        for x in [5, 7, 6, 1, 2] {
            r.insert(x);
        }
        assert_eq!(r.0, BTreeMap::from([(1, 2), (5, 7)]));
        assert_eq!(r.first_free(1, 10, |_| false), Some(3));
        assert_eq!(r.first_free(5, 10, |_| false), Some(8));
        assert_eq!(r.first_free(5, 7, |_| false), None);
        r.remove(6);
        assert_eq!(r.0, BTreeMap::from([(1, 2), (5, 5), (7, 7)]));
        assert_eq!(r.count_in(2, 7), 3);
        r.insert(u128::MAX);
        assert_eq!(r.first_free(u128::MAX, u128::MAX, |_| false), None);
    }

    #[test]
    fn gives_lowest_free_address_and_reuses_released_ones() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.10-203.0.113.12"]);
        a.set_pools([("p", &p)]);
        assert_eq!(a.ensure(&svc("a")).unwrap(), [ip("203.0.113.10")]);
        assert_eq!(a.ensure(&svc("b")).unwrap(), [ip("203.0.113.11")]);
        assert_eq!(
            a.ensure(&svc("a")).unwrap(),
            [ip("203.0.113.10")],
            "idempotent"
        );
        a.release(&svc("a").key);
        assert_eq!(a.ensure(&svc("c")).unwrap(), [ip("203.0.113.10")]);
        assert_eq!(a.ensure(&svc("d")).unwrap(), [ip("203.0.113.12")]);
        assert_eq!(
            a.ensure(&svc("e")),
            Err(AllocError::Exhausted(Family::IPv4))
        );
    }

    #[test]
    fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
        let mut a = Allocator::new();
        let mut p = pool(&["100.64.0.255-100.64.1.1"]);
        p.avoid_buggy_ips = true;
        a.set_pools([("p", &p)]);
        assert_eq!(a.ensure(&svc("a")).unwrap(), [ip("100.64.1.1")]);
        assert_eq!(a.stats("p").total(Family::IPv4), 1);
    }

    #[test]
    fn ipv6_slash_64_is_not_enumerated() {
        let mut a = Allocator::new();
        let p = pool(&["2001:db8::/64"]);
        a.set_pools([("p", &p)]);
        let mut s = svc("a");
        s.ip_families = vec![Family::IPv6];
        assert_eq!(a.ensure(&s).unwrap(), [ip("2001:db8::")]);
        assert_eq!(a.stats("p").available(Family::IPv6), (1u128 << 64) - 1);
    }

    #[test]
    fn require_dual_stack_fails_without_both_families_prefer_takes_what_exists() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/30"]);
        a.set_pools([("p", &p)]);
        let mut s = svc("a");
        s.policy = FamilyPolicy::RequireDualStack;
        assert!(matches!(
            a.ensure(&s),
            Err(AllocError::DualStackIncomplete(_))
        ));
        assert!(a.get(&s.key).is_none());
        s.policy = FamilyPolicy::PreferDualStack;
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.0")]);
        let p6 = pool(&["2001:db8::/120"]);
        a.set_pools([("p", &p), ("q", &p6)]);
        s.policy = FamilyPolicy::RequireDualStack;
        s.ip_families = vec![Family::IPv6, Family::IPv4];
        assert_eq!(a.ensure(&s).unwrap(), [ip("2001:db8::"), ip("203.0.113.0")]);
    }

    #[test]
    fn sharing_needs_same_key_distinct_ports_and_same_selector_for_local_traffic() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24"]);
        a.set_pools([("p", &p)]);
        let mut x = svc("x");
        x.sharing_key = Some("k".into());
        x.selector = BTreeMap::from([("app".into(), "web".into())]);
        let got = a.ensure(&x).unwrap();
        let mut y = x.clone();
        y.key.1 = "y".into();
        assert!(
            matches!(a.ensure(&y), Ok(v) if v != got),
            "same port: no sharing, a new address"
        );
        a.release(&y.key);
        y.ports = vec![("UDP".into(), 80)];
        assert_eq!(a.ensure(&y).unwrap(), got, "different protocol: shares");
        let mut z = x.clone();
        z.key.1 = "z".into();
        z.ports = vec![("TCP".into(), 443)];
        z.requested = got.clone();
        z.local_traffic = true;
        assert!(
            matches!(a.ensure(&z), Err(AllocError::TrafficPolicyMismatch { .. })),
            "a Local Service never shares with a Cluster one, even selecting the same pods"
        );
        let mut l1 = z.clone();
        l1.key.1 = "l1".into();
        l1.requested = vec![];
        l1.sharing_key = Some("local".into());
        let local_ip = a.ensure(&l1).unwrap();
        let mut l2 = l1.clone();
        l2.key.1 = "l2".into();
        l2.ports = vec![("TCP".into(), 8443)];
        l2.requested = local_ip.clone();
        l2.selector = BTreeMap::from([("app".into(), "other".into())]);
        assert!(matches!(
            a.ensure(&l2),
            Err(AllocError::SelectorMismatch { .. })
        ));
        l2.selector = l1.selector.clone();
        assert_eq!(a.ensure(&l2).unwrap(), local_ip);
        let mut w = svc("w");
        w.requested = got.clone();
        assert!(matches!(a.ensure(&w), Err(AllocError::AddressInUse { .. })));
    }

    #[test]
    fn pools_are_chosen_by_annotation_priority_and_selection() {
        let mut a = Allocator::new();
        let mut hi = pool(&["203.0.113.128/25"]);
        hi.service_allocation = Some(ServiceAllocation {
            priority: Some(1),
            namespaces: vec!["prod".into()],
            ..Default::default()
        });
        let lo = pool(&["203.0.113.0/25"]);
        let mut manual = pool(&["100.64.0.0/24"]);
        manual.auto_assign = false;
        a.set_pools([("hi", &hi), ("lo", &lo), ("manual", &manual)]);
        let mut s = svc("a");
        assert_eq!(
            a.ensure(&s).unwrap(),
            [ip("203.0.113.0")],
            "not in prod: hi does not admit it"
        );
        s.key.0 = "prod".into();
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.128")]);
        let mut m = svc("m");
        m.pool = Some("manual".into());
        assert_eq!(a.ensure(&m).unwrap(), [ip("100.64.0.0")]);
        m.pool = Some("nope".into());
        assert_eq!(a.ensure(&svc("zz")).unwrap(), [ip("203.0.113.1")]);
        let mut n = svc("n");
        n.pool = Some("nope".into());
        assert_eq!(a.ensure(&n), Err(AllocError::UnknownPool("nope".into())));
    }

    #[test]
    fn overlapping_and_invalid_pools_are_reported_and_not_used() {
        let mut a = Allocator::new();
        let p1 = pool(&["203.0.113.0/24"]);
        let p2 = pool(&["203.0.113.128-203.0.113.130"]);
        let p3 = pool(&["203.0.113.5/24"]);
        a.set_pools([("b", &p2), ("a", &p1), ("c", &p3)]);
        assert_eq!(
            a.pool_problem("b"),
            Some(&PoolProblem::Overlap { other: "a".into() })
        );
        assert!(matches!(
            a.pool_problem("c"),
            Some(PoolProblem::InvalidAddresses(_))
        ));
        assert_eq!(a.pool_problem("a"), None);
    }

    #[test]
    fn pool_edit_never_moves_a_service() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24"]);
        a.set_pools([("p", &p)]);
        let s = svc("a");
        let got = a.ensure(&s).unwrap();
        let p2 = pool(&["100.64.0.0/24"]);
        a.set_pools([("p", &p2)]);
        assert_eq!(a.ensure(&s).unwrap(), got);
        assert_eq!(a.orphans(&s.key), got);
    }

    #[test]
    fn pool_selectors_match_namespace_and_service_labels() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let sel = |k: &str, v: &str| LabelSelector {
            match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
            ..Default::default()
        };
        let mut p = pool(&["203.0.113.0/24"]);
        p.service_allocation = Some(ServiceAllocation {
            namespace_selectors: vec![sel("office", "true")],
            service_selectors: vec![sel("expose", "office")],
            ..Default::default()
        });
        let mut a = Allocator::new();
        a.set_pools([("p", &p)]);
        let mut s = svc("a");
        assert_eq!(a.ensure(&s), Err(AllocError::NoPoolForFamily(Family::IPv4)));
        s.pool = Some("p".into());
        assert!(matches!(
            a.ensure(&s),
            Err(AllocError::PoolNotAllowed { .. })
        ));
        s.namespace_labels = BTreeMap::from([("office".into(), "true".into())]);
        assert!(matches!(
            a.ensure(&s),
            Err(AllocError::PoolNotAllowed { .. })
        ));
        s.labels = BTreeMap::from([("expose".into(), "office".into())]);
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.0")]);
        let mut bad = pool(&["100.64.0.0/24"]);
        bad.service_allocation = Some(ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "x".into(),
                        operator: "Sometimes".into(),
                        values: None,
                    },
                ]),
                ..Default::default()
            }],
            ..Default::default()
        });
        a.set_pools([("p", &p), ("q", &bad)]);
        assert_eq!(
            a.pool_problem("q").map(PoolProblem::reason),
            Some("InvalidSelector")
        );
    }

    #[test]
    fn a_service_reappearing_with_status_keeps_that_address() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24"]);
        a.set_pools([("p", &p)]);
        // Seen for the first time (file fixed after start, moved between files, re-list):
        // the address in its status is its own, not the lowest free one.
        let mut s = svc("a");
        s.status = vec![ip("203.0.113.77")];
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.77")]);
        assert_eq!(a.ensure(&svc("b")).unwrap(), [ip("203.0.113.0")]);
        // Deleted and seen again (a move processed as delete + apply): the same address.
        a.release(&s.key);
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.77")]);
    }

    #[test]
    fn an_address_in_status_held_by_another_service_is_reported_not_moved() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24"]);
        a.set_pools([("p", &p)]);
        let first = a.ensure(&svc("a")).unwrap();
        let mut b = svc("b");
        b.status = first.clone();
        assert_eq!(
            a.ensure(&b),
            Err(AllocError::AddressInUse {
                ip: first[0],
                by: "default/a".into()
            })
        );
        assert!(a.get(&b.key).is_none(), "b is not given another address");
    }

    #[test]
    fn prefer_dual_stack_keeps_a_held_family_when_its_request_fails() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24", "2001:db8::/120"]);
        a.set_pools([("p", &p)]);
        let mut s = svc("a");
        s.policy = FamilyPolicy::PreferDualStack;
        s.ip_families = vec![Family::IPv4, Family::IPv6];
        let held = a.ensure(&s).unwrap();
        assert_eq!(held, [ip("203.0.113.0"), ip("2001:db8::")]);
        let mut other = svc("b");
        other.ip_families = vec![Family::IPv6];
        let taken = a.ensure(&other).unwrap()[0];
        // The Service now asks for an IPv6 address that is taken: it keeps the one it has.
        s.requested = vec![taken];
        let g = a.ensure_detailed(&s).unwrap();
        assert_eq!(g.ips, held);
        assert_eq!(g.kept.len(), 1);
        assert_eq!(g.kept[0].0, ip("2001:db8::"));
        assert_eq!(g.kept[0].1.reason(), "AddressInUse");
        assert_eq!(a.get(&s.key).unwrap().ips, held);
    }

    #[test]
    fn a_single_stack_ipv6_service_never_gets_ipv4() {
        let mut a = Allocator::new();
        let p = pool(&["203.0.113.0/24", "2001:db8::/120"]);
        a.set_pools([("p", &p)]);
        let mut s = svc("a");
        s.ip_families = vec![Family::IPv6];
        s.requested = vec![ip("203.0.113.9")];
        assert!(matches!(a.ensure(&s), Err(AllocError::InvalidRequest(_))));
        s.requested = vec![];
        assert_eq!(a.ensure(&s).unwrap(), [ip("2001:db8::")]);
    }

    #[test]
    fn dot_zero_and_dot_255_cannot_be_requested_from_an_avoid_buggy_ips_pool() {
        let mut a = Allocator::new();
        let mut p = pool(&["203.0.113.0/24"]);
        p.avoid_buggy_ips = true;
        a.set_pools([("p", &p)]);
        for bad in ["203.0.113.0", "203.0.113.255"] {
            let mut s = svc(bad);
            s.requested = vec![ip(bad)];
            assert_eq!(a.ensure(&s).unwrap_err().reason(), "AddressAvoided");
        }
        let mut s = svc("ok");
        s.requested = vec![ip("203.0.113.1")];
        assert_eq!(a.ensure(&s).unwrap(), [ip("203.0.113.1")]);
    }

    #[test]
    fn an_ip_pool_annotation_changed_while_the_controller_was_down_is_acted_on() {
        let p1 = pool(&["203.0.113.0/24"]);
        let p2 = pool(&["100.64.0.0/24"]);
        let mut a = Allocator::new();
        a.set_pools([("one", &p1), ("two", &p2)]);
        let mut s = svc("a");
        s.pool = Some("one".into());
        let got = a.ensure(&s).unwrap();
        // Restart: the Service's annotation now names "two"; its status still shows "one"'s.
        s.pool = Some("two".into());
        s.status = got.clone();
        let mut b = Allocator::new();
        b.set_pools([("one", &p1), ("two", &p2)]);
        b.restore(&s, &got).unwrap();
        assert_eq!(b.ensure(&s).unwrap(), [ip("100.64.0.0")]);
        // And without a restart: the same.
        assert_eq!(a.ensure(&s).unwrap(), [ip("100.64.0.0")]);
    }

    #[test]
    fn overlapping_pools_are_settled_by_age_not_by_name() {
        let ts = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let old = pool(&["203.0.113.0/24"]);
        let typo = pool(&["203.0.0.0/16"]);
        let mut a = Allocator::new();
        // "a-typo" sorts first by name but is newer: the pool in use keeps working.
        a.set_pools_dated([
            ("office", &old, ts("2026-01-01T00:00:00Z")),
            ("a-typo", &typo, ts("2026-06-01T00:00:00Z")),
        ]);
        assert_eq!(a.pool_problem("office"), None);
        assert_eq!(
            a.pool_problem("a-typo"),
            Some(&PoolProblem::Overlap {
                other: "office".into()
            })
        );
        // Without timestamps (a state directory), the pool that was already usable wins.
        let mut b = Allocator::new();
        b.set_pools([("office", &old)]);
        b.set_pools([("office", &old), ("a-typo", &typo)]);
        assert_eq!(b.pool_problem("office"), None);
        assert_eq!(
            b.pool_problem("a-typo").map(PoolProblem::reason),
            Some("Overlap")
        );
    }
}
