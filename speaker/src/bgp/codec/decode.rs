//! Bytes → message. Every read is bounds-checked through [`Reader`]; malformed input becomes the
//! NOTIFICATION RFC 4271 §6 (as revised by RFC 7606 for UPDATEs) prescribes, never a panic.
//!
//! UPDATE errors, by RFC 7606 outcome:
//!
//! | error | outcome |
//! | --- | --- |
//! | withdrawn / attribute length overruns the message | reset 3/1 |
//! | NLRI or withdrawn prefix malformed (IPv4 field or MP_*) | reset 3/10 |
//! | MP_REACH/MP_UNREACH twice | reset 3/1 |
//! | MP_* flags wrong / length overruns / too short to locate NLRI | reset 3/4, 3/5, 3/9 + attribute |
//! | unrecognized well-known attribute | reset 3/2 + attribute |
//! | ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES, LARGE_COMMUNITY, ORIGINATOR_ID, CLUSTER_LIST malformed (flags, length, value) | treat-as-withdraw |
//! | attribute overruns the path attributes field (§4) | treat-as-withdraw |
//! | MP_REACH next hop length unexpected (§7.11) | treat-as-withdraw |
//! | well-known mandatory attribute missing while NLRI present (§3 d) | treat-as-withdraw |
//! | ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR malformed | attribute discard |
//! | any other attribute repeated (§3 g) | later copies discarded |
//! | MP_* of a family this codec does not parse | attribute discard |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::helpers::notif;
use super::wire::{
    AFI_IPV4, AFI_IPV6, BGP_VERSION, MARKER, SAFI_UNICAST, as_path_segment, attr_flags, attr_type,
    capability, msg_type, opt_param,
};
use super::{
    AttributeError, CodecContext, DecodeError, Decoded, HEADER_LEN, MAX_MESSAGE_LEN, Rfc7606,
};
use crate::bgp::message::{
    AddressFamily, AsPath, AsPathSegment, Capability, GracefulRestartCap, GracefulRestartFamily,
    LargeCommunity, Message, MpReach, MpUnreach, Notification, Open, Origin, PathAttributes,
    RawAttribute, RouteRefresh, Update,
};

/// A cursor over a byte slice whose reads return `None` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

fn err(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> DecodeError {
    DecodeError::new(code, subcode, data)
}

/// RFC 4271 §6.1: Bad Message Length carries the erroneous Length field.
fn bad_length(len: u16) -> DecodeError {
    err(
        notif::MESSAGE_HEADER_ERROR,
        notif::BAD_MESSAGE_LENGTH,
        len.to_be_bytes(),
    )
}

pub(super) fn frame_len(buf: &[u8], ctx: &CodecContext) -> Result<Option<usize>, DecodeError> {
    // Check whatever part of the marker has arrived, so garbage is refused early.
    let marker_seen = buf.len().min(MARKER.len());
    if buf.get(..marker_seen) != MARKER.get(..marker_seen) {
        return Err(err(
            notif::MESSAGE_HEADER_ERROR,
            notif::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    let Some(len_bytes) = buf.get(16..18) else {
        return Ok(None);
    };
    let len16 = u16::from_be_bytes([len_bytes[0], len_bytes[1]]);
    let len = usize::from(len16);
    if !(HEADER_LEN..=ctx.max_message_len()).contains(&len) {
        return Err(bad_length(len16));
    }
    Ok(if buf.len() >= len { Some(len) } else { None })
}

pub(super) fn decode(frame: &[u8], ctx: &CodecContext) -> Result<Decoded, DecodeError> {
    let Some(len) = frame_len(frame, ctx)? else {
        // A partial frame: the length field promises more than was handed over.
        let len16 = frame
            .get(16..18)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        return Err(bad_length(len16));
    };
    let len16 = len as u16; // len <= 65535 checked by frame_len
    let mut r = Reader::new(frame.get(..len).unwrap_or_default());
    let _header = r.take(18);
    let Some(msg_type) = r.u8() else {
        return Err(bad_length(len16));
    };
    let body = r.rest();
    let mut rfc7606 = Vec::new();
    let message = match msg_type {
        msg_type::OPEN => {
            // RFC 8654 §4: the OPEN stays within 4096 octets; 29 is its minimum (RFC 4271 §4.2).
            if !(29..=MAX_MESSAGE_LEN).contains(&len) {
                return Err(bad_length(len16));
            }
            Message::Open(decode_open(body, len16)?)
        }
        msg_type::UPDATE => {
            if len < 23 {
                return Err(bad_length(len16));
            }
            Message::Update(decode_update(body, ctx, &mut rfc7606)?)
        }
        msg_type::NOTIFICATION => {
            if len < 21 {
                return Err(bad_length(len16));
            }
            let mut r = Reader::new(body);
            let code = r.u8().unwrap_or_default();
            let subcode = r.u8().unwrap_or_default();
            Message::Notification(Notification {
                code,
                subcode,
                data: r.rest().to_vec(),
            })
        }
        msg_type::KEEPALIVE => {
            if len != HEADER_LEN {
                return Err(bad_length(len16));
            }
            Message::Keepalive
        }
        msg_type::ROUTE_REFRESH => {
            if len != HEADER_LEN + 4 {
                // RFC 7313 §5: for the demarcation subtypes the error has its own code and
                // carries the whole message; otherwise it is a plain header length error.
                if matches!(body.get(2), Some(1 | 2)) {
                    return Err(err(
                        notif::ROUTE_REFRESH_MESSAGE_ERROR,
                        notif::INVALID_MESSAGE_LENGTH,
                        frame.get(..len).unwrap_or_default(),
                    ));
                }
                return Err(bad_length(len16));
            }
            let mut r = Reader::new(body);
            let afi = r.u16().unwrap_or_default();
            let _reserved = r.u8();
            let safi = r.u8().unwrap_or_default();
            Message::RouteRefresh(RouteRefresh {
                family: AddressFamily {
                    afi: afi.into(),
                    safi: safi.into(),
                },
            })
        }
        other => {
            return Err(err(
                notif::MESSAGE_HEADER_ERROR,
                notif::BAD_MESSAGE_TYPE,
                [other],
            ));
        }
    };
    Ok(Decoded { message, rfc7606 })
}

// ----------------------------------------------------------------------------------------------
// OPEN

fn open_err(subcode: u8, data: impl Into<Vec<u8>>) -> DecodeError {
    err(notif::OPEN_MESSAGE_ERROR, subcode, data)
}

fn decode_open(body: &[u8], len16: u16) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body);
    // The caller checked the 10 fixed octets are present.
    let short = || bad_length(len16);
    let version = r.u8().ok_or_else(short)?;
    if version != BGP_VERSION {
        // RFC 4271 §6.2: data is the largest locally supported version, as 2 octets.
        return Err(open_err(
            notif::UNSUPPORTED_VERSION_NUMBER,
            u16::from(BGP_VERSION).to_be_bytes(),
        ));
    }
    let my_as = r.u16().ok_or_else(short)?;
    let hold_time = r.u16().ok_or_else(short)?;
    let bgp_identifier = Ipv4Addr::from(r.u32().ok_or_else(short)?);
    let opt_len = r.u8().ok_or_else(short)?;

    // RFC 7607: AS 0 is never a valid peer AS.
    if my_as == 0 {
        return Err(open_err(notif::BAD_PEER_AS, Vec::new()));
    }
    // RFC 4271 §6.2: a Hold Time of one or two seconds is unacceptable.
    if hold_time == 1 || hold_time == 2 {
        return Err(open_err(notif::UNACCEPTABLE_HOLD_TIME, Vec::new()));
    }
    // RFC 6286 §2.2: the BGP Identifier is any non-zero 32-bit value.
    if bgp_identifier.is_unspecified() {
        return Err(open_err(notif::BAD_BGP_IDENTIFIER, Vec::new()));
    }

    let rest = r.rest();
    // RFC 9072 §2: Non-Ext OP Len 255 followed by Non-Ext OP Type 255 switches to 2-octet
    // lengths for the parameters field and for each parameter.
    let extended = opt_len == u8::MAX && rest.first() == Some(&opt_param::EXTENDED_LENGTH);
    let params = if extended {
        let mut r = Reader::new(rest);
        let _marker = r.u8();
        let ext_len = r.u16().ok_or_else(short)?;
        let params = r.take(usize::from(ext_len)).ok_or_else(short)?;
        if !r.is_empty() {
            return Err(short());
        }
        params
    } else {
        if rest.len() != usize::from(opt_len) {
            return Err(short());
        }
        rest
    };

    let mut capabilities = Vec::new();
    let mut r = Reader::new(params);
    while !r.is_empty() {
        let param_type = r.u8().ok_or_else(short)?;
        let param_len = if extended {
            r.u16().map(usize::from)
        } else {
            r.u8().map(usize::from)
        }
        .ok_or_else(short)?;
        let value = r.take(param_len).ok_or_else(short)?;
        if param_type != opt_param::CAPABILITIES {
            // RFC 4271 §6.2; the deprecated Authentication parameter (type 1) lands here too.
            return Err(open_err(notif::UNSUPPORTED_OPTIONAL_PARAMETER, Vec::new()));
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_identifier,
        capabilities,
    })
}

fn decode_capabilities(value: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    // RFC 5492 does not name a subcode for a malformed capability: OPEN error, unspecific.
    let malformed = || open_err(notif::UNSPECIFIC, Vec::new());
    let mut r = Reader::new(value);
    while !r.is_empty() {
        let code = r.u8().ok_or_else(malformed)?;
        let len = r.u8().ok_or_else(malformed)?;
        let v = r.take(usize::from(len)).ok_or_else(malformed)?;
        let mut cr = Reader::new(v);
        let cap = match code {
            capability::MULTIPROTOCOL => {
                if len != 4 {
                    return Err(malformed());
                }
                let afi = cr.u16().ok_or_else(malformed)?;
                let _reserved = cr.u8();
                let safi = cr.u8().ok_or_else(malformed)?;
                Capability::Multiprotocol(AddressFamily {
                    afi: afi.into(),
                    safi: safi.into(),
                })
            }
            capability::ROUTE_REFRESH if len == 0 => Capability::RouteRefresh,
            capability::EXTENDED_MESSAGE if len == 0 => Capability::ExtendedMessage,
            capability::ROUTE_REFRESH | capability::EXTENDED_MESSAGE => return Err(malformed()),
            capability::GRACEFUL_RESTART => {
                if len < 2 || (len - 2) % 4 != 0 {
                    return Err(malformed());
                }
                let flags_time = cr.u16().ok_or_else(malformed)?;
                let mut families = Vec::new();
                while !cr.is_empty() {
                    let afi = cr.u16().ok_or_else(malformed)?;
                    let safi = cr.u8().ok_or_else(malformed)?;
                    let flags = cr.u8().ok_or_else(malformed)?;
                    families.push(GracefulRestartFamily {
                        family: AddressFamily {
                            afi: afi.into(),
                            safi: safi.into(),
                        },
                        forwarding_preserved: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestartCap {
                    restart_state: flags_time & 0x8000 != 0,
                    notification: flags_time & 0x4000 != 0,
                    restart_time: flags_time & 0x0fff,
                    families,
                })
            }
            capability::FOUR_OCTET_AS => {
                if len != 4 {
                    return Err(malformed());
                }
                let asn = cr.u32().ok_or_else(malformed)?;
                // RFC 7607 §2: AS 0 in the capability is a Bad Peer AS too.
                if asn == 0 {
                    return Err(open_err(notif::BAD_PEER_AS, Vec::new()));
                }
                Capability::FourOctetAs(asn)
            }
            code => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// UPDATE

fn update_err(subcode: u8, data: impl Into<Vec<u8>>) -> DecodeError {
    err(notif::UPDATE_MESSAGE_ERROR, subcode, data)
}

/// What RFC 7606 says to do when an attribute of this type is malformed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnMalformed {
    Withdraw,
    Discard,
    /// MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 7606 §7.11): the NLRI cannot be trusted.
    Reset,
}

fn on_malformed(type_code: u8) -> OnMalformed {
    match type_code {
        // RFC 7606 §7.4, §7.5, RFC 6793 §6.
        attr_type::ATOMIC_AGGREGATE
        | attr_type::AGGREGATOR
        | attr_type::AS4_PATH
        | attr_type::AS4_AGGREGATOR => OnMalformed::Discard,
        attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI => OnMalformed::Reset,
        _ => OnMalformed::Withdraw,
    }
}

/// The Optional and Transitive bits an attribute must carry, for the types that are recognized.
fn expected_flags(type_code: u8) -> Option<u8> {
    Some(match type_code {
        attr_type::ORIGIN
        | attr_type::AS_PATH
        | attr_type::NEXT_HOP
        | attr_type::LOCAL_PREF
        | attr_type::ATOMIC_AGGREGATE => attr_flags::WELL_KNOWN,
        attr_type::MULTI_EXIT_DISC
        | attr_type::ORIGINATOR_ID
        | attr_type::CLUSTER_LIST
        | attr_type::MP_REACH_NLRI
        | attr_type::MP_UNREACH_NLRI => attr_flags::OPTIONAL_NON_TRANSITIVE,
        attr_type::AGGREGATOR
        | attr_type::COMMUNITIES
        | attr_type::AS4_PATH
        | attr_type::AS4_AGGREGATOR
        | attr_type::LARGE_COMMUNITY => attr_flags::OPTIONAL_TRANSITIVE,
        _ => return None,
    })
}

fn decode_update(
    body: &[u8],
    ctx: &CodecContext,
    outcomes: &mut Vec<Rfc7606>,
) -> Result<Update, DecodeError> {
    let malformed_list = || update_err(notif::MALFORMED_ATTRIBUTE_LIST, Vec::new());
    let mut r = Reader::new(body);
    // RFC 4271 §6.3: lengths that overrun the message are a Malformed Attribute List.
    let withdrawn_len = r.u16().ok_or_else(malformed_list)?;
    let withdrawn_bytes = r
        .take(usize::from(withdrawn_len))
        .ok_or_else(malformed_list)?;
    let attrs_len = r.u16().ok_or_else(malformed_list)?;
    let attr_bytes = r.take(usize::from(attrs_len)).ok_or_else(malformed_list)?;
    let nlri_bytes = r.rest();

    // RFC 7606 §5.3: NLRI that cannot be parsed reset the session (Invalid Network Field).
    let invalid_network = || update_err(notif::INVALID_NETWORK_FIELD, Vec::new());
    let mut withdrawn = Vec::new();
    parse_prefixes(withdrawn_bytes, false, &mut withdrawn).map_err(|()| invalid_network())?;
    let mut nlri = Vec::new();
    parse_prefixes(nlri_bytes, false, &mut nlri).map_err(|()| invalid_network())?;

    let attributes = decode_attributes(attr_bytes, ctx, !nlri.is_empty(), outcomes)?;
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

/// Parses an NLRI / withdrawn routes field (RFC 4271 §4.3, RFC 4760 §5) into `out`, clearing
/// host bits beyond the prefix length.
fn parse_prefixes(buf: &[u8], v6: bool, out: &mut Vec<IpNet>) -> Result<(), ()> {
    let max_len = if v6 { 128 } else { 32 };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let plen = r.u8().ok_or(())?;
        if plen > max_len {
            return Err(());
        }
        let bytes = r.take(usize::from(plen).div_ceil(8)).ok_or(())?;
        let prefix = if v6 {
            let mut octets = [0u8; 16];
            octets
                .get_mut(..bytes.len())
                .ok_or(())?
                .copy_from_slice(bytes);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(octets), plen)
                    .map_err(|_| ())?
                    .trunc(),
            )
        } else {
            let mut octets = [0u8; 4];
            octets
                .get_mut(..bytes.len())
                .ok_or(())?
                .copy_from_slice(bytes);
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(octets), plen)
                    .map_err(|_| ())?
                    .trunc(),
            )
        };
        out.push(prefix);
    }
    Ok(())
}

/// 256-bit set of attribute type codes seen so far.
#[derive(Default)]
struct TypeSet([u64; 4]);

impl TypeSet {
    /// Inserts `t`, returning whether it was already present.
    fn insert(&mut self, t: u8) -> bool {
        let (word, bit) = (usize::from(t / 64), t % 64);
        let Some(w) = self.0.get_mut(word) else {
            return false;
        };
        let present = *w & (1 << bit) != 0;
        *w |= 1 << bit;
        present
    }
    fn contains(&self, t: u8) -> bool {
        self.0
            .get(usize::from(t / 64))
            .is_some_and(|w| w & (1 << (t % 64)) != 0)
    }
}

fn decode_attributes(
    buf: &[u8],
    ctx: &CodecContext,
    has_ipv4_nlri: bool,
    outcomes: &mut Vec<Rfc7606>,
) -> Result<PathAttributes, DecodeError> {
    let mut attrs = PathAttributes::default();
    let mut seen = TypeSet::default();
    let mut as4_path: Option<AsPath> = None;
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let at_start = r.buf;
        let header = (|| {
            let flags = r.u8()?;
            let type_code = r.u8()?;
            let len = if flags & attr_flags::EXTENDED_LENGTH != 0 {
                r.u16()?
            } else {
                u16::from(r.u8()?)
            };
            Some((flags, type_code, len))
        })();
        let Some((flags, type_code, len)) = header else {
            // RFC 7606 §4: too few octets left for an attribute header.
            outcomes.push(Rfc7606::Withdraw {
                attribute: 0,
                reason: AttributeError::Overrun,
            });
            break;
        };
        let Some(value) = r.take(usize::from(len)) else {
            // RFC 7606 §4: the attribute length overruns; MP_* overrunning means the NLRI
            // cannot be located, which resets the session (§7.11).
            if on_malformed(type_code) == OnMalformed::Reset {
                return Err(update_err(notif::ATTRIBUTE_LENGTH_ERROR, at_start));
            }
            outcomes.push(Rfc7606::Withdraw {
                attribute: type_code,
                reason: AttributeError::Overrun,
            });
            break;
        };
        let whole = at_start
            .get(..at_start.len() - r.remaining())
            .unwrap_or_default();

        if seen.insert(type_code) {
            // RFC 7606 §3(g).
            if matches!(
                type_code,
                attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI
            ) {
                return Err(update_err(notif::MALFORMED_ATTRIBUTE_LIST, Vec::new()));
            }
            outcomes.push(Rfc7606::Discard {
                attribute: type_code,
                reason: AttributeError::Duplicate,
            });
            continue;
        }

        let Some(expected) = expected_flags(type_code) else {
            if flags & attr_flags::OPTIONAL == 0 {
                // RFC 4271 §6.3: an unrecognized well-known attribute resets the session.
                return Err(update_err(notif::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, whole));
            }
            // Unrecognized optional attributes are kept as received (RFC 4271 §5).
            attrs.other.push(RawAttribute {
                flags,
                type_code,
                value: value.to_vec(),
            });
            continue;
        };

        // RFC 7606 §3(c): Optional/Transitive bits must match the definition.
        if flags & attr_flags::OPTIONAL_TRANSITIVE != expected {
            fail(outcomes, type_code, AttributeError::FlagsConflict, whole)?;
            continue;
        }
        let mut vr = Reader::new(value);
        let bad_len = AttributeError::BadLength(len);
        match type_code {
            attr_type::ORIGIN => match (len, vr.u8()) {
                (1, Some(v @ 0..=2)) => {
                    attrs.origin = Some(match v {
                        0 => Origin::Igp,
                        1 => Origin::Egp,
                        _ => Origin::Incomplete,
                    })
                }
                (1, Some(v)) => fail(outcomes, type_code, AttributeError::InvalidOrigin(v), whole)?,
                _ => fail(outcomes, type_code, bad_len, whole)?,
            },
            attr_type::AS_PATH => match parse_as_path(value, ctx.four_octet_as) {
                Ok(p) => attrs.as_path = Some(p),
                Err(e) => fail(outcomes, type_code, e, whole)?,
            },
            attr_type::AS4_PATH => {
                if ctx.four_octet_as {
                    fail(
                        outcomes,
                        type_code,
                        AttributeError::UnexpectedAs4Attribute,
                        whole,
                    )?;
                } else {
                    match parse_as_path(value, true) {
                        Ok(p) => as4_path = Some(p),
                        Err(e) => fail(outcomes, type_code, e, whole)?,
                    }
                }
            }
            attr_type::NEXT_HOP => match (len, vr.u32()) {
                (4, Some(v)) => {
                    let nh = Ipv4Addr::from(v);
                    // RFC 4271 §6.3 semantic check; RFC 7606 §7.3 makes it treat-as-withdraw.
                    if nh.is_unspecified() || nh.is_broadcast() || nh.is_multicast() {
                        fail(outcomes, type_code, AttributeError::InvalidNextHop, whole)?;
                    } else {
                        attrs.next_hop = Some(nh);
                    }
                }
                _ => fail(outcomes, type_code, bad_len, whole)?,
            },
            attr_type::MULTI_EXIT_DISC => match (len, vr.u32()) {
                (4, Some(v)) => attrs.med = Some(v),
                _ => fail(outcomes, type_code, bad_len, whole)?,
            },
            attr_type::LOCAL_PREF => match (len, vr.u32()) {
                (4, Some(v)) => attrs.local_pref = Some(v),
                _ => fail(outcomes, type_code, bad_len, whole)?,
            },
            attr_type::COMMUNITIES => {
                if len == 0 || len % 4 != 0 {
                    fail(outcomes, type_code, bad_len, whole)?;
                } else {
                    attrs.communities = value
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                }
            }
            attr_type::LARGE_COMMUNITY => {
                // RFC 8092 §5: a length that is not a non-zero multiple of 12 is malformed.
                if len == 0 || len % 12 != 0 {
                    fail(outcomes, type_code, bad_len, whole)?;
                } else {
                    attrs.large_communities = value
                        .chunks_exact(12)
                        .map(|c| {
                            let w =
                                |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                            LargeCommunity {
                                global_admin: w(0),
                                local_data_1: w(4),
                                local_data_2: w(8),
                            }
                        })
                        .collect();
                }
            }
            attr_type::ATOMIC_AGGREGATE
            | attr_type::AGGREGATOR
            | attr_type::AS4_AGGREGATOR
            | attr_type::ORIGINATOR_ID
            | attr_type::CLUSTER_LIST => {
                let ok = match type_code {
                    attr_type::ATOMIC_AGGREGATE => len == 0,
                    attr_type::AGGREGATOR => len == if ctx.four_octet_as { 8 } else { 6 },
                    attr_type::AS4_AGGREGATOR => len == 8,
                    attr_type::ORIGINATOR_ID => len == 4,
                    _ => len != 0 && len % 4 == 0,
                };
                if type_code == attr_type::AS4_AGGREGATOR && ctx.four_octet_as {
                    fail(
                        outcomes,
                        type_code,
                        AttributeError::UnexpectedAs4Attribute,
                        whole,
                    )?;
                } else if ok {
                    // Recognized and valid, but not modelled: kept as raw bytes.
                    attrs.other.push(RawAttribute {
                        flags,
                        type_code,
                        value: value.to_vec(),
                    });
                } else {
                    fail(outcomes, type_code, bad_len, whole)?;
                }
            }
            attr_type::MP_REACH_NLRI => decode_mp_reach(value, whole, &mut attrs, outcomes)?,
            attr_type::MP_UNREACH_NLRI => decode_mp_unreach(value, whole, &mut attrs, outcomes)?,
            _ => {}
        }
    }

    if let (Some(path), Some(as4)) = (&attrs.as_path, as4_path) {
        attrs.as_path = Some(merge_as4_path(path, as4));
    }

    // RFC 7606 §3(d): missing well-known mandatory attributes when there are routes to use.
    let announces = has_ipv4_nlri || attrs.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
    if announces {
        let mut require = |t: u8| {
            if !seen.contains(t) {
                outcomes.push(Rfc7606::Withdraw {
                    attribute: t,
                    reason: AttributeError::Missing,
                });
            }
        };
        require(attr_type::ORIGIN);
        require(attr_type::AS_PATH);
        // RFC 4760 §3: NEXT_HOP is only needed for NLRI in the UPDATE's own NLRI field.
        if has_ipv4_nlri {
            require(attr_type::NEXT_HOP);
        }
    }
    Ok(attrs)
}

/// Applies RFC 7606's handling for a malformed attribute of `type_code`.
fn fail(
    outcomes: &mut Vec<Rfc7606>,
    type_code: u8,
    reason: AttributeError,
    whole: &[u8],
) -> Result<(), DecodeError> {
    match on_malformed(type_code) {
        OnMalformed::Withdraw => outcomes.push(Rfc7606::Withdraw {
            attribute: type_code,
            reason,
        }),
        OnMalformed::Discard => outcomes.push(Rfc7606::Discard {
            attribute: type_code,
            reason,
        }),
        // Only MP_REACH_NLRI / MP_UNREACH_NLRI get here, and only for a flags conflict.
        OnMalformed::Reset => {
            return Err(update_err(notif::ATTRIBUTE_FLAGS_ERROR, whole));
        }
    }
    Ok(())
}

fn decode_mp_reach(
    value: &[u8],
    whole: &[u8],
    attrs: &mut PathAttributes,
    outcomes: &mut Vec<Rfc7606>,
) -> Result<(), DecodeError> {
    let optional_error = || update_err(notif::OPTIONAL_ATTRIBUTE_ERROR, whole);
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(optional_error)?;
    let safi = r.u8().ok_or_else(optional_error)?;
    let nh_len = r.u8().ok_or_else(optional_error)?;
    let nh = r.take(usize::from(nh_len)).ok_or_else(optional_error)?;
    let _reserved = r.u8().ok_or_else(optional_error)?;
    let nlri_bytes = r.rest();
    let family = AddressFamily {
        afi: afi.into(),
        safi: safi.into(),
    };
    let v6 = match (afi, safi) {
        (AFI_IPV4, SAFI_UNICAST) => false,
        (AFI_IPV6, SAFI_UNICAST) => true,
        _ => {
            outcomes.push(Rfc7606::Discard {
                attribute: attr_type::MP_REACH_NLRI,
                reason: AttributeError::UnsupportedFamily,
            });
            return Ok(());
        }
    };
    let mut nlri = Vec::new();
    parse_prefixes(nlri_bytes, v6, &mut nlri)
        .map_err(|()| update_err(notif::INVALID_NETWORK_FIELD, Vec::new()))?;
    let octets16 =
        |b: &[u8]| -> Option<Ipv6Addr> { <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from) };
    let (next_hop, link_local_next_hop) = match nh_len {
        4 => (
            nh.try_into()
                .ok()
                .map(|o: [u8; 4]| IpAddr::V4(Ipv4Addr::from(o))),
            None,
        ),
        16 => (octets16(nh).map(IpAddr::V6), None),
        // RFC 2545 §3: global address followed by link-local address.
        32 => (
            nh.get(..16).and_then(octets16).map(IpAddr::V6),
            nh.get(16..).and_then(octets16).map(IpAddr::V6),
        ),
        _ => (None, None),
    };
    let next_hop = match next_hop {
        Some(nh) => nh,
        None => {
            // RFC 7606 §7.11: a bad next hop length still lets the NLRI be located, so the
            // routes are treated as withdrawn; the unspecified address stands in.
            outcomes.push(Rfc7606::Withdraw {
                attribute: attr_type::MP_REACH_NLRI,
                reason: AttributeError::BadLength(u16::from(nh_len)),
            });
            if v6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        }
    };
    attrs.mp_reach = Some(MpReach {
        family,
        next_hop,
        link_local_next_hop,
        nlri,
    });
    Ok(())
}

fn decode_mp_unreach(
    value: &[u8],
    whole: &[u8],
    attrs: &mut PathAttributes,
    outcomes: &mut Vec<Rfc7606>,
) -> Result<(), DecodeError> {
    let optional_error = || update_err(notif::OPTIONAL_ATTRIBUTE_ERROR, whole);
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(optional_error)?;
    let safi = r.u8().ok_or_else(optional_error)?;
    let withdrawn_bytes = r.rest();
    let family = AddressFamily {
        afi: afi.into(),
        safi: safi.into(),
    };
    let v6 = match (afi, safi) {
        (AFI_IPV4, SAFI_UNICAST) => false,
        (AFI_IPV6, SAFI_UNICAST) => true,
        // An empty MP_UNREACH_NLRI of any family is that family's End-of-RIB (RFC 4724 §2).
        _ if withdrawn_bytes.is_empty() => {
            attrs.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: Vec::new(),
            });
            return Ok(());
        }
        _ => {
            outcomes.push(Rfc7606::Discard {
                attribute: attr_type::MP_UNREACH_NLRI,
                reason: AttributeError::UnsupportedFamily,
            });
            return Ok(());
        }
    };
    let mut withdrawn = Vec::new();
    parse_prefixes(withdrawn_bytes, v6, &mut withdrawn)
        .map_err(|()| update_err(notif::INVALID_NETWORK_FIELD, Vec::new()))?;
    attrs.mp_unreach = Some(MpUnreach { family, withdrawn });
    Ok(())
}

/// AS_PATH / AS4_PATH value (RFC 4271 §4.3, RFC 6793, RFC 7606 §7.2).
fn parse_as_path(value: &[u8], four_octet: bool) -> Result<AsPath, AttributeError> {
    let mut segments = Vec::new();
    let mut r = Reader::new(value);
    while !r.is_empty() {
        let seg_type = r.u8().ok_or(AttributeError::MalformedAsPath)?;
        let count = r.u8().ok_or(AttributeError::MalformedAsPath)?;
        if count == 0 {
            return Err(AttributeError::MalformedAsPath);
        }
        let mut asns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let asn = if four_octet {
                r.u32()
            } else {
                r.u16().map(u32::from)
            };
            asns.push(asn.ok_or(AttributeError::MalformedAsPath)?);
        }
        segments.push(match seg_type {
            as_path_segment::AS_SET => AsPathSegment::Set(asns),
            as_path_segment::AS_SEQUENCE => AsPathSegment::Sequence(asns),
            as_path_segment::AS_CONFED_SEQUENCE | as_path_segment::AS_CONFED_SET => {
                return Err(AttributeError::ConfederationSegment);
            }
            _ => return Err(AttributeError::MalformedAsPath),
        });
    }
    Ok(AsPath { segments })
}

/// Number of ASes a path counts for in path length (an AS_SET counts once; RFC 4271 §9.1.2.2).
fn path_count(p: &AsPath) -> usize {
    p.segments
        .iter()
        .map(|s| match s {
            AsPathSegment::Set(_) => 1,
            AsPathSegment::Sequence(v) => v.len(),
        })
        .sum()
}

/// RFC 6793 §4.2.3: rebuild the path from a 2-octet AS_PATH and an AS4_PATH. An AS4_PATH longer
/// than the AS_PATH is ignored; otherwise the leading ASes of AS_PATH that AS4_PATH does not
/// cover are kept and AS4_PATH follows.
fn merge_as4_path(as_path: &AsPath, as4: AsPath) -> AsPath {
    let (n, n4) = (path_count(as_path), path_count(&as4));
    if n4 > n {
        return as_path.clone();
    }
    let mut keep = n - n4;
    let mut segments = Vec::new();
    for seg in &as_path.segments {
        if keep == 0 {
            break;
        }
        match seg {
            AsPathSegment::Set(_) => {
                segments.push(seg.clone());
                keep -= 1;
            }
            AsPathSegment::Sequence(v) => {
                let take = keep.min(v.len());
                segments.push(AsPathSegment::Sequence(
                    v.get(..take).unwrap_or_default().to_vec(),
                ));
                keep -= take;
            }
        }
    }
    segments.extend(as4.segments);
    AsPath { segments }
}
