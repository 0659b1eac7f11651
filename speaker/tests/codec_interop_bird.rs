//! The codec against a real BIRD 2 in a network namespace, below the session layer: messages we
//! encode are accepted by BIRD and read back from its RIB with every attribute, and BIRD's own
//! OPEN and UPDATEs decode cleanly. One test per negotiated AS width (RFC 6793): on a 2-octet
//! session large ASNs travel as AS_TRANS plus AS4_PATH in both directions.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::BytesMut;
use leafbridge_speaker::bgp::codec::{self, CodecContext};
use leafbridge_speaker::bgp::message::{
    AS_TRANS, AddressFamily, AsPath, AsPathSegment, Capability, LargeCommunity, Message, MpReach,
    Notification, Open, Origin, PathAttributes, RawAttribute, Update,
};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer, StaticRoute};
use leafbridge_tests::raw::RawBgp;
use leafbridge_tests::{Pair, RibRoute, require_root, wait_for};

const BIRD_AS: u32 = 4_200_000_001;
const OUR_AS: u32 = 65001;
const FAR_AS: u32 = 4_200_000_099;
const WAIT: Duration = Duration::from_secs(15);

fn encode(msg: &Message, ctx: &CodecContext) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(msg, ctx, &mut out).expect("encodes");
    out.to_vec()
}

/// Reads messages from BIRD until `want` UPDATEs have arrived (KEEPALIVEs skipped).
fn bird_updates(conn: &RawBgp, ctx: &CodecContext, want: usize) -> Vec<Update> {
    let mut updates = Vec::new();
    while updates.len() < want {
        let bytes = conn.recv_message(WAIT).expect("a message from BIRD");
        let decoded = codec::decode(&bytes, ctx).expect("BIRD's message decodes");
        assert!(decoded.rfc7606.is_empty(), "{decoded:?}");
        match decoded.message {
            Message::Update(u) => updates.push(u),
            Message::Keepalive => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    updates
}

fn run(four_octet_as: bool) {
    require_root();
    let p = Pair::new(if four_octet_as { "codecb4" } else { "codecb2" });
    let mut cfg = BirdConfig::new(Ipv4Addr::new(192, 0, 2, 1), BIRD_AS);
    cfg.routes.push(StaticRoute::new("198.51.100.0/24"));
    cfg.peers.push(BirdPeer {
        passive: true,
        export_static: true,
        ..BirdPeer::new("codecpeer", Pair::b_v4(), OUR_AS)
    });
    let bird = Bird::start(&p.a, "bird", &cfg);
    let conn = RawBgp::connect(&p.b, "192.0.2.1:179".parse().unwrap(), WAIT);
    let ctx = CodecContext {
        four_octet_as,
        extended_message: false,
    };

    // OPEN exchange: BIRD's OPEN decodes with its 4-octet ASN behind AS_TRANS.
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
    let their_open = conn.recv_message(WAIT).expect("BIRD's OPEN");
    let Message::Open(their_open) = codec::decode(&their_open, &ctx).unwrap().message else {
        panic!("BIRD did not start with an OPEN");
    };
    assert_eq!((their_open.my_as, their_open.asn()), (AS_TRANS, BIRD_AS));
    conn.send(&encode(&Message::Keepalive, &ctx));
    bird.wait_established("codecpeer", WAIT);

    // BIRD's UPDATE for its static route: the path is its 4-octet ASN whatever the width.
    let updates = bird_updates(&conn, &ctx, 1);
    let path = updates[0].attributes.as_path.clone().expect("AS_PATH");
    assert_eq!(path.segments, vec![AsPathSegment::Sequence(vec![BIRD_AS])]);
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
                link_local_next_hop: Some("fe80::2".parse().unwrap()),
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
    let routes = wait_for(WAIT, "our three routes in BIRD's RIB", || {
        let r = bird.bgp_routes("codecpeer");
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
    let all = bird.birdc("show route all protocol codecpeer");
    assert!(
        all.contains("01 02 03"),
        "unknown transitive attribute passed through: {all}"
    );

    // A withdrawal removes exactly that prefix.
    let withdraw = Update {
        withdrawn: vec!["100.64.1.1/32".parse().unwrap()],
        ..Update::default()
    };
    conn.send(&encode(&Message::Update(withdraw), &ctx));
    wait_for(WAIT, "100.64.1.1/32 withdrawn from BIRD", || {
        let r = bird.bgp_routes("codecpeer");
        if r.len() == 2 && r.iter().all(|r| r.prefix != "100.64.1.1/32") {
            Ok(())
        } else {
            Err(r)
        }
    });

    // Cease / Administrative Shutdown with an RFC 9003 message: BIRD shows the text.
    let bye = Notification::administrative_shutdown("codec interop done");
    conn.send(&encode(&Message::Notification(bye), &ctx));
    wait_for(WAIT, "BIRD to show our shutdown communication", || {
        let text = bird.birdc("show protocols all codecpeer");
        if text.contains("codec interop done") {
            Ok(())
        } else {
            Err(text)
        }
    });
}

#[test]
fn bird_reads_our_messages_and_we_read_birds_on_a_four_octet_as_session() {
    run(true);
}

#[test]
fn bird_reads_our_messages_and_we_read_birds_on_a_two_octet_as_session() {
    run(false);
}
