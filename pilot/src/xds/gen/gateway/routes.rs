//! RDS for gateway proxies, as upstream's `buildGatewayHTTPRouteConfig`: a route config per
//! HTTP server route name, with a virtual host per host that a server and a VirtualService
//! bound to its Gateway have in common.

use std::collections::{BTreeMap, HashMap, HashSet};

use envoy_types::pb::envoy::config::route::v3::{
    route_match::PathSpecifier, virtual_host::TlsRequirementType, Route, RouteConfiguration,
    VirtualHost,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::super::rds::{add_hash_policy, MAX_DIRECT_RESPONSE_BODY};
use super::super::route::{http_routes, RouteSource};
use super::super::{GenContext, Resource, Subscription};
use crate::model::gateway::{MergedGateway, MergedServer};
use crate::model::push_context::host_matches;

/// Route configs for the requested names. A name no server uses gets an empty config, as
/// upstream answers for a Gateway just deleted.
pub fn route_configs(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    let merged = ctx.push.merged_gateway(ctx.proxy);
    sub.names()
        .map(|name| Resource::new(name.clone(), &route_config(ctx, merged.as_ref(), name)))
        .collect()
}

/// The route config `name` of the router.
pub fn route_config(
    ctx: &GenContext<'_>,
    merged: Option<&MergedGateway>,
    name: &str,
) -> RouteConfiguration {
    let servers: Vec<&MergedServer> = merged
        .map(|m| m.servers_for_route(name).collect())
        .unwrap_or_default();
    let mut out = RouteConfiguration {
        name: name.to_owned(),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let Some(first) = servers.first() else {
        tracing::debug!(route = name, "no gateway server for route");
        return out;
    };
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    // Routes of a VirtualService, built once per Gateway that binds it.
    let mut built: HashMap<(String, String, String), Vec<Route>> = HashMap::new();
    for s in &servers {
        let port = gateway_port(s);
        let redirect = s.https_redirect();
        // The server's hosts as each namespace's VirtualServices see them.
        let mut seen_from: HashMap<&str, ServerHosts> = HashMap::new();
        for vs in ctx
            .push
            .virtual_services_for_gateway(&ctx.proxy.config_namespace, &s.gateway)
        {
            let hosts = seen_from
                .entry(vs.namespace.as_str())
                .or_insert_with(|| ServerHosts::new(&s.server.hosts, &vs.namespace))
                .intersect(&vs.spec.hosts);
            if hosts.is_empty() {
                continue;
            }
            let key = (s.gateway.clone(), vs.namespace.clone(), vs.name.clone());
            let routes = built.entry(key).or_insert_with(|| {
                let gateways = [s.gateway.as_str()];
                let source = RouteSource {
                    gateways: &gateways,
                    labels: &ctx.proxy.labels,
                    namespace: &ctx.proxy.config_namespace,
                };
                let mut routes = http_routes(ctx.push, &vs.spec.http, port, false, &source);
                for r in &mut routes {
                    add_hash_policy(ctx.push, &ctx.proxy.config_namespace, r);
                }
                routes
            });
            if routes.is_empty() {
                // Upstream omits a VirtualService with no route for this server.
                continue;
            }
            for host in hosts {
                let host = host.to_ascii_lowercase();
                let vh = vhosts
                    .entry(host.clone())
                    .or_insert_with(|| virtual_host(&host, port));
                vh.routes.extend(routes.iter().cloned());
                if redirect {
                    vh.require_tls = TlsRequirementType::All as i32;
                }
            }
        }
        if redirect {
            for host in &s.server.hosts {
                let host = host.to_ascii_lowercase();
                vhosts
                    .entry(host.clone())
                    .or_insert_with(|| virtual_host(&host, port))
                    .require_tls = TlsRequirementType::All as i32;
            }
        }
    }
    let mut virtual_hosts: Vec<VirtualHost> = vhosts.into_values().collect();
    if virtual_hosts.is_empty() {
        tracing::debug!(
            route = name,
            "route config without virtual hosts: a 404 for every host"
        );
        virtual_hosts.push(VirtualHost {
            name: format!("blackhole:{}", gateway_port(first)),
            domains: vec!["*".into()],
            ..Default::default()
        });
    }
    for vh in &mut virtual_hosts {
        // Catch-all routes last, so they do not hide the specific ones of other rules.
        let (catch_all, mut specific): (Vec<Route>, Vec<Route>) = std::mem::take(&mut vh.routes)
            .into_iter()
            .partition(is_catch_all);
        specific.extend(catch_all);
        vh.routes = specific;
    }
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    out.virtual_hosts = virtual_hosts;
    out.ignore_port_in_host_matching = true;
    out.max_direct_response_body_size_bytes = Some(UInt32Value {
        value: MAX_DIRECT_RESPONSE_BODY,
    });
    out
}

/// `<host>:<port>`.
fn virtual_host(host: &str, port: u16) -> VirtualHost {
    VirtualHost {
        name: format!("{host}:{port}"),
        domains: vec![host.to_owned()],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// The Gateway's port number of a server: VirtualService matches name it.
fn gateway_port(s: &MergedServer) -> u16 {
    let n = s.server.port.as_ref().map_or(s.port, |p| p.number);
    u16::try_from(n).unwrap_or_default()
}

/// A server's hosts as a VirtualService of one namespace sees them (upstream's
/// `NamesForNamespace`: `ns/host` only when `ns` is that namespace or `*`), split so that
/// exact names are found without a scan.
struct ServerHosts {
    exact: HashSet<String>,
    wildcards: Vec<String>,
}

impl ServerHosts {
    fn new(hosts: &[String], namespace: &str) -> Self {
        let mut out = ServerHosts {
            exact: HashSet::new(),
            wildcards: Vec::new(),
        };
        for h in hosts {
            let host = match h.split_once('/') {
                Some((ns, host)) if ns == namespace || ns == "*" => host,
                Some(_) => continue,
                None => h.as_str(),
            };
            if host.starts_with('*') {
                out.wildcards.push(host.to_owned());
            } else {
                out.exact.insert(host.to_owned());
            }
        }
        out
    }

    /// Upstream's `Names.Intersection`: for each overlapping pair of a server host and a
    /// VirtualService host, the narrower one.
    fn intersect(&self, vs_hosts: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |h: &String| {
            if !out.contains(h) {
                out.push(h.clone());
            }
        };
        for b in vs_hosts {
            if b.starts_with('*') {
                for a in self.exact.iter().filter(|a| host_matches(b, a)) {
                    add(a);
                }
            } else if self.exact.contains(b) {
                add(b);
            }
            for w in &self.wildcards {
                if host_matches(b, w) {
                    add(w);
                } else if host_matches(w, b) {
                    add(b);
                }
            }
        }
        out.sort();
        out
    }
}

/// Upstream's `IsCatchAllRoute`: prefix `/` or regex `.*`, no header or query match.
fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(re)) => re.regex == ".*",
        _ => false,
    };
    path && m.headers.is_empty() && m.query_parameters.is_empty() && m.dynamic_metadata.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_intersect_to_the_narrower_name_within_the_namespace() {
        let server: Vec<String> = [
            "*.example.com",
            "apps/a.internal",
            "other/b.internal",
            "*/c.internal",
        ]
        .map(String::from)
        .to_vec();
        let hosts = ServerHosts::new(&server, "apps");
        let vs = |h: &[&str]| hosts.intersect(&h.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(vs(&["x.example.com"]), ["x.example.com"]);
        assert_eq!(vs(&["*"]), ["*.example.com", "a.internal", "c.internal"]);
        assert_eq!(vs(&["b.internal", "a.internal"]), ["a.internal"]);
        assert_eq!(vs(&["*.internal"]), ["a.internal", "c.internal"]);
        assert!(vs(&["example.org"]).is_empty());
    }
}
