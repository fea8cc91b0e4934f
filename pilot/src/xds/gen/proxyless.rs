//! Config for proxyless gRPC clients and servers (node metadata `GENERATOR: grpc`).
//!
//! gRPC asks for exactly what it needs: a listener named after the dialed target
//! (`host:port`), whose API listener points at a route config named like the cluster
//! (`outbound|port||host`), then clusters and their endpoints.

mod inbound;
pub mod tls;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

use super::filters::{ads_config_source, any, fault_filter, rds_connection_manager, router_filter};
use super::naming::{cluster_name, parse_cluster_name, Direction};
use super::route::{default_route, duration, http_routes};
use super::{GenContext, Resource, Subscription};
use crate::model::{Port, Service};

/// Prefix of the listener a gRPC server asks for (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`).
pub const SERVER_LISTENER_PREFIX: &str = "xds.istio.io/grpc/lds/inbound/";

/// Every service port in the proxy's scope: what a wildcard request asks for.
fn ports_in_scope<'a>(ctx: &'a GenContext<'_>) -> impl Iterator<Item = (&'a Service, &'a Port)> {
    ctx.scope
        .services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (&**s, p)))
}

/// Listeners: one API listener per requested `host:port`, or per service port in scope for
/// a wildcard request; server listeners for the inbound names.
pub fn listeners(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    let requested: Vec<String> = match sub {
        Subscription::Wildcard => ports_in_scope(ctx)
            .map(|(s, p)| format!("{}:{}", s.hostname, p.port))
            .collect(),
        Subscription::Names(names) => names.iter().cloned().collect(),
    };
    requested
        .into_iter()
        .filter_map(|name| {
            if let Some(addr) = name.strip_prefix(SERVER_LISTENER_PREFIX) {
                return inbound::server_listener(ctx, &name, addr);
            }
            let (host, port) = name.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            let svc = find_service(ctx, host)?;
            svc.port(port)?;
            let route = cluster_name(Direction::Outbound, port, "", &svc.hostname);
            let hcm = rds_connection_manager(&name, &route, vec![fault_filter(), router_filter()]);
            Some(Resource::new(
                name.clone(),
                &Listener {
                    name,
                    api_listener: Some(ApiListener {
                        api_listener: Some(any(&hcm)),
                    }),
                    ..Default::default()
                },
            ))
        })
        .collect()
}

/// Route configs named `outbound|port||host`: the virtual service's HTTP routes if one
/// claims the host, else a single route to the service's cluster.
pub fn routes(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    let names: Vec<String> = match sub {
        Subscription::Wildcard => ports_in_scope(ctx)
            .map(|(s, p)| cluster_name(Direction::Outbound, p.port, "", &s.hostname))
            .collect(),
        Subscription::Names(n) => n.iter().cloned().collect(),
    };
    names
        .into_iter()
        .filter_map(|name| {
            let key = parse_cluster_name(&name)?;
            let svc = ctx.push.service(key.host)?;
            let routes = match ctx.scope.virtual_service_for(&svc.hostname) {
                Some(vs) => http_routes(
                    ctx.push,
                    &vs.spec.http,
                    key.port,
                    true,
                    &super::rds::mesh_source(ctx),
                ),
                None => vec![default_route(
                    cluster_name(Direction::Outbound, key.port, "", &svc.hostname),
                    true,
                )],
            };
            let rc = RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: format!("{}:{}", svc.hostname, key.port),
                    domains: vec![
                        format!("{}:{}", svc.hostname, key.port),
                        svc.hostname.clone(),
                        "*".into(),
                    ],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            };
            Some(Resource::new(name, &rc))
        })
        .collect()
}

/// EDS clusters for each requested name, or every service port and subset in scope.
pub fn clusters(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    let names: Vec<String> = match sub {
        Subscription::Wildcard => ctx
            .scope
            .services
            .iter()
            .flat_map(|s| {
                let subsets: Vec<String> = ctx
                    .push
                    .destination_rule(&ctx.proxy.config_namespace, &s.hostname)
                    .map(|dr| dr.spec.subsets.iter().map(|ss| ss.name.clone()).collect())
                    .unwrap_or_default();
                s.ports.iter().flat_map(move |p| {
                    std::iter::once(String::new())
                        .chain(subsets.clone())
                        .map(move |ss| cluster_name(Direction::Outbound, p.port, &ss, &s.hostname))
                })
            })
            .collect(),
        Subscription::Names(n) => n.iter().cloned().collect(),
    };
    names
        .into_iter()
        .filter_map(|name| {
            let key = parse_cluster_name(&name)?;
            let svc = ctx.push.service(key.host)?;
            svc.port(key.port)?;
            let tls = ctx
                .push
                .destination_rule(&ctx.proxy.config_namespace, &svc.hostname)
                .and_then(|dr| tls::cluster_tls(&dr.spec, key.subset, key.port));
            let cluster = Cluster {
                name: name.clone(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
                eds_cluster_config: Some(EdsClusterConfig {
                    eds_config: Some(ads_config_source()),
                    service_name: name.clone(),
                }),
                lb_policy: LbPolicy::RoundRobin as i32,
                connect_timeout: Some(duration(ctx.push.mesh.connect_timeout())),
                transport_socket: tls::client_transport_socket(ctx.push, svc, tls.as_ref()),
                ..Default::default()
            };
            Some(Resource::new(name, &cluster))
        })
        .collect()
}

/// The service a dialed host names: its FQDN, or a short form (`name.ns`, `name.ns.svc`).
fn find_service<'a>(ctx: &'a GenContext<'_>, host: &str) -> Option<&'a Service> {
    if let Some(s) = ctx.push.service(host) {
        return Some(s);
    }
    let candidates = [
        format!("{host}.svc.{}", ctx.push.domain),
        format!("{host}.{}", ctx.push.domain),
        format!(
            "{host}.{}.svc.{}",
            ctx.proxy.config_namespace, ctx.push.domain
        ),
    ];
    candidates
        .iter()
        .find_map(|c| ctx.push.service(c))
        .map(|s| s.as_ref())
}

#[cfg(test)]
mod tests;
