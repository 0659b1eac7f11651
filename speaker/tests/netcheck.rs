//! The node facts read over rtnetlink match what the kernel of a namespace this test creates
//! is set to: forwarding off then on, strict rp_filter on one interface, and `all` = 1 making
//! every interface strict while 2 (loose) on an interface is not reported. Needs root and `ip`.

use leafbridge_speaker::netcheck::{self, NodeFacts};
use leafbridge_tests::Topology;
use leafbridge_tests::backend::in_netns;

fn facts(ns: &leafbridge_tests::Netns) -> NodeFacts {
    in_netns(ns, netcheck::read).expect("rtnetlink netconf dump in the test namespace")
}

#[test]
fn forwarding_and_strict_rp_filter_are_read_over_rtnetlink_as_the_kernel_has_them() {
    let topo = Topology::new("ncheck");
    let node = topo.namespace("node");
    let leaf = topo.namespace("leaf");
    topo.link(&node, "uplk0", &leaf, "dnlk0");
    topo.link(&node, "uplk1", &leaf, "dnlk1");
    node.sysctl("net.ipv4.ip_forward", "0");
    node.sysctl("net.ipv6.conf.all.forwarding", "0");
    node.sysctl("net.ipv4.conf.all.rp_filter", "0");
    node.sysctl("net.ipv4.conf.uplk0.rp_filter", "1");
    node.sysctl("net.ipv4.conf.uplk1.rp_filter", "2");

    let f = facts(&node);
    assert_eq!(f.ipv4_forwarding, Some(false), "{f:?}");
    assert_eq!(f.ipv6_forwarding, Some(false), "{f:?}");
    assert_eq!(f.strict_rp_filter, ["uplk0"], "uplk1 is loose: {f:?}");
    assert_eq!(f.error, None);

    node.enable_forwarding();
    node.sysctl("net.ipv4.conf.all.rp_filter", "1");
    let f = facts(&node);
    assert_eq!(f.ipv4_forwarding, Some(true), "{f:?}");
    assert_eq!(f.ipv6_forwarding, Some(true), "{f:?}");
    // The kernel takes the larger of `all` and the interface: uplk1 (2) stays loose.
    assert_eq!(f.strict_rp_filter, ["uplk0"], "{f:?}");

    node.sysctl("net.ipv4.conf.uplk1.rp_filter", "0");
    node.sysctl("net.ipv4.conf.uplk0.rp_filter", "0");
    let f = facts(&node);
    assert_eq!(
        f.strict_rp_filter,
        ["uplk0", "uplk1"],
        "all=1 makes every interface strict: {f:?}"
    );
}
