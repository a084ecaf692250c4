//! `AmlStore` for Postgres (a child of `postgres.rs`, sharing its helpers), and the insert of a
//! journal batch's flags.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use tally_engine::aml::{AmlAction, AmlFlag, AmlRule, AmlRuleKind, FlagStatus, ThresholdRule, VelocityRule};
use tally_engine::{AccountId, Currency, Timestamp, TransferId, TransferKind, UserId};
use uuid::Uuid;

use super::{PgStore, classify, parse, seq_to_db};
use crate::aml::{AmlStore, FlagFilter, Resolution, Resolved};
use crate::audit::AuditRecord;
use crate::reads::listing::Position;
use crate::store::StoreError;
use crate::store::corrupt;

const FLAG_COLUMNS: &str = "id, transfer_id, account_id, user_id, rule_id, rule_name, action, status, notes, amount, \
                            currency, created_at, resolved_at, resolved_by";

const RULE_COLUMNS: &str = "id, name, kind, action, enabled, currency, amount, transfer_type, window_seconds, \
                            max_count, max_amount, created_at, updated_at";

/// Inserts the flags of one journal batch. A flag is written once: a retried batch that had
/// committed is recognised before this, and `DO NOTHING` keeps a resolution from being undone.
pub(super) async fn insert_flags(
    transaction: &mut Transaction<'_, Postgres>,
    flags: &[(u64, AmlFlag)],
) -> Result<(), StoreError> {
    for (seq, flag) in flags {
        sqlx::query(&format!(
            "INSERT INTO aml_flags ({FLAG_COLUMNS}, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(flag.id)
        .bind(flag.transfer.as_uuid())
        .bind(flag.account.as_uuid())
        .bind(flag.user.map(|user| user.as_uuid()))
        .bind(flag.rule_id)
        .bind(&flag.rule_name)
        .bind(flag.action.as_str())
        .bind(flag.status.as_str())
        .bind(&flag.notes)
        .bind(flag.amount)
        .bind(flag.currency.code())
        .bind(flag.created_at.as_micros())
        .bind(flag.resolved_at.map(|at| at.as_micros()))
        .bind(flag.resolved_by.map(|user| user.as_uuid()))
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn flag_from_row(row: &PgRow) -> Result<AmlFlag, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.try_get(column).map_err(classify) };
    let user: Option<Uuid> = row.try_get("user_id").map_err(classify)?;
    let resolved_at: Option<i64> = row.try_get("resolved_at").map_err(classify)?;
    let resolved_by: Option<Uuid> = row.try_get("resolved_by").map_err(classify)?;
    Ok(AmlFlag {
        id: row.try_get("id").map_err(classify)?,
        transfer: TransferId::from_uuid(row.try_get("transfer_id").map_err(classify)?),
        account: AccountId::from_uuid(row.try_get("account_id").map_err(classify)?),
        user: user.map(UserId::from_uuid),
        rule_id: row.try_get("rule_id").map_err(classify)?,
        rule_name: text("rule_name")?,
        action: parse(&text("action")?, AmlAction::parse, "AML action")?,
        status: parse(&text("status")?, FlagStatus::parse, "flag status")?,
        notes: row.try_get("notes").map_err(classify)?,
        amount: row.try_get("amount").map_err(classify)?,
        currency: parse(&text("currency")?, Currency::from_code, "currency")?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        resolved_at: resolved_at.map(Timestamp::from_micros),
        resolved_by: resolved_by.map(UserId::from_uuid),
    })
}

fn rule_from_row(row: &PgRow) -> Result<AmlRule, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.try_get(column).map_err(classify) };
    let currency = parse(&text("currency")?, Currency::from_code, "currency")?;
    let kind = match text("kind")?.as_str() {
        "threshold" => {
            let transfer_type: Option<String> = row.try_get("transfer_type").map_err(classify)?;
            let transfer_kind =
                transfer_type.map(|text| parse(&text, TransferKind::parse, "transfer type")).transpose()?;
            let amount = row.try_get::<Option<rust_decimal::Decimal>, _>("amount").map_err(classify)?;
            let amount = amount.ok_or_else(|| corrupt("threshold rule without amount"))?;
            AmlRuleKind::Threshold(ThresholdRule { amount, currency, transfer_kind })
        }
        "velocity" => {
            let window: Option<i64> = row.try_get("window_seconds").map_err(classify)?;
            let max_count: Option<i64> = row.try_get("max_count").map_err(classify)?;
            AmlRuleKind::Velocity(VelocityRule {
                window_seconds: window
                    .and_then(|window| u32::try_from(window).ok())
                    .ok_or_else(|| corrupt("velocity rule without a window"))?,
                max_count: max_count
                    .map(|count| u32::try_from(count).map_err(|_| corrupt("max_count out of range")))
                    .transpose()?,
                max_amount: row.try_get("max_amount").map_err(classify)?,
                currency,
            })
        }
        other => return Err(corrupt(format!("unknown AML rule kind {other:?}"))),
    };
    Ok(AmlRule {
        id: row.try_get("id").map_err(classify)?,
        name: text("name")?,
        kind,
        action: parse(&text("action")?, AmlAction::parse, "AML action")?,
        enabled: row.try_get("enabled").map_err(classify)?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at").map_err(classify)?),
    })
}

/// `WHERE` of a flag listing or count: `$1` status, `$2` account, `$3` transfer (each may be
/// NULL).
const FLAG_FILTER: &str = "($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR account_id = $2)
    AND ($3::uuid IS NULL OR transfer_id = $3)";

#[async_trait]
impl AmlStore for PgStore {
    async fn aml_rules(&self) -> Result<Vec<AmlRule>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM aml_rules ORDER BY created_at, id"))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(rule_from_row).collect()
        })
        .await
    }

    async fn put_aml_rule(&self, rule: &AmlRule, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        let rule = rule.clone();
        let audit = audit.cloned();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let (amount, transfer_type, window, max_count, max_amount, currency) = match &rule.kind {
                AmlRuleKind::Threshold(threshold) => (
                    Some(threshold.amount),
                    threshold.transfer_kind.map(TransferKind::as_str),
                    None,
                    None,
                    None,
                    threshold.currency,
                ),
                AmlRuleKind::Velocity(velocity) => (
                    None,
                    None,
                    Some(i64::from(velocity.window_seconds)),
                    velocity.max_count.map(i64::from),
                    velocity.max_amount,
                    velocity.currency,
                ),
            };
            sqlx::query(&format!(
                "INSERT INTO aml_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
                     action = EXCLUDED.action, enabled = EXCLUDED.enabled, currency = EXCLUDED.currency,
                     amount = EXCLUDED.amount, transfer_type = EXCLUDED.transfer_type,
                     window_seconds = EXCLUDED.window_seconds, max_count = EXCLUDED.max_count,
                     max_amount = EXCLUDED.max_amount, updated_at = EXCLUDED.updated_at"
            ))
            .bind(rule.id)
            .bind(&rule.name)
            .bind(rule.kind.as_str())
            .bind(rule.action.as_str())
            .bind(rule.enabled)
            .bind(currency.code())
            .bind(amount)
            .bind(transfer_type)
            .bind(window)
            .bind(max_count)
            .bind(max_amount)
            .bind(rule.created_at.as_micros())
            .bind(rule.updated_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)
        })
        .await
    }

    async fn delete_aml_rule(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let deleted = sqlx::query("DELETE FROM aml_rules WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn aml_flag(&self, id: Uuid) -> Result<Option<AmlFlag>, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM aml_flags WHERE id = $1"))
                .bind(id)
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(flag_from_row).transpose()
        })
        .await
    }

    async fn aml_flag_page(
        &self,
        filter: FlagFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<AmlFlag>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {FLAG_COLUMNS} FROM aml_flags WHERE {FLAG_FILTER}
                   AND ($4::int8 IS NULL OR (created_at, id) < ($4, $5::uuid))
                 ORDER BY created_at DESC, id DESC LIMIT $6"
            ))
            .bind(filter.status.map(FlagStatus::as_str))
            .bind(filter.account.map(|account| account.as_uuid()))
            .bind(filter.transfer.map(|transfer| transfer.as_uuid()))
            .bind(after.map(|after| after.created_at))
            .bind(after.map(|after| after.id))
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(flag_from_row).collect()
        })
        .await
    }

    async fn count_aml_flags(&self, filter: FlagFilter) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM aml_flags WHERE {FLAG_FILTER}"))
                .bind(filter.status.map(FlagStatus::as_str))
                .bind(filter.account.map(|account| account.as_uuid()))
                .bind(filter.transfer.map(|transfer| transfer.as_uuid()))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            u64::try_from(count).map_err(|_| corrupt("negative count"))
        })
        .await
    }

    async fn resolve_aml_flag(
        &self,
        id: Uuid,
        resolution: &Resolution,
        audit: Option<&AuditRecord>,
    ) -> Result<Resolved, StoreError> {
        let resolution = resolution.clone();
        let audit = audit.cloned();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE aml_flags SET status = $2, notes = $3, resolved_at = $4, resolved_by = $5
                 WHERE id = $1 AND status = 'open'",
            )
            .bind(id)
            .bind(resolution.status.as_str())
            .bind(&resolution.notes)
            .bind(resolution.at.as_micros())
            .bind(resolution.by.as_uuid())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() == 1 {
                if let Some(audit) = &audit {
                    crate::audit::postgres::append(&mut transaction, audit).await?;
                }
                transaction.commit().await.map_err(classify)?;
                return Ok(Resolved::Resolved);
            }
            // Nothing changed (resolved already, or no such flag): nothing is recorded.
            transaction.rollback().await.map_err(classify)?;
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM aml_flags WHERE id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            Ok(if exists.is_some() { Resolved::AlreadyResolved } else { Resolved::NotFound })
        })
        .await
    }
}
