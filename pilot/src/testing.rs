//! Fixtures for tests and benchmarks: push contexts from YAML, proxies from node ids.
//! Kubernetes objects come from the `kube-fake` crate's builders.

pub mod jwt;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};

use crate::config::object::parse_manifests;
use crate::config::ConfigStore;
use crate::model::{MeshConfig, Proxy, PushContext};

/// Builds a push context from manifests (panics on invalid YAML: fixtures only).
pub fn push_context(yaml: &str) -> PushContext {
    let store = ConfigStore::new();
    let parsed = parse_manifests(yaml).expect("fixture YAML parses");
    store.replace_source("fixture", parsed.configs);
    PushContext::build(
        &store.snapshot(),
        MeshConfig::default(),
        "cluster.local",
        "fixture/1".into(),
    )
}

/// A node as an Envoy sidecar or gRPC client sends it.
pub fn node(id: &str, metadata: &[(&str, &str)]) -> Node {
    Node {
        id: id.to_owned(),
        metadata: Some(Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(ValueKind::StringValue(v.to_string())),
                        },
                    )
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// A sidecar proxy in `namespace` with `ip`.
pub fn sidecar(ip: &str, namespace: &str) -> Proxy {
    Proxy::from_node(Some(&node(
        &format!("sidecar~{ip}~app.{namespace}~{namespace}.svc.cluster.local"),
        &[("ISTIO_VERSION", "1.32.0")],
    )))
    .expect("valid fixture node")
}

/// A proxyless gRPC client in `namespace`.
pub fn grpc_client(namespace: &str) -> Proxy {
    Proxy::from_node(Some(&node(
        &format!("sidecar~127.0.0.1~client.{namespace}~{namespace}.svc.cluster.local"),
        &[("GENERATOR", "grpc")],
    )))
    .expect("valid fixture node")
}

/// A gateway proxy (`router`) in `namespace` with `ip`, pod `labels` and extra metadata.
pub fn router(
    ip: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    metadata: &[(&str, &str)],
) -> Proxy {
    let mut n = node(
        &format!("router~{ip}~gw.{namespace}~{namespace}.svc.cluster.local"),
        metadata,
    );
    let labels = Struct {
        fields: labels
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(ValueKind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    };
    if let Some(md) = n.metadata.as_mut() {
        md.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(ValueKind::StructValue(labels)),
            },
        );
    }
    Proxy::from_node(Some(&n)).expect("valid fixture node")
}
