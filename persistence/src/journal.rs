//! The write-behind journal.
//!
//! Actors apply a change in memory and append its record here; one writer thread drains the
//! queue into the store in group commits (one store transaction per batch). Every record gets
//! the next sequence number as it is appended, under the same lock that orders the queue, so
//! sequence order is journal order is commit order: what is durable is always a prefix.
//!
//! A caller that must not answer before its change is durable appends its last record with
//! `append_acked` and awaits the `DurableAck`; since commits are in order, that one ack covers
//! every earlier record of the request.
//!
//! Bounds. New work is admitted only while fewer than `admission_depth_max` records wait.
//! Records of work already admitted (a saga's later steps, its compensation) may fill the
//! queue further, up to `depth_max`. The gap between the two is sized for every admitted saga
//! to finish, so a saga is never stranded half way for want of journal room. Beyond
//! `depth_max` an append fails with `Overloaded`, never an unbounded wait.
//!
//! Reads of state that is applied but not yet durable (an actor reloading after a restart)
//! use `pending_since`: the records still queued or being committed, by sequence number.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_engine::Record;
use tokio::sync::{Notify, oneshot};

use crate::store::{SequencedRecord, Store, StoreError};

#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// New work is refused once this many records wait. 65,536 records is about 1/10 s of the
    /// target write rate: enough to ride out a slow commit, small enough that a full queue
    /// (database down) is noticed within a fraction of a second.
    pub admission_depth_max: usize,
    /// Hard bound on waiting records. Must exceed `admission_depth_max` by the records that
    /// admitted work may still append (sagas in flight × records per saga).
    pub depth_max: usize,
    /// Most records in one store transaction. 8,192 keeps one Postgres transaction's bulk
    /// insert well under a megabyte of parameters while amortising the commit's fsync.
    pub batch_records_max: usize,
    /// After waking, wait this long for more records before committing a small batch. Zero
    /// commits at once; batches still form from whatever arrives during the previous commit.
    pub linger: Duration,
    /// Longest wait between retries while the store is unavailable.
    pub retry_backoff_max: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            admission_depth_max: 65_536,
            depth_max: 65_536 + 200_000,
            batch_records_max: 8_192,
            linger: Duration::ZERO,
            retry_backoff_max: Duration::from_millis(500),
        }
    }
}

/// The journal is full: the caller should answer `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("journal full: the store is not keeping up")]
pub struct Overloaded;

/// Resolves once the record it was appended with is committed. Fails if the journal stopped
/// before committing it (the store is corrupt, or the process is shutting down).
#[derive(Debug)]
pub struct DurableAck(oneshot::Receiver<()>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("journal stopped before the record was durable")]
pub struct JournalStopped;

impl DurableAck {
    pub async fn wait(self) -> Result<(), JournalStopped> {
        self.0.await.map_err(|_| JournalStopped)
    }
}

struct Entry {
    record: Option<SequencedRecord>,
    ack: Option<oneshot::Sender<()>>,
    enqueued_at: Instant,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// Number of entries in `entries` that carry a record (barriers do not).
    records: usize,
    next_seq: u64,
    /// The batch the writer is committing right now: no longer queued, not yet durable.
    in_flight: Arc<Vec<SequencedRecord>>,
    in_flight_since: Option<Instant>,
}

/// Counters for health and metrics. Read with `Ordering::Relaxed`: they are for people.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub committed_seq: AtomicU64,
    pub batches: AtomicU64,
    pub records_committed: AtomicU64,
    pub flush_errors: AtomicU64,
    pub last_flush_micros: AtomicU64,
    pub last_batch_records: AtomicU64,
}

struct Inner {
    queue: Mutex<Queue>,
    /// `queue.records`, readable without the lock for `has_room`.
    queued: AtomicUsize,
    work: Notify,
    closed: AtomicBool,
    failed: AtomicBool,
    /// Set by `halt`: stop without committing anything more.
    halted: AtomicBool,
    config: JournalConfig,
    stats: JournalStats,
}

/// A handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("depth", &self.depth()).finish()
    }
}

impl Journal {
    /// Starts the writer thread over `store`. `committed_seq` is the store's last committed
    /// sequence number, so numbering continues after a restart.
    pub fn start(store: Arc<dyn Store>, config: JournalConfig, committed_seq: u64) -> std::io::Result<Journal> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                records: 0,
                next_seq: committed_seq + 1,
                in_flight: Arc::new(Vec::new()),
                in_flight_since: None,
            }),
            queued: AtomicUsize::new(0),
            work: Notify::new(),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            config,
            stats: JournalStats::default(),
        });
        inner.stats.committed_seq.store(committed_seq, Ordering::Relaxed);
        let writer_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new().name("tally-journal".to_owned()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(run_writer(writer_inner, store)),
                Err(error) => {
                    tracing::error!(%error, "journal writer could not start a runtime");
                    writer_inner.failed.store(true, Ordering::SeqCst);
                }
            }
        })?;
        Ok(Journal { inner, writer: Arc::new(Mutex::new(Some(handle))) })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock would be a bug in the few lines below; the queue's
        // contents are still consistent (each push or pop is one VecDeque call), so recover.
        self.inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses new work while the queue is past the admission bound or the journal failed.
    pub fn admit(&self) -> Result<(), Overloaded> {
        if self.inner.failed.load(Ordering::Relaxed) || self.queue().records >= self.inner.config.admission_depth_max {
            return Err(Overloaded);
        }
        Ok(())
    }

    /// Appends a record. Returns its sequence number.
    pub fn append(&self, record: Record) -> Result<u64, Overloaded> {
        self.push(Some(record), None)
    }

    /// Whether an append would fit now. An actor checks this before it applies a change, then
    /// appends with `append_admitted`, so a full journal refuses the change before it happens.
    pub fn has_room(&self) -> bool {
        self.inner.queued.load(Ordering::Relaxed) < self.inner.config.depth_max
            && !self.inner.failed.load(Ordering::Relaxed)
    }

    /// Appends a record whose room `has_room` confirmed. Never fails: between the check and
    /// this call other threads may append too, so the queue can pass `depth_max` by at most
    /// one record per concurrently appending thread (the shards), a bound of its own.
    pub fn append_admitted(&self, record: Record) -> u64 {
        self.enqueue(Some(record), None)
    }

    /// Appends a record and returns an ack that resolves once it is durable.
    pub fn append_acked(&self, record: Record) -> Result<(u64, DurableAck), Overloaded> {
        let (sender, receiver) = oneshot::channel();
        let seq = self.push(Some(record), Some(sender))?;
        Ok((seq, DurableAck(receiver)))
    }

    /// An ack that resolves once every record appended before it is durable.
    pub fn barrier(&self) -> DurableAck {
        let (sender, receiver) = oneshot::channel();
        // A barrier carries no record, so the depth bound does not apply to it.
        let mut queue = self.queue();
        queue.entries.push_back(Entry { record: None, ack: Some(sender), enqueued_at: Instant::now() });
        drop(queue);
        self.inner.work.notify_one();
        DurableAck(receiver)
    }

    fn push(&self, record: Option<Record>, ack: Option<oneshot::Sender<()>>) -> Result<u64, Overloaded> {
        if self.inner.closed.load(Ordering::Relaxed) || !self.has_room() {
            return Err(Overloaded);
        }
        Ok(self.enqueue(record, ack))
    }

    fn enqueue(&self, record: Option<Record>, ack: Option<oneshot::Sender<()>>) -> u64 {
        let mut queue = self.queue();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.records += 1;
        self.inner.queued.store(queue.records, Ordering::Relaxed);
        queue.entries.push_back(Entry {
            record: record.map(|record| SequencedRecord { seq, record }),
            ack,
            enqueued_at: Instant::now(),
        });
        drop(queue);
        self.inner.work.notify_one();
        seq
    }

    /// Records after `after_seq` that are not yet durable, in journal order, that `select`
    /// picks. An actor reloading after a restart applies these on top of the store's state.
    /// Rare path: it scans the queue under its lock.
    pub fn pending_since<T>(&self, after_seq: u64, mut select: impl FnMut(&SequencedRecord) -> Option<T>) -> Vec<T> {
        let queue = self.queue();
        queue
            .in_flight
            .iter()
            .chain(queue.entries.iter().filter_map(|entry| entry.record.as_ref()))
            .filter(|sequenced| sequenced.seq > after_seq)
            .filter_map(&mut select)
            .collect()
    }

    /// Records waiting, including the batch being committed.
    pub fn depth(&self) -> usize {
        let queue = self.queue();
        queue.records + queue.in_flight.len()
    }

    /// How long the oldest record not yet durable has waited.
    pub fn durable_lag(&self) -> Duration {
        let queue = self.queue();
        let oldest = queue.in_flight_since.or_else(|| queue.entries.front().map(|entry| entry.enqueued_at));
        oldest.map_or(Duration::ZERO, |since| since.elapsed())
    }

    pub fn stats(&self) -> &JournalStats {
        &self.inner.stats
    }

    pub fn config(&self) -> &JournalConfig {
        &self.inner.config
    }

    /// True once the writer met a store error it cannot retry; no append succeeds after.
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(Ordering::SeqCst)
    }

    /// Stops at once, as a crash would: nothing more is committed, records still queued are
    /// dropped with their acks (so their waiters learn they are not durable), and the writer
    /// thread ends after the commit in progress, if any. For crash tests.
    pub fn halt(&self) {
        self.inner.halted.store(true, Ordering::SeqCst);
        self.inner.failed.store(true, Ordering::SeqCst);
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.work.notify_one();
        let handle = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("journal writer panicked");
        }
        let mut queue = self.queue();
        queue.entries.clear();
        queue.records = 0;
        self.inner.queued.store(0, Ordering::Relaxed);
    }

    /// Stops taking records, commits everything already appended, and stops the writer.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.work.notify_one();
        let handle = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("journal writer panicked");
        }
    }
}

async fn run_writer(inner: Arc<Inner>, store: Arc<dyn Store>) {
    loop {
        let batch = loop {
            if inner.halted.load(Ordering::SeqCst) {
                return;
            }
            if let Some(batch) = take_batch(&inner) {
                break batch;
            }
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            inner.work.notified().await;
            if !inner.config.linger.is_zero() {
                tokio::time::sleep(inner.config.linger).await;
            }
        };
        let (records, acks) = batch;
        let started = Instant::now();
        if !records.is_empty() && !commit_with_retry(&inner, store.as_ref(), &records).await {
            // Unretryable: the store is corrupt. Acks are dropped, so every waiter learns the
            // record never became durable; appends fail from now on.
            inner.failed.store(true, Ordering::SeqCst);
            return;
        }
        let last_seq = records.last().map(|record| record.seq);
        {
            let mut queue = inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.in_flight = Arc::new(Vec::new());
            queue.in_flight_since = None;
        }
        let stats = &inner.stats;
        if let Some(seq) = last_seq {
            stats.committed_seq.store(seq, Ordering::Relaxed);
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.records_committed.fetch_add(records.len() as u64, Ordering::Relaxed);
        stats.last_batch_records.store(records.len() as u64, Ordering::Relaxed);
        let flush = started.elapsed();
        stats.last_flush_micros.store(flush.as_micros() as u64, Ordering::Relaxed);
        // Once per batch, not per record: the cost (a registry look-up and an atomic add each)
        // is spread over up to `batch_records_max` records.
        metrics::histogram!("tally_journal_flush_seconds").record(flush.as_secs_f64());
        metrics::histogram!("tally_journal_batch_size").record(records.len() as f64);
        for ack in acks {
            // The waiter may have gone (client disconnected); the record is durable anyway.
            let _ = ack.send(());
        }
    }
}

type Batch = (Arc<Vec<SequencedRecord>>, Vec<oneshot::Sender<()>>);

fn take_batch(inner: &Inner) -> Option<Batch> {
    let mut queue = inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if queue.entries.is_empty() {
        return None;
    }
    let mut records = Vec::with_capacity(queue.records.min(inner.config.batch_records_max));
    let mut acks = Vec::new();
    let mut since = None;
    while records.len() < inner.config.batch_records_max {
        let Some(entry) = queue.entries.pop_front() else { break };
        since.get_or_insert(entry.enqueued_at);
        if let Some(record) = entry.record {
            records.push(record);
        }
        if let Some(ack) = entry.ack {
            acks.push(ack);
        }
    }
    queue.records -= records.len();
    inner.queued.store(queue.records, Ordering::Relaxed);
    let records = Arc::new(records);
    queue.in_flight = Arc::clone(&records);
    queue.in_flight_since = since;
    Some((records, acks))
}

/// Commits, retrying with capped exponential back-off while the store is unavailable. Returns
/// false on an error that retrying cannot fix.
async fn commit_with_retry(inner: &Inner, store: &dyn Store, records: &[SequencedRecord]) -> bool {
    let mut backoff = Duration::from_millis(5);
    let mut failed_before = false;
    loop {
        if inner.halted.load(Ordering::SeqCst) {
            return false;
        }
        match store.commit(records).await {
            Ok(()) => return true,
            // An earlier attempt may have committed and then lost its connection before the
            // answer came back (an ambiguous commit). Its retry then fails the store's
            // sequence fence; if the store already holds the whole batch, the batch is done.
            Err(StoreError::Corrupt(_))
                if failed_before
                    && matches!(
                        (store.committed_seq().await, records.last()),
                        (Ok(committed), Some(last)) if committed >= last.seq
                    ) =>
            {
                tracing::warn!(
                    records = records.len(),
                    "journal batch was already committed by an attempt whose answer was lost"
                );
                return true;
            }
            Err(StoreError::Unavailable(reason)) => {
                failed_before = true;
                inner.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, records = records.len(), "journal commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.config.retry_backoff_max);
            }
            Err(StoreError::Corrupt(reason)) => {
                inner.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%reason, "journal commit refused by the store; journal stopped");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use tally_engine::{
        Account, AccountEvent, AccountId, AccountKind, AccountSnapshot, AccountStatus, Currency, Timestamp, TransferId,
    };

    use super::*;
    use crate::memory::MemoryStore;

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

    fn credit(n: u128, transfer: u128) -> Record {
        Record::Account {
            account: AccountId::from_u128(n),
            currency: Currency::USD,
            event: AccountEvent::Credited { transfer: TransferId::from_u128(transfer), amount: dec!(1) },
            after: AccountSnapshot {
                balance: Decimal::from(transfer + 1),
                held: dec!(0),
                credit_limit: dec!(0),
                status: AccountStatus::Active,
            },
        }
    }

    #[tokio::test]
    async fn an_acked_record_and_everything_before_it_is_in_the_store() {
        let store = Arc::new(MemoryStore::new());
        let journal = Journal::start(store.clone(), JournalConfig::default(), 0).unwrap();
        journal.append(opened(1)).unwrap();
        for transfer in 0..99 {
            journal.append(credit(1, transfer)).unwrap();
        }
        let (seq, ack) = journal.append_acked(credit(1, 99)).unwrap();
        assert_eq!(seq, 101);
        ack.wait().await.unwrap();
        let loaded = store.load_account(AccountId::from_u128(1)).await.unwrap().unwrap();
        assert_eq!(loaded.value.balance(), dec!(100));
        assert_eq!(loaded.seq, 101);
        assert_eq!(store.committed_seq().await.unwrap(), 101);
        journal.shutdown();
    }

    #[tokio::test]
    async fn while_the_store_is_down_appends_fill_to_the_bound_then_fail_and_resume_after() {
        let store = Arc::new(MemoryStore::new());
        let config = JournalConfig { admission_depth_max: 10, depth_max: 20, ..JournalConfig::default() };
        let journal = Journal::start(store.clone(), config, 0).unwrap();
        journal.append_acked(opened(1)).unwrap().1.wait().await.unwrap();
        store.set_available(false);
        let mut acks = Vec::new();
        let mut refused = 0;
        for transfer in 0..40 {
            match journal.append_acked(credit(1, transfer)) {
                Ok((_, ack)) => acks.push(ack),
                Err(Overloaded) => refused += 1,
            }
        }
        // The writer holds one batch in flight (up to the whole queue); depth counts it.
        assert!(journal.depth() <= 20 + acks.len());
        assert!(refused > 0, "appends beyond the bound must fail");
        assert_eq!(journal.admit(), Err(Overloaded), "new work is refused while full");
        // Wait (bounded) until the writer has met the outage at least once.
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
        journal.shutdown();
    }

    #[tokio::test]
    async fn pending_records_are_visible_until_durable() {
        let store = Arc::new(MemoryStore::new());
        let journal = Journal::start(store.clone(), JournalConfig::default(), 0).unwrap();
        journal.append_acked(opened(1)).unwrap().1.wait().await.unwrap();
        store.set_available(false);
        journal.append(credit(1, 7)).unwrap();
        let pending = journal.pending_since(1, |sequenced| match &sequenced.record {
            Record::Account { event, .. } => Some(event.clone()),
            _ => None,
        });
        assert_eq!(pending, vec![AccountEvent::Credited { transfer: TransferId::from_u128(7), amount: dec!(1) }]);
        store.set_available(true);
        journal.barrier().wait().await.unwrap();
        assert!(journal.pending_since(1, |_| Some(())).is_empty());
        journal.shutdown();
    }

    /// Commits, then reports the first commit as failed: the answer lost on the way back.
    struct LostAnswerStore {
        inner: MemoryStore,
        lost: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Store for LostAnswerStore {
        async fn commit(&self, records: &[SequencedRecord]) -> Result<(), StoreError> {
            self.inner.commit(records).await?;
            if !self.lost.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Unavailable("connection reset after COMMIT".to_owned()));
            }
            Ok(())
        }
        async fn committed_seq(&self) -> Result<u64, StoreError> {
            self.inner.committed_seq().await
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
        async fn transfer_by_idempotency(
            &self,
            scope: uuid::Uuid,
            key: &str,
        ) -> Result<Option<crate::Loaded<tally_engine::Transfer>>, StoreError> {
            self.inner.transfer_by_idempotency(scope, key).await
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
        async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<tally_engine::Posting>, StoreError> {
            self.inner.postings_of_transfer(transfer).await
        }
        async fn live_holds(&self) -> Result<Vec<crate::LiveHold>, StoreError> {
            self.inner.live_holds().await
        }
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_is_recognised_on_retry_not_taken_for_corruption() {
        let store =
            Arc::new(LostAnswerStore { inner: MemoryStore::new(), lost: std::sync::atomic::AtomicBool::new(false) });
        let journal = Journal::start(store.clone(), JournalConfig::default(), 0).unwrap();
        journal.append(opened(1)).unwrap();
        let (_, ack) = journal.append_acked(credit(1, 0)).unwrap();
        ack.wait().await.unwrap();
        assert!(!journal.has_failed(), "the journal carries on");
        let (_, ack) = journal.append_acked(credit(1, 1)).unwrap();
        ack.wait().await.unwrap();
        assert_eq!(store.committed_seq().await.unwrap(), 3);
        journal.shutdown();
    }
}
