//! `LedgerReads` for both identity stores, written once (`crate::sql`), on their pools. Each
//! query's text fixes which index serves it (a catch-all `$n IS NULL OR ...` would let a
//! generic plan ignore the index), and every page is a range of the index's key after the
//! cursor:
//!
//! - the transfer listings: `transfer_query.rs` builds their SQL in each backend's dialect and
//!   says which index serves each filter: the admin's transfers by the primary key, newest
//!   first (ids are time-ordered), `transfers_not_completed_by_status` for a status other than
//!   `completed`, or `transfers_by_metadata`; a customer's (or one account's) by
//!   `transfers_by_source` and `transfers_by_destination` from the cursor down, at most a page
//!   from each, merged (on SQLite, which has no `LATERAL`, one `OR` of those ranges that it
//!   reads as a union of index look-ups);
//! - either transfer listing oldest first (`Order::OldestFirst`, the admins' pending queue):
//!   the same ranges read upwards from the cursor (`id >` it, ascending);
//! - an account's postings, opening balances and daily closings: the postings' key
//!   (account, booked_at, version).
//!
//! On SQLite ids are lowercase hyphenated text, so a prefix of the text form is a prefix of
//! the column and text order is id order; amounts are exact decimal text.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId};

use super::listing::{
    AccountFilter, DAY_MICROS, LedgerReads, Position, PostingFilter, PostingPosition, PostingRow, TransferFilter,
    TransferPage, count, posting_number, posting_number_to_db, prefix_pattern,
};
use super::statement_sql::LINE_DESCRIPTION;
use super::transfer_query::{self, Arg, ListedAmount};
use crate::sql::{Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

/// `WHERE` of an account listing or count: `$1` status, `$2` currency, `$3` owner, `$4` search
/// (a `prefix_pattern` of an id or an email).
const ACCOUNT_WHERE: &str = "kind = 'user'
    AND ($1 IS NULL OR status = $1)
    AND ($2 IS NULL OR currency = $2)
    AND ($3 IS NULL OR owner_id = $3)
    AND ($4 IS NULL OR CAST(id AS TEXT) LIKE $4
        OR owner_id IN (SELECT id FROM users WHERE email_normalized LIKE $4))";

/// Binds a built query's arguments in placeholder order, in the backend's column forms.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {
        $args.into_iter().fold($query, |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(value) => query.bind(value),
            Arg::Id(id) => query.bind(Id(id)),
            Arg::Amount(amount) => query.bind(ListedAmount(amount)),
        })
    };
}

/// A page of (id, created_at) rows as listing entries.
fn positions<T>(rows: Vec<(Id, i64)>, make: fn(uuid::Uuid) -> T) -> Vec<(T, Position)> {
    rows.into_iter().map(|(Id(id), created_at)| (make(id), Position { created_at, id })).collect()
}

#[async_trait]
impl<S: IdentitySql> LedgerReads for S {
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<TransferPage, StoreError> {
        let filter = filter.clone();
        run_on_backend!(self, |pool| {
            // A table-wide page that filters on what no index serves first finds the last row
            // it may examine; without one (a range shorter than the bound) it needs none.
            let bound = match transfer_query::scan_bound(dialect::TRANSFER_QUERIES, &filter, after) {
                Some(query) => {
                    let row: Option<(Id, i64)> = bind_all!(sqlx::query_as(&query.sql), query.args)
                        .fetch_optional(&pool)
                        .await
                        .map_err(classify)?;
                    row.map(|(Id(id), created_at)| Position { created_at, id })
                }
                None => None,
            };
            let query = transfer_query::page(
                dialect::TRANSFER_QUERIES,
                &filter,
                after,
                limit,
                bound.map(|position| position.id),
            );
            let rows: Vec<(Id, i64)> =
                bind_all!(sqlx::query_as(&query.sql), query.args).fetch_all(&pool).await.map_err(classify)?;
            Ok(TransferPage { rows: positions(rows, TransferId::from_uuid), scanned_to: bound })
        })
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        run_on_backend!(self, |pool| {
            let query = transfer_query::count(dialect::TRANSFER_QUERIES, &filter);
            let value: i64 =
                bind_all!(sqlx::query_scalar(&query.sql), query.args).fetch_one(&pool).await.map_err(classify)?;
            count(value)
        })
    }

    async fn account_page(
        &self,
        filter: &AccountFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(AccountId, Position)>, StoreError> {
        let filter = filter.clone();
        run_on_backend!(self, |pool| {
            let sql = format!(
                "SELECT id, created_at FROM accounts WHERE {ACCOUNT_WHERE}
                 AND ($5 IS NULL OR (created_at, id) < ($5, $6))
                 ORDER BY created_at DESC, id DESC LIMIT $7"
            );
            let rows: Vec<(Id, i64)> = sqlx::query_as(&sql)
                .bind(filter.status)
                .bind(filter.currency)
                .bind(filter.owner.map(Id::from))
                .bind(filter.search.as_deref().map(prefix_pattern))
                .bind(after.map(|p| p.created_at))
                .bind(after.map(|p| Id(p.id)))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            Ok(positions(rows, AccountId::from_uuid))
        })
    }

    async fn count_accounts(&self, filter: &AccountFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        run_on_backend!(self, |pool| {
            let sql = format!("SELECT COUNT(*) FROM accounts WHERE {ACCOUNT_WHERE}");
            let value: i64 = sqlx::query_scalar(&sql)
                .bind(filter.status)
                .bind(filter.currency)
                .bind(filter.owner.map(Id::from))
                .bind(filter.search.as_deref().map(prefix_pattern))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            count(value)
        })
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
        run_on_backend!(self, |pool| {
            // An order's leg has no transfer row and is a transaction too (statement_sql.rs).
            let sql = format!(
                "SELECT p.booked_at, p.version, p.transfer_id, p.direction, p.amount, p.currency, p.balance_after,
                        {LINE_DESCRIPTION} AS description
                 FROM postings p
                 LEFT JOIN transfers t ON t.id = p.transfer_id
                 LEFT JOIN crypto_ops c ON t.id IS NULL AND c.id = p.transfer_id
                 WHERE p.account_id = $1
                   AND p.booked_at >= $2 AND p.booked_at < $3
                   AND (p.booked_at, p.version) < ($4, $5)
                   AND ($6 IS NULL OR p.direction = $6)
                 ORDER BY p.booked_at DESC, p.version DESC LIMIT $7"
            );
            let rows = sqlx::query(&sql)
                .bind(Id(account.as_uuid()))
                .bind(filter.from.unwrap_or(i64::MIN))
                .bind(filter.to.unwrap_or(i64::MAX))
                .bind(before_at)
                .bind(before_version)
                .bind(filter.credit.map(|credit| if credit { "credit" } else { "debit" }))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let direction: String = row.decode("direction")?;
                    Ok(PostingRow {
                        position: PostingPosition {
                            account: account.as_uuid(),
                            booked_at: row.decode("booked_at")?,
                            version: posting_number(row.decode("version")?)?,
                        },
                        transfer: TransferId::from_uuid(row.decode("transfer_id")?),
                        credit: direction == "credit",
                        amount: row.decode("amount")?,
                        currency: row.decode("currency")?,
                        balance_after: row.decode("balance_after")?,
                        description: row.decode("description")?,
                    })
                })
                .collect()
        })
    }

    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(
                "SELECT balance_after FROM postings WHERE account_id = $1 AND booked_at < $2
                 ORDER BY booked_at DESC, version DESC LIMIT 1",
            )
            .bind(Id(account.as_uuid()))
            .bind(before)
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
            row.map(|row| row.decode("balance_after")).transpose()
        })
    }

    async fn daily_closing_balances(&self, account: AccountId, from: i64) -> Result<Vec<(i64, Decimal)>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(
                "SELECT day, balance_after FROM (
                     SELECT booked_at / $3 AS day, balance_after,
                            ROW_NUMBER() OVER (PARTITION BY booked_at / $3 ORDER BY booked_at DESC, version DESC) AS last
                     FROM postings WHERE account_id = $1 AND booked_at >= $2
                 ) days WHERE last = 1 ORDER BY day",
            )
            .bind(Id(account.as_uuid()))
            .bind(from)
            .bind(DAY_MICROS)
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(|row| Ok((row.decode("day")?, row.decode("balance_after")?))).collect()
        })
    }
}
