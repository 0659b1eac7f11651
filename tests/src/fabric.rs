//! A small data-centre-and-office network built with the topology builder: one leaf router,
//! N nodes on a shared segment behind it, and an office client on another segment. Speaker
//! end-to-end tests with several nodes (ECMP, per-node announcements) and the lab use it.
//!
//! ```text
//!   office (198.51.100.2, 2001:db8:1::2)
//!      | eth-leaf / eth-office
//!   leaf (198.51.100.1 | 192.0.2.1 on br-nodes; forwards; runs the BGP router)
//!      | br-nodes: port-n0, port-n1, ...
//!   node0 (192.0.2.10, 2001:db8::10)   node1 (192.0.2.11, 2001:db8::11)   ...
//! ```
//!
//! Nodes and office route everything else via the leaf, so once the leaf has learnt a route
//! to an announced address (e.g. BIRD with `kernel = true`), the office reaches it.
//! [`Fabric::bird_leaf`] and [`Fabric::frr_leaf`] give the leaf's router config for that: one
//! passive session per node, best routes (ECMP across nodes) installed in the leaf's kernel.

use std::net::IpAddr;

use crate::bird::{BirdConfig, BirdPeer};
use crate::frr::{FrrConfig, FrrNeighbor};
use crate::netns::{Netns, Topology};

/// The network above, built and ready (links up, addresses without DAD, routes set).
#[derive(Debug, Clone)]
pub struct Fabric {
    pub topo: Topology,
    pub leaf: Netns,
    pub office: Netns,
    pub nodes: Vec<Netns>,
}

impl Fabric {
    pub const LEAF_V4: &str = "192.0.2.1";
    pub const LEAF_V6: &str = "2001:db8::1";
    pub const LEAF_OFFICE_V4: &str = "198.51.100.1";
    pub const LEAF_OFFICE_V6: &str = "2001:db8:1::1";
    pub const OFFICE_V4: &str = "198.51.100.2";
    pub const OFFICE_V6: &str = "2001:db8:1::2";
    /// Interface of every node towards the leaf.
    pub const NODE_IF: &str = "eth-leaf";
    pub const BRIDGE: &str = "br-nodes";

    /// Builds a fabric with `nodes` nodes (at most 200).
    #[track_caller]
    pub fn new(tag: &str, nodes: usize) -> Fabric {
        Fabric::on(Topology::new(tag), nodes)
    }

    /// Builds the fabric in `topo` (e.g. a [`Topology::persistent`] one, for the lab).
    #[track_caller]
    pub fn on(topo: Topology, nodes: usize) -> Fabric {
        assert!(nodes <= 200, "at most 200 nodes");
        let leaf = topo.namespace("leaf");
        leaf.enable_forwarding();
        // ECMP by 5-tuple, not by address pair: one office client's connections then spread
        // over every node that announces a prefix, as they would behind a real leaf.
        leaf.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        leaf.sysctl("net.ipv6.fib_multipath_hash_policy", "1");
        leaf.add_bridge(Self::BRIDGE);
        leaf.add_addr(Self::BRIDGE, &format!("{}/24", Self::LEAF_V4));
        leaf.add_addr(Self::BRIDGE, &format!("{}/64", Self::LEAF_V6));

        let office = topo.namespace("office");
        topo.link(&leaf, "eth-office", &office, Self::NODE_IF);
        leaf.add_addr("eth-office", &format!("{}/24", Self::LEAF_OFFICE_V4));
        leaf.add_addr("eth-office", &format!("{}/64", Self::LEAF_OFFICE_V6));
        office.add_addr(Self::NODE_IF, &format!("{}/24", Self::OFFICE_V4));
        office.add_addr(Self::NODE_IF, &format!("{}/64", Self::OFFICE_V6));
        office.run(
            "ip",
            &["route", "add", "default", "via", Self::LEAF_OFFICE_V4],
        );
        office.run(
            "ip",
            &["-6", "route", "add", "default", "via", Self::LEAF_OFFICE_V6],
        );

        let nodes = (0..nodes)
            .map(|i| {
                let node = topo.namespace(&format!("node{i}"));
                let port = format!("port-n{i}");
                topo.link(&leaf, &port, &node, Self::NODE_IF);
                leaf.attach_to_bridge(&port, Self::BRIDGE);
                node.add_addr(Self::NODE_IF, &format!("{}/24", Self::node_v4(i)));
                node.add_addr(Self::NODE_IF, &format!("{}/64", Self::node_v6(i)));
                node.run("ip", &["route", "add", "default", "via", Self::LEAF_V4]);
                node.run(
                    "ip",
                    &["-6", "route", "add", "default", "via", Self::LEAF_V6],
                );
                node
            })
            .collect();
        Fabric {
            topo,
            leaf,
            office,
            nodes,
        }
    }

    /// Node `i`'s IPv4 address on the node segment (192.0.2.10 + i).
    pub fn node_v4(i: usize) -> IpAddr {
        IpAddr::from([192, 0, 2, 10 + u8::try_from(i).expect("node index")])
    }

    /// Node `i`'s IPv6 address on the node segment (2001:db8::10 + i, written in decimal
    /// digits: 2001:db8::10, ::11, ...).
    pub fn node_v6(i: usize) -> IpAddr {
        format!("2001:db8::{}", 10 + i).parse().expect("node v6")
    }

    pub fn leaf_v4() -> IpAddr {
        Self::LEAF_V4.parse().unwrap()
    }

    pub fn leaf_v6() -> IpAddr {
        Self::LEAF_V6.parse().unwrap()
    }

    pub fn office_v4() -> IpAddr {
        Self::OFFICE_V4.parse().unwrap()
    }

    /// The BIRD protocol name of node `i`'s session at the leaf.
    pub fn bird_peer_name(i: usize) -> String {
        format!("node{i}")
    }

    /// A BIRD config for the leaf in `leaf_as`: a passive IPv4 + IPv6 session with each node
    /// (all in `nodes_as`), routes installed in the kernel, equal paths merged (ECMP).
    pub fn bird_leaf(&self, leaf_as: u32, nodes_as: u32) -> BirdConfig {
        let mut c = BirdConfig::new(Self::LEAF_V4.parse().unwrap(), leaf_as);
        c.kernel = true;
        c.ecmp = true;
        for i in 0..self.nodes.len() {
            c.peers.push(BirdPeer {
                passive: true,
                ..BirdPeer::new(Self::bird_peer_name(i), Self::node_v4(i), nodes_as)
            });
        }
        c
    }

    /// The same leaf with FRR: bgpd with zebra (routes into the kernel), a passive IPv4
    /// session per node, `maximum-paths` for ECMP.
    pub fn frr_leaf(&self, leaf_as: u32, nodes_as: u32) -> FrrConfig {
        let mut c = FrrConfig::new(Self::LEAF_V4.parse().unwrap(), leaf_as);
        c.zebra = true;
        c.maximum_paths = Some(16);
        for i in 0..self.nodes.len() {
            c.neighbors.push(FrrNeighbor {
                passive: true,
                ipv6: false,
                ..FrrNeighbor::new(Self::node_v4(i), nodes_as)
            });
        }
        c
    }

    /// The leaf's kernel route for `prefix` (`ip route show PREFIX`; empty when there is none).
    pub fn leaf_route(&self, prefix: &str) -> String {
        let fam = if prefix.contains(':') { "-6" } else { "-4" };
        self.leaf.run("ip", &[fam, "route", "show", prefix])
    }

    /// The next hops of the leaf's kernel route for `prefix`, sorted (one for a plain route,
    /// several for an ECMP one).
    pub fn leaf_next_hops(&self, prefix: &str) -> Vec<IpAddr> {
        let mut hops: Vec<IpAddr> = self
            .leaf_route(prefix)
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        hops.dedup();
        hops
    }
}
