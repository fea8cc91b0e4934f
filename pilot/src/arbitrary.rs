//! proptest strategies shared by the property tests of the request parsers: JSON values
//! shaped like Istio and Kubernetes objects, and truncations of valid encodings.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

/// Field names and values the parsers look for, so that random objects reach past the
/// first checks.
pub const WORDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "spec",
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "port",
    "number",
    "tls",
    "mode",
    "match",
    "uri",
    "selector",
    "rules",
    "servers",
    "subsets",
    "items",
    "List",
    "Service",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "Sidecar",
    "networking.istio.io/v1",
    "security.istio.io/v1",
    "v1",
    "*",
    "a.b.svc.cluster.local",
    "10.0.0.0/8",
    "1s",
    "ISTIO_MUTUAL",
    "",
];

/// A string: one of [`WORDS`] or a short random one.
pub fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// A JSON value up to four levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A manifest: an Istio or core kind with random metadata and spec.
pub fn manifest() -> impl Strategy<Value = Value> {
    const KINDS: [(&str, &str); 10] = [
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("networking.istio.io/v1", "Gateway"),
        ("networking.istio.io/v1", "Sidecar"),
        ("networking.istio.io/v1", "ServiceEntry"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("v1", "Service"),
        ("v1", "Pod"),
        ("v1", "List"),
    ];
    (select(&KINDS[..]), word(), json_value(), json_value()).prop_map(
        |((api_version, kind), name, metadata, spec)| {
            let mut metadata = match metadata {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            metadata.insert("name".to_owned(), Value::String(name));
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec})
        },
    )
}

/// `bytes` cut at a random point.
pub fn truncated(bytes: Vec<u8>, at: Index) -> Vec<u8> {
    let cut = at.index(bytes.len() + 1);
    bytes[..cut].to_vec()
}

/// `bytes` with one random byte replaced.
pub fn corrupted(mut bytes: Vec<u8>, at: Index, value: u8) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = at.index(bytes.len());
        bytes[i] = value;
    }
    bytes
}

/// The case count of the parser property tests: enough to find shallow panics, few
/// enough to keep `cargo test` quick.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
