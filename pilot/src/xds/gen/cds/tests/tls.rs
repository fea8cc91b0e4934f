//! Client-side TLS of outbound clusters: DestinationRule `tls` modes and auto mTLS.
#![allow(deprecated)] // match_subject_alt_names, as upstream sends it

use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use kube_fake::objects;
use prost::Message;

use super::*;
use crate::model::{MeshConfig, PushContext};
use crate::testing::sidecar;
use crate::xds::gen::testing::named;
use crate::xds::gen::GenContext;

const ECHO: &str = "outbound|7070||echo.demo.svc.cluster.local";
const ECHO_SA: &str = "spiffe://cluster.local/ns/demo/sa/echo";

/// Echo with a sidecar-injected pod (10.0.0.1) and a plain one (10.0.0.2), plus `extra`.
fn mesh(extra: &str) -> String {
    let slice = objects::endpoint_slice("demo", "echo-1", "echo")
        .port(7070, "grpc")
        .endpoint("10.0.0.1")
        .endpoint("10.0.0.2");
    let injected = objects::pod("demo", "echo-1")
        .label("security.istio.io/tlsMode", "istio")
        .service_account("echo")
        .container("c")
        .ip("10.0.0.1")
        .running();
    let plain = objects::pod("demo", "echo-2")
        .service_account("echo")
        .container("c")
        .ip("10.0.0.2")
        .running();
    let echo = objects::service("demo", "echo")
        .cluster_ip("10.96.0.1")
        .port(7070, "grpc")
        .build();
    let all = [echo, slice.build(), injected.build(), plain.build()];
    format!("{}{extra}", objects::manifests(&all))
}

fn clusters_with(yaml: &str, mesh_config: MeshConfig) -> Vec<Cluster> {
    let store = crate::config::ConfigStore::new();
    let parsed = crate::config::object::parse_manifests(yaml).expect("fixture parses");
    store.replace_source("fixture", parsed.configs);
    let push = PushContext::build(
        &store.snapshot(),
        mesh_config,
        "cluster.local",
        "t/1".into(),
    );
    let proxy = sidecar("10.9.0.1", "demo");
    let scope = push.sidecar_scope(&proxy);
    let ctx = GenContext {
        push: &push,
        proxy: &proxy,
        scope: &scope,
    };
    crate::xds::gen::testing::decoded(&clusters(&ctx))
}

fn echo(extra: &str) -> Cluster {
    let all = clusters_with(&mesh(extra), MeshConfig::default());
    named(&all, ECHO, |c| &c.name).clone()
}

fn upstream(ts: &TransportSocket) -> UpstreamTlsContext {
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("typed config");
    };
    UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes")
}

fn sans(ctx: &UpstreamTlsContext) -> Vec<String> {
    let common = ctx.common_tls_context.as_ref().expect("common");
    let Some(ValidationContextType::CombinedValidationContext(c)) = &common.validation_context_type
    else {
        panic!("combined validation");
    };
    c.default_validation_context
        .as_ref()
        .expect("default")
        .match_subject_alt_names
        .iter()
        .map(|m| match &m.match_pattern {
            Some(MatchPattern::Exact(v)) => v.clone(),
            other => panic!("exact SAN matchers, got {other:?}"),
        })
        .collect()
}

fn dr(tls: &str) -> String {
    format!(
        "\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: echo-tls, namespace: demo}}\n\
         spec: {{host: echo.demo.svc.cluster.local, trafficPolicy: {{tls: {tls}}}}}\n"
    )
}

#[test]
fn auto_mtls_matches_endpoints_by_tls_mode() {
    let c = echo("");
    assert!(c.transport_socket.is_none());
    let names: Vec<&str> = c
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
    let istio = &c.transport_socket_matches[0];
    let fields = &istio.r#match.as_ref().expect("match").fields;
    assert_eq!(
        fields.get("tlsMode").and_then(|v| v.kind.clone()),
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
            "istio".into()
        ))
    );
    let ctx = upstream(istio.transport_socket.as_ref().expect("socket"));
    assert_eq!(ctx.sni, "outbound_.7070_._.echo.demo.svc.cluster.local");
    assert_eq!(sans(&ctx), [ECHO_SA]);
    // gRPC is HTTP/2: in-mesh ALPN with h2.
    assert_eq!(
        ctx.common_tls_context.expect("common").alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
    let plain = &c.transport_socket_matches[1];
    assert!(plain.r#match.as_ref().expect("match").fields.is_empty());
    assert_eq!(
        plain.transport_socket.as_ref().map(|t| t.name.as_str()),
        Some("envoy.transport_sockets.raw_buffer")
    );
}

#[test]
fn auto_mtls_is_off_when_the_mesh_or_the_namespace_says_so() {
    let off = MeshConfig {
        enable_auto_mtls: false,
        ..MeshConfig::default()
    };
    let all = clusters_with(&mesh(""), off);
    let c = named(&all, ECHO, |c| &c.name);
    assert!(c.transport_socket.is_none() && c.transport_socket_matches.is_empty());

    let disabled = "\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                    metadata: {name: default, namespace: demo}\nspec: {mtls: {mode: DISABLE}}\n";
    let c = echo(disabled);
    assert!(c.transport_socket.is_none() && c.transport_socket_matches.is_empty());
}

#[test]
fn istio_mutual_rules_always_use_mtls() {
    let c = echo(&dr("{mode: ISTIO_MUTUAL}"));
    assert!(c.transport_socket_matches.is_empty());
    let ctx = upstream(c.transport_socket.as_ref().expect("socket"));
    assert_eq!(sans(&ctx), [ECHO_SA]);
    assert_eq!(ctx.sni, "outbound_.7070_._.echo.demo.svc.cluster.local");

    let c = echo(&dr(
        "{mode: ISTIO_MUTUAL, sni: echo.internal, subjectAltNames: [spiffe://other/ns/x/sa/y]}",
    ));
    let ctx = upstream(c.transport_socket.as_ref().expect("socket"));
    assert_eq!(ctx.sni, "echo.internal");
    assert_eq!(sans(&ctx), ["spiffe://other/ns/x/sa/y"]);
}

#[test]
fn istio_mutual_sans_take_service_entry_names_and_trust_domain_aliases() {
    let mesh_config = MeshConfig {
        trust_domain_aliases: vec!["old.example".into()],
        ..Default::default()
    };
    let c = named(
        &clusters_with(&mesh(&dr("{mode: ISTIO_MUTUAL}")), mesh_config),
        ECHO,
        |c| &c.name,
    )
    .clone();
    let ctx = upstream(c.transport_socket.as_ref().expect("socket"));
    assert_eq!(
        sans(&ctx),
        [ECHO_SA, "spiffe://old.example/ns/demo/sa/echo"]
    );

    let entry = "\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {name: db, namespace: demo}\n\
         spec: {hosts: [db.internal], location: MESH_INTERNAL, resolution: STATIC,\n\
         ports: [{number: 5432, name: tcp, protocol: TCP}],\n\
         endpoints: [{address: 10.1.0.5}],\n\
         subjectAltNames: [spiffe://cluster.local/ns/db/sa/postgres]}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: db, namespace: demo}\n\
         spec: {host: db.internal, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
    let all = clusters_with(&mesh(entry), MeshConfig::default());
    let db = named(&all, "outbound|5432||db.internal", |c| &c.name);
    let ctx = upstream(db.transport_socket.as_ref().expect("socket"));
    assert_eq!(sans(&ctx), ["spiffe://cluster.local/ns/db/sa/postgres"]);
}

#[test]
fn simple_and_disable_rules() {
    let c = echo(&dr(
        "{mode: SIMPLE, sni: echo.example.com, caCertificates: /etc/ca.pem}",
    ));
    let ctx = upstream(c.transport_socket.as_ref().expect("socket"));
    assert_eq!(ctx.sni, "echo.example.com");
    assert!(ctx
        .common_tls_context
        .as_ref()
        .expect("common")
        .tls_certificate_sds_secret_configs
        .is_empty());

    let c = echo(&dr("{mode: DISABLE}"));
    assert!(c.transport_socket.is_none() && c.transport_socket_matches.is_empty());

    // MUTUAL without a client certificate is refused (plaintext), never half configured.
    let c = echo(&dr("{mode: MUTUAL}"));
    assert!(c.transport_socket.is_none());

    // A Secret named by a rule for every workload is not for sidecars, as upstream decides.
    let c = echo(&dr("{mode: MUTUAL, credentialName: client-cert}"));
    assert!(c.transport_socket.is_none());
}

#[test]
fn external_services_get_no_auto_mtls() {
    let all = clusters_with(
        &format!("{}\n---\n{}", mesh(""), crate::xds::gen::testing::MESH),
        MeshConfig::default(),
    );
    let api = named(&all, "outbound|443||api.example.com", |c| &c.name);
    assert!(api.transport_socket.is_none() && api.transport_socket_matches.is_empty());
}

/// (auto_sni, auto_san_validation) of a cluster; `None` without upstream HTTP options.
fn auto_sni(c: &Cluster) -> Option<(bool, bool)> {
    let o = policy::http_protocol_options(c);
    o.upstream_http_protocol_options
        .map(|u| (u.auto_sni, u.auto_san_validation))
}

/// DestinationRule SIMPLE/MUTUAL without `sni`: the SNI follows the request's host, and so
/// does the certificate check when nothing else names the server, as upstream sets
/// `auto_sni` and `auto_san_validation`.
#[test]
fn simple_and_mutual_without_sni_get_auto_sni_and_san_validation() {
    let cases: [(&str, Option<(bool, bool)>); 9] = [
        ("{mode: SIMPLE}", Some((true, true))),
        ("{mode: SIMPLE, sni: echo.example.com}", None),
        (
            "{mode: SIMPLE, subjectAltNames: [echo.example.com]}",
            Some((true, false)),
        ),
        ("{mode: SIMPLE, sni: ''}", Some((true, true))),
        (
            "{mode: SIMPLE, insecureSkipVerify: true}",
            Some((true, false)),
        ),
        (
            "{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}",
            Some((true, true)),
        ),
        // No TLS at all: nothing to derive a name for.
        ("{mode: MUTUAL}", None),
        // Mesh mTLS names the server itself.
        ("{mode: ISTIO_MUTUAL}", None),
        ("{mode: MUTUAL, credentialName: client-cert}", None),
    ];
    for (tls, want) in cases {
        let c = echo(&dr(tls));
        assert_eq!(auto_sni(&c), want, "{tls}");
        if want.is_some() {
            // The protocol options stay whole: gRPC's HTTP/2 is kept.
            let o = policy::http_protocol_options(&c);
            let h2 = matches!(
                &o.upstream_protocol_options,
                Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
                    if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
            );
            assert!(h2, "{tls}: {o:?}");
        }
    }
}

/// An HTTP/1.1 cluster that had no protocol options gets plain HTTP/1.1 with auto SNI
/// (Envoy requires an upstream protocol).
#[test]
fn auto_sni_on_a_cluster_without_protocol_options() {
    let yaml = format!(
        "{}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: legacy, namespace: default}}\n\
         spec: {{host: legacy.example.com, trafficPolicy: {{tls: {{mode: SIMPLE}}}}}}\n",
        crate::xds::gen::testing::MESH
    );
    let all = clusters_with(&yaml, MeshConfig::default());
    let c = named(&all, "outbound|8000||legacy.example.com", |c| &c.name);
    assert_eq!(auto_sni(c), Some((true, true)));
    let o = policy::http_protocol_options(c);
    assert!(matches!(
        o.upstream_protocol_options,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
            if matches!(e.protocol_config, Some(ProtocolConfig::HttpProtocolOptions(_)))
    ));
}

/// Mesh `tlsDefaults` reach DestinationRule SIMPLE/MUTUAL contexts, never mesh mTLS.
#[test]
fn tls_defaults_apply_to_user_tls_only() {
    let mesh_config = MeshConfig::from_yaml(
        "tlsDefaults: {ecdhCurves: [X25519, P-256], cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]}",
        "istio-system",
    )
    .expect("mesh parses");
    let params = |c: &Cluster| {
        let ctx = upstream(c.transport_socket.as_ref().expect("socket"));
        let p = ctx
            .common_tls_context
            .expect("common")
            .tls_params
            .expect("params");
        (p.ecdh_curves, p.cipher_suites)
    };
    let all = clusters_with(&mesh(&dr("{mode: SIMPLE}")), mesh_config.clone());
    assert_eq!(
        params(named(&all, ECHO, |c| &c.name)),
        (
            vec!["X25519".to_owned(), "P-256".to_owned()],
            vec!["ECDHE-ECDSA-AES128-GCM-SHA256".to_owned()]
        )
    );
    let all = clusters_with(&mesh(&dr("{mode: ISTIO_MUTUAL}")), mesh_config);
    assert_eq!(params(named(&all, ECHO, |c| &c.name)), (vec![], vec![]));
}
