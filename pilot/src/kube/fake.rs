//! A small in-memory API server behind `tower-test`'s mocked service, for the writers'
//! tests: get, list, create, replace (with resource-version conflicts), merge patch,
//! delete, and watches that are answered once a newer event exists. Handlers can be
//! installed for special endpoints (TokenReview, dry-run creates) and to inject failures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// Answers a request instead of the store: `Some((status, body))`, or `None` to pass.
pub type Handler = Box<dyn FnMut(&Call) -> Option<(u16, Value)> + Send>;

/// Where an object lives: the API prefix (`/api/v1`, `/apis/g/v`) and the plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Collection {
    prefix: String,
    plural: String,
}

#[derive(Debug, Clone)]
struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    kind: &'static str,
    collection: Collection,
    object: Value,
}

struct Parked {
    target: Target,
    query: String,
    since: u64,
    send: Responder,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<(Collection, String, String), Value>,
    events: Vec<WatchEvent>,
    rv: u64,
    calls: Vec<Call>,
    handlers: Vec<Handler>,
    parked: Vec<Parked>,
}

/// The shared state of a fake API server; clone it into the test to inspect and mutate.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// A client talking to a new fake API server, and the server's state.
pub fn pair() -> (kube::Client, FakeApi) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api = FakeApi::default();
    tokio::spawn(api.clone().serve(handle));
    (kube::Client::new(service, "default"), api)
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.first() {
        Some(&"api") if segs.len() >= 2 => (format!("/api/{}", segs[1]), &segs[2..]),
        Some(&"apis") if segs.len() >= 3 => (format!("/apis/{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = rest.first()?.to_string();
    Some(Target {
        collection: Collection { prefix, plural },
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url_decode(query).split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Ok(b) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches(object: &Value, target: &Target, query: &str) -> bool {
    let meta = &object["metadata"];
    if let Some(ns) = &target.namespace {
        if meta["namespace"].as_str() != Some(ns) {
            return false;
        }
    }
    if let Some(fs) = query_param(query, "fieldSelector") {
        for term in fs.split(',') {
            if let Some(name) = term.strip_prefix("metadata.name=") {
                if meta["name"].as_str() != Some(name) {
                    return false;
                }
            }
        }
    }
    if let Some(ls) = query_param(query, "labelSelector") {
        for term in ls.split(',').filter(|t| !t.is_empty()) {
            let ok = match term.split_once('=') {
                Some((k, v)) => meta["labels"][k].as_str() == Some(v),
                None => meta["labels"].get(term).is_some(),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl State {
    fn key(target: &Target, name: &str) -> (Collection, String, String) {
        (
            target.collection.clone(),
            target.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }

    fn record(&mut self, kind: &'static str, collection: Collection, object: &Value) {
        self.events.push(WatchEvent {
            rv: self.rv,
            kind,
            collection,
            object: object.clone(),
        });
    }

    /// Stores `object`, bumping the resource version, and records the event.
    fn write(
        &mut self,
        target: &Target,
        name: &str,
        mut object: Value,
        kind: &'static str,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object["metadata"]["name"] = json!(name);
        if let Some(ns) = &target.namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        self.objects.insert(Self::key(target, name), object.clone());
        self.record(kind, target.collection.clone(), &object);
        object
    }

    fn remove(&mut self, target: &Target, name: &str) -> Option<Value> {
        let mut object = self.objects.remove(&Self::key(target, name))?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record("DELETED", target.collection.clone(), &object);
        Some(object)
    }

    fn handle(&mut self, call: &Call, target: &Target) -> (u16, Value) {
        let dry_run = query_param(&call.query, "dryRun").is_some();
        match (&call.method, &target.name) {
            (&Method::GET, Some(name)) => match self.objects.get(&Self::key(target, name)) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            (&Method::GET, None) => {
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|((c, _, _), o)| {
                        *c == target.collection && matches(o, target, &call.query)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List",
                             "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                )
            }
            (&Method::POST, None) => {
                let name = call.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if self.objects.contains_key(&Self::key(target, &name)) {
                    return status(409, "AlreadyExists", &format!("{name} already exists"));
                }
                if dry_run {
                    return (201, call.body.clone());
                }
                (201, self.write(target, &name, call.body.clone(), "ADDED"))
            }
            (&Method::PUT, Some(name)) => {
                let Some(current) = self.objects.get(&Self::key(target, name)) else {
                    return status(404, "NotFound", &format!("{name} not found"));
                };
                let want = call.body["metadata"]["resourceVersion"].as_str();
                if want.is_some() && want != current["metadata"]["resourceVersion"].as_str() {
                    return status(409, "Conflict", "the object has been modified");
                }
                (200, self.write(target, name, call.body.clone(), "MODIFIED"))
            }
            (&Method::PATCH, Some(name)) => {
                let Some(mut current) = self.objects.get(&Self::key(target, name)).cloned() else {
                    return status(404, "NotFound", &format!("{name} not found"));
                };
                merge_patch(&mut current, &call.body);
                (200, self.write(target, name, current, "MODIFIED"))
            }
            (&Method::DELETE, Some(name)) => match self.remove(target, name) {
                Some(o) => (200, o),
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }

    /// Answers parked watches that now have events.
    fn wake(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            let events: Vec<&WatchEvent> = self
                .events
                .iter()
                .filter(|e| {
                    e.rv > p.since
                        && e.collection == p.target.collection
                        && matches(&e.object, &p.target, &p.query)
                })
                .collect();
            if events.is_empty() {
                self.parked.push(p);
                continue;
            }
            let mut body = String::new();
            for e in events {
                body.push_str(&json!({"type": e.kind, "object": e.object}).to_string());
                body.push('\n');
            }
            p.send
                .send_response(Response::new(Body::from(body.into_bytes())));
        }
    }
}

fn response(code: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string().into_bytes()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl FakeApi {
    async fn serve(self, mut handle: Handle) {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let call = Call {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.calls.push(call.clone());
            let mut handlers = std::mem::take(&mut state.handlers);
            let handled = handlers.iter_mut().find_map(|h| h(&call));
            handlers.append(&mut state.handlers);
            state.handlers = handlers;
            if let Some((code, body)) = handled {
                send.send_response(response(code, &body));
                continue;
            }
            let Some(target) = parse_path(&call.path) else {
                let (code, body) = status(404, "NotFound", "unknown path");
                send.send_response(response(code, &body));
                continue;
            };
            if call.method == Method::GET
                && query_param(&call.query, "watch").as_deref() == Some("true")
            {
                let since = query_param(&call.query, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                state.parked.push(Parked {
                    target,
                    query: call.query.clone(),
                    since,
                    send,
                });
                state.wake();
                continue;
            }
            let (code, body) = state.handle(&call, &target);
            send.send_response(response(code, &body));
            state.wake();
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stores an object at `path` (its collection), as if another client created it.
    pub fn put(&self, collection_path: &str, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let target = parse_path(collection_path).expect("collection path");
        self.with(|s| {
            let kind = if s.objects.contains_key(&State::key(&target, &name)) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.write(&target, &name, object, kind);
            s.wake();
        });
    }

    /// Deletes an object as another client would.
    pub fn delete(&self, object_path: &str) {
        let target = parse_path(object_path).expect("object path");
        let name = target.name.clone().expect("object name");
        self.with(|s| {
            s.remove(&target, &name);
            s.wake();
        });
    }

    /// The object at `path`, if stored.
    pub fn get(&self, object_path: &str) -> Option<Value> {
        let target = parse_path(object_path)?;
        let name = target.name.clone()?;
        self.with(|s| s.objects.get(&State::key(&target, &name)).cloned())
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Installs a handler consulted before the store.
    pub fn on(&self, handler: impl FnMut(&Call) -> Option<(u16, Value)> + Send + 'static) {
        self.with(|s| s.handlers.push(Box::new(handler)));
    }
}

/// Waits, with a deadline, until `check` holds (time may be paused; it auto-advances).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
