//! The credentials store: Kubernetes Secrets that gateways and DestinationRules name by
//! `credentialName`, served to proxies over SDS.
//!
//! Secrets are kept apart from the config store on purpose: they never reach
//! `/debug/configz` or a push context, and a rotated certificate wakes only the streams
//! that subscribed to it instead of a full push. Like the config store, sources own
//! disjoint sets (a file, the Kubernetes watch) and a source replaces its whole set at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Secret;
use tokio::sync::mpsc;

/// Secret types that never hold serving certificates and are left out, as upstream's
/// informer field selector does: Helm release records and service-account tokens are the
/// two large, numerous kinds of Secret in a cluster.
pub const SKIPPED_TYPES: [&str; 2] = ["helm.sh/release.v1", "kubernetes.io/service-account-token"];

/// The API server field selector that leaves out [`SKIPPED_TYPES`].
pub fn field_selector() -> String {
    SKIPPED_TYPES
        .iter()
        .map(|t| format!("type!={t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Identity of a Secret: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
}

impl SecretKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        SecretKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What istiod keeps of a Secret: its type and its data (`stringData` folded in, as the API
/// server does on write).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretData {
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

// Key material never goes to a log by accident.
impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretData")
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretData {
    /// A Secret as stored; `None` for the types istiod skips ([`SKIPPED_TYPES`]) or one
    /// without a name.
    pub fn from_secret(secret: Secret) -> Option<(SecretKey, SecretData)> {
        let type_ = secret.type_.unwrap_or_else(|| "Opaque".to_owned());
        if SKIPPED_TYPES.contains(&type_.as_str()) {
            return None;
        }
        let name = secret.metadata.name.filter(|n| !n.is_empty())?;
        let namespace = secret
            .metadata
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        Some((SecretKey { namespace, name }, SecretData { type_, data }))
    }
}

/// An immutable view of every Secret, for SDS generation.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    secrets: BTreeMap<SecretKey, Arc<SecretData>>,
}

impl Secrets {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&SecretData> {
        // Secrets are few and lookups rare (a gateway's handful of names per push), so
        // building the key is fine.
        self.secrets
            .get(&SecretKey::new(namespace, name))
            .map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// A view holding exactly the Secrets given (tests, fixtures).
impl FromIterator<(SecretKey, SecretData)> for Secrets {
    fn from_iter<I: IntoIterator<Item = (SecretKey, SecretData)>>(secrets: I) -> Self {
        Secrets {
            secrets: secrets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        }
    }
}

type Objects = BTreeMap<SecretKey, Arc<SecretData>>;

/// The shared, mutable credentials store. Cheap to clone.
#[derive(Clone, Default)]
pub struct SecretStore {
    by_source: Arc<RwLock<BTreeMap<String, Objects>>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<BTreeSet<SecretKey>>>>>,
}

impl SecretStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of the Secrets that changed, one set per store update that changed any.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<BTreeSet<SecretKey>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_subscribers().push(tx);
        rx
    }

    /// Replaces every Secret owned by `source`. Returns the keys that changed.
    pub fn replace_source(
        &self,
        source: &str,
        secrets: impl IntoIterator<Item = (SecretKey, SecretData)>,
    ) -> BTreeSet<SecretKey> {
        let new: Objects = secrets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let mut by_source = self.write();
        let old = by_source.remove(source).unwrap_or_default();
        let mut changed: BTreeSet<SecretKey> = new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
        if !new.is_empty() {
            by_source.insert(source.to_owned(), new);
        }
        drop(by_source);
        self.notify(&changed);
        changed
    }

    /// Adds or replaces one Secret of `source` (a watch event). Returns whether it changed.
    pub fn upsert(&self, source: &str, key: SecretKey, data: SecretData) -> bool {
        let mut by_source = self.write();
        let objects = by_source.entry(source.to_owned()).or_default();
        if objects.get(&key).is_some_and(|old| **old == data) {
            return false;
        }
        objects.insert(key.clone(), Arc::new(data));
        drop(by_source);
        self.notify(&BTreeSet::from([key]));
        true
    }

    /// Removes one Secret of `source`. Returns whether it was there.
    pub fn delete(&self, source: &str, key: &SecretKey) -> bool {
        let removed = self
            .write()
            .get_mut(source)
            .is_some_and(|objects| objects.remove(key).is_some());
        if removed {
            self.notify(&BTreeSet::from([key.clone()]));
        }
        removed
    }

    /// The sources that own Secrets.
    pub fn sources(&self) -> BTreeSet<String> {
        self.read().keys().cloned().collect()
    }

    /// The current Secrets. When two sources hold the same Secret, the one whose source
    /// sorts first wins, as in the config store.
    pub fn snapshot(&self) -> Secrets {
        let mut secrets = BTreeMap::new();
        for objects in self.read().values() {
            for (k, v) in objects {
                secrets.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Secrets { secrets }
    }

    fn notify(&self, changed: &BTreeSet<SecretKey>) {
        if changed.is_empty() {
            return;
        }
        self.lock_subscribers()
            .retain(|tx| tx.send(changed.clone()).is_ok());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Objects>> {
        self.by_source.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Objects>> {
        self.by_source.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_subscribers(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<BTreeSet<SecretKey>>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(ns: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s.type_ = Some(type_.into());
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    #[test]
    fn skips_tokens_and_helm_releases() {
        for t in SKIPPED_TYPES {
            assert!(
                SecretData::from_secret(secret("ns", "a", t, &[])).is_none(),
                "{t}"
            );
        }
        let (key, data) =
            SecretData::from_secret(secret("ns", "a", "kubernetes.io/tls", &[("tls.crt", "x")]))
                .unwrap();
        assert_eq!(key, SecretKey::new("ns", "a"));
        assert_eq!(data.data["tls.crt"], b"x");
        assert_eq!(
            field_selector(),
            "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"
        );
    }

    #[test]
    fn string_data_is_folded_in_and_debug_hides_values() {
        let mut s = secret("", "a", "Opaque", &[("cert", "old")]);
        s.string_data = Some([("cert".to_owned(), "new".to_owned())].into());
        let (key, data) = SecretData::from_secret(s).unwrap();
        assert_eq!(key.namespace, "default");
        assert_eq!(data.data["cert"], b"new");
        assert!(!format!("{data:?}").contains("new"));
    }

    #[test]
    fn reports_the_keys_that_changed() {
        let store = SecretStore::new();
        let mut rx = store.subscribe();
        let a = (SecretKey::new("ns", "a"), SecretData::default());
        let b = (
            SecretKey::new("ns", "b"),
            SecretData {
                type_: "Opaque".into(),
                ..Default::default()
            },
        );
        let changed = store.replace_source("f", [a.clone(), b.clone()]);
        assert_eq!(changed.len(), 2);
        assert_eq!(rx.try_recv().unwrap(), changed);
        assert!(store.replace_source("f", [a.clone(), b.clone()]).is_empty());
        assert!(rx.try_recv().is_err(), "no change, no event");
        assert_eq!(
            store.replace_source("f", [a.clone()]),
            BTreeSet::from([b.0.clone()])
        );
        assert!(!store.upsert("f", a.0.clone(), a.1.clone()));
        assert!(store.upsert("kube", b.0.clone(), b.1.clone()));
        assert_eq!(store.snapshot().len(), 2);
        assert!(store.delete("kube", &b.0));
        assert!(!store.delete("kube", &b.0));
        assert!(store.snapshot().get("ns", "b").is_none());
        assert!(store.snapshot().get("ns", "a").is_some());
    }
}
