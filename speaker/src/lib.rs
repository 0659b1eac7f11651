//! BGP speaker that announces what a node should carry
#![deny(unsafe_code)] // forbid everywhere but bgp::transport::md5 (TCP_MD5SIG needs setsockopt)

pub mod bfd;
pub mod bgp;
pub mod config;
pub mod metrics;
pub mod standalone;
