//! Kubernetes DNS specification conformance, per view, against the built binary queried
//! with dig over UDP and TCP. The cluster is described by manifests in a state directory.

mod common;

use common::Dns;
use leafbridge_tests::dns::DigAnswer;

const CONFIG: &str = r#"
listen: ["127.0.0.1:{port}", "127.0.0.3:{port}"]
ops_listen: "127.0.0.1:{ops}"
threads: 1
allow_clients: ["127.0.0.0/29"]
cluster:
  zone: cluster.local
  external_zone: k8s.corp.example
  service_cidrs: ["10.96.0.0/12", "fd00:10:96::/112"]
  pod_cidrs: ["10.244.0.0/16"]
  node_cidrs: ["127.0.0.1/32", "127.0.0.4/32"]
views:
  - name: routed
    destinations: ["127.0.0.3"]
    namespaces_deny: ["secret"]
    service_cidr_announced: true
    pod_cidr_announced: true
  - name: office
    sources: ["127.0.0.2/32"]
    trusted_ecs_from: ["127.0.0.4/32"]
    namespaces_deny: ["secret"]
upstreams:
  default: []
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports: [{name: http, port: 80, protocol: TCP}, {port: 8080}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.10}]
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: default}
spec: {clusterIP: 10.96.0.40, ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec: {clusterIP: "fd00:10:96::a", clusterIPs: ["fd00:10:96::a"], ipFamilies: [IPv6]}
---
apiVersion: v1
kind: Service
metadata:
  name: internal
  namespace: default
  annotations: {leafbridge.io/dns-hidden: "true"}
spec: {clusterIP: 10.96.0.30}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec: {clusterIP: None}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: www.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: vault, namespace: secret}
spec: {clusterIP: 10.96.0.20}
"#;

const SLICES: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-x1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
  - addresses: [10.244.1.5]
    hostname: db-0
    conditions: {ready: true}
  - addresses: [10.244.1.6]
  - addresses: [10.244.1.7]
    conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8000, protocol: TCP}]
endpoints:
  - addresses: [10.244.2.3]
"#;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default}
spec: {hostname: db-0, subdomain: db, containers: []}
status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default}
spec: {containers: []}
status: {podIP: 10.244.2.3}
"#;

fn start() -> Dns {
    Dns::start(
        CONFIG,
        &[
            ("services.yaml", SERVICES),
            ("slices.yaml", SLICES),
            ("pods.yaml", PODS),
        ],
    )
}

const TRANSPORTS: [&str; 2] = ["+notcp", "+tcp"];

/// Query over UDP and TCP; both must give the same reply.
fn q(dns: &Dns, extra: &[&str]) -> DigAnswer {
    let mut replies = TRANSPORTS.iter().map(|t| {
        let mut args: Vec<&str> = vec![t];
        args.extend_from_slice(extra);
        dns.dig(&args)
    });
    let udp = replies.next().unwrap();
    let tcp = replies.next().unwrap();
    assert_eq!(
        udp.rcode, tcp.rcode,
        "UDP vs TCP status for {extra:?}\n{}\n{}",
        udp.raw, tcp.raw
    );
    assert_eq!(udp.rdata("A"), tcp.rdata("A"));
    assert_eq!(
        udp.answers.len(),
        tcp.answers.len(),
        "{}\n{}",
        udp.raw,
        tcp.raw
    );
    assert!(!udp.rcode.is_empty(), "no reply for {extra:?}: {}", udp.raw);
    udp
}

#[test]
fn cluster_view_answers_the_specification_records() {
    let dns = start();
    // 2.2 schema version
    let r = q(&dns, &["dns-version.cluster.local", "TXT"]);
    assert_eq!(r.rdata("TXT"), vec!["\"1.1.0\""]);
    assert!(r.flags.contains(&"aa".to_string()));
    // 2.3.1 A for a ClusterIP Service
    let r = q(&dns, &["web.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.96.0.10"]);
    assert_eq!(r.ttls(), vec![5]);
    // AAAA for an IPv6 ClusterIP; A there is NODATA
    let r = q(&dns, &["web6.default.svc.cluster.local", "AAAA"]);
    assert_eq!(r.rdata("AAAA"), vec!["fd00:10:96::a"]);
    assert!(q(&dns, &["web6.default.svc.cluster.local", "A"]).is_nodata());
    assert!(q(&dns, &["web.default.svc.cluster.local", "AAAA"]).is_nodata());
    // 2.3.2 SRV for named ports only
    let r = q(&dns, &["_http._tcp.web.default.svc.cluster.local", "SRV"]);
    assert_eq!(
        r.rdata("SRV"),
        vec!["0 100 80 web.default.svc.cluster.local."]
    );
    assert!(q(&dns, &["_dns._udp.plain.default.svc.cluster.local", "SRV"]).rcode == "NOERROR");
    assert!(q(&dns, &["_http._udp.web.default.svc.cluster.local", "SRV"]).is_nxdomain());
    assert!(q(&dns, &["_tcp.web.default.svc.cluster.local", "SRV"]).is_nodata());
    // 2.3.3 PTR for a ClusterIP
    let r = q(&dns, &["-x", "10.96.0.10"]);
    assert_eq!(r.rdata("PTR"), vec!["web.default.svc.cluster.local."]);
    // 2.4.1 headless: ready endpoints only; hostname records
    let r = q(&dns, &["db.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.244.1.5", "10.244.1.6"]);
    let r = q(&dns, &["db-0.db.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.244.1.5"]);
    let r = q(&dns, &["10-244-1-6.db.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.244.1.6"]);
    assert!(q(&dns, &["10-244-1-7.db.default.svc.cluster.local", "A"]).is_nxdomain());
    // 2.4.2 SRV per ready endpoint and named port, with addresses in additional
    let r = q(&dns, &["_pg._tcp.db.default.svc.cluster.local", "SRV"]);
    assert_eq!(
        r.rdata("SRV"),
        vec![
            "0 50 5432 10-244-1-6.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local."
        ]
    );
    assert!(
        r.additional
            .iter()
            .any(|a| a.name == "db-0.db.default.svc.cluster.local." && a.rdata == "10.244.1.5")
    );
    // 2.4.3 PTR for headless endpoints (and the pod record)
    let r = q(&dns, &["-x", "10.244.1.5"]);
    assert_eq!(
        r.rdata("PTR"),
        vec![
            "10-244-1-5.default.pod.cluster.local.",
            "db-0.db.default.svc.cluster.local."
        ]
    );
    // headless with no ready endpoints: NXDOMAIN (as CoreDNS)
    assert!(q(&dns, &["empty.default.svc.cluster.local", "A"]).is_nxdomain());
    // 2.5.1 ExternalName → CNAME
    let r = q(&dns, &["ext.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("CNAME"), vec!["www.example.test."]);
    // pod records
    let r = q(&dns, &["10-244-2-3.default.pod.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.244.2.3"]);
    assert!(q(&dns, &["10-244-9-9.default.pod.cluster.local", "A"]).is_nxdomain());
    assert!(
        q(&dns, &["-x", "10.244.2.3"]).rdata("PTR")
            == vec!["10-244-2-3.default.pod.cluster.local."]
    );
    // NODATA vs NXDOMAIN, SOA in negative answers
    assert!(q(&dns, &["missing.default.svc.cluster.local", "A"]).is_nxdomain());
    assert!(q(&dns, &["default.svc.cluster.local", "A"]).is_nodata());
    assert!(q(&dns, &["svc.cluster.local", "A"]).is_nodata());
    assert!(q(&dns, &["nope.svc.cluster.local", "A"]).is_nxdomain());
    assert!(q(&dns, &["-x", "10.96.0.99"]).is_nxdomain());
    // Reverse zones at label boundaries inside the CIDRs (10.96.0.0/12: 96..111.10.in-addr.arpa),
    // each with SOA and NS at its apex; shorter names inside are empty non-terminals.
    let r = q(&dns, &["-x", "10.97.1.2"]);
    assert!(r.is_nxdomain());
    assert_eq!(r.authority[0].name, "97.10.in-addr.arpa.");
    let r = q(&dns, &["96.10.in-addr.arpa", "SOA"]);
    assert_eq!(r.answers.len(), 1, "{}", r.raw);
    assert_eq!(r.answers[0].name, "96.10.in-addr.arpa.");
    assert_eq!(
        q(&dns, &["244.10.in-addr.arpa", "NS"]).rdata("NS"),
        vec!["ns.dns.cluster.local."]
    );
    assert!(q(&dns, &["0.96.10.in-addr.arpa", "PTR"]).is_nodata());
    assert!(q(&dns, &["x.96.10.in-addr.arpa", "PTR"]).is_nxdomain());
    assert!(q(&dns, &["*.96.10.in-addr.arpa", "PTR"]).is_nxdomain());
    assert!(q(&dns, &["1.10.0.96.10.in-addr.arpa", "PTR"]).is_nxdomain());
    assert!(q(&dns, &["cluster.local", "SOA"]).rdata("SOA").len() == 1);
    // case-insensitive
    let r = q(&dns, &["WeB.DeFault.SVC.Cluster.Local", "A"]);
    assert_eq!(r.rdata("A"), vec!["10.96.0.10"]);
    // no wildcards: nothing lists the cluster
    assert!(q(&dns, &["*.default.svc.cluster.local", "A"]).is_nxdomain());
    assert!(q(&dns, &["*.*.svc.cluster.local", "A"]).is_nxdomain());
    // hidden Services and every namespace are visible in-cluster
    assert_eq!(
        q(&dns, &["internal.default.svc.cluster.local", "A"]).rdata("A"),
        vec!["10.96.0.30"]
    );
    assert_eq!(
        q(&dns, &["vault.secret.svc.cluster.local", "A"]).rdata("A"),
        vec!["10.96.0.20"]
    );
}

#[test]
fn office_view_answers_load_balancer_addresses_and_hides_the_rest() {
    let dns = start();
    let office = |name: &str, t: &str| q(&dns, &["-b", "127.0.0.2", name, t]);
    assert_eq!(
        office("web.default.svc.cluster.local", "A").rdata("A"),
        vec!["203.0.113.10"]
    );
    // ClusterIP-only Service: the service CIDR is not announced to this view
    assert!(office("plain.default.svc.cluster.local", "A").is_nodata());
    // denied namespace and the opt-out annotation
    assert!(office("vault.secret.svc.cluster.local", "A").is_nxdomain());
    assert!(office("secret.svc.cluster.local", "A").is_nxdomain());
    assert!(office("internal.default.svc.cluster.local", "A").is_nxdomain());
    assert!(office("-x", "10.96.0.20").is_nxdomain());
    // pod CIDR not announced: headless Services have no usable address
    assert!(office("db.default.svc.cluster.local", "A").is_nodata());
    // SRV for a LoadBalancer Service carries its external address
    let r = office("_http._tcp.web.default.svc.cluster.local", "SRV");
    assert!(
        r.additional.iter().any(|a| a.rdata == "203.0.113.10"),
        "{}",
        r.raw
    );
    // office-facing zone
    let r = office("web.default.k8s.corp.example", "A");
    assert_eq!(r.rdata("A"), vec!["203.0.113.10"]);
    assert!(office("plain.default.k8s.corp.example", "A").is_nxdomain());
    assert!(office("vault.secret.k8s.corp.example", "A").is_nxdomain());
}

#[test]
fn view_selected_by_local_address_answers_cluster_ips_when_routed() {
    let dns = start();
    let routed =
        |name: &str| common::dig(&dns.host, ([127, 0, 0, 3], dns.port).into(), &[name, "A"]);
    assert_eq!(
        routed("plain.default.svc.cluster.local").rdata("A"),
        vec!["10.96.0.40"]
    );
    assert_eq!(
        routed("web.default.svc.cluster.local").rdata("A"),
        vec!["203.0.113.10"]
    );
    assert_eq!(
        routed("db.default.svc.cluster.local").rdata("A"),
        vec!["10.244.1.5", "10.244.1.6"]
    );
    assert!(routed("vault.secret.svc.cluster.local").is_nxdomain());
}

#[test]
fn client_subnet_selects_the_view_only_from_trusted_forwarders() {
    let dns = start();
    let via = |src: &str| {
        q(
            &dns,
            &[
                "-b",
                src,
                "+subnet=127.0.0.2/32",
                "web.default.svc.cluster.local",
                "A",
            ],
        )
        .rdata("A")
    };
    assert_eq!(via("127.0.0.4"), vec!["203.0.113.10"]);
    assert_eq!(via("127.0.0.1"), vec!["10.96.0.10"]);
}

#[test]
fn clients_outside_the_allow_list_are_refused() {
    let dns = start();
    let r = dns.dig(&["-b", "127.0.0.9", "web.default.svc.cluster.local", "A"]);
    assert_eq!(r.rcode, "REFUSED", "{}", r.raw);
    assert!(r.answers.is_empty());
    // Over TCP the connection is closed at accept: no answer at all.
    let r = dns.dig(&[
        "+tcp",
        "-b",
        "127.0.0.9",
        "web.default.svc.cluster.local",
        "A",
    ]);
    assert!(r.rcode.is_empty() && r.answers.is_empty(), "{}", r.raw);
}

#[test]
fn index_follows_state_directory_changes_and_keeps_state_on_bad_files() {
    let dns = start();
    let extra = r#"
apiVersion: v1
kind: Service
metadata: {name: late, namespace: newns}
spec: {clusterIP: 10.96.0.77}
"#;
    std::fs::write(dns.state_dir().join("late.yaml"), extra).unwrap();
    let ok = wait_until(|| {
        dns.dig(&["late.newns.svc.cluster.local", "A"]).rdata("A") == vec!["10.96.0.77"]
    });
    assert!(ok, "new Service never answered");
    // A malformed edit of the same file keeps the last good objects.
    std::fs::write(
        dns.state_dir().join("late.yaml"),
        "kind: Service\nspec: [oops\n",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        q(&dns, &["late.newns.svc.cluster.local", "A"]).rdata("A"),
        vec!["10.96.0.77"]
    );
    assert!(
        dns.http_get("/metrics")
            .contains("leafbridge_state_dir_malformed_manifests_total{")
    );
    // Removing the file deletes its objects.
    std::fs::remove_file(dns.state_dir().join("late.yaml")).unwrap();
    let ok = wait_until(|| {
        dns.dig(&["late.newns.svc.cluster.local", "A"])
            .is_nxdomain()
    });
    assert!(ok, "deleted Service still answered");
    // An endpoint becoming not ready leaves the headless answer.
    let slices = SLICES.replace(
        "  - addresses: [10.244.1.6]\n",
        "  - addresses: [10.244.1.6]\n    conditions: {ready: false}\n",
    );
    std::fs::write(dns.state_dir().join("slices.yaml"), slices).unwrap();
    let ok = wait_until(|| {
        dns.dig(&["db.default.svc.cluster.local", "A"]).rdata("A") == vec!["10.244.1.5"]
    });
    assert!(ok, "not-ready endpoint still answered");
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn large_answers_set_tc_over_udp_and_come_whole_over_tcp() {
    let mut eps = String::new();
    for i in 0..120 {
        eps.push_str(&format!("  - addresses: [10.244.3.{i}]\n"));
    }
    let big = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: big, namespace: default}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: big}}\naddressType: IPv4\nendpoints:\n{eps}"
    );
    let dns = Dns::start(CONFIG, &[("big.yaml", &big)]);
    let udp = dns.dig(&["+ignore", "+noedns", "big.default.svc.cluster.local", "A"]);
    assert!(udp.flags.contains(&"tc".to_string()), "{}", udp.raw);
    let udp_edns = dns.dig(&[
        "+ignore",
        "+bufsize=4096",
        "big.default.svc.cluster.local",
        "A",
    ]);
    // Our own limit (1232) caps a larger client buffer.
    assert!(
        udp_edns.flags.contains(&"tc".to_string()),
        "{}",
        udp_edns.raw
    );
    let tcp = dns.dig(&["+tcp", "big.default.svc.cluster.local", "A"]);
    assert_eq!(tcp.rdata("A").len(), 120);
}

#[test]
fn malformed_packets_get_formerr_or_are_dropped_and_the_server_survives() {
    use std::net::UdpSocket;
    let dns = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let server = ("127.0.0.1", dns.port);
    // Header claims one question, body is garbage.
    let mut pkt = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(&[0xff; 20]);
    sock.send_to(&pkt, server).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert!(n >= 12);
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    // Too short for a header: dropped.
    sock.send_to(&[1, 2, 3], server).unwrap();
    assert!(sock.recv_from(&mut buf).is_err());
    // Random garbage of many sizes never kills it.
    let mut x: u32 = 12345;
    for len in 0..300 {
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        sock.send_to(&p, server).unwrap();
    }
    assert_eq!(
        q(&dns, &["web.default.svc.cluster.local", "A"]).rdata("A"),
        vec!["10.96.0.10"]
    );
}

#[test]
fn ops_endpoints_report_health_readiness_and_query_metrics() {
    let dns = start();
    q(&dns, &["web.default.svc.cluster.local", "A"]);
    assert!(
        dns.http_get("/healthz").starts_with("HTTP/1.0 200")
            || dns.http_get("/healthz").starts_with("HTTP/1.1 200")
    );
    assert!(dns.http_get("/readyz").contains(" 200 "));
    let m = dns.http_get("/metrics");
    assert!(
        m.contains(r#"leafbridge_dns_queries_total{view="cluster",qtype="A",rcode="NOERROR",transport="udp"}"#),
        "{m}"
    );
    assert!(m.contains(r#"transport="tcp""#));
}

#[test]
fn per_client_rate_limit_drops_udp_excess_and_refuses_over_tcp() {
    let config = CONFIG.replace(
        "upstreams:",
        "limits:\n  rate_limit: {queries_per_second: 1, burst: 10}\nupstreams:",
    );
    let dns = Dns::start(&config, &[("services.yaml", SERVICES)]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    // A minimal query for web.default.svc.cluster.local A.
    let mut pkt = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["web", "default", "svc", "cluster", "local"] {
        pkt.push(l.len() as u8);
        pkt.extend_from_slice(l.as_bytes());
    }
    pkt.extend_from_slice(&[0, 0, 1, 0, 1]);
    for _ in 0..50 {
        sock.send_to(&pkt, ("127.0.0.1", dns.port)).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!((10..=11).contains(&answered), "answered {answered} of 50");
    let tcp = dns.dig(&["+tcp", "web.default.svc.cluster.local", "A"]);
    assert_eq!(tcp.rcode, "REFUSED");
    // Another client has its own bucket.
    let other = dns.dig(&["-b", "127.0.0.2", "web.default.svc.cluster.local", "A"]);
    assert_eq!(other.rcode, "NOERROR");
    assert!(
        dns.http_get("/metrics")
            .contains(r#"leafbridge_dns_rejected_total{reason="rate_limited"}"#)
    );
}

#[test]
fn config_reload_under_load_drops_no_query() {
    let dns = start();
    let port = dns.port;
    let sender = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut pkt = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["web", "default", "svc", "cluster", "local"] {
            pkt.push(l.len() as u8);
            pkt.extend_from_slice(l.as_bytes());
        }
        pkt.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        for i in 0..1500u16 {
            pkt[..2].copy_from_slice(&i.to_be_bytes());
            sock.send_to(&pkt, ("127.0.0.1", port)).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n > 12
                && buf[..2] == i.to_be_bytes()
            {
                answered += 1;
            }
        }
        answered
    });
    // Rewrite the configuration repeatedly while queries flow (SIGHUP-equivalent file change).
    let base = std::fs::read_to_string(dns.config_path()).unwrap();
    for i in 0..6 {
        let text = base.replace("threads: 1", &format!("threads: 1\n# edit {i}"));
        std::fs::write(dns.config_path(), text).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    assert_eq!(sender.join().unwrap(), 1500);
    assert!(
        dns.http_get("/metrics")
            .contains(r#"leafbridge_dns_config_reloads_total{reason="ok"}"#)
    );
}

#[test]
fn kdig_sees_the_same_answers_over_udp_and_tcp() {
    leafbridge_tests::require("kdig");
    let dns = start();
    for transport in ["+notcp", "+tcp"] {
        let out = std::process::Command::new("kdig")
            .args([
                "@127.0.0.1",
                "-p",
                &dns.port.to_string(),
                transport,
                "+short",
                "_pg._tcp.db.default.svc.cluster.local",
                "SRV",
            ])
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "0 50 5432 10-244-1-6.db.default.svc.cluster.local.",
                "0 50 5432 db-0.db.default.svc.cluster.local."
            ],
            "kdig {transport}"
        );
    }
}

#[test]
fn tcp_connections_beyond_the_limit_are_closed_and_others_still_served() {
    use std::io::Read;
    let config = CONFIG.replace(
        "upstreams:",
        "limits:\n  max_tcp_connections: 2\n  tcp_idle_ms: 3000\nupstreams:",
    );
    let dns = Dns::start(&config, &[("services.yaml", SERVICES)]);
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", dns.port)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(("127.0.0.1", dns.port)).unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "over-limit connection closed"
    );
    // UDP is unaffected.
    assert_eq!(
        dns.dig(&["web.default.svc.cluster.local", "A"]).rdata("A"),
        vec!["10.96.0.10"]
    );
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        dns.dig(&["+tcp", "web.default.svc.cluster.local", "A"])
            .rdata("A"),
        vec!["10.96.0.10"]
    );
}

#[test]
fn edns_versions_above_zero_get_badvers_with_an_opt_of_version_zero() {
    let dns = start();
    // RFC 6891 6.1.3.
    let a = q(
        &dns,
        &[
            "+edns=1",
            "+noednsnegotiation",
            "web.default.svc.cluster.local",
            "A",
        ],
    );
    assert_eq!(a.rcode, "BADVERS", "{}", a.raw);
    assert!(a.answers.is_empty(), "{}", a.raw);
    assert!(a.raw.contains("EDNS: version: 0"), "{}", a.raw);
    // Version 0 is answered as ever.
    let ok = q(&dns, &["+edns=0", "web.default.svc.cluster.local", "A"]);
    assert_eq!(ok.rdata("A"), vec!["10.96.0.10"]);
}

#[test]
fn chaos_class_answers_the_version_only_and_other_classes_are_refused() {
    let dns = start();
    let v = q(&dns, &["version.bind", "CH", "TXT"]);
    assert_eq!(v.rcode, "NOERROR", "{}", v.raw);
    let txt = v.rdata("TXT");
    assert_eq!(txt.len(), 1, "{}", v.raw);
    assert!(txt[0].contains("leafbridge-dns"), "{}", v.raw);
    assert!(
        v.raw.contains("CH\tTXT"),
        "the record is of class CH: {}",
        v.raw
    );
    assert_eq!(
        q(&dns, &["version.server", "CH", "TXT"]).rdata("TXT").len(),
        1
    );
    // Naming the node is not for anyone allowed to ask.
    assert_eq!(q(&dns, &["hostname.bind", "CH", "TXT"]).rcode, "REFUSED");
    assert_eq!(q(&dns, &["id.server", "CH", "TXT"]).rcode, "REFUSED");
    // Cluster names exist in class IN only.
    let ch = q(&dns, &["web.default.svc.cluster.local", "CH", "A"]);
    assert_eq!(ch.rcode, "REFUSED", "{}", ch.raw);
    assert!(ch.answers.is_empty());
    let hs = q(&dns, &["web.default.svc.cluster.local", "HS", "A"]);
    assert_eq!(hs.rcode, "REFUSED", "{}", hs.raw);
}
