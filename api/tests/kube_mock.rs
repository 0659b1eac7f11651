//! Kubernetes backend against a mocked API server (`tower_test::mock::pair`), asserting the exact
//! requests.

use futures::StreamExt;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Service;
use kube::client::Body;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use leafbridge_api::{IPPool, StateSource};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn mock() -> (StateSource, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (StateSource::kube(Client::new(svc, "default")), handle)
}

async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, v: serde_json::Value) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&v).unwrap()))
            .unwrap(),
    );
}

#[tokio::test]
async fn status_apply_is_a_forced_server_side_apply_on_the_status_subresource() {
    let (src, mut h) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = h.next_request().await.expect("request");
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(
            req.uri().to_string(),
            "/api/v1/namespaces/shop/services/web/status?&force=true&fieldManager=leafbridge-controller"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let body = body_json(req).await;
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "ipMode": "VIP"}]}}
            })
        );
        respond(
            send,
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}),
        );

        // Cluster-scoped CRD status goes to the cluster path.
        let (req, send) = h.next_request().await.expect("request");
        assert_eq!(
            req.uri().to_string(),
            "/apis/leafbridge.io/v1alpha1/ippools/office/status?&force=true&fieldManager=leafbridge-controller"
        );
        let body = body_json(req).await;
        assert_eq!(body["apiVersion"], "leafbridge.io/v1alpha1");
        assert_eq!(body["kind"], "IPPool");
        assert_eq!(body["status"]["assignedIPv4"], 3);
        respond(send, serde_json::json!({}));
    });
    let status =
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "ipMode": "VIP"}]}});
    src.apply_status::<Service>(Some("shop"), "web", "leafbridge-controller", status)
        .await
        .unwrap();
    src.apply_status::<IPPool>(
        None,
        "office",
        "leafbridge-controller",
        serde_json::json!({"assignedIPv4": 3}),
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn watch_lists_then_watches_all_namespaces() {
    let (src, mut h) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = h.next_request().await.expect("list");
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/services");
        assert!(
            req.uri().query().unwrap_or("").contains("limit=500"),
            "{}",
            req.uri()
        );
        respond(
            send,
            serde_json::json!({
                "apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "10"},
                "items": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9"}}]
            }),
        );
        let (req, _send) = h.next_request().await.expect("watch");
        assert_eq!(req.uri().path(), "/api/v1/services");
        let q = req.uri().query().unwrap().to_string();
        assert!(
            q.contains("watch=true") && q.contains("resourceVersion=10"),
            "{q}"
        );
        // Keep the watch open until the test ends.
        std::future::pending::<()>().await;
    });
    let mut s = src.watch::<Service>();
    assert!(matches!(s.next().await.unwrap().unwrap(), Event::Init));
    match s.next().await.unwrap().unwrap() {
        Event::InitApply(svc) => assert_eq!(svc.name_any(), "web"),
        _ => panic!("expected InitApply"),
    }
    assert!(matches!(s.next().await.unwrap().unwrap(), Event::InitDone));
    server.abort();
}

#[tokio::test]
async fn events_go_to_the_events_k8s_io_api_in_the_objects_namespace() {
    let (src, mut h) = mock();
    let sink = src.event_sink(Reporter {
        controller: "leafbridge-controller".into(),
        instance: None,
    });
    let server = tokio::spawn(async move {
        let (req, send) = h.next_request().await.expect("event");
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/shop/events"
        );
        let body = body_json(req).await;
        assert_eq!(body["reason"], "AllocationFailed");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["note"], "no pool has a free address");
        assert_eq!(body["regarding"]["name"], "web");
        assert_eq!(body["reportingController"], "leafbridge-controller");
        respond(send, body);
    });
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("web".into()),
        namespace: Some("shop".into()),
        ..Default::default()
    };
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "AllocationFailed".into(),
        note: Some("no pool has a free address".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    sink.publish(&ev, &reference).await.unwrap();
    server.await.unwrap();
}
