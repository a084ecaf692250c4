//! `ApiQuery`: axum's query-string extractor with every rejection answered as problem+json, as
//! `ApiJson` answers bad bodies: a parameter of the wrong type or a malformed query string is a
//! `400 VALIDATION_ERROR` naming what was wrong, never axum's plain-text answer.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tally_engine::ErrorCode;

use crate::problem::ApiError;

#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => {
                Err(ApiError::new(ErrorCode::ValidationError, format!("invalid query: {}", rejection.body_text())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Deserialize)]
    struct Page {
        limit: Option<u32>,
    }

    async fn answer(uri: &str) -> (StatusCode, String, serde_json::Value) {
        let app = Router::new()
            .route("/", get(|ApiQuery(page): ApiQuery<Page>| async move { page.limit.unwrap_or(50).to_string() }));
        let response = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, content_type, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn a_bad_query_string_is_a_problem_json_validation_error() {
        let (status, _, body) = answer("/?limit=7").await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!(7)));
        for uri in ["/?limit=abc", "/?limit=-1", "/?limit=99999999999"] {
            let (status, content_type, body) = answer(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(content_type, "application/problem+json", "{uri}");
            assert_eq!(body["code"], "VALIDATION_ERROR", "{uri}");
            assert!(body["detail"].as_str().unwrap().starts_with("invalid query: "), "{uri}: {body}");
        }
    }
}
