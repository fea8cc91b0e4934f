//! Generated resources shared within a push: each part of a proxy's config (see
//! [`Part`]) by its key across proxies, with their wire forms made once and handed to
//! every stream by reference.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prost::bytes::Bytes;

use super::gen::{generate_part, GenContext, Part, Resource, Subscription};
use super::wire;

/// The resources of one type generated for one config key, with their wire form made on
/// first use and then shared by every stream that sends them.
#[derive(Debug, Default)]
pub struct Generated {
    pub resources: Vec<Resource>,
    wire: OnceLock<Bytes>,
    delta: OnceLock<Vec<wire::DeltaEntry>>,
    by_name: OnceLock<HashMap<String, usize>>,
    fingerprint: OnceLock<u64>,
}

impl Generated {
    pub fn new(resources: Vec<Resource>) -> Self {
        Generated {
            resources,
            wire: OnceLock::new(),
            delta: OnceLock::new(),
            by_name: OnceLock::new(),
            fingerprint: OnceLock::new(),
        }
    }

    /// A hash of the encoded resources, computed once and shared by every stream that
    /// compares against it.
    pub fn fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| {
            let mut h = DefaultHasher::new();
            self.wire().hash(&mut h);
            h.finish()
        })
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

/// A proxy's resources of one type in a push: its parts (see [`Part`]) in order, each
/// shared with every proxy of the same key for that part.
#[derive(Debug, Clone, Default)]
pub struct ProxyResources {
    parts: Vec<Arc<Generated>>,
}

impl ProxyResources {
    pub fn new(parts: Vec<Arc<Generated>>) -> Self {
        ProxyResources { parts }
    }

    /// Every resource, in order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.parts.iter().flat_map(|p| p.resources.iter())
    }

    /// Every resource with its content version and delta wire form.
    pub fn entries(&self) -> impl Iterator<Item = (&Resource, &wire::DeltaEntry)> {
        self.parts
            .iter()
            .flat_map(|p| p.resources.iter().zip(p.delta_entries()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p.position(name).is_some())
    }

    /// The content version of the resource `name`, if there is one.
    pub fn version_of(&self, name: &str) -> Option<&str> {
        self.parts.iter().find_map(|p| p.version_of(name))
    }

    /// The parts encoded as `DiscoveryResponse.resources`, shared by reference.
    pub fn wire(&self) -> Vec<Bytes> {
        self.parts.iter().map(|p| p.wire()).collect()
    }

    /// Whether `other` holds the same resources, byte for byte (a push that changes
    /// nothing of a type need not resend it).
    pub fn same_content(&self, other: &ProxyResources) -> bool {
        self.parts.len() == other.parts.len()
            && self.parts.iter().zip(&other.parts).all(|(a, b)| {
                Arc::ptr_eq(a, b) || (a.fingerprint() == b.fingerprint() && a.wire() == b.wire())
            })
    }

    /// The parts themselves (for tests of sharing).
    pub fn parts(&self) -> &[Arc<Generated>] {
        &self.parts
    }
}

/// Resources generated during one push, each part shared by every proxy with the same key
/// for it: 500 sidecars of one namespace cost one outbound generation, not 500.
///
/// The cache holds its entries weakly: a set lives as long as a stream that was sent it
/// (or is sending it) holds it. Keys come from what clients send (their metadata, the
/// names they ask for), so nothing a client asked for outlives the streams that asked.
#[derive(Debug, Default)]
pub struct GenCache {
    entries: Mutex<Entries>,
}

/// (type URL, part, the proxy's key for that part, subscription).
type CacheKey = (String, Part, String, SubscriptionKey);

/// A subscription by identity: subscribed name sets are interned (see
/// [`super::subscriptions::NameSets`]), so equal sets are one allocation, and a key made
/// from its address neither hashes thousands of names per lookup nor keeps them alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SubscriptionKey {
    Wildcard,
    Names(usize),
}

#[derive(Debug)]
struct Entry {
    /// Keeps the name set's allocation (not its names) so that its address, the key, is
    /// not reused while the entry exists.
    _names: Option<Weak<BTreeSet<String>>>,
    generated: Weak<Generated>,
}

impl Entry {
    fn get(&self) -> Option<Arc<Generated>> {
        self.generated.upgrade()
    }
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<CacheKey, Entry>,
    /// Entries left by the last sweep of dead ones.
    swept_len: usize,
}

fn cache_key(
    type_url: &str,
    part: Part,
    key: &str,
    sub: &Subscription,
) -> (CacheKey, Option<Weak<BTreeSet<String>>>) {
    let (sub_key, names) = match sub {
        Subscription::Wildcard => (SubscriptionKey::Wildcard, None),
        Subscription::Names(names) => (
            SubscriptionKey::Names(Arc::as_ptr(names) as usize),
            Some(Arc::downgrade(names)),
        ),
    };
    ((type_url.to_owned(), part, key.to_owned(), sub_key), names)
}

impl GenCache {
    /// Returns the cached part of the resources for (type, part, the proxy's key for the
    /// part, subscription), generating it on a miss. `None` if no generator serves the
    /// type.
    pub fn get_or_generate(
        &self,
        type_url: &str,
        part: Part,
        key: &str,
        ctx: &GenContext<'_>,
        sub: &Subscription,
    ) -> Option<Arc<Generated>> {
        let (k, names) = cache_key(type_url, part, key, sub);
        if let Some(hit) = self.lock().map.get(&k).and_then(Entry::get) {
            return Some(hit);
        }
        // Generated outside the lock: other proxies keep reading while this one builds.
        let generated = Arc::new(Generated::new(generate_part(type_url, part, ctx, sub)?));
        let mut entries = self.lock();
        if let Some(raced) = entries.map.get(&k).and_then(Entry::get) {
            return Some(raced);
        }
        entries.map.insert(
            k,
            Entry {
                _names: names,
                generated: Arc::downgrade(&generated),
            },
        );
        // Dead entries are swept once the map has doubled since the last sweep.
        if entries.map.len() > 2 * entries.swept_len + 64 {
            entries.map.retain(|_, e| e.generated.strong_count() > 0);
            entries.swept_len = entries.map.len();
        }
        Some(generated)
    }

    /// Entries whose resources are still held by some stream.
    pub fn live_entries(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|e| e.generated.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
