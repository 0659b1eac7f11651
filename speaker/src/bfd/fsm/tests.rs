use proptest::prelude::*;

use super::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn params(tx: u64, rx: u64, mult: u8) -> Parameters {
    Parameters {
        desired_min_tx: MS(tx),
        required_min_rx: MS(rx),
        detect_mult: mult,
    }
}

fn sent(out: &[Output]) -> Vec<&ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn armed(out: &[Output], timer: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::ArmTimer { timer: t, after } if *t == timer => Some(*after),
        _ => None,
    })
}

fn changes(out: &[Output]) -> Vec<(SessionState, SessionState)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StateChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

/// A packet from the remote (discriminator 99) in `state`, addressed to `to`.
fn remote(state: SessionState, to: u32, tx: u64, rx: u64) -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 99,
        your_discriminator: to,
        desired_min_tx_interval: (tx * 1000) as u32,
        required_min_rx_interval: (rx * 1000) as u32,
        required_min_echo_rx_interval: 0,
        authentication: None,
    }
}

/// Two sessions wired back to back: every packet one sends is received by the other, and
/// the transmit timers fire in turn, until both are Up and no Poll is pending.
fn handshake(a: &mut Session, b: &mut Session) -> Vec<(SessionState, SessionState)> {
    let mut trans = Vec::new();
    let mut to_b: Vec<ControlPacket> = sent(&a.start(0)).into_iter().cloned().collect();
    let mut to_a: Vec<ControlPacket> = sent(&b.start(0)).into_iter().cloned().collect();
    for _ in 0..20 {
        for p in std::mem::take(&mut to_b) {
            let out = b.handle(Input::Received(p), 0);
            to_a.extend(sent(&out).into_iter().cloned());
        }
        for p in std::mem::take(&mut to_a) {
            let out = a.handle(Input::Received(p), 0);
            trans.extend(changes(&out));
            to_b.extend(sent(&out).into_iter().cloned());
        }
        if a.state() == SessionState::Up
            && b.state() == SessionState::Up
            && !a.poll_in_progress()
            && !b.poll_in_progress()
        {
            return trans;
        }
        to_b.extend(
            sent(&a.handle(Input::TimerExpired(Timer::Transmit), 0))
                .into_iter()
                .cloned(),
        );
        to_a.extend(
            sent(&b.handle(Input::TimerExpired(Timer::Transmit), 0))
                .into_iter()
                .cloned(),
        );
    }
    panic!("no Up: a {:?}, b {:?}", a, b);
}

#[test]
fn two_sessions_come_up_through_init_and_settle_on_the_negotiated_timers() {
    let mut a = Session::new(1, params(300, 300, 3), false);
    let mut b = Session::new(2, params(100, 500, 5), false);
    let trans = handshake(&mut a, &mut b);
    assert_eq!(
        trans,
        [
            (SessionState::Down, SessionState::Init),
            (SessionState::Init, SessionState::Up)
        ]
    );
    // a sends every max(300, b's 500 rx) ms; b is declared down after b's mult 5 × max(a's
    // 300 rx, b's 100 tx).
    assert_eq!(
        a.negotiated(),
        Negotiated {
            transmit_interval: Some(MS(500)),
            detection_time: Some(MS(1500)),
        }
    );
    assert_eq!(
        b.negotiated(),
        Negotiated {
            transmit_interval: Some(MS(300)),
            detection_time: Some(MS(3 * 500)),
        }
    );
}

#[test]
fn sends_at_least_one_second_apart_while_not_up() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    let out = s.start(0);
    assert_eq!(sent(&out)[0].desired_min_tx_interval, 1_000_000);
    assert_eq!(sent(&out)[0].state, SessionState::Down);
    // Remote's Required Min RX of 1 µs: our own slow TX decides, at most 25 % jitter.
    assert_eq!(armed(&out, Timer::Transmit), Some(MS(750)));
    let out = s.handle(
        Input::Received(remote(SessionState::Down, 0, 1000, 300)),
        25,
    );
    assert_eq!(changes(&out), [(SessionState::Down, SessionState::Init)]);
    assert_eq!(s.packet().desired_min_tx_interval, 1_000_000);
}

#[test]
fn reaching_up_polls_for_the_fast_interval_and_the_final_ends_the_poll() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    s.start(0);
    let out = s.handle(Input::Received(remote(SessionState::Init, 1, 1000, 300)), 0);
    assert_eq!(changes(&out), [(SessionState::Down, SessionState::Up)]);
    assert!(s.poll_in_progress());
    let p = s.packet();
    assert!(p.poll && !p.final_);
    assert_eq!(p.desired_min_tx_interval, 300_000);
    // A faster TX applies at once (§6.8.3 only holds back increases).
    assert_eq!(s.negotiated().transmit_interval, Some(MS(300)));
    let mut fin = remote(SessionState::Up, 1, 300, 300);
    fin.final_ = true;
    let out = s.handle(Input::Received(fin), 0);
    assert!(out.contains(&Output::PollCompleted));
    assert!(!s.packet().poll);
    assert_eq!(s.negotiated().detection_time, Some(MS(900)));
}

#[test]
fn answers_a_poll_with_a_final_at_once() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    let mut p = remote(SessionState::Down, 0, 1000, 300);
    p.poll = true;
    let out = s.handle(Input::Received(p), 0);
    let sent = sent(&out);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].final_ && !sent[0].poll);
    assert_eq!(sent[0].your_discriminator, 99);
    // The next periodic packet has no Final.
    assert!(!s.packet().final_);
}

fn up_session() -> Session {
    let mut s = Session::new(1, params(300, 300, 3), false);
    let mut b = Session::new(2, params(300, 300, 3), false);
    handshake(&mut s, &mut b);
    s
}

#[test]
fn detection_time_expiry_goes_down_with_diagnostic_1_and_forgets_the_remote() {
    let mut s = up_session();
    let out = s.handle(Input::TimerExpired(Timer::Detection), 0);
    assert_eq!(
        out,
        [Output::StateChanged {
            from: SessionState::Up,
            to: SessionState::Down,
            diagnostic: Diagnostic::ControlDetectionTimeExpired
        }]
    );
    assert_eq!(s.remote_discriminator(), 0);
    let p = s.packet();
    assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(p.desired_min_tx_interval, 1_000_000, "slow TX again");
}

#[test]
fn detection_time_is_remote_mult_times_the_slower_of_our_rx_and_its_tx() {
    let mut s = Session::new(1, params(300, 200, 3), false);
    let mut p = remote(SessionState::Down, 0, 700, 300);
    p.detect_mult = 4;
    let out = s.handle(Input::Received(p), 0);
    assert_eq!(armed(&out, Timer::Detection), Some(MS(2800)));
}

#[test]
fn a_remote_required_min_rx_of_zero_stops_periodic_transmission() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    s.start(0);
    let out = s.handle(Input::Received(remote(SessionState::Down, 0, 1000, 0)), 0);
    assert!(
        out.contains(&Output::StopTimer(Timer::Transmit)) || armed(&out, Timer::Transmit).is_none()
    );
    let out = s.handle(Input::TimerExpired(Timer::Transmit), 0);
    assert!(out.contains(&Output::StopTimer(Timer::Transmit)));
    assert_eq!(armed(&out, Timer::Transmit), None);
}

#[test]
fn jitter_is_75_to_100_percent_and_75_to_90_for_detect_mult_1() {
    let i = MS(1000);
    assert_eq!(jittered(i, 3, 0), MS(750));
    assert_eq!(jittered(i, 3, 25), MS(1000));
    assert_eq!(jittered(i, 3, 26), MS(750));
    assert_eq!(jittered(i, 1, 15), MS(900));
    assert_eq!(jittered(i, 1, 16), MS(750));
}

#[test]
fn a_passive_session_stays_silent_until_the_remote_speaks() {
    let mut s = Session::new(1, params(300, 300, 3), true);
    let out = s.start(0);
    assert!(sent(&out).is_empty());
    assert!(sent(&s.handle(Input::TimerExpired(Timer::Transmit), 0)).is_empty());
    let out = s.handle(Input::Received(remote(SessionState::Down, 0, 1000, 300)), 0);
    let sent = sent(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state, SessionState::Init);
    assert!(armed(&out, Timer::Transmit).is_some());
}

#[test]
fn admin_down_is_sent_and_ignores_packets_until_admin_up() {
    let mut s = up_session();
    let out = s.handle(Input::AdminDown, 0);
    assert_eq!(changes(&out), [(SessionState::Up, SessionState::AdminDown)]);
    assert!(out.contains(&Output::StopTimer(Timer::Detection)));
    assert_eq!(sent(&out)[0].state, SessionState::AdminDown);
    assert_eq!(sent(&out)[0].diagnostic, Diagnostic::AdministrativelyDown);
    let out = s.handle(Input::Received(remote(SessionState::Up, 1, 300, 300)), 0);
    assert!(out.contains(&Output::Discarded(DiscardReason::LocalAdminDown)));
    assert_eq!(s.state(), SessionState::AdminDown);
    let out = s.handle(Input::AdminUp, 0);
    assert_eq!(
        changes(&out),
        [(SessionState::AdminDown, SessionState::Down)]
    );
}

#[test]
fn a_remote_admin_down_takes_us_down_with_diagnostic_3() {
    let mut s = up_session();
    let out = s.handle(
        Input::Received(remote(SessionState::AdminDown, 1, 1000, 300)),
        0,
    );
    assert_eq!(
        out.iter()
            .find(|o| matches!(o, Output::StateChanged { .. })),
        Some(&Output::StateChanged {
            from: SessionState::Up,
            to: SessionState::Down,
            diagnostic: Diagnostic::NeighborSignaledSessionDown
        })
    );
}

#[test]
fn a_slower_tx_and_a_faster_rx_wait_for_the_final_without_a_flap() {
    let mut s = up_session();
    let out = s.handle(Input::ChangeParameters(params(600, 100, 3)), 0);
    assert!(changes(&out).is_empty());
    assert!(s.poll_in_progress());
    let p = s.packet();
    assert!(p.poll);
    assert_eq!(
        (p.desired_min_tx_interval, p.required_min_rx_interval),
        (600_000, 100_000)
    );
    // Still the old 300 ms: the remote has not confirmed yet.
    assert_eq!(
        s.negotiated(),
        Negotiated {
            transmit_interval: Some(MS(300)),
            detection_time: Some(MS(900)),
        }
    );
    let mut fin = remote(SessionState::Up, 1, 300, 300);
    fin.final_ = true;
    let out = s.handle(Input::Received(fin), 0);
    assert!(changes(&out).is_empty());
    assert_eq!(
        s.negotiated(),
        Negotiated {
            transmit_interval: Some(MS(600)),
            detection_time: Some(MS(900)),
        }
    );
    assert_eq!(s.state(), SessionState::Up);
}

#[test]
fn authenticated_packets_are_discarded_when_no_authentication_is_configured() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    let mut p = remote(SessionState::Down, 0, 1000, 300);
    p.authentication = Some(crate::bfd::codec::Authentication::SimplePassword {
        key_id: 1,
        password: b"x".to_vec(),
    });
    let out = s.handle(Input::Received(p), 0);
    assert_eq!(
        out,
        [Output::Discarded(DiscardReason::UnexpectedAuthentication)]
    );
    assert_eq!(s.remote_discriminator(), 0);
}

fn sha1(p: &mut ControlPacket, key_id: u8, sequence: u32) {
    p.authentication = Some(crate::bfd::codec::Authentication::Sha1 {
        meticulous: false,
        key_id,
        sequence,
        digest: [0; 20],
    });
}

#[test]
fn keyed_sha1_sessions_number_their_packets_and_refuse_replays() {
    let mut s = Session::new(1, params(300, 300, 3), false).with_sha1(4, false, 100);
    let out = s.start(0);
    match &sent(&out)[0].authentication {
        Some(crate::bfd::codec::Authentication::Sha1 {
            key_id: 4,
            sequence: 100,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &s.packet().authentication,
        Some(crate::bfd::codec::Authentication::Sha1 { sequence: 101, .. })
    ));
    // Unauthenticated and wrong-key packets are discarded.
    let p = remote(SessionState::Down, 0, 1000, 300);
    assert_eq!(
        s.handle(Input::Received(p.clone()), 0),
        [Output::Discarded(DiscardReason::MissingAuthentication)]
    );
    let mut wrong = p.clone();
    sha1(&mut wrong, 5, 10);
    assert_eq!(
        s.handle(Input::Received(wrong), 0),
        [Output::Discarded(DiscardReason::AuthenticationMismatch)]
    );
    // The first sequence number is learnt; then the same one (allowed: not meticulous), one
    // within 3 × Detect Mult, and one beyond it.
    let mut ok = p.clone();
    sha1(&mut ok, 4, 10);
    assert_eq!(
        changes(&s.handle(Input::Received(ok.clone()), 0)),
        [(SessionState::Down, SessionState::Init)]
    );
    assert!(
        !s.handle(Input::Received(ok.clone()), 0)
            .iter()
            .any(|o| matches!(o, Output::Discarded(_)))
    );
    let mut ahead = p.clone();
    sha1(&mut ahead, 4, 19);
    assert!(
        !s.handle(Input::Received(ahead), 0)
            .iter()
            .any(|o| matches!(o, Output::Discarded(_)))
    );
    let mut far = p.clone();
    sha1(&mut far, 4, 29);
    assert_eq!(
        s.handle(Input::Received(far), 0),
        [Output::Discarded(DiscardReason::SequenceOutOfWindow {
            last: 19,
            got: 29
        })]
    );
    let mut replay = p;
    sha1(&mut replay, 4, 18);
    assert!(matches!(
        s.handle(Input::Received(replay), 0)[..],
        [Output::Discarded(DiscardReason::SequenceOutOfWindow { .. })]
    ));
}

#[test]
fn meticulous_sha1_needs_a_new_sequence_number_every_packet() {
    let mut s = Session::new(1, params(300, 300, 3), false).with_sha1(1, true, 0);
    let mut p = remote(SessionState::Down, 0, 1000, 300);
    p.authentication = Some(crate::bfd::codec::Authentication::Sha1 {
        meticulous: true,
        key_id: 1,
        sequence: u32::MAX,
        digest: [0; 20],
    });
    let _ = s.handle(Input::Received(p.clone()), 0);
    assert!(matches!(
        s.handle(Input::Received(p.clone()), 0)[..],
        [Output::Discarded(DiscardReason::SequenceOutOfWindow { .. })]
    ));
    // Wrapping around 2^32 is fine.
    if let Some(crate::bfd::codec::Authentication::Sha1 { sequence, .. }) = &mut p.authentication {
        *sequence = 0;
    }
    assert!(
        !s.handle(Input::Received(p), 0)
            .iter()
            .any(|o| matches!(o, Output::Discarded(_)))
    );
}

#[test]
fn a_packet_for_another_discriminator_is_discarded() {
    let mut s = Session::new(1, params(300, 300, 3), false);
    let out = s.handle(Input::Received(remote(SessionState::Init, 7, 1000, 300)), 0);
    assert_eq!(
        out,
        [Output::Discarded(DiscardReason::WrongDiscriminator {
            expected: 1,
            got: 7
        })]
    );
}

#[test]
fn the_transition_table_of_section_6_8_6() {
    use SessionState::*;
    let all = [AdminDown, Down, Init, Up];
    for local in all {
        for rx in all {
            let got = next_state(local, rx).map(|(s, _)| s);
            let want = match (local, rx) {
                (AdminDown, _) | (Down, AdminDown) | (Down, Up) | (Init, Down) => None,
                (Up, Init | Up) => None,
                (_, AdminDown) | (Up, Down) => Some(Down),
                (Down, Down) => Some(Init),
                (Down, Init) | (Init, Init | Up) => Some(Up),
            };
            assert_eq!(got, want, "{local} receiving {rx}");
        }
    }
}

fn arb_state() -> impl Strategy<Value = SessionState> {
    prop_oneof![
        Just(SessionState::AdminDown),
        Just(SessionState::Down),
        Just(SessionState::Init),
        Just(SessionState::Up),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    let packet = (
        arb_state(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        1u8..6,
        0u64..1500,
        0u64..1500,
    )
        .prop_map(|(state, to_us, poll, final_, mult, tx, rx)| {
            let to = if to_us { 1 } else { 0 };
            // The codec lets through only Down/AdminDown with a zero Your Discriminator.
            let to = if matches!(state, SessionState::Up | SessionState::Init) {
                1
            } else {
                to
            };
            let mut p = remote(state, to, tx, rx);
            p.poll = poll && !final_;
            p.final_ = final_;
            p.detect_mult = mult;
            Input::Received(p)
        });
    prop_oneof![
        4 => packet,
        2 => Just(Input::TimerExpired(Timer::Transmit)),
        1 => Just(Input::TimerExpired(Timer::Detection)),
        1 => Just(Input::AdminDown),
        1 => Just(Input::AdminUp),
        1 => (10u64..2000, 10u64..2000, 1u8..6).prop_map(|(t, r, m)| Input::ChangeParameters(params(t, r, m))),
    ]
}

/// RFC 5880 §6.2's diagram: the only arrows there are.
fn allowed(from: SessionState, to: SessionState) -> bool {
    use SessionState::*;
    matches!(
        (from, to),
        (AdminDown, Down)
            | (Down, Init | Up | AdminDown)
            | (Init, Up | Down | AdminDown)
            | (Up, Down | AdminDown)
    )
}

proptest! {
    #[test]
    fn random_event_sequences_never_leave_the_transition_table(
        passive in any::<bool>(),
        inputs in prop::collection::vec((arb_input(), any::<u32>()), 1..60),
    ) {
        let mut s = Session::new(1, params(300, 300, 3), passive);
        let mut remote_known = false;
        let _ = s.start(0);
        for (input, random) in inputs {
            let before = s.state();
            let received = match &input {
                Input::Received(p) => Some(p.clone()),
                _ => None,
            };
            let out = s.handle(input.clone(), random);
            let mut state = before;
            for o in &out {
                match o {
                    Output::StateChanged { from, to, .. } => {
                        prop_assert_eq!(*from, state);
                        prop_assert!(allowed(*from, *to), "{} -> {} on {:?}", from, to, input);
                        // Up only from a received Init (in Down) or Init/Up (in Init).
                        if *to == SessionState::Up {
                            let p = received.as_ref().expect("Up only on a packet");
                            prop_assert_eq!(next_state(*from, p.state).map(|x| x.0), Some(SessionState::Up));
                        }
                        state = *to;
                    }
                    Output::Send(p) => {
                        prop_assert!(!(p.poll && p.final_));
                        prop_assert_eq!(p.state, s.state());
                        if p.state != SessionState::Up {
                            prop_assert!(p.desired_min_tx_interval >= 1_000_000, "slow TX: {:?}", p);
                        }
                        if passive {
                            prop_assert!(remote_known || s.remote_discriminator() != 0, "passive sent first");
                        }
                    }
                    Output::ArmTimer { timer: Timer::Transmit, after } => {
                        let iv = s.negotiated().transmit_interval.expect("armed without an interval");
                        prop_assert!(*after >= iv * 3 / 4 && *after <= iv, "{:?} for {:?}", after, iv);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(state, s.state());
            remote_known = s.remote_discriminator() != 0;
        }
    }
}
