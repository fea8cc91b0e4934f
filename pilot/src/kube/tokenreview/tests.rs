//! TokenReview against the fake API server: the request istiod sends, the identity it
//! derives, and each way a token is refused.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;
use kube_fake::{failure, Call};

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
    let reviewed = TokenReviewer::new(client, audiences())
        .review("TOKEN")
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
        json!({"token": "TOKEN", "audiences": ["istio-ca"]})
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
            .review("TOKEN")
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
        .review("TOKEN")
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
        bearer: Some("TOKEN".into()),
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
