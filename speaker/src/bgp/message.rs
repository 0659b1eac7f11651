//! BGP message types (RFC 4271 §4 and the extensions leafbridge speaks).
//!
//! These are plain data: `codec` turns them into bytes and back, `fsm` reasons about them.
//! Names follow the RFCs so that readers can look them up.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    Ipv4,
    Ipv6,
    Other(u16),
}

/// Subsequent Address Family Identifier (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Safi {
    Unicast,
    Other(u8),
}

/// An AFI/SAFI pair: the unit that capabilities, End-of-RIB and ROUTE-REFRESH talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressFamily {
    pub afi: Afi,
    pub safi: Safi,
}

impl AddressFamily {
    pub const IPV4_UNICAST: Self = Self {
        afi: Afi::Ipv4,
        safi: Safi::Unicast,
    };
    pub const IPV6_UNICAST: Self = Self {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
    };
}

/// AS_TRANS (RFC 6793 §9): put in the 2-octet "My Autonomous System" field when the real ASN
/// does not fit.
pub const AS_TRANS: u16 = 23456;

/// A BGP message (RFC 4271 §4.1: type codes 1–4, plus ROUTE-REFRESH, RFC 2918, type 5).
// UPDATE is by far the most frequent message; boxing it would cost an allocation per message
// to save stack space on the rare KEEPALIVE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// OPEN (RFC 4271 §4.2). `my_as` is the 2-octet field as sent (AS_TRANS for large ASNs); the
/// real ASN is `Open::asn()` which prefers the 4-octet AS capability (RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The speaker's ASN: the 4-octet AS capability if present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }
}

/// Capabilities advertisement (RFC 5492). Unknown ones are kept, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1, RFC 4760.
    Multiprotocol(AddressFamily),
    /// Code 2, RFC 2918.
    RouteRefresh,
    /// Code 6, RFC 8654.
    ExtendedMessage,
    /// Code 64, RFC 4724.
    GracefulRestart(GracefulRestartCap),
    /// Code 65, RFC 6793.
    FourOctetAs(u32),
    /// Any other code, kept so that it can be logged and compared.
    Unknown { code: u8, value: Vec<u8> },
}

/// Graceful restart capability value (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestartCap {
    /// "Restart State" (R) bit: set by a speaker that has just restarted.
    pub restart_state: bool,
    /// "Graceful Notification" (N) bit, RFC 8538; kept so it round-trips.
    pub notification: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub family: AddressFamily,
    /// "Forwarding State" (F) bit.
    pub forwarding_preserved: bool,
}

/// UPDATE (RFC 4271 §4.3). IPv4 unicast NLRI travel in `withdrawn` / `nlri`; every other
/// family in the MP_REACH_NLRI / MP_UNREACH_NLRI attributes (RFC 4760).
///
/// An UPDATE with nothing in it is the IPv4 unicast End-of-RIB marker (RFC 4724 §2); one whose
/// only attribute is an empty MP_UNREACH_NLRI is the End-of-RIB of that family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<IpNet>,
    pub attributes: PathAttributes,
    pub nlri: Vec<IpNet>,
}

/// The path attributes leafbridge understands, plus unknown ones passed through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    /// AS_PATH with 4-octet ASNs (RFC 6793 when both ends have the capability).
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997), each as the 32-bit value (ASN << 16 | value).
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Attributes we do not interpret (e.g. unknown optional transitive ones), in order.
    pub other: Vec<RawAttribute>,
}

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct AsPath {
    pub segments: Vec<AsPathSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsPathSegment {
    Set(Vec<u32>),
    Sequence(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}

/// MP_REACH_NLRI (RFC 4760 §3). For IPv6 the next hop may carry a link-local address as well
/// (RFC 2545 §3: 32-byte next hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: AddressFamily,
    pub next_hop: IpAddr,
    pub link_local_next_hop: Option<IpAddr>,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: AddressFamily,
    pub withdrawn: Vec<IpNet>,
}

/// An attribute kept as received: flags, type code and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// ROUTE-REFRESH (RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: AddressFamily,
}
