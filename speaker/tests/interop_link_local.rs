//! BGP over IPv6 link-local addresses only: two namespaces joined by a veth pair that carries
//! no global address, only the fe80:: address the kernel gives each end (usable at once: the
//! test namespaces have duplicate address detection off). The speaker names the router's
//! fe80:: address and its own interface, and announces an IPv6 prefix with `next_hop: self`.
//!
//! - We connect to FRR (with zebra; `neighbor OUR-FE80 interface IFNAME`, passive): FRR holds
//!   the session Established and the prefix valid and best via our link-local address, and
//!   zebra installs it via that address on FRR's interface.
//! - BIRD connects to us (`neighbor OUR-FE80%IFNAME`; the speaker's peer is passive and
//!   listens on `::`): the speaker matches the connection to the peer by address and by the
//!   interface it came in on, and BIRD installs the route the same way. FRR 8.4 is not used
//!   for this direction: its outgoing connection to a `neighbor ... interface` peer waits for
//!   next-hop tracking of the link-local address forever ("Waiting for NHT").

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use common::{BIN, Speaker};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::{Netns, Topology, wait_for};

const T: Duration = Duration::from_secs(30);
const PREFIX: &str = "2001:db8:100::/64";
/// Our interface (in `a`) and the router's (in `b`).
const A_IF: &str = "ll-b";
const B_IF: &str = "ll-a";

/// Namespaces `a` (ours) and `b` (the router's) joined by `A_IF` / `B_IF` with link-local
/// addresses only: (topology, a, b, our fe80 address, theirs).
fn link_local_pair(tag: &str) -> (Topology, Netns, Netns, Ipv6Addr, Ipv6Addr) {
    let topo = Topology::new(tag);
    let a = topo.namespace("a");
    let b = topo.namespace("b");
    topo.link(&a, A_IF, &b, B_IF);
    let ours = a.link_local_addr(A_IF);
    let theirs = b.link_local_addr(B_IF);
    for (ns, ifname) in [(&a, A_IF), (&b, B_IF)] {
        let global = ns.run(
            "ip",
            &["-6", "-o", "addr", "show", "dev", ifname, "scope", "global"],
        );
        assert!(
            global.trim().is_empty(),
            "{ifname} must carry no global address: {global}"
        );
    }
    (topo, a, b, ours, theirs)
}

/// The speaker's config: one peer at `theirs` on `A_IF`, one IPv6 prefix with next hop self.
fn speaker_yaml(theirs: Ipv6Addr, passive: bool) -> String {
    let role = if passive { "    passive: true\n" } else { "" };
    format!(
        r#"
local_as: 65001
router_id: 192.0.2.1
listen: {{ address: "::" }}
peers:
  - name: leaf
    address: "{theirs}"
    interface: {A_IF}
    remote_as: 65000
    hold_time: 9
{role}prefixes:
  - prefix: "{PREFIX}"
"#
    )
}

/// Waits for the kernel of `ns` to route `PREFIX` via `via` on `B_IF`.
#[track_caller]
fn assert_kernel_route_via(ns: &Netns, via: Ipv6Addr) {
    let want = format!("via {via} dev {B_IF}");
    wait_for(T, &format!("the kernel route {PREFIX} {want}"), || {
        let r = ns.run("ip", &["-6", "route", "show", PREFIX]);
        if r.contains(&want) { Ok(()) } else { Err(r) }
    });
}

#[test]
fn frr_learns_our_ipv6_prefix_over_a_link_local_only_session_we_open() {
    let (_topo, a, b, ours, theirs) = link_local_pair("llfrr");
    let mut cfg = FrrConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.zebra = true;
    let mut n = FrrNeighbor::new(IpAddr::V6(ours), 65001);
    n.interface = Some(B_IF.to_owned());
    n.ipv4 = false;
    n.passive = true;
    n.hold_time = Some(9);
    cfg.neighbors.push(n);
    let frr = Frr::start(&b, "leaf", &cfg);
    let speaker = Speaker::start(BIN, &a, "a", &speaker_yaml(theirs, false));

    frr.wait_established(IpAddr::V6(ours), T);
    let cmd = format!("show bgp ipv6 unicast {PREFIX} json");
    let path = wait_for(T, "FRR to hold the prefix valid and best", || {
        let v: serde_json::Value =
            serde_json::from_str(&frr.vtysh(&[&cmd])).map_err(|e| e.to_string())?;
        let path = v["paths"].get(0).cloned().ok_or_else(|| v.to_string())?;
        let best = path["bestpath"]["overall"].as_bool() == Some(true);
        if path["valid"].as_bool() == Some(true) && best {
            Ok(path)
        } else {
            Err(path.to_string())
        }
    });
    // No global address on the link: our link-local address in both next hop places.
    let hops: Vec<&str> = path["nexthops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["ip"].as_str())
        .collect();
    let ours_text = ours.to_string();
    assert!(
        !hops.is_empty() && hops.iter().all(|h| *h == ours_text),
        "next hops {hops:?}, want only {ours_text}: {path}"
    );
    assert_kernel_route_via(&b, ours);
    // Logs name the peer with its interface.
    assert!(
        speaker.log().contains(&format!("[{theirs}%{A_IF}]:179")),
        "{}",
        speaker.log()
    );
}

#[test]
fn a_link_local_connection_from_bird_is_matched_to_the_peer_of_its_interface() {
    bird_connects_to_us("llbird", None);
}

/// The listener's TCP-MD5 key of a link-local peer is installed by address (see README).
#[test]
fn a_link_local_connection_from_bird_with_tcp_md5_is_accepted_with_the_key() {
    bird_connects_to_us("llmd5", Some("ll-secret"));
}

fn bird_connects_to_us(tag: &str, password: Option<&str>) {
    let (topo, a, b, ours, theirs) = link_local_pair(tag);
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.kernel = true;
    let mut peer = BirdPeer::new("speaker", IpAddr::V6(ours), 65001);
    peer.interface = Some(B_IF.to_owned());
    peer.ipv4 = false;
    peer.hold_time = Some(9);
    peer.password = password.map(str::to_owned);
    cfg.peers.push(peer);
    let mut yaml = speaker_yaml(theirs, true);
    if let Some(pw) = password {
        let key = topo.dir().join("md5.key");
        std::fs::write(&key, pw).unwrap();
        yaml = yaml.replace(
            "    passive: true\n",
            &format!("    passive: true\n    password_file: {}\n", key.display()),
        );
    }
    let speaker = Speaker::start(BIN, &a, "a", &yaml);
    let bird = Bird::start(&b, "leaf", &cfg);

    bird.wait_established("speaker", T);
    // BIRD reads a link-local address in the global place as "link-local only" (its
    // BGP.next_hop shows `:: fe80::...`) and routes via it on the session's interface.
    let via = format!("via {ours} on {B_IF}");
    wait_for(T, &format!("BIRD to route {PREFIX} {via}"), || {
        let r = bird.birdc(&format!("show route {PREFIX} all"));
        if r.contains(&via) && r.contains("BGP.next_hop") {
            Ok(())
        } else {
            Err(r)
        }
    });
    assert_kernel_route_via(&b, ours);
    let log = speaker.log();
    assert!(log.contains("inbound connection"), "{log}");
    assert!(!log.contains("inbound connection refused"), "{log}");
}
