//! Crash and recovery in process: freeze the store at a random moment under concurrent load

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! (so it holds exactly a durable prefix of the journal), halt the engine as a crash would,
//! start a new engine on the same store, and prove that every acknowledged transfer is there
//! exactly once, nothing unacknowledged is half-applied, money is conserved, no hold dangles
//! and no transfer is left `processing`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig};
use tally_engine::{Account, Currency, Direction, TransferId, TransferKind, TransferStatus, UserId};
use tally_persistence::{MemoryStore, Store, StoreReads};
use tally_tests::{Harness, assert_store_consistent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_random_moments_loses_nothing_acknowledged_and_leaves_nothing_half_done() {
    for seed in [3_u64, 11, 29, 101, 4_242] {
        crash_and_recover(seed).await;
    }
}

async fn crash_and_recover(seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let harness = Harness::start().await;
    let store = harness.store.clone();
    let accounts: Vec<Account> = futures::future::join_all((0..12).map(|_| harness.open(Currency::USD))).await;
    for account in &accounts {
        harness.fund(account, dec!(1000)).await;
    }
    // Some transfers wait pending across the crash, with their money held.
    let mut pending = Vec::new();
    for account in accounts.iter().take(3) {
        let mut request = harness.request(account, account, dec!(5));
        request.kind = TransferKind::External;
        request.destination = tally_engine::system_accounts::settlement(Currency::USD);
        pending.push(harness.engine.transfer(request).await.unwrap().id);
    }

    let engine = harness.engine.clone();
    let load = tokio::spawn({
        let accounts = accounts.clone();
        async move {
            let mut acknowledged: Vec<TransferId> = Vec::new();
            let mut attempted: Vec<TransferId> = Vec::new();
            let mut in_flight = futures::stream::FuturesUnordered::new();
            for i in 0..30_000_usize {
                let request = tally_engine::TransferRequest {
                    id: engine.new_transfer_id(),
                    kind: TransferKind::Internal,
                    source: accounts[i % 12].id,
                    destination: accounts[(i * 7 + 1) % 12].id,
                    amount: dec!(0.01),
                    currency: Currency::USD,
                    fee: Decimal::ZERO,
                    reference: None,
                    description: None,
                    beneficiary: None,
                    initiated_by: None,
                    created_at: engine.now(),
                    metadata: Default::default(),
                };
                attempted.push(request.id);
                let engine = engine.clone();
                in_flight.push(async move { engine.transfer(request).await });
                if in_flight.len() >= 64 {
                    use futures::StreamExt;
                    if let Some(Ok(transfer)) = in_flight.next().await {
                        acknowledged.push(transfer.id);
                    }
                }
            }
            use futures::StreamExt;
            while let Some(result) = in_flight.next().await {
                if let Ok(transfer) = result {
                    acknowledged.push(transfer.id);
                }
            }
            (acknowledged, attempted)
        }
    });
    tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
    // The crash: the store stops taking commits, then the process dies.
    store.set_available(false);
    harness.engine.halt().await;
    let (acknowledged, attempted) = load.await.unwrap();
    store.set_available(true);
    eprintln!("seed {seed}: {} of {} transfers acknowledged before the crash", acknowledged.len(), attempted.len());
    assert!(acknowledged.len() < attempted.len(), "seed {seed}: the crash must land during the load");

    let restarted = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();
    assert!(restarted.is_ready(), "seed {seed}");
    for id in &acknowledged {
        let transfer =
            store.load_transfer(*id).await.unwrap().unwrap_or_else(|| panic!("seed {seed}: acked {id} lost"));
        assert_eq!(transfer.value.status, TransferStatus::Completed, "seed {seed}: acked {id}");
    }
    for id in &attempted {
        let Some(transfer) = store.load_transfer(*id).await.unwrap() else { continue };
        let postings = store.postings_of_transfer(*id).await.unwrap();
        let by_direction = postings.iter().fold(HashMap::new(), |mut counts, posting| {
            *counts.entry(posting.direction).or_insert(0) += 1;
            counts
        });
        match transfer.value.status {
            TransferStatus::Completed => {
                assert_eq!(by_direction.get(&Direction::Debit), Some(&1), "seed {seed}: {id} debited once");
                assert_eq!(by_direction.get(&Direction::Credit), Some(&1), "seed {seed}: {id} credited once");
            }
            TransferStatus::Failed => assert!(postings.is_empty(), "seed {seed}: failed {id} moved money"),
            other => panic!("seed {seed}: transfer {id} left {other:?} after recovery"),
        }
    }
    for id in &pending {
        let transfer = store.load_transfer(*id).await.unwrap().unwrap();
        assert_eq!(transfer.value.status, TransferStatus::Pending, "seed {seed}: pending survives");
    }
    restarted.journals().barrier().await.unwrap();
    assert_store_consistent(store.as_ref()).await;
    let holds = store.live_holds().await.unwrap();
    assert_eq!(holds.len(), pending.len(), "seed {seed}: only the pending transfers still hold money: {holds:?}");
    // And the restarted engine works: execute a pending transfer after the crash.
    let executed = restarted.execute(pending[0]).await.unwrap();
    assert_eq!(executed.status, TransferStatus::Completed);
    restarted.shutdown(Duration::from_secs(5)).await;
    let _ = UserId::from_u128(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_drives_forward_a_credited_saga_and_undoes_a_held_one() {
    // Build the two interrupted states by hand from the journal's point of view, as their
    // sagas would have (every record in the saga's journal, its source's shard's): both
    // transfers recorded `processing`; one got as far as the credit, the other only the hold.
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(5);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    let credited = engine.new_transfer_id();
    let held = engine.new_transfer_id();
    let saga = engine.shard_of(alice.id.as_uuid());
    for (id, amount) in [(credited, dec!(30)), (held, dec!(20))] {
        let transfer = tally_engine::Transfer::start(tally_engine::TransferRequest {
            id,
            kind: TransferKind::Internal,
            source: alice.id,
            destination: bob.id,
            amount,
            currency: Currency::USD,
            fee: Decimal::ZERO,
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: engine.now(),
            metadata: Default::default(),
        });
        engine.journals().shard(saga).append(tally_engine::Record::Transfer(Box::new(transfer))).unwrap();
        let hold = tally_engine::AccountCommand::Hold { transfer: id, amount, currency: Currency::USD };
        engine.accounts().command_on(alice.id, hold, Some(saga)).await.unwrap();
    }
    let credit = tally_engine::AccountCommand::Credit { transfer: credited, amount: dec!(30), currency: Currency::USD };
    engine.accounts().command_on(bob.id, credit, Some(saga)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    engine.halt().await;

    let restarted = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();

    assert_eq!(store.load_transfer(credited).await.unwrap().unwrap().value.status, TransferStatus::Completed);
    // A saga that moved no money is not written (each fact once): nothing of it is left but
    // its hold, which recovery releases. Its caller never heard an answer.
    assert!(store.load_transfer(held).await.unwrap().is_none());
    let alice_after = restarted.account(alice.id).await.unwrap();
    assert_eq!((alice_after.balance(), alice_after.held()), (dec!(70), dec!(0)));
    assert_eq!(restarted.account(bob.id).await.unwrap().balance(), dec!(30));
    restarted.journals().barrier().await.unwrap();
    assert_store_consistent(store.as_ref()).await;
    restarted.shutdown(Duration::from_secs(5)).await;
}

/// An FX transfer interrupted between any two of its steps (saga.rs: source hold, clearing
/// hold, destination credit, source post, fee credit, clearing post, clearing credit) ends,
/// after a restart, either completed with every leg or failed with none, and each currency
/// sums to zero again. On every store: an account loaded from SQL does not remember which
/// transfers credited it (the memory store's replay does), so a cut after the fee's credit
/// and before the last leg credited the fee twice on SQLite and Postgres (money created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fx_transfer_interrupted_between_any_two_steps_recovers_with_each_currency_conserved() {
    fx_cuts(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fx_transfer_interrupted_between_any_two_steps_recovers_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tally-fx-cuts-{}", uuid::Uuid::new_v4()));
    let at = dir.clone();
    let next = std::sync::atomic::AtomicU32::new(0);
    fx_cuts(|| {
        let url = format!("sqlite://{}/{}.db", at.display(), next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        async move { Arc::new(tally_persistence::sqlite::SqliteStore::open(&url).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fx_transfer_interrupted_between_any_two_steps_recovers_on_postgres() {
    fx_cuts(|| async {
        let url = tally_tests::postgres::fresh_database("fx_cuts").await;
        let store = tally_persistence::postgres::PgStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Arc::new(store) as Arc<dyn Store>
    })
    .await;
}

async fn fx_cuts<F, Fut>(fresh_store: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    use tally_engine::AccountCommand::{Credit, Hold, Post};
    use tally_engine::system_accounts::{fees, fx_clearing};

    let (usd, eur) = (Currency::USD, Currency::EUR);
    // How many of the seven steps ran before the crash, and how recovery must end it (`None`:
    // no money moved, so the transfer was never written and its holds are released).
    let cases = [
        (1, None),
        (2, None),
        (3, Some(TransferStatus::Completed)),
        (4, Some(TransferStatus::Completed)),
        (5, Some(TransferStatus::Completed)),
        (6, Some(TransferStatus::Completed)),
        (7, Some(TransferStatus::Completed)),
    ];
    for (steps_done, expected) in cases {
        let store = fresh_store().await;
        let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
        let owner = UserId::from_u128(5);
        let alice = engine.open_account(owner, usd, Decimal::ZERO).await.unwrap();
        let bob = engine.open_account(owner, eur, Decimal::ZERO).await.unwrap();
        engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
        let id = engine.new_transfer_id();
        let mut transfer = tally_engine::Transfer::start(tally_engine::TransferRequest {
            id,
            kind: TransferKind::Internal,
            source: alice.id,
            destination: bob.id,
            amount: dec!(10.00),
            currency: usd,
            fee: dec!(0.50),
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: engine.now(),
            metadata: Default::default(),
        });
        transfer.fx_rate = Some(dec!(0.9));
        transfer.destination_amount = dec!(9.00);
        transfer.destination_currency = eur;
        let saga = engine.shard_of(alice.id.as_uuid());
        engine.journals().shard(saga).append(tally_engine::Record::Transfer(Box::new(transfer))).unwrap();
        let steps = [
            (alice.id, Hold { transfer: id, amount: dec!(10.50), currency: usd }),
            (fx_clearing(eur), Hold { transfer: id, amount: dec!(9.00), currency: eur }),
            (bob.id, Credit { transfer: id, amount: dec!(9.00), currency: eur }),
            (alice.id, Post { transfer: id }),
            (fees(usd), Credit { transfer: id, amount: dec!(0.50), currency: usd }),
            (fx_clearing(eur), Post { transfer: id }),
            (fx_clearing(usd), Credit { transfer: id, amount: dec!(10.00), currency: usd }),
        ];
        for (account, command) in steps.into_iter().take(steps_done) {
            engine.accounts().command_on(account, command, Some(saga)).await.unwrap();
        }
        engine.journals().barrier().await.unwrap();
        engine.halt().await;

        let restarted = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
        restarted.journals().barrier().await.unwrap();
        let stored = store.load_transfer(id).await.unwrap().map(|loaded| loaded.value.status);
        assert_eq!(stored, expected, "after {steps_done} steps");
        let balance = |account: Account| (account.balance(), account.held());
        let (alice_after, bob_after) =
            (restarted.account(alice.id).await.unwrap(), restarted.account(bob.id).await.unwrap());
        let (clearing_usd, clearing_eur, fee_usd) = (
            restarted.account(fx_clearing(usd)).await.unwrap(),
            restarted.account(fx_clearing(eur)).await.unwrap(),
            restarted.account(fees(usd)).await.unwrap(),
        );
        if expected == Some(TransferStatus::Completed) {
            assert_eq!(balance(alice_after), (dec!(89.50), dec!(0)), "after {steps_done} steps");
            assert_eq!(balance(bob_after), (dec!(9.00), dec!(0)));
            assert_eq!(balance(clearing_usd), (dec!(10.00), dec!(0)));
            assert_eq!(balance(clearing_eur), (dec!(-9.00), dec!(0)));
            assert_eq!(balance(fee_usd), (dec!(0.50), dec!(0)));
        } else {
            assert_eq!(balance(alice_after), (dec!(100), dec!(0)), "after {steps_done} steps");
            assert_eq!(balance(bob_after), (dec!(0), dec!(0)));
            assert_eq!(balance(clearing_eur), (dec!(0), dec!(0)), "no clearing hold dangles");
            assert_eq!(balance(clearing_usd), (dec!(0), dec!(0)));
        }
        // Per currency, every balance sums to zero (the check walks every account).
        let sums = assert_store_consistent(store.as_ref()).await;
        assert!(sums.values().all(|sum| sum.is_zero()), "after {steps_done} steps: {sums:?}");
        restarted.shutdown(Duration::from_secs(5)).await;
    }
}

fn manual_internal(engine: &Engine) {
    engine.set_transfer_type(
        TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
}

/// An undo of a pending transfer (a reject, a cancel, an expiry) releases the source's hold,
/// then records the outcome. A crash between the two left the transfer `pending` with nothing
/// held, and an admin's execute after the restart credited the destination while the source's
/// post of the missing hold counted as done: money created. Recovery now ends such a transfer
/// `failed` (it moved nothing, and which decision it was is not recorded), and an execute of a
/// pending transfer whose source holds nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_an_undos_release_and_its_outcome_ends_the_transfer_failed_and_creates_no_money() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(77);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    manual_internal(&engine);
    let pending = engine.transfer(tally_tests::internal_request(&engine, &alice, &bob, dec!(30))).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);
    let other = engine.transfer(tally_tests::internal_request(&engine, &alice, &bob, dec!(20))).await.unwrap();

    // The undo's first step, as its saga sends it (to the journal of the source's shard),
    // made durable for both; the second one's outcome is then refused by a live execute, and
    // the process dies before the first one's outcome was recorded.
    let journal = engine.shard_of(alice.id.as_uuid());
    for transfer in [&pending, &other] {
        let release = tally_engine::AccountCommand::Release { transfer: transfer.id };
        engine.accounts().command_on(alice.id, release, Some(journal)).await.unwrap();
    }
    engine.journals().barrier().await.unwrap();
    let refused = engine.execute(other.id).await;
    assert!(refused.is_err(), "a pending transfer whose source holds nothing is not executed: {refused:?}");
    let alice_now = engine.account(alice.id).await.unwrap();
    assert_eq!((alice_now.balance(), alice_now.held()), (dec!(100), dec!(0)));
    assert_eq!(engine.account(bob.id).await.unwrap().balance(), dec!(0), "nothing credited");
    engine.halt().await;

    let restarted = Engine::start(store.clone() as Arc<dyn Store>, EngineConfig::default()).await.unwrap();
    manual_internal(&restarted);
    for transfer in [&pending, &other] {
        let stored = restarted.load_transfer(transfer.id).await.unwrap().unwrap();
        assert_eq!(stored.status, TransferStatus::Failed, "recovery ended it");
        assert_eq!(stored.failure_reason, Some(tally_engine::ErrorCode::Internal));
        assert!(restarted.execute(transfer.id).await.is_err(), "an ended transfer is not executed");
    }
    assert_eq!(restarted.account(alice.id).await.unwrap().balance(), dec!(100));
    assert_eq!(restarted.account(bob.id).await.unwrap().balance(), dec!(0));
    restarted.journals().barrier().await.unwrap();
    assert_store_consistent(store.as_ref()).await;
    restarted.shutdown(Duration::from_secs(5)).await;
}

/// The same cut in an expiry (the usual undo: the sweeper's): a pending transfer past its
/// deadline whose release was durable and whose `expired` record was not. Recovery leaves it
/// pending for the sweeper, which expires it as it would have; it is never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_cut_between_its_release_and_its_outcome_ends_expired_after_the_restart() {
    let clock = Arc::new(tally_tests::clock::ShiftedClock::default());
    let store = Arc::new(MemoryStore::new());
    let start = |clock: Arc<tally_tests::clock::ShiftedClock>| {
        let store = store.clone() as Arc<dyn Store>;
        async move {
            Engine::start_with(store, EngineConfig::default(), clock, Arc::new(tally_actors::RandomIds)).await.unwrap()
        }
    };
    let engine = start(clock.clone()).await;
    let owner = UserId::from_u128(78);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    manual_internal(&engine);
    let request = tally_tests::internal_request(&engine, &alice, &bob, dec!(30));
    let (pending, _) = engine.transfer_idempotent_expiring(request, None, Some(60)).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);
    let journal = engine.shard_of(alice.id.as_uuid());
    let release = tally_engine::AccountCommand::Release { transfer: pending.id };
    engine.accounts().command_on(alice.id, release, Some(journal)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    engine.halt().await;

    clock.advance(Duration::from_secs(120));
    let restarted = start(clock.clone()).await;
    manual_internal(&restarted);
    assert!(restarted.execute(pending.id).await.is_err(), "a pending transfer holding nothing is not executed");
    let mut stored = restarted.load_transfer(pending.id).await.unwrap().unwrap();
    for _ in 0..200 {
        if stored.status != TransferStatus::Pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        stored = restarted.load_transfer(pending.id).await.unwrap().unwrap();
    }
    assert_eq!(stored.status, TransferStatus::Expired, "the sweeper finished the expiry");
    let alice_now = restarted.account(alice.id).await.unwrap();
    assert_eq!((alice_now.balance(), alice_now.held()), (dec!(100), dec!(0)));
    assert_eq!(restarted.account(bob.id).await.unwrap().balance(), dec!(0));
    restarted.journals().barrier().await.unwrap();
    assert_store_consistent(store.as_ref()).await;
    restarted.shutdown(Duration::from_secs(5)).await;
}
