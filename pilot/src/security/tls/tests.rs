#![allow(deprecated)] // match_subject_alt_names, as upstream sends it

use super::*;

fn sds_name(c: &SdsSecretConfig) -> (&str, Option<i64>) {
    let timeout = c
        .sds_config
        .as_ref()
        .and_then(|s| s.initial_fetch_timeout.as_ref())
        .map(|d| d.seconds);
    (c.name.as_str(), timeout)
}

fn combined(common: &CommonTlsContext) -> &CombinedCertificateValidationContext {
    match common.validation_context_type.as_ref() {
        Some(ValidationContextType::CombinedValidationContext(c)) => c,
        other => panic!("want a combined validation context, got {other:?}"),
    }
}

fn matcher(m: &StringMatcher) -> &MatchPattern {
    m.match_pattern.as_ref().expect("a pattern")
}

#[test]
fn agent_secrets_come_from_sds_grpc_without_fetch_timeout() {
    let d = sds_secret(SDS_DEFAULT);
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = d
        .sds_config
        .as_ref()
        .and_then(|c| c.config_source_specifier.as_ref())
    else {
        panic!("api config source")
    };
    assert_eq!(api.api_type, ApiType::Grpc as i32);
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) = &api.grpc_services[0].target_specifier
    else {
        panic!("envoy grpc")
    };
    assert_eq!(g.cluster_name, SDS_CLUSTER);
    assert_eq!(sds_name(&d), ("default", Some(0)));
    assert_eq!(sds_name(&sds_secret(SDS_ROOT)), ("ROOTCA", Some(0)));
    assert_eq!(
        sds_name(&sds_secret("kubernetes://cert")),
        ("kubernetes://cert", None)
    );
}

#[test]
fn inbound_mtls_requires_client_certificates_from_the_trust_domain() {
    let ctx = inbound_mtls(
        ListenerProtocol::Http,
        &InboundMtlsSettings::from_mesh(&MeshConfig::default(), false),
    );
    assert_eq!(
        ctx.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let common = ctx.common_tls_context.as_ref().expect("common");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(
        sds_name(&common.tls_certificate_sds_secret_configs[0]).0,
        "default"
    );
    let v = combined(common);
    assert_eq!(
        v.validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("ROOTCA")
    );
    let sans = &v
        .default_validation_context
        .as_ref()
        .expect("default")
        .match_subject_alt_names;
    assert_eq!(
        matcher(&sans[0]),
        &MatchPattern::Prefix("spiffe://cluster.local/".into())
    );
    let params = common.tls_params.as_ref().expect("params");
    assert_eq!(
        params.tls_minimum_protocol_version,
        TlsProtocol::TlSv12 as i32
    );
    assert_eq!(params.cipher_suites.len(), SUPPORTED_CIPHERS.len());
    let tcp = inbound_mtls(
        ListenerProtocol::Tcp,
        &InboundMtlsSettings::from_mesh(&MeshConfig::default(), false),
    );
    assert_eq!(
        tcp.common_tls_context.expect("common").alpn_protocols,
        ["istio-peer-exchange", "h2", "http/1.1"]
    );
}

#[test]
fn skipping_trust_domain_validation_keeps_the_roots_but_drops_the_san_check() {
    let mesh = MeshConfig {
        trust_domain_aliases: vec!["old".into()],
        ..Default::default()
    };
    let ctx = inbound_mtls(
        ListenerProtocol::Http,
        &InboundMtlsSettings::from_mesh(&mesh, true),
    );
    assert_eq!(
        ctx.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let v = combined(ctx.common_tls_context.as_ref().expect("common"));
    assert_eq!(
        v.validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("ROOTCA")
    );
    let sans = &v
        .default_validation_context
        .as_ref()
        .expect("default")
        .match_subject_alt_names;
    assert!(sans.is_empty(), "{sans:?}");
}

#[test]
fn istio_mutual_checks_the_server_identity() {
    let sans = vec!["spiffe://cluster.local/ns/default/sa/reviews".to_owned()];
    let ctx = istio_mutual(
        &sans,
        "outbound_.9080_._.reviews.default.svc.cluster.local",
        false,
    );
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    let common = ctx.common_tls_context.as_ref().expect("common");
    assert_eq!(common.alpn_protocols, ["istio-peer-exchange", "istio"]);
    let v = combined(common);
    let got = &v
        .default_validation_context
        .as_ref()
        .expect("default")
        .match_subject_alt_names;
    assert_eq!(matcher(&got[0]), &MatchPattern::Exact(sans[0].clone()));
    let h2 = istio_mutual(&sans, "x", true);
    assert_eq!(
        h2.common_tls_context.expect("common").alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
}

#[test]
fn user_tls_from_files_and_from_credentials() {
    let files = ClientTlsSettings {
        mode: Some("MUTUAL".into()),
        client_certificate: Some("/etc/certs/cert.pem".into()),
        private_key: Some("/etc/certs/key.pem".into()),
        ca_certificates: Some("/etc/certs/ca.pem".into()),
        sni: Some("api.example.com".into()),
        subject_alt_names: Some(vec!["api.example.com".into()]),
        ..Default::default()
    };
    let ctx = user_tls(&files, "outbound|443||api.example.com", true, false, None).expect("valid");
    assert_eq!(ctx.sni, "api.example.com");
    let common = ctx.common_tls_context.as_ref().expect("common");
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "file-cert:/etc/certs/cert.pem~/etc/certs/key.pem"
    );
    let v = combined(common);
    assert_eq!(
        v.validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("file-root:/etc/certs/ca.pem")
    );

    let missing_key = ClientTlsSettings {
        private_key: None,
        ..files.clone()
    };
    assert!(matches!(
        user_tls(&missing_key, "c", true, false, None),
        Err(TlsError::MutualWithoutCertificate { .. })
    ));

    let cred = ClientTlsSettings {
        mode: Some("MUTUAL".into()),
        credential_name: Some("client-cert".into()),
        ..Default::default()
    };
    let ctx = user_tls(&cred, "c", true, true, None).expect("valid");
    let common = ctx.common_tls_context.as_ref().expect("common");
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "kubernetes://client-cert"
    );
    assert_eq!(
        combined(common)
            .validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("kubernetes://client-cert-cacert")
    );
    assert_eq!(common.alpn_protocols, ["h2"]);

    let simple = ClientTlsSettings {
        mode: Some("SIMPLE".into()),
        insecure_skip_verify: Some(true),
        ..Default::default()
    };
    let ctx = user_tls(&simple, "c", false, false, None).expect("valid");
    let common = ctx.common_tls_context.as_ref().expect("common");
    assert!(common.tls_certificate_sds_secret_configs.is_empty());
    assert_eq!(
        common.validation_context_type,
        Some(ValidationContextType::ValidationContext(
            CertificateValidationContext::default()
        ))
    );
}

fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::from_yaml(yaml, "istio-system").expect("mesh config parses")
}

fn params(common: &CommonTlsContext) -> &TlsParameters {
    common.tls_params.as_ref().expect("tls params")
}

/// `meshMTLS` sets inbound mesh mTLS's minimum version and ciphers; the trust domain, its
/// aliases and the extra roots' trust domains become SAN prefixes, each once.
#[test]
fn inbound_mtls_follows_the_mesh_config() {
    struct Case {
        mesh: &'static str,
        min: TlsProtocol,
        ciphers: Vec<&'static str>,
        sans: Vec<&'static str>,
    }
    let defaults: Vec<&str> = SUPPORTED_CIPHERS.to_vec();
    let cases = [
        Case {
            mesh: "",
            min: TlsProtocol::TlSv12,
            ciphers: defaults.clone(),
            sans: vec!["spiffe://cluster.local/"],
        },
        Case {
            mesh: "meshMTLS: {minProtocolVersion: TLSV1_3}",
            min: TlsProtocol::TlSv13,
            ciphers: defaults.clone(),
            sans: vec!["spiffe://cluster.local/"],
        },
        Case {
            mesh: "meshMTLS: {minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]}",
            min: TlsProtocol::TlSv12,
            ciphers: vec!["ECDHE-ECDSA-AES256-GCM-SHA384"],
            sans: vec!["spiffe://cluster.local/"],
        },
        // TLS_AUTO and an empty list keep the defaults; tlsDefaults is not for mesh mTLS.
        Case {
            mesh: "meshMTLS: {minProtocolVersion: TLS_AUTO, cipherSuites: []}\ntlsDefaults: {minProtocolVersion: TLSV1_3, cipherSuites: [AES128-GCM-SHA256]}",
            min: TlsProtocol::TlSv12,
            ciphers: defaults.clone(),
            sans: vec!["spiffe://cluster.local/"],
        },
        Case {
            mesh: "trustDomain: td1\ntrustDomainAliases: [old-td, td1, '']\ncaCertificates: [{pem: x, trustDomains: [other-td, old-td]}]",
            min: TlsProtocol::TlSv12,
            ciphers: defaults.clone(),
            sans: vec!["spiffe://td1/", "spiffe://old-td/", "spiffe://other-td/"],
        },
    ];
    for c in cases {
        let settings = InboundMtlsSettings::from_mesh(&mesh(c.mesh), false);
        for protocol in [ListenerProtocol::Http, ListenerProtocol::Tcp] {
            let ctx = inbound_mtls(protocol, &settings);
            let common = ctx.common_tls_context.as_ref().expect("common");
            let p = params(common);
            assert_eq!(p.tls_minimum_protocol_version, c.min as i32, "{}", c.mesh);
            assert_eq!(
                p.tls_maximum_protocol_version,
                TlsProtocol::TlSv13 as i32,
                "{}",
                c.mesh
            );
            assert_eq!(p.cipher_suites, c.ciphers, "{}", c.mesh);
            assert!(p.ecdh_curves.is_empty(), "{}", c.mesh);
            let sans: Vec<String> = combined(common)
                .default_validation_context
                .as_ref()
                .expect("default")
                .match_subject_alt_names
                .iter()
                .map(|m| match matcher(m) {
                    MatchPattern::Prefix(p) => p.clone(),
                    other => panic!("want prefix matchers, got {other:?}"),
                })
                .collect();
            assert_eq!(sans, c.sans, "{}", c.mesh);
        }
    }
}

/// `tlsDefaults` curves and ciphers reach DestinationRule SIMPLE/MUTUAL contexts; its
/// minimum version does not (upstream leaves the client at TLS 1.2).
#[test]
fn user_tls_takes_the_mesh_tls_defaults() {
    let simple = ClientTlsSettings {
        mode: Some("SIMPLE".into()),
        ..Default::default()
    };
    let cases = [
        ("", vec![], vec![]),
        (
            "tlsDefaults: {ecdhCurves: [P-256, X25519], cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256], minProtocolVersion: TLSV1_3}",
            vec!["P-256", "X25519"],
            vec!["ECDHE-RSA-AES128-GCM-SHA256"],
        ),
        ("tlsDefaults: {ecdhCurves: [X25519]}", vec!["X25519"], vec![]),
        (
            "meshMTLS: {cipherSuites: [AES128-GCM-SHA256]}",
            vec![],
            vec![],
        ),
    ];
    for (yaml, curves, ciphers) in cases {
        let m = mesh(yaml);
        let ctx = user_tls(&simple, "c", false, false, m.tls_defaults.as_ref()).expect("valid");
        let common = ctx.common_tls_context.as_ref().expect("common");
        let p = params(common);
        assert_eq!(p.ecdh_curves, curves, "{yaml}");
        assert_eq!(p.cipher_suites, ciphers, "{yaml}");
        assert_eq!(
            p.tls_minimum_protocol_version,
            TlsProtocol::TlSv12 as i32,
            "{yaml}"
        );
    }
}
