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

/// Every type istiod names in metrics, with its short name, as upstream's `GetMetricType`.
const SHORT_NAMES: [(&str, &str); 11] = [
    (CLUSTER, "cds"),
    (ENDPOINT, "eds"),
    (LISTENER, "lds"),
    (ROUTE, "rds"),
    (SECRET, "sds"),
    (EXTENSION_CONFIG, "ecds"),
    (NAME_TABLE, "nds"),
    (PROXY_CONFIG, "pcds"),
    (ADDRESS, "wds"),
    (WORKLOAD, "wds"),
    (AUTHORIZATION, "wads"),
];

/// A known type URL and its short name (`cds`, `eds`...); `None` for any other type URL,
/// so that what a client sends never becomes a metric label.
pub fn known(type_url: &str) -> Option<(&'static str, &'static str)> {
    SHORT_NAMES
        .iter()
        .copied()
        .find(|(url, _)| *url == type_url)
}

/// Short name of a type for logs: that of a known type, else the type URL itself.
pub fn short_name(type_url: &str) -> &str {
    known(type_url).map_or(type_url, |(_, short)| short)
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

    #[test]
    fn short_names_are_upstreams_and_unknown_types_have_none() {
        assert_eq!(known(CLUSTER), Some((CLUSTER, "cds")));
        assert_eq!(known(WORKLOAD), Some((WORKLOAD, "wds")));
        assert_eq!(known(AUTHORIZATION).map(|k| k.1), Some("wads"));
        assert_eq!(known("istio.io/debug/syncz"), None);
        assert_eq!(known("a\"b\n# HELP"), None);
        assert_eq!(short_name(ROUTE), "rds");
        assert_eq!(short_name("istio.io/debug/syncz"), "istio.io/debug/syncz");
    }
}
