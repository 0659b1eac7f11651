//! deploy/crds must match the Rust types.

#[test]
fn deploy_crds_match_the_rust_types() {
    let dir = leafbridge_controller::crds::deploy_dir();
    if std::env::var_os("LEAFBRIDGE_UPDATE_CRDS").is_some() {
        leafbridge_controller::crds::write(&dir).unwrap();
    }
    let stale = leafbridge_controller::crds::stale(&dir);
    assert!(
        stale.is_empty(),
        "deploy/crds is out of date ({stale:?}); run `cargo run -p leafbridge-controller -- gen-crds` \
         or `LEAFBRIDGE_UPDATE_CRDS=1 cargo test -p leafbridge-controller --test crds`"
    );
}

#[test]
fn ippool_crd_has_useful_printer_columns_and_status_subresource() {
    use kube::CustomResourceExt;
    let crd = leafbridge_api::IPPool::crd();
    let v = &crd.spec.versions[0];
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        cols.contains(&"Ready")
            && cols.contains(&"IPv4 Available")
            && cols.contains(&"IPv6 Assigned")
    );
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    assert_eq!(crd.spec.scope, "Cluster");
}
