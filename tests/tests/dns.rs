//! The DNS runners proved with dig: unbound answers local data on the host loopback and inside
//! a namespace, forwards a zone to dnsmasq, and dnsmasq answers host records.

use std::net::SocketAddr;

use leafbridge_tests::Topology;
use leafbridge_tests::dns::{
    Dnsmasq, DnsmasqConfig, DnsperfOptions, Unbound, UnboundConfig, dig, dnsperf, write_queries,
};

fn unbound_with_www() -> UnboundConfig {
    let mut c = UnboundConfig::new();
    c.local_zone("example.test.", "static");
    c.local_data("www.example.test. 300 IN A 203.0.113.80");
    c
}

#[test]
fn unbound_answers_local_data_on_host_loopback_over_udp_and_tcp() {
    let topo = Topology::new("ubh");
    let host = topo.host();
    let u = Unbound::start(&host, "up", &unbound_with_www());
    let a = dig(&host, u.addr(), "www.example.test", "A", &[]);
    assert_eq!(a.rcode, "NOERROR", "{}", a.raw);
    assert_eq!(a.rdata("A"), vec!["203.0.113.80"]);
    let a = dig(&host, u.addr(), "www.example.test", "A", &["+tcp"]);
    assert_eq!(a.rdata("A"), vec!["203.0.113.80"], "{}", a.raw);
    let a = dig(&host, u.addr(), "nope.example.test", "A", &[]);
    assert_eq!(a.rcode, "NXDOMAIN", "{}", a.raw);
}

#[test]
fn unbound_in_a_namespace_answers_clients_there_and_forwards_to_dnsmasq() {
    let topo = Topology::new("ubn");
    let ns = topo.namespace("dns");
    let mut dc = DnsmasqConfig::new();
    dc.host_records
        .push(("api.corp.test".into(), vec!["203.0.113.7".parse().unwrap()]));
    let dm = Dnsmasq::start(&ns, "corp", &dc);
    let a = dig(&ns, dm.addr(), "api.corp.test", "A", &[]);
    assert_eq!(a.rdata("A"), vec!["203.0.113.7"], "{}", a.raw);

    let mut uc = unbound_with_www();
    uc.port = 53;
    uc.num_threads = 2;
    uc.forward_zone("corp.test.", &[dm.addr()]);
    let u = Unbound::start(&ns, "up", &uc);
    assert_eq!(u.addr(), SocketAddr::from(([127, 0, 0, 1], 53)));
    assert_eq!(
        dig(&ns, u.addr(), "www.example.test", "A", &[]).rdata("A"),
        vec!["203.0.113.80"]
    );
    let fwd = dig(&ns, u.addr(), "api.corp.test", "A", &[]);
    assert_eq!(fwd.rdata("A"), vec!["203.0.113.7"], "{}", fwd.raw);
    // Names without a forward zone are refused, never looked up on the Internet.
    let lost = dig(&ns, u.addr(), "example.com", "A", &[]);
    assert_eq!(lost.rcode, "REFUSED", "{}", lost.raw);
}

#[test]
fn dnsperf_measures_unbound_at_a_fixed_rate_with_latency_percentiles() {
    let topo = Topology::new("perf");
    let ns = topo.namespace("dns");
    let u = Unbound::start(&ns, "up", &unbound_with_www());
    let q = topo.dir().join("queries.txt");
    write_queries(&q, &[("www.example.test", "A"), ("nope.example.test", "A")]);
    let cpu_before = u.process().cpu_time().unwrap();
    let opts = DnsperfOptions {
        duration: std::time::Duration::from_secs(1),
        max_qps: Some(2000),
        latencies: true,
        ..DnsperfOptions::default()
    };
    let r = dnsperf(&ns, u.addr(), &q, &opts);
    let cpu = u.process().cpu_time().unwrap() - cpu_before;
    assert!(r.sent >= 1500 && r.lost == 0, "{}", r.raw_summary);
    assert_eq!(
        r.rcodes.get("NOERROR").copied().unwrap_or(0) + r.rcodes["NXDOMAIN"],
        r.completed
    );
    assert_eq!(r.latencies.len() as u64, r.completed);
    assert!(r.percentile(50.0).unwrap() <= r.percentile(99.0).unwrap());
    // Per-query CPU cost is what the DNS benchmark compares; it must be measurable.
    assert!(cpu > std::time::Duration::ZERO, "unbound used no CPU?");
}
