//! Message → bytes. Lengths are computed before anything is written, so an UPDATE with thousands
//! of NLRI goes straight into the caller's `BytesMut` with one reservation and no temporaries.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use ipnet::IpNet;

use super::wire::{
    MARKER, as_path_segment, attr_flags, attr_type, capability, msg_type, opt_param,
};
use super::{CodecContext, EncodeError, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::bgp::message::{
    AS_TRANS, AsPath, AsPathSegment, Capability, Message, MpReach, MpUnreach, Notification, Open,
    Origin, PathAttributes, RouteRefresh, Update,
};

/// At most 255 ASNs fit in one AS_PATH segment (one-octet count).
const MAX_SEGMENT_ASNS: usize = 255;

pub(super) fn encode(
    msg: &Message,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_message(msg, ctx, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_message(
    msg: &Message,
    ctx: &CodecContext,
    out: &mut BytesMut,
    start: usize,
) -> Result<(), EncodeError> {
    // RFC 8654 §4: OPEN and KEEPALIVE stay within 4096 octets even with extended messages.
    let max = match msg {
        Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
        _ => ctx.max_message_len(),
    };
    if let Message::Update(u) = msg {
        // Known exactly in advance: refuse before writing, and reserve once.
        let len = update_len(u, ctx);
        if len > max {
            return Err(EncodeError::TooLong { len, max });
        }
        out.reserve(len);
    }
    out.put_slice(&MARKER);
    out.put_u16(0); // back-patched below
    match msg {
        Message::Open(open) => {
            out.put_u8(msg_type::OPEN);
            encode_open(open, out)?;
        }
        Message::Update(update) => {
            out.put_u8(msg_type::UPDATE);
            encode_update(update, ctx, out)?;
        }
        Message::Notification(n) => {
            out.put_u8(msg_type::NOTIFICATION);
            encode_notification(n, max, out);
        }
        Message::Keepalive => out.put_u8(msg_type::KEEPALIVE),
        Message::RouteRefresh(rr) => {
            out.put_u8(msg_type::ROUTE_REFRESH);
            encode_route_refresh(rr, out);
        }
    }
    let len = out.len() - start;
    if len > max {
        return Err(EncodeError::TooLong { len, max });
    }
    let len16 = u16::try_from(len).map_err(|_| EncodeError::TooLong { len, max })?;
    out[start + 16..start + 18].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}

fn encode_open(open: &Open, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(open.version);
    out.put_u16(open.my_as);
    out.put_u16(open.hold_time);
    out.put_slice(&open.bgp_identifier.octets());

    let mut caps_len = 0usize;
    for cap in &open.capabilities {
        let value_len = capability_value_len(cap);
        if value_len > usize::from(u8::MAX) {
            return Err(EncodeError::Invalid(
                "capability value longer than 255 octets",
            ));
        }
        caps_len += 2 + value_len;
    }
    if caps_len == 0 {
        out.put_u8(0);
    } else if caps_len + 2 <= usize::from(u8::MAX) {
        // One Capabilities optional parameter holding every capability (RFC 5492 §4).
        out.put_u8((caps_len + 2) as u8);
        out.put_u8(opt_param::CAPABILITIES);
        out.put_u8(caps_len as u8);
        encode_capabilities(&open.capabilities, out);
    } else {
        // RFC 9072 §2: Non-Ext OP Len 255, Non-Ext OP Type 255, then a 2-octet Extended Opt.
        // Parm. Length; every parameter then has a 2-octet length.
        let params_len = caps_len + 3;
        let params_len16 = u16::try_from(params_len)
            .map_err(|_| EncodeError::Invalid("capabilities exceed 65535 octets"))?;
        out.put_u8(u8::MAX);
        out.put_u8(opt_param::EXTENDED_LENGTH);
        out.put_u16(params_len16);
        out.put_u8(opt_param::CAPABILITIES);
        out.put_u16(caps_len as u16);
        encode_capabilities(&open.capabilities, out);
    }
    Ok(())
}

fn capability_value_len(cap: &Capability) -> usize {
    match cap {
        Capability::Multiprotocol(_) => 4,
        Capability::RouteRefresh | Capability::ExtendedMessage => 0,
        Capability::GracefulRestart(gr) => 2 + 4 * gr.families.len(),
        Capability::FourOctetAs(_) => 4,
        Capability::Unknown { value, .. } => value.len(),
    }
}

fn encode_capabilities(caps: &[Capability], out: &mut BytesMut) {
    for cap in caps {
        // Lengths were checked to fit one octet by the caller.
        let len = capability_value_len(cap) as u8;
        match cap {
            Capability::Multiprotocol(family) => {
                out.put_u8(capability::MULTIPROTOCOL);
                out.put_u8(len);
                out.put_u16(family.afi.into());
                out.put_u8(0); // Reserved (RFC 4760 §8)
                out.put_u8(family.safi.into());
            }
            Capability::RouteRefresh => {
                out.put_u8(capability::ROUTE_REFRESH);
                out.put_u8(0);
            }
            Capability::ExtendedMessage => {
                out.put_u8(capability::EXTENDED_MESSAGE);
                out.put_u8(0);
            }
            Capability::GracefulRestart(gr) => {
                out.put_u8(capability::GRACEFUL_RESTART);
                out.put_u8(len);
                // RFC 4724 §3 / RFC 8538 §2: R bit, N bit, 2 reserved bits, 12-bit Restart Time.
                let mut flags_time = gr.restart_time & 0x0fff;
                if gr.restart_state {
                    flags_time |= 0x8000;
                }
                if gr.notification {
                    flags_time |= 0x4000;
                }
                out.put_u16(flags_time);
                for f in &gr.families {
                    out.put_u16(f.family.afi.into());
                    out.put_u8(f.family.safi.into());
                    out.put_u8(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::FourOctetAs(asn) => {
                out.put_u8(capability::FOUR_OCTET_AS);
                out.put_u8(len);
                out.put_u32(*asn);
            }
            Capability::Unknown { code, value } => {
                out.put_u8(*code);
                out.put_u8(len);
                out.put_slice(value);
            }
        }
    }
}

/// The data is cut to fit the message limit: a NOTIFICATION that carries, say, a whole offending
/// message must still be sent, and its diagnostic data is only informative.
fn encode_notification(n: &Notification, max: usize, out: &mut BytesMut) {
    out.put_u8(n.code);
    out.put_u8(n.subcode);
    let room = max.saturating_sub(HEADER_LEN + 2);
    out.put_slice(n.data.get(..room).unwrap_or(&n.data));
}

fn encode_route_refresh(rr: &RouteRefresh, out: &mut BytesMut) {
    out.put_u16(rr.family.afi.into());
    out.put_u8(0); // Reserved (RFC 2918 §3); subtype 0 in RFC 7313 terms
    out.put_u8(rr.family.safi.into());
}

/// Octets one prefix takes in an NLRI or withdrawn routes field (RFC 4271 §4.3).
pub fn nlri_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

fn prefixes_len(prefixes: &[IpNet]) -> usize {
    prefixes.iter().map(nlri_len).sum()
}

/// Octets of a whole UPDATE message, header included, as `encode` would write it.
pub fn update_len(update: &Update, ctx: &CodecContext) -> usize {
    HEADER_LEN
        + 2
        + prefixes_len(&update.withdrawn)
        + 2
        + path_attributes_len(&update.attributes, ctx)
        + prefixes_len(&update.nlri)
}

/// Octets of the path attributes field as `encode` would write it.
pub fn path_attributes_len(a: &PathAttributes, ctx: &CodecContext) -> usize {
    let mut len = 0;
    if let Some(r) = &a.mp_reach {
        len += attr_len(mp_reach_value_len(r));
    }
    if let Some(u) = &a.mp_unreach {
        len += attr_len(3 + prefixes_len(&u.withdrawn));
    }
    if a.origin.is_some() {
        len += attr_len(1);
    }
    if let Some(path) = &a.as_path {
        let asn_len = if ctx.four_octet_as { 4 } else { 2 };
        len += attr_len(as_path_value_len(path, asn_len));
        if needs_as4_path(a, ctx) {
            len += attr_len(as_path_value_len(path, 4));
        }
    }
    if a.next_hop.is_some() {
        len += attr_len(4);
    }
    if a.med.is_some() {
        len += attr_len(4);
    }
    if a.local_pref.is_some() {
        len += attr_len(4);
    }
    if !a.communities.is_empty() {
        len += attr_len(4 * a.communities.len());
    }
    if !a.large_communities.is_empty() {
        len += attr_len(12 * a.large_communities.len());
    }
    for raw in &a.other {
        let ext = raw.value.len() > 255 || raw.flags & attr_flags::EXTENDED_LENGTH != 0;
        len += if ext { 4 } else { 3 } + raw.value.len();
    }
    len
}

/// Header plus value, with the extended-length header when the value exceeds 255 octets.
fn attr_len(value_len: usize) -> usize {
    if value_len > 255 {
        4 + value_len
    } else {
        3 + value_len
    }
}

fn mp_reach_value_len(r: &MpReach) -> usize {
    3 + 1 + next_hop_len(r) + 1 + prefixes_len(&r.nlri)
}

fn next_hop_len(r: &MpReach) -> usize {
    let global = match r.next_hop {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    };
    global
        + if r.link_local_next_hop.is_some() {
            16
        } else {
            0
        }
}

fn as_path_value_len(path: &AsPath, asn_len: usize) -> usize {
    path.segments
        .iter()
        .map(|s| {
            let n = segment_asns(s).len();
            // Long sequences are split into several segments of at most 255 ASNs.
            n.div_ceil(MAX_SEGMENT_ASNS) * 2 + n * asn_len
        })
        .sum()
}

fn segment_asns(s: &AsPathSegment) -> &[u32] {
    match s {
        AsPathSegment::Set(v) | AsPathSegment::Sequence(v) => v,
    }
}

/// RFC 6793 §4.2.2: towards an OLD speaker, ASNs that do not fit two octets become AS_TRANS in
/// AS_PATH and the real path travels in AS4_PATH (unless the caller already supplies one).
fn needs_as4_path(a: &PathAttributes, ctx: &CodecContext) -> bool {
    !ctx.four_octet_as
        && a.as_path.as_ref().is_some_and(|p| {
            p.segments
                .iter()
                .any(|s| segment_asns(s).iter().any(|&asn| asn > u32::from(u16::MAX)))
        })
        && !a.other.iter().any(|r| r.type_code == attr_type::AS4_PATH)
}

fn put_attr_header(out: &mut BytesMut, flags: u8, type_code: u8, value_len: usize) {
    if value_len > 255 {
        out.put_u8(flags | attr_flags::EXTENDED_LENGTH);
        out.put_u8(type_code);
        // The whole message was checked to fit 65535 octets before writing.
        out.put_u16(value_len as u16);
    } else {
        out.put_u8(flags & !attr_flags::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u8(value_len as u8);
    }
}

fn encode_update(u: &Update, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), EncodeError> {
    // Sizes up to 65535 were checked by the caller, so the u16 casts below cannot truncate.
    out.put_u16(prefixes_len(&u.withdrawn) as u16);
    put_prefixes(&u.withdrawn, Some(false), out)
        .map_err(|()| EncodeError::Invalid("IPv6 prefix in the IPv4 withdrawn routes field"))?;
    out.put_u16(path_attributes_len(&u.attributes, ctx) as u16);
    encode_attributes(&u.attributes, ctx, out)?;
    put_prefixes(&u.nlri, Some(false), out)
        .map_err(|()| EncodeError::Invalid("IPv6 prefix in the IPv4 NLRI field"))?;
    Ok(())
}

/// Writes prefixes (RFC 4271 §4.3: length in bits, then the fewest octets that hold it, host bits
/// cleared). With `want_v6 = Some(x)`, a prefix of the other family is an error.
fn put_prefixes(prefixes: &[IpNet], want_v6: Option<bool>, out: &mut BytesMut) -> Result<(), ()> {
    for p in prefixes {
        let nbytes = usize::from(p.prefix_len()).div_ceil(8);
        match p.trunc() {
            IpNet::V4(n) => {
                if want_v6 == Some(true) {
                    return Err(());
                }
                out.put_u8(n.prefix_len());
                out.put_slice(&n.network().octets()[..nbytes]);
            }
            IpNet::V6(n) => {
                if want_v6 == Some(false) {
                    return Err(());
                }
                out.put_u8(n.prefix_len());
                out.put_slice(&n.network().octets()[..nbytes]);
            }
        }
    }
    Ok(())
}

fn encode_attributes(
    a: &PathAttributes,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    // RFC 7606 §5.1: MP_REACH_NLRI / MP_UNREACH_NLRI go first so that a receiver can locate the
    // NLRI even if a later attribute is malformed.
    if let Some(r) = &a.mp_reach {
        encode_mp_reach(r, out)?;
    }
    if let Some(u) = &a.mp_unreach {
        encode_mp_unreach(u, out)?;
    }
    if let Some(origin) = a.origin {
        put_attr_header(out, attr_flags::WELL_KNOWN, attr_type::ORIGIN, 1);
        out.put_u8(match origin {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        });
    }
    if let Some(path) = &a.as_path {
        let asn_len = if ctx.four_octet_as { 4 } else { 2 };
        put_attr_header(
            out,
            attr_flags::WELL_KNOWN,
            attr_type::AS_PATH,
            as_path_value_len(path, asn_len),
        );
        put_as_path(path, ctx.four_octet_as, out)?;
        if needs_as4_path(a, ctx) {
            put_attr_header(
                out,
                attr_flags::OPTIONAL_TRANSITIVE,
                attr_type::AS4_PATH,
                as_path_value_len(path, 4),
            );
            put_as_path(path, true, out)?;
        }
    }
    if let Some(nh) = a.next_hop {
        put_attr_header(out, attr_flags::WELL_KNOWN, attr_type::NEXT_HOP, 4);
        out.put_slice(&nh.octets());
    }
    if let Some(med) = a.med {
        put_attr_header(
            out,
            attr_flags::OPTIONAL_NON_TRANSITIVE,
            attr_type::MULTI_EXIT_DISC,
            4,
        );
        out.put_u32(med);
    }
    if let Some(lp) = a.local_pref {
        put_attr_header(out, attr_flags::WELL_KNOWN, attr_type::LOCAL_PREF, 4);
        out.put_u32(lp);
    }
    if !a.communities.is_empty() {
        put_attr_header(
            out,
            attr_flags::OPTIONAL_TRANSITIVE,
            attr_type::COMMUNITIES,
            4 * a.communities.len(),
        );
        for c in &a.communities {
            out.put_u32(*c);
        }
    }
    if !a.large_communities.is_empty() {
        put_attr_header(
            out,
            attr_flags::OPTIONAL_TRANSITIVE,
            attr_type::LARGE_COMMUNITY,
            12 * a.large_communities.len(),
        );
        for c in &a.large_communities {
            out.put_u32(c.global_admin);
            out.put_u32(c.local_data_1);
            out.put_u32(c.local_data_2);
        }
    }
    for raw in &a.other {
        // Flags as received (Partial included); the extended-length bit is kept if it was set,
        // and forced when the value needs it.
        if raw.value.len() > 255 || raw.flags & attr_flags::EXTENDED_LENGTH != 0 {
            out.put_u8(raw.flags | attr_flags::EXTENDED_LENGTH);
            out.put_u8(raw.type_code);
            out.put_u16(raw.value.len() as u16);
        } else {
            out.put_u8(raw.flags);
            out.put_u8(raw.type_code);
            out.put_u8(raw.value.len() as u8);
        }
        out.put_slice(&raw.value);
    }
    Ok(())
}

fn put_as_path(path: &AsPath, four_octet: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    for seg in &path.segments {
        let (seg_type, asns) = match seg {
            AsPathSegment::Set(v) => (as_path_segment::AS_SET, v),
            AsPathSegment::Sequence(v) => (as_path_segment::AS_SEQUENCE, v),
        };
        if seg_type == as_path_segment::AS_SET && asns.len() > MAX_SEGMENT_ASNS {
            return Err(EncodeError::Invalid("AS_SET with more than 255 ASNs"));
        }
        for chunk in asns.chunks(MAX_SEGMENT_ASNS) {
            out.put_u8(seg_type);
            out.put_u8(chunk.len() as u8);
            for &asn in chunk {
                if four_octet {
                    out.put_u32(asn);
                } else {
                    out.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
                }
            }
        }
    }
    Ok(())
}

fn encode_mp_reach(r: &MpReach, out: &mut BytesMut) -> Result<(), EncodeError> {
    put_attr_header(
        out,
        attr_flags::OPTIONAL_NON_TRANSITIVE,
        attr_type::MP_REACH_NLRI,
        mp_reach_value_len(r),
    );
    out.put_u16(r.family.afi.into());
    out.put_u8(r.family.safi.into());
    out.put_u8(next_hop_len(r) as u8);
    match r.next_hop {
        IpAddr::V4(a) => out.put_slice(&a.octets()),
        IpAddr::V6(a) => out.put_slice(&a.octets()),
    }
    match r.link_local_next_hop {
        None => {}
        // RFC 2545 §3: global then link-local, 32 octets in all.
        Some(IpAddr::V6(ll)) if r.next_hop.is_ipv6() => out.put_slice(&ll.octets()),
        Some(_) => {
            return Err(EncodeError::Invalid(
                "link-local next hop must be IPv6 and follow an IPv6 global next hop",
            ));
        }
    }
    out.put_u8(0); // Reserved (RFC 4760 §3)
    put_prefixes(&r.nlri, family_wants_v6(r.family.afi), out)
        .map_err(|()| EncodeError::Invalid("MP_REACH_NLRI prefix does not match the AFI"))
}

fn encode_mp_unreach(u: &MpUnreach, out: &mut BytesMut) -> Result<(), EncodeError> {
    put_attr_header(
        out,
        attr_flags::OPTIONAL_NON_TRANSITIVE,
        attr_type::MP_UNREACH_NLRI,
        3 + prefixes_len(&u.withdrawn),
    );
    out.put_u16(u.family.afi.into());
    out.put_u8(u.family.safi.into());
    put_prefixes(&u.withdrawn, family_wants_v6(u.family.afi), out)
        .map_err(|()| EncodeError::Invalid("MP_UNREACH_NLRI prefix does not match the AFI"))
}

fn family_wants_v6(afi: crate::bgp::message::Afi) -> Option<bool> {
    match afi {
        crate::bgp::message::Afi::Ipv4 => Some(false),
        crate::bgp::message::Afi::Ipv6 => Some(true),
        crate::bgp::message::Afi::Other(_) => None,
    }
}
