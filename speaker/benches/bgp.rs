//! Benchmark: 100,000 /32 prefixes into a BIRD receiver, from leafbridge-speaker, from BIRD and
//! from FRR bgpd, measured in the same run on the same kind of namespace pair.
//!
//!     cargo bench -p leafbridge-speaker --bench bgp            (100000 prefixes)
//!     cargo bench -p leafbridge-speaker --bench bgp -- 20000   (another count)
//!     cargo bench -p leafbridge-speaker --bench bgp -- curve   (memory for 10k, 100k, 1M)
//!
//! The curve runs leafbridge-speaker and BIRD at 10,000, 100,000 and 1,000,000 prefixes and
//! prints each one's peak RSS, the bytes per prefix that makes, and the marginal bytes per
//! prefix between successive counts (what one more prefix costs, without the fixed part), and,
//! once every prefix is received, the sender's private memory (`RssAnon`) and the resident
//! pages of its program and libraries (`RssFile`, "code").
//!
//! For each sender: time from process start until the receiver holds every prefix, time from
//! the session reaching Established until then, the sender's peak RSS (VmHWM), and the time
//! from SIGTERM until the receiver holds none. Needs root, `bird2` and `frr`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::{Pair, Process};

const FIRST: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
const SENDER_AS: u32 = 65001;
const RECEIVER_AS: u32 = 65000;
const LIMIT: Duration = Duration::from_secs(300);
const WITHDRAW_LIMIT: Duration = Duration::from_secs(20);

struct Figures {
    sender: &'static str,
    from_start: Duration,
    from_established: Duration,
    peak_rss_kib: u64,
    /// `RssAnon` and `RssFile` once every prefix is received: private memory, and the pages
    /// of the program's own code and libraries (shared, and given back under pressure).
    anon_kib: u64,
    file_kib: u64,
    withdraw: Option<Duration>,
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "curve") {
        curve();
        return;
    }
    let count: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    println!(
        "{count} /32 prefixes into a BIRD 2 receiver (each sender in its own namespace pair)\n"
    );
    let results = vec![
        run("leafbridge-speaker", count, start_speaker),
        run("BIRD 2", count, start_bird),
        run("FRR bgpd", count, start_frr),
    ];
    let ours = &results[0];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<20} {:>16} {:>20} {:>14} {:>16}",
        "sender", "start->all (s)", "Established->all (s)", "peak RSS (MB)", "SIGTERM->none (s)"
    );
    for r in &results {
        let _ = writeln!(
            table,
            "{:<20} {:>16.3} {:>20.3} {:>14.1} {:>16}",
            r.sender,
            r.from_start.as_secs_f64(),
            r.from_established.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.withdraw
                .map(|w| format!("{:.3}", w.as_secs_f64()))
                .unwrap_or_else(|| format!("> {}", WITHDRAW_LIMIT.as_secs()))
        );
    }
    println!("{table}");
    let bird = &results[1];
    println!(
        "ratio to BIRD (Established->all): {:.2}; (start->all): {:.2}; peak RSS {:.1} MB vs BIRD's {:.1} MB (goal: below BIRD's)",
        ours.from_established.as_secs_f64() / bird.from_established.as_secs_f64(),
        ours.from_start.as_secs_f64() / bird.from_start.as_secs_f64(),
        ours.peak_rss_kib as f64 / 1024.0,
        bird.peak_rss_kib as f64 / 1024.0
    );
}

/// Peak RSS against the number of prefixes, for our speaker and BIRD.
fn curve() {
    const COUNTS: [u32; 3] = [10_000, 100_000, 1_000_000];
    println!("sender peak RSS by prefix count (/32s into a BIRD 2 receiver)\n");
    println!(
        "{:<20} {:>10} {:>14} {:>14} {:>22} {:>13} {:>13}",
        "sender",
        "prefixes",
        "peak RSS (MB)",
        "bytes/prefix",
        "marginal bytes/prefix",
        "private (MB)",
        "code (MB)"
    );
    let senders: [(&'static str, Start); 2] = [
        ("leafbridge-speaker", start_speaker),
        ("BIRD 2", start_bird),
    ];
    for (name, start) in senders {
        let mut previous: Option<(u32, u64)> = None;
        for count in COUNTS {
            let f = run(name, count, start);
            let bytes = f.peak_rss_kib * 1024;
            let marginal = previous
                .map(|(c, b)| format!("{:.0}", (bytes as f64 - b as f64) / f64::from(count - c)))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<20} {:>10} {:>14.1} {:>14.0} {:>22} {:>13.1} {:>13.1}",
                name,
                count,
                bytes as f64 / 1024.0 / 1024.0,
                bytes as f64 / f64::from(count),
                marginal,
                f.anon_kib as f64 / 1024.0,
                f.file_kib as f64 / 1024.0
            );
            previous = Some((count, bytes));
        }
    }
}

/// Starts a sender in `ns` (192.0.2.1) towards the receiver at 192.0.2.2; returns its process.
type Start = fn(&Pair, u32) -> Process;

fn run(name: &'static str, count: u32, start: Start) -> Figures {
    let pair = Pair::new("bench");
    let mut rcfg = BirdConfig::new("192.0.2.2".parse().unwrap(), RECEIVER_AS);
    rcfg.peers.push(BirdPeer {
        passive: true,
        ..BirdPeer::new("sender", Pair::a_v4(), SENDER_AS)
    });
    let receiver = Bird::start(&pair.b, "receiver", &rcfg);

    let t0 = Instant::now();
    let sender = start(&pair, count);
    let mut established_at = None;
    let all_at = loop {
        if established_at.is_none() && receiver.is_established("sender") {
            established_at = Some(Instant::now());
        }
        if established_at.is_some() && receiver.route_count_from("sender") >= u64::from(count) {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < LIMIT,
            "{name}: not all prefixes received within {LIMIT:?}"
        );
        assert!(sender.is_running(), "{name} exited: {}", sender.stderr());
        std::thread::sleep(Duration::from_millis(5));
    };
    let established_at = established_at.expect("set before the loop ends");
    let peak_rss_kib = sender.peak_rss_kib().unwrap_or(0);
    let anon_kib = sender.status_kib("RssAnon").unwrap_or(0);
    let file_kib = sender.status_kib("RssFile").unwrap_or(0);

    let t_term = Instant::now();
    sender.signal("TERM");
    let withdraw = loop {
        if receiver.route_count_from("sender") == 0 {
            break Some(t_term.elapsed());
        }
        if t_term.elapsed() > WITHDRAW_LIMIT {
            eprintln!("{name}: routes still held {WITHDRAW_LIMIT:?} after SIGTERM");
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = sender.wait_exit(Duration::from_secs(10));
    Figures {
        sender: name,
        from_start: all_at - t0,
        from_established: all_at - established_at,
        peak_rss_kib,
        anon_kib,
        file_kib,
        withdraw,
    }
}

fn start_speaker(pair: &Pair, count: u32) -> Process {
    let dir = pair.topo.subdir("speaker");
    let mut yaml = String::with_capacity(count as usize * 32);
    let _ = write!(
        yaml,
        "local_as: {SENDER_AS}\nrouter_id: 192.0.2.1\npeers:\n  - {{ name: receiver, address: 192.0.2.2, remote_as: {RECEIVER_AS} }}\nprefixes:\n"
    );
    for i in 0..count {
        let _ = writeln!(
            yaml,
            "  - prefix: {}/32",
            Ipv4Addr::from(u32::from(FIRST) + i)
        );
    }
    let config = dir.join("speaker.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = pair.a.command(env!("CARGO_BIN_EXE_leafbridge-speaker"));
    cmd.arg("--config").arg(&config).env("RUST_LOG", "warn");
    pair.topo.spawn("speaker", cmd)
}

fn start_bird(pair: &Pair, count: u32) -> Process {
    let mut cfg = BirdConfig::new("192.0.2.1".parse().unwrap(), SENDER_AS);
    cfg.add_hosts(FIRST, count);
    cfg.peers.push(BirdPeer {
        export_static: true,
        import_all: false,
        ..BirdPeer::new("receiver", Pair::b_v4(), RECEIVER_AS)
    });
    let bird = Bird::start(&pair.a, "sender", &cfg);
    bird.process().clone()
}

fn start_frr(pair: &Pair, count: u32) -> Process {
    let mut cfg = FrrConfig::new("192.0.2.1".parse().unwrap(), SENDER_AS);
    cfg.add_hosts(FIRST, count);
    cfg.neighbors.push(FrrNeighbor {
        export: true,
        ..FrrNeighbor::new(Pair::b_v4(), RECEIVER_AS)
    });
    let frr = Frr::start(&pair.a, "sender", &cfg);
    frr.process().clone()
}
