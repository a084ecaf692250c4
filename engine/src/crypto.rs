//! Crypto operations: deposits, withdrawals, buy and sell orders. Each is a saga of *legs*,
//! one command to one account or wallet actor each, run in order. The legs are a pure
//! function of the operation, so the live saga, a restarted saga and recovery all run exactly
//! the same steps, and the double entry of every operation can be checked here, without I/O.
//!
//! ```text
//! deposit     settlement(asset).hold → wallet.credit* → settlement(asset).post
//! withdrawal  wallet.hold* ‖ pending until the custodian answers ‖ settlement(asset).credit → wallet.post
//!             (failed: wallet.release)
//! buy         fiat.hold(fiat+fee)* → fx(asset).hold → wallet.credit* → fiat.post → fx(asset).post
//!             → fx(fiat).credit(fiat) → fees(fiat).credit(fee)
//! sell        wallet.hold* → fx(fiat).hold(fiat) → account.credit(fiat−fee)* → fees(fiat).credit(fee)
//!             → wallet.post → fx(fiat).post → fx(asset).credit
//! ```
//!
//! `*` marks legs that may be refused. Every leg up to the *pivot* may be refused; a refusal
//! releases the holds placed before it (compensation) and the operation ends `failed`. After
//! the pivot the saga only goes forward: posts and system-account credits cannot be refused.
//! Per currency the debits equal the credits (`postings_balance` below proves it for each
//! kind), and wallets are ledger positions like accounts, so the per-currency sum over
//! accounts and wallet assets stays zero.

use rust_decimal::Decimal;

use crate::account::AccountCommand;
use crate::currency::Currency;
use crate::error_code::ErrorCode;
use crate::ids::{AccountId, Timestamp, TransferId, UserId, WalletId};
use crate::system_accounts;
use crate::transfer::Idempotency;
use crate::wallet::WalletCommand;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptoOpKind {
    Deposit,
    Withdrawal,
    Buy,
    Sell,
}

impl CryptoOpKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            CryptoOpKind::Deposit => "deposit",
            CryptoOpKind::Withdrawal => "withdrawal",
            CryptoOpKind::Buy => "buy",
            CryptoOpKind::Sell => "sell",
        }
    }

    pub fn parse(text: &str) -> Option<CryptoOpKind> {
        match text {
            "deposit" => Some(CryptoOpKind::Deposit),
            "withdrawal" => Some(CryptoOpKind::Withdrawal),
            "buy" => Some(CryptoOpKind::Buy),
            "sell" => Some(CryptoOpKind::Sell),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptoOpStatus {
    /// Legs are being run.
    Processing,
    /// A withdrawal whose amount is held, waiting for the custodian's webhook.
    Pending,
    Completed,
    Failed,
}

impl CryptoOpStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            CryptoOpStatus::Processing => "processing",
            CryptoOpStatus::Pending => "pending",
            CryptoOpStatus::Completed => "completed",
            CryptoOpStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<CryptoOpStatus> {
        match text {
            "processing" => Some(CryptoOpStatus::Processing),
            "pending" => Some(CryptoOpStatus::Pending),
            "completed" => Some(CryptoOpStatus::Completed),
            "failed" => Some(CryptoOpStatus::Failed),
            _ => None,
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(self, CryptoOpStatus::Completed | CryptoOpStatus::Failed)
    }
}

/// One command to one actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    Account { account: AccountId, command: AccountCommand },
    Wallet { wallet: WalletId, command: WalletCommand },
}

impl Leg {
    /// The leg that undoes this one, if it placed a hold.
    pub fn undo(&self) -> Option<Leg> {
        match *self {
            Leg::Account { account, command: AccountCommand::Hold { transfer, .. } } => {
                Some(Leg::Account { account, command: AccountCommand::Release { transfer } })
            }
            Leg::Wallet { wallet, command: WalletCommand::Hold { transfer, asset, .. } } => {
                Some(Leg::Wallet { wallet, command: WalletCommand::Release { transfer, asset } })
            }
            _ => None,
        }
    }

    /// A credit is the one step whose repeat is not recognised after a restart (holds, posts
    /// and releases are recognised through the durable holds): recovery looks for its posting.
    pub fn is_credit(&self) -> bool {
        matches!(
            self,
            Leg::Account { command: AccountCommand::Credit { .. }, .. }
                | Leg::Wallet { command: WalletCommand::Credit { .. }, .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoOp {
    pub id: TransferId,
    pub kind: CryptoOpKind,
    pub status: CryptoOpStatus,
    /// How many legs are done (durably, once this record is).
    pub step: u32,
    pub owner: UserId,
    pub wallet: WalletId,
    pub asset: Currency,
    /// The crypto amount moved in or out of the wallet.
    pub asset_amount: Decimal,
    /// Buy and sell: the customer's fiat account.
    pub fiat_account: Option<AccountId>,
    pub fiat_currency: Option<Currency>,
    /// Buy: what the crypto costs (the fee comes on top). Sell: what the crypto fetches (the
    /// fee comes off it). Zero for deposits and withdrawals.
    pub fiat_amount: Decimal,
    pub fee: Decimal,
    /// Fiat per one unit of the asset, as quoted.
    pub price: Option<Decimal>,
    /// Withdrawals: where the custodian sends the asset.
    pub address: Option<String>,
    /// Deposits: the chain transaction that brought the asset (one credit per hash).
    /// Withdrawals: the transaction the custodian reported.
    pub tx_hash: Option<String>,
    pub idempotency: Option<Idempotency>,
    pub failure_reason: Option<ErrorCode>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl CryptoOp {
    /// Every forward leg, in order.
    pub fn legs(&self) -> Vec<Leg> {
        let t = self.id;
        let asset = self.asset;
        let wallet = |command| Leg::Wallet { wallet: self.wallet, command };
        let account = |account, command| Leg::Account { account, command };
        let fiat = self.fiat_currency.unwrap_or(Currency::USD);
        let fiat_account = self.fiat_account.unwrap_or(system_accounts::settlement(fiat));
        match self.kind {
            CryptoOpKind::Deposit => {
                let settlement = system_accounts::settlement(asset);
                vec![
                    account(
                        settlement,
                        AccountCommand::Hold { transfer: t, amount: self.asset_amount, currency: asset },
                    ),
                    wallet(WalletCommand::Credit { transfer: t, asset, amount: self.asset_amount }),
                    account(settlement, AccountCommand::Post { transfer: t }),
                ]
            }
            CryptoOpKind::Withdrawal => vec![
                wallet(WalletCommand::Hold { transfer: t, asset, amount: self.asset_amount }),
                account(
                    system_accounts::settlement(asset),
                    AccountCommand::Credit { transfer: t, amount: self.asset_amount, currency: asset },
                ),
                wallet(WalletCommand::Post { transfer: t, asset }),
            ],
            CryptoOpKind::Buy => {
                let fx_asset = system_accounts::fx_clearing(asset);
                let mut legs = vec![
                    account(
                        fiat_account,
                        AccountCommand::Hold { transfer: t, amount: self.fiat_amount + self.fee, currency: fiat },
                    ),
                    account(fx_asset, AccountCommand::Hold { transfer: t, amount: self.asset_amount, currency: asset }),
                    wallet(WalletCommand::Credit { transfer: t, asset, amount: self.asset_amount }),
                    account(fiat_account, AccountCommand::Post { transfer: t }),
                    account(fx_asset, AccountCommand::Post { transfer: t }),
                    account(
                        system_accounts::fx_clearing(fiat),
                        AccountCommand::Credit { transfer: t, amount: self.fiat_amount, currency: fiat },
                    ),
                ];
                if !self.fee.is_zero() {
                    legs.push(account(
                        system_accounts::fees(fiat),
                        AccountCommand::Credit { transfer: t, amount: self.fee, currency: fiat },
                    ));
                }
                legs
            }
            CryptoOpKind::Sell => {
                let fx_fiat = system_accounts::fx_clearing(fiat);
                let mut legs = vec![
                    wallet(WalletCommand::Hold { transfer: t, asset, amount: self.asset_amount }),
                    account(fx_fiat, AccountCommand::Hold { transfer: t, amount: self.fiat_amount, currency: fiat }),
                    account(
                        fiat_account,
                        AccountCommand::Credit { transfer: t, amount: self.fiat_amount - self.fee, currency: fiat },
                    ),
                ];
                if !self.fee.is_zero() {
                    legs.push(account(
                        system_accounts::fees(fiat),
                        AccountCommand::Credit { transfer: t, amount: self.fee, currency: fiat },
                    ));
                }
                legs.push(wallet(WalletCommand::Post { transfer: t, asset }));
                legs.push(account(fx_fiat, AccountCommand::Post { transfer: t }));
                legs.push(account(
                    system_accounts::fx_clearing(asset),
                    AccountCommand::Credit { transfer: t, amount: self.asset_amount, currency: asset },
                ));
                legs
            }
        }
    }

    /// The index of the last leg that may be refused. A refusal at or before it is
    /// compensated; every leg after it only goes forward.
    pub fn pivot(&self) -> u32 {
        match self.kind {
            CryptoOpKind::Deposit => 1,
            CryptoOpKind::Withdrawal => 0,
            CryptoOpKind::Buy => 2,
            CryptoOpKind::Sell => 2,
        }
    }

    /// A withdrawal stops `pending` after its hold, until the custodian answers.
    pub fn pauses_after(&self) -> Option<u32> {
        (self.kind == CryptoOpKind::Withdrawal).then_some(1)
    }

    /// The legs that undo the first `done` legs, latest first.
    pub fn undo_legs(&self, done: u32) -> Vec<Leg> {
        self.legs().iter().take(done as usize).rev().filter_map(Leg::undo).collect()
    }

    /// The signed effect of all forward legs per currency: every entry is zero when the
    /// operation's double entry balances. (Holds are not postings; their post is.)
    pub fn net_by_currency(&self) -> Vec<(Currency, Decimal)> {
        let legs = self.legs();
        let mut held: Vec<((bool, uuid::Uuid), Currency, Decimal)> = Vec::new();
        let mut sums: Vec<(Currency, Decimal)> = Vec::new();
        let mut add = |currency: Currency, amount: Decimal| match sums.iter_mut().find(|(c, _)| *c == currency) {
            Some((_, sum)) => *sum += amount,
            None => sums.push((currency, amount)),
        };
        for leg in legs {
            match leg {
                Leg::Account { account, command: AccountCommand::Hold { amount, currency, .. } } => {
                    held.push(((false, account.as_uuid()), currency, amount));
                }
                Leg::Wallet { wallet, command: WalletCommand::Hold { amount, asset, .. } } => {
                    held.push(((true, wallet.as_uuid()), asset, amount));
                }
                Leg::Account { account, command: AccountCommand::Post { .. } } => {
                    if let Some((_, currency, amount)) =
                        held.iter().find(|(key, ..)| *key == (false, account.as_uuid()))
                    {
                        add(*currency, -*amount);
                    }
                }
                Leg::Wallet { wallet, command: WalletCommand::Post { .. } } => {
                    if let Some((_, currency, amount)) = held.iter().find(|(key, ..)| *key == (true, wallet.as_uuid()))
                    {
                        add(*currency, -*amount);
                    }
                }
                Leg::Account { command: AccountCommand::Credit { amount, currency, .. }, .. } => add(currency, amount),
                Leg::Wallet { command: WalletCommand::Credit { amount, asset, .. }, .. } => add(asset, amount),
                _ => {}
            }
        }
        sums
    }
}

// ---- quotes ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    pub fn parse(text: &str) -> Option<Side> {
        match text {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }

    pub const fn kind(self) -> CryptoOpKind {
        match self {
            Side::Buy => CryptoOpKind::Buy,
            Side::Sell => CryptoOpKind::Sell,
        }
    }
}

/// The amount a quote is asked for: exactly one side is fixed, the other is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuoteAmount {
    Fiat(Decimal),
    Crypto(Decimal),
}

/// The figures of a quote. `fiat_amount` is what the crypto is worth at `price` (rounded in
/// Tally's favour); `fee` comes on top of a buy and off a sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteTerms {
    pub side: Side,
    pub asset: Currency,
    pub fiat_currency: Currency,
    pub price: Decimal,
    pub fiat_amount: Decimal,
    pub crypto_amount: Decimal,
    pub fee: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuoteRejection {
    /// The amount is so small that one side rounds to nothing (or the fee eats a sale).
    #[error("the amount is too small to trade at this price")]
    TooSmall,
    #[error("the amount is beyond what one order may move")]
    TooLarge,
}

/// The fee on a crypto order: 1% of its fiat value, rounded up to the fiat currency's scale.
pub const CRYPTO_FEE_BASIS_POINTS: u32 = 100;

/// Prices a quote. Rounding never favours the customer: the crypto a buyer receives is
/// rounded down (never more than the fiat pays for), the fiat a buyer pays and the crypto a
/// seller gives are rounded up, the fiat a seller receives is rounded down, and the fee is
/// rounded up. So the customer never receives more than the price pays for.
pub fn quote(
    side: Side,
    asset: Currency,
    fiat_currency: Currency,
    price: Decimal,
    amount: QuoteAmount,
) -> Result<QuoteTerms, QuoteRejection> {
    use rust_decimal::RoundingStrategy::{AwayFromZero, ToZero};
    let down = |value: Decimal, currency: Currency| value.round_dp_with_strategy(currency.scale(), ToZero);
    let up = |value: Decimal, currency: Currency| value.round_dp_with_strategy(currency.scale(), AwayFromZero);
    let (fiat_amount, crypto_amount) = match (side, amount) {
        (Side::Buy, QuoteAmount::Fiat(fiat)) => {
            (fiat, down(fiat.checked_div(price).ok_or(QuoteRejection::TooLarge)?, asset))
        }
        (Side::Buy, QuoteAmount::Crypto(crypto)) => {
            (up(crypto.checked_mul(price).ok_or(QuoteRejection::TooLarge)?, fiat_currency), crypto)
        }
        (Side::Sell, QuoteAmount::Crypto(crypto)) => {
            (down(crypto.checked_mul(price).ok_or(QuoteRejection::TooLarge)?, fiat_currency), crypto)
        }
        (Side::Sell, QuoteAmount::Fiat(fiat)) => {
            (fiat, up(fiat.checked_div(price).ok_or(QuoteRejection::TooLarge)?, asset))
        }
    };
    let fee = up(
        fiat_amount
            .checked_mul(Decimal::from(CRYPTO_FEE_BASIS_POINTS))
            .and_then(|value| value.checked_div(Decimal::from(10_000)))
            .ok_or(QuoteRejection::TooLarge)?,
        fiat_currency,
    );
    if crypto_amount <= Decimal::ZERO || fiat_amount <= Decimal::ZERO || (side == Side::Sell && fee >= fiat_amount) {
        return Err(QuoteRejection::TooSmall);
    }
    if crate::money::validate_amount(crypto_amount, asset).is_err()
        || crate::money::validate_amount(fiat_amount.checked_add(fee).ok_or(QuoteRejection::TooLarge)?, fiat_currency)
            .is_err()
    {
        return Err(QuoteRejection::TooLarge);
    }
    Ok(QuoteTerms {
        side,
        asset,
        fiat_currency,
        price,
        fiat_amount: crate::money::with_currency_scale(fiat_amount, fiat_currency),
        crypto_amount: crate::money::with_currency_scale(crypto_amount, asset),
        fee: crate::money::with_currency_scale(fee, fiat_currency),
    })
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn op(kind: CryptoOpKind) -> CryptoOp {
        CryptoOp {
            id: TransferId::from_u128(7),
            kind,
            status: CryptoOpStatus::Processing,
            step: 0,
            owner: UserId::from_u128(1),
            wallet: WalletId::from_u128(2),
            asset: Currency::BTC,
            asset_amount: dec!(0.01234567),
            fiat_account: Some(AccountId::from_u128(3)),
            fiat_currency: Some(Currency::EUR),
            fiat_amount: dec!(512.34),
            fee: dec!(5.12),
            price: Some(dec!(41500)),
            address: None,
            tx_hash: None,
            idempotency: None,
            failure_reason: None,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        }
    }

    #[test]
    fn every_kind_of_operation_balances_per_currency() {
        for kind in [CryptoOpKind::Deposit, CryptoOpKind::Withdrawal, CryptoOpKind::Buy, CryptoOpKind::Sell] {
            let op = op(kind);
            let sums = op.net_by_currency();
            assert!(!sums.is_empty(), "{kind:?} moves money");
            for (currency, sum) in sums {
                assert_eq!(sum, Decimal::ZERO, "{kind:?} in {currency}");
            }
        }
    }

    #[test]
    fn only_legs_up_to_the_pivot_may_be_refused_and_their_holds_are_undone() {
        let buy = op(CryptoOpKind::Buy);
        let legs = buy.legs();
        // After the pivot: posts and system-account credits only.
        for leg in &legs[buy.pivot() as usize + 1..] {
            match leg {
                Leg::Account { account, command: AccountCommand::Credit { .. } } => {
                    assert!(system_accounts::is_system_account(*account))
                }
                Leg::Account { command: AccountCommand::Post { .. }, .. }
                | Leg::Wallet { command: WalletCommand::Post { .. }, .. } => {}
                other => panic!("refusable leg after the pivot: {other:?}"),
            }
        }
        // The wallet leg failing releases the fiat hold and the FX clearing hold, latest first.
        let undo = buy.undo_legs(buy.pivot());
        assert_eq!(undo.len(), 2);
        assert!(
            matches!(undo[1], Leg::Account { account, command: AccountCommand::Release { .. } } if account == AccountId::from_u128(3))
        );
    }

    #[test]
    fn a_withdrawal_pauses_after_its_hold() {
        let withdrawal = op(CryptoOpKind::Withdrawal);
        assert_eq!(withdrawal.pauses_after(), Some(1));
        assert!(matches!(withdrawal.legs()[0], Leg::Wallet { command: WalletCommand::Hold { .. }, .. }));
        assert_eq!(withdrawal.undo_legs(1).len(), 1);
    }

    #[test]
    fn quotes_round_against_the_customer() {
        // 100 EUR at 30,000 EUR/BTC is 0.00333333(33..) BTC: the buyer gets the rounded-down figure.
        let buy = quote(Side::Buy, Currency::BTC, Currency::EUR, dec!(30000), QuoteAmount::Fiat(dec!(100))).unwrap();
        assert_eq!((buy.crypto_amount, buy.fee), (dec!(0.00333333), dec!(1.00)));
        assert!(buy.crypto_amount * buy.price <= buy.fiat_amount);
        // Buying 0.00000001 BTC costs 0.0003 EUR: rounded up to a cent, the fee too.
        let tiny =
            quote(Side::Buy, Currency::BTC, Currency::EUR, dec!(30000), QuoteAmount::Crypto(dec!(0.00000001))).unwrap();
        assert_eq!((tiny.fiat_amount, tiny.fee), (dec!(0.01), dec!(0.01)));
        // Selling: the seller's fiat is rounded down, the crypto asked for a fiat figure up.
        let sell = quote(Side::Sell, Currency::BTC, Currency::EUR, dec!(30000), QuoteAmount::Crypto(dec!(0.00333333)))
            .unwrap();
        assert_eq!(sell.fiat_amount, dec!(99.99));
        assert!(sell.fiat_amount <= sell.crypto_amount * sell.price);
        let sell_fiat =
            quote(Side::Sell, Currency::BTC, Currency::EUR, dec!(30000), QuoteAmount::Fiat(dec!(100))).unwrap();
        assert_eq!(sell_fiat.crypto_amount, dec!(0.00333334));
        assert_eq!(
            quote(Side::Sell, Currency::BTC, Currency::EUR, dec!(30000), QuoteAmount::Crypto(dec!(0.00000001))),
            Err(QuoteRejection::TooSmall)
        );
        assert_eq!(
            // At ten million a coin, a cent buys a tenth of a satoshi: nothing.
            quote(Side::Buy, Currency::BTC, Currency::EUR, dec!(10000000), QuoteAmount::Fiat(dec!(0.01))),
            Err(QuoteRejection::TooSmall)
        );
    }
}
