//! `/v1/accounts`: a customer opens, lists and reads their own accounts.
//!
//! Another user's account answers `404 NOT_FOUND`, exactly as an account that does not exist:
//! account ids are the handles for sending money, and a `403` would confirm to a prober that
//! an id is live.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_actors::{Engine, EngineError};
use tally_engine::{Account, AccountId, Currency, ErrorCode, UserId};

use crate::auth::Caller;
use crate::auth::api_keys::{AccountsRead, Scoped};
use crate::auth::stepup::{AccountsOpen, StepUp};
use crate::input::{self, IdPath};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::AccountView;

/// Accounts one user may hold. A person needs one per currency and a few more; the bound
/// keeps `GET /v1/accounts` one unpaginated answer of at most this many actor reads.
pub const ACCOUNTS_PER_USER_MAX: u64 = 64;

/// Accounts listed at most. The per-user bound is checked before opening, so two opens racing
/// can pass it together; this margin still lists every account in that case.
pub const ACCOUNTS_LISTED_MAX: u32 = 256;

/// A `201 Created` with the new resource's `Location`.
pub fn created(location: String, body: impl Serialize) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Refuses to open more than `ACCOUNTS_PER_USER_MAX` accounts for `owner`.
pub async fn check_account_quota(state: &AppState, owner: UserId) -> Result<(), ApiError> {
    let held = state.identity().reads.count_accounts_of_owner(owner).await?;
    if held >= ACCOUNTS_PER_USER_MAX {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a user may hold at most {ACCOUNTS_PER_USER_MAX} accounts"),
        ));
    }
    Ok(())
}

/// The account if it exists and `owner` owns it; `404` otherwise, whichever it is.
pub async fn owned_account(engine: &Engine, id: AccountId, owner: UserId, what: &str) -> Result<Account, ApiError> {
    match engine.account(id).await {
        Ok(account) if account.owner == Some(owner) => Ok(account),
        Ok(_) | Err(EngineError::NotFound) => Err(ApiError::not_found(what)),
        Err(other) => Err(other.into()),
    }
}

/// The currency of account `id` if `owner` owns it, else `404` naming `what`, as
/// `owned_account` answers; from the engine's memory of what never changes about an account,
/// so a transfer or a quote does not ask the account's actor (a mailbox round trip, often to
/// the other thread) just to learn its owner.
pub async fn owned_account_currency(
    engine: &Engine,
    id: AccountId,
    owner: UserId,
    what: &str,
) -> Result<Currency, ApiError> {
    match engine.account_facts(id).await {
        Ok(facts) if facts.owner == Some(owner) => Ok(facts.currency),
        Ok(_) | Err(EngineError::NotFound) => Err(ApiError::not_found(what)),
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: String,
}

/// `POST /v1/accounts {currency}` → `201 account`, empty and active, no credit limit.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body = OpenAccountBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)")),
    responses((status = 201, body = AccountView)),
    security(("bearer" = []))
)]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    _step_up: StepUp<AccountsOpen>,
    ApiJson(body): ApiJson<OpenAccountBody>,
) -> Result<Response, ApiError> {
    let currency = input::currency("currency", &body.currency)?;
    let engine = state.engine()?;
    check_account_quota(&state, caller.user_id).await?;
    let account = engine.open_account(caller.user_id, currency, Decimal::ZERO).await?;
    Ok(created(format!("/v1/accounts/{}", account.id), AccountView::of(&account)?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountList {
    items: Vec<AccountView>,
}

/// `GET /v1/accounts` → `{items: [account]}`, oldest first, with live balances (each read
/// from its actor, not from the write-behind snapshot).
#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    responses((status = 200, body = AccountList)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
) -> Result<axum::Json<AccountList>, ApiError> {
    let engine = state.engine()?;
    let ids = state.identity().reads.account_ids_of_owner(caller.user_id, ACCOUNTS_LISTED_MAX).await?;
    let accounts = futures::future::join_all(ids.into_iter().map(|id| engine.account(id))).await;
    let mut items = Vec::with_capacity(accounts.len());
    for account in accounts {
        items.push(AccountView::of(&account?)?);
    }
    Ok(axum::Json(AccountList { items }))
}

/// `GET /v1/accounts/{id}` → the caller's account, or `404`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "The account id")),
    responses((status = 200, body = AccountView)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AccountView>, ApiError> {
    let engine = state.engine()?;
    let account = owned_account(engine, AccountId::from_uuid(id), caller.user_id, "account").await?;
    Ok(axum::Json(AccountView::of(&account)?))
}
