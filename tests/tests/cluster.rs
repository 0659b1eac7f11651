//! The cluster builder without our speaker: the real controller allocates from the state
//! directory the builder wrote, BIRD on a node stands in for the speaker and announces that
//! address, and the leaf, the kernel routes, the backends and the prober do the rest. This
//! checks the harness the speaker's end-to-end tests stand on.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use leafbridge_tests::backend::Prober;
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer, StaticRoute};
use leafbridge_tests::cluster::{BACKEND_PORT, Cluster, ClusterOptions, NODES_AS};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::manifests::Service;
use leafbridge_tests::programs::workspace_binary;

const T: Duration = Duration::from_secs(20);

#[test]
fn controller_allocates_from_the_builders_objects_and_a_stand_in_announcer_is_reachable() {
    let mut o = ClusterOptions::new(2);
    o.start_programs = false;
    let mut c = Cluster::start(
        "harness",
        Path::new("/nonexistent/leafbridge-speaker"),
        &workspace_binary("leafbridge-controller"),
        o,
    );
    c.start_controller();
    c.state.apply(&Service::new("shop", "web"));
    let ip = c.wait_allocated("shop", "web", T)[0];
    assert!(ip.is_ipv4(), "{ip}");
    c.expose_on_nodes(ip);

    // BIRD on node 1 announces the address and node 1's pod CIDR.
    let mut cfg = BirdConfig::new("192.0.2.11".parse().unwrap(), NODES_AS);
    cfg.routes.push(StaticRoute::new(format!("{ip}/32")));
    cfg.routes.push(StaticRoute::new(Cluster::pod_cidr(1)));
    cfg.peers.push(BirdPeer {
        export_static: true,
        ipv6: false,
        ..BirdPeer::new("toleaf", Fabric::leaf_v4(), 65000)
    });
    let _stand_in = Bird::start(&c.fabric.nodes[1], "node1", &cfg);
    c.wait_leaf_paths(&format!("{ip}/32"), &[1], T);
    c.wait_kernel_route(&format!("{ip}/32"), &[1], T);
    c.wait_kernel_route(&Cluster::pod_cidr(1), &[1], T);
    assert_eq!(c.request_from_office(ip).unwrap(), "node1");
    assert_eq!(c.request_from_office(Cluster::pod_ip(1)).unwrap(), "node1");
    assert!(c.leaf.established(1) && !c.leaf.established(0));
    assert!(c.leaf.prefix_count() >= 2);

    let prober = Prober::start(&c.fabric.office, SocketAddr::new(ip, BACKEND_PORT), 100);
    std::thread::sleep(Duration::from_secs(1));
    let r = prober.stop();
    assert!(r.rate() >= 50.0 && r.failures == 0, "{r}");
    assert_eq!(r.served_by.keys().collect::<Vec<_>>(), ["node1"], "{r}");
}
