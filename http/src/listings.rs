//! Paginated listings: `GET /v1/transfers` (the caller's), `GET /v1/admin/transfers` and
//! `/count`, `GET /v1/admin/accounts` and `/count`.
//!
//! The read model (`tally_persistence::reads::listing`) finds the ids of a page, newest first;
//! each row is then read live (a transfer from the journal or store, an account from its
//! actor), so a listed balance or status is never staler than `GET` of the same resource.
//! The filters themselves (`status`, ...) apply to the durable rows, which every transfer and
//! account reaches before its creator hears of it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_actors::Engine;
use tally_engine::{AccountStatus, ErrorCode, Transfer, TransferId, TransferStatus};
use tally_persistence::reads::listing::{AccountFilter, Order, TransferFilter};

use crate::auth::Authorized;
use crate::auth::api_keys::Scoped;
use crate::auth::permissions::{AccountsRead, TransfersRead};
use crate::input;
use crate::pagination::{self, parse_position_cursor, position_cursor};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{AccountView, AdminTransferView, TransferView};

/// Longest `search` text: an email is at most 254 characters.
const SEARCH_LENGTH_MAX: usize = 254;

/// Cursor tags: a cursor from one listing is refused by another (the two orders of the
/// transfer listing count as two listings: a position means the opposite in the other).
const TRANSFERS_TAG: &str = "transfers";
const TRANSFERS_OLDEST_FIRST_TAG: &str = "transfers-oldest-first";
const ACCOUNTS_TAG: &str = "accounts";

/// Query parameters arrive as text and are checked here, so every bad one is a field error.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(value)| value).map_err(|rejection| {
        ApiError::new(ErrorCode::ValidationError, format!("invalid query: {}", rejection.body_text()))
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransferQuery {
    pub status: Option<String>,
    /// `newest_first` (the default) or `oldest_first`: a queue of pending transfers is worked
    /// oldest first. A cursor continues only the order it came from.
    pub order: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountQuery {
    pub status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Count {
    count: u64,
}

fn transfer_status(text: Option<&str>) -> Result<Option<String>, ApiError> {
    text.map(|text| {
        TransferStatus::parse(text).map(|status| status.as_str().to_owned()).ok_or_else(|| {
            ApiError::field("status", "must be processing, pending, completed, failed, rejected, cancelled or expired")
        })
    })
    .transpose()
}

fn transfer_order(text: Option<&str>) -> Result<Order, ApiError> {
    match text {
        None | Some("newest_first") => Ok(Order::NewestFirst),
        Some("oldest_first") => Ok(Order::OldestFirst),
        Some(_) => Err(ApiError::field("order", "must be newest_first or oldest_first")),
    }
}

/// One page of transfers matching `filter`, each read live.
async fn transfer_page(
    state: &AppState,
    filter: TransferFilter,
    params: &TransferQuery,
) -> Result<(Vec<Transfer>, Option<String>), ApiError> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let tag = match filter.order {
        Order::NewestFirst => TRANSFERS_TAG,
        Order::OldestFirst => TRANSFERS_OLDEST_FIRST_TAG,
    };
    let after = parse_position_cursor(tag, params.cursor.as_deref())?;
    let engine = state.engine()?;
    // One row more than asked says whether another page follows.
    let mut rows = state.identity().reads.transfer_page(&filter, after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|(_, position)| position_cursor(tag, *position)) } else { None };
    let transfers = futures::future::join_all(rows.iter().map(|(id, _)| live_transfer(engine, *id))).await;
    let transfers = transfers.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((transfers, next_cursor))
}

async fn live_transfer(engine: &Engine, id: TransferId) -> Result<Transfer, ApiError> {
    engine.load_transfer(id).await?.ok_or_else(|| ApiError::internal(format!("listed transfer {id} has no row")))
}

/// `GET /v1/transfers?status&order&cursor&limit` → the transfers whose source or destination
/// the caller owns, newest first (or `order=oldest_first`).
#[utoipa::path(
    get,
    path = "/v1/transfers",
    tag = "transfers",
    params(TransferQuery),
    responses((status = 200, body = Page<TransferView>)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn customer_transfers(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<crate::auth::api_keys::TransfersRead>,
    params: Result<Query<TransferQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = TransferFilter {
        party: Some(caller.user_id),
        status: transfer_status(params.status.as_deref())?,
        order: transfer_order(params.order.as_deref())?,
    };
    let (transfers, next_cursor) = transfer_page(&state, filter, &params).await?;
    let items = transfers.iter().map(TransferView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

/// `GET /v1/admin/transfers?status&order&cursor&limit` → every transfer, newest first (or
/// `order=oldest_first`: the admin console's pending queue), admin view.
#[utoipa::path(
    get,
    path = "/v1/admin/transfers",
    tag = "admin",
    params(TransferQuery),
    responses((status = 200, body = Page<AdminTransferView>)),
    security(("bearer" = []))
)]
pub async fn admin_transfers(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    params: Result<Query<TransferQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = TransferFilter {
        party: None,
        status: transfer_status(params.status.as_deref())?,
        order: transfer_order(params.order.as_deref())?,
    };
    let (transfers, next_cursor) = transfer_page(&state, filter, &params).await?;
    let items = transfers.iter().map(AdminTransferView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

/// `GET /v1/admin/transfers/count?status` → `{count}`.
#[utoipa::path(
    get,
    path = "/v1/admin/transfers/count",
    tag = "admin",
    params(CountQuery),
    responses((status = 200, body = Count)),
    security(("bearer" = []))
)]
pub async fn admin_transfer_count(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    params: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter =
        TransferFilter { party: None, status: transfer_status(params.status.as_deref())?, ..Default::default() };
    let count = state.identity().reads.count_transfers(&filter).await?;
    Ok(axum::Json(Count { count }).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    pub status: Option<String>,
    pub currency: Option<String>,
    pub user_id: Option<String>,
    pub search: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// The filters of the admin account listing, checked. `search` matches the start of the
/// account id or of the owner's email, case-insensitively; it may hold letters, digits and
/// `@ . - +` (the characters of ids and of nearly every email), so it never needs escaping.
fn account_filter(params: &AccountQuery) -> Result<AccountFilter, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|text| {
            AccountStatus::parse(text)
                .map(|status| status.as_str().to_owned())
                .ok_or_else(|| ApiError::field("status", "must be active, blocked or closed"))
        })
        .transpose()?;
    let currency = params
        .currency
        .as_deref()
        .map(|code| input::currency("currency", code).map(|currency| currency.code().to_owned()))
        .transpose()?;
    let owner = params
        .user_id
        .as_deref()
        .map(|text| {
            uuid::Uuid::try_parse(text)
                .map(tally_engine::UserId::from_uuid)
                .map_err(|_| ApiError::field("user_id", "must be a UUID"))
        })
        .transpose()?;
    let search = params
        .search
        .as_deref()
        .map(|text| {
            let text = text.trim().to_lowercase();
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '+');
            if text.is_empty() || text.chars().count() > SEARCH_LENGTH_MAX || !text.chars().all(allowed) {
                return Err(ApiError::field(
                    "search",
                    format!("must be 1 to {SEARCH_LENGTH_MAX} letters, digits or @ . - +"),
                ));
            }
            Ok(text)
        })
        .transpose()?;
    Ok(AccountFilter { status, currency, owner, search })
}

/// `GET /v1/admin/accounts?status&currency&user_id&search&cursor&limit` → customer accounts,
/// newest first, with live balances.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "admin",
    params(AccountQuery),
    responses((status = 200, body = Page<AccountView>)),
    security(("bearer" = []))
)]
pub async fn admin_accounts(
    State(state): State<AppState>,
    _admin: Authorized<AccountsRead>,
    params: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = account_filter(&params)?;
    let limit = pagination::limit(params.limit.as_deref())?;
    let after = parse_position_cursor(ACCOUNTS_TAG, params.cursor.as_deref())?;
    let engine = state.engine()?;
    let mut rows = state.identity().reads.account_page(&filter, after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|(_, position)| position_cursor(ACCOUNTS_TAG, *position)) } else { None };
    let accounts = futures::future::join_all(rows.iter().map(|(id, _)| engine.account(*id))).await;
    let mut items = Vec::with_capacity(accounts.len());
    for account in accounts {
        items.push(AccountView::of(&account?)?);
    }
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountCountQuery {
    pub status: Option<String>,
    pub currency: Option<String>,
    pub user_id: Option<String>,
    pub search: Option<String>,
}

/// `GET /v1/admin/accounts/count` with the listing's filters → `{count}`.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/count",
    tag = "admin",
    params(AccountCountQuery),
    responses((status = 200, body = Count)),
    security(("bearer" = []))
)]
pub async fn admin_account_count(
    State(state): State<AppState>,
    _admin: Authorized<AccountsRead>,
    params: Result<Query<AccountCountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = account_filter(&AccountQuery {
        status: params.status,
        currency: params.currency,
        user_id: params.user_id,
        search: params.search,
        cursor: None,
        limit: None,
    })?;
    let count = state.identity().reads.count_accounts(&filter).await?;
    Ok(axum::Json(Count { count }).into_response())
}
