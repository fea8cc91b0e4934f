//! The namespace controller against the fake API server: created everywhere but the
//! skipped namespaces, recreated, repaired, updated on a new root, new namespaces.

use serde_json::{json, Value};

use super::*;
use kube_fake::{eventually, failure, objects, FakeApi};

fn namespace(name: &str) -> Value {
    objects::namespace(name).build()
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
    let (client, api) = kube_fake::pair();
    // The chart grants configmaps create/get/list/watch/update, not patch.
    api.on(|call| {
        (call.method == http::Method::PATCH)
            .then(|| failure(403, "Forbidden", "cannot patch configmaps"))
    });
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
    let (client, api) = kube_fake::pair();
    api.on(|call| {
        (call.method == http::Method::POST).then(|| failure(403, "Forbidden", "forbidden"))
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
    let (client, api) = kube_fake::pair();
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

/// The API server's answer to a create in a namespace being deleted.
fn namespace_terminating(ns: &str) -> (u16, Value) {
    (
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
               "message": format!("configmaps \"{CONFIGMAP_NAME}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"),
               "details": {"name": CONFIGMAP_NAME, "kind": "configmaps", "causes": [{
                   "reason": "NamespaceTerminating", "field": "metadata.namespace",
                   "message": format!("namespace {ns} is being terminated")}]}}),
    )
}

fn posts_to(api: &FakeApi, ns: &str) -> usize {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    api.calls()
        .iter()
        .filter(|c| c.method == http::Method::POST && c.path == path)
        .count()
}

#[tokio::test]
async fn terminating_namespaces_get_no_configmap_and_no_retries() {
    let (client, api) = kube_fake::pair();
    api.on(|call| {
        let ns = call
            .path
            .strip_prefix("/api/v1/namespaces/")?
            .strip_suffix("/configmaps")?;
        (call.method == http::Method::POST && ns.starts_with("dying"))
            .then(|| namespace_terminating(ns))
    });
    let controller = NamespaceController::new(client);
    // A create that races the namespace's deletion is not an error.
    assert_eq!(
        controller
            .reconcile("dying-race", "ROOT")
            .await
            .expect("skip"),
        Outcome::Skipped
    );

    api.put("/api/v1/namespaces", namespace("demo"));
    api.put(
        "/api/v1/namespaces",
        objects::namespace("dying")
            .set(
                &["metadata", "deletionTimestamp"],
                json!("2026-01-01T00:00:00Z"),
            )
            .set(&["status", "phase"], json!("Terminating"))
            .build(),
    );
    let (_root_tx, root_rx) = watch::channel("ROOT".to_owned());
    let shutdown = CancellationToken::new();
    tokio::spawn(controller.run(root_rx, shutdown.clone()));
    eventually("ConfigMap in the live namespace", || {
        root_in(&api, "demo").as_deref() == Some("ROOT")
    })
    .await;
    api.put("/api/v1/namespaces", namespace("late"));
    eventually("ConfigMap in a later namespace", || {
        root_in(&api, "late").as_deref() == Some("ROOT")
    })
    .await;
    assert_eq!(
        posts_to(&api, "dying"),
        0,
        "listed as terminating: never tried"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_failing_namespace_is_retried_on_its_backoff_not_on_every_event() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (client, api) = kube_fake::pair();
    let failing = Arc::new(AtomicBool::new(true));
    let fail = failing.clone();
    api.on(move |call| {
        (fail.load(Ordering::SeqCst)
            && call.method == http::Method::POST
            && call.path == "/api/v1/namespaces/broken/configmaps")
            .then(|| failure(500, "InternalError", "etcd is down"))
    });
    api.put("/api/v1/namespaces", namespace("broken"));
    let (_root_tx, root_rx) = watch::channel("ROOT".to_owned());
    let shutdown = CancellationToken::new();
    let started = std::time::Instant::now();
    tokio::spawn(NamespaceController::new(client).run(root_rx, shutdown.clone()));
    eventually("the first attempt", || posts_to(&api, "broken") >= 1).await;

    // Many unrelated events while the broken namespace waits for its retry.
    let names: Vec<String> = (0..40).map(|i| format!("ok-{i}")).collect();
    for name in &names {
        api.put("/api/v1/namespaces", namespace(name));
        tokio::task::yield_now().await;
    }
    eventually("ConfigMaps in the other namespaces", || {
        names
            .iter()
            .all(|n| root_in(&api, n).as_deref() == Some("ROOT"))
    })
    .await;
    // Retries at 100 ms, then 200 ms, 400 ms, ...: at most 2 + log2(elapsed / 100 ms).
    let elapsed_ms = started.elapsed().as_millis().max(1) as f64;
    let bound = 2 + (elapsed_ms / 100.0 + 1.0).log2().ceil() as usize;
    let attempts = posts_to(&api, "broken");
    assert!(
        attempts <= bound,
        "{attempts} attempts in {elapsed_ms} ms (at most {bound} on the backoff)"
    );

    // Once the API server takes it, a retry succeeds.
    failing.store(false, Ordering::SeqCst);
    eventually("ConfigMap in the namespace that failed", || {
        root_in(&api, "broken").as_deref() == Some("ROOT")
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_new_root_reaches_every_namespace_even_when_another_event_wakes_the_controller_first() {
    let (client, api) = kube_fake::pair();
    for ns in ["a", "b", "c"] {
        api.put("/api/v1/namespaces", namespace(ns));
    }
    let (root_tx, root_rx) = watch::channel("ROOT0".to_owned());
    let shutdown = CancellationToken::new();
    tokio::spawn(NamespaceController::new(client).run(root_rx, shutdown.clone()));
    let all = |api: &FakeApi, root: &str| {
        ["a", "b", "c"]
            .iter()
            .all(|ns| root_in(api, ns).as_deref() == Some(root))
    };
    eventually("ConfigMaps created", || all(&api, "ROOT0")).await;
    // A new root and an unrelated event at once: whichever wakes the controller first, every
    // namespace gets the new root. Repeated, as the order is up to the scheduler.
    for round in 1..=12 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let root = format!("ROOT{round}");
        root_tx.send_replace(root.clone());
        api.delete(&cm_path("b"));
        eventually(&format!("{root} everywhere"), || all(&api, &root)).await;
    }
    shutdown.cancel();
}
