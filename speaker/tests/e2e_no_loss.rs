//! Never lose traffic: the office probes a Service address with TCP connects (100 a second,
//! each must connect and read the serving node's name within 1 s) while the cluster changes
//! under it. The Service's only route comes from the node under test wherever that matters
//! (eTP=Local with one endpoint), so a withdrawn or flapped route shows up as failed probes.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use leafbridge_tests::backend::{ProbeReport, Prober};
use leafbridge_tests::cluster::{BACKEND_PORT, Cluster, ClusterOptions};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::manifests::{EndpointSlice, Service};
use leafbridge_tests::programs::workspace_binary;

const T: Duration = Duration::from_secs(20);
const PROBES_PER_SECOND: u32 = 100;

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

fn endpoints_on(nodes: &[usize]) -> EndpointSlice {
    nodes
        .iter()
        .fold(EndpointSlice::new("shop", "web"), |s, n| {
            s.endpoint(&Cluster::pod_ip(*n).to_string(), &Cluster::node_name(*n))
        })
}

/// A Service `shop/web` with `Local` policy and one endpoint on node 0, announced by node 0
/// only and reachable from the office; returns its address.
fn local_service_on_node0(c: &Cluster) -> IpAddr {
    c.state.apply(&Service::new("shop", "web").local());
    c.state.apply(&endpoints_on(&[0]));
    let ip = c.wait_allocated("shop", "web", T)[0];
    c.expose_on_nodes(ip);
    c.wait_leaf_paths(&host(ip), &[0], T);
    c.wait_kernel_route(&host(ip), &[0], T);
    assert_eq!(c.request_from_office(ip).unwrap(), "node0");
    ip
}

fn probe(c: &Cluster, ip: IpAddr) -> Prober {
    Prober::start(
        &c.fabric.office,
        SocketAddr::new(ip, BACKEND_PORT),
        PROBES_PER_SECOND,
    )
}

#[track_caller]
fn assert_nothing_lost(r: &ProbeReport, during: &str) {
    println!("while {during}: {r}");
    assert!(
        r.rate() >= 50.0,
        "the prober ran below 50 connects/s, so it proves little: {r}"
    );
    assert_eq!(r.failures, 0, "probes lost while {during}: {r}");
}

#[test]
fn loses_nothing_while_a_speaker_restarts_with_graceful_restart() {
    let mut o = ClusterOptions::new(2);
    o.graceful_restart = true;
    let mut c = cluster("grrestart", o);
    let ip = local_service_on_node0(&c);
    c.speakers[0].wait_ready(T);

    let session_before = c.leaf.session_stamp(0);
    let prober = probe(&c, ip);
    std::thread::sleep(Duration::from_millis(500));
    c.speakers[0].terminate();
    // The leaf keeps node 0's routes as stale while the speaker is away (RFC 4724 §4.2).
    std::thread::sleep(Duration::from_secs(1));
    let rib = c.leaf.rib();
    assert!(
        rib.contains_key(&host(ip)),
        "the leaf dropped {ip} while the speaker restarted: {rib:?}"
    );
    c.start_speaker(0);
    c.wait_established(T);
    c.speakers[0].wait_ready(T);
    // Past the re-sync and End-of-RIB: the route is still (again, not stale) there.
    std::thread::sleep(Duration::from_secs(2));
    c.wait_leaf_paths(&host(ip), &[0], T);
    let r = prober.stop();
    assert_nothing_lost(&r, "the speaker of the only announcing node restarted");
    assert_ne!(
        c.leaf.session_stamp(0),
        session_before,
        "the leaf never saw node 0's session restart"
    );
    assert_eq!(r.served_by.keys().collect::<Vec<_>>(), ["node0"], "{r}");
}

#[test]
fn loses_nothing_while_a_node_is_cordoned_and_its_backend_moves() {
    let c = cluster("cordonmove", ClusterOptions::new(2));
    let ip = local_service_on_node0(&c);
    let prober = probe(&c, ip);
    std::thread::sleep(Duration::from_millis(500));

    // The replacement pod starts on node 1 and becomes ready.
    c.state.apply(&endpoints_on(&[0, 1]));
    c.wait_leaf_paths(&host(ip), &[0, 1], T);
    // Drain node 0: cordon first, its Service routes go before its pod is evicted.
    c.edit_node(0, |n| n.cordoned(true));
    c.wait_leaf_paths(&host(ip), &[1], T);
    c.wait_kernel_route(&host(ip), &[1], T);
    std::thread::sleep(Duration::from_millis(300));
    c.state.apply(&endpoints_on(&[1]));
    std::thread::sleep(Duration::from_millis(500));
    let r = prober.stop();
    assert_nothing_lost(&r, "node 0 was cordoned and its backend moved to node 1");
    assert!(
        r.served_by.contains_key("node1"),
        "node 1 never served: {r}"
    );
    c.wait_leaf_paths(&host(ip), &[1], T);
}

#[test]
fn loses_nothing_while_1000_services_are_created() {
    let c = cluster("burst", ClusterOptions::new(2));
    let ip = local_service_on_node0(&c);
    let sessions: Vec<String> = (0..2).map(|i| c.leaf.session_stamp(i)).collect();
    let before = c.leaf.prefix_count();

    let prober = probe(&c, ip);
    std::thread::sleep(Duration::from_millis(500));
    let burst: Vec<Service> = (0..1000)
        .map(|i| Service::new("bulk", &format!("svc{i}")))
        .collect();
    c.state.apply_many(&burst);
    let count = c.wait(
        Duration::from_secs(45),
        "the leaf to learn the 1,000 new Service addresses",
        || {
            let n = c.leaf.prefix_count();
            if n >= before + 1000 { Ok(n) } else { Err(n) }
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let r = prober.stop();
    assert_nothing_lost(&r, "1,000 Services were created");
    assert_eq!(count, before + 1000, "unexpected prefixes at the leaf");
    for (i, before) in sessions.iter().enumerate() {
        assert_eq!(
            &c.leaf.session_stamp(i),
            before,
            "node {i}'s session was reset by the burst"
        );
    }
    c.wait_leaf_paths(&host(ip), &[0], T);
}

#[test]
fn sigterm_without_graceful_restart_withdraws_first_and_closes_after_the_drain_time() {
    let mut o = ClusterOptions::new(2);
    o.speaker_args = vec!["--drain-time".into(), "2".into()];
    let c = cluster("drain", o);
    c.state.apply(&Service::new("shop", "web"));
    let ip = c.wait_allocated("shop", "web", T)[0];
    c.expose_on_nodes(ip);
    c.wait_kernel_route(&host(ip), &[0, 1], T);
    let prober = probe(&c, ip);
    std::thread::sleep(Duration::from_millis(500));

    c.speakers[0].process.signal("TERM");
    // The leaf moves the traffic to node 1 while node 0's session is still up.
    wait_for_drained(&c, ip);
    assert!(
        c.speakers[0]
            .process
            .wait_exit(Duration::from_secs(15))
            .is_some(),
        "the speaker did not exit after its drain time:\n{}",
        c.speakers[0].log()
    );
    let r = prober.stop();
    assert_nothing_lost(&r, "node 0's speaker drained and stopped");
    assert!(
        r.served_by.contains_key("node0") && r.served_by.contains_key("node1"),
        "the probes did not spread over both nodes before the drain, so they prove little: {r}"
    );
}

#[track_caller]
fn wait_for_drained(c: &Cluster, ip: IpAddr) {
    let node1 = BTreeSet::from([Fabric::node_v4(1)]);
    leafbridge_tests::wait_for(
        T,
        "node 0's Service route withdrawn while its session is still Established",
        || {
            let rib = c.leaf.rib();
            let up = c.leaf.established(0);
            match rib.get(&host(ip)) {
                Some(via) if *via == node1 && up => Ok(()),
                _ if !up => {
                    panic!("node 0's session closed before its routes were withdrawn: {rib:?}")
                }
                _ => Err(rib),
            }
        },
    );
}
