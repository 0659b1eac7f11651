//! Allocates LoadBalancer addresses from IPPools and writes Service status
#![forbid(unsafe_code)]
