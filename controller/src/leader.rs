//! One active controller: a `coordination.k8s.io` Lease on Kubernetes (client-go's leader
//! election: [`Elector`] decides, [`kube_lease`] reads and writes), an advisory lock on the
//! state directory.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

/// Lease timing: a standby replica takes over at most `duration` after the leader stops
/// renewing; the leader renews `grace` before its lease would expire.
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

/// The field manager of this replica's Lease writes: one per replica, so that the Lease's
/// managedFields say which replica wrote what.
pub fn lease_field_manager(identity: &str) -> String {
    format!("{}-lease-{identity}", crate::reconcile::FIELD_MANAGER)
}

/// client-go's leader election over a Lease, without I/O: time comes in as arguments.
///
/// Expiry is judged from our own monotonic clock, never by comparing the Lease's `renewTime`
/// with our wall clock (replicas' clocks may disagree): a record held by another replica is
/// expired only when we have seen it unchanged for its whole `leaseDurationSeconds`, as
/// client-go's `observedTime` does. And the leader stops acting `renew_deadline` after its last
/// successful renew began, which is before any other replica can see the record expire.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    duration: Duration,
    renew_deadline: Duration,
    /// The record last read or written, and when we first saw it (our clock).
    observed: Option<(LeaseSpec, Instant)>,
    /// When our last successful acquire or renew began.
    renewed: Option<Instant>,
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Another replica holds it and it has not expired as far as we have seen.
    Follow { holder: String },
    /// Write this record (acquire, take over or renew), guarded by the resourceVersion read.
    Write(LeaseSpec),
}

impl Elector {
    pub fn new(identity: impl Into<String>, duration: Duration, renew_deadline: Duration) -> Self {
        Self {
            identity: identity.into(),
            duration,
            renew_deadline,
            observed: None,
            renewed: None,
        }
    }

    /// The Lease's spec as just read (None: there is no Lease) at `now`; `wall` is the time
    /// written into `renewTime`/`acquireTime` (for people and other tools; nobody here
    /// compares it with a clock).
    pub fn observe(&mut self, current: Option<&LeaseSpec>, now: Instant, wall: Timestamp) -> Next {
        if let Some(spec) = current {
            if self.observed.as_ref().is_none_or(|(o, _)| o != spec) {
                self.observed = Some((spec.clone(), now));
            }
            let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
            if let Some(h) = holder
                && h != self.identity
            {
                self.renewed = None;
                let d = spec
                    .lease_duration_seconds
                    .filter(|d| *d > 0)
                    .map_or(self.duration, |d| Duration::from_secs(d as u64));
                let seen_at = self.observed.as_ref().map_or(now, |(_, t)| *t);
                if now < seen_at + d {
                    return Next::Follow {
                        holder: h.to_owned(),
                    };
                }
            }
        }
        let ours = current.and_then(|s| s.holder_identity.as_deref()) == Some(&self.identity);
        let mut spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(0),
            ..Default::default()
        };
        if let Some(cur) = current {
            if ours {
                spec.acquire_time = cur.acquire_time.clone().or(spec.acquire_time);
                spec.lease_transitions = cur.lease_transitions.or(Some(0));
            } else {
                spec.lease_transitions = Some(cur.lease_transitions.unwrap_or(0) + 1);
            }
        }
        Next::Write(spec)
    }

    /// The write of `spec`, begun at `began`, succeeded: we lead until `began + renew_deadline`
    /// unless a renew succeeds before.
    pub fn written(&mut self, spec: LeaseSpec, began: Instant) {
        self.observed = Some((spec, began));
        self.renewed = Some(began);
    }

    /// Until when we may act as leader (None: we do not lead).
    pub fn leader_until(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.renew_deadline)
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until().is_some_and(|t| now < t)
    }
}

/// Renew deadline and retry period for a lease duration and grace (see [`LeaseConfig`]): the
/// leader renews every retry period and gives up `duration - grace` after its last good
/// renew; each attempt is cut off after one retry period, so it notices within
/// `duration - grace + retry`, still before the lease can expire for anyone else.
fn timing(cfg: &LeaseConfig) -> (Duration, Duration, Duration) {
    let duration = Duration::from_secs(cfg.duration_secs.max(3));
    let grace = Duration::from_secs(cfg.grace_secs.clamp(1, cfg.duration_secs.max(3) / 3));
    let renew_deadline = duration - grace;
    let retry = (grace / 2).max(Duration::from_millis(250));
    (duration, renew_deadline, retry)
}

/// Start competing for the Lease; the receiver says whether we hold it. It turns false as soon
/// as renewing has failed (for any reason) for the renew deadline; the task ends when every
/// receiver is gone.
pub async fn kube_lease(
    client: kube::Client,
    cfg: &LeaseConfig,
) -> anyhow::Result<watch::Receiver<bool>> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let (duration, renew_deadline, retry) = timing(cfg);
    let (tx, rx) = watch::channel(false);
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let mut el = Elector::new(&cfg.identity, duration, renew_deadline);
        let set = |leading: bool| {
            tx.send_if_modified(|v| std::mem::replace(v, leading) != leading);
        };
        loop {
            let began = Instant::now();
            match tokio::time::timeout(retry, attempt(&api, &cfg, &mut el, began)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "Lease read or write failed")
                }
                Err(_) => tracing::warn!(lease = %cfg.name, "Lease request timed out"),
            }
            set(el.is_leader(Instant::now()));
            if tx.is_closed() {
                return;
            }
            let next = began + retry;
            let wake = el.leader_until().filter(|d| *d < next).unwrap_or(next);
            tokio::time::sleep_until(wake).await;
            set(el.is_leader(Instant::now()));
        }
    });
    Ok(rx)
}

async fn attempt(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    el: &mut Elector,
    began: Instant,
) -> Result<(), kube::Error> {
    let cur = api.get_opt(&cfg.name).await?;
    let spec = match el.observe(
        cur.as_ref().and_then(|l| l.spec.as_ref()),
        began,
        Timestamp::now(),
    ) {
        Next::Follow { .. } => return Ok(()),
        Next::Write(spec) => spec,
    };
    let pp = PostParams {
        field_manager: Some(lease_field_manager(&cfg.identity)),
        ..Default::default()
    };
    match cur {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            api.create(&pp, &lease).await?;
        }
        // A replace carries the resourceVersion read: if another replica wrote meanwhile,
        // the API server answers 409 and nothing changes.
        Some(mut lease) => {
            lease.spec = Some(spec.clone());
            lease.metadata.managed_fields = None;
            api.replace(&cfg.name, &pp, &lease).await?;
        }
    }
    el.written(spec, began);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);
    const DEADLINE: Duration = Duration::from_secs(10);

    fn held_by(who: &str, renewed: &str, transitions: i32) -> LeaseSpec {
        let t = MicroTime(renewed.parse().unwrap());
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(t.clone()),
            renew_time: Some(t),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn wall() -> Timestamp {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn another_holders_record_expires_only_after_we_saw_it_unchanged_for_its_duration() {
        let mut el = Elector::new("b", D, DEADLINE);
        let t0 = Instant::now();
        // Its renewTime is a day old by our clock: that says nothing (clocks differ).
        let rec = held_by("a", "2026-12-02T10:00:00Z", 1);
        assert_eq!(
            el.observe(Some(&rec), t0, wall()),
            Next::Follow { holder: "a".into() }
        );
        assert!(matches!(
            el.observe(Some(&rec), t0 + D - Duration::from_millis(1), wall()),
            Next::Follow { .. }
        ));
        let Next::Write(spec) = el.observe(Some(&rec), t0 + D, wall()) else {
            panic!("an unchanged record is expired after its duration")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(
            spec.lease_transitions,
            Some(2),
            "a takeover is a transition"
        );
    }

    #[test]
    fn a_holder_that_keeps_renewing_is_never_taken_over_whatever_its_clock_says() {
        let mut el = Elector::new("b", D, DEADLINE);
        let t0 = Instant::now();
        for i in 0..20u64 {
            // The holder's clock is an hour behind ours, but its record changes every 2 s.
            let rec = held_by("a", &format!("2026-12-03T09:00:{:02}Z", i * 2), 1);
            let now = t0 + Duration::from_secs(2 * i);
            assert!(
                matches!(el.observe(Some(&rec), now, wall()), Next::Follow { .. }),
                "took over a renewing holder at step {i}"
            );
        }
    }

    #[test]
    fn the_leader_stops_acting_at_the_renew_deadline_unless_a_renew_succeeds() {
        let mut el = Elector::new("a", D, DEADLINE);
        let t0 = Instant::now();
        let Next::Write(spec) = el.observe(None, t0, wall()) else {
            panic!("no Lease: create it")
        };
        assert!(!el.is_leader(t0), "not before the write succeeded");
        el.written(spec.clone(), t0);
        assert!(el.is_leader(t0 + DEADLINE - Duration::from_millis(1)));
        // Renewing fails from here on (any error): we stop before others could take over.
        assert!(!el.is_leader(t0 + DEADLINE));
        assert!(DEADLINE < D);
        // A renew keeps acquireTime and the transition count.
        let Next::Write(renew) = el.observe(Some(&spec), t0 + Duration::from_secs(5), wall())
        else {
            panic!("we hold it: renew")
        };
        assert_eq!(renew.acquire_time, spec.acquire_time);
        assert_eq!(renew.lease_transitions, Some(0));
        el.written(renew, t0 + Duration::from_secs(5));
        assert!(el.is_leader(t0 + DEADLINE));
    }

    #[test]
    fn another_holder_seen_means_we_do_not_lead() {
        let mut el = Elector::new("a", D, DEADLINE);
        let t0 = Instant::now();
        let Next::Write(spec) = el.observe(None, t0, wall()) else {
            panic!()
        };
        el.written(spec, t0);
        let theirs = held_by("b", "2026-12-03T10:00:01Z", 1);
        assert!(matches!(
            el.observe(Some(&theirs), t0 + Duration::from_secs(1), wall()),
            Next::Follow { .. }
        ));
        assert!(!el.is_leader(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn lease_duration_is_validated() {
        assert_eq!(parse_lease_duration("15"), Ok(15));
        assert!(parse_lease_duration("2").is_err());
        assert!(parse_lease_duration("0").is_err());
        assert!(parse_lease_duration("3601").is_err());
        assert!(parse_lease_duration("ten").is_err());
    }
}
