//! `networking.istio.io`: Gateway, DestinationRule, ServiceEntry, Sidecar, WorkloadEntry,
//! WorkloadGroup, EnvoyFilter, ProxyConfig. VirtualService lives in `networking/virtual_service.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::common::*;
use super::report::{field, index, key, Report};
use super::Resource;

mod virtual_service;
pub use virtual_service::virtual_service;

const UNIX_PREFIX: &str = "unix://";

/// Gateway: servers, hosts, ports, TLS.
pub fn gateway(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    if !res.name.is_empty() && !is_dns1123_label(res.name) {
        r.error(
            "metadata.name",
            format!("invalid gateway name: {:?}", res.name),
        );
    }
    if let Some(sel) = obj(spec, "selector") {
        check_labels_map(sel, "spec.selector", r, false);
    }
    let servers = list(spec, "servers");
    if servers.is_empty() {
        r.error("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in servers.iter().enumerate() {
        let p = index("spec.servers", i);
        server(s, &p, r);
        if let Some(port) = get(s, "port") {
            let name = text(port, "name");
            if !name.is_empty() && !port_names.insert(name.to_owned()) {
                r.error(
                    field(&p, "port.name"),
                    format!("port names in servers must be unique: duplicate name {name}"),
                );
            }
            let proto = text(port, "protocol").to_ascii_uppercase();
            if let Some(tls) = get(s, "tls") {
                if boolean(tls, "httpsRedirect") && proto != "HTTP" {
                    r.warn(
                        field(&p, "tls.httpsRedirect"),
                        "tls.httpsRedirect should only be used with http servers",
                    );
                }
            }
        }
    }
}

fn server(s: &Value, p: &str, r: &mut Report) {
    let hosts = strings(s, "hosts");
    if hosts.is_empty() {
        r.error(
            field(p, "hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, h) in hosts.iter().enumerate() {
        let res = if h.contains('/') {
            validate_namespace_slash_host(h)
        } else if *h == "*" {
            Ok(())
        } else {
            validate_wildcard_domain(h)
        };
        if let Err(e) = res {
            r.error(index(&field(p, "hosts"), i), e);
        }
    }
    let bind = text(s, "bind");
    let Some(port) = get(s, "port") else {
        r.error(field(p, "port"), "port is required");
        return;
    };
    let pp = field(p, "port");
    let proto = text(port, "protocol");
    if proto.is_empty() {
        r.error(field(&pp, "protocol"), "protocol must be set");
    } else if validate_protocol(proto).is_err() {
        r.error(
            field(&pp, "protocol"),
            format!("invalid protocol {proto:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS"),
        );
    }
    let number = int(port, "number").unwrap_or(0);
    if bind.starts_with(UNIX_PREFIX) {
        if number != 0 {
            r.error(
                field(&pp, "number"),
                "port number must be 0 for unix domain socket",
            );
        }
        if let Err(e) = validate_unix_address(bind) {
            r.error(field(p, "bind"), e);
        }
    } else {
        if let Err(e) = validate_port(number) {
            r.error(field(&pp, "number"), e);
        }
        if !bind.is_empty() && !is_ip(bind) {
            r.error(
                field(p, "bind"),
                format!("bind {bind:?} must be an IP address or unix://path"),
            );
        }
    }
    if int(port, "targetPort").unwrap_or(0) > 0 {
        r.error(
            field(&pp, "targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if text(port, "name").is_empty() {
        r.error(field(&pp, "name"), "port name must be set");
    }
    let proto = proto.to_ascii_uppercase();
    let tls = get(s, "tls");
    match (proto.as_str(), tls) {
        ("HTTPS" | "TLS", None) => r.error(
            field(p, "tls"),
            "server must have TLS settings for HTTPS/TLS protocols",
        ),
        ("HTTPS" | "TLS", Some(t)) => server_tls(t, &field(p, "tls"), r),
        ("HTTP", Some(t)) if !boolean(t, "httpsRedirect") => r.error(
            field(p, "tls"),
            "server cannot have TLS settings for plain text HTTP ports",
        ),
        ("HTTP", _) | (_, None) => {}
        (_, Some(_)) => r.error(
            field(p, "tls"),
            "server cannot have TLS settings for non HTTPS/TLS ports",
        ),
    }
}

/// Server-side TLS (Gateway servers, Sidecar ingress).
fn server_tls(t: &Value, p: &str, r: &mut Report) {
    let mode = str_of(t, "mode").unwrap_or("PASSTHROUGH");
    let cert = !text(t, "serverCertificate").is_empty();
    let key_ = !text(t, "privateKey").is_empty();
    let ca = !text(t, "caCertificates").is_empty();
    let cred = !text(t, "credentialName").is_empty();
    let creds = !list(t, "credentialNames").is_empty();
    let tls_certs = !list(t, "tlsCertificates").is_empty();
    if mode == "ISTIO_MUTUAL" {
        for (set, what) in [
            (cert, "server certificate"),
            (key_, "private key"),
            (ca, "CA bundle"),
            (tls_certs, "tlsCertificates"),
            (cred, "credentialName"),
            (creds, "credentialNames"),
        ] {
            if set {
                r.error(p, format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
            }
        }
        return;
    }
    let sources = [cred, creds, cert || key_, tls_certs]
        .iter()
        .filter(|x| **x)
        .count();
    if sources > 1 {
        r.error(
            p,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    if creds && list(t, "credentialNames").len() > 2 {
        r.error(
            field(p, "credentialNames"),
            "credentialNames may hold at most two names",
        );
    }
    if matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") && !cred && !creds && !tls_certs {
        if !cert {
            r.error(
                field(p, "serverCertificate"),
                format!("{mode} TLS requires a server certificate"),
            );
        }
        if !key_ {
            r.error(
                field(p, "privateKey"),
                format!("{mode} TLS requires a private key"),
            );
        }
        if mode != "SIMPLE" && !ca {
            r.error(
                field(p, "caCertificates"),
                format!("{mode} TLS requires a client CA bundle"),
            );
        }
    }
    if !text(t, "caCrl").is_empty() {
        if cred {
            r.error(
                field(p, "caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        } else if mode == "SIMPLE" {
            r.error(field(p, "caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
    let order = |v: &str| match v {
        "TLSV1_0" => 1,
        "TLSV1_1" => 2,
        "TLSV1_2" => 3,
        "TLSV1_3" => 4,
        _ => 0,
    };
    let (min, max) = (
        order(text(t, "minProtocolVersion")),
        order(text(t, "maxProtocolVersion")),
    );
    if min > 0 && max > 0 && min > max {
        r.error(
            field(p, "minProtocolVersion"),
            "tls.minProtocolVersion should not be higher than tls.maxProtocolVersion",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, c) in strings(t, "cipherSuites").iter().enumerate() {
        if !seen.insert(*c) {
            r.warn(
                index(&field(p, "cipherSuites"), i),
                format!("cipher suite {c} is duplicated"),
            );
        }
    }
}

/// Client-side TLS (DestinationRule traffic policies).
fn client_tls(t: &Value, p: &str, r: &mut Report) {
    let mode = text(t, "mode");
    let cert = !text(t, "clientCertificate").is_empty();
    let key_ = !text(t, "privateKey").is_empty();
    let cred = !text(t, "credentialName").is_empty();
    match mode {
        "ISTIO_MUTUAL" => {
            for (set, what) in [
                (cert, "client certificate"),
                (key_, "private key"),
                (!text(t, "caCertificates").is_empty(), "CA bundle"),
                (cred, "credentialName"),
            ] {
                if set {
                    r.error(p, format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
                }
            }
        }
        "MUTUAL" if !cred => {
            if !cert {
                r.error(
                    field(p, "clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !key_ {
                r.error(
                    field(p, "privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
        _ => {}
    }
    if boolean(t, "insecureSkipVerify")
        && (!text(t, "caCertificates").is_empty() || !list(t, "subjectAltNames").is_empty())
    {
        r.error(
            field(p, "insecureSkipVerify"),
            "cannot set caCertificates or subjectAltNames when insecureSkipVerify is true",
        );
    }
}

/// DestinationRule: host, traffic policies, subsets, exportTo.
pub fn destination_rule(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    let host = text(spec, "host");
    if host.is_empty() {
        r.error("spec.host", "host is required");
    } else if let Err(e) = validate_wildcard_domain(host) {
        r.error("spec.host", e);
    }
    if let Some(tp) = get(spec, "trafficPolicy") {
        traffic_policy(tp, "spec.trafficPolicy", r);
    }
    let mut names = BTreeSet::new();
    for (i, s) in list(spec, "subsets").iter().enumerate() {
        let p = index("spec.subsets", i);
        let name = text(s, "name");
        if name.is_empty() {
            r.error(field(&p, "name"), "subset name cannot be empty");
        } else if !is_dns1123_label(name) {
            r.error(field(&p, "name"), format!("subset name is invalid: {name}"));
        } else if !names.insert(name) {
            r.error(field(&p, "name"), format!("duplicate subset names: {name}"));
        }
        if let Some(labels) = obj(s, "labels") {
            check_labels_map(labels, &field(&p, "labels"), r, false);
        }
        if let Some(tp) = get(s, "trafficPolicy") {
            traffic_policy(tp, &field(&p, "trafficPolicy"), r);
        }
    }
    check_selector(spec, "workloadSelector", "matchLabels", "spec", r);
    check_export_to(spec, res.namespace, false, r);
    if has(spec, "workloadSelector") {
        let export = strings(spec, "exportTo");
        if export.len() > 1 {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        } else if export
            .first()
            .is_some_and(|e| *e != "." && *e != res.namespace)
        {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
}

fn traffic_policy(tp: &Value, p: &str, r: &mut Report) {
    if is_empty_object(tp) {
        r.error(p, "traffic policy must have at least one field");
        return;
    }
    if has(tp, "tunnel") && has(tp, "proxyProtocol") {
        r.error(p, "tunnel and proxyProtocol must not be set together");
    }
    if let Some(t) = get(tp, "tunnel") {
        let tp_ = field(p, "tunnel");
        let proto = str_of(t, "protocol").unwrap_or("CONNECT");
        if !matches!(proto.to_ascii_uppercase().as_str(), "CONNECT" | "POST") {
            r.error(
                field(&tp_, "protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        let target = text(t, "targetHost");
        if validate_fqdn(target).is_err() && !is_ip(target) {
            r.error(
                field(&tp_, "targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {target:?}"),
            );
        }
        match int(t, "targetPort") {
            Some(n) => {
                if let Err(e) = validate_port(n) {
                    r.error(
                        field(&tp_, "targetPort"),
                        format!("tunnel target port is invalid: {e}"),
                    );
                }
            }
            None => r.error(
                field(&tp_, "targetPort"),
                "tunnel target port is invalid: not set",
            ),
        }
    }
    if let Some(cp) = get(tp, "connectionPool") {
        connection_pool(cp, &field(p, "connectionPool"), r);
    }
    if let Some(od) = get(tp, "outlierDetection") {
        let op = field(p, "outlierDetection");
        for k in ["maxEjectionPercent", "minHealthPercent"] {
            if let Some(n) = int(od, k) {
                if !(0..=100).contains(&n) {
                    r.error(field(&op, k), format!("{k} must be in range [0, 100]"));
                }
            }
        }
        for k in [
            "consecutiveErrors",
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
        ] {
            if int(od, k).is_some_and(|n| n < 0) {
                r.error(field(&op, k), format!("{k} must be non-negative"));
            }
        }
    }
    if let Some(lb) = get(tp, "loadBalancer") {
        load_balancer(lb, &field(p, "loadBalancer"), r);
    }
    if let Some(t) = get(tp, "tls") {
        client_tls(t, &field(p, "tls"), r);
    }
    if let Some(pp) = get(tp, "proxyProtocol") {
        let v = str_of(pp, "version").unwrap_or("V1");
        if !matches!(v, "V1" | "V2") {
            r.error(
                field(p, "proxyProtocol.version"),
                format!("proxy protocol version is invalid: {v}"),
            );
        }
    }
    let mut ports = BTreeSet::new();
    for (i, pl) in list(tp, "portLevelSettings").iter().enumerate() {
        let pp = index(&field(p, "portLevelSettings"), i);
        match get(pl, "port").and_then(|x| int(x, "number")) {
            Some(n) => {
                if let Err(e) = validate_port(n) {
                    r.error(field(&pp, "port.number"), e);
                } else if !ports.insert(n) {
                    r.error(
                        field(&pp, "port.number"),
                        format!("duplicate port traffic policy for port {n}"),
                    );
                }
            }
            None => r.error(field(&pp, "port"), "portTrafficPolicy must have valid port"),
        }
        let fields = ["connectionPool", "loadBalancer", "outlierDetection", "tls"];
        if !fields.iter().any(|k| has(pl, k)) {
            r.error(&pp, "port traffic policy must have at least one field");
        }
        if let Some(cp) = get(pl, "connectionPool") {
            connection_pool(cp, &field(&pp, "connectionPool"), r);
        }
        if let Some(lb) = get(pl, "loadBalancer") {
            load_balancer(lb, &field(&pp, "loadBalancer"), r);
        }
        if let Some(t) = get(pl, "tls") {
            client_tls(t, &field(&pp, "tls"), r);
        }
    }
}

fn connection_pool(cp: &Value, p: &str, r: &mut Report) {
    if is_empty_object(cp) {
        r.error(p, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = get(cp, "http") {
        let hp = field(p, "http");
        for (k, what) in [
            ("http1MaxPendingRequests", "http1 max pending requests"),
            ("http2MaxRequests", "http2 max requests"),
            ("maxRequestsPerConnection", "max requests per connection"),
            ("maxRetries", "max retries"),
            ("maxConcurrentStreams", "max concurrent streams"),
        ] {
            if int(h, k).is_some_and(|n| n < 0) {
                r.error(field(&hp, k), format!("{what} must be non-negative"));
            }
        }
        if boolean(h, "useClientProtocol") && text(h, "h2UpgradePolicy") == "UPGRADE" {
            r.error(
                field(&hp, "useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = get(cp, "tcp") {
        if int(t, "maxConnections").is_some_and(|n| n < 0) {
            r.error(
                field(p, "tcp.maxConnections"),
                "max connections must be non-negative",
            );
        }
    }
}

fn load_balancer(lb: &Value, p: &str, r: &mut Report) {
    if let Some(ch) = get(lb, "consistentHash") {
        let cp = field(p, "consistentHash");
        if let Some(cookie) = get(ch, "httpCookie") {
            if text(cookie, "name").is_empty() {
                r.error(
                    field(&cp, "httpCookie.name"),
                    "name required for HttpCookie",
                );
            }
            let mut names = BTreeSet::new();
            for (i, a) in list(cookie, "attributes").iter().enumerate() {
                let n = text(a, "name");
                let ap = index(&field(&cp, "httpCookie.attributes"), i);
                if n.is_empty() {
                    r.error(ap, "cookie attribute name cannot be empty");
                } else if !names.insert(n) {
                    r.error(ap, format!("duplicate cookie attribute name: {n}"));
                }
            }
        }
        if let Some(h) = str_of(ch, "httpHeaderName") {
            if let Err(e) = validate_header_name(h) {
                r.error(field(&cp, "httpHeaderName"), e);
            }
        }
        if has(ch, "minimumRingSize") && (has(ch, "maglev") || has(ch, "ringHash")) {
            r.error(
                &cp,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
        if let Some(m) = get(ch, "maglev") {
            match int(m, "tableSize") {
                None | Some(0) => r.error(
                    field(&cp, "maglev.tableSize"),
                    "tableSize must be set for maglev",
                ),
                Some(n) if n >= 5_000_011 => r.error(
                    field(&cp, "maglev.tableSize"),
                    "tableSize must be less than 5000011 for maglev",
                ),
                Some(n) if !is_prime(n) => r.error(
                    field(&cp, "maglev.tableSize"),
                    "tableSize must be a prime number for maglev",
                ),
                _ => {}
            }
        }
    }
    if has(lb, "simple") && has(lb, "consistentHash") {
        r.error(p, "only one of simple or consistentHash can be set");
    }
    if let Some(l) = get(lb, "localityLbSetting") {
        let lp = field(p, "localityLbSetting");
        if !list(l, "distribute").is_empty() && !list(l, "failover").is_empty() {
            r.error(
                &lp,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
        }
        for (i, d) in list(l, "distribute").iter().enumerate() {
            let total: i64 = obj(d, "to")
                .map(|m| m.values().filter_map(Value::as_i64).sum())
                .unwrap_or(0);
            if total != 100 {
                r.error(
                    index(&field(&lp, "distribute"), i),
                    format!("total weight of locality distribution must be 100, got {total}"),
                );
            }
        }
        for (i, f) in list(l, "failover").iter().enumerate() {
            if !text(f, "from").is_empty() && text(f, "from") == text(f, "to") {
                r.error(
                    index(&field(&lp, "failover"), i),
                    "locality lb failover settings must specify different regions",
                );
            }
        }
    }
    if let Some(w) = get(lb, "warmup") {
        let wp = field(p, "warmup");
        if !has(w, "duration") {
            r.error(field(&wp, "duration"), "duration is required");
        }
        if num(w, "minimumPercent").is_some_and(|n| n > 100.0) {
            r.error(
                field(&wp, "minimumPercent"),
                "minimumPercent value should be less than or equal to 100",
            );
        }
        if num(w, "aggression").is_some_and(|n| n <= 0.0) {
            r.error(
                field(&wp, "aggression"),
                "aggression should be greater than 0",
            );
        }
    }
}

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2i64;
    while i * i <= n {
        if n % i == 0 {
            return false;
        }
        i += 1;
    }
    true
}

fn validate_unix_address(addr: &str) -> Result<(), String> {
    let path = addr.strip_prefix(UNIX_PREFIX).unwrap_or(addr);
    if path.is_empty() {
        return Err("unix address must not be empty".to_owned());
    }
    if path.starts_with('@') {
        return Ok(()); // abstract socket
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!("{path} is not an absolute path to a file"));
    }
    Ok(())
}

/// ServiceEntry: hosts, addresses, ports, resolution and endpoint combinations.
pub fn service_entry(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    let resolution = str_of(spec, "resolution").unwrap_or("NONE");
    let hosts = strings(spec, "hosts");
    if hosts.is_empty() {
        r.error("spec.hosts", "service entry must have at least one host");
    }
    for (i, h) in hosts.iter().enumerate() {
        let p = index("spec.hosts", i);
        if *h == "*" {
            r.error(p, "invalid host *: hostname cannot be wildcard");
        } else if let Err(e) = validate_wildcard_domain(h) {
            r.error(p, format!("invalid host {h}: {e}"));
        }
    }
    let endpoints = list(spec, "endpoints");
    if has(spec, "workloadSelector") && !endpoints.is_empty() {
        r.error(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    check_selector(spec, "workloadSelector", "labels", "spec", r);
    for (i, a) in strings(spec, "addresses").iter().enumerate() {
        let p = index("spec.addresses", i);
        if !is_ip_or_cidr(a) {
            r.error(
                p,
                format!("invalid address {a}: must be an IP address or CIDR block"),
            );
        } else if a.contains('/') && !matches!(resolution, "NONE" | "STATIC") {
            r.error(
                p,
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    let mut tcp_without_address = false;
    let mut non_http_tls = false;
    for (i, port) in list(spec, "ports").iter().enumerate() {
        let p = index("spec.ports", i);
        let name = text(port, "name");
        if !name.is_empty() {
            if let Err(e) = validate_port_name(name) {
                r.error(field(&p, "name"), e);
            }
            if !names.insert(name) {
                r.error(
                    field(&p, "name"),
                    format!("service entry port name {name:?} already defined"),
                );
            }
            port_names.insert(name.to_owned());
        }
        check_port_field(port, "number", &p, r);
        check_port_field(port, "targetPort", &p, r);
        if let Some(n) = int(port, "number") {
            if !numbers.insert(n) {
                r.error(
                    field(&p, "number"),
                    format!("service entry port {n} already defined"),
                );
            }
        }
        let proto = text(port, "protocol");
        if !proto.is_empty() {
            if let Err(e) = validate_protocol(proto) {
                r.error(field(&p, "protocol"), e);
            }
        }
        if (proto.is_empty() || proto.eq_ignore_ascii_case("TCP"))
            && strings(spec, "addresses").is_empty()
        {
            tcp_without_address = true;
        }
        if !is_http_like(proto)
            && !proto.eq_ignore_ascii_case("TLS")
            && !proto.eq_ignore_ascii_case("HTTPS")
        {
            non_http_tls = true;
        }
    }
    if tcp_without_address && resolution != "NONE" {
        r.warn(
            "spec.addresses",
            "addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set",
        );
    }
    if non_http_tls && hosts.len() > 1 && strings(spec, "addresses").is_empty() {
        r.warn(
            "spec.hosts",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }
    match resolution {
        "NONE" => {
            if !endpoints.is_empty() {
                r.error(
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none",
                );
            }
        }
        "STATIC" | "DNS" | "DNS_ROUND_ROBIN" => {
            if matches!(resolution, "DNS" | "DNS_ROUND_ROBIN") && endpoints.is_empty() {
                for (i, h) in hosts.iter().enumerate() {
                    if h.starts_with('*') {
                        r.error(
                            index("spec.hosts", i),
                            format!("hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"),
                        );
                    }
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && endpoints.len() > 1 {
                r.error(
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for (i, ep) in endpoints.iter().enumerate() {
                let p = index("spec.endpoints", i);
                let addr = text(ep, "address");
                let ok = if addr.starts_with(UNIX_PREFIX) {
                    validate_unix_address(addr).is_ok()
                } else if resolution == "STATIC" {
                    is_ip(addr) || (addr.is_empty() && has(ep, "network"))
                } else {
                    is_ip(addr)
                        || validate_fqdn(addr).is_ok()
                        || (addr.is_empty() && has(ep, "network"))
                };
                if !ok {
                    let what = if resolution == "STATIC" {
                        "a valid IP address"
                    } else {
                        "a valid FQDN or an IP address"
                    };
                    r.error(
                        field(&p, "address"),
                        format!("endpoint address {addr:?} is not {what}"),
                    );
                }
                workload_ports(ep, &p, &port_names, r);
            }
        }
        "DYNAMIC_DNS" => {
            if !hosts.iter().any(|h| h.starts_with('*')) {
                r.error("spec.hosts", format!("at least one wildcard host must be provided for resolution type {resolution}"));
            }
            if !endpoints.is_empty() {
                r.error(
                    "spec.endpoints",
                    format!("endpoints cannot be set for resolution type {resolution}"),
                );
            }
        }
        other => r.error(
            "spec.resolution",
            format!("unsupported resolution type {other}"),
        ),
    }
    check_export_to(spec, res.namespace, true, r);
}

/// `ports` of an endpoint: names the ServiceEntry defines, numbers in range.
fn workload_ports(ep: &Value, p: &str, names: &BTreeSet<String>, r: &mut Report) {
    let Some(ports) = obj(ep, "ports") else {
        return;
    };
    if text(ep, "address").starts_with(UNIX_PREFIX) {
        r.error(
            field(p, "ports"),
            format!(
                "unix endpoint {} must not include ports",
                text(ep, "address")
            ),
        );
    }
    for (name, n) in ports {
        if !names.is_empty() && !names.contains(name) {
            r.error(
                key(&field(p, "ports"), name),
                format!("endpoint port {name} is not defined by the service entry"),
            );
        }
        if let Some(n) = n.as_i64() {
            if let Err(e) = validate_port(n) {
                r.error(key(&field(p, "ports"), name), e);
            }
        }
    }
}

/// Sidecar: ingress and egress listeners, outbound traffic policy.
pub fn sidecar(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "workloadSelector", "labels", "spec", r);
    let egress = list(spec, "egress");
    let ingress = list(spec, "ingress");
    if egress.is_empty()
        && ingress.is_empty()
        && !has(spec, "outboundTrafficPolicy")
        && !has(spec, "inboundConnectionPool")
    {
        r.error("spec", "sidecar: empty configuration provided");
    }
    let mut ip_ports = BTreeSet::new();
    for (i, l) in ingress.iter().enumerate() {
        let p = index("spec.ingress", i);
        let Some(port) = get(l, "port") else {
            r.error(
                field(&p, "port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        sidecar_port(port, text(l, "bind"), &field(&p, "port"), r);
        if int(port, "targetPort").unwrap_or(0) > 0 {
            r.error(
                field(&p, "port.targetPort"),
                "targetPort has no impact on Sidecars",
            );
        }
        if let Some(n) = int(port, "number") {
            if !ip_ports.insert(n) {
                r.error(
                    field(&p, "port"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
        }
        let ep = text(l, "defaultEndpoint");
        if !ep.is_empty() && !ep.starts_with(UNIX_PREFIX) {
            let port_str = ep.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
            let host = ep.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
            if !matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]") {
                r.error(
                    field(&p, "defaultEndpoint"),
                    format!("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, or unix://filepath, got {ep:?}"),
                );
            } else {
                match port_str.parse::<i64>() {
                    Ok(n) => {
                        if let Err(e) = validate_port(n) {
                            r.error(field(&p, "defaultEndpoint"), e);
                        }
                    }
                    Err(e) => r.error(
                        field(&p, "defaultEndpoint"),
                        format!("sidecar: defaultEndpoint port ({port_str}) is not a number: {e}"),
                    ),
                }
            }
        }
        if let Some(t) = get(l, "tls") {
            let tp = field(&p, "tls");
            for (k, what) in [
                (
                    "subjectAltNames",
                    "sidecar: subjectAltNames is not supported in ingress tls",
                ),
                ("httpsRedirect", "sidecar: httpsRedirect is not supported"),
                (
                    "credentialName",
                    "sidecar: credentialName is not currently supported",
                ),
                (
                    "credentialNames",
                    "sidecar: credentialNames is not currently supported",
                ),
                (
                    "tlsCertificates",
                    "sidecar: tls_certificates is not currently supported",
                ),
            ] {
                let set = match get(t, k) {
                    Some(Value::Array(a)) => !a.is_empty(),
                    Some(Value::Bool(b)) => *b,
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(_) => true,
                    None => false,
                };
                if set {
                    r.error(field(&tp, k), what);
                }
            }
            let mode = text(t, "mode");
            if matches!(mode, "ISTIO_MUTUAL" | "AUTO_PASSTHROUGH") {
                r.error(
                    field(&tp, "mode"),
                    format!("cannot set mode to {mode} in sidecar ingress tls"),
                );
            }
            let proto = text(port, "protocol").to_ascii_uppercase();
            if !matches!(proto.as_str(), "HTTPS" | "TLS") {
                r.error(
                    &tp,
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            }
        }
    }
    let mut egress_ports = BTreeSet::new();
    let mut uds = BTreeSet::new();
    let mut portless = 0;
    for (i, l) in egress.iter().enumerate() {
        let p = index("spec.egress", i);
        let bind = text(l, "bind");
        match get(l, "port") {
            None => {
                portless += 1;
                if i != egress.len() - 1 {
                    r.error(
                        &p,
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
                if portless > 1 {
                    r.error(
                        &p,
                        "sidecar: egress can have only one listener with empty port",
                    );
                }
            }
            Some(port) => {
                sidecar_port(port, bind, &field(&p, "port"), r);
                if int(port, "targetPort").unwrap_or(0) > 0 {
                    r.error(
                        field(&p, "port.targetPort"),
                        "targetPort has no impact on Sidecars",
                    );
                }
                if bind.starts_with(UNIX_PREFIX) {
                    if !uds.insert(bind.to_owned()) {
                        r.error(
                            field(&p, "bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                    let mode = text(l, "captureMode");
                    if !matches!(mode, "" | "DEFAULT" | "NONE") {
                        r.error(field(&p, "captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
                    }
                } else {
                    let n = int(port, "number").unwrap_or(0);
                    if !egress_ports.insert((bind.to_owned(), n)) {
                        r.error(
                            field(&p, "port"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        let hosts = strings(l, "hosts");
        if hosts.is_empty() {
            r.error(
                field(&p, "hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        let mut seen = BTreeSet::new();
        for (j, h) in hosts.iter().enumerate() {
            let hp = index(&field(&p, "hosts"), j);
            if let Err(e) = validate_namespace_slash_host(h) {
                r.error(&hp, e);
            } else if !seen.insert(*h) {
                r.warn(&hp, format!("duplicated egress host: {h}"));
            }
        }
        if hosts.contains(&"*/*") && hosts.len() > 1 {
            r.warn(
                field(&p, "hosts"),
                "`*/*` host select all resources, no other hosts can be added",
            );
        }
    }
    if let Some(tp) = get(spec, "outboundTrafficPolicy") {
        let mode = str_of(tp, "mode").unwrap_or("REGISTRY_ONLY");
        if mode == "ALLOW_ANY_DYNAMIC_DNS" {
            r.error(
                "spec.outboundTrafficPolicy.mode",
                "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in Sidecar resource",
            );
        }
        if let Some(proxy) = get(tp, "egressProxy") {
            if mode != "ALLOW_ANY" {
                r.error(
                    "spec.outboundTrafficPolicy.egressProxy",
                    "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                );
            }
            if text(proxy, "host").is_empty() {
                r.error(
                    "spec.outboundTrafficPolicy.egressProxy.host",
                    "egress proxy host is required",
                );
            }
            if get(proxy, "port").is_none() {
                r.error(
                    "spec.outboundTrafficPolicy.egressProxy.port",
                    "sidecar: egress_proxy port must be non-nil",
                );
            }
        }
    }
}

fn sidecar_port(port: &Value, bind: &str, p: &str, r: &mut Report) {
    let n = int(port, "number").unwrap_or(0);
    if bind.starts_with(UNIX_PREFIX) {
        if let Err(e) = validate_unix_address(bind) {
            r.error(p, e);
        }
    } else {
        if n == 0 {
            r.error(
                field(p, "number"),
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            );
        } else if let Err(e) = validate_port(n) {
            r.error(field(p, "number"), e);
        }
        if !bind.is_empty() && !is_ip(bind) {
            r.error(
                p,
                format!("sidecar: bind {bind:?} must be an IP address or unix://path"),
            );
        }
    }
    let proto = text(port, "protocol");
    if !proto.is_empty() {
        if let Err(e) = validate_protocol(proto) {
            r.error(field(p, "protocol"), e);
        }
    }
    let name = text(port, "name");
    if !name.is_empty() {
        if let Err(e) = validate_port_name(name) {
            r.error(field(p, "name"), e);
        }
    }
}

/// WorkloadEntry: address forms, ports, labels.
pub fn workload_entry(res: &Resource<'_>, r: &mut Report) {
    workload(res.spec, "spec", true, r);
}

fn workload(w: &Value, p: &str, require_address: bool, r: &mut Report) {
    let addr = text(w, "address");
    if addr.is_empty() {
        if require_address && !has(w, "network") {
            r.error(
                field(p, "address"),
                "address is required (or network for a workload behind a gateway)",
            );
        }
    } else if addr.starts_with(UNIX_PREFIX) {
        if let Err(e) = validate_unix_address(addr) {
            r.error(field(p, "address"), e);
        }
        if has(w, "ports") {
            r.error(
                field(p, "ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !is_ip(addr) && validate_fqdn(addr).is_err() {
        r.error(
            field(p, "address"),
            format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
        );
    }
    if let Some(ports) = obj(w, "ports") {
        for (name, n) in ports {
            if let Err(e) = validate_port_name(name) {
                r.error(key(&field(p, "ports"), name), e);
            }
            if let Some(n) = n.as_i64() {
                if let Err(e) = validate_port(n) {
                    r.error(key(&field(p, "ports"), name), e);
                }
            }
        }
    }
    if let Some(labels) = obj(w, "labels") {
        check_labels_map(labels, &field(p, "labels"), r, false);
    }
    let sa = text(w, "serviceAccount");
    if !sa.is_empty() && validate_fqdn(sa).is_err() {
        r.error(
            field(p, "serviceAccount"),
            format!("invalid service account name {sa:?}"),
        );
    }
}

/// WorkloadGroup: template, metadata, readiness probe.
pub fn workload_group(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    match get(spec, "template") {
        Some(t) => workload(t, "spec.template", false, r),
        None => r.error("spec.template", "template is required"),
    }
    if let Some(m) = get(spec, "metadata") {
        if let Some(labels) = obj(m, "labels") {
            check_labels_map(labels, "spec.metadata.labels", r, false);
        }
    }
    if let Some(probe) = get(spec, "probe") {
        let p = "spec.probe";
        for k in [
            "periodSeconds",
            "initialDelaySeconds",
            "timeoutSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            if int(probe, k).is_some_and(|n| n < 0) {
                r.error(field(p, k), format!("{k} must be non-negative"));
            }
        }
        let methods: Vec<&str> = ["httpGet", "tcpSocket", "exec", "grpc"]
            .into_iter()
            .filter(|k| has(probe, k))
            .collect();
        if methods.len() != 1 {
            r.error(
                p,
                "exactly one of httpGet, tcpSocket, exec or grpc must be set",
            );
        }
        if let Some(h) = get(probe, "httpGet") {
            check_port_field(h, "port", &field(p, "httpGet"), r);
            if !has(h, "port") {
                r.error(field(p, "httpGet.port"), "port is required");
            }
            for (i, hd) in list(h, "httpHeaders").iter().enumerate() {
                if let Err(e) = validate_header_name(text(hd, "name")) {
                    r.error(index(&field(p, "httpGet.httpHeaders"), i), e);
                }
            }
        }
        if let Some(t) = get(probe, "tcpSocket") {
            check_port_field(t, "port", &field(p, "tcpSocket"), r);
            if !has(t, "port") {
                r.error(field(p, "tcpSocket.port"), "port is required");
            }
        }
        if let Some(e) = get(probe, "exec") {
            if list(e, "command").is_empty() {
                r.error(field(p, "exec.command"), "exec.command is required");
            }
        }
    }
}

/// Listener-class, route-class and cluster-class `applyTo` values, and the match each needs.
fn apply_to_class(apply: &str) -> Option<&'static str> {
    match apply {
        "LISTENER" | "FILTER_CHAIN" | "NETWORK_FILTER" | "HTTP_FILTER" | "LISTENER_FILTER" => {
            Some("listener")
        }
        "ROUTE_CONFIGURATION" | "VIRTUAL_HOST" | "HTTP_ROUTE" => Some("routeConfiguration"),
        "CLUSTER" => Some("cluster"),
        _ => None,
    }
}

/// EnvoyFilter: config patches.
pub fn envoy_filter(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    r.warn(
        "spec",
        "EnvoyFilter exposes internal implementation details that may change at any time. Prefer other APIs if possible, and exercise extreme caution, especially around upgrades.",
    );
    check_selector(spec, "workloadSelector", "labels", "spec", r);
    check_target_refs(spec, r);
    for (i, cp) in list(spec, "configPatches").iter().enumerate() {
        let p = index("spec.configPatches", i);
        let apply = text(cp, "applyTo");
        if apply.is_empty() || apply == "INVALID" {
            r.error(field(&p, "applyTo"), "Envoy filter: missing applyTo");
        }
        let Some(patch) = get(cp, "patch") else {
            r.error(field(&p, "patch"), "Envoy filter: missing patch");
            continue;
        };
        let op = text(patch, "operation");
        if op.is_empty() || op == "INVALID" {
            r.error(
                field(&p, "patch.operation"),
                "Envoy filter: missing patch operation",
            );
        }
        if op != "REMOVE" && !op.is_empty() && !has(patch, "value") {
            r.error(
                field(&p, "patch.value"),
                "Envoy filter: missing patch value for non-remove operation",
            );
        }
        let Some(m) = get(cp, "match") else {
            continue;
        };
        let mp = field(&p, "match");
        if let Some(pv) = get(m, "proxy").and_then(|x| str_of(x, "proxyVersion")) {
            if let Err(e) = validate_regex(pv) {
                r.error(
                    field(&mp, "proxy.proxyVersion"),
                    format!("Envoy filter: invalid regex for proxy version, [{e}]"),
                );
            }
        }
        let class = apply_to_class(apply);
        let wrong = [
            ("listener", "listener"),
            ("routeConfiguration", "http route"),
            ("cluster", "cluster"),
        ];
        for (k, what) in wrong {
            if has(m, k) && class.is_some_and(|c| c != k) {
                let c = class.unwrap_or("");
                let needs = wrong
                    .iter()
                    .find(|(x, _)| *x == c)
                    .map(|(_, w)| *w)
                    .unwrap_or("");
                r.error(
                    field(&mp, k),
                    format!(
                        "Envoy filter: applyTo for {needs} class objects cannot have non {} match",
                        if needs == "http route" {
                            "route configuration"
                        } else {
                            needs
                        }
                    ),
                );
                let _ = what;
            }
        }
        if let Some(l) = get(m, "listener") {
            if let Some(fc) = get(l, "filterChain") {
                if let Some(f) = get(fc, "filter") {
                    if text(f, "name").is_empty() {
                        r.error(
                            field(&mp, "listener.filterChain.filter.name"),
                            "Envoy filter: filter match has no name to match on",
                        );
                    }
                    if let Some(sf) = get(f, "subFilter") {
                        if apply != "HTTP_FILTER" {
                            r.error(field(&mp, "listener.filterChain.filter.subFilter"), "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only");
                        }
                        if text(sf, "name").is_empty() {
                            r.error(
                                field(&mp, "listener.filterChain.filter.subFilter.name"),
                                "Envoy filter: subfilter match has no name to match on",
                            );
                        }
                    }
                }
            }
            check_port_field(l, "portNumber", &field(&mp, "listener"), r);
        }
        if let Some(c) = get(m, "cluster") {
            check_port_field(c, "portNumber", &field(&mp, "cluster"), r);
        }
    }
}

/// ProxyConfig: concurrency, selector, environment.
pub fn proxy_config(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    if int(spec, "concurrency").is_some_and(|n| n < 0) {
        r.error(
            "spec.concurrency",
            "concurrency must be greater than or equal to 0",
        );
    }
    if let Some(env) = obj(spec, "environmentVariables") {
        for k in env.keys() {
            if k.is_empty() || k.contains('=') {
                r.error(
                    key("spec.environmentVariables", k),
                    "invalid environment variable name",
                );
            }
        }
    }
}

/// Durations that must be whole seconds (CORS `maxAge`).
pub(crate) fn whole_seconds(d: Duration) -> bool {
    d.subsec_nanos() == 0
}

/// A count of something by key, for duplicate detection.
pub(crate) fn duplicates<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m.retain(|_, n| *n > 1);
    m
}
