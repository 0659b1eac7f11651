//! Network-namespace topologies with real routers and resolvers, for end-to-end tests and the lab
#![forbid(unsafe_code)]
