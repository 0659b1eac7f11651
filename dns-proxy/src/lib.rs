//! Split-horizon DNS proxy for the cluster domain with a forwarding cache.
//!
//! Pure parts: [`index`] (objects → DNS data), [`answer`] (questions → answers),
//! [`view`] (client → view). I/O at the edges: [`server`] (UDP/TCP), [`forward`]
//! (upstreams and cache); cluster state and /metrics come from `leafbridge_api`.
#![forbid(unsafe_code)]

pub mod answer;
pub mod config;
pub mod fastpath;
pub mod forward;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod testing;
pub mod udp;
pub mod udp_forward;
pub mod view;
pub mod watch;
