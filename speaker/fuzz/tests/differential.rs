//! Differential tests against an independent BGP codec, netgauze-bgp-pkt (kept in this fuzz
//! crate so it never weighs on the workspace build; run with
//! `cargo test --manifest-path speaker/fuzz/Cargo.toml`): what we encode, it reads as the same
//! prefixes, next hops, communities and capabilities; and on the checked-in fuzz corpus,
//! whenever both codecs accept an UPDATE cleanly they agree on its routes.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use leafbridge_speaker_fuzz::bgp::codec::{self, CodecContext};
use leafbridge_speaker_fuzz::bgp::message::{
    AddressFamily, AsPath, AsPathSegment, Capability, Message, MpReach, MpUnreach, Open, Origin,
    PathAttributes, Update,
};
use leafbridge_speaker_fuzz::differential::{self, netgauze_parse, ours, theirs};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::open::BgpOpenMessageParameter;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Unicast prefixes (netgauze refuses multicast and broadcast networks as unicast NLRI).
fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (0x0a00_0000u32..0x0b00_0000, 8u8..=32)
        .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()))
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 32u8..=128).prop_map(|(a, l)| {
        let a = (0x2001_0db8u128 << 96) | (a >> 32);
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
    })
}

fn update() -> impl Strategy<Value = Update> {
    let mp_reach = prop_oneof![
        vec(v6_prefix(), 1..20).prop_map(|nlri| MpReach {
            family: AddressFamily::IPV6_UNICAST,
            next_hop: "2001:db8::1".parse().unwrap(),
            link_local_next_hop: Some("fe80::1".parse().unwrap()),
            nlri,
        }),
        vec(v6_prefix(), 1..20).prop_map(|nlri| MpReach {
            family: AddressFamily::IPV6_UNICAST,
            next_hop: "2001:db8::2".parse().unwrap(),
            link_local_next_hop: None,
            nlri,
        }),
    ];
    let mp_unreach = vec(v6_prefix(), 0..20).prop_map(|withdrawn| MpUnreach {
        family: AddressFamily::IPV6_UNICAST,
        withdrawn,
    });
    (
        vec(v4_prefix(), 0..50),
        vec(v4_prefix(), 0..50),
        option::of(mp_reach),
        option::of(mp_unreach),
        vec(any::<u32>(), 0..8),
        vec(1u32.., 1..6),
    )
        .prop_map(
            |(withdrawn, nlri, mp_reach, mp_unreach, communities, asns)| Update {
                withdrawn,
                attributes: PathAttributes {
                    origin: Some(Origin::Igp),
                    as_path: Some(AsPath {
                        segments: vec![AsPathSegment::Sequence(asns)],
                    }),
                    next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    communities,
                    mp_reach,
                    mp_unreach,
                    ..PathAttributes::default()
                },
                nlri,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn netgauze_reads_our_updates_with_the_same_routes(u in update(), four_octet_as in any::<bool>()) {
        let ctx = CodecContext { four_octet_as, extended_message: false };
        let mut out = BytesMut::new();
        codec::encode(&Message::Update(u.clone()), &ctx, &mut out).unwrap();
        let parsed = netgauze_parse(&out, four_octet_as);
        prop_assert!(parsed.is_some(), "netgauze rejects our UPDATE {:02x?}", &out[..]);
        prop_assert_eq!(theirs(&parsed.unwrap()), Some(ours(&u)));
    }
}

#[test]
fn netgauze_reads_our_open_with_the_same_asn_and_families() {
    let open = Open {
        version: 4,
        my_as: leafbridge_speaker_fuzz::bgp::message::AS_TRANS,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::ExtendedMessage,
            Capability::FourOctetAs(4_200_000_001),
        ],
    };
    let mut out = BytesMut::new();
    codec::encode(&Message::Open(open), &CodecContext::default(), &mut out).unwrap();
    let Some(BgpMessage::Open(o)) = netgauze_parse(&out, false) else {
        panic!("netgauze rejects our OPEN {:02x?}", &out[..]);
    };
    assert_eq!(o.my_asn4(), 4_200_000_001);
    assert_eq!(o.hold_time(), 90);
    let families: Vec<String> = o
        .params()
        .iter()
        .flat_map(|BgpOpenMessageParameter::Capabilities(caps)| caps.iter())
        .filter_map(|c| match c {
            BgpCapability::MultiProtocolExtensions(mp) => Some(format!("{:?}", mp.address_type())),
            _ => None,
        })
        .collect();
    assert_eq!(families, vec!["Ipv4Unicast", "Ipv6Unicast"]);
}

#[test]
fn both_codecs_agree_on_corpus_updates_they_both_accept() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/decode_update");
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus present") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        compared += usize::from(differential::differential_update(&data));
    }
    assert!(
        compared >= 5,
        "only {compared} corpus UPDATEs were accepted by both codecs"
    );
}
