//! Benchmark of the speaker's cluster mode on the state-directory backend, with the real
//! `leafbridge-controller` and a BIRD 2 leaf in network namespaces:
//!
//!     cargo bench -p leafbridge-speaker --bench cluster             (1000 Services)
//!     cargo bench -p leafbridge-speaker --bench cluster -- 2000     (another burst size)
//!
//! 1. Burst: N Services written at once. For each, the time from its address appearing in
//!    status (the mtime of the file the controller rewrote) to its route in the leaf's RIB;
//!    median, 90th percentile and worst. The UPDATE messages node 0's speaker sent for the
//!    burst, counted from a capture on the leaf's port (TCP stream reassembled), and
//!    prefixes per UPDATE.
//! 2. One at a time: 100 Services, each created after the previous one reached the leaf;
//!    the same latency.
//! 3. BIRD 2 as the sender beside it, same leaf, same run: N static routes from a BIRD on
//!    node 1, Established → all at the leaf, and its UPDATEs.
//!
//! Goals: median < 100 ms, worst < 1 s, >= 100 prefixes per UPDATE on the burst. The RIB is
//! polled (`birdc show route`), so each latency is rounded up by up to one poll period, which
//! is printed. Needs root and bird2.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::capture::{BgpMessage, Capture};
use leafbridge_tests::cluster::{Cluster, ClusterOptions, LEAF_AS, Leaf, NODES_AS};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::manifests::{Service, ingress_of, parse_yaml_documents};
use leafbridge_tests::programs::{metric_sum, workspace_binary};

const LIMIT: Duration = Duration::from_secs(120);
const SEQUENTIAL: usize = 100;

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut o = ClusterOptions::new(2);
    o.start_programs = false;
    let mut c = Cluster::start(
        "bench",
        Path::new(env!("CARGO_BIN_EXE_leafbridge-speaker")),
        &workspace_binary("leafbridge-controller"),
        o,
    );
    c.start_controller();
    c.start_speaker(0);
    c.wait(LIMIT, "node 0's session", || {
        if c.leaf.established(0) {
            Ok(())
        } else {
            Err(())
        }
    });
    c.speakers[0].wait_ready(LIMIT);
    let bird = match &c.leaf {
        Leaf::Bird(b) => b,
        Leaf::Frr(_) => unreachable!("the benchmark leaf is BIRD"),
    };
    println!(
        "leafbridge-speaker cluster mode, state directory, real controller, BIRD 2 leaf \
         (2 cores shared with other work)\n"
    );

    // 1. The burst.
    let capture = Capture::start(&c.fabric.leaf, "burst", "port-n0", "tcp port 179");
    let updates_before = updates_sent(&c);
    let burst: Vec<Service> = (0..count)
        .map(|i| Service::new("burst", &format!("svc{i}")))
        .collect();
    let written = Instant::now();
    c.state.apply_many(&burst);
    let files: Vec<PathBuf> = burst.iter().map(|s| c.state.path_of(s)).collect();
    let (lat, poll) = latencies(&c, bird, &files);
    let all_in = written.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let updates_metric = updates_sent(&c) - updates_before;
    let msgs = capture.bgp_messages_from(Fabric::node_v4(0));
    let ups: Vec<&BgpMessage> = msgs.iter().filter(|m| m.kind == 2).collect();
    let announcing: Vec<&&BgpMessage> = ups.iter().filter(|m| m.announced > 0).collect();
    let announced: usize = announcing.iter().map(|m| m.announced).sum();
    println!("burst: {count} Services written at once");
    print_latencies(&lat, poll);
    println!(
        "  files written -> all {count} routes at the leaf: {:.3} s (includes the controller's allocation)",
        all_in.as_secs_f64()
    );
    println!(
        "  UPDATEs from the speaker (capture): {} ({} announcing {} prefixes: {:.0} per UPDATE, largest {}), \
         speaker metric: {updates_metric}",
        ups.len(),
        announcing.len(),
        announced,
        announced as f64 / announcing.len().max(1) as f64,
        announcing.iter().map(|m| m.announced).max().unwrap_or(0),
    );

    // 2. One at a time.
    let mut seq = Vec::new();
    let mut seq_poll = Duration::ZERO;
    for i in 0..SEQUENTIAL {
        let s = Service::new("seq", &format!("svc{i}"));
        c.state.apply(&s);
        let (l, p) = latencies(&c, bird, &[c.state.path_of(&s)]);
        seq.extend(l);
        seq_poll = seq_poll.max(p);
    }
    println!("\none at a time: {SEQUENTIAL} Services, each after the previous reached the leaf");
    print_latencies(&seq, seq_poll);

    // 3. BIRD 2 as the sender, from node 1 (it has no speaker), into the same leaf.
    let capture = Capture::start(&c.fabric.leaf, "bird", "port-n1", "tcp port 179");
    let mut cfg = BirdConfig::new("192.0.2.11".parse().unwrap(), NODES_AS);
    cfg.add_hosts(Ipv4Addr::new(100, 80, 0, 0), count as u32);
    cfg.peers.push(BirdPeer {
        export_static: true,
        ipv6: false,
        ..BirdPeer::new("toleaf", Fabric::leaf_v4(), LEAF_AS)
    });
    let _sender = Bird::start(&c.fabric.nodes[1], "node1", &cfg);
    let peer = Fabric::bird_peer_name(1);
    let t0 = Instant::now();
    let mut established = None;
    while t0.elapsed() < LIMIT {
        if established.is_none() && bird.is_established(&peer) {
            established = Some(Instant::now());
        }
        if established.is_some() && bird.route_count_from(&peer) >= count as u64 {
            break;
        }
    }
    let est_to_all = established.map(|e| e.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let msgs = capture.bgp_messages_from(Fabric::node_v4(1));
    let announcing: Vec<&BgpMessage> = msgs
        .iter()
        .filter(|m| m.kind == 2 && m.announced > 0)
        .collect();
    let announced: usize = announcing.iter().map(|m| m.announced).sum();
    println!("\nBIRD 2 as sender, {count} static /32s from node 1 into the same leaf");
    println!(
        "  Established -> all at the leaf: {} (BIRD 2.0.12 can hold the last batch up to ~3 s)",
        est_to_all
            .map(|d| format!("{:.3} s", d.as_secs_f64()))
            .unwrap_or_else(|| "not reached".into())
    );
    println!(
        "  UPDATEs announcing: {} ({:.0} prefixes per UPDATE)",
        announcing.len(),
        announced as f64 / announcing.len().max(1) as f64
    );
}

/// The speaker's own count of UPDATEs sent (every peer).
fn updates_sent(c: &Cluster) -> f64 {
    let m = c.speakers[0].metrics();
    metric_sum(&m, "leafbridge_speaker_bgp_updates_sent")
        + metric_sum(&m, "leafbridge_speaker_bgp_updates_sent_total")
}

/// For each Service file: its address and when the controller wrote it (mtime), then when
/// the leaf first showed its route. Returns the latencies and the longest poll period.
fn latencies(c: &Cluster, bird: &Bird, files: &[PathBuf]) -> (Vec<Duration>, Duration) {
    let mut allocated: BTreeMap<usize, (IpAddr, SystemTime)> = BTreeMap::new();
    let mut routed: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut longest_poll = Duration::ZERO;
    let start = Instant::now();
    while routed.len() < files.len() {
        assert!(
            start.elapsed() < LIMIT,
            "only {} of {} routes at the leaf after {LIMIT:?} ({} allocated)",
            routed.len(),
            files.len(),
            allocated.len()
        );
        c.assert_running_except(&[1]);
        let poll = Instant::now();
        for (i, f) in files.iter().enumerate() {
            if allocated.contains_key(&i) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            if !text.contains("ingress") {
                continue;
            }
            let ip = parse_yaml_documents(&text)
                .first()
                .and_then(|d| ingress_of(d).first().copied());
            let mtime = std::fs::metadata(f).and_then(|m| m.modified());
            if let (Some(ip), Ok(t)) = (ip, mtime) {
                allocated.insert(i, (ip, t));
            }
        }
        let rib = leaf_prefixes(bird, "node0");
        let now = SystemTime::now();
        for (i, (ip, t)) in &allocated {
            if !routed.contains_key(i) && rib.contains(&format!("{ip}/32")) {
                routed.insert(*i, now.duration_since(*t).unwrap_or_default());
            }
        }
        longest_poll = longest_poll.max(poll.elapsed());
    }
    (routed.into_values().collect(), longest_poll)
}

/// The prefixes BIRD holds from protocol `peer` (`show route protocol PEER`, no attributes:
/// cheap enough to poll with thousands of routes).
fn leaf_prefixes(bird: &Bird, peer: &str) -> BTreeSet<String> {
    bird.birdc(&format!("show route protocol {peer}"))
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && l.contains('/'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn print_latencies(l: &[Duration], poll: Duration) {
    let mut v = l.to_vec();
    v.sort();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  status -> leaf RIB over {} Services: median {:.1} ms, p90 {:.1} ms, worst {:.1} ms \
         (RIB polled, longest poll {:.1} ms)",
        v.len(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(*v.last().unwrap()),
        ms(poll)
    );
}
