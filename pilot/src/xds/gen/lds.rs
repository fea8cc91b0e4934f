//! LDS for Envoy sidecars: `virtualOutbound` (15001), `virtualInbound` (15006) with a
//! chain per inbound port, and the outbound listeners per service port that
//! `virtualOutbound` hands connections to by original destination.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
    FilterChain, FilterChainMatch, Listener, ListenerFilter, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster},
    TcpProxy,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::cds::{inbound_ports, InboundPort};
use super::eds::socket_address;
use super::filters::{
    any, inline_connection_manager, network_filter, rds_connection_manager, sidecar_http_filters,
    HCM_FILTER, TCP_PROXY_FILTER,
};
use super::naming::{
    cluster_name, inbound_cluster_name, Direction, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER, VIRTUAL_INBOUND, VIRTUAL_OUTBOUND,
};
use super::route::{default_route, destination_cluster};
use super::{GenContext, Resource};
use crate::config::istio::TcpRoute;
use crate::model::push_context::host_matches;
use crate::model::service::{labels_match, Registry, Resolution, Service};
use crate::model::Proxy;
use crate::model::PushContext;

pub const VIRTUAL_OUTBOUND_CATCHALL_TCP: &str = "virtualOutbound-catchall-tcp";
pub const VIRTUAL_OUTBOUND_BLACKHOLE: &str = "virtualOutbound-blackhole";
pub const VIRTUAL_INBOUND_BLACKHOLE: &str = "virtualInbound-blackhole";
pub const VIRTUAL_INBOUND_CATCHALL_HTTP: &str = "virtualInbound-catchall-http";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
/// ALPN values the HTTP inspector reports for plaintext HTTP.
const PLAINTEXT_HTTP_ALPNS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// Every listener the sidecar needs.
pub fn listeners(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out: Vec<Resource> = outbound_listeners(ctx)
        .into_values()
        .map(|l| Resource::new(l.name.clone(), &l))
        .collect();
    out.push(Resource::new(VIRTUAL_OUTBOUND, &virtual_outbound(ctx)));
    out.push(Resource::new(VIRTUAL_INBOUND, &virtual_inbound(ctx)));
    out
}

/// Whether the proxy's `Sidecar` egress lets it reach `svc` on `port`: some egress
/// listener names the host and has no port or this port. Without a `Sidecar`, yes.
pub fn egress_allows(push: &PushContext, proxy: &Proxy, svc: &Service, port: u16) -> bool {
    let Some(sidecar) = push.sidecar_for(proxy) else {
        return true;
    };
    sidecar.spec.egress.iter().any(|e| {
        let port_ok = e
            .port
            .as_ref()
            .is_none_or(|p| p.number == 0 || p.number == u32::from(port));
        port_ok
            && e.hosts.iter().any(|h| {
                let Some((ns, host)) = h.split_once('/') else {
                    return false;
                };
                let ns = if ns == "." {
                    proxy.config_namespace.as_str()
                } else {
                    ns
                };
                (ns == "*" || ns == svc.namespace) && host_matches(host, &svc.hostname)
            })
    })
}

/// Outbound listeners by name. HTTP ports share a wildcard listener `0.0.0.0_<port>`;
/// TCP ports get one per VIP, per endpoint for headless Kubernetes services, else a
/// wildcard. On a name clash the first listener built wins, as upstream keeps the first.
fn outbound_listeners(ctx: &GenContext<'_>) -> BTreeMap<String, Listener> {
    let mut out = BTreeMap::new();
    let mut http_ports = BTreeSet::new();
    for svc in &ctx.scope.services {
        for port in &svc.ports {
            if port.protocol.is_http() && egress_allows(ctx.push, ctx.proxy, svc, port.port) {
                http_ports.insert(port.port);
            }
        }
    }
    for port in &http_ports {
        let name = format!("0.0.0.0_{port}");
        let hcm = rds_connection_manager(
            &format!("outbound_0.0.0.0_{port}"),
            &port.to_string(),
            sidecar_http_filters(),
        );
        out.insert(
            name.clone(),
            outbound_listener(
                name,
                "0.0.0.0",
                *port,
                FilterChain {
                    filters: vec![network_filter(HCM_FILTER, &hcm)],
                    ..Default::default()
                },
            ),
        );
    }
    for svc in &ctx.scope.services {
        for port in &svc.ports {
            if port.protocol.is_http() || !egress_allows(ctx.push, ctx.proxy, svc, port.port) {
                continue;
            }
            let chain = tcp_chain(&tcp_proxy(ctx, svc, port.port));
            for (bind, listen_port) in tcp_binds(ctx.push, svc, port.port) {
                let name = format!("{bind}_{listen_port}");
                if out.contains_key(&name) {
                    continue;
                }
                let listener = outbound_listener(name.clone(), &bind, listen_port, chain.clone());
                out.insert(name, listener);
            }
        }
    }
    out
}

/// Where a TCP service port listens: its VIP; each endpoint of a headless Kubernetes
/// service; otherwise every address.
fn tcp_binds(push: &PushContext, svc: &Service, port: u16) -> Vec<(String, u16)> {
    if let Some(vip) = &svc.address {
        return vec![(vip.clone(), port)];
    }
    if svc.resolution == Resolution::Passthrough && svc.registry == Registry::Kubernetes {
        return push
            .endpoints(&svc.hostname)
            .iter()
            .filter(|e| e.service_port == port)
            .map(|e| (e.address.clone(), e.port))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    vec![("0.0.0.0".to_owned(), port)]
}

fn outbound_listener(name: String, bind: &str, port: u16, chain: FilterChain) -> Listener {
    Listener {
        name,
        address: Some(socket_address(bind, port)),
        // Connections arrive through virtualOutbound, never on the port itself.
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![chain],
        ..Default::default()
    }
}

/// The TCP proxy for a service port: the first VirtualService `tcp` rule that matches the
/// port and the proxy's labels, else the service's own cluster.
fn tcp_proxy(ctx: &GenContext<'_>, svc: &Service, port: u16) -> TcpProxy {
    let default_cluster = cluster_name(Direction::Outbound, port, "", &svc.hostname);
    let rule = ctx.scope.virtual_service_for(&svc.hostname).and_then(|vs| {
        vs.spec
            .tcp
            .iter()
            .find(|r| tcp_rule_matches(r, port, ctx.proxy))
    });
    let mut weighted: Vec<(String, u32)> = rule
        .map(|r| {
            let single = r.route.len() == 1;
            r.route
                .iter()
                .filter(|d| single || d.weight.unwrap_or(0) > 0)
                .map(|d| {
                    (
                        destination_cluster(ctx.push, &d.destination, port),
                        d.weight.unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let specifier = match weighted.len() {
        0 => ClusterSpecifier::Cluster(default_cluster.clone()),
        1 => ClusterSpecifier::Cluster(weighted.remove(0).0),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: weighted
                .into_iter()
                .map(|(name, weight)| ClusterWeight {
                    name,
                    weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let stat_prefix = match &specifier {
        ClusterSpecifier::Cluster(c) => c.clone(),
        _ => svc.hostname.clone(),
    };
    TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        ..Default::default()
    }
}

fn tcp_rule_matches(rule: &TcpRoute, port: u16, proxy: &Proxy) -> bool {
    rule.matches.is_empty()
        || rule.matches.iter().any(|m| {
            m.port.is_none_or(|p| p == u32::from(port))
                && labels_match(&m.source_labels, &proxy.labels)
        })
}

fn tcp_chain(proxy: &TcpProxy) -> FilterChain {
    FilterChain {
        filters: vec![network_filter(TCP_PROXY_FILTER, proxy)],
        ..Default::default()
    }
}

fn to_cluster(cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: cluster.to_owned(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    }
}

fn port_match(port: u16) -> Option<FilterChainMatch> {
    Some(FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        ..Default::default()
    })
}

/// The capture listener for outbound traffic: connections to the listen port itself are
/// dropped (they would loop), the rest pass through unless the mesh is REGISTRY_ONLY.
fn virtual_outbound(ctx: &GenContext<'_>) -> Listener {
    let port = ctx.push.mesh.default_config.proxy_listen_port;
    let catch_all = if ctx.scope.registry_only {
        BLACKHOLE_CLUSTER
    } else {
        PASSTHROUGH_CLUSTER
    };
    Listener {
        name: VIRTUAL_OUTBOUND.to_owned(),
        address: Some(socket_address("0.0.0.0", port)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![
            FilterChain {
                name: VIRTUAL_OUTBOUND_BLACKHOLE.to_owned(),
                filter_chain_match: port_match(port),
                ..tcp_chain(&to_cluster(BLACKHOLE_CLUSTER))
            },
            FilterChain {
                name: VIRTUAL_OUTBOUND_CATCHALL_TCP.to_owned(),
                ..tcp_chain(&to_cluster(catch_all))
            },
        ],
        ..Default::default()
    }
}

/// The capture listener for inbound traffic: a blackhole for the listen port, a chain per
/// port the proxy serves, and passthrough chains (HTTP and TCP) for everything else.
fn virtual_inbound(ctx: &GenContext<'_>) -> Listener {
    let port = ctx.push.mesh.default_config.proxy_inbound_listen_port;
    let served = inbound_ports(ctx.push, &ctx.proxy.ip_addresses);
    let mut chains = vec![FilterChain {
        name: VIRTUAL_INBOUND_BLACKHOLE.to_owned(),
        filter_chain_match: port_match(port),
        ..tcp_chain(&to_cluster(BLACKHOLE_CLUSTER))
    }];
    chains.extend(served.iter().map(inbound_chain));
    chains.push(FilterChain {
        name: VIRTUAL_INBOUND_CATCHALL_HTTP.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            application_protocols: PLAINTEXT_HTTP_ALPNS.map(str::to_owned).to_vec(),
            ..Default::default()
        }),
        filters: vec![network_filter(
            HCM_FILTER,
            &inline_connection_manager(
                INBOUND_PASSTHROUGH_CLUSTER,
                inbound_route_config(INBOUND_PASSTHROUGH_CLUSTER, 0),
                sidecar_http_filters(),
            ),
        )],
        ..Default::default()
    });
    chains.push(FilterChain {
        name: VIRTUAL_INBOUND.to_owned(),
        ..tcp_chain(&to_cluster(INBOUND_PASSTHROUGH_CLUSTER))
    });
    Listener {
        name: VIRTUAL_INBOUND.to_owned(),
        address: Some(socket_address("0.0.0.0", port)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![http_inspector(&served)],
        // Do not stall server-first protocols waiting for bytes to sniff.
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        ..Default::default()
    }
}

/// The HTTP inspector feeds the catch-all HTTP chain; ports the proxy declares skip it,
/// since their protocol is known and server-first protocols would wait on it.
fn http_inspector(served: &[InboundPort<'_>]) -> ListenerFilter {
    let rules: Vec<ListenerFilterChainMatchPredicate> = served
        .iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: i32::from(p.target_port),
                end: i32::from(p.target_port) + 1,
            })),
        })
        .collect();
    ListenerFilter {
        name: HTTP_INSPECTOR.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &HttpInspector::default(),
        ))),
        filter_disabled: (!rules.is_empty()).then_some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }),
    }
}

/// The chain of one served port: HTTP ports get a connection manager routing everything
/// to `inbound|<port>||`, other ports a TCP proxy to it.
fn inbound_chain(p: &InboundPort<'_>) -> FilterChain {
    let cluster = inbound_cluster_name(p.target_port);
    let name = format!("0.0.0.0_{}", p.target_port);
    let filter = if p.protocol.is_http() {
        network_filter(
            HCM_FILTER,
            &inline_connection_manager(
                &format!("inbound_{name}"),
                inbound_route_config(&cluster, p.target_port),
                sidecar_http_filters(),
            ),
        )
    } else {
        network_filter(TCP_PROXY_FILTER, &to_cluster(&cluster))
    };
    FilterChain {
        name,
        filter_chain_match: port_match(p.target_port),
        filters: vec![filter],
        ..Default::default()
    }
}

/// The inline route config of an inbound HTTP chain: one `inbound|http|<port>` virtual
/// host sending everything to `cluster`, without retries (the client side retries).
pub fn inbound_route_config(cluster: &str, port: u16) -> RouteConfiguration {
    let mut route = default_route(cluster.to_owned(), true);
    route.name = "default".into();
    RouteConfiguration {
        name: cluster.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
