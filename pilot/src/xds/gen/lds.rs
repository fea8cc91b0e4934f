//! LDS for Envoy sidecars: `virtualOutbound` (15001), `virtualInbound` (15006) with a
//! chain per inbound port, and the outbound listeners per service port that
//! `virtualOutbound` hands connections to by original destination.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
    HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster},
    TcpProxy,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::cds::inbound_ports;
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
use crate::config::istio::{RouteDestination, TcpRoute, MESH_GATEWAY};
use crate::model::push_context::host_matches;
use crate::model::service::{labels_match, Registry, Resolution, Service};
use crate::model::Proxy;
use crate::model::PushContext;
use crate::security::authz;
use crate::security::peer_authn::MtlsMode;
use crate::security::tls::{inbound_mtls, tls_socket, InboundMtlsSettings, ListenerProtocol};
use ListenerProtocol::{Http as HTTP, Tcp as TCP};

pub const VIRTUAL_OUTBOUND_CATCHALL_TCP: &str = "virtualOutbound-catchall-tcp";
pub const VIRTUAL_OUTBOUND_BLACKHOLE: &str = "virtualOutbound-blackhole";
pub const VIRTUAL_INBOUND_BLACKHOLE: &str = "virtualInbound-blackhole";
pub const VIRTUAL_INBOUND_CATCHALL_HTTP: &str = "virtualInbound-catchall-http";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// ALPN values the HTTP inspector reports for plaintext HTTP.
const PLAINTEXT_HTTP_ALPNS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// Every listener the sidecar needs: [`outbound`] then [`inbound`].
pub fn listeners(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out = outbound(ctx);
    out.extend(inbound(ctx));
    out
}

/// The listeners every proxy with the same view of the mesh shares: one per outbound
/// service port and `virtualOutbound`.
pub fn outbound(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out: Vec<Resource> = outbound_listeners(ctx)
        .into_values()
        .map(|l| Resource::new(l.name.clone(), &l))
        .collect();
    out.push(Resource::new(VIRTUAL_OUTBOUND, &virtual_outbound(ctx)));
    out
}

/// The proxy's own listener: `virtualInbound`, with its served ports, mTLS modes and
/// policies.
pub fn inbound(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut inbound = virtual_inbound(ctx);
    crate::security::request_authn::add_to_inbound(ctx.push, ctx.proxy, &mut inbound);
    vec![Resource::new(VIRTUAL_INBOUND, &inbound)]
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
    let rule = ctx.scope.virtual_service_for(&svc.hostname).and_then(|vs| {
        vs.spec
            .tcp
            .iter()
            .find(|r| tcp_rule_matches(r, port, ctx.proxy))
    });
    rule.and_then(|r| route_tcp_proxy(ctx.push, &r.route, port, &svc.hostname))
        .unwrap_or_else(|| {
            let cluster = cluster_name(Direction::Outbound, port, "", &svc.hostname);
            TcpProxy {
                stat_prefix: cluster.clone(),
                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
                ..Default::default()
            }
        })
}

/// The TCP proxy for the destinations of a `tcp` or `tls` rule on `port`: one cluster, or
/// weighted clusters (stat prefix `stat_host`). `None` when the rule has no destination.
pub fn route_tcp_proxy(
    push: &PushContext,
    routes: &[RouteDestination],
    port: u16,
    stat_host: &str,
) -> Option<TcpProxy> {
    let single = routes.len() == 1;
    let mut weighted: Vec<(String, u32)> = routes
        .iter()
        .filter(|d| single || d.weight.unwrap_or(0) > 0)
        .map(|d| {
            (
                destination_cluster(push, &d.destination, port),
                d.weight.unwrap_or(0),
            )
        })
        .collect();
    let specifier = match weighted.len() {
        0 => return None,
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
        _ => stat_host.to_owned(),
    };
    Some(TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        ..Default::default()
    })
}

fn tcp_rule_matches(rule: &TcpRoute, port: u16, proxy: &Proxy) -> bool {
    rule.matches.is_empty()
        || rule.matches.iter().any(|m| {
            m.port.is_none_or(|p| p == u32::from(port))
                && labels_match(&m.source_labels, &proxy.labels)
                && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == MESH_GATEWAY))
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

/// How one inbound filter chain matches and whether it terminates mesh mTLS; the tables
/// below mirror upstream's filter chain match options per mTLS mode and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChainOption {
    protocol: ListenerProtocol,
    transport: &'static str,
    alpn: &'static [&'static str],
    mtls: bool,
}

const TLS: &str = "tls";
const RAW_BUFFER: &str = "raw_buffer";
/// ALPN values an Istio client sends with mTLS, for any protocol.
const ALL_ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const MTLS_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const MTLS_TCP_WITH_MXC_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];

const fn opt(
    protocol: ListenerProtocol,
    transport: &'static str,
    alpn: &'static [&'static str],
    mtls: bool,
) -> ChainOption {
    ChainOption {
        protocol,
        transport,
        alpn,
        mtls,
    }
}

/// The chains of a port with a known protocol (`Some`) or of the passthrough chains (`None`:
/// the protocol is detected), by the port's mTLS mode.
fn chain_options(mode: MtlsMode, protocol: Option<ListenerProtocol>) -> &'static [ChainOption] {
    const STRICT_HTTP: &[ChainOption] = &[opt(HTTP, TLS, &[], true)];
    const PERMISSIVE_HTTP: &[ChainOption] = &[
        opt(HTTP, TLS, &ALL_ISTIO_MTLS_ALPNS, true),
        opt(HTTP, RAW_BUFFER, &[], false),
    ];
    const PLAIN_HTTP: &[ChainOption] = &[opt(HTTP, RAW_BUFFER, &[], false)];
    const STRICT_TCP: &[ChainOption] = &[opt(TCP, TLS, &[], true)];
    const PERMISSIVE_TCP: &[ChainOption] = &[
        opt(TCP, TLS, &ALL_ISTIO_MTLS_ALPNS, true),
        // TLS that is not mesh mTLS: the application's own, passed through.
        opt(TCP, TLS, &[], false),
        opt(TCP, RAW_BUFFER, &[], false),
    ];
    const PLAIN_TCP: &[ChainOption] = &[opt(TCP, RAW_BUFFER, &[], false)];
    const STRICT_AUTO: &[ChainOption] = &[
        opt(HTTP, TLS, &MTLS_HTTP_ALPNS, true),
        opt(TCP, TLS, &[], true),
    ];
    const PERMISSIVE_AUTO: &[ChainOption] = &[
        opt(HTTP, TLS, &MTLS_HTTP_ALPNS, true),
        opt(HTTP, RAW_BUFFER, &PLAINTEXT_HTTP_ALPNS, false),
        opt(TCP, TLS, &MTLS_TCP_WITH_MXC_ALPNS, true),
        opt(TCP, RAW_BUFFER, &[], false),
        opt(TCP, TLS, &[], false),
    ];
    const PLAIN_AUTO: &[ChainOption] = &[
        opt(HTTP, RAW_BUFFER, &PLAINTEXT_HTTP_ALPNS, false),
        opt(TCP, RAW_BUFFER, &[], false),
    ];
    match (protocol, mode) {
        (Some(HTTP), MtlsMode::Strict) => STRICT_HTTP,
        (Some(HTTP), MtlsMode::Permissive) => PERMISSIVE_HTTP,
        (Some(HTTP), MtlsMode::Disable) => PLAIN_HTTP,
        (Some(TCP), MtlsMode::Strict) => STRICT_TCP,
        (Some(TCP), MtlsMode::Permissive) => PERMISSIVE_TCP,
        (Some(TCP), MtlsMode::Disable) => PLAIN_TCP,
        (None, MtlsMode::Strict) => STRICT_AUTO,
        (None, MtlsMode::Permissive) => PERMISSIVE_AUTO,
        (None, MtlsMode::Disable) => PLAIN_AUTO,
    }
}

/// What an inbound chain forwards to.
struct InboundTarget<'a> {
    /// Chain name (`0.0.0.0_<port>`, or the passthrough names).
    name: &'a str,
    /// Destination port to match; 0 for any.
    port: u16,
    cluster: &'a str,
    /// Route config name of HTTP chains (the cluster, or `inbound|<port>||`).
    stat_prefix: String,
    route_port: u16,
}

/// The capture listener for inbound traffic: a blackhole for the listen port, passthrough
/// chains for undeclared ports, and per served port the chains its mTLS mode calls for.
fn virtual_inbound(ctx: &GenContext<'_>) -> Listener {
    let port = ctx.push.mesh.default_config.proxy_inbound_listen_port;
    let served = inbound_ports(ctx.push, &ctx.proxy.ip_addresses);
    let mtls = ctx
        .push
        .peer_authn
        .inbound_mtls(&ctx.proxy.config_namespace, &ctx.proxy.labels);
    let tls = InboundMtlsSettings::from_mesh(&ctx.push.mesh, ctx.push.skip_validate_trust_domain);
    let mut chains = vec![FilterChain {
        name: VIRTUAL_INBOUND_BLACKHOLE.to_owned(),
        filter_chain_match: port_match(port),
        ..tcp_chain(&to_cluster(BLACKHOLE_CLUSTER))
    }];
    // Passthrough: the workload's mode on any port, then each port-level mode for ports no
    // service declares (a declared port gets its own chains below).
    let mut passthrough = vec![(0u16, mtls.mode)];
    passthrough.extend(
        mtls.ports
            .iter()
            .filter_map(|(p, m)| Some((u16::try_from(*p).ok()?, *m)))
            .filter(|(p, _)| *p != 0 && !served.iter().any(|s| s.target_port == *p)),
    );
    for (p, mode) in passthrough {
        for o in chain_options(mode, None) {
            let name = match o.protocol {
                HTTP => VIRTUAL_INBOUND_CATCHALL_HTTP,
                TCP => VIRTUAL_INBOUND,
            };
            let target = InboundTarget {
                name,
                port: p,
                cluster: INBOUND_PASSTHROUGH_CLUSTER,
                stat_prefix: INBOUND_PASSTHROUGH_CLUSTER.to_owned(),
                route_port: 0,
            };
            chains.push(inbound_chain(ctx, &target, o, &tls));
        }
    }
    for s in &served {
        let cluster = inbound_cluster_name(s.target_port);
        let name = format!("0.0.0.0_{}", s.target_port);
        let protocol = if s.protocol.is_http() { HTTP } else { TCP };
        let target = InboundTarget {
            name: &name,
            port: s.target_port,
            cluster: &cluster,
            stat_prefix: format!("inbound_{name}"),
            route_port: s.target_port,
        };
        for o in chain_options(mtls.for_port(s.target_port), Some(protocol)) {
            chains.push(inbound_chain(ctx, &target, o, &tls));
        }
    }
    let listener_filters = inspectors(&chains);
    Listener {
        name: VIRTUAL_INBOUND.to_owned(),
        address: Some(socket_address("0.0.0.0", port)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters,
        // Do not stall server-first protocols waiting for bytes to sniff.
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        ..Default::default()
    }
}

/// One inbound chain: an HTTP connection manager routing to `target.cluster` or a TCP proxy
/// to it, behind mesh mTLS when the option terminates it.
fn inbound_chain(
    ctx: &GenContext<'_>,
    target: &InboundTarget<'_>,
    o: &ChainOption,
    tls: &InboundMtlsSettings,
) -> FilterChain {
    let filters = match o.protocol {
        HTTP => {
            let mut hcm = inline_connection_manager(
                &target.stat_prefix,
                inbound_route_config(target.cluster, target.route_port),
                inbound_http_filters(ctx),
            );
            // The application sees who called: the peer's certificate details, appended.
            hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
            hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
                subject: Some(BoolValue { value: true }),
                uri: true,
                dns: true,
                ..Default::default()
            });
            vec![network_filter(HCM_FILTER, &hcm)]
        }
        TCP => inbound_tcp_filters(ctx, &to_cluster(target.cluster)),
    };
    FilterChain {
        name: target.name.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: (target.port != 0).then_some(UInt32Value {
                value: u32::from(target.port),
            }),
            transport_protocol: o.transport.to_owned(),
            application_protocols: o.alpn.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }),
        filters,
        transport_socket: o.mtls.then(|| tls_socket(&inbound_mtls(o.protocol, tls))),
        ..Default::default()
    }
}

/// The HTTP filters of an inbound connection manager, in upstream's order: CUSTOM
/// authorization (RBAC + ext_authz), authentication (upstream's place for it is here),
/// the AUDIT/DENY/ALLOW RBAC filters, then what routes configure and the router.
fn inbound_http_filters(ctx: &GenContext<'_>) -> Vec<HttpFilter> {
    let mut filters = authz::custom_http_filters(ctx.push, ctx.proxy);
    filters.extend(authz::local_http_filters(ctx.push, ctx.proxy));
    filters.extend(sidecar_http_filters());
    filters
}

/// The network filters of an inbound TCP chain: authorization, then the TCP proxy.
fn inbound_tcp_filters(ctx: &GenContext<'_>, proxy: &TcpProxy) -> Vec<Filter> {
    let mut filters = authz::network_filters(ctx.push, ctx.proxy);
    filters.push(network_filter(TCP_PROXY_FILTER, proxy));
    filters
}

/// The TLS and HTTP inspectors, enabled only on the ports whose chains need them, as
/// upstream derives them from the chains: TLS for chains matching `tls`, HTTP for chains
/// matching plaintext HTTP ALPNs. Port 0 stands for the passthrough chains (any port).
fn inspectors(chains: &[FilterChain]) -> Vec<ListenerFilter> {
    let mut by_port: BTreeMap<u32, (bool, bool)> = BTreeMap::new();
    for c in chains {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        let port = m.destination_port.map_or(0, |p| p.value);
        let needs_tls = m.transport_protocol == TLS;
        let needs_http = m
            .application_protocols
            .iter()
            .any(|a| a == "http/1.1" || a == "h2c");
        let e = by_port.entry(port).or_default();
        e.0 |= needs_tls;
        e.1 |= needs_http;
    }
    let mut out = Vec::new();
    if by_port.values().any(|(tls, _)| *tls) {
        let default_on = by_port.get(&0).is_some_and(|(tls, _)| *tls);
        // With TLS sniffed everywhere, disable it where no chain needs it; otherwise enable
        // it only where some chain does.
        let ports: Vec<u32> = by_port
            .iter()
            .filter(|(p, (tls, _))| **p != 0 && *tls != default_on)
            .map(|(p, _)| *p)
            .collect();
        let disabled = match (default_on, ports.is_empty()) {
            (_, true) => None,
            (true, false) => Some(port_predicate(&ports)),
            (false, false) => Some(ListenerFilterChainMatchPredicate {
                rule: Some(Rule::NotMatch(Box::new(port_predicate(&ports)))),
            }),
        };
        out.push(ListenerFilter {
            name: TLS_INSPECTOR.to_owned(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            filter_disabled: disabled,
        });
    }
    if by_port.values().any(|(_, http)| *http) {
        let ports: Vec<u32> = by_port
            .iter()
            .filter(|(_, (_, http))| !*http)
            .map(|(p, _)| *p)
            .collect();
        out.push(ListenerFilter {
            name: HTTP_INSPECTOR.to_owned(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &HttpInspector::default(),
            ))),
            filter_disabled: (!ports.is_empty()).then(|| port_predicate(&ports)),
        });
    }
    out
}

/// Matches connections to any of `ports`.
fn port_predicate(ports: &[u32]) -> ListenerFilterChainMatchPredicate {
    let mut rules: Vec<ListenerFilterChainMatchPredicate> = ports
        .iter()
        .map(|p| {
            let p = i32::try_from(*p).unwrap_or(i32::MAX - 1);
            ListenerFilterChainMatchPredicate {
                rule: Some(Rule::DestinationPortRange(Int32Range {
                    start: p,
                    end: p + 1,
                })),
            }
        })
        .collect();
    if rules.len() == 1 {
        return rules.remove(0);
    }
    ListenerFilterChainMatchPredicate {
        rule: Some(Rule::OrMatch(MatchSet { rules })),
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
