//! One active controller: a `coordination.k8s.io` Lease on Kubernetes (kube-lease-manager), an
//! advisory lock file on the state directory.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Lease timing: a standby replica takes over at most `duration` after the leader stops renewing.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
}

/// Start competing for the Lease; the receiver says whether we hold it.
pub async fn kube_lease(
    client: kube::Client,
    cfg: &LeaseConfig,
) -> anyhow::Result<watch::Receiver<bool>> {
    let mgr = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_secs)
        .with_grace(cfg.grace_secs)
        .with_field_manager(crate::reconcile::FIELD_MANAGER)
        .build()
        .await?;
    let (rx, _task) = mgr.watch().await;
    Ok(rx)
}

/// Wait until `rx` says we lead.
pub async fn wait_until_leader(rx: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    while !*rx.borrow_and_update() {
        rx.changed().await?;
    }
    Ok(())
}

/// Wait until we lose leadership.
pub async fn wait_until_lost(rx: &mut watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Take `<state-dir>/.leafbridge/controller.lock`, waiting while another instance holds it.
/// The kernel drops the lock when the holder exits, so a standby takes over at once.
pub async fn dir_lock(state_dir: &Path) -> anyhow::Result<File> {
    let meta = state_dir.join(leafbridge_api::state::dir::META_DIR);
    std::fs::create_dir_all(&meta)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(meta.join("controller.lock"))?;
    let mut logged = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !logged {
                    tracing::info!("another controller holds the state directory; standing by");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}
