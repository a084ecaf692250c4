//! `StatementReads` for both identity stores, written once (`crate::sql`), on their pools.
//!
//! A page is the scope's postings in the period after the cursor, in the postings' key order
//! (account, booked_at, version), at most `limit` of them. The two backends walk it
//! differently, each on its best plan:
//!
//! - Postgres walks the scope's accounts in id order (the primary key, or `accounts_by_owner`
//!   sorted), and for each the postings of the period after the cursor are one range of the
//!   postings' key, at most a page of them (`LATERAL`): a page reads at most `limit` postings,
//!   and probes each account it passes once (an account with no posting in the period costs
//!   one index look-up).
//! - SQLite has no `LATERAL`: a page walks the postings' key from the cursor, joined to the
//!   scope's accounts, so postings outside the period are stepped over in the index rather
//!   than probed per account.

use async_trait::async_trait;
use tally_engine::TransferId;
use uuid::Uuid;

use super::listing::{PostingPosition, posting_number, posting_number_to_db};
use super::statement::{
    StatementFilter, StatementLine, StatementReads, StatementScope, direction, scope_condition, scope_id,
};
use crate::sql::{Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

/// The page on Postgres. Parameters: period `[$1, $2)`, scope id `$3`, direction `$4`, cursor
/// `($5, $6, $7)`, limit `$8`. A posting without a transfer row (a crypto order's fiat leg,
/// whose id is the order's) is a line too, of type `crypto_buy` or `crypto_sell` (`LINE_KIND`):
/// leaving it out would break the running balance the lines add up to.
fn lateral_page_sql(scope: StatementScope) -> String {
    format!(
        "SELECT a.id AS account_id, p.booked_at, p.version, p.transfer_id, a.owner_id, p.currency, p.direction,
                p.amount, p.balance_after, p.kind, p.reference, p.description
         FROM accounts a CROSS JOIN LATERAL (
             SELECT p.booked_at, p.version, p.transfer_id, p.currency, p.direction, p.amount,
                    p.balance_after, {LINE_KIND} AS kind, t.reference, {LINE_DESCRIPTION} AS description
             FROM postings p
             LEFT JOIN transfers t ON t.id = p.transfer_id
             LEFT JOIN crypto_ops c ON t.id IS NULL AND c.id = p.transfer_id
             WHERE p.account_id = a.id
               AND p.booked_at >= $1 AND p.booked_at < $2
               AND ($4 IS NULL OR p.direction = $4)
               AND (p.account_id, p.booked_at, p.version) > ($5, $6, $7)
             ORDER BY p.booked_at, p.version LIMIT $8
         ) p
         WHERE {} AND a.id >= $5
         ORDER BY a.id, p.booked_at, p.version LIMIT $8",
        scope_condition(scope, "$3")
    )
}

/// The page on SQLite, with the same parameters and columns.
fn joined_page_sql(scope: StatementScope) -> String {
    format!(
        "SELECT p.account_id, p.booked_at, p.version, p.transfer_id, a.owner_id, p.currency, p.direction,
                p.amount, p.balance_after, {LINE_KIND} AS kind, t.reference, {LINE_DESCRIPTION} AS description
         FROM postings p
         LEFT JOIN transfers t ON t.id = p.transfer_id
         LEFT JOIN crypto_ops c ON t.id IS NULL AND c.id = p.transfer_id
         JOIN accounts a ON a.id = p.account_id
         WHERE {}
           AND p.booked_at >= $1 AND p.booked_at < $2
           AND ($4 IS NULL OR p.direction = $4)
           AND (p.account_id, p.booked_at, p.version) > ($5, $6, $7)
         ORDER BY p.account_id, p.booked_at, p.version LIMIT $8",
        scope_condition(scope, "$3")
    )
}

/// A line's type, over `transfers t` and `crypto_ops c` left-joined to a posting: the
/// transfer's type, or `crypto_` and the order's kind for an order's leg.
pub(crate) const LINE_KIND: &str = "COALESCE(t.kind, 'crypto_' || c.kind, 'unknown')";

/// A line's description, over the same joins: the transfer's, or `crypto buy` / `crypto sell`
/// and the asset for an order's leg.
pub(crate) const LINE_DESCRIPTION: &str = "CASE WHEN t.id IS NOT NULL THEN t.description WHEN c.id IS NOT NULL THEN 'crypto ' || c.kind || ' ' || c.asset END";

#[async_trait]
impl<S: IdentitySql> StatementReads for S {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        let filter = *filter;
        let after = after.unwrap_or(PostingPosition { account: Uuid::nil(), booked_at: i64::MIN, version: 0 });
        run_on_backend!(self, |pool| {
            let sql = if dialect::HAS_LATERAL { lateral_page_sql(filter.scope) } else { joined_page_sql(filter.scope) };
            let rows = sqlx::query(&sql)
                .bind(filter.from)
                .bind(filter.to)
                .bind(scope_id(filter.scope).map(Id))
                .bind(direction(filter.credit))
                .bind(Id(after.account))
                .bind(after.booked_at)
                .bind(posting_number_to_db(after.version))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let booked_at: i64 = row.decode("booked_at")?;
                    let direction: String = row.decode("direction")?;
                    Ok(StatementLine {
                        position: PostingPosition {
                            account: row.decode("account_id")?,
                            booked_at,
                            version: posting_number(row.decode("version")?)?,
                        },
                        transfer: TransferId::from_uuid(row.decode("transfer_id")?),
                        owner: row.decode("owner_id")?,
                        currency: row.decode("currency")?,
                        credit: direction == "credit",
                        amount: row.decode("amount")?,
                        balance_after: row.decode("balance_after")?,
                        transfer_kind: row.decode("kind")?,
                        reference: row.decode("reference")?,
                        description: row.decode("description")?,
                        booked_at,
                    })
                })
                .collect()
        })
    }
}
