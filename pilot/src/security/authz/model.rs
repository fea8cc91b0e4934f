//! One AuthorizationPolicy rule as an Envoy RBAC [`Policy`]: `from` sources become
//! principals, `to` operations permissions, and each `when` condition joins whichever side
//! its attribute belongs to, as upstream's authz model consolidates them.

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, principal::Authenticated, rbac::Action, Permission, Policy, Principal,
};
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, value_matcher, ListMatcher, MetadataMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::matcher;
use super::trust_domain::Bundle;
use crate::config::istio::security::Rule;
use crate::xds::gen::filters::any;

/// The filter whose dynamic metadata holds a verified JWT, and the key of its payload.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub const JWT_PAYLOAD: &str = "payload";

const ATTR_REQUEST_HEADER: &str = "request.headers";
const ATTR_SRC_IP: &str = "source.ip";
const ATTR_REMOTE_IP: &str = "remote.ip";
const ATTR_SRC_NAMESPACE: &str = "source.namespace";
const ATTR_SRC_SERVICE_ACCOUNT: &str = "source.serviceAccount";
const ATTR_SRC_TRUST_DOMAIN: &str = "source.trustDomain";
const ATTR_SRC_PRINCIPAL: &str = "source.principal";
const ATTR_REQUEST_PRINCIPAL: &str = "request.auth.principal";
const ATTR_REQUEST_AUDIENCES: &str = "request.auth.audiences";
const ATTR_REQUEST_PRESENTER: &str = "request.auth.presenter";
const ATTR_REQUEST_CLAIMS: &str = "request.auth.claims";
const ATTR_DEST_IP: &str = "destination.ip";
const ATTR_DEST_PORT: &str = "destination.port";
const ATTR_CONN_SNI: &str = "connection.sni";
const ATTR_ENVOY_FILTER: &str = "experimental.envoy.filters.";

const METHOD_HEADER: &str = ":method";
const HOST_HEADER: &str = ":authority";
const PATH_KEY: &str = "path-matcher";
const MATCH_ONE_TEMPLATE: &str = "{*}";
const MATCH_ANY_TEMPLATE: &str = "{**}";

/// Why (part of) a rule could not be turned into RBAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("unknown attribute {0}")]
    UnknownAttribute(String),
    #[error("{0:?} is HTTP only")]
    HttpOnly(String),
    #[error("invalid port {0}")]
    Port(String),
    #[error("invalid IP address or CIDR {0:?}")]
    Cidr(String),
    #[error("expecting format [<NAME>], but found {0}")]
    Brackets(String),
    #[error("invalid key: {0}")]
    Key(String),
}

/// How the values of a permission attribute become matchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermissionKind {
    DestIp,
    DestPort,
    ConnSni,
    /// `experimental.envoy.filters.<filter>[<key>]`: all values in one metadata matcher.
    EnvoyFilter,
    Host,
    Path,
    Method,
}

/// How the values of a principal attribute become matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalKind {
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcTrustDomain,
    /// Service accounts without a namespace are in the policy's.
    SrcServiceAccount,
    SrcPrincipal,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestHeader,
    RequestClaims,
}

impl PrincipalKind {
    /// Kinds whose values are matched together by one matcher, not OR-ed one by one.
    fn aggregates(&self) -> bool {
        matches!(
            self,
            PrincipalKind::RequestPrincipal
                | PrincipalKind::RequestAudiences
                | PrincipalKind::RequestPresenter
                | PrincipalKind::RequestClaims
        )
    }
}

/// One attribute of a rule with the values it must, and must not, have.
#[derive(Debug, Clone)]
struct Attr<K> {
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
    kind: K,
}

fn attr<K>(kind: K, key: &str, values: &[String], not_values: &[String]) -> Option<Attr<K>> {
    (!values.is_empty() || !not_values.is_empty()).then(|| Attr {
        key: key.to_owned(),
        values: values.to_vec(),
        not_values: not_values.to_vec(),
        kind,
    })
}

/// A rule ready to generate: one permission list per `to` (or one), one principal list per
/// `from` (or one), each an AND of attributes.
#[derive(Debug, Clone)]
pub struct Model {
    policy_namespace: String,
    permissions: Vec<Vec<Attr<PermissionKind>>>,
    principals: Vec<Vec<Attr<PrincipalKind>>>,
    /// How many attributes at the end of each principal list come from `when`.
    when_principals: usize,
}

impl Model {
    /// Reads a rule of a policy in `policy_namespace`. An unknown `when` key rejects the
    /// whole rule, whatever the action.
    pub fn new(policy_namespace: &str, rule: &Rule) -> Result<Model, RuleError> {
        let mut base_permission = Vec::new();
        let mut base_principal = Vec::new();
        for when in &rule.when {
            let k = when.key.as_str();
            let (v, nv) = (&when.values, &when.not_values);
            let perm = |kind| attr(kind, k, v, nv);
            let princ = |kind| attr(kind, k, v, nv);
            match k {
                ATTR_DEST_IP => base_permission.extend(perm(PermissionKind::DestIp)),
                ATTR_DEST_PORT => base_permission.extend(perm(PermissionKind::DestPort)),
                ATTR_CONN_SNI => base_permission.extend(perm(PermissionKind::ConnSni)),
                _ if k.starts_with(ATTR_ENVOY_FILTER) => {
                    base_permission.extend(perm(PermissionKind::EnvoyFilter))
                }
                ATTR_SRC_IP => base_principal.extend(princ(PrincipalKind::SrcIp)),
                ATTR_REMOTE_IP => base_principal.extend(princ(PrincipalKind::RemoteIp)),
                ATTR_SRC_NAMESPACE => base_principal.extend(princ(PrincipalKind::SrcNamespace)),
                ATTR_SRC_TRUST_DOMAIN => {
                    base_principal.extend(princ(PrincipalKind::SrcTrustDomain))
                }
                ATTR_SRC_SERVICE_ACCOUNT => {
                    base_principal.extend(princ(PrincipalKind::SrcServiceAccount))
                }
                ATTR_SRC_PRINCIPAL => base_principal.extend(princ(PrincipalKind::SrcPrincipal)),
                ATTR_REQUEST_PRINCIPAL => {
                    base_principal.extend(princ(PrincipalKind::RequestPrincipal))
                }
                ATTR_REQUEST_AUDIENCES => {
                    base_principal.extend(princ(PrincipalKind::RequestAudiences))
                }
                ATTR_REQUEST_PRESENTER => {
                    base_principal.extend(princ(PrincipalKind::RequestPresenter))
                }
                _ if k.starts_with(ATTR_REQUEST_HEADER) => {
                    base_principal.extend(princ(PrincipalKind::RequestHeader))
                }
                _ if k.starts_with(ATTR_REQUEST_CLAIMS) => {
                    base_principal.extend(princ(PrincipalKind::RequestClaims))
                }
                _ => return Err(RuleError::UnknownAttribute(k.to_owned())),
            }
        }

        let when_principals = base_principal.len();
        // Source and operation fields come first, in upstream's order, then the conditions.
        let principals = if rule.from.is_empty() {
            vec![base_principal]
        } else {
            rule.from
                .iter()
                .map(|from| {
                    let mut list = Vec::new();
                    if let Some(s) = &from.source {
                        use PrincipalKind as P;
                        let fields = [
                            (
                                P::SrcPrincipal,
                                ATTR_SRC_PRINCIPAL,
                                &s.principals,
                                &s.not_principals,
                            ),
                            (
                                P::RequestPrincipal,
                                ATTR_REQUEST_PRINCIPAL,
                                &s.request_principals,
                                &s.not_request_principals,
                            ),
                            (
                                P::SrcServiceAccount,
                                ATTR_SRC_SERVICE_ACCOUNT,
                                &s.service_accounts,
                                &s.not_service_accounts,
                            ),
                            (
                                P::SrcTrustDomain,
                                ATTR_SRC_TRUST_DOMAIN,
                                &s.trust_domains,
                                &s.not_trust_domains,
                            ),
                            (
                                P::SrcNamespace,
                                ATTR_SRC_NAMESPACE,
                                &s.namespaces,
                                &s.not_namespaces,
                            ),
                            (
                                P::RemoteIp,
                                ATTR_REMOTE_IP,
                                &s.remote_ip_blocks,
                                &s.not_remote_ip_blocks,
                            ),
                            (P::SrcIp, ATTR_SRC_IP, &s.ip_blocks, &s.not_ip_blocks),
                        ];
                        for (kind, key, v, nv) in fields {
                            list.extend(attr(kind, key, v, nv));
                        }
                    }
                    list.extend(base_principal.iter().cloned());
                    list
                })
                .collect()
        };
        let permissions = if rule.to.is_empty() {
            vec![base_permission]
        } else {
            rule.to
                .iter()
                .map(|to| {
                    let mut list = Vec::new();
                    if let Some(o) = &to.operation {
                        use PermissionKind as P;
                        let fields = [
                            (P::Host, HOST_HEADER, &o.hosts, &o.not_hosts),
                            (P::Method, METHOD_HEADER, &o.methods, &o.not_methods),
                            (P::Path, PATH_KEY, &o.paths, &o.not_paths),
                            (P::DestPort, ATTR_DEST_PORT, &o.ports, &o.not_ports),
                        ];
                        for (kind, key, v, nv) in fields {
                            list.extend(attr(kind, key, v, nv));
                        }
                    }
                    list.extend(base_permission.iter().cloned());
                    list
                })
                .collect()
        };
        Ok(Model {
            policy_namespace: policy_namespace.to_owned(),
            permissions,
            principals,
            when_principals,
        })
    }

    /// Spells source principals (and trust domains) out for every trust domain alias.
    ///
    /// Upstream shares the `when` attributes between the `from` lists and migrates them
    /// once per list; with aliases that repeats values, which is kept for identical output.
    pub fn migrate_trust_domain(&mut self, bundle: &Bundle) {
        let lists = self.principals.len();
        for list in &mut self.principals {
            let front = list.len() - self.when_principals;
            for (i, a) in list.iter_mut().enumerate() {
                let times = if i < front { 1 } else { lists };
                for _ in 0..times {
                    migrate(a, bundle);
                }
            }
        }
    }

    /// The RBAC policy of the rule for an HTTP or (`for_tcp`) a TCP filter chain.
    ///
    /// An attribute that cannot be generated (HTTP-only on TCP, a bad value) fails the whole
    /// rule for ALLOW, so that an allow never grows wider; for DENY and LOG (and CUSTOM,
    /// built as DENY) only that attribute is left out, so the rule matches more.
    pub fn generate(&self, for_tcp: bool, action: Action) -> Result<Policy, RuleError> {
        let check = |r| check(action, r);
        let check_p = |r| check_principal(action, r);
        let mut permissions = Vec::new();
        for list in &self.permissions {
            let mut and = Vec::new();
            for a in list {
                if !a.values.is_empty() {
                    let mut or = Vec::new();
                    if a.kind == PermissionKind::EnvoyFilter {
                        or.extend(check(envoy_filter_permission(&a.key, &a.values))?);
                        and.extend(or);
                    } else {
                        for v in &a.values {
                            or.extend(check(permission_of(a.kind, &a.key, v, for_tcp))?);
                        }
                        if !or.is_empty() {
                            and.push(perm_or(or));
                        }
                    }
                }
                if !a.not_values.is_empty() {
                    if a.kind == PermissionKind::EnvoyFilter {
                        if let Some(p) = check(envoy_filter_permission(&a.key, &a.not_values))? {
                            and.push(perm_not(p));
                        }
                    } else {
                        let mut or = Vec::new();
                        for v in &a.not_values {
                            or.extend(check(permission_of(a.kind, &a.key, v, for_tcp))?);
                        }
                        if !or.is_empty() {
                            and.push(perm_not(perm_or(or)));
                        }
                    }
                }
            }
            if and.is_empty() {
                and.push(perm(permission::Rule::Any(true)));
            }
            permissions.push(perm(permission::Rule::AndRules(permission::Set {
                rules: and,
            })));
        }

        let mut principals = Vec::new();
        for list in &self.principals {
            let mut and = Vec::new();
            for a in list {
                for (values, negate) in [(&a.values, false), (&a.not_values, true)] {
                    if values.is_empty() {
                        continue;
                    }
                    let built = if a.kind.aggregates() {
                        check_p(aggregate_principal(&a.kind, &a.key, values, for_tcp))?
                    } else {
                        let mut or = Vec::new();
                        for v in values {
                            let p =
                                principal_of(&a.kind, &a.key, v, for_tcp, &self.policy_namespace);
                            or.extend(check_p(p)?);
                        }
                        (!or.is_empty()).then(|| princ_or(or))
                    };
                    if let Some(p) = built {
                        and.push(if negate { princ_not(p) } else { p });
                    }
                }
            }
            if and.is_empty() {
                and.push(princ(principal::Identifier::Any(true)));
            }
            principals.push(princ(principal::Identifier::AndIds(principal::Set {
                ids: and,
            })));
        }
        Ok(Policy {
            permissions,
            principals,
            ..Default::default()
        })
    }
}

/// ALLOW fails on any error; other actions leave the failing part out.
fn check<T>(action: Action, r: Result<T, RuleError>) -> Result<Option<T>, RuleError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if action == Action::Allow => Err(e),
        Err(_) => Ok(None),
    }
}

fn check_principal(
    action: Action,
    r: Result<Principal, RuleError>,
) -> Result<Option<Principal>, RuleError> {
    check(action, r)
}

fn migrate(a: &mut Attr<PrincipalKind>, bundle: &Bundle) {
    match a.kind {
        PrincipalKind::SrcPrincipal => {
            a.values = bundle.replace_aliases(&a.values);
            a.not_values = bundle.replace_aliases(&a.not_values);
        }
        PrincipalKind::SrcTrustDomain => {
            a.values = bundle.expand_aliases(&a.values);
            a.not_values = bundle.expand_aliases(&a.not_values);
        }
        _ => {}
    }
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn perm_or(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}

fn perm_not(p: Permission) -> Permission {
    perm(permission::Rule::NotRule(Box::new(p)))
}

fn princ(id: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(id),
    }
}

fn princ_or(ids: Vec<Principal>) -> Principal {
    princ(principal::Identifier::OrIds(principal::Set { ids }))
}

fn princ_and(ids: Vec<Principal>) -> Principal {
    princ(principal::Identifier::AndIds(principal::Set { ids }))
}

fn princ_not(p: Principal) -> Principal {
    princ(principal::Identifier::NotId(Box::new(p)))
}

/// The peer's certificate identity matches `m`.
fn authenticated(m: StringMatcher) -> Principal {
    princ(principal::Identifier::Authenticated(Authenticated {
        principal_name: Some(m),
    }))
}

// The metadata matchers are deprecated in favour of `sourced_metadata`, but upstream (and
// so the Envoy versions it supports) uses them.
#[allow(deprecated)]
fn perm_metadata(m: MetadataMatcher) -> Permission {
    perm(permission::Rule::Metadata(m))
}

#[allow(deprecated)]
fn princ_metadata(m: MetadataMatcher) -> Principal {
    princ(principal::Identifier::Metadata(m))
}

fn perm_header(h: HeaderMatcher) -> Permission {
    perm(permission::Rule::Header(h))
}

fn http_only(key: &str, for_tcp: bool) -> Result<(), RuleError> {
    if for_tcp {
        Err(RuleError::HttpOnly(key.to_owned()))
    } else {
        Ok(())
    }
}

fn permission_of(
    kind: PermissionKind,
    key: &str,
    v: &str,
    for_tcp: bool,
) -> Result<Permission, RuleError> {
    Ok(match kind {
        PermissionKind::DestIp => perm(permission::Rule::DestinationIp(cidr(v)?)),
        PermissionKind::DestPort => perm(permission::Rule::DestinationPort(port(v)?)),
        PermissionKind::ConnSni => perm(permission::Rule::RequestedServerName(matcher::glob(v))),
        PermissionKind::EnvoyFilter => envoy_filter_permission(key, &[v.to_owned()])?,
        PermissionKind::Host => {
            http_only(key, for_tcp)?;
            perm_header(matcher::host(HOST_HEADER, v))
        }
        PermissionKind::Method => {
            http_only(key, for_tcp)?;
            perm_header(matcher::header(METHOD_HEADER, v))
        }
        PermissionKind::Path => {
            http_only(key, for_tcp)?;
            if v.contains(MATCH_ONE_TEMPLATE) || v.contains(MATCH_ANY_TEMPLATE) {
                let template = v
                    .replace(MATCH_ANY_TEMPLATE, "**")
                    .replace(MATCH_ONE_TEMPLATE, "*");
                perm(permission::Rule::UriTemplate(TypedExtensionConfig {
                    name: "uri-template".into(),
                    typed_config: Some(any(&UriTemplateMatchConfig {
                        path_template: template,
                    })),
                }))
            } else {
                perm(permission::Rule::UrlPath(matcher::path(v)))
            }
        }
    })
}

/// `experimental.envoy.filters.a.b[c]`: metadata `c` of filter `envoy.filters.a.b`; a
/// value in brackets matches an element of a list.
fn envoy_filter_permission(key: &str, values: &[String]) -> Result<Permission, RuleError> {
    let trimmed = key.strip_prefix("experimental.").unwrap_or(key);
    let trimmed = trimmed.strip_suffix(']').unwrap_or(trimmed);
    let Some((filter, name)) = trimmed.split_once('[') else {
        return Err(RuleError::Key(key.to_owned()));
    };
    let matchers = values
        .iter()
        .map(|v| {
            if v.starts_with('[') && v.ends_with(']') {
                let inner = v.trim_matches(|c| c == '[' || c == ']');
                ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                        ListMatcher {
                            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                                matcher::string_value(matcher::glob(inner)),
                            ))),
                        },
                    ))),
                }
            } else {
                matcher::string_value(matcher::glob(v))
            }
        })
        .collect();
    Ok(perm_metadata(matcher::metadata(
        filter,
        &[name],
        matcher::or_values(matchers),
    )))
}

fn principal_of(
    kind: &PrincipalKind,
    key: &str,
    v: &str,
    for_tcp: bool,
    policy_namespace: &str,
) -> Result<Principal, RuleError> {
    Ok(match kind {
        PrincipalKind::SrcIp => princ(principal::Identifier::DirectRemoteIp(cidr(v)?)),
        PrincipalKind::RemoteIp => princ(principal::Identifier::RemoteIp(cidr(v)?)),
        PrincipalKind::SrcNamespace => {
            let ns: Vec<String> = v.split('*').map(matcher::quote_meta).collect();
            authenticated(matcher::regex(&format!(".*/ns/{}/.*", ns.join(".*"))))
        }
        PrincipalKind::SrcServiceAccount => {
            let (ns, sa) = v.split_once('/').unwrap_or((policy_namespace, v));
            authenticated(matcher::regex(&format!(
                "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                matcher::quote_meta(ns),
                matcher::quote_meta(sa)
            )))
        }
        PrincipalKind::SrcTrustDomain => {
            let m = if v == "*" {
                matcher::prefix("spiffe://", false)
            } else if !v.contains('*') {
                matcher::prefix(&format!("spiffe://{v}/"), false)
            } else {
                let (before, after) = v.split_once('*').unwrap_or((v, ""));
                matcher::regex(&format!(
                    "spiffe://{}[^/]*{}/.*",
                    matcher::quote_meta(before),
                    matcher::quote_meta(after)
                ))
            };
            authenticated(m)
        }
        PrincipalKind::SrcPrincipal => authenticated(matcher::glob_with_prefix(v, "spiffe://")),
        PrincipalKind::RequestHeader => {
            http_only(key, for_tcp)?;
            let name = in_brackets(key.strip_prefix(ATTR_REQUEST_HEADER).unwrap_or(key))?;
            princ(principal::Identifier::Header(matcher::header(&name, v)))
        }
        PrincipalKind::RequestPrincipal
        | PrincipalKind::RequestAudiences
        | PrincipalKind::RequestPresenter
        | PrincipalKind::RequestClaims => aggregate_principal(kind, key, &[v.to_owned()], for_tcp)?,
    })
}

/// The request-authentication principals, read from the JWT payload the `jwt_authn`
/// filter leaves in dynamic metadata.
fn aggregate_principal(
    kind: &PrincipalKind,
    key: &str,
    values: &[String],
    for_tcp: bool,
) -> Result<Principal, RuleError> {
    http_only(key, for_tcp)?;
    let claim_list = |claims: &[&str]| {
        let mut path = vec![JWT_PAYLOAD];
        path.extend_from_slice(claims);
        princ_metadata(matcher::metadata_list_or_scalar(
            JWT_FILTER,
            &path,
            matcher::string_or(values),
        ))
    };
    Ok(match kind {
        PrincipalKind::RequestAudiences => claim_list(&["aud"]),
        PrincipalKind::RequestPresenter => claim_list(&["azp"]),
        PrincipalKind::RequestClaims => {
            let claims = nested_brackets(key.strip_prefix(ATTR_REQUEST_CLAIMS).unwrap_or(key))?;
            let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
            claim_list(&claims)
        }
        _ => {
            let mut or: Vec<Principal> = values.iter().map(|v| request_principal(v)).collect();
            if or.len() == 1 {
                or.remove(0)
            } else {
                princ_or(or)
            }
        }
    })
}

/// `<iss>/<sub>` (split at the last `/`, since issuers are URLs) with `*` globs on either.
fn request_principal(value: &str) -> Principal {
    let any = || matcher::regex(".+");
    let (found, iss, sub) = match value.rfind('/') {
        Some(i) => (true, &value[..i], &value[i + 1..]),
        None => (false, value, ""),
    };
    let (m_iss, m_sub) = if value == "*" {
        (any(), any())
    } else if let Some(rest) = value.strip_prefix('*') {
        if found {
            let m_iss = if iss == "*" {
                any()
            } else {
                matcher::suffix(iss.strip_prefix('*').unwrap_or(iss), false)
            };
            (m_iss, matcher::exact(sub, false))
        } else {
            (any(), matcher::suffix(rest, false))
        }
    } else if let Some(rest) = value.strip_suffix('*') {
        if found {
            let m_sub = if sub == "*" {
                any()
            } else {
                matcher::prefix(sub.strip_suffix('*').unwrap_or(sub), false)
            };
            (matcher::exact(iss, false), m_sub)
        } else {
            (matcher::prefix(rest, false), any())
        }
    } else {
        (matcher::exact(iss, false), matcher::exact(sub, false))
    };
    let claim = |name: &str, m: StringMatcher| {
        princ_metadata(matcher::metadata(
            JWT_FILTER,
            &[JWT_PAYLOAD, name],
            matcher::string_value(m),
        ))
    };
    princ_and(vec![claim("iss", m_iss), claim("sub", m_sub)])
}

/// An address or CIDR as Envoy's range; a bare address is a /32 (or /128). The address
/// is kept as written, host bits included, as upstream does.
fn cidr(v: &str) -> Result<CidrRange, RuleError> {
    let bad = || RuleError::Cidr(v.to_owned());
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => {
            let addr: std::net::IpAddr = a.parse().map_err(|_| bad())?;
            // Go's prefix parser wants plain decimal digits, no sign or leading zero.
            if l.is_empty()
                || !l.bytes().all(|b| b.is_ascii_digit())
                || (l.len() > 1 && l.starts_with('0'))
            {
                return Err(bad());
            }
            let len: u32 = l.parse().map_err(|_| bad())?;
            (addr, len)
        }
        None => {
            let addr: std::net::IpAddr = v.parse().map_err(|_| bad())?;
            let len = if addr.is_ipv4() { 32 } else { 128 };
            (addr, len)
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

fn port(v: &str) -> Result<u32, RuleError> {
    v.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .ok_or_else(|| RuleError::Port(v.to_owned()))
}

/// `[name]` → `name`.
fn in_brackets(s: &str) -> Result<String, RuleError> {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(str::to_owned)
        .ok_or_else(|| RuleError::Brackets(s.to_owned()))
}

/// `[a][b]` → `[a, b]`; anything else is read as a single `[name]`.
fn nested_brackets(s: &str) -> Result<Vec<String>, RuleError> {
    let bytes = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if bytes.get(begin) != Some(&b'[') {
            return None;
        }
        for (i, b) in bytes.iter().enumerate().skip(begin + 1) {
            match b {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < s.len() {
        match end_of(begin) {
            Some(end) => {
                claims.push(s[begin + 1..end].to_owned());
                begin = end + 1;
            }
            None => return Ok(vec![in_brackets(s)?]),
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests;
