//! Prerequisites and polling: a missing tool fails the test (never skips), and every wait says
//! what it waited for.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directories searched for tools besides `$PATH`: Debian puts daemons in `sbin` and FRR's in
/// `/usr/lib/frr`, and CI may run with a minimal `$PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/lib/frr"];

/// The Debian package that provides `tool`, so a failure says what to install.
pub fn debian_package(tool: &str) -> &'static str {
    match tool {
        "bird" | "birdc" => "bird2",
        "bgpd" | "vtysh" | "zebra" | "staticd" => "frr",
        "gobgpd" | "gobgp" => "gobgpd",
        "exabgp" => "exabgp",
        "unbound" | "unbound-control" => "unbound",
        "dnsmasq" => "dnsmasq-base",
        "dig" | "nslookup" => "bind9-dnsutils",
        "kdig" => "knot-dnsutils",
        "dnsperf" | "resperf" => "dnsperf",
        "tcpdump" => "tcpdump",
        "ip" | "nstat" | "ss" | "bridge" => "iproute2",
        "ping" => "iputils-ping",
        "sysctl" | "kill" | "ps" => "procps",
        "python3" => "python3",
        // On a machine where another `kubectl` package already owns /usr/bin/kubectl, keep it.
        "kubectl" => "kubernetes-client",
        _ => "(unknown package)",
    }
}

/// Finds `tool` or returns `None`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Returns the path of `tool`; panics (fails the test) naming the Debian package when it is
/// missing. Tests must never skip because a prerequisite is absent.
#[track_caller]
pub fn require(tool: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!(
            "prerequisite missing: `{tool}` not found in $PATH or {EXTRA_DIRS:?}; \
             install the Debian package `{}` (apt-get install {0}), or run .ci/run",
            debian_package(tool)
        )
    })
}

/// Panics unless the process runs as root (network namespaces need it).
#[track_caller]
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "prerequisite missing: network-namespace tests must run as root (euid is {euid})"
    );
}

/// Polls `condition` every 20 ms until it is true; panics after `timeout` with `what`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(timeout, what, || {
        if condition() {
            Ok(())
        } else {
            Err("condition false")
        }
    })
}

/// Polls `probe` every 20 ms until it returns `Ok`, and returns that value. After `timeout` it
/// panics with `what` and the last `Err` (for example the last RIB seen), which usually explains
/// the failure better than "timed out".
#[track_caller]
pub fn wait_for<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(e) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {e:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ip_and_names_package_of_missing_tool() {
        assert!(find_tool("sh").is_some());
        let err = std::panic::catch_unwind(|| require("no-such-tool-lb")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("no-such-tool-lb"), "{msg}");
        assert_eq!(debian_package("bird"), "bird2");
    }

    #[test]
    fn wait_for_reports_last_state() {
        let err = std::panic::catch_unwind(|| {
            wait_for(Duration::from_millis(50), "the answer", || {
                Err::<(), _>("still 41")
            })
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("the answer") && msg.contains("still 41"),
            "{msg}"
        );
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(1), "n", || {
                n += 1;
                if n > 2 { Ok(n) } else { Err(n) }
            }),
            3
        );
    }
}
