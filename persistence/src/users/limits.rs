//! The limits of each verification level (migration 0030): per level and currency, the
//! `UserLimits` an admin set. Configuration, not money: admins write it directly (store
//! first, then the engine's memory, as pricing does), and the engine loads it once at start.
//! Implemented by both identity stores, beside the users whose `verification_level` it keys
//! on; a level's replacement appends its audit entry in the same transaction.
//!
//! What a user has used against these limits is not stored here: usage is counted in memory
//! by `tally_actors::limits`. The levels of the users above `none` are read once at start
//! (`load_user_levels`), for the engine to enforce limits without a store round trip.

use std::collections::HashMap;

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::limits::{Usage, UserLimits, Window, window_of};
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
    /// `completed`, created at or after `since` (the month's start), summed per user and
    /// currency into the windows of `now` (`UsageSums`). One range of each table's primary key
    /// (ids are UUIDv7 of the creation time), read once per start and streamed: memory holds
    /// one entry per user and currency, not one per transfer of the month.
    async fn load_usage(&self, since: Timestamp, now: Timestamp) -> Result<Vec<UsageTotal>, StoreError>;

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

/// What one user has used in one currency, in the day and month of the `now` it was summed at.
pub type UsageTotal = (UserId, Currency, Usage);

/// Sums counted transfers as the store streams them (`load_usage`), into the windows of `now`.
/// Amounts are summed exactly; a sum past `Decimal::MAX` saturates (it would refuse every
/// transfer, as an exhausted limit should), which no ledger of real amounts reaches.
pub(crate) struct UsageSums {
    now: Window,
    sums: HashMap<(UserId, Currency), Usage>,
}

impl UsageSums {
    pub(crate) fn new(now: Timestamp) -> UsageSums {
        UsageSums { now: window_of(now), sums: HashMap::new() }
    }

    /// Adds one counted row `(user, currency code, amount, created_at)` as stored.
    pub(crate) fn add(
        &mut self,
        user: uuid::Uuid,
        currency: &str,
        amount: Decimal,
        created_at: i64,
    ) -> Result<(), StoreError> {
        let currency = Currency::from_code(currency)
            .ok_or_else(|| StoreError::Corrupt(format!("a transfer of user {user} has currency {currency:?}")))?;
        let at = window_of(Timestamp::from_micros(created_at));
        let used = self.sums.entry((UserId::from_uuid(user), currency)).or_default();
        let add = |sum: Decimal| sum.checked_add(amount).unwrap_or(Decimal::MAX);
        if at.month == self.now.month {
            used.used_this_month = add(used.used_this_month);
        }
        if at.day == self.now.day {
            used.used_today = add(used.used_today);
        }
        Ok(())
    }

    pub(crate) fn totals(self) -> Vec<UsageTotal> {
        self.sums.into_iter().map(|((user, currency), used)| (user, currency, used)).collect()
    }
}

/// The smallest UUIDv7 of a time: transfers created at or after `since` have ids at or above it.
pub(crate) fn first_id_at(since: Timestamp) -> uuid::Uuid {
    let millis = u128::try_from(since.as_micros().div_euclid(1_000)).unwrap_or(0);
    uuid::Uuid::from_u128(millis << 80)
}

/// SQL of `load_usage` (both stores): the transfers, and the crypto withdrawals (ids of the
/// same UUIDv7 kind) of their owners, from the first id `$1` and the time `$2`.
pub(crate) const USAGE_SQL: &str = "SELECT initiated_by, currency, amount, created_at FROM transfers
     WHERE id >= $1 AND created_at >= $2 AND initiated_by IS NOT NULL AND kind IN ('internal', 'external')
       AND status IN ('processing', 'pending', 'completed')
     UNION ALL
     SELECT owner_id, asset, asset_amount, created_at FROM crypto_ops
     WHERE id >= $1 AND created_at >= $2 AND kind = 'withdrawal'
       AND status IN ('processing', 'pending', 'completed')";

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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn usage_sums_count_each_row_once_in_the_windows_of_now() {
        // 2024-03-15 12:00 UTC; 2024-03-01 is day 19783 since 1970-01-01.
        let month_start = 19_783 * DAY;
        let now = Timestamp::from_micros(month_start + 14 * DAY + DAY / 2);
        let today = month_start + 14 * DAY;
        let (alice, bob) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let amount = |text: &str| text.parse::<Decimal>().unwrap();
        let mut sums = UsageSums::new(now);
        sums.add(alice, "EUR", amount("10.01"), month_start).unwrap();
        sums.add(alice, "EUR", amount("0.02"), today).unwrap();
        sums.add(alice, "EUR", amount("100.00"), today + DAY / 2).unwrap();
        sums.add(alice, "USD", amount("5.00"), today - 1).unwrap();
        sums.add(bob, "EUR", amount("7.00"), month_start - 1).unwrap();
        let mut totals = sums.totals();
        totals.sort_by_key(|(user, currency, _)| (*user, currency.code()));
        let usage = |used_today: &str, used_this_month: &str| Usage {
            used_today: amount(used_today),
            used_this_month: amount(used_this_month),
        };
        assert_eq!(
            totals,
            vec![
                (UserId::from_uuid(alice), Currency::from_code("EUR").unwrap(), usage("100.02", "110.03")),
                (UserId::from_uuid(alice), Currency::from_code("USD").unwrap(), usage("0", "5.00")),
                // A row before the month (the store's range starts at the month; a row from
                // the day before is counted nowhere).
                (UserId::from_uuid(bob), Currency::from_code("EUR").unwrap(), usage("0", "0")),
            ]
        );
    }

    #[test]
    fn usage_sums_refuse_an_unknown_currency() {
        let mut sums = UsageSums::new(Timestamp::from_micros(0));
        let refused = sums.add(uuid::Uuid::from_u128(1), "XXX1", Decimal::ONE, 0);
        assert!(matches!(refused, Err(StoreError::Corrupt(_))), "{refused:?}");
    }
}
