//! Forwarding everything outside our zones: upstream selection per zone, UDP with TCP
//! fallback on truncation, failover, a TTL-honouring cache with negative caching
//! (RFC 2308) and coalescing of identical in-flight queries.
//!
//! Each upstream exchange uses its own ephemeral UDP socket (random source port, RFC 5452
//! section 9.2), so there is no fixed cap on concurrent forwarded queries.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::config::{CacheConfig, UpstreamConfig};
use crate::metrics::{Metrics, UpstreamErrorLabels, UpstreamLabels};

/// EDNS buffer size we advertise upstream (DNS Flag Day 2020).
const UPSTREAM_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream configured for this name")]
    NoUpstream,
    #[error("upstream {0} timed out")]
    Timeout(SocketAddr),
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0} sent a malformed response")]
    Malformed(SocketAddr),
}

impl UpstreamError {
    fn label(&self) -> &'static str {
        match self {
            Self::NoUpstream => "no_upstream",
            Self::Timeout(_) => "timeout",
            Self::Io(..) => "io",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// An ordered list of upstreams; the last one that answered is tried first, so a dead
/// primary costs one timeout, not one per query.
#[derive(Debug)]
pub struct UpstreamGroup {
    servers: Vec<SocketAddr>,
    preferred: AtomicUsize,
}

impl UpstreamGroup {
    fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            preferred: AtomicUsize::new(0),
        }
    }
}

/// Upstream routing: per-zone groups (longest suffix wins) and a default.
#[derive(Debug)]
pub struct Upstreams {
    zones: Vec<(Name, UpstreamGroup)>,
    default: UpstreamGroup,
    pub timeout: Duration,
}

impl Upstreams {
    pub fn from_config(c: &UpstreamConfig) -> Self {
        let mut zones: Vec<(Name, UpstreamGroup)> = c
            .zones
            .iter()
            .filter_map(|z| {
                let mut n = Name::from_ascii(&z.zone).ok()?.to_lowercase();
                n.set_fqdn(true);
                Some((n, UpstreamGroup::new(z.servers.clone())))
            })
            .collect();
        zones.sort_by_key(|(n, _)| std::cmp::Reverse(n.num_labels()));
        Self {
            zones,
            default: UpstreamGroup::new(c.default.clone()),
            timeout: c.timeout(),
        }
    }

    pub fn group_for(&self, name: &Name) -> &UpstreamGroup {
        self.zones
            .iter()
            .find(|(z, _)| z.zone_of(name))
            .map(|(_, g)| g)
            .unwrap_or(&self.default)
    }

    /// The upstreams asked for `name`, in order.
    pub fn servers_for(&self, name: &Name) -> &[SocketAddr] {
        &self.group_for(name).servers
    }

    /// Whether `name` is sent to other upstreams under `other` (its cached answers came
    /// from servers that would no longer be asked).
    pub fn moved(&self, other: &Upstreams, name: &Name) -> bool {
        self.servers_for(name) != other.servers_for(name)
    }

    /// The same upstreams for every name.
    pub fn same_as(&self, other: &Upstreams) -> bool {
        self.default.servers == other.default.servers
            && self.zones.len() == other.zones.len()
            && self
                .zones
                .iter()
                .zip(&other.zones)
                .all(|((a, g), (b, h))| a == b && g.servers == h.servers)
    }
}

/// What the forwarding cache is keyed by: the question's name in wire format, lowercased
/// (names match case-insensitively, RFC 4343), its type and class. Compact on purpose: at
/// 100,000 entries a `Name` (80 bytes inline) per key weighed more than most answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
}

impl CacheKey {
    /// The question's name (lower case).
    pub fn name(&self) -> Option<Name> {
        let mut decoder = BinDecoder::new(&self.name);
        Name::read(&mut decoder).ok()
    }

    pub fn new(q: &Query) -> Self {
        let name = q.name();
        let mut wire = Vec::with_capacity(name.len() + 1);
        for label in name.iter() {
            // A label is at most 63 octets (RFC 1035 2.3.4), which the parser enforces.
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        Self {
            name: wire.into(),
            qtype: u16::from(q.query_type()),
            qclass: u16::from(q.query_class()),
        }
    }
}

/// A cached upstream answer; record TTLs are relative to `stored`. The records are kept
/// encoded (hickory-proto's wire format, one section after another), about a third of the
/// memory of decoded `Record`s, and decoded only on the full path: a repeated query is
/// served from the wire cache ([`crate::fastpath`]).
#[derive(Debug)]
pub struct CachedAnswer {
    pub rcode: ResponseCode,
    records: Box<[u8]>,
    /// Records in the answer, authority and additional sections.
    counts: [u16; 3],
    stored: Instant,
    ttl: u32,
}

/// The three sections of a cached answer, decoded.
#[derive(Debug, Default)]
pub struct Sections {
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl CachedAnswer {
    /// An answer stored at `stored`, cacheable for `ttl` seconds; `None` if its records
    /// cannot be encoded.
    pub fn new(msg: Message, stored: Instant, ttl: u32) -> Option<Self> {
        let sections = [&msg.answers, &msg.authorities, &msg.additionals];
        let mut records = Vec::new();
        let mut counts = [0u16; 3];
        {
            let mut encoder = BinEncoder::new(&mut records);
            for (count, section) in counts.iter_mut().zip(sections) {
                *count = u16::try_from(section.len()).ok()?;
                for r in section {
                    r.emit(&mut encoder).ok()?;
                }
            }
        }
        Some(Self {
            rcode: msg.metadata.response_code,
            records: records.into(),
            counts,
            stored,
            ttl,
        })
    }

    /// The records with their TTLs decreased by `age` (RFC 1035 7.4, RFC 2308 5); `None`
    /// if they do not decode (they were encoded by us, so that would be a bug).
    pub fn sections(&self, age: u32) -> Option<Sections> {
        let mut decoder = BinDecoder::new(&self.records);
        let mut read = |n: u16| -> Option<Vec<Record>> {
            (0..n)
                .map(|_| {
                    let mut r = Record::read(&mut decoder).ok()?;
                    r.ttl = r.ttl.saturating_sub(age);
                    Some(r)
                })
                .collect()
        };
        let [an, ns, ar] = self.counts;
        Some(Sections {
            answers: read(an)?,
            authorities: read(ns)?,
            additionals: read(ar)?,
        })
    }

    /// Seconds since it was stored, or `None` once expired.
    pub fn age(&self, now: Instant) -> Option<u32> {
        let age = now.saturating_duration_since(self.stored).as_secs();
        (age < u64::from(self.ttl)).then_some(age as u32)
    }

    /// When it was stored (age 0).
    pub fn stored(&self) -> Instant {
        self.stored
    }

    /// When it expires: from then on [`CachedAnswer::age`] is `None`.
    pub fn expires(&self) -> Instant {
        self.stored + Duration::from_secs(u64::from(self.ttl))
    }
}

/// How long a response may be cached, per RFC 2181 5.2 (an RRset's TTL) and RFC 2308 5
/// (negative answers: the lesser of the SOA's TTL and its MINIMUM). `None`: not cacheable.
pub fn cache_ttl(msg: &Message, limits: &CacheConfig) -> Option<u32> {
    let rcode = msg.metadata.response_code;
    if msg.metadata.truncation {
        return None;
    }
    let positive = rcode == ResponseCode::NoError && !msg.answers.is_empty();
    if positive {
        let ttl = msg.answers.iter().map(|r| r.ttl).min()?;
        return Some(ttl.min(limits.max_ttl));
    }
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        // SERVFAIL, REFUSED…: RFC 2308 7 allows a short cache, we simply do not.
        return None;
    }
    // RFC 2308 5: without an SOA a negative answer is not cached.
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum).min(limits.max_negative_ttl)),
        _ => None,
    })
}

const SHARDS: usize = 16;

/// One cached answer and how often it was asked for lately (0..=3: one more per hit, one
/// less per sweep).
#[derive(Debug)]
struct CacheSlot {
    answer: Arc<CachedAnswer>,
    hits: u8,
}

/// Bytes an entry costs beyond its key's name and its encoded records: the map slot, the
/// `Arc` and `CachedAnswer`, allocator rounding.
const ENTRY_OVERHEAD: usize = 160;

impl CacheSlot {
    fn size(&self, key: &CacheKey) -> usize {
        key.name.len() + self.answer.records.len() + ENTRY_OVERHEAD
    }
}

/// One shard: its answers and the bytes they take.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<CacheKey, CacheSlot>,
    bytes: usize,
}

impl Shard {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= slot.size(key);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&CacheKey, &mut CacheSlot) -> bool) {
        let mut freed = 0;
        self.map.retain(|k, slot| {
            let kept = keep(k, slot);
            if !kept {
                freed += slot.size(k);
            }
            kept
        });
        self.bytes -= freed;
    }
}

/// The forwarding cache: [`SHARDS`] locked maps (so one lock does not serialise the worker
/// threads), each holding at most its share of `max_entries` and of `max_bytes` (an
/// answer is up to 64 KiB, so entries alone do not bound memory). A full shard is swept
/// once for every eighth of its size that it takes in (a bulk CLOCK with a two-bit
/// count): the sweep drops what has expired, then answers not asked for over the last
/// sweeps, and counts down the rest. So a full cache costs O(1) per insert amortised, and
/// a flood of names asked once (each a miss, each cached) pushes out its own kind first,
/// not the names in use. Keys are lower-cased, so case variants share one entry.
#[derive(Debug)]
pub struct Cache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    /// Entries and bytes per shard; changed by a reload.
    per_shard: AtomicUsize,
    bytes_per_shard: AtomicUsize,
}

impl Cache {
    pub fn new(max_entries: usize) -> Self {
        Self::with_bytes(max_entries, crate::config::CacheConfig::default().max_bytes)
    }

    pub fn with_bytes(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            per_shard: AtomicUsize::new(Self::shard_size(max_entries)),
            bytes_per_shard: AtomicUsize::new(Self::shard_size(max_bytes)),
        }
    }

    fn shard_size(total: usize) -> usize {
        total.div_ceil(SHARDS).max(1)
    }

    /// New bounds (a reload): smaller ones are enforced at once, so memory drops now, not
    /// only as new answers come in.
    pub fn set_limits(&self, max_entries: usize, max_bytes: usize) {
        let per_shard = Self::shard_size(max_entries);
        let bytes_per_shard = Self::shard_size(max_bytes);
        self.per_shard.store(per_shard, Ordering::Relaxed);
        self.bytes_per_shard
            .store(bytes_per_shard, Ordering::Relaxed);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Answers not asked for lately go first.
            for pass in 0..2 {
                let mut over = shard.map.len().saturating_sub(per_shard);
                let mut over_bytes = shard.bytes.saturating_sub(bytes_per_shard);
                if over == 0 && over_bytes == 0 {
                    break;
                }
                shard.retain(|k, slot| {
                    if (over == 0 && over_bytes == 0) || (pass == 0 && slot.hits > 0) {
                        return true;
                    }
                    over = over.saturating_sub(1);
                    over_bytes = over_bytes.saturating_sub(slot.size(k));
                    false
                });
            }
        }
    }

    /// Drop every answer for which `stale` holds (names whose upstreams a reload changed).
    /// Returns how many went.
    pub fn remove_where(&self, stale: impl Fn(&CacheKey) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.map.len();
            shard.retain(|k, _| !stale(k));
            removed += before - shard.map.len();
        }
        removed
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<(Arc<CachedAnswer>, u32)> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let slot = shard.map.get_mut(key)?;
        match slot.answer.age(now) {
            Some(age) => {
                slot.hits = (slot.hits + 1).min(3);
                Some((slot.answer.clone(), age))
            }
            None => {
                shard.remove(key);
                None
            }
        }
    }

    pub fn insert(&self, key: CacheKey, value: Arc<CachedAnswer>) {
        let per_shard = self.per_shard.load(Ordering::Relaxed);
        let budget = self.bytes_per_shard.load(Ordering::Relaxed);
        let slot = CacheSlot {
            answer: value,
            hits: 0,
        };
        let size = slot.size(&key);
        // One answer may take at most an eighth of its shard.
        if size > budget / 8 {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        shard.remove(&key);
        if shard.map.len() >= per_shard || shard.bytes + size > budget {
            let now = Instant::now();
            let mut excess = (shard.map.len() + 1).saturating_sub(per_shard - per_shard / 8);
            let mut excess_bytes = (shard.bytes + size).saturating_sub(budget - budget / 8);
            shard.retain(|k, slot| {
                if slot.answer.age(now).is_none() {
                    excess = excess.saturating_sub(1);
                    excess_bytes = excess_bytes.saturating_sub(slot.size(k));
                    return false;
                }
                if (excess > 0 || excess_bytes > 0) && slot.hits == 0 {
                    excess = excess.saturating_sub(1);
                    excess_bytes = excess_bytes.saturating_sub(slot.size(k));
                    return false;
                }
                slot.hits = slot.hits.saturating_sub(1);
                true
            });
            // Everything was asked for lately: make room for this one; the sweeps to come
            // count them down until some can go.
            while shard.map.len() >= per_shard || shard.bytes + size > budget {
                let Some(k) = shard.map.keys().next().cloned() else {
                    break;
                };
                shard.remove(&k);
            }
        }
        shard.bytes += size;
        shard.map.insert(key, slot);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    /// Bytes the answers take, as counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Someone waiting for an in-flight query's result: a coalesced async query (through a
/// oneshot channel) or a UDP client to answer directly (see [`crate::udp_forward`]).
pub struct Waiter(Box<dyn FnOnce(Result<Arc<CachedAnswer>, ResponseCode>) + Send>);

impl Waiter {
    pub fn new(f: impl FnOnce(Result<Arc<CachedAnswer>, ResponseCode>) + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    pub fn call(self, result: Result<Arc<CachedAnswer>, ResponseCode>) {
        (self.0)(result);
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

/// What [`Forwarder::join`] did with a waiter.
#[derive(Debug)]
pub enum Join {
    /// No such question in flight: ask upstream, then answer this waiter.
    Leader(Waiter),
    /// Coalesced: it is answered with the leader's result.
    Waiting,
    /// Too many wait on this question already.
    Full(Waiter),
}

/// The forwarding resolver: cache, in-flight table and upstream exchanges.
#[derive(Debug)]
pub struct Forwarder {
    pub cache: Cache,
    inflight: Mutex<HashMap<CacheKey, Vec<Waiter>>>,
}

/// Removes an in-flight entry even if the leading task is cancelled, so waiters are told
/// (SERVFAIL) instead of hanging.
struct InflightGuard<'a> {
    fwd: &'a Forwarder,
    key: Option<CacheKey>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.fwd.abandon(&key);
        }
    }
}

impl Forwarder {
    pub fn new(cache_entries: usize) -> Self {
        Self::with_cache(Cache::new(cache_entries))
    }

    pub fn with_cache(cache: Cache) -> Self {
        Self {
            cache,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Join the query for `key` already in flight as `waiter`, or, when there is none,
    /// mark it in flight and hand `waiter` back as the leader: the caller asks upstream and
    /// must end with [`Forwarder::complete`] or [`Forwarder::abandon`]. At most
    /// `max_waiters` wait on one question; past that the waiter comes back as
    /// [`Join::Full`] (answer SERVFAIL).
    pub fn join(&self, key: &CacheKey, waiter: Waiter, max_waiters: usize) -> Join {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        match inflight.get_mut(key) {
            Some(waiters) if waiters.len() >= max_waiters => Join::Full(waiter),
            Some(waiters) => {
                waiters.push(waiter);
                Join::Waiting
            }
            None => {
                inflight.insert(key.clone(), Vec::new());
                Join::Leader(waiter)
            }
        }
    }

    fn take_waiters(&self, key: &CacheKey) -> Vec<Waiter> {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
            .unwrap_or_default()
    }

    /// The leader's upstream answer (`None`: every upstream failed): cached for its TTL,
    /// given to every waiter, and returned for the leader's own client.
    pub fn complete(
        &self,
        key: CacheKey,
        answer: Option<Message>,
        cache_cfg: &CacheConfig,
    ) -> Result<Arc<CachedAnswer>, ResponseCode> {
        let result = match answer {
            Some(mut msg) => {
                let ttl = cache_ttl(&msg, cache_cfg);
                let cap = ttl.unwrap_or(0);
                let clamp = |v: &mut Vec<Record>| {
                    v.retain(|r| r.record_type() != RecordType::OPT);
                    if ttl.is_some() {
                        for r in v.iter_mut() {
                            r.ttl = r.ttl.min(cap.max(1));
                        }
                    }
                };
                clamp(&mut msg.answers);
                clamp(&mut msg.authorities);
                clamp(&mut msg.additionals);
                match CachedAnswer::new(msg, Instant::now(), cap) {
                    Some(ans) => {
                        let ans = Arc::new(ans);
                        if ttl.is_some_and(|t| t > 0) {
                            self.cache.insert(key.clone(), ans.clone());
                        }
                        Ok(ans)
                    }
                    None => Err(ResponseCode::ServFail),
                }
            }
            None => Err(ResponseCode::ServFail),
        };
        for w in self.take_waiters(&key) {
            w.call(result.clone());
        }
        result
    }

    /// The leader gave up without an answer: its waiters get SERVFAIL.
    pub fn abandon(&self, key: &CacheKey) {
        for w in self.take_waiters(key) {
            w.call(Err(ResponseCode::ServFail));
        }
    }

    /// Resolve `query` through the cache or upstream. `Ok` carries the answer and its age;
    /// `Err` the response code to send (SERVFAIL when every upstream failed).
    pub async fn resolve(
        &self,
        query: &Query,
        upstreams: &Upstreams,
        cache_cfg: &CacheConfig,
        metrics: &Metrics,
        max_waiters: usize,
    ) -> Result<(Arc<CachedAnswer>, u32), ResponseCode> {
        let key = CacheKey::new(query);
        if let Some(hit) = self.cache.get(&key, Instant::now()) {
            metrics.cache_hits.inc();
            return Ok(hit);
        }
        metrics.cache_misses.inc();
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::new(move |r| {
            let _ = tx.send(r);
        });
        match self.join(&key, waiter, max_waiters) {
            Join::Leader(_) => {}
            Join::Full(_) => return Err(ResponseCode::ServFail),
            Join::Waiting => {
                metrics.coalesced.inc();
                return match rx.await {
                    Ok(Ok(ans)) => Ok((ans, 0)),
                    Ok(Err(rcode)) => Err(rcode),
                    Err(_) => Err(ResponseCode::ServFail),
                };
            }
        }
        let mut guard = InflightGuard {
            fwd: self,
            key: Some(key),
        };
        let answer = query_upstreams(query, upstreams, metrics)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, name = %query.name(), "forwarding failed"))
            .ok();
        let key = guard.key.take().expect("taken once");
        self.complete(key, answer, cache_cfg).map(|a| (a, 0))
    }
}

/// The upstream query for `query`: recursion desired, EDNS0, a random ID (RFC 5452 9.2).
pub fn upstream_query(query: &Query) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    msg.set_edns(edns);
    msg
}

/// Failover across one group's upstreams, starting with the last one that answered. A
/// SERVFAIL or REFUSED is kept as the last resort while the others are tried. An upstream
/// that timed out is asked once more after all the others, so one lost datagram (a full
/// socket buffer under load) does not turn into SERVFAIL; one that refused the connection
/// (ICMP) or answered is not. Shared by the async exchanges and the UDP path's exchanges
/// ([`crate::udp_forward`]).
#[derive(Debug)]
pub struct Failover {
    start: usize,
    tried: usize,
    current: Option<usize>,
    fallback: Option<Message>,
    last_err: Option<UpstreamError>,
    /// Upstreams that timed out on the first pass, to ask again, and how many of them have
    /// been asked again.
    timed_out: Vec<usize>,
    retried: usize,
}

impl Failover {
    pub fn new(group: &UpstreamGroup) -> Self {
        let n = group.servers.len().max(1);
        Self {
            start: group.preferred.load(Ordering::Relaxed) % n,
            tried: 0,
            current: None,
            fallback: None,
            last_err: None,
            timed_out: Vec::new(),
            retried: 0,
        }
    }

    /// The next upstream to ask, or `None` once every one has been asked (and each that
    /// timed out asked twice).
    pub fn next(&mut self, group: &UpstreamGroup) -> Option<SocketAddr> {
        let n = group.servers.len();
        let idx = if self.tried < n {
            let idx = (self.start + self.tried) % n;
            self.tried += 1;
            idx
        } else {
            let idx = *self.timed_out.get(self.retried)?;
            self.retried += 1;
            idx
        };
        self.current = Some(idx);
        Some(group.servers[idx])
    }

    /// The upstream last returned by [`Failover::next`] answered, `elapsed` after it was
    /// asked. `Some`: the answer to use; `None`: try the next one.
    pub fn answered(
        &mut self,
        group: &UpstreamGroup,
        resp: Message,
        elapsed: Duration,
        metrics: &Metrics,
    ) -> Option<Message> {
        let idx = self.current?;
        let label = group.servers[idx].to_string();
        metrics
            .upstream_latency
            .get_or_create(&UpstreamLabels {
                upstream: label.clone(),
            })
            .observe(elapsed.as_secs_f64());
        let rc = resp.metadata.response_code;
        if rc == ResponseCode::ServFail || rc == ResponseCode::Refused {
            // Another upstream may do better; keep this as the last resort.
            metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: label,
                    error: "servfail_or_refused",
                })
                .inc();
            self.fallback = Some(resp);
            return None;
        }
        group.preferred.store(idx, Ordering::Relaxed);
        Some(resp)
    }

    /// The upstream last returned by [`Failover::next`] failed.
    pub fn failed(&mut self, group: &UpstreamGroup, e: UpstreamError, metrics: &Metrics) {
        if let Some(idx) = self.current {
            metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: group.servers[idx].to_string(),
                    error: e.label(),
                })
                .inc();
            if matches!(e, UpstreamError::Timeout(_)) && !self.timed_out.contains(&idx) {
                self.timed_out.push(idx);
            }
        }
        tracing::debug!(error = %e, "upstream failed, trying the next");
        self.last_err = Some(e);
    }

    /// Once every upstream was asked: the last resort answer, or the last error.
    pub fn finish(&mut self) -> Result<Message, UpstreamError> {
        match self.fallback.take() {
            Some(m) => Ok(m),
            None => Err(self.last_err.take().unwrap_or(UpstreamError::NoUpstream)),
        }
    }

    /// Ask the remaining upstreams in turn (UDP, then TCP on truncation).
    pub async fn run(
        &mut self,
        query: &Query,
        upstreams: &Upstreams,
        metrics: &Metrics,
    ) -> Result<Message, UpstreamError> {
        let group = upstreams.group_for(query.name());
        while let Some(server) = self.next(group) {
            let t0 = Instant::now();
            match exchange(server, &upstream_query(query), upstreams.timeout).await {
                Ok(resp) => {
                    if let Some(done) = self.answered(group, resp, t0.elapsed(), metrics) {
                        return Ok(done);
                    }
                }
                Err(e) => self.failed(group, e, metrics),
            }
        }
        self.finish()
    }
}

/// Try the group's upstreams, starting with the last one that answered.
async fn query_upstreams(
    query: &Query,
    upstreams: &Upstreams,
    metrics: &Metrics,
) -> Result<Message, UpstreamError> {
    let group = upstreams.group_for(query.name());
    Failover::new(group).run(query, upstreams, metrics).await
}

/// The unspecified address of `upstream`'s family with port 0: a socket bound to it gets a
/// random source port from the kernel (RFC 5452 9.2).
pub fn any_port_for(upstream: SocketAddr) -> SocketAddr {
    if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// One exchange with one upstream: UDP, then TCP if the answer was truncated
/// (RFC 1035 4.2.1, RFC 7766 5).
pub async fn exchange(
    server: SocketAddr,
    msg: &Message,
    timeout: Duration,
) -> Result<Message, UpstreamError> {
    let bytes = msg.to_vec().map_err(|_| UpstreamError::Malformed(server))?;
    let resp = tokio::time::timeout(timeout, udp_exchange(server, msg, &bytes))
        .await
        .map_err(|_| UpstreamError::Timeout(server))??;
    if !resp.metadata.truncation {
        return Ok(resp);
    }
    tcp_exchange_within(server, msg, &bytes, timeout).await
}

/// The TCP exchange a truncated UDP answer falls back to, within `timeout`.
pub async fn tcp_exchange_within(
    server: SocketAddr,
    msg: &Message,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Message, UpstreamError> {
    tokio::time::timeout(timeout, tcp_exchange(server, msg, bytes))
        .await
        .map_err(|_| UpstreamError::Timeout(server))?
}

/// RFC 5452 section 9.1: accept only a response with our ID and our question.
pub fn matches(req: &Message, resp: &Message) -> bool {
    resp.metadata.id == req.metadata.id
        && resp.metadata.message_type == MessageType::Response
        && resp.queries.len() == 1
        && req.queries.first().is_some_and(|q| {
            let r = &resp.queries[0];
            r.query_type() == q.query_type() && r.name().eq_ignore_root(q.name())
        })
}

async fn udp_exchange(
    server: SocketAddr,
    req: &Message,
    bytes: &[u8],
) -> Result<Message, UpstreamError> {
    let io = |e| UpstreamError::Io(server, e);
    let sock = UdpSocket::bind(any_port_for(server)).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    sock.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        match Message::from_vec(&buf[..n]) {
            Ok(resp) if matches(req, &resp) => return Ok(resp),
            // Spoofed or stray datagram: keep waiting for ours until the timeout.
            _ => continue,
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    req: &Message,
    bytes: &[u8],
) -> Result<Message, UpstreamError> {
    let io = |e| UpstreamError::Io(server, e);
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| UpstreamError::Malformed(server))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let resp = Message::from_vec(&buf).map_err(|_| UpstreamError::Malformed(server))?;
    if matches(req, &resp) {
        Ok(resp)
    } else {
        Err(UpstreamError::Malformed(server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn response(rcode: ResponseCode) -> Message {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = rcode;
        m
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("example.").unwrap();
        Record::from_rdata(
            n.clone(),
            ttl,
            RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, minimum)),
        )
    }

    fn key(i: usize) -> CacheKey {
        CacheKey::new(&Query::query(
            Name::from_ascii(format!("n{i}.example.")).unwrap(),
            RecordType::A,
        ))
    }

    fn answer(now: Instant, ttl: u32) -> Arc<CachedAnswer> {
        Arc::new(CachedAnswer::new(response(ResponseCode::NoError), now, ttl).unwrap())
    }

    #[test]
    fn a_cached_answer_decodes_to_its_records_aged() {
        let mut msg = response(ResponseCode::NXDomain);
        let owner = Name::from_ascii("www.Example.").unwrap();
        msg.answers.push(Record::from_rdata(
            owner.clone(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        msg.answers.push(Record::from_rdata(
            owner,
            20,
            RData::A(A::new(192, 0, 2, 2)),
        ));
        msg.authorities.push(soa(60, 30));
        let ans = CachedAnswer::new(msg.clone(), Instant::now(), 20).unwrap();
        assert_eq!(ans.rcode, ResponseCode::NXDomain);
        let s = ans.sections(25).unwrap();
        let aged = |v: &[Record]| -> Vec<Record> {
            v.iter()
                .cloned()
                .map(|mut r| {
                    r.ttl = r.ttl.saturating_sub(25);
                    r
                })
                .collect()
        };
        assert_eq!(s.answers, aged(&msg.answers));
        assert_eq!(s.authorities, aged(&msg.authorities));
        assert!(s.additionals.is_empty());
        assert_eq!(s.answers[0].name.to_string(), "www.Example.", "case kept");
    }

    #[test]
    fn cache_keys_ignore_case_but_not_type() {
        let q = |n: &str, t| Query::query(Name::from_ascii(n).unwrap(), t);
        assert_eq!(
            CacheKey::new(&q("WWW.example.", RecordType::A)),
            CacheKey::new(&q("www.EXAMPLE.", RecordType::A))
        );
        assert_ne!(
            CacheKey::new(&q("www.example.", RecordType::A)),
            CacheKey::new(&q("www.example.", RecordType::AAAA))
        );
    }

    #[test]
    fn a_full_cache_keeps_the_names_in_use_under_a_flood_of_new_ones() {
        let cache = Cache::new(1600);
        let now = Instant::now();
        for i in 0..100 {
            cache.insert(key(i), answer(now, 300));
        }
        for n in 0..20_000 {
            cache.insert(key(1_000_000 + n), answer(now, 300));
            // The hundred names in use are asked for between the new ones.
            let hot = key(n % 100);
            assert!(cache.get(&hot, now).is_some(), "evicted after {n} inserts");
            assert!(cache.len() <= 1600);
        }
    }

    #[test]
    fn large_answers_cannot_grow_the_cache_past_its_byte_bound() {
        let max_bytes = 4 << 20;
        let cache = Cache::with_bytes(100_000, max_bytes);
        let now = Instant::now();
        let big = |i: usize| {
            let mut m = response(ResponseCode::NoError);
            let txt = hickory_proto::rr::rdata::TXT::new(vec!["x".repeat(250); 100]);
            m.add_answer(Record::from_rdata(
                Name::from_ascii(format!("t{i}.example.")).unwrap(),
                300,
                RData::TXT(txt),
            ));
            Arc::new(CachedAnswer::new(m, now, 300).unwrap())
        };
        // 25 KiB each: 1,000 of them would be 25 MiB.
        for i in 0..1000 {
            cache.insert(key(i), big(i));
            assert!(cache.bytes() <= max_bytes, "{} after {i}", cache.bytes());
        }
        assert!(cache.len() > 50, "{}", cache.len());
        // Small answers still go in.
        cache.insert(key(5000), answer(now, 300));
        assert!(cache.get(&key(5000), now).is_some());
        // A smaller bound on reload applies at once.
        cache.set_limits(100_000, 1 << 20);
        assert!(cache.bytes() <= 1 << 20, "{}", cache.bytes());
    }

    #[test]
    fn waiters_on_one_question_are_bounded() {
        let f = Forwarder::new(100);
        let k = key(1);
        let w = || Waiter::new(|_| {});
        assert!(matches!(f.join(&k, w(), 2), Join::Leader(_)));
        assert!(matches!(f.join(&k, w(), 2), Join::Waiting));
        assert!(matches!(f.join(&k, w(), 2), Join::Waiting));
        assert!(matches!(f.join(&k, w(), 2), Join::Full(_)));
        // Another question is not affected.
        assert!(matches!(f.join(&key(2), w(), 2), Join::Leader(_)));
        f.abandon(&k);
        assert!(matches!(f.join(&k, w(), 2), Join::Leader(_)));
    }

    #[test]
    fn a_full_cache_drops_expired_answers_first() {
        let cache = Cache::new(16 * 64);
        let then = Instant::now() - std::time::Duration::from_secs(10);
        for i in 0..5000 {
            cache.insert(key(i), answer(then, 5));
        }
        assert!(cache.len() <= 1024);
        let now = Instant::now();
        let fresh: Vec<_> = (5000..5016).map(key).collect();
        for k in &fresh {
            cache.insert(k.clone(), answer(now, 300));
        }
        assert!(fresh.iter().all(|k| cache.get(k, now).is_some()));
        // Each shard a fresh answer went to dropped all its expired ones, not just an eighth.
        assert!(cache.len() < 1024 - 64, "{}", cache.len());
    }

    #[test]
    fn positive_ttl_is_the_smallest_record_ttl() {
        let mut m = response(ResponseCode::NoError);
        let n = Name::from_ascii("a.example.").unwrap();
        m.add_answer(Record::from_rdata(
            n.clone(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.add_answer(Record::from_rdata(n, 60, RData::A(A::new(192, 0, 2, 2))));
        assert_eq!(cache_ttl(&m, &CacheConfig::default()), Some(60));
    }

    #[test]
    fn negative_ttl_is_min_of_soa_ttl_and_minimum() {
        let mut m = response(ResponseCode::NXDomain);
        m.add_authority(soa(900, 30));
        assert_eq!(cache_ttl(&m, &CacheConfig::default()), Some(30));
        let mut m = response(ResponseCode::NoError);
        m.add_authority(soa(20, 300));
        assert_eq!(cache_ttl(&m, &CacheConfig::default()), Some(20));
    }

    #[test]
    fn negative_answer_without_soa_and_servfail_are_not_cached() {
        assert_eq!(
            cache_ttl(&response(ResponseCode::NXDomain), &CacheConfig::default()),
            None
        );
        assert_eq!(
            cache_ttl(&response(ResponseCode::ServFail), &CacheConfig::default()),
            None
        );
    }
}
