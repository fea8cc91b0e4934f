//! Keeps the admission webhooks of this revision pointed at istiod's CA, as upstream's
//! validation controller and injector CA patcher: `caBundle` on every webhook of the
//! ValidatingWebhookConfigurations labelled `istio.io/rev=<rev>`, and on the
//! `*sidecar-injector.istio.io` webhooks of the MutatingWebhookConfigurations with that
//! label. The validation webhooks' `failurePolicy` goes from `Ignore` to `Fail` only once
//! a dry-run create of an invalid Gateway labelled with the revision is denied, i.e. the
//! webhook really answers.
//!
//! The injector webhooks are patched only when this istiod serves injection, as upstream
//! starts its injector CA patcher only once the injection webhook is set up. Making the
//! API server trust an istiod that answers `/inject` with 404 would turn every pod
//! creation the webhook selects into a failed call, and under the chart's
//! `failurePolicy: Fail` into a refused pod; left alone, the configuration stays whatever
//! another injector (or nobody) made it.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

/// The revision label selecting this istiod's webhook configurations.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Injector webhooks are recognised by this name suffix.
pub const INJECTOR_SUFFIX: &str = "sidecar-injector.istio.io";
/// The Gateway used for the self-check; never persisted (dry run).
pub const INVALID_GATEWAY: &str = "invalid-gateway";
/// Makes istiod's validation webhook reject the object whatever it contains.
pub const ALWAYS_REJECT_ANNOTATION: &str = "internal.istio.io/webhook-always-reject";

/// Why patching failed.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("listing {kind}s labelled {REVISION_LABEL}={revision} (istiod needs get/list/watch/update on them): {source}")]
    List {
        kind: &'static str,
        revision: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating {kind} {name} (istiod needs update on {kind}s): {source}")]
    Update {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the self-check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfCheck {
    /// The invalid Gateway was denied: the webhook is serving and enforced.
    Denied,
    /// Anything else, with the reason (the webhook is not reachable yet, the CRD is
    /// missing, the dry run was accepted...).
    NotYet(String),
}

/// Patches this revision's webhook configurations.
#[derive(Clone)]
pub struct WebhookPatcher {
    client: kube::Client,
    revision: String,
    namespace: String,
    injection_served: bool,
}

fn bundle_bytes(pem: &str) -> Option<ByteString> {
    Some(ByteString(pem.as_bytes().to_vec()))
}

impl WebhookPatcher {
    /// `revision` is the `istio.io/rev` value (`default` when empty); `namespace` the
    /// istiod namespace, where the self-check Gateway is dry-run. Injector webhooks are
    /// left alone unless [`WebhookPatcher::injection_served`] says otherwise.
    pub fn new(client: kube::Client, revision: &str, namespace: &str) -> Self {
        let revision = if revision.is_empty() {
            "default"
        } else {
            revision
        };
        WebhookPatcher {
            client,
            revision: revision.to_owned(),
            namespace: namespace.to_owned(),
            injection_served: false,
        }
    }

    /// Whether this istiod answers `/inject`: only then are the injector webhooks given
    /// its CA bundle (and watched).
    pub fn injection_served(mut self, served: bool) -> Self {
        self.injection_served = served;
        self
    }

    fn selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{REVISION_LABEL}={}", self.revision))
    }

    /// Sets `caBundle` on every validation webhook, and `failurePolicy: Fail` when
    /// `fail_closed`. Returns how many configurations were updated.
    pub async fn patch_validating(
        &self,
        ca_bundle: &str,
        fail_closed: bool,
    ) -> Result<usize, PatchError> {
        let want = bundle_bytes(ca_bundle);
        self.update_each(
            "ValidatingWebhookConfiguration",
            |config: &mut ValidatingWebhookConfiguration| {
                let mut changed = false;
                for hook in config.webhooks.iter_mut().flatten() {
                    if hook.client_config.ca_bundle != want {
                        hook.client_config.ca_bundle = want.clone();
                        changed = true;
                    }
                    if fail_closed && hook.failure_policy.as_deref() != Some("Fail") {
                        hook.failure_policy = Some("Fail".to_owned());
                        changed = true;
                    }
                }
                changed
            },
        )
        .await
    }

    /// Sets `caBundle` on the injector webhooks. Returns how many configurations were
    /// updated.
    pub async fn patch_mutating(&self, ca_bundle: &str) -> Result<usize, PatchError> {
        let want = bundle_bytes(ca_bundle);
        self.update_each(
            "MutatingWebhookConfiguration",
            |config: &mut MutatingWebhookConfiguration| {
                let mut changed = false;
                for hook in config.webhooks.iter_mut().flatten() {
                    if hook.name.ends_with(INJECTOR_SUFFIX) && hook.client_config.ca_bundle != want
                    {
                        hook.client_config.ca_bundle = want.clone();
                        changed = true;
                    }
                }
                changed
            },
        )
        .await
    }

    /// Applies `edit` to each of this revision's configurations of one kind and replaces
    /// those it changed; returns how many.
    async fn update_each<K>(
        &self,
        kind: &'static str,
        edit: impl Fn(&mut K) -> bool,
    ) -> Result<usize, PatchError>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let mut updated = 0;
        for mut config in self.list(&api, kind).await? {
            if edit(&mut config) {
                let name = config.meta().name.clone();
                self.replace(&api, kind, &name, &config).await?;
                updated += 1;
            }
        }
        Ok(updated)
    }

    /// This revision's configurations of one kind.
    async fn list<K>(&self, api: &Api<K>, kind: &'static str) -> Result<Vec<K>, PatchError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let list = api
            .list(&self.selector())
            .await
            .map_err(|source| PatchError::List {
                kind,
                revision: self.revision.clone(),
                source,
            })?;
        Ok(list.items)
    }

    async fn replace<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        name: &Option<String>,
        config: &K,
    ) -> Result<(), PatchError>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = name.clone().unwrap_or_default();
        // The resource version from the list makes a concurrent edit fail; the next
        // round re-reads and retries.
        api.replace(&name, &PostParams::default(), config)
            .await
            .map_err(|source| PatchError::Update {
                kind,
                name: name.clone(),
                source,
            })?;
        info!(kind, name = %name, "patched webhook configuration");
        Ok(())
    }

    /// Dry-run creates an invalid Gateway; the validation webhook must deny it.
    pub async fn self_check(&self) -> SelfCheck {
        let ar = ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        let mut gateway = DynamicObject::new(INVALID_GATEWAY, &ar).within(&self.namespace);
        // Labelled with this revision, as upstream: the webhooks' objectSelector sends only
        // this revision's objects to this istiod, so the check proves this one answers.
        gateway.metadata.labels = Some([(REVISION_LABEL.to_owned(), self.revision.clone())].into());
        gateway.metadata.annotations =
            Some([(ALWAYS_REJECT_ANNOTATION.to_owned(), "true".to_owned())].into());
        // No servers: invalid even without the annotation.
        gateway.data = json!({"spec": {"selector": {"istio": "invalid"}}});
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        match api.create(&params, &gateway).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => {
                SelfCheck::Denied
            }
            Err(e) => SelfCheck::NotYet(e.to_string()),
            Ok(_) => SelfCheck::NotYet(
                "the invalid Gateway was accepted: the validation webhook is not called yet"
                    .to_owned(),
            ),
        }
    }

    /// One full round: caBundles (the injectors' only when injection is served), then the
    /// self-check, then `failurePolicy: Fail`. Returns whether the validation webhooks are
    /// now fail-closed.
    pub async fn reconcile(&self, ca_bundle: &str, checked: bool) -> Result<bool, PatchError> {
        if self.injection_served {
            self.patch_mutating(ca_bundle).await?;
        }
        self.patch_validating(ca_bundle, checked).await?;
        if checked {
            return Ok(true);
        }
        match self.self_check().await {
            SelfCheck::Denied => {
                info!("validation webhook denied the invalid Gateway; switching failurePolicy to Fail");
                self.patch_validating(ca_bundle, true).await?;
                Ok(true)
            }
            SelfCheck::NotYet(reason) => {
                debug!(%reason, "validation self-check not passed yet; failurePolicy stays Ignore");
                Ok(false)
            }
        }
    }

    /// Keeps the webhooks current until `shutdown`: on a new CA bundle, on any change to
    /// the labelled configurations, and with backoff (100ms to 1m) until the self-check
    /// passes or after an error.
    pub async fn run(self, mut ca_bundle: watch::Receiver<String>, shutdown: CancellationToken) {
        let span = info_span!(
            "webhook_patcher",
            revision = %self.revision,
            injection_served = self.injection_served
        );
        async move {
            if !self.injection_served {
                info!("not serving injection: injector webhook configurations are left alone");
            }
            let selector = format!("{REVISION_LABEL}={}", self.revision);
            let cfg = watcher::Config::default().labels(&selector);
            let vwc: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            let validating = watcher(vwc, cfg.clone())
                .default_backoff()
                .map(|e| e.map(|_| ()))
                .boxed();
            let mut changes = if self.injection_served {
                let mwc: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
                let mutating = watcher(mwc, cfg)
                    .default_backoff()
                    .map(|e| e.map(|_| ()))
                    .boxed();
                futures::stream::select(validating, mutating).boxed()
            } else {
                validating
            };
            let mut checked = false;
            let mut backoff = Duration::from_millis(100);
            loop {
                let bundle = ca_bundle.borrow_and_update().clone();
                let retry = if bundle.is_empty() {
                    None
                } else {
                    match self.reconcile(&bundle, checked).await {
                        Ok(true) => {
                            checked = true;
                            backoff = Duration::from_millis(100);
                            None
                        }
                        Ok(false) => Some(backoff),
                        Err(error) => {
                            warn!(%error, "patching webhook configurations failed; will retry");
                            Some(backoff)
                        }
                    }
                };
                if retry.is_some() {
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                let wait = async {
                    match retry {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wait => {}
                    changed = ca_bundle.changed() => if changed.is_err() { return },
                    Some(event) = changes.next() => {
                        if let Err(error) = event {
                            warn!(%error, "webhook configuration watch failed; retrying");
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests;
