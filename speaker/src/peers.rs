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
use crate::bgp::message::AddressFamily;
use crate::bgp::session::{self, DesiredRoutes, SessionConfig, SessionHandle, StopMode};
use crate::bgp::transport::{Listener, Md5Key, TransportConfig, TtlPolicy};
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
    let mut transport = TransportConfig::new(SocketAddr::new(
        peer_ip,
        spec.peer_port.unwrap_or(crate::bgp::transport::BGP_PORT),
    ));
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

type IncomingRoutes = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

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
    listener: Option<(SocketAddr, Arc<Listener>, JoinHandle<()>)>,
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
    /// `restarting`: we have just restarted, so graceful-restart peers get the Restart State
    /// bit (RFC 4724 §3).
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

    /// Make the listener and the sessions match `peers`. A listener that cannot bind is an
    /// error and changes nothing.
    pub async fn apply(
        &mut self,
        listen: Option<SocketAddr>,
        peers: Vec<ResolvedPeer>,
    ) -> anyhow::Result<()> {
        let listener_changed = self.listener.as_ref().map(|(a, _, _)| *a) != listen;
        if listener_changed {
            if let Some(addr) = listen {
                let l =
                    Arc::new(Listener::bind(addr).with_context(|| format!("listening on {addr}"))?);
                info!(addr = %l.local_addr()?, "listening for BGP connections");
                let task = tokio::spawn(accept_loop(l.clone(), self.incoming.clone()));
                if let Some((_, _, old)) = self.listener.replace((addr, l, task)) {
                    old.abort();
                }
            } else if let Some((_, _, old)) = self.listener.take() {
                old.abort();
            }
        }
        let mut wanted: BTreeMap<String, ResolvedPeer> = peers
            .into_iter()
            .map(|p| (p.spec.name().to_owned(), p))
            .collect();
        for p in wanted.values_mut() {
            p.spec.session.transport.md5 = p.md5.clone();
            if let Some(gr) = &mut p.spec.session.fsm.graceful_restart {
                gr.restarting = self.restarting;
            }
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
            info!(peer = %name, addr = %p.spec.session.transport.peer, "starting session");
            let peer_ip = p.spec.session.transport.peer.ip();
            if let Some((_, l, _)) = &self.listener
                && let Some(key) = &p.md5
                && let Err(e) = l.set_peer_key(peer_ip, Some(key))
            {
                warn!(peer = %name, error = %e, "cannot set the TCP MD5 key on the listener");
            }
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
            self.incoming
                .lock()
                .expect("not poisoned")
                .insert(peer_ip, handle.incoming_sender());
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
        if listener_changed && let Some((_, l, _)) = &self.listener {
            for rt in self.peers.values() {
                if let Some(k) = &rt.md5 {
                    let _ = l.set_peer_key(rt.session_cfg.transport.peer.ip(), Some(k));
                }
            }
        }
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

    /// (name, peer address, state, routes desired) of every running session.
    pub fn sessions(&self) -> Vec<(String, SocketAddr, State, usize)> {
        self.peers
            .iter()
            .map(|(n, rt)| {
                (
                    n.clone(),
                    rt.session_cfg.transport.peer,
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

    async fn remove_peer(&mut self, rt: PeerRuntime, why: &str) {
        let ip = rt.session_cfg.transport.peer.ip();
        self.incoming.lock().expect("not poisoned").remove(&ip);
        if rt.md5.is_some()
            && let Some((_, l, _)) = &self.listener
        {
            let _ = l.set_peer_key(ip, None);
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
        if let Some((_, _, task)) = self.listener.take() {
            task.abort();
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
        if let Some((_, _, task)) = self.listener.take() {
            task.abort();
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
            Ok((stream, addr)) => {
                let to = incoming
                    .lock()
                    .expect("not poisoned")
                    .get(&addr.ip())
                    .cloned();
                match to {
                    Some(tx) => {
                        if tx.try_send(stream).is_err() {
                            warn!(%addr, "session busy; dropping inbound connection");
                        }
                    }
                    // RFC 4271 §8.2.1.1 leaves unconfigured peers to policy: ours is to refuse.
                    None => warn!(%addr, "connection from an unconfigured address; closing it"),
                }
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
