//! Read-model queries over the ledger's tables that the engine's `Store` trait has no reason
//! to offer: the HTTP API's listings. They run on the identity store's pool (same database,
//! same URL as the ledger), never on the journal writer's.
//!
//! The ledger tables are written behind by the journal, so a row here is as fresh as the last
//! group commit. Queries therefore return ids and let the caller read each account from its
//! actor, which holds the live balance. An account opened through `Engine::open_account` is
//! durable before that call returns, so it is always listed by the time its opener hears of it.

pub mod crypto;
mod crypto_sql;
pub mod listing;
mod listing_sql;
mod sql;
pub mod statement;
mod statement_sql;
/// Public so the tests can `EXPLAIN` exactly the SQL the listings run.
pub mod transfer_query;

use std::sync::Arc;

use async_trait::async_trait;
use tally_engine::{AccountId, UserId};

use crate::store::StoreError;

pub use crypto::CryptoReads;
pub use listing::LedgerReads;
pub use statement::StatementReads;

#[async_trait]
/// Every read model the HTTP API uses. `LedgerReads` (the listings), `StatementReads` and
/// `CryptoReads` (the crypto histories) are supertraits so that the one `Arc<dyn AccountReads>`
/// identity already holds serves them too.
pub trait AccountReads: LedgerReads + StatementReads + CryptoReads + Send + Sync + 'static {
    /// The ids of the accounts `owner` owns, oldest first, at most `limit` of them.
    async fn account_ids_of_owner(&self, owner: UserId, limit: u32) -> Result<Vec<AccountId>, StoreError>;

    /// How many accounts `owner` owns.
    async fn count_accounts_of_owner(&self, owner: UserId) -> Result<u64, StoreError>;
}

#[async_trait]
impl<R: AccountReads + ?Sized> AccountReads for Arc<R> {
    async fn account_ids_of_owner(&self, owner: UserId, limit: u32) -> Result<Vec<AccountId>, StoreError> {
        (**self).account_ids_of_owner(owner, limit).await
    }

    async fn count_accounts_of_owner(&self, owner: UserId) -> Result<u64, StoreError> {
        (**self).count_accounts_of_owner(owner).await
    }
}
