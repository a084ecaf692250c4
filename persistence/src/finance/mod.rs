//! Pricing configuration in the store: FX rates, fee rules and transfer-type settings.
//!
//! This is configuration, not money, so admins write it straight to the store (not through the
//! journal), and the engine reads it all once at start into memory (`load_pricing`); the hot
//! path never queries it. Every store answers the two `Store` methods: Postgres and SQLite
//! with the same code in `sql.rs`, the memory store in `memory.rs`.

pub(crate) mod sql;

use rust_decimal::Decimal;
use tally_engine::{FeeRule, FeeTier, FxRate, TransferKind, TransferTypeSettings};

use crate::store::StoreError;

/// Everything `load_pricing` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PricingTables {
    pub fx_rates: Vec<FxRate>,
    pub fee_rules: Vec<FeeRule>,
    /// Only the types an admin changed; the others run on their defaults.
    pub transfer_types: Vec<(TransferKind, TransferTypeSettings)>,
}

/// One admin change, written with `save_pricing` (an upsert by its key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PricingChange {
    /// Keyed by (from, to).
    FxRate(FxRate),
    /// Keyed by id.
    FeeRule(FeeRule),
    /// Keyed by the type.
    TransferType(TransferKind, TransferTypeSettings),
}

/// A fee rule's tiers as stored: `up_to,flat_amount,percentage` per tier, tiers joined by `;`,
/// an absent value left empty. Plain text keeps JSON out of persistence and reads the same
/// in both SQL stores; decimals keep their exact text.
pub(crate) fn tiers_to_db(tiers: &[FeeTier]) -> String {
    let field = |value: Option<Decimal>| value.map(|value| value.to_string()).unwrap_or_default();
    tiers
        .iter()
        .map(|tier| format!("{},{},{}", field(tier.up_to), field(tier.flat_amount), field(tier.percentage)))
        .collect::<Vec<_>>()
        .join(";")
}

pub(crate) fn tiers_from_db(text: &str) -> Result<Vec<FeeTier>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let field = |value: &str| -> Result<Option<Decimal>, StoreError> {
        if value.is_empty() {
            return Ok(None);
        }
        Decimal::from_str_exact(value)
            .map(Some)
            .map_err(|error| StoreError::Corrupt(format!("fee tier value {value:?}: {error}")))
    };
    text.split(';')
        .map(|tier| {
            let parts: Vec<&str> = tier.split(',').collect();
            let [up_to, flat_amount, percentage] = parts.as_slice() else {
                return Err(StoreError::Corrupt(format!("fee tier {tier:?} has not three fields")));
            };
            Ok(FeeTier { up_to: field(up_to)?, flat_amount: field(flat_amount)?, percentage: field(percentage)? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn tiers_round_trip_through_their_text_form() {
        let tiers = vec![
            FeeTier { up_to: Some(dec!(100.00)), flat_amount: Some(dec!(1.00)), percentage: None },
            FeeTier { up_to: Some(dec!(1000.000000000000000001)), flat_amount: None, percentage: Some(dec!(1.25)) },
            FeeTier { up_to: None, flat_amount: Some(dec!(0.5)), percentage: Some(dec!(0.0125)) },
        ];
        let text = tiers_to_db(&tiers);
        assert_eq!(tiers_from_db(&text).unwrap(), tiers);
        assert_eq!(tiers_from_db("").unwrap(), Vec::new());
        assert!(tiers_from_db("1,2").is_err());
    }
}
