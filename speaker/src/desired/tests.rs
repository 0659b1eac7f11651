//! One test per rule of `desired::compute`.

use serde_json::{Value, json};

use super::*;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

/// A Ready node with an IPv4 InternalIP and a pod CIDR.
fn node(name: &str, n: u8, extra: Value) -> Value {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDRs": [format!("10.244.{n}.0/24")]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": format!("192.0.2.{n}")}]
        }
    });
    merge(&mut v, extra);
    v
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn svc(name: &str, ip: &str, extra: Value) -> Arc<Service> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}
    });
    merge(&mut v, extra);
    obj(v)
}

fn local(name: &str, ip: &str) -> Arc<Service> {
    svc(
        name,
        ip,
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )
}

/// An EndpointSlice of `service` with endpoints (node, ready, serving, terminating).
fn slice(service: &str, suffix: &str, eps: &[(&str, bool, bool, bool)]) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = eps
        .iter()
        .enumerate()
        .map(|(i, (node, ready, serving, terminating))| {
            json!({
                "addresses": [format!("10.244.0.{}", i + 1)],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}
            })
        })
        .collect();
    obj(json!({
        "metadata": {"name": format!("{service}-{suffix}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints
    }))
}

fn ready(node: &str) -> (&str, bool, bool, bool) {
    (node, true, true, false)
}

fn pool(name: &str, addresses: &[&str]) -> Arc<IPPool> {
    obj(json!({"metadata": {"name": name, "labels": {"pool": name}},
               "spec": {"addresses": addresses}}))
}

fn peer(name: &str, addr: &str, extra: Value) -> Arc<BGPPeer> {
    let mut v = json!({"metadata": {"name": name},
                       "spec": {"peerAddress": addr, "peerASN": 65000, "myASN": 65001}});
    merge(&mut v, json!({ "spec": extra }));
    obj(v)
}

fn ad(name: &str, spec: Value) -> Arc<BGPAdvertisement> {
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

/// Two nodes, one pool, one peer, one advertisement of every pool.
fn view() -> ClusterView {
    ClusterView {
        nodes: vec![obj(node("n1", 1, json!({}))), obj(node("n2", 2, json!({})))],
        ip_pools: vec![pool("public", &["203.0.113.0/24", "2001:db8:1::/64"])],
        peers: vec![peer("leaf", "192.0.2.254", json!({}))],
        advertisements: vec![ad("all", json!({}))],
        class: ClassConfig {
            default_class: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn prefixes(d: &Desired, peer: &str) -> Vec<String> {
    d.peers
        .get(peer)
        .map(|p| {
            p.routes
                .iter()
                .map(|r| r.route.prefix.to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn reason(d: &Desired, name: &str) -> Option<ServiceReason> {
    match d.services.get(&("default".to_owned(), name.to_owned()))? {
        ServiceOutcome::NotAnnounced(r) => Some(r.clone()),
        ServiceOutcome::Announced(_) => None,
    }
}

#[test]
fn cluster_policy_announces_from_every_eligible_node() {
    let mut v = view();
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    for n in ["n1", "n2"] {
        let d = compute(&v, n);
        assert_eq!(prefixes(&d, "leaf"), ["203.0.113.10/32"], "{n}");
        assert!(d.peers["leaf"].routes[0].is_next_hop_self());
    }
}

#[test]
fn local_policy_announces_only_from_nodes_with_a_ready_local_endpoint() {
    let mut v = view();
    v.services = vec![local("web", "203.0.113.10")];
    v.endpoint_slices = vec![slice("web", "a", &[ready("n1")])];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf"), ["203.0.113.10/32"]);
    let d2 = compute(&v, "n2");
    assert!(prefixes(&d2, "leaf").is_empty());
    assert_eq!(
        reason(&d2, "web"),
        Some(ServiceReason::NoReadyLocalEndpoint)
    );
}

#[test]
fn withdraws_when_last_local_endpoint_goes() {
    let mut v = view();
    v.services = vec![local("web", "203.0.113.10")];
    v.endpoint_slices = vec![slice("web", "a", &[ready("n1"), ready("n1")])];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf").len(), 1);
    v.endpoint_slices = vec![slice("web", "a", &[ready("n1")])];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf").len(), 1);
    v.endpoint_slices = vec![slice("web", "a", &[("n1", false, false, false)])];
    assert!(prefixes(&compute(&v, "n1"), "leaf").is_empty());
    v.endpoint_slices.clear();
    assert!(prefixes(&compute(&v, "n1"), "leaf").is_empty());
}

#[test]
fn a_terminating_serving_endpoint_keeps_the_route_only_while_no_ready_one_exists() {
    let mut v = view();
    v.services = vec![local("web", "203.0.113.10")];
    let terminating = ("n1", false, true, true);
    v.endpoint_slices = vec![slice("web", "a", &[terminating])];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf").len(), 1);
    // A ready endpoint elsewhere (another slice) takes the traffic: n1 withdraws.
    v.endpoint_slices.push(slice("web", "b", &[ready("n2")]));
    assert!(prefixes(&compute(&v, "n1"), "leaf").is_empty());
    assert_eq!(prefixes(&compute(&v, "n2"), "leaf").len(), 1);
}

#[test]
fn a_shared_address_is_announced_while_any_service_needs_it() {
    let mut v = view();
    v.services = vec![local("a", "203.0.113.10"), local("b", "203.0.113.10")];
    v.endpoint_slices = vec![
        slice("a", "x", &[ready("n1")]),
        slice("b", "x", &[ready("n2")]),
    ];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf"), ["203.0.113.10/32"]);
    assert_eq!(prefixes(&compute(&v, "n2"), "leaf"), ["203.0.113.10/32"]);
    v.endpoint_slices.remove(0);
    let d1 = compute(&v, "n1");
    assert!(prefixes(&d1, "leaf").is_empty());
    assert_eq!(reason(&d1, "a"), Some(ServiceReason::NoReadyLocalEndpoint));
    // b still needs it on n2.
    assert_eq!(prefixes(&compute(&v, "n2"), "leaf"), ["203.0.113.10/32"]);
}

fn with_node(v: &mut ClusterView, extra: Value) {
    v.nodes[0] = obj(node("n1", 1, extra));
}

#[track_caller]
fn service_routes_withdrawn_session_and_pod_cidr_kept(extra: Value, expect: NodeReason) {
    let mut v = view();
    v.advertisements = vec![ad("all", json!({"advertisePodCIDRs": true}))];
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    assert_eq!(
        prefixes(&compute(&v, "n1"), "leaf"),
        ["10.244.1.0/24", "203.0.113.10/32"]
    );
    with_node(&mut v, extra);
    let d = compute(&v, "n1");
    assert_eq!(d.node_reason, Some(expect.clone()));
    assert!(d.peers.contains_key("leaf"), "the session stays");
    assert_eq!(prefixes(&d, "leaf"), ["10.244.1.0/24"]);
    assert_eq!(reason(&d, "web"), Some(ServiceReason::Node(expect)));
}

#[test]
fn a_cordoned_node_withdraws_service_routes_and_keeps_its_session_and_pod_cidr() {
    service_routes_withdrawn_session_and_pod_cidr_kept(
        json!({"spec": {"unschedulable": true}}),
        NodeReason::NodeCordoned,
    );
}

#[test]
fn the_exclude_from_external_load_balancers_label_withdraws_service_routes() {
    service_routes_withdrawn_session_and_pod_cidr_kept(
        json!({"metadata": {"labels": {EXCLUDE_LABEL: ""}}}),
        NodeReason::NodeExcluded(EXCLUDE_LABEL.into()),
    );
}

#[test]
fn a_not_ready_node_withdraws_service_routes() {
    service_routes_withdrawn_session_and_pod_cidr_kept(
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        NodeReason::NodeNotReady,
    );
}

#[test]
fn the_out_of_service_taint_withdraws_service_routes() {
    service_routes_withdrawn_session_and_pod_cidr_kept(
        json!({"spec": {"taints": [{"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}]}}),
        NodeReason::NodeOutOfService,
    );
}

#[test]
fn the_cluster_autoscaler_deletion_taint_withdraws_service_routes() {
    service_routes_withdrawn_session_and_pod_cidr_kept(
        json!({"spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "value": "1700000000", "effect": "NoSchedule"}]}}),
        NodeReason::NodeToBeDeleted,
    );
}

#[test]
fn an_unknown_node_runs_no_session() {
    let d = compute(&view(), "n9");
    assert_eq!(d.node_reason, Some(NodeReason::NodeNotFound));
    assert!(d.peers.is_empty());
}

#[test]
fn pod_cidrs_are_announced_with_next_hop_self_only_when_asked() {
    let mut v = view();
    assert!(prefixes(&compute(&v, "n1"), "leaf").is_empty());
    v.advertisements = vec![ad("pods", json!({"advertisePodCIDRs": true}))];
    let d = compute(&v, "n2");
    assert_eq!(prefixes(&d, "leaf"), ["10.244.2.0/24"]);
    assert!(d.peers["leaf"].routes[0].is_next_hop_self());
}

#[test]
fn service_cidrs_are_announced_only_from_gateway_nodes() {
    let mut v = view();
    with_node(&mut v, json!({"metadata": {"labels": {"gateway": "true"}}}));
    v.advertisements = vec![ad(
        "svc",
        json!({"serviceCIDRs": ["10.96.0.0/16"],
               "serviceCIDRGatewaySelector": {"matchLabels": {"gateway": "true"}}}),
    )];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf"), ["10.96.0.0/16"]);
    assert!(prefixes(&compute(&v, "n2"), "leaf").is_empty());
    // Without a gateway selector every announcing node is a gateway (ECMP).
    v.advertisements = vec![ad("svc", json!({"serviceCIDRs": ["10.96.0.0/16"]}))];
    assert_eq!(prefixes(&compute(&v, "n2"), "leaf"), ["10.96.0.0/16"]);
}

#[test]
fn a_cordoned_gateway_withdraws_the_service_cidr() {
    let mut v = view();
    v.advertisements = vec![ad("svc", json!({"serviceCIDRs": ["10.96.0.0/16"]}))];
    with_node(&mut v, json!({"spec": {"unschedulable": true}}));
    assert!(prefixes(&compute(&v, "n1"), "leaf").is_empty());
}

#[test]
fn external_ips_are_announced_only_when_an_advertisement_asks() {
    let mut v = view();
    v.services = vec![obj(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ClusterIP", "externalIPs": ["198.51.100.7"]}
    }))];
    let d = compute(&v, "n1");
    assert!(prefixes(&d, "leaf").is_empty());
    assert_eq!(
        reason(&d, "ext"),
        Some(ServiceReason::ServiceNotLoadBalancer)
    );
    v.advertisements = vec![ad("ext", json!({"advertiseExternalIPs": true}))];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf"), ["198.51.100.7/32"]);
}

#[test]
fn services_that_are_not_ours_are_left_out() {
    let mut v = view();
    v.services = vec![
        svc(
            "other",
            "203.0.113.10",
            json!({"spec": {"loadBalancerClass": "metallb"}}),
        ),
        obj(json!({"metadata": {"name": "cip"}, "spec": {"type": "ClusterIP"}})),
    ];
    let d = compute(&v, "n1");
    assert!(d.services.is_empty());
    assert!(prefixes(&d, "leaf").is_empty());
}

#[test]
fn a_service_without_ingress_says_so() {
    let mut v = view();
    v.services = vec![svc("web", "x", json!({"status": {"loadBalancer": {}}}))];
    assert_eq!(
        reason(&compute(&v, "n1"), "web"),
        Some(ServiceReason::NoIngress)
    );
}

#[test]
fn the_no_announce_annotation_opts_a_service_out() {
    let mut v = view();
    v.services = vec![svc(
        "web",
        "203.0.113.10",
        json!({"metadata": {"annotations": {"leafbridge.io/no-announce": "true"}}}),
    )];
    let d = compute(&v, "n1");
    assert_eq!(reason(&d, "web"), Some(ServiceReason::NoAnnounceAnnotation));
}

#[test]
fn aggregation_length_announces_the_covering_prefix_once() {
    let mut v = view();
    v.advertisements = vec![ad(
        "agg",
        json!({"aggregationLength": 24, "aggregationLengthV6": 64}),
    )];
    v.services = vec![
        svc("a", "203.0.113.10", json!({})),
        svc("b", "203.0.113.20", json!({})),
        svc("c", "2001:db8:1::5", json!({})),
    ];
    assert_eq!(
        prefixes(&compute(&v, "n1"), "leaf"),
        ["203.0.113.0/24", "2001:db8:1::/64"]
    );
}

#[test]
fn communities_large_communities_and_local_pref_come_from_the_advertisement() {
    let mut v = view();
    v.advertisements = vec![
        ad(
            "a",
            json!({"communities": ["65000:1", "no-export"], "largeCommunities": ["65000:1:2"],
                   "localPref": 50}),
        ),
        ad("b", json!({"communities": ["65000:2"], "localPref": 200})),
    ];
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    let d = compute(&v, "n1");
    let r = &d.peers["leaf"].routes[0].route;
    assert_eq!(
        r.communities,
        vec![65000 << 16 | 1, 65000 << 16 | 2, 0xFFFF_FF01]
    );
    assert_eq!(r.large_communities.len(), 1);
    assert_eq!(r.local_pref, Some(200), "the highest of the advertisements");
}

#[test]
fn an_advertisement_goes_only_to_the_peers_it_names() {
    let mut v = view();
    v.peers.push(peer("spine", "192.0.2.253", json!({})));
    v.advertisements = vec![ad("to-leaf", json!({"peers": ["leaf"]}))];
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    let d = compute(&v, "n1");
    assert_eq!(prefixes(&d, "leaf"), ["203.0.113.10/32"]);
    assert!(d.peers.contains_key("spine"));
    assert!(prefixes(&d, "spine").is_empty());
}

#[test]
fn an_advertisement_naming_no_peer_of_this_node_says_so() {
    let mut v = view();
    v.advertisements = vec![ad("to-x", json!({"peers": ["elsewhere"]}))];
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    let d = compute(&v, "n1");
    assert_eq!(
        reason(&d, "web"),
        Some(ServiceReason::NoPeerForAdvertisement)
    );
}

#[test]
fn peer_node_selectors_pick_the_nodes_that_run_the_session() {
    let mut v = view();
    with_node(&mut v, json!({"metadata": {"labels": {"rack": "a"}}}));
    v.peers = vec![peer(
        "tor-a",
        "192.0.2.254",
        json!({"nodeSelectors": [{"matchLabels": {"rack": "a"}}]}),
    )];
    assert!(compute(&v, "n1").peers.contains_key("tor-a"));
    assert!(compute(&v, "n2").peers.is_empty());
}

#[test]
fn advertisement_node_selectors_pick_the_announcing_nodes() {
    let mut v = view();
    with_node(&mut v, json!({"metadata": {"labels": {"edge": "yes"}}}));
    v.advertisements = vec![ad(
        "edge",
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "edge", "operator": "Exists"}]}]}),
    )];
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf").len(), 1);
    let d2 = compute(&v, "n2");
    assert_eq!(reason(&d2, "web"), Some(ServiceReason::NodeNotSelected));
}

#[test]
fn no_advertisement_selecting_a_pool_announces_nothing_from_it_and_says_so() {
    let mut v = view();
    v.ip_pools.push(pool("private", &["100.64.0.0/24"]));
    v.advertisements = vec![ad("public-only", json!({"ipPools": ["public"]}))];
    v.services = vec![
        svc("pub", "203.0.113.10", json!({})),
        svc("priv", "100.64.0.10", json!({})),
    ];
    let d = compute(&v, "n1");
    assert_eq!(prefixes(&d, "leaf"), ["203.0.113.10/32"]);
    assert_eq!(
        reason(&d, "priv"),
        Some(ServiceReason::NoAdvertisementSelectsPool("private".into()))
    );
    assert_eq!(d.unadvertised_pools, BTreeSet::from(["private".to_owned()]));
    assert_eq!(d.pool_advertisements["private"], Vec::<String>::new());
    assert_eq!(d.pool_advertisements["public"], ["public-only"]);
    // Selecting it by label works too.
    v.advertisements.push(ad(
        "by-label",
        json!({"ipPoolSelectors": [{"matchLabels": {"pool": "private"}}]}),
    ));
    let d = compute(&v, "n1");
    assert_eq!(prefixes(&d, "leaf").len(), 2);
    assert!(d.unadvertised_pools.is_empty());
    assert_eq!(d.pool_advertisements["private"], ["by-label"]);
}

#[test]
fn an_address_in_no_pool_is_not_announced() {
    let mut v = view();
    v.services = vec![svc("web", "198.51.100.1", json!({}))];
    let d = compute(&v, "n1");
    assert_eq!(
        reason(&d, "web"),
        Some(ServiceReason::AddressInNoPool(
            "198.51.100.1".parse().unwrap()
        ))
    );
}

#[test]
fn a_service_selector_limits_the_advertisement() {
    let mut v = view();
    v.advertisements = vec![ad(
        "web-only",
        json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}),
    )];
    v.services = vec![
        svc("web", "203.0.113.10", json!({})),
        svc("db", "203.0.113.11", json!({})),
    ];
    let d = compute(&v, "n1");
    assert_eq!(prefixes(&d, "leaf"), ["203.0.113.10/32"]);
    assert_eq!(
        reason(&d, "db"),
        Some(ServiceReason::NoAdvertisementSelectsService)
    );
}

#[test]
fn ipv6_routes_are_not_given_to_a_peer_without_the_ipv6_family() {
    let mut v = view();
    v.peers = vec![peer(
        "leaf",
        "192.0.2.254",
        json!({"addressFamilies": ["IPv4Unicast"]}),
    )];
    v.services = vec![
        svc("v4", "203.0.113.10", json!({})),
        svc("v6", "2001:db8:1::10", json!({})),
    ];
    assert_eq!(prefixes(&compute(&v, "n1"), "leaf"), ["203.0.113.10/32"]);
}

#[test]
fn the_router_id_is_the_node_internal_ipv4_unless_overridden() {
    let mut v = view();
    let d = compute(&v, "n2");
    assert_eq!(d.router_id, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(
        d.peers["leaf"].spec.session.fsm.router_id,
        Ipv4Addr::new(192, 0, 2, 2)
    );
    v.router_id = Some(Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(compute(&v, "n2").router_id, v.router_id);
    // Without either, no session can start, and that is reported.
    v.router_id = None;
    v.nodes = vec![obj(json!({"metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))];
    let d = compute(&v, "n1");
    assert!(d.peers.is_empty());
    assert_eq!(d.problems, vec![Problem::NoRouterId]);
}

#[test]
fn a_bad_advertisement_or_peer_is_reported_and_the_rest_goes_on() {
    let mut v = view();
    v.advertisements
        .push(ad("bad", json!({"communities": ["lots"]})));
    v.peers.push(peer("bad-peer", "not-an-ip", json!({})));
    v.services = vec![svc("web", "203.0.113.10", json!({}))];
    let d = compute(&v, "n1");
    assert_eq!(prefixes(&d, "leaf"), ["203.0.113.10/32"]);
    assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
    assert!(
        d.problems
            .iter()
            .any(|p| matches!(p, Problem::InvalidAdvertisement { name, .. } if name == "bad"))
    );
    assert!(
        d.problems
            .iter()
            .any(|p| matches!(p, Problem::InvalidPeer { name, .. } if name == "bad-peer"))
    );
    assert!(!d.valid_advertisements.contains("bad"));
    assert!(d.peers.contains_key("leaf") && !d.peers.contains_key("bad-peer"));
}

#[test]
fn the_result_does_not_depend_on_the_order_objects_arrive_in() {
    let mut v = view();
    v.services = (1..50)
        .map(|i| svc(&format!("s{i}"), &format!("203.0.113.{i}"), json!({})))
        .collect();
    let a = compute(&v, "n1");
    v.services.reverse();
    assert_eq!(compute(&v, "n1"), a);
}
