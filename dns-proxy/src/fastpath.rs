//! Wire-format answer cache for authoritative answers: the common query (header, one
//! question, at most a plain OPT record) is recognised by a bounds-checked scan of its
//! bytes, and if the full path already answered the very same bytes (all but the message
//! ID, RFC 1035 4.1.1) for the same view and transport, with the same index and
//! configuration, the stored reply is copied and its ID patched. No parse, no encode.
//!
//! Correct by construction: an entry is a reply the full path produced for a byte-identical
//! question, and the full path is a function of (bytes after the ID, view, transport,
//! index, configuration, and for forwarded names the cache entry and its age in whole
//! seconds); every entry records the index ([`crate::index::ZoneIndex::generation`]) and
//! configuration generations it was made with and is a miss once either has changed. A
//! reply from the forwarding cache is kept until the cached answer expires, with the
//! offsets of its records' TTL fields: a hit at a later age has each TTL lowered by the
//! seconds passed since, which is what the full path would encode (RFC 1035 7.4: TTLs
//! count down), so it is not re-encoded every second.
//! The question's case is part of the key, so a client using 0x20 randomisation
//! (draft-vixie-dnsext-dns0x20) just misses.
//!
//! The table has a fixed size and is set-associative: a key hashes (SipHash with a random
//! key, so clients cannot aim at one set) to a set of [`WAYS`] slots, and a new entry takes
//! a free or stale slot of its set, else the least recently used entry not asked for since
//! it was stored, else the least recently used (a two-segment LRU within the set, as in
//! 2Q). So a flood of distinct names (a random-subdomain attack, every NXDOMAIN cached)
//! mostly replaces its own entries: names in use stay, nothing is rehashed and nothing is
//! cleared at once, and an index change costs nothing until the slots are reused.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::server::Transport;

/// Longest query the fast path looks at; anything longer takes the full path.
pub const MAX_QUERY: usize = 512;
/// Entries the table holds (bounds memory: about 250 bytes each with key and reply).
pub const MAX_ENTRIES: usize = 65_536;
/// Slots a key may occupy.
pub const WAYS: usize = 4;
/// Bytes the stored keys and replies may take in all: replies are up to 64 KiB over TCP,
/// so the entry count alone would allow 4 GiB. Typical entries (about 250 bytes) fill
/// the table at 16 MiB.
pub const MAX_BYTES: usize = 32 << 20;
/// A larger reply is not kept here (the full path answers it; the forwarding cache holds
/// its records).
pub const MAX_REPLY: usize = 8 << 10;
const SETS: usize = MAX_ENTRIES / WAYS;

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
    /// For a reply from the forwarding cache: how its TTLs age.
    aging: Option<Ttls>,
}

/// The TTLs of a reply from the forwarding cache and how they count down.
#[derive(Debug)]
struct Ttls {
    aging: Aging,
    /// Offsets of the TTL field of every record but OPT (whose TTL field holds flags).
    offsets: Box<[u16]>,
}

/// How a reply made from a forwarding-cache entry ages.
#[derive(Debug, Clone)]
pub struct Aging {
    /// When the entry was stored (age 0).
    pub stored: Instant,
    /// When it expires: the reply is not served from then on.
    pub expires: Instant,
    /// The age, in whole seconds, the reply's TTLs were written at.
    pub age: u32,
    /// The forwarding cache's hit counter, which a hit here also increments.
    pub hits: Counter,
}

/// What a stored reply counts and how long it holds, as the full path produced it.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The query counter (view, type, rcode, transport).
    pub counter: Counter,
    /// For a forwarding-cache hit: how its TTLs age.
    pub aging: Option<Aging>,
}

#[derive(Debug)]
struct Slot {
    hash: u64,
    key: Box<[u8]>,
    /// Configuration and index generations the reply was made with.
    runtime: u64,
    index: u64,
    /// Value of [`Inner::clock`] when last used.
    used: u64,
    /// Answered at least once since it was stored.
    reused: bool,
    entry: Entry,
}

impl Slot {
    fn current(&self, runtime: u64, index: u64, now: Option<Instant>) -> bool {
        self.runtime == runtime
            && self.index == index
            && match (&self.entry.aging, now) {
                (Some(t), Some(now)) => now < t.aging.expires,
                _ => true,
            }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// `SETS * WAYS` slots, allocated on first insert.
    slots: Vec<Option<Slot>>,
    clock: u64,
    /// Bytes of keys and replies held (bounded by [`MAX_BYTES`]).
    bytes: usize,
}

impl Slot {
    fn size(&self) -> usize {
        self.key.len()
            + self.entry.reply.len()
            + self.entry.aging.as_ref().map_or(0, |t| t.offsets.len() * 2)
    }
}

/// Replies by (view, transport, query bytes after the ID).
#[derive(Debug, Default)]
pub struct AnswerCache {
    inner: Mutex<Inner>,
    hasher: RandomState,
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
        let hash = self.hasher.hash_one(key.bytes());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { slots, clock, .. } = &mut *inner;
        if slots.is_empty() {
            return None;
        }
        let set = &mut slots[set_of(hash)];
        let slot = set
            .iter_mut()
            .flatten()
            .find(|s| s.hash == hash && *s.key == *key.bytes())?;
        let now = slot.entry.aging.as_ref().map(|_| Instant::now());
        if !slot.current(runtime, index, now) {
            return None;
        }
        *clock += 1;
        slot.used = *clock;
        slot.reused = true;
        slot.entry.counter.inc();
        let mut reply = slot.entry.reply.to_vec();
        if let (Some(t), Some(now)) = (&slot.entry.aging, now) {
            t.aging.hits.inc();
            let age = now.saturating_duration_since(t.aging.stored).as_secs();
            let passed = u32::try_from(age)
                .unwrap_or(u32::MAX)
                .saturating_sub(t.aging.age);
            if passed > 0 {
                for &o in &t.offsets {
                    let o = usize::from(o);
                    let ttl =
                        u32::from_be_bytes([reply[o], reply[o + 1], reply[o + 2], reply[o + 3]]);
                    reply[o..o + 4].copy_from_slice(&ttl.saturating_sub(passed).to_be_bytes());
                }
            }
        }
        drop(inner);
        reply[..2].copy_from_slice(&packet[..2]);
        Some(reply)
    }

    /// Remember the full path's reply to `key`, made with `runtime` and `index` generations.
    pub fn insert(&self, runtime: u64, index: u64, key: &Key, reply: &[u8], how: Provenance) {
        if reply.len() < 2 || reply.len() > MAX_REPLY {
            return;
        }
        let aging = match how.aging {
            None => None,
            Some(aging) => match ttl_offsets(reply) {
                Some(offsets) => Some(Ttls {
                    aging,
                    offsets: offsets.into(),
                }),
                // Not a message we can walk: not worth caching.
                None => return,
            },
        };
        let hash = self.hasher.hash_one(key.bytes());
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            slots,
            clock,
            bytes,
        } = &mut *inner;
        if slots.is_empty() {
            slots.resize_with(SETS * WAYS, || None);
        }
        let set = &mut slots[set_of(hash)];
        // The same key, else a free slot, else a stale one, else the least recently used
        // of those never asked for again, else the least recently used.
        let rank = |s: &Option<Slot>| match s {
            Some(s) if s.hash == hash && *s.key == *key.bytes() => (0, 0),
            None => (1, 0),
            Some(s) if !s.current(runtime, index, Some(now)) => (2, 0),
            Some(s) => (3 + u8::from(s.reused), s.used),
        };
        let Some(victim) = set.iter_mut().min_by_key(|s| rank(s)) else {
            return;
        };
        let size =
            key.bytes().len() + reply.len() + aging.as_ref().map_or(0, |t| t.offsets.len() * 2);
        let freed = victim.as_ref().map_or(0, Slot::size);
        if *bytes - freed + size > MAX_BYTES {
            // Full of large replies: this one is not kept (the entries in use stay).
            return;
        }
        *bytes = *bytes - freed + size;
        *clock += 1;
        *victim = Some(Slot {
            hash,
            key: key.bytes().into(),
            runtime,
            index,
            used: *clock,
            reused: false,
            entry: Entry {
                reply: reply.into(),
                counter: how.counter,
                aging,
            },
        });
    }
}

/// The slots of the set `hash` falls in.
/// Offsets of the TTL field of every resource record except OPT in the encoded message
/// `msg` (RFC 1035 4.1.3), or `None` if it does not walk as one to its last byte.
fn ttl_offsets(msg: &[u8]) -> Option<Vec<u16>> {
    let count = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(i)?,
            *msg.get(i + 1)?,
        ])))
    };
    let (qd, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut i = HEADER;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut offsets = Vec::with_capacity(records);
    for _ in 0..records {
        i = skip_name(msg, i)?;
        let rtype = count(i)?;
        let rdlength = count(i + 8)?;
        if rtype != 41 {
            offsets.push(u16::try_from(i + 4).ok()?);
        }
        i += 10 + rdlength;
    }
    (i == msg.len()).then_some(offsets)
}

/// The offset just past the (possibly compressed, RFC 1035 4.1.4) name at `i`.
fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *msg.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + usize::from(len),
            0xc0 => return msg.get(i + 1).map(|_| i + 2),
            _ => return None,
        }
    }
}

fn set_of(hash: u64) -> std::ops::Range<usize> {
    // Multiply-shift: the high bits of the product spread every hash bit over the set.
    let set = ((u128::from(hash) * SETS as u128) >> 64) as usize;
    set * WAYS..(set + 1) * WAYS
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
    fn a_new_index_or_configuration_generation_makes_entries_misses() {
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
    fn large_replies_and_case_variants_cannot_grow_the_table_past_its_byte_bound() {
        let c = AnswerCache::default();
        let how = || Provenance {
            counter: Counter::default(),
            aging: None,
        };
        let big = vec![0u8; MAX_REPLY];
        // 0x20 case variants of one long name are distinct keys, each with a big reply.
        let mut stored = 0;
        for i in 0u32..20_000 {
            let mut name =
                b"\x3faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x00".to_vec();
            for b in 0..15 {
                if i & (1 << b) != 0 {
                    name[1 + b] = b'A';
                }
            }
            name[20] = b'a' + (i >> 15) as u8;
            let q = query(&name, None);
            let k = Key::new(1, Transport::Tcp, &q);
            c.insert(1, 1, &k, &big, how());
            stored += usize::from(c.get(1, 1, &k, &q).is_some());
        }
        let bytes = c.inner.lock().unwrap().bytes;
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert!(stored > 1000, "nothing kept: {stored}");
        // Too large to keep at all.
        let q = query(WEB, None);
        let k = Key::new(1, Transport::Tcp, &q);
        c.insert(1, 1, &k, &vec![0u8; MAX_REPLY + 1], how());
        assert_eq!(c.get(1, 1, &k, &q), None);
    }

    /// A reply to `WEB` as the full path encodes it: one compressed A record with `ttl` and
    /// an OPT record (whose TTL field is flags and must not be touched).
    fn reply_with_ttl(ttl: u32) -> Vec<u8> {
        let mut r = query(WEB, None);
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // ANCOUNT
        r[11] = 1; // ARCOUNT
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
        r.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0x80, 0, 0, 0]);
        r
    }

    fn aged(stored: Instant, expires: Instant, age: u32, hits: &Counter) -> Provenance {
        Provenance {
            counter: Counter::default(),
            aging: Some(Aging {
                stored,
                expires,
                age,
                hits: hits.clone(),
            }),
        }
    }

    #[test]
    fn a_forwarded_reply_counts_its_ttls_down_and_is_not_served_once_expired() {
        let c = AnswerCache::default();
        let q = query(WEB, None);
        let k = Key::new(1, Transport::Udp, &q);
        let hits = Counter::default();
        let now = Instant::now();
        let secs = std::time::Duration::from_secs;
        // Stored 7.5 s ago with a 300 s TTL, encoded at age 5 (TTL 295): served at age 7.
        let stored = now - std::time::Duration::from_millis(7500);
        c.insert(
            1,
            1,
            &k,
            &reply_with_ttl(295),
            aged(stored, stored + secs(300), 5, &hits),
        );
        let got = c.get(1, 1, &k, &q).expect("a hit");
        let mut want = reply_with_ttl(293);
        want[..2].copy_from_slice(&q[..2]);
        assert_eq!(got, want, "TTL 300 - 7; the OPT's flags unchanged");
        assert_eq!(hits.get(), 1);
        // A TTL never wraps below zero.
        c.insert(
            1,
            1,
            &k,
            &reply_with_ttl(1),
            aged(stored, stored + secs(300), 5, &hits),
        );
        let got = c.get(1, 1, &k, &q).unwrap();
        assert_eq!(got[got.len() - 21..got.len() - 17], [0, 0, 0, 0]);
        // Expired: a miss, not counted as a hit.
        c.insert(1, 1, &k, &reply_with_ttl(2), aged(stored, now, 5, &hits));
        assert_eq!(c.get(1, 1, &k, &q), None);
        assert_eq!(hits.get(), 2);
    }

    proptest::proptest! {
        #[test]
        fn ttl_offsets_never_panic_and_stay_in_bounds(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            for o in ttl_offsets(&msg).unwrap_or_default() {
                proptest::prop_assert!(usize::from(o) + 4 <= msg.len());
            }
        }
    }

    #[test]
    fn ttl_offsets_walk_compressed_names_and_reject_what_does_not_parse() {
        let r = reply_with_ttl(7);
        let off = usize::from(ttl_offsets(&r).unwrap()[0]);
        assert_eq!(r[off..off + 4], 7u32.to_be_bytes());
        assert_eq!(ttl_offsets(&r).unwrap().len(), 1, "OPT left out");
        assert_eq!(ttl_offsets(&r[..r.len() - 1]), None, "cut short");
        let mut extra = r.clone();
        extra.push(0);
        assert_eq!(ttl_offsets(&extra), None, "trailing byte");
        let mut bad_label = r;
        bad_label[12] = 0x80;
        assert_eq!(ttl_offsets(&bad_label), None, "reserved label type");
    }

    fn plain(i: u32) -> (Vec<u8>, Key) {
        let name = format!("\x0bname-{i:06}\x07cluster\x05local\x00");
        let q = query(name.as_bytes(), None);
        let k = Key::new(1, Transport::Udp, &q);
        (q, k)
    }

    fn authoritative() -> Provenance {
        Provenance {
            counter: Counter::default(),
            aging: None,
        }
    }

    #[test]
    fn a_flood_of_distinct_names_does_not_evict_the_names_in_use() {
        let c = AnswerCache::default();
        // Few enough that no set of four slots is likely to get more than three of them.
        let hot: Vec<_> = (0..200).map(plain).collect();
        for (_, k) in &hot {
            c.insert(1, 1, k, &[0, 0, 0x81, 0x80], authoritative());
        }
        // Four times the table's size in names asked once, the hot names asked in between.
        for i in 0..(4 * MAX_ENTRIES) as u32 {
            let (_, k) = plain(1_000_000 + i);
            c.insert(1, 1, &k, &[0, 0, 0x81, 0x83], authoritative());
            let (q, k) = &hot[i as usize % hot.len()];
            assert!(
                c.get(1, 1, k, q).is_some(),
                "hot name evicted after {i} others"
            );
        }
        let kept = hot
            .iter()
            .filter(|(q, k)| c.get(1, 1, k, q).is_some())
            .count();
        assert_eq!(kept, hot.len());
    }

    #[test]
    fn stale_entries_are_replaced_first_and_the_same_key_is_replaced_in_place() {
        let c = AnswerCache::default();
        let (q, k) = plain(7);
        c.insert(1, 1, &k, &[0, 0, 0x81, 0x80], authoritative());
        c.insert(1, 2, &k, &[0, 0, 0x81, 0x83], authoritative());
        assert_eq!(c.get(1, 2, &k, &q), Some(vec![0x12, 0x34, 0x81, 0x83]));
        let inner = c.inner.lock().unwrap();
        assert_eq!(inner.slots.iter().flatten().count(), 1);
    }
}
