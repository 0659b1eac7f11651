//! Replays the checked-in BFD fuzz corpus (speaker/fuzz/corpus/bfd_decode/) through the
//! harness the `bfd_decode` cargo-fuzz target runs, on stable Rust.

use std::path::PathBuf;

/// The harness names the codec as `crate::bfd::codec`.
mod bfd {
    pub use leafbridge_speaker::bfd::*;
}

#[path = "../fuzz/src/bfd_harness.rs"]
mod bfd_harness;

#[test]
fn bfd_decode_corpus_replays_without_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bfd_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()))
    {
        let path = entry.expect("corpus entry").path();
        bfd_harness::decode(&std::fs::read(&path).expect("corpus file readable"));
        n += 1;
    }
    assert!(n >= 10, "fuzz corpus {} has only {n} files", dir.display());
}
