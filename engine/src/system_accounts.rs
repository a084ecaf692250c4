//! System accounts per currency: settlement (money entering or leaving Tally), fees (revenue)
//! and FX clearing (the two sides of a conversion). They are ordinary accounts with fixed ids,
//! so every node and every restart agrees on them without a lookup.

use rust_decimal::Decimal;

use crate::account::{Account, AccountKind};
use crate::currency::Currency;
use crate::ids::{AccountId, Timestamp};

/// The prefix of every system account id: `00000000-0000-7a11-` ("tally"), then the kind and
/// the currency index. User account ids are random v4 UUIDs, whose version nibble (4) can never
/// match this one (7), so the two ranges never collide.
const SYSTEM_ID_PREFIX: u128 = 0x0000_0000_0000_7a11_0000_0000_0000_0000;

const fn kind_tag(kind: AccountKind) -> u128 {
    match kind {
        AccountKind::User => 0,
        AccountKind::Settlement => 1,
        AccountKind::Fees => 2,
        AccountKind::FxClearing => 3,
    }
}

/// The id of the system account of `kind` in `currency`.
pub fn system_account_id(kind: AccountKind, currency: Currency) -> AccountId {
    AccountId::from_u128(SYSTEM_ID_PREFIX | (kind_tag(kind) << 16) | u128::from(currency.index()))
}

pub fn settlement(currency: Currency) -> AccountId {
    system_account_id(AccountKind::Settlement, currency)
}

pub fn fees(currency: Currency) -> AccountId {
    system_account_id(AccountKind::Fees, currency)
}

pub fn fx_clearing(currency: Currency) -> AccountId {
    system_account_id(AccountKind::FxClearing, currency)
}

pub const SYSTEM_KINDS: [AccountKind; 3] = [AccountKind::Settlement, AccountKind::Fees, AccountKind::FxClearing];

/// Every system account of every currency, empty, as first created.
pub fn all_system_accounts(created_at: Timestamp) -> Vec<Account> {
    Currency::all()
        .flat_map(|currency| {
            SYSTEM_KINDS.into_iter().map(move |kind| {
                Account::open(system_account_id(kind, currency), None, currency, kind, Decimal::ZERO, created_at)
            })
        })
        .collect()
}

pub fn is_system_account(id: AccountId) -> bool {
    id.as_uuid().as_u128() & !0xFFFF_FFFF_u128 == SYSTEM_ID_PREFIX
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_system_account_id_is_distinct_and_recognised() {
        let accounts = all_system_accounts(Timestamp::default());
        let ids: HashSet<AccountId> = accounts.iter().map(|account| account.id).collect();
        assert_eq!(ids.len(), accounts.len());
        assert!(accounts.iter().all(|account| is_system_account(account.id) && account.kind.is_system()));
        assert!(!is_system_account(AccountId::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef)));
    }
}
