//! RFC 9457 problem details: the one shape of every error Tally answers with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_engine::ErrorCode;

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://tally.dev/problems/{}", code.as_str().to_ascii_lowercase().replace('_', "-")),
            title: title(code),
            status: code.http_status(),
            code: code.as_str(),
            detail: detail.into(),
        }
    }
}

fn title(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "Not found",
        ErrorCode::ValidationError => "Invalid request",
        ErrorCode::Overloaded => "Service overloaded",
        ErrorCode::Internal => "Internal error",
        _ => "Request refused",
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

pub async fn not_found() -> Problem {
    Problem::new(ErrorCode::NotFound, "no such route")
}

pub async fn method_not_allowed() -> Response {
    let mut problem = Problem::new(ErrorCode::ValidationError, "method not allowed on this route");
    problem.status = 405;
    problem.title = "Method not allowed";
    problem.into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use crate::{AppState, app};

    async fn send(method: &str, uri: &str) -> (u16, String, serde_json::Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app(AppState::default()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn live_answers_ok() {
        let (status, _, body) = send("GET", "/health/live").await;
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn unknown_routes_and_wrong_methods_are_problem_json() {
        let (status, content_type, body) = send("GET", "/nope").await;
        assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));
        assert_eq!(body["code"], "NOT_FOUND");
        let (status, content_type, body) = send("POST", "/health/live").await;
        assert_eq!((status, content_type.as_str()), (405, "application/problem+json"));
        assert_eq!(body["status"], 405);
    }
}
