//! WorkloadEntry and WorkloadGroup: a workload's address, ports, labels and service
//! account (an entry's own, a group's template), and a group's readiness probe.

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, key, Report};
use super::super::Resource;
use super::{validate_unix_address, UNIX_PREFIX};

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
