//! EDS: `ClusterLoadAssignment`s for outbound clusters, grouped by locality.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, Locality, Metadata,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint,
    LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, UInt32Value, Value};

use super::cds::tls::{tls_mode, TLS_MODE_DISABLED, TLS_MODE_KEY, TRANSPORT_SOCKET_MATCH_KEY};
use super::naming::{parse_any_cluster_name, Direction};
use super::{GenContext, Resource, Subscription};
use crate::model::service::{labels_match, Endpoint, Health};
use crate::model::PushContext;

/// Load assignments for every subscribed outbound cluster name. EDS is never wildcard.
pub fn load_assignments(ctx: &GenContext<'_>, sub: &Subscription) -> Vec<Resource> {
    sub.names()
        .filter_map(|name| {
            let key = parse_any_cluster_name(name)?;
            if key.direction != Direction::Outbound {
                return None;
            }
            let subset_labels =
                subset_labels(ctx.push, &ctx.proxy.config_namespace, key.host, key.subset);
            let cla = load_assignment(ctx.push, name, key.host, key.port, subset_labels.as_ref());
            Some(Resource::new(name.clone(), &cla))
        })
        .collect()
}

/// The labels of subset `subset` of `host` in the DestinationRule the proxy sees. An unknown
/// subset selects nothing, as upstream does.
pub fn subset_labels(
    push: &PushContext,
    proxy_ns: &str,
    host: &str,
    subset: &str,
) -> Option<BTreeMap<String, String>> {
    if subset.is_empty() {
        return None;
    }
    let dr = push.destination_rule(proxy_ns, host);
    let found = dr.and_then(|dr| dr.spec.subsets.iter().find(|s| s.name == subset));
    Some(match found {
        Some(s) => s.labels.clone(),
        // A label no endpoint can carry: the cluster exists but has no endpoints.
        None => BTreeMap::from([("istio.io/unknown-subset".to_owned(), subset.to_owned())]),
    })
}

/// The healthy endpoints of `host:port` (optionally of a subset) as a load assignment.
pub fn load_assignment(
    push: &PushContext,
    cluster_name: &str,
    host: &str,
    port: u16,
    subset: Option<&BTreeMap<String, String>>,
) -> ClusterLoadAssignment {
    let selected = push.endpoints(host).iter().filter(|e| {
        e.service_port == port
            && e.health == Health::Healthy
            && subset.is_none_or(|s| labels_match(s, &e.labels))
    });
    cluster_load_assignment(cluster_name, selected)
}

/// Groups endpoints by locality. Locality weights are the sum of their endpoints' weights:
/// gRPC ignores a locality without a weight.
pub fn cluster_load_assignment<'a>(
    cluster_name: &str,
    endpoints: impl Iterator<Item = &'a Endpoint>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for e in endpoints {
        by_locality.entry(e.locality.as_str()).or_default().push(e);
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, eps)| LocalityLbEndpoints {
                locality: Some(parse_locality(locality)),
                load_balancing_weight: Some(UInt32Value {
                    value: eps.iter().map(|e| e.weight.max(1)).sum(),
                }),
                lb_endpoints: eps.into_iter().map(lb_endpoint).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn lb_endpoint(e: &Endpoint) -> LbEndpoint {
    // Auto mTLS: the cluster's `tlsMode-istio` transport socket applies to endpoints that
    // say they run a sidecar.
    let mode = tls_mode(&e.labels);
    let metadata = (mode != TLS_MODE_DISABLED).then(|| Metadata {
        filter_metadata: [(
            TRANSPORT_SOCKET_MATCH_KEY.to_owned(),
            Struct {
                fields: [(
                    TLS_MODE_KEY.to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(mode.to_owned())),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        ..Default::default()
    });
    LbEndpoint {
        metadata,
        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
        health_status: match e.health {
            Health::Healthy => HealthStatus::Healthy,
            Health::Unhealthy => HealthStatus::Unhealthy,
            Health::Draining => HealthStatus::Draining,
        } as i32,
        load_balancing_weight: Some(UInt32Value {
            value: e.weight.max(1),
        }),
    }
}

/// A TCP socket address.
pub fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn parse_locality(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    Locality {
        region: parts.next().unwrap_or_default().to_owned(),
        zone: parts.next().unwrap_or_default().to_owned(),
        sub_zone: parts.next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use kube_fake::objects;

    use super::*;
    use crate::testing::sidecar;
    use crate::xds::gen::testing::{echo_mesh, with_ctx};

    /// Echo with three endpoints in two zones, one not ready, and a v2 pod.
    fn mesh() -> String {
        let slice = objects::endpoint_slice("demo", "echo-1", "echo")
            .port(7070, "grpc")
            .endpoint("10.0.0.1")
            .zone("a")
            .endpoint("10.0.0.2")
            .zone("b")
            .endpoint("10.0.0.3")
            .zone("b")
            .ready(false);
        let pod = objects::pod("demo", "p2")
            .label("version", "v2")
            .container("c")
            .ip("10.0.0.2");
        echo_mesh(&[slice.build(), pod.build()])
    }

    fn addrs(cla: &ClusterLoadAssignment) -> Vec<String> {
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|e| match &e.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => match &ep.address.as_ref()?.address {
                    Some(address::Address::SocketAddress(s)) => Some(s.address.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn healthy_endpoints_by_locality_and_subset() {
        let all = "outbound|7070||echo.demo.svc.cluster.local";
        let v2 = "outbound|7070|v2|echo.demo.svc.cluster.local";
        let nope = "outbound|7070|v9|echo.demo.svc.cluster.local";
        let sub = Subscription::of([all, v2, nope]);
        let res = with_ctx(&mesh(), &sidecar("10.9.9.9", "demo"), |ctx| {
            load_assignments(ctx, &sub)
        });
        let decode = |name: &str| -> ClusterLoadAssignment {
            let r = res.iter().find(|r| r.name == name).unwrap();
            prost::Message::decode(r.body.value.as_slice()).unwrap()
        };
        let cla = decode(all);
        assert_eq!(addrs(&cla), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(cla.endpoints.len(), 2, "two localities");
        assert!(cla
            .endpoints
            .iter()
            .all(|l| l.load_balancing_weight.as_ref().unwrap().value > 0));
        assert_eq!(addrs(&decode(v2)), ["10.0.0.2"]);
        assert!(
            addrs(&decode(nope)).is_empty(),
            "unknown subset has no endpoints"
        );
    }

    #[test]
    fn sidecar_endpoints_carry_their_tls_mode_for_auto_mtls() {
        let slice = objects::endpoint_slice("demo", "echo-1", "echo")
            .port(7070, "grpc")
            .endpoint("10.0.0.1")
            .endpoint("10.0.0.2");
        let injected = objects::pod("demo", "echo-1")
            .label("security.istio.io/tlsMode", "istio")
            .container("c")
            .ip("10.0.0.1")
            .running();
        let yaml = echo_mesh(&[slice.build(), injected.build()]);
        let name = "outbound|7070||echo.demo.svc.cluster.local";
        let res = with_ctx(&yaml, &sidecar("10.9.9.9", "demo"), |ctx| {
            load_assignments(ctx, &Subscription::of([name]))
        });
        let cla: ClusterLoadAssignment =
            prost::Message::decode(res[0].body.value.as_slice()).unwrap();
        let modes: Vec<Option<String>> = cla
            .endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| {
                let m = e
                    .metadata
                    .as_ref()?
                    .filter_metadata
                    .get(TRANSPORT_SOCKET_MATCH_KEY)?;
                match m.fields.get(TLS_MODE_KEY)?.kind.as_ref()? {
                    Kind::StringValue(v) => Some(v.clone()),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(modes, [Some("istio".to_owned()), None]);
    }
}
