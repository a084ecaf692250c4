//! RFC 9457 problem details: the one shape of every error Tally answers with, and the one
//! place that maps engine errors to HTTP. Internal details are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_actors::registry::Unavailable;
use tally_actors::{EngineError, TransferError};
use tally_engine::ErrorCode;
use tally_persistence::StoreError;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, or "-" outside a request.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answer. Build it from an `ErrorCode`; the status follows the contract's table.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// For the few HTTP-level errors without a code of their own (405, 413, 415).
    pub status: Option<StatusCode>,
    pub retry_after_secs: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    code: &'static str,
    detail: &'a str,
    request_id: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        let retry_after_secs =
            matches!(code, ErrorCode::Overloaded | ErrorCode::Quarantined | ErrorCode::RateLimited).then_some(1);
        ApiError { code, detail: detail.into(), errors: Vec::new(), status: None, retry_after_secs }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        let mut error = ApiError::new(ErrorCode::ValidationError, format!("{field}: {message}"));
        error.errors.push(FieldError { field: field.to_owned(), message });
        error
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = Some(status);
        self
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// An internal failure: logged with its detail, answered without it.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(request_id = %request_id(), %detail, "internal error");
        ApiError::new(ErrorCode::Internal, "an internal error occurred; it has been logged")
    }

    fn status_code(&self) -> StatusCode {
        self.status
            .or_else(|| StatusCode::from_u16(self.code.http_status()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

impl ApiError {
    fn body(&self) -> Body<'_> {
        let status = self.status_code();
        let code = self.code.as_str();
        Body {
            kind: format!("https://tally.dev/problems/{}", code.to_ascii_lowercase().replace('_', "-")),
            title: title(status),
            status: status.as_u16(),
            code,
            detail: &self.detail,
            request_id: request_id(),
            errors: &self.errors,
        }
    }

    /// The status and problem object this error answers with, for a place that embeds one
    /// inside a larger answer (a batch item's `error`).
    pub fn to_problem(&self) -> (u16, serde_json::Value) {
        let body = self.body();
        (body.status, serde_json::to_value(&body).unwrap_or_default())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let bytes = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A `503` for a full queue, a quarantined actor or an unreachable store. Which one, and the
/// store's own message, are logged: they are internals, and a `5xx` never leaks internals.
fn unavailable(code: ErrorCode, detail: &Unavailable) -> ApiError {
    tracing::warn!(request_id = %request_id(), ?detail, "unavailable");
    let message = match detail {
        Unavailable::Quarantined => "the account is quarantined after repeated failures; retry later",
        Unavailable::Overloaded | Unavailable::Store(_) => "temporarily unavailable; retry later",
    };
    ApiError::new(code, message)
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Internal(detail) => ApiError::internal(detail),
            EngineError::Unavailable(ref detail) => unavailable(error.code(), detail),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl From<TransferError> for ApiError {
    fn from(error: TransferError) -> Self {
        match error {
            TransferError::Internal(detail) => ApiError::internal(detail),
            TransferError::Rejected(rejection) => ApiError::new(rejection.code(), rejection.to_string()),
            TransferError::Transition(rejection) => ApiError::new(rejection.code(), rejection.to_string()),
            TransferError::Unavailable(ref detail) => unavailable(error.code(), detail),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => unavailable(ErrorCode::Overloaded, &Unavailable::Store(detail)),
            StoreError::Corrupt(detail) => ApiError::internal(detail),
        }
    }
}

pub fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

pub fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::ValidationError, "method not allowed on this route")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use super::*;

    /// The top-level field names of a problem as `into_response` writes it, with every
    /// optional part present (the OpenAPI document's `Problem` must list exactly these).
    pub(crate) fn written_problem_fields() -> BTreeSet<String> {
        let response = ApiError::field("amount", "must be positive").into_response();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn a_field_error_is_written_with_every_problem_field() {
        let fields = written_problem_fields();
        for field in ["type", "title", "status", "code", "detail", "request_id", "errors"] {
            assert!(fields.contains(field), "{field} missing from {fields:?}");
        }
    }
}
