//! Paginated listings: `GET /v1/transfers` (the caller's), `GET /v1/admin/transfers` and
//! `/count`, `GET /v1/admin/accounts` and `/count`.
//!
//! The read model (`tally_persistence::reads::listing`) finds the ids of a page, newest first;
//! each row is then read live (a transfer from the journal or store, an account from its
//! actor), so a listed balance or status is never staler than `GET` of the same resource.
//! The filters themselves (`status`, ...) apply to the durable rows, which every transfer and
//! account reaches before its creator hears of it.

use axum::extract::State;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_actors::Engine;
use tally_engine::{AccountId, AccountStatus, ErrorCode, Transfer, TransferId, TransferKind, TransferStatus, UserId};
use tally_persistence::reads::listing::{AccountFilter, Order, TransferFilter};

use crate::auth::Authorized;
use crate::auth::api_keys::Scoped;
use crate::auth::permissions::{AccountsRead, TransfersRead};
use crate::input::{self, REFERENCE_LENGTH_MAX};
use crate::pagination::{self, parse_position_cursor, position_cursor};
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{AccountView, AdminTransferView, TransferView};

/// Longest `search` text: an email is at most 254 characters.
const SEARCH_LENGTH_MAX: usize = 254;

/// Cursor tags: a cursor from one listing is refused by another (the two orders of the
/// transfer listing count as two listings: a position means the opposite in the other).
const TRANSFERS_TAG: &str = "transfers";
const TRANSFERS_OLDEST_FIRST_TAG: &str = "transfers-oldest-first";
const ACCOUNTS_TAG: &str = "accounts";

/// The filters of `GET /v1/transfers` (and, with `user_id`, of the admin's listing and count).
/// This struct documents them; `transfer_params` reads them from the query's pairs, because
/// `metadata.KEY` names are the client's own. Every filter given must match.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransferQuery {
    /// `processing`, `pending`, `completed`, `failed`, `rejected`, `cancelled` or `expired`.
    pub status: Option<String>,
    /// `internal`, `external`, `admin_credit` or `admin_debit`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Transfers from or to this account. On `/v1/transfers` an account that is not the
    /// caller's lists nothing (as an unknown one: existence does not leak).
    #[param(format = Uuid)]
    pub account_id: Option<String>,
    /// Exactly this reference (as stored: trimmed, case-sensitive).
    pub reference: Option<String>,
    /// `amount` at least this (a decimal string, compared as a number in the transfer's own
    /// source currency; combine with `account_id` to fix the currency).
    pub min_amount: Option<String>,
    /// `amount` at most this; not below `min_amount`.
    pub max_amount: Option<String>,
    /// Created at or after this instant: RFC 3339, or a date `YYYY-MM-DD` (its midnight UTC).
    pub from: Option<String>,
    /// Created before this instant (exclusive); not before `from`.
    pub to: Option<String>,
    /// `newest_first` (the default) or `oldest_first`: a queue of pending transfers is worked
    /// oldest first. A cursor continues only the order it came from.
    pub order: Option<String>,
    /// From `next_cursor`. A page may hold fewer items than `limit`, even none, and still
    /// have a `next_cursor` (see the operation's description); the listing ends when
    /// `next_cursor` is null.
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// The admin listing's filters: `/v1/transfers`'s and `user_id`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminTransferQuery {
    /// Transfers from or to an account this user owns (what that user's own listing shows).
    #[param(format = Uuid)]
    pub user_id: Option<String>,
}

/// The admin count's filters: the listing's, without `order`, `cursor` and `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountQuery {
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[param(format = Uuid)]
    pub account_id: Option<String>,
    pub reference: Option<String>,
    pub min_amount: Option<String>,
    pub max_amount: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    #[param(format = Uuid)]
    pub user_id: Option<String>,
}

/// The description of the repeatable `metadata.KEY=VALUE` filter, for the OpenAPI document.
const METADATA_FILTER: &str = "Repeatable, one per key, as metadata.KEY=VALUE: only transfers whose metadata \
    has every pair given (exact, case-sensitive). KEY is 1 to 64 ASCII letters, digits or _ - . :, VALUE 1 to 512 \
    characters; at most 16 pairs; a key given twice is 400.";

/// Which listing a query is for: it decides which parameters exist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    Customer,
    Admin,
    AdminCount,
}

/// A transfer listing's query, checked.
struct TransferParams {
    filter: TransferFilter,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Longest `min_amount`/`max_amount` text: `Decimal` holds 28-29 significant digits.
const AMOUNT_TEXT_LENGTH_MAX: usize = 40;

/// A bound on `amount`: plain decimal digits with an optional fraction (no sign, exponent or
/// spaces), at most 28 decimals.
fn amount_bound(field: &str, text: &str) -> Result<Decimal, ApiError> {
    let refuse = || ApiError::field(field, "must be a non-negative decimal number such as 10 or 10.50");
    let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if text.len() > AMOUNT_TEXT_LENGTH_MAX
        || integer.is_empty()
        || !digits(integer)
        || !digits(fraction)
        || (text.contains('.') && fraction.is_empty())
        || fraction.len() > 28
    {
        return Err(refuse());
    }
    Decimal::from_str_exact(text).map_err(|_| refuse())
}

/// Reads a transfer listing's query from its pairs: every parameter at most once, names the
/// listing does not have refused, `metadata.KEY` collected.
fn transfer_params(pairs: Vec<(String, String)>, listing: Listing) -> Result<TransferParams, ApiError> {
    let mut values: std::collections::BTreeMap<&'static str, String> = std::collections::BTreeMap::new();
    let mut metadata: Vec<(String, String)> = Vec::new();
    for (name, value) in pairs {
        if let Some(key) = name.strip_prefix("metadata.") {
            if !tally_engine::metadata::is_valid_key(key) {
                return Err(ApiError::field(
                    "metadata",
                    "a filter is metadata.KEY=VALUE with KEY 1 to 64 ASCII letters, digits or _ - . :",
                ));
            }
            let field = format!("metadata.{key}");
            if metadata.iter().any(|(seen, _)| seen == key) {
                return Err(ApiError::field(&field, "is given twice"));
            }
            if !tally_engine::metadata::is_valid_value(&value) {
                return Err(ApiError::field(&field, "must be 1 to 512 characters without control characters"));
            }
            if metadata.len() == tally_engine::metadata::METADATA_KEYS_MAX {
                return Err(ApiError::field(
                    "metadata",
                    "at most 16 metadata filters (a transfer has at most 16 keys)",
                ));
            }
            metadata.push((key.to_owned(), value));
            continue;
        }
        let known: &'static str = match (name.as_str(), listing) {
            ("status", _) => "status",
            ("type", _) => "type",
            ("account_id", _) => "account_id",
            ("reference", _) => "reference",
            ("min_amount", _) => "min_amount",
            ("max_amount", _) => "max_amount",
            ("from", _) => "from",
            ("to", _) => "to",
            ("order", Listing::Customer | Listing::Admin) => "order",
            ("cursor", Listing::Customer | Listing::Admin) => "cursor",
            ("limit", Listing::Customer | Listing::Admin) => "limit",
            ("user_id", Listing::Admin | Listing::AdminCount) => "user_id",
            _ => {
                let shown: String = name.chars().take(64).collect();
                return Err(ApiError::new(ErrorCode::ValidationError, format!("unknown query parameter {shown:?}")));
            }
        };
        if values.insert(known, value).is_some() {
            return Err(ApiError::field(known, "must be given at most once"));
        }
    }
    let status = transfer_status(values.get("status").map(String::as_str))?;
    let kind = values
        .get("type")
        .map(|text| {
            TransferKind::parse(text)
                .map(|kind| kind.as_str().to_owned())
                .ok_or_else(|| ApiError::field("type", "must be internal, external, admin_credit or admin_debit"))
        })
        .transpose()?;
    let uuid_of = |field: &'static str| {
        values
            .get(field)
            .map(|text| uuid::Uuid::try_parse(text).map_err(|_| ApiError::field(field, "must be a UUID")))
            .transpose()
    };
    let account = uuid_of("account_id")?.map(AccountId::from_uuid);
    let user = uuid_of("user_id")?.map(UserId::from_uuid);
    let reference = match values.get("reference") {
        None => None,
        Some(text) => Some(
            input::text("reference", Some(text), REFERENCE_LENGTH_MAX)?
                .ok_or_else(|| ApiError::field("reference", "must not be empty"))?,
        ),
    };
    let min_amount = values.get("min_amount").map(|text| amount_bound("min_amount", text)).transpose()?;
    let max_amount = values.get("max_amount").map(|text| amount_bound("max_amount", text)).transpose()?;
    if let (Some(min), Some(max)) = (min_amount, max_amount)
        && min > max
    {
        return Err(ApiError::field("max_amount", "must not be below min_amount"));
    }
    let from = crate::ledger::time_bound("from", values.get("from").map(String::as_str))?;
    let to = crate::ledger::time_bound("to", values.get("to").map(String::as_str))?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::field("to", "must not be before from"));
    }
    let order = transfer_order(values.get("order").map(String::as_str))?;
    metadata.sort();
    let filter = TransferFilter {
        party: user,
        status,
        order,
        kind,
        account,
        reference,
        min_amount,
        max_amount,
        from,
        to,
        metadata,
        scan_rows_max: None,
    };
    Ok(TransferParams { filter, cursor: values.remove("cursor"), limit: values.remove("limit") })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Count {
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

/// One page of transfers matching `params.filter`, each read live.
async fn transfer_page(state: &AppState, params: TransferParams) -> Result<(Vec<Transfer>, Option<String>), ApiError> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let tag = match params.filter.order {
        Order::NewestFirst => TRANSFERS_TAG,
        Order::OldestFirst => TRANSFERS_OLDEST_FIRST_TAG,
    };
    let after = parse_position_cursor(tag, params.cursor.as_deref())?;
    let engine = state.engine()?;
    // One row more than asked says whether another page follows.
    let page = state.identity().reads.transfer_page(&params.filter, after, limit + 1).await?;
    let mut rows = page.rows;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    // A page that stopped at its scan bound continues after the last row it examined.
    let next = if more { rows.last().map(|(_, position)| *position) } else { page.scanned_to };
    let next_cursor = next.map(|position| position_cursor(tag, position));
    let transfers = futures::future::join_all(rows.iter().map(|(id, _)| live_transfer(engine, *id))).await;
    let transfers = transfers.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((transfers, next_cursor))
}

async fn live_transfer(engine: &Engine, id: TransferId) -> Result<Transfer, ApiError> {
    engine.load_transfer(id).await?.ok_or_else(|| ApiError::internal(format!("listed transfer {id} has no row")))
}

/// `GET /v1/transfers?status&type&account_id&reference&min_amount&max_amount&from&to&metadata.KEY&order&cursor&limit`
/// → the transfers whose source or destination the caller owns, newest first (or
/// `order=oldest_first`).
#[utoipa::path(
    get,
    path = "/v1/transfers",
    tag = "transfers",
    description = "The caller's transfers (source or destination one of their accounts), newest first. Every filter \
        given must match. Served by the caller's accounts' own index ranges: each filter narrows the caller's own \
        transfers (from/to as a range of them, since ids are time-ordered). Unknown parameters, a parameter given \
        twice, an unparseable amount or time, min_amount above max_amount, to before from, an unknown status or type \
        and a malformed metadata.KEY are 400.",
    params(TransferQuery, ("metadata.KEY" = Option<String>, Query, description = METADATA_FILTER)),
    responses((status = 200, body = Page<TransferView>)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn customer_transfers(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<crate::auth::api_keys::TransfersRead>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<axum::Json<Page<TransferView>>, ApiError> {
    let mut params = transfer_params(pairs, Listing::Customer)?;
    params.filter.party = Some(caller.user_id);
    let (transfers, next_cursor) = transfer_page(&state, params).await?;
    let items = transfers.iter().map(TransferView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }))
}

/// `GET /v1/admin/transfers` with `/v1/transfers`'s filters and `user_id` → every transfer,
/// newest first (or `order=oldest_first`: the admin console's pending queue), admin view.
#[utoipa::path(
    get,
    path = "/v1/admin/transfers",
    tag = "admin",
    description = "Every transfer, newest first, with /v1/transfers's filters and user_id (transfers from or to an \
        account that user owns). user_id or account_id read those accounts' own index ranges; otherwise the listing \
        reads the primary key (from/to as a range of it), status the status index, and metadata (Postgres) its GIN \
        index. Filters no index serves (type, reference, min_amount, max_amount, and metadata on SQLite) examine at \
        most 10,000 transfers per page: a page that finds fewer matches than limit within them ends there with a \
        next_cursor to continue, so a page can be short or empty while next_cursor is not null.",
    params(TransferQuery, AdminTransferQuery, ("metadata.KEY" = Option<String>, Query, description = METADATA_FILTER)),
    responses((status = 200, body = Page<AdminTransferView>)),
    security(("bearer" = []))
)]
pub async fn admin_transfers(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<axum::Json<Page<AdminTransferView>>, ApiError> {
    let params = transfer_params(pairs, Listing::Admin)?;
    let (transfers, next_cursor) = transfer_page(&state, params).await?;
    let items = transfers.iter().map(AdminTransferView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }))
}

/// `GET /v1/admin/transfers/count` with the listing's filters → `{count}`.
#[utoipa::path(
    get,
    path = "/v1/admin/transfers/count",
    tag = "admin",
    description = "How many transfers the admin listing's filters match (without order, cursor and limit). A count \
        reads every transfer of the range its filters select.",
    params(CountQuery, ("metadata.KEY" = Option<String>, Query, description = METADATA_FILTER)),
    responses((status = 200, body = Count)),
    security(("bearer" = []))
)]
pub async fn admin_transfer_count(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<axum::Json<Count>, ApiError> {
    let params = transfer_params(pairs, Listing::AdminCount)?;
    let count = state.identity().reads.count_transfers(&params.filter).await?;
    Ok(axum::Json(Count { count }))
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
    ApiQuery(params): ApiQuery<AccountQuery>,
) -> Result<axum::Json<Page<AccountView>>, ApiError> {
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
    Ok(axum::Json(Page { items, next_cursor }))
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
    ApiQuery(params): ApiQuery<AccountCountQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    let filter = account_filter(&AccountQuery {
        status: params.status,
        currency: params.currency,
        user_id: params.user_id,
        search: params.search,
        cursor: None,
        limit: None,
    })?;
    let count = state.identity().reads.count_accounts(&filter).await?;
    Ok(axum::Json(Count { count }))
}
