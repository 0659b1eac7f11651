//! Golden vectors for the BGP codec: static (bytes, message) pairs checked in both directions,
//! messages captured from BIRD 2.0.12, GoBGP 3.10 and FRR 8.4, every NOTIFICATION mapping of a
//! malformed message, and the RFC 7606 outcomes of malformed UPDATE attributes.
//!
//! Hand-written vectors carry a field-by-field comment; the BIRD ones were captured from a real
//! `bird` in a network namespace talking to a scripted peer (AS 4200000001, router id 192.0.2.1,
//! static routes 203.0.113.0/24 with communities, 203.0.113.7/32, 2001:db8:100::/48).

use std::net::Ipv4Addr;

use bytes::BytesMut;
use ipnet::IpNet;
use leafbridge_speaker::bgp::codec::{
    self, AttributeError, CodecContext, DecodeError, EncodeError, Rfc7606,
    ShutdownCommunicationError, notif,
};
use leafbridge_speaker::bgp::message::{
    AS_TRANS, AddressFamily, Afi, AsPath, AsPathSegment, Capability, GracefulRestartCap,
    GracefulRestartFamily, LargeCommunity, Message, MpReach, MpUnreach, Notification, Open, Origin,
    PathAttributes, RawAttribute, RouteRefresh, Safi, Update,
};

const FOUR: CodecContext = CodecContext {
    four_octet_as: true,
    extended_message: false,
};
const TWO: CodecContext = CodecContext {
    four_octet_as: false,
    extended_message: false,
};
const EXT: CodecContext = CodecContext {
    four_octet_as: true,
    extended_message: true,
};

/// Hex to bytes; whitespace and `|` separate fields for readability.
fn h(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| b.is_ascii_hexdigit())
        .map(|b| (b as char).to_digit(16).unwrap() as u8)
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {s:?}"
    );
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn p(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn enc(msg: &Message, ctx: &CodecContext) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(msg, ctx, &mut out).unwrap();
    out.to_vec()
}

fn dec(bytes: &[u8], ctx: &CodecContext) -> Message {
    assert_eq!(
        codec::frame_len(bytes, ctx),
        Ok(Some(bytes.len())),
        "frame_len"
    );
    let d = codec::decode(bytes, ctx).unwrap();
    assert_eq!(
        d.rfc7606,
        vec![],
        "a golden vector decodes without RFC 7606 outcomes"
    );
    d.message
}

fn dec_err(bytes: &[u8], ctx: &CodecContext) -> Notification {
    match codec::decode(bytes, ctx) {
        Err(DecodeError { notification }) => notification,
        Ok(d) => panic!("expected a decode error, got {d:?}"),
    }
}

fn seq(asns: &[u32]) -> AsPathSegment {
    AsPathSegment::Sequence(asns.to_vec())
}

fn bird_open() -> Message {
    Message::Open(Open {
        version: 4,
        my_as: AS_TRANS,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::ExtendedMessage,
            Capability::GracefulRestart(GracefulRestartCap {
                restart_state: false,
                notification: false,
                restart_time: 120,
                families: vec![
                    GracefulRestartFamily {
                        family: AddressFamily::IPV4_UNICAST,
                        forwarding_preserved: false,
                    },
                    GracefulRestartFamily {
                        family: AddressFamily::IPV6_UNICAST,
                        forwarding_preserved: false,
                    },
                ],
            }),
            Capability::FourOctetAs(4_200_000_001),
            // Enhanced Route Refresh (RFC 7313) and Long-Lived Graceful Restart: kept as unknown.
            Capability::Unknown {
                code: 70,
                value: vec![],
            },
            Capability::Unknown {
                code: 71,
                value: vec![],
            },
        ],
    })
}

fn bird_attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![seq(&[4_200_000_001])],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..PathAttributes::default()
    }
}

/// (name, context, wire bytes, message): each must encode to exactly these bytes and decode back.
fn golden_pairs() -> Vec<(&'static str, CodecContext, Vec<u8>, Message)> {
    vec![
        (
            "keepalive",
            FOUR,
            h("ffffffffffffffffffffffffffffffff 0013 04"),
            Message::Keepalive,
        ),
        (
            "bird_open_with_capabilities",
            FOUR,
            // Captured. Version 4, My AS AS_TRANS, hold 90, id 192.0.2.1, one Capabilities
            // parameter (len 0x26): MP v4, MP v6, route refresh, extended message, GR (120 s,
            // v4+v6 without F), 4-octet AS 4200000001, codes 70 and 71.
            h(
                "ffffffffffffffffffffffffffffffff 0045 01 | 04 5ba0 005a c0000201 28 | 02 26 |
               01 04 0001 00 01 | 01 04 0002 00 01 | 02 00 | 06 00 |
               40 0a 0078 0001 01 00 0002 01 00 | 41 04 fa56ea01 | 46 00 | 47 00",
            ),
            bird_open(),
        ),
        (
            "gobgp_open_with_capabilities",
            FOUR,
            // Captured from GoBGP 3.10 (AS 65010, id 192.0.2.1): one Capabilities parameter
            // (len 0x26): route refresh, FQDN (code 73, host "vm", no domain), MP v4, MP v6,
            // 4-octet AS 65010, GR 120 s without families, extended next hop (code 5).
            h(
                "ffffffffffffffffffffffffffffffff 0045 01 | 04 fdf2 005a c0000201 28 | 02 26 |
               02 00 | 49 04 02 766d 00 | 01 04 0001 00 01 | 01 04 0002 00 01 |
               41 04 0000fdf2 | 40 02 0078 | 05 06 0001 0001 0002",
            ),
            Message::Open(Open {
                version: 4,
                my_as: 65010,
                hold_time: 90,
                bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
                capabilities: vec![
                    Capability::RouteRefresh,
                    Capability::Unknown {
                        code: 73,
                        value: h("02 766d 00"),
                    },
                    Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
                    Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
                    Capability::FourOctetAs(65010),
                    Capability::GracefulRestart(GracefulRestartCap {
                        restart_state: false,
                        notification: false,
                        restart_time: 120,
                        families: vec![],
                    }),
                    Capability::Unknown {
                        code: 5,
                        value: h("0001 0001 0002"),
                    },
                ],
            }),
        ),
        (
            "open_without_optional_parameters",
            FOUR,
            // Version 4, AS 65001, hold 0 (no keepalives), id 192.0.2.2, opt len 0.
            h("ffffffffffffffffffffffffffffffff 001d 01 | 04 fde9 0000 c0000202 00"),
            Message::Open(Open {
                version: 4,
                my_as: 65001,
                hold_time: 0,
                bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
                capabilities: vec![],
            }),
        ),
        (
            "open_with_graceful_restart_bits_and_unknown_capability",
            FOUR,
            // Opt len 0x24, Capabilities param len 0x22: MP v4, MP v6, RR, ext msg,
            // GR (R and N set, 120 s, v4 with F), 4-octet AS 65001, code 0x80 value 0102.
            h(
                "ffffffffffffffffffffffffffffffff 0041 01 | 04 fde9 005a c0000202 24 | 02 22 |
               01 04 0001 00 01 | 01 04 0002 00 01 | 02 00 | 06 00 |
               40 06 c078 0001 01 80 | 41 04 0000fde9 | 80 02 0102",
            ),
            Message::Open(Open {
                version: 4,
                my_as: 65001,
                hold_time: 90,
                bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
                capabilities: vec![
                    Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
                    Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
                    Capability::RouteRefresh,
                    Capability::ExtendedMessage,
                    Capability::GracefulRestart(GracefulRestartCap {
                        restart_state: true,
                        notification: true,
                        restart_time: 120,
                        families: vec![GracefulRestartFamily {
                            family: AddressFamily::IPV4_UNICAST,
                            forwarding_preserved: true,
                        }],
                    }),
                    Capability::FourOctetAs(65001),
                    Capability::Unknown {
                        code: 0x80,
                        value: vec![1, 2],
                    },
                ],
            }),
        ),
        (
            "bird_update_ipv4_host_route",
            FOUR,
            // Captured. No withdrawn, attrs len 0x14: ORIGIN IGP, AS_PATH SEQ [4200000001],
            // NEXT_HOP 192.0.2.1; NLRI 203.0.113.7/32.
            h(
                "ffffffffffffffffffffffffffffffff 0030 02 | 0000 | 0014 | 40 01 01 00 |
               40 02 06 02 01 fa56ea01 | 40 03 04 c0000201 | 20 cb007107",
            ),
            Message::Update(Update {
                nlri: vec![p("203.0.113.7/32")],
                attributes: bird_attrs(),
                ..Update::default()
            }),
        ),
        (
            "bird_update_with_communities_and_large_communities",
            FOUR,
            // Captured. attrs len 0x2a: ORIGIN, AS_PATH, NEXT_HOP, COMMUNITIES 65000:100,
            // LARGE_COMMUNITY 65000:1:2; NLRI 203.0.113.0/24.
            h(
                "ffffffffffffffffffffffffffffffff 0045 02 | 0000 | 002a | 40 01 01 00 |
               40 02 06 02 01 fa56ea01 | 40 03 04 c0000201 | c0 08 04 fde80064 |
               c0 20 0c 0000fde8 00000001 00000002 | 18 cb0071",
            ),
            Message::Update(Update {
                nlri: vec![p("203.0.113.0/24")],
                attributes: PathAttributes {
                    communities: vec![65000 << 16 | 100],
                    large_communities: vec![LargeCommunity {
                        global_admin: 65000,
                        local_data_1: 1,
                        local_data_2: 2,
                    }],
                    ..bird_attrs()
                },
                ..Update::default()
            }),
        ),
        (
            "bird_end_of_rib_ipv4",
            FOUR,
            // Captured: the empty UPDATE.
            h("ffffffffffffffffffffffffffffffff 0017 02 | 0000 | 0000"),
            Message::Update(Update::end_of_rib(AddressFamily::IPV4_UNICAST)),
        ),
        (
            "bird_end_of_rib_ipv6",
            FOUR,
            // Captured: only an empty MP_UNREACH_NLRI for AFI 2 / SAFI 1.
            h("ffffffffffffffffffffffffffffffff 001d 02 | 0000 | 0006 | 80 0f 03 0002 01"),
            Message::Update(Update::end_of_rib(AddressFamily::IPV6_UNICAST)),
        ),
        (
            "update_with_every_attribute",
            FOUR,
            // Withdrawn len 6: 198.51.100.0/24, 10.0.0.0/8. Attrs len 0x81:
            //  MP_REACH (len 0x2e) AFI 2 SAFI 1, next hop len 32 = 2001:db8::1 + fe80::1,
            //    reserved, NLRI 2001:db8:1::/64;
            //  ORIGIN INCOMPLETE; AS_PATH SEQ [65000 4200000001] SET [100 200];
            //  NEXT_HOP 192.0.2.1; MED 50; LOCAL_PREF 100;
            //  COMMUNITIES 65000:100 NO_EXPORT; LARGE 65000:1:2;
            //  unknown optional transitive partial type 99 value 010203.
            // NLRI 203.0.113.7/32, 203.0.112.0/23.
            h(
                "ffffffffffffffffffffffffffffffff 00a7 02 | 0006 18 c63364 08 0a | 0081 |
               80 0e 2e 0002 01 20 20010db8000000000000000000000001
                                  fe800000000000000000000000000001 00 40 20010db800010000 |
               40 01 01 02 | 40 02 14 02 02 0000fde8 fa56ea01 01 02 00000064 000000c8 |
               40 03 04 c0000201 | 80 04 04 00000032 | 40 05 04 00000064 |
               c0 08 08 fde80064 ffffff01 | c0 20 0c 0000fde8 00000001 00000002 |
               e0 63 03 010203 | 20 cb007107 17 cb0070",
            ),
            Message::Update(Update {
                withdrawn: vec![p("198.51.100.0/24"), p("10.0.0.0/8")],
                attributes: PathAttributes {
                    origin: Some(Origin::Incomplete),
                    as_path: Some(AsPath {
                        segments: vec![
                            seq(&[65000, 4_200_000_001]),
                            AsPathSegment::Set(vec![100, 200]),
                        ],
                    }),
                    next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    med: Some(50),
                    local_pref: Some(100),
                    communities: vec![65000 << 16 | 100, 0xffff_ff01],
                    large_communities: vec![LargeCommunity {
                        global_admin: 65000,
                        local_data_1: 1,
                        local_data_2: 2,
                    }],
                    mp_reach: Some(MpReach {
                        family: AddressFamily::IPV6_UNICAST,
                        next_hop: "2001:db8::1".parse().unwrap(),
                        link_local_next_hop: Some("fe80::1".parse().unwrap()),
                        nlri: vec![p("2001:db8:1::/64")],
                    }),
                    mp_unreach: None,
                    other: vec![RawAttribute {
                        flags: 0xe0,
                        type_code: 99,
                        value: vec![1, 2, 3],
                    }],
                },
                nlri: vec![p("203.0.113.7/32"), p("203.0.112.0/23")],
            }),
        ),
        (
            "update_two_octet_session_carries_as4_path",
            TWO,
            // RFC 6793 §4.2.2: AS_PATH SEQ [65000 AS_TRANS], AS4_PATH SEQ [65000 4200000001].
            h(
                "ffffffffffffffffffffffffffffffff 003d 02 | 0000 | 0021 | 40 01 01 00 |
               40 02 06 02 02 fde8 5ba0 | c0 11 0a 02 02 0000fde8 fa56ea01 |
               40 03 04 c0000201 | 20 cb007107",
            ),
            Message::Update(Update {
                nlri: vec![p("203.0.113.7/32")],
                attributes: PathAttributes {
                    as_path: Some(AsPath {
                        segments: vec![seq(&[65000, 4_200_000_001])],
                    }),
                    ..bird_attrs()
                },
                ..Update::default()
            }),
        ),
        (
            "update_ipv6_withdrawal",
            FOUR,
            // MP_UNREACH AFI 2 SAFI 1: 2001:db8:100::/48 and ::/0.
            h("ffffffffffffffffffffffffffffffff 0025 02 | 0000 | 000e |
               80 0f 0b 0002 01 30 20010db80100 00"),
            Message::Update(Update {
                attributes: PathAttributes {
                    mp_unreach: Some(MpUnreach {
                        family: AddressFamily::IPV6_UNICAST,
                        withdrawn: vec![p("2001:db8:100::/48"), p("::/0")],
                    }),
                    ..PathAttributes::default()
                },
                ..Update::default()
            }),
        ),
        (
            "notification_cease_administrative_shutdown_with_message",
            FOUR,
            // Cease / Administrative Shutdown, RFC 9003 length 11 then "bye for now".
            h("ffffffffffffffffffffffffffffffff 0021 03 | 06 02 | 0b 62796520666f72206e6f77"),
            Message::Notification(Notification::administrative_shutdown("bye for now")),
        ),
        (
            "notification_hold_timer_expired",
            FOUR,
            h("ffffffffffffffffffffffffffffffff 0015 03 | 04 00"),
            Message::Notification(Notification::hold_timer_expired()),
        ),
        (
            "route_refresh_ipv6_unicast",
            FOUR,
            h("ffffffffffffffffffffffffffffffff 0017 05 | 0002 00 01"),
            Message::RouteRefresh(RouteRefresh {
                family: AddressFamily::IPV6_UNICAST,
            }),
        ),
    ]
}

#[test]
fn golden_messages_encode_to_their_bytes() {
    for (name, ctx, bytes, msg) in golden_pairs() {
        assert_eq!(enc(&msg, &ctx), bytes, "{name}");
    }
}

#[test]
fn golden_bytes_decode_to_their_messages() {
    for (name, ctx, bytes, msg) in golden_pairs() {
        assert_eq!(dec(&bytes, &ctx), msg, "{name}");
    }
}

#[test]
fn golden_update_lengths_match_update_len() {
    for (name, ctx, bytes, msg) in golden_pairs() {
        if let Message::Update(u) = msg {
            assert_eq!(codec::update_len(&u, &ctx), bytes.len(), "{name}");
        }
    }
}

#[test]
fn bird_ipv6_update_with_extended_length_mp_reach_decodes() {
    // Captured: BIRD sets the Extended Length bit on MP_REACH_NLRI even for a short value.
    let bytes = h("ffffffffffffffffffffffffffffffff 0044 02 | 0000 | 002d |
                   90 0e 001c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80100 |
                   40 01 01 00 | 40 02 06 02 01 fa56ea01");
    let expected = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: vec![seq(&[4_200_000_001])],
            }),
            mp_reach: Some(MpReach {
                family: AddressFamily::IPV6_UNICAST,
                next_hop: "2001:db8::1".parse().unwrap(),
                link_local_next_hop: None,
                nlri: vec![p("2001:db8:100::/48")],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let msg = dec(&bytes, &FOUR);
    assert_eq!(msg, Message::Update(expected));
    // Re-encoded without the needless Extended Length bit: one octet shorter, same message.
    let again = enc(&msg, &FOUR);
    assert_eq!(again.len(), bytes.len() - 1);
    assert_eq!(dec(&again, &FOUR), msg);
}

/// Captured from FRR 8.4 bgpd (AS 65020, id 192.0.2.1). FRR sends one capability per optional
/// parameter and sets Extended Length on short AS_PATH and MP_REACH_NLRI, so these vectors are
/// checked in the decode direction, then for a stable re-encoding.
#[test]
fn frr_messages_decode() {
    let open = h(
        "ffffffffffffffffffffffffffffffff 0074 01 | 04 fdfc 00b4 c0000201 57 |
                  02 06 01 04 0001 00 01 | 02 06 01 04 0002 00 01 | 02 02 80 00 | 02 02 02 00 |
                  02 02 46 00 | 02 06 41 04 0000fdfc | 02 02 06 00 |
                  02 0a 45 08 0001 01 01 0002 01 01 | 02 09 49 07 05 6c62636170 00 |
                  02 04 40 02 c078 | 02 10 47 0e 0001 01 80 000000 0002 01 80 000000",
    );
    let expected_open = Message::Open(Open {
        version: 4,
        my_as: 65020,
        hold_time: 180,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
            // Cisco's pre-standard route refresh.
            Capability::Unknown {
                code: 128,
                value: vec![],
            },
            Capability::RouteRefresh,
            Capability::Unknown {
                code: 70,
                value: vec![],
            },
            Capability::FourOctetAs(65020),
            Capability::ExtendedMessage,
            // ADD-PATH (RFC 7911), FQDN, Long-Lived Graceful Restart.
            Capability::Unknown {
                code: 69,
                value: h("0001 01 01 0002 01 01"),
            },
            Capability::Unknown {
                code: 73,
                value: h("05 6c62636170 00"),
            },
            Capability::GracefulRestart(GracefulRestartCap {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![],
            }),
            Capability::Unknown {
                code: 71,
                value: h("0001 01 80 000000 0002 01 80 000000"),
            },
        ],
    });
    let frr_path = || {
        Some(AsPath {
            segments: vec![seq(&[65020])],
        })
    };
    let update_v4 = h(
        "ffffffffffffffffffffffffffffffff 0037 02 | 0000 | 001c | 40 01 01 00 |
                       50 02 0006 02 01 0000fdfc | 40 03 04 c0000201 | 80 04 04 00000000 |
                       18 cb0071",
    );
    let expected_v4 = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: frr_path(),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            med: Some(0),
            ..PathAttributes::default()
        },
        nlri: vec![p("203.0.113.0/24")],
        ..Update::default()
    });
    // IPv6 over an IPv4 session: the next hop is the IPv4-mapped session address.
    let update_v6 = h("ffffffffffffffffffffffffffffffff 004c 02 | 0000 | 0035 |
                       90 0e 001c 0002 01 10 00000000000000000000ffffc0000201 00
                                                30 20010db80200 |
                       40 01 01 00 | 50 02 0006 02 01 0000fdfc | 80 04 04 00000000");
    let expected_v6 = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: frr_path(),
            med: Some(0),
            mp_reach: Some(MpReach {
                family: AddressFamily::IPV6_UNICAST,
                next_hop: "::ffff:192.0.2.1".parse().unwrap(),
                link_local_next_hop: None,
                nlri: vec![p("2001:db8:200::/48")],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    });
    for (bytes, expected) in [
        (open, expected_open),
        (update_v4, expected_v4),
        (update_v6, expected_v6),
    ] {
        let msg = dec(&bytes, &FOUR);
        assert_eq!(msg, expected);
        assert_eq!(dec(&enc(&msg, &FOUR), &FOUR), msg);
    }
}

#[test]
fn bird_notification_reply_parses_shutdown_communication() {
    let n = Notification::new(
        notif::CEASE,
        notif::ADMINISTRATIVE_SHUTDOWN,
        h("0b 62796520666f72206e6f77"),
    );
    assert_eq!(n.shutdown_communication(), Ok(Some("bye for now")));
}

#[test]
fn extended_length_attribute_is_used_above_255_octets() {
    let u = Update {
        attributes: PathAttributes {
            communities: (0..70).collect(),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let bytes = enc(&Message::Update(u.clone()), &FOUR);
    // Attribute header after 19 + 2 + 2 octets: flags 0xd0 (optional transitive, extended
    // length), type 8, length 0x0118 = 280.
    assert_eq!(bytes[23..27], h("d0 08 0118")[..]);
    assert_eq!(dec(&bytes, &FOUR), Message::Update(u));
}

#[test]
fn unknown_attribute_keeps_extended_length_flag_as_received() {
    let bytes = h("ffffffffffffffffffffffffffffffff 001c 02 | 0000 | 0005 | d0 63 0001 aa");
    let msg = dec(&bytes, &FOUR);
    assert_eq!(enc(&msg, &FOUR), bytes);
}

#[test]
fn open_with_rfc9072_extended_optional_parameters_round_trips() {
    // 100 unknown capabilities of 3 octets: 300 octets, more than one-octet lengths allow.
    let caps: Vec<Capability> = (0..100)
        .map(|i| Capability::Unknown {
            code: 200,
            value: vec![i as u8],
        })
        .collect();
    let open = Message::Open(Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
        capabilities: caps,
    });
    let bytes = enc(&open, &FOUR);
    // Non-Ext OP Len 255, Non-Ext OP Type 255, Extended Opt. Parm. Length 303, then the
    // Capabilities parameter with a 2-octet length of 300 (RFC 9072 §2).
    assert_eq!(bytes[28..35], h("ff ff 012f 02 012c")[..]);
    assert_eq!(dec(&bytes, &FOUR), open);
}

#[test]
fn open_capabilities_spread_over_several_parameters_are_all_read() {
    // Two Capabilities parameters (as FRR and older Cisco send): 4-octet AS, then route refresh.
    let bytes = h(
        "ffffffffffffffffffffffffffffffff 0029 01 | 04 fde9 005a c0000202 0c |
                   02 06 41 04 0000fde9 | 02 02 02 00",
    );
    let Message::Open(open) = dec(&bytes, &FOUR) else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::FourOctetAs(65001), Capability::RouteRefresh]
    );
    assert_eq!(open.asn(), 65001);
}

// ---------------------------------------------------------------------------------------------
// Framing (RFC 4271 §6.1)

#[test]
fn frame_len_waits_for_a_complete_message() {
    let (_, ctx, bytes, _) = golden_pairs()
        .into_iter()
        .find(|(n, ..)| *n == "update_with_every_attribute")
        .unwrap();
    for cut in 0..bytes.len() {
        assert_eq!(
            codec::frame_len(&bytes[..cut], &ctx),
            Ok(None),
            "cut at {cut}"
        );
    }
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    assert_eq!(codec::frame_len(&two, &ctx), Ok(Some(bytes.len())));
}

#[test]
fn frame_len_rejects_a_bad_marker_before_the_header_is_complete() {
    let n = codec::frame_len(&h("ffff00"), &FOUR)
        .unwrap_err()
        .notification;
    assert_eq!((n.code, n.subcode), (1, 1));
}

#[test]
fn frame_len_rejects_bad_lengths_with_the_length_field_as_data() {
    for (len, ctx) in [(0u16, FOUR), (18, FOUR), (4097, FOUR), (65535, FOUR)] {
        let mut b = vec![0xff; 16];
        b.extend_from_slice(&len.to_be_bytes());
        let n = codec::frame_len(&b, &ctx).unwrap_err().notification;
        assert_eq!(
            n,
            Notification::new(1, 2, len.to_be_bytes()),
            "length {len}"
        );
    }
    // With extended messages 4097..=65535 frame.
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&65535u16.to_be_bytes());
    assert_eq!(codec::frame_len(&b, &EXT), Ok(None));
}

// ---------------------------------------------------------------------------------------------
// Every NOTIFICATION mapping of a malformed message.

/// (name, context, bytes, expected NOTIFICATION code, subcode, data)
type MalformedCase = (&'static str, CodecContext, Vec<u8>, u8, u8, Vec<u8>);

fn malformed_messages() -> Vec<MalformedCase> {
    let m = "ffffffffffffffffffffffffffffffff";
    let x = |s: &str| h(&format!("{m} {s}"));
    let route_refresh_subtype_1 = x("0018 05 0001 01 01 00");
    vec![
        (
            "bad marker",
            FOUR,
            h("ffffffffffffffffffffffffffff0000 0013 04"),
            1,
            1,
            vec![],
        ),
        ("length below header", FOUR, x("0012 04"), 1, 2, h("0012")),
        ("length above 4096", FOUR, x("1001 02"), 1, 2, h("1001")),
        ("unknown type", FOUR, x("0013 09"), 1, 3, h("09")),
        (
            "keepalive with a body",
            FOUR,
            x("0014 04 00"),
            1,
            2,
            h("0014"),
        ),
        (
            "open shorter than 29",
            FOUR,
            x("001c 01 04 fde9 005a c0000202"),
            1,
            2,
            h("001c"),
        ),
        (
            "notification shorter than 21",
            FOUR,
            x("0014 03 06"),
            1,
            2,
            h("0014"),
        ),
        (
            "update shorter than 23",
            FOUR,
            x("0016 02 0000 00"),
            1,
            2,
            h("0016"),
        ),
        (
            "route refresh of wrong length",
            FOUR,
            x("0018 05 0001 00 01 00"),
            1,
            2,
            h("0018"),
        ),
        (
            "enhanced route refresh of wrong length (RFC 7313 §5)",
            FOUR,
            route_refresh_subtype_1.clone(),
            7,
            1,
            route_refresh_subtype_1,
        ),
        (
            "open larger than 4096 with extended messages (RFC 8654 §4)",
            EXT,
            {
                let mut b = x("1001 01 04 fde9 005a c0000202 00");
                b.resize(4097, 0);
                b
            },
            1,
            2,
            h("1001"),
        ),
        (
            "open version 3",
            FOUR,
            x("001d 01 03 fde9 005a c0000202 00"),
            2,
            1,
            h("0004"),
        ),
        (
            "open peer AS 0 (RFC 7607)",
            FOUR,
            x("001d 01 04 0000 005a c0000202 00"),
            2,
            2,
            vec![],
        ),
        (
            "open 4-octet AS capability 0 (RFC 7607)",
            FOUR,
            x("0025 01 04 5ba0 005a c0000202 08 02 06 41 04 00000000"),
            2,
            2,
            vec![],
        ),
        (
            "open BGP identifier 0",
            FOUR,
            x("001d 01 04 fde9 005a 00000000 00"),
            2,
            3,
            vec![],
        ),
        (
            "open authentication parameter",
            FOUR,
            x("0020 01 04 fde9 005a c0000202 03 01 01 00"),
            2,
            4,
            vec![],
        ),
        (
            "open hold time 1",
            FOUR,
            x("001d 01 04 fde9 0001 c0000202 00"),
            2,
            6,
            vec![],
        ),
        (
            "open hold time 2",
            FOUR,
            x("001d 01 04 fde9 0002 c0000202 00"),
            2,
            6,
            vec![],
        ),
        (
            "open capability overruns its parameter",
            FOUR,
            x("0021 01 04 fde9 005a c0000202 04 02 02 41 04"),
            2,
            0,
            vec![],
        ),
        (
            "open multiprotocol capability of wrong length",
            FOUR,
            x("0022 01 04 fde9 005a c0000202 05 02 03 01 01 00"),
            2,
            0,
            vec![],
        ),
        (
            "open optional parameters length disagrees with the message",
            FOUR,
            x("001f 01 04 fde9 005a c0000202 05 02 00"),
            1,
            2,
            h("001f"),
        ),
        (
            "update withdrawn length overruns",
            FOUR,
            x("0019 02 0006 0800 0000"),
            3,
            1,
            vec![],
        ),
        (
            "update attribute length overruns",
            FOUR,
            x("0019 02 0000 0009 00 00"),
            3,
            1,
            vec![],
        ),
        (
            "update NLRI prefix length 33",
            FOUR,
            x("001c 02 0000 0000 21 0a000000"),
            3,
            10,
            vec![],
        ),
        (
            "update NLRI prefix truncated",
            FOUR,
            x("0019 02 0000 0000 18 0a"),
            3,
            10,
            vec![],
        ),
        (
            "update withdrawn prefix truncated",
            FOUR,
            x("0019 02 0002 18 0a 0000"),
            3,
            10,
            vec![],
        ),
        (
            "update unrecognized well-known attribute",
            FOUR,
            x("001b 02 0000 0004 40 63 01 00"),
            3,
            2,
            h("40 63 01 00"),
        ),
        (
            "update MP_REACH_NLRI twice (RFC 7606 §3 g)",
            FOUR,
            x("002f 02 0000 0018 80 0e 09 0001 01 04 c0000201 00 80 0e 09 0001 01 04 c0000201 00"),
            3,
            1,
            vec![],
        ),
        (
            "update MP_UNREACH_NLRI with wrong flags",
            FOUR,
            x("001d 02 0000 0006 40 0f 03 0002 01"),
            3,
            4,
            h("40 0f 03 0002 01"),
        ),
        (
            "update MP_REACH_NLRI next hop overruns the attribute",
            FOUR,
            x("0020 02 0000 0009 80 0e 06 0002 01 10 2001"),
            3,
            9,
            h("80 0e 06 0002 01 10 2001"),
        ),
        (
            "update MP_REACH_NLRI prefix length 129",
            FOUR,
            x("0030 02 0000 0019 80 0e 16 0002 01 10 20010db8000000000000000000000001 00 81"),
            3,
            10,
            vec![],
        ),
        (
            "update MP_UNREACH_NLRI overrunning the attribute list",
            FOUR,
            x("001d 02 0000 0006 80 0f 09 0002 01"),
            3,
            5,
            h("80 0f 09 0002 01"),
        ),
    ]
}

#[test]
fn every_malformed_message_maps_to_its_notification() {
    for (name, ctx, bytes, code, subcode, data) in malformed_messages() {
        let n = dec_err(&bytes, &ctx);
        assert_eq!(
            n,
            Notification {
                code,
                subcode,
                data
            },
            "{name}"
        );
    }
}

#[test]
fn hold_time_zero_and_three_are_acceptable() {
    for hold in ["0000", "0003"] {
        let bytes = h(&format!(
            "ffffffffffffffffffffffffffffffff 001d 01 04 fde9 {hold} c0000202 00"
        ));
        assert!(
            matches!(dec(&bytes, &FOUR), Message::Open(_)),
            "hold {hold}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 7606 outcomes: treat-as-withdraw and attribute discard.

const ORIGIN: &str = "40 01 01 00";
const AS_PATH: &str = "40 02 06 02 01 0000fde8";
const NEXT_HOP: &str = "40 03 04 c0000201";

/// An UPDATE with the given attributes and NLRI 203.0.113.7/32.
fn update_bytes(attrs: &str) -> Vec<u8> {
    let attrs = h(attrs);
    let nlri = h("20 cb007107");
    let len = 19 + 2 + 2 + attrs.len() + nlri.len();
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&(len as u16).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.extend_from_slice(&nlri);
    b
}

fn outcomes(attrs: &str, ctx: &CodecContext) -> (Vec<Rfc7606>, Update) {
    let d = codec::decode(&update_bytes(attrs), ctx).unwrap();
    let Message::Update(u) = d.message else {
        panic!("not an UPDATE")
    };
    (d.rfc7606, u)
}

fn withdraw(attribute: u8, reason: AttributeError) -> Vec<Rfc7606> {
    vec![Rfc7606::Withdraw { attribute, reason }]
}

fn discard(attribute: u8, reason: AttributeError) -> Vec<Rfc7606> {
    vec![Rfc7606::Discard { attribute, reason }]
}

#[test]
fn malformed_attributes_follow_rfc7606() {
    use AttributeError::*;
    let cases: Vec<(&str, String, Vec<Rfc7606>)> = vec![
        ("clean", format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"), vec![]),
        (
            "ORIGIN value 3",
            format!("40 01 01 03 {AS_PATH} {NEXT_HOP}"),
            withdraw(1, InvalidOrigin(3)),
        ),
        (
            "ORIGIN length 2",
            format!("40 01 02 00 00 {AS_PATH} {NEXT_HOP}"),
            withdraw(1, BadLength(2)),
        ),
        (
            "ORIGIN marked optional",
            format!("c0 01 01 00 {AS_PATH} {NEXT_HOP}"),
            withdraw(1, FlagsConflict),
        ),
        (
            "AS_PATH empty segment",
            format!("{ORIGIN} 40 02 02 02 00 {NEXT_HOP}"),
            withdraw(2, MalformedAsPath),
        ),
        (
            "AS_PATH unknown segment type",
            format!("{ORIGIN} 40 02 06 05 01 0000fde8 {NEXT_HOP}"),
            withdraw(2, MalformedAsPath),
        ),
        (
            "AS_PATH segment overrun",
            format!("{ORIGIN} 40 02 06 02 02 0000fde8 {NEXT_HOP}"),
            withdraw(2, MalformedAsPath),
        ),
        (
            "AS_PATH confederation segment",
            format!("{ORIGIN} 40 02 06 03 01 0000fde8 {NEXT_HOP}"),
            withdraw(2, ConfederationSegment),
        ),
        (
            "NEXT_HOP length 5",
            format!("{ORIGIN} {AS_PATH} 40 03 05 c000020100"),
            withdraw(3, BadLength(5)),
        ),
        (
            "NEXT_HOP 0.0.0.0",
            format!("{ORIGIN} {AS_PATH} 40 03 04 00000000"),
            withdraw(3, InvalidNextHop),
        ),
        (
            "NEXT_HOP multicast",
            format!("{ORIGIN} {AS_PATH} 40 03 04 e0000001"),
            withdraw(3, InvalidNextHop),
        ),
        (
            "MED length 3",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 80 04 03 000000"),
            withdraw(4, BadLength(3)),
        ),
        (
            "LOCAL_PREF marked optional",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 80 05 04 00000064"),
            withdraw(5, FlagsConflict),
        ),
        (
            "COMMUNITIES length 5",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 05 0000000000"),
            withdraw(8, BadLength(5)),
        ),
        (
            "LARGE_COMMUNITY length 13",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 20 0d 00000000000000000000000000"),
            withdraw(32, BadLength(13)),
        ),
        (
            "ATOMIC_AGGREGATE length 1",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 40 06 01 00"),
            discard(6, BadLength(1)),
        ),
        (
            "AGGREGATOR length 7 on a 4-octet session",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 07 07 00000000000000"),
            discard(7, BadLength(7)),
        ),
        (
            "AS4_PATH on a 4-octet session (RFC 6793 §3)",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 11 06 02 01 0000fde8"),
            discard(17, UnexpectedAs4Attribute),
        ),
        (
            "missing ORIGIN",
            format!("{AS_PATH} {NEXT_HOP}"),
            withdraw(1, Missing),
        ),
        (
            "missing AS_PATH",
            format!("{ORIGIN} {NEXT_HOP}"),
            withdraw(2, Missing),
        ),
        (
            "missing NEXT_HOP",
            format!("{ORIGIN} {AS_PATH}"),
            withdraw(3, Missing),
        ),
        (
            "duplicate ORIGIN",
            format!("{ORIGIN} 40 01 01 02 {AS_PATH} {NEXT_HOP}"),
            discard(1, Duplicate),
        ),
        (
            "attribute length overruns the attribute list (RFC 7606 §4)",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 08 00000001"),
            withdraw(8, Overrun),
        ),
        (
            "attribute header cut short",
            format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08"),
            withdraw(0, Overrun),
        ),
        (
            "MP_REACH_NLRI next hop length 5",
            format!("80 0e 0a 0001 01 05 c000020100 00 {ORIGIN} {AS_PATH} {NEXT_HOP}"),
            withdraw(14, BadLength(5)),
        ),
        (
            "MP_REACH_NLRI of an unsupported family",
            format!("80 0e 09 0019 46 04 c0000201 00 {ORIGIN} {AS_PATH} {NEXT_HOP}"),
            discard(14, UnsupportedFamily),
        ),
    ];
    for (name, attrs, expected) in cases {
        let (got, _) = outcomes(&attrs, &FOUR);
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn rfc7606_outcomes_read_well_in_logs() {
    let (got, _) = outcomes(&format!("40 01 01 03 {AS_PATH} {NEXT_HOP}"), &FOUR);
    assert_eq!(
        got[0].to_string(),
        "treat-as-withdraw (attribute type 1: undefined ORIGIN value 3)"
    );
}

#[test]
fn discarded_duplicate_keeps_the_first_occurrence() {
    let (_, u) = outcomes(&format!("{ORIGIN} 40 01 01 02 {AS_PATH} {NEXT_HOP}"), &FOUR);
    assert_eq!(u.attributes.origin, Some(Origin::Igp));
}

#[test]
fn treat_as_withdraw_keeps_the_nlri_to_withdraw() {
    let d = codec::decode(
        &update_bytes(&format!("40 01 01 07 {AS_PATH} {NEXT_HOP}")),
        &FOUR,
    )
    .unwrap();
    assert!(d.treat_as_withdraw());
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_eq!(
        u.announced().collect::<Vec<_>>(),
        vec![&p("203.0.113.7/32")]
    );
    assert_eq!(u.attributes.origin, None);
}

#[test]
fn valid_aggregator_and_atomic_aggregate_are_kept_raw() {
    let (got, u) = outcomes(
        &format!("{ORIGIN} 40 02 04 02 01 fde8 {NEXT_HOP} 40 06 00 c0 07 06 fde8 c0000201"),
        &TWO,
    );
    assert_eq!(got, vec![]);
    assert_eq!(
        u.attributes
            .other
            .iter()
            .map(|a| a.type_code)
            .collect::<Vec<_>>(),
        vec![6, 7]
    );
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    // RFC 6793 §4.2.3: AS_PATH [65000], AS4_PATH [1 2]: AS4_PATH ignored.
    let (_, u) = outcomes(
        &format!("{ORIGIN} 40 02 04 02 01 fde8 c0 11 0a 02 02 00000001 00000002 {NEXT_HOP}"),
        &TWO,
    );
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath {
            segments: vec![seq(&[65000])]
        })
    );
}

#[test]
fn as4_path_replaces_the_trailing_as_trans_entries() {
    // AS_PATH [65000 65001 AS_TRANS], AS4_PATH [4200000001]: [65000 65001] + [4200000001].
    let (_, u) = outcomes(
        &format!("{ORIGIN} 40 02 08 02 03 fde8 fde9 5ba0 c0 11 06 02 01 fa56ea01 {NEXT_HOP}"),
        &TWO,
    );
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath {
            segments: vec![seq(&[65000, 65001]), seq(&[4_200_000_001])]
        })
    );
}

#[test]
fn mp_unreach_of_an_unknown_family_with_no_nlri_is_its_end_of_rib() {
    let bytes = h("ffffffffffffffffffffffffffffffff 001d 02 0000 0006 80 0f 03 0001 80");
    let Message::Update(u) = dec(&bytes, &FOUR) else {
        panic!()
    };
    let family = AddressFamily {
        afi: Afi::Ipv4,
        safi: Safi::Other(128),
    };
    assert_eq!(u.end_of_rib_family(), Some(family));
    assert_eq!(
        enc(&Message::Update(Update::end_of_rib(family)), &FOUR),
        bytes
    );
}

#[test]
fn withdrawal_only_update_needs_no_attributes() {
    let bytes = h("ffffffffffffffffffffffffffffffff 001c 02 0005 20 cb007107 0000");
    let Message::Update(u) = dec(&bytes, &FOUR) else {
        panic!()
    };
    assert_eq!(u.withdrawn, vec![p("203.0.113.7/32")]);
    assert_eq!(u.end_of_rib_family(), None);
}

#[test]
fn host_bits_beyond_the_prefix_length_are_cleared() {
    let bytes = update_bytes(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"));
    // Replace the NLRI with 203.0.113.0/23: the last bit of 0x71 lies beyond the prefix.
    let mut b = bytes[..bytes.len() - 5].to_vec();
    b.extend_from_slice(&h("17 cb0071"));
    let len = b.len() as u16;
    b[16..18].copy_from_slice(&len.to_be_bytes());
    let Message::Update(u) = dec(&b, &FOUR) else {
        panic!()
    };
    assert_eq!(u.nlri, vec![p("203.0.112.0/23")]);
}

// ---------------------------------------------------------------------------------------------
// Encoding limits and helpers.

fn host_routes(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::V4(Ipv4Addr::from(0x6440_0000 + i).into()))
        .collect()
}

#[test]
fn update_of_810_host_routes_fits_4096_octets_and_811_does_not() {
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![seq(&[65000])],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..PathAttributes::default()
    };
    let fits = Update {
        attributes: attrs.clone(),
        nlri: host_routes(810),
        ..Update::default()
    };
    assert_eq!(codec::update_len(&fits, &FOUR), 4093);
    enc(&Message::Update(fits), &FOUR);

    let too_big = Update {
        attributes: attrs,
        nlri: host_routes(811),
        ..Update::default()
    };
    let mut out = BytesMut::from(&b"prefix"[..]);
    let e = codec::encode(&Message::Update(too_big.clone()), &FOUR, &mut out).unwrap_err();
    assert_eq!(
        e,
        EncodeError::TooLong {
            len: 4098,
            max: 4096
        }
    );
    assert_eq!(&out[..], b"prefix", "nothing appended on error");
    // RFC 8654: fine once extended messages are negotiated.
    assert_eq!(
        dec(&enc(&Message::Update(too_big.clone()), &EXT), &EXT),
        Message::Update(too_big)
    );
}

#[test]
fn ipv6_prefix_in_the_ipv4_nlri_field_is_an_encode_error() {
    let u = Update {
        nlri: vec![p("2001:db8::/32")],
        ..Update::default()
    };
    let mut out = BytesMut::new();
    assert!(matches!(
        codec::encode(&Message::Update(u), &FOUR, &mut out),
        Err(EncodeError::Invalid(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn open_never_exceeds_4096_octets_even_with_extended_messages() {
    let caps = (0..2100).map(|_| Capability::RouteRefresh).collect();
    let open = Open {
        version: 4,
        my_as: 1,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
        capabilities: caps,
    };
    let mut out = BytesMut::new();
    assert!(matches!(
        codec::encode(&Message::Open(open), &EXT, &mut out),
        Err(EncodeError::TooLong { max: 4096, .. })
    ));
}

#[test]
fn notification_data_is_cut_to_fit_the_message_limit() {
    let n = Notification::new(
        notif::UPDATE_MESSAGE_ERROR,
        notif::OPTIONAL_ATTRIBUTE_ERROR,
        vec![7; 5000],
    );
    let bytes = enc(&Message::Notification(n), &FOUR);
    assert_eq!(bytes.len(), 4096);
    let Message::Notification(back) = dec(&bytes, &FOUR) else {
        panic!()
    };
    assert_eq!(back.data, vec![7; 4096 - 21]);
}

#[test]
fn shutdown_communication_is_cut_at_a_character_boundary_to_255_octets() {
    let long = "é".repeat(200); // 400 octets
    let n = Notification::administrative_shutdown(&long);
    assert_eq!(n.data[0], 254);
    assert_eq!(
        n.shutdown_communication(),
        Ok(Some("é".repeat(127).as_str()))
    );
}

#[test]
fn shutdown_communication_errors_are_reported() {
    let truncated = Notification::new(6, 2, h("05 6162"));
    assert_eq!(
        truncated.shutdown_communication(),
        Err(ShutdownCommunicationError::Truncated {
            len: 5,
            available: 2
        })
    );
    let invalid = Notification::new(6, 4, h("02 c328"));
    assert_eq!(
        invalid.shutdown_communication(),
        Err(ShutdownCommunicationError::InvalidUtf8)
    );
    assert_eq!(
        Notification::new(6, 2, vec![]).shutdown_communication(),
        Ok(None)
    );
    assert_eq!(
        Notification::new(6, 3, h("01 41")).shutdown_communication(),
        Ok(None)
    );
    let reset = Notification::cease_with_shutdown_communication(notif::ADMINISTRATIVE_RESET, "re");
    assert_eq!(reset.shutdown_communication(), Ok(Some("re")));
}

#[test]
fn end_of_rib_is_detected_only_for_empty_updates() {
    assert_eq!(
        Update::default().end_of_rib_family(),
        Some(AddressFamily::IPV4_UNICAST)
    );
    let v6 = Update::end_of_rib(AddressFamily::IPV6_UNICAST);
    assert_eq!(v6.end_of_rib_family(), Some(AddressFamily::IPV6_UNICAST));
    let mut not_eor = v6.clone();
    not_eor.attributes.origin = Some(Origin::Igp);
    assert_eq!(not_eor.end_of_rib_family(), None);
    let withdrawal = Update {
        withdrawn: vec![p("203.0.113.7/32")],
        ..Update::default()
    };
    assert_eq!(withdrawal.end_of_rib_family(), None);
}

#[test]
fn propagation_sets_partial_on_unknown_transitive_and_drops_non_transitive() {
    let mut a = PathAttributes {
        other: vec![
            RawAttribute {
                flags: 0xc0,
                type_code: 99,
                value: vec![1],
            },
            RawAttribute {
                flags: 0x80,
                type_code: 98,
                value: vec![2],
            },
        ],
        ..PathAttributes::default()
    };
    a.prepare_for_propagation();
    assert_eq!(
        a.other,
        vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![1]
        }]
    );
}
