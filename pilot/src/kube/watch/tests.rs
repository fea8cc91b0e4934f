//! Watches against a mocked API server (tower-test): list, watch events, a CRD that is not
//! installed, and a kind istiod may not read.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::json;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn service(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "demo", "resourceVersion": "5"},
           "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80}]}})
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn api_status(code: u16, reason: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code}),
    )
}

/// Answers like an API server: Services are listed and then watched (one ADDED event),
/// VirtualServices are not installed, Pods are forbidden.
async fn api_server(mut handle: Handle) {
    let mut hanging = Vec::new();
    let mut watched_services = false;
    while let Some((req, send)) = handle.next_request().await {
        let path = req.uri().path().to_owned();
        let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
        let response = match (path.as_str(), watch) {
            ("/api/v1/services", false) => json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "10"}, "items": [service("a")]}),
            ),
            ("/api/v1/services", true) if !watched_services => {
                watched_services = true;
                let event = json!({"type": "ADDED", "object": service("b")});
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(format!("{event}\n").into_bytes()))
                    .unwrap()
            }
            ("/apis/networking.istio.io/v1/virtualservices", _) => api_status(404, "NotFound"),
            ("/api/v1/pods", _) => api_status(403, "Forbidden"),
            _ => {
                // Later watches: hold them open, as a quiet API server does.
                hanging.push(send);
                continue;
            }
        };
        send.send_response(response);
    }
}

#[tokio::test]
async fn lists_watches_and_tolerates_missing_and_forbidden_kinds() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(api_server(handle));
    let client = kube::Client::new(service, "default");
    let store = ConfigStore::new();
    let source = KubeSource::new(
        client,
        store.clone(),
        vec![Kind::Service, Kind::VirtualService, Kind::Pod],
    );
    let sync = source.sync.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(source.run(shutdown.clone()));

    tokio::time::timeout(Duration::from_secs(10), sync.wait())
        .await
        .expect("initial sync");
    assert!(sync.pending().is_empty());

    // The watch event after the list adds the second service.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> = store
            .snapshot()
            .of_kind(Kind::Service)
            .map(|c| c.key.name.clone())
            .collect();
        if names == ["a", "b"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch event not applied: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
}

#[test]
fn api_resources_match_upstream_paths() {
    let ar = api_resource(Kind::AuthorizationPolicy);
    assert_eq!(
        (ar.api_version.as_str(), ar.plural.as_str()),
        ("security.istio.io/v1", "authorizationpolicies")
    );
    let ar = api_resource(Kind::EndpointSlice);
    assert_eq!(ar.api_version, "discovery.k8s.io/v1");
    assert_eq!(api_resource(Kind::Node).api_version, "v1");
}
