//! Benchmark: CPU and memory of 100 BFD sessions at 300 ms × 3, leafbridge-speaker (a speaker
//! with 100 BGP peers, each with a BFD profile) against FRR's bfdd holding the same 100
//! sessions at the other end, measured in the same run over the same window.
//!
//!     cargo bench -p leafbridge-speaker --bench bfd            (100 sessions, 20 s window)
//!     cargo bench -p leafbridge-speaker --bench bfd -- 50 30   (sessions, window seconds)
//!
//! The speaker runs in namespace `a`, bfdd in `b`, each with one address per session on the
//! shared link (session i: 192.0.2.10 + i in `a`, 192.0.2.130 + i in `b`), so every session is
//! its own single-hop (TTL 255) path: bfdd keeps one session per peer address (two `peer`
//! blocks for the same address with different `local-address` become one session). The BGP
//! peers are passive and nobody connects, so the speaker's CPU is its BFD. Needs root and
//! `frr`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use leafbridge_tests::frr::{Bfdd, BfddConfig, BfddPeer};
use leafbridge_tests::{Pair, Process, wait_for};

/// Session i's address in the speaker's namespace.
fn ours(i: u32) -> IpAddr {
    let i = u8::try_from(i).expect("at most 100 sessions");
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i))
}

/// Session i's address in bfdd's namespace.
fn theirs(i: u32) -> IpAddr {
    let i = u8::try_from(i).expect("at most 100 sessions");
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 130 + i))
}

struct Figures {
    name: &'static str,
    cpu: Duration,
    peak_rss_kib: u64,
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u32>().ok());
    let sessions = args.next().unwrap_or(100);
    let window = Duration::from_secs(u64::from(args.next().unwrap_or(20)));
    assert!(
        sessions <= 150,
        "at most 150 sessions (one address each in 192.0.2.100-249)"
    );

    let pair = Pair::new("bfdbench");
    let mut bfdd_cfg = BfddConfig::new(300, 300, 3);
    for i in 0..sessions {
        pair.a.add_addr(Pair::A_IF, &format!("{}/24", ours(i)));
        pair.b.add_addr(Pair::B_IF, &format!("{}/24", theirs(i)));
        bfdd_cfg.peers.push(BfddPeer {
            addr: ours(i),
            local: theirs(i),
            multihop: false,
            passive: false,
        });
    }
    let bfdd = Bfdd::start(&pair.b, "peer", &bfdd_cfg);

    let mut yaml = String::from(
        "local_as: 65001\nrouter_id: 192.0.2.1\nbfd_profiles:\n  fast: { receive_interval: 300, transmit_interval: 300, detect_multiplier: 3 }\npeers:\n",
    );
    for i in 0..sessions {
        let _ = writeln!(
            yaml,
            "  - {{ name: peer{i}, address: {}, source_address: {}, remote_as: 65000, passive: true, bfd_profile: fast }}",
            theirs(i),
            ours(i)
        );
    }
    let dir = pair.topo.subdir("speaker");
    let config = dir.join("speaker.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = pair.a.command(env!("CARGO_BIN_EXE_leafbridge-speaker"));
    cmd.arg("--config").arg(&config).env("RUST_LOG", "warn");
    let speaker = pair.topo.spawn("speaker", cmd);

    let started = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "every bfdd session up at 300 ms",
        || {
            let peers = bfdd.peers();
            let up = peers
                .iter()
                .filter(|p| {
                    p["status"] == "up"
                        && p["remote-transmit-interval"] == 300
                        && p["remote-receive-interval"] == 300
                })
                .count();
            if up == sessions as usize {
                Ok(())
            } else {
                Err(format!("{up} of {sessions} up"))
            }
        },
    );
    println!(
        "{sessions} BFD sessions at 300 ms x 3 up after {:.1} s; measuring {} s",
        started.elapsed().as_secs_f64(),
        window.as_secs()
    );

    let cpu = |p: &Process| p.cpu_time().expect("CPU time readable");
    let (s0, b0) = (cpu(&speaker), cpu(bfdd.process()));
    std::thread::sleep(window);
    let (s1, b1) = (cpu(&speaker), cpu(bfdd.process()));
    let flaps = bfdd
        .peers()
        .iter()
        .filter(|p| p["status"] != "up" || p["uptime"].as_u64().unwrap_or(0) < window.as_secs())
        .count();

    let results = [
        Figures {
            name: "leafbridge-speaker",
            cpu: s1 - s0,
            peak_rss_kib: speaker.peak_rss_kib().unwrap_or(0),
        },
        Figures {
            name: "FRR bfdd",
            cpu: b1 - b0,
            peak_rss_kib: bfdd.process().peak_rss_kib().unwrap_or(0),
        },
    ];
    println!(
        "\n{:<20} {:>12} {:>10} {:>22} {:>14}",
        "process", "CPU (ms)", "CPU (%)", "CPU per packet (µs)", "peak RSS (MB)"
    );
    // Each side sends one packet per session every 225-300 ms (jitter) and receives as many.
    let packets = f64::from(sessions) * window.as_secs_f64() / 0.2625 * 2.0;
    for r in &results {
        println!(
            "{:<20} {:>12.0} {:>10.2} {:>22.1} {:>14.1}",
            r.name,
            r.cpu.as_secs_f64() * 1e3,
            r.cpu.as_secs_f64() / window.as_secs_f64() * 100.0,
            r.cpu.as_secs_f64() * 1e6 / packets,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "\nsessions that flapped or went down during the window (bfdd's view): {flaps}; CPU ratio speaker/bfdd {:.2}",
        results[0].cpu.as_secs_f64() / results[1].cpu.as_secs_f64().max(1e-9)
    );
}
