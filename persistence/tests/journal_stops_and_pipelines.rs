//! The write-behind journal when it stops or pipelines, against scripted writers (no
//! database): a stopped journal fails every waiter it will never satisfy, in itself and in
//! the journals whose records wait on it; a batch with nothing to commit does not let the one
//! after it past the one before; and pipelined batches whose first fails or loses its answer
//! are each written once, in order.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal_macros::dec;
use tally_engine::{Account, AccountId, AccountKind, Currency, Record, Timestamp};
use tally_persistence::batch::BatchPlan;
use tally_persistence::{JournalConfig, JournalWriter, Journals, PipelineTurn, StoreError};
use tokio::sync::Notify;

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

fn clock() -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
    Arc::new(tally_persistence::batch::now)
}

#[derive(Clone)]
enum Action {
    Ok,
    /// Commits, then reports the answer lost.
    LoseAnswer,
    Unavailable,
    Corrupt,
    /// Waits on the notify (after the turn) and then does the inner action.
    Gate(Arc<Notify>, Box<Action>),
}

#[derive(Default)]
struct Db {
    committed: u64,
    /// Record ranges committed, in commit order.
    log: Vec<(u64, u64)>,
    script: VecDeque<Action>,
    /// Commit attempts started and not yet ended (by attempt number).
    running: Vec<usize>,
    attempts: usize,
    /// (attempt, attempts still running that started before it) when it passed its turn.
    turn_passed_early: Vec<(usize, Vec<usize>)>,
}

struct FakeWriter {
    db: Arc<Mutex<Db>>,
}

#[async_trait::async_trait]
impl JournalWriter for FakeWriter {
    async fn commit(&mut self, plan: &BatchPlan, mut turn: PipelineTurn) -> Result<(), StoreError> {
        let (me, action) = {
            let mut db = self.db.lock().unwrap();
            db.attempts += 1;
            let me = db.attempts;
            db.running.push(me);
            (me, db.script.pop_front().unwrap_or(Action::Ok))
        };
        turn.wait().await;
        {
            let mut db = self.db.lock().unwrap();
            let earlier: Vec<usize> = db.running.iter().copied().filter(|a| *a < me).collect();
            if !earlier.is_empty() {
                db.turn_passed_early.push((me, earlier));
            }
        }
        let mut action = action;
        if let Action::Gate(gate, inner) = action {
            gate.notified().await;
            action = *inner;
        }
        let mut db = self.db.lock().unwrap();
        db.running.retain(|a| *a != me);
        let fence = |db: &mut Db| -> Result<(), StoreError> {
            if plan.records.is_empty() {
                return Ok(());
            }
            if db.committed + 1 != plan.first_seq {
                return Err(StoreError::Corrupt(format!("fence: at {} batch {}..", db.committed, plan.first_seq)));
            }
            db.committed = plan.last_seq;
            db.log.push((plan.first_seq, plan.last_seq));
            Ok(())
        };
        match action {
            Action::Ok => fence(&mut db),
            Action::LoseAnswer => {
                fence(&mut db)?;
                Err(StoreError::Unavailable("connection reset after COMMIT".into()))
            }
            Action::Unavailable => Err(StoreError::Unavailable("down".into())),
            Action::Corrupt => Err(StoreError::Corrupt("refused".into())),
            Action::Gate(..) => unreachable!(),
        }
    }

    async fn committed_seq(&mut self) -> Result<u64, StoreError> {
        Ok(self.db.lock().unwrap().committed)
    }
}

fn start(journals: &Journals, shard: u16, db: &Arc<Mutex<Db>>, connections: usize) {
    let writers: Vec<Box<dyn JournalWriter>> =
        (0..connections).map(|_| Box::new(FakeWriter { db: Arc::clone(db) }) as Box<dyn JournalWriter>).collect();
    tokio::spawn(journals.shard(shard).clone().run_writer(writers));
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// A journal that stops (a batch refused by the store) fails its waiters: a record queued
/// behind the refused batch, and a barrier, hear that they will not be durable. Before, their
/// acks stayed in the stopped journal's queue and their waiters (a saga, holding its permits)
/// waited for ever.
#[tokio::test]
async fn waiters_behind_a_refused_batch_are_failed_not_left_hanging() {
    let db = Arc::new(Mutex::new(Db::default()));
    let gate = Arc::new(Notify::new());
    db.lock().unwrap().script.push_back(Action::Gate(Arc::clone(&gate), Box::new(Action::Corrupt)));
    let journals = Journals::new(&[0], JournalConfig::default(), clock());
    start(&journals, 0, &db, 1);
    let journal = journals.shard(0).clone();
    let (_, first) = journal.append_acked(opened(1)).unwrap();
    settle().await;
    let (_, second) = journal.append_acked(opened(2)).unwrap();
    let barrier = journal.barrier();
    gate.notify_one();
    assert!(first.wait().await.is_err(), "the refused batch is not acknowledged");
    assert!(journal.has_failed());
    let second = tokio::time::timeout(Duration::from_secs(2), second.wait()).await;
    let barrier = tokio::time::timeout(Duration::from_secs(2), barrier.wait()).await;
    assert!(
        matches!(second, Ok(Err(_))) && matches!(barrier, Ok(Err(_))),
        "queued waiters of a stopped journal should fail: second = {second:?}, barrier = {barrier:?}"
    );
}

/// A journal whose head depends on a record of a journal that stopped can never move again:
/// it stops too, and its waiters fail, instead of waiting for ever.
#[tokio::test]
async fn a_journal_waiting_on_a_stopped_journal_fails_its_waiters() {
    let db0 = Arc::new(Mutex::new(Db::default()));
    let db1 = Arc::new(Mutex::new(Db::default()));
    db0.lock().unwrap().script.push_back(Action::Corrupt);
    let journals = Journals::new(&[0, 0], JournalConfig::default(), clock());
    start(&journals, 0, &db0, 1);
    start(&journals, 1, &db1, 1);
    let (p0, a0) = journals.shard(0).append_acked(opened(1)).unwrap();
    let p1 = journals.shard(1).append_admitted(opened(2), Some(p0));
    let (_, a1) = journals.shard(1).append_acked(opened(3)).unwrap();
    assert!(a0.wait().await.is_err());
    let a1 = tokio::time::timeout(Duration::from_secs(2), a1.wait()).await;
    let waited = tokio::time::timeout(Duration::from_secs(2), journals.wait_durable(p1)).await;
    assert!(
        matches!(a1, Ok(Err(_))),
        "journal 1 is not failed ({}), its head waits on {p0:?} forever: ack = {a1:?}, wait_durable = {waited:?}",
        journals.shard(1).has_failed()
    );
}

/// `PipelineTurn`: a batch changes existing rows only after the batch before it has ended. A
/// batch that writes nothing (a barrier alone) ends at once; it used to release the batch
/// after it then, which passed its turn while the batch before the barrier still committed
/// (on Postgres: its updates ran against rows not yet committed, and the fence refused it).
/// Three connections, as a deeper pipeline would use.
#[tokio::test]
async fn a_batch_behind_an_empty_batch_still_waits_for_the_one_before() {
    let db = Arc::new(Mutex::new(Db::default()));
    let gate = Arc::new(Notify::new());
    db.lock().unwrap().script.push_back(Action::Gate(Arc::clone(&gate), Box::new(Action::Ok)));
    let journals = Journals::new(&[0], JournalConfig::default(), clock());
    start(&journals, 0, &db, 3);
    let journal = journals.shard(0).clone();
    let (_, a) = journal.append_acked(opened(1)).unwrap();
    settle().await;
    let barrier = journal.barrier();
    settle().await;
    let (_, c) = journal.append_acked(opened(2)).unwrap();
    settle().await;
    let early = db.lock().unwrap().turn_passed_early.clone();
    gate.notify_one();
    a.wait().await.unwrap();
    barrier.wait().await.unwrap();
    let c = c.wait().await;
    assert!(
        early.is_empty(),
        "attempts that passed their turn while an earlier one still ran: {early:?}; third batch's ack: {c:?}; journal failed: {}",
        journal.has_failed()
    );
}

/// Two records committed as two pipelined batches on two connections, the first of which
/// ends with `first`; answers the store's log once both are acknowledged, and the journal.
async fn two_pipelined_batches(first: Action) -> (Arc<Mutex<Db>>, Journals) {
    let db = Arc::new(Mutex::new(Db::default()));
    let gate = Arc::new(Notify::new());
    db.lock().unwrap().script.push_back(Action::Gate(Arc::clone(&gate), Box::new(first)));
    let journals = Journals::new(&[0], JournalConfig::default(), clock());
    start(&journals, 0, &db, 2);
    let journal = journals.shard(0).clone();
    let (_, a) = journal.append_acked(opened(1)).unwrap();
    settle().await;
    let (_, b) = journal.append_acked(opened(2)).unwrap();
    settle().await;
    gate.notify_one();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
    (db, journals)
}

/// Two batches in flight: the first's answer is lost after it committed, the second follows
/// it; neither is written twice, both are acknowledged, and the journal goes on.
#[tokio::test]
async fn pipelined_lost_answer_is_settled_once() {
    let (db, journals) = two_pipelined_batches(Action::LoseAnswer).await;
    let (_, c) = journals.shard(0).append_acked(opened(3)).unwrap();
    c.wait().await.unwrap();
    assert!(!journals.shard(0).has_failed());
    assert_eq!(db.lock().unwrap().log, vec![(1, 1), (2, 2), (3, 3)]);
}

/// The first of two pipelined batches fails (not committed); the second is refused by the
/// fence; both are retried in order and acknowledged once.
#[tokio::test]
async fn pipelined_failure_retries_in_order() {
    let (db, journals) = two_pipelined_batches(Action::Unavailable).await;
    assert!(!journals.shard(0).has_failed());
    assert_eq!(db.lock().unwrap().log, vec![(1, 1), (2, 2)]);
}
