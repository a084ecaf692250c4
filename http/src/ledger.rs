//! An account's ledger as its owner sees it: `GET /v1/accounts/{id}/transactions` (its
//! postings, newest first) and `GET /v1/accounts/{id}/balance-history` (a closing balance per
//! UTC day). Another user's account is `404`, as for `GET /v1/accounts/{id}`.
//!
//! A posting's `created_at` is when it was booked: the commit of the journal batch that wrote
//! it, which is when the balance changed (a pending transfer's postings are booked when it is
//! executed), and `from`/`to` and the daily buckets use it. Postings are listed in the order
//! the account applied them; a posting's `id` is a name-based UUID (v5) of the account and its
//! posting number: stable and unique.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_engine::money::with_currency_scale;
use tally_engine::{AccountId, Currency, Timestamp};
use tally_persistence::reads::listing::{DAY_MICROS, PostingFilter};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use crate::accounts::owned_account;
use crate::auth::api_keys::{AccountsRead, Scoped};
use crate::input::IdPath;
use crate::pagination::{self, parse_posting_cursor, posting_cursor};
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{money, rfc3339};

/// Days of balance history when the client names none (API.md's example).
pub const HISTORY_DAYS_DEFAULT: i64 = 30;

/// Days of balance history at most: a year (leap year included) is one answer of 366 points;
/// longer ranges are the statements' job.
pub const HISTORY_DAYS_MAX: i64 = 366;

const POSTINGS_TAG: &str = "postings";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransactionQuery {
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TransactionView {
    /// The posting's id: a name-based UUID (v5) of the account and its posting number,
    /// stable across reads.
    id: String,
    transfer_id: String,
    direction: &'static str,
    amount: String,
    currency: String,
    balance_after: String,
    description: Option<String>,
    /// When the posting was booked (its journal batch committed): when the balance changed.
    created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionPage {
    items: Vec<TransactionView>,
    next_cursor: Option<String>,
}

/// A time bound: an RFC 3339 date-time, or a date (`YYYY-MM-DD`, its midnight UTC).
pub(crate) fn time_bound(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let refuse = || ApiError::field(field, "must be an RFC 3339 date-time or a date YYYY-MM-DD");
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => Date::parse(text, format_description!("[year]-[month]-[day]"))
            .map_err(|_| refuse())?
            .midnight()
            .assume_utc(),
    };
    // Rounded up to the microsecond: `from` is inclusive and `to` exclusive, and a posting
    // booked at microsecond `m` is at or after an instant `t` only if `m ≥ ⌈t⌉` (truncating
    // put a posting at `…622Z` on the wrong side of `from`/`to=…622500Z`, which clients that
    // write nanoseconds send; found by a review).
    i64::try_from((at.unix_timestamp_nanos() + 999).div_euclid(1_000)).map(Some).map_err(|_| refuse())
}

/// `GET /v1/accounts/{id}/transactions?direction&from&to&cursor&limit`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/transactions",
    tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "The account id"), TransactionQuery),
    responses((status = 200, body = TransactionPage)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn transactions(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<TransactionQuery>,
) -> Result<axum::Json<TransactionPage>, ApiError> {
    let credit = match params.direction.as_deref() {
        None => None,
        Some("credit") => Some(true),
        Some("debit") => Some(false),
        Some(_) => return Err(ApiError::field("direction", "must be credit or debit")),
    };
    let from = time_bound("from", params.from.as_deref())?;
    let to = time_bound("to", params.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::field("to", "must not be before from"));
    }
    let limit = pagination::limit(params.limit.as_deref())?;
    let before = parse_posting_cursor(POSTINGS_TAG, params.cursor.as_deref())?;
    let engine = state.engine()?;
    let account = owned_account(engine, AccountId::from_uuid(id), caller.user_id, "account").await?;
    let filter = PostingFilter { credit, from, to };
    let mut rows = state.identity().reads.posting_page(account.id, filter, before, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|row| posting_cursor(POSTINGS_TAG, row.position)) } else { None };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let currency = Currency::from_code(&row.currency).unwrap_or(account.currency);
        items.push(TransactionView {
            id: row.position.public_id().to_string(),
            transfer_id: row.transfer.to_string(),
            direction: if row.credit { "credit" } else { "debit" },
            amount: money(row.amount, currency),
            currency: currency.code().to_owned(),
            balance_after: money(row.balance_after, currency),
            description: row.description,
            created_at: rfc3339(Timestamp::from_micros(row.position.booked_at))?,
        });
    }
    Ok(axum::Json(TransactionPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub days: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BalancePoint)]
struct Point {
    date: String,
    balance: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BalanceHistory)]
struct History {
    opening_balance: String,
    current_balance: String,
    change: String,
    points: Vec<Point>,
}

fn date_of_day(day: i64) -> Result<String, ApiError> {
    OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400))
        .map_err(|error| ApiError::internal(format!("day {day} out of range: {error}")))?
        .date()
        .format(format_description!("[year]-[month]-[day]"))
        .map_err(ApiError::internal)
}

/// `GET /v1/accounts/{id}/balance-history?days=30` → the balance before the first day
/// (`opening_balance`), the live balance now, their difference, and one point per UTC day
/// (today last): the balance after that day's last posting, or the day before's if it had
/// none.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/balance-history",
    tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "The account id"), HistoryQuery),
    responses((status = 200, body = History)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn balance_history(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let days = match params.days.as_deref() {
        None => HISTORY_DAYS_DEFAULT,
        Some(text) => match text.parse::<i64>() {
            Ok(days) if (1..=HISTORY_DAYS_MAX).contains(&days) => days,
            _ => return Err(ApiError::field("days", format!("must be an integer from 1 to {HISTORY_DAYS_MAX}"))),
        },
    };
    let engine = state.engine()?;
    let account = owned_account(engine, AccountId::from_uuid(id), caller.user_id, "account").await?;
    let currency = account.currency;
    // The journals' instant, not the clock: the clock can be behind the bookings (see
    // `point_in_time::balance`), and the last point must include every posting answered.
    let today = engine.journals().reserve_instant().as_micros().div_euclid(DAY_MICROS);
    let first_day = today - (days - 1);
    let from = first_day * DAY_MICROS;
    let reads = &state.identity().reads;
    let opening = reads.balance_before(account.id, from).await?.unwrap_or(Decimal::ZERO);
    let closings = reads.daily_closing_balances(account.id, from).await?;
    let mut closings = closings.into_iter().peekable();
    let mut balance = opening;
    let mut points = Vec::with_capacity(usize::try_from(days).unwrap_or(0));
    for day in first_day..=today {
        while let Some((_, closing)) = closings.next_if(|(closing_day, _)| *closing_day <= day) {
            balance = closing;
        }
        points.push(Point { date: date_of_day(day)?, balance: money(balance, currency) });
    }
    let current = account.balance();
    let change =
        tally_engine::money::sub(current, opening).map_err(|_| ApiError::internal("balance change overflows"))?;
    Ok(axum::Json(History {
        opening_balance: money(with_currency_scale(opening, currency), currency),
        current_balance: money(current, currency),
        change: money(change, currency),
        points,
    })
    .into_response())
}
