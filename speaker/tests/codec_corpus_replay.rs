//! Replays every checked-in fuzz corpus file (speaker/fuzz/corpus/<target>/) through the same
//! harness the cargo-fuzz targets run, on stable Rust: no input panics, and whatever decodes
//! re-encodes to the same message.

use std::path::PathBuf;

use leafbridge_speaker::bgp::codec::{self, CodecContext};

/// The harness names the codec as `crate::bgp::codec`.
mod bgp {
    pub use leafbridge_speaker::bgp::*;
}

#[path = "../fuzz/src/harness.rs"]
mod harness;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file readable");
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    files
}

#[test]
fn decode_stream_corpus_replays_without_panics() {
    for (_path, data) in corpus("decode_stream") {
        harness::decode_stream(&data);
    }
}

#[test]
fn decode_open_corpus_replays_without_panics() {
    for (_path, data) in corpus("decode_open") {
        harness::decode_body(1, &data);
    }
}

#[test]
fn decode_update_corpus_replays_without_panics() {
    for (_path, data) in corpus("decode_update") {
        harness::decode_body(2, &data);
    }
}

#[test]
fn captured_bird_session_decodes_message_by_message() {
    let (_, data) = corpus("decode_stream")
        .into_iter()
        .find(|(p, _)| p.ends_with("bird-session-open-keepalive-updates-eor"))
        .expect("BIRD capture in the corpus");
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: true,
    };
    let mut stream = &data[1..];
    let mut count = 0;
    while !stream.is_empty() {
        let len = codec::frame_len(stream, &ctx)
            .unwrap()
            .expect("complete frame");
        let decoded = codec::decode(&stream[..len], &ctx).unwrap();
        assert!(decoded.rfc7606.is_empty(), "{decoded:?}");
        stream = &stream[len..];
        count += 1;
    }
    // OPEN, KEEPALIVE, two IPv4 UPDATEs, IPv4 End-of-RIB, IPv6 UPDATE, IPv6 End-of-RIB.
    assert_eq!(count, 7);
}
