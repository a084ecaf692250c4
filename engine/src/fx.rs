//! FX rates and conversion.
//!
//! A rate `(from, to, rate)` says that one unit of `from` buys `rate` units of `to`. Rates are
//! set by admins and directed: setting USD→EUR does **not** imply EUR→USD. A real desk quotes
//! the two directions with a spread, and `1 / rate` is rarely exact in decimal, so an implied
//! inverse would invent a price nobody set.
//!
//! **Rounding rule (`ROUNDING_RULE`): the converted amount is the exact product
//! `amount × rate`, truncated (rounded toward zero) to the destination currency's scale.**
//! The product is computed exactly in 256-bit integer arithmetic, never through a float or a
//! 28-digit intermediate, so the truncation is the only rounding. Truncation means the
//! recipient never receives more than the rate promises; the sub-unit remainder stays with
//! the source side's FX clearing account (it is simply not converted). A conversion that would
//! deliver zero units is refused (`BelowSmallestUnit`), as is one above the destination
//! currency's per-transfer maximum.

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::ids::Timestamp;

/// The rounding rule, named so the API docs and tests can cite it.
pub const ROUNDING_RULE: &str = "truncate the exact product amount × rate to the destination currency's decimals";

/// Most decimals a rate may carry. 18 lets a rate price one unit of a 0-decimal currency in
/// the smallest unit of an 18-decimal asset (JPY→ETH ~ 0.000002).
pub const RATE_SCALE_MAX: u32 = 18;

/// Largest rate accepted: 10^10 units of `to` per unit of `from` (one BTC in VND, ~2.5e9, is
/// about the most extreme real pair). Bounding it keeps every product of a maximal amount and a
/// maximal rate far inside the 256-bit intermediate.
pub const RATE_MAX_EXPONENT: u32 = 10;

/// One directed rate as an admin set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxRate {
    pub from: Currency,
    pub to: Currency,
    pub rate: Decimal,
    pub updated_at: Timestamp,
}

/// Why a rate was refused. Checked in the order of the variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("a rate converts between two different currencies")]
    SameCurrency,
    #[error("rate must be greater than zero")]
    NotPositive,
    #[error("rate allows at most {RATE_SCALE_MAX} decimals")]
    TooManyDecimals,
    #[error("rate must not exceed 10^{RATE_MAX_EXPONENT}")]
    AboveMaximum,
}

/// Why an amount could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("the converted amount is less than the destination currency's smallest unit")]
    BelowSmallestUnit,
    #[error("the converted amount exceeds the destination currency's maximum")]
    AboveMaximum,
}

pub fn rate_max() -> Decimal {
    Decimal::from_i128_with_scale(10_i128.pow(RATE_MAX_EXPONENT), 0)
}

/// Checks a rate and returns it normalized (no trailing zeros).
pub fn validate_rate(from: Currency, to: Currency, rate: Decimal) -> Result<Decimal, RateError> {
    if from == to {
        return Err(RateError::SameCurrency);
    }
    if rate.is_sign_negative() || rate.is_zero() {
        return Err(RateError::NotPositive);
    }
    let rate = rate.normalize();
    if rate.scale() > RATE_SCALE_MAX {
        return Err(RateError::TooManyDecimals);
    }
    if rate > rate_max() {
        return Err(RateError::AboveMaximum);
    }
    Ok(rate)
}

/// Converts `amount` (in the source currency, positive) at `rate` into `to`, by
/// `ROUNDING_RULE`. The result carries exactly `to`'s scale.
pub fn convert(amount: Decimal, rate: Decimal, to: Currency) -> Result<Decimal, ConversionError> {
    // Both are positive (validated amount and rate); their mantissas are below 2^96.
    let amount_units = amount.mantissa().unsigned_abs();
    let rate_units = rate.mantissa().unsigned_abs();
    let product_scale = amount.scale() + rate.scale();
    let target_scale = to.scale();
    let mut product = U256::mul(amount_units, rate_units);
    if product_scale >= target_scale {
        // Dividing step by step by powers of ten floors exactly: floor(floor(x/a)/b) = floor(x/ab).
        let mut remaining = product_scale - target_scale;
        while remaining > 0 {
            let step = remaining.min(19);
            product.div_small(10_u64.pow(step));
            remaining -= step;
        }
    } else {
        let mut remaining = target_scale - product_scale;
        while remaining > 0 {
            let step = remaining.min(19);
            product.mul_small(10_u64.pow(step)).ok_or(ConversionError::AboveMaximum)?;
            remaining -= step;
        }
    }
    let units = product.to_u128().ok_or(ConversionError::AboveMaximum)?;
    if units == 0 {
        return Err(ConversionError::BelowSmallestUnit);
    }
    let units = i128::try_from(units).map_err(|_| ConversionError::AboveMaximum)?;
    let converted =
        Decimal::try_from_i128_with_scale(units, target_scale).map_err(|_| ConversionError::AboveMaximum)?;
    if converted > to.amount_max() {
        return Err(ConversionError::AboveMaximum);
    }
    Ok(converted)
}

/// An unsigned 256-bit integer as four little-endian 64-bit limbs: just enough arithmetic for
/// an exact product of two 96-bit mantissas and its division by powers of ten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct U256([u64; 4]);

// Limb arithmetic: each `as u64` below keeps the low 64 bits of a 128-bit value on purpose, and
// the high bits are carried (`>> 64`) or, in a quotient, are zero.
#[allow(clippy::cast_possible_truncation)]
impl U256 {
    fn mul(a: u128, b: u128) -> U256 {
        let a = [a as u64, (a >> 64) as u64];
        let b = [b as u64, (b >> 64) as u64];
        let mut limbs = [0_u64; 4];
        for (i, &x) in a.iter().enumerate() {
            let mut carry: u128 = 0;
            for (j, &y) in b.iter().enumerate() {
                let sum = u128::from(limbs[i + j]) + u128::from(x) * u128::from(y) + carry;
                limbs[i + j] = sum as u64;
                carry = sum >> 64;
            }
            // i + 2 <= 3: the product of two 128-bit numbers fits 256 bits.
            let mut index = i + 2;
            while carry > 0 && index < 4 {
                let sum = u128::from(limbs[index]) + carry;
                limbs[index] = sum as u64;
                carry = sum >> 64;
                index += 1;
            }
        }
        U256(limbs)
    }

    /// `self = floor(self / divisor)`.
    fn div_small(&mut self, divisor: u64) {
        let mut remainder: u128 = 0;
        for limb in self.0.iter_mut().rev() {
            let current = (remainder << 64) | u128::from(*limb);
            *limb = (current / u128::from(divisor)) as u64;
            remainder = current % u128::from(divisor);
        }
    }

    /// `self *= factor`, or `None` on overflow past 256 bits.
    fn mul_small(&mut self, factor: u64) -> Option<()> {
        let mut carry: u128 = 0;
        for limb in self.0.iter_mut() {
            let current = u128::from(*limb) * u128::from(factor) + carry;
            *limb = current as u64;
            carry = current >> 64;
        }
        (carry == 0).then_some(())
    }

    fn to_u128(self) -> Option<u128> {
        (self.0[2] == 0 && self.0[3] == 0).then(|| (u128::from(self.0[1]) << 64) | u128::from(self.0[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_multiplication_matches_u128_when_it_fits() {
        let product = U256::mul(0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF);
        assert_eq!(product.to_u128(), Some(0xFFFF_FFFF_FFFF_FFFF_u128 * 0xFFFF_FFFF_FFFF_FFFF_u128));
        let big = U256::mul(u128::MAX, u128::MAX);
        assert_eq!(big.to_u128(), None);
        let mut ten_pow = U256::mul(10_u128.pow(30), 10_u128.pow(30));
        ten_pow.div_small(10_u64.pow(19));
        ten_pow.div_small(10_u64.pow(19));
        ten_pow.div_small(10_u64.pow(19));
        assert_eq!(ten_pow.to_u128(), Some(1000));
    }
}
