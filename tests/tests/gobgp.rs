//! The GoBGP runner proved against BIRD: routes both ways with attributes, MD5.

mod common;

use common::{T, assert_attributed, assert_received_from_bird_sender, attributed, bird_sender};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
use leafbridge_tests::{Pair, wait_for};

#[test]
fn bird_route_with_attributes_arrives_in_gobgp_rib() {
    let p = Pair::new("bg");
    let _bird = Bird::start(&p.a, "tx", &bird_sender(true, |_| {}));
    let mut gc = GobgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    gc.neighbors.push(GobgpNeighbor {
        passive: true,
        ..GobgpNeighbor::new(Pair::a_v4(), 65001)
    });
    let gobgp = Gobgp::start(&p.b, "rx", &gc);
    gobgp.wait_established(Pair::a_v4(), T);
    let routes = wait_for(T, "two routes in GoBGP", || {
        let r = gobgp.adj_rib_in(Pair::a_v4());
        if r.len() == 2 { Ok(r) } else { Err(r) }
    });
    assert_received_from_bird_sender(&routes, true);
    assert_eq!(gobgp.route_count("ipv4"), 1);
    assert_eq!(gobgp.routes().len(), 2);
}

#[test]
fn gobgp_announced_route_arrives_in_bird_and_withdraw_removes_it() {
    let p = Pair::new("gb");
    let mut gc = GobgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
    // GoBGP waits 5-10 s before its first outgoing connection: let BIRD connect.
    gc.neighbors.push(GobgpNeighbor {
        passive: true,
        password: Some("k3y".into()),
        ..GobgpNeighbor::new(Pair::a_v4(), 65001)
    });
    gc.routes.push((attributed("203.0.113.9/32"), Pair::b_v4()));
    let gobgp = Gobgp::start(&p.b, "tx", &gc);
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    bc.peers.push(BirdPeer {
        password: Some("k3y".into()),
        ..BirdPeer::new("fromgobgp", Pair::b_v4(), 65002)
    });
    let bird = Bird::start(&p.a, "rx", &bc);
    let r = wait_for(T, "route from GoBGP in BIRD", || {
        let r = bird.bgp_routes("fromgobgp");
        if r.len() == 1 { Ok(r) } else { Err(r) }
    });
    assert_eq!(r[0].prefix, "203.0.113.9/32");
    assert_eq!(r[0].as_path, vec![65002]);
    assert_attributed(&r[0]);
    gobgp.withdraw("203.0.113.9/32");
    wait_for(T, "withdrawal in BIRD", || {
        let r = bird.bgp_routes("fromgobgp");
        if r.is_empty() { Ok(()) } else { Err(r) }
    });
}
