//! Benchmark of the speaker's cluster mode on the state-directory backend, with the real
//! `leafbridge-controller` and a BIRD 2 leaf in network namespaces:
//!
//!     cargo bench -p leafbridge-speaker --bench cluster             (1000 Services)
//!     cargo bench -p leafbridge-speaker --bench cluster -- 2000     (another burst size)
//!
//! 1. Burst: N Services written at once, one file each, then N more as the items of one
//!    `kind: List` file (one `kubectl apply -f`: the controller's status writes then combine
//!    into few rewrites of that file, as the API server would take them as fast as they come,
//!    where one file each makes every status an atomic file replacement). For each, the time from its address appearing in
//!    status (the mtime of the file the controller rewrote) to its route in the leaf;
//!    median, 90th percentile and worst. The UPDATE messages node 0's speaker sent for the
//!    burst, counted from a capture on the leaf's port (TCP stream reassembled), and
//!    prefixes per UPDATE.
//! 2. One at a time: 100 Services, each created after the previous one reached the leaf;
//!    the same latency.
//! 3. BIRD 2 as the sender beside it, same leaf, same run: N static routes from a BIRD on
//!    node 1, Established → all at the leaf, and its UPDATEs.
//!
//! Goals: median < 100 ms, worst < 1 s, >= 100 prefixes per UPDATE on the burst. Both ends
//! are timestamps, not polls: the status write is the file's mtime, the route's arrival is the
//! time the leaf's kernel got it from BIRD (`ip -ts monitor route` in the leaf's namespace;
//! BIRD exports each route as it enters its RIB). The files are looked at every 10 ms or so;
//! the longest look is printed (it only delays the benchmark's bookkeeping, not the figures).
//! Needs root and bird2.

use std::collections::BTreeMap;
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

    // 1. The burst, one file per Service, then all in one file.
    let monitor = RouteMonitor::start(&c);
    burst(&c, bird, &monitor, count, false);
    burst(&c, bird, &monitor, count, true);

    // 2. One at a time.
    let mut seq = Vec::new();
    let mut seq_poll = Duration::ZERO;
    for i in 0..SEQUENTIAL {
        let s = Service::new("seq", &format!("svc{i}"));
        c.state.apply(&s);
        let (l, p) = latencies(&c, &monitor, &[(c.state.path_of(&s), s.name.clone())]);
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

/// `count` Services written at once (`one_file`: as the items of one List manifest, else one
/// file each); prints the latencies, the CPU used and the UPDATEs sent for them.
fn burst(c: &Cluster, bird: &Bird, monitor: &RouteMonitor, count: usize, one_file: bool) {
    let ns = if one_file { "burstlist" } else { "burst" };
    let capture = Capture::start(&c.fabric.leaf, ns, "port-n0", "tcp port 179");
    let updates_before = updates_sent(c);
    let burst: Vec<Service> = (0..count)
        .map(|i| Service::new(ns, &format!("svc{i}")))
        .collect();
    let cpu_before = cpu_times(c, bird);
    let written = Instant::now();
    let list = format!("{ns}.json");
    if one_file {
        c.state.apply_in_one_file(&list, &burst);
    } else {
        c.state.apply_many(&burst);
    }
    let services: Vec<(PathBuf, String)> = burst
        .iter()
        .map(|s| {
            let path = if one_file {
                c.state.root().join(&list)
            } else {
                c.state.path_of(s)
            };
            (path, s.name.clone())
        })
        .collect();
    let (lat, poll) = latencies(c, monitor, &services);
    let all_in = written.elapsed();
    let cpu_burst: Vec<(&str, f64)> = cpu_times(c, bird)
        .into_iter()
        .zip(cpu_before)
        .map(|((who, after), (_, before))| (who, after - before))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let updates_metric = updates_sent(c) - updates_before;
    let msgs = capture.bgp_messages_from(Fabric::node_v4(0));
    let ups: Vec<&BgpMessage> = msgs.iter().filter(|m| m.kind == 2).collect();
    let announcing: Vec<&&BgpMessage> = ups.iter().filter(|m| m.announced > 0).collect();
    let announced: usize = announcing.iter().map(|m| m.announced).sum();
    if one_file {
        println!("\nburst: {count} Services written at once, as one List manifest");
    } else {
        println!("burst: {count} Services written at once, one file each");
    }
    print_latencies(&lat, poll);
    println!(
        "  files written -> all {count} routes at the leaf: {:.3} s (includes the controller's allocation)",
        all_in.as_secs_f64()
    );
    println!(
        "  CPU seconds until then: {}",
        cpu_burst
            .iter()
            .map(|(who, s)| format!("{who} {s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
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
}

/// CPU seconds used so far by the controller, node 0's speaker, the leaf's BIRD and this
/// benchmark (which looks at the files and reads the route monitor).
fn cpu_times(c: &Cluster, bird: &Bird) -> Vec<(&'static str, f64)> {
    let secs = |p: &leafbridge_tests::Process| p.cpu_time().map_or(f64::NAN, |d| d.as_secs_f64());
    let own = leafbridge_tests::netns::cpu_time_of(std::process::id())
        .map_or(f64::NAN, |d| d.as_secs_f64());
    vec![
        (
            "controller",
            c.controller.as_ref().map_or(f64::NAN, |k| secs(&k.process)),
        ),
        ("speaker", secs(&c.speakers[0].process)),
        ("leaf BIRD", secs(bird.process())),
        ("benchmark", own),
    ]
}

/// The speaker's own count of UPDATEs sent (every peer).
fn updates_sent(c: &Cluster) -> f64 {
    let m = c.speakers[0].metrics();
    metric_sum(&m, "leafbridge_speaker_bgp_updates_sent")
        + metric_sum(&m, "leafbridge_speaker_bgp_updates_sent_total")
}

/// For each Service file: its address and when the controller wrote it (mtime), then when
/// the leaf installed its route (the timestamp `ip -ts monitor route` printed in the leaf's
/// namespace: BIRD exports to the kernel as it takes the route into its RIB, so this is the
/// RIB time plus the kernel install, not a polling period). Returns the latencies and the
/// longest gap between two looks at the files.
fn latencies(
    c: &Cluster,
    monitor: &RouteMonitor,
    services: &[(PathBuf, String)],
) -> (Vec<Duration>, Duration) {
    let mut allocated: BTreeMap<usize, (IpAddr, SystemTime)> = BTreeMap::new();
    let mut mtimes: BTreeMap<&Path, SystemTime> = BTreeMap::new();
    let mut routed: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut longest_poll = Duration::ZERO;
    let start = Instant::now();
    while routed.len() < services.len() {
        assert!(
            start.elapsed() < LIMIT,
            "only {} of {} routes at the leaf after {LIMIT:?} ({} allocated)",
            routed.len(),
            services.len(),
            allocated.len()
        );
        c.assert_running_except(&[1]);
        let poll = Instant::now();
        let mut pending: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
        for (i, (path, _)) in services.iter().enumerate() {
            if !allocated.contains_key(&i) {
                pending.entry(path.as_path()).or_default().push(i);
            }
        }
        for (path, idx) in pending {
            // Read a file only when it changed since the last look (a status write).
            let Ok(mtime) = std::fs::metadata(path).and_then(|m| m.modified()) else {
                continue;
            };
            if mtimes.insert(path, mtime) == Some(mtime) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            if !text.contains("ingress") {
                continue;
            }
            let ips = addresses_by_name(&text);
            for i in idx {
                if let Some(ip) = ips.get(services[i].1.as_str()) {
                    allocated.insert(i, (*ip, mtime));
                }
            }
        }
        let installed = monitor.installed();
        for (i, (ip, t)) in &allocated {
            if let Some(k) = installed.get(ip)
                && !routed.contains_key(i)
            {
                routed.insert(*i, k.duration_since(*t).unwrap_or_default());
            }
        }
        longest_poll = longest_poll.max(poll.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    (routed.into_values().collect(), longest_poll)
}

/// The first ingress address of each Service in a manifest file (items of a List too).
fn addresses_by_name(text: &str) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for d in parse_yaml_documents(text) {
        let items = match d["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![d],
        };
        for item in items {
            if let (Some(name), Some(ip)) = (
                item["metadata"]["name"].as_str(),
                ingress_of(&item).first().copied(),
            ) {
                out.insert(name.to_string(), ip);
            }
        }
    }
    out
}

/// `ip -ts monitor route` in the leaf's namespace: when each host route was installed.
struct RouteMonitor {
    process: leafbridge_tests::Process,
}

impl RouteMonitor {
    fn start(c: &Cluster) -> RouteMonitor {
        let mut cmd = c.fabric.leaf.command("ip");
        cmd.args(["-ts", "-4", "monitor", "route"]).env("TZ", "UTC");
        let process = c.fabric.leaf.topology().spawn("route-monitor", cmd);
        std::thread::sleep(Duration::from_millis(200));
        RouteMonitor { process }
    }

    /// Each address with a route added so far, and when it was first added.
    fn installed(&self) -> BTreeMap<IpAddr, SystemTime> {
        let mut out = BTreeMap::new();
        for line in self.process.stdout().lines() {
            let Some((ts, route)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
                continue;
            };
            let (Some(t), Some(ip)) = (
                utc_timestamp(ts),
                route
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok()),
            ) else {
                continue; // "Deleted …", prefixes that are not host routes
            };
            out.entry(ip).or_insert(t);
        }
        out
    }
}

/// `2026-12-03T16:24:07.798656` (UTC) as a SystemTime.
fn utc_timestamp(ts: &str) -> Option<SystemTime> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss)
            + Duration::from_micros(micros),
    )
}

fn print_latencies(l: &[Duration], poll: Duration) {
    let mut v = l.to_vec();
    v.sort();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  status -> route in the leaf over {} Services: median {:.1} ms, p90 {:.1} ms, worst {:.1} ms \
         (longest look at the files {:.1} ms)",
        v.len(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(*v.last().unwrap()),
        ms(poll)
    );
}
