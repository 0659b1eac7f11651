//! Replays every checked-in fuzz corpus file (dns-proxy/fuzz/corpus/handle_packet/) through
//! the same request path as the `handle_packet` fuzz target, on stable Rust: no panic, every
//! reply parses and fits UDP.

use std::net::SocketAddr;
use std::path::PathBuf;

use hickory_proto::op::{Message, ResponseCode};
use leafbridge_dns::server::{Outcome, Transport};

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_packet");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus");
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn corpus_replays_without_panics_and_with_well_formed_replies() {
    let server = leafbridge_dns::testing::fixture_server();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    for (path, data) in corpus() {
        for (src, t) in [
            ("127.0.0.1:4000", Transport::Udp),
            ("192.0.2.7:4000", Transport::Tcp),
        ] {
            let out = server.handle(&data, src.parse().unwrap(), local, t);
            if let Outcome::Reply(bytes) = out {
                if t == Transport::Udp {
                    assert!(
                        bytes.len() <= 1232,
                        "{}: UDP reply of {} bytes",
                        path.display(),
                        bytes.len()
                    );
                }
                Message::from_vec(&bytes)
                    .unwrap_or_else(|e| panic!("{}: reply does not parse: {e}", path.display()));
            }
        }
    }
}

fn reply(name: &str) -> Message {
    let server = leafbridge_dns::testing::fixture_server();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/handle_packet")
        .join(name);
    let data = std::fs::read(path).unwrap();
    match server.handle(
        &data,
        "127.0.0.1:4000".parse().unwrap(),
        "127.0.0.1:53".parse().unwrap(),
        Transport::Udp,
    ) {
        Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
        other => panic!("{name}: expected a reply, got {other:?}"),
    }
}

#[test]
fn protocol_errors_get_their_rfc_response_codes() {
    assert_eq!(
        reply("two_questions").metadata.response_code,
        ResponseCode::FormErr
    );
    assert_eq!(
        reply("notify_opcode").metadata.response_code,
        ResponseCode::NotImp
    );
    assert_eq!(
        reply("compression_loop").metadata.response_code,
        ResponseCode::FormErr
    );
    assert_eq!(
        reply("header_only").metadata.response_code,
        ResponseCode::FormErr
    );
}

#[test]
fn responses_and_runts_are_dropped() {
    let server = leafbridge_dns::testing::fixture_server();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_packet");
    for name in ["response_bit", "short"] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let out = server.handle(
            &data,
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap(),
            Transport::Udp,
        );
        assert!(matches!(out, Outcome::Drop), "{name}: {out:?}");
    }
}

#[test]
fn fixture_answers_are_authoritative() {
    let r = reply("a_service");
    assert!(r.metadata.authoritative);
    assert_eq!(r.answers.len(), 1);
    let r = reply("srv_headless");
    assert_eq!(r.answers.len(), 2);
    assert!(r.edns.is_some(), "OPT echoed (RFC 6891 6.1.1)");
}

#[test]
fn client_subnet_is_echoed_with_its_scope() {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let r = reply("external_zone_ecs");
    let Some(EdnsOption::Subnet(cs)) = r.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
    else {
        panic!("no client-subnet echoed: {r:?}");
    };
    assert_eq!(cs.source_prefix(), 24);
    // The fixture's sender is no trusted forwarder, so the option chose nothing: scope 0
    // (RFC 7871 7.2.1).
    assert_eq!(cs.scope_prefix(), 0);
}
