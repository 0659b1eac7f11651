//! GoBGP (`gobgpd`) as a BGP peer in a namespace. Its gRPC API listens on 127.0.0.1:PORT
//! *inside* the namespace, so every `gobgp` CLI call runs there too (`ip netns exec NS gobgp -p
//! PORT -j ...`). Routes to originate are added through the API (`global rib add`), since gobgpd
//! has no static routes in its config file.
//!
//! ```no_run
//! use leafbridge_tests::{Pair, gobgp::{Gobgp, GobgpConfig, GobgpNeighbor}};
//! let p = Pair::new("doc");
//! let mut cfg = GobgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
//! cfg.neighbors.push(GobgpNeighbor { passive: true, ..GobgpNeighbor::new(Pair::a_v4(), 65001) });
//! let gobgp = Gobgp::start(&p.b, "leaf", &cfg);
//! gobgp.wait_established(Pair::a_v4(), std::time::Duration::from_secs(10));
//! let routes = gobgp.routes();
//! # let _ = routes;
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::netns::{Netns, Process};
use crate::rib::{RibRoute, StaticRoute};
use crate::support::{require, wait_for};

/// One `[[neighbors]]` entry.
#[derive(Debug, Clone)]
pub struct GobgpNeighbor {
    pub addr: IpAddr,
    pub peer_as: u32,
    pub remote_port: Option<u16>,
    pub local_address: Option<IpAddr>,
    pub passive: bool,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<String>,
    pub hold_time: Option<u16>,
    pub multihop: Option<u8>,
    /// Graceful restart (RFC 4724) with this restart time.
    pub graceful_restart: Option<u32>,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl GobgpNeighbor {
    pub fn new(addr: IpAddr, peer_as: u32) -> GobgpNeighbor {
        GobgpNeighbor {
            addr,
            peer_as,
            remote_port: None,
            local_address: None,
            passive: false,
            password: None,
            hold_time: None,
            multihop: None,
            graceful_restart: None,
            ipv4: true,
            ipv6: true,
        }
    }
}

/// A gobgpd TOML configuration.
#[derive(Debug, Clone)]
pub struct GobgpConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// BGP listen port (179 by default; -1 disables listening).
    pub listen_port: Option<i32>,
    /// The gRPC API port inside the namespace (default 50051; one gobgpd per namespace needs no
    /// other).
    pub api_port: u16,
    pub neighbors: Vec<GobgpNeighbor>,
    /// Routes added through the API once it answers, with `next_hop` as next hop.
    pub routes: Vec<(StaticRoute, IpAddr)>,
}

impl GobgpConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> GobgpConfig {
        GobgpConfig {
            router_id,
            local_as,
            listen_port: None,
            api_port: 50051,
            neighbors: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "[global.config]\n  as = {}\n  router-id = \"{}\"",
            self.local_as, self.router_id
        );
        if let Some(p) = self.listen_port {
            let _ = writeln!(c, "  port = {p}");
        }
        for n in &self.neighbors {
            let _ = writeln!(
                c,
                "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
                n.addr, n.peer_as
            );
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "    auth-password = \"{}\"", pw.replace('"', "\\\""));
            }
            c.push_str("  [neighbors.transport.config]\n");
            let _ = writeln!(c, "    passive-mode = {}", n.passive);
            if let Some(a) = n.local_address {
                let _ = writeln!(c, "    local-address = \"{a}\"");
            }
            if let Some(p) = n.remote_port {
                let _ = writeln!(c, "    remote-port = {p}");
            }
            // Short connect retry: GoBGP's default is 120 s.
            c.push_str("  [neighbors.timers.config]\n    connect-retry = 1\n");
            if let Some(h) = n.hold_time {
                let _ = writeln!(
                    c,
                    "    hold-time = {h}\n    keepalive-interval = {}",
                    (h / 3).max(1)
                );
            }
            if let Some(ttl) = n.multihop {
                let _ = writeln!(
                    c,
                    "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = {ttl}"
                );
            }
            if let Some(t) = n.graceful_restart {
                let _ = writeln!(
                    c,
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {t}"
                );
            }
            for (on, name) in [(n.ipv4, "ipv4-unicast"), (n.ipv6, "ipv6-unicast")] {
                if on {
                    let _ = writeln!(
                        c,
                        "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{name}\""
                    );
                    if n.graceful_restart.is_some() {
                        c.push_str("    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n");
                    }
                }
            }
        }
        c
    }
}

/// A running gobgpd in a namespace.
#[derive(Debug)]
pub struct Gobgp {
    ns: Netns,
    name: String,
    conf: PathBuf,
    api_port: u16,
    routes: Vec<(StaticRoute, IpAddr)>,
    process: Process,
}

impl Gobgp {
    /// Writes the config, starts gobgpd, waits for its API and adds the config's routes.
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &GobgpConfig) -> Gobgp {
        require("gobgpd");
        require("gobgp");
        let dir = ns.topology().subdir(&format!("gobgp-{name}"));
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, config.render()).expect("write gobgpd.toml");
        let c = conf.display().to_string();
        let out = crate::netns::host_exec("gobgpd", &["-d", "-f", &c]);
        assert!(
            out.success,
            "gobgpd rejects {c}: {}{}",
            out.stdout, out.stderr
        );
        let process = Self::spawn(ns, name, &conf, config.api_port);
        let g = Gobgp {
            ns: ns.clone(),
            name: name.to_string(),
            conf,
            api_port: config.api_port,
            routes: config.routes.clone(),
            process,
        };
        g.wait_ready();
        g.announce_config_routes();
        g
    }

    fn spawn(ns: &Netns, name: &str, conf: &std::path::Path, api_port: u16) -> Process {
        let mut cmd = ns.command("gobgpd");
        cmd.arg("-f")
            .arg(conf)
            .arg(format!("--api-hosts=127.0.0.1:{api_port}"))
            .args(["--pprof-disable", "--log-plain"]);
        ns.topology().spawn(&format!("gobgp-{name}"), cmd)
    }

    #[track_caller]
    fn wait_ready(&self) {
        wait_for(
            Duration::from_secs(10),
            &format!("gobgpd {} API", self.name),
            || {
                if !self.process.is_running() {
                    panic!(
                        "gobgpd {} exited: {}{}",
                        self.name,
                        self.process.stdout(),
                        self.process.stderr()
                    );
                }
                let out = self.gobgp_raw(&["global"]);
                if out.success { Ok(()) } else { Err(out.stderr) }
            },
        );
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.conf
    }

    fn gobgp_raw(&self, args: &[&str]) -> crate::ExecOutput {
        let port = self.api_port.to_string();
        let mut all = vec!["-p", &port];
        all.extend_from_slice(args);
        self.ns.exec("gobgp", &all)
    }

    /// Runs the `gobgp` CLI (in the namespace, against this instance) and returns stdout.
    #[track_caller]
    pub fn gobgp(&self, args: &[&str]) -> String {
        let out = self.gobgp_raw(args);
        assert!(
            out.success,
            "gobgp {args:?} failed: {}{}",
            out.stderr, out.stdout
        );
        out.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = self.gobgp(&all);
        if text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("gobgp {args:?}: {e}: {text}"))
    }

    /// Originates `route` with `next_hop` (`gobgp global rib add`, origin IGP).
    #[track_caller]
    pub fn announce(&self, route: &StaticRoute, next_hop: IpAddr) {
        self.gobgp(
            &route_args("add", route, Some(next_hop))
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
    }

    /// Withdraws a route added with [`Gobgp::announce`].
    #[track_caller]
    pub fn withdraw(&self, prefix: &str) {
        self.gobgp(
            &route_args("del", &StaticRoute::new(prefix), None)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
    }

    /// Session state with `neighbor`: `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`,
    /// `Established` (GoBGP's names normalised to RFC 4271's).
    pub fn bgp_state(&self, neighbor: IpAddr) -> String {
        let v = self.json(&["neighbor", &neighbor.to_string()]);
        session_state(&v["state"]["session_state"])
    }

    #[track_caller]
    pub fn wait_established(&self, neighbor: IpAddr, timeout: Duration) {
        wait_for(
            timeout,
            &format!(
                "gobgpd {} session with {neighbor} to be Established",
                self.name
            ),
            || {
                let s = self.bgp_state(neighbor);
                if s == "Established" { Ok(()) } else { Err(s) }
            },
        )
    }

    /// The Loc-RIB of both families (`gobgp -j global rib -a ipv4|ipv6`), including routes this
    /// instance originated.
    pub fn routes(&self) -> Vec<RibRoute> {
        ["ipv4", "ipv6"]
            .into_iter()
            .flat_map(|afi| parse_rib_json(&self.json(&["global", "rib", "-a", afi])))
            .collect()
    }

    /// What `neighbor` sent (`gobgp -j neighbor ADDR adj-in -a ipv4|ipv6`).
    pub fn adj_rib_in(&self, neighbor: IpAddr) -> Vec<RibRoute> {
        let n = neighbor.to_string();
        ["ipv4", "ipv6"]
            .into_iter()
            .flat_map(|afi| parse_rib_json(&self.json(&["neighbor", &n, "adj-in", "-a", afi])))
            .collect()
    }

    /// Number of routes in the Loc-RIB of `afi` (`gobgp global rib summary`).
    pub fn route_count(&self, afi: &str) -> u64 {
        let text = self.gobgp(&["global", "rib", "summary", "-a", afi]);
        // "Table ipv4-unicast\nDestination: 3, Path: 3"
        text.split([',', '\n'])
            .find_map(|f| f.trim().strip_prefix("Destination:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(&self) {
        self.process.stop();
    }

    /// Stops gobgpd and starts it again; the config's routes are announced again (routes
    /// added later with [`Gobgp::announce`] are not).
    #[track_caller]
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(&self.ns, &self.name, &self.conf, self.api_port);
        self.wait_ready();
        self.announce_config_routes();
    }

    fn announce_config_routes(&self) {
        for (r, nh) in &self.routes {
            self.announce(r, *nh);
        }
    }
}

fn route_args(op: &str, r: &StaticRoute, next_hop: Option<IpAddr>) -> Vec<String> {
    let afi = if r.prefix.contains(':') {
        "ipv6"
    } else {
        "ipv4"
    };
    let mut a: Vec<String> = ["global", "rib", op, "-a", afi, &r.prefix]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(nh) = next_hop {
        a.extend([
            "nexthop".into(),
            nh.to_string(),
            "origin".into(),
            "igp".into(),
        ]);
    }
    if !r.communities.is_empty() {
        let l: Vec<String> = r
            .communities
            .iter()
            .map(|(x, y)| format!("{x}:{y}"))
            .collect();
        a.extend(["community".into(), l.join(",")]);
    }
    if !r.large_communities.is_empty() {
        let l: Vec<String> = r
            .large_communities
            .iter()
            .map(|(g, x, y)| format!("{g}:{x}:{y}"))
            .collect();
        a.extend(["large-community".into(), l.join(",")]);
    }
    if let Some(m) = r.med {
        a.extend(["med".into(), m.to_string()]);
    }
    if let Some(lp) = r.local_pref {
        a.extend(["local-pref".into(), lp.to_string()]);
    }
    a
}

/// GoBGP prints session states as numbers (6 = established) or names, depending on version.
fn session_state(v: &Value) -> String {
    let name = match v {
        Value::Number(n) => match n.as_u64() {
            Some(1) => "idle",
            Some(2) => "connect",
            Some(3) => "active",
            Some(4) => "opensent",
            Some(5) => "openconfirm",
            Some(6) => "established",
            _ => "unknown",
        }
        .to_string(),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => "unknown".to_string(),
    };
    match name.trim_start_matches("session_state_") {
        "idle" => "Idle",
        "connect" => "Connect",
        "active" => "Active",
        "opensent" => "OpenSent",
        "openconfirm" => "OpenConfirm",
        "established" => "Established",
        _ => "Unknown",
    }
    .to_string()
}

/// Parses `gobgp -j global rib` / `adj-in`: `{prefix: [path, ...]}`, attributes by type code.
pub fn parse_rib_json(v: &Value) -> Vec<RibRoute> {
    let mut out = Vec::new();
    let Some(map) = v.as_object() else { return out };
    for (prefix, paths) in map {
        for p in paths.as_array().into_iter().flatten() {
            let mut r = RibRoute::new(prefix.clone());
            for a in p["attrs"].as_array().into_iter().flatten() {
                match a["type"].as_u64() {
                    Some(2) => {
                        r.as_path = a["as_paths"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
                            .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                            .collect()
                    }
                    Some(3) | Some(14) => {
                        r.next_hop = a["nexthop"].as_str().and_then(|s| s.parse().ok())
                    }
                    Some(4) => r.med = a["metric"].as_u64().and_then(|n| u32::try_from(n).ok()),
                    Some(5) => {
                        r.local_pref = a["value"].as_u64().and_then(|n| u32::try_from(n).ok())
                    }
                    Some(8) => {
                        r.communities = a["communities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| {
                                let c = u32::try_from(c.as_u64()?).ok()?;
                                Some(((c >> 16) as u16, (c & 0xffff) as u16))
                            })
                            .collect()
                    }
                    Some(32) => {
                        r.large_communities = a["value"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| {
                                let f = |k: &str| c[k].as_u64().and_then(|n| u32::try_from(n).ok());
                                Some((f("ASN")?, f("LocalData1")?, f("LocalData2")?))
                            })
                            .collect()
                    }
                    _ => {}
                }
            }
            out.push(r.normalise());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gobgp_rib_json() {
        let v: Value = serde_json::from_str(r#"{"203.0.113.1/32":[{"nlri":{"prefix":"203.0.113.1/32"},"best":true,"attrs":[{"type":1,"value":2},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[65009]}]},{"type":4,"metric":50},{"type":5,"value":200},{"type":8,"communities":[4259905736,4259905636]},{"type":32,"value":[{"ASN":65001,"LocalData1":1,"LocalData2":2}]},{"type":3,"nexthop":"192.0.2.2"}]}],
            "2001:db8:ff::/48":[{"attrs":[{"type":14,"nexthop":"2001:db8::2","afi":2,"safi":1}]}]}"#).unwrap();
        let r = parse_rib_json(&v);
        let v4 = r.iter().find(|r| r.prefix == "203.0.113.1/32").unwrap();
        assert_eq!(v4.as_path, vec![65009]);
        assert_eq!(v4.communities, vec![(65001, 100), (65001, 200)]);
        assert_eq!(v4.large_communities, vec![(65001, 1, 2)]);
        assert_eq!((v4.med, v4.local_pref), (Some(50), Some(200)));
        assert_eq!(v4.next_hop, Some("192.0.2.2".parse().unwrap()));
        let v6 = r.iter().find(|r| r.prefix == "2001:db8:ff::/48").unwrap();
        assert_eq!(v6.next_hop, Some("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn normalises_session_states() {
        assert_eq!(session_state(&Value::from(6)), "Established");
        assert_eq!(
            session_state(&Value::from("SESSION_STATE_ACTIVE")),
            "Active"
        );
        assert_eq!(session_state(&Value::from("established")), "Established");
    }
}
