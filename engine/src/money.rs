//! Amounts: parsing, validation against a currency's scale and maximum, checked arithmetic.
//!
//! Amounts are `rust_decimal::Decimal`. No float ever touches money. Every sum goes through
//! `checked_add`/`checked_sub`, and an overflow is a named error, never a wrap or a panic.

use rust_decimal::Decimal;

use crate::currency::Currency;

/// Longest amount text accepted. The longest legal amount is 10^15 units with 0 decimals, or
/// 10^9 ETH with 18 decimals (29 characters); anything far longer is refused before parsing.
const AMOUNT_TEXT_LENGTH_MAX: usize = 64;

/// Why an amount was refused. Checked in the order of the variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal number written as a string, like \"125.50\"")]
    NotANumber,
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("{currency} allows at most {scale_max} decimals")]
    TooManyDecimals { currency: Currency, scale_max: u32 },
    #[error("amount exceeds the maximum of {max} {currency}")]
    AboveMaximum { currency: Currency, max: Decimal },
}

/// An arithmetic result that does not fit a `Decimal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("arithmetic overflow")]
pub struct Overflow;

/// Parses an amount as the API receives it: plain decimal digits with an optional fraction,
/// no sign, no exponent, no spaces. The number of decimals written must not exceed the
/// currency's scale ("1.000" is refused for USD), so a client's intent is never rounded away.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Decimal, AmountError> {
    if let Some(rest) = text.strip_prefix('-') {
        // A negative amount is a number, just not an allowed one: say so precisely.
        return if is_plain_decimal(rest) { Err(AmountError::NotPositive) } else { Err(AmountError::NotANumber) };
    }
    if !is_plain_decimal(text) {
        return Err(AmountError::NotANumber);
    }
    let decimals_written = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
    let scale_max = currency.scale();
    // Checked on the text, before parsing: more decimals than `Decimal` holds (28) is still
    // "too many decimals", not "not a number".
    if decimals_written > scale_max as usize {
        let all_zero = text.bytes().all(|byte| byte == b'0' || byte == b'.');
        return Err(if all_zero {
            AmountError::NotPositive
        } else {
            AmountError::TooManyDecimals { currency, scale_max }
        });
    }
    let value = Decimal::from_str_exact(text).map_err(|_| AmountError::NotANumber)?;
    if value.is_zero() {
        return Err(AmountError::NotPositive);
    }
    check_maximum(value, currency)?;
    Ok(with_currency_scale(value, currency))
}

/// Validates an amount that arrived in process (not as text): positive, no more significant
/// decimals than the currency allows, not above the maximum. Returns it at the currency's scale.
pub fn validate_amount(value: Decimal, currency: Currency) -> Result<Decimal, AmountError> {
    if value.is_sign_negative() || value.is_zero() {
        return Err(AmountError::NotPositive);
    }
    let scale_max = currency.scale();
    if value.normalize().scale() > scale_max {
        return Err(AmountError::TooManyDecimals { currency, scale_max });
    }
    check_maximum(value, currency)?;
    Ok(with_currency_scale(value, currency))
}

fn check_maximum(value: Decimal, currency: Currency) -> Result<(), AmountError> {
    let max = currency.amount_max();
    if value > max {
        return Err(AmountError::AboveMaximum { currency, max });
    }
    Ok(())
}

/// The value written with exactly the currency's decimals ("125.5" USD becomes "125.50").
/// Callers have checked that no significant decimal is lost.
pub fn with_currency_scale(value: Decimal, currency: Currency) -> Decimal {
    // Most values already have the currency's scale (the engine keeps them so): as they are,
    // unless a negative zero, which `normalize` makes "0".
    if value.scale() == currency.scale() && !(value.is_zero() && value.is_sign_negative()) {
        return value;
    }
    let mut scaled = value.normalize();
    scaled.rescale(currency.scale());
    scaled
}

/// `a + b`, or `Overflow`.
pub fn add(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    a.checked_add(b).ok_or(Overflow)
}

/// `a - b`, or `Overflow`.
pub fn sub(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    a.checked_sub(b).ok_or(Overflow)
}

/// Writes `value` as its `Display` does (a `-` for a negative sign, the digits, and a point
/// before the last `scale` of them, with a `0` before a leading point), in pieces to `push`.
///
/// Every transfer writes about nine decimals (its answer's amounts, the hash chain's posting
/// lines, the request's fingerprint); `write!` through `Display` spent ~450 instructions on
/// each under `scripts/callgrind` (the formatting machinery, a digit-by-digit division of the
/// 96-bit mantissa, `pad_integral`), this ~100. The text must not change: the chain's links
/// stored before hash it, and clients read it; `writes_what_display_writes` holds the two
/// equal over every scale and the mantissa's whole range.
pub fn write_decimal(value: Decimal, mut push: impl FnMut(&str)) {
    let mut buffer = itoa::Buffer::new();
    // 64-bit digits where they fit (nearly every amount), cheaper than 128-bit ones.
    let mantissa = value.mantissa().unsigned_abs();
    let digits = match u64::try_from(mantissa) {
        Ok(mantissa) => buffer.format(mantissa),
        Err(_) => buffer.format(mantissa),
    };
    let scale = value.scale() as usize;
    if value.is_sign_negative() {
        push("-");
    }
    if scale == 0 {
        push(digits);
    } else if digits.len() <= scale {
        push("0.");
        const ZEROS: &str = "0000000000000000000000000000";
        // `scale` ≤ 28 (`Decimal`'s maximum), the length of `ZEROS`.
        push(&ZEROS[..scale - digits.len()]);
        push(digits);
    } else {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        push(whole);
        push(".");
        push(fraction);
    }
}

/// `write_decimal` onto a `String`.
pub fn push_decimal(out: &mut String, value: Decimal) {
    write_decimal(value, |piece| out.push_str(piece));
}

fn is_plain_decimal(text: &str) -> bool {
    if text.is_empty() || text.len() > AMOUNT_TEXT_LENGTH_MAX {
        return false;
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn parse_accepts_plain_amounts_and_pads_to_the_currency_scale() {
        assert_eq!(parse_amount("125.50", Currency::USD), Ok(dec!(125.50)));
        assert_eq!(parse_amount("125.5", Currency::USD).map(|a| a.to_string()), Ok("125.50".to_owned()));
        assert_eq!(parse_amount("7", Currency::JPY), Ok(dec!(7)));
        assert_eq!(
            parse_amount("0.000000000000000001", Currency::ETH).map(|a| a.to_string()),
            Ok("0.000000000000000001".to_owned())
        );
        assert_eq!(parse_amount("0.00000001", Currency::BTC), Ok(dec!(0.00000001)));
    }

    #[test]
    fn parse_refuses_each_kind_of_bad_amount_with_its_reason() {
        let cases: &[(&str, Currency, AmountError)] = &[
            ("", Currency::USD, AmountError::NotANumber),
            ("abc", Currency::USD, AmountError::NotANumber),
            ("1e3", Currency::USD, AmountError::NotANumber),
            ("+5", Currency::USD, AmountError::NotANumber),
            (" 5", Currency::USD, AmountError::NotANumber),
            ("5.", Currency::USD, AmountError::NotANumber),
            (".5", Currency::USD, AmountError::NotANumber),
            ("1.2.3", Currency::USD, AmountError::NotANumber),
            ("NaN", Currency::USD, AmountError::NotANumber),
            ("-", Currency::USD, AmountError::NotANumber),
            ("-5", Currency::USD, AmountError::NotPositive),
            ("-0.01", Currency::USD, AmountError::NotPositive),
            ("0", Currency::USD, AmountError::NotPositive),
            ("0.00", Currency::USD, AmountError::NotPositive),
            ("1.001", Currency::USD, AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 }),
            ("1.000", Currency::USD, AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 }),
            ("1.5", Currency::JPY, AmountError::TooManyDecimals { currency: Currency::JPY, scale_max: 0 }),
            (
                "0.0000000000000000001",
                Currency::ETH,
                AmountError::TooManyDecimals { currency: Currency::ETH, scale_max: 18 },
            ),
            (
                "1000000000000.01",
                Currency::USD,
                AmountError::AboveMaximum { currency: Currency::USD, max: dec!(1000000000000) },
            ),
        ];
        for (text, currency, expected) in cases {
            assert_eq!(parse_amount(text, *currency).as_ref(), Err(expected), "{text:?} {currency}");
        }
        assert_eq!(
            parse_amount("0.00000000000000000000000000001", Currency::USD),
            Err(AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 })
        );
        let oversized = "1".repeat(AMOUNT_TEXT_LENGTH_MAX + 1);
        assert_eq!(parse_amount(&oversized, Currency::USD), Err(AmountError::NotANumber));
        let too_big_for_decimal = "9".repeat(40);
        assert_eq!(parse_amount(&too_big_for_decimal, Currency::USD), Err(AmountError::NotANumber));
    }

    fn written(value: Decimal) -> String {
        let mut out = String::new();
        push_decimal(&mut out, value);
        out
    }

    fn negative_zero(scale: u32) -> Decimal {
        let mut zero = Decimal::new(0, scale);
        zero.set_sign_negative(true);
        zero
    }

    #[test]
    fn writes_what_display_writes() {
        let mut cases = vec![
            Decimal::ZERO,
            -Decimal::ZERO,
            Decimal::new(0, 2),
            negative_zero(0),
            negative_zero(2),
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(Decimal::MAX.mantissa(), 28),
            Decimal::from_i128_with_scale(Decimal::MIN.mantissa(), 28),
            dec!(125.50),
            dec!(-0.01),
            dec!(1000000000000.00),
        ];
        // Every scale over mantissas of every length, from a fixed-seed generator.
        let mut state: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834;
        for scale in 0..=28 {
            for digits in 0..=29 {
                for _ in 0..8 {
                    state = state.wrapping_mul(0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645).wrapping_add(1);
                    let bound = 10_i128.checked_pow(digits).unwrap_or(i128::MAX);
                    let mantissa = (state >> 24).cast_signed() % bound.min(Decimal::MAX.mantissa() + 1);
                    let mantissa = if state & 1 == 0 { mantissa } else { -mantissa };
                    cases.push(Decimal::from_i128_with_scale(mantissa, scale));
                }
            }
        }
        for value in cases {
            assert_eq!(written(value), value.to_string(), "{:?}", value.unpack());
        }
    }

    #[test]
    fn the_maximum_itself_is_allowed() {
        assert_eq!(parse_amount("1000000000000", Currency::USD), Ok(dec!(1000000000000.00)));
        assert_eq!(parse_amount("1000000000", Currency::ETH).map(|a| a.scale()), Ok(18));
    }

    #[test]
    fn validate_checks_significant_decimals_not_written_ones() {
        assert_eq!(validate_amount(dec!(1.500), Currency::USD), Ok(dec!(1.50)));
        assert_eq!(
            validate_amount(dec!(1.505), Currency::USD),
            Err(AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 })
        );
        assert_eq!(validate_amount(dec!(0), Currency::USD), Err(AmountError::NotPositive));
        assert_eq!(validate_amount(dec!(-3), Currency::USD), Err(AmountError::NotPositive));
    }

    #[test]
    fn checked_arithmetic_names_overflow() {
        assert_eq!(add(Decimal::MAX, dec!(1)), Err(Overflow));
        assert_eq!(sub(Decimal::MIN, dec!(1)), Err(Overflow));
        assert_eq!(add(dec!(0.1), dec!(0.2)), Ok(dec!(0.3)));
    }
}
