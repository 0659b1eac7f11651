//! Any datagram through the whole request path (parse, admit, view, answer, encode) over
//! UDP and TCP: never a panic, and every reply parses and fits its transport.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use leafbridge_dns::server::{Outcome, Server, Transport};
use libfuzzer_sys::fuzz_target;

static SERVER: OnceLock<Server> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let server = SERVER.get_or_init(leafbridge_dns::testing::fixture_server);
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    for (src, t) in [
        ("127.0.0.1:4000", Transport::Udp),
        ("192.0.2.7:4000", Transport::Tcp),
    ] {
        if let Outcome::Reply(bytes) = server.handle(data, src.parse().unwrap(), local, t) {
            if t == Transport::Udp {
                assert!(bytes.len() <= 1232 || bytes.len() <= 512, "UDP reply too large");
            }
            // Our FORMERR for an unparseable query carries only a header; everything else
            // must be a well-formed message.
            Message::from_vec(&bytes).expect("reply must parse");
        }
    }
});
