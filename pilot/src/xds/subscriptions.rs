//! Subscribed name sets, interned: hundreds of proxies of one shape subscribe to the same
//! thousand endpoint names; they share one copy instead of holding one each.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

/// Interns subscribed name sets (see the module docs).
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
