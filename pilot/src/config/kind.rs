//! The kinds of configuration istiod understands, with their API groups.

use std::fmt;

use serde::{Serialize, Serializer};

/// A configuration kind: a Kubernetes core kind, an Istio kind, or a Gateway API kind.
/// Serialized as it is displayed: the API's kind name (`HTTPRoute`, not `HttpRoute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Service,
    EndpointSlice,
    Pod,
    ServiceEntry,
    WorkloadEntry,
    WorkloadGroup,
    VirtualService,
    DestinationRule,
    Sidecar,
    Gateway,
    EnvoyFilter,
    ProxyConfig,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    WasmPlugin,
    /// `gateway.networking.k8s.io` Gateway (named apart from Istio's Gateway).
    KubernetesGateway,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    ReferenceGrant,
}

/// Where a kind is served by the Kubernetes API: group, the version watched, the kind's
/// name there, its plural resource name, and whether it is namespaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const CORE: &str = "";
const DISCOVERY: &str = "discovery.k8s.io";
const NETWORKING: &str = "networking.istio.io";
const SECURITY: &str = "security.istio.io";
const TELEMETRY: &str = "telemetry.istio.io";
const EXTENSIONS: &str = "extensions.istio.io";
const GATEWAY_API: &str = "gateway.networking.k8s.io";

impl Kind {
    pub const ALL: [Kind; 25] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Sidecar,
        Kind::Gateway,
        Kind::EnvoyFilter,
        Kind::ProxyConfig,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::WasmPlugin,
        Kind::KubernetesGateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TcpRoute,
        Kind::TlsRoute,
        Kind::ReferenceGrant,
    ];

    /// The API coordinates of the kind.
    pub fn api(self) -> ApiInfo {
        let (group, version, kind, plural, namespaced) = match self {
            Kind::Namespace => (CORE, "v1", "Namespace", "namespaces", false),
            Kind::Node => (CORE, "v1", "Node", "nodes", false),
            Kind::Service => (CORE, "v1", "Service", "services", true),
            Kind::Pod => (CORE, "v1", "Pod", "pods", true),
            Kind::EndpointSlice => (DISCOVERY, "v1", "EndpointSlice", "endpointslices", true),
            Kind::ServiceEntry => (NETWORKING, "v1", "ServiceEntry", "serviceentries", true),
            Kind::WorkloadEntry => (NETWORKING, "v1", "WorkloadEntry", "workloadentries", true),
            Kind::WorkloadGroup => (NETWORKING, "v1", "WorkloadGroup", "workloadgroups", true),
            Kind::VirtualService => (NETWORKING, "v1", "VirtualService", "virtualservices", true),
            Kind::DestinationRule => (
                NETWORKING,
                "v1",
                "DestinationRule",
                "destinationrules",
                true,
            ),
            Kind::Sidecar => (NETWORKING, "v1", "Sidecar", "sidecars", true),
            Kind::Gateway => (NETWORKING, "v1", "Gateway", "gateways", true),
            Kind::EnvoyFilter => (NETWORKING, "v1alpha3", "EnvoyFilter", "envoyfilters", true),
            Kind::ProxyConfig => (NETWORKING, "v1beta1", "ProxyConfig", "proxyconfigs", true),
            Kind::PeerAuthentication => (
                SECURITY,
                "v1",
                "PeerAuthentication",
                "peerauthentications",
                true,
            ),
            Kind::AuthorizationPolicy => (
                SECURITY,
                "v1",
                "AuthorizationPolicy",
                "authorizationpolicies",
                true,
            ),
            Kind::RequestAuthentication => (
                SECURITY,
                "v1",
                "RequestAuthentication",
                "requestauthentications",
                true,
            ),
            Kind::Telemetry => (TELEMETRY, "v1", "Telemetry", "telemetries", true),
            Kind::WasmPlugin => (EXTENSIONS, "v1alpha1", "WasmPlugin", "wasmplugins", true),
            Kind::KubernetesGateway => (GATEWAY_API, "v1", "Gateway", "gateways", true),
            Kind::HttpRoute => (GATEWAY_API, "v1", "HTTPRoute", "httproutes", true),
            Kind::GrpcRoute => (GATEWAY_API, "v1", "GRPCRoute", "grpcroutes", true),
            Kind::TcpRoute => (GATEWAY_API, "v1alpha2", "TCPRoute", "tcproutes", true),
            Kind::TlsRoute => (GATEWAY_API, "v1alpha2", "TLSRoute", "tlsroutes", true),
            Kind::ReferenceGrant => (
                GATEWAY_API,
                "v1beta1",
                "ReferenceGrant",
                "referencegrants",
                true,
            ),
        };
        ApiInfo {
            group,
            version,
            kind,
            plural,
            namespaced,
        }
    }

    /// Resolves `apiVersion` + `kind` as written in a manifest. Any served version of a
    /// group is accepted: the spec shapes are compatible across versions.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::ALL
            .into_iter()
            .find(|k| k.api().group == group && k.api().kind == kind)
    }

    /// The API group, empty for the core group.
    pub fn group(self) -> &'static str {
        self.api().group
    }

    /// Whether the kind only carries endpoints: a change to it needs an EDS push only.
    pub fn is_endpoint_kind(self) -> bool {
        matches!(self, Kind::EndpointSlice | Kind::WorkloadEntry | Kind::Pod)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self.api().namespaced
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::KubernetesGateway => f.write_str("Gateway.gateway.networking.k8s.io"),
            other => f.write_str(other.api().kind),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_api_kind() {
        let names = serde_json::to_value([Kind::HttpRoute, Kind::Gateway, Kind::KubernetesGateway])
            .unwrap();
        assert_eq!(
            names,
            serde_json::json!(["HTTPRoute", "Gateway", "Gateway.gateway.networking.k8s.io"])
        );
    }

    #[test]
    fn type_meta_round_trips() {
        for k in Kind::ALL {
            let api = k.api();
            let av = if api.group.is_empty() {
                api.version.to_owned()
            } else {
                format!("{}/{}", api.group, api.version)
            };
            assert_eq!(
                Kind::from_type_meta(&av, api.kind),
                Some(k),
                "{av} {}",
                api.kind
            );
        }
        assert_eq!(
            Kind::from_type_meta("networking.istio.io/v1alpha3", "VirtualService"),
            Some(Kind::VirtualService)
        );
        assert_eq!(Kind::from_type_meta("v1", "ConfigMap"), None);
    }
}
