//! DNS peers: unbound (upstream resolver and comparison server), dnsmasq (comparison server),
//! and `dig` as a client, each on a loopback port of the host or of a test namespace.
//!
//! ```no_run
//! use leafbridge_tests::{Topology, dns::{Unbound, UnboundConfig, dig}};
//! let topo = Topology::new("doc");
//! let host = topo.host(); // or topo.namespace("up") for a private loopback
//! let mut cfg = UnboundConfig::new();
//! cfg.local_zone("example.test.", "static");
//! cfg.local_data("www.example.test. 300 IN A 203.0.113.80");
//! let unbound = Unbound::start(&host, "up", &cfg);
//! let answer = dig(&host, unbound.addr(), "www.example.test", "A", &[]);
//! assert_eq!(answer.rcode, "NOERROR");
//! ```
//!
//! Nothing here ever reaches a real resolver: unless a forward zone for `.` is configured,
//! unbound refuses (REFUSED) every name that is neither local data nor under a forward zone.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{Netns, Process};
use crate::support::{require, wait_for};

/// A port that is free for UDP and TCP on 127.0.0.1 of the host right now (racy by nature, but
/// namespaces have their own loopback, and the kernel hands out ephemeral ports in turn).
pub fn free_port() -> u16 {
    free_port_on(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// A port that is free for UDP and TCP on every one of `addrs` (host loopback addresses such as
/// 127.0.0.3, for a server that listens on several), racy like [`free_port`].
pub fn free_port_on(addrs: &[IpAddr]) -> u16 {
    let first = *addrs
        .first()
        .expect("free_port_on needs at least one address");
    loop {
        let udp = UdpSocket::bind((first, 0)).expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        let free = addrs.iter().all(|&ip| {
            TcpListener::bind((ip, port)).is_ok()
                && (ip == first || UdpSocket::bind((ip, port)).is_ok())
        });
        if free {
            return port;
        }
    }
}

/// An unbound configuration.
#[derive(Debug, Clone)]
pub struct UnboundConfig {
    /// Listen address (default 127.0.0.1).
    pub listen: IpAddr,
    /// Listen port (default: a free port, see [`free_port`]).
    pub port: u16,
    pub num_threads: u32,
    /// `server:` lines, verbatim (local-zone, local-data, cache sizes, ...).
    pub server_lines: Vec<String>,
    /// Forward zones: (zone, upstreams).
    pub forward_zones: Vec<(String, Vec<SocketAddr>)>,
}

impl Default for UnboundConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl UnboundConfig {
    /// One thread on 127.0.0.1 and a free port; the `test.` zone is not refused (unbound's
    /// default `local-zone: "test." static` would answer NXDOMAIN itself).
    pub fn new() -> UnboundConfig {
        UnboundConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: free_port(),
            num_threads: 1,
            server_lines: vec!["local-zone: \"test.\" nodefault".to_string()],
            forward_zones: Vec::new(),
        }
    }

    /// `local-zone: "ZONE" TYPE` (e.g. `static`, `transparent`, `nodefault`).
    pub fn local_zone(&mut self, zone: &str, kind: &str) {
        self.server_lines
            .push(format!("local-zone: \"{zone}\" {kind}"));
    }

    /// `local-data: "RR"`, e.g. `www.example.test. 300 IN A 203.0.113.80`.
    pub fn local_data(&mut self, rr: &str) {
        self.server_lines.push(format!("local-data: \"{rr}\""));
    }

    /// `forward-zone` for `zone` to `upstreams`.
    pub fn forward_zone(&mut self, zone: &str, upstreams: &[SocketAddr]) {
        self.forward_zones
            .push((zone.to_string(), upstreams.to_vec()));
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.port)
    }

    /// The unbound.conf text for an instance whose files live in `dir`.
    pub fn render(&self, dir: &std::path::Path) -> String {
        let mut c = String::from("server:\n");
        let _ = writeln!(c, "  interface: {}@{}", self.listen, self.port);
        let _ = writeln!(c, "  port: {}", self.port);
        let _ = writeln!(c, "  num-threads: {}", self.num_threads);
        let _ = writeln!(c, "  directory: \"{}\"", dir.display());
        let _ = writeln!(c, "  pidfile: \"{}\"", dir.join("unbound.pid").display());
        c.push_str(concat!(
            "  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  use-syslog: no\n  logfile: \"\"\n",
            "  verbosity: 1\n  interface-automatic: no\n",
            // Only test namespaces and loopback can reach it anyway.
            "  access-control: 0.0.0.0/0 allow\n  access-control: ::/0 allow\n",
            // No DNSSEC validation, no trust anchors: answers come from local data or the test's
            // own upstreams.
            "  module-config: \"iterator\"\n  do-not-query-localhost: no\n",
            "  prefetch: no\n  qname-minimisation: no\n",
        ));
        for l in &self.server_lines {
            let _ = writeln!(c, "  {l}");
        }
        if !self.forward_zones.iter().any(|(z, _)| z == ".") {
            // Never iterate from the real root servers: whatever is neither local data nor
            // under a forward zone is refused at once.
            c.push_str("  local-zone: \".\" refuse\n");
            for (zone, _) in &self.forward_zones {
                let _ = writeln!(c, "  local-zone: \"{zone}\" transparent");
            }
        }
        for (zone, ups) in &self.forward_zones {
            let _ = writeln!(c, "forward-zone:\n  name: \"{zone}\"");
            for u in ups {
                let _ = writeln!(c, "  forward-addr: {}@{}", u.ip(), u.port());
            }
        }

        c.push_str("remote-control:\n  control-enable: no\n");
        c
    }
}

/// A running unbound (`unbound -d -c CONF`).
#[derive(Debug)]
pub struct Unbound {
    ns: Netns,
    addr: SocketAddr,
    conf: PathBuf,
    process: Process,
}

impl Unbound {
    /// Checks the config (`unbound-checkconf`), starts unbound and waits until it answers.
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &UnboundConfig) -> Unbound {
        require("unbound");
        let dir = ns.topology().subdir(&format!("unbound-{name}"));
        let conf = dir.join("unbound.conf");
        std::fs::write(&conf, config.render(&dir)).expect("write unbound.conf");
        if crate::support::find_tool("unbound-checkconf").is_some() {
            let c = conf.display().to_string();
            let out = ns.exec("unbound-checkconf", &[&c]);
            assert!(
                out.success,
                "unbound rejects {c}: {}{}",
                out.stdout, out.stderr
            );
        }
        let mut cmd = ns.command("unbound");
        cmd.arg("-d").arg("-c").arg(&conf);
        let process = ns.topology().spawn(&format!("unbound-{name}"), cmd);
        let u = Unbound {
            ns: ns.clone(),
            addr: config.addr(),
            conf,
            process,
        };
        wait_answers(&u.ns, u.addr, &u.process, "unbound");
        u
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.conf
    }

    pub fn stop(&self) {
        self.process.stop();
    }
}

/// A dnsmasq configuration (command-line options).
#[derive(Debug, Clone)]
pub struct DnsmasqConfig {
    pub listen: IpAddr,
    pub port: u16,
    /// `--host-record=NAME,ADDR[,ADDR]`.
    pub host_records: Vec<(String, Vec<IpAddr>)>,
    /// `--server=/ZONE/ADDR#PORT` (zone `None` for the default upstream).
    pub servers: Vec<(Option<String>, SocketAddr)>,
    pub cache_size: Option<u32>,
    /// `--dns-forward-max` (dnsmasq's default is 150).
    pub forward_max: Option<u32>,
    /// Extra options, verbatim.
    pub extra: Vec<String>,
}

impl Default for DnsmasqConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsmasqConfig {
    pub fn new() -> DnsmasqConfig {
        DnsmasqConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: free_port(),
            host_records: Vec::new(),
            servers: Vec::new(),
            cache_size: None,
            forward_max: None,
            extra: Vec::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.port)
    }

    /// The argument list (without the program name).
    pub fn args(&self, pid_file: &std::path::Path) -> Vec<String> {
        let mut a = vec![
            "--keep-in-foreground".to_string(),
            "--log-facility=-".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--bind-interfaces".to_string(),
            "--user=root".to_string(),
            format!("--listen-address={}", self.listen),
            format!("--port={}", self.port),
            format!("--pid-file={}", pid_file.display()),
        ];
        for (name, addrs) in &self.host_records {
            let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            a.push(format!("--host-record={name},{}", list.join(",")));
        }
        for (zone, up) in &self.servers {
            let zone = zone
                .as_ref()
                .map(|z| format!("/{}/", z.trim_end_matches('.')))
                .unwrap_or_default();
            a.push(format!("--server={zone}{}#{}", up.ip(), up.port()));
        }
        if let Some(n) = self.cache_size {
            a.push(format!("--cache-size={n}"));
        }
        if let Some(n) = self.forward_max {
            a.push(format!("--dns-forward-max={n}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A running dnsmasq.
#[derive(Debug)]
pub struct Dnsmasq {
    addr: SocketAddr,
    process: Process,
}

impl Dnsmasq {
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &DnsmasqConfig) -> Dnsmasq {
        require("dnsmasq");
        let dir = ns.topology().subdir(&format!("dnsmasq-{name}"));
        let mut cmd = ns.command("dnsmasq");
        cmd.args(config.args(&dir.join("dnsmasq.pid")));
        let process = ns.topology().spawn(&format!("dnsmasq-{name}"), cmd);
        wait_answers(ns, config.addr(), &process, "dnsmasq");
        Dnsmasq {
            addr: config.addr(),
            process,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn stop(&self) {
        self.process.stop();
    }
}

/// Waits until `server` answers any query (any rcode) or the process dies.
#[track_caller]
fn wait_answers(ns: &Netns, server: SocketAddr, process: &Process, what: &str) {
    wait_for(
        Duration::from_secs(10),
        &format!("{what} to answer on {server}"),
        || {
            if let Some(status) = process.try_exit_status() {
                panic!(
                    "{what} exited ({status}): {}{}",
                    process.stdout(),
                    process.stderr()
                );
            }
            let a = dig(
                ns,
                server,
                "id.server",
                "TXT",
                &["+time=1", "+tries=1", "-c", "CH"],
            );
            if a.rcode.is_empty() {
                Err(a.raw)
            } else {
                Ok(())
            }
        },
    );
}

/// What `dig` saw.
#[derive(Debug, Clone, Default)]
pub struct DigAnswer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, ...; empty when no answer came.
    pub rcode: String,
    /// Header flags (`qr`, `aa`, `rd`, `ra`, `tc`, ...).
    pub flags: Vec<String>,
    /// Answer section records.
    pub answers: Vec<DigRecord>,
    /// Authority section records (SOA of negative answers).
    pub authority: Vec<DigRecord>,
    /// Additional section records (addresses of SRV targets, ...; not the OPT pseudo-record,
    /// which dig prints as a comment).
    pub additional: Vec<DigRecord>,
    /// Full dig output, for failure messages.
    pub raw: String,
}

impl DigAnswer {
    /// The rdata of every answer of type `rtype`, e.g. the addresses of `A` records, sorted:
    /// the order of records in an RRset carries no meaning (RFC 2181 section 5), so tests
    /// compare them as sets.
    pub fn rdata(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.rdata.clone())
            .collect();
        v.sort();
        v
    }

    /// The TTL of every answer record, in dig's order.
    pub fn ttls(&self) -> Vec<u32> {
        self.answers.iter().map(|r| r.ttl).collect()
    }

    /// Whether the authority section holds an SOA (which makes a negative answer cacheable,
    /// RFC 2308 section 3).
    pub fn has_soa_authority(&self) -> bool {
        self.authority.iter().any(|r| r.rtype == "SOA")
    }

    /// NODATA as RFC 2308 section 2.2 defines it: NOERROR, no answer, an SOA in authority.
    pub fn is_nodata(&self) -> bool {
        self.rcode == "NOERROR" && self.answers.is_empty() && self.has_soa_authority()
    }

    /// NXDOMAIN with the SOA that makes it cacheable (RFC 2308 section 2.1), and no answer.
    pub fn is_nxdomain(&self) -> bool {
        self.rcode == "NXDOMAIN" && self.answers.is_empty() && self.has_soa_authority()
    }
}

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigRecord {
    pub name: String,
    pub ttl: u32,
    pub class: String,
    pub rtype: String,
    pub rdata: String,
}

/// Runs `dig @SERVER -p PORT NAME TYPE EXTRA...` in `ns` (e.g. extra `+tcp`, `+time=1`,
/// `+subnet=198.51.100.0/24`) and parses its answer.
#[track_caller]
pub fn dig(ns: &Netns, server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> DigAnswer {
    let mut args = vec![name, qtype];
    args.extend_from_slice(extra);
    dig_args(ns, server, &args)
}

/// Runs `dig @SERVER -p PORT +nocookie ARGS...` in `ns` with free-form arguments (name, type
/// and options in any order, `-x ADDR`, `-b SOURCE`, ...) and parses its answer.
#[track_caller]
pub fn dig_args(ns: &Netns, server: SocketAddr, args: &[&str]) -> DigAnswer {
    require("dig");
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let mut all = vec![at.as_str(), "-p", &port, "+nocookie"];
    all.extend_from_slice(args);
    let out = ns.exec("dig", &all);
    parse_dig(&(out.stdout + &out.stderr))
}

/// Parses dig's default output.
pub fn parse_dig(text: &str) -> DigAnswer {
    let mut a = DigAnswer {
        raw: text.to_string(),
        ..DigAnswer::default()
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
            a.rcode = rest
                .split(',')
                .find_map(|f| f.trim().strip_prefix("status:"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            continue;
        }
        if let Some(rest) = line.strip_prefix(";; flags:") {
            a.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            continue;
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
            continue;
        }
        if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
            continue;
        }
        if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
            continue;
        }
        if line.starts_with(';') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        // A record line is `NAME TTL CLASS TYPE RDATA...`; anything else is not a record (and
        // an unreadable TTL must not turn into 0, which would pass any upper bound).
        let (true, Ok(ttl)) = (f.len() >= 5, f.get(1).unwrap_or(&"").parse::<u32>()) else {
            continue;
        };
        let rec = DigRecord {
            name: f[0].to_string(),
            ttl,
            class: f[2].to_string(),
            rtype: f[3].to_string(),
            rdata: f[4..].join(" "),
        };
        match section {
            "answer" => a.answers.push(rec),
            "authority" => a.authority.push(rec),
            "additional" => a.additional.push(rec),
            _ => {}
        }
    }
    a
}

/// How to run dnsperf.
#[derive(Debug, Clone)]
pub struct DnsperfOptions {
    /// `-l`: run this long.
    pub duration: Duration,
    /// `-Q`: offered rate cap (queries/s); `None` for as fast as it can.
    pub max_qps: Option<u32>,
    /// `-c`: simulated clients (source ports).
    pub clients: u32,
    /// `-T`: dnsperf threads.
    pub threads: u32,
    /// `-q`: outstanding queries.
    pub max_outstanding: Option<u32>,
    /// `-t`: per-query timeout.
    pub timeout: Option<Duration>,
    /// `-m tcp` instead of UDP.
    pub tcp: bool,
    /// `-v`: print every answer's latency, for percentiles (costs about a third of dnsperf's
    /// throughput at saturation — docs/testing.md; fine at a fixed `max_qps`).
    pub latencies: bool,
}

impl Default for DnsperfOptions {
    fn default() -> Self {
        DnsperfOptions {
            duration: Duration::from_secs(5),
            max_qps: None,
            clients: 1,
            threads: 1,
            max_outstanding: None,
            timeout: None,
            tcp: false,
            latencies: false,
        }
    }
}

/// dnsperf's summary, plus the per-query latencies when asked for.
#[derive(Debug, Clone, Default)]
pub struct DnsperfReport {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub avg_latency: Duration,
    pub max_latency: Duration,
    /// Response codes and their counts.
    pub rcodes: std::collections::BTreeMap<String, u64>,
    /// Every answered query's latency, sorted (only with `latencies`).
    pub latencies: Vec<Duration>,
    pub raw_summary: String,
}

impl DnsperfReport {
    /// The `p`-th percentile (0..=100) of the recorded latencies.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies
            .get(rank.min(self.latencies.len() - 1))
            .copied()
    }
}

/// Writes a dnsperf query file (`NAME TYPE` per line).
pub fn write_queries(path: &std::path::Path, queries: &[(&str, &str)]) {
    let mut text = String::new();
    for (name, qtype) in queries {
        let _ = writeln!(text, "{name} {qtype}");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs dnsperf in `ns` against `server` with the queries in `queries` and parses its report.
#[track_caller]
pub fn dnsperf(
    ns: &Netns,
    server: SocketAddr,
    queries: &std::path::Path,
    opts: &DnsperfOptions,
) -> DnsperfReport {
    require("dnsperf");
    let mut args: Vec<String> = vec![
        "-s".into(),
        server.ip().to_string(),
        "-p".into(),
        server.port().to_string(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        format!("{}", opts.duration.as_secs_f64()),
        "-c".into(),
        opts.clients.to_string(),
        "-T".into(),
        opts.threads.to_string(),
    ];
    if let Some(q) = opts.max_qps {
        args.extend(["-Q".into(), q.to_string()]);
    }
    if let Some(q) = opts.max_outstanding {
        args.extend(["-q".into(), q.to_string()]);
    }
    if let Some(t) = opts.timeout {
        args.extend(["-t".into(), format!("{}", t.as_secs_f64())]);
    }
    if opts.tcp {
        args.extend(["-m".into(), "tcp".into()]);
    }
    if opts.latencies {
        args.push("-v".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.exec("dnsperf", &args);
    assert!(out.success, "dnsperf failed: {}{}", out.stderr, out.stdout);
    parse_dnsperf(&out.stdout)
}

/// Parses dnsperf's output (summary, and `> RCODE name type latency` lines from `-v`).
pub fn parse_dnsperf(text: &str) -> DnsperfReport {
    let mut r = DnsperfReport::default();
    let first_num = |s: &str| -> f64 {
        s.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    let mut summary = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("> ") {
            if let Some(lat) = rest
                .split_whitespace()
                .last()
                .and_then(|l| l.parse::<f64>().ok())
            {
                r.latencies.push(Duration::from_secs_f64(lat));
            }
            continue;
        }
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('[') {
            summary.push_str(line);
            summary.push('\n');
        }
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Queries sent" => r.sent = first_num(v) as u64,
            "Queries completed" => r.completed = first_num(v) as u64,
            "Queries lost" => r.lost = first_num(v) as u64,
            "Queries per second" => r.qps = first_num(v),
            "Average Latency (s)" => {
                r.avg_latency = Duration::from_secs_f64(first_num(v));
                if let Some(max) = v.split("max ").nth(1) {
                    r.max_latency = Duration::from_secs_f64(
                        max.trim_end_matches(')').trim().parse().unwrap_or(0.0),
                    );
                }
            }
            "Response codes" => {
                for part in v.split(',') {
                    let f: Vec<&str> = part.split_whitespace().collect();
                    if f.len() >= 2 {
                        r.rcodes.insert(f[0].to_string(), f[1].parse().unwrap_or(0));
                    }
                }
            }
            _ => {}
        }
    }
    r.latencies.sort();
    r.raw_summary = summary;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dig_output() {
        let t = "; <<>> DiG 9.18 <<>> @127.0.0.1 www.example.test A
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;www.example.test.\t\tIN\tA

;; ANSWER SECTION:
www.example.test.\t300\tIN\tA\t203.0.113.80
www.example.test.\t300\tIN\tA\t203.0.113.81

;; Query time: 0 msec
";
        let a = parse_dig(t);
        assert_eq!(a.rcode, "NOERROR");
        assert_eq!(a.flags, vec!["qr", "aa", "rd", "ra"]);
        assert_eq!(a.rdata("A"), vec!["203.0.113.80", "203.0.113.81"]);
        assert_eq!(a.answers[0].ttl, 300);
    }

    #[test]
    fn parses_negative_answers_and_the_additional_section() {
        let t = ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 2
;; flags: qr aa rd; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 1

;; AUTHORITY SECTION:
example.test.\t10\tIN\tSOA\tns.example.test. h.example.test. 1 3600 600 86400 10

;; ADDITIONAL SECTION:
ns.example.test.\t60\tIN\tA\t192.0.2.53
";
        let a = parse_dig(t);
        assert!(a.is_nxdomain() && !a.is_nodata(), "{a:?}");
        assert_eq!(a.authority[0].ttl, 10);
        assert_eq!(a.additional[0].rdata, "192.0.2.53");
        assert!(a.ttls().is_empty());
        // A line whose TTL is not a number is not a record (never a TTL of 0).
        let b = parse_dig(";; ANSWER SECTION:\nx.example.test. 1h IN A 192.0.2.1\n");
        assert!(b.answers.is_empty(), "{b:?}");
    }

    #[test]
    fn free_port_on_is_free_on_every_address() {
        let lo3 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let port = free_port_on(&[IpAddr::V4(Ipv4Addr::LOCALHOST), lo3]);
        assert!(TcpListener::bind((lo3, port)).is_ok());
        assert!(UdpSocket::bind((lo3, port)).is_ok());
    }

    #[test]
    fn parses_dnsperf_summary_and_latencies() {
        let t = "[Status] Testing complete (time limit)
> NOERROR www.example.test A 0.000205
> NXDOMAIN nope.example.test A 0.000105

Statistics:

  Queries sent:         1000
  Queries completed:    998 (99.80%)
  Queries lost:         2 (0.20%)

  Response codes:       NOERROR 500 (50.00%), NXDOMAIN 498 (49.80%)
  Run time (s):         1.000197
  Queries per second:   999.803039

  Average Latency (s):  0.000101 (min 0.000029, max 0.004069)
";
        let r = parse_dnsperf(t);
        assert_eq!((r.sent, r.completed, r.lost), (1000, 998, 2));
        assert!((r.qps - 999.803039).abs() < 1e-6);
        assert_eq!(r.avg_latency, Duration::from_micros(101));
        assert_eq!(r.max_latency, Duration::from_micros(4069));
        assert_eq!(r.rcodes["NXDOMAIN"], 498);
        assert_eq!(r.percentile(0.0), Some(Duration::from_micros(105)));
        assert_eq!(r.percentile(100.0), Some(Duration::from_micros(205)));
    }

    #[test]
    fn unbound_config_never_iterates_from_the_root() {
        let c = UnboundConfig::new().render(std::path::Path::new("/tmp/x"));
        assert!(c.contains("local-zone: \".\" refuse"), "{c}");
        assert!(c.contains("local-zone: \"test.\" nodefault"), "{c}");
    }
}
