//! Adj-RIB-Out tests: diffs, packing density, and a model of the peer's RIB.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;
use crate::bgp::codec::{self, CodecContext, MAX_MESSAGE_LEN};
use crate::bgp::message::{AddressFamily, AsPathSegment, LargeCommunity, Message, Update};

const LOCAL_AS: u32 = 65001;

fn policy(ibgp: bool, extended_message: bool) -> ExportPolicy {
    ExportPolicy {
        local_as: LOCAL_AS,
        ibgp,
        codec: CodecContext {
            four_octet_as: true,
            extended_message,
        },
        families: vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST],
        ipv6_next_hop: Some("2001:db8::1".parse().unwrap()),
        link_local_next_hop: None,
    }
}

fn nh4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn route(prefix: &str) -> Route {
    Route::new(net(prefix), nh4())
}

fn set(routes: impl IntoIterator<Item = Route>) -> RouteSet {
    routes.into_iter().map(|r| (r.prefix, r)).collect()
}

/// `n` IPv4 /32s inside 100.64.0.0/10.
fn host_routes(n: u32) -> RouteSet {
    (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i);
            Route::new(IpNet::V4(Ipv4Net::new(addr, 32).unwrap()), nh4())
        })
        .map(|r| (r.prefix, r))
        .collect()
}

/// Encode each UPDATE with the codec: every one fits the maximum and `update_len` agrees.
fn encode_all(updates: &[Update], ctx: &CodecContext) -> Vec<usize> {
    updates
        .iter()
        .map(|u| {
            let mut buf = BytesMut::new();
            codec::encode(&Message::Update(u.clone()), ctx, &mut buf).expect("encodes");
            assert!(buf.len() <= ctx.max_message_len(), "{} octets", buf.len());
            assert_eq!(buf.len(), codec::update_len(u, ctx));
            buf.len()
        })
        .collect()
}

fn announced(updates: &[Update]) -> Vec<IpNet> {
    updates
        .iter()
        .flat_map(|u| u.announced().copied())
        .collect()
}

fn withdrawn(updates: &[Update]) -> Vec<IpNet> {
    updates
        .iter()
        .flat_map(|u| u.withdrawn_prefixes().copied())
        .collect()
}

#[test]
fn packs_810_ipv4_host_routes_per_4096_octet_update() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let changes = rib.set_desired(host_routes(100_000));
    assert_eq!(changes.announce.len(), 100_000);
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 100_000usize.div_ceil(810));
    assert_eq!(updates[0].nlri.len(), 810);
    let lens = encode_all(
        &updates,
        &CodecContext {
            four_octet_as: true,
            extended_message: false,
        },
    );
    // 19 + 2 + 2 + 20 octets of attributes + 810 × 5 = 4093: an 811th would not fit.
    assert_eq!(lens[0], 4093);
    assert_eq!(announced(&updates).len(), 100_000);
}

#[test]
fn extended_messages_carry_thirteen_thousand_host_routes() {
    let mut rib = AdjRibOut::new(policy(false, true));
    let changes = rib.set_desired(host_routes(100_000));
    let updates = rib.updates(&changes);
    assert_eq!(updates[0].nlri.len(), (65535 - 43) / 5);
    assert_eq!(updates.len(), 8);
    encode_all(
        &updates,
        &CodecContext {
            four_octet_as: true,
            extended_message: true,
        },
    );
}

#[test]
fn packing_100k_host_routes_is_fast() {
    let desired = host_routes(100_000);
    let start = Instant::now();
    let mut rib = AdjRibOut::new(policy(false, false));
    let changes = rib.set_desired(desired);
    let updates = rib.updates(&changes);
    let took = start.elapsed();
    eprintln!("set_desired + updates for 100,000 /32s: {took:?}");
    assert_eq!(updates.len(), 124);
    // The 100 ms goal is for release builds; debug builds get room.
    let limit = if cfg!(debug_assertions) { 2000 } else { 100 };
    assert!(took.as_millis() < limit, "diff + pack took {took:?}");
}

#[test]
fn ipv6_prefixes_fill_mp_reach_to_the_limit() {
    let desired: RouteSet = (0..5000u32)
        .map(|i| {
            let addr = Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i) << 64);
            let mut r = Route::new(IpNet::V6(Ipv6Net::new(addr, 64).unwrap()), nh4());
            r.next_hop = "2001:db8:ffff::1".parse().unwrap();
            r
        })
        .map(|r| (r.prefix, r))
        .collect();
    let mut rib = AdjRibOut::new(policy(false, false));
    let changes = rib.set_desired(desired);
    let updates = rib.updates(&changes);
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let lens = encode_all(&updates, &ctx);
    // A /64 takes 9 octets: every full UPDATE is within 9 octets of the limit.
    for len in &lens[..lens.len() - 1] {
        assert!(*len > MAX_MESSAGE_LEN - 9, "{lens:?}");
    }
    let reach = updates[0].attributes.mp_reach.as_ref().unwrap();
    assert_eq!(
        reach.next_hop,
        "2001:db8:ffff::1".parse::<IpAddr>().unwrap()
    );
    assert!(updates[0].attributes.next_hop.is_none());
    assert_eq!(announced(&updates).len(), 5000);
}

#[test]
fn unchanged_desired_set_sends_nothing() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let desired = set([route("203.0.113.1/32"), route("203.0.113.2/32")]);
    rib.set_desired(desired.clone());
    let changes = rib.set_desired(desired);
    assert!(changes.is_empty());
    assert!(rib.updates(&changes).is_empty());
}

#[test]
fn withdraws_exactly_what_left() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.set_desired(set([
        route("203.0.113.1/32"),
        route("203.0.113.2/32"),
        route("2001:db8:1::/48"),
        route("203.0.113.3/32"),
    ]));
    let changes = rib.set_desired(set([route("203.0.113.2/32")]));
    assert!(changes.announce.is_empty());
    let updates = rib.updates(&changes);
    // One UPDATE for IPv4 (withdrawn routes field), one for IPv6 (MP_UNREACH_NLRI).
    assert_eq!(updates.len(), 2);
    let mut gone = withdrawn(&updates);
    gone.sort();
    assert_eq!(
        gone,
        vec![
            net("203.0.113.1/32"),
            net("203.0.113.3/32"),
            net("2001:db8:1::/48")
        ]
    );
    assert_eq!(
        updates[0].withdrawn,
        vec![net("203.0.113.1/32"), net("203.0.113.3/32")]
    );
    assert_eq!(
        updates[1].attributes.mp_unreach.as_ref().unwrap().withdrawn,
        vec![net("2001:db8:1::/48")]
    );
    assert!(announced(&updates).is_empty());
    assert_eq!(
        rib.routes().keys().copied().collect::<Vec<_>>(),
        vec![net("203.0.113.2/32")]
    );
}

#[test]
fn attribute_change_reannounces_only_that_prefix() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut desired = set([
        route("203.0.113.1/32"),
        route("203.0.113.2/32"),
        route("203.0.113.3/32"),
    ]);
    rib.set_desired(desired.clone());
    desired.get_mut(&net("203.0.113.2/32")).unwrap().communities = vec![65001 << 16 | 7];
    let changes = rib.set_desired(desired);
    assert!(changes.withdraw.is_empty());
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].nlri, vec![net("203.0.113.2/32")]);
    assert_eq!(updates[0].attributes.communities, vec![65001 << 16 | 7]);
}

#[test]
fn community_order_and_duplicates_do_not_count_as_a_change() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut a = route("203.0.113.1/32");
    a.communities = vec![3, 1, 2];
    a.large_communities = vec![
        LargeCommunity {
            global_admin: 2,
            local_data_1: 0,
            local_data_2: 0,
        },
        LargeCommunity {
            global_admin: 1,
            local_data_1: 0,
            local_data_2: 0,
        },
    ];
    rib.set_desired(set([a.clone()]));
    a.communities = vec![2, 2, 3, 1];
    a.large_communities.reverse();
    assert!(rib.set_desired(set([a])).is_empty());
    assert_eq!(
        rib.routes()[&net("203.0.113.1/32")].communities,
        vec![1, 2, 3]
    );
}

#[test]
fn routes_with_identical_attributes_share_an_update() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut desired = Vec::new();
    for (i, med) in [
        (1, Some(10)),
        (2, Some(20)),
        (3, Some(10)),
        (4, Some(20)),
        (5, None),
    ] {
        let mut r = route(&format!("203.0.113.{i}/32"));
        r.med = med;
        desired.push(r);
    }
    let changes = rib.set_desired(set(desired));
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 3);
    let mut by_med: Vec<(Option<u32>, usize)> = updates
        .iter()
        .map(|u| (u.attributes.med, u.nlri.len()))
        .collect();
    by_med.sort();
    assert_eq!(by_med, vec![(None, 1), (Some(10), 2), (Some(20), 2)]);
}

#[test]
fn ebgp_updates_carry_our_as_and_no_local_pref() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut a = route("203.0.113.1/32");
    a.local_pref = Some(200);
    let b = route("203.0.113.2/32");
    let changes = rib.set_desired(set([a, b]));
    let updates = rib.updates(&changes);
    // LOCAL_PREF is not sent to external peers, so it does not split the group either.
    assert_eq!(updates.len(), 1);
    let attrs = &updates[0].attributes;
    assert_eq!(attrs.origin, Some(Origin::Igp));
    assert_eq!(
        attrs.as_path.as_ref().unwrap().segments,
        vec![AsPathSegment::Sequence(vec![LOCAL_AS])]
    );
    assert_eq!(attrs.local_pref, None);
    assert_eq!(attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
}

#[test]
fn ibgp_updates_carry_empty_as_path_and_local_pref() {
    let mut rib = AdjRibOut::new(policy(true, false));
    let mut a = route("203.0.113.1/32");
    a.local_pref = Some(200);
    let b = route("203.0.113.2/32");
    let changes = rib.set_desired(set([a, b]));
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 2);
    let mut prefs: Vec<_> = updates.iter().map(|u| u.attributes.local_pref).collect();
    prefs.sort();
    assert_eq!(prefs, vec![Some(DEFAULT_LOCAL_PREF), Some(200)]);
    for u in &updates {
        assert_eq!(u.attributes.as_path, Some(AsPath::default()));
    }
}

#[test]
fn ipv6_prefix_with_ipv4_next_hop_uses_the_session_ipv6_next_hop() {
    let mut p = policy(false, false);
    let mut rib = AdjRibOut::new(p.clone());
    let changes = rib.set_desired(set([route("2001:db8:5::/48")]));
    let updates = rib.updates(&changes);
    let reach = updates[0].attributes.mp_reach.as_ref().unwrap();
    assert_eq!(reach.next_hop, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(reach.nlri, vec![net("2001:db8:5::/48")]);

    // Without one, never the IPv4-mapped address (switches cannot resolve it): not sent.
    p.ipv6_next_hop = None;
    let mut rib = AdjRibOut::new(p);
    let changes = rib.set_desired(set([route("2001:db8:5::/48")]));
    assert!(changes.announce.is_empty());
    assert_eq!(
        changes.unexportable,
        vec![(net("2001:db8:5::/48"), Unexportable::NoIpv6NextHop)]
    );
}

#[test]
fn routes_the_session_cannot_carry_are_reported_not_sent() {
    let mut p = policy(false, false);
    p.families = vec![AddressFamily::IPV4_UNICAST];
    let mut rib = AdjRibOut::new(p);
    let mut v4_over_v6 = route("203.0.113.9/32");
    v4_over_v6.next_hop = "2001:db8::9".parse().unwrap();
    let changes = rib.set_desired(set([
        route("203.0.113.1/32"),
        route("2001:db8:1::/48"),
        v4_over_v6,
    ]));
    assert_eq!(changes.announce, vec![net("203.0.113.1/32")]);
    assert_eq!(
        changes.unexportable,
        vec![
            (
                net("203.0.113.9/32"),
                Unexportable::Ipv6NextHopForIpv4Prefix
            ),
            (
                net("2001:db8:1::/48"),
                Unexportable::FamilyNotNegotiated(AddressFamily::IPV6_UNICAST)
            ),
        ]
    );
    assert_eq!(rib.len(), 1);
}

#[test]
fn huge_community_lists_are_unexportable_not_oversized() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut r = route("203.0.113.1/32");
    r.communities = (0..1100).collect();
    let changes = rib.set_desired(set([r]));
    assert!(matches!(
        changes.unexportable[..],
        [(_, Unexportable::AttributesTooLong(_))]
    ));
    assert!(changes.announce.is_empty());
}

#[test]
fn ipv4_withdrawals_ride_in_announcing_updates() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.set_desired(set([route("203.0.113.1/32")]));
    let changes = rib.set_desired(set([route("203.0.113.2/32")]));
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].withdrawn, vec![net("203.0.113.1/32")]);
    assert_eq!(updates[0].nlri, vec![net("203.0.113.2/32")]);
}

#[test]
fn withdrawing_100k_host_routes_packs_them_densely() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.set_desired(host_routes(100_000));
    let changes = rib.set_desired(RouteSet::new());
    let updates = rib.updates(&changes);
    // (4096 − 23) / 5 = 814 per UPDATE.
    assert_eq!(updates.len(), 100_000usize.div_ceil(814));
    encode_all(
        &updates,
        &CodecContext {
            four_octet_as: true,
            extended_message: false,
        },
    );
    assert!(rib.is_empty());
}

#[test]
fn initial_sync_sends_everything_then_end_of_rib_per_family() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let (updates, changes) =
        rib.initial_sync(set([route("203.0.113.1/32"), route("2001:db8:1::/48")]));
    assert_eq!(changes.announce.len(), 2);
    assert_eq!(updates.len(), 4);
    assert_eq!(
        updates[2].end_of_rib_family(),
        Some(AddressFamily::IPV4_UNICAST)
    );
    assert_eq!(
        updates[3].end_of_rib_family(),
        Some(AddressFamily::IPV6_UNICAST)
    );
    // Re-sync after a reconnect: everything again, although nothing changed.
    let (again, _) = rib.initial_sync(set([route("203.0.113.1/32"), route("2001:db8:1::/48")]));
    assert_eq!(again, updates);
}

#[test]
fn route_refresh_is_answered_from_what_was_sent() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.set_desired(set([
        route("203.0.113.1/32"),
        route("203.0.113.2/32"),
        route("2001:db8:1::/48"),
    ]));
    let v4 = rib.full_table(Some(AddressFamily::IPV4_UNICAST));
    assert_eq!(
        announced(&rib.updates(&v4)),
        vec![net("203.0.113.1/32"), net("203.0.113.2/32")]
    );
    let all = rib.full_table(None);
    assert_eq!(all.announce.len(), 3);
    // Answering a refresh changes nothing.
    assert_eq!(rib.len(), 3);
}

#[test]
fn host_bits_are_cleared() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut desired = RouteSet::new();
    desired.insert(
        net("203.0.113.77/24"),
        Route::new(net("203.0.113.77/24"), nh4()),
    );
    let changes = rib.set_desired(desired);
    assert_eq!(changes.announce, vec![net("203.0.113.0/24")]);
}

// ---- property: the peer's RIB, rebuilt from the wire, equals the desired set ----

/// The peer's view: prefix → route as it would read it from our UPDATEs.
fn apply(model: &mut BTreeMap<IpNet, Route>, update: &Update) {
    for p in update.withdrawn_prefixes() {
        model.remove(p);
    }
    let a = &update.attributes;
    let make = |prefix: IpNet, next_hop: IpAddr| Route {
        prefix,
        next_hop,
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        local_pref: a.local_pref,
        med: a.med,
    };
    for p in &update.nlri {
        let nh = IpAddr::V4(a.next_hop.expect("IPv4 NLRI come with NEXT_HOP"));
        model.insert(*p, make(*p, nh));
    }
    if let Some(r) = &a.mp_reach {
        for p in &r.nlri {
            model.insert(*p, make(*p, r.next_hop));
        }
    }
}

/// What the peer should see for `desired` under `policy`.
fn expected(desired: &RouteSet, policy: &ExportPolicy) -> BTreeMap<IpNet, Route> {
    desired
        .values()
        .map(|r| {
            let mut r = r.clone().normalized();
            if let (IpNet::V6(_), IpAddr::V4(v4)) = (r.prefix, r.next_hop) {
                r.next_hop = IpAddr::V6(policy.ipv6_next_hop_for(v4));
            }
            r.local_pref = policy
                .ibgp
                .then(|| r.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            (r.prefix, r)
        })
        .collect()
}

fn arb_prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0u32..64, 24u8..=32).prop_map(|(i, len)| {
            let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(203, 0, 113, 0)) + i);
            IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc())
        }),
        (0u32..64, 32u8..=128).prop_map(|(i, len)| {
            let a = Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i) << 80 | u128::from(i));
            IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc())
        }),
    ]
}

fn arb_route() -> impl Strategy<Value = Route> {
    (
        arb_prefix(),
        prop_oneof![
            Just(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            Just(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
            Just("2001:db8::2".parse::<IpAddr>().unwrap()),
        ],
        prop::collection::vec(0u32..4, 0..3),
        prop::collection::vec(
            (0u32..2, 0u32..2).prop_map(|(a, b)| LargeCommunity {
                global_admin: 65001,
                local_data_1: a,
                local_data_2: b,
            }),
            0..2,
        ),
        prop::option::of(prop_oneof![Just(100u32), Just(200)]),
        prop::option::of(0u32..2),
    )
        .prop_map(
            |(prefix, next_hop, communities, large_communities, local_pref, med)| Route {
                prefix,
                // IPv4 prefixes take an IPv4 next hop (RFC 8950 is not supported).
                next_hop: if matches!(prefix, IpNet::V4(_)) && next_hop.is_ipv6() {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3))
                } else {
                    next_hop
                },
                communities,
                large_communities,
                local_pref,
                med,
            },
        )
}

fn arb_route_set() -> impl Strategy<Value = RouteSet> {
    prop::collection::vec(arb_route(), 0..300)
        .prop_map(|v| v.into_iter().map(|r| (r.prefix, r)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn peer_rib_rebuilt_from_the_wire_equals_the_desired_set(
        ibgp in any::<bool>(),
        extended in any::<bool>(),
        steps in prop::collection::vec(arb_route_set(), 1..5),
    ) {
        let policy = policy(ibgp, extended);
        let ctx = policy.codec;
        let mut rib = AdjRibOut::new(policy.clone());
        let mut model = BTreeMap::new();
        for desired in steps {
            let changes = rib.set_desired(desired.clone());
            prop_assert!(changes.unexportable.is_empty());
            for update in rib.updates(&changes) {
                let mut buf = BytesMut::new();
                codec::encode(&Message::Update(update.clone()), &ctx, &mut buf).unwrap();
                prop_assert!(buf.len() <= ctx.max_message_len());
                // Read back what the peer reads.
                let decoded = codec::decode(&buf, &ctx).unwrap();
                let Message::Update(on_wire) = decoded.message else { panic!("not an UPDATE") };
                apply(&mut model, &on_wire);
            }
            prop_assert_eq!(&model, &expected(&desired, &policy));
            prop_assert_eq!(rib.len(), desired.len());
        }
    }

    #[test]
    fn every_update_fits_even_with_many_long_prefixes(
        n in 1usize..3000,
        len in 112u8..=128,
        extended in any::<bool>(),
    ) {
        let policy = policy(false, extended);
        let desired: RouteSet = (0..n as u128)
            .map(|i| {
                let a = Ipv6Addr::from((0x2001_0db8_u128 << 96) | i << 16);
                Route::new(IpNet::V6(Ipv6Net::new(a, len).unwrap()), nh4())
            })
            .map(|r| (r.prefix, r))
            .collect();
        let mut rib = AdjRibOut::new(policy.clone());
        let changes = rib.set_desired(desired);
        let updates = rib.updates(&changes);
        let sizes = encode_all(&updates, &policy.codec);
        // Dense: all but the last are within one prefix (≤ 17 octets) of the limit.
        for s in &sizes[..sizes.len() - 1] {
            prop_assert!(*s > policy.codec.max_message_len() - 17);
        }
        let changes = rib.set_desired(RouteSet::new());
        encode_all(&rib.updates(&changes), &policy.codec);
    }
}

#[test]
fn four_octet_local_as_towards_a_two_octet_peer_still_fits() {
    // RFC 6793 §4.2.2: AS_TRANS in AS_PATH plus AS4_PATH; the packer counts both.
    let p = ExportPolicy {
        local_as: 4_200_000_000,
        codec: CodecContext {
            four_octet_as: false,
            extended_message: false,
        },
        ..policy(false, false)
    };
    let mut rib = AdjRibOut::new(p.clone());
    let changes = rib.set_desired(host_routes(5_000));
    let updates = rib.updates(&changes);
    let lens = encode_all(&updates, &p.codec);
    for len in &lens[..lens.len() - 1] {
        assert!(*len > MAX_MESSAGE_LEN - 5, "{lens:?}");
    }
}

#[test]
fn long_community_lists_use_extended_attribute_length_and_still_fit() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let desired: RouteSet = host_routes(3_000)
        .into_values()
        .map(|mut r| {
            r.communities = (0..100).collect();
            (r.prefix, r)
        })
        .collect();
    let changes = rib.set_desired(desired);
    let updates = rib.updates(&changes);
    let lens = encode_all(
        &updates,
        &CodecContext {
            four_octet_as: true,
            extended_message: false,
        },
    );
    for len in &lens[..lens.len() - 1] {
        assert!(*len > MAX_MESSAGE_LEN - 5, "{lens:?}");
    }
    assert_eq!(announced(&updates).len(), 3_000);
}

#[test]
fn one_change_in_a_large_table_sends_one_prefix() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut desired = host_routes(1_000);
    rib.set_desired(desired.clone());
    let changed = *desired.keys().nth(500).unwrap();
    desired.get_mut(&changed).unwrap().med = Some(5);
    let changes = rib.set_desired(desired);
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].nlri, vec![changed]);
    assert_eq!(updates[0].attributes.med, Some(5));
}

#[test]
fn ipv4_withdrawals_do_not_ride_in_ipv6_announcements() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.set_desired(set([route("203.0.113.1/32")]));
    let changes = rib.set_desired(set([route("2001:db8:1::/48")]));
    let updates = rib.updates(&changes);
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].withdrawn, vec![net("203.0.113.1/32")]);
    assert!(updates[0].attributes.mp_reach.is_none());
    assert!(updates[1].withdrawn.is_empty());
}

/// Everything `next_updates` hands out, batch by batch, until it has nothing left.
fn drain_outbox(rib: &mut AdjRibOut, budget: usize) -> Vec<Vec<Update>> {
    let mut batches = Vec::new();
    loop {
        let b = rib.next_updates(budget);
        if b.is_empty() {
            return batches;
        }
        batches.push(b);
    }
}

#[test]
fn routes_count_as_sent_only_when_handed_out() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let queued = rib.queue_desired(host_routes(3000).into_values());
    assert_eq!((queued.announce, queued.withdraw), (3000, 0));
    assert!(rib.is_empty(), "queued is not sent");
    let first = rib.next_updates(1000);
    assert_eq!(rib.len(), announced(&first).len());
    assert!(rib.len() >= 200 && rib.len() < 3000, "{}", rib.len());
    let rest = drain_outbox(&mut rib, 1000);
    assert_eq!(rib.len(), 3000);
    assert!(!rib.has_outstanding());
    let total: usize =
        rest.iter().map(|b| announced(b).len()).sum::<usize>() + announced(&first).len();
    assert_eq!(total, 3000);
}

#[test]
fn a_desired_set_changed_before_it_was_sent_coalesces_into_one_diff() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.queue_desired(host_routes(10).into_values());
    drain_outbox(&mut rib, 1 << 20);
    // Many changes while the socket is blocked: add 5000, then remove them again and drop two
    // of the original ten. Only the net difference goes out.
    rib.queue_desired(host_routes(5010).into_values());
    let mut last = host_routes(10);
    let gone: Vec<IpNet> = last.keys().take(2).copied().collect();
    for p in &gone {
        last.remove(p);
    }
    let queued = rib.queue_desired(last.into_values());
    assert_eq!((queued.announce, queued.withdraw), (0, 2));
    let batches = drain_outbox(&mut rib, 1 << 20);
    let updates: Vec<Update> = batches.into_iter().flatten().collect();
    assert!(announced(&updates).is_empty());
    let withdrawn: Vec<IpNet> = updates.iter().flat_map(|u| u.withdrawn.clone()).collect();
    assert_eq!(withdrawn, gone);
    assert_eq!(rib.len(), 8);
}

#[test]
fn end_of_rib_follows_the_initial_routes() {
    let mut rib = AdjRibOut::new(policy(false, false));
    rib.queue_desired(host_routes(2000).into_values());
    rib.queue_end_of_rib();
    let updates: Vec<Update> = drain_outbox(&mut rib, 500).into_iter().flatten().collect();
    let eor = updates
        .iter()
        .position(|u| u.end_of_rib_family().is_some())
        .unwrap();
    assert_eq!(announced(&updates[..eor]).len(), 2000);
    assert_eq!(updates.len() - eor, 2, "one End-of-RIB per family, last");
}

#[test]
fn route_refresh_answers_walk_the_table_and_repeated_requests_merge_into_one_more_pass() {
    let mut rib = AdjRibOut::new(policy(false, false));
    let mut routes = host_routes(4000);
    routes.insert(
        net("2001:db8:1::/48"),
        Route::new(net("2001:db8:1::/48"), nh4()),
    );
    rib.queue_desired(routes.into_values());
    drain_outbox(&mut rib, 1 << 20);
    assert_eq!(
        rib.request_refresh(AddressFamily::IPV4_UNICAST),
        RefreshAnswer::Started
    );
    let first = rib.next_updates(1000);
    let mut seen = announced(&first).len();
    assert!(seen < 4000);
    // A thousand more requests while the answer is under way cost nothing now.
    for _ in 0..1000 {
        assert_eq!(
            rib.request_refresh(AddressFamily::IPV4_UNICAST),
            RefreshAnswer::Coalesced
        );
    }
    let rest: Vec<Update> = drain_outbox(&mut rib, 1000).into_iter().flatten().collect();
    seen += announced(&rest).len();
    // The pass in progress, then exactly one more; only the requested family.
    assert_eq!(seen, 8000);
    assert!(rest.iter().all(|u| u.attributes.mp_reach.is_none()));
    assert!(!rib.has_outstanding());
}

#[test]
fn our_global_ipv6_next_hop_goes_with_the_link_local_one_beside_it() {
    // RFC 2545 §3: global then link-local when the peer shares our subnet; a next hop that is
    // not our address (a third party's) has no link-local address we know.
    let mut p = policy(false, false);
    p.link_local_next_hop = Some(("2001:db8::1".parse().unwrap(), "fe80::1".parse().unwrap()));
    let mut rib = AdjRibOut::new(p.clone());
    let ours = Route::new(net("2001:db8:5::/48"), "2001:db8::1".parse().unwrap());
    let other = Route::new(net("2001:db8:6::/48"), "2001:db8::9".parse().unwrap());
    let changes = rib.set_desired(set([ours, other]));
    let updates = rib.updates(&changes);
    let mut seen = BTreeMap::new();
    for u in &updates {
        if let Some(r) = &u.attributes.mp_reach {
            for n in &r.nlri {
                seen.insert(*n, r.link_local_next_hop);
            }
        }
    }
    assert_eq!(
        seen[&net("2001:db8:5::/48")],
        Some("fe80::1".parse::<IpAddr>().unwrap())
    );
    assert_eq!(seen[&net("2001:db8:6::/48")], None);
    encode_all(&updates, &p.codec);
}
