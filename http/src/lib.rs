//! Tally's HTTP API (axum). `app(state)` builds the router so tests can drive it in process
//! with `tower::ServiceExt::oneshot`; `tally serve` runs the same router on a socket.
//!
//! Architecture invariant: only this crate knows JSON and HTTP. Engine errors become
//! `application/problem+json` in one place (`problem.rs`); bad input never reaches a handler
//! (`json.rs`).

pub mod health;
pub mod json;
pub mod problem;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
pub use state::AppState;

/// Largest request body. A batch of 8,190 transfers at ~400 bytes each is ~3.3 MB; nothing
/// else comes close. Larger bodies get `413` before they are read.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Requests served at once. Beyond it requests wait in the listener's backlog: two cores
/// gain nothing from more concurrency, and memory stays bounded.
pub const CONCURRENT_REQUESTS_MAX: usize = 4_096;

/// A request that takes longer than this gets `503`: a saga still finishes, and the client
/// retries with its idempotency key.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(timeout))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(CONCURRENT_REQUESTS_MAX))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives each request an id (or keeps the client's `X-Request-Id`), makes it available to
/// error answers and logs, echoes it in the response, and logs one line per request.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 64)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut response = problem::REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    tracing::info!(
        request_id = %id,
        %method,
        path = %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(problem::ApiError::new(
            tally_engine::ErrorCode::Overloaded,
            "the request timed out; retry with the same Idempotency-Key",
        )),
    }
}
