//! AuthorizationPolicies by namespace, and which of them apply to a workload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::istio::security::{Action, AuthorizationPolicy};
use crate::config::{Snapshot, Spec};
use crate::model::service::labels_match;

/// The annotation that turns a policy into a dry run (shadow rules only).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
/// The label naming the Kubernetes Gateway a workload is an instance of.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// One policy with what the builder needs of its object.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthzPolicy {
    pub name: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
    pub spec: AuthorizationPolicy,
}

/// The policies of a snapshot by namespace, oldest first within each.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationPolicies {
    by_namespace: HashMap<String, Vec<Arc<AuthzPolicy>>>,
    /// Policies here apply to workloads of every namespace.
    pub root_namespace: String,
}

/// The policies applying to one workload, by action.
#[derive(Debug, Clone, Default)]
pub struct Applicable {
    pub custom: Vec<Arc<AuthzPolicy>>,
    pub deny: Vec<Arc<AuthzPolicy>>,
    pub allow: Vec<Arc<AuthzPolicy>>,
    pub audit: Vec<Arc<AuthzPolicy>>,
}

impl AuthorizationPolicies {
    pub fn build(snapshot: &Snapshot, root_namespace: &str) -> AuthorizationPolicies {
        let mut all: Vec<(String, AuthzPolicy)> = snapshot
            .configs
            .values()
            .filter_map(|c| match &c.spec {
                Spec::AuthorizationPolicy(spec) => {
                    let created = c
                        .raw
                        .as_ref()
                        .and_then(|r| r.pointer("/metadata/creationTimestamp"))
                        .and_then(|t| t.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    Some((
                        created,
                        AuthzPolicy {
                            name: c.key.name.clone(),
                            namespace: c.key.namespace.clone(),
                            annotations: c.annotations.clone(),
                            spec: spec.as_ref().clone(),
                        },
                    ))
                }
                _ => None,
            })
            .collect();
        // Upstream's order: creation time, then name, then namespace.
        all.sort_by(|(ta, a), (tb, b)| {
            (ta, &a.name, &a.namespace).cmp(&(tb, &b.name, &b.namespace))
        });
        let mut by_namespace: HashMap<String, Vec<Arc<AuthzPolicy>>> = HashMap::new();
        for (_, p) in all {
            by_namespace
                .entry(p.namespace.clone())
                .or_default()
                .push(Arc::new(p));
        }
        AuthorizationPolicies {
            by_namespace,
            root_namespace: root_namespace.to_owned(),
        }
    }

    /// Number of policies, for debug pages.
    pub fn len(&self) -> usize {
        self.by_namespace.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policies of the root namespace and of `namespace` that select a workload with
    /// `labels`, sorted by action.
    pub fn applicable(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Applicable {
        let mut out = Applicable::default();
        let mut namespaces = vec![self.root_namespace.as_str()];
        if namespace != self.root_namespace {
            namespaces.push(namespace);
        }
        for ns in namespaces {
            for p in self.by_namespace.get(ns).into_iter().flatten() {
                if !attaches(p, namespace, labels) {
                    continue;
                }
                match &p.spec.action {
                    Action::Allow => out.allow.push(p.clone()),
                    Action::Deny => out.deny.push(p.clone()),
                    Action::Audit => out.audit.push(p.clone()),
                    Action::Custom => out.custom.push(p.clone()),
                    Action::Unknown(a) => tracing::error!(
                        target: "authorization",
                        "ignored authorization policy {}.{} with unsupported action: {a}",
                        p.namespace,
                        p.name
                    ),
                }
            }
        }
        out
    }
}

/// Whether a policy applies to a (non-waypoint) workload: by selector for ordinary
/// workloads, which ignore policies with target refs; by a Gateway target ref in the same
/// namespace (or, without refs, the selector) for Kubernetes Gateway instances.
fn attaches(p: &AuthzPolicy, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    let refs = p.spec.target_refs();
    let selected = || {
        p.spec
            .match_labels()
            .is_none_or(|m| labels_match(m, labels))
    };
    let Some(gateway) = labels.get(GATEWAY_NAME_LABEL) else {
        return refs.is_empty() && selected();
    };
    if refs.is_empty() {
        return selected();
    }
    refs.iter().any(|r| {
        p.namespace == namespace
            && (r.namespace.is_empty() || r.namespace == namespace)
            && r.group == "gateway.networking.k8s.io"
            && r.kind == "Gateway"
            && &r.name == gateway
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::object::parse_manifests;
    use crate::config::store::Snapshot;

    fn policies(yaml: &str) -> AuthorizationPolicies {
        let parsed = parse_manifests(yaml).unwrap();
        let snapshot = Snapshot {
            configs: parsed
                .configs
                .into_iter()
                .map(|c| (c.key.clone(), Arc::new(c)))
                .collect(),
            ..Default::default()
        };
        AuthorizationPolicies::build(&snapshot, "istio-system")
    }

    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}, action: AUDIT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: x}
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ingress}]
"#;

    fn names(v: &[Arc<AuthzPolicy>]) -> Vec<&str> {
        v.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn selects_by_namespace_root_selector_and_target_ref() {
        let all = policies(POLICIES);
        assert_eq!(all.len(), 5);
        let labels = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let httpbin = all.applicable("foo", &labels(&[("app", "httpbin")]));
        assert_eq!(names(&httpbin.deny), ["mesh-wide"]);
        assert_eq!(names(&httpbin.allow), ["ns-wide"]);
        assert_eq!(names(&httpbin.audit), ["httpbin"]);
        assert!(
            httpbin.custom.is_empty(),
            "target refs never attach to sidecars"
        );

        let other = all.applicable("foo", &labels(&[("app", "other")]));
        assert!(other.audit.is_empty());

        let gateway = all.applicable("foo", &labels(&[(GATEWAY_NAME_LABEL, "ingress")]));
        assert_eq!(names(&gateway.custom), ["gw"]);
        let elsewhere = all.applicable("baz", &labels(&[(GATEWAY_NAME_LABEL, "ingress")]));
        assert!(elsewhere.custom.is_empty());
        assert_eq!(names(&elsewhere.deny), ["mesh-wide"]);
    }
}
