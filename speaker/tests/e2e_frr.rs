//! The cluster end to end once with FRR as the leaf: bgpd learns the Service and pod CIDR
//! routes from two cluster-mode speakers, zebra installs them in the leaf's kernel (ECMP for
//! the Service), and the office reaches the backends through them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use leafbridge_tests::cluster::{Cluster, ClusterOptions, LeafKind};
use leafbridge_tests::manifests::Service;
use leafbridge_tests::programs::workspace_binary;

const T: Duration = Duration::from_secs(20);

#[test]
fn frr_leaf_installs_service_and_pod_cidr_routes_and_the_office_reaches_them() {
    let mut o = ClusterOptions::new(2);
    o.leaf = LeafKind::Frr;
    let c = Cluster::start(
        "frrleaf",
        Path::new(env!("CARGO_BIN_EXE_leafbridge-speaker")),
        &workspace_binary("leafbridge-controller"),
        o,
    );
    c.wait_established(T);
    for i in 0..2 {
        c.wait_leaf_paths(&Cluster::pod_cidr(i), &[i], T);
        c.wait_kernel_route(&Cluster::pod_cidr(i), &[i], T);
        assert_eq!(
            c.request_from_office(Cluster::pod_ip(i)).unwrap(),
            Cluster::node_name(i)
        );
    }

    let web = Service::new("shop", "web");
    c.state.apply(&web);
    let (ip, allocated_at) = c.wait(T, "an address for shop/web", || {
        let ips = c.state.service_ingress("shop", "web");
        let mtime = std::fs::metadata(c.path_of(&web)).and_then(|m| m.modified());
        match (ips.first(), mtime) {
            (Some(ip), Ok(t)) => Ok((*ip, t)),
            _ => Err("no ingress yet"),
        }
    });
    let prefix = format!("{ip}/32");
    c.wait_leaf_paths(&prefix, &[0, 1], T);
    let latency = SystemTime::now()
        .duration_since(allocated_at)
        .unwrap_or_default();
    assert!(
        latency < Duration::from_secs(1),
        "{ip} reached FRR from both nodes {latency:?} after its allocation (goal: < 1 s)"
    );
    c.wait_kernel_route(&prefix, &[0, 1], T);
    c.expose_on_nodes(ip);
    let who = c
        .request_from_office(ip)
        .expect("office reaches the Service");
    assert!(who == "node0" || who == "node1", "answered by {who:?}");

    c.state.delete(&web);
    c.wait_leaf_paths(&prefix, &[], T);
    c.wait_kernel_route(&prefix, &[], T);
}
