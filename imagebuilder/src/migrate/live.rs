//! Reads the live istiod Deployment from a cluster named by a kubeconfig.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::MigrateError;

/// The Deployment as YAML, without status and server-managed metadata.
pub fn read_deployment(
    kubeconfig: &Path,
    context: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<String, MigrateError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        MigrateError::Kube(format!("{}: {what}: {e}", kubeconfig.display()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err("starting the runtime", &e))?;
    let mut dep: Deployment = rt.block_on(async {
        let kc =
            Kubeconfig::read_from(kubeconfig).map_err(|e| err("reading the kubeconfig", &e))?;
        let options = KubeConfigOptions {
            context: context.map(String::from),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| err("loading the kubeconfig", &e))?;
        let client = kube::Client::try_from(config).map_err(|e| err("creating a client", &e))?;
        kube::Api::<Deployment>::namespaced(client, namespace)
            .get(name)
            .await
            .map_err(|e| err(&format!("getting Deployment {namespace}/{name}"), &e))
    })?;
    dep.status = None;
    let meta = &mut dep.metadata;
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.uid = None;
    meta.generation = None;
    meta.creation_timestamp = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        a.remove("deployment.kubernetes.io/revision");
    }
    serde_yaml::to_string(&dep).map_err(|e| err("serialising the Deployment", &e))
}
