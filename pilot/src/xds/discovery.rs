//! The discovery server: the current push context, the connected proxies, and the loop
//! that turns config changes into pushes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::cache::GenCache;
use super::debounce::Debounce;
use super::metrics::{Metrics, VersionLabel};
use super::secrets::{AllowAll, SecretAuthorizer};
use super::subscriptions::NameSets;
use super::watch::Watch;
use crate::config::secrets::{SecretKey, SecretStore, Secrets};
use crate::config::{ChangeSet, ConfigStore, Kind};
use crate::model::{MeshConfig, Proxy, PushContext};
use crate::security::jwks::JwksResolver;
use crate::security::{request_authn, Identity};
use crate::settings::Features;

/// A push: the snapshot to serve and whether proxies need everything or only endpoints.
#[derive(Debug)]
pub struct PushEvent {
    pub push: Arc<PushContext>,
    /// Increases with every push.
    pub seq: u64,
    /// `seq` of the latest full push; a connection that missed it must push everything.
    pub full_seq: u64,
    /// When the change that caused this push arrived.
    pub triggered_at: Instant,
    /// Resources generated for this push, shared across connections (and with the
    /// Secret-only pushes that follow it, which change no other type).
    pub cache: Arc<GenCache>,
    /// For an endpoints-only push, the hosts whose endpoints changed since the push
    /// before it: a stream that was sent that push sends only their load assignments.
    pub endpoints_changed: Option<Arc<HashSet<String>>>,
    /// The Secrets SDS serves from, as of this push. Kept beside the push context, not in
    /// it: a rotated certificate is a push of its own, not a rebuilt snapshot.
    pub secrets: Arc<Secrets>,
    /// For a Secret-only push, the Secrets that changed since the push before it: only
    /// streams subscribed to one of them (or its `-cacert` sibling) send SDS.
    pub secrets_changed: Option<Arc<BTreeSet<SecretKey>>>,
}

/// A connected proxy, as the debug endpoints see it.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub id: String,
    pub proxy: Proxy,
    pub connected_at: SystemTime,
    pub delta: bool,
    /// Caller identity on the TLS port, if authenticated.
    pub identity: Option<String>,
    /// The caller's identity once checked against the proxy's namespace and service
    /// account (upstream's `VerifiedIdentity`): set only on the TLS port with
    /// `PILOT_ENABLE_XDS_IDENTITY_CHECK`. SDS serves only proxies that have one.
    pub verified_identity: Option<Identity>,
    /// The stream's per-type state as of its last request or response: a snapshot the
    /// stream publishes, so debug readers never hold up (or lock) the stream itself.
    watches: ArcSwap<BTreeMap<String, Watch>>,
}

impl ConnectionInfo {
    /// The latest published per-type state.
    pub fn watches(&self) -> Arc<BTreeMap<String, Watch>> {
        self.watches.load_full()
    }

    /// Publishes the stream's per-type state for the debug endpoints.
    pub fn publish(&self, watches: &BTreeMap<String, Watch>) {
        self.watches.store(Arc::new(watches.clone()));
    }
}

/// Shared state of the xDS server.
pub struct DiscoveryServer {
    pub features: Features,
    /// This replica's `control_plane.identifier` in responses.
    pub control_plane_id: String,
    pub metrics: Metrics,
    push_tx: watch::Sender<Arc<PushEvent>>,
    connections: Mutex<BTreeMap<String, Arc<ConnectionInfo>>>,
    /// Limits how many connections generate and send at once (`PILOT_PUSH_THROTTLE`).
    pub throttle: Arc<Semaphore>,
    /// Subscribed name sets, shared across connections.
    pub name_sets: NameSets,
    next_conn: AtomicU64,
    /// When the next stream may be admitted. The async mutex is the queue: waiters are
    /// served in order, and one that gives up leaves the queue without taking a slot.
    admission: tokio::sync::Mutex<Instant>,
    /// Streams served or waiting for admission (`PILOT_MAX_XDS_STREAMS`).
    streams: Arc<Semaphore>,
    /// Serialises publishing, so that config and Secret pushes each build on the last.
    publishing: Mutex<()>,
    /// Who may read Secrets (SDS); every authenticated identity until set.
    secret_authorizer: arc_swap::ArcSwap<Arc<dyn SecretAuthorizer>>,
}

impl DiscoveryServer {
    pub fn new(features: Features, metrics: Metrics, mut initial: PushContext) -> Arc<Self> {
        initial.scope_gateway_to_namespace = features.scope_gateway_to_namespace;
        initial.skip_validate_trust_domain = features.skip_validate_trust_domain;
        log_new_warnings(&initial, &PushContext::default());
        metrics.services.set(initial.services.len() as i64);
        metrics
            .virtual_services
            .set(initial.virtual_services.len() as i64);
        let event = PushEvent {
            push: Arc::new(initial),
            seq: 1,
            full_seq: 1,
            triggered_at: Instant::now(),
            cache: Arc::default(),
            endpoints_changed: None,
            secrets: Arc::default(),
            secrets_changed: None,
        };
        let (push_tx, _) = watch::channel(Arc::new(event));
        Arc::new(DiscoveryServer {
            throttle: Arc::new(Semaphore::new(features.push_throttle.max(1))),
            control_plane_id: super::stream::control_plane_id(&features.pod_name),
            metrics,
            push_tx,
            connections: Mutex::new(BTreeMap::new()),
            name_sets: NameSets::default(),
            next_conn: AtomicU64::new(1),
            admission: tokio::sync::Mutex::new(Instant::now()),
            streams: Arc::new(Semaphore::new(features.max_xds_streams.max(1))),
            publishing: Mutex::new(()),
            secret_authorizer: arc_swap::ArcSwap::from_pointee(Arc::new(AllowAll)),
            features,
        })
    }

    /// Sets who may read Secrets (the SubjectAccessReview authorizer with Kubernetes).
    pub fn set_secret_authorizer(&self, authorizer: Arc<dyn SecretAuthorizer>) {
        self.secret_authorizer.store(Arc::new(authorizer));
    }

    /// Who may read Secrets.
    pub fn secret_authorizer(&self) -> Arc<dyn SecretAuthorizer> {
        Arc::clone(&self.secret_authorizer.load())
    }

    /// The latest push.
    pub fn current(&self) -> Arc<PushEvent> {
        self.push_tx.borrow().clone()
    }

    /// Notifications of new pushes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PushEvent>> {
        self.push_tx.subscribe()
    }

    /// Publishes a new push context to every connection.
    pub fn publish(&self, mut push: PushContext, full: bool, triggered_at: Instant) {
        push.scope_gateway_to_namespace = self.features.scope_gateway_to_namespace;
        push.skip_validate_trust_domain = self.features.skip_validate_trust_domain;
        self.metrics.services.set(push.services.len() as i64);
        self.metrics
            .virtual_services
            .set(push.virtual_services.len() as i64);
        let _publishing = self.lock_publishing();
        let prev = self.current();
        log_new_warnings(&push, &prev.push);
        let seq = prev.seq + 1;
        let endpoints_changed = (!full).then(|| Arc::new(push.endpoint_changes(&prev.push)));
        let event = PushEvent {
            push: Arc::new(push),
            seq,
            full_seq: if full { seq } else { prev.full_seq },
            triggered_at,
            cache: Arc::default(),
            endpoints_changed,
            secrets: prev.secrets.clone(),
            secrets_changed: None,
        };
        self.push_tx.send_replace(Arc::new(event));
    }

    /// Publishes new Secrets: a push that sends SDS only to streams subscribed to one of
    /// `changed` (a stream that skipped pushes re-checks all it watches), and nothing
    /// else: the push context, its generated config and its endpoints stay.
    pub fn publish_secrets(
        &self,
        secrets: Secrets,
        changed: BTreeSet<SecretKey>,
        triggered_at: Instant,
    ) {
        let _publishing = self.lock_publishing();
        let prev = self.current();
        let event = PushEvent {
            push: prev.push.clone(),
            seq: prev.seq + 1,
            full_seq: prev.full_seq,
            triggered_at,
            cache: prev.cache.clone(),
            // No endpoint changed.
            endpoints_changed: Some(Arc::default()),
            secrets: Arc::new(secrets),
            secrets_changed: Some(Arc::new(changed)),
        };
        self.push_tx.send_replace(Arc::new(event));
    }

    /// Turns Secret changes into Secret-only pushes until the store goes away or
    /// `shutdown` fires. Changes are merged for `PILOT_DEBOUNCE_AFTER`, as config is: a
    /// certificate manager rewriting several Secrets causes one push.
    pub async fn run_secret_pushes(
        self: Arc<Self>,
        store: SecretStore,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<BTreeSet<SecretKey>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let mut changed = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = changes.recv() => match c { Some(c) => c, None => return },
            };
            let first_at = Instant::now();
            let quiet = tokio::time::sleep(self.features.debounce_after);
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut quiet => break,
                    c = changes.recv() => match c {
                        Some(c) => changed.extend(c),
                        None => break,
                    },
                }
            }
            self.metrics
                .inbound_updates
                .get_or_create(&Metrics::label("secret"))
                .inc();
            self.metrics
                .push_triggers
                .get_or_create(&Metrics::label("secret"))
                .inc();
            let names: Vec<String> = changed.iter().map(ToString::to_string).collect();
            info!(secrets = %names.join(", "), "secrets changed; pushing SDS");
            self.publish_secrets(store.snapshot(), changed, first_at);
        }
    }

    fn lock_publishing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.publishing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more stream under `PILOT_MAX_XDS_STREAMS`, held for the stream's
    /// life; `None` when the replica serves as many as it may.
    pub fn reserve_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Waits for this stream's turn under `PILOT_MAX_REQUESTS_PER_SECOND`, as upstream's
    /// limiter (a burst of one): streams are admitted at that rate, in arrival order, and
    /// excess ones wait rather than fail. A slot is taken only when a stream is admitted,
    /// so streams that give up while waiting cost the ones behind them nothing.
    pub async fn admit(&self) {
        let interval =
            Duration::from_secs_f64(1.0 / self.features.max_requests_per_second.max(0.001));
        let mut next = self.admission.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = Instant::now() + interval;
    }

    /// Registers a connection; the returned guard unregisters it when dropped.
    pub fn connect(
        self: &Arc<Self>,
        proxy: Proxy,
        delta: bool,
        caller: Option<Identity>,
    ) -> ConnectionGuard {
        let identity = caller.as_ref().map(ToString::to_string);
        let verified_identity = caller.filter(|_| self.features.xds_identity_check);
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", proxy.node_id);
        let version = self.metrics.connected(&proxy.istio_version);
        let info = Arc::new(ConnectionInfo {
            id: id.clone(),
            proxy,
            connected_at: SystemTime::now(),
            delta,
            identity,
            verified_identity,
            watches: ArcSwap::default(),
        });
        self.lock_connections().insert(id, info.clone());
        ConnectionGuard {
            server: self.clone(),
            info,
            version,
        }
    }

    /// Every connected proxy, ordered by connection id.
    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        self.lock_connections().values().cloned().collect()
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<ConnectionInfo>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns store changes into pushes until the store goes away or `shutdown` fires.
    pub async fn run_pushes(
        self: Arc<Self>,
        store: ConfigStore,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<ChangeSet>,
        mut mesh: watch::Receiver<MeshConfig>,
        domain: String,
        jwks: Arc<JwksResolver>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut jwks_changes = jwks.subscribe();
        let debounce = Debounce {
            after: self.features.debounce_after,
            max: self.features.debounce_max,
            eds: self.features.enable_eds_debounce,
        };
        let mut mesh_live = true;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                b = debounce.next(&mut changes) => match b { Some(b) => b, None => return },
                changed = mesh.changed(), if mesh_live => {
                    if changed.is_err() {
                        // A fixed mesh config (a file): nothing more will come.
                        mesh_live = false;
                        continue;
                    }
                    // Mesh config changes everything: a full push, as upstream.
                    self.metrics.push_triggers.get_or_create(&Metrics::label("global")).inc();
                    let current = mesh.borrow_and_update().clone();
                    let push = build_push(&store, &current, &domain, &jwks).await;
                    info!(version = %push.version, "mesh config changed; pushing");
                    self.publish(push, true, Instant::now());
                    continue;
                }
                Ok(()) = jwks_changes.changed() => {
                    // Keys of a jwksUri changed: every proxy that inlines them needs them.
                    self.metrics.push_triggers.get_or_create(&Metrics::label("unknown")).inc();
                    let current = mesh.borrow().clone();
                    let push = build_push(&store, &current, &domain, &jwks).await;
                    info!(version = %push.version, "JWKS changed; pushing");
                    self.publish(push, true, Instant::now());
                    continue;
                }
            };
            self.metrics
                .debounce_time
                .observe(batch.first_at.elapsed().as_secs_f64());
            for kind in &batch.changes.kinds {
                self.metrics
                    .inbound_updates
                    .get_or_create(&Metrics::label(inbound_label(*kind)))
                    .inc();
            }
            let full = !batch.changes.endpoints_only();
            let reason = if full { "config" } else { "endpoint" };
            self.metrics
                .push_triggers
                .get_or_create(&Metrics::label(reason))
                .inc();
            let started = std::time::Instant::now();
            let current = mesh.borrow().clone();
            let push = build_push(&store, &current, &domain, &jwks).await;
            self.metrics
                .push_context_init
                .observe(started.elapsed().as_secs_f64());
            info!(version = %push.version, full, events = batch.events, kinds = ?batch.changes.kinds, "pushing");
            self.publish(push, full, batch.first_at);
            debug!(connections = self.connections().len(), "push published");
        }
    }
}

/// Logs each policy warning once, on the push that first finds it (upstream logs its
/// PeerAuthentication conflicts on every push).
fn log_new_warnings(push: &PushContext, prev: &PushContext) {
    for w in push.warnings.new_since(&prev.warnings) {
        warn!(
            kind = %w.kind,
            namespace = %w.namespace,
            name = %w.name,
            "{}",
            w.message
        );
    }
}

static PUSH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Builds a push context from the store's current contents, with a fresh version, and
/// the JWKS its RequestAuthentications need: keys not fetched yet are fetched first (each
/// bounded by its rule's timeout), so the push that brings a policy brings its keys.
pub async fn build_push(
    store: &ConfigStore,
    mesh: &MeshConfig,
    domain: &str,
    jwks: &JwksResolver,
) -> PushContext {
    let n = PUSH_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let version = format!(
        "{}/{n}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    let mut push = PushContext::build(&store.snapshot(), mesh.clone(), domain, version);
    push.jwks = jwks.keys_for(request_authn::istiod_fetched_sources(&push));
    if let Some(keys) = jwks.fetch_pending().await {
        push.jwks = keys;
    }
    push
}

fn inbound_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Service | Kind::ServiceEntry => "svc",
        k if k.is_endpoint_kind() => "eds",
        _ => "config",
    }
}

/// Keeps a connection registered while alive.
pub struct ConnectionGuard {
    server: Arc<DiscoveryServer>,
    pub info: Arc<ConnectionInfo>,
    version: VersionLabel,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.server.lock_connections().remove(&self.info.id);
        self.server.metrics.disconnected(&self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::object::parse_manifests;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n";
    const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\n";

    async fn wait_seq(server: &DiscoveryServer, seq: u64) -> Arc<PushEvent> {
        let mut rx = server.subscribe();
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|e| e.seq >= seq))
            .await
            .expect("push within deadline")
            .expect("sender alive")
            .clone();
        ev
    }

    #[tokio::test]
    async fn config_endpoint_and_mesh_changes_become_pushes() {
        let env = crate::settings::Env::from_pairs([("PILOT_DEBOUNCE_AFTER", "1ms")]);
        let features = Features::from_env(&env).unwrap();
        let store = ConfigStore::new();
        let server = DiscoveryServer::new(features, Metrics::default(), PushContext::default());
        let (mesh_tx, mesh_rx) = watch::channel(MeshConfig::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server.clone().run_pushes(
            store.clone(),
            store.subscribe(),
            mesh_rx,
            "cluster.local".into(),
            JwksResolver::new(Default::default()).unwrap(),
            shutdown.clone(),
        ));

        store.replace_source("f", parse_manifests(SVC).unwrap().configs);
        let ev = wait_seq(&server, 2).await;
        assert_eq!(
            (ev.seq, ev.full_seq),
            (2, 2),
            "a service change is a full push"
        );
        assert_eq!(ev.push.services.len(), 1);

        store.replace_source("g", parse_manifests(SLICE).unwrap().configs);
        let ev = wait_seq(&server, 3).await;
        assert_eq!(
            (ev.seq, ev.full_seq),
            (3, 2),
            "an endpoint change is an EDS push"
        );

        mesh_tx.send_replace(MeshConfig {
            trust_domain: "example.org".into(),
            ..MeshConfig::default()
        });
        let ev = wait_seq(&server, 4).await;
        assert_eq!(ev.full_seq, 4, "a mesh change is a full push");
        assert_eq!(ev.push.mesh.trust_domain, "example.org");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn secret_changes_become_secret_only_pushes() {
        use crate::config::secrets::SecretData;
        let env = crate::settings::Env::from_pairs([("PILOT_DEBOUNCE_AFTER", "1ms")]);
        let features = Features::from_env(&env).unwrap();
        let server = DiscoveryServer::new(features, Metrics::default(), PushContext::default());
        let secrets = SecretStore::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server.clone().run_secret_pushes(
            secrets.clone(),
            secrets.subscribe(),
            shutdown.clone(),
        ));
        let before = server.current();
        secrets.upsert("f", SecretKey::new("gw", "a"), SecretData::default());
        let ev = wait_seq(&server, 2).await;
        assert_eq!(ev.full_seq, 1, "not a config push");
        assert!(
            Arc::ptr_eq(&ev.push, &before.push),
            "the push context stays"
        );
        assert!(
            Arc::ptr_eq(&ev.cache, &before.cache),
            "and its generated config"
        );
        assert_eq!(ev.endpoints_changed.as_deref().map(HashSet::len), Some(0));
        assert_eq!(
            ev.secrets_changed.as_deref(),
            Some(&BTreeSet::from([SecretKey::new("gw", "a")]))
        );
        assert!(ev.secrets.get("gw", "a").is_some());

        // A config push keeps the Secrets and is not a Secret push.
        server.publish(PushContext::default(), true, Instant::now());
        let ev = server.current();
        assert!(ev.secrets.get("gw", "a").is_some());
        assert_eq!(ev.secrets_changed, None);
        shutdown.cancel();
    }
}
