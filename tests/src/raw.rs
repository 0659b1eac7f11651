//! Raw TCP for malformed-message tests: send arbitrary bytes to a BGP speaker (or accept its
//! connection) and read back exactly what it sent, from inside a test namespace.
//!
//! The socket lives in a tiny Python relay started in the namespace (`ip netns exec`; no
//! `setns` and so no `unsafe` here); its stdin/stdout carry the TCP payload unchanged.
//!
//! ```no_run
//! use std::time::Duration;
//! use leafbridge_tests::{Pair, raw::{RawBgp, open_message, keepalive_message, notification}};
//! let p = Pair::new("doc");
//! // ... a speaker listens on 192.0.2.1:179 in p.a ...
//! let conn = RawBgp::connect(&p.b, "192.0.2.1:179".parse().unwrap(), Duration::from_secs(5));
//! conn.send(&open_message(65002, 90, "192.0.2.2".parse().unwrap(), &[]));
//! let their_open = conn.recv_message(Duration::from_secs(5)).unwrap();
//! conn.send(&[0xff; 18]); // a header cut short
//! let reply = conn.recv_message(Duration::from_secs(5)).unwrap();
//! assert_eq!(notification(&reply).map(|n| n.0), Some(1)); // Message Header Error
//! # let _ = (their_open, keepalive_message());
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ChildStdin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::netns::{Netns, Process};
use crate::support::{require, wait_for};

const RELAY: &str = r#"import os, select, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if mode == "connect":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(float(sys.argv[4]))
        ttl, source, rcvbuf = sys.argv[5], sys.argv[6], sys.argv[7]
        if rcvbuf != "-":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(rcvbuf))
        if ttl != "-":
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, int(ttl))
            else:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(ttl))
        if source != "-":
            s.bind((source, 0))
        s.connect((host, port))
    else:
        l = socket.socket(fam, socket.SOCK_STREAM)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((host, port))
        l.listen(1)
        sys.stderr.write("listening\n"); sys.stderr.flush()
        s, peer = l.accept()
        l.close()
except OSError as e:
    sys.stderr.write("error: %s\n" % e); sys.stderr.flush()
    sys.exit(1)
s.settimeout(None)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sys.stderr.write("connected\n"); sys.stderr.flush()
read_socket = mode != "connect" or sys.argv[8] == "read"
inputs = [0, s] if read_socket else [0]
while True:
    ready, _, _ = select.select(inputs, [], [])
    if 0 in ready:
        d = os.read(0, 65536)
        if d:
            try:
                s.sendall(d)
            except OSError as e:
                sys.stderr.write("reset: %s\n" % e); sys.stderr.flush()
                break
        else:
            s.shutdown(socket.SHUT_WR)
            inputs.remove(0)
    if s in ready:
        try:
            d = s.recv(65536)
        except OSError as e:
            sys.stderr.write("reset: %s\n" % e); sys.stderr.flush()
            break
        if not d:
            sys.stderr.write("closed\n"); sys.stderr.flush()
            break
        os.write(1, d)
"#;

/// Socket options for [`RawBgp::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    /// IP TTL / IPv6 hop limit of our packets (e.g. 254 to fail a GTSM check).
    pub ttl: Option<u8>,
    /// Source address to bind before connecting.
    pub source: Option<std::net::IpAddr>,
    /// SO_RCVBUF before connecting (small: the peer's TCP window closes quickly).
    pub recv_buffer: Option<u32>,
    /// Never read from the socket: a peer that stops reading but keeps sending.
    pub never_read: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    data: Vec<u8>,
    read: usize,
    closed: bool,
}

/// One raw TCP connection relayed from a namespace.
#[derive(Debug)]
pub struct RawBgp {
    process: Process,
    stdin: Mutex<Option<ChildStdin>>,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
}

impl RawBgp {
    /// Connects from `ns` to `peer`; panics if the connection fails within `timeout`.
    #[track_caller]
    pub fn connect(ns: &Netns, peer: SocketAddr, timeout: Duration) -> RawBgp {
        Self::connect_with(ns, peer, &RawOptions::default(), timeout)
    }

    /// Like [`RawBgp::connect`], with a TTL / hop limit (GTSM tests, RFC 5082) or a source
    /// address (an unconfigured peer) set.
    #[track_caller]
    pub fn connect_with(
        ns: &Netns,
        peer: SocketAddr,
        opts: &RawOptions,
        timeout: Duration,
    ) -> RawBgp {
        let conn = Self::try_connect_with(ns, peer, opts, timeout);
        if let Err(e) = &conn {
            panic!("raw TCP connection to {peer} failed: {e}");
        }
        conn.unwrap()
    }

    /// Connects and reports a failed connection (refused, reset, timed out) as `Err(log)`
    /// instead of panicking: for tests where the peer must refuse.
    pub fn try_connect_with(
        ns: &Netns,
        peer: SocketAddr,
        opts: &RawOptions,
        timeout: Duration,
    ) -> Result<RawBgp, String> {
        let secs = format!("{}", timeout.as_secs_f64());
        let ttl = opts
            .ttl
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into());
        let source = opts
            .source
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        let rcvbuf = opts
            .recv_buffer
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into());
        let read = if opts.never_read { "noread" } else { "read" }.to_owned();
        let conn = Self::spawn(ns, "connect", peer, &[&secs, &ttl, &source, &rcvbuf, &read]);
        let start = Instant::now();
        loop {
            let e = conn.process.stderr();
            if e.contains("error:") {
                return Err(e);
            }
            if e.contains("connected") {
                return Ok(conn);
            }
            if start.elapsed() > timeout + Duration::from_secs(2) {
                conn.process.stop();
                return Err(format!("no connection after {timeout:?}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Listens on `local` in `ns` and returns once the socket is bound; the first connection is
    /// accepted in the background ([`RawBgp::wait_connected`]).
    #[track_caller]
    pub fn listen(ns: &Netns, local: SocketAddr) -> RawBgp {
        let conn = Self::spawn(ns, "listen", local, &[]);
        wait_for(
            Duration::from_secs(5),
            &format!("raw TCP listener on {local}"),
            || {
                let e = conn.process.stderr();
                if e.contains("error:") {
                    panic!("raw TCP listen on {local} failed: {e}");
                }
                if e.contains("listening") {
                    Ok(())
                } else {
                    Err(e)
                }
            },
        );
        conn
    }

    fn spawn(ns: &Netns, mode: &str, addr: SocketAddr, extra: &[&String]) -> RawBgp {
        let python = require("python3");
        let mut cmd = ns.command(python);
        cmd.args([
            "-c",
            RELAY,
            mode,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ]);
        cmd.args(extra);
        let (process, stdin, mut stdout) = ns.topology().spawn_piped(&format!("raw-{mode}"), cmd);
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let writer = inbox.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*writer;
                let mut ib = lock.lock().unwrap();
                if n == 0 {
                    ib.closed = true;
                    cv.notify_all();
                    return;
                }
                ib.data.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        RawBgp {
            process,
            stdin: Mutex::new(Some(stdin)),
            inbox,
        }
    }

    /// Waits for the listener's peer to connect.
    #[track_caller]
    pub fn wait_connected(&self, timeout: Duration) {
        wait_for(timeout, "a connection to the raw listener", || {
            let e = self.process.stderr();
            if e.contains("connected") {
                Ok(())
            } else {
                Err(e)
            }
        })
    }

    /// Sends `bytes` as they are.
    #[track_caller]
    pub fn send(&self, bytes: &[u8]) {
        let mut guard = self.stdin.lock().unwrap();
        let stdin = guard.as_mut().expect("raw connection already half-closed");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .expect("write to relay");
    }

    /// Sends `bytes`; false once the relay has gone (the connection was closed or reset).
    pub fn try_send(&self, bytes: &[u8]) -> bool {
        let mut guard = self.stdin.lock().unwrap();
        let Some(stdin) = guard.as_mut() else {
            return false;
        };
        stdin.write_all(bytes).and_then(|_| stdin.flush()).is_ok()
    }

    /// Freezes the relay (SIGSTOP): the peer neither reads nor sends, its TCP window closes
    /// once its receive buffer is full. Do not `send` while paused.
    pub fn pause(&self) {
        self.process.signal("STOP");
    }

    /// Lets a paused relay run again (SIGCONT).
    pub fn resume(&self) {
        self.process.signal("CONT");
    }

    /// Closes our sending side (TCP FIN); reading continues.
    pub fn shutdown_write(&self) {
        self.stdin.lock().unwrap().take();
    }

    /// Everything received so far (including bytes already returned by the `recv` methods).
    pub fn received(&self) -> Vec<u8> {
        self.inbox.0.lock().unwrap().data.clone()
    }

    /// Waits for `n` more bytes and returns them; `None` if the connection closes or the
    /// timeout passes first.
    pub fn recv_exact(&self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inbox;
        let mut ib = lock.lock().unwrap();
        loop {
            if ib.data.len() - ib.read >= n {
                let out = ib.data[ib.read..ib.read + n].to_vec();
                ib.read += n;
                return Some(out);
            }
            let now = Instant::now();
            if ib.closed || now >= deadline {
                return None;
            }
            ib = cv.wait_timeout(ib, deadline - now).unwrap().0;
        }
    }

    /// Reads one BGP message (RFC 4271 §4.1: 16-byte marker, 2-byte length, type): the
    /// header, then as many bytes as its length says. A length below 19 returns the header only.
    pub fn recv_message(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut msg = self.recv_exact(19, timeout)?;
        let len = usize::from(u16::from_be_bytes([msg[16], msg[17]]));
        if len > 19 {
            let rest =
                self.recv_exact(len - 19, deadline.saturating_duration_since(Instant::now()))?;
            msg.extend_from_slice(&rest);
        }
        Some(msg)
    }

    /// Reads messages until a NOTIFICATION arrives and returns (code, subcode, data); skips
    /// OPEN/KEEPALIVE/UPDATE on the way.
    pub fn recv_notification(&self, timeout: Duration) -> Option<(u8, u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.recv_message(deadline.saturating_duration_since(Instant::now()))?;
            if let Some(n) = notification(&m) {
                return Some(n);
            }
        }
    }

    /// Whether the peer has closed the connection (or reset it).
    pub fn is_closed(&self) -> bool {
        self.inbox.0.lock().unwrap().closed
    }

    /// Waits up to `timeout` for the peer to close the connection.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inbox;
        let mut ib = lock.lock().unwrap();
        while !ib.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            ib = cv.wait_timeout(ib, deadline - now).unwrap().0;
        }
        true
    }

    /// The relay's log (`connected`, `closed`, `reset: ...`).
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// Ends the relay (the connection closes).
    pub fn close(&self) {
        self.shutdown_write();
        self.process.stop();
    }
}

/// BGP message types (RFC 4271 §4.1, RFC 2918).
pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;
pub const ROUTE_REFRESH: u8 = 5;

/// A message with the all-ones marker, the right length and `body` after the type.
pub fn message(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(19 + body.len()).expect("message longer than 65535 bytes");
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&len.to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    m
}

/// KEEPALIVE (RFC 4271 §4.4).
pub fn keepalive_message() -> Vec<u8> {
    message(KEEPALIVE, &[])
}

/// OPEN (RFC 4271 §4.2) with capabilities 4-octet AS (RFC 6793, with AS_TRANS in My AS when
/// `asn` > 65535), multiprotocol IPv4 and IPv6 unicast (RFC 4760), plus `extra_caps` (raw
/// capability TLVs).
pub fn open_message(asn: u32, hold_time: u16, router_id: Ipv4Addr, extra_caps: &[u8]) -> Vec<u8> {
    let my_as = u16::try_from(asn).unwrap_or(23456);
    let mut caps = vec![];
    caps.extend_from_slice(&[1, 4, 0, 1, 0, 1]); // MP IPv4 unicast
    caps.extend_from_slice(&[1, 4, 0, 2, 0, 1]); // MP IPv6 unicast
    caps.extend_from_slice(&[65, 4]);
    caps.extend_from_slice(&asn.to_be_bytes());
    caps.extend_from_slice(extra_caps);
    let mut body = vec![4];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold_time.to_be_bytes());
    body.extend_from_slice(&router_id.octets());
    let param_len = u8::try_from(caps.len() + 2).expect("capabilities too long");
    body.push(param_len);
    body.push(2); // parameter type: capabilities
    body.push(param_len - 2);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

/// ROUTE-REFRESH (RFC 2918 §3) for AFI/SAFI.
pub fn route_refresh_message(afi: u16, safi: u8) -> Vec<u8> {
    let mut body = afi.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, safi]);
    message(ROUTE_REFRESH, &body)
}

/// The type of a whole message, if it has a full header.
pub fn message_type(m: &[u8]) -> Option<u8> {
    m.get(18).copied()
}

/// (error code, subcode, data) of a NOTIFICATION message, else `None`.
pub fn notification(m: &[u8]) -> Option<(u8, u8, Vec<u8>)> {
    if message_type(m)? != NOTIFICATION || m.len() < 21 {
        return None;
    }
    Some((m[19], m[20], m[21..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_open_and_keepalive() {
        assert_eq!(keepalive_message().len(), 19);
        assert_eq!(message_type(&keepalive_message()), Some(KEEPALIVE));
        let o = open_message(4_200_000_000, 90, Ipv4Addr::new(192, 0, 2, 9), &[]);
        assert_eq!(u16::from_be_bytes([o[16], o[17]]) as usize, o.len());
        assert_eq!(&o[20..22], &23456u16.to_be_bytes());
        assert_eq!(
            notification(&message(NOTIFICATION, &[6, 2, 1])),
            Some((6, 2, vec![1]))
        );
        assert_eq!(notification(&keepalive_message()), None);
    }
}
