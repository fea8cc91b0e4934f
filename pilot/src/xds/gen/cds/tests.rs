use envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use prost::Message;

use super::*;
use crate::model::Proxy;
use crate::testing::sidecar;
use crate::xds::gen::testing::{self, named, with_ctx, MESH};

fn decoded(yaml: &str, proxy: &Proxy) -> Vec<Cluster> {
    testing::decoded(&with_ctx(yaml, proxy, clusters))
}

fn find<'a>(clusters: &'a [Cluster], name: &str) -> &'a Cluster {
    named(clusters, name, |c| &c.name)
}

fn kind(c: &Cluster) -> DiscoveryType {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).expect("known type"),
        _ => panic!("{} has no discovery type", c.name),
    }
}

fn http_options(c: &Cluster) -> Option<HttpProtocolOptions> {
    c.typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .map(|a| HttpProtocolOptions::decode(a.value.as_slice()).expect("options decode"))
}

#[test]
fn cluster_types_follow_resolution_and_policy() {
    let clusters = decoded(MESH, &sidecar("10.1.0.1", "default"));
    let cases = [
        (
            "outbound|9080||reviews.default.svc.cluster.local",
            DiscoveryType::Eds,
            LbPolicy::RoundRobin,
        ),
        (
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            DiscoveryType::Eds,
            LbPolicy::RingHash,
        ),
        (
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            DiscoveryType::Eds,
            LbPolicy::RoundRobin,
        ),
        (
            "outbound|9090||reviews.default.svc.cluster.local",
            DiscoveryType::Eds,
            LbPolicy::Random,
        ),
        (
            "outbound|5432||db.data.svc.cluster.local",
            DiscoveryType::Eds,
            LbPolicy::LeastRequest,
        ),
        (
            "outbound|443||api.example.com",
            DiscoveryType::StrictDns,
            LbPolicy::LeastRequest,
        ),
        (
            "outbound|8000||legacy.example.com",
            DiscoveryType::LogicalDns,
            LbPolicy::LeastRequest,
        ),
        (
            "outbound|7000||any.example.com",
            DiscoveryType::OriginalDst,
            LbPolicy::ClusterProvided,
        ),
        (
            "inbound|9080||",
            DiscoveryType::OriginalDst,
            LbPolicy::ClusterProvided,
        ),
        (
            "inbound|9091||",
            DiscoveryType::OriginalDst,
            LbPolicy::ClusterProvided,
        ),
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
    ];
    for (name, want_kind, want_lb) in cases {
        let c = find(&clusters, name);
        assert_eq!(kind(c), want_kind, "{name}");
        assert_eq!(c.lb_policy, want_lb as i32, "{name}");
    }
    // Plus the two subsets of port 9090.
    assert_eq!(clusters.len(), cases.len() + 2, "no extra clusters");
    let eds = find(
        &clusters,
        "outbound|9080||reviews.default.svc.cluster.local",
    );
    assert_eq!(
        eds.eds_cluster_config.as_ref().unwrap().service_name,
        eds.name
    );
}

#[test]
fn destination_rule_policy_becomes_circuit_breakers_and_outlier_detection() {
    let clusters = decoded(MESH, &sidecar("10.9.9.9", "default"));
    // (cluster, max connections, max requests, connect timeout seconds, outlier, idle timeout)
    let cases = [
        ("outbound|9080||", 100, 1000, 3, true, Some(30)),
        ("outbound|9080|v1|", 100, 1000, 3, true, Some(30)),
        // Port-level settings replace the whole policy: defaults again.
        ("outbound|9090||", u32::MAX, u32::MAX, 10, false, None),
    ];
    for (prefix, conns, reqs, timeout, outlier, idle) in cases {
        let name = format!("{prefix}reviews.default.svc.cluster.local");
        let c = find(&clusters, &name);
        let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(t.max_connections.unwrap().value, conns, "{name}");
        assert_eq!(t.max_requests.unwrap().value, reqs, "{name}");
        assert_eq!(t.max_retries.unwrap().value, u32::MAX, "{name}");
        assert!(t.track_remaining);
        assert_eq!(c.connect_timeout.unwrap().seconds, timeout, "{name}");
        assert_eq!(c.outlier_detection.is_some(), outlier, "{name}");
        let common = http_options(c).and_then(|o| o.common_http_protocol_options);
        assert_eq!(
            common
                .as_ref()
                .and_then(|o| o.idle_timeout)
                .map(|d| d.seconds),
            idle,
            "{name}"
        );
    }
    let c = find(
        &clusters,
        "outbound|9080||reviews.default.svc.cluster.local",
    );
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 7);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
    assert_eq!(od.enforcing_success_rate.unwrap().value, 0);
    assert_eq!(od.interval.unwrap().seconds, 5);
    assert_eq!(od.max_ejection_percent.unwrap().value, 50);
    let panic = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
        .map(|p| p.value);
    assert_eq!(panic, Some(0.0));
    let common = http_options(c)
        .unwrap()
        .common_http_protocol_options
        .unwrap();
    assert_eq!(common.max_requests_per_connection.unwrap().value, 10);
    let v1 = find(
        &clusters,
        "outbound|9080|v1|reviews.default.svc.cluster.local",
    );
    match &v1.lb_config {
        Some(LbConfig::RingHashLbConfig(r)) => {
            assert_eq!(r.minimum_ring_size.unwrap().value, 1024)
        }
        other => panic!("want ring hash config, got {other:?}"),
    }
}

#[test]
fn grpc_ports_get_http2_upstream() {
    let clusters = decoded(MESH, &sidecar("10.1.0.1", "default"));
    for (name, h2) in [
        ("outbound|9090||reviews.default.svc.cluster.local", true),
        ("outbound|9080||reviews.default.svc.cluster.local", false),
        ("inbound|9091||", true),
        ("inbound|9080||", false),
    ] {
        let c = find(&clusters, name);
        let got = matches!(
            http_options(c).and_then(|o| o.upstream_protocol_options),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
                if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
        );
        assert_eq!(got, h2, "{name}");
    }
}

#[test]
fn dns_clusters_carry_their_endpoints_inline() {
    let clusters = decoded(MESH, &sidecar("10.1.0.1", "default"));
    let c = find(&clusters, "outbound|443||api.example.com");
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only as i32);
    let cla = c.load_assignment.as_ref().expect("inline endpoints");
    let eps: Vec<_> = cla.endpoints.iter().flat_map(|l| &l.lb_endpoints).collect();
    assert_eq!(eps.len(), 1);
    assert!(format!("{:?}", eps[0]).contains("api.example.com"));
    assert!(c.eds_cluster_config.is_none());
}

#[test]
fn inbound_clusters_only_for_the_proxys_own_ports() {
    let names = |ip: &str| -> Vec<String> {
        decoded(MESH, &sidecar(ip, "default"))
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with("inbound|"))
            .collect()
    };
    assert_eq!(names("10.1.0.2"), vec!["inbound|9080||", "inbound|9091||"]);
    assert!(names("10.7.7.7").is_empty());
    let clusters = decoded(MESH, &sidecar("10.1.0.2", "default"));
    let c = find(&clusters, "inbound|9080||");
    let bind = c.upstream_bind_config.as_ref().unwrap();
    assert_eq!(
        bind.source_address.as_ref().unwrap().address,
        INBOUND_PASSTHROUGH_BIND
    );
    // The server side is sized like the client side.
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 100);
    assert!(
        c.outlier_detection.is_none(),
        "outlier detection is client-side"
    );
}

#[test]
fn passthrough_clusters_follow_the_downstream_protocol() {
    let clusters = decoded(MESH, &sidecar("10.1.0.1", "default"));
    for name in [PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER] {
        let c = find(&clusters, name);
        let o = http_options(c).expect("protocol options");
        assert!(matches!(
            o.upstream_protocol_options,
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
        assert_eq!(
            o.common_http_protocol_options
                .unwrap()
                .idle_timeout
                .unwrap()
                .seconds,
            300
        );
    }
}

#[test]
fn subset_policy_merges_over_top_level() {
    use crate::config::istio::{
        LoadBalancerSettings, PortSelector, PortTrafficPolicy, TrafficPolicy,
    };
    let lb = |s: &str| {
        Some(LoadBalancerSettings {
            simple: Some(s.into()),
            ..Default::default()
        })
    };
    let top = TrafficPolicy {
        load_balancer: lb("RANDOM"),
        outlier_detection: Some(Default::default()),
        port_level_settings: vec![PortTrafficPolicy {
            port: Some(PortSelector { number: 81 }),
            load_balancer: lb("ROUND_ROBIN"),
            ..Default::default()
        }],
        ..Default::default()
    };
    let subset = TrafficPolicy {
        load_balancer: lb("LEAST_REQUEST"),
        ..Default::default()
    };
    let simple = |p: &policy::EffectivePolicy| {
        p.load_balancer
            .as_ref()
            .and_then(|l| l.simple.clone())
            .unwrap_or_default()
    };
    let cases = [
        (Some(&top), None, 80, "RANDOM", true),
        (Some(&top), None, 81, "ROUND_ROBIN", false),
        (Some(&top), Some(&subset), 80, "LEAST_REQUEST", true),
        (Some(&top), Some(&subset), 81, "LEAST_REQUEST", false),
        (None, Some(&subset), 80, "LEAST_REQUEST", false),
    ];
    for (t, s, port, want_lb, want_outlier) in cases {
        let p = merge_traffic_policy(t, s, port);
        assert_eq!(simple(&p), want_lb, "port {port}");
        assert_eq!(p.outlier_detection.is_some(), want_outlier, "port {port}");
    }
}

mod tls;
