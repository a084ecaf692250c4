//! Journal records: what actors append and the write-behind journal makes durable. Recovery
//! reads them back and replays them with the same `apply` functions the actors use.

use crate::account::{Account, AccountEvent};
use crate::currency::Currency;
use crate::ids::{AccountId, WalletId};
use crate::posting::Posting;
use crate::transfer::Transfer;
use crate::wallet::{Wallet, WalletEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A new account, as opened.
    AccountOpened(Box<Account>),
    /// One change to an account. The currency rides along so a store can write the posting
    /// without looking the account up.
    Account {
        account: AccountId,
        currency: Currency,
        event: AccountEvent,
    },
    WalletOpened(Box<Wallet>),
    Wallet {
        wallet: WalletId,
        event: WalletEvent,
    },
    /// A transfer's full state after a transition or a saga step.
    Transfer(Box<Transfer>),
}

impl Record {
    /// The posting this record makes, if it moves an account balance.
    pub fn posting(&self) -> Option<Posting> {
        match self {
            Record::Account { account, currency, event } => Posting::from_event(*account, *currency, event),
            _ => None,
        }
    }
}
