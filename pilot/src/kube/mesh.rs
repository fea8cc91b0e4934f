//! Mesh config from the `istio` ConfigMap (`istio-<revision>` for revisions), key `mesh`,
//! applied live.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::model::MeshConfig;

/// Name of the mesh ConfigMap for a revision.
pub fn configmap_name(revision: &str) -> String {
    if revision.is_empty() || revision == "default" {
        "istio".to_owned()
    } else {
        format!("istio-{revision}")
    }
}

/// Parses the `mesh` key; an absent key gives the defaults.
pub fn mesh_from_configmap(
    cm: &ConfigMap,
    namespace: &str,
) -> Result<MeshConfig, serde_yaml::Error> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .map_or("", |s| s.as_str());
    MeshConfig::from_yaml(text, namespace)
}

/// Watches the ConfigMap and publishes each valid mesh config; an invalid one is logged
/// and the previous one kept.
pub async fn watch_mesh(
    client: kube::Client,
    namespace: String,
    revision: String,
    tx: watch::Sender<MeshConfig>,
) {
    let name = configmap_name(&revision);
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let cm = match event {
            Ok(Event::Apply(cm)) | Ok(Event::InitApply(cm)) => cm,
            Ok(_) => continue,
            Err(e) => {
                warn!(configmap = %name, error = %e, "watching mesh config");
                continue;
            }
        };
        match mesh_from_configmap(&cm, &namespace) {
            Ok(mesh) => {
                if *tx.borrow() != mesh {
                    info!(configmap = %name, "mesh config updated");
                    tx.send_replace(mesh);
                }
            }
            Err(e) => {
                warn!(configmap = %name, error = %e, "invalid mesh config; keeping the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing() {
        assert_eq!(configmap_name("default"), "istio");
        assert_eq!(configmap_name("canary"), "istio-canary");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istio"},
            "data": {"mesh": "trustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"}
        }))
        .unwrap();
        let mesh = mesh_from_configmap(&cm, "istio-system").unwrap();
        assert_eq!(mesh.trust_domain, "example.org");
        assert!(mesh.registry_only());
        assert_eq!(mesh.root_namespace, "istio-system");
    }
}
