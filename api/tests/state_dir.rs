//! State-directory backend: listing, live changes, malformed files, status writes, Events.

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::Event;
use leafbridge_api::state::dir::{EVENTS_FILE, parse_documents};
use leafbridge_api::{BGPPeer, IPPool, StateSource};

const WAIT: Duration = Duration::from_secs(5);

fn svc_yaml(name: &str, ns: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  type: LoadBalancer\n  ports:\n  - port: {port}\n"
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

async fn next<K, S>(s: &mut S) -> Event<K>
where
    S: Stream<Item = Result<Event<K>, leafbridge_api::StateError>> + Unpin,
{
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("no event within 5 s")
        .expect("stream ended")
        .expect("stream error")
}

fn names<K: ResourceExt>(evs: &[Event<K>]) -> Vec<String> {
    evs.iter()
        .map(|e| match e {
            Event::Init => "Init".to_string(),
            Event::InitDone => "InitDone".to_string(),
            Event::InitApply(o) => format!("InitApply {}", o.name_any()),
            Event::Apply(o) => format!("Apply {}", o.name_any()),
            Event::Delete(o) => format!("Delete {}", o.name_any()),
        })
        .collect()
}

async fn init<K, S>(s: &mut S) -> Vec<Event<K>>
where
    S: Stream<Item = Result<Event<K>, leafbridge_api::StateError>> + Unpin,
{
    let mut out = vec![];
    loop {
        let e = next(s).await;
        let done = matches!(e, Event::InitDone);
        out.push(e);
        if done {
            return out;
        }
    }
}

/// `n` Services `s0`, `s1`, … in a file each, a source that rescans only on notify events, and
/// a watch of it that has listed them.
async fn services_in_files(
    n: usize,
) -> (
    tempfile::TempDir,
    StateSource,
    futures::stream::BoxStream<'static, Result<Event<Service>, leafbridge_api::StateError>>,
) {
    let d = tempfile::tempdir().unwrap();
    for i in 0..n {
        write(
            d.path(),
            &format!("s{i}.yaml"),
            &svc_yaml(&format!("s{i}"), "shop", 80),
        );
    }
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    (d, src, s)
}

#[tokio::test]
async fn lists_matching_objects_from_multi_document_files_in_subdirectories() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "apps/web.yaml",
        &format!(
            "{}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\n---\n",
            svc_yaml("web", "shop", 80),
            svc_yaml("db", "shop", 5432)
        ),
    );
    write(
        d.path(),
        "pools.yml",
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: office}\nspec:\n  addresses: [203.0.113.0/24]\n",
    );
    write(d.path(), ".hidden.yaml", &svc_yaml("ghost", "shop", 1));
    let src = StateSource::dir(d.path()).unwrap();

    let mut svcs = src.watch::<Service>();
    let evs = init(&mut svcs).await;
    assert_eq!(
        names(&evs),
        ["Init", "InitApply db", "InitApply web", "InitDone"]
    );

    let mut pools = src.watch::<IPPool>();
    let evs = init(&mut pools).await;
    assert_eq!(names(&evs), ["Init", "InitApply office", "InitDone"]);
    if let Event::InitApply(p) = &evs[1] {
        assert!(p.spec.auto_assign, "autoAssign defaults to true");
        assert_eq!(p.spec.addresses, ["203.0.113.0/24"]);
    }

    // A namespaced object without a namespace lands in `default`, like kubectl apply.
    let mut cms = src.watch::<ConfigMap>();
    let evs = init(&mut cms).await;
    match &evs[1] {
        Event::InitApply(cm) => assert_eq!(cm.namespace().as_deref(), Some("default")),
        e => panic!("unexpected {:?}", names(std::slice::from_ref(e))),
    }
}

#[tokio::test]
async fn file_changes_become_apply_and_delete_events() {
    let d = tempfile::tempdir().unwrap();
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    assert_eq!(names(&init(&mut s).await), ["Init", "InitDone"]);

    write(d.path(), "a.yaml", &svc_yaml("web", "shop", 80));
    assert_eq!(names(&[next(&mut s).await]), ["Apply web"]);

    write(d.path(), "a.yaml", &svc_yaml("web", "shop", 8080));
    match next(&mut s).await {
        Event::Apply(svc) => assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080),
        e => panic!("{:?}", names(&[e])),
    }

    std::fs::remove_file(d.path().join("a.yaml")).unwrap();
    assert_eq!(names(&[next(&mut s).await]), ["Delete web"]);
}

#[tokio::test]
async fn periodic_rescan_picks_up_changes_without_notify() {
    // The rescan is the safety net: with a short interval, changes arrive even if notify is slow.
    let d = tempfile::tempdir().unwrap();
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    write(d.path(), "x/y/z.yml", &svc_yaml("deep", "ns1", 53));
    assert_eq!(names(&[next(&mut s).await]), ["Apply deep"]);
}

#[tokio::test]
async fn malformed_file_keeps_objects_from_its_last_good_version() {
    let d = tempfile::tempdir().unwrap();
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    write(
        d.path(),
        "svc.yaml",
        &format!(
            "{}---\n{}",
            svc_yaml("web", "shop", 80),
            svc_yaml("db", "shop", 5432)
        ),
    );
    let mut s = src.watch::<Service>();
    assert_eq!(init(&mut s).await.len(), 4);

    // Broken YAML, then a document without a kind, then a Service whose spec does not parse.
    for bad in [
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\n  : : :".to_string(),
        "metadata: {name: web}\n".to_string(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: 7}\n"
            .to_string(),
    ] {
        write(d.path(), "svc.yaml", &bad);
        let r = tokio::time::timeout(Duration::from_millis(600), s.next()).await;
        assert!(
            r.is_err(),
            "a malformed file must not produce events, got {:?}",
            r.map(|o| o.map(|r| r.map(|e| names(&[e]))))
        );
    }
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    // The last bad version drops `db`: it is looked at (and reported) once it settled, and
    // produces no events either.
    let settle = leafbridge_api::state::dir::SETTLE + Duration::from_millis(1500);
    assert_eq!(quiet(&mut s, settle.as_millis() as u64).await, Ok(()));
    assert_eq!(sd.malformed_count("Service"), 3);

    // Fixing the file applies the real change (db removed) and nothing else.
    write(d.path(), "svc.yaml", &svc_yaml("web", "shop", 80));
    assert_eq!(names(&[next(&mut s).await]), ["Delete db"]);
}

#[tokio::test]
async fn status_write_is_atomic_merges_into_status_and_keeps_other_documents() {
    let d = tempfile::tempdir().unwrap();
    let src = StateSource::dir(d.path()).unwrap();
    let text = format!(
        "# operator's comment\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: shop}}\ndata: {{a: b}}\n",
        svc_yaml("web", "shop", 80)
    );
    write(d.path(), "all.yaml", &text);
    let mut s = src.watch::<Service>();
    init(&mut s).await;

    let status =
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "VIP"}]}});
    src.apply_status::<Service>(Some("shop"), "web", "leafbridge-controller", status)
        .await
        .unwrap();

    let docs = parse_documents(&std::fs::read(d.path().join("all.yaml")).unwrap()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0]["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.1"
    );
    assert_eq!(docs[0]["spec"]["ports"][0]["port"], 80);
    assert_eq!(docs[1]["data"]["a"], "b");
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    match next(&mut s).await {
        Event::Apply(svc) => {
            let ing = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
            assert_eq!(ing[0].ip.as_deref(), Some("203.0.113.1"));
            assert_eq!(ing[0].ip_mode.as_deref(), Some("VIP"));
        }
        e => panic!("{:?}", names(&[e])),
    }

    // Writing the same status again does not touch the file (no watch loop).
    let before = std::fs::metadata(d.path().join("all.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    let status =
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "VIP"}]}});
    src.apply_status::<Service>(Some("shop"), "web", "m", status)
        .await
        .unwrap();
    assert_eq!(
        before,
        std::fs::metadata(d.path().join("all.yaml"))
            .unwrap()
            .modified()
            .unwrap()
    );

    // Clearing: `{"loadBalancer": {}}` replaces the key, as an apply without the field would.
    src.apply_status::<Service>(
        Some("shop"),
        "web",
        "m",
        serde_json::json!({"loadBalancer": {}}),
    )
    .await
    .unwrap();
    let docs = parse_documents(&std::fs::read(d.path().join("all.yaml")).unwrap()).unwrap();
    assert_eq!(docs[0]["status"], serde_json::json!({"loadBalancer": {}}));

    let err = src
        .apply_status::<Service>(Some("shop"), "nope", "m", serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, leafbridge_api::StateError::NotFound { .. }),
        "{err}"
    );
}

#[test]
fn concurrent_status_writers_and_a_spec_editor_lose_nothing_and_readers_never_see_half_a_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("svcs.yaml");
    let body = |label: usize| {
        format!(
            "{}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: shop, labels: {{gen: \"{label}\"}}}}\n",
            svc_yaml("a", "shop", 1),
            svc_yaml("b", "shop", 2)
        )
    };
    std::fs::write(&path, body(0)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Two independent StateDir instances stand for two processes sharing the directory.
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let root = d.path().to_path_buf();
            std::thread::spawn(move || {
                let sd = leafbridge_api::state::dir::StateDir::open(root).unwrap();
                for i in 0..40 {
                    let st = serde_json::json!({"loadBalancer": {"ingress": [{"ip": format!("203.0.113.{i}")}]}});
                    sd.apply_status("v1", "Service", Some("shop"), name, &st).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let docs = parse_documents(&std::fs::read(&path).unwrap())
                    .expect("a reader saw a broken file");
                assert_eq!(docs.len(), 3);
                reads += 1;
            }
            reads
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let docs = parse_documents(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        docs[0]["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.39"
    );
    assert_eq!(
        docs[1]["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.39"
    );

    // A spec edit made by an editor (atomic rename, no lock) right before a status write is kept:
    // the writer re-reads the file before writing.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text
        .replace("gen: '0'", "gen: 'edited'")
        .replace("gen: \"0\"", "gen: 'edited'");
    let tmp = d.path().join(".editor-tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let sd = leafbridge_api::state::dir::StateDir::open(d.path().to_path_buf()).unwrap();
    sd.apply_status(
        "v1",
        "Service",
        Some("shop"),
        "a",
        &serde_json::json!({"loadBalancer": {}}),
    )
    .unwrap();
    let docs = parse_documents(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(docs[2]["metadata"]["labels"]["gen"], "edited");
    assert_eq!(docs[0]["status"]["loadBalancer"], serde_json::json!({}));
}

#[tokio::test]
async fn events_are_appended_as_core_v1_event_documents() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "svc.yaml", &svc_yaml("web", "shop", 80));
    let src = StateSource::dir(d.path()).unwrap();
    let sink = src.event_sink(Reporter {
        controller: "leafbridge-controller".into(),
        instance: None,
    });
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("web".into()),
        namespace: Some("shop".into()),
        ..Default::default()
    };
    for reason in ["IPAllocated", "AllocationFailed"] {
        let ev = KubeEvent {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some("203.0.113.1".into()),
            action: "Allocate".into(),
            secondary: None,
        };
        sink.publish(&ev, &reference).await.unwrap();
    }
    let docs = parse_documents(&std::fs::read(d.path().join(EVENTS_FILE)).unwrap()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "Event");
    assert_eq!(docs[0]["apiVersion"], "v1");
    assert_eq!(docs[0]["involvedObject"]["name"], "web");
    assert_eq!(docs[0]["metadata"]["namespace"], "shop");
    assert_eq!(docs[1]["reason"], "AllocationFailed");
    assert_eq!(docs[1]["source"]["component"], "leafbridge-controller");
    // The event log is hidden from the manifest scan: it never shows up as watched objects.
    let mut evs = src.watch::<k8s_openapi::api::core::v1::Event>();
    assert_eq!(names(&init(&mut evs).await), ["Init", "InitDone"]);
}

#[tokio::test]
async fn kind_list_files_are_expanded() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: x}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: x}\n",
    );
    let src = StateSource::dir(d.path()).unwrap();
    let mut s = src.watch::<Service>();
    assert_eq!(
        names(&init(&mut s).await),
        ["Init", "InitApply a", "InitApply b", "InitDone"]
    );
}

#[tokio::test]
async fn a_malformed_secret_is_reported_without_its_values() {
    // `data` values must be base64: this one is not, and serde would quote it in its error.
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: bgp, namespace: x}\ndata: {password: \"hunter2!!\"}\n";
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "secret.yaml", text);
    let src = StateSource::dir(d.path()).unwrap();
    let mut s = src.watch::<k8s_openapi::api::core::v1::Secret>();
    assert_eq!(names(&init(&mut s).await), ["Init", "InitDone"]);
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    assert_eq!(sd.malformed_count("Secret"), 1);
    let err = leafbridge_api::state::dir::parse_secret_for_test(text.as_bytes()).unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("withheld"), "{err}");
}

#[tokio::test]
async fn watches_go_idle_when_nothing_changes() {
    // Every rescan reads every file; those reads (and our own event log and temp files) must not
    // wake the watch up again.
    let d = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(
            d.path(),
            &format!("svc{i}.yaml"),
            &svc_yaml(&format!("s{i}"), "shop", 80),
        );
    }
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut a = src.watch::<Service>();
    let mut b = src.watch::<IPPool>();
    init(&mut a).await;
    init(&mut b).await;
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    // One real change is still seen.
    write(d.path(), "svc0.yaml", &svc_yaml("s0", "shop", 81));
    assert_eq!(names(&[next(&mut a).await]), ["Apply s0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sd.rescan_count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        sd.rescan_count(),
        before,
        "the watch keeps rescanning with nothing changing"
    );
}

#[test]
fn many_concurrent_status_writes_to_one_file_all_land() {
    let d = tempfile::tempdir().unwrap();
    let docs: Vec<String> = (0..50)
        .map(|i| svc_yaml(&format!("s{i}"), "shop", 80))
        .collect();
    write(d.path(), "many.yaml", &docs.join("---\n"));
    let sd = std::sync::Arc::new(
        leafbridge_api::state::dir::StateDir::open(d.path().to_path_buf()).unwrap(),
    );
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let sd = sd.clone();
            std::thread::spawn(move || {
                let st = serde_json::json!({"loadBalancer": {"ingress": [{"ip": format!("203.0.113.{i}")}]}});
                sd.apply_status("v1", "Service", Some("shop"), &format!("s{i}"), &st).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let docs = parse_documents(&std::fs::read(d.path().join("many.yaml")).unwrap()).unwrap();
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(doc["metadata"]["name"], format!("s{i}"));
        assert_eq!(
            doc["status"]["loadBalancer"]["ingress"][0]["ip"],
            format!("203.0.113.{i}")
        );
    }
    // An object that moved to another file is still found (the location hint is refreshed).
    std::fs::write(
        d.path().join("many.yaml"),
        docs[1..]
            .iter()
            .map(|d| leafbridge_api::yaml::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("---\n"),
    )
    .unwrap();
    write(
        d.path(),
        "moved.yaml",
        &leafbridge_api::yaml::to_string(&docs[0]).unwrap(),
    );
    sd.apply_status(
        "v1",
        "Service",
        Some("shop"),
        "s0",
        &serde_json::json!({"loadBalancer": {}}),
    )
    .unwrap();
    let moved = parse_documents(&std::fs::read(d.path().join("moved.yaml")).unwrap()).unwrap();
    assert_eq!(moved[0]["status"]["loadBalancer"], serde_json::json!({}));
}

#[tokio::test]
async fn moving_an_object_to_another_file_is_not_a_delete() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.yaml", &svc_yaml("web", "shop", 80));
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    write(d.path(), "b.yaml", &svc_yaml("web", "shop", 80));
    std::fs::remove_file(d.path().join("a.yaml")).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(800), s.next()).await;
    if let Ok(Some(Ok(ev))) = r {
        assert_eq!(names(&[ev]), ["Apply web"], "a move may only re-apply");
    }
    std::fs::remove_file(d.path().join("b.yaml")).unwrap();
    loop {
        let ev = next(&mut s).await;
        let n = names(std::slice::from_ref(&ev));
        if n == ["Delete web"] {
            break;
        }
        assert_eq!(n, ["Apply web"]);
    }
}

/// No event within `ms` milliseconds.
async fn quiet<K, S>(s: &mut S, ms: u64) -> Result<(), Vec<String>>
where
    K: ResourceExt,
    S: Stream<Item = Result<Event<K>, leafbridge_api::StateError>> + Unpin,
{
    match tokio::time::timeout(Duration::from_millis(ms), s.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(ev))) => Err(names(&[ev])),
        Ok(other) => Err(vec![format!("{:?}", other.map(|r| r.map(|_| ())))]),
    }
}

#[tokio::test]
async fn unchanged_documents_get_no_event_when_a_neighbour_changes_or_they_move_in_the_file() {
    let d = tempfile::tempdir().unwrap();
    let file = |ports: [(&str, u16); 3]| {
        ports
            .iter()
            .map(|(n, p)| svc_yaml(n, "shop", *p))
            .collect::<Vec<_>>()
            .join("---\n")
    };
    write(
        d.path(),
        "all.yaml",
        &file([("a", 80), ("b", 80), ("c", 80)]),
    );
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;

    write(
        d.path(),
        "all.yaml",
        &file([("a", 80), ("b", 81), ("c", 80)]),
    );
    assert_eq!(names(&[next(&mut s).await]), ["Apply b"]);
    assert_eq!(quiet(&mut s, 500).await, Ok(()));

    // Same documents in another order: nothing changed.
    write(
        d.path(),
        "all.yaml",
        &file([("c", 80), ("a", 80), ("b", 81)]),
    );
    assert_eq!(quiet(&mut s, 800).await, Ok(()));
}

#[tokio::test]
async fn objects_without_a_namespace_are_in_default_in_every_event_and_status_write() {
    let d = tempfile::tempdir().unwrap();
    let svc = |port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{port: {port}}}]}}\n"
        )
    };
    write(d.path(), "web.yaml", &svc(80));
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    let evs = init(&mut s).await;
    let Event::InitApply(o) = &evs[1] else {
        panic!("{:?}", names(&evs))
    };
    assert_eq!(o.namespace().as_deref(), Some("default"));

    src.apply_status::<Service>(
        Some("default"),
        "web",
        "m",
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    )
    .await
    .unwrap();
    match next(&mut s).await {
        Event::Apply(o) => {
            assert_eq!(o.namespace().as_deref(), Some("default"));
            let ing = o.status.unwrap().load_balancer.unwrap().ingress.unwrap();
            assert_eq!(ing[0].ip.as_deref(), Some("203.0.113.7"));
        }
        e => panic!("{:?}", names(&[e])),
    }

    std::fs::remove_file(d.path().join("web.yaml")).unwrap();
    match next(&mut s).await {
        Event::Delete(o) => assert_eq!(o.namespace().as_deref(), Some("default")),
        e => panic!("{:?}", names(&[e])),
    }
}

#[tokio::test]
async fn a_watch_that_lags_behind_catches_up_with_the_latest_version_only() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.yaml", &svc_yaml("web", "shop", 80));
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };

    // Not polled meanwhile: each version is scanned and published, none consumed.
    for port in [81, 82, 83] {
        write(d.path(), "a.yaml", &svc_yaml("web", "shop", port));
        let seen = sd.rescan_count();
        let t0 = std::time::Instant::now();
        while sd.rescan_count() == seen && t0.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match next(&mut s).await {
        Event::Apply(svc) => assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 83),
        e => panic!("{:?}", names(&[e])),
    }
    assert_eq!(quiet(&mut s, 500).await, Ok(()));
}

#[tokio::test]
async fn a_status_write_applies_its_object_only_and_a_repeat_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let text = ["a", "b", "c"]
        .map(|n| svc_yaml(n, "shop", 80))
        .join("---\n");
    write(d.path(), "all.yaml", &text);
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_secs(3600)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    for ip in ["203.0.113.2", "203.0.113.3"] {
        let status = serde_json::json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        src.apply_status::<Service>(Some("shop"), "b", "m", status.clone())
            .await
            .unwrap();
        match next(&mut s).await {
            Event::Apply(o) => {
                assert_eq!(o.name_any(), "b");
                let ing = o.status.unwrap().load_balancer.unwrap().ingress.unwrap();
                assert_eq!(ing[0].ip.as_deref(), Some(ip));
            }
            e => panic!("{:?}", names(&[e])),
        }
        assert_eq!(quiet(&mut s, 400).await, Ok(()));
        src.apply_status::<Service>(Some("shop"), "b", "m", status)
            .await
            .unwrap();
        assert_eq!(quiet(&mut s, 400).await, Ok(()));
    }
}

#[tokio::test]
async fn an_empty_or_cut_short_read_keeps_the_objects_until_the_file_settles() {
    let d = tempfile::tempdir().unwrap();
    let both = format!(
        "{}---\n{}",
        svc_yaml("web", "shop", 80),
        svc_yaml("api", "shop", 81)
    );
    write(d.path(), "svcs.yaml", &both);
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    // `cmd > svcs.yaml`: the file is empty for a moment, then cut short, then whole again.
    write(d.path(), "svcs.yaml", "");
    assert_eq!(
        quiet(&mut s, 600).await,
        Ok(()),
        "an empty read deleted objects"
    );
    write(d.path(), "svcs.yaml", &svc_yaml("web", "shop", 80));
    assert_eq!(
        quiet(&mut s, 600).await,
        Ok(()),
        "a cut-short read deleted objects"
    );
    write(d.path(), "svcs.yaml", &both);
    assert_eq!(
        quiet(&mut s, 2500).await,
        Ok(()),
        "the whole file again is no change"
    );
    // A file that stays without an object for the settle time has really lost it.
    write(d.path(), "svcs.yaml", &svc_yaml("web", "shop", 80));
    let t = std::time::Instant::now();
    assert_eq!(names(&[next(&mut s).await]), ["Delete api"]);
    assert!(t.elapsed() >= leafbridge_api::state::dir::SETTLE);
    // An emptied file too.
    write(d.path(), "svcs.yaml", "");
    assert_eq!(names(&[next(&mut s).await]), ["Delete web"]);
}

#[tokio::test]
async fn a_move_between_files_in_two_steps_is_not_a_delete() {
    let d = tempfile::tempdir().unwrap();
    let both = format!(
        "{}---\n{}",
        svc_yaml("web", "shop", 80),
        svc_yaml("api", "shop", 81)
    );
    write(d.path(), "a.yaml", &both);
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;
    // Cut from one file, saved; pasted into another a moment later.
    write(d.path(), "a.yaml", &svc_yaml("api", "shop", 81));
    tokio::time::sleep(Duration::from_millis(500)).await;
    write(d.path(), "b.yaml", &svc_yaml("web", "shop", 80));
    let deadline = std::time::Instant::now() + leafbridge_api::state::dir::SETTLE * 2;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_millis(200), s.next()).await {
            assert_eq!(names(&[ev]), ["Apply web"], "a move may only re-apply");
        }
    }
}

#[tokio::test]
async fn a_status_write_changes_only_the_status_block_of_the_operators_file() {
    let d = tempfile::tempdir().unwrap();
    // Comments, keys in the operator's order, flow style, an old status followed by a
    // comment and another document, and a document without status.
    let text = concat!(
        "# shop front, owned by the web team\n",
        "kind: Service\n",
        "apiVersion: v1\n",
        "metadata: {name: web, namespace: shop}   # flow style stays\n",
        "spec:\n",
        "  type: LoadBalancer\n",
        "  ports: [{port: 80}, {port: 443}]\n",
        "status:\n",
        "  loadBalancer: {}\n",
        "# the next one is the API\n",
        "---\n",
        "apiVersion: v1\n",
        "kind: Service\n",
        "metadata:\n",
        "  namespace: shop\n",
        "  name: api\n",
        "spec: {type: LoadBalancer}\n",
        "---\n",
        "{apiVersion: v1, kind: ConfigMap, metadata: {name: cfg, namespace: shop}, data: {z: '1', a: '2'}}\n",
    );
    write(d.path(), "all.yaml", text);
    let src = StateSource::dir(d.path()).unwrap();
    let ingress = |ip: &str| serde_json::json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    src.apply_status::<Service>(Some("shop"), "web", "m", ingress("203.0.113.1"))
        .await
        .unwrap();
    src.apply_status::<Service>(Some("shop"), "api", "m", ingress("203.0.113.2"))
        .await
        .unwrap();
    let after = std::fs::read_to_string(d.path().join("all.yaml")).unwrap();
    let want = text
        .replace(
            "status:\n  loadBalancer: {}\n",
            "status:\n  loadBalancer:\n    ingress:\n    - ip: \"203.0.113.1\"\n",
        )
        .replace(
            "spec: {type: LoadBalancer}\n",
            "spec: {type: LoadBalancer}\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: \"203.0.113.2\"\n",
        );
    assert_eq!(after, want);
}

#[tokio::test]
async fn only_yaml_yml_and_json_files_are_manifests() {
    let d = tempfile::tempdir().unwrap();
    for f in [
        "svc.yaml~",
        "#svc.yaml#",
        "svc.yaml.bak",
        "notes.txt",
        ".svc.yaml.swp",
    ] {
        write(d.path(), f, &svc_yaml("backup", "shop", 80));
    }
    write(d.path(), "a.yml", &svc_yaml("yml", "shop", 80));
    write(
        d.path(),
        "b.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "json", "namespace": "shop"}}"#,
    );
    let src = StateSource::dir(d.path()).unwrap();
    let mut s = src.watch::<Service>();
    assert_eq!(
        names(&init(&mut s).await),
        ["Init", "InitApply json", "InitApply yml", "InitDone"]
    );
}

#[tokio::test]
async fn status_writes_reach_items_of_kind_list_files() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: x}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: x}\n",
    );
    let src = StateSource::dir(d.path()).unwrap();
    src.apply_status::<Service>(
        Some("x"),
        "b",
        "m",
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}),
    )
    .await
    .unwrap();
    let docs = parse_documents(&std::fs::read(d.path().join("list.yaml")).unwrap()).unwrap();
    assert_eq!(docs[1]["metadata"]["name"], "b");
    assert_eq!(
        docs[1]["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.9"
    );
    assert!(docs[0].get("status").is_none());
}

#[tokio::test]
async fn a_symlinked_manifest_stays_a_symlink_and_its_target_gets_the_status() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("web.yaml"),
        svc_yaml("web", "shop", 80),
    )
    .unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("web.yaml"), d.path().join("web.yaml"))
        .unwrap();
    let src = StateSource::dir(d.path()).unwrap();
    src.apply_status::<Service>(
        Some("shop"),
        "web",
        "m",
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.3"}]}}),
    )
    .await
    .unwrap();
    let link = d.path().join("web.yaml");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let target = std::fs::read_to_string(elsewhere.path().join("web.yaml")).unwrap();
    assert!(target.contains("203.0.113.3"), "{target}");
}

#[tokio::test]
async fn a_status_write_that_misses_does_not_read_the_whole_tree_again() {
    let (_d, src, _s) = services_in_files(50).await;
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    let before = sd.file_reads();
    let err = src
        .apply_status::<Service>(Some("shop"), "nope", "m", serde_json::json!({"a": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, leafbridge_api::StateError::NotFound { .. }),
        "{err}"
    );
    assert_eq!(sd.file_reads() - before, 0, "the miss read files again");
}

#[tokio::test]
async fn repeated_events_are_aggregated_with_a_count() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "svc.yaml", &svc_yaml("web", "shop", 80));
    let src = StateSource::dir(d.path()).unwrap();
    let mut s = src.watch::<Service>();
    let web = match &init(&mut s).await[1] {
        Event::InitApply(svc) => svc.clone(),
        e => panic!("{:?}", names(std::slice::from_ref(e))),
    };
    let sink = src.event_sink(Reporter {
        controller: "leafbridge-controller".into(),
        instance: None,
    });
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "AllocationFailed".into(),
        note: Some("PoolExhausted: no free IPv4 address".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    for _ in 0..100 {
        sink.publish(&ev, &leafbridge_api::state::object_ref(&web))
            .await
            .unwrap();
    }
    let docs = parse_documents(&std::fs::read(d.path().join(EVENTS_FILE)).unwrap()).unwrap();
    assert!(
        docs.len() <= 8,
        "{} documents for one repeated Event",
        docs.len()
    );
    let first = &docs[0];
    let last = docs.last().unwrap();
    assert_eq!(last["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(last["firstTimestamp"], first["firstTimestamp"]);
    assert_eq!(last["count"], 64);
}

#[tokio::test]
async fn an_ippool_that_fails_the_schema_checks_keeps_its_last_good_version() {
    let d = tempfile::tempdir().unwrap();
    let pool = |addr: &str| {
        format!(
            "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {{name: office}}\nspec:\n  addresses: [\"{addr}\"]\n"
        )
    };
    write(d.path(), "pool.yaml", &pool("203.0.113.0/24"));
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    let mut s = src.watch::<IPPool>();
    init(&mut s).await;
    // A typo kubectl apply would refuse (host bits set): reported, the good version stays.
    write(d.path(), "pool.yaml", &pool("203.0.113.5/24"));
    assert_eq!(quiet(&mut s, 800).await, Ok(()));
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    assert_eq!(sd.malformed_count("IPPool"), 1);
    write(d.path(), "pool.yaml", &pool("100.64.0.0/24"));
    match next(&mut s).await {
        Event::Apply(p) => assert_eq!(p.spec.addresses, ["100.64.0.0/24"]),
        e => panic!("{:?}", names(&[e])),
    }
}

#[tokio::test]
async fn a_json_manifest_stays_json_after_a_status_write() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "web.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "LoadBalancer"}}"#,
    );
    let src = StateSource::dir(d.path()).unwrap();
    src.apply_status::<Service>(
        Some("shop"),
        "web",
        "m",
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.4"}]}}),
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(d.path().join("web.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
    assert_eq!(
        v["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.4"
    );
    assert_eq!(v["spec"]["type"], "LoadBalancer");
}

#[tokio::test]
async fn a_bgppeer_that_fails_the_schema_checks_keeps_its_last_good_version() {
    let d = tempfile::tempdir().unwrap();
    let peer = |addr: &str, asn: u32| {
        format!(
            "apiVersion: leafbridge.io/v1alpha1\nkind: BGPPeer\nmetadata: {{name: leaf}}\nspec:\n  peerAddress: \"{addr}\"\n  peerASN: {asn}\n  myASN: 64512\n"
        )
    };
    write(d.path(), "peer.yaml", &peer("192.0.2.1", 65000));
    let src = StateSource::dir_with_rescan(d.path(), Duration::from_millis(100)).unwrap();
    let mut s = src.watch::<BGPPeer>();
    init(&mut s).await;
    // Typos kubectl apply would refuse: reported, and the session keeps running as it was.
    write(d.path(), "peer.yaml", &peer("192.0.2.300", 65000));
    assert_eq!(quiet(&mut s, 800).await, Ok(()));
    write(d.path(), "peer.yaml", &peer("192.0.2.1", 0));
    assert_eq!(quiet(&mut s, 800).await, Ok(()));
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    assert_eq!(sd.malformed_count("BGPPeer"), 2);
    write(d.path(), "peer.yaml", &peer("192.0.2.2", 65000));
    match next(&mut s).await {
        Event::Apply(p) => assert_eq!(p.spec.peer_address, "192.0.2.2"),
        e => panic!("{:?}", names(&[e])),
    }
}

/// The next item, which must be an error.
async fn next_error<K, S>(s: &mut S) -> leafbridge_api::StateError
where
    K: ResourceExt,
    S: Stream<Item = Result<Event<K>, leafbridge_api::StateError>> + Unpin,
{
    match tokio::time::timeout(WAIT, s.next()).await {
        Ok(Some(Err(e))) => e,
        Ok(Some(Ok(ev))) => panic!("expected an error, got {:?}", names(&[ev])),
        other => panic!("expected an error, got {:?}", other.map(|o| o.is_some())),
    }
}

#[tokio::test]
async fn an_unreadable_directory_keeps_its_objects_reports_an_error_and_then_relists_them() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("state");
    let away = top.path().join("state.away");
    write(&root, "a.yaml", &svc_yaml("a", "shop", 80));
    write(&root, "b.yaml", &svc_yaml("b", "shop", 80));
    let src = StateSource::dir_with_rescan(&root, Duration::from_millis(200)).unwrap();
    let mut s = src.watch::<Service>();
    init(&mut s).await;

    // Gone from under us (an unmounted volume, a replaced directory): an error, no Delete.
    std::fs::rename(&root, &away).unwrap();
    let e = next_error(&mut s).await;
    assert!(e.to_string().contains("cannot list"), "{e}");
    assert_eq!(quiet(&mut s, 2500).await, Ok(()), "nothing is deleted");

    // A watch that starts now gets the error too, not an empty list.
    let mut late = src.watch::<Service>();
    next_error(&mut late).await;

    // Back, with one object more: it arrives, then the watch relists the same objects.
    write(&away, "c.yaml", &svc_yaml("c", "shop", 80));
    std::fs::rename(&away, &root).unwrap();
    let mut evs = vec![];
    loop {
        let e = next(&mut s).await;
        let done = matches!(e, Event::InitDone);
        evs.push(e);
        if done {
            break;
        }
    }
    assert_eq!(
        names(&evs),
        [
            "Apply c",
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone"
        ]
    );
    assert_eq!(
        names(&init(&mut late).await),
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone"
        ]
    );
    assert_eq!(quiet(&mut s, 500).await, Ok(()));
}

#[tokio::test]
async fn a_burst_of_file_writes_is_read_file_by_file_without_listing_the_tree_each_time() {
    let (d, src, mut s) = services_in_files(300).await;
    let StateSource::Dir(sd) = &src else {
        unreachable!()
    };
    let (listings, reads) = (sd.listing_count(), sd.file_reads());
    for i in 0..300 {
        write(
            d.path(),
            &format!("n{i}.yaml"),
            &svc_yaml(&format!("n{i}"), "shop", 80),
        );
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 300 {
        match next(&mut s).await {
            Event::Apply(o) => seen.insert(o.name_any()),
            e => panic!("{:?}", names(&[e])),
        };
    }
    assert_eq!(sd.listing_count(), listings, "a file write listed the tree");
    let read = sd.file_reads() - reads;
    assert!(
        (300..=900).contains(&read),
        "{read} reads for 300 new files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_status_writes_to_many_files_all_land_durably_renamed() {
    let (d, src, mut s) = services_in_files(64).await;
    let writes = (0..64).map(|i| {
        let src = src.clone();
        async move {
            let status = serde_json::json!({"loadBalancer": {"ingress": [{"ip": format!("203.0.113.{i}")}]}});
            src.apply_status::<Service>(Some("shop"), &format!("s{i}"), "m", status)
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    for i in 0..64 {
        let text = std::fs::read_to_string(d.path().join(format!("s{i}.yaml"))).unwrap();
        assert!(text.contains(&format!("ip: \"203.0.113.{i}\"\n")), "{text}");
        assert!(
            text.starts_with("apiVersion: v1\nkind: Service\n"),
            "{text}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("leafbridge-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 64 {
        match next(&mut s).await {
            Event::Apply(o) => seen.insert(o.name_any()),
            e => panic!("{:?}", names(&[e])),
        };
    }
}
