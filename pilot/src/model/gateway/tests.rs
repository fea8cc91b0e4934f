use super::*;
use crate::testing::{push_context, router, sidecar};

const INGRESS: &[(&str, &str)] = &[("istio", "ingressgateway")];

fn gateway(ns: &str, name: &str, servers: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}\n"
    )
}

fn merged(yaml: &str) -> MergedGateway {
    let push = push_context(yaml);
    push.merged_gateway(&router("10.0.0.9", "istio-system", INGRESS, &[]))
        .expect("a gateway selects the router")
}

fn ports(m: &MergedGateway) -> Vec<(u32, &str, Vec<&str>)> {
    m.server_ports
        .iter()
        .map(|p| {
            let gateways = m.servers_of(p).map(|s| s.gateway.as_str()).collect();
            (p.number, p.protocol.as_str(), gateways)
        })
        .collect()
}

#[test]
fn gateway_names_resolve_relative_to_the_virtual_service() {
    for (name, want) in [
        ("mesh", "mesh"),
        ("gw", "apps/gw"),
        ("./gw", "apps/gw"),
        ("istio-system/gw", "istio-system/gw"),
        ("gw.istio-system.svc.cluster.local", "istio-system/gw"),
        ("gw.istio-system", "istio-system/gw"),
    ] {
        assert_eq!(resolve_gateway_name(name, "apps"), want, "{name}");
    }
}

#[test]
fn tls_modes_parse_with_simple_as_default() {
    assert_eq!(TlsMode::parse(None), TlsMode::Simple);
    assert_eq!(TlsMode::parse(Some("ISTIO_MUTUAL")), TlsMode::IstioMutual);
    assert!(TlsMode::parse(Some("AUTO_PASSTHROUGH")).is_passthrough());
    assert!(!TlsMode::parse(Some("OPTIONAL_MUTUAL")).is_passthrough());
}

#[test]
fn gateways_select_routers_by_labels_and_optionally_by_namespace() {
    let yaml = format!(
        "{}{}",
        gateway(
            "istio-system",
            "a",
            "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}"
        ),
        gateway(
            "apps",
            "b",
            "  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}"
        ),
    );
    let mut push = push_context(&yaml);
    let gw = router("10.0.0.9", "istio-system", INGRESS, &[]);
    let all = push.merged_gateway(&gw).expect("selected");
    assert_eq!(ports(&all).len(), 2);
    assert!(push
        .merged_gateway(&router(
            "10.0.0.9",
            "istio-system",
            &[("app", "other")],
            &[]
        ))
        .is_none());
    push.scope_gateway_to_namespace = true;
    let scoped = push.merged_gateway(&gw).expect("selected");
    assert_eq!(ports(&scoped), [(80, "HTTP", vec!["istio-system/a"])]);
}

#[test]
fn plaintext_http_servers_of_two_gateways_share_one_route() {
    let m = merged(&format!(
        "{}{}",
        gateway(
            "istio-system",
            "a",
            "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}"
        ),
        gateway(
            "apps",
            "b",
            "  - {port: {number: 80, name: http2, protocol: HTTP2}, hosts: [b.example.com]}"
        ),
    ));
    assert_eq!(ports(&m), [(80, "HTTP", vec!["istio-system/a", "apps/b"])]);
    assert_eq!(m.servers_for_route("http.80").count(), 2);
}

#[test]
fn https_servers_get_a_route_each_and_conflicts_are_dropped() {
    let m = merged(&format!(
        "{}{}",
        gateway(
            "istio-system",
            "a",
            "  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: a-cert}}\n  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}"
        ),
        gateway(
            "apps",
            "b",
            // Same port name on 443, other host: its own route. Same host: dropped.
            // TCP on the HTTP port: dropped.
            "  - {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [b.example.com], tls: {mode: MUTUAL, credentialName: b-cert}}\n  - {port: {number: 443, name: https-c, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE}}\n  - {port: {number: 80, name: tcp, protocol: TCP}, hosts: ['*']}"
        ),
    ));
    assert_eq!(
        ports(&m),
        [
            (443, "HTTPS", vec!["istio-system/a", "apps/b"]),
            (80, "HTTP", vec!["istio-system/a"]),
        ]
    );
    let routes: Vec<&str> = m.servers_by_route_name.keys().map(String::as_str).collect();
    assert_eq!(
        routes,
        [
            "http.80",
            "https.443.https-b.b.apps",
            "https.443.https.a.istio-system"
        ]
    );
    let b = m
        .servers
        .iter()
        .find(|s| s.gateway == "apps/b")
        .expect("b merged");
    assert_eq!(b.sni_hosts, ["b.example.com"]);
    assert_eq!(b.tls_mode(), Some(TlsMode::Mutual));
    assert!(!m.auto_passthrough);
}

#[test]
fn passthrough_servers_have_no_route_and_auto_passthrough_is_noted() {
    let m = merged(&gateway(
        "istio-system",
        "eastwest",
        "  - {port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*.local'], tls: {mode: AUTO_PASSTHROUGH}}\n  - {port: {number: 443, name: tls-pt, protocol: TLS}, hosts: ['./*.example.com'], tls: {mode: PASSTHROUGH}}",
    ));
    assert!(m.auto_passthrough);
    assert!(m.servers_by_route_name.is_empty());
    let pt = &m.servers[1];
    assert_eq!(pt.server.hosts, ["istio-system/*.example.com"]);
    assert_eq!(pt.sni_hosts, ["*.example.com"]);
    assert!(pt.is_tls() && !pt.is_http());
}

#[test]
fn gateway_ports_translate_to_the_routers_target_ports() {
    let yaml = format!(
        "{}{}",
        kube_fake::objects::manifests(&[
            kube_fake::objects::service("istio-system", "istio-ingressgateway")
                .cluster_ip("10.96.0.80")
                .port(80, "http2")
                .target_port(8080)
                .build(),
            kube_fake::objects::endpoint_slice("istio-system", "ingress-1", "istio-ingressgateway")
                .port(8080, "http2")
                .endpoint("10.0.0.9")
                .build(),
        ]),
        gateway(
            "istio-system",
            "a",
            "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}"
        ),
    );
    let m = merged(&yaml);
    assert_eq!(ports(&m), [(8080, "HTTP", vec!["istio-system/a"])]);
    assert!(m.servers_by_route_name.contains_key("http.8080"));
}

const BOUND: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: apps}
spec:
  hosts: [both.example.com]
  gateways: [mesh, istio-system/gw]
  http: [{route: [{destination: {host: a}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: istio-system}
spec:
  hosts: [edge.example.com]
  gateways: [gw]
  exportTo: [.]
  http: [{route: [{destination: {host: a.apps.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: inner, namespace: apps}
spec:
  hosts: [inner.example.com]
  http: [{route: [{destination: {host: a}}]}]
"#;

#[test]
fn virtual_services_bind_to_the_mesh_and_to_gateways_by_name() {
    let push = push_context(BOUND);
    let names = |v: Vec<&Arc<Named<crate::config::istio::VirtualService>>>| -> Vec<String> {
        v.iter()
            .map(|vs| format!("{}/{}", vs.namespace, vs.name))
            .collect()
    };
    // The private VirtualService first, then the public ones.
    assert_eq!(
        names(push.virtual_services_for_gateway("istio-system", "istio-system/gw")),
        ["istio-system/edge", "apps/both"]
    );
    // A router elsewhere does not see a VirtualService exported to istio-system only.
    assert_eq!(
        names(push.virtual_services_for_gateway("other", "istio-system/gw")),
        ["apps/both"]
    );
    let scope = push.sidecar_scope(&sidecar("10.9.9.9", "apps"));
    let mut seen: Vec<&str> = scope
        .virtual_services
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ["both", "inner"]);
}
