//! `GET /v1/accounts/{id}/balance?at=RFC3339` (issue 15, API.md *1.1* "Ledger views"): an
//! account's posted balance at an instant, exact to the posting (`docs/ledger-views.md`,
//! "Point-in-time balance").
//!
//! Every posting carries the balance after it and is keyed `(account_id, booked_at, version)`
//! (migration 0021), so the balance at `at` is the `balance_after` of the account's last
//! posting booked at or before `at`: one descending probe of the key, whatever the number of
//! postings (`LedgerReads::balance_before` of the next microsecond). No snapshot is needed:
//! postings are the truth and the probe reads one row.
//!
//! A hold is not a posting: it changes `held`, never `balance`, so an instant between a hold
//! and its post answers the balance without the held amount, and a hold released without
//! posting never shows. The postings a transfer makes when it posts are booked when its
//! journal batch commits (a pending transfer's when it is executed).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_engine::{AccountId, ErrorCode, Timestamp};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::accounts::owned_account;
use crate::auth::api_keys::{AccountsRead, Scoped};
use crate::input::IdPath;
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{money, rfc3339};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// The instant: an RFC 3339 date-time with a `Z` or numeric offset (a `+` must be sent
    /// percent-encoded, `%2B`, or it reads as a space). Not later than the server's clock.
    /// Finer than a microsecond is truncated to the microsecond (postings are booked to the
    /// microsecond). Absent: now.
    pub at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PointInTimeBalance)]
struct BalanceAt {
    account_id: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    currency: &'static str,
    /// The posted balance at `as_of`, at the currency's scale: the balance after every posting
    /// booked at or before `as_of` (inclusive to the microsecond). Holds are not postings and
    /// are not subtracted; before the account's first posting it is zero.
    balance: String,
    /// The instant answered, in UTC to the microsecond: `at` converted to UTC and truncated to
    /// the microsecond, or the server's clock when `at` is absent.
    as_of: String,
}

/// `at` as microseconds since the epoch, UTC, truncated toward the past (a posting booked at
/// microsecond `m` is at or before every instant of `[m, m + 1µs)`).
fn instant(text: &str) -> Result<i64, ApiError> {
    let refuse = || ApiError::field("at", "must be an RFC 3339 date-time, e.g. 2025-06-15T12:00:00Z");
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| refuse())?;
    // `as_of` answers the instant in UTC, and RFC 3339 has only the years 0000 to 9999: an
    // offset that moves the instant out of them would answer an `as_of` no client can send
    // back.
    if !(0..=9999).contains(&at.to_offset(time::UtcOffset::UTC).year()) {
        return Err(ApiError::field("at", "must fall within the years 0000 to 9999 in UTC"));
    }
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000)).map_err(|_| refuse())
}

/// `GET /v1/accounts/{id}/balance?at=RFC3339` → `{account_id, currency, balance, as_of}`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/balance",
    tag = "accounts",
    description = "The account's posted balance at an instant (point in time), exact to the posting: the \
                   balance after every posting booked at or before `at` (inclusive to the microsecond). \
                   Without `at`, now; `as_of` is the instant answered (UTC, microseconds), and the same \
                   request with `at=as_of` answers the same balance. Holds are not postings: between a \
                   hold and its post the balance excludes the held amount. Postings still in the \
                   write-behind journal count (the read waits for the account's newest record to be \
                   durable). `at` later than the server's clock is `400` (the future is not known yet); \
                   `at` before the account's first posting answers zero. `at` with a non-UTC offset is \
                   converted to UTC; digits finer than a microsecond are truncated. The owner with a \
                   bearer token or an API key with `accounts:read`; another user's account, or none, \
                   is `404`, checked after the query (`400`).",
    params(("id" = uuid::Uuid, Path, description = "The account id"), BalanceQuery),
    responses((status = 200, body = BalanceAt)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn balance(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<BalanceQuery>,
) -> Result<Response, ApiError> {
    let at = params.at.as_deref().map(instant).transpose()?;
    let engine = state.engine()?;
    // Read before the account, from the journals rather than the clock: every posting booked
    // at or before `now` was appended before this instant, so the account's actor has it by
    // the time it answers below, and every posting booked later is after `now`. The clock can
    // be behind the bookings (stepped back, or behind the store's last booking after a
    // restart): "now" from it left out transfers already answered (found by a review).
    let now = engine.journals().reserve_instant().as_micros();
    let at = match at {
        Some(at) if at > now => return Err(ApiError::field("at", "must not be later than the server's clock")),
        Some(at) => at,
        None => now,
    };
    let account = owned_account(engine, AccountId::from_uuid(id), caller.user_id, "account").await?;
    // The account's postings still in a journal must count: wait until its newest record is
    // in the store (at once in the common case; one group commit otherwise).
    engine
        .accounts()
        .wait_newest_durable(account.id)
        .await
        .map_err(|_| ApiError::new(ErrorCode::Overloaded, "temporarily unavailable; retry later"))?;
    let balance = state.identity().reads.balance_before(account.id, at + 1).await?.unwrap_or(Decimal::ZERO);
    let currency = account.currency;
    Ok(axum::Json(BalanceAt {
        account_id: account.id.to_string(),
        currency: currency.code(),
        balance: money(balance, currency),
        as_of: rfc3339(Timestamp::from_micros(at))?,
    })
    .into_response())
}
