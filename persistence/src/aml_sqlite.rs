//! `AmlStore` for SQLite (a child of `sqlite.rs`, sharing its helpers), and the insert of a
//! journal batch's flags. Amounts and ids are TEXT, as everywhere in the SQLite store.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use tally_engine::aml::{AmlAction, AmlFlag, AmlRule, AmlRuleKind, FlagStatus, ThresholdRule, VelocityRule};
use tally_engine::{AccountId, Currency, Timestamp, TransferId, TransferKind, UserId};
use uuid::Uuid;

use super::{
    SqliteStore, amount_to_db, classify, decimal, id_to_db, integer, optional_decimal, optional_integer, optional_text,
    optional_uuid, parse, seq_to_db, text, uuid,
};
use crate::aml::{AmlStore, FlagFilter, Resolution, Resolved};
use crate::audit::AuditRecord;
use crate::reads::listing::Position;
use crate::store::StoreError;
use crate::store::corrupt;

const FLAG_COLUMNS: &str = "id, transfer_id, account_id, user_id, rule_id, rule_name, action, status, notes, amount, \
                            currency, created_at, resolved_at, resolved_by";

const RULE_COLUMNS: &str = "id, name, kind, action, enabled, currency, amount, transfer_type, window_seconds, \
                            max_count, max_amount, created_at, updated_at";

/// Inserts the flags of one journal batch (see `aml_postgres::insert_flags`).
pub(super) async fn insert_flags(
    transaction: &mut Transaction<'_, Sqlite>,
    flags: &[(u64, AmlFlag)],
) -> Result<(), StoreError> {
    for (seq, flag) in flags {
        sqlx::query(&format!(
            "INSERT INTO aml_flags ({FLAG_COLUMNS}, seq)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(id_to_db(flag.id))
        .bind(id_to_db(flag.transfer.as_uuid()))
        .bind(id_to_db(flag.account.as_uuid()))
        .bind(flag.user.map(|user| id_to_db(user.as_uuid())))
        .bind(id_to_db(flag.rule_id))
        .bind(&flag.rule_name)
        .bind(flag.action.as_str())
        .bind(flag.status.as_str())
        .bind(&flag.notes)
        .bind(amount_to_db(flag.amount))
        .bind(flag.currency.code())
        .bind(flag.created_at.as_micros())
        .bind(flag.resolved_at.map(|at| at.as_micros()))
        .bind(flag.resolved_by.map(|user| id_to_db(user.as_uuid())))
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn flag_from_row(row: &SqliteRow) -> Result<AmlFlag, StoreError> {
    Ok(AmlFlag {
        id: uuid(row, "id")?,
        transfer: TransferId::from_uuid(uuid(row, "transfer_id")?),
        account: AccountId::from_uuid(uuid(row, "account_id")?),
        user: optional_uuid(row, "user_id")?.map(UserId::from_uuid),
        rule_id: uuid(row, "rule_id")?,
        rule_name: text(row, "rule_name")?,
        action: parse(&text(row, "action")?, AmlAction::parse, "AML action")?,
        status: parse(&text(row, "status")?, FlagStatus::parse, "flag status")?,
        notes: optional_text(row, "notes")?,
        amount: decimal(row, "amount")?,
        currency: parse(&text(row, "currency")?, Currency::from_code, "currency")?,
        created_at: Timestamp::from_micros(integer(row, "created_at")?),
        resolved_at: optional_integer(row, "resolved_at")?.map(Timestamp::from_micros),
        resolved_by: optional_uuid(row, "resolved_by")?.map(UserId::from_uuid),
    })
}

fn rule_from_row(row: &SqliteRow) -> Result<AmlRule, StoreError> {
    let currency = parse(&text(row, "currency")?, Currency::from_code, "currency")?;
    let kind = match text(row, "kind")?.as_str() {
        "threshold" => {
            let transfer_kind = optional_text(row, "transfer_type")?
                .map(|text| parse(&text, TransferKind::parse, "transfer type"))
                .transpose()?;
            let amount = optional_decimal(row, "amount")?.ok_or_else(|| corrupt("threshold rule without amount"))?;
            AmlRuleKind::Threshold(ThresholdRule { amount, currency, transfer_kind })
        }
        "velocity" => AmlRuleKind::Velocity(VelocityRule {
            window_seconds: optional_integer(row, "window_seconds")?
                .and_then(|window| u32::try_from(window).ok())
                .ok_or_else(|| corrupt("velocity rule without a window"))?,
            max_count: optional_integer(row, "max_count")?
                .map(|count| u32::try_from(count).map_err(|_| corrupt("max_count out of range")))
                .transpose()?,
            max_amount: optional_decimal(row, "max_amount")?,
            currency,
        }),
        other => return Err(corrupt(format!("unknown AML rule kind {other:?}"))),
    };
    Ok(AmlRule {
        id: uuid(row, "id")?,
        name: text(row, "name")?,
        kind,
        action: parse(&text(row, "action")?, AmlAction::parse, "AML action")?,
        enabled: integer(row, "enabled")? != 0,
        created_at: Timestamp::from_micros(integer(row, "created_at")?),
        updated_at: Timestamp::from_micros(integer(row, "updated_at")?),
    })
}

/// `WHERE` of a flag listing or count: status, account, then transfer (each may be NULL).
const FLAG_FILTER: &str =
    "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR account_id = ?2) AND (?3 IS NULL OR transfer_id = ?3)";

#[async_trait]
impl AmlStore for SqliteStore {
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
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let (amount, transfer_type, window, max_count, max_amount, currency) = match &rule.kind {
                AmlRuleKind::Threshold(threshold) => (
                    Some(amount_to_db(threshold.amount)),
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
                    velocity.max_amount.map(amount_to_db),
                    velocity.currency,
                ),
            };
            sqlx::query(&format!(
                "INSERT INTO aml_rules ({RULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                     action = excluded.action, enabled = excluded.enabled, currency = excluded.currency,
                     amount = excluded.amount, transfer_type = excluded.transfer_type,
                     window_seconds = excluded.window_seconds, max_count = excluded.max_count,
                     max_amount = excluded.max_amount, updated_at = excluded.updated_at"
            ))
            .bind(id_to_db(rule.id))
            .bind(&rule.name)
            .bind(rule.kind.as_str())
            .bind(rule.action.as_str())
            .bind(i64::from(rule.enabled))
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
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)
        })
        .await
    }

    async fn delete_aml_rule(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        self.run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let deleted = sqlx::query("DELETE FROM aml_rules WHERE id = ?")
                .bind(id_to_db(id))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn aml_flag(&self, id: Uuid) -> Result<Option<AmlFlag>, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM aml_flags WHERE id = ?"))
                .bind(id_to_db(id))
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
                   AND (?4 IS NULL OR (created_at, id) < (?4, ?5))
                 ORDER BY created_at DESC, id DESC LIMIT ?6"
            ))
            .bind(filter.status.map(FlagStatus::as_str))
            .bind(filter.account.map(|account| id_to_db(account.as_uuid())))
            .bind(filter.transfer.map(|transfer| id_to_db(transfer.as_uuid())))
            .bind(after.map(|after| after.created_at))
            .bind(after.map(|after| id_to_db(after.id)))
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
                .bind(filter.account.map(|account| id_to_db(account.as_uuid())))
                .bind(filter.transfer.map(|transfer| id_to_db(transfer.as_uuid())))
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
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE aml_flags SET status = ?, notes = ?, resolved_at = ?, resolved_by = ?
                 WHERE id = ? AND status = 'open'",
            )
            .bind(resolution.status.as_str())
            .bind(&resolution.notes)
            .bind(resolution.at.as_micros())
            .bind(id_to_db(resolution.by.as_uuid()))
            .bind(id_to_db(id))
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() == 1 {
                if let Some(audit) = &audit {
                    crate::audit::sqlite::append(&mut transaction, audit).await?;
                }
                transaction.commit().await.map_err(classify)?;
                return Ok(Resolved::Resolved);
            }
            // Nothing changed (resolved already, or no such flag): nothing is recorded.
            transaction.rollback().await.map_err(classify)?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM aml_flags WHERE id = ?")
                .bind(id_to_db(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            Ok(if exists.is_some() { Resolved::AlreadyResolved } else { Resolved::NotFound })
        })
        .await
    }
}
