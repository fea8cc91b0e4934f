//! What every ADS stream does, whichever protocol variant it speaks: admit the proxy,
//! follow pushes, throttle them, look up generated config, send and count responses.
//! [`super::sotw`] and [`super::delta`] add only their request and response rules.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::SemaphorePermit;
use tonic::Status;
use tracing::{debug, info, info_span, warn, Instrument};

use super::cache::{Generated, ProxyResources};
use super::discovery::{ConnectionGuard, DiscoveryServer, PushEvent};
use super::gen::{sds, GenContext, Part, Subscription};
use super::metrics::Metrics;
use super::requests::Requests;
use super::types;
use super::watch::Watch;
use super::wire::WireResponse;
use crate::model::credentials::Access;
use crate::model::{Proxy, PushContext, SidecarScope};
use crate::security::Caller;

/// Where a stream's responses go (its HTTP/2 body).
pub type Tx = mpsc::Sender<Result<WireResponse, Status>>;

/// Most distinct type URLs one stream may subscribe to: every type istiod serves, debug
/// types and room for new ones, but not one watch per made-up type URL.
pub const MAX_TYPES_PER_STREAM: usize = 64;

/// Most resource names one stream may subscribe to of one type. A sidecar asks for one
/// endpoint set per cluster it knows, so this is far above any real mesh.
pub const MAX_NAMES_PER_TYPE: usize = 100_000;

/// How long the status that ends a stream may wait for the client to take it.
const STATUS_SEND_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The client did not take a response within `PILOT_XDS_SEND_TIMEOUT`: it stopped
    /// reading, or reads too slowly to keep up.
    #[error("the client did not read a response within PILOT_XDS_SEND_TIMEOUT")]
    SendTimeout,
    /// The client asked for more distinct types than [`MAX_TYPES_PER_STREAM`].
    #[error("more than {MAX_TYPES_PER_STREAM} resource types on one stream")]
    TooManyTypes,
    /// The client subscribed to more names of one type than [`MAX_NAMES_PER_TYPE`].
    #[error("more than {MAX_NAMES_PER_TYPE} resource names of one type")]
    TooManyNames,
}

impl StreamEnd {
    /// The status the client is told, if it is still listening.
    fn status(self) -> Option<Status> {
        match self {
            StreamEnd::ClientGone | StreamEnd::SendTimeout => None,
            StreamEnd::ResponseTooLarge => Some(Status::resource_exhausted(self.to_string())),
            StreamEnd::TooManyTypes | StreamEnd::TooManyNames => {
                Some(Status::resource_exhausted(self.to_string()))
            }
        }
    }
}

/// A response made under the push throttle, sent after the throttle slot is released:
/// a slow client delays only itself.
#[derive(Debug)]
pub struct Outgoing {
    type_url: String,
    response: WireResponse,
    /// Resource bytes, for `pilot_xds_config_size_bytes`.
    size: usize,
    started: Instant,
}

/// An xDS request that names its proxy in the first message.
pub trait XdsRequest: Message + Default + Send + 'static {
    fn node(&self) -> Option<&Node>;
    fn type_url(&self) -> &str;
}

impl XdsRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

impl XdsRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

/// The stream rules of one protocol variant. Handlers only decide and build responses
/// (synchronously); the stream sends them, so no handler ever waits on its client.
pub trait Protocol: Sized + Send {
    type Request: XdsRequest;
    /// Names the stream in logs and `/debug/adsz`.
    const DELTA: bool;

    fn new(stream: ProxyStream) -> Self;
    fn stream(&self) -> &ProxyStream;
    fn stream_mut(&mut self) -> &mut ProxyStream;
    /// Applies a request: the responses it calls for, or why the stream must end.
    fn on_request(&mut self, req: Self::Request) -> Result<Vec<Outgoing>, StreamEnd>;
    /// The responses a push calls for; `full` when the push rebuilt config, not just
    /// endpoints.
    fn on_push(&mut self, full: bool) -> Result<Vec<Outgoing>, StreamEnd>;
}

/// Admits the proxy of the first request, then serves the stream until the client goes
/// away or the server stops pushing.
pub async fn run<P: Protocol>(
    server: Arc<DiscoveryServer>,
    caller: Option<Caller>,
    mut inbound: Requests<P::Request>,
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
            let _ = tx.try_send(Err(status));
            return;
        }
    };
    let span = if P::DELTA {
        info_span!("delta_ads", node = %proxy.node_id)
    } else {
        info_span!("ads", node = %proxy.node_id)
    };
    let guard = server.connect(proxy, P::DELTA, caller.map(|c| c.0));
    let handler = P::new(ProxyStream::new(server, guard, tx));
    serve(handler, first, inbound).instrument(span).await;
}

async fn serve<P: Protocol>(mut handler: P, first: P::Request, inbound: Requests<P::Request>) {
    let id = handler.stream().guard.info.id.clone();
    info!(conn = %id, delta = P::DELTA, "connected");
    let end = serve_until_end(&mut handler, first, inbound).await;
    match end {
        Some(end) => {
            if end == StreamEnd::SendTimeout {
                warn!(conn = %id, reason = %end, "closing stream");
            } else {
                debug!(conn = %id, reason = %end, "stream ended");
            }
            if let Some(status) = end.status() {
                // Best effort: a client that stopped reading is not waited for long.
                let tx = &handler.stream().tx;
                let _ = tokio::time::timeout(STATUS_SEND_TIMEOUT, tx.send(Err(status))).await;
            }
        }
        None => debug!(conn = %id, "client closed the stream"),
    }
    info!(conn = %id, "disconnected");
}

/// The stream loop: requests and pushes until the client or the server ends it.
async fn serve_until_end<P: Protocol>(
    handler: &mut P,
    first: P::Request,
    mut inbound: Requests<P::Request>,
) -> Option<StreamEnd> {
    let mut pushes = handler.stream().server.subscribe();
    pushes.borrow_and_update();
    let mut request = Some(first);
    loop {
        if let Some(req) = request.take() {
            if req.type_url() == types::SECRET {
                handler.stream_mut().refresh_secret_access().await;
            }
            let responses = handler.on_request(req);
            handler.stream().publish();
            if let Err(end) = handler.stream().send_all(responses).await {
                return Some(end);
            }
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => request = Some(req),
                Ok(None) => return None,
                Err(status) => {
                    debug!(%status, "stream error");
                    return None;
                }
            },
            changed = pushes.changed() => {
                if changed.is_err() {
                    return None;
                }
                // Only the latest push is taken: a stream that fell behind skips the
                // ones it missed and goes straight to the current state.
                let event = pushes.borrow_and_update().clone();
                let full = handler.stream_mut().advance(event);
                if handler.stream().secrets_due() {
                    // Asked outside the push slot: the authorizer may call the API server.
                    handler.stream_mut().refresh_secret_access().await;
                }
                let server = handler.stream().server.clone();
                let responses = {
                    let _permit = throttle(&server).await?;
                    handler.on_push(full)
                };
                handler.stream().publish();
                if let Err(end) = handler.stream().send_all(responses).await {
                    return Some(end);
                }
                server
                    .metrics
                    .convergence_time
                    .observe(handler.stream().event.triggered_at.elapsed().as_secs_f64());
            }
        }
    }
}

/// Waits for a push slot (`PILOT_PUSH_THROTTLE`), counting the wait. The slot is held
/// while config is generated and encoded, never while a client is waited for.
async fn throttle(server: &DiscoveryServer) -> Option<SemaphorePermit<'_>> {
    let queued = Instant::now();
    let permit = server.throttle.acquire().await.ok()?;
    server
        .metrics
        .queue_time
        .observe(queued.elapsed().as_secs_f64());
    Some(permit)
}

/// One connected proxy: the push it has reached and the keys its config is shared under.
pub struct ProxyStream {
    pub server: Arc<DiscoveryServer>,
    pub guard: ConnectionGuard,
    tx: Tx,
    pub event: Arc<PushEvent>,
    scope: SidecarScope,
    /// The proxy's keys under `scope` (see [`ConfigKeys`]).
    keys: ConfigKeys,
    /// Set while serving an endpoints-only push that directly follows the last one this
    /// stream served: the hosts whose endpoints changed, all the push needs to send.
    endpoints_changed: Option<Arc<HashSet<String>>>,
    /// Per type: what the proxy asked for and was sent. Owned by the stream; the debug
    /// endpoints see the snapshots [`ProxyStream::publish`] makes.
    pub watches: BTreeMap<String, Watch>,
    /// Which Secrets the proxy may read, as of its last SDS request or push.
    secret_access: Access,
    /// Whether the current push may change the SDS resources this stream subscribes to.
    secrets_due: bool,
}

impl ProxyStream {
    fn new(server: Arc<DiscoveryServer>, guard: ConnectionGuard, tx: Tx) -> Self {
        let event = server.current();
        let scope = event.push.sidecar_scope(&guard.info.proxy);
        let keys = ConfigKeys::of(&event.push, &guard.info.proxy, &scope);
        ProxyStream {
            server,
            guard,
            tx,
            event,
            scope,
            keys,
            endpoints_changed: None,
            watches: BTreeMap::new(),
            secret_access: Access::Unauthenticated,
            secrets_due: false,
        }
    }

    /// Makes the current per-type state visible to the debug endpoints.
    pub fn publish(&self) {
        self.guard.info.publish(&self.watches);
    }

    /// Moves to a new push; returns whether it was a full one (scope and key recomputed).
    fn advance(&mut self, event: Arc<PushEvent>) -> bool {
        let full = event.full_seq > self.event.seq;
        let next = event.seq == self.event.seq + 1;
        // A stream that skipped a push does not know what changed in it: it resends all.
        self.endpoints_changed = if !full && next {
            event.endpoints_changed.clone()
        } else {
            None
        };
        self.secrets_due = match (&event.secrets_changed, self.watches.get(types::SECRET)) {
            (_, None) => false,
            // The Secret push that follows the last one served: only the Secrets it names.
            (Some(changed), Some(w)) if next => super::secrets::concerns(
                &w.subscription,
                self.guard
                    .info
                    .verified_identity
                    .as_ref()
                    .map_or("", |id| id.namespace.as_str()),
                changed,
            ),
            // A config push, or pushes skipped: SDS only if some Secret changed meanwhile
            // (and then it is sent only if its bytes differ). Upstream, too, leaves SDS out
            // of pushes that change no Secret.
            _ => !Arc::ptr_eq(&event.secrets, &self.event.secrets),
        };
        self.event = event;
        if full {
            self.scope = self.event.push.sidecar_scope(&self.guard.info.proxy);
            self.keys = ConfigKeys::of(&self.event.push, &self.guard.info.proxy, &self.scope);
        }
        full
    }

    /// During an endpoints-only push that follows the last one served, the hosts whose
    /// endpoints changed (see [`PushEvent::endpoints_changed`]).
    pub fn endpoints_changed(&self) -> Option<&HashSet<String>> {
        self.endpoints_changed.as_deref()
    }

    /// Whether the current push may change this stream's SDS resources: a Secret push
    /// naming a Secret it subscribes to, or any push after which the Secrets differ from
    /// those of the last push this stream served.
    pub fn secrets_due(&self) -> bool {
        self.secrets_due
    }

    /// Asks again which Secrets the proxy may read (the authorizer caches its answers).
    pub async fn refresh_secret_access(&mut self) {
        let authorizer = self.server.secret_authorizer();
        self.secret_access =
            super::secrets::access_of(self.guard.info.verified_identity.as_ref(), &authorizer)
                .await;
    }

    /// The proxy's SDS resources: generated per stream (they depend on its identity and
    /// are few), with every name left out logged and counted as upstream does.
    fn generated_secrets(&self, sub: &Subscription) -> ProxyResources {
        let now = time::OffsetDateTime::now_utc();
        let out = sds::secrets(&self.event.secrets, &self.secret_access, sub, now);
        for error in &out.errors {
            warn!(%error, "SDS: not serving a resource");
            self.server.metrics.sds_certificate_errors.inc();
        }
        ProxyResources::new(vec![Arc::new(Generated::new(out.resources))])
    }

    /// The proxy's resources of `type_url` in the current push, each part shared with
    /// every proxy of the same key for it. `None` if no generator serves the type.
    pub fn generated(&self, type_url: &str, sub: &Subscription) -> Option<ProxyResources> {
        if type_url == types::SECRET {
            return Some(self.generated_secrets(sub));
        }
        let proxy = &self.guard.info.proxy;
        let ctx = GenContext {
            push: &self.event.push,
            proxy,
            scope: &self.scope,
        };
        let parts = Part::of(type_url, proxy)
            .iter()
            .map(|part| {
                let key = self.keys.for_part(*part);
                self.event
                    .cache
                    .get_or_generate(type_url, *part, key, &ctx, sub)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ProxyResources::new(parts))
    }

    /// Builds a response of `type_url` from `head` and shared `resources` (`size`
    /// resource bytes, for the metrics).
    pub fn response<M: Message>(
        &self,
        type_url: &str,
        head: &M,
        resources: Vec<prost::bytes::Bytes>,
        size: usize,
        started: Instant,
    ) -> Result<Outgoing, StreamEnd> {
        let Some(response) = WireResponse::new(head, resources) else {
            let short = types::short_name(type_url);
            warn!(r#type = %short, bytes = size, "response exceeds gRPC's 4 GiB limit");
            return Err(StreamEnd::ResponseTooLarge);
        };
        Ok(Outgoing {
            type_url: type_url.to_owned(),
            response,
            size,
            started,
        })
    }

    /// Sends responses in order, each within `PILOT_XDS_SEND_TIMEOUT`; a handler's
    /// error ends the stream instead.
    async fn send_all(&self, responses: Result<Vec<Outgoing>, StreamEnd>) -> Result<(), StreamEnd> {
        for out in responses? {
            self.send(out).await?;
        }
        Ok(())
    }

    async fn send(&self, out: Outgoing) -> Result<(), StreamEnd> {
        let m = &self.server.metrics;
        let short = types::short_name(&out.type_url);
        let timeout = self.server.features.xds_send_timeout;
        let sent = self.tx.send(Ok(out.response));
        let result = if timeout.is_zero() {
            sent.await.map_err(|_| StreamEnd::ClientGone)
        } else {
            match tokio::time::timeout(timeout, sent).await {
                Ok(sent) => sent.map_err(|_| StreamEnd::ClientGone),
                Err(_) => {
                    m.write_timeouts.inc();
                    Err(StreamEnd::SendTimeout)
                }
            }
        };
        if let Err(end) = result {
            m.pushes
                .get_or_create(&Metrics::send_error_label(&out.type_url))
                .inc();
            return Err(end);
        }
        m.pushes
            .get_or_create(&Metrics::type_label(&out.type_url))
            .inc();
        m.push_time
            .get_or_create(&Metrics::type_label(&out.type_url))
            .observe(out.started.elapsed().as_secs_f64());
        m.config_size
            .get_or_create(&Metrics::type_url_label(&out.type_url))
            .observe(out.size as f64);
        debug!(r#type = %short, bytes = out.size, "pushed");
        Ok(())
    }

    /// Counts a rejected response and logs why.
    pub fn nack(&self, type_url: &str, nonce: &str, error: &str) {
        let short = types::short_name(type_url);
        warn!(r#type = %short, %nonce, %error, "proxy rejected config (NACK); it keeps its last accepted config");
        self.server
            .metrics
            .rejects
            .get_or_create(&Metrics::type_label(type_url))
            .inc();
    }

    /// Counts a reply to a response that has since been superseded.
    pub fn stale_nonce(&self, type_url: &str, nonce: &str) {
        let short = types::short_name(type_url);
        debug!(r#type = %short, %nonce, "stale nonce");
        self.server
            .metrics
            .expired_nonce
            .get_or_create(&Metrics::type_label(type_url))
            .inc();
    }
}

/// The keys a proxy's config is cached under in a push: proxies with equal keys for a
/// [`Part`] share that part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKeys {
    /// Outbound config (see [`Proxy::outbound_key`]); proxyless clients are served as one
    /// part, under their full key.
    pub shared: String,
    /// The proxy's own config (see [`Proxy::config_key`]).
    pub own: String,
}

impl ConfigKeys {
    pub fn of(push: &PushContext, proxy: &Proxy, scope: &SidecarScope) -> Self {
        let serves = proxy.ip_addresses.iter().any(|ip| push.is_endpoint_ip(ip));
        let sidecar = scope.sidecar.as_deref();
        let own = proxy.config_key(sidecar, serves);
        let shared = if proxy.is_proxyless_grpc() {
            own.clone()
        } else {
            proxy.outbound_key(sidecar, &scope.source_label_keys())
        };
        ConfigKeys { shared, own }
    }

    /// The key `part` is cached under.
    pub fn for_part(&self, part: Part) -> &str {
        match part {
            Part::Shared => &self.shared,
            Part::Own => &self.own,
        }
    }
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
