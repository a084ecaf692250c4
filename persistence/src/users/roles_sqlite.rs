//! `RoleStore` for the SQLite identity store. Every writing transaction begins `IMMEDIATE`:
//! it holds the database's one write lock from its first check to its commit.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::admin_sqlite::user_exists;
use super::roles::{Role, RoleAssign, RoleDelete, RoleStore, RoleUnassign, RoleWrite, normalize_role_name};
use super::sqlite::{SqliteUserStore, id_to_db, uuid};
use crate::audit::AuditRecord;
use crate::sqlite::classify;
use crate::store::StoreError;

const ROLE_COLUMNS: &str = "r.id, r.name, r.description, r.created_at, r.updated_at, \
                            (SELECT count(*) FROM user_roles ur WHERE ur.role_id = r.id) AS holders";

fn role_from_row(row: &SqliteRow, actions: BTreeSet<String>) -> Result<Role, StoreError> {
    let holders: i64 = row.try_get("holders").map_err(classify)?;
    Ok(Role {
        id: uuid(row, "id")?,
        name: row.try_get("name").map_err(classify)?,
        description: row.try_get("description").map_err(classify)?,
        actions,
        holders: u64::try_from(holders).unwrap_or(0),
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at").map_err(classify)?),
    })
}

async fn actions_of(connection: &mut SqliteConnection, role: &str) -> Result<BTreeSet<String>, StoreError> {
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM role_actions WHERE role_id = ?1 ORDER BY action")
        .bind(role)
        .fetch_all(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(actions.into_iter().collect())
}

async fn write_actions(connection: &mut SqliteConnection, role: &Role) -> Result<(), StoreError> {
    let id = id_to_db(role.id);
    sqlx::query("DELETE FROM role_actions WHERE role_id = ?1")
        .bind(&id)
        .execute(&mut *connection)
        .await
        .map_err(classify)?;
    for action in &role.actions {
        sqlx::query("INSERT INTO role_actions (role_id, action) VALUES (?1, ?2)")
            .bind(&id)
            .bind(action)
            .execute(&mut *connection)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// SQLite names the columns of a broken constraint in its message, not the constraint.
fn is_name_taken(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database)
        if database.is_unique_violation() && database.message().contains("name_normalized"))
}

async fn role_exists(connection: &mut SqliteConnection, role: &str) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM roles WHERE id = ?1")
        .bind(role)
        .fetch_optional(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

#[async_trait]
impl RoleStore for SqliteUserStore {
    async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let rows = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r ORDER BY r.name_normalized"))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            let mut roles = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id").map_err(classify)?;
                let actions = actions_of(&mut transaction, &id).await?;
                roles.push(role_from_row(row, actions)?);
            }
            transaction.commit().await.map_err(classify)?;
            Ok(roles)
        })
        .await
    }

    async fn role(&self, id: Uuid) -> Result<Option<Role>, StoreError> {
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let row = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.id = ?1"))
                .bind(id_to_db(id))
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let actions = actions_of(&mut transaction, &id_to_db(id)).await?;
            transaction.commit().await.map_err(classify)?;
            role_from_row(&row, actions).map(Some)
        })
        .await
    }

    async fn create_role(&self, role: &Role, roles_max: u32, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM roles")
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            if count >= i64::from(roles_max) {
                return Ok(RoleWrite::TooMany);
            }
            let inserted = sqlx::query(
                "INSERT INTO roles (id, name, name_normalized, description, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(id_to_db(role.id))
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
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
        .await
    }

    async fn update_role(&self, role: &Role, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE roles SET name = ?2, name_normalized = ?3, description = ?4, updated_at = ?5 WHERE id = ?1",
            )
            .bind(id_to_db(role.id))
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
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
        .await
    }

    async fn delete_role(&self, id: Uuid, audit: &AuditRecord) -> Result<RoleDelete, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let id = id_to_db(id);
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            if !role_exists(&mut transaction, &id).await? {
                return Ok(RoleDelete::NotFound);
            }
            let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE role_id = ?1")
                .bind(&id)
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            if holders > 0 {
                return Ok(RoleDelete::InUse(u64::try_from(holders).unwrap_or(0)));
            }
            sqlx::query("DELETE FROM roles WHERE id = ?1")
                .bind(&id)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
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
            let (user, role) = (id_to_db(user.as_uuid()), id_to_db(role));
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            if !user_exists(&mut transaction, &user).await? {
                return Ok(RoleAssign::NoSuchUser);
            }
            if !role_exists(&mut transaction, &role).await? {
                return Ok(RoleAssign::NoSuchRole);
            }
            let inserted = sqlx::query(
                "INSERT INTO user_roles (user_id, role_id, assigned_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .bind(&user)
            .bind(&role)
            .bind(at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 0 {
                return Ok(RoleAssign::AlreadyHeld);
            }
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleAssign::Assigned)
        })
        .await
    }

    async fn unassign_role(&self, user: UserId, role: Uuid, audit: &AuditRecord) -> Result<RoleUnassign, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let (user, role) = (id_to_db(user.as_uuid()), id_to_db(role));
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            if !user_exists(&mut transaction, &user).await? {
                return Ok(RoleUnassign::NoSuchUser);
            }
            let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = ?1 AND role_id = ?2")
                .bind(&user)
                .bind(&role)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() == 0 {
                return Ok(RoleUnassign::NotHeld);
            }
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleUnassign::Removed)
        })
        .await
    }
}
