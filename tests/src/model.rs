//! A plain, single-threaded model ledger: the obvious implementation of Tally's transfer
//! rules, written without actors, journal or engine types' methods, to check the real system
//! against. If the two disagree, one of them is wrong.

use std::collections::HashMap;

use rust_decimal::Decimal;

/// The model's view of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelAccount {
    pub currency: &'static str,
    pub scale: u32,
    pub balance: Decimal,
    pub held: Decimal,
    pub status: ModelStatus,
    pub system: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelStatus {
    Active,
    Blocked,
    Closed,
}

/// The outcome the model expects, as an API error code or success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Pending,
    Rejected(&'static str),
}

/// A user's verification limits in one currency: `(per_transfer, daily, monthly)` maxima,
/// `None` unbounded.
pub type ModelLimits = (Option<Decimal>, Option<Decimal>, Option<Decimal>);

/// What a (user, currency) has counted in its latest UTC day and calendar month seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelUsage {
    /// Days since 1970-01-01, and `year * 12 + month - 1`.
    pub day: i64,
    pub month: i64,
    pub today: Decimal,
    pub this_month: Decimal,
}

impl ModelUsage {
    /// The windows of `at` (microseconds), UTC.
    pub fn windows(at: i64) -> (i64, i64) {
        let day = at.div_euclid(86_400_000_000);
        let (year, month, _) = tally_engine::limits::civil_from_days(day);
        (day, year * 12 + month - 1)
    }

    /// The usage as of `at`: a later day or month starts from zero (a clock stepping back
    /// keeps the later window, as the engine does).
    pub fn rolled(self, at: i64) -> ModelUsage {
        let (day, month) = ModelUsage::windows(at);
        let mut rolled = self;
        if day > self.day {
            rolled.day = day;
            rolled.today = Decimal::ZERO;
        }
        if month > self.month {
            rolled.month = month;
            rolled.this_month = Decimal::ZERO;
        }
        rolled
    }
}

#[derive(Clone, Debug)]
pub struct ModelPending {
    pub source: usize,
    pub destination: usize,
    pub amount: Decimal,
    pub fee: Decimal,
    /// What the destination receives, in its own currency.
    pub delivered: Decimal,
    pub currency: &'static str,
    /// The user whose verification limits count the amount (`ModelLedger::limits`) and the
    /// transfer's creation time (microseconds: its day and month are the windows counted), if any.
    pub counted: Option<(u64, i64)>,
}

/// A fee rule as the model sees it: every kind is a list of tiers (a flat or percentage rule
/// is one open tier), then clamps.
#[derive(Clone, Debug, Default)]
pub struct ModelFee {
    /// `(up_to, flat, percent)`, ascending; `None` is unbounded.
    pub tiers: Vec<(Option<Decimal>, Decimal, Decimal)>,
    pub min: Option<Decimal>,
    pub max: Option<Decimal>,
}

impl ModelFee {
    /// Percent part rounded half away from zero at `scale`, plus the flat part, clamped.
    pub fn fee(&self, amount: Decimal, scale: u32) -> Decimal {
        let Some(last) = self.tiers.last() else { return Decimal::ZERO };
        let (_, flat, percent) =
            self.tiers.iter().find(|(up_to, ..)| up_to.is_none_or(|up_to| amount <= up_to)).unwrap_or(last);
        let part = (amount * percent / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        let mut fee = part + flat;
        if let Some(min) = self.min {
            fee = fee.max(min);
        }
        if let Some(max) = self.max {
            fee = fee.min(max);
        }
        fee
    }
}

#[derive(Default, Debug)]
pub struct ModelLedger {
    pub accounts: Vec<ModelAccount>,
    pub pending: HashMap<u64, ModelPending>,
    /// The fee revenue and FX clearing account of each currency the model knows.
    pub fee_accounts: HashMap<&'static str, usize>,
    pub fx_accounts: HashMap<&'static str, usize>,
    /// Fee rules by (transfer type, currency); FX rates by (from, to), directed.
    pub fee_rules: HashMap<(&'static str, &'static str), ModelFee>,
    pub fx_rates: HashMap<(&'static str, &'static str), Decimal>,
    /// AML threshold rules, in force for internal and external transfers.
    pub aml_rules: Vec<ModelAmlRule>,
    /// Wallet positions, one asset each, and what the crypto flows need of them.
    pub wallets: Vec<ModelWallet>,
    /// The settlement and FX clearing account of each crypto asset the model knows.
    pub settlement_accounts: HashMap<&'static str, usize>,
    /// Deposit chain transactions already credited: to which wallet, and how much.
    pub deposit_hashes: HashMap<String, (usize, Decimal)>,
    /// Withdrawals waiting for the custodian: key to (wallet, amount).
    pub withdrawals: HashMap<u64, (usize, Decimal)>,
    /// AML flags raised: one per matched rule of every screened transfer.
    pub aml_flags: u64,
    /// Transfers an AML rule stopped `pending` for review.
    pub aml_reviews: u64,
    /// Verification limits (issue 15) of each (user, currency) with any: `(per_transfer,
    /// daily, monthly)`, `None` unbounded. A user is any number the caller chooses.
    pub limits: HashMap<(u64, &'static str), ModelLimits>,
    /// What each (user, currency) has counted, by UTC day and calendar month.
    pub limit_usage: HashMap<(u64, &'static str), ModelUsage>,
    /// Transfers refused `VERIFICATION_LIMIT_EXCEEDED`.
    pub limit_refusals: u64,
}

/// What a matched AML rule does, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelAmlAction {
    Flag,
    Review,
    Block,
}

/// An AML threshold rule: matches a screened transfer of at least `amount` written in
/// `currency`, of type `kind` if one is named.
#[derive(Clone, Debug)]
pub struct ModelAmlRule {
    pub amount: Decimal,
    pub currency: &'static str,
    pub kind: Option<&'static str>,
    pub action: ModelAmlAction,
}

/// A wallet's position in its one asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelWallet {
    pub asset: &'static str,
    pub scale: u32,
    pub balance: Decimal,
    pub held: Decimal,
}

/// The outcome of a custodian deposit report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositOutcome {
    Credited,
    /// The tx_hash was already credited: nothing changes.
    Repeat,
    Rejected(&'static str),
}

/// The figures of a crypto order, as the model prices it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOrder {
    pub fiat_amount: Decimal,
    pub crypto_amount: Decimal,
    pub fee: Decimal,
}

impl ModelLedger {
    pub fn add_account(&mut self, currency: &'static str, scale: u32, system: bool) -> usize {
        self.accounts.push(ModelAccount {
            currency,
            scale,
            balance: Decimal::ZERO,
            held: Decimal::ZERO,
            status: ModelStatus::Active,
            system,
        });
        self.accounts.len() - 1
    }

    fn available(&self, index: usize) -> Decimal {
        let account = &self.accounts[index];
        account.balance - account.held
    }

    /// A transfer of `kind` ("internal", "external", "admin") of `amount` written in
    /// `currency` (of `scale` decimals) from `source` to `destination`. With `manual`, or when
    /// an AML rule asks for review, it stops pending after the hold under `key` (a screened
    /// transfer always has one). Checked in the engine's order: the request alone, its price
    /// (fee, FX rate, conversion), the AML screen, the source, the destination.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &mut self,
        kind: &'static str,
        source: usize,
        destination: usize,
        amount: Decimal,
        currency: (&'static str, u32),
        key: Option<u64>,
        manual: bool,
    ) -> Outcome {
        self.transfer_initiated(kind, source, destination, amount, currency, key, manual, None)
    }

    /// `transfer` initiated by `initiator` (a customer's transfer), whose verification limits
    /// count it as the engine's step 1 does (actors/src/limits.rs, docs/ledger-views.md): for
    /// internal and external transfers, after pricing (fees, FX) and before AML screening and
    /// the hold, in the transfer's currency, the amount without the fee; a bound met at
    /// equality passes. A counted transfer that then fails (blocked, an inactive account, a
    /// currency mismatch, insufficient funds), or that waits pending and is rejected,
    /// cancelled or fails on execution, gives its amount back.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer_initiated(
        &mut self,
        kind: &'static str,
        source: usize,
        destination: usize,
        amount: Decimal,
        (currency, scale): (&'static str, u32),
        key: Option<u64>,
        manual: bool,
        initiator: Option<(u64, i64)>,
    ) -> Outcome {
        if amount <= Decimal::ZERO || amount.normalize().scale() > scale {
            return Outcome::Rejected("VALIDATION_ERROR");
        }
        if source == destination {
            return Outcome::Rejected("VALIDATION_ERROR");
        }
        let fee = self.fee_rules.get(&(kind, currency)).map_or(Decimal::ZERO, |rule| rule.fee(amount, scale));
        let to = &self.accounts[destination];
        let delivered = if to.currency == currency {
            amount
        } else {
            let Some(rate) = self.fx_rates.get(&(currency, to.currency)) else {
                return Outcome::Rejected("FX_RATE_NOT_FOUND");
            };
            // Truncated to the destination's decimals.
            let converted = (amount * rate).round_dp_with_strategy(to.scale, rust_decimal::RoundingStrategy::ToZero);
            if converted.is_zero() {
                return Outcome::Rejected("AMOUNT_LIMIT_EXCEEDED");
            }
            converted
        };
        let screened = kind == "internal" || kind == "external";
        let counted = initiator.filter(|_| screened);
        if let Some((user, at)) = counted {
            let (per_transfer, daily, monthly) = self.limits.get(&(user, currency)).copied().unwrap_or_default();
            let (day, month) = ModelUsage::windows(at);
            let usage = self
                .limit_usage
                .get(&(user, currency))
                .copied()
                .unwrap_or(ModelUsage { day, month, ..ModelUsage::default() })
                .rolled(at);
            let (today, this_month) = (usage.today + amount, usage.this_month + amount);
            if per_transfer.is_some_and(|max| amount > max)
                || daily.is_some_and(|max| today > max)
                || monthly.is_some_and(|max| this_month > max)
            {
                self.limit_refusals += 1;
                return Outcome::Rejected("VERIFICATION_LIMIT_EXCEEDED");
            }
            self.limit_usage.insert((user, currency), ModelUsage { today, this_month, ..usage });
        }
        let outcome =
            self.screen_and_hold(kind, source, destination, amount, fee, delivered, currency, key, manual, counted);
        if let (Outcome::Rejected(_), Some(counted)) = (outcome, counted) {
            self.give_back(counted, currency, amount);
        }
        outcome
    }

    /// Gives a counted amount back to the windows it was counted in, if they are still the
    /// user's latest (never below zero), as the engine does.
    fn give_back(&mut self, (user, at): (u64, i64), currency: &'static str, amount: Decimal) {
        let (day, month) = ModelUsage::windows(at);
        if let Some(usage) = self.limit_usage.get_mut(&(user, currency)) {
            if usage.day == day {
                usage.today = (usage.today - amount).max(Decimal::ZERO);
            }
            if usage.month == month {
                usage.this_month = (usage.this_month - amount).max(Decimal::ZERO);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn screen_and_hold(
        &mut self,
        kind: &'static str,
        source: usize,
        destination: usize,
        amount: Decimal,
        fee: Decimal,
        delivered: Decimal,
        currency: &'static str,
        key: Option<u64>,
        manual: bool,
        counted: Option<(u64, i64)>,
    ) -> Outcome {
        let screened = kind == "internal" || kind == "external";
        let matched: Vec<ModelAmlAction> = self
            .aml_rules
            .iter()
            .filter(|rule| {
                screened
                    && rule.currency == currency
                    && rule.kind.is_none_or(|only| only == kind)
                    && amount >= rule.amount
            })
            .map(|rule| rule.action)
            .collect();
        self.aml_flags += matched.len() as u64;
        let aml = matched.into_iter().max();
        if aml == Some(ModelAmlAction::Block) {
            return Outcome::Rejected("TRANSFER_BLOCKED");
        }
        let manual = manual || aml == Some(ModelAmlAction::Review);
        let from = &self.accounts[source];
        if from.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        if from.currency != currency {
            return Outcome::Rejected("CURRENCY_MISMATCH");
        }
        let total = amount + fee;
        if !from.system && total > self.available(source) {
            return Outcome::Rejected("INSUFFICIENT_FUNDS");
        }
        let pending = ModelPending { source, destination, amount, fee, delivered, currency, counted };
        if manual {
            let key = key.expect("a transfer that may stop pending has a key");
            self.aml_reviews += u64::from(aml == Some(ModelAmlAction::Review));
            self.accounts[source].held += total;
            self.pending.insert(key, pending);
            return Outcome::Pending;
        }
        self.credit_and_post(&pending)
    }

    fn credit_and_post(&mut self, transfer: &ModelPending) -> Outcome {
        let to = &self.accounts[transfer.destination];
        if to.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        let to_currency = to.currency;
        self.accounts[transfer.destination].balance += transfer.delivered;
        self.accounts[transfer.source].balance -= transfer.amount + transfer.fee;
        if !transfer.fee.is_zero() {
            self.accounts[self.fee_accounts[transfer.currency]].balance += transfer.fee;
        }
        if to_currency != transfer.currency {
            self.accounts[self.fx_accounts[transfer.currency]].balance += transfer.amount;
            self.accounts[self.fx_accounts[to_currency]].balance -= transfer.delivered;
        }
        Outcome::Completed
    }

    /// Executes a pending transfer at the price it was created with. The hold is released
    /// whatever happens.
    pub fn execute(&mut self, key: u64) -> Option<Outcome> {
        let pending = self.pending.remove(&key)?;
        self.accounts[pending.source].held -= pending.amount + pending.fee;
        let outcome = self.credit_and_post(&pending);
        if let (Outcome::Rejected(_), Some(counted)) = (outcome, pending.counted) {
            self.give_back(counted, pending.currency, pending.amount);
        }
        Some(outcome)
    }

    /// Rejects or cancels a pending transfer.
    pub fn release(&mut self, key: u64) -> bool {
        match self.pending.remove(&key) {
            Some(pending) => {
                self.accounts[pending.source].held -= pending.amount + pending.fee;
                if let Some(counted) = pending.counted {
                    self.give_back(counted, pending.currency, pending.amount);
                }
                true
            }
            None => false,
        }
    }

    pub fn set_status(&mut self, index: usize, status: ModelStatus) -> Result<(), &'static str> {
        let account = &mut self.accounts[index];
        if account.status == ModelStatus::Closed {
            return Err("CONFLICT");
        }
        if status == ModelStatus::Closed && (!account.balance.is_zero() || !account.held.is_zero()) {
            return Err("ACCOUNT_NOT_EMPTY");
        }
        account.status = status;
        Ok(())
    }
}

impl ModelLedger {
    pub fn add_wallet(&mut self, asset: &'static str, scale: u32) -> usize {
        self.wallets.push(ModelWallet { asset, scale, balance: Decimal::ZERO, held: Decimal::ZERO });
        self.wallets.len() - 1
    }

    fn valid_amount(amount: Decimal, scale: u32) -> bool {
        amount > Decimal::ZERO && amount.normalize().scale() <= scale
    }

    /// A custodian reports `amount` arriving in `wallet` by chain transaction `tx_hash`: the
    /// first report credits the wallet against the asset's settlement account, a repeat of
    /// the same report changes nothing, and a report of a known hash for another wallet or
    /// amount is refused (`CONFLICT`) and changes nothing either.
    pub fn deposit(&mut self, wallet: usize, amount: Decimal, tx_hash: &str) -> DepositOutcome {
        if let Some((first_wallet, first_amount)) = self.deposit_hashes.get(tx_hash) {
            return if *first_wallet == wallet && *first_amount == amount {
                DepositOutcome::Repeat
            } else {
                DepositOutcome::Rejected("CONFLICT")
            };
        }
        let (asset, scale) = (self.wallets[wallet].asset, self.wallets[wallet].scale);
        if !Self::valid_amount(amount, scale) {
            return DepositOutcome::Rejected("VALIDATION_ERROR");
        }
        self.deposit_hashes.insert(tx_hash.to_owned(), (wallet, amount));
        self.wallets[wallet].balance += amount;
        self.accounts[self.settlement_accounts[asset]].balance -= amount;
        DepositOutcome::Credited
    }

    /// A withdrawal: the amount is held on the wallet until the custodian answers.
    pub fn withdraw(&mut self, wallet: usize, amount: Decimal, key: u64) -> Outcome {
        let position = &self.wallets[wallet];
        if !Self::valid_amount(amount, position.scale) {
            return Outcome::Rejected("VALIDATION_ERROR");
        }
        if amount > position.balance - position.held {
            return Outcome::Rejected("INSUFFICIENT_FUNDS");
        }
        self.wallets[wallet].held += amount;
        self.withdrawals.insert(key, (wallet, amount));
        Outcome::Pending
    }

    /// The custodian's answer: confirmed posts the held amount to settlement, failed releases
    /// it. False if the withdrawal was not pending.
    pub fn settle_withdrawal(&mut self, key: u64, confirmed: bool) -> bool {
        let Some((wallet, amount)) = self.withdrawals.remove(&key) else { return false };
        self.wallets[wallet].held -= amount;
        if confirmed {
            self.wallets[wallet].balance -= amount;
            let asset = self.wallets[wallet].asset;
            self.accounts[self.settlement_accounts[asset]].balance += amount;
        }
        true
    }

    /// Prices an order at `price` (fiat per unit of the asset), one side fixed: rounding never
    /// favours the customer (crypto bought and fiat received round down; fiat paid, crypto
    /// sold and the 1 % fee round up).
    pub fn price_order(
        buy: bool,
        price: Decimal,
        fixed_fiat: Option<Decimal>,
        fixed_crypto: Option<Decimal>,
        (fiat_scale, asset_scale): (u32, u32),
    ) -> Result<ModelOrder, &'static str> {
        use rust_decimal::RoundingStrategy::{AwayFromZero, ToZero};
        let (fiat_amount, crypto_amount) = match (buy, fixed_fiat, fixed_crypto) {
            (true, Some(fiat), _) => (fiat, (fiat / price).round_dp_with_strategy(asset_scale, ToZero)),
            (true, None, Some(crypto)) => ((crypto * price).round_dp_with_strategy(fiat_scale, AwayFromZero), crypto),
            (false, _, Some(crypto)) => ((crypto * price).round_dp_with_strategy(fiat_scale, ToZero), crypto),
            (false, Some(fiat), None) => (fiat, (fiat / price).round_dp_with_strategy(asset_scale, AwayFromZero)),
            _ => unreachable!("one side is fixed"),
        };
        let fee = (fiat_amount / Decimal::ONE_HUNDRED).round_dp_with_strategy(fiat_scale, AwayFromZero);
        if crypto_amount <= Decimal::ZERO || fiat_amount <= Decimal::ZERO || (!buy && fee >= fiat_amount) {
            return Err("VALIDATION_ERROR");
        }
        Ok(ModelOrder { fiat_amount, crypto_amount, fee })
    }

    /// A buy: the fiat account pays the price plus the fee; the wallet receives the crypto
    /// from the asset's FX clearing account, the fiat goes to the fiat's FX clearing account
    /// and the fee to the fee account.
    pub fn buy(&mut self, account: usize, wallet: usize, order: &ModelOrder) -> Outcome {
        let from = &self.accounts[account];
        if from.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        let total = order.fiat_amount + order.fee;
        if total > self.available(account) {
            return Outcome::Rejected("INSUFFICIENT_FUNDS");
        }
        let fiat = from.currency;
        let asset = self.wallets[wallet].asset;
        self.accounts[account].balance -= total;
        self.accounts[self.fx_accounts[fiat]].balance += order.fiat_amount;
        self.accounts[self.fee_accounts[fiat]].balance += order.fee;
        self.accounts[self.fx_accounts[asset]].balance -= order.crypto_amount;
        self.wallets[wallet].balance += order.crypto_amount;
        Outcome::Completed
    }

    /// A sell: the wallet gives the crypto to the asset's FX clearing account; the fiat
    /// account receives its worth less the fee.
    pub fn sell(&mut self, account: usize, wallet: usize, order: &ModelOrder) -> Outcome {
        let position = &self.wallets[wallet];
        if order.crypto_amount > position.balance - position.held {
            return Outcome::Rejected("INSUFFICIENT_FUNDS");
        }
        let to = &self.accounts[account];
        if to.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        let fiat = to.currency;
        let asset = position.asset;
        self.accounts[account].balance += order.fiat_amount - order.fee;
        self.accounts[self.fee_accounts[fiat]].balance += order.fee;
        self.accounts[self.fx_accounts[fiat]].balance -= order.fiat_amount;
        self.accounts[self.fx_accounts[asset]].balance += order.crypto_amount;
        self.wallets[wallet].balance -= order.crypto_amount;
        Outcome::Completed
    }

    /// Per currency (fiat and assets), the sum over every account and wallet position.
    pub fn sums(&self) -> HashMap<&'static str, Decimal> {
        let mut sums: HashMap<&'static str, Decimal> = HashMap::new();
        for account in &self.accounts {
            *sums.entry(account.currency).or_default() += account.balance;
        }
        for wallet in &self.wallets {
            *sums.entry(wallet.asset).or_default() += wallet.balance;
        }
        sums
    }
}
