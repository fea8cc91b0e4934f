//! The cluster the benchmark serves: namespaces, nodes, and per service a Service, one
//! EndpointSlice with one ready endpoint, and the Pod behind it; plus istiod's mesh
//! ConfigMap and webhook configurations.

use envoy_types::pb::envoy::config::core::v3::Node;
use kube_fake::objects;
use serde_json::{json, Value};

/// istiod's namespace.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// The nodes pods are spread over.
const NODES: usize = 3;

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
        .map(|name| objects::namespace(&name).build())
        .collect();
    out.extend((0..NODES).map(|n| {
        let name = format!("node-{n}");
        objects::node(&name)
            .label("kubernetes.io/hostname", &name)
            .label("topology.kubernetes.io/region", "bench")
            .label("topology.kubernetes.io/zone", &format!("bench-{}", n % 2))
            .build()
    }));
    out
}

/// A webhook configuration of the default revision with one webhook calling istiod.
fn webhook_configuration(kind: &str, name: &str, webhook: &str, path: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"istio.io/rev": "default"}},
        "webhooks": [{
            "name": webhook,
            "clientConfig": {"service": {
                "name": "istiod", "namespace": ISTIO_NAMESPACE, "path": path, "port": 443}},
            "failurePolicy": policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    })
}

/// The `istio` mesh ConfigMap and one validating and one mutating webhook configuration
/// of the default revision, for the writers to patch.
pub fn istiod_config() -> Vec<Value> {
    vec![
        objects::config_map(ISTIO_NAMESPACE, "istio")
            .data(
                "mesh",
                "trustDomain: cluster.local\nrootNamespace: istio-system\n",
            )
            .build(),
        webhook_configuration(
            "ValidatingWebhookConfiguration",
            "istio-validator-istio-system",
            "rev.validation.istio.io",
            "/validate",
            "Ignore",
        ),
        webhook_configuration(
            "MutatingWebhookConfiguration",
            "istio-sidecar-injector",
            "rev.namespace.sidecar-injector.istio.io",
            "/inject",
            "Fail",
        ),
    ]
}

/// The IP of the pod behind service `i`.
fn pod_ip(i: usize) -> String {
    format!("10.200.{}.{}", i / 250, i % 250 + 1)
}

/// The IP of pod `k` of service `i`: its first pod's, then `10.201.<k>.<i mod 250 + 1>`.
fn endpoint_ip(i: usize, k: usize) -> String {
    if k == 0 {
        pod_ip(i)
    } else {
        format!("10.201.{k}.{}", i % 250 + 1)
    }
}

/// The sidecar of the pod behind service `i`, as its Istio agent connects: at the pod's
/// IP, in its namespace, with its labels.
pub fn workload_node(i: usize, namespaces: usize) -> Node {
    let name = format!("svc-{i}");
    crate::ads::workload_node(
        &format!("{name}-0"),
        &service_namespace(i, namespaces),
        &pod_ip(i),
        &[("app", &name)],
    )
}

/// The EndpointSlice of service `i` with `endpoints` ready endpoints, pods `svc-<i>-<k>`
/// (see [`pod`]), as the EndpointSlice controller writes it after a scale-up.
pub fn endpoint_slice(i: usize, namespaces: usize, endpoints: usize) -> Value {
    let ns = service_namespace(i, namespaces);
    let name = format!("svc-{i}");
    let node = format!("node-{}", i % NODES);
    let mut slice = objects::endpoint_slice(&ns, &format!("{name}-abcde"), &name)
        .label(
            "endpointslice.kubernetes.io/managed-by",
            "endpointslice-controller.k8s.io",
        )
        .port(8080, "http");
    for k in 0..endpoints.max(1) {
        slice = slice
            .endpoint(&endpoint_ip(i, k))
            .ready(true)
            .node(&node)
            .pod(&format!("{name}-{k}"));
    }
    slice.build()
}

/// Service `svc-<i>` (HTTP port 80 named `http` to target 8080), its EndpointSlice with
/// one ready endpoint, and the Pod at that endpoint.
pub fn service(i: usize, namespaces: usize) -> Vec<Value> {
    let ns = service_namespace(i, namespaces);
    let name = format!("svc-{i}");
    let (a, b) = (i / 250, i % 250 + 1);
    vec![
        objects::service(&ns, &name)
            .label("app", &name)
            .cluster_ip(&format!("10.96.{a}.{b}"))
            .selector("app", &name)
            .port(80, "http")
            .target_port(8080)
            .build(),
        endpoint_slice(i, namespaces, 1),
        pod(i, namespaces, 0),
    ]
}

/// Pod `svc-<i>-<k>` of service `i`, running at its endpoint IP (see [`endpoint_slice`]).
pub fn pod(i: usize, namespaces: usize, k: usize) -> Value {
    let name = format!("svc-{i}");
    let node = format!("node-{}", i % NODES);
    objects::pod(&service_namespace(i, namespaces), &format!("{name}-{k}"))
        .label("app", &name)
        .node(&node)
        .service_account("default")
        .container("app")
        .image("registry.example/app:1")
        .container_port(8080, "http")
        .ip(&endpoint_ip(i, k))
        .host_ip(&format!("192.168.0.{}", i % NODES + 1))
        .running()
        .build()
}

/// VirtualService `svc-0` (in service 0's namespace) with an HTTP timeout of `round`
/// seconds, at `v1beta1`, which current istiod and the 2022 one both read: each new `round`
/// changes the routes of every sidecar.
pub fn virtual_service(namespaces: usize, round: usize) -> Value {
    let ns = service_namespace(0, namespaces);
    let host = format!("svc-0.{ns}.svc.cluster.local");
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "svc-0", "namespace": ns},
        "spec": {
            "hosts": [host],
            "http": [{"timeout": format!("{round}s"), "route": [{"destination": {"host": host}}]}],
        },
    })
}

/// The secured mesh: mesh-wide STRICT mTLS and `n` ALLOW AuthorizationPolicies spread over
/// the service namespaces, each admitting one client identity to `GET /api/<i>/*` — what
/// every sidecar in a namespace then carries on its inbound listener. At `v1beta1`, which
/// current istiod and the 2022 one both read.
pub fn mesh_security(n: usize, namespaces: usize) -> Vec<Value> {
    objects::mesh_security_in("security.istio.io/v1beta1", n, |i| {
        service_namespace(i, namespaces)
    })
}
