//! The leafbridge-dns binary under test, on the host's loopback, built on the shared
//! `leafbridge-tests` runners: its process lives in a [`Topology::loopback`], whose guard ends
//! it by PID (even on panic); the process is started by the shared `programs::DnsProxy`
//! runner, and `dig` and the unbound upstream are the shared ones.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use leafbridge_tests::dns::{DigAnswer, Unbound, UnboundConfig, dig_args, free_port, free_port_on};
use leafbridge_tests::programs::DnsProxy;
use leafbridge_tests::{Netns, Process, Topology, require, wait_until};

/// `dig` as these tests run it: one try, 3 s timeout, the rest of the arguments free-form.
pub fn dig(ns: &Netns, server: SocketAddr, args: &[&str]) -> DigAnswer {
    let mut all = vec!["+tries=1", "+time=3"];
    all.extend_from_slice(args);
    dig_args(ns, server, &all)
}

/// A running leafbridge-dns with its own config and state directory.
pub struct Dns {
    pub host: Netns,
    pub process: Process,
    pub port: u16,
    pub ops_port: u16,
    dir: PathBuf,
}

impl Dns {
    /// `config` may use `{port}` and `{ops}` placeholders. `{port}` is free on 127.0.0.1 and
    /// 127.0.0.3 (the address a view selects by local address listens on).
    pub fn start(config: &str, manifests: &[(&str, &str)]) -> Self {
        require("dig");
        let host = Topology::loopback("dns").host();
        let dir = host.topology().subdir("dns");
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        for (name, text) in manifests {
            std::fs::write(state.join(name), text).unwrap();
        }
        let port = free_port_on(&[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        ]);
        let ops_port = free_port();
        let config = config
            .replace("{port}", &port.to_string())
            .replace("{ops}", &ops_port.to_string());
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        // Started as the lab and every other test start it.
        let DnsProxy { process, .. } = DnsProxy::start(
            &host,
            Path::new(env!("CARGO_BIN_EXE_leafbridge-dns")),
            &cfg,
            &state,
            SocketAddr::from(([127, 0, 0, 1], ops_port)),
            &["--poll-ms", "100"],
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(
            Duration::from_secs(20),
            &format!("leafbridge-dns to listen on {addr}"),
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
        Self {
            host,
            process,
            port,
            ops_port,
            dir,
        }
    }

    /// 127.0.0.1 and the DNS port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// What the process logged (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.stdout() + &self.process.stderr()
    }

    pub fn dig(&self, args: &[&str]) -> DigAnswer {
        dig(&self.host, self.addr(), args)
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

/// A real unbound on 127.0.0.1 serving `local_data` lines for `example.test.` (a static
/// local zone with an SOA, so missing names are NXDOMAIN with SOA).
pub fn upstream(local_data: &[String]) -> Unbound {
    let host = Topology::loopback("ups").host();
    let mut cfg = UnboundConfig::new();
    cfg.local_zone("example.test.", "static");
    cfg.local_data("example.test. 60 IN SOA ns.example.test. h.example.test. 1 3600 600 86400 10");
    for l in local_data {
        cfg.local_data(l);
    }
    Unbound::start(&host, "up", &cfg)
}
