//! A state-of-the-world ADS stream: every response carries the full set of a type.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tracing::debug;

use super::gen::naming::parse_any_cluster_name;
use super::gen::Subscription;
use super::stream::{
    Outgoing, Protocol, ProxyStream, StreamEnd, MAX_NAMES_PER_TYPE, MAX_TYPES_PER_STREAM,
};
use super::types;
use super::watch::{Decision, Watch};

/// The state-of-the-world rules; the subscription state lives in the connection's
/// watches (see [`super::watch`]).
pub struct Sotw {
    stream: ProxyStream,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    const DELTA: bool = false;

    fn new(stream: ProxyStream) -> Self {
        Sotw { stream }
    }

    fn stream(&self) -> &ProxyStream {
        &self.stream
    }

    fn stream_mut(&mut self) -> &mut ProxyStream {
        &mut self.stream
    }

    fn on_request(&mut self, req: DiscoveryRequest) -> Result<Vec<Outgoing>, StreamEnd> {
        let type_url = req.type_url.as_str();
        if req.resource_names.len() > MAX_NAMES_PER_TYPE {
            return Err(StreamEnd::TooManyNames);
        }
        if !self.stream.watches.contains_key(type_url)
            && self.stream.watches.len() >= MAX_TYPES_PER_STREAM
        {
            return Err(StreamEnd::TooManyTypes);
        }
        let error = req
            .error_detail
            .as_ref()
            .map(|e| format!("code {}: {}", e.code, e.message));
        let decision = {
            let watches = &mut self.stream.watches;
            let first = !watches.contains_key(type_url);
            let watch = watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            watch.on_request(
                first,
                &req.resource_names,
                &req.response_nonce,
                error,
                &self.stream.server.name_sets,
            )
        };
        let nonce = req.response_nonce.as_str();
        match decision {
            Decision::Respond => return Ok(self.respond(type_url)?.into_iter().collect()),
            Decision::Ack => debug!(r#type = %types::short_name(type_url), %nonce, "ack"),
            Decision::Nack(e) => self.stream.nack(type_url, nonce, &e),
            Decision::StaleNonce => self.stream.stale_nonce(type_url, nonce),
            Decision::Unsubscribed => {
                debug!(r#type = %types::short_name(type_url), "unsubscribed")
            }
        }
        Ok(Vec::new())
    }

    fn on_push(&mut self, full: bool) -> Result<Vec<Outgoing>, StreamEnd> {
        let types = {
            let active = self
                .stream
                .watches
                .values()
                .filter(|w| w.is_active())
                .map(|w| w.type_url.as_str());
            let mut types = types::push_order(active, full);
            // SDS goes by what changed of Secrets, not by the kind of push.
            types.retain(|t| t != types::SECRET);
            if self.stream.secrets_due() && self.is_active(types::SECRET) {
                types.push(types::SECRET.to_owned());
            }
            types
        };
        let mut out = Vec::new();
        for t in &types {
            let partial = (t == types::ENDPOINT)
                .then(|| self.changed_endpoints())
                .flatten();
            match partial {
                // EDS is not a wildcard type: a response carries only the load assignments
                // that changed, and the proxy keeps the others (as upstream's incremental EDS).
                Some(names) if names.is_empty() => {}
                Some(names) => {
                    out.extend(self.respond_with(t, Subscription::Names(names), false)?)
                }
                // What did not change since the last response is not sent again.
                None => out.extend(self.respond_changed(t)?),
            }
        }
        Ok(out)
    }
}

impl Sotw {
    fn is_active(&self, type_url: &str) -> bool {
        self.stream
            .watches
            .get(type_url)
            .is_some_and(|w| w.is_active())
    }

    /// In an endpoints-only push that follows the last one this stream served, the
    /// subscribed clusters whose endpoints changed; `None` when all must be sent.
    fn changed_endpoints(&self) -> Option<Arc<BTreeSet<String>>> {
        let changed = self.stream.endpoints_changed()?;
        let watch = self.stream.watches.get(types::ENDPOINT)?;
        let names: BTreeSet<String> = watch
            .subscription
            .names()
            .filter(|n| parse_any_cluster_name(n).is_some_and(|k| changed.contains(k.host)))
            .cloned()
            .collect();
        Some(self.stream.server.name_sets.intern_set(names))
    }
    /// Every resource of the type the proxy subscribes to, as one response.
    fn respond(&mut self, type_url: &str) -> Result<Option<Outgoing>, StreamEnd> {
        let subscription = self.subscription(type_url);
        self.respond_with(type_url, subscription, false)
    }

    /// Like [`Sotw::respond`], but nothing if the resources are byte for byte those of
    /// the last response: a push that changed other types, or other proxies' config,
    /// costs this proxy nothing.
    fn respond_changed(&mut self, type_url: &str) -> Result<Option<Outgoing>, StreamEnd> {
        let subscription = self.subscription(type_url);
        self.respond_with(type_url, subscription, true)
    }

    fn subscription(&self, type_url: &str) -> Subscription {
        self.stream
            .watches
            .get(type_url)
            .map_or(Subscription::Wildcard, |w| w.subscription.clone())
    }

    /// The resources of `subscription` (all the proxy subscribes to, or the changed part
    /// of it), as one response; none if `skip_unchanged` and they are what the last
    /// response carried.
    fn respond_with(
        &mut self,
        type_url: &str,
        subscription: Subscription,
        skip_unchanged: bool,
    ) -> Result<Option<Outgoing>, StreamEnd> {
        let started = Instant::now();
        let generated = self.stream.generated(type_url, &subscription);
        if skip_unchanged {
            if let (Some(next), Some(w)) = (&generated, self.stream.watches.get_mut(type_url)) {
                if w.held().is_some_and(|held| held.same_content(next)) {
                    // Held from this push from now on, so the last one's cache can go.
                    w.hold(generated);
                    return Ok(None);
                }
            }
        }
        let resources = match &generated {
            Some(generated) => generated.wire(),
            None => {
                debug!(r#type = %types::short_name(type_url), "no generator for type; sending an empty response");
                Default::default()
            }
        };
        let version = self.stream.event.push.version.clone();
        let nonce = uuid::Uuid::new_v4().to_string();
        let size = resources.iter().map(|b| b.len()).sum();
        let head = DiscoveryResponse {
            version_info: version.clone(),
            type_url: type_url.to_owned(),
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: self.stream.server.control_plane_id.clone(),
            }),
            ..Default::default()
        };
        if let Some(w) = self.stream.watches.get_mut(type_url) {
            w.sent(&nonce, &version);
            w.hold(generated);
        }
        self.stream
            .response(type_url, &head, resources, size, started)
            .map(Some)
    }
}
