//! What injection does to the merged pod that a template cannot: the user's own
//! `istio-proxy` settings put back over the template's, cluster and network from the
//! webhook URL, Prometheus scraping through the agent, probes through the agent, the
//! status annotation, and container order.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::warn;

use super::pod::{self, Place, CORE_DUMP, INIT, PROXY, VALIDATION};
use super::probe;
use super::InjectError;
use crate::settings::go_bool;

/// The annotation recording what injection added, so a second injection can strip it.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The annotation keeping the user's own versions of injected containers.
pub const OVERRIDES_ANNOTATION: &str = "proxy.istio.io/overrides";
/// Pod annotation overriding the mesh's Prometheus metrics merging.
pub const MERGE_METRICS_ANNOTATION: &str = "prometheus.istio.io/merge-metrics";
/// The label naming the pod's network.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// The env var giving the agent the application's own scrape settings.
pub const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
/// An image of `auto` in a user's `istio-proxy` means "the injected image".
const AUTO_IMAGE: &str = "auto";

/// What injection recorded in [`STATUS_ANNOTATION`], in upstream's field order; an empty
/// list is `null`, as Go writes a nil slice.
#[derive(Debug, Serialize, serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    pub revision: String,
}

impl Status {
    /// The status of what `added` (the templates' own pod) holds.
    pub fn of(added: &Value, revision: &str) -> Status {
        Status {
            init_containers: pod::names(added, "initContainers"),
            containers: pod::names(added, "containers"),
            volumes: pod::names(added, "volumes"),
            image_pull_secrets: pod::names(added, "imagePullSecrets"),
            revision: if revision.is_empty() {
                "default".to_owned()
            } else {
                revision.to_owned()
            },
        }
    }

    /// The status a pod carries, if it was injected and the annotation parses.
    pub fn from_pod(pod: &Value) -> Option<Status> {
        serde_json::from_str(pod::annotation(pod, STATUS_ANNOTATION)?).ok()
    }
}

/// The user's containers as kept in [`OVERRIDES_ANNOTATION`].
#[derive(Debug, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Value>,
}

impl Overrides {
    /// The pod's overrides annotation; an unparsable one is an error, as upstream.
    pub fn from_pod(pod: &Value) -> Result<Overrides, InjectError> {
        match pod::annotation(pod, OVERRIDES_ANNOTATION) {
            None => Ok(Overrides::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| InjectError::Annotation {
                annotation: OVERRIDES_ANNOTATION,
                message: e.to_string(),
            }),
        }
    }
}

/// The pod with what an earlier injection added taken out: its containers, its status
/// annotation, and its Prometheus annotations when they point at the agent.
pub fn strip(pod: &Value, status_port: i64) -> Value {
    let Some(status) = Status::from_pod(pod) else {
        return pod.clone();
    };
    let mut out = pod.clone();
    for (list, names) in [
        ("containers", &status.containers),
        ("initContainers", &status.init_containers),
    ] {
        if let Some(cs) = pod::containers_mut(&mut out, list) {
            for n in names.iter().flatten() {
                pod::remove(cs, n);
            }
        }
    }
    if prometheus_port(&out).as_deref() == Some(status_port.to_string().as_str()) {
        clear_prometheus(&mut out);
    }
    pod::meta_map_mut(&mut out, "annotations").remove(STATUS_ANNOTATION);
    out
}

/// Puts back the user's containers kept in the overrides annotation where the pod no
/// longer has them, so templates see the pod as first written.
pub fn reinsert_overrides(pod: &Value) -> Result<Value, InjectError> {
    let overrides = Overrides::from_pod(pod)?;
    let mut out = pod.clone();
    for (list, kept) in [
        ("containers", &overrides.containers),
        ("initContainers", &overrides.init_containers),
    ] {
        for c in kept {
            if pod::find(pod::containers(&out, list), pod::name(c)).is_none() {
                let spec = pod::top_mut(&mut out, "spec");
                let entry = spec
                    .entry(list.to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = entry {
                    items.push(c.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Lays the user's own version of each injected container over the template's, so a
/// pod can tune its `istio-proxy`; records them in the overrides annotation on the first
/// injection.
pub fn reapply_user_containers(
    merged: Value,
    original: &Value,
    added: &Value,
) -> Result<Value, InjectError> {
    let existing = Overrides::from_pod(original)?;
    let previous = Status::from_pod(original);
    let already_injected = pod::annotation(original, STATUS_ANNOTATION).is_some();
    let mut kept = Overrides::default();
    let mut merged = merged;
    for (list, from_status, from_overrides) in [
        (
            "containers",
            previous.as_ref().and_then(|s| s.containers.clone()),
            &existing.containers,
        ),
        (
            "initContainers",
            previous.as_ref().and_then(|s| s.init_containers.clone()),
            &existing.init_containers,
        ),
    ] {
        for c in pod::containers(added, list) {
            let name = pod::name(c);
            // Containers of an earlier injection are replaced by the new template's.
            if from_status.iter().flatten().any(|n| n == name) {
                continue;
            }
            let user = pod::find(from_overrides, name).or_else(|| {
                if list == "containers" {
                    pod::find(pod::containers(original, list), name)
                } else {
                    pod::find_in_pod(original, name)
                }
            });
            let Some(user) = user else { continue };
            let mut overlay = user.clone();
            if overlay.get("image").and_then(Value::as_str) == Some(AUTO_IMAGE) {
                if let Some(m) = overlay.as_object_mut() {
                    m.remove("image");
                }
            }
            let patch = if list == "containers" {
                json!({"spec": {"containers": [overlay.clone()]}})
            } else {
                json!({"spec": {"initContainers": [overlay.clone()]}})
            };
            merged = super::merge::merge_pod(&merged, &patch);
            if list == "containers" {
                kept.containers.push(overlay);
            } else {
                kept.init_containers.push(overlay);
            }
        }
    }
    let any_kept = !kept.containers.is_empty() || !kept.init_containers.is_empty();
    if !already_injected && any_kept {
        let text = serde_json::to_string(&kept).map_err(|e| InjectError::Annotation {
            annotation: OVERRIDES_ANNOTATION,
            message: e.to_string(),
        })?;
        pod::meta_map_mut(&mut merged, "annotations")
            .insert(OVERRIDES_ANNOTATION.to_owned(), Value::String(text));
    }
    Ok(merged)
}

/// Replaces the proxy's env vars named in `envs` (from the webhook URL) with their
/// values, appended in name order.
pub fn overwrite_cluster_envs(pod: &mut Value, envs: &BTreeMap<String, String>) {
    if envs.is_empty() {
        return;
    }
    let Some(proxy) = pod::proxy_mut(pod) else {
        return;
    };
    let Some(proxy) = proxy.as_object_mut() else {
        return;
    };
    let env = proxy
        .entry("env".to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = env {
        items.retain(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| !envs.contains_key(n))
        });
        items.extend(envs.iter().map(|(k, v)| json!({"name": k, "value": v})));
    }
}

/// Prometheus' spelling of a label name: anything but `[a-zA-Z0-9_]` becomes `_`, so
/// `prometheus.io/port` and `prometheus-io/port` mean the same.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

const SCRAPE: &str = "prometheus_io_scrape";
const PORT: &str = "prometheus_io_port";
const PATH: &str = "prometheus_io_path";

fn prometheus_port(pod: &Value) -> Option<String> {
    pod::annotations(pod)
        .into_iter()
        .find(|(k, _)| sanitize(k) == PORT)
        .map(|(_, v)| v)
}

fn clear_prometheus(pod: &mut Value) {
    pod::meta_map_mut(pod, "annotations").retain(|k, _| {
        !matches!(
            sanitize(k).as_str(),
            SCRAPE | PORT | PATH | "prometheus_istio_io_scrape_targets"
        )
    });
}

/// Scraping through the agent: unless the pod says `prometheus.io/scrape: false` or
/// merging is off, the pod's scrape settings go to the agent in
/// `ISTIO_PROMETHEUS_ANNOTATIONS` and the annotations point at the agent's status port.
pub fn prometheus_merge(pod: &mut Value, status_port: i64) -> Result<(), InjectError> {
    let annotations = pod::annotations(pod);
    let scrape = annotations
        .iter()
        .filter(|(k, _)| sanitize(k) == SCRAPE)
        .find_map(|(_, v)| go_bool(v).ok())
        .unwrap_or(true);
    let merge = annotations
        .get(MERGE_METRICS_ANNOTATION)
        .and_then(|v| go_bool(v).ok())
        .unwrap_or(true);
    if !scrape || !merge {
        return Ok(());
    }
    let target = status_port.to_string();
    let mut cfg = BTreeMap::from([
        ("scrape", String::new()),
        ("path", String::new()),
        ("port", String::new()),
    ]);
    for (k, v) in &annotations {
        match sanitize(k).as_str() {
            PORT => cfg.insert("port", v.clone()),
            SCRAPE => cfg.insert("scrape", v.clone()),
            PATH => cfg.insert("path", v.clone()),
            _ => None,
        };
    }
    if cfg["port"] == target {
        // Already pointing at the agent: set by the user, or a second injection.
        return Ok(());
    }
    if !cfg["port"].is_empty() {
        let valid = cfg["port"]
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p));
        match valid {
            None => {
                return Err(InjectError::Annotation {
                    annotation: "prometheus.io/port",
                    message: format!("invalid port {:?}", cfg["port"]),
                })
            }
            Some(p) if p.to_string() == target => {
                return Err(InjectError::Annotation {
                    annotation: "prometheus.io/port",
                    message: format!("port {} conflicts with agent port", cfg["port"]),
                })
            }
            Some(_) => {}
        }
    }
    let empty = cfg.values().all(String::is_empty);
    if !empty {
        if let Some(proxy) = pod::proxy_mut(pod).and_then(Value::as_object_mut) {
            // Upstream's field order: scrape, path, port.
            let value = format!(
                "{{\"scrape\":{},\"path\":{},\"port\":{}}}",
                json!(cfg["scrape"]),
                json!(cfg["path"]),
                json!(cfg["port"])
            );
            let env = proxy
                .entry("env".to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = env {
                items.push(json!({"name": PROMETHEUS_ENV, "value": value}));
            }
        }
    }
    clear_prometheus(pod);
    let a = pod::meta_map_mut(pod, "annotations");
    a.insert("prometheus.io/port".to_owned(), json!(target));
    a.insert("prometheus.io/path".to_owned(), json!("/stats/prometheus"));
    a.insert("prometheus.io/scrape".to_owned(), json!("true"));
    Ok(())
}

/// `prometheus.istio.io/secure-port` from the proxy's `ENVOY_SECURE_MERGED_METRICS_PORT`,
/// unless the pod set it.
pub fn secure_prometheus_port(pod: &mut Value) {
    if pod::annotations(pod)
        .keys()
        .any(|k| sanitize(k) == "prometheus_istio_io_secure_port")
    {
        return;
    }
    let port = pod::find_in_pod(pod, PROXY)
        .and_then(|p| p.get("env"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("ENVOY_SECURE_MERGED_METRICS_PORT"))
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && *v != "0")
        .map(str::to_owned);
    if let Some(port) = port {
        pod::meta_map_mut(pod, "annotations")
            .insert("prometheus.istio.io/secure-port".to_owned(), json!(port));
    }
}

/// Probes through the agent, when the pod has a proxy and rewriting is on.
pub fn rewrite_probes(pod: &mut Value, rewrite_setting: bool, status_port: i64) {
    if pod::find_in_pod(pod, PROXY).is_none() {
        return;
    }
    if !probe::should_rewrite(&pod::annotations(pod), rewrite_setting) {
        return;
    }
    if let Some(probers) = probe::dump_app_probers(pod, status_port) {
        let previously = pod::annotation(pod, STATUS_ANNOTATION).is_some();
        if let Some(proxy) = pod::proxy_mut(pod).and_then(Value::as_object_mut) {
            let env = proxy
                .entry("env".to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = env {
                probe::merge_or_append(items, &probers, previously);
            }
        }
    }
    probe::rewrite_probes(pod, status_port);
}

/// The network label, the status annotation, and the config's injected annotations.
pub fn apply_metadata(
    pod: &mut Value,
    status: &Status,
    network: Option<&str>,
    injected_annotations: &BTreeMap<String, String>,
) {
    if let Some(network) = network {
        pod::meta_map_mut(pod, "labels").insert(NETWORK_LABEL.to_owned(), json!(network));
    }
    let text = serde_json::to_string(status).unwrap_or_else(|e| {
        warn!(error = %e, "could not write the injection status");
        "{}".to_owned()
    });
    let a: &mut Map<String, Value> = pod::meta_map_mut(pod, "annotations");
    a.insert(STATUS_ANNOTATION.to_owned(), Value::String(text));
    for (k, v) in injected_annotations {
        a.insert(k.clone(), json!(v));
    }
}

/// The proxy last, so `kubectl exec` picks the application, or first when the app must
/// wait for it; iptables setup last among init containers so it blackholes none of
/// them, CNI validation first so it guards all of them. With the proxy as a native
/// sidecar (an init container), the mesh's init containers go first.
pub fn reorder(pod: &mut Value, hold_application: bool) {
    let place = if hold_application {
        Place::First
    } else {
        Place::Last
    };
    if let Some(cs) = pod::containers_mut(pod, "containers") {
        pod::reorder(cs, PROXY, place);
    }
    let native = pod::find(pod::containers(pod, "initContainers"), PROXY).is_some();
    let Some(init) = pod::containers_mut(pod, "initContainers") else {
        return;
    };
    if native {
        for name in [CORE_DUMP, PROXY, VALIDATION, INIT] {
            pod::reorder(init, name, Place::First);
        }
    } else {
        pod::reorder(init, VALIDATION, Place::First);
        pod::reorder(init, INIT, Place::Last);
        pod::reorder(init, CORE_DUMP, Place::Last);
    }
}
