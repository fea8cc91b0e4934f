//! The in-memory object store: objects by (collection, namespace, name), one resource
//! version counter, and the log of every change for watches.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::select::Filter;

/// (collection, namespace or "", name).
pub(crate) type Key = (Arc<str>, String, String);

/// A watch event kind.
pub(crate) type EventKind = &'static str;
pub(crate) const ADDED: EventKind = "ADDED";
pub(crate) const MODIFIED: EventKind = "MODIFIED";
pub(crate) const DELETED: EventKind = "DELETED";

/// One committed change.
pub(crate) struct Change {
    pub rv: u64,
    pub collection: Arc<str>,
    pub kind: EventKind,
    pub object: Arc<Value>,
}

/// One page of a list.
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub rv: u64,
    /// The token for the next page, if there is one.
    pub next: Option<String>,
}

#[derive(Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Arc<Value>>,
    log: Vec<Change>,
    rv: u64,
}

impl Store {
    /// The latest resource version.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Arc<Value>> {
        self.objects.get(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.objects.contains_key(key)
    }

    /// The objects of `collection` that `filter` selects, in key order.
    pub fn current<'a>(
        &'a self,
        collection: &'a Arc<str>,
        filter: &'a Filter,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        self.objects
            .range((collection.clone(), String::new(), String::new())..)
            .take_while(move |((c, _, _), _)| c == collection)
            .map(|(_, o)| o)
            .filter(move |o| filter.matches(o))
    }

    /// Up to `limit` objects after the `continue` token's position. A token is the
    /// list's resource version and the last key returned.
    pub fn list(
        &self,
        collection: &Arc<str>,
        filter: &Filter,
        limit: usize,
        token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let malformed = || ApiError::bad_request("malformed continue token");
        let (rv, start) = match token {
            Some(token) => {
                let (rv, after) = token.split_once(':').ok_or_else(malformed)?;
                let rv = rv.parse::<u64>().map_err(|_| malformed())?;
                let (ns, name) = after.split_once('/').unwrap_or(("", after));
                let key = (collection.clone(), ns.to_owned(), name.to_owned());
                (rv, Bound::Excluded(key))
            }
            None => (
                self.rv,
                Bound::Included((collection.clone(), String::new(), String::new())),
            ),
        };
        let mut page = Page {
            items: Vec::new(),
            rv,
            next: None,
        };
        let mut last = None;
        for ((c, ns, name), obj) in self.objects.range((start, Bound::Unbounded)) {
            if c != collection {
                break;
            }
            if !filter.matches(obj) {
                continue;
            }
            if page.items.len() == limit {
                page.next = last;
                break;
            }
            page.items.push((**obj).clone());
            last = Some(format!("{rv}:{ns}/{name}"));
        }
        Ok(page)
    }

    /// The changes of `collection` after resource version `after` that `filter` selects.
    pub fn changes_after<'a>(
        &'a self,
        after: u64,
        collection: &'a Arc<str>,
        filter: &'a Filter,
    ) -> impl Iterator<Item = &'a Change> + 'a {
        let from = self.log.partition_point(|c| c.rv <= after);
        self.log[from..]
            .iter()
            .filter(move |c| c.collection == *collection && filter.matches(&c.object))
    }

    /// Stores `object` (or removes it, for [`DELETED`]) under a new resource version and
    /// logs the change; returns the object as stored.
    pub fn commit(&mut self, key: Key, kind: EventKind, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(object);
        self.log.push(Change {
            rv: self.rv,
            collection: key.0.clone(),
            kind,
            object: object.clone(),
        });
        if kind == DELETED {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        (*object).clone()
    }
}
