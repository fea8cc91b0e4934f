//! Generated resources shared within a push: by config key across proxies, with their wire
//! forms made once and handed to every stream by reference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
