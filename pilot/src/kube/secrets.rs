//! Secrets for SDS: a cluster-wide watch feeding the credentials store (without the
//! Secret types upstream leaves out), and the SubjectAccessReview that decides whether a
//! workload may read its namespace's Secrets (upstream's `CredentialsController`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch as notify;
use tracing::{debug, error, info, warn};

use crate::config::secrets::{field_selector, SecretData, SecretKey, SecretStore};
use crate::security::Identity;
use crate::xds::secrets::SecretAuthorizer;

/// The store source the watch owns.
pub const SOURCE: &str = "kubernetes/Secret";

/// Watches every Secret (but the skipped types) until the task is aborted; `synced` turns
/// true once the first list is in the store, or the watch is forbidden.
pub async fn watch_secrets(client: kube::Client, store: SecretStore, synced: notify::Sender<bool>) {
    let api: Api<Secret> = Api::all(client);
    let config = watcher::Config::default().fields(&field_selector());
    let mut stream = watcher(api, config)
        .default_backoff()
        .modify(|s| s.metadata.managed_fields = None)
        .boxed();
    let mut initial = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(s)) => initial.extend(SecretData::from_secret(s)),
            Ok(Event::InitDone) => {
                let n = initial.len();
                store.replace_source(SOURCE, std::mem::take(&mut initial));
                info!(secrets = n, "Secrets synced");
                synced.send_replace(true);
            }
            Ok(Event::Apply(s)) => {
                if let Some((key, data)) = SecretData::from_secret(s) {
                    store.upsert(SOURCE, key, data);
                }
            }
            Ok(Event::Delete(s)) => {
                let meta = &s.metadata;
                if let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) {
                    store.delete(SOURCE, &SecretKey::new(ns, name));
                }
            }
            Err(e) if is_forbidden(&e) => {
                error!(error = %e, "forbidden to list/watch Secrets; check istiod's RBAC. Gateways get no certificates over SDS; istiod keeps serving the rest");
                synced.send_replace(true);
                return;
            }
            Err(e) => warn!(error = %e, "Secret watch failed; retrying with backoff"),
        }
    }
}

fn is_forbidden(e: &watcher::Error) -> bool {
    matches!(
        e,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.code == 403
    )
}

/// How long an answer is kept: a refusal for a minute, an approval five, as upstream
/// (there is no need to revoke access quickly).
const DENIED_TTL: Duration = Duration::from_secs(60);
const ALLOWED_TTL: Duration = Duration::from_secs(300);

/// Asks the API server whether `system:serviceaccount:<ns>:<sa>` may `list` Secrets in its
/// namespace, caching the answer per user.
pub struct SubjectAccessReviewer {
    api: Api<SubjectAccessReview>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

/// An answer and when it expires.
type Cached = (Instant, Result<(), String>);

impl SubjectAccessReviewer {
    pub fn new(client: kube::Client) -> Self {
        SubjectAccessReviewer {
            api: Api::all(client),
            cache: Arc::default(),
        }
    }
}

/// The review upstream sends for a workload.
pub fn review_for(identity: &Identity) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user_of(identity)),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(identity.namespace.clone()),
                verb: Some("list".into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn user_of(identity: &Identity) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        identity.namespace, identity.service_account
    )
}

impl SecretAuthorizer for SubjectAccessReviewer {
    fn authorize(&self, identity: &Identity) -> BoxFuture<'static, Result<(), String>> {
        let user = user_of(identity);
        let review = review_for(identity);
        let (api, cache) = (self.api.clone(), self.cache.clone());
        let who = format!("{}/{}", identity.service_account, identity.namespace);
        Box::pin(async move {
            {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                cache.retain(|_, (expires, _)| *expires > now);
                if let Some((_, answer)) = cache.get(&user) {
                    return answer.clone();
                }
            }
            let answer = match api.create(&PostParams::default(), &review).await {
                Ok(r) => match r.status {
                    Some(s) if s.allowed => Ok(()),
                    s => Err(format!(
                        "{who} is not authorized to read secrets: {}",
                        s.and_then(|s| s.reason).unwrap_or_default()
                    )),
                },
                Err(e) => Err(format!("SubjectAccessReview for {who} failed: {e}")),
            };
            debug!(%user, allowed = answer.is_ok(), "cached Secret authorization");
            let ttl = if answer.is_ok() {
                ALLOWED_TTL
            } else {
                DENIED_TTL
            };
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user, (Instant::now() + ttl, answer.clone()));
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_whether_the_service_account_may_list_its_namespaces_secrets() {
        let review = review_for(&Identity::new("cluster.local", "gw", "ingress"));
        let v = serde_json::to_value(&review).unwrap();
        assert_eq!(
            v["spec"],
            serde_json::json!({
                "user": "system:serviceaccount:gw:ingress",
                "resourceAttributes": {"namespace": "gw", "verb": "list", "resource": "secrets"},
            })
        );
    }
}
