//! Probe rewriting as upstream's `app_probe.go` does it.

use serde_json::json;

use super::*;

fn pod() -> Value {
    json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTPS"}, "timeoutSeconds": 3},
             "livenessProbe": {"tcpSocket": {"port": 9090}},
             "startupProbe": {"grpc": {"port": 7070}},
             "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}}},
            {"name": "side", "livenessProbe": {"httpGet": {"path": "/x", "port": "nope"}},
             "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "istio-proxy", "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
        ]},
    })
}

#[test]
fn probers_are_dumped_with_named_ports_resolved() {
    let dumped = dump_app_probers(&pod(), 15020).expect("probers");
    let v: Value = serde_json::from_str(&dumped).expect("json");
    assert_eq!(
        v,
        json!({
            "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTPS"}, "timeoutSeconds": 3},
            "/app-health/app/livez": {"tcpSocket": {"port": 9090}},
            "/app-health/app/startupz": {"grpc": {"port": 7070}},
            "/app-lifecycle/app/prestopz": {"httpGet": {"path": "/stop", "port": 8080}},
        })
    );
    let none = json!({"spec": {"containers": [{"name": "app"}]}});
    assert_eq!(dump_app_probers(&none, 15020), None);
    let already = json!({"spec": {"containers": [{"name": "app",
        "livenessProbe": {"httpGet": {"path": "/app-health/app/livez", "port": 15020}}}]}});
    assert_eq!(dump_app_probers(&already, 15020), None);
}

#[test]
fn probes_point_at_the_agent() {
    let mut p = pod();
    rewrite_probes(&mut p, 15020);
    let app = &p["spec"]["containers"][0];
    assert_eq!(
        app["readinessProbe"],
        json!({"httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 3})
    );
    assert_eq!(
        app["livenessProbe"],
        json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020}})
    );
    assert_eq!(
        app["startupProbe"],
        json!({"httpGet": {"path": "/app-health/app/startupz", "port": 15020}})
    );
    assert_eq!(
        app["lifecycle"]["preStop"],
        json!({"httpGet": {"path": "/app-lifecycle/app/prestopz", "port": 15020}})
    );
    // Exec probes and the proxy's own are left alone.
    assert_eq!(
        p["spec"]["containers"][1]["readinessProbe"],
        json!({"exec": {"command": ["true"]}})
    );
    assert_eq!(
        p["spec"]["containers"][2]["readinessProbe"]["httpGet"]["port"],
        15021
    );

    let mut annotated = pod();
    annotated["metadata"]["annotations"] = json!({STATUS_PORT_ANNOTATION: "15555"});
    rewrite_probes(&mut annotated, 15020);
    assert_eq!(
        annotated["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"],
        15555
    );
}

#[test]
fn the_annotation_overrides_the_values_when_it_parses() {
    let m = |v: &str| BTreeMap::from([(REWRITE_ANNOTATION.to_owned(), v.to_owned())]);
    assert!(should_rewrite(&BTreeMap::new(), true));
    assert!(!should_rewrite(&m("false"), true));
    assert!(should_rewrite(&m("true"), false));
    assert!(should_rewrite(&m("maybe"), true));
}

#[test]
fn probers_merge_into_a_previous_injection_with_the_old_ones_winning() {
    let mut env =
        vec![json!({"name": KUBE_APP_PROBERS, "value": r#"{"/a":{"tcpSocket":{"port":1}}}"#})];
    merge_or_append(
        &mut env,
        r#"{"/a":{"tcpSocket":{"port":2}},"/b":{"tcpSocket":{"port":3}}}"#,
        true,
    );
    let v: Value = serde_json::from_str(env[0]["value"].as_str().expect("value")).expect("json");
    assert_eq!(
        v,
        json!({"/a": {"tcpSocket": {"port": 1}}, "/b": {"tcpSocket": {"port": 3}}})
    );
    let mut fresh = Vec::new();
    merge_or_append(&mut fresh, "{}", false);
    assert_eq!(fresh, [json!({"name": KUBE_APP_PROBERS, "value": "{}"})]);
}
