//! Parses Kubernetes manifests strictly: every document must deserialize as the
//! `k8s-openapi` type of its `apiVersion`/`kind` with no unknown or misplaced field.
//!
//! `kube_strict FILE...` prints one line per document and exits 1 on any problem;
//! the chart tests run it over every rendered object.

use std::path::Path;
use std::process::ExitCode;

use k8s_openapi::api::{
    admissionregistration::v1::ValidatingWebhookConfiguration,
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Deserializes `value` as `T`, collecting the paths of fields `T` does not know.
fn strict<T: DeserializeOwned>(value: serde_json::Value) -> Result<(), String> {
    let mut unknown = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(value, |path| {
        unknown.push(path.to_string());
    });
    match parsed {
        Err(e) => Err(e.to_string()),
        Ok(_) if !unknown.is_empty() => Err(format!("unknown fields: {}", unknown.join(", "))),
        Ok(_) => Ok(()),
    }
}

fn check(doc: serde_json::Value) -> Result<String, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => strict::<Deployment>(doc),
        ("v1", "Service") => strict::<Service>(doc),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc),
        ("v1", "ConfigMap") => strict::<ConfigMap>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => strict::<ClusterRoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(doc),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            strict::<ValidatingWebhookConfiguration>(doc)
        }
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(doc),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => strict::<HorizontalPodAutoscaler>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => strict::<NetworkPolicy>(doc),
        _ => Err("no strict type known for this apiVersion/kind".to_string()),
    };
    let what = format!("{api_version} {kind} {name}");
    result
        .map(|()| what.clone())
        .map_err(|e| format!("{what}: {e}"))
}

fn check_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut checked = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(de)
            .map_err(|e| format!("{} document {i}: not YAML: {e}", path.display()))?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value)
            .map_err(|e| format!("{} document {i}: {e}", path.display()))?;
        checked.push(check(json).map_err(|e| format!("{} document {i}: {e}", path.display()))?);
    }
    Ok(checked)
}

fn main() -> ExitCode {
    let mut failed = false;
    for arg in std::env::args_os().skip(1) {
        match check_file(Path::new(&arg)) {
            Ok(objects) => objects.iter().for_each(|o| println!("ok {o}")),
            Err(e) => {
                eprintln!("error {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
