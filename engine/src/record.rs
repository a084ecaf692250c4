//! Journal records: what actors append and the write-behind journal makes durable. Recovery
//! reads them back and replays them with the same `apply` functions the actors use.

use rust_decimal::Decimal;

use crate::account::{Account, AccountEvent, AccountStatus};
use crate::aml::AmlFlag;
use crate::audit::AuditRecord;
use crate::crypto::CryptoOp;
use crate::currency::Currency;
use crate::ids::{AccountId, WalletId};
use crate::posting::Posting;
use crate::transfer::Transfer;
use crate::wallet::{Wallet, WalletEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A new account, as opened.
    AccountOpened(Box<Account>),
    /// One change to an account, with the account's figures after it. The currency rides
    /// along so a store can write the posting, and `after` so it can write the coalesced
    /// balance snapshot, without reading the account back.
    Account {
        account: AccountId,
        currency: Currency,
        event: AccountEvent,
        after: AccountSnapshot,
    },
    WalletOpened(Box<Wallet>),
    /// One change to a wallet, with the changed asset's figures after it.
    Wallet {
        wallet: WalletId,
        event: WalletEvent,
        after: WalletSnapshot,
    },
    /// A transfer's full state after a transition or a saga step.
    Transfer(Box<Transfer>),
    /// An AML flag a transfer raised. Appended before the transfer's first record, so the
    /// transfer's durable answer covers it (`actors/src/aml.rs`).
    AmlFlag(Box<AmlFlag>),
    /// A crypto operation's full state after a leg or a transition (`crypto.rs`).
    CryptoOp(Box<CryptoOp>),
    /// The audit entry of an admin change made through the engine, appended in one group
    /// (`Journal::append_group_acked`) with the record that makes the change, so the batch
    /// that commits the change appends the entry to the audit chain in its transaction
    /// (docs/audit.md). It changes no balance and no state: recovery and the in-memory store
    /// skip it.
    Audit(Box<AuditRecord>),
}

impl Record {
    /// The posting this record makes, if it moves an account balance.
    pub fn posting(&self) -> Option<Posting> {
        match self {
            Record::Account { account, currency, event, .. } => Posting::from_event(*account, *currency, event),
            _ => None,
        }
    }
}

/// An account's figures after an event: what a store keeps as its balance snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub balance: Decimal,
    pub held: Decimal,
    pub credit_limit: Decimal,
    pub status: AccountStatus,
    /// The number of the account's last posting (`Position::version`).
    pub version: u64,
}

/// A wallet's status and, for an event on one asset, that asset's figures after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletSnapshot {
    pub status: AccountStatus,
    pub asset: Option<AssetSnapshot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssetSnapshot {
    pub asset: Currency,
    pub balance: Decimal,
    pub held: Decimal,
}

impl Account {
    pub fn snapshot(&self) -> AccountSnapshot {
        AccountSnapshot {
            balance: self.position.balance,
            held: self.position.held,
            credit_limit: self.position.credit_limit,
            status: self.status,
            version: self.position.version,
        }
    }
}

impl Wallet {
    /// The wallet's status and the figures of `asset`, if given.
    pub fn snapshot(&self, asset: Option<Currency>) -> WalletSnapshot {
        let asset = asset.map(|asset| {
            let (balance, held) = self
                .position(asset)
                .map_or((Decimal::ZERO, Decimal::ZERO), |position| (position.balance, position.held));
            AssetSnapshot { asset, balance, held }
        });
        WalletSnapshot { status: self.status, asset }
    }
}
