//! DestinationRule: host, subsets, traffic policies (connection pool, outlier detection,
//! load balancing, TLS, tunnel, proxy protocol, per-port settings) and exportTo.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, Report};
use super::super::Resource;
use super::tls::client_tls;

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
