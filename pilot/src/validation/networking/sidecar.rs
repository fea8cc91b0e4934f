//! Sidecar: ingress and egress listeners, outbound traffic policy.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, Report};
use super::super::Resource;
use super::{validate_unix_address, UNIX_PREFIX};

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

/// A listener port (ingress or egress) and its bind: number or unix socket, protocol,
/// name; `targetPort` is meaningless here.
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
    if int(port, "targetPort").unwrap_or(0) > 0 {
        r.error(
            field(p, "targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
}
