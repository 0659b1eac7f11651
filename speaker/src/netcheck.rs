//! Node facts that decide whether routed office traffic gets through this node, read over
//! rtnetlink (`NETLINK_ROUTE`): IPv4 and IPv6 forwarding and IPv4 reverse-path filtering, from
//! the kernel's netconf dump (`RTM_GETNETCONF`, one entry per interface plus `all` and
//! `default`) and interface names from the link dump (`RTM_GETLINK`).
//!
//! The socket code is a thin edge; parsing ([`parse_dump`]) and the decision ([`facts_from`])
//! are pure and never panic on bad bytes.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

// linux/netlink.h, linux/rtnetlink.h, linux/netconf.h, linux/if_link.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
const NETCONFA_RP_FILTER: u16 = 3;
/// The `all` pseudo-interface of a netconf dump (`net.ipv4.conf.all.*`).
pub const NETCONFA_IFINDEX_ALL: i32 = -1;
/// The `default` pseudo-interface (settings new interfaces start with).
pub const NETCONFA_IFINDEX_DEFAULT: i32 = -2;
const IFLA_IFNAME: u16 = 3;
/// `struct netconfmsg` (one octet) padded to NLMSG_ALIGNTO.
const NETCONFMSG_LEN: usize = 4;
/// `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// Node facts that decide whether routed office traffic can get through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeFacts {
    pub ipv4_forwarding: Option<bool>,
    pub ipv6_forwarding: Option<bool>,
    /// Interfaces whose effective rp_filter (max of `all` and the interface) is 1 (strict).
    pub strict_rp_filter: Vec<String>,
    /// The check could not be made (the facts above are then unknown).
    pub error: Option<String>,
}

impl NodeFacts {
    /// Read over rtnetlink in this network namespace; a failure is kept in `error`.
    pub fn read() -> Self {
        read().unwrap_or_else(|e| NodeFacts {
            error: Some(e.to_string()),
            ..NodeFacts::default()
        })
    }
}

/// One entry of a netconf dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub family: u8,
    /// An interface index, or [`NETCONFA_IFINDEX_ALL`] / [`NETCONFA_IFINDEX_DEFAULT`].
    pub ifindex: i32,
    pub forwarding: Option<u32>,
    pub rp_filter: Option<u32>,
}

/// What a dump answer holds, by message type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dump {
    pub netconf: Vec<NetConf>,
    /// Interface index → name.
    pub links: BTreeMap<i32, String>,
    /// NLMSG_DONE seen: the dump is complete.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetcheckError {
    #[error("netlink socket: {0}")]
    Socket(String),
    #[error("netlink request refused: errno {0}")]
    Refused(i32),
    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
    #[error("netconf dump has no 'all' entry for the {0} family")]
    NoAll(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes (type, value) after a fixed header of `skip` octets.
fn attributes(payload: &[u8], skip: usize) -> Result<Vec<(u16, &[u8])>, NetcheckError> {
    let mut out = Vec::new();
    let mut at = skip;
    while at + 4 <= payload.len() {
        let len = usize::from(u16_at(payload, at).ok_or(NetcheckError::Malformed("rtattr"))?);
        // NLA_F_NESTED / NLA_F_NET_BYTEORDER live in the top bits of the type.
        let ty = u16_at(payload, at + 2).ok_or(NetcheckError::Malformed("rtattr"))? & 0x3fff;
        if len < 4 || at + len > payload.len() {
            return Err(NetcheckError::Malformed("rtattr length"));
        }
        out.push((ty, &payload[at + 4..at + len]));
        at += align4(len);
    }
    Ok(out)
}

/// Parse the messages of one `recv` of a dump answer into `dump` (pure).
pub fn parse_dump(buf: &[u8], seq: u32, dump: &mut Dump) -> Result<(), NetcheckError> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(NetcheckError::Malformed("nlmsghdr"))? as usize;
        let ty = u16_at(buf, at + 4).ok_or(NetcheckError::Malformed("nlmsghdr"))?;
        let msg_seq = u32_at(buf, at + 8).ok_or(NetcheckError::Malformed("nlmsghdr"))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(NetcheckError::Malformed("nlmsghdr length"));
        }
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        at += align4(len);
        if msg_seq != seq {
            // An answer to someone else's request on this socket: not ours.
            continue;
        }
        match ty {
            NLMSG_DONE => {
                dump.done = true;
                return Ok(());
            }
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).ok_or(NetcheckError::Malformed("nlmsgerr"))? as i32;
                if errno != 0 {
                    return Err(NetcheckError::Refused(-errno));
                }
            }
            RTM_NEWNETCONF => {
                let family = *payload
                    .first()
                    .ok_or(NetcheckError::Malformed("netconfmsg"))?;
                let mut nc = NetConf {
                    family,
                    ifindex: 0,
                    forwarding: None,
                    rp_filter: None,
                };
                let mut has_index = false;
                for (t, v) in attributes(payload, NETCONFMSG_LEN)? {
                    let val = u32_at(v, 0);
                    match t {
                        NETCONFA_IFINDEX => {
                            nc.ifindex = val.ok_or(NetcheckError::Malformed("ifindex"))? as i32;
                            has_index = true;
                        }
                        NETCONFA_FORWARDING => nc.forwarding = val,
                        NETCONFA_RP_FILTER => nc.rp_filter = val,
                        _ => {}
                    }
                }
                if has_index {
                    dump.netconf.push(nc);
                }
            }
            RTM_NEWLINK => {
                let index = u32_at(payload, 4).ok_or(NetcheckError::Malformed("ifinfomsg"))? as i32;
                for (t, v) in attributes(payload, IFINFOMSG_LEN)? {
                    if t == IFLA_IFNAME {
                        let name = v.split(|b| *b == 0).next().unwrap_or_default();
                        dump.links
                            .insert(index, String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The decision (pure): forwarding from the `all` entries (what `net.ipv4.ip_forward` and
/// `net.ipv6.conf.all.forwarding` show), and strict reverse-path filtering per interface. The
/// kernel applies the larger of `all` and the interface's value (`IN_DEV_RPFILTER`), and 1
/// (strict, RFC 3704 §2.2) drops office traffic that arrives on one interface while the route
/// back leaves through another; 2 (loose) does not.
pub fn facts_from(dump: &Dump) -> Result<NodeFacts, NetcheckError> {
    let all = |family| {
        dump.netconf
            .iter()
            .find(|n| n.family == family && n.ifindex == NETCONFA_IFINDEX_ALL)
    };
    let v4 = all(AF_INET).ok_or(NetcheckError::NoAll("IPv4"))?;
    let v6 = all(AF_INET6);
    let all_rp = v4.rp_filter.unwrap_or(0);
    let mut strict: Vec<String> = dump
        .netconf
        .iter()
        .filter(|n| n.family == AF_INET && n.ifindex > 0)
        .filter(|n| all_rp.max(n.rp_filter.unwrap_or(0)) == 1)
        .filter_map(|n| {
            let name = dump
                .links
                .get(&n.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {}", n.ifindex));
            // Loopback traffic is never routed office traffic.
            (name != "lo").then_some(name)
        })
        .collect();
    strict.sort();
    Ok(NodeFacts {
        ipv4_forwarding: v4.forwarding.map(|f| f != 0),
        // A kernel without IPv6 has no AF_INET6 netconf: unknown, not off.
        ipv6_forwarding: v6.and_then(|n| n.forwarding).map(|f| f != 0),
        strict_rp_filter: strict,
        error: None,
    })
}

fn sock_err(e: nix::Error) -> NetcheckError {
    NetcheckError::Socket(e.desc().to_owned())
}

/// Send one dump request (`ty`, with a `header_len`-octet family header) and collect the answer.
fn dump_request(
    fd: &OwnedFd,
    ty: u16,
    family: u8,
    header_len: usize,
    seq: u32,
    dump: &mut Dump,
) -> Result<(), NetcheckError> {
    let len = NLMSG_HDRLEN + header_len;
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&ty.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.push(family);
    req.resize(len, 0);
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(sock_err)?;
    dump.done = false;
    let mut buf = vec![0u8; 64 * 1024];
    while !dump.done {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(sock_err)?;
        if n == 0 {
            return Err(NetcheckError::Malformed("netlink socket closed mid-dump"));
        }
        parse_dump(&buf[..n], seq, dump)?;
    }
    Ok(())
}

/// Read the node facts over rtnetlink in the calling thread's network namespace.
pub fn read() -> Result<NodeFacts, NetcheckError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(sock_err)?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: Duration::from_secs(2).as_secs() as libc::time_t,
            tv_usec: 0,
        }),
    )
    .map_err(sock_err)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sock_err)?;
    let mut dump = Dump::default();
    dump_request(&fd, RTM_GETLINK, 0, IFINFOMSG_LEN, 1, &mut dump)?;
    dump_request(&fd, RTM_GETNETCONF, AF_INET, NETCONFMSG_LEN, 2, &mut dump)?;
    // A kernel without IPv6 refuses the AF_INET6 dump: IPv6 forwarding stays unknown.
    if let Err(e) = dump_request(&fd, RTM_GETNETCONF, AF_INET6, NETCONFMSG_LEN, 3, &mut dump) {
        tracing::debug!(error = %e, "no IPv6 netconf");
    }
    facts_from(&dump)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, val: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(val);
        a.resize(align4(a.len()), 0);
        a
    }

    fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn netconf(family: u8, ifindex: i32, fwd: u32, rp: Option<u32>) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend(attr(NETCONFA_IFINDEX, &ifindex.to_ne_bytes()));
        p.extend(attr(NETCONFA_FORWARDING, &fwd.to_ne_bytes()));
        if let Some(rp) = rp {
            p.extend(attr(NETCONFA_RP_FILTER, &rp.to_ne_bytes()));
        }
        msg(RTM_NEWNETCONF, 2, &p)
    }

    fn link(index: i32, name: &str) -> Vec<u8> {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        p.extend(attr(IFLA_IFNAME, &n));
        msg(RTM_NEWLINK, 1, &p)
    }

    fn parse(seq: u32, msgs: &[Vec<u8>], dump: &mut Dump) {
        let buf: Vec<u8> = msgs.concat();
        parse_dump(&buf, seq, dump).unwrap();
    }

    #[test]
    fn forwarding_comes_from_the_all_entries_and_rp_filter_is_the_max_of_all_and_the_interface() {
        let mut d = Dump::default();
        parse(
            1,
            &[
                link(1, "lo"),
                link(2, "eth0"),
                link(3, "eth1"),
                msg(NLMSG_DONE, 1, &[0; 4]),
            ],
            &mut d,
        );
        assert!(d.done);
        parse(
            2,
            &[
                netconf(AF_INET, NETCONFA_IFINDEX_ALL, 0, Some(0)),
                netconf(AF_INET, NETCONFA_IFINDEX_DEFAULT, 1, Some(1)),
                netconf(AF_INET, 1, 1, Some(1)),
                netconf(AF_INET, 2, 1, Some(1)),
                netconf(AF_INET, 3, 1, Some(2)),
                msg(NLMSG_DONE, 2, &[0; 4]),
            ],
            &mut d,
        );
        let f = facts_from(&d).unwrap();
        assert_eq!(f.ipv4_forwarding, Some(false));
        assert_eq!(f.ipv6_forwarding, None, "no AF_INET6 dump: unknown");
        assert_eq!(f.strict_rp_filter, ["eth0"], "lo is skipped, 2 is loose");

        // all=1 makes strict every interface not set to loose; all=2 wins over an
        // interface's 1.
        d.netconf[0].rp_filter = Some(1);
        assert_eq!(facts_from(&d).unwrap().strict_rp_filter, ["eth0"]);
        d.netconf[4].rp_filter = Some(0);
        assert_eq!(facts_from(&d).unwrap().strict_rp_filter, ["eth0", "eth1"]);
        d.netconf[0].rp_filter = Some(2);
        assert!(facts_from(&d).unwrap().strict_rp_filter.is_empty());
    }

    #[test]
    fn an_error_answer_is_refused_with_its_errno() {
        let mut p = (-(libc::EOPNOTSUPP)).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]);
        let mut d = Dump::default();
        let buf = msg(NLMSG_ERROR, 3, &p);
        assert_eq!(
            parse_dump(&buf, 3, &mut d),
            Err(NetcheckError::Refused(libc::EOPNOTSUPP))
        );
    }

    #[test]
    fn truncated_or_lying_lengths_are_errors_not_panics() {
        let good = netconf(AF_INET, NETCONFA_IFINDEX_ALL, 1, Some(0));
        for cut in 0..good.len() {
            let mut d = Dump::default();
            let _ = parse_dump(&good[..cut], 2, &mut d);
        }
        let mut lying = good.clone();
        lying[0] = 0xff;
        assert!(parse_dump(&lying, 2, &mut Dump::default()).is_err());
        let mut bad_attr = good;
        bad_attr[NLMSG_HDRLEN + NETCONFMSG_LEN] = 200;
        assert!(parse_dump(&bad_attr, 2, &mut Dump::default()).is_err());
    }

    #[test]
    fn answers_to_other_requests_are_ignored() {
        let mut d = Dump::default();
        parse(
            5,
            &[
                netconf(AF_INET, NETCONFA_IFINDEX_ALL, 1, Some(0)),
                msg(NLMSG_DONE, 9, &[0; 4]),
            ],
            &mut d,
        );
        assert!(!d.done, "the DONE of another request");
        assert!(d.netconf.is_empty(), "the netconf entry of another request");
    }

    #[test]
    fn without_an_ipv4_all_entry_the_check_fails() {
        assert_eq!(
            facts_from(&Dump::default()),
            Err(NetcheckError::NoAll("IPv4"))
        );
    }
}
