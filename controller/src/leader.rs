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

/// `--lease-duration`: whole seconds, at least 3 (the leader renews a third of the duration
/// before expiry, at least 1 s, and that must leave time for a retry) and at most one hour.
pub fn parse_lease_duration(s: &str) -> Result<u64, String> {
    let d: u64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(3..=3600).contains(&d) {
        return Err(format!(
            "{d} s is out of range: the lease duration must be 3 to 3600 seconds"
        ));
    }
    Ok(d)
}

/// The field manager of this replica's Lease writes: one per replica (kube-lease-manager
/// requires it unique; with a shared one two standbys could both win a takeover).
pub fn lease_field_manager(identity: &str) -> String {
    format!("{}-lease-{identity}", crate::reconcile::FIELD_MANAGER)
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
        .with_field_manager(lease_field_manager(&cfg.identity))
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

/// The state-directory controller lock: held while the value lives.
#[derive(Debug)]
pub struct DirLock {
    _root: File,
    _file: File,
}

/// Take the state-directory controller lock, waiting while another instance holds it. The
/// kernel drops the lock when the holder exits, so a standby takes over at once.
///
/// The lock is on the state directory itself (an operator deleting `.leafbridge/` cannot
/// remove it and let a standby lock a fresh file), and on `.leafbridge/controller.lock` too,
/// which is what earlier versions lock.
pub async fn dir_lock(state_dir: &Path) -> anyhow::Result<DirLock> {
    let root = File::open(state_dir)?;
    wait_for_lock(&root).await?;
    let meta = state_dir.join(leafbridge_api::state::dir::META_DIR);
    std::fs::create_dir_all(&meta)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(meta.join("controller.lock"))?;
    wait_for_lock(&f).await?;
    Ok(DirLock {
        _root: root,
        _file: f,
    })
}

async fn wait_for_lock(f: &File) -> anyhow::Result<()> {
    let mut logged = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
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
