//! The BFD session state machine of RFC 5880 (asynchronous mode), sans-IO: inputs in, outputs
//! out, no sockets and no clock. Time enters as timer expiries the I/O task reports; the one
//! random number jitter needs (§6.8.7) is an argument of `handle`.
//!
//! - States AdminDown, Down, Init, Up and the transitions of §6.2 / §6.8.6 (`next_state`).
//! - Timer negotiation (§6.8.2–6.8.4): we transmit every max(DesiredMinTxInterval,
//!   RemoteMinRxInterval), jittered; the remote is declared down after its Detect Mult times
//!   max(RequiredMinRxInterval, its Desired Min TX Interval) without a valid packet.
//! - Slow transmission while not Up (§6.8.3: DesiredMinTxInterval at least one second), so
//!   reaching Up changes the interval, which is a Poll Sequence like any other change (§6.5).
//! - A Poll Sequence sets P in every packet until a packet with F arrives; until then an
//!   increased transmit interval and a reduced receive interval are not applied (§6.8.3).
//! - Passive role (§6.1): nothing is sent until the remote's discriminator is known.
//! - Demand mode and the Echo function are not implemented (we never set D, and advertise a
//!   Required Min Echo RX Interval of zero, §6.8.3); a remote in demand mode is honoured by
//!   ceasing periodic transmission (§6.8.7).

use std::fmt;
use std::time::Duration;

use super::codec::{Authentication, ControlPacket, Diagnostic, SessionState};

/// RFC 5880 §6.8.3: "bfd.DesiredMinTxInterval [...] not less than one second" while not Up.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The parameters a session runs with (the BFDProfile of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameters {
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
}

impl Default for Parameters {
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// The two timers of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The periodic transmission of Control packets (§6.8.7).
    Transmit,
    /// The Detection Time (§6.8.4).
    Detection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Received(ControlPacket),
    TimerExpired(Timer),
    /// Leave AdminDown (§6.8.16).
    AdminUp,
    /// Enter AdminDown (§6.8.16), with the diagnostic to send.
    AdminDown,
    ChangeParameters(Parameters),
}

/// Why a packet that passed the codec was still discarded (§6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// "If the A bit is set and no authentication is in use [...] discarded."
    UnexpectedAuthentication,
    /// "If the A bit is clear and authentication is in use [...] discarded."
    MissingAuthentication,
    /// "If bfd.SessionState is AdminDown: Discard the packet."
    LocalAdminDown,
    /// Your Discriminator names another session (the demultiplexer should not let it through).
    WrongDiscriminator { expected: u32, got: u32 },
    /// Another Auth Type or Key ID than ours (§6.7.4).
    AuthenticationMismatch,
    /// §6.7.4: the Auth Sequence Number is outside bfd.RcvAuthSeq..+3×Detect Mult (+1.. for
    /// meticulous), a replay or a gap too large.
    SequenceOutOfWindow { last: u32, got: u32 },
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedAuthentication => f.write_str("A bit set but no authentication in use"),
            Self::MissingAuthentication => f.write_str("A bit clear but authentication in use"),
            Self::LocalAdminDown => f.write_str("session is AdminDown"),
            Self::WrongDiscriminator { expected, got } => {
                write!(f, "Your Discriminator {got} is not ours ({expected})")
            }
            Self::AuthenticationMismatch => f.write_str("another Auth Type or Key ID"),
            Self::SequenceOutOfWindow { last, got } => {
                write!(
                    f,
                    "Auth Sequence Number {got} outside the window after {last}"
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ControlPacket),
    ArmTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    StateChanged {
        from: SessionState,
        to: SessionState,
        diagnostic: Diagnostic,
    },
    Discarded(DiscardReason),
    /// A Poll Sequence ended with the remote's Final: the new parameters are in use.
    PollCompleted,
}

/// The timers in force, for status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// max(our DesiredMinTxInterval, the remote's Required Min RX Interval), before jitter;
    /// `None` while nothing periodic may be sent.
    pub transmit_interval: Option<Duration>,
    /// The remote's Detect Mult × max(our RequiredMinRxInterval, its Desired Min TX).
    pub detection_time: Option<Duration>,
}

/// RFC 5880 §6.8.6 state transitions on a received packet, as a pure function: the new local
/// state and diagnostic, or `None` when the state stays.
pub fn next_state(
    local: SessionState,
    received: SessionState,
) -> Option<(SessionState, Diagnostic)> {
    use SessionState::*;
    match (local, received) {
        // "If bfd.SessionState is AdminDown: Discard the packet" (handled before).
        (AdminDown, _) => None,
        // "If received state is AdminDown: If bfd.SessionState is not Down: Set bfd.LocalDiag
        // to 3 (Neighbor signaled session down), Set bfd.SessionState to Down".
        (Down, AdminDown) => None,
        (_, AdminDown) => Some((Down, Diagnostic::NeighborSignaledSessionDown)),
        (Down, Down) => Some((Init, Diagnostic::None)),
        (Down, Init) => Some((Up, Diagnostic::None)),
        (Down, Up) => None,
        (Init, Init | Up) => Some((Up, Diagnostic::None)),
        (Init, Down) => None,
        (Up, Down) => Some((Down, Diagnostic::NeighborSignaledSessionDown)),
        (Up, Init | Up) => None,
    }
}

/// One BFD session (§6.8.1 state variables).
#[derive(Debug, Clone)]
pub struct Session {
    state: SessionState,
    remote_state: SessionState,
    local_discr: u32,
    remote_discr: u32,
    local_diag: Diagnostic,
    passive: bool,
    /// What the configuration asks for once Up.
    configured: Parameters,
    /// DesiredMinTxInterval and RequiredMinRxInterval as advertised now (slow TX applied).
    advertised_tx: Duration,
    advertised_rx: Duration,
    /// The values the intervals are computed from; they lag `advertised_*` during a Poll
    /// Sequence (§6.8.3).
    tx_in_use: Duration,
    rx_in_use: Duration,
    /// bfd.RemoteMinRxInterval: "initialized to 1" microsecond.
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_detect_mult: u8,
    remote_demand: bool,
    poll_pending: bool,
    /// A Final owed to the remote's Poll.
    final_pending: bool,
    /// Keyed SHA1 in use (§6.7.4): the digest is made and checked on the bytes by `auth`.
    auth: Option<Sha1State>,
}

/// The §6.8.1 authentication variables of a keyed SHA1 session.
#[derive(Debug, Clone, Copy)]
struct Sha1State {
    key_id: u8,
    meticulous: bool,
    /// bfd.XmitAuthSeq.
    xmit_seq: u32,
    /// bfd.RcvAuthSeq, valid when `seq_known` (bfd.AuthSeqKnown).
    rcv_seq: u32,
    seq_known: bool,
}

impl Session {
    /// A session in Down (§6.8.1: "bfd.SessionState [...] MUST be initialized to Down").
    /// `local_discr` must be non-zero and unique on this system.
    pub fn new(local_discr: u32, params: Parameters, passive: bool) -> Self {
        assert_ne!(local_discr, 0, "RFC 5880 §6.8.1: a non-zero discriminator");
        let advertised_tx = params.desired_min_tx.max(SLOW_TX);
        Self {
            state: SessionState::Down,
            remote_state: SessionState::Down,
            local_discr,
            remote_discr: 0,
            local_diag: Diagnostic::None,
            passive,
            configured: params,
            advertised_tx,
            advertised_rx: params.required_min_rx,
            tx_in_use: advertised_tx,
            rx_in_use: params.required_min_rx,
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            poll_pending: false,
            final_pending: false,
            auth: None,
        }
    }

    /// Keyed SHA1 (or Meticulous Keyed SHA1) with this key id; `initial_seq` is bfd.XmitAuthSeq's
    /// random start (§6.8.1).
    pub fn with_sha1(mut self, key_id: u8, meticulous: bool, initial_seq: u32) -> Self {
        self.auth = Some(Sha1State {
            key_id,
            meticulous,
            xmit_seq: initial_seq,
            rcv_seq: 0,
            seq_known: false,
        });
        self
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    /// bfd.RemoteSessionState: the state in the remote's last packet.
    pub fn remote_state(&self) -> SessionState {
        self.remote_state
    }

    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    pub fn diagnostic(&self) -> Diagnostic {
        self.local_diag
    }

    pub fn parameters(&self) -> Parameters {
        self.configured
    }

    pub fn poll_in_progress(&self) -> bool {
        self.poll_pending
    }

    pub fn negotiated(&self) -> Negotiated {
        Negotiated {
            transmit_interval: self.transmit_interval(),
            detection_time: self.detection_time(),
        }
    }

    /// The first outputs: arm the transmit timer (an active session sends at once, §6.1).
    pub fn start(&mut self, random: u32) -> Vec<Output> {
        let mut out = Vec::new();
        self.transmit(&mut out, random);
        out
    }

    pub fn handle(&mut self, input: Input, random: u32) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.receive(p, random, &mut out),
            Input::TimerExpired(Timer::Transmit) => self.transmit(&mut out, random),
            Input::TimerExpired(Timer::Detection) => self.detection_expired(&mut out),
            Input::AdminDown => {
                if self.state != SessionState::AdminDown {
                    // §6.8.16: AdminDown with a diagnostic; no detection while in it.
                    self.set_state(
                        SessionState::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        &mut out,
                    );
                    out.push(Output::StopTimer(Timer::Detection));
                    self.transmit(&mut out, random);
                }
            }
            Input::AdminUp => {
                if self.state == SessionState::AdminDown {
                    self.remote_discr = 0;
                    self.remote_state = SessionState::Down;
                    self.set_state(
                        SessionState::Down,
                        Diagnostic::AdministrativelyDown,
                        &mut out,
                    );
                    self.transmit(&mut out, random);
                }
            }
            Input::ChangeParameters(p) => self.change_parameters(p, random, &mut out),
        }
        out
    }

    /// §6.8.3: a change of DesiredMinTxInterval or RequiredMinRxInterval while Up starts a
    /// Poll Sequence; an increased TX or reduced RX interval waits for its Final.
    fn change_parameters(&mut self, p: Parameters, random: u32, out: &mut Vec<Output>) {
        let before = self.transmit_interval();
        self.configured = p;
        if self.state == SessionState::Up {
            self.advertise(p.desired_min_tx, p.required_min_rx);
        } else {
            // Not Up: slow TX stays; nothing to confirm.
            self.advertised_tx = p.desired_min_tx.max(SLOW_TX);
            self.advertised_rx = p.required_min_rx;
            self.tx_in_use = self.advertised_tx;
            self.rx_in_use = self.advertised_rx;
        }
        // The new values (and the Poll) go out with the next periodic packet: §6.8.7 allows no
        // packet sooner. Only a shorter interval re-arms the timer.
        self.rearm_if_sooner(before, random, out);
    }

    /// After a change of the transmit interval: a passive session that may now send starts
    /// (§6.1), and a shorter interval takes effect from now rather than after the old one.
    fn rearm_if_sooner(&mut self, before: Option<Duration>, random: u32, out: &mut Vec<Output>) {
        match (before, self.transmit_interval()) {
            (None, Some(_)) => self.transmit(out, random),
            (Some(b), Some(a)) if a < b => out.push(Output::ArmTimer {
                timer: Timer::Transmit,
                after: jittered(a, self.configured.detect_mult, random),
            }),
            _ => {}
        }
    }

    /// Advertise new intervals while Up: a Poll Sequence (§6.5).
    fn advertise(&mut self, tx: Duration, rx: Duration) {
        if tx == self.advertised_tx && rx == self.advertised_rx {
            return;
        }
        self.advertised_tx = tx;
        self.advertised_rx = rx;
        // Until the Final, use the more conservative of old and new (§6.8.3).
        self.tx_in_use = self.tx_in_use.min(tx);
        self.rx_in_use = self.rx_in_use.max(rx);
        self.poll_pending = true;
    }

    fn receive(&mut self, p: ControlPacket, random: u32, out: &mut Vec<Output>) {
        let before = self.transmit_interval();
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            out.push(Output::Discarded(DiscardReason::WrongDiscriminator {
                expected: self.local_discr,
                got: p.your_discriminator,
            }));
            return;
        }
        match (&p.authentication, &mut self.auth) {
            (Some(_), None) => {
                out.push(Output::Discarded(DiscardReason::UnexpectedAuthentication));
                return;
            }
            (None, Some(_)) => {
                out.push(Output::Discarded(DiscardReason::MissingAuthentication));
                return;
            }
            (Some(a), Some(st)) => {
                let Authentication::Sha1 {
                    meticulous,
                    key_id,
                    sequence,
                    ..
                } = a
                else {
                    out.push(Output::Discarded(DiscardReason::AuthenticationMismatch));
                    return;
                };
                if *meticulous != st.meticulous || *key_id != st.key_id {
                    out.push(Output::Discarded(DiscardReason::AuthenticationMismatch));
                    return;
                }
                // §6.7.4: within bfd.RcvAuthSeq ..= bfd.RcvAuthSeq + 3 × Detect Mult
                // (from + 1 for meticulous), in 32-bit circular space.
                if st.seq_known {
                    let ahead = sequence.wrapping_sub(st.rcv_seq);
                    let window = 3 * u32::from(p.detect_mult);
                    let first = u32::from(st.meticulous);
                    if !(first..=window).contains(&ahead) {
                        out.push(Output::Discarded(DiscardReason::SequenceOutOfWindow {
                            last: st.rcv_seq,
                            got: *sequence,
                        }));
                        return;
                    }
                }
                st.rcv_seq = *sequence;
                st.seq_known = true;
            }
            (None, None) => {}
        }
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx_interval));
        self.remote_min_tx = Duration::from_micros(u64::from(p.desired_min_tx_interval));
        self.remote_detect_mult = p.detect_mult;
        // "If the Final (F) bit is set and a Poll Sequence is in progress, terminate it."
        if p.final_ && self.poll_pending {
            self.poll_pending = false;
            self.tx_in_use = self.advertised_tx;
            self.rx_in_use = self.advertised_rx;
            out.push(Output::PollCompleted);
        }
        if self.state == SessionState::AdminDown {
            out.push(Output::Discarded(DiscardReason::LocalAdminDown));
            return;
        }
        if let Some((to, diag)) = next_state(self.state, p.state) {
            self.set_state(to, diag, out);
        }
        // Every valid packet restarts the Detection Time (§6.8.4).
        if let Some(after) = self.detection_time() {
            out.push(Output::ArmTimer {
                timer: Timer::Detection,
                after,
            });
        }
        if p.poll {
            // "transmit a BFD Control packet with the Poll (P) bit clear and the Final (F)
            // bit set as soon as practicable, without respect to the transmission timer".
            self.final_pending = true;
            self.transmit(out, random);
        } else if self.remote_demand
            && self.state == SessionState::Up
            && self.remote_state == SessionState::Up
        {
            // §6.8.7: periodic transmission ceases toward a remote in demand mode.
            out.push(Output::StopTimer(Timer::Transmit));
        } else {
            self.rearm_if_sooner(before, random, out);
        }
    }

    fn detection_expired(&mut self, out: &mut Vec<Output>) {
        // §6.8.1 bfd.RemoteDiscr: reset after a Detection Time without a valid packet.
        self.remote_discr = 0;
        self.remote_state = SessionState::Down;
        self.remote_demand = false;
        // §6.8.1 bfd.AuthSeqKnown: forgotten when the remote has been silent (we use one
        // Detection Time rather than two; a fresh start is then accepted sooner).
        if let Some(st) = &mut self.auth {
            st.seq_known = false;
        }
        if matches!(self.state, SessionState::Init | SessionState::Up) {
            // §6.8.4: "the session has gone down"; Diag 1.
            self.set_state(
                SessionState::Down,
                Diagnostic::ControlDetectionTimeExpired,
                out,
            );
        }
    }

    fn set_state(&mut self, to: SessionState, diagnostic: Diagnostic, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        if diagnostic != Diagnostic::None || to != SessionState::Up {
            self.local_diag = diagnostic;
        }
        if to == SessionState::Up {
            // Leave slow TX: the configured intervals, confirmed by a Poll Sequence.
            let p = self.configured;
            self.advertise(p.desired_min_tx, p.required_min_rx);
        } else if from == SessionState::Up {
            self.poll_pending = false;
            self.advertised_tx = self.configured.desired_min_tx.max(SLOW_TX);
            self.advertised_rx = self.configured.required_min_rx;
            self.tx_in_use = self.advertised_tx;
            self.rx_in_use = self.advertised_rx;
        }
        out.push(Output::StateChanged {
            from,
            to,
            diagnostic,
        });
    }

    /// §6.8.7: max(DesiredMinTxInterval, RemoteMinRxInterval); none when the remote's Required
    /// Min RX Interval is zero ("MUST NOT periodically transmit").
    fn transmit_interval(&self) -> Option<Duration> {
        if self.remote_min_rx.is_zero() || (self.passive && self.remote_discr == 0) {
            return None;
        }
        Some(self.tx_in_use.max(self.remote_min_rx))
    }

    /// §6.8.4 (asynchronous mode): the remote's Detect Mult × max(RequiredMinRxInterval, the
    /// remote's last Desired Min TX Interval).
    fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 || self.state == SessionState::AdminDown {
            return None;
        }
        Some(self.rx_in_use.max(self.remote_min_tx) * u32::from(self.remote_detect_mult))
    }

    /// Sends a packet now (if sending is allowed) and arms the next periodic one, jittered.
    fn transmit(&mut self, out: &mut Vec<Output>, random: u32) {
        if self.passive && self.remote_discr == 0 {
            // §6.1: a passive system waits for the remote's first packet.
            out.push(Output::StopTimer(Timer::Transmit));
            return;
        }
        out.push(Output::Send(self.packet()));
        self.final_pending = false;
        if let Some(st) = &mut self.auth {
            // Every packet gets the next number: required for meticulous, allowed otherwise.
            st.xmit_seq = st.xmit_seq.wrapping_add(1);
        }
        match self.transmit_interval() {
            Some(interval) => out.push(Output::ArmTimer {
                timer: Timer::Transmit,
                after: jittered(interval, self.configured.detect_mult, random),
            }),
            None => out.push(Output::StopTimer(Timer::Transmit)),
        }
    }

    /// The Control packet this session sends now (§6.8.7).
    pub fn packet(&self) -> ControlPacket {
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        ControlPacket {
            diagnostic: self.local_diag,
            state: self.state,
            // "A system MUST NOT set the Final bit and the Poll bit in the same packet": the
            // Final wins; the Poll goes out with the next periodic packet.
            poll: self.poll_pending && !self.final_pending,
            final_: self.final_pending,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.configured.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_interval: micros(self.advertised_tx),
            required_min_rx_interval: micros(self.advertised_rx),
            required_min_echo_rx_interval: 0,
            authentication: self.auth.map(|st| Authentication::Sha1 {
                meticulous: st.meticulous,
                key_id: st.key_id,
                sequence: st.xmit_seq,
                // Filled in by `auth::Sha1Key::sign` on the encoded packet.
                digest: [0; 20],
            }),
        }
    }
}

/// §6.8.7: "the interval MUST be reduced by a random value of 0 to 25%" (to 75–100 %), and
/// to 75–90 % when bfd.DetectMult is 1.
pub fn jittered(interval: Duration, detect_mult: u8, random: u32) -> Duration {
    let percent = if detect_mult == 1 {
        75 + random % 16
    } else {
        75 + random % 26
    };
    interval * percent / 100
}

#[cfg(test)]
mod tests;
