//! TokenReview against the fake API server: the request istiod sends, the identity it
//! derives, each way a token is refused, and the guards: tokens that are not JWTs never
//! reach the API server, answers are remembered, one review serves concurrent requests
//! with the same token, and the number of reviews under way is bounded.

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use kube_fake::{failure, Call};

/// A token shaped like a service-account JWT (the signature is not checked here: the API
/// server's answer is what counts), unique per `id`, expiring in an hour.
fn jwt(id: &str) -> String {
    jwt_expiring(id, Some(3600))
}

fn jwt_expiring(id: &str, exp_in: Option<i64>) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut claims =
        json!({"iss": "https://kubernetes.default.svc", "sub": id, "aud": ["istio-ca"]});
    if let Some(exp) = exp_in {
        claims["exp"] = json!(now + exp);
    }
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({"alg": "RS256", "kid": "k"})),
        b64(&claims)
    )
}

const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// A fake API server whose TokenReview answers with `status` and records the request.
fn server(status: Value) -> (kube::Client, Arc<Mutex<Vec<Call>>>) {
    let (client, api) = kube_fake::pair();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    api.on(move |call| {
        if call.path != PATH || call.method != http::Method::POST {
            return None;
        }
        record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call.clone());
        let mut answer = call.body.clone();
        answer["status"] = status.clone();
        Some((201, answer))
    });
    (client, seen)
}

fn sa_status(username: &str) -> Value {
    json!({"authenticated": true, "audiences": ["istio-ca"],
           "user": {"username": username, "groups": ["system:serviceaccounts", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["web-0"],
                              "authentication.kubernetes.io/pod-uid": ["u-1"]}}})
}

fn audiences() -> Vec<String> {
    vec!["istio-ca".to_owned()]
}

#[tokio::test]
async fn a_pod_token_yields_its_namespace_and_service_account() {
    let (client, seen) = server(sa_status("system:serviceaccount:demo:web"));
    let token = jwt("web");
    let reviewed = TokenReviewer::new(client, audiences())
        .review(&token)
        .await
        .expect("accepted");
    assert_eq!(
        reviewed,
        ReviewedToken {
            namespace: "demo".into(),
            service_account: "web".into(),
            pod_name: Some("web-0".into()),
            pod_uid: Some("u-1".into()),
        }
    );
    let calls = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(calls[0].body["kind"], "TokenReview");
    assert_eq!(
        calls[0].body["spec"],
        json!({"token": token, "audiences": ["istio-ca"]})
    );
}

#[tokio::test]
async fn refusals_say_why() {
    let cases = [
        (
            json!({"authenticated": false, "error": "token has expired"}),
            "token has expired",
        ),
        (json!({"authenticated": false}), "did not authenticate"),
        (
            json!({"authenticated": true, "audiences": ["kubernetes"],
                   "user": {"username": "system:serviceaccount:demo:web", "groups": ["system:serviceaccounts"]}}),
            "audience istio-ca",
        ),
        (
            json!({"authenticated": true, "audiences": ["istio-ca"],
                   "user": {"username": "alice", "groups": ["system:authenticated"]}}),
            "not a service-account token",
        ),
        (
            // The right name shape without the service-account group.
            json!({"authenticated": true, "audiences": ["istio-ca"],
                   "user": {"username": "system:serviceaccount:demo:web", "groups": []}}),
            "not a service-account token",
        ),
    ];
    for (status, want) in cases {
        let (client, _) = server(status.clone());
        let err = TokenReviewer::new(client, audiences())
            .review(&jwt("web"))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(want), "{status}: {err}");
    }
}

#[tokio::test]
async fn a_forbidden_review_names_the_missing_permission() {
    let (client, api) = kube_fake::pair();
    api.on(|_| Some(failure(403, "Forbidden", "forbidden")));
    let err = TokenReviewer::new(client, audiences())
        .review(&jwt("web"))
        .await
        .expect_err("forbidden");
    assert!(err.to_string().contains("create` on tokenreviews"), "{err}");
}

#[tokio::test]
async fn the_authenticator_gives_a_spiffe_identity_and_checks_the_cluster() {
    let (client, _) = server(sa_status("system:serviceaccount:demo:web"));
    let authn = TokenReviewAuthenticator::new(
        TokenReviewer::new(client, audiences()),
        "cluster.local",
        "Kubernetes",
    );
    let creds = Credentials {
        bearer: Some(jwt("web")),
        cluster_id: Some("Kubernetes".into()),
        ..Default::default()
    };
    let id = authn.authenticate(&creds).await.expect("identity");
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/demo/sa/web");

    let none = authn.authenticate(&Credentials::default()).await;
    assert_eq!(none, Err(AuthError::NotPresented("Kubernetes token")));

    let remote = Credentials {
        cluster_id: Some("other".into()),
        ..creds
    };
    let err = authn
        .authenticate(&remote)
        .await
        .expect_err("other cluster");
    assert!(err.to_string().contains("\"other\""), "{err}");
}

/// TokenReview requests the fake received.
fn reviews(seen: &Arc<Mutex<Vec<Call>>>) -> usize {
    seen.lock().unwrap_or_else(|p| p.into_inner()).len()
}

#[tokio::test]
async fn tokens_that_are_not_jwts_never_reach_the_api_server() {
    let (client, seen) = server(sa_status("system:serviceaccount:demo:web"));
    let reviewer = TokenReviewer::new(client, audiences());
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let huge = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256"}"#),
        "A".repeat(MAX_TOKEN_BYTES)
    );
    let cases = [
        "junk".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}")),
        format!("{}.{}.c2ln", b64(r#"{"typ":"JWT"}"#), b64("{}")),
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("[1]")),
        format!("{}.{}.c2l=n", b64(r#"{"alg":"RS256"}"#), b64("{}")),
        huge,
    ];
    for token in &cases {
        let err = reviewer.review(token).await.expect_err("refused");
        assert!(
            matches!(err, TokenReviewError::NotAJwt(_)),
            "{token:.40}: {err}"
        );
    }
    assert_eq!(reviews(&seen), 0, "no TokenReview was sent");
    reviewer
        .review(&jwt("web"))
        .await
        .expect("a JWT is reviewed");
    assert_eq!(reviews(&seen), 1);
}

#[tokio::test(start_paused = true)]
async fn answers_are_remembered_per_token_for_a_while() {
    let (client, seen) = server(sa_status("system:serviceaccount:demo:web"));
    let reviewer = TokenReviewer::new(client, audiences());
    let (a, b) = (jwt("a"), jwt("b"));
    reviewer.review(&a).await.expect("accepted");
    reviewer.review(&a).await.expect("accepted again");
    assert_eq!(reviews(&seen), 1, "the second answer came from the cache");
    reviewer.review(&b).await.expect("another token");
    assert_eq!(reviews(&seen), 2, "each token is reviewed");

    tokio::time::advance(cache::ACCEPTED_TTL).await;
    reviewer.review(&a).await.expect("accepted");
    assert_eq!(reviews(&seen), 3, "asked again once the acceptance expired");

    // Never past the token's own expiry.
    let short = jwt_expiring("short", Some(3));
    reviewer.review(&short).await.expect("accepted");
    reviewer.review(&short).await.expect("accepted");
    assert_eq!(reviews(&seen), 4);
    tokio::time::advance(Duration::from_secs(4)).await;
    reviewer.review(&short).await.expect("accepted");
    assert_eq!(reviews(&seen), 5, "asked again after the token's exp");
    // b expired with the first a and was swept when a was remembered again.
    assert_eq!(reviewer.cached(), (2, 0), "a and short");
}

#[tokio::test(start_paused = true)]
async fn refusals_are_remembered_briefly_and_failures_not_at_all() {
    let (client, api) = kube_fake::pair();
    let status = Arc::new(Mutex::new(Some(
        json!({"authenticated": false, "error": "token has expired"}),
    )));
    let answer = status.clone();
    api.on(move |call| {
        if call.path != PATH {
            return None;
        }
        match answer.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(status) => {
                let mut body = call.body.clone();
                body["status"] = status;
                Some((201, body))
            }
            None => Some((
                503,
                json!({"kind": "Status", "code": 503, "message": "etcd is down"}),
            )),
        }
    });
    let count = || api.calls().iter().filter(|c| c.path == PATH).count();
    let reviewer = TokenReviewer::new(client, audiences());
    let token = jwt("expired");
    for _ in 0..5 {
        let err = reviewer.review(&token).await.expect_err("refused");
        assert!(err.to_string().contains("token has expired"), "{err}");
    }
    assert_eq!(count(), 1, "the refusal is remembered");
    tokio::time::advance(cache::REFUSED_TTL).await;
    reviewer.review(&token).await.expect_err("refused");
    assert_eq!(count(), 2, "for a while only");

    // An API server that fails to answer says nothing about the token: asked every time.
    *status.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let other = jwt("other");
    for _ in 0..3 {
        let err = reviewer.review(&other).await.expect_err("failed");
        assert!(matches!(err, TokenReviewError::Api(_)), "{err}");
    }
    assert_eq!(count(), 5);
}

/// A JSON answer to a request the test holds.
fn json_response(code: u16, body: &Value) -> http::Response<kube::client::Body> {
    let mut r = http::Response::new(kube::client::Body::from(body.to_string().into_bytes()));
    *r.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

type Held = (
    http::Request<kube::client::Body>,
    tokio::sync::oneshot::Sender<http::Response<kube::client::Body>>,
);

/// Requests a [`manual`] client sent, each with the way to answer it.
struct Handle(tokio::sync::mpsc::UnboundedReceiver<Held>);

impl Handle {
    async fn next_request(&mut self) -> Option<(http::Request<kube::client::Body>, Responder)> {
        let (request, answer) = self.0.recv().await?;
        Some((request, Responder(answer)))
    }
}

struct Responder(tokio::sync::oneshot::Sender<http::Response<kube::client::Body>>);

impl Responder {
    fn send_response(self, response: http::Response<kube::client::Body>) {
        let _ = self.0.send(response);
    }
}

/// A client whose requests the test answers by hand.
fn manual() -> (kube::Client, Handle) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Held>();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let tx = tx.clone();
        async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            tx.send((request, answer))
                .map_err(|_| std::io::Error::other("the test stopped answering"))?;
            answered
                .await
                .map_err(|_| std::io::Error::other("the test dropped the request"))
        }
    });
    (kube::Client::new(service, "default"), Handle(rx))
}

#[tokio::test]
async fn concurrent_requests_with_one_token_share_one_review() {
    let (client, mut handle) = manual();
    let reviewer = TokenReviewer::new(client, audiences());
    let token = jwt("web");
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let (reviewer, token) = (reviewer.clone(), token.clone());
            tokio::spawn(async move { reviewer.review(&token).await })
        })
        .collect();
    let (request, respond) = handle.next_request().await.expect("one review");
    let body = request.into_body().collect_bytes().await.expect("body");
    let mut answer: Value = serde_json::from_slice(&body).expect("json");
    answer["status"] = sa_status("system:serviceaccount:demo:web");
    respond.send_response(json_response(201, &answer));
    for task in waiting {
        let reviewed = task.await.expect("task").expect("accepted");
        assert_eq!(reviewed.service_account, "web");
    }
    // No second request was made: the next one the mock sees is for another token.
    let other = tokio::spawn({
        let reviewer = reviewer.clone();
        async move { reviewer.review(&jwt("other")).await }
    });
    let (request, respond) = handle.next_request().await.expect("a review");
    let body = request.into_body().collect_bytes().await.expect("body");
    let sent: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(sent["spec"]["token"], json!(jwt("other")));
    let mut answer = sent;
    answer["status"] = json!({"authenticated": false});
    respond.send_response(json_response(201, &answer));
    other.await.expect("task").expect_err("refused");
}

#[tokio::test]
async fn reviews_under_way_are_bounded_and_the_rest_refused_at_once() {
    let (client, mut handle) = manual();
    let reviewer = TokenReviewer::new(client, audiences());
    let held: Vec<_> = (0..MAX_PENDING_REVIEWS)
        .map(|i| {
            let reviewer = reviewer.clone();
            tokio::spawn(async move { reviewer.review(&jwt(&format!("t{i}"))).await })
        })
        .collect();
    // Every slot is taken once the mock has seen each review.
    let mut pending = Vec::new();
    for _ in 0..MAX_PENDING_REVIEWS {
        pending.push(handle.next_request().await.expect("a review"));
    }
    let err = reviewer.review(&jwt("one-more")).await.expect_err("busy");
    assert!(matches!(err, TokenReviewError::Busy), "{err}");
    // Busy is not remembered, and a freed slot serves the next token.
    let (request, respond) = pending.pop().expect("one");
    let body = request.into_body().collect_bytes().await.expect("body");
    let mut answer: Value = serde_json::from_slice(&body).expect("json");
    answer["status"] = json!({"authenticated": false});
    respond.send_response(json_response(201, &answer));
    kube_fake::eventually("a slot is free", || held.iter().any(|t| t.is_finished())).await;
    let retry = tokio::spawn({
        let reviewer = reviewer.clone();
        async move { reviewer.review(&jwt("one-more")).await }
    });
    let (request, respond) = handle.next_request().await.expect("the retried review");
    let body = request.into_body().collect_bytes().await.expect("body");
    let mut answer: Value = serde_json::from_slice(&body).expect("json");
    answer["status"] = sa_status("system:serviceaccount:demo:web");
    respond.send_response(json_response(201, &answer));
    retry.await.expect("task").expect("accepted");
    drop(pending);
    for task in held {
        task.abort();
    }
}
