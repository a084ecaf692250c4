//! `LedgerReads` on Postgres, on the identity store's pool. Optional filters are written as
//! `($n IS NULL OR column = $n)` so one prepared statement serves every combination; the
//! planner still uses the index of the filter that is present (0005_listings.sql).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId};
use uuid::Uuid;

use super::listing::{
    AccountFilter, DAY_MICROS, LedgerReads, Position, PostingFilter, PostingRow, TransferFilter, count, prefix_pattern,
};
use crate::store::StoreError;
use crate::users::postgres::{PgUserStore, classify};

/// A customer's side of a transfer: they own its source or its destination.
const TRANSFER_WHERE: &str = "($1::uuid IS NULL
        OR source_id IN (SELECT id FROM accounts WHERE owner_id = $1)
        OR destination_id IN (SELECT id FROM accounts WHERE owner_id = $1))
    AND ($2::text IS NULL OR status = $2)";

const ACCOUNT_WHERE: &str = "kind = 'user'
    AND ($1::text IS NULL OR status = $1)
    AND ($2::text IS NULL OR currency = $2)
    AND ($3::uuid IS NULL OR owner_id = $3)
    AND ($4::text IS NULL OR id::text LIKE $4
        OR owner_id IN (SELECT id FROM users WHERE email_normalized LIKE $4))";

fn seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative seq {value}")))
}

#[async_trait]
impl LedgerReads for PgUserStore {
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        let filter = filter.clone();
        let (after_op, direction) = filter.order.keyset();
        self.run(|pool| async move {
            let sql = format!(
                "SELECT id, created_at FROM transfers WHERE {TRANSFER_WHERE}
                 AND ($3::bigint IS NULL OR (created_at, id) {after_op} ($3, $4::uuid))
                 ORDER BY created_at {direction}, id {direction} LIMIT $5"
            );
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(&sql)
                .bind(filter.party.map(|user| user.as_uuid()))
                .bind(filter.status)
                .bind(after.map(|p| p.created_at))
                .bind(after.map(|p| p.id))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|(id, created_at)| (TransferId::from_uuid(id), Position { created_at, id }))
                .collect())
        })
        .await
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let sql = format!("SELECT COUNT(*) FROM transfers WHERE {TRANSFER_WHERE}");
            let value: i64 = sqlx::query_scalar(&sql)
                .bind(filter.party.map(|user| user.as_uuid()))
                .bind(filter.status)
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
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
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<PostingRow>, StoreError> {
        let before = before_seq.map(|seq| i64::try_from(seq).unwrap_or(i64::MAX));
        self.run(|pool| async move {
            // postings_by_account (account_id, seq) serves the walk backwards; the time
            // filters are on the joined transfer.
            let rows: Vec<(i64, Uuid, String, Decimal, String, Decimal, Option<String>, i64)> = sqlx::query_as(
                "SELECT p.seq, p.transfer_id, p.direction, p.amount, p.currency, p.balance_after,
                        t.description, t.created_at
                 FROM postings p JOIN transfers t ON t.id = p.transfer_id
                 WHERE p.account_id = $1
                   AND ($2::text IS NULL OR p.direction = $2)
                   AND ($3::bigint IS NULL OR t.created_at >= $3)
                   AND ($4::bigint IS NULL OR t.created_at < $4)
                   AND ($5::bigint IS NULL OR p.seq < $5)
                 ORDER BY p.seq DESC LIMIT $6",
            )
            .bind(account.as_uuid())
            .bind(filter.credit.map(|credit| if credit { "credit" } else { "debit" }))
            .bind(filter.from)
            .bind(filter.to)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.into_iter()
                .map(|(seq_value, transfer, direction, amount, currency, balance_after, description, created_at)| {
                    Ok(PostingRow {
                        seq: seq(seq_value)?,
                        transfer: TransferId::from_uuid(transfer),
                        credit: direction == "credit",
                        amount,
                        currency,
                        balance_after,
                        description,
                        created_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError> {
        self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT p.balance_after FROM postings p JOIN transfers t ON t.id = p.transfer_id
                 WHERE p.account_id = $1 AND t.created_at < $2 ORDER BY p.seq DESC LIMIT 1",
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
                     SELECT t.created_at / $3 AS day, p.balance_after,
                            ROW_NUMBER() OVER (PARTITION BY t.created_at / $3 ORDER BY p.seq DESC) AS last
                     FROM postings p JOIN transfers t ON t.id = p.transfer_id
                     WHERE p.account_id = $1 AND t.created_at >= $2
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
