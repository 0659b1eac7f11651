//! The per-peer task: owns the TCP connections and the timers, turns what happens into FSM
//! `Input`s and executes the FSM's `Output`s (the sans-IO split of `fsm`), and keeps the peer's
//! Adj-RIB-Out equal to the desired set it watches.
//!
//! - Each TCP connection has a reader task (framing with `codec::frame_len`, then `decode`) and
//!   a writer task. The session task never blocks on a socket: it encodes everything one step
//!   produces into one buffer and hands it to the writer, so many UPDATEs go out per syscall
//!   and a stalled peer cannot stop the Hold timer from firing.
//! - The desired set comes from a `tokio::sync::watch`; a change is diffed against the
//!   Adj-RIB-Out (`rib`) and sent as incremental UPDATEs. It never resets the session.
//! - On Established the Adj-RIB-Out starts empty: everything desired is sent, then End-of-RIB
//!   (RFC 4724 §2), which is also the re-sync after a reconnect or our own restart.

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
use super::message::{Capability, Message, Notification, Update};
use super::rib::{AdjRibOut, ExportPolicy, Route, RouteSet};
use super::transport::{self, TransportConfig};
use crate::metrics::{SpeakerMetrics, state_number};

/// A route as configured: the next hop may be "our address on the session" (next hop self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    /// `route.next_hop` is ignored when `next_hop_self` is set.
    pub route: Route,
    pub next_hop_self: bool,
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
    /// Withdraw every route, then Cease/Administrative Shutdown with this RFC 8203 message.
    Withdraw { message: Option<String> },
    /// With graceful restart negotiated: close the TCP connection without a NOTIFICATION, so
    /// the peer keeps our routes as stale (RFC 4724 §4.2). Without it: Administrative Shutdown.
    Graceful { message: Option<String> },
}

/// How long closing connections may take to flush what was queued on them.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

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
    let span = tracing::info_span!("peer", name = %cfg.name, addr = %cfg.transport.peer);
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
}

#[derive(Debug)]
struct Connection {
    tx: mpsc::UnboundedSender<Bytes>,
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
        let mode = loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            tokio::select! {
                mode = &mut stop_rx => break mode.ok(),
                Some(ev) = ev_rx.recv() => self.on_event(ev),
                Some(stream) = in_rx.recv() => self.on_incoming(stream),
                Ok(()) = self.desired.changed() => self.sync_desired(),
                Ok(()) = gate.changed() => {
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
            }
        };
        self.shutdown(mode.unwrap_or(StopMode::Withdraw { message: None }))
            .await;
    }

    async fn shutdown(&mut self, mode: StopMode) {
        let graceful_ok = self
            .established
            .as_ref()
            .is_some_and(|e| e.negotiated.graceful_restart);
        match mode {
            StopMode::Graceful { .. } if graceful_ok => {
                info!(
                    "stopping gracefully: closing without NOTIFICATION so the peer keeps our routes"
                );
                self.input(Input::GracefulStop);
            }
            StopMode::Withdraw { message } | StopMode::Graceful { message } => {
                if let Some(est) = &mut self.established {
                    let changes = est.rib.set_desired(RouteSet::new());
                    let updates = est.rib.updates(&changes);
                    info!(
                        withdrawn = changes.withdraw.len(),
                        "withdrawing every route before shutdown"
                    );
                    let id = est.connection;
                    self.send_updates(id, updates);
                }
                self.input(Input::ManualStop { reason: message });
            }
        }
        for (_, c) in self.connecting.drain() {
            c.abort();
        }
        let ids: Vec<_> = self.connections.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        let closing = std::mem::take(&mut self.closing);
        for w in closing {
            let _ = w.await;
        }
        self.metrics.forget(&self.cfg.name);
    }

    /// Feed one input to the FSM and carry out what it says.
    fn input(&mut self, input: Input) {
        let outputs = self.fsm.handle(input, std::time::Instant::now());
        for o in outputs {
            self.execute(o);
        }
        self.flush_all();
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
                self.close(connection);
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
                if let Some(est) = &self.established {
                    // RFC 2918 §4: re-advertise the Adj-RIB-Out of that family.
                    let updates = est.rib.updates(&est.rib.full_table(Some(family)));
                    info!(?family, updates = updates.len(), "answering ROUTE-REFRESH");
                    let id = est.connection;
                    self.send_updates(id, updates);
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
        let mut rib = AdjRibOut::new(ExportPolicy::from_negotiated(
            &negotiated,
            self.cfg.ipv6_next_hop,
        ));
        let desired = resolve(&self.desired.borrow_and_update(), local, &self.cfg);
        let (updates, changes) = rib.initial_sync(desired);
        for (prefix, why) in &changes.unexportable {
            warn!(%prefix, %why, "route not sent");
        }
        info!(
            routes = changes.announce.len(),
            updates = updates.len(),
            "initial sync, then End-of-RIB"
        );
        self.metrics
            .prefixes_advertised
            .get_or_create(&self.labels)
            .set(rib.len() as i64);
        self.established = Some(EstablishedSession {
            connection: id,
            rib,
            negotiated,
        });
        self.send_updates(id, updates);
    }

    /// The desired set changed: send the difference (RFC 4271 §9.2: only what changed).
    fn sync_desired(&mut self) {
        let Some(est) = &mut self.established else {
            // Sent in full on Established.
            self.desired.borrow_and_update();
            return;
        };
        let Some(local) = self.connections.get(&est.connection).map(|c| c.local.ip()) else {
            return;
        };
        let desired = resolve(&self.desired.borrow_and_update(), local, &self.cfg);
        let changes = est.rib.set_desired(desired);
        if changes.is_empty() {
            return;
        }
        let updates = est.rib.updates(&changes);
        info!(
            announce = changes.announce.len(),
            withdraw = changes.withdraw.len(),
            "desired routes changed"
        );
        self.metrics
            .prefixes_advertised
            .get_or_create(&self.labels)
            .set(est.rib.len() as i64);
        let id = est.connection;
        self.send_updates(id, updates);
        self.flush_all();
    }

    fn send_updates(&mut self, id: ConnectionId, updates: Vec<Update>) {
        for u in updates {
            self.send(id, &Message::Update(u));
        }
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

    /// Hand everything encoded so far to the writers: one buffer, so one write per batch.
    fn flush_all(&mut self) {
        for conn in self.connections.values_mut() {
            flush(conn, &self.metrics, &self.labels);
        }
    }

    fn close(&mut self, id: ConnectionId) {
        let Some(mut conn) = self.connections.remove(&id) else {
            return;
        };
        flush(&mut conn, &self.metrics, &self.labels);
        conn.reader.abort();
        // Dropping the sender lets the writer send what is queued, then shut down the socket.
        drop(conn.tx);
        let writer = conn.writer;
        self.closing.retain(|h| !h.is_finished());
        self.closing.push(tokio::spawn(async move {
            let abort = writer.abort_handle();
            if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer)
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
                    Err(e) => Event::ConnectFailed(id, e.to_string()),
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
                    self.close(id);
                    self.input(Input::TcpConnectionFails(id));
                }
            }
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
        let (tx, rx) = mpsc::unbounded_channel();
        let extended = self.cfg.fsm.extended_message;
        let reader = tokio::spawn(read_loop(id, r, self.ev_tx.clone(), extended).in_current_span());
        let writer = tokio::spawn(write_loop(id, w, rx, self.ev_tx.clone()).in_current_span());
        self.connections.insert(
            id,
            Connection {
                tx,
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

fn flush(conn: &mut Connection, metrics: &SpeakerMetrics, labels: &crate::metrics::PeerLabels) {
    if conn.pending.is_empty() {
        return;
    }
    let bytes = conn.pending.split().freeze();
    if conn.updates_pending > 0 {
        metrics
            .updates_sent
            .get_or_create(labels)
            .inc_by(conn.updates_pending);
        conn.updates_pending = 0;
    }
    let _ = conn.tx.send(bytes);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The routes of a peer with "next hop self" replaced by our address on the session.
pub fn resolve(desired: &[DesiredRoute], local: IpAddr, cfg: &SessionConfig) -> RouteSet {
    let mut out = RouteSet::new();
    for d in desired {
        let mut route = d.route.clone();
        if d.next_hop_self {
            route.next_hop = match (route.prefix, local) {
                (IpNet::V4(_), IpAddr::V4(_)) => local,
                (IpNet::V4(_), IpAddr::V6(_)) => match cfg.ipv4_next_hop {
                    Some(nh) => IpAddr::V4(nh),
                    None => {
                        warn!(prefix = %route.prefix, "IPv4 prefix on an IPv6 session needs ipv4_next_hop");
                        continue;
                    }
                },
                // On an IPv4 session the packer uses the configured IPv6 next hop.
                (IpNet::V6(_), _) => local,
            };
        }
        out.insert(route.prefix, route);
    }
    out
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

async fn write_loop(
    id: ConnectionId,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    tx: mpsc::Sender<Event>,
) {
    while let Some(first) = rx.recv().await {
        let result = match rx.try_recv() {
            // Several batches queued: write them with one vectored call where possible.
            Ok(second) => {
                let mut all = BytesMut::with_capacity(first.len() + second.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&second);
                while let Ok(more) = rx.try_recv() {
                    all.extend_from_slice(&more);
                }
                w.write_all(&all).await
            }
            Err(_) => w.write_all(&first).await,
        };
        if let Err(e) = result {
            let _ = tx
                .send(Event::Closed(id, format!("write failed: {e}")))
                .await;
            return;
        }
    }
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
        DesiredRoute {
            route: Route::new(prefix, nh),
            next_hop_self,
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
}
