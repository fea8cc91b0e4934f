//! Fixtures shared by the generators' tests: a small mesh, a generator context for a
//! proxy over a mesh, generated resources decoded and found by name.

use kube_fake::objects::{self, manifests};
use prost::Message;
use serde_json::Value;

use super::{GenContext, Resource};
use crate::model::{Proxy, PushContext};
use crate::testing::push_context;

/// A small mesh shared by the sidecar generator tests: an HTTP+gRPC service with a
/// DestinationRule, a TCP service, DNS and passthrough ServiceEntries.
pub(crate) const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080, targetPort: 9080}, {name: grpc, port: 9090, targetPort: 9091}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}, {name: grpc, port: 9091}]
endpoints: [{addresses: [10.1.0.1]}, {addresses: [10.1.0.2]}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: tcp, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 3s}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{name: tls, number: 443, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  resolution: DNS_ROUND_ROBIN
  ports: [{name: http, number: 8000, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any, namespace: default}
spec:
  hosts: [any.example.com]
  addresses: [192.0.2.1]
  resolution: NONE
  ports: [{name: tcp, number: 7000, protocol: TCP}]
"#;

/// Runs `f` with a generator context for `proxy` over `yaml`.
pub(crate) fn with_ctx<T>(yaml: &str, proxy: &Proxy, f: impl FnOnce(&GenContext<'_>) -> T) -> T {
    let push: PushContext = push_context(yaml);
    let scope = push.sidecar_scope(proxy);
    f(&GenContext {
        push: &push,
        proxy,
        scope: &scope,
    })
}

/// Each resource's body decoded as `M`.
pub(crate) fn decoded<M: Message + Default>(resources: &[Resource]) -> Vec<M> {
    resources
        .iter()
        .map(|r| M::decode(r.body.value.as_slice()).expect("the resource decodes"))
        .collect()
}

/// The item whose `name_of` is `name`.
pub(crate) fn named<'a, T>(items: &'a [T], name: &str, name_of: impl Fn(&T) -> &str) -> &'a T {
    items
        .iter()
        .find(|i| name_of(i) == name)
        .unwrap_or_else(|| panic!("nothing named {name}"))
}

/// Subsets v1 and v2 of `echo.demo`.
const ECHO_SUBSETS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: demo}
spec:
  host: echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#;

/// The mesh of the proxyless and EDS tests: service `echo.demo` (gRPC on port 7070,
/// cluster IP 10.96.0.1) with subsets v1 and v2, and `objects` (its endpoints, pods).
pub(crate) fn echo_mesh(objects: &[Value]) -> String {
    let echo = objects::service("demo", "echo")
        .cluster_ip("10.96.0.1")
        .port(7070, "grpc")
        .build();
    let all: Vec<Value> = std::iter::once(echo)
        .chain(objects.iter().cloned())
        .collect();
    format!("{}{ECHO_SUBSETS}", manifests(&all))
}
