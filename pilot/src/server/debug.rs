//! `/debug/*` handlers: what istiod knows and what each proxy was sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{ConfigStore, Snapshot};
use crate::xds::gen::{generate_all, GenContext};
use crate::xds::{types, DiscoveryServer};

/// What the debug handlers read.
#[derive(Clone)]
pub struct DebugState {
    pub discovery: Arc<DiscoveryServer>,
    pub store: ConfigStore,
}

/// The `/debug` routes.
pub fn routes(state: DebugState) -> Router {
    Router::new()
        .route("/debug", get(index))
        .route("/debug/list", get(index))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/endpointz", get(endpointz))
        .route("/debug/endpointShardz", get(endpointz))
        .route("/debug/adsz", get(adsz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/mesh", get(mesh))
        .route("/debug/config_warnings", get(config_warnings))
        .layer(axum::middleware::from_fn(loopback_only))
        .with_state(state)
}

const ENDPOINTS: [&str; 9] = [
    "/debug/syncz",
    "/debug/configz",
    "/debug/registryz",
    "/debug/endpointz",
    "/debug/adsz",
    "/debug/config_dump?proxyID=",
    "/debug/mesh",
    "/debug/config_warnings",
    "/debug/list",
];

/// Debug data is only for local clients (`kubectl port-forward`, `pilot-discovery request`),
/// as upstream allows without authentication.
async fn loopback_only(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(ip) if ip.is_loopback() => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            "debug endpoints are served to loopback clients only\n",
        )
            .into_response(),
    }
}

async fn index() -> Json<Value> {
    Json(json!(ENDPOINTS))
}

/// Per-proxy sync status, in the shape `istioctl proxy-status` reads.
#[derive(Serialize)]
struct SyncStatus {
    cluster_id: String,
    proxy: String,
    proxy_type: String,
    istio_version: String,
    cluster_sent: String,
    cluster_acked: String,
    listener_sent: String,
    listener_acked: String,
    route_sent: String,
    route_acked: String,
    endpoint_sent: String,
    endpoint_acked: String,
    resources: BTreeMap<String, Value>,
}

async fn syncz(State(s): State<DebugState>) -> Json<Vec<Value>> {
    let out = s
        .discovery
        .connections()
        .iter()
        .map(|c| {
            let w = c.watches();
            let sent = |t: &str| w.get(t).map(|w| w.nonce_sent.clone()).unwrap_or_default();
            let acked = |t: &str| w.get(t).map(|w| w.nonce_acked.clone()).unwrap_or_default();
            let status = SyncStatus {
                cluster_id: c.proxy.cluster_id.clone(),
                proxy: c.proxy.id.clone(),
                proxy_type: c.proxy.kind.to_string(),
                istio_version: c.proxy.istio_version.clone(),
                cluster_sent: sent(types::CLUSTER),
                cluster_acked: acked(types::CLUSTER),
                listener_sent: sent(types::LISTENER),
                listener_acked: acked(types::LISTENER),
                route_sent: sent(types::ROUTE),
                route_acked: acked(types::ROUTE),
                endpoint_sent: sent(types::ENDPOINT),
                endpoint_acked: acked(types::ENDPOINT),
                resources: w
                    .values()
                    .map(|w| {
                        (
                            w.type_url.clone(),
                            json!({
                                "sent": w.nonce_sent,
                                "acked": w.nonce_acked,
                                "status": w.status(),
                                "lastError": w.last_error,
                            }),
                        )
                    })
                    .collect(),
            };
            serde_json::to_value(status).unwrap_or(Value::Null)
        })
        .collect();
    Json(out)
}

async fn configz(State(s): State<DebugState>) -> Json<Value> {
    Json(configz_body(&s.store.snapshot()))
}

/// Every stored object as a manifest, with the store's revision and source errors.
pub fn configz_body(snap: &Snapshot) -> Value {
    let configs: Vec<Value> = snap
        .configs
        .values()
        .map(|c| json!({"kind": c.key.kind, "namespace": c.key.namespace, "name": c.key.name, "object": c.manifest()}))
        .collect();
    json!({"revision": snap.revision, "errors": snap.errors, "configs": configs})
}

async fn registryz(State(s): State<DebugState>) -> Json<Value> {
    let push = s.discovery.current().push.clone();
    Json(json!(push.services))
}

async fn endpointz(State(s): State<DebugState>) -> Json<Value> {
    let push = s.discovery.current().push.clone();
    let map: BTreeMap<&str, Value> = push
        .services
        .iter()
        .map(|svc| (svc.hostname.as_str(), json!(push.endpoints(&svc.hostname))))
        .collect();
    Json(json!(map))
}

async fn adsz(State(s): State<DebugState>) -> Json<Value> {
    let conns: Vec<Value> = s
        .discovery
        .connections()
        .iter()
        .map(|c| {
            json!({
                "connectionId": c.id,
                "connectedAt": humantime::format_rfc3339_seconds(c.connected_at).to_string(),
                "delta": c.delta,
                "identity": c.identity,
                "proxy": c.proxy,
                "watches": *c.watches(),
            })
        })
        .collect();
    Json(json!({"totalClients": conns.len(), "clients": conns}))
}

async fn mesh(State(s): State<DebugState>) -> Json<Value> {
    Json(json!(s.discovery.current().push.mesh))
}

/// Security policies that conflict or select no workload, per resource, as of the
/// current push (not upstream: it only logs its PeerAuthentication conflicts).
async fn config_warnings(State(s): State<DebugState>) -> Json<Value> {
    let push = s.discovery.current().push.clone();
    Json(config_warnings_body(&push))
}

/// The body of `/debug/config_warnings`: the push version, the number of warnings, and
/// the resources with theirs.
pub fn config_warnings_body(push: &crate::model::PushContext) -> Value {
    json!({
        "version": push.version,
        "count": push.warnings.len(),
        "resources": push.warnings.by_resource(),
    })
}

#[derive(serde::Deserialize)]
struct ProxyQuery {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

/// The config istiod would send a connected proxy now, by type. Resources are shown in
/// protobuf text debug form, with their names and sizes.
async fn config_dump(State(s): State<DebugState>, Query(q): Query<ProxyQuery>) -> Response {
    let Some(id) = q.proxy_id.filter(|p| !p.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing proxyID query parameter\n").into_response();
    };
    let conns = s.discovery.connections();
    let Some(conn) = conns
        .iter()
        .find(|c| c.proxy.id == id || c.proxy.node_id == id || c.id == id)
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("proxy {id:?} is not connected\n"),
        )
            .into_response();
    };
    let push = s.discovery.current().push.clone();
    let scope = push.sidecar_scope(&conn.proxy);
    let ctx = GenContext {
        push: &push,
        proxy: &conn.proxy,
        scope: &scope,
    };
    let configs: Vec<Value> = generate_all(&ctx)
        .into_iter()
        .map(|(type_url, resources)| {
            let items: Vec<Value> = resources
                .iter()
                .map(|r| json!({"name": r.name, "typeUrl": r.body.type_url, "bytes": r.body.value.len(), "config": crate::server::dump::describe(&r.body)}))
                .collect();
            json!({"typeUrl": type_url, "versionInfo": push.version, "resources": items})
        })
        .collect();
    Json(json!({"proxy": conn.proxy, "sidecarScope": scope.sidecar, "configs": configs}))
        .into_response()
}
