//! Wakes the watches of kinds whose CRD was missing when a CRD for them becomes
//! established, so a CRD installed while istiod runs is listed at once rather than on the
//! watch's next backoff retry (up to 30 s later). Upstream starts informers from a CRD
//! watch the same way.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{classify, Failure};
use crate::config::Kind;

/// One wake-up per custom resource kind, keyed by API group and plural.
#[derive(Default)]
pub(super) struct CrdWakers {
    by_resource: HashMap<(String, String), Arc<Notify>>,
}

impl CrdWakers {
    /// Wakers for the kinds served by CRDs (every kind outside the built-in groups).
    pub(super) fn for_kinds(kinds: &[Kind]) -> Self {
        let by_resource = kinds
            .iter()
            .map(|k| k.api())
            .filter(|api| !matches!(api.group, "" | "discovery.k8s.io"))
            .map(|api| {
                (
                    (api.group.to_owned(), api.plural.to_owned()),
                    Arc::new(Notify::new()),
                )
            })
            .collect();
        CrdWakers { by_resource }
    }

    /// The waker of a kind, if a CRD serves it.
    pub(super) fn get(&self, kind: Kind) -> Option<Arc<Notify>> {
        let api = kind.api();
        self.by_resource
            .get(&(api.group.to_owned(), api.plural.to_owned()))
            .cloned()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_resource.is_empty()
    }

    /// Wakes the kind a CRD serves once the API server reports it established. A wake-up
    /// for a kind that is being watched already is kept and costs at most one extra list.
    fn apply(&self, crd: &CustomResourceDefinition) -> bool {
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            return false;
        }
        let key = (crd.spec.group.clone(), crd.spec.names.plural.clone());
        match self.by_resource.get(&key) {
            Some(waker) => {
                waker.notify_one();
                true
            }
            None => false,
        }
    }

    /// Watches CustomResourceDefinitions until the task is dropped. Without the RBAC to
    /// do so, the kinds' own retries still pick a CRD up, later.
    pub(super) async fn run(self, client: kube::Client) {
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(crd) | Event::InitApply(crd)) => {
                    if self.apply(&crd) {
                        debug!(
                            crd = crd.metadata.name.as_deref().unwrap_or(""),
                            "CRD established"
                        );
                    }
                }
                Ok(_) => {}
                Err(e) if classify(&e) == Failure::Forbidden => {
                    warn!(error = %e, "cannot watch CustomResourceDefinitions; a CRD installed later is picked up on its kind's next retry (up to 30 s)");
                    return;
                }
                Err(e) => debug!(error = %e, "CustomResourceDefinition watch failed; retrying"),
            }
        }
        info!("CustomResourceDefinition watch ended");
    }
}
