use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, grpc_service,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier as RouteCluster,
    virtual_host::TlsRequirementType, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, tls_parameters::TlsProtocol, SdsSecretConfig,
};
use prost::Message;

use super::*;
use crate::model::Proxy;
use crate::testing::{router, sidecar};
use crate::xds::gen::testing::{decoded, named, with_ctx, MESH};
use crate::xds::gen::{generate, Subscription};

const INGRESS: &[(&str, &str)] = &[("istio", "ingressgateway")];

/// One Gateway with a server of every kind, and the VirtualServices bound to it.
const GATEWAY: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [bookinfo.example.com], tls: {httpsRedirect: true}}
  - {port: {number: 80, name: http-api, protocol: HTTP}, hosts: [default/api.example.com]}
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [bookinfo.example.com], tls: {mode: SIMPLE, credentialName: bookinfo-cert, minProtocolVersion: TLSV1_3}}
  - {port: {number: 443, name: https-mtls, protocol: HTTPS}, hosts: [secure.example.com], tls: {mode: MUTUAL, credentialName: secure-cert}, name: secure}
  - {port: {number: 8443, name: https-opt, protocol: HTTPS}, hosts: [opt.example.com], tls: {mode: OPTIONAL_MUTUAL, credentialName: opt-cert}}
  - {port: {number: 15443, name: tls-mesh, protocol: TLS}, hosts: [db.example.com], tls: {mode: ISTIO_MUTUAL}}
  - {port: {number: 9443, name: tls-pt, protocol: TLS}, hosts: ['*.pt.example.com'], tls: {mode: PASSTHROUGH}}
  - {port: {number: 15444, name: tls-auto, protocol: TLS}, hosts: ['*.svc.cluster.local'], tls: {mode: AUTO_PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge, namespace: default}
spec:
  hosts: [reviews, bookinfo.example.com, secure.example.com]
  gateways: [mesh, istio-system/ingress]
  http:
  - {name: all, route: [{destination: {host: reviews, subset: v1}}]}
  - {name: v2, match: [{uri: {prefix: /v2}}], route: [{destination: {host: reviews, subset: v2}}]}
  - {name: edge-only, match: [{uri: {prefix: /edge}, gateways: [istio-system/ingress]}], route: [{destination: {host: reviews, subset: v2}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: legacy.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: data}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/ingress]
  tcp: [{route: [{destination: {host: db}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pt, namespace: default}
spec:
  hosts: [a.pt.example.com]
  gateways: [istio-system/ingress]
  tls: [{match: [{sniHosts: [a.pt.example.com]}], route: [{destination: {host: api.example.com}}]}]
"#;

fn ingress() -> Proxy {
    router("10.0.0.9", "istio-system", INGRESS, &[])
}

fn mesh() -> String {
    format!("{MESH}{GATEWAY}")
}

fn listeners_of(proxy: &Proxy) -> Vec<Listener> {
    with_ctx(&mesh(), proxy, |ctx| {
        decoded(&generate(types::LISTENER, ctx, &Subscription::Wildcard).expect("LDS"))
    })
}

fn routes_of(proxy: &Proxy, names: &[&str]) -> Vec<RouteConfiguration> {
    with_ctx(&mesh(), proxy, |ctx| {
        decoded(
            &generate(types::ROUTE, ctx, &Subscription::of(names.iter().copied())).expect("RDS"),
        )
    })
}

fn hcm(chain: &FilterChain) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("typed filter");
    };
    HttpConnectionManager::decode(any.value.as_slice()).expect("an HTTP connection manager")
}

fn rds_name(chain: &FilterChain) -> String {
    match hcm(chain).route_specifier {
        Some(RouteSpecifier::Rds(r)) => r.route_config_name,
        other => panic!("not RDS: {other:?}"),
    }
}

fn tcp_cluster(chain: &FilterChain) -> String {
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("typed filter");
    };
    let tcp = TcpProxy::decode(any.value.as_slice()).expect("a TCP proxy");
    match tcp.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => c,
        other => panic!("not one cluster: {other:?}"),
    }
}

fn tls_of(chain: &FilterChain) -> DownstreamTlsContext {
    let socket = chain.transport_socket.as_ref().expect("a TLS socket");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed socket");
    };
    DownstreamTlsContext::decode(any.value.as_slice()).expect("a downstream TLS context")
}

fn server_names(chain: &FilterChain) -> Vec<String> {
    chain
        .filter_chain_match
        .as_ref()
        .map(|m| m.server_names.clone())
        .unwrap_or_default()
}

fn is_ads(s: &SdsSecretConfig) -> bool {
    matches!(
        s.sds_config
            .as_ref()
            .and_then(|c| c.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    )
}

fn is_agent(s: &SdsSecretConfig) -> bool {
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = s
        .sds_config
        .as_ref()
        .and_then(|c| c.config_source_specifier.as_ref())
    else {
        return false;
    };
    matches!(
        api.grpc_services[0].target_specifier.as_ref(),
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) if g.cluster_name == "sds-grpc"
    )
}

/// (certificate secret, validation secret) of a context.
fn secrets(ctx: &DownstreamTlsContext) -> (SdsSecretConfig, Option<SdsSecretConfig>) {
    let common = ctx.common_tls_context.as_ref().expect("common context");
    let cert = common.tls_certificate_sds_secret_configs[0].clone();
    let ca = match &common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            c.validation_context_sds_secret_config.clone()
        }
        _ => None,
    };
    (cert, ca)
}

#[test]
fn listeners_are_named_by_port_with_one_http_chain_on_plaintext_ports() {
    let listeners = listeners_of(&ingress());
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.0.0.0_15443",
            "0.0.0.0_15444",
            "0.0.0.0_443",
            "0.0.0.0_80",
            "0.0.0.0_8443",
            "0.0.0.0_9443"
        ]
    );
    let http = named(&listeners, "0.0.0.0_80", |l| &l.name);
    assert_eq!(http.filter_chains.len(), 1);
    assert!(http.listener_filters.is_empty());
    let chain = &http.filter_chains[0];
    assert_eq!(chain.filter_chain_match, None);
    assert_eq!(rds_name(chain), "http.80");
    let hcm = hcm(chain);
    assert_eq!(hcm.stat_prefix, "outbound_0.0.0.0_80;");
    assert_eq!(hcm.use_remote_address, Some(BoolValue { value: true }));
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::SanitizeSet as i32
    );
}

#[test]
fn https_servers_terminate_tls_with_credentials_from_istiod() {
    let listeners = listeners_of(&ingress());
    let https = named(&listeners, "0.0.0.0_443", |l| &l.name);
    assert_eq!(https.listener_filters[0].name, TLS_INSPECTOR);
    let chains: Vec<(Vec<String>, String)> = https
        .filter_chains
        .iter()
        .map(|c| (server_names(c), rds_name(c)))
        .collect();
    assert_eq!(
        chains,
        [
            (
                vec!["bookinfo.example.com".to_owned()],
                "https.443.https.ingress.istio-system".to_owned()
            ),
            (
                vec!["secure.example.com".to_owned()],
                "https.443.https-mtls.ingress.istio-system".to_owned()
            ),
        ]
    );
    // SIMPLE: the credential over ADS, no client certificate, the server's TLS 1.3 minimum.
    let simple = tls_of(&https.filter_chains[0]);
    let (cert, ca) = secrets(&simple);
    assert_eq!(cert.name, "kubernetes://bookinfo-cert");
    assert!(is_ads(&cert));
    assert!(ca.is_none());
    assert_eq!(
        simple.require_client_certificate,
        Some(BoolValue { value: false })
    );
    let common = simple.common_tls_context.as_ref().expect("common");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(
        common
            .tls_params
            .as_ref()
            .map(|p| p.tls_minimum_protocol_version),
        Some(TlsProtocol::TlSv13 as i32)
    );
    assert_eq!(
        hcm(&https.filter_chains[0]).stat_prefix,
        "outbound_0.0.0.0_443;"
    );
    // MUTUAL: client certificates required, checked against `<credential>-cacert`; the
    // server's name is the stat prefix.
    let mutual = tls_of(&https.filter_chains[1]);
    let (cert, ca) = secrets(&mutual);
    assert_eq!(cert.name, "kubernetes://secure-cert");
    let ca = ca.expect("a CA to validate clients");
    assert_eq!(ca.name, "kubernetes://secure-cert-cacert");
    assert!(is_ads(&ca));
    assert_eq!(
        mutual.require_client_certificate,
        Some(BoolValue { value: true })
    );
    assert_eq!(hcm(&https.filter_chains[1]).stat_prefix, "secure");
    assert!(https
        .filter_chains
        .iter()
        .all(|c| c.transport_socket_connect_timeout.is_some()));
    // OPTIONAL_MUTUAL: clients validated when they present a certificate.
    let opt = tls_of(&named(&listeners, "0.0.0.0_8443", |l| &l.name).filter_chains[0]);
    let (_, ca) = secrets(&opt);
    assert_eq!(
        ca.map(|c| c.name).as_deref(),
        Some("kubernetes://opt-cert-cacert")
    );
    assert_eq!(
        opt.require_client_certificate,
        Some(BoolValue { value: false })
    );
}

#[test]
fn istio_mutual_tcp_servers_use_the_agents_certificates_and_the_bound_tcp_route() {
    let listeners = listeners_of(&ingress());
    let chain = &named(&listeners, "0.0.0.0_15443", |l| &l.name).filter_chains[0];
    assert_eq!(server_names(chain), ["db.example.com"]);
    assert_eq!(
        tcp_cluster(chain),
        "outbound|5432||db.data.svc.cluster.local"
    );
    let tls = tls_of(chain);
    let (cert, ca) = secrets(&tls);
    assert_eq!(cert.name, "default");
    assert!(is_agent(&cert));
    assert_eq!(ca.map(|c| c.name).as_deref(), Some("ROOTCA"));
    assert_eq!(
        tls.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let alpn = &tls
        .common_tls_context
        .as_ref()
        .expect("common")
        .alpn_protocols;
    assert_eq!(alpn[0], "istio-peer-exchange");
}

#[test]
fn passthrough_servers_route_by_sni_without_terminating() {
    let listeners = listeners_of(&ingress());
    let pt = named(&listeners, "0.0.0.0_9443", |l| &l.name);
    assert_eq!(pt.filter_chains.len(), 1);
    let chain = &pt.filter_chains[0];
    assert_eq!(server_names(chain), ["a.pt.example.com"]);
    assert_eq!(tcp_cluster(chain), "outbound|443||api.example.com");
    assert!(chain.transport_socket.is_none());
}

#[test]
fn auto_passthrough_routes_sni_to_sni_dnat_clusters() {
    let listeners = listeners_of(&ingress());
    let auto = named(&listeners, "0.0.0.0_15444", |l| &l.name);
    let snis: Vec<String> = auto.filter_chains.iter().flat_map(server_names).collect();
    assert_eq!(
        snis,
        [
            "outbound_.5432_._.db.data.svc.cluster.local",
            "outbound_.9080_._.reviews.default.svc.cluster.local",
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
            "outbound_.9080_.v2_.reviews.default.svc.cluster.local",
            "outbound_.9090_._.reviews.default.svc.cluster.local",
            "outbound_.9090_.v1_.reviews.default.svc.cluster.local",
            "outbound_.9090_.v2_.reviews.default.svc.cluster.local",
        ]
    );
    let first = &auto.filter_chains[0];
    assert_eq!(
        tcp_cluster(first),
        "outbound_.5432_._.db.data.svc.cluster.local"
    );
    assert_eq!(
        first
            .filter_chain_match
            .as_ref()
            .expect("match")
            .application_protocols,
        ALL_ISTIO_MTLS_ALPNS
    );
    // The clusters they name exist, plaintext, beside the outbound ones; no passthrough.
    let clusters: Vec<Cluster> = with_ctx(&mesh(), &ingress(), |ctx| {
        decoded(&generate(types::CLUSTER, ctx, &Subscription::Wildcard).expect("CDS"))
    });
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    for sni in &snis {
        let c = named(&clusters, sni, |c| &c.name);
        assert!(
            c.transport_socket.is_none() && c.transport_socket_matches.is_empty(),
            "{sni}"
        );
    }
    assert!(names.contains(&"outbound|9080|v1|reviews.default.svc.cluster.local"));
    assert!(names.contains(&"BlackHoleCluster"));
    assert!(!names
        .iter()
        .any(|n| n.contains("Passthrough") || n.starts_with("inbound")));
    // Their endpoints are served by EDS under the same names.
    let cla = with_ctx(&mesh(), &ingress(), |ctx| {
        generate(
            types::ENDPOINT,
            ctx,
            &Subscription::of(["outbound_.9080_._.reviews.default.svc.cluster.local"]),
        )
        .expect("EDS")
    });
    assert_eq!(cla.len(), 1);
}

#[test]
fn routes_come_from_bound_virtual_services_for_the_servers_hosts() {
    let configs = routes_of(
        &ingress(),
        &[
            "http.80",
            "https.443.https.ingress.istio-system",
            "http.9999",
        ],
    );
    let http = named(&configs, "http.80", |r| &r.name);
    let vhosts: Vec<(&str, &[String], i32)> = http
        .virtual_hosts
        .iter()
        .map(|v| (v.name.as_str(), v.domains.as_slice(), v.require_tls))
        .collect();
    assert_eq!(
        vhosts,
        [
            ("api.example.com:80", &["api.example.com".to_owned()][..], 0),
            (
                "bookinfo.example.com:80",
                &["bookinfo.example.com".to_owned()][..],
                TlsRequirementType::All as i32
            ),
        ]
    );
    let https = named(&configs, "https.443.https.ingress.istio-system", |r| {
        &r.name
    });
    assert_eq!(https.virtual_hosts.len(), 1);
    let vh = &https.virtual_hosts[0];
    assert_eq!(vh.name, "bookinfo.example.com:443");
    // The gateway-only match is kept, and the catch-all rule goes last.
    let routes: Vec<(&str, String)> = vh
        .routes
        .iter()
        .map(|r| {
            let Some(Action::Route(a)) = &r.action else {
                panic!("a route action");
            };
            let Some(RouteCluster::Cluster(c)) = &a.cluster_specifier else {
                panic!("one cluster");
            };
            (r.name.as_str(), c.clone())
        })
        .collect();
    assert_eq!(
        routes,
        [
            (
                "v2",
                "outbound|443|v2|reviews.default.svc.cluster.local".to_owned()
            ),
            (
                "edge-only",
                "outbound|443|v2|reviews.default.svc.cluster.local".to_owned()
            ),
            (
                "all",
                "outbound|443|v1|reviews.default.svc.cluster.local".to_owned()
            ),
        ]
    );
    // A name no server uses: an empty config, as upstream.
    assert!(named(&configs, "http.9999", |r| &r.name)
        .virtual_hosts
        .is_empty());
}

#[test]
fn a_mesh_and_gateway_virtual_service_reaches_sidecars_without_gateway_only_matches() {
    let configs = routes_of(&sidecar("10.1.9.9", "default"), &["9080"]);
    let vh = named(
        &configs[0].virtual_hosts,
        "reviews.default.svc.cluster.local:9080",
        |v| &v.name,
    );
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["all", "v2"]);
    // A sidecar gets no gateway listener, a router no sidecar listener.
    let sidecar_listeners = listeners_of(&sidecar("10.1.9.9", "default"));
    assert!(sidecar_listeners
        .iter()
        .any(|l| l.name == "virtualOutbound"));
    assert!(!listeners_of(&ingress())
        .iter()
        .any(|l| l.name.starts_with("virtual")));
}

#[test]
fn a_router_no_gateway_selects_gets_no_listeners() {
    let other = router(
        "10.0.0.8",
        "istio-system",
        &[("istio", "egressgateway")],
        &[],
    );
    assert!(listeners_of(&other).is_empty());
    let clusters: Vec<Cluster> = with_ctx(&mesh(), &other, |ctx| {
        decoded(&generate(types::CLUSTER, ctx, &Subscription::Wildcard).expect("CDS"))
    });
    assert!(!clusters.iter().any(|c| c.name.starts_with("outbound_.")));
    // ROUTER_MODE=sni-dnat asks for the sni-dnat clusters even so.
    let sni_dnat = router(
        "10.0.0.8",
        "istio-system",
        &[],
        &[("ROUTER_MODE", SNI_DNAT)],
    );
    let clusters: Vec<Cluster> = with_ctx(&mesh(), &sni_dnat, |ctx| {
        decoded(&generate(types::CLUSTER, ctx, &Subscription::Wildcard).expect("CDS"))
    });
    assert!(clusters
        .iter()
        .any(|c| c.name == "outbound_.9080_._.reviews.default.svc.cluster.local"));
}
