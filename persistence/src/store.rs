//! The `Store` trait: what the journals write and what activation and recovery read.

use std::sync::Arc;

use crate::audit::AuditRecord;
use crate::finance::{PricingChange, PricingTables};
use async_trait::async_trait;
use tally_engine::{
    Account, AccountId, CryptoOp, CryptoOpKind, Currency, Posting, Record, Timestamp, Transfer, TransferId, UserId,
    Wallet, WalletId,
};

use crate::batch::{BatchPlan, WalletPosting};
use crate::crypto::WalletProfile;

/// A journal record with its position in its shard's journal. Sequence numbers start at 1,
/// grow by one per record, and commit in order, so what is durable is always a prefix of the
/// journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencedRecord {
    pub seq: u64,
    pub record: Record,
}

/// A value read from a store, with how far the store's copy goes: for an account its posting
/// number (`version`), for other values the sequence number of the last record written to it
/// (in the journal of whichever shard wrote it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<T> {
    pub value: T,
    pub seq: u64,
}

/// A hold still placed on an account: money reserved for an unfinished transfer. Also a
/// credit admission not yet kept or withdrawn (`StoreReads::live_admissions`): money promised
/// to an account by an atomic batch's item.
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

/// A `Corrupt` error saying what was found: the one way every store reports data it cannot read.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A pipelined batch's turn. Batches commit concurrently on separate connections, but a
/// statement that changes a row an earlier batch wrote (a hold removed, a snapshot or status
/// updated, a transfer's state replaced) must see that batch's commit: under read committed a
/// row not yet committed is invisible to it, and the change would silently miss. So a batch
/// first writes only rows that are new (postings, new transfers, new accounts), then waits
/// until the batch before it has ended, then does the rest and takes the fence.
#[derive(Debug, Default)]
pub struct PipelineTurn {
    before: Option<BatchEnd>,
}

/// The end of a batch in flight, which the batch after it waits on (shared: the batch's own
/// `TurnEnd` waits on it too).
pub type BatchEnd = futures::future::Shared<tokio::sync::oneshot::Receiver<()>>;

/// Signals a batch's end to the batch after it, and only once the batch before it has ended
/// as well. A batch may end before it waits its turn (it had nothing to commit, or it failed
/// before the fence); had that alone released the next batch, the next could take the fence
/// while the one before both still committed, and run its updates against rows not yet
/// committed.
#[derive(Debug)]
pub struct TurnEnd {
    before: Option<BatchEnd>,
    ended: tokio::sync::oneshot::Sender<()>,
}

impl TurnEnd {
    /// Call when the batch's commit has returned, however it ended.
    pub async fn after_commit(self) {
        if let Some(before) = self.before {
            let _ = before.await;
        }
        drop(self.ended);
    }
}

impl PipelineTurn {
    /// A batch with nothing before it in flight.
    pub fn alone() -> Self {
        Self::default()
    }

    /// The next batch's turn, after the one whose end `after` holds, and its end; leaves in
    /// `after` what the batch after this one waits on.
    pub fn next(after: &mut Option<BatchEnd>) -> (Self, TurnEnd) {
        use futures::FutureExt;
        let (ended, next) = tokio::sync::oneshot::channel();
        let before = after.replace(next.shared());
        (Self { before: before.clone() }, TurnEnd { before, ended })
    }

    /// Waits until the batch before this one has committed or failed. If it failed, this
    /// batch's fence is refused and the journal retries both, in order.
    pub async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }
}

/// Commits one shard's batches, in order, on connections of its own. A journal's writer task
/// owns one (or several, to pipeline: the next batch commits while the previous one does,
/// ordered by the store's fence) and drives it on the shard's thread.
#[async_trait]
pub trait JournalWriter: Send {
    /// Writes the plan in one transaction, or nothing. The transaction advances its shard's
    /// committed sequence from `plan.first_seq - 1` to `plan.last_seq` last of all, and fails
    /// (`Corrupt`) if the store is not at `plan.first_seq - 1`: a gap, or a second writer.
    /// It takes the fence in `turn` (see `PipelineTurn`).
    async fn commit(&mut self, plan: &BatchPlan, turn: PipelineTurn) -> Result<(), StoreError>;

    /// The shard's committed sequence number as the store has it now.
    async fn committed_seq(&mut self) -> Result<u64, StoreError>;

    /// Whether the store holds `plan` as this writer's commit wrote it (its hash-chain link,
    /// `events::chain::is_link_of`), asked once the committed sequence is at or past the plan
    /// and an attempt may have committed unseen. `true` where no other writer can exist.
    async fn holds(&mut self, plan: &BatchPlan) -> Result<bool, StoreError> {
        let _ = plan;
        Ok(true)
    }
}

/// A writer that commits through a store's own `commit_plan`: for stores that cannot pipeline
/// (the in-memory one; SQLite, which has one writer at a time anyway).
pub fn plan_writer(store: Arc<dyn Store>, shard: u16) -> Box<dyn JournalWriter> {
    Box::new(PlanWriter { store, shard })
}

struct PlanWriter {
    store: Arc<dyn Store>,
    shard: u16,
}

#[async_trait]
impl JournalWriter for PlanWriter {
    async fn commit(&mut self, plan: &BatchPlan, mut turn: PipelineTurn) -> Result<(), StoreError> {
        // One commit at a time through the store's own path: the whole commit is the turn.
        turn.wait().await;
        self.store.commit_plan(plan).await
    }

    async fn committed_seq(&mut self) -> Result<u64, StoreError> {
        let seqs = self.store.committed_seqs().await?;
        Ok(seqs.get(usize::from(self.shard)).copied().unwrap_or(0))
    }

    async fn holds(&mut self, plan: &BatchPlan) -> Result<bool, StoreError> {
        self.store.holds_batch(plan).await
    }
}

#[async_trait]
pub trait Store: StoreReads + WalletStore + PricingStore + Send + Sync + 'static {
    /// Writes one batch plan of one shard's journal in one transaction, or nothing (see
    /// `JournalWriter::commit` for the fence).
    async fn commit_plan(&self, plan: &BatchPlan) -> Result<(), StoreError>;

    /// Whether the store holds `plan` as its commit wrote it (`JournalWriter::holds`). The
    /// in-memory store has no other writer: `true`.
    async fn holds_batch(&self, plan: &BatchPlan) -> Result<bool, StoreError> {
        let _ = plan;
        Ok(true)
    }

    /// Commits `records` of `shard`'s journal as one batch, planned against this store's own
    /// memory of that shard's earlier direct commits (tools and tests: a running engine
    /// commits through its journals' writers).
    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError>;

    /// The committed sequence numbers of shards `0..wanted`, adding any the store does not
    /// have yet at sequence 0. Shards beyond `wanted` keep their rows (and their history);
    /// nothing durable depends on how many shards run (see migration 0021).
    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError>;

    /// Writers for `shard`'s journal, made on the calling thread's runtime: one through
    /// `commit_plan` (`plan_writer`), or several of their own connections for a store that
    /// can pipeline commits.
    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError>;

    /// The transfer a caller's idempotency key names, if any.
    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<Transfer>>, StoreError>;

    /// The postings of one transfer (or crypto operation) in the order they were booked
    /// (recovery: how far did its saga get?).
    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError>;

    /// The signed sum of each account's postings (`tally check`). The default scans every
    /// account's postings; stores with SQL aggregate in the database.
    async fn posting_sums(&self) -> Result<std::collections::HashMap<AccountId, rust_decimal::Decimal>, StoreError> {
        crate::check::posting_sums_by_scan(self).await
    }

    /// Every account posting, of every transfer and crypto operation (`tally check`). The
    /// default scans every account's postings; stores with SQL read them in one query.
    async fn all_postings(&self) -> Result<Vec<Posting>, StoreError> {
        crate::check::postings_by_scan(self).await
    }

    /// Every transfer the store keeps, whatever its status (`tally check`). A store that lists
    /// none (a test double) answers `Unavailable`.
    async fn all_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        Err(StoreError::Unavailable("this store does not list its transfers".to_owned()))
    }

    /// Every wallet posting (`tally check`). A store that lists none (a test double) answers
    /// `Unavailable`.
    async fn all_wallet_postings(&self) -> Result<Vec<WalletPosting>, StoreError> {
        Err(StoreError::Unavailable("this store does not list its wallet postings".to_owned()))
    }

    /// The store's AML rules and flags (`aml.rs`); `None` for a store that keeps none.
    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        None
    }
}

/// What a store answers about the ledger it holds (accounts, wallets, transfers, postings,
/// holds, the journals' positions), apart from how it commits: a supertrait of `Store`. The
/// SQL stores answer it once (`ledger_sql.rs`); test doubles hand it to the store they wrap.
#[async_trait]
pub trait StoreReads: Send + Sync + 'static {
    /// Every shard's committed sequence number (index = shard), as many as the store keeps.
    async fn committed_seqs(&self) -> Result<Vec<u64>, StoreError>;

    /// The latest booking time any committed batch carried (`Timestamp` 0 for none): the
    /// journals book no earlier, so an account's postings stay in booking order across a
    /// restart even if the wall clock went back.
    async fn last_booked_at(&self) -> Result<Timestamp, StoreError>;

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError>;

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError>;

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError>;

    /// At most `limit` of the idempotency keys transfers were made under, as (scope, key), in
    /// (scope, key) order, strictly after `after`: the engine reads them all at start-up into
    /// the filter that spares a new key its store look-up.
    async fn idempotency_keys_after(
        &self,
        after: Option<(uuid::Uuid, String)>,
        limit: u32,
    ) -> Result<Vec<(uuid::Uuid, String)>, StoreError>;

    /// Transfers not yet terminal (processing or pending), for recovery and admin review.
    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError>;

    /// Every account, for `tally check` and the tests' conservation checks.
    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// The postings of one account in journal order.
    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError>;

    /// Every hold still placed on an account (recovery: no hold may be left dangling).
    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError>;

    /// Every credit admission not yet kept or withdrawn (recovery: an atomic batch whose intent
    /// never became durable leaves its admissions to be withdrawn).
    async fn live_admissions(&self) -> Result<Vec<LiveHold>, StoreError>;
}

/// The pricing configuration (`finance/`: FX rates, fee rules, transfer-type settings), which
/// admins write straight to the store: a supertrait of `Store`. The SQL stores keep it with
/// one text (`finance/sql.rs`); test doubles hand it to the store they wrap.
#[async_trait]
pub trait PricingStore: Send + Sync + 'static {
    /// Every FX rate, fee rule and changed transfer-type setting (read once at engine start).
    async fn load_pricing(&self) -> Result<PricingTables, StoreError>;

    /// Writes one admin change to the pricing configuration (an upsert) and, if given, the
    /// admin's audit record of it, appended to the audit chain in the same transaction, last
    /// (the HTTP layer always gives one; the in-memory store, with no chain, ignores it).
    async fn save_pricing(&self, change: &PricingChange, audit: Option<&AuditRecord>) -> Result<(), StoreError>;
}

/// Wallets and crypto operations (`crypto.rs`, migration 0008): a store's face apart from the
/// ledger's, which every `Store` has (a supertrait), so nothing answers "not kept here". The SQL
/// stores implement it once (`crypto_sql.rs`); test doubles hand it to the store they wrap.
#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    async fn load_crypto_op(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError>;

    /// The deposit that credited this chain transaction, if any.
    async fn deposit_by_tx_hash(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError>;

    /// The operation of `kind` a caller's idempotency key names, if any.
    async fn crypto_op_by_idempotency(
        &self,
        kind: CryptoOpKind,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError>;

    /// Operations still processing or pending, for recovery.
    async fn unfinished_crypto_ops(&self) -> Result<Vec<CryptoOp>, StoreError>;

    /// The wallet postings of one operation (recovery: did its wallet credit happen?).
    async fn wallet_postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<WalletPosting>, StoreError>;

    /// Every wallet asset's balance (`tally check`, the tests' conservation checks).
    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, rust_decimal::Decimal)>, StoreError>;

    /// Stores a new profile; `false` if its owner already has a wallet of that asset.
    async fn insert_wallet_profile(&self, profile: &WalletProfile) -> Result<bool, StoreError>;

    async fn wallet_profile(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError>;

    async fn wallet_profile_by_address(&self, address: &str) -> Result<Option<WalletProfile>, StoreError>;

    /// An owner's wallets, oldest first.
    async fn wallet_profiles_of_owner(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError>;

    /// The wallets `filter` picks, newest first (by creation time, then id), after `before`
    /// (the last one of the previous page), at most `limit` of them.
    async fn wallet_profiles_page(
        &self,
        filter: crate::crypto::WalletFilter,
        before: Option<crate::reads::listing::Position>,
        limit: u32,
    ) -> Result<Vec<WalletProfile>, StoreError>;
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn commit_plan(&self, plan: &BatchPlan) -> Result<(), StoreError> {
        (**self).commit_plan(plan).await
    }

    async fn holds_batch(&self, plan: &BatchPlan) -> Result<bool, StoreError> {
        (**self).holds_batch(plan).await
    }

    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError> {
        (**self).commit(shard, records).await
    }

    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        (**self).open_shards(wanted).await
    }

    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        let inner: Arc<S> = Arc::clone(&self);
        inner.journal_writers(shard).await
    }

    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<Transfer>>, StoreError> {
        (**self).transfer_by_idempotency(scope, key).await
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        (**self).postings_of_transfer(transfer).await
    }

    async fn posting_sums(&self) -> Result<std::collections::HashMap<AccountId, rust_decimal::Decimal>, StoreError> {
        (**self).posting_sums().await
    }

    async fn all_postings(&self) -> Result<Vec<Posting>, StoreError> {
        (**self).all_postings().await
    }

    async fn all_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        (**self).all_transfers().await
    }

    async fn all_wallet_postings(&self) -> Result<Vec<WalletPosting>, StoreError> {
        (**self).all_wallet_postings().await
    }

    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        (**self).aml()
    }
}

#[async_trait]
impl<S: WalletStore + ?Sized> WalletStore for Arc<S> {
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

    async fn wallet_profiles_page(
        &self,
        filter: crate::crypto::WalletFilter,
        before: Option<crate::reads::listing::Position>,
        limit: u32,
    ) -> Result<Vec<WalletProfile>, StoreError> {
        (**self).wallet_profiles_page(filter, before, limit).await
    }
}

#[async_trait]
impl<S: StoreReads + ?Sized> StoreReads for Arc<S> {
    async fn committed_seqs(&self) -> Result<Vec<u64>, StoreError> {
        (**self).committed_seqs().await
    }

    async fn last_booked_at(&self) -> Result<Timestamp, StoreError> {
        (**self).last_booked_at().await
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

    async fn idempotency_keys_after(
        &self,
        after: Option<(uuid::Uuid, String)>,
        limit: u32,
    ) -> Result<Vec<(uuid::Uuid, String)>, StoreError> {
        (**self).idempotency_keys_after(after, limit).await
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

    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError> {
        (**self).live_holds().await
    }

    async fn live_admissions(&self) -> Result<Vec<LiveHold>, StoreError> {
        (**self).live_admissions().await
    }
}

#[async_trait]
impl<S: PricingStore + ?Sized> PricingStore for Arc<S> {
    async fn load_pricing(&self) -> Result<PricingTables, StoreError> {
        (**self).load_pricing().await
    }

    async fn save_pricing(&self, change: &PricingChange, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        (**self).save_pricing(change, audit).await
    }
}
