//! The crypto histories' read model: a customer's buy and sell orders and withdrawals, newest
//! first by `(created_at, id)` with a keyset cursor, and one wallet's postings newest first by
//! `(booked_at, shard, seq)` (journals are per shard since migration 0021: a posting's place
//! is its booking time, then its shard's sequence). Each page is one range scan of one index:
//! the partial indexes of migration 0030 (`crypto_orders_by_owner`,
//! `crypto_withdrawals_by_owner`) and `wallet_postings_by_wallet (wallet_id, booked_at, shard,
//! seq)` of 0021. A first page and a later one are two SQL texts, so
//! neither carries a `$n IS NULL OR ...` that a plan could not use the index through.
//!
//! Like the other listings these read the write-behind tables: an operation is listed once
//! its first record is durable, which is before its caller hears of it. Operation pages
//! return ids; the caller reads each operation's newest state from the engine.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{TransferId, UserId, WalletId};

use super::listing::Position;
use crate::store::StoreError;

/// Which of a customer's crypto operations to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoHistory {
    /// Buy and sell orders.
    Orders,
    Withdrawals,
}

impl CryptoHistory {
    /// The condition that selects the history: written exactly as its partial index's
    /// predicate, so both planners see that the index covers the query.
    pub const fn kind_condition(self) -> &'static str {
        match self {
            CryptoHistory::Orders => "kind IN ('buy', 'sell')",
            CryptoHistory::Withdrawals => "kind = 'withdrawal'",
        }
    }

    /// The partial index that serves the history (for the plan tests).
    pub const fn index(self) -> &'static str {
        match self {
            CryptoHistory::Orders => "crypto_orders_by_owner",
            CryptoHistory::Withdrawals => "crypto_withdrawals_by_owner",
        }
    }
}

/// The page query of a history (both backends): owner `$1`, limit `$2`, and after a cursor
/// `($3, $4)` = `(created_at, id)` of the previous page's last row.
pub fn op_page_sql(history: CryptoHistory, after: bool) -> String {
    let cursor = if after { "AND (created_at, id) < ($3, $4)" } else { "" };
    format!(
        "SELECT id, created_at FROM crypto_ops WHERE owner_id = $1 AND {} {cursor}
         ORDER BY created_at DESC, id DESC LIMIT $2",
        history.kind_condition()
    )
}

/// The wallet-postings page (both backends): wallet `$1`, limit `$2`, before the position
/// `($3, $4, $5)` = `(booked_at, shard, seq)`. The join reads each posting's operation by
/// primary key for its kind and time.
pub fn wallet_posting_page_sql(before: bool) -> String {
    let cursor = if before { "AND (wp.booked_at, wp.shard, wp.seq) < ($3, $4, $5)" } else { "" };
    format!(
        "SELECT wp.booked_at, wp.shard, wp.seq, wp.transfer_id, wp.direction, wp.amount, wp.asset, wp.balance_after,
                c.kind, c.created_at
         FROM wallet_postings wp LEFT JOIN crypto_ops c ON c.id = wp.transfer_id
         WHERE wp.wallet_id = $1 {cursor}
         ORDER BY wp.booked_at DESC, wp.shard DESC, wp.seq DESC LIMIT $2"
    )
}

/// A wallet posting's place: when it was booked, then its journal's shard and sequence (the
/// table's primary key is `(shard, seq)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletPostingPosition {
    pub booked_at: i64,
    pub shard: u16,
    pub seq: u64,
}

impl WalletPostingPosition {
    /// The posting's public id: its shard and sequence as one UUID (shard in the high 64
    /// bits), stable across reads and unique as the primary key.
    pub fn public_id(&self) -> uuid::Uuid {
        uuid::Uuid::from_u128((u128::from(self.shard) << 64) | u128::from(self.seq))
    }
}

/// One posting of a wallet, with its operation's kind and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletPostingRow {
    pub position: WalletPostingPosition,
    /// The crypto operation (deposit, withdrawal, buy, sell) the posting belongs to.
    pub operation: TransferId,
    /// The operation's kind (`deposit`, `withdrawal`, `buy`, `sell`).
    pub kind: String,
    pub credit: bool,
    pub amount: Decimal,
    pub asset: String,
    pub balance_after: Decimal,
    /// The operation's creation time (postings carry no time of their own).
    pub created_at: i64,
}

#[async_trait]
pub trait CryptoReads: Send + Sync + 'static {
    /// At most `limit` of `owner`'s operations in `history`, newest first, strictly after
    /// `after`.
    async fn crypto_op_page(
        &self,
        owner: UserId,
        history: CryptoHistory,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError>;

    /// At most `limit` postings of `wallet`, newest first, strictly before `before`.
    async fn wallet_posting_page(
        &self,
        wallet: WalletId,
        before: Option<WalletPostingPosition>,
        limit: u32,
    ) -> Result<Vec<WalletPostingRow>, StoreError>;
}

#[async_trait]
impl<R: CryptoReads + ?Sized> CryptoReads for std::sync::Arc<R> {
    async fn crypto_op_page(
        &self,
        owner: UserId,
        history: CryptoHistory,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        (**self).crypto_op_page(owner, history, after, limit).await
    }

    async fn wallet_posting_page(
        &self,
        wallet: WalletId,
        before: Option<WalletPostingPosition>,
        limit: u32,
    ) -> Result<Vec<WalletPostingRow>, StoreError> {
        (**self).wallet_posting_page(wallet, before, limit).await
    }
}

/// A posting row's operation columns, which the LEFT JOIN leaves empty only if the ledger
/// lost an operation row its postings need: that is corruption, never a silent omission.
pub(crate) fn operation_columns(
    seq: i64,
    kind: Option<String>,
    created_at: Option<i64>,
) -> Result<(String, i64), StoreError> {
    match (kind, created_at) {
        (Some(kind), Some(created_at)) => Ok((kind, created_at)),
        _ => Err(StoreError::Corrupt(format!("wallet posting {seq} has no crypto operation"))),
    }
}

/// A stored `(booked_at, shard, seq)` as a position, refusing what no journal writes.
pub(crate) fn position(booked_at: i64, shard: i64, seq: i64) -> Result<WalletPostingPosition, StoreError> {
    let shard = u16::try_from(shard).map_err(|_| StoreError::Corrupt(format!("wallet posting shard {shard}")))?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))?;
    Ok(WalletPostingPosition { booked_at, shard, seq })
}

/// A position's columns as bound to a page query (a cursor's sequence past `i64::MAX` cannot
/// be a stored one; it is clamped, which still pages correctly).
pub(crate) fn position_columns(position: WalletPostingPosition) -> (i64, i16, i64) {
    (
        position.booked_at,
        i16::try_from(position.shard).unwrap_or(i16::MAX),
        i64::try_from(position.seq).unwrap_or(i64::MAX),
    )
}
