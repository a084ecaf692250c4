//! Crypto operations across a crash (`actors/src/crypto.rs`, "Recovery"): the store holds a
//! durable prefix of the journal, the engine halts as `kill -9` would, a new engine starts on
//! the same store and finishes or undoes what was left: a pending withdrawal keeps its hold,
//! a deposit goes forward, an order before its pivot is undone, an order past its wallet
//! credit goes forward without crediting twice. Money is conserved throughout.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::time::Duration;

use tally_actors::{DepositTarget, Engine, EngineConfig};
use tally_engine::{
    Account, AccountCommand, AccountId, AccountKind, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, ErrorCode,
    Record, Timestamp, UserId, WalletCommand, WalletId, system_accounts,
};
use tally_persistence::{MemoryStore, SequencedRecord, Store, WalletStore};
use tally_tests::{Harness, assert_store_consistent};

async fn restart(engine: &Engine, store: &Arc<MemoryStore>) -> Engine {
    engine.journals().barrier().await.unwrap();
    engine.halt().await;
    Engine::start(store.clone(), EngineConfig::default()).await.unwrap()
}

async fn wallet_figures(engine: &Engine, wallet: WalletId, asset: Currency) -> (Decimal, Decimal) {
    let wallet = engine.wallet(wallet).await.unwrap();
    wallet.position(asset).map_or((Decimal::ZERO, Decimal::ZERO), |p| (p.balance, p.held))
}

fn order(
    engine: &Engine,
    kind: CryptoOpKind,
    owner: tally_engine::UserId,
    wallet: WalletId,
    account: tally_engine::AccountId,
) -> CryptoOp {
    let now = engine.now();
    CryptoOp {
        id: engine.new_transfer_id(),
        kind,
        status: CryptoOpStatus::Processing,
        step: 0,
        owner,
        wallet,
        asset: Currency::BTC,
        asset_amount: dec!(0.002),
        fiat_account: Some(account),
        fiat_currency: Some(Currency::USD),
        fiat_amount: dec!(100.00),
        fee: dec!(1.00),
        price: Some(dec!(50000)),
        address: None,
        tx_hash: None,
        idempotency: None,
        failure_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// Runs the first `legs` legs of `op` by hand, recording the operation before them and after
/// each but the last (the crash lands between a leg and its record).
async fn run_legs_then_crash_before_recording(engine: &Engine, op: &mut CryptoOp, legs: u32) {
    // Every record in the operation's own journal, as its saga appends them.
    let shard = engine.shard_of(op.id.as_uuid());
    let journal = engine.journals().shard(shard).clone();
    journal.append(Record::CryptoOp(Box::new(op.clone()))).unwrap();
    for (index, leg) in op.legs().into_iter().take(legs as usize).enumerate() {
        match leg {
            tally_engine::crypto::Leg::Account { account, command } => {
                engine.accounts().command_on(account, command, Some(shard)).await.unwrap();
            }
            tally_engine::crypto::Leg::Wallet { wallet, command } => {
                engine.wallets().command_on(wallet, command, Some(shard)).await.unwrap();
            }
        }
        if index + 1 < legs as usize {
            op.step += 1;
            journal.append(Record::CryptoOp(Box::new(op.clone()))).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_withdrawal_keeps_its_hold_across_a_crash_and_settles_after() {
    let harness = Harness::start().await;
    let owner = harness.user();
    let (profile, _) = harness.engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    harness
        .engine
        .deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-in".into())
        .await
        .unwrap();
    let (withdrawal, _) =
        harness.engine.withdraw(owner, profile.wallet, dec!(0.4), "bc1dest".into(), None).await.unwrap();
    assert_eq!(withdrawal.status, CryptoOpStatus::Pending);

    let engine = restart(&harness.engine, &harness.store).await;
    assert_eq!(engine.crypto_op(withdrawal.id).await.unwrap().unwrap().status, CryptoOpStatus::Pending);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::BTC).await, (dec!(1), dec!(0.4)));
    // The deposit's hash is still known after the restart: a repeat changes nothing.
    let (_, repeated) =
        engine.deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-in".into()).await.unwrap();
    assert!(repeated);
    let settled = engine.settle_withdrawal(withdrawal.id, true, "tx-out".into()).await.unwrap();
    assert_eq!(settled.status, CryptoOpStatus::Completed);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::BTC).await, (dec!(0.6), dec!(0)));
    engine.journals().barrier().await.unwrap();
    let sums = assert_store_consistent(harness.store.as_ref()).await;
    assert_eq!(sums[&Currency::BTC], Decimal::ZERO);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_interrupted_before_its_wallet_credit_is_undone() {
    let harness = Harness::start().await;
    let owner = harness.user();
    let account = harness.engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    harness.fund(&account, dec!(500)).await;
    let (profile, _) = harness.engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    let mut op = order(&harness.engine, CryptoOpKind::Buy, owner, profile.wallet, account.id);
    // The fiat hold and the FX clearing hold are placed; the crash comes before the credit.
    run_legs_then_crash_before_recording(&harness.engine, &mut op, 2).await;
    assert_eq!(harness.engine.account(account.id).await.unwrap().held(), dec!(101.00));

    let engine = restart(&harness.engine, &harness.store).await;
    let recovered = engine.crypto_op(op.id).await.unwrap().unwrap();
    assert_eq!((recovered.status, recovered.failure_reason), (CryptoOpStatus::Failed, Some(ErrorCode::Internal)));
    let account = engine.account(account.id).await.unwrap();
    assert_eq!((account.balance(), account.held()), (dec!(500), dec!(0)));
    let fx = engine.account(system_accounts::fx_clearing(Currency::BTC)).await.unwrap();
    assert_eq!(fx.held(), dec!(0));
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::BTC).await, (dec!(0), dec!(0)));
    assert_store_consistent(harness.store.as_ref()).await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_interrupted_after_its_wallet_credit_goes_forward_and_credits_once() {
    let harness = Harness::start().await;
    let owner = harness.user();
    let account = harness.engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    harness.fund(&account, dec!(500)).await;
    let (profile, _) = harness.engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    let mut op = order(&harness.engine, CryptoOpKind::Buy, owner, profile.wallet, account.id);
    // Holds and the wallet credit happened; the record saying so did not.
    run_legs_then_crash_before_recording(&harness.engine, &mut op, 3).await;
    assert_eq!(op.step, 2, "the last durable record says two legs are done");

    let engine = restart(&harness.engine, &harness.store).await;
    let recovered = engine.crypto_op(op.id).await.unwrap().unwrap();
    assert_eq!(recovered.status, CryptoOpStatus::Completed);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::BTC).await, (dec!(0.002), dec!(0)), "credited once");
    let account = engine.account(account.id).await.unwrap();
    assert_eq!((account.balance(), account.held()), (dec!(399.00), dec!(0)));
    let fees = engine.account(system_accounts::fees(Currency::USD)).await.unwrap();
    assert_eq!(fees.balance(), dec!(1.00));
    let sums = assert_store_consistent(harness.store.as_ref()).await;
    assert_eq!(sums[&Currency::BTC], Decimal::ZERO);
    assert_eq!(sums[&Currency::USD], Decimal::ZERO);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

/// The same on SQLite, where the restarted engine loads the wallet from SQL without its window
/// of recent credits: recovery must learn from the store that the credit is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_interrupted_after_its_wallet_credit_credits_once_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tally-order-once-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let store: Arc<dyn Store> = Arc::new(tally_persistence::sqlite::SqliteStore::open(&url).await.unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_uuid(uuid::Uuid::new_v4());
    let account = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(tally_engine::TransferKind::AdminCredit, account.id, dec!(500), None, None, None).await.unwrap();
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    let mut op = order(&engine, CryptoOpKind::Buy, owner, profile.wallet, account.id);
    run_legs_then_crash_before_recording(&engine, &mut op, 3).await;
    engine.journals().barrier().await.unwrap();
    engine.halt().await;
    drop(engine);

    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    assert_eq!(engine.crypto_op(op.id).await.unwrap().unwrap().status, CryptoOpStatus::Completed);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::BTC).await, (dec!(0.002), dec!(0)), "credited once");
    let account = engine.account(account.id).await.unwrap();
    assert_eq!((account.balance(), account.held()), (dec!(399.00), dec!(0)));
    assert_eq!(engine.account(system_accounts::fees(Currency::USD)).await.unwrap().balance(), dec!(1.00));
    let sums = assert_store_consistent(store.as_ref()).await;
    assert_eq!((sums[&Currency::BTC], sums[&Currency::USD]), (Decimal::ZERO, Decimal::ZERO));
    engine.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_interrupted_after_its_settlement_hold_is_credited() {
    let harness = Harness::start().await;
    let owner = harness.user();
    let (profile, _) = harness.engine.open_customer_wallet(owner, Currency::ETH).await.unwrap();
    let now = harness.engine.now();
    let mut op = CryptoOp {
        id: harness.engine.new_transfer_id(),
        kind: CryptoOpKind::Deposit,
        status: CryptoOpStatus::Processing,
        step: 0,
        owner,
        wallet: profile.wallet,
        asset: Currency::ETH,
        asset_amount: dec!(3),
        fiat_account: None,
        fiat_currency: None,
        fiat_amount: Decimal::ZERO,
        fee: Decimal::ZERO,
        price: None,
        address: None,
        tx_hash: Some("0xdeposit".into()),
        idempotency: None,
        failure_reason: None,
        created_at: now,
        updated_at: now,
    };
    run_legs_then_crash_before_recording(&harness.engine, &mut op, 1).await;

    let engine = restart(&harness.engine, &harness.store).await;
    assert_eq!(engine.crypto_op(op.id).await.unwrap().unwrap().status, CryptoOpStatus::Completed);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::ETH).await, (dec!(3), dec!(0)));
    let (again, repeated) =
        engine.deposit(DepositTarget::Wallet(profile.wallet), dec!(3), "0xdeposit".into()).await.unwrap();
    assert!(repeated);
    assert_eq!(again.id, op.id);
    assert_eq!(wallet_figures(&engine, profile.wallet, Currency::ETH).await, (dec!(3), dec!(0)));
    assert_store_consistent(harness.store.as_ref()).await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

/// A custodian's answer whose saga stopped short without a restart (the journal full between
/// two records: the custodian heard `503`) leaves the withdrawal `processing`. The same answer
/// again resumes it, as recovery would; the other answer is refused. It was `409` until the
/// next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custodians_answer_cut_short_is_resumed_by_its_retry() {
    let harness = Harness::start().await;
    let engine = &harness.engine;
    let owner = harness.user();
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    engine.deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-in".into()).await.unwrap();
    let withdraw = |amount| engine.withdraw(owner, profile.wallet, amount, "bc1dest".into(), None);
    let (confirmed, _) = withdraw(dec!(0.4)).await.unwrap();
    let (failed, _) = withdraw(dec!(0.1)).await.unwrap();
    assert_eq!(wallet_figures(engine, profile.wallet, Currency::BTC).await, (dec!(1), dec!(0.5)));

    // Each answer's first record, as its saga appends it, and nothing after.
    let cut = |op: &CryptoOp, step: u32| {
        let mut op = op.clone();
        (op.status, op.step, op.tx_hash) = (CryptoOpStatus::Processing, step, Some("tx-out".into()));
        let journal = engine.journals().shard(engine.shard_of(op.id.as_uuid())).clone();
        journal.append(Record::CryptoOp(Box::new(op))).unwrap();
    };
    cut(&confirmed, 1);
    cut(&failed, 0);
    engine.journals().barrier().await.unwrap();

    // The other answer, or a confirm under another hash, is refused.
    for (id, confirm, hash) in
        [(confirmed.id, false, "tx-out"), (confirmed.id, true, "tx-other"), (failed.id, true, "tx-out")]
    {
        let refused = engine.settle_withdrawal(id, confirm, hash.into()).await;
        assert!(matches!(refused, Err(tally_actors::CryptoError::Refused(ErrorCode::Conflict, _))), "{refused:?}");
    }
    let settled = engine.settle_withdrawal(confirmed.id, true, "tx-out".into()).await.unwrap();
    assert_eq!(settled.status, CryptoOpStatus::Completed);
    let released = engine.settle_withdrawal(failed.id, false, "tx-out".into()).await.unwrap();
    assert_eq!(released.status, CryptoOpStatus::Failed);
    assert_eq!(wallet_figures(engine, profile.wallet, Currency::BTC).await, (dec!(0.6), dec!(0)));
    // Repeats answer what was applied.
    assert_eq!(engine.settle_withdrawal(confirmed.id, true, "tx-out".into()).await.unwrap().status, settled.status);
    assert_eq!(engine.settle_withdrawal(failed.id, false, "tx-out".into()).await.unwrap().status, released.status);
    engine.journals().barrier().await.unwrap();
    let sums = assert_store_consistent(harness.store.as_ref()).await;
    assert_eq!(sums[&Currency::BTC], Decimal::ZERO);
    harness.shutdown().await;
}

// ---- a run cut short on a live path ------------------------------------------------------------
//
// `crypto::drive` records the operation after every leg; that append fails when the journal is
// full, after the leg was applied (its own record is admitted first), and the caller hears
// `503` with the operation `processing` at the step before the leg. The custodian's retry (a
// deposit's, a withdrawal confirm's) drives it on: the leg at that step, a credit, must not be
// applied again (`past_a_durable_credit`). The cut is made by hand, as the tests above make
// theirs: the operation's records and legs as `drive` appends them, up to the record that did
// not fit. Found by a review (helper), each failing before the fix.

async fn wallet_balance_of(engine: &Engine, wallet: WalletId, asset: Currency) -> Decimal {
    engine.wallet(wallet).await.unwrap().position(asset).map_or(Decimal::ZERO, |p| p.balance)
}

fn deposit_op(engine: &Engine, owner: UserId, wallet: WalletId, amount: Decimal, tx_hash: &str) -> CryptoOp {
    // An order's shape without its fiat side.
    CryptoOp {
        asset_amount: amount,
        fiat_account: None,
        fiat_currency: None,
        fiat_amount: Decimal::ZERO,
        fee: Decimal::ZERO,
        price: None,
        tx_hash: Some(tx_hash.to_owned()),
        ..order(engine, CryptoOpKind::Deposit, owner, wallet, system_accounts::settlement(Currency::BTC))
    }
}

/// A new deposit's `drive` up to the record after its wallet credit, which does not fit:
/// record(step 0), settlement hold, record(step 1), wallet credit, [record(step 2) refused].
async fn deposit_cut_after_wallet_credit(engine: &Engine, op: &mut CryptoOp) {
    let shard = engine.shard_of(op.id.as_uuid());
    let journal = engine.journals().shard(shard).clone();
    journal.append(Record::CryptoOp(Box::new(op.clone()))).unwrap();
    let settlement = system_accounts::settlement(op.asset);
    let hold = AccountCommand::Hold { transfer: op.id, amount: op.asset_amount, currency: op.asset };
    engine.accounts().command_on(settlement, hold, Some(shard)).await.unwrap();
    op.step = 1;
    journal.append(Record::CryptoOp(Box::new(op.clone()))).unwrap();
    let credit = WalletCommand::Credit { transfer: op.id, asset: op.asset, amount: op.asset_amount };
    engine.wallets().command_on(op.wallet, credit, Some(shard)).await.unwrap();
    engine.journals().barrier().await.unwrap();
}

/// Memory store, no passivation: 8 other deposits to the same wallet push the cut deposit out of
/// the wallet's window of recent credits; the custodian's retry of the cut one must not credit
/// it again (it did: the retry re-ran the leg with no look at its posting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_cut_after_its_wallet_credit_is_not_credited_again_by_the_custodians_retry() {
    let harness = Harness::start().await;
    let engine = &harness.engine;
    let owner = harness.user();
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    let mut op = deposit_op(engine, owner, profile.wallet, dec!(1), "tx-cut");
    deposit_cut_after_wallet_credit(engine, &mut op).await;
    assert_eq!(wallet_balance_of(engine, profile.wallet, Currency::BTC).await, dec!(1));

    for n in 0..8 {
        engine.deposit(DepositTarget::Wallet(profile.wallet), dec!(0.1), format!("tx-other-{n}")).await.unwrap();
    }
    assert_eq!(wallet_balance_of(engine, profile.wallet, Currency::BTC).await, dec!(1.8));

    // The custodian heard 503 for "tx-cut" and retries it.
    let (retried, _) = engine.deposit(DepositTarget::Wallet(profile.wallet), dec!(1), "tx-cut".into()).await.unwrap();
    assert_eq!(retried.id, op.id);
    assert_eq!(retried.status, CryptoOpStatus::Completed);
    assert_eq!(
        wallet_balance_of(engine, profile.wallet, Currency::BTC).await,
        dec!(1.8),
        "one chain transaction of 1 BTC was credited to the wallet twice"
    );
    harness.shutdown().await;
}

/// SQLite, one deposit only: the wallet is passivated (idle, its records durable) before the
/// custodian's retry; reloaded from SQL it has no window, and the retry must not credit it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_cut_after_its_wallet_credit_is_not_credited_again_after_passivation_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tally-review-once-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/store.db", dir.display());
    let store: Arc<dyn Store> = Arc::new(tally_persistence::sqlite::SqliteStore::open(&url).await.unwrap());
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = Duration::ZERO;
    config.actors.passivation_sweep_interval = Duration::from_secs(3_600);
    let engine = Engine::start(store, config).await.unwrap();
    let owner = UserId::from_uuid(uuid::Uuid::new_v4());
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    let mut op = deposit_op(&engine, owner, profile.wallet, dec!(1), "tx-cut");
    deposit_cut_after_wallet_credit(&engine, &mut op).await;
    assert_eq!(wallet_balance_of(&engine, profile.wallet, Currency::BTC).await, dec!(1));

    let wallets = Arc::clone(engine.wallets());
    let mut passivated = false;
    for _ in 0..500 {
        wallets.sweep_idle();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if !wallets.is_live(profile.wallet) {
            passivated = true;
            break;
        }
    }
    assert!(passivated, "the wallet passivates");

    let (retried, _) = engine.deposit(DepositTarget::Wallet(profile.wallet), dec!(1), "tx-cut".into()).await.unwrap();
    assert_eq!(retried.id, op.id);
    let balance = wallet_balance_of(&engine, profile.wallet, Currency::BTC).await;
    engine.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(balance, dec!(1), "one chain transaction of 1 BTC was credited to the wallet twice");
}

/// Memory store: a confirm cut after its settlement credit, 8 other confirms of the same asset
/// (the settlement account is shared by every withdrawal), then the custodian's retry of the
/// cut confirm must not credit settlement again (it did: BTC no longer summed to zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_confirm_cut_after_its_settlement_credit_does_not_credit_it_again_on_retry() {
    let harness = Harness::start().await;
    let engine = &harness.engine;
    let owner = harness.user();
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    engine.deposit(DepositTarget::Wallet(profile.wallet), dec!(10), "tx-in".into()).await.unwrap();
    let mut withdrawals = Vec::new();
    for _ in 0..9 {
        let (op, _) = engine.withdraw(owner, profile.wallet, dec!(0.5), "bc1dest".into(), None).await.unwrap();
        assert_eq!(op.status, CryptoOpStatus::Pending);
        withdrawals.push(op);
    }
    let settlement = system_accounts::settlement(Currency::BTC);
    let net = || async {
        engine.account(settlement).await.unwrap().balance()
            + wallet_balance_of(engine, profile.wallet, Currency::BTC).await
    };
    assert_eq!(net().await, Decimal::ZERO);

    // `settle_withdrawal(cut, true, "tx-cut")`'s drive: record(processing, step 1, tx_hash),
    // settlement credit, [record(step 2) refused: journal full] -> 503.
    let cut = withdrawals[0].clone();
    let shard = engine.shard_of(cut.id.as_uuid());
    let mut recorded = cut.clone();
    (recorded.status, recorded.tx_hash) = (CryptoOpStatus::Processing, Some("tx-cut".into()));
    engine.journals().shard(shard).append(Record::CryptoOp(Box::new(recorded))).unwrap();
    let credit = AccountCommand::Credit { transfer: cut.id, amount: cut.asset_amount, currency: Currency::BTC };
    engine.accounts().command_on(settlement, credit, Some(shard)).await.unwrap();
    engine.journals().barrier().await.unwrap();

    for (n, other) in withdrawals[1..].iter().enumerate() {
        let settled = engine.settle_withdrawal(other.id, true, format!("tx-other-{n}")).await.unwrap();
        assert_eq!(settled.status, CryptoOpStatus::Completed);
    }
    let settled = engine.settle_withdrawal(cut.id, true, "tx-cut".into()).await.unwrap();
    assert_eq!(settled.status, CryptoOpStatus::Completed);
    assert_eq!(wallet_balance_of(engine, profile.wallet, Currency::BTC).await, dec!(5.5));
    assert_eq!(net().await, Decimal::ZERO, "the settlement account was credited twice for one withdrawal");
    harness.shutdown().await;
}

/// An order cut short while it runs (the journal refused the record after its first leg, the
/// fiat hold: the client hears `503`) stays `processing` at the quoted price, and recovery may
/// still drive it forward: its quote is used up. Before, it went back into the table as if
/// nothing had happened, and a second order under another key bought at the same price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cut_short_while_it_runs_uses_its_quote_up() {
    use sqlx::Connection;
    use tally_engine::crypto::{QuoteAmount, Side};
    let dir = std::env::temp_dir().join(format!("tally-order-cut-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let store: Arc<dyn Store> = Arc::new(tally_persistence::sqlite::SqliteStore::open(&url).await.unwrap());
    let mut config = EngineConfig::default();
    config.actors.shards = 1;
    let engine = Engine::start(store.clone(), config.clone()).await.unwrap();
    engine.set_fx_rate(Currency::BTC, Currency::USD, dec!(50000), None).await.unwrap();
    let owner = UserId::from_uuid(uuid::Uuid::new_v4());
    let account = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(tally_engine::TransferKind::AdminCredit, account.id, dec!(500), None, None, None).await.unwrap();
    engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    // Again with a journal of two waiting records: the order's first record and its first
    // leg's fill it (the writer has taken an earlier record and waits for the lock below),
    // so the record after that leg is refused.
    config.journal.admission_depth_max = 1;
    config.journal.depth_max = 2;
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let now = engine.now();
    let quote =
        engine.quote(owner, Side::Buy, Currency::BTC, Currency::USD, QuoteAmount::Fiat(dec!(100)), now).unwrap();

    // Nothing commits while this connection holds SQLite's write lock.
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
    let opening = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.open_account(owner, Currency::USD, Decimal::ZERO).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cut = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.place_order(owner, quote.id, account.id, None, now).await })
    };
    for _ in 0..500 {
        if engine.account(account.id).await.unwrap().held() > Decimal::ZERO {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.account(account.id).await.unwrap().held(), dec!(101.00), "the fiat hold was placed");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(30), cut).await.expect("answered").unwrap();
    assert!(matches!(cut, Err(tally_actors::CryptoError::Unavailable(_))), "{cut:?}");
    opening.await.unwrap().unwrap();
    engine.journals().barrier().await.unwrap();

    let again = engine.place_order(owner, quote.id, account.id, None, engine.now()).await;
    assert!(
        matches!(again, Err(tally_actors::CryptoError::Refused(ErrorCode::NotFound, _))),
        "the quote bought the order that was cut: {again:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One shard (so every record goes to one journal) whose writer lingers long enough for a
/// whole deposit saga to gather into one batch.
fn one_lingering_shard() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.actors.shards = 1;
    config.journal.linger = Duration::from_millis(400);
    config
}

/// Another writer commits one batch to `shard` behind the engine's back (the case the fence is
/// there for: ARCHITECTURE.md "The journals", "a gap, or a second writer"), so the engine's next
/// batch does not follow the committed sequence and is refused (`Corrupt`): its journal stops.
async fn another_writer_commits(store: &dyn Store, shard: u16) {
    let committed = store.committed_seqs().await.unwrap()[usize::from(shard)];
    let stranger = Account::open(
        AccountId::from_uuid(uuid::Uuid::new_v4()),
        None,
        Currency::USD,
        AccountKind::User,
        Decimal::ZERO,
        Timestamp::from_micros(1),
    );
    store
        .commit(shard, &[SequencedRecord { seq: committed + 1, record: Record::AccountOpened(Box::new(stranger)) }])
        .await
        .unwrap();
}

/// A journal that stopped while a batch was in flight kept that batch in `Queue::in_flight`
/// for ever (`Journal::writer_ended` dropped the queued entries, not the batches taken), and
/// `Journals::newest_pending` still read it. A deposit whose whole saga was in the refused
/// batch was then found by the custodian's retry (`deposit_claimed` looks in the journals
/// before the store) and answered "already credited", though the store never held it and
/// never will: the custodian would stop retrying and the coins never be credited (found by a
/// review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_in_a_batch_refused_when_its_journal_stopped_is_not_answered_as_credited() {
    let harness = Harness::start_with(one_lingering_shard()).await;
    let owner = harness.user();
    let (profile, _) = harness.engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    harness.engine.journals().barrier().await.unwrap();

    another_writer_commits(harness.store.as_ref(), 0).await;
    let first = harness
        .engine
        .deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-lost".into())
        .await;
    assert!(first.is_err(), "the deposit's batch was refused, so it was not answered: {first:?}");
    assert!(harness.engine.journals().has_failed(), "the refused batch stopped the journal");
    assert!(harness.store.deposit_by_tx_hash("tx-lost").await.unwrap().is_none(), "the store never held the deposit");

    // The custodian retries the same report.
    let retry = harness
        .engine
        .deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-lost".into())
        .await;
    if let Ok((op, _)) = &retry {
        assert!(
            harness.store.deposit_by_tx_hash("tx-lost").await.unwrap().is_some(),
            "the retry was answered with a deposit {:?} that is not durable and never will be",
            op.status
        );
    }
}

/// A withdrawal counted against its owner's limits whose first record was refused (its
/// journal full) moved nothing, yet its amount stayed counted until the next start (left
/// noted in an earlier review). It goes back now; a withdrawal that runs counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_whose_first_record_is_refused_gives_its_amount_back() {
    let mut config = EngineConfig::default();
    config.actors.shards = 1;
    // Room for a few queued records: the withdrawal is admitted (the admission bound is far),
    // and its first record finds the journal full while the store takes no commits.
    config.journal.depth_max = 256;
    config.journal.admission_depth_max = 1_000;
    let harness = Harness::start_with(config).await;
    let engine = &harness.engine;
    let owner = harness.user();
    let (profile, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    engine.deposit(DepositTarget::Address(profile.deposit_address.clone()), dec!(1), "tx-in".into()).await.unwrap();
    engine.limits().install(&[tally_persistence::users::limits::LevelLimits {
        level: tally_persistence::users::VerificationLevel::None,
        currency: Currency::BTC,
        limits: tally_engine::limits::UserLimits {
            per_transfer_max: None,
            daily_max: Some(dec!(10)),
            monthly_max: Some(dec!(100)),
        },
    }]);
    let used = |engine: &Engine| engine.limits().usage(owner, Currency::BTC, engine.now()).used_today;

    harness.store.set_commits_available(false);
    let openings = tally_tests::fill_journal(engine, owner).await;
    let refused = engine.withdraw(owner, profile.wallet, dec!(0.4), "bc1dest".into(), None).await;
    assert!(refused.is_err(), "its first record cannot be appended: {refused:?}");
    assert_eq!(used(engine), dec!(0), "the refused withdrawal's amount went back");
    harness.store.set_commits_available(true);
    for opening in openings {
        let _ = opening.await.unwrap();
    }
    let (withdrawal, _) = engine.withdraw(owner, profile.wallet, dec!(0.3), "bc1dest".into(), None).await.unwrap();
    assert_eq!(withdrawal.status, CryptoOpStatus::Pending);
    assert_eq!(used(engine), dec!(0.3), "a withdrawal that runs counts");
}
