use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::*;

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the built object has the API's shape")
}

#[test]
fn builders_make_objects_of_the_apis_shape() {
    let svc: core::Service = typed(
        service("demo", "web")
            .cluster_ip("10.96.0.1")
            .port(80, "http")
            .target_port(8080)
            .port(9090, "metrics")
            .app_protocol("http")
            .selector("app", "web")
            .build(),
    );
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.cluster_ips, Some(vec!["10.96.0.1".to_owned()]));
    let ports = spec.ports.expect("ports");
    assert_eq!((ports[0].port, ports[1].port), (80, 9090));
    assert!(ports[0].app_protocol.is_none());
    assert_eq!(ports[1].app_protocol.as_deref(), Some("http"));

    let slice: discovery::EndpointSlice = typed(
        endpoint_slice("demo", "web-1", "web")
            .port(8080, "http")
            .endpoint("10.1.0.1")
            .zone("a")
            .endpoint("10.1.0.2")
            .ready(false)
            .node("node-1")
            .pod("web-0")
            .build(),
    );
    assert_eq!(
        slice.metadata.labels.expect("labels")["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(slice.endpoints[0].zone.as_deref(), Some("a"));
    let second = &slice.endpoints[1];
    assert_eq!(
        second.conditions.as_ref().and_then(|c| c.ready),
        Some(false)
    );
    assert_eq!(
        second
            .target_ref
            .as_ref()
            .and_then(|r| r.namespace.as_deref()),
        Some("demo")
    );

    let pod: core::Pod = typed(
        pod("demo", "web-0")
            .label("app", "web")
            .container("app")
            .image("registry.example/app:1")
            .container_port(8080, "http")
            .service_account("web")
            .node("node-1")
            .ip("10.1.0.1")
            .running()
            .build(),
    );
    let status = pod.status.expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.1"));
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.containers[0].ports.as_ref().map(Vec::len), Some(1));

    let ns: core::Namespace = typed(namespace("demo").build());
    assert_eq!(
        ns.metadata.labels.expect("labels")["kubernetes.io/metadata.name"],
        "demo"
    );
    let _: core::Node = typed(node("n").label("topology.kubernetes.io/zone", "z").build());
    let cm: core::ConfigMap = typed(config_map("demo", "c").data("k", "v").build());
    assert_eq!(cm.data.expect("data")["k"], "v");
}

#[test]
#[should_panic(expected = "target_port comes after")]
fn refining_a_port_before_there_is_one_is_a_fixture_mistake() {
    let _ = service("demo", "web").target_port(80);
}

#[test]
fn manifests_read_back_as_the_same_objects() {
    let objects = services(3, "http");
    assert_eq!(objects.len(), 6);
    let text = manifests(&objects);
    let read: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect();
    assert_eq!(read, objects);
}
