//! What the `bfd_decode` target checks, shared with the stable corpus replay
//! (`speaker/tests/bfd_corpus_replay.rs`): no input panics the decoder, and whatever decodes
//! encodes (every decoded packet is writable) to bytes that decode to the same packet.

use crate::bfd::codec;

pub fn decode(data: &[u8]) {
    let Ok(packet) = codec::decode(data) else {
        return;
    };
    let bytes = codec::to_vec(&packet).expect("a decoded packet re-encodes");
    assert_eq!(bytes.len(), packet.encoded_len());
    let again = codec::decode(&bytes).expect("re-encoded packet decodes");
    assert_eq!(again, packet);
}
