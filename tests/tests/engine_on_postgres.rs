//! The engine on a real Postgres: transfers are durable when acknowledged, the store's

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! snapshots and postings agree, and a restarted engine sees every change.

use std::sync::Arc;
use std::time::Duration;
use tally_persistence::StoreReads;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig};
use tally_engine::{Account, Currency, TransferKind, TransferRequest, TransferStatus, UserId};
use tally_tests::{assert_store_consistent, internal_request, postgres};

/// An internal transfer requested by the source's owner.
fn internal(engine: &Engine, source: &Account, destination: &Account, amount: Decimal) -> TransferRequest {
    TransferRequest { initiated_by: source.owner, ..internal_request(engine, source, destination, amount) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_transfers_are_in_postgres_and_survive_a_restart() {
    let (store, url) = postgres::fresh_store("engine").await;
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(1);
    let mut accounts = Vec::new();
    for _ in 0..8 {
        accounts.push(engine.open_account(owner, Currency::ETH, Decimal::ZERO).await.unwrap());
    }
    for account in &accounts {
        let funded = engine
            .adjust(TransferKind::AdminCredit, account.id, dec!(10.000000000000000001), None, None, None)
            .await
            .unwrap();
        assert_eq!(funded.status, TransferStatus::Completed);
    }
    let transfers = (0..400).map(|i| {
        let (source, destination) = (&accounts[i % 8], &accounts[(i + 3) % 8]);
        engine.transfer(internal(&engine, source, destination, dec!(0.000000000000000001)))
    });
    let results = futures::future::join_all(transfers).await;
    for result in &results {
        let transfer = result.as_ref().unwrap();
        // Acknowledged means durable: the store already has it, without waiting.
        let stored = store.load_transfer(transfer.id).await.unwrap().unwrap();
        assert_eq!(stored.value.status, TransferStatus::Completed);
    }
    let balances: Vec<Decimal> = futures::future::join_all(accounts.iter().map(|a| engine.account(a.id)))
        .await
        .into_iter()
        .map(|a| a.unwrap().balance())
        .collect();
    engine.shutdown(Duration::from_secs(5)).await;
    assert_store_consistent(store.as_ref()).await;
    drop(engine);
    drop(store);

    let reopened = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(reopened.clone(), EngineConfig::default()).await.unwrap();
    for (account, balance) in accounts.iter().zip(&balances) {
        assert_eq!(engine.account(account.id).await.unwrap().balance(), *balance, "18 decimals survive");
    }
    let total: Decimal = balances.iter().sum();
    assert_eq!(total, dec!(80.000000000000000008));
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The wall clock going back across a restart does not reorder an account's postings: the
/// restarted engine books no earlier than the last committed batch, so the postings after a
/// snapshot are still found after it, and a third start sees the right balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_that_went_back_across_a_restart_loses_no_posting() {
    let (store, url) = postgres::fresh_store("clockback").await;
    let owner = UserId::from_u128(1);
    // First run: an hour ahead of the machine's clock. Shutdown writes the snapshots, booked
    // an hour from now.
    let ahead = Arc::new(tally_tests::clock::ShiftedClock::default());
    ahead.advance(Duration::from_secs(3_600));
    let engine = Engine::start_with(store.clone(), EngineConfig::default(), ahead, Arc::new(tally_actors::RandomIds))
        .await
        .unwrap();
    let account = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, account.id, dec!(10), None, None, None).await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    drop(engine);
    drop(store);

    // Second run: the clock is back to now, an hour before those snapshots.
    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, account.id, dec!(5), None, None, None).await.unwrap();
    assert_eq!(engine.account(account.id).await.unwrap().balance(), dec!(15));
    // Halt: no snapshot is written, so the third run must find the posting after the snapshot.
    engine.halt().await;
    drop(engine);
    drop(store);

    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    assert_eq!(engine.account(account.id).await.unwrap().balance(), dec!(15), "the second run's posting counts");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The hold of a saga whose transfer has no row yet is kept back from the store by the
/// journal's writer (persistence/src/batch.rs). While it is kept, the account loaded again
/// from the store (after passivation) comes back with it; once released, without it; written
/// with its transfer's row when the transfer gets one (here: pending). After a crash the kept
/// hold is simply gone, with nothing of its transfer in the store, and the ledger is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_kept_back_from_the_store_comes_back_with_its_passivated_account_and_goes_with_its_release() {
    use tally_engine::{AccountCommand, AccountId, Record, Transfer, TransferId, transfer::SagaStep};

    let (store, url) = postgres::fresh_store("keptholds").await;
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = Duration::ZERO;
    // Swept by hand below.
    config.actors.passivation_sweep_interval = Duration::from_secs(3_600);
    let engine = Engine::start(store.clone(), config.clone()).await.unwrap();
    let owner = UserId::from_u128(1);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    let journal = engine.journals().shard(engine.shard_of(alice.id.as_uuid())).clone();
    // A saga's first records, as its steps 1 and 2 make them in its source's journal: the
    // transfer started, then the hold.
    let start = |id: TransferId| {
        let transfer = Transfer::start(TransferRequest { id, ..internal(&engine, &alice, &bob, dec!(30)) });
        journal.append(Record::Transfer(Box::new(transfer.clone()))).unwrap();
        transfer
    };
    let hold = |transfer: TransferId| AccountCommand::Hold { transfer, amount: dec!(30), currency: Currency::USD };
    let stored_holds = |store: Arc<tally_persistence::postgres::PgStore>, transfer: TransferId| async move {
        store.live_holds().await.unwrap().into_iter().filter(|hold| hold.transfer == transfer).count()
    };
    let passivate = |engine: &Engine, account: AccountId| {
        let accounts = Arc::clone(engine.accounts());
        async move {
            for _ in 0..500 {
                accounts.sweep_idle();
                tokio::time::sleep(Duration::from_millis(10)).await;
                if !accounts.is_live(account) {
                    return;
                }
            }
            panic!("{account} did not passivate");
        }
    };

    let first = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(first.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), first.id).await, 0, "kept back, not written");
    assert_eq!(engine.journals().kept_holds_of(alice.id), vec![(first.id, dec!(30))]);
    passivate(&engine, alice.id).await;
    let loaded = engine.account(alice.id).await.unwrap();
    assert_eq!(loaded.position.hold_of(first.id), Some(dec!(30)), "loaded from the store with the kept hold");
    assert_eq!(loaded.available().unwrap(), dec!(70));

    engine.accounts().command(alice.id, AccountCommand::Release { transfer: first.id }).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert!(engine.journals().kept_holds_of(alice.id).is_empty(), "released: no longer kept");
    assert_eq!(stored_holds(store.clone(), first.id).await, 0, "and never written");
    passivate(&engine, alice.id).await;
    let loaded = engine.account(alice.id).await.unwrap();
    assert_eq!(loaded.position.hold_of(first.id), None, "a released hold does not come back");
    assert_eq!(loaded.available().unwrap(), dec!(100));

    // A transfer that gets a row takes its kept hold into the store with it.
    let mut second = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(second.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), second.id).await, 0);
    second.status = TransferStatus::Pending;
    second.step = SagaStep::Held;
    journal.append(Record::Transfer(Box::new(second.clone()))).unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), second.id).await, 1, "written with the pending transfer's row");
    assert!(engine.journals().kept_holds_of(alice.id).is_empty());
    passivate(&engine, alice.id).await;
    assert_eq!(
        engine.account(alice.id).await.unwrap().position.hold_of(second.id),
        Some(dec!(30)),
        "once, from the store"
    );

    // A crash with a hold kept: the restarted engine has neither the hold nor its transfer.
    let third = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(third.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(engine.journals().kept_holds_of(alice.id), vec![(third.id, dec!(30))]);
    engine.halt().await;
    drop(engine);
    drop(store);
    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), config).await.unwrap();
    assert!(store.load_transfer(third.id).await.unwrap().is_none(), "its transfer was never written");
    let account = engine.account(alice.id).await.unwrap();
    assert_eq!(account.position.hold_of(third.id), None);
    assert_eq!(account.position.hold_of(second.id), Some(dec!(30)), "the pending transfer keeps its hold");
    assert_eq!(account.available().unwrap(), dec!(70));
    engine.shutdown(Duration::from_secs(5)).await;
    assert_store_consistent(store.as_ref()).await;
}
