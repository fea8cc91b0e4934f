//! ServiceEntry: hosts, addresses, ports, resolution and endpoint combinations.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, key, Report};
use super::super::Resource;
use super::{validate_unix_address, UNIX_PREFIX};

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
