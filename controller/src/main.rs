//! `leafbridge-controller`: allocates LoadBalancer addresses from IPPools.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leafbridge_api::ops::{self, Readiness};
use leafbridge_api::{StateSource, annotations};
use leafbridge_controller::leader::{self, LeaseConfig};
use leafbridge_controller::reconcile::{self, Metrics};
use leafbridge_controller::service::ClassConfig;
use leafbridge_controller::{bench, crds};
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Allocates LoadBalancer addresses from IPPools and writes Service status"
)]
struct Cli {
    /// Read and write cluster state in this directory of YAML manifests instead of Kubernetes.
    #[arg(long, env = "LEAFBRIDGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The spec.loadBalancerClass this controller owns.
    #[arg(long, default_value = annotations::DEFAULT_LOAD_BALANCER_CLASS)]
    load_balancer_class: String,
    /// Also allocate for LoadBalancer Services without a loadBalancerClass.
    #[arg(long)]
    default_class: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, alias = "metrics-addr", default_value = "0.0.0.0:9464")]
    metrics_address: SocketAddr,
    /// Namespace of the leader-election Lease (Kubernetes only).
    #[arg(long, env = "POD_NAMESPACE", default_value = "leafbridge-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "leafbridge-controller")]
    lease_name: String,
    /// Lease duration in seconds: a standby replica takes over within this time.
    #[arg(long, default_value_t = 15, value_parser = leader::parse_lease_duration)]
    lease_duration: u64,
    /// Log JSON lines.
    #[arg(long, alias = "json-logs")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CRD manifests generated from the Rust types.
    GenCrds {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmark the allocator: 100,000 allocations then 100,000 churn operations.
    Bench {
        #[arg(long, default_value_t = 100_000)]
        allocations: usize,
        #[arg(long, default_value_t = 100_000)]
        churn: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::GenCrds { out }) => {
            let dir = out.unwrap_or_else(crds::deploy_dir);
            crds::write(&dir).with_context(|| format!("writing {}", dir.display()))?;
            println!("wrote CRDs to {}", dir.display());
            return Ok(());
        }
        Some(Command::Bench { allocations, churn }) => {
            print!("{}", bench::run(allocations, churn));
            return Ok(());
        }
        None => {}
    }
    ops::init_tracing(cli.log_json);

    let metrics = Metrics::default();
    let ready = Readiness::new();
    let class = ClassConfig {
        class: cli.load_balancer_class.clone(),
        default_class: cli.default_class,
    };

    match &cli.state_dir {
        Some(dir) => {
            let source = StateSource::dir(dir)?;
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            source.register_metrics(&mut registry);
            let (addr, _ops) =
                ops::serve(cli.metrics_address, Arc::new(registry), ready.clone()).await?;
            tracing::info!(%addr, dir = %dir.display(), "state-directory backend");
            // A standby is healthy and ready; only the leader acts. (Not ready, a rolling
            // update with maxUnavailable 0 would wait for it forever.)
            ready.set_ready(true);
            let _lock = leader::dir_lock(dir).await?;
            tracing::info!("holding the state-directory controller lock");
            tokio::select! {
                r = reconcile::run(source, class, metrics, ready) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            let source = StateSource::kube(client.clone());
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            let (addr, _ops) =
                ops::serve(cli.metrics_address, Arc::new(registry), ready.clone()).await?;
            tracing::info!(%addr, "Kubernetes backend");
            let identity = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("leafbridge-controller-{}", std::process::id()));
            let lease = LeaseConfig {
                namespace: cli.lease_namespace.clone(),
                name: cli.lease_name.clone(),
                identity,
                duration_secs: cli.lease_duration,
                grace_secs: (cli.lease_duration / 3).max(1),
            };
            let mut rx = leader::kube_lease(client, &lease).await?;
            // Ready as a standby too: see the state-directory case.
            ready.set_ready(true);
            leader::wait_until_leader(&mut rx).await?;
            tracing::info!(lease = %lease.name, "became leader");
            tokio::select! {
                r = reconcile::run(source, class, metrics, ready) => r,
                _ = leader::wait_until_lost(&mut rx) => {
                    // Exit and let the Deployment restart us as a standby: a fresh start rebuilds
                    // the table from Service status, the only source of truth.
                    anyhow::bail!("lost the leader Lease")
                }
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}
