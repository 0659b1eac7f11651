//! Shared leafbridge types: CRDs, annotations, the cluster-state source abstraction, ops endpoints
#![forbid(unsafe_code)]
