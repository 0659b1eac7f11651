//! The speaker's BFD against FRR 8.4's `bfdd` in network namespaces: the session comes up on
//! the negotiated timers, interval changes on either side go through a Poll Sequence without a
//! flap, and when bfdd stops answering the BGP session with FRR's bgpd is closed (Cease) until
//! BFD is back.

mod common;

use std::time::{Duration, Instant};

use common::BIN;
use common::{Speaker, yaml};
use leafbridge_tests::frr::{Bfdd, BfddConfig, BfddPeer, Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::{Pair, wait_for, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn speaker_yaml(rx: u32, tx: u32) -> String {
    format!(
        "bfd_profiles:\n  fast: {{ receive_interval: {rx}, transmit_interval: {tx}, detect_multiplier: 3 }}\n{}",
        yaml(
            65001,
            "    bfd_profile: fast\n",
            "  - prefix: 203.0.113.10/32\n"
        )
    )
}

fn bfdd(pair: &Pair) -> Bfdd {
    let mut cfg = BfddConfig::new(300, 300, 3);
    cfg.peers.push(BfddPeer {
        addr: Pair::a_v4(),
        local: Pair::b_v4(),
        multihop: false,
        passive: false,
    });
    Bfdd::start(&pair.b, "leaf", &cfg)
}

#[track_caller]
fn wait_peer(b: &Bfdd, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(T, what, || match b.peer(Pair::a_v4()) {
        Some(p) if ok(&p) => Ok(p),
        other => Err(other),
    })
}

fn up(p: &Value) -> bool {
    p["status"] == "up"
}

#[test]
fn bfd_comes_up_with_frr_bfdd_and_interval_changes_on_both_sides_need_no_flap() {
    let pair = Pair::new("bfdfrr");
    let b = bfdd(&pair);
    let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(300, 300));
    let p = wait_peer(&b, "bfdd session up with our 300 ms timers", |p| {
        up(p) && p["remote-receive-interval"] == 300 && p["remote-transmit-interval"] == 300
    });
    assert_eq!(p["remote-detect-multiplier"], 3, "{p}");
    speaker.wait_log("BFD poll sequence completed", T);
    let changes = || speaker.log().matches("BFD state changed").count();
    let before = changes();
    let started = Instant::now();

    // Our side slows down to 400 ms: bfdd sees the new values once our Poll is answered.
    speaker.edit(&speaker_yaml(400, 400));
    wait_peer(&b, "bfdd on our 400 ms timers", |p| {
        up(p) && p["remote-receive-interval"] == 400 && p["remote-transmit-interval"] == 400
    });
    // bfdd's side changes to 500 ms: it polls us and we answer with a Final.
    b.set_timers(500, 500);
    let p = wait_peer(&b, "bfdd on its own 500 ms timers, still up", |p| {
        up(p) && p["receive-interval"] == 500 && p["transmit-interval"] == 500
    });
    // No flap on either side: bfdd's uptime covers the whole test and we changed no state.
    let uptime = p["uptime"].as_u64().unwrap_or(0);
    assert!(
        Duration::from_secs(uptime + 1) >= started.elapsed(),
        "bfdd's session restarted: uptime {uptime} s, {p}"
    );
    assert_eq!(changes(), before, "{}", speaker.log());
}

/// bfdd and bgpd on the leaf, our speaker with BFD on its BGP session, both sessions up and
/// the speaker's first Poll Sequence done.
fn bgp_and_bfd_with_frr(pair: &Pair) -> (Bfdd, Frr, Speaker) {
    let b = bfdd(pair);
    let mut cfg = FrrConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.neighbors.push(FrrNeighbor::new(Pair::a_v4(), 65001));
    let frr = Frr::start(&pair.b, "leaf", &cfg);
    let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(300, 300));
    frr.wait_established(Pair::a_v4(), T);
    wait_peer(&b, "bfdd up", up);
    speaker.wait_log("BFD poll sequence completed", T);
    (b, frr, speaker)
}

#[test]
fn bgp_with_frr_is_closed_while_bfdd_is_frozen_and_reopened_after() {
    let pair = Pair::new("bfdfrrbgp");
    let (b, frr, speaker) = bgp_and_bfd_with_frr(&pair);

    let frozen = Instant::now();
    b.process().signal("STOP");
    speaker.wait_log("gate (BFD) closed", Duration::from_secs(5));
    assert!(
        frozen.elapsed() < Duration::from_secs(3),
        "{:?}",
        frozen.elapsed()
    );
    wait_until(T, "bgpd to see our Cease", || {
        frr.last_notification(Pair::a_v4())
            .is_some_and(|n| n.shutdown_message.as_deref() == Some("BFD session down"))
    });
    let n = frr.last_notification(Pair::a_v4()).unwrap();
    assert_eq!(n.code_subcode, "0602", "{n:?}");
    assert_ne!(frr.bgp_state(Pair::a_v4()), "Established");

    b.process().signal("CONT");
    speaker.wait_log("gate (BFD) open", T);
    frr.wait_established(Pair::a_v4(), T);
}

#[test]
fn bfdd_turning_the_session_off_sends_admin_down_and_leaves_bgp_alone() {
    let pair = Pair::new("bfdfrradm");
    let (b, frr, speaker) = bgp_and_bfd_with_frr(&pair);

    // An operator shuts the BFD peer down on the leaf: bfdd sends AdminDown (RFC 5880
    // §6.8.16), which RFC 5882 §3.2 says is not a path failure.
    let peer = format!("peer {} local-address {}", Pair::a_v4(), Pair::b_v4());
    b.vtysh(&["configure terminal", "bfd", &peer, "shutdown"]);
    speaker.wait_log("BFD state changed: Up -> Down", T);
    assert!(
        speaker.log().contains("neighbor signaled session down"),
        "{}",
        speaker.log()
    );
    // Longer than our 900 ms detection time: BGP stays up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(frr.bgp_state(Pair::a_v4()), "Established");
    assert!(
        !speaker.log().contains("gate (BFD) closed"),
        "{}",
        speaker.log()
    );

    // Back on: BFD comes Up again, BGP was never touched.
    b.vtysh(&["configure terminal", "bfd", &peer, "no shutdown"]);
    wait_peer(&b, "bfdd up again", up);
    wait_until(T, "our session Up again", || {
        speaker.log().matches("-> Up").count() >= 2
    });
    assert_eq!(frr.bgp_state(Pair::a_v4()), "Established");
    assert!(frr.last_notification(Pair::a_v4()).is_none());
    assert!(!speaker.log().contains("gate (BFD) closed"));

    // And a real failure after that still closes BGP.
    b.process().signal("STOP");
    speaker.wait_log("gate (BFD) closed", Duration::from_secs(5));
    b.process().signal("CONT");
}
