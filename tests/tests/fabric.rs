//! The fabric: the office reaches a node's announced address through the leaf once the leaf's
//! BIRD has learnt it by BGP (here from BIRD on the node) and installed it in the kernel.

use std::time::Duration;

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer, StaticRoute};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::wait_for;

const T: Duration = Duration::from_secs(15);

#[test]
fn office_reaches_an_address_node_announces_to_leaf() {
    let f = Fabric::new("fab", 2);
    f.office
        .run("ping", &["-c1", "-W2", &Fabric::node_v4(1).to_string()]);
    f.office
        .run("ping", &["-c1", "-W2", &Fabric::node_v6(0).to_string()]);

    // Node 1 holds 203.0.113.50 and announces it; the leaf installs the route.
    f.nodes[1].run("ip", &["addr", "add", "203.0.113.50/32", "dev", "lo"]);
    let mut leaf = BirdConfig::new("192.0.2.1".parse().unwrap(), 65000);
    leaf.kernel = true;
    for i in 0..2 {
        leaf.peers.push(BirdPeer {
            passive: true,
            ..BirdPeer::new(format!("node{i}"), Fabric::node_v4(i), 65100 + i as u32)
        });
    }
    let _leaf_bird = Bird::start(&f.leaf, "leaf", &leaf);
    let mut node = BirdConfig::new("192.0.2.11".parse().unwrap(), 65101);
    node.routes.push(StaticRoute::new("203.0.113.50/32"));
    node.peers.push(BirdPeer {
        export_static: true,
        ipv6: false,
        ..BirdPeer::new("toleaf", Fabric::leaf_v4(), 65000)
    });
    let _node_bird = Bird::start(&f.nodes[1], "node1", &node);
    wait_for(T, "the leaf's kernel route", || {
        let r = f.leaf.routes(false);
        if r.iter()
            .any(|l| l.starts_with("203.0.113.50 via 192.0.2.11"))
        {
            Ok(())
        } else {
            Err(r)
        }
    });
    f.office.run("ping", &["-c1", "-W2", "203.0.113.50"]);
}

#[test]
fn leaf_installs_ecmp_route_for_a_prefix_two_nodes_announce() {
    let f = Fabric::new("ecmp", 2);
    let mut leaf = BirdConfig::new("192.0.2.1".parse().unwrap(), 65000);
    leaf.kernel = true;
    leaf.ecmp = true;
    for i in 0..2 {
        leaf.peers.push(BirdPeer {
            passive: true,
            ipv6: false,
            ..BirdPeer::new(format!("node{i}"), Fabric::node_v4(i), 65100)
        });
    }
    let _leaf_bird = Bird::start(&f.leaf, "leaf", &leaf);
    let _nodes: Vec<Bird> = (0..2)
        .map(|i| {
            let mut c = BirdConfig::new(format!("192.0.2.{}", 10 + i).parse().unwrap(), 65100);
            c.routes.push(StaticRoute::new("100.64.10.0/24"));
            c.peers.push(BirdPeer {
                export_static: true,
                ipv6: false,
                ..BirdPeer::new("toleaf", Fabric::leaf_v4(), 65000)
            });
            Bird::start(&f.nodes[i], &format!("node{i}"), &c)
        })
        .collect();
    wait_for(T, "a multipath kernel route via both nodes", || {
        let r = f.leaf.run("ip", &["route", "show", "100.64.10.0/24"]);
        if r.contains("via 192.0.2.10") && r.contains("via 192.0.2.11") {
            Ok(())
        } else {
            Err(r)
        }
    });
}

#[test]
fn frr_leaf_with_zebra_installs_ecmp_route_and_office_reaches_a_backend() {
    use leafbridge_tests::backend::{Backend, Prober, request_from};
    use leafbridge_tests::frr::Frr;
    let f = Fabric::new("frrz", 2);
    let _leaf = Frr::start(&f.leaf, "leaf", &f.frr_leaf(65000, 65100));
    // Both nodes hold the address (kube-proxy would make it local) and announce it.
    let mut backends = Vec::new();
    let _nodes: Vec<Bird> = (0..2)
        .map(|i| {
            f.nodes[i].add_addr("lo", "203.0.113.60/32");
            backends.push(Backend::start(&f.nodes[i], 8080, &format!("node{i}")));
            let mut c = BirdConfig::new(format!("192.0.2.{}", 10 + i).parse().unwrap(), 65100);
            c.routes.push(StaticRoute::new("203.0.113.60/32"));
            c.peers.push(BirdPeer {
                export_static: true,
                ipv6: false,
                ..BirdPeer::new("toleaf", Fabric::leaf_v4(), 65000)
            });
            Bird::start(&f.nodes[i], &format!("node{i}"), &c)
        })
        .collect();
    wait_for(T, "an ECMP kernel route installed by zebra", || {
        let hops = f.leaf_next_hops("203.0.113.60");
        if hops == [Fabric::node_v4(0), Fabric::node_v4(1)] {
            Ok(())
        } else {
            Err(f.leaf_route("203.0.113.60"))
        }
    });
    let addr = "203.0.113.60:8080".parse().unwrap();
    let who = request_from(&f.office, addr, Duration::from_secs(2)).unwrap();
    assert!(who == "node0" || who == "node1", "{who}");
    let probe = Prober::start(&f.office, addr, 100);
    std::thread::sleep(Duration::from_secs(1));
    let r = probe.stop();
    assert!(r.attempts >= 50 && r.failures == 0, "{r}");
}

#[test]
fn bird_leaf_of_the_fabric_installs_ecmp_and_prober_counts_a_lost_route() {
    use leafbridge_tests::backend::{Backend, Prober};
    let f = Fabric::new("probe", 2);
    let _leaf = Bird::start(&f.leaf, "leaf", &f.bird_leaf(65000, 65100));
    f.nodes[0].add_addr("lo", "203.0.113.61/32");
    let _web = Backend::start(&f.nodes[0], 8080, "node0");
    let mut c = BirdConfig::new("192.0.2.10".parse().unwrap(), 65100);
    c.routes.push(StaticRoute::new("203.0.113.61/32"));
    c.peers.push(BirdPeer {
        export_static: true,
        ipv6: false,
        ..BirdPeer::new("toleaf", Fabric::leaf_v4(), 65000)
    });
    let node = Bird::start(&f.nodes[0], "node0", &c);
    wait_until_route(&f, "203.0.113.61", &[Fabric::node_v4(0)]);
    let probe = Prober::start(&f.office, "203.0.113.61:8080".parse().unwrap(), 100);
    std::thread::sleep(Duration::from_millis(500));
    node.stop(); // the route goes: the prober must see it
    wait_until_route(&f, "203.0.113.61", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let r = probe.stop();
    assert!(r.successes > 10 && r.failures > 0, "{r}");
    assert_eq!(r.served_by.keys().collect::<Vec<_>>(), ["node0"], "{r}");
}

fn wait_until_route(f: &Fabric, prefix: &str, hops: &[std::net::IpAddr]) {
    wait_for(T, &format!("leaf route {prefix} via {hops:?}"), || {
        let got = f.leaf_next_hops(prefix);
        if got == hops {
            Ok(())
        } else {
            Err(f.leaf_route(prefix))
        }
    });
}
