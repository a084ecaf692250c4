//! The seeded simulation (after TigerBeetle's VOPR and Cala): random transfer histories —
//! amounts biased to zero, one minor unit, powers of ten and exact limits; wrong currencies;
//! blocked and closed accounts; pending transfers executed, rejected, cancelled and expired (own
//! and type timeouts; the engine clock jumps forward and the model expires what fell due); fee rules
//! (flat, percentage, tiered, clamped) and FX rates set and changed mid-history, so transfers
//! pay fees and convert between currencies (or find no rate); injected actor and saga
//! panics; AML threshold rules (flag, review, block; installed at the start and changed
//! mid-history) so some transfers are refused `TRANSFER_BLOCKED` and some wait `pending` for
//! `aml_review`; crypto wallets with custodian deposits (fresh and repeated `tx_hash`),
//! withdrawals confirmed or failed, and buy and sell orders against fiat accounts at prices
//! from the FX table — run through the real actors and through a plain single-threaded
//! model ledger. Every outcome, and at the end every balance, hold, status and transfer
//! status, every wallet position, and per currency (fiat and assets) the zero sum over
//! accounts and wallets, the AML flags raised and the transfers sent to review, must match.
//! Customers' transfers are initiated by their source account's owner, whose verification
//! level (some `basic`, some `verified`, one changed mid-history) bounds them per transfer, per
//! day and per month: the model predicts every `VERIFICATION_LIMIT_EXCEEDED` exactly, and the
//! engine's usage at the end is the model's. A failure prints its seed; `TALLY_SIM_SEED=<seed>`
//! reruns just it and `TALLY_SIM_OPS=<n>` changes the length.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tally_persistence::StoreReads;

use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tally_actors::{ActorKind, CryptoError, DepositTarget, EngineConfig, EngineError, TransferError};
use tally_engine::aml::{AmlAction, AmlRule, AmlRuleKind, ThresholdRule};
use tally_engine::crypto::{QuoteAmount, Side};
use tally_engine::fees::{FeeKind, FeeRule, FeeTier};
use tally_engine::system_accounts;
use tally_engine::{
    Account, AccountStatus, CryptoOp, CryptoOpStatus, Currency, ExecutionMode, PendingReason, StatusAction, Timestamp,
    Transfer, TransferId, TransferKind, TransferStatus, TransferTypeSettings, UserId, WalletId,
};
use tally_persistence::Store;
use tally_persistence::users::VerificationLevel;
use tally_persistence::users::limits::LevelLimits;
use tally_tests::Harness;
use tally_tests::clock::ShiftedClock;
use tally_tests::model::{DepositOutcome, ModelAmlAction, ModelAmlRule, ModelFee, ModelLedger, ModelStatus, Outcome};

const SEEDS: [u64; 5] = [1, 7, 42, 1_000_003, 0xDEAD_BEEF];
const OPS_PER_SEED: usize = 2_500;
const CURRENCIES: [Currency; 3] = [Currency::USD, Currency::EUR, Currency::JPY];
const USER_ACCOUNTS: usize = 12;
/// Crypto assets held in wallets, with the prices (fiat per unit) the history picks from.
/// USDC has no JPY price ever, so that pair always finds none.
const ASSETS: [Currency; 2] = [Currency::BTC, Currency::USDC];
/// The first user accounts' owners each get a wallet (of one asset), paired with that account.
const WALLETS: usize = 4;
/// `(level, currency, per_transfer, daily, monthly)`, maxima in minor units.
type LimitRow = (VerificationLevel, Currency, Option<i64>, Option<i64>, Option<i64>);
/// Verification limits by level: `(level, currency, per_transfer, daily, monthly)` in minor
/// units (`None`: no bound), tight enough that histories meet every kind of bound.
const LIMITS: [LimitRow; 5] = [
    (VerificationLevel::Basic, Currency::USD, Some(50_000), Some(300_000), Some(600_000)),
    (VerificationLevel::Basic, Currency::EUR, None, Some(250_000), None),
    (VerificationLevel::Basic, Currency::JPY, Some(50_000), None, Some(400_000)),
    (VerificationLevel::Verified, Currency::USD, Some(500_000), None, Some(2_000_000)),
    (VerificationLevel::Verified, Currency::EUR, Some(80_000), None, None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_actors_and_the_model_ledger_agree_on_random_histories() {
    let ops = std::env::var("TALLY_SIM_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(OPS_PER_SEED);
    let seeds: Vec<u64> = match std::env::var("TALLY_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        None => SEEDS.to_vec(),
    };
    let mut total_ops = 0;
    for seed in seeds {
        let run = AssertUnwindSafe(simulate(seed, ops)).catch_unwind().await;
        match run {
            Ok(stats) => {
                total_ops += ops;
                // Each history must have exercised what it is meant to, or it proves little.
                assert!(stats.completed > ops / 10, "seed {seed}: too few completions {stats:?}");
                assert!(stats.rejected > ops / 20, "seed {seed}: too few rejections {stats:?}");
                assert!(stats.pending_resolved > 0 && stats.panics_injected > 0, "seed {seed}: {stats:?}");
                // Armed is not fired: each kind's injected panics must have happened (a
                // review disabled them all and the simulation still passed).
                assert!(
                    stats.account_panics_fired > 0 && stats.saga_panics_fired > 0 && stats.wallet_panics_fired > 0,
                    "seed {seed}: injected panics did not fire {stats:?}"
                );
                assert!(stats.fx_completed > 0 && stats.fees_charged > 0, "seed {seed}: {stats:?}");
                assert!(stats.aml_blocked > 0 && stats.aml_reviewed > 0, "seed {seed}: {stats:?}");
                assert!(stats.deposits > 0 && stats.deposit_repeats > 0, "seed {seed}: {stats:?}");
                assert!(stats.withdrawals_settled > 0 && stats.orders_completed > 0, "seed {seed}: {stats:?}");
                assert!(stats.limit_refused > 0, "seed {seed}: no verification limit was met {stats:?}");
                assert!(stats.expired > 0, "seed {seed}: no pending transfer expired {stats:?}");
            }
            Err(panic) => {
                eprintln!("simulation failed with seed {seed}; rerun with TALLY_SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    assert!(total_ops >= ops);
}

#[derive(Debug, Default)]
struct Stats {
    completed: usize,
    rejected: usize,
    pending_resolved: usize,
    panics_injected: usize,
    account_panics_fired: u32,
    saga_panics_fired: u32,
    wallet_panics_fired: u32,
    fx_completed: usize,
    fees_charged: usize,
    aml_blocked: usize,
    aml_reviewed: usize,
    deposits: usize,
    deposit_repeats: usize,
    withdrawals_settled: usize,
    orders_completed: usize,
    limit_refused: usize,
    expired: usize,
}

/// A wallet of the simulation: its owner, the fiat account it trades against (the owner's),
/// and its index in the model.
struct SimWallet {
    id: WalletId,
    owner: UserId,
    asset: Currency,
    account: usize,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    harness: Harness,
    model: ModelLedger,
    /// Engine accounts, index-aligned with the model's.
    accounts: Vec<Account>,
    settlement: HashMap<Currency, usize>,
    /// Pending transfers: model key and engine id.
    pending: Vec<(u64, TransferId)>,
    /// The status each transfer must end with.
    expected: HashMap<TransferId, TransferStatus>,
    manual_internal: bool,
    rejections: HashMap<&'static str, usize>,
    next_key: u64,
    stats: Stats,
    /// User accounts are `CURRENCIES.len()..users_end`; fee and FX clearing accounts follow.
    users_end: usize,
    /// The fee rule the engine has for each (type, currency), to replace it.
    fee_rules: HashMap<(TransferKind, Currency), uuid::Uuid>,
    /// Engine AML rule ids, index-aligned with the model's rules.
    aml_rules: Vec<uuid::Uuid>,
    /// Wallets, index-aligned with the model's.
    wallets: Vec<SimWallet>,
    /// Every tx_hash reported so far (credited or not), to repeat some.
    tx_hashes: Vec<String>,
    /// Pending withdrawals: model key and engine id; settled ones, with the answer given.
    withdrawals: Vec<(u64, TransferId)>,
    settled: Vec<(TransferId, bool)>,
    /// The engine's clock; `time_passes` moves it forward by `TIME_STEP_SECS`.
    clock: Arc<ShiftedClock>,
    clock_offset_secs: i64,
    /// Pending transfers with a deadline: model key → the clock offset at which they expire.
    deadlines: HashMap<u64, i64>,
    /// The internal type's `pending_timeout_secs`, while it runs manual.
    internal_timeout: Option<u32>,
}

/// How far `time_passes` moves the clock. The times to expiry the history uses
/// (`EXPIRY_CHOICES_SECS`) sit 400 s or more from any multiple of it, so the real time a run
/// takes (well under 400 s) never decides whether a transfer has expired: only the steps do.
const TIME_STEP_SECS: i64 = 1_000;
const EXPIRY_CHOICES_SECS: [u32; 3] = [600, 1_500, 2_500];

async fn simulate(seed: u64, ops: usize) -> Stats {
    let mut config = EngineConfig::default();
    // Injected panics are spread at random; quarantine is tested on its own elsewhere.
    config.actors.quarantine_restarts = u32::MAX;
    let clock = Arc::new(ShiftedClock::default());
    let harness = Harness::start_clocked(config, Arc::clone(&clock)).await;
    let mut sim = Sim {
        seed,
        rng: StdRng::seed_from_u64(seed),
        harness,
        model: ModelLedger::default(),
        accounts: Vec::new(),
        settlement: HashMap::new(),
        pending: Vec::new(),
        expected: HashMap::new(),
        manual_internal: false,
        rejections: HashMap::new(),
        next_key: 0,
        stats: Stats::default(),
        users_end: 0,
        fee_rules: HashMap::new(),
        aml_rules: Vec::new(),
        wallets: Vec::new(),
        tx_hashes: Vec::new(),
        withdrawals: Vec::new(),
        settled: Vec::new(),
        clock,
        clock_offset_secs: 0,
        deadlines: HashMap::new(),
        internal_timeout: None,
    };
    for currency in CURRENCIES {
        let id = system_accounts::settlement(currency);
        let account = sim.harness.engine.account(id).await.unwrap();
        let index = sim.model.add_account(currency.code(), currency.scale(), true);
        sim.settlement.insert(currency, index);
        sim.accounts.push(account);
    }
    for _ in 0..USER_ACCOUNTS {
        let currency = CURRENCIES[sim.rng.gen_range(0..CURRENCIES.len())];
        let account = sim.harness.open(currency).await;
        sim.model.add_account(currency.code(), currency.scale(), false);
        sim.accounts.push(account);
    }
    sim.users_end = sim.accounts.len();
    // Verification limits: the level table, and a level per user (each user account has its
    // own owner): the first is `basic`, the second `verified`, the rest drawn.
    let rows: Vec<LevelLimits> = LIMITS
        .iter()
        .map(|&(level, currency, per_transfer, daily, monthly)| {
            let minor = |units: Option<i64>| units.map(|units| Decimal::new(units, currency.scale()));
            LevelLimits {
                level,
                currency,
                limits: tally_engine::limits::UserLimits {
                    per_transfer_max: minor(per_transfer),
                    daily_max: minor(daily),
                    monthly_max: minor(monthly),
                },
            }
        })
        .collect();
    sim.harness.engine.limits().install(&rows);
    for index in CURRENCIES.len()..sim.users_end {
        let level = match index - CURRENCIES.len() {
            0 => VerificationLevel::Basic,
            1 => VerificationLevel::Verified,
            _ => [VerificationLevel::None, VerificationLevel::Basic, VerificationLevel::Verified]
                [sim.rng.gen_range(0..3)],
        };
        sim.set_level(index, level);
    }
    // The fee revenue and FX clearing accounts, compared with the model's at the end.
    for currency in CURRENCIES {
        let index = sim.model.add_account(currency.code(), currency.scale(), true);
        sim.model.fee_accounts.insert(currency.code(), index);
        sim.accounts.push(sim.harness.engine.account(system_accounts::fees(currency)).await.unwrap());
        let index = sim.model.add_account(currency.code(), currency.scale(), true);
        sim.model.fx_accounts.insert(currency.code(), index);
        sim.accounts.push(sim.harness.engine.account(system_accounts::fx_clearing(currency)).await.unwrap());
    }
    // The assets' settlement (deposits, withdrawals) and FX clearing (orders) accounts.
    for asset in ASSETS {
        let index = sim.model.add_account(asset.code(), asset.scale(), true);
        sim.model.settlement_accounts.insert(asset.code(), index);
        sim.accounts.push(sim.harness.engine.account(system_accounts::settlement(asset)).await.unwrap());
        let index = sim.model.add_account(asset.code(), asset.scale(), true);
        sim.model.fx_accounts.insert(asset.code(), index);
        sim.accounts.push(sim.harness.engine.account(system_accounts::fx_clearing(asset)).await.unwrap());
    }
    for account in CURRENCIES.len()..CURRENCIES.len() + WALLETS {
        let asset = ASSETS[sim.rng.gen_range(0..ASSETS.len())];
        let owner = sim.accounts[account].owner.unwrap();
        let (profile, _) = sim
            .harness
            .engine
            .open_customer_wallet(owner, asset)
            .await
            .unwrap_or_else(|error| panic!("seed {seed}: wallet refused: {error:?}"));
        sim.model.add_wallet(asset.code(), asset.scale());
        sim.wallets.push(SimWallet { id: profile.wallet, owner, asset, account });
    }
    for index in CURRENCIES.len()..sim.users_end {
        let scale = sim.accounts[index].currency.scale();
        let amount = Decimal::new(sim.rng.gen_range(100_000..10_000_000), scale);
        sim.adjust(index, amount, TransferKind::AdminCredit).await;
    }
    // Some prices from the start; the history changes them.
    for _ in 0..4 {
        sim.change_fee_rule().await;
        sim.change_fx_rate().await;
        sim.change_crypto_price().await;
    }
    sim.install_aml_rules().await;
    for step in 0..ops {
        if step == ops / 2 {
            sim.change_aml_rules().await;
        }
        if step == ops / 3 {
            // A user's level changes mid-history (as `POST /v1/admin/users/{id}/verification`
            // does); their usage so far stays counted against the new level's bounds.
            let index = sim.user_account();
            let level = [VerificationLevel::None, VerificationLevel::Basic, VerificationLevel::Verified]
                [sim.rng.gen_range(0..3)];
            sim.set_level(index, level);
        }
        sim.step(step).await;
    }
    let faults = sim.harness.engine.faults();
    sim.stats.account_panics_fired = faults.fired(ActorKind::Account);
    sim.stats.saga_panics_fired = faults.fired(ActorKind::TransferSaga);
    sim.stats.wallet_panics_fired = faults.fired(ActorKind::Wallet);
    eprintln!("seed {seed}: {:?} rejections {:?}", sim.stats, sim.rejections);
    sim.check_final_state().await;
    sim.check_wallets_and_conservation().await;
    sim.check_limit_usage();
    let stats = std::mem::take(&mut sim.stats);
    sim.harness.shutdown().await;
    stats
}

impl Sim {
    /// Sets the verification level of account `index`'s owner, in the engine and the model
    /// (the model keys limits by the account's index: one owner per user account).
    fn set_level(&mut self, index: usize, level: VerificationLevel) {
        let owner = self.accounts[index].owner.unwrap();
        self.harness.engine.limits().set_level(owner, level);
        let user = index as u64;
        self.model.limits.retain(|(limited, _), _| *limited != user);
        for (row_level, currency, per_transfer, daily, monthly) in LIMITS {
            if row_level == level {
                let minor = |units: Option<i64>| units.map(|units| Decimal::new(units, currency.scale()));
                self.model.limits.insert((user, currency.code()), (minor(per_transfer), minor(daily), minor(monthly)));
            }
        }
    }

    /// The engine's usage of every user account's owner is the model's, per fiat currency.
    fn check_limit_usage(&self) {
        let now = self.harness.engine.now();
        for index in CURRENCIES.len()..self.users_end {
            let owner = self.accounts[index].owner.unwrap();
            for currency in CURRENCIES {
                let usage = self.harness.engine.limits().usage(owner, currency, now);
                let model = self
                    .model
                    .limit_usage
                    .get(&(index as u64, currency.code()))
                    .map(|usage| usage.rolled(now.as_micros()))
                    .unwrap_or_default();
                let what = format!("seed {}: account {index}'s owner's {currency} usage", self.seed);
                assert_eq!(usage.used_today, model.today, "{what} today");
                assert_eq!(usage.used_this_month, model.this_month, "{what} this month");
            }
        }
    }

    fn user_account(&mut self) -> usize {
        self.rng.gen_range(CURRENCIES.len()..self.users_end)
    }

    /// Another user account in the currency of `source`, if there is one.
    fn same_currency_account(&mut self, source: usize) -> usize {
        let currency = self.accounts[source].currency;
        let candidates: Vec<usize> = (CURRENCIES.len()..self.users_end)
            .filter(|&index| index != source && self.accounts[index].currency == currency)
            .collect();
        if candidates.is_empty() { self.user_account() } else { candidates[self.rng.gen_range(0..candidates.len())] }
    }

    /// An amount in the currency of account `index`, in minor units up to `max_units`,
    /// biased to the edges.
    fn amount_units(&mut self, index: usize, max_units: i64) -> Decimal {
        let scale = self.accounts[index].currency.scale();
        let available = {
            let account = &self.model.accounts[index];
            account.balance - account.held
        };
        let units = match self.rng.gen_range(0..20) {
            0 => 0,
            1 | 2 => 1,
            3..=5 => 10_i64.pow(self.rng.gen_range(0..7)),
            // Exactly what is available, or one minor unit more.
            6..=8 => {
                let exact = (available * Decimal::from(10_i64.pow(scale))).trunc();
                let exact = i64::try_from(exact.mantissa()).unwrap_or(0).max(0);
                exact + self.rng.gen_range(0..2)
            }
            _ => self.rng.gen_range(1..=max_units),
        };
        Decimal::new(units, scale)
    }

    async fn step(&mut self, step: usize) {
        let seed = self.seed;
        if self.rng.gen_ratio(1, 25) {
            self.harness.engine.faults().arm_panics(ActorKind::Account, 1);
            self.stats.panics_injected += 1;
        }
        if self.rng.gen_ratio(1, 40) {
            self.harness.engine.faults().arm_panics(ActorKind::TransferSaga, 1);
            self.stats.panics_injected += 1;
        }
        if self.rng.gen_ratio(1, 40) {
            // Crypto legs to a wallet must survive its actor restarting too.
            self.harness.engine.faults().arm_panics(ActorKind::Wallet, 1);
            self.stats.panics_injected += 1;
        }
        match self.rng.gen_range(0..128) {
            0..=49 => self.internal_transfer().await,
            50..=59 => self.external_transfer().await,
            60..=67 => self.resolve_pending(Resolution::Execute).await,
            68..=71 => self.resolve_pending(Resolution::Reject).await,
            72..=75 => self.resolve_pending(Resolution::Cancel).await,
            76..=82 => {
                let index = self.user_account();
                // Unblock more often than block, so most accounts stay usable.
                let action = if self.rng.gen_ratio(1, 3) { StatusAction::Block } else { StatusAction::Unblock };
                self.set_status(index, action).await;
            }
            83 => {
                let index = self.user_account();
                self.set_status(index, StatusAction::Close).await;
            }
            84..=91 => {
                let index = self.user_account();
                let amount = self.amount_units(index, 100_000);
                self.adjust(index, amount, TransferKind::AdminCredit).await;
            }
            92..=96 => {
                let index = self.user_account();
                let amount = self.amount_units(index, 100_000);
                self.adjust(index, amount, TransferKind::AdminDebit).await;
            }
            97 => self.change_fee_rule().await,
            98 => self.change_fx_rate().await,
            100..=105 => self.deposit().await,
            106..=109 => self.withdraw().await,
            110..=113 => self.settle_withdrawal().await,
            114..=122 => self.order().await,
            123 | 124 => self.change_crypto_price().await,
            125 | 126 => self.time_passes().await,
            _ => {
                self.manual_internal = !self.manual_internal;
                let mut settings = TransferTypeSettings::internal_default();
                self.internal_timeout = None;
                if self.manual_internal {
                    settings.execution_mode = ExecutionMode::Manual;
                    if self.rng.gen_ratio(1, 2) {
                        self.internal_timeout = Some(EXPIRY_CHOICES_SECS[self.rng.gen_range(0..3)]);
                    }
                    settings.pending_timeout_secs = self.internal_timeout;
                }
                self.harness.engine.set_transfer_type(TransferKind::Internal, settings);
            }
        }
        // Armed panics that no handler consumed would leak into the next step's meaning;
        // that is fine (they still must be survived), but keep the count honest per step.
        let _ = (seed, step);
    }

    fn request(
        &mut self,
        source: usize,
        destination: usize,
        amount: Decimal,
        currency: Currency,
    ) -> tally_engine::TransferRequest {
        let mut request = self.harness.request(&self.accounts[source], &self.accounts[destination], amount);
        request.currency = currency;
        request
    }

    fn record(&mut self, outcome_model: Outcome, result: &Result<Transfer, TransferError>, what: &str) {
        let actual = match result {
            Ok(transfer) if transfer.status == TransferStatus::Completed => Outcome::Completed,
            Ok(transfer) if transfer.status == TransferStatus::Pending => Outcome::Pending,
            Ok(transfer) => panic!("seed {}: {what}: unexpected status {:?}", self.seed, transfer.status),
            Err(error) => Outcome::Rejected(error.code().as_str()),
        };
        if let Outcome::Rejected(code) = actual {
            *self.rejections.entry(code).or_default() += 1;
            self.stats.limit_refused += usize::from(code == "VERIFICATION_LIMIT_EXCEEDED");
            self.stats.aml_blocked += usize::from(code == "TRANSFER_BLOCKED");
        }
        if let Ok(transfer) = result
            && transfer.status == TransferStatus::Pending
            && transfer.pending_reason == Some(PendingReason::AmlReview)
        {
            self.stats.aml_reviewed += 1;
        }
        assert_eq!(actual, outcome_model, "seed {}: {what}: engine {result:?}", self.seed);
        match actual {
            Outcome::Completed => self.stats.completed += 1,
            Outcome::Rejected(_) => self.stats.rejected += 1,
            Outcome::Pending => {}
        }
    }

    async fn internal_transfer(&mut self) {
        let source = self.user_account();
        let destination = if self.rng.gen_ratio(1, 50) {
            source
        } else if self.rng.gen_ratio(4, 5) {
            self.same_currency_account(source)
        } else {
            self.user_account()
        };
        let mut amount = self.amount_units(source, 200_000);
        if self.rng.gen_ratio(1, 30) {
            // One decimal more than the currency allows.
            amount += Decimal::new(1, self.accounts[source].currency.scale() + 1);
        }
        let currency = if self.rng.gen_ratio(1, 20) {
            CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())]
        } else {
            self.accounts[source].currency
        };
        let mut request = self.request(source, destination, amount, currency);
        // A customer's transfer: its source's owner initiates it, and their limits count it.
        request.initiated_by = self.accounts[source].owner;
        // The limits' windows are the UTC day and month of the transfer's creation.
        let created_at = request.created_at.as_micros();
        let id = request.id;
        let key = self.next_key;
        self.next_key += 1;
        let expected = self.model.transfer_initiated(
            "internal",
            source,
            destination,
            amount,
            (currency.code(), currency.scale()),
            Some(key),
            self.manual_internal,
            Some((source as u64, created_at)),
        );
        let result = self.harness.engine.transfer(request).await;
        self.record(expected, &result, &format!("internal {source}->{destination} {amount} {currency}"));
        self.count_pricing(&result);
        self.track(id, key, expected);
        self.track_deadline(key, &result, self.internal_timeout);
    }

    async fn external_transfer(&mut self) {
        let source = self.user_account();
        let currency = self.accounts[source].currency;
        let settlement = self.settlement[&currency];
        let amount = self.amount_units(source, 100_000);
        let mut request = self.request(source, settlement, amount, currency);
        request.kind = TransferKind::External;
        request.initiated_by = self.accounts[source].owner;
        let created_at = request.created_at.as_micros();
        let id = request.id;
        let key = self.next_key;
        self.next_key += 1;
        let expected = self.model.transfer_initiated(
            "external",
            source,
            settlement,
            amount,
            (currency.code(), currency.scale()),
            Some(key),
            true,
            Some((source as u64, created_at)),
        );
        // Half name their own time to expiry (the external type has none by default).
        let expires_in = self.rng.gen_ratio(1, 2).then(|| EXPIRY_CHOICES_SECS[self.rng.gen_range(0..3)]);
        let result = self
            .harness
            .engine
            .transfer_idempotent_expiring(request, None, expires_in)
            .await
            .map(|(transfer, _)| transfer);
        self.record(expected, &result, &format!("external {source} {amount}"));
        self.count_pricing(&result);
        self.track(id, key, expected);
        self.track_deadline(key, &result, expires_in);
    }

    fn track(&mut self, id: TransferId, key: u64, outcome: Outcome) {
        match outcome {
            Outcome::Completed => {
                self.expected.insert(id, TransferStatus::Completed);
            }
            Outcome::Pending => {
                self.expected.insert(id, TransferStatus::Pending);
                self.pending.push((key, id));
            }
            // Rejected before the saga started (validation) leaves no transfer; after, a
            // failed one. Either way it must not be completed or pending.
            Outcome::Rejected(_) => {}
        }
    }

    /// A pending transfer's deadline is its creation plus `expires_in` exactly; the model
    /// remembers at which clock offset it falls.
    fn track_deadline(&mut self, key: u64, result: &Result<Transfer, TransferError>, expires_in: Option<u32>) {
        let Ok(transfer) = result else { return };
        if transfer.status != TransferStatus::Pending {
            assert_eq!(transfer.pending_expires_at, None, "seed {}: only a pending transfer expires", self.seed);
            return;
        }
        let expected = expires_in
            .map(|secs| Timestamp::from_micros(transfer.created_at.as_micros() + i64::from(secs) * 1_000_000));
        assert_eq!(transfer.pending_expires_at, expected, "seed {}: deadline of {}", self.seed, transfer.id);
        if let Some(secs) = expires_in {
            self.deadlines.insert(key, self.clock_offset_secs + i64::from(secs));
        }
    }

    /// The clock jumps `TIME_STEP_SECS`: every pending transfer whose deadline fell in the jump
    /// ends `expired` in the model (its hold released, as a rejection) and must in the engine,
    /// by the sweeper alone.
    async fn time_passes(&mut self) {
        self.clock_offset_secs += TIME_STEP_SECS;
        self.clock.advance(std::time::Duration::from_secs(TIME_STEP_SECS.unsigned_abs()));
        let offset = self.clock_offset_secs;
        let due: Vec<(u64, TransferId)> = self
            .pending
            .iter()
            .copied()
            .filter(|(key, _)| self.deadlines.get(key).is_some_and(|at| *at <= offset))
            .collect();
        self.pending.retain(|(key, _)| !due.iter().any(|(due_key, _)| due_key == key));
        for (key, id) in due {
            assert!(self.model.release(key), "seed {}: model had {key} pending", self.seed);
            self.deadlines.remove(&key);
            self.stats.expired += 1;
            self.expected.insert(id, TransferStatus::Expired);
            let started = std::time::Instant::now();
            loop {
                let status = self.harness.engine.load_transfer(id).await.unwrap().map(|t| t.status);
                if status == Some(TransferStatus::Expired) {
                    break;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(20),
                    "seed {}: {id} not expired by the sweeper: {status:?}",
                    self.seed
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    async fn resolve_pending(&mut self, resolution: Resolution) {
        if self.pending.is_empty() {
            return;
        }
        let (key, id) = self.pending.swap_remove(self.rng.gen_range(0..self.pending.len()));
        self.deadlines.remove(&key);
        self.stats.pending_resolved += 1;
        match resolution {
            Resolution::Execute => {
                let expected = self.model.execute(key).unwrap();
                let result = self.harness.engine.execute(id).await;
                self.record(expected, &result, &format!("execute {id}"));
                self.count_pricing(&result);
                let status =
                    if expected == Outcome::Completed { TransferStatus::Completed } else { TransferStatus::Failed };
                self.expected.insert(id, status);
            }
            Resolution::Reject | Resolution::Cancel => {
                assert!(self.model.release(key));
                let (result, status) = if resolution == Resolution::Reject {
                    (self.harness.engine.reject(id).await, TransferStatus::Rejected)
                } else {
                    (self.harness.engine.cancel(id).await, TransferStatus::Cancelled)
                };
                let transfer = result.unwrap_or_else(|error| panic!("seed {}: resolve {id}: {error:?}", self.seed));
                assert_eq!(transfer.status, status, "seed {}", self.seed);
                self.expected.insert(id, status);
            }
        }
    }

    async fn set_status(&mut self, index: usize, action: StatusAction) {
        let status = match action {
            StatusAction::Block => ModelStatus::Blocked,
            StatusAction::Unblock => ModelStatus::Active,
            StatusAction::Close => ModelStatus::Closed,
        };
        let expected = self.model.set_status(index, status);
        let result = self.harness.engine.set_account_status(self.accounts[index].id, action).await;
        let actual = result.as_ref().map(|_| ()).map_err(|error: &EngineError| error.code().as_str());
        assert_eq!(actual, expected, "seed {}: {action:?} account {index}: {result:?}", self.seed);
    }

    async fn adjust(&mut self, index: usize, amount: Decimal, kind: TransferKind) {
        let currency = self.accounts[index].currency;
        let settlement = self.settlement[&currency];
        let (source, destination) =
            if kind == TransferKind::AdminCredit { (settlement, index) } else { (index, settlement) };
        let expected =
            self.model.transfer("admin", source, destination, amount, (currency.code(), currency.scale()), None, false);
        let result = self.harness.engine.adjust(kind, self.accounts[index].id, amount, None, None, None).await;
        self.record(expected, &result, &format!("{kind:?} {index} {amount}"));
        if let Ok(transfer) = &result {
            self.expected.insert(transfer.id, TransferStatus::Completed);
        }
    }

    fn count_pricing(&mut self, result: &Result<Transfer, TransferError>) {
        if let Ok(transfer) = result
            && transfer.status == TransferStatus::Completed
        {
            self.stats.fx_completed += usize::from(transfer.fx_rate.is_some());
            self.stats.fees_charged += usize::from(!transfer.fee.is_zero());
        }
    }

    /// Replaces (or creates) the fee rule of a random (type, currency) with a random flat,
    /// percentage or tiered one, in the engine and in the model.
    async fn change_fee_rule(&mut self) {
        let kind = if self.rng.gen_ratio(2, 3) { TransferKind::Internal } else { TransferKind::External };
        let currency = CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())];
        let scale = currency.scale();
        // Percentages that make half-way cases: 0.5 % of an odd minor unit, 2.5 %, 1.25 %.
        let percent =
            [Decimal::new(5, 1), Decimal::new(25, 1), Decimal::new(125, 2), Decimal::ONE][self.rng.gen_range(0..4)];
        let unit = Decimal::new(1, scale);
        let (fee_kind, tiers): (FeeKind, Vec<(Option<Decimal>, Decimal, Decimal)>) = match self.rng.gen_range(0..4) {
            0 => (FeeKind::Flat, vec![(None, unit * Decimal::from(self.rng.gen_range(1..50)), Decimal::ZERO)]),
            1 => (FeeKind::Percentage, vec![(None, Decimal::ZERO, percent)]),
            2 => (FeeKind::Percentage, vec![(None, unit * Decimal::from(self.rng.gen_range(1..20)), percent)]),
            _ => (
                FeeKind::Tiered,
                vec![
                    (Some(unit * Decimal::from(1_000)), unit * Decimal::from(5), Decimal::ZERO),
                    (Some(unit * Decimal::from(100_000)), Decimal::ZERO, percent),
                    (None, unit * Decimal::from(3), Decimal::new(5, 1)),
                ],
            ),
        };
        let clamp = self.rng.gen_ratio(1, 2);
        let (min, max) = if clamp {
            (Some(unit * Decimal::from(2)), Some(unit * Decimal::from(self.rng.gen_range(2..5_000))))
        } else {
            (None, None)
        };
        let positive = |value: Decimal| (!value.is_zero()).then_some(value);
        let spec = FeeRule {
            id: uuid::Uuid::nil(),
            name: format!("{} {currency}", kind.as_str()),
            transfer_type: kind,
            currency,
            kind: fee_kind,
            flat_amount: if fee_kind == FeeKind::Tiered { None } else { positive(tiers[0].1) },
            percentage: if fee_kind == FeeKind::Tiered { None } else { positive(tiers[0].2) },
            min_fee: min,
            max_fee: max,
            tiers: if fee_kind == FeeKind::Tiered {
                tiers
                    .iter()
                    .map(|(up_to, flat, percent)| FeeTier {
                        up_to: *up_to,
                        flat_amount: positive(*flat),
                        percentage: positive(*percent),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            enabled: true,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        };
        let engine = &self.harness.engine;
        let saved = match self.fee_rules.get(&(kind, currency)) {
            Some(id) => engine.update_fee_rule(*id, None, |_| spec).await,
            None => engine.create_fee_rule(engine.new_transfer_id().as_uuid(), spec, None).await,
        };
        let saved = saved.unwrap_or_else(|error| panic!("seed {}: fee rule refused: {error:?}", self.seed));
        self.fee_rules.insert((kind, currency), saved.id);
        let model_kind = if kind == TransferKind::Internal { "internal" } else { "external" };
        self.model.fee_rules.insert((model_kind, currency.code()), ModelFee { tiers, min, max });
    }

    /// Sets a random directed rate between two of the currencies (JPY -> EUR is never set,
    /// so that pair always finds no rate).
    async fn change_fx_rate(&mut self) {
        let pairs = [
            (Currency::USD, Currency::EUR, ["0.9137", "0.92", "1"]),
            (Currency::EUR, Currency::USD, ["1.0945", "1.1", "0.99"]),
            (Currency::USD, Currency::JPY, ["149.57", "150", "0.5"]),
            (Currency::JPY, Currency::USD, ["0.0067", "0.006689", "0.01"]),
            (Currency::EUR, Currency::JPY, ["163.1", "160.005", "1"]),
        ];
        let (from, to, rates) = pairs[self.rng.gen_range(0..pairs.len())];
        let rate: Decimal = rates[self.rng.gen_range(0..rates.len())].parse().unwrap();
        self.harness
            .engine
            .set_fx_rate(from, to, rate, None)
            .await
            .unwrap_or_else(|error| panic!("seed {}: rate refused: {error:?}", self.seed));
        self.model.fx_rates.insert((from.code(), to.code()), rate);
    }

    // ---- AML ------------------------------------------------------------------------------

    /// Saves a threshold rule in the engine (replacing `replace`, if given) and in the model.
    async fn put_aml_rule(&mut self, rule: ModelAmlRule, replace: Option<usize>) {
        let currency = CURRENCIES.into_iter().find(|currency| currency.code() == rule.currency).unwrap();
        let kind =
            rule.kind.map(|kind| if kind == "internal" { TransferKind::Internal } else { TransferKind::External });
        let action = match rule.action {
            ModelAmlAction::Flag => AmlAction::Flag,
            ModelAmlAction::Review => AmlAction::Review,
            ModelAmlAction::Block => AmlAction::Block,
        };
        let id = replace.map_or_else(uuid::Uuid::new_v4, |index| self.aml_rules[index]);
        let threshold = ThresholdRule::new(rule.amount, currency, kind).unwrap();
        let saved = AmlRule {
            id,
            name: format!("{} {} {}", action.as_str(), rule.amount, rule.currency),
            kind: AmlRuleKind::Threshold(threshold),
            action,
            enabled: true,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        };
        let engine = &self.harness.engine;
        let stored = match replace {
            Some(_) => engine
                .replace_aml_rule(id, None, |_| Ok::<_, tally_actors::EngineError>(saved))
                .await
                .map(|replaced| assert!(replaced.is_some(), "seed {}: the replaced AML rule is gone", self.seed)),
            None => engine.create_aml_rule(saved, None).await,
        };
        stored.unwrap_or_else(|error| panic!("seed {}: AML rule refused: {error:?}", self.seed));
        match replace {
            Some(index) => self.model.aml_rules[index] = rule,
            None => {
                self.model.aml_rules.push(rule);
                self.aml_rules.push(id);
            }
        }
    }

    /// Thresholds the histories' amounts cross now and then: the random part of an internal
    /// transfer reaches 2,000.00 USD / EUR and 200,000 JPY, the edge cases (powers of ten, the
    /// whole balance) go further.
    async fn install_aml_rules(&mut self) {
        let rules = [
            ("1800.00", "USD", None, ModelAmlAction::Review),
            ("5000.00", "USD", Some("internal"), ModelAmlAction::Block),
            ("100.00", "EUR", None, ModelAmlAction::Flag),
            ("900.00", "EUR", Some("external"), ModelAmlAction::Review),
            ("3000.00", "EUR", None, ModelAmlAction::Block),
            ("50000", "JPY", Some("internal"), ModelAmlAction::Review),
            ("150000", "JPY", None, ModelAmlAction::Block),
        ];
        for (amount, currency, kind, action) in rules {
            let rule = ModelAmlRule { amount: amount.parse().unwrap(), currency, kind, action };
            self.put_aml_rule(rule, None).await;
        }
    }

    /// Mid-history: the USD review threshold drops, and the EUR block rule goes.
    async fn change_aml_rules(&mut self) {
        let rule = ModelAmlRule {
            amount: "900.00".parse().unwrap(),
            currency: "USD",
            kind: None,
            action: ModelAmlAction::Review,
        };
        self.put_aml_rule(rule, Some(0)).await;
        let id = self.aml_rules.remove(4);
        self.model.aml_rules.remove(4);
        assert!(self.harness.engine.delete_aml_rule(id, None).await.unwrap(), "seed {}", self.seed);
    }

    // ---- wallets ---------------------------------------------------------------------------

    fn wallet(&mut self) -> usize {
        self.rng.gen_range(0..self.wallets.len())
    }

    /// A crypto amount for wallet `index`, biased to the edges like `amount_units`.
    fn asset_units(&mut self, index: usize) -> Decimal {
        let asset = self.wallets[index].asset;
        let scale = asset.scale();
        let available = {
            let wallet = &self.model.wallets[index];
            wallet.balance - wallet.held
        };
        // Up to 0.1 BTC or 1,000 USDC.
        let max_units: i64 = if asset == Currency::BTC { 10_000_000 } else { 1_000_000_000 };
        let units = match self.rng.gen_range(0..20) {
            0 => 0,
            1 | 2 => 1,
            3..=5 => 10_i64.pow(self.rng.gen_range(0..=scale)),
            6..=8 => {
                let exact = (available * Decimal::from(10_i64.pow(scale))).trunc();
                i64::try_from(exact.mantissa()).unwrap_or(0).max(0) + self.rng.gen_range(0..2)
            }
            _ => self.rng.gen_range(1..=max_units),
        };
        Decimal::new(units, scale)
    }

    /// A custodian deposit: mostly a fresh tx_hash, sometimes one already reported (to this
    /// or another wallet), which must credit nothing: the same report is a repeat, another
    /// wallet or amount is refused.
    async fn deposit(&mut self) {
        let mut index = self.wallet();
        let mut amount = self.asset_units(index);
        if self.rng.gen_ratio(1, 30) {
            amount += Decimal::new(1, self.wallets[index].asset.scale() + 1);
        }
        let tx_hash = if !self.tx_hashes.is_empty() && self.rng.gen_ratio(1, 4) {
            let hash = self.tx_hashes[self.rng.gen_range(0..self.tx_hashes.len())].clone();
            // Half of them the same report again (a custodian's retry), the rest whatever came.
            if self.rng.gen_ratio(1, 2)
                && let Some((wallet, first)) = self.model.deposit_hashes.get(&hash)
            {
                (index, amount) = (*wallet, *first);
            }
            hash
        } else {
            let hash = format!("0x{:016x}{:08x}", self.seed, self.tx_hashes.len());
            self.tx_hashes.push(hash.clone());
            hash
        };
        let expected = self.model.deposit(index, amount, &tx_hash);
        let wallet = self.wallets[index].id;
        let result = self.harness.engine.deposit(DepositTarget::Wallet(wallet), amount, tx_hash.clone()).await;
        let actual = match &result {
            Ok((op, false)) => {
                assert_eq!((op.status, op.asset_amount), (CryptoOpStatus::Completed, amount), "seed {}", self.seed);
                self.stats.deposits += 1;
                DepositOutcome::Credited
            }
            Ok((op, true)) => {
                assert_eq!(op.tx_hash.as_deref(), Some(tx_hash.as_str()), "seed {}", self.seed);
                self.stats.deposit_repeats += 1;
                DepositOutcome::Repeat
            }
            Err(error) => DepositOutcome::Rejected(error.code().as_str()),
        };
        assert_eq!(actual, expected, "seed {}: deposit {amount} {tx_hash} to wallet {index}: {result:?}", self.seed);
    }

    fn crypto_outcome(result: &Result<CryptoOp, CryptoError>) -> Outcome {
        match result {
            Ok(op) if op.status == CryptoOpStatus::Completed => Outcome::Completed,
            Ok(op) if op.status == CryptoOpStatus::Pending => Outcome::Pending,
            Ok(op) => panic!("unexpected crypto status {:?}", op.status),
            Err(error) => Outcome::Rejected(error.code().as_str()),
        }
    }

    async fn withdraw(&mut self) {
        let index = self.wallet();
        let mut amount = self.asset_units(index);
        if self.rng.gen_ratio(1, 30) {
            amount += Decimal::new(1, self.wallets[index].asset.scale() + 1);
        }
        let key = self.next_key;
        self.next_key += 1;
        let expected = self.model.withdraw(index, amount, key);
        let (owner, wallet) = (self.wallets[index].owner, self.wallets[index].id);
        let result = self
            .harness
            .engine
            .withdraw(owner, wallet, amount, "bc1qsimulationaddress".to_owned(), None)
            .await
            .map(|(op, _)| op);
        assert_eq!(
            Self::crypto_outcome(&result),
            expected,
            "seed {}: withdraw {amount} from wallet {index}: {result:?}",
            self.seed
        );
        if let Ok(op) = result {
            self.withdrawals.push((key, op.id));
        }
    }

    /// The custodian answers a pending withdrawal; now and then it repeats an answer already
    /// given (changes nothing) or contradicts it (`CONFLICT`, changes nothing).
    async fn settle_withdrawal(&mut self) {
        if !self.settled.is_empty() && (self.withdrawals.is_empty() || self.rng.gen_ratio(1, 5)) {
            let (id, confirmed) = self.settled[self.rng.gen_range(0..self.settled.len())];
            let same = self.rng.gen_ratio(1, 2);
            let result = self.harness.engine.settle_withdrawal(id, confirmed == same, "0xrepeat".to_owned()).await;
            let wanted = if confirmed { CryptoOpStatus::Completed } else { CryptoOpStatus::Failed };
            match (same, &result) {
                (true, Ok(op)) => assert_eq!(op.status, wanted, "seed {}", self.seed),
                (false, Err(error)) => assert_eq!(error.code().as_str(), "CONFLICT", "seed {}", self.seed),
                _ => panic!("seed {}: repeated answer ({same}) to withdrawal {id}: {result:?}", self.seed),
            }
            return;
        }
        if self.withdrawals.is_empty() {
            return;
        }
        let (key, id) = self.withdrawals.swap_remove(self.rng.gen_range(0..self.withdrawals.len()));
        let confirmed = self.rng.gen_ratio(2, 3);
        assert!(self.model.settle_withdrawal(key, confirmed));
        let tx_hash = format!("0xout{key:x}");
        let result = self.harness.engine.settle_withdrawal(id, confirmed, tx_hash).await;
        let op = result.unwrap_or_else(|error| panic!("seed {}: settle {id}: {error:?}", self.seed));
        let wanted = if confirmed { CryptoOpStatus::Completed } else { CryptoOpStatus::Failed };
        assert_eq!(op.status, wanted, "seed {}: settle {id}", self.seed);
        self.settled.push((id, confirmed));
        self.stats.withdrawals_settled += 1;
    }

    /// A buy or sell order between a wallet and its owner's fiat account, quoted with one side
    /// fixed; now and then quoted in another fiat than the account's.
    async fn order(&mut self) {
        let index = self.wallet();
        let (owner, asset, account) =
            (self.wallets[index].owner, self.wallets[index].asset, self.wallets[index].account);
        let account_currency = self.accounts[account].currency;
        let fiat = if self.rng.gen_ratio(1, 15) {
            CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())]
        } else {
            account_currency
        };
        let buy = self.rng.gen_ratio(1, 2);
        let (fixed_fiat, fixed_crypto) = if self.rng.gen_ratio(1, 2) {
            let amount = if fiat == account_currency {
                self.amount_units(account, 100_000)
            } else {
                Decimal::new(self.rng.gen_range(1..100_000), fiat.scale())
            };
            (Some(amount), None)
        } else {
            (None, Some(self.asset_units(index)))
        };
        let expected = match self.model.fx_rates.get(&(asset.code(), fiat.code())) {
            None => Err("FX_RATE_NOT_FOUND"),
            Some(price) => {
                ModelLedger::price_order(buy, *price, fixed_fiat, fixed_crypto, (fiat.scale(), asset.scale()))
            }
        };
        let side = if buy { Side::Buy } else { Side::Sell };
        let amount = fixed_fiat.map_or_else(|| QuoteAmount::Crypto(fixed_crypto.unwrap()), QuoteAmount::Fiat);
        let what = format!("{side:?} {amount:?} {asset}/{fiat} wallet {index} account {account}");
        let engine = self.harness.engine.clone();
        let quote = engine.quote(owner, side, asset, fiat, amount, engine.now());
        let order = match (expected, quote) {
            (Err(code), Err(error)) => {
                assert_eq!(error.code().as_str(), code, "seed {}: {what}", self.seed);
                return;
            }
            (Ok(order), Ok(quote)) => {
                let terms = quote.terms;
                assert_eq!(
                    (terms.fiat_amount, terms.crypto_amount, terms.fee),
                    (order.fiat_amount, order.crypto_amount, order.fee),
                    "seed {}: {what}",
                    self.seed
                );
                (order, quote)
            }
            (expected, quote) => panic!("seed {}: {what}: model {expected:?}, engine {quote:?}", self.seed),
        };
        let (order, quote) = order;
        let expected = if fiat != account_currency {
            Outcome::Rejected("CURRENCY_MISMATCH")
        } else if buy {
            self.model.buy(account, index, &order)
        } else {
            self.model.sell(account, index, &order)
        };
        let result =
            engine.place_order(owner, quote.id, self.accounts[account].id, None, engine.now()).await.map(|(op, _)| op);
        let actual = Self::crypto_outcome(&result);
        if let Outcome::Rejected(code) = actual {
            *self.rejections.entry(code).or_default() += 1;
        }
        assert_eq!(actual, expected, "seed {}: {what}: {result:?}", self.seed);
        self.stats.orders_completed += usize::from(actual == Outcome::Completed);
    }

    /// Sets a random price (an FX rate asset → fiat) of a crypto asset; USDC in JPY never.
    async fn change_crypto_price(&mut self) {
        let prices = [
            (Currency::BTC, Currency::USD, ["97123.45", "41500", "30000.5"]),
            (Currency::BTC, Currency::EUR, ["89000", "38000.25", "61234.5678"]),
            (Currency::BTC, Currency::JPY, ["14500000", "6000000", "9999999.5"]),
            (Currency::USDC, Currency::USD, ["1", "0.9999", "1.0002"]),
            (Currency::USDC, Currency::EUR, ["0.92", "0.9137", "1.1"]),
        ];
        let (asset, fiat, choices) = prices[self.rng.gen_range(0..prices.len())];
        let price: Decimal = choices[self.rng.gen_range(0..choices.len())].parse().unwrap();
        self.harness
            .engine
            .set_fx_rate(asset, fiat, price, None)
            .await
            .unwrap_or_else(|error| panic!("seed {}: price refused: {error:?}", self.seed));
        self.model.fx_rates.insert((asset.code(), fiat.code()), price);
    }

    /// Every wallet position matches the model's and is within its limit (nothing held beyond
    /// the balance); per currency, fiat and assets, the model's accounts and wallets sum to
    /// zero, and so do the store's; no user account is below zero; every withdrawal ended
    /// as answered.
    async fn check_wallets_and_conservation(&mut self) {
        for (index, wallet) in self.wallets.iter().enumerate() {
            let real = self.harness.engine.wallet(wallet.id).await.unwrap();
            let (balance, held) = real
                .position(wallet.asset)
                .map_or((Decimal::ZERO, Decimal::ZERO), |position| (position.balance, position.held));
            let model = &self.model.wallets[index];
            assert_eq!(
                (balance, held),
                (model.balance, model.held),
                "seed {}: wallet {index} ({})",
                self.seed,
                wallet.asset
            );
            assert!(held >= Decimal::ZERO && balance >= held, "seed {}: wallet {index} below its limit", self.seed);
        }
        for (currency, sum) in self.model.sums() {
            assert!(sum.is_zero(), "seed {}: the model's {currency} sums to {sum}", self.seed);
        }
        for account in self.harness.store.all_accounts().await.unwrap() {
            if !system_accounts::is_system_account(account.id) {
                let real = self.harness.engine.account(account.id).await.unwrap();
                assert!(
                    real.balance() - real.held() >= -real.credit_limit(),
                    "seed {}: {} below its limit",
                    self.seed,
                    real.id
                );
            }
        }
        for (id, confirmed) in &self.settled {
            let op = self.harness.engine.crypto_op(*id).await.unwrap().unwrap();
            let wanted = if *confirmed { CryptoOpStatus::Completed } else { CryptoOpStatus::Failed };
            assert_eq!(op.status, wanted, "seed {}: withdrawal {id}", self.seed);
        }
        for (_, id) in &self.withdrawals {
            let op = self.harness.engine.crypto_op(*id).await.unwrap().unwrap();
            assert_eq!(op.status, CryptoOpStatus::Pending, "seed {}: withdrawal {id}", self.seed);
        }
        let sums = self.harness.assert_ledger_consistent().await;
        for asset in ASSETS {
            if self.model.wallets.iter().any(|wallet| wallet.asset == asset.code() && !wallet.balance.is_zero()) {
                assert_eq!(sums.get(&asset), Some(&Decimal::ZERO), "seed {}: {asset} in the store", self.seed);
            }
        }
        assert!(sums.values().all(Decimal::is_zero), "seed {}: store sums {sums:?}", self.seed);
        // Every matched rule raised exactly one flag (flags are durable with their transfer).
        let filter = tally_persistence::aml::FlagFilter { status: None, account: None, transfer: None };
        let flags = self.harness.store.aml().unwrap().count_aml_flags(filter).await.unwrap();
        assert_eq!(flags, self.model.aml_flags, "seed {}: AML flags raised", self.seed);
        // And the transfers that waited for review are exactly those the model sent there.
        assert_eq!(self.stats.aml_reviewed as u64, self.model.aml_reviews, "seed {}: AML reviews", self.seed);
    }

    async fn check_final_state(&mut self) {
        for (index, account) in self.accounts.iter().enumerate() {
            let real = self.harness.engine.account(account.id).await.unwrap();
            let model = &self.model.accounts[index];
            let status = match real.status {
                AccountStatus::Active => ModelStatus::Active,
                AccountStatus::Blocked => ModelStatus::Blocked,
                AccountStatus::Closed => ModelStatus::Closed,
            };
            assert_eq!(
                (real.balance(), real.held(), status),
                (model.balance, model.held, model.status),
                "seed {}: account {index} ({})",
                self.seed,
                account.currency
            );
        }
        for (id, status) in &self.expected {
            let stored = self.harness.engine.load_transfer(*id).await.unwrap();
            assert_eq!(stored.map(|t| t.status), Some(*status), "seed {}: transfer {id}", self.seed);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Execute,
    Reject,
    Cancel,
}
