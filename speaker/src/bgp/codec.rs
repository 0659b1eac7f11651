//! BGP wire format on `bytes` (no tokio here). SIGNATURES ARE A CONTRACT used by fsm/rib/session:
//! the codec engineer fills in the bodies and may add items, but keeps these names and shapes.

use bytes::BytesMut;

use super::message::{Message, Notification};

/// RFC 4271 §4.1: a message is at most 4096 octets unless both sides sent the Extended Message
/// capability (RFC 8654), which raises the limit to 65535 for everything but OPEN and KEEPALIVE.
pub const MAX_MESSAGE_LEN: usize = 4096;
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
pub const HEADER_LEN: usize = 19;

/// What was negotiated and changes how bytes are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodecContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
    /// Both sides sent the Extended Message capability (RFC 8654).
    pub extended_message: bool,
}

impl CodecContext {
    pub fn max_message_len(&self) -> usize {
        if self.extended_message { MAX_EXTENDED_MESSAGE_LEN } else { MAX_MESSAGE_LEN }
    }
}

/// A message could not be written (e.g. it would exceed the negotiated maximum length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} octets exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
}

/// A received message is malformed in a way that resets the session: the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed BGP message: NOTIFICATION {}/{}", .notification.code, .notification.subcode)]
pub struct DecodeError {
    pub notification: Notification,
}

/// The result of decoding one framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
}

/// Length of the complete message at the start of `buf`, `Ok(None)` while it is still partial.
/// Checks the marker and the length field (RFC 4271 §6.1) before anything is sliced.
pub fn frame_len(_buf: &[u8], _ctx: &CodecContext) -> Result<Option<usize>, DecodeError> {
    unimplemented!("codec being written")
}

/// Decode one complete message (`frame_len` bytes).
pub fn decode(_frame: &[u8], _ctx: &CodecContext) -> Result<Decoded, DecodeError> {
    unimplemented!("codec being written")
}

/// Append the wire form of `msg` to `out`.
pub fn encode(_msg: &Message, _ctx: &CodecContext, _out: &mut BytesMut) -> Result<(), EncodeError> {
    unimplemented!("codec being written")
}
