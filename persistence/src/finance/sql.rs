//! Pricing configuration (migration 0006) in both ledger stores, written once (`crate::sql`).
//! On SQLite decimals are exact TEXT, booleans 0/1 and ids hyphenated UUID text, like the
//! ledger tables; `Exact`, `Id` and `SqlRow::decode` take care of it.

use tally_engine::{Currency, ExecutionMode, FeeKind, FeeRule, FxRate, TransferKind, TransferTypeSettings};

use super::{PricingChange, PricingTables, tiers_from_db, tiers_to_db};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Exact, Id, SqlRow, SqlStore, run_on_backend};
use crate::store::StoreError;
use crate::store::corrupt;

fn currency(text: &str) -> Result<Currency, StoreError> {
    Currency::from_code(text).ok_or_else(|| corrupt(format!("unknown currency {text:?}")))
}

fn kind(text: &str) -> Result<TransferKind, StoreError> {
    TransferKind::parse(text).ok_or_else(|| corrupt(format!("unknown transfer type {text:?}")))
}

fn fee_rule(row: &impl SqlRow) -> Result<FeeRule, StoreError> {
    let kind_text: String = row.decode("kind")?;
    let tiers: String = row.decode("tiers")?;
    Ok(FeeRule {
        id: row.decode("id")?,
        name: row.decode("name")?,
        transfer_type: kind(&row.decode::<String>("transfer_type")?)?,
        currency: currency(&row.decode::<String>("currency")?)?,
        kind: FeeKind::parse(&kind_text).ok_or_else(|| corrupt(format!("unknown fee kind {kind_text:?}")))?,
        flat_amount: row.decode("flat_amount")?,
        percentage: row.decode("percentage")?,
        min_fee: row.decode("min_fee")?,
        max_fee: row.decode("max_fee")?,
        tiers: tiers_from_db(&tiers)?,
        enabled: row.decode("enabled")?,
        created_at: row.decode("created_at")?,
        updated_at: row.decode("updated_at")?,
    })
}

pub(crate) async fn load(store: &impl SqlStore) -> Result<PricingTables, StoreError> {
    run_on_backend!(store, |pool| {
        let mut tables = PricingTables::default();
        let rows = sqlx::query("SELECT from_currency, to_currency, rate, updated_at FROM fx_rates")
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        for row in &rows {
            tables.fx_rates.push(FxRate {
                from: currency(&row.decode::<String>("from_currency")?)?,
                to: currency(&row.decode::<String>("to_currency")?)?,
                rate: row.decode("rate")?,
                updated_at: row.decode("updated_at")?,
            });
        }
        let rows = sqlx::query(
            "SELECT id, name, transfer_type, currency, kind, flat_amount, percentage, min_fee, max_fee, \
                 tiers, enabled, created_at, updated_at FROM fee_rules ORDER BY created_at, id",
        )
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        for row in &rows {
            tables.fee_rules.push(fee_rule(row)?);
        }
        let rows = sqlx::query(
            "SELECT code, enabled, execution_mode, min_amount, max_amount, pending_timeout_secs \
                             FROM transfer_type_settings",
        )
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        for row in &rows {
            let mode: String = row.decode("execution_mode")?;
            tables.transfer_types.push((
                kind(&row.decode::<String>("code")?)?,
                TransferTypeSettings {
                    enabled: row.decode("enabled")?,
                    execution_mode: ExecutionMode::parse(&mode)
                        .ok_or_else(|| corrupt(format!("unknown execution mode {mode:?}")))?,
                    min_amount: row.decode("min_amount")?,
                    max_amount: row.decode("max_amount")?,
                    pending_timeout_secs: row
                        .decode::<Option<i32>>("pending_timeout_secs")?
                        .map(|secs| {
                            // The column's CHECK keeps it in range; anything else is corrupt.
                            u32::try_from(secs).map_err(|_| corrupt(format!("pending_timeout_secs {secs}")))
                        })
                        .transpose()?,
                },
            ));
        }
        Ok(tables)
    })
}

/// Writes `change` and, if given, its audit record, in one transaction: the audit append
/// last, as in every audited transaction (docs/audit.md).
pub(crate) async fn save(
    store: &impl SqlStore,
    change: &PricingChange,
    audit: Option<&AuditRecord>,
) -> Result<(), StoreError> {
    let change = change.clone();
    let audit = audit.cloned();
    run_on_backend!(store, |pool| {
        let mut transaction = pool.begin_write().await.map_err(classify)?;
        match change {
            PricingChange::FxRate(rate) => {
                sqlx::query(
                    "INSERT INTO fx_rates (from_currency, to_currency, rate, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (from_currency, to_currency) DO UPDATE SET rate = EXCLUDED.rate, \
                         updated_at = EXCLUDED.updated_at",
                )
                .bind(rate.from.code())
                .bind(rate.to.code())
                .bind(Exact(rate.rate))
                .bind(rate.updated_at.0)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            PricingChange::FeeRule(rule) => {
                sqlx::query(
                    "INSERT INTO fee_rules (id, name, transfer_type, currency, kind, flat_amount, percentage, \
                         min_fee, max_fee, tiers, enabled, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, transfer_type = EXCLUDED.transfer_type, \
                         currency = EXCLUDED.currency, kind = EXCLUDED.kind, flat_amount = EXCLUDED.flat_amount, \
                         percentage = EXCLUDED.percentage, min_fee = EXCLUDED.min_fee, max_fee = EXCLUDED.max_fee, \
                         tiers = EXCLUDED.tiers, enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at",
                )
                .bind(Id(rule.id))
                .bind(&rule.name)
                .bind(rule.transfer_type.as_str())
                .bind(rule.currency.code())
                .bind(rule.kind.as_str())
                .bind(rule.flat_amount.map(Exact))
                .bind(rule.percentage.map(Exact))
                .bind(rule.min_fee.map(Exact))
                .bind(rule.max_fee.map(Exact))
                .bind(tiers_to_db(&rule.tiers))
                .bind(rule.enabled)
                .bind(rule.created_at.0)
                .bind(rule.updated_at.0)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            PricingChange::TransferType(kind, settings) => {
                sqlx::query(
                        "INSERT INTO transfer_type_settings (code, enabled, execution_mode, min_amount, max_amount, \
                         pending_timeout_secs) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO UPDATE SET \
                         enabled = EXCLUDED.enabled, execution_mode = EXCLUDED.execution_mode, min_amount = EXCLUDED.min_amount, \
                         max_amount = EXCLUDED.max_amount, pending_timeout_secs = EXCLUDED.pending_timeout_secs",
                    )
                    .bind(kind.as_str())
                    .bind(settings.enabled)
                    .bind(settings.execution_mode.as_str())
                    .bind(settings.min_amount.map(Exact))
                    .bind(settings.max_amount.map(Exact))
                    // At most PENDING_EXPIRY_SECS_MAX (2,592,000) by the API's check and the
                    // column's, so it always fits an INTEGER; a value that did not would be
                    // refused by that CHECK rather than stored as NULL.
                    .bind(settings.pending_timeout_secs.map(|secs| i32::try_from(secs).unwrap_or(i32::MAX)))
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
            }
        }
        if let Some(audit) = &audit {
            transaction.append_audit(audit).await?;
        }
        transaction.commit().await.map_err(classify)
    })
}

#[async_trait::async_trait]
impl<S: crate::sql::LedgerSql> crate::store::PricingStore for S {
    async fn load_pricing(&self) -> Result<PricingTables, StoreError> {
        load(self).await
    }

    async fn save_pricing(&self, change: &PricingChange, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        save(self, change, audit).await
    }
}
