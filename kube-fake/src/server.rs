//! The fake's HTTP face: one axum `Router`, used in-process as a `kube::Client`'s service
//! or served on 127.0.0.1; requests recorded, offered to the handlers, then routed to the
//! store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::api::{Call, FakeApi, Write};
use crate::error::ApiError;
use crate::patch::PatchKind;
use crate::path::{self, Target};
use crate::select::Filter;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// A watch's lifetime when the client names none (the real server picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;

impl FakeApi {
    /// The server as an axum `Router`: a `tower::Service` of HTTP requests.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// A client talking to this server in-process, without a socket.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// Serves on an ephemeral port of 127.0.0.1 until the runtime stops.
    pub async fn serve(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "fake API server stopped");
            }
        });
        Ok(addr)
    }
}

/// The verb of a request, as the API server's audit log names it.
fn verb(method: &Method, target: &Target, q: &HashMap<String, String>) -> &'static str {
    match (method, &target.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if is_watch(q) => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    }
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    q.get("watch").is_some_and(|w| w == "true" || w == "1")
}

async fn handle(
    State(api): State<FakeApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    api.record(&call);
    if api.stalled(&call) {
        std::future::pending::<()>().await;
    }
    let q = match Query::<HashMap<String, String>>::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    if let Some((code, body)) = api.answer(&call) {
        if let Some(target) = path::parse(&call.path) {
            api.count(verb(&call.method, &target, &q), target.plural());
        }
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, axum::Json(body)).into_response();
    }
    let target = match api.resolve(&call.path) {
        Ok(target) => target,
        Err(e) => {
            // Not served: counted by the last path segment, as an unserved CRD's list is.
            api.count("404", call.path.rsplit('/').next().unwrap_or(""));
            return e.into_response();
        }
    };
    api.count(verb(&call.method, &target, &q), target.plural());
    route(&api, &call, &target, &q, &body).unwrap_or_else(IntoResponse::into_response)
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn route(
    api: &FakeApi,
    call: &Call,
    target: &Target,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let dry_run = q.contains_key("dryRun");
    let ok = |v: Value| axum::Json(v).into_response();
    let created = |v: Value| (StatusCode::CREATED, axum::Json(v)).into_response();
    let on_object = target.subresource.is_none();
    match (&call.method, target.name.as_deref()) {
        (&Method::GET, Some(name)) => api.get_at(target, name).map(ok),
        (&Method::GET, None) if is_watch(q) => watch(api, target, q),
        (&Method::GET, None) => api.list(target, q).map(ok),
        // Reviews are answered, never stored.
        (&Method::POST, None) if target.plural() == "tokenreviews" => {
            Ok(created(token_review(parse_body(body)?)))
        }
        (&Method::POST, None) => api
            .create_at(target, parse_body(body)?, dry_run)
            .map(created),
        (&Method::PUT, Some(name)) => api
            .update(target, name, parse_body(body)?, Write::Replace, dry_run)
            .map(ok),
        (&Method::PATCH, Some(name)) => {
            let content_type = call.content_type();
            let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("the fake API server does not apply {content_type:?} patches"),
                )
            })?;
            api.update(target, name, parse_body(body)?, Write::Patch(kind), dry_run)
                .map(ok)
        }
        (&Method::DELETE, Some(name)) if on_object => api.remove(target, name).map(ok),
        (method, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", call.path),
        )),
    }
}

fn token_review(mut review: Value) -> Value {
    review["status"] = json!({
        "authenticated": false,
        "error": "the fake API server authenticates no tokens",
    });
    review
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

/// Streams the changes of a collection from a resource version.
fn watch(
    api: &FakeApi,
    target: &Target,
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
    let (api, collection) = (api.clone(), target.collection.clone());
    let (kind, api_version) = match api.type_of(target) {
        Some(ty) => (ty.kind.clone(), ty.api_version()),
        None => (String::new(), String::new()),
    };
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
        let mut changed = api.subscribe();
        let mut cursor = match since {
            Some(rv) if !initial_events => rv,
            _ => {
                let (lines, rv) = {
                    let store = api.store();
                    let lines: Vec<Bytes> = store
                        .current(&collection, &filter)
                        .map(|o| watch_line("ADDED", o))
                        .collect();
                    (lines, store.rv())
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
                let lines = store
                    .changes_after(cursor, &collection, &filter)
                    .map(|c| watch_line(c.kind, &c.object))
                    .collect();
                cursor = cursor.max(store.rv());
                lines
            };
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                res = changed.changed() => if res.is_err() { return },
                _ = tx.closed() => return,
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
