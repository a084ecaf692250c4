//! `LimitsStore` for both identity stores, written once (`crate::sql`), migration 0030. On
//! SQLite amounts are exact decimal text (`Amount`, `Column for Decimal`).

use async_trait::async_trait;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use tally_engine::limits::UserLimits;
use tally_engine::{Currency, Timestamp, UserId};
use uuid::Uuid;

use super::VerificationLevel;
use super::limits::{
    LevelLimits, LimitsStore, USAGE_SQL, UsageSums, UsageTotal, first_id_at, level_limits, user_level,
};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Exact, Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

#[async_trait]
impl<S: IdentitySql> LimitsStore for S {
    async fn load_limits(&self) -> Result<Vec<LevelLimits>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(
                "SELECT level, currency, per_transfer_max, daily_max, monthly_max FROM verification_limits
                 ORDER BY level, currency",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    level_limits(
                        &row.decode::<String>("level")?,
                        &row.decode::<String>("currency")?,
                        row.decode("per_transfer_max")?,
                        row.decode("daily_max")?,
                        row.decode("monthly_max")?,
                    )
                })
                .collect()
        })
    }

    async fn load_user_levels(&self) -> Result<Vec<(UserId, VerificationLevel)>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query("SELECT id, verification_level FROM users WHERE verification_level <> 'none'")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(|row| user_level(row.decode("id")?, &row.decode::<String>("verification_level")?)).collect()
        })
    }

    async fn load_usage(&self, since: Timestamp, now: Timestamp) -> Result<Vec<UsageTotal>, StoreError> {
        run_on_backend!(self, |pool| {
            let mut rows = sqlx::query(USAGE_SQL).bind(Id(first_id_at(since))).bind(since.as_micros()).fetch(&pool);
            let mut sums = UsageSums::new(now);
            while let Some(row) = rows.try_next().await.map_err(classify)? {
                sums.add(
                    row.decode::<Uuid>("initiated_by")?,
                    &row.decode::<String>("currency")?,
                    row.decode::<Decimal>("amount")?,
                    row.decode::<i64>("created_at")?,
                )?;
            }
            Ok(sums.totals())
        })
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
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            sqlx::query("DELETE FROM verification_limits WHERE level = $1")
                .bind(level.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            for (currency, limits) in &limits {
                sqlx::query(
                    "INSERT INTO verification_limits
                         (level, currency, per_transfer_max, daily_max, monthly_max, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(level.as_str())
                .bind(currency.code())
                .bind(limits.per_transfer_max.map(Exact))
                .bind(limits.daily_max.map(Exact))
                .bind(limits.monthly_max.map(Exact))
                .bind(at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)
        })
    }
}
