//! What the server needs to serve SDS beyond the generator: who may read Secrets, and
//! which streams a Secret change concerns.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::gen::Subscription;
use crate::config::secrets::SecretKey;
use crate::model::credentials::{parse_resource_name, Access};
use crate::security::Identity;

/// Decides whether an authenticated workload may read the Secrets of its namespace (the
/// keys, not only CA bundles). Upstream asks the API server with a SubjectAccessReview
/// (`list secrets` in the namespace, as `system:serviceaccount:<ns>:<sa>`) and caches the
/// answer; without Kubernetes there is nothing to ask and every identity may.
pub trait SecretAuthorizer: Send + Sync {
    /// `Err` says why not, for the log.
    fn authorize(&self, identity: &Identity) -> BoxFuture<'static, Result<(), String>>;
}

/// Allows every authenticated identity (the `--configDir` mode: no RBAC to ask).
pub struct AllowAll;

impl SecretAuthorizer for AllowAll {
    fn authorize(&self, _identity: &Identity) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The access of a proxy: unauthenticated without a verified identity, else its
/// namespace with the authorizer's answer.
pub async fn access_of(
    identity: Option<&Identity>,
    authorizer: &Arc<dyn SecretAuthorizer>,
) -> Access {
    match identity {
        None => Access::Unauthenticated,
        Some(id) => Access::Namespace {
            namespace: id.namespace.clone(),
            may_read_secrets: authorizer.authorize(id).await,
        },
    }
}

/// Whether a change of `changed` Secrets concerns a subscription: one of its names refers
/// to a changed Secret or to its `-cacert` sibling (upstream's `relatedConfigs`).
pub fn concerns(sub: &Subscription, namespace: &str, changed: &BTreeSet<SecretKey>) -> bool {
    sub.names().any(|name| {
        parse_resource_name(name, namespace)
            .ok()
            .flatten()
            .is_some_and(|r| r.related().iter().any(|k| changed.contains(k)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_concerns_the_name_and_its_cacert_sibling() {
        let changed = BTreeSet::from([SecretKey::new("gw", "a")]);
        let yes =
            |names: &[&str]| concerns(&Subscription::of(names.iter().copied()), "gw", &changed);
        assert!(yes(&["kubernetes://a"]));
        assert!(yes(&["kubernetes://gw/a"]));
        assert!(yes(&["kubernetes://a-cacert"]));
        assert!(!yes(&["kubernetes://b", "kubernetes://other/a", "junk"]));
        assert!(!concerns(&Subscription::Wildcard, "gw", &changed));
    }
}
