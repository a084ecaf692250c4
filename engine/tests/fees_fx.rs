//! Fee and FX arithmetic tables: every rounding edge of `fees::ROUNDING_RULE` and
//! `fx::ROUNDING_RULE`, the clamps, the tier boundaries, zero-decimal JPY and 18-decimal ETH,
//! and the validation of rules and rates in the order they are checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_engine::fees::{self, FeeKind, FeeRule, FeeTier};
use tally_engine::fx::{self, ConversionError, RateError};
use tally_engine::{Currency, Timestamp, TransferKind};

fn rule(currency: Currency, kind: FeeKind) -> FeeRule {
    FeeRule {
        id: uuid::Uuid::from_u128(1),
        name: "test".to_owned(),
        transfer_type: TransferKind::Internal,
        currency,
        kind,
        flat_amount: None,
        percentage: None,
        min_fee: None,
        max_fee: None,
        tiers: Vec::new(),
        enabled: true,
        created_at: Timestamp::default(),
        updated_at: Timestamp::default(),
    }
}

fn percentage(currency: Currency, percent: Decimal) -> FeeRule {
    FeeRule { percentage: Some(percent), ..rule(currency, FeeKind::Percentage) }.validate().unwrap()
}

#[test]
fn conversion_truncates_the_exact_product_to_the_destination_scale() {
    let cases: &[(Decimal, Decimal, Currency, Result<Decimal, ConversionError>)] = &[
        (dec!(100.00), dec!(0.92), Currency::EUR, Ok(dec!(92.00))),
        (dec!(2.00), dec!(0.995), Currency::EUR, Ok(dec!(1.99))),
        // A half-way product is truncated, not rounded up.
        (dec!(1.50), dec!(0.01), Currency::EUR, Ok(dec!(0.01))),
        (dec!(0.99), dec!(1.015151), Currency::EUR, Ok(dec!(1.00))),
        // Less than a cent converts to nothing: refused, never a zero credit.
        (dec!(0.01), dec!(0.925), Currency::EUR, Err(ConversionError::BelowSmallestUnit)),
        (dec!(0.50), dec!(0.01), Currency::EUR, Err(ConversionError::BelowSmallestUnit)),
        // Zero-decimal JPY on either side.
        (dec!(10.00), dec!(149.567), Currency::JPY, Ok(dec!(1495))),
        (dec!(1000), dec!(0.0067), Currency::USD, Ok(dec!(6.70))),
        (dec!(1), dec!(0.0067), Currency::USD, Err(ConversionError::BelowSmallestUnit)),
        // Three-decimal KWD.
        (dec!(1.00), dec!(0.3075), Currency::KWD, Ok(dec!(0.307))),
        // 18-decimal ETH: exact to the last wei, even past Decimal's 28 digits.
        (dec!(1.00), dec!(0.000333333333333333), Currency::ETH, Ok(dec!(0.000333333333333333))),
        (dec!(1.23456789), dec!(18.123456789012345678), Currency::ETH, Ok(dec!(22.374637807517146787))),
        (
            dec!(999999999.999999999999999999),
            dec!(0.999999999999999999),
            Currency::ETH,
            Ok(dec!(999999999.999999998999999999)),
        ),
        (dec!(0.123456789012345678), dec!(0.000000000000000009), Currency::ETH, Ok(dec!(0.000000000000000001))),
        (dec!(0.000000000000000001), dec!(3000.5), Currency::USD, Err(ConversionError::BelowSmallestUnit)),
        // Above the destination's per-transfer maximum.
        (dec!(1000000000000.00), dec!(10000000000), Currency::EUR, Err(ConversionError::AboveMaximum)),
        (dec!(1000000000), dec!(10000000000), Currency::ETH, Err(ConversionError::AboveMaximum)),
    ];
    for (amount, rate, to, expected) in cases {
        let converted = fx::convert(*amount, *rate, *to);
        assert_eq!(converted, *expected, "{amount} x {rate} -> {to}");
        if let Ok(converted) = converted {
            assert_eq!(converted.scale(), to.scale(), "{amount} x {rate} -> {to} carries {to}'s scale");
        }
    }
}

#[test]
fn rates_are_checked_in_order() {
    let usd = Currency::USD;
    let eur = Currency::EUR;
    assert_eq!(fx::validate_rate(usd, usd, dec!(1)), Err(RateError::SameCurrency));
    assert_eq!(fx::validate_rate(usd, eur, dec!(0)), Err(RateError::NotPositive));
    assert_eq!(fx::validate_rate(usd, eur, dec!(-0.5)), Err(RateError::NotPositive));
    assert_eq!(fx::validate_rate(usd, eur, dec!(0.0000000000000000001)), Err(RateError::TooManyDecimals));
    assert_eq!(fx::validate_rate(usd, eur, dec!(10000000000.1)), Err(RateError::AboveMaximum));
    assert_eq!(fx::validate_rate(usd, eur, dec!(10000000000)), Ok(dec!(10000000000)));
    assert_eq!(fx::validate_rate(usd, eur, dec!(0.000000000000000001)), Ok(dec!(0.000000000000000001)));
    assert_eq!(fx::validate_rate(usd, eur, dec!(0.9200)).map(|rate| rate.to_string()), Ok("0.92".to_owned()));
}

#[test]
fn percentage_fees_round_half_away_from_zero_at_the_currency_scale() {
    let cases: &[(Currency, Decimal, Decimal, Decimal)] = &[
        (Currency::USD, dec!(1.5), dec!(100.00), dec!(1.50)),
        (Currency::USD, dec!(1.5), dec!(0.33), dec!(0.00)), // 0.00495
        (Currency::USD, dec!(1.5), dec!(0.34), dec!(0.01)), // 0.0051
        (Currency::USD, dec!(1), dec!(0.50), dec!(0.01)),   // 0.005: exactly half rounds up
        (Currency::USD, dec!(1), dec!(0.49), dec!(0.00)),   // 0.0049
        (Currency::USD, dec!(0.0125), dec!(1000000000000.00), dec!(125000000.00)),
        (Currency::USD, dec!(100), dec!(12.34), dec!(12.34)),
        (Currency::JPY, dec!(2.5), dec!(100), dec!(3)),     // 2.5
        (Currency::JPY, dec!(2.5), dec!(99), dec!(2)),      // 2.475
        (Currency::JPY, dec!(2.5), dec!(101), dec!(3)),     // 2.525
        (Currency::KWD, dec!(1), dec!(0.050), dec!(0.001)), // 0.0005
        (Currency::ETH, dec!(50), dec!(0.000000000000000001), dec!(0.000000000000000001)), // half a wei
        (Currency::ETH, dec!(0.1), dec!(0.000000000000000005), dec!(0.000000000000000000)),
        (Currency::ETH, dec!(0.0001), dec!(1000000000), dec!(1000.000000000000000000)),
    ];
    for (currency, percent, amount, expected) in cases {
        let fee = percentage(*currency, *percent).fee_for(*amount).unwrap();
        assert_eq!(fee, *expected, "{percent}% of {amount} {currency}");
        assert_eq!(fee.scale(), currency.scale(), "{percent}% of {amount} {currency} at the currency's scale");
    }
}

#[test]
fn flat_and_percentage_plus_flat_fees() {
    let flat = FeeRule { flat_amount: Some(dec!(0.3)), ..rule(Currency::USD, FeeKind::Flat) }.validate().unwrap();
    assert_eq!(flat.fee_for(dec!(0.01)).unwrap(), dec!(0.30));
    assert_eq!(flat.fee_for(dec!(1000000000000.00)).unwrap(), dec!(0.30));
    let card = FeeRule {
        percentage: Some(dec!(2.9)),
        flat_amount: Some(dec!(0.30)),
        ..rule(Currency::USD, FeeKind::Percentage)
    }
    .validate()
    .unwrap();
    assert_eq!(card.fee_for(dec!(10.00)).unwrap(), dec!(0.59));
    assert_eq!(card.fee_for(dec!(0.17)).unwrap(), dec!(0.30)); // 0.00493 rounds to 0.00
}

#[test]
fn min_and_max_clamp_after_rounding() {
    let clamped = FeeRule {
        percentage: Some(dec!(1)),
        min_fee: Some(dec!(0.50)),
        max_fee: Some(dec!(25)),
        ..rule(Currency::USD, FeeKind::Percentage)
    }
    .validate()
    .unwrap();
    assert_eq!(clamped.fee_for(dec!(10.00)).unwrap(), dec!(0.50)); // 0.10 -> min
    assert_eq!(clamped.fee_for(dec!(50.00)).unwrap(), dec!(0.50)); // exactly min
    assert_eq!(clamped.fee_for(dec!(50.01)).unwrap(), dec!(0.50)); // 0.5001 -> 0.50
    assert_eq!(clamped.fee_for(dec!(51.00)).unwrap(), dec!(0.51));
    assert_eq!(clamped.fee_for(dec!(2500.00)).unwrap(), dec!(25.00)); // exactly max
    assert_eq!(clamped.fee_for(dec!(2500.50)).unwrap(), dec!(25.00)); // 25.005 would round up
    assert_eq!(clamped.fee_for(dec!(10000.00)).unwrap(), dec!(25.00));
    let equal = FeeRule {
        percentage: Some(dec!(1)),
        min_fee: Some(dec!(2)),
        max_fee: Some(dec!(2)),
        ..rule(Currency::JPY, FeeKind::Percentage)
    }
    .validate()
    .unwrap();
    assert_eq!(equal.fee_for(dec!(1)).unwrap(), dec!(2));
    assert_eq!(equal.fee_for(dec!(100000)).unwrap(), dec!(2));
}

#[test]
fn tiers_price_the_whole_amount_by_the_first_tier_that_covers_it() {
    let tiered = FeeRule {
        tiers: vec![
            FeeTier { up_to: Some(dec!(100)), flat_amount: Some(dec!(1)), percentage: None },
            FeeTier { up_to: Some(dec!(1000)), flat_amount: None, percentage: Some(dec!(1)) },
            FeeTier { up_to: None, flat_amount: Some(dec!(2)), percentage: Some(dec!(0.5)) },
        ],
        ..rule(Currency::USD, FeeKind::Tiered)
    }
    .validate()
    .unwrap();
    let cases = [
        (dec!(0.01), dec!(1.00)),
        (dec!(100.00), dec!(1.00)), // up_to is inclusive
        (dec!(100.01), dec!(1.00)), // 1.0001
        (dec!(150.50), dec!(1.51)), // 1.505
        (dec!(1000.00), dec!(10.00)),
        (dec!(1000.01), dec!(7.00)), // 2 + 5.00005
        (dec!(1000000.00), dec!(5002.00)),
    ];
    for (amount, expected) in cases {
        assert_eq!(tiered.fee_for(amount).unwrap(), expected, "{amount}");
    }
    let closed = FeeRule {
        tiers: vec![
            FeeTier { up_to: Some(dec!(100)), flat_amount: Some(dec!(1)), percentage: None },
            FeeTier { up_to: Some(dec!(1000)), flat_amount: Some(dec!(5)), percentage: None },
        ],
        ..rule(Currency::USD, FeeKind::Tiered)
    }
    .validate()
    .unwrap();
    assert_eq!(closed.fee_for(dec!(5000.00)).unwrap(), dec!(5.00), "above every tier: the last one");
}

#[test]
fn invalid_rules_name_their_field() {
    let usd = Currency::USD;
    let cases: Vec<(FeeRule, &str)> = vec![
        (FeeRule { transfer_type: TransferKind::AdminCredit, ..rule(usd, FeeKind::Flat) }, "transfer_type"),
        (FeeRule { flat_amount: Some(dec!(0.001)), ..rule(usd, FeeKind::Flat) }, "flat_amount"),
        (FeeRule { flat_amount: Some(dec!(-1)), ..rule(usd, FeeKind::Flat) }, "flat_amount"),
        (FeeRule { flat_amount: Some(dec!(1.5)), ..rule(Currency::JPY, FeeKind::Flat) }, "flat_amount"),
        (FeeRule { percentage: Some(dec!(0)), ..rule(usd, FeeKind::Percentage) }, "percentage"),
        (FeeRule { percentage: Some(dec!(100.01)), ..rule(usd, FeeKind::Percentage) }, "percentage"),
        (FeeRule { percentage: Some(dec!(1.00001)), ..rule(usd, FeeKind::Percentage) }, "percentage"),
        (rule(usd, FeeKind::Flat), "flat_amount"),
        (rule(usd, FeeKind::Percentage), "percentage"),
        (FeeRule { flat_amount: Some(dec!(1)), percentage: Some(dec!(1)), ..rule(usd, FeeKind::Flat) }, "percentage"),
        (rule(usd, FeeKind::Tiered), "tiers"),
        (
            FeeRule {
                tiers: vec![
                    FeeTier { up_to: Some(dec!(100)), flat_amount: Some(dec!(1)), percentage: None },
                    FeeTier { up_to: Some(dec!(100)), flat_amount: Some(dec!(2)), percentage: None },
                ],
                ..rule(usd, FeeKind::Tiered)
            },
            "tiers.up_to",
        ),
        (
            FeeRule {
                tiers: vec![
                    FeeTier { up_to: Some(dec!(100)), flat_amount: Some(dec!(1)), percentage: None },
                    FeeTier { up_to: Some(dec!(50)), flat_amount: Some(dec!(2)), percentage: None },
                ],
                ..rule(usd, FeeKind::Tiered)
            },
            "tiers.up_to",
        ),
        (
            FeeRule {
                tiers: vec![
                    FeeTier { up_to: None, flat_amount: Some(dec!(1)), percentage: None },
                    FeeTier { up_to: Some(dec!(50)), flat_amount: Some(dec!(2)), percentage: None },
                ],
                ..rule(usd, FeeKind::Tiered)
            },
            "tiers.up_to",
        ),
        (
            FeeRule {
                tiers: vec![FeeTier { up_to: Some(dec!(100)), flat_amount: None, percentage: None }],
                ..rule(usd, FeeKind::Tiered)
            },
            "tiers",
        ),
        (
            FeeRule {
                percentage: Some(dec!(1)),
                min_fee: Some(dec!(5)),
                max_fee: Some(dec!(4.99)),
                ..rule(usd, FeeKind::Percentage)
            },
            "min_fee",
        ),
    ];
    for (invalid, field) in cases {
        let error = invalid.clone().validate().expect_err(&format!("{invalid:?}"));
        assert_eq!(error.field, field, "{invalid:?}: {error}");
    }
}

#[test]
fn the_enabled_rule_of_the_type_and_currency_applies_and_no_rule_is_free() {
    let flat = |currency, transfer_type, enabled, fee| FeeRule {
        flat_amount: Some(fee),
        transfer_type,
        enabled,
        ..rule(currency, FeeKind::Flat)
    };
    let rules = [
        flat(Currency::USD, TransferKind::Internal, false, dec!(9)),
        flat(Currency::USD, TransferKind::Internal, true, dec!(1)),
        flat(Currency::USD, TransferKind::External, true, dec!(2)),
        flat(Currency::EUR, TransferKind::Internal, true, dec!(3)),
    ];
    let fee = |kind, currency| fees::fee_for(rules.iter(), kind, currency, dec!(10)).unwrap();
    assert_eq!(fee(TransferKind::Internal, Currency::USD), dec!(1));
    assert_eq!(fee(TransferKind::External, Currency::USD), dec!(2));
    assert_eq!(fee(TransferKind::Internal, Currency::EUR), dec!(3));
    assert_eq!(fee(TransferKind::External, Currency::EUR), dec!(0));
    assert_eq!(fee(TransferKind::Internal, Currency::JPY).scale(), 0);
}
