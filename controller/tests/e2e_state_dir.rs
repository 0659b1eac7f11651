//! End to end on the state-directory backend: the real `leafbridge-controller` binary allocates
//! for Services written as YAML files, survives restarts with every address unchanged, and a
//! standby instance takes over when the active one dies.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leafbridge_api::state::dir::{EVENTS_FILE, list_manifest_files, parse_documents};

/// Kills the controller by PID when dropped, even when the test panics.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16, log: &str) -> Proc {
    let log = std::fs::File::create(dir.parent().unwrap().join(log)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_leafbridge-controller"))
        .args([
            "--state-dir",
            dir.to_str().unwrap(),
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start leafbridge-controller");
    Proc(child)
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some((out.get(9..12)?.parse().ok()?, out))
}

fn svc(name: &str, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n{extra_meta}spec:\n  type: LoadBalancer\n  loadBalancerClass: leafbridge.io/lb\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n{extra_spec}---\n"
    )
}

/// Service name -> ingress IPs, read from every manifest in the directory.
fn addresses(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for f in list_manifest_files(dir).unwrap() {
        let Ok(docs) = parse_documents(&std::fs::read(&f).unwrap()) else {
            continue;
        };
        for d in docs.iter().filter(|d| d["kind"] == "Service") {
            let ips: Vec<String> = d["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(d["metadata"]["name"].as_str().unwrap().to_owned(), ips);
        }
    }
    out
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.parent().unwrap().join(name)).unwrap_or_default()
}

#[test]
fn allocates_for_yaml_services_and_keeps_every_address_across_restarts_and_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(dir.join("pools")).unwrap();
    std::fs::write(
        dir.join("pools/office.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: office}\nspec:\n  addresses: [203.0.113.0/28, \"2001:db8:5::10-2001:db8:5::1f\"]\n  avoidBuggyIPs: true\n",
    )
    .unwrap();
    let mut services = String::new();
    services += &svc("web", "", "");
    services += &svc(
        "api",
        "",
        "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
    );
    services += &svc(
        "pinned",
        "  annotations: {leafbridge.io/load-balancer-ips: 203.0.113.9}\n",
        "",
    );
    services += &svc(
        "dns-tcp",
        "  annotations: {leafbridge.io/allow-shared-ip: dns}\n",
        "",
    );
    services += &svc(
        "dns-udp",
        "  annotations: {leafbridge.io/allow-shared-ip: dns}\n",
        "",
    )
    .replace("  - port: 80\n", "  - port: 53\n    protocol: UDP\n");
    services += &svc(
        "stray",
        "  annotations: {leafbridge.io/load-balancer-ips: 198.51.100.1}\n",
        "",
    );
    services += "apiVersion: v1\nkind: Service\nmetadata: {name: foreign, namespace: shop}\nspec: {type: LoadBalancer, loadBalancerClass: other.io/lb}\n";
    std::fs::write(dir.join("services.yaml"), services).unwrap();

    let port = free_port();
    let mut a = start(&dir, port, "a.log");
    let expected = ["api", "dns-tcp", "dns-udp", "pinned", "web"];
    wait_for("first allocations", Duration::from_secs(30), || {
        let addrs = addresses(&dir);
        expected
            .iter()
            .all(|n| addrs.get(*n).is_some_and(|v| !v.is_empty()))
    });
    let first = addresses(&dir);
    assert!(
        first["foreign"].is_empty(),
        "a Service of another class was touched"
    );
    assert_eq!(first["pinned"], ["203.0.113.9"]);
    assert_eq!(
        first["api"].len(),
        2,
        "RequireDualStack gets both families: {:?}",
        first["api"]
    );
    assert!(
        first["api"][1].starts_with("2001:db8:5::"),
        "{:?}",
        first["api"]
    );
    assert_eq!(
        first["dns-tcp"], first["dns-udp"],
        "sharing key with distinct ports shares"
    );
    assert!(
        !first.values().flatten().any(|ip| ip == "203.0.113.0"),
        "avoidBuggyIPs skips .0"
    );
    let v4: Vec<&String> = ["web", "api", "dns-tcp", "pinned"]
        .iter()
        .map(|n| &first[*n][0])
        .collect();
    let unique: std::collections::BTreeSet<_> = v4.iter().collect();
    assert_eq!(
        unique.len(),
        v4.len(),
        "an address was given twice: {first:?}"
    );

    // Ops endpoints.
    wait_for("/readyz", Duration::from_secs(10), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    wait_for("pool metrics", Duration::from_secs(10), || {
        http_get(port, "/metrics").is_some_and(|(_, b)| {
            b.contains("leafbridge_pool_addresses_in_use{pool=\"office\",family=\"IPv4\"} 4")
        })
    });
    // IPPool status and Events.
    wait_for("IPPool status", Duration::from_secs(10), || {
        let docs = parse_documents(&std::fs::read(dir.join("pools/office.yaml")).unwrap()).unwrap();
        docs[0]["status"]["assignedIPv4"] == 4
            && docs[0]["status"]["conditions"][0]["status"] == "True"
    });
    let events = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
    assert!(events.contains("IPAllocated"), "{events}");
    // A request outside every pool: a Warning Event with the reason, a metric, no status.
    assert!(first["stray"].is_empty());
    assert!(events.contains("reason: AllocationFailed"), "{events}");
    assert!(
        events.contains("NotInAnyPool: requested address 198.51.100.1 is not in any usable IPPool"),
        "{events}"
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("leafbridge_allocation_failures_total{reason=\"NotInAnyPool\"} "),
        "{metrics}"
    );

    // Restart: nothing moves, even though a new Service (which would take the lowest free
    // address) is added while the controller is down.
    drop(a);
    std::fs::write(dir.join("late.yaml"), svc("late", "", "")).unwrap();
    a = start(&dir, port, "a2.log");
    wait_for("allocation after restart", Duration::from_secs(30), || {
        addresses(&dir).get("late").is_some_and(|v| !v.is_empty())
    });
    let second = addresses(&dir);
    for n in expected {
        assert_eq!(second[n], first[n], "{n} changed address across a restart");
    }
    assert!(
        !first
            .values()
            .flatten()
            .any(|ip| second["late"].contains(ip)),
        "late got a taken address"
    );

    // A standby waits on the lock and takes over when the active instance dies.
    let port_b = free_port();
    let _b = start(&dir, port_b, "b.log");
    wait_for("standby", Duration::from_secs(10), || {
        read_log(&dir, "b.log").contains("standing by")
    });
    drop(a);
    wait_for("standby took over", Duration::from_secs(10), || {
        read_log(&dir, "b.log").contains("allocation table rebuilt")
    });
    std::fs::remove_file(dir.join("late.yaml")).unwrap();
    // A removed file's objects go once it stayed removed for the settle time.
    wait_for("late's address released", Duration::from_secs(20), || {
        http_get(port_b, "/metrics").is_some_and(|(_, b)| {
            b.contains("leafbridge_pool_addresses_in_use{pool=\"office\",family=\"IPv4\"} 4")
        })
    });
    std::fs::write(dir.join("later.yaml"), svc("later", "", "")).unwrap();
    wait_for("allocation by the standby", Duration::from_secs(30), || {
        addresses(&dir).get("later").is_some_and(|v| !v.is_empty())
    });
    let third = addresses(&dir);
    for n in expected {
        assert_eq!(third[n], first[n], "{n} changed address across a failover");
    }
    // `late` was deleted: its address is free again and, being the lowest free one, goes to
    // `later`.
    assert_eq!(third["later"], second["late"]);

    // A pool edit never moves a Service: every address left the pool, all keep them, get the
    // warning condition and Event; a new Service gets an address from the new range.
    std::fs::write(
        dir.join("pools/office.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: office}\nspec:\n  addresses: [100.64.0.0/29, \"2001:db8:5::10-2001:db8:5::1f\"]\n  avoidBuggyIPs: true\n",
    )
    .unwrap();
    wait_for("orphan condition", Duration::from_secs(10), || {
        let docs = parse_documents(&std::fs::read(dir.join("services.yaml")).unwrap()).unwrap();
        let web = docs
            .iter()
            .find(|d| d["metadata"]["name"] == "web")
            .unwrap();
        web["status"]["conditions"][0]["type"] == "leafbridge.io/AddressOutsidePools"
    });
    // The pool edit is in effect now (the two files are watched independently).
    std::fs::write(dir.join("fresh.yaml"), svc("fresh", "", "")).unwrap();
    wait_for(
        "allocation from the edited pool",
        Duration::from_secs(30),
        || addresses(&dir).get("fresh").is_some_and(|v| !v.is_empty()),
    );
    let fourth = addresses(&dir);
    assert_eq!(fourth["fresh"], ["100.64.0.1"]);
    for n in expected {
        assert_eq!(fourth[n], first[n], "{n} moved after a pool edit");
    }
    let events = std::fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
    assert!(events.contains("AddressOutsidePools"), "{events}");

    // Changing the type releases the address and clears the status.
    let path = dir.join("services.yaml");
    let mut docs = parse_documents(&std::fs::read(&path).unwrap()).unwrap();
    for d in docs.iter_mut().filter(|d| d["metadata"]["name"] == "web") {
        d["spec"]["type"] = "ClusterIP".into();
    }
    let text: Vec<String> = docs
        .iter()
        .map(|d| leafbridge_api::yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(&path, text.join("---\n")).unwrap();
    wait_for("release on type change", Duration::from_secs(10), || {
        addresses(&dir)["web"].is_empty()
    });
    wait_for("IPReleased Event", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join(EVENTS_FILE))
            .unwrap()
            .contains("IPReleased")
    });

    // At rest nothing is written: our own status writes must not feed back into more writes.
    let writes = || {
        http_get(port_b, "/metrics").and_then(|(_, b)| {
            b.lines()
                .find(|l| {
                    l.starts_with("leafbridge_state_dir_status_writes_total{outcome=\"written\"}")
                })
                .map(str::to_owned)
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    let before = writes();
    assert!(before.is_some(), "status write metric missing");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        writes(),
        before,
        "status writes continue while nothing changes"
    );
}

/// The documents of `file` with `name`'s changed by `f`, written back.
fn edit(dir: &Path, file: &str, name: &str, f: impl Fn(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut docs = parse_documents(&std::fs::read(&path).unwrap()).unwrap();
    for d in docs.iter_mut().filter(|d| d["metadata"]["name"] == name) {
        f(d);
    }
    let text: Vec<String> = docs
        .iter()
        .map(|d| leafbridge_api::yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(&path, text.join("---\n")).unwrap();
}

#[test]
fn addresses_survive_non_atomic_rewrites_moves_and_changes_made_while_the_controller_was_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pool.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: office}\nspec:\n  addresses: [203.0.113.0/28]\n",
    )
    .unwrap();
    std::fs::write(dir.join("svcs.yaml"), svc("a", "", "") + &svc("b", "", "")).unwrap();
    let port = free_port();
    let mut ctl = start(&dir, port, "c1.log");
    wait_for("first allocations", Duration::from_secs(30), || {
        let m = addresses(&dir);
        ["a", "b"]
            .iter()
            .all(|n| m.get(*n).is_some_and(|v| !v.is_empty()))
    });
    let first = addresses(&dir);

    // `cmd > svcs.yaml`: the file is empty, then half written, for a while; meanwhile a new
    // Service arrives, which would take a freed address.
    let whole = std::fs::read_to_string(dir.join("svcs.yaml")).unwrap();
    {
        let mut f = std::fs::File::create(dir.join("svcs.yaml")).unwrap();
        std::fs::write(dir.join("new.yaml"), svc("c", "", "")).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(600));
        f.write_all(&whole.as_bytes()[whole.len() / 2..]).unwrap();
    }
    wait_for("c allocated", Duration::from_secs(30), || {
        addresses(&dir).get("c").is_some_and(|v| !v.is_empty())
    });
    std::thread::sleep(Duration::from_secs(3));
    let second = addresses(&dir);
    assert_eq!(
        second["a"], first["a"],
        "a moved after a non-atomic rewrite"
    );
    assert_eq!(
        second["b"], first["b"],
        "b moved after a non-atomic rewrite"
    );
    assert!(
        !first.values().flatten().any(|ip| second["c"].contains(ip)),
        "c got a taken address: {second:?}"
    );

    // b moved to another file in two steps (cut, save; paste elsewhere a moment later), with
    // a new Service created in between.
    let docs = parse_documents(&std::fs::read(dir.join("svcs.yaml")).unwrap()).unwrap();
    let b_doc = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "b")
        .unwrap()
        .clone();
    let a_doc = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "a")
        .unwrap()
        .clone();
    std::fs::write(
        dir.join("svcs.yaml"),
        leafbridge_api::yaml::to_string(&a_doc).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("d.yaml"), svc("d", "", "")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(
        dir.join("moved.yaml"),
        leafbridge_api::yaml::to_string(&b_doc).unwrap(),
    )
    .unwrap();
    wait_for("d allocated", Duration::from_secs(30), || {
        addresses(&dir).get("d").is_some_and(|v| !v.is_empty())
    });
    std::thread::sleep(Duration::from_secs(3));
    let third = addresses(&dir);
    assert_eq!(third["b"], first["b"], "b moved when its manifest moved");
    assert!(
        !second.values().flatten().any(|ip| third["d"].contains(ip)),
        "d got a taken address: {third:?}"
    );

    // While the controller is down, a becomes a ClusterIP Service: its stale ingress is
    // cleared at the next start.
    drop(ctl);
    edit(&dir, "svcs.yaml", "a", |d| {
        d["spec"]["type"] = "ClusterIP".into()
    });
    ctl = start(&dir, port, "c2.log");
    wait_for("stale ingress cleared", Duration::from_secs(30), || {
        addresses(&dir).get("a").is_some_and(|v| v.is_empty())
    });

    // A standby is ready, and deleting .leafbridge/ does not give it a second lock.
    let port_b = free_port();
    let _standby = start(&dir, port_b, "standby.log");
    wait_for("standby", Duration::from_secs(10), || {
        read_log(&dir, "standby.log").contains("standing by")
    });
    wait_for("standby ready", Duration::from_secs(10), || {
        http_get(port_b, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    std::fs::remove_dir_all(dir.join(".leafbridge")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !read_log(&dir, "standby.log").contains("holding the state-directory controller lock"),
        "the standby took a second lock after .leafbridge/ was deleted"
    );
    drop(ctl);
    wait_for("standby took over", Duration::from_secs(10), || {
        read_log(&dir, "standby.log").contains("holding the state-directory controller lock")
    });
}

#[test]
fn a_service_caught_between_two_files_at_start_up_keeps_its_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    // One address only: a new Service can take it only if the moved one loses it.
    std::fs::write(
        dir.join("pool.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: office}\nspec:\n  addresses: [203.0.113.7/32]\n",
    )
    .unwrap();
    std::fs::write(dir.join("old.yaml"), svc("moved", "", "")).unwrap();
    let port = free_port();
    let ctl = start(&dir, port, "c1.log");
    wait_for("first allocation", Duration::from_secs(30), || {
        addresses(&dir).get("moved").is_some_and(|v| !v.is_empty())
    });
    drop(ctl);
    let moved = std::fs::read_to_string(dir.join("old.yaml")).unwrap();
    assert!(moved.contains("203.0.113.7"), "{moved}");
    // While the controller is down, the Service is cut from its file and a new one is created;
    // the controller starts before the cut Service is pasted into its new file.
    std::fs::remove_file(dir.join("old.yaml")).unwrap();
    std::fs::write(dir.join("fresh.yaml"), svc("fresh", "", "")).unwrap();
    let _ctl = start(&dir, port, "c2.log");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.join("new.yaml"), &moved).unwrap();
    // Past the directory's settle time (2 s), and time for the status writes.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200),
        "controller down: {}",
        read_log(&dir, "c2.log")
    );
    let m = addresses(&dir);
    assert_eq!(m["moved"], ["203.0.113.7"], "{m:?}");
    assert!(
        m.get("fresh").is_none_or(|v| v.is_empty()),
        "the new Service took the moved one's address: {m:?}"
    );
}
