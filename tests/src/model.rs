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
}

#[derive(Default, Debug)]
pub struct ModelLedger {
    pub accounts: Vec<ModelAccount>,
    pub pending: HashMap<u64, ModelPending>,
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

    /// A transfer of `amount` written in `currency` (of `scale` decimals) from `source` to
    /// `destination`. With `manual`, it stops pending after the hold under that key.
    pub fn transfer(
        &mut self,
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
        let from = &self.accounts[source];
        if from.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        if from.currency != currency {
            return Outcome::Rejected("CURRENCY_MISMATCH");
        }
        if !from.system && amount > self.available(source) {
            return Outcome::Rejected("INSUFFICIENT_FUNDS");
        }
        if let Some(key) = manual {
            self.accounts[source].held += amount;
            self.pending.insert(key, ModelPending { source, destination, amount });
            return Outcome::Pending;
        }
        self.credit_and_post(source, destination, amount, currency)
    }

    fn credit_and_post(&mut self, source: usize, destination: usize, amount: Decimal, currency: &str) -> Outcome {
        let to = &self.accounts[destination];
        if to.status != ModelStatus::Active {
            return Outcome::Rejected("ACCOUNT_NOT_ACTIVE");
        }
        if to.currency != currency {
            return Outcome::Rejected("CURRENCY_MISMATCH");
        }
        self.accounts[destination].balance += amount;
        self.accounts[source].balance -= amount;
        Outcome::Completed
    }

    /// Executes a pending transfer. The hold is released whatever happens.
    pub fn execute(&mut self, key: u64) -> Option<Outcome> {
        let pending = self.pending.remove(&key)?;
        self.accounts[pending.source].held -= pending.amount;
        let currency = self.accounts[pending.source].currency;
        Some(self.credit_and_post(pending.source, pending.destination, pending.amount, currency))
    }

    /// Rejects or cancels a pending transfer.
    pub fn release(&mut self, key: u64) -> bool {
        match self.pending.remove(&key) {
            Some(pending) => {
                self.accounts[pending.source].held -= pending.amount;
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
