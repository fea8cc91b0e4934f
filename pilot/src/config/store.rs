//! The config store: every object from every source, and the change events that drive pushes.
//!
//! Sources own disjoint sets of objects (a file, or a Kubernetes watch): a source replaces
//! its whole set at once, so an object that disappears from a file disappears from the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;

use super::kind::Kind;
use super::object::{Config, ConfigKey};

/// Which kinds changed in one update of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub kinds: BTreeSet<Kind>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// True when only endpoints changed, so an EDS push is enough.
    pub fn endpoints_only(&self) -> bool {
        !self.kinds.is_empty() && self.kinds.iter().all(|k| k.is_endpoint_kind())
    }

    pub fn merge(&mut self, other: &ChangeSet) {
        self.kinds.extend(other.kinds.iter().copied());
    }
}

/// An error a source reported for one of its inputs (a file, a watch).
#[derive(Debug, Clone, Serialize)]
pub struct SourceError {
    pub source: String,
    pub error: String,
}

/// An immutable view of the store at one moment, for building a push context.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub configs: BTreeMap<ConfigKey, Arc<Config>>,
    pub errors: Vec<SourceError>,
    pub revision: u64,
}

impl Snapshot {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Config>> {
        self.configs.values().filter(move |c| c.key.kind == kind)
    }
}

#[derive(Default)]
struct Inner {
    by_source: BTreeMap<String, BTreeMap<ConfigKey, Arc<Config>>>,
    errors: BTreeMap<String, String>,
    revision: u64,
}

/// The shared config store. Cheap to clone.
#[derive(Clone, Default)]
pub struct ConfigStore {
    inner: Arc<RwLock<Inner>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<ChangeSet>>>>,
}

impl ConfigStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream of change sets, one per store update that changed something.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ChangeSet> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_subscribers().push(tx);
        rx
    }

    /// Replaces every object owned by `source` and clears its error. Returns what changed.
    pub fn replace_source(&self, source: &str, configs: Vec<Config>) -> ChangeSet {
        let mut inner = self.write();
        inner.errors.remove(source);
        let old = inner.by_source.remove(source).unwrap_or_default();
        let changes = diff(&old, &configs);
        if !configs.is_empty() {
            inner.by_source.insert(
                source.to_owned(),
                configs
                    .into_iter()
                    .map(|c| (c.key.clone(), Arc::new(c)))
                    .collect(),
            );
        }
        if !changes.is_empty() {
            inner.revision += 1;
        }
        drop(inner);
        self.notify(&changes);
        changes
    }

    /// Adds or replaces one object of `source` (a watch event). Returns what changed.
    pub fn upsert(&self, source: &str, config: Config) -> ChangeSet {
        let mut inner = self.write();
        let objects = inner.by_source.entry(source.to_owned()).or_default();
        let mut changes = ChangeSet::default();
        if objects.get(&config.key).is_none_or(|old| **old != config) {
            changes.kinds.insert(config.key.kind);
            objects.insert(config.key.clone(), Arc::new(config));
            inner.revision += 1;
        }
        drop(inner);
        self.notify(&changes);
        changes
    }

    /// One object of `source`, as that source stored it.
    pub fn get(&self, source: &str, key: &ConfigKey) -> Option<Arc<Config>> {
        self.read().by_source.get(source)?.get(key).cloned()
    }

    /// Removes one object of `source`. Returns what changed.
    pub fn delete(&self, source: &str, key: &ConfigKey) -> ChangeSet {
        let mut inner = self.write();
        let mut changes = ChangeSet::default();
        if let Some(objects) = inner.by_source.get_mut(source) {
            if objects.remove(key).is_some() {
                changes.kinds.insert(key.kind);
                inner.revision += 1;
            }
        }
        drop(inner);
        self.notify(&changes);
        changes
    }

    /// Drops a source (a deleted file) and everything it owned.
    pub fn remove_source(&self, source: &str) -> ChangeSet {
        let changes = self.replace_source(source, Vec::new());
        self.write().errors.remove(source);
        changes
    }

    /// Records that `source` could not be read; its last good objects stay in the store.
    pub fn record_error(&self, source: &str, error: String) {
        self.write().errors.insert(source.to_owned(), error);
    }

    /// The sources currently known (with objects or with an error).
    pub fn sources(&self) -> BTreeSet<String> {
        let inner = self.read();
        inner
            .by_source
            .keys()
            .chain(inner.errors.keys())
            .cloned()
            .collect()
    }

    /// The current contents. When two sources define the same object the one whose source
    /// sorts first wins, so the result does not depend on the order of events.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.read();
        let mut configs = BTreeMap::new();
        for objects in inner.by_source.values() {
            for c in objects.values() {
                configs.entry(c.key.clone()).or_insert_with(|| c.clone());
            }
        }
        Snapshot {
            configs,
            errors: inner
                .errors
                .iter()
                .map(|(source, error)| SourceError {
                    source: source.clone(),
                    error: error.clone(),
                })
                .collect(),
            revision: inner.revision,
        }
    }

    fn notify(&self, changes: &ChangeSet) {
        if changes.is_empty() {
            return;
        }
        self.lock_subscribers()
            .retain(|tx| tx.send(changes.clone()).is_ok());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<ChangeSet>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kinds whose objects differ between two sets.
fn diff(old: &BTreeMap<ConfigKey, Arc<Config>>, new: &[Config]) -> ChangeSet {
    let old: BTreeMap<&ConfigKey, &Config> = old.iter().map(|(k, c)| (k, c.as_ref())).collect();
    let new: BTreeMap<&ConfigKey, &Config> = new.iter().map(|c| (&c.key, c)).collect();
    let mut kinds = BTreeSet::new();
    for (k, v) in &new {
        if old.get(k) != Some(v) {
            kinds.insert(k.kind);
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            kinds.insert(k.kind);
        }
    }
    ChangeSet { kinds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::object::parse_manifests;

    fn objects(text: &str) -> Vec<Config> {
        parse_manifests(text).unwrap().configs
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n";
    const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: ns}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\n";

    #[test]
    fn reports_changed_kinds_only() {
        let store = ConfigStore::new();
        let mut rx = store.subscribe();
        let c = store.replace_source("f.yaml", objects(&format!("{SVC}---\n{SLICE}")));
        assert_eq!(
            c.kinds,
            BTreeSet::from([Kind::Service, Kind::EndpointSlice])
        );
        assert_eq!(rx.try_recv().unwrap(), c);

        // Same content again: nothing changed, no event.
        assert!(store
            .replace_source("f.yaml", objects(&format!("{SVC}---\n{SLICE}")))
            .is_empty());
        assert!(rx.try_recv().is_err());

        let c = store.replace_source(
            "f.yaml",
            objects(&format!(
                "{SVC}---\n{}",
                SLICE.replace("10.0.0.1", "10.0.0.2")
            )),
        );
        assert!(c.endpoints_only());
        assert_eq!(store.snapshot().revision, 2);
    }

    #[test]
    fn errors_keep_last_good_objects() {
        let store = ConfigStore::new();
        store.replace_source("f.yaml", objects(SVC));
        store.record_error("f.yaml", "document 0: invalid YAML".into());
        let snap = store.snapshot();
        assert_eq!(snap.configs.len(), 1);
        assert_eq!(snap.errors.len(), 1);
        store.remove_source("f.yaml");
        assert!(store.snapshot().configs.is_empty());
        let svc = objects(SVC).remove(0);
        assert_eq!(
            store.upsert("kube", svc.clone()).kinds,
            BTreeSet::from([Kind::Service])
        );
        assert!(
            store.upsert("kube", svc.clone()).is_empty(),
            "same object, no change"
        );
        assert_eq!(
            store.delete("kube", &svc.key).kinds,
            BTreeSet::from([Kind::Service])
        );
        assert!(store.delete("kube", &svc.key).is_empty());
        let snap = store.snapshot();
        assert!(snap.configs.is_empty() && snap.errors.is_empty());
    }
}
