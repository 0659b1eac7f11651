//! RFC 5881 §5: single-hop BFD packets are accepted only with TTL 255. Valid Down packets sent
//! from the peer's address with TTL 254 leave the session Down; the same packets with TTL 255
//! bring it to Init.

mod common;

use std::time::Duration;

use common::BIN;
use common::{Speaker, yaml};
use leafbridge_tests::{Pair, require, wait_until};

/// Sends a valid Control packet in state Down (My Discriminator 7, slow TX) to the speaker's
/// UDP 3784 from 192.0.2.2, `count` times, 100 ms apart, with this TTL.
fn send_down_packets(pair: &Pair, ttl: u8, count: u32) {
    let script = format!(
        r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, {ttl})
s.bind(("192.0.2.2", 49200))
pkt = bytes.fromhex("20400318" "00000007" "00000000" "000f4240" "000493e0" "00000000")
for _ in range({count}):
    s.sendto(pkt, ("192.0.2.1", 3784))
    time.sleep(0.1)
"#
    );
    pair.b.run("python3", &["-c", &script]);
}

#[test]
fn single_hop_packets_with_a_ttl_below_255_are_dropped() {
    require("python3");
    let pair = Pair::new("bfdttl");
    let y = format!(
        "bfd_profiles:\n  p: {{}}\n{}",
        yaml(
            65001,
            "    bfd_profile: p\n",
            "  - prefix: 203.0.113.10/32\n"
        )
    );
    let speaker = Speaker::start(BIN, &pair.a, "a", &y);
    speaker.wait_log("BFD session starting", Duration::from_secs(20));

    send_down_packets(&pair, 254, 10);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !speaker.log().contains("BFD state changed"),
        "a TTL 254 packet moved the session: {}",
        speaker.log()
    );
    assert!(speaker.log().contains("is not 255"), "{}", speaker.log());

    send_down_packets(&pair, 255, 10);
    wait_until(
        Duration::from_secs(10),
        "Down -> Init on TTL 255 packets",
        || speaker.log().contains("BFD state changed: Down -> Init"),
    );
}
