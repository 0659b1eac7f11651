//! Wire-format answer cache for authoritative answers: the common query (header, one
//! question, at most a plain OPT record) is recognised by a bounds-checked scan of its
//! bytes, and if the full path already answered the very same bytes (all but the message
//! ID, RFC 1035 4.1.1) for the same view and transport, with the same index and
//! configuration, the stored reply is copied and its ID patched. No parse, no encode.
//!
//! Correct by construction: an entry is a reply the full path produced for a byte-identical
//! question, and the full path is a function of (bytes after the ID, view, transport,
//! index, configuration, and for forwarded names the cache entry and its age in whole
//! seconds); a change of index ([`crate::index::ZoneIndex::generation`]) or of
//! configuration empties the cache, and a reply from the forwarding cache is kept only
//! until its age (so its TTLs) would change. The question's case is part of the key, so a
//! client using 0x20 randomisation (draft-vixie-dnsext-dns0x20) just misses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::server::Transport;

/// Longest query the fast path looks at; anything longer takes the full path.
pub const MAX_QUERY: usize = 512;
/// Entries kept before the cache is emptied (bounds memory: about 200 bytes each).
pub const MAX_ENTRIES: usize = 65_536;

const HEADER: usize = 12;
/// Root owner (1) + TYPE (2) + CLASS (2) + TTL (4) + RDLENGTH (2), RFC 6891 6.1.2.
const PLAIN_OPT: usize = 11;

/// True if `packet` is a standard query (QR=0, OPCODE=0) with exactly one question whose
/// name is uncompressed, no answer or authority records, and at most one additional
/// record that is an OPT without options; and nothing after it. Such a query carries no
/// EDNS client-subnet, so the view depends only on the addresses.
pub fn is_plain_query(packet: &[u8]) -> bool {
    if packet.len() < HEADER + 5 || packet.len() > MAX_QUERY {
        return false;
    }
    let flags = packet[2];
    if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
        return false;
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return false;
    }
    // RFC 1035 3.1: labels of 1..=63 octets, the name at most 255 octets; no pointers.
    let mut i = HEADER;
    loop {
        let Some(&len) = packet.get(i) else {
            return false;
        };
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return false;
        }
        i += 1 + usize::from(len);
        if i - HEADER > 255 {
            return false;
        }
    }
    i += 4; // QTYPE, QCLASS
    match ar {
        0 => i == packet.len(),
        _ => {
            i + PLAIN_OPT == packet.len()
                && packet[i] == 0
                && packet[i + 1..i + 3] == [0, 41]
                && packet[i + 9..i + 11] == [0, 0]
        }
    }
}

#[derive(Debug)]
struct Entry {
    reply: Box<[u8]>,
    /// The query counter this answer increments (view, type, rcode, transport).
    counter: Counter,
    /// For a reply from the forwarding cache: when its TTLs would change, and the cache-hit
    /// counter it also increments.
    aging: Option<(Instant, Counter)>,
}

/// What a stored reply counts and how long it holds, as the full path produced it.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The query counter (view, type, rcode, transport).
    pub counter: Counter,
    /// For a forwarding-cache hit: until when its TTLs stay the same, and the hit counter.
    pub aging: Option<(Instant, Counter)>,
}

#[derive(Debug, Default)]
struct Inner {
    runtime: u64,
    index: u64,
    map: HashMap<Box<[u8]>, Entry>,
}

/// Replies by (view, transport, query bytes after the ID).
#[derive(Debug, Default)]
pub struct AnswerCache {
    inner: Mutex<Inner>,
}

/// The cache key, built on the stack: view identity, transport, then the query minus its ID.
#[derive(Debug)]
pub struct Key {
    buf: [u8; 9 + MAX_QUERY],
    len: usize,
}

impl Key {
    /// `view` identifies the view within one configuration; `packet` must satisfy
    /// [`is_plain_query`].
    pub fn new(view: usize, t: Transport, packet: &[u8]) -> Self {
        let mut buf = [0u8; 9 + MAX_QUERY];
        buf[..8].copy_from_slice(&(view as u64).to_be_bytes());
        buf[8] = match t {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
        let body = &packet[2..];
        buf[9..9 + body.len()].copy_from_slice(body);
        Self {
            buf,
            len: 9 + body.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AnswerCache {
    /// The stored reply for `key` with the ID of `packet`, counting the query.
    pub fn get(&self, runtime: u64, index: u64, key: &Key, packet: &[u8]) -> Option<Vec<u8>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.runtime != runtime || inner.index != index {
            return None;
        }
        let e = inner.map.get(key.bytes())?;
        if let Some((until, hits)) = &e.aging {
            if Instant::now() >= *until {
                return None;
            }
            hits.inc();
        }
        e.counter.inc();
        let mut reply = e.reply.to_vec();
        drop(inner);
        reply[..2].copy_from_slice(&packet[..2]);
        Some(reply)
    }

    /// Remember the full path's reply to `key`, made with `runtime` and `index` generations.
    pub fn insert(&self, runtime: u64, index: u64, key: &Key, reply: &[u8], how: Provenance) {
        if reply.len() < 2 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.runtime != runtime || inner.index != index || inner.map.len() >= MAX_ENTRIES {
            inner.map.clear();
            inner.map.shrink_to(MAX_ENTRIES / 16);
            inner.runtime = runtime;
            inner.index = index;
        }
        inner.map.insert(
            key.bytes().into(),
            Entry {
                reply: reply.into(),
                counter: how.counter,
                aging: how.aging,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], opt: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&[0, 1, 0, 1]);
        if let Some(o) = opt {
            p[11] = 1;
            p.extend_from_slice(o);
        }
        p
    }

    const WEB: &[u8] = b"\x03web\x07cluster\x05local\x00";
    const OPT: &[u8] = &[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0];

    #[test]
    fn recognises_a_plain_query_with_and_without_opt() {
        assert!(is_plain_query(&query(WEB, None)));
        assert!(is_plain_query(&query(WEB, Some(OPT))));
    }

    #[test]
    fn rejects_responses_other_opcodes_options_pointers_and_trailing_bytes() {
        let mut r = query(WEB, None);
        r[2] |= 0x80;
        assert!(!is_plain_query(&r));
        let mut notify = query(WEB, None);
        notify[2] = 4 << 3;
        assert!(!is_plain_query(&notify));
        let mut with_option = OPT.to_vec();
        with_option[10] = 8;
        with_option.extend_from_slice(&[0, 8, 0, 4, 0, 1, 24, 0]);
        assert!(!is_plain_query(&query(WEB, Some(&with_option))));
        assert!(!is_plain_query(&query(b"\x03web\xc0\x0c", None)));
        let mut trailing = query(WEB, None);
        trailing.push(0);
        assert!(!is_plain_query(&trailing));
        let truncated = query(WEB, None);
        assert!(!is_plain_query(&truncated[..truncated.len() - 1]));
        assert!(!is_plain_query(&query(b"\x03web\x07cluster", None)));
    }

    #[test]
    fn a_new_index_generation_empties_the_cache() {
        let c = AnswerCache::default();
        let q = query(WEB, None);
        let k = Key::new(1, Transport::Udp, &q);
        let how = Provenance {
            counter: Counter::default(),
            aging: None,
        };
        c.insert(1, 1, &k, &[0, 0, 0x81, 0x80], how);
        assert_eq!(c.get(1, 1, &k, &q), Some(vec![0x12, 0x34, 0x81, 0x80]));
        assert_eq!(c.get(1, 2, &k, &q), None);
        assert_eq!(c.get(2, 1, &k, &q), None);
        assert_eq!(c.get(1, 1, &Key::new(1, Transport::Tcp, &q), &q), None);
    }

    #[test]
    fn a_forwarded_reply_is_served_only_while_its_age_holds() {
        let c = AnswerCache::default();
        let q = query(WEB, None);
        let k = Key::new(1, Transport::Udp, &q);
        let hits = Counter::default();
        let fresh = Provenance {
            counter: Counter::default(),
            aging: Some((
                Instant::now() + std::time::Duration::from_secs(60),
                hits.clone(),
            )),
        };
        c.insert(1, 1, &k, &[0, 0, 0x81, 0x80], fresh);
        assert!(c.get(1, 1, &k, &q).is_some());
        assert_eq!(hits.get(), 1);
        let stale = Provenance {
            counter: Counter::default(),
            aging: Some((Instant::now(), hits.clone())),
        };
        c.insert(1, 1, &k, &[0, 0, 0x81, 0x80], stale);
        assert_eq!(c.get(1, 1, &k, &q), None);
        assert_eq!(hits.get(), 1);
    }
}
