//! The BGP session state machine (RFC 4271 §8), sans-IO.
//!
//! `Fsm::handle(Input, now)` returns what to do (`Output`): open or close a TCP connection, send a
//! message on one, start or stop a timer, report the session up or down. No sockets, no clock and
//! no randomness live here: the per-peer task owns the sockets and the timers, turns what happens
//! into `Input`s, and executes the `Output`s in order. Connect-retry jitter comes from a seed in
//! `PeerConfig`, so a test replaying the same inputs gets the same outputs.
//!
//! Connections: RFC 4271 §6.8 lets two TCP connections to one peer exist at once (one we opened,
//! one the peer opened) until a collision is resolved. Each connection has its own sub-state and
//! its own Hold and Keepalive timers; `Fsm::state()` is the most advanced of them, which is the
//! state RFC 4271 would report for the session. The FSM hands out every `ConnectionId`: for an
//! outbound connection in `Output::Connect`, for an inbound one through
//! `Fsm::new_connection_id()` before the task reports `Input::TcpConnectionConfirmed`.
//!
//! Deliberate choices where RFC 4271 leaves room:
//! - A passive peer (`ManualStart { passive: true }`) never connects out; it waits in Active.
//! - After an error the FSM goes to Idle and starts again by itself (RFC 4271 §8.1.1
//!   "AutomaticStart" with "DampPeerOscillations"): the ConnectRetry timer, backed off
//!   exponentially with jitter, ends the Idle wait. The back-off resets once a session has stayed
//!   Established for `PeerConfig::backoff_reset_after`. During that wait a connection from the
//!   peer is accepted (RFC 4271's Idle would refuse it): the back-off damps our own attempts.
//!   Only an Idle after ManualStop refuses connections.
//! - An inbound connection while Established is accepted and sent an OPEN. When its OPEN arrives
//!   and graceful restart was negotiated both ways, the peer has restarted (RFC 4724 §4.2): the old
//!   session is closed and the new one continues. Otherwise the new connection is closed with
//!   Cease/Connection Collision Resolution (RFC 4271 §6.8).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::codec::{CodecContext, notif};
use super::message::{
    AS_TRANS, AddressFamily, Capability, GracefulRestartCap, GracefulRestartFamily, Message,
    Notification, Open, Update,
};

/// RFC 4271 §4.2: "This 1-octet unsigned integer indicates the protocol version number of the
/// message. The current BGP version number is 4."
pub const BGP_VERSION: u8 = 4;

/// RFC 4271 §8.2.2 (Connect state, TCP connection succeeds): "sets the HoldTimer to a large
/// value ... A HoldTimer value of 4 minutes is suggested."
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// RFC 4271 §10: "HoldTime: 90 seconds" (suggested default).
pub const DEFAULT_HOLD_TIME: u16 = 90;

/// RFC 9687 §4: "the suggested default value for the SendHoldTime is 8 minutes".
pub const DEFAULT_SEND_HOLD_TIME: Duration = Duration::from_secs(8 * 60);

/// The session states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// "In this state, BGP FSM refuses all incoming BGP connections for this peer."
    Idle,
    /// "In this state, BGP FSM is waiting for the TCP connection to be completed."
    Connect,
    /// "In this state, BGP FSM is trying to acquire a peer by listening for, and accepting, a TCP
    /// connection."
    Active,
    /// "In this state, BGP FSM waits for an OPEN message from its peer."
    OpenSent,
    /// "In this state, BGP waits for a KEEPALIVE or NOTIFICATION message."
    OpenConfirm,
    /// "In the Established state, the BGP FSM can exchange UPDATE, NOTIFICATION, and KEEPALIVE
    /// messages with its peer."
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One TCP connection to the peer, named by the FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Who opened a TCP connection (RFC 4271 §6.8 resolves collisions by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

/// The timers of RFC 4271 §8 (ConnectRetryTimer, HoldTimer, KeepaliveTimer). Hold and Keepalive
/// run per connection, since two connections can be in OpenSent/OpenConfirm at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    ConnectRetry,
    Hold(ConnectionId),
    Keepalive(ConnectionId),
    /// RFC 9687 SendHoldTimer: the task runs it while a connection has data the socket does not
    /// take (the peer stopped reading), and stops it when the socket takes it.
    SendHold(ConnectionId),
}

/// Graceful restart (RFC 4724) as we advertise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// "Restart Time": seconds the peer should keep our routes after the session drops (≤ 4095).
    pub restart_time: u16,
    /// We have just restarted: set the Restart State (R) bit in the OPEN (RFC 4724 §3). Cleared
    /// by the FSM once a session has been Established.
    pub restarting: bool,
    /// The Forwarding State (F) bit for each family. Our "forwarding" is the node itself, which
    /// keeps working while the speaker restarts, so this is normally true; if it is false, RFC
    /// 4724 §4.2 makes the peer drop our stale routes as soon as we reconnect.
    pub forwarding_preserved: bool,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        Self {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: true,
        }
    }
}

/// What the FSM needs to know about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub local_as: u32,
    pub peer_as: u32,
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// The Hold Time we propose in our OPEN: 0 (no keepalives) or at least 3 (RFC 4271 §4.2).
    pub hold_time: u16,
    /// Base ConnectRetryTime. RFC 4271 §10 suggests 120 s; a shorter base with exponential
    /// back-off reconnects quickly after a peer restart and still damps a flapping peer.
    pub connect_retry_time: Duration,
    /// Ceiling of the back-off.
    pub connect_retry_max: Duration,
    /// A session that stayed Established this long resets the back-off.
    pub backoff_reset_after: Duration,
    /// Address families we advertise (Multiprotocol capability, RFC 4760).
    pub families: Vec<AddressFamily>,
    /// Advertise the Extended Message capability (RFC 8654).
    pub extended_message: bool,
    /// Advertise graceful restart (RFC 4724).
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Seed for connect-retry jitter (RFC 4271 §10: jitter each ConnectRetry interval).
    pub jitter_seed: u64,
    /// RFC 9687 SendHoldTime; `None` for the default (`PeerConfig::send_hold_time_for`).
    pub send_hold_time: Option<Duration>,
}

/// A `PeerConfig` that RFC 4271 or its extensions do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("hold time {0} s: RFC 4271 §4.2 allows 0 or at least 3 seconds")]
    HoldTime(u16),
    #[error("BGP Identifier 0.0.0.0: RFC 6286 §2.1 requires a non-zero identifier")]
    ZeroRouterId,
    #[error("AS 0 is reserved (RFC 7607)")]
    ZeroAs,
    #[error(
        "graceful restart time {0} s: must be 1..=4095 (12-bit Restart Time, RFC 4724 §3; 0 keeps nothing)"
    )]
    RestartTime(u16),
    #[error("no address family configured")]
    NoFamily,
    #[error("connect retry time must be non-zero and not above its maximum")]
    ConnectRetry,
    #[error("send hold time must be non-zero (RFC 9687)")]
    SendHoldTime,
}

impl PeerConfig {
    /// Defaults: hold time 90 s, IPv4 and IPv6 unicast, extended messages, no graceful restart,
    /// connect retry 5 s backing off to 120 s.
    pub fn new(local_as: u32, peer_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            peer_as,
            router_id,
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry_time: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            backoff_reset_after: Duration::from_secs(60),
            families: vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST],
            extended_message: true,
            graceful_restart: None,
            jitter_seed: u64::from(u32::from(router_id)) ^ u64::from(peer_as) << 32,
            send_hold_time: None,
        }
    }

    /// How long a connection may have data the peer does not read before it is closed: the
    /// configured SendHoldTime, else 8 minutes but never less than twice the Hold Time, so a
    /// slow but live peer is not cut off (RFC 9687 §4).
    pub fn send_hold_time_for(&self, hold_time: Duration) -> Duration {
        self.send_hold_time
            .unwrap_or_else(|| DEFAULT_SEND_HOLD_TIME.max(hold_time.saturating_mul(2)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::ZeroRouterId);
        }
        if self.local_as == 0 || self.peer_as == 0 {
            return Err(ConfigError::ZeroAs);
        }
        // A Restart Time of 0 tells the peer to drop our routes at once (RFC 4724 §4.2): graceful
        // restart in name only.
        if let Some(gr) = &self.graceful_restart
            && (gr.restart_time == 0 || gr.restart_time > 0x0fff)
        {
            return Err(ConfigError::RestartTime(gr.restart_time));
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamily);
        }
        if self.connect_retry_time.is_zero() || self.connect_retry_time > self.connect_retry_max {
            return Err(ConfigError::ConnectRetry);
        }
        if self.send_hold_time.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::SendHoldTime);
        }
        Ok(())
    }

    /// Internal BGP: both ends in one AS (changes AS_PATH and LOCAL_PREF, RFC 4271 §5.1.2, §5.1.5).
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }

    /// The OPEN we send: version 4, our AS (AS_TRANS if it needs 4 octets, RFC 6793 §4.1), our
    /// hold time and identifier, and the capabilities Multiprotocol for each family (RFC 4760),
    /// Route Refresh (RFC 2918), 4-octet AS (RFC 6793), Extended Message (RFC 8654) and Graceful
    /// Restart (RFC 4724) as configured.
    pub fn open_message(&self) -> Open {
        let mut capabilities: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(self.local_as));
        if self.extended_message {
            capabilities.push(Capability::ExtendedMessage);
        }
        if let Some(gr) = &self.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestartCap {
                restart_state: gr.restarting,
                notification: false,
                restart_time: gr.restart_time.min(0x0fff),
                families: self
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        family: *f,
                        forwarding_preserved: gr.forwarding_preserved,
                    })
                    .collect(),
            }));
        }
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(self.local_as).unwrap_or(AS_TRANS),
            hold_time: self.hold_time,
            bgp_identifier: self.router_id,
            capabilities,
        }
    }
}

/// What both ends agreed on in their OPENs (RFC 4271 §4.2, RFC 5492 and the capability RFCs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The connection the session runs on.
    pub connection: ConnectionId,
    pub local_as: u32,
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    /// min(ours, theirs); zero means no Hold timer and no keepalives (RFC 4271 §4.2).
    pub hold_time: Duration,
    /// One third of the hold time (RFC 4271 §4.4), zero when the hold time is zero.
    pub keepalive: Duration,
    /// Both sent the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// Both sent the Extended Message capability (RFC 8654).
    pub extended_message: bool,
    /// The peer accepts ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// Families both advertised; a peer without Multiprotocol capabilities gets IPv4 unicast
    /// (RFC 4760 §8).
    pub families: Vec<AddressFamily>,
    /// The peer's graceful restart capability, if it sent one (RFC 4724 §3).
    pub peer_graceful_restart: Option<GracefulRestartCap>,
    /// We advertised graceful restart and so did the peer.
    pub graceful_restart: bool,
    /// The peer's OPEN as received (for logs and unknown capabilities).
    pub peer_open: Open,
}

impl Negotiated {
    /// How the codec reads and writes on this session.
    pub fn codec_context(&self) -> CodecContext {
        CodecContext {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
        }
    }

    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }

    pub fn has_family(&self, family: AddressFamily) -> bool {
        self.families.contains(&family)
    }

    /// The peer sent the graceful restart capability, so (RFC 4724 §4.2) it keeps our routes as
    /// stale when the session drops without a NOTIFICATION.
    pub fn peer_supports_graceful_restart(&self) -> bool {
        self.peer_graceful_restart.is_some()
    }

    /// The peer listed `family` in its graceful restart capability: after a restart of the peer
    /// it keeps forwarding for that family (with the F bit, RFC 4724 §3) and sends End-of-RIB.
    pub fn peer_graceful_restart_family(
        &self,
        family: AddressFamily,
    ) -> Option<&GracefulRestartFamily> {
        self.peer_graceful_restart
            .as_ref()?
            .families
            .iter()
            .find(|f| f.family == family)
    }
}

/// Why a connection or session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Event 2, ManualStop: we sent Cease/Administrative Shutdown.
    ManualStop,
    /// The task closed the session without a NOTIFICATION so a graceful-restart peer keeps our
    /// routes (RFC 4724 §4).
    GracefulStop,
    /// Event 8, AutomaticStop.
    AutomaticStop,
    /// The HoldTimer expired (RFC 4271 §6.5); we sent NOTIFICATION 4/0.
    HoldTimerExpired,
    /// The peer did not read what we sent for the SendHoldTime (RFC 9687); NOTIFICATION 8/0
    /// was attempted.
    SendHoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We found an error (bad OPEN, malformed message, FSM error) and sent this NOTIFICATION.
    NotificationSent(Notification),
    /// The TCP connection closed or failed.
    ConnectionClosed,
    /// An outbound connection attempt did not complete before the ConnectRetry timer expired.
    ConnectRetryExpired,
    /// RFC 4271 §6.8: this connection lost a collision.
    CollisionResolution,
    /// An inbound connection while Idle (RFC 4271 §8.2.2: Idle refuses connections).
    ConnectionRejected,
    /// The peer opened a new session while Established and has graceful restart: it restarted.
    PeerRestarted,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManualStop => f.write_str("administrative shutdown"),
            Self::GracefulStop => f.write_str("graceful stop (routes retained by the peer)"),
            Self::AutomaticStop => f.write_str("automatic stop"),
            Self::HoldTimerExpired => f.write_str("hold timer expired"),
            Self::SendHoldTimerExpired => f.write_str("send hold timer expired"),
            Self::NotificationReceived(n) => {
                write!(f, "NOTIFICATION {}/{} received", n.code, n.subcode)?;
                if let Some(msg) = shutdown_communication(n) {
                    write!(f, ": {msg:?}")?;
                }
                Ok(())
            }
            Self::NotificationSent(n) => write!(f, "NOTIFICATION {}/{} sent", n.code, n.subcode),
            Self::ConnectionClosed => f.write_str("TCP connection closed"),
            Self::ConnectRetryExpired => f.write_str("connect attempt timed out"),
            Self::CollisionResolution => f.write_str("connection collision resolved"),
            Self::ConnectionRejected => f.write_str("connection rejected while idle"),
            Self::PeerRestarted => f.write_str("peer restarted (graceful restart)"),
        }
    }
}

/// The Shutdown Communication of a Cease/Administrative Shutdown or Reset NOTIFICATION
/// (RFC 8203, RFC 9003), if there is a well-formed one.
pub fn shutdown_communication(n: &Notification) -> Option<String> {
    n.shutdown_communication().ok().flatten().map(str::to_owned)
}

/// Cease/Administrative Shutdown with an optional Shutdown Communication (RFC 8203 §2,
/// length-prefixed UTF-8, cut at a character boundary to RFC 9003's 255 octets).
pub fn administrative_shutdown(reason: Option<&str>) -> Notification {
    match reason.filter(|t| !t.is_empty()) {
        Some(text) => Notification::administrative_shutdown(text),
        None => Notification::cease(notif::ADMINISTRATIVE_SHUTDOWN),
    }
}

/// An event for the FSM (RFC 4271 §8.1 names in the comments).
// An UPDATE is moved in once per message; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Event 1 ManualStart / Event 5 ManualStart_with_PassiveTcpEstablishment. A passive peer
    /// only waits for the peer to connect.
    ManualStart { passive: bool },
    /// Event 2 ManualStop: Cease/Administrative Shutdown with an RFC 8203 message, then Idle.
    ManualStop { reason: Option<String> },
    /// Close every connection without a NOTIFICATION, so that a peer with graceful restart keeps
    /// our routes (RFC 4724 §4), then Idle.
    GracefulStop,
    /// Event 8 AutomaticStop: Cease, then Idle, starting again after the back-off.
    AutomaticStop,
    /// Event 16 Tcp_CR_Acked: our outbound connection (from `Output::Connect`) is up.
    TcpCrAcked(ConnectionId),
    /// Event 17 TcpConnectionConfirmed: the peer connected to us. Take the id from
    /// `Fsm::new_connection_id()`.
    TcpConnectionConfirmed(ConnectionId),
    /// Event 18 TcpConnectionFails: the connection closed, failed, or could not be opened.
    TcpConnectionFails(ConnectionId),
    /// Events 19–27: a message arrived on a connection.
    Message(ConnectionId, Message),
    /// Events 21/22/28 (BGPHeaderErr, BGPOpenMsgErr, UpdateMsgErr): a received message could
    /// not be decoded; the codec says which NOTIFICATION to send.
    DecodeError(ConnectionId, Notification),
    /// Events 9, 10, 11: a timer the FSM started has expired.
    TimerExpired(Timer),
}

/// What the task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer and report `TcpCrAcked(id)` or `TcpConnectionFails(id)`.
    Connect(ConnectionId),
    /// Write a message on a connection.
    Send {
        connection: ConnectionId,
        message: Message,
    },
    /// Close a connection (after flushing what was sent on it), or abandon a pending connect.
    CloseConnection {
        connection: ConnectionId,
        reason: DownReason,
    },
    /// (Re)start a timer; it fires once, as `Input::TimerExpired(timer)`, unless stopped or
    /// restarted first.
    StartTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    /// The session reached Established.
    SessionEstablished(Box<Negotiated>),
    /// An Established session ended.
    SessionDown(DownReason),
    /// The peer asked for our routes of this family again (RFC 2918 §4).
    RouteRefreshRequested(AddressFamily),
    UpdateReceived(Update),
    /// `Fsm::state()` changed.
    StateChanged {
        from: State,
        to: State,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    Connecting,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    direction: Direction,
    state: ConnState,
    /// Set from the OPEN received (OpenConfirm and Established).
    negotiated: Option<Negotiated>,
}

impl Connection {
    fn hold_time(&self) -> Duration {
        self.negotiated
            .as_ref()
            .map_or(OPEN_HOLD_TIME, |n| n.hold_time)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Idle until a ManualStart.
    Stopped,
    /// Idle after an error; the ConnectRetry timer starts us again.
    IdleWaiting,
    /// Started: Connect, Active, OpenSent, OpenConfirm or Established by the connections.
    Running,
}

/// The session state machine of one peer.
#[derive(Debug)]
pub struct Fsm {
    config: PeerConfig,
    phase: Phase,
    passive: bool,
    connections: Vec<Connection>,
    next_connection: u64,
    /// Failures since the back-off was last reset: the exponent of the ConnectRetry back-off.
    retries: u32,
    established_at: Option<Instant>,
    rng: u64,
}

impl Fsm {
    pub fn new(config: PeerConfig) -> Self {
        let rng = config.jitter_seed;
        Self {
            config,
            phase: Phase::Stopped,
            passive: false,
            connections: Vec::new(),
            next_connection: 1,
            retries: 0,
            established_at: None,
            rng,
        }
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The session state as RFC 4271 names it.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Stopped | Phase::IdleWaiting => State::Idle,
            Phase::Running => match self.connections.iter().map(|c| c.state).max() {
                Some(ConnState::Established) => State::Established,
                Some(ConnState::OpenConfirm) => State::OpenConfirm,
                Some(ConnState::OpenSent) => State::OpenSent,
                Some(ConnState::Connecting) => State::Connect,
                None => State::Active,
            },
        }
    }

    /// An id for an inbound connection, to pass in `Input::TcpConnectionConfirmed`.
    pub fn new_connection_id(&mut self) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        id
    }

    /// The Established session's connection and what was negotiated on it.
    pub fn established(&self) -> Option<&Negotiated> {
        self.connections
            .iter()
            .find(|c| c.state == ConnState::Established)
            .and_then(|c| c.negotiated.as_ref())
    }

    /// Feed one input; the outputs are returned in the order they must be executed.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(input, now, &mut out);
        out
    }

    /// Like `handle`, appending to `out` (so a task can reuse one buffer).
    pub fn handle_into(&mut self, input: Input, now: Instant, out: &mut Vec<Output>) {
        let from = self.state();
        match input {
            Input::ManualStart { passive } => self.manual_start(passive, out),
            Input::ManualStop { reason } => {
                let n = administrative_shutdown(reason.as_deref());
                self.stop(Some(n), DownReason::ManualStop, Phase::Stopped, out);
            }
            Input::GracefulStop => {
                self.stop(None, DownReason::GracefulStop, Phase::Stopped, out);
            }
            // RFC 4271 §8.2.2 Idle: "ManualStop event and AutomaticStop event are ignored".
            Input::AutomaticStop if self.phase == Phase::Stopped => {}
            Input::AutomaticStop => {
                let n = Notification::cease(notif::UNSPECIFIC);
                self.stop(Some(n), DownReason::AutomaticStop, Phase::IdleWaiting, out);
                self.start_retry_timer(out);
            }
            Input::TcpCrAcked(id) => self.tcp_cr_acked(id, out),
            Input::TcpConnectionConfirmed(id) => self.tcp_connection_confirmed(id, out),
            Input::TcpConnectionFails(id) => {
                if self.connection(id).is_some() {
                    self.drop_connection(id, None, DownReason::ConnectionClosed, now, out);
                }
            }
            Input::Message(id, message) => self.message(id, message, now, out),
            Input::DecodeError(id, n) => {
                if self.connection(id).is_some() {
                    let reason = DownReason::NotificationSent(n.clone());
                    self.drop_connection(id, Some(n), reason, now, out);
                }
            }
            Input::TimerExpired(timer) => self.timer_expired(timer, now, out),
        }
        let to = self.state();
        if from != to {
            out.push(Output::StateChanged { from, to });
        }
    }

    fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    fn connection_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| c.id == id)
    }

    fn manual_start(&mut self, passive: bool, out: &mut Vec<Output>) {
        // RFC 4271 §8.2.2: ManualStart is ignored in every state but Idle.
        if self.phase == Phase::Running {
            return;
        }
        if self.phase == Phase::IdleWaiting {
            out.push(Output::StopTimer(Timer::ConnectRetry));
        }
        self.passive = passive;
        self.retries = 0;
        self.run(out);
    }

    /// Leave Idle: connect out (Connect) or wait for the peer (Active).
    fn run(&mut self, out: &mut Vec<Output>) {
        self.phase = Phase::Running;
        if !self.passive {
            self.connect(out);
        }
    }

    /// RFC 4271 §8.2.2 Idle, ManualStart: "initiates a TCP connection to the other BGP peer,
    /// ... starts the ConnectRetryTimer".
    fn connect(&mut self, out: &mut Vec<Output>) {
        let id = self.new_connection_id();
        self.connections.push(Connection {
            id,
            direction: Direction::Outbound,
            state: ConnState::Connecting,
            negotiated: None,
        });
        out.push(Output::Connect(id));
        let after = self.retry_delay();
        out.push(Output::StartTimer {
            timer: Timer::ConnectRetry,
            after,
        });
    }

    /// The next ConnectRetry interval: base · 2^retries, capped, times a jitter factor in
    /// [0.75, 1] (RFC 4271 §10: "jitter ... by multiplying the base value ... by a random factor,
    /// which is uniformly distributed in the range from 0.75 to 1.0").
    fn retry_delay(&mut self) -> Duration {
        let base = self.config.connect_retry_time;
        let factor = 1u32 << self.retries.min(16);
        let backed_off = base
            .saturating_mul(factor)
            .min(self.config.connect_retry_max);
        backed_off.mul_f64(0.75 + 0.25 * self.next_unit())
    }

    /// splitmix64: a uniform value in [0, 1] from the seeded state.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Start the ConnectRetry timer after a failure, backing off.
    fn start_retry_timer(&mut self, out: &mut Vec<Output>) {
        let after = self.retry_delay();
        self.retries = self.retries.saturating_add(1);
        out.push(Output::StartTimer {
            timer: Timer::ConnectRetry,
            after,
        });
    }

    /// ManualStop, GracefulStop, AutomaticStop: close everything, optionally with a NOTIFICATION.
    fn stop(
        &mut self,
        notification: Option<Notification>,
        reason: DownReason,
        phase: Phase,
        out: &mut Vec<Output>,
    ) {
        if self.phase == Phase::Stopped && phase == Phase::Stopped {
            return;
        }
        out.push(Output::StopTimer(Timer::ConnectRetry));
        let mut was_established = false;
        for c in std::mem::take(&mut self.connections) {
            if c.state >= ConnState::OpenSent {
                if let Some(n) = &notification {
                    out.push(Output::Send {
                        connection: c.id,
                        message: Message::Notification(n.clone()),
                    });
                }
                out.push(Output::StopTimer(Timer::Hold(c.id)));
                out.push(Output::StopTimer(Timer::Keepalive(c.id)));
            }
            was_established |= c.state == ConnState::Established;
            out.push(Output::CloseConnection {
                connection: c.id,
                reason: reason.clone(),
            });
        }
        if was_established {
            out.push(Output::SessionDown(reason));
        }
        self.phase = phase;
        if phase == Phase::Stopped {
            self.retries = 0;
        }
        self.established_at = None;
    }

    fn tcp_cr_acked(&mut self, id: ConnectionId, out: &mut Vec<Output>) {
        let open = self.config.open_message();
        match self.connection_mut(id) {
            Some(c) if c.state == ConnState::Connecting => {
                // RFC 4271 §8.2.2 Connect, Event 16/17: stop the ConnectRetryTimer, send OPEN,
                // set the HoldTimer to a large value, go to OpenSent.
                c.state = ConnState::OpenSent;
                out.push(Output::StopTimer(Timer::ConnectRetry));
                out.push(Output::Send {
                    connection: id,
                    message: Message::Open(open),
                });
                out.push(Output::StartTimer {
                    timer: Timer::Hold(id),
                    after: OPEN_HOLD_TIME,
                });
            }
            // A connect we already abandoned.
            _ => out.push(Output::CloseConnection {
                connection: id,
                reason: DownReason::ConnectRetryExpired,
            }),
        }
    }

    fn tcp_connection_confirmed(&mut self, id: ConnectionId, out: &mut Vec<Output>) {
        if self.phase == Phase::IdleWaiting && self.connection(id).is_none() {
            // The damping wait holds back our own attempts only: a peer that restarted and
            // connects at once is taken (a passive peer would otherwise leave it to the peer's
            // connect-retry timer, 120 s in BIRD, to come back).
            out.push(Output::StopTimer(Timer::ConnectRetry));
            self.phase = Phase::Running;
        }
        if self.phase != Phase::Running || self.connection(id).is_some() {
            out.push(Output::CloseConnection {
                connection: id,
                reason: DownReason::ConnectionRejected,
            });
            return;
        }
        // A peer that connects again has given up its earlier inbound connection: replace it.
        let stale: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|c| c.direction == Direction::Inbound && c.state != ConnState::Established)
            .map(|c| c.id)
            .collect();
        for old in stale {
            self.remove_connection(old, out);
            out.push(Output::CloseConnection {
                connection: old,
                reason: DownReason::ConnectionClosed,
            });
        }
        self.connections.push(Connection {
            id,
            direction: Direction::Inbound,
            state: ConnState::OpenSent,
            negotiated: None,
        });
        out.push(Output::StopTimer(Timer::ConnectRetry));
        out.push(Output::Send {
            connection: id,
            message: Message::Open(self.config.open_message()),
        });
        out.push(Output::StartTimer {
            timer: Timer::Hold(id),
            after: OPEN_HOLD_TIME,
        });
    }

    /// Forget a connection and stop its timers (no close output).
    fn remove_connection(&mut self, id: ConnectionId, out: &mut Vec<Output>) -> Option<Connection> {
        let pos = self.connections.iter().position(|c| c.id == id)?;
        let c = self.connections.remove(pos);
        if c.state >= ConnState::OpenSent {
            out.push(Output::StopTimer(Timer::Hold(id)));
        }
        if c.state >= ConnState::OpenConfirm {
            out.push(Output::StopTimer(Timer::Keepalive(id)));
        }
        Some(c)
    }

    /// Close one connection, optionally sending a NOTIFICATION first; if it was the last one,
    /// fall back as RFC 4271 §8.2.2 says (Active after Connect/OpenSent, else Idle) and arrange
    /// the next attempt.
    fn drop_connection(
        &mut self,
        id: ConnectionId,
        notification: Option<Notification>,
        reason: DownReason,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.connection(id) else { return };
        if let Some(n) = notification
            && c.state >= ConnState::OpenSent
        {
            out.push(Output::Send {
                connection: id,
                message: Message::Notification(n),
            });
        }
        let Some(c) = self.remove_connection(id, out) else {
            return;
        };
        out.push(Output::CloseConnection {
            connection: id,
            reason: reason.clone(),
        });
        if c.state == ConnState::Established {
            out.push(Output::SessionDown(reason));
            if let Some(at) = self.established_at.take()
                && now.saturating_duration_since(at) >= self.config.backoff_reset_after
            {
                self.retries = 0;
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        if !self.connections.is_empty() {
            // Only a pending outbound connect is left: its ConnectRetry timer was stopped when
            // the connection just dropped got going, so bound the attempt again.
            let only_connecting = self
                .connections
                .iter()
                .all(|c| c.state == ConnState::Connecting);
            if only_connecting && c.state >= ConnState::OpenSent {
                let after = self.retry_delay();
                out.push(Output::StartTimer {
                    timer: Timer::ConnectRetry,
                    after,
                });
            }
            return;
        }
        if c.state <= ConnState::OpenSent {
            // → Active: wait for the peer, and retry ourselves when the timer expires.
            if !self.passive {
                self.start_retry_timer(out);
            }
        } else {
            // → Idle (OpenConfirm, Established): damp before starting again.
            self.phase = Phase::IdleWaiting;
            self.start_retry_timer(out);
        }
    }

    fn timer_expired(&mut self, timer: Timer, now: Instant, out: &mut Vec<Output>) {
        match timer {
            Timer::ConnectRetry => match self.phase {
                Phase::Stopped => {}
                Phase::IdleWaiting => self.run(out),
                Phase::Running => {
                    // Connect, Event 9: drop the pending attempt and try again. Active, Event 9:
                    // initiate a connection (not for a passive peer).
                    let pending: Vec<ConnectionId> = self
                        .connections
                        .iter()
                        .filter(|c| c.state == ConnState::Connecting)
                        .map(|c| c.id)
                        .collect();
                    let others = self.connections.len() - pending.len();
                    for id in &pending {
                        self.remove_connection(*id, out);
                        out.push(Output::CloseConnection {
                            connection: *id,
                            reason: DownReason::ConnectRetryExpired,
                        });
                    }
                    if others == 0 && !self.passive {
                        if !pending.is_empty() {
                            self.retries = self.retries.saturating_add(1);
                        }
                        self.connect(out);
                    }
                }
            },
            Timer::Hold(id) => {
                if self
                    .connection(id)
                    .is_some_and(|c| c.state >= ConnState::OpenSent)
                {
                    // RFC 4271 §6.5: "If a system does not receive successive KEEPALIVE, UPDATE,
                    // and/or NOTIFICATION messages within the period specified in the Hold Time
                    // field of the OPEN message, then the NOTIFICATION message with the Hold
                    // Timer Expired Error Code is sent and the BGP connection is closed."
                    let n = Notification::hold_timer_expired();
                    self.drop_connection(id, Some(n), DownReason::HoldTimerExpired, now, out);
                }
            }
            Timer::SendHold(id) => {
                if self
                    .connection(id)
                    .is_some_and(|c| c.state >= ConnState::OpenSent)
                {
                    // RFC 9687 §3 SendHoldTimer_Expires: send NOTIFICATION Send Hold Timer
                    // Expired (it will rarely get through), close the connection, and go on as
                    // after a Hold Timer expiry.
                    let n = Notification {
                        code: notif::SEND_HOLD_TIMER_EXPIRED,
                        subcode: 0,
                        data: Vec::new(),
                    };
                    self.drop_connection(id, Some(n), DownReason::SendHoldTimerExpired, now, out);
                }
            }
            Timer::Keepalive(id) => {
                let Some(c) = self.connection(id) else { return };
                if c.state < ConnState::OpenConfirm {
                    return;
                }
                let keepalive = c
                    .negotiated
                    .as_ref()
                    .map_or(Duration::ZERO, |n| n.keepalive);
                if keepalive.is_zero() {
                    return;
                }
                out.push(Output::Send {
                    connection: id,
                    message: Message::Keepalive,
                });
                out.push(Output::StartTimer {
                    timer: Timer::Keepalive(id),
                    after: keepalive,
                });
            }
        }
    }

    fn restart_hold_timer(&self, id: ConnectionId, out: &mut Vec<Output>) {
        if let Some(c) = self.connection(id) {
            let hold = c.hold_time();
            if !hold.is_zero() {
                out.push(Output::StartTimer {
                    timer: Timer::Hold(id),
                    after: hold,
                });
            }
        }
    }

    fn message(&mut self, id: ConnectionId, message: Message, now: Instant, out: &mut Vec<Output>) {
        let Some(state) = self.connection(id).map(|c| c.state) else {
            return;
        };
        match (state, message) {
            (ConnState::Connecting, _) => {}
            (_, Message::Notification(n)) => {
                // Event 25 NotifMsg in any state: drop the connection.
                let reason = DownReason::NotificationReceived(n);
                self.drop_connection(id, None, reason, now, out);
            }
            (ConnState::OpenSent, Message::Open(open)) => self.open_received(id, open, now, out),
            (ConnState::OpenConfirm, Message::Keepalive) => self.enter_established(id, now, out),
            (ConnState::Established, Message::Keepalive) => self.restart_hold_timer(id, out),
            (ConnState::Established, Message::Update(update)) => {
                // RFC 4271 §8.2.2 Established, Event 27: restart the HoldTimer.
                self.restart_hold_timer(id, out);
                out.push(Output::UpdateReceived(update));
            }
            (ConnState::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold_timer(id, out);
                // RFC 2918 §4: a ROUTE-REFRESH for a family we did not advertise is ignored.
                if self.established().is_some_and(|n| n.has_family(rr.family)) {
                    out.push(Output::RouteRefreshRequested(rr.family));
                }
            }
            (state, _) => {
                // RFC 4271 §8.2.2 "any other event": FSM Error, with RFC 6608's subcode.
                let subcode = match state {
                    ConnState::OpenSent => notif::FSM_UNEXPECTED_IN_OPEN_SENT,
                    ConnState::OpenConfirm => notif::FSM_UNEXPECTED_IN_OPEN_CONFIRM,
                    _ => notif::FSM_UNEXPECTED_IN_ESTABLISHED,
                };
                let n = Notification::fsm_error(subcode);
                let reason = DownReason::NotificationSent(n.clone());
                self.drop_connection(id, Some(n), reason, now, out);
            }
        }
    }

    fn open_received(&mut self, id: ConnectionId, open: Open, now: Instant, out: &mut Vec<Output>) {
        let negotiated = match negotiate(&self.config, id, open) {
            Ok(n) => n,
            Err(n) => {
                let reason = DownReason::NotificationSent(n.clone());
                self.drop_connection(id, Some(n), reason, now, out);
                return;
            }
        };
        if !self.resolve_collision(id, &negotiated, now, out) {
            return;
        }
        // RFC 4271 §8.2.2 OpenSent, Event 19: send KEEPALIVE, set the KeepaliveTimer and the
        // HoldTimer to the negotiated value, go to OpenConfirm.
        let hold = negotiated.hold_time;
        let keepalive = negotiated.keepalive;
        if let Some(c) = self.connection_mut(id) {
            c.state = ConnState::OpenConfirm;
            c.negotiated = Some(negotiated);
        }
        out.push(Output::Send {
            connection: id,
            message: Message::Keepalive,
        });
        if hold.is_zero() {
            out.push(Output::StopTimer(Timer::Hold(id)));
        } else {
            out.push(Output::StartTimer {
                timer: Timer::Hold(id),
                after: hold,
            });
            out.push(Output::StartTimer {
                timer: Timer::Keepalive(id),
                after: keepalive,
            });
        }
    }

    /// RFC 4271 §6.8 Connection collision detection, run when an OPEN arrives on `id`. Returns
    /// whether `id` survives.
    fn resolve_collision(
        &mut self,
        id: ConnectionId,
        negotiated: &Negotiated,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(this) = self.connection(id) else {
            return false;
        };
        let this_direction = this.direction;
        let Some(other) = self
            .connections
            .iter()
            .filter(|c| c.id != id && c.state >= ConnState::OpenConfirm)
            .max_by_key(|c| c.state)
        else {
            return true;
        };
        let (other_id, other_direction, other_state) = (other.id, other.direction, other.state);
        let cease = || Notification::cease(notif::CONNECTION_COLLISION_RESOLUTION);
        if other_state == ConnState::Established {
            // Only when both ends advertised graceful restart: FRR and NX-OS send the capability
            // by default, and a late colliding OPEN from such a peer must not tear down a fresh
            // session we never agreed to restart gracefully (RFC 4271 §6.8).
            let both_have_gr = other
                .negotiated
                .as_ref()
                .is_some_and(|n| n.graceful_restart);
            if both_have_gr {
                // RFC 4724 §4.2: a new session from a peer with graceful restart means the peer
                // restarted; the old session is gone.
                self.drop_connection(other_id, None, DownReason::PeerRestarted, now, out);
                return true;
            }
            // RFC 4271 §6.8: "a connection collision with an existing BGP connection that is in
            // the Established state causes closing of the newly created connection."
            self.drop_connection(id, Some(cease()), DownReason::CollisionResolution, now, out);
            return false;
        }
        // "1) The BGP Identifier of the local system is compared to the BGP Identifier of the
        // remote system (as specified in the OPEN message). Comparing BGP Identifiers is done by
        // converting them to host byte order and treating them as 4-octet unsigned integers.
        // 2) If the value of the local BGP Identifier is less than the remote one, the local
        // system closes the BGP connection that already exists (the one that is already in the
        // OpenConfirm state), and accepts the BGP connection initiated by the remote system.
        // 3) Otherwise, the local system closes the newly created BGP connection (the one
        // associated with the newly received OPEN message), and continues to use the existing
        // one (the one that is already in the OpenConfirm state)."
        // RFC 6286 §2.3: with equal identifiers (possible between ASes), "the connection
        // initiated by the BGP speaker with the larger AS number is preserved".
        let local = u32::from(self.config.router_id);
        let remote = u32::from(negotiated.peer_router_id);
        let keep_inbound = if local == remote {
            negotiated.peer_as > self.config.local_as
        } else {
            local < remote
        };
        // Two connections of one direction: the peer (or we) gave up the older one.
        let close = if this_direction == other_direction
            || (this_direction == Direction::Inbound) == keep_inbound
        {
            other_id
        } else {
            id
        };
        self.drop_connection(
            close,
            Some(cease()),
            DownReason::CollisionResolution,
            now,
            out,
        );
        close != id
    }

    fn enter_established(&mut self, id: ConnectionId, now: Instant, out: &mut Vec<Output>) {
        let Some(c) = self.connection_mut(id) else {
            return;
        };
        c.state = ConnState::Established;
        let Some(negotiated) = c.negotiated.clone() else {
            return;
        };
        // One session per peer: any other connection loses (RFC 4271 §6.8).
        let others: Vec<(ConnectionId, ConnState)> = self
            .connections
            .iter()
            .filter(|c| c.id != id)
            .map(|c| (c.id, c.state))
            .collect();
        for (other, state) in others {
            let n = (state >= ConnState::OpenSent)
                .then(|| Notification::cease(notif::CONNECTION_COLLISION_RESOLUTION));
            self.drop_connection(other, n, DownReason::CollisionResolution, now, out);
        }
        out.push(Output::StopTimer(Timer::ConnectRetry));
        self.restart_hold_timer(id, out);
        self.established_at = Some(now);
        // The R bit says "I have just restarted": only in the OPENs before the first session.
        if let Some(gr) = &mut self.config.graceful_restart {
            gr.restarting = false;
        }
        out.push(Output::SessionEstablished(Box::new(negotiated)));
    }
}

/// Check a received OPEN (RFC 4271 §6.2) and work out what the session runs with.
pub fn negotiate(
    config: &PeerConfig,
    connection: ConnectionId,
    open: Open,
) -> Result<Negotiated, Notification> {
    use notif::{OPEN_MESSAGE_ERROR, UNSUPPORTED_VERSION_NUMBER};
    if open.version != BGP_VERSION {
        // "the Data field is a 2-octet unsigned integer, which indicates the largest, locally-
        // supported version number less than the version the remote BGP peer bid"
        return Err(Notification {
            code: OPEN_MESSAGE_ERROR,
            subcode: UNSUPPORTED_VERSION_NUMBER,
            data: u16::from(BGP_VERSION).to_be_bytes().to_vec(),
        });
    }
    let peer_as = open.asn();
    if peer_as != config.peer_as {
        return Err(Notification::bad_peer_as());
    }
    // "If the Hold Time field of the OPEN message is unacceptable, then the Error Subcode MUST
    // be set to Unacceptable Hold Time. An implementation MUST reject Hold Time values of one
    // or two seconds."
    if open.hold_time == 1 || open.hold_time == 2 {
        return Err(Notification::unacceptable_hold_time());
    }
    // RFC 6286 §2.2: "If the BGP Identifier field of the OPEN message is zero, or if it is the
    // same as the BGP Identifier of the local BGP speaker and the message is from an internal
    // peer, then the Error Subcode is set to 'Bad BGP Identifier'."
    if open.bgp_identifier.is_unspecified()
        || (config.is_ibgp() && open.bgp_identifier == config.router_id)
    {
        return Err(Notification::bad_bgp_identifier());
    }
    let hold = config.hold_time.min(open.hold_time);
    let hold_time = Duration::from_secs(u64::from(hold));
    let mut four_octet_as = false;
    let mut extended_message = false;
    let mut route_refresh = false;
    let mut peer_families = Vec::new();
    let mut peer_graceful_restart = None;
    for cap in &open.capabilities {
        match cap {
            Capability::Multiprotocol(f) => peer_families.push(*f),
            Capability::RouteRefresh => route_refresh = true,
            Capability::ExtendedMessage => extended_message = true,
            Capability::GracefulRestart(gr) => peer_graceful_restart = Some(gr.clone()),
            Capability::FourOctetAs(_) => four_octet_as = true,
            Capability::Unknown { .. } => {}
        }
    }
    if peer_families.is_empty() {
        peer_families.push(AddressFamily::IPV4_UNICAST);
    }
    let families = config
        .families
        .iter()
        .copied()
        .filter(|f| peer_families.contains(f))
        .collect();
    Ok(Negotiated {
        connection,
        local_as: config.local_as,
        peer_as,
        peer_router_id: open.bgp_identifier,
        hold_time,
        keepalive: hold_time / 3,
        four_octet_as,
        extended_message: extended_message && config.extended_message,
        route_refresh,
        families,
        graceful_restart: peer_graceful_restart.is_some() && config.graceful_restart.is_some(),
        peer_graceful_restart,
        peer_open: open,
    })
}

#[cfg(test)]
mod tests;
