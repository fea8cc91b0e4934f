//! Watches against the fake API server: list, watch events, a CRD that is not
//! installed, a kind istiod may not read, deletes and relists of objects that do not
//! parse, and managed fields dropped on arrival.

use std::time::Duration;

use kube_fake::objects;
use kube_fake::{eventually, failure, FakeApi, ResourceType};
use serde_json::json;

use super::*;
use crate::config::Spec;

const SERVICES: &str = "/api/v1/namespaces/demo/services";

fn service(name: &str) -> serde_json::Value {
    objects::service("demo", name)
        .cluster_ip("10.96.0.1")
        .port(80, "http")
        .build()
}

#[tokio::test]
async fn lists_watches_and_tolerates_missing_and_forbidden_kinds() {
    // Services and Pods are served, VirtualServices not (their CRD is not installed), and
    // istiod may not read Pods.
    let api = FakeApi::serving([
        ResourceType::new("", "v1", "Service", "services", true),
        ResourceType::new("", "v1", "Pod", "pods", true),
    ]);
    api.on(|call| {
        call.path
            .ends_with("/pods")
            .then(|| failure(403, "Forbidden", "pods is forbidden"))
    });
    api.put(SERVICES, service("a"));
    // The initial sync completes although two of the three kinds cannot be listed.
    let (store, shutdown) = start(
        api.client(),
        vec![Kind::Service, Kind::VirtualService, Kind::Pod],
    )
    .await;

    // A service created after the list arrives through the watch.
    api.put(SERVICES, service("b"));
    let names = || -> Vec<String> {
        store
            .snapshot()
            .of_kind(Kind::Service)
            .map(|c| c.key.name.clone())
            .collect()
    };
    eventually("the watch event applied", || names() == ["a", "b"]).await;
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

#[test]
fn api_errors_are_classified_by_status() {
    let status = |code: u16| {
        Box::new(kube::core::Status {
            code,
            ..Default::default()
        })
    };
    let api = |code: u16| kube::Error::Api(status(code));
    let cases = [
        (
            watcher::Error::InitialListFailed(api(404)),
            Failure::NotInstalled,
        ),
        (
            watcher::Error::InitialListFailed(api(403)),
            Failure::Forbidden,
        ),
        (
            watcher::Error::WatchStartFailed(api(403)),
            Failure::Forbidden,
        ),
        (
            watcher::Error::InitialListFailed(api(500)),
            Failure::Transient,
        ),
        // An expired version in the stream: the watcher relists by itself.
        (
            watcher::Error::WatchError(status(410)),
            Failure::Expired { restart: false },
        ),
        // The watch request itself answered 410: the watcher would retry the same version.
        (
            watcher::Error::WatchStartFailed(api(410)),
            Failure::Expired { restart: true },
        ),
        (watcher::Error::NoResourceVersion, Failure::Transient),
    ];
    for (error, want) in cases {
        assert_eq!(classify(&error), want, "{error}");
    }
}

const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/demo/virtualservices";

fn virtual_service(name: &str, hosts: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name, "namespace": "demo"},
           "spec": {"hosts": hosts, "http": [{"route": [{"destination": {"host": "web"}}]}]}})
}

fn stored(store: &ConfigStore, kind: Kind, name: &str) -> Option<Arc<Config>> {
    store.snapshot().configs.into_values().find(|c| {
        c.key
            == ConfigKey {
                kind,
                namespace: "demo".into(),
                name: name.into(),
            }
    })
}

fn vs_hosts(store: &ConfigStore, name: &str) -> Option<Vec<String>> {
    match &stored(store, Kind::VirtualService, name)?.spec {
        Spec::VirtualService(vs) => Some(vs.hosts.clone()),
        other => panic!("not a VirtualService: {other:?}"),
    }
}

/// Starts a source for `kinds` against `client` and waits for its initial sync.
async fn start(
    client: kube::Client,
    kinds: Vec<Kind>,
) -> (ConfigStore, tokio_util::sync::CancellationToken) {
    let store = ConfigStore::new();
    let source = KubeSource::new(client, store.clone(), kinds);
    let sync = source.sync.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(source.run(shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(10), sync.wait())
        .await
        .expect("initial sync");
    (store, shutdown)
}

#[tokio::test]
async fn delete_applies_to_an_object_last_updated_to_an_invalid_spec() {
    let (client, api) = kube_fake::pair();
    api.put(
        VS_PATH,
        virtual_service("a", json!(["a.demo.svc.cluster.local"])),
    );
    let (store, shutdown) = start(client, vec![Kind::VirtualService]).await;
    eventually("a listed", || vs_hosts(&store, "a").is_some()).await;

    // An update that does not parse is skipped; the last valid version keeps serving. The
    // watch delivers events in order, so once "b" is in, the bad update was seen.
    api.put(VS_PATH, virtual_service("a", json!(3)));
    api.put(
        VS_PATH,
        virtual_service("b", json!(["b.demo.svc.cluster.local"])),
    );
    eventually("b added", || vs_hosts(&store, "b").is_some()).await;
    assert_eq!(
        vs_hosts(&store, "a").expect("a kept"),
        ["a.demo.svc.cluster.local"]
    );

    // The delete carries the invalid spec; it still removes the object.
    api.delete(&format!("{VS_PATH}/a"));
    eventually("a deleted", || vs_hosts(&store, "a").is_none()).await;
    assert!(vs_hosts(&store, "b").is_some());
    shutdown.cancel();
}

fn object(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).expect("object")
}

#[test]
fn relist_keeps_last_valid_versions_and_drops_missing_objects() {
    let store = ConfigStore::new();
    let mut applier = Applier::new(Kind::VirtualService, store.clone());
    let valid = |name: &str| object(virtual_service(name, json!([format!("{name}.demo")])));
    let invalid = |name: &str| object(virtual_service(name, json!(3)));

    assert!(!applier.apply(Event::Init));
    applier.apply(Event::InitApply(valid("a")));
    applier.apply(Event::InitApply(valid("b")));
    applier.apply(Event::InitApply(invalid("never-valid")));
    assert!(applier.apply(Event::InitDone));
    let names = |store: &ConfigStore| -> Vec<String> {
        store
            .snapshot()
            .of_kind(Kind::VirtualService)
            .map(|c| c.key.name.clone())
            .collect()
    };
    assert_eq!(names(&store), ["a", "b"]);

    // "a" turns invalid; "b" goes while the watch is down. The relist keeps "a" as it was
    // last valid and drops "b".
    applier.apply(Event::Apply(invalid("a")));
    applier.apply(Event::Init);
    applier.apply(Event::InitApply(invalid("a")));
    assert!(applier.apply(Event::InitDone));
    assert_eq!(names(&store), ["a"]);
    assert_eq!(vs_hosts(&store, "a").expect("a kept"), ["a.demo"]);

    // "a" goes too, still invalid when last seen: the next list removes it.
    applier.apply(Event::Init);
    applier.apply(Event::InitDone);
    assert!(names(&store).is_empty());

    // A delete needs only the name, in `default` when the object names no namespace.
    applier.apply(Event::Apply(object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "c"},
        "spec": {"hosts": ["c"], "http": [{"route": [{"destination": {"host": "c"}}]}]}}))));
    assert_eq!(names(&store), ["c"]);
    applier.apply(Event::Delete(object(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "c"}, "spec": {"hosts": 3}}))));
    assert!(names(&store).is_empty());
}

#[test]
fn an_update_validation_rejects_keeps_the_last_valid_version() {
    let store = ConfigStore::new();
    let mut applier = Applier::new(Kind::VirtualService, store.clone());
    let with_destination = |host: &str| {
        object(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                      "metadata": {"name": "a", "namespace": "demo", "resourceVersion": "7"},
                      "spec": {"hosts": ["a.demo"], "http": [{"route": [{"destination": {"host": host}}]}]}}),
        )
    };
    applier.apply(Event::Init);
    applier.apply(Event::InitApply(with_destination("")));
    applier.apply(Event::InitDone);
    assert!(
        vs_hosts(&store, "a").is_none(),
        "an invalid object is never applied"
    );

    applier.apply(Event::Apply(with_destination("a.demo")));
    assert_eq!(vs_hosts(&store, "a").expect("valid"), ["a.demo"]);
    // Parses, but the webhook would deny it (a destination without a host).
    applier.apply(Event::Apply(with_destination("")));
    let kept = stored(&store, Kind::VirtualService, "a").expect("kept");
    assert_eq!(
        kept.manifest()["spec"]["http"][0]["route"][0]["destination"]["host"],
        "a.demo"
    );
    // A relist that still sees it invalid keeps it too.
    applier.apply(Event::Init);
    applier.apply(Event::InitApply(with_destination("")));
    applier.apply(Event::InitDone);
    assert!(stored(&store, Kind::VirtualService, "a").is_some());
}

#[tokio::test]
async fn managed_fields_are_dropped_and_configz_keeps_istio_specs() {
    let managed = json!([{"manager": "kubectl", "operation": "Apply",
                          "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
    let (client, api) = kube_fake::pair();
    let mut svc = service("web");
    svc["metadata"]["managedFields"] = managed.clone();
    api.put(SERVICES, svc);
    let mut vs = virtual_service("web", json!(["web.demo.svc.cluster.local"]));
    vs["metadata"]["managedFields"] = managed;
    api.put(VS_PATH, vs);
    let (store, shutdown) = start(client, vec![Kind::Service, Kind::VirtualService]).await;
    eventually("both listed", || {
        stored(&store, Kind::Service, "web").is_some() && vs_hosts(&store, "web").is_some()
    })
    .await;

    let svc = stored(&store, Kind::Service, "web").expect("service");
    let Spec::Service(typed) = &svc.spec else {
        panic!("not a Service")
    };
    assert!(typed.metadata.managed_fields.is_none());
    assert!(svc.raw.is_none(), "a Service keeps only its typed form");

    let configz = crate::server::debug::configz_body(&store.snapshot());
    let text = configz.to_string();
    assert!(!text.contains("managedFields"), "{text}");
    let entry = |kind: &str| {
        configz["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .find(|c| c["kind"] == kind)
            .unwrap_or_else(|| panic!("{kind} in configz: {text}"))
            .clone()
    };
    let vs = entry("VirtualService");
    assert_eq!(
        vs["object"]["spec"]["hosts"],
        json!(["web.demo.svc.cluster.local"])
    );
    assert_eq!(vs["object"]["apiVersion"], "networking.istio.io/v1");
    // A Service is shown from its typed form.
    let svc = entry("Service");
    assert_eq!(svc["object"]["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["object"]["kind"], "Service");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn waiting_for_sync_reports_the_pending_kinds() {
    let sync = SyncTracker::new([Kind::Service, Kind::Pod]);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let waiter = tokio::spawn({
        let (sync, reports) = (sync.clone(), reports.clone());
        async move {
            sync.wait_reporting(Duration::from_secs(5), |pending| {
                reports.lock().unwrap().push(pending.to_vec())
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    sync.done(Kind::Service);
    tokio::time::sleep(Duration::from_secs(5)).await;
    sync.done(Kind::Pod);
    waiter.await.expect("wait ends once every kind is synced");
    assert_eq!(
        *reports.lock().unwrap(),
        [vec![Kind::Service, Kind::Pod], vec![Kind::Pod]]
    );
}

fn crd(group: &str, plural: &str, established: bool) -> serde_json::Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": format!("{plural}.{group}")},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": plural, "kind": "VirtualService"},
                    "versions": [{"name": "v1", "served": true, "storage": true}]},
           "status": {"conditions": [{"type": "Established",
                                      "status": if established { "True" } else { "False" }}]}})
}

#[tokio::test]
async fn a_crd_established_later_is_listed_without_waiting_for_the_backoff() {
    use std::sync::atomic::{AtomicBool, Ordering};

    const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (client, api) = kube_fake::pair();
    let served = Arc::new(AtomicBool::new(false));
    let flag = served.clone();
    api.on(move |call| {
        (call.path.contains("/virtualservices") && !flag.load(Ordering::SeqCst)).then(|| {
            failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
    });
    let (store, shutdown) = start(client, vec![Kind::VirtualService]).await;
    let refused = || {
        api.calls()
            .iter()
            .filter(|c| c.path.contains("/virtualservices"))
            .count()
    };
    // A CRD that is not established yet wakes nothing.
    api.put(CRDS, crd("networking.istio.io", "virtualservices", false));
    eventually("two refused lists", || refused() >= 2).await;

    // Just after a refused list the watch's own retry is at least 800 ms away: a list within
    // 400 ms can only come from the established CRD waking it.
    api.put(VS_PATH, virtual_service("a", json!(["a.demo"])));
    served.store(true, Ordering::SeqCst);
    api.put(CRDS, crd("networking.istio.io", "virtualservices", true));
    tokio::time::timeout(Duration::from_millis(400), async {
        eventually("listed after the CRD", || vs_hosts(&store, "a").is_some()).await
    })
    .await
    .expect("listed without waiting for the backoff");
    shutdown.cancel();
}
