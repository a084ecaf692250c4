//! The write-behind journals: one per shard.
//!
//! Actors apply a change in memory and append its record to a shard's journal; that shard's
//! writer drains it into the store in group commits (one store transaction per batch) on
//! connections of its own, running as a task on the shard's thread. Every record gets the
//! next sequence number of its journal as it is appended, under the lock that orders the
//! queue, so per shard: sequence order is journal order is commit order, and what is durable
//! is always a prefix.
//!
//! **Which journal.** A saga's records (its transfer's states and every step its actors apply
//! for it) all go to the journal of the saga's shard, so one durable ack covers the whole
//! transfer and one batch usually holds all of it. An actor therefore appends to whichever
//! journal the caller names (`Target`), and its own history can span journals.
//!
//! **Dependencies.** When an actor appends to a journal other than the one holding its
//! previous record, the new record depends on that previous one (`JournalPosition`): a
//! writer commits a record only once every record it depends on is durable in its own
//! journal. An actor's history is thus durable in the order it happened, across journals, and
//! a balance can never be durable with a later change and without an earlier one. A writer
//! takes the longest prefix of its queue whose dependencies are durable; dependencies always
//! point to records appended earlier in time, so the writers can never wait on each other in
//! a cycle.
//!
//! **Pipelining.** A store may give a writer several connections (`Store::journal_writers`):
//! the next batch then commits while the previous one does, and the store's fence (the
//! shard's `committed_seq` advanced from the value the batch expects, last in its transaction)
//! orders the commits. A batch that fails takes every batch after it back to the queue.
//!
//! A caller that must not answer before its change is durable appends its last record with
//! `append_acked` and awaits the `DurableAck`; since commits are in order, that one ack covers
//! every earlier record of the same journal, and their dependencies.
//!
//! Bounds. New work is admitted only while fewer than `admission_depth_max` records wait (a
//! running saga, admitted with `admit_held`, counts as one more until it ends, so a burst
//! admitted before it has appended anything still meets the bound). Records of work already
//! admitted (a saga's later steps, its compensation) may fill the queue further, up to
//! `depth_max`. The gap between the two is sized for every admitted saga
//! to finish, so a saga is never stranded half way for want of journal room. Beyond
//! `depth_max` an append fails with `Overloaded`, never an unbounded wait.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rust_decimal::Decimal;
use tally_engine::{AccountId, Record, Timestamp, Transfer, TransferId};
use tokio::sync::{Notify, oneshot};

use crate::batch::{BatchPlan, PlanState};
use crate::store::{JournalWriter, PipelineTurn, SequencedRecord, StoreError};

mod kept_holds;
use kept_holds::KeptHolds;

#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// New work is refused once this many records wait in one journal. 65,536 records is
    /// about 1/10 s of the target write rate: enough to ride out a slow commit, small enough
    /// that a full queue (database down) is noticed within a fraction of a second.
    pub admission_depth_max: usize,
    /// Hard bound on waiting records of one journal. Must exceed `admission_depth_max` by the
    /// records that admitted work may still append (sagas in flight × records per saga).
    pub depth_max: usize,
    /// Most records in one store transaction. 8,192 keeps one Postgres transaction's bulk
    /// insert at a few megabytes while amortising the commit's fsync.
    pub batch_records_max: usize,
    /// After waking, wait this long for more records before committing a small batch. Zero
    /// commits at once; batches still form from whatever arrives during the previous commit.
    pub linger: Duration,
    /// Longest wait between retries while the store is unavailable.
    pub retry_backoff_max: Duration,
    /// Account balance snapshots are written behind, coalesced: at most this long after a
    /// change (postings are the durable truth, each with the balance after it; a store reads
    /// an account as its snapshot and the newest posting after it, one index look-up however
    /// old the snapshot). Thirty seconds turns every account changed in that time into one
    /// row write: with 10,000 accounts in uniform use at 5,000 transfers/s, two seconds
    /// rewrote about one account row per transfer (`scripts/bench`, 23 µs of Postgres time per
    /// transfer in `pg_stat_statements`).
    pub snapshot_interval: Duration,
    /// ... or as soon as this many accounts wait for their snapshot, whichever comes first:
    /// the pending snapshots live in the writer's memory (about 100 bytes each).
    pub snapshot_dirty_max: usize,
    /// A flush is written this many rows per batch (in the batches that commit records, or
    /// in batches of its own when there are none). 128 rows add ~2 ms to a commit; the whole
    /// flush at once (10,000 rows after 30 s of `uniform`) was one ~130 ms statement that
    /// held up every commit behind it. At one batch per commit this still writes thousands of
    /// rows a second, far more than accounts change in an interval.
    pub snapshot_rows_per_batch: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            admission_depth_max: 65_536,
            depth_max: 65_536 + 300_000,
            batch_records_max: 8_192,
            linger: Duration::ZERO,
            retry_backoff_max: Duration::from_millis(500),
            snapshot_interval: Duration::from_secs(30),
            snapshot_dirty_max: 65_536,
            snapshot_rows_per_batch: 128,
        }
    }
}

/// A place under a journal's admission bound, held by running work (`Journal::admit_held`)
/// and given back when dropped.
pub struct Admitted {
    inner: Arc<Inner>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.inner.admitted.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("shard", &self.inner.shard).finish()
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

/// Where a record sits: its shard's journal and its sequence number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JournalPosition {
    pub shard: u16,
    pub seq: u64,
}

struct Entry {
    record: Option<SequencedRecord>,
    /// A record of another journal that must be durable before this one is committed.
    depends_on: Option<JournalPosition>,
    ack: Option<oneshot::Sender<()>>,
    enqueued_at: Instant,
    /// How many entries after this one were appended with it as a group, to be committed in
    /// the same batch as it (`append_group_acked`).
    group_rest: usize,
}

/// Rounds of `Writer::let_ready_tasks_append` after a commit, at most: a bound on how long a
/// busy thread can put off the next batch (each round runs every task ready on the thread).
const YIELDS_MAX: usize = 16;

struct Queue {
    entries: VecDeque<Entry>,
    /// Number of entries in `entries` that carry a record (barriers do not).
    records: usize,
    next_seq: u64,
    /// Batches taken for commit and not yet durable, oldest first (for `pending_transfer`).
    in_flight: VecDeque<Arc<Vec<SequencedRecord>>>,
    in_flight_since: Option<Instant>,
    /// The writer has ended (`Journal::writer_ended`) or the journal was halted: nothing
    /// queued from now on can become durable, so an entry's ack is dropped instead of queued
    /// and its waiter fails at once rather than wait for ever.
    stopped: bool,
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
    /// Records of another shard's journal that this one's next record waited for (a
    /// dependency not yet durable), each counted once however long the wait.
    pub dependency_waits: AtomicU64,
    /// Snapshot flushes and the account rows they wrote.
    pub snapshot_flushes: AtomicU64,
    pub snapshot_rows: AtomicU64,
}

/// What every shard's journal shares: how far each one is durable, and a signal when any
/// advances (a writer waiting on a dependency listens for it).
struct Progress {
    durable: Vec<AtomicU64>,
    /// Per shard: its writer has ended, so what is not durable in it now never will be.
    /// Set after the writer's last change to `durable` (`Journal::writer_ended`).
    stopped: Vec<AtomicBool>,
    advanced: Notify,
    /// The clock postings are booked at (`now` of the engine's clock seam), made monotonic
    /// across journals: an account's history can span journals, and its postings' times must
    /// never go back.
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    last_booked: AtomicU64,
    /// Holds the writers keep back from the store, over every journal.
    kept_holds: KeptHolds,
}

impl Progress {
    /// Books no earlier than `floor` from now on.
    fn book_no_earlier_than(&self, floor: Timestamp) {
        self.last_booked.fetch_max(u64::try_from(floor.as_micros()).unwrap_or(0), Ordering::AcqRel);
    }

    fn is_durable(&self, position: JournalPosition) -> bool {
        self.durable
            .get(usize::from(position.shard))
            .is_none_or(|durable| durable.load(Ordering::Acquire) >= position.seq)
    }

    /// True if `position` will never be durable: its journal's writer has ended short of it.
    fn never_durable(&self, position: JournalPosition) -> bool {
        self.stopped.get(usize::from(position.shard)).is_some_and(|stopped| stopped.load(Ordering::Acquire))
            && !self.is_durable(position)
    }

    /// A booking time later than any given or reserved before: the clock's, or the microsecond
    /// after the latest when the clock is behind it (stepped back, or a restart's floor ahead of
    /// it). Strictly later, so that no two batches share a time: postings of one wallet in two
    /// journals were ordered by shard, not as applied, when their batches' times tied (a review
    /// found it; wallet postings have no per-wallet number to break the tie).
    fn book(&self) -> Timestamp {
        let now = u64::try_from((self.clock)().as_micros()).unwrap_or(0);
        let previous = self
            .last_booked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last.saturating_add(1))))
            .unwrap_or_else(|last| last);
        Timestamp::from_micros(i64::try_from(now.max(previous.saturating_add(1))).unwrap_or(i64::MAX))
    }

    /// An instant no batch booked so far is later than, and every batch booked from now on is:
    /// the clock's, or the latest booking time when the clock is behind it.
    fn reserve_instant(&self) -> Timestamp {
        let now = u64::try_from((self.clock)().as_micros()).unwrap_or(0);
        let previous = self.last_booked.fetch_max(now, Ordering::AcqRel);
        Timestamp::from_micros(i64::try_from(previous.max(now)).unwrap_or(i64::MAX))
    }
}

struct Inner {
    shard: u16,
    queue: Mutex<Queue>,
    /// `queue.records`, readable without the lock for `has_room`.
    queued: AtomicUsize,
    /// Work admitted by `admit_held` and still running (its `Admitted` tickets alive). Counted
    /// with `queued` against the admission bound: a burst of sagas is admitted before any of
    /// them has appended a record, so `queued` alone let a burst of 600 past a bound of 300
    /// (`tests/fault_outage.rs` saw every one admitted to a store that was down).
    admitted: AtomicUsize,
    work: Notify,
    closed: AtomicBool,
    failed: AtomicBool,
    /// Set by `halt`: stop without committing anything more.
    halted: AtomicBool,
    /// Set when the writer task has ended (after `shutdown` or `halt`, or a failure).
    writer_done: AtomicBool,
    writer_ended: Notify,
    config: JournalConfig,
    stats: JournalStats,
    progress: Arc<Progress>,
}

/// One shard's journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("shard", &self.inner.shard).field("depth", &self.depth()).finish()
    }
}

/// Every shard's journal.
#[derive(Clone)]
pub struct Journals {
    shards: Arc<[Journal]>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Journals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journals").field("shards", &self.shards.len()).finish()
    }
}

impl Journals {
    /// Journals for `committed_seqs.len()` shards, numbering on from each shard's last
    /// committed sequence number. Their writers are started with `Journal::run_writer`, on
    /// whichever thread serves the shard. `clock` books postings (the engine's clock seam).
    pub fn new(
        committed_seqs: &[u64],
        config: JournalConfig,
        clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    ) -> Journals {
        let progress = Arc::new(Progress {
            durable: committed_seqs.iter().map(|seq| AtomicU64::new(*seq)).collect(),
            stopped: committed_seqs.iter().map(|_| AtomicBool::new(false)).collect(),
            advanced: Notify::new(),
            clock,
            last_booked: AtomicU64::new(0),
            kept_holds: KeptHolds::default(),
        });
        let shards: Vec<Journal> = committed_seqs
            .iter()
            .enumerate()
            .map(|(shard, committed)| {
                let inner = Arc::new(Inner {
                    shard: u16::try_from(shard).unwrap_or(u16::MAX),
                    queue: Mutex::new(Queue {
                        entries: VecDeque::new(),
                        records: 0,
                        next_seq: committed + 1,
                        in_flight: VecDeque::new(),
                        in_flight_since: None,
                        stopped: false,
                    }),
                    queued: AtomicUsize::new(0),
                    admitted: AtomicUsize::new(0),
                    work: Notify::new(),
                    closed: AtomicBool::new(false),
                    failed: AtomicBool::new(false),
                    halted: AtomicBool::new(false),
                    writer_done: AtomicBool::new(false),
                    writer_ended: Notify::new(),
                    config: config.clone(),
                    stats: JournalStats::default(),
                    progress: Arc::clone(&progress),
                });
                inner.stats.committed_seq.store(*committed, Ordering::Relaxed);
                Journal { inner }
            })
            .collect();
        Journals { shards: shards.into(), progress }
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The journal of `shard` (clamped to the last: shards are fixed at start).
    pub fn shard(&self, shard: u16) -> &Journal {
        let index = usize::from(shard).min(self.shards.len().saturating_sub(1));
        &self.shards[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Journal> {
        self.shards.iter()
    }

    pub fn is_durable(&self, position: JournalPosition) -> bool {
        self.progress.is_durable(position)
    }

    /// The holds of `account` that the writers keep back from the store (`kept_holds`): an
    /// account loaded from the store adds them. Read this before the store.
    pub fn kept_holds_of(&self, account: AccountId) -> Vec<(TransferId, Decimal)> {
        self.progress.kept_holds.of(account)
    }

    /// Resolves once `position` is durable, or fails if its journal stops first.
    pub async fn wait_durable(&self, position: JournalPosition) -> Result<(), JournalStopped> {
        loop {
            let advanced = self.progress.advanced.notified();
            if self.is_durable(position) {
                return Ok(());
            }
            let journal = self.shard(position.shard);
            if journal.has_failed() || journal.inner.writer_done.load(Ordering::Acquire) {
                return Err(JournalStopped);
            }
            // Bounded wait: a notification missed between the check and here costs 10 ms.
            let _ = tokio::time::timeout(Duration::from_millis(10), advanced).await;
        }
    }

    /// Resolves once every record appended to any journal before the call is durable.
    /// Books no batch earlier than `floor` (the store's `last_booked_at`, read at start-up).
    pub fn book_no_earlier_than(&self, floor: Timestamp) {
        self.progress.book_no_earlier_than(floor);
    }

    /// An instant that divides bookings: every batch booked before the call is at or before
    /// it, every batch booked after it later. Reads "as of now" take it rather than the clock,
    /// which can be behind the bookings (stepped back, or behind the store's `last_booked_at`
    /// after a restart) and would leave out postings a client has already been answered.
    pub fn reserve_instant(&self) -> Timestamp {
        self.progress.reserve_instant()
    }

    pub async fn barrier(&self) -> Result<(), JournalStopped> {
        let acks: Vec<DurableAck> = self.shards.iter().map(Journal::barrier).collect();
        for ack in acks {
            ack.wait().await?;
        }
        Ok(())
    }

    /// Records waiting in every journal, including the batches being committed.
    pub fn depth(&self) -> usize {
        self.shards.iter().map(Journal::depth).sum()
    }

    /// How long the oldest record not yet durable, in any journal, has waited.
    pub fn durable_lag(&self) -> Duration {
        self.shards.iter().map(Journal::durable_lag).max().unwrap_or_default()
    }

    pub fn has_failed(&self) -> bool {
        self.shards.iter().any(Journal::has_failed)
    }

    /// The newest state of transfer `id` recorded but not yet durable, in any journal.
    pub fn pending_transfer(&self, id: TransferId) -> Option<Transfer> {
        self.newest_pending(|record| match record {
            Record::Transfer(transfer) if transfer.id == id => Some((**transfer).clone()),
            _ => None,
        })
    }

    /// The newest record not yet durable, in any journal, that `select` picks (mapped by it).
    /// A rare path: it scans the queues under their locks. The records of one saga or one
    /// crypto operation are all in one journal, so "newest" is that journal's order.
    pub fn newest_pending<T>(&self, mut select: impl FnMut(&Record) -> Option<T>) -> Option<T> {
        self.shards.iter().find_map(|journal| journal.newest_pending(&mut select))
    }

    /// Stops at once, as a crash would (see `Journal::halt`), and waits for the writers.
    pub async fn halt(&self) {
        for journal in self.shards.iter() {
            journal.halt();
        }
        for journal in self.shards.iter() {
            journal.writer_finished().await;
        }
    }

    /// Stops taking records, commits everything appended (and the pending snapshots), and
    /// waits for the writers to end.
    pub async fn shutdown(&self) {
        for journal in self.shards.iter() {
            journal.close();
        }
        for journal in self.shards.iter() {
            journal.writer_finished().await;
        }
    }

    /// The counters of every shard, summed (`committed_seq` is the sum too: a figure that
    /// grows by one per record committed anywhere).
    pub fn totals(&self) -> JournalTotals {
        let mut totals = JournalTotals::default();
        for journal in self.shards.iter() {
            let stats = journal.stats();
            totals.committed_records += stats.records_committed.load(Ordering::Relaxed);
            totals.batches += stats.batches.load(Ordering::Relaxed);
            totals.flush_errors += stats.flush_errors.load(Ordering::Relaxed);
            totals.dependency_waits += stats.dependency_waits.load(Ordering::Relaxed);
            totals.snapshot_rows += stats.snapshot_rows.load(Ordering::Relaxed);
            totals.last_flush_micros = totals.last_flush_micros.max(stats.last_flush_micros.load(Ordering::Relaxed));
        }
        totals
    }
}

/// Every journal's counters added up, for health and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalTotals {
    pub committed_records: u64,
    pub batches: u64,
    pub flush_errors: u64,
    pub dependency_waits: u64,
    pub snapshot_rows: u64,
    pub last_flush_micros: u64,
}

impl Journal {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock would be a bug in the few lines below; the queue's
        // contents are still consistent (each push or pop is one VecDeque call), so recover.
        self.inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn shard(&self) -> u16 {
        self.inner.shard
    }

    /// Refuses new work while the queue (with the work admitted and still running) is past
    /// the admission bound, or the journal failed.
    pub fn admit(&self) -> Result<(), Overloaded> {
        let waiting = self.inner.queued.load(Ordering::Relaxed) + self.inner.admitted.load(Ordering::Relaxed);
        if self.inner.failed.load(Ordering::Relaxed)
            || self.inner.closed.load(Ordering::Relaxed)
            || waiting >= self.inner.config.admission_depth_max
        {
            return Err(Overloaded);
        }
        Ok(())
    }

    /// `admit` for work that appends over a while (a saga): the work takes one place under the
    /// admission bound until the ticket is dropped, so work admitted together counts before
    /// its records arrive. (Two threads admitting at once may both pass the last place: the
    /// bound is exceeded by at most one per thread, and `depth_max` stays the hard bound.)
    pub fn admit_held(&self) -> Result<Admitted, Overloaded> {
        self.admit()?;
        self.inner.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted { inner: Arc::clone(&self.inner) })
    }

    /// `admit_held` for `count` pieces of work that start together or not at all (an atomic
    /// batch's items on this journal): one check of the bound for all of them, then a ticket
    /// each. Checked item by item, a batch with more items than the bound could never start,
    /// and each retry would be answered `503`; admitted whole, work admitted at once may pass
    /// the bound by the sizes of the batches among it. What they append stays within
    /// `depth_max`'s reserve, as running sagas' records do: the engine's saga permits
    /// (`sagas_in_flight_max`) bound how many items run at once.
    pub fn admit_held_many(&self, count: usize) -> Result<Vec<Admitted>, Overloaded> {
        self.admit()?;
        self.inner.admitted.fetch_add(count, Ordering::Relaxed);
        Ok((0..count).map(|_| Admitted { inner: Arc::clone(&self.inner) }).collect())
    }

    /// Appends a record. Returns its position.
    pub fn append(&self, record: Record) -> Result<JournalPosition, Overloaded> {
        self.push(Some(record), None, None)
    }

    /// Whether an append would fit now. An actor checks this before it applies a change, then
    /// appends with `append_admitted`, so a full journal refuses the change before it happens.
    pub fn has_room(&self) -> bool {
        self.inner.queued.load(Ordering::Relaxed) < self.inner.config.depth_max
            && !self.inner.failed.load(Ordering::Relaxed)
    }

    /// Appends a record whose room `has_room` confirmed, after `depends_on` (the appending
    /// actor's previous record, if it is in another journal). Never fails: between the check
    /// and this call other threads may append too, so the queue can pass `depth_max` by at
    /// most one record per concurrently appending thread, a bound of its own.
    pub fn append_admitted(&self, record: Record, depends_on: Option<JournalPosition>) -> JournalPosition {
        self.enqueue(Some(record), depends_on, None)
    }

    /// Appends a record and returns an ack that resolves once it is durable.
    pub fn append_acked(&self, record: Record) -> Result<(JournalPosition, DurableAck), Overloaded> {
        let (sender, receiver) = oneshot::channel();
        let position = self.push(Some(record), None, Some(sender))?;
        Ok((position, DurableAck(receiver)))
    }

    /// An ack that resolves once every record appended to this journal before it is durable.
    pub fn barrier(&self) -> DurableAck {
        let (sender, receiver) = oneshot::channel();
        // A barrier carries no record, so the depth bound does not apply to it.
        let mut queue = self.queue();
        if queue.stopped {
            // Dropped with its sender: the waiter fails at once.
            return DurableAck(receiver);
        }
        queue.entries.push_back(Entry {
            record: None,
            depends_on: None,
            ack: Some(sender),
            enqueued_at: Instant::now(),
            group_rest: 0,
        });
        drop(queue);
        self.inner.work.notify_one();
        DurableAck(receiver)
    }

    fn push(
        &self,
        record: Option<Record>,
        depends_on: Option<JournalPosition>,
        ack: Option<oneshot::Sender<()>>,
    ) -> Result<JournalPosition, Overloaded> {
        if self.inner.closed.load(Ordering::Relaxed) || !self.has_room() {
            return Err(Overloaded);
        }
        Ok(self.enqueue(record, depends_on, ack))
    }

    fn enqueue(
        &self,
        record: Option<Record>,
        depends_on: Option<JournalPosition>,
        ack: Option<oneshot::Sender<()>>,
    ) -> JournalPosition {
        // A dependency on this very journal is implied by its order; drop it.
        let depends_on = depends_on.filter(|position| position.shard != self.inner.shard);
        let mut queue = self.queue();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        if queue.stopped {
            // Never durable: nothing is queued, and an ack is dropped (its waiter fails).
            return JournalPosition { shard: self.inner.shard, seq };
        }
        queue.records += 1;
        self.inner.queued.store(queue.records, Ordering::Relaxed);
        queue.entries.push_back(Entry {
            record: record.map(|record| SequencedRecord { seq, record }),
            depends_on,
            ack,
            enqueued_at: Instant::now(),
            group_rest: 0,
        });
        drop(queue);
        self.inner.work.notify_one();
        JournalPosition { shard: self.inner.shard, seq }
    }

    /// Appends `records` as one group: consecutive, and committed in one batch (one store
    /// transaction), so after a crash either all of them are durable or none is. The ack
    /// resolves once they are. An atomic batch of transfers records its intent this way.
    pub fn append_group_acked(&self, records: Vec<Record>) -> Result<DurableAck, Overloaded> {
        self.append_group_positioned(records).map(|(_, ack)| ack)
    }

    /// `append_group_acked`, also answering the position of the group's first record (the
    /// next one's, for an empty group): an account opened with its audit record is known to
    /// its registry by where its opening is.
    pub fn append_group_positioned(&self, records: Vec<Record>) -> Result<(JournalPosition, DurableAck), Overloaded> {
        if self.inner.closed.load(Ordering::Relaxed) || !self.has_room() {
            return Err(Overloaded);
        }
        let (sender, receiver) = oneshot::channel();
        let (first, _) = self.enqueue_group(records, None, Some(sender));
        Ok((first, DurableAck(receiver)))
    }

    /// Appends `records` as one group (as `append_group_acked`) whose room `has_room` confirmed,
    /// after `depends_on`, as `append_admitted` does for one record; answers the position of
    /// the last. An actor's change with the audit record of the admin who asked for it.
    pub fn append_admitted_group(&self, records: Vec<Record>, depends_on: Option<JournalPosition>) -> JournalPosition {
        let (_, last) = self.enqueue_group(records, depends_on, None);
        last
    }

    /// Enqueues `records` as one group; `ack`, if any, resolves once the last is durable. Answers the
    /// positions of the first and last record (for an empty group, both the next one's).
    fn enqueue_group(
        &self,
        records: Vec<Record>,
        depends_on: Option<JournalPosition>,
        mut ack: Option<oneshot::Sender<()>>,
    ) -> (JournalPosition, JournalPosition) {
        // A dependency on this very journal is implied by its order; drop it.
        let depends_on = depends_on.filter(|position| position.shard != self.inner.shard);
        let mut queue = self.queue();
        let count = records.len();
        let now = Instant::now();
        let first = queue.next_seq;
        if queue.stopped {
            // Never durable: nothing is queued, and an ack is dropped (its waiter fails).
            queue.next_seq += u64::try_from(count).unwrap_or(0);
            let last = queue.next_seq.saturating_sub(1).max(first);
            let shard = self.inner.shard;
            return (JournalPosition { shard, seq: first }, JournalPosition { shard, seq: last });
        }
        for (index, record) in records.into_iter().enumerate() {
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.entries.push_back(Entry {
                record: Some(SequencedRecord { seq, record }),
                // The group goes whole into one batch, so the first entry's dependency holds
                // for all of it.
                depends_on: if index == 0 { depends_on } else { None },
                ack: if index + 1 == count { ack.take() } else { None },
                enqueued_at: now,
                group_rest: if index == 0 { count - 1 } else { 0 },
            });
        }
        let last = queue.next_seq.saturating_sub(1).max(first);
        queue.records += count;
        self.inner.queued.store(queue.records, Ordering::Relaxed);
        if let Some(ack) = ack {
            // No records: nothing to wait for, as a barrier of an empty group.
            queue.entries.push_back(Entry {
                record: None,
                depends_on: None,
                ack: Some(ack),
                enqueued_at: now,
                group_rest: 0,
            });
        }
        drop(queue);
        self.inner.work.notify_one();
        let shard = self.inner.shard;
        (JournalPosition { shard, seq: first }, JournalPosition { shard, seq: last })
    }

    /// The newest record of this journal not yet durable that `select` picks.
    pub fn newest_pending<T>(&self, select: &mut impl FnMut(&Record) -> Option<T>) -> Option<T> {
        let queue = self.queue();
        let queued = queue.entries.iter().filter_map(|entry| entry.record.as_ref());
        let in_flight = queue.in_flight.iter().flat_map(|batch| batch.iter());
        in_flight.chain(queued).fold(None, |newest, sequenced| select(&sequenced.record).or(newest))
    }

    /// Work admitted under the bound and still running (`admit_held`'s tickets not yet dropped).
    pub fn admitted(&self) -> usize {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Records waiting, including the batches being committed.
    pub fn depth(&self) -> usize {
        let queue = self.queue();
        queue.records + queue.in_flight.iter().map(|batch| batch.len()).sum::<usize>()
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
    /// ends after the commit in progress, if any. For crash tests.
    pub fn halt(&self) {
        self.inner.halted.store(true, Ordering::SeqCst);
        self.inner.failed.store(true, Ordering::SeqCst);
        self.inner.closed.store(true, Ordering::SeqCst);
        let mut queue = self.queue();
        queue.stopped = true;
        queue.entries.clear();
        queue.records = 0;
        self.inner.queued.store(0, Ordering::Relaxed);
        drop(queue);
        self.inner.work.notify_one();
    }

    /// Stops taking records; the writer commits everything already appended and ends.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.work.notify_one();
    }

    /// Resolves once the writer task has ended (at once if it never started).
    async fn writer_finished(&self) {
        loop {
            let ended = self.inner.writer_ended.notified();
            if self.inner.writer_done.load(Ordering::Acquire) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), ended).await;
        }
    }

    /// The writer: runs until the journal is closed (and drained) or halted, committing with
    /// `writers` (several of them pipeline their commits). Spawn it on the shard's thread.
    pub async fn run_writer(self, writers: Vec<Box<dyn JournalWriter>>) {
        let inner = Arc::clone(&self.inner);
        if writers.is_empty() {
            tracing::error!(shard = inner.shard, "a journal writer needs at least one connection");
            inner.failed.store(true, Ordering::SeqCst);
        } else {
            Writer::new(self.clone(), writers).run().await;
        }
        self.writer_ended();
        inner.writer_done.store(true, Ordering::Release);
        inner.writer_ended.notify_waiters();
        inner.progress.advanced.notify_waiters();
    }

    /// The writer has ended (closed and drained, halted, or failed): whatever is still queued
    /// can never become durable. Its acks are dropped, so their waiters fail now instead of
    /// waiting for ever (a saga waiting on one would hold its permits for good), later appends
    /// queue nothing (`Queue::stopped`), and journals whose records wait on one of this one's
    /// learn that it never will be durable (`Progress::never_durable`). The batches it had
    /// taken and not seen committed go too: read as pending (`newest_pending`), a refused one
    /// would answer a retry with a change the store never held (a deposit's retry was told
    /// "already credited"); whatever of them did commit, the store answers.
    fn writer_ended(&self) {
        let dropped = {
            let mut queue = self.queue();
            queue.stopped = true;
            queue.records = 0;
            self.inner.queued.store(0, Ordering::Relaxed);
            queue.in_flight.clear();
            queue.in_flight_since = None;
            std::mem::take(&mut queue.entries)
        };
        if !dropped.is_empty() {
            tracing::warn!(
                shard = self.inner.shard,
                entries = dropped.len(),
                "journal stopped with entries not durable; their waiters fail"
            );
        }
        drop(dropped);
        if let Some(stopped) = self.inner.progress.stopped.get(usize::from(self.inner.shard)) {
            stopped.store(true, Ordering::Release);
        }
    }

    /// Takes the longest prefix of the queue (up to a batch) whose dependencies are durable.
    /// `None` if the queue is empty; an empty batch if its head waits on another journal.
    fn take_ready(&self) -> Option<Taken> {
        let mut queue = self.queue();
        if queue.entries.is_empty() {
            return None;
        }
        let mut records = Vec::with_capacity(queue.records.min(self.inner.config.batch_records_max));
        let mut acks = Vec::new();
        let mut since = None;
        let mut blocked_on = None;
        while records.len() < self.inner.config.batch_records_max {
            let Some(front) = queue.entries.front() else { break };
            if let Some(dependency) = front.depends_on
                && !self.inner.progress.is_durable(dependency)
            {
                blocked_on = Some(dependency);
                break;
            }
            // A group goes whole into one batch: into the next one if it does not fit in
            // this one's room, and alone past `batch_records_max` if it is larger.
            let group = 1 + front.group_rest;
            if group > 1 && !records.is_empty() && records.len() + group > self.inner.config.batch_records_max {
                break;
            }
            for _ in 0..group {
                let Some(entry) = queue.entries.pop_front() else { break };
                since.get_or_insert(entry.enqueued_at);
                if let Some(record) = entry.record {
                    records.push(record);
                }
                if let Some(ack) = entry.ack {
                    acks.push(ack);
                }
            }
        }
        queue.records -= records.len();
        self.inner.queued.store(queue.records, Ordering::Relaxed);
        let records = Arc::new(records);
        if !records.is_empty() {
            queue.in_flight.push_back(Arc::clone(&records));
            if queue.in_flight_since.is_none() {
                queue.in_flight_since = since;
            }
        }
        Some(Taken { records, acks, blocked_on })
    }

    /// The oldest in-flight batch became durable (or was given back).
    fn retire_in_flight(&self) {
        let mut queue = self.queue();
        queue.in_flight.pop_front();
        if queue.in_flight.is_empty() {
            queue.in_flight_since = None;
        }
    }
}

struct Taken {
    records: Arc<Vec<SequencedRecord>>,
    acks: Vec<oneshot::Sender<()>>,
    /// The record the queue's head waits for in another journal (a dependency not yet durable).
    blocked_on: Option<JournalPosition>,
}

/// One batch on its way to the store: what it holds, who waits for it, and its plan.
struct Batch {
    records: Arc<Vec<SequencedRecord>>,
    acks: Vec<oneshot::Sender<()>>,
    plan: Arc<BatchPlan>,
    started: Instant,
}

type Committing = Pin<Box<dyn Future<Output = (Box<dyn JournalWriter>, Batch, Result<(), StoreError>)> + Send>>;

/// The writer task's state.
struct Writer {
    journal: Journal,
    idle: Vec<Box<dyn JournalWriter>>,
    committing: FuturesOrdered<Committing>,
    /// The end of the newest batch in flight, which the next one waits on (see `PipelineTurn`).
    turn_after: Option<crate::store::BatchEnd>,
    state: PlanState,
    last_snapshot_flush: Instant,
    /// The record in another journal the queue's head waited for last (`note_wait`).
    waited_on: Option<JournalPosition>,
}

impl Writer {
    fn new(journal: Journal, writers: Vec<Box<dyn JournalWriter>>) -> Writer {
        Writer {
            journal,
            idle: writers,
            committing: FuturesOrdered::new(),
            turn_after: None,
            state: PlanState::for_journal(),
            last_snapshot_flush: Instant::now(),
            waited_on: None,
        }
    }

    fn inner(&self) -> &Inner {
        &self.journal.inner
    }

    async fn run(mut self) {
        loop {
            if self.inner().halted.load(Ordering::SeqCst) {
                return;
            }
            // Fill the pipeline: one batch per idle connection.
            let mut blocked = false;
            while !self.idle.is_empty() && !self.inner().halted.load(Ordering::SeqCst) {
                match self.journal.take_ready() {
                    Some(taken) => {
                        if let Some(dependency) = taken.blocked_on
                            && self.inner().progress.never_durable(dependency)
                        {
                            // The record it waits for will never be durable, so neither can
                            // this journal's next one, nor (in order) anything after it.
                            tracing::error!(
                                shard = self.inner().shard,
                                waits_on = dependency.shard,
                                "journal waits on a record of a journal that stopped; journal stopped"
                            );
                            self.inner().failed.store(true, Ordering::SeqCst);
                            return;
                        }
                        blocked |= taken.blocked_on.is_some();
                        self.note_wait(taken.blocked_on);
                        if taken.records.is_empty() && taken.acks.is_empty() {
                            break;
                        }
                        self.start(taken);
                    }
                    None => break,
                }
            }
            let closing = self.inner().closed.load(Ordering::SeqCst);
            if self.committing.is_empty() {
                if closing && self.journal.queue().entries.is_empty() {
                    // Drained: write the snapshots still pending, then end.
                    self.flush_snapshots_at_close().await;
                    return;
                }
                if (self.snapshot_flush_due() || self.state.flush_under_way())
                    && self.commit_snapshot_flush(self.inner().config.snapshot_rows_per_batch).await.is_err()
                {
                    return;
                }
                self.wait_for_work(blocked).await;
                continue;
            }
            // Wait for the oldest commit, or for work that an idle connection could take.
            let inner = Arc::clone(&self.journal.inner);
            let work = inner.work.notified();
            let progress = inner.progress.advanced.notified();
            let can_take_more = !self.idle.is_empty();
            tokio::select! {
                biased;
                Some(done) = self.committing.next() => {
                    if !self.finished(done).await {
                        return;
                    }
                    Self::let_ready_tasks_append(&self.journal).await;
                }
                _ = work, if can_take_more => {}
                _ = progress, if can_take_more && blocked => {}
            }
        }
    }

    /// After a commit, before taking the next batch: lets the tasks already woken on this
    /// thread run first, as long as they append records (at most `YIELDS_MAX` rounds). A saga
    /// whose step was answered meanwhile then appends its next record, often its last, before
    /// the batch is taken; taken between its credit and its end, it would be written twice
    /// (a `processing` row with its hold, then its final state over it: "The write plan" in
    /// ARCHITECTURE.md). Transfers written twice, `scripts/bench` (README, "Then (2026-12-06,
    /// third session)"): `uniform` 10.5–13.6 % with no yield, 3.9–4.5 % with at most 4,
    /// 1.0–1.1 % with at most 16; `batch` 9.6–10.6 %, 8.7–9.3 %, 4.1–4.4 % (4.0–5.5 % over
    /// the fourth session's five runs). A yield with nothing else to run costs a trip through
    /// the scheduler, once per commit.
    async fn let_ready_tasks_append(journal: &Journal) {
        for _ in 0..YIELDS_MAX {
            let before = journal.queue().next_seq;
            tokio::task::yield_now().await;
            if journal.queue().next_seq == before {
                break;
            }
        }
    }

    /// Counts a wait for another journal once per record waited for (the writer wakes many
    /// times while one wait lasts).
    fn note_wait(&mut self, blocked_on: Option<JournalPosition>) {
        if blocked_on.is_some() && blocked_on != self.waited_on {
            self.inner().stats.dependency_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.waited_on = blocked_on;
    }

    /// Waits until there may be something to do: new records, another journal's progress
    /// (when the head waits on a dependency), a snapshot flush falling due, or close.
    async fn wait_for_work(&mut self, blocked: bool) {
        let inner = self.inner();
        let work = inner.work.notified();
        let progress = inner.progress.advanced.notified();
        let flush_in = if self.state.flush_under_way() {
            // The rest of a flush under way, in batches of its own while no records come.
            Duration::ZERO
        } else if self.state.has_dirty_snapshots() {
            inner.config.snapshot_interval.saturating_sub(self.last_snapshot_flush.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        // Re-check after arming the notifications: a record appended in between is not lost.
        if !self.journal.queue().entries.is_empty() && !blocked {
            return;
        }
        tokio::select! {
            _ = work => {
                if !inner.config.linger.is_zero() {
                    tokio::time::sleep(inner.config.linger).await;
                }
            }
            _ = progress, if blocked => {}
            // A missed progress signal costs at most a millisecond.
            _ = tokio::time::sleep(Duration::from_millis(1)), if blocked => {}
            _ = tokio::time::sleep(flush_in) => {}
        }
    }

    /// Time to set aside a new flush: none is under way, and the oldest change has waited the
    /// interval or too many have piled up.
    fn snapshot_flush_due(&self) -> bool {
        !self.state.flush_under_way()
            && self.state.has_dirty_snapshots()
            && (self.last_snapshot_flush.elapsed() >= self.inner().config.snapshot_interval
                || self.state.dirty_snapshots() >= self.inner().config.snapshot_dirty_max)
    }

    /// Plans `taken` and starts committing it on an idle connection.
    fn start(&mut self, taken: Taken) {
        let Some(mut writer) = self.idle.pop() else { return };
        if self.snapshot_flush_due() {
            self.begin_snapshot_flush();
        }
        let booked_at = self.inner().progress.book();
        let rows = self.inner().config.snapshot_rows_per_batch;
        let plan = Arc::new(BatchPlan::build(self.inner().shard, &taken.records, &mut self.state, booked_at, rows));
        self.note_snapshot_rows(&plan);
        let batch = Batch { records: taken.records, acks: taken.acks, plan, started: Instant::now() };
        let (turn, end) = PipelineTurn::next(&mut self.turn_after);
        self.committing.push_back(Box::pin(async move {
            let result = if batch.records.is_empty() && batch.plan.snapshots.is_empty() {
                Ok(())
            } else {
                writer.commit(&batch.plan, turn).await
            };
            end.after_commit().await;
            (writer, batch, result)
        }));
    }

    /// Sets aside every changed balance as a flush, which the next batches write.
    fn begin_snapshot_flush(&mut self) {
        self.state.begin_flush();
        self.last_snapshot_flush = Instant::now();
        self.inner().stats.snapshot_flushes.fetch_add(1, Ordering::Relaxed);
    }

    fn note_snapshot_rows(&self, plan: &BatchPlan) {
        self.inner().stats.snapshot_rows.fetch_add(plan.snapshots.len() as u64, Ordering::Relaxed);
    }

    /// A commit ended. On success its records are durable: acks fire, dependants may go. On
    /// a failure every later commit in flight is waited for and the lot retried in order.
    /// Returns false when the journal must stop (corruption, or halted).
    async fn finished(&mut self, done: (Box<dyn JournalWriter>, Batch, Result<(), StoreError>)) -> bool {
        let (writer, batch, result) = done;
        self.idle.push(writer);
        match result {
            Ok(()) => {
                self.durable(batch);
                true
            }
            Err(error) => {
                // Every later batch in flight depends on this one (the store's fence): let
                // them end, whatever they say, then settle all of them in order.
                let mut failed = vec![batch];
                while let Some((writer, later, _)) = self.committing.next().await {
                    self.idle.push(writer);
                    failed.push(later);
                }
                self.retry_in_order(failed, error).await
            }
        }
    }

    fn durable(&mut self, batch: Batch) {
        let inner = Arc::clone(&self.journal.inner);
        let last_seq = batch.records.last().map(|record| record.seq);
        // Before the batch is said to be durable: whoever waits for that and then loads an
        // account reads the holds kept back as of this batch (`kept_holds`).
        inner.progress.kept_holds.apply(&batch.plan);
        self.journal.retire_in_flight();
        if let Some(seq) = last_seq {
            inner.stats.committed_seq.store(seq, Ordering::Relaxed);
            if let Some(durable) = inner.progress.durable.get(usize::from(inner.shard)) {
                // The durable-prefix rule: a shard's records become durable in sequence order,
                // each batch the run right after the last one, none skipped or repeated.
                debug_assert!(
                    batch.records.iter().map(|record| record.seq).eq(durable.load(Ordering::Acquire) + 1..=seq),
                    "shard {}: a batch's records continue the durable sequence without a gap",
                    inner.shard
                );
                durable.store(seq, Ordering::Release);
            }
            inner.progress.advanced.notify_waiters();
        }
        self.state.committed(&batch.plan);
        let stats = &inner.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.records_committed.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        stats.last_batch_records.store(batch.records.len() as u64, Ordering::Relaxed);
        let flush = batch.started.elapsed();
        stats.last_flush_micros.store(flush.as_micros() as u64, Ordering::Relaxed);
        // Once per batch, not per record: the cost (a registry look-up and an atomic add each)
        // is spread over up to `batch_records_max` records.
        metrics::histogram!("tally_journal_flush_seconds").record(flush.as_secs_f64());
        metrics::histogram!("tally_journal_batch_size").record(batch.records.len() as f64);
        for ack in batch.acks {
            // The waiter may have gone (client disconnected); the record is durable anyway.
            let _ = ack.send(());
        }
    }

    /// Settles `batches` (oldest first, the first having failed with `first_error`): each is
    /// retried alone, with capped back-off while the store is unavailable, until durable.
    async fn retry_in_order(&mut self, batches: Vec<Batch>, first_error: StoreError) -> bool {
        let mut error = Some(first_error);
        // 5 ms doubling to `retry_backoff_max`, kept across the batches: the store is away.
        let mut waits = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(self.inner().config.retry_backoff_max)
            .without_max_times()
            .build();
        for (index, batch) in batches.into_iter().enumerate() {
            // Whether some attempt at this batch may have committed unseen. The first batch's
            // only attempt so far ended with the error in hand; a later batch's answer was
            // discarded, so it may be in. A store that refused a batch outright (`Corrupt`)
            // rolled it back, so that answer alone never makes it "maybe committed".
            let mut maybe_committed = index > 0;
            loop {
                if self.inner().halted.load(Ordering::SeqCst) {
                    return false;
                }
                let outcome = match error.take() {
                    Some(error) => Err(error),
                    None => match self.idle.last_mut() {
                        Some(writer) => writer.commit(&batch.plan, PipelineTurn::alone()).await,
                        None => Err(StoreError::Unavailable("no journal connection".to_owned())),
                    },
                };
                match outcome {
                    Ok(()) => break,
                    Err(reason) => {
                        maybe_committed |= !matches!(reason, StoreError::Corrupt(_));
                        // An earlier attempt may have committed and lost its answer (or a
                        // pipelined batch may have followed one that did): the store's
                        // committed sequence says whether this batch is already in.
                        let committed = match self.idle.last_mut() {
                            Some(writer) => writer.committed_seq().await,
                            None => Err(StoreError::Unavailable("no journal connection".to_owned())),
                        };
                        if let Err(StoreError::Corrupt(refused)) = &committed {
                            // The store will not say where this writer's shard stands (a cluster
                            // node whose lease moved: another writer carries the sequence on
                            // from the committed prefix, so its number says nothing of this
                            // batch). Nothing more is acknowledged; the journal stops, and a
                            // client's retry under its key finds what the new owner recovered.
                            tracing::error!(shard = self.inner().shard, %refused, %reason, "journal's shard refused to this writer; journal stopped");
                            self.inner().failed.store(true, Ordering::SeqCst);
                            return false;
                        }
                        let committed = committed.ok();
                        if maybe_committed
                            && let (Some(committed), Some(last)) = (committed, batch.records.last())
                            && committed >= last.seq
                        {
                            // The sequence alone does not say whose commit that was: another
                            // writer that first kept this one out (SQLite's lock) and then
                            // committed its own numbers past ours would pass for it. The
                            // batch's hash-chain link does say (`JournalWriter::holds`).
                            let holds = match self.idle.last_mut() {
                                Some(writer) => writer.holds(&batch.plan).await,
                                None => Err(StoreError::Unavailable("no journal connection".to_owned())),
                            };
                            match holds {
                                Ok(true) => {
                                    tracing::warn!(
                                        shard = self.inner().shard,
                                        records = batch.records.len(),
                                        "journal batch was already committed by an attempt whose answer was lost"
                                    );
                                    break;
                                }
                                Ok(false) => {
                                    tracing::error!(
                                        shard = self.inner().shard,
                                        first = batch.records.first().map_or(0, |first| first.seq),
                                        last = last.seq,
                                        committed,
                                        "the store is past this journal's batch, which it does not hold: another \
                                         writer has been at this shard; journal stopped"
                                    );
                                    self.inner().stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                                    self.inner().failed.store(true, Ordering::SeqCst);
                                    return false;
                                }
                                // Unknown for now: wait and ask again, as for the commit.
                                Err(_) => {}
                            }
                        }
                        self.inner().stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                        match reason {
                            StoreError::Corrupt(reason)
                                if !maybe_committed
                                    || committed.is_some_and(|committed| {
                                        batch.records.first().is_some_and(|first| committed + 1 == first.seq)
                                    }) =>
                            {
                                // Either the batch follows the committed prefix exactly and the
                                // store still refuses it (the data, not the connection, is
                                // wrong), or the store is ahead of a batch none of whose
                                // attempts can have committed: another writer has been at
                                // this shard.
                                tracing::error!(shard = self.inner().shard, %reason, "journal commit refused by the store; journal stopped");
                                self.inner().failed.store(true, Ordering::SeqCst);
                                return false;
                            }
                            reason => {
                                tracing::warn!(shard = self.inner().shard, %reason, records = batch.records.len(), "journal commit failed; retrying");
                                let wait = waits.next().unwrap_or(self.inner().config.retry_backoff_max);
                                tokio::time::sleep(wait).await;
                            }
                        }
                    }
                }
            }
            self.durable(batch);
        }
        true
    }

    /// A batch with no records that writes the next `rows` snapshots of the flush under way,
    /// setting one aside first if one is due (the journal is idle).
    async fn commit_snapshot_flush(&mut self, rows: usize) -> Result<(), ()> {
        if self.snapshot_flush_due() {
            self.begin_snapshot_flush();
        }
        let booked_at = self.inner().progress.book();
        let plan = BatchPlan::build(self.inner().shard, &Arc::new(Vec::new()), &mut self.state, booked_at, rows);
        self.note_snapshot_rows(&plan);
        let batch =
            Batch { records: Arc::new(Vec::new()), acks: Vec::new(), plan: Arc::new(plan), started: Instant::now() };
        let Some(mut writer) = self.idle.pop() else { return Ok(()) };
        let result = writer.commit(&batch.plan, PipelineTurn::alone()).await;
        self.idle.push(writer);
        match result {
            Ok(()) => {
                self.state.committed(&batch.plan);
                Ok(())
            }
            Err(StoreError::Unavailable(reason)) => {
                // The snapshots stay pending; a later batch writes them. Wait before trying
                // again: nothing else can commit while the store is away either.
                self.state.restore_snapshots(&batch.plan);
                tracing::warn!(shard = self.inner().shard, %reason, "snapshot flush failed; will retry");
                tokio::time::sleep(self.inner().config.retry_backoff_max).await;
                Ok(())
            }
            Err(StoreError::Corrupt(reason)) => {
                tracing::error!(shard = self.inner().shard, %reason, "snapshot flush refused by the store; journal stopped");
                self.inner().failed.store(true, Ordering::SeqCst);
                Err(())
            }
        }
    }

    async fn flush_snapshots_at_close(&mut self) {
        if self.state.has_dirty_snapshots() {
            self.begin_snapshot_flush();
        }
        for _ in 0..3 {
            if !self.state.has_dirty_snapshots() {
                return;
            }
            if self.commit_snapshot_flush(usize::MAX).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
