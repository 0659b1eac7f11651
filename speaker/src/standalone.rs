//! Standalone mode: `leafbridge-speaker --config FILE`. The file lists local AS, router id,
//! peers and prefixes (see `config`). Edits (noticed through `notify`, or on SIGHUP) are applied
//! as incremental changes: a changed prefix set becomes UPDATEs on the running sessions, an
//! added or removed peer touches only that peer, and a bad edit is logged and ignored, keeping
//! the running configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::bfd;
use crate::bgp::fsm::{self, GracefulRestartConfig};
use crate::bgp::rib::Route;
use crate::bgp::session::{DesiredRoute, DesiredRoutes, SessionConfig, StopMode};
use crate::bgp::transport::{Md5Key, TransportConfig, TtlPolicy};
use crate::config::{Config, NextHop, PeerConfig, PrefixConfig, ShutdownMode};
use crate::metrics::SpeakerMetrics;
use crate::peers::{BfdPeer, PasswordRef, PeerManager, PeerSpec, ResolvedPeer};

/// Name of the marker file written on a graceful shutdown: when the speaker starts again
/// within the Restart Time, it sets the Restart State bit (RFC 4724 §3).
pub const RESTART_MARKER: &str = "graceful-restart";

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// We are restarting: advertise the Restart State bit to graceful-restart peers.
    pub restarting: bool,
    /// Where the graceful-restart marker lives (none: only `restarting` decides).
    pub restart_marker_dir: Option<PathBuf>,
    /// Overrides the file's `metrics_address`.
    pub metrics_address: Option<SocketAddr>,
}

/// Run until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let config =
        Config::load(&opts.config).with_context(|| format!("loading {}", opts.config.display()))?;
    // The marker is removed only once start-up has succeeded: a start that fails (and the
    // next one, in a crash loop) still restarts within the peers' Restart Time.
    let restarting = opts.restarting
        || restart_marker_fresh(opts.restart_marker_dir.as_deref(), config.restart_time);
    if restarting {
        info!("starting as a restarting speaker (graceful restart R bit set)");
    }

    let metrics = SpeakerMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = leafbridge_api::ops::Readiness::new();
    if let Some(addr) = opts.metrics_address.or(config.metrics_address) {
        leafbridge_api::ops::serve(addr, Arc::new(registry), ready.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
    }

    // Before any session starts: a SIGTERM once routes are out must withdraw them, not kill
    // the process with the default action.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut speaker = Speaker::new(metrics.clone(), restarting);
    speaker
        .apply(config)
        .await
        .context("applying configuration")?;
    remove_restart_marker(opts.restart_marker_dir.as_deref());
    ready.set_ready(true);

    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let mut watched = speaker.watched_files(&opts.config);
    let mut _watcher = watch_dirs(&watched, reload_tx.clone());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                speaker.reload(&opts.config).await;
                watched.contents = FileContents::read(&watched.paths);
            }
            Some(()) = reload_rx.recv() => {
                // Editors write in several steps: let the file settle, then read it once.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while reload_rx.try_recv().is_ok() {}
                // Events name directories, symlinks and temporary files (a ConfigMap volume
                // swaps a `..data` symlink and never names the file): what counts is whether
                // a file we read now has other content.
                let now = FileContents::read(&watched.paths);
                if now == watched.contents {
                    continue;
                }
                speaker.reload(&opts.config).await;
                let next = speaker.watched_files(&opts.config);
                if next.paths != watched.paths {
                    _watcher = watch_dirs(&next, reload_tx.clone());
                }
                watched = next;
            }
        }
    }
    ready.set_ready(false);
    let mode = speaker
        .config
        .as_ref()
        .map(|c| c.shutdown)
        .unwrap_or_default();
    info!(?mode, "shutting down");
    if mode == ShutdownMode::Graceful
        && let Some(dir) = &opts.restart_marker_dir
        && let Err(e) = write_restart_marker(dir)
    {
        warn!(error = %e, "cannot write the graceful-restart marker");
    }
    speaker.shutdown().await;
    Ok(())
}

/// `restart_marker_fresh`, then the marker is removed (what a start does once it succeeded).
#[cfg(test)]
fn take_restart_marker(dir: Option<&Path>, restart_time: u16) -> bool {
    let fresh = restart_marker_fresh(dir, restart_time);
    remove_restart_marker(dir);
    fresh
}

/// Whether a graceful shutdown left its marker less than `restart_time` seconds ago.
pub(crate) fn restart_marker_fresh(dir: Option<&Path>, restart_time: u16) -> bool {
    let Some(dir) = dir else { return false };
    let Ok(meta) = std::fs::metadata(dir.join(RESTART_MARKER)) else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok());
    // After the Restart Time the peers have dropped our routes: a plain start.
    age.is_some_and(|a| a <= Duration::from_secs(restart_time.into()))
}

/// The marker has done its work (start-up succeeded): a later start is a plain one.
pub(crate) fn remove_restart_marker(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::remove_file(dir.join(RESTART_MARKER))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(error = %e, "cannot remove the graceful-restart marker");
    }
}

fn write_restart_marker(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(RESTART_MARKER), b"")
}

/// The files a configuration is read from (the file itself, the password and BFD key files
/// it names) and what they held when it was last applied.
#[derive(Debug)]
struct WatchedFiles {
    paths: Vec<PathBuf>,
    contents: FileContents,
}

/// The content of each file, `None` for one that cannot be read.
#[derive(Debug, PartialEq, Eq)]
struct FileContents(Vec<Option<Vec<u8>>>);

impl FileContents {
    fn read(paths: &[PathBuf]) -> Self {
        Self(paths.iter().map(|p| std::fs::read(p).ok()).collect())
    }
}

/// Watch the directories of `files` (editors replace files by renaming; a Kubernetes
/// ConfigMap or Secret volume swaps the `..data` symlink of its directory) and signal any
/// change there; the caller compares contents.
fn watch_dirs(files: &WatchedFiles, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = files
        .paths
        .iter()
        .map(|path| match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch a configuration directory; reload with SIGHUP");
        }
    }
    Some(watcher)
}

/// The running speaker: the peer manager and the configuration in force.
pub struct Speaker {
    metrics: SpeakerMetrics,
    restarting: bool,
    config: Option<Config>,
    manager: PeerManager,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("manager", &self.manager)
            .finish()
    }
}

impl Speaker {
    pub fn new(metrics: SpeakerMetrics, restarting: bool) -> Self {
        Self {
            manager: PeerManager::new(metrics.clone(), restarting),
            metrics,
            restarting,
            config: None,
        }
    }

    /// The configuration file and the key files of the configuration in force.
    fn watched_files(&self, config: &Path) -> WatchedFiles {
        let mut paths = vec![config.to_owned()];
        if let Some(c) = &self.config {
            for p in &c.peers {
                paths.extend(p.password_file.clone());
                paths.extend(p.bfd_auth.as_ref().map(|a| a.key_file.clone()));
            }
        }
        paths.sort();
        paths.dedup();
        let contents = FileContents::read(&paths);
        WatchedFiles { paths, contents }
    }

    /// Re-read the file; a bad edit is logged and the running configuration stays.
    pub async fn reload(&mut self, path: &Path) {
        let result = match Config::load(path) {
            Ok(c) => self.apply(c).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                self.metrics.config_reloads.inc();
                info!("configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_reload_errors.inc();
                error!(error = %e, "configuration edit rejected; keeping the running configuration");
            }
        }
    }

    /// Make the running sessions match `config`.
    pub async fn apply(&mut self, mut config: Config) -> anyhow::Result<()> {
        config.validate()?;
        // The routes move into the per-peer desired sets; keeping the parsed list as well
        // would double the memory of a large configuration.
        let mut routes = routes_by_peer(&mut config);
        let mut prepared = Vec::new();
        for p in &config.peers {
            let r = routes.remove(&p.name()).unwrap_or_default();
            prepared.push(prepare_peer(&config, p, r, self.restarting)?);
        }
        let listen = config
            .listen
            .as_ref()
            .map(|l| SocketAddr::new(l.address, l.port));
        self.manager.apply(listen, prepared).await?;
        // Only the first configuration's peers saw us restart (the manager does the same).
        self.restarting = false;
        self.config = Some(config);
        Ok(())
    }

    /// Stop every session as the configuration's `shutdown` mode says, all at once.
    pub async fn shutdown(&mut self) {
        let (mode, message) = self
            .config
            .as_ref()
            .map(|c| (c.shutdown, c.shutdown_message.clone()))
            .unwrap_or((ShutdownMode::Withdraw, String::new()));
        let message = Some(message).filter(|m| !m.is_empty());
        let stop = match mode {
            ShutdownMode::Withdraw => StopMode::withdraw(message),
            ShutdownMode::Graceful => StopMode::Graceful { message },
        };
        self.manager.shutdown(stop).await;
    }
}

fn prepare_peer(
    config: &Config,
    p: &PeerConfig,
    routes: DesiredRoutes,
    restarting: bool,
) -> Result<ResolvedPeer, anyhow::Error> {
    let name = p.name();
    let mut fsm_cfg = fsm::PeerConfig::new(config.local_as, p.remote_as, config.router_id);
    fsm_cfg.hold_time = p.hold_time;
    fsm_cfg.send_hold_time = p.send_hold_time.map(|s| Duration::from_secs(s.into()));
    if p.graceful_restart {
        fsm_cfg.graceful_restart = Some(GracefulRestartConfig {
            restart_time: config.restart_time,
            restarting,
            forwarding_preserved: true,
        });
    }
    fsm_cfg.validate().with_context(|| format!("peer {name}"))?;
    let md5 = match &p.password_file {
        Some(path) => Some(Md5Key::from_file(path).with_context(|| format!("peer {name}"))?),
        None => None,
    };
    let ttl = if p.gtsm {
        TtlPolicy::Gtsm { hops: 1 }
    } else if let Some(t) = p.multihop_ttl {
        TtlPolicy::Ttl(t)
    } else if p.is_ibgp(config.local_as) {
        TtlPolicy::Default
    } else {
        // Directly connected eBGP: TTL 1, as every implementation sends by default.
        TtlPolicy::Ttl(1)
    };
    let mut transport = TransportConfig::new(SocketAddr::new(p.address, p.port));
    transport.interface = p.interface.clone();
    transport.source = p.source_address;
    transport.ttl = ttl;
    let session = SessionConfig {
        name: name.clone(),
        fsm: fsm_cfg,
        transport,
        passive: p.passive,
        ipv6_next_hop: p.ipv6_next_hop,
        ipv4_next_hop: p.ipv4_next_hop,
    };
    let bfd_key = match &p.bfd_auth {
        Some(a) => Some(
            bfd::auth::Sha1Key::from_file(&a.key_file, a.key_id, a.meticulous)
                .with_context(|| format!("peer {name}"))?,
        ),
        None => None,
    };
    let bfd = p.bfd_profile.as_ref().map(|profile| BfdPeer {
        spec: bfd::PeerSpec {
            auth: bfd_key.clone(),
            name: name.clone(),
            peer: p.address,
            local: p.source_address,
            hops: if p.multihop_ttl.is_some() {
                bfd::Hops::Multi
            } else {
                bfd::Hops::Single
            },
        },
        // validate() checked that the profile exists.
        profile: config.bfd_profiles[profile].profile(),
    });
    Ok(ResolvedPeer {
        spec: PeerSpec {
            session,
            password: p
                .password_file
                .clone()
                .map_or(PasswordRef::None, PasswordRef::File),
            bfd_profile: p.bfd_profile.clone(),
        },
        md5,
        routes,
        bfd,
    })
}

/// Each peer's routes (by peer name), taken out of `config.prefixes`, which is left empty.
///
/// When every prefix goes to every peer (no prefix names its peers), the peers share one
/// list, and that list is built in the allocation of the parsed one: a configuration entry and
/// a desired route have the same size, so even a million-prefix table never exists twice.
pub fn routes_by_peer(config: &mut Config) -> HashMap<String, DesiredRoutes> {
    let prefixes = std::mem::take(&mut config.prefixes);
    if prefixes.iter().all(|pf| pf.peers.is_none()) {
        let all: DesiredRoutes = Arc::new(prefixes.into_iter().map(desired_route).collect());
        return config
            .peers
            .iter()
            .map(|p| (p.name(), all.clone()))
            .collect();
    }
    config
        .peers
        .iter()
        .map(|p| {
            let name = p.name();
            let for_peer =
                |pf: &&PrefixConfig| pf.peers.as_ref().is_none_or(|ps| ps.contains(&name));
            // Counted first: a vector grown by doubling can leave a third of a large table
            // unused.
            let mut out = Vec::with_capacity(prefixes.iter().filter(for_peer).count());
            out.extend(prefixes.iter().filter(for_peer).cloned().map(desired_route));
            (name, Arc::new(out))
        })
        .collect()
}

// What lets `routes_by_peer` convert in place (equal size and alignment).
const _: () = assert!(
    std::mem::size_of::<PrefixConfig>() == std::mem::size_of::<DesiredRoute>()
        && std::mem::align_of::<PrefixConfig>() == std::mem::align_of::<DesiredRoute>()
);

/// The route a configuration entry asks for.
fn desired_route(pf: PrefixConfig) -> DesiredRoute {
    let next_hop = match pf.next_hop {
        NextHop::SelfAddress => None,
        NextHop::Address(a) => Some(a),
    };
    let mut route = Route::new(pf.prefix, next_hop.unwrap_or(pf.prefix.addr()));
    route.communities = pf.communities.iter().map(|c| c.0).collect();
    route.large_communities = pf.large_communities.iter().map(|c| c.0).collect();
    route.local_pref = pf.local_pref;
    route.med = pf.med;
    route.normalize();
    match next_hop {
        None => DesiredRoute::next_hop_self(route),
        Some(_) => DesiredRoute::with_next_hop(route),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml).unwrap()
    }

    /// Two eBGP leaves; the prefixes follow.
    const TWO_LEAVES: &str = "local_as: 65001
router_id: 192.0.2.1
peers:
  - { name: leaf1, address: 192.0.2.2, remote_as: 65000 }
  - { name: leaf2, address: 192.0.2.3, remote_as: 65000 }
prefixes:";

    #[test]
    fn prefixes_go_to_the_peers_they_name() {
        let mut c = config(&format!(
            r#"{TWO_LEAVES}
  - {{ prefix: 203.0.113.1/32 }}
  - {{ prefix: 203.0.113.2/32, peers: [leaf2], next_hop: 192.0.2.9, communities: ["65000:2", "65000:1"] }}
"#
        ));
        let routes = routes_by_peer(&mut c);
        assert!(c.prefixes.is_empty());
        let d1 = &routes["leaf1"];
        assert_eq!(d1.len(), 1);
        assert!(d1[0].is_next_hop_self());
        let d2 = &routes["leaf2"];
        assert_eq!(d2.len(), 2);
        assert!(!d2[1].is_next_hop_self());
        assert_eq!(
            d2[1].route.next_hop,
            "192.0.2.9".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            d2[1].route.communities,
            vec![65000 << 16 | 1, 65000 << 16 | 2]
        );
    }

    #[test]
    fn peers_that_take_every_prefix_share_one_list_built_where_the_parsed_one_was() {
        let mut c = config(&format!(
            r#"{TWO_LEAVES}
  - {{ prefix: 203.0.113.1/32 }}
  - {{ prefix: 203.0.113.2/32, next_hop: 192.0.2.9 }}
"#
        ));
        let parsed = c.prefixes.as_ptr() as usize;
        let routes = routes_by_peer(&mut c);
        assert!(Arc::ptr_eq(&routes["leaf1"], &routes["leaf2"]));
        assert_eq!(routes["leaf1"].as_ptr() as usize, parsed);
        assert!(routes["leaf1"][0].is_next_hop_self());
        assert_eq!(
            routes["leaf1"][1].route.next_hop,
            "192.0.2.9".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[test]
    fn ebgp_defaults_to_ttl_1_and_ibgp_to_the_system_ttl() {
        let c = config(
            r#"
local_as: 65001
router_id: 192.0.2.1
peers:
  - { name: ext, address: 192.0.2.2, remote_as: 65000 }
  - { name: int, address: 192.0.2.3, remote_as: 65001 }
  - { name: mh, address: 192.0.2.4, remote_as: 65000, multihop_ttl: 4 }
  - { name: gtsm, address: 192.0.2.5, remote_as: 65000, gtsm: true }
"#,
        );
        let ttl = |i: usize| {
            prepare_peer(&c, &c.peers[i], Default::default(), false)
                .unwrap()
                .spec
                .session
                .transport
                .ttl
        };
        assert_eq!(ttl(0), TtlPolicy::Ttl(1));
        assert_eq!(ttl(1), TtlPolicy::Default);
        assert_eq!(ttl(2), TtlPolicy::Ttl(4));
        assert_eq!(ttl(3), TtlPolicy::Gtsm { hops: 1 });
    }

    #[test]
    fn a_missing_password_file_rejects_the_configuration() {
        let c = config(
            r#"
local_as: 65001
router_id: 192.0.2.1
peers:
  - { address: 192.0.2.2, remote_as: 65000, password_file: /nonexistent/key }
"#,
        );
        let e = prepare_peer(&c, &c.peers[0], Default::default(), false)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/key"), "{e:#}");
    }

    #[test]
    fn restart_marker_counts_only_within_the_restart_time() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!take_restart_marker(Some(dir.path()), 120));
        write_restart_marker(dir.path()).unwrap();
        // Looking does not take it: a start-up that fails leaves it for the next one.
        assert!(restart_marker_fresh(Some(dir.path()), 120));
        assert!(take_restart_marker(Some(dir.path()), 120));
        // Taken: a second start is a plain start.
        assert!(!take_restart_marker(Some(dir.path()), 120));
    }
}
