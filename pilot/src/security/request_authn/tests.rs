use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, http_uri};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::jwt_provider::JwksSourceSpecifier;

use super::*;
use crate::security::jwks::{JwksKeys, JwksSource};
use crate::testing::{push_context, sidecar};

const KEYS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"abc","kid":"one"}]}"#;

fn ra(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

fn proxy(ns: &str, labels: &[(&str, &str)]) -> Proxy {
    let mut p = sidecar("10.1.0.1", ns);
    p.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p
}

/// The decoded JWT filter config `proxy` gets over `yaml`, if any.
fn config_with(yaml: &str, proxy: &Proxy, keys: JwksKeys) -> Option<JwtAuthentication> {
    let mut push = push_context(yaml);
    push.jwks = Arc::new(keys);
    let filters = http_filters(&push, proxy);
    assert!(filters.len() <= 1, "one JWT filter at most");
    filters.first().map(|f| {
        assert_eq!(f.name, "envoy.filters.http.jwt_authn");
        match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(a)) => {
                assert_eq!(
                    a.type_url,
                    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
                );
                JwtAuthentication::decode(a.value.as_slice()).expect("decodes")
            }
            _ => panic!("no typed config"),
        }
    })
}

fn config(yaml: &str, proxy: &Proxy) -> Option<JwtAuthentication> {
    config_with(yaml, proxy, JwksKeys::default())
}

fn only_provider(c: &JwtAuthentication) -> &JwtProvider {
    assert_eq!(c.providers.len(), 1);
    &c.providers["origins-0"]
}

fn inline(p: &JwtProvider) -> &str {
    match &p.jwks_source_specifier {
        Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(s)),
            ..
        })) => s,
        other => panic!("not inline: {other:?}"),
    }
}

fn provider_req(name: &str) -> JwtRequirement {
    provider_requirement(name)
}

fn allow_missing() -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(RequiresType::AllowMissing(Empty {})),
    }
}

#[test]
fn no_policy_no_filter() {
    assert_eq!(config("", &proxy("default", &[])), None);
    // A policy without rules adds nothing either.
    assert_eq!(
        config(&ra("default", "empty", "{}"), &proxy("default", &[])),
        None
    );
}

#[test]
fn single_rule_is_provider_or_missing() {
    let yaml = ra(
        "default",
        "jwt",
        "{jwtRules: [{issuer: https://issuer.example, jwks: '{\"keys\":[]}'}]}",
    );
    let c = config(&yaml, &proxy("default", &[])).expect("filter");
    assert!(c.bypass_cors_preflight);
    assert_eq!(c.rules.len(), 1);
    let rule = &c.rules[0];
    assert_eq!(
        rule.r#match.as_ref().unwrap().path_specifier,
        Some(PathSpecifier::Prefix("/".into()))
    );
    assert_eq!(
        rule.requirement_type,
        Some(RequirementType::Requires(requires_any(vec![
            provider_req("origins-0"),
            allow_missing()
        ])))
    );
    let p = only_provider(&c);
    assert_eq!(p.issuer, "https://issuer.example");
    assert_eq!(inline(p), "{\"keys\":[]}");
    assert_eq!(p.payload_in_metadata, "payload");
    assert_eq!(
        p.normalize_payload_in_metadata
            .as_ref()
            .unwrap()
            .space_delimited_claims,
        ["permission", "scope"]
    );
    assert!(!p.forward && !p.clear_route_cache);
}

#[test]
fn each_rule_field() {
    let yaml = ra(
        "default",
        "jwt",
        r#"{jwtRules: [{
            issuer: iss, audiences: [a1, a2], jwks: '{"keys":[]}',
            fromHeaders: [{name: x-jwt, prefix: "Bearer "}, {name: x-other}],
            fromParams: [token, jwt], fromCookies: [session],
            outputPayloadToHeader: x-payload,
            outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: x-email, claim: email}],
            forwardOriginalToken: true,
            spaceDelimitedClaims: [roles, scope]}]}"#,
    );
    let c = config(&yaml, &proxy("default", &[])).expect("filter");
    let p = only_provider(&c);
    assert_eq!(p.audiences, ["a1", "a2"]);
    assert_eq!(
        p.from_headers,
        [
            JwtHeader {
                name: "x-jwt".into(),
                value_prefix: "Bearer ".into()
            },
            JwtHeader {
                name: "x-other".into(),
                value_prefix: String::new()
            }
        ]
    );
    assert_eq!(p.from_params, ["token", "jwt"]);
    assert_eq!(p.from_cookies, ["session"]);
    assert_eq!(p.forward_payload_header, "x-payload");
    let claims: Vec<(&str, &str)> = p
        .claim_to_headers
        .iter()
        .map(|c| (c.header_name.as_str(), c.claim_name.as_str()))
        .collect();
    assert_eq!(claims, [("x-sub", "sub"), ("x-email", "email")]);
    assert!(p.forward);
    assert_eq!(
        p.normalize_payload_in_metadata
            .as_ref()
            .unwrap()
            .space_delimited_claims,
        ["permission", "roles", "scope"],
        "the defaults merged in, sorted, once each"
    );
}

#[test]
fn jwks_uri_keys_come_from_the_snapshot() {
    let uri = "https://issuer.example/keys";
    let yaml = ra(
        "default",
        "jwt",
        &format!("{{jwtRules: [{{issuer: https://issuer.example, jwksUri: {uri}}}]}}"),
    );
    let source = JwksSource {
        issuer: "https://issuer.example".into(),
        jwks_uri: uri.into(),
    };
    let fetched = JwksKeys::with(JwksFetchMode::Istiod, [(source, KEYS.to_owned())]);
    let c = config_with(&yaml, &proxy("default", &[]), fetched).expect("filter");
    assert_eq!(inline(only_provider(&c)), KEYS);

    // Not fetched (yet, or the fetch failed): a key set nothing verifies against.
    let c = config(&yaml, &proxy("default", &[])).expect("filter");
    assert_eq!(inline(only_provider(&c)), PUBLIC_ONLY_JWKS);
}

#[test]
fn selectors_namespaces_and_targets() {
    let yaml = [
        ra("default", "all", "{jwtRules: [{issuer: ns-wide, jwks: '{\"keys\":[]}'}]}"),
        ra(
            "default",
            "httpbin",
            "{selector: {matchLabels: {app: httpbin}}, jwtRules: [{issuer: httpbin-only, jwks: '{\"keys\":[]}'}]}",
        ),
        ra(
            "default",
            "gw",
            "{targetRef: {kind: Gateway, name: gw}, jwtRules: [{issuer: gateway-only, jwks: '{\"keys\":[]}'}]}",
        ),
        ra("other", "theirs", "{jwtRules: [{issuer: other-ns, jwks: '{\"keys\":[]}'}]}"),
        ra("istio-system", "mesh", "{jwtRules: [{issuer: mesh-wide, jwks: '{\"keys\":[]}'}]}"),
        ra(
            "istio-system",
            "mesh-httpbin",
            "{selector: {matchLabels: {app: httpbin}}, jwtRules: [{issuer: mesh-httpbin, jwks: '{\"keys\":[]}'}]}",
        ),
    ]
    .concat();
    let issuers = |p: &Proxy| -> Vec<String> {
        let Some(c) = config(&yaml, p) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = c
            .providers
            .into_iter()
            .map(|(name, p)| (name, p.issuer))
            .collect();
        out.sort();
        out.into_iter().map(|(_, issuer)| issuer).collect()
    };
    assert_eq!(
        issuers(&proxy("default", &[("app", "httpbin")])),
        ["httpbin-only", "mesh-httpbin", "mesh-wide", "ns-wide"],
        "sorted by issuer, numbered in that order"
    );
    assert_eq!(
        issuers(&proxy("default", &[("app", "reviews")])),
        ["mesh-wide", "ns-wide"]
    );
    assert_eq!(issuers(&proxy("other", &[])), ["mesh-wide", "other-ns"]);
    assert_eq!(issuers(&proxy("third", &[])), ["mesh-wide"]);
    assert_eq!(issuers(&proxy("istio-system", &[])), ["mesh-wide"]);
}

#[test]
fn multiple_issuers_any_valid_provider() {
    let yaml = ra(
        "default",
        "jwt",
        "{jwtRules: [{issuer: b, jwks: '{\"keys\":[]}'}, {issuer: a, jwks: '{\"keys\":[]}'}]}",
    );
    let c = config(&yaml, &proxy("default", &[])).expect("filter");
    assert_eq!(c.providers["origins-0"].issuer, "a");
    assert_eq!(c.providers["origins-1"].issuer, "b");
    let each = |name: &str| requires_any(vec![provider_req(name), allow_missing()]);
    assert_eq!(
        c.rules[0].requirement_type,
        Some(RequirementType::Requires(requires_any(vec![
            provider_req("origins-0"),
            provider_req("origins-1"),
            JwtRequirement {
                requires_type: Some(RequiresType::RequiresAll(JwtRequirementAndList {
                    requirements: vec![each("origins-0"), each("origins-1")],
                })),
            },
        ])))
    );
}

#[test]
fn encoding_is_stable() {
    let rules: String = (0..8)
        .map(|i| format!("{{issuer: iss-{i}, jwks: '{{\"keys\":[]}}'}},"))
        .collect();
    let yaml = ra("default", "jwt", &format!("{{jwtRules: [{rules}]}}"));
    let push = push_context(&yaml);
    let p = proxy("default", &[]);
    let first = http_filters(&push, &p);
    for _ in 0..20 {
        assert_eq!(http_filters(&push, &p), first, "same bytes every time");
    }
}

#[test]
fn remote_modes() {
    let mesh = "---\napiVersion: v1\nkind: Service\nmetadata: {name: keys, namespace: auth}\nspec:\n  clusterIP: 10.96.0.5\n  ports: [{name: http, port: 8080}]\n";
    let yaml = [
        mesh.to_owned(),
        ra(
            "default",
            "jwt",
            "{jwtRules: [{issuer: in-mesh, jwksUri: 'http://keys.auth.svc.cluster.local:8080/jwks', timeout: 2s}, {issuer: outside, jwksUri: 'https://login.example.com/keys'}]}",
        ),
    ]
    .concat();
    let remote = |mode: JwksFetchMode| -> Vec<Option<(String, String, i64)>> {
        let c = config_with(&yaml, &proxy("default", &[]), JwksKeys::with(mode, [])).unwrap();
        ["origins-0", "origins-1"]
            .iter()
            .map(|n| match &c.providers[*n].jwks_source_specifier {
                Some(JwksSourceSpecifier::RemoteJwks(r)) => {
                    let uri = r.http_uri.as_ref().unwrap();
                    let Some(http_uri::HttpUpstreamType::Cluster(cluster)) =
                        &uri.http_upstream_type
                    else {
                        panic!("no cluster")
                    };
                    assert_eq!(r.cache_duration.as_ref().unwrap().seconds, 300);
                    Some((
                        uri.uri.clone(),
                        cluster.clone(),
                        uri.timeout.as_ref().unwrap().seconds,
                    ))
                }
                _ => None,
            })
            .collect()
    };
    let in_mesh = Some((
        "http://keys.auth.svc.cluster.local:8080/jwks".to_owned(),
        "outbound|8080||keys.auth.svc.cluster.local".to_owned(),
        2,
    ));
    assert_eq!(remote(JwksFetchMode::Istiod), [None, None]);
    assert_eq!(remote(JwksFetchMode::Hybrid), [in_mesh.clone(), None]);
    assert_eq!(
        remote(JwksFetchMode::Envoy),
        [
            in_mesh,
            Some((
                "https://login.example.com/keys".to_owned(),
                "outbound|443||login.example.com".to_owned(),
                5
            ))
        ]
    );

    // What istiod fetches follows: everything in istiod mode, the outside URI in hybrid.
    let mut push = push_context(&yaml);
    let fetched = |push: &PushContext| -> Vec<String> {
        istiod_fetched_sources(push)
            .into_keys()
            .map(|s| s.issuer)
            .collect()
    };
    assert_eq!(fetched(&push), ["in-mesh", "outside"]);
    push.jwks = Arc::new(JwksKeys::with(JwksFetchMode::Hybrid, []));
    assert_eq!(fetched(&push), ["outside"]);
    push.jwks = Arc::new(JwksKeys::with(JwksFetchMode::Envoy, []));
    assert!(fetched(&push).is_empty());
}

#[test]
fn fetched_sources_skip_inline_keys_and_keep_longest_timeout() {
    let yaml = [
        ra("a", "one", "{jwtRules: [{issuer: x, jwksUri: 'https://x/keys', timeout: 2s}, {issuer: inline, jwks: '{\"keys\":[]}'}]}"),
        ra("b", "two", "{jwtRules: [{issuer: x, jwksUri: 'https://x/keys', timeout: 9s}, {issuer: discovered}]}"),
    ]
    .concat();
    let sources = istiod_fetched_sources(&push_context(&yaml));
    let got: Vec<(&str, &str, u64)> = sources
        .iter()
        .map(|(s, t)| (s.issuer.as_str(), s.jwks_uri.as_str(), t.as_secs()))
        .collect();
    assert_eq!(got, [("discovered", "", 5), ("x", "https://x/keys", 9)]);
}

#[test]
fn only_sidecars() {
    let yaml = ra(
        "default",
        "jwt",
        "{jwtRules: [{issuer: x, jwks: '{\"keys\":[]}'}]}",
    );
    let mut p = proxy("default", &[]);
    p.kind = NodeType::Router;
    assert_eq!(config(&yaml, &p), None);
}
