//! Network-namespace topologies with real routers and resolvers, for end-to-end tests and the
//! lab.
//!
//! - [`netns`]: the one topology builder ([`Topology`], [`Netns`], [`Process`]) with its guard.
//! - [`support`]: [`require`] (missing tool = failure naming the Debian package) and
//!   [`wait_until`] / [`wait_for`].
//! - Runners with config generation and RIB reading: [`bird`], [`frr`], [`gobgp`], [`exabgp`];
//!   DNS: [`dns`] (unbound, dnsmasq, dig); raw sockets and captures: [`raw`], [`capture`].
//! - [`rib`]: [`RibRoute`], the structured route every runner returns.
#![forbid(unsafe_code)]

pub mod bird;
pub mod capture;
pub mod dns;
pub mod exabgp;
pub mod fabric;
pub mod frr;
pub mod gobgp;
pub mod netns;
pub mod raw;
pub mod rib;
pub mod support;

pub use netns::{ExecOutput, Netns, Pair, Process, Topology};
pub use rib::RibRoute;
pub use support::{require, require_root, wait_for, wait_until};
