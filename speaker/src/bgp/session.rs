//! The per-peer task: owns the TCP connections and the timers, turns what happens into FSM
//! `Input`s and executes the FSM's `Output`s (the sans-IO split of `fsm`), and keeps the peer's
//! Adj-RIB-Out equal to the desired set it watches.
//!
//! - Each TCP connection has a reader task (framing with `codec::frame_len`, then `decode`) and
//!   a writer task. The session task never blocks on a socket: it hands the writer one batch at
//!   a time (at most `BATCH_OCTETS` of UPDATEs plus any control messages) and encodes the next
//!   one only when the writer reports the previous one written. A peer that stops reading
//!   therefore costs one batch of memory, not a growing queue, and the RFC 9687 Send Hold
//!   timer (running while a batch waits) closes its session.
//! - The desired set comes from a `tokio::sync::watch`; a change replaces the Adj-RIB-Out's
//!   outbox (`rib`): what goes out is the difference with what the socket has taken, so changes
//!   made while the peer is slow coalesce. It never resets the session.
//! - On Established the Adj-RIB-Out starts empty: everything desired is sent, then End-of-RIB
//!   (RFC 4724 §2), which is also the re-sync after a reconnect or our own restart.
//! - Stopping in withdraw mode sends the withdrawals (or, first, an RFC 8326 GRACEFUL_SHUTDOWN
//!   re-announcement), waits the drain time, sends the Cease, shuts the write side and keeps
//!   reading until the peer's FIN, so the Cease is not lost to a reset.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::codec::{self, CodecContext};
use super::fsm::{self, ConnectionId, Fsm, Input, Negotiated, Output, State, Timer};
use super::message::{Capability, Message, Notification};
use super::rib::{AdjRibOut, ExportPolicy, RefreshAnswer, Route, RouteSet, Unexportable};
use super::transport::{self, TransportConfig};
use crate::metrics::{SpeakerMetrics, state_number};

/// A route as configured: the next hop may be "our address on the session" (next hop self),
/// written as the unspecified address of the prefix's family. That address can never be a
/// real next hop (configurations refuse it), and a flag beside the route would make every
/// desired route 8 bytes larger than the configuration entry it is built from, which keeps a
/// large table from being converted in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub route: Route,
}

impl DesiredRoute {
    /// `route`, sent with our session address as its next hop.
    pub fn next_hop_self(mut route: Route) -> Self {
        route.next_hop = match route.prefix {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Self { route }
    }

    /// `route`, sent with its own next hop (which must not be unspecified).
    pub fn with_next_hop(route: Route) -> Self {
        Self { route }
    }

    /// Whether the next hop is our session address.
    pub fn is_next_hop_self(&self) -> bool {
        self.route.next_hop.is_unspecified()
    }
}

/// What one peer should have, shared between the configuration and the session task.
pub type DesiredRoutes = Arc<Vec<DesiredRoute>>;

/// Everything a session needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// For logs and metrics.
    pub name: String,
    pub fsm: fsm::PeerConfig,
    pub transport: TransportConfig,
    /// Only accept connections (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// Next hop for IPv6 prefixes with next hop self on an IPv4 session.
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// Next hop for IPv4 prefixes with next hop self on an IPv6 session.
    pub ipv4_next_hop: Option<Ipv4Addr>,
}

/// How a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopMode {
    /// Withdraw every route, wait `drain`, then Cease/Administrative Shutdown with this RFC 8203
    /// message. With `graceful_shutdown`, the routes are first re-announced with the RFC 8326
    /// GRACEFUL_SHUTDOWN community (and LOCAL_PREF 0 to internal peers) for the `drain` time,
    /// so the peer moves traffic away while they still work, and withdrawn after it.
    Withdraw {
        message: Option<String>,
        drain: Duration,
        graceful_shutdown: bool,
    },
    /// With graceful restart negotiated: close the TCP connection without a NOTIFICATION, so
    /// the peer keeps our routes as stale (RFC 4724 §4.2). Without it: Administrative Shutdown.
    Graceful { message: Option<String> },
}

impl StopMode {
    /// Withdraw, then Cease at once.
    pub fn withdraw(message: Option<String>) -> Self {
        Self::Withdraw {
            message,
            drain: Duration::ZERO,
            graceful_shutdown: false,
        }
    }
}

/// RFC 8326 §5: GRACEFUL_SHUTDOWN, 65535:0.
pub const GRACEFUL_SHUTDOWN: u32 = 0xffff_0000;

/// How long closing connections may take to flush what was queued on them.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a closed connection keeps reading, waiting for the peer's FIN after ours: closing
/// with unread data makes Linux send a RST, which can destroy our Cease on the way.
const CLOSE_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the withdrawals before a Cease may take to be handed to the socket.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Octets of NLRI per batch handed to a writer: big enough for many full UPDATEs per write,
/// small enough that a stalled peer holds little memory.
const BATCH_OCTETS: usize = 64 * 1024;

/// A running session task.
#[derive(Debug)]
pub struct SessionHandle {
    stop: Option<oneshot::Sender<StopMode>>,
    incoming: mpsc::Sender<TcpStream>,
    state: watch::Receiver<State>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Hand over a connection the peer opened to us (from the shared listener).
    pub fn incoming(&self, stream: TcpStream) {
        if self.incoming.try_send(stream).is_err() {
            warn!("session task is busy or gone; dropping inbound connection");
        }
    }

    /// Where the listener hands inbound connections for this peer.
    pub fn incoming_sender(&self) -> mpsc::Sender<TcpStream> {
        self.incoming.clone()
    }

    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stop the session and wait until its connections are flushed and closed.
    pub async fn stop(mut self, mode: StopMode) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(mode);
        }
        let _ = self.task.await;
    }
}

/// Start the task of one peer.
pub fn spawn(
    cfg: SessionConfig,
    desired: watch::Receiver<DesiredRoutes>,
    metrics: SpeakerMetrics,
) -> SessionHandle {
    // A gate whose sender is gone stays open for good.
    spawn_gated(cfg, desired, metrics, watch::channel(true).1)
}

/// Like `spawn`, with a gate (BFD: "the path to the peer works"): while it is false the
/// session is held in Idle, and turning false closes a running session at once with
/// Cease/Administrative Shutdown (ManualStop); turning true starts it again (ManualStart).
pub fn spawn_gated(
    cfg: SessionConfig,
    desired: watch::Receiver<DesiredRoutes>,
    metrics: SpeakerMetrics,
    gate: watch::Receiver<bool>,
) -> SessionHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (in_tx, in_rx) = mpsc::channel(4);
    let (state_tx, state_rx) = watch::channel(State::Idle);
    let span = tracing::info_span!("peer", name = %cfg.name, addr = %cfg.transport.id());
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let session = Session {
        fsm: Fsm::new(cfg.fsm.clone()),
        labels: SpeakerMetrics::labels(&cfg.name),
        cfg,
        desired,
        metrics,
        state_tx,
        ev_tx,
        connections: HashMap::new(),
        connecting: HashMap::new(),
        timers: HashMap::new(),
        closing: Vec::new(),
        established: None,
        stopping: None,
    };
    let task = tokio::spawn(session.run(stop_rx, in_rx, ev_rx, gate).instrument(span));
    SessionHandle {
        stop: Some(stop_tx),
        incoming: in_tx,
        state: state_rx,
        task,
    }
}

/// What the connection tasks report to the session task.
// A message is moved through once; boxing it would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Event {
    Connected(ConnectionId, TcpStream),
    ConnectFailed(ConnectionId, String),
    Message(ConnectionId, Message),
    DecodeError(ConnectionId, Notification),
    Closed(ConnectionId, String),
    /// The writer handed the last batch to the socket completely.
    Written(ConnectionId),
}

#[derive(Debug)]
struct Connection {
    /// At most one batch is in the channel or being written (`in_flight`), plus the last one
    /// at close: back-pressure from the socket to the session task.
    tx: mpsc::Sender<Bytes>,
    in_flight: bool,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// How messages are encoded: the default until Established, then what was negotiated.
    ctx: CodecContext,
    local: SocketAddr,
    pending: BytesMut,
    updates_pending: u64,
}

#[derive(Debug)]
struct EstablishedSession {
    connection: ConnectionId,
    /// What `next_hop: self` is on this connection: our address, or for an IPv6 session the
    /// global next hop `ExportPolicy::link_local_next_hop` pairs with a link-local one.
    self_address: IpAddr,
    rib: AdjRibOut,
    negotiated: Box<Negotiated>,
}

#[derive(Debug)]
struct Session {
    cfg: SessionConfig,
    fsm: Fsm,
    desired: watch::Receiver<DesiredRoutes>,
    metrics: SpeakerMetrics,
    labels: crate::metrics::PeerLabels,
    state_tx: watch::Sender<State>,
    ev_tx: mpsc::Sender<Event>,
    connections: HashMap<ConnectionId, Connection>,
    connecting: HashMap<ConnectionId, JoinHandle<()>>,
    timers: HashMap<Timer, Instant>,
    closing: Vec<JoinHandle<()>>,
    established: Option<EstablishedSession>,
    stopping: Option<Stopping>,
}

/// Where a withdraw-mode stop is (`StopMode::Withdraw`).
#[derive(Debug)]
struct Stopping {
    message: Option<String>,
    drain: Duration,
    stage: StopStage,
}

impl StopStage {
    fn until(self) -> Instant {
        match self {
            Self::Announcing { until }
            | Self::Withdrawing { until }
            | Self::Draining { until, .. } => until,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopStage {
    /// GRACEFUL_SHUTDOWN re-announcements going out; then `Draining { then_withdraw: true }`.
    Announcing { until: Instant },
    /// Withdrawals going out, until handed to the socket or the deadline.
    Withdrawing { until: Instant },
    /// The drain delay: the session stays up (keepalives, reading) before the next step.
    Draining { until: Instant, then_withdraw: bool },
}

impl Session {
    async fn run(
        mut self,
        mut stop_rx: oneshot::Receiver<StopMode>,
        mut in_rx: mpsc::Receiver<TcpStream>,
        mut ev_rx: mpsc::Receiver<Event>,
        mut gate: watch::Receiver<bool>,
    ) {
        self.metrics
            .session_state
            .get_or_create(&self.labels)
            .set(state_number(State::Idle));
        // Present from the start, so that dashboards see 0 rather than nothing.
        let _ = self.metrics.session_flaps.get_or_create(&self.labels);
        let _ = self.metrics.updates_sent.get_or_create(&self.labels);
        let _ = self.metrics.prefixes_advertised.get_or_create(&self.labels);
        let mut open = *gate.borrow_and_update();
        if open {
            self.input(Input::ManualStart {
                passive: self.cfg.passive,
            });
        } else {
            info!("held in Idle until the gate (BFD) opens");
        }
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let stop_deadline = self.stopping.as_ref().map(|s| s.stage.until());
            let running = self.stopping.is_none();
            tokio::select! {
                mode = &mut stop_rx, if running => {
                    if self.begin_stop(mode.unwrap_or(StopMode::withdraw(None))) {
                        break;
                    }
                }
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                Some(stream) = in_rx.recv() => {
                    if running {
                        self.on_incoming(stream);
                    }
                }
                Ok(()) = self.desired.changed(), if running => self.sync_desired(),
                Ok(()) = gate.changed(), if running => {
                    let now = *gate.borrow_and_update();
                    if now != open {
                        open = now;
                        if open {
                            info!("gate (BFD) open: starting the session");
                            self.input(Input::ManualStart { passive: self.cfg.passive });
                        } else {
                            warn!("gate (BFD) closed: closing the session and holding it in Idle");
                            self.input(Input::ManualStop { reason: Some("BFD session down".to_owned()) });
                        }
                    }
                }
                () = sleep_until_opt(next_timer.map(|(_, at)| at)) => {
                    if let Some((timer, _)) = next_timer {
                        self.timers.remove(&timer);
                        self.input(Input::TimerExpired(timer));
                    }
                }
                () = sleep_until_opt(stop_deadline) => {}
            }
            if self.stopping.is_some() && self.advance_stop() {
                break;
            }
        }
        self.finish(ev_rx).await;
    }

    /// Start stopping; true when there is nothing to wait for.
    fn begin_stop(&mut self, mode: StopMode) -> bool {
        let graceful_ok = self
            .established
            .as_ref()
            .is_some_and(|e| e.negotiated.graceful_restart);
        let (message, drain, graceful_shutdown) = match mode {
            StopMode::Graceful { .. } if graceful_ok => {
                info!(
                    "stopping gracefully: closing without NOTIFICATION so the peer keeps our routes"
                );
                self.input(Input::GracefulStop);
                return true;
            }
            StopMode::Graceful { message } => (message, Duration::ZERO, false),
            StopMode::Withdraw {
                message,
                drain,
                graceful_shutdown,
            } => (message, drain, graceful_shutdown),
        };
        let now = Instant::now();
        let stage = if graceful_shutdown && !drain.is_zero() && self.established.is_some() {
            self.queue_graceful_shutdown();
            StopStage::Announcing {
                until: now + WITHDRAW_TIMEOUT,
            }
        } else {
            self.queue_withdraw_all();
            StopStage::Withdrawing {
                until: now + WITHDRAW_TIMEOUT,
            }
        };
        self.stopping = Some(Stopping {
            message,
            drain,
            stage,
        });
        self.pump_all();
        false
    }

    /// RFC 8326 §4: re-announce every route with GRACEFUL_SHUTDOWN (and, to internal peers,
    /// LOCAL_PREF 0) so the peer prefers other paths while ours still forward.
    fn queue_graceful_shutdown(&mut self) {
        let Some(est) = &mut self.established else {
            return;
        };
        let lowered: RouteSet = est
            .rib
            .routes()
            .iter()
            .map(|(p, r)| {
                let mut r = r.clone();
                r.communities.push(GRACEFUL_SHUTDOWN);
                r.local_pref = Some(0);
                (*p, r.normalized())
            })
            .collect();
        info!(
            routes = lowered.len(),
            "re-announcing every route with GRACEFUL_SHUTDOWN before the drain"
        );
        est.rib.queue_desired(lowered.into_values());
    }

    fn queue_withdraw_all(&mut self) {
        if let Some(est) = &mut self.established {
            let queued = est.rib.queue_desired(std::iter::empty());
            info!(
                withdrawn = queued.withdraw,
                "withdrawing every route before shutdown"
            );
        }
    }

    /// Move a withdraw-mode stop on when its stage is done; true once the Cease is sent.
    fn advance_stop(&mut self) -> bool {
        loop {
            let Some(stopping) = &self.stopping else {
                return true;
            };
            let now = Instant::now();
            let sent_all = self.established.as_ref().is_none_or(|est| {
                !est.rib.has_outstanding()
                    && self
                        .connections
                        .get(&est.connection)
                        .is_none_or(|c| !c.in_flight && c.pending.is_empty())
            });
            let drain = stopping.drain;
            let next = match stopping.stage {
                StopStage::Announcing { until } if sent_all || now >= until => {
                    StopStage::Draining {
                        until: now + drain,
                        then_withdraw: true,
                    }
                }
                StopStage::Withdrawing { until } if sent_all || now >= until => {
                    StopStage::Draining {
                        until: now + drain,
                        then_withdraw: false,
                    }
                }
                StopStage::Draining {
                    until,
                    then_withdraw: true,
                } if now >= until => {
                    self.queue_withdraw_all();
                    self.pump_all();
                    StopStage::Withdrawing {
                        until: now + WITHDRAW_TIMEOUT,
                    }
                }
                StopStage::Draining {
                    until,
                    then_withdraw: false,
                } if now >= until => {
                    let reason = self.stopping.take().and_then(|s| s.message);
                    self.input(Input::ManualStop { reason });
                    return true;
                }
                _ => return false,
            };
            if let (StopStage::Draining { .. }, false) = (next, drain.is_zero()) {
                info!(?drain, "waiting the drain time before the next step");
            }
            if let Some(s) = &mut self.stopping {
                s.stage = next;
            }
        }
    }

    /// Close what is left and wait for the connections to flush and see the peer's FIN, still
    /// taking events so that readers are never stuck on a full channel.
    async fn finish(&mut self, mut ev_rx: mpsc::Receiver<Event>) {
        for (_, c) in self.connecting.drain() {
            c.abort();
        }
        let ids: Vec<_> = self.connections.keys().copied().collect();
        for id in ids {
            self.close(id, true);
        }
        let closing = futures::future::join_all(std::mem::take(&mut self.closing));
        tokio::pin!(closing);
        loop {
            tokio::select! {
                _ = &mut closing => break,
                Some(_) = ev_rx.recv() => {}
            }
        }
        self.metrics.forget(&self.cfg.name);
    }

    /// Feed one input to the FSM and carry out what it says.
    fn input(&mut self, input: Input) {
        let outputs = self.fsm.handle(input, std::time::Instant::now());
        for o in outputs {
            self.execute(o);
        }
        self.pump_all();
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Connect(id) => self.connect(id),
            Output::Send {
                connection,
                message,
            } => self.send(connection, &message),
            Output::CloseConnection { connection, reason } => {
                debug!(%connection, %reason, "closing connection");
                if let Some(c) = self.connecting.remove(&connection) {
                    c.abort();
                }
                // A peer that does not read would only hold the close up.
                let flush = reason != fsm::DownReason::SendHoldTimerExpired;
                self.close(connection, flush);
            }
            Output::StartTimer { timer, after } => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Output::StopTimer(timer) => {
                self.timers.remove(&timer);
            }
            Output::SessionEstablished(negotiated) => self.on_established(negotiated),
            Output::SessionDown(reason) => {
                warn!(%reason, "session down");
                self.established = None;
                self.metrics.session_flaps.get_or_create(&self.labels).inc();
                self.metrics
                    .prefixes_advertised
                    .get_or_create(&self.labels)
                    .set(0);
            }
            Output::RouteRefreshRequested(family) => {
                if let Some(est) = &mut self.established {
                    // RFC 2918 §4: re-advertise the Adj-RIB-Out of that family, at the pace
                    // the peer reads; requests during an answer merge into one more pass.
                    match est.rib.request_refresh(family) {
                        RefreshAnswer::Started => info!(?family, "answering ROUTE-REFRESH"),
                        RefreshAnswer::Coalesced => {
                            tracing::trace!(?family, "ROUTE-REFRESH while answering one: merged")
                        }
                    }
                }
            }
            Output::UpdateReceived(update) => {
                // The speaker only announces; what peers send is not used (logged for debugging).
                debug!(
                    announced = update.nlri.len(),
                    withdrawn = update.withdrawn.len(),
                    "UPDATE received"
                );
            }
            Output::StateChanged { from, to } => {
                info!(%from, %to, "state changed");
                self.metrics
                    .session_state
                    .get_or_create(&self.labels)
                    .set(state_number(to));
                let _ = self.state_tx.send(to);
            }
        }
    }

    fn on_established(&mut self, negotiated: Box<Negotiated>) {
        let id = negotiated.connection;
        let Some(conn) = self.connections.get_mut(&id) else {
            warn!(%id, "established on an unknown connection");
            return;
        };
        conn.ctx = negotiated.codec_context();
        let local = conn.local.ip();
        info!(
            peer_as = negotiated.peer_as,
            peer_id = %negotiated.peer_router_id,
            hold = ?negotiated.hold_time,
            graceful_restart = negotiated.graceful_restart,
            extended_message = negotiated.extended_message,
            "session established"
        );
        let mut policy = ExportPolicy::from_negotiated(&negotiated, self.cfg.ipv6_next_hop);
        let mut self_address = local;
        if let (IpAddr::V6(l), IpAddr::V6(p)) = (local, self.cfg.transport.peer.ip()) {
            policy.link_local_next_hop =
                transport::self_next_hops(l, p, self.cfg.transport.interface.as_deref());
            if let Some((global, ll)) = policy.link_local_next_hop {
                self_address = IpAddr::V6(global);
                debug!(next_hop = %global, link_local = %ll, "IPv6 next hop self");
            } else if l.is_unicast_link_local() {
                warn!(%l, "no addresses readable for the link-local session; IPv6 next hop self is the link-local address alone");
            }
        }
        let mut rib = AdjRibOut::new(policy);
        let queued = if self.stopping.is_some() {
            rib.queue_desired(std::iter::empty())
        } else {
            let desired = self.desired.borrow_and_update();
            let mut routes = Resolved::new(&desired, self_address, &self.cfg);
            let queued = rib.queue_desired(&mut routes);
            routes.warn_left_out();
            queued
        };
        rib.queue_end_of_rib();
        warn_unexportable(&queued.unexportable);
        info!(routes = queued.announce, "initial sync, then End-of-RIB");
        self.established = Some(EstablishedSession {
            connection: id,
            self_address,
            rib,
            negotiated,
        });
        // Sent by `pump_all` at the end of this input.
    }

    /// The desired set changed: send the difference (RFC 4271 §9.2: only what changed).
    fn sync_desired(&mut self) {
        let Some(est) = &mut self.established else {
            // Sent in full on Established.
            self.desired.borrow_and_update();
            return;
        };
        let desired = self.desired.borrow_and_update();
        let mut routes = Resolved::new(&desired, est.self_address, &self.cfg);
        let queued = est.rib.queue_desired(&mut routes);
        routes.warn_left_out();
        drop(desired);
        warn_unexportable(&queued.unexportable);
        if queued.is_empty() {
            return;
        }
        info!(
            announce = queued.announce,
            withdraw = queued.withdraw,
            "desired routes changed"
        );
        self.pump_all();
    }

    fn send(&mut self, id: ConnectionId, message: &Message) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if let Err(e) = codec::encode(message, &conn.ctx, &mut conn.pending) {
            // The packer sizes UPDATEs for the negotiated maximum; this is a bug, not input.
            warn!(error = %e, "message not sent");
            return;
        }
        if matches!(message, Message::Update(_)) {
            conn.updates_pending += 1;
        }
    }

    /// Hand the next batch to every writer that is free.
    fn pump_all(&mut self) {
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.pump(id);
        }
    }

    /// If the writer of `id` is free: encode the next UPDATEs (Established connection only)
    /// after the control messages already waiting, and hand them over as one buffer, so one
    /// write per batch. The Send Hold timer runs while a batch waits (RFC 9687).
    fn pump(&mut self, id: ConnectionId) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        if conn.in_flight {
            return;
        }
        if let Some(est) = self.established.as_mut().filter(|e| e.connection == id) {
            while conn.pending.len() < BATCH_OCTETS && est.rib.has_outstanding() {
                for u in est.rib.next_updates(BATCH_OCTETS) {
                    if let Err(e) = codec::encode(&Message::Update(u), &conn.ctx, &mut conn.pending)
                    {
                        // The packer sizes UPDATEs for the negotiated maximum; a bug, not input.
                        warn!(error = %e, "UPDATE not sent");
                        continue;
                    }
                    conn.updates_pending += 1;
                }
            }
            self.metrics
                .prefixes_advertised
                .get_or_create(&self.labels)
                .set(est.rib.len() as i64);
        }
        if conn.pending.is_empty() {
            return;
        }
        if !flush(conn, &self.metrics, &self.labels) {
            return;
        }
        let hold = match &self.established {
            Some(e) if e.connection == id => e.negotiated.hold_time,
            _ => Duration::from_secs(self.cfg.fsm.hold_time.into()),
        };
        let after = self.cfg.fsm.send_hold_time_for(hold);
        self.timers
            .entry(Timer::SendHold(id))
            .or_insert_with(|| Instant::now() + after);
    }

    fn on_written(&mut self, id: ConnectionId) {
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.in_flight = false;
            self.timers.remove(&Timer::SendHold(id));
            self.pump(id);
        }
    }

    /// Close a connection: with `flush`, what is queued is written, the write side shut down
    /// (our FIN) and the read side kept open until the peer's FIN or `CLOSE_READ_TIMEOUT`.
    fn close(&mut self, id: ConnectionId, flush_first: bool) {
        let Some(mut conn) = self.connections.remove(&id) else {
            return;
        };
        for t in [Timer::Hold(id), Timer::Keepalive(id), Timer::SendHold(id)] {
            self.timers.remove(&t);
        }
        if flush_first && !conn.pending.is_empty() {
            // The writer may still hold a batch: this last one (the NOTIFICATION) has the
            // channel's second slot.
            conn.in_flight = false;
            flush(&mut conn, &self.metrics, &self.labels);
        }
        // Dropping the sender lets the writer send what is queued, then shut down the socket.
        drop(conn.tx);
        let (writer, reader) = (conn.writer, conn.reader);
        self.closing.retain(|h| !h.is_finished());
        self.closing.push(tokio::spawn(async move {
            if !flush_first {
                writer.abort();
                reader.abort();
                return;
            }
            let abort = writer.abort_handle();
            if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer)
                .await
                .is_err()
            {
                abort.abort();
            }
            let abort = reader.abort_handle();
            if tokio::time::timeout(CLOSE_READ_TIMEOUT, reader)
                .await
                .is_err()
            {
                abort.abort();
            }
        }));
        if self
            .established
            .as_ref()
            .is_some_and(|e| e.connection == id)
        {
            self.established = None;
        }
    }

    fn connect(&mut self, id: ConnectionId) {
        let cfg = self.cfg.transport.clone();
        let tx = self.ev_tx.clone();
        let handle = tokio::spawn(
            async move {
                let ev = match transport::connect(&cfg).await {
                    Ok(stream) => Event::Connected(id, stream),
                    Err(e) => {
                        if matches!(e, transport::TransportError::Interface { .. }) {
                            // An operator's mistake or an interface not there yet: say so
                            // (other connect failures are the peer's and logged at debug).
                            warn!(error = %e, "cannot connect to the link-local peer");
                        }
                        Event::ConnectFailed(id, e.to_string())
                    }
                };
                let _ = tx.send(ev).await;
            }
            .in_current_span(),
        );
        self.connecting.insert(id, handle);
    }

    fn on_incoming(&mut self, stream: TcpStream) {
        if let Err(e) = transport::configure_accepted(&stream, self.cfg.transport.ttl) {
            warn!(error = %e, "cannot configure inbound connection; closing it");
            return;
        }
        let id = self.fsm.new_connection_id();
        debug!(%id, "inbound connection");
        if self.attach(id, stream) {
            self.input(Input::TcpConnectionConfirmed(id));
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected(id, stream) => {
                if self.connecting.remove(&id).is_none() {
                    return; // abandoned meanwhile
                }
                if self.attach(id, stream) {
                    self.input(Input::TcpCrAcked(id));
                } else {
                    self.input(Input::TcpConnectionFails(id));
                }
            }
            Event::ConnectFailed(id, error) => {
                if self.connecting.remove(&id).is_some() {
                    debug!(%id, %error, "connect failed");
                    self.input(Input::TcpConnectionFails(id));
                }
            }
            Event::Message(id, message) => {
                if self.connections.contains_key(&id) {
                    self.input(Input::Message(id, message));
                }
            }
            Event::DecodeError(id, notification) => {
                if self.connections.contains_key(&id) {
                    warn!(%id, code = notification.code, subcode = notification.subcode, "malformed message from peer");
                    self.input(Input::DecodeError(id, notification));
                }
            }
            Event::Closed(id, why) => {
                if self.connections.contains_key(&id) {
                    debug!(%id, %why, "connection closed");
                    self.close(id, true);
                    self.input(Input::TcpConnectionFails(id));
                }
            }
            Event::Written(id) => self.on_written(id),
        }
    }

    /// Start the reader and writer of a new connection.
    fn attach(&mut self, id: ConnectionId, stream: TcpStream) -> bool {
        let local = match stream.local_addr() {
            Ok(a) => SocketAddr::new(transport::unmap(a.ip()), a.port()),
            Err(e) => {
                warn!(error = %e, "connection without a local address");
                return false;
            }
        };
        let (r, w) = stream.into_split();
        let (tx, rx) = mpsc::channel(2);
        let extended = self.cfg.fsm.extended_message;
        let reader = tokio::spawn(read_loop(id, r, self.ev_tx.clone(), extended).in_current_span());
        let writer = tokio::spawn(write_loop(id, w, rx, self.ev_tx.clone()).in_current_span());
        self.connections.insert(
            id,
            Connection {
                tx,
                in_flight: false,
                reader,
                writer,
                ctx: CodecContext::default(),
                local,
                pending: BytesMut::new(),
                updates_pending: 0,
            },
        );
        true
    }
}

/// Hand what is encoded to the writer; false if it cannot take it now.
fn flush(
    conn: &mut Connection,
    metrics: &SpeakerMetrics,
    labels: &crate::metrics::PeerLabels,
) -> bool {
    if conn.pending.is_empty() || conn.in_flight {
        return false;
    }
    // A fresh buffer rather than `split()`: the old allocation goes with the batch and is
    // freed once written, instead of staying reserved at its largest size.
    let bytes = std::mem::take(&mut conn.pending).freeze();
    if conn.tx.try_send(bytes).is_err() {
        // The writer is gone (its error is on the way as `Event::Closed`).
        return false;
    }
    conn.in_flight = true;
    if conn.updates_pending > 0 {
        metrics
            .updates_sent
            .get_or_create(labels)
            .inc_by(conn.updates_pending);
        conn.updates_pending = 0;
    }
    true
}

/// One line for routes that cannot be sent, not one per route: a large desired set must not
/// flood the log on every sync.
fn warn_unexportable(unexportable: &[(IpNet, Unexportable)]) {
    if let Some((prefix, why)) = unexportable.first() {
        warn!(
            count = unexportable.len(),
            first = %prefix,
            %why,
            "routes not sent on this session"
        );
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The routes of a peer with "next hop self" replaced by our address on the session.
pub fn resolve(desired: &[DesiredRoute], local: IpAddr, cfg: &SessionConfig) -> RouteSet {
    let mut routes = Resolved::new(desired, local, cfg);
    let out = (&mut routes).map(|r| (r.prefix, r)).collect();
    routes.warn_left_out();
    out
}

/// `resolve` one route at a time, without building the set (a large table is then stored
/// once, in the Adj-RIB-Out), counting what it leaves out.
#[derive(Debug)]
pub struct Resolved<'a> {
    desired: std::slice::Iter<'a, DesiredRoute>,
    local: IpAddr,
    cfg: &'a SessionConfig,
    without_next_hop: usize,
}

impl<'a> Resolved<'a> {
    pub fn new(desired: &'a [DesiredRoute], local: IpAddr, cfg: &'a SessionConfig) -> Self {
        Self {
            desired: desired.iter(),
            local,
            cfg,
            without_next_hop: 0,
        }
    }

    /// One line per sync, not one per prefix.
    pub fn warn_left_out(&self) {
        if self.without_next_hop > 0 {
            warn!(
                count = self.without_next_hop,
                "IPv4 prefixes on an IPv6 session need ipv4_next_hop; not sent"
            );
        }
    }
}

impl Iterator for Resolved<'_> {
    type Item = Route;

    fn next(&mut self) -> Option<Route> {
        loop {
            let d = self.desired.next()?;
            let mut route = d.route.clone();
            if d.is_next_hop_self() {
                route.next_hop = match (route.prefix, self.local) {
                    (IpNet::V4(_), IpAddr::V4(_)) => self.local,
                    (IpNet::V4(_), IpAddr::V6(_)) => match self.cfg.ipv4_next_hop {
                        Some(nh) => IpAddr::V4(nh),
                        None => {
                            self.without_next_hop += 1;
                            continue;
                        }
                    },
                    // On an IPv4 session the packer uses the configured IPv6 next hop.
                    (IpNet::V6(_), _) => self.local,
                };
            }
            return Some(route);
        }
    }
}

/// Frame and decode what the peer sends. The codec context follows the peer's OPEN: 4-octet
/// AS_PATHs when it has the capability (we always send it, RFC 6793), extended messages when
/// both sides advertise them (RFC 8654).
async fn read_loop(
    id: ConnectionId,
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<Event>,
    our_extended: bool,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ctx = CodecContext::default();
    loop {
        loop {
            let len = match codec::frame_len(&buf, &ctx) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Event::DecodeError(id, e.notification)).await;
                    return;
                }
            };
            let frame = buf.split_to(len);
            match codec::decode(&frame, &ctx) {
                Ok(decoded) => {
                    if !decoded.rfc7606.is_empty() {
                        debug!(outcomes = ?decoded.rfc7606, "RFC 7606 error handling applied to a received UPDATE");
                    }
                    if let Message::Open(open) = &decoded.message {
                        ctx.four_octet_as = open
                            .capabilities
                            .iter()
                            .any(|c| matches!(c, Capability::FourOctetAs(_)));
                        ctx.extended_message = our_extended
                            && open
                                .capabilities
                                .iter()
                                .any(|c| matches!(c, Capability::ExtendedMessage));
                    }
                    if tx.send(Event::Message(id, decoded.message)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Event::DecodeError(id, e.notification)).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(Event::Closed(id, "closed by peer".into())).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Event::Closed(id, e.to_string())).await;
                return;
            }
        }
    }
}

/// Write each batch, then report it written so the session encodes the next one.
async fn write_loop(
    id: ConnectionId,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Event>,
) {
    while let Some(batch) = rx.recv().await {
        if let Err(e) = w.write_all(&batch).await {
            let _ = tx
                .send(Event::Closed(id, format!("write failed: {e}")))
                .await;
            return;
        }
        drop(batch);
        // Never dropped (the session would wait for it forever); an error means the session
        // is gone, and the shutdown below still runs.
        let _ = tx.send(Event::Written(id)).await;
    }
    // Our FIN (the read side stays open for the peer's, see `Session::close`).
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SessionConfig {
        SessionConfig {
            name: "leaf".into(),
            fsm: fsm::PeerConfig::new(65001, 65000, "192.0.2.1".parse().unwrap()),
            transport: TransportConfig::new("192.0.2.2:179".parse().unwrap()),
            passive: false,
            ipv6_next_hop: None,
            ipv4_next_hop: Some("192.0.2.1".parse().unwrap()),
        }
    }

    fn desired(prefix: &str, next_hop_self: bool) -> DesiredRoute {
        let prefix: IpNet = prefix.parse().unwrap();
        let nh: IpAddr = if prefix.addr().is_ipv4() {
            "192.0.2.9".parse().unwrap()
        } else {
            "2001:db8::9".parse().unwrap()
        };
        if next_hop_self {
            DesiredRoute::next_hop_self(Route::new(prefix, nh))
        } else {
            DesiredRoute::with_next_hop(Route::new(prefix, nh))
        }
    }

    #[test]
    fn next_hop_self_is_the_session_address() {
        let d = [
            desired("203.0.113.1/32", true),
            desired("203.0.113.2/32", false),
            desired("2001:db8:1::/48", true),
        ];
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let rs = resolve(&d, local, &cfg());
        assert_eq!(rs[&"203.0.113.1/32".parse().unwrap()].next_hop, local);
        assert_eq!(
            rs[&"203.0.113.2/32".parse().unwrap()].next_hop,
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
        // An IPv6 prefix on an IPv4 session: the packer maps it to the IPv6 next hop.
        assert_eq!(rs[&"2001:db8:1::/48".parse().unwrap()].next_hop, local);
    }

    #[test]
    fn ipv4_prefixes_on_an_ipv6_session_use_the_configured_ipv4_next_hop() {
        let d = [
            desired("203.0.113.1/32", true),
            desired("2001:db8:1::/48", true),
        ];
        let local: IpAddr = "2001:db8::1".parse().unwrap();
        let rs = resolve(&d, local, &cfg());
        assert_eq!(
            rs[&"203.0.113.1/32".parse().unwrap()].next_hop,
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(rs[&"2001:db8:1::/48".parse().unwrap()].next_hop, local);
        let mut no_v4 = cfg();
        no_v4.ipv4_next_hop = None;
        assert_eq!(
            resolve(&d, local, &no_v4).len(),
            1,
            "left out rather than sent with a wrong next hop"
        );
    }

    /// Counts WARN events: enough of a `tracing` subscriber to see how many lines a call logs.
    #[derive(Default)]
    struct WarnCounter(std::sync::atomic::AtomicUsize);

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn routes_left_out_are_one_warning_per_sync_not_one_per_prefix() {
        let d: Vec<DesiredRoute> = (0..1000u32)
            .map(|i| desired(&format!("100.64.{}.{}/32", i / 256, i % 256), true))
            .collect();
        let mut no_v4 = cfg();
        no_v4.ipv4_next_hop = None;
        let counter = std::sync::Arc::new(WarnCounter::default());
        let rs = tracing::subscriber::with_default(counter.clone(), || {
            resolve(&d, "2001:db8::1".parse().unwrap(), &no_v4)
        });
        assert!(rs.is_empty());
        // Anyone who can shape the configuration (or a peer's session) must not flood the log.
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
