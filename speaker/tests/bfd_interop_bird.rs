//! The speaker's BFD against BIRD 2's `protocol bfd` in network namespaces: the session comes
//! up on the negotiated timers, a changed interval is applied through a Poll Sequence without
//! a flap, the BGP session is closed (Cease) while BFD is down and comes back after it, and
//! a frozen node's routes leave the leaf's kernel table within a detection time.

mod common;

use std::time::{Duration, Instant};

use common::BIN;
use common::{Speaker, yaml};
use leafbridge_tests::bird::{Bird, BirdBfd, BirdBfdSession, BirdConfig, BirdPeer};
use leafbridge_tests::{Pair, wait_for, wait_until};

const T: Duration = Duration::from_secs(20);

fn profile(rx: u32, tx: u32) -> String {
    format!(
        r#"
bfd_profiles:
  fast: {{ receive_interval: {rx}, transmit_interval: {tx}, detect_multiplier: 3 }}
"#
    )
}

/// The speaker's config: one leaf peer with (or without) the `fast` BFD profile, one prefix.
fn speaker_yaml(bfd: Option<(u32, u32)>, hold_time: u16) -> String {
    let (profiles, peer_extra) = match bfd {
        Some((rx, tx)) => (profile(rx, tx), "    bfd_profile: fast\n"),
        None => (String::new(), ""),
    };
    let y = yaml(65001, peer_extra, "  - prefix: 203.0.113.10/32\n")
        .replace("hold_time: 9", &format!("hold_time: {hold_time}"));
    format!("{profiles}{y}")
}

fn leaf(pair: &Pair, bfd: bool, kernel: bool) -> Bird {
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.kernel = kernel;
    if bfd {
        cfg.bfd = Some(BirdBfd::new(300, 300, 3));
    }
    cfg.peers.push(BirdPeer {
        bfd,
        ..BirdPeer::new("node1", Pair::a_v4(), 65001)
    });
    Bird::start(&pair.b, "leaf", &cfg)
}

#[track_caller]
fn wait_bfd(bird: &Bird, what: &str, ok: impl Fn(&BirdBfdSession) -> bool) -> BirdBfdSession {
    wait_for(T, what, || match bird.bfd_session(Pair::a_v4()) {
        Some(s) if ok(&s) => Ok(s),
        other => Err(other),
    })
}

fn routes_to(pair: &Pair, prefix: &str) -> bool {
    let p = prefix.trim_end_matches("/32");
    pair.b.routes(false).iter().any(|r| r.starts_with(p))
}

#[test]
fn bfd_comes_up_with_bird_on_the_negotiated_timers_and_a_new_interval_needs_no_flap() {
    let pair = Pair::new("bfdbird");
    let bird = leaf(&pair, true, false);
    let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(Some((300, 300)), 9));
    bird.wait_established("node1", T);
    // BIRD sends every max(its 300 ms TX, our 300 ms RX) and declares us down after our
    // multiplier 3 × max(its 300 ms RX, our 300 ms TX).
    let up = wait_bfd(&bird, "BIRD's BFD session Up at 300 ms × 3", |s| {
        s.state == "Up" && s.interval == 0.3 && s.timeout == 0.9
    });
    speaker.wait_log("BFD poll sequence completed", T);
    let changes_before = speaker.log().matches("BFD state changed").count();

    // Slower: we ask for 500 ms both ways. BIRD then sends every 500 ms and allows 1.5 s.
    speaker.edit(&speaker_yaml(Some((500, 500)), 9));
    let after = wait_bfd(&bird, "BIRD on the new 500 ms timers", |s| {
        s.interval == 0.5 && s.timeout == 1.5
    });
    assert_eq!(after.state, "Up");
    assert_eq!(after.since, up.since, "the session flapped: {after:?}");
    wait_until(T, "a second completed poll sequence", || {
        speaker.log().matches("BFD poll sequence completed").count() >= 2
    });
    assert_eq!(
        speaker.log().matches("BFD state changed").count(),
        changes_before,
        "{}",
        speaker.log()
    );
    assert!(bird.is_established("node1"));
}

#[test]
fn bgp_is_closed_while_bfd_is_down_and_reopened_when_bfd_is_back() {
    let pair = Pair::new("bfdgate");
    let bird = leaf(&pair, true, false);
    let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(Some((300, 300)), 9));
    bird.wait_established("node1", T);
    wait_bfd(&bird, "BFD Up", |s| s.state == "Up");
    speaker.wait_log("BFD poll sequence completed", T);

    // A frozen leaf: its BFD packets stop, its TCP session stays open. Our detection time is
    // 900 ms; the BGP hold time is 9 s.
    let frozen = Instant::now();
    bird.process().signal("STOP");
    speaker.wait_log("gate (BFD) closed", Duration::from_secs(5));
    let closed_after = frozen.elapsed();
    assert!(
        closed_after < Duration::from_secs(3),
        "BGP closed {closed_after:?} after the freeze: that is not BFD"
    );
    assert!(
        speaker.log().contains("ControlDetectionTimeExpired")
            || speaker.log().contains("control detection time expired")
    );
    // Held in Idle: no reconnection while BFD is down.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !speaker.log().contains("gate (BFD) open"),
        "{}",
        speaker.log()
    );

    bird.process().signal("CONT");
    // BIRD reads our Cease, BFD comes back Up, then BGP.
    speaker.wait_log("gate (BFD) open", T);
    bird.wait_established("node1", T);
    assert_eq!(
        bird.shutdown_message("node1").as_deref(),
        Some("BFD session down"),
        "{:?}",
        bird.last_error("node1")
    );
}

/// Freezes the speaker once its route is in the leaf's kernel table and returns how long the
/// leaf kept routing to it.
fn time_to_withdraw(pair: &Pair, bird: &Bird, speaker: &Speaker) -> Duration {
    bird.wait_established("node1", T);
    wait_until(T, "the node's address in the leaf's kernel table", || {
        routes_to(pair, "203.0.113.10/32")
    });
    let frozen = Instant::now();
    speaker.process.signal("STOP");
    wait_until(
        Duration::from_secs(30),
        "the route to leave the kernel table",
        || !routes_to(pair, "203.0.113.10/32"),
    );
    let gone = frozen.elapsed();
    speaker.process.signal("CONT");
    gone
}

#[test]
fn a_frozen_nodes_routes_leave_the_leafs_kernel_table_within_a_second_with_bfd() {
    let with = std::thread::spawn(|| {
        let pair = Pair::new("bfdfrz");
        let bird = leaf(&pair, true, true);
        let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(Some((300, 300)), 9));
        wait_bfd(&bird, "BFD Up at 300 ms", |s| {
            s.state == "Up" && s.timeout == 0.9
        });
        time_to_withdraw(&pair, &bird, &speaker)
    });
    let without = std::thread::spawn(|| {
        let pair = Pair::new("nobfdfrz");
        let bird = leaf(&pair, false, true);
        let speaker = Speaker::start(BIN, &pair.a, "a", &speaker_yaml(None, 9));
        time_to_withdraw(&pair, &bird, &speaker)
    });
    let with = with.join().unwrap();
    let without = without.join().unwrap();
    println!(
        "route withdrawn after freezing the node: with BFD 300 ms x 3 {with:?}, without (hold time 9 s) {without:?}"
    );
    assert!(with < Duration::from_secs(1), "with BFD: {with:?}");
    assert!(without > Duration::from_secs(5), "without BFD: {without:?}");
}

#[test]
fn a_multihop_bgp_peer_gets_a_multihop_bfd_session_on_port_4784() {
    let pair = Pair::new("bfdmh");
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.bfd = Some(BirdBfd::new(300, 300, 3));
    cfg.peers.push(BirdPeer {
        bfd: true,
        multihop: Some(2),
        // BIRD: "Multihop BGP with BFD requires specified local address".
        local_addr: Some(Pair::b_v4()),
        ..BirdPeer::new("node1", Pair::a_v4(), 65001)
    });
    let bird = Bird::start(&pair.b, "leaf", &cfg);
    let y = speaker_yaml(Some((300, 300)), 9).replace(
        "    bfd_profile: fast\n",
        "    bfd_profile: fast\n    multihop_ttl: 2\n    source_address: 192.0.2.1\n",
    );
    let _speaker = Speaker::start(BIN, &pair.a, "a", &y);
    bird.wait_established("node1", T);
    let s = wait_bfd(&bird, "BIRD's multihop BFD session Up", |s| {
        s.state == "Up" && s.timeout == 0.9
    });
    assert_eq!(s.interval, 0.3);
    assert!(
        pair.a
            .run("ss", &["-Huan", "sport", "= :4784"])
            .contains("4784"),
        "nothing listens on UDP 4784"
    );
}

/// BIRD with keyed SHA1 (id 1, `key`) and the speaker with its key in a file.
fn sha1_pair(tag: &str, our_key: &str) -> (Pair, Bird, Speaker) {
    let pair = Pair::new(tag);
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    let mut bfd = BirdBfd::new(300, 300, 3);
    bfd.sha1 = Some(("s3cret-key".to_owned(), 1));
    cfg.bfd = Some(bfd);
    cfg.peers.push(BirdPeer {
        bfd: true,
        ..BirdPeer::new("node1", Pair::a_v4(), 65001)
    });
    let bird = Bird::start(&pair.b, "leaf", &cfg);
    let key = pair.topo.dir().join("bfd.key");
    std::fs::write(&key, format!("{our_key}\n")).unwrap();
    let y = speaker_yaml(Some((300, 300)), 9).replace(
        "    bfd_profile: fast\n",
        &format!(
            "    bfd_profile: fast\n    bfd_auth: {{ key_file: {}, key_id: 1 }}\n",
            key.display()
        ),
    );
    let speaker = Speaker::start(BIN, &pair.a, "a", &y);
    (pair, bird, speaker)
}

#[test]
fn keyed_sha1_sessions_come_up_with_the_right_key_only() {
    let (_pair, bird, speaker) = sha1_pair("bfdsha", "s3cret-key");
    wait_bfd(&bird, "BIRD's keyed SHA1 BFD session Up", |s| {
        s.state == "Up" && s.timeout == 0.9
    });
    assert!(!speaker.log().contains("s3cret-key"), "the key was logged");

    let (_pair2, bird2, speaker2) = sha1_pair("bfdshabad", "wrong-key");
    speaker2.wait_log("keyed SHA1 digest does not match", T);
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        bird2.bfd_session(Pair::a_v4()).map(|s| s.state),
        Some("Up".to_owned())
    );
    assert!(
        !speaker2.log().contains("BFD state changed"),
        "{}",
        speaker2.log()
    );
}
