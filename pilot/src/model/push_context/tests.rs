use kube_fake::objects::{self, manifests};

use super::*;
use crate::testing::{push_context, sidecar};

/// Services `a.ns1`, `b.ns2` and `private.ns2` (exported to its namespace only), with
/// destination rules and a virtual service for `a`.
fn mesh() -> String {
    let http =
        |ns: &str, name: &str, ip: &str| objects::service(ns, name).cluster_ip(ip).port(80, "http");
    let services = [
        http("ns1", "a", "10.0.0.1").build(),
        http("ns2", "b", "10.0.0.2").build(),
        http("ns2", "private", "10.0.0.3")
            .annotation("networking.istio.io/exportTo", ".")
            .build(),
    ];
    format!("{}{ISTIO_CONFIG}", manifests(&services))
}

const ISTIO_CONFIG: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-global, namespace: ns1}
spec: {host: a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-local, namespace: ns2}
spec: {host: a.ns1.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: ns1}
spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}
"#;

#[test]
fn export_to_hides_private_services() {
    let push = push_context(&mesh());
    let hosts = |ns: &str| -> Vec<String> {
        push.sidecar_scope(&sidecar("10.9.9.9", ns))
            .services
            .iter()
            .map(|s| s.hostname.clone())
            .collect()
    };
    assert_eq!(
        hosts("ns1"),
        ["a.ns1.svc.cluster.local", "b.ns2.svc.cluster.local"]
    );
    assert_eq!(hosts("ns2").len(), 3);
}

#[test]
fn sidecar_egress_scopes_services() {
    let push = push_context(&format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns1}}\nspec: {{egress: [{{hosts: [\"./*\"]}}]}}\n",
        mesh()
    ));
    let scope = push.sidecar_scope(&sidecar("10.9.9.9", "ns1"));
    let hosts: Vec<&str> = scope.services.iter().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, ["a.ns1.svc.cluster.local"]);
    assert_eq!(scope.sidecar.as_deref(), Some("ns1/default"));
    assert!(scope
        .virtual_service_for("a.ns1.svc.cluster.local")
        .is_some());
}

#[test]
fn destination_rule_prefers_proxy_namespace() {
    let push = push_context(&mesh());
    let host = "a.ns1.svc.cluster.local";
    assert_eq!(push.destination_rule("ns2", host).unwrap().name, "a-local");
    assert_eq!(push.destination_rule("ns1", host).unwrap().name, "a-global");
    assert_eq!(push.destination_rule("ns3", host).unwrap().name, "a-global");
}

#[test]
fn host_patterns() {
    assert!(host_matches("*", "x.y"));
    assert!(host_matches("*.example.com", "a.example.com"));
    assert!(!host_matches("*.example.com", "example.org"));
    assert_eq!(
        resolve_host("a", "ns", "cluster.local"),
        "a.ns.svc.cluster.local"
    );
    assert_eq!(resolve_host("a.b", "ns", "cluster.local"), "a.b");
}

#[test]
fn endpoint_changes_name_exactly_the_hosts_whose_endpoints_differ() {
    let slice = |svc: &str, ip: &str| {
        objects::endpoint_slice("default", &format!("{svc}-1"), svc)
            .port(8080, "http")
            .endpoint(ip)
            .build()
    };
    let service = |svc: &str, ip: &str| {
        objects::service("default", svc)
            .cluster_ip(ip)
            .port(80, "http")
            .target_port(8080)
            .build()
    };
    let before = push_context(&manifests(&[
        service("a", "10.96.0.1"),
        slice("a", "10.0.0.1"),
        service("b", "10.96.0.2"),
        slice("b", "10.0.0.2"),
        service("c", "10.96.0.3"),
        slice("c", "10.0.0.3"),
    ]));
    let after = push_context(&manifests(&[
        service("a", "10.96.0.1"),
        slice("a", "10.0.0.1"),
        service("b", "10.96.0.2"),
        slice("b", "10.0.0.9"),
        service("c", "10.96.0.3"),
    ]));
    let mut changed: Vec<String> = after.endpoint_changes(&before).into_iter().collect();
    changed.sort();
    assert_eq!(
        changed,
        ["b.default.svc.cluster.local", "c.default.svc.cluster.local"],
        "b moved, c lost its endpoints, a is unchanged"
    );
    assert!(after.endpoint_changes(&after).is_empty());
}
