//! Currencies and crypto assets with their scale (number of decimals).
//!
//! The table holds the ISO 4217 currencies that payment clients commonly move, plus the crypto
//! assets Tally's wallets carry. Adding a currency is one line in `TABLE`; its scale and its
//! per-transfer maximum are the only facts the engine needs.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// A currency or asset. A small index into `TABLE`, so it is `Copy` and one byte wide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u8);

/// Whether a currency is a fiat currency (ISO 4217) or a crypto asset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CurrencyClass {
    Fiat,
    Crypto,
}

struct CurrencyInfo {
    code: &'static str,
    /// Decimals allowed in an amount of this currency.
    scale: u32,
    /// Largest amount of one transfer, as a power of ten of whole units. Chosen so that the
    /// largest amount times 10^scale stays far below `Decimal`'s 96-bit mantissa (~7.9e28),
    /// leaving room for balances that sum many such amounts before checked arithmetic trips.
    amount_max_exponent: u32,
    class: CurrencyClass,
}

const fn fiat(code: &'static str, scale: u32) -> CurrencyInfo {
    // Fiat: a trillion whole units per transfer (a quadrillion for zero-decimal currencies,
    // whose units are small: JPY, KRW, VND...).
    let amount_max_exponent = if scale == 0 { 15 } else { 12 };
    CurrencyInfo { code, scale, amount_max_exponent, class: CurrencyClass::Fiat }
}

const fn crypto(code: &'static str, scale: u32, amount_max_exponent: u32) -> CurrencyInfo {
    CurrencyInfo { code, scale, amount_max_exponent, class: CurrencyClass::Crypto }
}

const TABLE: [CurrencyInfo; 38] = [
    fiat("USD", 2),
    fiat("EUR", 2),
    fiat("GBP", 2),
    fiat("JPY", 0),
    fiat("CHF", 2),
    fiat("CAD", 2),
    fiat("AUD", 2),
    fiat("NZD", 2),
    fiat("SEK", 2),
    fiat("NOK", 2),
    fiat("DKK", 2),
    fiat("PLN", 2),
    fiat("CZK", 2),
    fiat("HUF", 2),
    fiat("CNY", 2),
    fiat("HKD", 2),
    fiat("SGD", 2),
    fiat("INR", 2),
    fiat("KRW", 0),
    fiat("MXN", 2),
    fiat("BRL", 2),
    fiat("ZAR", 2),
    fiat("TRY", 2),
    fiat("ILS", 2),
    fiat("AED", 2),
    fiat("SAR", 2),
    fiat("KWD", 3),
    fiat("BHD", 3),
    fiat("OMR", 3),
    fiat("JOD", 3),
    fiat("TND", 3),
    fiat("CLP", 0),
    fiat("ISK", 0),
    fiat("VND", 0),
    fiat("UGX", 0),
    // 21 million BTC will ever exist; a billion leaves room without risking the mantissa.
    crypto("BTC", 8, 9),
    // ETH has 18 decimals, so 10^9 ETH = 10^27 wei is close to the mantissa's 7.9e28.
    crypto("ETH", 18, 9),
    crypto("USDC", 6, 12),
];

impl Currency {
    pub const USD: Currency = Currency(0);
    pub const EUR: Currency = Currency(1);
    pub const GBP: Currency = Currency(2);
    pub const JPY: Currency = Currency(3);
    pub const CHF: Currency = Currency(4);
    pub const KWD: Currency = Currency(26);
    pub const BTC: Currency = Currency(35);
    pub const ETH: Currency = Currency(36);
    pub const USDC: Currency = Currency(37);

    /// Every currency Tally knows, in table order.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..TABLE.len()).filter_map(|index| u8::try_from(index).ok().map(Currency))
    }

    fn info(self) -> &'static CurrencyInfo {
        // The only constructors are the constants above, `all` and `from_code`, which all
        // stay inside the table.
        &TABLE[usize::from(self.0)]
    }

    pub fn code(self) -> &'static str {
        self.info().code
    }

    pub fn scale(self) -> u32 {
        self.info().scale
    }

    pub fn class(self) -> CurrencyClass {
        self.info().class
    }

    /// The largest amount one transfer may move in this currency.
    pub fn amount_max(self) -> Decimal {
        Decimal::from_i128_with_scale(10_i128.pow(self.info().amount_max_exponent), 0)
    }

    /// A small dense index, for tables keyed by currency (system account ids, per-currency sums).
    pub fn index(self) -> u8 {
        self.0
    }

    pub fn from_code(code: &str) -> Option<Currency> {
        TABLE.iter().position(|info| info.code == code).and_then(|index| u8::try_from(index).ok()).map(Currency)
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::from_code(code).ok_or(UnknownCurrency)
    }
}

/// The code is not one of the currencies in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency code")]
pub struct UnknownCurrency;

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_match_the_api_contract() {
        let expected =
            [("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("CHF", 2), ("BTC", 8), ("ETH", 18), ("USDC", 6)];
        for (code, scale) in expected {
            let currency = Currency::from_code(code).expect("known currency");
            assert_eq!(currency.scale(), scale, "{code}");
            assert_eq!(currency.code(), code);
        }
    }

    #[test]
    fn named_constants_point_at_their_codes() {
        assert_eq!(Currency::USD.code(), "USD");
        assert_eq!(Currency::EUR.code(), "EUR");
        assert_eq!(Currency::GBP.code(), "GBP");
        assert_eq!(Currency::JPY.code(), "JPY");
        assert_eq!(Currency::CHF.code(), "CHF");
        assert_eq!(Currency::KWD.code(), "KWD");
        assert_eq!(Currency::BTC.code(), "BTC");
        assert_eq!(Currency::ETH.code(), "ETH");
        assert_eq!(Currency::USDC.code(), "USDC");
    }

    #[test]
    fn unknown_and_lowercase_codes_are_refused() {
        assert_eq!("usd".parse::<Currency>(), Err(UnknownCurrency));
        assert_eq!("XXX".parse::<Currency>(), Err(UnknownCurrency));
        assert_eq!("".parse::<Currency>(), Err(UnknownCurrency));
    }

    #[test]
    fn largest_amount_times_scale_fits_the_decimal_mantissa_with_headroom() {
        for currency in Currency::all() {
            let smallest_units =
                10_u128.pow(TABLE[usize::from(currency.index())].amount_max_exponent) * 10_u128.pow(currency.scale());
            // At least 50 maximal transfers must sum without overflow.
            assert!(smallest_units.saturating_mul(50) < (1_u128 << 96), "{currency}");
        }
    }
}
