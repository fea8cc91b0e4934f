//! The resource types the fake API server serves to `pilot-discovery`.

use kube_fake::ResourceType;

/// Every kind istiod watches (Istio and Gateway API CRDs only `with_crds`), plus what its
/// writers touch: ConfigMaps, Secrets, Leases, webhook configurations, TokenReviews.
pub fn istiod_resources(with_crds: bool) -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = pilot::config::Kind::ALL
        .into_iter()
        .map(|k| k.api())
        .filter(|a| {
            with_crds || !(a.group.ends_with("istio.io") || a.group.starts_with("gateway."))
        })
        .map(|a| ResourceType::new(a.group, a.version, a.kind, a.plural, a.namespaced))
        .collect();
    out.extend([
        ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::new("", "v1", "Secret", "secrets", true),
        ResourceType::new("coordination.k8s.io", "v1", "Lease", "leases", true),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
        ),
    ]);
    out
}
