//! The lab as a user runs it, and the whole mission on it.
//!
//! Each test runs the real `leafbridge-lab` command (`up --bin-dir` with this build's debug
//! programs, `status`, `down`) under a name of its own (`t<pid><letter>`), so the lab of a
//! user on the same machine (`lbl-lab-...`) is never touched:
//! - [`lab_up_what_to_try_status_down`]: every "what to try" command `up` prints, run as
//!   printed, with its expected answer; `status`; stale-namespace cleanup of test runs leaves
//!   the lab alone; `down` removes exactly what `up` recorded.
//! - [`whole_mission_on_the_lab`]: the office gets a LoadBalancer address for a Service's
//!   name and a cluster client its ClusterIP; HTTP to the name reaches a node through the
//!   leaf; pod IPs and the ClusterIP answer through the announced pod and service CIDRs;
//!   scaling a `Local` Service's endpoints moves its route (through ECMP); deleting it
//!   withdraws the route and the name; the office's unbound, forwarding `cluster.local` to
//!   leafbridge-dns, gives the same answers throughout.
//! - [`lab_with_frr_leaf`]: `up --frr`: the same network with FRR (bgpd + zebra) as the leaf.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use leafbridge_tests::Topology;
use leafbridge_tests::cluster::{BACKEND_PORT, CLUSTER_IP};
use leafbridge_tests::dns::{DigAnswer, dig};
use leafbridge_tests::lab::{self, LabInfo};
use leafbridge_tests::manifests::{EndpointSlice, Service, StateDir};
use leafbridge_tests::netns::{
    Netns, PERSISTENT_STATE_FILE, read_persistent_state, remove_stale_namespaces,
};
use leafbridge_tests::programs::{http_get, workspace_binary};
use leafbridge_tests::{require, require_root, wait_for};

const T: Duration = Duration::from_secs(30);
const WEB: &str = "web.demo.svc.cluster.local";

/// A lab brought up by the `leafbridge-lab` command; dropped without `down` (a failed
/// assertion), it prints the end of every log and takes the lab down, keeping its files.
struct Lab {
    info: LabInfo,
    dir: PathBuf,
    up_output: String,
    handles: Topology,
    down: bool,
    bins: tempfile::TempDir,
}

fn lab_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leafbridge-lab"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

impl Lab {
    #[track_caller]
    fn up(letter: char, extra: &[&str]) -> Lab {
        require_root();
        for tool in ["ip", "bird", "birdc", "dig", "unbound", "curl"] {
            require(tool);
        }
        // The three programs of this build, in one directory for --bin-dir.
        let bins = tempfile::tempdir().expect("bin dir");
        for name in [
            "leafbridge-controller",
            "leafbridge-speaker",
            "leafbridge-dns",
        ] {
            std::os::unix::fs::symlink(workspace_binary(name), bins.path().join(name))
                .expect("symlink a program");
        }
        let name = format!("t{}{letter}", std::process::id());
        let dir = std::env::temp_dir().join(format!("leafbridge-lab-{name}"));
        let (ok, up_output) = run(lab_command()
            .args(["up", "--no-install", "--name", &name])
            .arg("--dir")
            .arg(&dir)
            .arg("--bin-dir")
            .arg(bins.path())
            .args(extra));
        let info = LabInfo::read(&dir);
        assert!(ok && info.is_ok(), "leafbridge-lab up failed:\n{up_output}");
        Lab {
            info: info.unwrap(),
            dir,
            up_output,
            handles: Topology::loopback("labtest"),
            down: false,
            bins,
        }
    }

    fn ns(&self, name: &str) -> Netns {
        self.handles.attach(name)
    }

    fn office(&self) -> Netns {
        self.ns(&self.info.office)
    }

    fn node(&self, i: usize) -> Netns {
        self.ns(&self.info.nodes[i])
    }

    fn state(&self) -> StateDir {
        lab::state_dir_of(&self.info)
    }

    fn dns() -> SocketAddr {
        lab::DNS_ADDR.parse().unwrap()
    }

    fn office_resolver() -> SocketAddr {
        lab::OFFICE_RESOLVER.parse().unwrap()
    }

    /// The Service's allocated IPv4 address, once the controller has written it.
    #[track_caller]
    fn wait_address(&self, namespace: &str, name: &str) -> IpAddr {
        wait_for(T, &format!("an address for {namespace}/{name}"), || {
            let ips = lab::service_ingress(&self.info.state_dir(), namespace, name);
            ips.iter().find(|ip| ip.is_ipv4()).copied().ok_or(ips)
        })
    }

    /// The next hops of the leaf's kernel route for `prefix`, sorted.
    fn leaf_next_hops(&self, prefix: &str) -> (Vec<IpAddr>, String) {
        let route = self
            .ns(&self.info.leaf)
            .run("ip", &["route", "show", prefix]);
        let mut hops: Vec<IpAddr> = route
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        (hops, route)
    }

    /// Waits until the leaf's kernel forwards `prefix` to exactly the nodes `via` (none:
    /// no route).
    #[track_caller]
    fn wait_route(&self, prefix: &str, via: &[usize]) {
        let want: Vec<IpAddr> = via
            .iter()
            .map(|i| leafbridge_tests::fabric::Fabric::node_v4(*i))
            .collect();
        wait_for(
            T,
            &format!("the leaf's kernel route {prefix} via {want:?}"),
            || {
                let (hops, route) = self.leaf_next_hops(prefix);
                if hops == want && (via.is_empty() == route.trim().is_empty()) {
                    Ok(())
                } else {
                    Err(route)
                }
            },
        );
    }

    /// `curl URL` in the office, as a user types it (names resolve through the office's
    /// resolv.conf, i.e. leafbridge-dns): the body, trimmed.
    fn office_curl(&self, url: &str) -> Result<String, String> {
        let out = self
            .office()
            .exec("curl", &["-s", "-S", "--max-time", "3", url]);
        if out.success {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(out.stderr)
        }
    }

    fn status(&self) -> String {
        let (ok, out) = run(lab_command().arg("status").arg("--dir").arg(&self.dir));
        assert!(ok, "leafbridge-lab status failed:\n{out}");
        out
    }

    /// `down`, and a check that nothing `up` recorded is left: no namespace, no process, no
    /// file outside the directory, not the directory.
    #[track_caller]
    fn down(mut self) {
        let recorded =
            read_persistent_state(&self.dir.join(PERSISTENT_STATE_FILE)).expect("the lab's record");
        assert!(recorded.processes.len() >= 10, "{recorded:?}");
        self.down = true;
        let (ok, out) = run(lab_command().arg("down").arg("--dir").arg(&self.dir));
        assert!(ok, "leafbridge-lab down failed:\n{out}");
        assert_eq!(
            lab::existing_namespaces(&self.info.name),
            Vec::<String>::new()
        );
        let alive: Vec<_> = recorded
            .processes
            .iter()
            .filter(|p| p.is_running())
            .collect();
        assert!(alive.is_empty(), "still running after down: {alive:?}");
        for f in &recorded.files {
            assert!(!f.exists(), "{} left after down", f.display());
        }
        assert!(!self.dir.exists(), "{} left after down", self.dir.display());
        // A second down finds nothing recorded and says so.
        let (ok, out) = run(lab_command().arg("down").arg("--dir").arg(&self.dir));
        assert!(!ok && out.contains("nothing recorded"), "{out}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        let logs = self.dir.join("logs");
        if let Ok(entries) = std::fs::read_dir(&logs) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    eprintln!(
                        "----- {}, last lines:\n{}",
                        e.path().display(),
                        lines[lines.len().saturating_sub(25)..].join("\n")
                    );
                }
            }
        }
        let (_, out) = run(lab_command()
            .args(["down", "--keep-files", "--dir"])
            .arg(&self.dir));
        eprintln!("leafbridge-lab down --keep-files: {out}");
    }
}

/// The "what to try" section of `up`'s output: (what it shows, the command).
fn what_to_try(up_output: &str) -> Vec<(String, String)> {
    let mut lines = up_output
        .lines()
        .skip_while(|l| *l != "What to try:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty());
    let mut steps = Vec::new();
    while let (Some(explain), Some(cmd)) = (lines.next(), lines.next()) {
        let explain = explain
            .trim()
            .strip_prefix("# ")
            .expect("an explanation line");
        steps.push((explain.to_string(), cmd.trim().to_string()));
    }
    steps
}

/// Runs a printed command with `sh -c`, as a user pastes it.
fn shell(cmd: &str) -> (bool, String) {
    run(Command::new("sh").args(["-c", cmd]))
}

fn a_records(a: &DigAnswer) -> Vec<String> {
    a.rdata("A")
}

#[test]
fn lab_up_what_to_try_status_down() {
    let lab = Lab::up('a', &[]);
    let web = lab.wait_address("demo", "web");
    let steps = what_to_try(&lab.up_output);
    assert_eq!(steps.len(), 10, "{}", lab.up_output);
    let shop_step = steps
        .iter()
        .position(|(_, c)| c.starts_with("cp "))
        .expect("a step that adds a Service");
    for (n, (explain, cmd)) in steps.iter().enumerate() {
        let check = |out: &str| -> Result<(), String> {
            let out = out.trim();
            let want: Vec<String> = match n {
                // web's name from the office, plainly and through the office's unbound
                0 | 3 => vec![web.to_string()],
                // fetching it reaches node1, the node of web's one endpoint
                1 => vec!["node1".into()],
                // the cluster view: the ClusterIP
                2 => vec![CLUSTER_IP.into()],
                // a pod IP on node2
                4 => vec!["node2".into()],
                // the ClusterIP, through a gateway
                5 => {
                    return if out == "node0" || out == "node1" {
                        Ok(())
                    } else {
                        Err(format!("want a gateway's name, got {out:?}"))
                    };
                }
                6 => {
                    for line in [
                        "100.64.0.0/24 via 192.0.2.10".to_string(),
                        "100.64.1.0/24 via 192.0.2.11".into(),
                        "100.64.2.0/24 via 192.0.2.12".into(),
                        format!("{web} via 192.0.2.11"),
                        "100.100.0.0/16 proto bird".into(),
                    ] {
                        if !out.contains(&line) {
                            return Err(format!("no {line:?} in the leaf's routes"));
                        }
                    }
                    return Ok(());
                }
                7 => return Ok(()),
                8 => {
                    let shop = lab::service_ingress(&lab.info.state_dir(), "demo", "shop");
                    return match shop.first() {
                        Some(ip) if out == ip.to_string() => Ok(()),
                        other => Err(format!(
                            "shop's address is {other:?}, the name gave {out:?}"
                        )),
                    };
                }
                9 => vec!["node2".into()],
                _ => unreachable!("{n}"),
            };
            if out.lines().map(str::to_string).collect::<Vec<_>>() == want {
                Ok(())
            } else {
                Err(format!("want {want:?}, got {out:?}"))
            }
        };
        // The steps after the new Service's file may need a moment ("a second later").
        let patience = if n > shop_step {
            T
        } else {
            Duration::from_secs(3)
        };
        wait_for(patience, &format!("step {n} ({explain}): `{cmd}`"), || {
            let (ok, out) = shell(cmd);
            if !ok {
                return Err(format!("failed: {out}"));
            }
            check(&out)
        });
    }

    // status: sessions, routes, allocations, every process running.
    let status = lab.status();
    assert_eq!(status.matches("Established").count(), 3, "{status}");
    let shop = lab.wait_address("demo", "shop");
    for want in [
        format!("demo/web          {web}"),
        format!("demo/shop         {shop}"),
        format!("{shop} via 192.0.2.12"),
        "speaker-node2".into(),
        "leafbridge-dns".into(),
    ] {
        assert!(status.contains(&want), "no {want:?} in status:\n{status}");
    }
    assert!(
        !status.contains("EXITED") && status.matches("running").count() >= 10,
        "{status}"
    );

    // A test run's cleanup of stale test namespaces leaves the lab alone.
    remove_stale_namespaces();
    assert_eq!(lab::existing_namespaces(&lab.info.name).len(), 5);

    // A second `up` in the same directory, or under the same name elsewhere, is refused and
    // leaves the running lab as it is.
    let other_dir = std::env::temp_dir().join(format!("leafbridge-lab-{}-2", lab.info.name));
    for (dir, why) in [(&lab.dir, "a lab is up in it"), (&other_dir, "is up")] {
        let (ok, out) = run(lab_command()
            .args(["up", "--no-install", "--name", &lab.info.name, "--dir"])
            .arg(dir)
            .arg("--bin-dir")
            .arg(lab.bins.path()));
        assert!(
            !ok && out.contains(why),
            "second up in {}: {out}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&other_dir);
    assert_eq!(lab::existing_namespaces(&lab.info.name).len(), 5);
    assert!(!lab.status().contains("EXITED"));
    lab.down();
}

#[test]
fn whole_mission_on_the_lab() {
    let lab = Lab::up('b', &[]);
    let (office, node1) = (lab.office(), lab.node(1));
    let dns = Lab::dns();
    let resolver = Lab::office_resolver();

    // The office view answers web's LoadBalancer address, the cluster view (a node, a pod)
    // its ClusterIP; the office's own resolver forwards cluster.local and answers the same.
    let web = lab.wait_address("demo", "web");
    assert_eq!(
        a_records(&dig(&office, dns, WEB, "A", &[])),
        [web.to_string()]
    );
    assert_eq!(
        a_records(&dig(&office, resolver, WEB, "A", &[])),
        [web.to_string()]
    );
    assert_eq!(
        a_records(&dig(&lab.node(0), dns, WEB, "A", &[])),
        [CLUSTER_IP]
    );
    let from_pod = dig(&node1, dns, WEB, "A", &["-b", "100.64.1.10"]);
    assert_eq!(a_records(&from_pod), [CLUSTER_IP], "{}", from_pod.raw);
    let nx = "nothing.demo.svc.cluster.local";
    assert!(dig(&office, dns, nx, "A", &[]).is_nxdomain());
    assert!(dig(&office, resolver, nx, "A", &[]).is_nxdomain());

    // HTTP to the name goes through the leaf to node1, the node of web's endpoint.
    lab.wait_route(&web.to_string(), &[1]);
    assert_eq!(
        lab.office_curl(&format!("http://{WEB}/")),
        Ok("node1".into())
    );

    // Pod IPs through the pod CIDRs each node announces; the ClusterIP through the service
    // CIDR the gateways (node0, node1) announce.
    for i in 0..lab::NODES {
        lab.wait_route(&format!("100.64.{i}.0/24"), &[i]);
        let pod = SocketAddr::new(format!("100.64.{i}.10").parse().unwrap(), BACKEND_PORT);
        let got = http_get(&office, pod, "/").map(|(code, body)| (code, body_of(&body)));
        assert_eq!(got, Some((200, format!("node{i}"))), "pod IP on node{i}");
    }
    lab.wait_route(leafbridge_tests::cluster::SERVICE_CIDR, &lab::GATEWAYS);
    let cip = SocketAddr::new(CLUSTER_IP.parse().unwrap(), BACKEND_PORT);
    let (code, body) = http_get(&office, cip, "/").expect("the ClusterIP answers");
    assert!(
        code == 200 && ["node0", "node1"].contains(&body_of(&body).as_str()),
        "{body}"
    );

    // A Service of our own, `Local`, one endpoint on node1: address, route, name.
    let state = lab.state();
    let svc = Service::new("mission", "app")
        .local()
        .cluster_ip("100.100.0.20");
    let app = "app.mission.svc.cluster.local";
    let slice = |nodes: &[usize]| {
        nodes
            .iter()
            .fold(EndpointSlice::new("mission", "app"), |s, i| {
                s.endpoint(&format!("100.64.{i}.10"), &format!("node{i}"))
            })
    };
    state.apply(&svc);
    state.apply(&slice(&[1]));
    let ip = lab.wait_address("mission", "app");
    lab.wait_route(&ip.to_string(), &[1]);
    let resolves_to = |server: SocketAddr, want: &[&str]| {
        wait_for(T, &format!("{app} at {server} to be {want:?}"), || {
            let a = dig(&office, server, app, "A", &[]);
            if a_records(&a) == want {
                Ok(())
            } else {
                Err(a.raw)
            }
        })
    };
    let ip_text = ip.to_string();
    resolves_to(dns, &[&ip_text]);
    resolves_to(resolver, &[&ip_text]);
    assert_eq!(
        a_records(&dig(&node1, dns, app, "A", &[])),
        ["100.100.0.20"]
    );
    assert_eq!(
        lab.office_curl(&format!("http://{app}/")),
        Ok("node1".into())
    );

    // Scaling its endpoints moves the route: node1 and node2 (ECMP), then node2 alone.
    state.apply(&slice(&[1, 2]));
    lab.wait_route(&ip_text, &[1, 2]);
    state.apply(&slice(&[2]));
    lab.wait_route(&ip_text, &[2]);
    wait_for(T, &format!("{app} to be served by node2"), || {
        match lab.office_curl(&format!("http://{app}/")) {
            Ok(n) if n == "node2" => Ok(()),
            other => Err(other),
        }
    });

    // Deleting the Service withdraws its route and its name, at leafbridge-dns and (once
    // its 5 s TTL has run out) at the office's resolver.
    state.delete(&svc);
    lab.wait_route(&ip_text, &[]);
    for server in [dns, resolver] {
        wait_for(T, &format!("{app} to be NXDOMAIN at {server}"), || {
            let a = dig(&office, server, app, "A", &[]);
            if a.is_nxdomain() { Ok(()) } else { Err(a.raw) }
        });
    }
    assert!(lab.office_curl(&format!("http://{app}/")).is_err());
    // web is untouched by all that.
    assert_eq!(
        a_records(&dig(&office, resolver, WEB, "A", &[])),
        [web.to_string()]
    );
    lab.down();
}

#[test]
fn lab_with_frr_leaf() {
    for tool in ["vtysh", "zebra", "bgpd"] {
        require(tool);
    }
    let lab = Lab::up('c', &["--frr"]);
    assert!(lab.up_output.contains("frr leaf"), "{}", lab.up_output);
    let web = lab.wait_address("demo", "web");
    lab.wait_route(&web.to_string(), &[1]);
    assert_eq!(
        lab.office_curl(&format!("http://{WEB}/")),
        Ok("node1".into())
    );
    // echo (externalTrafficPolicy Cluster): every node announces it, zebra installs ECMP.
    let echo = lab.wait_address("demo", "echo");
    lab.wait_route(&echo.to_string(), &[0, 1, 2]);
    let status = lab.status();
    for n in ["192.0.2.10", "192.0.2.11", "192.0.2.12"] {
        assert!(
            status.contains(n),
            "no session with {n} in status:\n{status}"
        );
    }
    lab.down();
}

/// The body of an HTTP response.
fn body_of(response: &str) -> String {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default()
}
