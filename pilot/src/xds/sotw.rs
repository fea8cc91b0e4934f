//! A state-of-the-world ADS stream: every response carries the full set of a type.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use super::discovery::{ConnectionGuard, DiscoveryServer, PushEvent};
use super::generator::{GenContext, Subscription};
use super::metrics::Metrics;
use super::types;
use super::watch::{Decision, Watch};
use super::wire::WireResponse;
use crate::model::{Proxy, SidecarScope};
use crate::security::Caller;

type Tx = mpsc::Sender<Result<WireResponse, Status>>;

/// Serves one stream until the client goes away.
pub async fn run(
    server: Arc<DiscoveryServer>,
    caller: Option<Caller>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Tx,
) {
    let first = match inbound.message().await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(status) => {
            debug!(%status, "stream closed before the first request");
            return;
        }
    };
    let proxy = match super::ads::admit_proxy(&server, first.node.as_ref(), caller.as_ref()) {
        Ok(p) => p,
        Err(status) => {
            warn!(node = first.node.as_ref().map_or("", |n| n.id.as_str()), %status, "rejecting xDS stream");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let span = info_span!("ads", node = %proxy.node_id);
    let guard = server.connect(proxy, false, caller.map(|c| c.0.to_string()));
    let conn = Connection::new(server, guard, tx);
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
}

impl Connection {
    fn new(server: Arc<DiscoveryServer>, guard: ConnectionGuard, tx: Tx) -> Self {
        let event = server.current();
        let scope = event.push.sidecar_scope(&guard.info.proxy);
        let key = config_key(&event, &guard.info.proxy, &scope);
        Connection {
            server,
            guard,
            tx,
            event,
            scope,
            key,
        }
    }

    async fn serve(mut self, first: DiscoveryRequest, mut inbound: Streaming<DiscoveryRequest>) {
        info!(conn = %self.guard.info.id, "connected");
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
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%status, "stream error");
                        break;
                    }
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

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), ()> {
        let type_url = req.type_url.clone();
        let error = req
            .error_detail
            .as_ref()
            .map(|e| format!("code {}: {}", e.code, e.message));
        let decision = {
            let mut watches = self.guard.info.watches();
            let first = !watches.contains_key(&type_url);
            let watch = watches
                .entry(type_url.clone())
                .or_insert_with(|| Watch::new(&type_url));
            watch.on_request(
                first,
                &req.resource_names,
                &req.response_nonce,
                error,
                &self.server.name_sets,
            )
        };
        let short = types::short_name(&type_url).to_owned();
        match decision {
            Decision::Respond => self.respond(&type_url).await,
            Decision::Ack => {
                debug!(r#type = %short, nonce = %req.response_nonce, "ack");
                Ok(())
            }
            Decision::Nack(e) => {
                warn!(r#type = %short, nonce = %req.response_nonce, error = %e, "proxy rejected config (NACK); it keeps its last accepted config");
                self.server
                    .metrics
                    .rejects
                    .get_or_create(&Metrics::label(&short))
                    .inc();
                Ok(())
            }
            Decision::StaleNonce => {
                debug!(r#type = %short, nonce = %req.response_nonce, "stale nonce");
                self.server
                    .metrics
                    .expired_nonce
                    .get_or_create(&Metrics::label(&short))
                    .inc();
                Ok(())
            }
            Decision::Unsubscribed => {
                debug!(r#type = %short, "unsubscribed");
                Ok(())
            }
        }
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
        let types = {
            let watches = self.guard.info.watches();
            let active = watches
                .values()
                .filter(|w| w.is_active())
                .map(|w| w.type_url.as_str());
            types::push_order(active, full)
        };
        for type_url in types {
            self.respond(&type_url).await?;
        }
        self.server
            .metrics
            .convergence_time
            .observe(self.event.triggered_at.elapsed().as_secs_f64());
        Ok(())
    }

    async fn respond(&mut self, type_url: &str) -> Result<(), ()> {
        let started = StdInstant::now();
        let subscription = {
            let watches = self.guard.info.watches();
            watches
                .get(type_url)
                .map_or(Subscription::Wildcard, |w| w.subscription.clone())
        };
        let push = self.event.push.clone();
        let ctx = GenContext {
            push: &push,
            proxy: &self.guard.info.proxy,
            scope: &self.scope,
        };
        let resources =
            match self
                .event
                .cache
                .get_or_generate(type_url, &self.key, &ctx, &subscription)
            {
                Some(generated) => generated.wire(),
                None => {
                    debug!(r#type = %type_url, "no generator for type; sending an empty response");
                    Bytes::new()
                }
            };
        let nonce = uuid::Uuid::new_v4().to_string();
        let size = resources.len();
        let head = DiscoveryResponse {
            version_info: push.version.clone(),
            type_url: type_url.to_owned(),
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: control_plane_id(),
            }),
            ..Default::default()
        };
        let Some(response) = WireResponse::new(&head, vec![resources]) else {
            warn!(r#type = %type_url, bytes = size, "response exceeds gRPC's 4 GiB limit");
            let _ = self
                .tx
                .send(Err(Status::resource_exhausted("response exceeds 4 GiB")))
                .await;
            return Err(());
        };
        let short = types::short_name(type_url).to_owned();
        if let Some(w) = self.guard.info.watches().get_mut(type_url) {
            w.sent(&nonce, &push.version);
        }
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
        debug!(r#type = %short, %nonce, bytes = size, "pushed");
        Ok(())
    }
}

/// The config key of a proxy in a push (proxies with equal keys share generated config).
pub fn config_key(event: &PushEvent, proxy: &Proxy, scope: &SidecarScope) -> String {
    let serves = proxy
        .ip_addresses
        .iter()
        .any(|ip| event.push.is_endpoint_ip(ip));
    proxy.config_key(scope.sidecar.as_deref(), serves)
}

/// Identifies this control plane in responses, as upstream's `{"Component":"istiod",...}`.
pub fn control_plane_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(control_plane_identifier).clone()
}

fn control_plane_identifier() -> String {
    let host = std::env::var("POD_NAME").unwrap_or_else(|_| "istiod".into());
    format!(
        r#"{{"Component":"istiod","ID":"{host}","info":{{"version":"{}"}}}}"#,
        crate::version::VERSION
    )
}
