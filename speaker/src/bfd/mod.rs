//! leafbridge's own BFD (RFC 5880 asynchronous mode; single hop RFC 5881, multihop RFC 5883),
//! in the shape of `bgp/`:
//!
//! - `codec`: the Control packet ⇄ bytes, validating before it trusts (§6.8.6).
//! - `fsm`: the session state machine, sans-IO (inputs in, outputs out, no clock).
pub mod codec;
pub mod fsm;
