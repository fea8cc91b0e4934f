//! Webhook patching against the fake API server: caBundle on this revision's
//! configurations only, injector webhooks only and only when injection is served, and the
//! failurePolicy switch gated on the dry-run self-check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use kube_fake::{eventually, failure, Call, FakeApi};

const VWC: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const MWC: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap_or_default()
}

fn hook(name: &str) -> Value {
    json!({"name": name, "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system", "path": "/validate"}},
           "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"]})
}

fn configuration(kind: &str, name: &str, rev: &str, hooks: &[&str]) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
           "metadata": {"name": name, "labels": {REVISION_LABEL: rev}},
           "webhooks": hooks.iter().map(|h| hook(h)).collect::<Vec<_>>()})
}

fn seed(api: &FakeApi) {
    api.put(
        VWC,
        configuration(
            "ValidatingWebhookConfiguration",
            "istio-validator-istio-system",
            "default",
            &["rev.validation.istio.io"],
        ),
    );
    api.put(
        VWC,
        configuration(
            "ValidatingWebhookConfiguration",
            "istio-validator-canary-istio-system",
            "canary",
            &["rev.validation.istio.io"],
        ),
    );
    api.put(
        MWC,
        configuration(
            "MutatingWebhookConfiguration",
            "istio-sidecar-injector",
            "default",
            &[
                "rev.namespace.sidecar-injector.istio.io",
                "rev.object.sidecar-injector.istio.io",
                "other.example.com",
            ],
        ),
    );
}

fn webhooks(api: &FakeApi, path: &str) -> Vec<Value> {
    api.get(path).expect("configuration")["webhooks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Denies the dry-run Gateway as istiod's validation webhook would, once `enabled`.
fn webhook_denies(api: &FakeApi, enabled: Arc<AtomicBool>) {
    api.on(move |call: &Call| {
        let gateway = call.method == http::Method::POST && call.path.ends_with("/gateways");
        (gateway && enabled.load(Ordering::SeqCst)).then(|| {
            failure(
                400,
                "BadRequest",
                "admission webhook \"rev.validation.istio.io\" denied the request: configuration is invalid",
            )
        })
    });
}

#[tokio::test]
async fn ca_bundle_goes_only_to_this_revision_and_injector_webhooks() {
    let (client, api) = kube_fake::pair();
    seed(&api);
    let patcher = WebhookPatcher::new(client, "", "istio-system");
    assert_eq!(
        patcher.patch_validating("ROOT", false).await.expect("vwc"),
        1
    );
    assert_eq!(patcher.patch_mutating("ROOT").await.expect("mwc"), 1);

    let ours = webhooks(&api, &format!("{VWC}/istio-validator-istio-system"));
    assert_eq!(ours[0]["clientConfig"]["caBundle"], b64("ROOT"));
    assert_eq!(ours[0]["failurePolicy"], "Ignore");
    let canary = webhooks(&api, &format!("{VWC}/istio-validator-canary-istio-system"));
    assert!(canary[0]["clientConfig"].get("caBundle").is_none());

    let mutating = webhooks(&api, &format!("{MWC}/istio-sidecar-injector"));
    assert_eq!(mutating[0]["clientConfig"]["caBundle"], b64("ROOT"));
    assert_eq!(mutating[1]["clientConfig"]["caBundle"], b64("ROOT"));
    assert!(mutating[2]["clientConfig"].get("caBundle").is_none());

    // Nothing to do the second time: no writes.
    assert_eq!(
        patcher.patch_validating("ROOT", false).await.expect("vwc"),
        0
    );
    assert_eq!(patcher.patch_mutating("ROOT").await.expect("mwc"), 0);
}

#[tokio::test]
async fn self_check_dry_runs_an_invalid_gateway_and_needs_a_denial() {
    let (client, api) = kube_fake::pair();
    let patcher = WebhookPatcher::new(client, "", "istio-system");
    // The API server accepts it (no webhook in the way): not ready.
    assert!(matches!(patcher.self_check().await, SelfCheck::NotYet(_)));
    let enabled = Arc::new(AtomicBool::new(true));
    webhook_denies(&api, enabled);
    assert_eq!(patcher.self_check().await, SelfCheck::Denied);

    let post = api
        .calls()
        .into_iter()
        .find(|c| c.method == http::Method::POST)
        .expect("a create");
    assert_eq!(
        post.path,
        "/apis/networking.istio.io/v1/namespaces/istio-system/gateways"
    );
    assert!(post.query.contains("dryRun=All"), "{}", post.query);
    assert_eq!(post.body["metadata"]["name"], INVALID_GATEWAY);
    assert_eq!(
        post.body["metadata"]["annotations"][ALWAYS_REJECT_ANNOTATION],
        "true"
    );
    // The chart's objectSelector sends only this revision's objects to this istiod.
    assert_eq!(post.body["metadata"]["labels"][REVISION_LABEL], "default");
    // Never persisted.
    assert!(api
        .get("/apis/networking.istio.io/v1/namespaces/istio-system/gateways/invalid-gateway")
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn failure_policy_switches_to_fail_only_after_the_self_check() {
    let (client, api) = kube_fake::pair();
    seed(&api);
    let enabled = Arc::new(AtomicBool::new(false));
    webhook_denies(&api, enabled.clone());
    let (bundle_tx, bundle_rx) = watch::channel("ROOT1".to_owned());
    let shutdown = CancellationToken::new();
    tokio::spawn(
        WebhookPatcher::new(client, "default", "istio-system")
            .injection_served(true)
            .run(bundle_rx, shutdown.clone()),
    );

    let ours = format!("{VWC}/istio-validator-istio-system");
    eventually("caBundle patched", || {
        webhooks(&api, &ours)[0]["clientConfig"]["caBundle"] == b64("ROOT1")
    })
    .await;
    // Several self-check rounds go by without a denial: still Ignore.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(webhooks(&api, &ours)[0]["failurePolicy"], "Ignore");

    enabled.store(true, Ordering::SeqCst);
    eventually("fail closed", || {
        webhooks(&api, &ours)[0]["failurePolicy"] == "Fail"
    })
    .await;

    // A new CA bundle reaches both kinds.
    bundle_tx.send_replace("ROOT2".to_owned());
    let mwc = format!("{MWC}/istio-sidecar-injector");
    eventually("new bundle", || {
        webhooks(&api, &ours)[0]["clientConfig"]["caBundle"] == b64("ROOT2")
            && webhooks(&api, &mwc)[0]["clientConfig"]["caBundle"] == b64("ROOT2")
    })
    .await;
    assert_eq!(webhooks(&api, &ours)[0]["failurePolicy"], "Fail");

    // Someone resets the configuration (e.g. helm upgrade): repaired from the watch.
    api.put(
        VWC,
        configuration(
            "ValidatingWebhookConfiguration",
            "istio-validator-istio-system",
            "default",
            &["rev.validation.istio.io"],
        ),
    );
    eventually("repaired", || {
        let h = &webhooks(&api, &ours)[0];
        h["clientConfig"]["caBundle"] == b64("ROOT2") && h["failurePolicy"] == "Fail"
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn injector_webhooks_are_left_alone_unless_injection_is_served() {
    let (client, api) = kube_fake::pair();
    seed(&api);
    let before = api.get(&format!("{MWC}/istio-sidecar-injector"));
    webhook_denies(&api, Arc::new(AtomicBool::new(true)));
    let (bundle_tx, bundle_rx) = watch::channel("ROOT1".to_owned());
    let shutdown = CancellationToken::new();
    tokio::spawn(
        WebhookPatcher::new(client.clone(), "default", "istio-system")
            .run(bundle_rx, shutdown.clone()),
    );

    let ours = format!("{VWC}/istio-validator-istio-system");
    eventually("validation webhook patched and fail closed", || {
        let h = &webhooks(&api, &ours)[0];
        h["clientConfig"]["caBundle"] == b64("ROOT1") && h["failurePolicy"] == "Fail"
    })
    .await;
    // A new bundle goes round again: the validation webhook gets it, the injector nothing.
    bundle_tx.send_replace("ROOT2".to_owned());
    eventually("new bundle", || {
        webhooks(&api, &ours)[0]["clientConfig"]["caBundle"] == b64("ROOT2")
    })
    .await;
    assert_eq!(api.get(&format!("{MWC}/istio-sidecar-injector")), before);
    let calls = api.calls();
    assert!(
        !calls.iter().any(|c| c.path.starts_with(MWC)),
        "no read, watch or write of MutatingWebhookConfigurations: {:?}",
        calls.iter().map(|c| &c.path).collect::<Vec<_>>()
    );

    // `reconcile` alone keeps to the same rule.
    let patcher = WebhookPatcher::new(client, "default", "istio-system");
    assert!(patcher.reconcile("ROOT3", true).await.expect("reconcile"));
    assert_eq!(api.get(&format!("{MWC}/istio-sidecar-injector")), before);
    shutdown.cancel();
}
