//! FSM tests: drive input sequences, assert the outputs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::bgp::message::{
    AddressFamily, Capability, GracefulRestartCap, GracefulRestartFamily, Message, Notification,
    Open, RouteRefresh, Update,
};

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65002;

fn local_id() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1)
}

fn config() -> PeerConfig {
    PeerConfig::new(LOCAL_AS, PEER_AS, local_id())
}

fn peer_open(asn: u32, id: Ipv4Addr, hold_time: u16) -> Open {
    Open {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
        hold_time,
        bgp_identifier: id,
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::Multiprotocol(AddressFamily::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
        ],
    }
}

fn default_peer_open() -> Open {
    peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 90)
}

/// A test harness: the FSM plus a clock.
struct Harness {
    fsm: Fsm,
    now: Instant,
}

impl Harness {
    fn new(config: PeerConfig) -> Self {
        Self {
            fsm: Fsm::new(config),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Output> {
        self.fsm.handle(input, self.now)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// ManualStart (active): returns the outbound connection id.
    fn start_active(&mut self) -> ConnectionId {
        let out = self.feed(Input::ManualStart { passive: false });
        connect_id(&out).expect("ManualStart connects out")
    }

    /// Start, connect out, exchange OPENs and KEEPALIVEs: Established on one connection.
    fn establish_with(&mut self, open: Open) -> (ConnectionId, Vec<Output>) {
        let id = self.start_active();
        self.feed(Input::TcpCrAcked(id));
        self.feed(Input::Message(id, Message::Open(open)));
        let out = self.feed(Input::Message(id, Message::Keepalive));
        assert_eq!(self.fsm.state(), State::Established, "{out:#?}");
        (id, out)
    }

    fn establish(&mut self) -> ConnectionId {
        self.establish_with(default_peer_open()).0
    }
}

fn connect_id(out: &[Output]) -> Option<ConnectionId> {
    out.iter().find_map(|o| match o {
        Output::Connect(id) => Some(*id),
        _ => None,
    })
}

fn sent(out: &[Output], conn: ConnectionId) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                connection,
                message,
            } if *connection == conn => Some(message),
            _ => None,
        })
        .collect()
}

fn sent_notification(out: &[Output], conn: ConnectionId) -> Option<(u8, u8)> {
    sent(out, conn).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn closed(out: &[Output]) -> Vec<ConnectionId> {
    out.iter()
        .filter_map(|o| match o {
            Output::CloseConnection { connection, .. } => Some(*connection),
            _ => None,
        })
        .collect()
}

fn timer_started(out: &[Output], timer: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::StartTimer { timer: t, after } if *t == timer => Some(*after),
        _ => None,
    })
}

fn negotiated(out: &[Output]) -> Option<&Negotiated> {
    out.iter().find_map(|o| match o {
        Output::SessionEstablished(n) => Some(&**n),
        _ => None,
    })
}

fn session_down(out: &[Output]) -> Option<&DownReason> {
    out.iter().find_map(|o| match o {
        Output::SessionDown(r) => Some(r),
        _ => None,
    })
}

/// Feed an OPEN on a fresh outbound connection and return the outputs.
fn open_on_fresh_session(config: PeerConfig, open: Open) -> (ConnectionId, Vec<Output>, Fsm) {
    let mut h = Harness::new(config);
    let id = h.start_active();
    h.feed(Input::TcpCrAcked(id));
    let out = h.feed(Input::Message(id, Message::Open(open)));
    (id, out, h.fsm)
}

#[test]
fn starts_idle() {
    let fsm = Fsm::new(config());
    assert_eq!(fsm.state(), State::Idle);
    assert!(fsm.established().is_none());
}

#[test]
fn active_start_connects_and_starts_connect_retry_timer() {
    let mut h = Harness::new(config());
    let out = h.feed(Input::ManualStart { passive: false });
    let id = connect_id(&out).unwrap();
    let retry = timer_started(&out, Timer::ConnectRetry).unwrap();
    assert!(
        retry >= Duration::from_millis(3750) && retry <= Duration::from_secs(5),
        "{retry:?}"
    );
    assert_eq!(h.fsm.state(), State::Connect);
    assert!(out.contains(&Output::StateChanged {
        from: State::Idle,
        to: State::Connect
    }));

    let out = h.feed(Input::TcpCrAcked(id));
    assert_eq!(h.fsm.state(), State::OpenSent);
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
    assert_eq!(
        sent(&out, id),
        vec![&Message::Open(config().open_message())]
    );
}

#[test]
fn open_sent_uses_four_minute_hold_timer() {
    let mut h = Harness::new(config());
    let id = h.start_active();
    let out = h.feed(Input::TcpCrAcked(id));
    assert_eq!(
        timer_started(&out, Timer::Hold(id)),
        Some(Duration::from_secs(240))
    );
}

#[test]
fn outbound_session_reaches_established_with_negotiated_values() {
    let mut h = Harness::new(PeerConfig {
        graceful_restart: Some(GracefulRestartConfig::default()),
        ..config()
    });
    let mut open = peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 30);
    open.capabilities.push(Capability::ExtendedMessage);
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap {
            restart_time: 120,
            ..Default::default()
        }));
    let id = h.start_active();
    h.feed(Input::TcpCrAcked(id));
    let out = h.feed(Input::Message(id, Message::Open(open.clone())));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    assert_eq!(sent(&out, id), vec![&Message::Keepalive]);
    let out = h.feed(Input::Message(id, Message::Keepalive));
    assert_eq!(h.fsm.state(), State::Established);
    let n = negotiated(&out).unwrap();
    assert_eq!(n.connection, id);
    assert_eq!(n.hold_time, Duration::from_secs(30));
    assert_eq!(n.keepalive, Duration::from_secs(10));
    assert_eq!(n.peer_as, PEER_AS);
    assert_eq!(n.peer_router_id, Ipv4Addr::new(192, 0, 2, 2));
    assert!(n.four_octet_as && n.extended_message && n.route_refresh && n.graceful_restart);
    assert!(!n.is_ibgp());
    assert_eq!(
        n.families,
        vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST]
    );
    assert!(n.peer_supports_graceful_restart());
    assert_eq!(n.codec_context().max_message_len(), 65535);
    assert_eq!(n.peer_open, open);
    assert_eq!(h.fsm.established(), Some(n));
}

#[test]
fn peer_without_multiprotocol_capabilities_gets_ipv4_unicast_only() {
    let mut open = default_peer_open();
    open.capabilities
        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
    let mut h = Harness::new(config());
    let (_, out) = h.establish_with(open);
    let n = negotiated(&out).unwrap();
    assert_eq!(n.families, vec![AddressFamily::IPV4_UNICAST]);
    assert!(
        !n.extended_message,
        "the peer did not offer extended messages"
    );
}

#[test]
fn passive_start_waits_in_active_and_accepts_inbound() {
    let mut h = Harness::new(config());
    let out = h.feed(Input::ManualStart { passive: true });
    assert_eq!(connect_id(&out), None);
    assert_eq!(h.fsm.state(), State::Active);
    let id = h.fsm.new_connection_id();
    let out = h.feed(Input::TcpConnectionConfirmed(id));
    assert_eq!(h.fsm.state(), State::OpenSent);
    assert_eq!(
        sent(&out, id),
        vec![&Message::Open(config().open_message())]
    );
    h.feed(Input::Message(id, Message::Open(default_peer_open())));
    h.feed(Input::Message(id, Message::Keepalive));
    assert_eq!(h.fsm.state(), State::Established);
}

#[test]
fn passive_peer_never_connects_out_after_a_failure() {
    let mut h = Harness::new(config());
    h.feed(Input::ManualStart { passive: true });
    let id = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(id));
    let out = h.feed(Input::TcpConnectionFails(id));
    assert_eq!(h.fsm.state(), State::Active);
    assert_eq!(connect_id(&out), None);
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(connect_id(&out), None);
}

#[test]
fn idle_refuses_inbound_connections() {
    let mut h = Harness::new(config());
    let id = h.fsm.new_connection_id();
    let out = h.feed(Input::TcpConnectionConfirmed(id));
    assert_eq!(closed(&out), vec![id]);
    assert!(sent(&out, id).is_empty());
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn hold_time_of_two_seconds_is_rejected_with_2_6() {
    for hold in [1, 2] {
        let open = peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), hold);
        let (id, out, fsm) = open_on_fresh_session(config(), open);
        assert_eq!(sent_notification(&out, id), Some((2, 6)));
        assert_eq!(closed(&out), vec![id]);
        assert_ne!(fsm.state(), State::OpenConfirm);
    }
}

#[test]
fn hold_time_of_three_seconds_is_accepted() {
    let open = peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 3);
    let (id, out, fsm) = open_on_fresh_session(config(), open);
    assert_eq!(sent_notification(&out, id), None);
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(
        timer_started(&out, Timer::Hold(id)),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        timer_started(&out, Timer::Keepalive(id)),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn wrong_peer_as_is_rejected_with_2_2() {
    let open = peer_open(65099, Ipv4Addr::new(192, 0, 2, 2), 90);
    let (id, out, _) = open_on_fresh_session(config(), open);
    assert_eq!(sent_notification(&out, id), Some((2, 2)));
}

#[test]
fn four_octet_peer_as_is_read_from_the_capability_behind_as_trans() {
    let big = 4_200_000_001;
    let cfg = PeerConfig::new(LOCAL_AS, big, local_id());
    let open = peer_open(big, Ipv4Addr::new(192, 0, 2, 2), 90);
    assert_eq!(open.my_as, AS_TRANS);
    let (id, out, fsm) = open_on_fresh_session(cfg.clone(), open.clone());
    assert_eq!(sent_notification(&out, id), None);
    assert_eq!(fsm.state(), State::OpenConfirm);

    // Without the capability the peer is AS 23456, which is not the configured AS.
    let mut open = open;
    open.capabilities
        .retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    let (id, out, _) = open_on_fresh_session(cfg, open);
    assert_eq!(sent_notification(&out, id), Some((2, 2)));
}

#[test]
fn unsupported_version_is_rejected_with_2_1_naming_version_4() {
    let mut open = default_peer_open();
    open.version = 3;
    let (id, out, _) = open_on_fresh_session(config(), open);
    let n = sent(&out, id)
        .into_iter()
        .find_map(|m| match m {
            Message::Notification(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        n,
        Notification {
            code: 2,
            subcode: 1,
            data: vec![0, 4]
        }
    );
}

#[test]
fn zero_bgp_identifier_is_rejected_with_2_3() {
    let open = peer_open(PEER_AS, Ipv4Addr::UNSPECIFIED, 90);
    let (id, out, _) = open_on_fresh_session(config(), open);
    assert_eq!(sent_notification(&out, id), Some((2, 3)));
}

#[test]
fn own_bgp_identifier_is_rejected_from_internal_peer_only() {
    let ibgp = PeerConfig::new(LOCAL_AS, LOCAL_AS, local_id());
    let (id, out, _) = open_on_fresh_session(ibgp, peer_open(LOCAL_AS, local_id(), 90));
    assert_eq!(sent_notification(&out, id), Some((2, 3)));

    // RFC 6286 §2.1: between ASes the identifiers may be equal.
    let (id, out, fsm) = open_on_fresh_session(config(), peer_open(PEER_AS, local_id(), 90));
    assert_eq!(sent_notification(&out, id), None);
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn keepalive_every_third_of_negotiated_hold_time() {
    let mut h = Harness::new(PeerConfig {
        hold_time: 9,
        ..config()
    });
    let (id, out) = h.establish_with(default_peer_open());
    assert_eq!(negotiated(&out).unwrap().hold_time, Duration::from_secs(9));
    assert_eq!(
        timer_started(&out, Timer::Hold(id)),
        Some(Duration::from_secs(9))
    );
    for _ in 0..3 {
        h.advance(Duration::from_secs(3));
        let out = h.feed(Input::TimerExpired(Timer::Keepalive(id)));
        assert_eq!(sent(&out, id), vec![&Message::Keepalive]);
        assert_eq!(
            timer_started(&out, Timer::Keepalive(id)),
            Some(Duration::from_secs(3))
        );
    }
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let open = peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 0);
    let mut h = Harness::new(config());
    let id = h.start_active();
    h.feed(Input::TcpCrAcked(id));
    let out = h.feed(Input::Message(id, Message::Open(open)));
    assert!(out.contains(&Output::StopTimer(Timer::Hold(id))));
    assert_eq!(timer_started(&out, Timer::Keepalive(id)), None);
    let out = h.feed(Input::Message(id, Message::Keepalive));
    assert_eq!(negotiated(&out).unwrap().keepalive, Duration::ZERO);
    assert_eq!(timer_started(&out, Timer::Hold(id)), None);
    let out = h.feed(Input::Message(id, Message::Keepalive));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn received_messages_restart_the_hold_timer() {
    let mut h = Harness::new(config());
    let id = h.establish();
    for message in [
        Message::Keepalive,
        Message::Update(Update::default()),
        Message::RouteRefresh(RouteRefresh {
            family: AddressFamily::IPV4_UNICAST,
        }),
    ] {
        let out = h.feed(Input::Message(id, message));
        assert_eq!(
            timer_started(&out, Timer::Hold(id)),
            Some(Duration::from_secs(90))
        );
    }
}

#[test]
fn hold_timer_expiry_sends_4_0_and_goes_idle() {
    let mut h = Harness::new(config());
    let id = h.establish();
    h.advance(Duration::from_secs(90));
    let out = h.feed(Input::TimerExpired(Timer::Hold(id)));
    assert_eq!(sent_notification(&out, id), Some((4, 0)));
    assert_eq!(closed(&out), vec![id]);
    assert_eq!(session_down(&out), Some(&DownReason::HoldTimerExpired));
    assert!(out.contains(&Output::StopTimer(Timer::Keepalive(id))));
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(
        timer_started(&out, Timer::ConnectRetry).is_some(),
        "restarts by itself"
    );
    assert!(out.contains(&Output::StateChanged {
        from: State::Established,
        to: State::Idle
    }));

    // The automatic restart: Idle → Connect.
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert!(connect_id(&out).is_some());
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn stale_timer_expiries_are_ignored() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::TimerExpired(Timer::Hold(ConnectionId(999))));
    assert!(out.is_empty());
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.fsm.established().unwrap().connection, id);
}

#[test]
fn connect_retry_backs_off_with_jitter() {
    let mut h = Harness::new(config());
    let mut delays = Vec::new();
    let out = h.feed(Input::ManualStart { passive: false });
    let mut id = connect_id(&out).unwrap();
    delays.push(timer_started(&out, Timer::ConnectRetry).unwrap());
    for _ in 0..10 {
        // Connect fails → Active with the timer; the timer → Connect again.
        let out = h.feed(Input::TcpConnectionFails(id));
        assert_eq!(h.fsm.state(), State::Active);
        delays.push(timer_started(&out, Timer::ConnectRetry).unwrap());
        let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
        id = connect_id(&out).unwrap();
        assert_eq!(h.fsm.state(), State::Connect);
    }
    // Base 5 s doubling per failure, capped at 120 s, each jittered into [0.75, 1.0].
    for pair in delays.windows(2) {
        assert!(pair[1] >= pair[0].mul_f64(0.74), "backs off: {delays:?}");
    }
    let max = *delays.iter().max().unwrap();
    assert!(max <= Duration::from_secs(120), "{delays:?}");
    assert!(
        max >= Duration::from_secs(90),
        "reaches the cap: {delays:?}"
    );
    assert!(delays[1] >= Duration::from_millis(3750) && delays[1] <= Duration::from_secs(5));
    assert!(delays[3] >= Duration::from_secs(15) && delays[3] <= Duration::from_secs(20));
    // Jitter: the capped delays are not all equal.
    let capped: Vec<_> = delays
        .iter()
        .filter(|d| **d >= Duration::from_secs(90))
        .collect();
    assert!(capped.windows(2).any(|w| w[0] != w[1]), "{delays:?}");
}

#[test]
fn same_seed_same_outputs() {
    let run = || {
        let mut h = Harness::new(config());
        let id = h.start_active();
        h.feed(Input::TcpConnectionFails(id))
    };
    assert_eq!(run(), run());
    let mut other = Harness::new(PeerConfig {
        jitter_seed: 7,
        ..config()
    });
    let id = other.start_active();
    assert_ne!(run(), other.feed(Input::TcpConnectionFails(id)));
}

#[test]
fn connect_retry_expiry_in_connect_abandons_the_attempt_and_connects_again() {
    let mut h = Harness::new(config());
    let first = h.start_active();
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(closed(&out), vec![first]);
    let second = connect_id(&out).unwrap();
    assert_ne!(first, second);
    // The abandoned connect completing late is closed.
    let out = h.feed(Input::TcpCrAcked(first));
    assert_eq!(closed(&out), vec![first]);
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn backoff_resets_after_session_stays_up() {
    // Sessions that go down after `stay_up`, five times: the retry delays.
    let flap = |stay_up: Duration| {
        let mut h = Harness::new(config());
        let mut delays = Vec::new();
        let (mut id, _) = h.establish_with(default_peer_open());
        for _ in 0..5 {
            h.advance(stay_up);
            let out = h.feed(Input::TcpConnectionFails(id));
            delays.push(timer_started(&out, Timer::ConnectRetry).unwrap());
            let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
            id = connect_id(&out).unwrap();
            h.feed(Input::TcpCrAcked(id));
            h.feed(Input::Message(id, Message::Open(default_peer_open())));
            h.feed(Input::Message(id, Message::Keepalive));
        }
        delays
    };
    let flapping = flap(Duration::from_secs(1));
    assert!(flapping[4] >= Duration::from_secs(60), "{flapping:?}");
    let stable = flap(Duration::from_secs(600));
    assert!(
        stable.iter().all(|d| *d <= Duration::from_secs(5)),
        "{stable:?}"
    );
}

/// Run both connections to OpenSent, then OPENs on both: `first_open_on` gets its OPEN first.
fn collision(
    local: Ipv4Addr,
    remote: Ipv4Addr,
    first_open_on: Direction,
) -> (Fsm, ConnectionId, ConnectionId, Vec<Output>) {
    let mut h = Harness::new(PeerConfig::new(LOCAL_AS, PEER_AS, local));
    let outbound = h.start_active();
    h.feed(Input::TcpCrAcked(outbound));
    let inbound = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(inbound));
    assert_eq!(h.fsm.state(), State::OpenSent);
    let open = Message::Open(peer_open(PEER_AS, remote, 90));
    let (first, second) = match first_open_on {
        Direction::Outbound => (outbound, inbound),
        Direction::Inbound => (inbound, outbound),
    };
    let out = h.feed(Input::Message(first, open.clone()));
    assert_eq!(sent_notification(&out, first), None);
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    let out = h.feed(Input::Message(second, open));
    (h.fsm, outbound, inbound, out)
}

#[test]
fn collision_keeps_connection_of_higher_router_id() {
    for first in [Direction::Outbound, Direction::Inbound] {
        // We have the higher identifier: our outbound connection survives.
        let (mut fsm, outbound, inbound, out) = collision(
            Ipv4Addr::new(192, 0, 2, 9),
            Ipv4Addr::new(192, 0, 2, 2),
            first,
        );
        assert_eq!(sent_notification(&out, inbound), Some((6, 7)), "{first:?}");
        assert_eq!(closed(&out), vec![inbound]);
        assert_eq!(fsm.state(), State::OpenConfirm);
        let out = fsm.handle(Input::Message(outbound, Message::Keepalive), Instant::now());
        assert_eq!(negotiated(&out).unwrap().connection, outbound);

        // The peer has the higher identifier: its connection (our inbound) survives.
        let (mut fsm, outbound, inbound, out) = collision(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            first,
        );
        assert_eq!(sent_notification(&out, outbound), Some((6, 7)), "{first:?}");
        assert_eq!(closed(&out), vec![outbound]);
        let out = fsm.handle(Input::Message(inbound, Message::Keepalive), Instant::now());
        assert_eq!(negotiated(&out).unwrap().connection, inbound);
    }
}

#[test]
fn collision_compares_identifiers_as_unsigned_integers() {
    // 10.0.0.1 > 9.255.255.255 numerically although "1" < "9" as text.
    let (_, _, inbound, out) = collision(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(9, 255, 255, 255),
        Direction::Outbound,
    );
    assert_eq!(closed(&out), vec![inbound]);
}

#[test]
fn collision_with_equal_identifiers_keeps_connection_of_larger_as() {
    // PEER_AS > LOCAL_AS: the connection the peer initiated (our inbound) is preserved.
    let id = Ipv4Addr::new(192, 0, 2, 1);
    let (_, outbound, _, out) = collision(id, id, Direction::Outbound);
    assert_eq!(closed(&out), vec![outbound]);
}

#[test]
fn establishing_closes_the_other_connection() {
    let mut h = Harness::new(config());
    let outbound = h.start_active();
    h.feed(Input::TcpCrAcked(outbound));
    let inbound = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(inbound));
    h.feed(Input::Message(outbound, Message::Open(default_peer_open())));
    let out = h.feed(Input::Message(outbound, Message::Keepalive));
    assert_eq!(sent_notification(&out, inbound), Some((6, 7)));
    assert_eq!(closed(&out), vec![inbound]);
    assert_eq!(negotiated(&out).unwrap().connection, outbound);
}

#[test]
fn inbound_open_while_established_is_closed_with_cease_7_without_graceful_restart() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let new = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(new));
    let out = h.feed(Input::Message(new, Message::Open(default_peer_open())));
    assert_eq!(sent_notification(&out, new), Some((6, 7)));
    assert_eq!(closed(&out), vec![new]);
    assert_eq!(h.fsm.established().unwrap().connection, id);
}

#[test]
fn new_session_replaces_the_established_one_when_graceful_restart_was_negotiated_both_ways() {
    let mut open = default_peer_open();
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap {
            restart_time: 120,
            ..Default::default()
        }));
    let mut h = Harness::new(PeerConfig {
        graceful_restart: Some(GracefulRestartConfig::default()),
        ..config()
    });
    let (old, _) = h.establish_with(open.clone());
    let new = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(new));
    let out = h.feed(Input::Message(new, Message::Open(open)));
    assert_eq!(closed(&out), vec![old]);
    assert_eq!(sent_notification(&out, old), None);
    assert_eq!(session_down(&out), Some(&DownReason::PeerRestarted));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    let out = h.feed(Input::Message(new, Message::Keepalive));
    assert_eq!(negotiated(&out).unwrap().connection, new);
}

#[test]
fn manual_stop_sends_administrative_shutdown_with_message() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::ManualStop {
        reason: Some("maintenance: node drained".into()),
    });
    let n = match sent(&out, id).as_slice() {
        [Message::Notification(n)] => n.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(
        shutdown_communication(&n).as_deref(),
        Some("maintenance: node drained")
    );
    assert_eq!(closed(&out), vec![id]);
    assert_eq!(session_down(&out), Some(&DownReason::ManualStop));
    assert_eq!(h.fsm.state(), State::Idle);
    // Stays down: no automatic restart.
    assert_eq!(timer_started(&out, Timer::ConnectRetry), None);
    assert!(h.feed(Input::TimerExpired(Timer::ConnectRetry)).is_empty());
}

#[test]
fn shutdown_communication_is_cut_to_255_octets_at_a_character_boundary() {
    let long = "é".repeat(200); // 400 octets
    let n = administrative_shutdown(Some(&long));
    assert_eq!(n.data[0], 254);
    assert_eq!(n.data.len(), 255);
    assert_eq!(shutdown_communication(&n).unwrap(), "é".repeat(127));
    assert!(administrative_shutdown(None).data.is_empty());
}

#[test]
fn graceful_stop_closes_without_notification() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::GracefulStop);
    assert!(sent(&out, id).is_empty());
    assert_eq!(closed(&out), vec![id]);
    assert_eq!(session_down(&out), Some(&DownReason::GracefulStop));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn manual_start_after_manual_stop_starts_again() {
    let mut h = Harness::new(config());
    h.establish();
    h.feed(Input::ManualStop { reason: None });
    let id = h.start_active();
    assert_eq!(h.fsm.state(), State::Connect);
    h.feed(Input::TcpCrAcked(id));
    assert_eq!(h.fsm.state(), State::OpenSent);
}

#[test]
fn automatic_stop_sends_cease_and_restarts_later() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::AutomaticStop);
    assert_eq!(sent_notification(&out, id), Some((6, 0)));
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(timer_started(&out, Timer::ConnectRetry).is_some());
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert!(connect_id(&out).is_some());
}

#[test]
fn notification_received_goes_idle_and_restarts_after_backoff() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let cease = administrative_shutdown(Some("bye"));
    let out = h.feed(Input::Message(id, Message::Notification(cease.clone())));
    assert_eq!(sent(&out, id), Vec::<&Message>::new());
    assert_eq!(
        session_down(&out),
        Some(&DownReason::NotificationReceived(cease.clone()))
    );
    assert_eq!(
        DownReason::NotificationReceived(cease).to_string(),
        "NOTIFICATION 6/2 received: \"bye\""
    );
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(timer_started(&out, Timer::ConnectRetry).is_some());
    // The peer connecting again during the back-off is accepted.
    let inbound = h.fsm.new_connection_id();
    let out = h.feed(Input::TcpConnectionConfirmed(inbound));
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
    assert!(closed(&out).is_empty());
    assert_eq!(h.fsm.state(), State::OpenSent);
    h.feed(Input::Message(inbound, Message::Open(default_peer_open())));
    h.feed(Input::Message(inbound, Message::Keepalive));
    assert_eq!(h.fsm.state(), State::Established);
}

#[test]
fn tcp_failure_while_established_reports_session_down() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::TcpConnectionFails(id));
    assert_eq!(session_down(&out), Some(&DownReason::ConnectionClosed));
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(h.fsm.established().is_none());
}

#[test]
fn update_in_open_confirm_is_fsm_error_5_2() {
    let (id, _, mut fsm) = open_on_fresh_session(config(), default_peer_open());
    let out = fsm.handle(
        Input::Message(id, Message::Update(Update::default())),
        Instant::now(),
    );
    assert_eq!(sent_notification(&out, id), Some((5, 2)));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn keepalive_in_open_sent_is_fsm_error_5_1() {
    let mut h = Harness::new(config());
    let id = h.start_active();
    h.feed(Input::TcpCrAcked(id));
    let out = h.feed(Input::Message(id, Message::Keepalive));
    assert_eq!(sent_notification(&out, id), Some((5, 1)));
    // OpenSent falls back to Active, which retries.
    assert_eq!(h.fsm.state(), State::Active);
    assert!(timer_started(&out, Timer::ConnectRetry).is_some());
}

#[test]
fn open_in_established_is_fsm_error_5_3() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::Message(id, Message::Open(default_peer_open())));
    assert_eq!(sent_notification(&out, id), Some((5, 3)));
}

#[test]
fn updates_are_passed_on_in_established() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let update = Update {
        withdrawn: vec!["203.0.113.0/24".parse().unwrap()],
        ..Default::default()
    };
    let out = h.feed(Input::Message(id, Message::Update(update.clone())));
    assert!(out.contains(&Output::UpdateReceived(update)));
}

#[test]
fn route_refresh_for_negotiated_family_is_reported_others_ignored() {
    let mut open = default_peer_open();
    open.capabilities
        .retain(|c| *c != Capability::Multiprotocol(AddressFamily::IPV6_UNICAST));
    let mut h = Harness::new(config());
    let (id, _) = h.establish_with(open);
    let v4 = AddressFamily::IPV4_UNICAST;
    let out = h.feed(Input::Message(
        id,
        Message::RouteRefresh(RouteRefresh { family: v4 }),
    ));
    assert!(out.contains(&Output::RouteRefreshRequested(v4)));
    let v6 = AddressFamily::IPV6_UNICAST;
    let out = h.feed(Input::Message(
        id,
        Message::RouteRefresh(RouteRefresh { family: v6 }),
    ));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::RouteRefreshRequested(_)))
    );
}

#[test]
fn decode_error_sends_the_given_notification() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let n = Notification {
        code: 3,
        subcode: 1,
        data: vec![],
    };
    let out = h.feed(Input::DecodeError(id, n.clone()));
    assert_eq!(sent(&out, id), vec![&Message::Notification(n.clone())]);
    assert_eq!(session_down(&out), Some(&DownReason::NotificationSent(n)));
}

#[test]
fn restarting_flag_sets_r_bit_until_established() {
    let cfg = PeerConfig {
        graceful_restart: Some(GracefulRestartConfig {
            restarting: true,
            ..Default::default()
        }),
        ..config()
    };
    let gr = |open: &Open| {
        open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr.clone()),
            _ => None,
        })
    };
    let mut h = Harness::new(cfg);
    let id = h.start_active();
    let out = h.feed(Input::TcpCrAcked(id));
    let Message::Open(open) = sent(&out, id)[0] else {
        panic!()
    };
    let cap = gr(open).unwrap();
    assert!(cap.restart_state);
    assert_eq!(cap.restart_time, 120);
    assert!(cap.families.iter().all(|f| f.forwarding_preserved));
    assert_eq!(cap.families.len(), 2);
    h.feed(Input::Message(id, Message::Open(default_peer_open())));
    h.feed(Input::Message(id, Message::Keepalive));
    // The next session after a reconnect is not a restart.
    let out = h.feed(Input::TcpConnectionFails(id));
    assert!(timer_started(&out, Timer::ConnectRetry).is_some());
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    let id = connect_id(&out).unwrap();
    let out = h.feed(Input::TcpCrAcked(id));
    let Message::Open(open) = sent(&out, id)[0] else {
        panic!()
    };
    assert!(!gr(open).unwrap().restart_state);
}

#[test]
fn open_message_carries_as_trans_and_capabilities() {
    let cfg = PeerConfig::new(4_200_000_000, PEER_AS, local_id());
    let open = cfg.open_message();
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
    assert_eq!(open.version, 4);
    assert_eq!(open.hold_time, 90);
    assert!(open.capabilities.contains(&Capability::RouteRefresh));
    assert!(open.capabilities.contains(&Capability::ExtendedMessage));
    assert!(
        open.capabilities
            .contains(&Capability::Multiprotocol(AddressFamily::IPV6_UNICAST))
    );
    assert!(
        !open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart(_)))
    );
    assert_eq!(config().open_message().my_as, 65001);
}

#[test]
fn config_validation_cites_rfc_bounds() {
    assert_eq!(config().validate(), Ok(()));
    assert_eq!(
        PeerConfig {
            hold_time: 2,
            ..config()
        }
        .validate(),
        Err(ConfigError::HoldTime(2))
    );
    assert_eq!(
        PeerConfig {
            hold_time: 0,
            ..config()
        }
        .validate(),
        Ok(())
    );
    assert_eq!(
        PeerConfig::new(1, 2, Ipv4Addr::UNSPECIFIED).validate(),
        Err(ConfigError::ZeroRouterId)
    );
    assert_eq!(
        PeerConfig::new(0, 2, local_id()).validate(),
        Err(ConfigError::ZeroAs)
    );
    let gr = GracefulRestartConfig {
        restart_time: 4096,
        ..Default::default()
    };
    assert_eq!(
        PeerConfig {
            graceful_restart: Some(gr),
            ..config()
        }
        .validate(),
        Err(ConfigError::RestartTime(4096))
    );
    assert_eq!(
        PeerConfig {
            families: vec![],
            ..config()
        }
        .validate(),
        Err(ConfigError::NoFamily)
    );
}

#[test]
fn pending_connect_is_bounded_again_when_the_inbound_connection_drops() {
    let mut h = Harness::new(config());
    let outbound = h.start_active();
    let inbound = h.fsm.new_connection_id();
    let out = h.feed(Input::TcpConnectionConfirmed(inbound));
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
    let out = h.feed(Input::TcpConnectionFails(inbound));
    assert_eq!(h.fsm.state(), State::Connect);
    assert!(timer_started(&out, Timer::ConnectRetry).is_some());
    let out = h.feed(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(closed(&out), vec![outbound]);
    assert!(connect_id(&out).is_some());
}

#[test]
fn negotiated_lists_the_peer_graceful_restart_families() {
    let mut open = default_peer_open();
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap {
            restart_time: 90,
            families: vec![GracefulRestartFamily {
                family: AddressFamily::IPV4_UNICAST,
                forwarding_preserved: true,
            }],
            ..Default::default()
        }));
    let mut h = Harness::new(config());
    let (_, out) = h.establish_with(open);
    let n = negotiated(&out).unwrap();
    assert!(
        n.peer_graceful_restart_family(AddressFamily::IPV4_UNICAST)
            .unwrap()
            .forwarding_preserved
    );
    assert!(
        n.peer_graceful_restart_family(AddressFamily::IPV6_UNICAST)
            .is_none()
    );
    // We did not advertise graceful restart, so it is not negotiated.
    assert!(!n.graceful_restart);
}

// ---- property: any sequence of inputs keeps the FSM consistent and never panics ----

mod random_inputs {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Action {
        Start(bool),
        Stop,
        GracefulStop,
        AutomaticStop,
        Acked(usize),
        Inbound,
        Fails(usize),
        Open(usize, u8),
        Keepalive(usize),
        Update(usize),
        Notification(usize),
        RouteRefresh(usize),
        DecodeError(usize),
        ConnectRetry,
        Hold(usize),
        KeepaliveTimer(usize),
        Wait(u16),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            any::<bool>().prop_map(Action::Start),
            Just(Action::Stop),
            Just(Action::GracefulStop),
            Just(Action::AutomaticStop),
            (0..4usize).prop_map(Action::Acked),
            Just(Action::Inbound),
            (0..4usize).prop_map(Action::Fails),
            (0..4usize, 0..6u8).prop_map(|(c, v)| Action::Open(c, v)),
            (0..4usize).prop_map(Action::Keepalive),
            (0..4usize).prop_map(Action::Update),
            (0..4usize).prop_map(Action::Notification),
            (0..4usize).prop_map(Action::RouteRefresh),
            (0..4usize).prop_map(Action::DecodeError),
            Just(Action::ConnectRetry),
            (0..4usize).prop_map(Action::Hold),
            (0..4usize).prop_map(Action::KeepaliveTimer),
            (0..600u16).prop_map(Action::Wait),
        ]
    }

    /// OPEN variants: good ones from two identifiers (to collide) and some bad ones.
    fn open(variant: u8) -> Open {
        match variant {
            0 => peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 90),
            1 => peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 0), 3),
            2 => {
                let mut o = peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 9), 0);
                o.capabilities
                    .push(Capability::GracefulRestart(GracefulRestartCap::default()));
                o
            }
            3 => peer_open(PEER_AS, Ipv4Addr::new(192, 0, 2, 2), 2),
            4 => peer_open(65099, Ipv4Addr::new(192, 0, 2, 2), 90),
            _ => peer_open(PEER_AS, Ipv4Addr::UNSPECIFIED, 90),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn outputs_stay_consistent(actions in prop::collection::vec(action(), 1..60)) {
            let mut h = Harness::new(PeerConfig {
                graceful_restart: Some(GracefulRestartConfig::default()),
                ..config()
            });
            let mut seen: Vec<ConnectionId> = Vec::new();
            // Connections the task holds: connecting (Connect issued) and open (TCP up).
            let mut connecting: BTreeSet<ConnectionId> = BTreeSet::new();
            let mut open_conns: BTreeSet<ConnectionId> = BTreeSet::new();
            let mut sessions_up = 0i32;
            let mut stopped = true;
            let pick = |seen: &Vec<ConnectionId>, i: usize| {
                if seen.is_empty() { ConnectionId(999) } else { seen[i % seen.len()] }
            };
            for action in actions {
                let input = match action {
                    Action::Start(passive) => Input::ManualStart { passive },
                    Action::Stop => Input::ManualStop { reason: Some("test".into()) },
                    Action::GracefulStop => Input::GracefulStop,
                    Action::AutomaticStop => Input::AutomaticStop,
                    Action::Acked(i) => {
                        let id = pick(&seen, i);
                        // A task reports only connects it has in flight.
                        if !connecting.remove(&id) {
                            continue;
                        }
                        open_conns.insert(id);
                        Input::TcpCrAcked(id)
                    }
                    Action::Inbound => {
                        let id = h.fsm.new_connection_id();
                        seen.push(id);
                        open_conns.insert(id);
                        Input::TcpConnectionConfirmed(id)
                    }
                    Action::Fails(i) => {
                        let id = pick(&seen, i);
                        connecting.remove(&id);
                        open_conns.remove(&id);
                        Input::TcpConnectionFails(id)
                    }
                    Action::Open(i, v) => Input::Message(pick(&seen, i), Message::Open(open(v))),
                    Action::Keepalive(i) => Input::Message(pick(&seen, i), Message::Keepalive),
                    Action::Update(i) => {
                        Input::Message(pick(&seen, i), Message::Update(Update::default()))
                    }
                    Action::Notification(i) => Input::Message(
                        pick(&seen, i),
                        Message::Notification(Notification::cease(2)),
                    ),
                    Action::RouteRefresh(i) => Input::Message(
                        pick(&seen, i),
                        Message::RouteRefresh(RouteRefresh { family: AddressFamily::IPV6_UNICAST }),
                    ),
                    Action::DecodeError(i) => {
                        Input::DecodeError(pick(&seen, i), Notification::new(1, 2, vec![0, 18]))
                    }
                    Action::ConnectRetry => Input::TimerExpired(Timer::ConnectRetry),
                    Action::Hold(i) => Input::TimerExpired(Timer::Hold(pick(&seen, i))),
                    Action::KeepaliveTimer(i) => {
                        Input::TimerExpired(Timer::Keepalive(pick(&seen, i)))
                    }
                    Action::Wait(s) => {
                        h.advance(Duration::from_secs(u64::from(s)));
                        continue;
                    }
                };
                let is_message = matches!(input, Input::Message(..));
                let target = match &input {
                    Input::Message(id, _) => Some(*id),
                    _ => None,
                };
                // Messages only arrive on connections that are open.
                if is_message && !target.is_some_and(|id| open_conns.contains(&id)) {
                    continue;
                }
                let stop_input = matches!(input, Input::ManualStop { .. } | Input::GracefulStop);
                let start_input = matches!(input, Input::ManualStart { .. });
                let out = h.feed(input);
                if stop_input {
                    stopped = true;
                }
                if start_input {
                    stopped = false;
                }
                // Only ManualStart leaves a ManualStop: nothing restarts by itself.
                if stopped {
                    prop_assert_eq!(h.fsm.state(), State::Idle, "{:?}", out);
                    prop_assert!(!out.iter().any(|o| matches!(o, Output::Connect(_))));
                }
                for o in &out {
                    match o {
                        Output::Connect(id) => {
                            prop_assert!(!seen.contains(id), "fresh id");
                            seen.push(*id);
                            connecting.insert(*id);
                        }
                        Output::Send { connection, .. } => {
                            prop_assert!(open_conns.contains(connection), "send on {connection}: {out:?}");
                        }
                        Output::CloseConnection { connection, .. } => {
                            connecting.remove(connection);
                            open_conns.remove(connection);
                        }
                        Output::StartTimer { timer: Timer::Hold(id) | Timer::Keepalive(id), .. } => {
                            prop_assert!(h.fsm.connection(*id).is_some(), "timer for a dead {id}");
                        }
                        Output::SessionEstablished(_) => sessions_up += 1,
                        Output::SessionDown(_) => sessions_up -= 1,
                        _ => {}
                    }
                }
                prop_assert!((0..=1).contains(&sessions_up), "{out:?}");
                prop_assert_eq!(sessions_up == 1, h.fsm.state() == State::Established);
                prop_assert_eq!(h.fsm.established().is_some(), h.fsm.state() == State::Established);
                prop_assert!(h.fsm.connections.len() <= 3);
                // Every connection the FSM tracks is one the task holds.
                for c in &h.fsm.connections {
                    let held = if c.state == ConnState::Connecting {
                        connecting.contains(&c.id)
                    } else {
                        open_conns.contains(&c.id)
                    };
                    prop_assert!(held, "{:?} not held by the task", c.id);
                }
                if h.fsm.state() == State::Idle {
                    prop_assert!(h.fsm.connections.is_empty());
                }
            }
        }
    }
}

/// Two FSMs wired back to back through the codec: the handshake works on real bytes.
#[test]
fn two_speakers_establish_over_encoded_bytes_and_exchange_routes() {
    use bytes::BytesMut;

    use crate::bgp::codec;
    use crate::bgp::rib::{AdjRibOut, ExportPolicy, Route, RouteSet};

    let now = Instant::now();
    let mut a = Fsm::new(PeerConfig {
        graceful_restart: Some(GracefulRestartConfig::default()),
        ..PeerConfig::new(LOCAL_AS, PEER_AS, local_id())
    });
    let mut b = Fsm::new(PeerConfig::new(
        PEER_AS,
        LOCAL_AS,
        Ipv4Addr::new(192, 0, 2, 2),
    ));
    b.handle(Input::ManualStart { passive: true }, now);
    let out = a.handle(Input::ManualStart { passive: false }, now);
    let a_conn = connect_id(&out).unwrap();
    let b_conn = b.new_connection_id();
    let mut to_b: Vec<Output> = b.handle(Input::TcpConnectionConfirmed(b_conn), now);
    let mut to_a: Vec<Output> = a.handle(Input::TcpCrAcked(a_conn), now);
    // `to_x` holds the outputs of the *other* side that may carry messages for x.
    std::mem::swap(&mut to_a, &mut to_b);
    let mut a_up = None;
    let mut b_up = None;
    let mut received = Vec::new();
    for _ in 0..10 {
        let mut next_to_a = Vec::new();
        let mut next_to_b = Vec::new();
        for (outputs, fsm, conn, up, next) in [
            (&to_b, &mut b, b_conn, &mut b_up, &mut next_to_a),
            (&to_a, &mut a, a_conn, &mut a_up, &mut next_to_b),
        ] {
            for o in outputs.iter() {
                match o {
                    Output::Send { message, .. } => {
                        let mut buf = BytesMut::new();
                        codec::encode(message, &Default::default(), &mut buf).unwrap();
                        let decoded = codec::decode(&buf, &Default::default()).unwrap();
                        for o in fsm.handle(Input::Message(conn, decoded.message), now) {
                            match &o {
                                Output::SessionEstablished(n) => *up = Some((**n).clone()),
                                Output::UpdateReceived(u) => received.push(u.clone()),
                                _ => {}
                            }
                            next.push(o);
                        }
                    }
                    Output::CloseConnection { .. } => panic!("closed: {o:?}"),
                    _ => {}
                }
            }
        }
        to_a = next_to_a;
        to_b = next_to_b;
    }
    let (a_n, b_n) = (a_up.expect("A established"), b_up.expect("B established"));
    assert_eq!(a.state(), State::Established);
    assert_eq!(b.state(), State::Established);
    assert_eq!(a_n.hold_time, b_n.hold_time);
    assert_eq!(a_n.peer_router_id, Ipv4Addr::new(192, 0, 2, 2));
    assert!(b_n.peer_supports_graceful_restart() && !a_n.peer_supports_graceful_restart());

    // A announces through its Adj-RIB-Out; B reads the UPDATEs off the wire.
    let mut rib = AdjRibOut::new(ExportPolicy::from_negotiated(&a_n, None));
    let route = Route::new(
        "203.0.113.0/24".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
    );
    let (updates, _) = rib.initial_sync(RouteSet::from([(route.prefix, route)]));
    let ctx = a_n.codec_context();
    for u in updates {
        let mut buf = BytesMut::new();
        codec::encode(&Message::Update(u), &ctx, &mut buf).unwrap();
        let decoded = codec::decode(&buf, &b_n.codec_context()).unwrap();
        for o in b.handle(Input::Message(b_conn, decoded.message), now) {
            if let Output::UpdateReceived(u) = o {
                received.push(u);
            }
        }
    }
    let prefixes: Vec<_> = received
        .iter()
        .flat_map(|u| u.announced().copied())
        .collect();
    assert_eq!(prefixes, vec!["203.0.113.0/24".parse().unwrap()]);
    let eors: Vec<_> = received
        .iter()
        .filter_map(Update::end_of_rib_family)
        .collect();
    assert_eq!(
        eors,
        vec![AddressFamily::IPV4_UNICAST, AddressFamily::IPV6_UNICAST]
    );
}

#[test]
fn stops_are_ignored_while_stopped() {
    let mut h = Harness::new(config());
    assert!(h.feed(Input::AutomaticStop).is_empty());
    assert!(h.feed(Input::GracefulStop).is_empty());
    assert!(h.feed(Input::ManualStop { reason: None }).is_empty());
    assert!(h.feed(Input::TimerExpired(Timer::ConnectRetry)).is_empty());
    assert_eq!(h.fsm.state(), State::Idle);
}

fn graceful_restart_open() -> Open {
    let mut open = default_peer_open();
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap {
            restart_time: 120,
            ..Default::default()
        }));
    open
}

#[test]
fn late_colliding_open_from_a_graceful_restart_peer_does_not_replace_a_session_without_it() {
    // FRR and NX-OS advertise graceful restart by default; we did not: RFC 4271 §6.8 applies
    // and the fresh Established session stays.
    let mut h = Harness::new(config());
    let (id, _) = h.establish_with(graceful_restart_open());
    let new = h.fsm.new_connection_id();
    h.feed(Input::TcpConnectionConfirmed(new));
    let out = h.feed(Input::Message(new, Message::Open(graceful_restart_open())));
    assert_eq!(sent_notification(&out, new), Some((6, 7)));
    assert_eq!(closed(&out), vec![new]);
    assert_eq!(session_down(&out), None);
    assert_eq!(h.fsm.established().unwrap().connection, id);
}

#[test]
fn restart_time_zero_is_refused_with_graceful_restart() {
    let gr = GracefulRestartConfig {
        restart_time: 0,
        ..Default::default()
    };
    assert_eq!(
        PeerConfig {
            graceful_restart: Some(gr),
            ..config()
        }
        .validate(),
        Err(ConfigError::RestartTime(0))
    );
}

#[test]
fn send_hold_timer_expiry_sends_8_0_and_closes() {
    let mut h = Harness::new(config());
    let id = h.establish();
    let out = h.feed(Input::TimerExpired(Timer::SendHold(id)));
    assert_eq!(sent_notification(&out, id), Some((8, 0)));
    assert_eq!(closed(&out), vec![id]);
    assert_eq!(session_down(&out), Some(&DownReason::SendHoldTimerExpired));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn send_hold_time_defaults_to_eight_minutes_or_twice_the_hold_time() {
    let c = config();
    assert_eq!(
        c.send_hold_time_for(Duration::from_secs(90)),
        Duration::from_secs(480)
    );
    assert_eq!(
        c.send_hold_time_for(Duration::from_secs(300)),
        Duration::from_secs(600)
    );
    let set = PeerConfig {
        send_hold_time: Some(Duration::from_secs(3)),
        ..config()
    };
    assert_eq!(
        set.send_hold_time_for(Duration::from_secs(90)),
        Duration::from_secs(3)
    );
    let zero = PeerConfig {
        send_hold_time: Some(Duration::ZERO),
        ..config()
    };
    assert_eq!(zero.validate(), Err(ConfigError::SendHoldTime));
}
