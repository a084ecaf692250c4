//! Many transfers at once out of one account: the account actor serialises its own holds, so
//! no interleaving can overdraw it, and money is conserved. Bursts past the mailbox bound and
//! past the journal's admission bound are refused cleanly, half-applying nothing.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::registry::Unavailable;
use tally_actors::{CryptoError, DepositTarget, EngineConfig, TransferError};
use tally_engine::{CreateTransferRejection, Currency, ErrorCode, TransferStatus};
use tally_tests::Harness;

const TRANSFERS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_transfers_out_of_one_account_never_overdraw_it() {
    let mut config = EngineConfig::default();
    // Every transfer must reach the actor for the test to mean anything: room for all.
    config.actors.mailbox_capacity_max = 2 * TRANSFERS as u32;
    let harness = Harness::start_with(config).await;
    let source = harness.engine.open_account(harness.user(), Currency::USD, dec!(250.00)).await.unwrap();
    let destinations: Vec<_> = futures::future::join_all((0..50).map(|_| harness.open(Currency::USD))).await;
    harness.fund(&source, dec!(4_750.00)).await;
    // Available: 4,750 + 250 credit limit = 5,000, so exactly 5,000 transfers of 1.00 fit.

    let transfers = (0..TRANSFERS).map(|i| {
        let request = harness.request(&source, &destinations[i % destinations.len()], dec!(1.00));
        harness.engine.transfer(request)
    });
    let results = futures::future::join_all(transfers).await;

    let mut outcomes: HashMap<&'static str, usize> = HashMap::new();
    for result in &results {
        let outcome = match result {
            Ok(transfer) if transfer.status == TransferStatus::Completed => "completed",
            Err(TransferError::Rejected(CreateTransferRejection::InsufficientFunds { .. })) => "insufficient",
            other => panic!("unexpected outcome {other:?}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert_eq!(outcomes.get("completed"), Some(&5_000), "{outcomes:?}");
    assert_eq!(outcomes.get("insufficient"), Some(&5_000), "{outcomes:?}");
    let after = harness.engine.account(source.id).await.unwrap();
    assert_eq!((after.balance(), after.held()), (dec!(-250.00), dec!(0)), "used exactly the credit limit");
    let received: Decimal =
        futures::future::join_all(destinations.iter().map(|d| harness.balance(d))).await.into_iter().sum();
    assert_eq!(received, dec!(5_000.00));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_burst_beyond_the_mailbox_bound_refusals_are_overloaded_and_nothing_is_half_applied() {
    let mut config = EngineConfig::default();
    config.actors.mailbox_capacity_max = 64;
    let harness = Harness::start_with(config).await;
    let source = harness.open(Currency::USD).await;
    let destination = harness.open(Currency::USD).await;
    harness.fund(&source, dec!(1_000_000)).await;

    let transfers = (0..5_000).map(|_| harness.engine.transfer(harness.request(&source, &destination, dec!(1))));
    let results = futures::future::join_all(transfers).await;

    let completed = results.iter().filter(|r| matches!(r, Ok(t) if t.status == TransferStatus::Completed)).count();
    let overloaded = results.iter().filter(|r| matches!(r, Err(e) if e.code() == ErrorCode::Overloaded)).count();
    assert_eq!(completed + overloaded, results.len(), "only completions and clean refusals");
    assert!(completed > 0);
    let moved = Decimal::from(completed as u64);
    assert_eq!(harness.balance(&destination).await, moved, "each completion moved money once, no refusal moved any");
    assert_eq!(harness.engine.account(source.id).await.unwrap().held(), dec!(0), "no hold left behind");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

/// Crypto operations take a place under the journal's admission bound when they start and hold
/// it until they end, as sagas do (`Engine::admit_saga`): with commits stopped, a burst of
/// deposits admits at most the bound per journal, however fast it arrives, and refuses the rest
/// `Overloaded` at once. Once commits resume, every admitted deposit completes and credits the
/// wallet once; no refused one moved anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deposits_past_the_admission_bound_admits_at_most_the_bound_and_refuses_the_rest() {
    const BOUND: usize = 16;
    const DEPOSITS: usize = 400;
    let mut config = EngineConfig::default();
    config.journal.admission_depth_max = BOUND;
    // Two journals whatever the machine's cores, so 400 deposits always pass their bound.
    config.actors.shards = 2;
    let harness = Harness::start_with(config).await;
    let (wallet, _) = harness.engine.open_customer_wallet(harness.user(), Currency::BTC).await.unwrap();
    harness.engine.journals().barrier().await.unwrap();

    harness.store.set_commits_available(false);
    let refused = Arc::new(AtomicUsize::new(0));
    let deposits: Vec<_> = (0..DEPOSITS)
        .map(|i| {
            let (engine, refused, wallet) = (harness.engine.clone(), Arc::clone(&refused), wallet.wallet);
            tokio::spawn(async move {
                let answer = engine.deposit(DepositTarget::Wallet(wallet), dec!(0.001), format!("burst-{i}")).await;
                if matches!(answer, Err(CryptoError::Unavailable(Unavailable::Overloaded))) {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                answer
            })
        })
        .collect();
    // Every deposit is either refused or admitted and waiting for its commit.
    let journals = harness.engine.journals();
    let admitted = || journals.iter().map(|journal| journal.admitted()).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::SeqCst) + admitted() < DEPOSITS {
        assert!(
            Instant::now() < deadline,
            "not every deposit was refused or admitted: {} refused, {} admitted of {DEPOSITS}, {} records waiting",
            refused.load(Ordering::SeqCst),
            admitted(),
            journals.depth()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = admitted();
    // Two threads admitting at once may each pass the last place (`Journal::admit_held`).
    assert!(held <= journals.shards() * (BOUND + 2), "{held} admitted with a bound of {BOUND} per journal");
    assert!(held > 0 && refused.load(Ordering::SeqCst) > 0, "{held} admitted");

    harness.store.set_commits_available(true);
    let mut completed = 0;
    for deposit in deposits {
        match deposit.await.unwrap() {
            Ok((op, repeated)) => {
                assert!(!repeated && op.status == tally_engine::CryptoOpStatus::Completed, "{op:?}");
                completed += 1;
            }
            Err(CryptoError::Unavailable(Unavailable::Overloaded)) => {}
            Err(other) => panic!("a deposit failed otherwise: {other:?}"),
        }
    }
    assert_eq!(completed, held, "every admitted deposit completed, nothing else did");
    let credited = harness.engine.wallet(wallet.wallet).await.unwrap().position(Currency::BTC).unwrap().balance;
    assert_eq!(credited, dec!(0.001) * Decimal::from(completed as u64));
    harness.engine.journals().barrier().await.unwrap();
    tally_tests::assert_store_consistent(harness.store.as_ref()).await;
    harness.shutdown().await;
}
