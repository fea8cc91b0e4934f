//! VirtualService: hosts, gateways, HTTP/TLS/TCP routes, destinations and weights,
//! retries, timeouts, faults, mirrors, redirects, rewrites, CORS, headers, delegation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, key, Report};
use super::super::Resource;
use crate::config::istio::GRPC_STATUS_NAMES;

/// Envoy retry conditions accepted in `retries.retryOn` (besides HTTP status codes).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Largest direct response body accepted; above a tenth of it a warning is returned.
const MAX_DIRECT_RESPONSE: usize = 1024 * 1024;

struct Ctx<'a> {
    delegate: bool,
    gateway: bool,
    hosts: Vec<&'a str>,
}

/// VirtualService semantic rules.
pub fn virtual_service(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    let hosts = strings(spec, "hosts");
    let gateways = strings(spec, "gateways");
    let delegate = hosts.is_empty();
    let bound_to_mesh = gateways.is_empty() || gateways.contains(&"mesh");
    let ctx = Ctx {
        delegate,
        gateway: !gateways.is_empty() && !gateways.contains(&"mesh"),
        hosts: hosts.clone(),
    };
    if delegate {
        if !gateways.is_empty() {
            r.error(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if !list(spec, "tls").is_empty() {
            r.error(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !list(spec, "tcp").is_empty() {
            r.error(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    for (i, h) in hosts.iter().enumerate() {
        let p = index("spec.hosts", i);
        if *h == "*" {
            if bound_to_mesh {
                r.error(
                    p,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
            }
            continue;
        }
        if let Err(e) = validate_wildcard_domain(h) {
            if !is_ip(h) {
                r.error(p, e);
            }
        }
    }
    let lowered: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    for (h, _) in duplicates(lowered.iter().map(String::as_str)) {
        r.error(
            "spec.hosts",
            format!("duplicate hosts in virtual service: {h}"),
        );
    }
    gateway_names(&gateways, "spec.gateways", r);
    let (http, tcp, tls) = (list(spec, "http"), list(spec, "tcp"), list(spec, "tls"));
    if http.is_empty() && tcp.is_empty() && tls.is_empty() {
        r.error(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let mut catch_all_at: Option<usize> = None;
    for (i, route) in http.iter().enumerate() {
        let p = index("spec.http", i);
        if route.is_null() {
            r.error(&p, "http route may not be null");
            continue;
        }
        http_route(route, &ctx, &p, r);
        if let Some(first) = catch_all_at {
            r.warn(
                &p,
                format!("route is unreachable: spec.http[{first}] matches every request before it"),
            );
        } else if list(route, "match").is_empty() {
            catch_all_at = Some(i);
        }
    }
    let names = http
        .iter()
        .filter_map(|h| str_of(h, "name"))
        .filter(|n| !n.is_empty());
    for (n, _) in duplicates(names) {
        r.warn("spec.http", format!("duplicate HTTP route name {n:?}"));
    }
    for (i, route) in tls.iter().enumerate() {
        tls_route(route, &ctx, &index("spec.tls", i), r);
    }
    for (i, route) in tcp.iter().enumerate() {
        tcp_route(route, &index("spec.tcp", i), r);
    }
    check_export_to(spec, res.namespace, false, r);
}

fn gateway_names(gateways: &[&str], p: &str, r: &mut Report) {
    for (i, g) in gateways.iter().enumerate() {
        let gp = index(p, i);
        if *g == "mesh" {
            continue;
        }
        let (ns, name) = match g.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, *g),
        };
        if let Some(ns) = ns {
            if ns.is_empty() || name.is_empty() {
                r.error(&gp, "config namespace and gateway name cannot be empty");
                continue;
            }
            if !is_dns1123_label(ns) {
                r.error(&gp, format!("invalid value for namespace: {ns:?}"));
            }
        }
        // A short name may also be a FQDN of the form name.namespace.svc.domain.
        if validate_fqdn(name).is_err() {
            r.error(&gp, format!("invalid value for gateway name: {name:?}"));
        }
    }
}

fn http_route(h: &Value, ctx: &Ctx<'_>, p: &str, r: &mut Report) {
    let routes = list(h, "route");
    let redirect = get(h, "redirect");
    let direct = get(h, "directResponse");
    let delegate = get(h, "delegate");
    let has_route = !routes.is_empty();
    if let Some(d) = delegate {
        if ctx.delegate {
            r.error(
                field(p, "delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if has_route || redirect.is_some() {
            r.error(
                p,
                format!(
                    "root HTTP route {} must not specify route or redirect together with delegate",
                    text(h, "name")
                ),
            );
        }
        if text(d, "name").is_empty() {
            r.error(field(p, "delegate.name"), "delegate name is required");
        }
    } else {
        let pairs = [
            (
                has_route && redirect.is_some(),
                "HTTP route cannot contain both route and redirect",
            ),
            (
                has(h, "fault") && redirect.is_some(),
                "HTTP route cannot contain both fault and redirect",
            ),
            (
                has(h, "rewrite") && redirect.is_some(),
                "HTTP route rule cannot contain both rewrite and redirect",
            ),
            (
                has_route && direct.is_some(),
                "HTTP route cannot contain both route and direct_response",
            ),
            (
                has(h, "fault") && direct.is_some(),
                "HTTP route cannot contain both fault and direct_response",
            ),
            (
                has(h, "rewrite") && direct.is_some(),
                "HTTP route rule cannot contain both rewrite and direct_response",
            ),
            (
                redirect.is_some() && direct.is_some(),
                "HTTP route rule cannot contain both redirect and direct_response",
            ),
        ];
        for (bad, msg) in pairs {
            if bad {
                r.error(p, msg);
            }
        }
        if !has_route && redirect.is_none() && direct.is_none() {
            r.error(p, "HTTP route, redirect or direct_response is required");
        }
    }
    if has(h, "mirror") && !list(h, "mirrors").is_empty() {
        r.error(p, "HTTP route cannot contain both mirror and mirrors");
    }
    let matches = list(h, "match");
    for (i, m) in matches.iter().enumerate() {
        http_match(m, ctx, &index(&field(p, "match"), i), r);
    }
    // Destinations and weights.
    let mut total = 0i64;
    for (i, d) in routes.iter().enumerate() {
        let dp = index(&field(p, "route"), i);
        match get(d, "destination") {
            Some(dest) => destination(dest, &field(&dp, "destination"), r),
            None => r.error(field(&dp, "destination"), "destination is required"),
        }
        let w = int(d, "weight").unwrap_or(0);
        if w < 0 {
            r.error(field(&dp, "weight"), format!("weight {w} < 0"));
        }
        total += w.max(0);
        headers(d, &dp, r);
    }
    if routes.len() > 1 && total == 0 {
        r.error(field(p, "route"), "total destination weight = 0");
    } else if routes.len() > 1 && total != 100 {
        r.warn(
            field(p, "route"),
            format!("total destination weight {total} != 100; weights are normalized"),
        );
    }
    if let Some(red) = redirect {
        http_redirect(red, matches, &field(p, "redirect"), r);
    }
    if let Some(d) = direct {
        direct_response(d, &field(p, "directResponse"), r);
    }
    if let Some(rw) = get(h, "rewrite") {
        rewrite(rw, &field(p, "rewrite"), r);
    }
    if let Some(f) = get(h, "fault") {
        fault(f, &field(p, "fault"), r);
    }
    if let Some(rt) = get(h, "retries") {
        retries(rt, &field(p, "retries"), r);
    }
    if let Some(c) = get(h, "corsPolicy") {
        cors(c, &field(p, "corsPolicy"), r);
    }
    if let Some(m) = get(h, "mirror") {
        destination(m, &field(p, "mirror"), r);
    }
    for k in ["mirrorPercentage"] {
        if let Some(v) = get(h, k).and_then(|x| num(x, "value")) {
            percent(v, &field(p, k), "mirror_percentage", r);
        }
    }
    if let Some(n) = int(h, "mirrorPercent") {
        if n > 100 {
            r.error(
                field(p, "mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {n})"),
            );
        }
    }
    for (i, m) in list(h, "mirrors").iter().enumerate() {
        let mp = index(&field(p, "mirrors"), i);
        match get(m, "destination") {
            Some(d) => destination(d, &field(&mp, "destination"), r),
            None => r.error(
                field(&mp, "destination"),
                "destination is required for mirrors",
            ),
        }
        if let Some(v) = get(m, "percentage").and_then(|x| num(x, "value")) {
            percent(v, &field(&mp, "percentage"), "mirror percentage", r);
        }
    }
    headers(h, p, r);
    authority_rewrite(h, p, r);
}

fn percent(v: f64, p: &str, what: &str, r: &mut Report) {
    if v > 100.0 {
        r.error(
            p,
            format!("{what} must have a max value of 100 (it has {v})"),
        );
    } else if v < 0.0 {
        r.error(p, format!("{what} must have a min value of 0 (it has {v})"));
    }
}

fn http_match(m: &Value, ctx: &Ctx<'_>, p: &str, r: &mut Report) {
    for k in ["uri", "scheme", "method", "authority"] {
        if let Some(sm) = get(m, k) {
            check_string_match(sm, &field(p, k), r);
        }
    }
    for k in ["headers", "withoutHeaders", "queryParams"] {
        if let Some(map) = obj(m, k) {
            for (name, sm) in map {
                let hp = key(&field(p, k), name);
                if sm.is_null() {
                    r.error(&hp, format!("header match {name} cannot be null"));
                    continue;
                }
                if k != "queryParams" {
                    if let Err(e) = validate_header_name(name) {
                        r.error(&hp, e);
                    }
                }
                check_string_match(sm, &hp, r);
            }
        }
    }
    check_port_field(m, "port", p, r);
    if let Some(labels) = obj(m, "sourceLabels") {
        check_labels_map(labels, &field(p, "sourceLabels"), r, false);
    }
    let ns = text(m, "sourceNamespace");
    if !ns.is_empty() && !is_dns1123_label(ns) {
        r.error(
            field(p, "sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
    gateway_names(&strings(m, "gateways"), &field(p, "gateways"), r);
    let _ = ctx;
}

fn destination(d: &Value, p: &str, r: &mut Report) {
    let host = text(d, "host");
    if host.is_empty() {
        r.error(field(p, "host"), "destination host is required");
    } else if host == "*" {
        r.error(field(p, "host"), "invalid destination host *");
    } else if validate_wildcard_domain(host).is_err() && !is_ip(host) {
        r.error(field(p, "host"), format!("invalid destination host {host}"));
    }
    let subset = str_of(d, "subset");
    if let Some(s) = subset {
        if s.is_empty() {
            r.error(field(p, "subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(s) {
            r.error(field(p, "subset"), format!("subset name is invalid: {s}"));
        }
    }
    if let Some(port) = get(d, "port") {
        check_port_field(port, "number", &field(p, "port"), r);
    }
}

fn headers(h: &Value, p: &str, r: &mut Report) {
    let Some(hs) = get(h, "headers") else {
        return;
    };
    for side in ["request", "response"] {
        let Some(op) = get(hs, side) else {
            continue;
        };
        let sp = field(&field(p, "headers"), side);
        for k in ["set", "add"] {
            if let Some(m) = obj(op, k) {
                for name in m.keys() {
                    if let Err(e) = validate_header_name(name) {
                        r.error(key(&field(&sp, k), name), e);
                    } else if is_internal_header(name) {
                        r.error(
                            key(&field(&sp, k), name),
                            format!("invalid header {name}: header cannot have internal prefix"),
                        );
                    }
                }
            }
        }
        for (i, name) in strings(op, "remove").iter().enumerate() {
            if let Err(e) = validate_header_name(name) {
                r.error(index(&field(&sp, "remove"), i), e);
            } else if is_internal_header(name)
                || name.eq_ignore_ascii_case("host")
                || name.eq_ignore_ascii_case(":authority")
            {
                r.error(
                    index(&field(&sp, "remove"), i),
                    format!("invalid header {name}: cannot remove this header"),
                );
            }
        }
    }
}

fn is_internal_header(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.starts_with(':') && l != ":authority" || l.starts_with("x-envoy")
}

fn authority_rewrite(h: &Value, p: &str, r: &mut Report) {
    let mut current: Option<String> = None;
    let mut set = |v: String, r: &mut Report| {
        if let Some(c) = &current {
            r.error(
                p,
                format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
            );
        } else {
            current = Some(v);
        }
    };
    if let Some(a) = get(h, "rewrite").and_then(|x| str_of(x, "authority")) {
        if !a.is_empty() {
            set(a.to_owned(), r);
        }
    }
    if let Some(req) = get(h, "headers").and_then(|x| get(x, "request")) {
        for k in ["set", "add"] {
            if let Some(m) = obj(req, k) {
                for (name, v) in m {
                    let l = name.to_ascii_lowercase();
                    if l == "host" || l == ":authority" {
                        set(v.as_str().unwrap_or("").to_owned(), r);
                    }
                }
            }
        }
    }
}

fn http_redirect(red: &Value, matches: &[Value], p: &str, r: &mut Report) {
    let uri = has(red, "uri");
    let prefix = has(red, "prefixRewrite");
    if uri && prefix {
        r.error(p, "redirect may only specify one of uri or prefix_rewrite");
    }
    if prefix {
        let all_prefix = matches
            .iter()
            .all(|m| get(m, "uri").is_none_or(|u| has(u, "prefix")));
        if !all_prefix {
            r.error(
                p,
                "redirect prefix_rewrite requires all URI matches to use prefix match type",
            );
        }
    }
    let any = [
        "uri",
        "prefixRewrite",
        "authority",
        "scheme",
        "port",
        "derivePort",
    ]
    .iter()
    .any(|k| has(red, k));
    if !any {
        r.error(p, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = int(red, "redirectCode") {
        if code != 0 && !(300..=399).contains(&code) {
            r.error(
                field(p, "redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
    }
    check_port_field(red, "port", p, r);
}

fn direct_response(d: &Value, p: &str, r: &mut Report) {
    match int(d, "status") {
        Some(s) if (200..=599).contains(&s) => {}
        Some(s) => r.error(
            field(p, "status"),
            format!("status {s} is not in range 200-599"),
        ),
        None => r.error(field(p, "status"), "status is required"),
    }
    if let Some(body) = get(d, "body") {
        let size = str_of(body, "string")
            .map(str::len)
            .or_else(|| str_of(body, "bytes").map(|b| b.len() * 3 / 4))
            .unwrap_or(0);
        if size > MAX_DIRECT_RESPONSE {
            r.error(field(p, "body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > MAX_DIRECT_RESPONSE / 10 {
            r.warn(
                field(p, "body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }
}

fn rewrite(rw: &Value, p: &str, r: &mut Report) {
    let uri = has(rw, "uri");
    let regex = get(rw, "uriRegexRewrite");
    if uri && regex.is_some() {
        r.error(p, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if !uri && regex.is_none() && text(rw, "authority").is_empty() {
        r.error(p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
    }
    if let Some(rr) = regex {
        let rp = field(p, "uriRegexRewrite");
        if !has(rr, "match") || !has(rr, "rewrite") {
            r.error(
                &rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
        if let Some(m) = str_of(rr, "match") {
            if let Err(e) = validate_regex(m) {
                r.error(
                    field(&rp, "match"),
                    format!("UriRegexRewrite has errors: {e}"),
                );
            }
        }
    }
}

fn fault(f: &Value, p: &str, r: &mut Report) {
    let abort = get(f, "abort");
    let delay = get(f, "delay");
    if abort.is_none() && delay.is_none() {
        r.error(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = abort {
        let ap = field(p, "abort");
        if let Some(s) = int(a, "httpStatus") {
            if !(200..=599).contains(&s) {
                r.error(
                    field(&ap, "httpStatus"),
                    format!("HTTP status {s} is not in range 200-599"),
                );
            }
        }
        if let Some(g) = str_of(a, "grpcStatus") {
            if !GRPC_STATUS_NAMES.contains(&g) {
                r.error(
                    field(&ap, "grpcStatus"),
                    format!("gRPC status {g:?} is not supported"),
                );
            }
        }
        if has(a, "http2Error") {
            r.error(
                field(&ap, "http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
        if !["httpStatus", "grpcStatus", "http2Error"]
            .iter()
            .any(|k| has(a, k))
        {
            r.error(&ap, "abort must specify httpStatus or grpcStatus");
        }
        fault_percentage(a, &ap, r);
    }
    if let Some(d) = delay {
        let dp = field(p, "delay");
        if has(d, "exponentialDelay") {
            r.error(
                field(&dp, "exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        } else if !has(d, "fixedDelay") {
            r.error(field(&dp, "fixedDelay"), "delay must specify fixedDelay");
        }
        if let Some(n) = int(d, "percent") {
            if !(0..=100).contains(&n) {
                r.error(
                    field(&dp, "percent"),
                    format!("percentage {n} is not in range 0..100"),
                );
            }
        }
        fault_percentage(d, &dp, r);
    }
}

fn fault_percentage(v: &Value, p: &str, r: &mut Report) {
    if let Some(x) = get(v, "percentage").and_then(|x| num(x, "value")) {
        if !(x == 0.0 || (0.0001..=100.0).contains(&x)) {
            r.error(
                field(p, "percentage"),
                format!("percentage {x} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }
}

fn retries(rt: &Value, p: &str, r: &mut Report) {
    if int(rt, "attempts").is_some_and(|n| n < 0) {
        r.error(field(p, "attempts"), "attempts cannot be negative");
    }
    let on = text(rt, "retryOn");
    for policy in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let status = policy
            .parse::<u16>()
            .is_ok_and(|c| (100..=599).contains(&c));
        if !status && !RETRY_ON.contains(&policy) {
            r.error(
                field(p, "retryOn"),
                format!("{policy:?} is not a valid retryOn policy"),
            );
        }
    }
    if int(rt, "attempts") == Some(0) && has(rt, "perTryTimeout") {
        r.warn(
            field(p, "perTryTimeout"),
            "perTryTimeout has no effect when attempts is 0",
        );
    }
}

fn cors(c: &Value, p: &str, r: &mut Report) {
    for (i, m) in strings(c, "allowMethods").iter().enumerate() {
        if !HTTP_METHODS.contains(m) {
            r.error(
                index(&field(p, "allowMethods"), i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (i, o) in list(c, "allowOrigins").iter().enumerate() {
        let op = index(&field(p, "allowOrigins"), i);
        if !["exact", "prefix", "regex"].iter().any(|k| has(o, k)) {
            r.error(
                &op,
                "allowOrigins entry must set one of exact, prefix or regex",
            );
        }
        check_string_match(o, &op, r);
    }
    if !strings(c, "allowOrigin").is_empty() {
        r.warn(
            field(p, "allowOrigin"),
            "allowOrigin is deprecated; use allowOrigins",
        );
    }
    for k in ["allowHeaders", "exposeHeaders"] {
        for (i, h) in strings(c, k).iter().enumerate() {
            if *h != "*" {
                if let Err(e) = validate_header_name(h) {
                    r.error(index(&field(p, k), i), e);
                }
            }
        }
    }
    if let Some(s) = str_of(c, "maxAge") {
        if parse_duration(s).is_some_and(|d| !whole_seconds(d)) {
            r.error(
                field(p, "maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
}

fn tls_route(t: &Value, ctx: &Ctx<'_>, p: &str, r: &mut Report) {
    let matches = list(t, "match");
    if matches.is_empty() {
        r.error(
            field(p, "match"),
            "TLS route must have at least one match condition",
        );
    }
    for (i, m) in matches.iter().enumerate() {
        let mp = index(&field(p, "match"), i);
        let snis = strings(m, "sniHosts");
        if snis.is_empty() {
            r.error(
                field(&mp, "sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (j, sni) in snis.iter().enumerate() {
            let sp = index(&field(&mp, "sniHosts"), j);
            if is_ip(sni) {
                r.warn(&sp, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                continue;
            }
            if let Err(e) = validate_wildcard_domain(sni) {
                r.error(&sp, e);
                continue;
            }
            if !ctx.hosts.iter().any(|h| host_covers(h, sni)) {
                r.error(
                    &sp,
                    format!(
                        "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        ctx.hosts.join(", ")
                    ),
                );
            }
        }
        l4_match(m, &mp, r);
    }
    let routes = list(t, "route");
    if routes.is_empty() {
        r.error(field(p, "route"), "TLS route is required");
    }
    route_destinations(routes, &field(p, "route"), r);
    let _ = ctx.gateway;
}

fn tcp_route(t: &Value, p: &str, r: &mut Report) {
    for (i, m) in list(t, "match").iter().enumerate() {
        l4_match(m, &index(&field(p, "match"), i), r);
    }
    let routes = list(t, "route");
    if routes.is_empty() {
        r.error(field(p, "route"), "TCP route is required");
    }
    route_destinations(routes, &field(p, "route"), r);
}

fn l4_match(m: &Value, p: &str, r: &mut Report) {
    for (i, s) in strings(m, "destinationSubnets").iter().enumerate() {
        if !is_ip_or_cidr(s) {
            r.error(
                index(&field(p, "destinationSubnets"), i),
                format!("{s:?} is not a valid IP address or CIDR block"),
            );
        }
    }
    check_port_field(m, "port", p, r);
    if let Some(labels) = obj(m, "sourceLabels") {
        check_labels_map(labels, &field(p, "sourceLabels"), r, false);
    }
    gateway_names(&strings(m, "gateways"), &field(p, "gateways"), r);
}

fn route_destinations(routes: &[Value], p: &str, r: &mut Report) {
    let mut total = 0;
    for (i, d) in routes.iter().enumerate() {
        let dp = index(p, i);
        match get(d, "destination") {
            Some(dest) => destination(dest, &field(&dp, "destination"), r),
            None => r.error(field(&dp, "destination"), "destination is required"),
        }
        let w = int(d, "weight").unwrap_or(0);
        if w < 0 {
            r.error(field(&dp, "weight"), format!("weight {w} < 0"));
        }
        total += w.max(0);
    }
    if routes.len() > 1 && total == 0 {
        r.error(p, "total destination weight = 0");
    }
}

/// True when `sni` is `host` or falls under it (`*.example.com` covers `a.example.com`).
fn host_covers(host: &str, sni: &str) -> bool {
    let (h, s) = (host.to_ascii_lowercase(), sni.to_ascii_lowercase());
    if h == "*" || h == s {
        return true;
    }
    if let Some(suffix) = h.strip_prefix('*') {
        if s.ends_with(suffix) {
            return true;
        }
    }
    if let Some(suffix) = s.strip_prefix('*') {
        // A wildcard SNI is a subset only of a wider wildcard host.
        return h.strip_prefix('*').is_some_and(|hs| suffix.ends_with(hs));
    }
    // Short host names (`reviews`) cover their FQDN forms.
    !h.contains('.') && s.starts_with(&format!("{h}."))
}

/// Durations that must be whole seconds (CORS `maxAge`).
fn whole_seconds(d: Duration) -> bool {
    d.subsec_nanos() == 0
}

/// A count of something by key, for duplicate detection.
fn duplicates<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m.retain(|_, n| *n > 1);
    m
}
