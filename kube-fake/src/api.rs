//! The fake API server's state and what its requests do to the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::patch::PatchKind;
use crate::path::{self, ResourceType, Target};
use crate::select::Filter;
use crate::store::{self, Key, Page, Store};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    /// The raw query string (`dryRun=All&fieldManager=x`).
    pub query: String,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when there is none or it is not JSON).
    pub body: Value,
}

impl Call {
    /// The request's `content-type`, or "".
    pub fn content_type(&self) -> &str {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Answers a request instead of the store: `Some((status, body))`, or `None` to pass.
pub type Handler = Box<dyn FnMut(&Call) -> Option<(u16, Value)> + Send>;

struct Inner {
    /// Collection path → its type; `None`: every collection is served.
    types: Option<HashMap<Arc<str>, ResourceType>>,
    store: Mutex<Store>,
    /// The latest resource version; watches wake on changes.
    changed: watch::Sender<u64>,
    /// Requests per (verb, resource).
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    calls: Mutex<Vec<Call>>,
    handlers: Mutex<Vec<Handler>>,
    stalls: Mutex<Vec<Stall>>,
}

/// Selects requests that are never answered.
type Stall = Box<dyn Fn(&Call) -> bool + Send>;

/// The fake API server; clones share its state.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::with_types(None)
    }
}

/// How a PUT or PATCH changes an object.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    Replace,
    Patch(PatchKind),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(target: &Target, name: &str) -> Key {
    (
        target.collection.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    )
}

impl FakeApi {
    /// A server of every collection, with no objects.
    pub fn new() -> Self {
        FakeApi::default()
    }

    /// A server of these resource types only, with no objects: other paths answer 404, as
    /// a server without their CRD does.
    pub fn serving(types: impl IntoIterator<Item = ResourceType>) -> Self {
        FakeApi::with_types(Some(
            types
                .into_iter()
                .map(|t| (Arc::from(t.collection()), t))
                .collect(),
        ))
    }

    fn with_types(types: Option<HashMap<Arc<str>, ResourceType>>) -> Self {
        let (changed, _) = watch::channel(0);
        FakeApi {
            inner: Arc::new(Inner {
                types,
                store: Mutex::new(Store::default()),
                changed,
                requests: Mutex::new(BTreeMap::new()),
                calls: Mutex::new(Vec::new()),
                handlers: Mutex::new(Vec::new()),
                stalls: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Creates an object as a client would (its `apiVersion` and `kind` pick the
    /// collection); returns the stored object.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let (api_version, kind) = (
            object["apiVersion"].as_str().unwrap_or(""),
            object["kind"].as_str().unwrap_or(""),
        );
        let namespace = object["metadata"]["namespace"].as_str();
        let ty = match &self.inner.types {
            Some(types) => types
                .values()
                .find(|t| t.api_version() == api_version && t.kind == kind)
                .cloned()
                .ok_or_else(|| {
                    ApiError::not_found(format!("resource type {api_version} {kind}"))
                })?,
            None => ResourceType::guess(api_version, kind, namespace.is_some()),
        };
        let namespace = namespace.filter(|_| ty.namespaced);
        let target = self.resolve(&ty.collection_in(namespace))?;
        self.create_at(&target, object, false)
    }

    /// Stores `object` in the collection at `collection_path` as another client would:
    /// created, or replaced whatever its resource version. Panics on a path that is not a
    /// collection's or an object the store refuses: a mistake in the test.
    pub fn put(&self, collection_path: &str, mut object: Value) -> Value {
        let target = match self.resolve(collection_path) {
            Ok(t) if t.name.is_none() => t,
            other => panic!("put: {collection_path} is not a served collection: {other:?}"),
        };
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let exists = lock(&self.inner.store).contains(&key(&target, &name));
        let stored = if exists {
            self.update(&target, &name, object, Write::Replace, false)
        } else {
            self.create_at(&target, object, false)
        };
        stored.unwrap_or_else(|e| panic!("put {name} in {collection_path}: {e}"))
    }

    /// The object at `object_path`, if stored.
    pub fn get(&self, object_path: &str) -> Option<Value> {
        let target = path::parse(object_path)?;
        let name = target.name.as_deref()?;
        lock(&self.inner.store)
            .get(&key(&target, name))
            .map(|o| (**o).clone())
    }

    /// Deletes the object at `object_path` as another client would; returns it if it was
    /// stored.
    pub fn delete(&self, object_path: &str) -> Option<Value> {
        let target = path::parse(object_path)?;
        let name = target.name.clone()?;
        self.remove(&target, &name).ok()
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    /// Requests served so far, per verb and resource (`("list", "services")` → 2);
    /// requests for resources not served count as `"404"`.
    pub fn requests(&self) -> BTreeMap<(&'static str, String), u64> {
        lock(&self.inner.requests).clone()
    }

    /// Installs a handler, consulted (after those installed before it) before the store.
    pub fn on(&self, handler: impl FnMut(&Call) -> Option<(u16, Value)> + Send + 'static) {
        lock(&self.inner.handlers).push(Box::new(handler));
    }

    /// From now on, requests `select` picks are recorded but never answered, as by an API
    /// server that stopped responding.
    pub fn stall(&self, select: impl Fn(&Call) -> bool + Send + 'static) {
        lock(&self.inner.stalls).push(Box::new(select));
    }

    pub(crate) fn stalled(&self, call: &Call) -> bool {
        lock(&self.inner.stalls).iter().any(|s| s(call))
    }

    pub(crate) fn record(&self, call: &Call) {
        lock(&self.inner.calls).push(call.clone());
    }

    /// The first handler's answer to `call`, if any answers.
    pub(crate) fn answer(&self, call: &Call) -> Option<(u16, Value)> {
        lock(&self.inner.handlers).iter_mut().find_map(|h| h(call))
    }

    pub(crate) fn count(&self, verb: &'static str, resource: &str) {
        *lock(&self.inner.requests)
            .entry((verb, resource.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.store)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The type of `target`'s collection, if types are registered.
    pub(crate) fn type_of(&self, target: &Target) -> Option<&ResourceType> {
        self.inner.types.as_ref()?.get(&target.collection)
    }

    /// Where `path` points, if the server serves it.
    pub(crate) fn resolve(&self, path: &str) -> Result<Target, ApiError> {
        let not_served = || ApiError::not_found("the server could not find the requested resource");
        let target = path::parse(path).ok_or_else(not_served)?;
        if target.subresource.is_some() && target.subresource_fields().is_none() {
            return Err(not_served());
        }
        if let Some(types) = &self.inner.types {
            let ty = types.get(&target.collection).ok_or_else(not_served)?;
            if target.namespace.is_some() && !ty.namespaced {
                return Err(ApiError::not_found(format!(
                    "{} is not namespaced; path {path}",
                    ty.plural
                )));
            }
        }
        Ok(target)
    }

    /// Commits under the store's lock, then wakes the watches.
    fn commit(
        &self,
        mut store: MutexGuard<'_, Store>,
        key: Key,
        kind: store::EventKind,
        object: Value,
    ) -> Value {
        let stored = store.commit(key, kind, object);
        let rv = store.rv();
        drop(store);
        self.inner.changed.send_replace(rv);
        stored
    }

    pub(crate) fn get_at(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        stored(&self.store(), target, name).map(|o| (*o).clone())
    }

    pub(crate) fn list(
        &self,
        target: &Target,
        q: &HashMap<String, String>,
    ) -> Result<Value, ApiError> {
        let filter = Filter::from_query(target.namespace.clone(), q)?;
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let token = q
            .get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty());
        let Page { items, rv, next } =
            self.store()
                .list(&target.collection, &filter, limit, token)?;
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
        }
        let (kind, api_version) = match self.type_of(target) {
            Some(ty) => (format!("{}List", ty.kind), ty.api_version()),
            None => ("List".to_owned(), "v1".to_owned()),
        };
        Ok(json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        }))
    }

    pub(crate) fn create_at(
        &self,
        target: &Target,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ty = self.type_of(target);
        let namespaced = ty.map_or(target.namespace.is_some(), |t| t.namespaced);
        if !object.is_object() || !object["metadata"].is_object() {
            return Err(ApiError::bad_request("the object has no metadata"));
        }
        let meta = &mut object["metadata"];
        match (&target.namespace, meta["namespace"].as_str()) {
            (Some(ns), Some(body)) if ns != body => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body}) does not match the namespace of the request ({ns})"
                )))
            }
            (Some(ns), _) => meta["namespace"] = json!(ns),
            (None, None) if namespaced => {
                return Err(ApiError::bad_request("a namespaced object needs a namespace"))
            }
            (None, _) if !namespaced => {
                if let Some(m) = meta.as_object_mut() {
                    m.remove("namespace");
                }
            }
            _ => {}
        }
        let store = self.store();
        if meta["name"].as_str().is_none_or(str::is_empty) {
            let prefix = meta["generateName"].as_str().ok_or_else(|| {
                ApiError::bad_request("metadata.name or metadata.generateName is required")
            })?;
            meta["name"] = json!(format!("{prefix}{:05x}", store.rv() + 1));
        }
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let namespace = meta["namespace"].as_str().unwrap_or("").to_owned();
        meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012x}", store.rv() + 1));
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if let Some(ty) = ty {
            object["apiVersion"] = json!(ty.api_version());
            object["kind"] = json!(ty.kind);
        }
        let key = (target.collection.clone(), namespace, name.clone());
        if store.contains(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} {name:?} already exists", target.plural()),
            ));
        }
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(store, key, store::ADDED, object))
    }

    /// Replaces or patches an object (or the part of it a subresource holds), refusing a
    /// stale `metadata.resourceVersion`.
    pub(crate) fn update(
        &self,
        target: &Target,
        name: &str,
        body: Value,
        write: Write,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let store = self.store();
        let current = stored(&store, target, name)?;
        let wanted_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !wanted_rv.is_empty() && wanted_rv != current["metadata"]["resourceVersion"] {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    target.plural()
                ),
            ));
        }
        let written = match write {
            Write::Replace => body,
            Write::Patch(kind) => {
                let mut object = (*current).clone();
                kind.apply(&mut object, &body);
                object
            }
        };
        let object = match target.subresource_fields() {
            // A subresource writes its own part of the object and nothing else.
            Some(fields) => {
                let mut object = (*current).clone();
                let (last, parents) = fields.split_last().unwrap_or((&"", &[]));
                let (mut to, mut from) = (&mut object, &written);
                for f in parents {
                    (to, from) = (&mut to[*f], &from[*f]);
                }
                to[*last] = from[*last].clone();
                object
            }
            None => {
                let mut object = written;
                // Identity and bookkeeping stay the server's.
                for field in ["name", "namespace", "uid", "creationTimestamp"] {
                    object["metadata"][field] = current["metadata"][field].clone();
                }
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(generation + 1);
                if let Some(ty) = self.type_of(target) {
                    object["apiVersion"] = json!(ty.api_version());
                    object["kind"] = json!(ty.kind);
                }
                object
            }
        };
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(store, key(target, name), store::MODIFIED, object))
    }

    pub(crate) fn remove(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        let store = self.store();
        let current = stored(&store, target, name)?;
        Ok(self.commit(store, key(target, name), store::DELETED, (*current).clone()))
    }
}

/// The object `name` of `target`'s collection, or a 404.
fn stored(store: &Store, target: &Target, name: &str) -> Result<Arc<Value>, ApiError> {
    store
        .get(&key(target, name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", target.plural())))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
