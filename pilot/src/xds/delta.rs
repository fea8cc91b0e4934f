//! An incremental (delta) ADS stream: only changed resources are sent, and removals are
//! named explicitly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::generator::Subscription;
use super::stream::{control_plane_id, Protocol, ProxyStream};
use super::types;
use super::watch::Watch;

/// Delta state of one type: the subscription and the version of each resource the
/// client holds.
#[derive(Debug, Default)]
struct DeltaWatch {
    wildcard: bool,
    names: Arc<BTreeSet<String>>,
    sent: BTreeMap<String, String>,
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

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        let type_url = req.type_url.as_str();
        if !req.response_nonce.is_empty() {
            let nonce = req.response_nonce.as_str();
            let mut watches = self.stream.guard.info.watches();
            let status = watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            if nonce != status.nonce_sent {
                self.stream.stale_nonce(type_url, nonce);
            } else if let Some(e) = &req.error_detail {
                let msg = format!("code {}: {}", e.code, e.message);
                self.stream.nack(type_url, nonce, &msg);
                status.last_error = Some(msg);
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
            watch.sent.extend(req.initial_resource_versions.clone());
        }
        let mut added = Vec::new();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                watch.wildcard = true;
            } else if !watch.names.contains(name)
                && Arc::make_mut(&mut watch.names).insert(name.clone())
            {
                added.push(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                watch.wildcard = false;
            }
            if watch.names.contains(name) {
                Arc::make_mut(&mut watch.names).remove(name);
            }
            watch.sent.remove(name);
        }
        for name in &added {
            // A (re)subscribed name must be sent even if we think the client has it.
            watch.sent.remove(name);
        }
        if first || !added.is_empty() {
            return self.respond(type_url, first).await;
        }
        Ok(())
    }

    async fn on_push(&mut self, full: bool) -> Result<(), ()> {
        let types = types::push_order(self.watches.keys().map(String::as_str), full);
        for type_url in types {
            self.respond(&type_url, false).await?;
        }
        Ok(())
    }
}

impl Delta {
    /// Sends what changed of a type since the client's last known versions. `always`
    /// sends even an empty response (the first request of a type expects an answer).
    async fn respond(&mut self, type_url: &str, always: bool) -> Result<(), ()> {
        let started = Instant::now();
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(());
        };
        let generated = self
            .stream
            .generated(type_url, &watch.subscription())
            .unwrap_or_default();
        // Versions and wire forms are computed once per push and config key; this stream
        // only picks what its client does not hold yet.
        let mut resources = Vec::new();
        let mut size = 0;
        for (r, entry) in generated.resources.iter().zip(generated.delta_entries()) {
            if watch.sent.get(&r.name) != Some(&entry.version) {
                watch.sent.insert(r.name.clone(), entry.version.clone());
                size += r.body.value.len();
                resources.push(entry.wire.clone());
            }
        }
        let present: HashSet<&str> = generated
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let removed: Vec<String> = watch
            .sent
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for n in &removed {
            watch.sent.remove(n);
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return Ok(());
        }
        let version = self.stream.event.push.version.clone();
        let nonce = uuid::Uuid::new_v4().to_string();
        let head = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: control_plane_id(),
            }),
            ..Default::default()
        };
        {
            let mut watches = self.stream.guard.info.watches();
            let status = watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            status.subscription = watch.subscription();
            status.record_names(watch.names.clone());
            status.sent(&nonce, &version);
        }
        self.stream
            .send(type_url, &head, resources, size, started)
            .await
    }
}
