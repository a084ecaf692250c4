//! `/health/live` and `/health/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "The process runs", body = Object, example = json!({"status": "ok"})))
)]
pub async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// 200 once recovery is done and the store answers; 503 otherwise, saying which.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses((status = 200, description = "Recovered and the store answers", body = Object, example = json!({"status": "ready"})), (status = 503, description = "Recovering or the store is unreachable", body = Object, example = json!({"status": "not_ready", "reason": "recovering"})))
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let Some(engine) = state.engine_if_started() else {
        return not_ready("recovering");
    };
    if !engine.is_ready() {
        return not_ready("recovering");
    }
    match state.store().committed_seqs().await {
        Ok(_) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(_) => not_ready("store_unavailable"),
    }
}

fn not_ready(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not_ready", "reason": reason})))
        .into_response()
}
