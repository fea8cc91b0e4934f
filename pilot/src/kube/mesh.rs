//! Mesh config from the `istio` ConfigMap (`istio-<revision>` for revisions), key `mesh`,
//! applied live.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
) -> Result<MeshConfig, crate::config::yaml::YamlError> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .map_or("", |s| s.as_str());
    MeshConfig::from_yaml(text, namespace)
}

/// Watches the ConfigMap and publishes each valid mesh config; an invalid one is logged
/// and the previous one kept. Without the ConfigMap (deleted, or absent from a relist) the
/// config in force when the watch started applies again: istiod watches the ConfigMap only
/// when no `--meshConfig` file exists, so that is the defaults, as upstream. Returns on
/// `shutdown`.
pub async fn watch_mesh(
    client: kube::Client,
    namespace: String,
    revision: String,
    tx: watch::Sender<MeshConfig>,
    shutdown: CancellationToken,
) {
    let name = configmap_name(&revision);
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut mesh = MeshWatch::new(name, namespace, tx);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(event)) => mesh.apply(event),
            Some(Err(e)) => warn!(configmap = %mesh.name, error = %e, "watching mesh config"),
            None => return,
        }
    }
}

/// Turns the ConfigMap's watch events into the live mesh config.
struct MeshWatch {
    name: String,
    namespace: String,
    /// What applies without the ConfigMap.
    fallback: MeshConfig,
    tx: watch::Sender<MeshConfig>,
    /// Whether the list in progress has shown the ConfigMap.
    listed: bool,
}

impl MeshWatch {
    fn new(name: String, namespace: String, tx: watch::Sender<MeshConfig>) -> Self {
        let fallback = tx.borrow().clone();
        MeshWatch {
            name,
            namespace,
            fallback,
            tx,
            listed: false,
        }
    }

    fn apply(&mut self, event: Event<ConfigMap>) {
        match event {
            Event::Init => self.listed = false,
            Event::InitApply(cm) => {
                self.listed = true;
                self.update(&cm);
            }
            Event::Apply(cm) => self.update(&cm),
            Event::InitDone if !self.listed => self.fall_back("absent"),
            Event::InitDone => {}
            Event::Delete(_) => self.fall_back("deleted"),
        }
    }

    fn update(&self, cm: &ConfigMap) {
        let name = &self.name;
        match mesh_from_configmap(cm, &self.namespace) {
            Ok(mesh) => {
                if *self.tx.borrow() != mesh {
                    info!(configmap = %name, "mesh config updated");
                    self.tx.send_replace(mesh);
                }
            }
            Err(e) => {
                warn!(configmap = %name, error = %e, "invalid mesh config; keeping the previous one")
            }
        }
    }

    fn fall_back(&self, why: &str) {
        let name = &self.name;
        if *self.tx.borrow() == self.fallback {
            debug!(configmap = %name, "mesh ConfigMap {why}; using the default mesh config");
            return;
        }
        info!(configmap = %name, "mesh ConfigMap {why}; using the default mesh config");
        self.tx.send_replace(self.fallback.clone());
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

    fn mesh_configmap(trust_domain: &str) -> ConfigMap {
        let cm = kube_fake::objects::config_map("istio-system", "istio")
            .data("mesh", &format!("trustDomain: {trust_domain}\n"))
            .build();
        serde_json::from_value(cm).unwrap()
    }

    #[tokio::test]
    async fn deleting_the_configmap_restores_the_defaults() {
        use kube_fake::eventually;
        let (client, api) = kube_fake::pair();
        let collection = "/api/v1/namespaces/istio-system/configmaps";
        api.put(
            collection,
            serde_json::to_value(mesh_configmap("example.org")).unwrap(),
        );
        let defaults = MeshConfig::from_yaml("", "istio-system").unwrap();
        let (tx, rx) = watch::channel(defaults.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch_mesh(
            client,
            "istio-system".into(),
            "default".into(),
            tx,
            shutdown.clone(),
        ));
        eventually("mesh from the ConfigMap", || {
            rx.borrow().trust_domain == "example.org"
        })
        .await;

        api.delete(&format!("{collection}/istio"));
        eventually("defaults after the delete", || *rx.borrow() == defaults).await;

        api.put(
            collection,
            serde_json::to_value(mesh_configmap("again.org")).unwrap(),
        );
        eventually("mesh from the recreated ConfigMap", || {
            rx.borrow().trust_domain == "again.org"
        })
        .await;
        // Shutdown ends the watch, so istiod's drain need not wait for it.
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the watch ends on shutdown")
            .expect("the watch task");
    }

    #[test]
    fn a_relist_without_the_configmap_restores_the_defaults() {
        let defaults = MeshConfig::from_yaml("", "istio-system").unwrap();
        let (tx, rx) = watch::channel(defaults.clone());
        let mut mesh = MeshWatch::new("istio".into(), "istio-system".into(), tx);
        mesh.apply(Event::Init);
        mesh.apply(Event::InitApply(mesh_configmap("example.org")));
        mesh.apply(Event::InitDone);
        assert_eq!(rx.borrow().trust_domain, "example.org");

        // An invalid edit keeps the last valid config.
        let mut bad = mesh_configmap("x");
        bad.data = Some([("mesh".to_owned(), "trustDomain: [\n".to_owned())].into());
        mesh.apply(Event::Apply(bad));
        assert_eq!(rx.borrow().trust_domain, "example.org");
        // So does an alias bomb, refused quickly with a clear error.
        let mut bomb = mesh_configmap("x");
        let text = format!(
            "trustDomain: bomb.org\nx: &x [{}]\ny: [{}]\n",
            vec!["1"; 2000].join(","),
            vec!["*x"; 2000].join(",")
        );
        let err = MeshConfig::from_yaml(&text, "istio-system").expect_err("refused");
        assert!(err.to_string().contains("aliases repeat too much"), "{err}");
        bomb.data = Some([("mesh".to_owned(), text)].into());
        mesh.apply(Event::Apply(bomb));
        assert_eq!(rx.borrow().trust_domain, "example.org");

        // Deleted while the watch was down: the relist does not show it.
        mesh.apply(Event::Init);
        mesh.apply(Event::InitDone);
        assert_eq!(*rx.borrow(), defaults);
    }
}
