//! The namespace controller: ConfigMap `istio-ca-root-cert` (key `root-cert.pem`, label
//! `istio.io/config=true`) in every namespace, so workloads can verify istiod. A deleted
//! ConfigMap is recreated, an edited one repaired, and all are updated when the root
//! changes. Runs only on the leader of `istio-namespace-controller-election`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

/// The ConfigMap name (`PILOT_CA_CERT_CONFIGMAP` upstream).
pub const CONFIGMAP_NAME: &str = "istio-ca-root-cert";
/// The key holding the PEM.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// The label marking istio-managed ConfigMaps.
pub const CONFIG_LABEL: &str = "istio.io/config";
/// Namespaces that never get the ConfigMap, as upstream.
pub const SKIPPED_NAMESPACES: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];
/// The first and longest wait before retrying a namespace that failed.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// The cause the API server gives for a create in a namespace being deleted.
const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";

/// Why one namespace could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum RootCertError {
    #[error("reading ConfigMap {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing ConfigMap {namespace}/{name} (check istiod may create/update configmaps cluster-wide): {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
}

/// Whether `cm` already holds `root` with the label.
fn is_current(cm: &ConfigMap, root: &str) -> bool {
    let data_ok = cm
        .data
        .as_ref()
        .and_then(|d| d.get(ROOT_CERT_KEY))
        .is_some_and(|v| v == root);
    let label_ok = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONFIG_LABEL))
        .is_some_and(|v| v == "true");
    data_ok && label_ok
}

/// Whether a refused write says the namespace is being deleted (cause `NamespaceTerminating`).
fn is_namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == NAMESPACE_TERMINATING))
}

/// Whether the namespace is being deleted: it takes no new objects.
fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Writes `istio-ca-root-cert` ConfigMaps.
#[derive(Clone)]
pub struct NamespaceController {
    client: kube::Client,
    name: String,
}

impl NamespaceController {
    pub fn new(client: kube::Client) -> Self {
        NamespaceController {
            client,
            name: CONFIGMAP_NAME.to_owned(),
        }
    }

    /// Makes the ConfigMap in `namespace` hold `root`.
    pub async fn reconcile(&self, namespace: &str, root: &str) -> Result<Outcome, RootCertError> {
        if root.is_empty() || SKIPPED_NAMESPACES.contains(&namespace) {
            return Ok(Outcome::Skipped);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let write_err = |source| RootCertError::Write {
            namespace: namespace.to_owned(),
            name: self.name.clone(),
            source,
        };
        let current = api
            .get_opt(&self.name)
            .await
            .map_err(|source| RootCertError::Get {
                namespace: namespace.to_owned(),
                name: self.name.clone(),
                source,
            })?;
        match current {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some([(CONFIG_LABEL.to_owned(), "true".to_owned())].into()),
                        ..Default::default()
                    },
                    data: Some([(ROOT_CERT_KEY.to_owned(), root.to_owned())].into()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(Outcome::Created),
                    // Nothing can be created in a namespace being deleted; it needs none.
                    Err(kube::Error::Api(status)) if is_namespace_terminating(&status) => {
                        debug!(
                            namespace,
                            "namespace is terminating; no root certificate ConfigMap"
                        );
                        Ok(Outcome::Skipped)
                    }
                    Err(source) => Err(write_err(source)),
                }
            }
            Some(cm) if is_current(&cm, root) => Ok(Outcome::Unchanged),
            Some(mut cm) => {
                // An update of what was read, as upstream: keeps keys and labels others
                // added, needs only the `update` verb the chart grants (not `patch`), and
                // its resourceVersion makes a concurrent change a conflict that is retried.
                cm.metadata.managed_fields = None;
                cm.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(CONFIG_LABEL.to_owned(), "true".to_owned());
                cm.data
                    .get_or_insert_with(Default::default)
                    .insert(ROOT_CERT_KEY.to_owned(), root.to_owned());
                api.replace(&self.name, &PostParams::default(), &cm)
                    .await
                    .map_err(write_err)?;
                Ok(Outcome::Updated)
            }
        }
    }

    /// Keeps every namespace's ConfigMap current until `shutdown`.
    pub async fn run(self, mut root: watch::Receiver<String>, shutdown: CancellationToken) {
        let span = info_span!("namespace_controller", configmap = %self.name);
        async move {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let mut ns_events = watcher(namespaces, watcher::Config::default())
                .default_backoff()
                .boxed();
            let configmaps: Api<ConfigMap> = Api::all(self.client.clone());
            let selector = format!("metadata.name={}", self.name);
            let mut cm_events = watcher(configmaps, watcher::Config::default().fields(&selector))
                .default_backoff()
                .boxed();
            let mut known: BTreeSet<String> = BTreeSet::new();
            let mut listing: BTreeSet<String> = BTreeSet::new();
            // Namespaces to reconcile now, and those waiting for a retry after a failure:
            // a failed namespace is retried on its backoff, not on every unrelated event.
            let mut dirty: BTreeSet<String> = BTreeSet::new();
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let mut retry_at: Option<tokio::time::Instant> = None;
            let mut retry_in = RETRY_MIN;
            // The root the known namespaces were last reconciled to. Compared on every pass,
            // not only when `changed()` fires: any pass marks the new root seen.
            let mut applied_root = String::new();
            loop {
                let current_root = root.borrow_and_update().clone();
                if current_root != applied_root {
                    dirty.extend(known.iter().cloned());
                    applied_root.clone_from(&current_root);
                }
                for ns in std::mem::take(&mut dirty) {
                    if !known.contains(&ns) {
                        failed.remove(&ns);
                        continue;
                    }
                    match self.reconcile(&ns, &current_root).await {
                        Ok(outcome) => {
                            failed.remove(&ns);
                            match outcome {
                                Outcome::Created => info!(namespace = %ns, "created root certificate ConfigMap"),
                                Outcome::Updated => info!(namespace = %ns, "updated root certificate ConfigMap"),
                                Outcome::Unchanged | Outcome::Skipped => {}
                            }
                        }
                        Err(error) => {
                            warn!(namespace = %ns, %error, "reconciling root certificate ConfigMap failed; will retry");
                            failed.insert(ns);
                        }
                    }
                }
                if failed.is_empty() {
                    retry_at = None;
                    retry_in = RETRY_MIN;
                } else if retry_at.is_none() {
                    retry_at = Some(tokio::time::Instant::now() + retry_in);
                    retry_in = (retry_in * 2).min(RETRY_MAX);
                }
                let retry = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = retry => {
                        retry_at = None;
                        dirty.extend(failed.iter().cloned());
                    }
                    changed = root.changed() => {
                        if changed.is_err() {
                            debug!("root certificate source closed");
                            return;
                        }
                    }
                    Some(event) = ns_events.next() => match event {
                        Ok(Event::Init) => listing.clear(),
                        Ok(Event::InitApply(ns)) => {
                            // A namespace being deleted takes no new objects.
                            if let Some(name) = ns.metadata.name.clone().filter(|_| !is_terminating(&ns)) {
                                listing.insert(name);
                            }
                        }
                        Ok(Event::InitDone) => {
                            known = std::mem::take(&mut listing);
                            dirty.extend(known.iter().cloned());
                        }
                        Ok(Event::Apply(ns)) => {
                            let terminating = is_terminating(&ns);
                            if let Some(name) = ns.metadata.name {
                                if terminating {
                                    known.remove(&name);
                                } else {
                                    known.insert(name.clone());
                                    dirty.insert(name);
                                }
                            }
                        }
                        Ok(Event::Delete(ns)) => {
                            if let Some(name) = ns.metadata.name { known.remove(&name); }
                        }
                        Err(error) => warn!(%error, "namespace watch failed; retrying"),
                    },
                    Some(event) = cm_events.next() => match event {
                        Ok(Event::Apply(cm)) | Ok(Event::InitApply(cm)) => {
                            if !is_current(&cm, &root.borrow()) {
                                dirty.extend(cm.metadata.namespace);
                            }
                        }
                        Ok(Event::Delete(cm)) => dirty.extend(cm.metadata.namespace),
                        Ok(_) => {}
                        Err(error) => warn!(%error, "ConfigMap watch failed; retrying"),
                    },
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests;
