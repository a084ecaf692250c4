//! `LedgerReads` on Postgres, on the identity store's pool. Each query's text fixes which
//! index serves it (a catch-all `$n IS NULL OR ...` would let a generic plan ignore the index),
//! and every page is a range of the index's key after the cursor:
//!
//! - the admin's transfers: the primary key, newest first (ids are time-ordered); with a status
//!   other than `completed`, `transfers_not_completed_by_status`; with `completed`, the primary
//!   key skipping the few rows in another status;
//! - a customer's transfers: for each of their accounts, `transfers_by_source` and
//!   `transfers_by_destination` from the cursor down, at most a page from each, merged (a
//!   status filter skips the account's transfers in other statuses);
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
    count, posting_number, posting_number_to_db, prefix_pattern, status_condition,
};
use crate::store::StoreError;
use crate::users::postgres::{PgUserStore, classify};

const ACCOUNT_WHERE: &str = "kind = 'user'
    AND ($1::text IS NULL OR status = $1)
    AND ($2::text IS NULL OR currency = $2)
    AND ($3::uuid IS NULL OR owner_id = $3)
    AND ($4::text IS NULL OR id::text LIKE $4
        OR owner_id IN (SELECT id FROM users WHERE email_normalized LIKE $4))";

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
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        let filter = filter.clone();
        let (after_op, direction, no_cursor) = filter.order.keyset();
        let after = after.map_or(no_cursor, |position| position.id);
        self.run(|pool| async move {
            let rows: Vec<(Uuid, i64)> = match filter.party {
                Some(party) => {
                    let (status, compared) = status_condition(filter.status.as_deref(), "$4");
                    let sql = format!(
                        "SELECT x.id, x.created_at FROM accounts a CROSS JOIN LATERAL (
                             (SELECT id, created_at FROM transfers
                              WHERE source_id = a.id AND id {after_op} $2 AND {status}
                              ORDER BY id {direction} LIMIT $3)
                             UNION ALL
                             (SELECT id, created_at FROM transfers
                              WHERE destination_id = a.id AND id {after_op} $2 AND {status}
                              ORDER BY id {direction} LIMIT $3)
                         ) x
                         WHERE a.owner_id = $1
                         GROUP BY x.id, x.created_at ORDER BY x.id {direction} LIMIT $3"
                    );
                    let query = sqlx::query_as(&sql).bind(party.as_uuid()).bind(after).bind(i64::from(limit));
                    compared.into_iter().fold(query, |query, status| query.bind(status)).fetch_all(&pool).await
                }
                None => {
                    let (status, compared) = status_condition(filter.status.as_deref(), "$3");
                    let sql = format!(
                        "SELECT id, created_at FROM transfers WHERE id {after_op} $1 AND {status}
                         ORDER BY id {direction} LIMIT $2"
                    );
                    let query = sqlx::query_as(&sql).bind(after).bind(i64::from(limit));
                    compared.into_iter().fold(query, |query, status| query.bind(status)).fetch_all(&pool).await
                }
            }
            .map_err(classify)?;
            Ok(transfer_positions(rows))
        })
        .await
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            let value: i64 = match filter.party {
                Some(party) => {
                    let (status, compared) = status_condition(filter.status.as_deref(), "$2");
                    let sql = format!(
                        "SELECT COUNT(*) FROM (
                             SELECT id FROM transfers
                             WHERE source_id IN (SELECT id FROM accounts WHERE owner_id = $1) AND {status}
                             UNION
                             SELECT id FROM transfers
                             WHERE destination_id IN (SELECT id FROM accounts WHERE owner_id = $1) AND {status}
                         ) mine"
                    );
                    let query = sqlx::query_scalar(&sql).bind(party.as_uuid());
                    compared.into_iter().fold(query, |query, status| query.bind(status)).fetch_one(&pool).await
                }
                None => {
                    let (status, compared) = status_condition(filter.status.as_deref(), "$1");
                    let sql = format!("SELECT COUNT(*) FROM transfers WHERE {status}");
                    let query = sqlx::query_scalar(&sql);
                    compared.into_iter().fold(query, |query, status| query.bind(status)).fetch_one(&pool).await
                }
            }
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
