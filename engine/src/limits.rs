//! Verification limits (API.md "Verification levels and limits"), the pure part: what an
//! admin may set for one verification level and currency, the UTC windows usage is counted
//! in, and the decision whether an amount fits.
//!
//! A user's level and currency have at most three maxima, each optional (absent = no bound):
//! `per_transfer_max` (one amount), `daily_max` (the sum of amounts in one UTC day) and
//! `monthly_max` (the sum in one UTC calendar month). `check` answers the first bound an
//! amount breaks, in that order, or the usage after it. Everything here is checked
//! arithmetic on `Decimal`; nothing reads a clock (time comes in as a `Timestamp`).
//!
//! Keeping the counters, and making two racing reservations unable to both pass a bound only
//! one fits, is the actors' job (`tally_actors::limits`); this file is the rule they apply
//! under their lock.

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::error_code::ErrorCode;
use crate::ids::Timestamp;
use crate::money::{self, AmountError};

/// Microseconds in a UTC day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The maxima of one verification level in one currency, each at the currency's scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub per_transfer_max: Option<Decimal>,
    pub daily_max: Option<Decimal>,
    pub monthly_max: Option<Decimal>,
}

/// Why a set of maxima was refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidLimits {
    pub field: &'static str,
    pub message: String,
}

impl UserLimits {
    /// No bound at all: what a level and currency without configured limits has.
    pub const UNLIMITED: UserLimits = UserLimits { per_transfer_max: None, daily_max: None, monthly_max: None };

    /// Checked maxima. Each present one is an amount of `currency` as a transfer amount is
    /// (positive, at most the currency's decimals, at most its per-transfer maximum), returned
    /// at the currency's scale. They must also nest, since a larger inner bound could never be
    /// reached and is a mistake: `per_transfer_max ≤ daily_max ≤ monthly_max` for each pair
    /// present. Checked in field order, then the ordering from the innermost pair out.
    pub fn new(
        currency: Currency,
        per_transfer_max: Option<Decimal>,
        daily_max: Option<Decimal>,
        monthly_max: Option<Decimal>,
    ) -> Result<UserLimits, InvalidLimits> {
        let checked = |field: &'static str, value: Option<Decimal>| {
            value
                .map(|value| money::validate_amount(value, currency))
                .transpose()
                .map_err(|error: AmountError| InvalidLimits { field, message: error.to_string() })
        };
        let limits = UserLimits {
            per_transfer_max: checked("per_transfer_max", per_transfer_max)?,
            daily_max: checked("daily_max", daily_max)?,
            monthly_max: checked("monthly_max", monthly_max)?,
        };
        let above =
            |inner: Option<Decimal>, outer: Option<Decimal>| matches!((inner, outer), (Some(i), Some(o)) if i > o);
        if above(limits.per_transfer_max, limits.daily_max) {
            return Err(InvalidLimits { field: "daily_max", message: "must not be below per_transfer_max".to_owned() });
        }
        if above(limits.daily_max, limits.monthly_max) {
            return Err(InvalidLimits { field: "monthly_max", message: "must not be below daily_max".to_owned() });
        }
        if above(limits.per_transfer_max, limits.monthly_max) {
            return Err(InvalidLimits {
                field: "monthly_max",
                message: "must not be below per_transfer_max".to_owned(),
            });
        }
        Ok(limits)
    }

    pub fn is_unlimited(&self) -> bool {
        *self == UserLimits::UNLIMITED
    }
}

/// What a user has used of one currency in the current windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub used_today: Decimal,
    pub used_this_month: Decimal,
}

/// Why an amount does not fit, in the order `check` tests: the first that applies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitRejection {
    /// Amounts are positive; a zero or negative one is a caller's bug, not a limit.
    #[error("the amount must be positive")]
    NotPositive,
    #[error("{amount} is above the per-transfer maximum of {max}")]
    PerTransfer { max: Decimal, amount: Decimal },
    #[error("{amount} on top of {used} used today is above the daily maximum of {max}")]
    Daily { max: Decimal, used: Decimal, amount: Decimal },
    #[error("{amount} on top of {used} used this month is above the monthly maximum of {max}")]
    Monthly { max: Decimal, used: Decimal, amount: Decimal },
    /// The usage plus the amount does not fit a `Decimal` (far beyond any currency's maximum).
    #[error("the usage would overflow")]
    Overflow,
}

impl LimitRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            LimitRejection::NotPositive => ErrorCode::ValidationError,
            LimitRejection::PerTransfer { .. } | LimitRejection::Daily { .. } | LimitRejection::Monthly { .. } => {
                ErrorCode::VerificationLimitExceeded
            }
            LimitRejection::Overflow => ErrorCode::AmountLimitExceeded,
        }
    }

    /// The field of the bound that was exceeded (`per_transfer_max`, `daily_max`,
    /// `monthly_max`), as the limits views name it.
    pub fn bound(&self) -> Option<&'static str> {
        match self {
            LimitRejection::PerTransfer { .. } => Some("per_transfer_max"),
            LimitRejection::Daily { .. } => Some("daily_max"),
            LimitRejection::Monthly { .. } => Some("monthly_max"),
            LimitRejection::NotPositive | LimitRejection::Overflow => None,
        }
    }
}

/// Whether `amount` fits `limits` on top of `usage`; if it does, the usage with it counted.
/// A bound is met exactly at equality (`used + amount == max` fits).
pub fn check(limits: &UserLimits, usage: Usage, amount: Decimal) -> Result<Usage, LimitRejection> {
    if amount <= Decimal::ZERO {
        return Err(LimitRejection::NotPositive);
    }
    if let Some(max) = limits.per_transfer_max
        && amount > max
    {
        return Err(LimitRejection::PerTransfer { max, amount });
    }
    let used_today = money::add(usage.used_today, amount).map_err(|_| LimitRejection::Overflow)?;
    let used_this_month = money::add(usage.used_this_month, amount).map_err(|_| LimitRejection::Overflow)?;
    if let Some(max) = limits.daily_max
        && used_today > max
    {
        return Err(LimitRejection::Daily { max, used: usage.used_today, amount });
    }
    if let Some(max) = limits.monthly_max
        && used_this_month > max
    {
        return Err(LimitRejection::Monthly { max, used: usage.used_this_month, amount });
    }
    Ok(Usage { used_today, used_this_month })
}

/// The UTC windows an instant falls in: its day (days since 1970-01-01) and its calendar
/// month (`year * 12 + month - 1`). Both only grow with time, so "a later window" is a
/// larger number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub day: i64,
    pub month: i64,
}

/// The windows of `at`.
pub fn window_of(at: Timestamp) -> Window {
    let day = at.as_micros().div_euclid(DAY_MICROS);
    let (year, month, _) = civil_from_days(day);
    Window { day, month: year * 12 + (month - 1) }
}

/// The proleptic Gregorian `(year, month 1..=12, day 1..=31)` of a day number (days since
/// 1970-01-01), by Howard Hinnant's `civil_from_days`: exact for every `i64` day a
/// `Timestamp` can name, integer arithmetic only.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;

    use super::*;

    fn limits(per: Option<Decimal>, daily: Option<Decimal>, monthly: Option<Decimal>) -> UserLimits {
        UserLimits { per_transfer_max: per, daily_max: daily, monthly_max: monthly }
    }

    fn usage(today: Decimal, month: Decimal) -> Usage {
        Usage { used_today: today, used_this_month: month }
    }

    /// Each rejection in `check`'s order, each case built so that every earlier check passes
    /// and this one fails; then the edges that pass.
    #[test]
    fn check_answers_the_first_bound_broken_in_order() {
        let all = limits(Some(dec!(100)), Some(dec!(250)), Some(dec!(1000)));
        let cases: Vec<(UserLimits, Usage, Decimal, Result<Usage, LimitRejection>)> = vec![
            (all, Usage::default(), dec!(0), Err(LimitRejection::NotPositive)),
            (all, Usage::default(), dec!(-1), Err(LimitRejection::NotPositive)),
            // Above the per-transfer bound, and above the daily one too: per-transfer first.
            (
                all,
                usage(dec!(240), dec!(240)),
                dec!(100.01),
                Err(LimitRejection::PerTransfer { max: dec!(100), amount: dec!(100.01) }),
            ),
            (
                all,
                usage(dec!(150.01), dec!(150.01)),
                dec!(100),
                Err(LimitRejection::Daily { max: dec!(250), used: dec!(150.01), amount: dec!(100) }),
            ),
            // Both daily and monthly broken: daily first.
            (
                all,
                usage(dec!(200), dec!(990)),
                dec!(60),
                Err(LimitRejection::Daily { max: dec!(250), used: dec!(200), amount: dec!(60) }),
            ),
            (
                all,
                usage(dec!(0), dec!(950)),
                dec!(60),
                Err(LimitRejection::Monthly { max: dec!(1000), used: dec!(950), amount: dec!(60) }),
            ),
            (limits(None, None, None), usage(Decimal::MAX, Decimal::MAX), dec!(1), Err(LimitRejection::Overflow)),
            // Exactly at each bound fits.
            (all, usage(dec!(150), dec!(900)), dec!(100), Ok(usage(dec!(250), dec!(1000)))),
            (
                limits(Some(dec!(5)), None, None),
                usage(dec!(1e9), dec!(1e9)),
                dec!(5),
                Ok(usage(dec!(1e9) + dec!(5), dec!(1e9) + dec!(5))),
            ),
            (
                limits(None, None, None),
                Usage::default(),
                dec!(0.000000000000000001),
                Ok(usage(dec!(0.000000000000000001), dec!(0.000000000000000001))),
            ),
            (
                limits(None, Some(dec!(10)), None),
                usage(dec!(9.99), dec!(500)),
                dec!(0.01),
                Ok(usage(dec!(10), dec!(500.01))),
            ),
        ];
        for (index, (limits, usage, amount, expected)) in cases.into_iter().enumerate() {
            assert_eq!(check(&limits, usage, amount), expected, "case {index}");
        }
    }

    #[test]
    fn rejections_map_to_their_codes_and_name_their_bound() {
        let per = LimitRejection::PerTransfer { max: dec!(1), amount: dec!(2) };
        let daily = LimitRejection::Daily { max: dec!(1), used: dec!(1), amount: dec!(1) };
        let monthly = LimitRejection::Monthly { max: dec!(1), used: dec!(1), amount: dec!(1) };
        for (rejection, bound) in [(per, "per_transfer_max"), (daily, "daily_max"), (monthly, "monthly_max")] {
            assert_eq!(rejection.code(), ErrorCode::VerificationLimitExceeded);
            assert_eq!(rejection.bound(), Some(bound));
        }
        assert_eq!(LimitRejection::NotPositive.code(), ErrorCode::ValidationError);
        assert_eq!(LimitRejection::Overflow.code(), ErrorCode::AmountLimitExceeded);
        assert_eq!(LimitRejection::Overflow.bound(), None);
    }

    /// Each refusal of `UserLimits::new` in its order, then what it accepts.
    #[test]
    fn limits_are_amounts_of_their_currency_and_nest() {
        let usd = Currency::USD;
        type Case = (Option<Decimal>, Option<Decimal>, Option<Decimal>, &'static str);
        let refused: Vec<Case> = vec![
            (Some(dec!(0)), None, None, "per_transfer_max"),
            (Some(dec!(-5)), None, None, "per_transfer_max"),
            (Some(dec!(1.001)), None, None, "per_transfer_max"),
            (Some(dec!(1000000000001)), None, None, "per_transfer_max"),
            (Some(dec!(1)), Some(dec!(0)), None, "daily_max"),
            (Some(dec!(1)), Some(dec!(2)), Some(dec!(0.001)), "monthly_max"),
            (Some(dec!(10)), Some(dec!(9.99)), None, "daily_max"),
            (None, Some(dec!(10)), Some(dec!(9.99)), "monthly_max"),
            (Some(dec!(10)), None, Some(dec!(9)), "monthly_max"),
        ];
        for (per, daily, monthly, field) in refused {
            let error = UserLimits::new(usd, per, daily, monthly).unwrap_err();
            assert_eq!(error.field, field, "{per:?} {daily:?} {monthly:?}: {error}");
        }
        let ok = UserLimits::new(usd, Some(dec!(10)), Some(dec!(10)), Some(dec!(10.5))).unwrap();
        assert_eq!(ok.per_transfer_max.unwrap().to_string(), "10.00", "at the currency's scale");
        assert_eq!(ok.monthly_max.unwrap().to_string(), "10.50");
        assert!(UserLimits::new(usd, None, None, None).unwrap().is_unlimited());
        assert!(UserLimits::new(Currency::JPY, Some(dec!(0.5)), None, None).is_err(), "JPY has no decimals");
        let eth = UserLimits::new(Currency::ETH, None, Some(dec!(0.000000000000000001)), None).unwrap();
        assert_eq!(eth.daily_max, Some(dec!(0.000000000000000001)));
    }

    #[test]
    fn windows_are_utc_days_and_calendar_months() {
        let micros = |seconds: i64| Timestamp::from_micros(seconds * 1_000_000);
        // 1970-01-01T00:00:00Z and the microsecond before it.
        assert_eq!(window_of(micros(0)), Window { day: 0, month: 1970 * 12 });
        assert_eq!(window_of(Timestamp::from_micros(-1)), Window { day: -1, month: 1969 * 12 + 11 });
        // 2024-02-29 (leap day) 23:59:59.999999 and 2024-03-01 00:00:00.
        let leap_day_end = Timestamp::from_micros(1_709_251_200_000_000 - 1);
        assert_eq!(civil_from_days(window_of(leap_day_end).day), (2024, 2, 29));
        assert_eq!(window_of(leap_day_end).month, 2024 * 12 + 1);
        let march = window_of(Timestamp::from_micros(1_709_251_200_000_000));
        assert_eq!(civil_from_days(march.day), (2024, 3, 1));
        assert_eq!(march.month, 2024 * 12 + 2);
        // 2025-12-31 → 2026-01-01 crosses a year.
        assert_eq!(civil_from_days(20_453), (2025, 12, 31));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(window_of(micros(20_454 * 86_400)).month, 2026 * 12);
        // 2000 is a leap year, 1900 and 2100 are not.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-25_508), (1900, 3, 1));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        // Every day of four centuries round-trips through a plain day-by-day calendar walk.
        let (mut year, mut month, mut day) = (1900_i64, 1_i64, 1_i64);
        for days in -25_567..120_000 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
