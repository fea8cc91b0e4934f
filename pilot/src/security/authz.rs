//! AuthorizationPolicy → Envoy RBAC (and ext_authz) filters for a sidecar's inbound
//! chains, as upstream's authz builder produces them.
//!
//! The policies applying to the proxy (root namespace, its namespace, its labels) are split
//! by action. CUSTOM policies become, per provider, an RBAC filter whose shadow rules mark
//! matching requests and an ext_authz filter enabled by that mark. AUDIT, DENY and ALLOW
//! policies become one RBAC filter each, in that order; `istio.io/dry-run` policies go to
//! shadow rules. Each rule is a policy named `ns[<ns>]-policy[<name>]-rule[<i>]`.

pub mod ext_authz;
mod matcher;
pub mod model;
pub mod trust_domain;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;

use self::ext_authz::{
    BAD_CUSTOM_SUFFIX, HTTP_RBAC_FILTER, MATCH_PREFIX, NETWORK_RBAC_FILTER, SHADOW_STAT_PREFIX,
};
use self::model::Model;
use self::trust_domain::Bundle;
use crate::model::authorization::{AuthzPolicy, DRY_RUN_ANNOTATION};
use crate::model::{Proxy, PushContext};
use crate::xds::gen::filters::{any, network_filter};

pub const HTTP_EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
pub const NETWORK_EXT_AUTHZ_FILTER: &str = "envoy.filters.network.ext_authz";
/// Stat prefix of every network RBAC filter.
const TCP_STAT_PREFIX: &str = "tcp.";
pub const SHADOW_ALLOW_STAT_PREFIX: &str = "istio_dry_run_allow_";
pub const SHADOW_DENY_STAT_PREFIX: &str = "istio_dry_run_deny_";
/// Upstream's `PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS` at its default: one CUSTOM
/// provider per workload; more turn every CUSTOM rule into a DENY.
const MULTIPLE_CUSTOM_PROVIDERS: bool = false;

/// Every authorization HTTP filter of an inbound HTTP chain in upstream's order: CUSTOM
/// first, then AUDIT, DENY and ALLOW. Upstream puts the authentication filters between the
/// two groups; [`custom_http_filters`] and [`local_http_filters`] give them separately.
pub fn http_filters(push: &PushContext, proxy: &Proxy) -> Vec<HttpFilter> {
    let mut out = custom_http_filters(push, proxy);
    out.extend(local_http_filters(push, proxy));
    out
}

/// The RBAC + ext_authz pairs of CUSTOM policies.
pub fn custom_http_filters(push: &PushContext, proxy: &Proxy) -> Vec<HttpFilter> {
    Builder::new(push, proxy).custom_http()
}

/// The RBAC filters of AUDIT, DENY and ALLOW policies.
pub fn local_http_filters(push: &PushContext, proxy: &Proxy) -> Vec<HttpFilter> {
    Builder::new(push, proxy).local(false, |r| vec![http_rbac(r)])
}

/// The network filters of an inbound TCP chain, CUSTOM first: rules needing HTTP are
/// dropped from ALLOW policies and loosened in DENY ones.
pub fn network_filters(push: &PushContext, proxy: &Proxy) -> Vec<Filter> {
    let b = Builder::new(push, proxy);
    let mut out = b.custom_tcp();
    out.extend(b.local(true, |r| vec![network_rbac(r)]));
    out
}

/// The policies of one proxy and what they are built with.
struct Builder<'a> {
    push: &'a PushContext,
    bundle: Bundle,
    policies: crate::model::authorization::Applicable,
}

/// Rules built for one action: enforced, and dry-run (shadow); `None` when no policy of
/// that kind exists. CUSTOM rules are kept per provider instead.
#[derive(Default)]
struct Built {
    rules: Option<Rbac>,
    shadow: Option<Rbac>,
    /// Provider → (enforced, dry-run) rules, for CUSTOM.
    providers: BTreeMap<String, (Rbac, Rbac)>,
}

impl<'a> Builder<'a> {
    fn new(push: &'a PushContext, proxy: &Proxy) -> Builder<'a> {
        Builder {
            push,
            bundle: Bundle::new(&push.mesh.trust_domain, &push.mesh.trust_domain_aliases),
            policies: push
                .authz_policies
                .applicable(&proxy.config_namespace, &proxy.labels),
        }
    }

    /// AUDIT, DENY and ALLOW filters, each translated by `to_filters`.
    fn local<T>(&self, for_tcp: bool, to_filters: impl Fn(&Built) -> Vec<T>) -> Vec<T> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for (policies, action) in [
            (&self.policies.audit, Action::Log),
            (&self.policies.deny, Action::Deny),
            (&self.policies.allow, Action::Allow),
        ] {
            if let Some(built) = self.build(policies, action, for_tcp, false, &mut errors) {
                out.extend(to_filters(&built));
            }
        }
        report(&errors);
        out
    }

    fn custom_http(&self) -> Vec<HttpFilter> {
        let mut errors = Vec::new();
        let Some(built) = self.build(
            &self.policies.custom,
            Action::Deny,
            false,
            true,
            &mut errors,
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let providers: Vec<&String> = built.providers.keys().collect();
        if providers.len() > 1 && !MULTIPLE_CUSTOM_PROVIDERS {
            errors.push(multiple_providers_error(&providers));
            for (rules, _) in built.providers.values() {
                out.push(http_rbac_filter(&bad_custom_http(rules)));
            }
            report(&errors);
            return out;
        }
        let resolved = ext_authz::resolve(self.push);
        for (provider, (rules, shadow)) in &built.providers {
            match lookup(&resolved, provider) {
                Err(e) => {
                    errors.push(format!(
                        "failed to process CUSTOM action for provider {provider}, will generate deny configs: {e}"
                    ));
                    out.push(http_rbac_filter(&bad_custom_http(rules)));
                }
                Ok(ext) => {
                    let rbac = HttpRbac {
                        shadow_rules: Some(rules.clone()),
                        shadow_rules_stat_prefix: SHADOW_STAT_PREFIX.into(),
                        rules: (!shadow.policies.is_empty()).then(|| shadow.clone()),
                        ..Default::default()
                    };
                    let mut http = ext.http.clone();
                    http.filter_enabled_metadata = Some(ext_authz::filter_enabled(
                        HTTP_RBAC_FILTER,
                        &format!("{MATCH_PREFIX}-{provider}"),
                    ));
                    out.push(http_rbac_filter(&rbac));
                    out.push(http_filter(HTTP_EXT_AUTHZ_FILTER, &http));
                }
            }
        }
        report(&errors);
        out
    }

    fn custom_tcp(&self) -> Vec<Filter> {
        let mut errors = Vec::new();
        let Some(built) = self.build(&self.policies.custom, Action::Deny, true, true, &mut errors)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let providers: Vec<&String> = built.providers.keys().collect();
        if providers.len() > 1 && !MULTIPLE_CUSTOM_PROVIDERS {
            errors.push(multiple_providers_error(&providers));
            for (rules, _) in built.providers.values() {
                out.push(network_rbac_filter(&bad_custom_tcp(rules)));
            }
            report(&errors);
            return out;
        }
        let resolved = ext_authz::resolve(self.push);
        for (provider, (rules, shadow)) in &built.providers {
            match lookup(&resolved, provider) {
                Err(e) => {
                    errors.push(format!(
                        "failed to process CUSTOM action for provider {provider}, will generate deny configs: {e}"
                    ));
                    out.push(network_rbac_filter(&bad_custom_tcp(rules)));
                }
                Ok(ext) => {
                    let Some(tcp) = &ext.tcp else {
                        tracing::debug!(
                            target: "authorization",
                            "ignored CUSTOM action with HTTP provider on TCP filter chain for provider {provider}"
                        );
                        continue;
                    };
                    let rbac = NetworkRbac {
                        shadow_rules: Some(rules.clone()),
                        stat_prefix: TCP_STAT_PREFIX.into(),
                        shadow_rules_stat_prefix: SHADOW_STAT_PREFIX.into(),
                        rules: (!shadow.policies.is_empty()).then(|| shadow.clone()),
                        ..Default::default()
                    };
                    let mut tcp = tcp.clone();
                    tcp.filter_enabled_metadata = Some(ext_authz::filter_enabled(
                        NETWORK_RBAC_FILTER,
                        &format!("{MATCH_PREFIX}-{provider}"),
                    ));
                    out.push(network_rbac_filter(&rbac));
                    out.push(network_filter(NETWORK_EXT_AUTHZ_FILTER, &tcp));
                }
            }
        }
        report(&errors);
        out
    }

    /// The RBAC rules of `policies` for `action`. Errors (null rules, unknown attributes,
    /// bad annotations) go to `errors`; rules that cannot be generated for this chain are
    /// left out, as [`Model::generate`] decides.
    fn build(
        &self,
        policies: &[Arc<AuthzPolicy>],
        action: Action,
        for_tcp: bool,
        custom: bool,
        errors: &mut Vec<String>,
    ) -> Option<Built> {
        if policies.is_empty() {
            return None;
        }
        let empty = || Rbac {
            action: action as i32,
            ..Default::default()
        };
        let mut enforce = empty();
        let mut shadow = empty();
        let (mut has_enforce, mut has_dry_run) = (false, false);
        let mut providers: BTreeMap<String, (Rbac, Rbac)> = BTreeMap::new();
        let chain = if for_tcp { "TCP" } else { "HTTP" };
        for policy in policies {
            let dry_run = dry_run(policy, errors);
            let provider = if custom {
                policy
                    .spec
                    .provider
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let target: &mut Rbac = if custom {
                let (e, s) = providers
                    .entry(provider.clone())
                    .or_insert_with(|| (empty(), empty()));
                if dry_run {
                    s
                } else {
                    e
                }
            } else if dry_run {
                has_dry_run = true;
                &mut shadow
            } else {
                has_enforce = true;
                &mut enforce
            };
            for (i, rule) in policy.spec.rules.iter().enumerate() {
                let name = policy_name(&policy.namespace, &policy.name, i, custom, &provider);
                let Some(rule) = rule else {
                    errors.push(format!("skipped nil rule {name}"));
                    continue;
                };
                let mut m = match Model::new(&policy.namespace, rule) {
                    Ok(m) => m,
                    Err(e) => {
                        errors.push(format!("skipped invalid rule {name}: {e}"));
                        continue;
                    }
                };
                m.migrate_trust_domain(&self.bundle);
                match m.generate(for_tcp, action) {
                    Ok(p) => {
                        tracing::debug!(target: "authorization", "generated config from rule {name} on {chain} filter chain successfully");
                        target.policies.insert(name, p);
                    }
                    Err(e) => tracing::debug!(
                        target: "authorization",
                        "skipped rule {name} on TCP filter chain: {e}"
                    ),
                }
            }
            if policy.spec.rules.is_empty() {
                // A policy without rules matches nothing, explicitly.
                let name = policy_name(&policy.namespace, &policy.name, 0, custom, &provider);
                target.policies.insert(name, match_never());
            }
        }
        Some(Built {
            rules: has_enforce.then_some(enforce),
            shadow: has_dry_run.then_some(shadow),
            providers,
        })
    }
}

/// `ns[<ns>]-policy[<name>]-rule[<i>]`, prefixed by `istio-ext-authz-<provider>-` for CUSTOM
/// (ext_authz finds its requests by that prefix).
pub fn policy_name(
    namespace: &str,
    name: &str,
    rule: usize,
    custom: bool,
    provider: &str,
) -> String {
    let prefix = match (custom, provider.is_empty()) {
        (false, _) => String::new(),
        (true, true) => format!("{MATCH_PREFIX}-"),
        (true, false) => format!("{MATCH_PREFIX}-{provider}-"),
    };
    format!("{prefix}ns[{namespace}]-policy[{name}]-rule[{rule}]")
}

/// `istio.io/dry-run` read as Go's `strconv.ParseBool`; anything else is not a dry run.
fn dry_run(policy: &AuthzPolicy, errors: &mut Vec<String>) -> bool {
    let Some(v) = policy.annotations.get(DRY_RUN_ANNOTATION) else {
        return false;
    };
    match v.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        other => {
            errors.push(format!(
                "failed to parse the value of {DRY_RUN_ANNOTATION}: invalid syntax {other:?}"
            ));
            false
        }
    }
}

/// The policy of a rule-less policy: no request matches it.
fn match_never() -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::NotRule(Box::new(Permission {
                rule: Some(permission::Rule::Any(true)),
            }))),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }))),
        }],
        ..Default::default()
    }
}

/// The shadow stat prefix upstream sets: by the shadow rules' action, ALLOW's when there
/// are none (the proto default).
fn shadow_stat_prefix(shadow: Option<&Rbac>) -> String {
    match shadow.map_or(Action::Allow as i32, |r| r.action) {
        a if a == Action::Allow as i32 => SHADOW_ALLOW_STAT_PREFIX.into(),
        a if a == Action::Deny as i32 => SHADOW_DENY_STAT_PREFIX.into(),
        _ => String::new(),
    }
}

fn http_rbac(b: &Built) -> HttpFilter {
    http_rbac_filter(&HttpRbac {
        rules: b.rules.clone(),
        shadow_rules: b.shadow.clone(),
        shadow_rules_stat_prefix: shadow_stat_prefix(b.shadow.as_ref()),
        ..Default::default()
    })
}

fn network_rbac(b: &Built) -> Filter {
    network_rbac_filter(&NetworkRbac {
        rules: b.rules.clone(),
        stat_prefix: TCP_STAT_PREFIX.into(),
        shadow_rules: b.shadow.clone(),
        shadow_rules_stat_prefix: shadow_stat_prefix(b.shadow.as_ref()),
        ..Default::default()
    })
}

fn http_rbac_filter(r: &HttpRbac) -> HttpFilter {
    let rest = HttpRbac {
        rules: None,
        shadow_rules: None,
        ..r.clone()
    };
    HttpFilter {
        name: HTTP_RBAC_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(rbac_any::<HttpRbac>(
            &rest,
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
        ))),
        ..Default::default()
    }
}

fn network_rbac_filter(r: &NetworkRbac) -> Filter {
    let rest = NetworkRbac {
        rules: None,
        shadow_rules: None,
        ..r.clone()
    };
    Filter {
        name: NETWORK_RBAC_FILTER.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(rbac_any::<NetworkRbac>(
            &rest,
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
        ))),
    }
}

/// An RBAC filter config packed with its policies in name order. prost writes a map in
/// its hash order, which differs between two builds of the same config; listeners must
/// encode the same way every push, or every push would look like a change. Both filter
/// kinds keep `rules` at field 1 and `shadow_rules` at field 2.
fn rbac_any<M: prost::Message + prost::Name>(
    rest: &M,
    rules: Option<&Rbac>,
    shadow: Option<&Rbac>,
) -> envoy_types::pb::google::protobuf::Any {
    let mut value = rest.encode_to_vec();
    for (tag, r) in [(1, rules), (2, shadow)] {
        if let Some(r) = r {
            let mut body = Vec::new();
            encode_rbac_sorted(r, &mut body);
            prost::encoding::encode_key(
                tag,
                prost::encoding::WireType::LengthDelimited,
                &mut value,
            );
            prost::encoding::encode_varint(body.len() as u64, &mut value);
            value.extend_from_slice(&body);
        }
    }
    envoy_types::pb::google::protobuf::Any {
        type_url: M::type_url(),
        value,
    }
}

/// `envoy.config.rbac.v3.RBAC` as prost encodes it, map entries sorted by key.
fn encode_rbac_sorted(r: &Rbac, buf: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, int32, message, string, WireType};
    if r.action != 0 {
        int32::encode(1, &r.action, buf);
    }
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    for name in names {
        let policy = &r.policies[name];
        // A map entry is a message: key at field 1, value at field 2, defaults left out.
        let key_len = if name.is_empty() {
            0
        } else {
            string::encoded_len(1, name)
        };
        let default_policy = *policy == Policy::default();
        let val_len = if default_policy {
            0
        } else {
            message::encoded_len(2, policy)
        };
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint((key_len + val_len) as u64, buf);
        if !name.is_empty() {
            string::encode(1, name, buf);
        }
        if !default_policy {
            message::encode(2, policy, buf);
        }
    }
    if let Some(a) = &r.audit_logging_options {
        message::encode(3, a, buf);
    }
}

/// DENY every request a CUSTOM rule would have sent to its (broken) provider.
fn bad_custom_deny(rules: &Rbac) -> Rbac {
    let policies: HashMap<String, Policy> = rules
        .policies
        .iter()
        .map(|(k, v)| (format!("{k}{BAD_CUSTOM_SUFFIX}"), v.clone()))
        .collect();
    Rbac {
        action: Action::Deny as i32,
        policies,
        ..Default::default()
    }
}

fn bad_custom_http(rules: &Rbac) -> HttpRbac {
    HttpRbac {
        rules: Some(bad_custom_deny(rules)),
        ..Default::default()
    }
}

fn bad_custom_tcp(rules: &Rbac) -> NetworkRbac {
    NetworkRbac {
        rules: Some(bad_custom_deny(rules)),
        stat_prefix: TCP_STAT_PREFIX.into(),
        ..Default::default()
    }
}

fn multiple_providers_error(providers: &[&String]) -> String {
    format!(
        "multiple CUSTOM authorization providers per workload requires \
         PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS feature flag, found {} providers: {providers:?}",
        providers.len()
    )
}

fn lookup<'r>(
    resolved: &'r BTreeMap<String, Result<ext_authz::Built, String>>,
    provider: &str,
) -> Result<&'r ext_authz::Built, String> {
    match resolved.get(provider) {
        None => Err(format!(
            "available providers are {:?} but found {provider:?}",
            resolved.keys().collect::<Vec<_>>()
        )),
        Some(Err(e)) => Err(format!("found errors in provider {provider}: {e}")),
        Some(Ok(b)) => Ok(b),
    }
}

fn http_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// Upstream logs every problem of one build as one error.
fn report(errors: &[String]) {
    if !errors.is_empty() {
        tracing::error!(
            target: "authorization",
            "Processed authorization policy: {}",
            errors.join("; ")
        );
    }
}

#[cfg(test)]
mod tests;
