//! The statements' read model (`GET /v1/admin/statements`): ledger lines (postings) with what
//! an auditor needs to reconcile them (account, owner, transfer type, reference), oldest first
//! in journal order, in keyset chunks after a sequence number.
//!
//! One query serves both the JSON pages and the streamed CSV: the CSV asks for chunk after
//! chunk, so it never holds more than one chunk, whatever the range. Journal commits are a
//! prefix in sequence order, so a walk by increasing `seq` never skips a posting that was
//! durable when its chunk was read; postings committed during a walk are included if their
//! chunk comes later (a statement of a range that includes today is as of its last chunk).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId, UserId};

use crate::store::StoreError;

/// Whose postings a statement lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementScope {
    /// Every account, system accounts included: the whole ledger, whose debits and credits
    /// balance per currency.
    All,
    Account(AccountId),
    /// Every account this user owns.
    Owner(UserId),
}

/// Which postings a statement lists.
#[derive(Clone, Copy, Debug)]
pub struct StatementFilter {
    pub scope: StatementScope,
    /// `Some(true)`: credits only; `Some(false)`: debits only.
    pub credit: Option<bool>,
    /// Transfer creation time, inclusive, microseconds since the epoch.
    pub from: i64,
    /// Transfer creation time, exclusive.
    pub to: i64,
}

/// One ledger line: a posting with its account's owner and its transfer's type and texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    pub seq: u64,
    pub transfer: TransferId,
    pub account: AccountId,
    /// `None` for system accounts.
    pub owner: Option<UserId>,
    pub currency: String,
    pub credit: bool,
    pub amount: Decimal,
    pub balance_after: Decimal,
    /// The transfer's type (`internal`, `external`, `admin_credit`, `admin_debit`).
    pub transfer_kind: String,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// The transfer's creation time (postings carry no time of their own).
    pub created_at: i64,
}

#[async_trait]
pub trait StatementReads: Send + Sync + 'static {
    /// At most `limit` lines matching `filter`, oldest first (increasing `seq`), with a
    /// sequence number above `after_seq`.
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError>;
}

#[async_trait]
impl<R: StatementReads + ?Sized> StatementReads for std::sync::Arc<R> {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        (**self).statement_lines(filter, after_seq, limit).await
    }
}

/// The SQL condition on the posting `p` (joined to its account `a`) that selects `scope`,
/// with its one parameter at position `n`. Each scope is its own statement text, so each gets
/// its own prepared plan: `postings_by_account` for an account, the owner's few accounts for
/// a user, the primary key walk for everything (a catch-all `$n IS NULL OR ...` would let a
/// generic plan ignore the index).
pub(crate) fn scope_condition(scope: StatementScope, placeholder: &str) -> String {
    match scope {
        StatementScope::All => format!("{placeholder} IS NULL"),
        StatementScope::Account(_) => format!("p.account_id = {placeholder}"),
        StatementScope::Owner(_) => format!("a.owner_id = {placeholder}"),
    }
}

/// The id `scope`'s condition compares with (none for `All`).
pub(crate) fn scope_id(scope: StatementScope) -> Option<uuid::Uuid> {
    match scope {
        StatementScope::All => None,
        StatementScope::Account(account) => Some(account.as_uuid()),
        StatementScope::Owner(owner) => Some(owner.as_uuid()),
    }
}

pub(crate) fn direction(credit: Option<bool>) -> Option<&'static str> {
    credit.map(|credit| if credit { "credit" } else { "debit" })
}
