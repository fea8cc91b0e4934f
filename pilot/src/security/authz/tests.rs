use envoy_types::pb::envoy::config::core::v3::{grpc_service, http_uri};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http_ext;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as tcp_ext;
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;

use super::*;
use crate::config::object::parse_manifests;
use crate::config::ConfigStore;
use crate::model::mesh::MeshConfig;
use crate::testing::sidecar;

fn push_with(yaml: &str, mesh: MeshConfig) -> PushContext {
    let store = ConfigStore::new();
    let parsed = parse_manifests(yaml).expect("fixture YAML parses");
    store.replace_source("fixture", parsed.configs);
    PushContext::build(&store.snapshot(), mesh, "cluster.local", "t/1".into())
}

fn push(yaml: &str) -> PushContext {
    push_with(yaml, MeshConfig::default())
}

/// A sidecar of `httpbin` (version v1) in `foo`.
fn httpbin() -> Proxy {
    let mut p = sidecar("10.0.0.1", "foo");
    p.labels = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    p
}

fn typed_http(f: &HttpFilter) -> &[u8] {
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(a)) => a.value.as_slice(),
        _ => panic!("{} has no typed config", f.name),
    }
}

fn typed_network(f: &Filter) -> &[u8] {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => a.value.as_slice(),
        _ => panic!("{} has no typed config", f.name),
    }
}

fn rbac_of(f: &HttpFilter) -> HttpRbac {
    assert_eq!(f.name, HTTP_RBAC_FILTER);
    HttpRbac::decode(typed_http(f)).unwrap()
}

fn network_rbac_of(f: &Filter) -> NetworkRbac {
    assert_eq!(f.name, NETWORK_RBAC_FILTER);
    NetworkRbac::decode(typed_network(f)).unwrap()
}

fn policy_names(r: Option<&Rbac>) -> Vec<String> {
    let mut names: Vec<String> = r
        .map(|r| r.policies.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn action_of(r: Option<&Rbac>) -> Option<Action> {
    r.map(|r| Action::try_from(r.action).unwrap())
}

const ALL_ACTIONS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{to: [{operation: {paths: [/a]}}]}, {from: [{source: {namespaces: [bar]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{}]
"#;

#[test]
fn audit_then_deny_then_allow_with_upstream_names() {
    let filters = local_http_filters(&push(ALL_ACTIONS), &httpbin());
    let rbacs: Vec<HttpRbac> = filters.iter().map(rbac_of).collect();
    let summary: Vec<(Option<Action>, Vec<String>, &str)> = rbacs
        .iter()
        .map(|r| {
            assert!(r.shadow_rules.is_none());
            (
                action_of(r.rules.as_ref()),
                policy_names(r.rules.as_ref()),
                r.shadow_rules_stat_prefix.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some(Action::Log),
                vec!["ns[istio-system]-policy[audit]-rule[0]".to_owned()],
                // Without shadow rules upstream reads the proto default action, ALLOW.
                SHADOW_ALLOW_STAT_PREFIX
            ),
            (
                Some(Action::Deny),
                vec!["ns[foo]-policy[deny]-rule[0]".to_owned()],
                SHADOW_ALLOW_STAT_PREFIX
            ),
            (
                Some(Action::Allow),
                vec![
                    "ns[foo]-policy[allow]-rule[0]".to_owned(),
                    "ns[foo]-policy[allow]-rule[1]".to_owned()
                ],
                SHADOW_ALLOW_STAT_PREFIX
            ),
        ]
    );
    // No CUSTOM policy: the full list is the same.
    assert_eq!(http_filters(&push(ALL_ACTIONS), &httpbin()), filters);
}

#[test]
fn selection_by_namespace_root_and_selector() {
    let push = push(ALL_ACTIONS);
    let other_app = {
        let mut p = httpbin();
        p.labels.insert("app".into(), "other".into());
        p
    };
    let names = |proxy: &Proxy| -> Vec<Vec<String>> {
        local_http_filters(&push, proxy)
            .iter()
            .map(|f| policy_names(rbac_of(f).rules.as_ref()))
            .collect()
    };
    // The selector leaves `allow` out; the namespace-wide DENY and the root AUDIT stay.
    assert_eq!(
        names(&other_app),
        [
            vec!["ns[istio-system]-policy[audit]-rule[0]".to_owned()],
            vec!["ns[foo]-policy[deny]-rule[0]".to_owned()]
        ]
    );
    // Another namespace sees only the root namespace's policy.
    assert_eq!(
        names(&sidecar("10.0.0.2", "bar")),
        [vec!["ns[istio-system]-policy[audit]-rule[0]".to_owned()]]
    );
    assert!(local_http_filters(&push_with("", MeshConfig::default()), &httpbin()).is_empty());
    assert!(network_filters(&push_with("", MeshConfig::default()), &httpbin()).is_empty());
}

const DRY_RUN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-deny, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-allow, namespace: foo, annotations: {istio.io/dry-run: "T"}}
spec: {rules: [{to: [{operation: {paths: [/allow]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo, annotations: {istio.io/dry-run: "false"}}
spec: {rules: [{to: [{operation: {paths: [/another]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-annotation, namespace: foo, annotations: {istio.io/dry-run: "maybe"}}
spec: {rules: [{to: [{operation: {paths: [/x]}}]}]}
"#;

#[test]
fn dry_run_policies_become_shadow_rules() {
    let rbacs: Vec<HttpRbac> = local_http_filters(&push(DRY_RUN), &httpbin())
        .iter()
        .map(rbac_of)
        .collect();
    assert_eq!(rbacs.len(), 2);
    let deny = &rbacs[0];
    assert!(deny.rules.is_none());
    assert_eq!(action_of(deny.shadow_rules.as_ref()), Some(Action::Deny));
    assert_eq!(
        policy_names(deny.shadow_rules.as_ref()),
        ["ns[foo]-policy[dry-deny]-rule[0]"]
    );
    assert_eq!(deny.shadow_rules_stat_prefix, SHADOW_DENY_STAT_PREFIX);

    let allow = &rbacs[1];
    // An annotation that is not a boolean enforces the policy, as upstream does.
    assert_eq!(
        policy_names(allow.rules.as_ref()),
        [
            "ns[foo]-policy[allow]-rule[0]",
            "ns[foo]-policy[bad-annotation]-rule[0]"
        ]
    );
    assert_eq!(
        policy_names(allow.shadow_rules.as_ref()),
        ["ns[foo]-policy[dry-allow]-rule[0]"]
    );
    assert_eq!(allow.shadow_rules_stat_prefix, SHADOW_ALLOW_STAT_PREFIX);
}

#[test]
fn policies_without_rules_match_nothing_and_null_rules_are_skipped() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: with-null, namespace: foo}
spec: {rules: [null, {}]}
"#;
    let r = rbac_of(&local_http_filters(&push(yaml), &httpbin())[0]);
    let rules = r.rules.unwrap();
    assert_eq!(
        policy_names(Some(&rules)),
        [
            "ns[foo]-policy[empty]-rule[0]",
            "ns[foo]-policy[with-null]-rule[1]"
        ]
    );
    assert_eq!(
        rules.policies["ns[foo]-policy[empty]-rule[0]"],
        match_never()
    );
    // `{}` matches everything: any permission, any principal.
    let all = &rules.policies["ns[foo]-policy[with-null]-rule[1]"];
    assert_eq!(
        all.permissions,
        [Permission {
            rule: Some(permission::Rule::AndRules(permission::Set {
                rules: vec![Permission {
                    rule: Some(permission::Rule::Any(true))
                }]
            }))
        }]
    );
}

const HTTP_ONLY_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: http-only, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: [id-1]}}]
    to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [ns-1]}}]
    to: [{operation: {hosts: [example.com]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [GET], ports: ["80"]}}]}]
"#;

#[test]
fn tcp_chains_drop_http_only_allow_rules_and_keep_tcp_parts_of_deny_rules() {
    let filters = network_filters(&push(HTTP_ONLY_ALLOW), &httpbin());
    let rbacs: Vec<NetworkRbac> = filters.iter().map(network_rbac_of).collect();
    assert_eq!(rbacs.len(), 2);
    assert!(rbacs.iter().all(|r| r.stat_prefix == "tcp."));
    let deny = rbacs[0].rules.as_ref().unwrap();
    assert_eq!(Action::try_from(deny.action), Ok(Action::Deny));
    let rule = &deny.policies["ns[foo]-policy[deny]-rule[0]"];
    let Some(permission::Rule::AndRules(and)) = &rule.permissions[0].rule else {
        panic!("and")
    };
    assert_eq!(
        and.rules,
        [Permission {
            rule: Some(permission::Rule::OrRules(permission::Set {
                rules: vec![Permission {
                    rule: Some(permission::Rule::DestinationPort(80))
                }]
            }))
        }]
    );
    // The ALLOW filter is there, with no policy: nothing is allowed over TCP.
    let allow = rbacs[1].rules.as_ref().unwrap();
    assert_eq!(Action::try_from(allow.action), Ok(Action::Allow));
    assert!(allow.policies.is_empty());
    assert_eq!(rbacs[1].shadow_rules_stat_prefix, SHADOW_ALLOW_STAT_PREFIX);
}

const EXT_AUTHZ_SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: my-custom-ext-authz, namespace: foo}
spec: {clusterIP: 10.96.0.9, ports: [{name: http, port: 9000}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-1, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: default}
  rules: [{to: [{operation: {paths: [/httpbin1]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-2, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec:
  action: CUSTOM
  provider: {name: default}
  rules: [{to: [{operation: {paths: [/httpbin2]}}]}]
"#;

fn mesh(providers: &str) -> MeshConfig {
    MeshConfig::from_yaml(providers, "istio-system").unwrap()
}

const HTTP_PROVIDER: &str = r#"
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: foo/my-custom-ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 10s
    failOpen: true
    statusOnError: "403"
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-custom-id, x-prefix-*, "*-suffix"]
    includeAdditionalHeadersInCheck: {x-header-2: value-2, x-header-1: value-1}
    includeRequestBodyInCheck: {maxRequestBytes: 2048, allowPartialMessage: true, packAsBytes: true}
    headersToUpstreamOnAllow: [Authorization]
    headersToDownstreamOnDeny: [Set-cookie]
"#;

#[test]
fn custom_http_provider_pairs_a_shadow_rbac_with_ext_authz() {
    let push = push_with(EXT_AUTHZ_SERVICES, mesh(HTTP_PROVIDER));
    let filters = http_filters(&push, &httpbin());
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [HTTP_RBAC_FILTER, HTTP_EXT_AUTHZ_FILTER]);
    let rbac = rbac_of(&filters[0]);
    assert_eq!(rbac.shadow_rules_stat_prefix, "istio_ext_authz_");
    assert_eq!(action_of(rbac.shadow_rules.as_ref()), Some(Action::Deny));
    assert_eq!(
        policy_names(rbac.shadow_rules.as_ref()),
        ["istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]"]
    );
    // The dry-run policy still marks requests (upstream's known limitation).
    assert_eq!(
        policy_names(rbac.rules.as_ref()),
        ["istio-ext-authz-default-ns[foo]-policy[httpbin-2]-rule[0]"]
    );

    let ext = http_ext::ExtAuthz::decode(typed_http(&filters[1])).unwrap();
    assert!(ext.failure_mode_allow);
    assert_eq!(ext.status_on_error.unwrap().code, 403);
    assert_eq!(
        ext.filter_enabled_metadata,
        Some(ext_authz::filter_enabled(
            HTTP_RBAC_FILTER,
            "istio-ext-authz-default"
        ))
    );
    assert_eq!(ext.allowed_headers.unwrap().patterns.len(), 3);
    assert_eq!(ext.with_request_body.unwrap().max_request_bytes, 2048);
    let Some(http_ext::ext_authz::Services::HttpService(svc)) = ext.services else {
        panic!("want an HTTP service")
    };
    assert_eq!(svc.path_prefix, "/check");
    let uri = svc.server_uri.unwrap();
    assert_eq!(uri.uri, "http://my-custom-ext-authz.foo.svc.cluster.local");
    assert_eq!(
        uri.http_upstream_type,
        Some(http_uri::HttpUpstreamType::Cluster(
            "outbound|9000||my-custom-ext-authz.foo.svc.cluster.local".into()
        ))
    );
    assert_eq!(
        uri.timeout,
        Some(Duration {
            seconds: 10,
            nanos: 0
        })
    );
    let added: Vec<&str> = svc
        .authorization_request
        .as_ref()
        .unwrap()
        .headers_to_add
        .iter()
        .map(|h| h.key.as_str())
        .collect();
    assert_eq!(added, ["x-header-1", "x-header-2"]);
    let resp = svc.authorization_response.unwrap();
    assert!(resp.allowed_upstream_headers.is_some());
    assert!(resp.allowed_client_headers.is_some());
    assert!(resp.allowed_client_headers_on_success.is_none());

    // An HTTP provider has nothing to say on a TCP chain.
    assert!(network_filters(&push, &httpbin()).is_empty());
}

#[test]
fn custom_grpc_provider_serves_http_and_tcp() {
    let providers = r#"
extensionProviders:
- name: default
  envoyExtAuthzGrpc: {service: my-custom-ext-authz.foo.svc.cluster.local, port: 9000}
"#;
    let push = push_with(EXT_AUTHZ_SERVICES, mesh(providers));
    let http = http_filters(&push, &httpbin());
    let ext = http_ext::ExtAuthz::decode(typed_http(&http[1])).unwrap();
    let Some(http_ext::ext_authz::Services::GrpcService(g)) = ext.services else {
        panic!("want a gRPC service")
    };
    assert_eq!(
        g.timeout,
        Some(Duration {
            seconds: 600,
            nanos: 0
        })
    );
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(envoy)) = g.target_specifier else {
        panic!("want Envoy gRPC")
    };
    assert_eq!(
        envoy.cluster_name,
        "outbound|9000||my-custom-ext-authz.foo.svc.cluster.local"
    );
    assert_eq!(envoy.authority, "my-custom-ext-authz.foo.svc.cluster.local");

    let tcp = network_filters(&push, &httpbin());
    let names: Vec<&str> = tcp.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [NETWORK_RBAC_FILTER, NETWORK_EXT_AUTHZ_FILTER]);
    let rbac = network_rbac_of(&tcp[0]);
    assert_eq!(rbac.stat_prefix, "tcp.");
    assert_eq!(rbac.shadow_rules_stat_prefix, "istio_ext_authz_");
    let ext = tcp_ext::ExtAuthz::decode(typed_network(&tcp[1])).unwrap();
    assert_eq!(ext.stat_prefix, "tcp.");
    assert_eq!(
        ext.filter_enabled_metadata,
        Some(ext_authz::filter_enabled(
            NETWORK_RBAC_FILTER,
            "istio-ext-authz-default"
        ))
    );
}

#[test]
fn broken_or_several_custom_providers_deny_what_they_would_check() {
    let deny_names = |filters: &[HttpFilter]| -> Vec<Vec<String>> {
        filters
            .iter()
            .map(|f| {
                let r = rbac_of(f);
                assert_eq!(action_of(r.rules.as_ref()), Some(Action::Deny));
                policy_names(r.rules.as_ref())
            })
            .collect()
    };
    // No such provider: the enforced rule becomes a DENY (the dry-run one is dropped).
    let push = push_with(EXT_AUTHZ_SERVICES, MeshConfig::default());
    assert_eq!(
        deny_names(&http_filters(&push, &httpbin())),
        [vec![
            "istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]-deny-due-to-bad-CUSTOM-action"
                .to_owned()
        ]]
    );
    // A provider whose service does not exist is as bad.
    let missing =
        "extensionProviders: [{name: default, envoyExtAuthzGrpc: {service: nowhere, port: 1}}]";
    let push = push_with(EXT_AUTHZ_SERVICES, mesh(missing));
    assert_eq!(deny_names(&http_filters(&push, &httpbin())).len(), 1);
    let tcp = network_rbac_of(&network_filters(&push, &httpbin())[0]);
    assert_eq!(tcp.stat_prefix, "tcp.");
    assert_eq!(
        Action::try_from(tcp.rules.unwrap().action),
        Ok(Action::Deny)
    );

    // Two providers on one workload: both deny.
    let second = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: other}
  rules: [{to: [{operation: {paths: [/other]}}]}]
"#;
    let push = push_with(
        &format!("{EXT_AUTHZ_SERVICES}{second}"),
        mesh(HTTP_PROVIDER),
    );
    assert_eq!(
        deny_names(&http_filters(&push, &httpbin())),
        [
            vec!["istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]-deny-due-to-bad-CUSTOM-action".to_owned()],
            vec!["istio-ext-authz-other-ns[foo]-policy[other]-rule[0]-deny-due-to-bad-CUSTOM-action".to_owned()],
        ]
    );
}

#[test]
fn custom_filters_come_before_local_ones() {
    let push = push_with(
        &format!("{EXT_AUTHZ_SERVICES}---\n{ALL_ACTIONS}"),
        mesh(HTTP_PROVIDER),
    );
    let filters = http_filters(&push, &httpbin());
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            HTTP_RBAC_FILTER,
            HTTP_EXT_AUTHZ_FILTER,
            HTTP_RBAC_FILTER,
            HTTP_RBAC_FILTER,
            HTTP_RBAC_FILTER
        ]
    );
}

#[test]
fn mesh_trust_domain_aliases_apply() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]}]
"#;
    let m = mesh("trustDomain: td1\ntrustDomainAliases: [td2]\n");
    let r = rbac_of(&local_http_filters(&push_with(yaml, m), &httpbin())[0]);
    let policy = &r.rules.unwrap().policies["ns[foo]-policy[p]-rule[0]"];
    let Some(principal::Identifier::AndIds(and)) = &policy.principals[0].identifier else {
        panic!("and")
    };
    let Some(principal::Identifier::OrIds(or)) = &and.ids[0].identifier else {
        panic!("or")
    };
    let want: Vec<Principal> = ["spiffe://td1/ns/a/sa/b", "spiffe://td2/ns/a/sa/b"]
        .iter()
        .map(|p| Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(matcher::exact(p, false)),
                },
            )),
        })
        .collect();
    assert_eq!(or.ids, want);
}

#[test]
fn policy_names_follow_upstream() {
    assert_eq!(
        policy_name("ns", "p", 3, false, ""),
        "ns[ns]-policy[p]-rule[3]"
    );
    assert_eq!(
        policy_name("ns", "p", 0, true, "prov"),
        "istio-ext-authz-prov-ns[ns]-policy[p]-rule[0]"
    );
    assert_eq!(
        policy_name("ns", "p", 0, true, ""),
        "istio-ext-authz-ns[ns]-policy[p]-rule[0]"
    );
}

#[test]
fn rbac_configs_encode_the_same_every_time() {
    let push = push(ALL_ACTIONS);
    let first = local_http_filters(&push, &httpbin());
    for _ in 0..20 {
        assert_eq!(local_http_filters(&push, &httpbin()), first);
        assert_eq!(
            network_filters(&push, &httpbin()),
            network_filters(&push, &httpbin())
        );
    }
    // And decode to what was built.
    let allow = rbac_of(&first[2]);
    assert_eq!(allow.rules.unwrap().policies.len(), 2);
}
