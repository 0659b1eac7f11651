//! Peers that misbehave at the TCP level, over raw sockets: one that stops reading but keeps
//! the session alive, and one that keeps sending while we shut down.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::BIN;
use common::Speaker;
use leafbridge_tests::Pair;
use leafbridge_tests::raw::{
    RawBgp, RawOptions, keepalive_message, message_type, notification, open_message,
    route_refresh_message,
};

const T: Duration = Duration::from_secs(20);
const PREFIXES: u32 = 20_000;
const SEND_HOLD_SECS: u64 = 3;

fn config(extra_peer: &str) -> String {
    let mut yaml = format!(
        "local_as: 65001\nrouter_id: 192.0.2.1\nlisten: {{ address: 192.0.2.1, port: 179 }}\npeers:\n  - {{ name: raw, address: 192.0.2.2, remote_as: 65000, passive: true, hold_time: 30{extra_peer} }}\nprefixes:\n"
    );
    for i in 0..PREFIXES {
        yaml.push_str(&format!("  - prefix: 100.64.{}.{}/32\n", i / 256, i % 256));
    }
    yaml
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn speaker_addr() -> SocketAddr {
    "192.0.2.1:179".parse().unwrap()
}

#[test]
fn a_peer_that_stops_reading_is_cut_off_by_the_send_hold_timer_and_memory_stays_flat() {
    let pair = Pair::new("spslow");
    let speaker = Speaker::start(
        BIN,
        &pair.a,
        "a",
        &config(&format!(", send_hold_time: {SEND_HOLD_SECS}")),
    );
    speaker.wait_log("listening for BGP connections", T);
    // A tiny receive window that closes after a few KB, and nothing ever read.
    let peer = RawBgp::connect_with(
        &pair.b,
        speaker_addr(),
        &RawOptions {
            recv_buffer: Some(4096),
            never_read: true,
            ..RawOptions::default()
        },
        T,
    );
    peer.send(&open_message(65000, 30, "192.0.2.2".parse().unwrap(), &[]));
    peer.send(&keepalive_message());
    speaker.wait_log("session established", T);
    let established = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let pid = speaker.process.pid();
    let baseline = rss_kib(pid);

    // ROUTE-REFRESH every millisecond: each resets our Hold timer, each asks for the table.
    let rr = route_refresh_message(1, 1);
    let mut peak = baseline;
    let mut sent = 0u32;
    let torn_down = loop {
        if speaker.log().contains("send hold timer expired") {
            break Some(established.elapsed());
        }
        if established.elapsed() > T {
            break None;
        }
        if !peer.try_send(&rr) {
            // The speaker closed the connection; its log says why.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        sent += 1;
        if sent.is_multiple_of(50) {
            peak = peak.max(rss_kib(pid));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let log = speaker.log();
    let torn_down = torn_down.unwrap_or_else(|| {
        panic!("the session was not torn down within {T:?} ({sent} ROUTE-REFRESH sent):\n{log}")
    });
    // The timer starts when the first batch cannot be written, right after Established; the
    // machine is loaded, so leave room on top of the send hold time.
    assert!(
        torn_down < Duration::from_secs(SEND_HOLD_SECS + 5),
        "torn down only after {torn_down:?}"
    );
    assert!(sent > 500, "only {sent} ROUTE-REFRESH messages went out");
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB ({baseline} → {peak}) while {sent} ROUTE-REFRESH messages were ignored by a peer that does not read"
    );
    assert!(speaker.process.is_running(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn withdraw_shutdown_delivers_the_cease_to_a_slow_peer_and_closes_with_a_fin() {
    let pair = Pair::new("spcease");
    let speaker = Speaker::start(BIN, &pair.a, "a", &config(""));
    speaker.wait_log("listening for BGP connections", T);
    let peer = RawBgp::connect_with(
        &pair.b,
        speaker_addr(),
        &RawOptions {
            recv_buffer: Some(4096),
            ..RawOptions::default()
        },
        T,
    );
    peer.send(&open_message(65000, 30, "192.0.2.2".parse().unwrap(), &[]));
    peer.send(&keepalive_message());
    speaker.wait_log("session established", T);
    // Wait for the initial sync: both End-of-RIB markers (UPDATEs of 23 and 29 octets).
    let start = Instant::now();
    let mut eors = 0;
    while eors < 2 {
        let m = peer
            .recv_message(T.saturating_sub(start.elapsed()))
            .expect("the initial sync and End-of-RIB");
        if message_type(&m) == Some(2) && matches!(m.len(), 23 | 29 | 30) {
            eors += 1;
        }
    }

    // The peer keeps talking while we stop, then stalls for a few seconds with its window
    // closed, so the withdrawals and the Cease wait in our send queue. Closing with unread
    // data there makes Linux send a RST and throw that queue away, Cease included.
    for i in 0..40 {
        if i == 10 {
            speaker.process.signal("TERM");
        }
        let _ = peer.try_send(&keepalive_message());
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.pause();
    std::thread::sleep(Duration::from_secs(4));
    peer.resume();

    let deadline = Instant::now() + T;
    let mut cease = None;
    let mut withdrawn_updates = 0;
    while cease.is_none() && Instant::now() < deadline {
        let Some(m) = peer.recv_message(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        match message_type(&m) {
            Some(2) => withdrawn_updates += 1,
            Some(3) => cease = notification(&m),
            _ => {}
        }
    }
    let (code, subcode, _) = cease.unwrap_or_else(|| {
        panic!(
            "no Cease after SIGTERM; relay: {}\n{}",
            peer.log(),
            speaker.log()
        )
    });
    assert_eq!((code, subcode), (6, 2), "Cease / Administrative Shutdown");
    assert!(withdrawn_updates > 0, "the routes are withdrawn first");
    // Our FIN follows the Cease, not a reset.
    assert!(peer.wait_closed(T), "connection still open: {}", peer.log());
    let log = peer.log();
    assert!(
        log.contains("closed") && !log.contains("reset"),
        "the speaker must close with a FIN, not a RST: {log}"
    );
}
