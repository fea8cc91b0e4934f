//! The admission webhooks (`--httpsAddr`, 15017): `POST /validate` and `/validate/...`
//! take `admission.k8s.io/v1` and `v1beta1` AdmissionReviews and answer in the request's
//! version, `/inject` ([`inject`]) when the injector's config is present, and `/ready`.
//! Served over TLS with istiod's certificate.

pub mod inject;
#[cfg(test)]
mod tests;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::LengthLimitError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, info, warn};

use crate::metrics::Label;
use crate::validation::{self, Error as ValidationError};

/// Largest AdmissionReview accepted, as upstream (`MaxRequestBodyBytes`): twice the API
/// server's limit on an object, which is twice etcd's.
pub const MAX_BODY: usize = 6 * 1024 * 1024;

const API_VERSIONS: &[&str] = &["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Why a review was denied or skipped, as `galley_validation_failed{reason}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnsupportedOperation,
    YamlDecodeError,
    UnknownType,
    CrdConversionError,
    InvalidResource,
}

impl Reason {
    const fn label(self) -> Label {
        match self {
            Reason::UnsupportedOperation => Label::new("unsupported_operation"),
            Reason::YamlDecodeError => Label::new("yaml_decode_error"),
            Reason::UnknownType => Label::new("unknown_type"),
            Reason::CrdConversionError => Label::new("crd_conversion_error"),
            Reason::InvalidResource => Label::new("invalid_resource"),
        }
    }
}

/// The resource a review names, as labels: a validated kind's group, served version and
/// plural, or `other` for all three when the review names anything else.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    group: Label,
    version: Label,
    resource: Label,
}

impl ResourceLabels {
    fn of(group: &str, version: &str, resource: &str) -> Self {
        match validation::served_resource(group, version, resource) {
            Some(r) => ResourceLabels {
                group: Label::from_static(r.group),
                version: Label::from_static(r.version),
                resource: Label::from_static(r.resource),
            },
            None => ResourceLabels {
                group: Label::OTHER,
                version: Label::OTHER,
                resource: Label::OTHER,
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    group: Label,
    version: Label,
    resource: Label,
    reason: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The webhook's metrics, with upstream's names.
#[derive(Clone, Default)]
pub struct Metrics {
    passed: Family<ResourceLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    http_error: Family<StatusLabels, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "galley_validation_passed",
            "Resource is valid",
            m.passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Resource validation failed",
            m.failed.clone(),
        );
        registry.register(
            "galley_validation_http_error",
            "Resource validation http serve errors",
            m.http_error.clone(),
        );
        m
    }

    fn passed(&self, r: &ResourceLabels) {
        self.passed.get_or_create(r).inc();
    }

    fn failed(&self, r: &ResourceLabels, reason: Reason) {
        self.failed
            .get_or_create(&FailedLabels {
                group: r.group,
                version: r.version,
                resource: r.resource,
                reason: reason.label(),
            })
            .inc();
    }

    fn http_error(&self, status: StatusCode) {
        self.http_error
            .get_or_create(&StatusLabels {
                status: status.as_u16(),
            })
            .inc();
    }
}

/// The webhook's routes: `/validate`, `/validate/...` and `/ready`.
pub fn routes(metrics: Metrics) -> Router {
    Router::new()
        .route("/validate", post(validate_handler))
        .route("/validate/", post(validate_handler))
        .route("/validate/{*rest}", post(validate_handler))
        .route("/ready", get(|| async { "ready\n" }))
        // A declared length over the limit is refused (413) before any of the body is read;
        // a body without one is cut off at the limit as it is read.
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(metrics)
}

async fn validate_handler(
    State(metrics): State<Metrics>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match review(&metrics, &headers, body).await {
        Ok(v) => axum::Json(v).into_response(),
        Err((status, message)) => {
            metrics.http_error(status);
            warn!(%status, %message, "rejecting admission request");
            (status, format!("{message}\n")).into_response()
        }
    }
}

/// An HTTP status and message for a body that is not an AdmissionReview.
pub type HttpError = (StatusCode, String);

async fn review(metrics: &Metrics, headers: &HeaderMap, body: Body) -> Result<Value, HttpError> {
    let bytes = read_json_body(headers, body).await?;
    admit_body(metrics, &bytes)
}

/// The body of a request that must be JSON, read up to [`MAX_BODY`].
async fn read_json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("contentType={content_type:?}, expect application/json"),
        ));
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        if is_too_large(&e) {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body too large: the limit is {MAX_BODY} bytes"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
    })
}

/// A request body as JSON; empty or not JSON is a client error.
fn decode_body(body: &[u8]) -> Result<Value, HttpError> {
    if body.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "no body found".to_owned()));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("could not decode body: not JSON: {e}"),
        )
    })
}

/// The apiVersion and request of an AdmissionReview; an error is a body that is not one.
fn envelope(review: &Value) -> Result<(&str, &Value), HttpError> {
    let not_review = |what: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "could not decode body: not an AdmissionReview ({what}); expected apiVersion admission.k8s.io/v1 or v1beta1 and kind AdmissionReview"
            ),
        )
    };
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| not_review("no apiVersion"))?;
    if !API_VERSIONS.contains(&api_version) {
        return Err(not_review(&format!("apiVersion {api_version:?}")));
    }
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(not_review("kind is not AdmissionReview"));
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| not_review("no request"))?;
    Ok((api_version, request))
}

/// Answers a request body: decodes the AdmissionReview and validates its object.
pub fn admit_body(metrics: &Metrics, body: &[u8]) -> Result<Value, HttpError> {
    admit_review(metrics, &decode_body(body)?)
}

/// True when reading a body failed because it passed [`MAX_BODY`].
fn is_too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Answers a decoded AdmissionReview; an error is a body that is not one.
pub fn admit_review(metrics: &Metrics, review: &Value) -> Result<Value, HttpError> {
    let (api_version, request) = envelope(review)?;
    let uid = request
        .get("uid")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let response = admit(metrics, request);
    let mut out = json!({"uid": uid, "allowed": response.allowed});
    if let Some(message) = &response.message {
        out["status"] = json!({"message": message});
    }
    if !response.warnings.is_empty() {
        out["warnings"] = json!(response.warnings);
    }
    Ok(json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": out,
    }))
}

/// The decision on one admission request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub message: Option<String>,
    pub warnings: Vec<String>,
}

fn deny(metrics: &Metrics, labels: &ResourceLabels, reason: Reason, message: String) -> Decision {
    metrics.failed(labels, reason);
    Decision {
        allowed: false,
        message: Some(message),
        warnings: Vec::new(),
    }
}

/// Validates the object of a CREATE or UPDATE; other operations are allowed.
pub fn admit(metrics: &Metrics, request: &Value) -> Decision {
    let text = |v: Option<&Value>, k: &str| {
        v.and_then(|x| x.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let resource = request.get("resource");
    let labels = ResourceLabels::of(
        &text(resource, "group"),
        &text(resource, "version"),
        &text(resource, "resource"),
    );
    let operation = text(Some(request), "operation");
    let dry_run = request
        .get("dryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !matches!(operation.as_str(), "CREATE" | "UPDATE") {
        debug!(%operation, dry_run, "operation not validated; allowing");
        metrics.failed(&labels, Reason::UnsupportedOperation);
        return Decision {
            allowed: true,
            ..Decision::default()
        };
    }
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return deny(
            metrics,
            &labels,
            Reason::YamlDecodeError,
            "cannot decode configuration: request has no object".to_owned(),
        );
    };
    let outcome = match validation::validate(object) {
        Ok(o) => o,
        Err(e @ (ValidationError::UnknownKind { .. } | ValidationError::UnknownVersion { .. })) => {
            return deny(metrics, &labels, Reason::UnknownType, e.to_string());
        }
        Err(e) => {
            return deny(
                metrics,
                &labels,
                Reason::YamlDecodeError,
                format!("cannot decode configuration: {e}"),
            );
        }
    };
    let report = &outcome.report;
    if !report.is_valid() {
        info!(
            kind = %outcome.kind, namespace = %outcome.namespace, name = %outcome.name, dry_run,
            error = %report.error_message(), "configuration is invalid"
        );
        let mut d = deny(
            metrics,
            &labels,
            Reason::InvalidResource,
            format!("configuration is invalid: {}", report.error_message()),
        );
        d.warnings = report.warning_messages();
        return d;
    }
    metrics.passed(&labels);
    Decision {
        allowed: true,
        message: None,
        warnings: report.warning_messages(),
    }
}
