//! `LimitsStore` on SQLite (migration 0030): amounts as exact decimal text.

use async_trait::async_trait;
use futures::TryStreamExt;
use tally_engine::limits::UserLimits;
use tally_engine::{Currency, Timestamp, UserId};

use super::VerificationLevel;
use super::limits::{
    LevelLimits, LimitsStore, USAGE_SQL_SQLITE, UsageSums, UsageTotal, first_id_at, level_limits, user_level,
};
use super::sqlite::{SqliteUserStore, id_to_db, uuid_from_db};
use crate::audit::AuditRecord;
use crate::sqlite::classify;
use crate::sqlite::decimal_from_db;
use crate::store::StoreError;

type Row = (String, String, Option<String>, Option<String>, Option<String>);

#[async_trait]
impl LimitsStore for SqliteUserStore {
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
                .map(|(level, currency, per, daily, monthly)| {
                    let decimal = |text: Option<String>, column: &str| {
                        text.map(|text| decimal_from_db(&text, column)).transpose()
                    };
                    level_limits(
                        &level,
                        &currency,
                        decimal(per, "verification_limits.per_transfer_max")?,
                        decimal(daily, "verification_limits.daily_max")?,
                        decimal(monthly, "verification_limits.monthly_max")?,
                    )
                })
                .collect()
        })
        .await
    }

    async fn load_user_levels(&self) -> Result<Vec<(UserId, VerificationLevel)>, StoreError> {
        self.run(|pool| async move {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, verification_level FROM users WHERE verification_level <> 'none'")
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            rows.into_iter().map(|(id, level)| user_level(uuid_from_db(&id, "users.id")?, &level)).collect()
        })
        .await
    }

    async fn load_usage(&self, since: Timestamp, now: Timestamp) -> Result<Vec<UsageTotal>, StoreError> {
        self.run(|pool| async move {
            let mut rows = sqlx::query_as::<_, (String, String, String, i64)>(USAGE_SQL_SQLITE)
                .bind(id_to_db(first_id_at(since)))
                .bind(since.as_micros())
                .fetch(&pool);
            let mut sums = UsageSums::new(now);
            while let Some((user, currency, amount, at)) = rows.try_next().await.map_err(classify)? {
                sums.add(
                    uuid_from_db(&user, "transfers.initiated_by")?,
                    &currency,
                    decimal_from_db(&amount, "transfers.amount")?,
                    at,
                )?;
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
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            sqlx::query("DELETE FROM verification_limits WHERE level = ?1")
                .bind(level.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            for (currency, limits) in limits {
                sqlx::query(
                    "INSERT INTO verification_limits
                         (level, currency, per_transfer_max, daily_max, monthly_max, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .bind(level.as_str())
                .bind(currency.code())
                .bind(limits.per_transfer_max.map(|value| value.to_string()))
                .bind(limits.daily_max.map(|value| value.to_string()))
                .bind(limits.monthly_max.map(|value| value.to_string()))
                .bind(at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)
        })
        .await
    }
}
