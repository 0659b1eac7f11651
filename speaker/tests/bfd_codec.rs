//! The BFD Control packet codec: golden vectors both ways (hand-made from the RFC 5880 §4.1
//! layout, and captured with tcpdump from BIRD 2.0.12 and FRR 8.4 bfdd bringing a session up
//! in network namespaces), every §6.8.6 reception check, a proptest round trip, and arbitrary
//! bytes never panic.

use leafbridge_speaker::bfd::codec::{
    self, Authentication, ControlPacket, DecodeError, Diagnostic, EncodeError, SessionState,
};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn packet(state: SessionState, my: u32, your: u32, tx: u32, rx: u32, echo: u32) -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: my,
        your_discriminator: your,
        desired_min_tx_interval: tx,
        required_min_rx_interval: rx,
        required_min_echo_rx_interval: echo,
        authentication: None,
    }
}

/// Checks a vector in both directions.
#[track_caller]
fn golden(bytes: &str, expected: &ControlPacket) {
    let bytes = hex(bytes);
    assert_eq!(&codec::decode(&bytes).unwrap(), expected);
    assert_eq!(codec::to_vec(expected).unwrap(), bytes);
}

const BIRD: u32 = 0x7a4c_af27;
const FRR: u32 = 0x629c_7b9a;

#[test]
fn bird_opens_in_down_with_slow_tx_and_no_remote_discriminator() {
    // RFC 5880 §6.8.3: 1 s desired min TX while not Up.
    golden(
        "204003187a4caf2700000000000f4240000493e000000000",
        &packet(SessionState::Down, BIRD, 0, 1_000_000, 300_000, 0),
    );
}

#[test]
fn frr_answers_in_init_with_its_echo_interval() {
    golden(
        "20800318629c7b9a7a4caf27000f4240000f42400000c350",
        &packet(SessionState::Init, FRR, BIRD, 1_000_000, 1_000_000, 50_000),
    );
}

#[test]
fn bird_polls_for_the_fast_interval_once_up_and_frr_answers_final() {
    let mut poll = packet(SessionState::Up, BIRD, FRR, 300_000, 300_000, 0);
    poll.poll = true;
    golden("20e003187a4caf27629c7b9a000493e0000493e000000000", &poll);
    let mut fin = packet(SessionState::Up, FRR, BIRD, 300_000, 300_000, 50_000);
    fin.final_ = true;
    golden("20d00318629c7b9a7a4caf27000493e0000493e00000c350", &fin);
}

#[test]
fn steady_up_packets_of_both_daemons() {
    golden(
        "20c003187a4caf27629c7b9a000493e0000493e000000000",
        &packet(SessionState::Up, BIRD, FRR, 300_000, 300_000, 0),
    );
    golden(
        "20c00318629c7b9a7a4caf27000493e0000493e00000c350",
        &packet(SessionState::Up, FRR, BIRD, 300_000, 300_000, 50_000),
    );
}

#[test]
fn every_flag_and_the_diagnostic_have_their_bit() {
    // Vers 1, Diag 7 (Administratively Down) | Sta AdminDown, C and D set | mult 5.
    let mut p = packet(SessionState::AdminDown, 1, 0, 1, 2, 3);
    p.diagnostic = Diagnostic::AdministrativelyDown;
    p.control_plane_independent = true;
    p.demand = true;
    p.detect_mult = 5;
    golden("270a05180000000100000000000000010000000200000003", &p);
}

#[test]
fn reserved_diagnostics_survive_a_round_trip() {
    let mut p = packet(SessionState::Down, 9, 0, 1, 1, 0);
    p.diagnostic = Diagnostic::Reserved(31);
    golden("3f4003180000000900000000000000010000000100000000", &p);
}

#[test]
fn keyed_sha1_section_both_ways() {
    // RFC 5880 §4.4: type 4, Auth Len 28, key id, reserved, sequence, 20-octet hash.
    let mut p = packet(SessionState::Up, 1, 2, 300_000, 300_000, 0);
    p.authentication = Some(Authentication::Sha1 {
        meticulous: false,
        key_id: 7,
        sequence: 5,
        digest: [0x11; 20],
    });
    let mut bytes = "20c403340000000100000002000493e0000493e000000000041c070000000005".to_owned();
    bytes.push_str(&"11".repeat(20));
    golden(&bytes, &p);
}

#[test]
fn meticulous_md5_and_simple_password_sections_both_ways() {
    let mut p = packet(SessionState::Up, 1, 2, 300_000, 300_000, 0);
    p.authentication = Some(Authentication::Md5 {
        meticulous: true,
        key_id: 3,
        sequence: 42,
        digest: [0x22; 16],
    });
    let mut bytes = "20c403300000000100000002000493e0000493e000000000031803000000002a".to_owned();
    bytes.push_str(&"22".repeat(16));
    golden(&bytes, &p);

    p.authentication = Some(Authentication::SimplePassword {
        key_id: 1,
        password: b"sec".to_vec(),
    });
    golden(
        "20c4031e0000000100000002000493e0000493e000000000010601736563",
        &p,
    );
}

#[test]
fn octets_beyond_the_length_field_are_ignored() {
    let mut b = hex("20c003187a4caf27629c7b9a000493e0000493e000000000");
    b.extend_from_slice(&[0xff; 8]);
    assert_eq!(codec::decode(&b).unwrap().my_discriminator, BIRD);
}

/// A valid Up packet, edited by `f`, must be rejected with `err`.
#[track_caller]
fn rejected(f: impl FnOnce(&mut Vec<u8>), err: DecodeError) {
    let mut b = hex("20c003187a4caf27629c7b9a000493e0000493e000000000");
    f(&mut b);
    assert_eq!(codec::decode(&b), Err(err));
}

#[test]
fn every_reception_check_of_section_6_8_6_has_its_error() {
    rejected(|b| b.truncate(23), DecodeError::TooShort { received: 23 });
    rejected(|b| b[0] = 0x40, DecodeError::BadVersion(2));
    rejected(|b| b[0] = 0x00, DecodeError::BadVersion(0));
    rejected(
        |b| b[3] = 23,
        DecodeError::LengthTooSmall {
            length: 23,
            minimum: 24,
        },
    );
    rejected(
        |b| b[3] = 25,
        DecodeError::LengthExceedsPayload {
            length: 25,
            received: 24,
        },
    );
    rejected(|b| b[2] = 0, DecodeError::DetectMultZero);
    rejected(|b| b[1] |= 0x01, DecodeError::Multipoint);
    rejected(|b| b[4..8].fill(0), DecodeError::MyDiscriminatorZero);
    rejected(
        |b| b[8..12].fill(0),
        DecodeError::YourDiscriminatorZero(SessionState::Up),
    );
    rejected(
        |b| {
            b[1] = 0x80;
            b[8..12].fill(0)
        },
        DecodeError::YourDiscriminatorZero(SessionState::Init),
    );
    rejected(|b| b[1] |= 0x30, DecodeError::PollAndFinal);
    // The A bit needs at least 26 octets.
    rejected(
        |b| b[1] |= 0x04,
        DecodeError::LengthTooSmall {
            length: 24,
            minimum: 26,
        },
    );
}

#[test]
fn your_discriminator_zero_is_fine_in_down_and_admin_down() {
    for flags in [0x40, 0x00] {
        let mut b = hex("20c003187a4caf2700000000000493e0000493e000000000");
        b[1] = flags;
        assert!(codec::decode(&b).is_ok(), "flags {flags:#x}");
    }
}

#[test]
fn authentication_sections_are_bound_by_type() {
    let with_auth = |section: &[u8]| {
        let mut b = hex("20c403007a4caf27629c7b9a000493e0000493e000000000");
        b.extend_from_slice(section);
        b[3] = b.len() as u8;
        codec::decode(&b)
    };
    // Auth Len must cover exactly what Length leaves.
    assert_eq!(
        with_auth(&[1, 5, 1, b'a', b'b', b'c']),
        Err(DecodeError::AuthLenMismatch {
            auth_len: 5,
            length: 30
        })
    );
    // A Simple Password of zero octets.
    assert_eq!(
        with_auth(&[1, 3, 1]),
        Err(DecodeError::BadAuthLen {
            auth_type: 1,
            auth_len: 3
        })
    );
    let mut md5_short = vec![2, 20, 1, 0, 0, 0, 0, 1];
    md5_short.extend_from_slice(&[0; 12]);
    assert_eq!(
        with_auth(&md5_short),
        Err(DecodeError::BadAuthLen {
            auth_type: 2,
            auth_len: 20
        })
    );
    let mut sha1_as_md5_len = vec![4, 24, 1, 0, 0, 0, 0, 1];
    sha1_as_md5_len.extend_from_slice(&[0; 16]);
    assert_eq!(
        with_auth(&sha1_as_md5_len),
        Err(DecodeError::BadAuthLen {
            auth_type: 4,
            auth_len: 24
        })
    );
    assert_eq!(with_auth(&[6, 3, 1]), Err(DecodeError::UnknownAuthType(6)));
    // The Reserved octet is ignored on receipt (§4.3, §4.4).
    let mut sha1 = vec![4, 28, 1, 0xff, 0, 0, 0, 1];
    sha1.extend_from_slice(&[0; 20]);
    assert!(with_auth(&sha1).is_ok());
}

#[test]
fn encode_refuses_packets_no_receiver_accepts() {
    let mut p = packet(SessionState::Up, 1, 2, 1, 1, 0);
    p.detect_mult = 0;
    assert_eq!(codec::to_vec(&p), Err(EncodeError::DetectMultZero));
    p.detect_mult = 3;
    p.my_discriminator = 0;
    assert_eq!(codec::to_vec(&p), Err(EncodeError::MyDiscriminatorZero));
    p.my_discriminator = 1;
    p.poll = true;
    p.final_ = true;
    assert_eq!(codec::to_vec(&p), Err(EncodeError::PollAndFinal));
    p.final_ = false;
    p.authentication = Some(Authentication::SimplePassword {
        key_id: 0,
        password: vec![0; 17],
    });
    assert_eq!(codec::to_vec(&p), Err(EncodeError::PasswordLength));
}

fn arb_auth() -> impl Strategy<Value = Option<Authentication>> {
    prop_oneof![
        Just(None),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 1..=16)).prop_map(|(key_id, password)| {
            Some(Authentication::SimplePassword { key_id, password })
        }),
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<[u8; 16]>()).prop_map(
            |(meticulous, key_id, sequence, digest)| Some(Authentication::Md5 {
                meticulous,
                key_id,
                sequence,
                digest
            })
        ),
        (any::<bool>(), any::<u8>(), any::<u32>(), any::<[u8; 20]>()).prop_map(
            |(meticulous, key_id, sequence, digest)| Some(Authentication::Sha1 {
                meticulous,
                key_id,
                sequence,
                digest
            })
        ),
    ]
}

fn arb_packet() -> impl Strategy<Value = ControlPacket> {
    (
        (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255),
        (1u32.., 1u32.., any::<[u32; 3]>()),
        arb_auth(),
    )
        .prop_filter(
            "Poll and Final together are invalid",
            |((_, _, f, _), _, _)| !(f[0] && f[1]),
        )
        .prop_map(
            |((diag, state, flags, mult), (my, your, iv), authentication)| {
                let state = match state {
                    0 => SessionState::AdminDown,
                    1 => SessionState::Down,
                    2 => SessionState::Init,
                    _ => SessionState::Up,
                };
                ControlPacket {
                    diagnostic: Diagnostic::from_code(diag),
                    state,
                    poll: flags[0],
                    final_: flags[1],
                    control_plane_independent: flags[2],
                    demand: flags[3],
                    detect_mult: mult,
                    my_discriminator: my,
                    your_discriminator: your,
                    desired_min_tx_interval: iv[0],
                    required_min_rx_interval: iv[1],
                    required_min_echo_rx_interval: iv[2],
                    authentication,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_valid_packet_round_trips(p in arb_packet()) {
        let bytes = codec::to_vec(&p).unwrap();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(codec::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(p) = codec::decode(&bytes) {
            let again = codec::to_vec(&p).unwrap();
            prop_assert_eq!(codec::decode(&again).unwrap(), p);
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        p in arb_packet(),
        flips in prop::collection::vec((0usize..52, any::<u8>()), 1..6),
    ) {
        let mut bytes = codec::to_vec(&p).unwrap();
        for (i, x) in flips {
            if let Some(b) = bytes.get_mut(i) {
                *b ^= x;
            }
        }
        let _ = codec::decode(&bytes);
    }
}
