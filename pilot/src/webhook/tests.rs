//! Admission decisions, HTTP errors, metrics and the TLS server.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

fn gateway(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": spec,
    })
}

fn valid_gateway() -> Value {
    gateway(
        "gw",
        json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
    )
}

fn review(api_version: &str, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "Gateway"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "gateways"},
            "operation": operation,
            "object": object,
        }
    })
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[test]
fn decisions_by_operation_and_content() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let cases: Vec<(&str, Value, bool, &str)> = vec![
        ("CREATE", valid_gateway(), true, ""),
        ("UPDATE", valid_gateway(), true, ""),
        ("DELETE", json!(null), true, ""),
        ("CONNECT", valid_gateway(), true, ""),
        (
            "CREATE",
            gateway("invalid-gateway", json!({})),
            false,
            "configuration is invalid: spec.servers: gateway must have at least one server",
        ),
        (
            "CREATE",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "Frob"}),
            false,
            "unrecognized type Frob",
        ),
        (
            "CREATE",
            json!("text"),
            false,
            "cannot decode configuration",
        ),
        (
            "CREATE",
            json!({"kind": "Gateway"}),
            false,
            "cannot decode configuration: missing apiVersion",
        ),
    ];
    for (op, object, allowed, message) in cases {
        for v in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
            let out = admit_review(&m, &review(v, op, object.clone())).unwrap();
            assert_eq!(out["apiVersion"], v);
            assert_eq!(out["kind"], "AdmissionReview");
            let resp = &out["response"];
            assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
            assert_eq!(resp["allowed"], allowed, "{op} {object}: {resp}");
            let got = resp["status"]["message"].as_str().unwrap_or("");
            assert!(got.contains(message), "{op}: {got}");
        }
    }
    let text = encode(&registry);
    for line in [
        r#"galley_validation_passed_total{group="networking.istio.io",version="v1",resource="gateways"} 4"#,
        r#"galley_validation_failed_total{group="networking.istio.io",version="v1",resource="gateways",reason="unsupported_operation"} 4"#,
        r#"galley_validation_failed_total{group="networking.istio.io",version="v1",resource="gateways",reason="invalid_resource"} 2"#,
        r#"galley_validation_failed_total{group="networking.istio.io",version="v1",resource="gateways",reason="unknown_type"} 2"#,
        r#"galley_validation_failed_total{group="networking.istio.io",version="v1",resource="gateways",reason="yaml_decode_error"} 4"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn warnings_and_readiness_rejection() {
    let m = Metrics::default();
    let mut always = valid_gateway();
    always["metadata"]["annotations"] = json!({crate::validation::ALWAYS_REJECT: "true"});
    let out = admit_review(&m, &review("admission.k8s.io/v1", "CREATE", always)).unwrap();
    assert_eq!(out["response"]["allowed"], false);
    assert!(out["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("webhook-always-reject"));

    let ef = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": "ef"}, "spec": {}});
    let out = admit_review(&m, &review("admission.k8s.io/v1", "CREATE", ef)).unwrap();
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("EnvoyFilter exposes"));
    assert!(out["response"].get("status").is_none());
}

/// Upstream's warnings for the security kinds come back in `response.warnings`, with the
/// resource admitted.
#[test]
fn security_warnings_are_returned() {
    let m = Metrics::default();
    let security = |kind: &str, spec: Value| {
        json!({"apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": {"name": "p", "namespace": "demo"}, "spec": spec})
    };
    let cases = [
        (
            security(
                "AuthorizationPolicy",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
            ),
            "spec.rules[0]: configured AuthorizationPolicy will deny all traffic to TCP ports",
        ),
        (
            security("PeerAuthentication", json!({"selector": {}})),
            "spec.selector: workload selector specified without labels",
        ),
        (
            security(
                "RequestAuthentication",
                json!({"jwtRules": [{"issuer": "a", "jwks": "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c\"}]}"}]}),
            ),
            "spec.jwtRules[0].jwks: jwks key at index 0 contains private key material",
        ),
    ];
    for (obj, want) in cases {
        let out = admit_review(&m, &review("admission.k8s.io/v1", "CREATE", obj)).unwrap();
        assert_eq!(out["response"]["allowed"], true, "{out}");
        let warnings = out["response"]["warnings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().is_some_and(|w| w.starts_with(want))),
            "{want:?} not in {warnings:?}"
        );
    }
}

async fn post(router: &axum::Router, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let req = Request::post("/validate")
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let mut registry = Registry::default();
    let router = routes(Metrics::new(&mut registry));
    let ok = serde_json::to_vec(&review("admission.k8s.io/v1", "CREATE", valid_gateway())).unwrap();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            ok.clone(),
            StatusCode::OK,
            "\"allowed\":true",
        ),
        (
            "application/json; charset=utf-8",
            ok.clone(),
            StatusCode::OK,
            "\"allowed\":true",
        ),
        (
            "text/plain",
            ok.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expect application/json",
        ),
        (
            "application/json",
            b"{not json".to_vec(),
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
            "application/json",
            b"{\"kind\":\"Pod\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "no request",
        ),
    ];
    for (ct, body, status, needle) in cases {
        let (got, text) = post(&router, ct, body).await;
        assert_eq!(got, status, "{ct}: {text}");
        assert!(text.contains(needle), "{text}");
    }
    let text = encode(&registry);
    assert!(
        text.contains(r#"galley_validation_http_error_total{status="400"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"galley_validation_http_error_total{status="415"} 1"#),
        "{text}"
    );
    // Sub-paths are served too, and readiness.
    let req = Request::post("/validate/networking.istio.io/v1/gateways")
        .header("content-type", "application/json")
        .body(Body::from(ok))
        .unwrap();
    assert_eq!(
        router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    let req = Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(
        router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn serves_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["istiod.istio-system.svc".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der_key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let base = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der_key.into())
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (addr, serve) = crate::server::https::start(
        "127.0.0.1:0",
        crate::server::https::tls_config(&base),
        routes(Metrics::default()),
        shutdown.clone(),
    )
    .await
    .unwrap()
    .unwrap();
    let task = tokio::spawn(serve);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let body = serde_json::to_string(&review(
        "admission.k8s.io/v1beta1",
        "CREATE",
        gateway("invalid-gateway", json!({})),
    ))
    .unwrap();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("istiod.istio-system.svc").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let req = format!(
            "POST /validate HTTP/1.1\r\nhost: istiod\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tls.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.contains("\"allowed\":false") && out.contains("admission.k8s.io/v1beta1"),
            "{out}"
        );
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let mut registry = Registry::default();
    let router = routes(Metrics::new(&mut registry));
    // A declared length over the limit: refused before the body is read.
    let req = Request::post("/validate")
        .header("content-type", "application/json")
        .header("content-length", MAX_BODY + 1)
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // No declared length: cut off at the limit while reading.
    let chunks = (0..=MAX_BODY / 65536)
        .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 65536])));
    let req = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&format!("the limit is {MAX_BODY} bytes")),
        "{text}"
    );
    assert!(encode(&registry).contains(r#"galley_validation_http_error_total{status="413"} 1"#));
    // The largest accepted body still gets an answer.
    let mut ok =
        serde_json::to_vec(&review("admission.k8s.io/v1", "CREATE", valid_gateway())).unwrap();
    ok.resize(MAX_BODY, b' ');
    assert_eq!(
        post(&router, "application/json", ok).await.0,
        StatusCode::OK
    );
}

#[test]
fn resource_labels_come_from_the_validated_kinds() {
    let l = |g, v, r| {
        let l = ResourceLabels::of(g, v, r);
        [l.group.as_str(), l.version.as_str(), l.resource.as_str()]
    };
    assert_eq!(
        l("networking.istio.io", "v1alpha3", "virtualservices"),
        ["networking.istio.io", "v1alpha3", "virtualservices"]
    );
    assert_eq!(
        l("security.istio.io", "v1", "authorizationpolicies"),
        ["security.istio.io", "v1", "authorizationpolicies"]
    );
    for (g, v, r) in [
        ("networking.istio.io", "v9", "virtualservices"),
        ("networking.istio.io", "v1", "VirtualService"),
        ("apps", "v1", "deployments"),
        ("networking.istio.io\"}", "v1", "gateways"),
        ("", "", ""),
    ] {
        assert_eq!(l(g, v, r), ["other"; 3], "{g} {v} {r}");
    }
}

#[test]
fn hostile_reviews_never_reach_the_exposition() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let hostile = [
        "a\"b",
        "x\"} 1\ngalley_validation_passed_total{group=\"forged\"} 99\n# HELP forged",
        "back\\slash",
        "}",
        "# HELP",
    ];
    for i in 0..2000 {
        let h = hostile[i % hostile.len()];
        let mut r = review("admission.k8s.io/v1", "CREATE", valid_gateway());
        r["request"]["resource"] = json!({
            "group": format!("{h}{i}"), "version": h, "resource": format!("{i}{h}"),
        });
        r["request"]["kind"] = json!({"group": h, "version": h, "kind": h});
        admit_review(&m, &r).unwrap();
        r["request"]["operation"] = json!(h);
        admit_review(&m, &r).unwrap();
    }
    let text = encode(&registry);
    assert!(!text.contains("forged"), "{text}");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("galley_validation"))
        .collect();
    assert_eq!(
        series,
        [
            r#"galley_validation_passed_total{group="other",version="other",resource="other"} 2000"#,
            r#"galley_validation_failed_total{group="other",version="other",resource="other",reason="unsupported_operation"} 2000"#,
        ]
    );
}

#[test]
fn every_validated_kind_has_its_plural_and_served_versions() {
    for (group, kind_versions) in [
        ("networking.istio.io", &["v1", "v1alpha3", "v1beta1"][..]),
        ("security.istio.io", &["v1", "v1beta1"][..]),
        ("telemetry.istio.io", &["v1", "v1alpha1"][..]),
        ("extensions.istio.io", &["v1alpha1"][..]),
    ] {
        let plural = match group {
            "networking.istio.io" => "virtualservices",
            "security.istio.io" => "peerauthentications",
            "telemetry.istio.io" => "telemetries",
            _ => "wasmplugins",
        };
        for v in kind_versions {
            let r = crate::validation::served_resource(group, v, plural).unwrap();
            assert_eq!((r.group, r.version, r.resource), (group, *v, plural));
        }
    }
    assert_eq!(
        crate::validation::served_resource("networking.istio.io", "v1", "envoyfilters"),
        None,
        "EnvoyFilter is served as v1alpha3 only"
    );
}

/// Property tests of the webhook's front end: any body is answered with a review or a
/// 400, a well-formed review always with a review, a cut one never.
mod properties {
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    use super::*;
    use crate::arbitrary::{self, json_value, manifest, truncated, word};

    fn envelope(api_version: &str, operation: &str, uid: Value, object: Value) -> Value {
        json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "operation": operation,
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "gateways"},
                "object": object,
            },
        })
    }

    fn operation() -> impl Strategy<Value = &'static str> {
        select(&["CREATE", "UPDATE", "DELETE", "CONNECT", ""][..])
    }

    proptest! {
        #![proptest_config(arbitrary::config())]

        #[test]
        fn random_bodies_get_a_review_or_a_400(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err((status, message)) = admit_body(&Metrics::default(), &body) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                prop_assert!(!message.is_empty());
            }
        }

        #[test]
        fn random_json_gets_a_review_or_a_400(value in json_value()) {
            let body = serde_json::to_vec(&value).expect("encode");
            if let Err((status, _)) = admit_body(&Metrics::default(), &body) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            }
        }

        #[test]
        fn a_review_of_any_object_is_answered(
            version in select(API_VERSIONS),
            op in operation(),
            // JSON floats do not round-trip exactly; a uid is a string anyway.
            uid in prop_oneof![word().prop_map(Value::String), any::<i64>().prop_map(|n| json!(n))],
            object in prop_oneof![manifest(), json_value()],
        ) {
            let body = serde_json::to_vec(&envelope(version, op, uid.clone(), object)).expect("encode");
            let answer = admit_body(&Metrics::default(), &body);
            let answer = answer.map_err(|(s, m)| TestCaseError::fail(format!("{s}: {m}")))?;
            prop_assert_eq!(&answer["apiVersion"], &json!(version));
            prop_assert_eq!(&answer["response"]["uid"], &uid);
            let allowed = answer["response"]["allowed"].as_bool();
            prop_assert!(allowed.is_some());
            if !matches!(op, "CREATE" | "UPDATE") {
                prop_assert_eq!(allowed, Some(true), "only creates and updates are validated");
            }
        }

        #[test]
        fn a_cut_review_is_a_400(op in operation(), object in manifest(), at in any::<Index>()) {
            let full = serde_json::to_vec(&envelope("admission.k8s.io/v1", op, json!("u"), object))
                .expect("encode");
            let cut = truncated(full.clone(), at);
            let answer = admit_body(&Metrics::default(), &cut);
            if cut.len() < full.len() {
                prop_assert_eq!(answer.map_err(|(s, _)| s), Err(StatusCode::BAD_REQUEST));
            } else {
                prop_assert!(answer.is_ok());
            }
        }
    }
}
