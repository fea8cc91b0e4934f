//! Application probes through the agent. With mutual TLS the kubelet cannot reach the
//! application's ports, so its HTTP, TCP and gRPC probes (and lifecycle hooks) are
//! pointed at the agent's status port (`/app-health/<container>/livez` ...), and the
//! originals go to the agent in `ISTIO_KUBE_APP_PROBERS` on `istio-proxy`.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tracing::warn;

use crate::settings::go_bool;

/// The env var on `istio-proxy` holding the original probes, keyed by agent path.
pub const KUBE_APP_PROBERS: &str = "ISTIO_KUBE_APP_PROBERS";
/// Pod annotation overriding `sidecarInjectorWebhook.rewriteAppHTTPProbe`.
pub const REWRITE_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
/// Pod annotation overriding the agent's status port.
pub const STATUS_PORT_ANNOTATION: &str = "status.sidecar.istio.io/port";

const PROXY: &str = "istio-proxy";

/// Whether probes are rewritten: the pod's annotation when it parses, else the values.
pub fn should_rewrite(annotations: &BTreeMap<String, String>, values_setting: bool) -> bool {
    annotations
        .get(REWRITE_ANNOTATION)
        .and_then(|v| go_bool(v).ok())
        .unwrap_or(values_setting)
}

/// The agent's paths for a container: readiness, liveness, startup, preStop, postStart.
fn urls(container: &str) -> [(&'static str, String); 5] {
    [
        ("readinessProbe", format!("/app-health/{container}/readyz")),
        ("livenessProbe", format!("/app-health/{container}/livez")),
        ("startupProbe", format!("/app-health/{container}/startupz")),
        ("preStop", format!("/app-lifecycle/{container}/prestopz")),
        (
            "postStart",
            format!("/app-lifecycle/{container}/poststartz"),
        ),
    ]
}

/// A container's probe or lifecycle handler by the names [`urls`] uses.
fn handler<'a>(container: &'a Value, field: &str) -> Option<&'a Value> {
    match field {
        "preStop" | "postStart" => container.get("lifecycle")?.get(field),
        _ => container.get(field),
    }
    .filter(|v| v.is_object())
}

fn handler_mut<'a>(container: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    match field {
        "preStop" | "postStart" => container.get_mut("lifecycle")?.get_mut(field),
        _ => container.get_mut(field),
    }
    .filter(|v| v.is_object())
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|f| pod.get("spec")?.get(f)?.as_array())
        .flatten()
}

fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The agent's view of the pod's probes, as JSON for [`KUBE_APP_PROBERS`]; `None` when
/// there are none to forward. A named port is resolved against the container's ports
/// (dropped if unknown); a probe already on the status port is left out.
pub fn dump_app_probers(pod: &Value, status_port: i64) -> Option<String> {
    let mut out = Map::new();
    for c in containers(pod).filter(|c| name(c) != PROXY) {
        let ports: BTreeMap<&str, &Value> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("containerPort")?)))
            .filter(|(n, _)| !n.is_empty())
            .collect();
        for (field, url) in urls(name(c)) {
            let is_probe = !matches!(field, "preStop" | "postStart");
            let Some(h) = handler(c, field) else { continue };
            let mut prober = Map::new();
            let action = if let Some(get) = h.get("httpGet") {
                ("httpGet", get)
            } else if let Some(tcp) = h.get("tcpSocket") {
                ("tcpSocket", tcp)
            } else if let (Some(grpc), true) = (h.get("grpc"), is_probe) {
                ("grpc", grpc)
            } else {
                continue;
            };
            let mut action_value = action.1.clone();
            if action.0 != "grpc" {
                match action_value.get("port").cloned() {
                    Some(Value::String(named)) => match ports.get(named.as_str()) {
                        Some(port) => action_value["port"] = (*port).clone(),
                        None => continue,
                    },
                    Some(port) if port.as_i64() == Some(status_port) => continue,
                    _ => {}
                }
            }
            prober.insert(action.0.to_owned(), action_value);
            if is_probe {
                if let Some(t) = h.get("timeoutSeconds").filter(|t| t.as_i64() != Some(0)) {
                    prober.insert("timeoutSeconds".to_owned(), t.clone());
                }
            }
            out.insert(url, Value::Object(prober));
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(Value::Object(out).to_string())
}

/// Points every HTTP, TCP and gRPC probe and HTTP/TCP lifecycle handler of the
/// application containers at the agent. The port is the pod's
/// `status.sidecar.istio.io/port` annotation when set, else `status_port`.
pub fn rewrite_probes(pod: &mut Value, status_port: i64) {
    let annotated = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(STATUS_PORT_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let port = match annotated {
        Some(v) => v.parse::<i64>().unwrap_or_else(|e| {
            // As upstream: a broken annotation is logged and gives port 0.
            warn!(annotation = STATUS_PORT_ANNOTATION, value = %v, error = %e, "invalid status port annotation");
            0
        }),
        None => status_port,
    };
    for list in ["containers", "initContainers"] {
        let Some(cs) = pod
            .get_mut("spec")
            .and_then(|s| s.get_mut(list))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| name(c) != PROXY) {
            let container = name(c).to_owned();
            for (field, url) in urls(&container) {
                let is_probe = !matches!(field, "preStop" | "postStart");
                let Some(h) = handler_mut(c, field) else {
                    continue;
                };
                let Some(h) = h.as_object_mut() else { continue };
                let http = json!({"path": url, "port": port});
                if let Some(get) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
                    get.insert("path".to_owned(), http["path"].clone());
                    get.insert("port".to_owned(), http["port"].clone());
                    if get.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
                        get.insert("scheme".to_owned(), json!("HTTP"));
                    }
                } else if h.remove("tcpSocket").is_some()
                    || (is_probe && h.remove("grpc").is_some())
                {
                    h.insert("httpGet".to_owned(), http);
                }
            }
        }
    }
}

/// Adds (or, on a pod injected before, merges into) `ISTIO_KUBE_APP_PROBERS` on the
/// proxy container's env; the probes already there win, as upstream.
pub fn merge_or_append(env: &mut Vec<Value>, probers: &str, previously_injected: bool) {
    if previously_injected {
        let existing = env
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(KUBE_APP_PROBERS));
        if let Some(entry) = existing {
            let old: Option<Map<String, Value>> = entry
                .get("value")
                .and_then(Value::as_str)
                .and_then(|v| serde_json::from_str(v).ok());
            let new: Option<Map<String, Value>> = serde_json::from_str(probers).ok();
            let (Some(old), Some(mut new)) = (old, new) else {
                warn!("could not parse the existing {KUBE_APP_PROBERS}; left as it was");
                return;
            };
            new.extend(old);
            *entry = json!({"name": KUBE_APP_PROBERS, "value": Value::Object(new).to_string()});
            return;
        }
    }
    env.push(json!({"name": KUBE_APP_PROBERS, "value": probers}));
}
