//! `deploy/crds/*.yaml`, generated from the Rust types in `leafbridge-api`.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use leafbridge_api::{BFDProfile, BGPAdvertisement, BGPNodeState, BGPPeer, DNSView, IPPool};

/// Where the generated CRDs live in the repository.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

/// (file name, YAML) of every CRD.
pub fn all() -> Vec<(&'static str, String)> {
    let y = |crd| {
        format!(
            "# Generated from the Rust types in api/src/crd.rs by `leafbridge-controller gen-crds`; do not edit.\n{}",
            leafbridge_api::yaml::to_string(&crd).expect("CRDs serialize")
        )
    };
    vec![
        ("leafbridge.io_ippools.yaml", y(IPPool::crd())),
        ("leafbridge.io_bgppeers.yaml", y(BGPPeer::crd())),
        (
            "leafbridge.io_bgpadvertisements.yaml",
            y(BGPAdvertisement::crd()),
        ),
        ("leafbridge.io_dnsviews.yaml", y(DNSView::crd())),
        ("leafbridge.io_bgpnodestates.yaml", y(BGPNodeState::crd())),
        ("leafbridge.io_bfdprofiles.yaml", y(BFDProfile::crd())),
    ]
}

pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in all() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Names of files in `dir` that differ from the generated ones.
pub fn stale(dir: &Path) -> Vec<String> {
    all()
        .into_iter()
        .filter(|(name, text)| {
            std::fs::read_to_string(dir.join(name)).ok().as_deref() != Some(text.as_str())
        })
        .map(|(name, _)| name.to_owned())
        .collect()
}
