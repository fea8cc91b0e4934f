//! One pod's injection, step by step as upstream's `injectPod`: strip an earlier
//! injection, run the templates over the pod, put the user's own container settings
//! back, then the post-processing; the JSON patch is the difference from the pod sent.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::config::{Config, Values};
use super::policy::{self, Decision, PodFacts};
use super::render::{self, DataInputs, Workload};
use super::{pod, post, InjectError};
use crate::config::yaml;
use crate::model::MeshConfig;

/// Pod annotation overlaying the mesh's proxy config for this pod.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
/// The proxy env vars naming the cluster and network (also webhook URL parameters).
pub const CLUSTER_ENV: &str = "ISTIO_META_CLUSTER_ID";
pub const NETWORK_ENV: &str = "ISTIO_META_NETWORK";

/// A loaded injector configuration: the ConfigMap's `config` and `values`, and the
/// revision this istiod serves.
#[derive(Debug, Clone)]
pub struct Injector {
    pub config: Config,
    pub values: Values,
    pub revision: String,
}

impl Injector {
    /// Whether the pod is injected, and which rule said so.
    pub fn decide(&self, pod: &Value) -> Decision {
        let (labels, annotations) = (pod::labels(pod), pod::annotations(pod));
        let namespace = pod
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let host_network = pod
            .get("spec")
            .and_then(|s| s.get("hostNetwork"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        policy::decide(
            &self.config,
            PodFacts {
                namespace,
                host_network,
                labels: &labels,
                annotations: &annotations,
            },
        )
    }

    /// The injected pod. `pod` is as the API server sent it, its namespace filled in;
    /// `proxy_envs` are the env vars the webhook URL sets on the proxy.
    pub fn inject(
        &self,
        pod: &Value,
        mesh: &MeshConfig,
        mut proxy_envs: BTreeMap<String, String>,
    ) -> Result<Value, InjectError> {
        let mesh = mesh_value(mesh);
        let status_port = mesh["defaultConfig"]["statusPort"]
            .as_i64()
            .unwrap_or(15020);
        let annotations = pod::annotations(pod);

        let (cluster, network) = self.cluster_and_network(pod, &proxy_envs);
        if !cluster.is_empty() {
            proxy_envs.insert(CLUSTER_ENV.to_owned(), cluster);
        }
        if !network.is_empty() {
            proxy_envs.insert(NETWORK_ENV.to_owned(), network);
        }

        let stripped = post::reinsert_overrides(&post::strip(pod, status_port))?;
        let proxy_config = pod_proxy_config(&mesh, &annotations)?;
        let workload = Workload::of(pod);
        let data = render::template_data(
            &stripped,
            &DataInputs {
                values: &self.values,
                mesh: &mesh,
                proxy_config: &proxy_config,
                revision: &self.revision,
                deployment: &workload,
            },
        );
        let names = self.config.select_templates(&annotations);
        let (merged, added) = render::run_templates(&self.config, &names, &data, pod)?;
        let mut merged = post::reapply_user_containers(merged, pod, &added)?;

        post::overwrite_cluster_envs(&mut merged, &proxy_envs);
        post::prometheus_merge(&mut merged, status_port)?;
        post::secure_prometheus_port(&mut merged);
        let rewrite = self
            .values
            .get("sidecarInjectorWebhook.rewriteAppHTTPProbe")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        post::rewrite_probes(&mut merged, rewrite, status_port);
        post::apply_metadata(
            &mut merged,
            &post::Status::of(&added, &self.revision),
            proxy_envs.get(NETWORK_ENV).map(String::as_str),
            &self.config.injected_annotations,
        );
        let hold = proxy_config
            .get("holdApplicationUntilProxyStarts")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || self
                .values
                .get("global.proxy.holdApplicationUntilProxyStarts")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        post::reorder(&mut merged, hold);
        Ok(merged)
    }

    /// The cluster and network: the values', then the webhook URL's, then for the
    /// network the pod's `topology.istio.io/network` label.
    fn cluster_and_network(
        &self,
        pod: &Value,
        proxy_envs: &BTreeMap<String, String>,
    ) -> (String, String) {
        let text = |path: &str| {
            self.values
                .get(path)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let mut cluster = text("global.multiCluster.clusterName");
        let mut network = text("global.network");
        if let Some(c) = proxy_envs.get(CLUSTER_ENV).filter(|c| !c.is_empty()) {
            cluster = c.clone();
        }
        if let Some(n) = proxy_envs.get(NETWORK_ENV).filter(|n| !n.is_empty()) {
            network = n.clone();
        }
        if let Some(n) = pod::labels(pod).get(post::NETWORK_LABEL) {
            network = n.clone();
        }
        (cluster, network)
    }
}

/// The JSON patch from the pod as sent to the injected pod.
pub fn patch(original: &Value, injected: &Value) -> json_patch::Patch {
    json_patch::diff(original, injected)
}

/// Upstream's `DefaultProxyConfig`, the base every mesh's `defaultConfig` overlays.
fn default_proxy_config() -> Value {
    json!({
        "configPath": "./etc/istio/proxy",
        "serviceCluster": "istio-proxy",
        "drainDuration": "45s",
        "terminationDrainDuration": "5s",
        "proxyAdminPort": 15000,
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        "discoveryAddress": "istiod.istio-system.svc:15012",
        "binaryPath": "/usr/local/bin/envoy",
        "statNameLength": 189,
        "statusPort": 15020,
        // Proto enums print their name; Go prints an unset one as its first value.
        "interceptionMode": "REDIRECT",
    })
}

/// The mesh config as templates see it, `defaultConfig` on top of upstream's defaults.
fn mesh_value(mesh: &MeshConfig) -> Value {
    let mut v = serde_json::to_value(mesh).unwrap_or_else(|_| json!({}));
    let mut proxy = default_proxy_config();
    deep_merge(&mut proxy, v["defaultConfig"].take());
    v["defaultConfig"] = proxy;
    v
}

/// The pod's proxy config: the mesh's, with the pod's `proxy.istio.io/config` over it.
fn pod_proxy_config(
    mesh: &Value,
    annotations: &BTreeMap<String, String>,
) -> Result<Value, InjectError> {
    let mut proxy = mesh["defaultConfig"].clone();
    if let Some(text) = annotations.get(PROXY_CONFIG_ANNOTATION) {
        let overlay = yaml::single(text).map_err(|e| InjectError::Annotation {
            annotation: PROXY_CONFIG_ANNOTATION,
            message: e.to_string(),
        })?;
        if !(overlay.is_object() || overlay.is_null()) {
            return Err(InjectError::Annotation {
                annotation: PROXY_CONFIG_ANNOTATION,
                message: "not a map".to_owned(),
            });
        }
        deep_merge(&mut proxy, overlay);
    }
    Ok(proxy)
}

/// Maps merge key by key; anything else replaces.
fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (b, o) => *b = o,
    }
}
