//! Server listeners of proxyless gRPC (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`): the
//! workload's PeerAuthentication mode picks the filter chain, AuthorizationPolicy adds
//! RBAC filters before the router.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_match::PathSpecifier, NonForwardingAction, Route, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, HttpFilter,
};

use super::tls::downstream_mtls;
use crate::security::peer_authn::MtlsMode;
use crate::xds::gen::cds::inbound_ports;
use crate::xds::gen::cds::tls::{TLS_MODE_ISTIO, TLS_MODE_LABEL};
use crate::xds::gen::eds::socket_address;
use crate::xds::gen::filters::{any, router_filter};
use crate::xds::gen::{GenContext, Resource};

/// The server listener for `addr` (`<ip>:<port>`, the IP possibly bracketed), or `None`
/// when the proxy serves no service on that port: as upstream, a listener is only built
/// for a service instance of the workload.
pub fn server_listener(ctx: &GenContext<'_>, name: &str, addr: &str) -> Option<Resource> {
    let Some((ip, port)) = split_host_port(addr) else {
        tracing::warn!(
            listener = name,
            "cannot parse the address of a gRPC server listener"
        );
        return None;
    };
    // The workload is the proxy itself; the listener's own IP counts when it is specific.
    let mut ips = ctx.proxy.ip_addresses.clone();
    if ip.parse::<IpAddr>().is_ok_and(|a| !a.is_unspecified()) && !ips.iter().any(|i| i == ip) {
        ips.push(ip.to_owned());
    }
    if !inbound_ports(ctx.push, &ips)
        .iter()
        .any(|p| p.target_port == port)
    {
        tracing::warn!(
            proxy = %ctx.proxy.id,
            listener = name,
            "no service instance of the proxy for the port of a gRPC server listener"
        );
        return None;
    }
    let mode = ctx
        .push
        .peer_authn
        .inbound_mtls(&ctx.proxy.config_namespace, &ctx.proxy.labels)
        .for_port(port);
    let chain = if serves_mtls(mode, &ctx.proxy.labels) {
        filter_chain("mtls", authz_filters(ctx), Some(downstream_mtls()))
    } else {
        filter_chain("plaintext", authz_filters(ctx), None)
    };
    Some(Resource::new(
        name,
        &Listener {
            name: name.to_owned(),
            address: Some(socket_address(ip, port)),
            filter_chains: vec![chain],
            ..Default::default()
        },
    ))
}

/// Whether the listener takes mTLS only. A gRPC server cannot offer both on one port (its
/// filter chain match tells TLS from plaintext by nothing but `raw_buffer`, gRFC A36), so
/// PERMISSIVE is served as upstream serves it: mTLS when the workload carries the auto
/// mTLS label (its clients will dial mTLS), plaintext otherwise.
pub fn serves_mtls(mode: MtlsMode, labels: &BTreeMap<String, String>) -> bool {
    match mode {
        MtlsMode::Strict => true,
        MtlsMode::Permissive => {
            labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO)
        }
        MtlsMode::Disable => false,
    }
}

/// The AuthorizationPolicy filters of the workload: the RBAC filters of its DENY and
/// ALLOW policies. CUSTOM policies (ext_authz) are left out, as upstream's gRPC generator
/// does: gRPC has no ext_authz filter and would refuse the whole listener.
fn authz_filters(ctx: &GenContext<'_>) -> Vec<HttpFilter> {
    crate::security::authz::local_http_filters(ctx.push, ctx.proxy)
}

/// One filter chain (`inbound-<suffix>`) handing every request to the application, with
/// `http_filters` before the router.
fn filter_chain(
    suffix: &str,
    http_filters: Vec<HttpFilter>,
    tls: Option<TransportSocket>,
) -> FilterChain {
    let hcm = HttpConnectionManager {
        stat_prefix: "inbound".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inbound".into(),
            virtual_hosts: vec![VirtualHost {
                name: "inbound".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(Action::NonForwardingAction(NonForwardingAction::default())),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: http_filters
            .into_iter()
            .chain(std::iter::once(router_filter()))
            .collect(),
        ..Default::default()
    };
    FilterChain {
        name: format!("inbound-{suffix}"),
        filters: vec![Filter {
            name: format!("inbound-hcm{suffix}"),
            config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
        }],
        transport_socket: tls,
        ..Default::default()
    }
}

/// `ip:port` or `[ip6]:port`.
fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (ip, port) = addr.rsplit_once(':')?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    Some((ip, port.parse().ok()?))
}
