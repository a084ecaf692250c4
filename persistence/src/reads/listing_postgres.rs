//! `LedgerReads` on Postgres, on the identity store's pool. Each query's text fixes which
//! index serves it (a catch-all `$n IS NULL OR ...` would let a generic plan ignore the index),
//! and every page is a range of the index's key after the cursor:
//!
//! - the transfer listings: `transfer_query.rs` (shared with SQLite) builds their SQL and says
//!   which index serves each filter: the admin's transfers by the primary key, newest first (ids
//!   are time-ordered), `transfers_not_completed_by_status` for a status other than
//!   `completed`, or `transfers_by_metadata`; a customer's (or one account's) by
//!   `transfers_by_source` and `transfers_by_destination` from the cursor down, at most a page
//!   from each, merged;
//! - either transfer listing oldest first (`Order::OldestFirst`, the admins' pending queue):
//!   the same ranges read upwards from the cursor (`id >` it, ascending);
//! - an account's postings, opening balances and daily closings: the postings' key
//!   (account, booked_at, version).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId};
use uuid::Uuid;

use super::listing::{
    AccountFilter, DAY_MICROS, LedgerReads, Position, PostingFilter, PostingPosition, PostingRow, TransferFilter,
    TransferPage, count, posting_number, posting_number_to_db, prefix_pattern,
};
use super::transfer_query::{self, Arg, Dialect};
use crate::postgres::classify;
use crate::store::StoreError;
use crate::users::postgres::PgUserStore;

const ACCOUNT_WHERE: &str = "kind = 'user'
    AND ($1::text IS NULL OR status = $1)
    AND ($2::text IS NULL OR currency = $2)
    AND ($3::uuid IS NULL OR owner_id = $3)
    AND ($4::text IS NULL OR id::text LIKE $4
        OR owner_id IN (SELECT id FROM users WHERE email_normalized LIKE $4))";

/// Binds a built query's arguments in placeholder order, in Postgres's column types.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {
        $args.into_iter().fold($query, |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(value) => query.bind(value),
            Arg::Id(id) => query.bind(id),
            Arg::Amount(amount) => query.bind(amount),
        })
    };
}

/// A page of (id, created_at) rows as listing entries.
fn transfer_positions(rows: Vec<(Uuid, i64)>) -> Vec<(TransferId, Position)> {
    rows.into_iter().map(|(id, created_at)| (TransferId::from_uuid(id), Position { created_at, id })).collect()
}

#[async_trait]
impl LedgerReads for PgUserStore {
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<TransferPage, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            // A table-wide page that filters on what no index serves first finds the last row
            // it may examine; without one (a range shorter than the bound) it needs none.
            let bound = match transfer_query::scan_bound(Dialect::Postgres, &filter, after) {
                Some(query) => {
                    let row: Option<(Uuid, i64)> = bind_all!(sqlx::query_as(&query.sql), query.args)
                        .fetch_optional(&pool)
                        .await
                        .map_err(classify)?;
                    row.map(|(id, created_at)| Position { created_at, id })
                }
                None => None,
            };
            let query =
                transfer_query::page(Dialect::Postgres, &filter, after, limit, bound.map(|position| position.id));
            let rows: Vec<(Uuid, i64)> =
                bind_all!(sqlx::query_as(&query.sql), query.args).fetch_all(&pool).await.map_err(classify)?;
            Ok(TransferPage { rows: transfer_positions(rows), scanned_to: bound })
        })
        .await
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let query = transfer_query::count(Dialect::Postgres, &filter);
            let value: i64 =
                bind_all!(sqlx::query_scalar(&query.sql), query.args).fetch_one(&pool).await.map_err(classify)?;
            count(value)
        })
        .await
    }

    async fn account_page(
        &self,
        filter: &AccountFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(AccountId, Position)>, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let sql = format!(
                "SELECT id, created_at FROM accounts WHERE {ACCOUNT_WHERE}
                 AND ($5::bigint IS NULL OR (created_at, id) < ($5, $6::uuid))
                 ORDER BY created_at DESC, id DESC LIMIT $7"
            );
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(&sql)
                .bind(filter.status)
                .bind(filter.currency)
                .bind(filter.owner.map(|user| user.as_uuid()))
                .bind(filter.search.as_deref().map(prefix_pattern))
                .bind(after.map(|p| p.created_at))
                .bind(after.map(|p| p.id))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|(id, created_at)| (AccountId::from_uuid(id), Position { created_at, id }))
                .collect())
        })
        .await
    }

    async fn count_accounts(&self, filter: &AccountFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let sql = format!("SELECT COUNT(*) FROM accounts WHERE {ACCOUNT_WHERE}");
            let value: i64 = sqlx::query_scalar(&sql)
                .bind(filter.status)
                .bind(filter.currency)
                .bind(filter.owner.map(|user| user.as_uuid()))
                .bind(filter.search.as_deref().map(prefix_pattern))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            count(value)
        })
        .await
    }

    async fn posting_page(
        &self,
        account: AccountId,
        filter: PostingFilter,
        before: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<PostingRow>, StoreError> {
        let (before_at, before_version) = before
            .map_or((i64::MAX, i64::MAX), |position| (position.booked_at, posting_number_to_db(position.version)));
        self.run(|pool| async move {
            let rows: Vec<(i64, i64, Uuid, String, Decimal, String, Decimal, Option<String>)> = sqlx::query_as(
                "SELECT p.booked_at, p.version, p.transfer_id, p.direction, p.amount, p.currency, p.balance_after,
                        t.description
                 FROM postings p JOIN transfers t ON t.id = p.transfer_id
                 WHERE p.account_id = $1
                   AND p.booked_at >= $2 AND p.booked_at < $3
                   AND (p.booked_at, p.version) < ($4, $5)
                   AND ($6::text IS NULL OR p.direction = $6)
                 ORDER BY p.booked_at DESC, p.version DESC LIMIT $7",
            )
            .bind(account.as_uuid())
            .bind(filter.from.unwrap_or(i64::MIN))
            .bind(filter.to.unwrap_or(i64::MAX))
            .bind(before_at)
            .bind(before_version)
            .bind(filter.credit.map(|credit| if credit { "credit" } else { "debit" }))
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.into_iter()
                .map(|(booked_at, number, transfer, direction, amount, currency, balance_after, description)| {
                    Ok(PostingRow {
                        position: PostingPosition {
                            account: account.as_uuid(),
                            booked_at,
                            version: posting_number(number)?,
                        },
                        transfer: TransferId::from_uuid(transfer),
                        credit: direction == "credit",
                        amount,
                        currency,
                        balance_after,
                        description,
                    })
                })
                .collect()
        })
        .await
    }

    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError> {
        self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT balance_after FROM postings WHERE account_id = $1 AND booked_at < $2
                 ORDER BY booked_at DESC, version DESC LIMIT 1",
            )
            .bind(account.as_uuid())
            .bind(before)
            .fetch_optional(&pool)
            .await
            .map_err(classify)
        })
        .await
    }

    async fn daily_closing_balances(&self, account: AccountId, from: i64) -> Result<Vec<(i64, Decimal)>, StoreError> {
        self.run(|pool| async move {
            sqlx::query_as(
                "SELECT day, balance_after FROM (
                     SELECT booked_at / $3 AS day, balance_after,
                            ROW_NUMBER() OVER (PARTITION BY booked_at / $3 ORDER BY booked_at DESC, version DESC) AS last
                     FROM postings WHERE account_id = $1 AND booked_at >= $2
                 ) days WHERE last = 1 ORDER BY day",
            )
            .bind(account.as_uuid())
            .bind(from)
            .bind(DAY_MICROS)
            .fetch_all(&pool)
            .await
            .map_err(classify)
        })
        .await
    }
}
