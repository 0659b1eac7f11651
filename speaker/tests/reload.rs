//! Reloads of the standalone configuration, with the real binary in a namespace pair: the
//! listener moves without a gap and a failed reload changes nothing, peers are told apart by
//! address and port, and the Restart State bit is only for the sessions we had before a
//! restart.

mod common;

use std::time::Duration;

use common::BIN;
use common::Speaker;
use leafbridge_speaker::bgp::codec::{self, CodecContext};
use leafbridge_speaker::bgp::message::{Capability, Message};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::raw::{RawBgp, keepalive_message, message_type, open_message};
use leafbridge_tests::{Pair, wait_until};

const T: Duration = Duration::from_secs(20);

fn config(listen: &str, peers: &str) -> String {
    format!(
        "local_as: 65001\nrouter_id: 192.0.2.1\nlisten: {{ address: \"{listen}\", port: 179 }}\npeers:\n{peers}prefixes:\n  - prefix: 203.0.113.1/32\n"
    )
}

/// A raw peer in `b` opens a connection to the speaker and sends its OPEN; the speaker's
/// answer (its OPEN) comes back.
#[track_caller]
fn raw_open(pair: &Pair, asn: u32) -> (RawBgp, Vec<u8>) {
    let peer = RawBgp::connect(&pair.b, "192.0.2.1:179".parse().unwrap(), T);
    peer.send(&open_message(asn, 30, "192.0.2.2".parse().unwrap(), &[]));
    let open = peer.recv_message(T).expect("the speaker's OPEN");
    assert_eq!(message_type(&open), Some(1), "{open:?}");
    (peer, open)
}

/// The speaker's log without terminal colours.
fn plain_log(speaker: &Speaker) -> String {
    let mut out = String::new();
    let mut chars = speaker.log().chars().collect::<Vec<_>>().into_iter();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of the speaker's log about peer `name` that contain `needle`.
fn peer_lines(speaker: &Speaker, name: &str, needle: &str) -> usize {
    let tag = format!("{{name={name} ");
    plain_log(speaker)
        .lines()
        .filter(|l| l.contains(&tag) && l.contains(needle))
        .count()
}

/// The graceful-restart capability's Restart State bit of an OPEN.
fn restart_state(open: &[u8]) -> Option<bool> {
    let Message::Open(open) = codec::decode(open, &CodecContext::default())
        .expect("a well-formed OPEN")
        .message
    else {
        panic!("not an OPEN")
    };
    open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr.restart_state),
        _ => None,
    })
}

#[test]
fn a_listener_moved_onto_the_same_port_binds_first_and_carries_the_md5_keys() {
    let pair = Pair::new("sprlmv");
    let mut bird_cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    let mut peer = BirdPeer::new("node1", Pair::a_v4(), 65001);
    peer.password = Some("move-key".into());
    bird_cfg.peers.push(peer);
    let mut bird = Bird::start(&pair.b, "leaf", &bird_cfg);
    let key = pair.topo.dir().join("bgp.key");
    std::fs::write(&key, "move-key\n").unwrap();
    let peers = format!(
        "  - {{ name: leaf, address: 192.0.2.2, remote_as: 65000, passive: true, password_file: {} }}\n",
        key.display()
    );
    let speaker = Speaker::start(BIN, &pair.a, "a", &config("0.0.0.0", &peers));
    bird.wait_established("node1", T);

    // 0.0.0.0:179 → 192.0.2.1:179: the new socket overlaps the old one, which is still open.
    speaker.edit(&config("192.0.2.1", &peers));
    wait_until(T, "the reload", || {
        let log = speaker.log();
        log.contains("configuration reloaded") || log.contains("configuration edit rejected")
    });
    let log = speaker.log();
    assert!(
        !log.contains("configuration edit rejected"),
        "moving the listener onto an overlapping address must work:\n{log}"
    );
    assert!(plain_log(&speaker).contains("addr=192.0.2.1:179"), "{log}");
    // The session of an unchanged peer is not touched by a listener change.
    assert!(bird.is_established("node1"));
    // A new connection (with its MD5 signature) reaches the new listener.
    bird.restart();
    bird.wait_established("node1", Duration::from_secs(40));
    assert!(!speaker.log().contains("move-key"), "never log a key");
}

#[test]
fn a_reload_whose_listener_or_key_fails_keeps_the_old_listener_and_configuration() {
    let pair = Pair::new("sprlfail");
    let one = "  - { name: raw, address: 192.0.2.2, remote_as: 65000, passive: true }\n";
    let speaker = Speaker::start(BIN, &pair.a, "a", &config("192.0.2.1", one));
    speaker.wait_log("listening for BGP connections", T);

    // An address this host does not have: the bind fails.
    speaker.edit(&config("198.51.100.1", one));
    speaker.wait_log("configuration edit rejected", T);
    // An IPv6 peer's MD5 key on an IPv4 listener: the kernel refuses it.
    let key = pair.topo.dir().join("v6.key");
    std::fs::write(&key, "v6-key\n").unwrap();
    let two = format!(
        "{one}  - {{ name: six, address: \"2001:db8::2\", remote_as: 65000, passive: true, ipv4_next_hop: 192.0.2.1, password_file: {} }}\n",
        key.display()
    );
    speaker.edit(&config("192.0.2.1", &two));
    wait_until(T, "the second edit rejected", || {
        speaker.log().matches("configuration edit rejected").count() == 2
    });
    let log = speaker.log();
    assert!(log.contains("TCP MD5"), "{log}");
    assert!(
        !plain_log(&speaker).contains("peer=six"),
        "no session may start for a rejected edit:\n{log}"
    );
    // The old listener still accepts, for the old peers.
    let (peer, _) = raw_open(&pair, 65000);
    peer.send(&keepalive_message());
    wait_until(T, "the raw peer's session", || {
        peer_lines(&speaker, "raw", "session established") == 1
    });
}

#[test]
fn two_peers_on_one_address_keep_their_own_inbound_connections() {
    let pair = Pair::new("sprltwo");
    let both = "  - { name: one, address: 192.0.2.2, remote_as: 65000, passive: true }\n  - { name: two, address: 192.0.2.2, port: 1179, remote_as: 65002, passive: true }\n";
    let speaker = Speaker::start(BIN, &pair.a, "a", &config("192.0.2.1", both));
    speaker.wait_log("listening for BGP connections", T);

    // The OPEN's AS says which of the two is calling.
    let (p2, _) = raw_open(&pair, 65002);
    p2.send(&keepalive_message());
    let (p1, _) = raw_open(&pair, 65000);
    p1.send(&keepalive_message());
    wait_until(T, "both sessions", || {
        peer_lines(&speaker, "one", "session established") == 1
            && peer_lines(&speaker, "two", "session established") == 1
    });

    // Removing one leaves the other's inbound route in place.
    speaker.edit(&config(
        "192.0.2.1",
        "  - { name: one, address: 192.0.2.2, remote_as: 65000, passive: true }\n",
    ));
    speaker.wait_log("configuration reloaded", T);
    p1.close();
    wait_until(T, "the first session down", || {
        peer_lines(&speaker, "one", "session down") >= 1
            || peer_lines(&speaker, "one", "connection closed") >= 1
    });
    let (again, _) = raw_open(&pair, 65000);
    again.send(&keepalive_message());
    wait_until(T, "the first peer back", || {
        peer_lines(&speaker, "one", "session established") == 2
    });
    assert!(!speaker.log().contains("inbound connection refused"));
}

#[test]
fn the_restart_state_bit_is_only_for_the_peers_of_the_first_start() {
    let pair = Pair::new("sprlrbit");
    let first =
        "  - { name: first, address: 192.0.2.2, remote_as: 65000, graceful_restart: true }\n";
    let listener = RawBgp::listen(&pair.b, "192.0.2.2:179".parse().unwrap());
    // The marker a graceful shutdown leaves behind, and a start-up that fails: the marker
    // stays for the next start.
    let mut speaker = Speaker::start(BIN, &pair.a, "a", &config("198.51.100.1", first));
    assert!(
        speaker.process.wait_exit(T).is_some(),
        "a listener that cannot bind fails the start:\n{}",
        speaker.log()
    );
    let marker = speaker.restart_marker_dir.join("graceful-restart");
    std::fs::create_dir_all(&speaker.restart_marker_dir).unwrap();
    std::fs::write(&marker, b"").unwrap();
    speaker.restart(&[]);
    assert!(speaker.process.wait_exit(T).is_some(), "{}", speaker.log());
    assert!(
        marker.exists(),
        "a start-up that failed must leave the restart marker"
    );

    std::fs::write(&speaker.config, config("192.0.2.1", first)).unwrap();
    speaker.restart(&[]);
    listener.wait_connected(T);
    let open = listener.recv_message(T).expect("the speaker's OPEN");
    assert_eq!(restart_state(&open), Some(true), "restarted: R bit set");
    speaker.wait_log("listening for BGP connections", T);
    wait_until(T, "the marker taken", || !marker.exists());

    // A peer added afterwards did not see us restart.
    let later_listener = RawBgp::listen(&pair.b, "192.0.2.2:1179".parse().unwrap());
    speaker.edit(&config(
        "192.0.2.1",
        &format!(
            "{first}  - {{ name: later, address: 192.0.2.2, port: 1179, remote_as: 65002, graceful_restart: true }}\n"
        ),
    ));
    later_listener.wait_connected(T);
    let open = later_listener.recv_message(T).expect("the speaker's OPEN");
    assert_eq!(
        restart_state(&open),
        Some(false),
        "a peer added by a reload gets no R bit"
    );
}

/// A directory laid out as the kubelet lays out a ConfigMap or Secret volume: each version in
/// its own directory, `..data` a symlink to the current one, and every file a symlink through
/// `..data`. An update swaps `..data` (a rename), never naming the files.
struct ProjectedVolume {
    dir: std::path::PathBuf,
    version: u32,
}

impl ProjectedVolume {
    fn new(dir: std::path::PathBuf, file: &str, content: &str) -> ProjectedVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = ProjectedVolume { dir, version: 0 };
        v.update(file, content);
        std::os::unix::fs::symlink(format!("..data/{file}"), v.dir.join(file)).unwrap();
        v
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    fn update(&mut self, file: &str, content: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir_all(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join(file), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[test]
fn configmap_and_secret_volume_updates_are_reloaded() {
    let pair = Pair::new("sprlcm");
    let mut secret = ProjectedVolume::new(pair.topo.dir().join("secret"), "bgp.key", "key-one\n");
    let peers = format!(
        "  - {{ name: leaf, address: 192.0.2.2, remote_as: 65000, passive: true, password_file: {} }}\n",
        secret.path("bgp.key").display()
    );
    let mut cm = ProjectedVolume::new(
        pair.topo.dir().join("configmap"),
        "speaker.yaml",
        &config("192.0.2.1", &peers),
    );
    let speaker = Speaker::start_at(BIN, &pair.a, "a", cm.path("speaker.yaml"));
    speaker.wait_log("listening for BGP connections", T);

    let two_prefixes = format!(
        "{}  - prefix: 203.0.113.2/32\n",
        config("192.0.2.1", &peers)
    );
    cm.update("speaker.yaml", &two_prefixes);
    speaker.wait_log("configuration reloaded", T);
    // The key file changes, the configuration does not: the peer restarts with the new key.
    secret.update("bgp.key", "key-two\n");
    wait_until(T, "the key change applied", || {
        plain_log(&speaker).contains("peer configuration changed")
    });
    assert_eq!(
        plain_log(&speaker)
            .matches("configuration reloaded")
            .count(),
        2
    );
    assert!(!speaker.log().contains("key-"), "never log a key");
}
