//! The template side of injection: the data upstream's templates are written against
//! (`.ObjectMeta`, `.Spec`, `.ProxyConfig`, `.Values`, `.ProxyImage`, ...), and running
//! the pod's templates in order, each rendered pod laid over the result so far.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::config::{Config, Values};
use super::merge::merge_pod;
use super::InjectError;
use crate::config::yaml;

/// Pod annotation choosing the proxy image's variant (`distroless`, `debug`, `default`).
pub const IMAGE_TYPE_ANNOTATION: &str = "sidecar.istio.io/proxyImageType";
/// The proxy's uid and gid when nothing says otherwise (upstream's `DefaultProxyUID`).
pub const PROXY_UID: i64 = 1337;

/// Image variants Istio publishes, as tag suffixes.
const KNOWN_IMAGE_TYPES: &[&str] = &["distroless", "debug"];

/// Everything the data is built from besides the pod.
pub struct DataInputs<'a> {
    pub values: &'a Values,
    /// The mesh config as JSON, `defaultConfig` complete.
    pub mesh: &'a Value,
    /// The pod's proxy config: the mesh's defaults with the pod's annotation over them.
    pub proxy_config: &'a Value,
    pub revision: &'a str,
    /// The workload owning the pod (`Deployment` `web` for a pod of its ReplicaSet).
    pub deployment: &'a Workload,
}

/// The pod's owner as upstream guesses it from the pod: name, namespace, kind, version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub kind: String,
    pub api_version: String,
}

impl Workload {
    /// The controller of a pod with a generated name, with a ReplicaSet's pod template
    /// hash trimmed to name its Deployment; else the pod itself.
    pub fn of(pod: &Value) -> Workload {
        let meta = pod.get("metadata").cloned().unwrap_or_default();
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let labels = super::pod::labels(pod);
        let mut w = Workload {
            name: text(&meta, "name"),
            namespace: text(&meta, "namespace"),
            kind: "Pod".to_owned(),
            api_version: "v1".to_owned(),
        };
        if text(&meta, "generateName").is_empty() {
            return w;
        }
        let controller = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
        let Some(owner) = controller else { return w };
        w.name = text(owner, "name");
        w.kind = text(owner, "kind");
        w.api_version = text(owner, "apiVersion");
        let hash = |label: &str| labels.get(label).filter(|h| !h.is_empty()).cloned();
        if w.kind == "ReplicaSet" {
            if let Some(h) = hash("pod-template-hash").filter(|h| w.name.ends_with(h.as_str())) {
                w.name = trim_hash(&w.name, &h);
                w.kind = "Deployment".to_owned();
            } else if let Some(h) =
                hash("rollouts-pod-template-hash").filter(|h| w.name.ends_with(h.as_str()))
            {
                w.name = trim_hash(&w.name, &h);
                w.kind = "Rollout".to_owned();
                w.api_version = "v1alpha1".to_owned();
            }
        } else if w.kind == "ReplicationController" {
            if let Some(dc) = hash("deploymentconfig") {
                w.name = dc;
                w.kind = "DeploymentConfig".to_owned();
            }
        }
        w
    }
}

fn trim_hash(name: &str, hash: &str) -> String {
    name.strip_suffix(&format!("-{hash}"))
        .unwrap_or(name)
        .to_owned()
}

/// Go prints a zero string field as empty; JSON leaves it out. The fields templates
/// commonly print are filled in so they print as Go's would.
const META_STRINGS: &[&str] = &["name", "namespace", "generateName"];
const SPEC_STRINGS: &[&str] = &[
    "serviceAccountName",
    "nodeName",
    "hostname",
    "subdomain",
    "dnsPolicy",
    "restartPolicy",
    "priorityClassName",
    "schedulerName",
];

fn with_zero_strings(v: Option<&Value>, fields: &[&str]) -> Value {
    let mut m = v.and_then(Value::as_object).cloned().unwrap_or_default();
    for f in fields {
        m.entry(f.to_string()).or_insert_with(|| json!(""));
    }
    Value::Object(m)
}

/// The data a template runs on, from the pod with earlier injections stripped.
pub fn template_data(stripped: &Value, inputs: &DataInputs<'_>) -> Value {
    let annotations = super::pod::annotations(stripped);
    let values = inputs.values;
    let proxy_image_type = inputs
        .proxy_config
        .get("image")
        .and_then(|i| i.get("imageType"))
        .and_then(Value::as_str);
    let d = inputs.deployment;
    json!({
        "TypeMeta": {"kind": d.kind, "apiVersion": d.api_version},
        "DeploymentMeta": {"Name": d.name, "Namespace": d.namespace},
        "ObjectMeta": with_zero_strings(stripped.get("metadata"), META_STRINGS),
        "Spec": with_zero_strings(stripped.get("spec"), SPEC_STRINGS),
        "ProxyConfig": inputs.proxy_config,
        "MeshConfig": inputs.mesh,
        "Values": values.to_value(),
        "Revision": inputs.revision,
        // Native sidecars need the nodes' kubelet versions, which istiod does not watch.
        "NativeSidecars": false,
        "ProxyImage": image(values, "global.proxy.image", proxy_image_type, &annotations),
        "ProxyInitImage": image(values, "global.proxy_init.image", None, &annotations),
        "ProxyUID": PROXY_UID,
        "ProxyGID": PROXY_UID,
        "InboundTrafficPolicyMode": inbound_mode(inputs.mesh),
        "CompliancePolicy": "",
    })
}

fn inbound_mode(mesh: &Value) -> &'static str {
    match mesh
        .get("inboundTrafficPolicy")
        .and_then(|p| p.get("mode"))
        .and_then(Value::as_str)
    {
        Some("LOCALHOST") => "localhost",
        _ => "passthrough",
    }
}

/// `<hub>/<image>:<tag>[-<variant>]`, as upstream's `ProxyImage`: the image name from
/// `values_path` (default `proxyv2`), the variant from the proxy config's image type,
/// else `global.variant`, with the pod's `sidecar.istio.io/proxyImageType` over both.
pub fn image(
    values: &Values,
    values_path: &str,
    image_type: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> String {
    let text = |path: &str| match values.get(path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    };
    let name = Some(text(values_path))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "proxyv2".to_owned());
    let mut variant = image_type.map(str::to_owned).unwrap_or_default();
    if variant.is_empty() {
        variant = text("global.variant");
    }
    if let Some(annotated) = annotations.get(IMAGE_TYPE_ANNOTATION) {
        variant = annotated.clone();
    }
    let tag = with_variant(&text("global.tag"), &variant);
    format!("{}/{name}:{tag}", text("global.hub"))
}

/// A tag with its variant suffix replaced by `variant` (`default`: none).
fn with_variant(tag: &str, variant: &str) -> String {
    if variant.is_empty() {
        return tag.to_owned();
    }
    let base = KNOWN_IMAGE_TYPES
        .iter()
        .find_map(|t| tag.strip_suffix(&format!("-{t}")))
        .unwrap_or(tag);
    if variant == "default" {
        base.to_owned()
    } else {
        format!("{base}-{variant}")
    }
}

/// Runs `names` in order. Each rendered pod is laid over the pod (the result) and over
/// an empty pod (what the templates added, for the status annotation).
pub fn run_templates(
    config: &Config,
    names: &[String],
    data: &Value,
    pod: &Value,
) -> Result<(Value, Value), InjectError> {
    let mut merged = pod.clone();
    let mut added = Value::Object(Map::new());
    for name in names {
        let set = config
            .templates
            .get(name)
            .ok_or_else(|| InjectError::NoTemplate {
                name: name.clone(),
                have: config
                    .templates
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let text = set
            .execute(name, data)
            .map_err(|source| InjectError::Template {
                name: name.clone(),
                source,
            })?;
        let overlay = match yaml::single(&text) {
            Ok(Value::Null) => Value::Object(Map::new()),
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err(InjectError::NotAPod { name: name.clone() }),
            Err(source) => {
                return Err(InjectError::Yaml {
                    name: name.clone(),
                    source,
                })
            }
        };
        added = merge_pod(&added, &overlay);
        merged = merge_pod(&merged, &overlay);
    }
    Ok((merged, added))
}
