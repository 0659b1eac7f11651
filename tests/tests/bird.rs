//! The BIRD runner proved with two real BIRDs: attributes arrive and parse, MD5 works and a wrong
//! key is refused.

mod common;

use common::{T, assert_received_from_bird_sender, bird_sender};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer, StaticRoute};
use leafbridge_tests::{Pair, wait_for};

fn sender(pw: Option<&str>) -> BirdConfig {
    bird_sender(true, |p| p.password = pw.map(str::to_string))
}

fn receiver(pw: Option<&str>) -> BirdConfig {
    let mut c = BirdConfig::new("192.0.2.2".parse().unwrap(), 65002);
    c.kernel = true;
    c.peers.push(BirdPeer {
        passive: true,
        password: pw.map(str::to_string),
        ..BirdPeer::new("tonode", Pair::a_v4(), 65001)
    });
    c
}

#[test]
fn bird_to_bird_route_carries_communities_large_communities_and_med() {
    let p = Pair::new("bb");
    let _tx = Bird::start(&p.a, "tx", &sender(None));
    let rx = Bird::start(&p.b, "rx", &receiver(None));
    rx.wait_established("tonode", T);
    let routes = wait_for(T, "both routes in the receiver", || {
        let r = rx.bgp_routes("tonode");
        if r.len() == 2 { Ok(r) } else { Err(r) }
    });
    assert_received_from_bird_sender(&routes, true);
    // The kernel protocol installed it: the leaf namespace forwards to the node.
    wait_for(T, "kernel route", || {
        let r = p.b.routes(false);
        if r.iter().any(|l| l.starts_with("203.0.113.1 via 192.0.2.1")) {
            Ok(())
        } else {
            Err(r)
        }
    });
}

#[test]
fn bird_md5_same_key_establishes() {
    let p = Pair::new("md5ok");
    let _tx = Bird::start(&p.a, "tx", &sender(Some("s3cret")));
    let rx = Bird::start(&p.b, "rx", &receiver(Some("s3cret")));
    rx.wait_established("tonode", T);
}

#[test]
fn bird_md5_wrong_key_does_not_establish_and_counts_failures() {
    let p = Pair::new("md5bad");
    let tx = Bird::start(&p.a, "tx", &sender(Some("s3cret")));
    let rx = Bird::start(&p.b, "rx", &receiver(Some("other")));
    let before = p.b.nstat("TcpExtTCPMD5Failure");
    wait_for(
        T,
        "TCPMD5Failure to rise in the receiver's namespace",
        || {
            let n = p.b.nstat("TcpExtTCPMD5Failure");
            if n > before { Ok(()) } else { Err(n) }
        },
    );
    assert_ne!(rx.bgp_state("tonode"), "Established");
    assert_ne!(tx.bgp_state("toleaf"), "Established");
}

#[test]
fn bird_restart_reestablishes_and_route_count_reads_many_routes() {
    let p = Pair::new("brst");
    let mut c = sender(None);
    c.add_hosts("100.64.0.0".parse().unwrap(), 1000);
    let mut tx = Bird::start(&p.a, "tx", &c);
    let rx = Bird::start(&p.b, "rx", &receiver(None));
    wait_for(T, "1002 routes", || {
        let n = rx.route_count_from("tonode");
        if n == 1002 { Ok(()) } else { Err(n) }
    });
    tx.restart();
    rx.wait_established("tonode", T);
    assert_eq!(tx.process().label(), "bird-tx");
}

#[test]
fn bird_ibgp_route_carries_local_pref() {
    let p = Pair::new("bibgp");
    let mut tx = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    tx.routes.push(StaticRoute {
        local_pref: Some(250),
        ..StaticRoute::new("203.0.113.5/32")
    });
    tx.peers.push(BirdPeer {
        export_static: true,
        ..BirdPeer::new("toleaf", Pair::b_v4(), 65001)
    });
    let mut rx = BirdConfig::new("192.0.2.2".parse().unwrap(), 65001);
    rx.peers.push(BirdPeer {
        passive: true,
        ..BirdPeer::new("tonode", Pair::a_v4(), 65001)
    });
    let _tx = Bird::start(&p.a, "tx", &tx);
    let rx = Bird::start(&p.b, "rx", &rx);
    let r = wait_for(T, "the iBGP route", || {
        let r = rx.bgp_routes("tonode");
        if r.len() == 1 { Ok(r) } else { Err(r) }
    });
    assert_eq!(r[0].local_pref, Some(250));
    assert_eq!(r[0].as_path, Vec::<u32>::new());
    assert_eq!(r[0].next_hop, Some(Pair::a_v4()));
}

#[test]
fn bird_ipv6_session_carries_ipv6_route() {
    let p = Pair::new("bv6");
    let mut tx = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    tx.routes.push(StaticRoute {
        communities: vec![(65001, 6)],
        ..StaticRoute::new("2001:db8:aa::/48")
    });
    tx.peers.push(BirdPeer {
        export_static: true,
        ipv4: false,
        local_addr: Some(Pair::a_v6()),
        ..BirdPeer::new("toleaf6", Pair::b_v6(), 65002)
    });
    let mut rx = BirdConfig::new("192.0.2.2".parse().unwrap(), 65002);
    rx.peers.push(BirdPeer {
        passive: true,
        ipv4: false,
        local_addr: Some(Pair::b_v6()),
        ..BirdPeer::new("tonode6", Pair::a_v6(), 65001)
    });
    let _tx = Bird::start(&p.a, "tx", &tx);
    let rx = Bird::start(&p.b, "rx", &rx);
    let r = wait_for(T, "the IPv6 route", || {
        let r = rx.bgp_routes("tonode6");
        if r.len() == 1 { Ok(r) } else { Err(r) }
    });
    assert_eq!(r[0].prefix, "2001:db8:aa::/48");
    assert_eq!(r[0].next_hop, Some(Pair::a_v6()));
    assert_eq!(r[0].communities, vec![(65001, 6)]);
}

#[test]
fn bird_reconfigure_withdraws_a_removed_route_without_a_session_reset() {
    let p = Pair::new("brcf");
    let mut c = sender(None);
    let tx = Bird::start(&p.a, "tx", &c);
    let rx = Bird::start(&p.b, "rx", &receiver(None));
    wait_for(T, "two routes", || {
        let n = rx.route_count_from("tonode");
        if n == 2 { Ok(()) } else { Err(n) }
    });
    // BIRD may still touch the protocol's "Since" a millisecond after the routes arrive (the
    // second channel coming up): take the reference only once it holds still.
    let mut since = rx.birdc("show protocols tonode");
    wait_for(T, "BIRD's protocol line to settle", || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = rx.birdc("show protocols tonode");
        if now == since {
            Ok(())
        } else {
            Err(std::mem::replace(&mut since, now))
        }
    });
    c.routes.retain(|r| r.prefix != "203.0.113.1/32");
    tx.reconfigure(&c);
    wait_for(T, "the withdrawal", || {
        let r = rx.bgp_routes("tonode");
        if r.len() == 1 && r[0].prefix == "2001:db8:ff::/48" {
            Ok(())
        } else {
            Err(r)
        }
    });
    // Same "Since" timestamp: the session stayed up.
    assert_eq!(rx.birdc("show protocols tonode"), since);
}
