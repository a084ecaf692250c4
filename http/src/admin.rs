//! `/v1/admin/*`: adjustments, pending-transfer review, and account administration. Each
//! route names its permission in its signature (`Authorized<P>`), so an admin without it is
//! refused with `403 FORBIDDEN` before the body is read.
//!
//! Admins see every account and transfer: a missing one is a plain `404`. Reasons given for
//! an action go to the log (`target: "audit"`); an audit table comes with the admin user
//! management slice.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_actors::{EngineError, PendingDecision, TransferError};
use tally_engine::money::with_currency_scale;
use tally_engine::system_accounts::{is_system_account, settlement};
use tally_engine::{AccountId, StatusAction, TransferId, TransferKind, TransferRequest, TransitionRejection, UserId};

use crate::accounts::{check_account_quota, created};
use crate::audit::{AdminChange, audited};
use crate::auth::Authorized;
use crate::auth::permissions::{
    AccountsClose, AccountsRead, AccountsWrite, TransfersAdjust, TransfersCancel, TransfersExecute, TransfersRead,
    TransfersReject,
};
use crate::auth::stepup::{self, StepUp};
use crate::input::{self, DESCRIPTION_LENGTH_MAX, IdPath, OptionalJson, REFERENCE_LENGTH_MAX};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::transfers::{ReasonBody, body_id, idempotency, run_transfer_audited, transfer_answer_at};
use crate::views::{AccountView, AdminAccountView, AdminTransferView};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = Uuid)]
    pub account_id: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("125.50"))]
    pub amount: String,
    /// Why the money is moved; required, it is the adjustment's audit trail.
    pub purpose: String,
    pub reference: Option<String>,
}

/// `POST /v1/admin/adjustments` (`transfers:adjust`) → `201 transfer`: an `admin_credit`
/// moves money from the settlement account of the account's currency into the account, an
/// `admin_debit` the other way. Built here rather than with `Engine::adjust` so that it goes
/// through `run_transfer` and honours `Idempotency-Key` like every money-moving POST.
#[utoipa::path(
    post,
    path = "/v1/admin/adjustments",
    tag = "admin",
    request_body = AdjustmentBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer as the first time; a different body is 409 IDEMPOTENCY_KEY_REUSED. A 503 that moved no money keeps no key: a retry under it runs afresh")),
    responses((status = 201, body = crate::views::TransferView)),
    security(("bearer" = []))
)]
pub async fn adjust(
    State(state): State<AppState>,
    admin: Authorized<TransfersAdjust>,
    _step_up: StepUp<stepup::AdjustmentsCreate>,
    change: AdminChange,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let kind = match body.kind.as_str() {
        "admin_credit" => TransferKind::AdminCredit,
        "admin_debit" => TransferKind::AdminDebit,
        _ => return Err(ApiError::field("type", "must be \"admin_credit\" or \"admin_debit\"")),
    };
    let account_id = AccountId::from_uuid(body_id("account_id", &body.account_id)?);
    if is_system_account(account_id) {
        return Err(ApiError::field("account_id", "must be a customer account"));
    }
    let purpose = input::required_text("purpose", &body.purpose, DESCRIPTION_LENGTH_MAX)?;
    let reference = input::text("reference", body.reference.as_deref(), REFERENCE_LENGTH_MAX)?;
    let engine = state.engine()?;
    let account = match engine.account(account_id).await {
        Ok(account) => account,
        Err(EngineError::NotFound) => return Err(ApiError::not_found("account")),
        Err(other) => return Err(other.into()),
    };
    let currency = account.currency;
    let amount = input::amount("amount", &body.amount, currency)?;
    let (source, destination) = match kind {
        TransferKind::AdminCredit => (settlement(currency), account_id),
        _ => (account_id, settlement(currency)),
    };
    let now = engine.now();
    let request = TransferRequest {
        id: engine.new_transfer_id_at(now),
        kind,
        source,
        destination,
        amount,
        currency,
        fee: with_currency_scale(rust_decimal::Decimal::ZERO, currency),
        reference: reference.map(Into::into),
        description: Some(purpose.into()),
        beneficiary: None,
        initiated_by: Some(admin.admin_id()),
        created_at: now,
        // Metadata is the customer's (API.md: create and batch items); adjustments have none.
        metadata: tally_engine::Metadata::none(),
    };
    let key = idempotency(&headers, admin.admin_id(), "POST /v1/admin/adjustments", &request)?;
    // Committed with the transfer's outcome; no status, which is that outcome's (201 or 202).
    let entry = change.record(state.identity(), admin.admin_id(), None, Some(request.id.to_string()));
    let (transfer, replayed) = run_transfer_audited(&state, request, key, Some(entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), transfer = %transfer.id, kind = kind.as_str(), account = %account_id, "adjustment");
    transfer_answer_at("/v1/admin/transfers", &transfer, replayed).map(audited)
}

/// `GET /v1/admin/transfers/{id}` (`transfers:read`) → the transfer with its admin fields.
#[utoipa::path(
    get,
    path = "/v1/admin/transfers/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses((status = 200, body = AdminTransferView)),
    security(("bearer" = []))
)]
pub async fn get_transfer(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AdminTransferView>, ApiError> {
    let engine = state.engine()?;
    let transfer =
        engine.load_transfer(TransferId::from_uuid(id)).await?.ok_or_else(|| ApiError::not_found("transfer"))?;
    Ok(axum::Json(AdminTransferView::of(&transfer)?))
}

/// Admin review answers `409 NOT_PENDING` for a transfer that is not pending, whichever
/// action was asked (the engine's cancel says `NOT_CANCELLABLE`, the customer's word).
fn not_pending(error: TransferError) -> ApiError {
    match error {
        TransferError::Transition(TransitionRejection::NotCancellable { status }) => {
            ApiError::from(TransferError::Transition(TransitionRejection::NotPending { status }))
        }
        other => ApiError::from(other),
    }
}

/// `POST /v1/admin/transfers/{id}/execute` (`transfers:execute`) → `204` once the saga has
/// completed the transfer; `409 NOT_PENDING` if it was not pending (an `expired` one too; one past
/// its `pending_expires_at` expires then and is refused the same way: the deadline decides).
#[utoipa::path(
    post,
    path = "/v1/admin/transfers/{id}/execute",
    tag = "admin",
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses(
        (status = 204, description = "Executed; the transfer completed"),
        (status = 503, description = "Not executed, and nothing changed: the destination's actor is quarantined (QUARANTINED) or the engine is overloaded. The transfer stays pending with its hold; execute it again later, or reject it")
    ),
    security(("bearer" = []))
)]
pub async fn execute(
    State(state): State<AppState>,
    admin: Authorized<TransfersExecute>,
    _step_up: StepUp<stepup::TransfersExecute>,
    change: AdminChange,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    // No `status` in the entry: it is committed with the outcome, `completed` (`204`) or, when
    // the destination refuses the credit, `failed` (the transfer's state says which).
    let entry = change.record(state.identity(), admin.admin_id(), None, Some(id.to_string()));
    let transfer = engine
        .decide_pending_audited(TransferId::from_uuid(id), PendingDecision::Execute, entry)
        .await
        .map_err(not_pending)?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), transfer = %transfer.id, status = transfer.status.as_str(), "transfer executed");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/admin/transfers/{id}/reject {reason?}` (`transfers:reject`) → `204`, the hold
/// released.
#[utoipa::path(
    post,
    path = "/v1/admin/transfers/{id}/reject",
    tag = "admin",
    request_body = Option<ReasonBody>,
    params(("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses((status = 204, description = "Rejected; the hold is released")),
    security(("bearer" = []))
)]
pub async fn reject(
    State(state): State<AppState>,
    admin: Authorized<TransfersReject>,
    change: AdminChange,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let reason = input::text("reason", body.as_ref().and_then(|body| body.reason.as_deref()), DESCRIPTION_LENGTH_MAX)?;
    let engine = state.engine()?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    let transfer = engine
        .decide_pending_audited(TransferId::from_uuid(id), PendingDecision::Reject, entry)
        .await
        .map_err(not_pending)?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), transfer = %transfer.id, reason = reason.as_deref().unwrap_or(""), "transfer rejected");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/admin/transfers/{id}/cancel {reason?}` (`transfers:cancel`) → `204`, the hold
/// released.
#[utoipa::path(
    post,
    path = "/v1/admin/transfers/{id}/cancel",
    tag = "admin",
    request_body = Option<ReasonBody>,
    params(("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses((status = 204, description = "Cancelled; the hold is released")),
    security(("bearer" = []))
)]
pub async fn cancel_transfer(
    State(state): State<AppState>,
    admin: Authorized<TransfersCancel>,
    change: AdminChange,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let reason = input::text("reason", body.as_ref().and_then(|body| body.reason.as_deref()), DESCRIPTION_LENGTH_MAX)?;
    let engine = state.engine()?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    let transfer = engine
        .decide_pending_audited(TransferId::from_uuid(id), PendingDecision::Cancel, entry)
        .await
        .map_err(not_pending)?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), transfer = %transfer.id, reason = reason.as_deref().unwrap_or(""), "transfer cancelled by an admin");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AdminOpenAccountBody)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    #[schema(format = Uuid)]
    pub user_id: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("125.50"))]
    pub credit_limit: Option<String>,
}

/// `POST /v1/admin/accounts {user_id, currency, credit_limit?}` (`accounts:write`) →
/// `201 account` for an existing user.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts",
    tag = "admin",
    request_body = OpenAccountBody,
    responses((status = 201, body = AccountView)),
    security(("bearer" = []))
)]
pub async fn open_account(
    State(state): State<AppState>,
    admin: Authorized<AccountsWrite>,
    change: AdminChange,
    ApiJson(body): ApiJson<OpenAccountBody>,
) -> Result<Response, ApiError> {
    let owner = UserId::from_uuid(body_id("user_id", &body.user_id)?);
    let currency = input::currency("currency", &body.currency)?;
    let credit_limit = match body.credit_limit.as_deref() {
        Some(text) => input::credit_limit("credit_limit", text, currency)?,
        None => with_currency_scale(rust_decimal::Decimal::ZERO, currency),
    };
    let engine = state.engine()?;
    if state.identity().users.user_by_id(owner).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    check_account_quota(&state, owner).await?;
    // The engine names the target: the account's id is chosen there.
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::CREATED), None);
    let account = engine.open_account_audited(owner, currency, credit_limit, Some(entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), account = %account.id, user = %owner, "account opened by an admin");
    Ok(audited(created(format!("/v1/admin/accounts/{}", account.id), AccountView::of(&account)?)))
}

/// `GET /v1/admin/accounts/{id}` (`accounts:read`) → the account with its holds and AML flags.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The account id")),
    responses((status = 200, body = AdminAccountView)),
    security(("bearer" = []))
)]
pub async fn get_account(
    State(state): State<AppState>,
    _admin: Authorized<AccountsRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AdminAccountView>, ApiError> {
    let engine = state.engine()?;
    let account = match engine.account(AccountId::from_uuid(id)).await {
        Ok(account) => account,
        Err(EngineError::NotFound) => return Err(ApiError::not_found("account")),
        Err(other) => return Err(other.into()),
    };
    let mut view = AdminAccountView::of(&account)?;
    view.aml_flags = crate::aml::account_flags(&state, account.id).await?;
    Ok(axum::Json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub action: String,
    pub reason: String,
}

/// `POST /v1/admin/accounts/{id}/status {action, reason}` (`accounts:close`) → `204`.
/// Closing an account with a balance or holds is `409 ACCOUNT_NOT_EMPTY`; a closed account is
/// final (`409 CONFLICT`); system accounts cannot be blocked or closed (`403`).
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/status",
    tag = "admin",
    request_body = StatusBody,
    params(("id" = uuid::Uuid, Path, description = "The account id")),
    responses((status = 204, description = "Status changed")),
    security(("bearer" = []))
)]
pub async fn set_account_status(
    State(state): State<AppState>,
    admin: Authorized<AccountsClose>,
    change: AdminChange,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    let action = match body.action.as_str() {
        "block" => StatusAction::Block,
        "unblock" => StatusAction::Unblock,
        "close" => StatusAction::Close,
        _ => return Err(ApiError::field("action", "must be \"block\", \"unblock\" or \"close\"")),
    };
    let reason = input::required_text("reason", &body.reason, DESCRIPTION_LENGTH_MAX)?;
    let engine = state.engine()?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    let account = match engine.set_account_status_audited(AccountId::from_uuid(id), action, Some(entry)).await {
        Ok(account) => account,
        Err(EngineError::NotFound) => return Err(ApiError::not_found("account")),
        Err(other) => return Err(other.into()),
    };
    tracing::info!(target: "audit", admin = %admin.admin_id(), account = %account.id, action = body.action.as_str(), status = account.status.as_str(), reason = reason.as_str(), "account status set");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}
