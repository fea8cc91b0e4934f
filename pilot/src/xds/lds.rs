//! LDS for Envoy sidecars: `virtualOutbound` (15001), `virtualInbound` (15006) and one
//! outbound listener per service port.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::google::protobuf::BoolValue;

use super::common::{
    network_filter, rds_connection_manager, router_filter, HCM_FILTER, TCP_PROXY_FILTER,
};
use super::eds::socket_address;
use super::generator::{GenContext, Resource};
use super::naming::{
    cluster_name, Direction, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER,
    VIRTUAL_INBOUND, VIRTUAL_OUTBOUND,
};

/// Every listener the sidecar needs.
pub fn listeners(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out = Vec::new();
    // Outbound: HTTP ports share a wildcard listener per port; TCP ports get one per VIP.
    let mut http_ports = BTreeMap::new();
    for svc in &ctx.scope.services {
        for port in &svc.ports {
            if port.protocol.is_http() {
                http_ports.insert(port.port, ());
            } else if let Some(vip) = &svc.address {
                let name = format!("{vip}_{}", port.port);
                let cluster = cluster_name(Direction::Outbound, port.port, "", &svc.hostname);
                out.push(Resource::new(
                    name.clone(),
                    &Listener {
                        name,
                        address: Some(socket_address(vip, port.port)),
                        bind_to_port: Some(BoolValue { value: false }),
                        filter_chains: vec![tcp_chain(&cluster)],
                        ..Default::default()
                    },
                ));
            }
        }
    }
    for port in http_ports.keys() {
        let name = format!("0.0.0.0_{port}");
        let hcm = rds_connection_manager(
            &format!("outbound_0.0.0.0_{port}"),
            &port.to_string(),
            vec![router_filter()],
        );
        out.push(Resource::new(
            name.clone(),
            &Listener {
                name,
                address: Some(socket_address("0.0.0.0", *port)),
                bind_to_port: Some(BoolValue { value: false }),
                filter_chains: vec![FilterChain {
                    filters: vec![network_filter(HCM_FILTER, &hcm)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ));
    }
    let catch_all = if ctx.scope.registry_only {
        BLACKHOLE_CLUSTER
    } else {
        PASSTHROUGH_CLUSTER
    };
    let cfg = &ctx.push.mesh.default_config;
    out.push(virtual_listener(
        VIRTUAL_OUTBOUND,
        cfg.proxy_listen_port,
        catch_all,
    ));
    out.push(virtual_listener(
        VIRTUAL_INBOUND,
        cfg.proxy_inbound_listen_port,
        INBOUND_PASSTHROUGH_CLUSTER,
    ));
    out
}

fn tcp_chain(cluster: &str) -> FilterChain {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    };
    FilterChain {
        filters: vec![network_filter(TCP_PROXY_FILTER, &proxy)],
        ..Default::default()
    }
}

fn virtual_listener(name: &str, port: u16, cluster: &str) -> Resource {
    Resource::new(
        name,
        &Listener {
            name: name.to_owned(),
            address: Some(socket_address("0.0.0.0", port)),
            use_original_dst: Some(BoolValue { value: true }),
            filter_chains: vec![tcp_chain(cluster)],
            ..Default::default()
        },
    )
}
