//! The store conformance suite: what every `Store` must do, checked the same way for each.
//!
//! Each scenario drives a store only as production does, through the write-behind `Journal`
//! (records appended, then a barrier awaited), with records the engine itself makes: accounts
//! and wallets changed by `decide` then `apply`, transfers by `Transfer::start` and
//! `transition`. The scenario keeps those in-memory engine objects as the expected state and
//! checks every read of the store against them. `MemoryStore` is the reference: a store that
//! passes here answers every read as it does after the same commits.
//!
//! Scenarios use fresh random ids and filter list reads to their own ids, so they also pass on
//! a store that already holds other data (a shared test database). They panic on failure.

// Test support code: a failed unwrap or assertion is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tally_engine::transfer::{Beneficiary, Idempotency, SagaStep};
use tally_engine::{
    Account, AccountCommand, AccountId, AccountKind, AccountStatus, Currency, Direction, ErrorCode, PendingReason,
    Posting, Record, StatusAction, Timestamp, Transfer, TransferId, TransferKind, TransferRequest, TransferStatus,
    UserId, Wallet, WalletCommand, WalletId,
};
use tally_persistence::{Journal, JournalConfig, Journals, LiveHold, SequencedRecord, Store, StoreError};
use uuid::Uuid;

/// The journal's production settings, except a short linger: records appended together (with
/// no await between them) then reliably commit in one batch, which is what the scenarios that
/// test coalescing within a batch need.
pub fn journal_config() -> JournalConfig {
    JournalConfig { linger: Duration::from_millis(20), ..JournalConfig::default() }
}

/// An exact amount from its text: the scenarios never go through a float.
pub fn amount(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

/// An amount as the API shows it: at the currency's scale. Panics if that would drop a
/// significant digit, which would itself be a precision bug.
fn money(amount: Decimal, currency: Currency) -> String {
    assert!(amount.normalize().scale() <= currency.scale(), "{amount} has more decimals than {currency} allows");
    tally_engine::money::with_currency_scale(amount, currency).to_string()
}

fn new_id() -> Uuid {
    Uuid::new_v4()
}

/// An account as a store must give it back: every field, with the holds spelled out. Not
/// `Account` itself, because `Position` also keeps the short window of recent credits that
/// drops a repeated credit step, which is memory only and no store persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub id: AccountId,
    pub owner: Option<UserId>,
    pub currency: Currency,
    pub kind: AccountKind,
    pub status: AccountStatus,
    /// Amounts as text at the currency's scale: exact in value and digits (an 18-decimal ETH
    /// amount must keep all 18), blind only to how a store writes a zero (`0` or `0.00`),
    /// since the API always shows amounts at the currency's scale.
    pub balance: String,
    pub held: String,
    pub credit_limit: String,
    pub unlimited: bool,
    pub holds: Vec<(TransferId, String)>,
    /// Credits promised by an atomic batch's first phase and not yet landed or withdrawn.
    pub admitted: Vec<(TransferId, String)>,
    pub created_at: Timestamp,
}

impl AccountView {
    pub fn of(account: &Account) -> AccountView {
        AccountView {
            id: account.id,
            owner: account.owner,
            currency: account.currency,
            kind: account.kind,
            status: account.status,
            balance: money(account.position.balance, account.currency),
            held: money(account.position.held, account.currency),
            credit_limit: money(account.position.credit_limit, account.currency),
            unlimited: account.position.unlimited,
            holds: account
                .position
                .holds()
                .map(|(transfer, amount)| (transfer, money(amount, account.currency)))
                .collect(),
            admitted: account
                .position
                .admitted_credits()
                .map(|(transfer, amount)| (transfer, money(amount, account.currency)))
                .collect(),
            created_at: account.created_at,
        }
    }
}

/// A wallet as a store must give it back, assets in the order they first arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletView {
    pub id: WalletId,
    pub owner: UserId,
    pub status: AccountStatus,
    pub assets: Vec<AssetView>,
    pub created_at: Timestamp,
}

/// One asset of a wallet, amounts as text like `AccountView`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetView {
    pub asset: Currency,
    pub balance: String,
    pub held: String,
    pub holds: Vec<(TransferId, String)>,
}

impl WalletView {
    pub fn of(wallet: &Wallet) -> WalletView {
        WalletView {
            id: wallet.id,
            owner: wallet.owner,
            status: wallet.status,
            assets: wallet
                .assets
                .iter()
                .map(|(asset, position)| AssetView {
                    asset: *asset,
                    balance: money(position.balance, *asset),
                    held: money(position.held, *asset),
                    holds: position.holds().map(|(transfer, amount)| (transfer, money(amount, *asset))).collect(),
                })
                .collect(),
            created_at: wallet.created_at,
        }
    }
}

/// Drives a store through a journal and keeps the engine objects the records came from: the
/// state every read of the store is checked against.
pub struct Driver {
    pub store: Arc<dyn Store>,
    pub journals: Journals,
    pub journal: Journal,
    pub accounts: BTreeMap<AccountId, Account>,
    pub wallets: BTreeMap<WalletId, Wallet>,
    pub transfers: BTreeMap<TransferId, Transfer>,
    /// Every record appended, with its seq, in journal order.
    pub log: Vec<SequencedRecord>,
    /// The seq of the last record about each account, wallet or transfer: its `Loaded.seq`.
    pub last_seq: HashMap<Uuid, u64>,
    clock: i64,
}

impl Driver {
    /// Starts a journal over `store` (one shard, its writer on this test's runtime), numbering
    /// on from what the store has committed.
    pub async fn start(store: Arc<dyn Store>) -> Driver {
        let committed = store.open_shards(1).await.unwrap();
        let journals = Journals::new(&committed, journal_config(), Arc::new(tally_persistence::batch::now));
        let journal = journals.shard(0).clone();
        let writers = Arc::clone(&store).journal_writers(0).await.unwrap();
        tokio::spawn(journal.clone().run_writer(writers));
        Driver {
            store,
            journals,
            journal,
            accounts: BTreeMap::new(),
            wallets: BTreeMap::new(),
            transfers: BTreeMap::new(),
            log: Vec::new(),
            last_seq: HashMap::new(),
            clock: 1_700_000_000_000_000,
        }
    }

    /// A later time than any before: timestamps differ, so a mixed-up column shows.
    pub fn now(&mut self) -> Timestamp {
        self.clock += 1_000_003;
        Timestamp::from_micros(self.clock)
    }

    fn append(&mut self, key: Uuid, record: Record) -> u64 {
        let seq = self.journal.append(record.clone()).unwrap().seq;
        self.last_seq.insert(key, seq);
        self.log.push(SequencedRecord { seq, record });
        seq
    }

    /// Waits until every record appended so far is committed.
    pub async fn durable(&self) {
        self.journal.barrier().wait().await.unwrap();
    }

    /// Waits until the writer is idle, so the records appended next form one batch (with the
    /// suite's linger), and returns the count of batches committed so far.
    pub async fn settle(&self) -> u64 {
        self.durable().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.journal.stats().batches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Commits what was appended since `settle` returned `batches_before`, and checks it went
    /// as one batch: the premise of a scenario about coalescing within a batch.
    pub async fn durable_as_one_batch(&self, batches_before: u64) {
        self.durable().await;
        let batches = self.journal.stats().batches.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(batches, batches_before + 1, "the records appended together were committed in one batch");
    }

    pub fn last_seq_of(&self, id: Uuid) -> u64 {
        self.last_seq[&id]
    }

    /// The seq of the last record appended.
    pub fn last_appended(&self) -> u64 {
        self.log.last().map_or(0, |record| record.seq)
    }

    pub fn open_account(&mut self, currency: Currency, kind: AccountKind, credit_limit: Decimal) -> AccountId {
        let id = AccountId::from_uuid(new_id());
        let owner = (!kind.is_system()).then(|| UserId::from_uuid(new_id()));
        let account = Account::open(id, owner, currency, kind, credit_limit, self.now());
        self.accounts.insert(id, account.clone());
        self.append(id.as_uuid(), Record::AccountOpened(Box::new(account)));
        id
    }

    /// Decides and applies `command` on the account, as its actor would, and appends the record.
    /// Panics if the engine refuses or has nothing to do: the scenarios only send steps that
    /// change something.
    pub fn account(&mut self, id: AccountId, command: AccountCommand) -> u64 {
        let account = self.accounts.get_mut(&id).unwrap();
        let event = account
            .decide(&command)
            .unwrap_or_else(|rejection| panic!("{command:?} on {id} refused: {rejection:?}"))
            .unwrap_or_else(|| panic!("{command:?} on {id} changed nothing"));
        account.apply(&event).unwrap();
        let record = Record::Account { account: id, currency: account.currency, event, after: account.snapshot() };
        self.append(id.as_uuid(), record)
    }

    pub fn credit(&mut self, id: AccountId, transfer: TransferId, amount: Decimal) -> u64 {
        let currency = self.accounts[&id].currency;
        self.account(id, AccountCommand::Credit { transfer, amount, currency })
    }

    pub fn hold(&mut self, id: AccountId, transfer: TransferId, amount: Decimal) -> u64 {
        let currency = self.accounts[&id].currency;
        self.account(id, AccountCommand::Hold { transfer, amount, currency })
    }

    pub fn post(&mut self, id: AccountId, transfer: TransferId) -> u64 {
        self.account(id, AccountCommand::Post { transfer })
    }

    pub fn release(&mut self, id: AccountId, transfer: TransferId) -> u64 {
        self.account(id, AccountCommand::Release { transfer })
    }

    /// Moves `amount` from `source` to `destination` the way a saga does: hold, credit, post.
    pub fn move_money(&mut self, source: AccountId, destination: AccountId, transfer: TransferId, amount: Decimal) {
        self.hold(source, transfer, amount);
        self.credit(destination, transfer, amount);
        self.post(source, transfer);
    }

    pub fn open_wallet(&mut self) -> WalletId {
        let id = WalletId::from_uuid(new_id());
        let wallet = Wallet::open(id, UserId::from_uuid(new_id()), self.now());
        self.wallets.insert(id, wallet.clone());
        self.append(id.as_uuid(), Record::WalletOpened(Box::new(wallet)));
        id
    }

    pub fn wallet(&mut self, id: WalletId, command: WalletCommand) -> u64 {
        let wallet = self.wallets.get_mut(&id).unwrap();
        let event = wallet
            .decide(&command)
            .unwrap_or_else(|rejection| panic!("{command:?} on {id} refused: {rejection:?}"))
            .unwrap_or_else(|| panic!("{command:?} on {id} changed nothing"));
        wallet.apply(&event).unwrap();
        let record = Record::Wallet { wallet: id, after: wallet.snapshot(event.asset()), event };
        self.append(id.as_uuid(), record)
    }

    /// Starts a transfer as its saga would and records it.
    pub fn start_transfer(&mut self, request: TransferRequest) -> TransferId {
        self.start_transfer_keyed(request, None)
    }

    /// Starts a transfer under a caller's idempotency key (set at creation, as the engine does).
    pub fn start_transfer_keyed(&mut self, request: TransferRequest, key: Option<Idempotency>) -> TransferId {
        let mut transfer = Transfer::start(request);
        transfer.idempotency = key;
        let id = transfer.id;
        self.transfers.insert(id, transfer.clone());
        self.append(id.as_uuid(), Record::Transfer(Box::new(transfer)));
        id
    }

    /// Changes a transfer (a saga step, a transition) and records its new full state.
    pub fn update_transfer(&mut self, id: TransferId, change: impl FnOnce(&mut Transfer, Timestamp)) -> u64 {
        let now = self.now();
        let transfer = self.transfers.get_mut(&id).unwrap();
        change(transfer, now);
        let record = Record::Transfer(Box::new(transfer.clone()));
        self.append(id.as_uuid(), record)
    }

    pub fn step(&mut self, id: TransferId, step: SagaStep) -> u64 {
        self.update_transfer(id, |transfer, _| transfer.step = step)
    }

    pub fn transition(&mut self, id: TransferId, next: TransferStatus) -> u64 {
        self.update_transfer(id, |transfer, at| transfer.transition(next, at).unwrap())
    }

    /// A plain internal transfer request between two accounts of the driver.
    pub fn request(&mut self, source: AccountId, destination: AccountId, amount: Decimal) -> TransferRequest {
        TransferRequest {
            id: TransferId::from_uuid(new_id()),
            kind: TransferKind::Internal,
            source,
            destination,
            amount,
            currency: self.accounts.get(&source).map_or(Currency::USD, |account| account.currency),
            fee: Decimal::ZERO,
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: self.now(),
            metadata: Default::default(),
        }
    }

    /// Whether the store keeps transfer `id` as it stands: once it is final or pending, or
    /// once money moved for it (a posting). A saga still running that moved nothing is only
    /// in its journal (DESIGN.md §5: each fact written once).
    pub fn transfer_is_stored(&self, id: TransferId) -> bool {
        self.log.iter().any(|sequenced| match &sequenced.record {
            Record::Transfer(transfer) => {
                transfer.id == id && (transfer.status.is_terminal() || transfer.status == TransferStatus::Pending)
            }
            record => record.posting().is_some_and(|posting| posting.transfer == id),
        })
    }

    /// Checks every account, wallet and transfer of the driver against what the store reads.
    pub async fn assert_store_matches(&self) {
        for (id, expected) in &self.accounts {
            let loaded = self.store.load_account(*id).await.unwrap().unwrap_or_else(|| panic!("account {id} stored"));
            assert_eq!(AccountView::of(&loaded.value), AccountView::of(expected), "account {id} reads back");
            assert_eq!(loaded.seq, expected.position.version, "account {id} carries its last posting's version");
        }
        for (id, expected) in &self.wallets {
            let loaded = self.store.load_wallet(*id).await.unwrap().unwrap_or_else(|| panic!("wallet {id} stored"));
            assert_eq!(WalletView::of(&loaded.value), WalletView::of(expected), "wallet {id} reads back");
            assert_eq!(loaded.seq, self.last_seq_of(id.as_uuid()), "wallet {id} carries its last record's seq");
        }
        for (id, expected) in &self.transfers {
            let loaded = self.store.load_transfer(*id).await.unwrap();
            if !self.transfer_is_stored(*id) {
                assert!(loaded.is_none(), "transfer {id}: a running saga that moved nothing is not written yet");
                continue;
            }
            let loaded = loaded.unwrap_or_else(|| panic!("transfer {id} stored"));
            assert_eq!(&loaded.value, expected, "transfer {id} reads back as its latest state");
            assert_eq!(loaded.seq, self.last_seq_of(id.as_uuid()), "transfer {id} carries its last record's seq");
        }
        let all: BTreeMap<AccountId, AccountView> = self
            .store
            .all_accounts()
            .await
            .unwrap()
            .iter()
            .filter(|account| self.accounts.contains_key(&account.id))
            .map(|account| (account.id, AccountView::of(account)))
            .collect();
        let expected: BTreeMap<AccountId, AccountView> =
            self.accounts.iter().map(|(id, account)| (*id, AccountView::of(account))).collect();
        assert_eq!(all, expected, "all_accounts lists every account as load_account does");
        self.assert_postings_and_holds_match().await;
        self.assert_non_terminal_transfers_match().await;
    }

    /// `postings_of`, `postings_of_transfer`, `posting_sums` and `live_holds` against the log and
    /// the accounts.
    pub async fn assert_postings_and_holds_match(&self) {
        let postings: Vec<Posting> = self.log.iter().filter_map(|sequenced| sequenced.record.posting()).collect();
        for id in self.accounts.keys() {
            let expected: Vec<Posting> = postings.iter().filter(|posting| posting.account == *id).cloned().collect();
            assert_postings_eq(&self.store.postings_of(*id).await.unwrap(), &expected, &format!("postings of {id}"));
        }
        let transfers: BTreeSet<TransferId> = postings.iter().map(|posting| posting.transfer).collect();
        for transfer in transfers {
            let expected: Vec<Posting> =
                postings.iter().filter(|posting| posting.transfer == transfer).cloned().collect();
            let stored = self.store.postings_of_transfer(transfer).await.unwrap();
            assert_postings_eq(&stored, &expected, &format!("postings of transfer {transfer}"));
        }
        // Compared by value: an aggregate's scale is the database's business.
        let sums = self.store.posting_sums().await.unwrap();
        for id in self.accounts.keys() {
            let expected: Decimal =
                postings.iter().filter(|posting| posting.account == *id).map(Posting::signed_amount).sum();
            let stored = sums.get(id).copied().unwrap_or(Decimal::ZERO);
            assert_eq!(stored, expected, "posting_sums of {id}");
        }
        let mut live: Vec<(AccountId, TransferId, String)> = self
            .store
            .live_holds()
            .await
            .unwrap()
            .into_iter()
            .filter(|hold| self.accounts.contains_key(&hold.account))
            .map(|LiveHold { account, transfer, amount }| (account, transfer, amount.to_string()))
            .collect();
        live.sort();
        let mut expected: Vec<(AccountId, TransferId, String)> = self
            .accounts
            .values()
            .flat_map(|account| {
                account.position.holds().map(|(transfer, amount)| (account.id, transfer, amount.to_string()))
            })
            .collect();
        expected.sort();
        assert_eq!(live, expected, "live_holds lists exactly the holds not yet released or posted");
    }

    pub async fn assert_non_terminal_transfers_match(&self) {
        let mut stored: Vec<Transfer> = self
            .store
            .non_terminal_transfers()
            .await
            .unwrap()
            .into_iter()
            .filter(|transfer| self.transfers.contains_key(&transfer.id))
            .collect();
        stored.sort_by_key(|transfer| transfer.id);
        let expected: Vec<Transfer> = self
            .transfers
            .values()
            .filter(|transfer| !transfer.status.is_terminal() && self.transfer_is_stored(transfer.id))
            .cloned()
            .collect();
        assert_eq!(
            stored, expected,
            "non_terminal_transfers lists exactly the stored processing and pending transfers"
        );
    }

    /// Commits everything appended and stops the journal.
    pub async fn shutdown(&self) {
        self.journals.shutdown().await;
    }
}

/// Postings compared field by field, amounts as text so their scale must survive too.
fn assert_postings_eq(stored: &[Posting], expected: &[Posting], what: &str) {
    let view = |postings: &[Posting]| -> Vec<(TransferId, AccountId, Currency, Direction, String)> {
        postings
            .iter()
            .map(|posting| {
                (posting.transfer, posting.account, posting.currency, posting.direction, posting.amount.to_string())
            })
            .collect()
    };
    assert_eq!(view(stored), view(expected), "{what}, in journal order");
}

fn transfer_id() -> TransferId {
    TransferId::from_uuid(new_id())
}

/// (a) Accounts, holds, posts, releases, credits, status and credit-limit changes: each
/// account reads back as the engine's account after the same events, across several batches.
pub async fn accounts_round_trip(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let settlement = driver.open_account(Currency::USD, AccountKind::Settlement, Decimal::ZERO);
    let alice = driver.open_account(Currency::USD, AccountKind::User, Decimal::ZERO);
    let bob = driver.open_account(Currency::USD, AccountKind::User, amount("50.00"));
    let carol = driver.open_account(Currency::USD, AccountKind::User, Decimal::ZERO);
    driver.durable().await;
    driver.assert_store_matches().await;

    // Funding: the settlement account (unlimited) goes negative.
    let funding = transfer_id();
    driver.move_money(settlement, alice, funding, amount("100.00"));
    // Two holds on alice; one is posted, one released, and a third stays live.
    let (paid, released, live) = (transfer_id(), transfer_id(), transfer_id());
    driver.hold(alice, paid, amount("30.25"));
    driver.hold(alice, released, amount("20.00"));
    driver.durable().await;
    driver.assert_store_matches().await;

    driver.credit(bob, paid, amount("30.25"));
    driver.post(alice, paid);
    driver.release(alice, released);
    driver.hold(alice, live, amount("10.10"));
    // Bob spends into his credit line, which then grows.
    let overdraft = transfer_id();
    driver.hold(bob, overdraft, amount("70.00"));
    driver.account(bob, AccountCommand::SetCreditLimit { credit_limit: amount("75.00") });
    driver.account(carol, AccountCommand::SetStatus { action: StatusAction::Block });
    driver.durable().await;
    driver.assert_store_matches().await;

    driver.post(bob, overdraft);
    driver.account(carol, AccountCommand::SetStatus { action: StatusAction::Unblock });
    driver.account(carol, AccountCommand::SetStatus { action: StatusAction::Close });
    driver.durable().await;
    driver.assert_store_matches().await;

    assert_eq!(driver.accounts[&alice].balance(), amount("69.75"));
    assert_eq!(driver.accounts[&bob].balance(), amount("-39.75"), "bob is inside his credit line");
    assert_eq!(driver.accounts[&carol].status, AccountStatus::Closed);
    driver.shutdown().await;
}

/// (a, continued) Changes to rows that the batch before is still committing: a journal writer
/// with several connections commits the next batch while the one before it is in flight, and a
/// hold removed, a status or credit limit changed, or a transfer's state replaced must not miss
/// the row that batch is writing. Each round appends a large batch (so its commit takes a
/// while) and, once the writer has taken it, a small one that changes what it wrote.
pub async fn changes_to_rows_still_committing_land(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    for _ in 0..12 {
        driver.settle().await;
        let alice = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
        let bob = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
        for _ in 0..400 {
            driver.credit(alice, transfer_id(), amount("0.01"));
        }
        let (held, moved) = (transfer_id(), transfer_id());
        driver.hold(alice, held, amount("1.00"));
        let request = driver.request(alice, bob, amount("2.00"));
        let transfer = driver.start_transfer(request);
        driver.step(transfer, SagaStep::Held);
        driver.hold(alice, moved, amount("2.00"));
        driver.credit(bob, moved, amount("2.00"));
        // Just past the linger: the writer has taken the batch above and is committing it.
        tokio::time::sleep(journal_config().linger + Duration::from_millis(1)).await;
        driver.release(alice, held);
        driver.post(alice, moved);
        driver.step(transfer, SagaStep::Posted);
        driver.transition(transfer, TransferStatus::Completed);
        driver.account(bob, AccountCommand::SetCreditLimit { credit_limit: amount("10.00") });
        driver.account(alice, AccountCommand::SetStatus { action: StatusAction::Block });
    }
    driver.durable().await;
    driver.assert_store_matches().await;
    driver.shutdown().await;
}

/// (a, continued) A hold released and placed again for the same transfer: within one batch
/// (after a hold from an earlier batch) and across batches. The store keeps the new hold.
pub async fn holds_placed_again_round_trip(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let settlement = driver.open_account(Currency::EUR, AccountKind::Settlement, Decimal::ZERO);
    let account = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
    driver.move_money(settlement, account, transfer_id(), amount("100.00"));
    let (again, twice) = (transfer_id(), transfer_id());
    driver.hold(account, again, amount("5.00"));
    driver.hold(account, twice, amount("1.00"));
    driver.durable().await;
    driver.assert_store_matches().await;

    // In one batch: release the earlier hold and place it again with a new amount; place,
    // release and place another.
    let before = driver.settle().await;
    driver.release(account, again);
    driver.hold(account, again, amount("7.00"));
    driver.release(account, twice);
    driver.hold(account, twice, amount("2.00"));
    driver.release(account, twice);
    driver.hold(account, twice, amount("3.00"));
    driver.durable_as_one_batch(before).await;
    driver.assert_store_matches().await;

    // Across batches.
    driver.release(account, again);
    driver.durable().await;
    driver.hold(account, again, amount("8.00"));
    driver.durable().await;
    driver.assert_store_matches().await;
    assert_eq!(driver.accounts[&account].held(), amount("11.00"));
    driver.shutdown().await;
}

/// (b) An 18-decimal ETH amount and a 3-decimal KWD amount round-trip exactly, digit for digit
/// and scale for scale, through postings, balances, holds and transfers.
pub async fn exact_amounts_round_trip(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let eth_settlement = driver.open_account(Currency::ETH, AccountKind::Settlement, Decimal::ZERO);
    let eth = driver.open_account(Currency::ETH, AccountKind::User, Decimal::ZERO);
    let kwd_settlement = driver.open_account(Currency::KWD, AccountKind::Settlement, Decimal::ZERO);
    let kwd = driver.open_account(Currency::KWD, AccountKind::User, amount("0.001"));

    let one_wei_over = amount("1.000000000000000001");
    let large = amount("123456789.123456789012345678");
    driver.move_money(eth_settlement, eth, transfer_id(), one_wei_over);
    driver.move_money(eth_settlement, eth, transfer_id(), large);
    driver.move_money(eth, eth_settlement, transfer_id(), amount("0.000000000000000001"));
    driver.hold(eth, transfer_id(), amount("0.100000000000000009"));
    driver.move_money(kwd_settlement, kwd, transfer_id(), amount("1000.005"));
    driver.move_money(kwd, kwd_settlement, transfer_id(), amount("0.125"));
    driver.hold(kwd, transfer_id(), amount("999.881"));

    let mut request = driver.request(eth, eth_settlement, amount("0.000000000000000001"));
    request.fee = amount("0.000000000000000002");
    let transfer = driver.start_transfer(request);
    driver.update_transfer(transfer, |transfer, _| {
        transfer.fx_rate = Some(amount("3141.592653589793238462"));
        transfer.destination_amount = amount("3.141592653589793238");
        transfer.destination_currency = Currency::KWD;
    });
    driver.durable().await;
    driver.assert_store_matches().await;

    assert_eq!(driver.accounts[&eth].balance().to_string(), "123456790.123456789012345678");
    assert_eq!(driver.accounts[&kwd].balance().to_string(), "999.880");
    assert_eq!(driver.accounts[&kwd].available().unwrap(), Decimal::ZERO, "the KWD credit line is used to the fils");
    let postings = driver.store.postings_of(eth).await.unwrap();
    assert_eq!(postings[0].amount.to_string(), "1.000000000000000001");
    assert_eq!(postings[1].amount.to_string(), "123456789.123456789012345678");
    let stored = driver.store.load_account(eth).await.unwrap().unwrap().value;
    assert_eq!(stored.balance().to_string(), "123456790.123456789012345678");
    assert_eq!(stored.held().to_string(), "0.100000000000000009");
    driver.shutdown().await;
}

/// (c) Transfers: one updated several times in one batch, others across batches; each reads
/// back as its latest state, and `non_terminal_transfers` lists exactly the processing and
/// pending ones.
pub async fn transfers_round_trip(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let settlement = driver.open_account(Currency::GBP, AccountKind::Settlement, Decimal::ZERO);
    let source = driver.open_account(Currency::GBP, AccountKind::User, Decimal::ZERO);
    let destination = driver.open_account(Currency::GBP, AccountKind::User, Decimal::ZERO);
    driver.durable().await;

    // Every optional field set, on an external transfer.
    let mut request = driver.request(source, settlement, amount("12.34"));
    request.kind = TransferKind::External;
    request.fee = amount("0.50");
    request.reference = Some("INV-2024-001".into());
    request.description = Some("Rent, März ✓".into());
    request.beneficiary =
        Some(Beneficiary { name: "Zoë O'Brien".to_owned(), iban: "GB33BUKB20201555555555".to_owned() });
    request.initiated_by = Some(UserId::from_uuid(new_id()));
    // Metadata (migration 0050): JSON-significant characters and non-ASCII round-trip exactly,
    // through the new-row path (a binary COPY on Postgres) here and the upsert path below.
    request.metadata = tally_engine::Metadata::new(vec![
        ("order_id".to_owned(), "A-1 \"quoted\" \\ März ✓".to_owned()),
        ("a.b:c-d_e".to_owned(), "x".repeat(tally_engine::metadata::METADATA_VALUE_LENGTH_MAX)),
    ])
    .unwrap();
    let completed = driver.start_transfer(request);
    let request = driver.request(source, destination, amount("1.00"));
    let to_pending = driver.start_transfer(request);
    let mut request = driver.request(source, destination, amount("2.00"));
    request.metadata = tally_engine::Metadata::new(vec![("k".to_owned(), "v".to_owned())]).unwrap();
    let executed = driver.start_transfer(request);
    let request = driver.request(source, destination, amount("3.00"));
    let failed = driver.start_transfer(request);
    let request = driver.request(source, destination, amount("4.00"));
    let cancelled = driver.start_transfer(request);
    let request = driver.request(source, destination, amount("5.00"));
    let untouched = driver.start_transfer(request);
    driver.durable().await;
    driver.assert_store_matches().await;

    // Several states of one transfer in one batch: only the last may be read back.
    let before = driver.settle().await;
    driver.step(completed, SagaStep::Held);
    driver.step(completed, SagaStep::Credited);
    driver.step(completed, SagaStep::Posted);
    driver.transition(completed, TransferStatus::Completed);
    driver.step(to_pending, SagaStep::Held);
    driver.update_transfer(to_pending, |transfer, at| {
        transfer.transition(TransferStatus::Pending, at).unwrap();
        transfer.pending_reason = Some(PendingReason::AmlReview);
    });
    driver.durable_as_one_batch(before).await;
    driver.assert_store_matches().await;

    // Across batches. A transfer reaches `pending` after its hold, as a saga's does.
    driver.step(executed, SagaStep::Held);
    driver.update_transfer(executed, |transfer, at| {
        transfer.transition(TransferStatus::Pending, at).unwrap();
        transfer.pending_reason = Some(PendingReason::ManualExecution);
    });
    driver.durable().await;
    driver.assert_store_matches().await;
    driver.transition(executed, TransferStatus::Processing);
    driver.update_transfer(failed, |transfer, at| {
        transfer.transition(TransferStatus::Failed, at).unwrap();
        transfer.failure_reason = Some(ErrorCode::InsufficientFunds);
    });
    driver.step(cancelled, SagaStep::Held);
    driver.update_transfer(cancelled, |transfer, at| {
        transfer.transition(TransferStatus::Pending, at).unwrap();
        transfer.pending_reason = Some(PendingReason::ManualExecution);
    });
    driver.durable().await;
    driver.transition(cancelled, TransferStatus::Cancelled);
    driver.step(cancelled, SagaStep::Released);
    driver.durable().await;
    driver.assert_store_matches().await;

    let status = |id: TransferId| driver.transfers[&id].status;
    assert_eq!(status(completed), TransferStatus::Completed);
    assert_eq!(status(to_pending), TransferStatus::Pending);
    assert_eq!(status(executed), TransferStatus::Processing);
    assert_eq!(status(failed), TransferStatus::Failed);
    assert_eq!(status(cancelled), TransferStatus::Cancelled);
    assert_eq!(status(untouched), TransferStatus::Processing);
    assert!(driver.store.load_transfer(transfer_id()).await.unwrap().is_none(), "an unknown transfer reads as None");
    driver.shutdown().await;
}

/// (d) Postings of an account and of a transfer come back in journal order with their
/// directions and amounts; `live_holds` lists exactly the holds not yet released or posted, and
/// `live_admissions` the credit admissions not yet kept or withdrawn.
pub async fn postings_and_live_holds(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let settlement = driver.open_account(Currency::CHF, AccountKind::Settlement, Decimal::ZERO);
    let fees = driver.open_account(Currency::CHF, AccountKind::Fees, Decimal::ZERO);
    let alice = driver.open_account(Currency::CHF, AccountKind::User, Decimal::ZERO);
    let bob = driver.open_account(Currency::CHF, AccountKind::User, Decimal::ZERO);
    driver.move_money(settlement, alice, transfer_id(), amount("500.00"));
    driver.durable().await;

    // A transfer with a fee: one hold of amount + fee, two credits, one debit.
    let with_fee = transfer_id();
    driver.hold(alice, with_fee, amount("101.00"));
    driver.credit(bob, with_fee, amount("100.00"));
    driver.credit(fees, with_fee, amount("1.00"));
    driver.post(alice, with_fee);
    // Interleaved transfers, some left mid-saga.
    let (back, stuck, abandoned) = (transfer_id(), transfer_id(), transfer_id());
    driver.hold(bob, back, amount("40.00"));
    driver.hold(alice, stuck, amount("20.00"));
    driver.credit(alice, back, amount("40.00"));
    driver.hold(alice, abandoned, amount("5.00"));
    // Credits promised to bob (an atomic batch's first phase): one kept by its credit in a
    // later batch, one withdrawn, one still outstanding, and one kept within its own batch.
    let (kept, withdrawn, outstanding, quick) = (transfer_id(), transfer_id(), transfer_id(), transfer_id());
    for promised in [kept, withdrawn, outstanding, quick] {
        let admit = AccountCommand::AdmitCredit { transfer: promised, amount: amount("3.00"), currency: Currency::CHF };
        driver.account(bob, admit);
    }
    driver.credit(bob, quick, amount("3.00"));
    driver.durable().await;
    driver.assert_store_matches().await;
    driver.post(bob, back);
    driver.release(alice, abandoned);
    driver.credit(bob, kept, amount("3.00"));
    driver.account(bob, AccountCommand::WithdrawCredit { transfer: withdrawn });
    driver.durable().await;
    driver.assert_store_matches().await;

    let directions: Vec<(Direction, Decimal)> = driver
        .store
        .postings_of_transfer(with_fee)
        .await
        .unwrap()
        .iter()
        .map(|posting| (posting.direction, posting.amount))
        .collect();
    assert_eq!(
        directions,
        vec![
            (Direction::Credit, amount("100.00")),
            (Direction::Credit, amount("1.00")),
            (Direction::Debit, amount("101.00"))
        ],
        "the fee transfer's postings in journal order"
    );
    let live: Vec<LiveHold> = driver
        .store
        .live_holds()
        .await
        .unwrap()
        .into_iter()
        .filter(|hold| driver.accounts.contains_key(&hold.account))
        .collect();
    assert_eq!(live, vec![LiveHold { account: alice, transfer: stuck, amount: amount("20.00") }]);
    let promised: Vec<LiveHold> = driver
        .store
        .live_admissions()
        .await
        .unwrap()
        .into_iter()
        .filter(|admission| driver.accounts.contains_key(&admission.account))
        .collect();
    assert_eq!(promised, vec![LiveHold { account: bob, transfer: outstanding, amount: amount("3.00") }]);
    assert!(driver.store.postings_of(AccountId::from_uuid(new_id())).await.unwrap().is_empty());
    assert!(driver.store.postings_of_transfer(stuck).await.unwrap().is_empty(), "a hold is not a posting");
    driver.shutdown().await;
}

/// (e) `committed_seq` is the last appended seq; a batch that skips a seq, or repeats one, is
/// refused as `Corrupt` and changes nothing; the journal then carries on.
pub async fn committed_seq_and_gaps(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store.clone()).await;
    let settlement = driver.open_account(Currency::JPY, AccountKind::Settlement, Decimal::ZERO);
    let account = driver.open_account(Currency::JPY, AccountKind::User, Decimal::ZERO);
    driver.move_money(settlement, account, transfer_id(), amount("1000"));
    driver.durable().await;
    let committed = store.committed_seqs().await.unwrap()[0];
    assert_eq!(committed, driver.last_appended(), "committed_seq is the last seq appended");

    let stray = Account::open(
        AccountId::from_uuid(new_id()),
        None,
        Currency::JPY,
        AccountKind::User,
        Decimal::ZERO,
        Timestamp::from_micros(1),
    );
    let opened = |seq| SequencedRecord { seq, record: Record::AccountOpened(Box::new(stray.clone())) };
    let gap = store.commit(0, &[opened(committed + 2)]).await;
    assert!(matches!(gap, Err(StoreError::Corrupt(_))), "a batch after a gap is corrupt: {gap:?}");
    let gap = store.commit(0, &[opened(committed + 2), opened(committed + 3)]).await;
    assert!(matches!(gap, Err(StoreError::Corrupt(_))), "a longer batch after a gap is corrupt: {gap:?}");
    let repeat = store.commit(0, &[opened(committed)]).await;
    assert!(matches!(repeat, Err(StoreError::Corrupt(_))), "a batch repeating a seq is corrupt: {repeat:?}");
    // A batch of transfer rows alone: on Postgres one statement with no transaction around it
    // (`postgres/write_batch.rs`), whose fence must refuse it all the same, writing nothing.
    let mut final_state = Transfer::start(driver.request(settlement, account, amount("5")));
    final_state.transition(TransferStatus::Failed, Timestamp::from_micros(2)).unwrap();
    let stray_transfer = final_state.id;
    let transfer_record = |seq| SequencedRecord { seq, record: Record::Transfer(Box::new(final_state.clone())) };
    let gap = store.commit(0, &[transfer_record(committed + 2)]).await;
    assert!(matches!(gap, Err(StoreError::Corrupt(_))), "a transfer batch after a gap is corrupt: {gap:?}");
    let repeat = store.commit(0, &[transfer_record(committed)]).await;
    assert!(matches!(repeat, Err(StoreError::Corrupt(_))), "a transfer batch repeating a seq is corrupt: {repeat:?}");
    store.commit(0, &[]).await.unwrap();
    assert_eq!(store.committed_seqs().await.unwrap()[0], committed, "a refused batch leaves committed_seq alone");
    assert!(store.load_account(stray.id).await.unwrap().is_none(), "a refused batch writes nothing");
    assert!(store.load_transfer(stray_transfer).await.unwrap().is_none(), "a refused transfer batch writes nothing");
    driver.assert_store_matches().await;

    // The journal was not involved, so it carries on from where the store is.
    let next = driver.credit(account, transfer_id(), amount("1"));
    assert_eq!(next, committed + 1);
    driver.durable().await;
    assert_eq!(store.committed_seqs().await.unwrap()[0], committed + 1);
    driver.assert_store_matches().await;
    driver.shutdown().await;
}

/// (f) Wallets with two assets and holds round-trip: balances, holds and the order the assets
/// first arrived in, which later changes to the first asset must not reorder.
pub async fn wallets_round_trip(store: Arc<dyn Store>) {
    let mut driver = Driver::start(store).await;
    let wallet = driver.open_wallet();
    let other = driver.open_wallet();
    driver.durable().await;
    driver.assert_store_matches().await;

    let btc = |transfer, amount| WalletCommand::Credit { transfer, asset: Currency::BTC, amount };
    let eth = |transfer, amount| WalletCommand::Credit { transfer, asset: Currency::ETH, amount };
    driver.wallet(wallet, btc(transfer_id(), amount("1.50000000")));
    driver.wallet(wallet, eth(transfer_id(), amount("3.000000000000000001")));
    let (btc_paid, eth_live, btc_live, again) = (transfer_id(), transfer_id(), transfer_id(), transfer_id());
    driver.wallet(wallet, WalletCommand::Hold { transfer: eth_live, asset: Currency::ETH, amount: amount("2") });
    driver.wallet(wallet, WalletCommand::Hold { transfer: again, asset: Currency::ETH, amount: amount("0.5") });
    driver.wallet(other, eth(transfer_id(), amount("0.000000000000000001")));
    driver.durable().await;
    driver.assert_store_matches().await;

    // In one batch: BTC held and posted (it nets out), the ETH hold released and placed again.
    let before = driver.settle().await;
    driver.wallet(wallet, WalletCommand::Hold { transfer: btc_paid, asset: Currency::BTC, amount: amount("1") });
    driver.wallet(wallet, WalletCommand::Post { transfer: btc_paid, asset: Currency::BTC });
    driver.wallet(wallet, WalletCommand::Release { transfer: again, asset: Currency::ETH });
    driver.wallet(wallet, WalletCommand::Hold { transfer: again, asset: Currency::ETH, amount: amount("0.25") });
    driver.durable_as_one_batch(before).await;
    driver.assert_store_matches().await;

    driver.wallet(wallet, WalletCommand::SetStatus { action: StatusAction::Block });
    driver.wallet(wallet, WalletCommand::SetStatus { action: StatusAction::Unblock });
    // The last change goes to BTC, the first asset to arrive: it must stay first.
    driver.wallet(wallet, WalletCommand::Hold { transfer: btc_live, asset: Currency::BTC, amount: amount("0.2") });
    driver.wallet(other, WalletCommand::SetStatus { action: StatusAction::Block });
    driver.durable().await;
    driver.assert_store_matches().await;

    let stored = driver.store.load_wallet(wallet).await.unwrap().unwrap().value;
    let assets: Vec<Currency> = stored.assets.iter().map(|(asset, _)| *asset).collect();
    assert_eq!(assets, vec![Currency::BTC, Currency::ETH], "assets in the order they first arrived");
    let eth_position = stored.position(Currency::ETH).unwrap();
    assert_eq!(eth_position.balance.to_string(), "3.000000000000000001");
    assert_eq!(eth_position.held, amount("2.25"));
    assert!(driver.store.load_wallet(WalletId::from_uuid(new_id())).await.unwrap().is_none());
    driver.shutdown().await;
}

/// (f2) A wallet's assets can arrive through two shards' journals (a crypto operation's records
/// go to its own shard's journal, not the wallet's). Sequence numbers are per shard, so the
/// second journal's can be lower; the store still gives the assets back in the order they
/// first arrived, and later changes do not reorder them.
pub async fn wallet_assets_through_two_journals_keep_their_arrival_order(store: Arc<dyn Store>) {
    let committed = store.open_shards(2).await.unwrap();
    let journals = Journals::new(&committed, journal_config(), Arc::new(tally_persistence::batch::now));
    for shard in 0..2_u16 {
        let writers = Arc::clone(&store).journal_writers(shard).await.unwrap();
        tokio::spawn(journals.shard(shard).clone().run_writer(writers));
    }
    let (ahead, behind) = (journals.shard(0).clone(), journals.shard(1).clone());
    let now = Timestamp::from_micros(1_700_000_000_000_000);
    let id = WalletId::from_uuid(new_id());
    let mut wallet = Wallet::open(id, UserId::from_uuid(new_id()), now);
    ahead.append(Record::WalletOpened(Box::new(wallet.clone()))).unwrap();
    // The first journal's sequence runs ahead of the second's: other wallets open there.
    for _ in 0..5 {
        let other = Wallet::open(WalletId::from_uuid(new_id()), UserId::from_uuid(new_id()), now);
        ahead.append(Record::WalletOpened(Box::new(other))).unwrap();
    }
    let mut change = |asset, command: WalletCommand| {
        let event = wallet.decide(&command).unwrap().unwrap();
        wallet.apply(&event).unwrap();
        Record::Wallet { wallet: id, after: wallet.snapshot(asset), event }
    };
    let credit = |asset| WalletCommand::Credit { transfer: transfer_id(), asset, amount: amount("1") };
    let btc_seq = ahead.append(change(Some(Currency::BTC), credit(Currency::BTC))).unwrap().seq;
    ahead.barrier().wait().await.unwrap();
    let eth_seq = behind.append(change(Some(Currency::ETH), credit(Currency::ETH))).unwrap().seq;
    assert!(eth_seq < btc_seq, "the premise: the later asset has the lower sequence number");
    behind.barrier().wait().await.unwrap();
    // A later change to the first asset, through the second journal, must not reorder them.
    behind.append(change(Some(Currency::BTC), credit(Currency::BTC))).unwrap();
    behind.barrier().wait().await.unwrap();

    let stored = store.load_wallet(id).await.unwrap().unwrap().value;
    let assets: Vec<Currency> = stored.assets.iter().map(|(asset, _)| *asset).collect();
    assert_eq!(assets, vec![Currency::BTC, Currency::ETH], "assets in the order they first arrived");
    assert_eq!(stored.position(Currency::BTC).unwrap().balance, amount("2"));
}

/// (g) Restart: after the journal shuts down and the store is closed and opened again (the
/// same file or database), everything reads back, and a new journal numbers on from
/// `committed_seq`. `open` opens the same store each time it is called.
pub async fn restart<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut driver = Driver::start(open().await).await;
    let settlement = driver.open_account(Currency::ETH, AccountKind::Settlement, Decimal::ZERO);
    let alice = driver.open_account(Currency::ETH, AccountKind::User, Decimal::ZERO);
    let bob = driver.open_account(Currency::ETH, AccountKind::User, Decimal::ZERO);
    driver.move_money(settlement, alice, transfer_id(), amount("10.000000000000000001"));
    let request = driver.request(alice, bob, amount("4.5"));
    let pending = driver.start_transfer(request);
    driver.hold(alice, pending, amount("4.5"));
    driver.update_transfer(pending, |transfer, at| {
        transfer.step = SagaStep::Held;
        transfer.transition(TransferStatus::Pending, at).unwrap();
        transfer.pending_reason = Some(PendingReason::ManualExecution);
    });
    let wallet = driver.open_wallet();
    driver
        .wallet(wallet, WalletCommand::Credit { transfer: transfer_id(), asset: Currency::USDC, amount: amount("7") });
    driver.wallet(wallet, WalletCommand::Hold { transfer: pending, asset: Currency::USDC, amount: amount("0.000001") });
    // Shutdown commits what is still queued: no barrier before it.
    driver.shutdown().await;
    let last = driver.last_appended();

    // Close the store (the driver and the journal's writer held the only handles) and open it
    // again, with nothing of the old process but the expected state.
    let Driver { store, journals, journal, accounts, wallets, transfers, log, last_seq, clock } = driver;
    drop((journals, journal));
    drop(store);
    let store = open().await;
    assert_eq!(store.committed_seqs().await.unwrap()[0], last, "everything appended before shutdown is durable");
    let mut driver = Driver { accounts, wallets, transfers, log, last_seq, clock, ..Driver::start(store).await };
    driver.assert_store_matches().await;

    // A new journal numbers on from committed_seq.
    let next = driver.post(alice, pending);
    assert_eq!(next, last + 1, "numbering continues after a restart");
    driver.credit(bob, pending, amount("4.5"));
    driver.transition(pending, TransferStatus::Processing);
    driver.transition(pending, TransferStatus::Completed);
    driver.durable().await;
    driver.assert_store_matches().await;
    assert_eq!(driver.store.committed_seqs().await.unwrap()[0], last + 4);
    driver.shutdown().await;
}

/// Pricing configuration (FX rates, fee rules, transfer-type settings): every field comes back
/// exactly (18-decimal rates and tier bounds included), and a save with the same key replaces.
pub async fn pricing_round_trips(store: Arc<dyn Store>) {
    use tally_engine::fees::{FeeKind, FeeRule, FeeTier};
    use tally_engine::{Currency, ExecutionMode, FxRate, Timestamp, TransferKind, TransferTypeSettings};
    use tally_persistence::PricingChange;

    let exact = |text: &str| Decimal::from_str_exact(text).unwrap();
    assert_eq!(store.load_pricing().await.unwrap(), tally_persistence::PricingTables::default());
    let rate = FxRate {
        from: Currency::ETH,
        to: Currency::USD,
        rate: exact("3000.123456789012345678"),
        updated_at: Timestamp(1_700_000_000_000_001),
    };
    let rule = FeeRule {
        id: Uuid::from_u128(0x51),
        name: "tiers, \"quoted\"; and; commas".to_owned(),
        transfer_type: TransferKind::External,
        currency: Currency::ETH,
        kind: FeeKind::Tiered,
        flat_amount: None,
        percentage: None,
        min_fee: Some(exact("0.000000000000000001")),
        max_fee: Some(exact("5.000000000000000000")),
        tiers: vec![
            FeeTier { up_to: Some(exact("1.000000000000000001")), flat_amount: Some(exact("0.001")), percentage: None },
            FeeTier { up_to: None, flat_amount: None, percentage: Some(exact("0.0125")) },
        ],
        enabled: true,
        created_at: Timestamp(1),
        updated_at: Timestamp(2),
    };
    let settings = TransferTypeSettings {
        enabled: false,
        execution_mode: ExecutionMode::Manual,
        min_amount: Some(exact("0.000000000000000001")),
        max_amount: None,
        // The largest time to expiry there is (the column's CHECK bound) round-trips.
        pending_timeout_secs: Some(2_592_000),
    };
    store.save_pricing(&PricingChange::FxRate(rate.clone()), None).await.unwrap();
    store.save_pricing(&PricingChange::FeeRule(rule.clone()), None).await.unwrap();
    store.save_pricing(&PricingChange::TransferType(TransferKind::Internal, settings.clone()), None).await.unwrap();
    let loaded = store.load_pricing().await.unwrap();
    assert_eq!(loaded.fx_rates, vec![rate.clone()]);
    assert_eq!(loaded.fee_rules, vec![rule.clone()]);
    assert_eq!(loaded.fee_rules[0].tiers[0].up_to.unwrap().to_string(), "1.000000000000000001");
    assert_eq!(loaded.transfer_types, vec![(TransferKind::Internal, settings)]);

    // Same keys again: replaced, not added.
    let rate = FxRate { rate: exact("2999.5"), updated_at: Timestamp(3), ..rate };
    let rule =
        FeeRule { enabled: false, tiers: Vec::new(), kind: FeeKind::Flat, flat_amount: Some(exact("1")), ..rule };
    let settings = TransferTypeSettings {
        enabled: true,
        execution_mode: ExecutionMode::Auto,
        min_amount: None,
        max_amount: Some(exact("10")),
        // Replaced by none: pending transfers of the type never expire again.
        pending_timeout_secs: None,
    };
    store.save_pricing(&PricingChange::FxRate(rate.clone()), None).await.unwrap();
    store.save_pricing(&PricingChange::FeeRule(rule.clone()), None).await.unwrap();
    store.save_pricing(&PricingChange::TransferType(TransferKind::Internal, settings.clone()), None).await.unwrap();
    let loaded = store.load_pricing().await.unwrap();
    assert_eq!(loaded.fx_rates, vec![rate]);
    assert_eq!(loaded.fee_rules, vec![rule]);
    assert_eq!(loaded.transfer_types, vec![(TransferKind::Internal, settings)]);
}

/// The idempotency key is part of a transfer's full state: a record without it leaves the
/// stored row without it. A transfer refused as unavailable gives its key back that way
/// (actors' saga.rs `give_key_back`) so that a retry under the key runs afresh. Its saga made
/// no posting, so its row is written new; a row written earlier (here: pending ones) is
/// updated, in a large batch and in a small one (Postgres writes those two differently).
pub async fn a_key_given_back_is_free_again(store: Arc<dyn Store>) {
    const LARGE: usize = 20;
    let mut driver = Driver::start(Arc::clone(&store)).await;
    let source = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
    let destination = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
    let caller = new_id();
    let key_of = |index: usize| format!("given-back-{index}");
    let keyed = |driver: &mut Driver, index: usize| {
        let request = driver.request(source, destination, amount("1.00"));
        let key =
            Idempotency { scope: caller, key: key_of(index).into(), fingerprint: format!("print-{index}").into() };
        let id = driver.start_transfer_keyed(request, Some(key));
        driver.step(id, SagaStep::Held);
        id
    };
    let end_without_key = |driver: &mut Driver, id: TransferId, status: TransferStatus| {
        driver.update_transfer(id, |transfer, at| {
            transfer.step = SagaStep::Released;
            transfer.transition(status, at).unwrap();
            transfer.idempotency = None;
        });
    };

    // As the saga does it: started, held, released and failed, its key given back.
    let refused = keyed(&mut driver, 0);
    driver.update_transfer(refused, |transfer, _| transfer.failure_reason = Some(tally_engine::ErrorCode::Overloaded));
    end_without_key(&mut driver, refused, TransferStatus::Failed);
    driver.durable().await;

    // Rows written first (pending), then ended without their keys: all but the last in one
    // batch, then the last alone.
    let pending: Vec<TransferId> = (1..=LARGE)
        .map(|index| {
            let id = keyed(&mut driver, index);
            driver.transition(id, TransferStatus::Pending);
            id
        })
        .collect();
    driver.durable().await;
    for index in 1..=LARGE {
        assert!(store.transfer_by_idempotency(caller, &key_of(index)).await.unwrap().is_some(), "key {index}");
    }
    let before = driver.settle().await;
    for id in &pending[..LARGE - 1] {
        end_without_key(&mut driver, *id, TransferStatus::Cancelled);
    }
    driver.durable_as_one_batch(before).await;
    let before = driver.settle().await;
    end_without_key(&mut driver, pending[LARGE - 1], TransferStatus::Cancelled);
    driver.durable_as_one_batch(before).await;

    driver.assert_store_matches().await;
    for index in 0..=LARGE {
        let found = store.transfer_by_idempotency(caller, &key_of(index)).await.unwrap();
        assert!(found.is_none(), "key {index} was given back, yet it finds {found:?}");
    }
    assert!(store.idempotency_keys_after(None, 100).await.unwrap().is_empty(), "no key is held");

    // A new transfer under a key given back commits and is found by it.
    let again = keyed(&mut driver, 1);
    driver.transition(again, TransferStatus::Pending);
    driver.durable().await;
    let found = store.transfer_by_idempotency(caller, &key_of(1)).await.unwrap().map(|loaded| loaded.value.id);
    assert_eq!(found, Some(again));
    driver.assert_store_matches().await;
}

/// Idempotency keys find their transfers, scoped to their caller, when many are asked at once
/// (the Postgres store answers concurrent questions together in one query: key_lookups.rs).
pub async fn idempotency_keys_find_their_transfers(store: Arc<dyn Store>) {
    const KEYED: usize = 300;
    let mut driver = Driver::start(Arc::clone(&store)).await;
    let source = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
    let destination = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
    let (caller, other_caller) = (new_id(), new_id());
    let key_of = |index: usize| format!("order-{index} ✓ \"quoted\" #{index}");
    let mut expected = Vec::new();
    for index in 0..KEYED {
        let request = driver.request(source, destination, amount("1.00"));
        let key =
            Idempotency { scope: caller, key: key_of(index).into(), fingerprint: format!("print-{index}").into() };
        let id = driver.start_transfer_keyed(request, Some(key));
        // A later state of the transfer, one the store keeps (held, then awaiting review):
        // the look-up must answer with it.
        driver.step(id, SagaStep::Held);
        driver.transition(id, TransferStatus::Pending);
        expected.push(id);
    }
    // The same key string under another caller names another transfer.
    let request = driver.request(source, destination, amount("2.00"));
    let key = Idempotency { scope: other_caller, key: key_of(0).into(), fingerprint: "other".into() };
    let others = driver.start_transfer_keyed(request, Some(key));
    driver.transition(others, TransferStatus::Pending);
    driver.durable().await;

    // Every keyed transfer, each asked twice, interleaved with keys nobody used and with the
    // right key under the wrong caller: all at once.
    let mut questions: Vec<(Uuid, String, Option<TransferId>)> = Vec::new();
    for (index, id) in expected.iter().enumerate() {
        questions.push((caller, key_of(index), Some(*id)));
        questions.push((caller, format!("never-used-{index}"), None));
        questions.push((caller, key_of(index), Some(*id)));
        questions.push((new_id(), key_of(index), None));
    }
    questions.push((other_caller, key_of(0), Some(others)));
    questions.push((other_caller, key_of(1), None));
    let answers = futures::future::join_all(questions.iter().map(|(scope, key, _)| {
        let store = Arc::clone(&store);
        let key = key.clone();
        let scope = *scope;
        async move { store.transfer_by_idempotency(scope, &key).await }
    }))
    .await;
    for ((scope, key, expected), answer) in questions.iter().zip(answers) {
        let found = answer.unwrap_or_else(|error| panic!("look-up of {key:?} failed: {error}"));
        let found_id = found.as_ref().map(|loaded| loaded.value.id);
        assert_eq!(found_id, *expected, "key {key:?} of caller {scope}");
        if let Some(loaded) = found {
            let idempotency = loaded.value.idempotency.expect("a transfer found by its key carries the key");
            assert_eq!((idempotency.scope, &*idempotency.key), (*scope, key.as_str()));
            assert_eq!(loaded.seq, driver.last_seq_of(loaded.value.id.as_uuid()), "the newest stored state");
        }
    }

    // Every key, listed in pages (the engine's start-up read into its key filter): each once.
    // The order is the store's own (a database's text collation need not be byte order).
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.idempotency_keys_after(after.take(), 7).await.unwrap();
        assert!(page.len() <= 7);
        listed.extend(page.iter().cloned());
        if page.len() < 7 {
            break;
        }
        after = page.last().cloned();
    }
    let mut wanted: Vec<(Uuid, String)> = (0..KEYED).map(|index| (caller, key_of(index))).collect();
    wanted.push((other_caller, key_of(0)));
    assert_eq!(listed.len(), wanted.len(), "every key once");
    let listed: std::collections::HashSet<_> = listed.into_iter().collect();
    assert_eq!(listed, wanted.into_iter().collect(), "exactly the keys transfers were made under");
}

/// A store tells its own committed batch from another writer's over the same sequence
/// numbers by the batch's hash-chain link (`Store::holds_batch`, `JournalWriter::holds`): the
/// journal asks it before it takes a committed sequence at or past a batch whose answer was
/// lost for proof that the batch is in. `can_tell`: the SQL stores can; the in-memory one has
/// no other writer and answers yes.
pub async fn a_batch_is_known_by_its_own_link(store: Arc<dyn Store>, can_tell: bool) {
    let committed = store.open_shards(1).await.unwrap()[0];
    let opened = |seq| {
        let account = Account::open(
            AccountId::from_uuid(new_id()),
            None,
            Currency::USD,
            AccountKind::User,
            Decimal::ZERO,
            Timestamp::from_micros(1),
        );
        vec![SequencedRecord { seq, record: Record::AccountOpened(Box::new(account)) }]
    };
    let now = Timestamp::from_micros(2);
    let ours = tally_persistence::batch::DirectCommits::default().plan(0, &opened(committed + 1), now);
    let theirs = tally_persistence::batch::DirectCommits::default().plan(0, &opened(committed + 1), now);
    store.commit_plan(&ours).await.unwrap();
    assert!(store.holds_batch(&ours).await.unwrap(), "the store holds the batch it committed");
    assert_eq!(store.holds_batch(&theirs).await.unwrap(), !can_tell, "another batch over the same numbers");
    for mut writer in store.clone().journal_writers(0).await.unwrap() {
        assert!(writer.holds(&ours).await.unwrap(), "a journal writer sees the batch as the store's");
        assert_eq!(writer.holds(&theirs).await.unwrap(), !can_tell);
    }
}
