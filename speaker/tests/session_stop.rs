//! How a session stops in withdraw mode, seen by a raw-socket peer on loopback: the withdrawals
//! (or RFC 8326 GRACEFUL_SHUTDOWN announcements), the drain delay, the Cease, then our FIN.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipnet::IpNet;
use leafbridge_speaker::bgp::codec::{self, CodecContext};
use leafbridge_speaker::bgp::fsm::PeerConfig;
use leafbridge_speaker::bgp::message::{AddressFamily, Capability, Message, Open, Update};
use leafbridge_speaker::bgp::rib::Route;
use leafbridge_speaker::bgp::session::{
    self, DesiredRoute, GRACEFUL_SHUTDOWN, SessionConfig, StopMode,
};
use leafbridge_speaker::bgp::transport::TransportConfig;
use leafbridge_speaker::metrics::SpeakerMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_millis(1500);

/// The raw peer's end: reads whole messages, writes encoded ones.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    ctx: CodecContext,
}

impl Peer {
    async fn send(&mut self, m: &Message) {
        let mut out = BytesMut::new();
        codec::encode(m, &self.ctx, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next message, or `None` on the speaker's FIN.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(len) = codec::frame_len(&self.buf, &self.ctx).unwrap() {
                let frame = self.buf.split_to(len);
                return Some(codec::decode(&frame, &self.ctx).unwrap().message);
            }
            let n = tokio::time::timeout(T, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the speaker went silent")
                .expect("a FIN, not a reset");
            if n == 0 {
                return None;
            }
        }
    }

    async fn recv_update(&mut self) -> Update {
        loop {
            match self.recv().await {
                Some(Message::Update(u)) => return u,
                Some(Message::Keepalive) => {}
                other => panic!("expected an UPDATE, got {other:?}"),
            }
        }
    }
}

fn prefixes() -> Vec<IpNet> {
    ["203.0.113.1/32", "203.0.113.2/32", "203.0.113.3/32"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A session towards a peer listening on loopback, Established, with the initial sync read.
/// The watch sender comes back too: while it lives, the desired set stays as it is.
async fn established() -> (
    Peer,
    session::SessionHandle,
    watch::Sender<session::DesiredRoutes>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut fsm = PeerConfig::new(65001, 65000, "192.0.2.1".parse().unwrap());
    fsm.families = vec![AddressFamily::IPV4_UNICAST];
    let cfg = SessionConfig {
        name: "peer".into(),
        fsm,
        transport: TransportConfig::new(addr),
        passive: false,
        ipv6_next_hop: None,
        ipv4_next_hop: None,
    };
    let nh: IpAddr = "192.0.2.1".parse().unwrap();
    let desired: Vec<DesiredRoute> = prefixes()
        .into_iter()
        .map(|p| DesiredRoute::with_next_hop(Route::new(p, nh)))
        .collect();
    let (tx, rx) = watch::channel(Arc::new(desired));
    let handle = session::spawn(cfg, rx, SpeakerMetrics::default());
    let (stream, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut peer = Peer {
        stream,
        buf: BytesMut::new(),
        ctx: CodecContext::default(),
    };
    assert!(matches!(peer.recv().await, Some(Message::Open(_))));
    peer.send(&Message::Open(Open {
        version: 4,
        my_as: 65000,
        hold_time: 90,
        bgp_identifier: "192.0.2.2".parse().unwrap(),
        capabilities: vec![
            Capability::Multiprotocol(AddressFamily::IPV4_UNICAST),
            Capability::FourOctetAs(65000),
        ],
    }))
    .await;
    peer.ctx.four_octet_as = true;
    peer.send(&Message::Keepalive).await;
    let mut announced = Vec::new();
    loop {
        let u = peer.recv_update().await;
        if u.end_of_rib_family().is_some() {
            break;
        }
        announced.extend(u.nlri);
    }
    assert_eq!(announced, prefixes());
    (peer, handle, tx)
}

async fn expect_cease_then_fin(peer: &mut Peer) {
    match peer.recv().await {
        Some(Message::Notification(n)) => assert_eq!((n.code, n.subcode), (6, 2)),
        other => panic!("expected the Cease, got {other:?}"),
    }
    assert!(peer.recv().await.is_none(), "our FIN follows the Cease");
}

#[tokio::test]
async fn withdraw_stop_waits_the_drain_time_between_the_withdrawals_and_the_cease() {
    let (mut peer, handle, _desired) = established().await;
    let stop = tokio::spawn(handle.stop(StopMode::Withdraw {
        message: Some("drained".into()),
        drain: DRAIN,
        graceful_shutdown: false,
    }));
    let u = peer.recv_update().await;
    let withdrawn_at = Instant::now();
    assert_eq!(u.withdrawn, prefixes());
    expect_cease_then_fin(&mut peer).await;
    let gap = withdrawn_at.elapsed();
    assert!(
        gap >= DRAIN - Duration::from_millis(100),
        "Cease after {gap:?}"
    );
    // We closed our side; the task ends once the peer closes its side too.
    drop(peer);
    tokio::time::timeout(T, stop).await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_stop_announces_the_community_then_withdraws_after_the_drain() {
    let (mut peer, handle, _desired) = established().await;
    let stop = tokio::spawn(handle.stop(StopMode::Withdraw {
        message: None,
        drain: DRAIN,
        graceful_shutdown: true,
    }));
    // RFC 8326 §4: the same routes again, tagged GRACEFUL_SHUTDOWN.
    let u = peer.recv_update().await;
    let announced_at = Instant::now();
    assert_eq!(u.nlri, prefixes());
    assert!(
        u.attributes.communities.contains(&GRACEFUL_SHUTDOWN),
        "{:?}",
        u.attributes
    );
    // LOCAL_PREF never goes to an external peer (RFC 4271 §5.1.5).
    assert_eq!(u.attributes.local_pref, None);
    let w = peer.recv_update().await;
    let gap = announced_at.elapsed();
    assert_eq!(w.withdrawn, prefixes());
    assert!(
        gap >= DRAIN - Duration::from_millis(100),
        "withdrawn after {gap:?}"
    );
    expect_cease_then_fin(&mut peer).await;
    drop(peer);
    tokio::time::timeout(T, stop).await.unwrap().unwrap();
}
