//! Every option of every runner renders a config its daemon accepts (each runner checks its
//! config with the daemon's own checker before starting it).

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
use leafbridge_tests::rib::StaticRoute;
use leafbridge_tests::{Pair, Topology};

fn route() -> StaticRoute {
    StaticRoute {
        communities: vec![(65001, 1)],
        large_communities: vec![(65001, 2, 3)],
        med: Some(10),
        local_pref: Some(200),
        ..StaticRoute::new("203.0.113.0/24")
    }
}

#[test]
fn bird_accepts_every_option() {
    let topo = Topology::new("cfgb");
    let ns = topo.namespace("x");
    let mut c = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    c.kernel = true;
    c.routes.push(route());
    c.routes.push(StaticRoute::new("2001:db8:1::/48"));
    c.add_hosts("100.64.0.0".parse().unwrap(), 10);
    c.peers.push(BirdPeer {
        neighbor_port: Some(1179),
        local_addr: Some(Pair::a_v4()),
        passive: true,
        password: Some("pw".into()),
        graceful_restart: Some(120),
        multihop: Some(2),
        ttl_security: true,
        ipv6_next_hop: Some(Pair::A_V6.parse().unwrap()),
        extended_messages: true,
        hold_time: Some(9),
        export_static: true,
        ..BirdPeer::new("peerebgp", Pair::b_v4(), 65002)
    });
    c.peers.push(BirdPeer {
        export_static: true,
        ..BirdPeer::new("peeribgp", "192.0.2.3".parse().unwrap(), 65001)
    });
    Bird::start(&ns, "all", &c);
}

#[test]
fn frr_accepts_every_option() {
    let topo = Topology::new("cfgf");
    let ns = topo.namespace("x");
    let mut c = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.graceful_restart = Some(120);
    c.listen_port = Some(179);
    c.networks.push(route());
    c.networks.push(StaticRoute::new("2001:db8:1::/48"));
    c.add_hosts("100.64.0.0".parse().unwrap(), 10);
    c.neighbors.push(FrrNeighbor {
        port: Some(1179),
        update_source: Some(Pair::b_v4()),
        passive: true,
        password: Some("pw".into()),
        hold_time: Some(9),
        multihop: Some(2),
        ipv6_next_hop: Some(Pair::B_V6.parse().unwrap()),
        export: true,
        ..FrrNeighbor::new(Pair::a_v4(), 65001)
    });
    c.neighbors
        .push(FrrNeighbor::new("2001:db8::1".parse().unwrap(), 65002));
    Frr::start(&ns, "all", &c);
}

#[test]
fn gobgp_accepts_every_option() {
    let topo = Topology::new("cfgg");
    let ns = topo.namespace("x");
    let mut c = GobgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.listen_port = Some(179);
    c.api_port = 50052;
    c.neighbors.push(GobgpNeighbor {
        remote_port: Some(1179),
        local_address: Some(Pair::b_v4()),
        passive: true,
        password: Some("pw".into()),
        hold_time: Some(9),
        multihop: Some(2),
        graceful_restart: Some(120),
        ..GobgpNeighbor::new(Pair::a_v4(), 65001)
    });
    c.routes.push((route(), Pair::b_v4()));
    c.routes
        .push((StaticRoute::new("2001:db8:1::/48"), Pair::b_v6()));
    let g = Gobgp::start(&ns, "all", &c);
    assert_eq!(g.routes().len(), 2);
}

#[test]
fn exabgp_accepts_every_option() {
    let topo = Topology::new("cfge");
    let ns = topo.namespace("x");
    let mut c = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.neighbors.push(ExabgpNeighbor {
        passive: true,
        password: Some("pw".into()),
        hold_time: Some(9),
        graceful_restart: Some(120),
        routes: vec![
            (route(), Pair::b_v4()),
            (StaticRoute::new("2001:db8:1::/48"), Pair::b_v6()),
        ],
        ..ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4())
    });
    Exabgp::start(&ns, "all", &c);
}

#[test]
fn frr_config_check_catches_a_rejected_line() {
    let topo = Topology::new("cfgfx");
    let ns = topo.namespace("x");
    let mut c = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.extra = " neighbor 192.0.2.1 no-such-knob\n".into();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Frr::start(&ns, "bad", &c)))
        .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("bgpd rejects"), "{msg}");
}
