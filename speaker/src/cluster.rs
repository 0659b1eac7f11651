//! Cluster mode: `leafbridge-speaker --node-name NODE [--state-dir DIR]`.
//!
//! Every kind `desired::compute` reads is watched through the `StateSource` into a store of its
//! own; a change schedules a recompute (at once when none ran within the debounce window, else
//! at the end of it, so a burst of Service changes costs one recompute per window), and the
//! result goes to the peer manager: new or changed peers (re)start alone, route changes go to the
//! sessions as incremental UPDATEs.
//!
//! - Nothing is announced before every watch has listed its kind once (`InitDone`): no session
//!   even starts, so after a restart with graceful restart the routers keep our stale routes
//!   until the desired state is complete, and the first UPDATEs plus End-of-RIB carry all of it.
//! - A failing watch keeps its last objects (nothing is withdrawn), reports not ready and
//!   resumes; a relist that yields the same objects yields the same routes, and the
//!   Adj-RIB-Out diff sends nothing.
//! - SIGTERM: sessions with graceful restart close so that the routers keep our routes (and a
//!   marker tells the next start to set the Restart State bit); the others withdraw, wait
//!   `--drain-time`, then Cease.
//! - The node's `BGPNodeState` (sessions, prefix counts, conditions, Services not announced and
//!   why) is written on change only, at most once a second.
//! - A BGPPeer's `bfdProfile` names a `BFDProfile` (watched like the other kinds): its BGP
//!   session gets a BFD session with those timers, whose state is in the session's entry of
//!   the status. A missing or invalid profile is a `BFDProfileProblem` condition: the peer runs
//!   BGP without BFD, or with its last good profile while one is running.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource as _;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::Event;
use leafbridge_api::crd::{BGPNodeStateSpec, SecretKeyRef};
use leafbridge_api::rules::ClassConfig;
use leafbridge_api::{
    BFDProfile, BGPAdvertisement, BGPNodeState, BGPPeer, EventSink, IPPool, StateObject,
    StateSource,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn};

use crate::bfd::{self, BfdStatus};
use crate::bgp::session::DesiredRoutes;
use crate::bgp::transport::Md5Key;
use crate::desired::{self, ClusterView, Desired, Problem, ServiceOutcome, ServiceReason};
use crate::metrics::SpeakerMetrics;
use crate::peers::{BfdPeer, PasswordRef, PeerManager, PeerSpec, ResolvedPeer};
use crate::standalone::RESTART_MARKER;

/// Field manager of the speaker's status writes.
pub const FIELD_MANAGER: &str = "leafbridge-speaker";
/// At most this many Services are listed in `status.notAnnounced` (the count has them all).
pub const NOT_ANNOUNCED_LIST_MAX: usize = 50;
/// Status writes are coalesced to at most one per this interval.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Secrets and node facts (forwarding, rp_filter) are re-read this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Options {
    pub node_name: String,
    /// None: the in-cluster Kubernetes client.
    pub state_dir: Option<PathBuf>,
    pub restart_marker_dir: Option<PathBuf>,
    pub restarting: bool,
    pub metrics_address: Option<SocketAddr>,
    pub drain_time: Duration,
    pub listen: Option<SocketAddr>,
    pub debounce: Duration,
    pub router_id: Option<Ipv4Addr>,
    pub class: ClassConfig,
    pub shutdown_message: Option<String>,
}

/// The cluster-mode metrics, beside the per-peer ones of `SpeakerMetrics`.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub recomputes: Counter,
    /// From the first change seen to the new routes handed to the sessions.
    pub update_latency: Histogram,
    /// Seconds the state source has been failing (0 while every watch is healthy).
    pub staleness: Gauge<f64, AtomicU64>,
    pub status_writes: Counter,
    pub status_write_errors: Counter,
    /// Events published on Services whose outcome on this node changed.
    pub service_events: Counter,
    pub service_event_errors: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self {
            recomputes: Counter::default(),
            update_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            staleness: Gauge::default(),
            status_writes: Counter::default(),
            status_write_errors: Counter::default(),
            service_events: Counter::default(),
            service_event_errors: Counter::default(),
        }
    }
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("leafbridge_speaker");
        r.register(
            "desired_recomputes",
            "Desired-state computations",
            self.recomputes.clone(),
        );
        r.register(
            "desired_update_latency_seconds",
            "Time from a cluster change seen to the new routes handed to the sessions",
            self.update_latency.clone(),
        );
        r.register(
            "state_source_staleness_seconds",
            "Seconds the state source has been failing (0: every watch healthy)",
            self.staleness.clone(),
        );
        r.register(
            "status_writes",
            "BGPNodeState status writes",
            self.status_writes.clone(),
        );
        r.register(
            "status_write_errors",
            "BGPNodeState status writes that failed",
            self.status_write_errors.clone(),
        );
        r.register(
            "service_events",
            "Events published on Services whose outcome on this node changed",
            self.service_events.clone(),
        );
        r.register(
            "service_event_errors",
            "Service Events that could not be published",
            self.service_event_errors.clone(),
        );
    }
}

/// The kinds watched, in `ClusterView` order, then the BFD profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Service,
    EndpointSlice,
    IPPool,
    BGPPeer,
    BGPAdvertisement,
    BFDProfile,
}

const KINDS: usize = 7;

#[derive(Debug)]
enum Signal {
    Changed(Kind),
    Synced(Kind),
    Failed(Kind, String),
}

type Key = (Option<String>, String);
type Store<K> = Arc<Mutex<HashMap<Key, Arc<K>>>>;

fn key_of<K: StateObject>(o: &K) -> Key {
    (
        o.meta().namespace.clone(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// Watch kind `K` forever into a store; tell the main loop about every change.
fn spawn_watch<K: StateObject>(
    source: &StateSource,
    kind: Kind,
    tx: mpsc::UnboundedSender<Signal>,
) -> Store<K> {
    let store: Store<K> = Arc::default();
    let (source, s) = (source.clone(), store.clone());
    tokio::spawn(async move {
        loop {
            let mut stream = source.watch::<K>();
            let mut buffer: Option<HashMap<Key, Arc<K>>> = None;
            while let Some(ev) = stream.next().await {
                let signal = match ev {
                    Ok(Event::Init) => {
                        buffer = Some(HashMap::new());
                        continue;
                    }
                    Ok(Event::InitApply(o)) => {
                        buffer
                            .get_or_insert_default()
                            .insert(key_of(&o), Arc::new(o));
                        continue;
                    }
                    Ok(Event::InitDone) => {
                        // A relist replaces the store only once it is complete: until then the
                        // last known objects stay (and so do their routes).
                        *s.lock().expect("not poisoned") = buffer.take().unwrap_or_default();
                        Signal::Synced(kind)
                    }
                    Ok(Event::Apply(o)) => {
                        s.lock()
                            .expect("not poisoned")
                            .insert(key_of(&o), Arc::new(o));
                        Signal::Changed(kind)
                    }
                    Ok(Event::Delete(o)) => {
                        s.lock().expect("not poisoned").remove(&key_of(&o));
                        Signal::Changed(kind)
                    }
                    Err(e) => {
                        let _ = tx.send(Signal::Failed(kind, e.to_string()));
                        // kube's watcher retries on the next poll; do not spin.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if tx.send(signal).is_err() {
                    return;
                }
            }
            let _ = tx.send(Signal::Failed(kind, "watch stream ended".into()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    store
}

fn snapshot<K>(s: &Store<K>) -> Vec<Arc<K>> {
    let g = s.lock().expect("not poisoned");
    let mut v: Vec<(&Key, &Arc<K>)> = g.iter().collect();
    // Sorted, so that the same objects give the same result in the same order.
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, o)| o.clone()).collect()
}

struct Stores {
    nodes: Store<Node>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pools: Store<IPPool>,
    peers: Store<BGPPeer>,
    ads: Store<BGPAdvertisement>,
    bfd_profiles: Store<BFDProfile>,
}

pub use crate::netcheck::NodeFacts;

/// One condition as (type, status, reason, message).
type Cond = (&'static str, bool, String, String);

/// The conditions of a node's BGPNodeState (pure).
pub fn node_conditions(
    ready: Result<(), String>,
    desired: &Desired,
    facts: &NodeFacts,
    secret_missing: &[String],
    bfd_problems: &[String],
) -> Vec<Cond> {
    let mut out: Vec<Cond> = Vec::new();
    out.push(match ready {
        Ok(()) => ("Ready", true, "Synced".into(), String::new()),
        Err(m) => ("Ready", false, "StateSourceUnavailable".into(), m),
    });
    let fwd_off: Vec<&str> = [
        ("IPv4", facts.ipv4_forwarding),
        ("IPv6", facts.ipv6_forwarding),
    ]
    .into_iter()
    .filter(|(_, v)| *v == Some(false))
    .map(|(f, _)| f)
    .collect();
    out.push(if let Some(e) = &facts.error {
        (
            "ForwardingDisabled",
            false,
            "CheckFailed".into(),
            format!("cannot read forwarding and rp_filter over rtnetlink: {e}"),
        )
    } else if fwd_off.is_empty() {
        (
            "ForwardingDisabled",
            false,
            "ForwardingOn".into(),
            String::new(),
        )
    } else {
        (
            "ForwardingDisabled",
            true,
            "ForwardingOff".into(),
            format!(
                "{} forwarding is off: routed traffic to pod and service CIDRs is dropped",
                fwd_off.join(" and ")
            ),
        )
    });
    out.push(if facts.strict_rp_filter.is_empty() {
        (
            "ReversePathFilter",
            false,
            "NotStrict".into(),
            String::new(),
        )
    } else {
        (
            "ReversePathFilter",
            true,
            "Strict".into(),
            format!(
                "strict rp_filter on {}: office traffic arriving asymmetrically is dropped",
                facts.strict_rp_filter.join(", ")
            ),
        )
    });
    out.push(if secret_missing.is_empty() {
        ("SecretMissing", false, "SecretsFound".into(), String::new())
    } else {
        (
            "SecretMissing",
            true,
            "SecretMissing".into(),
            secret_missing.join("; "),
        )
    });
    out.push(if bfd_problems.is_empty() {
        (
            "BFDProfileProblem",
            false,
            "ProfilesFound".into(),
            String::new(),
        )
    } else {
        (
            "BFDProfileProblem",
            true,
            "ProfileMissingOrInvalid".into(),
            bfd_problems.join("; "),
        )
    });
    let problems: Vec<String> = desired
        .problems
        .iter()
        .map(|p| match p {
            Problem::InvalidPeer { name, error } => format!("BGPPeer {name}: {error}"),
            Problem::InvalidAdvertisement { name, error } => {
                format!("BGPAdvertisement {name}: {error}")
            }
            Problem::InvalidPool { name, error } => format!("IPPool {name}: {error}"),
            Problem::NoRouterId => {
                "no --router-id and the Node has no IPv4 InternalIP: no session starts".into()
            }
        })
        .collect();
    out.push(if problems.is_empty() {
        ("InvalidConfiguration", false, "Valid".into(), String::new())
    } else {
        (
            "InvalidConfiguration",
            true,
            "Invalid".into(),
            problems.join("; "),
        )
    });
    out.push(match &desired.node_reason {
        None => ("NodeNotEligible", false, "Eligible".into(), String::new()),
        Some(r) => (
            "NodeNotEligible",
            true,
            r.as_str().into(),
            "Service routes withdrawn; sessions and pod CIDR routes kept".into(),
        ),
    });
    out.push(if desired.unadvertised_pools.is_empty() {
        (
            "UnadvertisedPools",
            false,
            "AllAdvertised".into(),
            String::new(),
        )
    } else {
        let pools: Vec<&str> = desired
            .unadvertised_pools
            .iter()
            .take(20)
            .map(String::as_str)
            .collect();
        (
            "UnadvertisedPools",
            true,
            "NoAdvertisementSelectsPool".into(),
            format!(
                "no BGPAdvertisement selects IPPool(s) {}: nothing is announced from them",
                pools.join(", ")
            ),
        )
    });
    out
}

/// The status document of the node's BGPNodeState (pure), without condition times.
pub fn node_status(
    desired: &Desired,
    sessions: &[(
        String,
        crate::bgp::transport::PeerId,
        crate::bgp::fsm::State,
        usize,
    )],
    bfd: &BTreeMap<String, (String, BfdStatus)>,
) -> Value {
    let mut not_announced = Vec::new();
    let mut count = 0usize;
    let mut announced = 0usize;
    for ((ns, name), o) in &desired.services {
        match o {
            ServiceOutcome::Announced(_) => announced += 1,
            ServiceOutcome::NotAnnounced(r) => {
                count += 1;
                if not_announced.len() < NOT_ANNOUNCED_LIST_MAX {
                    let mut e = json!({"namespace": ns, "name": name, "reason": r.as_str()});
                    let m = r.message();
                    if !m.is_empty() {
                        e["message"] = m.into();
                    }
                    not_announced.push(e);
                }
            }
        }
    }
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|(peer, addr, state, prefixes)| {
            let mut s = json!({"peer": peer, "address": addr.to_string(),
                               "state": state.to_string(), "prefixesAdvertised": prefixes});
            if let Some((profile, b)) = bfd.get(peer) {
                s["bfd"] = bfd_status(profile, b);
            }
            s
        })
        .collect();
    let established = sessions
        .iter()
        .filter(|s| s["state"] == "Established")
        .count();
    json!({
        "routerId": desired.router_id.map(|r| r.to_string()),
        "sessions": sessions,
        "sessionsEstablished": established,
        "announcedPrefixes": desired.announced_prefixes(),
        "announcedServices": announced,
        "notAnnounced": not_announced,
        "notAnnouncedCount": count,
    })
}

/// A BFD session's entry in the status (`BFDSessionStatus`).
fn bfd_status(profile: &str, b: &BfdStatus) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    let mut v = json!({"profile": profile, "state": b.state.to_string(),
                       "remoteState": b.remote_state.to_string(),
                       "diagnostic": format!("{:?}", b.diagnostic)});
    if let Some(t) = ms(b.transmit_interval) {
        v["transmitIntervalMs"] = t.into();
    }
    if let Some(t) = ms(b.detection_time) {
        v["detectionTimeMs"] = t.into();
    }
    v
}

/// The BFD session a BGPPeer asks for (pure): `None` when it names no `bfdProfile`, else the
/// named BFDProfile's timers, or why it cannot be used (not found, out of bounds).
pub fn resolve_bfd_profile(
    spec: &PeerSpec,
    profiles: &[Arc<BFDProfile>],
) -> Option<Result<bfd::Profile, String>> {
    let name = spec.bfd_profile.as_deref()?;
    let Some(p) = profiles
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
    else {
        return Some(Err(format!("BFDProfile {name} not found")));
    };
    let profile = crate::config::BfdProfile::from(&p.spec);
    Some(
        profile
            .validate(name)
            .map(|()| profile.profile())
            .map_err(|e| e.to_string()),
    )
}

/// The BGPPeers each prefix goes to.
pub fn prefix_peers(desired: &Desired) -> HashMap<IpNet, Vec<&str>> {
    let mut m: HashMap<IpNet, Vec<&str>> = HashMap::new();
    for (name, p) in &desired.peers {
        for r in &p.routes {
            m.entry(r.route.prefix).or_default().push(name);
        }
    }
    m
}

/// A Service whose outcome on this node changed, as an Event on the Service (pure): reason
/// `Announced` with the prefixes and the BGPPeers they go to, or the `ServiceReason` this node
/// does not announce it for. Warning for reasons an operator has to fix in the configuration;
/// Normal for those that follow the cluster (endpoints, node state, no address yet).
pub fn service_event(
    node: &str,
    peers_of: &HashMap<IpNet, Vec<&str>>,
    outcome: &ServiceOutcome,
) -> KubeEvent {
    let (type_, reason, note) = match outcome {
        ServiceOutcome::Announced(prefixes) => {
            let mut peers: Vec<&str> = prefixes
                .iter()
                .flat_map(|p| peers_of.get(p).into_iter().flatten().copied())
                .collect();
            peers.sort_unstable();
            peers.dedup();
            let list: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
            let to = if peers.is_empty() {
                "to no BGPPeer (no session negotiates its family)".to_owned()
            } else {
                format!("to BGPPeer {}", peers.join(", "))
            };
            (
                EventType::Normal,
                "Announced".to_owned(),
                format!("node {node} announces {} {to}", list.join(", ")),
            )
        }
        ServiceOutcome::NotAnnounced(r) => {
            let warn = matches!(
                r,
                ServiceReason::AddressInNoPool(_)
                    | ServiceReason::NoAdvertisementSelectsPool(_)
                    | ServiceReason::NoPeerForAdvertisement
            );
            let m = r.message();
            let note = if m.is_empty() {
                format!("node {node} does not announce it: {}", r.as_str())
            } else {
                format!("node {node} does not announce it: {} ({m})", r.as_str())
            };
            (
                if warn {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                r.as_str().to_owned(),
                note,
            )
        }
    };
    KubeEvent {
        type_,
        reason,
        note: Some(note),
        action: "Announce".into(),
        secondary: None,
    }
}

/// Service Events waiting to be published, by Service: a newer outcome replaces an older one
/// not yet sent, so a burst costs at most one Event per Service and node.
#[derive(Default)]
struct EventQueue {
    pending: Mutex<HashMap<(String, String), (KubeEvent, ObjectReference)>>,
    wake: tokio::sync::Notify,
}

/// Publish queued Service Events one at a time, for as long as the speaker runs.
fn spawn_event_publisher(sink: EventSink, metrics: ClusterMetrics) -> Arc<EventQueue> {
    let q = Arc::new(EventQueue::default());
    let queue = q.clone();
    tokio::spawn(async move {
        loop {
            queue.wake.notified().await;
            loop {
                let batch = std::mem::take(&mut *queue.pending.lock().expect("not poisoned"));
                if batch.is_empty() {
                    break;
                }
                for (_, (ev, regarding)) in batch {
                    match sink.publish(&ev, &regarding).await {
                        Ok(()) => {
                            metrics.service_events.inc();
                        }
                        Err(e) => {
                            metrics.service_event_errors.inc();
                            debug!(error = %e, "cannot publish a Service Event");
                        }
                    }
                }
            }
        }
    });
    q
}

/// A status write to a shared configuration object.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectStatus {
    /// `status.advertisement` of an IPPool.
    Pool(String, Value),
    /// `status.conditions` (`Valid`) of a BGPPeer.
    Peer(String, Value),
    /// `status.conditions` (`Valid`) of a BGPAdvertisement.
    Advertisement(String, Value),
}

fn valid_condition(
    current: &[Condition],
    generation: Option<i64>,
    error: Option<&str>,
    now: &str,
) -> Option<Value> {
    let (status, reason, message) = match error {
        None => ("True", "Valid", ""),
        Some(e) => ("False", "Invalid", e),
    };
    let same = current.iter().any(|c| {
        c.type_ == "Valid"
            && c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == generation
    });
    (!same).then(|| {
        json!([{"type": "Valid", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": now, "observedGeneration": generation}])
    })
}

/// The status writes the IPPools, BGPPeers and BGPAdvertisements need (pure): only where what
/// this node computed differs from what the object already shows, so the speakers of a
/// cluster, which all compute the same, write an object once per change, not once per node
/// and recompute. Peers are judged only by the nodes they select.
pub fn object_statuses(desired: &Desired, view: &ClusterView, now: &str) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for p in &view.ip_pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(by) = desired.pool_advertisements.get(&name) else {
            continue;
        };
        let want = leafbridge_api::crd::IPPoolAdvertisementStatus {
            advertised: !by.is_empty(),
            reason: if by.is_empty() {
                "NoAdvertisementSelectsPool"
            } else {
                "Advertised"
            }
            .into(),
            advertisements: by.iter().take(20).cloned().collect(),
        };
        if p.status.as_ref().and_then(|s| s.advertisement.as_ref()) != Some(&want) {
            out.push(ObjectStatus::Pool(
                name,
                json!({"advertisement": serde_json::to_value(&want).unwrap_or_default()}),
            ));
        }
    }
    let peer_errors: HashMap<&str, &str> = desired
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::InvalidPeer { name, error } => Some((name.as_str(), error.as_str())),
            _ => None,
        })
        .collect();
    for p in &view.peers {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let error = peer_errors.get(name).copied();
        if error.is_none() && !desired.peers.contains_key(name) {
            continue;
        }
        let current = p.status.as_ref().map(|s| s.conditions.as_slice());
        if let Some(c) = valid_condition(
            current.unwrap_or_default(),
            p.metadata.generation,
            error,
            now,
        ) {
            out.push(ObjectStatus::Peer(
                name.to_owned(),
                json!({"conditions": c}),
            ));
        }
    }
    let ad_errors: HashMap<&str, &str> = desired
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::InvalidAdvertisement { name, error } => Some((name.as_str(), error.as_str())),
            _ => None,
        })
        .collect();
    for a in &view.advertisements {
        let name = a.metadata.name.as_deref().unwrap_or_default();
        let error = ad_errors.get(name).copied();
        if error.is_none() && !desired.valid_advertisements.contains(name) {
            continue;
        }
        let current = a.status.as_ref().map(|s| s.conditions.as_slice());
        if let Some(c) = valid_condition(
            current.unwrap_or_default(),
            a.metadata.generation,
            error,
            now,
        ) {
            out.push(ObjectStatus::Advertisement(
                name.to_owned(),
                json!({"conditions": c}),
            ));
        }
    }
    out
}

/// Conditions with lastTransitionTime carried over from the previous write while the status
/// of a condition stays the same (so an unchanged node writes nothing).
fn with_times(conds: &[Cond], prev: &mut HashMap<&'static str, (bool, String)>) -> Vec<Value> {
    conds
        .iter()
        .map(|(t, status, reason, message)| {
            let since = match prev.get(t) {
                Some((s, since)) if s == status => since.clone(),
                _ => {
                    let now = k8s_openapi::jiff::Timestamp::now()
                        .round(k8s_openapi::jiff::Unit::Second)
                        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
                        .to_string();
                    prev.insert(t, (*status, now.clone()));
                    now
                }
            };
            json!({"type": t, "status": if *status {"True"} else {"False"}, "reason": reason,
                   "message": message, "lastTransitionTime": since})
        })
        .collect()
}

/// The secret key of a Secret, from `data` (base64 in the manifest) or `stringData`.
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
}

/// Keys read from Secrets (never logged: `Md5Key`'s Debug is redacted).
#[derive(Default)]
struct Secrets {
    cache: HashMap<SecretKeyRef, Result<Md5Key, String>>,
}

impl Secrets {
    async fn get(&mut self, source: &StateSource, r: &SecretKeyRef) -> Result<Md5Key, String> {
        if let Some(v) = self.cache.get(r) {
            return v.clone();
        }
        let res = match source.get::<Secret>(Some(&r.namespace), &r.name).await {
            Ok(Some(s)) => match secret_value(&s, &r.key) {
                Some(bytes) => Md5Key::new(bytes)
                    .map_err(|e| format!("Secret {}/{} key {}: {e}", r.namespace, r.name, r.key)),
                None => Err(format!(
                    "Secret {}/{} has no key {}",
                    r.namespace, r.name, r.key
                )),
            },
            Ok(None) => Err(format!("Secret {}/{} not found", r.namespace, r.name)),
            Err(e) => Err(format!("Secret {}/{}: {e}", r.namespace, r.name)),
        };
        self.cache.insert(r.clone(), res.clone());
        res
    }
}

struct Runtime {
    opts: Options,
    source: StateSource,
    stores: Stores,
    manager: PeerManager,
    metrics: ClusterMetrics,
    secrets: Secrets,
    /// The key each running peer uses: kept when its Secret goes missing.
    keys: HashMap<String, Md5Key>,
    secret_missing: Vec<String>,
    /// The profile each running peer's BFD session uses: kept when its BFDProfile goes.
    bfd_profiles: HashMap<String, bfd::Profile>,
    bfd_problems: Vec<String>,
    desired: Desired,
    facts: NodeFacts,
    synced: [bool; KINDS],
    failing: [Option<(Instant, String)>; KINDS],
    /// Status as last written (without times) and the condition times.
    written: Option<Value>,
    cond_times: HashMap<&'static str, (bool, String)>,
    created: bool,
    events: Arc<EventQueue>,
    /// Object status writes done, so that one not yet seen back through the watch is not
    /// repeated.
    objects_written: HashMap<(u8, String), Value>,
    /// Set after the first recompute: the outcomes it finds are (after a restart) the ones
    /// the Services already had, so they are not repeated as Events.
    computed_once: bool,
}

/// Run until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let source = match &opts.state_dir {
        Some(dir) => StateSource::dir(dir)
            .with_context(|| format!("opening the state directory {}", dir.display()))?,
        None => StateSource::kube(
            kube::Client::try_default()
                .await
                .context("creating the in-cluster Kubernetes client")?,
        ),
    };
    let restarting = opts.restarting || marker_fresh(opts.restart_marker_dir.as_deref());
    if restarting {
        info!("starting as a restarting speaker (graceful restart R bit set)");
    }
    let speaker_metrics = SpeakerMetrics::default();
    let metrics = ClusterMetrics::default();
    let mut registry = Registry::default();
    speaker_metrics.register(&mut registry);
    metrics.register(&mut registry);
    source.register_metrics(&mut registry);
    let ready = leafbridge_api::ops::Readiness::new();
    if let Some(addr) = opts.metrics_address {
        leafbridge_api::ops::serve(addr, Arc::new(registry), ready.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let stores = Stores {
        nodes: spawn_watch(&source, Kind::Node, tx.clone()),
        services: spawn_watch(&source, Kind::Service, tx.clone()),
        slices: spawn_watch(&source, Kind::EndpointSlice, tx.clone()),
        pools: spawn_watch(&source, Kind::IPPool, tx.clone()),
        peers: spawn_watch(&source, Kind::BGPPeer, tx.clone()),
        ads: spawn_watch(&source, Kind::BGPAdvertisement, tx.clone()),
        bfd_profiles: spawn_watch(&source, Kind::BFDProfile, tx.clone()),
    };
    drop(tx);
    let facts = NodeFacts::read();
    warn_facts(&NodeFacts::default(), &facts);
    let events = spawn_event_publisher(
        source.event_sink(Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(opts.node_name.clone()),
        }),
        metrics.clone(),
    );
    let mut rt = Runtime {
        manager: PeerManager::new(speaker_metrics, restarting),
        opts,
        source,
        stores,
        metrics,
        secrets: Secrets::default(),
        keys: HashMap::new(),
        secret_missing: Vec::new(),
        bfd_profiles: HashMap::new(),
        bfd_problems: Vec::new(),
        desired: Desired::default(),
        facts,
        synced: [false; KINDS],
        failing: Default::default(),
        written: None,
        cond_times: HashMap::new(),
        created: false,
        events,
        objects_written: HashMap::new(),
        computed_once: false,
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refresh = Instant::now();
    let mut last_recompute: Option<Instant> = None;
    // (when to recompute, when the first change not yet applied was seen)
    let mut due: Option<(Instant, Instant)> = None;
    loop {
        let at = due.map(|(at, _)| at);
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            sig = rx.recv() => {
                let Some(sig) = sig else { break };
                let now = Instant::now();
                rt.on_signal(sig, now);
                // Drain what else is queued: one decision for the whole batch.
                while let Ok(sig) = rx.try_recv() {
                    rt.on_signal(sig, now);
                }
                if rt.synced.iter().all(|s| *s) && due.is_none() {
                    // At once if the last recompute is older than the window, else at its end.
                    let at = last_recompute
                        .map(|l| l + rt.opts.debounce)
                        .filter(|t| *t > now)
                        .unwrap_or(now);
                    due = Some((at, now));
                }
                ready.set_ready(rt.ready().is_ok());
            }
            () = sleep_until_opt(at) => {
                let (_, seen) = due.take().expect("set when armed");
                rt.recompute(seen).await;
                last_recompute = Some(Instant::now());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let stale = rt.failing.iter().flatten().map(|(since, _)| now - *since).max();
                rt.metrics.staleness.set(stale.map_or(0.0, |d| d.as_secs_f64()));
                if now - last_refresh >= REFRESH_INTERVAL {
                    last_refresh = now;
                    let facts = NodeFacts::read();
                    warn_facts(&rt.facts, &facts);
                    rt.facts = facts;
                    // Re-read Secrets: a changed key restarts only that peer's session.
                    rt.secrets.cache.clear();
                    if rt.synced.iter().all(|s| *s) && due.is_none() {
                        due = Some((now, now));
                    }
                }
                if rt.synced.iter().all(|s| *s) {
                    rt.write_status().await;
                    rt.write_object_statuses().await;
                }
            }
        }
    }
    ready.set_ready(false);
    rt.shutdown().await;
    Ok(())
}

impl Runtime {
    fn on_signal(&mut self, sig: Signal, now: Instant) {
        match sig {
            Signal::Synced(k) => {
                if !self.synced[k as usize] {
                    debug!(kind = ?k, "initial list complete");
                }
                self.synced[k as usize] = true;
                if self.failing[k as usize].take().is_some() {
                    info!(kind = ?k, "watch recovered");
                }
            }
            Signal::Changed(k) => {
                if self.failing[k as usize].take().is_some() {
                    info!(kind = ?k, "watch recovered");
                }
            }
            Signal::Failed(k, e) => {
                if self.failing[k as usize].is_none() {
                    warn!(kind = ?k, error = %e, "state source failing; keeping the last known routes");
                    self.failing[k as usize] = Some((now, e));
                }
            }
        }
    }

    fn ready(&self) -> Result<(), String> {
        if let Some((_, e)) = self.failing.iter().flatten().next() {
            return Err(e.clone());
        }
        if !self.synced.iter().all(|s| *s) {
            return Err("initial list of the cluster state not complete".into());
        }
        Ok(())
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            nodes: snapshot(&self.stores.nodes),
            services: snapshot(&self.stores.services),
            endpoint_slices: snapshot(&self.stores.slices),
            ip_pools: snapshot(&self.stores.pools),
            peers: snapshot(&self.stores.peers),
            advertisements: snapshot(&self.stores.ads),
            class: self.opts.class.clone(),
            router_id: self.opts.router_id,
        }
    }

    async fn recompute(&mut self, seen: Instant) {
        let view = self.view();
        let desired = desired::compute(&view, &self.opts.node_name);
        self.metrics.recomputes.inc();
        self.log_changes(&desired);
        let mut resolved = Vec::new();
        let mut missing = Vec::new();
        let profiles = snapshot(&self.stores.bfd_profiles);
        let mut bfd_problems = Vec::new();
        for (name, p) in &desired.peers {
            let md5 = match &p.spec.password {
                PasswordRef::None => None,
                PasswordRef::File(path) => match Md5Key::from_file(path) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        missing.push(format!("BGPPeer {name}: {e}"));
                        continue;
                    }
                },
                PasswordRef::Secret(r) => match self.secrets.get(&self.source, r).await {
                    Ok(k) => Some(k),
                    // Keep a running session on its key; never start one without it.
                    Err(e) => match self.keys.get(name) {
                        Some(k) => {
                            missing
                                .push(format!("BGPPeer {name}: {e} (running with the last key)"));
                            Some(k.clone())
                        }
                        None => {
                            missing.push(format!("BGPPeer {name}: {e} (session not started)"));
                            continue;
                        }
                    },
                },
            };
            let bfd = match resolve_bfd_profile(&p.spec, &profiles) {
                None => None,
                Some(Ok(profile)) => Some(profile),
                // Keep a running BFD session on its profile; else BGP runs without BFD.
                Some(Err(e)) => match self.bfd_profiles.get(name) {
                    Some(profile) => {
                        bfd_problems.push(format!(
                            "BGPPeer {name}: {e} (BFD running with the last profile)"
                        ));
                        Some(*profile)
                    }
                    None => {
                        bfd_problems.push(format!("BGPPeer {name}: {e} (BGP runs without BFD)"));
                        None
                    }
                },
            };
            resolved.push(ResolvedPeer {
                spec: p.spec.clone(),
                md5,
                routes: DesiredRoutes::new(p.routes.clone()),
                bfd: bfd.map(|profile| BfdPeer::for_bgp_peer(&p.spec, profile)),
            });
        }
        if bfd_problems != self.bfd_problems {
            for m in &bfd_problems {
                warn!(problem = %m, "BFD profile unusable");
            }
        }
        self.bfd_problems = bfd_problems;
        self.bfd_profiles = resolved
            .iter()
            .filter_map(|p| Some((p.spec.name().to_owned(), p.bfd.as_ref()?.profile)))
            .collect();
        if missing != self.secret_missing {
            for m in &missing {
                warn!(problem = %m, "peer password unavailable");
            }
        }
        self.secret_missing = missing;
        self.keys = resolved
            .iter()
            .filter_map(|p| Some((p.spec.name().to_owned(), p.md5.clone()?)))
            .collect();
        match self.manager.apply(self.opts.listen, resolved).await {
            Err(e) => error!(error = %format!("{e:#}"), "cannot apply the desired peers"),
            // The marker goes only once the sessions run from the complete state: a crash
            // before that restarts with the Restart State bit still set.
            Ok(()) if !self.computed_once => {
                crate::standalone::remove_restart_marker(self.opts.restart_marker_dir.as_deref())
            }
            Ok(()) => {}
        }
        self.metrics
            .update_latency
            .observe(seen.elapsed().as_secs_f64());
        if self.computed_once {
            self.queue_events(&view, &desired);
        }
        self.computed_once = true;
        self.desired = desired;
    }

    /// One log line per Service whose outcome changed, in the Service's span.
    fn log_changes(&self, new: &Desired) {
        if new.problems != self.desired.problems {
            for p in &new.problems {
                warn!(problem = ?p, "configuration object not usable");
            }
        }
        if new.node_reason != self.desired.node_reason {
            info!(reason = ?new.node_reason, "node eligibility for Service routes changed");
        }
        // Thousands of Services: compare without logging unless something changed.
        for (key, o) in &new.services {
            if self.desired.services.get(key) == Some(o) {
                continue;
            }
            let _span = info_span!("service", namespace = %key.0, name = %key.1).entered();
            match o {
                ServiceOutcome::Announced(p) => debug!(prefixes = ?p, "announced"),
                ServiceOutcome::NotAnnounced(r) => debug!(reason = r.as_str(), "not announced"),
            }
        }
    }

    /// An Event for each Service whose outcome on this node changed since the last recompute.
    fn queue_events(&self, view: &ClusterView, new: &Desired) {
        let changed: Vec<(&(String, String), &ServiceOutcome)> = new
            .services
            .iter()
            .filter(|(k, o)| self.desired.services.get(*k) != Some(*o))
            .collect();
        if changed.is_empty() {
            return;
        }
        let by_key: HashMap<(&str, &str), &Arc<Service>> = view
            .services
            .iter()
            .map(|s| {
                (
                    (
                        s.metadata.namespace.as_deref().unwrap_or("default"),
                        s.metadata.name.as_deref().unwrap_or_default(),
                    ),
                    s,
                )
            })
            .collect();
        let peers_of = prefix_peers(new);
        let mut pending = self.events.pending.lock().expect("not poisoned");
        for (key, outcome) in changed {
            let Some(svc) = by_key.get(&(key.0.as_str(), key.1.as_str())) else {
                continue;
            };
            let ev = service_event(&self.opts.node_name, &peers_of, outcome);
            pending.insert(key.clone(), (ev, svc.object_ref(&())));
        }
        drop(pending);
        self.events.wake.notify_one();
    }

    /// IPPool `status.advertisement` and the `Valid` conditions of BGPPeers and
    /// BGPAdvertisements, where they changed.
    async fn write_object_statuses(&mut self) {
        if !self.computed_once {
            return;
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
            .to_string();
        let writes = object_statuses(&self.desired, &self.view(), &now);
        // What the watch already shows written needs no memory any more.
        self.objects_written.retain(|(kind, name), _| {
            writes.iter().any(|w| match w {
                ObjectStatus::Pool(n, _) => *kind == 0 && n == name,
                ObjectStatus::Peer(n, _) => *kind == 1 && n == name,
                ObjectStatus::Advertisement(n, _) => *kind == 2 && n == name,
            })
        });
        for w in writes {
            let (kind, name, status) = match &w {
                ObjectStatus::Pool(n, v) => (0u8, n, v),
                ObjectStatus::Peer(n, v) => (1, n, v),
                ObjectStatus::Advertisement(n, v) => (2, n, v),
            };
            let key = (kind, name.clone());
            let unchanged = |old: &Value| {
                // The same content, whatever the time it was written at.
                let strip = |v: &Value| {
                    let mut v = v.clone();
                    if let Some(c) = v.get_mut("conditions").and_then(|c| c.get_mut(0)) {
                        c["lastTransitionTime"] = Value::Null;
                    }
                    v
                };
                strip(old) == strip(status)
            };
            if self.objects_written.get(&key).is_some_and(unchanged) {
                continue;
            }
            let res = match kind {
                0 => {
                    self.source
                        .apply_status::<IPPool>(None, name, FIELD_MANAGER, status.clone())
                        .await
                }
                1 => {
                    self.source
                        .apply_status::<BGPPeer>(None, name, FIELD_MANAGER, status.clone())
                        .await
                }
                _ => {
                    self.source
                        .apply_status::<BGPAdvertisement>(None, name, FIELD_MANAGER, status.clone())
                        .await
                }
            };
            match res {
                Ok(()) => {
                    self.metrics.status_writes.inc();
                    self.objects_written.insert(key, status.clone());
                }
                Err(e) => {
                    self.metrics.status_write_errors.inc();
                    debug!(error = %e, object = %name, "cannot write a configuration object's status");
                }
            }
        }
    }

    async fn write_status(&mut self) {
        let sessions = self.manager.sessions();
        let bfd = self
            .manager
            .bfd_sessions()
            .into_iter()
            .map(|(peer, st)| {
                let profile = self
                    .desired
                    .peers
                    .get(&peer)
                    .and_then(|p| p.spec.bfd_profile.clone())
                    .unwrap_or_default();
                (peer, (profile, st))
            })
            .collect();
        let mut status = node_status(&self.desired, &sessions, &bfd);
        let conds = node_conditions(
            self.ready(),
            &self.desired,
            &self.facts,
            &self.secret_missing,
            &self.bfd_problems,
        );
        let key = json!([
            status.clone(),
            conds
                .iter()
                .map(|(t, s, r, m)| json!([t, s, r, m]))
                .collect::<Vec<_>>()
        ]);
        if self.written.as_ref() == Some(&key) {
            return;
        }
        status["conditions"] = with_times(&conds, &mut self.cond_times).into();
        let name = &self.opts.node_name;
        if !self.created {
            let obj = BGPNodeState::new(name, BGPNodeStateSpec {});
            match self.source.create_if_missing(&obj).await {
                Ok(()) => self.created = true,
                Err(e) => {
                    self.metrics.status_write_errors.inc();
                    warn!(error = %e, "cannot create this node's BGPNodeState");
                    return;
                }
            }
        }
        match self
            .source
            .apply_status::<BGPNodeState>(None, name, FIELD_MANAGER, status)
            .await
        {
            Ok(()) => {
                self.metrics.status_writes.inc();
                self.written = Some(key);
            }
            Err(e) => {
                self.metrics.status_write_errors.inc();
                // Recreated on the next try (someone may have deleted it).
                self.created = false;
                warn!(error = %e, "cannot write this node's BGPNodeState status");
            }
        }
    }

    async fn shutdown(&mut self) {
        let graceful = !self.manager.is_empty()
            && self
                .desired
                .peers
                .values()
                .any(|p| p.spec.session.fsm.graceful_restart.is_some());
        if graceful && let Some(dir) = &self.opts.restart_marker_dir {
            let restart_time = self
                .desired
                .peers
                .values()
                .filter_map(|p| p.spec.session.fsm.graceful_restart.as_ref())
                .map(|g| g.restart_time)
                .max()
                .unwrap_or(crate::peers::DEFAULT_RESTART_TIME);
            if let Err(e) = write_marker(dir, restart_time) {
                warn!(error = %e, "cannot write the graceful-restart marker");
            }
        }
        info!(drain = ?self.opts.drain_time, "shutting down");
        self.manager
            .drain_and_shutdown(self.opts.drain_time, self.opts.shutdown_message.clone())
            .await;
    }
}

fn warn_facts(old: &NodeFacts, new: &NodeFacts) {
    if new == old {
        return;
    }
    if new.ipv4_forwarding == Some(false) && old.ipv4_forwarding != Some(false) {
        warn!("IPv4 forwarding is off (net.ipv4.ip_forward=0): routed traffic to pods is dropped");
    }
    if new.ipv6_forwarding == Some(false) && old.ipv6_forwarding != Some(false) {
        warn!("IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0)");
    }
    if !new.strict_rp_filter.is_empty() && new.strict_rp_filter != old.strict_rp_filter {
        warn!(interfaces = ?new.strict_rp_filter, "strict reverse-path filtering (rp_filter=1) drops asymmetric office traffic");
    }
    if let Some(e) = &new.error
        && old.error.as_ref() != Some(e)
    {
        warn!(error = %e, "cannot check forwarding and rp_filter over rtnetlink");
    }
}

/// The marker holds the Restart Time it was written with: a start within it is a restart.
fn write_marker(dir: &Path, restart_time: u16) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(RESTART_MARKER), restart_time.to_string())
}

/// A graceful shutdown's marker, fresh within its Restart Time; removed after the first
/// successful apply.
fn marker_fresh(dir: Option<&Path>) -> bool {
    let Some(dir) = dir else { return false };
    let restart_time = std::fs::read_to_string(dir.join(RESTART_MARKER))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(crate::peers::DEFAULT_RESTART_TIME);
    crate::standalone::restart_marker_fresh(Some(dir), restart_time)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_forwarding_rp_filter_and_missing_secrets() {
        let facts = NodeFacts {
            ipv4_forwarding: Some(false),
            ipv6_forwarding: Some(true),
            strict_rp_filter: vec!["eth0".into()],
            error: None,
        };
        let c = node_conditions(
            Ok(()),
            &Desired::default(),
            &facts,
            &["BGPPeer leaf: Secret ns/bgp not found (session not started)".into()],
            &[],
        );
        let get = |t: &str| c.iter().find(|c| c.0 == t).unwrap();
        assert!(get("Ready").1);
        assert!(get("ForwardingDisabled").1);
        assert!(get("ForwardingDisabled").3.starts_with("IPv4 forwarding"));
        assert!(get("ReversePathFilter").1 && get("ReversePathFilter").3.contains("eth0"));
        assert!(get("SecretMissing").1);
        assert!(!get("InvalidConfiguration").1);
    }

    #[test]
    fn the_not_announced_list_is_bounded_and_the_count_is_complete() {
        let mut d = Desired::default();
        for i in 0..(NOT_ANNOUNCED_LIST_MAX + 25) {
            d.services.insert(
                ("default".into(), format!("s{i:04}")),
                ServiceOutcome::NotAnnounced(desired::ServiceReason::NoIngress),
            );
        }
        let s = node_status(&d, &[], &BTreeMap::new());
        assert_eq!(
            s["notAnnounced"].as_array().unwrap().len(),
            NOT_ANNOUNCED_LIST_MAX
        );
        assert_eq!(s["notAnnouncedCount"], NOT_ANNOUNCED_LIST_MAX + 25);
        assert_eq!(s["notAnnounced"][0]["reason"], "NoIngress");
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut times = HashMap::new();
        let c = vec![("Ready", true, "Synced".to_owned(), String::new())];
        let a = with_times(&c, &mut times);
        times.insert("Ready", (true, "2020-01-01T00:00:00Z".into()));
        let b = with_times(&c, &mut times);
        assert_eq!(b[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        let flipped = vec![(
            "Ready",
            false,
            "StateSourceUnavailable".to_owned(),
            "x".into(),
        )];
        let f = with_times(&flipped, &mut times);
        assert_ne!(f[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(a[0]["status"], "True");
    }

    #[test]
    fn a_secret_key_comes_from_data_or_string_data() {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "bgp"},
            "data": {"a": "c2VjcmV0"},
            "stringData": {"b": "plain"}
        }))
        .unwrap();
        assert_eq!(secret_value(&s, "a").unwrap(), b"secret");
        assert_eq!(secret_value(&s, "b").unwrap(), b"plain");
        assert!(secret_value(&s, "c").is_none());
    }

    #[test]
    fn a_service_event_names_the_node_the_prefixes_and_the_peers_or_the_reason() {
        let p: IpNet = "203.0.113.5/32".parse().unwrap();
        let peers_of = HashMap::from([(p, vec!["leaf2", "leaf1"])]);
        let ev = service_event(
            "node1",
            &peers_of,
            &ServiceOutcome::Announced([p].into_iter().collect()),
        );
        assert_eq!(ev.reason, "Announced");
        assert_eq!(ev.type_, EventType::Normal);
        assert_eq!(
            ev.note.as_deref(),
            Some("node node1 announces 203.0.113.5/32 to BGPPeer leaf1, leaf2")
        );

        let ev = service_event(
            "node1",
            &peers_of,
            &ServiceOutcome::NotAnnounced(ServiceReason::NoReadyLocalEndpoint),
        );
        assert_eq!(
            (ev.type_, ev.reason.as_str()),
            (EventType::Normal, "NoReadyLocalEndpoint")
        );
        assert_eq!(
            ev.note.as_deref(),
            Some("node node1 does not announce it: NoReadyLocalEndpoint")
        );

        // A configuration mistake is a Warning and says which pool.
        let ev = service_event(
            "node1",
            &peers_of,
            &ServiceOutcome::NotAnnounced(ServiceReason::NoAdvertisementSelectsPool(
                "office".into(),
            )),
        );
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(
            ev.note.as_deref(),
            Some(
                "node node1 does not announce it: NoAdvertisementSelectsPool \
                 (no BGPAdvertisement selects IPPool office)"
            )
        );
    }

    #[test]
    fn pool_and_validity_status_is_written_only_where_it_differs_from_the_object() {
        fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
            serde_json::from_value(v).unwrap()
        }
        let mut view = ClusterView {
            ip_pools: vec![
                Arc::new(obj(json!({"metadata": {"name": "public"},
                    "spec": {"addresses": ["203.0.113.0/24"]}}))),
                Arc::new(obj(json!({"metadata": {"name": "private"},
                    "spec": {"addresses": ["100.64.0.0/24"]},
                    "status": {"advertisement": {"advertised": false,
                        "reason": "NoAdvertisementSelectsPool"}}}))),
            ],
            peers: vec![Arc::new(obj(json!({"metadata": {"name": "leaf"},
                "spec": {"peerAddress": "192.0.2.2", "peerASN": 65000, "myASN": 65001}})))],
            advertisements: vec![Arc::new(obj(json!({"metadata": {"name": "pub"},
                "spec": {"ipPools": ["public"], "communities": ["nonsense"]}})))],
            ..ClusterView::default()
        };
        let mut d = Desired::default();
        d.pool_advertisements
            .insert("public".into(), vec!["pub".into()]);
        d.pool_advertisements.insert("private".into(), vec![]);
        d.problems.push(Problem::InvalidAdvertisement {
            name: "pub".into(),
            error: "bad community".into(),
        });
        let w = object_statuses(&d, &view, "2026-01-01T00:00:00Z");
        assert_eq!(
            w.len(),
            2,
            "private already says so, leaf is not run here: {w:?}"
        );
        assert_eq!(
            w[0],
            ObjectStatus::Pool(
                "public".into(),
                json!({"advertisement": {"advertised": true, "reason": "Advertised",
                    "advertisements": ["pub"]}})
            )
        );
        let ObjectStatus::Advertisement(name, v) = &w[1] else {
            panic!("{w:?}")
        };
        assert_eq!(name, "pub");
        assert_eq!(v["conditions"][0]["status"], "False");
        assert_eq!(v["conditions"][0]["message"], "bad community");

        // Once the objects show it, nothing more is written.
        let mut pool = (*view.ip_pools[0]).clone();
        pool.status = Some(obj(
            json!({"advertisement": w_value(&w[0])["advertisement"]}),
        ));
        view.ip_pools[0] = Arc::new(pool);
        let mut ad = (*view.advertisements[0]).clone();
        ad.status = Some(obj(json!({"conditions": v["conditions"]})));
        view.advertisements[0] = Arc::new(ad);
        assert!(object_statuses(&d, &view, "2026-01-01T00:00:09Z").is_empty());
    }

    fn w_value(w: &ObjectStatus) -> &Value {
        match w {
            ObjectStatus::Pool(_, v)
            | ObjectStatus::Peer(_, v)
            | ObjectStatus::Advertisement(_, v) => v,
        }
    }

    #[test]
    fn the_marker_remembers_its_restart_time() {
        let dir = tempfile::tempdir().unwrap();
        write_marker(dir.path(), 300).unwrap();
        // Still there until the first successful apply removes it (a crash before keeps it).
        assert!(marker_fresh(Some(dir.path())));
        assert!(
            marker_fresh(Some(dir.path())),
            "kept until start-up succeeded"
        );
        crate::standalone::remove_restart_marker(Some(dir.path()));
        assert!(!marker_fresh(Some(dir.path())));
    }

    #[test]
    fn a_bgppeer_bfd_profile_is_found_validated_or_reported() {
        let rid = Ipv4Addr::new(192, 0, 2, 10);
        let peer = |profile: Option<&str>| {
            let mut v = json!({"peerAddress": "192.0.2.1", "peerASN": 65000, "myASN": 65001});
            if let Some(p) = profile {
                v["bfdProfile"] = p.into();
            }
            crate::peers::from_bgppeer("leaf", &serde_json::from_value(v).unwrap(), rid).unwrap()
        };
        let profile = |name: &str, spec: Value| {
            let mut p = BFDProfile::new(name, serde_json::from_value(spec).unwrap());
            p.metadata.name = Some(name.into());
            Arc::new(p)
        };
        let profiles = vec![
            profile(
                "fast",
                json!({"receiveInterval": 100, "transmitInterval": 200}),
            ),
            profile("echo", json!({"echoMode": true})),
        ];
        assert_eq!(resolve_bfd_profile(&peer(None), &profiles), None);
        let fast = resolve_bfd_profile(&peer(Some("fast")), &profiles)
            .unwrap()
            .unwrap();
        assert_eq!(fast.parameters.required_min_rx, Duration::from_millis(100));
        assert_eq!(fast.parameters.desired_min_tx, Duration::from_millis(200));
        assert_eq!(fast.parameters.detect_mult, 3);
        assert_eq!(
            resolve_bfd_profile(&peer(Some("nope")), &profiles),
            Some(Err("BFDProfile nope not found".into()))
        );
        let echo = resolve_bfd_profile(&peer(Some("echo")), &profiles)
            .unwrap()
            .unwrap_err();
        assert!(echo.contains("echo_mode"), "{echo}");
        // Directly connected eBGP: a single-hop BFD session from the BGP source address.
        let b = BfdPeer::for_bgp_peer(&peer(Some("fast")), fast);
        assert_eq!(b.spec.hops, bfd::Hops::Single);
        assert_eq!(
            b.spec.peer,
            "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_session_entry_carries_its_bfd_state_and_timers() {
        use crate::bfd::BfdState;
        use crate::bfd::codec::Diagnostic;
        let d = Desired {
            router_id: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..Desired::default()
        };
        let sessions = vec![
            (
                "leaf".to_owned(),
                "192.0.2.1:179".parse::<SocketAddr>().unwrap().into(),
                crate::bgp::fsm::State::Idle,
                3,
            ),
            (
                "other".to_owned(),
                "192.0.2.3:179".parse::<SocketAddr>().unwrap().into(),
                crate::bgp::fsm::State::Established,
                3,
            ),
        ];
        let bfd = BTreeMap::from([(
            "leaf".to_owned(),
            (
                "fast".to_owned(),
                BfdStatus {
                    state: BfdState::Down,
                    remote_state: BfdState::Down,
                    diagnostic: Diagnostic::ControlDetectionTimeExpired,
                    transmit_interval: Some(Duration::from_millis(1000)),
                    detection_time: Some(Duration::from_millis(900)),
                },
            ),
        )]);
        let s = node_status(&d, &sessions, &bfd);
        let b = &s["sessions"][0]["bfd"];
        assert_eq!(b["profile"], "fast");
        assert_eq!(b["state"], "Down");
        assert_eq!(b["diagnostic"], "ControlDetectionTimeExpired");
        assert_eq!(b["detectionTimeMs"], 900);
        assert!(s["sessions"][1].get("bfd").is_none());
        // It is what the CRD's status type describes.
        let typed: leafbridge_api::BGPNodeStateStatus = serde_json::from_value(s).unwrap();
        assert_eq!(
            typed.sessions[0].bfd.as_ref().unwrap().transmit_interval_ms,
            Some(1000)
        );
        let c = node_conditions(
            Ok(()),
            &d,
            &NodeFacts::default(),
            &[],
            &["BGPPeer leaf: BFDProfile fast not found (BGP runs without BFD)".into()],
        );
        let p = c.iter().find(|c| c.0 == "BFDProfileProblem").unwrap();
        assert!(p.1 && p.3.contains("fast not found"), "{p:?}");
    }
}
