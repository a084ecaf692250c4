//! `GET /v1/accounts/summary`: the caller's money per currency, across their accounts.
//!
//! API.md names no path; this one sits beside `GET /v1/accounts` (same scope,
//! `accounts:read`). axum matches the literal segment `summary` before the `{id}` capture, so
//! it never reaches `GET /v1/accounts/{id}` (which would refuse it as a malformed id).
//!
//! Each account is read live from its actor, as the account listing does, so the sums agree
//! with `GET /v1/accounts` at the same instant. Decisions (see docs/api-decisions.md): closed
//! accounts are left out (they hold nothing and are final); `balance` and `held` sum active
//! and blocked accounts (a blocked account's money is still the customer's);
//! `available_balance` sums active accounts only (a blocked account refuses new holds, so
//! its available money cannot be spent). Currencies are in code order; a currency the caller
//! has no open account in is absent. Every sum is checked.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Serialize;
use tally_engine::{AccountStatus, Currency};

use crate::accounts::ACCOUNTS_LISTED_MAX;
use crate::auth::api_keys::{AccountsRead, Scoped};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::money;

/// One currency's totals.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrencySummary {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    /// Accounts in this currency that are not closed.
    pub account_count: u64,
    /// Posted balance of active and blocked accounts.
    pub balance: String,
    /// Held (pending debits) of active and blocked accounts.
    pub held: String,
    /// Available balance (balance - held + credit limit) of active accounts.
    pub available_balance: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountsSummary {
    pub items: Vec<CurrencySummary>,
}

#[derive(Default)]
struct Totals {
    count: u64,
    balance: Decimal,
    held: Decimal,
    available: Decimal,
}

fn add(total: Decimal, value: Decimal) -> Result<Decimal, ApiError> {
    tally_engine::money::add(total, value).map_err(|_| ApiError::internal("account summary overflows"))
}

/// `GET /v1/accounts/summary` → `{items: [{currency, account_count, balance, held,
/// available_balance}]}`.
#[utoipa::path(
    get,
    path = "/v1/accounts/summary",
    tag = "accounts",
    responses((
        status = 200,
        body = AccountsSummary,
        description = "Per currency, over the caller's accounts that are not closed: how many, the sum of \
                       balances and holds (active and blocked accounts), and the sum of available balances \
                       (active accounts only). Live, as GET /v1/accounts."
    )),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn summary(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let ids = state.identity().reads.account_ids_of_owner(caller.user_id, ACCOUNTS_LISTED_MAX).await?;
    let accounts = futures::future::join_all(ids.into_iter().map(|id| engine.account(id))).await;
    let mut totals: BTreeMap<&'static str, (Currency, Totals)> = BTreeMap::new();
    for account in accounts {
        let account = account?;
        if account.status == AccountStatus::Closed {
            continue;
        }
        let (_, total) = totals.entry(account.currency.code()).or_insert_with(|| (account.currency, Totals::default()));
        total.count += 1;
        total.balance = add(total.balance, account.balance())?;
        total.held = add(total.held, account.held())?;
        if account.status == AccountStatus::Active {
            let available = account
                .available()
                .map_err(|_| ApiError::internal(format!("account {}: available balance overflows", account.id)))?;
            total.available = add(total.available, available)?;
        }
    }
    let items = totals
        .into_values()
        .map(|(currency, total)| CurrencySummary {
            currency: currency.code(),
            account_count: total.count,
            balance: money(total.balance, currency),
            held: money(total.held, currency),
            available_balance: money(total.available, currency),
        })
        .collect();
    Ok(axum::Json(AccountsSummary { items }).into_response())
}
