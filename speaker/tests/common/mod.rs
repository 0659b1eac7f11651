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
    pub state_dir: PathBuf,
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
        let state_dir = dir.join("state");
        let process = spawn(ns, label, &config, &state_dir, &[]);
        Speaker {
            ns: ns.clone(),
            config,
            state_dir,
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
        self.process = spawn(&self.ns, &self.label, &self.config, &self.state_dir, extra);
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
    state_dir: &PathBuf,
    extra: &[&str],
) -> Process {
    let mut cmd = ns.command(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .args(extra);
    cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
    ns.topology().spawn(&format!("speaker-{label}"), cmd)
}
