//! `StatementReads` on SQLite, on the identity store's pool: `statement_postgres.rs` in
//! SQLite's dialect (ids and amounts as text). SQLite has no `LATERAL`: a page walks the
//! postings' key (account, booked_at, version) from the cursor, joined to the scope's
//! accounts, so postings outside the period are stepped over in the index rather than probed
//! per account.

use async_trait::async_trait;
use tally_engine::{TransferId, UserId};

use super::listing::{PostingPosition, posting_number, posting_number_to_db};
use super::statement::{StatementFilter, StatementLine, StatementReads, direction, scope_condition, scope_id};
use crate::sqlite::classify;
use crate::sqlite::decimal_from_db;
use crate::store::StoreError;
use crate::users::sqlite::{SqliteUserStore, id_to_db, uuid_from_db};

type Row =
    (String, i64, i64, String, Option<String>, String, String, String, String, String, Option<String>, Option<String>);

#[async_trait]
impl StatementReads for SqliteUserStore {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        let filter = *filter;
        let after = after.unwrap_or(PostingPosition { account: uuid::Uuid::nil(), booked_at: i64::MIN, version: 0 });
        self.run(|pool| async move {
            let sql = format!(
                "SELECT p.account_id, p.booked_at, p.version, p.transfer_id, a.owner_id, p.currency, p.direction,
                        p.amount, p.balance_after, t.kind, t.reference, t.description
                 FROM postings p
                 JOIN transfers t ON t.id = p.transfer_id
                 JOIN accounts a ON a.id = p.account_id
                 WHERE {}
                   AND p.booked_at >= ?1 AND p.booked_at < ?2
                   AND (?4 IS NULL OR p.direction = ?4)
                   AND (p.account_id, p.booked_at, p.version) > (?5, ?6, ?7)
                 ORDER BY p.account_id, p.booked_at, p.version LIMIT ?8",
                scope_condition(filter.scope, "?3")
            );
            let rows: Vec<Row> = sqlx::query_as(&sql)
                .bind(filter.from)
                .bind(filter.to)
                .bind(scope_id(filter.scope).map(id_to_db))
                .bind(direction(filter.credit))
                .bind(id_to_db(after.account))
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
                        let account = uuid_from_db(&account, "postings.account_id")?;
                        Ok(StatementLine {
                            position: PostingPosition { account, booked_at, version: posting_number(number)? },
                            transfer: TransferId::from_uuid(uuid_from_db(&transfer, "postings.transfer_id")?),
                            owner: owner
                                .map(|owner| uuid_from_db(&owner, "accounts.owner_id").map(UserId::from_uuid))
                                .transpose()?,
                            currency,
                            credit: direction == "credit",
                            amount: decimal_from_db(&amount, "postings.amount")?,
                            balance_after: decimal_from_db(&balance_after, "postings.balance_after")?,
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
