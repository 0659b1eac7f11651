//! Fuzzing support for the speaker's BGP and BFD codecs.
//!
//! The codec (`speaker/src/bgp/{message.rs,codec/}`) is compiled here from the same source
//! files, under the same module paths, so fuzz builds stay small. The harness is shared with
//! the stable corpus replay test (`speaker/tests/codec_corpus_replay.rs`).
#![forbid(unsafe_code)]

// Lints on the shared source are enforced by the speaker crate itself.
#[allow(clippy::large_enum_variant)]
#[path = "../../src/bgp/message.rs"]
pub mod message;

#[path = "../../src/bgp/codec/mod.rs"]
pub mod codec;

#[path = "../../src/bfd/codec.rs"]
pub mod bfd_codec;

/// The speaker's BFD module path (`crate::bfd::codec`), which the BFD harness uses.
pub mod bfd {
    pub use super::bfd_codec as codec;
}

/// The speaker's module paths (`crate::bgp::message`, `crate::bgp::codec`), which the codec and
/// the harness use.
pub mod bgp {
    pub use super::{codec, message};
}

pub mod bfd_harness;
pub mod differential;
pub mod harness;
