//! Split-horizon DNS proxy for the cluster domain with a forwarding cache
#![forbid(unsafe_code)]
