//! The controller against a mocked Kubernetes API server (`tower_test::mock::pair`), asserting
//! the exact requests: Service status apply, Events, IPPool status, and the leader Lease.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use leafbridge_api::StateSource;
use leafbridge_api::ops::Readiness;
use leafbridge_controller::leader::{self, LeaseConfig};
use leafbridge_controller::reconcile::{self, Metrics};
use leafbridge_controller::service::ClassConfig;
use serde_json::{Value, json};
use tower_test::mock;

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

type Responder = Box<dyn Fn(&Seen) -> (StatusCode, Value) + Send + Sync>;
/// Answers a watch request with these newline-separated watch events, or holds it open (None).
type Watcher = Box<dyn Fn(&Seen) -> Option<Vec<Value>> + Send + Sync>;

/// A mock API server: records every request; answers with `respond`; watch requests are held
/// open without an answer.
fn api_server(respond: Responder) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    api_server_with_watch(respond, Box::new(|_| None))
}

fn api_server_with_watch(respond: Responder, watch: Watcher) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let s = Seen {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(s.clone());
            if s.uri.contains("watch=true") {
                match watch(&s) {
                    None => held.push(send),
                    Some(events) => {
                        let mut body = Vec::new();
                        for e in events {
                            body.extend(serde_json::to_vec(&e).unwrap());
                            body.push(b'\n');
                        }
                        send.send_response(Response::builder().body(Body::from(body)).unwrap());
                    }
                }
                continue;
            }
            let (code, v) = respond(&s);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(svc, "default"), seen)
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn wait_until(
    seen: &Arc<Mutex<Vec<Seen>>>,
    what: &str,
    f: impl Fn(&[Seen]) -> bool,
) -> impl Future<Output = ()> {
    let seen = seen.clone();
    let what = what.to_owned();
    async move {
        let t = Instant::now();
        while !f(&seen.lock().unwrap()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}: {:#?}",
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn service(name: &str, status_ip: Option<&str>) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "resourceVersion": "1"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "leafbridge.io/lb", "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    if let Some(ip) = status_ip {
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}});
    }
    s
}

#[tokio::test]
async fn restores_from_status_then_applies_new_status_event_and_pool_status() {
    let (client, seen) = api_server(Box::new(|s: &Seen| {
        let path = s.uri.split('?').next().unwrap();
        match (&s.method, path) {
            (&Method::GET, "/api/v1/services") => {
                // `old` already holds .0 (from before a restart): `new` must not get it.
                list(
                    "ServiceList",
                    "v1",
                    vec![service("old", Some("203.0.113.0")), service("new", None)],
                )
            }
            (&Method::GET, "/apis/leafbridge.io/v1alpha1/ippools") => list(
                "IPPoolList",
                "leafbridge.io/v1alpha1",
                vec![
                    json!({"apiVersion": "leafbridge.io/v1alpha1", "kind": "IPPool",
                    "metadata": {"name": "office", "resourceVersion": "1", "generation": 1},
                    "spec": {"addresses": ["203.0.113.0/29"]}}),
                ],
            ),
            (&Method::GET, "/api/v1/namespaces") => list(
                "NamespaceList",
                "v1",
                vec![
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "resourceVersion": "1"}}),
                ],
            ),
            (&Method::POST, _) => (StatusCode::CREATED, s.body.clone()),
            (&Method::PATCH, _) => (StatusCode::OK, json!({})),
            _ => (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "unexpected"}),
            ),
        }
    }));
    let ready = Readiness::new();
    let class = ClassConfig {
        class: "leafbridge.io/lb".into(),
        default_class: false,
    };
    let task = tokio::spawn(reconcile::run(
        StateSource::kube(client),
        class,
        Metrics::default(),
        ready.clone(),
    ));

    wait_until(&seen, "IPPool status", |s| {
        s.iter().any(|r| r.uri.contains("/ippools/office/status"))
    })
    .await;
    wait_until(&seen, "Event", |s| {
        s.iter().any(|r| r.method == Method::POST)
    })
    .await;
    assert!(ready.is_ready());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    task.abort();

    let status_patches: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/services/") && r.method == Method::PATCH)
        .collect();
    assert_eq!(
        status_patches.len(),
        1,
        "only the new Service's status is written: {status_patches:#?}"
    );
    let p = status_patches[0];
    assert_eq!(
        p.uri,
        "/api/v1/namespaces/shop/services/new/status?&force=true&fieldManager=leafbridge-controller"
    );
    assert_eq!(
        p.body,
        json!({"apiVersion": "v1", "kind": "Service", "status": {
            "loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "VIP"}]},
            "conditions": [],
        }})
    );

    let events: Vec<&Seen> = seen.iter().filter(|r| r.method == Method::POST).collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0].uri,
        "/apis/events.k8s.io/v1/namespaces/shop/events?"
    );
    assert_eq!(events[0].body["reason"], "IPAllocated");
    assert_eq!(events[0].body["type"], "Normal");
    assert_eq!(events[0].body["regarding"]["name"], "new");
    assert_eq!(events[0].body["note"], "assigned 203.0.113.1 (pool office)");
    assert_eq!(
        events[0].body["reportingController"],
        "leafbridge-controller"
    );

    let pool: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/ippools/office/status"))
        .collect();
    assert_eq!(
        pool[0].uri,
        "/apis/leafbridge.io/v1alpha1/ippools/office/status?&force=true&fieldManager=leafbridge-controller"
    );
    let st = &pool.last().unwrap().body["status"];
    assert_eq!(pool.last().unwrap().body["kind"], "IPPool");
    assert_eq!(st["assignedIPv4"], 2);
    assert_eq!(st["availableIPv4"], "6");
    assert_eq!(st["availableIPv6"], "0");
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["conditions"][0]["type"], "Ready");
    assert_eq!(st["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn allocation_failure_is_a_warning_event_with_the_reason() {
    let (client, seen) = api_server(Box::new(|s: &Seen| {
        let path = s.uri.split('?').next().unwrap();
        match (&s.method, path) {
            (&Method::GET, "/api/v1/services") => {
                list("ServiceList", "v1", vec![service("web", None)])
            }
            (&Method::GET, "/apis/leafbridge.io/v1alpha1/ippools") => {
                list("IPPoolList", "leafbridge.io/v1alpha1", vec![])
            }
            (&Method::GET, "/api/v1/namespaces") => list("NamespaceList", "v1", vec![]),
            (&Method::POST, _) => (StatusCode::CREATED, s.body.clone()),
            _ => (StatusCode::OK, json!({})),
        }
    }));
    let class = ClassConfig {
        class: "leafbridge.io/lb".into(),
        default_class: false,
    };
    let metrics = Metrics::default();
    let task = tokio::spawn(reconcile::run(
        StateSource::kube(client),
        class,
        metrics.clone(),
        Readiness::new(),
    ));
    wait_until(&seen, "Event", |s| {
        s.iter().any(|r| r.method == Method::POST)
    })
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let ev = seen.iter().find(|r| r.method == Method::POST).unwrap();
    assert_eq!(ev.body["reason"], "AllocationFailed");
    assert_eq!(ev.body["type"], "Warning");
    assert_eq!(
        ev.body["note"],
        "NoPoolForFamily: no IPPool this Service may use has IPv4 addresses"
    );
    assert!(
        !seen
            .iter()
            .any(|r| r.method == Method::PATCH && r.uri.contains("/services/")),
        "no status on failure"
    );
    assert_eq!(
        metrics
            .failures
            .get_or_create(&vec![("reason".into(), "NoPoolForFamily".into())])
            .get(),
        1
    );
}

fn lease_cfg(identity: &str, duration_secs: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: "leafbridge-system".into(),
        name: "leafbridge-controller".into(),
        identity: identity.into(),
        duration_secs,
        grace_secs: (duration_secs / 3).max(1),
    }
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/leafbridge-system/leases";

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "leases \"leafbridge-controller\" not found"}),
    )
}

fn held_lease(holder: &str, renewed: k8s_openapi::jiff::Timestamp, rv: u64) -> Value {
    let t = renewed.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leafbridge-controller", "namespace": "leafbridge-system", "resourceVersion": rv.to_string()},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3, "acquireTime": t,
                 "renewTime": t, "leaseTransitions": 1},
    })
}

#[tokio::test]
async fn creates_and_acquires_the_lease_when_none_exists() {
    let state = Arc::new(Mutex::new(None::<Value>));
    let st = state.clone();
    let (client, seen) = api_server(Box::new(move |s: &Seen| {
        let mut cur = st.lock().unwrap();
        match (&s.method, &*cur) {
            (&Method::GET, None) => not_found(),
            (&Method::GET, Some(l)) => (StatusCode::OK, l.clone()),
            _ => {
                let mut l = s.body.clone();
                l["metadata"]["resourceVersion"] = "1".into();
                *cur = Some(l.clone());
                (StatusCode::CREATED, l)
            }
        }
    }));
    let mut rx = leader::kube_lease(client, &lease_cfg("replica-a", 15))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader::wait_until_leader(&mut rx))
        .await
        .unwrap()
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        (seen[0].method.clone(), seen[0].uri.as_str()),
        (
            Method::GET,
            format!("{LEASES}/leafbridge-controller").as_str()
        )
    );
    assert_eq!(
        (seen[1].method.clone(), seen[1].uri.as_str()),
        (
            Method::POST,
            format!("{LEASES}?&fieldManager=leafbridge-controller-lease-replica-a").as_str()
        )
    );
    let spec = &seen[1].body["spec"];
    assert_eq!(seen[1].body["metadata"]["name"], "leafbridge-controller");
    assert_eq!(spec["holderIdentity"], "replica-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["renewTime"].is_string() && spec["acquireTime"].is_string());
}

#[tokio::test]
async fn a_second_replica_takes_over_a_lease_it_saw_unchanged_for_its_duration() {
    // replica-a renewed 20 s ago and stopped. Its renewTime alone proves nothing (clocks may
    // differ): replica-b takes over once it has seen the record unchanged for 3 s.
    let renewed =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(20);
    let state = Arc::new(Mutex::new(held_lease("replica-a", renewed, 5)));
    let st = state.clone();
    let (client, seen) = api_server(Box::new(move |s: &Seen| {
        let mut cur = st.lock().unwrap();
        if s.method == Method::PUT {
            assert_eq!(
                s.body["metadata"]["resourceVersion"], "5",
                "a guarded replace"
            );
            *cur = s.body.clone();
            cur["metadata"]["resourceVersion"] = "6".into();
        }
        (StatusCode::OK, cur.clone())
    }));
    let t = Instant::now();
    let mut rx = leader::kube_lease(client, &lease_cfg("replica-b", 3))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), leader::wait_until_leader(&mut rx))
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "took over after {:?}, before seeing the record unchanged for its duration",
        t.elapsed()
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|r| r.method != Method::POST),
        "an existing Lease is not re-created"
    );
    let puts: Vec<&Seen> = seen.iter().filter(|r| r.method == Method::PUT).collect();
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(
        puts[0].uri,
        format!(
            "{LEASES}/leafbridge-controller?&fieldManager=leafbridge-controller-lease-replica-b"
        )
    );
    assert_eq!(puts[0].body["spec"]["holderIdentity"], "replica-b");
    assert_eq!(puts[0].body["spec"]["leaseTransitions"], 2);
    assert_eq!(state.lock().unwrap()["spec"]["leaseTransitions"], 2);
}

#[tokio::test]
async fn a_renewing_holder_is_not_taken_over_even_with_its_clock_an_hour_behind() {
    let behind =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let n = Arc::new(Mutex::new(0u64));
    let (client, seen) = api_server(Box::new(move |_s: &Seen| {
        // Every read finds a fresh renew by replica-a (by its own, slow, clock).
        let mut n = n.lock().unwrap();
        *n += 1;
        let renewed = behind + k8s_openapi::jiff::SignedDuration::from_millis(*n as i64 * 500);
        (StatusCode::OK, held_lease("replica-a", renewed, 10 + *n))
    }));
    let mut rx = leader::kube_lease(client, &lease_cfg("replica-b", 3))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(7), leader::wait_until_leader(&mut rx)).await;
    assert!(
        r.is_err(),
        "replica-b took over a Lease that was being renewed"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 3, "it kept reading: {seen:#?}");
    assert!(seen.iter().all(|r| r.method == Method::GET), "{seen:#?}");
}

#[tokio::test]
async fn a_leader_whose_renewals_fail_stops_acting_before_the_lease_can_expire() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = Arc::new(Mutex::new(None::<Value>));
    let (f, st) = (failing.clone(), state.clone());
    let (client, _seen) = api_server(Box::new(move |s: &Seen| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError", "message": "etcd is unhappy"}),
            );
        }
        let mut cur = st.lock().unwrap();
        match (&s.method, &*cur) {
            (&Method::GET, None) => not_found(),
            (&Method::GET, Some(l)) => (StatusCode::OK, l.clone()),
            _ => {
                let mut l = s.body.clone();
                l["metadata"]["resourceVersion"] = "1".into();
                *cur = Some(l.clone());
                (StatusCode::CREATED, l)
            }
        }
    }));
    let mut rx = leader::kube_lease(client, &lease_cfg("replica-a", 3))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader::wait_until_leader(&mut rx))
        .await
        .unwrap()
        .unwrap();
    // Leader since (at the latest) now; from here on every renew fails.
    let led = Instant::now();
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), leader::wait_until_lost(&mut rx))
        .await
        .expect("still leading although no renew succeeds");
    assert!(
        led.elapsed() < Duration::from_secs(3),
        "stopped acting {:?} after the last good renew: others may take over after 3 s",
        led.elapsed()
    );
}

#[tokio::test]
async fn changing_the_type_releases_the_address_clears_status_and_records_ip_released() {
    let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let respond: Responder = Box::new(|s: &Seen| {
        let path = s.uri.split('?').next().unwrap();
        match (&s.method, path) {
            (&Method::GET, "/api/v1/services") => list(
                "ServiceList",
                "v1",
                vec![service("web", Some("203.0.113.0"))],
            ),
            (&Method::GET, "/apis/leafbridge.io/v1alpha1/ippools") => list(
                "IPPoolList",
                "leafbridge.io/v1alpha1",
                vec![
                    json!({"apiVersion": "leafbridge.io/v1alpha1", "kind": "IPPool",
                    "metadata": {"name": "office", "resourceVersion": "1"},
                    "spec": {"addresses": ["203.0.113.0/29"]}}),
                ],
            ),
            (&Method::GET, "/api/v1/namespaces") => list("NamespaceList", "v1", vec![]),
            (&Method::POST, _) => (StatusCode::CREATED, s.body.clone()),
            _ => (StatusCode::OK, json!({})),
        }
    });
    let watch: Watcher = Box::new(move |s: &Seen| {
        if !s.uri.starts_with("/api/v1/services?")
            || served.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return None;
        }
        let mut web = service("web", Some("203.0.113.0"));
        web["spec"]["type"] = "ClusterIP".into();
        web["metadata"]["resourceVersion"] = "2".into();
        Some(vec![json!({"type": "MODIFIED", "object": web})])
    });
    let (client, seen) = api_server_with_watch(respond, watch);
    let class = ClassConfig {
        class: "leafbridge.io/lb".into(),
        default_class: false,
    };
    let task = tokio::spawn(reconcile::run(
        StateSource::kube(client),
        class,
        Metrics::default(),
        Readiness::new(),
    ));
    wait_until(&seen, "IPReleased", |s| {
        s.iter().any(|r| r.body["reason"] == "IPReleased")
    })
    .await;
    wait_until(&seen, "IPPool status with nothing assigned", |s| {
        s.iter().any(|r| {
            r.uri.contains("/ippools/office/status") && r.body["status"]["assignedIPv4"] == 0
        })
    })
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.uri.contains("/services/web/status"))
        .collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(
        patches[0].body,
        json!({"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {}, "conditions": []}})
    );
    let ev = seen
        .iter()
        .find(|r| r.body["reason"] == "IPReleased")
        .unwrap();
    assert_eq!(ev.body["note"], "released 203.0.113.0");
    assert!(
        !seen.iter().any(|r| r.body["reason"] == "IPAllocated"),
        "the restored address is not re-announced"
    );
}

/// The controller on a cluster with `services` (listed at start; `later` arrives as a
/// MODIFIED watch event) and one pool; Service status patches answered by `patch_status`
/// (the number of the patch, from 0).
fn run_on(
    services: Vec<Value>,
    later: Option<Value>,
    patch_status: impl Fn(usize) -> StatusCode + Send + Sync + 'static,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<Mutex<Vec<Seen>>>,
) {
    let served = std::sync::atomic::AtomicBool::new(false);
    let watch: Watcher = Box::new(move |s: &Seen| {
        if !s.uri.starts_with("/api/v1/services?")
            || served.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return None;
        }
        later
            .clone()
            .map(|o| vec![json!({"type": "MODIFIED", "object": o})])
    });
    let patches = std::sync::atomic::AtomicUsize::new(0);
    let respond: Responder = Box::new(move |s: &Seen| {
        let path = s.uri.split('?').next().unwrap();
        match (&s.method, path) {
            (&Method::GET, "/api/v1/services") => list("ServiceList", "v1", services.clone()),
            (&Method::GET, "/apis/leafbridge.io/v1alpha1/ippools") => list(
                "IPPoolList",
                "leafbridge.io/v1alpha1",
                vec![
                    json!({"apiVersion": "leafbridge.io/v1alpha1", "kind": "IPPool",
                    "metadata": {"name": "office", "resourceVersion": "1"},
                    "spec": {"addresses": ["203.0.113.0/29"]}}),
                ],
            ),
            (&Method::GET, "/api/v1/namespaces") => list("NamespaceList", "v1", vec![]),
            (&Method::PATCH, p) if p.starts_with("/api/v1/namespaces/shop/services/") => {
                let n = patches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let code = patch_status(n);
                if code.is_success() {
                    (code, s.body.clone())
                } else {
                    (
                        code,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code.as_u16(), "reason": "InternalError", "message": "try again"}),
                    )
                }
            }
            (&Method::POST, _) => (StatusCode::CREATED, s.body.clone()),
            _ => (StatusCode::OK, json!({})),
        }
    });
    let (client, seen) = api_server_with_watch(respond, watch);
    let class = ClassConfig {
        class: "leafbridge.io/lb".into(),
        default_class: false,
    };
    let task = tokio::spawn(reconcile::run(
        StateSource::kube(client),
        class,
        Metrics::default(),
        Readiness::new(),
    ));
    (task, seen)
}

#[tokio::test]
async fn ingress_left_by_a_type_change_while_the_controller_was_down_is_cleared() {
    // Our status write made it a LoadBalancer with 203.0.113.0; then, while no controller
    // ran, it became a ClusterIP Service.
    let mut web = service("web", Some("203.0.113.0"));
    web["spec"]["type"] = "ClusterIP".into();
    web["metadata"]["managedFields"] = json!([{"manager": "leafbridge-controller",
        "operation": "Apply", "apiVersion": "v1", "subresource": "status",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}}]);
    // Another controller's LoadBalancer: not ours to clear.
    let mut other = service("other", Some("192.0.2.10"));
    other["spec"]["loadBalancerClass"] = "example.com/lb".into();
    other["metadata"]["managedFields"] = json!([{"manager": "example-lb",
        "operation": "Apply", "apiVersion": "v1", "subresource": "status"}]);
    let (task, seen) = run_on(vec![web, other], None, |_| StatusCode::OK);
    wait_until(&seen, "the clearing status apply", |s| {
        s.iter().any(|r| r.uri.contains("/services/web/status"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let web_patch = seen
        .iter()
        .find(|r| r.uri.contains("/services/web/status"))
        .unwrap();
    assert_eq!(
        web_patch.body["status"],
        json!({"loadBalancer": {}, "conditions": []})
    );
    assert!(
        !seen
            .iter()
            .any(|r| r.uri.contains("/services/other/status")),
        "another controller's ingress was touched"
    );
}

#[tokio::test]
async fn a_failed_clearing_write_is_retried_and_the_address_released_only_after_it_succeeded() {
    let mut changed = service("web", Some("203.0.113.0"));
    changed["spec"]["type"] = "ClusterIP".into();
    changed["metadata"]["resourceVersion"] = "2".into();
    let web = service("web", Some("203.0.113.0"));
    let (task, seen) = run_on(vec![web], Some(changed), |n| {
        if n == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    });
    wait_until(&seen, "IPReleased after a retried write", |s| {
        s.iter().any(|r| r.body["reason"] == "IPReleased")
    })
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, r)| r.uri.contains("/services/web/status"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(patches.len(), 2, "one failed write, one retry");
    let released = seen
        .iter()
        .position(|r| r.body["reason"] == "IPReleased")
        .unwrap();
    assert!(
        released > patches[1],
        "released before the status write succeeded"
    );
}
