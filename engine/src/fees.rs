//! Fee rules and their arithmetic.
//!
//! A rule applies to one transfer type in one (source) currency. At most one **enabled** rule
//! exists per (type, currency) — the store and the engine refuse a second one (`409 CONFLICT`)
//! — so which rule applies is never ambiguous. No enabled rule means no fee.
//!
//! Kinds:
//! - `flat`: `flat_amount`, whatever the amount.
//! - `percentage`: `percentage` of the amount, plus `flat_amount` if given ("2.9 % + 0.30").
//!   `percentage` is in percent: `"1.5"` means 1.5 % (0.015 × amount); 0 < p ≤ 100, at most
//!   `PERCENTAGE_SCALE_MAX` decimals.
//! - `tiered`: `tiers`, ascending by `up_to`. The first tier whose `up_to` is ≥ the amount
//!   prices the **whole** amount (volume tiers, not marginal bands) with its own `flat_amount`
//!   and/or `percentage`. Only the last tier may leave `up_to` out (no upper bound); an amount
//!   above every bounded tier, with no open tier, is priced by the last tier.
//!
//! Then `min_fee` and `max_fee` clamp the result (min ≤ max).
//!
//! **Rounding rule (`ROUNDING_RULE`): the percentage part is computed exactly and rounded to the
//! currency's decimals half away from zero (0.005 USD → 0.01), then the flat part is added, then
//! the clamps apply.** Flat amounts and clamps are already at the currency's scale. The fee is
//! in the source currency; it is held and debited on top of the amount.

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::ids::Timestamp;
use crate::money::{self, Overflow};
use crate::transfer::TransferKind;

pub const ROUNDING_RULE: &str = "percentage part exact, rounded half away from zero to the currency's decimals; then flat part added; then clamped to [min_fee, max_fee]";

/// Most decimals of a percentage: "0.0125" (1.25 basis points) is the finest a price list uses.
pub const PERCENTAGE_SCALE_MAX: u32 = 4;

/// Most tiers in one rule: a price list, not a table of every amount.
pub const TIERS_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeeKind {
    Flat,
    Percentage,
    Tiered,
}

impl FeeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FeeKind::Flat => "flat",
            FeeKind::Percentage => "percentage",
            FeeKind::Tiered => "tiered",
        }
    }

    pub fn parse(text: &str) -> Option<FeeKind> {
        match text {
            "flat" => Some(FeeKind::Flat),
            "percentage" => Some(FeeKind::Percentage),
            "tiered" => Some(FeeKind::Tiered),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeTier {
    /// Inclusive upper bound of the amounts this tier prices; `None` only on the last tier.
    pub up_to: Option<Decimal>,
    pub flat_amount: Option<Decimal>,
    pub percentage: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeRule {
    pub id: uuid::Uuid,
    pub name: String,
    pub transfer_type: TransferKind,
    pub currency: Currency,
    pub kind: FeeKind,
    pub flat_amount: Option<Decimal>,
    pub percentage: Option<Decimal>,
    pub min_fee: Option<Decimal>,
    pub max_fee: Option<Decimal>,
    pub tiers: Vec<FeeTier>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why a rule was refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidFeeRule {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidFeeRule {
    InvalidFeeRule { field, message: message.into() }
}

/// A fee amount in `currency`: zero or positive, at most the currency's decimals, not above
/// the per-transfer maximum. Returned at the currency's scale.
fn check_money(field: &'static str, value: Decimal, currency: Currency) -> Result<Decimal, InvalidFeeRule> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(invalid(field, "must not be negative"));
    }
    if value.normalize().scale() > currency.scale() {
        return Err(invalid(field, format!("{currency} allows at most {} decimals", currency.scale())));
    }
    if value > currency.amount_max() {
        return Err(invalid(field, format!("must not exceed {} {currency}", currency.amount_max())));
    }
    Ok(money::with_currency_scale(value, currency))
}

fn check_percentage(field: &'static str, value: Decimal) -> Result<Decimal, InvalidFeeRule> {
    if value.is_sign_negative() || value.is_zero() {
        return Err(invalid(field, "must be greater than zero (in percent: \"1.5\" is 1.5 %)"));
    }
    let value = value.normalize();
    if value.scale() > PERCENTAGE_SCALE_MAX {
        return Err(invalid(field, format!("allows at most {PERCENTAGE_SCALE_MAX} decimals")));
    }
    if value > Decimal::ONE_HUNDRED {
        return Err(invalid(field, "must not exceed 100 (percent)"));
    }
    Ok(value)
}

impl FeeRule {
    /// Checks the rule's shape and puts every amount at the currency's scale. Checked in field
    /// order: type, kind's own fields, tiers, clamps.
    pub fn validate(mut self) -> Result<FeeRule, InvalidFeeRule> {
        if !matches!(self.transfer_type, TransferKind::Internal | TransferKind::External) {
            return Err(invalid("transfer_type", "must be \"internal\" or \"external\""));
        }
        let currency = self.currency;
        self.flat_amount = self.flat_amount.map(|v| check_money("flat_amount", v, currency)).transpose()?;
        self.percentage = self.percentage.map(|v| check_percentage("percentage", v)).transpose()?;
        match self.kind {
            FeeKind::Flat => {
                if self.flat_amount.is_none() {
                    return Err(invalid("flat_amount", "a flat rule needs flat_amount"));
                }
                if self.percentage.is_some() {
                    return Err(invalid("percentage", "a flat rule has no percentage"));
                }
                if !self.tiers.is_empty() {
                    return Err(invalid("tiers", "only a tiered rule has tiers"));
                }
            }
            FeeKind::Percentage => {
                if self.percentage.is_none() {
                    return Err(invalid("percentage", "a percentage rule needs percentage"));
                }
                if !self.tiers.is_empty() {
                    return Err(invalid("tiers", "only a tiered rule has tiers"));
                }
            }
            FeeKind::Tiered => {
                if self.flat_amount.is_some() || self.percentage.is_some() {
                    return Err(invalid("tiers", "a tiered rule prices through its tiers only"));
                }
                if self.tiers.is_empty() {
                    return Err(invalid("tiers", "a tiered rule needs at least one tier"));
                }
                if self.tiers.len() > TIERS_MAX {
                    return Err(invalid("tiers", format!("at most {TIERS_MAX} tiers")));
                }
                let last = self.tiers.len() - 1;
                let mut previous: Option<Decimal> = None;
                for (index, tier) in self.tiers.iter_mut().enumerate() {
                    tier.flat_amount =
                        tier.flat_amount.map(|v| check_money("tiers.flat_amount", v, currency)).transpose()?;
                    tier.percentage = tier.percentage.map(|v| check_percentage("tiers.percentage", v)).transpose()?;
                    if tier.flat_amount.is_none() && tier.percentage.is_none() {
                        return Err(invalid("tiers", "each tier needs flat_amount or percentage (or both)"));
                    }
                    match tier.up_to {
                        None if index != last => {
                            return Err(invalid("tiers.up_to", "only the last tier may leave up_to out"));
                        }
                        None => {}
                        Some(up_to) => {
                            let up_to = check_money("tiers.up_to", up_to, currency)?;
                            if up_to.is_zero() {
                                return Err(invalid("tiers.up_to", "must be greater than zero"));
                            }
                            if previous.is_some_and(|previous| up_to <= previous) {
                                return Err(invalid("tiers.up_to", "tiers must be in strictly ascending up_to order"));
                            }
                            tier.up_to = Some(up_to);
                            previous = Some(up_to);
                        }
                    }
                }
            }
        }
        self.min_fee = self.min_fee.map(|v| check_money("min_fee", v, currency)).transpose()?;
        self.max_fee = self.max_fee.map(|v| check_money("max_fee", v, currency)).transpose()?;
        if let (Some(min), Some(max)) = (self.min_fee, self.max_fee)
            && min > max
        {
            return Err(invalid("min_fee", "must not exceed max_fee"));
        }
        Ok(self)
    }

    /// The fee for a transfer of `amount` (in the rule's currency, at its scale), by
    /// `ROUNDING_RULE`. Overflow is an error, never a wrap.
    pub fn fee_for(&self, amount: Decimal) -> Result<Decimal, Overflow> {
        let currency = self.currency;
        let (flat, percentage) = match self.kind {
            FeeKind::Flat | FeeKind::Percentage => (self.flat_amount, self.percentage),
            FeeKind::Tiered => {
                let tier =
                    self.tiers.iter().find(|tier| tier.up_to.is_none_or(|up_to| amount <= up_to)).or(self.tiers.last());
                tier.map_or((None, None), |tier| (tier.flat_amount, tier.percentage))
            }
        };
        let mut fee = Decimal::ZERO;
        if let Some(percentage) = percentage {
            fee = percent_of(amount, percentage, currency)?;
        }
        if let Some(flat) = flat {
            fee = money::add(fee, flat)?;
        }
        if let Some(min) = self.min_fee {
            fee = fee.max(min);
        }
        if let Some(max) = self.max_fee {
            fee = fee.min(max);
        }
        Ok(money::with_currency_scale(fee, currency))
    }
}

/// `amount × percentage / 100`, rounded half away from zero to `currency`'s scale, computed
/// exactly in integers: the amount's units (≤ 10^27) times the percentage's (≤ 10^6) fit i128.
pub fn percent_of(amount: Decimal, percentage: Decimal, currency: Currency) -> Result<Decimal, Overflow> {
    let amount = money::with_currency_scale(amount, currency);
    let units = amount.mantissa().checked_mul(percentage.mantissa()).ok_or(Overflow)?;
    // units carry amount.scale() + percentage.scale() decimals, and "/100" adds two more.
    let excess = percentage.scale() + 2;
    let divisor = 10_i128.checked_pow(excess).ok_or(Overflow)?;
    let quotient = units / divisor;
    let remainder = units % divisor;
    // Half away from zero: a remainder of at least half the divisor rounds up (both positive).
    let rounded = if remainder.checked_mul(2).ok_or(Overflow)? >= divisor { quotient + 1 } else { quotient };
    Decimal::try_from_i128_with_scale(rounded, currency.scale()).map_err(|_| Overflow)
}

/// Picks the fee for a transfer: the enabled rule for (type, currency), or zero.
pub fn fee_for<'a>(
    rules: impl IntoIterator<Item = &'a FeeRule>,
    transfer_type: TransferKind,
    currency: Currency,
    amount: Decimal,
) -> Result<Decimal, Overflow> {
    let rule =
        rules.into_iter().find(|rule| rule.enabled && rule.transfer_type == transfer_type && rule.currency == currency);
    match rule {
        Some(rule) => rule.fee_for(amount),
        None => Ok(money::with_currency_scale(Decimal::ZERO, currency)),
    }
}
