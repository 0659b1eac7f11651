//! ExaBGP as a BGP peer in a namespace: static routes from its config, runtime commands
//! (`announce route ...`) and what it received, all through one small API helper process.
//!
//! The helper (a Python script, since ExaBGP itself is Python) appends every JSON message
//! ExaBGP gives it (`receive { parsed; update; }`, `neighbor-changes`) to `received.jsonl`,
//! and forwards each line appended to `commands` to ExaBGP. It exits when ExaBGP closes its
//! stdin, so it never outlives the daemon.
//!
//! ```no_run
//! use leafbridge_tests::{Pair, exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor}};
//! let p = Pair::new("doc");
//! let mut cfg = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65002);
//! cfg.neighbors.push(ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4()));
//! let exa = Exabgp::start(&p.b, "leaf", &cfg);
//! exa.wait_up(Pair::a_v4(), std::time::Duration::from_secs(10));
//! let rib = exa.received_routes();
//! # let _ = rib;
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::netns::{Netns, Process};
use crate::rib::{RibRoute, StaticRoute};
use crate::support::{require, wait_for};

// Raw reads on the descriptors: a buffered `sys.stdin.readline()` would keep lines in Python's
// buffer that `select` no longer reports.
const HELPER: &str = r#"import os, select, sys
recv = open(sys.argv[1], "ab", buffering=0)
cmds = open(sys.argv[2], "rb", buffering=0)
pending = b""
while True:
    ready, _, _ = select.select([0], [], [], 0.05)
    if ready:
        data = os.read(0, 65536)
        if not data:
            break
        recv.write(data)
    pending += cmds.read() or b""
    if b"\n" in pending:
        done, _, pending = pending.rpartition(b"\n")
        os.write(1, done + b"\n")
"#;

/// One `neighbor` block.
#[derive(Debug, Clone)]
pub struct ExabgpNeighbor {
    pub addr: IpAddr,
    pub peer_as: u32,
    /// ExaBGP needs the local address of every session.
    pub local_address: IpAddr,
    /// Wait for the peer to connect (the config must then set [`ExabgpConfig::listen`]).
    pub passive: bool,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<String>,
    pub hold_time: Option<u16>,
    /// Graceful restart capability with this restart time.
    pub graceful_restart: Option<u32>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Static routes announced on this session, with their next hop.
    pub routes: Vec<(StaticRoute, IpAddr)>,
    /// Extra lines for the neighbor block, verbatim.
    pub extra: String,
}

impl ExabgpNeighbor {
    pub fn new(addr: IpAddr, peer_as: u32, local_address: IpAddr) -> ExabgpNeighbor {
        ExabgpNeighbor {
            addr,
            peer_as,
            local_address,
            passive: false,
            password: None,
            hold_time: None,
            graceful_restart: None,
            ipv4: true,
            ipv6: true,
            routes: Vec::new(),
            extra: String::new(),
        }
    }
}

/// An ExaBGP configuration plus the environment it needs.
#[derive(Debug, Clone)]
pub struct ExabgpConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    pub neighbors: Vec<ExabgpNeighbor>,
    /// Address and port to accept connections on (`exabgp.tcp.bind`/`port`); needed for
    /// passive neighbors.
    pub listen: Option<(IpAddr, u16)>,
}

impl ExabgpConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> ExabgpConfig {
        ExabgpConfig {
            router_id,
            local_as,
            neighbors: Vec::new(),
            listen: None,
        }
    }

    /// The config text; `helper` is the API helper's command line.
    pub fn render(&self, helper: &str) -> String {
        let mut c = format!("process lbapi {{\n  run {helper};\n  encoder json;\n}}\n");
        for n in &self.neighbors {
            let _ = writeln!(c, "neighbor {} {{", n.addr);
            let _ = writeln!(
                c,
                "  router-id {};\n  local-address {};",
                self.router_id, n.local_address
            );
            let _ = writeln!(c, "  local-as {};\n  peer-as {};", self.local_as, n.peer_as);
            if n.passive {
                c.push_str("  passive true;\n");
            }
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "  md5-password \"{}\";", pw.replace('"', "\\\""));
            }
            if let Some(h) = n.hold_time {
                let _ = writeln!(c, "  hold-time {h};");
            }
            c.push_str("  family {\n");
            if n.ipv4 {
                c.push_str("    ipv4 unicast;\n");
            }
            if n.ipv6 {
                c.push_str("    ipv6 unicast;\n");
            }
            c.push_str("  }\n");
            if let Some(t) = n.graceful_restart {
                let _ = writeln!(c, "  capability {{\n    graceful-restart {t};\n  }}");
            }
            c.push_str(
                "  api {\n    processes [ lbapi ];\n    neighbor-changes;\n    receive {\n      parsed;\n      update;\n      notification;\n    }\n  }\n",
            );
            if !n.routes.is_empty() {
                c.push_str("  static {\n");
                for (r, nh) in &n.routes {
                    let _ = writeln!(
                        c,
                        "    {};",
                        route_command(r, *nh).trim_start_matches("announce ")
                    );
                }
                c.push_str("  }\n");
            }
            c.push_str(&n.extra);
            c.push_str("}\n");
        }
        c
    }
}

/// `announce route P next-hop NH [community [..]] [large-community [..]] [med N]
/// [local-preference N]` — ExaBGP's command and static-route syntax.
pub fn route_command(r: &StaticRoute, next_hop: IpAddr) -> String {
    let mut s = format!("announce route {} next-hop {next_hop}", r.prefix);
    if !r.communities.is_empty() {
        let l: Vec<String> = r
            .communities
            .iter()
            .map(|(a, v)| format!("{a}:{v}"))
            .collect();
        let _ = write!(s, " community [ {} ]", l.join(" "));
    }
    if !r.large_communities.is_empty() {
        let l: Vec<String> = r
            .large_communities
            .iter()
            .map(|(g, a, b)| format!("{g}:{a}:{b}"))
            .collect();
        let _ = write!(s, " large-community [ {} ]", l.join(" "));
    }
    if let Some(m) = r.med {
        let _ = write!(s, " med {m}");
    }
    if let Some(lp) = r.local_pref {
        let _ = write!(s, " local-preference {lp}");
    }
    s
}

/// A running ExaBGP in a namespace.
#[derive(Debug)]
pub struct Exabgp {
    ns: Netns,
    name: String,
    conf: PathBuf,
    received: PathBuf,
    commands: PathBuf,
    listen: Option<(IpAddr, u16)>,
    process: Process,
}

impl Exabgp {
    /// Writes config and helper, starts ExaBGP (as root, `exabgp.daemon.user=root`).
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, config: &ExabgpConfig) -> Exabgp {
        require("exabgp");
        let python = require("python3");
        let dir = ns.topology().subdir(&format!("exabgp-{name}"));
        let helper = dir.join("lbapi.py");
        let received = dir.join("received.jsonl");
        let commands = dir.join("commands");
        std::fs::write(&helper, HELPER).expect("write helper");
        std::fs::write(&received, "").expect("create received.jsonl");
        std::fs::write(&commands, "").expect("create commands");
        let run = format!(
            "{} {} {} {}",
            python.display(),
            helper.display(),
            received.display(),
            commands.display()
        );
        let conf = dir.join("exabgp.conf");
        std::fs::write(&conf, config.render(&run)).expect("write exabgp.conf");
        // `--validate` re-parses the whole file: worth it, except for benchmark-sized configs
        // (docs/testing.md: ~5 s for 100k routes).
        if config
            .neighbors
            .iter()
            .map(|n| n.routes.len())
            .sum::<usize>()
            <= 1000
        {
            let out = std::process::Command::new("exabgp")
                .arg("--validate")
                .arg(&conf)
                .env("exabgp.daemon.user", "root")
                .output()
                .expect("run exabgp --validate");
            assert!(
                out.status.success(),
                "ExaBGP rejects {}: {}",
                conf.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let process = Self::spawn(ns, name, &conf, config.listen);
        let exa = Exabgp {
            ns: ns.clone(),
            name: name.to_string(),
            conf,
            received,
            commands,
            listen: config.listen,
            process,
        };
        // ExaBGP parses its config before anything else; a bad one makes it exit at once.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = exa.process.try_exit_status() {
            panic!(
                "ExaBGP {name} exited ({status}): {}{}",
                exa.process.stdout(),
                exa.process.stderr()
            );
        }
        exa
    }

    fn spawn(
        ns: &Netns,
        name: &str,
        conf: &std::path::Path,
        listen: Option<(IpAddr, u16)>,
    ) -> Process {
        let mut cmd = ns.command("exabgp");
        cmd.arg(conf)
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.daemonize", "false")
            .env("exabgp.log.destination", "stdout")
            .env("exabgp.api.ack", "false")
            .env("exabgp.api.cli", "false")
            .env("exabgp.api.respawn", "false");
        match listen {
            Some((addr, port)) => {
                cmd.env("exabgp.tcp.bind", addr.to_string())
                    .env("exabgp.tcp.port", port.to_string());
            }
            None => {
                cmd.env("exabgp.tcp.bind", "");
            }
        }
        ns.topology().spawn(&format!("exabgp-{name}"), cmd)
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.conf
    }

    /// Sends an API command, e.g. `announce route 203.0.113.5/32 next-hop self` or
    /// `neighbor 192.0.2.1 teardown 2` (see [`route_command`]).
    pub fn command(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.commands)
            .expect("open commands");
        // One write per line: the helper never sees half a command.
        f.write_all(format!("{line}\n").as_bytes())
            .expect("write command");
    }

    /// Every JSON message ExaBGP has passed to the API so far (updates, state changes,
    /// notifications), in order.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The last session state reported for `neighbor` (`"up"`, `"down"`, `"connected"`), or
    /// `"unknown"`.
    pub fn state(&self, neighbor: IpAddr) -> String {
        last_state(&self.messages(), neighbor)
    }

    /// Why each session with `neighbor` went down, in order, as ExaBGP words it, e.g.
    /// `peer reset, message (notification received (6,2)) error(Cease / Administrative
    /// Shutdown)`.
    pub fn down_reasons(&self, neighbor: IpAddr) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["type"] == "state" && m["neighbor"]["state"] == "down")
            .filter(|m| {
                m["neighbor"]["address"]["peer"]
                    .as_str()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    == Some(neighbor)
            })
            .filter_map(|m| m["neighbor"]["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits for ExaBGP to report the session with `neighbor` up (Established).
    #[track_caller]
    pub fn wait_up(&self, neighbor: IpAddr, timeout: Duration) {
        wait_for(
            timeout,
            &format!("ExaBGP {} session with {neighbor} up", self.name),
            || {
                if !self.process.is_running() {
                    panic!("ExaBGP {} exited: {}", self.name, self.process.stdout());
                }
                let s = self.state(neighbor);
                if s == "up" { Ok(()) } else { Err(s) }
            },
        )
    }

    /// The routes received and not withdrawn, rebuilt by replaying the UPDATEs in order (for
    /// one neighbor; with several, see [`Exabgp::received_routes_from`]).
    pub fn received_routes(&self) -> Vec<RibRoute> {
        replay(&self.messages(), None).into_values().collect()
    }

    /// The routes `neighbor` sent and has not withdrawn.
    pub fn received_routes_from(&self, neighbor: IpAddr) -> Vec<RibRoute> {
        replay(&self.messages(), Some(neighbor))
            .into_values()
            .collect()
    }

    pub fn stop(&self) {
        self.process.stop();
    }

    /// Stops ExaBGP and starts it again (its helper is restarted with it).
    #[track_caller]
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(&self.ns, &self.name, &self.conf, self.listen);
    }
}

fn last_state(messages: &[Value], neighbor: IpAddr) -> String {
    messages
        .iter()
        .filter(|m| m["type"] == "state")
        .filter(|m| {
            m["neighbor"]["address"]["peer"]
                .as_str()
                .and_then(|a| a.parse::<IpAddr>().ok())
                == Some(neighbor)
        })
        .filter_map(|m| m["neighbor"]["state"].as_str())
        .next_back()
        .unwrap_or("unknown")
        .to_string()
}

/// Applies ExaBGP's parsed UPDATE messages in order: announcements replace, withdrawals
/// remove, a session going down clears that neighbor's routes. With `neighbor`, only that
/// peer's messages count.
pub fn replay(messages: &[Value], neighbor: Option<IpAddr>) -> BTreeMap<String, RibRoute> {
    let mut rib: BTreeMap<String, RibRoute> = BTreeMap::new();
    for m in messages {
        let peer = m["neighbor"]["address"]["peer"]
            .as_str()
            .and_then(|a| a.parse::<IpAddr>().ok());
        if neighbor.is_some() && peer != neighbor {
            continue;
        }
        if m["type"] == "state" && m["neighbor"]["state"] == "down" {
            rib.clear();
            continue;
        }
        let u = &m["neighbor"]["message"]["update"];
        if u.is_null() {
            continue;
        }
        for nlris in u["withdraw"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            for n in nlris.as_array().into_iter().flatten() {
                if let Some(p) = nlri(n) {
                    rib.remove(&p);
                }
            }
        }
        let attrs = &u["attribute"];
        for by_nh in u["announce"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            // An IPv6 route on a shared link comes with its global and its link-local next hop
            // (listed separately): keep the global one.
            let mut hops: Vec<_> = by_nh.as_object().into_iter().flatten().collect();
            hops.sort_by_key(|(nh, _)| nh.starts_with("fe80"));
            let mut seen = std::collections::BTreeSet::new();
            for (nh, nlris) in hops {
                for n in nlris.as_array().into_iter().flatten() {
                    let Some(p) = nlri(n) else { continue };
                    if !seen.insert(p.clone()) {
                        continue;
                    }
                    let mut r = RibRoute::new(p.clone());
                    r.next_hop = nh.parse().ok();
                    r.as_path = numbers(&attrs["as-path"]);
                    r.med = attrs["med"].as_u64().and_then(|n| u32::try_from(n).ok());
                    r.local_pref = attrs["local-preference"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok());
                    r.communities = attrs["community"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| {
                            Some((
                                u16::try_from(c[0].as_u64()?).ok()?,
                                u16::try_from(c[1].as_u64()?).ok()?,
                            ))
                        })
                        .collect();
                    r.large_communities = attrs["large-community"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| {
                            let f = |i: usize| c[i].as_u64().and_then(|n| u32::try_from(n).ok());
                            Some((f(0)?, f(1)?, f(2)?))
                        })
                        .collect();
                    rib.insert(p, r.normalise());
                }
            }
        }
    }
    rib
}

fn nlri(n: &Value) -> Option<String> {
    n.as_str()
        .or_else(|| n["nlri"].as_str())
        .map(str::to_string)
}

/// All numbers in a (possibly nested) JSON array; AS_PATH segments may be nested.
fn numbers(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        Value::Object(o) => o.values().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_announce_and_withdraw() {
        let msgs: Vec<Value> = [
            r#"{"type":"state","neighbor":{"address":{"peer":"192.0.2.1"},"state":"up"}}"#,
            r#"{"type":"update","neighbor":{"message":{"update":{"attribute":{"origin":"igp","as-path":[65001],"med":50,"community":[[65001,200],[65001,100]],"large-community":[[65001,1,2]]},"announce":{"ipv4 unicast":{"192.0.2.1":[{"nlri":"203.0.113.1/32"},{"nlri":"203.0.113.2/32"}]}}}}}}"#,
            r#"{"type":"update","neighbor":{"message":{"update":{"withdraw":{"ipv4 unicast":[{"nlri":"203.0.113.2/32"}]}}}}}"#,
        ]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
        let rib = replay(&msgs, None);
        assert_eq!(
            replay(&msgs, Some("192.0.2.1".parse().unwrap())).len(),
            0,
            "updates without a peer"
        );
        assert_eq!(rib.len(), 1);
        let r = &rib["203.0.113.1/32"];
        assert_eq!(r.as_path, vec![65001]);
        assert_eq!(r.med, Some(50));
        assert_eq!(r.communities, vec![(65001, 100), (65001, 200)]);
        assert_eq!(r.large_communities, vec![(65001, 1, 2)]);
        assert_eq!(r.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(last_state(&msgs, "192.0.2.1".parse().unwrap()), "up");
    }

    #[test]
    fn route_command_has_exabgp_syntax() {
        let r = StaticRoute {
            communities: vec![(1, 2)],
            med: Some(7),
            ..StaticRoute::new("203.0.113.1/32")
        };
        assert_eq!(
            route_command(&r, "192.0.2.2".parse().unwrap()),
            "announce route 203.0.113.1/32 next-hop 192.0.2.2 community [ 1:2 ] med 7"
        );
    }
}
