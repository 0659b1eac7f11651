//! What every fuzz target (and the corpus replay test) checks: no input panics `frame_len` or
//! `decode`, and a message that decodes re-encodes to bytes that decode to the same message.
//!
//! Included by path from `speaker/tests/codec_corpus_replay.rs`, where `crate::bgp` re-exports
//! `leafbridge_speaker::bgp`.

use bytes::BytesMut;

use crate::bgp::codec::{self, CodecContext, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN};

/// The first input byte chooses what was negotiated; bit 0: 4-octet AS, bit 1: extended message.
fn split_context(data: &[u8]) -> Option<(CodecContext, &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let ctx = CodecContext {
        four_octet_as: flags & 1 != 0,
        extended_message: flags & 2 != 0,
    };
    Some((ctx, rest))
}

/// One framed message: decode it and, if it decodes, check re-encoding is stable.
pub fn check_frame(frame: &[u8], ctx: &CodecContext) {
    let Ok(decoded) = codec::decode(frame, ctx) else {
        return;
    };
    let mut out = BytesMut::new();
    if codec::encode(&decoded.message, ctx, &mut out).is_err() {
        return;
    }
    assert_eq!(
        codec::frame_len(&out, ctx),
        Ok(Some(out.len())),
        "re-encoded frame length"
    );
    let again = codec::decode(&out, ctx).expect("a re-encoded message decodes");
    assert_eq!(again.message, decoded.message, "decode(encode(m)) == m");
}

/// `decode_stream` target: context byte, then a TCP byte stream cut into frames as the session
/// does it.
pub fn decode_stream(data: &[u8]) {
    let Some((ctx, mut stream)) = split_context(data) else {
        return;
    };
    loop {
        match codec::frame_len(stream, &ctx) {
            Ok(Some(len)) => {
                let Some((frame, rest)) = stream.split_at_checked(len) else {
                    panic!(
                        "frame_len returned {len} for {} buffered octets",
                        stream.len()
                    );
                };
                check_frame(frame, &ctx);
                stream = rest;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// `decode_open` / `decode_update` targets: context byte, then a message body that is put
/// behind a valid header of `msg_type`, so every input reaches the body decoder.
pub fn decode_body(msg_type: u8, data: &[u8]) {
    let Some((ctx, body)) = split_context(data) else {
        return;
    };
    if HEADER_LEN + body.len() > MAX_EXTENDED_MESSAGE_LEN {
        return;
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&[0xff; 16]);
    frame.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    frame.push(msg_type);
    frame.extend_from_slice(body);
    check_frame(&frame, &ctx);
}
