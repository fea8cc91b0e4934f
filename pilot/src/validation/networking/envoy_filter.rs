//! EnvoyFilter: config patches and the match each `applyTo` class allows.

use super::super::common::*;
use super::super::report::{field, index, Report};
use super::super::Resource;

/// Listener-class, route-class and cluster-class `applyTo` values, and the match each needs.
fn apply_to_class(apply: &str) -> Option<&'static str> {
    match apply {
        "LISTENER" | "FILTER_CHAIN" | "NETWORK_FILTER" | "HTTP_FILTER" | "LISTENER_FILTER" => {
            Some("listener")
        }
        "ROUTE_CONFIGURATION" | "VIRTUAL_HOST" | "HTTP_ROUTE" => Some("routeConfiguration"),
        "CLUSTER" => Some("cluster"),
        _ => None,
    }
}

/// EnvoyFilter: config patches.
pub fn envoy_filter(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    r.warn(
        "spec",
        "EnvoyFilter exposes internal implementation details that may change at any time. Prefer other APIs if possible, and exercise extreme caution, especially around upgrades.",
    );
    check_selector(spec, "workloadSelector", "labels", "spec", r);
    check_target_refs(spec, r);
    for (i, cp) in list(spec, "configPatches").iter().enumerate() {
        let p = index("spec.configPatches", i);
        let apply = text(cp, "applyTo");
        if apply.is_empty() || apply == "INVALID" {
            r.error(field(&p, "applyTo"), "Envoy filter: missing applyTo");
        }
        let Some(patch) = get(cp, "patch") else {
            r.error(field(&p, "patch"), "Envoy filter: missing patch");
            continue;
        };
        let op = text(patch, "operation");
        if op.is_empty() || op == "INVALID" {
            r.error(
                field(&p, "patch.operation"),
                "Envoy filter: missing patch operation",
            );
        }
        if op != "REMOVE" && !op.is_empty() && !has(patch, "value") {
            r.error(
                field(&p, "patch.value"),
                "Envoy filter: missing patch value for non-remove operation",
            );
        }
        let Some(m) = get(cp, "match") else {
            continue;
        };
        let mp = field(&p, "match");
        if let Some(pv) = get(m, "proxy").and_then(|x| str_of(x, "proxyVersion")) {
            if let Err(e) = validate_regex(pv) {
                r.error(
                    field(&mp, "proxy.proxyVersion"),
                    format!("Envoy filter: invalid regex for proxy version, [{e}]"),
                );
            }
        }
        let class = apply_to_class(apply);
        let wrong = [
            ("listener", "listener"),
            ("routeConfiguration", "http route"),
            ("cluster", "cluster"),
        ];
        for (k, what) in wrong {
            if has(m, k) && class.is_some_and(|c| c != k) {
                let c = class.unwrap_or("");
                let needs = wrong
                    .iter()
                    .find(|(x, _)| *x == c)
                    .map(|(_, w)| *w)
                    .unwrap_or("");
                r.error(
                    field(&mp, k),
                    format!(
                        "Envoy filter: applyTo for {needs} class objects cannot have non {} match",
                        if needs == "http route" {
                            "route configuration"
                        } else {
                            needs
                        }
                    ),
                );
                let _ = what;
            }
        }
        if let Some(l) = get(m, "listener") {
            if let Some(fc) = get(l, "filterChain") {
                if let Some(f) = get(fc, "filter") {
                    if text(f, "name").is_empty() {
                        r.error(
                            field(&mp, "listener.filterChain.filter.name"),
                            "Envoy filter: filter match has no name to match on",
                        );
                    }
                    if let Some(sf) = get(f, "subFilter") {
                        if apply != "HTTP_FILTER" {
                            r.error(field(&mp, "listener.filterChain.filter.subFilter"), "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only");
                        }
                        if text(sf, "name").is_empty() {
                            r.error(
                                field(&mp, "listener.filterChain.filter.subFilter.name"),
                                "Envoy filter: subfilter match has no name to match on",
                            );
                        }
                    }
                }
            }
            check_port_field(l, "portNumber", &field(&mp, "listener"), r);
        }
        if let Some(c) = get(m, "cluster") {
            check_port_field(c, "portNumber", &field(&mp, "cluster"), r);
        }
    }
}
