//! Property tests of the ledger invariants. Random histories of funding, transfers (some in the
//! wrong currency, some to blocked or closed accounts), holds left pending and later executed,
//! cancelled or rejected, and status changes run over a few accounts in two currencies, through
//! the pure engine API exactly as an actor would drive it: `decide`, then `apply` the event.
//!
//! A transfer is the saga of the actors: source Hold, destination Credit (if refused: source
//! Release), source Post, then the fee's Credit to the fees account. After every operation the
//! tests check that money is conserved per currency, that no user overdraws, that holds add up,
//! and that each completed transfer's postings balance.

// The ledger helpers outside `#[test]` use `expect`/`panic!` to stop on a broken saga step; a
// panic there is a failed property, which proptest reports and shrinks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_engine::posting::check_balanced;
use tally_engine::rejection::{CreditRejection, HoldRejection};
use tally_engine::system_accounts::{self, all_system_accounts};
use tally_engine::{
    Account, AccountCommand, AccountEvent, AccountId, AccountKind, AccountRejection, CreateTransferRejection, Currency,
    Direction, ExecutionMode, PendingReason, Posting, StatusAction, StatusRejection, Timestamp, Transfer, TransferId,
    TransferKind, TransferRequest, TransferStatus, TransferTypeSettings, UserId,
};

/// Two currencies of different scales, so that amounts valid in one are over-precise in the other.
const CURRENCIES: [Currency; 2] = [Currency::USD, Currency::JPY];
const USERS: usize = 6;
/// Users first, then settlement and fees of each currency.
const ACCOUNTS: usize = USERS + 2 * CURRENCIES.len();

// ---------------------------------------------------------------------------------------------
// Histories
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Money enters from outside: settlement -> user (an admin credit).
    Fund { to: usize, amount: Decimal },
    /// Money leaves: user -> settlement (an external transfer, manual by default, so it waits).
    Withdraw { from: usize, amount: Decimal },
    /// User -> user. `wrong_currency` asks for the other currency than the source's.
    Transfer { from: usize, to: usize, amount: Decimal, fee: Decimal, wrong_currency: bool, manual: bool },
    /// An admin executes the `pick`-th pending transfer (modulo their number).
    Execute { pick: usize },
    /// The `pick`-th pending transfer is cancelled by its user, or rejected by an admin.
    Undo { pick: usize, reject: bool },
    /// Block, unblock or close any account, system accounts included (which must refuse).
    SetStatus { account: usize, action: StatusAction },
}

#[derive(Clone, Debug)]
struct History {
    credit_limits: Vec<Decimal>,
    ops: Vec<Op>,
}

/// Amounts biased toward the interesting: zero, negatives, small values with cents, whole
/// values in the range of the credit limits, powers of ten on both sides of the currency's
/// scale and maximum, and occasionally a large arbitrary one.
fn amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        2 => Just(Decimal::ZERO),
        1 => (1_i64..=100).prop_map(|cents| -Decimal::new(cents, 2)),
        4 => (1_i64..=2_000).prop_map(|cents| Decimal::new(cents, 2)),
        4 => (1_i64..=150).prop_map(Decimal::from),
        2 => (0_u32..=13).prop_map(|exponent| Decimal::from(10_i64.pow(exponent))),
        1 => (1_u32..=3).prop_map(|exponent| Decimal::new(1, exponent)),
        1 => (1_i64..=1_000_000_000).prop_map(|cents| Decimal::new(cents, 2)),
    ]
}

/// Mostly no fee; sometimes a small one; rarely a negative or over-precise one.
fn fee() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        6 => Just(Decimal::ZERO),
        2 => (1_i64..=500).prop_map(|cents| Decimal::new(cents, 2)),
        1 => (1_i64..=5).prop_map(Decimal::from),
        1 => Just(dec!(-0.01)),
        1 => Just(dec!(0.001)),
    ]
}

fn credit_limit() -> impl Strategy<Value = Decimal> {
    prop_oneof![2 => Just(Decimal::ZERO), 3 => (0_i64..=100).prop_map(Decimal::from)]
}

fn status_action() -> impl Strategy<Value = StatusAction> {
    prop_oneof![4 => Just(StatusAction::Block), 4 => Just(StatusAction::Unblock), 1 => Just(StatusAction::Close)]
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    prop_oneof![
        3 => (user.clone(), amount()).prop_map(|(to, amount)| Op::Fund { to, amount }),
        1 => (user.clone(), amount()).prop_map(|(from, amount)| Op::Withdraw { from, amount }),
        6 => (user.clone(), user, amount(), fee(), prop::bool::weighted(0.1), prop::bool::weighted(0.3)).prop_map(
            |(from, to, amount, fee, wrong_currency, manual)| Op::Transfer { from, to, amount, fee, wrong_currency, manual }
        ),
        2 => any::<usize>().prop_map(|pick| Op::Execute { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, reject)| Op::Undo { pick, reject }),
        2 => (0..ACCOUNTS, status_action()).prop_map(|(account, action)| Op::SetStatus { account, action }),
    ]
}

fn history() -> impl Strategy<Value = History> {
    (prop::collection::vec(credit_limit(), USERS), prop::collection::vec(op(), 1..80))
        .prop_map(|(credit_limits, ops)| History { credit_limits, ops })
}

// ---------------------------------------------------------------------------------------------
// The ledger: accounts driven through decide/apply, with the saga of the actors
// ---------------------------------------------------------------------------------------------

/// How often each outcome happened, to prove the histories exercise every path.
#[derive(Clone, Debug, Default)]
struct Outcomes {
    invalid_requests: usize,
    source_refusals: BTreeMap<&'static str, usize>,
    destination_refusals: BTreeMap<&'static str, usize>,
    completed: usize,
    completed_with_fee: usize,
    left_pending: usize,
    executed: usize,
    undone: usize,
    status_changes: usize,
    status_refusals: usize,
}

struct Ledger {
    accounts: Vec<Account>,
    /// The accounts as first opened, to replay the journal onto.
    opened: Vec<Account>,
    /// Every applied event with the index of its account, in order: what recovery replays.
    journal: Vec<(usize, AccountEvent)>,
    transfers: Vec<Transfer>,
    postings: BTreeMap<TransferId, Vec<Posting>>,
    /// Balances as a plain model computes them from completed transfers alone.
    model_balances: Vec<Decimal>,
    outcomes: Outcomes,
    clock: i64,
    next_transfer: u128,
}

fn hold_reason(rejection: &HoldRejection) -> &'static str {
    match rejection {
        HoldRejection::NotActive { .. } => "not_active",
        HoldRejection::CurrencyMismatch { .. } => "currency_mismatch",
        HoldRejection::InsufficientFunds { .. } => "insufficient_funds",
        HoldRejection::Overflow => "overflow",
    }
}

fn credit_reason(rejection: &CreditRejection) -> &'static str {
    match rejection {
        CreditRejection::NotActive { .. } => "not_active",
        CreditRejection::CurrencyMismatch { .. } => "currency_mismatch",
        CreditRejection::Overflow => "overflow",
    }
}

impl Ledger {
    fn open(credit_limits: &[Decimal]) -> Ledger {
        let created_at = Timestamp::from_micros(0);
        let mut accounts: Vec<Account> = credit_limits
            .iter()
            .enumerate()
            .map(|(index, credit_limit)| {
                let number = u128::try_from(index).unwrap();
                Account::open(
                    AccountId::from_u128(0x1000 + number),
                    Some(UserId::from_u128(0x2000 + number)),
                    CURRENCIES[index % CURRENCIES.len()],
                    AccountKind::User,
                    *credit_limit,
                    created_at,
                )
            })
            .collect();
        accounts.extend(all_system_accounts(created_at).into_iter().filter(|account| {
            CURRENCIES.contains(&account.currency)
                && matches!(account.kind, AccountKind::Settlement | AccountKind::Fees)
        }));
        assert_eq!(accounts.len(), ACCOUNTS);
        Ledger {
            opened: accounts.clone(),
            model_balances: vec![Decimal::ZERO; accounts.len()],
            accounts,
            journal: Vec::new(),
            transfers: Vec::new(),
            postings: BTreeMap::new(),
            outcomes: Outcomes::default(),
            clock: 0,
            next_transfer: 0,
        }
    }

    fn index_of(&self, id: AccountId) -> usize {
        self.accounts.iter().position(|account| account.id == id).expect("a known account")
    }

    fn system(&self, kind: AccountKind, currency: Currency) -> usize {
        self.index_of(system_accounts::system_account_id(kind, currency))
    }

    fn now(&mut self) -> Timestamp {
        self.clock += 1;
        Timestamp::from_micros(self.clock)
    }

    /// One command on one account, as its actor runs it: decide, and apply what was decided.
    fn step(&mut self, index: usize, command: AccountCommand) -> Result<Option<AccountEvent>, AccountRejection> {
        let account = &mut self.accounts[index];
        let decided = account.decide(&command)?;
        if let Some(event) = &decided {
            account.apply(event).expect("an event decide accepted applies without overflow");
            if let Some(posting) = Posting::from_event(account.id, account.currency, event) {
                self.postings.entry(posting.transfer).or_default().push(posting);
            }
            self.journal.push((index, event.clone()));
        }
        Ok(decided)
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Fund { to, amount } => {
                let currency = self.accounts[*to].currency;
                let settlement = self.system(AccountKind::Settlement, currency);
                let settings = TransferTypeSettings::adjustment_default();
                self.start(TransferKind::AdminCredit, settlement, *to, *amount, Decimal::ZERO, currency, &settings);
            }
            Op::Withdraw { from, amount } => {
                let currency = self.accounts[*from].currency;
                let settlement = self.system(AccountKind::Settlement, currency);
                let settings = TransferTypeSettings::external_default();
                self.start(TransferKind::External, *from, settlement, *amount, Decimal::ZERO, currency, &settings);
            }
            Op::Transfer { from, to, amount, fee, wrong_currency, manual } => {
                let own = self.accounts[*from].currency;
                let currency = if *wrong_currency { other_currency(own) } else { own };
                let execution_mode = if *manual { ExecutionMode::Manual } else { ExecutionMode::Auto };
                let settings = TransferTypeSettings { execution_mode, ..TransferTypeSettings::internal_default() };
                self.start(TransferKind::Internal, *from, *to, *amount, *fee, currency, &settings);
            }
            Op::Execute { pick } => {
                let Some(position) = self.pending(*pick) else { return };
                let mut transfer = self.transfers[position].clone();
                let now = self.now();
                transfer.transition(TransferStatus::Processing, now).expect("pending -> processing");
                self.outcomes.executed += 1;
                self.transfers[position] = self.complete(transfer);
            }
            Op::Undo { pick, reject } => {
                let Some(position) = self.pending(*pick) else { return };
                let mut transfer = self.transfers[position].clone();
                let source = self.index_of(transfer.source);
                let released = self.step(source, AccountCommand::Release { transfer: transfer.id });
                let total = transfer.total_debited().unwrap();
                assert_eq!(released, Ok(Some(AccountEvent::Released { transfer: transfer.id, amount: total })));
                let outcome = if *reject { TransferStatus::Rejected } else { TransferStatus::Cancelled };
                let now = self.now();
                transfer.transition(outcome, now).expect("pending -> rejected or cancelled");
                self.outcomes.undone += 1;
                self.transfers[position] = transfer;
            }
            Op::SetStatus { account, action } => {
                let result = self.step(*account, AccountCommand::SetStatus { action: *action });
                let target = &self.accounts[*account];
                match result {
                    Ok(Some(_)) => self.outcomes.status_changes += 1,
                    Ok(None) => {}
                    Err(AccountRejection::Status(StatusRejection::SystemAccount)) => {
                        assert!(target.kind.is_system(), "only system accounts answer SystemAccount");
                        self.outcomes.status_refusals += 1;
                    }
                    Err(AccountRejection::Status(StatusRejection::NotEmpty { balance, held })) => {
                        assert_eq!((balance, held), (target.balance(), target.held()));
                        assert!(!balance.is_zero() || target.position.has_holds(), "an empty account must close");
                        self.outcomes.status_refusals += 1;
                    }
                    Err(AccountRejection::Status(StatusRejection::Closed)) => self.outcomes.status_refusals += 1,
                    Err(other) => panic!("a status change answered {other:?}"),
                }
            }
        }
    }

    /// The index in `transfers` of the `pick`-th pending transfer, if any is pending.
    fn pending(&self, pick: usize) -> Option<usize> {
        let pending: Vec<usize> = (0..self.transfers.len())
            .filter(|index| self.transfers[*index].status == TransferStatus::Pending)
            .collect();
        (!pending.is_empty()).then(|| pending[pick % pending.len()])
    }

    /// Validates the request, then runs saga step 2 (the hold), then either stops pending or
    /// goes on to complete the transfer.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        kind: TransferKind,
        source: usize,
        destination: usize,
        amount: Decimal,
        fee: Decimal,
        currency: Currency,
        settings: &TransferTypeSettings,
    ) {
        self.next_transfer += 1;
        let request = TransferRequest {
            id: TransferId::from_u128(self.next_transfer),
            kind,
            source: self.accounts[source].id,
            destination: self.accounts[destination].id,
            amount,
            currency,
            fee,
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: self.now(),
            metadata: Default::default(),
        };
        let request = match request.validate(settings) {
            Ok(request) => request,
            Err(rejection) => {
                // Only request-alone reasons can come out of validation.
                assert!(
                    matches!(
                        rejection,
                        CreateTransferRejection::InvalidAmount(_)
                            | CreateTransferRejection::InvalidFee
                            | CreateTransferRejection::SameAccount
                    ),
                    "validation answered {rejection:?}"
                );
                self.outcomes.invalid_requests += 1;
                return;
            }
        };
        let mut transfer = Transfer::start(request);
        let total = transfer.total_debited().expect("validated amounts add up");
        let hold = AccountCommand::Hold { transfer: transfer.id, amount: total, currency: transfer.currency };
        match self.step(source, hold) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the first hold of a new transfer cannot be a repeat"),
            Err(AccountRejection::Hold(rejection)) => {
                if let HoldRejection::InsufficientFunds { available, requested } = &rejection {
                    assert_eq!(*requested, total);
                    assert_eq!(Ok(*available), self.accounts[source].available());
                    assert!(requested > available);
                }
                *self.outcomes.source_refusals.entry(hold_reason(&rejection)).or_default() += 1;
                let now = self.now();
                transfer.transition(TransferStatus::Failed, now).expect("processing -> failed");
                self.transfers.push(transfer);
                return;
            }
            Err(other) => panic!("a hold answered {other:?}"),
        }
        if settings.execution_mode == ExecutionMode::Manual {
            let now = self.now();
            transfer.transition(TransferStatus::Pending, now).expect("processing -> pending");
            transfer.pending_reason = Some(PendingReason::ManualExecution);
            self.outcomes.left_pending += 1;
            self.transfers.push(transfer);
            return;
        }
        let transfer = self.complete(transfer);
        self.transfers.push(transfer);
    }

    /// Saga step 3 onwards for a held transfer: credit the destination; if it refuses, release
    /// the hold and fail; otherwise post the hold and credit the fee.
    fn complete(&mut self, mut transfer: Transfer) -> Transfer {
        let source = self.index_of(transfer.source);
        let destination = self.index_of(transfer.destination);
        let total = transfer.total_debited().unwrap();
        let credit = AccountCommand::Credit {
            transfer: transfer.id,
            amount: transfer.destination_amount,
            currency: transfer.destination_currency,
        };
        match self.step(destination, credit) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the first credit of a transfer cannot be a repeat"),
            Err(AccountRejection::Credit(rejection)) => {
                *self.outcomes.destination_refusals.entry(credit_reason(&rejection)).or_default() += 1;
                let released = self.step(source, AccountCommand::Release { transfer: transfer.id });
                assert_eq!(released, Ok(Some(AccountEvent::Released { transfer: transfer.id, amount: total })));
                let now = self.now();
                transfer.transition(TransferStatus::Failed, now).expect("processing -> failed");
                return transfer;
            }
            Err(other) => panic!("a credit answered {other:?}"),
        }
        // The source may have been blocked since the hold; posting a placed hold must still work.
        let posted = self.step(source, AccountCommand::Post { transfer: transfer.id });
        assert_eq!(posted, Ok(Some(AccountEvent::Posted { transfer: transfer.id, amount: total })));
        self.model_balances[source] -= total;
        self.model_balances[destination] += transfer.destination_amount;
        if !transfer.fee.is_zero() {
            let fees = self.system(AccountKind::Fees, transfer.currency);
            let credit =
                AccountCommand::Credit { transfer: transfer.id, amount: transfer.fee, currency: transfer.currency };
            let credited = self.step(fees, credit);
            assert_eq!(
                credited,
                Ok(Some(AccountEvent::Credited { transfer: transfer.id, amount: transfer.fee, admitted: false }))
            );
            self.model_balances[fees] += transfer.fee;
            self.outcomes.completed_with_fee += 1;
        }
        let now = self.now();
        transfer.transition(TransferStatus::Completed, now).expect("processing -> completed");
        self.outcomes.completed += 1;
        transfer
    }

    // -----------------------------------------------------------------------------------------
    // Invariants
    // -----------------------------------------------------------------------------------------

    /// (a) Per currency, the balances of all accounts sum to exactly zero. Holds do not move
    /// balances, so pending transfers need no special treatment.
    fn check_currencies_sum_to_zero(&self) -> Result<(), TestCaseError> {
        for currency in CURRENCIES {
            let sum: Decimal = self
                .accounts
                .iter()
                .filter(|account| account.currency == currency)
                .map(|account| account.balance())
                .sum();
            prop_assert!(sum.is_zero(), "{currency} balances sum to {sum}");
        }
        Ok(())
    }

    /// (b) No user account has a negative available amount. The amount is recomputed here as
    /// balance - held + credit limit, so a wrong `available()` cannot hide its own overdraft.
    fn check_no_user_overdraws(&self) -> Result<(), TestCaseError> {
        for account in self.accounts.iter().filter(|account| !account.kind.is_system()) {
            let available = account.balance() - account.held() + account.credit_limit();
            prop_assert_eq!(account.available(), Ok(available), "available() of {}", account.id);
            prop_assert!(
                available >= Decimal::ZERO,
                "{} has available {available} (balance {}, held {}, credit limit {})",
                account.id,
                account.balance(),
                account.held(),
                account.credit_limit()
            );
        }
        Ok(())
    }

    /// (c) Each account's held total is the sum of its live holds, each pending transfer holds
    /// exactly its total on its source, and no other transfer holds anything anywhere.
    fn check_holds_add_up(&self) -> Result<(), TestCaseError> {
        for account in &self.accounts {
            let sum: Decimal = account.position.holds().map(|(_, amount)| amount).sum();
            prop_assert_eq!(account.held(), sum, "held of {}", account.id);
        }
        for transfer in &self.transfers {
            let source = &self.accounts[self.index_of(transfer.source)];
            let expected = (transfer.status == TransferStatus::Pending).then(|| transfer.total_debited().unwrap());
            prop_assert_eq!(source.position.hold_of(transfer.id), expected, "hold of {:?}", transfer.status);
            let elsewhere = self
                .accounts
                .iter()
                .filter(|account| account.id != transfer.source)
                .any(|account| account.position.hold_of(transfer.id).is_some());
            prop_assert!(!elsewhere, "transfer {} holds money on an account other than its source", transfer.id);
        }
        Ok(())
    }

    /// (d) Each completed transfer's postings balance, debit the source by amount plus fee and
    /// credit the destination by the amount; transfers that did not complete posted nothing.
    fn check_postings_balance(&self) -> Result<(), TestCaseError> {
        for transfer in &self.transfers {
            let postings = self.postings.get(&transfer.id).map_or(&[][..], Vec::as_slice);
            if transfer.status != TransferStatus::Completed {
                prop_assert!(postings.is_empty(), "{:?} transfer posted {postings:?}", transfer.status);
                continue;
            }
            prop_assert_eq!(check_balanced(postings), Ok(()));
            let total = |account: AccountId, direction: Direction| -> Decimal {
                postings
                    .iter()
                    .filter(|posting| posting.account == account && posting.direction == direction)
                    .map(|posting| posting.amount)
                    .sum()
            };
            prop_assert_eq!(total(transfer.source, Direction::Debit), transfer.total_debited().unwrap());
            prop_assert_eq!(total(transfer.destination, Direction::Credit), transfer.destination_amount);
            prop_assert!(postings.iter().all(|posting| posting.amount > Decimal::ZERO), "{postings:?}");
        }
        Ok(())
    }

    /// Every balance equals what the completed transfers alone add up to.
    fn check_model_balances(&self) -> Result<(), TestCaseError> {
        for (account, expected) in self.accounts.iter().zip(&self.model_balances) {
            prop_assert_eq!(account.balance(), *expected, "balance of {}", account.id);
        }
        Ok(())
    }

    /// Replaying the journal with `apply` alone onto the accounts as opened rebuilds exactly the
    /// live state, holds and credit memory included: what recovery relies on.
    fn check_replay_rebuilds_state(&self) -> Result<(), TestCaseError> {
        let mut replayed = self.opened.clone();
        for (index, event) in &self.journal {
            prop_assert_eq!(replayed[*index].apply(event), Ok(()));
        }
        prop_assert_eq!(&replayed, &self.accounts);
        Ok(())
    }
}

fn other_currency(currency: Currency) -> Currency {
    CURRENCIES.into_iter().find(|candidate| *candidate != currency).unwrap()
}

/// Runs the history, checking `invariant` after every operation (and so after the whole history).
fn check_after_every_op(
    history: &History,
    invariant: impl Fn(&Ledger) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut ledger = Ledger::open(&history.credit_limits);
    invariant(&ledger)?;
    for op in &history.ops {
        ledger.run(op);
        invariant(&ledger)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_currency_sums_to_zero_across_all_accounts_after_every_operation(history in history()) {
        check_after_every_op(&history, Ledger::check_currencies_sum_to_zero)?;
    }

    #[test]
    fn no_user_account_ever_has_negative_available_funds(history in history()) {
        check_after_every_op(&history, Ledger::check_no_user_overdraws)?;
    }

    #[test]
    fn held_always_equals_the_sum_of_live_holds_and_only_pending_transfers_hold(history in history()) {
        check_after_every_op(&history, Ledger::check_holds_add_up)?;
    }

    #[test]
    fn completed_transfers_post_balanced_entries_and_no_other_transfer_posts_any(history in history()) {
        check_after_every_op(&history, Ledger::check_postings_balance)?;
    }

    #[test]
    fn balances_equal_a_model_that_adds_up_completed_transfers(history in history()) {
        check_after_every_op(&history, Ledger::check_model_balances)?;
    }

    #[test]
    fn replaying_the_journal_onto_freshly_opened_accounts_rebuilds_the_live_state(history in history()) {
        check_after_every_op(&history, Ledger::check_replay_rebuilds_state)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The properties are not vacuous
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_histories_reach_every_saga_outcome_the_properties_rely_on() {
    // Properties that only ever saw rejected requests would pass without proving anything, so
    // sample histories from the same generator and count what they did.
    let mut runner = TestRunner::deterministic();
    let mut total = Outcomes::default();
    for _ in 0..256 {
        let history = history().new_tree(&mut runner).unwrap().current();
        let mut ledger = Ledger::open(&history.credit_limits);
        for op in &history.ops {
            ledger.run(op);
        }
        let outcomes = ledger.outcomes;
        total.invalid_requests += outcomes.invalid_requests;
        total.completed += outcomes.completed;
        total.completed_with_fee += outcomes.completed_with_fee;
        total.left_pending += outcomes.left_pending;
        total.executed += outcomes.executed;
        total.undone += outcomes.undone;
        total.status_changes += outcomes.status_changes;
        total.status_refusals += outcomes.status_refusals;
        for (reason, count) in outcomes.source_refusals {
            *total.source_refusals.entry(reason).or_default() += count;
        }
        for (reason, count) in outcomes.destination_refusals {
            *total.destination_refusals.entry(reason).or_default() += count;
        }
    }
    for (name, count) in [
        ("invalid requests", total.invalid_requests),
        ("completed", total.completed),
        ("completed with fee", total.completed_with_fee),
        ("left pending", total.left_pending),
        ("executed", total.executed),
        ("undone", total.undone),
        ("status changes", total.status_changes),
        ("status refusals", total.status_refusals),
    ] {
        assert!(count > 0, "no history reached {name}: {total:?}");
    }
    for reason in ["not_active", "currency_mismatch", "insufficient_funds"] {
        assert!(total.source_refusals.get(reason).is_some_and(|n| *n > 0), "no hold refused {reason}: {total:?}");
    }
    for reason in ["not_active", "currency_mismatch"] {
        assert!(
            total.destination_refusals.get(reason).is_some_and(|n| *n > 0),
            "no credit refused {reason}: {total:?}"
        );
    }
}

#[test]
fn a_fixed_history_moves_money_and_each_invariant_check_can_fail() {
    // A known history: fund A with 100, move 30 with a 1.00 fee from A to B.
    let history = History {
        credit_limits: vec![Decimal::ZERO; USERS],
        ops: vec![
            Op::Fund { to: 0, amount: dec!(100) },
            Op::Transfer { from: 0, to: 2, amount: dec!(30), fee: dec!(1), wrong_currency: false, manual: false },
        ],
    };
    let mut ledger = Ledger::open(&history.credit_limits);
    for op in &history.ops {
        ledger.run(op);
    }
    assert_eq!(ledger.accounts[0].balance(), dec!(69));
    assert_eq!(ledger.accounts[2].balance(), dec!(30));
    assert_eq!(ledger.accounts[ledger.system(AccountKind::Fees, Currency::USD)].balance(), dec!(1));
    assert_eq!(ledger.accounts[ledger.system(AccountKind::Settlement, Currency::USD)].balance(), dec!(-100));
    assert!(ledger.check_currencies_sum_to_zero().is_ok());
    assert!(ledger.check_postings_balance().is_ok());
    assert!(ledger.check_holds_add_up().is_ok());
    assert!(ledger.check_no_user_overdraws().is_ok());
    assert!(ledger.check_model_balances().is_ok());
    assert!(ledger.check_replay_rebuilds_state().is_ok());

    // Each check must notice a corruption of what it guards; otherwise it proves nothing.
    let mut broken = Ledger::open(&history.credit_limits);
    for op in &history.ops {
        broken.run(op);
    }
    broken.accounts[2].position.balance += dec!(0.01);
    assert!(broken.check_currencies_sum_to_zero().is_err(), "a stray cent breaks conservation");
    assert!(broken.check_model_balances().is_err(), "a stray cent differs from the model");
    assert!(broken.check_replay_rebuilds_state().is_err(), "a stray cent is not in the journal");

    broken.accounts[0].position.held += dec!(70);
    assert!(broken.check_holds_add_up().is_err(), "held without a hold");
    assert!(broken.check_no_user_overdraws().is_err(), "held beyond balance and credit");

    let transfer = broken.transfers[1].id;
    broken.postings.get_mut(&transfer).unwrap().pop();
    assert!(broken.check_postings_balance().is_err(), "a missing fee credit unbalances the postings");
}
