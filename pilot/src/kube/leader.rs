//! Leader election on the same lock objects as upstream istiod, so Go and Rust replicas
//! can run side by side: ConfigMap locks carry client-go's record in the
//! `control-plane.alpha.kubernetes.io/leader` annotation; Lease locks carry it in the spec
//! with the holder's key (its revision) in the `leader.istio.io/holder-key` annotation.
//!
//! As client-go, expiry is judged by when *we* last saw the record change, not by the
//! timestamps in it, so clock skew between replicas does not matter.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

/// The annotation holding the record on ConfigMap locks (client-go's key).
pub const RECORD_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// The annotation holding the holder's key on Lease locks (Istio's fork of client-go).
pub const HOLDER_KEY_ANNOTATION: &str = "leader.istio.io/holder-key";

/// The upstream lock names.
pub mod locks {
    use super::{Lock, LockKind};

    /// The namespace controller (`istio-ca-root-cert` ConfigMaps).
    pub const NAMESPACE_CONTROLLER: Lock =
        Lock::new("istio-namespace-controller-election", LockKind::ConfigMap);
    /// Ingress status.
    pub const INGRESS: Lock = Lock::new("istio-leader", LockKind::ConfigMap);
    /// Config analysis.
    pub const ANALYZE: Lock = Lock::new("istio-analyze-leader", LockKind::ConfigMap);
    /// Istio `*/status` writes.
    pub const STATUS: Lock = Lock::new("istio-status-leader", LockKind::Lease);
}

/// Which object kind carries a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    ConfigMap,
    Lease,
}

/// A named lock object in the istiod namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub name: &'static str,
    pub kind: LockKind,
}

impl Lock {
    pub const fn new(name: &'static str, kind: LockKind) -> Self {
        Lock { name, kind }
    }
}

/// How a replica takes part in elections.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// `ENABLE_LEADER_ELECTION`; when false this replica always leads.
    pub enabled: bool,
    /// The istiod namespace (`POD_NAMESPACE`), where the locks live.
    pub namespace: String,
    /// This replica (`POD_NAME`).
    pub identity: String,
    /// This replica's revision, written as the holder key.
    pub key: String,
    /// When true (the default revision) a lock held by another revision is taken over.
    pub prioritized: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Why the election configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("POD_NAME is not set: leader election needs this replica's name (set it from the pod's metadata.name, or ENABLE_LEADER_ELECTION=false)")]
    NoIdentity,
}

impl ElectionConfig {
    /// The election of replica `identity` (`POD_NAME`) of `revision` in `namespace`;
    /// `enabled` is `ENABLE_LEADER_ELECTION`. Timings as upstream (30s lease, 15s renew
    /// deadline, 7.5s retry).
    pub fn new(
        enabled: bool,
        namespace: &str,
        identity: &str,
        revision: &str,
    ) -> Result<Self, ConfigError> {
        if enabled && identity.is_empty() {
            return Err(ConfigError::NoIdentity);
        }
        let key = if revision.is_empty() {
            "default"
        } else {
            revision
        };
        Ok(ElectionConfig {
            enabled,
            namespace: if namespace.is_empty() {
                "istio-system".to_owned()
            } else {
                namespace.to_owned()
            },
            identity: identity.to_owned(),
            key: key.to_owned(),
            prioritized: key == "default",
            lease_duration: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(15),
            retry_period: Duration::from_millis(7500),
        })
    }
}

/// client-go's `LeaderElectionRecord` with Istio's `holderKey`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionRecord {
    #[serde(default)]
    pub holder_identity: String,
    #[serde(default)]
    pub holder_key: String,
    #[serde(default)]
    pub lease_duration_seconds: i64,
    #[serde(default)]
    pub acquire_time: Option<String>,
    #[serde(default)]
    pub renew_time: Option<String>,
    #[serde(default)]
    pub leader_transitions: i64,
}

/// Why talking to the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading lock {lock} in namespace {namespace}: {source}")]
    Get {
        lock: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing lock {lock} in namespace {namespace} (check the Role allows create/update on configmaps and leases): {source}")]
    Write {
        lock: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("lock {lock} holds an unreadable record: {source}")]
    Record {
        lock: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Wall-clock timestamps for the record, derived from the monotonic clock from a base
/// taken at start, so renewals always write a later time (and tests can pause time).
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: time::OffsetDateTime,
    mono: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            wall: time::OffsetDateTime::now_utc(),
            mono: Instant::now(),
        }
    }

    /// Now in RFC 3339: seconds for ConfigMap records (metav1.Time), microseconds for
    /// Leases (metav1.MicroTime).
    fn now(&self, micro: bool) -> String {
        let now = self.wall + self.mono.elapsed();
        let nanos = if micro { now.microsecond() * 1000 } else { 0 };
        now.replace_nanosecond(nanos)
            .unwrap_or(now)
            .format(&Rfc3339)
            .unwrap_or_default()
    }
}

/// The lock object as read: its record and the object to write back (for its
/// resource version, so a concurrent writer makes our update fail).
struct Current {
    record: LeaderElectionRecord,
    object: Value,
}

/// One lock as seen by one replica.
pub struct LeaderElection {
    client: kube::Client,
    config: ElectionConfig,
    lock: Lock,
    observed: Option<(LeaderElectionRecord, Instant)>,
    leading: watch::Sender<bool>,
    clock: Clock,
}

impl LeaderElection {
    pub fn new(client: kube::Client, config: ElectionConfig, lock: Lock) -> Self {
        let (leading, _) = watch::channel(false);
        LeaderElection {
            client,
            config,
            lock,
            observed: None,
            leading,
            clock: Clock::new(),
        }
    }

    /// Whether this replica leads, live.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    fn record_error(&self, source: serde_json::Error) -> LeaderError {
        LeaderError::Record {
            lock: self.lock.name,
            source,
        }
    }

    async fn get(&self) -> Result<Option<Current>, LeaderError> {
        let ns = &self.config.namespace;
        let get_err = |source| LeaderError::Get {
            lock: self.lock.name,
            namespace: ns.clone(),
            source,
        };
        let record_err = |source| self.record_error(source);
        match self.lock.kind {
            LockKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
                let Some(cm) = api.get_opt(self.lock.name).await.map_err(get_err)? else {
                    return Ok(None);
                };
                let record = match cm
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RECORD_ANNOTATION))
                {
                    Some(raw) if !raw.is_empty() => {
                        serde_json::from_str(raw).map_err(record_err)?
                    }
                    _ => LeaderElectionRecord::default(),
                };
                let object = serde_json::to_value(&cm).map_err(record_err)?;
                Ok(Some(Current { record, object }))
            }
            LockKind::Lease => {
                let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
                let Some(lease) = api.get_opt(self.lock.name).await.map_err(get_err)? else {
                    return Ok(None);
                };
                let object = serde_json::to_value(&lease).map_err(record_err)?;
                let spec = &object["spec"];
                let text = |k: &str| spec[k].as_str().map(str::to_owned);
                let record = LeaderElectionRecord {
                    holder_identity: text("holderIdentity").unwrap_or_default(),
                    holder_key: object["metadata"]["annotations"][HOLDER_KEY_ANNOTATION]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    lease_duration_seconds: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
                    acquire_time: text("acquireTime"),
                    renew_time: text("renewTime"),
                    leader_transitions: spec["leaseTransitions"].as_i64().unwrap_or(0),
                };
                Ok(Some(Current { record, object }))
            }
        }
    }

    /// Writes `record`: creates the lock when `current` is `None`, else replaces it.
    async fn put(
        &self,
        current: Option<Value>,
        record: &LeaderElectionRecord,
    ) -> Result<(), LeaderError> {
        let ns = &self.config.namespace;
        let write_err = |source| LeaderError::Write {
            lock: self.lock.name,
            namespace: ns.clone(),
            source,
        };
        let record_err = |source| self.record_error(source);
        let create = current.is_none();
        let mut object = current
            .unwrap_or_else(|| json!({"metadata": {"name": self.lock.name, "namespace": ns}}));
        match self.lock.kind {
            LockKind::ConfigMap => {
                let raw = serde_json::to_string(record).map_err(record_err)?;
                object["metadata"]["annotations"][RECORD_ANNOTATION] = json!(raw);
                let cm: ConfigMap = serde_json::from_value(object).map_err(record_err)?;
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
                self.store(&api, create, &cm).await.map_err(write_err)?;
            }
            LockKind::Lease => {
                object["spec"] = json!({
                    "holderIdentity": record.holder_identity,
                    "leaseDurationSeconds": record.lease_duration_seconds,
                    "acquireTime": record.acquire_time,
                    "renewTime": record.renew_time,
                    "leaseTransitions": record.leader_transitions,
                });
                let annotations = &mut object["metadata"]["annotations"];
                if record.holder_key.is_empty() {
                    if let Some(a) = annotations.as_object_mut() {
                        a.remove(HOLDER_KEY_ANNOTATION);
                    }
                } else {
                    annotations[HOLDER_KEY_ANNOTATION] = json!(record.holder_key);
                }
                let lease: Lease = serde_json::from_value(object).map_err(record_err)?;
                let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
                self.store(&api, create, &lease).await.map_err(write_err)?;
            }
        }
        Ok(())
    }

    /// Creates the lock object, or replaces it (guarded by the resource version read).
    async fn store<K>(&self, api: &Api<K>, create: bool, object: &K) -> Result<(), kube::Error>
    where
        K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if create {
            api.create(&PostParams::default(), object).await?;
        } else {
            api.replace(self.lock.name, &PostParams::default(), object)
                .await?;
        }
        Ok(())
    }

    fn new_record(&self, acquire_time: Option<String>, transitions: i64) -> LeaderElectionRecord {
        let micro = self.lock.kind == LockKind::Lease;
        let now = self.clock.now(micro);
        LeaderElectionRecord {
            holder_identity: self.config.identity.clone(),
            holder_key: self.config.key.clone(),
            lease_duration_seconds: self.config.lease_duration.as_secs() as i64,
            acquire_time: Some(acquire_time.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            leader_transitions: transitions,
        }
    }

    /// One attempt to acquire or renew; `Ok(true)` when we hold the lock afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let Some(current) = self.get().await? else {
            let record = self.new_record(None, 0);
            self.put(None, &record).await?;
            self.observed = Some((record, Instant::now()));
            return Ok(true);
        };
        let now = Instant::now();
        let changed = self.observed.as_ref().map(|(r, _)| r) != Some(&current.record);
        if changed {
            self.observed = Some((current.record.clone(), now));
        }
        let observed_at = self.observed.as_ref().map(|(_, t)| *t).unwrap_or(now);
        let old = &current.record;
        let ours = old.holder_identity == self.config.identity;
        let lease = Duration::from_secs(old.lease_duration_seconds.max(0) as u64);
        let held = !old.holder_identity.is_empty() && observed_at + lease > now;
        if held && !ours {
            let steal = self.config.prioritized && old.holder_key != self.config.key;
            if !steal {
                debug!(holder = %old.holder_identity, "lock held by another replica");
                return Ok(false);
            }
            info!(holder = %old.holder_identity, holder_key = %old.holder_key, "taking over the lock from a non-default revision");
        }
        let record = if ours {
            self.new_record(old.acquire_time.clone(), old.leader_transitions)
        } else {
            self.new_record(None, old.leader_transitions + 1)
        };
        self.put(Some(current.object), &record).await?;
        self.observed = Some((record, Instant::now()));
        Ok(true)
    }

    /// Gives the lock up (holder cleared, 1s lease) so another replica takes over at once.
    async fn release(&mut self) {
        let result = async {
            let Some(current) = self.get().await? else {
                return Ok(());
            };
            if current.record.holder_identity != self.config.identity {
                return Ok(());
            }
            let record = LeaderElectionRecord {
                holder_identity: String::new(),
                holder_key: String::new(),
                lease_duration_seconds: 1,
                acquire_time: current.record.acquire_time.clone(),
                renew_time: Some(self.clock.now(self.lock.kind == LockKind::Lease)),
                leader_transitions: current.record.leader_transitions,
            };
            self.put(Some(current.object), &record).await
        }
        .await;
        match result {
            Ok(()) => info!("released the lock"),
            Err(error) => {
                warn!(%error, "releasing the lock failed; another replica takes over after the lease expires")
            }
        }
    }

    /// Runs `work` while this replica leads: it gets a token cancelled when leadership is
    /// lost or on `shutdown`, and is awaited before the election goes on. Returns on
    /// `shutdown`, releasing the lock.
    pub async fn run<F, Fut>(mut self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let span = info_span!("leader", lock = self.lock.name, identity = %self.config.identity);
        async move {
            if !self.config.enabled {
                info!("leader election disabled (ENABLE_LEADER_ELECTION=false); always leading");
                self.leading.send_replace(true);
                work(shutdown.clone()).await;
                return;
            }
            loop {
                // Acquire.
                loop {
                    // An attempt stuck on an unresponsive API server must not hold up shutdown.
                    let attempt = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()) => attempt,
                    };
                    match attempt {
                        Ok(Ok(true)) => break,
                        Ok(Ok(false)) => {}
                        Ok(Err(error)) => warn!(%error, "leader election attempt failed"),
                        Err(_) => warn!(timeout = ?self.config.renew_deadline, "leader election attempt timed out"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.config.retry_period) => {}
                    }
                }
                info!("became leader");
                self.leading.send_replace(true);
                let token = shutdown.child_token();
                let mut task = tokio::spawn(work(token.clone()));
                let mut task_done = false;
                // Renew until the deadline passes without a successful renewal.
                let mut last_renew = Instant::now();
                let stop_reason = loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break "shutdown",
                        _ = &mut task, if !task_done => { task_done = true; }
                        _ = tokio::time::sleep(self.config.retry_period) => {
                            // As client-go, a renewal gets only the time left before the
                            // deadline: a request hanging on an unreachable API server must
                            // not keep this replica leading after others may have taken over.
                            let left = self.config.renew_deadline.saturating_sub(last_renew.elapsed());
                            let attempt = tokio::select! {
                                _ = shutdown.cancelled() => break "shutdown",
                                attempt = tokio::time::timeout(left, self.try_acquire_or_renew()) => attempt,
                            };
                            match attempt {
                                Ok(Ok(true)) => last_renew = Instant::now(),
                                Ok(Ok(false)) => break "another replica holds the lock",
                                Ok(Err(error)) => warn!(%error, "renewing the lock failed"),
                                Err(_) => warn!(timeout = ?left, "renewing the lock timed out"),
                            }
                            if last_renew.elapsed() >= self.config.renew_deadline {
                                break "renew deadline passed";
                            }
                        }
                    }
                };
                info!(reason = stop_reason, "stopped leading");
                self.leading.send_replace(false);
                token.cancel();
                if !task_done {
                    if let Err(error) = task.await {
                        warn!(%error, "leader task failed");
                    }
                }
                if shutdown.is_cancelled() {
                    let deadline = self.config.renew_deadline;
                    if tokio::time::timeout(deadline, self.release()).await.is_err() {
                        warn!(timeout = ?deadline, "releasing the lock timed out; another replica takes over after the lease expires");
                    }
                    return;
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Starts the writers istiod runs against its own cluster: the namespace controller
/// (`istio-ca-root-cert` ConfigMaps) on the leader of
/// `istio-namespace-controller-election`, and the webhook patcher on every replica (its
/// writes are idempotent, as upstream). `root` carries the CA's trust bundle (PEM);
/// `injection_served` says whether the injector webhooks are istiod's to patch.
pub fn spawn_writers(
    client: kube::Client,
    config: ElectionConfig,
    revision: &str,
    injection_served: bool,
    root: watch::Receiver<String>,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    let patcher =
        super::webhook_patch::WebhookPatcher::new(client.clone(), revision, &config.namespace)
            .injection_served(injection_served);
    tasks.spawn({
        let (root, shutdown) = (root.clone(), shutdown.clone());
        async move {
            patcher.run(root, shutdown).await;
            Ok(())
        }
    });
    let election = LeaderElection::new(client.clone(), config, locks::NAMESPACE_CONTROLLER);
    let controller = super::root_cert::NamespaceController::new(client);
    tasks.spawn(async move {
        election
            .run(shutdown, move |token| {
                controller.clone().run(root.clone(), token)
            })
            .await;
        Ok(())
    });
}

#[cfg(test)]
mod tests;
