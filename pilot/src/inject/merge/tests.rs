//! Strategic merge as Kubernetes does it for the pod fields templates touch.

use serde_json::json;

use super::*;

#[test]
fn containers_merge_by_name_and_new_ones_are_appended() {
    let original = json!({"spec": {"containers": [
        {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}],
         "ports": [{"containerPort": 8080}]},
    ], "volumes": [{"name": "data", "emptyDir": {}}]}});
    let patch = json!({"spec": {
        "containers": [
            {"name": "istio-proxy", "image": "proxy"},
            {"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}],
             "ports": [{"containerPort": "8080", "name": "http"}]},
        ],
        "initContainers": [{"name": "istio-init", "image": "proxy"}],
        "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
    }});
    assert_eq!(
        merge_pod(&original, &patch),
        json!({"spec": {
            "containers": [
                {"name": "app", "image": "app:1",
                 "env": [{"name": "A", "value": "3"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": "8080", "name": "http"}]},
                {"name": "istio-proxy", "image": "proxy"},
            ],
            "initContainers": [{"name": "istio-init", "image": "proxy"}],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
        }})
    );
}

#[test]
fn other_lists_are_replaced_and_null_deletes() {
    let original = json!({
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "spec": {"containers": [{"name": "app", "args": ["a", "b"]}], "tolerations": [{"key": "k"}]},
    });
    let patch = json!({
        "metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y", "x"]},
        "spec": {"containers": [{"name": "app", "args": ["c"]}], "tolerations": []},
    });
    assert_eq!(
        merge_pod(&original, &patch),
        json!({
            "metadata": {"labels": {"a": "1", "c": "3"}, "finalizers": ["x", "y"]},
            "spec": {"containers": [{"name": "app", "args": ["c"]}], "tolerations": []},
        })
    );
}

#[test]
fn directives_delete_elements_and_replace_maps() {
    let original = json!({"spec": {
        "containers": [{"name": "app", "securityContext": {"runAsUser": 1, "privileged": true}},
                       {"name": "old"}],
    }});
    let patch = json!({"spec": {"containers": [
        {"name": "old", "$patch": "delete"},
        {"name": "app", "securityContext": {"$patch": "replace", "runAsUser": 2}},
        {"name": "gone", "$patch": "delete"},
    ]}});
    assert_eq!(
        merge_pod(&original, &patch),
        json!({"spec": {"containers": [{"name": "app", "securityContext": {"runAsUser": 2}}]}})
    );
}
