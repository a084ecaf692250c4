//! The limits of each verification level (migration 0030): per level and currency, the
//! `UserLimits` an admin set. Configuration, not money: admins write it directly (store
//! first, then the engine's memory, as pricing does), and the engine loads it once at start.
//! Implemented by both identity stores, beside the users whose `verification_level` it keys
//! on; a level's replacement appends its audit entry in the same transaction.
//!
//! What a user has used against these limits is not stored here: usage is counted in memory
//! by `tally_actors::limits`. The levels of the users above `none` are read once at start
//! (`load_user_levels`), for the engine to enforce limits without a store round trip.

use async_trait::async_trait;
use tally_engine::limits::UserLimits;
use tally_engine::{Currency, Timestamp, UserId};

use super::VerificationLevel;
use crate::audit::AuditRecord;
use crate::store::StoreError;

/// The limits of one level in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelLimits {
    pub level: VerificationLevel,
    pub currency: Currency,
    pub limits: UserLimits,
}

#[async_trait]
pub trait LimitsStore: Send + Sync + 'static {
    /// Every stored row, by level then currency code. Each row is checked as it is read
    /// (`UserLimits::new`): a row the API could not have written is `Corrupt`, not used.
    async fn load_limits(&self) -> Result<Vec<LevelLimits>, StoreError>;

    /// Every user whose verification level is above `none`, with it (one scan of `users` at
    /// start; bounded by the users there are).
    async fn load_user_levels(&self) -> Result<Vec<(UserId, VerificationLevel)>, StoreError>;

    /// What limits count, from the ledger itself, for start-up: every internal or external
    /// transfer a user initiated and every crypto withdrawal, `processing`, `pending` or
    /// `completed`, created at or after `since` (the month's start), as `(user, currency,
    /// amount, created_at)`. One range of each table's primary key (ids are UUIDv7 of the
    /// creation time), read once per start.
    async fn load_usage(&self, since: Timestamp) -> Result<Vec<UsageRow>, StoreError>;

    /// Replaces `level`'s whole set with `limits` (one entry per currency, none unlimited)
    /// and appends `audit`, in one transaction.
    async fn replace_level_limits(
        &self,
        level: VerificationLevel,
        limits: &[(Currency, UserLimits)],
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
}

/// One counted transfer: who initiated it, its source currency and amount, when it was created.
pub type UsageRow = (UserId, Currency, rust_decimal::Decimal, Timestamp);

/// The smallest UUIDv7 of a time: transfers created at or after `since` have ids at or above it.
pub(crate) fn first_id_at(since: Timestamp) -> uuid::Uuid {
    let millis = u128::try_from(since.as_micros().div_euclid(1_000)).unwrap_or(0);
    uuid::Uuid::from_u128(millis << 80)
}

/// SQL of `load_usage` (`$1`/`?1` the first id, `$2`/`?2` the time; both stores): the
/// transfers, and the crypto withdrawals (ids of the same UUIDv7 kind) of their owners.
pub(crate) const USAGE_SQL_POSTGRES: &str = "SELECT initiated_by, currency, amount, created_at FROM transfers
     WHERE id >= $1 AND created_at >= $2 AND initiated_by IS NOT NULL AND kind IN ('internal', 'external')
       AND status IN ('processing', 'pending', 'completed')
     UNION ALL
     SELECT owner_id, asset, asset_amount, created_at FROM crypto_ops
     WHERE id >= $1 AND created_at >= $2 AND kind = 'withdrawal'
       AND status IN ('processing', 'pending', 'completed')";
pub(crate) const USAGE_SQL_SQLITE: &str = "SELECT initiated_by, currency, amount, created_at FROM transfers
     WHERE id >= ?1 AND created_at >= ?2 AND initiated_by IS NOT NULL AND kind IN ('internal', 'external')
       AND status IN ('processing', 'pending', 'completed')
     UNION ALL
     SELECT owner_id, asset, asset_amount, created_at FROM crypto_ops
     WHERE id >= ?1 AND created_at >= ?2 AND kind = 'withdrawal'
       AND status IN ('processing', 'pending', 'completed')";

/// A stored usage row, checked (shared by both stores).
pub(crate) fn usage_row(
    user: uuid::Uuid,
    currency: &str,
    amount: rust_decimal::Decimal,
    created_at: i64,
) -> Result<UsageRow, StoreError> {
    let currency = Currency::from_code(currency)
        .ok_or_else(|| StoreError::Corrupt(format!("a transfer of user {user} has currency {currency:?}")))?;
    Ok((UserId::from_uuid(user), currency, amount, Timestamp::from_micros(created_at)))
}

/// A stored `(id, verification_level)` row, checked (shared by both stores).
pub(crate) fn user_level(id: uuid::Uuid, level: &str) -> Result<(UserId, VerificationLevel), StoreError> {
    let level = VerificationLevel::parse(level)
        .ok_or_else(|| StoreError::Corrupt(format!("user {id} has verification level {level:?}")))?;
    Ok((UserId::from_uuid(id), level))
}

/// A stored row back into `LevelLimits`, checked (shared by both stores).
pub(crate) fn level_limits(
    level: &str,
    currency: &str,
    per_transfer_max: Option<rust_decimal::Decimal>,
    daily_max: Option<rust_decimal::Decimal>,
    monthly_max: Option<rust_decimal::Decimal>,
) -> Result<LevelLimits, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("verification_limits ({level}, {currency}): {what}"));
    let level = VerificationLevel::parse(level).ok_or_else(|| corrupt("unknown level".to_owned()))?;
    let currency = Currency::from_code(currency).ok_or_else(|| corrupt("unknown currency".to_owned()))?;
    let limits = UserLimits::new(currency, per_transfer_max, daily_max, monthly_max)
        .map_err(|error| corrupt(error.to_string()))?;
    if limits.is_unlimited() {
        return Err(corrupt("a row without any maximum".to_owned()));
    }
    Ok(LevelLimits { level, currency, limits })
}
