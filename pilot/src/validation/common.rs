//! Rules shared by several kinds: host names, labels, ports, protocols, durations,
//! regular expressions, selectors, `exportTo`; and read-only accessors over JSON.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value};

use super::report::{field, index, key, Report};

/// Largest regular expression accepted in a match (upstream's limit).
pub const MAX_REGEX_LEN: usize = 1024;

// Accessors: never panic on unexpected shapes (the schema check reports those).

pub fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

pub fn has(v: &Value, k: &str) -> bool {
    get(v, k).is_some()
}

pub fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    get(v, k).and_then(Value::as_str)
}

/// A string field, empty when absent.
pub fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    str_of(v, k).unwrap_or("")
}

pub fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    get(v, k).and_then(Value::as_object)
}

pub fn int(v: &Value, k: &str) -> Option<i64> {
    get(v, k).and_then(Value::as_i64)
}

pub fn num(v: &Value, k: &str) -> Option<f64> {
    get(v, k).and_then(Value::as_f64)
}

pub fn boolean(v: &Value, k: &str) -> bool {
    get(v, k).and_then(Value::as_bool).unwrap_or(false)
}

/// Strings of a list field (non-strings are skipped; the schema reports them).
pub fn strings<'a>(v: &'a Value, k: &str) -> Vec<&'a str> {
    list(v, k).iter().filter_map(Value::as_str).collect()
}

/// True for an object with no fields set (or a non-object).
pub fn is_empty_object(v: &Value) -> bool {
    v.as_object()
        .is_none_or(|o| o.values().all(|x| x.is_null()))
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // Patterns are constants of this file, covered by tests.
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").expect("empty")))
}

fn dns1123_label_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
}

/// A DNS-1123 label (letters of either case, as upstream accepts): at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && dns1123_label_re().is_match(s)
}

/// The first label of a host that may start with a wildcard: `*`, `*foo`, `*-foo`, `foo`.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && dns1123_label_re().is_match(rest)
}

/// Dot-separated DNS-1123 labels; a trailing dot is accepted.
fn check_labels(domain: &str, all: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() && i > 0 {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {all:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn domain_preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    Ok(())
}

/// A fully qualified domain name: DNS-1123 labels, no wildcard.
pub fn validate_fqdn(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    check_labels(domain, domain)
}

/// A domain whose first label may be a wildcard (`*.example.com`, `*`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => check_labels(r, domain),
        None => Ok(()),
    }
}

/// `namespace/host` as Gateways and Sidecars take it: namespace `*`, `.`, `~` or a name.
pub fn validate_namespace_slash_host(h: &str) -> Result<(), String> {
    let Some((ns, host)) = h.split_once('/') else {
        return Err(format!("host must be of form namespace/dnsName, got {h:?}"));
    };
    if ns.is_empty() || host.is_empty() {
        return Err(format!(
            "config namespace and dnsName in host entry cannot be empty: {h:?}"
        ));
    }
    if !matches!(ns, "*" | "." | "~") && !is_dns1123_label(ns) {
        return Err(format!("invalid namespace value {ns:?} in host {h:?}"));
    }
    if host == "*" {
        return Ok(());
    }
    validate_wildcard_domain(host)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters.
pub fn validate_label_key(k: &str) -> Result<(), String> {
    static NAME: OnceLock<Regex> = OnceLock::new();
    let name_re = re(&NAME, r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$");
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || validate_fqdn(&p.to_ascii_lowercase()).is_err() {
            return Err(format!(
                "invalid label key {k:?}: prefix must be a DNS subdomain"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !name_re.is_match(name) {
        return Err(format!(
            "invalid label key {k:?}: name must be at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label alphabet.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    static VALUE: OnceLock<Regex> = OnceLock::new();
    let value_re = re(&VALUE, r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$");
    if v.len() > 63 || !value_re.is_match(v) {
        return Err(format!(
            "invalid label value {v:?}: at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A map of labels (`labels`, `matchLabels`).
pub fn check_labels_map(m: &Map<String, Value>, path: &str, r: &mut Report, selector: bool) {
    for (k, v) in m {
        let p = key(path, k);
        let val = v.as_str().unwrap_or("");
        if selector && k.is_empty() {
            r.error(
                &p,
                format!("empty key is not supported in selector: \"{k}={val}\""),
            );
            continue;
        }
        if selector && (k.contains('*') || val.contains('*')) {
            r.error(
                &p,
                format!("wildcard is not supported in selector: \"{k}={val}\""),
            );
            continue;
        }
        if let Err(e) = validate_label_key(k) {
            r.error(&p, e);
        }
        if let Err(e) = validate_label_value(val) {
            r.error(&p, e);
        }
    }
}

/// `selector`/`workloadSelector` with `matchLabels` (or `labels` for Sidecar/ServiceEntry).
pub fn check_selector(spec: &Value, name: &str, labels_field: &str, path: &str, r: &mut Report) {
    let Some(sel) = get(spec, name) else {
        return;
    };
    let p = field(path, name);
    match obj(sel, labels_field) {
        Some(m) if !m.is_empty() => check_labels_map(m, &field(&p, labels_field), r, true),
        _ => r.warn(&p, "workload selector specified without labels"),
    }
}

pub fn validate_port(n: i64) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// A port field (`number`, `port`) that must be in range when set.
pub fn check_port_field(v: &Value, k: &str, path: &str, r: &mut Report) {
    if let Some(n) = int(v, k) {
        if let Err(e) = validate_port(n) {
            r.error(field(path, k), e);
        }
    }
}

pub fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// Protocols Istio recognises (case-insensitive).
pub const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

pub fn validate_protocol(p: &str) -> Result<(), String> {
    if PROTOCOLS.iter().any(|x| x.eq_ignore_ascii_case(p)) {
        Ok(())
    } else {
        Err(format!("unsupported protocol: {p}"))
    }
}

pub fn is_http_like(p: &str) -> bool {
    ["HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"]
        .iter()
        .any(|x| x.eq_ignore_ascii_case(p))
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a CIDR block.
pub fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => is_ip(s),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

pub use crate::config::istio::parse_duration;

/// A duration field that must parse and be at least `min` when set.
pub fn check_duration(v: &Value, k: &str, min: Duration, path: &str, r: &mut Report) {
    let Some(s) = str_of(v, k) else {
        return;
    };
    match parse_duration(s) {
        Some(d) if d >= min => {}
        Some(_) => r.error(
            field(path, k),
            format!("duration {s:?} must be at least {min:?}"),
        ),
        None => r.error(field(path, k), format!("{s:?} is not a valid duration")),
    }
}

/// A RE2-style regular expression as Envoy will compile it.
pub fn validate_regex(re: &str) -> Result<(), String> {
    if re.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is too large, max length allowed is {MAX_REGEX_LEN}"
        ));
    }
    Regex::new(re).map(|_| ()).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().last().unwrap_or("").trim().to_owned();
        format!("invalid regex {re:?}: {first}; Istio uses RE2 style regex-based match")
    })
}

/// A `StringMatch` (`exact`/`prefix`/`regex`).
pub fn check_string_match(m: &Value, path: &str, r: &mut Report) {
    if let Some(p) = str_of(m, "prefix") {
        if p.is_empty() {
            r.error(
                field(path, "prefix"),
                "prefix string match should not be empty",
            );
        }
    }
    if let Some(re) = str_of(m, "regex") {
        if re.is_empty() {
            r.error(
                field(path, "regex"),
                "regex string match should not be empty",
            );
        } else if let Err(e) = validate_regex(re) {
            r.error(field(path, "regex"), e);
        }
    }
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespace names, without duplicates or
/// contradictions.
pub fn check_export_to(spec: &Value, namespace: &str, service_entry: bool, r: &mut Report) {
    let values = strings(spec, "exportTo");
    let path = "spec.exportTo";
    let mut seen: Vec<String> = Vec::new();
    for (i, e) in values.iter().enumerate() {
        let p = index(path, i);
        let canonical = if *e == "." && !namespace.is_empty() {
            namespace.to_owned()
        } else {
            (*e).to_owned()
        };
        if seen.contains(&canonical) {
            if *e == "." || canonical == namespace {
                r.error(
                    &p,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                r.error(&p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        seen.push(canonical);
        match *e {
            "." | "*" => {}
            "~" if service_entry => {}
            other if is_dns1123_label(other) => {}
            other => r.error(
                &p,
                format!("only namespaces, '.' and '*' are allowed in exportTo, got {other:?}"),
            ),
        }
    }
    if values.len() > 1 && values.contains(&"*") {
        r.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if service_entry && values.len() > 1 && values.contains(&"~") {
        r.error(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// An HTTP header name (RFC 7230 token).
pub fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_owned());
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let bare = name.strip_prefix(':').unwrap_or(name);
    if bare.is_empty() || !bare.chars().all(token) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// Labels of the target references (`targetRef`, `targetRefs`).
pub fn check_target_refs(spec: &Value, r: &mut Report) {
    let mut refs: Vec<(String, &Value)> = Vec::new();
    if let Some(t) = get(spec, "targetRef") {
        refs.push(("spec.targetRef".to_owned(), t));
    }
    for (i, t) in list(spec, "targetRefs").iter().enumerate() {
        refs.push((index("spec.targetRefs", i), t));
    }
    for (p, t) in refs {
        if text(t, "kind").is_empty() {
            r.error(field(&p, "kind"), "targetRef kind must be set");
        }
        if text(t, "name").is_empty() {
            r.error(field(&p, "name"), "targetRef name must be set");
        }
        if !text(t, "namespace").is_empty() {
            r.error(
                field(&p, "namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
    }
    let selector = has(spec, "selector") || has(spec, "workloadSelector");
    if selector && (has(spec, "targetRef") || !list(spec, "targetRefs").is_empty()) {
        r.error("spec", "only one of targetRefs or selector can be set");
    }
    if has(spec, "targetRef") && !list(spec, "targetRefs").is_empty() {
        r.error("spec", "only one of targetRef or targetRefs can be set");
    }
}
