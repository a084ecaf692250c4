//! Many transfers at once out of one account: the account actor serialises its own holds, so
//! no interleaving can overdraw it, and money is conserved.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{EngineConfig, TransferError};
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
