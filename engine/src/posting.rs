//! Double-entry postings. Every completed transfer is a set of postings whose debits equal its
//! credits per currency; a debit lowers a balance, a credit raises it, so the sum of all
//! balances of a currency stays zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::account::AccountEvent;
use crate::currency::Currency;
use crate::ids::{AccountId, TransferId};
use crate::money::{self, Overflow};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "debit" => Some(Direction::Debit),
            "credit" => Some(Direction::Credit),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub transfer: TransferId,
    pub account: AccountId,
    pub currency: Currency,
    pub direction: Direction,
    /// Always positive; `direction` carries the sign.
    pub amount: Decimal,
}

impl Posting {
    /// The posting an account event makes, if it moves a balance (holds and releases do not).
    pub fn from_event(account: AccountId, currency: Currency, event: &AccountEvent) -> Option<Posting> {
        let (transfer, direction, amount) = match event {
            AccountEvent::Posted { transfer, amount } => (*transfer, Direction::Debit, *amount),
            AccountEvent::Credited { transfer, amount, .. } => (*transfer, Direction::Credit, *amount),
            _ => return None,
        };
        Some(Posting { transfer, account, currency, direction, amount })
    }

    /// The signed effect on the balance: credits add, debits subtract.
    pub fn signed_amount(&self) -> Decimal {
        match self.direction {
            Direction::Credit => self.amount,
            Direction::Debit => -self.amount,
        }
    }
}

/// Postings whose debits and credits differ in some currency.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unbalanced {
    #[error("postings in {currency} sum to {sum}, not zero")]
    NonZeroSum { currency: Currency, sum: Decimal },
    #[error("posting amounts overflow")]
    Overflow,
}

impl From<Overflow> for Unbalanced {
    fn from(_: Overflow) -> Self {
        Unbalanced::Overflow
    }
}

/// Checks that the postings balance per currency (debits equal credits).
pub fn check_balanced<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> Result<(), Unbalanced> {
    let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for posting in postings {
        let sum = sums.entry(posting.currency).or_default();
        *sum = money::add(*sum, posting.signed_amount())?;
    }
    match sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        Some((currency, sum)) => Err(Unbalanced::NonZeroSum { currency, sum }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn posting(account: u128, currency: Currency, direction: Direction, amount: Decimal) -> Posting {
        Posting {
            transfer: TransferId::from_u128(1),
            account: AccountId::from_u128(account),
            currency,
            direction,
            amount,
        }
    }

    #[test]
    fn a_transfer_with_fee_balances() {
        let postings = [
            posting(1, Currency::USD, Direction::Debit, dec!(10.50)),
            posting(2, Currency::USD, Direction::Credit, dec!(10.00)),
            posting(3, Currency::USD, Direction::Credit, dec!(0.50)),
        ];
        assert_eq!(check_balanced(&postings), Ok(()));
    }

    #[test]
    fn an_unbalanced_set_names_its_currency_and_sum() {
        let postings = [
            posting(1, Currency::USD, Direction::Debit, dec!(10)),
            posting(2, Currency::USD, Direction::Credit, dec!(10)),
            posting(3, Currency::EUR, Direction::Credit, dec!(1)),
        ];
        assert_eq!(check_balanced(&postings), Err(Unbalanced::NonZeroSum { currency: Currency::EUR, sum: dec!(1) }));
    }
}
