//! RequestAuthentication → the `envoy.filters.http.jwt_authn` HTTP filter of a sidecar's
//! inbound connection managers. A pure function of the push context and the proxy: the
//! keys come from the push context's [`super::jwks::JwksKeys`] snapshot, never from the
//! network.
//!
//! Semantics are upstream's: every rule of every policy that selects the workload becomes
//! a provider `origins-<i>` (rules sorted by issuer); a request without a token passes, a
//! request with a token that no provider accepts is rejected (401). Authorization policies
//! then match on what the filter verified.
//!
//! # No `istio_authn` filter
//!
//! Istio up to 1.20 put a second filter, `istio_authn`
//! (`istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig`), after the JWT filter to
//! copy the verified payload into `istio_authn` metadata (`request.auth.principal`,
//! `request.auth.claims`). Proxies from 1.21 on do without it: the JWT filter itself writes
//! the payload to its own metadata, `envoy.filters.http.jwt_authn` under the key
//! [`JWT_PAYLOAD_METADATA_KEY`] (`payload`), with `scope` and `permission` (and any
//! `spaceDelimitedClaims`) split into lists, and RBAC matches there: a request principal
//! is `payload.iss` + `/` + `payload.sub`, a claim is `payload.<claim>`. Upstream stopped
//! generating `istio_authn` altogether in 1.24. We generate the current form only: every
//! istio-proxy a current control plane supports understands it, it works with a stock
//! Envoy (which has no `istio_authn` filter and would reject a listener naming one), and
//! the 1.20-and-older proxies that needed `istio_authn` are past their support window.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{data_source, http_uri, DataSource, HttpUri};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{route_match::PathSpecifier, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::{JwksSourceSpecifier, NormalizePayload},
    jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RemoteJwks, RequirementRule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, Empty};
use prost::{Message, Name};

use super::jwks::{JwksFetchMode, JwksSource, PUBLIC_ONLY_JWKS};
use crate::config::istio::authn::JwtRule;
use crate::model::proxy::NodeType;
use crate::model::{Proxy, PushContext};
use crate::xds::gen::filters::{any, HCM_FILTER};
use crate::xds::gen::naming::{cluster_name, Direction};

/// The JWT filter's name; also the dynamic metadata namespace it writes.
pub const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The key, in [`JWT_AUTHN_FILTER`] metadata, of the verified token's payload.
pub const JWT_PAYLOAD_METADATA_KEY: &str = "payload";
/// Claims always split on spaces into lists (OAuth scopes and permissions).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["permission", "scope"];
/// How long Envoy keeps keys it fetched itself (remote JWKS modes).
const REMOTE_JWKS_CACHE: Duration = Duration::from_secs(5 * 60);

/// The HTTP filters RequestAuthentication adds, first, to a sidecar's inbound connection
/// managers: the JWT filter when some policy selects the proxy, else none.
pub fn http_filters(push: &PushContext, proxy: &Proxy) -> Vec<HttpFilter> {
    if proxy.kind != NodeType::Sidecar {
        return Vec::new();
    }
    let policies = push.request_authentications_for(&proxy.config_namespace, &proxy.labels);
    let rules: Vec<&JwtRule> = policies.iter().flat_map(|p| &p.spec.jwt_rules).collect();
    // Sidecars never route on claims, so the route cache is left alone.
    jwt_authentication(push, rules, false)
        .map(|config| HttpFilter {
            name: JWT_AUTHN_FILTER.to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(encode(&config))),
            ..Default::default()
        })
        .into_iter()
        .collect()
}

/// The JWT filter config enforcing `rules`: `None` without rules.
pub fn jwt_authentication(
    push: &PushContext,
    mut rules: Vec<&JwtRule>,
    clear_route_cache: bool,
) -> Option<JwtAuthentication> {
    if rules.is_empty() {
        return None;
    }
    // Stable: rules of one issuer keep their policy order.
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let mut providers = std::collections::HashMap::new();
    // Per provider "this provider, or no token at all", ANDed: a token present must verify.
    let mut each_valid_or_missing = Vec::new();
    // Any provider alone: rules sharing a token location would fail the AND (a token meant
    // for one issuer is a failure for the other), so one verifying provider is enough.
    let mut any_provider = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(push, rule, clear_route_cache));
        each_valid_or_missing.push(requires_any(vec![
            provider_requirement(&name),
            JwtRequirement {
                requires_type: Some(RequiresType::AllowMissing(Empty {})),
            },
        ]));
        any_provider.push(provider_requirement(&name));
    }
    let requires = if each_valid_or_missing.len() == 1 {
        each_valid_or_missing.remove(0)
    } else {
        any_provider.push(JwtRequirement {
            requires_type: Some(RequiresType::RequiresAll(JwtRequirementAndList {
                requirements: each_valid_or_missing,
            })),
        });
        requires_any(any_provider)
    };
    Some(JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    })
}

fn provider_requirement(name: &str) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(RequiresType::ProviderName(name.to_owned())),
    }
}

fn requires_any(requirements: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements,
        })),
    }
}

fn provider(push: &PushContext, rule: &JwtRule, clear_route_cache: bool) -> JwtProvider {
    let mut claims: Vec<String> = SPACE_DELIMITED_CLAIMS.map(str::to_owned).to_vec();
    if !rule.space_delimited_claims.is_empty() {
        claims.extend(rule.space_delimited_claims.iter().cloned());
        claims.sort();
        claims.dedup();
    }
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        forward_payload_header: rule.output_payload_to_header.clone(),
        payload_in_metadata: JWT_PAYLOAD_METADATA_KEY.to_owned(),
        normalize_payload_in_metadata: Some(NormalizePayload {
            space_delimited_claims: claims,
        }),
        clear_route_cache,
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        jwks_source_specifier: Some(jwks_source(push, rule)),
        ..Default::default()
    }
}

/// Where Envoy gets a rule's keys: inline (the rule's `jwks`, else what istiod fetched,
/// else a key set nothing verifies against), or, in the remote modes, from the `jwksUri`
/// itself through a cluster of the mesh.
fn jwks_source(push: &PushContext, rule: &JwtRule) -> JwksSourceSpecifier {
    if let Some(cluster) = remote_cluster(push, rule) {
        let timeout = rule.timeout();
        return JwksSourceSpecifier::RemoteJwks(RemoteJwks {
            http_uri: Some(HttpUri {
                uri: rule.jwks_uri.clone(),
                timeout: Some(pb_duration(timeout)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
            }),
            cache_duration: Some(pb_duration(REMOTE_JWKS_CACHE)),
            ..Default::default()
        });
    }
    let keys = if !rule.jwks.is_empty() {
        rule.jwks.clone()
    } else {
        push.jwks
            .get(&source_of(rule))
            .unwrap_or(PUBLIC_ONLY_JWKS)
            .to_owned()
    };
    JwksSourceSpecifier::LocalJwks(DataSource {
        specifier: Some(data_source::Specifier::InlineString(keys)),
        ..Default::default()
    })
}

/// The cluster Envoy fetches a rule's `jwksUri` through, when the fetch mode leaves it to
/// Envoy: the URI's service in the mesh; in `envoy` mode the cluster that service would
/// have even when there is none (the fetch then fails, as upstream's does).
fn remote_cluster(push: &PushContext, rule: &JwtRule) -> Option<String> {
    let mode = push.jwks.mode;
    if mode == JwksFetchMode::Istiod || rule.jwks_uri.is_empty() || !rule.jwks.is_empty() {
        return None;
    }
    let (host, port) = uri_host_port(&rule.jwks_uri)?;
    match push.service(&host) {
        Some(svc) => Some(cluster_name(Direction::Outbound, port, "", &svc.hostname)),
        None if mode == JwksFetchMode::Envoy => {
            Some(cluster_name(Direction::Outbound, port, "", &host))
        }
        None => None,
    }
}

/// Host and port of an `http`/`https` URI (80 and 443 when it names none).
fn uri_host_port(uri: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(uri).ok()?;
    let port = url.port_or_known_default()?;
    matches!(url.scheme(), "http" | "https").then_some(())?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_owned(), port))
}

fn source_of(rule: &JwtRule) -> JwksSource {
    JwksSource {
        issuer: rule.issuer.clone(),
        jwks_uri: rule.jwks_uri.clone(),
    }
}

/// The sources istiod must fetch for the push: rules without inline keys that the fetch
/// mode does not leave to Envoy, with the longest timeout any of them asks for.
pub fn istiod_fetched_sources(push: &PushContext) -> BTreeMap<JwksSource, Duration> {
    let mut out: BTreeMap<JwksSource, Duration> = BTreeMap::new();
    for policy in push.request_authentications() {
        for rule in &policy.spec.jwt_rules {
            let nothing_to_fetch = rule.issuer.is_empty() && rule.jwks_uri.is_empty();
            if !rule.jwks.is_empty() || nothing_to_fetch || remote_cluster(push, rule).is_some() {
                continue;
            }
            let timeout = out.entry(source_of(rule)).or_default();
            *timeout = (*timeout).max(rule.timeout());
        }
    }
    out
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Packs the config with its providers in name order: prost writes a `HashMap` in hash
/// order, and the listener's bytes (its content version) must not change from one push
/// to the next when nothing else did, or Envoy would drain it for nothing.
fn encode(config: &JwtAuthentication) -> Any {
    use prost::encoding::{btree_map, message, string};
    let mut rest = config.clone();
    let providers: BTreeMap<String, JwtProvider> =
        std::mem::take(&mut rest.providers).into_iter().collect();
    let mut value = rest.encode_to_vec();
    btree_map::encode(
        |tag, k: &String, buf: &mut Vec<u8>| string::encode(tag, k, buf),
        string::encoded_len,
        |tag, v: &JwtProvider, buf: &mut Vec<u8>| message::encode(tag, v, buf),
        message::encoded_len,
        // `JwtAuthentication.providers` is field 1.
        1,
        &providers,
        &mut value,
    );
    Any {
        type_url: JwtAuthentication::type_url(),
        value,
    }
}

/// Puts [`http_filters`] first in every HTTP connection manager of `listener` (the
/// sidecar's `virtualInbound`: its per-port chains and its catch-all HTTP chain), ahead of
/// RBAC, which matches on what the JWT filter verified. One pass over the finished
/// listener, so it holds whatever chains the listener builder makes.
pub fn add_to_inbound(push: &PushContext, proxy: &Proxy, listener: &mut Listener) {
    let authn = http_filters(push, proxy);
    if authn.is_empty() {
        return;
    }
    for f in listener
        .filter_chains
        .iter_mut()
        .flat_map(|c| &mut c.filters)
    {
        if f.name != HCM_FILTER {
            continue;
        }
        let Some(filter::ConfigType::TypedConfig(config)) = &mut f.config_type else {
            continue;
        };
        let Ok(mut hcm) = HttpConnectionManager::decode(config.value.as_slice()) else {
            continue;
        };
        hcm.http_filters.splice(0..0, authn.iter().cloned());
        *config = any(&hcm);
    }
}

#[cfg(test)]
mod tests;
