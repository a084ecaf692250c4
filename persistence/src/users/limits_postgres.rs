//! `LimitsStore` on Postgres (migration 0030).

use async_trait::async_trait;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use tally_engine::limits::UserLimits;
use tally_engine::{Currency, Timestamp, UserId};

use super::VerificationLevel;
use super::limits::{
    LevelLimits, LimitsStore, USAGE_SQL_POSTGRES, UsageSums, UsageTotal, first_id_at, level_limits, user_level,
};
use super::postgres::PgUserStore;
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::store::StoreError;

type Row = (String, String, Option<Decimal>, Option<Decimal>, Option<Decimal>);

#[async_trait]
impl LimitsStore for PgUserStore {
    async fn load_limits(&self) -> Result<Vec<LevelLimits>, StoreError> {
        self.run(|pool| async move {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT level, currency, per_transfer_max, daily_max, monthly_max FROM verification_limits
                 ORDER BY level, currency",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.into_iter()
                .map(|(level, currency, per, daily, monthly)| level_limits(&level, &currency, per, daily, monthly))
                .collect()
        })
        .await
    }

    async fn load_user_levels(&self) -> Result<Vec<(UserId, VerificationLevel)>, StoreError> {
        self.run(|pool| async move {
            let rows: Vec<(uuid::Uuid, String)> =
                sqlx::query_as("SELECT id, verification_level FROM users WHERE verification_level <> 'none'")
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            rows.into_iter().map(|(id, level)| user_level(id, &level)).collect()
        })
        .await
    }

    async fn load_usage(&self, since: Timestamp, now: Timestamp) -> Result<Vec<UsageTotal>, StoreError> {
        self.run(|pool| async move {
            let mut rows = sqlx::query_as::<_, (uuid::Uuid, String, Decimal, i64)>(USAGE_SQL_POSTGRES)
                .bind(first_id_at(since))
                .bind(since.as_micros())
                .fetch(&pool);
            let mut sums = UsageSums::new(now);
            while let Some((user, currency, amount, at)) = rows.try_next().await.map_err(classify)? {
                sums.add(user, &currency, amount, at)?;
            }
            Ok(sums.totals())
        })
        .await
    }

    async fn replace_level_limits(
        &self,
        level: VerificationLevel,
        limits: &[(Currency, UserLimits)],
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let limits = limits.to_vec();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            sqlx::query("DELETE FROM verification_limits WHERE level = $1")
                .bind(level.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            for (currency, limits) in limits {
                sqlx::query(
                    "INSERT INTO verification_limits
                         (level, currency, per_transfer_max, daily_max, monthly_max, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(level.as_str())
                .bind(currency.code())
                .bind(limits.per_transfer_max)
                .bind(limits.daily_max)
                .bind(limits.monthly_max)
                .bind(at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)
        })
        .await
    }
}
