//! A whole leafbridge cluster on a [`Fabric`], on the state-directory backend: the leaf router
//! (BIRD 2 or FRR with zebra, both installing what they learn in the leaf's kernel, ECMP), one
//! state directory with the Nodes, an IPPool, a BGPPeer and a BGPAdvertisement, the real
//! `leafbridge-controller`, one cluster-mode `leafbridge-speaker` per node, and a backend on
//! every node (port 80, answers the node's name) reachable on the node's pod IP, the
//! ClusterIP (gateways) and any LoadBalancer address the test exposes.
//!
//! ```text
//!   office ── leaf (BIRD/FRR, kernel routes) ── node0 (speaker, controller, backend)
//!                                            └─ node1 (speaker, backend) ...
//!   node i: InternalIP 192.0.2.(10+i), podCIDR 100.64.i.0/24, pod IP 100.64.i.10
//!   service CIDR 100.100.0.0/16 from the gateway nodes, ClusterIP 100.100.0.10
//!   IPPool `office`: 203.0.113.0/24 and 100.72.0.0/20
//! ```
//!
//! Every wait of a [`Cluster`] also checks that the controller and the speakers still run, so
//! a program that exits (an unknown flag, a panic) fails the test at once with its log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{Backend, request_from};
use crate::bird::Bird;
use crate::fabric::Fabric;
use crate::frr::Frr;
use crate::manifests::{BGPAdvertisement, BGPPeer, IPPool, Manifest, Node, StateDir};
use crate::programs::{ClusterSpeaker, Controller, SpeakerOptions};
use crate::support::wait_for;

pub const LEAF_AS: u32 = 65000;
pub const NODES_AS: u32 = 65100;
pub const POOL: &str = "office";
/// The addresses of the pool: enough for the 1,000-Service tests.
pub const POOL_RANGES: &[&str] = &["203.0.113.0/24", "100.72.0.0/20"];
pub const SERVICE_CIDR: &str = "100.100.0.0/16";
pub const CLUSTER_IP: &str = "100.100.0.10";
pub const GATEWAY_LABEL: (&str, &str) = ("leafbridge.io/gateway", "true");
/// The port every node's backend listens on.
pub const BACKEND_PORT: u16 = 80;

/// Which router the leaf runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    Bird,
    Frr,
}

/// The leaf's router.
#[derive(Debug)]
pub enum Leaf {
    Bird(Bird),
    Frr(Frr),
}

impl Leaf {
    /// Prefix → the next hops (nodes) the leaf has a BGP path through, IPv4 and IPv6.
    pub fn rib(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        let routes = match self {
            Leaf::Bird(b) => b.routes(),
            Leaf::Frr(f) => f.route_summaries(),
        };
        let mut out: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for r in routes {
            let hops = out.entry(r.prefix).or_default();
            hops.extend(r.next_hop);
        }
        out
    }

    /// The number of prefixes in the leaf's RIB (cheap with thousands of routes).
    pub fn prefix_count(&self) -> usize {
        match self {
            Leaf::Bird(b) => {
                let text = b.birdc("show route count");
                // "N of M routes for K networks in table T" per table, and a Total line when
                // there are several.
                let per_line = |l: &str| -> Option<usize> {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let i = w.iter().position(|x| *x == "networks")?;
                    w.get(i.checked_sub(1)?)?.parse().ok()
                };
                text.lines()
                    .find(|l| l.starts_with("Total:"))
                    .and_then(per_line)
                    .unwrap_or_else(|| text.lines().filter_map(per_line).sum())
            }
            Leaf::Frr(f) => f
                .route_summaries()
                .into_iter()
                .map(|r| r.prefix)
                .collect::<BTreeSet<_>>()
                .len(),
        }
    }

    /// A line that changes when node `i`'s session changes state (BIRD's protocol line has
    /// the time of the last change; FRR's neighbor uptime is not stable, so its
    /// Established-transition counter).
    pub fn session_stamp(&self, i: usize) -> String {
        match self {
            Leaf::Bird(b) => b.birdc(&format!("show protocols {}", Fabric::bird_peer_name(i))),
            Leaf::Frr(f) => {
                let n = f.neighbor_json(Fabric::node_v4(i));
                format!(
                    "{} established {}",
                    n["bgpState"], n["connectionsEstablished"]
                )
            }
        }
    }

    /// Whether node `i`'s session is Established.
    pub fn established(&self, i: usize) -> bool {
        match self {
            Leaf::Bird(b) => b.is_established(&Fabric::bird_peer_name(i)),
            Leaf::Frr(f) => f.bgp_state(Fabric::node_v4(i)) == "Established",
        }
    }
}

/// How a [`Cluster`] is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub leaf: LeafKind,
    /// Indices of the nodes labelled as service-CIDR gateways.
    pub gateways: Vec<usize>,
    /// `gracefulRestart` on the BGPPeer (and graceful restart on the leaf's sessions).
    pub graceful_restart: bool,
    /// Extra arguments for every speaker.
    pub speaker_args: Vec<String>,
    /// Start the controller and the speakers (false: the test starts them).
    pub start_programs: bool,
    /// Start a [`Backend`] thread per node (false: the caller starts its own, e.g. the lab's
    /// backend processes, which outlive the process that built the cluster).
    pub thread_backends: bool,
}

impl ClusterOptions {
    pub fn new(nodes: usize) -> ClusterOptions {
        ClusterOptions {
            nodes,
            leaf: LeafKind::Bird,
            gateways: (0..nodes).collect(),
            graceful_restart: false,
            speaker_args: Vec::new(),
            start_programs: true,
            thread_backends: true,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    pub fabric: Fabric,
    pub state: StateDir,
    pub leaf: Leaf,
    pub controller: Option<Controller>,
    pub speakers: Vec<ClusterSpeaker>,
    pub backends: Vec<Backend>,
    pub options: ClusterOptions,
    speaker_bin: PathBuf,
    controller_bin: PathBuf,
}

impl Cluster {
    /// Builds the network and the leaf, writes the base objects, starts the backends and (with
    /// `start_programs`) the controller and the speakers.
    #[track_caller]
    pub fn start(
        tag: &str,
        speaker_bin: &Path,
        controller_bin: &Path,
        options: ClusterOptions,
    ) -> Cluster {
        Cluster::start_on(
            Fabric::new(tag, options.nodes),
            speaker_bin,
            controller_bin,
            options,
        )
    }

    /// [`Cluster::start`] on a fabric built by the caller (the lab's persistent one).
    #[track_caller]
    pub fn start_on(
        fabric: Fabric,
        speaker_bin: &Path,
        controller_bin: &Path,
        options: ClusterOptions,
    ) -> Cluster {
        let state = StateDir::new(fabric.topo.subdir("state"));
        let leaf = match options.leaf {
            LeafKind::Bird => {
                let mut c = fabric.bird_leaf(LEAF_AS, NODES_AS);
                for p in &mut c.peers {
                    p.hold_time = Some(9);
                    if options.graceful_restart {
                        p.graceful_restart = Some(120);
                    }
                }
                Leaf::Bird(Bird::start(&fabric.leaf, "leaf", &c))
            }
            LeafKind::Frr => {
                let mut c = fabric.frr_leaf(LEAF_AS, NODES_AS);
                if options.graceful_restart {
                    c.graceful_restart = Some(120);
                }
                Leaf::Frr(Frr::start(&fabric.leaf, "leaf", &c))
            }
        };
        state.apply(&IPPool::new(POOL, POOL_RANGES));
        for i in 0..options.nodes {
            state.apply(&Self::node_object(&options, i));
        }
        let mut peer = BGPPeer::new("leaf", Fabric::leaf_v4(), LEAF_AS, NODES_AS).hold_time(9);
        if options.graceful_restart {
            peer = peer.graceful_restart();
        }
        state.apply(&peer);
        state.apply(
            &BGPAdvertisement::new("default")
                .ip_pools(&[POOL])
                .pod_cidrs()
                .service_cidrs(&[SERVICE_CIDR], &[GATEWAY_LABEL]),
        );
        let mut backends = Vec::new();
        for (i, ns) in fabric.nodes.iter().enumerate() {
            ns.add_addr("lo", &format!("{}/32", Self::pod_ip(i)));
            if options.gateways.contains(&i) {
                ns.add_addr("lo", &format!("{CLUSTER_IP}/32"));
            }
            if options.thread_backends {
                backends.push(Backend::start(ns, BACKEND_PORT, &Self::node_name(i)));
            }
        }
        let mut c = Cluster {
            fabric,
            state,
            leaf,
            controller: None,
            speakers: Vec::new(),
            backends,
            options,
            speaker_bin: speaker_bin.to_path_buf(),
            controller_bin: controller_bin.to_path_buf(),
        };
        if c.options.start_programs {
            c.start_controller();
            for i in 0..c.options.nodes {
                c.start_speaker(i);
            }
        }
        c
    }

    pub fn node_name(i: usize) -> String {
        format!("node{i}")
    }

    /// Node `i`'s pod CIDR, 100.64.i.0/24.
    pub fn pod_cidr(i: usize) -> String {
        format!("100.64.{i}.0/24")
    }

    /// The pod IP on node `i` the backend answers on, 100.64.i.10.
    pub fn pod_ip(i: usize) -> IpAddr {
        IpAddr::from([100, 64, u8::try_from(i).expect("node index"), 10])
    }

    /// The Node object of node `i` as the cluster starts it (Ready, not cordoned).
    pub fn node_object(options: &ClusterOptions, i: usize) -> Node {
        let mut n = Node::new(&Self::node_name(i), Fabric::node_v4(i)).pod_cidr(&Self::pod_cidr(i));
        if options.gateways.contains(&i) {
            n = n.label(GATEWAY_LABEL.0, GATEWAY_LABEL.1);
        }
        n
    }

    /// Rewrites node `i`'s object through `edit` (e.g. `|n| n.cordoned(true)`).
    pub fn edit_node(&self, i: usize, edit: impl FnOnce(Node) -> Node) {
        self.state.apply(&edit(Self::node_object(&self.options, i)));
    }

    /// Starts the controller in node 0's namespace.
    #[track_caller]
    pub fn start_controller(&mut self) {
        self.controller = Some(Controller::start(
            &self.fabric.nodes[0],
            &self.controller_bin,
            self.state.root(),
            &[],
        ));
    }

    /// Starts (or, after a stop, starts again) the speaker of node `i`.
    #[track_caller]
    pub fn start_speaker(&mut self, i: usize) {
        if let Some(s) = self.speakers.get_mut(i) {
            s.restart();
            return;
        }
        assert_eq!(i, self.speakers.len(), "start speakers in node order");
        let mut o = SpeakerOptions::new(&Self::node_name(i), self.state.root());
        o.extra = self.options.speaker_args.clone();
        self.speakers.push(ClusterSpeaker::start(
            &self.fabric.nodes[i],
            &self.speaker_bin,
            o,
        ));
    }

    /// Panics with the log of any program of the cluster that has exited (except the speakers
    /// in `except`, stopped on purpose).
    #[track_caller]
    pub fn assert_running_except(&self, except: &[usize]) {
        if let Some(c) = &self.controller {
            c.assert_running();
        }
        for (i, s) in self.speakers.iter().enumerate() {
            if !except.contains(&i) {
                s.assert_running();
            }
        }
    }

    /// [`wait_for`] that also fails at once when a program of the cluster exits.
    #[track_caller]
    pub fn wait<T, E: Debug>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> Result<T, E>,
    ) -> T {
        wait_for(timeout, what, || {
            self.assert_running_except(&[]);
            probe()
        })
    }

    /// Waits until every node's session with the leaf is Established.
    #[track_caller]
    pub fn wait_established(&self, timeout: Duration) {
        self.wait(
            timeout,
            "every node's session with the leaf to be Established",
            || {
                let down: Vec<usize> = (0..self.options.nodes)
                    .filter(|i| !self.leaf.established(*i))
                    .collect();
                if down.is_empty() { Ok(()) } else { Err(down) }
            },
        );
    }

    /// Waits until the controller has allocated the Service's address(es) and returns them.
    #[track_caller]
    pub fn wait_allocated(&self, namespace: &str, name: &str, timeout: Duration) -> Vec<IpAddr> {
        self.wait(
            timeout,
            &format!("an address in the status of Service {namespace}/{name}"),
            || {
                let ips = self.state.service_ingress(namespace, name);
                if ips.is_empty() {
                    Err("no ingress yet")
                } else {
                    Ok(ips)
                }
            },
        )
    }

    /// Waits until the leaf's BGP RIB has `prefix` through exactly the nodes `via` (none:
    /// withdrawn) and returns the whole RIB.
    #[track_caller]
    pub fn wait_leaf_paths(
        &self,
        prefix: &str,
        via: &[usize],
        timeout: Duration,
    ) -> BTreeMap<String, BTreeSet<IpAddr>> {
        let want: BTreeSet<IpAddr> = via.iter().map(|i| Fabric::node_v4(*i)).collect();
        self.wait(
            timeout,
            &format!("the leaf to hold {prefix} via {want:?}"),
            || {
                let rib = self.leaf.rib();
                let got = rib.get(prefix).cloned().unwrap_or_default();
                if got == want { Ok(rib) } else { Err(rib) }
            },
        )
    }

    /// Waits until the leaf's kernel forwards `prefix` to exactly the nodes `via` (ECMP when
    /// several).
    #[track_caller]
    pub fn wait_kernel_route(&self, prefix: &str, via: &[usize], timeout: Duration) {
        let want: Vec<IpAddr> = via.iter().map(|i| Fabric::node_v4(*i)).collect();
        self.wait(
            timeout,
            &format!("the leaf's kernel route {prefix} via {want:?}"),
            || {
                let prefix = prefix.trim_end_matches("/32");
                if self.fabric.leaf_next_hops(prefix) == want {
                    Ok(())
                } else {
                    Err(self.fabric.leaf_route(prefix))
                }
            },
        );
    }

    /// Makes `ip` reachable on every node (kube-proxy's part: the address is local on each
    /// node, and the backend listens on every address).
    pub fn expose_on_nodes(&self, ip: IpAddr) {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        for ns in &self.fabric.nodes {
            ns.add_addr("lo", &format!("{ip}/{len}"));
        }
    }

    /// One request from the office to `ip`:80; the name of the node that answered.
    pub fn request_from_office(&self, ip: IpAddr) -> std::io::Result<String> {
        request_from(
            &self.fabric.office,
            SocketAddr::new(ip, BACKEND_PORT),
            Duration::from_secs(2),
        )
    }

    /// Node `i`'s `BGPNodeState` as its speaker last wrote it (wherever in the directory).
    pub fn node_state(&self, i: usize) -> Option<serde_json::Value> {
        self.state
            .find_kind("BGPNodeState")
            .into_iter()
            .find(|d| d["metadata"]["name"] == Self::node_name(i).as_str())
    }

    /// Waits until node `i`'s `BGPNodeState` satisfies `check` and returns it.
    #[track_caller]
    pub fn wait_node_state(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait(
            timeout,
            &format!("node{i}'s BGPNodeState: {what}"),
            || match self.node_state(i) {
                Some(v) if check(&v) => Ok(v),
                other => Err(other),
            },
        )
    }

    /// The object's file in the state directory.
    pub fn path_of(&self, m: &impl Manifest) -> PathBuf {
        self.state.path_of(m)
    }
}
