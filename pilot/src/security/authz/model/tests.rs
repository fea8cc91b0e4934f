use envoy_types::pb::envoy::config::rbac::v3::{permission::Rule as P, principal::Identifier as I};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use proptest::prelude::*;
use prost::Message;
use serde_json::json;

use super::*;

fn rule(v: serde_json::Value) -> Rule {
    serde_json::from_value(v).expect("a rule")
}

fn gen(v: serde_json::Value, for_tcp: bool, action: Action) -> Result<Policy, RuleError> {
    Model::new("foo", &rule(v))?.generate(for_tcp, action)
}

/// The AND-ed parts of the policy's only principal.
fn principal_parts(p: &Policy) -> Vec<Principal> {
    assert_eq!(p.principals.len(), 1);
    match &p.principals[0].identifier {
        Some(I::AndIds(set)) => set.ids.clone(),
        other => panic!("want and_ids, got {other:?}"),
    }
}

/// The AND-ed parts of the policy's only permission.
fn permission_parts(p: &Policy) -> Vec<Permission> {
    assert_eq!(p.permissions.len(), 1);
    match &p.permissions[0].rule {
        Some(P::AndRules(set)) => set.rules.clone(),
        other => panic!("want and_rules, got {other:?}"),
    }
}

fn or_ids(p: &Principal) -> &[Principal] {
    match &p.identifier {
        Some(I::OrIds(set)) => &set.ids,
        other => panic!("want or_ids, got {other:?}"),
    }
}

fn not_id(p: &Principal) -> &Principal {
    match &p.identifier {
        Some(I::NotId(inner)) => inner,
        other => panic!("want not_id, got {other:?}"),
    }
}

fn or_rules(p: &Permission) -> &[Permission] {
    match &p.rule {
        Some(P::OrRules(set)) => &set.rules,
        other => panic!("want or_rules, got {other:?}"),
    }
}

fn not_rule(p: &Permission) -> &Permission {
    match &p.rule {
        Some(P::NotRule(inner)) => inner,
        other => panic!("want not_rule, got {other:?}"),
    }
}

fn pattern(m: &StringMatcher) -> MatchPattern {
    m.match_pattern.clone().expect("a pattern")
}

fn re(r: &str) -> MatchPattern {
    MatchPattern::SafeRegex(envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
        regex: r.into(),
        ..Default::default()
    })
}

fn authenticated_pattern(p: &Principal) -> MatchPattern {
    match &p.identifier {
        Some(I::Authenticated(a)) => pattern(a.principal_name.as_ref().unwrap()),
        other => panic!("want authenticated, got {other:?}"),
    }
}

fn cidr_of(a: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: a.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

fn any_principal() -> Principal {
    princ(I::Any(true))
}

fn any_permission() -> Permission {
    perm(P::Any(true))
}

#[test]
fn source_fields_become_authenticated_principals() {
    // (field, value, the matcher of the value)
    let cases = [
        (
            "principals",
            "cluster.local/ns/a/sa/b",
            MatchPattern::Exact("spiffe://cluster.local/ns/a/sa/b".into()),
        ),
        (
            "principals",
            "prefix-*",
            MatchPattern::Prefix("spiffe://prefix-".into()),
        ),
        ("principals", "*-suffix", re(r"spiffe://.*-suffix")),
        ("principals", "*", re(".+")),
        ("namespaces", "ns", re(".*/ns/ns/.*")),
        ("namespaces", "ns-*", re(".*/ns/ns-.*/.*")),
        ("namespaces", "*", re(".*/ns/.*/.*")),
        (
            "serviceAccounts",
            "my-ns/my-sa",
            re(r"spiffe://.+/ns/my-ns/(.+/|)sa/my-sa(/.+)?"),
        ),
        (
            "serviceAccounts",
            "sa.only",
            re(r"spiffe://.+/ns/foo/(.+/|)sa/sa\.only(/.+)?"),
        ),
        (
            "trustDomains",
            "td",
            MatchPattern::Prefix("spiffe://td/".into()),
        ),
        (
            "trustDomains",
            "*",
            MatchPattern::Prefix("spiffe://".into()),
        ),
        ("trustDomains", "*.td", re(r"spiffe://[^/]*\.td/.*")),
    ];
    let not_field = |f: &str| format!("not{}{}", f[..1].to_uppercase(), &f[1..]);
    for (field, value, want) in cases {
        let p = gen(
            json!({"from": [{"source": {field: [value]}}]}),
            false,
            Action::Allow,
        )
        .unwrap();
        let parts = principal_parts(&p);
        assert_eq!(parts.len(), 1, "{field}");
        assert_eq!(
            authenticated_pattern(&or_ids(&parts[0])[0]),
            want,
            "{field} {value}"
        );

        let p = gen(
            json!({"from": [{"source": {not_field(field): [value]}}]}),
            false,
            Action::Allow,
        )
        .unwrap();
        let parts = principal_parts(&p);
        let negated = &or_ids(not_id(&parts[0]))[0];
        assert_eq!(authenticated_pattern(negated), want, "not {field} {value}");
    }
}

#[test]
fn ip_blocks_match_the_peer_and_remote_ip_blocks_the_client() {
    let p = gen(
        json!({"from": [{"source": {
            "ipBlocks": ["1.2.3.4", "5.6.0.0/16"], "notIpBlocks": ["2001:db8::/32"],
            "remoteIpBlocks": ["10.0.0.1"], "notRemoteIpBlocks": ["10.9.0.0/16"]}}]}),
        false,
        Action::Allow,
    )
    .unwrap();
    let parts = principal_parts(&p);
    // remote first, then direct, each followed by its negation.
    assert_eq!(
        or_ids(&parts[0]),
        [princ(I::RemoteIp(cidr_of("10.0.0.1", 32)))]
    );
    assert_eq!(
        or_ids(not_id(&parts[1])),
        [princ(I::RemoteIp(cidr_of("10.9.0.0", 16)))]
    );
    assert_eq!(
        or_ids(&parts[2]),
        [
            princ(I::DirectRemoteIp(cidr_of("1.2.3.4", 32))),
            princ(I::DirectRemoteIp(cidr_of("5.6.0.0", 16)))
        ]
    );
    assert_eq!(
        or_ids(not_id(&parts[3])),
        [princ(I::DirectRemoteIp(cidr_of("2001:db8::", 32)))]
    );
}

#[test]
fn source_fields_in_upstream_order_then_conditions() {
    let p = gen(
        json!({
            "from": [{"source": {"ipBlocks": ["1.1.1.1"], "namespaces": ["ns"], "principals": ["p"],
                                 "remoteIpBlocks": ["2.2.2.2"]}}],
            "when": [{"key": "source.ip", "values": ["3.3.3.3"]}]
        }),
        false,
        Action::Allow,
    )
    .unwrap();
    let parts = principal_parts(&p);
    let kinds: Vec<&'static str> = parts
        .iter()
        .map(|p| match &or_ids(p)[0].identifier {
            Some(I::Authenticated(a)) => match pattern(a.principal_name.as_ref().unwrap()) {
                MatchPattern::Exact(_) => "principal",
                _ => "namespace",
            },
            Some(I::RemoteIp(_)) => "remote",
            Some(I::DirectRemoteIp(c)) if c.address_prefix == "1.1.1.1" => "ipBlocks",
            Some(I::DirectRemoteIp(_)) => "when source.ip",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "principal",
            "namespace",
            "remote",
            "ipBlocks",
            "when source.ip"
        ]
    );
}

#[test]
fn operation_fields_become_permissions() {
    let p = gen(
        json!({"to": [{"operation": {
            "hosts": ["Example.com", "*.suffix.com"], "notHosts": ["prefix.*"],
            "methods": ["GET"], "notMethods": ["*"],
            "paths": ["/exact", "/prefix/*", "*/suffix", "/t/{*}/x/{**}"], "notPaths": ["*"],
            "ports": ["80"], "notPorts": ["8000"]}}]}),
        false,
        Action::Allow,
    )
    .unwrap();
    let parts = permission_parts(&p);
    assert_eq!(parts.len(), 8);
    let header = |p: &Permission| match &p.rule {
        Some(P::Header(h)) => (h.name.clone(), h.header_match_specifier.clone().unwrap()),
        other => panic!("{other:?}"),
    };
    let sm = |pat: MatchPattern, ignore_case| {
        HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case,
            match_pattern: Some(pat),
        })
    };
    let hosts: Vec<_> = or_rules(&parts[0]).iter().map(header).collect();
    assert_eq!(
        hosts,
        [
            (
                ":authority".into(),
                sm(MatchPattern::Exact("Example.com".into()), true)
            ),
            (
                ":authority".into(),
                sm(MatchPattern::Suffix(".suffix.com".into()), true)
            ),
        ]
    );
    assert_eq!(
        header(&or_rules(not_rule(&parts[1]))[0]),
        (
            ":authority".into(),
            sm(MatchPattern::Prefix("prefix.".into()), true)
        )
    );
    assert_eq!(
        header(&or_rules(&parts[2])[0]),
        (
            ":method".into(),
            sm(MatchPattern::Exact("GET".into()), false)
        )
    );
    assert_eq!(
        header(&or_rules(not_rule(&parts[3]))[0]),
        (":method".into(), HeaderMatchSpecifier::PresentMatch(true))
    );
    let path = |p: &Permission| match &p.rule {
        Some(P::UrlPath(m)) => match &m.rule {
            Some(path_matcher_rule) => {
                let envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule::Path(s) =
                    path_matcher_rule;
                pattern(s)
            }
            None => panic!("no path"),
        },
        other => panic!("{other:?}"),
    };
    let paths = or_rules(&parts[4]);
    assert_eq!(path(&paths[0]), MatchPattern::Exact("/exact".into()));
    assert_eq!(path(&paths[1]), MatchPattern::Prefix("/prefix/".into()));
    assert_eq!(path(&paths[2]), MatchPattern::Suffix("/suffix".into()));
    let Some(P::UriTemplate(t)) = &paths[3].rule else {
        panic!("want a uri template")
    };
    assert_eq!(t.name, "uri-template");
    let cfg =
        UriTemplateMatchConfig::decode(t.typed_config.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(cfg.path_template, "/t/*/x/**");
    assert_eq!(path(&or_rules(not_rule(&parts[5]))[0]), re(".+"));
    assert_eq!(or_rules(&parts[6]), [perm(P::DestinationPort(80))]);
    assert_eq!(
        or_rules(not_rule(&parts[7])),
        [perm(P::DestinationPort(8000))]
    );
}

#[test]
fn conditions_join_their_side() {
    // (key, value, whether it is a permission)
    let cases = [
        ("destination.ip", "10.0.0.0/8", true),
        ("destination.port", "80", true),
        ("connection.sni", "*.example.com", true),
        ("experimental.envoy.filters.a.b[c]", "x", true),
        ("source.ip", "10.0.0.1", false),
        ("remote.ip", "10.0.0.1", false),
        ("source.namespace", "ns", false),
        ("source.principal", "cluster.local/ns/a/sa/b", false),
        ("source.serviceAccount", "sa", false),
        ("source.trustDomain", "td", false),
        ("request.auth.principal", "iss/sub", false),
        ("request.auth.audiences", "aud", false),
        ("request.auth.presenter", "azp", false),
        ("request.auth.claims[group]", "admin", false),
        ("request.headers[x-token]", "t", false),
    ];
    for (key, value, is_permission) in cases {
        for not in [false, true] {
            let field = if not { "notValues" } else { "values" };
            let p = gen(
                json!({"when": [{"key": key, field: [value]}]}),
                false,
                Action::Allow,
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"));
            let (perms, princs) = (permission_parts(&p), principal_parts(&p));
            if is_permission {
                assert_eq!(princs, [any_principal()], "{key}");
                assert_ne!(perms, [any_permission()], "{key}");
                assert_eq!(matches!(perms[0].rule, Some(P::NotRule(_))), not, "{key}");
            } else {
                assert_eq!(perms, [any_permission()], "{key}");
                assert_ne!(princs, [any_principal()], "{key}");
                assert_eq!(
                    matches!(princs[0].identifier, Some(I::NotId(_))),
                    not,
                    "{key}"
                );
            }
        }
    }
}

#[test]
fn unknown_condition_keys_reject_the_rule_for_every_action() {
    for action in [Action::Allow, Action::Deny, Action::Log] {
        let r = rule(json!({"when": [{"key": "request.bogus", "values": ["x"]}]}));
        assert_eq!(
            Model::new("foo", &r).unwrap_err(),
            RuleError::UnknownAttribute("request.bogus".into()),
            "{action:?}"
        );
    }
}

fn claim_matcher(p: &Principal) -> MetadataMatcher {
    #[allow(deprecated)]
    match &p.identifier {
        Some(I::Metadata(m)) => m.clone(),
        other => panic!("want metadata, got {other:?}"),
    }
}

fn keys(m: &MetadataMatcher) -> Vec<String> {
    use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment::Segment;
    m.path
        .iter()
        .map(|s| match &s.segment {
            Some(Segment::Key(k)) => k.clone(),
            None => String::new(),
        })
        .collect()
}

fn string_of(v: &ValueMatcher) -> MatchPattern {
    match &v.match_pattern {
        Some(value_matcher::MatchPattern::StringMatch(s)) => pattern(s),
        other => panic!("want string match, got {other:?}"),
    }
}

#[test]
fn request_principals_match_issuer_and_subject_in_the_jwt_payload() {
    let anything = re(".+");
    let cases = [
        (
            "https://example.com/sub",
            MatchPattern::Exact("https://example.com".into()),
            MatchPattern::Exact("sub".into()),
        ),
        ("*", anything.clone(), anything.clone()),
        ("*/sub", anything.clone(), MatchPattern::Exact("sub".into())),
        (
            "*.com/sub",
            MatchPattern::Suffix(".com".into()),
            MatchPattern::Exact("sub".into()),
        ),
        (
            "*suffix",
            anything.clone(),
            MatchPattern::Suffix("suffix".into()),
        ),
        ("iss/*", MatchPattern::Exact("iss".into()), anything.clone()),
        (
            "iss/pre*",
            MatchPattern::Exact("iss".into()),
            MatchPattern::Prefix("pre".into()),
        ),
        (
            "prefix*",
            MatchPattern::Prefix("prefix".into()),
            anything.clone(),
        ),
        (
            "no-slash",
            MatchPattern::Exact("no-slash".into()),
            MatchPattern::Exact("".into()),
        ),
    ];
    for (value, iss, sub) in cases {
        let p = gen(
            json!({"from": [{"source": {"requestPrincipals": [value]}}]}),
            false,
            Action::Allow,
        )
        .unwrap();
        let parts = principal_parts(&p);
        let Some(I::AndIds(pair)) = &parts[0].identifier else {
            panic!("{value}: want iss and sub")
        };
        let (m_iss, m_sub) = (claim_matcher(&pair.ids[0]), claim_matcher(&pair.ids[1]));
        assert_eq!(m_iss.filter, JWT_FILTER);
        assert_eq!(keys(&m_iss), ["payload", "iss"]);
        assert_eq!(keys(&m_sub), ["payload", "sub"]);
        assert_eq!(string_of(m_iss.value.as_ref().unwrap()), iss, "{value}");
        assert_eq!(string_of(m_sub.value.as_ref().unwrap()), sub, "{value}");
    }
    // Several values: an OR of (iss AND sub); negated as one.
    let p = gen(
        json!({"from": [{"source": {"notRequestPrincipals": ["a/b", "c/d"]}}]}),
        false,
        Action::Allow,
    )
    .unwrap();
    assert_eq!(or_ids(not_id(&principal_parts(&p)[0])).len(), 2);
}

#[test]
fn claims_audiences_and_presenters_match_lists_or_scalars() {
    let cases = [
        ("request.auth.claims[groups]", vec!["payload", "groups"]),
        (
            "request.auth.claims[nested1][nested2]",
            vec!["payload", "nested1", "nested2"],
        ),
        ("request.auth.audiences", vec!["payload", "aud"]),
        ("request.auth.presenter", vec!["payload", "azp"]),
    ];
    for (key, path) in cases {
        let p = gen(
            json!({"when": [{"key": key, "values": ["a", "b*"]}]}),
            false,
            Action::Allow,
        )
        .unwrap();
        let m = claim_matcher(&principal_parts(&p)[0]);
        assert_eq!(m.filter, JWT_FILTER, "{key}");
        assert_eq!(keys(&m), path, "{key}");
        let Some(value_matcher::MatchPattern::OrMatch(either)) =
            &m.value.as_ref().unwrap().match_pattern
        else {
            panic!("{key}: want list-or-scalar")
        };
        let values = matcher::or_values(vec![
            matcher::string_value(matcher::exact("a", false)),
            matcher::string_value(matcher::prefix("b", false)),
        ]);
        assert_eq!(
            either.value_matchers,
            [matcher::list_one_of(values.clone()), values],
            "{key}"
        );
    }
}

#[test]
fn envoy_filter_metadata_and_list_values() {
    let p = gen(
        json!({"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["x", "[y]"]}]}),
        true,
        Action::Allow,
    )
    .unwrap();
    #[allow(deprecated)]
    let Some(P::Metadata(m)) = &permission_parts(&p)[0].rule
    else {
        panic!("want metadata")
    };
    assert_eq!(m.filter, "envoy.filters.a.b");
    assert_eq!(keys(m), ["c"]);
    let Some(value_matcher::MatchPattern::OrMatch(or)) = &m.value.as_ref().unwrap().match_pattern
    else {
        panic!("want or")
    };
    assert_eq!(
        string_of(&or.value_matchers[0]),
        MatchPattern::Exact("x".into())
    );
    assert_eq!(
        or.value_matchers[1],
        matcher::list_one_of(matcher::string_value(matcher::exact("y", false)))
    );
}

#[test]
fn request_headers_are_principals() {
    let p = gen(
        json!({"when": [{"key": "request.headers[X-Token]", "values": ["abc*"]}]}),
        false,
        Action::Allow,
    )
    .unwrap();
    assert_eq!(
        or_ids(&principal_parts(&p)[0]),
        [princ(I::Header(matcher::header("X-Token", "abc*")))]
    );
    let bad = gen(
        json!({"when": [{"key": "request.headers", "values": ["a"]}]}),
        false,
        Action::Allow,
    );
    assert_eq!(bad.unwrap_err(), RuleError::Brackets(String::new()));
}

/// Rules that use HTTP-only fields, one field each.
const HTTP_ONLY: &[&str] = &[
    r#"{"to": [{"operation": {"methods": ["GET"]}}]}"#,
    r#"{"to": [{"operation": {"notPaths": ["/a"]}}]}"#,
    r#"{"to": [{"operation": {"hosts": ["a.com"]}}]}"#,
    r#"{"from": [{"source": {"requestPrincipals": ["a/b"]}}]}"#,
    r#"{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}"#,
    r#"{"when": [{"key": "request.headers[x]", "values": ["a"]}]}"#,
    r#"{"when": [{"key": "request.auth.claims[x]", "values": ["a"]}]}"#,
    r#"{"when": [{"key": "request.auth.audiences", "notValues": ["a"]}]}"#,
    r#"{"when": [{"key": "request.auth.presenter", "values": ["a"]}]}"#,
    r#"{"when": [{"key": "request.auth.principal", "values": ["a"]}]}"#,
];

#[test]
fn http_only_fields_on_tcp_drop_allow_rules_and_loosen_deny_rules() {
    for r in HTTP_ONLY {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        assert!(
            matches!(
                gen(v.clone(), true, Action::Allow),
                Err(RuleError::HttpOnly(_))
            ),
            "{r}"
        );
        assert!(gen(v.clone(), false, Action::Allow).is_ok(), "{r}");
        for action in [Action::Deny, Action::Log] {
            let p = gen(v.clone(), true, action).unwrap();
            assert_eq!(permission_parts(&p), [any_permission()], "{r}");
            assert_eq!(principal_parts(&p), [any_principal()], "{r}");
        }
    }
    // A DENY rule keeps what TCP can check.
    let p = gen(
        json!({"from": [{"source": {"namespaces": ["ns-1"], "requestPrincipals": ["a"]}}],
               "to": [{"operation": {"ports": ["80"], "methods": ["GET"]}}]}),
        true,
        Action::Deny,
    )
    .unwrap();
    assert_eq!(
        or_rules(&permission_parts(&p)[0]),
        [perm(P::DestinationPort(80))]
    );
    assert_eq!(
        authenticated_pattern(&or_ids(&principal_parts(&p)[0])[0]),
        re(".*/ns/ns-1/.*")
    );
}

#[test]
fn bad_values_fail_allow_and_are_skipped_by_deny() {
    let cases = [
        (
            json!({"to": [{"operation": {"ports": ["http"]}}]}),
            RuleError::Port("http".into()),
        ),
        (
            json!({"to": [{"operation": {"ports": ["70000"]}}]}),
            RuleError::Port("70000".into()),
        ),
        (
            json!({"from": [{"source": {"ipBlocks": ["1.2.3"]}}]}),
            RuleError::Cidr("1.2.3".into()),
        ),
        (
            json!({"from": [{"source": {"ipBlocks": ["1.2.3.4/33"]}}]}),
            RuleError::Cidr("1.2.3.4/33".into()),
        ),
        (
            json!({"when": [{"key": "destination.ip", "values": ["x"]}]}),
            RuleError::Cidr("x".into()),
        ),
    ];
    for (r, want) in cases {
        assert_eq!(gen(r.clone(), false, Action::Allow).unwrap_err(), want);
        let p = gen(r, false, Action::Deny).unwrap();
        assert_eq!(permission_parts(&p), [any_permission()]);
        assert_eq!(principal_parts(&p), [any_principal()]);
    }
}

#[test]
fn each_from_and_to_is_one_principal_and_permission() {
    let p = gen(
        json!({"from": [{"source": {"namespaces": ["a"]}}, {"source": {"namespaces": ["b"]}}],
               "to": [{"operation": {"ports": ["1"]}}, {}, {"operation": {"ports": ["2"]}}],
               "when": [{"key": "destination.port", "values": ["3"]}]}),
        false,
        Action::Allow,
    )
    .unwrap();
    assert_eq!(p.principals.len(), 2);
    assert_eq!(p.permissions.len(), 3);
    // The condition joins every permission; an empty `to` keeps only it.
    let Some(P::AndRules(second)) = &p.permissions[1].rule else {
        panic!("and")
    };
    assert_eq!(or_rules(&second.rules[0]), [perm(P::DestinationPort(3))]);
}

#[test]
fn trust_domain_aliases_spell_out_principals() {
    let bundle = Bundle::new("td1", &["td2".to_owned()]);
    let r = rule(
        json!({"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"],
                                              "trustDomains": ["td2"]}}]}),
    );
    let mut m = Model::new("foo", &r).unwrap();
    m.migrate_trust_domain(&bundle);
    let p = m.generate(false, Action::Allow).unwrap();
    let parts = principal_parts(&p);
    let principals: Vec<MatchPattern> = or_ids(&parts[0])
        .iter()
        .map(authenticated_pattern)
        .collect();
    assert_eq!(
        principals,
        [
            MatchPattern::Exact("spiffe://td1/ns/a/sa/b".into()),
            MatchPattern::Exact("spiffe://td2/ns/a/sa/b".into())
        ]
    );
    let domains: Vec<MatchPattern> = or_ids(&parts[1])
        .iter()
        .map(authenticated_pattern)
        .collect();
    assert_eq!(
        domains,
        [
            MatchPattern::Prefix("spiffe://td1/".into()),
            MatchPattern::Prefix("spiffe://td2/".into())
        ]
    );
}

#[test]
fn cidrs() {
    assert_eq!(cidr("10.1.2.3/8").unwrap(), cidr_of("10.1.2.3", 8));
    assert_eq!(cidr("::1").unwrap(), cidr_of("::1", 128));
    for bad in [
        "",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/08",
        "::/129",
        "host",
    ] {
        assert!(cidr(bad).is_err(), "{bad}");
    }
}

fn http_only_rule() -> impl Strategy<Value = serde_json::Value> {
    let words = prop::collection::vec("[a-z*/]{1,6}", 1..3);
    let http = prop_oneof![
        words.clone().prop_map(|v| json!({"methods": v})),
        words.clone().prop_map(|v| json!({"notMethods": v})),
        words.clone().prop_map(|v| json!({"paths": v})),
        words.clone().prop_map(|v| json!({"notPaths": v})),
        words.clone().prop_map(|v| json!({"hosts": v})),
        words.clone().prop_map(|v| json!({"notHosts": v})),
    ];
    let tcp_ports = prop::collection::vec((1u32..65535).prop_map(|p| p.to_string()), 0..2);
    let namespaces = prop::collection::vec("[a-z*]{1,5}", 0..2);
    let request_principals = prop::collection::vec("[a-z*/]{1,6}", 0..2);
    (http, tcp_ports, namespaces, request_principals).prop_map(|(op, ports, ns, rp)| {
        let mut op = op;
        op["ports"] = json!(ports);
        json!({"from": [{"source": {"namespaces": ns, "requestPrincipals": rp}}],
               "to": [{"operation": op}]})
    })
}

proptest! {
    /// An ALLOW rule that needs HTTP to be checked never becomes a TCP policy (which could
    /// only be wider than what was written).
    #[test]
    fn allow_rules_with_http_fields_never_reach_tcp(r in http_only_rule()) {
        prop_assert!(gen(r.clone(), true, Action::Allow).is_err());
        prop_assert!(gen(r, false, Action::Allow).is_ok());
    }
}
