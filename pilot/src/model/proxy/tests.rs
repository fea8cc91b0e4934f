//! Node ids and metadata, and property tests of the xDS request front end: decoding
//! random or truncated `DiscoveryRequest`s and building proxies from random nodes.

use super::*;
use crate::testing::node;

#[test]
fn parses_sidecar_node() {
    let p = Proxy::from_node(Some(&node(
        "sidecar~10.1.2.3~echo-1.demo~demo.svc.cluster.local",
        &[("GENERATOR", "grpc"), ("ISTIO_VERSION", "1.32.0")],
    )))
    .unwrap();
    assert_eq!(p.kind, NodeType::Sidecar);
    assert_eq!(p.ip_addresses, vec!["10.1.2.3"]);
    assert_eq!(p.config_namespace, "demo");
    assert!(p.is_proxyless_grpc());
}

#[test]
fn rejects_bad_node_ids() {
    for (id, want) in [
        ("sidecar~10.1.2.3~x", "want 4 parts"),
        ("gateway~10.1.2.3~x~y", "unknown proxy type"),
        ("sidecar~~x~y", "empty IP"),
    ] {
        let err = Proxy::from_node(Some(&node(id, &[])))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{id}: {err}");
    }
    assert_eq!(Proxy::from_node(None), Err(ProxyError::MissingNode));
}

#[test]
fn metadata_namespace_and_ips_win() {
    let p = Proxy::from_node(Some(&node(
        "sidecar~10.0.0.1~a.b~b.svc.cluster.local",
        &[("NAMESPACE", "other"), ("INSTANCE_IPS", "10.0.0.2,fd00::2")],
    )))
    .unwrap();
    assert_eq!(p.config_namespace, "other");
    assert_eq!(p.ip_addresses, vec!["10.0.0.2", "fd00::2"]);
}

mod properties {
    use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use prost::Message;

    use super::*;
    use crate::arbitrary::{self, json_value, truncated, word};

    /// A protobuf `Value` from a JSON one.
    fn pb_value(v: &serde_json::Value) -> Value {
        let kind = match v {
            serde_json::Value::Null => ValueKind::NullValue(0),
            serde_json::Value::Bool(b) => ValueKind::BoolValue(*b),
            serde_json::Value::Number(n) => ValueKind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => ValueKind::StringValue(s.clone()),
            serde_json::Value::Array(a) => ValueKind::ListValue(ListValue {
                values: a.iter().map(pb_value).collect(),
            }),
            serde_json::Value::Object(o) => ValueKind::StructValue(Struct {
                fields: o.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect(),
            }),
        };
        Value { kind: Some(kind) }
    }

    /// Metadata keys istiod reads, with random values of any type.
    fn metadata() -> impl Strategy<Value = Struct> {
        const KEYS: [&str; 8] = [
            "NAMESPACE",
            "INSTANCE_IPS",
            "LABELS",
            "SERVICE_ACCOUNT",
            "GENERATOR",
            "ISTIO_VERSION",
            "CLUSTER_ID",
            "PROXY_CONFIG",
        ];
        let key = prop_oneof![select(&KEYS[..]).prop_map(str::to_owned), word()];
        prop::collection::vec((key, json_value()), 0..8).prop_map(|fields| Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.clone(), pb_value(v)))
                .collect(),
        })
    }

    /// Node ids: well formed with random parts, or any string.
    fn node_id() -> impl Strategy<Value = String> {
        let kind = prop_oneof![
            select(&["sidecar", "router", "waypoint", "ztunnel", "gateway", ""][..])
                .prop_map(str::to_owned),
            word()
        ];
        prop_oneof![
            (kind, word(), word(), word()).prop_map(|(k, ip, id, d)| format!("{k}~{ip}~{id}~{d}")),
            "\\PC{0,40}",
            "[a-z~.0-9]{0,30}",
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        (
            node_id(),
            prop::option::of(metadata()),
            prop::option::of((word(), word(), word())),
        )
            .prop_map(|(id, metadata, locality)| Node {
                id,
                metadata,
                locality: locality.map(|(region, zone, sub_zone)| Locality {
                    region,
                    zone,
                    sub_zone,
                }),
                ..Node::default()
            })
    }

    fn request() -> impl Strategy<Value = DiscoveryRequest> {
        (
            prop::option::of(node()),
            word(),
            prop::collection::vec(word(), 0..4),
            word(),
        )
            .prop_map(|(node, type_url, names, nonce)| DiscoveryRequest {
                node,
                type_url,
                resource_names: names,
                response_nonce: nonce,
                ..DiscoveryRequest::default()
            })
    }

    /// What the stream does with a first request: the node becomes a proxy, or the
    /// stream is refused with a message.
    fn admit(node: Option<&Node>) -> Result<(), TestCaseError> {
        match Proxy::from_node(node) {
            Ok(p) => {
                prop_assert_eq!(&p.node_id, &node.map(|n| n.id.clone()).unwrap_or_default());
                prop_assert!(!p.ip_addresses.is_empty());
                prop_assert!(!p.config_namespace.is_empty());
                let _ = (p.config_key(Some("sidecar"), true), p.is_proxyless_grpc());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(arbitrary::config())]

        #[test]
        fn random_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(req) = DiscoveryRequest::decode(bytes.as_slice()) {
                admit(req.node.as_ref())?;
            }
            if let Ok(req) = DeltaDiscoveryRequest::decode(bytes.as_slice()) {
                admit(req.node.as_ref())?;
            }
        }

        #[test]
        fn truncated_requests_decode_or_fail_cleanly(req in request(), at in any::<Index>()) {
            let full = req.encode_to_vec();
            let cut = truncated(full.clone(), at);
            match DiscoveryRequest::decode(cut.as_slice()) {
                Ok(decoded) => {
                    if cut.len() == full.len() {
                        prop_assert_eq!(&decoded, &req);
                    }
                    admit(decoded.node.as_ref())?;
                }
                Err(e) => prop_assert!(cut.len() < full.len(), "the whole request failed: {}", e),
            }
        }

        #[test]
        fn random_nodes_become_proxies_or_are_refused(node in node()) {
            admit(Some(&node))?;
        }
    }
}
