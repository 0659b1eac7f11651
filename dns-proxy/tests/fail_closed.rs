//! The split horizon fails closed, on the wire against the running binary: clients no view
//! matches get the in-cluster view only from the cluster's own networks, the EDNS
//! client-subnet scope says whether it chose the answer, the DO bit is echoed, and a
//! wildcard listener knows (and replies from) the address each query reached.

mod common;

use common::Dns;
use leafbridge_tests::dns::DigAnswer;

/// 127.0.0.1 is a node (in-cluster); 127.0.0.2 the office; 127.0.0.4 a trusted forwarder
/// (and a node); 127.0.0.5 is allowed to ask but in no view and no cluster network.
const CONFIG: &str = r#"
listen: ["LISTEN"]
ops_listen: "127.0.0.1:{ops}"
threads: 1
allow_clients: ["127.0.0.0/29"]
cluster:
  service_cidrs: ["10.96.0.0/12"]
  pod_cidrs: ["10.244.0.0/16"]
  node_cidrs: ["127.0.0.1/32", "127.0.0.4/32"]
views:
  - name: office
    sources: ["127.0.0.2/32"]
    trusted_ecs_from: ["127.0.0.4/32"]
    namespaces_deny: ["secret"]
  - name: routed
    destinations: ["127.0.0.3"]
    namespaces_deny: ["secret"]
DEFAULT
upstreams:
  default: []
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, clusterIP: 10.96.0.10}
status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: public, namespace: lobby}
spec: {type: LoadBalancer, clusterIP: 10.96.0.11}
status: {loadBalancer: {ingress: [{ip: 203.0.113.11}]}}
---
apiVersion: v1
kind: Service
metadata:
  name: tools
  namespace: internal
  annotations: {leafbridge.io/dns-hidden: "true"}
spec: {clusterIP: 10.96.0.30}
---
apiVersion: v1
kind: Service
metadata: {name: vault, namespace: secret}
spec: {type: LoadBalancer, clusterIP: 10.96.0.20}
status: {loadBalancer: {ingress: [{ip: 203.0.113.20}]}}
"#;

fn start(listen: &str, default: &str) -> Dns {
    let config = CONFIG.replace("LISTEN", listen).replace("DEFAULT", default);
    Dns::start(&config, &[("services.yaml", SERVICES)])
}

fn ask(dns: &Dns, args: &[&str]) -> DigAnswer {
    let r = dns.dig(args);
    assert!(!r.rcode.is_empty(), "no reply for {args:?}: {}", r.raw);
    r
}

/// The ECS option dig printed: `ADDR/SOURCE/SCOPE`.
fn client_subnet(r: &DigAnswer) -> String {
    r.raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("; CLIENT-SUBNET: "))
        .unwrap_or_else(|| panic!("no CLIENT-SUBNET in\n{}", r.raw))
        .trim()
        .to_string()
}

#[test]
fn a_client_in_no_view_and_outside_the_cluster_networks_is_refused() {
    let dns = start("127.0.0.1:{port}", "");
    for t in ["+notcp", "+tcp"] {
        let r = ask(
            &dns,
            &[t, "-b", "127.0.0.5", "web.default.svc.cluster.local", "A"],
        );
        assert_eq!(r.rcode, "REFUSED", "{t}: {}", r.raw);
        assert!(r.answers.is_empty());
        // Not even which names exist: a missing one is refused alike.
        let r = ask(
            &dns,
            &[t, "-b", "127.0.0.5", "nope.default.svc.cluster.local", "A"],
        );
        assert_eq!(r.rcode, "REFUSED", "{t}: {}", r.raw);
        let r = ask(&dns, &[t, "-x", "10.96.0.20", "-b", "127.0.0.5"]);
        assert_eq!(r.rcode, "REFUSED", "{t}: {}", r.raw);
    }
    // A node still gets the in-cluster view.
    let r = ask(&dns, &["web.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), ["10.96.0.10"]);
    let metrics = dns.http_get("/metrics");
    assert!(
        metrics.contains("leafbridge_dns_rejected_total{reason=\"no_view\"}"),
        "{metrics}"
    );
}

#[test]
fn a_client_in_no_view_gets_the_named_default_view() {
    let default = "  - name: visitors\n    namespaces_allow: [lobby]\n    forward: false\ndefault_view: visitors";
    let dns = start("127.0.0.1:{port}", default);
    for t in ["+notcp", "+tcp"] {
        let q = |name: &str| ask(&dns, &[t, "-b", "127.0.0.5", name, "A"]);
        assert_eq!(
            q("public.lobby.svc.cluster.local").rdata("A"),
            ["203.0.113.11"]
        );
        assert!(q("web.default.svc.cluster.local").is_nxdomain());
        assert!(q("default.svc.cluster.local").is_nxdomain());
        assert_eq!(q("www.example.test").rcode, "REFUSED");
    }
}

#[test]
fn a_namespace_a_view_cannot_see_does_not_exist_for_it() {
    let dns = start("127.0.0.1:{port}", "");
    let office = |name: &str| ask(&dns, &["-b", "127.0.0.2", name, "A"]);
    assert!(office("secret.svc.cluster.local").is_nxdomain());
    assert!(office("nosuch.svc.cluster.local").is_nxdomain());
    // `internal` holds only a hidden Service: office cannot tell it from no namespace.
    assert!(office("internal.svc.cluster.local").is_nxdomain());
    assert!(office("tools.internal.svc.cluster.local").is_nxdomain());
    assert!(office("default.svc.cluster.local").is_nodata());
    // The in-cluster view sees them.
    assert!(ask(&dns, &["secret.svc.cluster.local", "A"]).is_nodata());
    assert!(ask(&dns, &["internal.svc.cluster.local", "A"]).is_nodata());
}

#[test]
fn client_subnet_scope_is_zero_unless_it_chose_the_view() {
    let dns = start("127.0.0.1:{port}", "");
    let name = "web.default.svc.cluster.local";
    // From the trusted forwarder, naming an office client: office's answer, scope /32.
    let r = ask(
        &dns,
        &["-b", "127.0.0.4", "+subnet=127.0.0.2/32", name, "A"],
    );
    assert_eq!(r.rdata("A"), ["203.0.113.10"]);
    assert_eq!(client_subnet(&r), "127.0.0.2/32/32");
    // From anyone else the option chooses nothing: scope 0 (RFC 7871 7.2.1).
    let r = ask(&dns, &["+subnet=127.0.0.2/32", name, "A"]);
    assert_eq!(r.rdata("A"), ["10.96.0.10"]);
    assert_eq!(client_subnet(&r), "127.0.0.2/32/0");
    // A wider prefix than office's network does not choose office (7.1.1), nor the
    // cluster: refused.
    let r = ask(
        &dns,
        &["-b", "127.0.0.4", "+subnet=127.0.0.0/29", name, "A"],
    );
    assert_eq!(r.rcode, "REFUSED", "{}", r.raw);
    // Source prefix 0 (dnsmasq's bare --add-subnet): ignored, the forwarder's own
    // address decides (a node here: the cluster view).
    let r = ask(&dns, &["-b", "127.0.0.4", "+subnet=0.0.0.0/0", name, "A"]);
    assert_eq!(r.rdata("A"), ["10.96.0.10"], "{}", r.raw);
    assert_eq!(client_subnet(&r), "0.0.0.0/0/0");
}

#[test]
fn the_dnssec_ok_bit_is_copied_into_the_reply() {
    let dns = start("127.0.0.1:{port}", "");
    let edns_flags = |r: &DigAnswer| {
        r.raw
            .lines()
            .find_map(|l| l.trim().strip_prefix("; EDNS: version: 0, flags:"))
            .unwrap_or_else(|| panic!("no EDNS line in\n{}", r.raw))
            .to_string()
    };
    let r = ask(&dns, &["+dnssec", "web.default.svc.cluster.local", "A"]);
    assert!(edns_flags(&r).contains("do"), "{}", r.raw);
    let r = ask(&dns, &["web.default.svc.cluster.local", "A"]);
    assert!(!edns_flags(&r).contains("do"), "{}", r.raw);
}

#[test]
fn a_wildcard_listener_chooses_views_by_destination_and_replies_from_it() {
    let dns = start("0.0.0.0:{port}", "");
    let at = |ip: [u8; 4], t: &str| {
        let server = std::net::SocketAddr::from((ip, dns.port));
        let r = common::dig(
            &dns.host,
            server,
            &[t, "web.default.svc.cluster.local", "A"],
        );
        // dig drops a reply from another address than it asked ("reply from unexpected
        // source"), so an answer at all shows where it came from.
        assert!(!r.rcode.is_empty(), "{t} @{ip:?}: no reply\n{}", r.raw);
        r.rdata("A")
    };
    for t in ["+notcp", "+tcp"] {
        assert_eq!(at([127, 0, 0, 3], t), ["203.0.113.10"], "{t}: routed view");
        assert_eq!(at([127, 0, 0, 1], t), ["10.96.0.10"], "{t}: cluster view");
    }
}

#[test]
fn a_dual_stack_listener_matches_ipv4_clients_as_ipv4() {
    // On `[::]` IPv4 clients arrive as ::ffff:127.0.0.x; views of IPv4 networks and
    // destinations still match them, over UDP and TCP.
    let dns = start("[::]:{port}", "");
    for t in ["+notcp", "+tcp"] {
        let office = ask(
            &dns,
            &[t, "-b", "127.0.0.2", "web.default.svc.cluster.local", "A"],
        );
        assert_eq!(
            office.rdata("A"),
            ["203.0.113.10"],
            "{t}: office\n{}",
            office.raw
        );
        let node = ask(&dns, &[t, "web.default.svc.cluster.local", "A"]);
        assert_eq!(node.rdata("A"), ["10.96.0.10"], "{t}: node");
        let server = std::net::SocketAddr::from(([127, 0, 0, 3], dns.port));
        let r = common::dig(
            &dns.host,
            server,
            &[t, "web.default.svc.cluster.local", "A"],
        );
        assert_eq!(r.rdata("A"), ["203.0.113.10"], "{t}: routed\n{}", r.raw);
    }
}
