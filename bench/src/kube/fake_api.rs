//! A fake Kubernetes API server over real HTTP on 127.0.0.1, enough for `pilot-discovery
//! --registries Kubernetes`: an in-memory object store keyed by (collection, namespace,
//! name) with one resource-version counter, and
//!
//! - list (`limit`/`continue` paging, label and field selectors),
//! - watch (`watch=true&resourceVersion=N`: newline-delimited JSON events streamed with
//!   chunked transfer; `resourceVersion=0` or `sendInitialEvents=true` start with the
//!   current objects; BOOKMARKs with `allowWatchBookmarks`; ends after `timeoutSeconds`),
//! - get, create (`dryRun` stores nothing), update (resource-version conflicts), JSON
//!   merge patch (also used for strategic merge), delete,
//! - TokenReview (authenticates no token).
//!
//! A collection that is not registered (a CRD that is not installed) answers 404, as the
//! real server does. Every event is kept (no compaction), so a watch from any version
//! resumes without a 410.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// A watch's lifetime when the client names none (the real server picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;

/// A resource type the server serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`.
    fn collection(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }
}

/// Every kind istiod watches (Istio and Gateway API CRDs only `with_crds`), plus what its
/// writers touch: ConfigMaps, Secrets, Leases, webhook configurations, TokenReviews.
pub fn istiod_resources(with_crds: bool) -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = pilot::config::Kind::ALL
        .into_iter()
        .map(|k| k.api())
        .filter(|a| {
            with_crds || !(a.group.ends_with("istio.io") || a.group.starts_with("gateway."))
        })
        .map(|a| ResourceType::new(a.group, a.version, a.kind, a.plural, a.namespaced))
        .collect();
    out.extend([
        ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::new("", "v1", "Secret", "secrets", true),
        ResourceType::new("coordination.k8s.io", "v1", "Lease", "leases", true),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
        ),
    ]);
    out
}

/// An API error, answered as a `Status` object.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} not found"),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code.as_u16(),
            self.reason,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        (self.code, axum::Json(status)).into_response()
    }
}

/// (collection, namespace or "", name).
type Key = (Arc<str>, String, String);

struct Change {
    rv: u64,
    collection: Arc<str>,
    kind: &'static str,
    object: Arc<Value>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Arc<Value>>,
    log: Vec<Change>,
    rv: u64,
}

struct Inner {
    /// Collection path → its type.
    types: HashMap<Arc<str>, ResourceType>,
    store: Mutex<Store>,
    /// The latest resource version; watchers wake on changes.
    changed: watch::Sender<u64>,
    /// Requests per (verb, resource).
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// The fake API server's state; clones share it.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

/// Where a request points.
struct Target {
    collection: Arc<str>,
    namespace: Option<String>,
    name: Option<String>,
}

/// A label or field selector term.
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

/// What a list or watch selects.
#[derive(Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Filter {
    fn from_query(
        namespace: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let labels = parse_selector(q.get("labelSelector").map_or("", |s| s))?;
        let fields = parse_selector(q.get("fieldSelector").map_or("", |s| s))?;
        for t in &fields {
            let (Term::Eq(k, _) | Term::Ne(k, _) | Term::Exists(k) | Term::Absent(k)) = t;
            if !matches!(k.as_str(), "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
        }
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let namespace = meta["namespace"].as_str().unwrap_or("");
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        let name = meta["name"].as_str();
        self.labels
            .iter()
            .all(|t| t.holds(|k| meta["labels"][k].as_str()))
            && self.fields.iter().all(|t| {
                t.holds(|k| match k {
                    "metadata.name" => name,
                    _ => Some(namespace),
                })
            })
    }
}

impl Term {
    /// Whether the term holds when `get` reads the label or field.
    fn holds<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
        }
    }
}

/// `a=b,c!=d,e,!f` (set-based `in`/`notin` are not supported).
fn parse_selector(s: &str) -> Result<Vec<Term>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let term = if let Some((k, v)) = part.split_once("!=") {
            Term::Ne(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Term::Eq(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = part.strip_prefix('!') {
            Term::Absent(k.trim().to_owned())
        } else if part.contains(' ') || part.contains('(') {
            return Err(ApiError::bad_request(format!(
                "unsupported selector {part:?}"
            )));
        } else {
            Term::Exists(part.to_owned())
        };
        out.push(term);
    }
    Ok(out)
}

/// One line of a watch response.
#[derive(Serialize)]
struct WatchLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&WatchLine { kind, object }).unwrap_or_default();
    line.push(b'\n');
    line.into()
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

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

impl FakeApi {
    /// A server for these resource types, with no objects.
    pub fn new(types: Vec<ResourceType>) -> Self {
        let (changed, _) = watch::channel(0);
        FakeApi {
            inner: Arc::new(Inner {
                types: types
                    .into_iter()
                    .map(|t| (Arc::from(t.collection()), t))
                    .collect(),
                store: Mutex::new(Store::default()),
                changed,
                requests: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Serves on an ephemeral port of 127.0.0.1 until the runtime stops.
    pub async fn serve(&self) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake API server")?;
        let addr = listener.local_addr()?;
        let router = Router::new().fallback(handle).with_state(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("fake API server stopped: {error}");
            }
        });
        Ok(addr)
    }

    /// Creates an object as a client would (its `apiVersion` and `kind` pick the
    /// collection); returns the stored object.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let (api_version, kind) = (
            object["apiVersion"].as_str().unwrap_or(""),
            object["kind"].as_str().unwrap_or(""),
        );
        let collection = self
            .inner
            .types
            .iter()
            .find(|(_, t)| t.api_version() == api_version && t.kind == kind)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| ApiError::not_found(format!("resource type {api_version} {kind}")))?;
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let target = Target {
            collection,
            namespace,
            name: None,
        };
        self.create_at(&target, object, false)
    }

    /// Requests served so far, per verb and resource (`list services` → 2).
    pub fn requests(&self) -> BTreeMap<(&'static str, String), u64> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, verb: &'static str, target: &Target) {
        let plural = target
            .collection
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        *self
            .inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((verb, plural))
            .or_default() += 1;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parse_path(&self, path: &str) -> Result<(Target, &ResourceType), ApiError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
            ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
            _ => return Err(ApiError::not_found(format!("path {path}"))),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (plural, name) = match rest {
            [plural] => (*plural, None),
            [plural, name] => (*plural, Some((*name).to_owned())),
            _ => return Err(ApiError::not_found(format!("path {path}"))),
        };
        let collection = format!("{prefix}/{plural}");
        let (collection, ty) = self
            .inner
            .types
            .get_key_value(collection.as_str())
            .ok_or_else(|| {
                ApiError::not_found("the server could not find the requested resource")
            })?;
        if namespace.is_some() && !ty.namespaced {
            return Err(ApiError::not_found(format!(
                "{} is not namespaced; path {path}",
                ty.plural
            )));
        }
        Ok((
            Target {
                collection: collection.clone(),
                namespace,
                name,
            },
            ty,
        ))
    }

    fn get(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        let key = key(target, name);
        self.store()
            .objects
            .get(&key)
            .map(|o| (**o).clone())
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", target.collection)))
    }

    fn list(
        &self,
        target: &Target,
        ty: &ResourceType,
        q: &HashMap<String, String>,
    ) -> Result<Value, ApiError> {
        let filter = Filter::from_query(target.namespace.clone(), q)?;
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let store = self.store();
        // A continue token is the list's resource version and the last key returned.
        let (rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, after) = token
                    .split_once(':')
                    .ok_or_else(|| ApiError::bad_request("malformed continue token"))?;
                let rv = rv
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request("malformed continue token"))?;
                let (ns, name) = after.split_once('/').unwrap_or(("", after));
                (rv, Some((ns.to_owned(), name.to_owned())))
            }
            None => (store.rv, None),
        };
        let start = match &after {
            Some((ns, name)) => {
                Bound::Excluded((target.collection.clone(), ns.clone(), name.clone()))
            }
            None => Bound::Included((target.collection.clone(), String::new(), String::new())),
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut more = false;
        for ((collection, ns, name), obj) in store.objects.range((start, Bound::Unbounded)) {
            if *collection != target.collection {
                break;
            }
            if !filter.matches(obj) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((**obj).clone());
            next = Some(format!("{rv}:{ns}/{name}"));
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let (true, Some(token)) = (more, next) {
            metadata["continue"] = json!(token);
        }
        Ok(json!({
            "kind": format!("{}List", ty.kind),
            "apiVersion": ty.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Stores `object` under a new resource version, logs the change, releases the store
    /// and wakes the watches.
    fn commit(
        &self,
        mut store: std::sync::MutexGuard<'_, Store>,
        key: Key,
        kind: &'static str,
        mut object: Value,
    ) -> Value {
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        store.log.push(Change {
            rv,
            collection: key.0.clone(),
            kind,
            object: object.clone(),
        });
        if kind == "DELETED" {
            store.objects.remove(&key);
        } else {
            store.objects.insert(key, object.clone());
        }
        drop(store);
        self.inner.changed.send_replace(rv);
        (*object).clone()
    }

    fn create_at(
        &self,
        target: &Target,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ty = &self.inner.types[&target.collection];
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
            (None, None) if ty.namespaced => {
                return Err(ApiError::bad_request("a namespaced object needs a namespace"))
            }
            (None, _) if !ty.namespaced => {
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
            meta["name"] = json!(format!("{prefix}{:05x}", store.rv + 1));
        }
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let namespace = meta["namespace"].as_str().unwrap_or("").to_owned();
        meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012x}", store.rv + 1));
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        object["apiVersion"] = json!(ty.api_version());
        object["kind"] = json!(ty.kind);
        let key = (target.collection.clone(), namespace, name.clone());
        if store.objects.contains_key(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} {name:?} already exists", ty.plural),
            ));
        }
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(store, key, "ADDED", object))
    }

    /// Replaces (`patch` = None) or merge-patches an object, refusing a stale
    /// `metadata.resourceVersion`.
    fn update(
        &self,
        target: &Target,
        name: &str,
        body: Value,
        patch: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ty = &self.inner.types[&target.collection];
        let key = key(target, name);
        let store = self.store();
        let current = store
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", ty.plural)))?;
        let wanted_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !wanted_rv.is_empty() && wanted_rv != current["metadata"]["resourceVersion"] {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    ty.plural
                ),
            ));
        }
        let mut object = if patch {
            let mut object = (*current).clone();
            merge_patch(&mut object, &body);
            object
        } else {
            body
        };
        // Identity and bookkeeping stay the server's.
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            object["metadata"][field] = current["metadata"][field].clone();
        }
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = json!(generation + 1);
        object["apiVersion"] = json!(ty.api_version());
        object["kind"] = json!(ty.kind);
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(store, key, "MODIFIED", object))
    }

    fn delete(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        let key = key(target, name);
        let store = self.store();
        let current = store
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", target.collection)))?;
        Ok(self.commit(store, key, "DELETED", (*current).clone()))
    }

    /// Streams the changes of a collection from a resource version.
    fn watch(
        &self,
        target: &Target,
        ty: &ResourceType,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let filter = Filter::from_query(target.namespace.clone(), q)?;
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let (bookmarks, initial_events) = (flag("allowWatchBookmarks"), flag("sendInitialEvents"));
        let since = match q.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
            ),
        };
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_WATCH_TIMEOUT);
        let (api, collection) = (self.clone(), target.collection.clone());
        let (kind, api_version) = (ty.kind.clone(), ty.api_version());
        let bookmark = move |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_line(
                "BOOKMARK",
                &json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
            )
        };
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            // Subscribed before reading the store, so no change falls in between.
            let mut changed = api.inner.changed.subscribe();
            let mut cursor = match since {
                Some(rv) if !initial_events => rv,
                _ => {
                    let (lines, rv) = {
                        let store = api.store();
                        let lines: Vec<Bytes> = store
                            .objects
                            .range((collection.clone(), String::new(), String::new())..)
                            .take_while(|((c, _, _), _)| *c == collection)
                            .filter(|(_, o)| filter.matches(o))
                            .map(|(_, o)| watch_line("ADDED", o))
                            .collect();
                        (lines, store.rv)
                    };
                    for line in lines {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    if initial_events && bookmarks && tx.send(bookmark(rv, true)).await.is_err() {
                        return;
                    }
                    rv
                }
            };
            loop {
                changed.borrow_and_update();
                let lines: Vec<Bytes> = {
                    let store = api.store();
                    let from = store.log.partition_point(|c| c.rv <= cursor);
                    let lines = store.log[from..]
                        .iter()
                        .filter(|c| c.collection == collection && filter.matches(&c.object))
                        .map(|c| watch_line(c.kind, &c.object))
                        .collect();
                    cursor = cursor.max(store.rv);
                    lines
                };
                for line in lines {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    res = changed.changed() => if res.is_err() { return },
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tokio::time::sleep(BOOKMARK_EVERY), if bookmarks => {
                        if tx.send(bookmark(cursor, false)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }

    fn token_review(&self, mut review: Value) -> Value {
        review["status"] = json!({
            "authenticated": false,
            "error": "the fake API server authenticates no tokens",
        });
        review
    }
}

fn key(target: &Target, name: &str) -> Key {
    (
        target.collection.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn handle(
    State(api): State<FakeApi>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = api.parse_path(uri.path()) {
        // Not served: counted by the last path segment, as an unserved CRD's list is.
        let plural = uri.path().rsplit('/').next().unwrap_or("").to_owned();
        *api.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(("404", plural))
            .or_default() += 1;
        return e.into_response();
    }
    match route(&api, method, uri.path(), &q, &headers, &body) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn route(
    api: &FakeApi,
    method: Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let (target, ty) = api.parse_path(path)?;
    let dry_run = q.contains_key("dryRun");
    let ok = |v: Value| axum::Json(v).into_response();
    let created = |v: Value| (StatusCode::CREATED, axum::Json(v)).into_response();
    match (method, target.name.clone()) {
        (Method::GET, Some(name)) => {
            api.count("get", &target);
            api.get(&target, &name).map(ok)
        }
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            api.count("watch", &target);
            api.watch(&target, ty, q)
        }
        (Method::GET, None) => {
            api.count("list", &target);
            api.list(&target, ty, q).map(ok)
        }
        (Method::POST, None) if ty.plural == "tokenreviews" => {
            api.count("create", &target);
            Ok(created(api.token_review(parse_body(body)?)))
        }
        (Method::POST, None) => {
            api.count("create", &target);
            api.create_at(&target, parse_body(body)?, dry_run)
                .map(created)
        }
        (Method::PUT, Some(name)) => {
            api.count("update", &target);
            api.update(&target, &name, parse_body(body)?, false, dry_run)
                .map(ok)
        }
        (Method::PATCH, Some(name)) => {
            api.count("patch", &target);
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !matches!(
                content_type,
                "application/merge-patch+json" | "application/strategic-merge-patch+json"
            ) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("the fake API server does not apply {content_type:?} patches"),
                ));
            }
            api.update(&target, &name, parse_body(body)?, true, dry_run)
                .map(ok)
        }
        (Method::DELETE, Some(name)) => {
            api.count("delete", &target);
            api.delete(&target, &name).map(ok)
        }
        (method, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    }
}

#[cfg(test)]
mod tests;
