//! One client cannot take the service down, on the wire against the running binary: TCP
//! connections are refused at accept or capped per client, idle and non-reading
//! connections are closed, pipelined queries are answered concurrently, the rate limit
//! counts the client a trusted forwarder names, and forwarded queries in flight are
//! bounded (SERVFAIL at once past the bound).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::Dns;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use leafbridge_tests::wait_until;

/// `{limits}` and `{upstream}` are filled in per test.
const CONFIG: &str = r#"
listen: ["127.0.0.1:{port}"]
ops_listen: "127.0.0.1:{ops}"
threads: 2
allow_clients: ["127.0.0.1/32", "127.0.0.4/32", "127.0.0.5/32", "127.0.0.6/32"]
cluster:
  node_cidrs: ["127.0.0.0/24"]
views:
  - name: office
    sources: ["198.51.100.0/24"]
    trusted_ecs_from: ["127.0.0.4/32"]
upstreams:
  timeout_ms: 1500
  default: [UPSTREAM]
limits:
LIMITS
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10}
"#;

fn config(limits: &str, upstream: &str) -> String {
    CONFIG
        .replace("LIMITS", limits)
        .replace("UPSTREAM", upstream)
}

fn start(limits: &str, upstream: &str) -> Dns {
    Dns::start(&config(limits, upstream), &[("services.yaml", SERVICES)])
}

fn query(id: u16, name: &str) -> Message {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m
}

fn framed(m: &Message) -> Vec<u8> {
    let b = m.to_vec().unwrap();
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

fn read_reply(s: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}

/// The server closed `s`: a read returns EOF (or a reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn metric(dns: &Dns, name: &str) -> f64 {
    dns.http_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_client_outside_the_allow_list_is_closed_at_accept() {
    let dns = start("  tcp_idle_ms: 10000", "");
    let mut s = connect_from([127, 0, 0, 9], dns.addr());
    // Closed before it sends anything, not after the 10 s idle time.
    assert!(closed_within(&mut s, Duration::from_secs(3)));
}

#[test]
fn one_client_cannot_take_every_tcp_connection_and_the_cap_follows_a_reload() {
    let limits = "  max_tcp_connections_per_client: 4\n  tcp_idle_ms: 30000";
    let dns = start(limits, "");
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from([127, 0, 0, 5], dns.addr()))
        .collect();
    wait_until(Duration::from_secs(5), "4 connections open", || {
        metric(&dns, "leafbridge_dns_tcp_connections") >= 4.0
    });
    let mut fifth = connect_from([127, 0, 0, 5], dns.addr());
    assert!(
        closed_within(&mut fifth, Duration::from_secs(3)),
        "fifth connection kept"
    );
    // Another client is served.
    let r = dns.dig(&[
        "+tcp",
        "-b",
        "127.0.0.6",
        "web.default.svc.cluster.local",
        "A",
    ]);
    assert_eq!(r.rdata("A"), ["10.96.0.10"], "{}", r.raw);
    // The held ones still answer.
    held[0]
        .write_all(&framed(&query(7, "web.default.svc.cluster.local.")))
        .unwrap();
    assert_eq!(read_reply(&mut held[0]).unwrap().metadata.id, 7);

    // A reload lowers the cap: the next connection beyond 2 is refused.
    drop(held.split_off(1));
    let lower = config(
        "  max_tcp_connections_per_client: 2\n  tcp_idle_ms: 30000",
        "",
    );
    let lower = lower
        .replace("{port}", &dns.port.to_string())
        .replace("{ops}", &dns.ops_port.to_string());
    std::fs::write(dns.config_path(), lower).unwrap();
    wait_until(Duration::from_secs(10), "the reload", || {
        metric(&dns, "leafbridge_dns_config_reloads_total{reason=\"ok\"}") >= 1.0
    });
    wait_until(Duration::from_secs(5), "closed connections counted", || {
        metric(&dns, "leafbridge_dns_tcp_connections") <= 1.0
    });
    let _second = connect_from([127, 0, 0, 5], dns.addr());
    wait_until(Duration::from_secs(5), "2 connections open", || {
        metric(&dns, "leafbridge_dns_tcp_connections") >= 2.0
    });
    let mut third = connect_from([127, 0, 0, 5], dns.addr());
    assert!(
        closed_within(&mut third, Duration::from_secs(3)),
        "cap not re-read"
    );
}

#[test]
fn a_connection_without_a_whole_query_within_the_idle_time_is_closed() {
    let dns = start("  tcp_idle_ms: 1000", "");
    let mut s = TcpStream::connect(dns.addr()).unwrap();
    let q = framed(&query(1, "web.default.svc.cluster.local."));
    // Every step within the idle time, the whole query not: the length's two bytes
    // 0.9 s apart, the body 0.6 s later.
    s.write_all(&q[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let _ = s.write_all(&q[1..2]);
    std::thread::sleep(Duration::from_millis(600));
    let _ = s.write_all(&q[2..]);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(
        read_reply(&mut s).is_none(),
        "answered a query that took 1.5 s to arrive"
    );
    assert!(closed_within(&mut s, Duration::from_secs(3)), "still open");
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_hold_the_connection() {
    let dns = start(
        "  tcp_write_timeout_ms: 500\n  tcp_idle_ms: 60000\n  rate_limit: null",
        "",
    );
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&dns.addr().into()).unwrap();
    let mut s: TcpStream = s.into();
    let one = framed(&query(1, "web.default.svc.cluster.local."));
    let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Pipeline queries and never read; stop once the server stops taking them.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) && s.write_all(&burst).is_ok() {}
    wait_until(
        Duration::from_secs(10),
        "the server to close the connection",
        || metric(&dns, "leafbridge_dns_tcp_connections") == 0.0,
    );
    // Everyone else is still served.
    let r = dns.dig(&["+tcp", "web.default.svc.cluster.local", "A"]);
    assert_eq!(r.rdata("A"), ["10.96.0.10"], "{}", r.raw);
}

/// A UDP socket that never answers: a blackholed upstream.
fn blackhole() -> (UdpSocket, String) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("\"{}\"", s.local_addr().unwrap());
    (s, addr)
}

#[test]
fn pipelined_queries_are_answered_concurrently() {
    let (_hole, upstream) = blackhole();
    let dns = start("  tcp_idle_ms: 10000", &upstream);
    let mut s = TcpStream::connect(dns.addr()).unwrap();
    // A forwarded query to a silent upstream, then a cluster name: RFC 7766 6.2.1.1 lets
    // the second be answered first, and it must not wait the upstream timeouts out.
    let mut both = framed(&query(1, "slow.example.test."));
    both.extend(framed(&query(2, "web.default.svc.cluster.local.")));
    s.write_all(&both).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let first = read_reply(&mut s).expect("a reply");
    assert_eq!(first.metadata.id, 2, "the cluster answer came second");
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    // And the slow one is still answered (SERVFAIL after its timeouts).
    assert_eq!(read_reply(&mut s).expect("second reply").metadata.id, 1);
}

fn with_ecs(id: u16, name: &str, client: &str) -> Vec<u8> {
    let mut m = query(id, name);
    let mut edns = Edns::new();
    let cs = ClientSubnet::new(client.parse().unwrap(), 32, 0);
    edns.options_mut().insert(EdnsOption::Subnet(cs));
    m.set_edns(edns);
    m.to_vec().unwrap()
}

/// How many of `n` UDP queries from `from` get a reply.
fn answered(dns: &Dns, from: &UdpSocket, packets: &[Vec<u8>]) -> usize {
    for p in packets {
        from.send_to(p, dns.addr()).unwrap();
    }
    from.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut n = 0;
    while from.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn a_trusted_forwarder_is_limited_per_client_it_names() {
    let dns = start("  rate_limit: {queries_per_second: 1, burst: 5}", "");
    let fwd = UdpSocket::bind("127.0.0.4:0").unwrap();
    let name = "web.default.svc.cluster.local.";
    let a: Vec<Vec<u8>> = (0..20).map(|i| with_ecs(i, name, "198.51.100.1")).collect();
    let got = answered(&dns, &fwd, &a);
    assert!(
        (5..=6).contains(&got),
        "client A: {got} of 20 answered with a burst of 5"
    );
    // Another office client behind the same forwarder has its own bucket.
    let b: Vec<Vec<u8>> = (100..105)
        .map(|i| with_ecs(i, name, "198.51.100.2"))
        .collect();
    assert_eq!(
        answered(&dns, &fwd, &b),
        5,
        "client B limited with client A"
    );
}

#[test]
fn forwarded_queries_in_flight_are_bounded_and_the_rest_get_servfail_at_once() {
    let (_hole, upstream) = blackhole();
    let dns = start(
        "  max_forwards_in_flight: 8\n  max_forwards_per_client: 4\n  rate_limit: null",
        &upstream,
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    for i in 0..10u16 {
        let q = query(i, &format!("n{i}.example.test.")).to_vec().unwrap();
        sock.send_to(&q, dns.addr()).unwrap();
    }
    // Six beyond the client's four get SERVFAIL long before the upstream timeout.
    sock.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut servfail = 0;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::ServFail
        );
        servfail += 1;
        if servfail == 6 {
            break;
        }
    }
    assert_eq!(servfail, 6, "after {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    // Another client still has its own share.
    let other = UdpSocket::bind("127.0.0.5:0").unwrap();
    let q = query(99, "n99.example.test.").to_vec().unwrap();
    other.send_to(&q, dns.addr()).unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        other.recv_from(&mut buf).is_err(),
        "another client's query was refused instead of forwarded"
    );
    let metrics = dns.http_get("/metrics");
    assert!(
        metrics.contains("leafbridge_dns_rejected_total{reason=\"forwards_per_client\"} 6"),
        "{metrics}"
    );
}
