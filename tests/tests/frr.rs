//! The FRR runner proved against BIRD: routes both ways with attributes, MD5.

mod common;

use common::{T, assert_attributed, assert_received_from_bird_sender, attributed};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::rib::StaticRoute;
use leafbridge_tests::{Pair, wait_for};

/// IPv4 only: BIRD 2.0.12 adds its link-local address to IPv6 next hops on a shared link, and
/// bgpd without zebra has no interface to resolve it ("sent a v6 LL next-hop and there's no
/// peer interface information"), so it treats the UPDATE as withdraw.
fn bird_sender(password: Option<&str>) -> BirdConfig {
    common::bird_sender(false, |p| p.password = password.map(str::to_string))
}

fn frr_receiver(password: Option<&str>) -> FrrConfig {
    let mut c = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.neighbors.push(FrrNeighbor {
        passive: true,
        password: password.map(str::to_string),
        ..FrrNeighbor::new(Pair::a_v4(), 65001)
    });
    c
}

#[test]
fn bird_route_with_attributes_arrives_in_frr_rib() {
    let p = Pair::new("bf");
    let _bird = Bird::start(&p.a, "tx", &bird_sender(None));
    let frr = Frr::start(&p.b, "rx", &frr_receiver(None));
    frr.wait_established(Pair::a_v4(), T);
    let routes = wait_for(T, "the route in FRR", || {
        let r = frr.routes();
        if r.len() == 1 { Ok(r) } else { Err(r) }
    });
    assert_received_from_bird_sender(&routes, false);
    assert_eq!(frr.prefixes_received(Pair::a_v4(), "ipv4"), 1);
}

#[test]
fn frr_networks_with_attributes_arrive_in_bird_rib() {
    let p = Pair::new("fb");
    let mut fc = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
    fc.networks.push(attributed("203.0.113.9/32"));
    fc.networks.push(StaticRoute::new("2001:db8:ff::/48"));
    fc.add_hosts("100.64.0.0".parse().unwrap(), 100);
    fc.neighbors.push(FrrNeighbor {
        export: true,
        passive: true,
        ipv6_next_hop: Some(Pair::B_V6.parse().unwrap()),
        ..FrrNeighbor::new(Pair::a_v4(), 65001)
    });
    let _frr = Frr::start(&p.b, "tx", &fc);
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    // FRR and BIRD both connect quickly; FRR listens here so BIRD dials.
    bc.peers.push(BirdPeer::new("fromfrr", Pair::b_v4(), 65002));
    let bird = Bird::start(&p.a, "rx", &bc);
    wait_for(T, "102 routes in BIRD", || {
        let n = bird.route_count_from("fromfrr");
        if n == 102 { Ok(()) } else { Err(n) }
    });
    let r = bird
        .bgp_routes("fromfrr")
        .into_iter()
        .find(|r| r.prefix == "203.0.113.9/32")
        .unwrap();
    assert_eq!(r.as_path, vec![65002]);
    assert_eq!(r.next_hop, Some(Pair::b_v4()));
    assert_attributed(&r);
    let v6 = bird
        .bgp_routes("fromfrr")
        .into_iter()
        .find(|r| r.prefix == "2001:db8:ff::/48")
        .unwrap();
    assert_eq!(v6.next_hop, Some(Pair::b_v6()));
}

#[test]
fn frr_md5_same_key_establishes_wrong_key_does_not() {
    let p = Pair::new("fmd5");
    let _bird = Bird::start(&p.a, "tx", &bird_sender(Some("k3y")));
    let frr = Frr::start(&p.b, "rx", &frr_receiver(Some("k3y")));
    frr.wait_established(Pair::a_v4(), T);

    let q = Pair::new("fmd5x");
    let _bird = Bird::start(&q.a, "tx", &bird_sender(Some("k3y")));
    let frr = Frr::start(&q.b, "rx", &frr_receiver(Some("wrong")));
    let before = q.b.nstat("TcpExtTCPMD5Failure");
    wait_for(T, "TCPMD5Failure to rise at FRR", || {
        let n = q.b.nstat("TcpExtTCPMD5Failure");
        if n > before { Ok(()) } else { Err(n) }
    });
    assert_ne!(frr.bgp_state(Pair::a_v4()), "Established");
}

#[test]
fn bird_keeps_frr_routes_while_frr_restarts_gracefully() {
    let p = Pair::new("fgr");
    let mut fc = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
    fc.graceful_restart = Some(60);
    fc.networks.push(StaticRoute::new("203.0.113.20/32"));
    fc.neighbors.push(FrrNeighbor {
        export: true,
        passive: true,
        ipv6: false,
        ..FrrNeighbor::new(Pair::a_v4(), 65001)
    });
    let mut frr = Frr::start(&p.b, "tx", &fc);
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    bc.peers.push(BirdPeer {
        graceful_restart: Some(60),
        ipv6: false,
        ..BirdPeer::new("fromfrr", Pair::b_v4(), 65002)
    });
    let bird = Bird::start(&p.a, "rx", &bc);
    wait_for(T, "the route in BIRD", || {
        let n = bird.route_count_from("fromfrr");
        if n == 1 { Ok(()) } else { Err(n) }
    });
    // docs/testing.md: with GR negotiated, SIGTERM makes bgpd close TCP without a NOTIFICATION.
    frr.stop();
    wait_for(T, "BIRD to notice the session went down", || {
        let s = bird.bgp_state("fromfrr");
        if s != "Established" { Ok(()) } else { Err(s) }
    });
    assert_eq!(
        bird.route_count_from("fromfrr"),
        1,
        "BIRD dropped the route during the restart"
    );
    frr.restart();
    bird.wait_established("fromfrr", T);
    // RFC 4724 §4.2: a restarted bgpd without zebra may not set the Forwarding State bit, and
    // then BIRD drops the stale route at re-establishment until FRR announces it again.
    wait_for(T, "the route again after FRR restarted", || {
        let n = bird.route_count_from("fromfrr");
        if n == 1 { Ok(()) } else { Err(n) }
    });
}
