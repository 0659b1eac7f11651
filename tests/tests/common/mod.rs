//! What the runner tests share: BIRD as the sending node in namespace `a` of a [`Pair`], the
//! route with attributes it (or the daemon under test) originates, and the checks of both, so
//! each test only says how its own daemon sends or receives.
#![allow(dead_code)]

use std::time::Duration;

use leafbridge_tests::bird::{BirdConfig, BirdPeer};
use leafbridge_tests::rib::StaticRoute;
use leafbridge_tests::{Pair, RibRoute};

pub const T: Duration = Duration::from_secs(15);

/// `prefix` with two communities, a large community and MED 50.
pub fn attributed(prefix: &str) -> StaticRoute {
    StaticRoute {
        communities: vec![(65001, 100), (65001, 200)],
        large_communities: vec![(65001, 1, 2)],
        med: Some(50),
        ..StaticRoute::new(prefix)
    }
}

/// Checks the attributes [`attributed`] gave a route.
#[track_caller]
pub fn assert_attributed(r: &RibRoute) {
    assert_eq!(r.communities, vec![(65001, 100), (65001, 200)], "{r:?}");
    assert_eq!(r.large_communities, vec![(65001, 1, 2)], "{r:?}");
    assert_eq!(r.med, Some(50), "{r:?}");
}

/// The route for `prefix` among `routes`.
#[track_caller]
pub fn route<'a>(routes: &'a [RibRoute], prefix: &str) -> &'a RibRoute {
    routes
        .iter()
        .find(|r| r.prefix == prefix)
        .unwrap_or_else(|| panic!("no route for {prefix} in {routes:?}"))
}

/// BIRD in namespace `a` (192.0.2.1, AS 65001) exporting `attributed("203.0.113.1/32")` to
/// `toleaf` at 192.0.2.2 (AS 65002), and with `ipv6` also 2001:db8:ff::/48 with `a`'s IPv6
/// next hop (without it the session carries IPv4 only). `edit` adjusts the peer.
pub fn bird_sender(ipv6: bool, edit: impl FnOnce(&mut BirdPeer)) -> BirdConfig {
    let mut c = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    c.routes.push(attributed("203.0.113.1/32"));
    let mut peer = BirdPeer {
        export_static: true,
        ..BirdPeer::new("toleaf", Pair::b_v4(), 65002)
    };
    if ipv6 {
        c.routes.push(StaticRoute::new("2001:db8:ff::/48"));
        peer.ipv6_next_hop = Some(Pair::A_V6.parse().unwrap());
    } else {
        peer.ipv6 = false;
    }
    edit(&mut peer);
    c.peers.push(peer);
    c
}

/// Checks what a receiver got from [`bird_sender`]: the IPv4 route with its attributes, next
/// hop `a` and AS path 65001, and with `ipv6` the IPv6 route with `a`'s IPv6 next hop.
#[track_caller]
pub fn assert_received_from_bird_sender(routes: &[RibRoute], ipv6: bool) {
    let v4 = route(routes, "203.0.113.1/32");
    assert_eq!(v4.next_hop, Some(Pair::a_v4()));
    assert_eq!(v4.as_path, vec![65001]);
    assert_attributed(v4);
    if ipv6 {
        assert_eq!(
            route(routes, "2001:db8:ff::/48").next_hop,
            Some(Pair::a_v6())
        );
    }
}
