//! The speaker against FRR bgpd, GoBGP and ExaBGP in network namespaces.

mod common;

use std::time::Duration;

use common::BIN;
use common::{ALL, PREFIXES, Speaker, assert_prefix_attributes, wait_routes, yaml};
use leafbridge_tests::exabgp::{Exabgp, ExabgpConfig, ExabgpNeighbor};
use leafbridge_tests::frr::{Frr, FrrConfig, FrrNeighbor};
use leafbridge_tests::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
use leafbridge_tests::{Pair, wait_until};

const T: Duration = Duration::from_secs(30);

fn frr_leaf(pair: &Pair, edit: impl FnOnce(&mut FrrConfig, &mut FrrNeighbor)) -> Frr {
    let mut cfg = FrrConfig::new("192.0.2.2".parse().unwrap(), 65000);
    let mut n = FrrNeighbor::new(Pair::a_v4(), 65001);
    edit(&mut cfg, &mut n);
    cfg.neighbors.push(n);
    Frr::start(&pair.b, "leaf", &cfg)
}

#[test]
fn frr_receives_routes_with_attributes_and_edits() {
    let pair = Pair::new("spfrr");
    let frr = frr_leaf(&pair, |_, _| {});
    let speaker = Speaker::start(BIN, &pair.a, "a", &yaml(65001, "", PREFIXES));
    frr.wait_established(Pair::a_v4(), T);
    let routes = wait_routes("FRR", &ALL, || frr.routes());
    assert_prefix_attributes(&routes);
    assert_eq!(routes["203.0.113.1/32"].as_path, vec![65001]);

    speaker.edit(&yaml(
        65001,
        "",
        "  - prefix: 203.0.113.2/32\n    next_hop: 192.0.2.9\n",
    ));
    wait_routes("FRR after the edit", &["203.0.113.2/32"], || frr.routes());
    assert_eq!(frr.bgp_state(Pair::a_v4()), "Established");
}

#[test]
fn md5_with_frr_right_key_establishes_wrong_key_does_not() {
    let pair = Pair::new("spfrrmd5");
    let frr = frr_leaf(&pair, |_, n| n.password = Some("frr-secret".into()));
    let bad = pair.topo.dir().join("bad.key");
    std::fs::write(&bad, "not-it").unwrap();
    let speaker = Speaker::start(
        BIN,
        &pair.a,
        "a",
        &yaml(
            65001,
            &format!("    password_file: {}", bad.display()),
            PREFIXES,
        ),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(frr.bgp_state(Pair::a_v4()), "Established");
    let good = pair.topo.dir().join("good.key");
    std::fs::write(&good, "frr-secret\n").unwrap();
    speaker.edit(&yaml(
        65001,
        &format!("    password_file: {}", good.display()),
        PREFIXES,
    ));
    frr.wait_established(Pair::a_v4(), T);
    wait_routes("FRR", &ALL, || frr.routes());
    assert!(!speaker.log().contains("frr-secret"));
}

#[test]
fn with_graceful_restart_frr_keeps_our_routes_across_a_speaker_restart() {
    let pair = Pair::new("spfrrgr");
    let frr = frr_leaf(&pair, |c, _| c.graceful_restart = Some(60));
    let cfg = format!(
        "shutdown: graceful\n{}",
        yaml(65001, "    graceful_restart: true", PREFIXES)
    );
    let mut speaker = Speaker::start(BIN, &pair.a, "a", &cfg);
    frr.wait_established(Pair::a_v4(), T);
    wait_routes("FRR", &ALL, || frr.routes());
    speaker.terminate();
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(frr.bgp_state(Pair::a_v4()), "Established");
    wait_routes("FRR during the restart", &ALL, || frr.routes());
    speaker.restart(&[]);
    frr.wait_established(Pair::a_v4(), T);
    wait_routes("FRR after the restart", &ALL, || frr.routes());
}

#[test]
fn gobgp_receives_routes_with_attributes() {
    let pair = Pair::new("spgobgp");
    let mut cfg = GobgpConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.neighbors.push(GobgpNeighbor::new(Pair::a_v4(), 65001));
    let gobgp = Gobgp::start(&pair.b, "leaf", &cfg);
    let speaker = Speaker::start(BIN, &pair.a, "a", &yaml(65001, "", PREFIXES));
    gobgp.wait_established(Pair::a_v4(), T);
    let routes = wait_routes("GoBGP", &ALL, || gobgp.routes());
    assert_prefix_attributes(&routes);
    speaker.edit(&yaml(65001, "", "  - prefix: \"2001:db8:100::/48\"\n"));
    wait_routes("GoBGP after the edit", &["2001:db8:100::/48"], || {
        gobgp.routes()
    });
}

#[test]
fn exabgp_receives_routes_with_attributes() {
    let pair = Pair::new("spexa");
    let mut cfg = ExabgpConfig::new("192.0.2.2".parse().unwrap(), 65000);
    cfg.neighbors
        .push(ExabgpNeighbor::new(Pair::a_v4(), 65001, Pair::b_v4()));
    let exa = Exabgp::start(&pair.b, "leaf", &cfg);
    // ExaBGP connects to us: the speaker listens (and connects out too, RFC 4271 §6.8).
    let listen = "listen: { address: \"::\", port: 179 }\n";
    let speaker = Speaker::start(
        BIN,
        &pair.a,
        "a",
        &format!("{listen}{}", yaml(65001, "", PREFIXES)),
    );
    exa.wait_up(Pair::a_v4(), T);
    let routes = wait_routes("ExaBGP", &ALL, || exa.received_routes_from(Pair::a_v4()));
    assert_prefix_attributes(&routes);
    speaker.edit(&format!(
        "{listen}{}",
        yaml(65001, "", "  - prefix: 203.0.113.1/32\n")
    ));
    wait_routes("ExaBGP after the edit", &["203.0.113.1/32"], || {
        exa.received_routes_from(Pair::a_v4())
    });
    wait_until(T, "speaker still running", || speaker.process.is_running());
}
