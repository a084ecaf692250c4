//! `LedgerReads` on SQLite, on the identity store's pool: the queries of
//! `listing_postgres.rs` in SQLite's dialect, on the same indexes. Ids are lowercase
//! hyphenated text, so a prefix of the text form is a prefix of the column and text order is
//! id order; amounts are exact decimal text. SQLite has no `LATERAL`: a customer's transfers
//! are one `OR` of their accounts' source and destination index ranges, which SQLite reads
//! as a union of index look-ups and sorts by id (the caller's transfers, not the table's),
//! descending or, oldest first, ascending.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId};

use super::listing::{
    AccountFilter, DAY_MICROS, LedgerReads, Position, PostingFilter, PostingPosition, PostingRow, TransferFilter,
    TransferPage, count, posting_number, posting_number_to_db, prefix_pattern,
};
use super::transfer_query::{self, Arg, Dialect};
use crate::sqlite::classify;
use crate::sqlite::decimal_from_db;
use crate::store::StoreError;
use crate::users::sqlite::{SqliteUserStore, id_to_db, uuid_from_db};

/// Binds a built query's arguments in placeholder order, in SQLite's column forms (ids as
/// text, amounts as `transfer_query::amount_key`).
macro_rules! bind_all {
    ($query:expr, $args:expr) => {
        $args.into_iter().fold($query, |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(value) => query.bind(value),
            Arg::Id(id) => query.bind(id_to_db(id)),
            Arg::Amount(amount) => query.bind(transfer_query::amount_key(amount)),
        })
    };
}

const ACCOUNT_WHERE: &str = "kind = 'user'
    AND (?1 IS NULL OR status = ?1)
    AND (?2 IS NULL OR currency = ?2)
    AND (?3 IS NULL OR owner_id = ?3)
    AND (?4 IS NULL OR id LIKE ?4
        OR owner_id IN (SELECT id FROM users WHERE email_normalized LIKE ?4))";

fn positions<T>(rows: Vec<(String, i64)>, make: fn(uuid::Uuid) -> T) -> Result<Vec<(T, Position)>, StoreError> {
    rows.into_iter()
        .map(|(id, created_at)| {
            let id = uuid_from_db(&id, "id")?;
            Ok((make(id), Position { created_at, id }))
        })
        .collect()
}

#[async_trait]
impl LedgerReads for SqliteUserStore {
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<TransferPage, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let bound = match transfer_query::scan_bound(Dialect::Sqlite, &filter, after) {
                Some(query) => {
                    let row: Option<(String, i64)> = bind_all!(sqlx::query_as(&query.sql), query.args)
                        .fetch_optional(&pool)
                        .await
                        .map_err(classify)?;
                    row.map(|(id, created_at)| {
                        Ok::<_, StoreError>(Position { created_at, id: uuid_from_db(&id, "id")? })
                    })
                    .transpose()?
                }
                None => None,
            };
            let query = transfer_query::page(Dialect::Sqlite, &filter, after, limit, bound.map(|position| position.id));
            let rows: Vec<(String, i64)> =
                bind_all!(sqlx::query_as(&query.sql), query.args).fetch_all(&pool).await.map_err(classify)?;
            Ok(TransferPage { rows: positions(rows, TransferId::from_uuid)?, scanned_to: bound })
        })
        .await
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let query = transfer_query::count(Dialect::Sqlite, &filter);
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
                 AND (?5 IS NULL OR (created_at, id) < (?5, ?6))
                 ORDER BY created_at DESC, id DESC LIMIT ?7"
            );
            let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
                .bind(filter.status)
                .bind(filter.currency)
                .bind(filter.owner.map(|user| id_to_db(user.as_uuid())))
                .bind(filter.search.as_deref().map(prefix_pattern))
                .bind(after.map(|p| p.created_at))
                .bind(after.map(|p| id_to_db(p.id)))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            positions(rows, AccountId::from_uuid)
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
                .bind(filter.owner.map(|user| id_to_db(user.as_uuid())))
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
            let rows: Vec<(i64, i64, String, String, String, String, String, Option<String>)> = sqlx::query_as(
                "SELECT p.booked_at, p.version, p.transfer_id, p.direction, p.amount, p.currency, p.balance_after,
                        t.description
                 FROM postings p JOIN transfers t ON t.id = p.transfer_id
                 WHERE p.account_id = ?1
                   AND p.booked_at >= ?2 AND p.booked_at < ?3
                   AND (p.booked_at, p.version) < (?4, ?5)
                   AND (?6 IS NULL OR p.direction = ?6)
                 ORDER BY p.booked_at DESC, p.version DESC LIMIT ?7",
            )
            .bind(id_to_db(account.as_uuid()))
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
                        transfer: TransferId::from_uuid(uuid_from_db(&transfer, "postings.transfer_id")?),
                        credit: direction == "credit",
                        amount: decimal_from_db(&amount, "postings.amount")?,
                        currency,
                        balance_after: decimal_from_db(&balance_after, "postings.balance_after")?,
                        description,
                    })
                })
                .collect()
        })
        .await
    }

    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError> {
        self.run(|pool| async move {
            let text: Option<String> = sqlx::query_scalar(
                "SELECT balance_after FROM postings WHERE account_id = ?1 AND booked_at < ?2
                 ORDER BY booked_at DESC, version DESC LIMIT 1",
            )
            .bind(id_to_db(account.as_uuid()))
            .bind(before)
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
            text.map(|text| decimal_from_db(&text, "postings.balance_after")).transpose()
        })
        .await
    }

    async fn daily_closing_balances(&self, account: AccountId, from: i64) -> Result<Vec<(i64, Decimal)>, StoreError> {
        self.run(|pool| async move {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT day, balance_after FROM (
                     SELECT booked_at / ?3 AS day, balance_after,
                            ROW_NUMBER() OVER (PARTITION BY booked_at / ?3 ORDER BY booked_at DESC, version DESC) AS last
                     FROM postings WHERE account_id = ?1 AND booked_at >= ?2
                 ) WHERE last = 1 ORDER BY day",
            )
            .bind(id_to_db(account.as_uuid()))
            .bind(from)
            .bind(DAY_MICROS)
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.into_iter().map(|(day, text)| Ok((day, decimal_from_db(&text, "postings.balance_after")?))).collect()
        })
        .await
    }
}
