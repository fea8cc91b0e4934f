//! PeerAuthentication: which inbound ports of a workload require mutual TLS.
//!
//! Policies compose as upstream's `ComposePeerAuthentication` does: the mesh policy (root
//! namespace, no selector), then the namespace policy (no selector), then the workload policy
//! (a selector matching the workload, outside the root namespace); each level that sets a mode
//! replaces the inherited one, `UNSET` inherits. Port-level modes come from the workload policy
//! only, keyed by the workload's (target) port. With several candidates at one level the oldest
//! wins (creation time, then name, then namespace). Without any policy the mode is PERMISSIVE.

use std::collections::{BTreeMap, HashMap};

use crate::config::istio::{MutualTls, PeerAuthentication};
use crate::config::{Snapshot, Spec};
use crate::model::service::labels_match;

/// The mutual TLS mode of an inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext both accepted.
    Permissive,
    /// mTLS only.
    Strict,
}

impl MtlsMode {
    /// The mode a PeerAuthentication sets; `None` for `UNSET` or no mode (inherit).
    pub fn of(mtls: Option<&MutualTls>) -> Option<MtlsMode> {
        match mtls?.mode.as_deref()? {
            "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "DISABLE" => Some(MtlsMode::Disable),
            // UNSET, or a value validation already refused.
            _ => None,
        }
    }
}

/// One stored PeerAuthentication.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPolicy {
    pub name: String,
    pub namespace: String,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts by time); empty for files.
    pub created: String,
    pub spec: PeerAuthentication,
}

impl PeerPolicy {
    /// A workload-level policy (a selector with labels); without one it is mesh- or
    /// namespace-wide.
    pub fn has_selector(&self) -> bool {
        self.spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }

    fn age_key(&self) -> (&str, &str, &str) {
        (&self.created, &self.name, &self.namespace)
    }
}

/// The effective mode of a workload: a default and per-port overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMtls {
    pub mode: MtlsMode,
    /// Port-level modes of the workload policy, by target port.
    pub ports: BTreeMap<u32, MtlsMode>,
}

impl EffectiveMtls {
    /// The mode of traffic to `port` of the workload.
    pub fn for_port(&self, port: u16) -> MtlsMode {
        self.ports
            .get(&u32::from(port))
            .copied()
            .unwrap_or(self.mode)
    }
}

/// Every PeerAuthentication, indexed by namespace, with the namespace-level modes resolved
/// (what clients infer for auto mTLS).
#[derive(Debug, Default)]
pub struct PeerAuthnPolicies {
    root_namespace: String,
    by_namespace: HashMap<String, Vec<PeerPolicy>>,
    /// The mesh-wide mode, if a mesh policy exists (`UNSET` there counts as PERMISSIVE).
    mesh_mode: Option<MtlsMode>,
    /// Namespace-level modes, resolved against the mesh mode.
    namespace_modes: HashMap<String, MtlsMode>,
}

impl PeerAuthnPolicies {
    /// Indexes the PeerAuthentications of a snapshot.
    pub fn build(snapshot: &Snapshot, root_namespace: &str) -> PeerAuthnPolicies {
        let mut by_namespace: HashMap<String, Vec<PeerPolicy>> = HashMap::new();
        for c in snapshot.configs.values() {
            let Spec::PeerAuthentication(spec) = &c.spec else {
                continue;
            };
            let created = c
                .raw
                .as_ref()
                .and_then(|r| r.pointer("/metadata/creationTimestamp"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            by_namespace
                .entry(c.key.namespace.clone())
                .or_default()
                .push(PeerPolicy {
                    name: c.key.name.clone(),
                    namespace: c.key.namespace.clone(),
                    created,
                    spec: spec.as_ref().clone(),
                });
        }
        for policies in by_namespace.values_mut() {
            policies.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        }
        let oldest_unselected = |ns: &str| {
            by_namespace
                .get(ns)
                .and_then(|v| v.iter().find(|p| !p.has_selector()))
        };
        let mesh_mode = oldest_unselected(root_namespace)
            .map(|p| MtlsMode::of(p.spec.mtls.as_ref()).unwrap_or(MtlsMode::Permissive));
        let inherited = mesh_mode.unwrap_or(MtlsMode::Permissive);
        let namespace_modes = by_namespace
            .keys()
            .filter(|ns| *ns != root_namespace)
            .filter_map(|ns| {
                let p = oldest_unselected(ns)?;
                let mode = MtlsMode::of(p.spec.mtls.as_ref()).unwrap_or(inherited);
                Some((ns.clone(), mode))
            })
            .collect();
        PeerAuthnPolicies {
            root_namespace: root_namespace.to_owned(),
            by_namespace,
            mesh_mode,
            namespace_modes,
        }
    }

    /// Every policy, namespace by namespace, each list oldest first (the order upstream
    /// picks winners in).
    pub fn by_namespace(&self) -> impl Iterator<Item = (&str, &[PeerPolicy])> {
        self.by_namespace
            .iter()
            .map(|(ns, v)| (ns.as_str(), v.as_slice()))
    }

    /// The root namespace: its selector-less policy is mesh-wide.
    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// The namespace- or mesh-level mode of `namespace`; `None` without either policy.
    /// Clients use it to guess whether a service accepts mTLS (auto mTLS).
    pub fn namespace_mode(&self, namespace: &str) -> Option<MtlsMode> {
        self.namespace_modes
            .get(namespace)
            .copied()
            .or(self.mesh_mode)
    }

    /// The policies that apply to a workload, oldest first at each level:
    /// (mesh, namespace, workload).
    fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> (
        Option<&PeerPolicy>,
        Option<&PeerPolicy>,
        Option<&PeerPolicy>,
    ) {
        let in_ns = |ns: &str| self.by_namespace.get(ns).into_iter().flatten();
        let mesh = in_ns(&self.root_namespace).find(|p| !p.has_selector());
        if namespace == self.root_namespace {
            // A workload in the root namespace: the mesh policy is also its namespace policy,
            // and selector policies there select nothing (upstream treats them as mesh-level).
            return (mesh, None, None);
        }
        let ns_policy = in_ns(namespace).find(|p| !p.has_selector());
        let workload = in_ns(namespace).find(|p| {
            p.spec.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty() && labels_match(&s.match_labels, labels)
            })
        });
        (mesh, ns_policy, workload)
    }

    /// The effective mode of the workload in `namespace` with `labels`.
    pub fn inbound_mtls(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> EffectiveMtls {
        let (mesh, ns_policy, workload) = self.for_workload(namespace, labels);
        let mut mode = MtlsMode::Permissive;
        for p in [mesh, ns_policy, workload].into_iter().flatten() {
            if let Some(m) = MtlsMode::of(p.spec.mtls.as_ref()) {
                mode = m;
            }
        }
        let ports = workload
            .map(|p| {
                p.spec
                    .port_level_mtls
                    .iter()
                    .map(|(port, m)| (*port, MtlsMode::of(Some(m)).unwrap_or(mode)))
                    .collect()
            })
            .unwrap_or_default();
        EffectiveMtls { mode, ports }
    }

    /// Names (`namespace/name`) of the policies that apply to the workload, for debugging.
    pub fn applied(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        let (mesh, ns_policy, workload) = self.for_workload(namespace, labels);
        [mesh, ns_policy, workload]
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }
}

#[cfg(test)]
mod tests;
