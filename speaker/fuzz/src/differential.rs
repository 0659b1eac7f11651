//! netgauze-bgp-pkt as an oracle: an independent codec that must read the same routes from the
//! same bytes. Verdicts are not compared one to one: RFC 7606 makes us accept (and withdraw or
//! discard) what netgauze rejects, and netgauze refuses multicast networks as unicast NLRI.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::nlri::{Ipv4UnicastAddress, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

use crate::bgp::codec::{self, CodecContext, HEADER_LEN};
use crate::bgp::message::{Message, Update};

/// netgauze's strict parse of one framed message.
pub fn netgauze_parse(frame: &[u8], four_octet_as: bool) -> Option<BgpMessage> {
    let mut ctx = BgpParsingContext::default();
    ctx.set_asn4(four_octet_as);
    BgpMessage::parse(&mut SliceReader::new(frame), &mut ctx).ok()
}

/// The prefixes, next hops and communities of an UPDATE, the projection both codecs share.
/// Host bits beyond the prefix length are cleared (we clear them on decode, netgauze keeps
/// them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub withdrawn: Vec<IpNet>,
    pub nlri: Vec<IpNet>,
    pub next_hop: Option<Ipv4Addr>,
    pub mp_reach: Option<(IpAddr, Option<IpAddr>, Vec<IpNet>)>,
    pub mp_unreach: Vec<IpNet>,
    pub communities: Vec<u32>,
}

pub fn ours(u: &Update) -> Routes {
    let a = &u.attributes;
    Routes {
        withdrawn: u.withdrawn.clone(),
        nlri: u.nlri.clone(),
        next_hop: a.next_hop,
        mp_reach: a
            .mp_reach
            .as_ref()
            .map(|r| (r.next_hop, r.link_local_next_hop, r.nlri.clone())),
        mp_unreach: a
            .mp_unreach
            .as_ref()
            .map(|u| u.withdrawn.clone())
            .unwrap_or_default(),
        communities: a.communities.clone(),
    }
}

pub fn theirs(m: &BgpMessage) -> Option<Routes> {
    let BgpMessage::Update(u) = m else {
        return None;
    };
    let v4 = |a: &[Ipv4UnicastAddress]| -> Vec<IpNet> {
        a.iter()
            .map(|p| IpNet::V4(p.network().address().trunc()))
            .collect()
    };
    let v6 = |a: &[Ipv6UnicastAddress]| -> Vec<IpNet> {
        a.iter()
            .map(|p| IpNet::V6(p.network().address().trunc()))
            .collect()
    };
    let mut r = Routes {
        withdrawn: v4(u.withdraw_routes()),
        nlri: v4(u.nlri()),
        ..Routes::default()
    };
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::NextHop(nh) => r.next_hop = Some(nh.next_hop()),
            PathAttributeValue::Communities(c) => {
                r.communities = c.communities().iter().map(|c| c.value()).collect()
            }
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
                next_hop,
                next_hop_local,
                nlri,
            }) => r.mp_reach = Some((*next_hop, next_hop_local.map(IpAddr::V6), v4(nlri))),
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                next_hop_local,
                nlri,
            }) => {
                r.mp_reach = Some((
                    IpAddr::V6(*next_hop_global),
                    next_hop_local.map(IpAddr::V6),
                    v6(nlri),
                ))
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                r.mp_unreach = v4(nlri)
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                r.mp_unreach = v6(nlri)
            }
            _ => {}
        }
    }
    Some(r)
}

/// Decodes `frame` with both codecs; when both accept it as a clean UPDATE, asserts they read
/// the same routes. Returns whether a comparison happened.
pub fn compare_update(frame: &[u8], ctx: &CodecContext) -> bool {
    let Ok(d) = codec::decode(frame, ctx) else {
        return false;
    };
    let Message::Update(u) = &d.message else {
        return false;
    };
    if !d.rfc7606.is_empty() {
        return false;
    }
    let Some(theirs) = netgauze_parse(frame, ctx.four_octet_as)
        .as_ref()
        .and_then(theirs)
    else {
        return false;
    };
    let mine = ours(u);
    assert_eq!(
        (
            &mine.withdrawn,
            &mine.nlri,
            mine.next_hop,
            &mine.communities
        ),
        (
            &theirs.withdrawn,
            &theirs.nlri,
            theirs.next_hop,
            &theirs.communities
        ),
        "{frame:02x?}"
    );
    // netgauze also parses MP families we discard as unsupported: compare when both have one.
    if mine.mp_reach.is_some() && theirs.mp_reach.is_some() {
        assert_eq!(mine.mp_reach, theirs.mp_reach, "{frame:02x?}");
    }
    true
}

/// `differential` target: context byte (as in `harness`), then an UPDATE body.
pub fn differential_update(data: &[u8]) -> bool {
    let Some((&flags, body)) = data.split_first() else {
        return false;
    };
    let ctx = CodecContext {
        four_octet_as: flags & 1 != 0,
        extended_message: flags & 2 != 0,
    };
    if HEADER_LEN + body.len() > ctx.max_message_len() {
        return false;
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&[0xff; 16]);
    frame.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    frame.push(2);
    frame.extend_from_slice(body);
    compare_update(&frame, &ctx)
}
