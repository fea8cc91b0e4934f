//! An incremental (delta) ADS stream: only changed resources are sent, and removals are
//! named explicitly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use super::discovery::{ConnectionGuard, DiscoveryServer, PushEvent};
use super::generator::{GenContext, Subscription};
use super::metrics::Metrics;
use super::sotw::{config_key, control_plane_id};
use super::types;
use super::watch::Watch;
use super::wire::WireResponse;
use crate::model::SidecarScope;
use crate::security::Caller;

type Tx = mpsc::Sender<Result<WireResponse, Status>>;

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

/// Serves one delta stream until the client goes away.
pub async fn run(
    server: Arc<DiscoveryServer>,
    caller: Option<Caller>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: Tx,
) {
    let first = match inbound.message().await {
        Ok(Some(req)) => req,
        _ => return,
    };
    let proxy = match super::ads::admit_proxy(&server, first.node.as_ref(), caller.as_ref()) {
        Ok(p) => p,
        Err(status) => {
            warn!(node = first.node.as_ref().map_or("", |n| n.id.as_str()), %status, "rejecting delta xDS stream");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let span = info_span!("delta_ads", node = %proxy.node_id);
    let guard = server.connect(proxy, true, caller.map(|c| c.0.to_string()));
    let event = server.current();
    let scope = event.push.sidecar_scope(&guard.info.proxy);
    let key = config_key(&event, &guard.info.proxy, &scope);
    let conn = Connection {
        server,
        guard,
        tx,
        event,
        scope,
        key,
        watches: BTreeMap::new(),
    };
    conn.serve(first, inbound).instrument(span).await;
}

struct Connection {
    server: Arc<DiscoveryServer>,
    guard: ConnectionGuard,
    tx: Tx,
    event: Arc<PushEvent>,
    scope: SidecarScope,
    /// The proxy's config key under `scope` (see [`crate::model::Proxy::config_key`]).
    key: String,
    watches: BTreeMap<String, DeltaWatch>,
}

impl Connection {
    async fn serve(
        mut self,
        first: DeltaDiscoveryRequest,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
    ) {
        info!(conn = %self.guard.info.id, "connected (delta)");
        let mut pushes = self.server.subscribe();
        pushes.borrow_and_update();
        let mut request = Some(first);
        loop {
            if let Some(req) = request.take() {
                if self.on_request(req).await.is_err() {
                    break;
                }
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => request = Some(req),
                    _ => break,
                },
                changed = pushes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let event = pushes.borrow_and_update().clone();
                    if self.on_push(event).await.is_err() {
                        break;
                    }
                }
            }
        }
        info!(conn = %self.guard.info.id, "disconnected");
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        let type_url = req.type_url.clone();
        let short = types::short_name(&type_url).to_owned();
        if !req.response_nonce.is_empty() {
            let mut watches = self.guard.info.watches();
            let status = watches
                .entry(type_url.clone())
                .or_insert_with(|| Watch::new(&type_url));
            if req.response_nonce != status.nonce_sent {
                self.server
                    .metrics
                    .expired_nonce
                    .get_or_create(&Metrics::label(&short))
                    .inc();
            } else if let Some(e) = &req.error_detail {
                let msg = format!("code {}: {}", e.code, e.message);
                warn!(r#type = %short, error = %msg, "proxy rejected config (NACK); it keeps its last accepted config");
                status.last_error = Some(msg);
                self.server
                    .metrics
                    .rejects
                    .get_or_create(&Metrics::label(&short))
                    .inc();
            } else {
                status.nonce_acked = req.response_nonce.clone();
                status.version_acked = status.version_sent.clone();
                status.last_error = None;
            }
        }
        let first = !self.watches.contains_key(&type_url);
        let watch = self.watches.entry(type_url.clone()).or_default();
        if first {
            watch.wildcard =
                types::is_wildcard(&type_url) && req.resource_names_subscribe.is_empty();
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
            return self.respond(&type_url, first).await;
        }
        Ok(())
    }

    async fn on_push(&mut self, event: Arc<PushEvent>) -> Result<(), ()> {
        let full = event.full_seq > self.event.seq;
        self.event = event;
        if full {
            self.scope = self.event.push.sidecar_scope(&self.guard.info.proxy);
            self.key = config_key(&self.event, &self.guard.info.proxy, &self.scope);
        }
        let queued = StdInstant::now();
        let throttle = self.server.throttle.clone();
        let _permit = throttle.acquire().await.map_err(|_| ())?;
        self.server
            .metrics
            .queue_time
            .observe(queued.elapsed().as_secs_f64());
        for type_url in types::push_order(self.watches.keys().map(String::as_str), full) {
            self.respond(&type_url, false).await?;
        }
        self.server
            .metrics
            .convergence_time
            .observe(self.event.triggered_at.elapsed().as_secs_f64());
        Ok(())
    }

    /// Sends what changed of a type since the client's last known versions. `always`
    /// sends even an empty response (the first request of a type expects an answer).
    async fn respond(&mut self, type_url: &str, always: bool) -> Result<(), ()> {
        let started = StdInstant::now();
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(());
        };
        let push = self.event.push.clone();
        let ctx = GenContext {
            push: &push,
            proxy: &self.guard.info.proxy,
            scope: &self.scope,
        };
        let generated = self
            .event
            .cache
            .get_or_generate(type_url, &self.key, &ctx, &watch.subscription())
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
        let nonce = uuid::Uuid::new_v4().to_string();
        let head = DeltaDiscoveryResponse {
            system_version_info: push.version.clone(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: control_plane_id(),
            }),
            ..Default::default()
        };
        let Some(response) = WireResponse::new(&head, resources) else {
            warn!(r#type = %type_url, bytes = size, "response exceeds gRPC's 4 GiB limit");
            let _ = self
                .tx
                .send(Err(Status::resource_exhausted("response exceeds 4 GiB")))
                .await;
            return Err(());
        };
        {
            let mut watches = self.guard.info.watches();
            let status = watches
                .entry(type_url.to_owned())
                .or_insert_with(|| Watch::new(type_url));
            status.subscription = watch.subscription();
            status.record_names(watch.names.clone());
            status.sent(&nonce, &push.version);
        }
        let short = types::short_name(type_url).to_owned();
        let m = &self.server.metrics;
        if self.tx.send(Ok(response)).await.is_err() {
            m.pushes
                .get_or_create(&Metrics::label(&format!("{short}_senderr")))
                .inc();
            return Err(());
        }
        m.pushes.get_or_create(&Metrics::label(&short)).inc();
        m.push_time
            .get_or_create(&Metrics::label(&short))
            .observe(started.elapsed().as_secs_f64());
        m.config_size
            .get_or_create(&Metrics::label(type_url))
            .observe(size as f64);
        debug!(r#type = %short, %nonce, bytes = size, "pushed delta");
        Ok(())
    }
}
