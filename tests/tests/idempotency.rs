//! Idempotency keys in the engine: one transfer per (caller, key), however many duplicates

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! arrive at once, after a crash too; the same key with another request is refused.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig, TransferError};
use tally_engine::{Idempotency, TransferStatus};
use tally_persistence::Store;
use tally_tests::Harness;

fn key(scope: uuid::Uuid, key: &str, fingerprint: &str) -> Option<Idempotency> {
    Some(Idempotency { scope, key: key.into(), fingerprint: fingerprint.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_duplicates_make_one_transfer_and_all_get_it() {
    let harness = Harness::start().await;
    let alice = harness.open(tally_engine::Currency::USD).await;
    let bob = harness.open(tally_engine::Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let scope = uuid::Uuid::new_v4();

    let duplicates = (0..50).map(|_| {
        // Each duplicate is a fresh request (fresh transfer id), as a retrying client sends.
        harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(7)), key(scope, "k-1", "body-a"))
    });
    let results = futures::future::join_all(duplicates).await;

    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.as_ref().unwrap().0.id).collect();
    assert_eq!(ids.len(), 1, "one transfer");
    assert_eq!(results.iter().filter(|r| !r.as_ref().unwrap().1).count(), 1, "exactly one ran, 49 replayed");
    assert!(results.iter().all(|r| r.as_ref().unwrap().0.status == TransferStatus::Completed));
    assert_eq!(harness.balance(&alice).await, dec!(93), "money moved once");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_request_is_refused_and_keys_are_scoped_per_caller() {
    let harness = Harness::start().await;
    let alice = harness.open(tally_engine::Currency::USD).await;
    let bob = harness.open(tally_engine::Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let (first, second) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());

    harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(1)), key(first, "k", "a")).await.unwrap();
    let reused = harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(2)), key(first, "k", "b")).await;
    assert!(matches!(reused, Err(TransferError::IdempotencyKeyReused)), "{reused:?}");
    let other_caller =
        harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(2)), key(second, "k", "b")).await;
    assert!(!other_caller.unwrap().1, "another caller's same key is a new transfer");
    assert_eq!(harness.balance(&bob).await, dec!(3));
    // A rejected transfer is replayed as the same failure.
    let broke = harness.engine.transfer_idempotent(harness.request(&bob, &alice, dec!(50)), key(first, "x", "c")).await;
    assert!(matches!(broke, Err(TransferError::Rejected(_))));
    let (replayed, was_replay) = harness
        .engine
        .transfer_idempotent(harness.request(&bob, &alice, dec!(50)), key(first, "x", "c"))
        .await
        .unwrap();
    assert!(was_replay);
    assert_eq!(replayed.status, TransferStatus::Failed);
    assert_eq!(replayed.failure_reason, Some(tally_engine::ErrorCode::InsufficientFunds));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_finds_the_transfer_instead_of_making_another() {
    let harness = Harness::start().await;
    let alice = harness.open(tally_engine::Currency::USD).await;
    let bob = harness.open(tally_engine::Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let scope = uuid::Uuid::new_v4();
    let first = harness
        .engine
        .transfer_idempotent(harness.request(&alice, &bob, dec!(10)), key(scope, "crash", "f"))
        .await
        .unwrap()
        .0;
    harness.engine.halt().await;

    let store = harness.store.clone();
    let restarted = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();
    // The restarted engine read the store's keys into its filter: the used key must go to the
    // store, a fresh one need not.
    assert!(!restarted.key_ruled_out(scope, "crash"), "a key the store holds is never ruled out");
    let ruled_out = (0..20).filter(|i| restarted.key_ruled_out(scope, &format!("fresh-{i}"))).count();
    assert!(ruled_out >= 18, "new keys are answered from memory (a rare false positive aside): {ruled_out} of 20");
    let request =
        tally_engine::TransferRequest { id: restarted.new_transfer_id(), ..harness.request(&alice, &bob, dec!(10)) };
    let (again, replayed) = restarted.transfer_idempotent(request, key(scope, "crash", "f")).await.unwrap();
    assert!(replayed);
    assert_eq!(again.id, first.id);
    assert_eq!(restarted.account(bob.id).await.unwrap().balance(), dec!(10));
    restarted.shutdown(Duration::from_secs(5)).await;
}

/// A client that gives up (disconnects, times out) and retries with the same key must not get
/// a second transfer: the key stays claimed until the first transfer is durable, whether or not
/// anyone still waits for it. The store refuses commits (reads still work) so the first
/// transfer's records stay in the journal while the retry arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_free_its_key_before_the_transfer_is_durable() {
    let harness = Harness::start().await;
    let alice = harness.open(tally_engine::Currency::USD).await;
    let bob = harness.open(tally_engine::Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let scope = uuid::Uuid::new_v4();

    harness.store.set_commits_available(false);
    let first = harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(7)), key(scope, "k", "body"));
    let gave_up = tokio::time::timeout(Duration::from_millis(50), first).await;
    assert!(gave_up.is_err(), "nothing can be durable while the store is down: {gave_up:?}");

    let retry = {
        let engine = harness.engine.clone();
        let request = harness.request(&alice, &bob, dec!(7));
        tokio::spawn(async move { engine.transfer_idempotent(request, key(scope, "k", "body")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    harness.store.set_commits_available(true);
    let (transfer, replayed) = retry.await.unwrap().unwrap();

    assert!(replayed, "the retry answers the first transfer");
    assert_eq!(transfer.status, TransferStatus::Completed);
    assert_eq!(harness.balance(&alice).await, dec!(93), "money moved once");
    assert_eq!(harness.balance(&bob).await, dec!(7));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

/// The same, with the caller on the source's own thread, as an HTTP request served there is:
/// its saga runs in the caller's task, and a caller that goes away mid-saga (its client
/// disconnected) must leave the saga running to its end. The destination lives on the other
/// thread, which is kept busy, so the caller leaves after the hold and before the credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_on_the_source_thread_that_gives_up_leaves_its_saga_running() {
    let mut config = EngineConfig::default();
    config.actors.shards = 2;
    let harness = Harness::start_with(config).await;
    let alice = harness.open(tally_engine::Currency::USD).await;
    let mut bob = harness.open(tally_engine::Currency::USD).await;
    let thread = harness.engine.thread_of(alice.id.as_uuid());
    while harness.engine.thread_of(bob.id.as_uuid()) == thread {
        bob = harness.open(tally_engine::Currency::USD).await;
    }
    harness.fund(&alice, dec!(100)).await;
    // A first transfer, so that pricing knows bob's currency and reads nothing on his thread.
    harness.engine.transfer(harness.request(&alice, &bob, dec!(1))).await.unwrap();
    let scope = uuid::Uuid::new_v4();

    // Bob's thread sleeps for 300 ms: the credit waits behind it.
    let (asleep, sleeping) = tokio::sync::oneshot::channel();
    assert!(harness.engine.runtime().run_on(1 - thread, move || {
        let _ = asleep.send(());
        std::thread::sleep(Duration::from_millis(300));
    }));
    sleeping.await.unwrap();
    let (gave_up, answer) = tokio::sync::oneshot::channel();
    let engine = harness.engine.clone();
    let request = harness.request(&alice, &bob, dec!(7));
    assert!(harness.engine.runtime().spawn_on(thread, async move {
        let first = engine.transfer_idempotent(request, key(scope, "k", "body"));
        let _ = gave_up.send(tokio::time::timeout(Duration::from_millis(50), first).await.is_err());
    }));
    assert!(answer.await.unwrap(), "the credit cannot be applied while bob's thread sleeps");
    assert_eq!(harness.engine.account(alice.id).await.unwrap().held(), dec!(7), "the caller left after the hold");

    let retry = harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(7)), key(scope, "k", "body"));
    let (transfer, replayed) = tokio::time::timeout(Duration::from_secs(10), retry).await.unwrap().unwrap();

    assert!(replayed, "the retry answers the first transfer");
    assert_eq!(transfer.status, TransferStatus::Completed, "the saga ran on after its caller left");
    assert_eq!(harness.balance(&alice).await, dec!(92), "money moved once");
    assert_eq!(harness.balance(&bob).await, dec!(8));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_withdrawal_whose_caller_gives_up_before_it_runs_keeps_its_key() {
    let mut config = EngineConfig::default();
    config.actors.shards = 2;
    let harness = Harness::start_with(config).await;
    let owner = harness.user();
    let (profile, _) = harness.engine.open_customer_wallet(owner, tally_engine::Currency::BTC).await.unwrap();
    harness
        .engine
        .deposit(tally_actors::DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-in".into())
        .await
        .unwrap();
    let scope = uuid::Uuid::new_v4();

    // Both threads sleep for 300 ms: the withdrawal's task, queued on one of them, cannot run
    // (nor append its first record) before its caller gives up after 50 ms.
    for thread in 0..2 {
        let (asleep, sleeping) = tokio::sync::oneshot::channel();
        assert!(harness.engine.runtime().run_on(thread, move || {
            let _ = asleep.send(());
            std::thread::sleep(Duration::from_millis(300));
        }));
        sleeping.await.unwrap();
    }
    let first = harness.engine.withdraw(owner, profile.wallet, dec!(0.4), "bc1dest".into(), key(scope, "w", "body"));
    assert!(tokio::time::timeout(Duration::from_millis(50), first).await.is_err(), "the caller gave up");

    // The retry waits for the key, which the withdrawal's task now holds until the withdrawal
    // is durable, and answers that withdrawal. (Held by the caller, the key was freed once the
    // journals had committed what they held when the caller left, which could be before the
    // task appended its first record; that window is too narrow for this test to force, so it
    // covers the hand-over path, not the old race.)
    let retry = harness.engine.withdraw(owner, profile.wallet, dec!(0.4), "bc1dest".into(), key(scope, "w", "body"));
    let (withdrawal, repeated) = tokio::time::timeout(Duration::from_secs(10), retry).await.unwrap().unwrap();
    assert!(repeated, "the retry answers the first withdrawal");
    let (_, wallet) = harness.engine.customer_wallet(profile.wallet).await.unwrap();
    let held = wallet.position(tally_engine::Currency::BTC).map(|position| position.held);
    assert_eq!(held, Some(dec!(0.4)), "one withdrawal holds its amount, once: {withdrawal:?}");
    harness.shutdown().await;
}

/// A transfer refused as unavailable at its credit (the destination busy) moved no money and
/// keeps no key, so its retry runs afresh — also when its saga had restarted after a panic
/// past its hold. The saga used to decide whether the key may go back from the step each pass
/// started at, so after a restart at `held` it kept the key, and every retry replayed the 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_after_a_saga_restart_gives_its_key_back_and_the_retry_runs_afresh() {
    let mut config = EngineConfig::default();
    config.actors.shards = 2;
    config.actors.mailbox_capacity_max = 4;
    let harness = Harness::start_with(config).await;
    let alice = harness.open_on_thread(0).await;
    let bob = harness.open_on_thread(1).await;
    harness.fund(&alice, dec!(100)).await;
    // Pricing remembers bob's account from this one, so the keyed transfer below reaches its
    // saga without asking bob's (then occupied) thread first.
    harness.engine.transfer(harness.request(&alice, &bob, dec!(1))).await.unwrap();
    let scope = uuid::Uuid::new_v4();

    // Bob's thread is occupied for a moment and his mailbox fills meanwhile.
    let readers = harness.make_busy(&bob, 4, Duration::from_millis(1_000)).await;
    // The saga's second pass (the one after its hold) panics once; the restarted pass finds
    // bob's mailbox full.
    harness.engine.faults().panic_every(tally_actors::ActorKind::TransferSaga, 2);
    let first =
        harness.engine.transfer_idempotent(harness.request(&alice, &bob, dec!(10)), key(scope, "pay", "body")).await;
    harness.engine.faults().disarm();
    assert!(
        matches!(first, Err(TransferError::Unavailable(_))),
        "the first try is refused as unavailable: {:?}",
        first.map(|(t, replayed)| (t.status, replayed))
    );
    for reader in readers {
        let _ = reader.await;
    }
    assert_eq!(harness.balance(&alice).await, dec!(99), "no money moved");

    let (retry, replayed) = harness
        .engine
        .transfer_idempotent(harness.request(&alice, &bob, dec!(10)), key(scope, "pay", "body"))
        .await
        .unwrap();
    assert!(!replayed, "the retry ran afresh instead of replaying the 503");
    assert_eq!(retry.status, TransferStatus::Completed);
    assert_eq!(harness.balance(&alice).await, dec!(89));
    assert_eq!(harness.balance(&bob).await, dec!(11));
    harness.shutdown().await;
}
