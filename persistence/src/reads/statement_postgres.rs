//! `StatementReads` on Postgres, on the identity store's pool. The scope's accounts are walked
//! in id order (the primary key, or `accounts_by_owner` sorted), and for each the postings of
//! the period after the cursor are one range of the postings' key, at most a page of them:
//! a page reads at most `limit` postings, and probes each account it passes once (an account
//! with no posting in the period costs one index look-up).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{TransferId, UserId};
use uuid::Uuid;

use super::listing::{PostingPosition, posting_number, posting_number_to_db};
use super::statement::{StatementFilter, StatementLine, StatementReads, direction, scope_condition, scope_id};
use crate::postgres::classify;
use crate::store::StoreError;
use crate::users::postgres::PgUserStore;

type Row =
    (Uuid, i64, i64, Uuid, Option<Uuid>, String, String, Decimal, Decimal, String, Option<String>, Option<String>);

#[async_trait]
impl StatementReads for PgUserStore {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        let filter = *filter;
        let after = after.unwrap_or(PostingPosition { account: Uuid::nil(), booked_at: i64::MIN, version: 0 });
        self.run(|pool| async move {
            // The transfer is joined inside the lateral, before its limit, so a posting without
            // a transfer row (a crypto order's leg) cannot cut an account's lines short.
            let sql = format!(
                "SELECT a.id, p.booked_at, p.version, p.transfer_id, a.owner_id, p.currency, p.direction, p.amount,
                        p.balance_after, p.kind, p.reference, p.description
                 FROM accounts a CROSS JOIN LATERAL (
                     SELECT p.booked_at, p.version, p.transfer_id, p.currency, p.direction, p.amount,
                            p.balance_after, t.kind, t.reference, t.description
                     FROM postings p JOIN transfers t ON t.id = p.transfer_id
                     WHERE p.account_id = a.id
                       AND p.booked_at >= $1 AND p.booked_at < $2
                       AND ($4::text IS NULL OR p.direction = $4)
                       AND (p.account_id, p.booked_at, p.version) > ($5, $6, $7)
                     ORDER BY p.booked_at, p.version LIMIT $8
                 ) p
                 WHERE {} AND a.id >= $5
                 ORDER BY a.id, p.booked_at, p.version LIMIT $8",
                scope_condition(filter.scope, "$3::uuid")
            );
            let rows: Vec<Row> = sqlx::query_as(&sql)
                .bind(filter.from)
                .bind(filter.to)
                .bind(scope_id(filter.scope))
                .bind(direction(filter.credit))
                .bind(after.account)
                .bind(after.booked_at)
                .bind(posting_number_to_db(after.version))
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.into_iter()
                .map(
                    |(
                        account,
                        booked_at,
                        number,
                        transfer,
                        owner,
                        currency,
                        direction,
                        amount,
                        balance_after,
                        transfer_kind,
                        reference,
                        description,
                    )| {
                        Ok(StatementLine {
                            position: PostingPosition { account, booked_at, version: posting_number(number)? },
                            transfer: TransferId::from_uuid(transfer),
                            owner: owner.map(UserId::from_uuid),
                            currency,
                            credit: direction == "credit",
                            amount,
                            balance_after,
                            transfer_kind,
                            reference,
                            description,
                            booked_at,
                        })
                    },
                )
                .collect()
        })
        .await
    }
}
