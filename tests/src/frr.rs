//! FRR's bgpd as a BGP peer in a namespace: alone (`bgpd -Z`, no zebra) by default, or with
//! zebra (`FrrConfig::zebra`) to install the routes it learns in the namespace's kernel table,
//! ECMP with `maximum_paths` (a forwarding leaf). The daemons run as the `frr`
//! user (docs/testing.md: FRR daemons refuse to keep root) with per-instance config, pid and
//! vty socket directories owned by it; the RIB is read with `vtysh --vty_socket DIR ... json`.
//!
//! ```no_run
//! use leafbridge_tests::{Pair, frr::{Frr, FrrConfig, FrrNeighbor}};
//! let p = Pair::new("doc");
//! let mut cfg = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
//! cfg.neighbors.push(FrrNeighbor { passive: true, ..FrrNeighbor::new(Pair::a_v4(), 65001) });
//! let frr = Frr::start(&p.b, "leaf", &cfg);
//! frr.wait_established(Pair::a_v4(), std::time::Duration::from_secs(10));
//! let routes = frr.routes(); // with communities, large communities, MED, local-pref
//! # let _ = routes;
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::netns::{Netns, Process};
use crate::rib::{RibRoute, StaticRoute};
use crate::support::{require, wait_for};

/// One `neighbor` of `router bgp`.
#[derive(Debug, Clone)]
pub struct FrrNeighbor {
    pub addr: IpAddr,
    pub remote_as: u32,
    /// The peer's TCP port (default 179).
    pub port: Option<u16>,
    /// `neighbor ADDR interface IFNAME`: the interface of a link-local `addr` (needs zebra,
    /// which tells bgpd the interface's index).
    pub interface: Option<String>,
    /// Local address (`update-source`).
    pub update_source: Option<IpAddr>,
    pub passive: bool,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<String>,
    /// Hold time in seconds (keepalive = hold / 3).
    pub hold_time: Option<u16>,
    pub multihop: Option<u8>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Global IPv6 next hop to set on IPv6 routes sent to this neighbor.
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// Send the config's networks to this neighbor (otherwise an outbound deny-all route-map).
    pub export: bool,
    /// Extra `neighbor ...` lines inside `router bgp`, verbatim.
    pub extra: String,
}

impl FrrNeighbor {
    pub fn new(addr: IpAddr, remote_as: u32) -> FrrNeighbor {
        FrrNeighbor {
            addr,
            remote_as,
            port: None,
            interface: None,
            update_source: None,
            passive: false,
            password: None,
            hold_time: None,
            multihop: None,
            ipv4: true,
            ipv6: true,
            ipv6_next_hop: None,
            export: false,
            extra: String::new(),
        }
    }
}

/// A whole bgpd configuration.
#[derive(Debug, Clone)]
pub struct FrrConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    pub neighbors: Vec<FrrNeighbor>,
    /// `network` statements, each with a route-map setting its attributes.
    pub networks: Vec<StaticRoute>,
    /// Graceful restart (RFC 4724) with this restart time in seconds.
    pub graceful_restart: Option<u32>,
    /// Port bgpd listens on (`-p`), default 179.
    pub listen_port: Option<u16>,
    /// Run zebra beside bgpd, so the best routes go into the namespace's kernel table.
    pub zebra: bool,
    /// `maximum-paths N` (eBGP multipath, ECMP kernel routes with zebra).
    pub maximum_paths: Option<u16>,
    /// Extra lines inside `router bgp`, verbatim.
    pub extra: String,
}

impl FrrConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> FrrConfig {
        FrrConfig {
            router_id,
            local_as,
            neighbors: Vec::new(),
            networks: Vec::new(),
            graceful_restart: None,
            listen_port: None,
            zebra: false,
            maximum_paths: None,
            extra: String::new(),
        }
    }

    /// Adds `count` consecutive /32 networks from `first` (benchmark sender; docs/testing.md: 100k
    /// `network` lines load in ~0.9 s).
    pub fn add_hosts(&mut self, first: Ipv4Addr, count: u32) {
        self.networks.extend(
            crate::rib::consecutive_v4_hosts(first, count)
                .into_iter()
                .map(StaticRoute::new),
        );
    }

    /// The bgpd.conf text.
    pub fn render(&self) -> String {
        let c =
            String::from("frr defaults traditional\nhostname lb-frr\nlog stdout informational\n");
        let header = c;
        let mut c = String::new();
        let mut maps = String::new();
        c.push_str(&format!("router bgp {}\n", self.local_as));
        let _ = writeln!(c, " bgp router-id {}", self.router_id);
        // Tests hand out plain routes without policy and announce prefixes that are not in a
        // (nonexistent, no zebra) kernel table.
        c.push_str(" no bgp ebgp-requires-policy\n no bgp network import-check\n");
        c.push_str(" no bgp default ipv4-unicast\n");
        // docs/testing.md: otherwise the first UPDATEs wait ~1 s for update-group coalescing.
        c.push_str(" coalesce-time 0\n");
        if let Some(t) = self.graceful_restart {
            let _ = writeln!(
                c,
                " bgp graceful-restart\n bgp graceful-restart restart-time {t}"
            );
        }
        for n in &self.neighbors {
            let a = n.addr;
            let _ = writeln!(c, " neighbor {a} remote-as {}", n.remote_as);
            if let Some(i) = &n.interface {
                let _ = writeln!(c, " neighbor {a} interface {i}");
            }
            let _ = writeln!(c, " neighbor {a} timers connect 1");
            let _ = writeln!(c, " neighbor {a} advertisement-interval 0");
            if let Some(p) = n.port {
                let _ = writeln!(c, " neighbor {a} port {p}");
            }
            if let Some(s) = n.update_source {
                let _ = writeln!(c, " neighbor {a} update-source {s}");
            }
            if n.passive {
                let _ = writeln!(c, " neighbor {a} passive");
            }
            if let Some(pw) = &n.password {
                let _ = writeln!(c, " neighbor {a} password {pw}");
            }
            if let Some(h) = n.hold_time {
                let _ = writeln!(c, " neighbor {a} timers {} {h}", (h / 3).max(1));
            }
            if let Some(ttl) = n.multihop {
                let _ = writeln!(c, " neighbor {a} ebgp-multihop {ttl}");
            }
            c.push_str(&n.extra);
        }
        for (afi, v6) in [("ipv4", false), ("ipv6", true)] {
            let _ = writeln!(c, " address-family {afi} unicast");
            if let Some(n) = self.maximum_paths {
                let _ = writeln!(c, "  maximum-paths {n}");
            }
            for (i, r) in self.networks.iter().enumerate() {
                if r.prefix.contains(':') != v6 {
                    continue;
                }
                if r.has_attributes() {
                    let name = format!("lbnet{i}");
                    let _ = writeln!(c, "  network {} route-map {name}", r.prefix);
                    let _ = writeln!(maps, "route-map {name} permit 10");
                    if !r.communities.is_empty() {
                        let list: Vec<String> = r
                            .communities
                            .iter()
                            .map(|(a, v)| format!("{a}:{v}"))
                            .collect();
                        let _ = writeln!(maps, " set community {}", list.join(" "));
                    }
                    if !r.large_communities.is_empty() {
                        let list: Vec<String> = r
                            .large_communities
                            .iter()
                            .map(|(g, a, b)| format!("{g}:{a}:{b}"))
                            .collect();
                        let _ = writeln!(maps, " set large-community {}", list.join(" "));
                    }
                    if let Some(m) = r.med {
                        let _ = writeln!(maps, " set metric {m}");
                    }
                    if let Some(lp) = r.local_pref {
                        let _ = writeln!(maps, " set local-preference {lp}");
                    }
                } else {
                    let _ = writeln!(c, "  network {}", r.prefix);
                }
            }
            for (i, n) in self.neighbors.iter().enumerate() {
                if (!v6 && !n.ipv4) || (v6 && !n.ipv6) {
                    continue;
                }
                let a = n.addr;
                let _ = writeln!(c, "  neighbor {a} activate");
                if !n.export {
                    let _ = writeln!(c, "  neighbor {a} route-map lbdeny out");
                } else if let (true, Some(nh)) = (v6, n.ipv6_next_hop) {
                    let name = format!("lbv6nh{i}");
                    let _ = writeln!(c, "  neighbor {a} route-map {name} out");
                    let _ = writeln!(
                        maps,
                        "route-map {name} permit 10\n set ipv6 next-hop global {nh}"
                    );
                }
            }
            c.push_str(" exit-address-family\n");
        }
        c.push_str(&self.extra);
        c.push_str("exit\n");
        // Route-maps come before `router bgp` refers to them: a route-map that appears later
        // holds the first UPDATEs for the 5 s route-map delay timer.
        format!("{header}route-map lbdeny deny 10\n{maps}!\n{c}")
    }
}

/// See [`Frr::last_notification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastNotification {
    pub reason: String,
    pub code_subcode: String,
    pub shutdown_message: Option<String>,
}

/// A running bgpd (foreground; `-Z` unless zebra runs beside it) in a namespace.
#[derive(Debug)]
pub struct Frr {
    ns: Netns,
    name: String,
    dir: PathBuf,
    listen_port: Option<u16>,
    zebra: Option<Process>,
    process: Process,
}

impl Frr {
    /// Writes the config into a directory owned by `frr`, starts bgpd and waits until vtysh
    /// answers.
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &FrrConfig) -> Frr {
        let dir = ns.topology().subdir(&format!("frr-{name}"));
        std::fs::write(dir.join("bgpd.conf"), config.render()).expect("write bgpd.conf");
        chown_frr(&dir);
        chown_frr(&dir.join("bgpd.conf"));
        // The dry run costs as much as the real load (~0.9 s per 100k networks): skip it for
        // benchmark-sized configs.
        if config.networks.len() <= 1000 {
            check_config(&dir.join("bgpd.conf"));
        }
        let zebra = config.zebra.then(|| Self::spawn_zebra(ns, name, &dir));
        let process = Self::spawn(ns, name, &dir, config.listen_port, zebra.is_some());
        let frr = Frr {
            ns: ns.clone(),
            name: name.to_string(),
            dir,
            listen_port: config.listen_port,
            zebra,
            process,
        };
        frr.wait_ready();
        frr
    }

    /// zebra with its own config, pid file, vty socket and zserv socket in `dir`; returns once
    /// the zserv socket exists (bgpd connects to it at start).
    #[track_caller]
    fn spawn_zebra(ns: &Netns, name: &str, dir: &Path) -> Process {
        let zebra = require("zebra");
        let conf = dir.join("zebra.conf");
        std::fs::write(&conf, "hostname lb-zebra\nlog stdout informational\n")
            .expect("write zebra.conf");
        chown_frr(&conf);
        let _ = std::fs::remove_file(dir.join("zserv.api"));
        let mut cmd = ns.command(zebra);
        cmd.args(["-u", "frr", "-g", "frr", "--log", "stdout"])
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("zebra.pid"))
            .arg("--vty_socket")
            .arg(dir)
            .arg("-z")
            .arg(dir.join("zserv.api"));
        let process = ns.topology().spawn(&format!("zebra-{name}"), cmd);
        wait_for(
            Duration::from_secs(10),
            &format!("zebra {name} to open its zserv socket"),
            || {
                if let Some(s) = process.try_exit_status() {
                    panic!(
                        "zebra {name} exited ({s}): {}{}",
                        process.stdout(),
                        process.stderr()
                    );
                }
                if dir.join("zserv.api").exists() {
                    Ok(())
                } else {
                    Err(process.stdout())
                }
            },
        );
        process
    }

    fn spawn(ns: &Netns, name: &str, dir: &Path, port: Option<u16>, zebra: bool) -> Process {
        let bgpd = require("bgpd");
        require("vtysh");
        let mut cmd = ns.command(bgpd);
        if zebra {
            cmd.arg("-z").arg(dir.join("zserv.api"));
        } else {
            cmd.arg("-Z");
        }
        cmd.args(["-u", "frr", "-g", "frr", "--log", "stdout"])
            .arg("-f")
            .arg(dir.join("bgpd.conf"))
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(dir);
        if let Some(p) = port {
            cmd.arg("-p").arg(p.to_string());
        }
        ns.topology().spawn(&format!("frr-{name}"), cmd)
    }

    #[track_caller]
    fn wait_ready(&self) {
        wait_for(
            Duration::from_secs(10),
            &format!("bgpd {} to answer vtysh", self.name),
            || {
                if !self.process.is_running() {
                    panic!(
                        "bgpd {} exited: {}{}",
                        self.name,
                        self.process.stdout(),
                        self.process.stderr()
                    );
                }
                let out = self.vtysh_raw(&["show bgp summary json"]);
                if out.success && out.stdout.trim_start().starts_with('{') {
                    Ok(())
                } else {
                    Err(out.stdout + &out.stderr)
                }
            },
        );
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The vty socket directory (for `vtysh --vty_socket`).
    pub fn vty_dir(&self) -> &Path {
        &self.dir
    }

    fn vtysh_raw(&self, commands: &[&str]) -> crate::ExecOutput {
        let dir = self.dir.display().to_string();
        let mut args = vec!["--vty_socket", &dir];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        self.ns.topology().host().exec("vtysh", &args)
    }

    /// Runs vtysh commands and returns their output.
    #[track_caller]
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let out = self.vtysh_raw(commands);
        assert!(
            out.success,
            "vtysh {commands:?} failed: {}{}",
            out.stderr, out.stdout
        );
        out.stdout
    }

    fn json(&self, command: &str) -> Value {
        let text = self.vtysh(&[command]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("vtysh `{command}`: {e}: {text}"))
    }

    /// The session state with `neighbor` (`Idle`, `Connect`, `Active`, `OpenSent`, …,
    /// `Established`).
    pub fn bgp_state(&self, neighbor: IpAddr) -> String {
        let v = self.json("show bgp neighbors json");
        v[neighbor.to_string()]["bgpState"]
            .as_str()
            .unwrap_or("Unknown")
            .to_string()
    }

    /// Everything `show bgp neighbors json` says about `neighbor` (counters, timers, last
    /// error...), for checks this runner has no method for.
    pub fn neighbor_json(&self, neighbor: IpAddr) -> Value {
        self.json("show bgp neighbors json")[neighbor.to_string()].clone()
    }

    /// The last NOTIFICATION exchanged with `neighbor`: FRR's reason text (e.g.
    /// `Cease/Administrative Shutdown`), the error code and subcode as 4 hex digits (`0602`),
    /// and the RFC 8203 shutdown communication, if any.
    pub fn last_notification(&self, neighbor: IpAddr) -> Option<LastNotification> {
        let n = self.neighbor_json(neighbor);
        Some(LastNotification {
            reason: n["lastNotificationReason"].as_str()?.to_string(),
            code_subcode: n["lastErrorCodeSubcode"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            shutdown_message: n["lastShutdownDescription"].as_str().map(str::to_string),
        })
    }

    #[track_caller]
    pub fn wait_established(&self, neighbor: IpAddr, timeout: Duration) {
        wait_for(
            timeout,
            &format!(
                "bgpd {} session with {neighbor} to be Established",
                self.name
            ),
            || {
                let s = self.bgp_state(neighbor);
                if s == "Established" { Ok(()) } else { Err(s) }
            },
        )
    }

    /// Prefixes received from `neighbor` in `afi` (`"ipv4"` or `"ipv6"`), from `show bgp
    /// summary json`: cheap with 100k routes.
    pub fn prefixes_received(&self, neighbor: IpAddr, afi: &str) -> u64 {
        let v = self.json("show bgp summary json");
        let key = if afi == "ipv6" {
            "ipv6Unicast"
        } else {
            "ipv4Unicast"
        };
        v[key]["peers"][neighbor.to_string()]["pfxRcd"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The RIB of both address families without communities (`show bgp ipvX unicast json`):
    /// prefix, next hop, AS path, MED, local-pref.
    pub fn route_summaries(&self) -> Vec<RibRoute> {
        ["ipv4", "ipv6"]
            .into_iter()
            .flat_map(|afi| parse_table_json(&self.json(&format!("show bgp {afi} unicast json"))))
            .collect()
    }

    /// The full RIB with communities and large communities, read prefix by prefix (`show bgp
    /// ipvX unicast PREFIX json`, batched into one vtysh call). For a few hundred routes.
    pub fn routes(&self) -> Vec<RibRoute> {
        let prefixes: Vec<String> = self
            .route_summaries()
            .into_iter()
            .map(|r| r.prefix)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for chunk in prefixes.chunks(200) {
            let cmds: Vec<String> = chunk
                .iter()
                .map(|p| {
                    format!(
                        "show bgp {} unicast {p} json",
                        if p.contains(':') { "ipv6" } else { "ipv4" }
                    )
                })
                .collect();
            let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
            let text = self.vtysh(&cmds);
            for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
                let v = v.unwrap_or_else(|e| panic!("vtysh prefix json: {e}: {text}"));
                out.extend(parse_prefix_json(&v));
            }
        }
        out
    }

    /// SIGTERM (with graceful restart negotiated, bgpd closes TCP without a NOTIFICATION and
    /// the peer keeps the routes as stale — docs/testing.md).
    pub fn stop(&self) {
        self.process.stop();
    }

    /// Stops bgpd and starts it again with the same config.
    #[track_caller]
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(
            &self.ns,
            &self.name,
            &self.dir,
            self.listen_port,
            self.zebra.is_some(),
        );
        self.wait_ready();
    }
}

/// `bgpd -C` (dry run) exits 0 even when lines are rejected, so its log is checked too.
#[track_caller]
fn check_config(conf: &Path) {
    let bgpd = require("bgpd").display().to_string();
    let c = conf.display().to_string();
    let out = crate::netns::host_exec(&bgpd, &["-C", "-Z", "-u", "frr", "-g", "frr", "-f", &c]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.success
            && !text.contains("No such command")
            && !text.contains("Unknown command")
            && !text.contains("% "),
        "bgpd rejects {c}: {text}"
    );
}

fn chown_frr(p: &Path) {
    let (uid, gid) = frr_ids();
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown frr {}: {e}", p.display()));
}

/// The `frr` user's uid and gid from /etc/passwd; panics naming the package when it is absent.
#[track_caller]
fn frr_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"frr") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .unwrap_or_else(|| {
            panic!("prerequisite missing: user `frr` (install the Debian package `frr`)")
        })
}

fn as_path_of(s: &str) -> Vec<u32> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn next_hop_of(path: &Value) -> Option<IpAddr> {
    let hops = path["nexthops"].as_array()?;
    // Prefer the global address over a link-local one.
    hops.iter()
        .find(|h| h["scope"].as_str() != Some("link-local"))
        .or_else(|| hops.first())
        .and_then(|h| h["ip"].as_str()?.parse().ok())
}

fn num(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Parses `show bgp ipvX unicast json` (`routes: {prefix: [path, ...]}`).
pub fn parse_table_json(v: &Value) -> Vec<RibRoute> {
    let mut out = Vec::new();
    let Some(routes) = v["routes"].as_object() else {
        return out;
    };
    for (prefix, paths) in routes {
        for p in paths.as_array().into_iter().flatten() {
            let mut r = RibRoute::new(prefix.clone());
            r.next_hop = next_hop_of(p);
            r.as_path = as_path_of(p["path"].as_str().unwrap_or(""));
            r.med = num(&p["metric"]);
            r.local_pref = num(&p["locPrf"]);
            out.push(r.normalise());
        }
    }
    out
}

/// Parses `show bgp ipvX unicast PREFIX json` (`prefix`, `paths: [...]` with `community` and
/// `largeCommunity` lists).
pub fn parse_prefix_json(v: &Value) -> Vec<RibRoute> {
    let Some(prefix) = v["prefix"].as_str() else {
        return Vec::new();
    };
    v["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut r = RibRoute::new(prefix);
            r.next_hop = next_hop_of(p);
            r.as_path = as_path_of(p["aspath"]["string"].as_str().unwrap_or(""));
            r.med = num(&p["metric"]);
            r.local_pref = num(&p["locPrf"]);
            r.communities = p["community"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let (a, b) = c.as_str()?.split_once(':')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            r.large_communities = p["largeCommunity"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let mut f = c.as_str()?.split(':').map(|n| n.parse().ok());
                    Some((f.next()??, f.next()??, f.next()??))
                })
                .collect();
            r.normalise()
        })
        .collect()
}

/// One `peer` of FRR bfdd's `bfd` block. bfdd keeps one session per peer address: two peers
/// with the same `addr` and different `local` become one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfddPeer {
    pub addr: IpAddr,
    /// Without zebra bfdd knows no interfaces: single-hop peers need their local address
    /// (`local-address`), not `interface`, or it never sends.
    pub local: IpAddr,
    pub multihop: bool,
    pub passive: bool,
}

/// FRR `bfdd`'s configuration: one profile (`lbprof`) used by every peer.
#[derive(Debug, Clone)]
pub struct BfddConfig {
    pub receive_interval_ms: u32,
    pub transmit_interval_ms: u32,
    pub detect_multiplier: u8,
    pub peers: Vec<BfddPeer>,
}

impl BfddConfig {
    pub fn new(receive_interval_ms: u32, transmit_interval_ms: u32, detect_multiplier: u8) -> Self {
        BfddConfig {
            receive_interval_ms,
            transmit_interval_ms,
            detect_multiplier,
            peers: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut c = String::from(
            "frr defaults traditional\nhostname lb-bfdd\nlog stdout informational\n!\nbfd\n",
        );
        let _ = writeln!(
            c,
            " profile lbprof\n  receive-interval {}\n  transmit-interval {}\n  detect-multiplier {}\n !",
            self.receive_interval_ms, self.transmit_interval_ms, self.detect_multiplier
        );
        for p in &self.peers {
            let mh = if p.multihop { " multihop" } else { "" };
            let _ = writeln!(c, " peer {}{mh} local-address {}", p.addr, p.local);
            c.push_str("  profile lbprof\n");
            if p.passive {
                c.push_str("  passive-mode\n");
            }
            c.push_str(" !\n");
        }
        c.push_str("!\n");
        c
    }
}

/// A running FRR `bfdd` in a namespace, as the `frr` user, with its own vty socket directory.
/// Its sessions come from the configured peers (bgpd needs zebra to register its own).
#[derive(Debug)]
pub struct Bfdd {
    ns: Netns,
    dir: PathBuf,
    process: Process,
}

impl Bfdd {
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &BfddConfig) -> Bfdd {
        let bfdd = require("bfdd");
        require("vtysh");
        let dir = ns.topology().subdir(&format!("bfdd-{name}"));
        std::fs::write(dir.join("bfdd.conf"), config.render()).expect("write bfdd.conf");
        chown_frr(&dir);
        chown_frr(&dir.join("bfdd.conf"));
        let mut cmd = ns.command(bfdd);
        cmd.args(["-u", "frr", "-g", "frr", "--log", "stdout"])
            .arg("-f")
            .arg(dir.join("bfdd.conf"))
            .arg("-i")
            .arg(dir.join("bfdd.pid"))
            .arg("--vty_socket")
            .arg(&dir)
            .arg("--bfdctl")
            .arg(dir.join("bfdd.sock"));
        let process = ns.topology().spawn(&format!("bfdd-{name}"), cmd);
        let b = Bfdd {
            ns: ns.clone(),
            dir,
            process,
        };
        wait_for(Duration::from_secs(10), "bfdd to answer vtysh", || {
            if !b.process.is_running() {
                panic!("bfdd exited: {}{}", b.process.stdout(), b.process.stderr());
            }
            let out = b.vtysh_raw(&["show bfd peers json"]);
            if out.success && out.stdout.trim_start().starts_with('[') {
                Ok(())
            } else {
                Err(out.stdout + &out.stderr)
            }
        });
        b
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    fn vtysh_raw(&self, commands: &[&str]) -> crate::ExecOutput {
        let dir = self.dir.display().to_string();
        let mut args = vec!["--vty_socket", &dir];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        let _ = &self.ns;
        self.ns.topology().host().exec("vtysh", &args)
    }

    /// Runs vtysh commands (e.g. `configure terminal`, `bfd`, `profile lbprof`, ...).
    #[track_caller]
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let out = self.vtysh_raw(commands);
        assert!(
            out.success,
            "vtysh {commands:?}: {}{}",
            out.stderr, out.stdout
        );
        out.stdout
    }

    /// `show bfd peers json`: one object per session (`peer`, `status`, `uptime`,
    /// `receive-interval`, `transmit-interval`, `remote-receive-interval`, ...).
    pub fn peers(&self) -> Vec<Value> {
        let text = self.vtysh(&["show bfd peers json"]);
        match serde_json::from_str(&text) {
            Ok(Value::Array(v)) => v,
            _ => panic!("show bfd peers json: {text}"),
        }
    }

    /// The session with `addr`, if bfdd has one.
    pub fn peer(&self, addr: IpAddr) -> Option<Value> {
        let a = addr.to_string();
        self.peers()
            .into_iter()
            .find(|p| p["peer"].as_str() == Some(a.as_str()))
    }

    /// Changes the profile's timers at run time (vtysh, as an operator would).
    #[track_caller]
    pub fn set_timers(&self, receive_interval_ms: u32, transmit_interval_ms: u32) {
        let rx = format!("receive-interval {receive_interval_ms}");
        let tx = format!("transmit-interval {transmit_interval_ms}");
        self.vtysh(&["configure terminal", "bfd", "profile lbprof", &rx, &tx]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frr_prefix_json_with_communities() {
        let v: Value = serde_json::from_str(r#"{"prefix":"203.0.113.1/32","paths":[{"aspath":{"string":"65001 65003"},"metric":50,"locPrf":120,
            "community":{"list":["65001:200","65001:100"]},"largeCommunity":{"list":["65001:1:2"]},
            "nexthops":[{"ip":"192.0.2.1","afi":"ipv4"}]}]}"#).unwrap();
        let r = &parse_prefix_json(&v)[0];
        assert_eq!(r.prefix, "203.0.113.1/32");
        assert_eq!(r.as_path, vec![65001, 65003]);
        assert_eq!((r.med, r.local_pref), (Some(50), Some(120)));
        assert_eq!(r.communities, vec![(65001, 100), (65001, 200)]);
        assert_eq!(r.large_communities, vec![(65001, 1, 2)]);
        assert_eq!(r.next_hop, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn renders_networks_with_route_maps() {
        let mut c = FrrConfig::new("192.0.2.2".parse().unwrap(), 65002);
        c.networks.push(StaticRoute {
            communities: vec![(1, 2)],
            ..StaticRoute::new("203.0.113.1/32")
        });
        c.neighbors
            .push(FrrNeighbor::new("192.0.2.1".parse().unwrap(), 65001));
        let t = c.render();
        assert!(t.contains("network 203.0.113.1/32 route-map lbnet0"), "{t}");
        assert!(t.contains("set community 1:2"), "{t}");
        assert!(t.contains("neighbor 192.0.2.1 route-map lbdeny out"), "{t}");
    }
}
