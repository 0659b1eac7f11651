//! The codec against real BIRD 2, FRR bgpd and GoBGP in network namespaces, below the session
//! layer: messages we encode are accepted and read back from the daemon's RIB with every
//! attribute, and the daemon's own OPEN and UPDATEs decode cleanly. One test per daemon and
//! negotiated AS width (RFC 6793): on a 2-octet session large ASNs travel as AS_TRANS plus
//! AS4_PATH both ways.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::BytesMut;
use leafbridge_speaker::bgp::codec::{self, CodecContext};
use leafbridge_speaker::bgp::message::{
    AS_TRANS, AddressFamily, AsPath, AsPathSegment, Capability, LargeCommunity, Message, MpReach,
    Notification, Open, Origin, PathAttributes, RawAttribute, Update,
};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer, StaticRoute};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
use leafbridge_tests::raw::RawBgp;
use leafbridge_tests::{Pair, RibRoute, require_root, wait_for};

const PEER_AS: u32 = 4_200_000_001;
const OUR_AS: u32 = 65001;
const FAR_AS: u32 = 4_200_000_099;
const WAIT: Duration = Duration::from_secs(15);

fn encode(msg: &Message, ctx: &CodecContext) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(msg, ctx, &mut out).expect("encodes");
    out.to_vec()
}

/// Reads messages from the peer until `want` UPDATEs have arrived (KEEPALIVEs skipped).
fn bird_updates(conn: &RawBgp, ctx: &CodecContext, want: usize) -> Vec<Update> {
    let mut updates = Vec::new();
    while updates.len() < want {
        let bytes = conn.recv_message(WAIT).expect("a message from the peer");
        let decoded = codec::decode(&bytes, ctx).expect("the peer's message decodes");
        assert!(decoded.rfc7606.is_empty(), "{decoded:?}");
        match decoded.message {
            Message::Update(u) => updates.push(u),
            Message::Keepalive => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    updates
}

/// The daemon under test, in namespace `a` of the pair, passive towards 192.0.2.2 (AS 65001)
/// and announcing 198.51.100.0/24.
enum Daemon {
    Bird(Bird),
    Frr(Frr),
    Gobgp(Gobgp),
}

impl Daemon {
    fn start_bird(p: &Pair) -> Daemon {
        let mut cfg = BirdConfig::new(Ipv4Addr::new(192, 0, 2, 1), PEER_AS);
        cfg.routes.push(StaticRoute::new("198.51.100.0/24"));
        cfg.peers.push(BirdPeer {
            passive: true,
            export_static: true,
            ..BirdPeer::new("codecpeer", Pair::b_v4(), OUR_AS)
        });
        Daemon::Bird(Bird::start(&p.a, "bird", &cfg))
    }

    fn start_frr(p: &Pair) -> Daemon {
        let mut cfg = FrrConfig::new(Ipv4Addr::new(192, 0, 2, 1), PEER_AS);
        // Logs received NOTIFICATIONs, with their shutdown communication.
        cfg.extra = " bgp log-neighbor-changes\n".to_string();
        cfg.networks.push(StaticRoute::new("198.51.100.0/24"));
        cfg.neighbors.push(FrrNeighbor {
            passive: true,
            export: true,
            ..FrrNeighbor::new(Pair::b_v4(), OUR_AS)
        });
        Daemon::Frr(Frr::start(&p.a, "frr", &cfg))
    }

    fn start_gobgp(p: &Pair) -> Daemon {
        let mut cfg = GobgpConfig::new(Ipv4Addr::new(192, 0, 2, 1), PEER_AS);
        cfg.routes
            .push((StaticRoute::new("198.51.100.0/24"), Pair::a_v4()));
        cfg.neighbors.push(GobgpNeighbor {
            passive: true,
            ..GobgpNeighbor::new(Pair::b_v4(), OUR_AS)
        });
        Daemon::Gobgp(Gobgp::start(&p.a, "gobgp", &cfg))
    }

    fn wait_established(&self) {
        match self {
            Daemon::Bird(b) => b.wait_established("codecpeer", WAIT),
            Daemon::Frr(f) => f.wait_established(Pair::b_v4(), WAIT),
            Daemon::Gobgp(g) => g.wait_established(Pair::b_v4(), WAIT),
        }
    }

    /// The routes learnt from us.
    fn routes_from_us(&self) -> Vec<RibRoute> {
        match self {
            Daemon::Bird(b) => b.bgp_routes("codecpeer"),
            Daemon::Frr(f) => f
                .routes()
                .into_iter()
                .filter(|r| r.prefix != "198.51.100.0/24")
                .collect(),
            Daemon::Gobgp(g) => g.adj_rib_in(Pair::b_v4()),
        }
    }

    /// What the daemon shows about the session, where a received shutdown communication
    /// appears.
    fn session_text(&self) -> String {
        match self {
            Daemon::Bird(b) => b.birdc("show protocols all codecpeer"),
            // FRR logs it ("... with message: \"...\"") rather than showing it.
            Daemon::Frr(f) => f.process().stdout(),
            Daemon::Gobgp(g) => format!("{}{}", g.process().stdout(), g.process().stderr()),
        }
    }
}

fn run(daemon: fn(&Pair) -> Daemon, tag: &str, four_octet_as: bool) {
    require_root();
    let p = Pair::new(tag);
    let peer = daemon(&p);
    let conn = RawBgp::connect(&p.b, "192.0.2.1:179".parse().unwrap(), WAIT);
    let ctx = CodecContext {
        four_octet_as,
        extended_message: false,
    };

    // OPEN exchange: the peer's OPEN decodes with its 4-octet ASN behind AS_TRANS.
    let mut capabilities = vec![
        Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
        Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
        Capability::RouteRefresh,
    ];
    if four_octet_as {
        capabilities.push(Capability::FourOctetAs(OUR_AS));
    }
    let open = Open {
        version: 4,
        my_as: OUR_AS as u16,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
        capabilities,
    };
    conn.send(&encode(&Message::Open(open), &ctx));
    let their_open = conn.recv_message(WAIT).expect("the peer's OPEN");
    let Message::Open(their_open) = codec::decode(&their_open, &ctx).unwrap().message else {
        panic!("the peer did not start with an OPEN");
    };
    assert_eq!((their_open.my_as, their_open.asn()), (AS_TRANS, PEER_AS));
    conn.send(&encode(&Message::Keepalive, &ctx));
    peer.wait_established();

    // The peer's UPDATE for its route: the path is its 4-octet ASN whatever the width.
    let updates = bird_updates(&conn, &ctx, 1);
    let path = updates[0].attributes.as_path.clone().expect("AS_PATH");
    assert_eq!(path.segments, vec![AsPathSegment::Sequence(vec![PEER_AS])]);
    assert_eq!(updates[0].nlri, vec!["198.51.100.0/24".parse().unwrap()]);

    // Our UPDATEs: every attribute we model, an unknown transitive one, IPv6 with a link-local
    // next hop, then the End-of-RIB markers.
    let base = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsPathSegment::Sequence(vec![OUR_AS, FAR_AS])],
        }),
        ..PathAttributes::default()
    };
    let v4 = Update {
        nlri: vec![
            "203.0.113.0/25".parse().unwrap(),
            "100.64.1.1/32".parse().unwrap(),
        ],
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            med: Some(77),
            communities: vec![(OUR_AS << 16) | 42],
            large_communities: vec![LargeCommunity {
                global_admin: OUR_AS,
                local_data_1: 7,
                local_data_2: 8,
            }],
            other: vec![RawAttribute {
                flags: 0xc0,
                type_code: 250,
                value: vec![1, 2, 3],
            }],
            ..base.clone()
        },
        ..Update::default()
    };
    let v6 = Update {
        attributes: PathAttributes {
            mp_reach: Some(MpReach {
                family: AddressFamily::IPV6_UNICAST,
                next_hop: "2001:db8::2".parse().unwrap(),
                // FRR 8.4 without zebra has no interface to scope a link-local next hop to: it
                // treats the MP_REACH_NLRI as withdrawn and then misreads its NLRI as IPv4 and
                // resets the session (3/10). BIRD and GoBGP take the 32-octet next hop.
                link_local_next_hop: matches!(peer, Daemon::Bird(_) | Daemon::Gobgp(_))
                    .then(|| "fe80::2".parse().unwrap()),
                nlri: vec!["2001:db8:300::/48".parse().unwrap()],
            }),
            ..base
        },
        ..Update::default()
    };
    for u in [
        v4,
        v6,
        Update::end_of_rib(AddressFamily::IPV4_UNICAST),
        Update::end_of_rib(AddressFamily::IPV6_UNICAST),
    ] {
        conn.send(&encode(&Message::Update(u), &ctx));
    }
    let routes = wait_for(WAIT, "our three routes in the peer's RIB", || {
        let r = peer.routes_from_us();
        if r.len() == 3 { Ok(r) } else { Err(r) }
    });
    let find = |prefix: &str| -> &RibRoute {
        routes
            .iter()
            .find(|r| r.prefix == prefix)
            .unwrap_or_else(|| panic!("{prefix} in {routes:?}"))
    };
    for prefix in ["203.0.113.0/25", "100.64.1.1/32"] {
        let r = find(prefix);
        assert_eq!(r.as_path, vec![OUR_AS, FAR_AS], "{prefix}");
        assert_eq!(r.next_hop, Some("192.0.2.2".parse().unwrap()), "{prefix}");
        assert_eq!(r.med, Some(77), "{prefix}");
        assert_eq!(r.communities, vec![(OUR_AS as u16, 42)], "{prefix}");
        assert_eq!(r.large_communities, vec![(OUR_AS, 7, 8)], "{prefix}");
    }
    let r6 = find("2001:db8:300::/48");
    assert_eq!(r6.as_path, vec![OUR_AS, FAR_AS]);
    assert_eq!(r6.next_hop, Some("2001:db8::2".parse().unwrap()));
    if let Daemon::Bird(bird) = &peer {
        // BIRD shows attributes it does not know as hex ("BGP.fa [t]: 01 02 03").
        let all = bird.birdc("show route all protocol codecpeer");
        assert!(
            all.contains("01 02 03"),
            "unknown transitive attribute passed through: {all}"
        );
    }

    // A withdrawal removes exactly that prefix.
    let withdraw = Update {
        withdrawn: vec!["100.64.1.1/32".parse().unwrap()],
        ..Update::default()
    };
    conn.send(&encode(&Message::Update(withdraw), &ctx));
    wait_for(WAIT, "100.64.1.1/32 withdrawn", || {
        let r = peer.routes_from_us();
        if r.len() == 2 && r.iter().all(|r| r.prefix != "100.64.1.1/32") {
            Ok(())
        } else {
            Err(r)
        }
    });

    // Cease / Administrative Shutdown with an RFC 9003 message: the daemon shows the text.
    let bye = Notification::administrative_shutdown("codec interop done");
    conn.send(&encode(&Message::Notification(bye), &ctx));
    wait_for(WAIT, "the peer to show our shutdown communication", || {
        let text = peer.session_text();
        if text.contains("codec interop done") {
            Ok(())
        } else {
            Err(text)
        }
    });
}

#[test]
fn bird_reads_our_messages_and_we_read_birds_on_a_four_octet_as_session() {
    run(Daemon::start_bird, "codecb4", true);
}

#[test]
fn bird_reads_our_messages_and_we_read_birds_on_a_two_octet_as_session() {
    run(Daemon::start_bird, "codecb2", false);
}

#[test]
fn gobgp_reads_our_messages_and_we_read_gobgps_on_a_four_octet_as_session() {
    run(Daemon::start_gobgp, "codecg4", true);
}

#[test]
fn gobgp_reads_our_messages_and_we_read_gobgps_on_a_two_octet_as_session() {
    run(Daemon::start_gobgp, "codecg2", false);
}

#[test]
fn frr_reads_our_messages_and_we_read_frrs_on_a_four_octet_as_session() {
    run(Daemon::start_frr, "codecf4", true);
}

#[test]
fn frr_reads_our_messages_and_we_read_frrs_on_a_two_octet_as_session() {
    run(Daemon::start_frr, "codecf2", false);
}
