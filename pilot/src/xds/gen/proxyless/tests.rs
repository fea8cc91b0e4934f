use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{address, transport_socket, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain};
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CommonTlsContext, DownstreamTlsContext,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use kube_fake::objects::{self, manifests};
use prost::Message;

use super::inbound::serves_mtls;
use super::*;
use crate::model::Proxy;
use crate::security::peer_authn::MtlsMode;
use crate::testing::{grpc_client, node};
use crate::xds::gen::testing::{decoded, echo_mesh, named, with_ctx};

fn mesh() -> String {
    echo_mesh(&[])
}

const SPLIT: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: demo}
spec:
  hosts: [echo]
  http:
  - route:
    - {destination: {host: echo, subset: v1}, weight: 20}
    - {destination: {host: echo, subset: v2}, weight: 80}
"#;

fn names(n: &[&str]) -> Subscription {
    Subscription::of(n.iter().copied())
}

#[test]
fn api_listener_points_at_route_named_like_the_cluster() {
    let asked = names(&[
        "echo.demo.svc.cluster.local:7070",
        "echo.demo:7070",
        "nope.demo:1",
    ]);
    let res = with_ctx(&mesh(), &grpc_client("demo"), |ctx| listeners(ctx, &asked));
    assert_eq!(res.len(), 2, "unknown hosts get no listener");
    let l = Listener::decode(res[0].body.value.as_slice()).unwrap();
    let hcm = HttpConnectionManager::decode(
        l.api_listener
            .unwrap()
            .api_listener
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(
            rds.route_config_name,
            "outbound|7070||echo.demo.svc.cluster.local"
        ),
        other => panic!("want RDS, got {other:?}"),
    }
    assert_eq!(
        hcm.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );
}

#[test]
fn routes_follow_virtual_service_weights() {
    let asked = names(&["outbound|7070||echo.demo.svc.cluster.local"]);
    let mesh = format!("{}{SPLIT}", mesh());
    let res = with_ctx(&mesh, &grpc_client("demo"), |ctx| routes(ctx, &asked));
    let rc = RouteConfiguration::decode(res[0].body.value.as_slice()).unwrap();
    let route = &rc.virtual_hosts[0].routes[0];
    let Some(Action::Route(action)) = &route.action else {
        panic!("want route action")
    };
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &action.cluster_specifier else {
        panic!("want weighted clusters")
    };
    let got: Vec<(&str, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|7070|v1|echo.demo.svc.cluster.local", 20),
            ("outbound|7070|v2|echo.demo.svc.cluster.local", 80)
        ]
    );
}

#[test]
fn wildcard_clusters_include_subsets() {
    let got: Vec<String> = with_ctx(&mesh(), &grpc_client("demo"), |ctx| {
        clusters(ctx, &Subscription::Wildcard)
    })
    .into_iter()
    .map(|r| r.name)
    .collect();
    assert_eq!(
        got,
        [
            "outbound|7070||echo.demo.svc.cluster.local",
            "outbound|7070|v1|echo.demo.svc.cluster.local",
            "outbound|7070|v2|echo.demo.svc.cluster.local"
        ]
    );
}

/// Service echo.demo (port 7070, no DestinationRule) and its server's pod: 10.0.0.5,
/// serving port 7070 on 17070, service account `echo`.
fn server_mesh(extra: &str) -> String {
    let echo = objects::service("demo", "echo")
        .cluster_ip("10.96.0.1")
        .port(7070, "grpc")
        .build();
    let slice = objects::endpoint_slice("demo", "echo-1", "echo")
        .port(17070, "grpc")
        .endpoint("10.0.0.5");
    let pod = objects::pod("demo", "echo-1")
        .label("app", "echo")
        .service_account("echo")
        .container("echo")
        .ip("10.0.0.5");
    format!("{}{extra}", manifests(&[echo, slice.build(), pod.build()]))
}

/// The proxyless gRPC server at 10.0.0.5 with `labels` (as istiod fills them from its pod).
fn grpc_server(labels: &[(&str, &str)]) -> Proxy {
    let mut proxy = Proxy::from_node(Some(&node(
        "sidecar~10.0.0.5~echo-1.demo~demo.svc.cluster.local",
        &[("GENERATOR", "grpc"), ("NAMESPACE", "demo")],
    )))
    .expect("valid fixture node");
    proxy.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    proxy
}

fn peer_authn(mode: &str) -> String {
    format!(
        r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: demo}}
spec: {{mtls: {{mode: {mode}}}}}
"#
    )
}

const SERVER_LISTENER: &str = "xds.istio.io/grpc/lds/inbound/0.0.0.0:17070";

/// The single filter chain of the server listener `name` for `proxy` over `mesh`.
fn server_chain(mesh: &str, proxy: &Proxy, name: &str) -> FilterChain {
    let res = with_ctx(mesh, proxy, |ctx| listeners(ctx, &names(&[name])));
    let [l] = decoded::<Listener>(&res).try_into().expect("one listener");
    assert_eq!(l.name, name);
    let [chain] = l.filter_chains.try_into().expect("one filter chain");
    chain
}

fn chain_hcm(chain: &FilterChain) -> HttpConnectionManager {
    let [f] = chain.filters.as_slice() else {
        panic!("one network filter")
    };
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("typed HCM config")
    };
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

fn tls_context<M: Message + Default>(socket: &TransportSocket) -> M {
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed TLS config")
    };
    M::decode(any.value.as_slice()).unwrap()
}

/// Identity `default` and roots `ROOTCA` of provider instance `default`, in the current
/// and the deprecated fields; returns the SANs to match.
#[allow(deprecated)]
fn assert_provider_instances(ctx: &CommonTlsContext) -> Vec<String> {
    let cert = ctx.tls_certificate_provider_instance.as_ref().unwrap();
    assert_eq!(
        (&*cert.instance_name, &*cert.certificate_name),
        ("default", "default")
    );
    let old = ctx
        .tls_certificate_certificate_provider_instance
        .as_ref()
        .unwrap();
    assert_eq!(
        (&*old.instance_name, &*old.certificate_name),
        ("default", "default")
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        &ctx.validation_context_type
    else {
        panic!("combined validation context")
    };
    let old_ca = combined
        .validation_context_certificate_provider_instance
        .as_ref()
        .unwrap();
    assert_eq!(
        (&*old_ca.instance_name, &*old_ca.certificate_name),
        ("default", "ROOTCA")
    );
    let validation = combined.default_validation_context.as_ref().unwrap();
    let ca = validation
        .ca_certificate_provider_instance
        .as_ref()
        .unwrap();
    assert_eq!(
        (&*ca.instance_name, &*ca.certificate_name),
        ("default", "ROOTCA")
    );
    validation
        .match_subject_alt_names
        .iter()
        .map(|m| match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => s.clone(),
            other => panic!("want exact SAN matchers, got {other:?}"),
        })
        .collect()
}

#[test]
fn strict_server_requires_client_certificates() {
    let chain = server_chain(
        &server_mesh(&peer_authn("STRICT")),
        &grpc_server(&[]),
        SERVER_LISTENER,
    );
    assert_eq!(chain.name, "inbound-mtls");
    assert_eq!(chain.filters[0].name, "inbound-hcmmtls");
    let tls: DownstreamTlsContext = tls_context(chain.transport_socket.as_ref().unwrap());
    assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
    let sans = assert_provider_instances(tls.common_tls_context.as_ref().unwrap());
    assert!(
        sans.is_empty(),
        "gRPC servers refuse SAN matchers: {sans:?}"
    );
    let hcm = chain_hcm(&chain);
    let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier else {
        panic!("inline route config")
    };
    let route = &rc.virtual_hosts[0].routes[0];
    assert!(matches!(route.action, Some(Action::NonForwardingAction(_))));
    assert_eq!(
        hcm.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );
}

#[test]
fn permissive_and_disable_serve_plaintext() {
    // gRPC cannot serve both on one port: PERMISSIVE is plaintext, as upstream.
    for mode in ["PERMISSIVE", "DISABLE"] {
        let chain = server_chain(
            &server_mesh(&peer_authn(mode)),
            &grpc_server(&[]),
            SERVER_LISTENER,
        );
        assert_eq!(chain.name, "inbound-plaintext", "{mode}");
        assert_eq!(chain.filters[0].name, "inbound-hcmplaintext", "{mode}");
        assert!(chain.transport_socket.is_none(), "{mode}");
    }
    // No policy at all: the mesh default, PERMISSIVE.
    let chain = server_chain(&server_mesh(""), &grpc_server(&[]), SERVER_LISTENER);
    assert!(chain.transport_socket.is_none());
}

#[test]
fn permissive_with_auto_mtls_label_serves_mtls() {
    // Clients dial such workloads with mTLS, so the server must take it.
    let labelled = grpc_server(&[("security.istio.io/tlsMode", "istio")]);
    let chain = server_chain(
        &server_mesh(&peer_authn("PERMISSIVE")),
        &labelled,
        SERVER_LISTENER,
    );
    assert_eq!(chain.name, "inbound-mtls");
    let chain = server_chain(
        &server_mesh(&peer_authn("DISABLE")),
        &labelled,
        SERVER_LISTENER,
    );
    assert_eq!(chain.name, "inbound-plaintext", "DISABLE stays plaintext");
}

#[test]
fn port_level_mode_applies_to_its_port_only() {
    let policy = r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo, namespace: demo}
spec:
  selector: {matchLabels: {app: echo}}
  mtls: {mode: STRICT}
  portLevelMtls: {17070: {mode: DISABLE}}
"#;
    let server = grpc_server(&[("app", "echo")]);
    let chain = server_chain(&server_mesh(policy), &server, SERVER_LISTENER);
    assert_eq!(chain.name, "inbound-plaintext");
    let strict = policy.replace("17070", "17071");
    let chain = server_chain(&server_mesh(&strict), &server, SERVER_LISTENER);
    assert_eq!(chain.name, "inbound-mtls");
}

#[test]
fn server_mode_table() {
    let none = BTreeMap::new();
    let auto: BTreeMap<String, String> =
        [("security.istio.io/tlsMode".to_owned(), "istio".to_owned())].into();
    let cases = [
        (MtlsMode::Strict, &none, true),
        (MtlsMode::Strict, &auto, true),
        (MtlsMode::Permissive, &none, false),
        (MtlsMode::Permissive, &auto, true),
        (MtlsMode::Disable, &none, false),
        (MtlsMode::Disable, &auto, false),
    ];
    for (mode, labels, want) in cases {
        assert_eq!(serves_mtls(mode, labels), want, "{mode:?} {labels:?}");
    }
}

#[test]
fn server_listener_needs_a_service_instance() {
    let mesh = server_mesh(&peer_authn("STRICT"));
    // Another IP, or a port the workload does not serve: nothing, as upstream.
    let asked = names(&[
        "xds.istio.io/grpc/lds/inbound/0.0.0.0:7070",
        "xds.istio.io/grpc/lds/inbound/not-an-address",
    ]);
    assert!(with_ctx(&mesh, &grpc_server(&[]), |ctx| listeners(ctx, &asked)).is_empty());
    let elsewhere = names(&[SERVER_LISTENER]);
    assert!(with_ctx(&mesh, &grpc_client("demo"), |ctx| listeners(
        ctx, &elsewhere
    ))
    .is_empty());
    // The listener's own address, bracketed IPv6 or specific, is kept.
    let name = "xds.istio.io/grpc/lds/inbound/10.0.0.5:17070";
    let res = with_ctx(&mesh, &grpc_client("demo"), |ctx| {
        listeners(ctx, &names(&[name]))
    });
    let [l] = decoded::<Listener>(&res).try_into().expect("one listener");
    let Some(address::Address::SocketAddress(sa)) = l.address.and_then(|a| a.address) else {
        panic!("socket address")
    };
    assert_eq!(sa.address, "10.0.0.5");
}

/// Clusters of echo's port 7070 for a client, decoded by name.
fn client_clusters(extra: &str, asked: &[&str]) -> Vec<Cluster> {
    let mesh = server_mesh(extra);
    decoded(&with_ctx(&mesh, &grpc_client("demo"), |ctx| {
        clusters(ctx, &names(asked))
    }))
}

const DEFAULT_CLUSTER: &str = "outbound|7070||echo.demo.svc.cluster.local";
const V1_CLUSTER: &str = "outbound|7070|v1|echo.demo.svc.cluster.local";

fn dr(tls: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo-tls, namespace: demo}}
spec:
  host: echo.demo.svc.cluster.local
  {tls}
"#
    )
}

#[test]
fn istio_mutual_checks_the_service_identities() {
    let got = client_clusters(
        &dr("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"),
        &[DEFAULT_CLUSTER],
    );
    let c = named(&got, DEFAULT_CLUSTER, |c| &c.name);
    let tls: UpstreamTlsContext = tls_context(c.transport_socket.as_ref().unwrap());
    let sans = assert_provider_instances(tls.common_tls_context.as_ref().unwrap());
    assert_eq!(sans, ["spiffe://cluster.local/ns/demo/sa/echo"]);
}

#[test]
fn destination_rule_names_replace_the_service_identities() {
    let got = client_clusters(
        &dr("trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://td/ns/x/sa/y]}}"),
        &[DEFAULT_CLUSTER],
    );
    let tls: UpstreamTlsContext = tls_context(got[0].transport_socket.as_ref().unwrap());
    let sans = assert_provider_instances(tls.common_tls_context.as_ref().unwrap());
    assert_eq!(sans, ["spiffe://td/ns/x/sa/y"]);
}

#[test]
fn no_tls_without_istio_mutual() {
    // No auto mTLS for gRPC: a STRICT server alone does not turn the client's TLS on.
    for extra in [
        peer_authn("STRICT"),
        dr("trafficPolicy: {tls: {mode: DISABLE}}"),
        dr("trafficPolicy: {tls: {mode: SIMPLE}}"),
    ] {
        let got = client_clusters(&extra, &[DEFAULT_CLUSTER]);
        assert!(got[0].transport_socket.is_none(), "{extra}");
    }
}

#[test]
fn tls_follows_port_and_subset_policies() {
    let rule = dr(r#"trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 7070}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  - name: v2
    labels: {version: v2}"#);
    let mesh = server_mesh(&rule);
    let got: Vec<Cluster> = decoded(&with_ctx(&mesh, &grpc_client("demo"), |ctx| {
        clusters(ctx, &names(&[DEFAULT_CLUSTER, V1_CLUSTER]))
    }));
    // A port-level entry replaces the top level, TLS included.
    let default = named(&got, DEFAULT_CLUSTER, |c| &c.name);
    assert!(default.transport_socket.is_none());
    // The subset sets its own TLS.
    let v1 = named(&got, V1_CLUSTER, |c| &c.name);
    assert!(v1.transport_socket.is_some());
}
