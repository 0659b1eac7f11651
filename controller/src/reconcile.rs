//! The reconciler: kube-runtime's `applier` over Services (triggered by Service, IPPool and
//! Namespace changes), fed by the state source, so it runs unchanged on Kubernetes and on a state
//! directory.
//!
//! Start-up order matters: all three stores are synced and the allocation table is rebuilt from
//! the Services' existing `status.loadBalancer.ingress` BEFORE the first reconcile, so a restart
//! never changes any Service's address.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use leafbridge_api::ops::Readiness;
use leafbridge_api::state::{EventSink, StateError, StateObject, object_ref};
use leafbridge_api::{IPPool, StateSource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::alloc::{Allocator, Family, SvcKey};
use crate::service::{self, ClassConfig};

/// The one field manager for everything this controller writes.
pub const FIELD_MANAGER: &str = "leafbridge-controller";

type Labels = Vec<(String, String)>;

/// Controller metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub in_use: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    pub total: MetricFamily<Labels, Gauge<f64, AtomicU64>>,
    pub failures: MetricFamily<Labels, Counter>,
    pub allocations: Counter,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "leafbridge_pool_addresses_in_use",
            "Addresses in use per IPPool and family",
            self.in_use.clone(),
        );
        r.register(
            "leafbridge_pool_addresses_capacity",
            "Usable addresses per IPPool and family",
            self.total.clone(),
        );
        r.register(
            "leafbridge_allocation_failures",
            "Failed allocations by reason",
            self.failures.clone(),
        );
        r.register(
            "leafbridge_allocations",
            "Addresses given to Services",
            self.allocations.clone(),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// Shared state of the reconciler.
pub struct Ctx {
    source: StateSource,
    events: EventSink,
    class: ClassConfig,
    alloc: Mutex<Allocator>,
    services: Store<Service>,
    pools: Store<IPPool>,
    namespaces: Store<Namespace>,
    metrics: Metrics,
    /// Last failure message published per Service: Events only when it changes.
    last_failure: Mutex<HashMap<SvcKey, String>>,
    pool_dirty: Notify,
    queue: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// State directory: no new address before this instant (start-up plus the directory's
    /// settle time). A Service caught between two files when we started (taken out of one,
    /// not yet written to the other) shows up with its address by then and is adopted first,
    /// so no new Service is given that address meanwhile.
    fresh_hold_until: std::sync::OnceLock<std::time::Instant>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drive one reflector store from the state source, calling `on_event` after each event.
fn drive<K: StateObject + kube::runtime::reflector::Lookup<DynamicType = ()>>(
    source: &StateSource,
    mut writer: reflector::store::Writer<K>,
    mut on_event: impl FnMut(&Event<K>) + Send + 'static,
) {
    let mut stream = source.watch::<K>();
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    writer.apply_watcher_event(&ev);
                    on_event(&ev);
                }
                Err(e) => {
                    tracing::warn!(kind = %<K as kube::Resource>::kind(&()), error = %e, "watch error; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

impl Ctx {
    fn enqueue_all(&self) {
        for s in self.services.state() {
            let _ = self.queue.send(ObjectRef::from_obj(&*s));
        }
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    fn refresh_pools(&self) {
        let pools = self.pools.state();
        let mut a = lock(&self.alloc);
        a.set_pools_dated(pools.iter().map(|p| {
            (
                p.metadata.name.as_deref().unwrap_or(""),
                &p.spec,
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        }));
    }

    /// Rebuild the allocation table from existing Service status (start-up).
    fn restore(&self) {
        self.refresh_pools();
        let mut svcs = self.services.state();
        svcs.sort_by_key(|s| service::key_of(s));
        let mut a = lock(&self.alloc);
        let mut restored = 0;
        for s in svcs.iter().filter(|s| service::is_managed(s, &self.class)) {
            let ips = service::ingress_ips(s);
            if ips.is_empty() {
                continue;
            }
            let key = service::key_of(s);
            let req =
                service::request_from(s, &self.namespace_labels(&key.0)).unwrap_or_else(|_| {
                    crate::alloc::ServiceRequest {
                        key: key.clone(),
                        ..Default::default()
                    }
                });
            match a.restore(&req, &ips) {
                Ok(()) => restored += 1,
                Err(e) => {
                    restored += 1;
                    tracing::warn!(service = %format!("{}/{}", key.0, key.1), error = %e,
                        "existing address breaks the sharing rules; kept, reported on reconcile")
                }
            }
        }
        tracing::info!(restored, "allocation table rebuilt from Service status");
    }

    fn on_service_deleted(&self, svc: &Service) {
        let key = service::key_of(svc);
        if let Some(ips) = lock(&self.alloc).release(&key) {
            tracing::info!(service = %format!("{}/{}", key.0, key.1), ?ips, "Service deleted; addresses released");
            self.pool_dirty.notify_one();
        }
        lock(&self.last_failure).remove(&key);
    }

    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Allocate".into(),
            secondary: None,
        };
        if let Err(e) = self.events.publish(&ev, &object_ref(svc)).await {
            tracing::warn!(error = %e, reason, "cannot publish Event");
        }
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let key = service::key_of(&svc);
    let name = format!("{}/{}", key.0, key.1);
    if !service::is_managed(&svc, &ctx.class) {
        // Type or class changed (maybe while we were down): clear what we wrote, and give the
        // address back only once that write succeeded, so a failed write is retried and no
        // other Service gets the address while this one still shows it.
        let (held, stale) = {
            let a = lock(&ctx.alloc);
            let held = a.get(&key).is_some();
            let stale =
                service::has_stale_ingress(&svc, FIELD_MANAGER, |ip| a.pool_of(ip).is_some());
            (held, stale)
        };
        if !held && !stale {
            return Ok(Action::await_change());
        }
        let cleared = json!({"loadBalancer": {}, "conditions": []});
        if service::owned_status(&svc) != cleared {
            ctx.source
                .apply_status::<Service>(Some(&key.0), &key.1, FIELD_MANAGER, cleared)
                .await?;
        }
        let released = lock(&ctx.alloc).release(&key);
        if let Some(ips) = released {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            ctx.event(
                &svc,
                EventType::Normal,
                "IPReleased",
                format!("released {}", list.join(", ")),
            )
            .await;
            ctx.pool_dirty.notify_one();
        }
        return Ok(Action::await_change());
    }
    if let Some(wait) = ctx
        .fresh_hold_until
        .get()
        .and_then(|t| t.checked_duration_since(std::time::Instant::now()))
        && service::request_from(&svc, &ctx.namespace_labels(&key.0))
            .is_ok_and(|req| req.status.is_empty() && lock(&ctx.alloc).get(&key).is_none())
    {
        tracing::debug!(service = %name, ?wait, "new address held until the state directory settles");
        return Ok(Action::requeue(wait));
    }
    let result = service::request_from(&svc, &ctx.namespace_labels(&key.0)).and_then(|req| {
        let mut a = lock(&ctx.alloc);
        // What status shows counts as held: adopting it is not a new allocation.
        let before = a
            .get(&key)
            .map(|x| x.ips.clone())
            .or_else(|| (!req.status.is_empty()).then(|| req.status.clone()));
        let granted = a.ensure_detailed(&req)?;
        let ips = granted.ips;
        let pools: Vec<String> = ips
            .iter()
            .map(|ip| a.pool_of(ip).unwrap_or("-").to_owned())
            .collect();
        Ok((before, ips, a.orphans(&key), pools, granted.kept))
    });
    match result {
        Ok((before, ips, orphans, pools, kept)) => {
            // Events only when the message changes, as for failures.
            let kept_msg: Vec<String> = kept
                .iter()
                .map(|(ip, e)| format!("kept {ip}: {}: {e}", e.reason()))
                .collect();
            let kept_msg = kept_msg.join("; ");
            let changed = {
                let mut lf = lock(&ctx.last_failure);
                if kept_msg.is_empty() {
                    lf.remove(&key);
                    false
                } else {
                    lf.insert(key.clone(), kept_msg.clone()).as_deref() != Some(kept_msg.as_str())
                }
            };
            if changed {
                tracing::warn!(service = %name, kept = %kept_msg,
                    "a family's request failed; the Service keeps the address it holds");
                ctx.event(&svc, EventType::Warning, "AddressKept", kept_msg)
                    .await;
            }
            let current = service::owned_status(&svc);
            let desired = service::desired_status(&ips, &orphans, &current, &now());
            if desired != current {
                ctx.source
                    .apply_status::<Service>(Some(&key.0), &key.1, FIELD_MANAGER, desired)
                    .await?;
            }
            if before.as_ref() != Some(&ips) {
                let n = ips.len()
                    - before
                        .as_ref()
                        .map_or(0, |b| b.iter().filter(|i| ips.contains(i)).count());
                ctx.metrics.allocations.inc_by(n as u64);
                let desc: Vec<String> = ips
                    .iter()
                    .zip(&pools)
                    .map(|(ip, p)| format!("{ip} (pool {p})"))
                    .collect();
                tracing::info!(service = %name, addresses = %desc.join(", "), "allocated");
                ctx.event(
                    &svc,
                    EventType::Normal,
                    "IPAllocated",
                    format!("assigned {}", desc.join(", ")),
                )
                .await;
                ctx.pool_dirty.notify_one();
            }
            if !orphans.is_empty()
                && current["conditions"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
            {
                let list: Vec<String> = orphans.iter().map(ToString::to_string).collect();
                ctx.event(
                    &svc,
                    EventType::Warning,
                    "AddressOutsidePools",
                    format!(
                        "{} is in no IPPool any more; keeping it until an operator acts",
                        list.join(", ")
                    ),
                )
                .await;
            }
        }
        Err(e) => {
            ctx.metrics
                .failures
                .get_or_create(&vec![("reason".into(), e.reason().into())])
                .inc();
            let msg = e.to_string();
            let changed = lock(&ctx.last_failure)
                .insert(key.clone(), msg.clone())
                .as_deref()
                != Some(msg.as_str());
            if changed {
                tracing::warn!(service = %name, reason = e.reason(), error = %msg, "allocation failed");
                ctx.event(
                    &svc,
                    EventType::Warning,
                    "AllocationFailed",
                    format!("{}: {msg}", e.reason()),
                )
                .await;
            }
            // Pool and Service edits re-trigger; the periodic retry covers anything else.
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, err: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn family_label(f: Family) -> String {
    f.to_string()
}

/// Keep every IPPool's status and the pool metrics current.
async fn pool_status_loop(ctx: Arc<Ctx>) {
    loop {
        ctx.pool_dirty.notified().await;
        // Coalesce bursts (a thousand Services allocated at start-up → one status write).
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Garbage-collect allocations of Services that vanished without a Delete event (relist).
        {
            let live: std::collections::BTreeSet<SvcKey> = ctx
                .services
                .state()
                .iter()
                .map(|s| service::key_of(s))
                .collect();
            let mut a = lock(&ctx.alloc);
            let gone: Vec<SvcKey> = a
                .services()
                .map(|(k, _)| k.clone())
                .filter(|k| !live.contains(k))
                .collect();
            for k in gone {
                a.release(&k);
            }
        }
        ctx.metrics.in_use.clear();
        ctx.metrics.total.clear();
        for pool in ctx.pools.state() {
            let name = pool.name_any();
            let (stats, problem) = {
                let a = lock(&ctx.alloc);
                (a.stats(&name), a.pool_problem(&name).cloned())
            };
            for f in [Family::IPv4, Family::IPv6] {
                let l = vec![
                    ("pool".into(), name.clone()),
                    ("family".into(), family_label(f)),
                ];
                ctx.metrics
                    .in_use
                    .get_or_create(&l)
                    .set(stats.assigned(f) as f64);
                ctx.metrics
                    .total
                    .get_or_create(&l)
                    .set(stats.total(f) as f64);
            }
            let (status, reason, message) = match &problem {
                None => (
                    "True",
                    "Valid",
                    "addresses valid and not overlapping".to_owned(),
                ),
                Some(p) => ("False", p.reason(), p.to_string()),
            };
            let current = pool
                .status
                .clone()
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            let prev = current["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .cloned();
            let since = match &prev {
                Some(p) if p["status"] == status && p["reason"] == reason => {
                    p["lastTransitionTime"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(now)
                }
                _ => now(),
            };
            let desired = json!({
                "conditions": [{
                    "type": "Ready", "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since,
                    "observedGeneration": pool.metadata.generation,
                }],
                "assignedIPv4": stats.assigned(Family::IPv4) as u64,
                "availableIPv4": stats.available(Family::IPv4).to_string(),
                "assignedIPv6": stats.assigned(Family::IPv6) as u64,
                "availableIPv6": stats.available(Family::IPv6).to_string(),
                "observedGeneration": pool.metadata.generation,
            });
            let mut desired = desired;
            if pool.metadata.generation.is_none() {
                // State-directory manifests have no generation; do not write nulls.
                desired
                    .as_object_mut()
                    .map(|m| m.remove("observedGeneration"));
                desired["conditions"][0]
                    .as_object_mut()
                    .map(|m| m.remove("observedGeneration"));
            }
            if strip_nulls(&current) != desired
                && let Err(e) = ctx
                    .source
                    .apply_status::<IPPool>(None, &name, FIELD_MANAGER, desired)
                    .await
            {
                tracing::warn!(pool = %name, error = %e, "cannot write IPPool status");
            }
        }
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Run the controller until the watches end (never, normally).
pub async fn run(
    source: StateSource,
    class: ClassConfig,
    metrics: Metrics,
    ready: Readiness,
) -> anyhow::Result<()> {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (pool_store, pool_writer) = reflector::store::<IPPool>();
    let (ns_store, ns_writer) = reflector::store::<Namespace>();
    let (tx, mut rx) = mpsc::unbounded_channel::<ObjectRef<Service>>();
    let events = source.event_sink(Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    });
    let ctx = Arc::new(Ctx {
        source: source.clone(),
        events,
        class,
        alloc: Mutex::new(Allocator::new()),
        services: svc_store.clone(),
        pools: pool_store.clone(),
        namespaces: ns_store.clone(),
        metrics,
        last_failure: Mutex::default(),
        pool_dirty: Notify::new(),
        queue: tx.clone(),
        fresh_hold_until: std::sync::OnceLock::new(),
    });

    let c = ctx.clone();
    drive::<Service>(&source, svc_writer, move |ev| match ev {
        Event::Apply(s) | Event::InitApply(s) => {
            let _ = c.queue.send(ObjectRef::from_obj(s));
        }
        Event::Delete(s) => c.on_service_deleted(s),
        Event::InitDone => c.pool_dirty.notify_one(),
        Event::Init => {}
    });
    let ready_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for_pools_and_namespaces(&source, &ctx, pool_writer, ns_writer, ready_flag.clone());

    svc_store.wait_until_ready().await?;
    pool_store.wait_until_ready().await?;
    ns_store.wait_until_ready().await?;
    ctx.restore();
    if matches!(source, StateSource::Dir(_)) {
        let _ = ctx
            .fresh_hold_until
            .set(std::time::Instant::now() + leafbridge_api::state::dir::SETTLE);
    }
    ready_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    ready.set_ready(true);
    ctx.enqueue_all();
    ctx.pool_dirty.notify_one();
    tokio::spawn(pool_status_loop(ctx.clone()));

    let queue = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
    kube::runtime::applier(
        |svc, ctx| Box::pin(reconcile(svc, ctx)),
        error_policy,
        ctx,
        svc_store,
        queue,
        // Bounded: each reconcile may block a thread on a status write (state directory).
        kube::runtime::Config::default().concurrency(32),
    )
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "reconcile error");
        }
    })
    .await;
    Ok(())
}

fn for_pools_and_namespaces(
    source: &StateSource,
    ctx: &Arc<Ctx>,
    pool_writer: reflector::store::Writer<IPPool>,
    ns_writer: reflector::store::Writer<Namespace>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let changed = {
        let ctx = ctx.clone();
        move || {
            // Before start-up restore the table is rebuilt anyway.
            if ready.load(std::sync::atomic::Ordering::SeqCst) {
                ctx.refresh_pools();
                ctx.enqueue_all();
                ctx.pool_dirty.notify_one();
            }
        }
    };
    let c2 = changed.clone();
    // Only spec edits matter: our own status writes come back as Apply events too, and must not
    // re-trigger every Service.
    let mut specs: HashMap<String, leafbridge_api::IPPoolSpec> = HashMap::new();
    drive::<IPPool>(source, pool_writer, move |ev| {
        let relevant = match ev {
            Event::Apply(p) => specs.insert(p.name_any(), p.spec.clone()).as_ref() != Some(&p.spec),
            Event::InitApply(p) => {
                specs.insert(p.name_any(), p.spec.clone());
                false
            }
            Event::Delete(p) => specs.remove(&p.name_any()).is_some(),
            Event::InitDone => true,
            Event::Init => {
                specs.clear();
                false
            }
        };
        if relevant {
            changed();
        }
    });
    let mut labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    drive::<Namespace>(source, ns_writer, move |ev| {
        let relevant = match ev {
            Event::Apply(n) => {
                let l = n.metadata.labels.clone().unwrap_or_default();
                labels.insert(n.name_any(), l.clone()).as_ref() != Some(&l)
            }
            Event::InitApply(n) => {
                labels.insert(n.name_any(), n.metadata.labels.clone().unwrap_or_default());
                false
            }
            Event::Delete(n) => labels.remove(&n.name_any()).is_some(),
            Event::InitDone => true,
            Event::Init => {
                labels.clear();
                false
            }
        };
        if relevant {
            c2();
        }
    });
}

/// Addresses per Service as the controller's table holds them (tests, diagnostics).
pub fn table(a: &Allocator) -> BTreeMap<SvcKey, Vec<IpAddr>> {
    a.services()
        .map(|(k, v)| (k.clone(), v.ips.clone()))
        .collect()
}
