//! kube-rs itself against the fake, in-process and over HTTP.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use serde_json::{json, Value};

use super::*;

async fn next<S>(events: &mut S) -> Event<ConfigMap>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a watch event in time")
        .expect("the watch goes on")
        .expect("no watch error")
}

fn configmap(name: &str) -> Value {
    objects::config_map("ns", name).build()
}

fn served() -> FakeApi {
    FakeApi::serving([
        ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::new("", "v1", "Pod", "pods", true),
    ])
}

/// Paged lists, a watcher that lists and then follows, conflicts and unserved kinds.
async fn serves_kube_rs(api: FakeApi, client: kube::Client) {
    for name in ["a", "b", "c"] {
        api.create(configmap(name)).unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");

    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rest = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.metadata.continue_.as_deref().unwrap_or(""), "");

    let mut events = watcher(cms.clone(), watcher::Config::default().page_size(2)).boxed();
    let mut listed = 0;
    loop {
        match next(&mut events).await {
            Event::InitApply(_) => listed += 1,
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(listed, 3);
    api.create(configmap("d")).unwrap();
    match next(&mut events).await {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("d")),
        _ => panic!("expected the new ConfigMap"),
    }
    api.delete("/api/v1/namespaces/ns/configmaps/d")
        .expect("stored");
    match next(&mut events).await {
        Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("d")),
        _ => panic!("expected the delete"),
    }

    let mut stale = cms.get("a").await.unwrap();
    let mut fresh = stale.clone();
    fresh.data = Some([("k".to_owned(), "1".to_owned())].into());
    cms.replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale.data = Some([("k".to_owned(), "2".to_owned())].into());
    match cms.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let missing: Api<DynamicObject> = Api::namespaced_with(
        client,
        "ns",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "VirtualService",
        )),
    );
    match missing.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("an unserved kind must be a 404, got {other:?}"),
    }
    let requests = api.requests();
    // Two lists here, and the watcher's two pages.
    assert_eq!(requests[&("list", "configmaps".to_owned())], 4);
    assert_eq!(requests[&("404", "virtualservices".to_owned())], 1);
}

#[tokio::test]
async fn serves_kube_rs_in_process() {
    let api = served();
    serves_kube_rs(api.clone(), api.client()).await;
}

#[tokio::test]
async fn serves_kube_rs_over_http() {
    let api = served();
    let addr = api.serve().await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    serves_kube_rs(api.clone(), kube::Client::try_from(config).unwrap()).await;
}

#[tokio::test]
async fn records_calls_and_lets_handlers_answer_first() {
    let (client, api) = pair();
    api.on(|call| {
        (call.method == axum::http::Method::POST && call.path.ends_with("/configmaps"))
            .then(|| failure(403, "Forbidden", "cannot create configmaps"))
    });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let cm: ConfigMap = serde_json::from_value(configmap("a")).unwrap();
    match cms.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden")),
        other => panic!("the handler answers, got {other:?}"),
    }
    assert!(api.get("/api/v1/namespaces/ns/configmaps/a").is_none());

    // A dry run is answered and stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client, "ns");
    let pod: Pod = serde_json::from_value(objects::pod("ns", "p").container("c").build()).unwrap();
    pods.create(&dry, &pod).await.expect("dry run accepted");
    assert!(api.get("/api/v1/namespaces/ns/pods/p").is_none());

    let calls = api.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body["metadata"]["name"], "a");
    assert_eq!(calls[1].path, "/api/v1/namespaces/ns/pods");
    assert!(calls[1].query.contains("dryRun=All"), "{}", calls[1].query);
}

#[tokio::test]
async fn subresources_write_their_part_only() {
    let (client, api) = pair();
    api.put(
        "/api/v1/namespaces/ns/pods",
        objects::pod("ns", "p")
            .container("app")
            .image("a:1")
            .build(),
    );
    let pods: Api<Pod> = Api::namespaced(client, "ns");
    let patch = json!({"spec": {
        "containers": [{"name": "ignored"}],
        "ephemeralContainers": [{"name": "debugger", "image": "d:1"}]}});
    let pod = pods
        .patch_subresource(
            "ephemeralcontainers",
            "p",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("patched");
    let spec = pod.spec.expect("spec");
    assert_eq!(
        spec.containers.len(),
        1,
        "only the ephemeral containers change"
    );
    assert_eq!(spec.ephemeral_containers.map(|e| e.len()), Some(1));
    let call = api.calls().pop().expect("the patch");
    assert_eq!(
        call.content_type(),
        "application/strategic-merge-patch+json"
    );

    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.0.0.1"}})),
    )
    .await
    .expect("status patched");
    let stored = api.get("/api/v1/namespaces/ns/pods/p").expect("stored");
    assert_eq!(stored["status"]["podIP"], "10.0.0.1");
    assert_eq!(stored["spec"]["ephemeralContainers"][0]["name"], "debugger");

    match pods
        .patch_subresource(
            "resize",
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("an unknown subresource is a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn token_reviews_authenticate_nothing_by_default() {
    let (client, _api) = pair();
    let reviews: Api<DynamicObject> = Api::all_with(
        client,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
        )),
    );
    let review: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {}, "spec": {"token": "t"}}))
    .unwrap();
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("answered");
    assert_eq!(answer.data["status"]["authenticated"], false);
}
