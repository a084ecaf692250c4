//! `RoleStore` for both identity stores, written once (`crate::sql`). On SQLite every writing
//! transaction begins `IMMEDIATE`: it holds the database's one write lock from its first
//! check to its commit, which is what the Postgres row locks here (`FOR UPDATE`, `FOR SHARE`)
//! give there.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::roles::{Role, RoleAssign, RoleDelete, RoleStore, RoleUnassign, RoleWrite, normalize_role_name};
use super::sql::UserQueries;
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{
    BeginSnapshot, BeginWrite, Id, IdentitySql, Ids, SqlRow, Texts, impl_for_connections, run_on_backend,
    unique_violation,
};
use crate::store::StoreError;

const ROLE_COLUMNS: &str = "r.id, r.name, r.description, r.created_at, r.updated_at, \
                            (SELECT count(*) FROM user_roles ur WHERE ur.role_id = r.id) AS holders";

fn role_from_row(row: &impl SqlRow, actions: BTreeSet<String>) -> Result<Role, StoreError> {
    let holders: i64 = row.decode("holders")?;
    Ok(Role {
        id: row.decode("id")?,
        name: row.decode("name")?,
        description: row.decode("description")?,
        actions,
        holders: u64::try_from(holders).unwrap_or(0),
        created_at: row.decode("created_at")?,
        updated_at: row.decode("updated_at")?,
    })
}

/// Whether a write failed on the unique role name (Postgres names the constraint, SQLite the
/// column `name_normalized`: both contain "name").
fn is_name_taken(error: &sqlx::Error) -> bool {
    unique_violation(error).is_some_and(|constraint| constraint.contains("name"))
}

/// Queries that run inside a role change's transaction.
trait RoleQueries {
    /// The actions of each of `roles` (a role without any maps to none).
    async fn actions_of(&mut self, roles: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>, StoreError>;

    /// Replaces the role's actions with `role.actions`.
    async fn write_actions(&mut self, role: &Role) -> Result<(), StoreError>;

    /// Whether the role exists, locking its row until the transaction ends (Postgres): `lock`
    /// is `FOR UPDATE` or `FOR SHARE`.
    async fn role_exists(&mut self, role: Uuid, lock: RowLock) -> Result<bool, StoreError>;
}

/// How `RoleQueries::role_exists` locks the role's row on Postgres (SQLite's `IMMEDIATE`
/// transaction already holds the write lock).
#[derive(Clone, Copy)]
enum RowLock {
    Update,
    Share,
}

impl_for_connections! {
    impl RoleQueries {
        async fn actions_of(&mut self, roles: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>, StoreError> {
            let rows = sqlx::query(&format!(
                "SELECT role_id, action FROM role_actions WHERE role_id IN (SELECT value FROM {}) ORDER BY action",
                dialect::each(1)
            ))
            .bind(Ids(roles.to_vec()))
            .fetch_all(&mut *self)
            .await
            .map_err(classify)?;
            let mut actions: BTreeMap<Uuid, BTreeSet<String>> =
                roles.iter().map(|role| (*role, BTreeSet::new())).collect();
            for row in &rows {
                let role: Uuid = row.decode("role_id")?;
                actions.entry(role).or_default().insert(row.decode("action")?);
            }
            Ok(actions)
        }

        async fn write_actions(&mut self, role: &Role) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM role_actions WHERE role_id = $1")
                .bind(Id(role.id))
                .execute(&mut *self)
                .await
                .map_err(classify)?;
            sqlx::query(&format!(
                "INSERT INTO role_actions (role_id, action) SELECT $1, value FROM {}",
                dialect::each(2)
            ))
            .bind(Id(role.id))
            .bind(Texts(role.actions.iter().cloned().collect()))
            .execute(&mut *self)
            .await
            .map_err(classify)?;
            Ok(())
        }

        async fn role_exists(&mut self, role: Uuid, lock: RowLock) -> Result<bool, StoreError> {
            let lock = match lock {
                RowLock::Update => dialect::FOR_UPDATE,
                RowLock::Share => dialect::FOR_SHARE,
            };
            let found = sqlx::query(&format!("SELECT 1 FROM roles WHERE id = $1 {lock}"))
                .bind(Id(role))
                .fetch_optional(&mut *self)
                .await
                .map_err(classify)?;
            Ok(found.is_some())
        }
    }
}

#[async_trait]
impl<S: IdentitySql> RoleStore for S {
    async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
            let rows = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r ORDER BY r.name_normalized"))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            let ids = rows.iter().map(|row| row.decode("id")).collect::<Result<Vec<Uuid>, _>>()?;
            let mut actions = transaction.actions_of(&ids).await?;
            transaction.commit().await.map_err(classify)?;
            rows.iter().zip(&ids).map(|(row, id)| role_from_row(row, actions.remove(id).unwrap_or_default())).collect()
        })
    }

    async fn role(&self, id: Uuid) -> Result<Option<Role>, StoreError> {
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
            let row = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles r WHERE r.id = $1"))
                .bind(Id(id))
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let actions = transaction.actions_of(&[id]).await?.remove(&id).unwrap_or_default();
            transaction.commit().await.map_err(classify)?;
            role_from_row(&row, actions).map(Some)
        })
    }

    async fn create_role(&self, role: &Role, roles_max: u32, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // The bound is checked before the insert, so on Postgres creations racing each
            // other may pass it by the number in flight: it bounds a configuration table, not
            // money. (Taking the audit head first would make it exact but could deadlock
            // against a role update, which locks the role row before the head.)
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
            .bind(Id(role.id))
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
            transaction.write_actions(&role).await?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
    }

    async fn update_role(&self, role: &Role, audit: &AuditRecord) -> Result<RoleWrite, StoreError> {
        let role = role.clone();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE roles SET name = $2, name_normalized = $3, description = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(Id(role.id))
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
            transaction.write_actions(&role).await?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleWrite::Written)
        })
    }

    async fn delete_role(&self, id: Uuid, audit: &AuditRecord) -> Result<RoleDelete, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // On Postgres the role's row lock orders this against a concurrent assignment
            // (whose foreign key check takes a share lock on the same row): either the
            // assignment sees the role gone, or this sees the holder.
            if !transaction.role_exists(id, RowLock::Update).await? {
                return Ok(RoleDelete::NotFound);
            }
            let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE role_id = $1")
                .bind(Id(id))
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            if holders > 0 {
                return Ok(RoleDelete::InUse(u64::try_from(holders).unwrap_or(0)));
            }
            sqlx::query("DELETE FROM roles WHERE id = $1")
                .bind(Id(id))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleDelete::Deleted)
        })
    }

    async fn assign_role(
        &self,
        user: UserId,
        role: Uuid,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<RoleAssign, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            if !transaction.lock_user(user.as_uuid()).await? {
                return Ok(RoleAssign::NoSuchUser);
            }
            if !transaction.role_exists(role, RowLock::Share).await? {
                return Ok(RoleAssign::NoSuchRole);
            }
            let inserted = sqlx::query(
                "INSERT INTO user_roles (user_id, role_id, assigned_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(Id::from(user))
            .bind(Id(role))
            .bind(at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 0 {
                return Ok(RoleAssign::AlreadyHeld);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleAssign::Assigned)
        })
    }

    async fn unassign_role(&self, user: UserId, role: Uuid, audit: &AuditRecord) -> Result<RoleUnassign, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            if !transaction.lock_user(user.as_uuid()).await? {
                return Ok(RoleUnassign::NoSuchUser);
            }
            let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2")
                .bind(Id::from(user))
                .bind(Id(role))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() == 0 {
                return Ok(RoleUnassign::NotHeld);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(RoleUnassign::Removed)
        })
    }
}
