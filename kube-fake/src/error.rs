//! API errors, answered as `Status` objects as the real server does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An API error: the HTTP status, the `Status` reason and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {reason}: {message}", code.as_u16())]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} not found"),
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// The `Status` object the server answers with.
    pub fn status(&self) -> Value {
        status(self.code.as_u16(), self.reason, &self.message)
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A failure for a handler to answer with: `failure(403, "Forbidden", "cannot patch")`.
pub fn failure(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (code, status(code, reason, message))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.status())).into_response()
    }
}
