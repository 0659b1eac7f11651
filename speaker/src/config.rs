//! The standalone configuration file (`leafbridge-speaker --config FILE`): local AS, router id,
//! listen address, peers and the prefixes to announce. Parsed with serde (unknown fields are
//! errors, so typos do not silently change behaviour) and checked by `validate()`, whose bounds
//! cite the RFC they come from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::bgp::message::{AS_TRANS, LargeCommunity};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where passive (and colliding active) connections are accepted; none if absent.
    #[serde(default)]
    pub listen: Option<Listen>,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    /// What SIGTERM does to the sessions.
    #[serde(default)]
    pub shutdown: ShutdownMode,
    /// RFC 8203 message sent with the Administrative Shutdown NOTIFICATION.
    #[serde(default = "default_shutdown_message")]
    pub shutdown_message: String,
    /// RFC 4724 §3 Restart Time advertised to peers with graceful restart, in seconds.
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// BFD profiles by name, referenced by peers' `bfd_profile`.
    #[serde(default)]
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub prefixes: Vec<PrefixConfig>,
}

/// A BFD profile (the fields of the BFDProfile kind): RFC 5880 timers in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdProfile {
    /// bfd.RequiredMinRxInterval: the fastest we want to receive.
    #[serde(default = "default_bfd_interval")]
    pub receive_interval: u32,
    /// bfd.DesiredMinTxInterval once Up (at least 1 s while not Up, RFC 5880 §6.8.3).
    #[serde(default = "default_bfd_interval")]
    pub transmit_interval: u32,
    /// bfd.DetectMult.
    #[serde(default = "default_detect_multiplier")]
    pub detect_multiplier: u8,
    /// The Echo function (RFC 5880 §6.4) is not implemented: only `false` is accepted.
    #[serde(default)]
    pub echo_mode: bool,
    /// Wait for the peer's first packet before sending (RFC 5880 §6.1 passive role).
    #[serde(default)]
    pub passive_mode: bool,
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_detect_multiplier() -> u8 {
    3
}

impl Default for BfdProfile {
    fn default() -> Self {
        Self {
            receive_interval: default_bfd_interval(),
            transmit_interval: default_bfd_interval(),
            detect_multiplier: default_detect_multiplier(),
            echo_mode: false,
            passive_mode: false,
        }
    }
}

/// The cluster kind has the same fields (camelCase): one set of bounds and one conversion.
impl From<&leafbridge_api::BFDProfileSpec> for BfdProfile {
    fn from(s: &leafbridge_api::BFDProfileSpec) -> Self {
        Self {
            receive_interval: s.receive_interval,
            transmit_interval: s.transmit_interval,
            detect_multiplier: s.detect_multiplier,
            echo_mode: s.echo_mode,
            passive_mode: s.passive_mode,
        }
    }
}

impl BfdProfile {
    /// The bounds of MetalLB's and FRR's profiles (10 ms to 60 s); detect multiplier 0 is
    /// invalid on the wire (RFC 5880 §6.8.6).
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        for (field, v) in [
            ("receive_interval", self.receive_interval),
            ("transmit_interval", self.transmit_interval),
        ] {
            if !(10..=60_000).contains(&v) {
                return Err(ConfigError::BfdInterval {
                    profile: name.to_owned(),
                    field,
                    value: v,
                });
            }
        }
        if self.detect_multiplier == 0 {
            return Err(ConfigError::BfdDetectMultiplier(name.to_owned()));
        }
        if self.echo_mode {
            return Err(ConfigError::BfdEcho(name.to_owned()));
        }
        Ok(())
    }

    pub fn profile(&self) -> crate::bfd::Profile {
        use std::time::Duration;
        crate::bfd::Profile {
            parameters: crate::bfd::fsm::Parameters {
                desired_min_tx: Duration::from_millis(u64::from(self.transmit_interval)),
                required_min_rx: Duration::from_millis(u64::from(self.receive_interval)),
                detect_mult: self.detect_multiplier,
            },
            passive: self.passive_mode,
        }
    }
}

fn default_shutdown_message() -> String {
    "leafbridge-speaker shutting down".to_owned()
}

fn default_restart_time() -> u16 {
    120
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    crate::bgp::transport::BGP_PORT
}

/// What the speaker does with its sessions on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// Withdraw every route, then NOTIFICATION Cease / Administrative Shutdown (RFC 4486 §4,
    /// RFC 8203 message) and close.
    #[default]
    Withdraw,
    /// Close so that peers with graceful restart keep our routes (RFC 4724 §4.2); peers without
    /// it get the Administrative Shutdown NOTIFICATION.
    Graceful,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The interface a link-local peer address (fe80::/10) is on; required for such an
    /// address and refused for any other (see [`check_peer_interface`]).
    #[serde(default)]
    pub interface: Option<String>,
    pub remote_as: u32,
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// eBGP multihop: the TTL of outgoing packets.
    #[serde(default)]
    pub multihop_ttl: Option<u8>,
    /// GTSM (RFC 5082) for a directly connected peer.
    #[serde(default)]
    pub gtsm: bool,
    /// File holding the TCP MD5 (RFC 2385) key. The key is never logged.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Only accept connections, never connect (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    #[serde(default)]
    pub passive: bool,
    /// Hold Time proposed in our OPEN, seconds (RFC 4271 §4.2).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// Advertise the graceful restart capability (RFC 4724).
    #[serde(default)]
    pub graceful_restart: bool,
    /// Next hop for IPv6 prefixes with `next_hop: self` when the session runs over IPv4.
    #[serde(default)]
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// Next hop for IPv4 prefixes with `next_hop: self` when the session runs over IPv6.
    #[serde(default)]
    pub ipv4_next_hop: Option<Ipv4Addr>,
    /// RFC 9687 SendHoldTime in seconds: how long the peer may leave what we send unread
    /// before the session is closed. Default: 8 minutes, at least twice the hold time.
    #[serde(default)]
    pub send_hold_time: Option<u32>,
    /// Run BFD with the peer with this profile (of `bfd_profiles`): multihop (RFC 5883) when
    /// `multihop_ttl` is set, else single hop (RFC 5881). BGP is closed while BFD is down.
    #[serde(default)]
    pub bfd_profile: Option<String>,
    /// Keyed SHA1 for the peer's BFD session (RFC 5880 §6.7.4); none: no authentication.
    #[serde(default)]
    pub bfd_auth: Option<BfdAuth>,
}

/// BFD keyed SHA1: the key (1 to 20 octets) is read from a file and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdAuth {
    pub key_file: PathBuf,
    #[serde(default = "default_bfd_key_id")]
    pub key_id: u8,
    /// Meticulous Keyed SHA1: every packet has a new sequence number.
    #[serde(default)]
    pub meticulous: bool,
}

fn default_bfd_key_id() -> u8 {
    1
}

fn default_hold_time() -> u16 {
    90
}

impl PeerConfig {
    /// The `name`, else the address (`fe80::1%eth0` for a link-local one).
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.interface {
            Some(i) => format!("{}%{i}", self.address),
            None => self.address.to_string(),
        })
    }

    pub fn is_ibgp(&self, local_as: u32) -> bool {
        self.remote_as == local_as
    }
}

/// One prefix to announce. The lists are boxed slices rather than vectors (8 octets fewer
/// each): a configuration can hold a million of these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    pub prefix: IpNet,
    #[serde(default)]
    pub next_hop: NextHop,
    #[serde(default)]
    pub communities: Box<[Community]>,
    #[serde(default)]
    pub large_communities: Box<[LargeCommunityText]>,
    /// LOCAL_PREF, sent to iBGP peers only (RFC 4271 §5.1.5).
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    #[serde(default)]
    pub med: Option<u32>,
    /// Peer names to announce to; all peers when absent.
    #[serde(default)]
    pub peers: Option<Box<[String]>>,
}

/// NEXT_HOP of an announced prefix: our own session address, or a given one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NextHop {
    #[default]
    SelfAddress,
    Address(IpAddr),
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "self" {
            return Ok(NextHop::SelfAddress);
        }
        s.parse().map(NextHop::Address).map_err(|_| {
            serde::de::Error::custom(format!(
                "next_hop {s:?} is neither \"self\" nor an IP address"
            ))
        })
    }
}

/// A COMMUNITIES value written "ASN:value" (RFC 1997 §Attribute Values), both 16-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, v) = s
            .split_once(':')
            .ok_or_else(|| format!("community {s:?} is not ASN:value"))?;
        let a: u16 = a
            .parse()
            .map_err(|_| format!("community {s:?}: ASN part is not 0..=65535"))?;
        let v: u16 = v
            .parse()
            .map_err(|_| format!("community {s:?}: value part is not 0..=65535"))?;
        Ok(Community((u32::from(a) << 16) | u32::from(v)))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A LARGE_COMMUNITY written "global:local1:local2" (RFC 8092 §5 canonical form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunityText(pub LargeCommunity);

impl FromStr for LargeCommunityText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [g, l1, l2] = parts.as_slice() else {
            return Err(format!("large community {s:?} is not global:local1:local2"));
        };
        let n = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("large community {s:?}: {p:?} is not a 32-bit number"))
        };
        Ok(LargeCommunityText(LargeCommunity {
            global_admin: n(g)?,
            local_data_1: n(l1)?,
            local_data_2: n(l2)?,
        }))
    }
}

impl<'de> Deserialize<'de> for LargeCommunityText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why an address cannot be announced as a NEXT_HOP (RFC 4271 §5.1.3: it must be an address
/// the receiver can reach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NextHopProblem {
    #[error("it is the unspecified address")]
    Unspecified,
    #[error("it is a multicast or broadcast address")]
    Multicast,
    #[error("it is a loopback address")]
    Loopback,
    #[error(
        "it is link-local, which only means something on a session with a link-local peer (with an interface)"
    )]
    LinkLocal,
}

/// Whether `addr` can be a next hop: the pure check behind every next hop the configuration
/// names (RFC 4271 §5.1.3, RFC 2545 §3 for IPv6: a global address, link-local only beside one).
pub fn check_next_hop(addr: IpAddr) -> Result<(), NextHopProblem> {
    check_next_hop_on(addr, false)
}

/// [`check_next_hop`] for a next hop sent only on sessions with link-local peers (`on_link`):
/// there an IPv6 link-local next hop is scoped by the session's interface and usable.
pub fn check_next_hop_on(addr: IpAddr, on_link: bool) -> Result<(), NextHopProblem> {
    let addr = crate::bgp::transport::unmap(addr);
    if addr.is_unspecified() {
        return Err(NextHopProblem::Unspecified);
    }
    if addr.is_multicast() || addr == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(NextHopProblem::Multicast);
    }
    if addr.is_loopback() {
        return Err(NextHopProblem::Loopback);
    }
    let link_local = match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() && !on_link,
    };
    if link_local {
        return Err(NextHopProblem::LinkLocal);
    }
    Ok(())
}

/// Longest interface name Linux accepts (IFNAMSIZ 16 with the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

/// Why a peer's `interface` (or its absence) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceProblem {
    #[error(
        "peer address {0} is link-local (fe80::/10) and needs `interface`: the name of the interface the peer is on, since the same link-local address can exist on every link"
    )]
    Missing(Ipv6Addr),
    #[error(
        "`interface` is only for a link-local (fe80::/10) peer address; {0} is reached through the routing table, which chooses the interface"
    )]
    NotLinkLocal(IpAddr),
    #[error("`interface` {name:?} is not an interface name: {why}")]
    BadName { name: String, why: &'static str },
    #[error(
        "a link-local peer is directly connected: multihop does not apply (its packets never leave the link)"
    )]
    Multihop,
    #[error(
        "BFD is not supported with a link-local peer: BFD sessions are told apart by peer address alone, without the interface"
    )]
    Bfd,
}

/// The one rule for a peer's interface, shared by the standalone configuration and `BGPPeer`:
/// a link-local IPv6 peer address needs the interface it is on (the kernel needs it as the
/// address's scope); any other address must not name one, since the routing table already
/// decides where its packets go. Link-local peers are single hop and run without BFD.
pub fn check_peer_interface(
    address: IpAddr,
    interface: Option<&str>,
    multihop: bool,
    bfd: bool,
) -> Result<(), InterfaceProblem> {
    let link_local = match address {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
        _ => None,
    };
    match (link_local, interface) {
        (Some(v6), None) => Err(InterfaceProblem::Missing(v6)),
        (None, Some(_)) => Err(InterfaceProblem::NotLinkLocal(address)),
        (None, None) => Ok(()),
        (Some(_), Some(name)) => {
            check_interface_name(name)?;
            if multihop {
                return Err(InterfaceProblem::Multihop);
            }
            if bfd {
                return Err(InterfaceProblem::Bfd);
            }
            Ok(())
        }
    }
}

/// What Linux accepts as an interface name (`dev_valid_name`).
fn check_interface_name(name: &str) -> Result<(), InterfaceProblem> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_INTERFACE_NAME {
        Some("it is longer than 15 octets (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not names")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace() || c.is_control())
    {
        Some("it contains '/', ':', '%', a space or a control character")
    } else {
        None
    };
    match why {
        Some(why) => Err(InterfaceProblem::BadName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

fn next_hop_ok(what: impl FnOnce() -> String, addr: IpAddr) -> Result<(), ConfigError> {
    check_next_hop(addr).map_err(|why| ConfigError::BadNextHop {
        what: what(),
        addr,
        why,
    })
}

/// Why a configuration was rejected. The running configuration stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot parse configuration: {0}")]
    Parse(String),
    #[error("local_as 0 is reserved (RFC 7607)")]
    LocalAsZero,
    #[error("local_as 23456 is AS_TRANS and cannot be a speaker's ASN (RFC 6793 §9)")]
    LocalAsTrans,
    #[error("router_id 0.0.0.0 is not allowed (RFC 6286 §2.1: a non-zero 32-bit identifier)")]
    RouterIdZero,
    #[error("peer {peer}: remote_as {asn} is reserved (RFC 7607 for 0, RFC 6793 §9 for 23456)")]
    RemoteAsReserved { peer: String, asn: u32 },
    #[error("peer {peer}: hold_time {hold} must be 0 or at least 3 seconds (RFC 4271 §4.2)")]
    HoldTime { peer: String, hold: u16 },
    #[error("peer {peer}: multihop_ttl must be 1..=255")]
    MultihopTtl { peer: String },
    #[error("peer {peer}: gtsm and multihop_ttl cannot both be set (RFC 5082 §3 sends TTL 255)")]
    GtsmWithMultihop { peer: String },
    #[error("peer {peer}: multihop_ttl applies to eBGP only")]
    MultihopOnIbgp { peer: String },
    #[error("peer {peer}: source_address {source_addr} is not of the address family of the peer")]
    SourceFamily { peer: String, source_addr: IpAddr },
    #[error("peer {0} is configured twice (names and addresses must be unique)")]
    DuplicatePeer(String),
    #[error("prefix {prefix}: next_hop {next_hop} is not of the prefix's address family")]
    NextHopFamily { prefix: IpNet, next_hop: IpAddr },
    #[error("prefix {prefix} names unknown peer {peer}")]
    UnknownPeer { prefix: IpNet, peer: String },
    #[error("prefix {0} is listed twice")]
    DuplicatePrefix(IpNet),
    #[error("restart_time {0} exceeds 4095 seconds (12-bit field, RFC 4724 §3)")]
    RestartTime(u16),
    #[error(
        "restart_time 0 with graceful_restart on peer {0}: the peer would drop our routes at once (RFC 4724 §4.2)"
    )]
    RestartTimeZero(String),
    #[error("{what} {addr} cannot be a next hop: {why}")]
    BadNextHop {
        what: String,
        addr: IpAddr,
        why: NextHopProblem,
    },
    #[error("peer {peer}: {why}")]
    PeerInterface { peer: String, why: InterfaceProblem },
    #[error(
        "prefix {prefix} with next_hop self on peer {peer}: a session over {session} needs {option} (an IPv4-mapped next hop is unresolvable for switches)"
    )]
    SelfNextHopFamily {
        prefix: IpNet,
        peer: String,
        session: &'static str,
        option: &'static str,
    },
    #[error("peer {peer}: send_hold_time must be at least 1 second (RFC 9687)")]
    SendHoldTime { peer: String },
    #[error("shutdown_message is {0} octets; RFC 8203 §2 (as updated by RFC 9003) allows 255")]
    ShutdownMessage(usize),
    #[error("BFD profile {profile}: {field} {value} ms is outside 10..=60000")]
    BfdInterval {
        profile: String,
        field: &'static str,
        value: u32,
    },
    #[error("BFD profile {0}: detect_multiplier must be at least 1 (RFC 5880 §6.8.6)")]
    BfdDetectMultiplier(String),
    #[error("BFD profile {0}: echo_mode is not supported")]
    BfdEcho(String),
    #[error("peer {peer} names unknown BFD profile {profile}")]
    UnknownBfdProfile { peer: String, profile: String },
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut c: Config =
            leafbridge_api::yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        // The list grew by doubling while it was read; a large configuration keeps it for
        // as long as it runs.
        c.prefixes.shrink_to_fit();
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_yaml(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        // RFC 7607: AS 0 must not be used; RFC 6793 §9: AS_TRANS only stands in for 4-octet ASNs.
        if self.local_as == 0 {
            return Err(ConfigError::LocalAsZero);
        }
        if self.local_as == u32::from(AS_TRANS) {
            return Err(ConfigError::LocalAsTrans);
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterIdZero);
        }
        if self.restart_time > 4095 {
            return Err(ConfigError::RestartTime(self.restart_time));
        }
        if self.shutdown_message.len() > 255 {
            return Err(ConfigError::ShutdownMessage(self.shutdown_message.len()));
        }
        for (name, profile) in &self.bfd_profiles {
            profile.validate(name)?;
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for p in &self.peers {
            let name = p.name();
            if let Some(profile) = &p.bfd_profile
                && !self.bfd_profiles.contains_key(profile)
            {
                return Err(ConfigError::UnknownBfdProfile {
                    peer: name,
                    profile: profile.clone(),
                });
            }
            if !names.insert(name.clone())
                || !addrs.insert((p.address, p.port, p.interface.clone()))
            {
                return Err(ConfigError::DuplicatePeer(name));
            }
            if p.remote_as == 0 || p.remote_as == u32::from(AS_TRANS) {
                return Err(ConfigError::RemoteAsReserved {
                    peer: name,
                    asn: p.remote_as,
                });
            }
            // RFC 4271 §4.2: "the Hold Time MUST be either zero or at least three seconds".
            if p.hold_time != 0 && p.hold_time < 3 {
                return Err(ConfigError::HoldTime {
                    peer: name,
                    hold: p.hold_time,
                });
            }
            if let Some(ttl) = p.multihop_ttl {
                if ttl == 0 {
                    return Err(ConfigError::MultihopTtl { peer: name });
                }
                if p.gtsm {
                    return Err(ConfigError::GtsmWithMultihop { peer: name });
                }
                if p.is_ibgp(self.local_as) {
                    return Err(ConfigError::MultihopOnIbgp { peer: name });
                }
            }
            if let Some(src) = p.source_address
                && src.is_ipv4() != p.address.is_ipv4()
            {
                return Err(ConfigError::SourceFamily {
                    peer: name,
                    source_addr: src,
                });
            }
            if let Err(why) = check_peer_interface(
                p.address,
                p.interface.as_deref(),
                p.multihop_ttl.is_some(),
                p.bfd_profile.is_some(),
            ) {
                return Err(ConfigError::PeerInterface { peer: name, why });
            }
            if p.graceful_restart && self.restart_time == 0 {
                return Err(ConfigError::RestartTimeZero(name));
            }
            if p.send_hold_time == Some(0) {
                return Err(ConfigError::SendHoldTime { peer: name });
            }
            if let Some(nh) = p.ipv6_next_hop {
                next_hop_ok(|| format!("peer {name}: ipv6_next_hop"), nh.into())?;
            }
            if let Some(nh) = p.ipv4_next_hop {
                next_hop_ok(|| format!("peer {name}: ipv4_next_hop"), nh.into())?;
            }
        }
        if let Some(dup) = first_duplicate(&self.prefixes) {
            return Err(ConfigError::DuplicatePrefix(dup));
        }
        for pf in &self.prefixes {
            let v4_prefix = matches!(pf.prefix, IpNet::V4(_));
            match pf.next_hop {
                NextHop::Address(nh) => {
                    if nh.is_ipv4() != v4_prefix {
                        return Err(ConfigError::NextHopFamily {
                            prefix: pf.prefix,
                            next_hop: nh,
                        });
                    }
                    // A link-local next hop is scoped by the session's interface: only for
                    // prefixes that go to link-local peers alone.
                    let mut targets = self.peers_of(pf).peekable();
                    let on_link =
                        targets.peek().is_some() && targets.all(|p| p.interface.is_some());
                    check_next_hop_on(nh, on_link).map_err(|why| ConfigError::BadNextHop {
                        what: format!("prefix {}: next_hop", pf.prefix),
                        addr: nh,
                        why,
                    })?;
                }
                NextHop::SelfAddress => self.check_self_next_hop(pf)?,
            }
            for peer in pf.peers.iter().flatten() {
                if !names.contains(peer) {
                    return Err(ConfigError::UnknownPeer {
                        prefix: pf.prefix,
                        peer: peer.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `next_hop: self` is our address on the session: an IPv6 prefix over an IPv4 session
    /// needs `ipv6_next_hop` (else it would go out as `::ffff:a.b.c.d`), an IPv4 prefix over an
    /// IPv6 session needs `ipv4_next_hop`.
    /// An IPv4 prefix over a link-local session is the same case: without RFC 8950 (not
    /// implemented) its next hop must be an IPv4 address, which the session does not have.
    fn check_self_next_hop(&self, pf: &PrefixConfig) -> Result<(), ConfigError> {
        let v4_prefix = matches!(pf.prefix, IpNet::V4(_));
        for p in self.peers_of(pf) {
            let name = p.name();
            let ipv6_session = if p.interface.is_some() {
                "link-local IPv6 (an IPv6 next hop for IPv4 needs RFC 8950, not implemented)"
            } else {
                "IPv6"
            };
            let missing = match (v4_prefix, p.address.is_ipv4()) {
                (false, true) if p.ipv6_next_hop.is_none() => Some(("IPv4", "ipv6_next_hop")),
                (true, false) if p.ipv4_next_hop.is_none() => Some((ipv6_session, "ipv4_next_hop")),
                _ => None,
            };
            if let Some((session, option)) = missing {
                return Err(ConfigError::SelfNextHopFamily {
                    prefix: pf.prefix,
                    peer: name,
                    session,
                    option,
                });
            }
        }
        Ok(())
    }

    /// The peers a prefix is announced to.
    fn peers_of<'a>(&'a self, pf: &'a PrefixConfig) -> impl Iterator<Item = &'a PeerConfig> {
        self.peers.iter().filter(move |p| {
            pf.peers
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|n| *n == p.name()))
        })
    }
}

/// The first prefix, in file order, that repeats an earlier one once host bits are cleared
/// (10.0.0.1/24 and 10.0.0.0/24 are one route). Sorting the positions costs 8 bytes a prefix
/// for a moment; a set of the prefixes would cost about 40, 38 MB at a million prefixes.
fn first_duplicate(prefixes: &[PrefixConfig]) -> Option<IpNet> {
    let key = |i: usize| prefixes[i].prefix.trunc();
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    order.sort_unstable_by_key(|&i| (key(i), i));
    order
        .windows(2)
        .filter(|w| key(w[0]) == key(w[1]))
        .map(|w| w[1])
        .min()
        .map(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
local_as: 65001
router_id: 192.0.2.1
listen: { address: "::", port: 1790 }
metrics_address: 127.0.0.1:9179
shutdown: graceful
peers:
  - name: leaf1
    address: 192.0.2.2
    remote_as: 65000
    source_address: 192.0.2.1
    password_file: /run/secret
    hold_time: 9
    graceful_restart: true
    ipv6_next_hop: "2001:db8::1"
  - address: "2001:db8::2"
    port: 11179
    remote_as: 65001
    passive: true
prefixes:
  - prefix: 203.0.113.1/32
    communities: ["65000:100"]
    large_communities: ["65000:1:2"]
    local_pref: 200
    med: 10
    peers: [leaf1]
  - prefix: "2001:db8:100::/48"
    next_hop: "2001:db8::1"
"#;

    fn good() -> Config {
        Config::from_yaml(GOOD).unwrap()
    }

    fn invalid(edit: impl FnOnce(&mut Config)) -> ConfigError {
        let mut c = good();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn parses_a_full_configuration() {
        let c = good();
        assert_eq!(c.shutdown, ShutdownMode::Graceful);
        assert_eq!(c.peers[0].name(), "leaf1");
        assert_eq!(c.peers[1].name(), "2001:db8::2");
        assert_eq!(c.peers[1].port, 11179);
        assert_eq!(c.peers[0].port, 179);
        assert_eq!(
            c.prefixes[0].communities,
            vec![Community(65000 << 16 | 100)].into()
        );
        assert_eq!(c.prefixes[0].large_communities[0].0.local_data_2, 2);
        assert_eq!(c.prefixes[0].next_hop, NextHop::SelfAddress);
        assert_eq!(
            c.prefixes[1].next_hop,
            NextHop::Address("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn a_long_block_of_prefixes_with_comments_reads_every_entry() {
        let mut text = GOOD.replace("prefixes:\n", "prefixes:\n  # a comment\n\n");
        for i in 0..5000u32 {
            text.push_str(&format!(
                "  - prefix: 100.64.{}.{}/32\n    # note\n    peers: [leaf1]\n    communities:\n      - \"65000:{}\"\n",
                i / 256,
                i % 256,
                i % 100
            ));
        }
        text.push_str("restart_time: 60\n");
        let c = Config::from_yaml(&text).unwrap();
        assert_eq!(c.prefixes.len(), 5002);
        assert_eq!(c.prefixes.capacity(), 5002);
        assert_eq!(c.restart_time, 60);
        assert_eq!(c.prefixes[4001].communities.len(), 1);
        // Flow style, and a sequence at column 0.
        let flow = "local_as: 1\nrouter_id: 1.1.1.1\nprefixes: [{prefix: 203.0.113.1/32}]\n";
        assert_eq!(
            leafbridge_api::yaml::from_str::<Config>(flow)
                .unwrap()
                .prefixes
                .len(),
            1
        );
        let col0 = "local_as: 1\nrouter_id: 1.1.1.1\nprefixes:\n- prefix: 203.0.113.1/32\n- prefix: 203.0.113.2/32\n";
        assert_eq!(
            leafbridge_api::yaml::from_str::<Config>(col0)
                .unwrap()
                .prefixes
                .len(),
            2
        );
    }

    #[test]
    fn a_bad_prefix_entry_is_reported_with_its_line() {
        let text = GOOD.replace("prefix: 203.0.113.1/32", "prefix: 203.0.113.300/32");
        let e = Config::from_yaml(&text).unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse(ref m) if m.contains("line")),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = Config::from_yaml(&GOOD.replace("hold_time: 9", "hold_tme: 9")).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
    }

    #[test]
    fn malformed_communities_are_rejected() {
        for bad in ["\"65000\"", "\"70000:1\"", "\"1:70000\"", "\"a:b\""] {
            let e = Config::from_yaml(&GOOD.replace("\"65000:100\"", bad)).unwrap_err();
            assert!(matches!(e, ConfigError::Parse(_)), "{bad}: {e}");
        }
        for bad in ["\"65000:1\"", "\"1:2:3:4\"", "\"4294967296:1:2\""] {
            let e = Config::from_yaml(&GOOD.replace("\"65000:1:2\"", bad)).unwrap_err();
            assert!(matches!(e, ConfigError::Parse(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn hold_time_must_be_zero_or_at_least_three() {
        for (hold, ok) in [(0, true), (1, false), (2, false), (3, true), (65535, true)] {
            let mut c = good();
            c.peers[0].hold_time = hold;
            assert_eq!(c.validate().is_ok(), ok, "hold {hold}");
        }
    }

    #[test]
    fn reserved_asns_are_rejected() {
        assert_eq!(invalid(|c| c.local_as = 0), ConfigError::LocalAsZero);
        assert_eq!(invalid(|c| c.local_as = 23456), ConfigError::LocalAsTrans);
        assert!(matches!(
            invalid(|c| c.peers[0].remote_as = 0),
            ConfigError::RemoteAsReserved { .. }
        ));
        assert!(matches!(
            invalid(|c| c.peers[0].remote_as = 23456),
            ConfigError::RemoteAsReserved { .. }
        ));
        let mut c = good();
        c.local_as = 4_200_000_000;
        c.peers[1].remote_as = 4_200_000_000;
        c.validate().unwrap();
    }

    #[test]
    fn router_id_must_be_non_zero() {
        assert_eq!(
            invalid(|c| c.router_id = Ipv4Addr::UNSPECIFIED),
            ConfigError::RouterIdZero
        );
    }

    #[test]
    fn ttl_options_are_checked() {
        assert!(matches!(
            invalid(|c| c.peers[0].multihop_ttl = Some(0)),
            ConfigError::MultihopTtl { .. }
        ));
        assert!(matches!(
            invalid(|c| {
                c.peers[0].multihop_ttl = Some(2);
                c.peers[0].gtsm = true;
            }),
            ConfigError::GtsmWithMultihop { .. }
        ));
        assert!(matches!(
            invalid(|c| c.peers[1].multihop_ttl = Some(2)),
            ConfigError::MultihopOnIbgp { .. }
        ));
    }

    #[test]
    fn peers_and_prefixes_are_consistent() {
        assert!(matches!(
            invalid(|c| c.peers[0].source_address = Some("2001:db8::9".parse().unwrap())),
            ConfigError::SourceFamily { .. }
        ));
        assert!(matches!(
            invalid(|c| c.peers[1].name = Some("leaf1".into())),
            ConfigError::DuplicatePeer(_)
        ));
        assert!(matches!(
            invalid(|c| c.prefixes[0].peers = Some(vec!["nope".into()].into())),
            ConfigError::UnknownPeer { .. }
        ));
        assert!(matches!(
            invalid(|c| c.prefixes[0].next_hop = NextHop::Address("2001:db8::1".parse().unwrap())),
            ConfigError::NextHopFamily { .. }
        ));
        assert!(matches!(
            invalid(|c| c.prefixes.push(c.prefixes[0].clone())),
            ConfigError::DuplicatePrefix(_)
        ));
    }

    #[test]
    fn duplicate_prefixes_are_found_after_host_bits_are_cleared() {
        assert_eq!(
            invalid(|c| {
                let mut dup = c.prefixes[0].clone();
                dup.prefix = "203.0.113.1/24".parse().unwrap();
                c.prefixes[0].prefix = "203.0.113.0/24".parse().unwrap();
                c.prefixes.push(dup);
            }),
            ConfigError::DuplicatePrefix("203.0.113.0/24".parse().unwrap())
        );
    }

    #[test]
    fn the_duplicate_reported_is_the_first_repeat_in_file_order() {
        let entry = |p: &str| PrefixConfig {
            prefix: p.parse().unwrap(),
            next_hop: NextHop::SelfAddress,
            communities: Box::default(),
            large_communities: Box::default(),
            local_pref: None,
            med: None,
            peers: None,
        };
        let list: Vec<PrefixConfig> = [
            "203.0.113.9/32",
            "203.0.113.5/32",
            "203.0.113.1/32",
            "203.0.113.5/32",
            "203.0.113.1/32",
            "203.0.113.9/32",
        ]
        .iter()
        .map(|p| entry(p))
        .collect();
        assert_eq!(
            first_duplicate(&list),
            Some("203.0.113.5/32".parse().unwrap())
        );
        assert_eq!(first_duplicate(&list[..3]), None);
        assert_eq!(first_duplicate(&[]), None);
    }

    #[test]
    fn restart_time_zero_is_refused_with_graceful_restart() {
        assert_eq!(
            invalid(|c| c.restart_time = 0),
            ConfigError::RestartTimeZero("leaf1".into())
        );
        let mut c = good();
        c.restart_time = 0;
        c.peers[0].graceful_restart = false;
        c.validate().unwrap();
    }

    #[test]
    fn ipv6_prefix_with_self_next_hop_on_an_ipv4_session_needs_ipv6_next_hop() {
        let e = invalid(|c| {
            c.peers[0].ipv6_next_hop = None;
            c.prefixes[1].next_hop = NextHop::SelfAddress;
        });
        assert!(
            matches!(e, ConfigError::SelfNextHopFamily { ref peer, option: "ipv6_next_hop", .. } if peer == "leaf1"),
            "{e}"
        );
        // Limited to the IPv6 peer, it is fine.
        let mut c = good();
        c.peers[0].ipv6_next_hop = None;
        c.prefixes[1].next_hop = NextHop::SelfAddress;
        c.prefixes[1].peers = Some(vec!["2001:db8::2".into()].into());
        c.validate().unwrap();
        // An IPv4 prefix on the IPv6 session needs ipv4_next_hop.
        let e = invalid(|c| c.prefixes[0].peers = None);
        assert!(
            matches!(
                e,
                ConfigError::SelfNextHopFamily {
                    option: "ipv4_next_hop",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn next_hops_a_router_cannot_use_are_rejected() {
        for (addr, why) in [
            ("0.0.0.0", NextHopProblem::Unspecified),
            ("224.0.0.5", NextHopProblem::Multicast),
            ("255.255.255.255", NextHopProblem::Multicast),
            ("127.0.0.1", NextHopProblem::Loopback),
            ("169.254.0.1", NextHopProblem::LinkLocal),
            ("::", NextHopProblem::Unspecified),
            ("ff02::1", NextHopProblem::Multicast),
            ("::1", NextHopProblem::Loopback),
            ("fe80::1", NextHopProblem::LinkLocal),
            ("::ffff:127.0.0.1", NextHopProblem::Loopback),
        ] {
            assert_eq!(check_next_hop(addr.parse().unwrap()), Err(why), "{addr}");
        }
        check_next_hop("192.0.2.1".parse().unwrap()).unwrap();
        check_next_hop("2001:db8::1".parse().unwrap()).unwrap();
        assert!(matches!(
            invalid(|c| c.prefixes[1].next_hop = NextHop::Address("fe80::1".parse().unwrap())),
            ConfigError::BadNextHop {
                why: NextHopProblem::LinkLocal,
                ..
            }
        ));
        assert!(matches!(
            invalid(|c| c.peers[0].ipv6_next_hop = Some("::".parse().unwrap())),
            ConfigError::BadNextHop {
                why: NextHopProblem::Unspecified,
                ..
            }
        ));
        assert!(matches!(
            invalid(|c| c.peers[1].address = "fe80::2".parse().unwrap()),
            ConfigError::PeerInterface {
                why: InterfaceProblem::Missing(_),
                ..
            }
        ));
    }

    #[test]
    fn the_interface_rule_refuses_each_case_with_its_reason() {
        use InterfaceProblem as P;
        let ll: IpAddr = "fe80::2".parse().unwrap();
        let global: IpAddr = "2001:db8::2".parse().unwrap();
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        let bad = |name: &str| {
            matches!(check_peer_interface(ll, Some(name), false, false),
                     Err(P::BadName { name: ref n, .. }) if n == name)
        };
        for (addr, iface, multihop, bfd, want) in [
            (
                ll,
                None,
                false,
                false,
                Err(P::Missing("fe80::2".parse().unwrap())),
            ),
            (ll, Some("eth0"), false, false, Ok(())),
            (ll, Some("eth0"), true, false, Err(P::Multihop)),
            (ll, Some("eth0"), false, true, Err(P::Bfd)),
            (
                global,
                Some("eth0"),
                false,
                false,
                Err(P::NotLinkLocal(global)),
            ),
            (v4, Some("eth0"), false, false, Err(P::NotLinkLocal(v4))),
            (global, None, true, true, Ok(())),
            (v4, None, false, false, Ok(())),
            // fe80::/10, not only fe80::/64.
            (
                "febf::1".parse().unwrap(),
                None,
                false,
                false,
                Err(P::Missing("febf::1".parse().unwrap())),
            ),
        ] {
            assert_eq!(
                check_peer_interface(addr, iface, multihop, bfd),
                want,
                "{addr} {iface:?} multihop {multihop} bfd {bfd}"
            );
        }
        for name in [
            "",
            "a-name-of-16-oct",
            "eth 0",
            "a/b",
            "eth0:1",
            "..",
            "eth0%1",
        ] {
            assert!(bad(name), "{name:?} accepted");
        }
        assert_eq!(
            check_peer_interface(ll, Some("a-name-of-15-oc"), false, false),
            Ok(())
        );
        // The message names the field.
        let e = check_peer_interface(ll, None, false, false).unwrap_err();
        assert!(e.to_string().contains("needs `interface`"), "{e}");
    }

    const LINK_LOCAL: &str = r#"
local_as: 65001
router_id: 192.0.2.1
listen: { address: "::" }
peers:
  - address: "fe80::2"
    interface: eth0
    remote_as: 65000
  - address: "fe80::2"
    interface: eth1
    remote_as: 65000
prefixes:
  - prefix: "2001:db8:100::/64"
"#;

    #[test]
    fn link_local_peers_take_an_interface_and_are_one_peer_per_link() {
        let c = Config::from_yaml(LINK_LOCAL).unwrap();
        assert_eq!(c.peers[0].interface.as_deref(), Some("eth0"));
        assert_eq!(c.peers[0].name(), "fe80::2%eth0");
        assert_eq!(c.peers[1].name(), "fe80::2%eth1");
        // The same address on the same interface twice is one peer configured twice.
        let e = Config::from_yaml(&LINK_LOCAL.replace("eth1", "eth0")).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicatePeer(_)), "{e}");
        // Without an interface, with one on a global address: refused, naming the field.
        let e = Config::from_yaml(&LINK_LOCAL.replace("    interface: eth1\n", "")).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::PeerInterface {
                    why: InterfaceProblem::Missing(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("`interface`"), "{e}");
        let e = Config::from_yaml(&LINK_LOCAL.replacen("fe80::2", "2001:db8::2", 1)).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::PeerInterface {
                    why: InterfaceProblem::NotLinkLocal(_),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn an_ipv4_prefix_with_next_hop_self_over_a_link_local_session_needs_ipv4_next_hop() {
        let text = LINK_LOCAL.replace("prefixes:\n", "prefixes:\n  - prefix: 203.0.113.1/32\n");
        let e = Config::from_yaml(&text).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::SelfNextHopFamily { option: "ipv4_next_hop", session, .. }
                    if session.contains("link-local") && session.contains("RFC 8950")
            ),
            "{e}"
        );
        let with_v4 = text.replace(
            "    remote_as: 65000\n",
            "    remote_as: 65000\n    ipv4_next_hop: 192.0.2.1\n",
        );
        Config::from_yaml(&with_v4).unwrap();
    }

    #[test]
    fn a_link_local_next_hop_is_only_for_prefixes_sent_to_link_local_peers() {
        let ll_next_hop = LINK_LOCAL.replace(
            "  - prefix: \"2001:db8:100::/64\"\n",
            "  - prefix: \"2001:db8:100::/64\"\n    next_hop: \"fe80::1\"\n",
        );
        Config::from_yaml(&ll_next_hop).unwrap();
        let with_global_peer = ll_next_hop.replace(
            "prefixes:\n",
            "  - { address: \"2001:db8::2\", remote_as: 65000 }\nprefixes:\n",
        );
        let e = Config::from_yaml(&with_global_peer).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::BadNextHop {
                    why: NextHopProblem::LinkLocal,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bfd_and_multihop_are_refused_for_link_local_peers() {
        let bfd = LINK_LOCAL
            .replace("listen:", "bfd_profiles: { p: {} }\nlisten:")
            .replacen(
                "    interface: eth0\n",
                "    interface: eth0\n    bfd_profile: p\n",
                1,
            );
        let e = Config::from_yaml(&bfd).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::PeerInterface {
                    why: InterfaceProblem::Bfd,
                    ..
                }
            ),
            "{e}"
        );
        let multihop = LINK_LOCAL.replacen(
            "    interface: eth0\n",
            "    interface: eth0\n    multihop_ttl: 2\n",
            1,
        );
        let e = Config::from_yaml(&multihop).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::PeerInterface {
                    why: InterfaceProblem::Multihop,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn send_hold_time_is_at_least_one_second() {
        assert!(matches!(
            invalid(|c| c.peers[0].send_hold_time = Some(0)),
            ConfigError::SendHoldTime { .. }
        ));
    }

    #[test]
    fn restart_time_and_shutdown_message_fit_their_fields() {
        assert_eq!(
            invalid(|c| c.restart_time = 4096),
            ConfigError::RestartTime(4096)
        );
        assert_eq!(
            invalid(|c| c.shutdown_message = "x".repeat(256)),
            ConfigError::ShutdownMessage(256)
        );
    }

    #[test]
    fn bfd_profiles_parse_with_defaults_and_peers_name_them() {
        let c = Config::from_yaml(
            r#"
local_as: 65001
router_id: 192.0.2.1
bfd_profiles:
  fast: { receive_interval: 100, transmit_interval: 200, detect_multiplier: 5, passive_mode: true }
  default: {}
peers:
  - { address: 192.0.2.2, remote_as: 65000, bfd_profile: fast }
"#,
        )
        .unwrap();
        assert_eq!(c.peers[0].bfd_profile.as_deref(), Some("fast"));
        let p = c.bfd_profiles["fast"].profile();
        assert_eq!(
            p.parameters.required_min_rx,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            p.parameters.desired_min_tx,
            std::time::Duration::from_millis(200)
        );
        assert_eq!(p.parameters.detect_mult, 5);
        assert!(p.passive);
        assert_eq!(c.bfd_profiles["default"], BfdProfile::default());
    }

    #[test]
    fn bfd_profiles_are_bounded_and_must_exist() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::from_yaml(GOOD).unwrap();
            c.bfd_profiles.insert("p".into(), BfdProfile::default());
            c.peers[0].bfd_profile = Some("p".into());
            f(&mut c);
            c.validate()
        };
        assert_eq!(with(&|_| {}), Ok(()));
        assert_eq!(
            with(&|c| c.peers[0].bfd_profile = Some("nope".into())),
            Err(ConfigError::UnknownBfdProfile {
                peer: "leaf1".into(),
                profile: "nope".into()
            })
        );
        let edit =
            |f: fn(&mut BfdProfile)| move |c: &mut Config| f(c.bfd_profiles.get_mut("p").unwrap());
        assert!(matches!(
            with(&edit(|p| p.receive_interval = 9)),
            Err(ConfigError::BfdInterval {
                field: "receive_interval",
                value: 9,
                ..
            })
        ));
        assert!(matches!(
            with(&edit(|p| p.transmit_interval = 60_001)),
            Err(ConfigError::BfdInterval {
                field: "transmit_interval",
                ..
            })
        ));
        assert_eq!(
            with(&edit(|p| p.detect_multiplier = 0)),
            Err(ConfigError::BfdDetectMultiplier("p".into()))
        );
        assert_eq!(
            with(&edit(|p| p.echo_mode = true)),
            Err(ConfigError::BfdEcho("p".into()))
        );
    }
}
