//! BFD in cluster mode, end to end on the state-directory backend: a cluster-mode speaker whose
//! BGPPeer names a `bfdProfile`, a BIRD leaf with `bfd on` for that neighbour. A profile that
//! does not exist yet is a condition of the node's BGPNodeState (BGP runs without BFD); once the
//! BFDProfile is written, the session's BFD state is Up in the status with the negotiated
//! timers; when the leaf stops answering (SIGSTOP), BFD goes Down within its detection time,
//! the BGP session is closed at once (Cease) and the status says both, long before the 90 s
//! hold time; BGP comes back once BFD is Up again.

use std::time::{Duration, Instant};

use leafbridge_tests::bird::{Bird, BirdBfd};
use leafbridge_tests::fabric::Fabric;
use leafbridge_tests::manifests::{BGPAdvertisement, BGPPeer, LEAFBRIDGE_API, Node, StateDir};
use leafbridge_tests::programs::{ClusterSpeaker, SpeakerOptions};
use leafbridge_tests::wait_for;
use serde_json::{Value, json};

/// Generous: the machine is shared with other builds and tests.
const T: Duration = Duration::from_secs(30);
const LEAF_AS: u32 = 65000;
const NODE_AS: u32 = 65100;

fn bfd_profile(rx: u32, tx: u32) -> Value {
    json!({
        "apiVersion": LEAFBRIDGE_API,
        "kind": "BFDProfile",
        "metadata": {"name": "fast"},
        "spec": {"receiveInterval": rx, "transmitInterval": tx, "detectMultiplier": 3},
    })
}

#[track_caller]
fn wait_status(state: &StateDir, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(T, &format!("node0's BGPNodeState: {what}"), || {
        let v = state
            .find_kind("BGPNodeState")
            .into_iter()
            .find(|d| d["metadata"]["name"] == "node0");
        match v {
            Some(v) if ok(&v["status"]) => Ok(v["status"].clone()),
            other => Err(other.map(|v| v["status"].clone())),
        }
    })
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

#[test]
fn bfd_state_is_in_the_node_status_and_bgp_closes_when_bfd_fails() {
    let f = Fabric::new("bfdclu", 1);
    let mut leaf = f.bird_leaf(LEAF_AS, NODE_AS);
    leaf.bfd = Some(BirdBfd::new(300, 300, 3));
    leaf.peers[0].bfd = true;
    let bird = Bird::start(&f.leaf, "leaf", &leaf);
    let leaf_peer = Fabric::bird_peer_name(0);

    let state = StateDir::new(f.topo.subdir("state"));
    state.apply(&Node::new("node0", Fabric::node_v4(0)).pod_cidr("100.64.0.0/24"));
    // The hold time BFD has to beat.
    state.apply(
        &BGPPeer::new("leaf", Fabric::leaf_v4(), LEAF_AS, NODE_AS)
            .hold_time(90)
            .field("bfdProfile", json!("fast")),
    );
    state.apply(&BGPAdvertisement::new("default").pod_cidrs());
    let speaker = ClusterSpeaker::start(
        &f.nodes[0],
        std::path::Path::new(env!("CARGO_BIN_EXE_leafbridge-speaker")),
        SpeakerOptions::new("node0", state.root()),
    );

    // The profile does not exist yet: said in the status, and BGP runs without BFD.
    let st = wait_status(&state, "BFDProfileProblem True, session Established", |s| {
        condition(s, "BFDProfileProblem")["status"] == "True"
            && s["sessions"][0]["state"] == "Established"
    });
    let msg = condition(&st, "BFDProfileProblem")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("BFDProfile fast not found") && msg.contains("without BFD"),
        "{msg}"
    );
    assert!(st["sessions"][0].get("bfd").is_none(), "{st}");
    speaker.assert_running();

    // With the profile: a BFD session, Up on the negotiated 300 ms × 3 on both sides.
    state.apply(&bfd_profile(300, 300));
    let st = wait_status(&state, "BFD Up at 300 ms x 3, BGP Established", |s| {
        let b = &s["sessions"][0]["bfd"];
        b["state"] == "Up"
            && b["transmitIntervalMs"] == 300
            && b["detectionTimeMs"] == 900
            && s["sessions"][0]["state"] == "Established"
            && condition(s, "BFDProfileProblem")["status"] == "False"
    });
    assert_eq!(st["sessions"][0]["bfd"]["profile"], "fast", "{st}");
    assert_eq!(st["sessions"][0]["bfd"]["remoteState"], "Up", "{st}");
    wait_for(T, "BIRD's BFD session Up at 300 ms x 3", || {
        match bird.bfd_session(Fabric::node_v4(0)) {
            Some(s) if s.state == "Up" && s.timeout == 0.9 => Ok(()),
            other => Err(other),
        }
    });
    bird.wait_established(&leaf_peer, T);

    // The leaf stops answering: BFD Down after 0.9 s, BGP closed at once, both in the status
    // (written at most once a second).
    let frozen = Instant::now();
    bird.process().signal("STOP");
    let st = wait_status(&state, "BFD Down, BGP not Established", |s| {
        let b = &s["sessions"][0]["bfd"];
        b["state"] == "Down" && s["sessions"][0]["state"] != "Established"
    });
    let seen = frozen.elapsed();
    println!("BFD Down and BGP closed in BGPNodeState {seen:?} after freezing the leaf");
    assert_eq!(
        st["sessions"][0]["bfd"]["diagnostic"], "ControlDetectionTimeExpired",
        "{st}"
    );
    assert_eq!(st["sessionsEstablished"], 0, "{st}");
    assert!(
        seen < Duration::from_secs(4),
        "the status showed the failure {seen:?} after the freeze: not BFD (hold time 90 s)"
    );
    assert!(
        speaker.log().contains("gate (BFD) closed"),
        "{}",
        speaker.log()
    );

    // Back: BFD Up first, then BGP, and the leaf read our Cease.
    bird.process().signal("CONT");
    wait_status(&state, "BFD Up and BGP Established again", |s| {
        s["sessions"][0]["bfd"]["state"] == "Up" && s["sessions"][0]["state"] == "Established"
    });
    bird.wait_established(&leaf_peer, T);
    // The Cease went out while the leaf was frozen; whether BIRD reads it from the dead
    // connection after SIGCONT is up to BIRD, so only our side ("gate (BFD) closed", above)
    // is checked here. BIRD reading our Cease is checked in bfd_interop_bird.
    speaker.assert_running();
}
