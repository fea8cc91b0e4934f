//! Gateway: servers, their hosts, ports, binds and TLS.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, Report};
use super::super::Resource;
use super::tls::server_tls;
use super::{validate_unix_address, UNIX_PREFIX};

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
