//! Forwarded cache misses from the UDP serving thread, without the async runtime.
//!
//! Handing a UDP miss to a tokio task cost the runtime thread two wakeups (the hand-over,
//! then the upstream's reply), about 130 µs of CPU per miss at 10,000 queries/s on the
//! benchmark machine. Here the serving thread sends the upstream query itself, from a
//! fresh socket on a random port as the async path does (RFC 5452 9.2), and one thread per
//! listener waits on all those sockets (`mio`), so a miss wakes that thread once: for the
//! reply. It checks the reply (our ID and question), caches it, answers the client and
//! every coalesced one, and fails over on a timeout, an error, SERVFAIL or REFUSED with
//! the same [`Failover`] as the async path. A truncated reply hands the rest of the work
//! to the async forwarder, which asks over TCP (RFC 7766 5).

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::forward::{
    CacheKey, Failover, Join, UpstreamError, Waiter, any_port_for, matches, tcp_exchange_within,
    upstream_query,
};
use crate::limits::Slot;
use crate::metrics::DropLabels;
use crate::server::{Outcome, Runtime, Server, Transport};
use crate::udp::Local;
use crate::view::ViewPolicy;

/// Raise the soft limit on open files to the hard limit, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do: every forwarded query in flight holds a socket (for up to
/// twice the upstream timeout when an upstream is silent), and the usual soft limit of
/// 1,024 would turn a burst of misses to a dead upstream into SERVFAILs and refused TCP
/// connections. Returns the limits now in force.
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .inspect_err(|e| tracing::warn!(error = %e, "reading the open-file limit"))
        .ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => {
                tracing::warn!(error = %e, soft, "could not raise the open-file limit");
                return Some((soft, hard));
            }
        }
    }
    Some((hard, hard))
}

/// Longest the waiting thread sleeps with nothing due.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// The waker's token; exchanges count up from 0.
const WAKE: Token = Token(usize::MAX);

/// Forwards one UDP listener's cache misses; see the module documentation.
pub struct UdpForwarder {
    server: Arc<Server>,
    /// The listener's socket, to answer clients from whichever thread has the answer.
    replier: Arc<socket2::Socket>,
    /// For the TCP fallback.
    runtime: tokio::runtime::Handle,
    registry: Registry,
    /// Wakes the waiting thread when an exchange falls due before it would wake anyway
    /// (only after a reload shortens the timeout: see [`UdpForwarder::sleep`]).
    waker: Waker,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for UdpForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpForwarder").finish_non_exhaustive()
    }
}

/// Exchanges waiting for an upstream, by token, and their deadlines in order.
#[derive(Default)]
struct Pending {
    next_token: usize,
    exchanges: HashMap<Token, Box<Exchange>>,
    deadlines: BTreeSet<(Instant, Token)>,
    /// When the waiting thread will wake at the latest.
    sleeping_until: Option<Instant>,
}

/// One forwarded query: the upstream asked now and what is left to try.
struct Exchange {
    server: Arc<Server>,
    /// `Some` until the in-flight entry is completed; dropped before that, the clients
    /// waiting get SERVFAIL rather than nothing.
    key: Option<CacheKey>,
    query: Query,
    /// The configuration the query arrived under.
    rt: Arc<Runtime>,
    failover: Failover,
    /// The current attempt: the message sent, to whom, from which socket, when.
    msg: Message,
    upstream: SocketAddr,
    socket: Option<UdpSocket>,
    sent: Instant,
    deadline: Instant,
    /// The client whose query started it.
    leader: Option<Waiter>,
}

impl Exchange {
    /// Cache and hand out the answer (an error: SERVFAIL) to everyone waiting.
    fn complete(mut self: Box<Self>, answer: Result<Message, UpstreamError>) {
        self.socket = None;
        let Some(key) = self.key.take() else {
            return;
        };
        if let Err(e) = &answer {
            tracing::debug!(error = %e, name = %self.query.name(), "forwarding failed");
        }
        let result = self
            .server
            .forwarder
            .complete(key, answer.ok(), &self.rt.cache);
        if let Some(leader) = self.leader.take() {
            leader.call(result);
        }
    }

    fn failed(&mut self, e: UpstreamError) {
        self.socket = None;
        let rt = self.rt.clone();
        let group = rt.upstreams.group_for(self.query.name());
        self.failover.failed(group, e, &self.server.metrics);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.server.forwarder.abandon(&key);
            if let Some(leader) = self.leader.take() {
                leader.call(Err(ResponseCode::ServFail));
            }
        }
    }
}

impl UdpForwarder {
    /// Start the thread that waits for upstream replies, named `name`.
    pub fn start(
        server: Arc<Server>,
        replier: Arc<socket2::Socket>,
        runtime: tokio::runtime::Handle,
        name: String,
    ) -> std::io::Result<Arc<Self>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let this = Arc::new(Self {
            server,
            replier,
            runtime,
            registry,
            waker,
            pending: Mutex::new(Pending::default()),
        });
        let waiter = this.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || waiter.run(poll))?;
        Ok(this)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forward `req`, a cache miss from the UDP client `src` seen in `view`. Joins an
    /// identical query in flight, or asks the first upstream before returning.
    /// `dest`: the address the query reached, on a wildcard listener (the reply leaves
    /// from it).
    pub fn forward(
        &self,
        req: Box<Message>,
        view: ViewPolicy,
        by_ecs: bool,
        src: SocketAddr,
        dest: Option<Local>,
    ) {
        let metrics = &self.server.metrics;
        metrics.cache_misses.inc();
        let Some(query) = req.queries.first().cloned() else {
            return;
        };
        let key = CacheKey::new(&query);
        let slot = self.server.forward_slot(src.ip()).ok();
        let full = slot.is_none();
        let waiter = self.reply_to(req, view, by_ecs, src, dest, slot);
        if full {
            return waiter.call(Err(ResponseCode::ServFail));
        }
        let rt = self.server.runtime.load_full();
        let max_waiters = rt.limits.max_waiters_per_question;
        let leader = match self.server.forwarder.join(&key, waiter, max_waiters) {
            Join::Leader(w) => w,
            Join::Waiting => {
                metrics.coalesced.inc();
                return;
            }
            Join::Full(w) => {
                metrics
                    .rejected
                    .get_or_create(&DropLabels {
                        reason: "waiters_per_question",
                    })
                    .inc();
                return w.call(Err(ResponseCode::ServFail));
            }
        };
        let failover = Failover::new(rt.upstreams.group_for(query.name()));
        let now = Instant::now();
        let ex = Box::new(Exchange {
            server: self.server.clone(),
            key: Some(key),
            // Each attempt sends a new message (a new ID); this one is never sent.
            msg: Message::query(),
            query,
            rt,
            failover,
            upstream: SocketAddr::from(([0, 0, 0, 0], 0)),
            socket: None,
            sent: now,
            deadline: now,
            leader: Some(leader),
        });
        self.next_attempt(ex);
    }

    /// What answers the client `src` once the result is known: sent on the listener's
    /// socket without blocking (a full send buffer drops it like a lost datagram).
    fn reply_to(
        &self,
        req: Box<Message>,
        view: ViewPolicy,
        by_ecs: bool,
        src: SocketAddr,
        dest: Option<Local>,
        slot: Option<Slot>,
    ) -> Waiter {
        let server = self.server.clone();
        let replier = self.replier.clone();
        Waiter::new(move |result| {
            // The client's forwarding slot is held until it is answered.
            let _slot = slot;
            let result = result.map(|answer| (answer, 0));
            if let Outcome::Reply(b) =
                server.forwarded_reply(&req, &view, by_ecs, Transport::Udp, result)
            {
                let _ = match dest {
                    None => replier.send_to_with_flags(&b, &src.into(), libc::MSG_DONTWAIT),
                    Some(_) => crate::udp::send_one(
                        &*replier,
                        &b,
                        src,
                        dest,
                        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                    ),
                };
            }
        })
    }

    /// Ask the next upstream, or complete once every one has been asked.
    fn next_attempt(&self, mut ex: Box<Exchange>) {
        loop {
            let rt = ex.rt.clone();
            let Some(upstream) = ex.failover.next(rt.upstreams.group_for(ex.query.name())) else {
                let answer = ex.failover.finish();
                return ex.complete(answer);
            };
            match Self::send(&mut ex, upstream) {
                Ok(()) => match self.wait(ex) {
                    Ok(()) => return,
                    Err((back, e)) => {
                        ex = back;
                        ex.failed(e);
                    }
                },
                Err(e) => ex.failed(e),
            }
        }
    }

    /// Send the query to `upstream` from a new socket on a random port.
    fn send(ex: &mut Exchange, upstream: SocketAddr) -> Result<(), UpstreamError> {
        let io = |e| UpstreamError::Io(upstream, e);
        let msg = upstream_query(&ex.query);
        let bytes = msg
            .to_vec()
            .map_err(|_| UpstreamError::Malformed(upstream))?;
        let socket = UdpSocket::bind(any_port_for(upstream)).map_err(io)?;
        socket.connect(upstream).map_err(io)?;
        socket.send(&bytes).map_err(io)?;
        let now = Instant::now();
        ex.msg = msg;
        ex.upstream = upstream;
        ex.socket = Some(socket);
        ex.sent = now;
        ex.deadline = now + ex.rt.upstreams.timeout;
        Ok(())
    }

    /// Hand the exchange to the waiting thread. It is in the table before its socket is
    /// registered, so no readiness event can arrive for a token not yet there.
    fn wait(&self, mut ex: Box<Exchange>) -> Result<(), (Box<Exchange>, UpstreamError)> {
        let mut p = self.pending();
        let token = Token(p.next_token);
        p.next_token = p.next_token.wrapping_add(1);
        let registered = match ex.socket.as_mut() {
            Some(s) => self.registry.register(s, token, Interest::READABLE),
            None => Err(std::io::Error::from(ErrorKind::NotConnected)),
        };
        if let Err(e) = registered {
            drop(p);
            let upstream = ex.upstream;
            return Err((ex, UpstreamError::Io(upstream, e)));
        }
        let wake = p.sleeping_until.is_some_and(|s| ex.deadline < s);
        p.deadlines.insert((ex.deadline, token));
        p.exchanges.insert(token, ex);
        drop(p);
        if wake && let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "waking the upstream thread");
        }
        Ok(())
    }

    /// The waiting thread: replies as they arrive, timeouts as they fall due.
    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; 65_535];
        loop {
            let sleep = self.sleep(Instant::now());
            if let Err(e) = poll.poll(&mut events, Some(sleep)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "waiting for upstream replies");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events {
                self.readable(event.token(), &mut buf);
            }
            self.expire(Instant::now());
        }
    }

    /// How long to wait for replies: until the first deadline, and never longer than the
    /// configured timeout, so an exchange started meanwhile (due a timeout after it is
    /// sent) cannot fall due before the thread wakes, and needs no wakeup of its own.
    fn sleep(&self, now: Instant) -> Duration {
        let timeout = self.server.runtime.load().upstreams.timeout;
        let mut p = self.pending();
        let sleep = p
            .deadlines
            .first()
            .map_or(MAX_SLEEP, |(d, _)| {
                // Round up: a timeout fires at or after its deadline, never a moment before.
                d.saturating_duration_since(now) + Duration::from_millis(1)
            })
            .min(MAX_SLEEP)
            .min(timeout)
            .max(Duration::from_millis(1));
        p.sleeping_until = Some(now + sleep);
        sleep
    }

    /// Read what arrived for `token`: our reply ends the attempt; a datagram with another
    /// ID or question (spoofed or stray) is ignored and the wait goes on.
    fn readable(&self, token: Token, buf: &mut [u8]) {
        let Some(mut ex) = self.pending().exchanges.remove(&token) else {
            return;
        };
        let outcome = loop {
            let Some(socket) = ex.socket.as_ref() else {
                break Err(UpstreamError::Io(
                    ex.upstream,
                    ErrorKind::NotConnected.into(),
                ));
            };
            match socket.recv(buf) {
                Ok(n) => match Message::from_vec(&buf[..n]) {
                    Ok(resp) if matches(&ex.msg, &resp) => break Ok(resp),
                    _ => continue,
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Still waiting: back in the table (edge-triggered: the next datagram
                    // is a new event).
                    self.pending().exchanges.insert(token, ex);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP port unreachable and the like: nothing answers there.
                Err(e) => break Err(UpstreamError::Io(ex.upstream, e)),
            }
        };
        self.pending().deadlines.remove(&(ex.deadline, token));
        ex.socket = None;
        match outcome {
            Ok(resp) if resp.metadata.truncation => self.over_tcp(ex),
            Ok(resp) => {
                let rt = ex.rt.clone();
                let group = rt.upstreams.group_for(ex.query.name());
                let elapsed = ex.sent.elapsed();
                match ex
                    .failover
                    .answered(group, resp, elapsed, &ex.server.metrics)
                {
                    Some(done) => ex.complete(Ok(done)),
                    None => self.next_attempt(ex),
                }
            }
            Err(e) => {
                ex.failed(e);
                self.next_attempt(ex);
            }
        }
    }

    /// Attempts whose deadline has passed fail over to the next upstream.
    fn expire(&self, now: Instant) {
        let due: Vec<Box<Exchange>> = {
            let mut p = self.pending();
            let mut due = Vec::new();
            while let Some(&(deadline, token)) = p.deadlines.first() {
                if deadline > now {
                    break;
                }
                p.deadlines.pop_first();
                if let Some(ex) = p.exchanges.remove(&token) {
                    due.push(ex);
                }
            }
            due
        };
        for mut ex in due {
            let upstream = ex.upstream;
            ex.failed(UpstreamError::Timeout(upstream));
            self.next_attempt(ex);
        }
    }

    /// A truncated UDP answer: ask the same upstream over TCP, then go on with the async
    /// forwarder's failover if that fails.
    fn over_tcp(&self, mut ex: Box<Exchange>) {
        self.runtime.spawn(async move {
            let rt = ex.rt.clone();
            let server = ex.server.clone();
            let group = rt.upstreams.group_for(ex.query.name());
            let upstream = ex.upstream;
            let tcp = match ex.msg.to_vec() {
                Ok(bytes) => {
                    tcp_exchange_within(upstream, &ex.msg, &bytes, rt.upstreams.timeout).await
                }
                Err(_) => Err(UpstreamError::Malformed(upstream)),
            };
            match tcp {
                Ok(resp) => {
                    let elapsed = ex.sent.elapsed();
                    if let Some(done) = ex.failover.answered(group, resp, elapsed, &server.metrics)
                    {
                        return ex.complete(Ok(done));
                    }
                }
                Err(e) => ex.failover.failed(group, e, &server.metrics),
            }
            let answer = ex
                .failover
                .run(&ex.query, &rt.upstreams, &server.metrics)
                .await;
            ex.complete(answer);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket as StdUdp;

    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// What a scripted upstream does with each query it receives.
    #[derive(Clone, Copy)]
    enum Script {
        /// Never answers (a black hole: no ICMP either).
        Silent,
        /// A reply with another ID, one with another question, then the real answer.
        StrayFirst,
        /// Drops the first query (a lost datagram), answers the rest.
        DropFirst,
    }

    /// A scripted upstream on loopback; returns its address and a count of queries.
    fn upstream(script: Script) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let sock = StdUdp::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = |id: u16, name: &Name| {
                    let mut r = Message::response(id, OpCode::Query);
                    r.metadata.message_type = MessageType::Response;
                    r.metadata.recursion_available = true;
                    let mut query = q.queries[0].clone();
                    query.set_name(name.clone());
                    r.add_query(query);
                    let a = RData::A(A::new(192, 0, 2, 7));
                    r.add_answer(Record::from_rdata(name.clone(), 60, a));
                    r.to_vec().unwrap()
                };
                let name = q.queries[0].name().clone();
                match script {
                    Script::Silent => {}
                    Script::StrayFirst => {
                        let other = Name::from_ascii("other.example.").unwrap();
                        let _ = sock.send_to(&reply(q.metadata.id.wrapping_add(1), &name), from);
                        let _ = sock.send_to(&reply(q.metadata.id, &other), from);
                        let _ = sock.send_to(&reply(q.metadata.id, &name), from);
                    }
                    Script::DropFirst => {
                        if count.load(std::sync::atomic::Ordering::SeqCst) > 1 {
                            let _ = sock.send_to(&reply(q.metadata.id, &name), from);
                        }
                    }
                }
            }
        });
        (addr, seen)
    }

    struct Setup {
        server: Arc<Server>,
        fwd: Arc<UdpForwarder>,
        listener: SocketAddr,
        _rt: tokio::runtime::Runtime,
    }

    fn setup(upstreams: &[SocketAddr], timeout_ms: u64) -> Setup {
        let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
        let yaml = format!(
            "allow_clients: [\"127.0.0.0/8\"]\ncluster: {{node_cidrs: [\"127.0.0.0/8\"]}}\nupstreams:\n  default: [{}]\n  timeout_ms: {timeout_ms}\n",
            list.join(", ")
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let server = Arc::new(Server::new(
            Runtime::from_config(&config).unwrap(),
            100,
            Metrics::new(&mut Registry::default()),
        ));
        let listener = StdUdp::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fwd = UdpForwarder::start(
            server.clone(),
            Arc::new(socket2::Socket::from(listener)),
            rt.handle().clone(),
            "test-fwd".into(),
        )
        .unwrap();
        Setup {
            server,
            fwd,
            listener: addr,
            _rt: rt,
        }
    }

    /// A client asking `name` through the forwarder as the UDP thread would.
    fn ask(s: &Setup, name: &str) -> StdUdp {
        let client = StdUdp::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let bytes = q.to_vec().unwrap();
        let src = client.local_addr().unwrap();
        match s.server.handle(&bytes, src, s.listener, Transport::Udp) {
            Outcome::Forward(req, view, by_ecs) => s.fwd.forward(req, view, by_ecs, src, None),
            other => panic!("expected a forwarded miss, got {other:?}"),
        }
        client
    }

    fn answer(client: &StdUdp) -> Message {
        let mut buf = [0u8; 4096];
        let n = client.recv(&mut buf).expect("a reply to the client");
        Message::from_vec(&buf[..n]).unwrap()
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        // nextest runs each test in its own process; under `cargo test` the limit ends
        // where it started or higher.
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, (hard / 2).max(64), hard).unwrap();
        let (soft, hard) = raise_fd_limit().expect("getrlimit");
        assert_eq!(soft, hard);
        let now =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(now, (hard, hard));
    }

    /// Ask `www.example.` through a forwarder whose one upstream follows `script`: the
    /// client gets the upstream's one record, after the upstream saw `asked` queries.
    fn answered_through(script: Script, timeout_ms: u64, asked: usize) -> Setup {
        let (up, seen) = upstream(script);
        let s = setup(&[up], timeout_ms);
        let reply = answer(&ask(&s, "www.example."));
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), asked);
        s
    }

    #[test]
    fn stray_replies_are_ignored_and_ours_answers_the_client() {
        let s = answered_through(Script::StrayFirst, 2000, 1);
        // Cached: the next query is answered without a miss.
        assert!(matches!(
            s.server.handle(
                &{
                    let mut q = Message::query();
                    q.add_query(Query::query(
                        Name::from_ascii("www.example.").unwrap(),
                        RecordType::A,
                    ));
                    q.to_vec().unwrap()
                },
                "127.0.0.1:9".parse().unwrap(),
                s.listener,
                Transport::Udp
            ),
            Outcome::Reply(_)
        ));
    }

    #[test]
    fn a_silent_upstream_times_out_and_the_next_one_answers() {
        let (silent, _) = upstream(Script::Silent);
        let (good, _) = upstream(Script::StrayFirst);
        let s = setup(&[silent, good], 200);
        let t0 = Instant::now();
        let reply = answer(&ask(&s, "www.example."));
        assert_eq!(reply.answers.len(), 1, "{reply:?}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(800),
            "{took:?}"
        );
    }

    #[test]
    fn when_every_upstream_fails_each_coalesced_client_gets_servfail() {
        let (silent, seen) = upstream(Script::Silent);
        let s = setup(&[silent], 200);
        let t0 = Instant::now();
        let clients: Vec<StdUdp> = (0..3).map(|_| ask(&s, "www.example.")).collect();
        for c in &clients {
            assert_eq!(answer(c).metadata.response_code, ResponseCode::ServFail);
        }
        // One upstream query for the three clients, asked once more after its timeout.
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(s.server.metrics.coalesced.get(), 2);
        // Nothing left in flight: the next query asks upstream again.
        drop(ask(&s, "www.example."));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn a_lost_query_to_the_only_upstream_is_asked_again_not_servfail() {
        answered_through(Script::DropFirst, 200, 2);
    }
}
