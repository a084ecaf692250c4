//! `GET /v1/admin/actors` (`ops:read`): actor, saga and journal health as JSON (DESIGN.md §8),
//! the same figures the metrics and the operators' page show, plus the `http` section
//! (`request_stats.rs`) the page turns into request rates and latency percentiles.
//! `POST /v1/admin/actors/{kind}/{id}/release` (`ops:write`): an operator lifts a quarantine.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_actors::QuarantinedActor;
use tally_engine::{AccountId, ErrorCode, WalletId};

use crate::audit::{AdminChange, audited};
use crate::auth::caller::Authorized;
use crate::auth::permissions::{OpsRead, OpsWrite};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// How many of the worst actors the answer lists.
const WORST_ACTORS_MAX: usize = 20;

#[utoipa::path(
    get,
    path = "/v1/admin/actors",
    tag = "operations",
    responses((status = 200, description = "Actor, saga and journal health, the worst actors, `http`: requests by status and latency bucket since start, and `webhooks`: subscriptions, pending events, the oldest pending event's age and deliveries since start", body = Object)),
    security(("bearer" = []))
)]
pub async fn actors(_: Authorized<OpsRead>, State(state): State<AppState>) -> Result<ApiJson<Value>, ApiError> {
    state.engine()?;
    let report = state.health(WORST_ACTORS_MAX).ok_or_else(|| ApiError::internal("engine started but no health"))?;
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
            "dependency_waits": report.journal_dependency_waits,
        },
        "sagas": {
            "in_flight": report.sagas_in_flight,
            "completed": report.sagas_completed,
            "failed": report.sagas_failed,
            "compensated": report.sagas_compensated,
            "pending_expiries_scheduled": report.pending_expiries_scheduled,
        },
        "worst": worst,
        "http": crate::request_stats::report(),
        "webhooks": webhooks_json(&state).await,
    })))
}

/// The webhook figures (`webhooks::figures`); the page turns the counters into rates. `null`
/// figures from the store when it cannot be read, the counters still shown.
async fn webhooks_json(state: &AppState) -> Value {
    match crate::webhooks::figures(state).await {
        Some(figures) => json!({
            "subscriptions": figures.subscriptions_enabled,
            "subscriptions_disabled": figures.subscriptions_disabled,
            "pending": figures.pending_enabled,
            "pending_disabled": figures.pending_disabled,
            "oldest_pending_seconds": figures.oldest_pending_seconds,
            "delivered": figures.delivered,
            "failed": figures.failed,
            "dead": figures.dead,
        }),
        None => {
            let counters = crate::webhooks::counters();
            json!({
                "subscriptions": null, "subscriptions_disabled": null, "pending": null, "pending_disabled": null,
                "oldest_pending_seconds": null,
                "delivered": counters.0, "failed": counters.1, "dead": counters.2,
            })
        }
    }
}

/// Longest `{kind}` path segment echoed back in an error: the longest kind is 13 characters.
const KIND_ECHO_MAX: usize = 32;

/// Lifts the quarantine of one account or wallet actor: its next message is handled again
/// (an incarnation started while quarantined re-checks on its next command). `404` when the
/// actor is unknown or not quarantined, so a repeated release is `404` and changes nothing.
/// Sagas are not released here: a quarantined saga has already stopped, leaving its transfer
/// non-terminal for an admin's execute/cancel or the next start's recovery.
#[utoipa::path(
    post,
    path = "/v1/admin/actors/{kind}/{id}/release",
    tag = "operations",
    params(
        ("kind" = String, Path, description = "The actor kind: `account` or `wallet`"),
        ("id" = uuid::Uuid, Path, description = "The account or wallet id"),
    ),
    responses(
        (status = 204, description = "Released: the actor takes new work again"),
        (status = 404, description = "No such kind, or the actor is not quarantined"),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    admin: Authorized<OpsWrite>,
    State(state): State<AppState>,
    change: AdminChange,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    // A segment that is not UTF-8 after percent-decoding: problem+json like any bad input.
    let Path((kind, id)) =
        path.map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
    let engine = state.engine()?;
    let uuid = || uuid::Uuid::try_parse(&id).map_err(|_| ApiError::field("id", "must be a UUID"));
    let actor = match kind.as_str() {
        "account" => QuarantinedActor::Account(AccountId::from_uuid(uuid()?)),
        "wallet" => QuarantinedActor::Wallet(WalletId::from_uuid(uuid()?)),
        _ => {
            let shown: String = kind.chars().take(KIND_ECHO_MAX).collect();
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no releasable actor kind {shown:?}; kinds are account and wallet"),
            ));
        }
    };
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.clone()));
    if !engine.release_quarantine_audited(actor, entry).await? {
        return Err(ApiError::not_found("quarantined actor"));
    }
    tracing::warn!(kind = %kind, id = %id, "actor quarantine released by an operator");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}
