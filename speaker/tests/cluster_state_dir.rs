//! Cluster mode on the state directory: the real binary in a namespace, BIRD as the leaf.
//! A Service with an address in its status is announced; cordoning the node withdraws it and
//! keeps the session and the pod CIDR; the node's BGPNodeState says why. Graceful restart keeps
//! the routes across a restart; without it SIGTERM withdraws, drains, then closes.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::{Pair, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_leafbridge-speaker");
const T: Duration = Duration::from_secs(20);

fn node(unschedulable: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {{kubernetes.io/hostname: node1}}
spec:
  unschedulable: {unschedulable}
  podCIDRs: [10.244.1.0/24]
status:
  conditions: [{{type: Ready, status: "True"}}]
  addresses: [{{type: InternalIP, address: 192.0.2.1}}]
"#
    )
}

const CONFIG: &str = r#"apiVersion: leafbridge.io/v1alpha1
kind: IPPool
metadata: {name: public}
spec: {addresses: [203.0.113.0/24]}
---
apiVersion: leafbridge.io/v1alpha1
kind: BGPPeer
metadata: {name: leaf}
spec: {peerAddress: 192.0.2.2, peerASN: 65000, myASN: 65001, holdTimeSeconds: 9}
---
apiVersion: leafbridge.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: all}
spec: {advertisePodCIDRs: true, communities: ["65001:80"]}
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: leafbridge.io/lb
  ports: [{port: 80}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.10}]
"#;

/// Replace a manifest the way a writer does (temp file, rename).
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn bird_prefixes(bird: &Bird) -> Vec<String> {
    let mut v: Vec<String> = bird
        .bgp_routes("node1")
        .into_iter()
        .map(|r| r.prefix.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn announces_a_service_address_from_the_state_directory_and_withdraws_it_on_cordon() {
    leafbridge_tests::require("bird");
    let pair = Pair::new("spcluster");
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.peers.push(BirdPeer::new("node1", Pair::a_v4(), 65001));
    let bird = Bird::start(&pair.b, "leaf", &cfg);

    let state = pair.a.topology().subdir("state");
    write(&state, "node.yaml", &node(false));
    write(&state, "config.yaml", CONFIG);
    write(&state, "service.yaml", SERVICE);
    // Read over rtnetlink and reported: this node's namespace does not forward.
    pair.a.sysctl("net.ipv4.ip_forward", "0");
    let speaker = start_speaker(&pair, "speaker", &state, &["--drain-time", "0"]);

    bird.wait_established("node1", T);
    wait_until_prefixes(&bird, &["10.244.1.0/24", "203.0.113.10/32"], &speaker);
    let status = state.join("bgpnodestates/node1.yaml");
    wait_until(T, "BGPNodeState with the announced prefixes", || {
        std::fs::read_to_string(&status).is_ok_and(|s| {
            s.contains("announcedPrefixes: 2")
                && s.contains("Established")
                && s.contains("reason: ForwardingOff")
        })
    });

    // The shared objects say how they are used: the pool is advertised (by "all"), the peer
    // and the advertisement are valid.
    wait_until(T, "IPPool, BGPPeer and BGPAdvertisement status", || {
        std::fs::read_to_string(state.join("config.yaml")).is_ok_and(|s| {
            s.contains("advertised: true")
                && s.contains("reason: Advertised")
                && s.matches("reason: Valid").count() == 2
        })
    });

    // Cordon: the Service route goes, the pod CIDR and the session stay.
    write(&state, "node.yaml", &node(true));
    wait_until_prefixes(&bird, &["10.244.1.0/24"], &speaker);
    assert!(bird.is_established("node1"), "the session stays up");
    wait_until(T, "BGPNodeState says why", || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("reason: NodeCordoned"))
    });
    // And so does an Event on the Service (kubectl describe service web).
    let events = state.join(".leafbridge/events.yaml");
    wait_until(T, "an Event on the Service says why", || {
        service_events(&events).iter().any(|e| {
            e.reason.as_deref() == Some("NodeCordoned")
                && e.message.as_deref() == Some("node node1 does not announce it: NodeCordoned")
        })
    });

    // Uncordon, then delete the Service: announced again, then withdrawn.
    write(&state, "node.yaml", &node(false));
    wait_until_prefixes(&bird, &["10.244.1.0/24", "203.0.113.10/32"], &speaker);
    wait_until(T, "an Event says where the address goes", || {
        service_events(&events).iter().any(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("node node1 announces 203.0.113.10/32 to BGPPeer leaf"))
                && e.reporting_instance.as_deref() == Some("node1")
        })
    });
    std::fs::remove_file(state.join("service.yaml")).unwrap();
    wait_until_prefixes(&bird, &["10.244.1.0/24"], &speaker);
    assert!(bird.is_established("node1"));
}

/// The Events recorded on Service default/web, read as the YAML documents they are. A file
/// caught in the middle of an append reads as none yet; the caller waits and reads again.
fn service_events(path: &Path) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(events) = leafbridge_api::yaml::documents::<Event>(&text) else {
        return Vec::new();
    };
    events
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Service")
                && e.involved_object.namespace.as_deref() == Some("default")
                && e.involved_object.name.as_deref() == Some("web")
        })
        .collect()
}

#[track_caller]
fn wait_until_prefixes(bird: &Bird, want: &[&str], speaker: &leafbridge_tests::Process) {
    let mut last = Vec::new();
    let ok = (0..(T.as_millis() / 100)).any(|_| {
        last = bird_prefixes(bird);
        if last == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        ok,
        "BIRD has {last:?}, expected {want:?}\nspeaker log:\n{}",
        speaker.stderr()
    );
}

fn start_speaker(
    pair: &Pair,
    label: &str,
    state: &Path,
    extra: &[&str],
) -> leafbridge_tests::Process {
    let mut cmd = pair.a.command(BIN);
    cmd.args(["--node-name", "node1", "--state-dir"])
        .arg(state)
        .args(extra);
    cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
    pair.a.topology().spawn(label, cmd)
}

/// BIRD (its peer edited by `edit`) and a state directory with the node, `config` and two
/// Services (203.0.113.10 and .11).
fn leaf_and_state(
    tag: &str,
    edit: impl FnOnce(&mut BirdPeer),
    config: &str,
) -> (Pair, Bird, std::path::PathBuf) {
    leafbridge_tests::require("bird");
    let pair = Pair::new(tag);
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    let mut peer = BirdPeer::new("node1", Pair::a_v4(), 65001);
    edit(&mut peer);
    cfg.peers.push(peer);
    let bird = Bird::start(&pair.b, "leaf", &cfg);
    let state = pair.a.topology().subdir("state");
    write(&state, "node.yaml", &node(false));
    write(&state, "config.yaml", config);
    write(&state, "service.yaml", SERVICE);
    write(
        &state,
        "service2.yaml",
        &SERVICE
            .replace("name: web", "name: api")
            .replace("203.0.113.10", "203.0.113.11"),
    );
    (pair, bird, state)
}

/// `python3` in the namespace fetches an HTTP path of the speaker's ops server.
fn http_get(ns: &leafbridge_tests::Netns, url: &str) -> String {
    let code = format!(
        "import urllib.request\ntry:\n print(urllib.request.urlopen('{url}').read().decode())\nexcept Exception as e:\n print('error', e)"
    );
    ns.run("python3", &["-c", &code])
}

#[test]
fn with_graceful_restart_the_leaf_keeps_our_routes_and_the_restart_resyncs_from_complete_state() {
    let config = CONFIG.replace(
        "holdTimeSeconds: 9",
        "holdTimeSeconds: 9, gracefulRestart: true",
    );
    let (pair, bird, state) = leaf_and_state("spclgr", |p| p.graceful_restart = Some(60), &config);
    let marker = pair.a.topology().subdir("marker");
    let marker_arg = marker.to_str().unwrap();
    let args = [
        "--restart-marker-dir",
        marker_arg,
        "--metrics-address",
        "127.0.0.1:9179",
    ];
    let first = start_speaker(&pair, "speaker1", &state, &args);
    bird.wait_established("node1", T);
    let all = ["10.244.1.0/24", "203.0.113.10/32", "203.0.113.11/32"];
    wait_until_prefixes(&bird, &all, &first);
    wait_until(T, "metrics and readiness", || {
        http_get(&pair.a, "http://127.0.0.1:9179/metrics")
            .contains("leafbridge_speaker_desired_recomputes_total")
            && http_get(&pair.a, "http://127.0.0.1:9179/readyz").starts_with("ready")
    });

    first.signal("TERM");
    assert!(
        first.wait_exit(T).is_some(),
        "speaker did not exit:\n{}",
        first.stderr()
    );
    assert!(
        marker.join("graceful-restart").exists(),
        "the marker is written"
    );
    // BIRD keeps the routes (stale) while we are away.
    wait_until(T, "BIRD sees the session go", || {
        !bird.is_established("node1")
    });
    assert_eq!(bird_prefixes(&bird), all);

    // One Service goes while the speaker is down: the restart announces the complete state and
    // its End-of-RIB removes the stale route of the Service that left.
    std::fs::remove_file(state.join("service2.yaml")).unwrap();
    let second = start_speaker(&pair, "speaker2", &state, &args);
    wait_until(T, "a restarting start", || {
        second.stderr().contains("restarting speaker")
    });
    bird.wait_established("node1", T);
    wait_until_prefixes(&bird, &["10.244.1.0/24", "203.0.113.10/32"], &second);
}

#[test]
fn without_graceful_restart_sigterm_withdraws_then_waits_the_drain_time_before_closing() {
    let (pair, bird, state) = leaf_and_state("spcldrain", |_| {}, CONFIG);
    let speaker = start_speaker(&pair, "speaker", &state, &["--drain-time", "3"]);
    bird.wait_established("node1", T);
    wait_until_prefixes(
        &bird,
        &["10.244.1.0/24", "203.0.113.10/32", "203.0.113.11/32"],
        &speaker,
    );
    let term = std::time::Instant::now();
    speaker.signal("TERM");
    wait_until_prefixes(&bird, &[], &speaker);
    assert!(
        bird.is_established("node1"),
        "the session stays up while the routers move traffic"
    );
    assert!(
        speaker.wait_exit(T).is_some(),
        "speaker did not exit:\n{}",
        speaker.stderr()
    );
    assert!(
        term.elapsed() >= Duration::from_millis(2900),
        "closed after {:?}, before the drain time",
        term.elapsed()
    );
    wait_until(T, "BIRD sees the Cease", || !bird.is_established("node1"));
}

#[test]
fn an_unreadable_state_directory_keeps_the_routes_reports_not_ready_and_resumes_without_resending()
{
    use leafbridge_tests::programs::metric_sum;
    let (pair, bird, state) = leaf_and_state("spclgone", |_| {}, CONFIG);
    let speaker = start_speaker(
        &pair,
        "speaker",
        &state,
        &["--metrics-address", "127.0.0.1:9179"],
    );
    bird.wait_established("node1", T);
    let all = ["10.244.1.0/24", "203.0.113.10/32", "203.0.113.11/32"];
    wait_until_prefixes(&bird, &all, &speaker);
    let metrics = || http_get(&pair.a, "http://127.0.0.1:9179/metrics");
    let ready = || http_get(&pair.a, "http://127.0.0.1:9179/readyz").starts_with("ready");
    wait_until(T, "ready", ready);
    // Let the node status write settle, then count what is sent from here on.
    std::thread::sleep(Duration::from_secs(2));
    let updates = metric_sum(&metrics(), "leafbridge_speaker_bgp_updates_sent_total");

    // The volume goes away (here: the directory is moved aside).
    let away = state.with_extension("away");
    std::fs::rename(&state, &away).unwrap();
    wait_until(T, "not ready", || !ready());
    wait_until(T, "staleness reported", || {
        metric_sum(
            &metrics(),
            "leafbridge_speaker_state_source_staleness_seconds",
        ) >= 2.0
    });
    assert_eq!(bird_prefixes(&bird), all, "the routes stay announced");
    assert!(bird.is_established("node1"));
    assert!(
        !state.exists(),
        "nothing made a new, empty state directory in its place"
    );

    std::fs::rename(&away, &state).unwrap();
    wait_until(T, "ready again", ready);
    std::thread::sleep(Duration::from_secs(1));
    let m = metrics();
    assert_eq!(
        metric_sum(&m, "leafbridge_speaker_bgp_updates_sent_total"),
        updates,
        "the relist re-announced routes:\n{}",
        speaker.stderr()
    );
    assert_eq!(
        metric_sum(&m, "leafbridge_speaker_state_source_staleness_seconds"),
        0.0
    );
    assert_eq!(bird_prefixes(&bird), all);
    let log = speaker.stderr();
    assert!(
        log.contains("keeping the last known routes") && log.contains("watch recovered"),
        "{log}"
    );
}
