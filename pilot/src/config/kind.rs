//! The kinds of configuration istiod understands, with their API groups.

use std::fmt;

use serde::Serialize;

/// A configuration kind: a Kubernetes core kind or an Istio kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    ServiceEntry,
    WorkloadEntry,
    VirtualService,
    DestinationRule,
    Sidecar,
    Gateway,
    PeerAuthentication,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Sidecar,
        Kind::Gateway,
        Kind::PeerAuthentication,
    ];

    /// Resolves `apiVersion` + `kind` as written in a manifest. Any served version of a
    /// group is accepted: the spec shapes are compatible across versions.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let k = match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "Service") => Kind::Service,
            ("", "Pod") => Kind::Pod,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            ("networking.istio.io", "ServiceEntry") => Kind::ServiceEntry,
            ("networking.istio.io", "WorkloadEntry") => Kind::WorkloadEntry,
            ("networking.istio.io", "VirtualService") => Kind::VirtualService,
            ("networking.istio.io", "DestinationRule") => Kind::DestinationRule,
            ("networking.istio.io", "Sidecar") => Kind::Sidecar,
            ("networking.istio.io", "Gateway") => Kind::Gateway,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            _ => return None,
        };
        Some(k)
    }

    /// The API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Service | Kind::Pod => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::PeerAuthentication => "security.istio.io",
            _ => "networking.istio.io",
        }
    }

    /// Whether the kind only carries endpoints: a change to it needs an EDS push only.
    pub fn is_endpoint_kind(self) -> bool {
        matches!(self, Kind::EndpointSlice | Kind::WorkloadEntry | Kind::Pod)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
