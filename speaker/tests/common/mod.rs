//! Fixtures of the standalone-mode speaker tests. The speaker itself is started by the shared
//! runner `leafbridge_tests::programs::StandaloneSpeaker` (as `Speaker`, with [`BIN`]).
#![allow(dead_code)]

use std::time::Duration;

pub use leafbridge_tests::programs::StandaloneSpeaker as Speaker;

pub const BIN: &str = env!("CARGO_BIN_EXE_leafbridge-speaker");

/// A speaker config in namespace `a` of a `Pair` (192.0.2.1) with one peer, `leaf`, at
/// 192.0.2.2 in AS 65000. `peer_extra` lines are indented as peer fields.
pub fn yaml(local_as: u32, peer_extra: &str, prefixes: &str) -> String {
    format!(
        r#"
local_as: {local_as}
router_id: 192.0.2.1
peers:
  - name: leaf
    address: 192.0.2.2
    remote_as: 65000
    hold_time: 9
    ipv6_next_hop: "2001:db8::1"
{peer_extra}
prefixes:
{prefixes}
"#
    )
}

/// Two IPv4 prefixes (one with communities, large communities and MED, one with an explicit
/// next hop) and an IPv6 one.
pub const PREFIXES: &str = r#"
  - prefix: 203.0.113.1/32
    communities: ["65000:100", "65000:200"]
    large_communities: ["65000:1:2"]
    med: 10
  - prefix: 203.0.113.2/32
    next_hop: 192.0.2.9
  - prefix: "2001:db8:100::/48"
    communities: ["65000:300"]
    med: 20
"#;

pub const ALL: [&str; 3] = ["2001:db8:100::/48", "203.0.113.1/32", "203.0.113.2/32"];

/// Checks the attributes of `PREFIXES` as a peer's RIB shows them.
#[track_caller]
pub fn assert_prefix_attributes(
    routes: &std::collections::BTreeMap<String, leafbridge_tests::RibRoute>,
) {
    let a_v4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let a_v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    let r1 = &routes["203.0.113.1/32"];
    assert_eq!(r1.next_hop, Some(a_v4), "{r1:?}");
    assert_eq!(r1.communities, vec![(65000, 100), (65000, 200)], "{r1:?}");
    assert_eq!(r1.large_communities, vec![(65000, 1, 2)], "{r1:?}");
    assert_eq!(r1.med, Some(10), "{r1:?}");
    let r2 = &routes["203.0.113.2/32"];
    assert_eq!(r2.next_hop, Some("192.0.2.9".parse().unwrap()), "{r2:?}");
    let r6 = &routes["2001:db8:100::/48"];
    assert_eq!(r6.next_hop, Some(a_v6), "{r6:?}");
    assert_eq!(r6.communities, vec![(65000, 300)], "{r6:?}");
    assert_eq!(r6.med, Some(20), "{r6:?}");
}

/// Waits up to 30 s until `read` returns exactly the prefixes `want` (sorted), and returns the
/// routes.
#[track_caller]
pub fn wait_routes(
    what: &str,
    want: &[&str],
    read: impl FnMut() -> Vec<leafbridge_tests::RibRoute>,
) -> std::collections::BTreeMap<String, leafbridge_tests::RibRoute> {
    wait_routes_within(Duration::from_secs(30), what, want, read)
}

/// [`wait_routes`] with its own timeout.
#[track_caller]
pub fn wait_routes_within(
    timeout: Duration,
    what: &str,
    want: &[&str],
    mut read: impl FnMut() -> Vec<leafbridge_tests::RibRoute>,
) -> std::collections::BTreeMap<String, leafbridge_tests::RibRoute> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    leafbridge_tests::wait_for(timeout, &format!("{what} to hold exactly {want:?}"), || {
        let routes = leafbridge_tests::rib::by_prefix(read());
        let got: Vec<String> = routes.keys().cloned().collect();
        if got == want { Ok(routes) } else { Err(routes) }
    })
}
