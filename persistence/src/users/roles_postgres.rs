//! `RoleStore` for the Postgres identity store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::admin_postgres::lock_user;
use super::postgres::PgUserStore;
use super::roles::{Role, RoleAssign, RoleDelete, RoleStore, RoleUnassign, RoleWrite, normalize_role_name};
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::store::StoreError;

const ROLE_COLUMNS: &str = "r.id, r.name, r.description, r.created_at, r.updated_at, \
                            (SELECT count(*) FROM user_roles ur WHERE ur.role_id = r.id) AS holders";

fn role_from_row(row: &PgRow, actions: BTreeSet<String>) -> Result<Role, StoreError> {
    let holders: i64 = row.try_get("holders").map_err(classify)?;
    Ok(Role {
        id: row.try_get("id").map_err(classify)?,
        name: row.try_get("name").map_err(classify)?,
        description: row.try_get("description").map_err(classify)?,
        actions,
        holders: u64::try_from(holders).unwrap_or(0),
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at").map_err(classify)?),
    })
}

async fn actions_of(connection: &mut PgConnection, roles: &[Uuid]) -> Result<Vec<(Uuid, String)>, StoreError> {
    let rows = sqlx::query("SELECT role_id, action FROM role_actions WHERE role_id = ANY($1) ORDER BY action")
        .bind(roles)
        .fetch_all(&mut *connection)
        .await
        .map_err(classify)?;
    rows.iter()
        .map(|row| Ok((row.try_get("role_id").map_err(classify)?, row.try_get("action").map_err(classify)?)))
        .collect()
}

async fn write_actions(connection: &mut PgConnection, role: &Role) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM role_actions WHERE role_id = $1")
        .bind(role.id)
        .execute(&mut *connection)
        .await
        .map_err(classify)?;
    sqlx::query("INSERT INTO role_actions (role_id, action) SELECT $1, UNNEST($2::text[])")
        .bind(role.id)
        .bind(role.actions.iter().cloned().collect::<Vec<_>>())
        .execute(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(())
}

fn is_name_taken(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database)
        if database.is_unique_violation() && database.constraint().is_some_and(|name| name.contains("name")))
}

#[async_trait]
impl RoleStore for PgUserStore {
    async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        self.run(|pool| async move {
            let mut transaction =
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(classify)?;
            let rows = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r ORDER BY r.name_normalized"))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            let ids: Vec<Uuid> =
                rows.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>().map_err(classify)?;
            let actions = actions_of(&mut transaction, &ids).await?;
            transaction.commit().await.map_err(classify)?;
            rows.iter()
                .zip(&ids)
                .map(|(row, id)| {
                    let own = actions.iter().filter(|(role, _)| role == id).map(|(_, action)| action.clone()).collect();
                    role_from_row(row, own)
                })
                .collect()
        })
        .await
    }

    async fn role(&self, id: Uuid) -> Result<Option<Role>, StoreError> {
        self.run(|pool| async move {
            let mut transaction =
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(classify)?;
            let row = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.id = $1"))
                .bind(id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let actions = actions_of(&mut transaction, &[id]).await?;
            transaction.commit().await.map_err(classify)?;
            role_from_row(&row, actions.into_iter().map(|(_, action)| action).collect()).map(Some)
        })
        .await
    }

    async fn create_role(&self, role: &Role, roles_max: u32, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            // The bound is checked before the insert, so creations racing each other may pass
            // it by the number in flight: it bounds a configuration table, not money. (Taking
            // the audit head first would make it exact but could deadlock against a role
            // update, which locks the role row before the head.)
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM roles")
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            if count >= i64::from(roles_max) {
                return Ok(RoleWrite::TooMany);
            }
            let inserted = sqlx::query(
                "INSERT INTO roles (id, name, name_normalized, description, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(role.id)
            .bind(&role.name)
            .bind(normalize_role_name(&role.name))
            .bind(&role.description)
            .bind(role.created_at.as_micros())
            .bind(role.updated_at.as_micros())
            .execute(&mut *transaction)
            .await;
            match inserted {
                Ok(_) => {}
                Err(error) if is_name_taken(&error) => return Ok(RoleWrite::NameTaken),
                Err(error) => return Err(classify(error)),
            }
            write_actions(&mut transaction, &role).await?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
        .await
    }

    async fn update_role(&self, role: &Role, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE roles SET name = $2, name_normalized = $3, description = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(role.id)
            .bind(&role.name)
            .bind(normalize_role_name(&role.name))
            .bind(&role.description)
            .bind(role.updated_at.as_micros())
            .execute(&mut *transaction)
            .await;
            match updated {
                Ok(done) if done.rows_affected() == 0 => return Ok(RoleWrite::NotFound),
                Ok(_) => {}
                Err(error) if is_name_taken(&error) => return Ok(RoleWrite::NameTaken),
                Err(error) => return Err(classify(error)),
            }
            write_actions(&mut transaction, &role).await?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
        .await
    }

    async fn delete_role(&self, id: Uuid, audit: &AuditRecord) -> Result<RoleDelete, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            // The role's row lock orders this against a concurrent assignment (whose foreign
            // key check takes a share lock on the same row): either the assignment sees the
            // role gone, or this sees the holder.
            let found = sqlx::query("SELECT 1 FROM roles WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            if found.is_none() {
                return Ok(RoleDelete::NotFound);
            }
            let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE role_id = $1")
                .bind(id)
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            if holders > 0 {
                return Ok(RoleDelete::InUse(u64::try_from(holders).unwrap_or(0)));
            }
            sqlx::query("DELETE FROM roles WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleDelete::Deleted)
        })
        .await
    }

    async fn assign_role(
        &self,
        user: UserId,
        role: Uuid,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<RoleAssign, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            if !lock_user(&mut transaction, user.as_uuid()).await? {
                return Ok(RoleAssign::NoSuchUser);
            }
            let found = sqlx::query("SELECT 1 FROM roles WHERE id = $1 FOR SHARE")
                .bind(role)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            if found.is_none() {
                return Ok(RoleAssign::NoSuchRole);
            }
            let inserted = sqlx::query(
                "INSERT INTO user_roles (user_id, role_id, assigned_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(user.as_uuid())
            .bind(role)
            .bind(at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 0 {
                return Ok(RoleAssign::AlreadyHeld);
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleAssign::Assigned)
        })
        .await
    }

    async fn unassign_role(&self, user: UserId, role: Uuid, audit: &AuditRecord) -> Result<RoleUnassign, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            if !lock_user(&mut transaction, user.as_uuid()).await? {
                return Ok(RoleUnassign::NoSuchUser);
            }
            let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2")
                .bind(user.as_uuid())
                .bind(role)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() == 0 {
                return Ok(RoleUnassign::NotHeld);
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleUnassign::Removed)
        })
        .await
    }
}
