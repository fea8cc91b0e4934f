//! One watch per kind (kube-runtime watchers: a list, then a watch that resumes from the
//! last resource version, with backoff on errors), each owning a store source named
//! `kubernetes/<Kind>`. A kind whose CRD is missing is woken when one is established.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch as notify;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::object::to_config;
use crate::config::{Config, ConfigKey, ConfigStore, Kind};
use crate::validation;
use crd::CrdWakers;

/// Tracks which kinds have finished their initial list; `/ready` waits for all of them.
#[derive(Clone)]
pub struct SyncTracker {
    pending: Arc<Mutex<BTreeSet<Kind>>>,
    synced: notify::Sender<bool>,
}

impl SyncTracker {
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> Self {
        let pending: BTreeSet<Kind> = kinds.into_iter().collect();
        let (synced, _) = notify::channel(pending.is_empty());
        SyncTracker {
            pending: Arc::new(Mutex::new(pending)),
            synced,
        }
    }

    /// Marks a kind synced (listed, or known to be absent or forbidden).
    pub fn done(&self, kind: Kind) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.remove(&kind) && pending.is_empty() {
            self.synced.send_replace(true);
        }
    }

    /// Kinds still listing.
    pub fn pending(&self) -> Vec<Kind> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Resolves once every kind is synced.
    pub async fn wait(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Like [`SyncTracker::wait`], calling `report` with the kinds still listing every
    /// `period` until then.
    pub async fn wait_reporting(&self, period: Duration, mut report: impl FnMut(&[Kind])) {
        let wait = self.wait();
        tokio::pin!(wait);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = &mut wait => return,
                _ = tick.tick() => report(&self.pending()),
            }
        }
    }
}

/// Watches every kind istiod reads, cluster-wide.
pub struct KubeSource {
    client: kube::Client,
    store: ConfigStore,
    kinds: Vec<Kind>,
    pub sync: SyncTracker,
}

impl KubeSource {
    pub fn new(client: kube::Client, store: ConfigStore, kinds: Vec<Kind>) -> Self {
        let sync = SyncTracker::new(kinds.iter().copied());
        KubeSource {
            client,
            store,
            kinds,
            sync,
        }
    }

    /// Runs every watch until `shutdown`.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let wakers = CrdWakers::for_kinds(&self.kinds);
        for kind in self.kinds {
            let (client, store, sync) =
                (self.client.clone(), self.store.clone(), self.sync.clone());
            tasks.spawn(watch_kind(client, kind, store, sync, wakers.get(kind)));
        }
        if !wakers.is_empty() {
            tasks.spawn(wakers.run(self.client.clone()));
        }
        shutdown.cancelled().await;
        tasks.abort_all();
        Ok(())
    }
}

/// The API resource of a kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    let api = kind.api();
    ApiResource {
        group: api.group.to_owned(),
        version: api.version.to_owned(),
        api_version: if api.group.is_empty() {
            api.version.to_owned()
        } else {
            format!("{}/{}", api.group, api.version)
        },
        kind: api.kind.to_owned(),
        plural: api.plural.to_owned(),
    }
}

/// What an API error means for a watch.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The resource is not served (CRD not installed): retry quietly until it appears.
    NotInstalled,
    /// istiod's RBAC does not allow it: stop watching this kind.
    Forbidden,
    /// The resource version to resume from is gone (410: compacted, or older than the API
    /// server's watch cache): relist. `restart` when the watcher would retry the same
    /// version (the API server answered the watch request itself with 410).
    Expired { restart: bool },
    /// Anything else: log and let the backoff retry.
    Transient,
}

fn classify(e: &watcher::Error) -> Failure {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => 0,
    };
    match code {
        404 => Failure::NotInstalled,
        403 => Failure::Forbidden,
        // An ERROR event in the stream resets the watcher to a fresh list; a 410 answer to
        // the watch request leaves it retrying the expired version.
        410 => Failure::Expired {
            restart: !matches!(e, watcher::Error::WatchError(_)),
        },
        _ => Failure::Transient,
    }
}

/// The watch of a kind: a list, then a watch resuming from the last version seen.
fn kind_stream(
    api: &Api<DynamicObject>,
) -> futures::stream::BoxStream<'static, Result<Event<DynamicObject>, watcher::Error>> {
    watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        // Managed fields are large and of no use to istiod: drop them as objects arrive,
        // as upstream's informer transform does.
        .modify(|obj| obj.metadata.managed_fields = None)
        .boxed()
}

async fn watch_kind(
    client: kube::Client,
    kind: Kind,
    store: ConfigStore,
    sync: SyncTracker,
    crd_established: Option<Arc<Notify>>,
) {
    let ar = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = kind_stream(&api);
    let mut applier = Applier::new(kind, store);
    let mut warned_missing = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
            // Only while the kind is missing: a new stream lists at once, without the
            // backoff the missing resource built up.
            _ = established(crd_established.as_deref()), if warned_missing => {
                info!(%kind, "CRD established; listing");
                stream = kind_stream(&api);
                continue;
            }
        };
        match event {
            Ok(event) => {
                if applier.apply(event) {
                    if warned_missing {
                        info!(%kind, "resource is now served; watching it");
                        warned_missing = false;
                    }
                    sync.done(kind);
                }
            }
            Err(e) => match classify(&e) {
                Failure::NotInstalled => {
                    if !warned_missing {
                        warn!(%kind, group = %ar.group, "resource not served (CRD not installed?); will pick it up when it appears");
                        warned_missing = true;
                    }
                    sync.done(kind);
                }
                Failure::Forbidden => {
                    error!(%kind, error = %e, "forbidden to list/watch; check istiod's RBAC. This kind is disabled; istiod keeps serving the rest");
                    sync.done(kind);
                    return;
                }
                Failure::Expired { restart } => {
                    info!(%kind, error = %e, "resource version expired (410 Gone); relisting");
                    if restart {
                        stream = kind_stream(&api);
                    }
                }
                Failure::Transient => {
                    warn!(%kind, error = %e, "watch failed; retrying with backoff")
                }
            },
        }
    }
}

/// Resolves when the kind's CRD is reported established; never without a waker.
async fn established(waker: Option<&Notify>) {
    match waker {
        Some(w) => w.notified().await,
        None => std::future::pending().await,
    }
}

/// Applies one kind's watch events to the store source `kubernetes/<Kind>`.
///
/// An object that does not parse or is invalid is skipped and its last valid version kept,
/// on an update as on a relist; a delete needs only the object's name, so it always applies.
struct Applier {
    kind: Kind,
    source: String,
    store: ConfigStore,
    /// The objects of the list in progress.
    initial: Vec<Config>,
    /// Objects of the list in progress that do not parse.
    unparsed: Vec<ConfigKey>,
}

impl Applier {
    fn new(kind: Kind, store: ConfigStore) -> Self {
        Applier {
            kind,
            source: format!("kubernetes/{kind}"),
            store,
            initial: Vec::new(),
            unparsed: Vec::new(),
        }
    }

    /// Applies one event; true when it completed a list.
    fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        let kind = self.kind;
        match event {
            Event::Init => {
                self.initial.clear();
                self.unparsed.clear();
            }
            Event::InitApply(obj) => match convert(kind, obj) {
                Ok(c) => self.initial.push(c),
                Err(Some(key)) => self.unparsed.push(key),
                Err(None) => {}
            },
            Event::InitDone => {
                let mut configs = std::mem::take(&mut self.initial);
                // An object listed but invalid keeps the version already stored; one absent
                // from the list goes, whatever state it was last seen in.
                for key in std::mem::take(&mut self.unparsed) {
                    if let Some(kept) = self.store.get(&self.source, &key) {
                        configs.push(Config::clone(&kept));
                    }
                }
                let n = configs.len();
                self.store.replace_source(&self.source, configs);
                info!(%kind, objects = n, "synced");
                return true;
            }
            Event::Apply(obj) => {
                if let Ok(c) = convert(kind, obj) {
                    self.store.upsert(&self.source, c);
                }
            }
            Event::Delete(obj) => {
                let meta = &obj.metadata;
                match ConfigKey::from_metadata(
                    kind,
                    meta.namespace.as_deref(),
                    meta.name.as_deref(),
                ) {
                    Some(key) => {
                        self.store.delete(&self.source, &key);
                    }
                    None => warn!(%kind, "ignoring delete of an object without a name"),
                }
            }
        }
        false
    }
}

/// Turns an API object into a store object. One that does not parse, or that validation
/// rejects, is logged and skipped; the error carries its key when its metadata names it.
fn convert(kind: Kind, obj: DynamicObject) -> Result<Config, Option<ConfigKey>> {
    let meta = &obj.metadata;
    let key = ConfigKey::from_metadata(kind, meta.namespace.as_deref(), meta.name.as_deref());
    let mut value = match serde_json::to_value(&obj) {
        Ok(v) => v,
        Err(e) => {
            warn!(%kind, error = %e, "cannot encode object");
            return Err(key);
        }
    };
    drop(obj);
    // List items come without type metadata.
    let ar = api_resource(kind);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), ar.api_version.into());
        map.insert("kind".into(), ar.kind.into());
    }
    let (namespace, name) = key
        .as_ref()
        .map_or(("", ""), |k| (k.namespace.as_str(), k.name.as_str()));
    let config = to_config(0, kind, value).map_err(|e| {
        warn!(%kind, namespace, name, error = %e, "skipping object that does not parse; keeping its last valid version");
        key.clone()
    })?;
    // An Istio object the validation webhook would deny is not applied either, as the
    // config folder does: the API server only stores it because no webhook stopped it.
    if let Some(error) = config.raw.as_ref().and_then(validation::rejection) {
        warn!(%kind, namespace, name, %error, "skipping invalid object; keeping its last valid version");
        return Err(key);
    }
    Ok(config)
}

mod crd;
#[cfg(test)]
mod tests;
