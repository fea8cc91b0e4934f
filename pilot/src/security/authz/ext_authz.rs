//! CUSTOM authorization: the mesh's `envoyExtAuthzHttp` / `envoyExtAuthzGrpc` extension
//! providers as Envoy `ext_authz` filters, enabled only for requests an RBAC shadow rule of
//! that provider matched.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    grpc_service, http_uri, ApiVersion, GrpcService, HeaderValue, HttpUri,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as tcp;
use envoy_types::pb::envoy::r#type::matcher::v3::{ListStringMatcher, MetadataMatcher};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};

use super::matcher;
use crate::model::mesh::{ExtAuthzRequestBody, ExtensionProvider};
use crate::model::PushContext;
use crate::xds::gen::naming::{cluster_name, Direction};
use crate::xds::gen::route::duration;

/// Prefix of the policy names of CUSTOM rules, and of the metadata ext_authz checks.
pub const MATCH_PREFIX: &str = "istio-ext-authz";
/// Suffix of the DENY policies that stand in for a CUSTOM rule whose provider is broken.
pub const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";
/// Shadow stat prefix of the CUSTOM RBAC filter; with it, the key of the policy that matched.
pub const SHADOW_STAT_PREFIX: &str = "istio_ext_authz_";
const SHADOW_EFFECTIVE_POLICY_ID: &str = "shadow_effective_policy_id";
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";

/// The ext_authz configs of one provider: HTTP always, TCP only for gRPC providers.
#[derive(Debug, Clone)]
pub struct Built {
    pub http: http::ExtAuthz,
    pub tcp: Option<tcp::ExtAuthz>,
}

/// Every ext_authz provider of the mesh by name, each built or with the reason it could not
/// be. Providers of other kinds are left out.
pub fn resolve(push: &PushContext) -> BTreeMap<String, Result<Built, String>> {
    let mut out: BTreeMap<String, Result<Built, String>> = BTreeMap::new();
    for (i, p) in push.mesh.extension_providers.iter().enumerate() {
        let mut errs = Vec::new();
        if p.name.is_empty() {
            errs.push(format!(
                "extension provider name must not be empty, found empty at index: {i}"
            ));
        } else if out.contains_key(&p.name) {
            errs.push(format!(
                "extension provider name must be unique, found duplicate: {}",
                p.name
            ));
        }
        if !p.name.is_empty() {
            if let Err(e) = validate_provider_name(&p.name) {
                errs.push(format!("invalid provider name {:?}: {e}", p.name));
            }
        }
        let built = match build(push, p) {
            None => continue,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                errs.push(format!(
                    "failed to parse extension provider {:?}: {e}",
                    p.name
                ));
                None
            }
        };
        let entry = match (built, errs.is_empty()) {
            (Some(b), true) => Ok(b),
            _ => Err(errs.join("; ")),
        };
        out.insert(p.name.clone(), entry);
    }
    out
}

/// Provider names go into metadata keys and policy names: a DNS-1123 label.
fn validate_provider_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "provider name too long (max 63 characters): {}",
            name.len()
        ));
    }
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            return Err(format!(
                "uppercase letters not allowed (use lowercase): character {c:?} at position {i}"
            ));
        }
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(format!(
                "invalid character {c:?} at position {i} (only lowercase letters, digits, and hyphens allowed)"
            ));
        }
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("provider name cannot start or end with hyphen".into());
    }
    Ok(())
}

fn build(push: &PushContext, p: &ExtensionProvider) -> Option<Result<Built, String>> {
    if let Some(h) = &p.envoy_ext_authz_http {
        return Some(build_http(push, h));
    }
    p.envoy_ext_authz_grpc.as_ref().map(|g| build_grpc(push, g))
}

fn build_http(
    push: &PushContext,
    c: &crate::model::mesh::ExtAuthzHttpProvider,
) -> Result<Built, String> {
    let mut errs = Vec::new();
    let cluster = common(push, &c.service, c.port, &c.status_on_error, &mut errs);
    if !c.path_prefix.is_empty() && !c.path_prefix.starts_with('/') {
        errs.push(format!(
            "pathPrefix must begin with `/`, found: {:?}",
            c.path_prefix
        ));
    }
    for (field, values) in [
        (
            "IncludeRequestHeadersInCheck",
            &c.include_request_headers_in_check,
        ),
        ("IncludeHeadersInCheck", &c.include_headers_in_check),
        (
            "HeadersToDownstreamOnDeny",
            &c.headers_to_downstream_on_deny,
        ),
        (
            "HeadersToDownstreamOnAllow",
            &c.headers_to_downstream_on_allow,
        ),
        ("HeadersToUpstreamOnAllow", &c.headers_to_upstream_on_allow),
    ] {
        if values.iter().any(|v| v == "*") {
            errs.push(format!(
                "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match: {field}"
            ));
        }
    }
    let timeout = timeout(c.timeout.as_deref(), &mut errs);
    let (hostname, cluster, status) = match (cluster, errs.is_empty()) {
        (Some(v), true) => v,
        _ => return Err(errs.join("; ")),
    };
    let headers_to_add: Vec<HeaderValue> = c
        .include_additional_headers_in_check
        .iter()
        .map(|(k, v)| HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        })
        .collect();
    let authorization_response = (!c.headers_to_upstream_on_allow.is_empty()
        || !c.headers_to_downstream_on_deny.is_empty()
        || !c.headers_to_downstream_on_allow.is_empty())
    .then(|| http::AuthorizationResponse {
        allowed_upstream_headers: header_list(&c.headers_to_upstream_on_allow),
        allowed_client_headers: header_list(&c.headers_to_downstream_on_deny),
        allowed_client_headers_on_success: header_list(&c.headers_to_downstream_on_allow),
        ..Default::default()
    });
    let service = http::HttpService {
        path_prefix: c.path_prefix.clone(),
        server_uri: Some(HttpUri {
            // Required by Envoy though the filter only uses the cluster.
            uri: format!("http://{hostname}"),
            timeout: Some(timeout),
            http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
        }),
        authorization_request: (!headers_to_add.is_empty()).then(|| http::AuthorizationRequest {
            headers_to_add,
            ..Default::default()
        }),
        authorization_response,
        ..Default::default()
    };
    let allowed_headers = header_list(&c.include_request_headers_in_check)
        .or_else(|| header_list(&c.include_headers_in_check));
    Ok(Built {
        http: http::ExtAuthz {
            status_on_error: status,
            failure_mode_allow: c.fail_open,
            transport_api_version: ApiVersion::V3 as i32,
            services: Some(http::ext_authz::Services::HttpService(service)),
            filter_enabled_metadata: Some(filter_enabled(HTTP_RBAC_FILTER, MATCH_PREFIX)),
            with_request_body: body(c.include_request_body_in_check.as_ref()),
            allowed_headers,
            ..Default::default()
        },
        tcp: None,
    })
}

fn build_grpc(
    push: &PushContext,
    c: &crate::model::mesh::ExtAuthzGrpcProvider,
) -> Result<Built, String> {
    let mut errs = Vec::new();
    let cluster = common(push, &c.service, c.port, &c.status_on_error, &mut errs);
    let timeout = timeout(c.timeout.as_deref(), &mut errs);
    let (hostname, cluster, status) = match (cluster, errs.is_empty()) {
        (Some(v), true) => v,
        _ => return Err(errs.join("; ")),
    };
    let grpc = GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
            grpc_service::EnvoyGrpc {
                cluster_name: cluster,
                authority: hostname,
                ..Default::default()
            },
        )),
        timeout: Some(timeout),
        ..Default::default()
    };
    Ok(Built {
        http: http::ExtAuthz {
            status_on_error: status,
            failure_mode_allow: c.fail_open,
            services: Some(http::ext_authz::Services::GrpcService(grpc.clone())),
            filter_enabled_metadata: Some(filter_enabled(HTTP_RBAC_FILTER, MATCH_PREFIX)),
            transport_api_version: ApiVersion::V3 as i32,
            with_request_body: body(c.include_request_body_in_check.as_ref()),
            ..Default::default()
        },
        tcp: Some(tcp::ExtAuthz {
            stat_prefix: "tcp.".into(),
            failure_mode_allow: c.fail_open,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_service: Some(grpc),
            filter_enabled_metadata: Some(filter_enabled(NETWORK_RBAC_FILTER, MATCH_PREFIX)),
            ..Default::default()
        }),
    })
}

/// Port, service and status checks shared by both kinds: the service's host name and
/// outbound cluster, and the status to answer when the server fails.
fn common(
    push: &PushContext,
    service: &str,
    port: u32,
    status_on_error: &str,
    errs: &mut Vec<String>,
) -> Option<(String, String, Option<HttpStatus>)> {
    let port_ok = (1..=65535).contains(&port);
    if !port_ok {
        errs.push(format!(
            "port must be in the range [1, 65535], found: {port}"
        ));
    }
    let hostname = match lookup_service(push, service) {
        Ok(h) => Some(h),
        Err(e) => {
            errs.push(e);
            None
        }
    };
    let status = match status_on_error {
        "" => None,
        s => match s.parse::<i32>() {
            Ok(code) if StatusCode::try_from(code).is_ok() && code != 0 => {
                Some(HttpStatus { code })
            }
            Ok(_) => {
                errs.push(format!("unsupported statusOnError {s}"));
                None
            }
            Err(e) => {
                errs.push(format!("invalid statusOnError {s:?}: {e}"));
                None
            }
        },
    };
    let hostname = hostname?;
    if !port_ok {
        return None;
    }
    let cluster = cluster_name(Direction::Outbound, port as u16, "", &hostname);
    Some((hostname, cluster, status))
}

/// A provider's `service`: `<namespace>/<host>`, or a host found in exactly one namespace.
fn lookup_service(push: &PushContext, service: &str) -> Result<String, String> {
    if service.is_empty() {
        return Err("service must not be empty".into());
    }
    let (namespace, host) = match service.split_once('/') {
        Some((ns, h)) if !h.contains('/') => (Some(ns), h),
        _ => (None, service),
    };
    let namespaces: Vec<&str> = push
        .services
        .iter()
        .filter(|s| s.hostname == host)
        .map(|s| s.namespace.as_str())
        .collect();
    match (namespace, namespaces.as_slice()) {
        (Some(ns), found) if found.contains(&ns) => return Ok(host.to_owned()),
        (None, [_]) => return Ok(host.to_owned()),
        (None, found) if found.len() > 1 => {
            return Err(format!(
                "found {service} in multiple namespaces {found:?}, specify the namespace \
                 explicitly in the format of <Namespace>/<Hostname>"
            ))
        }
        _ => {}
    }
    Err(format!(
        "could not find service {service} in Istio service registry"
    ))
}

/// A provider's timeout; 600s when unset.
fn timeout(t: Option<&str>, errs: &mut Vec<String>) -> envoy_types::pb::google::protobuf::Duration {
    let d = match t {
        None => Duration::from_secs(600),
        Some(s) => crate::config::istio::parse_duration(s).unwrap_or_else(|| {
            errs.push(format!("invalid timeout {s:?}"));
            Duration::from_secs(600)
        }),
    };
    duration(d)
}

fn body(b: Option<&ExtAuthzRequestBody>) -> Option<http::BufferSettings> {
    b.map(|b| http::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    })
}

/// Header names compared case-insensitively, with `*` prefix/suffix globs.
fn header_list(headers: &[String]) -> Option<ListStringMatcher> {
    if headers.is_empty() {
        return None;
    }
    let patterns = headers
        .iter()
        .map(|h| {
            if let Some(rest) = h.strip_prefix('*') {
                matcher::suffix(rest, true)
            } else if let Some(rest) = h.strip_suffix('*') {
                matcher::prefix(rest, true)
            } else {
                matcher::exact(h, true)
            }
        })
        .collect();
    Some(ListStringMatcher { patterns })
}

/// "The RBAC filter `filter` recorded a shadow match whose policy name starts with
/// `prefix`": the condition on which ext_authz runs.
pub fn filter_enabled(filter: &str, prefix: &str) -> MetadataMatcher {
    matcher::metadata(
        filter,
        &[&format!("{SHADOW_STAT_PREFIX}{SHADOW_EFFECTIVE_POLICY_ID}")],
        matcher::string_value(matcher::prefix(prefix, false)),
    )
}
