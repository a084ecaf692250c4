//! Pricing configuration in SQLite (migration 0006): decimals as exact TEXT, booleans as 0/1,
//! ids as hyphenated UUID text, like the ledger tables.

use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tally_engine::{Currency, ExecutionMode, FeeKind, FeeRule, FxRate, Timestamp, TransferKind, TransferTypeSettings};

use super::{PricingChange, PricingTables, tiers_from_db, tiers_to_db};
use crate::audit::AuditRecord;
use crate::sqlite::{SqliteStore, classify, decimal_from_db};
use crate::store::StoreError;
use crate::store::corrupt;

fn currency(text: &str) -> Result<Currency, StoreError> {
    Currency::from_code(text).ok_or_else(|| corrupt(format!("unknown currency {text:?}")))
}

fn kind(text: &str) -> Result<TransferKind, StoreError> {
    TransferKind::parse(text).ok_or_else(|| corrupt(format!("unknown transfer type {text:?}")))
}

fn text(row: &SqliteRow, column: &str) -> Result<String, StoreError> {
    row.try_get(column).map_err(classify)
}

fn optional_decimal(row: &SqliteRow, column: &str) -> Result<Option<Decimal>, StoreError> {
    let value: Option<String> = row.try_get(column).map_err(classify)?;
    value.map(|value| decimal_from_db(&value, column)).transpose()
}

/// A stored type timeout: the column's CHECK keeps it in range, so anything else is corrupt.
fn pending_timeout(value: Option<i64>) -> Result<Option<u32>, StoreError> {
    value.map(|secs| u32::try_from(secs).map_err(|_| corrupt(format!("pending_timeout_secs {secs}")))).transpose()
}

fn boolean(row: &SqliteRow, column: &str) -> Result<bool, StoreError> {
    let value: i64 = row.try_get(column).map_err(classify)?;
    Ok(value != 0)
}

fn optional_text(value: Option<Decimal>) -> Option<String> {
    value.map(|value| value.to_string())
}

fn fee_rule(row: &SqliteRow) -> Result<FeeRule, StoreError> {
    let id = text(row, "id")?;
    let kind_text = text(row, "kind")?;
    Ok(FeeRule {
        id: uuid::Uuid::parse_str(&id).map_err(|error| corrupt(format!("fee rule id {id:?}: {error}")))?,
        name: text(row, "name")?,
        transfer_type: kind(&text(row, "transfer_type")?)?,
        currency: currency(&text(row, "currency")?)?,
        kind: FeeKind::parse(&kind_text).ok_or_else(|| corrupt(format!("unknown fee kind {kind_text:?}")))?,
        flat_amount: optional_decimal(row, "flat_amount")?,
        percentage: optional_decimal(row, "percentage")?,
        min_fee: optional_decimal(row, "min_fee")?,
        max_fee: optional_decimal(row, "max_fee")?,
        tiers: tiers_from_db(&text(row, "tiers")?)?,
        enabled: boolean(row, "enabled")?,
        created_at: Timestamp(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp(row.try_get("updated_at").map_err(classify)?),
    })
}

pub(crate) async fn load(store: &SqliteStore) -> Result<PricingTables, StoreError> {
    store
        .run(|pool| async move {
            let mut tables = PricingTables::default();
            let rows = sqlx::query("SELECT from_currency, to_currency, rate, updated_at FROM fx_rates")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            for row in &rows {
                tables.fx_rates.push(FxRate {
                    from: currency(&text(row, "from_currency")?)?,
                    to: currency(&text(row, "to_currency")?)?,
                    rate: decimal_from_db(&text(row, "rate")?, "rate")?,
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
                let mode = text(row, "execution_mode")?;
                tables.transfer_types.push((
                    kind(&text(row, "code")?)?,
                    TransferTypeSettings {
                        enabled: boolean(row, "enabled")?,
                        execution_mode: ExecutionMode::parse(&mode)
                            .ok_or_else(|| corrupt(format!("unknown execution mode {mode:?}")))?,
                        min_amount: optional_decimal(row, "min_amount")?,
                        max_amount: optional_decimal(row, "max_amount")?,
                        pending_timeout_secs: pending_timeout(row.try_get("pending_timeout_secs").map_err(classify)?)?,
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
    store: &SqliteStore,
    change: &PricingChange,
    audit: Option<&AuditRecord>,
) -> Result<(), StoreError> {
    let change = change.clone();
    let audit = audit.cloned();
    store
        .run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            match change {
                PricingChange::FxRate(rate) => {
                    sqlx::query(
                        "INSERT INTO fx_rates (from_currency, to_currency, rate, updated_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (from_currency, to_currency) DO UPDATE SET rate = excluded.rate, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(rate.from.code())
                    .bind(rate.to.code())
                    .bind(rate.rate.to_string())
                    .bind(rate.updated_at.0)
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                }
                PricingChange::FeeRule(rule) => {
                    sqlx::query(
                        "INSERT INTO fee_rules (id, name, transfer_type, currency, kind, flat_amount, percentage, \
                         min_fee, max_fee, tiers, enabled, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                         ON CONFLICT (id) DO UPDATE SET name = excluded.name, transfer_type = excluded.transfer_type, \
                         currency = excluded.currency, kind = excluded.kind, flat_amount = excluded.flat_amount, \
                         percentage = excluded.percentage, min_fee = excluded.min_fee, max_fee = excluded.max_fee, \
                         tiers = excluded.tiers, enabled = excluded.enabled, updated_at = excluded.updated_at",
                    )
                    .bind(rule.id.hyphenated().to_string())
                    .bind(&rule.name)
                    .bind(rule.transfer_type.as_str())
                    .bind(rule.currency.code())
                    .bind(rule.kind.as_str())
                    .bind(optional_text(rule.flat_amount))
                    .bind(optional_text(rule.percentage))
                    .bind(optional_text(rule.min_fee))
                    .bind(optional_text(rule.max_fee))
                    .bind(tiers_to_db(&rule.tiers))
                    .bind(i64::from(rule.enabled))
                    .bind(rule.created_at.0)
                    .bind(rule.updated_at.0)
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                }
                PricingChange::TransferType(kind, settings) => {
                    sqlx::query(
                        "INSERT INTO transfer_type_settings (code, enabled, execution_mode, min_amount, max_amount, \
                         pending_timeout_secs) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (code) DO UPDATE SET \
                         enabled = excluded.enabled, execution_mode = excluded.execution_mode, min_amount = excluded.min_amount, \
                         max_amount = excluded.max_amount, pending_timeout_secs = excluded.pending_timeout_secs",
                    )
                    .bind(kind.as_str())
                    .bind(i64::from(settings.enabled))
                    .bind(settings.execution_mode.as_str())
                    .bind(optional_text(settings.min_amount))
                    .bind(optional_text(settings.max_amount))
                    .bind(settings.pending_timeout_secs.map(i64::from))
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                }
            }
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(classify)
        })
        .await
}
