//! Pricing configuration in Postgres (migration 0006).

use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tally_engine::{Currency, ExecutionMode, FeeKind, FeeRule, FxRate, Timestamp, TransferKind, TransferTypeSettings};

use super::{PricingChange, PricingTables, tiers_from_db, tiers_to_db};
use crate::audit::AuditRecord;
use crate::postgres::{PgStore, classify};
use crate::store::StoreError;
use crate::store::corrupt;

fn currency(text: &str) -> Result<Currency, StoreError> {
    Currency::from_code(text).ok_or_else(|| corrupt(format!("unknown currency {text:?}")))
}

fn kind(text: &str) -> Result<TransferKind, StoreError> {
    TransferKind::parse(text).ok_or_else(|| corrupt(format!("unknown transfer type {text:?}")))
}

fn fee_rule(row: &PgRow) -> Result<FeeRule, StoreError> {
    let get_decimal = |column: &str| -> Result<Option<Decimal>, StoreError> { row.try_get(column).map_err(classify) };
    let kind_text: String = row.try_get("kind").map_err(classify)?;
    let tiers: String = row.try_get("tiers").map_err(classify)?;
    Ok(FeeRule {
        id: row.try_get("id").map_err(classify)?,
        name: row.try_get("name").map_err(classify)?,
        transfer_type: kind(row.try_get("transfer_type").map_err(classify)?)?,
        currency: currency(row.try_get("currency").map_err(classify)?)?,
        kind: FeeKind::parse(&kind_text).ok_or_else(|| corrupt(format!("unknown fee kind {kind_text:?}")))?,
        flat_amount: get_decimal("flat_amount")?,
        percentage: get_decimal("percentage")?,
        min_fee: get_decimal("min_fee")?,
        max_fee: get_decimal("max_fee")?,
        tiers: tiers_from_db(&tiers)?,
        enabled: row.try_get("enabled").map_err(classify)?,
        created_at: Timestamp(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp(row.try_get("updated_at").map_err(classify)?),
    })
}

pub(crate) async fn load(store: &PgStore) -> Result<PricingTables, StoreError> {
    store
        .run(|pool| async move {
            let mut tables = PricingTables::default();
            let rows = sqlx::query("SELECT from_currency, to_currency, rate, updated_at FROM fx_rates")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            for row in &rows {
                tables.fx_rates.push(FxRate {
                    from: currency(row.try_get("from_currency").map_err(classify)?)?,
                    to: currency(row.try_get("to_currency").map_err(classify)?)?,
                    rate: row.try_get("rate").map_err(classify)?,
                    updated_at: Timestamp(row.try_get("updated_at").map_err(classify)?),
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
                let mode: String = row.try_get("execution_mode").map_err(classify)?;
                tables.transfer_types.push((
                    kind(row.try_get("code").map_err(classify)?)?,
                    TransferTypeSettings {
                        enabled: row.try_get("enabled").map_err(classify)?,
                        execution_mode: ExecutionMode::parse(&mode)
                            .ok_or_else(|| corrupt(format!("unknown execution mode {mode:?}")))?,
                        min_amount: row.try_get("min_amount").map_err(classify)?,
                        max_amount: row.try_get("max_amount").map_err(classify)?,
                        pending_timeout_secs: row
                            .try_get::<Option<i32>, _>("pending_timeout_secs")
                            .map_err(classify)?
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
        .await
}

/// Writes `change` and, if given, its audit record, in one transaction: the audit append
/// last, as in every audited transaction (docs/audit.md).
pub(crate) async fn save(
    store: &PgStore,
    change: &PricingChange,
    audit: Option<&AuditRecord>,
) -> Result<(), StoreError> {
    let change = change.clone();
    let audit = audit.cloned();
    store
        .run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            match change {
                PricingChange::FxRate(rate) => {
                    sqlx::query(
                        "INSERT INTO fx_rates (from_currency, to_currency, rate, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (from_currency, to_currency) DO UPDATE SET rate = EXCLUDED.rate, \
                         updated_at = EXCLUDED.updated_at",
                    )
                    .bind(rate.from.code())
                    .bind(rate.to.code())
                    .bind(rate.rate)
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
                    .bind(rule.id)
                    .bind(&rule.name)
                    .bind(rule.transfer_type.as_str())
                    .bind(rule.currency.code())
                    .bind(rule.kind.as_str())
                    .bind(rule.flat_amount)
                    .bind(rule.percentage)
                    .bind(rule.min_fee)
                    .bind(rule.max_fee)
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
                    .bind(settings.min_amount)
                    .bind(settings.max_amount)
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
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)
        })
        .await
}
