//! Abuse benchmark: how a well-behaved client fares while another one misbehaves, for
//! leafbridge-dns and unbound with equivalent limits, in the same run, on loopback.
//!
//! ```text
//! cargo build --release -p leafbridge-dns --bins --examples
//! target/release/examples/abuse_bench [--seconds 10]
//! ```
//!
//! 1. TCP: 1,024 idle connections and 1,024 connections that pipeline queries and never
//!    read, all from 127.0.0.2, while a second client (127.0.0.3) asks over TCP, a new
//!    connection per query as `dig +tcp` does, one after another.
//! 2. 300,000 distinct sources inside the allowed range (127.0.0.0/8: every address in it is
//!    local), one query each at about 20,000/s, while the well-behaved client asks over UDP.
//! 3. A flood of random names under a blackholed upstream zone at 20,000 queries/s (from
//!    64 addresses, so no per-address rate limit stops it alone), while the well-behaved
//!    client asks for cluster names and cached forwarded names over UDP.
//!
//! For each: the well-behaved client's answered share and p50/p99 latency, the server's
//! peak RSS (VmHWM) and peak open file descriptors (sampled every 50 ms). Every server is
//! a fresh process per scenario with one worker thread. Limits (both servers):
//! 1,000 queries/s per address (bursts of 2,000; unbound's `ip-ratelimit` has no burst
//! setting), TCP idle 10 s, 1,024 TCP connections, 32 per client address, 4,096
//! forwarded queries in flight, upstream timeout 1.5 s. Every process started is ended by
//! PID.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(p: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "prerequisite missing: {p}");
}

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    drop(s);
    port
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Proc(child)
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "prerequisite missing: {} (cargo build --release -p leafbridge-dns --bins)",
        p.display()
    );
    p
}

/// A DNS query for `name` type A with `id`, EDNS0 with a 1232-byte buffer.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        1,
    ];
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    p
}

/// `Some(rcode)` of a reply to `id` with at least one answer record, else `None`.
fn answered(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12
        && u16::from_be_bytes([reply[0], reply[1]]) == id
        && reply[3] & 0x0f == 0
        && u16::from_be_bytes([reply[6], reply[7]]) > 0
}

fn wait_dns(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = s.send_to(
            &query(1, "web.default.svc.cluster.local"),
            ("127.0.0.1", port),
        );
        if let Ok(n) = s.recv(&mut buf)
            && answered(&buf[..n], 1)
        {
            return;
        }
    }
    panic!(
        "server on {port} not answering\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Samples the server's open file descriptors until stopped; returns the peak.
fn fd_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(open_fds(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

#[derive(Default)]
struct Client {
    latencies: Vec<Duration>,
    asked: usize,
}

impl Client {
    fn record(&mut self, t: Option<Duration>) {
        self.asked += 1;
        if let Some(t) = t {
            self.latencies.push(t);
        }
    }
    fn share(&self) -> f64 {
        100.0 * self.latencies.len() as f64 / self.asked.max(1) as f64
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// One UDP query and its latency if answered within 2 s.
fn ask_udp(s: &UdpSocket, to: SocketAddr, id: u16, name: &str) -> Option<Duration> {
    let t0 = Instant::now();
    s.send_to(&query(id, name), to).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = s.recv(&mut buf).ok()?;
        if answered(&buf[..n], id) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(2) {
            return None;
        }
    }
}

/// One query on a new TCP connection from `source`, as `dig +tcp` does.
fn ask_tcp(source: [u8; 4], to: SocketAddr, id: u16, name: &str) -> Option<Duration> {
    let t0 = Instant::now();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::from((source, 0)).into()).ok()?;
    s.connect_timeout(&to.into(), Duration::from_secs(2)).ok()?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let q = query(id, name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    answered(&buf, id).then(|| t0.elapsed())
}

struct Row {
    scenario: &'static str,
    server: &'static str,
    share: f64,
    p50: f64,
    p99: f64,
    rss_mib: f64,
    fds: usize,
}

/// The well-behaved client asks `names` in turn at about `rate`/s for `seconds`.
fn well_behaved_udp(
    to: SocketAddr,
    source: [u8; 4],
    names: &[&str],
    rate: u32,
    seconds: u64,
) -> Client {
    let s = UdpSocket::bind(SocketAddr::from((source, 0))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut c = Client::default();
    let t0 = Instant::now();
    let gap = Duration::from_secs(1) / rate;
    let mut i = 0u16;
    while t0.elapsed() < Duration::from_secs(seconds) {
        let next = t0 + gap * u32::from(i);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let name = names[usize::from(i) % names.len()];
        c.record(ask_udp(&s, to, i, name));
        i = i.wrapping_add(1);
    }
    c
}

fn scenario_tcp(to: SocketAddr, seconds: u64) -> Client {
    let mut idle = Vec::new();
    let mut never_read = Vec::new();
    let opened = |list: &mut Vec<TcpStream>, n: usize| {
        for _ in 0..n {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
                .unwrap();
            let _ = s.set_recv_buffer_size(4096);
            if s.connect_timeout(&to.into(), Duration::from_millis(500))
                .is_ok()
            {
                list.push(s.into());
            }
        }
    };
    opened(&mut idle, 1024);
    opened(&mut never_read, 1024);
    // The never-reading ones pipeline queries until their send buffers fill.
    let q = query(9, "web.default.svc.cluster.local");
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let burst: Vec<u8> = framed
        .iter()
        .copied()
        .cycle()
        .take(framed.len() * 200)
        .collect();
    for s in &mut never_read {
        let _ = s.set_nonblocking(true);
        let _ = s.write(&burst);
    }
    let mut c = Client::default();
    let t0 = Instant::now();
    let mut i = 0u16;
    while t0.elapsed() < Duration::from_secs(seconds) {
        c.record(ask_tcp(
            [127, 0, 0, 3],
            to,
            i,
            "web.default.svc.cluster.local",
        ));
        i = i.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(idle);
    drop(never_read);
    c
}

fn scenario_sources(to: SocketAddr, _seconds: u64) -> Client {
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut c = Client::default();
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) {
                c.record(ask_udp(&s, to, i, "web.default.svc.cluster.local"));
                i = i.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(5));
            }
            c
        })
    };
    let t0 = Instant::now();
    let q = query(7, "web.default.svc.cluster.local");
    // 127.1.0.0 onwards: 300,000 addresses, one query each, about 20,000 a second.
    for i in 0u32..300_000 {
        let next = t0 + Duration::from_micros(u64::from(i) * 50);
        if let Some(w) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let a = 0x7f01_0000u32 + i;
        if let Ok(s) = UdpSocket::bind(SocketAddr::from((a.to_be_bytes(), 0))) {
            let _ = s.send_to(&q, to);
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap()
}

fn scenario_flood(to: SocketAddr, seconds: u64) -> Client {
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socks: Vec<UdpSocket> = (0..64u8)
                .map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 1, i + 1], 0))).unwrap())
                .collect();
            let t0 = Instant::now();
            let mut n: u64 = 0;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !stop.load(Ordering::Relaxed) {
                // 20,000/s in 1 ms ticks.
                let due = t0.elapsed().as_micros() as u64 / 50;
                while n < due {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let name = format!("r{x:x}.blackhole.test");
                    let _ = socks[(n % 64) as usize].send_to(&query(n as u16, &name), to);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let names = [
        "web.default.svc.cluster.local",
        "c1.cached.test",
        "c2.cached.test",
    ];
    let c = well_behaved_udp(to, [127, 0, 0, 3], &names, 200, seconds);
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    c
}

fn run(
    scenario: &'static str,
    server: &'static str,
    proc: &Proc,
    port: u16,
    f: impl FnOnce(SocketAddr) -> Client,
) -> Row {
    let pid = proc.0.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = fd_sampler(pid, stop.clone());
    let mut c = f(SocketAddr::from(([127, 0, 0, 1], port)));
    stop.store(true, Ordering::Relaxed);
    let fds = sampler.join().unwrap_or(0);
    Row {
        scenario,
        server,
        share: c.share(),
        p50: c.pct(0.50),
        p99: c.pct(0.99),
        rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
        fds,
    }
}

/// leafbridge-dns and unbound under three abuse scenarios (see the module comment).
#[derive(clap::Parser)]
struct Args {
    /// Seconds each scenario runs per server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn main() {
    require("unbound");
    let Args { seconds } = Args::parse();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The blackholed upstream: a socket nobody reads.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    // The upstream for cached names: an unbound with local data.
    let up_port = free_port();
    let up_conf = t.join("up.conf");
    std::fs::write(
        &up_conf,
        format!(
            "server:\n  interface: 127.0.0.1\n  port: {up_port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/up.pid\"\n  use-syslog: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  local-zone: \"test.\" nodefault\n  local-zone: \"cached.test.\" static\n  local-data: \"c1.cached.test. 3600 IN A 192.0.2.1\"\n  local-data: \"c2.cached.test. 3600 IN A 192.0.2.2\"\n",
            d = t.display()
        ),
    )
    .unwrap();
    let _up = spawn(
        Command::new("unbound").arg("-d").arg("-c").arg(&up_conf),
        &t.join("up.log"),
    );
    std::thread::sleep(Duration::from_millis(500));

    let state = t.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.96.0.10}\n",
    )
    .unwrap();

    let start_leafbridge = |tag: &str| {
        let port = free_port();
        let cfg = t.join(format!("lb-{tag}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "listen: [\"127.0.0.1:{port}\"]\nthreads: 1\nallow_clients: [\"127.0.0.0/8\"]\ncluster:\n  service_cidrs: [\"10.96.0.0/12\"]\n  node_cidrs: [\"127.0.0.0/8\"]\nupstreams:\n  timeout_ms: 1500\n  default: [\"127.0.0.1:{up_port}\"]\n  zones: [{{zone: blackhole.test, servers: [\"{hole_addr}\"]}}]\nlimits:\n  rate_limit: {{queries_per_second: 1000, burst: 2000}}\n  tcp_idle_ms: 10000\n  max_tcp_connections: 1024\n  max_tcp_connections_per_client: 32\n  max_forwards_in_flight: 4096\n"
            ),
        )
        .unwrap();
        let log = t.join(format!("lb-{tag}.log"));
        let p = spawn(
            Command::new(binary("leafbridge-dns"))
                .arg("--config")
                .arg(&cfg)
                .arg("--state-dir")
                .arg(&state)
                .env("RUST_LOG", "warn"),
            &log,
        );
        wait_dns(port, &log);
        (p, port)
    };
    let start_unbound = |tag: &str| {
        let port = free_port();
        let conf = t.join(format!("ub-{tag}.conf"));
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/ub-{tag}.pid\"\n  use-syslog: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  local-zone: \"cluster.local.\" static\n  local-data: \"web.default.svc.cluster.local. 5 IN A 10.96.0.10\"\n  ip-ratelimit: 1000\n  tcp-idle-timeout: 10000\n  incoming-num-tcp: 1024\n  tcp-connection-limit: 127.0.0.2/32 32\n  tcp-connection-limit: 127.0.0.3/32 32\n  num-queries-per-thread: 4096\n  outgoing-range: 8192\nforward-zone:\n  name: \"blackhole.test.\"\n  forward-addr: {ha}@{hp}\nforward-zone:\n  name: \"cached.test.\"\n  forward-addr: 127.0.0.1@{up_port}\n",
                d = t.display(),
                ha = hole_addr.ip(),
                hp = hole_addr.port(),
            ),
        )
        .unwrap();
        let log = t.join(format!("ub-{tag}.log"));
        let p = spawn(Command::new("unbound").arg("-d").arg("-c").arg(&conf), &log);
        wait_dns(port, &log);
        (p, port)
    };

    type Scenario = (&'static str, &'static str, fn(SocketAddr, u64) -> Client);
    let scenarios: [Scenario; 3] = [
        (
            "tcp",
            "1. 1,024 idle + 1,024 never-reading TCP connections",
            scenario_tcp,
        ),
        (
            "sources",
            "2. 300,000 distinct sources (~20,000/s)",
            scenario_sources,
        ),
        (
            "flood",
            "3. random names to a blackholed zone, 20,000/s",
            scenario_flood,
        ),
    ];
    let rows = Mutex::new(Vec::new());
    for (tag, title, f) in scenarios {
        for server in ["leafbridge-dns", "unbound"] {
            let (p, port) = if server == "unbound" {
                start_unbound(tag)
            } else {
                start_leafbridge(tag)
            };
            // Warm the cached names.
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            for (i, n) in ["c1.cached.test", "c2.cached.test"].iter().enumerate() {
                let _ = ask_udp(&s, to, i as u16, n);
            }
            let row = run(title, server, &p, port, |to| f(to, seconds));
            eprintln!(
                "{title} / {server}: {:.2} % answered, p50 {:.2} ms, p99 {:.2} ms, peak RSS {:.1} MiB, peak fds {}",
                row.share, row.p50, row.p99, row.rss_mib, row.fds
            );
            rows.lock().unwrap().push(row);
            drop(p);
        }
    }
    println!(
        "| scenario | server | well-behaved answered | p50 ms | p99 ms | peak RSS MiB | peak open fds |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows.lock().unwrap().iter() {
        println!(
            "| {} | {} | {:.2} % | {:.2} | {:.2} | {:.1} | {} |",
            r.scenario, r.server, r.share, r.p50, r.p99, r.rss_mib, r.fds
        );
    }
    drop(hole);
}
