//! The crypto histories (API.md *1.1* "Ledger views"): `GET /v1/crypto/orders`,
//! `GET /v1/crypto/withdrawals` and `GET /v1/wallets/{id}/transactions`, the caller's, newest
//! first, in keyset pages (`?limit=1..200&cursor`, `pagination.rs`).
//!
//! Orders and withdrawals page by `(created_at, id)`, each page one range scan of its own
//! partial index (migration 0030), and each listed operation is then read as it stands now
//! (`Engine::crypto_op`: the journal's newest record or the store's), as the transfer
//! listings do. A wallet's transactions are its postings, newest first by booking time, then
//! shard and journal sequence (`wallet_postings_by_wallet`), each with its operation's kind and time; a withdrawal
//! still pending holds the amount but posts nothing, so it shows in the withdrawals, not in
//! the transactions, until the custodian confirms it.
//!
//! Decisions: people only (API keys are refused, as on the other crypto routes); no filters
//! beyond the page (API.md names none); another user's wallet, or one that does not exist,
//! is `404`, checked after the query parameters (`400` first), as for account transactions.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_engine::{Currency, Timestamp, WalletId};
use tally_persistence::reads::crypto::CryptoHistory;

use crate::auth::Caller;
use crate::crypto::{CryptoOpView, owned_wallet};
use crate::input::IdPath;
use crate::pagination::{
    self, parse_position_cursor, parse_wallet_posting_cursor, position_cursor, wallet_posting_cursor,
};
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{money, rfc3339};

/// Cursor tags: a cursor of one listing is refused by another.
const ORDERS_TAG: &str = "crypto-orders";
const WITHDRAWALS_TAG: &str = "crypto-withdrawals";
const WALLET_POSTINGS_TAG: &str = "wallet-postings";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CryptoOpPage {
    items: Vec<CryptoOpView>,
    next_cursor: Option<String>,
}

async fn op_page(
    state: &AppState,
    caller: Caller,
    history: CryptoHistory,
    tag: &str,
    params: &HistoryQuery,
) -> Result<Response, ApiError> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let after = parse_position_cursor(tag, params.cursor.as_deref())?;
    let engine = state.engine()?;
    // One row more than asked says whether another page follows.
    let mut rows = state.identity().reads.crypto_op_page(caller.user_id, history, after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|(_, position)| position_cursor(tag, *position)) } else { None };
    let ops = futures::future::join_all(rows.iter().map(|(id, _)| engine.crypto_op(*id))).await;
    let mut items = Vec::with_capacity(ops.len());
    for (op, (id, _)) in ops.into_iter().zip(&rows) {
        let op = op?.ok_or_else(|| ApiError::internal(format!("listed crypto operation {id} has no row")))?;
        items.push(CryptoOpView::of(&op)?);
    }
    Ok(axum::Json(CryptoOpPage { items, next_cursor }).into_response())
}

/// `GET /v1/crypto/orders?cursor&limit` → the caller's buy and sell orders, newest first.
#[utoipa::path(
    get,
    path = "/v1/crypto/orders",
    tag = "crypto",
    params(HistoryQuery),
    description = "The caller's buy and sell orders, newest first (by `created_at`, then id), each as it stands now; \
                   pages of 1 to 200 (default 50) with an opaque cursor. Orders placed while a client pages are \
                   newer than its cursor and never shift a later page.",
    responses((status = 200, body = CryptoOpPage)),
    security(("bearer" = []))
)]
pub async fn orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    op_page(&state, caller, CryptoHistory::Orders, ORDERS_TAG, &params).await
}

/// `GET /v1/crypto/withdrawals?cursor&limit` → the caller's withdrawals, newest first.
#[utoipa::path(
    get,
    path = "/v1/crypto/withdrawals",
    tag = "crypto",
    params(HistoryQuery),
    description = "The caller's withdrawals (pending, completed or failed), newest first (by `created_at`, then id), \
                   each as it stands now; pages of 1 to 200 (default 50) with an opaque cursor.",
    responses((status = 200, body = CryptoOpPage)),
    security(("bearer" = []))
)]
pub async fn withdrawals(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    op_page(&state, caller, CryptoHistory::Withdrawals, WITHDRAWALS_TAG, &params).await
}

/// One posting of a wallet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalletTransactionView {
    /// The posting's id: its journal shard (high 64 bits) and sequence number as one UUID.
    pub id: String,
    /// The crypto operation (order, deposit or withdrawal) it belongs to.
    pub operation_id: String,
    /// `buy`, `sell`, `deposit` or `withdrawal`.
    pub kind: String,
    /// `credit` or `debit`.
    pub direction: &'static str,
    pub amount: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub asset: &'static str,
    pub balance_after: String,
    /// The operation's creation time.
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalletTransactionPage {
    items: Vec<WalletTransactionView>,
    next_cursor: Option<String>,
}

/// `GET /v1/wallets/{id}/transactions?cursor&limit` → the wallet's postings, newest first.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}/transactions",
    tag = "wallets",
    params(("id" = uuid::Uuid, Path, description = "The wallet id"), HistoryQuery),
    description = "The wallet's postings (credits and debits of its asset), newest first in booking order, each with \
                   the operation it belongs to, its kind and time, and the balance after it; pages of 1 to 200 \
                   (default 50) with an opaque cursor. A pending withdrawal holds its amount but posts nothing until \
                   the custodian confirms it. Another user's wallet is `404`.",
    responses((status = 200, body = WalletTransactionPage)),
    security(("bearer" = []))
)]
pub async fn wallet_transactions(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<HistoryQuery>,
) -> Result<axum::Json<WalletTransactionPage>, ApiError> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let before = parse_wallet_posting_cursor(WALLET_POSTINGS_TAG, params.cursor.as_deref())?;
    let (profile, _) = owned_wallet(&state, WalletId::from_uuid(id), caller.user_id).await?;
    let mut rows = state.identity().reads.wallet_posting_page(profile.wallet, before, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|row| wallet_posting_cursor(WALLET_POSTINGS_TAG, row.position)) } else { None };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let asset = Currency::from_code(&row.asset).ok_or_else(|| {
            ApiError::internal(format!("wallet posting {} has unknown asset {:?}", row.position.public_id(), row.asset))
        })?;
        items.push(WalletTransactionView {
            id: row.position.public_id().to_string(),
            operation_id: row.operation.to_string(),
            kind: row.kind,
            direction: if row.credit { "credit" } else { "debit" },
            amount: money(row.amount, asset),
            asset: asset.code(),
            balance_after: money(row.balance_after, asset),
            created_at: rfc3339(Timestamp::from_micros(row.created_at))?,
        });
    }
    Ok(axum::Json(WalletTransactionPage { items, next_cursor }))
}
