//! BGP speaker that announces what a node should carry
#![deny(unsafe_code)] // forbid everywhere but bgp::transport::md5 (TCP_MD5SIG needs setsockopt)

pub mod bfd;
pub mod bgp;
pub mod cluster;
pub mod config;
pub mod desired;
pub mod metrics;
pub mod netcheck;
pub mod peers;
pub mod standalone;
