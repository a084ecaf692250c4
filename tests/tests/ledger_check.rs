//! `tally check` (`tally_persistence::check`) against corrupt ledgers: each state below is
//! built on every store (memory, SQLite, Postgres) through the write-behind journal, with
//! records as the engine makes them (`tally_tests::conformance::Driver`), and the check must
//! name it. And a realistic healthy ledger, made by the engine itself (internal, fee, FX,
//! pending external, executed, rejected, failed, crypto deposit, withdrawal, buy, sell), must
//! pass with no violation at all.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{DepositTarget, Engine, EngineConfig};
use tally_engine::crypto::{QuoteAmount, Side};
use tally_engine::transfer::SagaStep;
use tally_engine::{
    AccountEvent, AccountKind, CryptoOpStatus, Currency, Record, TransferId, TransferKind, TransferStatus, UserId,
    WalletCommand, WalletEvent,
};
use tally_persistence::check::{Violation, check};
use tally_persistence::sqlite::SqliteStore;
use tally_persistence::{MemoryStore, Store};
use tally_tests::conformance::{Driver, amount};

/// A SQLite database file of one test, deleted with its directory when the test ends.
struct TempDb {
    dir: PathBuf,
}

impl TempDb {
    fn new(test: &str) -> TempDb {
        TempDb { dir: std::env::temp_dir().join(format!("tally-ledger-check-{test}-{}", uuid::Uuid::new_v4())) }
    }

    async fn open(&self) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", self.dir.join("ledger.db").display());
        Arc::new(SqliteStore::open(&url).await.unwrap())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn complete(driver: &mut Driver, id: TransferId) {
    driver.step(id, SagaStep::Held);
    driver.step(id, SagaStep::Credited);
    driver.step(id, SagaStep::Posted);
    driver.transition(id, TransferStatus::Completed);
}

/// A settlement account and two funded users of USD (100.00 each), every transfer complete.
fn funded(driver: &mut Driver) -> (tally_engine::AccountId, tally_engine::AccountId, tally_engine::AccountId) {
    let usd = driver.open_account(Currency::USD, AccountKind::Settlement, Decimal::ZERO);
    let alice = driver.open_account(Currency::USD, AccountKind::User, Decimal::ZERO);
    let bob = driver.open_account(Currency::USD, AccountKind::User, Decimal::ZERO);
    for user in [alice, bob] {
        let fund = driver.request(usd, user, amount("100.00"));
        let fund = driver.start_transfer(fund);
        driver.move_money(usd, user, fund, amount("100.00"));
        complete(driver, fund);
    }
    (usd, alice, bob)
}

/// Makes what was appended durable, checks the store, stops the journal.
async fn violations(driver: &Driver) -> Vec<Violation> {
    driver.durable().await;
    let (_, violations) = check(driver.store.as_ref()).await.unwrap();
    driver.shutdown().await;
    violations
}

// ---- the corrupt states ------------------------------------------------------------------------

/// A transfer recorded `completed` with no postings at all.
async fn completed_without_postings(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let lost = d.request(alice, bob, amount("10.00"));
    let lost = d.start_transfer(lost);
    complete(&mut d, lost);
    let found = violations(&d).await;
    assert!(
        found.iter().any(|v| matches!(v, Violation::TransferPostingsMismatch { transfer, found, .. }
            if *transfer == lost && found.is_empty())),
        "{found:#?}"
    );
}

/// A completed transfer whose postings balance but move another amount than its own.
async fn completed_with_other_amount(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let short = d.request(alice, bob, amount("10.00"));
    let short = d.start_transfer(short);
    d.move_money(alice, bob, short, amount("9.00"));
    complete(&mut d, short);
    let found = violations(&d).await;
    assert!(
        found.iter().any(|v| matches!(v, Violation::TransferPostingsMismatch { transfer, .. } if *transfer == short)),
        "{found:#?}"
    );
    assert_eq!(found.len(), 1, "balanced, and nothing else wrong: {found:#?}");
}

/// A transfer recorded `failed` whose money moved.
async fn failed_that_moved_money(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let failed = d.request(alice, bob, amount("2.00"));
    let failed = d.start_transfer(failed);
    d.move_money(alice, bob, failed, amount("2.00"));
    d.transition(failed, TransferStatus::Failed);
    let found = violations(&d).await;
    assert!(
        found.contains(&Violation::EndedTransferMoved {
            transfer: failed,
            status: TransferStatus::Failed,
            postings: 2
        }),
        "{found:#?}"
    );
}

/// One transfer's debit and another's credit: each transfer unbalanced, the ledger balanced.
async fn legs_under_the_wrong_transfer(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let x = d.request(alice, bob, amount("5.00"));
    let x = d.start_transfer(x);
    let y = d.request(alice, bob, amount("5.00"));
    let y = d.start_transfer(y);
    d.hold(alice, x, amount("5.00"));
    d.post(alice, x);
    d.credit(bob, y, amount("5.00"));
    complete(&mut d, x);
    complete(&mut d, y);
    let found = violations(&d).await;
    for (transfer, sum) in [(x, amount("-5.00")), (y, amount("5.00"))] {
        assert!(
            found.contains(&Violation::TransferUnbalanced { transfer, currency: Currency::USD, sum }),
            "{transfer}: {found:#?}"
        );
    }
    assert!(!found.iter().any(|v| matches!(v, Violation::CurrencyNotBalanced { .. })), "{found:#?}");
}

/// A USD account with a posting in EUR.
async fn posting_in_another_currency(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let usd = d.open_account(Currency::USD, AccountKind::Settlement, Decimal::ZERO);
    let alice = d.open_account(Currency::USD, AccountKind::User, Decimal::ZERO);
    let t = d.request(usd, alice, amount("7.00"));
    let t = d.start_transfer(t);
    d.hold(usd, t, amount("7.00"));
    let event = AccountEvent::Credited { transfer: t, amount: amount("7.00"), admitted: false };
    let account = d.accounts.get_mut(&alice).unwrap();
    account.apply(&event).unwrap();
    let record = Record::Account { account: alice, currency: Currency::EUR, event, after: account.snapshot() };
    d.journal.append(record).unwrap();
    d.post(usd, t);
    complete(&mut d, t);
    let found = violations(&d).await;
    assert!(
        found.contains(&Violation::PostingCurrency {
            account: alice,
            transfer: t,
            account_currency: Currency::USD,
            posting: Currency::EUR
        }),
        "{found:#?}"
    );
}

/// Postings under an id that is no transfer and no crypto operation.
async fn postings_of_nothing(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let nothing = TransferId::from_uuid(uuid::Uuid::new_v4());
    d.move_money(alice, bob, nothing, amount("3.00"));
    let found = violations(&d).await;
    assert_eq!(found, vec![Violation::OrphanPosting { transfer: nothing }]);
}

/// A pending transfer whose source's hold is gone (an undo cut between its release and its
/// outcome, with no deadline to expire it), and one whose hold is short of amount plus fee.
async fn pending_without_its_hold(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let (_, alice, bob) = funded(&mut d);
    let gone = d.request(alice, bob, amount("30.00"));
    let gone = d.start_transfer(gone);
    d.hold(alice, gone, amount("30.00"));
    d.step(gone, SagaStep::Held);
    d.transition(gone, TransferStatus::Pending);
    d.release(alice, gone);
    let short = d.request(alice, bob, amount("20.00"));
    let short = d.start_transfer(short);
    d.hold(alice, short, amount("15.00"));
    d.step(short, SagaStep::Held);
    d.transition(short, TransferStatus::Pending);
    let found = violations(&d).await;
    assert!(
        found.contains(&Violation::PendingNotHeld {
            transfer: gone,
            source: alice,
            held: None,
            expected: amount("30.00")
        }),
        "{found:#?}"
    );
    assert!(
        found.contains(&Violation::PendingNotHeld {
            transfer: short,
            source: alice,
            held: Some(amount("15.00")),
            expected: amount("20.00")
        }),
        "{found:#?}"
    );
}

/// A wallet hold that belongs to no crypto operation.
async fn wallet_hold_of_nothing(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let btc = d.open_account(Currency::BTC, AccountKind::Settlement, Decimal::ZERO);
    let wallet = d.open_wallet();
    let deposit = TransferId::from_uuid(uuid::Uuid::new_v4());
    d.hold(btc, deposit, amount("1"));
    d.wallet(wallet, WalletCommand::Credit { transfer: deposit, asset: Currency::BTC, amount: amount("1") });
    d.post(btc, deposit);
    let orphan = TransferId::from_uuid(uuid::Uuid::new_v4());
    d.wallet(wallet, WalletCommand::Hold { transfer: orphan, asset: Currency::BTC, amount: amount("0.5") });
    let found = violations(&d).await;
    assert!(
        found.contains(&Violation::OrphanWalletHold { wallet, asset: Currency::BTC, transfer: orphan }),
        "{found:#?}"
    );
}

/// A wallet asset whose stored balance is not the sum of its postings: a record whose figures
/// after the change disagree with the change. (The in-memory store keeps no figures of its own
/// to disagree: it applies the change, so only the SQL stores can hold this state.)
async fn wallet_balance_not_its_postings(store: Arc<dyn Store>) {
    let mut d = Driver::start(store).await;
    let btc = d.open_account(Currency::BTC, AccountKind::Settlement, Decimal::ZERO);
    let wallet = d.open_wallet();
    let deposit = TransferId::from_uuid(uuid::Uuid::new_v4());
    d.hold(btc, deposit, amount("1"));
    let event = WalletEvent::Credited { transfer: deposit, asset: Currency::BTC, amount: amount("1") };
    let stored = d.wallets.get_mut(&wallet).unwrap();
    stored.apply(&event).unwrap();
    let mut after = stored.snapshot(event.asset());
    if let Some(asset) = after.asset.as_mut() {
        asset.balance = amount("2");
    }
    d.journal.append(Record::Wallet { wallet, event, after }).unwrap();
    d.post(btc, deposit);
    let found = violations(&d).await;
    assert!(
        found.contains(&Violation::WalletBalanceNotPostings {
            wallet,
            asset: Currency::BTC,
            balance: amount("2"),
            postings: amount("1")
        }),
        "{found:#?}"
    );
}

macro_rules! on_every_store {
    (memory: [$($scenario:ident),* $(,)?], sql: [$($sql_scenario:ident),* $(,)?] $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(std::sync::Arc::new(tally_persistence::MemoryStore::new())).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $sql_scenario() {
                    let db = super::TempDb::new(stringify!($sql_scenario));
                    super::$sql_scenario(db.open().await).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $sql_scenario() {
                    let (store, _) = tally_tests::postgres::fresh_store("ledger_check").await;
                    super::$sql_scenario(store).await;
                }
            )*
        }
    };
}

on_every_store!(
    memory: [
        completed_without_postings,
        completed_with_other_amount,
        failed_that_moved_money,
        legs_under_the_wrong_transfer,
        posting_in_another_currency,
        postings_of_nothing,
        pending_without_its_hold,
        wallet_hold_of_nothing,
        a_healthy_ledger_has_no_violation,
    ],
    sql: [
        completed_without_postings,
        completed_with_other_amount,
        failed_that_moved_money,
        legs_under_the_wrong_transfer,
        posting_in_another_currency,
        postings_of_nothing,
        pending_without_its_hold,
        wallet_hold_of_nothing,
        wallet_balance_not_its_postings,
        a_healthy_ledger_has_no_violation,
    ],
);

// ---- a healthy ledger --------------------------------------------------------------------------

/// Everything the engine does, on `store`, then stopped: the check finds nothing.
async fn a_healthy_ledger_has_no_violation(store: Arc<dyn Store>) {
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_uuid(uuid::Uuid::new_v4());
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let carol = engine.open_account(owner, Currency::EUR, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(1000), None, None, None).await.unwrap();

    // Internal, then with a fee, then FX (with the fee too).
    let plain = engine.transfer(tally_tests::internal_request(&engine, &alice, &bob, dec!(10))).await.unwrap();
    assert_eq!(plain.status, TransferStatus::Completed);
    let rule = tally_engine::FeeRule {
        id: uuid::Uuid::nil(),
        name: "flat".to_owned(),
        transfer_type: TransferKind::Internal,
        currency: Currency::USD,
        kind: tally_engine::FeeKind::Flat,
        flat_amount: Some(dec!(0.5)),
        percentage: None,
        min_fee: None,
        max_fee: None,
        tiers: Vec::new(),
        enabled: true,
        created_at: tally_engine::Timestamp::default(),
        updated_at: tally_engine::Timestamp::default(),
    };
    engine.create_fee_rule(engine.new_transfer_id().as_uuid(), rule, None).await.unwrap();
    let with_fee = engine.transfer(tally_tests::internal_request(&engine, &alice, &bob, dec!(20))).await.unwrap();
    assert_eq!((with_fee.status, with_fee.fee), (TransferStatus::Completed, dec!(0.50)));
    engine.set_fx_rate(Currency::USD, Currency::EUR, dec!(0.9), None).await.unwrap();
    let fx = engine.transfer(tally_tests::internal_request(&engine, &alice, &carol, dec!(100))).await.unwrap();
    assert_eq!(fx.status, TransferStatus::Completed);
    assert!(fx.is_fx(), "{fx:?}");

    // External transfers wait pending: one executed, one rejected, one left pending.
    let external = |amount| {
        let mut request = tally_tests::internal_request(&engine, &alice, &alice, amount);
        request.kind = TransferKind::External;
        request.destination = tally_engine::system_accounts::settlement(Currency::USD);
        request
    };
    let mut pending = Vec::new();
    for amount in [dec!(5), dec!(6), dec!(7)] {
        let transfer = engine.transfer(external(amount)).await.unwrap();
        assert_eq!(transfer.status, TransferStatus::Pending);
        pending.push(transfer.id);
    }
    assert_eq!(engine.execute(pending[0]).await.unwrap().status, TransferStatus::Completed);
    assert_eq!(engine.reject(pending[1]).await.unwrap().status, TransferStatus::Rejected);

    // A transfer refused at its destination: recorded failed, nothing moved.
    let missing = tally_engine::Account { id: tally_engine::AccountId::from_u128(42), ..bob.clone() };
    assert!(engine.transfer(tally_tests::internal_request(&engine, &alice, &missing, dec!(1))).await.is_err());

    // Crypto: a deposit, a withdrawal confirmed, one failed, one left pending, a buy and a sell.
    let (wallet, _) = engine.open_customer_wallet(owner, Currency::BTC).await.unwrap();
    engine.deposit(DepositTarget::Wallet(wallet.wallet), dec!(1), "tx-in".into()).await.unwrap();
    let (confirmed, _) = engine.withdraw(owner, wallet.wallet, dec!(0.1), "bc1out".into(), None).await.unwrap();
    let confirmed = engine.settle_withdrawal(confirmed.id, true, "tx-out".into()).await.unwrap();
    assert_eq!(confirmed.status, CryptoOpStatus::Completed);
    let (refused, _) = engine.withdraw(owner, wallet.wallet, dec!(0.1), "bc1out".into(), None).await.unwrap();
    let refused = engine.settle_withdrawal(refused.id, false, "tx-none".into()).await.unwrap();
    assert_eq!(refused.status, CryptoOpStatus::Failed);
    let (waiting, _) = engine.withdraw(owner, wallet.wallet, dec!(0.2), "bc1out".into(), None).await.unwrap();
    assert_eq!(waiting.status, CryptoOpStatus::Pending);
    engine.set_fx_rate(Currency::BTC, Currency::USD, dec!(50000), None).await.unwrap();
    let now = engine.now();
    let buy = engine.quote(owner, Side::Buy, Currency::BTC, Currency::USD, QuoteAmount::Fiat(dec!(100)), now).unwrap();
    let (buy, _) = engine.place_order(owner, buy.id, alice.id, None, now).await.unwrap();
    assert_eq!(buy.status, CryptoOpStatus::Completed);
    let now = engine.now();
    let sell =
        engine.quote(owner, Side::Sell, Currency::BTC, Currency::USD, QuoteAmount::Crypto(dec!(0.1)), now).unwrap();
    let (sell, _) = engine.place_order(owner, sell.id, bob.id, None, now).await.unwrap();
    assert_eq!(sell.status, CryptoOpStatus::Completed);

    engine.journals().barrier().await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    let (summary, violations) = check(store.as_ref()).await.unwrap();
    assert_eq!(violations, Vec::new(), "a healthy ledger");
    assert_eq!(summary.pending_transfers, 1, "{summary:?}");
    assert!(summary.holds >= 1, "the pending transfer's hold: {summary:?}");
}

/// The same healthy ledger, also while the engine still runs (the tests' `assert_ledger_consistent`
/// checks a running engine after a barrier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_engine_ledger_has_no_violation_while_it_runs() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_uuid(uuid::Uuid::new_v4());
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(10), None, None, None).await.unwrap();
    engine.journals().barrier().await.unwrap();
    let (_, violations) = check(store.as_ref() as &dyn Store).await.unwrap();
    assert_eq!(violations, Vec::new());
    engine.shutdown(Duration::from_secs(5)).await;
}
