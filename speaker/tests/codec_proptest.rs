//! Property tests for the BGP codec: encode → decode is the identity for arbitrary valid
//! messages, `update_len` predicts the encoded size, and no byte sequence a peer can send makes
//! `frame_len` or `decode` panic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use leafbridge_speaker::bgp::codec::{self, CodecContext};
use leafbridge_speaker::bgp::message::{
    AddressFamily, Afi, AsPath, AsPathSegment, Capability, GracefulRestartCap,
    GracefulRestartFamily, LargeCommunity, Message, MpReach, MpUnreach, Notification, Open, Origin,
    PathAttributes, RawAttribute, RouteRefresh, Safi, Update,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn ctx() -> impl Strategy<Value = CodecContext> {
    (any::<bool>(), any::<bool>()).prop_map(|(four_octet_as, extended_message)| CodecContext {
        four_octet_as,
        extended_message,
    })
}

/// AFI values in their canonical form (1 and 2 only as `Ipv4` / `Ipv6`).
fn afi() -> impl Strategy<Value = Afi> {
    prop_oneof![
        Just(Afi::Ipv4),
        Just(Afi::Ipv6),
        any::<u16>().prop_filter_map("canonical", |v| (v > 2).then_some(Afi::Other(v))),
    ]
}

fn safi() -> impl Strategy<Value = Safi> {
    prop_oneof![
        Just(Safi::Unicast),
        any::<u8>().prop_filter_map("canonical", |v| (v != 1).then_some(Safi::Other(v))),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    (afi(), safi()).prop_map(|(afi, safi)| AddressFamily { afi, safi })
}

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()))
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()))
}

fn capability() -> impl Strategy<Value = Capability> {
    let known = [1u8, 2, 6, 64, 65];
    prop_oneof![
        family().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            vec((family(), any::<bool>()), 0..5)
        )
            .prop_map(|(restart_state, notification, restart_time, fams)| {
                Capability::GracefulRestart(GracefulRestartCap {
                    restart_state,
                    notification,
                    restart_time,
                    families: fams
                        .into_iter()
                        .map(|(family, forwarding_preserved)| GracefulRestartFamily {
                            family,
                            forwarding_preserved,
                        })
                        .collect(),
                })
            }),
        (1u32..).prop_map(Capability::FourOctetAs),
        (
            any::<u8>().prop_filter("unknown code", move |c| !known.contains(c)),
            vec(any::<u8>(), 0..20)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1u16..,
        any::<u16>().prop_filter("RFC 4271 §6.2", |h| *h != 1 && *h != 2),
        1u32..,
        vec(capability(), 0..24),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_identifier: Ipv4Addr::from(id),
            capabilities,
        })
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("unicast next hop", |a| {
            !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
        })
}

fn as_path() -> impl Strategy<Value = AsPath> {
    let asn = prop_oneof![1u32..65536, any::<u32>()];
    let segment = (any::<bool>(), vec(asn, 1..20)).prop_map(|(set, asns)| {
        if set {
            AsPathSegment::Set(asns)
        } else {
            AsPathSegment::Sequence(asns)
        }
    });
    vec(segment, 0..5).prop_map(|segments| AsPath { segments })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (unicast_v4(), vec(v4_prefix(), 0..20)).prop_map(|(nh, nlri)| MpReach {
            family: AddressFamily::IPV4_UNICAST,
            next_hop: IpAddr::V4(nh),
            link_local_next_hop: None,
            nlri,
        }),
        (
            any::<u128>(),
            option::of(any::<u128>()),
            vec(v6_prefix(), 0..20)
        )
            .prop_map(|(nh, ll, nlri)| MpReach {
                family: AddressFamily::IPV6_UNICAST,
                next_hop: IpAddr::V6(Ipv6Addr::from(nh)),
                link_local_next_hop: ll.map(|l| IpAddr::V6(Ipv6Addr::from(l))),
                nlri,
            }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(v4_prefix(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: AddressFamily::IPV4_UNICAST,
            withdrawn
        }),
        vec(v6_prefix(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: AddressFamily::IPV6_UNICAST,
            withdrawn
        }),
        // Any other family can only be carried empty (its End-of-RIB).
        family().prop_map(|family| MpUnreach {
            family,
            withdrawn: vec![]
        }),
    ]
}

/// Unrecognized optional attributes: unique type codes outside the ones the codec interprets.
fn other_attributes() -> impl Strategy<Value = Vec<RawAttribute>> {
    const INTERPRETED: [u8; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32];
    let attr = (
        any::<u8>().prop_filter("uninterpreted", |t| !INTERPRETED.contains(t)),
        any::<u8>(),
        prop_oneof![vec(any::<u8>(), 0..16), vec(any::<u8>(), 250..300)],
    )
        .prop_map(|(type_code, flags, value)| {
            let mut flags = flags | 0x80;
            if value.len() > 255 {
                flags |= 0x10;
            }
            (
                type_code,
                RawAttribute {
                    flags,
                    type_code,
                    value,
                },
            )
        });
    vec(attr, 0..3).prop_map(|v| {
        v.into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect()
    })
}

fn path_attributes() -> impl Strategy<Value = PathAttributes> {
    (
        (
            option::of(prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ]),
            option::of(as_path()),
            option::of(unicast_v4()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
        ),
        (
            vec(any::<u32>(), 0..10),
            vec(any::<(u32, u32, u32)>(), 0..5),
            option::of(mp_reach()),
            option::of(mp_unreach()),
            other_attributes(),
        ),
    )
        .prop_map(
            |(
                (origin, as_path, next_hop, med, local_pref),
                (communities, large, mp_reach, mp_unreach, other),
            )| PathAttributes {
                origin,
                as_path,
                next_hop,
                med,
                local_pref,
                communities,
                large_communities: large
                    .into_iter()
                    .map(
                        |(global_admin, local_data_1, local_data_2)| LargeCommunity {
                            global_admin,
                            local_data_1,
                            local_data_2,
                        },
                    )
                    .collect(),
                mp_reach,
                mp_unreach,
                other,
            },
        )
}

fn update() -> impl Strategy<Value = Update> {
    (
        vec(v4_prefix(), 0..50),
        path_attributes(),
        vec(v4_prefix(), 0..50),
    )
        .prop_map(|(withdrawn, attributes, nlri)| Update {
            withdrawn,
            attributes,
            nlri,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update().prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100)).prop_map(|(code, subcode, data)| {
            Message::Notification(Notification {
                code,
                subcode,
                data,
            })
        }),
        Just(Message::Keepalive),
        family().prop_map(|family| Message::RouteRefresh(RouteRefresh { family })),
    ]
}

fn encode(msg: &Message, ctx: &CodecContext) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(msg, ctx, &mut out).expect("valid message encodes");
    out.to_vec()
}

/// Decode, and when that succeeds, check the decoded message survives another round trip.
fn decode_never_panics(bytes: &[u8], ctx: &CodecContext) {
    let _ = codec::frame_len(bytes, ctx);
    if let Ok(d) = codec::decode(bytes, ctx) {
        let mut out = BytesMut::new();
        if codec::encode(&d.message, ctx, &mut out).is_ok() {
            let again = codec::decode(&out, ctx).expect("re-encoded message decodes");
            assert_eq!(
                again.message, d.message,
                "decode ∘ encode is stable on decoded messages"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(msg in message(), ctx in ctx()) {
        let bytes = encode(&msg, &ctx);
        prop_assert_eq!(codec::frame_len(&bytes, &ctx), Ok(Some(bytes.len())));
        let decoded = codec::decode(&bytes, &ctx).expect("valid message decodes");
        prop_assert_eq!(&decoded.message, &msg);
        if let Message::Update(u) = &msg {
            prop_assert_eq!(codec::update_len(u, &ctx), bytes.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..128), ctx in ctx()) {
        decode_never_panics(&bytes, &ctx);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        msg_type in 0u8..8,
        body in vec(any::<u8>(), 0..300),
        ctx in ctx(),
    ) {
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(msg_type);
        bytes.extend_from_slice(&body);
        decode_never_panics(&bytes, &ctx);
    }

    #[test]
    fn corrupted_valid_messages_never_panic(
        msg in message(),
        ctx in ctx(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = encode(&msg, &ctx);
        for (at, value) in flips {
            // Keep marker and length intact so the corruption reaches the body decoders.
            let body = 18..bytes.len();
            let i = body.start + at.index(body.len());
            bytes[i] = value;
        }
        decode_never_panics(&bytes, &ctx);
    }
}
