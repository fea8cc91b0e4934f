//! The cluster the benchmark serves: namespaces, nodes, and per service a Service, one
//! EndpointSlice with one ready endpoint, and the Pod behind it; plus istiod's mesh
//! ConfigMap and webhook configurations.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Namespace, Node, Pod, PodCondition, PodSpec, PodStatus,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// istiod's namespace.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// The nodes pods are spread over.
const NODES: usize = 3;

fn to_value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).expect("fixture objects serialize")
}

fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

/// The namespace of service `i`.
pub fn service_namespace(i: usize, namespaces: usize) -> String {
    format!("bench-{}", i % namespaces.max(1))
}

/// The CDS cluster of service `i`'s HTTP port.
pub fn cluster_name(i: usize, namespaces: usize) -> String {
    format!(
        "outbound|80||svc-{i}.{}.svc.cluster.local",
        service_namespace(i, namespaces)
    )
}

/// Namespaces (istiod's, `default`, `kube-system`, the service namespaces) and nodes.
pub fn cluster(namespaces: usize) -> Vec<Value> {
    let mut out: Vec<Value> = [ISTIO_NAMESPACE, "default", "kube-system"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..namespaces.max(1)).map(|n| format!("bench-{n}")))
        .map(|name| {
            to_value(Namespace {
                metadata: meta(&name, None, &[("kubernetes.io/metadata.name", &name)]),
                ..Default::default()
            })
        })
        .collect();
    out.extend((0..NODES).map(|n| {
        let name = format!("node-{n}");
        to_value(Node {
            metadata: meta(
                &name,
                None,
                &[
                    ("kubernetes.io/hostname", &name),
                    ("topology.kubernetes.io/region", "bench"),
                    ("topology.kubernetes.io/zone", &format!("bench-{}", n % 2)),
                ],
            ),
            ..Default::default()
        })
    }));
    out
}

/// The `istio` mesh ConfigMap and one validating and one mutating webhook configuration
/// of the default revision, for the writers to patch.
pub fn istiod_config() -> Vec<Value> {
    let rev = [("istio.io/rev", "default")];
    let client_config = |path: &str| WebhookClientConfig {
        service: Some(
            k8s_openapi::api::admissionregistration::v1::ServiceReference {
                name: "istiod".to_owned(),
                namespace: ISTIO_NAMESPACE.to_owned(),
                path: Some(path.to_owned()),
                port: Some(443),
            },
        ),
        ..Default::default()
    };
    vec![
        to_value(ConfigMap {
            metadata: meta("istio", Some(ISTIO_NAMESPACE), &[]),
            data: Some(BTreeMap::from([(
                "mesh".to_owned(),
                "trustDomain: cluster.local\nrootNamespace: istio-system\n".to_owned(),
            )])),
            ..Default::default()
        }),
        to_value(ValidatingWebhookConfiguration {
            metadata: meta("istio-validator-istio-system", None, &rev),
            webhooks: Some(vec![ValidatingWebhook {
                name: "rev.validation.istio.io".to_owned(),
                client_config: client_config("/validate"),
                failure_policy: Some("Ignore".to_owned()),
                side_effects: "None".to_owned(),
                admission_review_versions: vec!["v1".to_owned()],
                ..Default::default()
            }]),
        }),
        to_value(MutatingWebhookConfiguration {
            metadata: meta("istio-sidecar-injector", None, &rev),
            webhooks: Some(vec![MutatingWebhook {
                name: "rev.namespace.sidecar-injector.istio.io".to_owned(),
                client_config: client_config("/inject"),
                failure_policy: Some("Fail".to_owned()),
                side_effects: "None".to_owned(),
                admission_review_versions: vec!["v1".to_owned()],
                ..Default::default()
            }]),
        }),
    ]
}

/// Service `svc-<i>` (HTTP port 80 named `http` to target 8080), its EndpointSlice with
/// one ready endpoint, and the Pod at that endpoint.
pub fn service(i: usize, namespaces: usize) -> Vec<Value> {
    let ns = service_namespace(i, namespaces);
    let name = format!("svc-{i}");
    let pod_name = format!("{name}-0");
    let (a, b) = (i / 250, i % 250 + 1);
    let pod_ip = format!("10.200.{a}.{b}");
    let node = format!("node-{}", i % NODES);
    let app = [("app", name.as_str())];
    let service = Service {
        metadata: meta(&name, Some(&ns), &app),
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!("10.96.{a}.{b}")),
            cluster_ips: Some(vec![format!("10.96.{a}.{b}")]),
            selector: Some(BTreeMap::from([("app".to_owned(), name.clone())])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: meta(
            &format!("{name}-abcde"),
            Some(&ns),
            &[
                ("kubernetes.io/service-name", name.as_str()),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    "endpointslice-controller.k8s.io",
                ),
            ],
        ),
        address_type: "IPv4".to_owned(),
        endpoints: vec![Endpoint {
            addresses: vec![pod_ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(node.clone()),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".to_owned()),
                name: Some(pod_name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".to_owned()),
            port: Some(8080),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
    };
    let pod = Pod {
        metadata: meta(&pod_name, Some(&ns), &app),
        spec: Some(PodSpec {
            node_name: Some(node),
            service_account_name: Some("default".to_owned()),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("registry.example/app:1".to_owned()),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    name: Some("http".to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some(pod_ip.clone()),
            host_ip: Some(format!("192.168.0.{}", i % NODES + 1)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    vec![to_value(service), to_value(slice), to_value(pod)]
}
