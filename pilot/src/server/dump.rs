//! Readable forms of generated resources for `/debug/config_dump`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Decodes a known resource type into its debug text; other types are shown by size.
pub fn describe(any: &Any) -> String {
    fn show<M: Message + Name + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
        M::decode(bytes).map_or_else(
            |e| format!("undecodable {}: {e}", M::full_name()),
            |m| format!("{m:#?}"),
        )
    }
    let bytes = any.value.as_slice();
    match any.type_url.as_str() {
        t if t == Cluster::type_url() => show::<Cluster>(bytes),
        t if t == ClusterLoadAssignment::type_url() => show::<ClusterLoadAssignment>(bytes),
        t if t == Listener::type_url() => show::<Listener>(bytes),
        t if t == RouteConfiguration::type_url() => show::<RouteConfiguration>(bytes),
        other => format!("{other} ({} bytes)", bytes.len()),
    }
}
