//! Transfer sagas through the real actors: the happy path, each rejection, compensation,
//! pending transfers, and idempotent steps.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use tally_actors::registry::{CallError, Unavailable};
use tally_actors::{ActorKind, EngineConfig, TransferError};
use tally_engine::{
    AccountCommand, AccountId, CreateTransferRejection, Currency, ErrorCode, PendingReason, StatusAction, TransferKind,
    TransferRequest, TransferStatus, WalletCommand,
};
use tally_persistence::Store;
use tally_tests::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_transfer_moves_money_once_and_keeps_the_ledger_balanced() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100.00)).await;

    let transfer = harness.engine.transfer(harness.request(&alice, &bob, dec!(30.25))).await.unwrap();

    assert_eq!(transfer.status, TransferStatus::Completed);
    assert_eq!(harness.balance(&alice).await, dec!(69.75));
    assert_eq!(harness.balance(&bob).await, dec!(30.25));
    let stored = harness.engine.load_transfer(transfer.id).await.unwrap().unwrap();
    assert_eq!(stored.status, TransferStatus::Completed, "the acknowledged outcome is in the journal or store");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_is_refused_and_nothing_moves() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(10)).await;

    let error = harness.engine.transfer(harness.request(&alice, &bob, dec!(10.01))).await.unwrap_err();

    assert!(matches!(error, TransferError::Rejected(CreateTransferRejection::InsufficientFunds { .. })), "{error:?}");
    assert_eq!(harness.balance(&alice).await, dec!(10));
    assert_eq!(harness.balance(&bob).await, dec!(0));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_is_held_with_the_amount_and_posted_to_the_fee_account() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::EUR).await;
    let bob = harness.open(Currency::EUR).await;
    harness.fund(&alice, dec!(50)).await;
    // The fee comes from the enabled rule for (type, currency), not from the caller.
    let rule = tally_engine::FeeRule {
        id: uuid::Uuid::nil(),
        name: "flat".to_owned(),
        transfer_type: TransferKind::Internal,
        currency: Currency::EUR,
        kind: tally_engine::FeeKind::Flat,
        flat_amount: Some(dec!(0.4)),
        percentage: None,
        min_fee: None,
        max_fee: None,
        tiers: Vec::new(),
        enabled: true,
        created_at: tally_engine::Timestamp::default(),
        updated_at: tally_engine::Timestamp::default(),
    };
    harness.engine.create_fee_rule(harness.engine.new_transfer_id().as_uuid(), rule, None).await.unwrap();
    let mut request = harness.request(&alice, &bob, dec!(40));
    request.fee = dec!(7);

    let transfer = harness.engine.transfer(request).await.unwrap();

    assert_eq!(transfer.fee, dec!(0.40));

    assert_eq!(transfer.total_debited().unwrap(), dec!(40.40));
    assert_eq!(harness.balance(&alice).await, dec!(9.60));
    assert_eq!(harness.balance(&bob).await, dec!(40));
    let fees = harness.engine.account(tally_engine::system_accounts::fees(Currency::EUR)).await.unwrap();
    assert_eq!(fees.balance(), dec!(0.40));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_credit_step_releases_the_hold_and_records_the_transfer_failed() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let blocked = harness.open(Currency::USD).await;
    let euro = harness.open(Currency::EUR).await;
    harness.fund(&alice, dec!(100)).await;
    harness.engine.set_account_status(blocked.id, StatusAction::Block).await.unwrap();
    let missing = tally_engine::Account { id: AccountId::from_u128(42), ..alice.clone() };

    type IsExpected = fn(&CreateTransferRejection) -> bool;
    let cases: [(&tally_engine::Account, IsExpected); 2] = [
        (&blocked, |r| matches!(r, CreateTransferRejection::DestinationNotActive { .. })),
        (&missing, |r| matches!(r, CreateTransferRejection::DestinationNotFound)),
    ];
    for (destination, expected) in cases {
        let request = harness.request(&alice, destination, dec!(60));
        let id = request.id;
        let error = harness.engine.transfer(request).await.unwrap_err();
        let TransferError::Rejected(rejection) = &error else { panic!("{error:?}") };
        assert!(expected(rejection), "{rejection:?}");
        let stored = harness.engine.load_transfer(id).await.unwrap().unwrap();
        assert_eq!(stored.status, TransferStatus::Failed);
        assert_eq!(stored.failure_reason, Some(rejection.code()));
        let alice_now = harness.engine.account(alice.id).await.unwrap();
        assert_eq!((alice_now.balance(), alice_now.held()), (dec!(100), dec!(0)), "hold released, nothing moved");
    }
    // A destination in another currency converts, at a rate an admin set. With none set, the
    // transfer is refused when it is priced (step 1): nothing is held or recorded.
    let request = harness.request(&alice, &euro, dec!(60));
    let id = request.id;
    let error = harness.engine.transfer(request).await.unwrap_err();
    assert!(matches!(error, TransferError::Rejected(CreateTransferRejection::FxRateNotFound { .. })), "{error:?}");
    assert!(harness.engine.load_transfer(id).await.unwrap().is_none());
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_side_rejections_come_before_destination_ones() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    let missing = tally_engine::Account { id: AccountId::from_u128(7), ..bob.clone() };
    // Broke source and missing destination: the source's reason wins.
    let error = harness.engine.transfer(harness.request(&alice, &missing, dec!(1))).await.unwrap_err();
    assert!(matches!(error, TransferError::Rejected(CreateTransferRejection::InsufficientFunds { .. })), "{error:?}");
    // Missing source: not found, and nothing is created at the destination.
    let error = harness.engine.transfer(harness.request(&missing, &bob, dec!(1))).await.unwrap_err();
    assert!(matches!(error, TransferError::Rejected(CreateTransferRejection::SourceNotFound)), "{error:?}");
    // Invalid amount beats everything.
    let error = harness.engine.transfer(harness.request(&missing, &missing, dec!(-1))).await.unwrap_err();
    assert!(matches!(error, TransferError::Rejected(CreateTransferRejection::InvalidAmount(_))), "{error:?}");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

fn external(harness: &Harness, source: &tally_engine::Account, amount: rust_decimal::Decimal) -> TransferRequest {
    let mut request = harness.request(source, source, amount);
    request.kind = TransferKind::External;
    request.destination = tally_engine::system_accounts::settlement(source.currency);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_transfer_waits_pending_with_its_money_held_until_an_admin_executes_it() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::GBP).await;
    harness.fund(&alice, dec!(80)).await;

    let pending = harness.engine.transfer(external(&harness, &alice, dec!(30))).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);
    assert_eq!(pending.pending_reason, Some(PendingReason::ManualExecution));
    let held = harness.engine.account(alice.id).await.unwrap();
    assert_eq!((held.balance(), held.held(), held.available().unwrap()), (dec!(80), dec!(30), dec!(50)));
    harness.assert_ledger_consistent().await;

    let executed = harness.engine.execute(pending.id).await.unwrap();
    assert_eq!(executed.status, TransferStatus::Completed);
    let after = harness.engine.account(alice.id).await.unwrap();
    assert_eq!((after.balance(), after.held()), (dec!(50), dec!(0)));
    let again = harness.engine.execute(pending.id).await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::NotPending);
    let cancel = harness.engine.cancel(pending.id).await.unwrap_err();
    assert_eq!(cancel.code(), ErrorCode::NotCancellable);
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_or_cancelling_a_pending_transfer_releases_its_hold() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let first = harness.engine.transfer(external(&harness, &alice, dec!(30))).await.unwrap();
    let second = harness.engine.transfer(external(&harness, &alice, dec!(20))).await.unwrap();
    assert_eq!(harness.engine.account(alice.id).await.unwrap().held(), dec!(50));

    let rejected = harness.engine.reject(first.id).await.unwrap();
    let cancelled = harness.engine.cancel(second.id).await.unwrap();

    assert_eq!(rejected.status, TransferStatus::Rejected);
    assert_eq!(cancelled.status, TransferStatus::Cancelled);
    let after = harness.engine.account(alice.id).await.unwrap();
    assert_eq!((after.balance(), after.held()), (dec!(100), dec!(0)));
    assert_eq!(harness.engine.load_transfer(first.id).await.unwrap().unwrap().status, TransferStatus::Rejected);
    assert_eq!(harness.engine.execute(second.id).await.unwrap_err().code(), ErrorCode::NotPending);
    let unknown = harness.engine.execute(harness.engine.new_transfer_id()).await.unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::NotFound);
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execute_and_reject_of_one_pending_transfer_let_exactly_one_win() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(20)).await;
    for _ in 0..20 {
        let pending = harness.engine.transfer(external(&harness, &alice, dec!(1))).await.unwrap();
        let (executed, rejected) = tokio::join!(harness.engine.execute(pending.id), harness.engine.reject(pending.id));
        assert!(executed.is_ok() != rejected.is_ok(), "exactly one of execute/reject succeeds");
    }
    let after = harness.engine.account(alice.id).await.unwrap();
    assert_eq!(after.held(), dec!(0));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_step_applied_twice_has_the_effect_of_once() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let accounts = harness.engine.accounts();
    let transfer = harness.engine.new_transfer_id();
    let hold = AccountCommand::Hold { transfer, amount: dec!(25), currency: Currency::USD };
    let credit = AccountCommand::Credit { transfer, amount: dec!(25), currency: Currency::USD };
    let post = AccountCommand::Post { transfer };

    assert!(accounts.command(alice.id, hold).await.unwrap().is_some());
    assert!(accounts.command(alice.id, hold).await.unwrap().is_none(), "second hold is a no-op");
    assert!(accounts.command(bob.id, credit).await.unwrap().is_some());
    assert!(accounts.command(bob.id, credit).await.unwrap().is_none(), "second credit is a no-op");
    assert!(accounts.command(alice.id, post).await.unwrap().is_some());
    assert!(accounts.command(alice.id, post).await.unwrap().is_none(), "second post is a no-op");
    let release = AccountCommand::Release { transfer };
    assert!(accounts.command(alice.id, release).await.unwrap().is_none(), "release after post is a no-op");

    assert_eq!(harness.balance(&alice).await, dec!(75));
    assert_eq!(harness.balance(&bob).await, dec!(25));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_actor_that_panics_is_restarted_with_its_state_and_the_transfer_completes() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    let before = harness.engine.health(10);

    harness.engine.faults().arm_panics(ActorKind::Account, 2);
    let transfer = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();

    assert_eq!(transfer.status, TransferStatus::Completed);
    let after = harness.engine.health(10);
    let restarts = |report: &tally_actors::HealthReport| report.kind(ActorKind::Account).unwrap().restarts;
    assert_eq!(restarts(&after) - restarts(&before), 2, "each panic is one counted restart");
    assert_eq!(harness.balance(&alice).await, dec!(90), "state reloaded, nothing lost or doubled");
    assert_eq!(harness.balance(&bob).await, dec!(10));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_that_panics_is_restarted_from_its_last_step() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;

    harness.engine.faults().arm_panics(ActorKind::TransferSaga, 3);
    let transfer = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();

    assert_eq!(transfer.status, TransferStatus::Completed);
    assert_eq!(harness.engine.health(10).kind(ActorKind::TransferSaga).unwrap().restarts, 3);
    assert_eq!(harness.balance(&alice).await, dec!(90));
    assert_eq!(harness.balance(&bob).await, dec!(10));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_keeps_failing_is_quarantined_refuses_writes_and_can_be_released() {
    let mut config = EngineConfig::default();
    config.actors.quarantine_restarts = 3;
    let harness = Harness::start_with(config).await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;

    // Every delivery attempt panics until the quarantine stops the restarts.
    harness.engine.faults().arm_panics(ActorKind::Account, 3);
    let error = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap_err();
    harness.engine.faults().disarm();
    assert_eq!(error.code(), ErrorCode::Quarantined, "{error:?}");
    let health = harness.engine.health(10);
    assert_eq!(health.kind(ActorKind::Account).unwrap().quarantined, 1);
    assert!(health.worst.iter().any(|actor| actor.quarantined && actor.id == alice.id.to_string()));
    assert_eq!(harness.balance(&alice).await, dec!(100), "reads still work and nothing moved");
    let again = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Quarantined);

    assert!(harness.engine.release_account_quarantine(alice.id));
    let transfer = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();
    assert_eq!(transfer.status, TransferStatus::Completed);
    assert_eq!(harness.engine.health(10).kind(ActorKind::Account).unwrap().quarantined, 0);
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_after_their_records_are_durable_and_come_back_with_every_change() {
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = std::time::Duration::ZERO;
    config.actors.passivation_sweep_interval = std::time::Duration::from_millis(20);
    let harness = Harness::start_with(config).await;
    let accounts: Vec<_> = futures::future::join_all((0..20).map(|_| harness.open(Currency::USD))).await;
    for account in &accounts {
        harness.fund(account, dec!(10)).await;
    }
    // Keep moving money while the sweeper passivates actors under the load.
    for round in 0..30 {
        let transfers = (0..accounts.len()).map(|i| {
            let request = harness.request(
                &accounts[i],
                &accounts[(i + 1 + round % (accounts.len() - 1)) % accounts.len()],
                dec!(0.5),
            );
            harness.engine.transfer(request)
        });
        for result in futures::future::join_all(transfers).await {
            assert_eq!(result.unwrap().status, TransferStatus::Completed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(7)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let health = harness.engine.health(10);
    let account_health = health.kind(ActorKind::Account).unwrap();
    assert!(account_health.passivations > 0, "idle actors passivated: {account_health:?}");
    assert!(account_health.activations > account_health.passivations / 2, "and were activated again");
    let total: rust_decimal::Decimal =
        futures::future::join_all(accounts.iter().map(|a| harness.balance(a))).await.into_iter().sum();
    assert_eq!(total, dec!(200), "every change survived passivation");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_to_a_passivated_account_share_one_activation() {
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = std::time::Duration::ZERO;
    // Swept by hand below, so no other passivation can add an activation of its own.
    config.actors.passivation_sweep_interval = std::time::Duration::from_secs(3_600);
    let harness = Harness::start_with(config).await;
    let alice = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(10)).await;
    let accounts = harness.engine.accounts();
    for _ in 0..500 {
        if accounts.live() == 0 {
            break;
        }
        accounts.sweep_idle();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(accounts.live(), 0, "every account actor passivated");
    let activations = |harness: &Harness| harness.engine.health(1).kind(ActorKind::Account).unwrap().activations;
    let before = activations(&harness);
    for round in 0..3 {
        let reads = futures::future::join_all((0..200).map(|_| accounts.read(alice.id))).await;
        for read in reads {
            assert_eq!(read.unwrap().position.balance, dec!(10), "round {round}: every caller sees the one state");
        }
        assert_eq!(activations(&harness), before + 1, "round {round}: 200 first calls started one incarnation");
    }
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_overloaded_instead_of_waiting() {
    let mut config = EngineConfig::default();
    config.actors.mailbox_capacity_max = 4;
    let harness = Harness::start_with(config).await;
    let alice = harness.open(Currency::USD).await;
    let accounts = harness.engine.accounts();
    let reads = (0..2_000).map(|_| accounts.read(alice.id));
    let results = futures::future::join_all(reads).await;
    let overloaded =
        results.iter().filter(|result| matches!(result, Err(CallError::Unavailable(Unavailable::Overloaded)))).count();
    assert!(overloaded > 0, "2,000 concurrent reads into a mailbox of 4 must overflow it");
    assert!(results.iter().any(Result::is_ok), "and the ones that fit are answered");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_actor_keeps_one_balance_and_hold_per_asset() {
    let harness = Harness::start().await;
    let wallet = harness.engine.open_wallet(harness.user()).await.unwrap();
    let wallets = harness.engine.wallets();
    let t = |n| tally_engine::TransferId::from_u128(n);
    wallets
        .command(wallet.id, WalletCommand::Credit { transfer: t(1), asset: Currency::BTC, amount: dec!(0.5) })
        .await
        .unwrap();
    wallets
        .command(wallet.id, WalletCommand::Credit { transfer: t(2), asset: Currency::ETH, amount: dec!(2) })
        .await
        .unwrap();
    wallets
        .command(wallet.id, WalletCommand::Hold { transfer: t(3), asset: Currency::BTC, amount: dec!(0.2) })
        .await
        .unwrap();
    let refused = wallets
        .command(wallet.id, WalletCommand::Hold { transfer: t(4), asset: Currency::BTC, amount: dec!(0.31) })
        .await;
    assert!(matches!(refused, Err(CallError::Rejected(_))), "BTC available is 0.3");

    let state = harness.engine.wallet(wallet.id).await.unwrap();
    let btc = state.position(Currency::BTC).unwrap();
    let eth = state.position(Currency::ETH).unwrap();
    assert_eq!((btc.balance, btc.held), (dec!(0.5), dec!(0.2)));
    assert_eq!((eth.balance, eth.held), (dec!(2), dec!(0)));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_spread_through_a_stream_of_transfers_lose_and_double_nothing() {
    let mut config = EngineConfig::default();
    config.actors.quarantine_restarts = u32::MAX;
    let harness = Harness::start_with(config).await;
    let accounts: Vec<_> = futures::future::join_all((0..6).map(|_| harness.open(Currency::USD))).await;
    for account in &accounts {
        harness.fund(account, dec!(100)).await;
    }
    harness.engine.faults().panic_every(ActorKind::Account, 7);
    harness.engine.faults().panic_every(ActorKind::TransferSaga, 11);
    let requests: Vec<_> =
        (0..300).map(|i| harness.request(&accounts[i % 6], &accounts[(i + 1) % 6], dec!(1))).collect();
    let ids: Vec<_> = requests.iter().map(|request| request.id).collect();
    let results = futures::future::join_all(requests.into_iter().map(|r| harness.engine.transfer(r))).await;
    harness.engine.faults().disarm();

    // With one account handler in seven panicking, a message can run out of delivery attempts
    // while its actor restarts: a clean `Overloaded` refusal is allowed, anything else is not.
    let completed = results.iter().filter(|r| matches!(r, Ok(t) if t.status == TransferStatus::Completed)).count();
    let refused = results.iter().filter(|r| matches!(r, Err(e) if e.code() == ErrorCode::Overloaded)).count();
    assert_eq!(completed + refused, results.len(), "only completions and clean refusals");
    assert!(completed >= 250, "most complete despite the panics: {completed}");
    harness.engine.journals().barrier().await.unwrap();
    for (id, result) in ids.iter().zip(&results) {
        let postings = harness.store.postings_of_transfer(*id).await.unwrap();
        let debits = postings.iter().filter(|p| p.direction == tally_engine::Direction::Debit).count();
        let credits = postings.len() - debits;
        let expected = if result.is_ok() { (1, 1) } else { (0, 0) };
        assert_eq!((debits, credits), expected, "transfer {id} applied exactly once or not at all");
    }
    let health = harness.engine.health(10);
    assert!(health.kind(ActorKind::Account).unwrap().restarts >= 50, "{health:?}");
    assert!(health.kind(ActorKind::TransferSaga).unwrap().restarts >= 50, "{health:?}");
    let total: rust_decimal::Decimal =
        futures::future::join_all(accounts.iter().map(|a| harness.balance(a))).await.into_iter().sum();
    assert_eq!(total, dec!(600));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

#[test]
fn the_panic_every_setting_parses_and_refuses_nonsense() {
    use tally_actors::faults::parse_panic_every;
    assert_eq!(
        parse_panic_every("account=50,transfer_saga=200").unwrap(),
        vec![(ActorKind::Account, 50), (ActorKind::TransferSaga, 200)]
    );
    assert!(parse_panic_every("acount=5").is_err());
    assert!(parse_panic_every("account=x").is_err());
    assert!(parse_panic_every("account").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_an_account_not_yet_active_activates_it_exactly_once() {
    // Regression: a burst before the actor first ran once made `try_send` answer `Full`, which
    // was taken for a dead actor, so a second incarnation started beside the first.
    let harness = Harness::start().await;
    let settlement = tally_engine::system_accounts::settlement(Currency::CHF);
    let before = harness.engine.health(1).kind(ActorKind::Account).unwrap().activations;
    let reads = futures::future::join_all((0..1_000).map(|_| harness.engine.account(settlement))).await;
    assert!(reads.iter().all(Result::is_ok));
    let after = harness.engine.health(1).kind(ActorKind::Account).unwrap().activations;
    assert_eq!(after - before, 1, "one activation for one account");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fx_transfer_to_a_blocked_destination_releases_both_holds_and_moves_nothing() {
    let harness = Harness::start().await;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::EUR).await;
    harness.fund(&alice, dec!(100)).await;
    harness.engine.set_fx_rate(Currency::USD, Currency::EUR, dec!(0.9), None).await.unwrap();
    harness.engine.set_account_status(bob.id, StatusAction::Block).await.unwrap();
    let clearing = tally_engine::system_accounts::fx_clearing;

    let error = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap_err();
    assert!(
        matches!(error, TransferError::Rejected(CreateTransferRejection::DestinationNotActive { .. })),
        "{error:?}"
    );
    for id in [alice.id, bob.id, clearing(Currency::USD), clearing(Currency::EUR)] {
        let account = harness.engine.account(id).await.unwrap();
        assert_eq!(account.held(), dec!(0), "{id}: no hold left");
    }
    assert_eq!(harness.balance(&alice).await, dec!(100));
    assert_eq!(harness.engine.account(clearing(Currency::EUR)).await.unwrap().balance(), dec!(0));

    // Unblocked, the same transfer converts: 10 USD in, 9.00 EUR out, through both clearings.
    harness.engine.set_account_status(bob.id, StatusAction::Unblock).await.unwrap();
    let done = harness.engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();
    assert_eq!(
        (done.fx_rate, done.destination_amount, done.destination_currency),
        (Some(dec!(0.9)), dec!(9.00), Currency::EUR)
    );
    assert_eq!(harness.balance(&bob).await, dec!(9.00));
    assert_eq!(harness.engine.account(clearing(Currency::USD)).await.unwrap().balance(), dec!(10));
    assert_eq!(harness.engine.account(clearing(Currency::EUR)).await.unwrap().balance(), dec!(-9.00));
    let sums = harness.assert_ledger_consistent().await;
    assert!(sums.values().all(|sum| sum.is_zero()), "{sums:?}");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_for_an_account_on_another_thread_and_their_answers_ride_the_inboxes() {
    let mut config = EngineConfig::default();
    config.actors.shards = 2;
    let harness = Harness::start_with(config).await;
    let alice = harness.open(Currency::USD).await;
    let mut bob = harness.open(Currency::USD).await;
    let thread = harness.engine.thread_of(alice.id.as_uuid());
    while harness.engine.thread_of(bob.id.as_uuid()) == thread {
        bob = harness.open(Currency::USD).await;
    }
    harness.fund(&alice, dec!(1000)).await;
    // A first transfer, so that pricing knows bob's currency and both actors are live.
    harness.engine.transfer(harness.request(&alice, &bob, dec!(1))).await.unwrap();
    let bob_before = harness.balance(&bob).await;

    // A hundred sagas started on alice's thread at once: each credits bob, on the other thread.
    let before = harness.engine.runtime().inbox_stats();
    let (finished, outcomes) = tokio::sync::oneshot::channel();
    let engine = harness.engine.clone();
    let requests: Vec<_> = (0..100).map(|_| harness.request(&alice, &bob, dec!(2))).collect();
    assert!(harness.engine.runtime().spawn_on(thread, async move {
        let results = futures::future::join_all(requests.into_iter().map(|request| engine.transfer(request))).await;
        let _ = finished.send(results);
    }));
    let results = outcomes.await.unwrap();
    let after = harness.engine.runtime().inbox_stats();

    assert!(results.iter().all(|result| result.as_ref().is_ok_and(|t| t.status == TransferStatus::Completed)));
    assert_eq!(harness.balance(&bob).await, bob_before + dec!(200));
    // Each credit is a job on bob's thread's inbox and its answer one on alice's (plus the one
    // job that started the task): sent as mailbox messages and oneshot answers, they would
    // not be inbox jobs at all.
    let jobs = after.jobs - before.jobs;
    let wakeups = after.wakeups - before.wakeups;
    assert!(jobs >= 201, "{jobs} inbox jobs for 100 cross-thread steps and their answers");
    // Steps queued while the other thread was busy shared its wake-ups.
    assert!(wakeups < jobs, "{wakeups} wake-ups for {jobs} jobs");
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

/// An admin's execution waits while the destination is only busy, but not for a quarantined
/// destination, which an operator may never release: the execute answers (the transfer fails
/// and its hold is released, as before), instead of waiting until the quarantine ends with
/// the transfer stuck `processing`, which neither its owner could cancel nor its deadline end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_towards_a_quarantined_destination_answers_and_moves_nothing() {
    let mut config = EngineConfig::default();
    config.actors.quarantine_restarts = 3;
    let harness = Harness::start_with(config).await;
    let engine = &harness.engine;
    let alice = harness.open(Currency::USD).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    engine.set_transfer_type(
        TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
    let pending = engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);

    // Bob's actor keeps failing (a transfer from him panics at its hold): quarantined.
    engine.faults().arm_panics(ActorKind::Account, 3);
    assert!(engine.transfer(harness.request(&bob, &alice, dec!(1))).await.is_err());
    engine.faults().disarm();
    assert!(engine.accounts().is_quarantined(bob.id));

    // A hang would show as this bound running out; the execute normally answers at once.
    let executed = tokio::time::timeout(std::time::Duration::from_secs(30), engine.execute(pending.id))
        .await
        .expect("the execute answers while the destination stays quarantined");
    assert!(
        matches!(executed, Err(TransferError::Unavailable(Unavailable::Quarantined))),
        "not executed: {executed:?}"
    );
    let stored = engine.load_transfer(pending.id).await.unwrap().unwrap();
    assert_eq!(stored.status, TransferStatus::Pending, "nothing changed");
    let alice_now = engine.account(alice.id).await.unwrap();
    assert_eq!((alice_now.balance(), alice_now.held()), (dec!(100), dec!(10)), "still held");
    engine.release_account_quarantine(bob.id);
    assert_eq!(engine.execute(pending.id).await.unwrap().status, TransferStatus::Completed);
    assert_eq!(harness.balance(&bob).await, dec!(10));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}

/// With `hold_expiries` (the server's setting), a pending transfer past its deadline waits for
/// `release_expiries`, which the server calls once the verification limits' usage is
/// installed (an expiry gives its amount back to that usage); then it expires at the
/// sweeper's next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_expiries_wait_for_their_release_then_expire() {
    let clock = std::sync::Arc::new(tally_tests::clock::ShiftedClock::default());
    let store = std::sync::Arc::new(tally_persistence::MemoryStore::new());
    let config = EngineConfig { hold_expiries: true, ..EngineConfig::default() };
    let engine = tally_actors::Engine::start_with(
        store.clone(),
        config,
        clock.clone(),
        std::sync::Arc::new(tally_actors::RandomIds),
    )
    .await
    .unwrap();
    let owner = tally_engine::UserId::from_u128(5);
    let alice = engine.open_account(owner, Currency::USD, rust_decimal::Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, rust_decimal::Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    engine.set_transfer_type(
        TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
    let request = tally_tests::internal_request(&engine, &alice, &bob, dec!(10));
    let (pending, _) = engine.transfer_idempotent_expiring(request, None, Some(60)).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);

    clock.advance(std::time::Duration::from_secs(120));
    // Several of the sweeper's ticks (`EXPIRY_TICK`, 250 ms) pass: it stays pending.
    tokio::time::sleep(tally_actors::expiry::EXPIRY_TICK * 4).await;
    assert_eq!(engine.load_transfer(pending.id).await.unwrap().unwrap().status, TransferStatus::Pending);

    engine.release_expiries();
    let mut status = TransferStatus::Pending;
    for _ in 0..200 {
        status = engine.load_transfer(pending.id).await.unwrap().unwrap().status;
        if status != TransferStatus::Pending {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status, TransferStatus::Expired);
    assert_eq!(engine.account(alice.id).await.unwrap().held(), dec!(0));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

/// A transfer counted against its initiator's limits in step 1 whose saga then recorded
/// nothing (here: its journal was full, the store taking no commits, so its first record was
/// refused, though the saga had been admitted) moved nothing and ran no `finish`: its amount was left counted until the
/// next start, refusing the user's later transfers within their limit (found by a review). It
/// goes back now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_transfer_whose_first_record_is_refused_gives_its_amount_back() {
    let mut config = EngineConfig::default();
    config.actors.shards = 1;
    // Room for a few queued records: the saga is admitted (the admission bound is far), and
    // its first record finds the journal full while the store takes no commits.
    config.journal.depth_max = 256;
    config.journal.admission_depth_max = 1_000;
    let harness = Harness::start_with(config).await;
    let engine = &harness.engine;
    let owner = harness.user();
    let alice = engine.open_account(owner, Currency::USD, rust_decimal::Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, rust_decimal::Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    let limits = tally_engine::limits::UserLimits {
        per_transfer_max: None,
        daily_max: Some(dec!(1000.00)),
        monthly_max: Some(dec!(10000.00)),
    };
    engine.limits().install(&[tally_persistence::users::limits::LevelLimits {
        level: tally_persistence::users::VerificationLevel::None,
        currency: Currency::USD,
        limits,
    }]);
    let used = |engine: &tally_actors::Engine| engine.limits().usage(owner, Currency::USD, engine.now()).used_today;

    // Records queued while the store takes no commits: the journal is full until it does.
    harness.store.set_commits_available(false);
    let openings = tally_tests::fill_journal(engine, owner).await;
    let mut refused = tally_tests::internal_request(engine, &alice, &bob, dec!(20));
    refused.initiated_by = Some(owner);
    let answer = engine.transfer(refused).await;
    assert!(
        matches!(answer, Err(TransferError::Unavailable(Unavailable::Overloaded))),
        "its first record cannot be appended: {answer:?}"
    );
    assert_eq!(used(engine), dec!(0), "the refused transfer's amount went back");
    harness.store.set_commits_available(true);
    for opening in openings {
        let _ = opening.await.unwrap();
    }

    let mut counted = tally_tests::internal_request(engine, &alice, &bob, dec!(10));
    counted.initiated_by = Some(owner);
    engine.transfer(counted).await.unwrap();
    assert_eq!(used(engine), dec!(10), "a completed transfer counts");
}

/// The same with FX: the execute puts a hold on the destination currency's clearing account
/// before the credit, so a quarantined destination must also release that hold when the
/// transfer goes back to `pending` (the branch had no test). Executed after the release, the
/// converted amount arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fx_execute_towards_a_quarantined_destination_releases_the_clearing_hold() {
    let mut config = EngineConfig::default();
    config.actors.quarantine_restarts = 3;
    let harness = Harness::start_with(config).await;
    let engine = &harness.engine;
    let alice = harness.open(Currency::EUR).await;
    let bob = harness.open(Currency::USD).await;
    harness.fund(&alice, dec!(100)).await;
    engine.set_fx_rate(Currency::EUR, Currency::USD, dec!(1.10), None).await.unwrap();
    engine.set_transfer_type(
        TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
    let pending = engine.transfer(harness.request(&alice, &bob, dec!(10))).await.unwrap();
    assert_eq!(pending.status, TransferStatus::Pending);
    let clearing = tally_engine::system_accounts::fx_clearing(Currency::USD);
    let clearing_before = engine.account(clearing).await.unwrap();

    let carol = harness.open(Currency::USD).await;
    engine.faults().arm_panics(ActorKind::Account, 3);
    assert!(engine.transfer(harness.request(&bob, &carol, dec!(1))).await.is_err());
    engine.faults().disarm();
    assert!(engine.accounts().is_quarantined(bob.id));

    let executed = tokio::time::timeout(std::time::Duration::from_secs(30), engine.execute(pending.id))
        .await
        .expect("the execute answers while the destination stays quarantined");
    assert!(
        matches!(executed, Err(TransferError::Unavailable(Unavailable::Quarantined))),
        "not executed: {executed:?}"
    );
    let stored = engine.load_transfer(pending.id).await.unwrap().unwrap();
    assert_eq!(stored.status, TransferStatus::Pending, "nothing changed");
    let alice_now = engine.account(alice.id).await.unwrap();
    assert_eq!((alice_now.balance(), alice_now.held()), (dec!(100), dec!(10)), "still held at the source");
    let clearing_now = engine.account(clearing).await.unwrap();
    assert_eq!(
        (clearing_now.balance(), clearing_now.held()),
        (clearing_before.balance(), clearing_before.held()),
        "the clearing account's hold is released"
    );
    engine.release_account_quarantine(bob.id);
    assert_eq!(engine.execute(pending.id).await.unwrap().status, TransferStatus::Completed);
    assert_eq!(harness.balance(&bob).await, dec!(11.00));
    harness.assert_ledger_consistent().await;
    harness.shutdown().await;
}
