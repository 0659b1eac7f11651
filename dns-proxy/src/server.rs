//! The request path: parse, admit (allow list, rate limit), pick a view, answer from the
//! index or forward, size the response for its transport, encode. UDP and TCP listeners
//! are thin loops around [`Server::handle`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::answer::{ZoneSettings, answer};
use crate::config::{CacheConfig, Config, LimitsConfig};
use crate::fastpath::{Aging, AnswerCache, Key, Provenance, is_plain_query};
use crate::forward::{CachedAnswer, Forwarder, Upstreams};
use crate::index::ZoneIndex;
use crate::limits::{Full, RateLimiter, Slot, Slots, client_key};
use crate::metrics::{DropLabels, Metrics, QueryLabels};
use crate::udp::Local;
use crate::view::{Fallback, ViewPolicy, Views, ecs_prefix};

/// Everything derived from one configuration; swapped whole on reload so a query sees one
/// consistent configuration.
#[derive(Debug)]
pub struct Runtime {
    pub settings: ZoneSettings,
    pub views: Views,
    pub allow: Vec<IpNet>,
    pub upstreams: Upstreams,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    /// Distinct for every configuration loaded, so answers cached under one are not
    /// served under the next.
    generation: u64,
}

static RUNTIME_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Runtime {
    /// A runtime whose view set is complete (no DNSViews to wait for).
    pub fn from_config(c: &Config) -> anyhow::Result<Self> {
        Self::new(c, true)
    }

    /// `dnsviews_listed`: the DNSViews merged into `c.views` are all there (listed, and
    /// their watch healthy); until then no unmatched client gets the in-cluster view.
    pub fn new(c: &Config, dnsviews_listed: bool) -> anyhow::Result<Self> {
        let fallback = Fallback {
            cluster_networks: c
                .cluster
                .pod_cidrs
                .iter()
                .chain(&c.cluster.node_cidrs)
                .map(IpNet::trunc)
                .collect(),
            default_view: c.default_view.clone(),
            dnsviews_listed,
        };
        Ok(Self {
            settings: ZoneSettings::from_config(&c.cluster)?,
            views: Views::new(&c.views, &fallback),
            allow: c.allow_clients.clone(),
            upstreams: Upstreams::from_config(&c.upstreams),
            cache: c.cache.clone(),
            limits: c.limits.clone(),
            generation: RUNTIME_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

#[derive(Debug)]
pub struct Server {
    pub runtime: ArcSwap<Runtime>,
    pub index: RwLock<ZoneIndex>,
    pub forwarder: Forwarder,
    pub metrics: Metrics,
    limiter: RateLimiter,
    answers: AnswerCache,
    /// Open TCP connections, in total and per client.
    pub tcp_slots: Arc<Slots>,
    /// Forwarded queries in flight (each coalesced client counts), in total and per client.
    pub forward_slots: Arc<Slots>,
}

/// What to do with one datagram or TCP message.
#[derive(Debug)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Needs the forwarder (an await); carries the parsed request, the chosen view and
    /// whether the EDNS client-subnet chose it.
    Forward(Box<Message>, ViewPolicy, bool),
    Drop,
}

/// Static label values: no allocation per query on the hot path.
fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}

impl Server {
    pub fn new(runtime: Runtime, cache_entries: usize, metrics: Metrics) -> Self {
        let cache_bytes = runtime.cache.max_bytes;
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            index: RwLock::new(ZoneIndex::new()),
            forwarder: Forwarder::with_cache(crate::forward::Cache::with_bytes(
                cache_entries,
                cache_bytes,
            )),
            metrics,
            limiter: RateLimiter::default(),
            answers: AnswerCache::default(),
            tcp_slots: Slots::new(),
            forward_slots: Slots::new(),
        }
    }

    /// Swap in a new configuration (a reload, or a change of the DNSViews). What the
    /// caches hold is made to follow it: a smaller `cache.max_entries` applies at once, and
    /// answers for names whose upstreams changed are dropped (they came from servers that
    /// would no longer be asked; the wire cache follows by its configuration generation).
    pub fn reconfigure(&self, rt: Runtime) {
        let old = self.runtime.load_full();
        if old.cache.max_entries != rt.cache.max_entries
            || old.cache.max_bytes != rt.cache.max_bytes
        {
            self.forwarder
                .cache
                .set_limits(rt.cache.max_entries, rt.cache.max_bytes);
        }
        let moved = !old.upstreams.same_as(&rt.upstreams);
        let new = Arc::new(rt);
        self.runtime.store(new.clone());
        if moved {
            let dropped = self.forwarder.cache.remove_where(|k| {
                k.name()
                    .is_none_or(|name| old.upstreams.moved(&new.upstreams, &name))
            });
            tracing::info!(
                dropped,
                "upstreams changed: cached answers from the old ones dropped"
            );
        }
    }

    fn reject(&self, reason: &'static str) {
        self.metrics
            .rejected
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    fn count(&self, view: &str, req: &Message, rcode: ResponseCode, t: Transport) {
        self.counter(view, req, rcode, t).inc();
    }

    fn counter(&self, view: &str, req: &Message, rcode: ResponseCode, t: Transport) -> Counter {
        let qtype: &'static str = req
            .queries
            .first()
            .map(|q| q.query_type().into())
            .unwrap_or("");
        self.metrics
            .queries
            .get_or_create(&QueryLabels {
                view: view.to_string(),
                qtype,
                rcode: rcode_label(rcode),
                transport: t.label(),
            })
            .clone()
    }

    /// Admission for a packet the fast path may answer: the allow list and the rate
    /// limit, charged once. `None`: not admitted, let the full path say why.
    fn fast_admit(&self, rt: &Runtime, src: SocketAddr) -> Option<()> {
        if !rt.allow.iter().any(|n| n.contains(&src.ip())) {
            return None;
        }
        if let Some(limit) = rt.limits.rate_limit
            && !self
                .limiter
                .admit(client_key(src.ip(), Some(limit)), limit, Instant::now())
        {
            return None;
        }
        Some(())
    }

    /// Handle one query synchronously where possible (authoritative answers, cache hits,
    /// errors); forwarded misses come back as [`Outcome::Forward`].
    pub fn handle(
        &self,
        packet: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        t: Transport,
    ) -> Outcome {
        let src = canonical(src);
        let rt = self.runtime.load();
        if is_plain_query(packet) {
            if self.fast_admit(&rt, src).is_none() {
                // Refused or rate-limited: the full path, which charges the limit again
                // (a denied client stays denied) and answers or drops as it should.
                return self.handle_uncached(packet, src, local, t);
            }
            // A plain query has no client-subnet option: the view is the addresses'.
            let Ok(view) = rt.views.select(src.ip(), local.ip(), None).view else {
                return self.handle_uncached(packet, src, local, t);
            };
            let key = Key::new(std::ptr::from_ref(view) as usize, t, packet);
            let index = self.index_generation();
            if let Some(reply) = self.answers.get(rt.generation, index, &key, packet) {
                self.metrics.wire_cache_hits.inc();
                return Outcome::Reply(reply);
            }
            return self.handle_full_path(packet, src, local, t, Some((key, index, rt.generation)));
        }
        self.handle_uncached(packet, src, local, t)
    }

    fn index_generation(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation()
    }

    /// [`Server::handle`] without the wire-format answer cache: what the cache must agree
    /// with byte for byte (see tests/fast_path_differential.rs).
    pub fn handle_uncached(
        &self,
        packet: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        t: Transport,
    ) -> Outcome {
        self.handle_full_path(packet, src, local, t, None)
    }

    /// The full path. `admitted`: the fast path already applied the allow list and rate
    /// limit, and offers the cache key, index and configuration generations to store an authoritative
    /// reply under.
    fn handle_full_path(
        &self,
        packet: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        t: Transport,
        admitted: Option<(Key, u64, u64)>,
    ) -> Outcome {
        // A dual-stack `[::]` listener sees IPv4 clients as ::ffff:a.b.c.d: the allow
        // list, the rate limit and the views match them as the IPv4 clients they are.
        let src = canonical(src);
        let rt = self.runtime.load();
        let req = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => {
                self.reject("malformed");
                return formerr_from_header(packet).map_or(Outcome::Drop, Outcome::Reply);
            }
        };
        if req.metadata.message_type != MessageType::Query {
            // Never answer a response: that is how reflection loops start.
            self.reject("not_a_query");
            return Outcome::Drop;
        }
        if admitted.is_none() && !rt.allow.iter().any(|n| n.contains(&src.ip())) {
            self.reject("client_not_allowed");
            return self.reply_code(&req, ResponseCode::Refused, &rt.limits, t, false);
        }
        if req.metadata.op_code != OpCode::Query {
            return self.reply_code(&req, ResponseCode::NotImp, &rt.limits, t, false);
        }
        if req.queries.len() != 1 {
            return self.reply_code(&req, ResponseCode::FormErr, &rt.limits, t, false);
        }
        // RFC 6891 6.1.3: EDNS version 0 is the one implemented; the reply's OPT says so.
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            self.reject("bad_edns_version");
            return self.reply_code(&req, ResponseCode::BADVERS, &rt.limits, t, false);
        }
        let ecs = req
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => ecs_prefix(s.addr(), s.source_prefix()),
                _ => None,
            });
        // A trusted forwarder is limited by the client it names, not as one client.
        if admitted.is_none()
            && let Some(limit) = rt.limits.rate_limit
        {
            let client = match ecs {
                Some(prefix) if rt.views.believes_ecs_of(src.ip()) => {
                    let whole = client_key(prefix.addr(), Some(limit));
                    if prefix.prefix_len() < whole.prefix_len() {
                        prefix
                    } else {
                        whole
                    }
                }
                _ => client_key(src.ip(), Some(limit)),
            };
            if !self.limiter.admit(client, limit, Instant::now()) {
                self.reject("rate_limited");
                return match t {
                    Transport::Udp => Outcome::Drop,
                    Transport::Tcp => {
                        self.reply_code(&req, ResponseCode::Refused, &rt.limits, t, false)
                    }
                };
            }
        }
        let selected = rt.views.select(src.ip(), local.ip(), ecs);
        let by_ecs = selected.by_ecs;
        let view = match selected.view {
            Ok(v) => v,
            Err(why) => {
                // Fail closed: no view, no answers (not even that a name exists).
                self.reject(why.label());
                return self.reply_code(&req, ResponseCode::Refused, &rt.limits, t, by_ecs);
            }
        };
        let q = &req.queries[0];
        match q.query_class() {
            DNSClass::IN => {}
            DNSClass::CH => return self.chaos(&req, view, &rt.limits, t, by_ecs),
            // No data in other classes (RFC 2136 2.3's NONE, HS…) and nothing to forward.
            _ => {
                self.count(&view.name, &req, ResponseCode::Refused, t);
                return self.reply_code(&req, ResponseCode::Refused, &rt.limits, t, by_ecs);
            }
        }
        let (auth, generation) = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            let a = answer(&index, &rt.settings, view, q.name(), q.query_type());
            (a, index.generation())
        };
        if let Some(a) = auth {
            let mut resp = response_to(&req, &rt.limits, by_ecs);
            resp.metadata.authoritative = true;
            resp.metadata.recursion_available = view.forward;
            resp.metadata.response_code = a.rcode;
            resp.answers = a.answers;
            resp.authorities = a.authorities;
            resp.additionals = a.additionals;
            let counter = self.counter(&view.name, &req, a.rcode, t);
            counter.inc();
            let out = encode(&resp, &req, &rt.limits, t);
            // Store only what was computed from the index the key was made for.
            if let (Some((key, at, config)), Outcome::Reply(bytes)) = (&admitted, &out)
                && *at == generation
                && *config == rt.generation
            {
                let how = Provenance {
                    counter,
                    aging: None,
                };
                self.answers
                    .insert(rt.generation, generation, key, bytes, how);
            }
            return out;
        }
        if !view.forward {
            self.count(&view.name, &req, ResponseCode::Refused, t);
            return self.reply_code(&req, ResponseCode::Refused, &rt.limits, t, by_ecs);
        }
        // Cache hit without a task switch.
        let key = crate::forward::CacheKey::new(q);
        if let Some((hit, age)) = self.forwarder.cache.get(&key, Instant::now())
            && let Some(resp) = from_cache(&req, &hit, age, &rt.limits, by_ecs)
        {
            self.metrics.cache_hits.inc();
            let counter = self.counter(&view.name, &req, hit.rcode, t);
            counter.inc();
            let out = encode(&resp, &req, &rt.limits, t);
            // Served from the wire cache until the entry expires, its TTLs counted down.
            if let (Some((key, at, config)), Outcome::Reply(bytes)) = (&admitted, &out)
                && *at == generation
                && *config == rt.generation
            {
                let how = Provenance {
                    counter,
                    aging: Some(Aging {
                        stored: hit.stored(),
                        expires: hit.expires(),
                        age,
                        hits: self.metrics.cache_hits.clone(),
                    }),
                };
                self.answers
                    .insert(rt.generation, generation, key, bytes, how);
            }
            return out;
        }
        Outcome::Forward(Box::new(req), view.clone(), by_ecs)
    }

    /// A slot for one more forwarded query from `client`, or why not: past the bound the
    /// answer is SERVFAIL at once (no socket, no wait), so a flood of misses cannot
    /// exhaust file descriptors or memory.
    pub fn forward_slot(&self, client: IpAddr) -> Result<Slot, Full> {
        let rt = self.runtime.load();
        let l = &rt.limits;
        let slot = self.forward_slots.take(
            client_key(client, l.rate_limit),
            l.max_forwards_in_flight,
            l.max_forwards_per_client,
        );
        if let Err(full) = slot {
            self.reject(match full {
                Full::Total => "forwards_in_flight",
                Full::Client => "forwards_per_client",
            });
        }
        slot
    }

    /// Second half of a forwarded query.
    pub async fn forward(
        &self,
        req: &Message,
        view: &ViewPolicy,
        by_ecs: bool,
        t: Transport,
    ) -> Outcome {
        let rt = self.runtime.load_full();
        let q = &req.queries[0];
        let result = self
            .forwarder
            .resolve(
                q,
                &rt.upstreams,
                &rt.cache,
                &self.metrics,
                rt.limits.max_waiters_per_question,
            )
            .await;
        self.forwarded_reply(req, view, by_ecs, t, result)
    }

    /// The reply to a forwarded query once its answer (and age) or failure is known.
    pub fn forwarded_reply(
        &self,
        req: &Message,
        view: &ViewPolicy,
        by_ecs: bool,
        t: Transport,
        result: Result<(Arc<CachedAnswer>, u32), ResponseCode>,
    ) -> Outcome {
        let rt = self.runtime.load();
        let reply = result.and_then(|(ans, age)| {
            from_cache(req, &ans, age, &rt.limits, by_ecs).ok_or(ResponseCode::ServFail)
        });
        match reply {
            Ok(resp) => {
                self.count(&view.name, req, resp.metadata.response_code, t);
                encode(&resp, req, &rt.limits, t)
            }
            Err(rcode) => {
                self.count(&view.name, req, rcode, t);
                self.reply_code(req, rcode, &rt.limits, t, by_ecs)
            }
        }
    }

    /// Class CH (RFC 1035 3.2.4): `version.bind` / `version.server` TXT name this server's
    /// version, as BIND, unbound and CoreDNS's `chaos` do; every other CH name is REFUSED
    /// (`hostname.bind` and `id.server` would name the node to anyone allowed to ask).
    fn chaos(
        &self,
        req: &Message,
        view: &ViewPolicy,
        limits: &LimitsConfig,
        t: Transport,
        by_ecs: bool,
    ) -> Outcome {
        let q = &req.queries[0];
        let name = q.name().to_lowercase().to_ascii();
        if name != "version.bind." && name != "version.server." {
            self.count(&view.name, req, ResponseCode::Refused, t);
            return self.reply_code(req, ResponseCode::Refused, limits, t, by_ecs);
        }
        let mut resp = response_to(req, limits, by_ecs);
        resp.metadata.authoritative = true;
        if matches!(q.query_type(), RecordType::TXT | RecordType::ANY) {
            let text = format!("leafbridge-dns {}", env!("CARGO_PKG_VERSION"));
            let mut r = Record::from_rdata(q.name().clone(), 0, RData::TXT(TXT::new(vec![text])));
            r.dns_class = DNSClass::CH;
            resp.answers.push(r);
        }
        self.count(&view.name, req, ResponseCode::NoError, t);
        encode(&resp, req, limits, t)
    }

    fn reply_code(
        &self,
        req: &Message,
        rcode: ResponseCode,
        limits: &LimitsConfig,
        t: Transport,
        by_ecs: bool,
    ) -> Outcome {
        let mut resp = response_to(req, limits, by_ecs);
        resp.metadata.response_code = rcode;
        encode(&resp, req, limits, t)
    }

    /// Full path for one message, awaiting the forwarder if needed.
    pub async fn handle_full(
        &self,
        packet: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        t: Transport,
    ) -> Option<Vec<u8>> {
        match self.handle(packet, src, local, t) {
            Outcome::Reply(b) => Some(b),
            Outcome::Drop => None,
            Outcome::Forward(req, view, by_ecs) => {
                let result = match self.forward_slot(src.ip()) {
                    Ok(_slot) => self.forward(&req, &view, by_ecs, t).await,
                    Err(_) => {
                        self.forwarded_reply(&req, &view, by_ecs, t, Err(ResponseCode::ServFail))
                    }
                };
                match result {
                    Outcome::Reply(b) => Some(b),
                    _ => None,
                }
            }
        }
    }
}

/// `src` with an IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(src: SocketAddr) -> SocketAddr {
    SocketAddr::new(src.ip().to_canonical(), src.port())
}

/// The response skeleton: same ID, opcode, question, RD and CD (RFC 1035 4.1.1, RFC 6895
/// 2); an OPT record if the query had one (RFC 6891 6.1.1), with the query's DO bit
/// (RFC 3225 3). `by_ecs`: the EDNS client-subnet chose the view.
fn response_to(req: &Message, limits: &LimitsConfig, by_ecs: bool) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.queries = req.queries.clone();
    if let Some(req_edns) = &req.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(limits.max_udp_payload);
        edns.set_dnssec_ok(req_edns.flags().dnssec_ok);
        // RFC 7871 7.2.1: echo client-subnet. When it chose the view, the answer may
        // depend on the whole source prefix, so the scope is the source prefix length;
        // otherwise the answer is the same for every client (7.1.3): scope 0.
        if let Some(EdnsOption::Subnet(cs)) = req_edns.option(EdnsCode::Subnet) {
            let scope = if by_ecs { cs.source_prefix() } else { 0 };
            let echo = ClientSubnet::new(cs.addr(), cs.source_prefix(), scope);
            edns.options_mut().insert(EdnsOption::Subnet(echo));
        }
        resp.set_edns(edns);
    }
    resp
}

/// The reply to `req` from a cached upstream answer aged `age`; `None` if the cached records
/// do not decode (see [`CachedAnswer::sections`]).
fn from_cache(
    req: &Message,
    ans: &CachedAnswer,
    age: u32,
    limits: &LimitsConfig,
    by_ecs: bool,
) -> Option<Message> {
    let sections = ans.sections(age)?;
    let mut resp = response_to(req, limits, by_ecs);
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = ans.rcode;
    resp.answers = sections.answers;
    resp.authorities = sections.authorities;
    resp.additionals = sections.additionals;
    Some(resp)
}

/// Largest response for this query over UDP: the client's EDNS buffer size (512 without
/// EDNS, RFC 1035 4.2.1; at least 512, RFC 6891 6.2.5) capped by our configured limit.
fn udp_limit(req: &Message, limits: &LimitsConfig) -> usize {
    let client = req.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
    usize::from(client.min(limits.max_udp_payload))
}

fn encode(resp: &Message, req: &Message, limits: &LimitsConfig, t: Transport) -> Outcome {
    let Ok(bytes) = resp.to_vec() else {
        let mut fail = response_to(req, limits, false);
        fail.metadata.response_code = ResponseCode::ServFail;
        return fail.to_vec().map_or(Outcome::Drop, Outcome::Reply);
    };
    let limit = match t {
        Transport::Udp => udp_limit(req, limits),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if bytes.len() <= limit {
        return Outcome::Reply(bytes);
    }
    // RFC 2181 9: set TC and let the client retry over TCP rather than send a partial RRset.
    let truncated = resp.truncate();
    truncated.to_vec().map_or(Outcome::Drop, Outcome::Reply)
}

/// RFC 1035 4.1.1: FORMERR for a message we could not parse, if at least its header is
/// there and it claims to be a query; anything shorter is dropped.
fn formerr_from_header(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let mut out = packet[..12].to_vec();
    out[2] = 0x80 | (packet[2] & 0x79); // QR=1, keep opcode and RD, clear AA/TC
    out[3] = 1; // RA=0, Z=0, RCODE=FORMERR
    out[4..12].fill(0); // no sections
    Some(out)
}

/// A UDP listener socket. On a wildcard address it also asks for each datagram's
/// destination address (IP_PKTINFO / IPV6_RECVPKTINFO), so views by destination work and
/// replies leave from the address the query reached.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if addr.ip().is_unspecified() {
        crate::udp::enable_pktinfo(&socket, addr)?;
    }
    Ok(socket)
}

/// Ask for a receive buffer of `bytes` on a UDP listener (SO_RCVBUF) and log what the
/// kernel granted: it caps the request at `net.core.rmem_max` and reports twice the usable
/// size (socket(7)).
pub fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) -> std::io::Result<usize> {
    let s = socket2::SockRef::from(socket);
    s.set_recv_buffer_size(bytes)?;
    let got = s.recv_buffer_size()?;
    // Uncapped, the kernel reports twice what was asked (its bookkeeping overhead).
    if got < bytes.saturating_mul(2) {
        tracing::warn!(
            asked = bytes,
            granted = got,
            "UDP receive buffer capped by net.core.rmem_max: query bursts beyond it are dropped"
        );
    } else {
        tracing::info!(bytes = got, "UDP receive buffer");
    }
    Ok(got)
}

/// Serve UDP on one socket from a dedicated OS thread, forever.
///
/// A blocking receive loop: authoritative answers, cache hits and errors are answered
/// inline on this thread (no task, no channel, reused buffers). A cache miss is sent
/// upstream from this thread too, and its reply awaited and answered by the listener's
/// forwarding thread ([`crate::udp_forward`]; `runtime` only for the TCP fallback).
/// Queries are taken and answered in batches ([`crate::udp`]): every query already queued
/// is read in one call and the replies sent in one. A readiness-based async loop instead
/// costs an extra `recvfrom` (EAGAIN) and an `epoll_wait` per query at moderate rates,
/// which dominated the profile.
pub fn serve_udp(
    server: Arc<Server>,
    socket: std::net::UdpSocket,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let local = socket.local_addr()?;
    let wildcard = local.ip().is_unspecified();
    // Forwarded answers go out through another handle on the same socket, never blocking
    // (MSG_DONTWAIT; a full send buffer drops the reply like a lost datagram).
    let replier = Arc::new(socket2::Socket::from(socket.try_clone()?));
    let forwarder = crate::udp_forward::UdpForwarder::start(
        server.clone(),
        replier,
        runtime,
        format!("dns-fwd-{local}"),
    )?;
    std::thread::Builder::new()
        .name(format!("dns-udp-{local}"))
        .spawn(move || {
            let mut batch = crate::udp::Batcher::new(wildcard);
            let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(crate::udp::BATCH);
            let mut from: Vec<(Vec<u8>, SocketAddr, Option<Local>)> = Vec::new();
            loop {
                let n = match batch.recv(&socket) {
                    Ok(n) => n,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here: keep going.
                        tracing::debug!(error = %e, "udp recv");
                        continue;
                    }
                };
                replies.clear();
                from.clear();
                for i in 0..n {
                    let Some((packet, src)) = batch.datagram(i) else {
                        continue;
                    };
                    // On a wildcard listener, the address the query reached (for views by
                    // destination, and to reply from it); a datagram without one (should
                    // not happen) is answered as the listener's.
                    let dest = batch.destination(i).filter(|_| wildcard);
                    let to = dest.map_or(local, |d| SocketAddr::new(d.ip, local.port()));
                    match server.handle(packet, src, to, Transport::Udp) {
                        Outcome::Reply(b) if wildcard => from.push((b, src, dest)),
                        Outcome::Reply(b) => replies.push((b, src)),
                        Outcome::Drop => {}
                        Outcome::Forward(req, view, by_ecs) => {
                            forwarder.forward(req, view, by_ecs, src, dest)
                        }
                    }
                }
                if wildcard {
                    batch.send_from(&socket, &from);
                } else {
                    batch.send(&socket, &replies);
                }
            }
        })
}

/// Serve TCP (RFC 7766): two-byte length-prefixed messages, several per connection.
///
/// One client cannot take the service: the allow list is checked at accept (a refused
/// client holds nothing), connections are capped in total and per client (limits read
/// at every accept, so a reload applies), a connection without a complete query for
/// `tcp_idle_ms` is closed however slowly its bytes trickle in, and a reply the client
/// does not take within `tcp_write_timeout_ms` closes it (a client that pipelines and
/// never reads holds no task). Pipelined queries are answered concurrently, each reply
/// sent when ready (RFC 7766 6.2.1.1), up to `tcp_pipeline` per connection.
pub async fn serve_tcp(server: Arc<Server>, listener: TcpListener) {
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let rt = server.runtime.load();
        if !rt
            .allow
            .iter()
            .any(|n| n.contains(&src.ip().to_canonical()))
        {
            server.reject("tcp_client_not_allowed");
            continue;
        }
        let l = &rt.limits;
        let slot = server.tcp_slots.take(
            client_key(src.ip(), l.rate_limit),
            l.max_tcp_connections.max(1),
            l.max_tcp_connections_per_client.max(1),
        );
        let slot = match slot {
            Ok(s) => s,
            Err(Full::Total) => {
                server.reject("tcp_connection_limit");
                continue;
            }
            Err(Full::Client) => {
                server.reject("tcp_connections_per_client");
                continue;
            }
        };
        tokio::spawn(tcp_connection(server.clone(), stream, src, slot));
    }
}

/// Read one length-prefixed message by `deadline`; `None` at EOF, on error or late.
async fn read_message(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    deadline: tokio::time::Instant,
) -> Option<Vec<u8>> {
    let read = async {
        let len = usize::from(rd.read_u16().await.ok()?);
        let mut buf = vec![0u8; len];
        rd.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout_at(deadline, read).await.ok().flatten()
}

async fn tcp_connection(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    slot: Slot,
) {
    server.metrics.tcp_connections.inc();
    tcp_exchange_all(&server, stream, src).await;
    server.metrics.tcp_connections.dec();
    drop(slot);
}

async fn tcp_exchange_all(server: &Arc<Server>, stream: tokio::net::TcpStream, src: SocketAddr) {
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let (mut rd, mut wr) = stream.into_split();
    let limits = server.runtime.load().limits.clone();
    let pipeline = limits.tcp_pipeline.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(pipeline);
    let write_timeout = Duration::from_millis(limits.tcp_write_timeout_ms.max(1));
    let writer = tokio::spawn(async move {
        while let Some(framed) = rx.recv().await {
            match tokio::time::timeout(write_timeout, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(client = %src, "tcp client does not read its replies; closing");
                    return;
                }
            }
        }
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(pipeline));
    loop {
        let idle = Duration::from_millis(server.runtime.load().limits.tcp_idle_ms);
        let deadline = tokio::time::Instant::now() + idle;
        let Some(buf) = read_message(&mut rd, deadline).await else {
            break;
        };
        // At most `pipeline` queries of this connection in flight; waiting for one to
        // finish counts as idle time, and a writer that gave up ends the connection.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = tokio::time::sleep_until(deadline + idle) => break,
        };
        let Ok(permit) = permit else { break };
        if tx.is_closed() {
            break;
        }
        let (server, tx) = (server.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(resp) = server.handle_full(&buf, src, local, Transport::Tcp).await else {
                return;
            };
            let Ok(len) = u16::try_from(resp.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(resp.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&resp);
            let _ = tx.send(framed).await;
        });
    }
    // Replies still being made are sent before the writer ends.
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{CacheKey, CachedAnswer};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn server(yaml: &str) -> Server {
        let c = Config::from_yaml(yaml).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let rt = Runtime::from_config(&c).unwrap();
        Server::new(rt, c.cache.max_entries, Metrics::new(&mut registry))
    }

    fn cache(s: &Server, name: &str) -> CacheKey {
        let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
        let key = CacheKey::new(&q);
        let msg = Message::response(1, OpCode::Query);
        let ans = CachedAnswer::new(msg, Instant::now(), 300).unwrap();
        s.forwarder.cache.insert(key.clone(), Arc::new(ans));
        key
    }

    fn cached(s: &Server, key: &CacheKey) -> bool {
        s.forwarder.cache.get(key, Instant::now()).is_some()
    }

    #[test]
    fn a_reload_that_changes_a_zones_upstreams_drops_only_that_zones_answers() {
        let before = "upstreams:\n  default: [\"192.0.2.10:53\"]\n  zones: [{zone: corp.example, servers: [\"192.0.2.12:53\"]}]\n";
        let s = server(before);
        let corp = cache(&s, "www.corp.example.");
        let other = cache(&s, "www.example.org.");
        // The same file again: nothing dropped.
        s.reconfigure(Runtime::from_config(&Config::from_yaml(before).unwrap()).unwrap());
        assert!(cached(&s, &corp) && cached(&s, &other));
        let after = before.replace("192.0.2.12", "192.0.2.13");
        s.reconfigure(Runtime::from_config(&Config::from_yaml(&after).unwrap()).unwrap());
        assert!(
            !cached(&s, &corp),
            "answer from the old corp upstream still served"
        );
        assert!(cached(&s, &other));
    }

    #[test]
    fn a_reload_applies_a_smaller_cache_max_entries_at_once() {
        let s = server("cache: {max_entries: 10000}\n");
        for i in 0..5000 {
            cache(&s, &format!("n{i}.example.org."));
        }
        assert_eq!(s.forwarder.cache.len(), 5000);
        let smaller = Config::from_yaml("cache: {max_entries: 160}\n").unwrap();
        s.reconfigure(Runtime::from_config(&smaller).unwrap());
        assert!(
            s.forwarder.cache.len() <= 160,
            "{}",
            s.forwarder.cache.len()
        );
        for i in 0..1000 {
            cache(&s, &format!("m{i}.example.org."));
        }
        assert!(
            s.forwarder.cache.len() <= 160,
            "{}",
            s.forwarder.cache.len()
        );
    }
    #[test]
    fn the_udp_receive_buffer_is_raised_up_to_the_kernel_cap() {
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("prerequisite missing: /proc/sys/net/core/rmem_max")
            .trim()
            .parse()
            .unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        let asked = 1 << 20;
        let got = set_receive_buffer(&s, asked).unwrap();
        // socket(7): the kernel doubles the value set, after capping it at rmem_max.
        assert_eq!(got, 2 * asked.min(max), "before: {before}");
    }
}
