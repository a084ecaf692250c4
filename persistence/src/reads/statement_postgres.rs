//! `StatementReads` on Postgres, on the identity store's pool.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId, UserId};
use uuid::Uuid;

use super::statement::{StatementFilter, StatementLine, StatementReads, direction, scope_condition, scope_id};
use crate::store::StoreError;
use crate::users::postgres::{PgUserStore, classify};

type Row =
    (i64, Uuid, Uuid, Option<Uuid>, String, String, Decimal, Decimal, String, Option<String>, Option<String>, i64);

#[async_trait]
impl StatementReads for PgUserStore {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        let filter = *filter;
        let after = after_seq.map(|seq| i64::try_from(seq).unwrap_or(i64::MAX)).unwrap_or(0);
        self.run(|pool| async move {
            let sql = format!(
                "SELECT p.seq, p.transfer_id, p.account_id, a.owner_id, p.currency, p.direction, p.amount,
                        p.balance_after, t.kind, t.reference, t.description, t.created_at
                 FROM postings p
                 JOIN transfers t ON t.id = p.transfer_id
                 JOIN accounts a ON a.id = p.account_id
                 WHERE {}
                   AND t.created_at >= $1 AND t.created_at < $2
                   AND ($4::text IS NULL OR p.direction = $4)
                   AND p.seq > $5
                 ORDER BY p.seq LIMIT $6",
                scope_condition(filter.scope, "$3::uuid")
            );
            let rows: Vec<Row> = sqlx::query_as(&sql)
                .bind(filter.from)
                .bind(filter.to)
                .bind(scope_id(filter.scope))
                .bind(direction(filter.credit))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.into_iter()
                .map(
                    |(
                        seq,
                        transfer,
                        account,
                        owner,
                        currency,
                        direction,
                        amount,
                        balance_after,
                        transfer_kind,
                        reference,
                        description,
                        created_at,
                    )| {
                        Ok(StatementLine {
                            seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))?,
                            transfer: TransferId::from_uuid(transfer),
                            account: AccountId::from_uuid(account),
                            owner: owner.map(UserId::from_uuid),
                            currency,
                            credit: direction == "credit",
                            amount,
                            balance_after,
                            transfer_kind,
                            reference,
                            description,
                            created_at,
                        })
                    },
                )
                .collect()
        })
        .await
    }
}
