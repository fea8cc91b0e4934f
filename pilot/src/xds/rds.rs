//! RDS for Envoy sidecars: one route config per outbound HTTP port (named by the port),
//! with a virtual host per service.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;

use super::generator::{GenContext, Resource, Subscription};
use super::naming::{cluster_name, Direction};
use super::route::{default_route, http_routes};

/// Route configs for the requested names (ports).
pub fn route_configs(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    sub.names()
        .filter_map(|name| {
            let port: u16 = name.parse().ok()?;
            let mut virtual_hosts = Vec::new();
            for svc in &ctx.scope.services {
                if !svc.port(port).is_some_and(|p| p.protocol.is_http()) {
                    continue;
                }
                let routes = match ctx.scope.virtual_service_for(&svc.hostname) {
                    Some(vs) => http_routes(ctx.push, &vs.spec.http, port, false),
                    None => vec![default_route(
                        cluster_name(Direction::Outbound, port, "", &svc.hostname),
                        false,
                    )],
                };
                let mut domains = vec![svc.hostname.clone(), format!("{}:{port}", svc.hostname)];
                if let Some(vip) = &svc.address {
                    domains.push(vip.clone());
                    domains.push(format!("{vip}:{port}"));
                }
                virtual_hosts.push(VirtualHost {
                    name: format!("{}:{port}", svc.hostname),
                    domains,
                    routes,
                    ..Default::default()
                });
            }
            Some(Resource::new(
                name.clone(),
                &RouteConfiguration {
                    name: name.clone(),
                    virtual_hosts,
                    validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                        value: false,
                    }),
                    ..Default::default()
                },
            ))
        })
        .collect()
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
            if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    names
}
