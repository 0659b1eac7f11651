//! Runners for leafbridge's own programs in a namespace, parameterised by the binary's path so
//! that any crate's tests (and the lab) start them the same way: `leafbridge-controller` and
//! `leafbridge-speaker` in cluster mode on a state directory, `leafbridge-dns` with a config
//! file on a state directory, plus their `/metrics`, `/healthz`, `/readyz`.
//!
//! A test in the crate that owns a binary passes `env!("CARGO_BIN_EXE_<name>")`; another
//! crate's binary comes from [`workspace_binary`], which builds it with the same profile into
//! the same target directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::backend::in_netns;
use crate::netns::{Netns, Process};
use crate::support::wait_for;

/// The path of the workspace binary `name` (e.g. `leafbridge-controller`), built now if needed
/// with `cargo build --bin NAME` for the profile and target directory the running test was
/// built with (a no-op when it is up to date). `LEAFBRIDGE_BIN_<NAME>` (upper case, `-` as
/// `_`) overrides it, e.g. for a prebuilt release binary.
#[track_caller]
pub fn workspace_binary(name: &str) -> PathBuf {
    let var = format!("LEAFBRIDGE_BIN_{}", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    // <target>/<profile dir>/deps/<test binary>, or <target>/<profile dir>/<binary>.
    let exe = std::env::current_exe().expect("current_exe");
    let mut profile_dir = exe.parent().expect("exe dir").to_path_buf();
    if profile_dir.ends_with("deps") || profile_dir.ends_with("examples") {
        profile_dir.pop();
    }
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("cannot tell the cargo profile from {}", exe.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--profile", &profile, "--bin", name])
        .output()
        .unwrap_or_else(|e| {
            panic!("prerequisite missing: cannot run cargo ({cargo:?}) to build {name}: {e}")
        });
    assert!(
        out.status.success(),
        "cargo build --bin {name} failed (set {var} to a built binary instead):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join(name);
    assert!(bin.exists(), "{} missing after cargo build", bin.display());
    bin
}

/// One HTTP/1.1 GET from inside `ns`: `(status code, whole response)`, `None` when nothing
/// answers.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some((out.get(9..12)?.parse().ok()?, out))
    })
}

/// The value of the first Prometheus sample whose line starts with `series` (a metric name,
/// optionally with the start of its labels, e.g. `foo_total{peer="leaf"`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(series)
                && l[series.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == ' ' || c == '{' || c == ',' || c == '}')
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every sample of metric `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `leafbridge-controller --state-dir DIR` in a namespace. Its ops endpoints stay on their
/// default address, which is private to the namespace.
#[derive(Debug)]
pub struct Controller {
    pub ns: Netns,
    pub process: Process,
}

impl Controller {
    pub const METRICS: &str = "127.0.0.1:9464";

    #[track_caller]
    pub fn start(ns: &Netns, bin: &Path, state_dir: &Path, extra: &[&str]) -> Controller {
        let mut cmd = ns.command(bin);
        cmd.arg("--state-dir").arg(state_dir).args(extra);
        cmd.env("RUST_LOG", "info");
        let process = ns.topology().spawn("controller", cmd);
        Controller {
            ns: ns.clone(),
            process,
        }
    }

    pub fn log(&self) -> String {
        output(&self.process)
    }

    /// Panics with the log when the controller has exited.
    #[track_caller]
    pub fn assert_running(&self) {
        assert_alive(&self.process, "leafbridge-controller");
    }
}

/// What one of our programs wrote (stderr, then stdout).
fn output(p: &Process) -> String {
    p.stderr() + &p.stdout()
}

/// Panics with the end of its output when `p` (`what`) has exited.
#[track_caller]
fn assert_alive(p: &Process, what: &str) {
    if let Some(s) = p.try_exit_status() {
        panic!("{what} exited ({s}):\n{}", tail(&output(p)));
    }
}

/// `leafbridge-dns --config FILE --state-dir DIR` in a namespace; `ops` is the `ops_listen`
/// address of its config (inside the namespace), where `/readyz` says it has loaded the state.
#[derive(Debug)]
pub struct DnsProxy {
    pub ns: Netns,
    pub ops: SocketAddr,
    pub process: Process,
}

impl DnsProxy {
    #[track_caller]
    pub fn start(
        ns: &Netns,
        bin: &Path,
        config: &Path,
        state_dir: &Path,
        ops: SocketAddr,
        extra: &[&str],
    ) -> DnsProxy {
        let mut cmd = ns.command(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("RUST_LOG", "info");
        let process = ns.topology().spawn("leafbridge-dns", cmd);
        DnsProxy {
            ns: ns.clone(),
            ops,
            process,
        }
    }

    pub fn log(&self) -> String {
        output(&self.process)
    }

    /// Panics with the log when it has exited (a config it refused, a port in use).
    #[track_caller]
    pub fn assert_running(&self) {
        assert_alive(&self.process, "leafbridge-dns");
    }

    /// Waits until `/readyz` answers 200, failing early if it exits.
    #[track_caller]
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(timeout, "leafbridge-dns /readyz 200", || {
            self.assert_running();
            match http_get(&self.ns, self.ops, "/readyz") {
                Some((200, _)) => Ok(()),
                other => Err(other),
            }
        });
    }
}

/// How a cluster-mode speaker is started.
#[derive(Debug, Clone)]
pub struct SpeakerOptions {
    pub node_name: String,
    pub state_dir: PathBuf,
    /// `--restart-marker-dir` (graceful-restart marker); a per-speaker directory by default.
    pub restart_marker_dir: Option<PathBuf>,
    /// `--metrics-address` inside the node's namespace.
    pub metrics: SocketAddr,
    /// More arguments, e.g. `["--debounce-ms", "20", "--drain-time", "0"]`.
    pub extra: Vec<String>,
}

impl SpeakerOptions {
    pub fn new(node_name: &str, state_dir: &Path) -> SpeakerOptions {
        SpeakerOptions {
            node_name: node_name.to_string(),
            state_dir: state_dir.to_path_buf(),
            restart_marker_dir: None,
            metrics: "127.0.0.1:9179".parse().unwrap(),
            extra: Vec::new(),
        }
    }

    pub fn arg(mut self, a: &str) -> SpeakerOptions {
        self.extra.push(a.to_string());
        self
    }
}

/// `leafbridge-speaker --node-name NODE --state-dir DIR` in the node's namespace.
#[derive(Debug)]
pub struct ClusterSpeaker {
    pub ns: Netns,
    pub bin: PathBuf,
    pub options: SpeakerOptions,
    pub process: Process,
    marker_dir: PathBuf,
}

impl ClusterSpeaker {
    #[track_caller]
    pub fn start(ns: &Netns, bin: &Path, options: SpeakerOptions) -> ClusterSpeaker {
        let marker_dir = options.restart_marker_dir.clone().unwrap_or_else(|| {
            ns.topology()
                .subdir(&format!("speaker-{}-marker", options.node_name))
        });
        let process = Self::spawn(ns, bin, &options, &marker_dir);
        ClusterSpeaker {
            ns: ns.clone(),
            bin: bin.to_path_buf(),
            options,
            process,
            marker_dir,
        }
    }

    fn spawn(ns: &Netns, bin: &Path, o: &SpeakerOptions, marker: &Path) -> Process {
        let mut cmd = ns.command(bin);
        cmd.arg("--node-name")
            .arg(&o.node_name)
            .arg("--state-dir")
            .arg(&o.state_dir)
            .arg("--restart-marker-dir")
            .arg(marker)
            .arg("--metrics-address")
            .arg(o.metrics.to_string())
            .args(&o.extra);
        cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
        ns.topology()
            .spawn(&format!("speaker-{}", o.node_name), cmd)
    }

    pub fn log(&self) -> String {
        output(&self.process)
    }

    /// Panics with the end of the log when the speaker has exited: a speaker that does not
    /// know a flag or a mode says so here instead of a test timing out later.
    #[track_caller]
    pub fn assert_running(&self) {
        assert_alive(
            &self.process,
            &format!("leafbridge-speaker for {}", self.options.node_name),
        );
    }

    /// Waits until `/readyz` answers 200 (desired state loaded), failing early if it exits.
    #[track_caller]
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(
            timeout,
            &format!("speaker {} /readyz 200", self.options.node_name),
            || {
                self.assert_running();
                match http_get(&self.ns, self.options.metrics, "/readyz") {
                    Some((200, _)) => Ok(()),
                    other => Err(other),
                }
            },
        );
    }

    /// The `/metrics` text (empty when it does not answer).
    pub fn metrics(&self) -> String {
        http_get(&self.ns, self.options.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// SIGTERM and wait for the exit (graceful restart: the peers keep our routes as stale).
    #[track_caller]
    pub fn terminate(&self) {
        self.process.signal("TERM");
        assert!(
            self.process.wait_exit(Duration::from_secs(15)).is_some(),
            "speaker {} did not exit within 15 s of SIGTERM:\n{}",
            self.options.node_name,
            tail(&self.log())
        );
    }

    /// Starts the binary again with the same options (after [`ClusterSpeaker::terminate`]).
    #[track_caller]
    pub fn restart(&mut self) {
        self.process = Self::spawn(&self.ns, &self.bin, &self.options, &self.marker_dir);
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let t = "# HELP x\nfoo_total{peer=\"a\"} 3\nfoo_total{peer=\"b\"} 4\nfoo 7\nfoobar 1\n";
        assert_eq!(metric(t, "foo"), Some(7.0));
        assert_eq!(metric(t, "foo_total{peer=\"b\""), Some(4.0));
        assert_eq!(metric_sum(t, "foo_total"), 7.0);
        assert_eq!(metric(t, "nope"), None);
    }
}

/// `leafbridge-speaker` in standalone mode (`--config FILE`) in a test namespace: the process
/// and its config file.
#[derive(Debug)]
pub struct StandaloneSpeaker {
    pub ns: Netns,
    pub bin: PathBuf,
    pub config: PathBuf,
    pub restart_marker_dir: PathBuf,
    pub process: Process,
    label: String,
}

impl StandaloneSpeaker {
    /// Writes `yaml` and starts the speaker in `ns`.
    #[track_caller]
    pub fn start(bin: impl AsRef<Path>, ns: &Netns, label: &str, yaml: &str) -> StandaloneSpeaker {
        let config = ns
            .topology()
            .subdir(&format!("speaker-{label}"))
            .join("speaker.yaml");
        std::fs::write(&config, yaml).unwrap();
        Self::start_at(bin, ns, label, config)
    }

    /// Starts the speaker in `ns` on a config file that already exists (a ConfigMap volume).
    #[track_caller]
    pub fn start_at(
        bin: impl AsRef<Path>,
        ns: &Netns,
        label: &str,
        config: PathBuf,
    ) -> StandaloneSpeaker {
        let dir = ns.topology().subdir(&format!("speaker-{label}"));
        let restart_marker_dir = dir.join("state");
        let bin = bin.as_ref().to_path_buf();
        let process = spawn(&bin, ns, label, &config, &restart_marker_dir, &[]);
        StandaloneSpeaker {
            ns: ns.clone(),
            bin,
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
            &self.bin,
            &self.ns,
            &self.label,
            &self.config,
            &self.restart_marker_dir,
            extra,
        );
    }

    #[track_caller]
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        crate::support::wait_until(
            timeout,
            &format!("speaker log line containing {needle:?}"),
            || self.log().contains(needle),
        );
    }
}

fn spawn(
    bin: &Path,
    ns: &Netns,
    label: &str,
    config: &Path,
    restart_marker_dir: &Path,
    extra: &[&str],
) -> Process {
    let mut cmd = ns.command(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("--restart-marker-dir")
        .arg(restart_marker_dir)
        .args(extra);
    cmd.env("RUST_LOG", "info,leafbridge_speaker=debug");
    ns.topology().spawn(&format!("speaker-{label}"), cmd)
}
