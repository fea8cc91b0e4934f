//! RDS for Envoy sidecars: one route config per outbound HTTP port (named by the port),
//! with a virtual host per service and a catch-all (`allow_any` or `block_all`).

use std::collections::{BTreeSet, HashSet};

use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use prost::Message;

use super::cds::policy::{hash_policy, merge_traffic_policy};
use super::lds::egress_allows;
use super::naming::{cluster_name, parse_cluster_name, Direction, PASSTHROUGH_CLUSTER};
use super::route::{default_route, duration, http_routes, RouteSource};
use super::{GenContext, Resource, Subscription};
use crate::config::istio::MESH_GATEWAY;
use crate::model::service::{Registry, Resolution, Service};
use crate::model::PushContext;

pub const ALLOW_ANY_VHOST: &str = "allow_any";
pub const BLOCK_ALL_VHOST: &str = "block_all";
/// Upstream's cap on direct response bodies (1 MiB).
pub const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;
/// Port whose `host:port` domains upstream leaves out: clients omit it.
const PORT_NO_SUFFIX: u16 = 80;

/// Route configs for the requested names (ports).
pub fn route_configs(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    sub.names()
        .filter_map(|name| {
            let port: u16 = name.parse().ok()?;
            Some(Resource::new(name.clone(), &route_config(ctx, name, port)))
        })
        .collect()
}

/// The route config of outbound HTTP port `port`.
pub fn route_config(ctx: &GenContext<'_>, name: &str, port: u16) -> RouteConfiguration {
    let mut used_domains = HashSet::new();
    let mut virtual_hosts = Vec::new();
    for svc in &ctx.scope.services {
        if !svc.port(port).is_some_and(|p| p.protocol.is_http())
            || !egress_allows(ctx.push, ctx.proxy, svc, port)
        {
            continue;
        }
        // Envoy rejects a route config with a domain in two virtual hosts; the first
        // service (in host order) keeps it, as upstream does.
        let domains: Vec<String> = domains(svc, port, &ctx.proxy.dns_domain)
            .into_iter()
            .filter(|d| used_domains.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        let mut routes = match ctx.scope.virtual_service_for(&svc.hostname) {
            Some(vs) => http_routes(ctx.push, &vs.spec.http, port, false, &mesh_source(ctx)),
            None => vec![default_route(
                cluster_name(Direction::Outbound, port, "", &svc.hostname),
                false,
            )],
        };
        for r in &mut routes {
            add_hash_policy(ctx.push, &ctx.proxy.config_namespace, r);
        }
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", svc.hostname),
            domains,
            routes,
            include_request_attempt_count: true,
            ..Default::default()
        });
    }
    virtual_hosts.push(catch_all(ctx.scope.registry_only));
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
        // Clients send `Host: name:port` or just `name`; both must hit the same vhost.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// A sidecar as the source of its routes: the `mesh` gateway, its labels and namespace.
pub fn mesh_source<'a>(ctx: &'a GenContext<'_>) -> RouteSource<'a> {
    RouteSource {
        gateways: &[MESH_GATEWAY],
        labels: &ctx.proxy.labels,
        namespace: &ctx.proxy.config_namespace,
    }
}

/// Host names a client may use for `svc` on `port`: the FQDN, the short forms Kubernetes
/// DNS resolves from the proxy's namespace, and the VIP, each with and without the port.
pub fn domains(svc: &Service, port: u16, proxy_dns_domain: &str) -> Vec<String> {
    let mut out = Vec::new();
    push_with_port(&mut out, &svc.hostname, port);
    for alt in alt_hosts(&svc.hostname, proxy_dns_domain) {
        push_with_port(&mut out, &alt, port);
    }
    // Headless services are also reached through per-pod names.
    if svc.resolution == Resolution::Passthrough && svc.registry == Registry::Kubernetes {
        let wildcards: Vec<String> = out.iter().map(|d| format!("*.{d}")).collect();
        out.extend(wildcards);
    }
    if let Some(vip) = svc.address.as_deref().filter(|a| *a != "0.0.0.0") {
        let vip = if vip.contains(':') {
            format!("[{vip}]")
        } else {
            vip.to_owned()
        };
        push_with_port(&mut out, &vip, port);
    }
    out
}

fn push_with_port(out: &mut Vec<String>, host: &str, port: u16) {
    out.push(host.to_owned());
    if port != PORT_NO_SUFFIX {
        out.push(format!("{host}:{port}"));
    }
}

/// Short names of a Kubernetes service host (`name.ns.svc.<suffix>`) as seen from a proxy
/// whose DNS domain is `<proxy-ns>.svc.<suffix>`: `name` (same namespace only),
/// `name.ns.svc` and `name.ns`. Hosts outside the proxy's cluster suffix get none.
fn alt_hosts(host: &str, proxy_dns_domain: &str) -> Vec<String> {
    let Some(id) = proxy_dns_domain.find(".svc.") else {
        return Vec::new();
    };
    let (proxy_ns, suffix) = (&proxy_dns_domain[..id], &proxy_dns_domain[id..]);
    let Some(prefix) = host.strip_suffix(suffix) else {
        return Vec::new();
    };
    let Some((name, ns)) = prefix.split_once('.') else {
        return Vec::new();
    };
    if name.is_empty() || ns.is_empty() || ns.contains('.') {
        return Vec::new();
    }
    let mut out = Vec::new();
    if ns == proxy_ns {
        out.push(name.to_owned());
    }
    out.push(format!("{name}.{ns}.svc"));
    out.push(format!("{name}.{ns}"));
    out
}

/// Consistent hashing needs the route to say what to hash: taken from the policy of the
/// route's single destination cluster.
pub fn add_hash_policy(push: &PushContext, proxy_ns: &str, route: &mut Route) {
    let Some(Action::Route(action)) = &mut route.action else {
        return;
    };
    let Some(ClusterSpecifier::Cluster(cluster)) = &action.cluster_specifier else {
        return;
    };
    let Some(key) = parse_cluster_name(cluster) else {
        return;
    };
    let Some(dr) = push.destination_rule(proxy_ns, key.host) else {
        return;
    };
    let subset = dr.spec.subsets.iter().find(|s| s.name == key.subset);
    let policy = merge_traffic_policy(
        dr.spec.traffic_policy.as_ref(),
        subset.and_then(|s| s.traffic_policy.as_ref()),
        key.port,
    );
    if let Some(h) = hash_policy(policy.load_balancer.as_ref()) {
        action.hash_policy = vec![h];
    }
}

/// The last virtual host: unknown hosts pass through, or get a 502 when REGISTRY_ONLY.
fn catch_all(registry_only: bool) -> VirtualHost {
    let prefix = Some(RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    });
    let (name, action) = if registry_only {
        (
            BLOCK_ALL_VHOST,
            Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        )
    } else {
        (
            ALLOW_ANY_VHOST,
            Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH_CLUSTER.into())),
                timeout: Some(duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        )
    };
    VirtualHost {
        name: name.to_owned(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.to_owned(),
            r#match: prefix,
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// The RDS names the listeners' HTTP connection managers refer to.
pub fn referenced_route_names(listeners: &[Resource]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for r in listeners {
        let Ok(l) = Listener::decode(r.body.value.as_slice()) else {
            continue;
        };
        let api = l.api_listener.and_then(|a| a.api_listener).into_iter();
        let chains = l
            .filter_chains
            .into_iter()
            .flat_map(|c| c.filters)
            .filter_map(|f| match f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            });
        for any in api.chain(chains) {
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests;
