//! The one internal peer type ([`PeerSpec`]), built from a standalone YAML peer or from a
//! `BGPPeer`, and the peer manager that runs one session per peer for both modes.
//!
//! [`PeerManager::apply`] makes the running sessions match a list of peers with their desired
//! routes: a peer whose own settings changed (or whose key changed) is restarted alone; a peer
//! whose routes changed gets the new set through its `watch` channel, which the session turns
//! into incremental UPDATEs (never a reset).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use leafbridge_api::crd::{BGPAddressFamily, BGPPeerSpec, SecretKeyRef};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::bfd::{self, Bfd, BfdSession, BfdState, BfdStatus};
use crate::bgp::fsm::{self, GracefulRestartConfig, State};
use crate::bgp::log_limit::{LogLimit, Verdict};
use crate::bgp::message::AddressFamily;
use crate::bgp::session::{self, DesiredRoutes, SessionConfig, SessionHandle, StopMode};
use crate::bgp::transport::{Listener, Md5Key, PeerId, TransportConfig, TtlPolicy};
use crate::metrics::SpeakerMetrics;

/// Restart Time advertised when a BGPPeer sets none (RFC 4724 §3 leaves it to configuration).
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// Where a peer's TCP-MD5 key comes from. The key itself is never part of a `PeerSpec`, so a
/// spec can be logged and compared freely.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PasswordRef {
    #[default]
    None,
    /// A file (standalone mode).
    File(PathBuf),
    /// A key of a Secret (cluster mode).
    Secret(SecretKeyRef),
}

/// One peer as the session layer needs it, whatever the configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// `transport.md5` is unset here: see [`ResolvedPeer`].
    pub session: SessionConfig,
    pub password: PasswordRef,
    /// BFD profile name (BGPPeer `bfdProfile`), for the BFD engine.
    pub bfd_profile: Option<String>,
}

impl PeerSpec {
    pub fn name(&self) -> &str {
        &self.session.name
    }
}

/// Why a `BGPPeer` cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peerAddress {0:?} is not an IP address")]
    PeerAddress(String),
    #[error("sourceAddress {0:?} is not an IP address of the peer's family")]
    SourceAddress(String),
    #[error("{field} {value:?} is not an {family} address")]
    NextHop {
        field: &'static str,
        value: String,
        family: &'static str,
    },
    #[error("{field} {value} cannot be a next hop: {why}")]
    BadNextHop {
        field: &'static str,
        value: IpAddr,
        why: crate::config::NextHopProblem,
    },
    #[error("{0}")]
    Interface(#[from] crate::config::InterfaceProblem),
    #[error("ebgpMultihop and gtsm cannot both be set (RFC 5082 §3 sends TTL 255)")]
    GtsmWithMultihop,
    #[error("ebgpMultihop applies to eBGP only")]
    MultihopOnIbgp,
    #[error("{0}")]
    Fsm(#[from] fsm::ConfigError),
}

/// A `BGPPeer` as this node runs it. `router_id` is the node's BGP Identifier.
pub fn from_bgppeer(
    name: &str,
    spec: &BGPPeerSpec,
    router_id: Ipv4Addr,
) -> Result<PeerSpec, PeerError> {
    let peer_ip: IpAddr = spec
        .peer_address
        .parse()
        .map_err(|_| PeerError::PeerAddress(spec.peer_address.clone()))?;
    // The same rules as the standalone configuration (`Config::validate`).
    crate::config::check_peer_interface(
        peer_ip,
        spec.interface.as_deref(),
        spec.ebgp_multihop.is_some(),
        spec.bfd_profile.is_some(),
    )?;
    let mut fsm_cfg = fsm::PeerConfig::new(spec.my_asn, spec.peer_asn, router_id);
    if let Some(h) = spec.hold_time_seconds {
        fsm_cfg.hold_time = h;
    }
    if let Some(r) = spec.connect_retry_seconds {
        fsm_cfg.connect_retry_time = Duration::from_secs(r.into());
        fsm_cfg.connect_retry_max = fsm_cfg.connect_retry_max.max(fsm_cfg.connect_retry_time);
    }
    if !spec.address_families.is_empty() {
        fsm_cfg.families = spec
            .address_families
            .iter()
            .map(|f| match f {
                BGPAddressFamily::IPv4Unicast => AddressFamily::IPV4_UNICAST,
                BGPAddressFamily::IPv6Unicast => AddressFamily::IPV6_UNICAST,
            })
            .collect();
        fsm_cfg.families.dedup();
    }
    if spec.graceful_restart {
        fsm_cfg.graceful_restart = Some(GracefulRestartConfig {
            restart_time: spec.restart_time_seconds.unwrap_or(DEFAULT_RESTART_TIME),
            restarting: false,
            forwarding_preserved: true,
        });
    }
    fsm_cfg.validate()?;
    let source = match &spec.source_address {
        None => None,
        Some(s) => {
            let ip: IpAddr = s.parse().map_err(|_| PeerError::SourceAddress(s.clone()))?;
            if ip.is_ipv4() != peer_ip.is_ipv4() {
                return Err(PeerError::SourceAddress(s.clone()));
            }
            Some(ip)
        }
    };
    let ibgp = spec.my_asn == spec.peer_asn;
    let ttl = match (spec.gtsm, spec.ebgp_multihop) {
        (true, Some(_)) => return Err(PeerError::GtsmWithMultihop),
        (true, None) => TtlPolicy::Gtsm { hops: 1 },
        (false, Some(_)) if ibgp => return Err(PeerError::MultihopOnIbgp),
        (false, Some(t)) => TtlPolicy::Ttl(t.max(1)),
        (false, None) if ibgp => TtlPolicy::Default,
        // Directly connected eBGP: TTL 1, as every implementation sends by default.
        (false, None) => TtlPolicy::Ttl(1),
    };
    let ipv6_next_hop = parse_next_hop::<Ipv6Addr>("ipv6NextHop", &spec.ipv6_next_hop, "IPv6")?;
    let ipv4_next_hop = parse_next_hop::<Ipv4Addr>("ipv4NextHop", &spec.ipv4_next_hop, "IPv4")?;
    for (field, nh) in [
        ("ipv6NextHop", ipv6_next_hop.map(IpAddr::V6)),
        ("ipv4NextHop", ipv4_next_hop.map(IpAddr::V4)),
    ] {
        if let Some(value) = nh {
            crate::config::check_next_hop(value).map_err(|why| PeerError::BadNextHop {
                field,
                value,
                why,
            })?;
        }
    }
    let mut transport = TransportConfig::new(SocketAddr::new(
        peer_ip,
        spec.peer_port.unwrap_or(crate::bgp::transport::BGP_PORT),
    ));
    transport.interface = spec.interface.clone();
    transport.source = source;
    transport.ttl = ttl;
    Ok(PeerSpec {
        session: SessionConfig {
            name: name.to_owned(),
            fsm: fsm_cfg,
            transport,
            passive: spec.passive,
            ipv6_next_hop,
            ipv4_next_hop,
        },
        password: spec
            .password_secret
            .clone()
            .map_or(PasswordRef::None, PasswordRef::Secret),
        bfd_profile: spec.bfd_profile.clone(),
    })
}

fn parse_next_hop<T: std::str::FromStr>(
    field: &'static str,
    value: &Option<String>,
    family: &'static str,
) -> Result<Option<T>, PeerError> {
    value
        .as_ref()
        .map(|v| {
            v.parse().map_err(|_| PeerError::NextHop {
                field,
                value: v.clone(),
                family,
            })
        })
        .transpose()
}

/// A peer ready to run: its spec, its key (read by the caller) and its routes.
#[derive(Debug, Clone)]
pub struct ResolvedPeer {
    pub spec: PeerSpec,
    pub md5: Option<Md5Key>,
    pub routes: DesiredRoutes,
    /// The BFD session this peer asks for (its `bfd_profile`, resolved by the caller).
    pub bfd: Option<BfdPeer>,
}

/// The BFD session a peer asks for: who, and the profile's timers and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdPeer {
    pub spec: bfd::PeerSpec,
    pub profile: bfd::Profile,
}

impl BfdPeer {
    /// The BFD session of a BGP peer (no authentication): multihop (RFC 5883) when the BGP
    /// session is sent with a TTL above 1 (`ebgpMultihop`), else single hop (RFC 5881).
    pub fn for_bgp_peer(spec: &PeerSpec, profile: bfd::Profile) -> BfdPeer {
        let t = &spec.session.transport;
        BfdPeer {
            spec: bfd::PeerSpec {
                name: spec.name().to_owned(),
                peer: t.peer.ip(),
                local: t.source,
                hops: if matches!(t.ttl, TtlPolicy::Ttl(ttl) if ttl > 1) {
                    bfd::Hops::Multi
                } else {
                    bfd::Hops::Single
                },
                auth: None,
            },
            profile,
        }
    }

    /// Same session apart from the timers, which change through a Poll Sequence.
    fn same_session(&self, other: &BfdPeer) -> bool {
        self.spec == other.spec && self.profile.passive == other.profile.passive
    }
}

/// A peer as the listener sees it: inbound connections come from its address (and, for a
/// link-local one, its interface).
#[derive(Debug, Clone)]
struct InboundPeer {
    name: String,
    /// The identity of a peer everywhere.
    peer: PeerId,
    remote_as: u32,
    tx: mpsc::Sender<TcpStream>,
}

/// The peers of every address, in name order.
type IncomingRoutes = Arc<Mutex<HashMap<IpAddr, Vec<InboundPeer>>>>;

/// The shared listener, with the MD5 key it holds for each peer address. Keys are by address
/// alone, also for link-local peers: Linux scopes a listener's key to an interface only for
/// VRF devices (TCP_MD5SIG_FLAG_IFINDEX), so a link-local address has one key on every link.
struct ListenerRuntime {
    addr: SocketAddr,
    listener: Arc<Listener>,
    /// Started once the sessions are in place; until then connections wait in the backlog.
    task: Option<JoinHandle<()>>,
    keys: HashMap<IpAddr, Md5Key>,
}

impl ListenerRuntime {
    fn stop(self) {
        if let Some(t) = self.task {
            t.abort();
        }
    }
}

/// Why a peer cannot run beside the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerConflict {
    #[error("peer {other} has the same address, port and interface {peer}")]
    SameAddress { other: String, peer: PeerId },
    #[error(
        "peer {other} on the same address {addr} has another TCP MD5 key (the kernel keys inbound connections by address alone)"
    )]
    OtherKey { other: String, addr: IpAddr },
}

/// The peers (in name order) that cannot run because an earlier one has the same identity
/// (address, port and interface), or the same address with another MD5 key (on any interface,
/// see `ListenerRuntime`): the one pure check behind both modes.
pub fn conflicts<'a>(
    peers: impl IntoIterator<Item = (&'a str, PeerId, Option<&'a Md5Key>)>,
) -> Vec<(String, PeerConflict)> {
    let mut kept: Vec<(&str, PeerId, Option<&Md5Key>)> = Vec::new();
    let mut out = Vec::new();
    for (name, id, key) in peers {
        let clash = kept.iter().find_map(|(other, a, k)| {
            if *a == id {
                Some(PeerConflict::SameAddress {
                    other: (*other).to_owned(),
                    peer: id.clone(),
                })
            } else if a.addr.ip() == id.addr.ip() && *k != key {
                Some(PeerConflict::OtherKey {
                    other: (*other).to_owned(),
                    addr: id.addr.ip(),
                })
            } else {
                None
            }
        });
        match clash {
            Some(c) => out.push((name.to_owned(), c)),
            None => kept.push((name, id, key)),
        }
    }
    out
}

/// Why an inbound connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundRefusal {
    /// RFC 4271 §8.2.1.1 leaves unconfigured peers to policy: ours is to refuse.
    #[error("no peer is configured on this address (and interface, for a link-local one)")]
    Unconfigured,
    #[error("several peers share this address and no OPEN came to tell them apart")]
    NoOpen,
    #[error("several peers share this address and none has AS {0}")]
    NoPeerWithAs(u32),
    #[error("several peers share this address with AS {0}")]
    Ambiguous(u32),
}

/// Which of the peers on the connecting address takes an inbound connection: the only one,
/// or, when several share the address, the one whose AS is the OPEN's (`open_as`, RFC 6793:
/// the 4-octet AS capability, else My Autonomous System).
fn inbound_peer(
    candidates: &[InboundPeer],
    open_as: Option<u32>,
) -> Result<&InboundPeer, InboundRefusal> {
    match candidates {
        [] => Err(InboundRefusal::Unconfigured),
        [only] => Ok(only),
        several => {
            let asn = open_as.ok_or(InboundRefusal::NoOpen)?;
            let mut with_as = several.iter().filter(|p| p.remote_as == asn);
            match (with_as.next(), with_as.next()) {
                (Some(p), None) => Ok(p),
                (None, _) => Err(InboundRefusal::NoPeerWithAs(asn)),
                (Some(_), Some(_)) => Err(InboundRefusal::Ambiguous(asn)),
            }
        }
    }
}

/// The peers on the connecting address that can take a connection which came in with IPv6
/// scope id `scope` (the interface index of a link-local address, 0 otherwise): a peer with an
/// interface when that interface's index (`index_of`, looked up now) is the scope, a peer
/// without one when there is no scope. `fe80::1` on two links is two peers.
fn on_interface(
    candidates: Vec<InboundPeer>,
    scope: u32,
    index_of: impl Fn(&str) -> Option<u32>,
) -> Vec<InboundPeer> {
    candidates
        .into_iter()
        .filter(|p| match &p.peer.interface {
            Some(i) => scope != 0 && index_of(i) == Some(scope),
            None => scope == 0,
        })
        .collect()
}

/// The MD5 key the listener needs per peer address.
fn listener_keys<'a>(
    peers: impl IntoIterator<Item = (IpAddr, Option<&'a Md5Key>)>,
) -> HashMap<IpAddr, Md5Key> {
    peers
        .into_iter()
        .filter_map(|(ip, k)| Some((ip, k?.clone())))
        .collect()
}

/// Make the listener hold `want`: every new or changed key is installed (a failure puts back
/// what was there and is an error), then keys no longer wanted are removed.
fn update_keys(
    listener: &Listener,
    have: &mut HashMap<IpAddr, Md5Key>,
    want: &HashMap<IpAddr, Md5Key>,
) -> anyhow::Result<()> {
    let mut installed: Vec<IpAddr> = Vec::new();
    for (ip, key) in want {
        if have.get(ip) == Some(key) {
            continue;
        }
        if let Err(e) = listener.set_peer_key(*ip, Some(key)) {
            for done in installed {
                let _ = listener.set_peer_key(done, have.get(&done));
            }
            return Err(e).with_context(|| format!("installing the TCP MD5 key of {ip}"));
        }
        installed.push(*ip);
    }
    for ip in have.keys() {
        if !want.contains_key(ip)
            && let Err(e) = listener.set_peer_key(*ip, None)
        {
            warn!(addr = %ip, error = %e, "cannot remove a TCP MD5 key from the listener");
        }
    }
    *have = want.clone();
    Ok(())
}

struct PeerRuntime {
    session_cfg: SessionConfig,
    md5: Option<Md5Key>,
    desired: watch::Sender<DesiredRoutes>,
    handle: SessionHandle,
    bfd: Option<(BfdPeer, BfdSession)>,
}

/// The running sessions by peer name, and the shared listener.
pub struct PeerManager {
    metrics: SpeakerMetrics,
    restarting: bool,
    peers: BTreeMap<String, PeerRuntime>,
    listener: Option<ListenerRuntime>,
    incoming: IncomingRoutes,
    /// Started with the first peer that asks for BFD.
    bfd: Option<Bfd>,
}

impl std::fmt::Debug for PeerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerManager")
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PeerManager {
    /// `restarting`: we have just restarted, so the graceful-restart peers of the first
    /// [`PeerManager::apply`] get the Restart State bit (RFC 4724 §3); peers added later did
    /// not see us restart.
    pub fn new(metrics: SpeakerMetrics, restarting: bool) -> Self {
        Self {
            metrics,
            restarting,
            peers: BTreeMap::new(),
            listener: None,
            incoming: Arc::default(),
            bfd: None,
        }
    }

    /// Make the listener and the sessions match `peers`. Atomic where it can fail: a listener
    /// that cannot bind, or a TCP MD5 key the listener refuses, is an error and changes
    /// nothing (the old listener keeps accepting). A changed listener is bound and given its
    /// keys before the old one closes. Peers that conflict with an earlier one (see
    /// [`conflicts`]) are refused with an error line; the others run.
    pub async fn apply(
        &mut self,
        listen: Option<SocketAddr>,
        peers: Vec<ResolvedPeer>,
    ) -> anyhow::Result<()> {
        let mut wanted: BTreeMap<String, ResolvedPeer> = peers
            .into_iter()
            .map(|p| (p.spec.name().to_owned(), p))
            .collect();
        let refused = conflicts(
            wanted
                .values()
                .map(|p| (p.spec.name(), p.spec.session.transport.id(), p.md5.as_ref())),
        );
        for (name, why) in refused {
            error!(peer = %name, error = %why, "peer not started");
            wanted.remove(&name);
        }
        for p in wanted.values_mut() {
            p.spec.session.transport.md5 = p.md5.clone();
            if let Some(gr) = &mut p.spec.session.fsm.graceful_restart {
                gr.restarting = self.restarting;
            }
        }
        let keys = listener_keys(
            wanted
                .values()
                .map(|p| (p.spec.session.transport.peer.ip(), p.md5.as_ref())),
        );

        // The listener first, complete with its keys: nothing else has changed if it fails.
        let listener_changed = self.listener.as_ref().map(|l| l.addr) != listen;
        let mut replaced = None;
        if listener_changed {
            if let Some(addr) = listen {
                let l = Listener::bind(addr).with_context(|| format!("listening on {addr}"))?;
                let mut have = HashMap::new();
                update_keys(&l, &mut have, &keys)
                    .with_context(|| format!("listening on {addr}"))?;
                info!(addr = %l.local_addr()?, "listening for BGP connections");
                replaced = self.listener.replace(ListenerRuntime {
                    addr,
                    listener: Arc::new(l),
                    task: None,
                    keys: have,
                });
            } else {
                replaced = self.listener.take();
            }
        } else if let Some(l) = &mut self.listener {
            update_keys(&l.listener, &mut l.keys, &keys)?;
        }

        // Peers that went away or changed: stop them (only them).
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            let keep = wanted.get(&name).is_some_and(|p| {
                let cur = &self.peers[&name];
                same_session(&cur.session_cfg, &p.spec.session)
                    && cur.md5 == p.md5
                    && match (&cur.bfd, &p.bfd) {
                        (None, None) => true,
                        (Some((a, _)), Some(b)) => a.same_session(b),
                        _ => false,
                    }
            });
            if !keep {
                let rt = self.peers.remove(&name).expect("listed above");
                let why = if wanted.contains_key(&name) {
                    "peer configuration changed"
                } else {
                    "peer removed from configuration"
                };
                info!(peer = %name, why, "peer removed or changed: stopping its session");
                self.remove_peer(rt, why).await;
            }
        }
        // New and changed peers start; kept ones get the new desired routes.
        for (name, p) in wanted {
            if let Some(rt) = self.peers.get_mut(&name) {
                if let (Some((cur, session)), Some(new)) = (&mut rt.bfd, &p.bfd)
                    && cur.profile != new.profile
                {
                    info!(peer = %name, "BFD timers changed: applying them through a Poll Sequence");
                    session.set_parameters(new.profile.parameters);
                    *cur = new.clone();
                }
                rt.desired.send_if_modified(|cur| {
                    if **cur == *p.routes {
                        false
                    } else {
                        *cur = p.routes.clone();
                        true
                    }
                });
                continue;
            }
            let peer_id = p.spec.session.transport.id();
            info!(peer = %name, addr = %peer_id, "starting session");
            let (desired_tx, desired_rx) = watch::channel(p.routes);
            let (bfd, gate) = match p.bfd {
                Some(b) => match self.start_bfd(&b).await {
                    Ok(session) => {
                        let gate = bfd_gate(session.status());
                        (Some((b, session)), gate)
                    }
                    Err(e) => {
                        // BGP without BFD is what the peer had before BFD: run it so.
                        error!(peer = %name, error = %e, "cannot start BFD; running BGP without it");
                        (None, watch::channel(true).1)
                    }
                },
                None => (None, watch::channel(true).1),
            };
            let handle = session::spawn_gated(
                p.spec.session.clone(),
                desired_rx,
                self.metrics.clone(),
                gate,
            );
            {
                let mut incoming = self.incoming.lock().expect("not poisoned");
                let on_addr = incoming.entry(peer_id.addr.ip()).or_default();
                on_addr.push(InboundPeer {
                    name: name.clone(),
                    peer: peer_id,
                    remote_as: p.spec.session.fsm.peer_as,
                    tx: handle.incoming_sender(),
                });
                on_addr.sort_by(|a, b| a.name.cmp(&b.name));
            }
            self.peers.insert(
                name,
                PeerRuntime {
                    session_cfg: p.spec.session,
                    md5: p.md5,
                    desired: desired_tx,
                    handle,
                    bfd,
                },
            );
        }
        // Accept on the new listener only now that every session is there to take its
        // connections; the old one hands over what is waiting in its backlog.
        if let Some(l) = &mut self.listener
            && l.task.is_none()
        {
            l.task = Some(tokio::spawn(accept_loop(
                l.listener.clone(),
                self.incoming.clone(),
            )));
        }
        if let Some(old) = replaced {
            let pending = old.listener.accept_pending();
            let listener = old.listener.clone();
            old.stop();
            for (stream, addr) in pending {
                route_inbound(&self.incoming, stream, addr);
            }
            drop(listener);
        }
        // RFC 4724 §3: the Restart State bit is for the sessions we had before the restart.
        self.restarting = false;
        Ok(())
    }

    /// Update only the routes of running peers (no session is started or stopped).
    pub fn set_routes(&self, routes: &BTreeMap<String, DesiredRoutes>) {
        for (name, rt) in &self.peers {
            let new = routes.get(name).cloned().unwrap_or_default();
            rt.desired.send_if_modified(|cur| {
                if **cur == *new {
                    false
                } else {
                    *cur = new.clone();
                    true
                }
            });
        }
    }

    /// (name, peer, state, routes desired) of every running session.
    pub fn sessions(&self) -> Vec<(String, PeerId, State, usize)> {
        self.peers
            .iter()
            .map(|(n, rt)| {
                (
                    n.clone(),
                    rt.session_cfg.transport.id(),
                    *rt.handle.state().borrow(),
                    rt.desired.borrow().len(),
                )
            })
            .collect()
    }

    /// A receiver that changes whenever a session changes state (for status reports).
    pub fn state_receivers(&self) -> Vec<watch::Receiver<State>> {
        self.peers.values().map(|rt| rt.handle.state()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Stop a peer. Its MD5 key on the listener follows the peers of its address (`apply`).
    async fn remove_peer(&mut self, rt: PeerRuntime, why: &str) {
        let ip = rt.session_cfg.transport.peer.ip();
        {
            let mut incoming = self.incoming.lock().expect("not poisoned");
            if let Some(on_addr) = incoming.get_mut(&ip) {
                on_addr.retain(|p| p.name != rt.session_cfg.name);
                if on_addr.is_empty() {
                    incoming.remove(&ip);
                }
            }
        }
        rt.handle
            .stop(StopMode::withdraw(Some(why.to_owned())))
            .await;
        if let Some((_, b)) = rt.bfd {
            b.stop().await;
        }
        self.metrics.forget(&rt.session_cfg.name);
    }

    async fn start_bfd(&mut self, b: &BfdPeer) -> std::io::Result<BfdSession> {
        let metrics = self.metrics.clone();
        let daemon = self.bfd.get_or_insert_with(|| Bfd::spawn(metrics));
        daemon.start(b.spec.clone(), b.profile).await
    }

    /// The status of every peer's BFD session, by peer name.
    pub fn bfd_sessions(&self) -> BTreeMap<String, BfdStatus> {
        self.peers
            .iter()
            .filter_map(|(n, rt)| {
                rt.bfd
                    .as_ref()
                    .map(|(_, s)| (n.clone(), *s.status().borrow()))
            })
            .collect()
    }

    /// Stop every session with `stop`, all at once.
    pub async fn shutdown(&mut self, stop: StopMode) {
        if let Some(l) = self.listener.take() {
            l.stop();
        }
        let peers = std::mem::take(&mut self.peers);
        futures::future::join_all(peers.into_values().map(|rt| async {
            rt.handle.stop(stop.clone()).await;
            if let Some((_, b)) = rt.bfd {
                b.stop().await;
            }
        }))
        .await;
    }

    /// SIGTERM without graceful restart (RFC 4724 not negotiated, or not configured): withdraw
    /// every route on every session first, wait `drain` so the routers move traffic to the
    /// other nodes, then Cease. Sessions with graceful restart negotiated close gracefully
    /// (the routers keep our routes as stale while we restart).
    pub async fn drain_and_shutdown(&mut self, drain: Duration, message: Option<String>) {
        let graceful: Vec<bool> = self
            .peers
            .values()
            .map(|rt| rt.session_cfg.fsm.graceful_restart.is_some())
            .collect();
        let mut withdrew = false;
        for (rt, gr) in self.peers.values().zip(&graceful) {
            if !gr {
                rt.desired.send_replace(DesiredRoutes::default());
                withdrew = true;
            }
        }
        if withdrew && !drain.is_zero() {
            info!(drain = ?drain, "routes withdrawn; waiting for the routers to move traffic");
            tokio::time::sleep(drain).await;
        }
        if let Some(l) = self.listener.take() {
            l.stop();
        }
        let peers = std::mem::take(&mut self.peers);
        futures::future::join_all(peers.into_values().zip(graceful).map(|(rt, gr)| {
            let message = message.clone();
            async move {
                rt.handle
                    .stop(if gr {
                        StopMode::Graceful { message }
                    } else {
                        StopMode::withdraw(message)
                    })
                    .await;
                if let Some((_, b)) = rt.bfd {
                    b.stop().await;
                }
            }
        }))
        .await;
    }
}

/// What the gate task remembers of its BFD session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateMemory {
    /// BFD has been Up at least once.
    pub ever_up: bool,
    /// BFD last left Up because the remote turned it off (AdminDown).
    pub excused: bool,
}

/// Whether BFD lets the BGP session run (`None`: leave it as it is), and the new memory:
/// - Up: yes;
/// - never Up yet: unchanged (open), since BGP does not wait for a peer that may not run BFD;
/// - since the remote turned BFD off (it sent AdminDown), until Up again: unchanged, as
///   RFC 5882 §3.2 says AdminDown must not be taken for a path failure;
/// - otherwise (Detection Time expired, the remote saw us fail): no.
pub fn bgp_allowed(mem: GateMemory, status: &BfdStatus) -> (GateMemory, Option<bool>) {
    if status.state == BfdState::Up {
        return (
            GateMemory {
                ever_up: true,
                excused: false,
            },
            Some(true),
        );
    }
    let excused = mem.excused || status.remote_state == BfdState::AdminDown;
    let mem = GateMemory { excused, ..mem };
    if !mem.ever_up || mem.excused {
        (mem, None)
    } else {
        (mem, Some(false))
    }
}

/// The BGP session's gate from its BFD session (see `bgp_allowed`).
fn bfd_gate(mut status: watch::Receiver<BfdStatus>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut mem = GateMemory::default();
        loop {
            let s = *status.borrow_and_update();
            let (m, open) = bgp_allowed(mem, &s);
            mem = m;
            if let Some(open) = open {
                tx.send_if_modified(|cur| std::mem::replace(cur, open) != open);
            }
            // Ends when the BFD session stops or the BGP session is gone.
            tokio::select! {
                r = status.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// Equal apart from the Restart State bit, which only the first session after a start sets.
fn same_session(a: &SessionConfig, b: &SessionConfig) -> bool {
    let strip = |c: &SessionConfig| {
        let mut c = c.clone();
        if let Some(gr) = &mut c.fsm.graceful_restart {
            gr.restarting = false;
        }
        c
    };
    strip(a) == strip(b)
}

async fn accept_loop(listener: Arc<Listener>, incoming: IncomingRoutes) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => route_inbound(&incoming, stream, addr),
            Err(e) => {
                if let Verdict::Log { suppressed } =
                    INBOUND_WARNINGS.check(std::time::Instant::now())
                {
                    warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How long a connection from an address shared by several peers may take to send its OPEN.
const INBOUND_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Hand an accepted connection to its peer's session, or close it with the reason.
fn route_inbound(incoming: &IncomingRoutes, stream: TcpStream, addr: SocketAddr) {
    let candidates = incoming
        .lock()
        .expect("not poisoned")
        .get(&addr.ip())
        .cloned()
        .unwrap_or_default();
    let scope = match addr {
        SocketAddr::V6(a) => a.scope_id(),
        SocketAddr::V4(_) => 0,
    };
    let candidates = on_interface(candidates, scope, |name| {
        crate::bgp::transport::interface_index(name).ok()
    });
    if candidates.len() <= 1 {
        deliver(inbound_peer(&candidates, None), stream, addr);
        return;
    }
    // Several peers on this address: the OPEN says which one is calling (peeked, so the
    // session still reads it).
    tokio::spawn(async move {
        let open_as = tokio::time::timeout(INBOUND_OPEN_TIMEOUT, peek_open_as(&stream))
            .await
            .ok()
            .flatten();
        deliver(inbound_peer(&candidates, open_as), stream, addr);
    });
}

/// Anyone who reaches the listener can make these lines: a few per minute, then a count.
static INBOUND_WARNINGS: LogLimit =
    LogLimit::new(INBOUND_WARNINGS_PER_MINUTE, Duration::from_secs(60));

/// Lines per minute about refused or dropped inbound connections.
pub const INBOUND_WARNINGS_PER_MINUTE: u32 = 10;

fn deliver(to: Result<&InboundPeer, InboundRefusal>, stream: TcpStream, addr: SocketAddr) {
    let why = match to {
        Ok(p) => match p.tx.try_send(stream) {
            Ok(()) => return,
            Err(_) => format!("the session of peer {} ({}) is busy", p.name, p.peer),
        },
        Err(why) => why.to_string(),
    };
    if let Verdict::Log { suppressed } = INBOUND_WARNINGS.check(std::time::Instant::now()) {
        warn!(%addr, %why, suppressed, "inbound connection refused; closing it");
    }
}

/// The AS in the first message of `stream` if it is an OPEN, without consuming it.
async fn peek_open_as(stream: &TcpStream) -> Option<u32> {
    use crate::bgp::codec::{self, CodecContext};
    use crate::bgp::message::Message;
    let ctx = CodecContext::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(len) = codec::frame_len(&buf[..n], &ctx).ok()?
            && len <= n
        {
            return match codec::decode(&buf[..len], &ctx).ok()?.message {
                Message::Open(open) => Some(open.asn()),
                _ => None,
            };
        }
        // Peeking again at once would return the same bytes: wait for more to arrive.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InterfaceProblem;

    fn spec(json: serde_json::Value) -> BGPPeerSpec {
        serde_json::from_value(json).unwrap()
    }

    const RID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    #[test]
    fn a_bgppeer_becomes_the_same_session_config_as_standalone_yaml_would() {
        let s = spec(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001,
            "holdTimeSeconds": 9, "gracefulRestart": true, "restartTimeSeconds": 60,
            "sourceAddress": "192.0.2.10", "addressFamilies": ["IPv4Unicast"],
            "passwordSecret": {"namespace": "ns", "name": "bgp", "key": "pw"}
        }));
        let p = from_bgppeer("leaf1", &s, RID).unwrap();
        assert_eq!(p.name(), "leaf1");
        assert_eq!(p.session.transport.peer, "192.0.2.1:179".parse().unwrap());
        assert_eq!(p.session.transport.ttl, TtlPolicy::Ttl(1));
        assert_eq!(p.session.transport.md5, None);
        assert_eq!(p.session.fsm.hold_time, 9);
        assert_eq!(p.session.fsm.families, vec![AddressFamily::IPV4_UNICAST]);
        assert_eq!(p.session.fsm.graceful_restart.unwrap().restart_time, 60);
        assert!(matches!(p.password, PasswordRef::Secret(ref r) if r.key == "pw"));
    }

    #[test]
    fn gtsm_and_multihop_exclude_each_other() {
        let s = spec(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001,
            "gtsm": true, "ebgpMultihop": 3
        }));
        assert_eq!(
            from_bgppeer("x", &s, RID).unwrap_err(),
            PeerError::GtsmWithMultihop
        );
    }

    #[test]
    fn bad_addresses_and_hold_times_are_refused_with_the_reason() {
        let bad_addr = spec(serde_json::json!({"peerAddress": "leaf", "peerASN": 1, "myASN": 2}));
        assert!(matches!(
            from_bgppeer("x", &bad_addr, RID),
            Err(PeerError::PeerAddress(_))
        ));
        let bad_hold = spec(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 1, "myASN": 2, "holdTimeSeconds": 2
        }));
        assert!(matches!(
            from_bgppeer("x", &bad_hold, RID),
            Err(PeerError::Fsm(fsm::ConfigError::HoldTime(2)))
        ));
        let v6_source = spec(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 1, "myASN": 2, "sourceAddress": "2001:db8::1"
        }));
        assert!(matches!(
            from_bgppeer("x", &v6_source, RID),
            Err(PeerError::SourceAddress(_))
        ));
    }

    fn id(s: &str) -> PeerId {
        match s.split_once('%') {
            Some((ip, rest)) => {
                let (iface, port) = rest.split_once("]:").unwrap();
                PeerId {
                    addr: format!("{ip}]:{port}").parse().unwrap(),
                    interface: Some(iface.to_owned()),
                }
            }
            None => PeerId {
                addr: s.parse().unwrap(),
                interface: None,
            },
        }
    }

    #[test]
    fn link_local_peers_are_one_per_address_and_interface_with_one_key_per_address() {
        let eth0 = id("[fe80::2%eth0]:179");
        let eth1 = id("[fe80::2%eth1]:179");
        assert_eq!(eth0.to_string(), "[fe80::2%eth0]:179");
        let k1 = Md5Key::new(b"one".to_vec()).unwrap();
        let k2 = Md5Key::new(b"two".to_vec()).unwrap();
        assert!(conflicts([("x", eth0.clone(), None), ("y", eth1.clone(), None)]).is_empty());
        assert!(
            conflicts([
                ("x", eth0.clone(), Some(&k1)),
                ("y", eth1.clone(), Some(&k1))
            ])
            .is_empty()
        );
        assert_eq!(
            conflicts([("x", eth0.clone(), None), ("y", eth0.clone(), None)]),
            vec![(
                "y".to_owned(),
                PeerConflict::SameAddress {
                    other: "x".into(),
                    peer: eth0.clone()
                }
            )]
        );
        // The listener keys a link-local address on every interface alike.
        assert_eq!(
            conflicts([("x", eth0.clone(), Some(&k1)), ("y", eth1, Some(&k2))]),
            vec![(
                "y".to_owned(),
                PeerConflict::OtherKey {
                    other: "x".into(),
                    addr: eth0.addr.ip()
                }
            )]
        );
    }

    #[test]
    fn peers_are_one_per_address_and_port_and_an_address_has_one_key() {
        let a = id("192.0.2.1:179");
        let a2 = id("192.0.2.1:1179");
        let b = id("192.0.2.2:179");
        let k1 = Md5Key::new(b"one".to_vec()).unwrap();
        let k2 = Md5Key::new(b"two".to_vec()).unwrap();
        // Two ports of one address with one key, another address with another key: fine.
        assert!(
            conflicts([
                ("x", a.clone(), Some(&k1)),
                ("y", a2.clone(), Some(&k1)),
                ("z", b, Some(&k2))
            ])
            .is_empty()
        );
        assert_eq!(
            conflicts([("x", a.clone(), None), ("y", a.clone(), None)]),
            vec![(
                "y".to_owned(),
                PeerConflict::SameAddress {
                    other: "x".into(),
                    peer: a.clone()
                }
            )]
        );
        assert_eq!(
            conflicts([
                ("x", a.clone(), Some(&k1)),
                ("y", a2.clone(), Some(&k2)),
                ("z", a2, None)
            ]),
            vec![
                (
                    "y".to_owned(),
                    PeerConflict::OtherKey {
                        other: "x".into(),
                        addr: a.addr.ip()
                    }
                ),
                (
                    "z".to_owned(),
                    PeerConflict::OtherKey {
                        other: "x".into(),
                        addr: a.addr.ip()
                    }
                )
            ]
        );
    }

    #[test]
    fn an_inbound_connection_goes_to_the_peer_of_its_address_and_as() {
        let (tx, _rx) = mpsc::channel(1);
        let p = |name: &str, port: u16, remote_as: u32| InboundPeer {
            name: name.into(),
            peer: PeerId {
                addr: SocketAddr::new("192.0.2.1".parse().unwrap(), port),
                interface: None,
            },
            remote_as,
            tx: tx.clone(),
        };
        assert_eq!(
            inbound_peer(&[], Some(1)).unwrap_err(),
            InboundRefusal::Unconfigured
        );
        // One peer on the address: its session decides about the OPEN.
        assert_eq!(
            inbound_peer(&[p("one", 179, 65000)], None).unwrap().name,
            "one"
        );
        let two = [p("one", 179, 65000), p("two", 1179, 65002)];
        assert_eq!(inbound_peer(&two, Some(65002)).unwrap().name, "two");
        assert_eq!(inbound_peer(&two, Some(65000)).unwrap().name, "one");
        assert_eq!(
            inbound_peer(&two, Some(65003)).unwrap_err(),
            InboundRefusal::NoPeerWithAs(65003)
        );
        assert_eq!(
            inbound_peer(&two, None).unwrap_err(),
            InboundRefusal::NoOpen
        );
        let same_as = [p("one", 179, 65000), p("two", 1179, 65000)];
        assert_eq!(
            inbound_peer(&same_as, Some(65000)).unwrap_err(),
            InboundRefusal::Ambiguous(65000)
        );
    }

    #[test]
    fn next_hops_and_peer_addresses_a_router_cannot_use_are_refused() {
        for (field, value, why) in [
            (
                "ipv6NextHop",
                "fe80::1",
                crate::config::NextHopProblem::LinkLocal,
            ),
            (
                "ipv6NextHop",
                "::",
                crate::config::NextHopProblem::Unspecified,
            ),
            (
                "ipv4NextHop",
                "127.0.0.1",
                crate::config::NextHopProblem::Loopback,
            ),
            (
                "ipv4NextHop",
                "224.0.0.5",
                crate::config::NextHopProblem::Multicast,
            ),
        ] {
            let s = spec(serde_json::json!({
                "peerAddress": "2001:db8::2", "peerASN": 65000, "myASN": 65001, field: value
            }));
            assert_eq!(
                from_bgppeer("x", &s, RID).unwrap_err(),
                PeerError::BadNextHop {
                    field,
                    value: value.parse().unwrap(),
                    why
                },
                "{field} {value}"
            );
        }
        let ll = spec(serde_json::json!({"peerAddress": "fe80::2", "peerASN": 1, "myASN": 2}));
        assert_eq!(
            from_bgppeer("x", &ll, RID).unwrap_err(),
            PeerError::Interface(InterfaceProblem::Missing("fe80::2".parse().unwrap()))
        );
    }

    #[test]
    fn a_bgppeer_interface_is_the_scope_of_its_link_local_address() {
        let s = spec(serde_json::json!({
            "peerAddress": "fe80::2", "interface": "eth0", "peerASN": 65000, "myASN": 65001,
            "addressFamilies": ["IPv6Unicast"]
        }));
        let p = from_bgppeer("leaf1", &s, RID).unwrap();
        assert_eq!(p.session.transport.interface.as_deref(), Some("eth0"));
        assert_eq!(p.session.transport.id().to_string(), "[fe80::2%eth0]:179");
        // The same rules, and reasons, as the standalone configuration.
        for (json, want) in [
            (
                serde_json::json!({"peerAddress": "2001:db8::2", "interface": "eth0",
                                   "peerASN": 1, "myASN": 2}),
                InterfaceProblem::NotLinkLocal("2001:db8::2".parse().unwrap()),
            ),
            (
                serde_json::json!({"peerAddress": "fe80::2", "interface": "eth0",
                                   "peerASN": 1, "myASN": 2, "bfdProfile": "fast"}),
                InterfaceProblem::Bfd,
            ),
            (
                serde_json::json!({"peerAddress": "fe80::2", "interface": "eth0",
                                   "peerASN": 1, "myASN": 2, "ebgpMultihop": 2}),
                InterfaceProblem::Multihop,
            ),
        ] {
            assert_eq!(
                from_bgppeer("x", &spec(json.clone()), RID).unwrap_err(),
                PeerError::Interface(want),
                "{json}"
            );
        }
        let bad_name = spec(serde_json::json!({
            "peerAddress": "fe80::2", "interface": "eth 0", "peerASN": 1, "myASN": 2
        }));
        assert!(matches!(
            from_bgppeer("x", &bad_name, RID).unwrap_err(),
            PeerError::Interface(InterfaceProblem::BadName { .. })
        ));
    }

    #[test]
    fn an_inbound_link_local_connection_goes_to_the_peer_of_its_interface() {
        let (tx, _rx) = mpsc::channel(1);
        let p = |name: &str, interface: Option<&str>| InboundPeer {
            name: name.into(),
            peer: PeerId {
                addr: "[fe80::2]:179".parse().unwrap(),
                interface: interface.map(str::to_owned),
            },
            remote_as: 65000,
            tx: tx.clone(),
        };
        let index_of = |name: &str| match name {
            "eth0" => Some(2),
            "eth1" => Some(3),
            _ => None,
        };
        let peers = || {
            vec![
                p("zero", Some("eth0")),
                p("one", Some("eth1")),
                p("gone", Some("eth9")),
            ]
        };
        let names = |v: Vec<InboundPeer>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names(on_interface(peers(), 2, index_of)), ["zero"]);
        assert_eq!(names(on_interface(peers(), 3, index_of)), ["one"]);
        // Another link, or no scope at all: nobody's.
        assert!(on_interface(peers(), 4, index_of).is_empty());
        assert!(on_interface(peers(), 0, index_of).is_empty());
        // A peer without an interface takes connections without a scope only.
        assert_eq!(
            names(on_interface(vec![p("global", None)], 0, index_of)),
            ["global"]
        );
        assert!(on_interface(vec![p("global", None)], 2, index_of).is_empty());
    }

    #[test]
    fn a_changed_restart_bit_alone_is_the_same_session() {
        let s = spec(serde_json::json!({
            "peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001, "gracefulRestart": true
        }));
        let a = from_bgppeer("x", &s, RID).unwrap().session;
        let mut b = a.clone();
        b.fsm.graceful_restart.as_mut().unwrap().restarting = true;
        assert!(same_session(&a, &b));
        b.fsm.hold_time = 30;
        assert!(!same_session(&a, &b));
    }

    #[test]
    fn bgp_follows_bfd_but_not_before_its_first_up_nor_after_a_remote_admin_down() {
        use crate::bfd::codec::Diagnostic;
        let st = |state, remote_state, diagnostic| BfdStatus {
            state,
            remote_state,
            diagnostic,
            transmit_interval: None,
            detection_time: None,
        };
        let down = st(
            BfdState::Down,
            BfdState::Down,
            Diagnostic::ControlDetectionTimeExpired,
        );
        let up = st(BfdState::Up, BfdState::Up, Diagnostic::None);
        let init = st(BfdState::Init, BfdState::Down, Diagnostic::None);
        let remote_off = st(
            BfdState::Down,
            BfdState::AdminDown,
            Diagnostic::NeighborSignaledSessionDown,
        );
        // Before the first Up nothing closes BGP.
        let fresh = GateMemory::default();
        assert_eq!(bgp_allowed(fresh, &down).1, None);
        let (after_up, open) = bgp_allowed(fresh, &up);
        assert_eq!(open, Some(true));
        assert_eq!(bgp_allowed(after_up, &down).1, Some(false));
        assert_eq!(bgp_allowed(after_up, &init).1, Some(false));
        // The remote turning BFD off, and back on through Down and Init, leaves BGP alone.
        let (off, open) = bgp_allowed(after_up, &remote_off);
        assert_eq!(open, None);
        let (again, open) = bgp_allowed(off, &init);
        assert_eq!(open, None);
        let (back, open) = bgp_allowed(again, &up);
        assert_eq!(open, Some(true));
        // Once Up again, a real failure closes it.
        assert_eq!(bgp_allowed(back, &down).1, Some(false));
    }
}
