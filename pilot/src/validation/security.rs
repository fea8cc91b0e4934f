//! `security.istio.io`: AuthorizationPolicy, PeerAuthentication, RequestAuthentication.

use serde_json::Value;

use super::common::*;
use super::report::{field, index, key, Report};
use super::Resource;

/// `istio.io/dry-run`: only for ALLOW and DENY policies, and a boolean.
const DRY_RUN: &str = "istio.io/dry-run";

/// Condition keys an AuthorizationPolicy `when` may use; `[...]` keys take a name.
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];
const CONDITION_PREFIXES: &[&str] = &[
    "request.headers[",
    "request.auth.claims[",
    "experimental.envoy.filters.",
];

/// AuthorizationPolicy: action, provider, rules, sources, operations, conditions.
pub fn authorization_policy(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    check_target_refs(spec, r);
    let action = str_of(spec, "action").unwrap_or("ALLOW");
    let rules = get(spec, "rules").and_then(Value::as_array);
    if let Some(v) = res.annotation(DRY_RUN) {
        if v.parse::<bool>().is_err() {
            r.error(
                "metadata.annotations",
                format!("annotation {DRY_RUN} has invalid value ({v}): must be true or false"),
            );
        }
        if !matches!(action, "ALLOW" | "DENY") {
            r.error(
                "metadata.annotations",
                format!("the annotation {DRY_RUN} currently only supports action ALLOW/DENY, found action {action}"),
            );
        }
    }
    match action {
        "CUSTOM" => {
            if rules.is_none_or(|r| r.is_empty()) {
                r.error(
                    "spec.rules",
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                );
            }
            match get(spec, "provider") {
                Some(p) if !text(p, "name").is_empty() => {}
                _ => r.error("spec.provider.name", "`provider.name` must not be empty"),
            }
        }
        _ => {
            if has(spec, "provider") {
                r.error(
                    "spec.provider",
                    format!("`provider` must not be with non CUSTOM action, found {action}"),
                );
            }
        }
    }
    if action == "DENY" && rules.is_none_or(|r| r.is_empty()) {
        r.error(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }
    for (i, rule) in rules.map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let p = index("spec.rules", i);
        if rule.is_null() {
            r.error(&p, format!("`rule` must not be nil, found at rule {i}"));
            continue;
        }
        if let Some(from) = get(rule, "from").and_then(Value::as_array) {
            if from.is_empty() {
                r.error(
                    field(&p, "from"),
                    format!("`from` must not be empty, found at rule {i}"),
                );
            }
            for (j, f) in from.iter().enumerate() {
                let fp = index(&field(&p, "from"), j);
                match get(f, "source") {
                    None => r.error(
                        field(&fp, "source"),
                        format!("`from.source` must not be nil, found at rule {i}"),
                    ),
                    Some(s) if is_empty_object(s) => r.error(
                        field(&fp, "source"),
                        format!("`from.source` must not be empty, found at rule {i}"),
                    ),
                    Some(s) => source(s, i, &field(&fp, "source"), r),
                }
            }
        }
        if let Some(to) = get(rule, "to").and_then(Value::as_array) {
            if to.is_empty() {
                r.error(
                    field(&p, "to"),
                    format!("`to` must not be empty, found at rule {i}"),
                );
            }
            for (j, t) in to.iter().enumerate() {
                let tp = index(&field(&p, "to"), j);
                match get(t, "operation") {
                    None => r.error(
                        field(&tp, "operation"),
                        format!("`to.operation` must not be nil, found at rule {i}"),
                    ),
                    Some(o) if is_empty_object(o) => r.error(
                        field(&tp, "operation"),
                        format!("`to.operation` must not be empty, found at rule {i}"),
                    ),
                    Some(o) => operation(o, &field(&tp, "operation"), r),
                }
            }
        }
        for (j, c) in list(rule, "when").iter().enumerate() {
            condition(c, &index(&field(&p, "when"), j), r);
        }
        if action == "CUSTOM" {
            custom_unsupported(rule, &p, r);
        }
        if action == "DENY" && denies_all_tcp(rule) {
            r.warn(
                &p,
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
            );
        }
    }
}

/// Source fields and condition keys a CUSTOM policy cannot use: the external authorizer
/// sees the request, not the peer's authenticated identity.
fn custom_unsupported(rule: &Value, p: &str, r: &mut Report) {
    const FIELDS: [(&str, &str); 10] = [
        ("namespaces", "From.Namespaces"),
        ("notNamespaces", "From.NotNamespaces"),
        ("serviceAccounts", "From.ServiceAccounts"),
        ("notServiceAccounts", "From.NotServiceAccounts"),
        ("trustDomains", "From.TrustDomains"),
        ("notTrustDomains", "From.NotTrustDomains"),
        ("principals", "From.Principals"),
        ("notPrincipals", "From.NotPrincipals"),
        ("requestPrincipals", "From.RequestPrincipals"),
        ("notRequestPrincipals", "From.NotRequestPrincipals"),
    ];
    for (j, f) in list(rule, "from").iter().enumerate() {
        let Some(src) = get(f, "source") else {
            continue;
        };
        for (k, name) in FIELDS {
            if !list(src, k).is_empty() {
                r.error(
                    field(&field(&index(&field(p, "from"), j), "source"), k),
                    format!("{name} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
    for (j, c) in list(rule, "when").iter().enumerate() {
        let k = text(c, "key");
        let unsupported = matches!(
            k,
            "source.namespace"
                | "source.serviceAccount"
                | "source.trustDomain"
                | "source.principal"
        ) || k.starts_with("request.auth.");
        if unsupported {
            r.error(
                field(&index(&field(p, "when"), j), "key"),
                format!("{k} is currently not supported with CUSTOM action"),
            );
        }
    }
}

/// Whether a DENY rule matches on HTTP attributes only, so that on a TCP port (where they
/// cannot be evaluated) it denies everything: upstream warns about these.
fn denies_all_tcp(rule: &Value) -> bool {
    const TCP_SOURCE: [&str; 10] = [
        "principals",
        "notPrincipals",
        "ipBlocks",
        "notIpBlocks",
        "namespaces",
        "notNamespaces",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "serviceAccounts",
        "notServiceAccounts",
    ];
    let sources: Vec<&Value> = list(rule, "from")
        .iter()
        .filter_map(|f| get(f, "source"))
        .collect();
    let operations: Vec<&Value> = list(rule, "to")
        .iter()
        .filter_map(|t| get(t, "operation"))
        .collect();
    let tcp_from = sources
        .iter()
        .any(|s| TCP_SOURCE.iter().any(|k| !list(s, k).is_empty()));
    let tcp_to = operations
        .iter()
        .any(|o| !list(o, "ports").is_empty() || !list(o, "notPorts").is_empty());
    let (from, to) = (!sources.is_empty(), !operations.is_empty());
    (from && !to && !tcp_from) || (to && !tcp_to)
}

fn source(s: &Value, rule: usize, p: &str, r: &mut Report) {
    let sa = !list(s, "serviceAccounts").is_empty() || !list(s, "notServiceAccounts").is_empty();
    let other = ["principals", "notPrincipals", "namespaces", "notNamespaces"]
        .iter()
        .any(|k| !list(s, k).is_empty());
    if sa && other {
        r.error(
            p,
            format!(
                "cannot set serviceAccounts with namespaces or principals, found at rule {rule}"
            ),
        );
    }
    for k in [
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
    ] {
        for (i, v) in strings(s, k).iter().enumerate() {
            if !is_ip_or_cidr(v) {
                r.error(
                    index(&field(p, k), i),
                    format!("invalid IP address or CIDR block {v:?}"),
                );
            }
        }
    }
    for k in [
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
    ] {
        check_wildcards(s, k, p, r);
    }
    for k in ["serviceAccounts", "notServiceAccounts"] {
        for (i, v) in strings(s, k).iter().enumerate() {
            let ok = v
                .split_once('/')
                .is_some_and(|(ns, name)| is_dns1123_label(ns) && validate_fqdn(name).is_ok());
            if !ok && validate_fqdn(v).is_err() {
                r.warn(
                    index(&field(p, k), i),
                    format!("service account {v:?} should be <namespace>/<name>"),
                );
            }
        }
    }
}

/// Values match exactly, by prefix (`abc*`), by suffix (`*abc`) or presence (`*`).
fn check_wildcards(v: &Value, k: &str, p: &str, r: &mut Report) {
    for (i, s) in strings(v, k).iter().enumerate() {
        let inner = s.trim_start_matches('*').trim_end_matches('*');
        let stars = s.matches('*').count();
        if inner.contains('*') || (stars == 2 && s.len() > 2) || stars > 2 {
            r.warn(
                index(&field(p, k), i),
                format!("value {s:?} will match literally: wildcard `*` is only supported as a prefix, a suffix or alone"),
            );
        }
    }
}

fn operation(o: &Value, p: &str, r: &mut Report) {
    for k in ["ports", "notPorts"] {
        for (i, port) in strings(o, k).iter().enumerate() {
            match port.parse::<i64>() {
                Ok(n) if validate_port(n).is_ok() => {}
                _ => r.error(
                    index(&field(p, k), i),
                    format!("invalid port {port:?}: must be in range 1..65535"),
                ),
            }
        }
    }
    for k in ["hosts", "notHosts", "methods", "notMethods"] {
        check_wildcards(o, k, p, r);
    }
    for k in ["paths", "notPaths"] {
        for (i, path) in strings(o, k).iter().enumerate() {
            if path.contains("{*}") || path.contains("{**}") {
                if path.contains("{**}") && !path.ends_with("{**}") {
                    r.warn(
                        index(&field(p, k), i),
                        format!("path template {path:?}: {{**}} should be the last segment"),
                    );
                }
                continue;
            }
            let inner = path.trim_start_matches('*').trim_end_matches('*');
            if inner.contains('*') {
                r.warn(index(&field(p, k), i), format!("path {path:?} will match literally: wildcard `*` is only supported as a prefix or suffix"));
            }
        }
    }
}

fn condition(c: &Value, p: &str, r: &mut Report) {
    let k = text(c, "key");
    if k.is_empty() {
        r.error(field(p, "key"), "`key` must not be empty");
        return;
    }
    let known = CONDITION_KEYS.contains(&k)
        || CONDITION_PREFIXES.iter().any(|pre| {
            k.starts_with(pre)
                && (pre.ends_with('.') || (k.ends_with(']') && k.len() > pre.len() + 1))
        });
    if !known {
        r.error(field(p, "key"), format!("unknown attribute ({k})"));
    }
    let values = strings(c, "values");
    let not_values = strings(c, "notValues");
    if values.is_empty() && not_values.is_empty() {
        r.error(
            p,
            format!("at least one of `values` or `notValues` must be set for key {k}"),
        );
    }
    for (name, vals) in [("values", &values), ("notValues", &not_values)] {
        for (i, v) in vals.iter().enumerate() {
            let bad = match k {
                "source.ip" | "remote.ip" | "destination.ip" => !is_ip_or_cidr(v),
                "destination.port" => v
                    .parse::<i64>()
                    .map(|n| validate_port(n).is_err())
                    .unwrap_or(true),
                _ => false,
            };
            if bad {
                let which = if name == "values" {
                    "value"
                } else {
                    "notValue"
                };
                r.error(
                    index(&field(p, name), i),
                    format!("invalid `{which}` for `key` {k}: {v:?}"),
                );
            }
        }
    }
}

/// PeerAuthentication: port-level mTLS needs a selector.
pub fn peer_authentication(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    let Some(ports) = obj(spec, "portLevelMtls") else {
        return;
    };
    let selects = get(spec, "selector")
        .and_then(|s| obj(s, "matchLabels"))
        .is_some_and(|m| !m.is_empty());
    if !selects {
        r.error(
            "spec.portLevelMtls",
            "mesh/namespace peer authentication cannot have port level mTLS",
        );
    }
    if ports.is_empty() {
        r.error(
            "spec.portLevelMtls",
            "port level mTLS, if defined, must have at least one element",
        );
    }
    for k in ports.keys() {
        if k.parse::<i64>()
            .map(|n| validate_port(n).is_err())
            .unwrap_or(true)
        {
            r.error(
                key("spec.portLevelMtls", k),
                "port must be in range 1..65535",
            );
        }
    }
}

/// RequestAuthentication: JWT rules.
pub fn request_authentication(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    check_target_refs(spec, r);
    for (i, rule) in list(spec, "jwtRules").iter().enumerate() {
        jwt_rule(rule, &index("spec.jwtRules", i), r);
    }
}

fn jwt_rule(rule: &Value, p: &str, r: &mut Report) {
    if rule.is_null() {
        r.error(p, "jwt rule may not be null");
        return;
    }
    for (i, a) in list(rule, "audiences").iter().enumerate() {
        if a.as_str().is_none_or(str::is_empty) {
            r.error(
                index(&field(p, "audiences"), i),
                "audience must be non-empty string",
            );
        }
    }
    let uri = text(rule, "jwksUri");
    if text(rule, "issuer").is_empty() && uri.is_empty() {
        r.error(p, "issuer or jwksUri must be non-empty string");
    }
    if !uri.is_empty() {
        let scheme_ok = uri.starts_with("http://") || uri.starts_with("https://");
        let host = uri.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        let host = host.split(['/', '?', '#']).next().unwrap_or("");
        if !scheme_ok || host.is_empty() {
            r.error(
                field(p, "jwksUri"),
                format!("jwks uri {uri:?} is not a valid http(s) URL"),
            );
        }
    }
    if let Some(jwks) = str_of(rule, "jwks") {
        if !uri.is_empty() {
            r.error(p, "only one of jwks or jwksUri can be set");
        }
        let parsed: Result<Value, _> = serde_json::from_str(jwks);
        match parsed {
            Ok(v) if v.get("keys").is_some_and(Value::is_array) => {
                warn_private_keys(&v, p, r);
            }
            Ok(_) => r.error(field(p, "jwks"), "jwks parse error: missing `keys` list"),
            Err(e) => r.error(field(p, "jwks"), format!("jwks parse error: {e}")),
        }
    }
    for (i, h) in list(rule, "fromHeaders").iter().enumerate() {
        let hp = index(&field(p, "fromHeaders"), i);
        let name = text(h, "name");
        if name.is_empty() {
            r.error(
                field(&hp, "name"),
                "location header name must be non-empty string",
            );
        } else if let Err(e) = validate_header_name(name) {
            r.error(field(&hp, "name"), e);
        }
    }
    for (i, q) in list(rule, "fromParams").iter().enumerate() {
        if q.as_str().is_none_or(str::is_empty) {
            r.error(
                index(&field(p, "fromParams"), i),
                "location query must be non-empty string",
            );
        }
    }
    for (i, c) in list(rule, "fromCookies").iter().enumerate() {
        if c.as_str().is_none_or(str::is_empty) {
            r.error(
                index(&field(p, "fromCookies"), i),
                "cookie name must be non-empty string",
            );
        }
    }
    for (i, o) in list(rule, "outputClaimToHeaders").iter().enumerate() {
        let op = index(&field(p, "outputClaimToHeaders"), i);
        let (h, c) = (text(o, "header"), text(o, "claim"));
        if h.is_empty() || c.is_empty() {
            r.error(
                &op,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
        } else if let Err(e) = validate_header_name(h) {
            r.error(field(&op, "header"), e);
        }
    }
    if let Some(t) = str_of(rule, "timeout") {
        if parse_duration(t).is_none() {
            r.error(
                field(p, "timeout"),
                format!("{t:?} is not a valid duration"),
            );
        }
    }
}

/// Keys of an inline JWKS that carry private material (`d` of RSA, EC and OKP keys, or a
/// symmetric `oct` key): Envoy only needs the public half, so the secret is exposed for
/// nothing.
fn warn_private_keys(jwks: &Value, p: &str, r: &mut Report) {
    for (i, key) in list(jwks, "keys").iter().enumerate() {
        let private = match text(key, "kty") {
            "RSA" | "EC" | "OKP" => has(key, "d"),
            "oct" => true,
            _ => false,
        };
        if private {
            r.warn(
                field(p, "jwks"),
                format!("jwks key at index {i} contains private key material; only public keys are used for verification"),
            );
        }
    }
}
