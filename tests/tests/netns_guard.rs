//! The topology builder and its guard, proved with real namespaces.

use std::time::Duration;

use leafbridge_tests::{Topology, wait_until};

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn linked_namespaces_reach_each_other_over_ipv4_and_ipv6() {
    let topo = Topology::new("ping");
    let a = topo.namespace("a");
    let b = topo.namespace("b");
    topo.link(&a, "veth-b", &b, "veth-a");
    a.add_addr("veth-b", "192.0.2.1/24");
    b.add_addr("veth-a", "192.0.2.2/24");
    a.add_addr("veth-b", "2001:db8::1/64");
    b.add_addr("veth-a", "2001:db8::2/64");
    a.run("ping", &["-c1", "-W2", "192.0.2.2"]);
    // nodad: IPv6 works without waiting for duplicate address detection.
    a.run("ping", &["-c1", "-W2", "2001:db8::2"]);
}

#[test]
fn bridge_joins_three_namespaces() {
    let topo = Topology::new("brdg");
    let sw = topo.namespace("sw");
    sw.add_bridge("br-lan");
    let hosts: Vec<_> = (1..=3).map(|i| topo.namespace(&format!("h{i}"))).collect();
    for (i, h) in hosts.iter().enumerate() {
        let port = format!("port-h{}", i + 1);
        topo.link(&sw, &port, h, "eth-lan");
        sw.attach_to_bridge(&port, "br-lan");
        h.add_addr("eth-lan", &format!("198.51.100.{}/24", i + 1));
    }
    hosts[0].run("ping", &["-c1", "-W2", "198.51.100.3"]);
}

#[test]
fn guard_removes_namespaces_and_processes_on_panic() {
    let (id, pid, dir) = std::panic::catch_unwind(|| {
        let topo = Topology::new("panic");
        let ns = topo.namespace("x");
        let p = ns.spawn("sleeper", "sleep", &["600"]);
        // Hand the facts out through the panic payload.
        std::panic::panic_any((topo.id().to_string(), p.pid(), topo.dir().to_path_buf()));
    })
    .unwrap_err()
    .downcast::<(String, u32, std::path::PathBuf)>()
    .map(|b| *b)
    .unwrap();
    assert!(
        !netns_list().contains(&id),
        "namespace {id} survived: {}",
        netns_list()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the guard"
    );
    // A panicking test keeps its files for the post-mortem; this panic was on purpose.
    assert!(dir.join("logs/sleeper.stdout").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stop_ends_a_process_that_ignores_sigterm() {
    let topo = Topology::new("term");
    let ns = topo.namespace("x");
    let p = ns.spawn(
        "stubborn",
        "sh",
        &[
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    wait_until(Duration::from_secs(2), "sh to start", || {
        p.stdout().contains("ready")
    });
    p.stop();
    assert!(!p.is_running());
}

#[test]
fn nstat_reads_a_namespace_counter() {
    let topo = Topology::new("nstat");
    let ns = topo.namespace("x");
    // A fresh namespace has sent nothing yet; the counter exists.
    assert_eq!(ns.nstat("TcpExtTCPMD5Failure"), 0);
    ns.run("ping", &["-c2", "-i0.2", "-W1", "127.0.0.1"]);
    assert!(ns.nstat("IcmpOutEchos") >= 2);
}

#[test]
fn process_reports_cpu_time_and_peak_rss() {
    let topo = Topology::new("cpu");
    let ns = topo.namespace("x");
    let p = ns.spawn(
        "busy",
        "sh",
        &[
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; sleep 60",
        ],
    );
    wait_until(Duration::from_secs(20), "the loop to finish", || {
        p.stdout().contains("done")
    });
    let cpu = p.cpu_time().unwrap();
    assert!(cpu >= Duration::from_millis(20), "{cpu:?}");
    assert!(p.peak_rss_kib().unwrap() > 100);
    p.stop();
    assert_eq!(p.cpu_time(), None);
}

#[test]
fn stale_namespaces_of_dead_test_processes_are_removed() {
    // A namespace as a test process killed before its guard ran would leave it, with a sleeper
    // inside. PID 4194304 is above the kernel's pid_max limit, so it never exists. (Another
    // test process may clean it up first: that is the same behaviour, so both are fine.)
    let name = "lb-stale-4194304-0-x";
    let _ = std::process::Command::new("ip")
        .args(["netns", "add", name])
        .status();
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", name, "sleep", "600"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(2), "sleeper in the namespace", || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .unwrap();
        !out.stdout.is_empty() || !netns_list().contains(name)
    });
    leafbridge_tests::netns::remove_stale_namespaces();
    assert!(!netns_list().contains(name), "{}", netns_list());
    let start = std::time::Instant::now();
    while sleeper.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(2) {
            let _ = sleeper.kill();
            panic!("the stale namespace's process survived");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn host_handle_refuses_to_change_the_host_network() {
    let topo = Topology::new("hostro");
    let host = topo.host();
    assert!(std::panic::catch_unwind(|| host.add_addr("lo", "192.0.2.99/32")).is_err());
    assert!(std::panic::catch_unwind(|| host.add_bridge("br-test")).is_err());
    assert!(std::panic::catch_unwind(|| host.sysctl("net.ipv4.ip_forward", "1")).is_err());
    // Running programs there is fine.
    assert!(host.run("ip", &["-br", "link"]).contains("lo"));
}

#[test]
fn listens_on_tcp_sees_a_listener_in_the_namespace_only() {
    let topo = Topology::new("listen");
    let ns = topo.namespace("x");
    let other = topo.namespace("y");
    assert!(!ns.listens_on_tcp(1179));
    let _l = leafbridge_tests::raw::RawBgp::listen(&ns, "127.0.0.1:1179".parse().unwrap());
    assert!(ns.listens_on_tcp(1179));
    assert!(!other.listens_on_tcp(1179));
}
