//! Shared leafbridge types: CRDs, annotations, the cluster-state source abstraction, ops endpoints
#![forbid(unsafe_code)]

pub mod annotations;
pub mod crd;
pub mod ops;
pub mod rules;
pub mod state;
pub mod yaml;

pub use crd::{BFDProfile, BFDProfileSpec};
pub use crd::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPNodeState, BGPNodeStateStatus, BGPPeer, BGPPeerSpec,
    DNSView, DNSViewSpec, IPPool, IPPoolSpec, IPPoolStatus,
};
pub use state::{EventSink, StateError, StateObject, StateSource};

/// API group of every leafbridge CRD.
pub const GROUP: &str = "leafbridge.io";
/// API version of every leafbridge CRD.
pub const VERSION: &str = "v1alpha1";
