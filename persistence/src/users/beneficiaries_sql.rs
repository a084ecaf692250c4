//! `BeneficiaryStore` for both identity stores, written once (`crate::sql`), migration 0030.
//! On SQLite a transaction that writes begins `IMMEDIATE`, which takes the database's write
//! lock at once, so the per-user count and the insert are one serialised step.

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::beneficiaries::{BeneficiaryStore, CreateBeneficiaryError, SavedBeneficiary};
use super::sql::UserQueries;
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

const COLUMNS: &str = "id, user_id, name, iban, created_at, deleted_at";

fn from_row(row: &impl SqlRow) -> Result<SavedBeneficiary, StoreError> {
    Ok(SavedBeneficiary {
        id: row.decode("id")?,
        user: row.decode("user_id")?,
        name: row.decode("name")?,
        iban: row.decode("iban")?,
        created_at: row.decode("created_at")?,
        deleted_at: row.decode("deleted_at")?,
    })
}

#[async_trait]
impl<S: IdentitySql> BeneficiaryStore for S {
    async fn create_beneficiary(
        &self,
        beneficiary: &SavedBeneficiary,
        live_max: u32,
        audit: &AuditRecord,
    ) -> Result<(), CreateBeneficiaryError> {
        let beneficiary = beneficiary.clone();
        let audit = audit.clone();
        let outcome = run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // The user's row, locked: concurrent creates of one user take turns here, so the
            // count below is exact when the insert happens. (SQLite has no row locks: its
            // `BEGIN IMMEDIATE` already made this transaction the only writer.)
            if !transaction.lock_user(beneficiary.user.as_uuid()).await? {
                return Err(StoreError::Corrupt(format!("no user {} for a beneficiary", beneficiary.user)));
            }
            let live: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM beneficiaries WHERE user_id = $1 AND deleted_at IS NULL")
                    .bind(Id::from(beneficiary.user))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(classify)?;
            if live >= i64::from(live_max) {
                return Ok(Some(CreateBeneficiaryError::LimitReached(live_max)));
            }
            let inserted = sqlx::query(&format!(
                "INSERT INTO beneficiaries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)
                 ON CONFLICT (user_id, iban) WHERE deleted_at IS NULL DO NOTHING"
            ))
            .bind(Id(beneficiary.id))
            .bind(Id::from(beneficiary.user))
            .bind(&beneficiary.name)
            .bind(&beneficiary.iban)
            .bind(beneficiary.created_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() != 1 {
                return Ok(Some(CreateBeneficiaryError::IbanTaken));
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(None)
        })?;
        match outcome {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    async fn live_beneficiaries(&self, user: UserId, limit: u32) -> Result<Vec<SavedBeneficiary>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM beneficiaries WHERE user_id = $1 AND deleted_at IS NULL
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(Id::from(user))
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(from_row).collect()
        })
    }

    async fn beneficiary(&self, user: UserId, id: Uuid) -> Result<Option<SavedBeneficiary>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM beneficiaries WHERE id = $1 AND user_id = $2"))
                .bind(Id(id))
                .bind(Id::from(user))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(from_row).transpose()
        })
    }

    async fn delete_beneficiary(
        &self,
        user: UserId,
        id: Uuid,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE beneficiaries SET deleted_at = $3 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            )
            .bind(Id(id))
            .bind(Id::from(user))
            .bind(now.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }
}
