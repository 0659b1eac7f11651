//! Codec throughput on the benchmark's workload: 100,000 /32 prefixes with ORIGIN, AS_PATH,
//! NEXT_HOP, a community and a large community, packed into full 4096-octet UPDATEs, encoded into
//! one buffer and decoded back. Prints the best of five runs.
//!
//! `cargo run --release --manifest-path speaker/fuzz/Cargo.toml --example encode_bench`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipnet::IpNet;
use leafbridge_speaker_fuzz::bgp::codec::{self, CodecContext};
use leafbridge_speaker_fuzz::bgp::message::{
    AsPath, AsPathSegment, LargeCommunity, Message, Origin, PathAttributes, Update,
};

fn main() {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let attributes = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsPathSegment::Sequence(vec![65001])],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
        communities: vec![(65001 << 16) | 42],
        large_communities: vec![LargeCommunity {
            global_admin: 65001,
            local_data_1: 7,
            local_data_2: 8,
        }],
        ..PathAttributes::default()
    };
    let prefixes: Vec<IpNet> = (0..100_000u32)
        .map(|i| IpNet::V4(Ipv4Addr::from(0x6440_0000 + i).into()))
        .collect();
    // As many /32s (5 octets each) as fit a 4096-octet UPDATE with these attributes.
    let empty = Update {
        attributes: attributes.clone(),
        ..Update::default()
    };
    let per_update = (codec::MAX_MESSAGE_LEN - codec::update_len(&empty, &ctx)) / 5;
    let updates: Vec<Message> = prefixes
        .chunks(per_update)
        .map(|c| {
            Message::Update(Update {
                attributes: attributes.clone(),
                nlri: c.to_vec(),
                ..Update::default()
            })
        })
        .collect();

    let (mut best_enc, mut best_dec) = (Duration::MAX, Duration::MAX);
    let mut octets = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut out = BytesMut::with_capacity(updates.len() * codec::MAX_MESSAGE_LEN);
        for m in &updates {
            codec::encode(m, &ctx, &mut out).expect("encodes");
        }
        best_enc = best_enc.min(t.elapsed());
        octets = out.len();

        let t = Instant::now();
        let mut buf = &out[..];
        let mut n = 0;
        while let Ok(Some(len)) = codec::frame_len(buf, &ctx) {
            if let Message::Update(u) = codec::decode(&buf[..len], &ctx).expect("decodes").message {
                n += u.nlri.len();
            }
            buf = &buf[len..];
        }
        best_dec = best_dec.min(t.elapsed());
        assert_eq!(n, prefixes.len());
    }
    println!(
        "{} prefixes in {} UPDATEs ({} per UPDATE, {} octets): encode {:.2} ms, decode {:.2} ms",
        prefixes.len(),
        updates.len(),
        per_update,
        octets,
        best_enc.as_secs_f64() * 1e3,
        best_dec.as_secs_f64() * 1e3,
    );
}
