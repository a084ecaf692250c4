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
