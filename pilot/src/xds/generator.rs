//! Resource generation: a pure function of (push context, proxy, subscription) → resources.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use envoy_types::pb::google::protobuf::Any;
use prost::bytes::Bytes;
use prost::{Message, Name};

use super::types;
use super::{cds, eds, grpc, lds, rds, wire};
use crate::model::{Proxy, PushContext, SidecarScope};

/// What a proxy asked for of one type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// Everything of the type (an empty first request for CDS/LDS).
    Wildcard,
    /// Only these names; shared (see [`NameSets`]), so cloning is cheap.
    Names(Arc<BTreeSet<String>>),
}

impl Subscription {
    /// A subscription to exactly `names`.
    pub fn of<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Subscription::Names(Arc::new(names.into_iter().map(Into::into).collect()))
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(n) => n.contains(name),
        }
    }

    /// The explicitly requested names (empty for a wildcard).
    pub fn names(&self) -> impl Iterator<Item = &String> {
        let names = match self {
            Subscription::Wildcard => None,
            Subscription::Names(n) => Some(n.iter()),
        };
        names.into_iter().flatten()
    }
}

/// Interns subscribed name sets. Hundreds of proxies of one shape subscribe to the same
/// thousand endpoint names; they share one copy instead of holding one each.
#[derive(Debug, Default)]
pub struct NameSets {
    inner: Mutex<Interned>,
}

#[derive(Debug, Default)]
struct Interned {
    /// By content hash; entries die with their last subscriber.
    sets: HashMap<u64, Vec<Weak<BTreeSet<String>>>>,
    /// Buckets left by the last sweep of dead entries.
    swept_len: usize,
}

impl NameSets {
    /// The shared set holding exactly `names`.
    pub fn intern(&self, names: &[String]) -> Arc<BTreeSet<String>> {
        self.intern_set(names.iter().cloned().collect())
    }

    /// The shared set equal to `set`.
    pub fn intern_set(&self, set: BTreeSet<String>) -> Arc<BTreeSet<String>> {
        let mut hasher = DefaultHasher::new();
        set.hash(&mut hasher);
        let hash = hasher.finish();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = inner.sets.entry(hash).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(shared) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|shared| **shared == set)
        {
            return shared;
        }
        let shared = Arc::new(set);
        bucket.push(Arc::downgrade(&shared));
        // Dead entries are swept once the map has doubled since the last sweep.
        if inner.sets.len() > 2 * inner.swept_len + 64 {
            inner.sets.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
            inner.swept_len = inner.sets.len();
        }
        shared
    }

    /// How many distinct live sets there are.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .sets
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One generated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub body: Any,
}

impl Resource {
    pub fn new<M: Message + Name>(name: impl Into<String>, message: &M) -> Resource {
        Resource {
            name: name.into(),
            body: Any {
                type_url: M::type_url(),
                value: message.encode_to_vec(),
            },
        }
    }
}

/// Everything a generator reads.
pub struct GenContext<'a> {
    pub push: &'a PushContext,
    pub proxy: &'a Proxy,
    pub scope: &'a SidecarScope,
}

/// Generates resources of `type_url` for the proxy. `None` if no generator serves the type.
/// Resources not named by a non-wildcard subscription are left out.
pub fn generate(type_url: &str, ctx: &GenContext<'_>, sub: &Subscription) -> Option<Vec<Resource>> {
    let mut out = if ctx.proxy.is_proxyless_grpc() {
        match type_url {
            types::LISTENER => grpc::listeners(ctx, sub),
            types::ROUTE => grpc::routes(ctx, sub),
            types::CLUSTER => grpc::clusters(ctx, sub),
            types::ENDPOINT => eds::load_assignments(ctx, sub),
            _ => return None,
        }
    } else {
        match type_url {
            types::CLUSTER => cds::clusters(ctx),
            types::ENDPOINT => eds::load_assignments(ctx, sub),
            types::LISTENER => lds::listeners(ctx),
            types::ROUTE => rds::route_configs(ctx, sub),
            _ => return None,
        }
    };
    if !matches!(sub, Subscription::Wildcard) {
        out.retain(|r| sub.contains(&r.name));
    }
    Some(out)
}

/// The resources of one type generated for one config key, with their wire form made on
/// first use and then shared by every stream that sends them.
#[derive(Debug, Default)]
pub struct Generated {
    pub resources: Vec<Resource>,
    wire: OnceLock<Bytes>,
    delta: OnceLock<Vec<wire::DeltaEntry>>,
    by_name: OnceLock<HashMap<String, usize>>,
}

impl Generated {
    pub fn new(resources: Vec<Resource>) -> Self {
        Generated {
            resources,
            wire: OnceLock::new(),
            delta: OnceLock::new(),
            by_name: OnceLock::new(),
        }
    }

    /// Where the resource `name` is in `resources`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name
            .get_or_init(|| {
                self.resources
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.name.clone(), i))
                    .collect()
            })
            .get(name)
            .copied()
    }

    /// The content version of the resource `name`, if there is one.
    pub fn version_of(&self, name: &str) -> Option<&str> {
        let i = self.position(name)?;
        self.delta_entries().get(i).map(|e| e.version.as_str())
    }

    /// Each resource's content version and delta wire form, in `resources` order.
    pub fn delta_entries(&self) -> &[wire::DeltaEntry] {
        self.delta
            .get_or_init(|| self.resources.iter().map(wire::DeltaEntry::new).collect())
    }

    /// The resources encoded as `DiscoveryResponse.resources` (see [`wire`]).
    pub fn wire(&self) -> Bytes {
        self.wire
            .get_or_init(|| wire::encode_resources(&self.resources))
            .clone()
    }
}

/// Resources generated during one push, shared by every proxy with the same config key:
/// 500 sidecars of one namespace cost one generation, not 500.
#[derive(Debug, Default)]
pub struct GenCache {
    entries: Mutex<HashMap<CacheKey, Arc<Generated>>>,
}

/// (type URL, proxy config key, subscription).
type CacheKey = (String, String, Subscription);

impl GenCache {
    /// Returns the cached resources for (type, proxy key, subscription), generating them
    /// on a miss. `None` if no generator serves the type.
    pub fn get_or_generate(
        &self,
        type_url: &str,
        key: &str,
        ctx: &GenContext<'_>,
        sub: &Subscription,
    ) -> Option<Arc<Generated>> {
        let k = (type_url.to_owned(), key.to_owned(), sub.clone());
        if let Some(hit) = self.lock().get(&k) {
            return Some(hit.clone());
        }
        // Generated outside the lock: other proxies keep reading while this one builds.
        let generated = Arc::new(Generated::new(generate(type_url, ctx, sub)?));
        Some(self.lock().entry(k).or_insert(generated).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<Generated>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Generates the whole config of a proxy for `/debug/config_dump`: every type, wildcard
/// for CDS/LDS and the names those imply for EDS/RDS.
pub fn generate_all(ctx: &GenContext<'_>) -> Vec<(String, Vec<Resource>)> {
    let clusters = generate(types::CLUSTER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let listeners = generate(types::LISTENER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let eds_names = Subscription::of(clusters.iter().map(|c| c.name.clone()));
    let rds_names = Subscription::Names(Arc::new(rds::referenced_route_names(&listeners)));
    let endpoints = generate(types::ENDPOINT, ctx, &eds_names).unwrap_or_default();
    let routes = generate(types::ROUTE, ctx, &rds_names).unwrap_or_default();
    vec![
        (types::CLUSTER.to_owned(), clusters),
        (types::ENDPOINT.to_owned(), endpoints),
        (types::LISTENER.to_owned(), listeners),
        (types::ROUTE.to_owned(), routes),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_name_sets_are_shared() {
        let sets = NameSets::default();
        let a = sets.intern(&names(&["b", "a"]));
        let b = sets.intern(&names(&["a", "b", "a"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = sets.intern(&names(&["a"]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn sets_die_with_their_last_subscriber() {
        let sets = NameSets::default();
        let a = sets.intern(&names(&["x"]));
        drop(a);
        assert!(sets.is_empty());
        // Many short-lived sets are swept, not kept as dead entries.
        for i in 0..1000 {
            sets.intern(&[format!("n{i}")]);
        }
        let inner = sets.inner.lock().expect("lock");
        assert!(inner.sets.len() <= 129, "{} buckets", inner.sets.len());
    }
}
