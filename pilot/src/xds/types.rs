//! xDS type URLs and short names, as upstream uses them in responses and metrics.

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
pub const NAME_TABLE: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";
pub const PROXY_CONFIG: &str = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig";
pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
pub const WORKLOAD: &str = "type.googleapis.com/istio.workload.Workload";
pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
/// Prefix of debug/status types (`istio.io/debug/syncz`).
pub const DEBUG_PREFIX: &str = "istio.io/debug";

/// Order in which a full push sends types, so clusters exist before the listeners and
/// routes that name them.
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// The types a push sends, from the types a connection watches: the known types in
/// [`PUSH_ORDER`], then the rest; only endpoints when the push is not full.
pub fn push_order<'a>(watched: impl Iterator<Item = &'a str>, full: bool) -> Vec<String> {
    let watched: Vec<&str> = watched.collect();
    let known = PUSH_ORDER.iter().copied().filter(|t| watched.contains(t));
    let others = watched.iter().copied().filter(|t| !PUSH_ORDER.contains(t));
    known
        .chain(others)
        .filter(|t| full || *t == ENDPOINT)
        .map(str::to_owned)
        .collect()
}

/// Short name of a type for metric labels (`cds`, `eds`...), as upstream's `GetShortType`.
pub fn short_name(type_url: &str) -> &str {
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        SECRET => "sds",
        EXTENSION_CONFIG => "ecds",
        NAME_TABLE => "nds",
        PROXY_CONFIG => "pcds",
        ADDRESS | WORKLOAD => "wds",
        AUTHORIZATION => "wads",
        other => other,
    }
}

/// Types whose empty first request subscribes to everything (SotW wildcard).
pub fn is_wildcard(type_url: &str) -> bool {
    matches!(
        type_url,
        CLUSTER | LISTENER | NAME_TABLE | PROXY_CONFIG | ADDRESS | WORKLOAD | AUTHORIZATION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_clusters_before_listeners_and_only_endpoints_when_partial() {
        let watched = [ROUTE, "istio.io/debug/syncz", LISTENER, CLUSTER, ENDPOINT];
        assert_eq!(
            push_order(watched.into_iter(), true),
            [CLUSTER, ENDPOINT, LISTENER, ROUTE, "istio.io/debug/syncz"]
        );
        assert_eq!(push_order(watched.into_iter(), false), [ENDPOINT]);
    }
}
