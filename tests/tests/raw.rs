//! The raw TCP relay and the capture helper proved against BIRD: a hand-made OPEN gets BIRD's
//! OPEN, a bad header length gets Message Header Error / Bad Message Length, and the capture
//! holds the NOTIFICATION.

use std::time::Duration;

use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::capture::Capture;
use leafbridge_tests::exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::raw::{self, RawBgp, RawOptions};
use leafbridge_tests::{Pair, wait_for};

const T: Duration = Duration::from_secs(10);

/// The OPEN that namespace `b` sends: AS 65002, hold time 90 s, BGP Identifier 192.0.2.2.
fn open_from_b() -> Vec<u8> {
    raw::open_message(65002, 90, "192.0.2.2".parse().unwrap(), &[])
}

/// Asserts that the next message on `conn` (within `T`) is of type `want`.
#[track_caller]
fn expect_message(conn: &RawBgp, want: u8) {
    assert_eq!(
        conn.recv_message(T).and_then(|m| raw::message_type(&m)),
        Some(want)
    );
}

/// Connects from `b` to the daemon at 192.0.2.1:179, sends our OPEN, expects its OPEN and
/// sends KEEPALIVE: the daemon's session comes up.
#[track_caller]
fn open_session_from_b(p: &Pair) -> RawBgp {
    let conn = RawBgp::connect(&p.b, "192.0.2.1:179".parse().unwrap(), T);
    conn.send(&open_from_b());
    expect_message(&conn, raw::OPEN);
    conn.send(&raw::keepalive_message());
    conn
}

/// NOTIFICATION Cease / Administrative Shutdown (6, 2) with the length-prefixed UTF-8 message
/// "maintenance" of RFC 8203.
fn shutdown_with_message() -> Vec<u8> {
    let mut body = vec![6, 2, 11];
    body.extend_from_slice(b"maintenance");
    raw::message(raw::NOTIFICATION, &body)
}

fn bird(passive: bool) -> BirdConfig {
    let mut c = BirdConfig::new("192.0.2.1".parse().unwrap(), 65001);
    c.peers.push(BirdPeer {
        passive,
        ..BirdPeer::new("raw", Pair::b_v4(), 65002)
    });
    c
}

#[test]
fn bad_header_length_gets_bird_notification_and_capture_keeps_it() {
    let p = Pair::new("rawc");
    let bird = Bird::start(&p.a, "dut", &bird(true));
    let cap = Capture::start(&p.b, "bgp", Pair::B_IF, "tcp port 179");
    let conn = RawBgp::connect(&p.b, "192.0.2.1:179".parse().unwrap(), T);
    conn.send(&open_from_b());
    let open = conn.recv_message(T).expect("BIRD's OPEN");
    assert_eq!(raw::message_type(&open), Some(raw::OPEN));
    conn.send(&raw::keepalive_message());
    let ka = conn.recv_message(T).expect("BIRD's KEEPALIVE");
    assert_eq!(raw::message_type(&ka), Some(raw::KEEPALIVE));
    bird.wait_established("raw", T);

    // RFC 4271 §6.1: a length field below 19 is Message Header Error / Bad Message Length.
    let mut bad = raw::keepalive_message();
    bad[17] = 5;
    conn.send(&bad);
    let (code, subcode, data) = conn.recv_notification(T).expect("a NOTIFICATION");
    assert_eq!((code, subcode), (1, 2), "data {data:?}");
    assert!(
        conn.wait_closed(T),
        "BIRD keeps the connection open: {}",
        conn.log()
    );
    cap.stop();
    // SYN, OPENs, KEEPALIVEs, the bad message, the NOTIFICATION, FINs.
    assert!(cap.packet_count() >= 6, "{}", cap.text());
}

#[test]
fn raw_listener_accepts_bird_and_reads_its_open() {
    let p = Pair::new("rawl");
    let listener = RawBgp::listen(&p.b, "192.0.2.2:179".parse().unwrap());
    let _bird = Bird::start(&p.a, "dut", &bird(false));
    listener.wait_connected(T);
    let open = listener.recv_message(T).expect("BIRD's OPEN");
    assert_eq!(raw::message_type(&open), Some(raw::OPEN));
    // My AS (bytes 20..22) is BIRD's 65001.
    assert_eq!(&open[20..22], &65001u16.to_be_bytes());
    listener.close();
    wait_for(T, "relay gone", || {
        if listener.is_closed() {
            Ok(())
        } else {
            Err(listener.log())
        }
    });
}

fn gtsm_bird(tag: &str) -> (Pair, Bird) {
    let p = Pair::new(tag);
    let mut c = bird(true);
    c.peers[0].ttl_security = true;
    let b = Bird::start(&p.a, "dut", &c);
    (p, b)
}

#[test]
fn gtsm_peer_ignores_segments_with_ttl_below_255() {
    let (p, bird) = gtsm_bird("rawttl");
    // RFC 5082: BIRD sets IP_MINTTL 255 on the accepted socket, so the kernel drops our
    // TTL-254 segments: our OPEN never arrives and BIRD never answers it with a KEEPALIVE.
    let low = RawOptions {
        ttl: Some(254),
        ..RawOptions::default()
    };
    let peer = "192.0.2.1:179".parse().unwrap();
    if let Ok(conn) = RawBgp::try_connect_with(&p.b, peer, &low, Duration::from_secs(2)) {
        conn.send(&open_from_b());
        let mut seen = vec![];
        while let Some(m) = conn.recv_message(Duration::from_secs(2)) {
            seen.push(raw::message_type(&m));
        }
        assert!(
            !seen.contains(&Some(raw::KEEPALIVE)),
            "BIRD accepted a TTL-254 OPEN: {seen:?}"
        );
    }
    assert_ne!(bird.bgp_state("raw"), "Established");
}

#[test]
fn gtsm_peer_accepts_ttl_255() {
    let (p, bird) = gtsm_bird("rawttl2");
    let ok = RawOptions {
        ttl: Some(255),
        source: Some(Pair::b_v4()),
        ..RawOptions::default()
    };
    let conn = RawBgp::connect_with(&p.b, "192.0.2.1:179".parse().unwrap(), &ok, T);
    conn.send(&open_from_b());
    expect_message(&conn, raw::OPEN);
    expect_message(&conn, raw::KEEPALIVE);
    conn.send(&raw::keepalive_message());
    bird.wait_established("raw", T);
}

#[test]
fn bird_reports_a_received_cease_and_its_shutdown_message() {
    let p = Pair::new("rawcease");
    let bird = Bird::start(&p.a, "dut", &bird(true));
    let conn = open_session_from_b(&p);
    bird.wait_established("raw", T);
    conn.send(&shutdown_with_message());
    wait_for(T, "BIRD to record the Cease", || {
        match bird.last_error("raw") {
            Some(e) if e.contains("Administrative shutdown") => Ok(()),
            other => Err(other),
        }
    });
    assert_eq!(bird.shutdown_message("raw").as_deref(), Some("maintenance"));
}

#[test]
fn frr_reports_a_received_cease_and_its_shutdown_message() {
    let p = Pair::new("rawfcease");
    let mut c = FrrConfig::new("192.0.2.1".parse().unwrap(), 65001);
    c.neighbors.push(FrrNeighbor {
        passive: true,
        ..FrrNeighbor::new(Pair::b_v4(), 65002)
    });
    let frr = Frr::start(&p.a, "dut", &c);
    let conn = open_session_from_b(&p);
    frr.wait_established(Pair::b_v4(), T);
    conn.send(&shutdown_with_message());
    let n = wait_for(T, "FRR to record the Cease", || {
        match frr.last_notification(Pair::b_v4()) {
            Some(n) if n.code_subcode == "0602" => Ok(n),
            other => Err(other),
        }
    });
    assert_eq!(n.shutdown_message.as_deref(), Some("maintenance"));
    assert!(n.reason.contains("Administrative Shutdown"), "{n:?}");
}

#[test]
fn exabgp_reports_why_its_session_went_down() {
    let p = Pair::new("rawexa");
    let listener = RawBgp::listen(&p.b, "192.0.2.2:179".parse().unwrap());
    let mut c = ExabgpConfig::new("192.0.2.1".parse().unwrap(), 65001);
    c.neighbors
        .push(ExabgpNeighbor::new(Pair::b_v4(), 65002, Pair::a_v4()));
    let exa = Exabgp::start(&p.a, "dut", &c);
    listener.wait_connected(T);
    expect_message(&listener, raw::OPEN);
    listener.send(&open_from_b());
    listener.send(&raw::keepalive_message());
    exa.wait_up(Pair::b_v4(), T);
    // Cease / Administrative Shutdown without a shutdown communication: ExaBGP 4.2.21 fails
    // to decode one that carries an RFC 8203 message and answers NOTIFICATION (1,0) instead.
    listener.send(&raw::message(raw::NOTIFICATION, &[6, 2]));
    let reasons = wait_for(T, "ExaBGP to report the session down", || {
        let r = exa.down_reasons(Pair::b_v4());
        if r.is_empty() { Err(r) } else { Ok(r) }
    });
    assert!(
        reasons[0].contains("notification received (6,2)"),
        "{reasons:?}"
    );
}
