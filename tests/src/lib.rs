//! Shared harness for Tally's black-box tests: start an engine on a store, fund accounts,
//! and check the ledger's invariants against what the store holds.

// Test support code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod clock;
pub mod cluster;
pub mod conformance;
pub mod http;
pub mod mfa;
pub mod model;
pub mod postgres;
pub mod server;
pub mod smtp;
pub mod statements;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tally_actors::{Engine, EngineConfig};
use tally_engine::system_accounts;
use tally_engine::{Account, Currency, Transfer, TransferKind, TransferRequest, UserId};
use tally_persistence::{MemoryStore, Store};

pub struct Harness {
    pub engine: Engine,
    pub store: Arc<MemoryStore>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(EngineConfig::default()).await
    }

    pub async fn start_with(config: EngineConfig) -> Harness {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::start(store.clone(), config).await.expect("engine starts");
        Harness { engine, store }
    }

    /// `start_with` on a clock the test moves forward (pending expiry).
    pub async fn start_clocked(config: EngineConfig, clock: Arc<crate::clock::ShiftedClock>) -> Harness {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::start_with(store.clone(), config, clock, Arc::new(tally_actors::RandomIds))
            .await
            .expect("engine starts");
        Harness { engine, store }
    }

    pub fn user(&self) -> UserId {
        UserId::from_uuid(uuid::Uuid::new_v4())
    }

    pub async fn open(&self, currency: Currency) -> Account {
        self.engine.open_account(self.user(), currency, Decimal::ZERO).await.expect("account opens")
    }

    /// Credits `amount` to `account` from the settlement account (an admin adjustment).
    pub async fn fund(&self, account: &Account, amount: Decimal) -> Transfer {
        self.engine
            .adjust(TransferKind::AdminCredit, account.id, amount, None, Some("funding".to_owned()), None)
            .await
            .expect("funding succeeds")
    }

    pub fn request(&self, source: &Account, destination: &Account, amount: Decimal) -> TransferRequest {
        internal_request(&self.engine, source, destination, amount)
    }

    pub async fn balance(&self, account: &Account) -> Decimal {
        self.engine.account(account.id).await.expect("account readable").balance()
    }

    /// Opens USD accounts until one lives on runtime thread `thread`.
    pub async fn open_on_thread(&self, thread: usize) -> Account {
        loop {
            let account = self.open(Currency::USD).await;
            if self.engine.thread_of(account.id.as_uuid()) == thread {
                return account;
            }
        }
    }

    /// Makes `account` busy: its runtime thread is occupied for `busy_for` and `messages`
    /// reads are sent to it meanwhile, which fill a mailbox of that capacity. Returns once
    /// they are queued; the handles end once the thread has served them.
    pub async fn make_busy(
        &self,
        account: &Account,
        messages: usize,
        busy_for: Duration,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let thread = self.engine.thread_of(account.id.as_uuid());
        let (asleep, sleeping) = tokio::sync::oneshot::channel();
        assert!(self.engine.runtime().run_on(thread, move || {
            let _ = asleep.send(());
            std::thread::sleep(busy_for);
        }));
        sleeping.await.expect("the thread is occupied");
        let readers = (0..messages)
            .map(|_| {
                let engine = self.engine.clone();
                let id = account.id;
                tokio::spawn(async move {
                    let _ = engine.account(id).await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        readers
    }

    /// Waits until everything appended is durable, then checks the store: every currency's
    /// balances sum to zero, every balance equals its postings, every `held` equals its holds,
    /// and no user account is below its credit limit. Returns the per-currency sums checked.
    pub async fn assert_ledger_consistent(&self) -> BTreeMap<Currency, Decimal> {
        self.engine.journals().barrier().await.expect("journal durable");
        assert_store_consistent(self.store.as_ref()).await
    }

    pub async fn shutdown(self) {
        self.engine.shutdown(Duration::from_secs(5)).await;
    }
}

/// The invariants of DESIGN.md §3 and §5 over what a store holds, checked by the same code as
/// `tally check`. Returns the per-currency sums checked.
/// An internal transfer of `amount` from `source` to `destination`, in the source's currency,
/// with no fee and no initiator (the engine's own request, as an admin tool makes it).
/// Waits until `account`'s actor has passivated (its next use loads it from the store),
/// sweeping idle actors by hand: the engine must run with an idle timeout of zero.
pub async fn passivate(engine: &Engine, account: tally_engine::AccountId) {
    let accounts = Arc::clone(engine.accounts());
    for _ in 0..500 {
        accounts.sweep_idle();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if !accounts.is_live(account) {
            return;
        }
    }
    panic!("{account} did not passivate");
}

pub fn internal_request(engine: &Engine, source: &Account, destination: &Account, amount: Decimal) -> TransferRequest {
    let now = engine.now();
    TransferRequest {
        id: engine.new_transfer_id_at(now),
        kind: TransferKind::Internal,
        source: source.id,
        destination: destination.id,
        amount,
        currency: source.currency,
        fee: Decimal::ZERO,
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: None,
        created_at: now,
        metadata: Default::default(),
    }
}

pub async fn assert_store_consistent(store: &dyn Store) -> BTreeMap<Currency, Decimal> {
    let (summary, violations) = tally_persistence::check::check(store).await.expect("store readable");
    assert!(violations.is_empty(), "ledger invariants violated: {violations:#?}");
    assert!(summary.accounts > 0, "the check looked at accounts");
    let accounts = store.all_accounts().await.expect("accounts readable");
    assert!(
        accounts.iter().any(|account| account.id == system_accounts::settlement(Currency::USD)),
        "system accounts exist from the start"
    );
    summary.currencies
}

/// Fills shard 0's journal while its store takes no commits (the caller turned them off):
/// account openings are appended one at a time until the journal has no room, so the next
/// record is refused. One at a time because openings started together may all go into the one
/// batch the writer is retrying, leaving the queue with room for ever. Answers the openings,
/// to await once commits are back.
pub async fn fill_journal(
    engine: &Engine,
    owner: UserId,
) -> Vec<tokio::task::JoinHandle<Result<Account, tally_actors::EngineError>>> {
    let mut openings = Vec::new();
    while engine.journals().shard(0).has_room() {
        assert!(openings.len() < 100_000, "the journal never filled");
        let engine = engine.clone();
        openings.push(tokio::spawn(async move { engine.open_account(owner, Currency::USD, Decimal::ZERO).await }));
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    openings
}
