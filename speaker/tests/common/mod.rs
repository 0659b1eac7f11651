//! Running the real `leafbridge-speaker` binary with a YAML config inside a test namespace.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use leafbridge_tests::{Netns, Process, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_leafbridge-speaker");

/// The speaker process and its config file.
pub struct Speaker {
    pub ns: Netns,
    pub config: PathBuf,
    pub restart_marker_dir: PathBuf,
    pub process: Process,
    label: String,
}

impl Speaker {
    /// Writes `yaml` and starts the speaker in `ns`.
    #[track_caller]
    pub fn start(ns: &Netns, label: &str, yaml: &str) -> Speaker {
        let dir = ns.topology().subdir(&format!("speaker-{label}"));
        let config = dir.join("speaker.yaml");
        std::fs::write(&config, yaml).unwrap();
        let restart_marker_dir = dir.join("state");
        let process = spawn(ns, label, &config, &restart_marker_dir, &[]);
        Speaker {
            ns: ns.clone(),
            config,
            restart_marker_dir,
            process,
            label: label.to_owned(),
        }
    }

    /// Starts the speaker in `ns` on a config file that already exists (a ConfigMap volume).
    #[track_caller]
    pub fn start_at(ns: &Netns, label: &str, config: PathBuf) -> Speaker {
        let dir = ns.topology().subdir(&format!("speaker-{label}"));
        let restart_marker_dir = dir.join("state");
        let process = spawn(ns, label, &config, &restart_marker_dir, &[]);
        Speaker {
            ns: ns.clone(),
            config,
            restart_marker_dir,
            process,
            label: label.to_owned(),
        }
    }

    /// Replaces the config file the way an editor does (write a temp file, rename).
    pub fn edit(&self, yaml: &str) {
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// SIGTERM and wait for the exit.
    #[track_caller]
    pub fn terminate(&self) {
        self.process.signal("TERM");
        let status = self.process.wait_exit(Duration::from_secs(15));
        assert!(
            status.is_some(),
            "speaker did not exit on SIGTERM:\n{}",
            self.log()
        );
    }

    /// Start the binary again with the same config (after `terminate`).
    pub fn restart(&mut self, extra: &[&str]) {
        self.process = spawn(
            &self.ns,
            &self.label,
            &self.config,
            &self.restart_marker_dir,
            extra,
        );
    }

    #[track_caller]
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("speaker log line containing {needle:?}"),
            || self.log().contains(needle),
        );
    }
}

fn spawn(
    ns: &Netns,
    label: &str,
    config: &PathBuf,
    restart_marker_dir: &PathBuf,
    extra: &[&str],
) -> Process {
    let mut cmd = ns.command(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--restart-marker-dir")
        .arg(restart_marker_dir)
        .args(extra);
    cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
    ns.topology().spawn(&format!("speaker-{label}"), cmd)
}

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
