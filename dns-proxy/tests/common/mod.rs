//! Local test helpers: free ports, a guard that ends started processes by PID, the built
//! binary, and a `dig` wrapper. (To be replaced by `leafbridge-tests` runners once they land.)
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails (never skips) when a prerequisite program is missing.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "prerequisite missing: `{program}` is not installed (apt-get install it)"
    );
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.3", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port");
}

/// Kills its process by PID when dropped, even on panic.
pub struct ProcGuard {
    pub child: Child,
    pub name: String,
}

impl ProcGuard {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.into(),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_tcp(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on {addr}");
}

pub fn dns_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_leafbridge-dns"))
}

/// A running leafbridge-dns with its own config and state directory.
pub struct Dns {
    pub guard: ProcGuard,
    pub port: u16,
    pub ops_port: u16,
    pub dir: tempfile::TempDir,
}

impl Dns {
    /// `config` may use `{port}` and `{ops}` placeholders.
    pub fn start(config: &str, manifests: &[(&str, &str)]) -> Self {
        require("dig");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        for (name, text) in manifests {
            std::fs::write(state.join(name), text).unwrap();
        }
        let port = free_port();
        let ops_port = free_port();
        let config = config
            .replace("{port}", &port.to_string())
            .replace("{ops}", &ops_port.to_string());
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        let guard = ProcGuard::spawn(
            "leafbridge-dns",
            Command::new(dns_binary())
                .arg("--config")
                .arg(&cfg)
                .arg("--state-dir")
                .arg(&state)
                .arg("--poll-ms")
                .arg("100")
                .env("RUST_LOG", "info"),
            &dir.path().join("dns.log"),
        );
        wait_tcp(([127, 0, 0, 1], port).into(), "leafbridge-dns");
        Self {
            guard,
            port,
            ops_port,
            dir,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dns.log")).unwrap_or_default()
    }

    pub fn dig(&self, args: &[&str]) -> Reply {
        dig(self.port, args)
    }

    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.ops_port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

/// A parsed `dig` reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub additional: Vec<Vec<String>>,
    pub raw: String,
}

impl Reply {
    /// RDATA of answer records of `rtype`, joined by spaces.
    pub fn rdata(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.get(3).map(String::as_str) == Some(rtype))
            .map(|r| r[4..].join(" "))
            .collect();
        v.sort();
        v
    }
    pub fn ttls(&self) -> Vec<u32> {
        self.answer.iter().map(|r| r[1].parse().unwrap()).collect()
    }
    pub fn has_soa_authority(&self) -> bool {
        self.authority
            .iter()
            .any(|r| r.get(3).map(String::as_str) == Some("SOA"))
    }
    pub fn is_nodata(&self) -> bool {
        self.status == "NOERROR" && self.answer.is_empty() && self.has_soa_authority()
    }
    pub fn is_nxdomain(&self) -> bool {
        self.status == "NXDOMAIN" && self.answer.is_empty() && self.has_soa_authority()
    }
}

pub fn dig(port: u16, args: &[&str]) -> Reply {
    let out = Command::new("dig")
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(["+tries=1", "+time=3", "+nocookie"])
        .args(args)
        .output()
        .expect("running dig");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    parse_dig(&raw)
}

pub fn parse_dig(raw: &str) -> Reply {
    let mut status = String::new();
    let mut flags = Vec::new();
    let mut section = "";
    let (mut answer, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
    for line in raw.lines() {
        if let Some(i) = line.find("status: ") {
            status = line[i + 8..].split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "an";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "au";
            continue;
        }
        if line.starts_with(";; ADDITIONAL SECTION") {
            section = "ad";
            continue;
        }
        if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = "";
            }
            continue;
        }
        let fields: Vec<String> = line.split_whitespace().map(String::from).collect();
        match section {
            "an" => answer.push(fields),
            "au" => authority.push(fields),
            "ad" => additional.push(fields),
            _ => {}
        }
    }
    Reply {
        status,
        flags,
        answer,
        authority,
        additional,
        raw: raw.to_string(),
    }
}

/// A real unbound on 127.0.0.1 serving `local_data` lines for `example.test.` (a static
/// local zone with an SOA, so missing names are NXDOMAIN with SOA).
pub struct Unbound {
    pub guard: ProcGuard,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Unbound {
    pub fn start(local_data: &[String]) -> Self {
        require("unbound");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  local-zone: \"test.\" nodefault\n  local-zone: \"example.test.\" static\n  local-data: \"example.test. 60 IN SOA ns.example.test. h.example.test. 1 3600 600 86400 10\"\n",
            d = dir.path().display()
        );
        for l in local_data {
            conf.push_str(&format!("  local-data: \"{l}\"\n"));
        }
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let guard = ProcGuard::spawn(
            "unbound",
            Command::new("unbound").arg("-d").arg("-c").arg(&path),
            &dir.path().join("unbound.log"),
        );
        wait_tcp(([127, 0, 0, 1], port).into(), "unbound");
        Self { guard, port, dir }
    }
}
