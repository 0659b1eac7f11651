//! What BFD is for, measured on the fabric (leaf BIRD with `bfd on`, 300 ms × 3, two nodes
//! running the speaker and serving one ECMP address): when the node carrying an office
//! client's traffic stops answering (its link drops everything it sends: a `pfifo limit 0`
//! root qdisc, since this kernel has no `netem`), the leaf
//! moves the traffic to the other node within a detection time, so a 10 ms probe stream loses
//! under a second of traffic.

mod common;

use std::time::Duration;

use common::BIN;
use common::Speaker;
use leafbridge_tests::bird::{Bird, BirdBfd, BirdConfig, BirdPeer};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::{require, wait_for, wait_until};

const T: Duration = Duration::from_secs(30);
const ECMP: &str = "203.0.113.20";

fn node_yaml(i: usize) -> String {
    format!(
        r#"
local_as: 65100
router_id: {me}
bfd_profiles:
  fast: {{ receive_interval: 300, transmit_interval: 300, detect_multiplier: 3 }}
peers:
  - name: leaf
    address: {leaf}
    remote_as: 65000
    hold_time: 90
    bfd_profile: fast
prefixes:
  - prefix: {ECMP}/32
"#,
        me = Fabric::node_v4(i),
        leaf = Fabric::LEAF_V4,
    )
}

/// Which node the leaf's ECMP hash sends the office's pings to.
fn carrying_node(f: &Fabric) -> usize {
    let echos = |i: usize| f.nodes[i].nstat("IcmpInEchos");
    let before = [echos(0), echos(1)];
    f.office
        .run("ping", &["-c", "20", "-i", "0.01", "-W", "1", "-q", ECMP]);
    let after = [echos(0), echos(1)];
    if after[0] - before[0] >= 20 { 0 } else { 1 }
}

/// The longest time between two consecutive replies in `ping -D` output (each reply line
/// starts with `[seconds.micros]`): how long the probe saw no traffic, whatever the real
/// sending rate on a loaded machine.
fn longest_gap(out: &str) -> Duration {
    let stamps: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let gap = stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Duration::from_secs_f64(gap)
}

/// (transmitted, received) from ping's summary line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1])
}

#[test]
fn an_office_probe_loses_under_a_second_when_one_of_two_ecmp_nodes_fails() {
    require("tc");
    require("ping");
    let f = Fabric::new("bfdecmp", 2);
    let mut leaf = BirdConfig::new(Fabric::LEAF_V4.parse().unwrap(), 65000);
    leaf.kernel = true;
    leaf.ecmp = true;
    leaf.bfd = Some(BirdBfd::new(300, 300, 3));
    for i in 0..2 {
        leaf.peers.push(BirdPeer {
            passive: true,
            ipv6: false,
            bfd: true,
            ..BirdPeer::new(format!("node{i}"), Fabric::node_v4(i), 65100)
        });
    }
    let bird = Bird::start(&f.leaf, "leaf", &leaf);
    let _speakers: Vec<Speaker> = (0..2)
        .map(|i| {
            f.nodes[i].add_addr("lo", &format!("{ECMP}/32"));
            Speaker::start(BIN, &f.nodes[i], &format!("node{i}"), &node_yaml(i))
        })
        .collect();
    for i in 0..2 {
        bird.wait_established(&format!("node{i}"), T);
    }
    wait_for(T, "both nodes' BFD sessions Up at 300 ms", || {
        let s = bird.bfd_sessions();
        if s.len() == 2 && s.iter().all(|s| s.state == "Up" && s.timeout == 0.9) {
            Ok(())
        } else {
            Err(s)
        }
    });
    wait_until(T, "a multipath kernel route via both nodes", || {
        let r = f.leaf.run("ip", &["route", "show", &format!("{ECMP}/32")]);
        r.contains("via 192.0.2.10") && r.contains("via 192.0.2.11")
    });

    let failing = carrying_node(&f);
    // 10 ms probes for 5 s; the node fails about 1.5 s in.
    let probe = f.office.spawn(
        "probe",
        "ping",
        &["-D", "-i", "0.01", "-c", "500", "-W", "1", ECMP],
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Every packet the node sends is dropped: replies to the probe, BFD, BGP.
    f.nodes[failing].run(
        "tc",
        &[
            "qdisc",
            "add",
            "dev",
            Fabric::NODE_IF,
            "root",
            "pfifo",
            "limit",
            "0",
        ],
    );
    assert!(
        probe.wait_exit(Duration::from_secs(30)).is_some(),
        "ping did not finish"
    );
    let out = probe.stdout();
    let (sent, received) = ping_counts(&out);
    let lost = longest_gap(&out);
    println!(
        "office probe: {sent} sent, {received} received; no reply for {lost:?} when node{failing} failed"
    );
    assert!(
        received > 0 && sent > received,
        "the failure did not hit the probe: {sent}/{received}"
    );
    assert!(lost < Duration::from_secs(1), "no reply for {lost:?}");
    let r = f.leaf.run("ip", &["route", "show", &format!("{ECMP}/32")]);
    assert!(!r.contains(&Fabric::node_v4(failing).to_string()), "{r}");
}
