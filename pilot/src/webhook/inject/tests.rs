//! The injection webhook: reviews in, patches out, errors and metrics.

use axum::http::{Request, StatusCode};
use prometheus_client::encoding::text::encode;
use tower::ServiceExt;

use super::*;
use crate::inject::config::{Config, Values};

const CONFIG: &str = r#"
policy: enabled
templates:
  sidecar: |
    spec:
      initContainers:
      - name: istio-init
        image: {{ .ProxyImage }}
      containers:
      - name: istio-proxy
        image: {{ .ProxyImage }}
        env:
        - name: POD_NAMESPACE
          value: {{ .ObjectMeta.Namespace | quote }}
  broken: |
    {{ len 3 }}
"#;

fn injector() -> Injector {
    Injector {
        config: Config::parse(CONFIG).expect("config"),
        values: Values::parse("global: {hub: docker.io/istio, tag: '1.0'}").expect("values"),
        revision: "canary".to_owned(),
    }
}

fn state(registry: &mut Registry) -> InjectState {
    let (_, mesh) = watch::channel(MeshConfig::default());
    InjectState {
        injector: Arc::new(ArcSwap::from_pointee(injector())),
        mesh,
        metrics: Metrics::new(registry),
    }
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "annotations": annotations,
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
    })
}

fn review(version: &str, object: Value) -> Value {
    json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "namespace": "shop", "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": object,
        },
    })
}

async fn post(
    router: &Router,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value, String) {
    let req = Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn patched(original: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch json");
    let mut out = original.clone();
    json_patch::patch(&mut out, &patch).expect("apply");
    out
}

#[tokio::test]
async fn a_pod_is_answered_with_a_patch_in_the_reviews_version() {
    let mut registry = Registry::default();
    let router = routes(state(&mut registry));
    for version in ["v1", "v1beta1"] {
        let original = pod(json!({}));
        let body = serde_json::to_vec(&review(version, original.clone())).expect("json");
        let (status, out, text) = post(
            &router,
            "/inject/cluster/east/net/n1",
            "application/json",
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(out["apiVersion"], format!("admission.k8s.io/{version}"));
        let response = &out["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], true);
        let pod = patched(&original, response);
        let containers = pod["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[1]["name"], "istio-proxy");
        assert_eq!(containers[1]["image"], "docker.io/istio/proxyv2:1.0");
        let env = containers[1]["env"].as_array().expect("env");
        assert!(
            env.contains(&json!({"name": "POD_NAMESPACE", "value": "shop"})),
            "{env:?}"
        );
        assert!(env.contains(&json!({"name": "ISTIO_META_CLUSTER_ID", "value": "east"})));
        assert!(env.contains(&json!({"name": "ISTIO_META_NETWORK", "value": "n1"})));
        assert_eq!(pod["spec"]["initContainers"][0]["name"], "istio-init");
        let status_annotation = pod["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .expect("status");
        assert!(
            status_annotation.contains("\"revision\":\"canary\""),
            "{status_annotation}"
        );
        // Managed fields are not touched by the patch.
        assert_eq!(
            pod["metadata"]["managedFields"],
            json!([{"manager": "kubectl"}])
        );
    }
}

#[tokio::test]
async fn skipped_failed_and_malformed_requests() {
    let mut registry = Registry::default();
    let router = routes(state(&mut registry));

    // Opted out: allowed, no patch.
    let body = serde_json::to_vec(&review(
        "v1",
        pod(json!({"sidecar.istio.io/inject": "false"})),
    ))
    .expect("json");
    let (status, out, _) = post(&router, "/inject", "application/json", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"], json!({"uid": "u-1", "allowed": true}));

    // A template that fails: refused with the template's name and line.
    let body = serde_json::to_vec(&review(
        "v1",
        pod(json!({"inject.istio.io/templates": "broken"})),
    ))
    .expect("json");
    let (status, out, _) = post(&router, "/inject/", "application/json", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("broken:1"), "{message}");

    // Not a review, not JSON, wrong type, too large: HTTP errors with a reason.
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            b"{\"kind\": \"Pod\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "application/json",
            b"{nope".to_vec(),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            "application/json",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "no body found",
        ),
        (
            "text/plain",
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expect application/json",
        ),
        (
            "application/json",
            vec![b' '; MAX_BODY + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ];
    for (content_type, body, want, text) in cases {
        let (status, _, got) = post(&router, "/inject", content_type, body).await;
        assert_eq!(status, want, "{got}");
        assert!(got.contains(text), "{got}");
    }
    // Still serving.
    let body = serde_json::to_vec(&review("v1", pod(json!({})))).expect("json");
    let (status, out, _) = post(&router, "/inject", "application/json", body).await;
    assert_eq!(
        (status, &out["response"]["allowed"]),
        (StatusCode::OK, &json!(true))
    );

    let mut open_metrics = String::new();
    encode(&mut open_metrics, &registry).expect("encode");
    let text = crate::server::monitoring::prometheus_text(&open_metrics);
    for line in [
        "sidecar_injection_requests_total 8",
        "sidecar_injection_skip_total 1",
        // Three reviews answered; the failed template and five HTTP errors.
        "sidecar_injection_success_total 3",
        "sidecar_injection_failure_total 6",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[test]
fn the_path_sets_proxy_env_vars() {
    let envs = |p: &str| proxy_envs(p).into_iter().collect::<Vec<_>>();
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(envs("/inject"), []);
    assert_eq!(envs("/inject/"), []);
    assert_eq!(
        envs("/inject/cluster/east/net/n1/"),
        [
            s("ISTIO_META_CLUSTER_ID", "east"),
            s("ISTIO_META_NETWORK", "n1")
        ]
    );
    assert_eq!(
        envs("/inject/cluster/a--slash--b/extra"),
        [s("ISTIO_META_CLUSTER_ID", "a/b")]
    );
    assert_eq!(
        envs("/inject/:ENV:cluster=c1:ENV:net=:ENV:=bad"),
        [
            s("ISTIO_META_CLUSTER_ID", "c1"),
            s("ISTIO_META_NETWORK", "")
        ]
    );
    assert_eq!(envs("/inject/my_var/x"), [s("MY_VAR", "x")]);
}
