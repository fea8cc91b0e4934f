//! The namespace controller against the fake API server: created everywhere but the
//! skipped namespaces, recreated, repaired, updated on a new root, new namespaces.

use serde_json::{json, Value};

use super::*;
use crate::kube::fake::{self, eventually, FakeApi};

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn cm_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{CONFIGMAP_NAME}")
}

fn root_in(api: &FakeApi, ns: &str) -> Option<String> {
    let cm = api.get(&cm_path(ns))?;
    assert_eq!(
        cm["metadata"]["labels"][CONFIG_LABEL], "true",
        "label in {ns}"
    );
    cm["data"][ROOT_CERT_KEY].as_str().map(str::to_owned)
}

#[tokio::test]
async fn reconcile_creates_repairs_and_leaves_current_configmaps_alone() {
    let (client, api) = fake::pair();
    let controller = NamespaceController::new(client);
    assert_eq!(
        controller.reconcile("demo", "ROOT").await.expect("create"),
        Outcome::Created
    );
    assert_eq!(root_in(&api, "demo").as_deref(), Some("ROOT"));
    assert_eq!(
        controller.reconcile("demo", "ROOT").await.expect("noop"),
        Outcome::Unchanged
    );

    // An edit that drops the label and changes the PEM, and adds a key of its own.
    api.put(
        "/api/v1/namespaces/demo/configmaps",
        json!({"metadata": {"name": CONFIGMAP_NAME}, "data": {ROOT_CERT_KEY: "EDITED", "extra": "x"}}),
    );
    assert_eq!(
        controller.reconcile("demo", "ROOT").await.expect("repair"),
        Outcome::Updated
    );
    assert_eq!(root_in(&api, "demo").as_deref(), Some("ROOT"));
    assert_eq!(api.get(&cm_path("demo")).expect("cm")["data"]["extra"], "x");

    for skipped in SKIPPED_NAMESPACES {
        assert_eq!(
            controller.reconcile(skipped, "ROOT").await.expect("skip"),
            Outcome::Skipped
        );
    }
    assert_eq!(
        controller.reconcile("demo", "").await.expect("no root yet"),
        Outcome::Skipped
    );
}

#[tokio::test]
async fn reconcile_reports_a_forbidden_write_with_the_namespace() {
    let (client, api) = fake::pair();
    api.on(|call| {
        (call.method == http::Method::POST).then(|| {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "Forbidden", "message": "forbidden", "code": 403}),
            )
        })
    });
    let err = NamespaceController::new(client)
        .reconcile("demo", "ROOT")
        .await
        .expect_err("forbidden");
    let msg = err.to_string();
    assert!(
        msg.contains("demo/istio-ca-root-cert") && msg.contains("create/update"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn controller_keeps_every_namespace_current() {
    let (client, api) = fake::pair();
    for ns in [
        "demo",
        "istio-system",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ] {
        api.put("/api/v1/namespaces", namespace(ns));
    }
    let (root_tx, root_rx) = watch::channel("ROOT1".to_owned());
    let shutdown = CancellationToken::new();
    tokio::spawn(NamespaceController::new(client).run(root_rx, shutdown.clone()));

    let want = |api: &FakeApi, root: &str| {
        ["demo", "istio-system", "kube-system"]
            .iter()
            .all(|ns| root_in(api, ns).as_deref() == Some(root))
    };
    eventually("ConfigMaps created", || want(&api, "ROOT1")).await;
    assert!(api.get(&cm_path("kube-public")).is_none());
    assert!(api.get(&cm_path("kube-node-lease")).is_none());

    // Deleted: recreated.
    api.delete(&cm_path("demo"));
    eventually("recreated", || {
        root_in(&api, "demo").as_deref() == Some("ROOT1")
    })
    .await;

    // Edited: repaired.
    api.put(
        "/api/v1/namespaces/kube-system/configmaps",
        json!({"metadata": {"name": CONFIGMAP_NAME, "labels": {CONFIG_LABEL: "true"}},
               "data": {ROOT_CERT_KEY: "TAMPERED"}}),
    );
    eventually("repaired", || {
        root_in(&api, "kube-system").as_deref() == Some("ROOT1")
    })
    .await;

    // A new root: every ConfigMap follows.
    root_tx.send_replace("ROOT2".to_owned());
    eventually("updated to the new root", || want(&api, "ROOT2")).await;

    // A new namespace gets one.
    api.put("/api/v1/namespaces", namespace("late"));
    eventually("new namespace", || {
        root_in(&api, "late").as_deref() == Some("ROOT2")
    })
    .await;
    shutdown.cancel();
}
