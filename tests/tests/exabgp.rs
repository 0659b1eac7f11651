//! The ExaBGP runner proved against BIRD: BIRD's route with attributes arrives in what ExaBGP
//! received; ExaBGP's static and runtime-commanded routes arrive in BIRD.

mod common;

use common::{T, assert_attributed, assert_received_from_bird_sender, attributed, bird_sender};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor, route_command};
use leafbridge_tests::rib::StaticRoute;
use leafbridge_tests::{Pair, wait_for};

#[test]
fn bird_route_with_attributes_arrives_at_exabgp() {
    let p = Pair::new("be");
    let _bird = Bird::start(&p.a, "tx", &bird_sender(true, |p| p.passive = true));
    let mut ec = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    ec.neighbors
        .push(ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4()));
    let exa = Exabgp::start(&p.b, "rx", &ec);
    exa.wait_up(Pair::a_v4(), T);
    let routes = wait_for(T, "two routes at ExaBGP", || {
        let r = exa.received_routes();
        if r.len() == 2 { Ok(r) } else { Err(r) }
    });
    assert_received_from_bird_sender(&routes, true);
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
    assert_attributed(&r[0]);
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
