//! Forwarding through a real unbound upstream on loopback: cache hits, TTL decrease,
//! negative caching (RFC 2308), TCP fallback on truncation, upstream failover, per-zone
//! upstreams, coalescing and config reload.

mod common;

use std::time::Duration;

use common::{Dns, upstream};
use leafbridge_tests::dns::{Unbound, free_port};

fn config(upstreams: &str) -> String {
    format!(
        r#"
listen: ["127.0.0.1:{{port}}"]
ops_listen: "127.0.0.1:{{ops}}"
threads: 2
cluster: {{node_cidrs: ["127.0.0.0/8"]}}
upstreams:
  timeout_ms: 300
{upstreams}
"#
    )
}

fn data() -> Vec<String> {
    let mut d = vec![
        "a.example.test. 30 IN A 192.0.2.1".to_string(),
        "b.example.test. 30 IN A 192.0.2.2".to_string(),
    ];
    // ~100 A records: more than our 1232-byte EDNS buffer, so unbound truncates over UDP.
    for i in 1..=100 {
        d.push(format!("big.example.test. 30 IN A 198.51.100.{i}"));
    }
    d
}

/// The proxy with `ub` as its one default upstream.
fn forwarding_to(ub: &Unbound) -> Dns {
    Dns::start(
        &config(&format!("  default: [\"127.0.0.1:{}\"]", ub.addr().port())),
        &[],
    )
}

fn metric(dns: &Dns, name: &str) -> u64 {
    let m = dns.http_get("/metrics");
    m.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn answers_from_cache_with_decreasing_ttl_after_the_upstream_is_gone() {
    let ub = upstream(&data());
    let dns = forwarding_to(&ub);
    let first = dns.dig(&["a.example.test", "A"]);
    assert_eq!(first.rdata("A"), vec!["192.0.2.1"], "{}", first.raw);
    assert_eq!(first.ttls(), vec![30]);
    assert!(first.flags.contains(&"ra".to_string()));
    assert!(!first.flags.contains(&"aa".to_string()));
    std::thread::sleep(Duration::from_millis(2100));
    ub.process().kill();
    let again = dns.dig(&["a.example.test", "A"]);
    assert_eq!(again.rdata("A"), vec!["192.0.2.1"]);
    let ttl = again.ttls()[0];
    assert!(
        (26..=28).contains(&ttl),
        "TTL should have decreased by ~2 s, got {ttl}"
    );
    let tcp = dns.dig(&["+tcp", "a.example.test", "A"]);
    assert_eq!(tcp.rdata("A"), vec!["192.0.2.1"]);
    assert!(metric(&dns, "leafbridge_dns_cache_hits_total") >= 2);
    // Not cached, upstream gone: SERVFAIL, not a hang.
    assert_eq!(dns.dig(&["b.example.test", "A"]).rcode, "SERVFAIL");
}

#[test]
fn caches_nxdomain_and_nodata_for_the_soa_minimum() {
    let ub = upstream(&data());
    let dns = forwarding_to(&ub);
    let nx = dns.dig(&["missing.example.test", "A"]);
    assert!(nx.is_nxdomain(), "{}", nx.raw);
    let nodata = dns.dig(&["a.example.test", "AAAA"]);
    assert!(nodata.is_nodata(), "{}", nodata.raw);
    ub.process().kill();
    // RFC 2308 5: cached for min(SOA TTL, SOA MINIMUM) = 10 s.
    let nx = dns.dig(&["missing.example.test", "A"]);
    assert!(nx.is_nxdomain(), "negative answer not cached: {}", nx.raw);
    assert!(dns.dig(&["a.example.test", "AAAA"]).is_nodata());
    let soa_ttl = nx.authority[0].ttl;
    assert!(
        soa_ttl <= 10,
        "negative TTL {soa_ttl} above the SOA minimum"
    );
}

#[test]
fn retries_over_tcp_when_the_upstream_truncates() {
    let ub = upstream(&data());
    let dns = forwarding_to(&ub);
    let r = dns.dig(&["+tcp", "big.example.test", "A"]);
    assert_eq!(r.rdata("A").len(), 100, "{}", r.raw);
    // The same answer over UDP to us is too large: TC, client retries over TCP.
    let udp = dns.dig(&["+ignore", "big.example.test", "A"]);
    assert!(udp.flags.contains(&"tc".to_string()), "{}", udp.raw);
}

#[test]
fn a_udp_miss_truncated_upstream_is_fetched_over_tcp_and_cached_whole() {
    let ub = upstream(&data());
    let dns = forwarding_to(&ub);
    // Asked over UDP first: the UDP forwarding path gets TC from unbound and asks again
    // over TCP; the client, whose buffer is too small for it, gets TC.
    let udp = dns.dig(&["+ignore", "big.example.test", "A"]);
    assert!(udp.flags.contains(&"tc".to_string()), "{}", udp.raw);
    // The whole answer was cached: over TCP it is a hit with all 100 records.
    let tcp = dns.dig(&["+tcp", "big.example.test", "A"]);
    assert_eq!(tcp.rdata("A").len(), 100, "{}", tcp.raw);
    assert_eq!(metric(&dns, "leafbridge_dns_cache_misses_total"), 1);
}

#[test]
fn fails_over_to_the_next_upstream_and_remembers_it() {
    let ub = upstream(&data());
    let dead = free_port();
    let dns = Dns::start(
        &config(&format!(
            "  default: [\"127.0.0.1:{dead}\", \"127.0.0.1:{}\"]",
            ub.addr().port()
        )),
        &[],
    );
    let t0 = std::time::Instant::now();
    assert_eq!(
        dns.dig(&["a.example.test", "A"]).rdata("A"),
        vec!["192.0.2.1"]
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The working upstream is now preferred: no timeout for the next miss.
    let t1 = std::time::Instant::now();
    assert_eq!(
        dns.dig(&["b.example.test", "A"]).rdata("A"),
        vec!["192.0.2.2"]
    );
    assert!(
        t1.elapsed() < Duration::from_millis(250),
        "{:?}",
        t1.elapsed()
    );
    assert!(
        dns.http_get("/metrics")
            .contains("leafbridge_dns_upstream_errors_total{")
    );
}

#[test]
fn routes_zones_to_their_own_upstreams() {
    let ub = upstream(&data());
    let dead = free_port();
    let dns = Dns::start(
        &config(&format!(
            "  default: [\"127.0.0.1:{dead}\"]\n  zones:\n    - zone: example.test\n      servers: [\"127.0.0.1:{}\"]",
            ub.addr().port()
        )),
        &[],
    );
    assert_eq!(
        dns.dig(&["A.Example.Test", "A"]).rdata("A"),
        vec!["192.0.2.1"]
    );
    assert_eq!(dns.dig(&["other.invalid", "A"]).rcode, "SERVFAIL");
}

#[test]
fn coalesces_identical_concurrent_queries() {
    let ub = upstream(&data());
    let dns = forwarding_to(&ub);
    let (host, server) = (dns.host.clone(), dns.addr());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || common::dig(&host, server, &["b.example.test", "A"]))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().rdata("A"), vec!["192.0.2.2"]);
    }
    let misses = metric(&dns, "leafbridge_dns_cache_misses_total");
    let coalesced = metric(&dns, "leafbridge_dns_coalesced_total");
    let hits = metric(&dns, "leafbridge_dns_cache_hits_total");
    assert_eq!(misses + hits, 8);
    // Exactly one upstream query: every other miss joined it.
    assert_eq!(
        misses - coalesced,
        1,
        "misses {misses} coalesced {coalesced}"
    );
}

#[test]
fn reloads_configuration_without_restarting() {
    let ub = upstream(&data());
    let dead = free_port();
    let dns = Dns::start(&config(&format!("  default: [\"127.0.0.1:{dead}\"]")), &[]);
    assert_eq!(dns.dig(&["a.example.test", "A"]).rcode, "SERVFAIL");
    let text = std::fs::read_to_string(dns.config_path())
        .unwrap()
        .replace(&dead.to_string(), &ub.addr().port().to_string());
    std::fs::write(dns.config_path(), text).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if dns.dig(&["a.example.test", "A"]).rdata("A") == vec!["192.0.2.1"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "config never reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file is rejected and the running configuration kept.
    std::fs::write(dns.config_path(), "listen: [oops\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        dns.dig(&["a.example.test", "A"]).rdata("A"),
        vec!["192.0.2.1"]
    );
    assert!(
        dns.http_get("/metrics")
            .contains(r#"leafbridge_dns_config_reloads_total{reason="error"}"#)
    );
}

/// CPU seconds (user+system, all threads) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of proc(5), in clock ticks (100 per second on
    // Linux's user-space ABI).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[test]
fn an_idle_server_burns_no_cpu_with_or_without_upstreams() {
    let ub = upstream(&data());
    for (what, upstreams) in [
        ("no upstreams section", String::new()),
        (
            "an upstream",
            format!("  default: [\"127.0.0.1:{}\"]", ub.addr().port()),
        ),
    ] {
        let cfg = if upstreams.is_empty() {
            "listen: [\"127.0.0.1:{port}\"]\nops_listen: \"127.0.0.1:{ops}\"\n".to_string()
        } else {
            config(&upstreams)
        };
        let dns = Dns::start(&cfg, &[]);
        // One forwarded query, so every thread has started and done its work once.
        let _ = dns.dig(&["a.example.test", "A"]);
        let pid = dns.process.pid();
        let before = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_seconds(pid) - before;
        assert!(
            used < 0.1,
            "{what}: an idle server used {used:.2} s of CPU in 2 s"
        );
    }
}
