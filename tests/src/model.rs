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

#[derive(Clone, Debug)]
pub struct ModelPending {
    pub source: usize,
    pub destination: usize,
    pub amount: Decimal,
    pub fee: Decimal,
    /// What the destination receives, in its own currency.
    pub delivered: Decimal,
    pub currency: &'static str,
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
    /// `currency` (of `scale` decimals) from `source` to `destination`. With `manual`, it
    /// stops pending after the hold under that key. Checked in the engine's order: the request
    /// alone, its price (fee, FX rate, conversion), the source, the destination.
    pub fn transfer(
        &mut self,
        kind: &'static str,
        source: usize,
        destination: usize,
        amount: Decimal,
        (currency, scale): (&'static str, u32),
        manual: Option<u64>,
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
        let pending = ModelPending { source, destination, amount, fee, delivered, currency };
        if let Some(key) = manual {
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
        Some(self.credit_and_post(&pending))
    }

    /// Rejects or cancels a pending transfer.
    pub fn release(&mut self, key: u64) -> bool {
        match self.pending.remove(&key) {
            Some(pending) => {
                self.accounts[pending.source].held -= pending.amount + pending.fee;
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
