//! The Adj-RIB-Out (RFC 4271 §3.2): what one peer has been sent, and the fewest UPDATEs that
//! turn it into what the peer should have.
//!
//! Pure: `AdjRibOut::set_desired` compares the desired routes with what was sent and returns the
//! `Changes`; `AdjRibOut::updates` packs changes into UPDATE messages. Announced prefixes are
//! grouped by identical path attributes and packed as densely as the negotiated maximum message
//! length allows (4096 octets, 65535 with RFC 8654 extended messages); IPv4 withdrawals travel in
//! the withdrawn routes field, filling the spare room of announcing UPDATEs first, IPv6 ones in
//! MP_UNREACH_NLRI (RFC 4760 §4).
//!
//! A session uses one `AdjRibOut` per connection: after a reconnect it starts empty ("re-sync"),
//! so everything desired is sent again, followed by End-of-RIB (RFC 4724 §2). A ROUTE-REFRESH
//! (RFC 2918) is answered from what was sent, unchanged.
//!
//! Sending at the pace of the socket: `queue_desired` records what must change (the "outbox")
//! without encoding anything, and `next_updates` hands out the next batch when the socket can
//! take it, counting those routes as sent only then. A desired set that changes again before
//! the outbox is empty replaces the outbox (the diff is always against what was handed to the
//! socket), so changes coalesce instead of queueing up; ROUTE-REFRESH answers walk the sent
//! routes with a cursor, and repeated requests during one answer merge into one more pass.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Bound;

use ipnet::IpNet;

use super::codec::{CodecContext, HEADER_LEN, path_attributes_len};
use super::fsm::Negotiated;
use super::message::{
    AddressFamily, AsPath, AsPathSegment, LargeCommunity, MpReach, MpUnreach, Origin,
    PathAttributes, Update,
};

/// RFC 4271 §5.1.5 leaves the default LOCAL_PREF to the operator; 100 is what every major
/// implementation uses, and iBGP UPDATEs must carry one.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// One route we announce: a prefix and the attributes that vary per route. ORIGIN (IGP) and
/// AS_PATH (our AS for eBGP, empty for iBGP) are the same for every route and added on export.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub prefix: IpNet,
    /// The node that carries the traffic. For an IPv6 prefix with an IPv4 next hop, the session's
    /// IPv6 next hop is used (see `ExportPolicy::ipv6_next_hop`).
    pub next_hop: IpAddr,
    /// COMMUNITIES (RFC 1997), sorted and without duplicates (see `Route::normalize`).
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY (RFC 8092), sorted and without duplicates.
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF, sent to internal peers only (RFC 4271 §5.1.5); default 100 there.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    pub med: Option<u32>,
}

impl Route {
    pub fn new(prefix: IpNet, next_hop: IpAddr) -> Self {
        Self {
            prefix: prefix.trunc(),
            next_hop,
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
            med: None,
        }
    }

    /// Put the route in canonical form: host bits of the prefix cleared, communities sorted and
    /// deduplicated, so that routes meaning the same thing compare equal (communities are a set,
    /// RFC 1997; the order of a COMMUNITIES attribute carries no meaning).
    pub fn normalize(&mut self) {
        self.prefix = self.prefix.trunc();
        self.communities.sort_unstable();
        self.communities.dedup();
        self.large_communities.sort_unstable();
        self.large_communities.dedup();
    }

    pub fn normalized(mut self) -> Self {
        self.normalize();
        self
    }

    pub fn family(&self) -> AddressFamily {
        family_of(&self.prefix)
    }
}

fn family_of(prefix: &IpNet) -> AddressFamily {
    match prefix {
        IpNet::V4(_) => AddressFamily::IPV4_UNICAST,
        IpNet::V6(_) => AddressFamily::IPV6_UNICAST,
    }
}

/// The desired routes of one peer, by prefix.
pub type RouteSet = BTreeMap<IpNet, Route>;

/// How routes are turned into UPDATEs for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPolicy {
    pub local_as: u32,
    /// Internal peer: empty AS_PATH, LOCAL_PREF sent (RFC 4271 §5.1.2, §5.1.5).
    pub ibgp: bool,
    /// What the session negotiated (maximum message length, 4-octet AS).
    pub codec: CodecContext,
    /// Families negotiated on the session; routes of other families are not sent.
    pub families: Vec<AddressFamily>,
    /// Next hop for IPv6 prefixes whose route names an IPv4 next hop (an IPv6 prefix over an
    /// IPv4-only node). Without one such routes are not sent (`Unexportable::NoIpv6NextHop`).
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// (global, link-local): IPv6 routes whose next hop is this global address of ours also
    /// carry this link-local one (RFC 2545 §3: the peer shares our subnet).
    pub link_local_next_hop: Option<(Ipv6Addr, Ipv6Addr)>,
}

impl ExportPolicy {
    pub fn from_negotiated(n: &Negotiated, ipv6_next_hop: Option<Ipv6Addr>) -> Self {
        Self {
            local_as: n.local_as,
            ibgp: n.is_ibgp(),
            codec: n.codec_context(),
            families: n.families.clone(),
            ipv6_next_hop,
            link_local_next_hop: None,
        }
    }

    /// Why `route` cannot be sent on this session, if it cannot.
    pub fn check(&self, route: &Route) -> Result<(), Unexportable> {
        let family = route.family();
        if !self.families.contains(&family) {
            return Err(Unexportable::FamilyNotNegotiated(family));
        }
        if matches!(route.prefix, IpNet::V4(_)) && route.next_hop.is_ipv6() {
            // RFC 8950 (IPv4 NLRI with IPv6 next hop) is not implemented.
            return Err(Unexportable::Ipv6NextHopForIpv4Prefix);
        }
        if matches!(route.prefix, IpNet::V6(_))
            && route.next_hop.is_ipv4()
            && self.ipv6_next_hop.is_none()
        {
            // `::ffff:a.b.c.d` is no address a switch can resolve.
            return Err(Unexportable::NoIpv6NextHop);
        }
        // Thousands of communities would not fit one UPDATE with a single prefix.
        let attribute_bytes = 4 * route.communities.len() + 12 * route.large_communities.len();
        if attribute_bytes > 512 {
            let key = GroupKey::of(route, self);
            let len = HEADER_LEN + 4 + self.attributes(&key).len(&self.codec) + 17 + 8;
            if len > self.codec.max_message_len() {
                return Err(Unexportable::AttributesTooLong(len));
            }
        }
        Ok(())
    }

    fn attributes(&self, key: &GroupKey<'_>) -> GroupAttributes {
        let as_path = if self.ibgp {
            AsPath::default()
        } else {
            AsPath {
                segments: vec![AsPathSegment::Sequence(vec![self.local_as])],
            }
        };
        let mut attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(as_path),
            next_hop: None,
            med: key.med,
            // RFC 4271 §5.1.5: "A BGP speaker MUST NOT include this attribute in UPDATE messages
            // it sends to external peers" and "SHALL include this attribute in all UPDATE
            // messages that it sends to other internal peers".
            local_pref: self
                .ibgp
                .then(|| key.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
            communities: key.communities.to_vec(),
            large_communities: key.large_communities.to_vec(),
            mp_reach: None,
            mp_unreach: None,
            other: Vec::new(),
        };
        match key.next_hop {
            IpAddr::V4(nh) if !key.ipv6 => attributes.next_hop = Some(nh),
            next_hop => {
                let link_local_next_hop = self
                    .link_local_next_hop
                    .filter(|(global, _)| next_hop == IpAddr::V6(*global))
                    .map(|(_, ll)| IpAddr::V6(ll));
                attributes.mp_reach = Some(MpReach {
                    family: AddressFamily::IPV6_UNICAST,
                    next_hop,
                    link_local_next_hop,
                    nlri: Vec::new(),
                });
            }
        }
        GroupAttributes { attributes }
    }

    fn ipv6_next_hop_for(&self, v4: Ipv4Addr) -> Ipv6Addr {
        self.ipv6_next_hop.unwrap_or_else(|| v4.to_ipv6_mapped())
    }
}

/// A route that cannot be sent on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unexportable {
    #[error("address family {0:?} was not negotiated with the peer")]
    FamilyNotNegotiated(AddressFamily),
    #[error("IPv4 prefix with an IPv6 next hop (RFC 8950) is not supported")]
    Ipv6NextHopForIpv4Prefix,
    #[error("IPv6 prefix with an IPv4 next hop and no IPv6 next hop configured for the session")]
    NoIpv6NextHop,
    #[error("path attributes make an UPDATE of {0} octets, above the maximum message length")]
    AttributesTooLong(usize),
}

/// The difference between what a peer has and what it should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Prefixes of new routes and of routes whose attributes changed (an announcement replaces
    /// the old one, RFC 4271 §3.1: "implicit withdraw"). Their routes are in
    /// `AdjRibOut::routes()`: prefixes rather than copies keep a 100k-route sync small.
    pub announce: Vec<IpNet>,
    /// Prefixes the peer must forget.
    pub withdraw: Vec<IpNet>,
    /// Desired routes that cannot be sent on this session, with the reason.
    pub unexportable: Vec<(IpNet, Unexportable)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// The attributes every prefix of a group shares (with MP_REACH carrying no NLRI yet).
struct GroupAttributes {
    attributes: PathAttributes,
}

impl GroupAttributes {
    fn len(&self, ctx: &CodecContext) -> usize {
        path_attributes_len(&self.attributes, ctx)
    }
}

/// What makes two routes share an UPDATE: everything but the prefix, after export rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey<'a> {
    ipv6: bool,
    next_hop: IpAddr,
    med: Option<u32>,
    local_pref: Option<u32>,
    communities: &'a [u32],
    large_communities: &'a [LargeCommunity],
}

impl<'a> GroupKey<'a> {
    fn of(route: &'a Route, policy: &ExportPolicy) -> Self {
        let ipv6 = matches!(route.prefix, IpNet::V6(_));
        let next_hop = match route.next_hop {
            IpAddr::V4(v4) if ipv6 => IpAddr::V6(policy.ipv6_next_hop_for(v4)),
            other => other,
        };
        Self {
            ipv6,
            next_hop,
            med: route.med,
            // Not sent to external peers, so it must not split groups there.
            local_pref: if policy.ibgp { route.local_pref } else { None },
            communities: &route.communities,
            large_communities: &route.large_communities,
        }
    }
}

/// Octets of a prefix in NLRI encoding (RFC 4271 §4.3): length octet plus the significant bytes.
fn nlri_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

/// Path attribute header for a value of `value_len` octets (RFC 4271 §4.3: the Extended Length
/// bit gives a two-octet length above 255).
fn attribute_header_len(value_len: usize) -> usize {
    if value_len > 255 { 4 } else { 3 }
}

/// UPDATE header: message header, withdrawn routes length, total path attribute length.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 2 + 2;

/// AFI (2) + SAFI (1) at the start of MP_REACH_NLRI and MP_UNREACH_NLRI.
const AFI_SAFI_LEN: usize = 3;

/// What one peer has been sent.
///
/// Routes are kept as prefix → attribute set id: the attribute sets (next hop, communities,
/// LOCAL_PREF, MED) are interned, since a large table shares a handful of them, so a route
/// costs its prefix and four octets here rather than a whole `Route`.
#[derive(Debug, Clone)]
pub struct AdjRibOut {
    policy: ExportPolicy,
    sent: BTreeMap<IpNet, AttrId>,
    table: AttributeTable,
    outbox: Outbox,
}

/// Index of an attribute set in an `AttributeTable`.
type AttrId = u32;

/// Everything of a `Route` but its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Attributes {
    next_hop: IpAddr,
    communities: Vec<u32>,
    large_communities: Vec<LargeCommunity>,
    local_pref: Option<u32>,
    med: Option<u32>,
}

impl Attributes {
    fn of(route: Route) -> (IpNet, Self) {
        let Route {
            prefix,
            next_hop,
            communities,
            large_communities,
            local_pref,
            med,
        } = route;
        (
            prefix,
            Self {
                next_hop,
                communities,
                large_communities,
                local_pref,
                med,
            },
        )
    }

    fn route(&self, prefix: IpNet) -> Route {
        Route {
            prefix,
            next_hop: self.next_hop,
            communities: self.communities.clone(),
            large_communities: self.large_communities.clone(),
            local_pref: self.local_pref,
            med: self.med,
        }
    }
}

/// Interned attribute sets with reference counts: every id held in `AdjRibOut::sent` or in the
/// outbox holds one reference, and a set whose count drops to zero is forgotten.
#[derive(Debug, Clone, Default)]
struct AttributeTable {
    ids: HashMap<Attributes, AttrId>,
    sets: Vec<Option<(Attributes, u32)>>,
    free: Vec<AttrId>,
}

impl AttributeTable {
    fn acquire(&mut self, attributes: Attributes) -> AttrId {
        if let Some(&id) = self.ids.get(&attributes) {
            if let Some((_, refs)) = &mut self.sets[id as usize] {
                *refs += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.sets.push(None);
                AttrId::try_from(self.sets.len() - 1).expect("fewer than 2^32 attribute sets")
            }
        };
        self.sets[id as usize] = Some((attributes.clone(), 1));
        self.ids.insert(attributes, id);
        id
    }

    /// One more reference to a set already held.
    fn retain(&mut self, id: AttrId) {
        if let Some((_, refs)) = &mut self.sets[id as usize] {
            *refs += 1;
        }
    }

    fn release(&mut self, id: AttrId) {
        let slot = &mut self.sets[id as usize];
        if let Some((attributes, refs)) = slot {
            *refs -= 1;
            if *refs == 0 {
                self.ids.remove(attributes);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    fn get(&self, id: AttrId) -> &Attributes {
        &self.sets[id as usize]
            .as_ref()
            .expect("ids in use are never freed")
            .0
    }

    fn route(&self, prefix: IpNet, id: AttrId) -> Route {
        self.get(id).route(prefix)
    }
}

/// What is still to be handed to the socket (see the module documentation).
#[derive(Debug, Clone, Default)]
struct Outbox {
    /// New and changed routes, moved into `AdjRibOut::sent` as they are handed out (so every
    /// route is stored once, here or there).
    announce: BTreeMap<IpNet, AttrId>,
    /// Sorted by prefix: routes the peer has and must forget.
    withdraw: VecDeque<IpNet>,
    /// End-of-RIB follows once the changes above are out (the initial sync, RFC 4724 §4).
    end_of_rib: bool,
    /// ROUTE-REFRESH answers in progress.
    refresh: Vec<Refresh>,
}

/// One ROUTE-REFRESH answer (RFC 2918 §4) in progress: the sent routes of `family` after
/// `after` are still to be re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refresh {
    family: AddressFamily,
    after: Option<IpNet>,
    /// Asked again meanwhile: one more full pass when this one ends.
    again: bool,
}

/// What `queue_desired` put in the outbox, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    pub announce: usize,
    pub withdraw: usize,
    /// Desired routes that cannot be sent on this session, with the reason.
    pub unexportable: Vec<(IpNet, Unexportable)>,
}

impl Queued {
    pub fn is_empty(&self) -> bool {
        self.announce == 0 && self.withdraw == 0
    }
}

/// How a ROUTE-REFRESH request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshAnswer {
    /// A new pass over the sent routes of the family starts.
    Started,
    /// A pass is already running: one more follows it, whatever the number of requests.
    Coalesced,
}

impl AdjRibOut {
    /// An empty Adj-RIB-Out for a session that has just reached Established.
    pub fn new(policy: ExportPolicy) -> Self {
        Self {
            policy,
            sent: BTreeMap::new(),
            table: AttributeTable::default(),
            outbox: Outbox::default(),
        }
    }

    pub fn policy(&self) -> &ExportPolicy {
        &self.policy
    }

    /// The routes the peer has been sent (built on demand).
    pub fn routes(&self) -> RouteSet {
        self.sent
            .iter()
            .map(|(p, id)| (*p, self.table.route(*p, *id)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Forget what was sent (a new connection: the peer knows nothing of ours).
    pub fn reset(&mut self) {
        self.sent.clear();
        self.outbox = Outbox::default();
        self.table = AttributeTable::default();
    }

    /// Normalize a desired route and check it can be sent on this session.
    fn exportable(&self, mut route: Route) -> Result<Route, (IpNet, Unexportable)> {
        route.normalize();
        match self.policy.check(&route) {
            Ok(()) => Ok(route),
            Err(why) => Err((route.prefix, why)),
        }
    }

    /// `desired` interned, keyed by canonical prefix (a later route for a prefix wins), with
    /// the routes this session cannot carry left out and listed.
    fn intern_desired(
        &mut self,
        desired: impl IntoIterator<Item = Route>,
        unexportable: &mut Vec<(IpNet, Unexportable)>,
    ) -> BTreeMap<IpNet, AttrId> {
        let mut entries: Vec<(IpNet, AttrId)> = Vec::new();
        // Neighbours nearly always share attributes: compare with the last set before hashing.
        let mut last: Option<AttrId> = None;
        for route in desired {
            match self.exportable(route) {
                Ok(route) => {
                    let (prefix, attributes) = Attributes::of(route);
                    let id = match last {
                        Some(id) if *self.table.get(id) == attributes => {
                            self.table.retain(id);
                            id
                        }
                        _ => self.table.acquire(attributes),
                    };
                    last = Some(id);
                    entries.push((prefix, id));
                }
                Err(e) => unexportable.push(e),
            }
        }
        // Stable: of two routes for one prefix, the later one stays.
        entries.sort_by_key(|(p, _)| *p);
        let mut deduped: Vec<(IpNet, AttrId)> = Vec::with_capacity(entries.len());
        for (p, id) in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == p => {
                    self.table.release(last.1);
                    last.1 = id;
                }
                _ => deduped.push((p, id)),
            }
        }
        // Built from sorted entries the map has full B-tree nodes (see `append_into`).
        deduped.into_iter().collect()
    }

    /// `into.append(from)`, releasing the ids it overwrites. Appending rebuilds the map with
    /// full B-tree nodes; inserting in ascending order one by one leaves them half full.
    fn append_into(
        &mut self,
        into: &mut BTreeMap<IpNet, AttrId>,
        from: &mut BTreeMap<IpNet, AttrId>,
    ) {
        if from.len().saturating_mul(16) < into.len() {
            for (p, id) in std::mem::take(from) {
                if let Some(old) = into.insert(p, id) {
                    self.table.release(old);
                }
            }
            return;
        }
        for (p, _) in from.iter() {
            if let Some(old) = into.get(p) {
                self.table.release(*old);
            }
        }
        into.append(from);
    }

    /// Make `desired` what the peer should have, without sending anything yet: the outbox
    /// becomes the difference between `desired` and what was handed to the socket, replacing
    /// whatever was queued before (so successive changes coalesce). `next_updates` sends it.
    /// Routes are normalized first (host bits cleared); routes this session cannot carry are
    /// left out and listed in `Queued::unexportable`.
    pub fn queue_desired(&mut self, desired: impl IntoIterator<Item = Route>) -> Queued {
        let mut queued = Queued::default();
        for id in std::mem::take(&mut self.outbox.announce).into_values() {
            self.table.release(id);
        }
        let mut announce = self.intern_desired(desired, &mut queued.unexportable);
        let withdraw: VecDeque<IpNet> = self
            .sent
            .keys()
            .filter(|p| !announce.contains_key(p))
            .copied()
            .collect();
        // What the peer already has needs no UPDATE.
        let table = &mut self.table;
        announce.retain(|p, id| {
            let same = self.sent.get(p) == Some(id);
            if same {
                table.release(*id);
            }
            !same
        });
        queued.announce = announce.len();
        queued.withdraw = withdraw.len();
        self.outbox.announce = announce;
        self.outbox.withdraw = withdraw;
        queued
    }

    /// Send End-of-RIB for every negotiated family once the outbox's changes are out.
    pub fn queue_end_of_rib(&mut self) {
        self.outbox.end_of_rib = true;
    }

    /// A ROUTE-REFRESH for `family` (RFC 2918 §4): re-send its routes at the socket's pace.
    pub fn request_refresh(&mut self, family: AddressFamily) -> RefreshAnswer {
        match self.outbox.refresh.iter_mut().find(|r| r.family == family) {
            Some(r) => {
                r.again = true;
                RefreshAnswer::Coalesced
            }
            None => {
                self.outbox.refresh.push(Refresh {
                    family,
                    after: None,
                    again: false,
                });
                RefreshAnswer::Started
            }
        }
    }

    /// Whether `next_updates` has anything left to hand out.
    pub fn has_outstanding(&self) -> bool {
        let o = &self.outbox;
        !o.announce.is_empty() || !o.withdraw.is_empty() || o.end_of_rib || !o.refresh.is_empty()
    }

    /// The next UPDATEs to write, about `budget` octets of NLRI (at least one prefix), now
    /// counted as sent: withdrawals and announcements first, then End-of-RIB, then
    /// ROUTE-REFRESH answers. Empty when there is nothing left.
    pub fn next_updates(&mut self, budget: usize) -> Vec<Update> {
        let mut used = 0;
        let mut withdraw = Vec::new();
        while used < budget
            && let Some(p) = self.outbox.withdraw.pop_front()
        {
            used += nlri_len(&p);
            if let Some(id) = self.sent.remove(&p) {
                self.table.release(id);
            }
            withdraw.push(p);
        }
        let mut announce = BTreeMap::new();
        while used < budget
            && let Some((p, id)) = self.outbox.announce.pop_first()
        {
            used += nlri_len(&p);
            announce.insert(p, id);
        }
        let mut updates = if withdraw.is_empty() && announce.is_empty() {
            Vec::new()
        } else {
            let routes: Vec<Route> = announce
                .iter()
                .map(|(p, id)| self.table.route(*p, *id))
                .collect();
            pack(&self.policy, &routes, &withdraw)
        };
        let mut sent = std::mem::take(&mut self.sent);
        self.append_into(&mut sent, &mut announce);
        self.sent = sent;
        if self.outbox.withdraw.is_empty() {
            self.outbox.withdraw = VecDeque::new();
        }
        let changes_done = self.outbox.withdraw.is_empty() && self.outbox.announce.is_empty();
        if changes_done && self.outbox.end_of_rib {
            self.outbox.end_of_rib = false;
            updates.extend(self.end_of_rib());
        }
        if changes_done && used < budget {
            updates.extend(self.next_refresh(budget - used));
        }
        updates
    }

    /// The next part of the first ROUTE-REFRESH answer in progress.
    fn next_refresh(&mut self, budget: usize) -> Vec<Update> {
        let Some(refresh) = self.outbox.refresh.first_mut() else {
            return Vec::new();
        };
        let family = refresh.family;
        let start = refresh.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut used = 0;
        let mut last = None;
        let mut finished = true;
        let table = &self.table;
        let routes: Vec<Route> = self
            .sent
            .range((start, Bound::Unbounded))
            .filter(|(p, _)| family_of(p) == family)
            .take_while(|(p, _)| {
                if used >= budget {
                    finished = false;
                    return false;
                }
                used += nlri_len(p);
                last = Some(**p);
                true
            })
            .map(|(p, id)| table.route(*p, *id))
            .collect();
        let updates = pack(&self.policy, &routes, &[]);
        if finished {
            if refresh.again {
                refresh.after = None;
                refresh.again = false;
            } else {
                self.outbox.refresh.remove(0);
            }
        } else {
            refresh.after = last;
        }
        updates
    }

    /// Make `desired` what the peer has, returning what must be sent for that. Routes are
    /// normalized first (a route counts under its own `prefix`, host bits cleared, whatever its
    /// map key); routes this session cannot carry are left out and listed in
    /// `Changes::unexportable`. The caller must send `updates(&changes)`.
    pub fn set_desired(&mut self, desired: RouteSet) -> Changes {
        let mut changes = Changes::default();
        let next = self.intern_desired(desired.into_values(), &mut changes.unexportable);
        // One merge pass over two sorted maps.
        let mut old = self.sent.iter().peekable();
        let mut new = next.iter().peekable();
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some((p, _)), None) => {
                    changes.withdraw.push(**p);
                    old.next();
                }
                (None, Some(r)) => {
                    changes.announce.push(*r.0);
                    new.next();
                }
                (Some((po, ro)), Some((pn, rn))) => match po.cmp(pn) {
                    std::cmp::Ordering::Less => {
                        changes.withdraw.push(**po);
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changes.announce.push(**pn);
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if ro != rn {
                            changes.announce.push(**pn);
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
        for id in std::mem::replace(&mut self.sent, next).into_values() {
            self.table.release(id);
        }
        changes
    }

    /// Everything that was sent, as changes: the answer to a ROUTE-REFRESH for `family`
    /// (RFC 2918 §4), or to re-send the whole table.
    pub fn full_table(&self, family: Option<AddressFamily>) -> Changes {
        Changes {
            announce: self
                .sent
                .keys()
                .filter(|p| family.is_none_or(|f| family_of(p) == f))
                .copied()
                .collect(),
            ..Changes::default()
        }
    }

    /// The first sync of a session: every desired route, then End-of-RIB for each negotiated
    /// family (RFC 4724 §4: "the End-of-RIB marker ... after the initial routing update").
    pub fn initial_sync(&mut self, desired: RouteSet) -> (Vec<Update>, Changes) {
        self.reset();
        let changes = self.set_desired(desired);
        let mut updates = self.updates(&changes);
        updates.extend(self.end_of_rib());
        (updates, changes)
    }

    /// End-of-RIB for every negotiated family (RFC 4724 §2).
    pub fn end_of_rib(&self) -> Vec<Update> {
        self.policy
            .families
            .iter()
            .map(|f| Update::end_of_rib(*f))
            .collect()
    }

    /// The fewest UPDATEs that carry `changes` (from `set_desired` or `full_table` of this
    /// Adj-RIB-Out, with no `set_desired` in between): see the module documentation.
    pub fn updates(&self, changes: &Changes) -> Vec<Update> {
        let routes: Vec<Route> = changes
            .announce
            .iter()
            .filter_map(|p| self.sent.get(p).map(|id| self.table.route(*p, *id)))
            .collect();
        pack(&self.policy, &routes, &changes.withdraw)
    }
}

/// One UPDATE being filled, with the octets it would take so far.
struct Building {
    update: Update,
    len: usize,
}

/// Pack announcements and withdrawals into UPDATEs no longer than the session's maximum message
/// length.
pub fn pack<'a>(
    policy: &ExportPolicy,
    announce: impl IntoIterator<Item = &'a Route>,
    withdraw: &[IpNet],
) -> Vec<Update> {
    let max = policy.codec.max_message_len();
    let mut groups: BTreeMap<GroupKey<'_>, Vec<IpNet>> = BTreeMap::new();
    // Routes come sorted by prefix and neighbours usually share attributes: collect runs of one
    // key and look the group up once per run.
    let mut run: Option<(GroupKey<'_>, Vec<IpNet>)> = None;
    for route in announce {
        let key = GroupKey::of(route, policy);
        match &mut run {
            Some((k, prefixes)) if *k == key => prefixes.push(route.prefix),
            _ => {
                if let Some((k, prefixes)) = run.take() {
                    groups.entry(k).or_default().extend(prefixes);
                }
                run = Some((key, vec![route.prefix]));
            }
        }
    }
    if let Some((k, prefixes)) = run {
        groups.entry(k).or_default().extend(prefixes);
    }

    let mut announcing: Vec<Building> = Vec::new();
    for (key, prefixes) in &groups {
        let template = policy.attributes(key).attributes;
        if key.ipv6 {
            pack_mp_reach(template, prefixes, max, &policy.codec, &mut announcing);
        } else {
            pack_ipv4(template, prefixes, max, &policy.codec, &mut announcing);
        }
    }

    let (v4_withdrawn, v6_withdrawn): (Vec<IpNet>, Vec<IpNet>) =
        withdraw.iter().partition(|p| matches!(p, IpNet::V4(_)));

    // IPv4 withdrawals: first into the spare room of announcing IPv4 UPDATEs (an UPDATE may
    // withdraw and announce at once, RFC 4271 §4.3), then into UPDATEs of their own.
    let mut withdrawing: Vec<Building> = Vec::new();
    let mut pending = v4_withdrawn.into_iter().peekable();
    // Only IPv4 announcements take them: an UPDATE mixing IPv4 withdrawals with MP_REACH_NLRI is
    // legal but rare enough that some peers may mishandle it.
    for b in announcing
        .iter_mut()
        .filter(|b| b.update.attributes.mp_reach.is_none())
    {
        while let Some(p) = pending.peek() {
            let l = nlri_len(p);
            if b.len + l > max {
                break;
            }
            b.len += l;
            b.update.withdrawn.push(*p);
            pending.next();
        }
    }
    let mut current: Option<Building> = None;
    for p in pending {
        let l = nlri_len(&p);
        if current.as_ref().is_some_and(|b| b.len + l > max) {
            withdrawing.extend(current.take());
        }
        let b = current.get_or_insert_with(|| Building {
            update: Update::default(),
            len: UPDATE_OVERHEAD,
        });
        b.len += l;
        b.update.withdrawn.push(p);
    }
    withdrawing.extend(current.take());

    // IPv6 withdrawals: MP_UNREACH_NLRI, the only attribute of their UPDATEs.
    let base = UPDATE_OVERHEAD + 4 + AFI_SAFI_LEN;
    let mut current: Option<Building> = None;
    for p in v6_withdrawn {
        let l = nlri_len(&p);
        if current.as_ref().is_some_and(|b| b.len + l > max) {
            withdrawing.extend(current.take());
        }
        let b = current.get_or_insert_with(|| Building {
            update: Update {
                attributes: PathAttributes {
                    mp_unreach: Some(MpUnreach {
                        family: AddressFamily::IPV6_UNICAST,
                        withdrawn: Vec::new(),
                    }),
                    ..PathAttributes::default()
                },
                ..Update::default()
            },
            len: base,
        });
        b.len += l;
        if let Some(u) = &mut b.update.attributes.mp_unreach {
            u.withdrawn.push(p);
        }
    }
    withdrawing.extend(current.take());

    // Withdrawals first: the peer drops what left before it learns what came.
    withdrawing
        .into_iter()
        .chain(announcing)
        .map(|b| b.update)
        .collect()
}

/// IPv4 unicast NLRI after the path attributes (NEXT_HOP attribute).
fn pack_ipv4(
    template: PathAttributes,
    prefixes: &[IpNet],
    max: usize,
    ctx: &CodecContext,
    out: &mut Vec<Building>,
) {
    let base = UPDATE_OVERHEAD + path_attributes_len(&template, ctx);
    let mut rest = prefixes;
    while !rest.is_empty() {
        let (n, len) = fit(rest, base, max);
        let (chunk, tail) = rest.split_at(n);
        out.push(Building {
            update: Update {
                withdrawn: Vec::new(),
                attributes: template.clone(),
                nlri: chunk.to_vec(),
            },
            len,
        });
        rest = tail;
    }
}

/// IPv6 unicast NLRI inside MP_REACH_NLRI (RFC 4760 §3).
fn pack_mp_reach(
    template: PathAttributes,
    prefixes: &[IpNet],
    max: usize,
    ctx: &CodecContext,
    out: &mut Vec<Building>,
) {
    // The empty MP_REACH_NLRI in the template has a 3-octet header; a full one needs the
    // extended length (4 octets). Count 4 from the start (one octet of slack at most).
    let base = UPDATE_OVERHEAD + path_attributes_len(&template, ctx) + 1;
    let mut rest = prefixes;
    while !rest.is_empty() {
        let (n, len) = fit(rest, base, max);
        let (chunk, tail) = rest.split_at(n);
        let mut attributes = template.clone();
        if let Some(r) = &mut attributes.mp_reach {
            r.nlri = chunk.to_vec();
        }
        // Exact length now that the NLRI are known.
        let mp_value = mp_value_len(&attributes);
        let len = len - 4 + attribute_header_len(mp_value);
        out.push(Building {
            update: Update {
                attributes,
                ..Update::default()
            },
            len,
        });
        rest = tail;
    }
}

fn mp_value_len(a: &PathAttributes) -> usize {
    a.mp_reach.as_ref().map_or(0, |r| {
        let nh = match r.next_hop {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        } + if r.link_local_next_hop.is_some() {
            16
        } else {
            0
        };
        AFI_SAFI_LEN + 1 + nh + 1 + r.nlri.iter().map(nlri_len).sum::<usize>()
    })
}

/// How many of `prefixes` fit after `base` octets, and the resulting length. At least one, so
/// that packing always makes progress (`ExportPolicy::check` keeps out routes that never fit).
fn fit(prefixes: &[IpNet], base: usize, max: usize) -> (usize, usize) {
    let mut len = base;
    let mut n = 0;
    for p in prefixes {
        let l = nlri_len(p);
        if len + l > max && n > 0 {
            break;
        }
        len += l;
        n += 1;
    }
    (n, len)
}

#[cfg(test)]
mod tests;
