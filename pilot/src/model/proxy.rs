//! A connected proxy: who it is (node id, metadata) and what it runs as.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};
use serde::Serialize;

/// The kind of proxy, the first field of the node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NodeType {
    Sidecar,
    Router,
    Waypoint,
    Ztunnel,
}

impl NodeType {
    fn parse(s: &str) -> Option<NodeType> {
        Some(match s {
            "sidecar" => NodeType::Sidecar,
            "router" => NodeType::Router,
            "waypoint" => NodeType::Waypoint,
            "ztunnel" => NodeType::Ztunnel,
            _ => return None,
        })
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeType::Sidecar => "sidecar",
            NodeType::Router => "router",
            NodeType::Waypoint => "waypoint",
            NodeType::Ztunnel => "ztunnel",
        })
    }
}

/// Why a node could not be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("node is required on the first request of a stream")]
    MissingNode,
    #[error("invalid node id {0:?}: want 4 parts <type>~<ip>~<id>~<domain>, like sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local")]
    NodeIdParts(String),
    #[error("invalid node id {id:?}: unknown proxy type {kind:?} (want sidecar, router, waypoint or ztunnel)")]
    NodeType { id: String, kind: String },
    #[error("invalid node id {0:?}: empty IP address")]
    NodeIp(String),
}

/// A proxy as istiod models it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proxy {
    /// The full node id.
    pub node_id: String,
    pub kind: NodeType,
    /// `pod.ns` part of the node id.
    pub id: String,
    pub dns_domain: String,
    pub ip_addresses: Vec<String>,
    /// Namespace whose config applies (metadata `NAMESPACE`, else from the DNS domain).
    pub config_namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub cluster_id: String,
    pub istio_version: String,
    /// Metadata `GENERATOR`: `grpc` for proxyless gRPC clients.
    pub generator: String,
    /// Whether metadata had a `PROXY_CONFIG` (an Envoy sidecar started by the agent).
    pub has_proxy_config: bool,
    /// `region/zone/subzone`.
    pub locality: String,
    /// Metadata `ROUTER_MODE` of a gateway: `sni-dnat` adds the clusters that
    /// `AUTO_PASSTHROUGH` servers route to by SNI.
    pub router_mode: String,
}

impl Proxy {
    /// Builds the proxy from the node of the first discovery request.
    pub fn from_node(node: Option<&Node>) -> Result<Proxy, ProxyError> {
        let node = node.ok_or(ProxyError::MissingNode)?;
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, id, domain] = parts.as_slice() else {
            return Err(ProxyError::NodeIdParts(node.id.clone()));
        };
        let kind = NodeType::parse(kind).ok_or_else(|| ProxyError::NodeType {
            id: node.id.clone(),
            kind: kind.to_string(),
        })?;
        if ip.is_empty() {
            return Err(ProxyError::NodeIp(node.id.clone()));
        }
        let md = node.metadata.as_ref();
        let instance_ips: Vec<String> = string_field(md, "INSTANCE_IPS")
            .map(|s| {
                s.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let ip_addresses = if instance_ips.is_empty() {
            vec![ip.to_string()]
        } else {
            instance_ips
        };
        let config_namespace = string_field(md, "NAMESPACE")
            .or_else(|| {
                domain
                    .split('.')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "default".to_owned());
        let locality = node
            .locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .filter(|l| l != "//")
            .unwrap_or_default();
        Ok(Proxy {
            node_id: node.id.clone(),
            kind,
            id: id.to_string(),
            dns_domain: domain.to_string(),
            ip_addresses,
            config_namespace,
            labels: struct_field(md, "LABELS"),
            service_account: string_field(md, "SERVICE_ACCOUNT").unwrap_or_default(),
            cluster_id: string_field(md, "CLUSTER_ID").unwrap_or_default(),
            istio_version: string_field(md, "ISTIO_VERSION").unwrap_or_default(),
            generator: string_field(md, "GENERATOR").unwrap_or_default(),
            has_proxy_config: md.is_some_and(|m| m.fields.contains_key("PROXY_CONFIG")),
            locality,
            router_mode: string_field(md, "ROUTER_MODE").unwrap_or_default(),
        })
    }

    /// A gateway proxy: served from Gateway resources, not as a sidecar.
    pub fn is_router(&self) -> bool {
        self.kind == NodeType::Router
    }

    /// Proxyless gRPC clients get gRPC-shaped config.
    pub fn is_proxyless_grpc(&self) -> bool {
        self.generator == "grpc"
    }

    /// What the proxy's own (inbound) config depends on besides the push and the
    /// subscription: proxies with equal keys get identical resources, so a push generates
    /// once per key.
    pub fn config_key(&self, sidecar: Option<&str>, serves_endpoints: bool) -> String {
        // A proxy that serves endpoints has inbound listeners and clusters of its own.
        let ips = if serves_endpoints {
            self.ip_addresses.join(",")
        } else {
            String::new()
        };
        format!("{}|{ips}", self.view_key(sidecar, |_| true))
    }

    /// What the proxy's outbound config depends on: its view of the mesh (namespace,
    /// `Sidecar`, DNS domain, IP family) and, of its labels, only those with a key in
    /// `source_label_keys` (the keys routing rules match clients on). Workloads that
    /// differ in anything else share every outbound resource.
    pub fn outbound_key(
        &self,
        sidecar: Option<&str>,
        source_label_keys: &BTreeSet<&str>,
    ) -> String {
        self.view_key(sidecar, |k| source_label_keys.contains(k))
    }

    /// The proxy's view of the mesh with the labels whose key `keep` accepts.
    fn view_key(&self, sidecar: Option<&str>, keep: impl Fn(&str) -> bool) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.generator,
            self.kind,
            self.config_namespace,
            self.dns_domain,
            sidecar.unwrap_or(""),
            labels.join(","),
            self.ip_family(),
        )
    }

    /// `v4`, `v6` or `dual`: DNS clusters resolve the families the proxy has addresses in.
    fn ip_family(&self) -> &'static str {
        match (
            self.ip_addresses.iter().any(|ip| ip.contains('.')),
            self.ip_addresses.iter().any(|ip| ip.contains(':')),
        ) {
            (true, true) => "dual",
            (false, true) => "v6",
            _ => "v4",
        }
    }
}

fn string_field(md: Option<&Struct>, key: &str) -> Option<String> {
    match md?.fields.get(key)?.kind.as_ref()? {
        ValueKind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn struct_field(md: Option<&Struct>, key: &str) -> BTreeMap<String, String> {
    let Some(Value {
        kind: Some(ValueKind::StructValue(s)),
    }) = md.and_then(|m| m.fields.get(key))
    else {
        return BTreeMap::new();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(ValueKind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
