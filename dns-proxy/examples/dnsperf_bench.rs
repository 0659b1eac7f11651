//! Benchmark: leafbridge-dns next to unbound and dnsmasq, same data, one worker thread each,
//! measured with dnsperf in one run.
//!
//! ```text
//! cargo build --release -p leafbridge-dns --bins --examples
//! target/release/examples/dnsperf_bench [--seconds 10] [--qps 10000] [--rounds 3] [--only SERVER]
//! ```
//!
//! Servers are measured in interleaved rounds (the order rotated every round) and the
//! table gives each server's median, so a noisy moment on a shared machine does not decide
//! the comparison; every round's figures are printed below the table.
//!
//! `--only leafbridge-dns` (or `unbound`, `dnsmasq`, `hickory-fwd`) measures one server, for
//! profiling.
//!
//! Scenario 1: a cluster of 10,000 Services in 100 namespaces; 60 % A, 20 % SRV, 20 %
//! NXDOMAIN queries. Scenario 2: forwarded names, 95 % served from cache (warmed first), 5 %
//! unique misses to an upstream unbound; here also "hickory-fwd", hickory-server's own
//! forwarder with hickory-resolver's cache (`examples/hickory_forwarder.rs`, no cluster data,
//! so not in scenario 1), measured because it has an open report of losing queries under
//! dnsperf. For each server: CPU time per answered query
//! (user+system from /proc over queries completed), p50/p99 latency at the fixed offered
//! rate, lost queries, peak RSS (VmHWM), and the rate reached when dnsperf is unthrottled
//! (dnsperf shares the two cores, so that figure is bounded by dnsperf itself).
//! Everything runs on 127.0.0.1; every process started is killed by PID on exit.

use std::fmt::Write as _;

use clap::Parser as _;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers running and the scratch directory, for [`end_on_signal`].
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
static SCRATCH: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// A server under test, ended by PID when dropped (a normal exit or a panic).
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let pid = self.0.id();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != pid);
    }
}

/// On SIGINT or SIGTERM, end every server still running by its PID and remove the scratch
/// directory, then exit: destructors do not run when a signal ends the process.
fn end_on_signal() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the signal handler");
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        for pid in RUNNING.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("interrupted: servers ended, scratch directory removed");
        std::process::exit(130);
    });
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
    s.local_addr().unwrap().port()
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    Proc(child)
}

/// Wait until the server answers a DNS query over UDP (TCP listen alone is not enough:
/// dnsmasq and unbound may still be loading data).
fn wait_dns(port: u16, name: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "+tries=1",
                    "+time=1",
                    "+short",
                    name,
                ])
                .output()
                .unwrap();
            if out.status.success() && !out.stdout.is_empty() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what} did not answer on port {port}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / clk_tck()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Default)]
struct Perf {
    completed: u64,
    lost: u64,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn field(out: &str, key: &str) -> f64 {
    out.lines()
        .find(|l| l.trim_start().starts_with(key))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn dnsperf(
    port: u16,
    file: &Path,
    qps: Option<u32>,
    seconds: u32,
    runs_once: bool,
    verbose: bool,
) -> Perf {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(file)
        .args(["-t", "2"]);
    if runs_once {
        cmd.args(["-n", "1"]);
    } else {
        cmd.args(["-l", &seconds.to_string()]);
    }
    if let Some(q) = qps {
        cmd.args(["-Q", &q.to_string()]);
    }
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().expect("dnsperf");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1e6
        }
    };
    Perf {
        completed: field(&text, "Queries completed") as u64,
        lost: field(&text, "Queries lost") as u64,
        qps: field(&text, "Queries per second"),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Starts one server under test, returning it and its port.
type Starter<'a> = Box<dyn Fn() -> (Proc, u16) + 'a>;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const NAMESPACES: u32 = 100;
const PER_NS: u32 = 100;

fn cluster_ip(ns: u32, i: u32) -> String {
    let n = ns * PER_NS + i + 1;
    format!("10.96.{}.{}", n / 256, n % 256)
}

struct Row {
    fixed: Perf,
    sat: Perf,
    cpu_us_per_query: f64,
    rss_mib: f64,
}

/// Run the fixed-rate pass (CPU per query, latency, loss) then an unthrottled pass.
fn measure(pid: u32, port: u16, queries: &Path, qps: u32, seconds: u32) -> Row {
    let c0 = cpu_seconds(pid);
    let fixed = dnsperf(port, queries, Some(qps), seconds, false, true);
    let c1 = cpu_seconds(pid);
    let sat = dnsperf(port, queries, None, (seconds / 2).max(2), false, false);
    Row {
        cpu_us_per_query: (c1 - c0) * 1e6 / fixed.completed.max(1) as f64,
        rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
        fixed,
        sat,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// One table: per server, the median over rounds of CPU per query, p50, p99 and the
/// unthrottled rate; completed and lost summed; the highest peak RSS. Then every round.
fn print(title: &str, servers: &[&str], rounds: &[Vec<Row>], qps: u32) {
    println!("\n## {title}");
    println!(
        "{:<15} {:>12} {:>9} {:>9} {:>10} {:>8} {:>10} {:>9}",
        "server", "cpu µs/query", "p50 µs", "p99 µs", "completed", "lost", "max qps", "peak MiB"
    );
    for (i, name) in servers.iter().enumerate() {
        let rows: Vec<&Row> = rounds.iter().map(|r| &r[i]).collect();
        let m = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
        println!(
            "{:<15} {:>12.2} {:>9.0} {:>9.0} {:>10} {:>8} {:>10.0} {:>9.1}",
            name,
            m(&|r| r.cpu_us_per_query),
            m(&|r| r.fixed.p50_us),
            m(&|r| r.fixed.p99_us),
            rows.iter().map(|r| r.fixed.completed).sum::<u64>(),
            rows.iter().map(|r| r.fixed.lost).sum::<u64>(),
            m(&|r| r.sat.qps),
            rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
        );
    }
    println!(
        "(median of {} interleaved rounds at a fixed offered rate of {qps} qps; completed and lost summed; max qps = dnsperf unthrottled, lost there: {})",
        rounds.len(),
        servers
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} {}", rounds.iter().map(|r| r[i].sat.lost).sum::<u64>()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (k, round) in rounds.iter().enumerate() {
        let cells: Vec<String> = servers
            .iter()
            .zip(round)
            .map(|(n, r)| {
                format!(
                    "{n} {:.1} µs/q p99 {:.0}",
                    r.cpu_us_per_query, r.fixed.p99_us
                )
            })
            .collect();
        println!("  round {}: {}", k + 1, cells.join("; "));
    }
}

/// Measure every server `rounds` times, the order rotated each round so no server always
/// runs first or right after another; `file(round, server)` is the query file.
fn run_rounds(
    servers: &[(&'static str, Proc, u16)],
    rounds: u32,
    qps: u32,
    seconds: u32,
    file: &dyn Fn(u32, &str) -> PathBuf,
) -> Vec<Vec<Row>> {
    let n = servers.len();
    (0..rounds)
        .map(|r| {
            let mut row: Vec<Option<Row>> = (0..n).map(|_| None).collect();
            for k in 0..n {
                let i = (k + r as usize) % n;
                let (name, p, port) = &servers[i];
                row[i] = Some(measure(p.0.id(), *port, &file(r, name), qps, seconds));
            }
            row.into_iter().map(Option::unwrap).collect()
        })
        .collect()
}

fn leafbridge_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("leafbridge-dns");
    assert!(
        bin.is_file(),
        "build it first: cargo build --release -p leafbridge-dns ({})",
        bin.display()
    );
    bin
}

/// `hickory_forwarder`, built next to this executable by `--examples`.
fn hickory_forwarder_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("hickory_forwarder");
    assert!(
        bin.is_file(),
        "build it first: cargo build --release -p leafbridge-dns --examples ({})",
        bin.display()
    );
    bin
}

/// hickory-server's forwarder for `.` to the upstream, one tokio worker thread.
fn start_hickory_forwarder(tmp: &Path, upstream: u16) -> (Proc, u16) {
    let port = free_port();
    let p = spawn(
        Command::new(hickory_forwarder_binary())
            .args(["--port", &port.to_string()])
            .args(["--upstream", &format!("127.0.0.1:{upstream}")])
            // hickory-server logs every request at info.
            .env("RUST_LOG", "warn"),
        &tmp.join("hickory-fwd.log"),
    );
    (p, port)
}

fn start_leafbridge(tmp: &Path, tag: &str, state: &Path, upstream: Option<u16>) -> (Proc, u16) {
    let port = free_port();
    let up = upstream
        .map(|u| format!("upstreams:\n  default: [\"127.0.0.1:{u}\"]\n"))
        .unwrap_or_default();
    let cfg = tmp.join(format!("lb-{tag}.yaml"));
    std::fs::write(
        &cfg,
        format!("listen: [\"127.0.0.1:{port}\"]\nthreads: 1\ncluster:\n  service_cidrs: [\"10.96.0.0/12\"]\n  node_cidrs: [\"127.0.0.0/8\"]\nlimits:\n  rate_limit: null\n{up}"),
    )
    .unwrap();
    let log = tmp.join(format!("lb-{tag}.log"));
    let p = spawn(
        Command::new(leafbridge_binary())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "warn"),
        &log,
    );
    (p, port)
}

fn unbound_conf(tmp: &Path, tag: &str, port: u16, body: &str) -> PathBuf {
    let d = tmp.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound-{tag}.pid\"\n  use-syslog: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n{body}"
    );
    let path = tmp.join(format!("unbound-{tag}.conf"));
    std::fs::write(&path, conf).unwrap();
    path
}

fn start_unbound(tmp: &Path, tag: &str, body: &str) -> (Proc, u16) {
    let port = free_port();
    let conf = unbound_conf(tmp, tag, port, body);
    let p = spawn(
        Command::new("unbound").arg("-d").arg("-c").arg(conf),
        &tmp.join(format!("unbound-{tag}.log")),
    );
    (p, port)
}

fn start_dnsmasq(tmp: &Path, tag: &str, body: &str) -> (Proc, u16) {
    let port = free_port();
    let conf = tmp.join(format!("dnsmasq-{tag}.conf"));
    std::fs::write(
        &conf,
        format!("port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nuser=root\npid-file={}/dnsmasq-{tag}.pid\ncache-size=10000\ndns-forward-max=10000\n{body}", tmp.display()),
    )
    .unwrap();
    let p = spawn(
        Command::new("dnsmasq")
            .arg("-k")
            .arg(format!("--conf-file={}", conf.display())),
        &tmp.join(format!("dnsmasq-{tag}.log")),
    );
    (p, port)
}

/// leafbridge-dns next to unbound, dnsmasq and hickory's forwarder under dnsperf.
#[derive(clap::Parser)]
struct Args {
    /// Seconds of dnsperf per server, scenario and round at the fixed rate.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Fixed offered rate, queries per second.
    #[arg(long, default_value_t = 10_000)]
    qps: u32,
    /// Interleaved rounds; the table gives each server's median.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Measure one server only (for profiling).
    #[arg(long, value_parser = ["leafbridge-dns", "unbound", "dnsmasq", "hickory-fwd"])]
    only: Option<String>,
}

fn main() {
    for p in ["dnsperf", "unbound", "dnsmasq", "dig"] {
        require(p);
    }
    let Args {
        seconds,
        qps,
        rounds,
        only,
    } = Args::parse();
    let rounds = rounds.max(1);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("hickory-fwd") {
        // Fail before scenario 1 runs, not minutes later.
        hickory_forwarder_binary();
    }
    let tmp = tempfile::tempdir().unwrap();
    *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(tmp.path().to_path_buf());
    end_on_signal();
    let t = tmp.path();

    // ---- scenario 1 data -----------------------------------------------------------------
    let state = t.join("state");
    std::fs::create_dir(&state).unwrap();
    let mut unbound_data = String::from(
        "  local-zone: \"cluster.local.\" static\n  local-data: \"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\"\n",
    );
    let mut dnsmasq_data = String::from("local=/cluster.local/\n");
    for ns in 0..NAMESPACES {
        let mut y = String::new();
        for i in 0..PER_NS {
            let ip = cluster_ip(ns, i);
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{ns}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, protocol: TCP}}]}}\n"
            );
            let name = format!("svc-{i}.ns-{ns}.svc.cluster.local");
            let _ = writeln!(unbound_data, "  local-data: \"{name}. 5 IN A {ip}\"");
            let _ = writeln!(
                unbound_data,
                "  local-data: \"_http._tcp.{name}. 5 IN SRV 0 100 80 {name}.\""
            );
            let _ = writeln!(dnsmasq_data, "host-record={name},{ip}");
            let _ = writeln!(dnsmasq_data, "srv-host=_http._tcp.{name},{name},80,0,100");
        }
        std::fs::write(state.join(format!("ns-{ns}.yaml")), y).unwrap();
    }
    // One query file per round: names drawn afresh, NXDOMAIN names new every round.
    let q1_files: Vec<PathBuf> = (0..rounds)
        .map(|r| {
            let mut rng = Lcg(42 + u64::from(r));
            let mut q1 = String::new();
            for _ in 0..100_000 {
                let (ns, i) = (rng.next(NAMESPACES as u64), rng.next(PER_NS as u64));
                match rng.next(10) {
                    0..=5 => {
                        let _ = writeln!(q1, "svc-{i}.ns-{ns}.svc.cluster.local A");
                    }
                    6 | 7 => {
                        let _ = writeln!(q1, "_http._tcp.svc-{i}.ns-{ns}.svc.cluster.local SRV");
                    }
                    _ => {
                        let _ = writeln!(q1, "nx{r}-{i}.ns-{ns}.svc.cluster.local A");
                    }
                }
            }
            let p = t.join(format!("q1-{r}.txt"));
            std::fs::write(&p, q1).unwrap();
            p
        })
        .collect();
    let probe1 = "svc-1.ns-1.svc.cluster.local";

    println!(
        "# leafbridge-dns vs unbound vs dnsmasq (and hickory's forwarder in 2) (dnsperf, one worker thread each)"
    );
    println!(
        "offered rate {qps} qps for {seconds} s per server and round, {rounds} rounds; 2 cores shared with dnsperf"
    );
    let mut servers: Vec<(&'static str, Proc, u16)> = Vec::new();
    if wanted("leafbridge-dns") {
        let t0 = Instant::now();
        let (p, port) = start_leafbridge(t, "s1", &state, None);
        wait_dns(port, probe1, "leafbridge-dns", &t.join("lb-s1.log"));
        eprintln!(
            "leafbridge-dns (pid {}) loaded 10k Services in {:?}, peak RSS so far {:.1} MiB",
            p.0.id(),
            t0.elapsed(),
            peak_rss_kib(p.0.id()) as f64 / 1024.0
        );
        servers.push(("leafbridge-dns", p, port));
    }
    if wanted("unbound") {
        let (p, port) = start_unbound(t, "s1", &unbound_data);
        wait_dns(port, probe1, "unbound", &t.join("unbound-s1.log"));
        servers.push(("unbound", p, port));
    }
    if wanted("dnsmasq") {
        let (p, port) = start_dnsmasq(t, "s1", &dnsmasq_data);
        wait_dns(port, probe1, "dnsmasq", &t.join("dnsmasq-s1.log"));
        servers.push(("dnsmasq", p, port));
    }
    let rows = run_rounds(&servers, rounds, qps, seconds, &|r, _| {
        q1_files[r as usize].clone()
    });
    let names: Vec<&str> = servers.iter().map(|s| s.0).collect();
    print(
        "1. cluster of 10,000 Services in 100 namespaces (60% A, 20% SRV, 20% NXDOMAIN)",
        &names,
        &rows,
        qps,
    );
    drop(servers);

    // ---- scenario 2: forwarded names, 95 % cached -----------------------------------------
    let (_up, up_port) = start_unbound(
        t,
        "upstream",
        "  local-zone: \"example.test.\" redirect\n  local-data: \"example.test. 3600 IN A 192.0.2.1\"\n",
    );
    wait_dns(
        up_port,
        "x.example.test",
        "upstream unbound",
        &t.join("unbound-upstream.log"),
    );
    let hot = 1000;
    let warm_path = t.join("warm.txt");
    let mut warm = String::new();
    for i in 0..hot {
        let _ = writeln!(warm, "h-{i}.example.test A");
    }
    std::fs::write(&warm_path, warm).unwrap();
    // Per round and server: the same hot names, and unique misses no server has seen.
    let queries2 = |round: u32, tag: &str| {
        let mut rng = Lcg(7 + u64::from(round));
        let mut s = String::new();
        for n in 0..100_000 {
            if rng.next(100) < 95 {
                let _ = writeln!(s, "h-{}.example.test A", rng.next(hot));
            } else {
                let _ = writeln!(s, "u-{tag}-{round}-{n}.example.test A");
            }
        }
        let p = t.join(format!("q2-{tag}-{round}.txt"));
        std::fs::write(&p, s).unwrap();
        p
    };
    let fwd =
        format!("forward-zone:\n  name: \"example.test.\"\n  forward-addr: 127.0.0.1@{up_port}\n");
    let starters: Vec<(&'static str, Starter)> = vec![
        (
            "leafbridge-dns",
            Box::new(|| start_leafbridge(t, "s2", &state, Some(up_port))),
        ),
        ("unbound", Box::new(|| start_unbound(t, "s2", &fwd))),
        (
            "dnsmasq",
            Box::new(|| {
                start_dnsmasq(
                    t,
                    "s2",
                    &format!("server=/example.test/127.0.0.1#{up_port}\n"),
                )
            }),
        ),
        (
            "hickory-fwd",
            Box::new(|| start_hickory_forwarder(t, up_port)),
        ),
    ];
    let mut servers: Vec<(&'static str, Proc, u16)> = Vec::new();
    for (name, start) in starters.into_iter().filter(|(n, _)| wanted(n)) {
        let (p, port) = start();
        let log = match name {
            "leafbridge-dns" => "lb-s2.log",
            "unbound" => "unbound-s2.log",
            "dnsmasq" => "dnsmasq-s2.log",
            _ => "hickory-fwd.log",
        };
        wait_dns(port, "h-0.example.test", name, &t.join(log));
        dnsperf(port, &warm_path, None, 10, true, false);
        servers.push((name, p, port));
    }
    let rows = run_rounds(&servers, rounds, qps, seconds, &|r, name| queries2(r, name));
    let names: Vec<&str> = servers.iter().map(|s| s.0).collect();
    print(
        "2. forwarded names, 95% from cache (1,000 warm names + 5% unique misses)",
        &names,
        &rows,
        qps,
    );
}
