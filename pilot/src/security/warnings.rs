//! Security policies that do not do what they say, found on each push and reported (logged
//! once when they appear, listed at `/debug/config_warnings`):
//!
//! * PeerAuthentications that lose a conflict: a second mesh-wide (root namespace) or
//!   namespace-wide policy, or a second workload policy selecting the same workload. As
//!   upstream, the oldest wins (creation time, then name); the others are ignored.
//! * A PeerAuthentication with a selector in the root namespace, which upstream ignores.
//! * An AuthorizationPolicy, PeerAuthentication or RequestAuthentication whose selector
//!   matches no known workload (Pod or WorkloadEntry), as `istioctl analyze` reports
//!   (IST0127 NoMatchingWorkloadsFound).
//!
//! None of these are errors: the config is applied as upstream applies it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::istio::Labels;
use crate::config::{Kind, Snapshot, Spec};
use crate::model::service::labels_match;
use crate::security::peer_authn::{PeerAuthnPolicies, PeerPolicy};

#[cfg(test)]
mod tests;

/// One warning about one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PolicyWarning {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// Every warning of a push, sorted by resource, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigWarnings {
    warnings: Vec<PolicyWarning>,
}

/// A workload a selector may pick: a Pod or a WorkloadEntry.
struct Workload<'a> {
    kind: Kind,
    namespace: &'a str,
    name: &'a str,
    labels: Cow<'a, Labels>,
}

impl Workload<'_> {
    fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Workloads by namespace.
struct Workloads<'a>(HashMap<&'a str, Vec<Workload<'a>>>);

impl<'a> Workloads<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let mut by_ns: HashMap<&str, Vec<Workload<'_>>> = HashMap::new();
        for c in snapshot.configs.values() {
            let labels = match &c.spec {
                Spec::Pod(_) => Cow::Borrowed(&c.labels),
                // An entry's labels are its metadata's and its spec's, as the registry
                // reads them.
                Spec::WorkloadEntry(we) => {
                    let mut labels = c.labels.clone();
                    labels.extend(we.labels.clone());
                    Cow::Owned(labels)
                }
                _ => continue,
            };
            by_ns
                .entry(c.key.namespace.as_str())
                .or_default()
                .push(Workload {
                    kind: c.key.kind,
                    namespace: &c.key.namespace,
                    name: &c.key.name,
                    labels,
                });
        }
        Workloads(by_ns)
    }

    fn in_namespace(&self, ns: &str) -> &[Workload<'a>] {
        self.0.get(ns).map_or(&[], Vec::as_slice)
    }

    /// Whether any workload in scope matches: `namespace`'s, or every namespace's for a
    /// policy in the root namespace.
    fn any_match(&self, namespace: &str, root: &str, selector: &Labels) -> bool {
        let matches = |w: &Workload<'_>| labels_match(selector, &w.labels);
        if namespace == root {
            self.0.values().flatten().any(matches)
        } else {
            self.in_namespace(namespace).iter().any(matches)
        }
    }
}

/// `k1=v1,k2=v2`, as label selectors are written.
fn selector_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn created(p: &PeerPolicy) -> &str {
    if p.created.is_empty() {
        "unknown"
    } else {
        &p.created
    }
}

impl ConfigWarnings {
    /// Finds the warnings of a snapshot; `peer_authn` is its PeerAuthentication index.
    pub fn build(snapshot: &Snapshot, peer_authn: &PeerAuthnPolicies) -> ConfigWarnings {
        let workloads = Workloads::of(snapshot);
        let root = peer_authn.root_namespace();
        let mut out = Vec::new();
        peer_authn_conflicts(peer_authn, &workloads, &mut out);
        unmatched_selectors(snapshot, root, &workloads, &mut out);
        out.sort();
        out.dedup();
        ConfigWarnings { warnings: out }
    }

    pub fn is_empty(&self) -> bool {
        self.warnings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.warnings.len()
    }

    /// Every warning, sorted by kind, namespace, name.
    pub fn iter(&self) -> impl Iterator<Item = &PolicyWarning> {
        self.warnings.iter()
    }

    /// The warnings not in `prev`: what a push newly found, to log once.
    pub fn new_since<'a>(
        &'a self,
        prev: &'a ConfigWarnings,
    ) -> impl Iterator<Item = &'a PolicyWarning> {
        self.warnings
            .iter()
            .filter(|w| prev.warnings.binary_search(w).is_err())
    }

    /// The warnings grouped by resource, for `/debug/config_warnings`.
    pub fn by_resource(&self) -> Vec<ResourceWarnings<'_>> {
        let mut out: Vec<ResourceWarnings<'_>> = Vec::new();
        for w in &self.warnings {
            match out.last_mut() {
                Some(r) if r.kind == w.kind && r.namespace == w.namespace && r.name == w.name => {
                    r.warnings.push(&w.message)
                }
                _ => out.push(ResourceWarnings {
                    kind: w.kind,
                    namespace: &w.namespace,
                    name: &w.name,
                    warnings: vec![&w.message],
                }),
            }
        }
        out
    }
}

/// The warnings of one resource.
#[derive(Debug, Serialize)]
pub struct ResourceWarnings<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub warnings: Vec<&'a str>,
}

fn warn(out: &mut Vec<PolicyWarning>, kind: Kind, ns: &str, name: &str, message: String) {
    out.push(PolicyWarning {
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
        message,
    });
}

/// PeerAuthentications that lose to an older one, and selectors in the root namespace.
fn peer_authn_conflicts(
    peer_authn: &PeerAuthnPolicies,
    workloads: &Workloads<'_>,
    out: &mut Vec<PolicyWarning>,
) {
    let root = peer_authn.root_namespace();
    let pa = Kind::PeerAuthentication;
    for (ns, policies) in peer_authn.by_namespace() {
        // Mesh- or namespace-wide: the oldest applies, the rest are ignored.
        let mut wide = policies.iter().filter(|p| !p.has_selector());
        if let Some(winner) = wide.next() {
            let level = if ns == root {
                "mesh-wide"
            } else {
                "namespace-wide"
            };
            for p in wide {
                warn(
                    out,
                    pa,
                    ns,
                    &p.name,
                    format!(
                        "ignored: {level} PeerAuthentication {ns}/{} (created {}) is older and applies; only one {level} policy may exist per namespace",
                        winner.name,
                        created(winner)
                    ),
                );
                warn(
                    out,
                    pa,
                    ns,
                    &winner.name,
                    format!(
                        "another {level} PeerAuthentication, {ns}/{} (created {}), is ignored: this one is older and applies",
                        p.name,
                        created(p)
                    ),
                );
            }
        }
        let selected: Vec<&PeerPolicy> = policies.iter().filter(|p| p.has_selector()).collect();
        if ns == root {
            for p in selected {
                warn(
                    out,
                    pa,
                    ns,
                    &p.name,
                    format!("ignored: a PeerAuthentication with a workload selector in the root namespace {root} applies to no workload; remove the selector to make it mesh-wide, or move it to the workload's namespace"),
                );
            }
            continue;
        }
        // Workload-level: per workload, the oldest matching policy applies. Pairs are
        // reported once with how many workloads they share, not once per replica.
        let mut shared: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();
        for w in workloads.in_namespace(ns) {
            let mut matching = selected.iter().enumerate().filter(|(_, p)| {
                p.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| labels_match(&s.match_labels, &w.labels))
            });
            let Some((winner, _)) = matching.next() else {
                continue;
            };
            for (loser, _) in matching {
                let e = shared.entry((winner, loser)).or_insert_with(|| (0, w.id()));
                e.0 += 1;
            }
        }
        for ((winner, loser), (count, example)) in shared {
            let (winner, loser) = (selected[winner], selected[loser]);
            let (many, those) = if count == 1 {
                (example.clone(), "that workload")
            } else {
                (
                    format!("{count} workloads, such as {example}"),
                    "those workloads",
                )
            };
            warn(
                out,
                pa,
                ns,
                &loser.name,
                format!(
                    "ignored for {many}: PeerAuthentication {ns}/{} (created {}) selects {those} too and, being older, applies",
                    winner.name,
                    created(winner)
                ),
            );
            warn(
                out,
                pa,
                ns,
                &winner.name,
                format!(
                    "PeerAuthentication {ns}/{} (created {}) also selects {many} and is ignored there: this one is older and applies",
                    loser.name,
                    created(loser)
                ),
            );
        }
    }
}

/// Policies whose selector matches no workload in their scope. Policies that attach by
/// target reference (gateways, waypoints) are not checked.
fn unmatched_selectors(
    snapshot: &Snapshot,
    root: &str,
    workloads: &Workloads<'_>,
    out: &mut Vec<PolicyWarning>,
) {
    for c in snapshot.configs.values() {
        let selector = match &c.spec {
            Spec::AuthorizationPolicy(p) if p.target_refs().is_empty() => p.match_labels(),
            Spec::RequestAuthentication(p) if !p.has_target() => {
                p.selector.as_ref().map(|s| &s.match_labels)
            }
            // In the root namespace the selector itself is the problem (reported above).
            Spec::PeerAuthentication(p) if c.key.namespace != root => {
                p.selector.as_ref().map(|s| &s.match_labels)
            }
            _ => continue,
        };
        let Some(selector) = selector.filter(|s| !s.is_empty()) else {
            continue;
        };
        let ns = c.key.namespace.as_str();
        if workloads.any_match(ns, root, selector) {
            continue;
        }
        let scope = if ns == root {
            "in any namespace".to_owned()
        } else {
            format!("in namespace {ns}")
        };
        warn(
            out,
            c.key.kind,
            ns,
            &c.key.name,
            format!(
                "no matching workloads: no Pod or WorkloadEntry {scope} has the labels {}",
                selector_text(selector)
            ),
        );
    }
}
