//! `leafbridge-dns`: the split-horizon DNS proxy.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use leafbridge_dns::config::Config;
use leafbridge_dns::metrics::{DropLabels, Metrics};
use leafbridge_dns::server::{self, Runtime, Server};
use leafbridge_dns::{ops, statedir};
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
#[command(
    name = "leafbridge-dns",
    about = "Split-horizon DNS proxy for the cluster domain"
)]
struct Args {
    /// YAML configuration (listeners, zones, views, upstreams, cache, limits).
    #[arg(long, env = "LEAFBRIDGE_DNS_CONFIG")]
    config: PathBuf,
    /// State directory of Kubernetes-format manifests (Services, EndpointSlices, Pods).
    #[arg(long, env = "LEAFBRIDGE_STATE_DIR")]
    state_dir: PathBuf,
    /// How often the state directory and configuration file are checked for changes.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let args = Args::parse();
    let config = Config::load(&args.config)?;
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

fn tracing_subscriber_init() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let runtime = Runtime::from_config(&config)?;
    let server = Arc::new(Server::new(runtime, config.cache.max_entries, metrics));

    // Load the state before listening, so the first answer is already complete.
    let mut state = statedir::StateDir::default();
    let errors = state.scan(&args.state_dir, &server.index);
    server.metrics.state_errors.inc_by(errors as u64);

    for addr in &config.listen {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding UDP {addr}"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding TCP {addr}"))?;
        tracing::info!(%addr, "listening (UDP and TCP)");
        tokio::spawn(server::serve_udp(server.clone(), Arc::new(udp)));
        tokio::spawn(server::serve_tcp(server.clone(), tcp));
    }
    if let Some(addr) = config.ops_listen {
        let listener_server = server.clone();
        let registry = Arc::new(registry);
        tokio::spawn(async move {
            if let Err(e) = ops::serve(addr, registry, listener_server).await {
                tracing::error!(error = %e, %addr, "ops listener failed");
            }
        });
    }
    let poll = Duration::from_millis(args.poll_ms);
    tokio::spawn(statedir::watch(
        server.clone(),
        args.state_dir.clone(),
        poll,
    ));
    tokio::spawn(reload_loop(server.clone(), args.config.clone(), poll));
    tracing::info!("ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reload on SIGHUP or when the file changes. The new configuration replaces the old one
/// atomically (arc-swap): queries in flight finish with the configuration they started
/// with, none is dropped. A bad file is logged and the running configuration kept.
/// Listener addresses and thread count need a restart.
async fn reload_loop(server: Arc<Server>, path: PathBuf, poll: Duration) {
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
        let result = Config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| Runtime::from_config(&c));
        match result {
            Ok(rt) => {
                server.runtime.store(Arc::new(rt));
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
