//! leafbridge's own BFD (RFC 5880 asynchronous mode; single hop RFC 5881, multihop RFC 5883),
//! in the shape of `bgp/`:
//!
//! - `codec`: the Control packet ⇄ bytes, validating before it trusts (§6.8.6).
//! - `fsm`: the session state machine, sans-IO (inputs in, outputs out, no clock).
//! - `auth`: keyed SHA1 (§6.7.4) over the encoded packet.
//! - `session`: the one task that owns the UDP sockets and timers and drives every `fsm`.
pub mod auth;
pub mod codec;
pub mod fsm;
pub mod session;

pub use codec::SessionState as BfdState;
pub use session::{Bfd, BfdSession, BfdStatus, Hops, PeerSpec, Profile};
