//! `GET /v1/admin/actors` (`ops:read`): actor, saga and journal health as JSON (DESIGN.md §8),
//! the same figures the metrics and the operators' page show.

use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::caller::Authorized;
use crate::auth::permissions::OpsRead;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// How many of the worst actors the answer lists.
const WORST_ACTORS_MAX: usize = 20;

#[utoipa::path(
    get,
    path = "/v1/admin/actors",
    tag = "operations",
    responses((status = 200, description = "Actor, saga and journal health", body = Object)),
    security(("bearer" = []))
)]
pub async fn actors(_: Authorized<OpsRead>, State(state): State<AppState>) -> Result<ApiJson<Value>, ApiError> {
    let report = state.engine()?.health(WORST_ACTORS_MAX);
    let kinds: Vec<Value> = report
        .kinds
        .iter()
        .map(|kind| {
            json!({
                "kind": kind.kind.as_str(),
                "active": kind.active,
                "activations": kind.activations,
                "passivations": kind.passivations,
                "restarts": kind.restarts,
                "quarantined": kind.quarantined,
                "mailbox_depth": kind.mailbox_depth,
                "mailbox_depth_max": kind.mailbox_depth_max,
                "handled": kind.handled,
                "handler_seconds_total": kind.handler_nanos as f64 / 1e9,
            })
        })
        .collect();
    let worst: Vec<Value> = report
        .worst
        .iter()
        .map(|actor| {
            json!({
                "kind": actor.kind.as_str(),
                "id": actor.id,
                "mailbox_depth": actor.mailbox_depth,
                "restarts": actor.restarts,
                "quarantined": actor.quarantined,
            })
        })
        .collect();
    Ok(ApiJson(json!({
        "kinds": kinds,
        "journal": {
            "depth": report.journal_depth,
            "committed_seq": report.journal_committed_seq,
            "last_flush_ms": report.journal_last_flush_micros as f64 / 1e3,
            "durable_lag_ms": report.journal_durable_lag_micros as f64 / 1e3,
            "flush_errors": report.journal_flush_errors,
        },
        "sagas": {
            "in_flight": report.sagas_in_flight,
            "completed": report.sagas_completed,
            "failed": report.sagas_failed,
            "compensated": report.sagas_compensated,
        },
        "worst": worst,
    })))
}
