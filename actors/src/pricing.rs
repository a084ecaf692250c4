//! Pricing in the engine: FX rates, fee rules and transfer-type settings, kept in memory for
//! the hot path and written through to the store by admins.
//!
//! Read path: `Engine::fx_rate`, `Engine::price` and the fee lookup read in-memory tables
//! behind `RwLock`s (held for a lookup, never across an `.await`): no database round trip per
//! transfer. Write path: an admin change is validated, written to the store first, and only
//! then swapped into memory, so memory never shows a change the store does not have; admin
//! writes are serialised by one async mutex, which also makes "at most one enabled fee rule
//! per (type, currency)" a check-then-write without a race.
//!
//! Pricing a transfer (`Engine::price`, saga step 1, shared by the quote and the transfer so a
//! quote is exactly what the transfer then does): type settings (enabled, limits), the fee of
//! the enabled rule for (type, source currency), then for a destination in another currency
//! the rate (fixed now and stored on the transfer: executing a pending FX transfer later uses
//! the rate it was created with) and the converted amount.

use std::collections::HashMap;
use std::sync::RwLock;

use rust_decimal::Decimal;
use tally_engine::fees::{self, InvalidFeeRule};
use tally_engine::fx::{self, ConversionError, RateError};
use tally_engine::{
    AccountId, AuditRecord, CreateTransferRejection, Currency, ErrorCode, FeeRule, FxRate, Transfer, TransferKind,
    TransferRequest, TransferTypeSettings, UserId, money,
};
use tally_persistence::{PricingChange, PricingTables, Store, StoreError};

use crate::engine::{Engine, EngineError, TransferError};

/// Why an admin's pricing change was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PricingError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("store: {0}")]
    Store(StoreError),
}

impl PricingError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PricingError::Invalid { .. } => ErrorCode::ValidationError,
            PricingError::Conflict(_) => ErrorCode::Conflict,
            PricingError::NotFound => ErrorCode::NotFound,
            // A refused write is retried by the admin; the store's detail goes to the log.
            PricingError::Store(_) => ErrorCode::Overloaded,
        }
    }
}

impl From<InvalidFeeRule> for PricingError {
    fn from(error: InvalidFeeRule) -> Self {
        PricingError::Invalid { field: error.field, message: error.message }
    }
}

impl From<RateError> for PricingError {
    fn from(error: RateError) -> Self {
        let field = if error == RateError::SameCurrency { "to" } else { "rate" };
        PricingError::Invalid { field, message: error.to_string() }
    }
}

/// Most accounts whose facts are remembered (`Pricing::account_facts`): about 70 MB at the
/// bound (34 bytes an entry, in tables kept at most 7/8 full), for the million accounts of the
/// performance budget. Past it, the actor is asked.
const ACCOUNT_FACTS_MAX: usize = 1 << 20;

/// What never changes about an account once it is open: its currency and its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountFacts {
    pub currency: Currency,
    /// `None` for the system accounts (settlement, fees, FX clearing).
    pub owner: Option<UserId>,
}

/// The in-memory pricing tables of a running engine.
#[derive(Default)]
pub(crate) struct Pricing {
    /// An account's currency and owner never change, so they are remembered instead of asking
    /// the account's actor on every transfer: the source's owner (is it the caller's?) and the
    /// destination's currency were each a mailbox round trip, often to the other thread.
    account_facts: crate::IdMap<AccountId, AccountFacts>,
    fx_rates: RwLock<HashMap<(Currency, Currency), FxRate>>,
    /// Every rule, enabled or not, in creation order.
    fee_rules: RwLock<Vec<FeeRule>>,
    /// Serialises admin writes (store first, then memory).
    writes: tokio::sync::Mutex<()>,
}

impl Pricing {
    /// The tables as stored, and the transfer-type settings an admin changed.
    pub(crate) async fn load(
        store: &dyn Store,
    ) -> Result<(Pricing, Vec<(TransferKind, TransferTypeSettings)>), StoreError> {
        let PricingTables { fx_rates, fee_rules, transfer_types } = store.load_pricing().await?;
        let pricing = Pricing {
            account_facts: crate::IdMap::default(),
            fx_rates: RwLock::new(fx_rates.into_iter().map(|rate| ((rate.from, rate.to), rate)).collect()),
            fee_rules: RwLock::new(fee_rules),
            writes: tokio::sync::Mutex::new(()),
        };
        Ok((pricing, transfer_types))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    fn pricing(&self) -> &Pricing {
        &self.inner.pricing
    }

    // ---- FX rates -------------------------------------------------------------------------

    /// The rate that converts one unit of `from` into `to`, as an admin set it (directed: the
    /// inverse is not implied). A currency converts to itself at 1. From memory, no I/O.
    pub fn fx_rate(&self, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        read(&self.pricing().fx_rates).get(&(from, to)).map(|rate| rate.rate)
    }

    /// Every rate set, ordered by (from, to) code.
    pub fn fx_rates(&self) -> Vec<FxRate> {
        let mut rates: Vec<FxRate> = read(&self.pricing().fx_rates).values().cloned().collect();
        rates.sort_by(|a, b| (a.from.code(), a.to.code()).cmp(&(b.from.code(), b.to.code())));
        rates
    }

    /// Sets (or replaces) the rate `from` → `to`. Returns once the store has it; only then do
    /// new transfers use it. Transfers already created keep the rate they were created with.
    /// `audit` (an admin's record of the change) is stored in the same transaction.
    pub async fn set_fx_rate(
        &self,
        from: Currency,
        to: Currency,
        rate: Decimal,
        audit: Option<&AuditRecord>,
    ) -> Result<(), PricingError> {
        let rate = fx::validate_rate(from, to, rate)?;
        let fx_rate = FxRate { from, to, rate, updated_at: self.now() };
        let _writing = self.pricing().writes.lock().await;
        self.store().save_pricing(&PricingChange::FxRate(fx_rate.clone()), audit).await.map_err(PricingError::Store)?;
        write(&self.pricing().fx_rates).insert((from, to), fx_rate);
        Ok(())
    }

    // ---- fee rules ------------------------------------------------------------------------

    pub fn fee_rules(&self) -> Vec<FeeRule> {
        read(&self.pricing().fee_rules).clone()
    }

    pub fn fee_rule(&self, id: uuid::Uuid) -> Option<FeeRule> {
        read(&self.pricing().fee_rules).iter().find(|rule| rule.id == id).cloned()
    }

    /// Creates a rule from `spec` (its id and times are assigned here). `409` if it is enabled
    /// and another enabled rule covers the same (type, currency). `audit` (an admin's record of
    /// the change, whose target id the caller chose: pass `id`) is stored in the same
    /// transaction.
    pub async fn create_fee_rule(
        &self,
        id: uuid::Uuid,
        spec: FeeRule,
        audit: Option<&AuditRecord>,
    ) -> Result<FeeRule, PricingError> {
        let now = self.now();
        let rule = FeeRule { id, created_at: now, updated_at: now, ..spec }.validate()?;
        let _writing = self.pricing().writes.lock().await;
        self.save_fee_rule(rule, audit).await
    }

    /// Replaces rule `id` with what `replace` makes of the stored rule (given as it stands
    /// under the pricing writes' lock, so a field the caller keeps, `enabled` when a `PUT`
    /// leaves it out, is the one stored and not one a concurrent write has just changed),
    /// keeping its id and creation time.
    pub async fn update_fee_rule(
        &self,
        id: uuid::Uuid,
        audit: Option<&AuditRecord>,
        replace: impl FnOnce(&FeeRule) -> FeeRule,
    ) -> Result<FeeRule, PricingError> {
        let _writing = self.pricing().writes.lock().await;
        let existing = self.fee_rule(id).ok_or(PricingError::NotFound)?;
        let spec = replace(&existing);
        let rule = FeeRule { id, created_at: existing.created_at, updated_at: self.now(), ..spec }.validate()?;
        self.save_fee_rule(rule, audit).await
    }

    /// Stores a validated rule and puts it in force. The caller holds the pricing writes'
    /// lock, so the check for a clashing enabled rule and the store's write are one step.
    async fn save_fee_rule(&self, rule: FeeRule, audit: Option<&AuditRecord>) -> Result<FeeRule, PricingError> {
        if rule.enabled {
            let clash = read(&self.pricing().fee_rules)
                .iter()
                .find(|other| {
                    other.enabled
                        && other.id != rule.id
                        && other.transfer_type == rule.transfer_type
                        && other.currency == rule.currency
                })
                .map(|other| other.id);
            if let Some(other) = clash {
                return Err(PricingError::Conflict(format!(
                    "fee rule {other} is already enabled for {} transfers in {}; disable it first",
                    rule.transfer_type.as_str(),
                    rule.currency
                )));
            }
        }
        self.store().save_pricing(&PricingChange::FeeRule(rule.clone()), audit).await.map_err(PricingError::Store)?;
        let mut rules = write(&self.pricing().fee_rules);
        match rules.iter_mut().find(|old| old.id == rule.id) {
            Some(old) => *old = rule.clone(),
            None => rules.push(rule.clone()),
        }
        Ok(rule)
    }

    /// The fee for `amount` of a `kind` transfer in `currency`: the enabled rule's, or zero.
    /// Admin adjustments are never charged.
    pub fn fee_for(&self, kind: TransferKind, currency: Currency, amount: Decimal) -> Result<Decimal, money::Overflow> {
        if !matches!(kind, TransferKind::Internal | TransferKind::External) {
            return Ok(money::with_currency_scale(Decimal::ZERO, currency));
        }
        fees::fee_for(read(&self.pricing().fee_rules).iter(), kind, currency, amount)
    }

    // ---- transfer types -------------------------------------------------------------------

    /// Changes a transfer type's settings: stored first, then in effect for new transfers.
    pub async fn save_transfer_type(
        &self,
        kind: TransferKind,
        settings: TransferTypeSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), PricingError> {
        settings
            .validate_limits()
            .map_err(|(field, message)| PricingError::Invalid { field, message: message.to_owned() })?;
        let _writing = self.pricing().writes.lock().await;
        self.store()
            .save_pricing(&PricingChange::TransferType(kind, settings.clone()), audit)
            .await
            .map_err(PricingError::Store)?;
        self.set_transfer_type(kind, settings);
        Ok(())
    }

    // ---- pricing a transfer ---------------------------------------------------------------

    /// An account's currency and owner: remembered after the first read of the account
    /// (they never change), else read from its actor. `NotFound` for no such account.
    pub async fn account_facts(&self, id: AccountId) -> Result<AccountFacts, EngineError> {
        match self.remembered_account_facts(id) {
            Some(facts) => Ok(facts),
            None => self.read_account_facts(id).await,
        }
    }

    /// An account's currency and owner if remembered: no await, no actor.
    fn remembered_account_facts(&self, id: AccountId) -> Option<AccountFacts> {
        self.pricing().account_facts.get(&id).map(|facts| *facts)
    }

    /// An account's currency and owner read from its actor, then remembered.
    async fn read_account_facts(&self, id: AccountId) -> Result<AccountFacts, EngineError> {
        let account = self.account(id).await?;
        let facts = AccountFacts { currency: account.currency, owner: account.owner };
        let remembered = &self.pricing().account_facts;
        if remembered.len() < ACCOUNT_FACTS_MAX {
            remembered.insert(id, facts);
        }
        Ok(facts)
    }

    /// Saga step 1 for a customer or admin request: validates it against its type's settings,
    /// sets its fee, resolves the destination's currency and converts. Returns the transfer as
    /// its saga will start it. Nothing is held or recorded.
    pub async fn price(&self, request: TransferRequest) -> Result<Transfer, TransferError> {
        let settings = self.transfer_type(request.kind);
        self.price_under(request, &settings).await
    }

    /// `price` under type `settings` the caller read once: step 1 also decides from them
    /// whether the transfer stops pending and when it expires, and a second read could meet an
    /// admin's change in between (new bounds with the old execution mode).
    pub(crate) async fn price_under(
        &self,
        request: TransferRequest,
        settings: &TransferTypeSettings,
    ) -> Result<Transfer, TransferError> {
        let mut request = request.validate(settings).map_err(TransferError::Rejected)?;
        let reject = TransferError::Rejected;
        if matches!(request.kind, TransferKind::Internal | TransferKind::External) {
            request.fee = self
                .fee_for(request.kind, request.currency, request.amount)
                .map_err(|_| reject(CreateTransferRejection::Overflow))?;
        }
        money::add(request.amount, request.fee).map_err(|_| reject(CreateTransferRejection::Overflow))?;
        let destination_currency = if request.kind != TransferKind::Internal {
            // External payouts and adjustments settle in the source currency.
            request.currency
        } else {
            // Remembered facts are the common case; the read of an account's actor is a large
            // future, boxed so that it does not make every transfer's future (and each move of
            // it) that much larger.
            let facts = match self.remembered_account_facts(request.destination) {
                Some(facts) => Ok(facts),
                None => Box::pin(self.read_account_facts(request.destination)).await,
            };
            match facts {
                Ok(facts) => facts.currency,
                // No such account: the saga's credit step finds that out and records the
                // transfer failed (DESIGN.md §4), as it did before pricing existed. Priced in
                // the source currency, nothing converts.
                Err(EngineError::NotFound) => request.currency,
                Err(EngineError::Unavailable(unavailable)) => return Err(TransferError::Unavailable(unavailable)),
                Err(other) => return Err(TransferError::Internal(other.to_string())),
            }
        };
        let from = request.currency;
        let amount = request.amount;
        let mut transfer = Transfer::start(request);
        if destination_currency != from {
            let rate = self
                .fx_rate(from, destination_currency)
                .ok_or_else(|| reject(CreateTransferRejection::FxRateNotFound { from, to: destination_currency }))?;
            let converted = fx::convert(amount, rate, destination_currency).map_err(|error| match error {
                ConversionError::BelowSmallestUnit => reject(CreateTransferRejection::ConvertsToNothing),
                ConversionError::AboveMaximum => reject(CreateTransferRejection::Overflow),
            })?;
            transfer.fx_rate = Some(rate);
            transfer.destination_amount = converted;
            transfer.destination_currency = destination_currency;
        }
        Ok(transfer)
    }
}
