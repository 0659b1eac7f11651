//! The BFD I/O: one task owns every session's state machine (`fsm::Session`), its timers and
//! its transmit socket; one reader task per receive socket hands it datagrams. Control packets
//! are demultiplexed as RFC 5880 §6.8.6 says: by Your Discriminator when it is non-zero, else
//! by source address (like rustybgp's daemon/src/bfd.rs).
//!
//! - Single hop (RFC 5881): received on UDP 3784; packets are sent with TTL 255 and accepted
//!   only with TTL / Hop Limit 255 (§5, read with IP_RECVTTL / IPV6_RECVHOPLIMIT), from a source
//!   port in 49152–65535 that stays the same for the session (§4).
//! - Multihop (RFC 5883): received on UDP 4784, sent with TTL 255; any received TTL is
//!   accepted (§5 leaves a minimum to configuration, not offered here).
//!
//! Authentication: none, or Keyed SHA1 / Meticulous Keyed SHA1 (§6.7.4) with a key the caller
//! read from a file. The digest is checked here on the received bytes, the sequence number in
//! `fsm`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::auth::Sha1Key;
use super::codec::{self, Diagnostic, SessionState};
use super::fsm::{self, Input, Output, Parameters, Timer};
use crate::metrics::SpeakerMetrics;

/// RFC 5881 §4: single-hop Control packets go to UDP port 3784.
pub const SINGLE_HOP_PORT: u16 = 3784;
/// RFC 5883 §5: multihop Control packets go to UDP port 4784.
pub const MULTIHOP_PORT: u16 = 4784;
/// RFC 5881 §4: "The source port MUST be in the range 49152 through 65535."
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Single hop (RFC 5881) or multihop (RFC 5883).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hops {
    Single,
    Multi,
}

impl Hops {
    fn port(self) -> u16 {
        match self {
            Hops::Single => SINGLE_HOP_PORT,
            Hops::Multi => MULTIHOP_PORT,
        }
    }
}

/// A profile: the timers and the role (RFC 5880 §6.1 passive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Profile {
    pub parameters: Parameters,
    pub passive: bool,
}

/// Which peer a session runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// For logs and metrics (the BGP peer's name).
    pub name: String,
    pub peer: IpAddr,
    /// Source address of our packets; chosen by the kernel when absent.
    pub local: Option<IpAddr>,
    pub hops: Hops,
    /// Keyed SHA1 (RFC 5880 §6.7.4); none: no authentication.
    pub auth: Option<Sha1Key>,
}

/// A session's state with what explains it, published whenever one of its fields changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdStatus {
    pub state: SessionState,
    /// The state in the remote's last packet: AdminDown means it turned BFD off, which RFC
    /// 5882 §3.2 says is not a path failure.
    pub remote_state: SessionState,
    /// The diagnostic of the last state change (bfd.LocalDiag).
    pub diagnostic: Diagnostic,
    /// The negotiated timers (`fsm::Negotiated`).
    pub transmit_interval: Option<Duration>,
    pub detection_time: Option<Duration>,
}

impl BfdStatus {
    const START: BfdStatus = BfdStatus {
        state: SessionState::Down,
        remote_state: SessionState::Down,
        diagnostic: Diagnostic::None,
        transmit_interval: None,
        detection_time: None,
    };
}

type Started = (
    u32,
    watch::Receiver<SessionState>,
    watch::Receiver<BfdStatus>,
);

enum Command {
    Start {
        spec: PeerSpec,
        profile: Profile,
        reply: oneshot::Sender<io::Result<Started>>,
    },
    SetParameters(u32, Parameters),
    Stop(u32, oneshot::Sender<()>),
}

/// The BFD service: start sessions through it. Cloning shares the one task.
#[derive(Debug, Clone)]
pub struct Bfd {
    cmd: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Start { spec, .. } => write!(f, "Start({})", spec.name),
            Command::SetParameters(d, p) => write!(f, "SetParameters({d}, {p:?})"),
            Command::Stop(d, _) => write!(f, "Stop({d})"),
        }
    }
}

/// One running session. Dropping it stops the session (as `stop` does, without waiting).
#[derive(Debug)]
pub struct BfdSession {
    discriminator: u32,
    state: watch::Receiver<SessionState>,
    status: watch::Receiver<BfdStatus>,
    cmd: mpsc::UnboundedSender<Command>,
    stopped: bool,
}

impl BfdSession {
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// The state with the remote's state and our diagnostic.
    pub fn status(&self) -> watch::Receiver<BfdStatus> {
        self.status.clone()
    }

    /// Our discriminator (bfd.LocalDiscr).
    pub fn discriminator(&self) -> u32 {
        self.discriminator
    }

    /// New timers, applied through a Poll Sequence when Up (RFC 5880 §6.8.3): no flap.
    pub fn set_parameters(&self, parameters: Parameters) {
        let _ = self
            .cmd
            .send(Command::SetParameters(self.discriminator, parameters));
    }

    /// Sends AdminDown to the peer (RFC 5880 §6.8.16: not a failure for it) and ends the
    /// session.
    pub async fn stop(mut self) {
        let (tx, rx) = oneshot::channel();
        self.stopped = true;
        if self.cmd.send(Command::Stop(self.discriminator, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Drop for BfdSession {
    fn drop(&mut self) {
        if !self.stopped {
            let (tx, _) = oneshot::channel();
            let _ = self.cmd.send(Command::Stop(self.discriminator, tx));
        }
    }
}

impl Bfd {
    /// Starts the task. Receive sockets are bound when the first session needs them.
    pub fn spawn(metrics: SpeakerMetrics) -> Bfd {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (pkt_tx, pkt_rx) = mpsc::channel(1024);
        let daemon = Daemon {
            metrics,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            receivers: HashMap::new(),
            pkt_tx,
        };
        tokio::spawn(daemon.run(cmd_rx, pkt_rx));
        Bfd { cmd }
    }

    /// Starts a session with `spec.peer`.
    pub async fn start(&self, spec: PeerSpec, profile: Profile) -> io::Result<BfdSession> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Start {
                spec,
                profile,
                reply,
            })
            .map_err(|_| io::Error::other("BFD task is gone"))?;
        let (discriminator, state, status) = rx
            .await
            .map_err(|_| io::Error::other("BFD task is gone"))??;
        Ok(BfdSession {
            discriminator,
            state,
            status,
            cmd: self.cmd.clone(),
            stopped: false,
        })
    }
}

/// A datagram from a reader task.
#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    hops: Hops,
    /// Received TTL / Hop Limit; `None` if the kernel gave none.
    ttl: Option<u8>,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    spec: PeerSpec,
    fsm: fsm::Session,
    tx: StdUdpSocket,
    dest: SocketAddr,
    timers: [Option<Instant>; 2],
    state_tx: watch::Sender<SessionState>,
    status_tx: watch::Sender<BfdStatus>,
    labels: crate::metrics::PeerLabels,
    span: tracing::Span,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::Transmit => 0,
        Timer::Detection => 1,
    }
}

#[derive(Debug)]
struct Daemon {
    metrics: SpeakerMetrics,
    sessions: HashMap<u32, Entry>,
    by_peer: HashMap<(IpAddr, Hops), u32>,
    /// Reader tasks by (IPv6?, hops).
    receivers: HashMap<(bool, Hops), tokio::task::JoinHandle<()>>,
    pkt_tx: mpsc::Sender<Datagram>,
}

impl Daemon {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
        mut pkt_rx: mpsc::Receiver<Datagram>,
    ) {
        loop {
            let next = self
                .sessions
                .iter()
                .flat_map(|(d, e)| {
                    [Timer::Transmit, Timer::Detection]
                        .into_iter()
                        .filter_map(move |t| e.timers[timer_index(t)].map(|at| (at, *d, t)))
                })
                .min();
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(d) = pkt_rx.recv() => self.datagram(d),
                () = sleep_until_opt(next.map(|n| n.0)) => {
                    if let Some((_, discr, timer)) = next {
                        self.timer(discr, timer);
                    }
                }
            }
        }
        for (_, r) in self.receivers.drain() {
            r.abort();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Start {
                spec,
                profile,
                reply,
            } => {
                let _ = reply.send(self.start(spec, profile));
            }
            Command::SetParameters(discr, p) => {
                if let Some(e) = self.sessions.get(&discr) {
                    info!(peer = %e.spec.name, parameters = ?p, "BFD parameters changed");
                }
                self.input(discr, Input::ChangeParameters(p));
            }
            Command::Stop(discr, done) => {
                self.input(discr, Input::AdminDown);
                if let Some(e) = self.sessions.remove(&discr) {
                    self.by_peer.remove(&(e.spec.peer, e.spec.hops));
                    self.metrics.forget_bfd(&e.spec.name);
                    info!(peer = %e.spec.name, "BFD session stopped");
                }
                let _ = done.send(());
            }
        }
    }

    fn start(&mut self, spec: PeerSpec, profile: Profile) -> io::Result<Started> {
        if self.by_peer.contains_key(&(spec.peer, spec.hops)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a BFD session with {} already runs", spec.peer),
            ));
        }
        self.ensure_receiver(spec.peer.is_ipv6(), spec.hops)?;
        let tx = bind_source(&spec)?;
        let discr = loop {
            let d: u32 = rand::random();
            if d != 0 && !self.sessions.contains_key(&d) {
                break d;
            }
        };
        let (state_tx, state_rx) = watch::channel(SessionState::Down);
        let (status_tx, status_rx) = watch::channel(BfdStatus::START);
        let labels = SpeakerMetrics::labels(&spec.name);
        self.metrics
            .bfd_session_state
            .get_or_create(&labels)
            .set(SessionState::Down as i64);
        let _ = self.metrics.bfd_state_changes.get_or_create(&labels);
        let _ = self.metrics.bfd_detection_expiries.get_or_create(&labels);
        let span = tracing::info_span!("bfd", peer = %spec.name, addr = %spec.peer);
        info!(parent: &span, discriminator = discr, hops = ?spec.hops, source = %tx.local_addr()?, "BFD session starting");
        let mut fsm = fsm::Session::new(discr, profile.parameters, profile.passive);
        if let Some(k) = &spec.auth {
            fsm = fsm.with_sha1(k.key_id, k.meticulous, rand::random());
        }
        let outputs = fsm.start(rand::random());
        self.by_peer.insert((spec.peer, spec.hops), discr);
        self.sessions.insert(
            discr,
            Entry {
                dest: SocketAddr::new(spec.peer, spec.hops.port()),
                spec,
                fsm,
                tx,
                timers: [None, None],
                state_tx,
                status_tx,
                labels,
                span,
            },
        );
        self.execute(discr, outputs);
        Ok((discr, state_rx, status_rx))
    }

    fn ensure_receiver(&mut self, v6: bool, hops: Hops) -> io::Result<()> {
        if self.receivers.contains_key(&(v6, hops)) {
            return Ok(());
        }
        let sock = bind_receiver(v6, hops.port())?;
        let tx = self.pkt_tx.clone();
        let task = tokio::spawn(read_loop(sock, hops, tx));
        self.receivers.insert((v6, hops), task);
        Ok(())
    }

    fn datagram(&mut self, d: Datagram) {
        let packet = match codec::decode(&d.data) {
            Ok(p) => p,
            Err(e) => {
                self.drop_packet(&d, &e.to_string());
                return;
            }
        };
        // RFC 5881 §5: "all received BFD Control packets [...] MUST be discarded" unless their
        // TTL / Hop Limit is 255.
        if d.hops == Hops::Single && d.ttl != Some(255) {
            self.drop_packet(&d, &format!("TTL {:?} is not 255 (RFC 5881 §5)", d.ttl));
            return;
        }
        // RFC 5881 §4 / 5883 §4: the source port is in the dynamic range; some stacks ignore
        // this, and nothing depends on it, so it is not checked.
        let discr = if packet.your_discriminator != 0 {
            packet.your_discriminator
        } else if let Some(d) = self.by_peer.get(&(d.from.ip(), d.hops)) {
            *d
        } else {
            self.drop_packet(&d, "no session with this source address");
            return;
        };
        match self.sessions.get(&discr) {
            Some(e) if e.spec.peer == d.from.ip() && e.spec.hops == d.hops => {
                // §6.7.4: "If the Auth Key/Digest field does not match [...] the received
                // packet MUST be discarded." (No section at all: the fsm's discard.)
                if let Some(key) = &e.spec.auth
                    && packet.authentication.is_some()
                    && !key.verify(&packet, &d.data)
                {
                    self.drop_packet(&d, "keyed SHA1 digest does not match");
                    return;
                }
            }
            _ => {
                self.drop_packet(&d, "Your Discriminator names no session with this peer");
                return;
            }
        }
        self.input(discr, Input::Received(packet));
    }

    fn drop_packet(&self, d: &Datagram, why: &str) {
        self.metrics.bfd_packets_dropped.inc();
        debug!(from = %d.from, %why, "BFD packet discarded");
    }

    fn timer(&mut self, discr: u32, timer: Timer) {
        if let Some(e) = self.sessions.get_mut(&discr) {
            e.timers[timer_index(timer)] = None;
        }
        self.input(discr, Input::TimerExpired(timer));
    }

    fn input(&mut self, discr: u32, input: Input) {
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        let outputs = e.fsm.handle(input, rand::random());
        self.execute(discr, outputs);
    }

    fn execute(&mut self, discr: u32, outputs: Vec<Output>) {
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        let _g = e.span.clone().entered();
        let mut buf = Vec::with_capacity(codec::MAX_LEN);
        for o in outputs {
            match o {
                Output::Send(p) => {
                    buf.clear();
                    let encoded = match &e.spec.auth {
                        Some(key) => key.sign(&p, &mut buf),
                        None => codec::encode(&p, &mut buf),
                    };
                    match encoded {
                        Ok(()) => {
                            if let Err(err) = e.tx.send_to(&buf, e.dest) {
                                // Non-blocking: a full queue or a missing route loses this
                                // packet; the next one is due within an interval.
                                debug!(error = %err, "BFD packet not sent");
                            }
                        }
                        Err(err) => warn!(error = %err, "BFD packet not encodable"),
                    }
                }
                Output::ArmTimer { timer, after } => {
                    e.timers[timer_index(timer)] = Some(Instant::now() + after);
                }
                Output::StopTimer(timer) => e.timers[timer_index(timer)] = None,
                Output::StateChanged {
                    from,
                    to,
                    diagnostic,
                } => {
                    let n = e.fsm.negotiated();
                    info!(%diagnostic, tx = ?n.transmit_interval, detect = ?n.detection_time, "BFD state changed: {from} -> {to}");
                    if diagnostic == Diagnostic::ControlDetectionTimeExpired {
                        self.metrics
                            .bfd_detection_expiries
                            .get_or_create(&e.labels)
                            .inc();
                    }
                    self.metrics
                        .bfd_state_changes
                        .get_or_create(&e.labels)
                        .inc();
                    self.metrics
                        .bfd_session_state
                        .get_or_create(&e.labels)
                        .set(to as i64);
                    e.status_tx.send_replace(BfdStatus {
                        state: to,
                        remote_state: e.fsm.remote_state(),
                        diagnostic,
                        transmit_interval: n.transmit_interval,
                        detection_time: n.detection_time,
                    });
                    let _ = e.state_tx.send(to);
                }
                Output::Discarded(why) => {
                    self.metrics.bfd_packets_dropped.inc();
                    debug!(%why, "BFD packet discarded");
                }
                Output::PollCompleted => {
                    let n = e.fsm.negotiated();
                    info!(tx = ?n.transmit_interval, detect = ?n.detection_time, "BFD poll sequence completed");
                }
            }
        }
        // Our Poll Sequence or the remote's (a packet with new intervals) may change the timers
        // in use, and the remote's state may change, without a change of ours; watchers are
        // told only when something did.
        let n = e.fsm.negotiated();
        let remote_state = e.fsm.remote_state();
        e.status_tx.send_if_modified(|st| {
            let new = BfdStatus {
                remote_state,
                transmit_interval: n.transmit_interval,
                detection_time: n.detection_time,
                ..*st
            };
            std::mem::replace(st, new) != new
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket our packets leave from: TTL 255 (RFC 5881 §5, RFC 5883 §5), a source port in
/// the dynamic range kept for the session (RFC 5881 §4). Non-blocking; sends never wait.
fn bind_source(spec: &PeerSpec) -> io::Result<StdUdpSocket> {
    let v6 = spec.peer.is_ipv6();
    let sock = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if v6 {
        sock.set_unicast_hops_v6(255)?;
    } else {
        sock.set_ttl_v4(255)?;
    }
    sock.set_nonblocking(true)?;
    let ip = spec.local.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let first: u32 = rand::random::<u32>() % span;
    let mut last_err = None;
    for i in 0..256 {
        let port = *SOURCE_PORTS.start() + ((first + i * 7919) % span) as u16;
        match sock.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free source port")))
}

/// A receive socket on `port` that reports each datagram's TTL / Hop Limit.
fn bind_receiver(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let sock = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let addr = if v6 {
        sock.set_only_v6(true)?;
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv6RecvHopLimit, &true)?;
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
    } else {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvTtl, &true)?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    };
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding BFD port {addr}: {e}")))?;
    UdpSocket::from_std(sock.into())
}

async fn read_loop(sock: UdpSocket, hops: Hops, tx: mpsc::Sender<Datagram>) {
    let sock = Arc::new(sock);
    loop {
        let r = sock
            .async_io(Interest::READABLE, || recv_with_ttl(&sock))
            .await;
        match r {
            Ok((data, from, ttl)) => {
                if tx
                    .send(Datagram {
                        from,
                        hops,
                        ttl,
                        data,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn recv_with_ttl(sock: &UdpSocket) -> io::Result<(Vec<u8>, SocketAddr, Option<u8>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    let mut buf = [0u8; 128];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::c_int);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut ttl = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                ttl = u8::try_from(t).ok();
            }
            _ => {}
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::V4((*s).into()))
                .or_else(|| a.as_sockaddr_in6().map(|s| SocketAddr::V6((*s).into())))
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let len = msg.bytes;
    Ok((buf[..len.min(buf.len())].to_vec(), from, ttl))
}
