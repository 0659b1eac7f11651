//! Network-namespace topologies with real routers and resolvers, for end-to-end tests and the
//! lab: the one test-network builder (docs/testing.md).
//!
//! # What is here
//! - [`netns`]: [`Topology`] (namespaces, veth links, bridges, addresses, sysctls, processes;
//!   its guard ends every process by PID and deletes every namespace, even on panic),
//!   [`Netns`] (run/spawn in a namespace, `nstat` counters, kernel routes), [`Process`]
//!   (signals incl. `STOP`/`CONT` for a frozen peer, CPU time, peak RSS), [`Pair`] (two
//!   namespaces on one link, the usual "speaker and one router").
//!   [`Topology::loopback`] is the same guard for daemons on the host's loopback (no root).
//! - [`fabric`]: leaf router + N nodes + an office client, for multi-node tests and the lab.
//! - [`support`]: [`require`] (a missing tool fails the test, naming the Debian package),
//!   [`wait_until`] / [`wait_for`] (polling with a failure message that shows the last state).
//! - BGP peers, each with config generation, the daemon's own config check, start / stop /
//!   restart, session state and the RIB read back as [`RibRoute`]s: [`bird`] (BIRD 2),
//!   [`frr`] (FRR bgpd without zebra), [`gobgp`] (GoBGP), [`exabgp`] (ExaBGP, also for
//!   runtime announce/withdraw commands).
//! - [`raw`]: a raw TCP connection or listener inside a namespace for malformed-message tests,
//!   with BGP framing and OPEN/KEEPALIVE/NOTIFICATION helpers; [`capture`]: tcpdump.
//! - [`backend`]: a TCP backend standing in for a pod in a node namespace (answers the node's
//!   name), a [`backend::Prober`] that connects from the office many times a second and
//!   reports failures and the longest gap, one-shot requests.
//! - [`manifests`]: builders for Nodes, Services, EndpointSlices, Secrets and our CRDs, and
//!   [`manifests::StateDir`], which writes them atomically into a state directory.
//! - [`cluster`]: a whole cluster on a [`fabric`]: leaf router (BIRD or FRR + zebra) with
//!   kernel routes, state directory with the base objects, controller, one speaker per node,
//!   a backend per node; waits that fail at once when a program exits.
//! - [`programs`]: runners for `leafbridge-controller`, the cluster-mode
//!   `leafbridge-speaker` and `leafbridge-dns` (binary path as a parameter), their ops
//!   endpoints and metrics.
//! - [`lab`]: the lab (`tests/lab up | status | down`): a persistent cluster with
//!   leafbridge-dns, an office resolver and backend processes, and what to try on it.
//! - [`dns`]: unbound and dnsmasq runners, `dig` with parsed answers, `dnsperf` with latency
//!   percentiles.
//!
//! # A speaker interop test, in outline
//! ```no_run
//! use std::time::Duration;
//! use leafbridge_tests::{Pair, wait_for};
//! use leafbridge_tests::bird::{Bird, BirdConfig, BirdPeer};
//!
//! let p = Pair::new("spkbird"); // a: 192.0.2.1 / 2001:db8::1, b: 192.0.2.2 / 2001:db8::2
//! let mut leaf = BirdConfig::new("192.0.2.2".parse().unwrap(), 65000);
//! leaf.peers.push(BirdPeer { passive: true, ..BirdPeer::new("speaker", Pair::a_v4(), 65001) });
//! let bird = Bird::start(&p.b, "leaf", &leaf);
//!
//! // The speaker under test runs in namespace `a`, its files in the topology's directory.
//! let conf = p.topo.dir().join("speaker.yaml");
//! std::fs::write(&conf, "...").unwrap();
//! let speaker_bin = "/path/to/leafbridge-speaker";
//! let speaker = p.a.spawn("speaker", speaker_bin, &["--config", conf.to_str().unwrap()]);
//!
//! bird.wait_established("speaker", Duration::from_secs(10));
//! let routes = wait_for(Duration::from_secs(10), "the LB IP at the leaf", || {
//!     let r = bird.bgp_routes("speaker");
//!     if r.iter().any(|r| r.prefix == "203.0.113.10/32") { Ok(r) } else { Err(r) }
//! });
//! speaker.signal("STOP"); // a frozen peer: the leaf's hold timer must fire
//! # let _ = routes;
//! ```
//! (In a real test the program is `env!("CARGO_BIN_EXE_leafbridge-speaker")`.)
//!
//! # Conventions
//! - Harness operations panic with a message saying what failed: in a test, a broken harness
//!   is a failure. Nothing is ever skipped.
//! - Names are unique per test (`lb-TAG-PID-N-...`); interface names are 4..=15 characters.
//!   [`Topology::persistent`] (the lab) names its namespaces `lbl-NAME-...`, which no test
//!   run's stale-namespace cleanup touches.
//! - Addresses: documentation ranges and 100.64.0.0/10 only, checked by [`Netns::add_addr`].
//! - Every daemon's stdout/stderr go to `<topology dir>/logs/`; the directory is kept and the
//!   last lines of each log are printed when the test panics (or always with
//!   `LEAFBRIDGE_KEEP_TEST_DIRS=1`).
//!
//! # Daemon facts found while building this (beyond docs/testing.md)
//! - BIRD 2.0.12 can miss an event-loop wakeup and hold a first UPDATE for its 3 s poll
//!   timeout; the generated config scans devices every second, which bounds that to ~1 s.
//!   Protocol names such as `ebgp`/`ibgp` are keywords. A passive protocol waiting for a
//!   connection reports state `Passive`; after a failed session it sits in `Idle` for the
//!   error-wait time and refuses connections. With `ttl security on` it accepts the TCP
//!   handshake of a TTL-254 peer and then ignores its segments.
//! - FRR bgpd without zebra treats an IPv6 next hop with a link-local part as withdraw; a
//!   route-map defined after `router bgp` refers to it holds the first UPDATEs for 5 s (the
//!   generated config defines them first); `bgpd -C` exits 0 even when it rejects lines; it
//!   sends End-of-RIB only to peers that advertised graceful restart.
//! - GoBGP waits 5-10 s before its first outgoing connection: make it the passive side.
//! - ExaBGP 4.2.21 cannot decode a Cease/Administrative Shutdown that carries an RFC 8203
//!   message; it answers with NOTIFICATION (1,0) and drops the session.
#![forbid(unsafe_code)]

pub mod backend;
pub mod bird;
pub mod capture;
pub mod cluster;
pub mod dns;
pub mod exabgp;
pub mod fabric;
pub mod frr;
pub mod gobgp;
pub mod lab;
pub mod manifests;
pub mod netns;
pub mod programs;
pub mod raw;
pub mod rib;
pub mod support;

pub use netns::{ExecOutput, Netns, Pair, Process, Topology};
pub use rib::RibRoute;
pub use support::{require, require_root, wait_for, wait_until};
