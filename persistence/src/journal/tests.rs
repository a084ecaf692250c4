#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::AtomicBool;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_engine::{
    Account, AccountEvent, AccountId, AccountKind, AccountSnapshot, AccountStatus, Currency, Timestamp, TransferId,
};

use super::*;
use crate::memory::MemoryStore;
use crate::store::{JournalWriter, Store, StoreReads};

fn opened(n: u128) -> Record {
    Record::AccountOpened(Box::new(Account::open(
        AccountId::from_u128(n),
        None,
        Currency::USD,
        AccountKind::User,
        dec!(0),
        Timestamp::default(),
    )))
}

/// Account `n`'s credit by `transfer`, its `version`-th posting.
fn credit(n: u128, transfer: u128, version: u64) -> Record {
    Record::Account {
        account: AccountId::from_u128(n),
        currency: Currency::USD,
        event: AccountEvent::Credited { transfer: TransferId::from_u128(transfer), amount: dec!(1), admitted: false },
        after: AccountSnapshot {
            balance: Decimal::from(version),
            held: dec!(0),
            credit_limit: dec!(0),
            status: AccountStatus::Active,
            version,
        },
    }
}

/// A new internal transfer of 1 USD from account `source` to `destination`.
pub(crate) fn transfer(id: u128, source: u128, destination: u128) -> tally_engine::Transfer {
    tally_engine::Transfer::start(tally_engine::TransferRequest {
        id: TransferId::from_u128(id),
        kind: tally_engine::TransferKind::Internal,
        source: AccountId::from_u128(source),
        destination: AccountId::from_u128(destination),
        amount: dec!(1.00),
        currency: Currency::USD,
        fee: dec!(0.00),
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: None,
        created_at: Timestamp::default(),
        metadata: Default::default(),
    })
}

fn clock() -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
    Arc::new(crate::batch::now)
}

/// Journals over `store` with `shards` shards, each writer running on this test's runtime.
async fn start(store: Arc<dyn Store>, shards: u16, config: JournalConfig) -> Journals {
    let seqs = store.open_shards(shards).await.unwrap();
    let journals = Journals::new(&seqs, config, clock());
    for journal in journals.iter() {
        let writers = Arc::clone(&store).journal_writers(journal.shard()).await.unwrap();
        tokio::spawn(journal.clone().run_writer(writers));
    }
    journals
}

#[tokio::test]
async fn an_acked_record_and_everything_before_it_is_in_the_store() {
    let store = Arc::new(MemoryStore::new());
    let journals = start(store.clone(), 1, JournalConfig::default()).await;
    let journal = journals.shard(0);
    journal.append(opened(1)).unwrap();
    for transfer in 0..99 {
        journal.append(credit(1, transfer, transfer as u64 + 1)).unwrap();
    }
    let (position, ack) = journal.append_acked(credit(1, 99, 100)).unwrap();
    assert_eq!(position, JournalPosition { shard: 0, seq: 101 });
    ack.wait().await.unwrap();
    let loaded = store.load_account(AccountId::from_u128(1)).await.unwrap().unwrap();
    assert_eq!(loaded.value.balance(), dec!(100));
    assert_eq!(loaded.value.position.version, 100);
    assert_eq!(store.committed_seqs().await.unwrap(), vec![101]);
    journals.shutdown().await;
}

#[tokio::test]
async fn work_admitted_and_running_counts_against_the_bound_before_it_appends() {
    let store = Arc::new(MemoryStore::new());
    let config = JournalConfig { admission_depth_max: 10, depth_max: 20, ..JournalConfig::default() };
    let journals = start(store.clone(), 1, config).await;
    let journal = journals.shard(0);
    // A burst admitted before any of it appends: the eleventh is refused.
    let mut running: Vec<_> = (0..10).map(|_| journal.admit_held().unwrap()).collect();
    assert_eq!(journal.admit_held().err(), Some(Overloaded), "the bound counts running work");
    assert_eq!(journal.admit(), Err(Overloaded));
    // Work that ends gives its place back.
    running.pop();
    let last = journal.admit_held().unwrap();
    assert_eq!(journal.admit(), Err(Overloaded));
    drop((running, last));
    assert_eq!(journal.admit(), Ok(()));
    journals.shutdown().await;
}

#[tokio::test]
async fn work_that_starts_whole_is_admitted_below_the_bound_whatever_its_size_and_counts_after() {
    let store = Arc::new(MemoryStore::new());
    let config = JournalConfig { admission_depth_max: 10, depth_max: 20, ..JournalConfig::default() };
    let journals = start(store.clone(), 1, config).await;
    let journal = journals.shard(0);
    let one = journal.admit_held().unwrap();
    // Below the bound, fifteen pieces that start together are admitted together...
    let batch = journal.admit_held_many(15).unwrap();
    assert_eq!((batch.len(), journal.admitted()), (15, 16));
    // ...and count: nothing more is admitted until enough of them end.
    assert_eq!(journal.admit_held_many(1).err(), Some(Overloaded));
    assert_eq!(journal.admit(), Err(Overloaded));
    drop(batch);
    assert_eq!(journal.admitted(), 1);
    assert_eq!(journal.admit(), Ok(()));
    drop(one);
    journals.shutdown().await;
}

#[tokio::test]
async fn while_the_store_is_down_appends_fill_to_the_bound_then_fail_and_resume_after() {
    let store = Arc::new(MemoryStore::new());
    let config = JournalConfig { admission_depth_max: 10, depth_max: 20, ..JournalConfig::default() };
    let journals = start(store.clone(), 1, config).await;
    let journal = journals.shard(0);
    journal.append_acked(opened(1)).unwrap().1.wait().await.unwrap();
    store.set_available(false);
    let mut acks = Vec::new();
    let mut refused = 0;
    for transfer in 0..40 {
        match journal.append_acked(credit(1, transfer, acks.len() as u64 + 1)) {
            Ok((_, ack)) => acks.push(ack),
            Err(Overloaded) => refused += 1,
        }
    }
    assert!(journal.depth() <= 20 + acks.len());
    assert!(refused > 0, "appends beyond the bound must fail");
    assert_eq!(journal.admit(), Err(Overloaded), "new work is refused while full");
    for _ in 0..500 {
        if journal.stats().flush_errors.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(journal.stats().flush_errors.load(Ordering::Relaxed) > 0, "the writer saw the outage");
    store.set_available(true);
    let accepted = acks.len();
    for ack in acks {
        ack.wait().await.unwrap();
    }
    let loaded = store.load_account(AccountId::from_u128(1)).await.unwrap().unwrap();
    assert_eq!(loaded.value.balance(), Decimal::from(accepted as u64));
    assert_eq!(journal.admit(), Ok(()));
    journals.shutdown().await;
}

#[tokio::test]
async fn a_pending_transfer_state_is_visible_until_durable() {
    let store = Arc::new(MemoryStore::new());
    let journals = start(store.clone(), 1, JournalConfig::default()).await;
    journals.shard(0).append_acked(opened(1)).unwrap().1.wait().await.unwrap();
    store.set_commits_available(false);
    let transfer = transfer(7, 1, 2);
    journals.shard(0).append(Record::Transfer(Box::new(transfer.clone()))).unwrap();
    assert_eq!(journals.pending_transfer(transfer.id), Some(transfer.clone()));
    store.set_commits_available(true);
    journals.barrier().await.unwrap();
    assert_eq!(journals.pending_transfer(transfer.id), None, "durable now: the store answers");
    journals.shutdown().await;
}

/// A test double's reads, wallets and pricing are its inner memory store's: the doubles here
/// only change how commits behave.
macro_rules! faces_of_inner {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::store::WalletStore for $store {
            async fn load_crypto_op(
                &self,
                id: tally_engine::TransferId,
            ) -> Result<Option<crate::Loaded<tally_engine::CryptoOp>>, StoreError> {
                self.inner.load_crypto_op(id).await
            }

            async fn deposit_by_tx_hash(
                &self,
                tx_hash: &str,
            ) -> Result<Option<crate::Loaded<tally_engine::CryptoOp>>, StoreError> {
                self.inner.deposit_by_tx_hash(tx_hash).await
            }

            async fn crypto_op_by_idempotency(
                &self,
                kind: tally_engine::CryptoOpKind,
                scope: uuid::Uuid,
                key: &str,
            ) -> Result<Option<crate::Loaded<tally_engine::CryptoOp>>, StoreError> {
                self.inner.crypto_op_by_idempotency(kind, scope, key).await
            }

            async fn unfinished_crypto_ops(&self) -> Result<Vec<tally_engine::CryptoOp>, StoreError> {
                self.inner.unfinished_crypto_ops().await
            }

            async fn wallet_postings_of_transfer(
                &self,
                transfer: tally_engine::TransferId,
            ) -> Result<Vec<crate::batch::WalletPosting>, StoreError> {
                self.inner.wallet_postings_of_transfer(transfer).await
            }

            async fn wallet_balances(
                &self,
            ) -> Result<Vec<(tally_engine::WalletId, tally_engine::Currency, Decimal)>, StoreError> {
                self.inner.wallet_balances().await
            }

            async fn insert_wallet_profile(&self, profile: &crate::crypto::WalletProfile) -> Result<bool, StoreError> {
                self.inner.insert_wallet_profile(profile).await
            }

            async fn wallet_profile(
                &self,
                wallet: tally_engine::WalletId,
            ) -> Result<Option<crate::crypto::WalletProfile>, StoreError> {
                self.inner.wallet_profile(wallet).await
            }

            async fn wallet_profile_by_address(
                &self,
                address: &str,
            ) -> Result<Option<crate::crypto::WalletProfile>, StoreError> {
                self.inner.wallet_profile_by_address(address).await
            }

            async fn wallet_profiles_of_owner(
                &self,
                owner: tally_engine::UserId,
            ) -> Result<Vec<crate::crypto::WalletProfile>, StoreError> {
                self.inner.wallet_profiles_of_owner(owner).await
            }

            async fn wallet_profiles_page(
                &self,
                filter: crate::crypto::WalletFilter,
                before: Option<crate::reads::listing::Position>,
                limit: u32,
            ) -> Result<Vec<crate::crypto::WalletProfile>, StoreError> {
                self.inner.wallet_profiles_page(filter, before, limit).await
            }
        }

        #[async_trait::async_trait]
        impl crate::store::PricingStore for $store {
            async fn load_pricing(&self) -> Result<crate::finance::PricingTables, StoreError> {
                self.inner.load_pricing().await
            }

            async fn save_pricing(
                &self,
                change: &crate::finance::PricingChange,
                audit: Option<&tally_engine::audit::AuditRecord>,
            ) -> Result<(), StoreError> {
                self.inner.save_pricing(change, audit).await
            }
        }

        #[async_trait::async_trait]
        impl crate::store::StoreReads for $store {
            async fn committed_seqs(&self) -> Result<Vec<u64>, StoreError> {
                self.inner.committed_seqs().await
            }

            async fn last_booked_at(&self) -> Result<Timestamp, StoreError> {
                self.inner.last_booked_at().await
            }

            async fn load_account(&self, id: AccountId) -> Result<Option<crate::Loaded<Account>>, StoreError> {
                self.inner.load_account(id).await
            }

            async fn load_wallet(
                &self,
                id: tally_engine::WalletId,
            ) -> Result<Option<crate::Loaded<tally_engine::Wallet>>, StoreError> {
                self.inner.load_wallet(id).await
            }

            async fn load_transfer(
                &self,
                id: TransferId,
            ) -> Result<Option<crate::Loaded<tally_engine::Transfer>>, StoreError> {
                self.inner.load_transfer(id).await
            }

            async fn idempotency_keys_after(
                &self,
                after: Option<(uuid::Uuid, String)>,
                limit: u32,
            ) -> Result<Vec<(uuid::Uuid, String)>, StoreError> {
                self.inner.idempotency_keys_after(after, limit).await
            }

            async fn non_terminal_transfers(&self) -> Result<Vec<tally_engine::Transfer>, StoreError> {
                self.inner.non_terminal_transfers().await
            }

            async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
                self.inner.all_accounts().await
            }

            async fn postings_of(&self, account: AccountId) -> Result<Vec<tally_engine::Posting>, StoreError> {
                self.inner.postings_of(account).await
            }

            async fn live_holds(&self) -> Result<Vec<crate::LiveHold>, StoreError> {
                self.inner.live_holds().await
            }
            async fn live_admissions(&self) -> Result<Vec<crate::LiveHold>, StoreError> {
                self.inner.live_admissions().await
            }
        }
    };
}

faces_of_inner!(GatedStore);
faces_of_inner!(LostAnswerStore);

/// Commits of one shard wait on a gate the test opens.
struct GatedStore {
    inner: MemoryStore,
    gated_shard: u16,
    open: AtomicBool,
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn commit_plan(&self, plan: &crate::batch::BatchPlan) -> Result<(), StoreError> {
        while plan.shard == self.gated_shard && !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.inner.commit_plan(plan).await
    }
    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError> {
        self.inner.commit(shard, records).await
    }
    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        self.inner.open_shards(wanted).await
    }
    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        Ok(vec![crate::store::plan_writer(self, shard)])
    }
    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<crate::Loaded<tally_engine::Transfer>>, StoreError> {
        self.inner.transfer_by_idempotency(scope, key).await
    }
    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<tally_engine::Posting>, StoreError> {
        self.inner.postings_of_transfer(transfer).await
    }
}

#[tokio::test]
async fn a_record_that_depends_on_another_journal_commits_only_after_it() {
    let store = Arc::new(GatedStore { inner: MemoryStore::new(), gated_shard: 0, open: AtomicBool::new(false) });
    let journals = start(store.clone(), 2, JournalConfig::default()).await;
    // Account 1's history: opened through shard 1, credited through shard 0, then credited
    // through shard 1 again. The last record depends on the one in shard 0, held at the gate.
    journals.shard(1).append_acked(opened(1)).unwrap().1.wait().await.unwrap();
    let in_zero = journals.shard(0).append_admitted(credit(1, 10, 1), None);
    let (_, later) = {
        let journal = journals.shard(1);
        let position = journal.append_admitted(credit(1, 11, 2), Some(in_zero));
        (position, journal.barrier())
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let account = store.load_account(AccountId::from_u128(1)).await.unwrap().unwrap();
    assert_eq!(account.value.position.version, 0, "neither credit is durable while shard 0 is held");
    assert!(!journals.is_durable(JournalPosition { shard: 1, seq: 2 }));
    assert!(journals.shard(1).stats().dependency_waits.load(Ordering::Relaxed) > 0);
    store.open.store(true, Ordering::SeqCst);
    later.wait().await.unwrap();
    let account = store.load_account(AccountId::from_u128(1)).await.unwrap().unwrap();
    assert_eq!((account.value.position.version, account.value.balance()), (2, dec!(2)));
    journals.shutdown().await;
}

#[tokio::test]
async fn pending_snapshots_are_written_at_the_interval_and_at_shutdown() {
    let store = Arc::new(MemoryStore::new());
    let config = JournalConfig { snapshot_interval: Duration::from_millis(50), ..JournalConfig::default() };
    let journals = start(store.clone(), 1, config).await;
    let journal = journals.shard(0);
    journal.append(opened(1)).unwrap();
    journal.append_acked(credit(1, 1, 1)).unwrap().1.wait().await.unwrap();
    for _ in 0..200 {
        if journal.stats().snapshot_rows.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(journal.stats().snapshot_rows.load(Ordering::Relaxed), 1, "one row for the one account changed");
    journal.append_acked(credit(1, 2, 2)).unwrap().1.wait().await.unwrap();
    journals.shutdown().await;
    assert_eq!(journal.stats().snapshot_rows.load(Ordering::Relaxed), 2, "the last change flushed at shutdown");
}

#[tokio::test]
async fn a_flush_larger_than_a_slice_is_written_whole_while_no_records_come() {
    let store = Arc::new(MemoryStore::new());
    let config = JournalConfig {
        snapshot_interval: Duration::from_millis(50),
        snapshot_rows_per_batch: 2,
        ..JournalConfig::default()
    };
    let journals = start(store.clone(), 1, config).await;
    let journal = journals.shard(0);
    for n in 1..=5 {
        journal.append(opened(n)).unwrap();
    }
    let mut last = None;
    for n in 1..=5 {
        last = Some(journal.append_acked(credit(n, n, 1)).unwrap().1);
    }
    last.unwrap().wait().await.unwrap();
    let stats = journal.stats();
    for _ in 0..200 {
        if stats.snapshot_rows.load(Ordering::Relaxed) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        stats.snapshot_rows.load(Ordering::Relaxed),
        5,
        "all five, in slices of two, with no record to carry them"
    );
    assert_eq!(stats.snapshot_flushes.load(Ordering::Relaxed), 1, "one flush");
    journals.shutdown().await;
}

/// Commits, then reports the first commit as failed: the answer lost on the way back.
struct LostAnswerStore {
    inner: MemoryStore,
    lost: AtomicBool,
}

#[async_trait::async_trait]
impl Store for LostAnswerStore {
    async fn commit_plan(&self, plan: &crate::batch::BatchPlan) -> Result<(), StoreError> {
        self.inner.commit_plan(plan).await?;
        if !plan.records.is_empty() && !self.lost.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection reset after COMMIT".to_owned()));
        }
        Ok(())
    }
    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError> {
        self.inner.commit(shard, records).await
    }
    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        self.inner.open_shards(wanted).await
    }
    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        Ok(vec![crate::store::plan_writer(self, shard)])
    }
    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<crate::Loaded<tally_engine::Transfer>>, StoreError> {
        self.inner.transfer_by_idempotency(scope, key).await
    }
    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<tally_engine::Posting>, StoreError> {
        self.inner.postings_of_transfer(transfer).await
    }
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_recognised_on_retry_not_taken_for_corruption() {
    let store = Arc::new(LostAnswerStore { inner: MemoryStore::new(), lost: AtomicBool::new(false) });
    let journals = start(store.clone(), 1, JournalConfig::default()).await;
    let journal = journals.shard(0);
    journal.append(opened(1)).unwrap();
    let (_, ack) = journal.append_acked(credit(1, 0, 1)).unwrap();
    ack.wait().await.unwrap();
    assert!(!journal.has_failed(), "the journal carries on");
    let (_, ack) = journal.append_acked(credit(1, 1, 2)).unwrap();
    ack.wait().await.unwrap();
    assert_eq!(store.committed_seqs().await.unwrap(), vec![3]);
    journals.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_does_not_follow_the_committed_prefix_stops_the_journal() {
    let store = Arc::new(MemoryStore::new());
    // A second writer got there first: the store is ahead of what this journal numbers from.
    store.open_shards(1).await.unwrap();
    store.commit(0, &[SequencedRecord { seq: 1, record: opened(9) }]).await.unwrap();
    let journals = Journals::new(&[0], JournalConfig::default(), clock());
    let writers = store.clone().journal_writers(0).await.unwrap();
    tokio::spawn(journals.shard(0).clone().run_writer(writers));
    let (_, ack) = journals.shard(0).append_acked(opened(1)).unwrap();
    assert!(ack.wait().await.is_err(), "never acknowledged");
    assert!(journals.shard(0).has_failed());
    journals.halt().await;
}

/// A group is committed in one batch: never split by the batch bound, moved whole to the next
/// batch when it does not fit, and taken alone when it is larger than a batch.
#[tokio::test]
async fn a_group_is_never_split_between_batches() {
    let config = JournalConfig { batch_records_max: 8, ..JournalConfig::default() };
    // No writer runs: the test takes the batches itself.
    let journals = Journals::new(&[0], config, clock());
    let journal = journals.shard(0);
    for n in 0..5 {
        journal.append(opened(n)).unwrap();
    }
    let _five_then_six = journal.append_group_acked((10..16).map(opened).collect()).unwrap();
    journal.append(opened(20)).unwrap();
    let _ten = journal.append_group_acked((30..40).map(opened).collect()).unwrap();
    let sizes: Vec<usize> = std::iter::from_fn(|| journal.take_ready()).map(|taken| taken.records.len()).collect();
    // 5 singles (the group of 6 would pass 8), the group and the single after it, then the
    // group of 10 alone.
    assert_eq!(sizes, vec![5, 7, 10]);
}

/// A cluster node's writer after another node took its shard: its commit's answer was lost
/// (the connection ended while it was paused), every retry is refused by the lease fence, and
/// the store will not say where the shard's sequence stands for it (the new owner carries the
/// sequence on from the committed prefix, so a number at or past this batch would wrongly
/// say it committed).
struct FencedWriter {
    attempts: usize,
}

#[async_trait::async_trait]
impl JournalWriter for FencedWriter {
    async fn commit(
        &mut self,
        _: &crate::batch::BatchPlan,
        mut turn: crate::store::PipelineTurn,
    ) -> Result<(), StoreError> {
        turn.wait().await;
        self.attempts += 1;
        if self.attempts == 1 {
            Err(StoreError::Unavailable("terminating connection due to idle-in-transaction timeout".to_owned()))
        } else {
            Err(StoreError::Corrupt("shard 0 is leased to another node: commit fenced".to_owned()))
        }
    }

    async fn committed_seq(&mut self) -> Result<u64, StoreError> {
        Err(StoreError::Corrupt("shard 0 is leased to another node: this writer is fenced".to_owned()))
    }
}

#[tokio::test]
async fn a_writer_whose_shard_moved_acknowledges_nothing_and_stops() {
    let journals = Journals::new(&[0], JournalConfig::default(), clock());
    tokio::spawn(journals.shard(0).clone().run_writer(vec![Box::new(FencedWriter { attempts: 0 })]));
    let (_, ack) = journals.shard(0).append_acked(opened(1)).unwrap();
    assert!(ack.wait().await.is_err(), "a batch that may or may not have committed is never acknowledged");
    assert!(journals.shard(0).has_failed(), "the journal stops");
    journals.halt().await;
}
