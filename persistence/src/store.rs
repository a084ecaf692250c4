//! The `Store` trait: what the journal writes and what activation and recovery read.

use std::sync::Arc;

use crate::finance::{PricingChange, PricingTables};
use async_trait::async_trait;
use tally_engine::{
    Account, AccountId, CryptoOp, CryptoOpKind, Currency, Posting, Record, Transfer, TransferId, UserId, Wallet,
    WalletId,
};

use crate::batch::WalletPosting;
use crate::crypto::WalletProfile;

/// A journal record with its position in the journal. Sequence numbers start at 1, grow by one
/// per record, and commit in order, so what is durable is always a prefix of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencedRecord {
    pub seq: u64,
    pub record: Record,
}

/// A value read from a store, with the journal sequence number of the last record the store
/// applied to it. Records at or below `seq` are already in `value`; later ones are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<T> {
    pub value: T,
    pub seq: u64,
}

/// A hold still placed on an account: money reserved for an unfinished transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveHold {
    pub account: AccountId,
    pub transfer: TransferId,
    pub amount: rust_decimal::Decimal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer or refused the connection. The journal retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something that breaks an invariant. Never retried.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits the records in one transaction, in order, or none of them.
    async fn commit(&self, records: &[SequencedRecord]) -> Result<(), StoreError>;

    /// The highest sequence number committed, or 0 for an empty store.
    async fn committed_seq(&self) -> Result<u64, StoreError>;

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError>;

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError>;

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError>;

    /// The transfer a caller's idempotency key names, if any.
    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<Transfer>>, StoreError>;

    /// Transfers not yet terminal (processing or pending), for recovery and admin review.
    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError>;

    /// Every account, for `tally check` and the tests' conservation checks.
    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// The postings of one account in journal order.
    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError>;

    /// The postings of one transfer in journal order (recovery: how far did its saga get?).
    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError>;

    /// Every hold still placed on an account (recovery: no hold may be left dangling).
    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError>;

    /// The signed sum of each account's postings (`tally check`). The default scans every
    /// account's postings; stores with SQL aggregate in the database.
    async fn posting_sums(&self) -> Result<std::collections::HashMap<AccountId, rust_decimal::Decimal>, StoreError> {
        crate::check::posting_sums_by_scan(self).await
    }

    /// The store's AML rules and flags (`aml.rs`); `None` for a store that keeps none.
    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        None
    }

    /// Every FX rate, fee rule and changed transfer-type setting (read once at engine start).
    /// The default (a store that keeps none) is empty.
    async fn load_pricing(&self) -> Result<PricingTables, StoreError> {
        Ok(PricingTables::default())
    }

    /// Writes one admin change to the pricing configuration (an upsert). The default refuses:
    /// a store that does not keep pricing must not pretend a change was saved.
    async fn save_pricing(&self, change: &PricingChange) -> Result<(), StoreError> {
        let _ = change;
        Err(StoreError::Unavailable("this store keeps no pricing configuration".to_owned()))
    }
    // ---- wallets and crypto operations (`crypto.rs`, migration 0008) ----------------------
    // Defaults refuse, so a store that does not keep them (test doubles) says so loudly.

    async fn load_crypto_op(&self, _id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Err(unsupported())
    }

    /// The deposit that credited this chain transaction, if any.
    async fn deposit_by_tx_hash(&self, _tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Err(unsupported())
    }

    /// The operation of `kind` a caller's idempotency key names, if any.
    async fn crypto_op_by_idempotency(
        &self,
        _kind: CryptoOpKind,
        _scope: uuid::Uuid,
        _key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Err(unsupported())
    }

    /// Operations still processing or pending, for recovery.
    async fn unfinished_crypto_ops(&self) -> Result<Vec<CryptoOp>, StoreError> {
        Err(unsupported())
    }

    /// The wallet postings of one operation (recovery: did its wallet credit happen?).
    async fn wallet_postings_of_transfer(&self, _transfer: TransferId) -> Result<Vec<WalletPosting>, StoreError> {
        Err(unsupported())
    }

    /// Every wallet asset's balance (`tally check`, the tests' conservation checks).
    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, rust_decimal::Decimal)>, StoreError> {
        Err(unsupported())
    }

    /// Stores a new profile; `false` if its owner already has a wallet of that asset.
    async fn insert_wallet_profile(&self, _profile: &WalletProfile) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    async fn wallet_profile(&self, _wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        Err(unsupported())
    }

    async fn wallet_profile_by_address(&self, _address: &str) -> Result<Option<WalletProfile>, StoreError> {
        Err(unsupported())
    }

    /// An owner's wallets, oldest first.
    async fn wallet_profiles_of_owner(&self, _owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        Err(unsupported())
    }
}

fn unsupported() -> StoreError {
    StoreError::Corrupt("this store keeps no wallets or crypto operations".to_owned())
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn commit(&self, records: &[SequencedRecord]) -> Result<(), StoreError> {
        (**self).commit(records).await
    }

    async fn committed_seq(&self) -> Result<u64, StoreError> {
        (**self).committed_seq().await
    }

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError> {
        (**self).load_account(id).await
    }

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError> {
        (**self).load_wallet(id).await
    }

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError> {
        (**self).load_transfer(id).await
    }

    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<Transfer>>, StoreError> {
        (**self).transfer_by_idempotency(scope, key).await
    }

    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        (**self).non_terminal_transfers().await
    }

    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        (**self).all_accounts().await
    }

    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError> {
        (**self).postings_of(account).await
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        (**self).postings_of_transfer(transfer).await
    }

    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError> {
        (**self).live_holds().await
    }

    async fn posting_sums(&self) -> Result<std::collections::HashMap<AccountId, rust_decimal::Decimal>, StoreError> {
        (**self).posting_sums().await
    }

    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        (**self).aml()
    }

    async fn load_pricing(&self) -> Result<PricingTables, StoreError> {
        (**self).load_pricing().await
    }

    async fn save_pricing(&self, change: &PricingChange) -> Result<(), StoreError> {
        (**self).save_pricing(change).await
    }

    async fn load_crypto_op(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        (**self).load_crypto_op(id).await
    }

    async fn deposit_by_tx_hash(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        (**self).deposit_by_tx_hash(tx_hash).await
    }

    async fn crypto_op_by_idempotency(
        &self,
        kind: CryptoOpKind,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        (**self).crypto_op_by_idempotency(kind, scope, key).await
    }

    async fn unfinished_crypto_ops(&self) -> Result<Vec<CryptoOp>, StoreError> {
        (**self).unfinished_crypto_ops().await
    }

    async fn wallet_postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<WalletPosting>, StoreError> {
        (**self).wallet_postings_of_transfer(transfer).await
    }

    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, rust_decimal::Decimal)>, StoreError> {
        (**self).wallet_balances().await
    }

    async fn insert_wallet_profile(&self, profile: &WalletProfile) -> Result<bool, StoreError> {
        (**self).insert_wallet_profile(profile).await
    }

    async fn wallet_profile(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        (**self).wallet_profile(wallet).await
    }

    async fn wallet_profile_by_address(&self, address: &str) -> Result<Option<WalletProfile>, StoreError> {
        (**self).wallet_profile_by_address(address).await
    }

    async fn wallet_profiles_of_owner(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        (**self).wallet_profiles_of_owner(owner).await
    }
}
