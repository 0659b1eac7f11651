//! BGP wire format on `bytes` (no tokio here). The signatures below are a contract used by
//! fsm/rib/session: add items freely, keep these names and shapes.
//!
//! - `frame_len` finds message boundaries in a byte stream (RFC 4271 §4.1, §6.1).
//! - `decode` turns one frame into a [`Message`]; an error that resets the session comes back as
//!   the NOTIFICATION to send ([`DecodeError`]); UPDATE errors that RFC 7606 handles without a
//!   reset come back as [`Rfc7606`] outcomes next to the message ([`Decoded::rfc7606`]).
//! - `encode` appends a message to a `BytesMut`, computing lengths up front so that a large
//!   UPDATE is written in one pass without intermediate buffers.
//!
//! Submodules: `encode`, `decode`, `helpers` (NOTIFICATION codes and constructors, RFC 8203/9003
//! shutdown communication, End-of-RIB, AFI/SAFI numbers), `wire` (type codes and flags).

use bytes::BytesMut;

use super::message::{Message, Notification};

mod decode;
mod encode;
mod helpers;
pub mod wire;

pub use encode::{nlri_len, path_attributes_len, update_len};
pub use helpers::{ShutdownCommunicationError, notif};

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
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A message could not be written (e.g. it would exceed the negotiated maximum length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} octets exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// The message cannot be expressed on the wire (e.g. an IPv6 prefix in the IPv4 NLRI field,
    /// a capability value longer than 255 octets).
    #[error("message cannot be encoded: {0}")]
    Invalid(&'static str),
}

/// A received message is malformed in a way that resets the session: the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed BGP message: NOTIFICATION {}/{}", .notification.code, .notification.subcode)]
pub struct DecodeError {
    pub notification: Notification,
}

impl DecodeError {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            notification: Notification {
                code,
                subcode,
                data: data.into(),
            },
        }
    }
}

/// The result of decoding one framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    /// RFC 7606 outcomes for a received UPDATE, in the order found; empty for a clean message.
    /// A malformed attribute handled by "attribute discard" is absent from `message`; when any
    /// outcome is [`Rfc7606::Withdraw`], every prefix the UPDATE announces must be treated as
    /// withdrawn (see [`Decoded::treat_as_withdraw`]).
    pub rfc7606: Vec<Rfc7606>,
}

impl Decoded {
    /// RFC 7606 §2 "treat-as-withdraw": the UPDATE's NLRI (and MP_REACH_NLRI prefixes) must be
    /// handled as if they had been listed as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.rfc7606
            .iter()
            .any(|o| matches!(o, Rfc7606::Withdraw { .. }))
    }
}

/// An UPDATE error handled without a session reset (RFC 7606 §2). Errors that do reset the
/// session are a [`DecodeError`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc7606 {
    /// "treat-as-withdraw": the routes of this UPDATE are withdrawn.
    Withdraw {
        attribute: u8,
        reason: AttributeError,
    },
    /// "attribute discard": the attribute was dropped, the UPDATE is otherwise used.
    Discard {
        attribute: u8,
        reason: AttributeError,
    },
}

impl std::fmt::Display for Rfc7606 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rfc7606::Withdraw { attribute, reason } => {
                write!(
                    f,
                    "treat-as-withdraw (attribute type {attribute}: {reason})"
                )
            }
            Rfc7606::Discard { attribute, reason } => {
                write!(
                    f,
                    "attribute discard (attribute type {attribute}: {reason})"
                )
            }
        }
    }
}

/// Why a path attribute was found malformed (in RFC 7606's terms, for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// RFC 7606 §3(c): the Optional / Transitive bits disagree with the attribute's definition.
    #[error("attribute flags conflict with the attribute type")]
    FlagsConflict,
    /// The attribute length is not what the attribute type requires (RFC 7606 §7).
    #[error("attribute length {0} is invalid for the attribute type")]
    BadLength(u16),
    /// RFC 7606 §4: an attribute header or value runs past the end of the path attributes.
    #[error("attribute overruns the path attributes field")]
    Overrun,
    /// RFC 7606 §7.1: ORIGIN value other than IGP, EGP, INCOMPLETE.
    #[error("undefined ORIGIN value {0}")]
    InvalidOrigin(u8),
    /// RFC 7606 §7.2: unknown segment type, empty segment, or segment overrun.
    #[error("malformed AS_PATH")]
    MalformedAsPath,
    /// Confederation segments (RFC 5065) are not expected from the peers leafbridge talks to.
    #[error("AS_PATH carries confederation segments")]
    ConfederationSegment,
    /// RFC 4271 §6.3 / RFC 7606 §7.3: NEXT_HOP is not a usable unicast address.
    #[error("next hop is not a valid unicast address")]
    InvalidNextHop,
    /// RFC 7606 §3(d): a well-known mandatory attribute is missing while NLRI are present.
    #[error("missing well-known mandatory attribute")]
    Missing,
    /// RFC 7606 §3(g): a non-MP attribute appeared more than once; later copies are dropped.
    #[error("attribute appears more than once")]
    Duplicate,
    /// MP_REACH_NLRI / MP_UNREACH_NLRI for an AFI/SAFI this codec does not parse.
    #[error("address family not supported")]
    UnsupportedFamily,
    /// RFC 6793 §3: AS4_PATH / AS4_AGGREGATOR received from a 4-octet-AS speaker.
    #[error("AS4_PATH/AS4_AGGREGATOR received on a 4-octet AS session")]
    UnexpectedAs4Attribute,
}

/// Length of the complete message at the start of `buf`, `Ok(None)` while it is still partial.
/// Checks the marker and the length field (RFC 4271 §6.1) before anything is sliced.
pub fn frame_len(buf: &[u8], ctx: &CodecContext) -> Result<Option<usize>, DecodeError> {
    decode::frame_len(buf, ctx)
}

/// Decode one complete message (`frame_len` bytes).
pub fn decode(frame: &[u8], ctx: &CodecContext) -> Result<Decoded, DecodeError> {
    decode::decode(frame, ctx)
}

/// Append the wire form of `msg` to `out`. On error nothing is appended.
pub fn encode(msg: &Message, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), EncodeError> {
    encode::encode(msg, ctx, out)
}
