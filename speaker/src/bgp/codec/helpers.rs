//! Helpers on the message types that belong with the wire format: AFI/SAFI numbers, NOTIFICATION
//! codes and constructors, the shutdown communication (RFC 8203 / RFC 9003), End-of-RIB
//! (RFC 4724 §2) and attribute propagation rules (RFC 4271 §5).

use ipnet::IpNet;

use super::wire::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST, attr_flags};
use crate::bgp::message::{
    AddressFamily, Afi, MpUnreach, Notification, PathAttributes, Safi, Update,
};

impl From<u16> for Afi {
    fn from(v: u16) -> Self {
        match v {
            AFI_IPV4 => Afi::Ipv4,
            AFI_IPV6 => Afi::Ipv6,
            other => Afi::Other(other),
        }
    }
}

impl From<Afi> for u16 {
    fn from(a: Afi) -> u16 {
        match a {
            Afi::Ipv4 => AFI_IPV4,
            Afi::Ipv6 => AFI_IPV6,
            Afi::Other(v) => v,
        }
    }
}

impl From<u8> for Safi {
    fn from(v: u8) -> Self {
        match v {
            SAFI_UNICAST => Safi::Unicast,
            other => Safi::Other(other),
        }
    }
}

impl From<Safi> for u8 {
    fn from(s: Safi) -> u8 {
        match s {
            Safi::Unicast => SAFI_UNICAST,
            Safi::Other(v) => v,
        }
    }
}

impl AddressFamily {
    /// The unicast family a prefix belongs to.
    pub fn of_prefix(prefix: &IpNet) -> Self {
        match prefix {
            IpNet::V4(_) => Self::IPV4_UNICAST,
            IpNet::V6(_) => Self::IPV6_UNICAST,
        }
    }
}

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, §6 and later RFCs).
pub mod notif {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// RFC 5492.
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    /// RFC 9234.
    pub const ROLE_MISMATCH: u8 = 11;

    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    /// RFC 6608 subcodes.
    pub const FSM_ERROR: u8 = 5;
    pub const FSM_UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    /// RFC 4486 subcodes.
    pub const CEASE: u8 = 6;
    pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    /// RFC 8538.
    pub const HARD_RESET: u8 = 9;

    /// RFC 7313.
    pub const ROUTE_REFRESH_MESSAGE_ERROR: u8 = 7;
    /// RFC 9687 §3.
    pub const SEND_HOLD_TIMER_EXPIRED: u8 = 8;
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;

    /// RFC 9003 §2: the shutdown communication is at most 255 octets of UTF-8.
    pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 255;
}

/// The data of a Cease/2 or Cease/4 NOTIFICATION is not a valid shutdown communication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownCommunicationError {
    /// RFC 9003 §2: the length octet claims more than the data holds.
    #[error("shutdown communication length {len} exceeds the {available} octets present")]
    Truncated { len: usize, available: usize },
    /// RFC 9003 §2: the message must be UTF-8.
    #[error("shutdown communication is not valid UTF-8")]
    InvalidUtf8,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// Hold Timer Expired (RFC 4271 §6.5).
    pub fn hold_timer_expired() -> Self {
        Self::new(notif::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// OPEN Message Error / Bad Peer AS (RFC 4271 §6.2): the peer's ASN is not the configured
    /// one. No data.
    pub fn bad_peer_as() -> Self {
        Self::new(notif::OPEN_MESSAGE_ERROR, notif::BAD_PEER_AS, Vec::new())
    }

    /// OPEN Message Error / Bad BGP Identifier (RFC 4271 §6.2, RFC 6286: zero or our own).
    pub fn bad_bgp_identifier() -> Self {
        Self::new(
            notif::OPEN_MESSAGE_ERROR,
            notif::BAD_BGP_IDENTIFIER,
            Vec::new(),
        )
    }

    /// OPEN Message Error / Unacceptable Hold Time (RFC 4271 §6.2).
    pub fn unacceptable_hold_time() -> Self {
        Self::new(
            notif::OPEN_MESSAGE_ERROR,
            notif::UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
        )
    }

    /// OPEN Message Error / Unsupported Capability (RFC 5492 §5): `data` lists the capabilities
    /// (code, length, value) that are required but missing.
    pub fn unsupported_capability(data: impl Into<Vec<u8>>) -> Self {
        Self::new(
            notif::OPEN_MESSAGE_ERROR,
            notif::UNSUPPORTED_CAPABILITY,
            data,
        )
    }

    /// Finite State Machine Error (RFC 6608) with the subcode for the state it happened in.
    pub fn fsm_error(subcode: u8) -> Self {
        Self::new(notif::FSM_ERROR, subcode, Vec::new())
    }

    /// Cease with a subcode (RFC 4486) and no data.
    pub fn cease(subcode: u8) -> Self {
        Self::new(notif::CEASE, subcode, Vec::new())
    }

    /// Cease / Administrative Shutdown (subcode 2) or Administrative Reset (subcode 4) carrying
    /// a shutdown communication (RFC 9003 §2): a length octet then UTF-8. Longer messages are
    /// cut at a character boundary to fit 255 octets.
    pub fn cease_with_shutdown_communication(subcode: u8, message: &str) -> Self {
        let mut end = message.len().min(notif::MAX_SHUTDOWN_COMMUNICATION_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message.as_bytes()[..end];
        let mut data = Vec::with_capacity(1 + text.len());
        // `end` <= 255 by construction.
        data.push(u8::try_from(end).unwrap_or(u8::MAX));
        data.extend_from_slice(text);
        Self::new(notif::CEASE, subcode, data)
    }

    /// Cease / Administrative Shutdown with a message (RFC 9003).
    pub fn administrative_shutdown(message: &str) -> Self {
        Self::cease_with_shutdown_communication(notif::ADMINISTRATIVE_SHUTDOWN, message)
    }

    /// The shutdown communication of a Cease/2 or Cease/4 NOTIFICATION (RFC 9003 §2).
    /// `Ok(None)` for other NOTIFICATIONs and when no data (or a zero length) was sent.
    /// Octets after the message are ignored, as RFC 9003 §2 allows.
    pub fn shutdown_communication(&self) -> Result<Option<&str>, ShutdownCommunicationError> {
        if self.code != notif::CEASE
            || !matches!(
                self.subcode,
                notif::ADMINISTRATIVE_SHUTDOWN | notif::ADMINISTRATIVE_RESET
            )
        {
            return Ok(None);
        }
        let Some((&len, rest)) = self.data.split_first() else {
            return Ok(None);
        };
        let len = usize::from(len);
        if len == 0 {
            return Ok(None);
        }
        let text = rest
            .get(..len)
            .ok_or(ShutdownCommunicationError::Truncated {
                len,
                available: rest.len(),
            })?;
        std::str::from_utf8(text)
            .map(Some)
            .map_err(|_| ShutdownCommunicationError::InvalidUtf8)
    }
}

impl Update {
    /// The End-of-RIB marker of `family` (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an
    /// UPDATE with only an empty MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(family: AddressFamily) -> Self {
        if family == AddressFamily::IPV4_UNICAST {
            Self::default()
        } else {
            Self {
                attributes: PathAttributes {
                    mp_unreach: Some(MpUnreach {
                        family,
                        withdrawn: Vec::new(),
                    }),
                    ..PathAttributes::default()
                },
                ..Self::default()
            }
        }
    }

    /// The family whose End-of-RIB this UPDATE is, if it is one (RFC 4724 §2).
    pub fn end_of_rib_family(&self) -> Option<AddressFamily> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        let only_mp_unreach = a.origin.is_none()
            && a.as_path.is_none()
            && a.next_hop.is_none()
            && a.med.is_none()
            && a.local_pref.is_none()
            && a.communities.is_empty()
            && a.large_communities.is_empty()
            && a.mp_reach.is_none()
            && a.other.is_empty();
        if !only_mp_unreach {
            return None;
        }
        match &a.mp_unreach {
            None => Some(AddressFamily::IPV4_UNICAST),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            Some(_) => None,
        }
    }

    /// Every prefix this UPDATE announces (IPv4 NLRI field and MP_REACH_NLRI). Under RFC 7606
    /// treat-as-withdraw these are the prefixes to withdraw.
    pub fn announced(&self) -> impl Iterator<Item = &IpNet> {
        self.nlri
            .iter()
            .chain(self.attributes.mp_reach.iter().flat_map(|r| r.nlri.iter()))
    }

    /// Every prefix this UPDATE withdraws (IPv4 withdrawn routes and MP_UNREACH_NLRI).
    pub fn withdrawn_prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.withdrawn.iter().chain(
            self.attributes
                .mp_unreach
                .iter()
                .flat_map(|u| u.withdrawn.iter()),
        )
    }
}

impl PathAttributes {
    /// Prepare attributes received from one peer for sending to another (RFC 4271 §5, §9.1.4):
    /// unrecognized optional non-transitive attributes are dropped, unrecognized optional
    /// transitive ones are passed on with the Partial bit set.
    pub fn prepare_for_propagation(&mut self) {
        self.other.retain_mut(|a| {
            if a.flags & attr_flags::OPTIONAL == 0 {
                // Well-known attributes never land in `other` from decode; keep what a caller
                // put there deliberately.
                return true;
            }
            if a.flags & attr_flags::TRANSITIVE == 0 {
                return false;
            }
            a.flags |= attr_flags::PARTIAL;
            true
        });
    }
}
