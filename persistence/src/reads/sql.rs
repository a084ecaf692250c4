//! `AccountReads` for both identity stores, written once (`crate::sql`), on their pools.

use async_trait::async_trait;
use tally_engine::{AccountId, UserId};

use super::AccountReads;
use crate::sql::{Id, IdentitySql, run_on_backend};
use crate::store::StoreError;

#[async_trait]
impl<S: IdentitySql> AccountReads for S {
    async fn account_ids_of_owner(&self, owner: UserId, limit: u32) -> Result<Vec<AccountId>, StoreError> {
        run_on_backend!(self, |pool| {
            // `accounts_by_owner` (0001_ledger.sql) serves the filter; the sort is over one
            // owner's few accounts.
            let ids: Vec<Id> =
                sqlx::query_scalar("SELECT id FROM accounts WHERE owner_id = $1 ORDER BY created_at, id LIMIT $2")
                    .bind(Id::from(owner))
                    .bind(i64::from(limit))
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            Ok(ids.into_iter().map(|Id(id)| AccountId::from_uuid(id)).collect())
        })
    }

    async fn count_accounts_of_owner(&self, owner: UserId) -> Result<u64, StoreError> {
        run_on_backend!(self, |pool| {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE owner_id = $1")
                .bind(Id::from(owner))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("negative count {count}")))
        })
    }
}
