//! The one test-network builder: network namespaces, veth links, bridges, addresses, and the
//! processes started in them, all removed by a guard even when the test panics.
//!
//! ```no_run
//! use leafbridge_tests::netns::Topology;
//! let topo = Topology::new("md5");            // names: lb-md5-<pid>-<n>-...
//! let leaf = topo.namespace("leaf");
//! let node = topo.namespace("node");
//! topo.link(&leaf, "eth-node", &node, "eth-leaf");
//! leaf.add_addr("eth-node", "192.0.2.1/24");
//! node.add_addr("eth-leaf", "192.0.2.2/24");
//! node.add_addr("eth-leaf", "2001:db8::2/64"); // no DAD: usable at once
//! let ping = node.run("ping", &["-c1", "-W1", "192.0.2.1"]);
//! # let _ = ping;
//! // dropping `topo` ends every process it started and deletes both namespaces
//! ```
//!
//! Harness operations panic with a clear message when they fail: in a test, a broken harness is
//! a test failure. Interface names are checked to be 4..=15 characters (`ip link add` parses very
//! short names as keywords; the kernel's limit is 15). Links are created inside the test's
//! namespaces, never in the host namespace, so tests running in parallel cannot collide.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{require, require_root};

static TOPOLOGY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long a process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// A test's network: its namespaces, its processes and its log directory. Cheap to clone (all
/// clones share one guard); the last clone dropped removes everything.
#[derive(Clone, Debug)]
pub struct Topology {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    dir: Mutex<Option<tempfile::TempDir>>,
    dir_path: PathBuf,
    namespaces: Mutex<Vec<String>>,
    processes: Mutex<Vec<Tracked>>,
    keep_dir: std::sync::atomic::AtomicBool,
    /// Persistent mode (the lab): the state file recording what was made. The guard then
    /// leaves everything running; [`teardown_persistent`] removes it.
    persistent: Option<PathBuf>,
}

#[derive(Debug)]
struct Tracked {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Topology {
    /// Starts a topology. `tag` (a few letters naming the test) goes into every name, with the
    /// process id and a per-process counter, so parallel tests never share a name.
    #[track_caller]
    pub fn new(tag: &str) -> Topology {
        require_root();
        require("ip");
        static STALE: std::sync::Once = std::sync::Once::new();
        STALE.call_once(remove_stale_namespaces);
        Topology::with_tag(tag)
    }

    /// A topology for daemons on the host's loopback only (see [`Topology::host`]): it needs
    /// neither root nor `ip`, and creates no namespace ([`Topology::namespace`] fails without
    /// root). Its guard still ends every process it started by PID and removes its directory.
    #[track_caller]
    pub fn loopback(tag: &str) -> Topology {
        Topology::with_tag(tag)
    }

    #[track_caller]
    fn with_tag(tag: &str) -> Topology {
        assert!(
            !tag.is_empty() && tag.len() <= 12 && tag.chars().all(|c| c.is_ascii_alphanumeric()),
            "topology tag must be 1..=12 ASCII letters/digits, got {tag:?}"
        );
        let n = TOPOLOGY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("lb-{tag}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()
            .expect("create per-test temp dir");
        // Daemons that drop privileges (FRR runs as `frr`) must reach their files below it.
        set_mode(dir.path(), 0o755);
        let dir_path = dir.path().to_path_buf();
        Topology {
            inner: Arc::new(Inner {
                id,
                dir: Mutex::new(Some(dir)),
                dir_path,
                namespaces: Mutex::new(Vec::new()),
                processes: Mutex::new(Vec::new()),
                keep_dir: std::env::var_os("LEAFBRIDGE_KEEP_TEST_DIRS")
                    .is_some()
                    .into(),
                persistent: None,
            }),
        }
    }

    /// A persistent, named topology (the lab): namespaces are `lbl-NAME-...` (which
    /// [`remove_stale_namespaces`] never touches), processes are started in their own session
    /// (`setsid`) so they outlive this process, files live in `dir`, and
    /// `dir/`[`PERSISTENT_STATE_FILE`] records every namespace, process (PID and start time)
    /// and outside file as it is made, so [`teardown_persistent`] removes exactly that, even
    /// after a partial start. Dropping the handle leaves everything running.
    ///
    /// Fails when `dir` already holds a state file (that topology is still up).
    pub fn persistent(name: &str, dir: &Path) -> Result<Topology, String> {
        require_root();
        require("ip");
        require("setsid");
        check_persistent_name(name)?;
        let state_file = dir.join(PERSISTENT_STATE_FILE);
        if state_file.exists() {
            return Err(format!(
                "{} exists: this topology is up already (take it down first)",
                state_file.display()
            ));
        }
        let prefix = format!("{PERSISTENT_PREFIX}{name}-");
        let taken: Vec<String> = host_exec("ip", &["netns", "list"])
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        if !taken.is_empty() {
            return Err(format!(
                "namespaces {taken:?} exist: a topology named {name:?} is up (in another \
                 directory?); take it down or choose another name"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        set_mode(dir, 0o755);
        let dir_path =
            std::fs::canonicalize(dir).map_err(|e| format!("resolve {}: {e}", dir.display()))?;
        let topo = Topology {
            inner: Arc::new(Inner {
                id: format!("{PERSISTENT_PREFIX}{name}"),
                dir: Mutex::new(None),
                dir_path,
                namespaces: Mutex::new(Vec::new()),
                processes: Mutex::new(Vec::new()),
                keep_dir: true.into(),
                persistent: Some(state_file),
            }),
        };
        topo.save_persistent_state(&PersistentState {
            id: topo.id().to_string(),
            ..PersistentState::default()
        });
        Ok(topo)
    }

    /// Whether this is a [`Topology::persistent`] one.
    pub fn is_persistent(&self) -> bool {
        self.inner.persistent.is_some()
    }

    /// Records a file outside the topology's directory (e.g. `/etc/netns/NS/resolv.conf`) for
    /// [`teardown_persistent`] to remove. A no-op for test topologies.
    pub fn record_outside_file(&self, path: &Path) {
        self.update_persistent_state(|s| s.files.push(path.to_path_buf()));
    }

    fn update_persistent_state(&self, f: impl FnOnce(&mut PersistentState)) {
        let Some(file) = &self.inner.persistent else {
            return;
        };
        let mut state = read_persistent_state(file).unwrap_or_else(|e| panic!("{e}"));
        f(&mut state);
        self.save_persistent_state(&state);
    }

    fn save_persistent_state(&self, state: &PersistentState) {
        let Some(file) = &self.inner.persistent else {
            return;
        };
        let tmp = file.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&state.to_json()).expect("state JSON");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, file))
            .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// The unique id (`lb-TAG-PID-N`) that prefixes this topology's namespace names.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The per-test directory for configs, sockets and logs. Kept (and printed) when the test
    /// panics; removed otherwise.
    pub fn dir(&self) -> &Path {
        &self.inner.dir_path
    }

    /// Creates a fresh sub-directory of [`Topology::dir`] (mode 0755) and returns its path.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.inner.dir_path.join(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        set_mode(&p, 0o755);
        p
    }

    /// Keeps the temp dir after the test even when it passes (for debugging or the lab). Setting
    /// `LEAFBRIDGE_KEEP_TEST_DIRS=1` in the environment does the same for every topology.
    pub fn keep_dir(&self) {
        self.inner.keep_dir.store(true, Ordering::Relaxed);
    }

    /// Creates the namespace `<id>-<name>` with `lo` up. IPv6 duplicate address detection is
    /// disabled in it, so addresses are usable at once.
    #[track_caller]
    pub fn namespace(&self, name: &str) -> Netns {
        let full = format!("{}-{name}", self.inner.id);
        // Recorded before it exists, so a teardown after we die here still finds it; when
        // `ip netns add` fails (the name is taken), the record is taken back first, so a
        // teardown never deletes a namespace it did not make.
        self.update_persistent_state(|s| s.namespaces.push(full.clone()));
        let added = Command::new("ip").args(["netns", "add", &full]).output();
        if !matches!(&added, Ok(o) if o.status.success()) {
            self.update_persistent_state(|s| s.namespaces.retain(|n| n != &full));
            panic!("ip netns add {full} failed: {added:?}");
        }
        self.inner.namespaces.lock().unwrap().push(full.clone());
        let ns = Netns {
            name: Some(full),
            topo: self.clone(),
        };
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    /// A handle on an existing namespace this topology did not make (e.g. one of the lab's,
    /// from a test that checks it). The guard never deletes it; processes spawned in it
    /// through the handle are this topology's and end with it.
    #[track_caller]
    pub fn attach(&self, name: &str) -> Netns {
        assert!(
            Path::new("/run/netns").join(name).exists(),
            "no network namespace {name:?} (ip netns list)"
        );
        Netns {
            name: Some(name.to_string()),
            topo: self.clone(),
        }
    }

    /// A handle on the namespace this test process runs in (for daemons on loopback ports).
    /// Never use it to add links or addresses.
    pub fn host(&self) -> Netns {
        Netns {
            name: None,
            topo: self.clone(),
        }
    }

    /// Connects `a` and `b` with a veth pair: `a_if` in `a`, `b_if` in `b`, both up.
    #[track_caller]
    pub fn link(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        check_ifname(a_if);
        check_ifname(b_if);
        let (an, bn) = (a.name_or_panic(), b.name_or_panic());
        run_checked(Command::new("ip").args([
            "-n", an, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", bn,
        ]));
        a.run("ip", &["link", "set", a_if, "up"]);
        b.run("ip", &["link", "set", b_if, "up"]);
    }

    /// Starts `cmd` (already built, e.g. by [`Netns::command`]) with stdout/stderr captured to
    /// `<dir>/<label>.stdout|stderr`, and tracks it for the guard.
    #[track_caller]
    pub fn spawn(&self, label: &str, cmd: Command) -> Process {
        self.start_tracked(label, cmd, false).0
    }

    /// Like [`Topology::spawn`], but with stdin and stdout as pipes handed to the caller (for
    /// relays and interactive tools); stderr still goes to `<dir>/logs/<label>.stderr`.
    #[track_caller]
    pub fn spawn_piped(
        &self,
        label: &str,
        cmd: Command,
    ) -> (Process, std::process::ChildStdin, std::process::ChildStdout) {
        let (process, pipes) = self.start_tracked(label, cmd, true);
        let (stdin, stdout) = pipes.expect("stdin and stdout are piped");
        (process, stdin, stdout)
    }

    /// Starts `cmd` with stderr in `<dir>/logs/<label>.stderr` and stdin/stdout either piped
    /// (returned) or null/`<label>.stdout`, and tracks it for the guard.
    #[track_caller]
    fn start_tracked(
        &self,
        label: &str,
        mut cmd: Command,
        pipe_stdio: bool,
    ) -> (
        Process,
        Option<(std::process::ChildStdin, std::process::ChildStdout)>,
    ) {
        let logs = self.subdir("logs");
        let stdout = unique_path(&logs, label, "stdout");
        let stderr = stdout.with_extension("stderr");
        if pipe_stdio {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null())
                .stdout(File::create(&stdout).expect("create stdout log"));
        }
        cmd.stderr(File::create(&stderr).expect("create stderr log"));
        if self.is_persistent() {
            // Its own session: no signal for this process's terminal or process group
            // reaches it, and it lives on after we exit. `setsid` execs in place (a spawned
            // child is not a group leader), so the PID is the program's.
            let mut wrapped = Command::new("setsid");
            wrapped.arg(cmd.get_program()).args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            if let Some(d) = cmd.get_current_dir() {
                wrapped.current_dir(d);
            }
            wrapped.stdin(Stdio::null());
            if pipe_stdio {
                wrapped.stdin(Stdio::piped()).stdout(Stdio::piped());
            } else {
                wrapped.stdout(
                    File::options()
                        .append(true)
                        .open(&stdout)
                        .expect("stdout log"),
                );
            }
            wrapped.stderr(
                File::options()
                    .append(true)
                    .open(&stderr)
                    .expect("stderr log"),
            );
            cmd = wrapped;
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} ({cmd:?}): {e}"));
        self.update_persistent_state(|s| {
            s.processes.push(PersistentProcess {
                label: label.to_string(),
                pid: child.id(),
                start_time: process_start_time(child.id()),
            })
        });
        let pipes = pipe_stdio.then(|| (child.stdin.take().unwrap(), child.stdout.take().unwrap()));
        let pid = child.id();
        self.inner.processes.lock().unwrap().push(Tracked {
            label: label.to_string(),
            child,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        });
        let process = Process {
            pid,
            label: label.to_string(),
            stdout,
            stderr,
            topo: self.clone(),
        };
        (process, pipes)
    }
}

/// Two namespaces `a` and `b` joined by one link, the common case of "our speaker and one
/// router": `a` has 192.0.2.1/24 and 2001:db8::1/64 on `eth-b`, `b` has 192.0.2.2/24 and
/// 2001:db8::2/64 on `eth-a`.
#[derive(Debug, Clone)]
pub struct Pair {
    pub topo: Topology,
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub const A_V4: &str = "192.0.2.1";
    pub const B_V4: &str = "192.0.2.2";
    pub const A_V6: &str = "2001:db8::1";
    pub const B_V6: &str = "2001:db8::2";
    pub const A_IF: &str = "eth-b";
    pub const B_IF: &str = "eth-a";

    #[track_caller]
    pub fn new(tag: &str) -> Pair {
        let topo = Topology::new(tag);
        let a = topo.namespace("a");
        let b = topo.namespace("b");
        topo.link(&a, Self::A_IF, &b, Self::B_IF);
        a.add_addr(Self::A_IF, &format!("{}/24", Self::A_V4));
        b.add_addr(Self::B_IF, &format!("{}/24", Self::B_V4));
        a.add_addr(Self::A_IF, &format!("{}/64", Self::A_V6));
        b.add_addr(Self::B_IF, &format!("{}/64", Self::B_V6));
        Pair { topo, a, b }
    }

    pub fn a_v4() -> IpAddr {
        Self::A_V4.parse().unwrap()
    }
    pub fn b_v4() -> IpAddr {
        Self::B_V4.parse().unwrap()
    }
    pub fn a_v6() -> IpAddr {
        Self::A_V6.parse().unwrap()
    }
    pub fn b_v6() -> IpAddr {
        Self::B_V6.parse().unwrap()
    }
}

/// One network namespace of a [`Topology`] (or the host namespace, from [`Topology::host`]).
#[derive(Clone, Debug)]
pub struct Netns {
    name: Option<String>,
    topo: Topology,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Netns {
    /// The namespace's name as `ip netns` knows it; `None` for the host namespace.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The topology this namespace belongs to.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    #[track_caller]
    fn name_or_panic(&self) -> &str {
        self.name
            .as_deref()
            .expect("this operation needs a test namespace, not the host namespace")
    }

    /// A `Command` that runs `program` in this namespace (`ip netns exec NAME program`, which
    /// execs in place, so the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.name {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `program args` to completion in this namespace and returns what happened.
    pub fn exec(&self, program: &str, args: &[&str]) -> ExecOutput {
        exec_to_end(self.command(program).args(args), program)
    }

    /// Runs `program args` in this namespace and returns stdout; panics with stderr on failure.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.success,
            "in netns {:?}: `{program} {}` failed ({:?}): {}{}",
            self.name,
            args.join(" "),
            out.code,
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// Starts `program args` in this namespace as a tracked background process.
    #[track_caller]
    pub fn spawn(&self, label: &str, program: &str, args: &[&str]) -> Process {
        let mut cmd = self.command(program);
        cmd.args(args);
        self.topo.spawn(label, cmd)
    }

    /// Adds `addr` (CIDR notation) to `ifname`. IPv6 addresses get `nodad`. Only documentation
    /// ranges, shared address space and loopback are allowed (see docs/testing.md).
    #[track_caller]
    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        // Never change the host's own network.
        self.name_or_panic();
        let ip: IpAddr = cidr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not an address/prefix: {cidr:?}"));
        assert!(
            is_test_address(ip),
            "{ip} is outside the test address ranges of docs/testing.md"
        );
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        self.run("ip", &args);
    }

    /// The kernel's automatic fe80:: address of `ifname` (made when the link comes up; usable
    /// at once, since [`Topology::namespace`] turns duplicate address detection off). Waits up
    /// to 5 s for it to appear.
    #[track_caller]
    pub fn link_local_addr(&self, ifname: &str) -> std::net::Ipv6Addr {
        self.name_or_panic();
        crate::support::wait_for(
            Duration::from_secs(5),
            &format!("a link-local address on {ifname}"),
            || {
                let out = self.run(
                    "ip",
                    &["-6", "-o", "addr", "show", "dev", ifname, "scope", "link"],
                );
                out.split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .and_then(|cidr| cidr.split('/').next()?.parse().ok())
                    .filter(|a: &std::net::Ipv6Addr| a.is_unicast_link_local())
                    .ok_or(out)
            },
        )
    }

    /// Sets a sysctl in this namespace (for example `net.ipv4.ip_forward`).
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        self.name_or_panic();
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        // `ip netns exec` remounts /proc/sys for the namespace; writing through `sh` keeps us
        // independent of procps' sysctl.
        self.run("sh", &["-c", &format!("echo {value} > {path}")]);
    }

    /// Turns on IPv4 and IPv6 forwarding (a router namespace).
    #[track_caller]
    pub fn enable_forwarding(&self) {
        self.sysctl("net.ipv4.ip_forward", "1");
        self.sysctl("net.ipv6.conf.all.forwarding", "1");
    }

    /// Creates a bridge `name` (up) in this namespace; attach ports with
    /// [`Netns::attach_to_bridge`].
    #[track_caller]
    pub fn add_bridge(&self, name: &str) {
        // Never change the host's own network.
        self.name_or_panic();
        check_ifname(name);
        self.run("ip", &["link", "add", name, "type", "bridge"]);
        self.run("ip", &["link", "set", name, "up"]);
    }

    /// Makes `ifname` a port of `bridge` (both in this namespace).
    #[track_caller]
    pub fn attach_to_bridge(&self, ifname: &str, bridge: &str) {
        // Never change the host's own network.
        self.name_or_panic();
        self.run("ip", &["link", "set", ifname, "master", bridge]);
    }

    /// Adds a route, e.g. `add_route("203.0.113.0/24", "192.0.2.1")`.
    #[track_caller]
    pub fn add_route(&self, prefix: &str, via: &str) {
        // Never change the host's own network.
        self.name_or_panic();
        self.run("ip", &["route", "add", prefix, "via", via]);
    }

    /// The kernel routes of this namespace (`ip route show` / `ip -6 route show`), one a line.
    pub fn routes(&self, ipv6: bool) -> Vec<String> {
        let fam = if ipv6 { "-6" } else { "-4" };
        self.run("ip", &[fam, "route", "show"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether something in this namespace listens on TCP `port` (`ss -Hltn`), e.g. to wait
    /// for a daemon's BGP listener before a peer connects.
    pub fn listens_on_tcp(&self, port: u16) -> bool {
        let out = self.exec("ss", &["-Hltn"]);
        out.stdout.lines().any(|l| {
            l.split_whitespace()
                .nth(3)
                .and_then(|local| local.rsplit(':').next())
                .is_some_and(|p| p == port.to_string())
        })
    }

    /// A kernel SNMP/netstat counter of this namespace, e.g. `TcpExtTCPMD5Failure`
    /// (`nstat -az`, absolute values; 0 when the counter is absent).
    #[track_caller]
    pub fn nstat(&self, counter: &str) -> u64 {
        require("nstat");
        // -a: absolute values (ignore the history file shared with other tests), -s: do not
        // update it, -z: show zero counters too.
        let out = self.run("nstat", &["-asz", counter]);
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(counter)).then(|| f.next()?.parse().ok())?
            })
            .unwrap_or(0)
    }
}

/// CPU time used so far by process `pid`, user + system (from /proc/PID/stat, in clock ticks
/// of `getconf CLK_TCK`, normally 10 ms); `None` if it is gone.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(
        ticks * 1_000_000 / clock_ticks_per_second(),
    ))
}

/// A process started by a [`Topology`]. Dropping the handle does not stop it (the topology's
/// guard does); call [`Process::stop`] or [`Process::kill`] to end it earlier.
#[derive(Debug, Clone)]
pub struct Process {
    pid: u32,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    topo: Topology,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether the process is still running (it has not exited and been reaped).
    pub fn is_running(&self) -> bool {
        self.with_child(|t| matches!(t.child.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    /// The exit status once it has exited, without waiting.
    pub fn try_exit_status(&self) -> Option<std::process::ExitStatus> {
        self.with_child(|t| t.child.try_wait().ok().flatten())
            .flatten()
    }

    /// Sends `signal` (a name such as `TERM`, `STOP`, `CONT`, `HUP`) if it is still running.
    /// Only our own unreaped child is signalled, so its PID cannot have been reused.
    pub fn signal(&self, signal: &str) {
        self.with_child(|t| send_signal(&mut t.child, signal));
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; returns once it has exited.
    pub fn stop(&self) {
        self.with_child(|t| terminate(std::slice::from_mut(t)));
    }

    /// SIGKILL and wait.
    pub fn kill(&self) {
        self.with_child(|t| {
            let _ = t.child.kill();
            let _ = t.child.wait();
        });
    }

    /// Peak resident set size so far (`VmHWM` from /proc, KiB); `None` once it has exited.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// A kB figure of `/proc/<pid>/status` now (`VmRSS`, `RssAnon`: private memory,
    /// `RssFile`: pages of the program's files and libraries).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// CPU time used so far, user + system; `None` once it has exited. Read it before stopping
    /// the process.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(self.pid)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn with_child<R>(&self, f: impl FnOnce(&mut Tracked) -> R) -> Option<R> {
        let mut procs = self.topo.inner.processes.lock().unwrap();
        procs.iter_mut().find(|t| t.child.id() == self.pid).map(f)
    }
}

/// Removes namespaces this harness created in test processes that no longer exist (killed by a
/// CI timeout before their guard ran), and the daemons still running in them. Names carry the
/// creating process's id (`lb-TAG-PID-N-...`), so a live test's namespaces are never touched.
pub fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = test_namespace_owner(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-KILL", p])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        eprintln!("leafbridge-tests: removed stale namespace {name} of dead process {pid}");
    }
}

/// The PID of the test process that created namespace `name` (`lb-TAG-PID-N-...`); `None`
/// for any other name, including persistent (`lbl-...`) ones.
fn test_namespace_owner(name: &str) -> Option<u32> {
    let parts: Vec<&str> = name.split('-').collect();
    if parts.len() < 5 || parts[0] != "lb" || parts[3].parse::<u32>().is_err() {
        return None;
    }
    parts[2].parse().ok()
}

/// How long a persistent topology's processes get between SIGTERM and SIGKILL: longer than
/// a test's, so a speaker's draining shutdown (withdraw, wait, Cease; 5 s by default) ends
/// by itself.
const PERSISTENT_TERM_GRACE: Duration = Duration::from_secs(8);

/// The prefix of every persistent topology's namespaces.
pub const PERSISTENT_PREFIX: &str = "lbl-";
/// The state file of a persistent topology, in its directory.
pub const PERSISTENT_STATE_FILE: &str = "topology-state.json";

/// What a persistent topology made, as recorded in its state file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistentState {
    pub id: String,
    pub namespaces: Vec<String>,
    pub processes: Vec<PersistentProcess>,
    /// Files outside the directory (e.g. per-namespace resolv.conf).
    pub files: Vec<PathBuf>,
}

/// A process of a persistent topology: its PID and its start time (field 22 of
/// /proc/PID/stat), so a PID reused by another program is never signalled.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistentProcess {
    pub label: String,
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl PersistentProcess {
    /// Whether the recorded process still runs (same PID and start time: never another
    /// program that got the PID later).
    pub fn is_running(&self) -> bool {
        is_recorded_process(self)
    }
}

impl PersistentState {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "namespaces": self.namespaces,
            "processes": self.processes.iter().map(|p| serde_json::json!({
                "label": p.label, "pid": p.pid, "startTime": p.start_time,
            })).collect::<Vec<_>>(),
            "files": self.files,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<PersistentState> {
        let strings = |k: &str| -> Option<Vec<String>> {
            v.get(k)?
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let processes = v
            .get("processes")?
            .as_array()?
            .iter()
            .map(|p| {
                Some(PersistentProcess {
                    label: p.get("label")?.as_str()?.to_string(),
                    pid: u32::try_from(p.get("pid")?.as_u64()?).ok()?,
                    start_time: p.get("startTime").and_then(serde_json::Value::as_u64),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PersistentState {
            id: v.get("id")?.as_str()?.to_string(),
            namespaces: strings("namespaces")?,
            processes,
            files: strings("files")?.into_iter().map(PathBuf::from).collect(),
        })
    }
}

/// Reads a persistent topology's state file.
pub fn read_persistent_state(file: &Path) -> Result<PersistentState, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", file.display()))?;
    PersistentState::from_json(&v)
        .ok_or_else(|| format!("{}: not a topology state", file.display()))
}

/// Persistent names: 1..=12 lower-case letters/digits (namespace names stay short).
fn check_persistent_name(name: &str) -> Result<(), String> {
    if (1..=12).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "topology name must be 1..=12 lower-case letters or digits, got {name:?}"
        ))
    }
}

/// The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `p` is still the very process that was recorded (same PID, same start time) and
/// has not exited (a zombie nobody reaped yet is not running).
fn is_recorded_process(p: &PersistentProcess) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
        .ok()
        .and_then(|s| s[s.rfind(')')? + 2..].chars().next());
    if matches!(state, None | Some('Z' | 'X')) {
        return false;
    }
    match (p.start_time, process_start_time(p.pid)) {
        (Some(want), Some(now)) => want == now,
        // Not recorded (it exited at once) or gone now: nothing of ours to end.
        _ => false,
    }
}

/// What [`teardown_persistent`] removed.
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    /// Labels and PIDs of the processes that were still running and were ended.
    pub ended: Vec<(String, u32)>,
    /// PIDs found running inside the namespaces (children of recorded processes) and ended.
    pub ended_in_namespaces: Vec<u32>,
    pub namespaces: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Removes exactly what the persistent topology in `dir` made, as its state file records:
/// its processes (by PID, only while PID and start time still match; SIGTERM, then SIGKILL
/// after 8 s), any other process still inside its namespaces, its namespaces (by name), the
/// outside files, and finally the state file. Safe after a partial start and when run twice
/// (the second time there is no state file: an error saying so).
pub fn teardown_persistent(dir: &Path) -> Result<Teardown, String> {
    let file = dir.join(PERSISTENT_STATE_FILE);
    if !file.exists() {
        return Err(format!(
            "{} does not exist: nothing recorded to take down",
            file.display()
        ));
    }
    let state = read_persistent_state(&file)?;
    let mut report = Teardown::default();
    let alive: Vec<&PersistentProcess> = state
        .processes
        .iter()
        .filter(|p| is_recorded_process(p))
        .collect();
    for p in &alive {
        signal_pid(p.pid, "CONT");
        signal_pid(p.pid, "TERM");
        report.ended.push((p.label.clone(), p.pid));
    }
    let wait_gone = |grace: Duration| {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && alive.iter().any(|p| is_recorded_process(p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_gone(PERSISTENT_TERM_GRACE);
    for p in alive.iter().filter(|p| is_recorded_process(p)) {
        signal_pid(p.pid, "KILL");
    }
    wait_gone(Duration::from_secs(2));
    let existing = host_exec("ip", &["netns", "list"]).stdout;
    let existing: Vec<&str> = existing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for ns in &state.namespaces {
        // Only names of this topology, whatever the file says.
        if !ns.starts_with(&format!("{}-", state.id)) || !ns.starts_with(PERSISTENT_PREFIX) {
            continue;
        }
        if !existing.contains(&ns.as_str()) {
            continue;
        }
        // Anything still running in our namespace was started there by us.
        for pid in host_exec("ip", &["netns", "pids", ns])
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            signal_pid(pid, "KILL");
            report.ended_in_namespaces.push(pid);
        }
        let out = host_exec("ip", &["netns", "del", ns]);
        if !out.success {
            return Err(format!("ip netns del {ns}: {}", out.stderr));
        }
        report.namespaces.push(ns.clone());
    }
    for f in &state.files {
        if std::fs::remove_file(f).is_ok() {
            report.files.push(f.clone());
        }
        if let Some(parent) = f.parent() {
            // `/etc/netns/NS/` made for the file; only removed when empty.
            let _ = std::fs::remove_dir(parent);
        }
    }
    std::fs::remove_file(&file).map_err(|e| format!("remove {}: {e}", file.display()))?;
    Ok(report)
}

fn signal_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

fn send_signal(child: &mut Child, signal: &str) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// SIGTERM to all, then wait for all together (up to [`TERM_GRACE`]), then SIGKILL the rest.
fn terminate(procs: &mut [Tracked]) {
    for t in procs.iter_mut() {
        // A stopped process cannot act on SIGTERM: continue it first.
        send_signal(&mut t.child, "CONT");
        send_signal(&mut t.child, "TERM");
    }
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline
        && procs
            .iter_mut()
            .any(|t| matches!(t.child.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in procs.iter_mut() {
        if matches!(t.child.try_wait(), Ok(None)) {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.persistent.is_some() {
            // Everything stays up until `teardown_persistent`; the `Child` handles are
            // dropped unwaited, so the processes are adopted by init when we exit.
            return;
        }
        let panicking = std::thread::panicking();
        let mut procs =
            std::mem::take(&mut *self.processes.lock().unwrap_or_else(|e| e.into_inner()));
        terminate(&mut procs);
        for ns in self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let out = Command::new("ip").args(["netns", "del", &ns]).output();
            if !matches!(&out, Ok(o) if o.status.success()) {
                eprintln!("leafbridge-tests: could not delete netns {ns}: {out:?}");
            }
        }
        let dir = self.dir.lock().unwrap_or_else(|e| e.into_inner()).take();
        if panicking || self.keep_dir.load(Ordering::Relaxed) {
            if let Some(dir) = dir {
                let path = dir.keep();
                eprintln!(
                    "leafbridge-tests: topology {} kept its files in {}",
                    self.id,
                    path.display()
                );
            }
            if panicking {
                for t in &procs {
                    for p in [&t.stdout, &t.stderr] {
                        let text = std::fs::read_to_string(p).unwrap_or_default();
                        if !text.is_empty() {
                            eprintln!(
                                "----- {} ({}), last lines:\n{}",
                                t.label,
                                p.display(),
                                tail(&text, 30)
                            );
                        }
                    }
                }
            }
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl From<Output> for ExecOutput {
    fn from(o: Output) -> Self {
        ExecOutput {
            success: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs a program in the test process's own namespace (config checks and the like).
pub(crate) fn host_exec(program: &str, args: &[&str]) -> ExecOutput {
    exec_to_end(Command::new(program).args(args), program)
}

/// Runs `cmd` (which runs `program`) with no stdin until it ends.
fn exec_to_end(cmd: &mut Command, program: &str) -> ExecOutput {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    ExecOutput::from(out)
}

#[track_caller]
fn run_checked(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Interface names: the kernel allows at most 15 bytes; `ip link add` misreads names shorter
/// than 4 characters as keywords (docs/testing.md).
#[track_caller]
fn check_ifname(name: &str) {
    assert!(
        (4..=15).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "interface name {name:?} must be 4..=15 characters of [A-Za-z0-9_-]"
    );
}

/// Documentation ranges (RFC 5737, RFC 3849), shared address space (RFC 6598) and loopback:
/// the only addresses tests may use.
pub fn is_test_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || (o[0], o[1], o[2]) == (192, 0, 2)
                || (o[0], o[1], o[2]) == (198, 51, 100)
                || (o[0], o[1], o[2]) == (203, 0, 113)
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0], s[1]) == (0x2001, 0x0db8)
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// `<dir>/<label>.<ext>`, or `<label>-2.<ext>`, ... when taken. The file is created here
/// (`create_new`), so two threads spawning the same label cannot pick the same name.
fn unique_path(dir: &Path, label: &str, ext: &str) -> PathBuf {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    for n in 1.. {
        let p = if n == 1 {
            dir.join(format!("{label}.{ext}"))
        } else {
            dir.join(format!("{label}-{n}.{ext}"))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(_) => return p,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", p.display()),
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_addresses_are_documentation_ranges_only() {
        for ok in [
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "100.64.0.1",
            "2001:db8::1",
            "::1",
            "127.0.0.1",
        ] {
            assert!(is_test_address(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "192.0.3.1",
            "100.128.0.1",
            "2001:db9::1",
            "8.8.8.8",
        ] {
            assert!(!is_test_address(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn stale_namespace_cleanup_leaves_persistent_names_alone() {
        assert_eq!(test_namespace_owner("lb-md5-4242-0-leaf"), Some(4242));
        assert_eq!(test_namespace_owner("lb-md5-4242-0-node-1"), Some(4242));
        assert_eq!(test_namespace_owner("lbl-lab-leaf"), None);
        assert_eq!(test_namespace_owner("lbl-ci1234-node0"), None);
        assert_eq!(test_namespace_owner("lb-lab-leaf"), None);
    }

    #[test]
    fn persistent_state_round_trips() {
        let s = PersistentState {
            id: "lbl-lab".into(),
            namespaces: vec!["lbl-lab-leaf".into()],
            processes: vec![PersistentProcess {
                label: "bird-leaf".into(),
                pid: 7,
                start_time: Some(99),
            }],
            files: vec![PathBuf::from("/etc/netns/lbl-lab-office/resolv.conf")],
        };
        assert_eq!(PersistentState::from_json(&s.to_json()), Some(s));
    }

    #[test]
    fn persistent_names_are_short_and_lower_case() {
        assert!(check_persistent_name("lab").is_ok());
        assert!(check_persistent_name("ci12345").is_ok());
        assert!(check_persistent_name("").is_err());
        assert!(check_persistent_name("Lab").is_err());
        assert!(check_persistent_name("a-b").is_err());
        assert!(check_persistent_name("t4194304abcd").is_ok());
        assert!(check_persistent_name("muchtoolongname").is_err());
    }

    #[test]
    fn a_reused_pid_is_not_ours() {
        let me = std::process::id();
        let mut p = PersistentProcess {
            label: "me".into(),
            pid: me,
            start_time: process_start_time(me),
        };
        assert!(is_recorded_process(&p));
        p.start_time = p.start_time.map(|t| t + 1);
        assert!(!is_recorded_process(&p));
    }

    #[test]
    fn rejects_interface_names_ip_link_misparses() {
        assert!(std::panic::catch_unwind(|| check_ifname("ma")).is_err());
        assert!(std::panic::catch_unwind(|| check_ifname("a-very-long-name-x")).is_err());
        check_ifname("eth-leaf");
    }
}
