//! DNSView objects (the `leafbridge.io/v1alpha1` CRD) as views of the running binary: a
//! state directory holds Services and DNSViews, dig asks from different loopback source
//! addresses (`-b 127.0.0.x`; all of 127/8 is local), and the answers show which view was
//! chosen. Also the NS record at the zone apexes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Dns;
use leafbridge_tests::dns::DigAnswer;

const CONFIG: &str = r#"
listen: ["127.0.0.1:{port}"]
ops_listen: "127.0.0.1:{ops}"
threads: 1
allow_clients: ["127.0.0.0/24"]
cluster:
  zone: cluster.local
  external_zone: k8s.corp.example
  service_cidrs: ["10.96.0.0/12"]
  pod_cidrs: ["10.244.0.0/16"]
  node_cidrs: ["127.0.0.0/24"]
views:
  - name: office
    sources: ["127.0.0.2/32"]
    trusted_ecs_from: ["127.0.0.4/32"]
    namespaces_deny: ["secret"]
upstreams:
  default: []
"#;

/// `web` and `vault` carry the label the selector of `lab-narrow` asks for; `api`, `db` and
/// `shop` do not.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {expose: office}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80, protocol: TCP}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.11}]}}
---
apiVersion: v1
kind: Service
metadata: {name: vault, namespace: secret, labels: {expose: office}}
spec: {type: LoadBalancer, clusterIP: 10.96.0.20}
status: {loadBalancer: {ingress: [{ip: 203.0.113.20}]}}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: shop}
spec: {type: LoadBalancer, clusterIP: 10.96.0.30}
status: {loadBalancer: {ingress: [{ip: 203.0.113.30}]}}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-x1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints: [{addresses: [10.244.1.5], hostname: db-0}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default}
spec: {hostname: db-0, subdomain: db, containers: []}
status: {podIP: 10.244.1.5}
"#;

/// A DNSView manifest.
fn dnsview(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: leafbridge.io/v1alpha1\nkind: DNSView\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// `lab` (127.0.0.16/28): ClusterIPs and pod IPs. `lab-narrow` (127.0.0.20/30, inside lab):
/// LoadBalancer addresses of labelled Services in `default` only. `pinned` (127.0.0.24/29,
/// priority 5) beats the more specific `loose` (127.0.0.25/32, priority 0).
fn views() -> String {
    [
        dnsview(
            "lab",
            "  clientCIDRs: [127.0.0.16/28]\n  serviceAddress: ClusterIP\n  exposePodIPs: true\n",
        ),
        dnsview(
            "lab-narrow",
            "  clientCIDRs: [127.0.0.20/30]\n  namespaces: [default]\n  \
             serviceSelector: {matchLabels: {expose: office}}\n",
        ),
        dnsview(
            "pinned",
            "  clientCIDRs: [127.0.0.24/29]\n  serviceAddress: LoadBalancerIP\n  priority: 5\n",
        ),
        dnsview(
            "loose",
            "  clientCIDRs: [127.0.0.25/32]\n  serviceAddress: ClusterIP\n",
        ),
    ]
    .join("---\n")
}

/// Ask `name`/`qtype` from source address `from`, over UDP and TCP (same reply on both).
fn ask(dns: &Dns, from: &str, name: &str, qtype: &str) -> DigAnswer {
    let udp = dns.dig(&["-b", from, "+notcp", name, qtype]);
    let tcp = dns.dig(&["-b", from, "+tcp", name, qtype]);
    assert!(
        !udp.rcode.is_empty(),
        "no reply to {from} for {name}: {}",
        udp.raw
    );
    assert_eq!(
        (&udp.rcode, udp.answers.len()),
        (&tcp.rcode, tcp.answers.len()),
        "UDP and TCP differ for {from} {name} {qtype}\n{}\n{}",
        udp.raw,
        tcp.raw
    );
    udp
}

fn a(dns: &Dns, from: &str, name: &str) -> Vec<String> {
    ask(dns, from, name, "A").rdata("A")
}

/// Write a manifest atomically (dot files are ignored by the state directory), so the
/// watch never reads half of it.
fn put(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Poll until `from` gets `want` for `name` A (the state directory is watched, not
/// polled by the test's clock).
#[track_caller]
fn wait_for_a(dns: &Dns, from: &str, name: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = dns.dig(&["-b", from, name, "A"]);
        if got.rdata("A") == want && (!want.is_empty() || got.rcode == "NXDOMAIN") {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{from} never got {want:?} for {name}; last reply:\n{}\nserver log:\n{}",
                got.raw,
                dns.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(views: &str) -> Dns {
    let mut manifests = vec![("services.yaml", SERVICES)];
    if !views.is_empty() {
        manifests.push(("views.yaml", views));
    }
    Dns::start(CONFIG, &manifests)
}

#[test]
fn dnsview_is_chosen_by_client_cidr_then_longest_prefix_and_priority_first() {
    let dns = start(&views());
    let web = "web.default.svc.cluster.local";
    // No view matches 127.0.0.1: standard in-cluster answers.
    assert_eq!(a(&dns, "127.0.0.1", web), ["10.96.0.10"]);
    // The file view still serves its client.
    assert_eq!(a(&dns, "127.0.0.2", web), ["203.0.113.10"]);
    // lab: ClusterIPs and, with exposePodIPs, pod addresses.
    assert_eq!(a(&dns, "127.0.0.17", web), ["10.96.0.10"]);
    assert_eq!(
        a(&dns, "127.0.0.17", "db.default.svc.cluster.local"),
        ["10.244.1.5"]
    );
    assert_eq!(
        a(&dns, "127.0.0.17", "10-244-1-5.default.pod.cluster.local"),
        ["10.244.1.5"]
    );
    // 127.0.0.21 is in lab and in lab-narrow: the longer prefix wins.
    assert_eq!(a(&dns, "127.0.0.21", web), ["203.0.113.10"]);
    // lab-narrow does not expose pod IPs: the pod name exists but has no address for it.
    assert!(
        ask(
            &dns,
            "127.0.0.21",
            "10-244-1-5.default.pod.cluster.local",
            "A"
        )
        .is_nodata()
    );
    // 127.0.0.25 is in pinned (/29, priority 5) and loose (/32, priority 0): priority first.
    assert_eq!(a(&dns, "127.0.0.25", web), ["203.0.113.10"]);
    assert_eq!(a(&dns, "127.0.0.26", web), ["203.0.113.10"]);
    // Behind a forwarder the file trusts, the EDNS client-subnet names the client
    // (RFC 7871), for DNSViews too; an untrusted sender's is ignored.
    let behind = |from: &str| dns.dig(&["-b", from, "+subnet=127.0.0.21/32", web, "A"]);
    assert_eq!(behind("127.0.0.4").rdata("A"), ["203.0.113.10"]);
    assert_eq!(behind("127.0.0.5").rdata("A"), ["10.96.0.10"]);
    // A view set loaded before serving: ready.
    assert!(dns.http_get("/readyz").contains(" 200 "));
    let metrics = dns.http_get("/metrics");
    assert!(
        metrics.contains(r#"leafbridge_dns_queries_total{view="lab-narrow",qtype="A""#),
        "{metrics}"
    );
}

#[test]
fn dnsview_namespaces_and_service_selector_filter_what_its_clients_see() {
    let dns = start(&views());
    let narrow = "127.0.0.21";
    // Labelled, in an allowed namespace: visible (LoadBalancerIP is the default answer).
    assert_eq!(
        a(&dns, narrow, "web.default.svc.cluster.local"),
        ["203.0.113.10"]
    );
    assert_eq!(
        a(&dns, narrow, "web.default.k8s.corp.example"),
        ["203.0.113.10"]
    );
    let srv = ask(
        &dns,
        narrow,
        "_http._tcp.web.default.svc.cluster.local",
        "SRV",
    );
    assert_eq!(srv.rdata("SRV").len(), 1, "{}", srv.raw);
    // Not selected by the label selector: as if it did not exist, under every name.
    for (name, qtype) in [
        ("api.default.svc.cluster.local", "A"),
        ("api.default.k8s.corp.example", "A"),
        ("_http._tcp.api.default.svc.cluster.local", "SRV"),
        ("db.default.svc.cluster.local", "A"),
        ("db-0.db.default.svc.cluster.local", "A"),
    ] {
        let r = ask(&dns, narrow, name, qtype);
        assert!(
            r.is_nxdomain(),
            "{name} {qtype} visible to lab-narrow:\n{}",
            r.raw
        );
    }
    let ptr = dns.dig(&["-b", narrow, "-x", "10.96.0.11"]);
    assert!(ptr.is_nxdomain(), "{}", ptr.raw);
    let ptr = dns.dig(&["-b", narrow, "-x", "10.96.0.10"]);
    assert_eq!(ptr.rdata("PTR"), ["web.default.svc.cluster.local."]);
    // Labelled but in a namespace outside `namespaces`; and a namespace not listed at all.
    assert!(ask(&dns, narrow, "vault.secret.svc.cluster.local", "A").is_nxdomain());
    assert!(ask(&dns, narrow, "shop.shop.svc.cluster.local", "A").is_nxdomain());
    assert!(ask(&dns, narrow, "shop.svc.cluster.local", "A").is_nxdomain());
    // lab has neither filter: everything, as ClusterIPs (hidden Services aside).
    assert_eq!(
        a(&dns, "127.0.0.17", "api.default.svc.cluster.local"),
        ["10.96.0.11"]
    );
    assert_eq!(
        a(&dns, "127.0.0.17", "shop.shop.svc.cluster.local"),
        ["10.96.0.30"]
    );
    assert_eq!(
        a(&dns, "127.0.0.17", "vault.secret.svc.cluster.local"),
        ["10.96.0.20"]
    );
}

#[test]
fn dnsviews_added_edited_and_deleted_take_effect_without_restart() {
    let dns = start("");
    let pid = dns.process.pid();
    let state = dns.state_dir();
    let (web, shop) = (
        "web.default.svc.cluster.local",
        "shop.shop.svc.cluster.local",
    );
    assert_eq!(a(&dns, "127.0.0.9", web), ["10.96.0.10"]);
    assert_eq!(a(&dns, "127.0.0.2", web), ["203.0.113.10"]);

    // Added: 127.0.0.9 gets LoadBalancer addresses.
    put(
        &state,
        "guests.yaml",
        &dnsview("guests", "  clientCIDRs: [127.0.0.9/32]\n"),
    );
    wait_for_a(&dns, "127.0.0.9", web, &["203.0.113.10"]);
    assert_eq!(a(&dns, "127.0.0.9", shop), ["203.0.113.30"]);

    // Edited: now only namespace shop is visible to it.
    put(
        &state,
        "guests.yaml",
        &dnsview(
            "guests",
            "  clientCIDRs: [127.0.0.9/32]\n  namespaces: [shop]\n",
        ),
    );
    wait_for_a(&dns, "127.0.0.9", web, &[]);
    assert_eq!(a(&dns, "127.0.0.9", shop), ["203.0.113.30"]);

    // A DNSView named like the file's view replaces it (here: ClusterIPs for the office).
    put(
        &state,
        "office.yaml",
        &dnsview(
            "office",
            "  clientCIDRs: [127.0.0.2/32]\n  serviceAddress: ClusterIP\n",
        ),
    );
    wait_for_a(&dns, "127.0.0.2", web, &["10.96.0.10"]);

    // Deleted: back to the standard view, and to the file's office view.
    std::fs::remove_file(state.join("guests.yaml")).unwrap();
    wait_for_a(&dns, "127.0.0.9", shop, &["10.96.0.30"]);
    assert_eq!(a(&dns, "127.0.0.9", web), ["10.96.0.10"]);
    std::fs::remove_file(state.join("office.yaml")).unwrap();
    wait_for_a(&dns, "127.0.0.2", web, &["203.0.113.10"]);

    assert_eq!(dns.process.pid(), pid);
    assert!(
        dns.log().contains("views updated from DNSViews"),
        "{}",
        dns.log()
    );
}

#[test]
fn configuration_reload_keeps_the_dnsviews() {
    let dns = start(&views());
    let web = "web.default.svc.cluster.local";
    assert_eq!(a(&dns, "127.0.0.3", web), ["10.96.0.10"]);
    // The file's office view now also covers 127.0.0.3.
    let config = std::fs::read_to_string(dns.config_path()).unwrap().replace(
        r#"sources: ["127.0.0.2/32"]"#,
        r#"sources: ["127.0.0.2/32", "127.0.0.3/32"]"#,
    );
    std::fs::write(dns.config_path(), config).unwrap();
    wait_for_a(&dns, "127.0.0.3", web, &["203.0.113.10"]);
    // Every DNSView survived the reload.
    assert_eq!(a(&dns, "127.0.0.17", web), ["10.96.0.10"]);
    assert_eq!(
        a(&dns, "127.0.0.21", "api.default.svc.cluster.local"),
        Vec::<String>::new()
    );
    assert_eq!(a(&dns, "127.0.0.25", web), ["203.0.113.10"]);
}

#[test]
fn malformed_dnsview_is_ignored_and_the_other_views_keep_working() {
    let bad_cidr = dnsview("broken", "  clientCIDRs: [127.0.0.300/32]\n");
    let bad_selector = dnsview(
        "bad-selector",
        "  clientCIDRs: [127.0.0.40/32]\n  \
         serviceSelector: {matchExpressions: [{key: a, operator: Near}]}\n",
    );
    // Not even a DNSView (a string where a list belongs): the state directory skips it.
    let bad_shape = dnsview("shapeless", "  clientCIDRs: 127.0.0.50/32\n");
    let all = [views(), bad_cidr, bad_selector].join("---\n");
    let dns = Dns::start(
        CONFIG,
        &[
            ("services.yaml", SERVICES),
            ("views.yaml", &all),
            ("shapeless.yaml", &bad_shape),
        ],
    );
    let web = "web.default.svc.cluster.local";
    assert_eq!(a(&dns, "127.0.0.17", web), ["10.96.0.10"]);
    assert_eq!(a(&dns, "127.0.0.21", web), ["203.0.113.10"]);
    assert_eq!(a(&dns, "127.0.0.2", web), ["203.0.113.10"]);
    // The clients the bad views name get what they would get without them.
    assert_eq!(a(&dns, "127.0.0.40", web), ["10.96.0.10"]);
    assert_eq!(a(&dns, "127.0.0.50", web), ["10.96.0.10"]);
    assert!(dns.http_get("/readyz").contains(" 200 "));
    let log = dns.log();
    for needle in [
        "DNSView rejected; ignored",
        "broken",
        "bad-selector",
        "127.0.0.300/32",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }

    // A bad edit of a good view keeps its last good version.
    let edited = views().replace("127.0.0.16/28", "127.0.0.16/99");
    put(&dns.state_dir(), "views.yaml", &edited);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dns.log().contains("keeping its last good version") {
        assert!(Instant::now() < deadline, "edit not seen:\n{}", dns.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a(&dns, "127.0.0.17", web), ["10.96.0.10"]);
    assert_eq!(a(&dns, "127.0.0.21", web), ["203.0.113.10"]);
    let metrics = dns.http_get("/metrics");
    assert!(metrics.contains("dnsview_rejected"), "{metrics}");
}

#[test]
fn apex_ns_names_the_soa_mname_and_that_name_resolves() {
    let dns = start(&views());
    for zone in ["cluster.local", "k8s.corp.example"] {
        for from in ["127.0.0.1", "127.0.0.21"] {
            let ns = ask(&dns, from, zone, "NS");
            assert_eq!(ns.rcode, "NOERROR", "{}", ns.raw);
            assert!(ns.flags.iter().any(|f| f == "aa"), "{}", ns.raw);
            assert_eq!(ns.rdata("NS"), ["ns.dns.cluster.local."], "{}", ns.raw);
            let glue: Vec<&str> = ns
                .additional
                .iter()
                .filter(|r| r.rtype == "A")
                .map(|r| r.rdata.as_str())
                .collect();
            assert_eq!(glue, ["127.0.0.1"], "{}", ns.raw);
            let soa = ask(&dns, from, zone, "SOA");
            let mname = soa.rdata("SOA")[0].split(' ').next().unwrap().to_string();
            assert_eq!(mname, "ns.dns.cluster.local.");
        }
    }
    assert_eq!(a(&dns, "127.0.0.1", "ns.dns.cluster.local"), ["127.0.0.1"]);
    assert!(ask(&dns, "127.0.0.1", "dns.cluster.local", "A").is_nodata());
    // NS anywhere below an apex: NODATA with the SOA, as before.
    for name in [
        "web.default.svc.cluster.local",
        "svc.cluster.local",
        "web.default.k8s.corp.example",
    ] {
        let r = ask(&dns, "127.0.0.1", name, "NS");
        assert!(r.is_nodata(), "{name} NS:\n{}", r.raw);
    }
}

/// The Kubernetes backend: DNSViews listed and watched from a mocked API server (the exact
/// requests asserted), fed through the same [`DnsViews`] the binary uses.
mod kubernetes {
    use futures::StreamExt;
    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;
    use leafbridge_api::{DNSView, StateSource};
    use leafbridge_dns::view::{DnsViewError, DnsViews, Fallback, Unmatched, Views, merge_views};
    use serde_json::json;
    use tower_test::mock;

    fn respond(send: mock::SendResponse<Response<Body>>, body: Vec<u8>) {
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
    }

    fn object(name: &str, cidr: &str) -> serde_json::Value {
        json!({
            "apiVersion": "leafbridge.io/v1alpha1", "kind": "DNSView",
            "metadata": {"name": name, "resourceVersion": "4"},
            "spec": {"clientCIDRs": [cidr], "serviceAddress": "ClusterIP"}
        })
    }

    #[tokio::test]
    async fn dnsviews_are_listed_and_watched_cluster_wide_from_the_api() {
        let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
        let source = StateSource::kube(Client::new(svc, "default"));
        let api = tokio::spawn(async move {
            let (req, send) = h.next_request().await.expect("list");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(req.uri().path(), "/apis/leafbridge.io/v1alpha1/dnsviews");
            let list = json!({
                "apiVersion": "leafbridge.io/v1alpha1", "kind": "DNSViewList",
                "metadata": {"resourceVersion": "5"},
                "items": [object("lab", "198.51.100.0/24"), object("typo", "198.51.100.0/33")]
            });
            respond(send, serde_json::to_vec(&list).unwrap());
            let (req, send) = h.next_request().await.expect("watch");
            assert_eq!(req.uri().path(), "/apis/leafbridge.io/v1alpha1/dnsviews");
            let q = req.uri().query().unwrap_or("").to_string();
            assert!(
                q.contains("watch=true") && q.contains("resourceVersion=5"),
                "{q}"
            );
            let deleted = json!({"type": "DELETED", "object": object("lab", "198.51.100.0/24")});
            let mut line = serde_json::to_vec(&deleted).unwrap();
            line.push(b'\n');
            respond(send, line);
            // Keep answering nothing until the test ends.
            let _next = h.next_request().await;
            std::future::pending::<()>().await;
        });

        let mut views = DnsViews::default();
        let mut stream = source.watch::<DNSView>();
        let mut rejected = Vec::new();
        let mut rebuilds = 0;
        // Init, InitApply ×2, InitDone: one rebuild, at the end of the listing.
        for _ in 0..4 {
            let out = views.on_event(&stream.next().await.unwrap().unwrap());
            rejected.extend(out.rejected);
            rebuilds += usize::from(out.rebuild);
        }
        assert_eq!(rebuilds, 1);
        assert!(matches!(
            rejected.as_slice(),
            [(name, DnsViewError::BadClientCidr { .. }, false)] if name == "typo"
        ));
        let listed = Fallback {
            dnsviews_listed: true,
            ..Fallback::default()
        };
        let set = Views::new(&merge_views(&[], views.views()), &listed);
        let lo = "127.0.0.1".parse().unwrap();
        let chosen = |set: &Views| {
            set.select("198.51.100.7".parse().unwrap(), lo, None)
                .view
                .map(|v| v.name.clone())
        };
        assert_eq!(chosen(&set), Ok("lab".to_string()));

        let out = views.on_event(&stream.next().await.unwrap().unwrap());
        assert!(out.rebuild);
        let set = Views::new(&merge_views(&[], views.views()), &listed);
        // Its view gone, the client is in none and outside the cluster: refused.
        assert_eq!(chosen(&set), Err(Unmatched::OutsideClusterNetworks));
        api.abort();
    }

    #[tokio::test]
    async fn a_failing_watch_backs_off_instead_of_relisting_at_once() {
        let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
        let source = StateSource::kube(Client::new(svc, "default"));
        // The consumer drains the stream as the binary does, counting errors.
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let consumer = {
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut stream = leafbridge_dns::watch::watch::<DNSView>(&source);
                while let Some(e) = stream.next().await {
                    if let Err(e) = e {
                        assert!(leafbridge_dns::watch::is_watch_failure(&e), "{e}");
                        errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        };
        // The CRD is not installed: every list is a 404.
        let mut requests = 0;
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
        while let Ok(Some((_, send))) = tokio::time::timeout_at(until, h.next_request()).await {
            requests += 1;
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"});
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        }
        consumer.abort();
        // Without a backoff the watcher relists at once, hundreds of times in 1.5 s.
        assert!((1..=3).contains(&requests), "{requests} lists in 1.5 s");
        assert!(errors.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }
}
