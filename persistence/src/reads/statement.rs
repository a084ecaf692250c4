//! The statements' read model (`GET /v1/admin/statements`): ledger lines (postings) with what
//! an auditor needs to reconcile them (account, owner, transfer type, reference), account by
//! account (in account id order), each account's lines oldest first by booking time and
//! posting number, in keyset chunks after a posting's position.
//!
//! One query serves both the JSON pages and the streamed CSV: the CSV asks for chunk after
//! chunk, so it never holds more than one chunk, whatever the range. Per account, postings
//! are durable in posting-number order (an account's journal commits are a prefix), so a walk
//! never skips a posting that was durable when its chunk was read; a posting committed during
//! a walk is included if its place comes after the chunk being read (a statement of a period
//! that includes now is as of its last chunk). The period is of booking time: when the
//! posting's batch was committed, which is when the balance changed (a pending transfer posts
//! when it is executed, not when it was created).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId, UserId};

use super::listing::PostingPosition;
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
    /// Booking time, inclusive, microseconds since the epoch.
    pub from: i64,
    /// Booking time, exclusive.
    pub to: i64,
}

/// One ledger line: a posting with its account's owner and its transfer's type and texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// The posting's place (its account, booking time and posting number).
    pub position: PostingPosition,
    pub transfer: TransferId,
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
    /// When the posting was booked, microseconds since the epoch.
    pub booked_at: i64,
}

#[async_trait]
pub trait StatementReads: Send + Sync + 'static {
    /// At most `limit` lines matching `filter`, in position order, strictly after `after`.
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError>;
}

#[async_trait]
impl<R: StatementReads + ?Sized> StatementReads for std::sync::Arc<R> {
    async fn statement_lines(
        &self,
        filter: &StatementFilter,
        after: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        (**self).statement_lines(filter, after, limit).await
    }
}

/// The SQL condition on the account `a` that selects `scope`'s accounts, with its one
/// parameter at `placeholder`. Each scope is its own statement text, so each gets its own
/// prepared plan (a catch-all `$n IS NULL OR ...` would let a generic plan ignore the index):
/// the primary key for one account, `accounts_by_owner` for a user's, every account in id
/// order for the whole ledger.
pub(crate) fn scope_condition(scope: StatementScope, placeholder: &str) -> String {
    match scope {
        StatementScope::All => format!("{placeholder} IS NULL"),
        StatementScope::Account(_) => format!("a.id = {placeholder}"),
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
