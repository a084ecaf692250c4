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
            Err(rejection) => Err(field_error::<T>(parts.uri.query().unwrap_or_default()).unwrap_or_else(|| {
                ApiError::new(ErrorCode::ValidationError, format!("invalid query: {}", rejection.body_text()))
            })),
        }
    }
}

/// The refused query read again with its parameters' names tracked: the error names the
/// parameter (`errors: [{field: "limit", …}]`), as a body's field error does.
fn field_error<T: DeserializeOwned>(query: &str) -> Option<ApiError> {
    let parameters = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let error = serde_path_to_error::deserialize::<_, T>(parameters).err()?;
    let message = format!("invalid query: {}", error.inner());
    let mut answer = crate::json::field_error_at(&error.path().to_string(), &error.inner().to_string(), "query");
    answer.detail = message;
    Some(answer)
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
            assert_eq!(body["errors"][0]["field"], "limit", "the parameter is named: {uri}: {body}");
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        limit: u32,
    }

    #[tokio::test]
    async fn a_missing_or_unknown_parameter_is_named() {
        let app =
            Router::new().route("/", get(|ApiQuery(page): ApiQuery<Strict>| async move { page.limit.to_string() }));
        for (uri, field) in [("/", "limit"), ("/?limit=1&bogus=2", "bogus")] {
            let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["errors"][0]["field"], field, "{uri}: {body}");
        }
    }
}
