//! `BeneficiaryStore` on Postgres (migration 0030).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::beneficiaries::{BeneficiaryStore, CreateBeneficiaryError, SavedBeneficiary};
use super::postgres::PgUserStore;
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::store::StoreError;

const COLUMNS: &str = "id, user_id, name, iban, created_at, deleted_at";

fn from_row(row: &PgRow) -> Result<SavedBeneficiary, StoreError> {
    Ok(SavedBeneficiary {
        id: row.try_get("id").map_err(classify)?,
        user: UserId::from_uuid(row.try_get("user_id").map_err(classify)?),
        name: row.try_get("name").map_err(classify)?,
        iban: row.try_get("iban").map_err(classify)?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at").map_err(classify)?.map(Timestamp::from_micros),
    })
}

#[async_trait]
impl BeneficiaryStore for PgUserStore {
    async fn create_beneficiary(
        &self,
        beneficiary: &SavedBeneficiary,
        live_max: u32,
        audit: &AuditRecord,
    ) -> Result<(), CreateBeneficiaryError> {
        let beneficiary = beneficiary.clone();
        let audit = audit.clone();
        let outcome = self
            .run(|pool| async move {
                let mut transaction = pool.begin().await.map_err(classify)?;
                // The user's row, locked: concurrent creates of one user take turns here, so the
                // count below is exact when the insert happens.
                let user: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                    .bind(beneficiary.user.as_uuid())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(classify)?;
                if user.is_none() {
                    return Err(StoreError::Corrupt(format!("no user {} for a beneficiary", beneficiary.user)));
                }
                let live: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM beneficiaries WHERE user_id = $1 AND deleted_at IS NULL")
                        .bind(beneficiary.user.as_uuid())
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
                .bind(beneficiary.id)
                .bind(beneficiary.user.as_uuid())
                .bind(&beneficiary.name)
                .bind(&beneficiary.iban)
                .bind(beneficiary.created_at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
                if inserted.rows_affected() != 1 {
                    return Ok(Some(CreateBeneficiaryError::IbanTaken));
                }
                crate::audit::postgres::append(&mut transaction, &audit).await?;
                transaction.commit().await.map_err(classify)?;
                Ok(None)
            })
            .await?;
        match outcome {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    async fn live_beneficiaries(&self, user: UserId, limit: u32) -> Result<Vec<SavedBeneficiary>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM beneficiaries WHERE user_id = $1 AND deleted_at IS NULL
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(user.as_uuid())
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    async fn beneficiary(&self, user: UserId, id: Uuid) -> Result<Option<SavedBeneficiary>, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM beneficiaries WHERE id = $1 AND user_id = $2"))
                .bind(id)
                .bind(user.as_uuid())
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    async fn delete_beneficiary(
        &self,
        user: UserId,
        id: Uuid,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE beneficiaries SET deleted_at = $3 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(user.as_uuid())
            .bind(now.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }
}
