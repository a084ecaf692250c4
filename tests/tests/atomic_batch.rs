//! Atomic batches are all or none across a crash: a crash before the batch's intent is durable
//! leaves nothing (recovery releases the holds), a crash after it leaves every item to happen
//! (recovery drives each one forward), whichever shards the items' accounts live on. And a
//! batch is admitted whole under the journal's admission bound, however many items it holds.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;
use tally_persistence::StoreReads;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{ActorKind, AtomicBatch, BatchItem, Engine, EngineConfig};
use tally_engine::{Account, Currency, TransferStatus};
use tally_persistence::Store;
use tally_tests::Harness;

/// Eight sources (spread over the shards by their ids), each sending 10 USD to one sink.
async fn world(harness: &Harness) -> (Vec<Account>, Account) {
    let mut sources = Vec::new();
    for _ in 0..8 {
        let source = harness.open(Currency::USD).await;
        harness.fund(&source, dec!(100)).await;
        sources.push(source);
    }
    let sink = harness.open(Currency::USD).await;
    (sources, sink)
}

fn items(harness: &Harness, sources: &[Account], sink: &Account) -> Vec<BatchItem> {
    sources.iter().map(|source| BatchItem { request: harness.request(source, sink, dec!(10)), key: None }).collect()
}

async fn restart(harness: &Harness) -> Engine {
    harness.engine.halt().await;
    harness.store.set_commits_available(true);
    Engine::start(harness.store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap()
}

async fn balance(engine: &Engine, account: &Account) -> (Decimal, Decimal) {
    let account = engine.account(account.id).await.unwrap();
    (account.balance(), account.position.held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_intent_is_durable_leaves_nothing() {
    let harness = Harness::start().await;
    let (sources, sink) = world(&harness).await;
    // Nothing commits from here: the holds are placed, the intent waits for the store.
    harness.store.set_commits_available(false);
    let items = items(&harness, &sources, &sink);
    let ids: Vec<_> = items.iter().map(|item| item.request.id).collect();
    let batch = {
        let engine = harness.engine.clone();
        tokio::spawn(async move { engine.transfer_batch_atomic(items).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!batch.is_finished(), "the batch waits for its intent to be durable");

    let restarted = restart(&harness).await;
    let _ = batch.await;
    for source in &sources {
        assert_eq!(balance(&restarted, source).await, (dec!(100), dec!(0)), "no hold left, no money moved");
    }
    assert_eq!(balance(&restarted, &sink).await.0, dec!(0));
    for id in ids {
        assert_eq!(restarted.load_transfer(id).await.unwrap(), None, "no item became a transfer");
    }
    restarted.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_intent_is_durable_lets_every_item_happen() {
    let harness = Harness::start().await;
    let (sources, sink) = world(&harness).await;
    // Every item's saga panics at its first step, past the quarantine bound: none moves money
    // in this run. Only the intent (and the holds before it) is durable.
    harness.engine.faults().arm_panics(ActorKind::TransferSaga, 10_000);
    let items = items(&harness, &sources, &sink);
    let ids: Vec<_> = items.iter().map(|item| item.request.id).collect();
    let outcome = harness.engine.transfer_batch_atomic(items).await.unwrap();
    let AtomicBatch::Ran(results) = outcome else { panic!("every hold stood: {outcome:?}") };
    assert!(results.iter().all(Result::is_err), "no item finished in this run: {results:?}");
    for source in &sources {
        assert_eq!(balance(&harness.engine, source).await, (dec!(100), dec!(10)), "held, not moved");
    }

    harness.engine.faults().disarm();
    let restarted = restart(&harness).await;
    for source in &sources {
        assert_eq!(balance(&restarted, source).await, (dec!(90), dec!(0)), "every item happened");
    }
    assert_eq!(balance(&restarted, &sink).await.0, dec!(80));
    for id in ids {
        let transfer = restarted.load_transfer(id).await.unwrap().expect("every item is a transfer");
        assert_eq!(transfer.status, TransferStatus::Completed);
    }
    assert!(harness.store.non_terminal_transfers().await.unwrap().is_empty(), "every item ended");
    restarted.shutdown(Duration::from_secs(5)).await;
}

/// An atomic batch is admitted whole while its journals are under the admission bound, however
/// many items it holds: it cannot start in part, so counting it item by item against the bound
/// would refuse a batch larger than the bound forever, each retry answered `503`. Its items
/// then hold their places until they end, as sagas do, so work admitted after it counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_admission_bound_is_admitted_whole_and_its_items_count_against_the_bound() {
    const BOUND: usize = 4;
    let mut config = EngineConfig::default();
    config.journal.admission_depth_max = BOUND;
    let harness = Harness::start_with(config).await;
    let (sources, sink) = world(&harness).await;
    // Eight items from one source: twice the bound on its one journal.
    let items: Vec<_> =
        (0..8).map(|_| BatchItem { request: harness.request(&sources[0], &sink, dec!(1)), key: None }).collect();

    // Commits stop, so the batch's items run and wait, holding their places.
    harness.store.set_commits_available(false);
    let batch = {
        let engine = harness.engine.clone();
        tokio::spawn(async move { engine.transfer_batch_atomic(items).await })
    };
    let journal = harness.engine.journals().shard(harness.engine.shard_of(sources[0].id.as_uuid())).clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while journal.admitted() < 8 {
        assert!(!batch.is_finished(), "the batch ended while commits were stopped: {:?}", batch.await);
        assert!(std::time::Instant::now() < deadline, "{} items admitted", journal.admitted());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A transfer on that journal now finds it past its bound.
    let refused = harness.engine.transfer(harness.request(&sources[0], &sink, dec!(1))).await;
    assert!(matches!(refused, Err(ref error) if error.code() == tally_engine::ErrorCode::Overloaded), "{refused:?}");

    harness.store.set_commits_available(true);
    let AtomicBatch::Ran(results) = batch.await.unwrap().unwrap() else { panic!("the batch ran") };
    assert!(
        results.iter().all(|result| matches!(result, Ok(t) if t.status == TransferStatus::Completed)),
        "{results:?}"
    );
    assert_eq!(balance(&harness.engine, &sources[0]).await, (dec!(92), dec!(0)));
    assert_eq!(balance(&harness.engine, &sink).await.0, dec!(8));
    assert_eq!(journal.admitted(), 0, "every item gave its place back");
    harness.shutdown().await;
}

/// The same for a destination quarantined between the phases (its actor kept panicking): an
/// item undone after the intent was durable would break the batch's all or none, so phase 3
/// waits for the quarantine to be released, and the batch completes whole. (A single
/// transfer, or an admin's execute, is answered instead: nothing shared stands on them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_quarantined_between_the_phases_is_waited_for_and_the_batch_completes_whole() {
    let mut config = EngineConfig::default();
    config.actors.quarantine_restarts = 3;
    let harness = Harness::start_with(config).await;
    let engine = &harness.engine;
    let alice = harness.open(Currency::USD).await;
    let carol = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    harness.fund(&carol, dec!(100)).await;
    // Both items credit bob, so phase 3 sends account messages to bob alone until a credit
    // is taken: the panics armed below all land on his actor.
    let items = vec![
        BatchItem { request: harness.request(&alice, &bob, dec!(10)), key: None },
        BatchItem { request: harness.request(&carol, &bob, dec!(5)), key: None },
    ];
    // Phase 1 runs; the intent waits for the store.
    harness.store.set_commits_available(false);
    let batch = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.transfer_batch_atomic(items).await })
    };
    for _ in 0..200 {
        if engine.account(carol.id).await.unwrap().position.held == dec!(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.account(alice.id).await.unwrap().position.held, dec!(10), "phase 1 done");
    assert_eq!(engine.account(carol.id).await.unwrap().position.held, dec!(5), "phase 1 done");

    // Bob's actor panics on its next three messages, phase 3's credits: quarantined.
    engine.faults().arm_panics(ActorKind::Account, 3);
    harness.store.set_commits_available(true);
    for _ in 0..500 {
        if engine.accounts().is_quarantined(bob.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.faults().disarm();
    assert!(engine.accounts().is_quarantined(bob.id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!batch.is_finished(), "phase 3 waits for bob");
    engine.release_account_quarantine(bob.id);
    let AtomicBatch::Ran(results) =
        tokio::time::timeout(Duration::from_secs(30), batch).await.expect("the batch ends").unwrap().unwrap()
    else {
        panic!("the batch ran")
    };
    for result in &results {
        assert_eq!(result.as_ref().map(|t| t.status).ok(), Some(TransferStatus::Completed), "{results:?}");
    }
    assert_eq!(harness.balance(&alice).await, dec!(90));
    assert_eq!(harness.balance(&carol).await, dec!(95));
    assert_eq!(harness.balance(&bob).await, dec!(15));
    assert_eq!(engine.account(alice.id).await.unwrap().position.held, dec!(0));
    assert_eq!(engine.account(carol.id).await.unwrap().position.held, dec!(0));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

/// Phase 3 credits a destination that admitted the credit in phase 1, so a destination that
/// is only busy then (its mailbox full while its thread is occupied) is waited for: the batch
/// still completes whole. Before, that item's saga took the busy answer as a refusal, undid
/// itself and ended `failed` while the other item completed: half a batch, a key that replayed
/// the failure for ever, and an admission left on the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_busy_in_phase_3_is_waited_for_and_the_batch_completes_whole() {
    let mut config = EngineConfig::default();
    config.actors.shards = 2;
    config.actors.mailbox_capacity_max = 4;
    let harness = Harness::start_with(config).await;
    let alice = harness.open_on_thread(0).await;
    let carol = harness.open_on_thread(0).await;
    let bob = harness.open_on_thread(1).await;
    harness.fund(&alice, dec!(100)).await;
    let items = vec![
        BatchItem { request: harness.request(&alice, &bob, dec!(10)), key: None },
        BatchItem { request: harness.request(&alice, &carol, dec!(10)), key: None },
    ];
    let to_bob = items[0].request.id;
    // Phase 1 runs; the intent waits for the store.
    harness.store.set_commits_available(false);
    let batch = {
        let engine = harness.engine.clone();
        tokio::spawn(async move { engine.transfer_batch_atomic(items).await })
    };
    for _ in 0..200 {
        if harness.engine.account(alice.id).await.unwrap().position.held == dec!(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(harness.engine.account(alice.id).await.unwrap().position.held, dec!(20), "phase 1 done");
    assert!(!batch.is_finished());

    // Bob's thread is occupied for a moment, and other requests fill his mailbox meanwhile.
    let readers = harness.make_busy(&bob, 4, Duration::from_millis(1_000)).await;
    // The intent becomes durable: phase 3 runs while bob cannot take a message.
    harness.store.set_commits_available(true);
    let AtomicBatch::Ran(results) = batch.await.unwrap().unwrap() else { panic!("the batch ran") };
    for reader in readers {
        let _ = reader.await;
    }
    for result in &results {
        assert_eq!(result.as_ref().map(|t| t.status).ok(), Some(TransferStatus::Completed), "{results:?}");
    }
    assert_eq!(harness.balance(&alice).await, dec!(80));
    assert_eq!(harness.balance(&bob).await, dec!(10));
    assert_eq!(harness.balance(&carol).await, dec!(10));
    let bob_now = harness.engine.account(bob.id).await.unwrap();
    assert!(!bob_now.position.credit_admitted(to_bob), "the admission was used by the credit, not left behind");
    assert_eq!(harness.engine.account(alice.id).await.unwrap().position.held, dec!(0));
    harness.shutdown().await;
}

// ---- admissions are stored: an account loaded again keeps its promise ------------------------

/// A fresh store of each kind, and a way to stop its commits for a while (`Pause`).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// Stops and restarts a store's commits: the memory store's switch; on SQLite a second
/// connection holding the write lock (the journal's commits meet `SQLITE_BUSY` and are retried
/// once it lets go); on Postgres a transaction locking `journal_shards` against writes (every
/// commit advances its shard's row there; reads, such as an account's load, go on).
enum Pause {
    Memory(Arc<tally_persistence::MemoryStore>),
    Sqlite { url: String, lock: Option<sqlx::SqliteConnection> },
    Postgres { url: String, lock: Option<sqlx::PgConnection> },
}

impl Pause {
    async fn pause(&mut self) {
        use sqlx::Connection;
        match self {
            Pause::Memory(store) => store.set_commits_available(false),
            Pause::Sqlite { url, lock } => {
                let mut connection = sqlx::SqliteConnection::connect(url.as_str()).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.unwrap();
                *lock = Some(connection);
            }
            Pause::Postgres { url, lock } => {
                let mut connection = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
                sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
                sqlx::query("LOCK TABLE journal_shards IN EXCLUSIVE MODE").execute(&mut connection).await.unwrap();
                *lock = Some(connection);
            }
        }
    }

    async fn resume(&mut self) {
        match self {
            Pause::Memory(store) => store.set_commits_available(true),
            Pause::Sqlite { lock, .. } => {
                sqlx::query("ROLLBACK").execute(lock.as_mut().unwrap()).await.unwrap();
            }
            Pause::Postgres { lock, .. } => {
                sqlx::query("ROLLBACK").execute(lock.as_mut().unwrap()).await.unwrap();
            }
        }
    }
}

async fn fresh_store(backend: Backend) -> (Arc<dyn Store>, Pause) {
    match backend {
        Backend::Memory => {
            let store = Arc::new(tally_persistence::MemoryStore::new());
            (store.clone() as Arc<dyn Store>, Pause::Memory(store))
        }
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("tally-admissions-{}", uuid::Uuid::new_v4()));
            let url = format!("sqlite://{}", dir.join("ledger.db").display());
            let store = tally_persistence::sqlite::SqliteStore::open(&url).await.unwrap();
            (Arc::new(store) as Arc<dyn Store>, Pause::Sqlite { url, lock: None })
        }
        Backend::Postgres => {
            let url = tally_tests::postgres::fresh_database("admissions").await;
            let store = tally_persistence::postgres::PgStore::connect(&url).await.unwrap();
            store.migrate().await.unwrap();
            (Arc::new(store) as Arc<dyn Store>, Pause::Postgres { url, lock: None })
        }
    }
}

/// An admission (phase 1 at the destination) outlives the destination's actor: once it has
/// passivated and is loaded again, a block does not refuse the admitted credit, and a close is
/// refused while the credit has not landed. Before admissions were stored, an account loaded
/// from SQLite or Postgres had forgotten them (the memory store replays its records, so it
/// passed there).
async fn an_admission_outlives_its_actor(backend: Backend) {
    use tally_engine::{AccountCommand, StatusAction, UserId};
    let (store, _pause) = fresh_store(backend).await;
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = Duration::ZERO;
    // Swept by hand.
    config.actors.passivation_sweep_interval = Duration::from_secs(3_600);
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let owner = UserId::from_u128(1);

    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let t1 = engine.new_transfer_id();
    let admit = AccountCommand::AdmitCredit { transfer: t1, amount: dec!(10), currency: Currency::USD };
    engine.accounts().command(bob.id, admit).await.unwrap();
    engine.journals().barrier().await.unwrap();
    tally_tests::passivate(&engine, bob.id).await;
    assert!(engine.account(bob.id).await.unwrap().position.credit_admitted(t1), "{backend:?}: kept across a load");
    engine.set_account_status(bob.id, StatusAction::Block).await.unwrap();
    let credit = AccountCommand::Credit { transfer: t1, amount: dec!(10), currency: Currency::USD };
    engine.accounts().command(bob.id, credit).await.expect("the admitted credit lands on the blocked account");
    engine.journals().barrier().await.unwrap();
    assert!(store.live_admissions().await.unwrap().is_empty(), "{backend:?}: the landed credit ended it");
    tally_tests::passivate(&engine, bob.id).await;
    let bob_now = engine.account(bob.id).await.unwrap();
    assert_eq!((bob_now.balance(), bob_now.position.has_admitted_credits()), (dec!(10), false), "{backend:?}");

    let carol = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let t2 = engine.new_transfer_id();
    let admit = AccountCommand::AdmitCredit { transfer: t2, amount: dec!(5), currency: Currency::USD };
    engine.accounts().command(carol.id, admit).await.unwrap();
    engine.journals().barrier().await.unwrap();
    tally_tests::passivate(&engine, carol.id).await;
    assert!(
        engine.set_account_status(carol.id, StatusAction::Close).await.is_err(),
        "{backend:?}: an account with a promised credit does not close"
    );
    engine.accounts().command(carol.id, AccountCommand::WithdrawCredit { transfer: t2 }).await.unwrap();
    engine.journals().barrier().await.unwrap();
    tally_tests::passivate(&engine, carol.id).await;
    engine.set_account_status(carol.id, StatusAction::Close).await.expect("withdrawn, it closes");
    assert!(store.live_admissions().await.unwrap().is_empty(), "{backend:?}: the withdrawal ended it");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_outlives_its_actor_on_the_memory_store() {
    an_admission_outlives_its_actor(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_outlives_its_actor_on_sqlite() {
    an_admission_outlives_its_actor(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_outlives_its_actor_on_postgres() {
    an_admission_outlives_its_actor(Backend::Postgres).await;
}

/// An atomic batch of two items (alice → bob 10, carol → dave 5). Between its phases, while
/// the intent waits for the store, an admin blocks bob (phase 3 must still credit him: he
/// admitted it), and bob's actor restarts once (a panic), so it is loaded from the store. The
/// batch completes whole: before admissions were stored, on SQLite and Postgres bob's item
/// was refused, compensated and failed alone while dave's completed.
async fn a_batch_survives_a_reloaded_blocked_destination(backend: Backend) {
    use tally_engine::{AccountCommand, AccountStatus, StatusAction, TransferKind, UserId};
    let (store, mut pause) = fresh_store(backend).await;
    let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(1);
    let mut accounts = Vec::new();
    for _ in 0..4 {
        accounts.push(engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap());
    }
    let (alice, bob, carol, dave) = (&accounts[0], &accounts[1], &accounts[2], &accounts[3]);
    for source in [alice, carol] {
        engine.adjust(TransferKind::AdminCredit, source.id, dec!(100), None, None, None).await.unwrap();
    }
    engine.journals().barrier().await.unwrap();

    pause.pause().await;
    let items = vec![
        BatchItem { request: tally_tests::internal_request(&engine, alice, bob, dec!(10)), key: None },
        BatchItem { request: tally_tests::internal_request(&engine, carol, dave, dec!(5)), key: None },
    ];
    let batch = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.transfer_batch_atomic(items).await })
    };
    let phase_1_done = || async {
        engine.account(bob.id).await.unwrap().position.has_admitted_credits()
            && engine.account(dave.id).await.unwrap().position.has_admitted_credits()
    };
    for _ in 0..500 {
        if phase_1_done().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(phase_1_done().await, "phase 1 done");
    assert!(!batch.is_finished());

    let block = {
        let engine = engine.clone();
        let bob = bob.id;
        tokio::spawn(async move { engine.set_account_status(bob, StatusAction::Block).await })
    };
    for _ in 0..500 {
        if engine.account(bob.id).await.unwrap().status == AccountStatus::Blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarts = |engine: &Engine| engine.health(1).kind(ActorKind::Account).unwrap().restarts;
    let before = restarts(&engine);
    engine.faults().arm_panics(ActorKind::Account, 1);
    let poke = {
        let accounts = Arc::clone(engine.accounts());
        let bob = bob.id;
        tokio::spawn(async move {
            accounts.command(bob, AccountCommand::SetStatus { action: StatusAction::Block }).await.map(|_| ())
        })
    };
    for _ in 0..500 {
        if restarts(&engine) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.faults().disarm();
    assert!(restarts(&engine) > before, "bob's actor restarted");
    pause.resume().await;

    let outcome = tokio::time::timeout(Duration::from_secs(60), batch).await.expect("the batch ends").unwrap().unwrap();
    let AtomicBatch::Ran(results) = outcome else { panic!("every hold and admission stood: {outcome:?}") };
    let _ = block.await;
    let _ = poke.await;
    for result in &results {
        let status = result.as_ref().map(|t| t.status).ok();
        assert_eq!(status, Some(TransferStatus::Completed), "{backend:?}: whole: {results:?}");
    }
    let mut balances = Vec::new();
    for account in &accounts {
        balances.push(engine.account(account.id).await.unwrap().balance());
    }
    assert_eq!(balances, vec![dec!(90), dec!(10), dec!(95), dec!(5)], "{backend:?}");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_a_reloaded_blocked_destination_on_the_memory_store() {
    a_batch_survives_a_reloaded_blocked_destination(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_a_reloaded_blocked_destination_on_sqlite() {
    a_batch_survives_a_reloaded_blocked_destination(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_a_reloaded_blocked_destination_on_postgres() {
    a_batch_survives_a_reloaded_blocked_destination(Backend::Postgres).await;
}

/// Across a crash: the intent is durable, no item has run (their sagas panic), and an admin
/// blocks the destination before the process stops. After the restart, recovery drives every
/// item forward and the blocked destination, loaded from the store, honours what it admitted:
/// the batch completes whole. And an admission whose batch never got its intent (a crash in
/// between) is withdrawn by recovery: nothing will keep it, and it would keep its account from
/// ever closing.
async fn admissions_across_a_restart(backend: Backend) {
    use tally_engine::{AccountCommand, AccountStatus, StatusAction, TransferKind, UserId};
    let (store, _pause) = fresh_store(backend).await;
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(1);
    let open = || engine.open_account(owner, Currency::USD, Decimal::ZERO);
    let (alice, carol, sink, lonely) =
        (open().await.unwrap(), open().await.unwrap(), open().await.unwrap(), open().await.unwrap());
    for source in [&alice, &carol] {
        engine.adjust(TransferKind::AdminCredit, source.id, dec!(100), None, None, None).await.unwrap();
    }
    engine.faults().arm_panics(ActorKind::TransferSaga, 10_000);
    let items = vec![
        BatchItem { request: tally_tests::internal_request(&engine, &alice, &sink, dec!(10)), key: None },
        BatchItem { request: tally_tests::internal_request(&engine, &carol, &sink, dec!(5)), key: None },
    ];
    let AtomicBatch::Ran(results) = engine.transfer_batch_atomic(items).await.unwrap() else {
        panic!("every hold stood")
    };
    assert!(results.iter().all(Result::is_err), "no item finished in this run: {results:?}");
    engine.faults().disarm();
    engine.set_account_status(sink.id, StatusAction::Block).await.unwrap();
    // A promise whose batch has no intent: a crash between phase 1 and phase 2.
    let orphan = engine.new_transfer_id();
    let admit = AccountCommand::AdmitCredit { transfer: orphan, amount: dec!(7), currency: Currency::USD };
    engine.accounts().command(lonely.id, admit).await.unwrap();
    engine.journals().barrier().await.unwrap();
    engine.halt().await;
    drop(engine);
    // Offline, `tally check` names every promise left (found missing by a review).
    let (_, violations) = tally_persistence::check::check(store.as_ref()).await.unwrap();
    let orphan_admission =
        tally_persistence::check::Violation::OrphanAdmission { account: lonely.id, transfer: orphan };
    assert!(violations.contains(&orphan_admission), "{backend:?}: {violations:?}");

    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let sink_now = engine.account(sink.id).await.unwrap();
    assert_eq!((sink_now.status, sink_now.balance()), (AccountStatus::Blocked, dec!(15)), "{backend:?}: whole");
    for (source, left) in [(&alice, dec!(90)), (&carol, dec!(95))] {
        let source = engine.account(source.id).await.unwrap();
        assert_eq!((source.balance(), source.held()), (left, dec!(0)), "{backend:?}");
    }
    assert!(store.live_admissions().await.unwrap().is_empty(), "{backend:?}: every admission ended");
    assert!(!engine.account(lonely.id).await.unwrap().position.has_admitted_credits());
    engine.set_account_status(lonely.id, StatusAction::Close).await.expect("the orphan admission was withdrawn");
    tally_tests::assert_store_consistent(store.as_ref()).await;
    engine.shutdown(Duration::from_secs(5)).await;
    let (_, violations) = tally_persistence::check::check(store.as_ref()).await.unwrap();
    assert_eq!(violations, vec![], "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_across_a_restart_on_the_memory_store() {
    admissions_across_a_restart(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_across_a_restart_on_sqlite() {
    admissions_across_a_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_across_a_restart_on_postgres() {
    admissions_across_a_restart(Backend::Postgres).await;
}
