//! `leafbridge-speaker`: the BGP speaker. Cluster mode (`--node-name NODE`, state from the
//! Kubernetes API or `--state-dir DIR`) or standalone mode (`--config FILE`).
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use leafbridge_api::annotations;
use leafbridge_api::rules::ClassConfig;

#[derive(Debug, Parser)]
#[command(
    name = "leafbridge-speaker",
    version,
    about = "BGP speaker that announces what a node should carry"
)]
struct Args {
    /// Standalone mode: YAML file with local AS, router id, peers and prefixes (reloaded on
    /// change and on SIGHUP).
    #[arg(long, env = "LEAFBRIDGE_SPEAKER_CONFIG")]
    config: Option<PathBuf>,
    /// Cluster mode: the Node this speaker runs on (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Cluster mode: read cluster state from this directory of YAML manifests instead of the
    /// Kubernetes API.
    #[arg(long, env = "LEAFBRIDGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Start as a restarting speaker: set the graceful-restart Restart State bit (RFC 4724).
    #[arg(long)]
    restarting: bool,
    /// Directory for the graceful-restart marker: a graceful shutdown leaves it, and a start
    /// within the Restart Time then sets the Restart State bit by itself.
    #[arg(long, env = "LEAFBRIDGE_SPEAKER_RESTART_MARKER_DIR")]
    restart_marker_dir: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz (standalone: overrides `metrics_address`).
    #[arg(long)]
    metrics_address: Option<SocketAddr>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Cluster mode, SIGTERM: sessions without graceful restart withdraw every route, wait
    /// this many seconds for the routers to move traffic, then send Cease.
    #[arg(long, default_value_t = 5)]
    drain_time: u64,
    /// Cluster mode: accept BGP connections here (passive peers, connection collisions).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Cluster mode: desired-state recomputes are at most one per this many milliseconds (the
    /// first change after a quiet period is applied at once).
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Cluster mode: BGP Identifier; default the Node's first IPv4 InternalIP.
    #[arg(long)]
    router_id: Option<Ipv4Addr>,
    /// Cluster mode: the spec.loadBalancerClass whose Services are announced.
    #[arg(long, default_value = annotations::DEFAULT_LOAD_BALANCER_CLASS)]
    load_balancer_class: String,
    /// Cluster mode: also announce LoadBalancer Services without a loadBalancerClass.
    #[arg(long)]
    default_class: bool,
    /// Cluster mode: RFC 8203 message sent with the Cease on shutdown.
    #[arg(long, default_value = "leafbridge-speaker shutting down")]
    shutdown_message: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    leafbridge_api::ops::init_tracing(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leafbridge-speaker: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match (args.config, args.node_name) {
        (Some(config), _) => {
            let opts = leafbridge_speaker::standalone::Options {
                config,
                restarting: args.restarting,
                restart_marker_dir: args.restart_marker_dir,
                metrics_address: args.metrics_address,
            };
            runtime.block_on(leafbridge_speaker::standalone::run(opts))
        }
        (None, Some(node_name)) => {
            let opts = leafbridge_speaker::cluster::Options {
                node_name,
                state_dir: args.state_dir,
                restart_marker_dir: args.restart_marker_dir,
                restarting: args.restarting,
                metrics_address: args.metrics_address,
                drain_time: Duration::from_secs(args.drain_time),
                listen: args.listen,
                debounce: Duration::from_millis(args.debounce_ms),
                router_id: args.router_id,
                class: ClassConfig {
                    class: args.load_balancer_class,
                    default_class: args.default_class,
                },
                shutdown_message: Some(args.shutdown_message).filter(|m| !m.is_empty()),
            };
            runtime.block_on(leafbridge_speaker::cluster::run(opts))
        }
        (None, None) => {
            eprintln!(
                "leafbridge-speaker: give --node-name NODE (cluster mode; NODE_NAME) or --config FILE (standalone mode)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "leafbridge-speaker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
