//! `AmlStore` for both ledger stores, written once (`crate::sql`), and the insert of a journal
//! batch's flags (`AmlFlagWrites`, inside the batch's transaction).

use async_trait::async_trait;
use tally_engine::aml::{AmlAction, AmlFlag, AmlRule, AmlRuleKind, FlagStatus, ThresholdRule, VelocityRule};
use tally_engine::{AccountId, Currency, TransferId, TransferKind};
use uuid::Uuid;

use super::{AmlStore, FlagFilter, Resolution, Resolved};
use crate::audit::{AppendAudit, AuditRecord};
use crate::reads::listing::Position;
use crate::sql::{BeginWrite, Exact, Id, LedgerSql, SqlRow, impl_for_connections, parse, run_on_backend};
use crate::store::StoreError;
use crate::store::corrupt;

const FLAG_COLUMNS: &str = "id, transfer_id, account_id, user_id, rule_id, rule_name, action, status, notes, amount, \
                            currency, created_at, resolved_at, resolved_by";

const RULE_COLUMNS: &str = "id, name, kind, action, enabled, currency, amount, transfer_type, window_seconds, \
                            max_count, max_amount, created_at, updated_at";

/// Writes of AML flags inside a journal batch's transaction.
pub(crate) trait AmlFlagWrites {
    /// Inserts the flags of one journal batch. A flag is written once: a retried batch that
    /// had committed is recognised before this, and `DO NOTHING` keeps a resolution from
    /// being undone.
    async fn insert_aml_flags(&mut self, flags: &[(u64, AmlFlag)]) -> Result<(), StoreError>;
}

impl_for_connections! {
    impl AmlFlagWrites {
        async fn insert_aml_flags(&mut self, flags: &[(u64, AmlFlag)]) -> Result<(), StoreError> {
    for (seq, flag) in flags {
        let seq = i64::try_from(*seq).map_err(|_| corrupt(format!("sequence number {seq} beyond BIGINT")))?;
        sqlx::query(&format!(
            "INSERT INTO aml_flags ({FLAG_COLUMNS}, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind(Id(flag.id))
        .bind(Id(flag.transfer.as_uuid()))
        .bind(Id(flag.account.as_uuid()))
        .bind(flag.user.map(Id::from))
        .bind(Id(flag.rule_id))
        .bind(&flag.rule_name)
        .bind(flag.action.as_str())
        .bind(flag.status.as_str())
        .bind(&flag.notes)
        .bind(Exact(flag.amount))
        .bind(flag.currency.code())
        .bind(flag.created_at.as_micros())
        .bind(flag.resolved_at.map(|at| at.as_micros()))
        .bind(flag.resolved_by.map(Id::from))
        .bind(seq)
        .execute(&mut *self)
        .await
        .map_err(classify)?;
    }
    Ok(())
        }
    }
}

fn flag_from_row(row: &impl SqlRow) -> Result<AmlFlag, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.decode(column) };
    Ok(AmlFlag {
        id: row.decode("id")?,
        transfer: TransferId::from_uuid(row.decode("transfer_id")?),
        account: AccountId::from_uuid(row.decode("account_id")?),
        user: row.decode("user_id")?,
        rule_id: row.decode("rule_id")?,
        rule_name: text("rule_name")?,
        action: parse(&text("action")?, AmlAction::parse, "AML action")?,
        status: parse(&text("status")?, FlagStatus::parse, "flag status")?,
        notes: row.decode("notes")?,
        amount: row.decode("amount")?,
        currency: parse(&text("currency")?, Currency::from_code, "currency")?,
        created_at: row.decode("created_at")?,
        resolved_at: row.decode("resolved_at")?,
        resolved_by: row.decode("resolved_by")?,
    })
}

fn rule_from_row(row: &impl SqlRow) -> Result<AmlRule, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.decode(column) };
    let currency = parse(&text("currency")?, Currency::from_code, "currency")?;
    let kind = match text("kind")?.as_str() {
        "threshold" => {
            let transfer_type: Option<String> = row.decode("transfer_type")?;
            let transfer_kind =
                transfer_type.map(|text| parse(&text, TransferKind::parse, "transfer type")).transpose()?;
            let amount = row.decode::<Option<rust_decimal::Decimal>>("amount")?;
            let amount = amount.ok_or_else(|| corrupt("threshold rule without amount"))?;
            AmlRuleKind::Threshold(ThresholdRule { amount, currency, transfer_kind })
        }
        "velocity" => {
            let window: Option<i64> = row.decode("window_seconds")?;
            let max_count: Option<i64> = row.decode("max_count")?;
            AmlRuleKind::Velocity(VelocityRule {
                window_seconds: window
                    .and_then(|window| u32::try_from(window).ok())
                    .ok_or_else(|| corrupt("velocity rule without a window"))?,
                max_count: max_count
                    .map(|count| u32::try_from(count).map_err(|_| corrupt("max_count out of range")))
                    .transpose()?,
                max_amount: row.decode("max_amount")?,
                currency,
            })
        }
        other => return Err(corrupt(format!("unknown AML rule kind {other:?}"))),
    };
    Ok(AmlRule {
        id: row.decode("id")?,
        name: text("name")?,
        kind,
        action: parse(&text("action")?, AmlAction::parse, "AML action")?,
        enabled: row.decode("enabled")?,
        created_at: row.decode("created_at")?,
        updated_at: row.decode("updated_at")?,
    })
}

/// `WHERE` of a flag listing or count: `$1` status, `$2` account, `$3` transfer (each may be
/// NULL).
const FLAG_FILTER: &str =
    "($1 IS NULL OR status = $1) AND ($2 IS NULL OR account_id = $2) AND ($3 IS NULL OR transfer_id = $3)";

#[async_trait]
impl<S: LedgerSql> AmlStore for S {
    async fn aml_rules(&self) -> Result<Vec<AmlRule>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM aml_rules ORDER BY created_at, id"))
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(rule_from_row).collect()
        })
    }

    async fn insert_aml_rule(&self, rule: &AmlRule, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        let rule = rule.clone();
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let RuleFields { amount, transfer_type, window_seconds, max_count, max_amount, currency } =
                rule_fields(&rule);
            sqlx::query(&format!(
                "INSERT INTO aml_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(Id(rule.id))
            .bind(&rule.name)
            .bind(rule.kind.as_str())
            .bind(rule.action.as_str())
            .bind(rule.enabled)
            .bind(currency.code())
            .bind(amount)
            .bind(transfer_type)
            .bind(window_seconds)
            .bind(max_count)
            .bind(max_amount)
            .bind(rule.created_at.as_micros())
            .bind(rule.updated_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)
        })
    }

    async fn replace_aml_rule(&self, rule: &AmlRule, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let rule = rule.clone();
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let RuleFields { amount, transfer_type, window_seconds, max_count, max_amount, currency } =
                rule_fields(&rule);
            // An UPDATE, never an upsert: a replacement that finds no row (the rule deleted)
            // must not create it again.
            let replaced = sqlx::query(
                "UPDATE aml_rules SET name = $2, kind = $3, action = $4, enabled = $5, currency = $6,
                     amount = $7, transfer_type = $8, window_seconds = $9, max_count = $10,
                     max_amount = $11, updated_at = $12
                 WHERE id = $1",
            )
            .bind(Id(rule.id))
            .bind(&rule.name)
            .bind(rule.kind.as_str())
            .bind(rule.action.as_str())
            .bind(rule.enabled)
            .bind(currency.code())
            .bind(amount)
            .bind(transfer_type)
            .bind(window_seconds)
            .bind(max_count)
            .bind(max_amount)
            .bind(rule.updated_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if replaced.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn delete_aml_rule(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let deleted = sqlx::query("DELETE FROM aml_rules WHERE id = $1")
                .bind(Id(id))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn aml_flag(&self, id: Uuid) -> Result<Option<AmlFlag>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM aml_flags WHERE id = $1"))
                .bind(Id(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(flag_from_row).transpose()
        })
    }

    async fn aml_flag_page(
        &self,
        filter: FlagFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<AmlFlag>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {FLAG_COLUMNS} FROM aml_flags WHERE {FLAG_FILTER}
                   AND ($4 IS NULL OR (created_at, id) < ($4, $5))
                 ORDER BY created_at DESC, id DESC LIMIT $6"
            ))
            .bind(filter.status.map(FlagStatus::as_str))
            .bind(filter.account.map(|account| Id(account.as_uuid())))
            .bind(filter.transfer.map(|transfer| Id(transfer.as_uuid())))
            .bind(after.map(|after| after.created_at))
            .bind(after.map(|after| Id(after.id)))
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(flag_from_row).collect()
        })
    }

    async fn count_aml_flags(&self, filter: FlagFilter) -> Result<u64, StoreError> {
        run_on_backend!(self, |pool| {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM aml_flags WHERE {FLAG_FILTER}"))
                .bind(filter.status.map(FlagStatus::as_str))
                .bind(filter.account.map(|account| Id(account.as_uuid())))
                .bind(filter.transfer.map(|transfer| Id(transfer.as_uuid())))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            u64::try_from(count).map_err(|_| corrupt("negative count"))
        })
    }

    async fn resolve_aml_flag(
        &self,
        id: Uuid,
        resolution: &Resolution,
        audit: Option<&AuditRecord>,
    ) -> Result<Resolved, StoreError> {
        let resolution = resolution.clone();
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE aml_flags SET status = $2, notes = $3, resolved_at = $4, resolved_by = $5
                 WHERE id = $1 AND status = 'open'",
            )
            .bind(Id(id))
            .bind(resolution.status.as_str())
            .bind(&resolution.notes)
            .bind(resolution.at.as_micros())
            .bind(Id::from(resolution.by))
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() == 1 {
                if let Some(audit) = &audit {
                    transaction.append_audit(audit).await?;
                }
                transaction.commit().await.map_err(classify)?;
                return Ok(Resolved::Resolved);
            }
            // Nothing changed (resolved already, or no such flag): nothing is recorded.
            transaction.rollback().await.map_err(classify)?;
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM aml_flags WHERE id = $1")
                .bind(Id(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            Ok(if exists.is_some() { Resolved::AlreadyResolved } else { Resolved::NotFound })
        })
    }
}

/// A rule's kind-specific columns, the ones its kind does not use `NULL`: written the same
/// way by insert and replace.
struct RuleFields {
    amount: Option<Exact>,
    transfer_type: Option<&'static str>,
    window_seconds: Option<i64>,
    max_count: Option<i64>,
    max_amount: Option<Exact>,
    currency: Currency,
}

fn rule_fields(rule: &AmlRule) -> RuleFields {
    match &rule.kind {
        AmlRuleKind::Threshold(threshold) => RuleFields {
            amount: Some(Exact(threshold.amount)),
            transfer_type: threshold.transfer_kind.map(TransferKind::as_str),
            window_seconds: None,
            max_count: None,
            max_amount: None,
            currency: threshold.currency,
        },
        AmlRuleKind::Velocity(velocity) => RuleFields {
            amount: None,
            transfer_type: None,
            window_seconds: Some(i64::from(velocity.window_seconds)),
            max_count: velocity.max_count.map(i64::from),
            max_amount: velocity.max_amount.map(Exact),
            currency: velocity.currency,
        },
    }
}
