//! The ExaBGP runner proved against BIRD: BIRD's route with attributes arrives in what ExaBGP
//! received; ExaBGP's static and runtime-commanded routes arrive in BIRD.

use std::time::Duration;

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor, route_command};
use leafbridge_tests::rib::StaticRoute;
use leafbridge_tests::{Pair, wait_for};

const T: Duration = Duration::from_secs(15);

fn attributed(prefix: &str) -> StaticRoute {
    StaticRoute {
        communities: vec![(65001, 100), (65001, 200)],
        large_communities: vec![(65001, 1, 2)],
        med: Some(50),
        ..StaticRoute::new(prefix)
    }
}

#[test]
fn bird_route_with_attributes_arrives_at_exabgp() {
    let p = Pair::new("be");
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    bc.routes.push(attributed("203.0.113.1/32"));
    bc.routes.push(StaticRoute::new("2001:db8:ff::/48"));
    bc.peers.push(BirdPeer {
        export_static: true,
        passive: true,
        ipv6_next_hop: Some(Pair::A_V6.parse().unwrap()),
        ..BirdPeer::new("toleaf", Pair::b_v4(), 65002)
    });
    let _bird = Bird::start(&p.a, "tx", &bc);
    let mut ec = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    ec.neighbors
        .push(ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4()));
    let exa = Exabgp::start(&p.b, "rx", &ec);
    exa.wait_up(Pair::a_v4(), T);
    let routes = wait_for(T, "two routes at ExaBGP", || {
        let r = exa.received_routes();
        if r.len() == 2 { Ok(r) } else { Err(r) }
    });
    let v4 = routes
        .iter()
        .find(|r| r.prefix == "203.0.113.1/32")
        .unwrap();
    assert_eq!(v4.next_hop, Some(Pair::a_v4()));
    assert_eq!(v4.as_path, vec![65001]);
    assert_eq!(v4.communities, vec![(65001, 100), (65001, 200)]);
    assert_eq!(v4.large_communities, vec![(65001, 1, 2)]);
    assert_eq!(v4.med, Some(50));
    let v6 = routes
        .iter()
        .find(|r| r.prefix == "2001:db8:ff::/48")
        .unwrap();
    assert_eq!(v6.next_hop, Some(Pair::a_v6()));
}

#[test]
fn exabgp_static_and_commanded_routes_arrive_in_bird() {
    let p = Pair::new("eb");
    let mut ec = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    ec.listen = Some((Pair::b_v4(), 179));
    ec.neighbors.push(ExabgpNeighbor {
        passive: true,
        routes: vec![(attributed("203.0.113.9/32"), Pair::b_v4())],
        ..ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4())
    });
    let exa = Exabgp::start(&p.b, "tx", &ec);
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    bc.peers.push(BirdPeer::new("fromexa", Pair::b_v4(), 65002));
    let bird = Bird::start(&p.a, "rx", &bc);
    let r = wait_for(T, "static route from ExaBGP in BIRD", || {
        let r = bird.bgp_routes("fromexa");
        if r.len() == 1 { Ok(r) } else { Err(r) }
    });
    assert_eq!(r[0].prefix, "203.0.113.9/32");
    assert_eq!(r[0].communities, vec![(65001, 100), (65001, 200)]);
    assert_eq!(r[0].large_communities, vec![(65001, 1, 2)]);
    assert_eq!(r[0].med, Some(50));
    exa.command(&route_command(
        &StaticRoute::new("203.0.113.10/32"),
        Pair::b_v4(),
    ));
    wait_for(T, "commanded route in BIRD", || {
        let r = bird.bgp_routes("fromexa");
        if r.len() == 2 { Ok(()) } else { Err(r) }
    });
    exa.command("withdraw route 203.0.113.9/32 next-hop 192.0.2.2");
    wait_for(T, "withdrawal in BIRD", || {
        let r = bird.bgp_routes("fromexa");
        if r.len() == 1 && r[0].prefix == "203.0.113.10/32" {
            Ok(())
        } else {
            Err(r)
        }
    });
}
