//! `leafbridge-dns`: the split-horizon DNS proxy.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use leafbridge_api::DNSView;
use leafbridge_api::ops::{self, Readiness};
use leafbridge_api::state::{StateObject, StateSource};
use leafbridge_dns::config::Config;
use leafbridge_dns::index::Indexed;
use leafbridge_dns::metrics::{DropLabels, KindLabels, Metrics};
use leafbridge_dns::server::{self, Runtime, Server};
use leafbridge_dns::view::{DnsViews, merge_views};
use leafbridge_dns::watch::{is_watch_failure, watch};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(
    name = "leafbridge-dns",
    about = "Split-horizon DNS proxy for the cluster domain"
)]
struct Args {
    /// YAML configuration (listeners, zones, views, upstreams, cache, limits). `DNSView`
    /// objects from the cluster state add views to (or replace by name) the file's.
    #[arg(long, env = "LEAFBRIDGE_DNS_CONFIG")]
    config: PathBuf,
    /// State directory of Kubernetes-format manifests (Services, EndpointSlices, Pods).
    /// Without it, the Kubernetes API is watched (in-cluster or kubeconfig credentials).
    #[arg(long, env = "LEAFBRIDGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How often the configuration file is checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Safety-net rescan of the state directory; changes are seen at once via inotify, so
    /// this is rare: each rescan stats every manifest, which costs CPU at 10,000 Services.
    #[arg(long, default_value_t = 60_000)]
    state_rescan_ms: u64,
    /// Log JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Address of the /metrics, /healthz and /readyz listener; overrides the file's
    /// `ops_listen`.
    #[arg(long, env = "LEAFBRIDGE_METRICS_ADDRESS")]
    metrics_address: Option<SocketAddr>,
}

/// Object kinds listed before we are ready: the index's three and DNSView (answering
/// before the views are known could give office clients in-cluster answers).
const KINDS: usize = 4;

/// What the running [`Runtime`] is built from: the configuration file and the DNSViews in
/// use. A change to either rebuilds the Runtime and swaps it in whole, as a reload does.
struct ViewSources {
    file: Config,
    dns_views: DnsViews,
    /// DNSViews are listed and their watch healthy; until then no client that matches no
    /// view gets the in-cluster view (a DNSView may be meant for it).
    dnsviews_listed: bool,
}

type SharedSources = Arc<Mutex<ViewSources>>;

/// Build the Runtime for `file` plus the DNSViews and swap it in. Called with the sources
/// locked, so swaps happen in the order the changes did.
fn install(server: &Server, s: &ViewSources, file: &Config) -> anyhow::Result<usize> {
    let mut merged = file.clone();
    merged.views = merge_views(&file.views, s.dns_views.views());
    let rt = Runtime::new(&merged, s.dnsviews_listed)?;
    let n = merged.views.len();
    server.reconfigure(rt);
    Ok(n)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ops::init_tracing(args.log_json);
    let mut config = Config::load(&args.config)?;
    if let Some(addr) = args.metrics_address {
        config.ops_listen = Some(addr);
    }
    leafbridge_dns::udp_forward::raise_fd_limit();
    let threads = config.threads.unwrap_or(2).max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(args, config))
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    // No DNSView is known yet: unmatched clients get the default view (or REFUSED).
    let runtime = Runtime::new(&config, false)?;
    let server = Arc::new(Server::new(runtime, config.cache.max_entries, metrics));
    let sources: SharedSources = Arc::new(Mutex::new(ViewSources {
        file: config.clone(),
        dns_views: DnsViews::default(),
        dnsviews_listed: false,
    }));

    let readiness = Readiness::new();
    let source = match &args.state_dir {
        Some(dir) => {
            StateSource::dir_with_rescan(dir.clone(), Duration::from_millis(args.state_rescan_ms))?
        }
        None => StateSource::kube(
            kube::Client::try_default()
                .await
                .context("no --state-dir and no Kubernetes credentials")?,
        ),
    };
    source.register_metrics(&mut registry);
    let health = Arc::new(Health::new(readiness.clone()));
    watch_source(source, server.clone(), sources.clone(), health).await;

    for addr in &config.listen {
        let udp = server::bind_udp(*addr).with_context(|| format!("binding UDP {addr}"))?;
        let wanted = config.limits.udp_receive_buffer;
        if wanted > 0 {
            server::set_receive_buffer(&udp, wanted)
                .with_context(|| format!("setting the receive buffer of UDP {addr}"))?;
        }
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding TCP {addr}"))?;
        tracing::info!(%addr, "listening (UDP and TCP)");
        server::serve_udp(server.clone(), udp, tokio::runtime::Handle::current())
            .context("starting the UDP thread")?;
        tokio::spawn(server::serve_tcp(server.clone(), tcp));
    }
    if let Some(addr) = config.ops_listen {
        ops::serve(addr, Arc::new(registry), readiness.clone()).await?;
    }
    tokio::spawn(reload_loop(
        server.clone(),
        sources,
        args.config.clone(),
        args.metrics_address,
        Duration::from_millis(args.poll_ms),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Readiness from the watches: ready once every kind has listed, and not while any
/// kind's watch is failing.
struct Health {
    synced: AtomicUsize,
    failing: Mutex<HashSet<&'static str>>,
    notify: Notify,
    readiness: Readiness,
}

impl Health {
    fn new(readiness: Readiness) -> Self {
        Self {
            synced: AtomicUsize::new(0),
            failing: Mutex::new(HashSet::new()),
            notify: Notify::new(),
            readiness,
        }
    }

    /// One more kind listed for the first time.
    fn listed_first(&self) {
        if self.synced.fetch_add(1, Ordering::SeqCst) + 1 == KINDS {
            tracing::info!("cluster state synced");
        }
        self.update();
        self.notify.notify_waiters();
    }

    /// `kind`'s watch failed (`true`) or delivered again (`false`).
    fn set_failing(&self, server: &Server, kind: &'static str, failing: bool) {
        let changed = {
            let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if failing {
                f.insert(kind)
            } else {
                f.remove(kind)
            }
        };
        if changed {
            server
                .metrics
                .watch_failing
                .get_or_create(&KindLabels { kind })
                .set(i64::from(failing));
            self.update();
        }
    }

    fn update(&self) {
        let failing = !self
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        self.readiness
            .set_ready(self.synced.load(Ordering::SeqCst) >= KINDS && !failing);
    }
}

/// Start the watches and wait (bounded) for their first listing, so the first answers are
/// complete; a source slow to list delays us at most 15 s (answers then fill in; clients
/// no view matches are refused, or get the default view, until DNSViews are listed).
async fn watch_source(
    source: StateSource,
    server: Arc<Server>,
    sources: SharedSources,
    health: Arc<Health>,
) {
    tokio::spawn(feed_dns_views(
        source.clone(),
        server.clone(),
        sources,
        health.clone(),
    ));
    tokio::spawn(feed::<Service>(
        source.clone(),
        server.clone(),
        health.clone(),
    ));
    tokio::spawn(feed::<EndpointSlice>(
        source.clone(),
        server.clone(),
        health.clone(),
    ));
    tokio::spawn(feed::<Pod>(source, server, health.clone()));
    let wait = async {
        while health.synced.load(Ordering::SeqCst) < KINDS {
            let notified = health.notify.notified();
            if health.synced.load(Ordering::SeqCst) >= KINDS {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .is_err()
    {
        tracing::warn!("state not fully listed after 15 s; serving what is known");
    }
}

/// Apply one kind's watch events to the index, forever.
async fn feed<K: StateObject + Indexed>(
    source: StateSource,
    server: Arc<Server>,
    health: Arc<Health>,
) {
    let mut stream = watch::<K>(&source);
    let mut first_sync = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                health.set_failing(&server, K::KIND, false);
                let done = matches!(event, Event::InitDone);
                let services = {
                    let mut index = server.index.write().unwrap_or_else(|e| e.into_inner());
                    index.apply_event(&event);
                    index.service_count()
                };
                server.metrics.services.set(services as i64);
                if done && first_sync {
                    first_sync = false;
                    health.listed_first();
                }
            }
            Err(e) if is_watch_failure(&e) => {
                server
                    .metrics
                    .watch_errors
                    .get_or_create(&KindLabels { kind: K::KIND })
                    .inc();
                health.set_failing(&server, K::KIND, true);
                tracing::warn!(kind = K::KIND, error = %e, "state watch failed; keeping the index, retrying with backoff");
            }
            Err(e) => {
                server.metrics.state_errors.inc();
                tracing::warn!(kind = K::KIND, error = %e, "state watch error; keeping the index");
            }
        }
    }
    tracing::error!(kind = K::KIND, "state watch ended");
}

/// Follow DNSView objects: each change of the view set swaps in a new Runtime. An invalid
/// DNSView is reported and ignored (its last good version, if any, stays); the other views
/// are never affected. During a relist the swap waits for its end, so a restarted watch
/// does not flap views away and back. While the watch fails, the views in use stay, but
/// clients no view matches no longer get the in-cluster view: the DNSView meant for them
/// may be the one we cannot see.
async fn feed_dns_views(
    source: StateSource,
    server: Arc<Server>,
    sources: SharedSources,
    health: Arc<Health>,
) {
    const KIND: &str = "DNSView";
    let mut stream = watch::<DNSView>(&source);
    let mut first_sync = true;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                if !is_watch_failure(&e) {
                    server.metrics.state_errors.inc();
                    tracing::warn!(kind = KIND, error = %e, "DNSView skipped");
                    continue;
                }
                server
                    .metrics
                    .watch_errors
                    .get_or_create(&KindLabels { kind: KIND })
                    .inc();
                health.set_failing(&server, KIND, true);
                tracing::warn!(kind = KIND, error = %e,
                    "DNSView watch failed (is the CRD deploy/crds/leafbridge.io_dnsviews.yaml installed?); keeping the views, retrying with backoff");
                let mut s = sources.lock().unwrap_or_else(|e| e.into_inner());
                if s.dnsviews_listed {
                    s.dnsviews_listed = false;
                    let file = s.file.clone();
                    if let Err(e) = install(&server, &s, &file) {
                        tracing::error!(error = %e, "views not rebuilt after the DNSView watch failed");
                    }
                }
                continue;
            }
        };
        health.set_failing(&server, KIND, false);
        let mut s = sources.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = s.dns_views.on_event(&event);
        if let Some((name, error, kept_previous)) = outcome.rejected {
            server
                .metrics
                .config_reloads
                .get_or_create(&DropLabels {
                    reason: "dnsview_rejected",
                })
                .inc();
            if kept_previous {
                tracing::warn!(dnsview = %name, %error, "DNSView rejected; keeping its last good version");
            } else {
                tracing::warn!(dnsview = %name, %error, "DNSView rejected; ignored");
            }
        }
        let listed_now = matches!(event, Event::InitDone) && !s.dnsviews_listed;
        if listed_now {
            s.dnsviews_listed = true;
        }
        if outcome.rebuild || listed_now {
            let file = s.file.clone();
            match install(&server, &s, &file) {
                Ok(views) => {
                    server
                        .metrics
                        .config_reloads
                        .get_or_create(&DropLabels { reason: "dnsview" })
                        .inc();
                    tracing::info!(
                        views,
                        dnsviews = s.dns_views.views().len(),
                        "views updated from DNSViews"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "DNSViews not applied; keeping the running views")
                }
            }
        }
        drop(s);
        if matches!(event, Event::InitDone) && first_sync {
            first_sync = false;
            health.listed_first();
        }
    }
    tracing::error!(kind = KIND, "state watch ended");
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reload on SIGHUP or when the file changes. The new configuration replaces the old one
/// atomically (arc-swap): queries in flight finish with the configuration they started
/// with, none is dropped. A bad file is logged and the running configuration kept.
/// Listener addresses and thread count need a restart.
async fn reload_loop(
    server: Arc<Server>,
    sources: SharedSources,
    path: PathBuf,
    metrics_address: Option<SocketAddr>,
    poll: Duration,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; file changes still reload");
            None
        }
    };
    let mut last = stamp(&path);
    loop {
        let by_signal = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tokio::time::sleep(poll) => false,
        };
        let now = stamp(&path);
        if !by_signal && now == last {
            continue;
        }
        last = now;
        let mut s = sources.lock().unwrap_or_else(|e| e.into_inner());
        let result = Config::load(&path)
            .map(|mut c| {
                // The flag keeps overriding the file (the listener itself needs a restart).
                if metrics_address.is_some() {
                    c.ops_listen = metrics_address;
                }
                c
            })
            .map_err(anyhow::Error::from)
            .and_then(|c| install(&server, &s, &c).map(|_| c));
        match result {
            Ok(c) => {
                s.file = c;
                server
                    .metrics
                    .config_reloads
                    .get_or_create(&DropLabels { reason: "ok" })
                    .inc();
                tracing::info!(path = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                server
                    .metrics
                    .config_reloads
                    .get_or_create(&DropLabels { reason: "error" })
                    .inc();
                tracing::error!(error = %e, "configuration rejected; keeping the running one");
            }
        }
    }
}
