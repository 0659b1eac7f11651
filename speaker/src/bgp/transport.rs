//! TCP for BGP (RFC 4271 §8: port 179): outbound connects with a chosen source address and
//! peer port, a passive listener, the TTL policy (eBGP single hop, multihop, or GTSM per
//! RFC 5082), TCP MD5 signatures (RFC 2385) and TCP_NODELAY.
//!
//! Sockets are prepared with `socket2` and handed to tokio; the two options socket2 lacks
//! (TCP_MD5SIG, IP_MINTTL / IPV6_MINHOPCOUNT) live in the small `md5` module.

mod md5;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The well-known BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// A TCP MD5 key (RFC 2385). Its bytes are never logged: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Md5Key {
    /// Read a key from a file: its content with one trailing newline (`\n` or `\r\n`) removed,
    /// so that `echo secret > file` works as people expect.
    pub fn from_file(path: &Path) -> Result<Self, TransportError> {
        let mut bytes = std::fs::read(path).map_err(|source| TransportError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Self::new(bytes).map_err(|reason| TransportError::BadKey {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn new(bytes: Vec<u8>) -> Result<Self, &'static str> {
        if bytes.is_empty() {
            return Err("the key is empty");
        }
        if bytes.len() > md5::MAX_KEY_LEN {
            return Err("the key is longer than 80 octets (TCP_MD5SIG_MAXKEYLEN)");
        }
        Ok(Self(bytes))
    }
}

impl Drop for Md5Key {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// How the IP TTL / hop limit of the session's packets is set and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlPolicy {
    /// Leave the system default (iBGP).
    #[default]
    Default,
    /// Send with this TTL: 1 for directly connected eBGP (RFC 4271 does not mandate it, but
    /// every implementation does so), more for eBGP multihop.
    Ttl(u8),
    /// GTSM (RFC 5082 §3): send with TTL 255 and drop anything that arrives with a TTL below
    /// 256 - `hops` (255 for a directly connected peer).
    Gtsm { hops: u8 },
}

impl TtlPolicy {
    fn min_ttl(self) -> Option<u8> {
        match self {
            TtlPolicy::Gtsm { hops } => Some(255u8.saturating_sub(hops.saturating_sub(1))),
            _ => None,
        }
    }

    fn out_ttl(self) -> Option<u8> {
        match self {
            TtlPolicy::Default => None,
            TtlPolicy::Ttl(t) => Some(t),
            TtlPolicy::Gtsm { .. } => Some(255),
        }
    }
}

/// Who a peer is, everywhere: configuration conflicts, inbound connections, logs and status.
/// Its address and port (two BGP instances of one router are one address and two ports) and,
/// for a link-local address, the interface it is on: `fe80::1` on `eth0` and on `eth1` are
/// two peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    pub addr: SocketAddr,
    pub interface: Option<String>,
}

impl From<SocketAddr> for PeerId {
    /// A peer without an interface.
    fn from(addr: SocketAddr) -> Self {
        Self {
            addr,
            interface: None,
        }
    }
}

impl fmt::Display for PeerId {
    /// `192.0.2.1:179`, `[2001:db8::1]:179`, `[fe80::1%eth0]:179`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interface {
            Some(i) => write!(f, "[{}%{i}]:{}", self.addr.ip(), self.addr.port()),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Everything needed to open (or accept) the TCP connection of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    pub peer: SocketAddr,
    /// The interface of a link-local peer address: its index, looked up at each connection
    /// attempt (the interface may appear later, or be recreated with another index), is the
    /// scope of the peer address and of `source`.
    pub interface: Option<String>,
    pub source: Option<IpAddr>,
    pub ttl: TtlPolicy,
    pub md5: Option<Md5Key>,
    pub connect_timeout: Duration,
}

impl TransportConfig {
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            interface: None,
            source: None,
            ttl: TtlPolicy::Default,
            md5: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn id(&self) -> PeerId {
        PeerId {
            addr: self.peer,
            interface: self.interface.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read TCP MD5 key file {path}: {source}")]
    KeyFile { path: PathBuf, source: io::Error },
    #[error("bad TCP MD5 key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: &'static str },
    #[error("source address {source_addr} is not of the same family as peer {peer}")]
    FamilyMismatch { source_addr: IpAddr, peer: IpAddr },
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("connect to {peer} timed out")]
    ConnectTimeout { peer: SocketAddr },
    #[error("interface {name} of the link-local peer: {source} (retrying later)")]
    Interface { name: String, source: nix::Error },
}

/// The index of interface `name` now (`if_nametoindex`).
pub fn interface_index(name: &str) -> Result<u32, TransportError> {
    nix::net::if_::if_nametoindex(name).map_err(|source| TransportError::Interface {
        name: name.to_owned(),
        source,
    })
}

/// `addr` with `scope` as its IPv6 scope id (the interface index of a link-local address).
fn scoped(addr: SocketAddr, scope: Option<u32>) -> SocketAddr {
    match (addr, scope) {
        (SocketAddr::V6(a), Some(scope)) => {
            SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), a.flowinfo(), scope))
        }
        (a, _) => a,
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io { op, source }
}

fn domain_of(addr: IpAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// Apply the TTL policy on a socket (outbound TTL and, for GTSM, the minimum inbound TTL).
/// `is_v6` is the family of the traffic, not of the socket: an IPv4 peer on an IPv6 socket
/// (IPv4-mapped) takes the IPv4 options, the only ones Linux applies to its packets.
fn apply_ttl(sock: &Socket, is_v6: bool, ttl: TtlPolicy) -> Result<(), TransportError> {
    if let Some(t) = ttl.out_ttl() {
        if is_v6 {
            sock.set_unicast_hops_v6(t.into())
                .map_err(io_err("set IPV6_UNICAST_HOPS"))?;
        } else {
            sock.set_ttl_v4(t.into()).map_err(io_err("set IP_TTL"))?;
        }
    }
    if let Some(min) = ttl.min_ttl() {
        md5::set_min_ttl(sock.as_fd(), is_v6, min).map_err(io_err("set IP_MINTTL"))?;
    }
    Ok(())
}

/// Open the TCP connection to a peer (RFC 4271 §8: the "active" side).
pub async fn connect(cfg: &TransportConfig) -> Result<TcpStream, TransportError> {
    let peer_ip = cfg.peer.ip();
    let is_v6 = peer_ip.is_ipv6();
    let scope = cfg.interface.as_deref().map(interface_index).transpose()?;
    let peer = scoped(cfg.peer, scope);
    let sock = Socket::new(domain_of(peer_ip), Type::STREAM, None).map_err(io_err("socket"))?;
    sock.set_nonblocking(true)
        .map_err(io_err("set O_NONBLOCK"))?;
    // Keepalives and UPDATEs are small and latency matters more than packing (RFC 4271 §8
    // timers assume prompt delivery); the session batches writes itself.
    sock.set_tcp_nodelay(true)
        .map_err(io_err("set TCP_NODELAY"))?;
    if let Some(src) = cfg.source {
        if src.is_ipv6() != is_v6 {
            return Err(TransportError::FamilyMismatch {
                source_addr: src,
                peer: peer_ip,
            });
        }
        sock.bind(&scoped(SocketAddr::new(src, 0), scope).into())
            .map_err(io_err("bind source address"))?;
    }
    apply_ttl(&sock, is_v6, cfg.ttl)?;
    if let Some(key) = &cfg.md5 {
        md5::set_tcp_md5sig(sock.as_fd(), is_v6, peer_ip, &key.0)
            .map_err(io_err("set TCP_MD5SIG"))?;
    }
    let std_stream: std::net::TcpStream = sock.into();
    let tsock = TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(cfg.connect_timeout, tsock.connect(peer)).await {
        Ok(r) => r.map_err(io_err("connect")),
        Err(_) => Err(TransportError::ConnectTimeout { peer: cfg.peer }),
    }
}

/// The passive side: one listening socket shared by every peer (RFC 4271 §8.2.1: the speaker
/// listens on port 179). Keys are installed per peer address, before any SYN from that peer.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    is_v6: bool,
}

impl Listener {
    /// Bind `addr`. An IPv6 wildcard also accepts IPv4 peers (as IPv4-mapped addresses).
    pub fn bind(addr: SocketAddr) -> Result<Self, TransportError> {
        let is_v6 = addr.is_ipv6();
        let sock =
            Socket::new(domain_of(addr.ip()), Type::STREAM, None).map_err(io_err("socket"))?;
        sock.set_reuse_address(true)
            .map_err(io_err("set SO_REUSEADDR"))?;
        // A reload binds the new listener before it closes the old one, which may hold the
        // same port (`0.0.0.0:179` → `192.0.2.1:179`): only sockets that all set SO_REUSEPORT
        // (and belong to the same user) can overlap.
        sock.set_reuse_port(true)
            .map_err(io_err("set SO_REUSEPORT"))?;
        if is_v6 {
            sock.set_only_v6(false)
                .map_err(io_err("clear IPV6_V6ONLY"))?;
        }
        sock.set_nonblocking(true)
            .map_err(io_err("set O_NONBLOCK"))?;
        sock.set_tcp_nodelay(true)
            .map_err(io_err("set TCP_NODELAY"))?;
        // The SYN-ACK leaves with the listener's TTL, before any peer's policy can be applied:
        // a GTSM peer (RFC 5082 §3) drops it unless it is 255. Accepted connections inherit
        // it; `configure_accepted` then sets the peer's own TTL. A `::` listener sends IPv4
        // peers' SYN-ACKs with the IPv4 TTL, so both are set.
        sock.set_ttl_v4(255)
            .map_err(io_err("set IP_TTL on listener"))?;
        if is_v6 {
            sock.set_unicast_hops_v6(255)
                .map_err(io_err("set IPV6_UNICAST_HOPS on listener"))?;
        }
        sock.bind(&addr.into()).map_err(io_err("bind listener"))?;
        sock.listen(64).map_err(io_err("listen"))?;
        let std_listener: std::net::TcpListener = sock.into();
        let inner = TcpListener::from_std(std_listener).map_err(io_err("register listener"))?;
        Ok(Self { inner, is_v6 })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Refuse handshakes whose packets arrive with a TTL below `min` (GTSM on the listener,
    /// RFC 5082 §3). It applies to every peer on this listener, so it is only for a listener
    /// whose peers all use GTSM; otherwise the minimum TTL is enforced per connection from
    /// `configure_accepted` on.
    pub fn set_min_ttl(&self, min: u8) -> Result<(), TransportError> {
        let fd = self.inner.as_fd();
        md5::set_min_ttl(fd, false, min).map_err(io_err("set IP_MINTTL on listener"))?;
        if self.is_v6 {
            md5::set_min_ttl(fd, true, min).map_err(io_err("set IPV6_MINHOPCOUNT on listener"))?;
        }
        Ok(())
    }

    /// Install (`Some`) or remove (`None`) the MD5 key for connections from `peer`.
    pub fn set_peer_key(&self, peer: IpAddr, key: Option<&Md5Key>) -> Result<(), TransportError> {
        let bytes: &[u8] = key.map(|k| k.0.as_slice()).unwrap_or(&[]);
        md5::set_tcp_md5sig(self.inner.as_fd(), self.is_v6, peer, bytes)
            .map_err(io_err("set TCP_MD5SIG on listener"))
    }

    /// Accept one connection; the peer address is unmapped (IPv4-mapped IPv6 → IPv4). A
    /// link-local peer address keeps its scope id: the index of the interface it came in on.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr), TransportError> {
        let (stream, mut addr) = self.inner.accept().await.map_err(io_err("accept"))?;
        addr.set_ip(unmap(addr.ip()));
        Ok((stream, addr))
    }

    /// The connections already waiting in the backlog, without waiting for more: a listener
    /// being replaced hands them over instead of resetting them when it closes.
    pub fn accept_pending(&self) -> Vec<(TcpStream, SocketAddr)> {
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        while let std::task::Poll::Ready(Ok((stream, mut addr))) = self.inner.poll_accept(&mut cx) {
            addr.set_ip(unmap(addr.ip()));
            out.push((stream, addr));
        }
        out
    }
}

/// Configure an accepted connection for its peer's TTL policy. With GTSM, the minimum TTL is
/// enforced from here on; the handshake itself was accepted by the shared listener.
pub fn configure_accepted(stream: &TcpStream, ttl: TtlPolicy) -> Result<(), TransportError> {
    stream
        .set_nodelay(true)
        .map_err(io_err("set TCP_NODELAY"))?;
    // The family of the traffic: an IPv4 peer on a `::` listener arrives IPv4-mapped, and
    // Linux applies only the IPv4 options (IP_TTL, IP_MINTTL) to its packets.
    let is_v6 = unmap(stream.peer_addr().map_err(io_err("getpeername"))?.ip()).is_ipv6();
    let sock = socket2::SockRef::from(stream);
    apply_ttl(&sock, is_v6, ttl)
}

/// RFC 2545 §3: the link-local address to send beside our global IPv6 next hop `local` when
/// `peer` shares our subnet, from the addresses of our interfaces.
pub fn link_local_next_hop(local: Ipv6Addr, peer: Ipv6Addr) -> Option<Ipv6Addr> {
    link_local_beside(&interface_addresses()?, local, peer)
}

/// Our IPv6 addresses: (interface, address, prefix length).
fn interface_addresses() -> Option<Vec<(String, Ipv6Addr, u8)>> {
    Some(
        nix::ifaddrs::getifaddrs()
            .ok()?
            .filter_map(|ia| {
                let a = ia.address?.as_sockaddr_in6()?.ip();
                let m = ia.netmask?.as_sockaddr_in6()?.ip();
                Some((ia.interface_name, a, u128::from(m).leading_ones() as u8))
            })
            .collect(),
    )
}

/// The IPv6 next hops of `next_hop: self` on a session from our address `local` to `peer`:
/// (the next hop, the link-local address sent beside it), `None` when nothing goes beside it.
/// `interface` is the interface of a link-local peer (see `self_next_hops_from`).
pub fn self_next_hops(
    local: Ipv6Addr,
    peer: Ipv6Addr,
    interface: Option<&str>,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    self_next_hops_from(&interface_addresses()?, local, peer, interface)
}

/// The pure part of `self_next_hops`; `addrs` are (interface, address, prefix length).
/// - A session between global addresses: our address, and beside it our link-local address
///   when the peer shares our subnet (`link_local_beside`).
/// - A session between link-local addresses (on `interface`): RFC 2545 §3 wants a global
///   address first, so the first global address of that interface goes first and our
///   link-local address beside it. An interface with link-local addresses only (unnumbered)
///   has no global one to give: as FRR does there, the link-local address takes the global
///   place too and is sent twice (32 octets), which receivers read as "link-local only".
pub fn self_next_hops_from(
    addrs: &[(String, Ipv6Addr, u8)],
    local: Ipv6Addr,
    peer: Ipv6Addr,
    interface: Option<&str>,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    match interface {
        Some(iface) if local.is_unicast_link_local() => {
            let global = addrs
                .iter()
                .find(|(i, a, _)| {
                    i == iface
                        && !a.is_unicast_link_local()
                        && !a.is_loopback()
                        && !a.is_multicast()
                        && !a.is_unspecified()
                })
                .map_or(local, |(_, a, _)| *a);
            Some((global, local))
        }
        _ => link_local_beside(addrs, local, peer).map(|ll| (local, ll)),
    }
}

/// The pure part of `link_local_next_hop`: `addrs` are (interface, address, prefix length).
/// None when `local` is on no interface, `peer` is outside its subnet (the peer cannot reach
/// a link-local address of ours), or the interface has no link-local address.
pub fn link_local_beside(
    addrs: &[(String, Ipv6Addr, u8)],
    local: Ipv6Addr,
    peer: Ipv6Addr,
) -> Option<Ipv6Addr> {
    let (iface, _, len) = addrs.iter().find(|(_, a, _)| *a == local)?;
    let net = ipnet::Ipv6Net::new(local, *len).ok()?.trunc();
    if !net.contains(&peer) {
        return None;
    }
    addrs
        .iter()
        .find(|(i, a, _)| i == iface && a.is_unicast_link_local())
        .map(|(_, a, _)| *a)
}

/// IPv4-mapped IPv6 address (::ffff:a.b.c.d) → IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The unspecified address of the family of `ip`.
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn md5_key_debug_is_redacted() {
        let k = Md5Key::new(b"hunter2".to_vec()).unwrap();
        assert_eq!(format!("{k:?}"), "<redacted>");
        let cfg = TransportConfig {
            md5: Some(k),
            ..TransportConfig::new("127.0.0.1:179".parse().unwrap())
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn md5_key_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, b"s3cret\n").unwrap();
        assert_eq!(Md5Key::from_file(&p).unwrap().0, b"s3cret");
        std::fs::write(&p, b"\n").unwrap();
        assert!(matches!(
            Md5Key::from_file(&p),
            Err(TransportError::BadKey { .. })
        ));
        std::fs::write(&p, [b'a'; 81]).unwrap();
        assert!(matches!(
            Md5Key::from_file(&p),
            Err(TransportError::BadKey { .. })
        ));
        assert!(matches!(
            Md5Key::from_file(&dir.path().join("missing")),
            Err(TransportError::KeyFile { .. })
        ));
    }

    #[test]
    fn the_link_local_next_hop_is_the_one_of_the_interface_shared_with_the_peer() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let addrs = vec![
            ("eth0".to_owned(), a("2001:db8::1"), 64),
            ("eth0".to_owned(), a("fe80::1"), 64),
            ("eth1".to_owned(), a("2001:db8:1::1"), 64),
            ("eth1".to_owned(), a("fe80::2"), 64),
            ("eth2".to_owned(), a("2001:db8:2::1"), 64),
        ];
        let beside = |l, p| link_local_beside(&addrs, a(l), a(p));
        assert_eq!(beside("2001:db8::1", "2001:db8::2"), Some(a("fe80::1")));
        assert_eq!(beside("2001:db8:1::1", "2001:db8:1::9"), Some(a("fe80::2")));
        // A peer beyond our subnet (multihop) cannot reach a link-local address.
        assert_eq!(beside("2001:db8::1", "2001:db8:5::2"), None);
        // No link-local address on that interface, or no such local address.
        assert_eq!(beside("2001:db8:2::1", "2001:db8:2::2"), None);
        assert_eq!(beside("2001:db8:9::1", "2001:db8:9::2"), None);
    }

    #[test]
    fn next_hop_self_on_a_link_local_session_is_the_interface_global_then_the_link_local() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let addrs = vec![
            ("eth0".to_owned(), a("fe80::1"), 64),
            ("eth0".to_owned(), a("2001:db8::1"), 64),
            ("eth1".to_owned(), a("fe80::1"), 64),
            ("lo".to_owned(), a("::1"), 128),
        ];
        let hops = |l, p, i| self_next_hops_from(&addrs, a(l), a(p), i);
        // RFC 2545 §3: the global address of the peer's interface, the link-local beside it.
        assert_eq!(
            hops("fe80::1", "fe80::2", Some("eth0")),
            Some((a("2001:db8::1"), a("fe80::1")))
        );
        // Link-local only (unnumbered): the link-local address in both places.
        assert_eq!(
            hops("fe80::1", "fe80::2", Some("eth1")),
            Some((a("fe80::1"), a("fe80::1")))
        );
        // A session between global addresses is as before.
        assert_eq!(
            hops("2001:db8::1", "2001:db8::2", None),
            Some((a("2001:db8::1"), a("fe80::1")))
        );
        assert_eq!(hops("2001:db8::1", "2001:db8:5::2", None), None);
    }

    #[tokio::test]
    async fn a_missing_interface_is_an_error_naming_it() {
        let mut cfg = TransportConfig::new("[fe80::2]:179".parse().unwrap());
        cfg.interface = Some("lb-no-such-if".into());
        let e = connect(&cfg).await.unwrap_err();
        assert!(
            matches!(e, TransportError::Interface { ref name, .. } if name == "lb-no-such-if"),
            "{e}"
        );
        assert!(e.to_string().contains("lb-no-such-if"), "{e}");
    }

    #[test]
    fn scoped_addresses_carry_the_interface_index() {
        let v6: SocketAddr = "[fe80::2]:179".parse().unwrap();
        match scoped(v6, Some(7)) {
            SocketAddr::V6(a) => assert_eq!((a.scope_id(), a.port()), (7, 179)),
            other => panic!("{other}"),
        }
        let v4: SocketAddr = "192.0.2.1:179".parse().unwrap();
        assert_eq!(scoped(v4, Some(7)), v4);
        assert_eq!(scoped(v6, None), v6);
    }

    #[test]
    fn gtsm_min_ttl_follows_rfc_5082() {
        assert_eq!(TtlPolicy::Gtsm { hops: 1 }.min_ttl(), Some(255));
        assert_eq!(TtlPolicy::Gtsm { hops: 3 }.min_ttl(), Some(253));
        assert_eq!(TtlPolicy::Gtsm { hops: 1 }.out_ttl(), Some(255));
        assert_eq!(TtlPolicy::Ttl(1).min_ttl(), None);
    }

    #[tokio::test]
    async fn connects_to_listener_on_custom_port_with_source_address_and_ttl() {
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let mut cfg = TransportConfig::new(addr);
        cfg.source = Some("127.0.0.1".parse().unwrap());
        cfg.ttl = TtlPolicy::Ttl(255);
        let (c, a) = tokio::join!(connect(&cfg), l.accept());
        let mut c = c.unwrap();
        let (mut s, peer) = a.unwrap();
        configure_accepted(&s, TtlPolicy::Gtsm { hops: 1 }).unwrap();
        assert_eq!(peer.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(socket2::SockRef::from(&c).ttl_v4().unwrap(), 255);
        assert!(socket2::SockRef::from(&c).tcp_nodelay().unwrap());
        // TTL 255 passes the GTSM check of the accepting side.
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn gtsm_drops_segments_that_arrive_with_a_lower_ttl() {
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut cfg = TransportConfig::new(l.local_addr().unwrap());
        cfg.ttl = TtlPolicy::Ttl(64);
        let (c, a) = tokio::join!(connect(&cfg), l.accept());
        let mut c = c.unwrap();
        let (mut s, _) = a.unwrap();
        configure_accepted(&s, TtlPolicy::Gtsm { hops: 1 }).unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        let got = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await;
        assert!(got.is_err(), "a segment with TTL 64 must not pass GTSM");
    }

    #[tokio::test]
    async fn a_gtsm_peer_connecting_to_the_listener_accepts_its_syn_ack() {
        // The peer checks the minimum TTL from its first segment on (RFC 5082 §3): a SYN-ACK
        // with the default TTL 64 is dropped and the connection never opens.
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut cfg = TransportConfig::new(l.local_addr().unwrap());
        cfg.ttl = TtlPolicy::Gtsm { hops: 1 };
        cfg.connect_timeout = Duration::from_secs(3);
        let (c, a) = tokio::join!(connect(&cfg), async {
            tokio::time::timeout(Duration::from_secs(4), l.accept()).await
        });
        c.expect("a GTSM peer connects to the listener");
        a.unwrap().unwrap();
    }

    #[tokio::test]
    async fn ipv4_peers_on_an_ipv6_wildcard_listener_get_the_ipv4_ttl_options() {
        let Ok(l) = Listener::bind("[::]:0".parse().unwrap()) else {
            panic!("an IPv6 wildcard listener is needed (IPv6 disabled on loopback?)");
        };
        let port = l.local_addr().unwrap().port();
        let mut cfg = TransportConfig::new(SocketAddr::new("127.0.0.1".parse().unwrap(), port));
        cfg.ttl = TtlPolicy::Ttl(64);
        let (c, a) = tokio::join!(connect(&cfg), l.accept());
        let mut c = c.unwrap();
        let (mut s, peer) = a.unwrap();
        assert_eq!(peer.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        configure_accepted(&s, TtlPolicy::Ttl(1)).unwrap();
        assert_eq!(socket2::SockRef::from(&s).ttl_v4().unwrap(), 1);
        // GTSM is enforced for the mapped peer: its TTL-64 segment is dropped.
        configure_accepted(&s, TtlPolicy::Gtsm { hops: 1 }).unwrap();
        assert_eq!(socket2::SockRef::from(&s).ttl_v4().unwrap(), 255);
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        let got = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await;
        assert!(got.is_err(), "a segment with TTL 64 must not pass GTSM");
    }

    #[tokio::test]
    async fn a_listener_with_a_minimum_ttl_refuses_handshakes_below_it() {
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        l.set_min_ttl(255).unwrap();
        let mut low = TransportConfig::new(l.local_addr().unwrap());
        low.ttl = TtlPolicy::Ttl(64);
        low.connect_timeout = Duration::from_millis(700);
        assert!(connect(&low).await.is_err(), "TTL 64 must not get through");
        let mut gtsm = TransportConfig::new(l.local_addr().unwrap());
        gtsm.ttl = TtlPolicy::Gtsm { hops: 1 };
        gtsm.connect_timeout = Duration::from_secs(3);
        let (c, a) = tokio::join!(connect(&gtsm), async {
            tokio::time::timeout(Duration::from_secs(4), l.accept()).await
        });
        c.unwrap();
        a.unwrap().unwrap();
    }

    #[tokio::test]
    async fn source_address_of_the_wrong_family_is_an_error() {
        let mut cfg = TransportConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.source = Some("::1".parse().unwrap());
        assert!(matches!(
            connect(&cfg).await,
            Err(TransportError::FamilyMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn md5_keys_must_match_for_the_connection_to_open() {
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        l.set_peer_key(lo, Some(&Md5Key::new(b"right".to_vec()).unwrap()))
            .unwrap();

        let mut good = TransportConfig::new(addr);
        good.md5 = Some(Md5Key::new(b"right".to_vec()).unwrap());
        let (c, a) = tokio::join!(connect(&good), l.accept());
        c.unwrap();
        a.unwrap();

        let mut bad = TransportConfig::new(addr);
        bad.md5 = Some(Md5Key::new(b"wrong".to_vec()).unwrap());
        bad.connect_timeout = Duration::from_millis(700);
        let accepted = tokio::time::timeout(Duration::from_millis(900), async {
            tokio::join!(connect(&bad), l.accept())
        })
        .await;
        match accepted {
            Err(_) => {}
            Ok((c, _)) => assert!(c.is_err(), "a wrong MD5 key must not connect"),
        }
    }
}
