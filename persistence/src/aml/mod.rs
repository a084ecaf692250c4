//! AML rules and flags in the store. Rules are written by admins directly (store first, then
//! the engine swaps its in-memory copy); flags arrive through the journal (`Record::AmlFlag`)
//! with the transfer that raised them, and are resolved here with one conditional update.
//! Both SQL ledger stores implement `AmlStore` with the same code (`sql.rs`); the memory store
//! in `memory.rs`.

pub(crate) mod sql;

use async_trait::async_trait;
use tally_engine::AccountId;
use tally_engine::Timestamp;
use tally_engine::TransferId;
use tally_engine::UserId;
use tally_engine::aml::{AmlFlag, AmlRule, FlagStatus};

use crate::audit::AuditRecord;
use crate::reads::listing::Position;
use crate::store::StoreError;

/// Which flags to list or count.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlagFilter {
    pub status: Option<FlagStatus>,
    pub account: Option<AccountId>,
    /// Only the flags a transfer raised. They are raised on its source account, so callers
    /// that know the transfer set `account` too and the account's index finds them.
    pub transfer: Option<TransferId>,
}

/// An analyst's decision on an open flag.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub status: FlagStatus,
    pub notes: Option<String>,
    pub at: Timestamp,
    pub by: UserId,
}

/// What resolving a flag found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Resolved,
    NotFound,
    /// The flag was resolved before: a flag is resolved once.
    AlreadyResolved,
}

#[async_trait]
pub trait AmlStore: Send + Sync + 'static {
    /// Every rule, oldest first.
    async fn aml_rules(&self) -> Result<Vec<AmlRule>, StoreError>;

    /// Inserts a new rule. `audit`, the admin's record of the change, is appended to the audit
    /// chain in the same transaction, last (SQL stores; the in-memory store, which has no
    /// chain, ignores it). The HTTP layer always gives one.
    async fn insert_aml_rule(&self, rule: &AmlRule, audit: Option<&AuditRecord>) -> Result<(), StoreError>;

    /// Replaces the stored rule with `rule`'s id (every field but `id` and `created_at`);
    /// false if there is none (then nothing is recorded): a replacement never creates a rule,
    /// so one racing a deletion cannot bring the rule back. `audit` as for `insert_aml_rule`.
    async fn replace_aml_rule(&self, rule: &AmlRule, audit: Option<&AuditRecord>) -> Result<bool, StoreError>;

    /// Deletes the rule; false if there was none (then nothing is recorded). Its flags keep its
    /// id and name. `audit` as for `insert_aml_rule`.
    async fn delete_aml_rule(&self, id: uuid::Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError>;

    async fn aml_flag(&self, id: uuid::Uuid) -> Result<Option<AmlFlag>, StoreError>;

    /// Flags matching `filter`, newest first by `(created_at, id)`, after `after`.
    async fn aml_flag_page(
        &self,
        filter: FlagFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<AmlFlag>, StoreError>;

    async fn count_aml_flags(&self, filter: FlagFilter) -> Result<u64, StoreError>;

    /// Resolves an open flag (one conditional update: two analysts cannot both resolve it).
    /// `audit` as for `insert_aml_rule`, appended only when the flag was resolved here.
    async fn resolve_aml_flag(
        &self,
        id: uuid::Uuid,
        resolution: &Resolution,
        audit: Option<&AuditRecord>,
    ) -> Result<Resolved, StoreError>;
}

/// Newest first by `(created_at, id)`: the order every flag listing uses.
pub fn newest_first(a: &AmlFlag, b: &AmlFlag) -> std::cmp::Ordering {
    (b.created_at.as_micros(), b.id).cmp(&(a.created_at.as_micros(), a.id))
}
