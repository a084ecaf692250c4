//! Tally's HTTP API (axum). `app(state)` builds the router so tests can drive it in process.
//!
//! Architecture invariant: only this crate knows JSON and HTTP. It maps engine rejections to
//! `application/problem+json` in one place (`problem.rs`).

pub mod problem;

use axum::Router;
use axum::routing::get;

/// What every handler can reach. Grows with the API (engine, auth keys, settings).
#[derive(Clone, Debug, Default)]
pub struct AppState {}

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}

async fn live() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}
