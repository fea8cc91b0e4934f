//! Inbound chains per PeerAuthentication mode, decoded as Envoy sees them.

use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::ForwardClientCertDetails;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

use super::*;
use crate::testing::sidecar;

fn pa(ns: &str, name: &str, body: &str) -> String {
    format!(
        "\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {body}\n"
    )
}

/// The virtualInbound listener of the proxy at 10.1.0.1 (serves reviews 9080 and 9091)
/// with labels `app: reviews`.
fn inbound(extra: &str) -> Listener {
    let mut proxy = sidecar("10.1.0.1", "default");
    proxy.labels = [("app".to_owned(), "reviews".to_owned())].into();
    let yaml = format!("{MESH}{extra}");
    let ls: Vec<Listener> = testing::decoded(&with_ctx(&yaml, &proxy, listeners));
    find(&ls, VIRTUAL_INBOUND).clone()
}

/// (name, destination port, transport protocol, ALPNs, whether TLS is terminated).
fn shape(l: &Listener) -> Vec<(String, u32, String, Vec<String>, bool)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (
                c.name.clone(),
                m.destination_port.map_or(0, |p| p.value),
                m.transport_protocol,
                m.application_protocols,
                c.transport_socket.is_some(),
            )
        })
        .collect()
}

fn chains_of(l: &Listener, port: u32) -> Vec<(String, bool)> {
    shape(l)
        .into_iter()
        .filter(|c| c.1 == port)
        .map(|c| (c.2, c.4))
        .collect()
}

fn downstream(c: &FilterChain) -> DownstreamTlsContext {
    let ts = c.transport_socket.as_ref().expect("a transport socket");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("typed config");
    };
    DownstreamTlsContext::decode(any.value.as_slice()).expect("decodes")
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn strict_ports_accept_only_mtls() {
    let l = inbound(&pa("istio-system", "mesh", "{mtls: {mode: STRICT}}"));
    assert_eq!(chains_of(&l, 9080), [(s("tls"), true)]);
    assert_eq!(chains_of(&l, 9091), [(s("tls"), true)]);
    // Passthrough: mTLS for HTTP and TCP, nothing plaintext.
    let passthrough: Vec<_> = shape(&l).into_iter().filter(|c| c.1 == 0).collect();
    assert_eq!(
        passthrough,
        [
            (
                s(VIRTUAL_INBOUND_CATCHALL_HTTP),
                0,
                s("tls"),
                vec![s("istio-http/1.0"), s("istio-http/1.1"), s("istio-h2")],
                true
            ),
            (s(VIRTUAL_INBOUND), 0, s("tls"), vec![], true),
        ]
    );
    let chain = l
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9080")
        .unwrap();
    let tls = downstream(chain);
    assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
    let common = tls.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    // The TLS inspector runs everywhere but the capture port itself; no HTTP inspector is
    // needed, nothing plaintext is sniffed.
    assert_eq!(
        l.listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["envoy.filters.listener.tls_inspector"]
    );
}

#[test]
fn permissive_ports_accept_both() {
    let l = inbound("");
    assert_eq!(
        shape(&l)
            .into_iter()
            .filter(|c| c.1 == 9080)
            .map(|c| (c.2, c.3.len(), c.4))
            .collect::<Vec<_>>(),
        [(s("tls"), 5, true), (s("raw_buffer"), 0, false)]
    );
    // A TCP-less mesh still has TCP passthrough: mTLS, plaintext and the app's own TLS.
    let tcp: Vec<(String, bool)> = shape(&l)
        .into_iter()
        .filter(|c| c.0 == VIRTUAL_INBOUND)
        .map(|c| (c.2, c.4))
        .collect();
    assert_eq!(
        tcp,
        [
            (s("tls"), true),
            (s("raw_buffer"), false),
            (s("tls"), false)
        ]
    );
    let names: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.listener.tls_inspector",
            "envoy.filters.listener.http_inspector"
        ]
    );
}

#[test]
fn disable_leaves_everything_plaintext() {
    let l = inbound(&pa("default", "ns", "{mtls: {mode: DISABLE}}"));
    assert!(l.filter_chains.iter().all(|c| c.transport_socket.is_none()));
    assert_eq!(chains_of(&l, 9080), [(s("raw_buffer"), false)]);
    assert!(l
        .listener_filters
        .iter()
        .all(|f| f.name != "envoy.filters.listener.tls_inspector"));
}

#[test]
fn port_level_modes_split_ports() {
    let extra = format!(
        "{}{}",
        pa("istio-system", "mesh", "{mtls: {mode: STRICT}}"),
        pa(
            "default",
            "reviews",
            "{selector: {matchLabels: {app: reviews}}, portLevelMtls: {9080: {mode: DISABLE}, 7000: {mode: PERMISSIVE}}}"
        )
    );
    let l = inbound(&extra);
    assert_eq!(chains_of(&l, 9080), [(s("raw_buffer"), false)]);
    assert_eq!(chains_of(&l, 9091), [(s("tls"), true)]);
    // 7000 is no service's port: passthrough chains of its own, in its mode.
    let undeclared: Vec<String> = shape(&l)
        .into_iter()
        .filter(|c| c.1 == 7000)
        .map(|c| c.0)
        .collect();
    assert_eq!(undeclared.len(), 5, "{undeclared:?}");
    assert!(undeclared
        .iter()
        .all(|n| n == VIRTUAL_INBOUND || n == VIRTUAL_INBOUND_CATCHALL_HTTP));
    // The TLS inspector is on by default (passthrough needs it) and off where no chain
    // matches TLS: the capture port and plaintext 9080.
    let tls_inspector = &l.listener_filters[0];
    let Some(Rule::OrMatch(set)) = tls_inspector
        .filter_disabled
        .as_ref()
        .and_then(|p| p.rule.clone())
    else {
        panic!("TLS inspector disabled on a port set: {tls_inspector:?}");
    };
    let ports: Vec<i32> = set
        .rules
        .iter()
        .filter_map(|r| match &r.rule {
            Some(Rule::DestinationPortRange(r)) => Some(r.start),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [9080, 15006]);
}

#[test]
fn a_workload_policy_that_selects_another_app_does_not_apply() {
    let l = inbound(&pa(
        "default",
        "ratings",
        "{selector: {matchLabels: {app: ratings}}, mtls: {mode: STRICT}}",
    ));
    assert_eq!(chains_of(&l, 9080).len(), 2, "still PERMISSIVE");
}

#[test]
fn inbound_http_forwards_the_client_certificate_details() {
    let l = inbound("");
    let chain = l
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9080")
        .unwrap();
    let hcm = HttpConnectionManager::decode(typed(&chain.filters[0])).unwrap();
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::AppendForward as i32
    );
    let details = hcm.set_current_client_cert_details.expect("set");
    assert!(details.uri && details.dns);
}

/// The virtualInbound listener of the reviews proxy, STRICT mesh-wide, under `mesh`.
fn strict_inbound_with_mesh(mesh: &str) -> Listener {
    let mut proxy = sidecar("10.1.0.1", "default");
    proxy.labels = [("app".to_owned(), "reviews".to_owned())].into();
    let yaml = format!(
        "{MESH}{}",
        pa("istio-system", "mesh", "{mtls: {mode: STRICT}}")
    );
    let store = crate::config::ConfigStore::new();
    let parsed = crate::config::object::parse_manifests(&yaml).expect("fixture parses");
    store.replace_source("fixture", parsed.configs);
    let mesh = crate::model::MeshConfig::from_yaml(mesh, "istio-system").expect("mesh parses");
    let push =
        crate::model::PushContext::build(&store.snapshot(), mesh, "cluster.local", "t/1".into());
    let scope = push.sidecar_scope(&proxy);
    let ctx = GenContext {
        push: &push,
        proxy: &proxy,
        scope: &scope,
    };
    let ls: Vec<Listener> = testing::decoded(&listeners(&ctx));
    find(&ls, VIRTUAL_INBOUND).clone()
}

/// `meshMTLS` and the trust domains reach every mTLS chain of virtualInbound (service
/// ports and passthrough, HTTP and TCP), as upstream's `BuildInboundTLS` sets them.
#[test]
#[allow(deprecated)] // match_subject_alt_names, as upstream sends it
fn mesh_mtls_settings_reach_every_inbound_mtls_chain() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters::TlsProtocol;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

    // (mesh config, minimum version, cipher suites (empty: the defaults), SAN prefixes)
    let cases: [(&str, TlsProtocol, Vec<&str>, Vec<&str>); 4] = [
        ("", TlsProtocol::TlSv12, vec![], vec!["spiffe://cluster.local/"]),
        (
            "meshMTLS: {minProtocolVersion: TLSV1_3}",
            TlsProtocol::TlSv13,
            vec![],
            vec!["spiffe://cluster.local/"],
        ),
        (
            "meshMTLS: {cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}\ntlsDefaults: {minProtocolVersion: TLSV1_3}",
            TlsProtocol::TlSv12,
            vec!["ECDHE-RSA-AES256-GCM-SHA384"],
            vec!["spiffe://cluster.local/"],
        ),
        (
            "trustDomain: new.example\ntrustDomainAliases: [cluster.local]",
            TlsProtocol::TlSv12,
            vec![],
            vec!["spiffe://new.example/", "spiffe://cluster.local/"],
        ),
    ];
    for (mesh, min, ciphers, prefixes) in cases {
        let want_ciphers: Vec<String> = if ciphers.is_empty() {
            crate::security::tls::SUPPORTED_CIPHERS
                .map(str::to_owned)
                .to_vec()
        } else {
            ciphers.iter().map(|c| c.to_string()).collect()
        };
        let l = strict_inbound_with_mesh(mesh);
        let tls_chains: Vec<&FilterChain> = l
            .filter_chains
            .iter()
            .filter(|c| c.transport_socket.is_some())
            .collect();
        // 9080 (HTTP), 9091 (gRPC), passthrough HTTP and TCP.
        assert_eq!(tls_chains.len(), 4, "{mesh}: {:?}", shape(&l));
        for chain in tls_chains {
            let ctx = downstream(chain);
            let common = ctx.common_tls_context.expect("common");
            let params = common.tls_params.expect("params");
            assert_eq!(
                params.tls_minimum_protocol_version, min as i32,
                "{mesh} {}",
                chain.name
            );
            assert_eq!(params.cipher_suites, want_ciphers, "{mesh} {}", chain.name);
            let Some(ValidationContextType::CombinedValidationContext(v)) =
                common.validation_context_type
            else {
                panic!("{mesh}: combined validation context");
            };
            let got: Vec<String> = v
                .default_validation_context
                .expect("default")
                .match_subject_alt_names
                .into_iter()
                .map(|m| match m.match_pattern {
                    Some(MatchPattern::Prefix(p)) => p,
                    other => panic!("{mesh}: want a prefix, got {other:?}"),
                })
                .collect();
            assert_eq!(got, prefixes, "{mesh} {}", chain.name);
        }
    }
}
