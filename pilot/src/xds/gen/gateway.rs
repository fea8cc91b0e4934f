//! Config for gateway proxies (`router` nodes), served from the Istio `Gateway` resources
//! that select them (`model::gateway`), as upstream's `buildGatewayListeners`.
//!
//! LDS: one listener `<bind>_<port>` per listening port. Plaintext HTTP ports have one
//! chain whose connection manager fetches route config `http.<port>`; every other port
//! has a chain per server: HTTPS servers terminate TLS (SNI match on the server's hosts)
//! and fetch `https.<port>.<portName>.<gateway>.<namespace>`; TCP and TLS servers proxy to
//! the destination of the first bound `tcp` rule; `PASSTHROUGH` servers get a chain per
//! SNI match of the bound `tls` rules; `AUTO_PASSTHROUGH` servers a chain per `sni-dnat`
//! cluster. RDS: `routes.rs`. CDS: the outbound clusters (`cds::outbound`) and, for
//! `AUTO_PASSTHROUGH`, the `sni-dnat` clusters (`cds::sni_dnat`). EDS as for sidecars.

pub mod routes;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
    HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::google::protobuf::BoolValue;

use super::cds::tls::istio_mtls_sni;
use super::eds::socket_address;
use super::filters::{
    any, network_filter, rds_connection_manager, sidecar_http_filters, HCM_FILTER, TCP_PROXY_FILTER,
};
use super::lds::route_tcp_proxy;
use super::route::duration;
use super::{types, GenContext, Part, Resource, Subscription};
use crate::config::istio::{L4MatchAttributes, TlsMatchAttributes};
use crate::model::gateway::{MergedServer, TlsMode};
use crate::model::push_context::host_matches;
use crate::model::service::Protocol;
use crate::security::tls::gateway::gateway_server_tls;
use crate::security::tls::tls_socket;

const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// The ALPNs of mesh mTLS a client in another network sends through an
/// `AUTO_PASSTHROUGH` server.
pub const ALL_ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// Upstream's `PILOT_GATEWAY_TRANSPORT_SOCKET_CONNECT_TIMEOUT` default: a TLS handshake
/// that takes longer is dropped.
const TRANSPORT_SOCKET_CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(15);
/// `ROUTER_MODE` of a gateway that routes by SNI to `sni-dnat` clusters.
pub const SNI_DNAT: &str = "sni-dnat";

/// The parts of a router's resources: clusters are its view of the mesh (shared with
/// routers of the same namespace) plus its own `sni-dnat` clusters; listeners and routes
/// come from the Gateways selecting its labels, so they are its own; endpoints are shared.
pub fn parts(type_url: &str) -> &'static [Part] {
    match type_url {
        types::CLUSTER => &[Part::Shared, Part::Own],
        types::LISTENER | types::ROUTE => &[Part::Own],
        _ => &[Part::Shared],
    }
}

/// Generates one part of a router's resources of `type_url`; `None` if no generator serves
/// the type.
pub fn generate_part(
    type_url: &str,
    part: Part,
    ctx: &GenContext<'_>,
    sub: &Subscription,
) -> Option<Vec<Resource>> {
    Some(match (type_url, part) {
        (types::CLUSTER, Part::Shared) => super::cds::outbound(ctx),
        (types::CLUSTER, Part::Own) => clusters(ctx),
        (types::LISTENER, Part::Own) => listeners(ctx),
        (types::ROUTE, Part::Own) => routes::route_configs(ctx, sub),
        (types::ENDPOINT, Part::Shared) => super::eds::load_assignments(ctx, sub),
        (types::LISTENER | types::ROUTE, Part::Shared) | (types::ENDPOINT, Part::Own) => Vec::new(),
        _ => return None,
    })
}

/// The router's own clusters: the `sni-dnat` ones when it serves `AUTO_PASSTHROUGH` or
/// runs with `ROUTER_MODE=sni-dnat`.
pub fn clusters(ctx: &GenContext<'_>) -> Vec<Resource> {
    let auto_passthrough = ctx
        .push
        .merged_gateway(ctx.proxy)
        .is_some_and(|m| m.auto_passthrough);
    if auto_passthrough || ctx.proxy.router_mode == SNI_DNAT {
        super::cds::sni_dnat(ctx)
    } else {
        Vec::new()
    }
}

/// One filter chain before it becomes Envoy's.
#[derive(Debug, Default)]
struct Chain {
    sni_hosts: Vec<String>,
    application_protocols: Vec<String>,
    tls: Option<DownstreamTlsContext>,
    filters: Vec<Filter>,
}

/// Every listener of the router, by name.
pub fn listeners(ctx: &GenContext<'_>) -> Vec<Resource> {
    let Some(merged) = ctx.push.merged_gateway(ctx.proxy) else {
        tracing::debug!(proxy = %ctx.proxy.id, "no Gateway selects this router");
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, (String, u32, Vec<Chain>)> = BTreeMap::new();
    // SNI hosts already routed on a port by PASSTHROUGH rules, with their bind.
    let mut tls_hosts: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for port in &merged.server_ports {
        let bind = if port.bind.is_empty() {
            "0.0.0.0"
        } else {
            port.bind.as_str()
        };
        let name = format!("{bind}_{}", port.number);
        let chains = if Protocol::parse(&port.protocol).is_http() {
            let route = merged
                .merged_servers
                .get(port)
                .map(|m| m.route_name.clone())
                .unwrap_or_default();
            vec![Chain {
                filters: vec![http_filter(&default_stat_prefix(&name), &route)],
                ..Default::default()
            }]
        } else {
            merged
                .servers_of(port)
                .flat_map(|s| server_chains(ctx, s, &name, &mut tls_hosts))
                .collect()
        };
        by_name
            .entry(name)
            .or_insert_with(|| (bind.to_owned(), port.number, Vec::new()))
            .2
            .extend(chains);
    }
    by_name
        .into_iter()
        .filter_map(|(name, (bind, port, chains))| {
            if chains.is_empty() {
                tracing::info!(listener = %name, "gateway listener left out: no filter chains");
                return None;
            }
            let listener = listener(name, &bind, port, chains);
            Some(Resource::new(listener.name.clone(), &listener))
        })
        .collect()
}

/// `outbound_<listener>;`, upstream's stat prefix for connection managers of servers
/// without a name.
fn default_stat_prefix(listener: &str) -> String {
    format!("outbound_{listener};")
}

/// The chains of one server on a port that is not plaintext HTTP.
fn server_chains(
    ctx: &GenContext<'_>,
    s: &MergedServer,
    listener: &str,
    tls_hosts: &mut BTreeMap<u32, BTreeMap<String, String>>,
) -> Vec<Chain> {
    let mesh_defaults = ctx.push.mesh.tls_defaults.as_ref();
    if s.is_https_terminated() {
        let stat_prefix = if s.server.name.is_empty() {
            default_stat_prefix(listener)
        } else {
            s.server.name.clone()
        };
        return vec![Chain {
            sni_hosts: s.sni_hosts.clone(),
            tls: s
                .server
                .tls
                .as_ref()
                .and_then(|t| gateway_server_tls(t, false, mesh_defaults)),
            filters: vec![http_filter(&stat_prefix, &s.route_name)],
            ..Default::default()
        }];
    }
    match s.tls_mode() {
        None => tcp_route_filter(ctx, s)
            .map(|f| Chain {
                filters: vec![f],
                ..Default::default()
            })
            .into_iter()
            .collect(),
        Some(TlsMode::AutoPassthrough) => auto_passthrough_chains(ctx, &s.sni_hosts),
        Some(TlsMode::Passthrough) => passthrough_chains(ctx, s, tls_hosts),
        Some(_) => tcp_route_filter(ctx, s)
            .map(|f| Chain {
                sni_hosts: s.sni_hosts.clone(),
                tls: s
                    .server
                    .tls
                    .as_ref()
                    .and_then(|t| gateway_server_tls(t, true, mesh_defaults)),
                filters: vec![f],
                ..Default::default()
            })
            .into_iter()
            .collect(),
    }
}

/// The connection manager of a gateway's HTTP chain: routes over RDS, the client's
/// address taken from the connection, client certificate details sanitized and set, as
/// upstream's `buildGatewayConnectionManager`.
fn http_filter(stat_prefix: &str, route: &str) -> Filter {
    let hcm = HttpConnectionManager {
        use_remote_address: Some(BoolValue { value: true }),
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            cert: true,
            dns: true,
            uri: true,
            ..Default::default()
        }),
        http_protocol_options: Some(Default::default()),
        ..rds_connection_manager(stat_prefix, route, sidecar_http_filters())
    };
    network_filter(HCM_FILTER, &hcm)
}

/// The TCP proxy of the first `tcp` rule of a VirtualService bound to the server's
/// Gateway whose hosts overlap the server's and whose match fits the server.
fn tcp_route_filter(ctx: &GenContext<'_>, s: &MergedServer) -> Option<Filter> {
    let port = server_port_number(s);
    for vs in ctx
        .push
        .virtual_services_for_gateway(&ctx.proxy.config_namespace, &s.gateway)
    {
        if !hosts_overlap(&s.server.hosts, &vs.namespace, &vs.spec.hosts) {
            continue;
        }
        for rule in &vs.spec.tcp {
            let fits = rule.matches.is_empty() || rule.matches.iter().any(|m| l4_match(m, s));
            if !fits || rule.route.is_empty() {
                continue;
            }
            let proxy = route_tcp_proxy(ctx.push, &rule.route, port, &vs.spec.hosts.join(","))?;
            return Some(network_filter(TCP_PROXY_FILTER, &proxy));
        }
    }
    tracing::warn!(gateway = %s.gateway, port, "gateway server has no TCP route");
    None
}

/// A chain per SNI match of the `tls` rules bound to a `PASSTHROUGH` server; an SNI host
/// already routed on the port is skipped, as upstream.
fn passthrough_chains(
    ctx: &GenContext<'_>,
    s: &MergedServer,
    tls_hosts: &mut BTreeMap<u32, BTreeMap<String, String>>,
) -> Vec<Chain> {
    let port = server_port_number(s);
    let mut out = Vec::new();
    for vs in ctx
        .push
        .virtual_services_for_gateway(&ctx.proxy.config_namespace, &s.gateway)
    {
        if !hosts_overlap(&s.server.hosts, &vs.namespace, &vs.spec.hosts) {
            continue;
        }
        for rule in vs.spec.tls.iter().filter(|r| !r.route.is_empty()) {
            for m in rule.matches.iter().filter(|m| tls_match(m, s)) {
                let known = tls_hosts.entry(s.port).or_default();
                if m.sni_hosts
                    .iter()
                    .any(|h| known.get(h).is_some_and(|b| *b == s.server.bind))
                {
                    tracing::warn!(virtual_service = %vs.name, gateway = %s.gateway, "TLS rule skipped: duplicate SNI hosts on its port");
                    continue;
                }
                for h in &m.sni_hosts {
                    known.insert(h.clone(), s.server.bind.clone());
                }
                let stat = vs.spec.hosts.join(",");
                if let Some(proxy) = route_tcp_proxy(ctx.push, &rule.route, port, &stat) {
                    out.push(Chain {
                        sni_hosts: m.sni_hosts.clone(),
                        filters: vec![network_filter(TCP_PROXY_FILTER, &proxy)],
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// A chain per `sni-dnat` cluster of the services the server's hosts cover: clients in
/// another network reach `outbound_.<port>_.<subset>_.<host>` by that SNI, over mTLS that
/// passes through.
fn auto_passthrough_chains(ctx: &GenContext<'_>, hosts: &[String]) -> Vec<Chain> {
    let mut out = Vec::new();
    for svc in ctx.scope.services.iter().filter(|s| !s.mesh_external) {
        if !hosts.iter().any(|h| host_matches(h, &svc.hostname)) {
            continue;
        }
        let dr = ctx
            .push
            .destination_rule(&ctx.proxy.config_namespace, &svc.hostname);
        let subsets = dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default();
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let names = std::iter::once("").chain(subsets.iter().map(|s| s.name.as_str()));
            for subset in names {
                let cluster = istio_mtls_sni(port.port, subset, &svc.hostname);
                let proxy = TcpProxy {
                    stat_prefix: cluster.clone(),
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.clone())),
                    ..Default::default()
                };
                out.push(Chain {
                    sni_hosts: vec![cluster],
                    application_protocols: ALL_ISTIO_MTLS_ALPNS.map(str::to_owned).to_vec(),
                    filters: vec![network_filter(TCP_PROXY_FILTER, &proxy)],
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// The Gateway's port number of a server (route matches and destinations use it, not
/// the translated listening port).
fn server_port_number(s: &MergedServer) -> u16 {
    let n = s.server.port.as_ref().map_or(s.port, |p| p.number);
    u16::try_from(n).unwrap_or_default()
}

fn l4_port_and_gateway(port: Option<u32>, gateways: &[String], s: &MergedServer) -> bool {
    let number = s.server.port.as_ref().map_or(s.port, |p| p.number);
    port.is_none_or(|p| p == 0 || p == number)
        && (gateways.is_empty() || gateways.contains(&s.gateway))
}

/// Upstream's `l4SingleMatch`: the match's port (if any) is the server's, its gateways
/// (if any) include the server's.
fn l4_match(m: &L4MatchAttributes, s: &MergedServer) -> bool {
    l4_port_and_gateway(m.port, &m.gateways, s)
}

fn tls_match(m: &TlsMatchAttributes, s: &MergedServer) -> bool {
    l4_port_and_gateway(m.port, &m.gateways, s)
}

/// Upstream's `pickMatchingGatewayHosts` is not empty: some server host (`ns/host` only
/// for VirtualServices of that namespace) overlaps some VirtualService host.
fn hosts_overlap(server_hosts: &[String], vs_namespace: &str, vs_hosts: &[String]) -> bool {
    server_hosts.iter().any(|gh| {
        let gh = match gh.split_once('/') {
            Some((ns, h)) if ns == vs_namespace => h,
            Some(_) => return false,
            None => gh.as_str(),
        };
        vs_hosts
            .iter()
            .any(|vh| host_matches(gh, vh) || host_matches(vh, gh))
    })
}

/// A gateway listener: bound to its port, the TLS inspector when a chain matches on SNI or
/// offers ALPN, each chain with its TLS context and upstream's handshake timeout.
fn listener(name: String, bind: &str, port: u32, chains: Vec<Chain>) -> Listener {
    let needs_inspector = chains.iter().any(|c| {
        !c.sni_hosts.is_empty()
            || c.tls.as_ref().is_some_and(|t| {
                t.common_tls_context
                    .as_ref()
                    .is_some_and(|c| !c.alpn_protocols.is_empty())
            })
    });
    let listener_filters = if needs_inspector {
        vec![ListenerFilter {
            name: TLS_INSPECTOR.into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    let filter_chains = chains
        .into_iter()
        .map(|c| FilterChain {
            filter_chain_match: chain_match(&c),
            transport_socket: c.tls.as_ref().map(tls_socket),
            transport_socket_connect_timeout: Some(duration(TRANSPORT_SOCKET_CONNECT_TIMEOUT)),
            filters: c.filters,
            ..Default::default()
        })
        .collect();
    Listener {
        name,
        address: Some(socket_address(
            bind,
            u16::try_from(port).unwrap_or_default(),
        )),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters,
        filter_chains,
        ..Default::default()
    }
}

/// Upstream's `toFilterChainMatch`: none for a chain that matches everything (no SNI or
/// `*`, no ALPN); otherwise the sorted SNI names (left out when one is `*`) and ALPNs.
fn chain_match(c: &Chain) -> Option<FilterChainMatch> {
    let wildcard = c.sni_hosts.iter().any(|h| h == "*");
    if (c.sni_hosts.is_empty() || wildcard) && c.application_protocols.is_empty() {
        return None;
    }
    let mut server_names = if wildcard {
        Vec::new()
    } else {
        c.sni_hosts.clone()
    };
    server_names.sort();
    Some(FilterChainMatch {
        server_names,
        application_protocols: c.application_protocols.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
