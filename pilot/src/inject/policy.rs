//! Whether a pod gets a sidecar, decided as upstream's injector does once the API server
//! has sent it the pod: host-network pods and the Kubernetes system namespaces never, then
//! the pod's own `sidecar.istio.io/inject` (label over annotation), then the config's
//! `neverInjectSelector` and `alwaysInjectSelector`, then the config's `policy`.
//!
//! The namespace's `istio-injection` and `istio.io/rev` labels are not read here: as
//! upstream, they are the MutatingWebhookConfigurations' `namespaceSelector` and
//! `objectSelector`, applied by the API server before a pod reaches the webhook.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tracing::warn;

use super::config::{Config, Policy};

/// The pod label and annotation by which a pod asks for or refuses a sidecar.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";

/// Namespaces never injected: the API server's own, and kind's local storage.
pub const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// What the policy checks look at in a pod.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub host_network: bool,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// Why a pod is or is not injected; the first rule that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The pod's label or annotation says `true`.
    PodOptIn,
    /// An `alwaysInjectSelector` matches.
    AlwaysSelector,
    /// Nothing said otherwise and the policy is `enabled`.
    PolicyEnabled,
    /// Host networking: the proxy's iptables rules would rewrite the node's.
    HostNetwork,
    /// A Kubernetes system namespace.
    IgnoredNamespace,
    /// The pod's label or annotation says `false`.
    PodOptOut,
    /// A `neverInjectSelector` matches.
    NeverSelector,
    /// Nothing said otherwise and the policy is `disabled`.
    PolicyDisabled,
    /// The policy is neither `enabled` nor `disabled`: nothing is injected.
    PolicyInvalid,
}

impl Decision {
    /// Whether the pod is injected.
    pub fn inject(self) -> bool {
        matches!(
            self,
            Decision::PodOptIn | Decision::AlwaysSelector | Decision::PolicyEnabled
        )
    }
}

/// Decides whether `pod` is injected under `config`, with upstream's precedence.
pub fn decide(config: &Config, pod: PodFacts<'_>) -> Decision {
    if pod.host_network {
        return Decision::HostNetwork;
    }
    if IGNORED_NAMESPACES.contains(&pod.namespace) {
        return Decision::IgnoredNamespace;
    }
    // The label is the newer API and wins over the annotation.
    let asked = pod
        .labels
        .get(INJECT_KEY)
        .or_else(|| pod.annotations.get(INJECT_KEY))
        .map(String::as_str)
        .unwrap_or("");
    // The pod's own word, if any; an explicit choice wins over the selectors and policy.
    let explicit = match asked {
        "true" => Some(Decision::PodOptIn),
        "false" => Some(Decision::PodOptOut),
        "" => None,
        other => {
            warn!(
                value = other,
                "invalid {INJECT_KEY}: only true and false are accepted; using the default policy"
            );
            None
        }
    };
    let chosen = explicit.or_else(|| {
        if config.never_inject(pod.labels) {
            Some(Decision::NeverSelector)
        } else if config.always_inject(pod.labels) {
            Some(Decision::AlwaysSelector)
        } else {
            None
        }
    });
    match (&config.policy, chosen) {
        (Policy::Invalid(_), _) => Decision::PolicyInvalid,
        (_, Some(decision)) => decision,
        (Policy::Enabled, None) => Decision::PolicyEnabled,
        (Policy::Disabled, None) => Decision::PolicyDisabled,
    }
}
