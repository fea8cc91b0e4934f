//! An incremental (delta) ADS stream: only changed resources are sent, and removals are
//! named explicitly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::cache::ProxyResources;
use super::gen::Subscription;
use super::stream::{
    Outgoing, Protocol, ProxyStream, StreamEnd, MAX_NAMES_PER_TYPE, MAX_TYPES_PER_STREAM,
};
use super::types;
use super::watch::Watch;

/// Delta state of one type: the subscription and what the client holds.
#[derive(Debug, Default)]
struct DeltaWatch {
    wildcard: bool,
    /// Shared with every stream subscribing to the same names.
    names: Arc<BTreeSet<String>>,
    held: Held,
}

/// What a client holds of one type, without a copy per stream: the generated set its
/// last response brought it to (shared with every proxy of the config key), and the
/// changes since — versions it announced on connecting, names it dropped or asked for
/// again (to be resent).
#[derive(Debug, Default)]
struct Held {
    base: Option<ProxyResources>,
    /// `Some(version)`: holds that version; `None`: holds nothing of that name.
    changes: BTreeMap<String, Option<String>>,
}

impl Held {
    fn version(&self, name: &str) -> Option<&str> {
        match self.changes.get(name) {
            Some(v) => v.as_deref(),
            None => self.base.as_ref().and_then(|b| b.version_of(name)),
        }
    }

    fn claim(&mut self, name: String, version: String) {
        self.changes.insert(name, Some(version));
    }

    fn forget(&mut self, name: &str) {
        self.changes.insert(name.to_owned(), None);
    }

    /// The names held that `next` does not have.
    fn missing_from(&self, next: &ProxyResources) -> Vec<String> {
        let from_base = self
            .base
            .iter()
            .flat_map(|b| b.resources())
            .map(|r| &r.name);
        let base_names = from_base.filter(|n| !self.changes.contains_key(*n));
        let claimed = self
            .changes
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| n);
        base_names
            .chain(claimed)
            .filter(|n| !next.contains(n))
            .cloned()
            .collect()
    }

    /// The client now holds exactly `generated`.
    fn settle(&mut self, generated: ProxyResources) {
        self.base = Some(generated);
        self.changes.clear();
    }
}

impl DeltaWatch {
    fn subscription(&self) -> Subscription {
        if self.wildcard {
            Subscription::Wildcard
        } else {
            Subscription::Names(self.names.clone())
        }
    }
}

/// The delta rules; per-type state is kept here, and mirrored into the connection's
/// watches for the debug views.
pub struct Delta {
    stream: ProxyStream,
    watches: BTreeMap<String, DeltaWatch>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    const DELTA: bool = true;

    fn new(stream: ProxyStream) -> Self {
        Delta {
            stream,
            watches: BTreeMap::new(),
        }
    }

    fn stream(&self) -> &ProxyStream {
        &self.stream
    }

    fn stream_mut(&mut self) -> &mut ProxyStream {
        &mut self.stream
    }

    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<Vec<Outgoing>, StreamEnd> {
        let type_url = req.type_url.as_str();
        if !self.watches.contains_key(type_url) && self.watches.len() >= MAX_TYPES_PER_STREAM {
            return Err(StreamEnd::TooManyTypes);
        }
        if req.resource_names_subscribe.len() > MAX_NAMES_PER_TYPE
            || req.initial_resource_versions.len() > MAX_NAMES_PER_TYPE
        {
            return Err(StreamEnd::TooManyNames);
        }
        if !req.response_nonce.is_empty() {
            let nonce = req.response_nonce.as_str();
            let status = self
                .stream
                .watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            if nonce != status.nonce_sent {
                self.stream.stale_nonce(type_url, nonce);
            } else if let Some(e) = &req.error_detail {
                let msg = format!("code {}: {}", e.code, e.message);
                status.last_error = Some(msg.clone());
                self.stream.nack(type_url, nonce, &msg);
            } else {
                status.nonce_acked = nonce.to_owned();
                status.version_acked = status.version_sent.clone();
                status.last_error = None;
            }
        }
        let first = !self.watches.contains_key(type_url);
        let watch = self.watches.entry(type_url.to_owned()).or_default();
        if first {
            watch.wildcard =
                types::is_wildcard(type_url) && req.resource_names_subscribe.is_empty();
            for (name, version) in &req.initial_resource_versions {
                watch.held.claim(name.clone(), version.clone());
            }
        }
        let mut names: Option<BTreeSet<String>> = None;
        let mut added = Vec::new();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                watch.wildcard = true;
            } else if !watch.names.contains(name) {
                let set = names.get_or_insert_with(|| watch.names.as_ref().clone());
                if set.insert(name.clone()) {
                    added.push(name.as_str());
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                watch.wildcard = false;
            }
            if watch.names.contains(name) || names.as_ref().is_some_and(|n| n.contains(name)) {
                names
                    .get_or_insert_with(|| watch.names.as_ref().clone())
                    .remove(name);
            }
            // Only what the client holds is recorded: unsubscribing from names it never
            // had leaves no state behind.
            if watch.held.version(name).is_some() {
                watch.held.forget(name);
            }
        }
        for name in &added {
            // A (re)subscribed name must be sent even if we think the client has it.
            watch.held.forget(name);
        }
        if let Some(set) = names {
            if set.len() > MAX_NAMES_PER_TYPE {
                return Err(StreamEnd::TooManyNames);
            }
            watch.names = self.stream.server.name_sets.intern_set(set);
        }
        if first || !added.is_empty() {
            return Ok(self.respond(type_url, first)?.into_iter().collect());
        }
        Ok(Vec::new())
    }

    fn on_push(&mut self, full: bool) -> Result<Vec<Outgoing>, StreamEnd> {
        let mut types = types::push_order(self.watches.keys().map(String::as_str), full);
        // SDS goes by what changed of Secrets, not by the kind of push.
        types.retain(|t| t != types::SECRET);
        if self.stream.secrets_due() && self.watches.contains_key(types::SECRET) {
            types.push(types::SECRET.to_owned());
        }
        let mut out = Vec::new();
        for type_url in types {
            out.extend(self.respond(&type_url, false)?);
        }
        Ok(out)
    }
}

impl Delta {
    /// What changed of a type since the client's last known versions, if anything.
    /// `always` answers even with an empty response (the first request of a type
    /// expects an answer).
    fn respond(&mut self, type_url: &str, always: bool) -> Result<Option<Outgoing>, StreamEnd> {
        let started = Instant::now();
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(None);
        };
        let generated = self
            .stream
            .generated(type_url, &watch.subscription())
            .unwrap_or_default();
        // Versions and wire forms are computed once per push and config key; this stream
        // only picks what its client does not hold yet.
        let mut resources = Vec::new();
        let mut size = 0;
        for (r, entry) in generated.entries() {
            if watch.held.version(&r.name) != Some(entry.version.as_str()) {
                size += r.body.value.len();
                resources.push(entry.wire.clone());
            }
        }
        let removed = watch.held.missing_from(&generated);
        watch.held.settle(generated);
        if resources.is_empty() && removed.is_empty() && !always {
            return Ok(None);
        }
        let version = self.stream.event.push.version.clone();
        let nonce = uuid::Uuid::new_v4().to_string();
        let head = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: self.stream.server.control_plane_id.clone(),
            }),
            ..Default::default()
        };
        {
            let status = self
                .stream
                .watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            status.subscription = watch.subscription();
            status.record_names(watch.names.clone());
            status.sent(&nonce, &version);
        }
        self.stream
            .response(type_url, &head, resources, size, started)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;
    use crate::xds::cache::Generated;
    use crate::xds::gen::Resource;

    fn generated(clusters: &[(&str, u32)]) -> ProxyResources {
        let resources = clusters
            .iter()
            .map(|(name, limit)| {
                let cluster = Cluster {
                    name: (*name).to_owned(),
                    per_connection_buffer_limit_bytes: Some(UInt32Value { value: *limit }),
                    ..Default::default()
                };
                Resource::new(*name, &cluster)
            })
            .collect();
        ProxyResources::new(vec![Arc::new(Generated::new(resources))])
    }

    #[test]
    fn settled_set_is_held_without_a_copy() {
        let g = generated(&[("a", 1), ("b", 1)]);
        let mut held = Held::default();
        assert_eq!(held.version("a"), None);
        held.settle(g.clone());
        assert_eq!(held.version("a"), g.version_of("a"));
        assert!(held.changes.is_empty());
        // The next push changed b and dropped a.
        let next = generated(&[("b", 2), ("c", 1)]);
        assert_ne!(held.version("b"), next.version_of("b"));
        assert_eq!(held.missing_from(&next), ["a"]);
    }

    #[test]
    fn announced_and_forgotten_names_override_the_settled_set() {
        let g = generated(&[("a", 1), ("b", 1)]);
        let mut held = Held::default();
        held.claim("x".into(), "v0".into());
        assert_eq!(held.version("x"), Some("v0"));
        held.settle(g.clone());
        held.forget("a");
        assert_eq!(held.version("a"), None, "asked for again: resend");
        assert_eq!(held.version("b"), g.version_of("b"));
        held.claim("z".into(), "v9".into());
        // Forgotten names are not removals; claimed ones missing from the next set are.
        assert_eq!(held.missing_from(&generated(&[])), ["b", "z"]);
    }
}
