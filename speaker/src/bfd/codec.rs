//! The BFD Control packet (RFC 5880 §4.1) ⇄ bytes.
//!
//! `decode` applies every reception check of RFC 5880 §6.8.6 that can be made on the packet
//! alone (version, length against the bytes received, detect multiplier, multipoint, the
//! discriminators, the A bit against the length) and the per-type bounds of the
//! authentication section (§4.2–4.4), before it returns anything. Checks that need the
//! session (which discriminator it is, whether authentication is in use) belong to `fsm`.
//!
//! The module needs only `std` and `thiserror`, so the fuzz crate compiles it on its own.

use std::fmt;

/// RFC 5880 §4.1: "This document defines protocol version 1."
pub const VERSION: u8 = 1;
/// The mandatory section: 24 octets.
pub const MANDATORY_LEN: usize = 24;
/// The largest packet we accept or write: the mandatory section and the largest
/// authentication section (Simple Password of 16 octets: 3 + 16, or SHA1: 28).
pub const MAX_LEN: usize = MANDATORY_LEN + 28;

/// Session state (RFC 5880 §4.1 "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionState {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl SessionState {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        })
    }
}

/// Diagnostic code (RFC 5880 §4.1 "Diag"), why the sender last left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31: "Reserved for future use"; kept so that a packet re-encodes as received.
    Reserved(u8),
}

impl Diagnostic {
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::ControlDetectionTimeExpired => 1,
            Self::EchoFunctionFailed => 2,
            Self::NeighborSignaledSessionDown => 3,
            Self::ForwardingPlaneReset => 4,
            Self::PathDown => 5,
            Self::ConcatenatedPathDown => 6,
            Self::AdministrativelyDown => 7,
            Self::ReverseConcatenatedPathDown => 8,
            Self::Reserved(c) => c & 0x1f,
        }
    }

    pub fn from_code(c: u8) -> Self {
        match c & 0x1f {
            0 => Self::None,
            1 => Self::ControlDetectionTimeExpired,
            2 => Self::EchoFunctionFailed,
            3 => Self::NeighborSignaledSessionDown,
            4 => Self::ForwardingPlaneReset,
            5 => Self::PathDown,
            6 => Self::ConcatenatedPathDown,
            7 => Self::AdministrativelyDown,
            8 => Self::ReverseConcatenatedPathDown,
            c => Self::Reserved(c),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no diagnostic"),
            Self::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Self::EchoFunctionFailed => f.write_str("echo function failed"),
            Self::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Self::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Self::PathDown => f.write_str("path down"),
            Self::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Self::AdministrativelyDown => f.write_str("administratively down"),
            Self::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Self::Reserved(c) => write!(f, "reserved diagnostic {c}"),
        }
    }
}

/// The optional authentication section (RFC 5880 §4.2–4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// §4.2, type 1: a password of 1 to 16 octets.
    SimplePassword { key_id: u8, password: Vec<u8> },
    /// §4.3, types 2 (Keyed MD5) and 3 (Meticulous Keyed MD5).
    Md5 {
        meticulous: bool,
        key_id: u8,
        sequence: u32,
        digest: [u8; 16],
    },
    /// §4.4, types 4 (Keyed SHA1) and 5 (Meticulous Keyed SHA1).
    Sha1 {
        meticulous: bool,
        key_id: u8,
        sequence: u32,
        digest: [u8; 20],
    },
}

impl Authentication {
    /// Auth Type field.
    pub fn auth_type(&self) -> u8 {
        match self {
            Self::SimplePassword { .. } => 1,
            Self::Md5 { meticulous, .. } => 2 + u8::from(*meticulous),
            Self::Sha1 { meticulous, .. } => 4 + u8::from(*meticulous),
        }
    }

    /// Auth Len field: the whole section, type and length octets included.
    pub fn len(&self) -> usize {
        match self {
            Self::SimplePassword { password, .. } => 3 + password.len(),
            Self::Md5 { .. } => 24,
            Self::Sha1 { .. } => 28,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A BFD Control packet (RFC 5880 §4.1). Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: SessionState,
    /// P: the sender asks for a parameter change to be confirmed (§6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: demand mode (§6.6).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_interval: u32,
    pub required_min_rx_interval: u32,
    pub required_min_echo_rx_interval: u32,
    pub authentication: Option<Authentication>,
}

impl ControlPacket {
    /// Octets this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        MANDATORY_LEN + self.authentication.as_ref().map_or(0, Authentication::len)
    }
}

/// Why a received packet was discarded (RFC 5880 §6.8.6 and §4.2–4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{received} octets received; a control packet has at least 24 (RFC 5880 §6.8.6)")]
    TooShort { received: usize },
    #[error("version {0}; only version 1 exists (RFC 5880 §6.8.6)")]
    BadVersion(u8),
    #[error("Length field {length} is below the minimum {minimum} (RFC 5880 §6.8.6)")]
    LengthTooSmall { length: u8, minimum: u8 },
    #[error("Length field {length} exceeds the {received} octets received (RFC 5880 §6.8.6)")]
    LengthExceedsPayload { length: u8, received: usize },
    #[error("Detect Mult is zero (RFC 5880 §6.8.6)")]
    DetectMultZero,
    #[error("Multipoint bit set (RFC 5880 §6.8.6)")]
    Multipoint,
    #[error("My Discriminator is zero (RFC 5880 §6.8.6)")]
    MyDiscriminatorZero,
    #[error("Your Discriminator is zero in state {0} (RFC 5880 §6.8.6: only Down and AdminDown)")]
    YourDiscriminatorZero(SessionState),
    #[error("Poll and Final bits both set (RFC 5880 §6.5)")]
    PollAndFinal,
    #[error("Auth Type {0} is reserved (RFC 5880 §4.1)")]
    UnknownAuthType(u8),
    #[error("Auth Len {auth_len} is wrong for Auth Type {auth_type} (RFC 5880 §4.2-4.4)")]
    BadAuthLen { auth_type: u8, auth_len: u8 },
    #[error("Auth Len {auth_len} does not fit the packet's Length {length} (RFC 5880 §4.1)")]
    AuthLenMismatch { auth_len: u8, length: u8 },
}

/// Decodes one Control packet from the payload of one UDP datagram. Octets beyond the Length
/// field are ignored (§6.8.6 only requires Length not to exceed the payload).
pub fn decode(buf: &[u8]) -> Result<ControlPacket, DecodeError> {
    if buf.len() < MANDATORY_LEN {
        return Err(DecodeError::TooShort {
            received: buf.len(),
        });
    }
    let version = buf[0] >> 5;
    if version != VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    let flags = buf[1];
    let auth_present = flags & 0x04 != 0;
    let length = buf[3];
    // "If the A bit is set and the Length field is less than 26 ... discarded."
    let minimum = if auth_present { 26 } else { 24 };
    if length < minimum {
        return Err(DecodeError::LengthTooSmall { length, minimum });
    }
    if usize::from(length) > buf.len() {
        return Err(DecodeError::LengthExceedsPayload {
            length,
            received: buf.len(),
        });
    }
    let detect_mult = buf[2];
    if detect_mult == 0 {
        return Err(DecodeError::DetectMultZero);
    }
    if flags & 0x01 != 0 {
        return Err(DecodeError::Multipoint);
    }
    let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let my_discriminator = word(4);
    if my_discriminator == 0 {
        return Err(DecodeError::MyDiscriminatorZero);
    }
    let state = SessionState::from_bits(flags >> 6);
    let your_discriminator = word(8);
    if your_discriminator == 0 && !matches!(state, SessionState::Down | SessionState::AdminDown) {
        return Err(DecodeError::YourDiscriminatorZero(state));
    }
    let poll = flags & 0x20 != 0;
    let final_ = flags & 0x10 != 0;
    if poll && final_ {
        return Err(DecodeError::PollAndFinal);
    }
    let authentication = if auth_present {
        Some(decode_auth(
            &buf[MANDATORY_LEN..usize::from(length)],
            length,
        )?)
    } else {
        None
    };
    Ok(ControlPacket {
        diagnostic: Diagnostic::from_code(buf[0]),
        state,
        poll,
        final_,
        control_plane_independent: flags & 0x08 != 0,
        demand: flags & 0x02 != 0,
        detect_mult,
        my_discriminator,
        your_discriminator,
        desired_min_tx_interval: word(12),
        required_min_rx_interval: word(16),
        required_min_echo_rx_interval: word(20),
        authentication,
    })
}

/// `section` is everything between the mandatory section and the Length field (≥ 2 octets).
fn decode_auth(section: &[u8], length: u8) -> Result<Authentication, DecodeError> {
    let auth_type = section[0];
    let auth_len = section[1];
    if usize::from(auth_len) != section.len() {
        return Err(DecodeError::AuthLenMismatch { auth_len, length });
    }
    let bad_len = DecodeError::BadAuthLen {
        auth_type,
        auth_len,
    };
    let sequence = |s: &[u8]| u32::from_be_bytes([s[4], s[5], s[6], s[7]]);
    match auth_type {
        // §4.2: Auth Len is the password length plus three; the password is 1 to 16 octets.
        1 => {
            if !(4..=19).contains(&auth_len) {
                return Err(bad_len);
            }
            Ok(Authentication::SimplePassword {
                key_id: section[2],
                password: section[3..].to_vec(),
            })
        }
        // §4.3: Auth Len 24; §4.4: Auth Len 28. The Reserved octet is ignored on receipt.
        2 | 3 => {
            if auth_len != 24 {
                return Err(bad_len);
            }
            let mut digest = [0; 16];
            digest.copy_from_slice(&section[8..24]);
            Ok(Authentication::Md5 {
                meticulous: auth_type == 3,
                key_id: section[2],
                sequence: sequence(section),
                digest,
            })
        }
        4 | 5 => {
            if auth_len != 28 {
                return Err(bad_len);
            }
            let mut digest = [0; 20];
            digest.copy_from_slice(&section[8..28]);
            Ok(Authentication::Sha1 {
                meticulous: auth_type == 5,
                key_id: section[2],
                sequence: sequence(section),
                digest,
            })
        }
        t => Err(DecodeError::UnknownAuthType(t)),
    }
}

/// Why a packet cannot be written: fields that no receiver would accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("Detect Mult must not be zero (RFC 5880 §4.1)")]
    DetectMultZero,
    #[error("My Discriminator must not be zero (RFC 5880 §6.8.1)")]
    MyDiscriminatorZero,
    #[error("Poll and Final bits both set (RFC 5880 §6.5)")]
    PollAndFinal,
    #[error("a Simple Password is 1 to 16 octets (RFC 5880 §4.2)")]
    PasswordLength,
}

/// Appends the packet to `out`.
pub fn encode(p: &ControlPacket, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if p.detect_mult == 0 {
        return Err(EncodeError::DetectMultZero);
    }
    if p.my_discriminator == 0 {
        return Err(EncodeError::MyDiscriminatorZero);
    }
    if p.poll && p.final_ {
        return Err(EncodeError::PollAndFinal);
    }
    if let Some(Authentication::SimplePassword { password, .. }) = &p.authentication
        && !(1..=16).contains(&password.len())
    {
        return Err(EncodeError::PasswordLength);
    }
    let len = p.encoded_len();
    out.reserve(len);
    out.push((VERSION << 5) | p.diagnostic.code());
    let flags = ((p.state as u8) << 6)
        | (u8::from(p.poll) << 5)
        | (u8::from(p.final_) << 4)
        | (u8::from(p.control_plane_independent) << 3)
        | (u8::from(p.authentication.is_some()) << 2)
        | (u8::from(p.demand) << 1);
    out.push(flags);
    out.push(p.detect_mult);
    // At most 24 + 28 octets, checked above.
    out.push(len as u8);
    for w in [
        p.my_discriminator,
        p.your_discriminator,
        p.desired_min_tx_interval,
        p.required_min_rx_interval,
        p.required_min_echo_rx_interval,
    ] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    if let Some(a) = &p.authentication {
        out.push(a.auth_type());
        out.push(a.len() as u8);
        match a {
            Authentication::SimplePassword { key_id, password } => {
                out.push(*key_id);
                out.extend_from_slice(password);
            }
            Authentication::Md5 {
                key_id,
                sequence,
                digest,
                ..
            } => {
                out.extend_from_slice(&[*key_id, 0]);
                out.extend_from_slice(&sequence.to_be_bytes());
                out.extend_from_slice(digest);
            }
            Authentication::Sha1 {
                key_id,
                sequence,
                digest,
                ..
            } => {
                out.extend_from_slice(&[*key_id, 0]);
                out.extend_from_slice(&sequence.to_be_bytes());
                out.extend_from_slice(digest);
            }
        }
    }
    Ok(())
}

/// Encodes into a new buffer.
pub fn to_vec(p: &ControlPacket) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::with_capacity(p.encoded_len());
    encode(p, &mut v)?;
    Ok(v)
}
