//! `StateSource::get` and `create_if_missing` on the Kubernetes backend against a mocked API
//! server (`tower_test::mock::pair`), asserting the exact requests.

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use leafbridge_api::{BGPNodeState, StateSource};
use tower_test::mock;

fn reply(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": reason, "reason": reason, "code": code})
}

#[tokio::test]
async fn get_reads_one_secret_and_a_missing_one_is_none() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let src = StateSource::kube(Client::new(svc, "default"));
    let server = tokio::spawn(async move {
        let (req, send) = h.next_request().await.expect("request");
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().to_string(), "/api/v1/namespaces/net/secrets/bgp");
        send.send_response(reply(
            StatusCode::OK,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "bgp", "namespace": "net"},
                               "data": {"password": "c2VjcmV0"}}),
        ));
        let (req, send) = h.next_request().await.expect("request");
        assert_eq!(req.uri().to_string(), "/api/v1/namespaces/net/secrets/gone");
        send.send_response(reply(StatusCode::NOT_FOUND, status_error(404, "NotFound")));
    });
    let s = src
        .get::<Secret>(Some("net"), "bgp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.data.unwrap()["password"].0, b"secret");
    assert!(
        src.get::<Secret>(Some("net"), "gone")
            .await
            .unwrap()
            .is_none()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn create_if_missing_posts_the_object_and_already_exists_is_success() {
    let (svc, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let src = StateSource::kube(Client::new(svc, "default"));
    let server = tokio::spawn(async move {
        for code in [StatusCode::CREATED, StatusCode::CONFLICT] {
            let (req, send) = h.next_request().await.expect("request");
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(
                req.uri().to_string(),
                "/apis/leafbridge.io/v1alpha1/bgpnodestates?"
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"apiVersion": "leafbridge.io/v1alpha1", "kind": "BGPNodeState",
                                   "metadata": {"name": "node1"}, "spec": {}})
            );
            let v = if code == StatusCode::CREATED {
                body
            } else {
                status_error(409, "AlreadyExists")
            };
            send.send_response(reply(code, v));
        }
    });
    let obj = BGPNodeState::new("node1", Default::default());
    src.create_if_missing(&obj).await.unwrap();
    src.create_if_missing(&obj).await.unwrap();
    server.await.unwrap();
}
