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

#[test]
fn ippool_crd_validates_addresses_at_the_api_and_keys_conditions_by_type() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(leafbridge_api::IPPool::crd()).unwrap();
    let v = &crd["spec"]["versions"][0];
    let schema = &v["schema"]["openAPIV3Schema"]["properties"];
    let addresses = &schema["spec"]["properties"]["addresses"];
    assert_eq!(addresses["minItems"], 1, "{addresses:#}");
    assert!(addresses["maxItems"].is_number(), "CEL cost needs a bound");
    assert!(
        addresses["items"]["maxLength"].is_number(),
        "CEL cost needs a bound"
    );
    let rule = addresses["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .expect("a CEL rule on spec.addresses");
    assert!(rule.contains("isCIDR(") && rule.contains("isIP("), "{rule}");
    let conditions = &schema["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(cols.contains(&"Addresses"), "{cols:?}");
}

#[test]
fn ippool_validation_in_rust_accepts_and_refuses_what_the_schema_rule_does() {
    let spec = |a: &[&str]| leafbridge_api::IPPoolSpec {
        addresses: a.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    for good in [
        &["203.0.113.0/24"][..],
        &["2001:db8::/64", "100.64.0.10-100.64.0.20"],
        &["2001:db8:5::10-2001:db8:5::1f"],
    ] {
        assert_eq!(spec(good).validate(), Ok(()), "{good:?}");
    }
    for bad in [
        &[][..],
        &["203.0.113.5/24"],
        &["203.0.113.0/33"],
        &["office"],
        &["203.0.113.1-2001:db8::1"],
        &["203.0.113.9-203.0.113.1"],
        &["203.0.113.1-203.0.113.2-203.0.113.3"],
    ] {
        assert!(spec(bad).validate().is_err(), "{bad:?} accepted");
    }
}
