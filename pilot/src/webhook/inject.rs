//! The sidecar injection webhook: `POST /inject`, `/inject/` and
//! `/inject/cluster/<cluster>/net/<network>` (any `/inject/<key>/<value>/...`) take an
//! AdmissionReview of a Pod and answer, in the request's version, `allowed` with a
//! base64 JSON patch that adds the sidecar — or with no patch when the pod is not
//! injected. A pod that cannot be injected is refused with the reason, as upstream.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, info, warn};

use super::{decode_body, envelope, read_json_body, HttpError, MAX_BODY};
use crate::inject::{self, Injector};
use crate::model::MeshConfig;

/// The injection webhook's metrics, with upstream's names. As upstream, every request
/// is counted, and `success` counts the reviews answered (a skipped pod's too).
#[derive(Clone)]
pub struct Metrics {
    requests: Counter,
    success: Counter,
    skip: Counter,
    failure: Counter,
    time: Histogram,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Counter::default(),
            success: Counter::default(),
            skip: Counter::default(),
            failure: Counter::default(),
            time: Histogram::new([0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0]),
        };
        // Upstream's names; `/metrics` serves counters under the name registered.
        registry.register(
            "sidecar_injection_requests_total",
            "Total number of sidecar injection requests.",
            m.requests.clone(),
        );
        registry.register(
            "sidecar_injection_success_total",
            "Total number of successful sidecar injection requests.",
            m.success.clone(),
        );
        registry.register(
            "sidecar_injection_failure_total",
            "Total number of failed sidecar injection requests.",
            m.failure.clone(),
        );
        registry.register(
            "sidecar_injection_skip_total",
            "Total number of skipped sidecar injection requests.",
            m.skip.clone(),
        );
        registry.register(
            "sidecar_injection_time_seconds",
            "Total time taken for injection in seconds.",
            m.time.clone(),
        );
        m
    }
}

/// What the handler needs: the current injector config (swapped on reload), the mesh
/// config, and the metrics.
#[derive(Clone)]
pub struct InjectState {
    pub injector: Arc<ArcSwap<Injector>>,
    pub mesh: watch::Receiver<MeshConfig>,
    pub metrics: Metrics,
}

/// The injection routes, with the same body limit as `/validate`.
pub fn routes(state: InjectState) -> Router {
    Router::new()
        .route("/inject", post(inject_handler))
        .route("/inject/", post(inject_handler))
        .route("/inject/{*rest}", post(inject_handler))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

async fn inject_handler(
    State(state): State<InjectState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &state.metrics;
    metrics.requests.inc();
    let started = Instant::now();
    let answer = match read_json_body(&headers, body).await {
        Ok(bytes) => decode_body(&bytes).and_then(|review| {
            let injector = state.injector.load();
            let mesh = state.mesh.borrow().clone();
            answer_review(&injector, &mesh, metrics, &review, uri.path())
        }),
        Err(e) => Err(e),
    };
    metrics.time.observe(started.elapsed().as_secs_f64());
    match answer {
        Ok(v) => {
            metrics.success.inc();
            axum::Json(v).into_response()
        }
        Err((status, message)) => {
            metrics.failure.inc();
            warn!(%status, %message, path = uri.path(), "rejecting injection request");
            (status, format!("{message}\n")).into_response()
        }
    }
}

/// The answer to an AdmissionReview (in its version); an error is a body that is not one.
pub fn answer_review(
    injector: &Injector,
    mesh: &MeshConfig,
    metrics: &Metrics,
    review: &Value,
    path: &str,
) -> Result<Value, HttpError> {
    let (api_version, request) = envelope(review)?;
    let uid = request
        .get("uid")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let mut response = match inject_request(injector, mesh, metrics, request, path) {
        Ok(Some(patch)) => {
            let bytes = serde_json::to_vec(&patch).unwrap_or_else(|_| b"[]".to_vec());
            json!({
                "allowed": true,
                "patch": base64::engine::general_purpose::STANDARD.encode(bytes),
                "patchType": "JSONPatch",
            })
        }
        Ok(None) => json!({"allowed": true}),
        Err(message) => {
            metrics.failure.inc();
            warn!(path, error = %message, "pod injection failed");
            json!({"allowed": false, "status": {"message": message}})
        }
    };
    response["uid"] = uid;
    Ok(json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The patch for the request's pod; `None` when the policy skips it. An error is the
/// message for the API server.
fn inject_request(
    injector: &Injector,
    mesh: &MeshConfig,
    metrics: &Metrics,
    request: &Value,
    path: &str,
) -> Result<Option<json_patch::Patch>, String> {
    let mut pod = request
        .get("object")
        .filter(|o| o.is_object())
        .cloned()
        .ok_or_else(|| "could not decode the pod: the request has no object".to_owned())?;
    if pod.get("metadata").is_some_and(|m| !m.is_object())
        || pod.get("spec").is_some_and(|s| !s.is_object())
    {
        return Err("could not decode the pod: metadata and spec must be objects".to_owned());
    }
    // Managed fields can be large and never matter to injection.
    let meta = inject::pod::top_mut(&mut pod, "metadata");
    meta.remove("managedFields");
    let namespace_missing = meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if namespace_missing {
        if let Some(ns) = request.get("namespace").and_then(Value::as_str) {
            meta.insert("namespace".to_owned(), Value::String(ns.to_owned()));
        }
    }
    let text = |k: &str| {
        pod["metadata"]
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (namespace, name) = (text("namespace"), text("name"));
    let name = if name.is_empty() {
        format!("{}***** (actual name not yet known)", text("generateName"))
    } else {
        name
    };
    let decision = injector.decide(&pod);
    if !decision.inject() {
        info!(pod = %format!("{namespace}/{name}"), ?decision, "skipping injection");
        metrics.skip.inc();
        return Ok(None);
    }
    debug!(pod = %format!("{namespace}/{name}"), path, "injecting");
    let injected = injector
        .inject(&pod, mesh, proxy_envs(path))
        .map_err(|e| e.to_string())?;
    Ok(Some(inject::patch(&pod, &injected)))
}

/// Proxy env vars from the webhook path: `/inject/k1/v1/k2/v2`, `cluster` and `net`
/// standing for the cluster and network variables and other keys upper-cased; `/` in a
/// value written `--slash--`. The older `/inject/:ENV:K=V:ENV:...` form too.
pub fn proxy_envs(path: &str) -> BTreeMap<String, String> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.splitn(3, '/').nth(2).unwrap_or("");
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(legacy) = rest.strip_prefix(":ENV:") {
        for pair in legacy.split(":ENV:") {
            if let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) {
                pairs.push((k.to_owned(), v.to_owned()));
            }
        }
    } else if !rest.is_empty() {
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() % 2 == 1 {
            warn!(
                key = parts[parts.len() - 1],
                "odd number of inject env entries; ignoring the last key"
            );
        }
        for kv in parts.chunks_exact(2) {
            pairs.push((kv[0].to_owned(), kv[1].replace("--slash--", "/")));
        }
    }
    pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let env = match k.as_str() {
                "cluster" => inject::CLUSTER_ENV.to_owned(),
                "net" => inject::NETWORK_ENV.to_owned(),
                other => other.to_uppercase(),
            };
            (!env.is_empty()).then_some((env, v))
        })
        .collect()
}
