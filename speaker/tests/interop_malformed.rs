//! Malformed messages over a raw TCP connection get the right NOTIFICATION (RFC 4271 §6) and
//! never crash the speaker.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::BIN;
use common::Speaker;
use leafbridge_tests::Pair;
use leafbridge_tests::raw::{
    RawBgp, RawOptions, keepalive_message, message, message_type, open_message,
};

const T: Duration = Duration::from_secs(10);

/// One passive peer per case, each at its own address in namespace b, so that the back-off
/// after one error does not delay the next case.
fn setup(pair: &Pair, cases: usize) -> Speaker {
    let mut peers = String::new();
    for i in 0..cases {
        let addr = format!("192.0.2.{}", 10 + i);
        pair.b.add_addr(Pair::B_IF, &format!("{addr}/24"));
        peers.push_str(&format!(
            "  - {{ name: raw{i}, address: {addr}, remote_as: 65000, passive: true, hold_time: 30 }}\n"
        ));
    }
    let yaml = format!(
        "local_as: 65001\nrouter_id: 192.0.2.1\nlisten: {{ address: 192.0.2.1, port: 179 }}\npeers:\n{peers}prefixes:\n  - prefix: 203.0.113.1/32\n"
    );
    let speaker = Speaker::start(BIN, &pair.a, "a", &yaml);
    speaker.wait_log("listening for BGP connections", T);
    speaker
}

fn connect(pair: &Pair, case: usize) -> RawBgp {
    let source: IpAddr = format!("192.0.2.{}", 10 + case).parse().unwrap();
    let to: SocketAddr = "192.0.2.1:179".parse().unwrap();
    RawBgp::connect_with(
        &pair.b,
        to,
        &RawOptions {
            source: Some(source),
            ..RawOptions::default()
        },
        T,
    )
}

fn open() -> Vec<u8> {
    open_message(65000, 90, "192.0.2.2".parse().unwrap(), &[])
}

/// Sends `bytes` after the OPEN exchange and returns the NOTIFICATION's (code, subcode).
fn notification_for(pair: &Pair, case: usize, established: bool, bytes: &[u8]) -> (u8, u8) {
    let c = connect(pair, case);
    if established {
        c.send(&open());
        c.send(&keepalive_message());
        // Their OPEN and KEEPALIVE.
        let m = c.recv_message(T).expect("OPEN from the speaker");
        assert_eq!(message_type(&m), Some(1));
    }
    c.send(bytes);
    let (code, subcode, _) = c
        .recv_notification(T)
        .unwrap_or_else(|| panic!("no NOTIFICATION: {}", c.log()));
    assert!(
        c.wait_closed(T),
        "the speaker must close after its NOTIFICATION"
    );
    (code, subcode)
}

#[test]
fn malformed_messages_get_the_right_notification_and_no_crash() {
    let pair = Pair::new("spraw");
    let speaker = setup(&pair, 6);

    // RFC 4271 §6.1: a marker that is not all ones: Connection Not Synchronized.
    let mut bad_marker = keepalive_message();
    bad_marker[3] = 0;
    assert_eq!(notification_for(&pair, 0, false, &bad_marker), (1, 1));

    // RFC 4271 §6.1: a length below 19: Bad Message Length.
    let mut short = keepalive_message();
    short[16..18].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(notification_for(&pair, 1, false, &short), (1, 2));

    // RFC 4271 §6.1: an unknown type: Bad Message Type.
    assert_eq!(notification_for(&pair, 2, false, &message(9, &[])), (1, 3));

    // RFC 4271 §6.2: an OPEN from the wrong AS: Bad Peer AS.
    let wrong_as = open_message(65099, 90, "192.0.2.2".parse().unwrap(), &[]);
    assert_eq!(notification_for(&pair, 3, false, &wrong_as), (2, 2));

    // RFC 4271 §6.2: Hold Time 1: Unacceptable Hold Time.
    let hold1 = open_message(65000, 1, "192.0.2.2".parse().unwrap(), &[]);
    assert_eq!(notification_for(&pair, 4, false, &hold1), (2, 6));

    // RFC 4271 §6.3: a Withdrawn Routes Length that runs past the message: Malformed
    // Attribute List, session reset (RFC 7606 §4 keeps this one a reset).
    let update_body = [0, 10, 0, 0];
    assert_eq!(
        notification_for(&pair, 5, true, &message(2, &update_body)),
        (3, 1)
    );

    assert!(speaker.process.is_running(), "{}", speaker.log());
    assert!(!speaker.log().contains("panicked"), "{}", speaker.log());
}

#[test]
fn connections_from_unconfigured_addresses_cannot_flood_the_log() {
    let pair = Pair::new("spflood");
    let speaker = setup(&pair, 1);
    // 192.0.2.2 is namespace b's own address, and no peer of the speaker.
    let attempts = 30;
    for _ in 0..attempts {
        let c = RawBgp::connect(&pair.b, "192.0.2.1:179".parse().unwrap(), T);
        assert!(c.wait_closed(T), "an unconfigured address is closed");
    }
    let refused = speaker.log().matches("inbound connection refused").count();
    assert!(
        (1..=10).contains(&refused),
        "{refused} warnings for {attempts} connections:\n{}",
        speaker.log()
    );
    assert!(speaker.process.is_running());
}
