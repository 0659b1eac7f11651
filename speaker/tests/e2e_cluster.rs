//! End to end in network namespaces on the state-directory backend: the real
//! `leafbridge-controller` and one cluster-mode `leafbridge-speaker` per node share one state
//! directory; a BIRD leaf learns the routes and installs them in its kernel (ECMP), and the
//! office behind it reaches the backends on the nodes through them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use leafbridge_tests::cluster::{CLUSTER_IP, Cluster, ClusterOptions, SERVICE_CIDR};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::manifests::{EndpointSlice, Service};
use leafbridge_tests::programs::workspace_binary;

/// Generous: the machine is shared with other builds and tests.
const T: Duration = Duration::from_secs(20);

fn cluster(tag: &str, options: ClusterOptions) -> Cluster {
    let c = Cluster::start(
        tag,
        Path::new(env!("CARGO_BIN_EXE_leafbridge-speaker")),
        &workspace_binary("leafbridge-controller"),
        options,
    );
    c.wait_established(T);
    c
}

fn host(ip: IpAddr) -> String {
    format!("{ip}/32")
}

#[test]
fn announces_a_service_within_a_second_of_its_allocation_and_withdraws_it_on_delete() {
    let c = cluster("announce", ClusterOptions::new(2));
    let web = Service::new("shop", "web");
    c.state.apply(&web);

    // The allocation time is the status write's (the file's mtime when the address is first
    // seen), so polling delays on our side only make the measured latency longer.
    let (ip, allocated_at) = c.wait(T, "an address for shop/web", || {
        let ips = c.state.service_ingress("shop", "web");
        let mtime = std::fs::metadata(c.path_of(&web)).and_then(|m| m.modified());
        match (ips.first(), mtime) {
            (Some(ip), Ok(t)) => Ok((*ip, t)),
            _ => Err("no ingress yet"),
        }
    });
    c.wait_leaf_paths(&host(ip), &[0, 1], T);
    let latency = SystemTime::now()
        .duration_since(allocated_at)
        .unwrap_or_default();
    assert!(
        latency < Duration::from_secs(1),
        "{ip} reached the leaf from both nodes {latency:?} after its allocation (goal: < 1 s)"
    );

    // Cluster policy: both nodes carry it, the leaf spreads the traffic (ECMP).
    c.wait_kernel_route(&host(ip), &[0, 1], T);
    c.expose_on_nodes(ip);
    let who = c
        .request_from_office(ip)
        .expect("office reaches the Service");
    assert!(who == "node0" || who == "node1", "answered by {who:?}");

    // What an operator reads with kubectl: the session and what it carries.
    c.wait_node_state(0, "session leaf Established with 3 prefixes", T, |v| {
        let s = &v["status"]["sessions"][0];
        s["peer"] == "leaf"
            && s["state"] == "Established"
            && s["prefixesAdvertised"] == 3 // LB IP, pod CIDR, service CIDR
            && v["status"]["announcedServices"] == 1
    });

    c.state.delete(&web);
    c.wait_leaf_paths(&host(ip), &[], T);
    c.wait_kernel_route(&host(ip), &[], T);
    assert!(
        c.request_from_office(ip).is_err(),
        "the office still reaches {ip} after the Service was deleted"
    );
}

#[test]
fn local_policy_follows_the_endpoints_as_they_move_between_nodes() {
    let c = cluster("local", ClusterOptions::new(2));
    let svc = Service::new("shop", "api").local();
    c.state.apply(&svc);
    let ip = c.wait_allocated("shop", "api", T)[0];
    c.expose_on_nodes(ip);
    let prefix = host(ip);
    // No endpoint anywhere: nobody announces, and each node says why.
    for i in 0..2 {
        c.wait_node_state(i, "shop/api not announced: NoReadyLocalEndpoint", T, |v| {
            v["status"]["notAnnounced"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["name"] == "api" && n["reason"] == "NoReadyLocalEndpoint")
        });
    }
    c.wait_leaf_paths(&prefix, &[], T);

    let on = |node: usize| {
        EndpointSlice::new("shop", "api").endpoint(
            &Cluster::pod_ip(node).to_string(),
            &Cluster::node_name(node),
        )
    };
    c.state.apply(&on(0));
    c.wait_leaf_paths(&prefix, &[0], T);
    c.wait_kernel_route(&prefix, &[0], T);
    assert_eq!(c.request_from_office(ip).unwrap(), "node0");

    // The pod moves to node 1.
    c.state.apply(&on(1));
    c.wait_leaf_paths(&prefix, &[1], T);
    c.wait_kernel_route(&prefix, &[1], T);
    assert_eq!(c.request_from_office(ip).unwrap(), "node1");

    // Terminating but still serving keeps the route while no ready endpoint exists...
    c.state
        .apply(&EndpointSlice::new("shop", "api").endpoint_with(
            &Cluster::pod_ip(1).to_string(),
            "node1",
            false,
            true,
            true,
        ));
    std::thread::sleep(Duration::from_millis(500));
    c.wait_leaf_paths(&prefix, &[1], T);
    // ...and gives way once a ready one exists elsewhere.
    c.state.apply(
        &EndpointSlice::new("shop", "api")
            .endpoint_with(&Cluster::pod_ip(1).to_string(), "node1", false, true, true)
            .endpoint(&Cluster::pod_ip(0).to_string(), "node0"),
    );
    c.wait_leaf_paths(&prefix, &[0], T);

    // The last endpoint goes: withdrawn everywhere.
    c.state.apply(&EndpointSlice::new("shop", "api"));
    c.wait_leaf_paths(&prefix, &[], T);
}

#[test]
fn cordoning_a_node_withdraws_its_service_routes_and_keeps_its_session_and_pod_cidr() {
    let c = cluster("cordon", ClusterOptions::new(2));
    c.state.apply(&Service::new("shop", "web"));
    let ip = c.wait_allocated("shop", "web", T)[0];
    let prefix = host(ip);
    c.wait_leaf_paths(&prefix, &[0, 1], T);
    c.wait_leaf_paths(&Cluster::pod_cidr(1), &[1], T);
    let bird = match &c.leaf {
        leafbridge_tests::cluster::Leaf::Bird(b) => b,
        leafbridge_tests::cluster::Leaf::Frr(_) => unreachable!(),
    };
    // BIRD's protocol line carries the time the session last changed state.
    let session = || bird.birdc("show protocols node1");
    let before = session();

    c.edit_node(1, |n| n.cordoned(true));
    c.wait_leaf_paths(&prefix, &[0], T);
    let rib = c.leaf.rib();
    assert_eq!(
        rib.get(&Cluster::pod_cidr(1)),
        Some(&BTreeSet::from([Fabric::node_v4(1)])),
        "the cordoned node's pod CIDR must stay (its pods are still there): {rib:?}"
    );
    assert!(
        c.leaf.established(1),
        "the cordoned node's session went down"
    );
    assert_eq!(session(), before, "the cordoned node's session was reset");
    c.wait_node_state(
        1,
        "NodeNotEligible True, session still Established",
        T,
        |v| {
            let conds = v["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds
                .iter()
                .any(|c| c["type"] == "NodeNotEligible" && c["status"] == "True")
                && v["status"]["sessions"][0]["state"] == "Established"
        },
    );

    c.edit_node(1, |n| n.cordoned(false));
    c.wait_leaf_paths(&prefix, &[0, 1], T);
    assert_eq!(session(), before, "uncordoning reset the session");
}

#[test]
fn pod_and_service_cidr_routes_reach_the_leaf_and_the_office_reaches_a_pod() {
    let mut o = ClusterOptions::new(3);
    o.gateways = vec![1, 2];
    let c = cluster("bridge", o);
    for i in 0..3 {
        c.wait_leaf_paths(&Cluster::pod_cidr(i), &[i], T);
        c.wait_kernel_route(&Cluster::pod_cidr(i), &[i], T);
    }
    // The service CIDR from the gateways only, ECMP at the leaf.
    c.wait_leaf_paths(SERVICE_CIDR, &[1, 2], T);
    c.wait_kernel_route(SERVICE_CIDR, &[1, 2], T);

    for i in 0..3 {
        assert_eq!(
            c.request_from_office(Cluster::pod_ip(i)).unwrap(),
            Cluster::node_name(i),
            "the office reaches the pod IP on node {i} through its pod CIDR route"
        );
    }
    let who = c
        .request_from_office(CLUSTER_IP.parse().unwrap())
        .expect("office reaches the ClusterIP through a gateway");
    assert!(who == "node1" || who == "node2", "answered by {who:?}");
}

#[test]
fn a_program_that_exits_fails_the_wait_at_once_with_its_log() {
    // The harness itself: a speaker that cannot start must fail a test fast and say why,
    // not let it time out.
    let mut o = ClusterOptions::new(1);
    o.speaker_args = vec!["--no-such-flag-for-the-test".into()];
    let controller = workspace_binary("leafbridge-controller");
    let start = Instant::now();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Cluster::start(
            "exits",
            Path::new(env!("CARGO_BIN_EXE_leafbridge-speaker")),
            &controller,
            o,
        )
        .wait_established(Duration::from_secs(60))
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("leafbridge-speaker for node0 exited") && msg.contains("unexpected argument"),
        "{msg}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}
