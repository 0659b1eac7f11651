//! The lab: the whole of leafbridge on one machine, in network namespaces that stay up until
//! `down`. Built from the same pieces as the end-to-end tests: a [`Topology::persistent`]
//! fabric, the [`Cluster`] (leaf router with kernel routes and ECMP, state directory with the
//! base objects, controller, one speaker per node) and the runners; plus leafbridge-dns, an
//! office resolver (unbound forwarding `cluster.local` to leafbridge-dns), a small HTTP
//! backend process per node standing in for a pod, and the example Services of
//! `tests/lab-examples/state/`.
//!
//! ```text
//!   office 198.51.100.2 (resolv.conf -> leafbridge-dns; unbound on 198.51.100.2:53)
//!     |
//!   leaf 198.51.100.1 | 192.0.2.1   BIRD (or FRR): one passive session per node,
//!     |                             routes into the kernel, ECMP
//!   node0 192.0.2.10  node1 192.0.2.11  node2 192.0.2.12
//!     speaker each; controller and leafbridge-dns (192.0.2.10:53) on node0;
//!     HTTP backend on :80 each; pod IP 100.64.i.10; ClusterIPs on the gateways node0, node1
//! ```
//!
//! kube-proxy is not there. Its part is stood in for on every node by a `local` route for the
//! LoadBalancer pools (`ip route add local 203.0.113.0/24 dev lo`: every pool address is
//! local, so whichever node the leaf sends a packet to answers it), and on the gateway nodes
//! by a `local` route for the service CIDR (a listener on the ClusterIP in the gateway's
//! namespace). The pod IP is an address on the node's `lo`. One backend process per node
//! listens on every address, port 80.
//!
//! Everything `up` makes is recorded as it is made (namespaces, PIDs, files outside the
//! directory) in the lab directory; `down` removes exactly that, also after a failed `up`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{self, Cluster, ClusterOptions, LeafKind};
use crate::dns::{Unbound, UnboundConfig};
use crate::fabric::Fabric;
use crate::manifests::{StateDir, ingress_of, parse_yaml_documents};
use crate::netns::{Teardown, Topology, read_persistent_state, teardown_persistent};
use crate::programs::DnsProxy;
use crate::support::{find_tool, wait_for};

/// The lab's facts file, in the lab directory (written once `up` has finished).
pub const LAB_FILE: &str = "lab.json";
/// Written into the lab directory when `up` creates it: only a directory holding it is ever
/// emptied (by the next `up`) or removed (by `down`).
pub const MARKER_FILE: &str = ".leafbridge-lab";
/// Nodes in the lab.
pub const NODES: usize = 3;
/// Gateway nodes for the service CIDR.
pub const GATEWAYS: [usize; 2] = [0, 1];
/// leafbridge-dns listens on node0's address, port 53: office clients reach it through the
/// leaf.
pub const DNS_ADDR: &str = "192.0.2.10:53";
/// The office resolver (unbound, forwarding `cluster.local` to leafbridge-dns).
pub const OFFICE_RESOLVER: &str = "198.51.100.2:53";
/// leafbridge-dns's /metrics, /healthz, /readyz inside node0's namespace.
pub const DNS_OPS: &str = "127.0.0.1:9153";

/// The example objects written into the state directory at `up` (also in the repository as
/// `tests/lab-examples/state/`).
pub const EXAMPLE_STATE: &[(&str, &str)] = &[
    (
        "demo-web.yaml",
        include_str!("../lab-examples/state/demo-web.yaml"),
    ),
    (
        "demo-echo.yaml",
        include_str!("../lab-examples/state/demo-echo.yaml"),
    ),
];
/// The Service the "what to try" steps add (`tests/lab-examples/try/shop.yaml`).
pub const TRY_SHOP: &str = include_str!("../lab-examples/try/shop.yaml");

/// Debian packages `up` needs, by the program it looks for.
pub const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("setsid", "util-linux"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    ("dig", "bind9-dnsutils"),
    ("unbound", "unbound"),
    ("curl", "curl"),
];
/// More for `--frr`.
pub const FRR_PACKAGES: &[(&str, &str)] = &[("vtysh", "frr"), ("zebra", "frr")];

/// How to bring the lab up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Short name (`lab`): namespaces are `lbl-NAME-office`, `lbl-NAME-leaf`, `lbl-NAME-node0`...
    pub name: String,
    /// The lab directory: state directory, configs, logs, the record of what was made.
    pub dir: PathBuf,
    /// Where the three binaries are. `None`: build them with `cargo build --release`.
    pub bin_dir: Option<PathBuf>,
    pub leaf: LeafKind,
    /// Install missing Debian packages with apt-get (otherwise: fail naming them).
    pub install_packages: bool,
}

/// What is running, as `up` recorded it in `lab.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabInfo {
    pub name: String,
    pub dir: PathBuf,
    pub office: String,
    pub leaf: String,
    pub nodes: Vec<String>,
    pub leaf_kind: String,
    /// `birdc -s SOCK` or `vtysh --vty_socket DIR` arguments that reach the leaf's router.
    pub router_cli: Vec<String>,
}

impl LabInfo {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "dir": self.dir, "office": self.office, "leaf": self.leaf,
            "nodes": self.nodes, "leafKind": self.leaf_kind, "routerCli": self.router_cli,
        })
    }

    fn from_json(v: &Value) -> Option<LabInfo> {
        let s = |k: &str| Some(v.get(k)?.as_str()?.to_string());
        let list = |k: &str| -> Option<Vec<String>> {
            v.get(k)?
                .as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        Some(LabInfo {
            name: s("name")?,
            dir: PathBuf::from(s("dir")?),
            office: s("office")?,
            leaf: s("leaf")?,
            nodes: list("nodes")?,
            leaf_kind: s("leafKind")?,
            router_cli: list("routerCli")?,
        })
    }

    /// Reads `DIR/lab.json`.
    pub fn read(dir: &Path) -> Result<LabInfo, String> {
        let p = dir.join(LAB_FILE);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| format!("read {}: {e} (is the lab up with this --dir?)", p.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", p.display()))?;
        LabInfo::from_json(&v).ok_or_else(|| format!("{}: not a lab file", p.display()))
    }

    /// The "what to try" steps, in order: what they show and the exact command.
    pub fn what_to_try(&self) -> Vec<TryStep> {
        let office = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &self.office];
            v.extend_from_slice(args);
            v.into_iter().map(str::to_string).collect::<Vec<_>>()
        };
        let node0 = &self.nodes[0];
        let shop_src = self.dir.join("try/shop.yaml").display().to_string();
        let shop_dst = self.state_dir().join("shop.yaml").display().to_string();
        vec![
            TryStep::new(
                "resolve web's name from the office: its LoadBalancer address (office view)",
                office(&["dig", "+short", "web.demo.svc.cluster.local"]),
            ),
            TryStep::new(
                "fetch it: through the leaf to node1, the one node with a web endpoint",
                office(&["curl", "-s", "http://web.demo.svc.cluster.local/"]),
            ),
            TryStep::new(
                "the same name from inside the cluster: the ClusterIP (cluster view)",
                ["ip", "netns", "exec", node0, "dig", "+short", "@192.0.2.10"]
                    .into_iter()
                    .chain(["web.demo.svc.cluster.local"])
                    .map(str::to_string)
                    .collect(),
            ),
            TryStep::new(
                "the office's own resolver (unbound forwarding cluster.local) answers the same",
                office(&[
                    "dig",
                    "+short",
                    "@198.51.100.2",
                    "web.demo.svc.cluster.local",
                ]),
            ),
            TryStep::new(
                "a pod IP, through node2's announced pod CIDR",
                office(&["curl", "-s", "http://100.64.2.10/"]),
            ),
            TryStep::new(
                "the ClusterIP, through the service CIDR the gateways node0 and node1 announce",
                office(&["curl", "-s", "http://100.100.0.10/"]),
            ),
            TryStep::new(
                "the leaf's kernel routes: LoadBalancer /32s, pod CIDRs, the service CIDR (ECMP)",
                ["ip", "-n", &self.leaf, "route"]
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
            TryStep::new(
                "add a Service: write its YAML into the state directory",
                vec!["cp".into(), shop_src, shop_dst],
            ),
            TryStep::new(
                "a second later it has an address, a route at the leaf and a name",
                office(&["dig", "+short", "shop.demo.svc.cluster.local"]),
            ),
            TryStep::new(
                "and answers",
                office(&["curl", "-s", "http://shop.demo.svc.cluster.local/"]),
            ),
        ]
    }
}

/// One "what to try" step.
#[derive(Debug, Clone, PartialEq)]
pub struct TryStep {
    pub explain: String,
    pub argv: Vec<String>,
}

impl TryStep {
    fn new(explain: &str, argv: Vec<String>) -> TryStep {
        TryStep {
            explain: explain.to_string(),
            argv,
        }
    }

    /// The command as it is printed (copy-pasteable).
    pub fn shell(&self) -> String {
        self.argv.join(" ")
    }
}

/// The lab's namespace names for `name` (office, leaf, nodes).
fn namespace_names(name: &str) -> (String, String, Vec<String>) {
    let id = format!("{}{name}", crate::netns::PERSISTENT_PREFIX);
    (
        format!("{id}-office"),
        format!("{id}-leaf"),
        (0..NODES).map(|i| format!("{id}-node{i}")).collect(),
    )
}

/// The Debian packages among `wanted` whose program is not on PATH (sorted, no duplicates).
pub fn missing_packages(wanted: &[(&str, &str)], has: impl Fn(&str) -> bool) -> Vec<String> {
    let mut pkgs: Vec<String> = wanted
        .iter()
        .filter(|(tool, _)| !has(tool))
        .map(|(_, p)| p.to_string())
        .collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// Installs missing packages (`apt-get update`, `apt-get install -y`), or names them.
pub fn ensure_packages(leaf: LeafKind, install: bool) -> Result<(), String> {
    let mut wanted = PACKAGES.to_vec();
    if leaf == LeafKind::Frr {
        wanted.extend_from_slice(FRR_PACKAGES);
    }
    let missing = missing_packages(&wanted, |t| find_tool(t).is_some());
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        return Err(format!(
            "missing Debian packages: {} (apt-get install -y {0})",
            missing.join(" ")
        ));
    }
    eprintln!("lab: installing {}", missing.join(" "));
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !ok(Command::new("apt-get").arg("update")) {
        return Err("apt-get update failed".into());
    }
    if !ok(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    {
        return Err(format!("apt-get install {} failed", missing.join(" ")));
    }
    Ok(())
}

/// Whether this process runs as root (effective UID 0, from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// The workspace this lab binary was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `cargo build --release` of the three programs; returns the directory holding them.
pub fn build_release() -> Result<PathBuf, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("lab: cargo build --release (the three programs)");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release"])
        .args(["--bin", "leafbridge-controller"])
        .args(["--bin", "leafbridge-speaker"])
        .args(["--bin", "leafbridge-dns"])
        .status()
        .map_err(|e| format!("run cargo: {e} (install Rust: cargo is needed to build)"))?;
    if !status.success() {
        return Err("cargo build --release failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release"))
}

/// The leafbridge-dns configuration of the lab: office clients get LoadBalancer addresses,
/// nodes and pods get ClusterIPs; anything else is refused.
pub fn dns_config() -> String {
    format!(
        r#"listen: ["{DNS_ADDR}"]
ops_listen: "{DNS_OPS}"
threads: 1
allow_clients: ["198.51.100.0/24", "192.0.2.0/24", "100.64.0.0/16", "127.0.0.0/8"]
cluster:
  zone: cluster.local
  service_cidrs: ["{svc}"]
  pod_cidrs: ["100.64.0.0/16"]
  ttl: 5
views:
  - name: office
    sources: ["198.51.100.0/24"]
    service_address: load_balancer_ip
    forward: false
  - name: cluster
    sources: ["192.0.2.0/24", "100.64.0.0/16", "127.0.0.0/8"]
    service_address: cluster_ip
    forward: false
"#,
        svc = cluster::SERVICE_CIDR
    )
}

/// Brings the lab up and prints what runs and what to try. On any failure, everything made
/// so far is taken down again and the error returned.
pub fn up(opts: &UpOptions) -> Result<LabInfo, String> {
    if !is_root() {
        return Err("up needs root (network namespaces, package installs)".into());
    }
    ensure_packages(opts.leaf, opts.install_packages)?;
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => build_release()?,
    };
    let bin = |name: &str| -> Result<PathBuf, String> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} missing (build it, or fix --bin-dir)",
                p.display()
            ))
        }
    };
    let (controller, speaker, dns) = (
        bin("leafbridge-controller")?,
        bin("leafbridge-speaker")?,
        bin("leafbridge-dns")?,
    );
    let lab_exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    prepare_dir(&opts.dir)?;
    let topo = Topology::persistent(&opts.name, &opts.dir)?;
    let dir = topo.dir().to_path_buf();
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(opts, &topo, &controller, &speaker, &dns, &lab_exe)
    }));
    match built {
        Ok(info) => {
            let text = serde_json::to_vec_pretty(&info.to_json()).expect("lab JSON");
            std::fs::write(dir.join(LAB_FILE), text)
                .map_err(|e| format!("write {LAB_FILE}: {e}"))?;
            Ok(info)
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            eprintln!(
                "lab: up failed; logs are in {}; taking down what was made",
                dir.join("logs").display()
            );
            if let Err(e) = teardown_persistent(&dir) {
                eprintln!("lab: teardown after the failure: {e}");
            }
            Err(format!("lab up failed: {msg}"))
        }
    }
}

/// What `up` may do with the lab directory it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirUse {
    /// Absent or empty: make it.
    Create,
    /// A lab directory whose lab is down (files of the last run): empty it, then use it.
    Reuse,
}

/// Decides whether `up` may use a directory, from what is in it: the names of its entries
/// (`None`: it does not exist). A lab that is up, or a directory that is not the lab's, is a
/// "no" with the reason.
pub fn dir_use(entries: Option<&[String]>) -> Result<DirUse, String> {
    let Some(entries) = entries else {
        return Ok(DirUse::Create);
    };
    if entries.is_empty() {
        return Ok(DirUse::Create);
    }
    if entries
        .iter()
        .any(|e| e == crate::netns::PERSISTENT_STATE_FILE)
    {
        return Err("a lab is up in it (take it down first, or choose another --dir)".into());
    }
    if !entries.iter().any(|e| e == MARKER_FILE) {
        return Err(format!(
            "it holds files and no {MARKER_FILE}: not a lab directory, so it is left alone \
             (choose another --dir)"
        ));
    }
    Ok(DirUse::Reuse)
}

/// Makes the lab directory ready for `up` (see [`dir_use`]) and marks it as the lab's.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    let entries: Option<Vec<String>> = std::fs::read_dir(dir).ok().map(|rd| {
        rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect()
    });
    let why = |e: String| format!("lab directory {}: {e}", dir.display());
    if dir_use(entries.as_deref()).map_err(why)? == DirUse::Reuse {
        std::fs::remove_dir_all(dir).map_err(|e| why(format!("emptying it: {e}")))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| why(format!("create: {e}")))?;
    std::fs::write(
        dir.join(MARKER_FILE),
        "made by leafbridge-lab up; `down` removes this directory\n",
    )
    .map_err(|e| why(format!("write {MARKER_FILE}: {e}")))
}

#[track_caller]
fn build(
    opts: &UpOptions,
    topo: &Topology,
    controller: &Path,
    speaker: &Path,
    dns: &Path,
    lab_exe: &Path,
) -> LabInfo {
    let fabric = Fabric::on(topo.clone(), NODES);
    let mut options = ClusterOptions::new(NODES);
    options.leaf = opts.leaf;
    options.gateways = GATEWAYS.to_vec();
    options.thread_backends = false;
    let c = Cluster::start_on(fabric, speaker, controller, options);

    // kube-proxy's part (see the module documentation).
    for (i, ns) in c.fabric.nodes.iter().enumerate() {
        for pool in cluster::POOL_RANGES {
            ns.run("ip", &["route", "add", "local", pool, "dev", "lo"]);
        }
        if GATEWAYS.contains(&i) {
            ns.run(
                "ip",
                &["route", "add", "local", cluster::SERVICE_CIDR, "dev", "lo"],
            );
        }
        let mut cmd = ns.command(lab_exe);
        cmd.args(["backend", "--port", &cluster::BACKEND_PORT.to_string()])
            .args(["--reply", &Cluster::node_name(i)]);
        topo.spawn(&format!("backend-node{i}"), cmd);
    }

    // The example Services, and the one the "what to try" steps add.
    for (file, text) in EXAMPLE_STATE {
        write_file(&c.state.root().join(file), text);
    }
    write_file(&topo.subdir("try").join("shop.yaml"), TRY_SHOP);

    // leafbridge-dns on node0, reached by the office through the leaf.
    let dns_conf = topo.dir().join("dns.yaml");
    write_file(&dns_conf, &dns_config());
    let node0 = &c.fabric.nodes[0];
    let proxy = DnsProxy::start(
        node0,
        dns,
        &dns_conf,
        c.state.root(),
        DNS_OPS.parse().unwrap(),
        &[],
    );
    proxy.wait_ready(Duration::from_secs(60));

    // The office: its resolver is leafbridge-dns (ip netns exec bind-mounts this file over
    // /etc/resolv.conf), and unbound stands in for the office's own resolver.
    let office_ns = c
        .fabric
        .office
        .name()
        .expect("office namespace")
        .to_string();
    let etc = PathBuf::from("/etc/netns").join(&office_ns);
    let resolv = etc.join("resolv.conf");
    topo.record_outside_file(&resolv);
    std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("mkdir {}: {e}", etc.display()));
    let dns_ip = DNS_ADDR.split(':').next().unwrap();
    write_file(
        &resolv,
        &format!("nameserver {dns_ip}\noptions timeout:2\n"),
    );
    let resolver: SocketAddr = OFFICE_RESOLVER.parse().unwrap();
    let mut uc = UnboundConfig::new();
    uc.listen = resolver.ip();
    uc.port = resolver.port();
    uc.forward_zone("cluster.local", &[DNS_ADDR.parse().unwrap()]);
    Unbound::start(&c.fabric.office, "office", &uc);

    // Up means working: sessions, web's address, its route and its name.
    c.wait_established(Duration::from_secs(90));
    let web = c.wait(
        Duration::from_secs(60),
        "an address in the status of Service demo/web",
        || {
            let ips = service_ingress(c.state.root(), "demo", "web");
            if ips.is_empty() {
                Err("none yet")
            } else {
                Ok(ips)
            }
        },
    );
    let web_v4 = web
        .iter()
        .find(|ip| ip.is_ipv4())
        .copied()
        .expect("web has an IPv4 address");
    c.wait_kernel_route(&format!("{web_v4}/32"), &[1], Duration::from_secs(60));
    wait_for(
        Duration::from_secs(30),
        "web.demo.svc.cluster.local to resolve from the office",
        || {
            let a = crate::dns::dig(
                &c.fabric.office,
                DNS_ADDR.parse().unwrap(),
                "web.demo.svc.cluster.local",
                "A",
                &[],
            );
            if a.rdata("A").contains(&web_v4.to_string()) {
                Ok(())
            } else {
                Err(a.raw)
            }
        },
    );

    let router_cli = match &c.leaf {
        cluster::Leaf::Bird(b) => vec![
            "birdc".to_string(),
            "-s".to_string(),
            b.socket_path().display().to_string(),
        ],
        cluster::Leaf::Frr(f) => vec![
            "vtysh".to_string(),
            "--vty_socket".to_string(),
            f.vty_dir().display().to_string(),
        ],
    };
    LabInfo {
        name: opts.name.clone(),
        dir: topo.dir().to_path_buf(),
        office: office_ns,
        leaf: c.fabric.leaf.name().unwrap().to_string(),
        nodes: c
            .fabric
            .nodes
            .iter()
            .map(|n| n.name().unwrap().to_string())
            .collect(),
        leaf_kind: match opts.leaf {
            LeafKind::Bird => "bird".into(),
            LeafKind::Frr => "frr".into(),
        },
        router_cli,
    }
}

#[track_caller]
fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// What `up` prints: what runs and what to try.
pub fn summary(info: &LabInfo, lab_cmd: &str) -> String {
    let mut s = String::new();
    let dir = info.dir.display();
    s.push_str(&format!(
        "leafbridge lab `{}` is up (files in {dir}).\n\nRunning:\n",
        info.name
    ));
    s.push_str(&format!(
        "  {:<18} office client; resolver leafbridge-dns ({DNS_ADDR}); unbound on {OFFICE_RESOLVER}\n",
        info.office
    ));
    s.push_str(&format!(
        "  {:<18} {} leaf: a passive BGP session per node, routes into the kernel, ECMP\n",
        info.leaf, info.leaf_kind
    ));
    for (i, n) in info.nodes.iter().enumerate() {
        let mut what = vec![format!(
            "leafbridge-speaker, backend :80, pod IP {}",
            Cluster::pod_ip(i)
        )];
        if i == 0 {
            what.push("leafbridge-controller, leafbridge-dns".into());
        }
        if GATEWAYS.contains(&i) {
            what.push("service-CIDR gateway".into());
        }
        s.push_str(&format!("  {n:<18} {}\n", what.join("; ")));
    }
    s.push_str(&format!(
        "  state directory    {}\n\nWhat to try:\n",
        info.state_dir().display()
    ));
    for step in info.what_to_try() {
        s.push_str(&format!("  # {}\n  {}\n", step.explain, step.shell()));
    }
    s.push_str(&format!(
        "\nSessions, routes, allocations:  {lab_cmd} status --dir {dir}\nTear it all down:               {lab_cmd} down --dir {dir}\n"
    ));
    s
}

/// `status`: the leaf's sessions, its kernel routes, every Service's address.
pub fn status(dir: &Path) -> Result<String, String> {
    if !is_root() {
        return Err("status needs root (it reads the lab's namespaces)".into());
    }
    let info = LabInfo::read(dir)?;
    let mut s = String::new();
    let run = |argv: &[String]| -> String {
        match Command::new(&argv[0]).args(&argv[1..]).output() {
            Ok(o) => {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            }
            Err(e) => format!("{}: {e}\n", argv[0]),
        }
    };
    let mut cli = info.router_cli.clone();
    if info.leaf_kind == "frr" {
        cli.extend(["-c".into(), "show bgp summary".into()]);
    } else {
        cli.extend(["show".into(), "protocols".into()]);
    }
    s.push_str(&format!(
        "== BGP sessions at the leaf ({})\n",
        cli.join(" ")
    ));
    s.push_str(&run(&cli));
    let routes: Vec<String> = ["ip", "-n", &info.leaf, "route"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    s.push_str(&format!("\n== Leaf kernel routes ({})\n", routes.join(" ")));
    s.push_str(&run(&routes));
    s.push_str("\n== Processes (started by up; ended by down)\n");
    let recorded = read_persistent_state(&dir.join(crate::netns::PERSISTENT_STATE_FILE))?;
    for p in &recorded.processes {
        let state = if p.is_running() { "running" } else { "EXITED" };
        s.push_str(&format!("  {:<18} pid {:<8} {state}\n", p.label, p.pid));
    }
    s.push_str("\n== Services (status.loadBalancer.ingress, written by leafbridge-controller)\n");
    for svc in services(&info.state_dir()) {
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = svc["metadata"]["name"].as_str().unwrap_or("?");
        let etp = svc["spec"]["externalTrafficPolicy"]
            .as_str()
            .unwrap_or("Cluster");
        let cip = svc["spec"]["clusterIP"].as_str().unwrap_or("-");
        let ips: Vec<String> = ingress_of(&svc).iter().map(IpAddr::to_string).collect();
        let ips = if ips.is_empty() {
            "<pending>".to_string()
        } else {
            ips.join(",")
        };
        s.push_str(&format!(
            "  {ns}/{name:<12} {ips:<16} clusterIP {cip:<14} externalTrafficPolicy {etp}\n"
        ));
    }
    Ok(s)
}

/// The addresses in the status of Service `namespace/name`, wherever in the state directory
/// its file is.
pub fn service_ingress(root: &Path, namespace: &str, name: &str) -> Vec<IpAddr> {
    services(root)
        .iter()
        .find(|s| s["metadata"]["namespace"] == namespace && s["metadata"]["name"] == name)
        .map(ingress_of)
        .unwrap_or_default()
}

/// Every Service document in the state directory (any file, any depth).
pub fn services(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.extend(
                    parse_yaml_documents(&text)
                        .into_iter()
                        .filter(|d| d["kind"] == "Service"),
                );
            }
        }
    }
    out
}

/// `down`: removes exactly what `up` made (see [`teardown_persistent`]): processes by PID,
/// namespaces, files outside the directory, and then the lab directory itself (only when it
/// holds [`MARKER_FILE`]) unless `keep_files` (to read the logs afterwards).
pub fn down(dir: &Path, keep_files: bool) -> Result<Teardown, String> {
    if !is_root() {
        return Err("down needs root (it ends root's processes and deletes namespaces)".into());
    }
    let t = teardown_persistent(dir)?;
    let _ = std::fs::remove_file(dir.join(LAB_FILE));
    if !keep_files && dir.join(MARKER_FILE).is_file() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    Ok(t)
}

/// The lab's namespaces that exist now (for checks that `down` left nothing).
pub fn existing_namespaces(name: &str) -> Vec<String> {
    let (office, leaf, nodes) = namespace_names(name);
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ours: Vec<String> = [office, leaf].into_iter().chain(nodes).collect();
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours.iter().any(|o| o == n))
        .map(str::to_string)
        .collect()
}

/// The backend standing in for a pod: HTTP/1.1 on `[::]:port` (IPv4 too), answering every
/// request with `reply` and a newline.
pub fn serve_backend(port: u16, reply: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(("::", port))?;
    let body = format!("{reply}\n");
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            // Read the request head (whatever it asks, the answer is the same).
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65536 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    Ok(())
}

/// The example Service objects parse, and name what the "what to try" steps expect.
pub fn example_documents() -> Vec<Value> {
    EXAMPLE_STATE
        .iter()
        .map(|(_, t)| *t)
        .chain([TRY_SHOP])
        .flat_map(parse_yaml_documents)
        .collect()
}

/// The lab's state directory, for writing objects into it (tests).
pub fn state_dir_of(info: &LabInfo) -> StateDir {
    StateDir::new(info.state_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_the_packages_whose_programs_are_missing() {
        let have = ["ip", "setsid", "bird", "dig"];
        let missing = missing_packages(PACKAGES, |t| have.contains(&t));
        assert_eq!(missing, vec!["bird2", "curl", "unbound"]);
        assert!(missing_packages(PACKAGES, |_| true).is_empty());
    }

    #[test]
    fn uses_only_an_empty_or_its_own_directory() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(dir_use(None), Ok(DirUse::Create));
        assert_eq!(dir_use(Some(&[])), Ok(DirUse::Create));
        assert_eq!(
            dir_use(Some(&names(&[MARKER_FILE, "logs", "state"]))),
            Ok(DirUse::Reuse)
        );
        let up = dir_use(Some(&names(&[MARKER_FILE, "topology-state.json"]))).unwrap_err();
        assert!(up.contains("is up"), "{up}");
        let foreign = dir_use(Some(&names(&["notes.txt"]))).unwrap_err();
        assert!(foreign.contains("not a lab directory"), "{foreign}");
    }

    #[test]
    fn lab_file_round_trips() {
        let (office, leaf, nodes) = namespace_names("lab");
        let info = LabInfo {
            name: "lab".into(),
            dir: "/tmp/lab".into(),
            office,
            leaf,
            nodes,
            leaf_kind: "bird".into(),
            router_cli: vec![
                "birdc".into(),
                "-s".into(),
                "/tmp/lab/bird-leaf/bird.ctl".into(),
            ],
        };
        assert_eq!(LabInfo::from_json(&info.to_json()), Some(info.clone()));
        assert_eq!(info.nodes[2], "lbl-lab-node2");
        // Every step is a command runnable as printed.
        for step in info.what_to_try() {
            assert!(!step.argv.is_empty() && !step.shell().contains('\n'));
        }
    }

    #[test]
    fn example_services_are_ours_with_fixed_cluster_ips() {
        let docs = example_documents();
        let svcs: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
        assert_eq!(svcs.len(), 3);
        for s in &svcs {
            assert_eq!(s["spec"]["type"], "LoadBalancer");
            assert_eq!(s["spec"]["loadBalancerClass"], "leafbridge.io/lb");
            let cip: IpAddr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(cip.to_string().starts_with("100.100.0."), "{cip}");
        }
        let web = svcs
            .iter()
            .find(|s| s["metadata"]["name"] == "web")
            .unwrap();
        assert_eq!(web["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(web["spec"]["clusterIP"], cluster::CLUSTER_IP);
    }
}
