//! Cluster mode on the state directory: the real binary in a namespace, BIRD as the leaf.
//! A Service with an address in its status is announced; cordoning the node withdraws it and
//! keeps the session and the pod CIDR; the node's BGPNodeState says why.

use std::path::Path;
use std::time::Duration;

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
    let mut cmd = pair.a.command(BIN);
    cmd.args(["--node-name", "node1", "--state-dir"])
        .arg(&state)
        .args(["--drain-time", "0"]);
    cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
    let speaker = pair.a.topology().spawn("speaker", cmd);

    bird.wait_established("node1", T);
    wait_until_prefixes(&bird, &["10.244.1.0/24", "203.0.113.10/32"], &speaker);
    let status = state.join("bgpnodestates/node1.yaml");
    wait_until(T, "BGPNodeState with the announced prefixes", || {
        std::fs::read_to_string(&status)
            .is_ok_and(|s| s.contains("announcedPrefixes: 2") && s.contains("Established"))
    });

    // Cordon: the Service route goes, the pod CIDR and the session stay.
    write(&state, "node.yaml", &node(true));
    wait_until_prefixes(&bird, &["10.244.1.0/24"], &speaker);
    assert!(bird.is_established("node1"), "the session stays up");
    wait_until(T, "BGPNodeState says why", || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("reason: NodeCordoned"))
    });

    // Uncordon, then delete the Service: announced again, then withdrawn.
    write(&state, "node.yaml", &node(false));
    wait_until_prefixes(&bird, &["10.244.1.0/24", "203.0.113.10/32"], &speaker);
    std::fs::remove_file(state.join("service.yaml")).unwrap();
    wait_until_prefixes(&bird, &["10.244.1.0/24"], &speaker);
    assert!(bird.is_established("node1"));
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
