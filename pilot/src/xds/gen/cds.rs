//! CDS for Envoy sidecars: outbound clusters per service port (and subset), inbound
//! clusters for the proxy's own service ports, and the special passthrough clusters.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
        LbPolicy,
    },
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    socket_address::PortSpecifier, BindConfig, SocketAddress,
};

use super::eds::{load_assignment, subset_labels};
use super::filters::{ads_config_source, any};
use super::naming::{
    cluster_name, inbound_cluster_name, Direction, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
};
use super::route::duration;
use super::{GenContext, Resource};
use crate::model::service::{Port, Protocol, Resolution, Service};
use crate::model::PushContext;
use policy::{
    apply_policy, merge_traffic_policy, passthrough_protocol_options, PolicyDirection,
    HTTP_PROTOCOL_OPTIONS,
};
use tls::istio_mtls_sni;

/// Source address of connections to the local application, so that iptables does not
/// capture them again.
pub const INBOUND_PASSTHROUGH_BIND: &str = "127.0.0.6";

/// How often the proxy re-resolves DNS clusters (MeshConfig `dnsRefreshRate` default).
const DNS_REFRESH_RATE: StdDuration = StdDuration::from_secs(60);

/// Every cluster the sidecar needs: [`outbound`] then [`inbound`].
pub fn clusters(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out = outbound(ctx);
    out.extend(inbound(ctx));
    out
}

/// The clusters every proxy with the same view of the mesh shares: per service port (and
/// subset) in scope, and the blackhole and passthrough clusters.
pub fn outbound(ctx: &GenContext<'_>) -> Vec<Resource> {
    let mut out = Vec::new();
    for svc in &ctx.scope.services {
        out.extend(outbound_clusters(ctx, svc, ClusterMode::Outbound));
    }
    let timeout = Some(duration(ctx.push.mesh.connect_timeout()));
    out.push(blackhole_cluster(timeout));
    if ctx.proxy.is_router() {
        // A gateway has no original-destination listeners to pass traffic through.
        return out;
    }
    out.push(Resource::new(
        PASSTHROUGH_CLUSTER,
        &passthrough_cluster(PASSTHROUGH_CLUSTER, timeout),
    ));
    let mut inbound = passthrough_cluster(INBOUND_PASSTHROUGH_CLUSTER, timeout);
    inbound.upstream_bind_config = Some(bind_config(INBOUND_PASSTHROUGH_BIND));
    out.push(Resource::new(INBOUND_PASSTHROUGH_CLUSTER, &inbound));
    out
}

/// A gateway's `sni-dnat` clusters (`outbound_.<port>_.<subset>_.<host>`), which its
/// `AUTO_PASSTHROUGH` servers route to by the SNI a client in another network sent: one per
/// port and subset of every service in the mesh, without TLS (the client's mTLS passes
/// through).
pub fn sni_dnat(ctx: &GenContext<'_>) -> Vec<Resource> {
    ctx.scope
        .services
        .iter()
        .filter(|s| !s.mesh_external)
        .flat_map(|svc| outbound_clusters(ctx, svc, ClusterMode::SniDnat))
        .collect()
}

fn blackhole_cluster(timeout: Option<envoy_types::pb::google::protobuf::Duration>) -> Resource {
    Resource::new(
        BLACKHOLE_CLUSTER,
        &Cluster {
            name: BLACKHOLE_CLUSTER.to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: timeout,
            lb_policy: LbPolicy::RoundRobin as i32,
            ..Default::default()
        },
    )
}

/// How a service's clusters are named and secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterMode {
    /// `outbound|port|subset|host`, with the DestinationRule's (or auto) TLS.
    Outbound,
    /// `outbound_.port_.subset_.host`, plaintext to the endpoint (upstream's `sni-dnat`).
    SniDnat,
}

fn passthrough_cluster(
    name: &str,
    timeout: Option<envoy_types::pb::google::protobuf::Duration>,
) -> Cluster {
    Cluster {
        name: name.to_owned(),
        // Upstream's stat prefix delimiter keeps the name parseable in metrics.
        alt_stat_name: format!("{name};"),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: timeout,
        lb_policy: LbPolicy::ClusterProvided as i32,
        typed_extension_protocol_options: [(
            HTTP_PROTOCOL_OPTIONS.to_owned(),
            any(&passthrough_protocol_options()),
        )]
        .into(),
        ..Default::default()
    }
}

fn bind_config(address: &str) -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The clusters of one service: per port, the default cluster then one per subset of the
/// DestinationRule the proxy sees.
fn outbound_clusters(ctx: &GenContext<'_>, svc: &Service, mode: ClusterMode) -> Vec<Resource> {
    let dr = ctx
        .push
        .destination_rule(&ctx.proxy.config_namespace, &svc.hostname);
    let top = dr.and_then(|dr| dr.spec.traffic_policy.as_ref());
    let subsets = dr.map(|dr| dr.spec.subsets.as_slice()).unwrap_or_default();
    let mut out = Vec::new();
    for port in &svc.ports {
        if mode == ClusterMode::SniDnat && port.protocol == Protocol::Udp {
            continue;
        }
        let subset_names = std::iter::once(None).chain(subsets.iter().map(Some));
        for subset in subset_names {
            let subset_name = subset.map_or("", |s| s.name.as_str());
            let name = match mode {
                ClusterMode::Outbound => {
                    cluster_name(Direction::Outbound, port.port, subset_name, &svc.hostname)
                }
                ClusterMode::SniDnat => istio_mtls_sni(port.port, subset_name, &svc.hostname),
            };
            let mut cluster = base_cluster(ctx, svc, port, &name, subset_name);
            let policy = merge_traffic_policy(
                top,
                subset.and_then(|s| s.traffic_policy.as_ref()),
                port.port,
            );
            apply_policy(
                &mut cluster,
                &policy,
                port.protocol.is_http2(),
                PolicyDirection::Outbound,
            );
            let passthrough_lb = policy
                .load_balancer
                .as_ref()
                .and_then(|lb| lb.simple.as_deref())
                == Some("PASSTHROUGH");
            if mode == ClusterMode::SniDnat {
                out.push(Resource::new(name, &cluster));
                continue;
            }
            tls::apply(
                &mut cluster,
                &tls::UpstreamTls {
                    push: ctx.push,
                    svc,
                    port: port.port,
                    subset: subset_name,
                    http2: port.protocol.is_http2(),
                    tls: policy.tls.as_ref(),
                    passthrough_lb,
                    rule_has_selector: dr
                        .and_then(|d| d.spec.workload_selector.as_ref())
                        .is_some_and(|s| !s.labels.is_empty()),
                },
            );
            out.push(Resource::new(name, &cluster));
        }
    }
    out
}

/// A cluster with its discovery type chosen by the service's resolution.
fn base_cluster(
    ctx: &GenContext<'_>,
    svc: &Service,
    port: &Port,
    name: &str,
    subset: &str,
) -> Cluster {
    let mut cluster = Cluster {
        name: name.to_owned(),
        connect_timeout: Some(duration(ctx.push.mesh.connect_timeout())),
        common_lb_config: Some(CommonLbConfig::default()),
        ..Default::default()
    };
    let kind = match svc.resolution {
        Resolution::ClientSideLb => {
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: name.to_owned(),
            });
            DiscoveryType::Eds
        }
        Resolution::DnsLb | Resolution::DnsRoundRobin => {
            let labels =
                subset_labels(ctx.push, &ctx.proxy.config_namespace, &svc.hostname, subset);
            let mut cla =
                load_assignment(ctx.push, name, &svc.hostname, port.port, labels.as_ref());
            let kind = if svc.resolution == Resolution::DnsLb {
                DiscoveryType::StrictDns
            } else {
                // Envoy accepts exactly one endpoint in a LOGICAL_DNS cluster.
                cla.endpoints.truncate(1);
                if let Some(l) = cla.endpoints.first_mut() {
                    l.lb_endpoints.truncate(1);
                }
                DiscoveryType::LogicalDns
            };
            cluster.load_assignment = Some(cla);
            set_dns_options(&mut cluster, &ctx.proxy.ip_addresses);
            kind
        }
        // A gateway cannot pass traffic to the original destination: it load-balances
        // over the endpoints (upstream's `convertResolution`).
        Resolution::Passthrough if ctx.proxy.is_router() => {
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: name.to_owned(),
            });
            DiscoveryType::Eds
        }
        Resolution::Passthrough => DiscoveryType::OriginalDst,
    };
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
    cluster
}

// Upstream still configures DNS on the cluster itself rather than through the newer DNS
// cluster extension, and every supported Envoy accepts these fields.
#[allow(deprecated)]
fn set_dns_options(cluster: &mut Cluster, proxy_ips: &[String]) {
    cluster.dns_lookup_family = dns_lookup_family(proxy_ips) as i32;
    cluster.dns_refresh_rate = Some(duration(DNS_REFRESH_RATE));
    cluster.respect_dns_ttl = true;
}

/// IPv4-only proxies ask for A records only, IPv6-only for AAAA; dual-stack for both.
fn dns_lookup_family(ips: &[String]) -> DnsLookupFamily {
    let parsed: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    if parsed.iter().all(IpAddr::is_ipv4) {
        DnsLookupFamily::V4Only
    } else if parsed.iter().all(IpAddr::is_ipv6) {
        DnsLookupFamily::V6Only
    } else {
        DnsLookupFamily::All
    }
}

/// One inbound port of the proxy: the endpoint (target) port and the service port's
/// protocol, with the service that declared it first.
#[derive(Debug, Clone)]
pub struct InboundPort<'a> {
    pub target_port: u16,
    pub service_port: u16,
    pub protocol: Protocol,
    pub service: &'a Service,
}

/// The ports the proxy serves: every endpoint of every service whose address is one of
/// the proxy's IPs, one entry per target port (the first service in host order wins, as
/// upstream keeps one cluster per port).
pub fn inbound_ports<'a>(push: &'a PushContext, ips: &[String]) -> Vec<InboundPort<'a>> {
    let mut by_port: BTreeMap<u16, InboundPort<'a>> = BTreeMap::new();
    for svc in &push.services {
        for e in push.endpoints(&svc.hostname) {
            if !ips.contains(&e.address) {
                continue;
            }
            let Some(port) = svc.port(e.service_port) else {
                continue;
            };
            by_port.entry(e.port).or_insert(InboundPort {
                target_port: e.port,
                service_port: port.port,
                protocol: port.protocol,
                service: svc.as_ref(),
            });
        }
    }
    by_port.into_values().collect()
}

/// The proxy's own clusters: `inbound|<port>||` per served port, original-destination
/// clusters bound to 127.0.0.6, carrying the connection pool of the service's
/// DestinationRule.
pub fn inbound(ctx: &GenContext<'_>) -> Vec<Resource> {
    inbound_ports(ctx.push, &ctx.proxy.ip_addresses)
        .into_iter()
        .map(|p| {
            let name = inbound_cluster_name(p.target_port);
            let mut cluster = Cluster {
                name: name.clone(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32,
                )),
                connect_timeout: Some(duration(ctx.push.mesh.connect_timeout())),
                lb_policy: LbPolicy::ClusterProvided as i32,
                common_lb_config: Some(CommonLbConfig::default()),
                upstream_bind_config: Some(bind_config(INBOUND_PASSTHROUGH_BIND)),
                ..Default::default()
            };
            // Circuit breakers set for clients also size the server side, as upstream does.
            let top = ctx
                .push
                .destination_rule(&ctx.proxy.config_namespace, &p.service.hostname)
                .and_then(|dr| dr.spec.traffic_policy.as_ref());
            let policy = merge_traffic_policy(top, None, p.service_port);
            apply_policy(
                &mut cluster,
                &policy,
                p.protocol.is_http2(),
                PolicyDirection::Inbound,
            );
            Resource::new(name, &cluster)
        })
        .collect()
}

pub mod policy;
pub mod tls;

#[cfg(test)]
mod tests;
