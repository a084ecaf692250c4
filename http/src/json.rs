//! `ApiJson`: axum's JSON extractor with every rejection answered as problem+json (malformed
//! JSON, a missing or wrong content type, a body over the limit, a field of the wrong type).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_engine::ErrorCode;

use crate::problem::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

fn reject(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::ValidationError, "expected Content-Type: application/json")
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::new(ErrorCode::ValidationError, format!("malformed JSON: {}", error.body_text()))
        }
        JsonRejection::JsonDataError(error) => {
            ApiError::new(ErrorCode::ValidationError, format!("invalid body: {}", error.body_text()))
        }
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::ValidationError, "request body too large")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        other => ApiError::new(ErrorCode::ValidationError, other.body_text()).with_status(other.status()),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// JSON written by hand where serde's general path showed in profiles (`TransferView::json`,
/// the idempotency fingerprint): each writer is tested to give serde_json's bytes.
pub mod write {
    /// A member's name and colon, after a comma unless it is the object's first.
    pub fn field(out: &mut String, name: &str) {
        if !out.ends_with('{') {
            out.push(',');
        }
        plain(out, name);
        out.push(':');
    }

    /// A JSON string of text that needs no escaping (ids, codes, amounts, times).
    pub fn plain(out: &mut String, text: &str) {
        debug_assert!(!text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'), "{text:?} needs escaping");
        out.push('"');
        out.push_str(text);
        out.push('"');
    }

    /// A JSON string of a client's text, escaped as serde_json escapes it.
    pub fn text(out: &mut String, text: &str) {
        // Serializing a `str` cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }

    pub fn option<'a>(out: &mut String, value: Option<&'a str>, push: fn(&mut String, &'a str)) {
        match value {
            Some(text) => push(out, text),
            None => out.push_str("null"),
        }
    }

    pub fn uuid(out: &mut String, id: uuid::Uuid) {
        plain(out, id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    }
}
