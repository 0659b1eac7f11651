//! Packet captures with tcpdump inside a namespace (`--immediate-mode`: without it the last
//! packets, often the NOTIFICATIONs, can be lost when it stops — docs/testing.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::{Netns, Process};
use crate::support::{require, wait_for};

/// A running capture to a pcap file.
#[derive(Debug)]
pub struct Capture {
    ns: Netns,
    file: PathBuf,
    process: Process,
}

impl Capture {
    /// Starts `tcpdump -i IFNAME --immediate-mode -U -w FILE FILTER` in `ns` and waits until
    /// it listens. `filter` is a pcap filter such as `tcp port 179` (may be empty).
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, ifname: &str, filter: &str) -> Capture {
        require("tcpdump");
        let dir = ns.topology().subdir("captures");
        let file = dir.join(format!("{name}.pcap"));
        let mut cmd = ns.command("tcpdump");
        // -Z root: keep the privileges needed to write into the test's directory.
        cmd.args([
            "-i",
            ifname,
            "--immediate-mode",
            "-U",
            "-n",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file);
        cmd.args(filter.split_whitespace());
        let process = ns.topology().spawn(&format!("tcpdump-{name}"), cmd);
        wait_for(
            Duration::from_secs(10),
            &format!("tcpdump on {ifname} to listen"),
            || {
                if let Some(s) = process.try_exit_status() {
                    panic!("tcpdump exited ({s}): {}", process.stderr());
                }
                let e = process.stderr();
                if e.contains("listening on") {
                    Ok(())
                } else {
                    Err(e)
                }
            },
        );
        Capture {
            ns: ns.clone(),
            file,
            process,
        }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns the pcap file.
    pub fn stop(&self) -> &Path {
        self.process.signal("INT");
        if self.process.wait_exit(Duration::from_secs(3)).is_none() {
            self.process.stop();
        }
        &self.file
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The capture decoded by `tcpdump -r FILE -nn -v` (stop first for a complete file).
    pub fn text(&self) -> String {
        let f = self.file.display().to_string();
        self.ns.exec("tcpdump", &["-r", &f, "-nn", "-v"]).stdout
    }

    /// The number of packets in the file (`tcpdump -r FILE -nn -q`, one line each).
    pub fn packet_count(&self) -> usize {
        let f = self.file.display().to_string();
        self.ns
            .exec("tcpdump", &["-r", &f, "-nn", "-q"])
            .stdout
            .lines()
            .count()
    }
}
