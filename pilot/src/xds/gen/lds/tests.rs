use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;

use super::*;
use crate::testing::sidecar;
use crate::xds::gen::testing::{self, named, with_ctx, MESH};

const TCP_SPLIT: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: data}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: primary}, weight: 70}
    - {destination: {host: db, subset: replica}, weight: 30}
    - {destination: {host: db, subset: unused}, weight: 0}
"#;

const SIDECAR_REVIEWS_ONLY: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: [./reviews.default.svc.cluster.local]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;

fn decoded(yaml: &str) -> Vec<Listener> {
    testing::decoded(&with_ctx(yaml, &sidecar("10.1.0.1", "default"), listeners))
}

fn find<'a>(ls: &'a [Listener], name: &str) -> &'a Listener {
    named(ls, name, |l| &l.name)
}

fn typed(f: &envoy_types::pb::envoy::config::listener::v3::Filter) -> &[u8] {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => a.value.as_slice(),
        _ => panic!("{} has no typed config", f.name),
    }
}

fn tcp_target(chain: &FilterChain) -> ClusterSpecifier {
    let f = &chain.filters[0];
    assert_eq!(f.name, TCP_PROXY_FILTER, "chain {}", chain.name);
    TcpProxy::decode(typed(f))
        .unwrap()
        .cluster_specifier
        .unwrap()
}

fn chain_names(l: &Listener) -> Vec<&str> {
    l.filter_chains.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn listener_names_per_config() {
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "whole mesh",
            "",
            &[
                "0.0.0.0_443",
                "0.0.0.0_8000",
                "0.0.0.0_9080",
                "0.0.0.0_9090",
                "10.96.0.20_5432",
                "192.0.2.1_7000",
                VIRTUAL_OUTBOUND,
                VIRTUAL_INBOUND,
            ],
        ),
        (
            "sidecar egress on one port",
            SIDECAR_REVIEWS_ONLY,
            &["0.0.0.0_9080", VIRTUAL_OUTBOUND, VIRTUAL_INBOUND],
        ),
    ];
    for (case, extra, want) in cases {
        let ls = decoded(&format!("{MESH}{extra}"));
        let mut got: Vec<&str> = ls.iter().map(|l| l.name.as_str()).collect();
        got.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{case}");
        for l in &ls {
            if l.name != VIRTUAL_OUTBOUND && l.name != VIRTUAL_INBOUND {
                assert_eq!(
                    l.bind_to_port,
                    Some(BoolValue { value: false }),
                    "{}",
                    l.name
                );
            }
        }
    }
}

#[test]
fn virtual_outbound_passes_through_or_blackholes() {
    for (case, extra, want) in [
        ("allow any", "", PASSTHROUGH_CLUSTER),
        ("registry only", SIDECAR_REVIEWS_ONLY, BLACKHOLE_CLUSTER),
    ] {
        let ls = decoded(&format!("{MESH}{extra}"));
        let l = find(&ls, VIRTUAL_OUTBOUND);
        assert_eq!(l.use_original_dst, Some(BoolValue { value: true }));
        assert_eq!(
            chain_names(l),
            [VIRTUAL_OUTBOUND_BLACKHOLE, VIRTUAL_OUTBOUND_CATCHALL_TCP]
        );
        assert_eq!(
            l.filter_chains[0]
                .filter_chain_match
                .as_ref()
                .unwrap()
                .destination_port
                .unwrap()
                .value,
            15001
        );
        assert_eq!(
            tcp_target(&l.filter_chains[0]),
            ClusterSpecifier::Cluster(BLACKHOLE_CLUSTER.into())
        );
        assert_eq!(
            tcp_target(&l.filter_chains[1]),
            ClusterSpecifier::Cluster(want.into()),
            "{case}"
        );
    }
}

#[test]
fn virtual_inbound_has_chains_per_served_port() {
    let ls = decoded(MESH);
    let l = find(&ls, VIRTUAL_INBOUND);
    // No PeerAuthentication: PERMISSIVE, so mTLS and plaintext chains for each.
    assert_eq!(
        chain_names(l),
        [
            VIRTUAL_INBOUND_BLACKHOLE,
            VIRTUAL_INBOUND_CATCHALL_HTTP,
            VIRTUAL_INBOUND_CATCHALL_HTTP,
            VIRTUAL_INBOUND,
            VIRTUAL_INBOUND,
            VIRTUAL_INBOUND,
            "0.0.0.0_9080",
            "0.0.0.0_9080",
            "0.0.0.0_9091",
            "0.0.0.0_9091",
        ]
    );
    let http = l
        .filter_chains
        .iter()
        .find(|c| {
            c.name == "0.0.0.0_9080"
                && c.filter_chain_match.as_ref().unwrap().transport_protocol == "raw_buffer"
        })
        .expect("a plaintext chain for 9080");
    assert_eq!(
        http.filter_chain_match
            .as_ref()
            .unwrap()
            .destination_port
            .unwrap()
            .value,
        9080
    );
    let hcm = HttpConnectionManager::decode(typed(&http.filters[0])).unwrap();
    let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier else {
        panic!("inbound HTTP routes are inline");
    };
    assert_eq!(rc.virtual_hosts[0].name, "inbound|http|9080");
    let route = format!("{:?}", rc.virtual_hosts[0].routes[0].action);
    assert!(route.contains("inbound|9080||"), "{route}");
    assert!(!route.contains("retry_on"), "no retries inbound: {route}");
    let passthrough_tcp = l
        .filter_chains
        .iter()
        .find(|c| c.name == VIRTUAL_INBOUND)
        .unwrap();
    assert_eq!(
        tcp_target(passthrough_tcp),
        ClusterSpecifier::Cluster(INBOUND_PASSTHROUGH_CLUSTER.into())
    );
}

#[test]
fn outbound_http_listeners_use_rds_by_port_with_fault_filter() {
    let ls = decoded(MESH);
    let l = find(&ls, "0.0.0.0_9080");
    let hcm = HttpConnectionManager::decode(typed(&l.filter_chains[0].filters[0])).unwrap();
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(rds.route_config_name, "9080"),
        other => panic!("want RDS, got {other:?}"),
    }
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
}

#[test]
fn tcp_routes_split_by_weight() {
    for (case, extra, want) in [
        (
            "no virtual service",
            "",
            ClusterSpecifier::Cluster("outbound|5432||db.data.svc.cluster.local".into()),
        ),
        (
            "weighted, zero weight dropped",
            TCP_SPLIT,
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: vec![
                    ClusterWeight {
                        name: "outbound|5432|primary|db.data.svc.cluster.local".into(),
                        weight: 70,
                        ..Default::default()
                    },
                    ClusterWeight {
                        name: "outbound|5432|replica|db.data.svc.cluster.local".into(),
                        weight: 30,
                        ..Default::default()
                    },
                ],
            }),
        ),
    ] {
        let ls = decoded(&format!("{MESH}{extra}"));
        let l = find(&ls, "10.96.0.20_5432");
        assert_eq!(tcp_target(&l.filter_chains[0]), want, "{case}");
    }
}

#[test]
fn request_authentication_goes_first_in_inbound_http_chains_only() {
    let ra = r#"
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules: [{issuer: https://issuer.example, jwks: '{"keys":[]}'}]
"#;
    let filter_names = |l: &Listener, chain: &str| -> Vec<String> {
        let c = named(&l.filter_chains, chain, |c| &c.name);
        let hcm = HttpConnectionManager::decode(typed(&c.filters[0])).unwrap();
        hcm.http_filters.into_iter().map(|f| f.name).collect()
    };
    let plain = decoded(MESH);
    let ls = decoded(&format!("{MESH}{ra}"));
    let inbound = find(&ls, VIRTUAL_INBOUND);
    for chain in ["0.0.0.0_9080", VIRTUAL_INBOUND_CATCHALL_HTTP] {
        let mut want = vec!["envoy.filters.http.jwt_authn".to_owned()];
        want.extend(filter_names(find(&plain, VIRTUAL_INBOUND), chain));
        assert_eq!(filter_names(inbound, chain), want, "{chain}");
    }
    let outbound = find(&ls, "0.0.0.0_9080");
    assert!(
        !filter_names(outbound, "").contains(&"envoy.filters.http.jwt_authn".to_owned()),
        "outbound traffic is not authenticated"
    );
}

mod mtls;

const DENY_DELETE: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
"#;

#[test]
fn inbound_chains_carry_authorization_filters() {
    use crate::security::authz::ext_authz::{HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER};
    use crate::xds::gen::filters::{CORS_FILTER, FAULT_FILTER, ROUTER_FILTER};
    use envoy_types::pb::envoy::config::rbac::v3::rbac::Action;
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;

    let ls = decoded(&format!("{MESH}{DENY_DELETE}"));
    let inbound = find(&ls, VIRTUAL_INBOUND);
    let chain = |name: &str| named(&inbound.filter_chains, name, |c| &c.name);
    let http_filter_names = |c: &FilterChain| -> Vec<String> {
        let hcm = HttpConnectionManager::decode(typed(&c.filters[0])).unwrap();
        hcm.http_filters.into_iter().map(|f| f.name).collect()
    };
    // RBAC first, the router last, on served HTTP ports and the HTTP catch-all.
    for name in ["0.0.0.0_9080", VIRTUAL_INBOUND_CATCHALL_HTTP] {
        assert_eq!(
            http_filter_names(chain(name)),
            [HTTP_RBAC_FILTER, FAULT_FILTER, CORS_FILTER, ROUTER_FILTER],
            "{name}"
        );
    }
    // TCP chains check before they proxy; the rule's method cannot be checked there, so
    // the DENY applies to every connection, as upstream's does.
    let tcp = chain(VIRTUAL_INBOUND);
    let names: Vec<&str> = tcp.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [NETWORK_RBAC_FILTER, TCP_PROXY_FILTER]);
    let rbac = NetworkRbac::decode(typed(&tcp.filters[0])).unwrap();
    let rules = rbac.rules.unwrap();
    assert_eq!(Action::try_from(rules.action), Ok(Action::Deny));
    assert!(rules
        .policies
        .contains_key("ns[default]-policy[deny-delete]-rule[0]"));
    // Outbound listeners are not touched.
    let outbound = find(&ls, "0.0.0.0_9080");
    assert_eq!(
        http_filter_names(&outbound.filter_chains[0]),
        [FAULT_FILTER, CORS_FILTER, ROUTER_FILTER]
    );
    // The blackhole chain has no authorization to do.
    assert_eq!(chain(VIRTUAL_INBOUND_BLACKHOLE).filters.len(), 1);
}
