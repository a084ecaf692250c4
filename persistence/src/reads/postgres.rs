//! `AccountReads` on Postgres, on the identity store's pool.

use async_trait::async_trait;
use tally_engine::{AccountId, UserId};
use uuid::Uuid;

use super::AccountReads;
use crate::postgres::classify;
use crate::store::StoreError;
use crate::users::postgres::PgUserStore;

#[async_trait]
impl AccountReads for PgUserStore {
    async fn account_ids_of_owner(&self, owner: UserId, limit: u32) -> Result<Vec<AccountId>, StoreError> {
        self.run(|pool| async move {
            // `accounts_by_owner` (0001_ledger.sql) serves the filter; the sort is over one
            // owner's few accounts.
            let ids: Vec<Uuid> =
                sqlx::query_scalar("SELECT id FROM accounts WHERE owner_id = $1 ORDER BY created_at, id LIMIT $2")
                    .bind(owner.as_uuid())
                    .bind(i64::from(limit))
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            Ok(ids.into_iter().map(AccountId::from_uuid).collect())
        })
        .await
    }

    async fn count_accounts_of_owner(&self, owner: UserId) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE owner_id = $1")
                .bind(owner.as_uuid())
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("negative count {count}")))
        })
        .await
    }
}
