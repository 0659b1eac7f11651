//! leafbridge's own BGP implementation (see docs/architecture.md for why not a crate).
//!
//! - `message`: the message types.
//! - `codec`: bytes ⇄ messages on `bytes`, no tokio; decode errors map to NOTIFICATIONs.
//! - `fsm`: the RFC 4271 session state machine, sans-IO.
//! - `rib`: the Adj-RIB-Out: desired routes in, the fewest UPDATEs out.
//! - `transport`: TCP sockets (source address, TTL/GTSM, TCP-MD5).
//! - `session`: the per-peer tokio task that owns a socket and timers and drives `fsm`.

pub mod codec;
pub mod fsm;
pub mod log_limit;
pub mod message;
pub mod rib;
pub mod session;
pub mod transport;
