//! The speaker against BIRD 2 in network namespaces: routes with their attributes, edits,
//! MD5, peer restarts, a frozen peer, graceful restart and shutdown.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::BIN;
use common::{ALL, PREFIXES, Speaker, assert_prefix_attributes, wait_routes_within, yaml};
use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
use leafbridge_tests::rib::by_prefix;
use leafbridge_tests::{Pair, RibRoute, wait_for, wait_until};

const T: Duration = Duration::from_secs(20);

fn bird_leaf(pair: &Pair, speaker_as: u32, edit: impl FnOnce(&mut BirdPeer)) -> Bird {
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    let mut peer = BirdPeer::new("node1", Pair::a_v4(), speaker_as);
    edit(&mut peer);
    cfg.peers.push(peer);
    Bird::start(&pair.b, "leaf", &cfg)
}

/// Waits until BIRD's routes from the speaker are exactly `prefixes`.
#[track_caller]
fn wait_prefixes(bird: &Bird, prefixes: &[&str]) -> BTreeMap<String, RibRoute> {
    wait_routes_within(T, "BIRD", prefixes, || bird.bgp_routes("node1"))
}

/// BIRD as the leaf (its peer edited by `edit`) and the speaker in AS 65001 with `yaml`; returns
/// once the session is up and BIRD holds exactly [`ALL`].
#[track_caller]
fn leaf_and_speaker(
    pair: &Pair,
    edit: impl FnOnce(&mut BirdPeer),
    yaml: &str,
) -> (Bird, Speaker, BTreeMap<String, RibRoute>) {
    let bird = bird_leaf(pair, 65001, edit);
    let speaker = Speaker::start(BIN, &pair.a, "a", yaml);
    bird.wait_established("node1", T);
    let routes = wait_prefixes(&bird, &ALL);
    (bird, speaker, routes)
}

#[test]
fn bird_receives_ipv4_and_ipv6_routes_with_next_hop_communities_and_med() {
    let pair = Pair::new("spbird");
    let (_bird, speaker, routes) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));

    assert_prefix_attributes(&routes);
    assert_eq!(routes["203.0.113.1/32"].as_path, vec![65001]);
    assert!(speaker.process.is_running());
}

#[test]
fn editing_the_config_withdraws_exactly_what_left_without_resetting_the_session() {
    let pair = Pair::new("spedit");
    let (bird, speaker, _) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));

    // .1 leaves, .3 arrives, the IPv6 prefix changes its MED.
    let edited = r#"
  - prefix: 203.0.113.2/32
    next_hop: 192.0.2.9
  - prefix: 203.0.113.3/32
  - prefix: "2001:db8:100::/48"
    med: 30
"#;
    speaker.edit(&yaml(65001, "", edited));
    let routes = wait_for(T, "edit applied", || {
        let r = by_prefix(bird.bgp_routes("node1"));
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        if keys == ["2001:db8:100::/48", "203.0.113.2/32", "203.0.113.3/32"]
            && r["2001:db8:100::/48"].med == Some(30)
        {
            Ok(r)
        } else {
            Err(r)
        }
    });
    assert_eq!(routes["203.0.113.3/32"].next_hop, Some(Pair::a_v4()));

    // A bad edit is rejected and changes nothing.
    speaker.edit("local_as: 0\nrouter_id: 192.0.2.1\n");
    speaker.wait_log("configuration edit rejected", T);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(by_prefix(bird.bgp_routes("node1")).len(), 3);
    assert!(bird.is_established("node1"));
    assert!(!speaker.log().contains("session down"), "{}", speaker.log());
}

#[test]
fn ibgp_routes_carry_local_pref() {
    let pair = Pair::new("spibgp");
    let bird = bird_leaf(&pair, 65000, |_| {});
    let prefixes = r#"
  - prefix: 203.0.113.1/32
    local_pref: 250
  - prefix: 203.0.113.2/32
"#;
    let config = yaml(65000, "", prefixes);
    let _speaker = Speaker::start(BIN, &pair.a, "a", &config);
    bird.wait_established("node1", T);
    let routes = wait_prefixes(&bird, &["203.0.113.1/32", "203.0.113.2/32"]);
    assert_eq!(routes["203.0.113.1/32"].local_pref, Some(250));
    // RFC 4271 §5.1.5: iBGP UPDATEs always carry LOCAL_PREF; ours defaults to 100.
    assert_eq!(routes["203.0.113.2/32"].local_pref, Some(100));
    assert!(routes["203.0.113.1/32"].as_path.is_empty());
}

#[test]
fn md5_with_the_right_key_establishes_and_a_wrong_key_does_not() {
    let pair = Pair::new("spmd5");
    let bird = bird_leaf(&pair, 65001, |p| p.password = Some("s3cret-key".into()));
    let keyfile = pair.topo.dir().join("bgp.key");
    std::fs::write(&keyfile, "wrong-key\n").unwrap();
    let extra = format!("    password_file: {}", keyfile.display());
    let speaker = Speaker::start(BIN, &pair.a, "a", &yaml(65001, &extra, PREFIXES));
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(bird.bgp_state("node1"), "Established");
    wait_until(T, "MD5 failures counted", || {
        pair.b.nstat("TcpExtTCPMD5Failure") + pair.a.nstat("TcpExtTCPMD5Failure") > 0
    });
    assert!(
        !speaker.log().contains("wrong-key"),
        "the key must never be logged"
    );

    // The right key (a config edit that changes only the key file's content is not seen, so
    // point at a new file).
    let good = pair.topo.dir().join("bgp-good.key");
    std::fs::write(&good, "s3cret-key\n").unwrap();
    let extra = format!("    password_file: {}", good.display());
    speaker.edit(&yaml(65001, &extra, PREFIXES));
    bird.wait_established("node1", T);
    wait_prefixes(&bird, &ALL);
    assert!(
        !speaker.log().contains("s3cret"),
        "the key must never be logged"
    );
}

#[test]
fn bird_restarting_gets_the_routes_again() {
    let pair = Pair::new("sprest");
    let (mut bird, _speaker, _) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));
    bird.restart();
    bird.wait_established("node1", Duration::from_secs(40));
    wait_prefixes(&bird, &ALL);
}

#[test]
fn a_frozen_peer_is_detected_by_the_hold_timer() {
    let pair = Pair::new("spfrozen");
    let bird = bird_leaf(&pair, 65001, |p| p.hold_time = Some(3));
    let speaker = Speaker::start(BIN, &pair.a, "a", &yaml(65001, "", PREFIXES));
    bird.wait_established("node1", T);
    bird.process().signal("STOP");
    speaker.wait_log("hold timer expired", Duration::from_secs(10));
    bird.process().signal("CONT");
    // It comes back by itself.
    bird.wait_established("node1", Duration::from_secs(40));
    wait_prefixes(&bird, &ALL);
}

#[test]
fn sigterm_withdraws_and_sends_administrative_shutdown_with_a_message() {
    let pair = Pair::new("spterm");
    let (bird, speaker, _) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));
    speaker.terminate();
    wait_until(T, "routes withdrawn", || {
        bird.bgp_routes("node1").is_empty()
    });
    let proto = bird.birdc("show protocols all node1");
    assert!(proto.contains("Administrative shutdown"), "{proto}");
    assert!(
        proto.contains("leafbridge-speaker shutting down"),
        "{proto}"
    );
}

#[test]
fn with_graceful_restart_bird_keeps_our_routes_across_a_speaker_restart() {
    let pair = Pair::new("spgr");
    let config = format!(
        "shutdown: graceful\n{}",
        yaml(65001, "    graceful_restart: true", PREFIXES)
    );
    let (bird, mut speaker, _) =
        leaf_and_speaker(&pair, |p| p.graceful_restart = Some(60), &config);

    speaker.terminate();
    // During the restart BIRD still has every route (stale).
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(bird.bgp_state("node1"), "Established");
    wait_prefixes(&bird, &ALL);

    // Restarting within the Restart Time: R bit, re-sync, End-of-RIB; one route left meanwhile.
    let edited = r#"
  - prefix: 203.0.113.1/32
  - prefix: "2001:db8:100::/48"
"#;
    speaker.edit(&format!(
        "shutdown: graceful\n{}",
        yaml(65001, "    graceful_restart: true", edited)
    ));
    speaker.restart(&[]);
    speaker.wait_log("restarting speaker", T);
    bird.wait_established("node1", T);
    // The stale route we no longer announce goes with our End-of-RIB.
    wait_prefixes(&bird, &["203.0.113.1/32", "2001:db8:100::/48"]);
}

/// `python3` in the namespace fetches an HTTP path of the speaker's ops server.
fn http_get(ns: &leafbridge_tests::Netns, url: &str) -> String {
    let code =
        format!("import urllib.request;print(urllib.request.urlopen('{url}').read().decode())");
    ns.run("python3", &["-c", &code])
}

#[test]
fn metrics_show_session_state_prefixes_updates_and_health() {
    let pair = Pair::new("spmetric");
    let config = format!(
        "metrics_address: 127.0.0.1:9179\n{}",
        yaml(65001, "", PREFIXES)
    );
    let (_bird, _speaker, _) = leaf_and_speaker(&pair, |_| {}, &config);
    let metrics = wait_for(T, "metrics with the session Established", || {
        let m = http_get(&pair.a, "http://127.0.0.1:9179/metrics");
        if m.contains("leafbridge_speaker_bgp_session_state{peer=\"leaf\"} 6") {
            Ok(m)
        } else {
            Err(m)
        }
    });
    assert!(
        metrics.contains("leafbridge_speaker_bgp_prefixes_advertised{peer=\"leaf\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leafbridge_speaker_bgp_updates_sent_total{peer=\"leaf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leafbridge_speaker_bgp_session_flaps_total{peer=\"leaf\"} 0"),
        "{metrics}"
    );
    http_get(&pair.a, "http://127.0.0.1:9179/healthz");
    http_get(&pair.a, "http://127.0.0.1:9179/readyz");
}

#[test]
fn sighup_reloads_and_route_refresh_is_answered() {
    let pair = Pair::new("sphup");
    let (bird, speaker, _) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));
    // RFC 2918: BIRD asks again (`reload in`), we answer from the Adj-RIB-Out.
    bird.birdc("reload in node1");
    speaker.wait_log("answering ROUTE-REFRESH", T);
    assert!(bird.is_established("node1"));
    // Written in place (no rename) and signalled: SIGHUP applies it.
    std::fs::write(
        &speaker.config,
        yaml(65001, "", "  - prefix: 203.0.113.7/32\n"),
    )
    .unwrap();
    speaker.process.signal("HUP");
    wait_prefixes(&bird, &["203.0.113.7/32"]);
}

#[test]
fn ipv4_and_ipv6_prefixes_over_an_ipv6_session_with_gtsm() {
    let pair = Pair::new("spv6");
    let mut cfg = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.peers.push(BirdPeer {
        ttl_security: true,
        ..BirdPeer::new("node1", Pair::a_v6(), 65001)
    });
    let bird = Bird::start(&pair.b, "leaf", &cfg);
    let config = r#"
local_as: 65001
router_id: 192.0.2.1
peers:
  - name: leaf
    address: "2001:db8::2"
    remote_as: 65000
    gtsm: true
    ipv4_next_hop: 192.0.2.1
prefixes:
  - prefix: 203.0.113.1/32
  - prefix: "2001:db8:100::/48"
"#;
    let _speaker = Speaker::start(BIN, &pair.a, "a", config);
    bird.wait_established("node1", T);
    let routes = wait_prefixes(&bird, &["203.0.113.1/32", "2001:db8:100::/48"]);
    assert_eq!(routes["203.0.113.1/32"].next_hop, Some(Pair::a_v4()));
    assert_eq!(routes["2001:db8:100::/48"].next_hop, Some(Pair::a_v6()));
    // RFC 2545 §3: BIRD shares our subnet, so the link-local next hop comes too.
    let all = bird.birdc("show route all 2001:db8:100::/48");
    let nh = all
        .lines()
        .find(|l| l.contains("BGP.next_hop"))
        .unwrap_or_else(|| panic!("no BGP.next_hop in {all}"));
    assert!(nh.contains("2001:db8::1 fe80::"), "{nh}");
}

#[test]
fn adding_and_removing_another_peer_leaves_the_session_alone() {
    let pair = Pair::new("sppeers");
    let (bird, speaker, _) = leaf_and_speaker(&pair, |_| {}, &yaml(65001, "", PREFIXES));
    let other = "  - { name: other, address: 192.0.2.50, remote_as: 65050, passive: true, ipv6_next_hop: \"2001:db8::1\" }";
    speaker.edit(&yaml(65001, other, PREFIXES));
    speaker.wait_log("192.0.2.50:179", T);
    speaker.edit(&yaml(65001, "", PREFIXES));
    speaker.wait_log("peer removed or changed", T);
    std::thread::sleep(Duration::from_millis(500));
    assert!(bird.is_established("node1"));
    assert!(!speaker.log().contains("session down"), "{}", speaker.log());
    assert_eq!(bird.bgp_routes("node1").len(), 3);
}
