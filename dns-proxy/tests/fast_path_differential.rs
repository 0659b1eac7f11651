//! The wire-format answer cache (`fastpath`) must never change an answer: for every query
//! shape, view, transport and query ID, `Server::handle` (cache on) returns byte for byte what
//! `Server::handle_uncached` (the full path) returns, before and after the index changes and
//! for forwarding-cache hits as well as authoritative answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use leafbridge_dns::forward::{CacheKey, CachedAnswer};
use leafbridge_dns::server::{Outcome, Server, Transport};
use leafbridge_dns::testing::fixture_server;

fn query(id: u16, name: &str, qtype: RecordType, edns: Option<(u16, bool)>, rd: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// What the server did, comparable: `Ok(reply)`, or `Err` naming a forward or a drop.
fn outcome(o: Outcome) -> Result<Vec<u8>, String> {
    match o {
        Outcome::Reply(b) => Ok(b),
        Outcome::Drop => Err("drop".into()),
        Outcome::Forward(req, view, _) => {
            Err(format!("forward {} via {}", req.queries[0], view.name))
        }
    }
}

fn bytes(o: Outcome) -> Option<Vec<u8>> {
    outcome(o).ok()
}

const NAMES: &[(&str, RecordType)] = &[
    ("web.default.svc.cluster.local.", RecordType::A),
    ("WEB.Default.svc.cluster.local.", RecordType::A),
    ("web.default.svc.cluster.local.", RecordType::AAAA),
    ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
    ("db.default.svc.cluster.local.", RecordType::A),
    ("db-0.db.default.svc.cluster.local.", RecordType::A),
    ("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV),
    ("ext.default.svc.cluster.local.", RecordType::A),
    ("nope.default.svc.cluster.local.", RecordType::A),
    ("cluster.local.", RecordType::SOA),
    ("cluster.local.", RecordType::NS),
    ("dns-version.cluster.local.", RecordType::TXT),
    ("10.0.96.10.in-addr.arpa.", RecordType::PTR),
    ("10-244-1-5.default.pod.cluster.local.", RecordType::A),
    ("web.default.k8s.corp.example.", RecordType::A),
    ("www.example.test.", RecordType::A),
    ("uncached.example.test.", RecordType::A),
];

const EDNS: &[Option<(u16, bool)>] = &[
    None,
    Some((1232, false)),
    Some((4096, true)),
    Some((512, false)),
];

fn sources() -> Vec<SocketAddr> {
    vec![
        "127.0.0.1:5353".parse().unwrap(),
        "192.0.2.7:5353".parse().unwrap(),
    ]
}

/// Every query three times (IDs differ), cache on and off, both transports and views.
fn assert_agree(server: &Server, round: &str) {
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    for src in sources() {
        for t in [Transport::Udp, Transport::Tcp] {
            for &(name, qtype) in NAMES {
                for &edns in EDNS {
                    for rd in [true, false] {
                        for id in [1u16, 0xbeef, 7] {
                            let q = query(id, name, qtype, edns, rd);
                            let fast = outcome(server.handle(&q, src, local, t));
                            let full = outcome(server.handle_uncached(&q, src, local, t));
                            assert_eq!(
                                fast, full,
                                "{round}: {name} {qtype} edns {edns:?} rd {rd} id {id} from {src} over {t:?}"
                            );
                            if let Ok(reply) = &fast {
                                assert_eq!(
                                    reply[..2],
                                    id.to_be_bytes(),
                                    "{round}: the reply carries the query's ID"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cache_upstream_answer(server: &Server, name: &str, age: Duration) {
    let mut msg = Message::query();
    msg.metadata.response_code = ResponseCode::NoError;
    let owner = Name::from_ascii(name).unwrap();
    msg.answers.push(Record::from_rdata(
        owner.clone(),
        300,
        RData::A(A::new(192, 0, 2, 80)),
    ));
    let stored = Instant::now() - age;
    let q = Query::query(owner, RecordType::A);
    server.forwarder.cache.insert(
        CacheKey::new(&q),
        Arc::new(CachedAnswer::new(msg, stored, 300).unwrap()),
    );
}

#[test]
fn cached_and_uncached_paths_agree_byte_for_byte() {
    let server = fixture_server();
    // Aged 2.4 s: the TTL in the reply is 298 for the next 0.6 s, longer than this test.
    cache_upstream_answer(&server, "www.example.test.", Duration::from_millis(2400));
    assert_agree(&server, "first pass");
    let hits = server.metrics.wire_cache_hits.get();
    assert_agree(&server, "second pass (served from the wire cache)");
    // Per pass: 2 sources x 2 transports x 17 names x 4 EDNS x 2 RD x 3 IDs; every plain
    // query that is not forwarded upstream is a hit the second time (the OPT with DO=1
    // is plain too: no options).
    let per_pass = 2 * 2 * 17 * 4 * 2 * 3;
    let forwarded = 2 * 2 * 4 * 2 * 3; // uncached.example.test
    assert_eq!(
        server.metrics.wire_cache_hits.get() - hits,
        (per_pass - forwarded) as u64,
        "the second pass is served from the wire cache"
    );
}

#[test]
fn an_index_change_is_seen_at_once() {
    let server = fixture_server();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let q = query(
        9,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
        true,
    );
    let before = bytes(server.handle(&q, src, local, Transport::Udp)).unwrap();
    assert_eq!(before[3] & 0x0f, 0, "NOERROR before the delete");
    server
        .index
        .write()
        .unwrap()
        .delete_service(&("default".to_string(), "web".to_string()));
    let after = bytes(server.handle(&q, src, local, Transport::Udp)).unwrap();
    assert_eq!(
        after[3] & 0x0f,
        3,
        "NXDOMAIN right after the delete, not the cached answer"
    );
    assert_agree(&server, "after the delete");
}

#[test]
fn a_forwarded_answer_ages_in_whole_seconds() {
    let server = fixture_server();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    // Just under a second boundary: within the test the age moves from 4 to 5.
    cache_upstream_answer(&server, "www.example.test.", Duration::from_millis(4900));
    let q = query(3, "www.example.test.", RecordType::A, None, true);
    let ttl = |b: &[u8]| {
        let m = Message::from_vec(b).unwrap();
        m.answers[0].ttl
    };
    let first = bytes(server.handle(&q, src, local, Transport::Udp)).unwrap();
    assert_eq!(ttl(&first), 296);
    std::thread::sleep(Duration::from_millis(200));
    let hits = server.metrics.wire_cache_hits.get();
    let later = bytes(server.handle(&q, src, local, Transport::Udp)).unwrap();
    assert_eq!(
        ttl(&later),
        295,
        "the wire cache must not serve a TTL older than the entry's age"
    );
    assert_eq!(
        server.metrics.wire_cache_hits.get(),
        hits + 1,
        "served from the wire cache with its TTL counted down, not encoded again"
    );
    let full = bytes(server.handle_uncached(&q, src, local, Transport::Udp)).unwrap();
    assert_eq!(later, full);
}
