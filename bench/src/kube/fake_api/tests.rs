use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use serde_json::json;

use kube::api::DynamicObject;

use super::*;

#[test]
fn merge_patch_follows_rfc7386() {
    let cases = [
        (
            json!({"a": 1, "b": {"c": 2}}),
            json!({"b": {"c": null, "d": 3}}),
            json!({"a": 1, "b": {"d": 3}}),
        ),
        (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
        (json!("x"), json!({"a": 1}), json!({"a": 1})),
    ];
    for (mut target, patch, want) in cases {
        merge_patch(&mut target, &patch);
        assert_eq!(target, want);
    }
}

#[test]
fn selectors_match_labels_and_fields() {
    let obj = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"app": "a"}}});
    let q = |l: &str, f: &str| {
        HashMap::from([
            ("labelSelector".to_owned(), l.to_owned()),
            ("fieldSelector".to_owned(), f.to_owned()),
        ])
    };
    let matches = |l: &str, f: &str| Filter::from_query(None, &q(l, f)).unwrap().matches(&obj);
    assert!(matches("app=a,!other", "metadata.name=n"));
    assert!(matches("app", "metadata.namespace==ns"));
    assert!(!matches("app!=a", ""));
    assert!(!matches("", "metadata.name=m"));
    assert!(Filter::from_query(None, &q("", "spec.nodeName=x")).is_err());
}

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
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}})
}

/// kube-rs itself, against the fake: paged lists, watches that resume, conflicts.
#[tokio::test]
async fn serves_kube_rs() {
    let api = FakeApi::new(istiod_resources(false));
    for name in ["a", "b", "c"] {
        api.create(configmap(name)).unwrap();
    }
    let addr = api.serve().await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
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
}
