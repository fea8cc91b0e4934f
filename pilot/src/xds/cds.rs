//! CDS for Envoy sidecars: outbound clusters per service port (and subset), inbound
//! clusters for the proxy's own service ports, and the special passthrough clusters.

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};

use super::common::ads_config_source;
use super::generator::{GenContext, Resource};
use super::naming::{
    cluster_name, Direction, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER,
};
use super::route::duration;

/// Every cluster the sidecar needs.
pub fn clusters(ctx: &GenContext<'_>) -> Vec<Resource> {
    let timeout = Some(duration(ctx.push.mesh.connect_timeout()));
    let mut out = Vec::new();
    for svc in &ctx.scope.services {
        let subsets: Vec<String> = ctx
            .push
            .destination_rule(&ctx.proxy.config_namespace, &svc.hostname)
            .map(|dr| dr.spec.subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        for port in &svc.ports {
            for subset in std::iter::once(String::new()).chain(subsets.iter().cloned()) {
                let name = cluster_name(Direction::Outbound, port.port, &subset, &svc.hostname);
                let cluster = Cluster {
                    name: name.clone(),
                    cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                        DiscoveryType::Eds as i32,
                    )),
                    eds_cluster_config: Some(EdsClusterConfig {
                        eds_config: Some(ads_config_source()),
                        service_name: name.clone(),
                    }),
                    connect_timeout: timeout,
                    lb_policy: LbPolicy::LeastRequest as i32,
                    ..Default::default()
                };
                out.push(Resource::new(name, &cluster));
            }
        }
    }
    for (name, kind, lb) in [
        (
            BLACKHOLE_CLUSTER,
            DiscoveryType::Static,
            LbPolicy::RoundRobin,
        ),
        (
            PASSTHROUGH_CLUSTER,
            DiscoveryType::OriginalDst,
            LbPolicy::ClusterProvided,
        ),
        (
            INBOUND_PASSTHROUGH_CLUSTER,
            DiscoveryType::OriginalDst,
            LbPolicy::ClusterProvided,
        ),
    ] {
        let cluster = Cluster {
            name: name.to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
            connect_timeout: timeout,
            lb_policy: lb as i32,
            ..Default::default()
        };
        out.push(Resource::new(name, &cluster));
    }
    out
}
