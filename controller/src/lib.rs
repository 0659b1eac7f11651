//! Allocates LoadBalancer addresses from IPPools and writes Service status
#![forbid(unsafe_code)]

pub mod alloc;
pub mod bench;
pub mod crds;
pub mod leader;
pub mod reconcile;
pub mod service;
