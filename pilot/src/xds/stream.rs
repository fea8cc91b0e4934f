//! What every ADS stream does, whichever protocol variant it speaks: admit the proxy,
//! follow pushes, throttle them, look up generated config, send and count responses.
//! [`super::sotw`] and [`super::delta`] add only their request and response rules.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::SemaphorePermit;
use tonic::{Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use super::cache::Generated;
use super::discovery::{ConnectionGuard, DiscoveryServer, PushEvent};
use super::gen::{GenContext, Subscription};
use super::metrics::Metrics;
use super::types;
use super::watch::Watch;
use super::wire::WireResponse;
use crate::model::{Proxy, SidecarScope};
use crate::security::Caller;

/// Where a stream's responses go (its HTTP/2 body).
pub type Tx = mpsc::Sender<Result<WireResponse, Status>>;

/// Why a stream stops: returned by the send path and the protocol handlers, it ends the
/// stream loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamEnd {
    /// The response body (the receiving end of [`Tx`]) is dropped: the client went away or
    /// its connection closed.
    #[error("the client went away")]
    ClientGone,
    /// A response exceeded gRPC's 4 GiB message limit; the stream is ended with
    /// `RESOURCE_EXHAUSTED`.
    #[error("a response exceeded gRPC's 4 GiB limit")]
    ResponseTooLarge,
}

/// An xDS request that names its proxy in the first message.
pub trait XdsRequest: Message + Default + Send + 'static {
    fn node(&self) -> Option<&Node>;
}

impl XdsRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

impl XdsRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

/// The stream rules of one protocol variant.
pub trait Protocol: Sized + Send {
    type Request: XdsRequest;
    /// Names the stream in logs and `/debug/adsz`.
    const DELTA: bool;

    fn new(stream: ProxyStream) -> Self;
    fn stream(&self) -> &ProxyStream;
    /// Applies a request; `Err` ends the stream.
    fn on_request(
        &mut self,
        req: Self::Request,
    ) -> impl Future<Output = Result<(), StreamEnd>> + Send;
    /// Sends what a push changed; `full` when the push rebuilt config, not just endpoints.
    /// `Err` ends the stream.
    fn on_push(&mut self, full: bool) -> impl Future<Output = Result<(), StreamEnd>> + Send;
    fn stream_mut(&mut self) -> &mut ProxyStream;
}

/// Admits the proxy of the first request, then serves the stream until the client goes
/// away or the server stops pushing.
pub async fn run<P: Protocol>(
    server: Arc<DiscoveryServer>,
    caller: Option<Caller>,
    mut inbound: Streaming<P::Request>,
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
    let proxy = match super::ads::admit_proxy(&server, first.node(), caller.as_ref()) {
        Ok(p) => p,
        Err(status) => {
            let node = first.node().map_or("", |n| n.id.as_str());
            warn!(node, delta = P::DELTA, %status, "rejecting xDS stream");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let span = if P::DELTA {
        info_span!("delta_ads", node = %proxy.node_id)
    } else {
        info_span!("ads", node = %proxy.node_id)
    };
    let guard = server.connect(proxy, P::DELTA, caller.map(|c| c.0.to_string()));
    let handler = P::new(ProxyStream::new(server, guard, tx));
    serve(handler, first, inbound).instrument(span).await;
}

async fn serve<P: Protocol>(mut handler: P, first: P::Request, mut inbound: Streaming<P::Request>) {
    let id = handler.stream().guard.info.id.clone();
    info!(conn = %id, delta = P::DELTA, "connected");
    let mut pushes = handler.stream().server.subscribe();
    pushes.borrow_and_update();
    let mut request = Some(first);
    loop {
        if let Some(req) = request.take() {
            let handled = handler.on_request(req).await;
            handler.stream().publish();
            if let Err(end) = handled {
                debug!(reason = %end, "stream ended");
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
                let full = handler.stream_mut().advance(event);
                let server = handler.stream().server.clone();
                let Some(_permit) = throttle(&server).await else {
                    break;
                };
                if let Err(end) = handler.on_push(full).await {
                    debug!(reason = %end, "stream ended");
                    break;
                }
                server
                    .metrics
                    .convergence_time
                    .observe(handler.stream().event.triggered_at.elapsed().as_secs_f64());
            }
        }
    }
    info!(conn = %id, "disconnected");
}

/// Waits for a push slot (`PILOT_PUSH_THROTTLE`), counting the wait.
async fn throttle(server: &DiscoveryServer) -> Option<SemaphorePermit<'_>> {
    let queued = Instant::now();
    let permit = server.throttle.acquire().await.ok()?;
    server
        .metrics
        .queue_time
        .observe(queued.elapsed().as_secs_f64());
    Some(permit)
}

/// One connected proxy: the push it has reached and the config key it is served under.
pub struct ProxyStream {
    pub server: Arc<DiscoveryServer>,
    pub guard: ConnectionGuard,
    tx: Tx,
    pub event: Arc<PushEvent>,
    scope: SidecarScope,
    /// The proxy's config key under `scope` (see [`crate::model::Proxy::config_key`]).
    key: String,
    /// Per type: what the proxy asked for and was sent. Owned by the stream; the debug
    /// endpoints see the snapshots [`ProxyStream::publish`] makes.
    pub watches: BTreeMap<String, Watch>,
}

impl ProxyStream {
    fn new(server: Arc<DiscoveryServer>, guard: ConnectionGuard, tx: Tx) -> Self {
        let event = server.current();
        let scope = event.push.sidecar_scope(&guard.info.proxy);
        let key = config_key(&event, &guard.info.proxy, &scope);
        ProxyStream {
            server,
            guard,
            tx,
            event,
            scope,
            key,
            watches: BTreeMap::new(),
        }
    }

    /// Makes the current per-type state visible to the debug endpoints.
    pub fn publish(&self) {
        self.guard.info.publish(&self.watches);
    }

    /// Moves to a new push; returns whether it was a full one (scope and key recomputed).
    fn advance(&mut self, event: Arc<PushEvent>) -> bool {
        let full = event.full_seq > self.event.seq;
        self.event = event;
        if full {
            self.scope = self.event.push.sidecar_scope(&self.guard.info.proxy);
            self.key = config_key(&self.event, &self.guard.info.proxy, &self.scope);
        }
        full
    }

    /// The proxy's resources of `type_url` in the current push, shared with every proxy
    /// of the same config key. `None` if no generator serves the type.
    pub fn generated(&self, type_url: &str, sub: &Subscription) -> Option<Arc<Generated>> {
        let ctx = GenContext {
            push: &self.event.push,
            proxy: &self.guard.info.proxy,
            scope: &self.scope,
        };
        self.event
            .cache
            .get_or_generate(type_url, &self.key, &ctx, sub)
    }

    /// Sends a response of `type_url` built from `head` and shared `resources`
    /// (`size` resource bytes, for the metrics); `Err` when the stream cannot go on.
    pub async fn send<M: Message>(
        &self,
        type_url: &str,
        head: &M,
        resources: Vec<prost::bytes::Bytes>,
        size: usize,
        started: Instant,
    ) -> Result<(), StreamEnd> {
        let m = &self.server.metrics;
        let short = types::short_name(type_url);
        let Some(response) = WireResponse::new(head, resources) else {
            warn!(r#type = %short, bytes = size, "response exceeds gRPC's 4 GiB limit");
            let _ = self
                .tx
                .send(Err(Status::resource_exhausted("response exceeds 4 GiB")))
                .await;
            return Err(StreamEnd::ResponseTooLarge);
        };
        if self.tx.send(Ok(response)).await.is_err() {
            m.pushes
                .get_or_create(&Metrics::label(&format!("{short}_senderr")))
                .inc();
            return Err(StreamEnd::ClientGone);
        }
        m.pushes.get_or_create(&Metrics::label(short)).inc();
        m.push_time
            .get_or_create(&Metrics::label(short))
            .observe(started.elapsed().as_secs_f64());
        m.config_size
            .get_or_create(&Metrics::label(type_url))
            .observe(size as f64);
        debug!(r#type = %short, bytes = size, "pushed");
        Ok(())
    }

    /// Counts a rejected response and logs why.
    pub fn nack(&self, type_url: &str, nonce: &str, error: &str) {
        let short = types::short_name(type_url);
        warn!(r#type = %short, %nonce, %error, "proxy rejected config (NACK); it keeps its last accepted config");
        self.server
            .metrics
            .rejects
            .get_or_create(&Metrics::label(short))
            .inc();
    }

    /// Counts a reply to a response that has since been superseded.
    pub fn stale_nonce(&self, type_url: &str, nonce: &str) {
        let short = types::short_name(type_url);
        debug!(r#type = %short, %nonce, "stale nonce");
        self.server
            .metrics
            .expired_nonce
            .get_or_create(&Metrics::label(short))
            .inc();
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

/// Identifies this control plane (replica `pod_name`, `istiod` when unset) in responses,
/// as upstream's `{"Component":"istiod","ID":...,"info":{...}}`.
pub fn control_plane_id(pod_name: &str) -> String {
    let id = if pod_name.is_empty() {
        "istiod"
    } else {
        pod_name
    };
    serde_json::json!({
        "Component": "istiod",
        "ID": id,
        "info": {"version": crate::version::VERSION},
    })
    .to_string()
}
