//! The raw socket options socket2 does not offer: TCP_MD5SIG (RFC 2385) and the GTSM minimum
//! TTL / hop count (RFC 5082). This is the only module in the workspace allowed `unsafe`: each
//! block is one `setsockopt(2)` on a caller-owned descriptor with a pointer to a local value
//! and its exact size, which is all the kernel reads.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_MD5SIG_MAXKEYLEN` from `<linux/tcp.h>`.
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (libc does not export it).
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: libc::sockaddr_storage,
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; MAX_KEY_LEN],
}

/// Install (or, with an empty key, remove) the RFC 2385 key used for segments to and from
/// `peer` on `fd`. On a listening socket it applies to connections accepted from `peer`.
/// The kernel compares the address family of the socket with `tcpm_addr`, so an IPv4 peer on
/// an IPv6 socket is given as an IPv4-mapped address.
pub fn set_tcp_md5sig(
    fd: BorrowedFd<'_>,
    socket_is_v6: bool,
    peer: IpAddr,
    key: &[u8],
) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 octets",
        ));
    }
    let peer = match (socket_is_v6, peer) {
        (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (_, p) => p,
    };
    // SAFETY: sockaddr_storage and the rest are plain integers/arrays; all-zero is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    write_sockaddr(&mut sig.tcpm_addr, SocketAddr::new(peer, 0));
    sig.tcpm_keylen = key.len() as u16;
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    let r = setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig);
    // Do not leave key bytes on the stack longer than needed.
    sig.tcpm_key.fill(0);
    r
}

/// GTSM (RFC 5082 §3): drop segments whose TTL / hop limit is below `min` (255 for a directly
/// connected peer).
pub fn set_min_ttl(fd: BorrowedFd<'_>, is_v6: bool, min: u8) -> io::Result<()> {
    let v: libc::c_int = min.into();
    if is_v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &v)
    }
}

fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
        }
    }
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the call; `value` points to a T that lives
    // across the call and `size_of::<T>()` is its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn struct_layout_matches_linux_tcp_h() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn md5_key_is_accepted_on_ipv4_and_ipv6_sockets() {
        let s4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_tcp_md5sig(s4.as_fd(), false, "127.0.0.1".parse().unwrap(), b"secret").unwrap();
        set_tcp_md5sig(s4.as_fd(), false, "127.0.0.1".parse().unwrap(), b"").unwrap();
        let s6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_tcp_md5sig(s6.as_fd(), true, "::1".parse().unwrap(), b"secret").unwrap();
        set_tcp_md5sig(s6.as_fd(), true, "127.0.0.1".parse().unwrap(), b"secret").unwrap();
        assert!(
            set_tcp_md5sig(s4.as_fd(), false, "127.0.0.1".parse().unwrap(), &[b'x'; 81]).is_err()
        );
    }

    #[test]
    fn min_ttl_is_accepted() {
        let s4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_min_ttl(s4.as_fd(), false, 255).unwrap();
        let s6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_min_ttl(s6.as_fd(), true, 255).unwrap();
    }
}
