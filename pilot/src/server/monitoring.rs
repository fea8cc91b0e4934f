//! `/metrics` in Prometheus text format and `/version`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// The `/metrics` and `/version` routes.
pub fn routes(registry: Arc<Mutex<Registry>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/version", get(|| async { crate::version::build_info() }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Mutex<Registry>>>) -> impl IntoResponse {
    let mut text = String::new();
    let encoded = {
        let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
    };
    if encoded.is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n".to_owned(),
        )
            .into_response();
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        prometheus_text(&text),
    )
        .into_response()
}

/// Rewrites OpenMetrics output into the Prometheus text format upstream istiod serves:
/// counters keep their registered name (no `_total` added) and there is no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
            out.push_str(line);
        } else if let Some(name) = counters.iter().find(|n| {
            line.strip_prefix(**n)
                .is_some_and(|r| r.starts_with("_total"))
        }) {
            out.push_str(name);
            out.push_str(&line[name.len() + "_total".len()..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn counters_keep_upstream_names() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        c.inc();
        r.register("pilot_xds_expired_nonce", "h", c.clone());
        let req: Counter = Counter::default();
        r.register("sidecar_injection_requests_total", "h", req);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let out = prometheus_text(&text);
        assert!(out.contains("\npilot_xds_expired_nonce 1\n"), "{out}");
        assert!(
            out.contains("\nsidecar_injection_requests_total 0\n"),
            "{out}"
        );
        assert!(!out.contains("# EOF"));
    }
}
