//! Generated resources shared within a push: by config key across proxies, with their wire
//! forms made once and handed to every stream by reference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prost::bytes::Bytes;

use super::gen::{generate, GenContext, Resource, Subscription};
use super::wire;

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
///
/// The cache holds its entries weakly: a set lives as long as a stream that was sent it
/// (or is sending it) holds it. Keys come from what clients send (their metadata, the
/// names they ask for), so nothing a client asked for outlives the streams that asked.
#[derive(Debug, Default)]
pub struct GenCache {
    entries: Mutex<Entries>,
}

/// (type URL, proxy config key, subscription).
type CacheKey = (String, String, Subscription);

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<CacheKey, Weak<Generated>>,
    /// Entries left by the last sweep of dead ones.
    swept_len: usize,
}

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
        if let Some(hit) = self.lock().map.get(&k).and_then(Weak::upgrade) {
            return Some(hit);
        }
        // Generated outside the lock: other proxies keep reading while this one builds.
        let generated = Arc::new(Generated::new(generate(type_url, ctx, sub)?));
        let mut entries = self.lock();
        if let Some(raced) = entries.map.get(&k).and_then(Weak::upgrade) {
            return Some(raced);
        }
        entries.map.insert(k, Arc::downgrade(&generated));
        // Dead entries are swept once the map has doubled since the last sweep.
        if entries.map.len() > 2 * entries.swept_len + 64 {
            entries.map.retain(|_, w| w.strong_count() > 0);
            entries.swept_len = entries.map.len();
        }
        Some(generated)
    }

    /// Entries whose resources are still held by some stream.
    pub fn live_entries(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
