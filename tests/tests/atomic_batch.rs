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
